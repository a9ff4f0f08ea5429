//! IKE's PRF (HMAC over MD5, SHA-1, SHA-256, SHA-384 or SHA-512) and the plain hashes.

use core::fmt;

use hal_traits::{CryptoError, HashAlg, Prf};
use hmac::{
    Hmac, KeyInit,
    digest::{Digest, FixedOutput, Output, OutputSizeUser, Update},
};
use md5::Md5;
use sha1::Sha1;
use sha2::{Sha256, Sha384, Sha512};

/// HMAC state with the key already absorbed.
enum Keyed {
    Md5(Hmac<Md5>),
    Sha1(Hmac<Sha1>),
    Sha256(Hmac<Sha256>),
    Sha384(Hmac<Sha384>),
    Sha512(Hmac<Sha512>),
}

/// HMAC-based PRF with a precomputed keyed state ([`Prf`]).
///
/// Any key length is accepted (HMAC hashes keys longer than a block), as IKE needs for
/// `prf(Ni | Nr, ...)`. `Debug` shows the hash, never the key.
pub struct SoftPrf {
    alg: HashAlg,
    keyed: Keyed,
}

impl fmt::Debug for SoftPrf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftPrf")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// Runs `state` over `parts` and finalises straight into the front of `out`, so the
/// output (often key material) is never copied through a temporary.
fn finish<S: Update + FixedOutput>(
    mut state: S,
    parts: &[&[u8]],
    out: &mut [u8],
) -> Result<usize, CryptoError> {
    let len = <S as OutputSizeUser>::output_size();
    let dst = out.get_mut(..len).ok_or(CryptoError::InvalidLength)?;
    let dst = <&mut Output<S>>::try_from(dst).map_err(|_| CryptoError::InvalidLength)?;
    for part in parts {
        state.update(part);
    }
    state.finalize_into(dst);
    Ok(len)
}

fn key<M: KeyInit>(key: &[u8]) -> Result<M, CryptoError> {
    M::new_from_slice(key).map_err(|_| CryptoError::InvalidKeyLength)
}

impl Prf for SoftPrf {
    fn new(alg: HashAlg, k: &[u8]) -> Result<Self, CryptoError> {
        let keyed = match alg {
            HashAlg::Md5 => Keyed::Md5(key(k)?),
            HashAlg::Sha1 => Keyed::Sha1(key(k)?),
            HashAlg::Sha256 => Keyed::Sha256(key(k)?),
            HashAlg::Sha384 => Keyed::Sha384(key(k)?),
            HashAlg::Sha512 => Keyed::Sha512(key(k)?),
            _ => return Err(CryptoError::Unsupported),
        };
        Ok(Self { alg, keyed })
    }

    fn alg(&self) -> HashAlg {
        self.alg
    }

    fn compute(&self, parts: &[&[u8]], out: &mut [u8]) -> Result<usize, CryptoError> {
        match &self.keyed {
            Keyed::Md5(m) => finish(m.clone(), parts, out),
            Keyed::Sha1(m) => finish(m.clone(), parts, out),
            Keyed::Sha256(m) => finish(m.clone(), parts, out),
            Keyed::Sha384(m) => finish(m.clone(), parts, out),
            Keyed::Sha512(m) => finish(m.clone(), parts, out),
        }
    }

    fn hash(alg: HashAlg, parts: &[&[u8]], out: &mut [u8]) -> Result<usize, CryptoError> {
        match alg {
            HashAlg::Md5 => finish(Md5::new(), parts, out),
            HashAlg::Sha1 => finish(Sha1::new(), parts, out),
            HashAlg::Sha256 => finish(Sha256::new(), parts, out),
            HashAlg::Sha384 => finish(Sha384::new(), parts, out),
            HashAlg::Sha512 => finish(Sha512::new(), parts, out),
            _ => Err(CryptoError::Unsupported),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_lengths_and_short_buffers() {
        for alg in [
            HashAlg::Md5,
            HashAlg::Sha1,
            HashAlg::Sha256,
            HashAlg::Sha384,
            HashAlg::Sha512,
        ] {
            let p = SoftPrf::new(alg, b"k").unwrap();
            assert_eq!(p.alg(), alg);
            let mut out = [0u8; 80];
            assert_eq!(p.compute(&[b"x"], &mut out), Ok(alg.output_len()));
            assert!(out[alg.output_len()..].iter().all(|&b| b == 0));
            let short = &mut out[..alg.output_len() - 1];
            assert_eq!(p.compute(&[b"x"], short), Err(CryptoError::InvalidLength));
            assert_eq!(
                SoftPrf::hash(alg, &[b"x"], short),
                Err(CryptoError::InvalidLength)
            );
            assert_eq!(SoftPrf::hash(alg, &[b"x"], &mut out), Ok(alg.output_len()));
        }
    }

    #[test]
    fn hash_known_answers_over_parts() {
        // FIPS 180 "abc" examples, split across parts.
        let mut out = [0u8; 64];
        SoftPrf::hash(HashAlg::Sha1, &[b"a", b"", b"bc"], &mut out).unwrap();
        assert_eq!(out[..4], [0xa9, 0x99, 0x3e, 0x36]);
        SoftPrf::hash(HashAlg::Sha256, &[b"ab", b"c"], &mut out).unwrap();
        assert_eq!(out[..4], [0xba, 0x78, 0x16, 0xbf]);
        SoftPrf::hash(HashAlg::Sha384, &[b"abc"], &mut out).unwrap();
        assert_eq!(out[..4], [0xcb, 0x00, 0x75, 0x3f]);
        SoftPrf::hash(HashAlg::Sha512, &[b"abc"], &mut out).unwrap();
        assert_eq!(out[..4], [0xdd, 0xaf, 0x35, 0xa1]);
        // RFC 1321 MD5("abc").
        SoftPrf::hash(HashAlg::Md5, &[b"abc"], &mut out).unwrap();
        assert_eq!(out[..4], [0x90, 0x01, 0x50, 0x98]);
    }
}
