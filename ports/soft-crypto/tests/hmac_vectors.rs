//! HMAC known answers: RFC 2202/2404 (SHA-1), RFC 4231/4868 (SHA-256), NIST CAVS HMAC.
//!
//! The full-length outputs go through [`Prf`]; the ESP truncations (96 and 128 bits)
//! through [`Mac`], whose keys must have the ESP length (20 or 32 bytes). Vectors with
//! other key lengths check the truncation as a prefix of the PRF output instead.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{hex_field, load};
use hal_traits::{CryptoError, HashAlg, Mac, MacAlg, Prf};
use ipsec_soft_crypto::{SoftMac, SoftPrf};

fn prf(alg: HashAlg, key: &[u8], data: &[u8]) -> Vec<u8> {
    let p = SoftPrf::new(alg, key).unwrap();
    let mut out = [0u8; 64];
    // Split the message to exercise multi-part input.
    let (a, b) = data.split_at(data.len() / 3);
    let n = p.compute(&[a, b], &mut out).unwrap();
    out[..n].to_vec()
}

/// Checks `icv` through `Mac` when the key has the ESP length, always as a PRF prefix.
/// Returns whether `Mac` was used.
fn check_truncated(mac: MacAlg, key: &[u8], data: &[u8], icv: &[u8]) -> bool {
    assert_eq!(icv.len(), mac.icv_len());
    assert_eq!(&prf(mac.hash(), key, data)[..icv.len()], icv);
    if key.len() != mac.key_len() {
        assert_eq!(
            SoftMac::new(mac, key).err(),
            Some(CryptoError::InvalidKeyLength)
        );
        return false;
    }
    let m = SoftMac::new(mac, key).unwrap();
    let mut out = vec![0u8; icv.len()];
    m.compute(&[data], &mut out).unwrap();
    assert_eq!(out, icv);
    m.verify(&[&data[..data.len() / 2], &data[data.len() / 2..]], icv)
        .unwrap();
    let mut bad = icv.to_vec();
    *bad.last_mut().unwrap() ^= 0x01;
    assert_eq!(
        m.verify(&[data], &bad),
        Err(CryptoError::AuthenticationFailed)
    );
    assert_eq!(
        m.verify(&[data], &icv[1..]),
        Err(CryptoError::InvalidLength)
    );
    true
}

#[test]
fn rfc2202_hmac_sha1_and_sha1_96() {
    let doc = load("hmac_sha1_rfc2202_rfc2404.json");
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 7);
    let mut via_mac = 0;
    for c in cases {
        let (key, data) = (hex_field(c, "key"), hex_field(c, "data"));
        assert_eq!(
            prf(HashAlg::Sha1, &key, &data),
            hex_field(c, "hmac_sha1"),
            "{c}"
        );
        via_mac += usize::from(check_truncated(
            MacAlg::HmacSha1_96,
            &key,
            &data,
            &hex_field(c, "hmac_sha1_96"),
        ));
    }
    assert_eq!(via_mac, 3, "cases 1, 3 and 5 have 20-byte keys");
}

#[test]
fn rfc4231_and_rfc4868_hmac_sha256() {
    let doc = load("hmac_sha256_rfc4231_rfc4868.json");
    let cases = doc["rfc4231_cases"].as_array().unwrap();
    assert_eq!(cases.len(), 7);
    for c in cases {
        let (key, data) = (hex_field(c, "key"), hex_field(c, "data"));
        let full = prf(HashAlg::Sha256, &key, &data);
        if c["hmac_sha256"].is_null() {
            // Case 5 is published truncated to 128 bits.
            check_truncated(
                MacAlg::HmacSha256_128,
                &key,
                &data,
                &hex_field(c, "hmac_sha256_truncated_128"),
            );
        } else {
            assert_eq!(full, hex_field(c, "hmac_sha256"), "{c}");
        }
    }
    let auth = doc["rfc4868_auth256_cases"].as_array().unwrap();
    assert_eq!(auth.len(), 4);
    for c in auth {
        let (key, data) = (hex_field(c, "key"), hex_field(c, "data"));
        assert_eq!(
            prf(HashAlg::Sha256, &key, &data),
            hex_field(c, "prf_hmac_sha256"),
            "{c}"
        );
        assert!(check_truncated(
            MacAlg::HmacSha256_128,
            &key,
            &data,
            &hex_field(c, "hmac_sha256_128")
        ));
    }
}

#[test]
fn nist_cavs_hmac() {
    let doc = load("nist_cavs_hmac_sha1_sha256.json");
    let mut n = 0;
    for (name, alg) in [("SHA-1", HashAlg::Sha1), ("SHA-256", HashAlg::Sha256)] {
        for r in doc["tests"][name].as_array().unwrap() {
            let (key, msg, mac) = (
                hex_field(r, "key"),
                hex_field(r, "msg"),
                hex_field(r, "mac"),
            );
            let tlen = usize::try_from(r["tlen"].as_u64().unwrap()).unwrap();
            assert_eq!(mac.len(), tlen);
            assert_eq!(
                &prf(alg, &key, &msg)[..tlen],
                mac,
                "{name} count {}",
                r["count"]
            );
            n += 1;
        }
    }
    assert_eq!(n, 135);
}
