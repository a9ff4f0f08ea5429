//! ESP throughput: `seal_in_place` / `open_in_place` against the raw primitives over the
//! same buffers, `openssl speed` beside them, and the full packet path for one transform.

use std::cell::RefCell;
use std::hint::black_box;

use hal_traits::{Aead, CbcCipher, Mac};
use ipsec_core::Instant;
use ipsec_core::esp::{Direction, ESP_HEADER_LEN, Encryption, EspSa, GCM_SALT_LEN};
use ipsec_soft_crypto::{OsRng, SoftAead, SoftCbc, SoftCrypto, SoftMac};

use crate::openssl::{self, OpenSsl};
use crate::timing::{Chunked, Paired, Plan, batched, fixed, interleave, mbps};
use crate::util::{CASES, Case, Rng, SIZES, ipv4_udp, keys, sa};

const NOW: Instant = Instant::from_secs(1);
const IV: [u8; 16] = [0x42; 16];
/// Bytes of ESP packets in flight per open batch: fits the 512 KiB L2 with room to spare.
const BATCH_BYTES: usize = 192 * 1024;

/// Packets per open batch: at most `BATCH_BYTES` of them (cache-resident), and few
/// enough that one batch takes ~300 µs, so that the interleaving stays fine even for
/// 3DES. `one` seals one packet.
fn batch_size(len: usize, mut one: impl FnMut()) -> usize {
    let t = std::time::Instant::now();
    for _ in 0..4 {
        one();
    }
    let per = (t.elapsed().as_nanos() as usize / 4).max(1);
    (BATCH_BYTES / len).min(300_000 / per).clamp(4, 1024)
}

/// One row of the throughput tables.
pub struct Row {
    pub case: &'static str,
    pub size: usize,
    pub seal_ns: f64,
    pub seal_raw_ns: f64,
    /// Median over repetitions of seal / raw (CPU time per packet).
    pub seal_ratio: f64,
    pub seal_noise: f64,
    pub open_ns: f64,
    pub open_raw_ns: f64,
    pub open_ratio: f64,
    pub open_noise: f64,
    pub spread: f64,
    pub wall_over_cpu: f64,
}

impl Row {
    fn new(case: &'static str, size: usize, p: &Paired) -> Self {
        Self {
            case,
            size,
            seal_ns: p.ns(0),
            seal_raw_ns: p.ns(1),
            seal_ratio: p.ratio(0, 1),
            seal_noise: p.ratio_noise(0, 1),
            open_ns: p.ns(2),
            open_raw_ns: p.ns(3),
            open_ratio: p.ratio(2, 3),
            open_noise: p.ratio_noise(2, 3),
            spread: p.max_spread(),
            wall_over_cpu: p.wall_over_cpu(),
        }
    }
}

/// The primitives of a transform, keyed as the SA keys them.
enum Raw {
    Gcm { aead: SoftAead, nonce: [u8; 12] },
    Cbc { cbc: SoftCbc, mac: SoftMac },
}

impl Raw {
    fn new(c: &Case) -> Self {
        let (e, a) = keys(c.transform);
        match (c.transform.enc, c.transform.auth) {
            (Encryption::Gcm(alg), _) => {
                let mut nonce = [0u8; 12];
                nonce[..GCM_SALT_LEN].copy_from_slice(&e[alg.key_len()..]);
                nonce[GCM_SALT_LEN..].copy_from_slice(&1u64.to_be_bytes());
                Raw::Gcm {
                    aead: SoftAead::new(alg, &e[..alg.key_len()]).expect("aead"),
                    nonce,
                }
            }
            (Encryption::Cbc(alg), Some(m)) => Raw::Cbc {
                cbc: SoftCbc::new(alg, &e).expect("cbc"),
                mac: SoftMac::new(m, &a).expect("mac"),
            },
            _ => unreachable!("no NULL transforms here"),
        }
    }

