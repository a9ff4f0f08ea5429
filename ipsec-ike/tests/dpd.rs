//! Dead Peer Detection (RFC 3706) and IKE keepalives on the simulated network, with
//! exact virtual times.
//!
//! Timing under test (`keepalive 10 2`, 5 R-U-THEREs per round): on demand, the first
//! R-U-THERE goes out with the first outbound packet reported after 10 s without proof
//! of life (`t1`); unanswered, a new one every 2 s (t1, +2, +4, +6, +8); the peer is
//! declared dead at `t1 + 5 × 2 s`, i.e. `interval + retries × retry` after the last
//! proof of life when traffic is waiting at the end of the interval. The backup peer's
//! Main Mode starts at that same instant.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod sim;

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;

use hal_traits::{CipherAlg, DhGroup, HashAlg};
use ipsec_core::esp::Mode;
use ipsec_core::{Duration, Instant};
use ipsec_ike::v1::{
    DeleteReason, ExchangeMode, IkeConfig, IkeError, IkeEvent, Keepalive, KeepaliveMode,
};
use sim::*;

const INTERVAL: Duration = Duration::from_secs(10);
const RETRY: Duration = Duration::from_secs(2);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ka() -> Keepalive {
    Keepalive::new(INTERVAL, RETRY)
}

/// Node 0 = A (initiator, keepalive `k`, peers `peers`); node 1 = B; node 2 = C (if
/// listed). Child SAs live 2 h so nothing expires within an hour.
fn net_with(seed: u64, peers: &[Ipv4Addr], k: Option<Keepalive>) -> Net {
    let pol = policy(CipherAlg::Aes128Cbc, HashAlg::Sha1, DhGroup::Modp1024);
    let mut a = config(A, pol, b"dpd");
    let mut m = map(
        10,
        peers,
        net(A_NET),
        net(B_NET),
        aes_sha1(),
        Mode::Tunnel,
        None,
        ExchangeMode::Main,
    );
    m.lifetime_seconds = 7200;
    a.add_crypto_map(m).unwrap();
    a.keepalive = k;
    let responder = |me: Ipv4Addr| {
        let mut c = config(me, pol, b"dpd");
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
        m.lifetime_seconds = 7200;
        c.add_crypto_map(m).unwrap();
        c
    };
    let mut n = Net::pair(seed, a, responder(B));
    if peers.contains(&C) {
        n.add(responder(C), seed ^ 0xc);
    }
    n
}

fn up(seed: u64, peers: &[Ipv4Addr], k: Option<Keepalive>) -> Net {
    let mut n = net_with(seed, peers, k);
    n.initiate(0, 10).unwrap();
    assert!(n.run_until(secs(10), |n| n.children(0).len() == 1
        && n.children(1).len() == 1));
    // Let the last Quick Mode message land: nothing is in flight afterwards.
    n.run_for(Duration::from_millis(100));
    n
}

fn note_in(n: &mut Net, peer: Ipv4Addr) -> bool {
    let now = n.now;
    n.nodes[0].ike.note_inbound(now, v4(peer))
}

fn note_out(n: &mut Net, peer: Ipv4Addr) -> bool {
    let now = n.now;
    n.nodes[0].ike.note_outbound(now, v4(peer))
}

fn dpd_sent(n: &Net) -> u64 {
    n.nodes[0].ike.counters().dpd_sent
}

/// The time of the next thing the simulation would do.
fn next_event(n: &Net) -> Option<Instant> {
    let q = n.queue.iter().map(|p| p.at).min();
    n.nodes
        .iter()
        .filter_map(|x| x.ike.poll_timeout())
        .chain(q)
        .min()
}

/// Steps the simulation until `stop` holds or the next event is more than `limit`
/// away (then the clock stops at `now + limit`), and returns the virtual times at which
/// node 0 sent R-U-THEREs.
fn run_recording(n: &mut Net, limit: Duration, mut stop: impl FnMut(&Net) -> bool) -> Vec<Instant> {
    let end = n.now + limit;
    let mut times = Vec::new();
    let mut last = dpd_sent(n);
    while !stop(n) {
        match next_event(n) {
            Some(t) if t <= end => {
                n.step();
            }
            _ => {
                n.now = end;
                break;
            }
        }
        for _ in last..dpd_sent(n) {
            times.push(n.now);
        }
        last = dpd_sent(n);
    }
    times
}

fn has_peer_dead(n: &Net) -> bool {
    n.count(0, |e| matches!(e, IkeEvent::PeerDead { .. })) > 0
}

