//! Reliability: retransmission with backoff over a network with seeded loss,
//! duplication and reordering; exact give-up time against a silent peer; the Quick Mode
//! and Aggressive Mode responders retransmitting their last message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod sim;

use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::rc::Rc;

use hal_traits::{CipherAlg, DhGroup, HashAlg};
use ipsec_core::esp::Mode;
use ipsec_core::{Duration, Instant};
use ipsec_ike::v1::{ExchangeMode, FailReason, IkeConfig, IkeEvent, Retransmit};
use ipsec_ike::wire::{Header, exchange_type};
use sim::*;

fn pair_configs(exchange: ExchangeMode, pfs: Option<DhGroup>) -> (IkeConfig, IkeConfig) {
    let pol = policy(CipherAlg::Aes256Cbc, HashAlg::Sha256, DhGroup::Modp1024);
    let mut a = config(A, pol, b"lossy");
    a.add_crypto_map(map(
        10,
        &[B],
        net(A_NET),
        net(B_NET),
        aes_sha1(),
        Mode::Tunnel,
        pfs,
        exchange,
    ))
    .unwrap();
    let mut b = config(B, pol, b"lossy");
    b.add_crypto_map(map(
        10,
        &[A],
        net(B_NET),
        net(A_NET),
        aes_sha1(),
        Mode::Tunnel,
        pfs,
        exchange,
    ))
    .unwrap();
    (a, b)
}

#[test]
fn lossy_duplicating_reordering_network_still_converges() {
    let mut runs = 0;
    let mut retransmits = 0;
    for exchange in [ExchangeMode::Main, ExchangeMode::Aggressive] {
        for (loss, dup, reorder) in [(0.1, 0.1, 0.2), (0.2, 0.2, 0.3), (0.3, 0.3, 0.3)] {
            for seed in 0..12u64 {
                let (mut a, mut b) = pair_configs(exchange, Some(DhGroup::Modp768));
                // More tries than the default: at 30 % loss a round trip fails half
                // the time, and the test must not depend on luck.
                for c in [&mut a, &mut b] {
                    c.retransmit = Retransmit {
                        timeout: Duration::from_millis(200),
                        base_permille: 1500,
                        tries: 10,
                    };
                    c.half_open_timeout = Duration::from_secs(300);
                }
                let mut n = Net::pair(1000 + seed, a, b);
                n.loss = loss;
                n.dup = dup;
                n.reorder = reorder;
                n.latency = Duration::from_millis(20);
                n.initiate(0, 10).unwrap();
                let ok = n.run_until(Duration::from_secs(300), |n| {
                    n.children(0).len() == 1 && n.children(1).len() == 1
                });
                assert!(
                    ok,
                    "{exchange:?} loss {loss} seed {seed}: {:?} {:?}",
                    n.nodes[0].events, n.nodes[1].events
                );
                // Let stragglers (duplicates, retransmissions) arrive: nothing changes.
                n.run_for(Duration::from_secs(30));
                for k in 0..2 {
                    assert_eq!(n.phase1_up(k), 1, "{exchange:?} {loss} {seed}");
                    assert_eq!(n.children(k).len(), 1, "{exchange:?} {loss} {seed}");
                    assert_eq!(
                        n.count(k, |e| matches!(e, IkeEvent::NegotiationFailed { .. })),
                        0
                    );
                    retransmits += n.nodes[k].ike.counters().retransmits;
                }
                let a = n.children(0)[0].clone();
                let b = n.children(1)[0].clone();
                let p = ipv4_udp(Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 2, 0, 1), b"l");
                let q = ipv4_udp(Ipv4Addr::new(10, 2, 0, 1), Ipv4Addr::new(10, 1, 0, 1), b"m");
                esp_both_ways(&a, &b, &p, &q, &mut Rng(seed));
                runs += 1;
            }
        }
    }
    assert_eq!(runs, 72);
    assert!(retransmits > 50, "loss was exercised: {retransmits}");
}