    /// What ESP seal does cryptographically, on an ESP-shaped buffer `buf` (header, IV,
    /// `padded` bytes of payload + trailer, ICV): GCM over the padded part with the
    /// 8-byte AAD, or CBC over it and the HMAC over header..ciphertext.
    #[inline]
    fn seal(&self, buf: &mut [u8], iv_len: usize, padded: usize, icv_len: usize) {
        let ct_start = ESP_HEADER_LEN + iv_len;
        let (head, rest) = buf.split_at_mut(ct_start);
        let (ct, tail) = rest.split_at_mut(padded);
        let icv = &mut tail[..icv_len];
        match self {
            Raw::Gcm { aead, nonce } => {
                aead.seal(nonce, &head[..8], ct, icv).expect("seal");
            }
            Raw::Cbc { cbc, mac } => {
                cbc.encrypt(&IV[..iv_len], ct).expect("encrypt");
                let authed = &buf[..ct_start + padded];
                let mut tag = [0u8; 16];
                mac.compute(&[authed], &mut tag[..icv_len]).expect("mac");
                buf[ct_start + padded..ct_start + padded + icv_len]
                    .copy_from_slice(&tag[..icv_len]);
            }
        }
    }

    /// What ESP open does cryptographically: GCM open, or HMAC verify then CBC decrypt.
    #[inline]
    fn open(&self, buf: &mut [u8], iv_len: usize, padded: usize, icv_len: usize) {
        let ct_start = ESP_HEADER_LEN + iv_len;
        match self {
            Raw::Gcm { aead, nonce } => {
                let (head, rest) = buf.split_at_mut(ct_start);
                let (ct, tail) = rest.split_at_mut(padded);
                aead.open(nonce, &head[..8], ct, &tail[..icv_len])
                    .expect("open");
            }
            Raw::Cbc { cbc, mac } => {
                let (authed, icv) = buf.split_at_mut(ct_start + padded);
                mac.verify(&[authed], &icv[..icv_len]).expect("verify");
                cbc.decrypt(&IV[..iv_len], &mut authed[ct_start..])
                    .expect("decrypt");
            }
        }
    }
}

fn iv_arg(c: &Case) -> Option<&'static [u8]> {
    match c.transform.enc {
        Encryption::Cbc(_) => Some(&IV[..c.transform.iv_len()]),
        _ => None,
    }
}

/// Seal and open of `case` at `size` bytes of payload, ESP and raw, interleaved.
fn measure(plan: Plan, case: &Case, size: usize) -> Paired {
    let t = case.transform;
    let iv = iv_arg(case);
    let (iv_len, icv_len, padded) = (t.iv_len(), t.icv_len(), t.padded_len(size));
    let len = t.sealed_len(size);
    let raw = Raw::new(case);

    // Seal: one buffer, payload already in place, sealed over and over (the zero-copy
    // path: what the payload bytes are does not change the cost).
    let mut out: EspSa<SoftCrypto> = sa(0x1000, Direction::Outbound, t, 0);
    let mut buf = vec![0xa5u8; len];
    let mut raw_buf = vec![0xa5u8; len];

    // Open: a batch of distinct packets (fresh sequence numbers) opened once each by an
    // SA with the default 64-packet replay window; the untimed `prep` seals the next batch
    // in place (open leaves the payload where seal expects it). No copies in either.
    let batch = batch_size(len, || raw.seal(&mut raw_buf, iv_len, padded, icv_len));
    let mut tx: EspSa<SoftCrypto> = sa(0x2000, Direction::Outbound, t, 0);
    let mut rx: EspSa<SoftCrypto> = sa(0x2000, Direction::Inbound, t, 64);
    let mut slots = vec![0xa5u8; batch * len];
    let mut raw_slots = vec![0xa5u8; batch * len];

    let esp_state = RefCell::new((&mut slots, &mut tx, &mut rx));
    let raw_state = RefCell::new(&mut raw_slots);
    let mut ms: [Chunked<'_>; 4] = [
        fixed(|| {
            black_box(
                out.seal_in_place(NOW, 4, black_box(&mut buf), size, iv)
                    .expect("seal"),
            );
        }),
        fixed(|| raw.seal(black_box(&mut raw_buf), iv_len, padded, icv_len)),
        batched(
            || {
                let mut g = esp_state.borrow_mut();
                let (slots, tx, _) = &mut *g;
                for s in slots.chunks_exact_mut(len) {
                    tx.seal_in_place(NOW, 4, s, size, iv).expect("seal");
                }
            },
            || {
                let mut g = esp_state.borrow_mut();
                let (slots, _, rx) = &mut *g;
                for s in slots.chunks_exact_mut(len) {
                    black_box(rx.open_in_place(NOW, black_box(s)).expect("open"));
                }
                batch as u64
            },
        ),
        batched(
            || {
                let mut g = raw_state.borrow_mut();
                for s in g.chunks_exact_mut(len) {
                    raw.seal(s, iv_len, padded, icv_len);
                }
            },
            || {
                let mut g = raw_state.borrow_mut();
                for s in g.chunks_exact_mut(len) {
                    raw.open(black_box(s), iv_len, padded, icv_len);
                }
                batch as u64
            },
        ),
    ];
    interleave(plan.reps, plan.budget, &mut ms)
}

