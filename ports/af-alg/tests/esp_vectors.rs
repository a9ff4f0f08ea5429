//! The ESP known answers of `ipsec-core/tests/esp_vectors.rs`, run through
//! `EspSa<AfAlgCrypto>`: RFC 3602 cases 5-8, the RUBNDS AES-CBC + HMAC-SHA1 packet,
//! draft-mcgrew-gcm-test-01 (RFC 4106) and the 40 scapy packets. Transforms the running
//! kernel does not offer are skipped with a notice; the tests print what ran.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{af_alg_or_skip, data, h, s};
use hal_traits::{AeadAlg, CipherAlg, MacAlg};
use ipsec_af_alg::{AfAlgCrypto, Probe, kernel_offers};
use ipsec_core::Instant;
use ipsec_core::esp::{Direction, Encryption, EspConfig, EspSa, Transform};
use ipsec_core::replay::ReplaySnapshot;
use serde_json::Value;

type Sa = EspSa<AfAlgCrypto>;

fn pair(t: Transform, spi: u32, esn: bool, enc: &[u8], auth: &[u8]) -> (Sa, Sa) {
    let mut out = EspConfig::transport(spi, Direction::Outbound, t);
    out.esn = esn;
    let mut inb = EspConfig::transport(spi, Direction::Inbound, t);
    inb.esn = esn;
    (
        Sa::new(out, enc, auth, Instant::ZERO).unwrap(),
        Sa::new(inb, enc, auth, Instant::ZERO).unwrap(),
    )
}

/// Whether the kernel offers every algorithm of `t`; prints a notice if not.
fn offered(t: Transform, what: &str) -> bool {
    let enc = match t.enc {
        Encryption::Cbc(a) => kernel_offers(Probe::Cipher(a)),
        Encryption::Gcm(a) => kernel_offers(Probe::Aead(a)),
        _ => true,
    };
    let auth = t.auth.is_none_or(|m| kernel_offers(Probe::Mac(m)));
    if !(enc && auth) {
        println!("SKIP {what}: kernel lacks {:?} / {:?}", t.enc, t.auth);
    }
    enc && auth
}

/// Splits a decrypted ESP plaintext (payload | pad | pad len | next header).
fn split_plaintext(pt: &[u8]) -> (&[u8], u8) {
    let nh = pt[pt.len() - 1];
    let pad = usize::from(pt[pt.len() - 2]);
    (&pt[..pt.len() - 2 - pad], nh)
}

#[test]
fn rfc3602_esp_cases_5_to_8() {
    if !af_alg_or_skip("rfc3602_esp_cases_5_to_8") {
        return;
    }
    let t = Transform {
        enc: Encryption::Cbc(CipherAlg::Aes128Cbc),
        auth: None,
    };
    assert!(
        offered(t, "RFC 3602"),
        "cbc(aes) is the one algorithm required"
    );
    let d = data("ipsec-core/tests/data/rfc3602_aes_cbc_esp.json");
    let mut ran = 0;
    for c in d["esp_cases"].as_array().unwrap() {
        let key = h(&c["key"]);
        let spi = u32::from_str_radix(&s(&c["spi_hex"]), 16).unwrap();
        let seq: u64 = s(&c["seq"]).parse().unwrap();
        let esp = h(&c["esp_packet"]);
        let payload = h(&c["payload_data"]);
        let nh: u8 = s(&c["next_header"]).parse().unwrap();
        let (mut o, mut i) = pair(t, spi, false, &key, &[]);
        o.advance_seq_to(seq);
        let mut out = vec![0u8; o.sealed_len(payload.len())];
        let n = o
            .seal_with_iv(Instant::ZERO, nh, &payload, &h(&c["iv"]), &mut out)
            .unwrap();
        assert_eq!(
            hex::encode(&out[..n]),
            hex::encode(&esp),
            "case {}",
            c["case"]
        );
        let mut buf = esp.clone();
        let opened = i.open_in_place(Instant::ZERO, &mut buf).unwrap();
        assert_eq!((opened.next_header, opened.seq), (nh, seq));
        assert_eq!(&buf[opened.payload], &payload[..]);
        ran += 1;
    }
    println!("RAN RFC 3602 ESP cases over AF_ALG cbc(aes): {ran}");
    assert_eq!(ran, 4);
}

