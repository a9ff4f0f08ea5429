//! NAT traversal (RFC 3947): a NAT box in the simulated network rewrites the
//! initiator's address (and ports); NAT-D finds it on the right side, both float to
//! 4500 with the non-ESP marker from MM5 / AM3 on, and the child SAs get UDP
//! encapsulation with the ports actually seen. Without a NAT nothing floats.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod sim;

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;

use hal_traits::{CipherAlg, DhGroup, HashAlg};
use ipsec_core::Duration;
use ipsec_core::esp::{Mode, UdpEncap};
use ipsec_ike::v1::{ExchangeMode, IkeEvent, NatStatus};
use ipsec_ike::wire::{Header, consts::vendor_id, payload_type};
use sim::*;

const INSIDE: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);

fn setup(seed: u64, remap: bool, exchange: ExchangeMode) -> Net {
    let pol = policy(CipherAlg::Aes128Cbc, HashAlg::Sha1, DhGroup::Modp1024);
    let mut a = config(INSIDE, pol, b"natsecret");
    a.add_crypto_map(map(
        10,
        &[B],
        net(A_NET),
        net(B_NET),
        aes_sha1(),
        Mode::Tunnel,
        None,
        exchange,
    ))
    .unwrap();
    let mut b = config(B, pol, b"natsecret");
    // The responder knows the peer by its public (NAT) address.
    b.add_crypto_map(map(
        10,
        &[NAT_PUBLIC],
        net(B_NET),
        net(A_NET),
        aes_sha1(),
        Mode::Tunnel,
        None,
        exchange,
    ))
    .unwrap();
    let mut n = Net::pair(seed, a, b);
    n.nat = Some(Nat::new(INSIDE, NAT_PUBLIC, remap));
    n
}

fn up(n: &Net) -> bool {
    !n.children(0).is_empty() && !n.children(1).is_empty()
}

fn nat_of(n: &Net, k: usize) -> NatStatus {
    n.nodes[k]
        .events
        .iter()
        .find_map(|e| match e {
            IkeEvent::Phase1Established { nat, .. } => Some(*nat),
            _ => None,
        })
        .unwrap()
}

