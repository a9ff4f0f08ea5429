//! HA sync traffic: bytes per second on the sync link for 1,000 SA pairs at a given packet
//! rate, for two replay intervals. Deterministic: a virtual clock, and byte counting of
//! the messages the real sync code produces (`HaSync::fill`, encoded records), sized as
//! the channel puts them on the wire (`SyncChannel::datagram_len`: header, IV, padding,
//! tag). Every message is also applied by a standby `HaSync`, to show it is consumed.
//!
//! Run: `cargo test -p ipsec-core --bench ha_sync` (a debug build is enough: nothing here
//! is timed) or `cargo bench -p ipsec-core --bench ha_sync`. Optional arguments:
//! `<pps per direction> <tick ms> <seconds>` (defaults 10000 10 120).
//!
//! Traffic model: `pps` packets per second in each direction, spread evenly over the
//! 1,000 pairs (10 pps per SA per direction by default) with evenly spaced phases. The
//! active node checks the counters every tick, as `HaSync::tick` would.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    missing_docs
)]

use std::net::{IpAddr, Ipv4Addr};

use hal_traits::{CipherAlg, MacAlg, SecretBytes};
use ipsec_core::esp::{Direction, Encryption, EspConfig, Transform};
use ipsec_core::ha::HaRole;
use ipsec_core::ha::channel::{self, ChannelConfig, Suite, SyncChannel};
use ipsec_core::ha::record::{SaKeys, SaPairRecord, SaProgress};
use ipsec_core::ha::sync::{HaSync, ReplayInterval, SyncConfig};
use ipsec_core::spd::{AddrRange, Selector};
use ipsec_core::{Duration, Instant};
use ipsec_soft_crypto::SoftCrypto;

const PAIRS: usize = 1000;
type Sync = HaSync<PAIRS, 0, 2>;

fn record(k: u32) -> SaPairRecord<2> {
    let t = Transform {
        enc: Encryption::Cbc(CipherAlg::Aes256Cbc),
        auth: Some(MacAlg::HmacSha256_128),
    };
    let me = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100));
    let peer = IpAddr::V4(Ipv4Addr::from(0xcb00_7100 + k));
    let sel = Selector::new(
        AddrRange::from_prefix(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 0)), 24).unwrap(),
        AddrRange::from_prefix(IpAddr::V4(Ipv4Addr::from(0x0a40_0000 + (k << 8))), 24).unwrap(),
    )
    .unwrap();
    let mut i = EspConfig::tunnel(0x1000_0000 + k, Direction::Inbound, t, me, peer);
    i.selector = Some(sel);
    let mut o = EspConfig::tunnel(0x2000_0000 + k, Direction::Outbound, t, me, peer);
    o.selector = Some(sel);
    SaPairRecord {
        sa_group: k,
        peer,
        ike_cookies: [0; 16],
        inbound: i,
        outbound: o,
        inbound_keys: SaKeys::new(&[1; 32], &[2; 32]).unwrap(),
        outbound_keys: SaKeys::new(&[3; 32], &[4; 32]).unwrap(),
        progress: SaProgress::fresh(false, 64),
    }
}

/// Packets an SA has carried by `t_us` (microseconds), at `per_sa` pps with phase `k`.
fn count(t_us: u64, k: u64, per_sa: f64) -> u64 {
    let period_us = 1e6 / per_sa;
    let phase = period_us * k as f64 / PAIRS as f64;
    if (t_us as f64) < phase {
        0
    } else {
        ((t_us as f64 - phase) / period_us).floor() as u64 + 1
    }
}

struct Result {
    snapshot_bytes: u64,
    snapshot_msgs: u64,
    steady_bytes: u64,
    steady_msgs: u64,
    steady_updates: u64,
    ack_bytes: u64,
    seconds: u64,
}