#[test]
fn silent_peer_gives_up_after_the_backoff_schedule() {
    let (a, b) = pair_configs(ExchangeMode::Main, None);
    let mut n = Net::pair(5, a, b);
    n.black_holes.push(v4(B));
    let t0 = n.now;
    n.initiate(0, 10).unwrap();
    assert!(
        n.run_until(Duration::from_secs(60), |n| n.count(0, |e| matches!(
            e,
            IkeEvent::NegotiationFailed {
                reason: FailReason::Timeout,
                crypto_map: Some(10),
                ..
            }
        )) == 1)
    );
    let rt = fast_retransmit();
    assert_eq!(n.now, t0 + rt.total(), "gave up exactly after the schedule");
    // 0.5 s, then x1.8 each: 1 + 5 transmissions at these offsets.
    let times: Vec<u64> = n.log.iter().map(|(t, ..)| (*t - t0).as_millis()).collect();
    assert_eq!(times, [0, 500, 1400, 3020, 5936, 11184]);
    assert_eq!(n.nodes[0].ike.counters().retransmits, 5);
    assert_eq!(n.nodes[0].ike.isakmp_status().count(), 0);
    assert_eq!(
        n.nodes[0].ike.poll_timeout(),
        None,
        "nothing left to wait for"
    );
}

/// Drops the first message of `exchange` carrying `flags`, `nth` (0-based) of its kind.
fn drop_nth(n: &mut Net, exchange: u8, nth: usize, encrypted: bool) {
    let count = Rc::new(RefCell::new(0usize));
    n.tamper = Some(Box::new(move |_, _, d| {
        let off = if d.len() > 4 && d[..4] == [0; 4] {
            4
        } else {
            0
        };
        let Ok(h) = Header::new_checked(&d[off..]) else {
            return true;
        };
        if h.exchange_type() != exchange || h.is_encrypted() != encrypted {
            return true;
        }
        let mut c = count.borrow_mut();
        *c += 1;
        *c != nth + 1
    }));
}

#[test]
fn lost_qm3_is_recovered_by_the_responder_retransmitting_qm2() {
    let (a, b) = pair_configs(ExchangeMode::Main, None);
    let mut n = Net::pair(6, a, b);
    // QM messages: QM1 (A), QM2 (B), QM3 (A): drop the third.
    drop_nth(&mut n, exchange_type::QUICK_MODE, 2, true);
    n.initiate(0, 10).unwrap();
    assert!(n.run_until(Duration::from_secs(10), |n| n.children(1).len() == 1));
    assert_eq!(n.children(0).len(), 1);
    assert!(
        n.nodes[1].ike.counters().retransmits >= 1,
        "QM2 retransmitted"
    );
    assert_eq!(
        n.nodes[0].ike.counters().duplicates,
        1,
        "QM3 resent on QM2 repeat"
    );
}

#[test]
fn lost_am3_is_recovered_by_the_responder_retransmitting_am2() {
    let (a, b) = pair_configs(ExchangeMode::Aggressive, None);
    let mut n = Net::pair(7, a, b);
    drop_nth(&mut n, exchange_type::AGGRESSIVE, 0, true);
    n.initiate(0, 10).unwrap();
    assert!(n.run_until(Duration::from_secs(10), |n| n.children(1).len() == 1));
    assert!(
        n.nodes[1].ike.counters().retransmits >= 1,
        "AM2 retransmitted"
    );
    assert_eq!(n.phase1_up(0), 1);
    assert_eq!(n.phase1_up(1), 1);
}

#[test]
fn lost_mm6_is_recovered_by_the_initiator_retransmitting_mm5() {
    let (a, b) = pair_configs(ExchangeMode::Main, None);
    let mut n = Net::pair(8, a, b);
    // Encrypted Main Mode messages: MM5 (A), MM6 (B): drop MM6.
    drop_nth(&mut n, exchange_type::IDENTITY_PROTECTION, 1, true);
    let t0 = n.now;
    n.initiate(0, 10).unwrap();
    assert!(
        n.run_until(Duration::from_secs(10), |n| n.children(0).len() == 1
            && n.children(1).len() == 1)
    );
    assert_eq!(n.nodes[0].ike.counters().retransmits, 1);
    assert_eq!(n.nodes[1].ike.counters().duplicates, 1);
    assert!(n.now - t0 >= Duration::from_millis(500));
    let _ = Instant::ZERO;
}
