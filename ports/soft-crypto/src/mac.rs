//! Truncated HMACs for ESP: HMAC-MD5-96 (RFC 2403), HMAC-SHA1-96 (RFC 2404) and
//! HMAC-SHA-256-128 (RFC 4868).

use core::fmt;

use hal_traits::{CryptoError, MAX_HASH_LEN, Mac, MacAlg};
use hmac::{Hmac, KeyInit};
use md5::Md5;
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// HMAC state with the key already absorbed (inner and outer pad blocks hashed).
enum Keyed {
    Md5(Hmac<Md5>),
    Sha1(Hmac<Sha1>),
    Sha256(Hmac<Sha256>),
}

/// A keyed, truncated HMAC ([`Mac`]).
///
/// [`Mac::new`] requires the key length RFC 2403/2404/4868 fix for ESP
/// ([`MacAlg::key_len`]: 16, 20 or 32 bytes). It hashes the padded key once; each call
/// clones that state, so the per-packet cost is the message plus two finalisations.
/// [`Mac::verify`] compares in constant time. `Debug` shows the algorithm, never the key.
pub struct SoftMac {
    alg: MacAlg,
    keyed: Keyed,
}

impl fmt::Debug for SoftMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftMac")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// Full HMAC of the concatenated `parts` into `out`; returns the full length.
fn full<M: hmac::Mac + Clone>(
    keyed: &M,
    parts: &[&[u8]],
    out: &mut [u8; MAX_HASH_LEN],
) -> Result<usize, CryptoError> {
    let mut m = keyed.clone();
    for part in parts {
        m.update(part);
    }
    let tag = m.finalize().into_bytes();
    let dst = out.get_mut(..tag.len()).ok_or(CryptoError::InvalidLength)?;
    dst.copy_from_slice(&tag);
    Ok(tag.len())
}

impl SoftMac {
    /// The untruncated HMAC, in `buf`.
    fn full(&self, parts: &[&[u8]], buf: &mut [u8; MAX_HASH_LEN]) -> Result<usize, CryptoError> {
        match &self.keyed {
            Keyed::Md5(m) => full(m, parts, buf),
            Keyed::Sha1(m) => full(m, parts, buf),
            Keyed::Sha256(m) => full(m, parts, buf),
        }
    }
}

fn key<M: KeyInit>(key: &[u8]) -> Result<M, CryptoError> {
    M::new_from_slice(key).map_err(|_| CryptoError::InvalidKeyLength)
}

impl Mac for SoftMac {
    fn new(alg: MacAlg, k: &[u8]) -> Result<Self, CryptoError> {
        if k.len() != alg.key_len() {
            return Err(CryptoError::InvalidKeyLength);
        }
        let keyed = match alg {
            MacAlg::HmacMd5_96 => Keyed::Md5(key(k)?),
            MacAlg::HmacSha1_96 => Keyed::Sha1(key(k)?),
            MacAlg::HmacSha256_128 => Keyed::Sha256(key(k)?),
            _ => return Err(CryptoError::Unsupported),
        };
        Ok(Self { alg, keyed })
    }

    fn alg(&self) -> MacAlg {
        self.alg
    }

    fn compute(&self, parts: &[&[u8]], out: &mut [u8]) -> Result<(), CryptoError> {
        if out.len() != self.alg.icv_len() {
            return Err(CryptoError::InvalidLength);
        }
        let mut buf = [0u8; MAX_HASH_LEN];
        self.full(parts, &mut buf)?;
        let icv = buf.get(..out.len()).ok_or(CryptoError::InvalidLength)?;
        out.copy_from_slice(icv);
        Ok(())
    }

    fn verify(&self, parts: &[&[u8]], icv: &[u8]) -> Result<(), CryptoError> {
        if icv.len() != self.alg.icv_len() {
            return Err(CryptoError::InvalidLength);
        }
        let mut buf = [0u8; MAX_HASH_LEN];
        self.full(parts, &mut buf)?;
        let expected = buf.get(..icv.len()).ok_or(CryptoError::InvalidLength)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> [u8; 64] {
        let mut out = [0u8; 64];
        for (i, o) in out.iter_mut().enumerate().take(s.len() / 2) {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    #[test]
    fn rfc2202_case1_sha1_96_parts_and_verify() {
        let m = SoftMac::new(MacAlg::HmacSha1_96, &[0x0b; 20]).unwrap();
        let want = hex("b617318655057264e28bc0b6");
        let mut icv = [0u8; 12];
        m.compute(&[b"Hi ", b"", b"There"], &mut icv).unwrap();
        assert_eq!(icv, want[..12]);
        m.verify(&[b"Hi There"], &icv).unwrap();
        let mut bad = icv;
        bad[0] ^= 1;
        assert_eq!(
            m.verify(&[b"Hi There"], &bad),
            Err(CryptoError::AuthenticationFailed)
        );
        assert_eq!(
            m.verify(&[b"Hi There"], &icv[..11]),
            Err(CryptoError::InvalidLength)
        );
        assert_eq!(
            m.compute(&[b"Hi There"], &mut [0u8; 20]),
            Err(CryptoError::InvalidLength)
        );
    }

    #[test]
    fn rfc2202_md5_case1() {
        // RFC 2202 §2 test case 1, truncated to 96 bits as RFC 2403 does.
        let m = SoftMac::new(MacAlg::HmacMd5_96, &[0x0b; 16]).unwrap();
        let mut icv = [0u8; 12];
        m.compute(&[b"Hi There"], &mut icv).unwrap();
        assert_eq!(icv, hex("9294727a3638bb1c13f48ef8158bfc9d")[..12]);
    }

    #[test]
    fn wrong_key_length() {
        for (alg, len) in [
            (MacAlg::HmacMd5_96, 20),
            (MacAlg::HmacSha1_96, 16),
            (MacAlg::HmacSha256_128, 20),
        ] {
            assert_eq!(
                SoftMac::new(alg, &[0; 40][..len]).err(),
                Some(CryptoError::InvalidKeyLength)
            );
        }
    }
}
