//! The trait layer between the IPsec state machines and whatever does the cryptography.
//!
//! The core crates (`ipsec-core`, `ipsec-ike`, `ipsec-nat-t`) contain no cryptography of
//! their own. They are generic over a [`CryptoProvider`], a bundle of associated types, one
//! per role:
//!
//! | role | trait | used by |
//! |---|---|---|
//! | block cipher in CBC mode (DES, 3DES, AES) | [`CbcCipher`] | ESP, IKEv1 phase-1/2 encryption |
//! | AEAD (AES-GCM, RFC 4106) | [`Aead`] | ESP |
//! | truncated HMAC for ESP ICVs | [`Mac`] | ESP |
//! | keyed PRF and plain hash | [`Prf`] | IKE key derivation, HASH_I/R, NAT-D, IVs |
//! | Diffie-Hellman | [`DiffieHellman`] | IKE |
//! | randomness | [`SecureRng`] | IVs, nonces, SPIs, cookies |
//!
//! The algorithm is a run-time value (it is negotiated or configured), so each role is one
//! type whose constructor takes the algorithm; a provider typically implements it as an
//! enum over its concrete ciphers. No `dyn`, no allocation.
//!
//! All bulk operations work in place on caller buffers, with detached tags, so that a DMA
//! engine can implement them without copying. Key material handed across this layer lives
//! in [`SecretBytes`], which zeroizes on drop and never prints. MAC and tag verification is
//! the provider's job and must be constant time; the error says only that it failed.
//!
//! Randomness is not part of [`CryptoProvider`]: a random source is an instance (a TRNG
//! peripheral, the OS), so the calls that need one take `&mut impl SecureRng`.
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod alg;
pub mod engine;
mod error;
pub mod route;
mod secret;

pub use alg::{AeadAlg, CipherAlg, DhGroup, HashAlg, MacAlg};
pub use error::CryptoError;
pub use secret::SecretBytes;

/// Longest hash or PRF output of any [`HashAlg`] (SHA-512).
pub const MAX_HASH_LEN: usize = 64;
/// Longest CBC block of any [`CipherAlg`] (AES).
pub const MAX_BLOCK_LEN: usize = 16;
/// Longest ESP ICV of any [`MacAlg`] or [`AeadAlg`].
pub const MAX_ICV_LEN: usize = 16;
/// Longest Diffie-Hellman public value or shared secret of any [`DhGroup`] (MODP 3072).
pub const MAX_DH_LEN: usize = 384;

/// A block cipher in CBC mode with a fixed key (RFC 2451, RFC 3602).
///
/// Used by ESP (explicit IV per packet) and by IKEv1 (IV chained across messages).
pub trait CbcCipher: Sized {
    /// Expands `key` for `alg`.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeyLength`] if `key.len() != alg.key_len()`,
    /// [`CryptoError::Unsupported`] if this provider does not implement `alg`.
    fn new(alg: CipherAlg, key: &[u8]) -> Result<Self, CryptoError>;

    /// The algorithm this instance was created for.
    fn alg(&self) -> CipherAlg;

    /// Encrypts `buf` in place. `iv.len()` must be the block length and `buf.len()` a
    /// multiple of it.
    ///
    /// # Errors
    /// [`CryptoError::InvalidLength`] for a wrong IV length or a partial block.
    fn encrypt(&self, iv: &[u8], buf: &mut [u8]) -> Result<(), CryptoError>;

    /// Decrypts `buf` in place, with the same length rules as [`CbcCipher::encrypt`].
    ///
    /// # Errors
    /// [`CryptoError::InvalidLength`] for a wrong IV length or a partial block.
    fn decrypt(&self, iv: &[u8], buf: &mut [u8]) -> Result<(), CryptoError>;
}

/// An AEAD with a 12-byte nonce and a detached tag: AES-GCM as ESP uses it (RFC 4106).
///
/// The 4-byte salt of RFC 4106 is not part of the key given here; the ESP layer builds the
/// nonce as salt | explicit IV.
pub trait Aead: Sized {
    /// Expands `key` (without salt) for `alg`.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeyLength`] or [`CryptoError::Unsupported`].
    fn new(alg: AeadAlg, key: &[u8]) -> Result<Self, CryptoError>;

    /// The algorithm (and so the tag length) this instance was created for.
    fn alg(&self) -> AeadAlg;

    /// Encrypts `buf` in place and writes the tag, truncated to `alg().icv_len()` bytes,
    /// to `tag`.
    ///
    /// # Errors
    /// [`CryptoError::InvalidLength`] if `tag.len() != alg().icv_len()`.
    fn seal(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &mut [u8],
    ) -> Result<(), CryptoError>;

    /// Verifies `tag` (constant time) and, only if it matches, decrypts `buf` in place.
    /// On failure `buf` holds unspecified bytes and must not be used.
    ///
    /// # Errors
    /// [`CryptoError::AuthenticationFailed`], or [`CryptoError::InvalidLength`] for a tag
    /// of the wrong length.
    fn open(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8],
    ) -> Result<(), CryptoError>;
}