fn run_nat(exchange: ExchangeMode, remap: bool) {
    let mut n = setup(31, remap, exchange);
    // Record every datagram as sent (before the NAT): (from, to, first bytes).
    let seen: Seen = Rc::default();
    let s2 = seen.clone();
    n.tamper = Some(Box::new(move |f, t, d| {
        s2.borrow_mut().push((f, t, d.clone()));
        true
    }));
    n.initiate(0, 10).unwrap();
    assert!(
        n.run_until(Duration::from_secs(10), up),
        "{:?}",
        n.nodes[1].errors
    );
    // The initiator is behind the NAT: it sees its own address changed; the responder
    // sees the peer's changed.
    assert_eq!(
        nat_of(&n, 0),
        NatStatus {
            local_behind_nat: true,
            remote_behind_nat: false
        }
    );
    assert_eq!(
        nat_of(&n, 1),
        NatStatus {
            local_behind_nat: false,
            remote_behind_nat: true
        }
    );
    // Floating: the first messages on 500, the rest on 4500 behind the marker.
    let seen = seen.borrow();
    let float_at = match exchange {
        ExchangeMode::Main => 4,
        ExchangeMode::Aggressive => 2,
    };
    for (k, (f, t, d)) in seen.iter().enumerate() {
        if k < float_at {
            assert_eq!(
                (f.port(), t.port() == 500 || t.port() >= 40_000),
                (500, true),
                "{k}"
            );
        } else {
            assert_eq!(f.port(), 4500, "message {k} floated");
            assert_eq!(&d[..4], &[0, 0, 0, 0], "non-ESP marker");
            Header::new_checked(&d[4..]).unwrap();
        }
    }
    let pub_4500 = n
        .nat
        .as_ref()
        .unwrap()
        .public_port(SocketAddr::new(v4(INSIDE), 4500));
    let pub_4500 = pub_4500.unwrap();
    if remap {
        assert_ne!(pub_4500, 4500);
    } else {
        assert_eq!(pub_4500, 4500);
    }
    let a = n.children(0)[0].clone();
    let b = n.children(1)[0].clone();
    assert_eq!(a.inbound.udp_encap, Some(UdpEncap::STANDARD));
    assert_eq!(a.outbound.udp_encap, Some(UdpEncap::STANDARD));
    assert_eq!(
        b.inbound.udp_encap,
        Some(UdpEncap {
            local_port: 4500,
            remote_port: pub_4500
        })
    );
    assert_eq!(b.peer, SocketAddr::new(v4(NAT_PUBLIC), pub_4500));
    assert_eq!(b.outbound.remote, Some(v4(NAT_PUBLIC)));
    // Status shows the N flag on both sides.
    for k in 0..2 {
        let st = n.nodes[k].ike.isakmp_status().next().unwrap();
        assert!(st.capabilities.nat_t);
        assert_eq!(st.local.port(), 4500);
    }
    // ESP in UDP both ways; the NAT rewrites B -> A's destination port back to 4500.
    let mut rng = Rng(3);
    let ab = ipv4_udp(
        Ipv4Addr::new(10, 1, 0, 1),
        Ipv4Addr::new(10, 2, 0, 1),
        b"nat a->b",
    );
    let ba = ipv4_udp(
        Ipv4Addr::new(10, 2, 0, 1),
        Ipv4Addr::new(10, 1, 0, 1),
        b"nat b->a",
    );
    esp_one_way(&a, &b, &ab, None, &mut rng);
    esp_one_way(&b, &a, &ba, Some(4500), &mut rng);
}

#[test]
fn main_mode_behind_nat_with_port_remap() {
    run_nat(ExchangeMode::Main, true);
}

#[test]
fn main_mode_behind_nat_keeping_ports() {
    run_nat(ExchangeMode::Main, false);
}

#[test]
fn aggressive_mode_behind_nat() {
    run_nat(ExchangeMode::Aggressive, true);
}

#[test]
fn no_nat_no_float() {
    let pol = policy(CipherAlg::Aes128Cbc, HashAlg::Sha1, DhGroup::Modp1024);
    let mut a = config(A, pol, b"k");
    a.add_crypto_map(map(
        10,
        &[B],
        net(A_NET),
        net(B_NET),
        aes_sha1(),
        Mode::Tunnel,
        None,
        ExchangeMode::Main,
    ))
    .unwrap();
    let mut b = config(B, pol, b"k");
    b.add_crypto_map(map(
        10,
        &[A],
        net(B_NET),
        net(A_NET),
        aes_sha1(),
        Mode::Tunnel,
        None,
        ExchangeMode::Main,
    ))
    .unwrap();
    let mut n = Net::pair(32, a, b);
    n.initiate(0, 10).unwrap();
    assert!(n.run_until(Duration::from_secs(10), up));
    assert!(!nat_of(&n, 0).detected() && !nat_of(&n, 1).detected());
    assert!(
        n.log
            .iter()
            .all(|(_, f, t, _)| f.port() == 500 && t.port() == 500)
    );
    assert_eq!(n.children(0)[0].inbound.udp_encap, None);
    assert!(
        !n.nodes[0]
            .ike
            .isakmp_status()
            .next()
            .unwrap()
            .capabilities
            .nat_t
    );
}

