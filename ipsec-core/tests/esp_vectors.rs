//! Known answers for the ESP layer (SPI to ICV): RFC 3602, draft-mcgrew-gcm-test-01
//! (RFC 4106, with ESN) and the scapy-generated packets. Every packet opens to its
//! plaintext and, with the recorded IV and sequence number, seals to the same bytes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use hal_traits::{AeadAlg, CipherAlg, MacAlg};
use ipsec_core::Instant;
use ipsec_core::esp::{Direction, Encryption, EspConfig, EspError, EspSa, Transform};
use ipsec_core::replay::ReplaySnapshot;
use ipsec_soft_crypto::SoftCrypto;
use serde_json::Value;

fn data(name: &str) -> Value {
    let p = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn h(v: &Value) -> Vec<u8> {
    hex::decode(s(v)).unwrap()
}

/// A field as text: the files hold most values as strings, a few as numbers or null.
fn s(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

type Sa = EspSa<SoftCrypto>;

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

/// Splits a decrypted ESP plaintext (payload | pad | pad len | next header).
fn split_plaintext(pt: &[u8]) -> (&[u8], u8) {
    let nh = pt[pt.len() - 1];
    let pad = usize::from(pt[pt.len() - 2]);
    (&pt[..pt.len() - 2 - pad], nh)
}

#[test]
fn rfc3602_esp_cases_5_to_8() {
    let d = data("rfc3602_aes_cbc_esp.json");
    for c in d["esp_cases"].as_array().unwrap() {
        let key = h(&c["key"]);
        let spi = u32::from_str_radix(&s(&c["spi_hex"]), 16).unwrap();
        let seq: u64 = s(&c["seq"]).parse().unwrap();
        let iv = h(&c["iv"]);
        let esp = h(&c["esp_packet"]);
        let payload = h(&c["payload_data"]);
        let nh: u8 = s(&c["next_header"]).parse().unwrap();
        let t = Transform {
            enc: Encryption::Cbc(CipherAlg::Aes128Cbc),
            auth: None,
        };
        let (mut o, mut i) = pair(t, spi, false, &key, &[]);

        o.advance_seq_to(seq);
        let mut out = vec![0u8; o.sealed_len(payload.len())];
        let n = o
            .seal_with_iv(Instant::ZERO, nh, &payload, &iv, &mut out)
            .unwrap();
        assert_eq!(
            hex::encode(&out[..n]),
            hex::encode(&esp),
            "case {}",
            c["case"]
        );

        let mut buf = esp.clone();
        let opened = i.open_in_place(Instant::ZERO, &mut buf).unwrap();
        assert_eq!(opened.next_header, nh);
        assert_eq!(opened.seq, seq);
        assert_eq!(&buf[opened.payload], &payload[..]);
    }
}

#[test]
fn rubnds_aes_cbc_hmac_sha1() {
    let d = data("rfc3602_aes_cbc_esp.json");
    let c = &d["extra_esp_vectors"][0];
    let t = Transform {
        enc: Encryption::Cbc(CipherAlg::Aes128Cbc),
        auth: Some(MacAlg::HmacSha1_96),
    };
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
    assert_eq!(i.counters().verify, 1);
    assert_eq!(i.counters().decrypt, 1);
}

#[test]
fn draft_mcgrew_gcm_packets() {
    let d = data("esp_aes_gcm_draft_mcgrew_gcm_test_01.json");
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
        let esn = matches!(s(&c["esn"]).as_str(), "True" | "true");
        let spi = u32::from_str_radix(&s(&c["spi"]), 16).unwrap();
        let lo = u64::from_str_radix(&s(&c["seq_low"]), 16).unwrap();
        let hi = if esn {
            u64::from_str_radix(&s(&c["seq_high"]), 16).unwrap()
        } else {
            0
        };
        let seq = (hi << 32) | lo;
        let keymat = h(&c["keymat_rfc4106"]);
        let (mut o, mut i) = pair(t, spi, esn, &keymat, &[]);
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
            // A receiver that has already seen the packet before this one.
            let mut snap = ReplaySnapshot::<2> {
                bitmap: [0; 2],
                top: seq - 1,
                size: 64,
                esn,
            };
            if seq == 0 {
                snap.top = 0;
            }
            i.restore_replay(&snap).unwrap();
        }
        let mut buf = esp.clone();
        let opened = i
            .open_in_place(Instant::ZERO, &mut buf)
            .unwrap_or_else(|e| panic!("case {idx}: {e}"));
        assert_eq!(opened.seq, seq, "case {idx}");
        assert_eq!(opened.next_header, nh);
        assert_eq!(&buf[opened.payload], payload);
    }
}

#[test]
fn scapy_esp_part() {
    let d = data("scapy_esp_vectors.json");
    let mut checked = 0;
    for v in d["vectors"].as_array().unwrap() {
        let name = s(&v["name"]);
        let t = transform_of(v);
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
        let iv_hex = s(&v["iv"]);
        let spi = u32::from_str_radix(&s(&v["spi"]), 16).unwrap();
        let seq: u64 = s(&v["seq"]).parse().unwrap();
        let (mut o, mut i) = pair(t, spi, false, &enc_key, &auth_key);
        let pt = h(&v["plaintext"]);
        let (payload, nh) = split_plaintext(&pt);
        let esp = h(&v["esp_packet"]);
        let iv = hex::decode(&iv_hex).unwrap();

        o.advance_seq_to(seq);
        let mut out = vec![0u8; 1024];
        let n = if iv.is_empty() {
            o.seal_in_place_copy(nh, payload, &mut out)
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
        checked += 1;
    }
    assert_eq!(checked, 40);
}

trait SealNull {
    fn seal_in_place_copy(&mut self, nh: u8, payload: &[u8], out: &mut [u8]) -> usize;
}

impl SealNull for Sa {
    fn seal_in_place_copy(&mut self, nh: u8, payload: &[u8], out: &mut [u8]) -> usize {
        out[8..8 + payload.len()].copy_from_slice(payload);
        self.seal_in_place(Instant::ZERO, nh, out, payload.len(), None)
            .unwrap()
    }
}

fn transform_of(v: &Value) -> Transform {
    let auth = match s(&v["integrity"]).as_str() {
        "HMAC-SHA1-96" => Some(MacAlg::HmacSha1_96),
        "HMAC-SHA2-256-128" => Some(MacAlg::HmacSha256_128),
        "HMAC-MD5-96" => Some(MacAlg::HmacMd5_96),
        _ => None,
    };
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
    let auth = if matches!(enc, Encryption::Gcm(_)) {
        None
    } else {
        auth
    };
    Transform { enc, auth }
}

#[test]
fn wrong_direction_is_refused() {
    let t = Transform {
        enc: Encryption::Cbc(CipherAlg::Aes128Cbc),
        auth: Some(MacAlg::HmacSha1_96),
    };
    let (mut o, mut i) = pair(t, 0x1234, false, &[1; 16], &[2; 20]);
    let mut out = [0u8; 128];
    assert_eq!(
        i.seal_with_iv(Instant::ZERO, 4, &[0; 20], &[0; 16], &mut out),
        Err(EspError::WrongDirection)
    );
    assert_eq!(
        o.open_in_place(Instant::ZERO, &mut out),
        Err(EspError::WrongDirection)
    );
}
