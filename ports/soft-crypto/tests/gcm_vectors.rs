//! NIST CAVS AES-GCM (96-bit IV; 64, 96 and 128-bit tags), including FAIL records.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{hex_field, load, records, str_field};
use hal_traits::{Aead, AeadAlg, CryptoError};
use ipsec_soft_crypto::SoftAead;

fn alg_for(key_len: usize, tag_len: usize) -> AeadAlg {
    let base = match key_len {
        16 => AeadAlg::Aes128Gcm16,
        24 => AeadAlg::Aes192Gcm16,
        32 => AeadAlg::Aes256Gcm16,
        l => panic!("key length {l}"),
    };
    base.with_icv_len(tag_len).unwrap()
}

#[test]
fn nist_gcm_subset() {
    let doc = load("nist_cavs_aes_gcm_subset.json");
    let (mut pass, mut fail) = (0, 0);
    let mut tag_lens = std::collections::BTreeSet::new();
    let mut with_aad = (false, false);
    for (file, r) in records(&doc, "files") {
        assert_eq!(str_field(&r["params"], "IVlen"), "96");
        let key = hex_field(r, "key");
        let iv: [u8; 12] = hex_field(r, "iv").try_into().unwrap();
        let aad = hex_field(r, "aad");
        let ct = hex_field(r, "ct");
        let tag = hex_field(r, "tag");
        tag_lens.insert(tag.len());
        if aad.is_empty() {
            with_aad.0 = true
        } else {
            with_aad.1 = true
        }
        let a = SoftAead::new(alg_for(key.len(), tag.len()), &key).unwrap();
        let what = format!("{file} count {}", r["count"]);

        let mut buf = ct.clone();
        let opened = a.open(&iv, &aad, &mut buf, &tag);
        match str_field(r, "result") {
            "PASS" => {
                let pt = hex_field(r, "pt");
                opened.unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(buf, pt, "{what}");
                let mut buf = pt.clone();
                let mut out = vec![0u8; tag.len()];
                a.seal(&iv, &aad, &mut buf, &mut out).unwrap();
                assert_eq!((buf, out), (ct, tag), "{what}");
                pass += 1;
            }
            "FAIL" => {
                assert!(r.get("pt").is_none(), "FAIL records carry no plaintext");
                assert_eq!(opened, Err(CryptoError::AuthenticationFailed), "{what}");
                fail += 1;
            }
            other => panic!("result {other}"),
        }
    }
    assert_eq!(tag_lens.into_iter().collect::<Vec<_>>(), [8, 12, 16]);
    assert!(with_aad.0 && with_aad.1);
    assert_eq!((pass, fail), (675, 225));
}
