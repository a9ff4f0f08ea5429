//! No panics on any input, and no damage from garbage: mutated copies of every message
//! of a real exchange, random datagrams and random time jumps are thrown at both ends
//! (debug build: arithmetic overflow would panic too); afterwards the SAs still work.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod sim;

use std::net::SocketAddr;
use std::rc::Rc;

use hal_traits::{CipherAlg, DhGroup, HashAlg};
use ipsec_core::Duration;
use ipsec_core::esp::Mode;
use ipsec_ike::v1::ExchangeMode;
use sim::*;

fn run(exchange: ExchangeMode, seed: u64) {
    let pol = policy(CipherAlg::Aes128Cbc, HashAlg::Sha1, DhGroup::Modp768);
    let mut a = config(A, pol, b"fuzz");
    a.add_crypto_map(map(
        10,
        &[B],
        net(A_NET),
        net(B_NET),
        aes_sha1(),
        Mode::Tunnel,
        Some(DhGroup::Modp768),
        exchange,
    ))
    .unwrap();
    let mut b = config(B, pol, b"fuzz");
    b.add_crypto_map(map(
        10,
        &[A],
        net(B_NET),
        net(A_NET),
        aes_sha1(),
        Mode::Tunnel,
        Some(DhGroup::Modp768),
        exchange,
    ))
    .unwrap();
    let mut n = Net::pair(seed, a, b);
    let seen: Seen = Rc::default();
    let s2 = seen.clone();
    n.tamper = Some(Box::new(move |f, t, d| {
        s2.borrow_mut().push((f, t, d.clone()));
        true
    }));
    n.initiate(0, 10).unwrap();
    assert!(n.run_until(Duration::from_secs(10), |n| n.children(1).len() == 1));
    n.tamper = None;
    let msgs = seen.borrow().clone();
    let mut rng = Rng(seed);
    let addrs = [
        SocketAddr::new(v4(A), 500),
        SocketAddr::new(v4(A), 4500),
        SocketAddr::new(v4(B), 500),
        SocketAddr::new(v4(B), 4500),
        SocketAddr::new(v4(C), 500),
    ];
    for round in 0..3000 {
        let (f, t, base) = &msgs[rng.below(msgs.len() as u64) as usize];
        let mut d = match rng.below(4) {
            0 => {
                // Random bytes behind a plausible header.
                let mut d = base[..28.min(base.len())].to_vec();
                let extra = rng.below(200) as usize;
                d.extend((0..extra).map(|_| rng.next_u64() as u8));
                d
            }
            _ => base.clone(),
        };
        // Mutate: flip bytes, rewrite lengths, truncate or extend.
        for _ in 0..=rng.below(4) {
            if d.is_empty() {
                break;
            }
            let i = rng.below(d.len() as u64) as usize;
            match rng.below(5) {
                0 => d[i] ^= 1 << rng.below(8),
                1 => d[i] = rng.next_u64() as u8,
                2 => d.truncate(i),
                3 => d.extend_from_slice(&[0u8; 7]),
                _ => {
                    // A payload or header length field.
                    if i + 1 < d.len() {
                        let v = rng.next_u64() as u16;
                        d[i..i + 2].copy_from_slice(&v.to_be_bytes());
                    }
                }
            }
        }
        if rng.below(3) == 0 {
            let mut m = vec![0, 0, 0, 0];
            m.extend_from_slice(&d);
            d = m;
        }
        let to_node = if rng.below(2) == 0 { 0 } else { 1 };
        let from = if rng.below(4) == 0 {
            addrs[rng.below(5) as usize]
        } else {
            *f
        };
        // The port hands over what arrived on its own sockets: `to` is ours.
        let own = n.nodes[to_node].addr;
        let to = if rng.below(4) == 0 {
            SocketAddr::new(own, if rng.below(2) == 0 { 500 } else { 4500 })
        } else {
            SocketAddr::new(own, t.port())
        };
        let now = n.now;
        let node = &mut n.nodes[to_node];
        let _ = node.ike.handle_datagram(now, &mut node.rng, from, to, &d);
        if round % 500 == 0 {
            n.run_for(Duration::from_millis(rng.below(3000)));
        }
    }
    // Drain whatever the garbage provoked (notifies, resends, half-open SAs from
    // mutated first messages, which expire after the half-open timeout).
    n.run_for(Duration::from_secs(35));
    // The original SAs are intact: a new Quick Mode on the same phase 1 works, and
    // ESP through the first pair still works.
    for k in 0..2 {
        assert_eq!(n.phase1_up(k), 1, "{exchange:?} {seed}");
        assert_eq!(n.nodes[k].ike.isakmp_status().count(), 1, "{k}");
    }
    let first_a = n.children(0)[0].clone();
    let first_b = n.children(1)[0].clone();
    let p = ipv4_udp(
        std::net::Ipv4Addr::new(10, 1, 0, 1),
        std::net::Ipv4Addr::new(10, 2, 0, 1),
        b"still",
    );
    esp_one_way(&first_a, &first_b, &p, None, &mut Rng(1));
    let now = n.now;
    let node = &mut n.nodes[0];
    node.ike
        .rekey_child(now, &mut node.rng, first_a.inbound.spi)
        .unwrap();
    assert!(n.run_until(Duration::from_secs(10), |n| n.children(1).len() == 2));
    assert!(n.nodes[1].ike.counters().malformed + n.nodes[1].ike.counters().auth_failures > 100);
}

#[test]
fn garbage_never_panics_or_damages_main_mode() {
    run(ExchangeMode::Main, 90);
}

#[test]
fn garbage_never_panics_or_damages_aggressive_mode() {
    run(ExchangeMode::Aggressive, 91);
}
