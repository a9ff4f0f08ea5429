//! SA life after establishment: DELETE both ways, deleting an IKE SA with its children,
//! peer-list failover, child rekey, child and phase-1 expiry, phase-1 rekey,
//! INITIAL-CONTACT after a reboot, DPD R-U-THERE / ACK, Aggressive Mode with hostname
//! identities, and the `show crypto isakmp sa` / `show crypto ipsec sa` status.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod sim;

use std::net::Ipv4Addr;

use hal_traits::{CipherAlg, DhGroup, HashAlg};
use ipsec_core::Duration;
use ipsec_core::esp::Mode;
use ipsec_ike::v1::{
    DeleteReason, ExchangeMode, FailReason, Hostname, IkeConfig, IkeEvent, IsakmpState,
    LocalIdentity, PresharedKey, Role,
};
use sim::*;

fn configs(lifetime_p1: u32, child_secs: u64) -> (IkeConfig, IkeConfig) {
    let pol =
        policy(CipherAlg::Aes128Cbc, HashAlg::Sha1, DhGroup::Modp1024).with_lifetime(lifetime_p1);
    let mut a = config(A, pol, b"life");
    let mut m = map(
        10,
        &[B],
        net(A_NET),
        net(B_NET),
        aes_sha1(),
        Mode::Tunnel,
        None,
        ExchangeMode::Main,
    );
    m.lifetime_seconds = child_secs;
    a.add_crypto_map(m).unwrap();
    let mut b = config(B, pol, b"life");
    let mut m = map(
        10,
        &[A],
        net(B_NET),
        net(A_NET),
        aes_sha1(),
        Mode::Tunnel,
        None,
        ExchangeMode::Main,
    );
    m.lifetime_seconds = child_secs;
    b.add_crypto_map(m).unwrap();
    (a, b)
}

fn established(seed: u64) -> Net {
    let (a, b) = configs(86_400, 3600);
    let mut n = Net::pair(seed, a, b);
    n.initiate(0, 10).unwrap();
    assert!(
        n.run_until(Duration::from_secs(10), |n| n.children(0).len() == 1
            && n.children(1).len() == 1)
    );
    n
}

fn deleted(n: &Net, k: usize) -> Vec<(u32, u32, DeleteReason)> {
    n.nodes[k]
        .events
        .iter()
        .filter_map(|e| match e {
            IkeEvent::ChildSaDeleted {
                inbound_spi,
                outbound_spi,
                reason,
                ..
            } => Some((*inbound_spi, *outbound_spi, *reason)),
            _ => None,
        })
        .collect()
}

