//! ESP seal + open throughput, AF_ALG (kernel crypto API) against the software provider,
//! in the same run: aes128-cbc + hmac-sha1-96 and aes256-cbc + hmac-sha256-128 at 64, 512
//! and 1400-byte payloads. Then the cost of the operation-socket policy (reuse one per
//! key, or accept one per request) that `ipsec-af-alg` chose.
//!
//! `cargo bench -p ipsec-af-alg --bench af_alg_vs_soft`. Each cell runs for about
//! `BENCH_MS` milliseconds (default 300) after a warm-up. MB/s counts payload bytes that
//! went through one seal and one open (10^6 bytes per second). A fixed IV is used so the
//! numbers measure the crypto and the ESP framing, not the random source.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    missing_docs
)]

use std::hint::black_box;
use std::time::{Duration, Instant as StdInstant};

use hal_traits::{CipherAlg, CryptoProvider, MacAlg};
use ipsec_af_alg::raw::{AlgType, Control, TfmSocket};
use ipsec_af_alg::{AfAlgCrypto, Probe, af_alg_available, kernel_offers};
use ipsec_core::Instant;
use ipsec_core::esp::{Direction, Encryption, EspConfig, EspSa, Transform};
use ipsec_soft_crypto::SoftCrypto;

fn budget() -> Duration {
    let ms = std::env::var("BENCH_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    Duration::from_millis(ms)
}

/// Payload MB/s through seal + open, or `None` if the provider cannot key the SA.
fn esp_round_trip<P: CryptoProvider>(t: Transform, payload_len: usize) -> Option<f64> {
    let (ek, ak) = (vec![0x11u8; 32], vec![0x22u8; 32]);
    let enc_len = match t.enc {
        Encryption::Cbc(a) => a.key_len(),
        _ => 0,
    };
    let auth_len = t.auth.map_or(0, MacAlg::key_len);
    let out_cfg = EspConfig::transport(0x1000, Direction::Outbound, t);
    let in_cfg = EspConfig::transport(0x1000, Direction::Inbound, t);
    let mut o = EspSa::<P>::new(out_cfg, &ek[..enc_len], &ak[..auth_len], Instant::ZERO).ok()?;
    let mut i = EspSa::<P>::new(in_cfg, &ek[..enc_len], &ak[..auth_len], Instant::ZERO).ok()?;
    let payload = vec![0x5au8; payload_len];
    let iv = [0x33u8; 16];
    let iv = &iv[..t.iv_len()];
    let mut out = vec![0u8; o.sealed_len(payload_len)];
    let mut round = |o: &mut EspSa<P>, i: &mut EspSa<P>| {
        let n = o
            .seal_with_iv(Instant::ZERO, 4, &payload, iv, &mut out)
            .unwrap();
        let opened = i.open_in_place(Instant::ZERO, &mut out[..n]).unwrap();
        black_box(opened.payload.len());
    };
    for _ in 0..50 {
        round(&mut o, &mut i);
    }
    let budget = budget();
    let start = StdInstant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..32 {
            round(&mut o, &mut i);
        }
        n += 32;
    }
    let secs = start.elapsed().as_secs_f64();
    Some((n as f64 * payload_len as f64) / secs / 1e6)
}

/// Microseconds per HMAC-SHA1 of 64 bytes, reusing one operation socket or accepting one
/// per request.
fn op_socket_policy() -> Option<(f64, f64)> {
    let tfm = TfmSocket::bind(AlgType::Hash, "hmac(sha1)").ok()?;
    tfm.set_key(&[7u8; 20]).ok()?;
    let msg = [1u8; 64];
    let mut icv = [0u8; 12];
    let budget = budget();
    let time = |f: &mut dyn FnMut()| {
        let start = StdInstant::now();
        let mut n = 0u64;
        while start.elapsed() < budget {
            f();
            n += 1;
        }
        start.elapsed().as_secs_f64() * 1e6 / n as f64
    };
    let op = tfm.accept().ok()?;
    let reuse = time(&mut || {
        op.send(&Control::default(), &[&msg], false).unwrap();
        op.recv(&mut [&mut icv]).unwrap();
    });
    let per_op = time(&mut || {
        let op = tfm.accept().unwrap();
        op.send(&Control::default(), &[&msg], false).unwrap();
        op.recv(&mut [&mut icv]).unwrap();
    });
    Some((reuse, per_op))
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let available = af_alg_available();
    println!(
        "ESP seal+open payload throughput (MB/s = 10^6 payload bytes/s), {} ms per cell",
        budget().as_millis()
    );
    if !available {
        println!(
            "NOTICE: this kernel has no AF_ALG (CONFIG_CRYPTO_USER_API_* not set); \
             AF_ALG columns are n/a. ports/af-alg/vm/run.sh --bench runs this in a guest."
        );
    } else {
        let drivers = std::fs::read_to_string("/proc/crypto").unwrap_or_default();
        let mut seen = Vec::new();
        let mut name = String::new();
        for line in drivers.lines() {
            if let Some(v) = line.strip_prefix("name") {
                name = v.trim_start_matches([' ', ':']).to_string();
            }
            if let Some(d) = line.strip_prefix("driver") {
                let d = d.trim_start_matches([' ', ':']).to_string();
                if [
                    "cbc(aes)",
                    "hmac(sha1)",
                    "hmac(sha256)",
                    "aes",
                    "sha1",
                    "sha256",
                ]
                .contains(&name.as_str())
                    && !seen.contains(&(name.clone(), d.clone()))
                {
                    seen.push((name.clone(), d));
                }
            }
        }
        for (n, d) in seen {
            println!("  kernel driver: {n:<14} {d}");
        }
    }
    println!();
    println!(
        "| {:<30} | {:>5} | {:>10} | {:>10} | {:>12} |",
        "transform", "bytes", "soft MB/s", "AF_ALG MB/s", "AF_ALG/soft"
    );
    println!(
        "|{:-<32}|{:-<7}|{:-<12}|{:-<13}|{:-<14}|",
        "", "", "", "", ""
    );
    let suites = [
        (
            "aes128-cbc + hmac-sha1-96",
            CipherAlg::Aes128Cbc,
            MacAlg::HmacSha1_96,
        ),
        (
            "aes256-cbc + hmac-sha256-128",
            CipherAlg::Aes256Cbc,
            MacAlg::HmacSha256_128,
        ),
    ];
    for (label, c, m) in suites {
        let t = Transform {
            enc: Encryption::Cbc(c),
            auth: Some(m),
        };
        let hw_ok = available && kernel_offers(Probe::Cipher(c)) && kernel_offers(Probe::Mac(m));
        for len in [64, 512, 1400] {
            let sw = esp_round_trip::<SoftCrypto>(t, len).unwrap();
            let hw = if hw_ok {
                esp_round_trip::<AfAlgCrypto>(t, len)
            } else {
                None
            };
            let (hw_s, ratio) = match hw {
                Some(h) => (format!("{h:.1}"), format!("{:.2}x", h / sw)),
                None => ("n/a".into(), "n/a".into()),
            };
            println!("| {label:<30} | {len:>5} | {sw:>10.1} | {hw_s:>11} | {ratio:>12} |");
        }
    }
    if available {
        if let Some((reuse, per_op)) = op_socket_policy() {
            println!();
            println!("AF_ALG operation-socket policy, hmac(sha1) over 64 bytes:");
            println!("  one op socket per key, reused: {reuse:8.2} us/request (chosen)");
            println!("  accept() per request:          {per_op:8.2} us/request");
        }
    }
}
