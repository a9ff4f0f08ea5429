//! The hardware-engine port: the Linux kernel crypto API, reached through `AF_ALG`
//! sockets, as a [`CryptoProvider`] for the ipsec workspace.
//!
//! Branch-router SoCs expose their crypto blocks (NXP CAAM, Inside Secure SafeXcel,
//! Marvell CESA, ...) as kernel crypto drivers; `AF_ALG` is how user space reaches them.
//! Which driver serves a request is the kernel's choice (the highest priority in
//! `/proc/crypto`): on a PC that is AES-NI or generic C code, on a router SoC the engine.
//! Code written against this crate does not change either way.
//!
//! | role | type | kernel algorithm |
//! |---|---|---|
//! | CBC block cipher | [`AfAlgCbc`] | `cbc(aes)`, `cbc(des3_ede)`, `cbc(des)` (`skcipher`) |
//! | AEAD | [`AfAlgAead`] | `gcm(aes)` with `ALG_SET_AEAD_AUTHSIZE` 8/12/16 (`aead`) |
//! | ESP integrity | [`AfAlgMac`] | `hmac(md5)`, `hmac(sha1)`, `hmac(sha256)` (`hash`), truncated |
//! | IKE PRF and hash | `ipsec_soft_crypto::SoftPrf` | software (IKE is not the hot path) |
//! | Diffie-Hellman | `ipsec_soft_crypto::SoftDh` | software (kernels rarely expose MODP DH usefully) |
//! | job interface | [`AfAlgEngine`] | the above, through [`hal_traits::engine`] |
//!
//! # Availability
//!
//! What the kernel offers is known only at run time. Every constructor binds and keys
//! its socket at once, so an algorithm the kernel lacks (or a kernel without `AF_ALG`,
//! `CONFIG_CRYPTO_USER_API_*`) fails there with [`CryptoError::Unsupported`](hal_traits::CryptoError::Unsupported), never on a
//! packet. Templates such as `gcm(aes)` are instantiated on demand even when
//! `/proc/crypto` does not list them yet. [`kernel_offers`] probes without a key.
//! Failures of the sockets themselves (out of file descriptors, memory) also surface as
//! [`CryptoError::Unsupported`](hal_traits::CryptoError::Unsupported): the trait's error is deliberately coarse.
//!
//! # Cost model
//!
//! One transform socket per key, keyed once in `new` (`ALG_SET_KEY`), plus one cached
//! operation socket per instance, so a packet costs a `sendmsg` (data + IV and direction
//! as control messages) and a `recvmsg` into the same buffer: in place, no copy in user
//! space. Accepting an operation socket per packet would add an `accept` and a `close`.
//!
//! # Secrets
//!
//! The key goes straight from the caller's slice into the kernel; this crate keeps no
//! copy, so there is nothing to zeroize in user space. Closing the transform socket frees
//! the kernel's copy. No type prints key material. MAC verification compares the
//! truncated ICVs in constant time here; AES-GCM tags are checked by the kernel.
//!
//! # Testing
//!
//! The tests run the ESP known answers of `ipsec-core` and per-trait NIST/RFC vectors over
//! this provider, and compare it with `ipsec-soft-crypto` on random inputs. On a kernel
//! without `AF_ALG` they print a notice and pass vacuously; `vm/run.sh` runs them (and
//! `vm/run.sh --bench` the benchmark) in a QEMU guest with a Debian kernel that has it,
//! with `IPSEC_AF_ALG_REQUIRE=1` so that nothing passes vacuously there.
//!
//! # Why `unsafe`
//!
//! The workspace forbids `unsafe`; this port cannot, because `AF_ALG` has no safe Rust
//! binding: `bind` takes a `sockaddr_alg`, and requests need `sendmsg`/`recvmsg` with
//! `SOL_ALG` control messages built by hand. All of it lives in the private `sys` module,
//! each block with a `// SAFETY:` comment; everything above it is safe code.
#![cfg(target_os = "linux")]
#![deny(unsafe_code)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod aead;
mod cbc;
mod keyed;
mod mac;
#[allow(unsafe_code)]
mod sys;

pub use aead::AfAlgAead;
pub use cbc::AfAlgCbc;
pub use mac::AfAlgMac;

use hal_traits::engine::SyncEngine;
use hal_traits::{AeadAlg, CipherAlg, CryptoProvider, MacAlg};

/// The kernel algorithm names this crate binds to.
pub mod names {
    pub use crate::aead::KERNEL_NAME as AEAD;
    pub use crate::cbc::kernel_name as cipher;
    pub use crate::mac::kernel_name as mac;
}

/// The AF_ALG provider: [`AfAlgCbc`], [`AfAlgAead`], [`AfAlgMac`], and the software PRF
/// and Diffie-Hellman, as one [`CryptoProvider`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AfAlgCrypto;

impl CryptoProvider for AfAlgCrypto {
    type Cbc = AfAlgCbc;
    type Aead = AfAlgAead;
    type Mac = AfAlgMac;
    type Prf = ipsec_soft_crypto::SoftPrf;
    type Dh = ipsec_soft_crypto::SoftDh;
}

/// The ESP job interface ([`hal_traits::engine::CryptoEngine`]) over AF_ALG, with up to
/// `N` completions queued.
///
/// Synchronous: each job runs to completion inside `submit` (a `sendmsg`/`recvmsg` pair per
/// primitive), and `poll_complete` hands results back in order. The interface allows a true
/// asynchronous engine (the buffers stay lent until completion); AF_ALG's own AIO
/// (`io_submit` on the operation socket) covers only ciphers and AEADs, not the hashes
/// ESP-CBC needs, so it is not used.
pub type AfAlgEngine<'a, const N: usize> = SyncEngine<'a, AfAlgCrypto, N>;

/// Which kind of kernel algorithm a probe asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A CBC cipher.
    Cipher(CipherAlg),
    /// A truncated HMAC.
    Mac(MacAlg),
    /// An AES-GCM variant.
    Aead(AeadAlg),
}

/// Whether the running kernel offers the algorithm through AF_ALG: binds a socket to it
/// (instantiating templates if needed) without keying it.
#[must_use]
pub fn kernel_offers(what: Probe) -> bool {
    let (kind, name) = match what {
        Probe::Cipher(a) => (sys::AlgType::Skcipher, cbc::kernel_name(a)),
        Probe::Mac(a) => (sys::AlgType::Hash, mac::kernel_name(a)),
        Probe::Aead(_) => (sys::AlgType::Aead, Some(aead::KERNEL_NAME)),
    };
    name.is_some_and(|n| sys::TfmSocket::bind(kind, n).is_ok())
}

/// Whether the kernel has AF_ALG at all. Without it every constructor returns
/// [`CryptoError::Unsupported`](hal_traits::CryptoError::Unsupported).
#[must_use]
pub fn af_alg_available() -> bool {
    sys::af_alg_available()
}

/// Low-level access to the sockets, for measurements and algorithms this crate does not
/// wrap. Safe to use; misuse yields errors, not undefined behaviour.
pub mod raw {
    pub use crate::sys::{AlgType, Control, Direction, MAX_IOV, OpSocket, TfmSocket};
}