fn p1_deleted(n: &Net, k: usize) -> Vec<(u32, DeleteReason)> {
    n.nodes[k]
        .events
        .iter()
        .filter_map(|e| match e {
            IkeEvent::Phase1Deleted {
                conn_id, reason, ..
            } => Some((*conn_id, *reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn delete_child_from_either_side() {
    for side in [0, 1] {
        let mut n = established(60 + side as u64);
        let mine = n.children(side)[0].clone();
        let now = n.now;
        let node = &mut n.nodes[side];
        node.ike
            .delete_child(now, &mut node.rng, mine.inbound.spi)
            .unwrap();
        assert_eq!(
            node.ike.delete_child(now, &mut node.rng, mine.inbound.spi),
            Err(ipsec_ike::v1::IkeError::UnknownChild)
        );
        let other = 1 - side;
        assert!(n.run_until(Duration::from_secs(2), |n| !deleted(n, other).is_empty()));
        assert_eq!(
            deleted(&n, side),
            [(mine.inbound.spi, mine.outbound.spi, DeleteReason::Local)]
        );
        assert_eq!(
            deleted(&n, other),
            [(
                mine.outbound.spi,
                mine.inbound.spi,
                DeleteReason::PeerDelete
            )]
        );
        for k in 0..2 {
            assert_eq!(n.nodes[k].ike.ipsec_status().count(), 0);
            assert_eq!(n.nodes[k].ike.isakmp_status().count(), 1, "phase 1 stays");
        }
    }
}

#[test]
fn delete_ike_sa_deletes_its_children_on_both_sides() {
    let mut n = established(62);
    let conn = n.nodes[0].ike.isakmp_status().next().unwrap().conn_id;
    let now = n.now;
    let node = &mut n.nodes[0];
    node.ike.delete_ike_sa(now, &mut node.rng, conn).unwrap();
    assert!(n.run_until(Duration::from_secs(2), |n| !p1_deleted(n, 1).is_empty()));
    assert_eq!(p1_deleted(&n, 0), [(conn, DeleteReason::Local)]);
    assert_eq!(deleted(&n, 0)[0].2, DeleteReason::IkeSaDeleted);
    assert_eq!(p1_deleted(&n, 1)[0].1, DeleteReason::PeerDelete);
    assert_eq!(deleted(&n, 1)[0].2, DeleteReason::PeerDelete);
    for k in 0..2 {
        assert_eq!(n.nodes[k].ike.isakmp_status().count(), 0);
        assert_eq!(n.nodes[k].ike.ipsec_status().count(), 0);
    }
    // And a new negotiation works from scratch.
    n.initiate(0, 10).unwrap();
    assert!(n.run_until(Duration::from_secs(5), |n| n.children(1).len() == 2));
}

#[test]
fn peer_list_failover_and_wrap_around() {
    let pol = policy(CipherAlg::Aes128Cbc, HashAlg::Sha1, DhGroup::Modp1024);
    let mut a = config(A, pol, b"fo");
    // First peer C is dead; B answers.
    a.add_crypto_map(map(
        10,
        &[C, B],
        net(A_NET),
        net(B_NET),
        aes_sha1(),
        Mode::Tunnel,
        None,
        ExchangeMode::Main,
    ))
    .unwrap();
    let mut b = config(B, pol, b"fo");
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
    let mut n = Net::pair(63, a, b);
    n.black_holes.push(v4(C));
    n.initiate(0, 10).unwrap();
    assert!(n.run_until(Duration::from_secs(60), |n| n.children(0).len() == 1));
    let ev: Vec<_> = n.nodes[0]
        .events
        .iter()
        .filter(|e| {
            matches!(
                e,
                IkeEvent::NegotiationFailed { .. } | IkeEvent::PeerChanged { .. }
            )
        })
        .cloned()
        .collect();
    assert!(
        matches!(
            ev.as_slice(),
            [
                IkeEvent::NegotiationFailed {
                    crypto_map: Some(10),
                    reason: FailReason::Timeout,
                    peer,
                },
                IkeEvent::PeerChanged {
                    crypto_map: 10,
                    from,
                    to,
                },
            ] if peer.ip() == v4(C) && *from == v4(C) && *to == v4(B)
        ),
        "{ev:?}"
    );
    assert_eq!(n.children(0)[0].peer.ip(), v4(B));
    // Now B dies too: the next attempt starts at B, fails, wraps back to C, fails, and
    // stops after one round.
    n.black_holes.push(v4(B));
    let now = n.now;
    let node = &mut n.nodes[0];
    let conn = node.ike.isakmp_status().next().unwrap().conn_id;
    node.ike.delete_ike_sa(now, &mut node.rng, conn).unwrap();
    n.nodes[0].events.clear();
    n.initiate(0, 10).unwrap();
    n.run_for(Duration::from_secs(120));
    let changes: Vec<_> = n.nodes[0]
        .events
        .iter()
        .filter_map(|e| match e {
            IkeEvent::PeerChanged { from, to, .. } => Some((*from, *to)),
            _ => None,
        })
        .collect();
    assert_eq!(changes, [(v4(B), v4(C)), (v4(C), v4(B))]);
    assert_eq!(
        n.count(0, |e| matches!(e, IkeEvent::NegotiationFailed { .. })),
        2
    );
    assert_eq!(n.nodes[0].ike.isakmp_status().count(), 0);
}

#[test]
fn rekey_child_and_expiry_of_the_old_pair() {
    let (a, b) = configs(86_400, 120);
    let mut n = Net::pair(64, a, b);
    n.initiate(0, 10).unwrap();
    assert!(n.run_until(Duration::from_secs(5), |n| n.children(1).len() == 1));
    let old = n.children(0)[0].clone();
    n.run_for(Duration::from_secs(100)); // soft expiry (90 %) would be at 108 s
    let now = n.now;
    let node = &mut n.nodes[0];
    node.ike
        .rekey_child(now, &mut node.rng, old.inbound.spi)
        .unwrap();
    assert!(n.run_until(Duration::from_secs(5), |n| n.children(1).len() == 2));
    let new = n.children(0)[1].clone();
    assert_eq!(new.replaces, Some(old.inbound.spi));
    assert_eq!(new.crypto_map, 10);
    assert_ne!(new.inbound.spi, old.inbound.spi);
    let new_b = partner(&new, &n.children(1)).clone();
    assert_eq!(
        new_b.replaces,
        Some(old.outbound.spi),
        "responder infers it"
    );
    assert_eq!(n.phase1_up(0), 1, "same IKE SA");
    // Both pairs exist until the old one's lifetime ends; then only the new one.
    for k in 0..2 {
        assert_eq!(n.nodes[k].ike.ipsec_status().count(), 2);
    }
    n.run_for(Duration::from_secs(30));
    for k in 0..2 {
        let left: Vec<_> = n.nodes[k]
            .ike
            .ipsec_status()
            .map(|s| s.inbound_spi)
            .collect();
        assert_eq!(left.len(), 1, "{k}");
        let d = deleted(&n, k);
        assert_eq!(d.len(), 1);
        assert!(matches!(
            d[0].2,
            DeleteReason::Expired | DeleteReason::PeerDelete
        ));
    }
    assert_eq!(
        deleted(&n, 0)[0],
        (old.inbound.spi, old.outbound.spi, DeleteReason::Expired)
    );
    let p = ipv4_udp(
        Ipv4Addr::new(10, 1, 0, 1),
        Ipv4Addr::new(10, 2, 0, 1),
        b"new",
    );
    esp_one_way(&new, &new_b, &p, None, &mut Rng(1));
}

#[test]
fn phase1_rekey_before_expiry_and_children_survive() {
    let (a, b) = configs(100, 3600);
    let mut n = Net::pair(65, a, b);
    n.initiate(0, 10).unwrap();
    assert!(n.run_until(Duration::from_secs(5), |n| n.children(1).len() == 1));
    let t0 = n.now;
    let first = n.nodes[0].ike.isakmp_status().next().unwrap();
    assert!(first.lifetime_left.unwrap() <= Duration::from_secs(100));
    // At 90 % (90 s) a new phase 1; at 100 s the old one is deleted.
    n.run_for(Duration::from_secs(95));
    assert_eq!(n.phase1_up(0), 2);
    assert_eq!(n.nodes[0].ike.isakmp_status().count(), 2);
    n.run_for(Duration::from_secs(10));
    assert_eq!(p1_deleted(&n, 0), [(first.conn_id, DeleteReason::Expired)]);
    assert_eq!(p1_deleted(&n, 1).len(), 1);
    for k in 0..2 {
        let st: Vec<_> = n.nodes[k].ike.isakmp_status().collect();
        assert_eq!(st.len(), 1, "{k}");
        assert_ne!(st[0].conn_id, first.conn_id);
        // The child survived and now belongs to the new IKE SA.
        let c: Vec<_> = n.nodes[k].ike.ipsec_status().collect();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].conn_id, st[0].conn_id);
    }
    assert!(n.now - t0 >= Duration::from_secs(100));
    // Quick Mode runs on the new IKE SA.
    let spi = n.children(0)[0].inbound.spi;
    let now = n.now;
    let node = &mut n.nodes[0];
    node.ike.rekey_child(now, &mut node.rng, spi).unwrap();
    assert!(n.run_until(Duration::from_secs(5), |n| n.children(1).len() == 2));
    let new_conn = n.nodes[0].ike.isakmp_status().next().unwrap().conn_id;
    assert_eq!(n.children(0)[1].conn_id, new_conn);
}

#[test]
fn initial_contact_after_a_reboot_clears_stale_sas() {
    let mut n = established(66);
    let old_conn_b = n.nodes[1].ike.isakmp_status().next().unwrap().conn_id;
    // A reboots: a fresh instance with the same configuration.
    let cfg = n.nodes[0].ike.config().clone();
    *n.nodes[0].ike = TestIke::new(cfg);
    n.nodes[0].events.clear();
    n.initiate(0, 10).unwrap();
    assert!(n.run_until(Duration::from_secs(5), |n| n.children(1).len() == 2));
    assert_eq!(
        p1_deleted(&n, 1),
        [(old_conn_b, DeleteReason::InitialContact)]
    );
    assert_eq!(deleted(&n, 1).len(), 1);
    assert_eq!(deleted(&n, 1)[0].2, DeleteReason::InitialContact);
    assert_eq!(n.nodes[1].ike.isakmp_status().count(), 1);
    assert_eq!(n.nodes[1].ike.ipsec_status().count(), 1);
}

#[test]
fn dpd_r_u_there_is_acknowledged() {
    let mut n = established(67);
    let conn = n.nodes[0].ike.isakmp_status().next().unwrap().conn_id;
    let now = n.now;
    let node = &mut n.nodes[0];
    let seq = node.ike.dpd_probe(now, &mut node.rng, conn).unwrap();
    let seq2 = node.ike.dpd_probe(now, &mut node.rng, conn).unwrap();
    assert_eq!(seq2, seq.wrapping_add(1));
    n.run_for(Duration::from_secs(1));
    assert_eq!(n.nodes[1].ike.counters().dpd_answered, 2);
    // Only the outstanding (latest) one counts as acknowledged.
    assert_eq!(n.nodes[0].ike.counters().dpd_acks, 1);
    assert_eq!(n.nodes[0].ike.counters().auth_failures, 0);
    assert!(
        n.nodes[1]
            .ike
            .isakmp_status()
            .next()
            .unwrap()
            .capabilities
            .dpd
    );
}

#[test]
fn aggressive_mode_with_hostname_identities() {
    let pol = policy(CipherAlg::Aes256Cbc, HashAlg::Sha256, DhGroup::Modp1024);
    let mut a = IkeConfig::new(v4(A));
    a.retransmit = fast_retransmit();
    a.add_policy(pol).unwrap();
    a.identity = LocalIdentity::Hostname(Hostname::try_from("branch.example").unwrap());
    a.add_key(PresharedKey::address(v4(B), b"hub-key").unwrap())
        .unwrap();
    a.add_crypto_map(map(
        10,
        &[B],
        net(A_NET),
        net(B_NET),
        aes_sha1(),
        Mode::Tunnel,
        None,
        ExchangeMode::Aggressive,
    ))
    .unwrap();
    let mut b = IkeConfig::new(v4(B));
    b.retransmit = fast_retransmit();
    b.add_policy(pol).unwrap();
    // The hub knows the branch only by name (its address is dynamic).
    b.add_key(PresharedKey::hostname("BRANCH.example", b"hub-key").unwrap())
        .unwrap();
    let mut m = map(
        10,
        &[],
        net(B_NET),
        net(A_NET),
        aes_sha1(),
        Mode::Tunnel,
        None,
        ExchangeMode::Aggressive,
    );
    m.dynamic = true;
    b.add_crypto_map(m).unwrap();
    let mut n = Net::pair(68, a, b);
    n.initiate(0, 10).unwrap();
    assert!(n.run_until(Duration::from_secs(5), |n| n.children(1).len() == 1));
    assert_eq!(n.log.len(), 6);
}

#[test]
fn status_shows_what_ios_would() {
    let mut n = established(69);
    n.run_for(Duration::from_secs(10));
    let a = n.nodes[0].ike.isakmp_status().next().unwrap();
    let b = n.nodes[1].ike.isakmp_status().next().unwrap();
    assert_eq!(a.state, IsakmpState::QmIdle);
    assert_eq!(a.state.to_string(), "QM_IDLE");
    assert_eq!((a.role, b.role), (Role::Initiator, Role::Responder));
    assert_eq!(
        (a.initiator_cookie, a.responder_cookie),
        (b.initiator_cookie, b.responder_cookie)
    );
    assert_eq!(a.encryption, Some(CipherAlg::Aes128Cbc));
    assert_eq!(a.hash, Some(HashAlg::Sha1));
    assert_eq!(a.group, Some(DhGroup::Modp1024));
    let left = a.lifetime_left.unwrap();
    assert!(left < Duration::from_secs(86_400) && left > Duration::from_secs(86_380));
    assert_eq!(a.capabilities.to_string(), "D");
    assert_eq!((a.local, a.remote), (b.remote, b.local));
    let ca = n.nodes[0].ike.ipsec_status().next().unwrap();
    let cb = n.nodes[1].ike.ipsec_status().next().unwrap();
    assert_eq!(
        (ca.inbound_spi, ca.outbound_spi),
        (cb.outbound_spi, cb.inbound_spi)
    );
    assert_eq!(ca.crypto_map, 10);
    assert_eq!(ca.selector.local, net(A_NET));
    assert_eq!(ca.selector.remote, net(B_NET));
    assert_eq!(ca.transform, aes_sha1());
    assert_eq!(ca.mode, Mode::Tunnel);
    assert_eq!(ca.udp_encap, None);
    assert_eq!(ca.pfs, None);
    assert_eq!(ca.lifetime_kilobytes, 4_608_000);
    assert!(
        ca.lifetime_left < Duration::from_secs(3600)
            && ca.lifetime_left > Duration::from_secs(3580)
    );
    let _ = format!("{:?} {:?}", n.nodes[0].ike, a);
}