/// A keyed MAC truncated to an ESP ICV (RFC 2403, RFC 2404, RFC 4868).
///
/// The message is given as a list of parts so that discontiguous inputs (ESN high bits
/// appended to the packet) need no copy.
pub trait Mac: Sized {
    /// Keys the MAC.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeyLength`] or [`CryptoError::Unsupported`].
    fn new(alg: MacAlg, key: &[u8]) -> Result<Self, CryptoError>;

    /// The algorithm this instance was created for.
    fn alg(&self) -> MacAlg;

    /// Computes the MAC of the concatenation of `parts`, truncated to `out.len()` bytes.
    ///
    /// # Errors
    /// [`CryptoError::InvalidLength`] if `out.len() != alg().icv_len()`.
    fn compute(&self, parts: &[&[u8]], out: &mut [u8]) -> Result<(), CryptoError>;

    /// Compares, in constant time, the truncated MAC of `parts` with `icv`.
    ///
    /// # Errors
    /// [`CryptoError::AuthenticationFailed`] on mismatch; [`CryptoError::InvalidLength`] if
    /// `icv.len() != alg().icv_len()`.
    fn verify(&self, parts: &[&[u8]], icv: &[u8]) -> Result<(), CryptoError>;
}

/// IKE's pseudo-random function (HMAC over a hash) and the plain hash itself.
pub trait Prf: Sized {
    /// Keys the PRF. Any key length is accepted (HMAC hashes long keys).
    ///
    /// # Errors
    /// [`CryptoError::Unsupported`] if the hash is not implemented.
    fn new(alg: HashAlg, key: &[u8]) -> Result<Self, CryptoError>;

    /// The hash this PRF is built on.
    fn alg(&self) -> HashAlg;

    /// Writes `prf(key, parts[0] | parts[1] | ...)` to the first `alg().output_len()` bytes
    /// of `out` and returns that length.
    ///
    /// # Errors
    /// [`CryptoError::InvalidLength`] if `out` is shorter than the output.
    fn compute(&self, parts: &[&[u8]], out: &mut [u8]) -> Result<usize, CryptoError>;

    /// Writes the plain hash of the concatenation of `parts` (NAT-D, phase-1 IV) to the
    /// first `alg.output_len()` bytes of `out` and returns that length.
    ///
    /// # Errors
    /// [`CryptoError::InvalidLength`] if `out` is too short, [`CryptoError::Unsupported`].
    fn hash(alg: HashAlg, parts: &[&[u8]], out: &mut [u8]) -> Result<usize, CryptoError>;
}

/// A Diffie-Hellman key pair of one group.
///
/// Public values and shared secrets are big-endian and left-padded with zeros to
/// `group.len()` bytes, as IKE carries them.
pub trait DiffieHellman: Sized {
    /// Generates a fresh private value.
    ///
    /// # Errors
    /// [`CryptoError::Unsupported`] for a group the provider lacks, [`CryptoError::Rng`].
    fn generate<R: SecureRng>(group: DhGroup, rng: &mut R) -> Result<Self, CryptoError>;

    /// Builds a key pair from a known private value (big-endian). For known-answer tests
    /// and HA state restore; never for fresh exchanges.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeyLength`] if the value is empty, zero or too long.
    fn from_private(group: DhGroup, private: &[u8]) -> Result<Self, CryptoError>;

    /// The group of this key pair.
    fn group(&self) -> DhGroup;

    /// Writes the public value to `out[..group.len()]` and returns that length.
    ///
    /// # Errors
    /// [`CryptoError::InvalidLength`] if `out` is too short.
    fn public_key(&self, out: &mut [u8]) -> Result<usize, CryptoError>;

    /// Computes the shared secret with the peer's public value into `out[..group.len()]`.
    /// The peer's value must be exactly `group.len()` bytes and, for MODP groups, satisfy
    /// 1 < y < p - 1 (RFC 2631 / SP 800-56A partial validation).
    ///
    /// # Errors
    /// [`CryptoError::InvalidPublicKey`], [`CryptoError::InvalidLength`].
    fn shared_secret(&self, peer_public: &[u8], out: &mut [u8]) -> Result<usize, CryptoError>;
}

/// A cryptographically secure random source.
pub trait SecureRng {
    /// Fills `dest` with random bytes.
    ///
    /// # Errors
    /// [`CryptoError::Rng`] if the source failed (a hardware TRNG fault, say).
    fn fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), CryptoError>;
}

/// The bundle of crypto types a deployment uses: a software backend, a hardware engine
/// port, or an insecure one for fuzzing.
pub trait CryptoProvider {
    /// CBC block ciphers.
    type Cbc: CbcCipher;
    /// AEADs.
    type Aead: Aead;
    /// Truncated HMACs for ESP.
    type Mac: Mac;
    /// PRF and hash for IKE.
    type Prf: Prf;
    /// Diffie-Hellman.
    type Dh: DiffieHellman;
}
