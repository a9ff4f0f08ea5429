//! Per-trait known answers over AF_ALG (NIST CAVS AES-CBC, TDES/DES-CBC and AES-GCM;
//! RFC 2202/2404 HMAC-SHA1-96; RFC 4868 HMAC-SHA-256-128), then the same operations on
//! seeded random inputs compared byte for byte with `ipsec-soft-crypto`: odd lengths,
//! multi-chunk CBC, many-part MACs, long AADs, tampering, concurrent use.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use common::{Rng, af_alg_or_skip, data, h, s};
use hal_traits::{Aead, AeadAlg, CbcCipher, CipherAlg, CryptoError, Mac, MacAlg};
use ipsec_af_alg::{AfAlgAead, AfAlgCbc, AfAlgMac, Probe, kernel_offers};
use ipsec_soft_crypto::{SoftAead, SoftCbc, SoftMac};

const CIPHERS: [CipherAlg; 5] = [
    CipherAlg::DesCbc,
    CipherAlg::TripleDesCbc,
    CipherAlg::Aes128Cbc,
    CipherAlg::Aes192Cbc,
    CipherAlg::Aes256Cbc,
];
const MACS: [MacAlg; 3] = [
    MacAlg::HmacMd5_96,
    MacAlg::HmacSha1_96,
    MacAlg::HmacSha256_128,
];
const AEADS: [AeadAlg; 9] = [
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

fn records(doc: &serde_json::Value) -> impl Iterator<Item = (&str, &serde_json::Value)> {
    doc["files"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(n, rs)| rs.as_array().unwrap().iter().map(move |r| (n.as_str(), r)))
}

fn check_cbc(alg: CipherAlg, key: &[u8], r: &serde_json::Value) {
    let c = AfAlgCbc::new(alg, key).unwrap();
    let (iv, pt, ct) = (h(&r["iv"]), h(&r["plaintext"]), h(&r["ciphertext"]));
    let mut buf = pt.clone();
    c.encrypt(&iv, &mut buf).unwrap();
    assert_eq!(buf, ct, "{alg:?} encrypt {r}");
    c.decrypt(&iv, &mut buf).unwrap();
    assert_eq!(buf, pt, "{alg:?} decrypt {r}");
}

#[test]
fn nist_aes_cbc_all_records() {
    if !af_alg_or_skip("nist_aes_cbc_all_records") {
        return;
    }
    let doc = data("ports/soft-crypto/tests/data/nist_cavs_aes_cbc.json");
    let mut n = 0;
    for (_, r) in records(&doc) {
        let key = h(&r["key"]);
        let alg = match key.len() {
            16 => CipherAlg::Aes128Cbc,
            24 => CipherAlg::Aes192Cbc,
            _ => CipherAlg::Aes256Cbc,
        };
        check_cbc(alg, &key, r);
        n += 1;
    }
    println!("RAN NIST AES-CBC records over cbc(aes): {n}");
    assert_eq!(n, 2138);
}

#[test]
fn nist_tdes_and_des_cbc() {
    if !af_alg_or_skip("nist_tdes_and_des_cbc") {
        return;
    }
    let tdes = kernel_offers(Probe::Cipher(CipherAlg::TripleDesCbc));
    let des = kernel_offers(Probe::Cipher(CipherAlg::DesCbc));
    if !tdes {
        println!("SKIP NIST TDES: kernel lacks cbc(des3_ede)");
        return;
    }
    let doc = data("ports/soft-crypto/tests/data/nist_cavs_tdes_des_cbc.json");
    let (mut nt, mut nd) = (0, 0);
    for (_, r) in records(&doc) {
        let (k1, k2, k3) = (h(&r["key1"]), h(&r["key2"]), h(&r["key3"]));
        check_cbc(
            CipherAlg::TripleDesCbc,
            &[k1.as_slice(), &k2, &k3].concat(),
            r,
        );
        nt += 1;
        if des && k1 == k2 && k2 == k3 {
            check_cbc(CipherAlg::DesCbc, &k1, r);
            nd += 1;
        }
    }
    if !des {
        println!("SKIP single DES: kernel lacks cbc(des)");
    }
    println!("RAN NIST TDES records over cbc(des3_ede): {nt}; as single DES over cbc(des): {nd}");
    assert!(nt > 0);
}

#[test]
fn rfc2202_hmac_sha1_96() {
    if !af_alg_or_skip("rfc2202_hmac_sha1_96") {
        return;
    }
    let doc = data("ports/soft-crypto/tests/data/hmac_sha1_rfc2202_rfc2404.json");
    let mut n = 0;
    for c in doc["cases"].as_array().unwrap() {
        let key = h(&c["key"]);
        // ESP's HMAC-SHA1-96 takes exactly 20-byte keys (RFC 2404).
        if key.len() != 20 {
            continue;
        }
        let m = AfAlgMac::new(MacAlg::HmacSha1_96, &key).unwrap();
        let mut icv = [0u8; 12];
        m.compute(&[&h(&c["data"])], &mut icv).unwrap();
        assert_eq!(
            hex::encode(icv),
            s(&c["hmac_sha1_96"]),
            "case {}",
            c["test_case"]
        );
        m.verify(&[&h(&c["data"])], &icv).unwrap();
        n += 1;
    }
    println!("RAN RFC 2202 HMAC-SHA1-96 cases (20-byte keys) over hmac(sha1): {n}");
    assert!(n >= 2);
}

#[test]
fn rfc4868_hmac_sha256_128() {
    if !af_alg_or_skip("rfc4868_hmac_sha256_128") {
        return;
    }
    let doc = data("ports/soft-crypto/tests/data/hmac_sha256_rfc4231_rfc4868.json");
    let mut n = 0;
    for c in doc["rfc4868_auth256_cases"].as_array().unwrap() {
        let m = AfAlgMac::new(MacAlg::HmacSha256_128, &h(&c["key"])).unwrap();
        let mut icv = [0u8; 16];
        m.compute(&[&h(&c["data"])], &mut icv).unwrap();
        assert_eq!(
            hex::encode(icv),
            s(&c["hmac_sha256_128"]),
            "case {}",
            c["test_case"]
        );
        n += 1;
    }
    println!("RAN RFC 4868 AUTH256 cases over hmac(sha256): {n}");
    assert_eq!(n, 4);
}

#[test]
fn nist_aes_gcm_subset() {
    if !af_alg_or_skip("nist_aes_gcm_subset") {
        return;
    }
    if !kernel_offers(Probe::Aead(AeadAlg::Aes128Gcm16)) {
        println!("SKIP NIST GCM: kernel lacks gcm(aes)");
        return;
    }
    let doc = data("ports/soft-crypto/tests/data/nist_cavs_aes_gcm_subset.json");
    let (mut pass, mut fail) = (0, 0);
    for (_, r) in records(&doc) {
        let key = h(&r["key"]);
        let tag = h(&r["tag"]);
        let base = match key.len() {
            16 => AeadAlg::Aes128Gcm16,
            24 => AeadAlg::Aes192Gcm16,
            _ => AeadAlg::Aes256Gcm16,
        };
        let alg = base.with_icv_len(tag.len()).unwrap();
        let a = AfAlgAead::new(alg, &key).unwrap();
        let nonce: [u8; 12] = h(&r["iv"]).try_into().unwrap();
        let (aad, ct) = (h(&r["aad"]), h(&r["ct"]));
        let mut buf = ct.clone();
        match s(&r["result"]).as_str() {
            "PASS" => {
                a.open(&nonce, &aad, &mut buf, &tag)
                    .unwrap_or_else(|e| panic!("open: {e:?} {r}"));
                assert_eq!(buf, h(&r["pt"]), "{r}");
                let mut t = vec![0u8; tag.len()];
                a.seal(&nonce, &aad, &mut buf, &mut t)
                    .unwrap_or_else(|e| panic!("seal: {e:?} {r}"));
                assert_eq!((buf, t), (ct, tag), "{r}");
                pass += 1;
            }
            _ => {
                assert_eq!(
                    a.open(&nonce, &aad, &mut buf, &tag),
                    Err(CryptoError::AuthenticationFailed),
                    "{r}"
                );
                fail += 1;
            }
        }
    }
    println!("RAN NIST GCM records over gcm(aes): {pass} PASS, {fail} FAIL (rejected)");
    assert!(pass > 0 && fail > 0);
}

#[test]
fn cbc_matches_software_on_random_inputs() {
    if !af_alg_or_skip("cbc_matches_software_on_random_inputs") {
        return;
    }
    let mut rng = Rng::new(0xc0ffee);
    let mut ran = Vec::new();
    for alg in CIPHERS {
        if !kernel_offers(Probe::Cipher(alg)) {
            println!("SKIP random {alg:?}: not offered");
            continue;
        }
        let bl = alg.block_len();
        for round in 0..24 {
            let key = rng.bytes(alg.key_len());
            let (hw, sw) = (
                AfAlgCbc::new(alg, &key).unwrap(),
                SoftCbc::new(alg, &key).unwrap(),
            );
            let iv = rng.bytes(bl);
            // Mostly packet sizes, some past the 16 KiB request chunk.
            let blocks = match round % 4 {
                0 => 0,
                1 => 1 + rng.below(8),
                2 => 1 + rng.below(100),
                _ => 1000 + rng.below(4000),
            };
            let pt = rng.bytes(blocks * bl);
            let (mut a, mut b) = (pt.clone(), pt.clone());
            hw.encrypt(&iv, &mut a).unwrap();
            sw.encrypt(&iv, &mut b).unwrap();
            assert_eq!(a, b, "{alg:?} encrypt {} bytes", pt.len());
            hw.decrypt(&iv, &mut a).unwrap();
            assert_eq!(a, pt, "{alg:?} decrypt {} bytes", pt.len());
        }
        let c = AfAlgCbc::new(alg, &vec![1; alg.key_len()]).unwrap();
        let mut buf = vec![0u8; bl * 2];
        assert_eq!(
            c.encrypt(&[0; 3], &mut buf),
            Err(CryptoError::InvalidLength)
        );
        assert_eq!(
            c.decrypt(&vec![0; bl], &mut buf[1..]),
            Err(CryptoError::InvalidLength)
        );
        assert_eq!(
            AfAlgCbc::new(alg, &[0; 5]).err(),
            Some(CryptoError::InvalidKeyLength)
        );
        ran.push(alg);
    }
    println!("RAN random CBC vs software: {ran:?}");
    assert!(ran.contains(&CipherAlg::Aes128Cbc));
}

/// Splits `msg` into `n` parts at random points (some empty).
fn split<'m>(rng: &mut Rng, msg: &'m [u8], n: usize) -> Vec<&'m [u8]> {
    let mut cuts: Vec<usize> = (0..n.saturating_sub(1))
        .map(|_| rng.below(msg.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut parts = Vec::new();
    let mut at = 0;
    for c in cuts {
        parts.push(&msg[at..c]);
        at = c;
    }
    parts.push(&msg[at..]);
    parts
}

#[test]
fn mac_matches_software_on_random_inputs() {
    if !af_alg_or_skip("mac_matches_software_on_random_inputs") {
        return;
    }
    let mut rng = Rng::new(0x5eed);
    let mut ran = Vec::new();
    for alg in MACS {
        if !kernel_offers(Probe::Mac(alg)) {
            println!("SKIP random {alg:?}: not offered");
            continue;
        }
        for round in 0..40 {
            let key = rng.bytes(alg.key_len());
            let (hw, sw) = (
                AfAlgMac::new(alg, &key).unwrap(),
                SoftMac::new(alg, &key).unwrap(),
            );
            let n = if round == 0 { 0 } else { rng.below(3000) };
            let msg = rng.bytes(n);
            // 1..=20 parts: more than one iovec batch (8) on some rounds.
            let parts = split(&mut rng, &msg, 1 + round % 20);
            let (mut a, mut b) = (vec![0u8; alg.icv_len()], vec![0u8; alg.icv_len()]);
            hw.compute(&parts, &mut a).unwrap();
            sw.compute(&[&msg], &mut b).unwrap();
            assert_eq!(a, b, "{alg:?} {} bytes in {} parts", msg.len(), parts.len());
            hw.verify(&[&msg], &a).unwrap();
            let (i, bit) = (rng.below(a.len()), rng.below(8));
            a[i] ^= 1 << bit;
            assert_eq!(
                hw.verify(&parts, &a),
                Err(CryptoError::AuthenticationFailed)
            );
            // Still usable after a failed verification.
            hw.verify(&[&msg], &b).unwrap();
        }
        let m = AfAlgMac::new(alg, &vec![0; alg.key_len()]).unwrap();
        assert_eq!(
            m.compute(&[b"x"], &mut [0; 20]),
            Err(CryptoError::InvalidLength)
        );
        assert_eq!(m.verify(&[b"x"], &[0; 4]), Err(CryptoError::InvalidLength));
        assert_eq!(
            AfAlgMac::new(alg, &[0; 7]).err(),
            Some(CryptoError::InvalidKeyLength)
        );
        ran.push(alg);
    }
    println!("RAN random HMAC vs software: {ran:?}");
    assert!(ran.contains(&MacAlg::HmacSha1_96) && ran.contains(&MacAlg::HmacSha256_128));
}

#[test]
fn aead_matches_software_on_random_inputs() {
    if !af_alg_or_skip("aead_matches_software_on_random_inputs") {
        return;
    }
    if !kernel_offers(Probe::Aead(AeadAlg::Aes128Gcm16)) {
        println!("SKIP random GCM: kernel lacks gcm(aes)");
        return;
    }
    let mut rng = Rng::new(0x9c3);
    for alg in AEADS {
        for round in 0..12 {
            let key = rng.bytes(alg.key_len());
            let (hw, sw) = (
                AfAlgAead::new(alg, &key).unwrap(),
                SoftAead::new(alg, &key).unwrap(),
            );
            let nonce: [u8; 12] = rng.bytes(12).try_into().unwrap();
            // ESP's 8/12-byte AADs, and longer ones past the 64-byte stack scratch.
            let aad = rng.bytes([0, 8, 12, 100][round % 4]);
            let n = rng.below(2000);
            let pt = rng.bytes(n);
            let (mut a, mut b) = (pt.clone(), pt.clone());
            let (mut ta, mut tb) = (vec![0u8; alg.icv_len()], vec![0u8; alg.icv_len()]);
            hw.seal(&nonce, &aad, &mut a, &mut ta).unwrap();
            sw.seal(&nonce, &aad, &mut b, &mut tb).unwrap();
            assert_eq!((&a, &ta), (&b, &tb), "{alg:?} seal {} bytes", pt.len());
            let mut bad = a.clone();
            if !bad.is_empty() {
                bad[rng.below(pt.len())] ^= 0x80;
                assert_eq!(
                    hw.open(&nonce, &aad, &mut bad, &ta),
                    Err(CryptoError::AuthenticationFailed)
                );
            }
            hw.open(&nonce, &aad, &mut a, &ta).unwrap();
            assert_eq!(a, pt);
        }
        // Empty AAD and message (GMAC of nothing): the tag is still checked, and the
        // socket stays usable after a mismatch.
        let key = rng.bytes(alg.key_len());
        let (hw, sw) = (
            AfAlgAead::new(alg, &key).unwrap(),
            SoftAead::new(alg, &key).unwrap(),
        );
        let (mut ta, mut tb) = (vec![0u8; alg.icv_len()], vec![0u8; alg.icv_len()]);
        hw.seal(&[3; 12], b"", &mut [], &mut ta).unwrap();
        sw.seal(&[3; 12], b"", &mut [], &mut tb).unwrap();
        assert_eq!(ta, tb);
        let mut bad = ta.clone();
        bad[0] ^= 1;
        for _ in 0..2 {
            assert_eq!(
                hw.open(&[3; 12], b"", &mut [], &bad),
                Err(CryptoError::AuthenticationFailed)
            );
            hw.open(&[3; 12], b"", &mut [], &ta).unwrap();
        }
        let g = AfAlgAead::new(alg, &vec![0; alg.key_len()]).unwrap();
        assert_eq!(
            g.seal(&[0; 12], b"", &mut [0; 16], &mut [0; 3]),
            Err(CryptoError::InvalidLength)
        );
        assert_eq!(
            g.open(&[0; 12], b"", &mut [0; 16], &[0; 17]),
            Err(CryptoError::InvalidLength)
        );
        assert_eq!(
            AfAlgAead::new(alg, &[0; 20]).err(),
            Some(CryptoError::InvalidKeyLength)
        );
    }
    println!("RAN random GCM vs software: all 9 key/tag variants");
}

#[test]
fn one_instance_shared_by_threads() {
    if !af_alg_or_skip("one_instance_shared_by_threads") {
        return;
    }
    let key = [0x42u8; 20];
    let hw = AfAlgMac::new(MacAlg::HmacSha1_96, &key).unwrap();
    let sw = SoftMac::new(MacAlg::HmacSha1_96, &key).unwrap();
    std::thread::scope(|scope| {
        for t in 0..4u8 {
            let (hw, sw) = (&hw, &sw);
            scope.spawn(move || {
                let mut rng = Rng::new(u64::from(t) + 1);
                for _ in 0..200 {
                    let n = rng.below(600);
                    let msg = rng.bytes(n);
                    let (mut a, mut b) = ([0u8; 12], [0u8; 12]);
                    hw.compute(&[&msg], &mut a).unwrap();
                    sw.compute(&[&msg], &mut b).unwrap();
                    assert_eq!(a, b);
                }
            });
        }
    });
}

/// On a kernel without AF_ALG (or without an algorithm) construction says so.
#[test]
fn missing_algorithms_are_unsupported() {
    if ipsec_af_alg::af_alg_available() {
        for alg in CIPHERS {
            if !kernel_offers(Probe::Cipher(alg)) {
                let r = AfAlgCbc::new(alg, &vec![0; alg.key_len()]);
                assert_eq!(r.err(), Some(CryptoError::Unsupported));
            }
        }
        return;
    }
    for alg in CIPHERS {
        let r = AfAlgCbc::new(alg, &vec![0; alg.key_len()]);
        assert_eq!(r.err(), Some(CryptoError::Unsupported), "{alg:?}");
        assert!(!kernel_offers(Probe::Cipher(alg)));
    }
    for alg in MACS {
        let r = AfAlgMac::new(alg, &vec![0; alg.key_len()]);
        assert_eq!(r.err(), Some(CryptoError::Unsupported), "{alg:?}");
    }
    for alg in AEADS {
        let r = AfAlgAead::new(alg, &vec![0; alg.key_len()]);
        assert_eq!(r.err(), Some(CryptoError::Unsupported), "{alg:?}");
    }
    // Key length is checked before the kernel is asked.
    assert_eq!(
        AfAlgCbc::new(CipherAlg::Aes128Cbc, &[0; 3]).err(),
        Some(CryptoError::InvalidKeyLength)
    );
}