/// Is this datagram an Informational (exchange type 5) from `who` on port 500?
fn info_from(who: Ipv4Addr, from: SocketAddr, data: &[u8]) -> bool {
    from.ip() == v4(who) && data.len() > 28 && data[18] == 5
}

#[test]
fn on_demand_with_traffic_flowing_sends_no_dpd() {
    let mut n = up(1, &[B], Some(ka()));
    let st = n.nodes[0].ike.isakmp_status().next().unwrap();
    assert_eq!(st.capabilities.to_string(), "D K");
    // Two minutes of traffic both ways, one packet per second each way.
    for _ in 0..120 {
        n.run_for(secs(1));
        assert!(!note_out(&mut n, B), "no probe while the peer talks");
        assert!(note_in(&mut n, B));
        assert_eq!(n.nodes[0].ike.dpd_status(v4(B)).unwrap().deadline, None);
    }
    assert_eq!(dpd_sent(&n), 0);
    assert_eq!(n.nodes[1].ike.counters().dpd_answered, 0);
}

#[test]
fn on_demand_idle_without_outbound_sends_nothing_and_wakes_nothing() {
    let mut n = up(2, &[B], Some(ka()));
    n.run_for(secs(60)); // finished Quick Modes stop lingering
    let t0 = n.now;
    let log0 = n.log.len();
    // No DPD deadline is armed: the next wakeup is the child SAs' hard expiry (2 h).
    let next = n.nodes[0].ike.poll_timeout().unwrap();
    assert!(next > t0 + secs(3600), "{next:?}");
    // Inbound only (the peer talks, we have nothing to say): still nothing armed.
    for _ in 0..10 {
        n.run_for(secs(30));
        note_in(&mut n, B);
    }
    n.run_for(secs(3600));
    assert_eq!(dpd_sent(&n), 0);
    assert_eq!(n.log.len(), log0, "not one datagram in an hour");
    assert_eq!(n.nodes[0].ike.poll_timeout(), Some(next));
    let s = n.nodes[0].ike.dpd_status(v4(B)).unwrap();
    assert_eq!((s.unanswered, s.deadline, s.counters.sent), (0, None, 0));
}

#[test]
fn idle_then_outbound_sends_r_u_there_at_that_moment() {
    let mut n = up(3, &[B], Some(ka()));
    assert!(note_in(&mut n, B));
    let t0 = n.now;
    n.run_for(secs(5));
    assert!(!note_out(&mut n, B), "5 s idle < 10 s interval");
    n.run_for(secs(20));
    let t1 = n.now;
    assert_eq!(t1, t0 + secs(25));
    assert!(note_out(&mut n, B), "idle 25 s and traffic waiting");
    assert_eq!(n.nodes[0].ike.poll_timeout(), Some(t1), "armed for now");
    assert!(!note_out(&mut n, B), "armed once");
    let times = run_recording(&mut n, secs(1), |n| n.nodes[0].ike.counters().dpd_acks == 1);
    assert_eq!(times, [t1]);
    // The ACK arrives after one round trip (2 x 10 ms) and is proof of life.
    assert_eq!(n.now, t1 + Duration::from_millis(20));
    assert_eq!(n.nodes[1].ike.counters().dpd_answered, 1);
    let s = n.nodes[0].ike.dpd_status(v4(B)).unwrap();
    assert_eq!(s.last_proof_of_life, n.now);
    assert_eq!((s.unanswered, s.deadline), (0, None));
    assert_eq!((s.counters.sent, s.counters.acked), (1, 1));
    assert!(!note_out(&mut n, B), "alive again");
}

