//! Truncated HMACs through the kernel's `hash` interface.

use std::fmt;

use hal_traits::{CryptoError, MAX_ICV_LEN, Mac, MacAlg};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use crate::keyed::{Keyed, recv_exact};
use crate::sys::{AlgType, Control, MAX_IOV};

/// A keyed HMAC truncated to an ESP ICV ([`Mac`]): `hmac(md5)`, `hmac(sha1)`,
/// `hmac(sha256)`.
///
/// The kernel computes the full HMAC and returns only the first `icv_len` bytes.
/// [`Mac::verify`] compares in constant time here, in user space. The key is copied into
/// the kernel and not kept here.
pub struct AfAlgMac {
    alg: MacAlg,
    keyed: Keyed,
}

impl fmt::Debug for AfAlgMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AfAlgMac")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The kernel's name for `alg`.
#[must_use]
pub const fn kernel_name(alg: MacAlg) -> Option<&'static str> {
    match alg {
        MacAlg::HmacMd5_96 => Some("hmac(md5)"),
        MacAlg::HmacSha1_96 => Some("hmac(sha1)"),
        MacAlg::HmacSha256_128 => Some("hmac(sha256)"),
        _ => None,
    }
}

impl AfAlgMac {
    /// The truncated MAC of `parts` into `out` (whose length the caller checked).
    fn truncated(&self, parts: &[&[u8]], out: &mut [u8]) -> Result<(), CryptoError> {
        self.keyed.with_op(|op| {
            let mut groups = parts.chunks(MAX_IOV).peekable();
            if groups.peek().is_none() {
                op.send(&Control::default(), &[], false)?;
            }
            while let Some(group) = groups.next() {
                // The hash interface consumes everything it is given (no send buffer).
                op.send(&Control::default(), group, groups.peek().is_some())?;
            }
            // A read shorter than the digest returns its first bytes: the truncation.
            recv_exact(op, &mut [out])
        })
    }
}

impl Mac for AfAlgMac {
    fn new(alg: MacAlg, key: &[u8]) -> Result<Self, CryptoError> {
        let name = kernel_name(alg).ok_or(CryptoError::Unsupported)?;
        if key.len() != alg.key_len() {
            return Err(CryptoError::InvalidKeyLength);
        }
        let keyed = Keyed::new(AlgType::Hash, name, key, |_| Ok(()))?;
        Ok(Self { alg, keyed })
    }

    fn alg(&self) -> MacAlg {
        self.alg
    }

    fn compute(&self, parts: &[&[u8]], out: &mut [u8]) -> Result<(), CryptoError> {
        if out.len() != self.alg.icv_len() {
            return Err(CryptoError::InvalidLength);
        }
        self.truncated(parts, out)
    }

    fn verify(&self, parts: &[&[u8]], icv: &[u8]) -> Result<(), CryptoError> {
        if icv.len() != self.alg.icv_len() {
            return Err(CryptoError::InvalidLength);
        }
        let mut buf = [0u8; MAX_ICV_LEN];
        let expected = buf.get_mut(..icv.len()).ok_or(CryptoError::InvalidLength)?;
        self.truncated(parts, expected)?;
        let ok: bool = expected.ct_eq(icv).into();
        // The expected ICV of a forged packet is what a forger wants: leave none behind.
        buf.zeroize();
        if ok {
            Ok(())
        } else {
            Err(CryptoError::AuthenticationFailed)
        }
    }
}
