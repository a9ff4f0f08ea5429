//! `NullCrypto`: an INSECURE `hal_traits::CryptoProvider` for fuzzing only.
//!
//! Every operation keeps the shapes and length checks of the real traits but none of the
//! security, so that a fuzzer can produce messages a state machine accepts:
//!
//! * CBC is the identity (IV and key lengths still checked, whole blocks only): an
//!   "encrypted" IKE payload area is its plaintext.
//! * The PRF is either a deterministic FNV-1a over `key | data`, expanded to the output
//!   length (`PrfMode::Fold`), or a constant (`PrfMode::Constant`: every HASH, SKEYID,
//!   KEYMAT and cookie is `0x42...`), chosen per input with [`set_prf_mode`]. The plain
//!   hash (NAT-D, IVs, message fingerprints) is always the FNV expansion over the data.
//! * Diffie-Hellman: the public value is the private value; the shared secret is their
//!   XOR (symmetric, so both sides agree). A peer value of the wrong length or all zeros
//!   is refused, as the real check would.
//! * MAC and AEAD tags are all zeros (ESP is not used by the IKE targets).
//!
//! Never use outside the fuzz targets.
#![allow(dead_code)]

use std::cell::Cell;

use hal_traits::{
    Aead, AeadAlg, CbcCipher, CipherAlg, CryptoError, CryptoProvider, DhGroup, DiffieHellman,
    HashAlg, Mac, MacAlg, Prf, SecureRng,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrfMode {
    Fold,
    Constant,
}

thread_local! {
    static MODE: Cell<PrfMode> = const { Cell::new(PrfMode::Fold) };
}

/// Selects the PRF for everything computed afterwards on this thread.
pub fn set_prf_mode(m: PrfMode) {
    MODE.with(|c| c.set(m));
}

pub const CONSTANT: u8 = 0x42;

/// FNV-1a over the parts, then SplitMix64 to fill `out`.
fn expand(seed: u64, parts: &[&[u8]], out: &mut [u8]) {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    for chunk in out.chunks_mut(8) {
        h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = h;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
}

pub struct NullCrypto;

impl CryptoProvider for NullCrypto {
    type Cbc = NullCbc;
    type Aead = NullAead;
    type Mac = NullMac;
    type Prf = NullPrf;
    type Dh = NullDh;
}

pub struct NullCbc(CipherAlg);

impl CbcCipher for NullCbc {
    fn new(alg: CipherAlg, key: &[u8]) -> Result<Self, CryptoError> {
        if key.len() != alg.key_len() {
            return Err(CryptoError::InvalidKeyLength);
        }
        Ok(Self(alg))
    }
    fn alg(&self) -> CipherAlg {
        self.0
    }
    fn encrypt(&self, iv: &[u8], buf: &mut [u8]) -> Result<(), CryptoError> {
        let bl = self.0.block_len();
        if iv.len() != bl || buf.len() % bl != 0 {
            return Err(CryptoError::InvalidLength);
        }
        Ok(())
    }
    fn decrypt(&self, iv: &[u8], buf: &mut [u8]) -> Result<(), CryptoError> {
        self.encrypt(iv, buf)
    }
}

pub struct NullAead(AeadAlg);

impl Aead for NullAead {
    fn new(alg: AeadAlg, key: &[u8]) -> Result<Self, CryptoError> {
        if key.len() != alg.key_len() {
            return Err(CryptoError::InvalidKeyLength);
        }
        Ok(Self(alg))
    }
    fn alg(&self) -> AeadAlg {
        self.0
    }
    fn seal(&self, _: &[u8; 12], _: &[u8], _: &mut [u8], tag: &mut [u8]) -> Result<(), CryptoError> {
        if tag.len() != self.0.icv_len() {
            return Err(CryptoError::InvalidLength);
        }
        tag.fill(0);
        Ok(())
    }
    fn open(&self, _: &[u8; 12], _: &[u8], _: &mut [u8], tag: &[u8]) -> Result<(), CryptoError> {
        if tag.len() != self.0.icv_len() {
            return Err(CryptoError::InvalidLength);
        }
        if tag.iter().any(|&b| b != 0) {
            return Err(CryptoError::AuthenticationFailed);
        }
        Ok(())
    }
}

pub struct NullMac(MacAlg);

impl Mac for NullMac {
    fn new(alg: MacAlg, key: &[u8]) -> Result<Self, CryptoError> {
        if key.len() != alg.key_len() {
            return Err(CryptoError::InvalidKeyLength);
        }
        Ok(Self(alg))
    }
    fn alg(&self) -> MacAlg {
        self.0
    }
    fn compute(&self, _: &[&[u8]], out: &mut [u8]) -> Result<(), CryptoError> {
        if out.len() != self.0.icv_len() {
            return Err(CryptoError::InvalidLength);
        }
        out.fill(0);
        Ok(())
    }
    fn verify(&self, _: &[&[u8]], icv: &[u8]) -> Result<(), CryptoError> {
        if icv.len() != self.0.icv_len() {
            return Err(CryptoError::InvalidLength);
        }
        if icv.iter().any(|&b| b != 0) {
            return Err(CryptoError::AuthenticationFailed);
        }
        Ok(())
    }
}

pub struct NullPrf {
    alg: HashAlg,
    key_hash: u64,
}

impl Prf for NullPrf {
    fn new(alg: HashAlg, key: &[u8]) -> Result<Self, CryptoError> {
        let mut k = [0u8; 8];
        expand(0x1234, &[key], &mut k);
        Ok(Self {
            alg,
            key_hash: u64::from_le_bytes(k),
        })
    }
    fn alg(&self) -> HashAlg {
        self.alg
    }
    fn compute(&self, parts: &[&[u8]], out: &mut [u8]) -> Result<usize, CryptoError> {
        let n = self.alg.output_len();
        let out = out.get_mut(..n).ok_or(CryptoError::InvalidLength)?;
        match MODE.with(Cell::get) {
            PrfMode::Constant => out.fill(CONSTANT),
            PrfMode::Fold => expand(self.key_hash, parts, out),
        }
        Ok(n)
    }
    fn hash(alg: HashAlg, parts: &[&[u8]], out: &mut [u8]) -> Result<usize, CryptoError> {
        let n = alg.output_len();
        let out = out.get_mut(..n).ok_or(CryptoError::InvalidLength)?;
        expand(0, parts, out);
        Ok(n)
    }
}

pub struct NullDh {
    group: DhGroup,
    private: [u8; hal_traits::MAX_DH_LEN],
}

impl DiffieHellman for NullDh {
    fn generate<R: SecureRng>(group: DhGroup, rng: &mut R) -> Result<Self, CryptoError> {
        let mut private = [0u8; hal_traits::MAX_DH_LEN];
        let n = group.len();
        rng.fill_bytes(&mut private[..n])?;
        private[n - 1] |= 1;
        Ok(Self { group, private })
    }
    fn from_private(group: DhGroup, value: &[u8]) -> Result<Self, CryptoError> {
        let n = group.len();
        if value.is_empty() || value.len() > n || value.iter().all(|&b| b == 0) {
            return Err(CryptoError::InvalidKeyLength);
        }
        let mut private = [0u8; hal_traits::MAX_DH_LEN];
        private[n - value.len()..n].copy_from_slice(value);
        Ok(Self { group, private })
    }
    fn group(&self) -> DhGroup {
        self.group
    }
    fn public_key(&self, out: &mut [u8]) -> Result<usize, CryptoError> {
        let n = self.group.len();
        out.get_mut(..n)
            .ok_or(CryptoError::InvalidLength)?
            .copy_from_slice(&self.private[..n]);
        Ok(n)
    }
    fn shared_secret(&self, peer: &[u8], out: &mut [u8]) -> Result<usize, CryptoError> {
        let n = self.group.len();
        if peer.len() != n {
            return Err(CryptoError::InvalidLength);
        }
        if peer.iter().all(|&b| b == 0) {
            return Err(CryptoError::InvalidPublicKey);
        }
        let out = out.get_mut(..n).ok_or(CryptoError::InvalidLength)?;
        for ((o, a), b) in out.iter_mut().zip(&self.private[..n]).zip(peer) {
            *o = a ^ b;
        }
        Ok(n)
    }
}

/// A deterministic RNG (SplitMix64) for the fuzz targets.
pub struct FuzzRng(pub u64);

impl SecureRng for FuzzRng {
    fn fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), CryptoError> {
        for c in dest.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            c.copy_from_slice(&z.to_le_bytes()[..c.len()]);
        }
        Ok(())
    }
}