#[test]
fn dead_peer_at_interval_plus_retries_times_retry_then_backup_then_back() {
    let mut n = up(4, &[B, C], Some(ka()));
    assert_eq!(n.children(0)[0].peer.ip(), v4(B));
    let old = n.children(0)[0].clone();
    let conn = n.nodes[0].ike.isakmp_status().next().unwrap().conn_id;
    assert!(note_in(&mut n, B));
    let t0 = n.now; // the last proof of life
    n.black_holes.push(v4(B));
    n.run_for(INTERVAL);
    assert!(note_out(&mut n, B));
    let times = run_recording(&mut n, secs(60), has_peer_dead);
    let t1 = t0 + INTERVAL;
    let want: Vec<_> = (0..5).map(|k| t1 + Duration::from_secs(2 * k)).collect();
    assert_eq!(times, want, "5 R-U-THEREs, 2 s apart");
    // Dead at exactly interval + retries x retry after the last proof of life.
    assert_eq!(n.now, t0 + INTERVAL + Duration::from_secs(5 * 2));
    assert_eq!(ka().dead_after(), secs(10));
    let dead_at = n.now;
    let ev: Vec<_> = n.nodes[0]
        .events
        .iter()
        .skip_while(|e| !matches!(e, IkeEvent::PeerDead { .. }))
        .cloned()
        .collect();
    assert!(
        matches!(
            ev.as_slice(),
            [
                IkeEvent::PeerDead { peer, last_proof_of_life },
                IkeEvent::ChildSaDeleted { inbound_spi, reason: DeleteReason::DpdDead, .. },
                IkeEvent::Phase1Deleted { conn_id, reason: DeleteReason::DpdDead, .. },
                IkeEvent::PeerChanged { crypto_map: 10, from, to },
            ] if *peer == v4(B) && *last_proof_of_life == t0 && *inbound_spi == old.inbound.spi
                && *conn_id == conn && *from == v4(B) && *to == v4(C)
        ),
        "{ev:?}"
    );
    let c = n.nodes[0].ike.counters();
    assert_eq!((c.dpd_sent, c.dpd_timeouts, c.dpd_peers_dead), (5, 5, 1));
    assert_eq!(n.nodes[0].ike.dpd_status(v4(B)), None);
    assert_eq!(n.nodes[0].ike.ipsec_status().count(), 0);
    // The backup's Main Mode started at the same instant.
    let mm1 = n
        .log
        .iter()
        .find(|(_, f, t, _)| f.ip() == v4(A) && t.ip() == v4(C));
    assert_eq!(mm1.map(|l| l.0), Some(dead_at));
    assert!(n.run_until(secs(10), |n| n.children(0).len() == 2));
    let backup = n.children(0)[1].clone();
    assert_eq!(backup.peer.ip(), v4(C));
    assert!(backup.inbound.spi != old.inbound.spi);
    let st = n.nodes[0].ike.isakmp_status().next().unwrap();
    assert_eq!(st.remote.ip(), v4(C));
    assert_eq!(st.capabilities.to_string(), "D K");
    // Later C dies and B is back: the entry falls back to its first peer.
    n.black_holes = vec![v4(C)];
    n.run_for(secs(30));
    assert!(note_out(&mut n, C));
    assert!(n.run_until(
        secs(60),
        |n| n.count(0, |e| matches!(e, IkeEvent::PeerDead { .. })) == 2
    ));
    assert!(n.run_until(secs(10), |n| n.children(0).len() == 3));
    assert_eq!(n.children(0)[2].peer.ip(), v4(B));
    let changes: Vec<_> = n.nodes[0]
        .events
        .iter()
        .filter_map(|e| match e {
            IkeEvent::PeerChanged { from, to, .. } => Some((*from, *to)),
            _ => None,
        })
        .collect();
    assert_eq!(changes, [(v4(B), v4(C)), (v4(C), v4(B))]);
}

#[test]
fn periodic_keepalives_regardless_of_traffic_and_death() {
    let k = ka().periodic();
    let mut n = up(5, &[B], Some(k));
    let est = n.nodes[0].ike.dpd_status(v4(B)).unwrap();
    // The first keepalive is armed for phase 1 + 10 s (Quick Mode came just after).
    let first = est.deadline.expect("first keepalive armed");
    let te = Instant::from_millis(first.as_millis() - INTERVAL.as_millis());
    assert!(te <= est.last_proof_of_life && est.last_proof_of_life < first);
    // One minute with traffic both ways every second: keepalives every 10 s anyway.
    let end = te + secs(60) + Duration::from_millis(500);
    let mut times = Vec::new();
    while n.now < end {
        times.extend(run_recording(&mut n, Duration::from_millis(999), |_| false));
        note_in(&mut n, B);
        note_out(&mut n, B);
    }
    let want: Vec<_> = (1..=6).map(|k| te + Duration::from_secs(10 * k)).collect();
    assert_eq!(times, want);
    assert_eq!(n.nodes[1].ike.counters().dpd_answered, 6);
    assert_eq!(n.nodes[0].ike.counters().dpd_acks, 6);
    // The peer dies: the next keepalive is due at te + 70 s, dead 5 x 2 s later.
    n.black_holes.push(v4(B));
    let times = run_recording(&mut n, secs(60), has_peer_dead);
    let p = te + secs(70);
    let want: Vec<_> = (0..5).map(|k| p + Duration::from_secs(2 * k)).collect();
    assert_eq!(times, want);
    assert_eq!(n.now, p + k.dead_after());
    assert_eq!(
        n.count(0, |e| matches!(
            e,
            IkeEvent::ChildSaDeleted {
                reason: DeleteReason::DpdDead,
                ..
            }
        )),
        1
    );
    // Single peer: nothing is started by itself (the port re-initiates on traffic).
    assert_eq!(n.nodes[0].ike.isakmp_status().count(), 0);
}

