//! NIST CAVS AES-CBC and TDES/DES-CBC known answers, and RFC 3602 §4 cases 1-4.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{hex_field, load, records, str_field};
use hal_traits::{CbcCipher, CipherAlg};
use ipsec_soft_crypto::SoftCbc;
use serde_json::Value;

/// Runs one record in its stated direction, and always the inverse too.
fn check(alg: CipherAlg, key: &[u8], r: &Value, what: &str) {
    let c = SoftCbc::new(alg, key).unwrap();
    let iv = hex_field(r, "iv");
    let pt = hex_field(r, "plaintext");
    let ct = hex_field(r, "ciphertext");
    let mut buf = pt.clone();
    c.encrypt(&iv, &mut buf).unwrap();
    assert_eq!(buf, ct, "{what} encrypt {r}");
    c.decrypt(&iv, &mut buf).unwrap();
    assert_eq!(buf, pt, "{what} decrypt {r}");
    // The direction the record was written for, starting from its own input.
    let mut buf = match str_field(r, "direction") {
        "encrypt" => pt.clone(),
        "decrypt" => ct.clone(),
        d => panic!("direction {d}"),
    };
    if str_field(r, "direction") == "encrypt" {
        c.encrypt(&iv, &mut buf).unwrap();
        assert_eq!(buf, ct);
    } else {
        c.decrypt(&iv, &mut buf).unwrap();
        assert_eq!(buf, pt);
    }
}

#[test]
fn nist_aes_cbc_all_records() {
    let doc = load("nist_cavs_aes_cbc.json");
    let mut n = 0;
    let (mut enc, mut dec) = (0, 0);
    for (file, r) in records(&doc, "files") {
        let key = hex_field(r, "key");
        let alg = match key.len() {
            16 => CipherAlg::Aes128Cbc,
            24 => CipherAlg::Aes192Cbc,
            32 => CipherAlg::Aes256Cbc,
            l => panic!("{file}: key length {l}"),
        };
        check(alg, &key, r, file);
        match str_field(r, "direction") {
            "encrypt" => enc += 1,
            _ => dec += 1,
        }
        n += 1;
    }
    assert_eq!(n, 2138, "every record of the file");
    assert!(enc > 0 && dec > 0);
}

#[test]
fn nist_tdes_cbc_and_single_des() {
    let doc = load("nist_cavs_tdes_des_cbc.json");
    let (mut tdes, mut des) = (0, 0);
    for (file, r) in records(&doc, "files") {
        let (k1, k2, k3) = (
            hex_field(r, "key1"),
            hex_field(r, "key2"),
            hex_field(r, "key3"),
        );
        let key: Vec<u8> = [k1.as_slice(), &k2, &k3].concat();
        check(CipherAlg::TripleDesCbc, &key, r, file);
        tdes += 1;
        if k1 == k2 && k2 == k3 {
            // EDE with three equal keys is single DES.
            check(CipherAlg::DesCbc, &k1, r, file);
            des += 1;
        }
    }
    assert_eq!(tdes, 530);
    // All KAT files plus the one MMT file whose records repeat one key.
    assert_eq!(des, 490, "single-DES records");
}

#[test]
fn rfc3602_cbc_cases() {
    let doc = load("rfc3602_aes_cbc_esp.json");
    let cases = doc["cbc_cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let c = SoftCbc::new(CipherAlg::Aes128Cbc, &hex_field(case, "key")).unwrap();
        let iv = hex_field(case, "iv");
        let pt = hex_field(case, "plaintext");
        let mut buf = pt.clone();
        c.encrypt(&iv, &mut buf).unwrap();
        assert_eq!(buf, hex_field(case, "ciphertext"), "case {}", case["case"]);
        c.decrypt(&iv, &mut buf).unwrap();
        assert_eq!(buf, pt);
    }
}

#[test]
fn rfc3602_esp_cases_encrypt_the_pre_encryption_bytes() {
    // Cases 5-8: the ESP payload (payload | padding | pad length | next header).
    let doc = load("rfc3602_aes_cbc_esp.json");
    for case in doc["esp_cases"].as_array().unwrap() {
        let c = SoftCbc::new(CipherAlg::Aes128Cbc, &hex_field(case, "key")).unwrap();
        let mut buf = hex_field(case, "pre_encryption");
        c.encrypt(&hex_field(case, "iv"), &mut buf).unwrap();
        assert_eq!(buf, hex_field(case, "ciphertext"), "case {}", case["case"]);
    }
}