#[test]
fn rubnds_aes_cbc_hmac_sha1() {
    if !af_alg_or_skip("rubnds_aes_cbc_hmac_sha1") {
        return;
    }
    let t = Transform {
        enc: Encryption::Cbc(CipherAlg::Aes128Cbc),
        auth: Some(MacAlg::HmacSha1_96),
    };
    if !offered(t, "RUBNDS") {
        return;
    }
    let d = data("ipsec-core/tests/data/rfc3602_aes_cbc_esp.json");
    let c = &d["extra_esp_vectors"][0];
    let spi = u32::from_str_radix(&s(&c["spi"]), 16).unwrap();
    let (mut o, mut i) = pair(t, spi, false, &h(&c["enc_key"]), &h(&c["auth_key"]));
    let esp = h(&c["esp_packet"]);
    let inner = h(&c["inner_packet"]);
    let mut out = vec![0u8; 2048];
    let n = o
        .seal_with_iv(Instant::ZERO, 4, &inner, &h(&c["iv"]), &mut out)
        .unwrap();
    assert_eq!(hex::encode(&out[..n]), hex::encode(&esp));
    let mut buf = esp.clone();
    let opened = i.open_in_place(Instant::ZERO, &mut buf).unwrap();
    assert_eq!(&buf[opened.payload], &inner[..]);
    // A flipped ciphertext bit fails the kernel-computed ICV.
    let mut bad = esp.clone();
    bad[30] ^= 1;
    let (_, mut i2) = pair(t, spi, false, &h(&c["enc_key"]), &h(&c["auth_key"]));
    assert!(i2.open_in_place(Instant::ZERO, &mut bad).is_err());
    println!("RAN RUBNDS packet over AF_ALG cbc(aes) + hmac(sha1)");
}

#[test]
fn draft_mcgrew_gcm_packets() {
    if !af_alg_or_skip("draft_mcgrew_gcm_packets") {
        return;
    }
    let d = data("ipsec-core/tests/data/esp_aes_gcm_draft_mcgrew_gcm_test_01.json");
    let (mut ran, mut skipped) = (0, 0);
    for c in d["cases"].as_array().unwrap() {
        let idx = s(&c["index"]);
        let alg = match s(&c["key_bits"]).as_str() {
            "128" => AeadAlg::Aes128Gcm16,
            "192" => AeadAlg::Aes192Gcm16,
            _ => AeadAlg::Aes256Gcm16,
        };
        let t = Transform {
            enc: Encryption::Gcm(alg),
            auth: None,
        };
        if !offered(t, &format!("GCM case {idx}")) {
            skipped += 1;
            continue;
        }
        let esn = matches!(s(&c["esn"]).as_str(), "True" | "true");
        let spi = u32::from_str_radix(&s(&c["spi"]), 16).unwrap();
        let lo = u64::from_str_radix(&s(&c["seq_low"]), 16).unwrap();
        let hi = if esn {
            u64::from_str_radix(&s(&c["seq_high"]), 16).unwrap()
        } else {
            0
        };
        let seq = (hi << 32) | lo;
        let (mut o, mut i) = pair(t, spi, esn, &h(&c["keymat_rfc4106"]), &[]);
        let pt = h(&c["plaintext"]);
        let (payload, nh) = split_plaintext(&pt);
        let esp = h(&c["esp_packet"]);
        o.advance_seq_to(seq);
        let mut out = vec![0u8; 1024];
        let n = o
            .seal_with_iv(Instant::ZERO, nh, payload, &h(&c["iv"]), &mut out)
            .unwrap();
        assert_eq!(hex::encode(&out[..n]), hex::encode(&esp), "case {idx}");
        if esn || seq > 1 {
            let snap = ReplaySnapshot::<2> {
                bitmap: [0; 2],
                top: seq.saturating_sub(1),
                size: 64,
                esn,
            };
            i.restore_replay(&snap).unwrap();
        }
        let mut buf = esp.clone();
        let opened = i
            .open_in_place(Instant::ZERO, &mut buf)
            .unwrap_or_else(|e| panic!("case {idx}: {e}"));
        assert_eq!(opened.seq, seq, "case {idx}");
        assert_eq!(opened.next_header, nh);
        assert_eq!(&buf[opened.payload], payload);
        ran += 1;
    }
    println!("RAN draft-mcgrew GCM ESP packets over AF_ALG gcm(aes): {ran}, skipped {skipped}");
}