#[test]
fn late_ack_with_wrong_sequence_number_is_ignored() {
    let mut n = up(6, &[B], Some(ka()));
    let stash: Seen = Rc::default();
    let s2 = stash.clone();
    // Every ACK from B is lost on the way; the first one is kept for later.
    n.tamper = Some(Box::new(move |from, to, data| {
        if info_from(B, from, data) {
            s2.borrow_mut().push((from, to, data.clone()));
            return false;
        }
        true
    }));
    note_in(&mut n, B);
    let t0 = n.now;
    n.run_for(INTERVAL);
    assert!(note_out(&mut n, B));
    let t1 = n.now;
    // Past the second R-U-THERE (t1 + 2 s): its sequence number is now outstanding.
    let times = run_recording(&mut n, Duration::from_millis(2500), |_| false);
    assert_eq!(times, [t1, t1 + RETRY]);
    assert_eq!(stash.borrow().len(), 2, "both ACKs dropped");
    // The ACK of the first R-U-THERE arrives late: counted, ignored.
    let (from, to, data) = stash.borrow()[0].clone();
    n.queue.push(Packet {
        at: n.now,
        seq: u64::MAX,
        from,
        to,
        data,
    });
    n.step();
    let c = n.nodes[0].ike.counters();
    assert_eq!(
        (c.dpd_unexpected_acks, c.dpd_acks, c.auth_failures),
        (1, 0, 0)
    );
    let s = n.nodes[0].ike.dpd_status(v4(B)).unwrap();
    assert_eq!(s.counters.unexpected_acks, 1);
    assert_eq!(s.unanswered, 2, "still probing");
    assert_eq!(s.last_proof_of_life, t0, "a stale ACK is no proof of life");
    run_recording(&mut n, secs(30), has_peer_dead);
    assert_eq!(n.now, t1 + ka().dead_after(), "dead on schedule");
}

#[test]
fn one_lost_r_u_there_recovers_by_retry() {
    let mut n = up(7, &[B], Some(ka()));
    let dropped = Rc::new(RefCell::new(0));
    let d2 = dropped.clone();
    n.tamper = Some(Box::new(move |from, _, data| {
        if info_from(A, from, data) && *d2.borrow() == 0 {
            *d2.borrow_mut() += 1;
            return false;
        }
        true
    }));
    note_in(&mut n, B);
    n.run_for(secs(15));
    assert!(note_out(&mut n, B));
    let t1 = n.now;
    let times = run_recording(&mut n, secs(30), |n| {
        n.nodes[0].ike.counters().dpd_acks == 1
    });
    assert_eq!(times, [t1, t1 + RETRY]);
    assert_eq!(n.now, t1 + RETRY + Duration::from_millis(20));
    n.run_for(secs(60));
    assert!(!has_peer_dead(&n));
    let s = n.nodes[0].ike.dpd_status(v4(B)).unwrap();
    assert_eq!(
        (s.counters.sent, s.counters.acked, s.counters.timed_out),
        (2, 1, 1)
    );
    assert_eq!((s.unanswered, s.deadline), (0, None));
    assert_eq!(n.nodes[1].ike.counters().dpd_answered, 1);
    assert_eq!(n.nodes[0].ike.ipsec_status().count(), 1, "tunnel intact");
}

/// B loses all its state (a fresh instance on the same address).
fn reboot(n: &mut Net, k: usize) {
    let cfg: IkeConfig = n.nodes[k].ike.config().clone();
    *n.nodes[k].ike = TestIke::new(cfg);
    n.nodes[k].events.clear();
}