fn run(replay: ReplayInterval, suite: Suite, pps: u64, tick_ms: u64, seconds: u64) -> Result {
    let cfg = SyncConfig {
        replay,
        ..SyncConfig::default()
    };
    let t0 = Instant::ZERO;
    let mut active = Box::new(Sync::new(cfg, HaRole::Active, t0));
    let mut standby = Box::new(Sync::new(cfg, HaRole::Standby, t0));
    // Only for the wire sizes.
    let chan: SyncChannel<SoftCrypto, 4, 1400> = SyncChannel::new(
        ChannelConfig::new(1, 2, suite, SecretBytes::from_slice(&[9; 32]).unwrap()),
        t0,
    )
    .unwrap();
    let cap = chan.max_payload();
    let ack_len = chan.datagram_len(0) as u64;

    for k in 0..PAIRS as u32 {
        active.sa_installed(t0, record(k), None).unwrap();
    }
    active.peer_up();
    let mut buf = vec![0u8; cap];
    let mut snapshot_bytes = 0;
    let mut snapshot_msgs = 0;
    loop {
        let n = active.fill(&mut buf);
        if n == 0 {
            break;
        }
        standby.handle_payload(t0, &buf[..n]).unwrap();
        snapshot_bytes += chan.datagram_len(n) as u64;
        snapshot_msgs += 1;
    }
    assert!(standby.in_sync() && standby.pair_count() == PAIRS);

    let per_sa = pps as f64 / PAIRS as f64;
    let mut steady_bytes = 0;
    let mut steady_msgs = 0;
    let updates_before = active.counters().updates_sent;
    let mut now = t0;
    let end = Instant::from_secs(seconds);
    while now < end {
        now = now + Duration::from_millis(tick_ms);
        let t_us = now.as_millis() * 1000;
        active.observe(now, |spi, _| {
            let k = u64::from(spi - 0x1000_0000);
            let out = count(t_us, k, per_sa);
            // Inbound packets arrive half a period later than outbound ones.
            let inn = count(t_us, (k + PAIRS as u64 / 2) % PAIRS as u64, per_sa);
            let mut p = SaProgress::fresh(false, 64);
            p.out_next_seq = out + 1;
            p.in_window.top = inn;
            p.in_window.bitmap = [u64::MAX; 2];
            p.in_bytes = inn * 100;
            p.out_bytes = out * 100;
            p.age = now - t0;
            Some(p)
        });
        loop {
            let n = active.fill(&mut buf);
            if n == 0 {
                break;
            }
            standby.handle_payload(now, &buf[..n]).unwrap();
            steady_bytes += chan.datagram_len(n) as u64;
            steady_msgs += 1;
        }
    }
    // The standby's copy never lags the live counters by more than the interval.
    let t_us = end.as_millis() * 1000;
    for p in standby.pairs() {
        let k = u64::from(p.id() - 0x1000_0000);
        let live = count(t_us, k, per_sa) + 1;
        assert!(
            live - p.progress.out_next_seq < u64::from(replay.outbound),
            "{live} {}",
            p.progress.out_next_seq
        );
    }
    Result {
        snapshot_bytes,
        snapshot_msgs,
        steady_bytes,
        steady_msgs,
        steady_updates: active.counters().updates_sent - updates_before,
        ack_bytes: steady_msgs * ack_len,
        seconds,
    }
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let pps = args.first().copied().unwrap_or(10_000);
    let tick_ms = args.get(1).copied().unwrap_or(10);
    let seconds = args.get(2).copied().unwrap_or(120);
    println!(
        "HA sync traffic: {PAIRS} SA pairs, {pps} pps per direction spread evenly ({} pps per SA per direction), \
         counters checked every {tick_ms} ms, {seconds} s of virtual time",
        pps as f64 / PAIRS as f64
    );
    println!(
        "{:<26} {:<18} {:>11} {:>9} {:>12} {:>8} {:>10} {:>9}",
        "replay-interval",
        "suite",
        "snapshot B",
        "snap msgs",
        "steady B/s",
        "msgs/s",
        "updates/s",
        "acks B/s"
    );
    let handle = std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || {
            for (label, replay) in [
                (
                    "inbound 100 outbound 1",
                    ReplayInterval {
                        inbound: 100,
                        outbound: 1,
                    },
                ),
                (
                    "inbound 1000 outbound 1000",
                    ReplayInterval {
                        inbound: 1000,
                        outbound: 1000,
                    },
                ),
            ] {
                for (sname, suite) in [
                    ("AES-CBC+HMAC-SHA256", Suite::AesCbcHmacSha256),
                    ("AES-GCM", Suite::AesGcm),
                ] {
                    let r = run(replay, suite, pps, tick_ms, seconds);
                    println!(
                        "{:<26} {:<18} {:>11} {:>9} {:>12.0} {:>8.1} {:>10.1} {:>9.0}",
                        label,
                        sname,
                        r.snapshot_bytes,
                        r.snapshot_msgs,
                        r.steady_bytes as f64 / r.seconds as f64,
                        r.steady_msgs as f64 / r.seconds as f64,
                        r.steady_updates as f64 / r.seconds as f64,
                        r.ack_bytes as f64 / r.seconds as f64,
                    );
                }
            }
        })
        .unwrap();
    handle.join().unwrap();
    println!(
        "(wire bytes of sync datagrams: {}-byte header + IV/padding + {}-byte tag; acks: one per data message, an upper bound)",
        channel::HEADER_LEN,
        channel::TAG_LEN
    );
}
