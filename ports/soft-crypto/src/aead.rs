//! AES-GCM with a 12-byte nonce and an 8, 12 or 16-byte detached tag (RFC 4106).

use core::fmt;

use aes::cipher::typenum::Unsigned;
use aes::{Aes128, Aes192, Aes256};
use aes_gcm::{
    AeadCore, AeadInOut, AesGcm, KeyInit,
    aead::{
        array::Array,
        consts::{U8, U12, U16},
    },
};
use hal_traits::{Aead, AeadAlg, CryptoError};

/// One variant per key size and tag length: the tag length is a type parameter of
/// `AesGcm`, and truncating a 16-byte tag by hand would lose its constant-time check.
enum Keyed {
    Aes128Tag8(AesGcm<Aes128, U12, U8>),
    Aes128Tag12(AesGcm<Aes128, U12, U12>),
    Aes128Tag16(AesGcm<Aes128, U12, U16>),
    Aes192Tag8(AesGcm<Aes192, U12, U8>),
    Aes192Tag12(AesGcm<Aes192, U12, U12>),
    Aes192Tag16(AesGcm<Aes192, U12, U16>),
    Aes256Tag8(AesGcm<Aes256, U12, U8>),
    Aes256Tag12(AesGcm<Aes256, U12, U12>),
    Aes256Tag16(AesGcm<Aes256, U12, U16>),
}

/// AES-GCM with the key schedule and GHASH key computed once ([`Aead`]).
///
/// `open` verifies the tag (in constant time) before it decrypts anything. `Debug` shows
/// the algorithm, never the key.
pub struct SoftAead {
    alg: AeadAlg,
    keyed: Keyed,
}

impl fmt::Debug for SoftAead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftAead")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

fn key<C: KeyInit>(key: &[u8]) -> Result<C, CryptoError> {
    C::new_from_slice(key).map_err(|_| CryptoError::InvalidKeyLength)
}

fn seal_with<C: AeadInOut + AeadCore<NonceSize = U12>>(
    c: &C,
    nonce: &[u8; 12],
    aad: &[u8],
    buf: &mut [u8],
    tag: &mut [u8],
) -> Result<(), CryptoError> {
    if tag.len() != C::TagSize::USIZE {
        return Err(CryptoError::InvalidLength);
    }
    let nonce = Array::from(*nonce);
    // The only failure is a message over GCM's 2^36-byte limit.
    let computed = c
        .encrypt_inout_detached(&nonce, aad, buf.into())
        .map_err(|_| CryptoError::InvalidLength)?;
    tag.copy_from_slice(&computed);
    Ok(())
}

fn open_with<C: AeadInOut + AeadCore<NonceSize = U12>>(
    c: &C,
    nonce: &[u8; 12],
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8],
) -> Result<(), CryptoError> {
    let tag = Array::try_from(tag).map_err(|_| CryptoError::InvalidLength)?;
    let nonce = Array::from(*nonce);
    c.decrypt_inout_detached(&nonce, aad, buf.into(), &tag)
        .map_err(|_| CryptoError::AuthenticationFailed)
}

macro_rules! dispatch {
    ($keyed:expr, $f:ident($($arg:expr),*)) => {
        match $keyed {
            Keyed::Aes128Tag8(c) => $f(c, $($arg),*),
            Keyed::Aes128Tag12(c) => $f(c, $($arg),*),
            Keyed::Aes128Tag16(c) => $f(c, $($arg),*),
            Keyed::Aes192Tag8(c) => $f(c, $($arg),*),
            Keyed::Aes192Tag12(c) => $f(c, $($arg),*),
            Keyed::Aes192Tag16(c) => $f(c, $($arg),*),
            Keyed::Aes256Tag8(c) => $f(c, $($arg),*),
            Keyed::Aes256Tag12(c) => $f(c, $($arg),*),
            Keyed::Aes256Tag16(c) => $f(c, $($arg),*),
        }
    };
}

impl Aead for SoftAead {
    fn new(alg: AeadAlg, k: &[u8]) -> Result<Self, CryptoError> {
        if k.len() != alg.key_len() {
            return Err(CryptoError::InvalidKeyLength);
        }
        let keyed = match alg {
            AeadAlg::Aes128Gcm8 => Keyed::Aes128Tag8(key(k)?),
            AeadAlg::Aes128Gcm12 => Keyed::Aes128Tag12(key(k)?),
            AeadAlg::Aes128Gcm16 => Keyed::Aes128Tag16(key(k)?),
            AeadAlg::Aes192Gcm8 => Keyed::Aes192Tag8(key(k)?),
            AeadAlg::Aes192Gcm12 => Keyed::Aes192Tag12(key(k)?),
            AeadAlg::Aes192Gcm16 => Keyed::Aes192Tag16(key(k)?),
            AeadAlg::Aes256Gcm8 => Keyed::Aes256Tag8(key(k)?),
            AeadAlg::Aes256Gcm12 => Keyed::Aes256Tag12(key(k)?),
            AeadAlg::Aes256Gcm16 => Keyed::Aes256Tag16(key(k)?),
            _ => return Err(CryptoError::Unsupported),
        };
        Ok(Self { alg, keyed })
    }

