//! `SoftCrypto` used the way the core crates use a provider: only through the traits.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use hal_traits::{
    Aead, AeadAlg, CbcCipher, CipherAlg, CryptoProvider, DhGroup, DiffieHellman, HashAlg, Mac,
    MacAlg, Prf,
};
use ipsec_soft_crypto::SoftCrypto;

/// A tiny ESP-like seal/open and an IKE-like key agreement, generic over the provider.
fn exercise<P: CryptoProvider>() {
    let cbc = P::Cbc::new(CipherAlg::Aes256Cbc, &[1; 32]).unwrap();
    let mac = P::Mac::new(MacAlg::HmacSha256_128, &[2; 32]).unwrap();
    let iv = [3u8; 16];
    let mut body = [0x42u8; 32];
    cbc.encrypt(&iv, &mut body).unwrap();
    let mut icv = [0u8; 16];
    mac.compute(&[b"spi|seq", &iv, &body], &mut icv).unwrap();
    mac.verify(&[b"spi|seq", &iv, &body], &icv).unwrap();
    cbc.decrypt(&iv, &mut body).unwrap();
    assert_eq!(body, [0x42; 32]);

    let aead = P::Aead::new(AeadAlg::Aes128Gcm16, &[4; 16]).unwrap();
    let mut tag = [0u8; 16];
    aead.seal(&[5; 12], b"aad", &mut body, &mut tag).unwrap();
    aead.open(&[5; 12], b"aad", &mut body, &tag).unwrap();
    assert_eq!(body, [0x42; 32]);

    let a = P::Dh::from_private(DhGroup::Modp1024, &[7; 32]).unwrap();
    let b = P::Dh::from_private(DhGroup::Modp1024, &[9; 32]).unwrap();
    let (mut pa, mut pb) = ([0u8; 128], [0u8; 128]);
    a.public_key(&mut pa).unwrap();
    b.public_key(&mut pb).unwrap();
    let (mut sa, mut sb) = ([0u8; 128], [0u8; 128]);
    a.shared_secret(&pb, &mut sa).unwrap();
    b.shared_secret(&pa, &mut sb).unwrap();
    assert_eq!(sa, sb);

    let prf = P::Prf::new(HashAlg::Sha1, b"nonces").unwrap();
    let mut skeyid = [0u8; 64];
    assert_eq!(prf.compute(&[&sa], &mut skeyid), Ok(20));
    let mut h = [0u8; 64];
    assert_eq!(P::Prf::hash(HashAlg::Sha512, &[&pa, &pb], &mut h), Ok(64));
}

#[test]
fn soft_crypto_is_a_provider() {
    exercise::<SoftCrypto>();
}