fn transform_of(v: &Value) -> Transform {
    let enc = match s(&v["encryption"]).as_str() {
        "DES" => Encryption::Cbc(CipherAlg::DesCbc),
        "3DES" => Encryption::Cbc(CipherAlg::TripleDesCbc),
        "AES-CBC-128" => Encryption::Cbc(CipherAlg::Aes128Cbc),
        "AES-CBC-256" => Encryption::Cbc(CipherAlg::Aes256Cbc),
        "AES-GCM" if s(&v["enc_key"]).len() == 32 => Encryption::Gcm(AeadAlg::Aes128Gcm16),
        "AES-GCM" => Encryption::Gcm(AeadAlg::Aes256Gcm16),
        "NULL" => Encryption::Null,
        other => panic!("unknown encryption {other}"),
    };
    let auth = match s(&v["integrity"]).as_str() {
        _ if matches!(enc, Encryption::Gcm(_)) => None,
        "HMAC-SHA1-96" => Some(MacAlg::HmacSha1_96),
        "HMAC-SHA2-256-128" => Some(MacAlg::HmacSha256_128),
        "HMAC-MD5-96" => Some(MacAlg::HmacMd5_96),
        _ => None,
    };
    Transform { enc, auth }
}

#[test]
fn scapy_esp_packets() {
    if !af_alg_or_skip("scapy_esp_packets") {
        return;
    }
    let d = data("ipsec-core/tests/data/scapy_esp_vectors.json");
    let mut ran = std::collections::BTreeMap::<String, usize>::new();
    let mut skipped = std::collections::BTreeMap::<String, usize>::new();
    for v in d["vectors"].as_array().unwrap() {
        let name = s(&v["name"]);
        let t = transform_of(v);
        let label = match t.auth {
            Some(m) => format!("{} + {m:?}", s(&v["encryption"])),
            None => s(&v["encryption"]),
        };
        if !offered(t, &name) {
            *skipped.entry(label).or_default() += 1;
            continue;
        }
        let enc_key = if matches!(t.enc, Encryption::Gcm(_)) {
            h(&v["gcm_keymat_rfc4106"])
        } else {
            h(&v["enc_key"])
        };
        let auth_key = if t.auth.is_some() {
            h(&v["auth_key"])
        } else {
            vec![]
        };
        let spi = u32::from_str_radix(&s(&v["spi"]), 16).unwrap();
        let seq: u64 = s(&v["seq"]).parse().unwrap();
        let (mut o, mut i) = pair(t, spi, false, &enc_key, &auth_key);
        let pt = h(&v["plaintext"]);
        let (payload, nh) = split_plaintext(&pt);
        let esp = h(&v["esp_packet"]);
        let iv = h(&v["iv"]);
        o.advance_seq_to(seq);
        let mut out = vec![0u8; 1024];
        let n = if iv.is_empty() {
            out[8..8 + payload.len()].copy_from_slice(payload);
            o.seal_in_place(Instant::ZERO, nh, &mut out, payload.len(), None)
                .unwrap()
        } else {
            o.seal_with_iv(Instant::ZERO, nh, payload, &iv, &mut out)
                .unwrap()
        };
        assert_eq!(hex::encode(&out[..n]), hex::encode(&esp), "{name}");
        let mut buf = esp.clone();
        let opened = i
            .open_in_place(Instant::ZERO, &mut buf)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&buf[opened.payload], payload, "{name}");
        *ran.entry(label).or_default() += 1;
    }
    let total_ran: usize = ran.values().sum();
    let total_skipped: usize = skipped.values().sum();
    println!("RAN scapy packets over AF_ALG: {total_ran} {ran:?}");
    println!("SKIPPED scapy packets (kernel lacks the transform): {total_skipped} {skipped:?}");
    assert_eq!(total_ran + total_skipped, 40);
    assert!(total_ran > 0, "no scapy transform ran over AF_ALG");
}