    fn alg(&self) -> AeadAlg {
        self.alg
    }

    fn seal(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &mut [u8],
    ) -> Result<(), CryptoError> {
        dispatch!(&self.keyed, seal_with(nonce, aad, buf, tag))
    }

    fn open(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8],
    ) -> Result<(), CryptoError> {
        dispatch!(&self.keyed, open_with(nonce, aad, buf, tag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [AeadAlg; 9] = [
        AeadAlg::Aes128Gcm8,
        AeadAlg::Aes128Gcm12,
        AeadAlg::Aes128Gcm16,
        AeadAlg::Aes192Gcm8,
        AeadAlg::Aes192Gcm12,
        AeadAlg::Aes192Gcm16,
        AeadAlg::Aes256Gcm8,
        AeadAlg::Aes256Gcm12,
        AeadAlg::Aes256Gcm16,
    ];

    #[test]
    fn round_trip_every_variant_and_tag_is_a_prefix() {
        let nonce = [0x11; 12];
        let mut full = [0u8; 16];
        for alg in ALL {
            let k = [0x42u8; 32];
            let a = SoftAead::new(alg, &k[..alg.key_len()]).unwrap();
            assert_eq!(a.alg(), alg);
            let mut buf = *b"twenty-one byte text!";
            let mut tag = [0u8; 16];
            let tag = &mut tag[..alg.icv_len()];
            a.seal(&nonce, b"aad", &mut buf, tag).unwrap();
            assert_ne!(&buf, b"twenty-one byte text!");
            if alg.icv_len() == 16 {
                full.copy_from_slice(tag);
            } else if alg.key_len() == 32 {
                // Truncated GCM tags are prefixes of the full tag (same key and nonce).
                let a16 = SoftAead::new(AeadAlg::Aes256Gcm16, &k).unwrap();
                let mut b2 = *b"twenty-one byte text!";
                let mut t16 = [0u8; 16];
                a16.seal(&nonce, b"aad", &mut b2, &mut t16).unwrap();
                assert_eq!(&t16[..alg.icv_len()], &tag[..]);
            }
            a.open(&nonce, b"aad", &mut buf, tag).unwrap();
            assert_eq!(&buf, b"twenty-one byte text!");
        }
        assert_ne!(full, [0u8; 16]);
    }

    #[test]
    fn open_rejects_tampering_and_keeps_ciphertext() {
        let a = SoftAead::new(AeadAlg::Aes128Gcm12, &[1u8; 16]).unwrap();
        let nonce = [2u8; 12];
        let mut buf = [0u8; 32];
        let mut tag = [0u8; 12];
        a.seal(&nonce, b"hdr", &mut buf, &mut tag).unwrap();
        let ct = buf;
        let mut bad = tag;
        bad[11] ^= 1;
        assert_eq!(
            a.open(&nonce, b"hdr", &mut buf, &bad),
            Err(CryptoError::AuthenticationFailed)
        );
        assert_eq!(buf, ct, "nothing is decrypted before the tag verifies");
        assert_eq!(
            a.open(&nonce, b"hdX", &mut buf, &tag),
            Err(CryptoError::AuthenticationFailed)
        );
        let mut other = [2u8; 12];
        other[0] = 3;
        assert_eq!(
            a.open(&other, b"hdr", &mut buf, &tag),
            Err(CryptoError::AuthenticationFailed)
        );
        buf[0] ^= 0x80;
        assert_eq!(
            a.open(&nonce, b"hdr", &mut buf, &tag),
            Err(CryptoError::AuthenticationFailed)
        );
    }

    #[test]
    fn wrong_lengths() {
        assert_eq!(
            SoftAead::new(AeadAlg::Aes256Gcm16, &[0u8; 16]).err(),
            Some(CryptoError::InvalidKeyLength)
        );
        let a = SoftAead::new(AeadAlg::Aes128Gcm8, &[0u8; 16]).unwrap();
        let mut buf = [7u8; 5];
        let mut tag = [0u8; 16];
        assert_eq!(
            a.seal(&[0; 12], &[], &mut buf, &mut tag),
            Err(CryptoError::InvalidLength)
        );
        assert_eq!(
            buf, [7u8; 5],
            "a bad tag buffer is caught before encrypting"
        );
        assert_eq!(
            a.open(&[0; 12], &[], &mut buf, &tag[..12]),
            Err(CryptoError::InvalidLength)
        );
    }
}
