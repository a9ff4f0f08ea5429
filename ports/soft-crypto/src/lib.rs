//! The software crypto provider: every trait of `hal-traits`, implemented with the
//! RustCrypto crates, `#![no_std]` and without allocation.
//!
//! [`SoftCrypto`] bundles the types for generic code (`IkeSa<SoftCrypto, N>`, ...):
//!
//! | role | type | algorithms |
//! |---|---|---|
//! | CBC block cipher | [`SoftCbc`] | DES, 3DES (EDE3), AES-128/192/256 |
//! | AEAD | [`SoftAead`] | AES-GCM-128/192/256 with 8, 12 or 16-byte ICVs (RFC 4106) |
//! | ESP integrity | [`SoftMac`] | HMAC-MD5-96, HMAC-SHA1-96, HMAC-SHA-256-128 |
//! | IKE PRF and hash | [`SoftPrf`] | HMAC and plain MD5, SHA-1, SHA-256, SHA-384, SHA-512 |
//! | Diffie-Hellman | [`SoftDh`] | MODP groups 1, 2, 5, 14, 15 |
//! | randomness | `OsRng` (feature `std`) | the operating system, through `getrandom` |
//!
//! # Cost model
//!
//! Key setup happens once, in the constructors: [`SoftCbc`] and [`SoftAead`] keep the
//! expanded AES/DES key schedule (and the GHASH key), [`SoftMac`] and [`SoftPrf`] keep the
//! HMAC state after the inner and outer pads were absorbed. A per-packet call only copies
//! that state and runs over the data.
//!
//! # Secrets
//!
//! Key schedules, keyed HMAC states and Diffie-Hellman private values are wiped when
//! dropped (the RustCrypto `zeroize` features are enabled), and no type prints key
//! material in its `Debug` output.
//!
//! # Constant time
//!
//! MAC and AEAD tag verification compares in constant time and reports only
//! [`CryptoError::AuthenticationFailed`](hal_traits::CryptoError); AES-GCM decrypts only
//! after the tag verified. Diffie-Hellman exponentiation is constant-time Montgomery
//! exponentiation (`crypto-bigint`) over a fixed exponent width. AES is RustCrypto's
//! constant-time fixsliced software implementation, or AES-NI / ARMv8 AES where the CPU
//! has them; GHASH is constant time too. The DES core (DES and 3DES) indexes S-box tables
//! with key-dependent values and is **not** constant time: one more reason it is legacy.
//!
//! # Legacy algorithms
//!
//! DES (56-bit key), 3DES (64-bit block), MD5 and MODP group 1 (768 bits) are implemented
//! only to talk to old equipment. They are weak, never a default, and `hal-traits` marks
//! them with `is_legacy()`. Weak DES keys are not rejected: IKE derives keys from a PRF,
//! and the NIST known-answer tests use them.
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

mod aead;
mod cbc;
mod dh;
mod mac;
mod prf;
mod rng;

pub use aead::SoftAead;
pub use cbc::SoftCbc;
pub use dh::SoftDh;
pub use mac::SoftMac;
pub use prf::SoftPrf;
#[cfg(feature = "std")]
pub use rng::{BufferedOsRng, OsRng};

/// The software provider: the types of this crate as one [`hal_traits::CryptoProvider`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SoftCrypto;

impl hal_traits::CryptoProvider for SoftCrypto {
    type Cbc = SoftCbc;
    type Aead = SoftAead;
    type Mac = SoftMac;
    type Prf = SoftPrf;
    type Dh = SoftDh;
}