/// Runs the throughput matrix and prints its tables. Returns the rows for the summary.
pub fn run(plan: Plan, ossl: &mut OpenSsl) -> Vec<Row> {
    let mut rows = Vec::new();
    for case in &CASES {
        for &size in &SIZES {
            let p = measure(plan, case, size);
            rows.push(Row::new(case.name, size, &p));
        }
    }

    println!("\n## 1. ESP throughput, one core\n");
    println!(
        "MB/s = 10^6 payload bytes per second of thread CPU time, median of {} runs. \
         raw = the same primitives on the same lengths with no ESP logic (GCM: \
         `SoftAead::seal`/`open` over payload+trailer with the 8-byte AAD; CBC: \
         `SoftCbc::encrypt` + `SoftMac::compute` over header..ciphertext, and \
         `SoftMac::verify` + `SoftCbc::decrypt`). overhead = ESP time / raw time - 1, the median of the per-run ratios (± half their \
         range; ESP and raw run interleaved in 200 µs chunks); goal: < 10 % at 1400 B.\n",
        plan.reps
    );
    println!("### Seal (`seal_in_place`, payload already in place)\n");
    println!(
        "| transform | payload B | ESP MB/s | raw MB/s | overhead | ESP ns/pkt | raw ns/pkt | openssl -evp cipher MB/s | openssl cipher+HMAC (or -aead) MB/s | ESP / openssl |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (case, r) in CASES
        .iter()
        .flat_map(|c| SIZES.iter().map(move |_| c))
        .zip(&rows)
    {
        let c = ossl.speed(&["-evp", case.openssl_cipher], r.size);
        let both = openssl_both(ossl, case, r.size, false);
        println!(
            "| {} | {} | {:.0} | {:.0} | {:+.1} % ± {:.1} | {:.0} | {:.0} | {} | {} | {} |",
            r.case,
            r.size,
            mbps(r.size, r.seal_ns),
            mbps(r.size, r.seal_raw_ns),
            (r.seal_ratio - 1.0) * 100.0,
            r.seal_noise * 100.0,
            r.seal_ns,
            r.seal_raw_ns,
            openssl::fmt(c),
            openssl::fmt(both),
            both.map_or("n/a".into(), |b| format!(
                "{:.2}",
                mbps(r.size, r.seal_ns) / b
            )),
        );
    }
    println!("\n### Open (`open_in_place`, 64-packet replay window, fresh sequence numbers)\n");
    println!(
        "| transform | payload B | ESP MB/s | raw MB/s | overhead | ESP ns/pkt | raw ns/pkt | openssl -decrypt -evp cipher MB/s | openssl cipher+HMAC (or -aead -decrypt) MB/s | ESP / openssl |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (case, r) in CASES
        .iter()
        .flat_map(|c| SIZES.iter().map(move |_| c))
        .zip(&rows)
    {
        let c = ossl.speed(&["-decrypt", "-evp", case.openssl_cipher], r.size);
        let both = openssl_both(ossl, case, r.size, true);
        println!(
            "| {} | {} | {:.0} | {:.0} | {:+.1} % ± {:.1} | {:.0} | {:.0} | {} | {} | {} |",
            r.case,
            r.size,
            mbps(r.size, r.open_ns),
            mbps(r.size, r.open_raw_ns),
            (r.open_ratio - 1.0) * 100.0,
            r.open_noise * 100.0,
            r.open_ns,
            r.open_raw_ns,
            openssl::fmt(c),
            openssl::fmt(both),
            both.map_or("n/a".into(), |b| format!(
                "{:.2}",
                mbps(r.size, r.open_ns) / b
            )),
        );
    }
    let worst_spread = rows.iter().map(|r| r.spread).fold(0.0, f64::max);
    let woc: Vec<f64> = rows.iter().map(|r| r.wall_over_cpu).collect();
    println!(
        "\nNoise: largest (max-min)/median over the runs of one figure {:.0} %; median \
         wall/CPU time {:.2} (1.00 = never descheduled). openssl: {}.",
        worst_spread * 100.0,
        crate::timing::median(&woc),
        ossl.describe()
    );
    rows
}

/// openssl's figure for the whole transform: `-aead` for GCM (nonce, AAD, tag per
/// buffer, as ESP does), else cipher and HMAC combined as 1 / (1/cipher + 1/hmac).
fn openssl_both(ossl: &mut OpenSsl, case: &Case, size: usize, decrypt: bool) -> Option<f64> {
    let dec: &[&str] = if decrypt { &["-decrypt"] } else { &[] };
    match case.openssl_hmac {
        None => {
            let mut args = vec!["-aead"];
            args.extend_from_slice(dec);
            args.extend_from_slice(&["-evp", case.openssl_cipher]);
            ossl.speed(&args, size)
        }
        Some(h) => {
            let mut args: Vec<&str> = dec.to_vec();
            args.extend_from_slice(&["-evp", case.openssl_cipher]);
            let c = ossl.speed(&args, size)?;
            let m = ossl.speed(&["-hmac", h], size)?;
            Some(1.0 / (1.0 / c + 1.0 / m))
        }
    }
}

/// The full packet path, tunnel mode over IPv4: `encapsulate` (copy of the inner packet,
/// outer header, seal) and `decapsulate` (parse, open, inner checks, accounting) against
/// `seal_in_place` / `open_in_place` of the same inner packet.
pub fn full_path(plan: Plan) {
    println!("\n### Full packet path (tunnel mode, IPv4): `encapsulate` / `decapsulate`\n");
    println!(
        "The inner packet (an IPv4/UDP packet of the given total length) is the ESP payload. \
         `encapsulate` copies it once into the output buffer and writes the outer header; \
         `decapsulate` parses the outer header, opens, checks the inner header and counts \
         bytes and lifetime. Median of {} runs, thread CPU time.\n",
        plan.reps
    );
    println!(
        "| transform | RNG for IVs | inner B | encapsulate MB/s | seal_in_place MB/s | encapsulate time vs seal | decapsulate MB/s | open_in_place MB/s | decapsulate time vs open |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (ci, rng_name) in [
        (0usize, "SplitMix (bench)"),
        (2, "SplitMix (bench)"),
        (2, "OsRng (getrandom)"),
    ] {
        let case = &CASES[ci];
        for &size in &SIZES {
            let p = measure_full(plan, case, size, rng_name.starts_with("Os"));
            println!(
                "| {} | {} | {} | {:.0} | {:.0} | {:+.0} % ± {:.0} | {:.0} | {:.0} | {:+.0} % ± {:.0} |",
                case.name,
                rng_name,
                size,
                mbps(size, p.ns(0)),
                mbps(size, p.ns(1)),
                (p.ratio(0, 1) - 1.0) * 100.0,
                p.ratio_noise(0, 1) * 100.0,
                mbps(size, p.ns(2)),
                mbps(size, p.ns(3)),
                (p.ratio(2, 3) - 1.0) * 100.0,
                p.ratio_noise(2, 3) * 100.0,
            );
        }
    }
}

fn measure_full(plan: Plan, case: &Case, size: usize, os_rng: bool) -> Paired {
    let t = case.transform;
    let iv = iv_arg(case);
    let inner = ipv4_udp(size);
    let outer_len = 20 + t.sealed_len(size);
    let mut rng = Rng(7);

    let mut enc_sa: EspSa<SoftCrypto> = sa(0x3000, Direction::Outbound, t, 0);
    let mut out = vec![0u8; outer_len];
    let mut seal_sa: EspSa<SoftCrypto> = sa(0x3001, Direction::Outbound, t, 0);
    let mut seal_buf = vec![0u8; t.sealed_len(size)];
    seal_buf[8 + t.iv_len()..][..size].copy_from_slice(&inner);

    // Decapsulate and open: batches of fresh packets, as in `measure`.
    let batch = (BATCH_BYTES / outer_len).clamp(16, 1024);
    let dec = RefCell::new((
        vec![0u8; batch * outer_len],
        sa(0x3002, Direction::Outbound, t, 0),
        sa(0x3002, Direction::Inbound, t, 64),
        Rng(9),
    ));
    let len = t.sealed_len(size);
    let open = RefCell::new((
        {
            let mut v = vec![0u8; batch * len];
            for s in v.chunks_exact_mut(len) {
                s[8 + t.iv_len()..][..size].copy_from_slice(&inner);
            }
            v
        },
        sa(0x3003, Direction::Outbound, t, 0),
        sa(0x3003, Direction::Inbound, t, 64),
    ));
    let mut ms: [Chunked<'_>; 4] = [
        fixed(|| {
            let n = if os_rng {
                enc_sa.encapsulate(NOW, black_box(&inner), None, &mut OsRng, &mut out)
            } else {
                enc_sa.encapsulate(NOW, black_box(&inner), None, &mut rng, &mut out)
            };
            black_box(n.expect("encapsulate"));
        }),
        fixed(|| {
            black_box(
                seal_sa
                    .seal_in_place(NOW, 4, black_box(&mut seal_buf), size, iv)
                    .expect("seal"),
            );
        }),
        batched(
            || {
                let mut g = dec.borrow_mut();
                let (slots, tx, _, r) = &mut *g;
                for s in slots.chunks_exact_mut(outer_len) {
                    tx.encapsulate(NOW, &inner, None, r, s)
                        .expect("encapsulate");
                }
            },
            || {
                let mut g = dec.borrow_mut();
                let (slots, _, rx, _) = &mut *g;
                for s in slots.chunks_exact_mut(outer_len) {
                    black_box(rx.decapsulate(NOW, black_box(s)).expect("decapsulate").seq);
                }
                batch as u64
            },
        ),
        batched(
            || {
                let mut g = open.borrow_mut();
                let (slots, tx, _) = &mut *g;
                for s in slots.chunks_exact_mut(len) {
                    tx.seal_in_place(NOW, 4, s, size, iv).expect("seal");
                }
            },
            || {
                let mut g = open.borrow_mut();
                let (slots, _, rx) = &mut *g;
                for s in slots.chunks_exact_mut(len) {
                    black_box(rx.open_in_place(NOW, black_box(s)).expect("open"));
                }
                batch as u64
            },
        ),
    ];
    interleave(plan.reps, plan.budget, &mut ms)
}

/// Spins one hot loop for `secs` seconds, for `perf record`: `seal` or `open` of
/// `CASES[case]` at `size` bytes through ESP, or the raw primitives (`raw-seal`).
pub fn spin(what: &str, case: usize, size: usize, secs: f64) {
    let c = &CASES[case];
    let t = c.transform;
    let iv = iv_arg(c);
    let len = t.sealed_len(size);
    let mut out: EspSa<SoftCrypto> = sa(0x1000, Direction::Outbound, t, 0);
    let mut rx: EspSa<SoftCrypto> = sa(0x1000, Direction::Inbound, t, 0);
    let raw = Raw::new(c);
    let mut buf = vec![0xa5u8; len];
    let t0 = std::time::Instant::now();
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < secs {
        for _ in 0..1000 {
            match what {
                "seal" => {
                    black_box(
                        out.seal_in_place(NOW, 4, black_box(&mut buf), size, iv)
                            .expect("seal"),
                    );
                }
                "raw-seal" => raw.seal(
                    black_box(&mut buf),
                    t.iv_len(),
                    t.padded_len(size),
                    t.icv_len(),
                ),
                "seal-open" => {
                    let l = out.seal_in_place(NOW, 4, &mut buf, size, iv).expect("seal");
                    black_box(
                        rx.open_in_place(NOW, black_box(&mut buf[..l]))
                            .expect("open"),
                    );
                }
                _ => panic!("--profile seal|raw-seal|seal-open"),
            }
        }
        n += 1000;
    }
    eprintln!(
        "{what} {} {size} B: {n} ops, {:.1} ns/op",
        c.name,
        t0.elapsed().as_nanos() as f64 / n as f64
    );
}

/// The raw primitives of `ipsec-soft-crypto` against `openssl speed` for the same
/// algorithm and size: where the backend, not the protocol, loses time.
pub fn primitives(plan: Plan, ossl: &mut OpenSsl) -> Vec<(String, usize, f64, Option<f64>)> {
    use hal_traits::{AeadAlg, CipherAlg, MacAlg};
    enum P {
        CbcEnc(CipherAlg),
        CbcDec(CipherAlg),
        Hmac(MacAlg),
        GcmSeal(AeadAlg),
        GcmOpen(AeadAlg),
    }
    let list: [(&str, P, Vec<&str>); 12] = [
        (
            "AES-128-CBC encrypt",
            P::CbcEnc(CipherAlg::Aes128Cbc),
            vec!["-evp", "aes-128-cbc"],
        ),
        (
            "AES-128-CBC decrypt",
            P::CbcDec(CipherAlg::Aes128Cbc),
            vec!["-decrypt", "-evp", "aes-128-cbc"],
        ),
        (
            "AES-256-CBC encrypt",
            P::CbcEnc(CipherAlg::Aes256Cbc),
            vec!["-evp", "aes-256-cbc"],
        ),
        (
            "AES-256-CBC decrypt",
            P::CbcDec(CipherAlg::Aes256Cbc),
            vec!["-decrypt", "-evp", "aes-256-cbc"],
        ),
        (
            "3DES-CBC encrypt",
            P::CbcEnc(CipherAlg::TripleDesCbc),
            vec!["-evp", "des-ede3-cbc"],
        ),
        (
            "3DES-CBC decrypt",
            P::CbcDec(CipherAlg::TripleDesCbc),
            vec!["-decrypt", "-evp", "des-ede3-cbc"],
        ),
        (
            "HMAC-SHA1",
            P::Hmac(MacAlg::HmacSha1_96),
            vec!["-hmac", "sha1"],
        ),
        (
            "HMAC-SHA256",
            P::Hmac(MacAlg::HmacSha256_128),
            vec!["-hmac", "sha256"],
        ),
        (
            "AES-128-GCM seal (per packet)",
            P::GcmSeal(AeadAlg::Aes128Gcm16),
            vec!["-aead", "-evp", "aes-128-gcm"],
        ),
        (
            "AES-128-GCM open (per packet)",
            P::GcmOpen(AeadAlg::Aes128Gcm16),
            vec!["-aead", "-decrypt", "-evp", "aes-128-gcm"],
        ),
        (
            "AES-256-GCM seal (per packet)",
            P::GcmSeal(AeadAlg::Aes256Gcm16),
            vec!["-aead", "-evp", "aes-256-gcm"],
        ),
        (
            "AES-256-GCM open (per packet)",
            P::GcmOpen(AeadAlg::Aes256Gcm16),
            vec!["-aead", "-decrypt", "-evp", "aes-256-gcm"],
        ),
    ];
    let mut rows = Vec::new();
    for size in [64usize, 1400] {
        // CBC needs whole blocks: 1400 is measured as 1408.
        let len = size.div_ceil(16) * 16;
        let key = [0x33u8; 32];
        let mut ms: Vec<Chunked<'_>> = Vec::new();
        for (_, p, _) in &list {
            let mut buf = vec![0x5au8; len];
            let nonce = [7u8; 12];
            let mut tag = [0u8; 16];
            ms.push(match *p {
                P::CbcEnc(a) => {
                    let c = SoftCbc::new(a, &key[..a.key_len()]).expect("cbc");
                    fixed(move || {
                        c.encrypt(&IV[..a.block_len()], black_box(&mut buf))
                            .expect("enc")
                    })
                }
                P::CbcDec(a) => {
                    let c = SoftCbc::new(a, &key[..a.key_len()]).expect("cbc");
                    fixed(move || {
                        c.decrypt(&IV[..a.block_len()], black_box(&mut buf))
                            .expect("dec")
                    })
                }
                P::Hmac(m) => {
                    let h = SoftMac::new(m, &key[..m.key_len()]).expect("mac");
                    fixed(move || {
                        h.compute(&[black_box(&buf[..size])], &mut tag[..m.icv_len()])
                            .expect("mac");
                        black_box(&tag);
                    })
                }
                P::GcmSeal(a) => {
                    let g = SoftAead::new(a, &key[..a.key_len()]).expect("gcm");
                    fixed(move || {
                        g.seal(&nonce, &[1u8; 13], black_box(&mut buf[..size]), &mut tag)
                            .expect("seal");
                        black_box(&tag);
                    })
                }
                P::GcmOpen(a) => {
                    // Open needs an authentic packet each time: a batch sealed untimed.
                    let g = std::rc::Rc::new(SoftAead::new(a, &key[..a.key_len()]).expect("gcm"));
                    let g2 = std::rc::Rc::clone(&g);
                    let batch = (BATCH_BYTES / (size + 16)).clamp(16, 1024);
                    let st = std::rc::Rc::new(RefCell::new(vec![0u8; batch * (size + 16)]));
                    let st2 = std::rc::Rc::clone(&st);
                    batched(
                        move || {
                            for s in st.borrow_mut().chunks_exact_mut(size + 16) {
                                let (m, t) = s.split_at_mut(size);
                                g.seal(&nonce, &[1u8; 13], m, t).expect("seal");
                            }
                        },
                        move || {
                            for s in st2.borrow_mut().chunks_exact_mut(size + 16) {
                                let (m, t) = s.split_at_mut(size);
                                g2.open(&nonce, &[1u8; 13], black_box(m), t).expect("open");
                            }
                            batch as u64
                        },
                    )
                }
            });
        }
        let p = interleave(plan.reps, plan.budget, &mut ms);
        for (k, (name, prim, args)) in list.iter().enumerate() {
            let bytes = if matches!(prim, P::CbcEnc(_) | P::CbcDec(_)) {
                len
            } else {
                size
            };
            let ours = mbps(bytes, p.ns(k));
            rows.push((name.to_string(), size, ours, ossl.speed(args, size)));
        }
    }
    println!("\n### The primitives alone against openssl\n");
    println!(
        "`ipsec-soft-crypto` (RustCrypto) against `openssl speed -seconds 1 -bytes N` with the \
         same algorithm, both on one core of this machine. CBC at 1400 B runs over 1408 B \
         (whole blocks). GCM: one packet per call (12-byte nonce, 13-byte AAD, 16-byte tag; \
         openssl `-aead`). HMAC: full HMAC per buffer.\n"
    );
    println!("| primitive | bytes | ipsec-soft-crypto MB/s | openssl MB/s | ours / openssl |");
    println!("|---|---:|---:|---:|---:|");
    for (name, size, ours, theirs) in &rows {
        println!(
            "| {name} | {size} | {ours:.0} | {} | {} |",
            openssl::fmt(*theirs),
            theirs.map_or("n/a".into(), |t| format!("{:.2}", ours / t))
        );
    }
    rows
}
