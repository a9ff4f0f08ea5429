//! An in-process initiator/responder pair on a virtual clock: Main and Aggressive Mode
//! with every phase-1 combination, Quick Mode with every ESP transform of ipsec-core,
//! tunnel and transport, with and without PFS; ESP packets through the negotiated SAs
//! prove that both sides derived the same keys.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod sim;

use hal_traits::{AeadAlg, CipherAlg, DhGroup, HashAlg, MacAlg};
use ipsec_core::Duration;
use ipsec_core::esp::{Encryption, Mode, Transform};
use ipsec_core::spd::AddrRange;
use ipsec_ike::v1::{ExchangeMode, IkeEvent, IsakmpState, TransformSet};
use sim::*;

fn up(n: &Net) -> bool {
    !n.children(0).is_empty() && !n.children(1).is_empty()
}

/// Negotiates one pair and returns it.
fn negotiate(
    seed: u64,
    p1: (CipherAlg, HashAlg, DhGroup),
    exchange: ExchangeMode,
    ts: Transform,
    mode: Mode,
    pfs: Option<DhGroup>,
) -> Net {
    let pol = policy(p1.0, p1.1, p1.2);
    let (ln, rn) = match mode {
        Mode::Tunnel => (net(A_NET), net(B_NET)),
        Mode::Transport => (AddrRange::host(v4(A)), AddrRange::host(v4(B))),
    };
    let mut a = config(A, pol, b"secret");
    a.add_crypto_map(map(10, &[B], ln, rn, ts, mode, pfs, exchange))
        .unwrap();
    let mut b = config(B, pol, b"secret");
    b.add_crypto_map(map(10, &[A], rn, ln, ts, mode, pfs, exchange))
        .unwrap();
    let mut n = Net::pair(seed, a, b);
    n.initiate(0, 10).unwrap();
    assert!(
        n.run_until(Duration::from_secs(10), up),
        "no child SAs: {p1:?} {exchange:?} {ts:?} {mode:?} {pfs:?}: {:?} / {:?}",
        n.nodes[0].events,
        n.nodes[1].errors
    );
    n
}

fn check_esp(n: &mut Net, mode: Mode) {
    let a = n.children(0)[0].clone();
    let b = n.children(1)[0].clone();
    let (ab, ba) = match mode {
        Mode::Tunnel => (
            ipv4_udp(
                std::net::Ipv4Addr::new(10, 1, 0, 5),
                std::net::Ipv4Addr::new(10, 2, 0, 7),
                b"hello from A",
            ),
            ipv4_udp(
                std::net::Ipv4Addr::new(10, 2, 0, 7),
                std::net::Ipv4Addr::new(10, 1, 0, 5),
                b"hello from B",
            ),
        ),
        Mode::Transport => (
            ipv4_udp(A, B, b"transport A"),
            ipv4_udp(B, A, b"transport B"),
        ),
    };
    let mut rng = Rng(7);
    esp_both_ways(&a, &b, &ab, &ba, &mut rng);
}

#[test]
fn main_mode_quick_mode_basic() {
    let mut n = negotiate(
        1,
        (CipherAlg::Aes128Cbc, HashAlg::Sha1, DhGroup::Modp1024),
        ExchangeMode::Main,
        aes_sha1(),
        Mode::Tunnel,
        None,
    );
    // Both sides report phase 1 once, the child once, no failures.
    for k in 0..2 {
        assert_eq!(n.phase1_up(k), 1);
        assert_eq!(n.children(k).len(), 1);
        assert!(
            !n.nodes[k]
                .events
                .iter()
                .any(|e| matches!(e, IkeEvent::NegotiationFailed { .. })),
            "{:?}",
            n.nodes[k].events
        );
        let st: Vec<_> = n.nodes[k].ike.isakmp_status().collect();
        assert_eq!(st.len(), 1);
        assert_eq!(st[0].state, IsakmpState::QmIdle);
        assert!(st[0].capabilities.dpd);
        assert!(!st[0].capabilities.nat_t);
        assert_eq!(n.nodes[k].ike.ipsec_status().count(), 1);
    }
    let a = n.children(0)[0].clone();
    assert_eq!(a.crypto_map, 10);
    assert_eq!(a.replaces, None);
    assert!(a.inbound.spi >= 256 && a.outbound.spi >= 256);
    assert_eq!(a.inbound.udp_encap, None);
    // No datagram left port 500 (no NAT, no float).
    assert!(
        n.log
            .iter()
            .all(|(_, f, t, _)| f.port() == 500 && t.port() == 500)
    );
    // 6 + 3 messages, nothing retransmitted.
    assert_eq!(n.log.len(), 9, "{:?}", n.log);
    check_esp(&mut n, Mode::Tunnel);
    // Keys never printed.
    let dbg = format!("{a:?}");
    assert!(!dbg.contains("keymat") && dbg.contains("ChildSa"));
}