/// A peer that announces only the NAT-T drafts: NAT-D travels as payload type 130 and
/// the exchange still completes (with draft encapsulation modes 61443/61444).
#[test]
fn draft_only_peer_uses_draft_numbers() {
    let mut n = setup(33, true, ExchangeMode::Main);
    let natd_types: Rc<RefCell<Vec<u8>>> = Rc::default();
    let t2 = natd_types.clone();
    n.tamper = Some(Box::new(move |_, _, d| {
        let off = if d.len() > 4 && d[..4] == [0, 0, 0, 0] {
            4
        } else {
            0
        };
        let Ok(h) = Header::new_checked(&d[off..]) else {
            return true;
        };
        if h.is_encrypted() {
            return true;
        }
        let mut rfc_at = None;
        for p in h.payloads().flatten() {
            if p.payload_type == payload_type::VENDOR_ID && p.body == vendor_id::NATT_RFC3947 {
                rfc_at = Some(off + 28 + p.offset + 4);
            }
            if matches!(
                p.payload_type,
                payload_type::NAT_D | payload_type::NAT_D_DRAFT
            ) {
                t2.borrow_mut().push(p.payload_type);
            }
        }
        // Blank the RFC 3947 VID of the initiator (Vendor IDs are not authenticated).
        if let Some(at) = rfc_at {
            if h.responder_cookie() == [0; 8] {
                d[at..at + 16].fill(0xee);
            }
        }
        true
    }));
    n.initiate(0, 10).unwrap();
    assert!(n.run_until(Duration::from_secs(10), up));
    let types = natd_types.borrow();
    assert_eq!(types.len(), 4, "NAT-D x2 in MM3 and MM4");
    assert!(types.iter().all(|t| *t == payload_type::NAT_D_DRAFT));
    let a = n.children(0)[0].clone();
    let b = n.children(1)[0].clone();
    let mut rng = Rng(4);
    let ab = ipv4_udp(
        Ipv4Addr::new(10, 1, 0, 1),
        Ipv4Addr::new(10, 2, 0, 1),
        b"draft",
    );
    esp_one_way(&a, &b, &ab, None, &mut rng);
}

/// The responder follows the peer's new address only for authenticated messages: a
/// forged message from elsewhere with the right cookies changes nothing.
#[test]
fn unauthenticated_messages_do_not_move_the_peer() {
    let mut n = setup(34, true, ExchangeMode::Main);
    n.initiate(0, 10).unwrap();
    assert!(n.run_until(Duration::from_secs(10), up));
    let before = n.nodes[1].ike.isakmp_status().next().unwrap();
    // A forged encrypted Informational with the SA's cookies from another port.
    let mut forged = vec![0u8, 0, 0, 0];
    forged.extend_from_slice(&before.initiator_cookie);
    forged.extend_from_slice(&before.responder_cookie);
    forged.extend_from_slice(&[8, 0x10, 5, 1, 0x12, 0x34, 0x56, 0x78, 0, 0, 0, 60]);
    forged.extend_from_slice(&[0xab; 32]);
    let now = n.now;
    let node = &mut n.nodes[1];
    let r = node.ike.handle_datagram(
        now,
        &mut node.rng,
        SocketAddr::new(v4(NAT_PUBLIC), 41_234),
        SocketAddr::new(v4(B), 4500),
        &forged,
    );
    assert!(r.is_err());
    let after = n.nodes[1].ike.isakmp_status().next().unwrap();
    assert_eq!(after.remote, before.remote);
    assert_eq!(n.nodes[1].ike.counters().auth_failures, 1);
    // An ESP-in-UDP packet on 4500 is not IKE.
    let node = &mut n.nodes[1];
    let r = node.ike.handle_datagram(
        now,
        &mut node.rng,
        before.remote,
        SocketAddr::new(v4(B), 4500),
        &[1, 2, 3, 4, 0, 0, 0, 1, 9, 9],
    );
    assert_eq!(r, Err(ipsec_ike::v1::IkeError::NotIke));
    // A NAT keepalive is silently fine.
    let r = node.ike.handle_datagram(
        now,
        &mut node.rng,
        before.remote,
        SocketAddr::new(v4(B), 4500),
        &[0xff],
    );
    assert_eq!(r, Ok(()));
}