#[test]
fn rebooted_peer_is_detected_and_the_tunnel_rebuilt_with_it() {
    let mut n = up(8, &[B], Some(ka()));
    note_in(&mut n, B);
    reboot(&mut n, 1);
    n.run_for(secs(12));
    assert!(note_out(&mut n, B));
    let t1 = n.now;
    let times = run_recording(&mut n, secs(30), has_peer_dead);
    assert_eq!(times.len(), 5);
    assert_eq!(n.now, t1 + secs(10));
    // The rebooted peer knew none of the cookies.
    assert!(
        n.nodes[1]
            .errors
            .iter()
            .filter(|e| **e == IkeError::UnknownSa)
            .count()
            >= 5
    );
    // The port sees NoSa for the next packet and initiates: same peer, new SAs.
    n.initiate(0, 10).unwrap();
    assert!(n.run_until(secs(10), |n| n.children(1).len() == 1));
    assert_eq!(n.children(0).len(), 2);
    assert_eq!(n.children(0)[1].peer.ip(), v4(B));
    let st = n.nodes[0].ike.isakmp_status().next().unwrap();
    assert_eq!(st.dpd.unwrap().counters.sent, 0, "fresh DPD state");
}

#[test]
fn rebooted_peer_with_a_backup_fails_over_by_itself() {
    let mut n = up(9, &[B, C], Some(ka()));
    note_in(&mut n, B);
    reboot(&mut n, 1);
    n.run_for(secs(12));
    assert!(note_out(&mut n, B));
    run_recording(&mut n, secs(30), has_peer_dead);
    assert!(n.run_until(secs(10), |n| n.children(2).len() == 1));
    assert_eq!(n.children(0).len(), 2);
    assert_eq!(n.children(0)[1].peer.ip(), v4(C));
}

#[test]
fn only_a_peer_that_announced_dpd_is_probed() {
    for force in [false, true] {
        let k = Keepalive {
            without_peer_vid: force,
            ..ka()
        };
        let mut n = net_with(10, &[B], Some(k));
        // B's DPD vendor ID is mangled on the way (VIDs are not authenticated).
        const DPD_VID: [u8; 16] = [
            0xaf, 0xca, 0xd7, 0x13, 0x68, 0xa1, 0xf1, 0xc9, 0x6b, 0x86, 0x96, 0xfc, 0x77, 0x57,
            0x01, 0x00,
        ];
        n.tamper = Some(Box::new(|from, _, data| {
            if from.ip() == v4(B) {
                if let Some(p) = data.windows(16).position(|w| w == DPD_VID) {
                    data[p + 15] ^= 0xff;
                }
            }
            true
        }));
        n.initiate(0, 10).unwrap();
        assert!(n.run_until(secs(10), |n| n.children(1).len() == 1));
        n.run_for(secs(30));
        let st = n.nodes[0].ike.isakmp_status().next().unwrap();
        assert!(!st.capabilities.dpd);
        assert_eq!(st.capabilities.keepalive, force);
        assert_eq!(note_out(&mut n, B), force);
        n.run_for(secs(1));
        assert_eq!(dpd_sent(&n), u64::from(force));
        // B answers R-U-THERE whatever it announced.
        assert_eq!(n.nodes[0].ike.counters().dpd_acks, u64::from(force));
    }
}

#[test]
fn status_and_keepalive_off() {
    // Keepalives off: the peer is tracked (last proof of life) but never probed, and a
    // peer's R-U-THERE is still answered.
    let mut n = up(11, &[B], None);
    let st = n.nodes[0].ike.isakmp_status().next().unwrap();
    assert_eq!(st.capabilities.to_string(), "D");
    let d = st.dpd.unwrap();
    assert!(d.peer_dpd && !d.probed);
    n.run_for(secs(100));
    assert!(!note_out(&mut n, B));
    let conn = n.nodes[1].ike.isakmp_status().next().unwrap().conn_id;
    let now = n.now;
    let node = &mut n.nodes[1];
    node.ike.dpd_probe(now, &mut node.rng, conn).unwrap();
    n.run_for(secs(1));
    assert_eq!(n.nodes[0].ike.counters().dpd_answered, 1);
    assert_eq!(n.nodes[1].ike.counters().dpd_acks, 1);
    // An R-U-THERE from the peer is proof of life for us.
    let d = n.nodes[0].ike.dpd_status(v4(B)).unwrap();
    assert_eq!(d.last_proof_of_life, now + Duration::from_millis(10));
    assert_eq!(Keepalive::new(secs(60), secs(3)).dead_after(), secs(15));
    assert_eq!(ka().mode, KeepaliveMode::OnDemand);
    // Unknown peers are not tracked.
    let x = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99));
    let now = n.now;
    assert!(!n.nodes[0].ike.note_inbound(now, x));
    assert!(!n.nodes[0].ike.note_outbound(now, x));
}