#[test]
fn aggressive_mode_basic() {
    let mut n = negotiate(
        2,
        (CipherAlg::Aes256Cbc, HashAlg::Sha256, DhGroup::Modp1536),
        ExchangeMode::Aggressive,
        aes_sha1(),
        Mode::Tunnel,
        Some(DhGroup::Modp1024),
    );
    assert_eq!(n.log.len(), 3 + 3, "{:?}", n.log);
    check_esp(&mut n, Mode::Tunnel);
}

/// Phase 1: {des, 3des, aes128, aes192, aes256} x {md5, sha1, sha256} x groups {1, 2, 5,
/// 14}, Main and Aggressive Mode (group 15 once).
#[test]
fn every_phase1_combination() {
    let ciphers = [
        CipherAlg::DesCbc,
        CipherAlg::TripleDesCbc,
        CipherAlg::Aes128Cbc,
        CipherAlg::Aes192Cbc,
        CipherAlg::Aes256Cbc,
    ];
    let hashes = [HashAlg::Md5, HashAlg::Sha1, HashAlg::Sha256];
    let groups = [
        DhGroup::Modp768,
        DhGroup::Modp1024,
        DhGroup::Modp1536,
        DhGroup::Modp2048,
    ];
    let mut seed = 100;
    let mut count = 0;
    for exchange in [ExchangeMode::Main, ExchangeMode::Aggressive] {
        for c in ciphers {
            for h in hashes {
                for g in groups {
                    seed += 1;
                    let mut n =
                        negotiate(seed, (c, h, g), exchange, aes_sha1(), Mode::Tunnel, None);
                    let st = n.nodes[1].ike.isakmp_status().next().unwrap();
                    assert_eq!(
                        (st.encryption, st.hash, st.group),
                        (Some(c), Some(h), Some(g))
                    );
                    check_esp(&mut n, Mode::Tunnel);
                    count += 1;
                }
            }
        }
    }
    let mut n = negotiate(
        1,
        (CipherAlg::Aes256Cbc, HashAlg::Sha256, DhGroup::Modp3072),
        ExchangeMode::Main,
        aes_sha1(),
        Mode::Tunnel,
        None,
    );
    check_esp(&mut n, Mode::Tunnel);
    assert_eq!(count, 120);
}

fn every_esp_transform() -> Vec<Transform> {
    let macs = [
        MacAlg::HmacMd5_96,
        MacAlg::HmacSha1_96,
        MacAlg::HmacSha256_128,
    ];
    let mut v = Vec::new();
    for m in macs {
        v.push(Transform {
            enc: Encryption::Null,
            auth: Some(m),
        });
        for c in [
            CipherAlg::DesCbc,
            CipherAlg::TripleDesCbc,
            CipherAlg::Aes128Cbc,
            CipherAlg::Aes192Cbc,
            CipherAlg::Aes256Cbc,
        ] {
            v.push(Transform {
                enc: Encryption::Cbc(c),
                auth: Some(m),
            });
        }
    }
    for a in [
        AeadAlg::Aes128Gcm8,
        AeadAlg::Aes128Gcm12,
        AeadAlg::Aes128Gcm16,
        AeadAlg::Aes192Gcm8,
        AeadAlg::Aes192Gcm12,
        AeadAlg::Aes192Gcm16,
        AeadAlg::Aes256Gcm8,
        AeadAlg::Aes256Gcm12,
        AeadAlg::Aes256Gcm16,
    ] {
        v.push(Transform {
            enc: Encryption::Gcm(a),
            auth: None,
        });
    }
    v
}

/// Phase 2: every ESP transform, tunnel and transport, with and without PFS. One phase 1
/// per (mode, PFS); each transform is a new Quick Mode on it (the crypto map's transform
/// set is changed between them).
#[test]
fn every_quick_mode_combination() {
    let all = every_esp_transform();
    assert_eq!(all.len(), 27);
    let mut total = 0;
    for (mode, pfs, seed) in [
        (Mode::Tunnel, None, 11),
        (Mode::Tunnel, Some(DhGroup::Modp768), 12),
        (Mode::Transport, None, 13),
        (Mode::Transport, Some(DhGroup::Modp1024), 14),
    ] {
        let mut n = negotiate(
            seed,
            (CipherAlg::Aes128Cbc, HashAlg::Sha1, DhGroup::Modp768),
            ExchangeMode::Main,
            all[0],
            mode,
            pfs,
        );
        check_esp(&mut n, mode);
        for (k, t) in all.iter().enumerate().skip(1) {
            for node in 0..2 {
                let ts = TransformSet::new("T", *t, mode).unwrap();
                let cfg = n.nodes[node].ike.config_mut();
                cfg.crypto_maps[0].transform_sets.clear();
                cfg.crypto_maps[0].transform_sets.push(ts).unwrap();
            }
            n.initiate(0, 10).unwrap();
            assert!(
                n.run_until(Duration::from_secs(10), |n| n.children(0).len() == k + 1
                    && n.children(1).len() == k + 1),
                "{t:?} {mode:?} {pfs:?} {:?} {:?} {:?}",
                n.nodes[0].errors,
                n.nodes[1].errors,
                n.nodes[0].events.last()
            );
            let a = n.children(0)[k].clone();
            let b = partner(&a, &n.children(1));
            assert_eq!(a.inbound.transform, *t);
            assert_eq!(a.inbound.mode, mode);
            let (ab, ba) = match mode {
                Mode::Tunnel => (
                    ipv4_udp(
                        std::net::Ipv4Addr::new(10, 1, 9, 9),
                        std::net::Ipv4Addr::new(10, 2, 8, 8),
                        b"x",
                    ),
                    ipv4_udp(
                        std::net::Ipv4Addr::new(10, 2, 8, 8),
                        std::net::Ipv4Addr::new(10, 1, 9, 9),
                        b"yy",
                    ),
                ),
                Mode::Transport => (ipv4_udp(A, B, b"t1"), ipv4_udp(B, A, b"t22")),
            };
            esp_both_ways(&a, b, &ab, &ba, &mut Rng(k as u64));
            // Make room: delete it (both sides, by DELETE).
            let now = n.now;
            let node = &mut n.nodes[0];
            node.ike
                .delete_child(now, &mut node.rng, a.inbound.spi)
                .unwrap();
            let del = |n: &Net| {
                n.count(1, |e| matches!(e, IkeEvent::ChildSaDeleted { inbound_spi, .. } if *inbound_spi == a.outbound.spi)) == 1
            };
            assert!(n.run_until(Duration::from_secs(5), del));
            total += 1;
        }
        // One phase 1 served them all.
        assert_eq!(
            n.phase1_up(0),
            1,
            "{:#?}",
            n.nodes[0]
                .events
                .iter()
                .filter(|e| !matches!(e, IkeEvent::ChildSaEstablished(_)))
                .collect::<Vec<_>>()
        );
    }
    assert_eq!(total, 4 * 26);
}
