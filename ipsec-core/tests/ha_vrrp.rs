//! VRRPv3 redundancy group: election, preemption with delay, interface tracking,
//! split brain, host-driven mode, and the advertisement on the wire, on a virtual clock
//! with exact expected times.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    missing_docs
)]

use std::net::Ipv4Addr;

use ipsec_core::ha::HaRole;
use ipsec_core::ha::vrrp::packet::{self, VrrpPacket, VrrpRepr};
use ipsec_core::ha::vrrp::{
    ChangeReason, Track, Vrrp, VrrpConfig, VrrpError, VrrpEvent, VrrpMode, VrrpState,
};
use ipsec_core::wire::ipv4::Ipv4Repr;
use ipsec_core::{Duration, Instant};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const OUTSIDE: u32 = 7;

fn node(addr: Ipv4Addr, prio: u8, preempt: bool) -> Vrrp {
    let mut c = VrrpConfig::new(1, addr, VIP);
    c.priority = prio;
    c.preempt = preempt;
    c.adver_interval = 100; // 1 s
    c.tracks
        .push(Track {
            interface: OUTSIDE,
            decrement: 20,
        })
        .unwrap();
    Vrrp::new(c).unwrap()
}

/// A LAN of VRRP nodes stepped 1 ms at a time; `linked` false partitions it.
struct Lan {
    nodes: Vec<Vrrp>,
    alive: Vec<bool>,
    linked: bool,
    now: Instant,
    log: Vec<(usize, VrrpEvent)>,
}

impl Lan {
    fn new(nodes: Vec<Vrrp>) -> Self {
        let n = nodes.len();
        Self {
            nodes,
            alive: vec![true; n],
            linked: true,
            now: Instant::ZERO,
            log: Vec::new(),
        }
    }

    fn start(&mut self, i: usize) {
        let now = self.now;
        self.nodes[i].startup(now);
    }

    fn run_until(&mut self, t: Instant) {
        let mut buf = [0u8; 64];
        while self.now <= t {
            let now = self.now;
            for i in 0..self.nodes.len() {
                if !self.alive[i] {
                    continue;
                }
                if self.nodes[i].poll_timeout().is_some_and(|d| d <= now) {
                    self.nodes[i].handle_timeout(now);
                }
                while let Some(tx) = self.nodes[i].poll_transmit(now, &mut buf) {
                    assert_eq!(
                        (tx.ttl, tx.protocol, tx.dst),
                        (255, 112, packet::MULTICAST_V4)
                    );
                    if !self.linked {
                        continue;
                    }
                    for j in 0..self.nodes.len() {
                        if j != i && self.alive[j] {
                            let _ = self.nodes[j].handle_advert(now, tx.src, &buf[..tx.len]);
                        }
                    }
                }
            }
            for i in 0..self.nodes.len() {
                while let Some(e) = self.nodes[i].poll_event() {
                    self.log.push((i, e));
                }
            }
            self.now = now + Duration::from_millis(1);
        }
    }

    fn state(&self, i: usize) -> VrrpState {
        self.nodes[i].state()
    }

    fn became_master_at(&self, i: usize) -> Vec<(u64, ChangeReason)> {
        self.log
            .iter()
            .filter_map(|(n, e)| match e {
                VrrpEvent::RoleChanged {
                    to: VrrpState::Master,
                    at,
                    reason,
                    ..
                } if *n == i => Some((at.as_millis(), *reason)),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn ha_election_the_higher_priority_wins_at_the_exact_time() {
    let mut lan = Lan::new(vec![node(A, 110, true), node(B, 100, true)]);
    lan.start(0);
    lan.start(1);
    lan.run_until(Instant::from_secs(10));
    // A's master-down interval: 3 s + (256 - 110) / 256 s = 3570 ms (rounded down).
    assert_eq!(
        lan.nodes[0].master_down_interval(),
        Duration::from_millis(3570)
    );
    assert_eq!(
        lan.became_master_at(0),
        vec![(3570, ChangeReason::MasterDown)]
    );
    assert_eq!(lan.state(1), VrrpState::Backup);
    assert_eq!(lan.nodes[1].master_ip(), Some(A));
    assert!(lan.became_master_at(1).is_empty());
    assert_eq!(lan.nodes[0].role(), HaRole::Active);
    assert_eq!(lan.nodes[1].role(), HaRole::Standby);
    // One advertisement per second since 3.57 s.
    assert_eq!(lan.nodes[0].counters().adverts_sent, 7);
}

#[test]
fn ha_master_failure_backup_takes_over_after_master_down_interval() {
    let mut lan = Lan::new(vec![node(A, 110, true), node(B, 100, true)]);
    lan.start(0);
    lan.start(1);
    lan.run_until(Instant::from_millis(5_000));
    // Last advert from A at 4570 ms; A dies at 5 s.
    lan.alive[0] = false;
    lan.run_until(Instant::from_secs(10));
    // B: master down = 3 s + 156/256 s = 3609 ms after A's last advert.
    assert_eq!(
        lan.became_master_at(1),
        vec![(4570 + 3609, ChangeReason::MasterDown)]
    );
}

#[test]
fn ha_resigning_master_hands_over_after_skew_time() {
    let mut lan = Lan::new(vec![node(A, 110, true), node(B, 100, true)]);
    lan.start(0);
    lan.start(1);
    lan.run_until(Instant::from_millis(5_000));
    lan.nodes[0].shutdown(Instant::from_millis(5_001));
    lan.now = Instant::from_millis(5_001);
    lan.run_until(Instant::from_secs(7));
    // Priority 0 received at 5001 ms: take over after Skew_Time = 609 ms.
    assert_eq!(
        lan.became_master_at(1),
        vec![(5_001 + 609, ChangeReason::MasterDown)]
    );
    assert_eq!(lan.state(0), VrrpState::Initialize);
}

#[test]
fn ha_preemption_waits_for_the_delay() {
    let mut cfg = node(A, 120, true).config().clone();
    cfg.preempt_delay = Duration::from_secs(10);
    let a = Vrrp::new(cfg).unwrap();
    let mut lan = Lan::new(vec![a, node(B, 100, true)]);
    // B alone becomes Master.
    lan.start(1);
    lan.run_until(Instant::from_secs(20));
    assert_eq!(
        lan.became_master_at(1),
        vec![(3609, ChangeReason::MasterDown)]
    );
    // A boots at 20 s with a higher priority and preemption delayed by 10 s.
    lan.start(0);
    lan.run_until(Instant::from_secs(40));
    // B's adverts at 20.609, 21.609, ... are lower: A preempts no sooner than 20.609 + 10 s.
    assert_eq!(
        lan.became_master_at(0),
        vec![(30_609, ChangeReason::MasterDown)]
    );
    assert_eq!(lan.state(1), VrrpState::Backup);
    assert!(lan.log.iter().any(|(n, e)| *n == 1
        && matches!(
            e,
            VrrpEvent::RoleChanged {
                to: VrrpState::Backup,
                reason: ChangeReason::BetterMaster,
                ..
            }
        )));

    // Without preemption, A would stay Backup forever.
    let mut lan = Lan::new(vec![node(A, 120, false), node(B, 100, true)]);
    lan.start(1);
    lan.run_until(Instant::from_secs(20));
    lan.start(0);
    lan.run_until(Instant::from_secs(60));
    assert_eq!(lan.state(0), VrrpState::Backup);
    assert_eq!(lan.state(1), VrrpState::Master);
}

#[test]
fn ha_tracked_interface_failure_moves_the_master() {
    let mut lan = Lan::new(vec![node(A, 110, true), node(B, 100, true)]);
    lan.start(0);
    lan.start(1);
    lan.run_until(Instant::from_secs(10));
    assert_eq!(lan.state(0), VrrpState::Master);
    // A's outside interface goes down: 110 - 20 = 90 < 100. A advertises 90 at once; B
    // (preempt) ignores the lower master and takes over when its master-down timer, last
    // reset by A's 9.57 s advert, runs out: 9570 + 3609 ms.
    lan.nodes[0].set_interface(Instant::from_millis(10_001), OUTSIDE, false);
    assert_eq!(lan.nodes[0].priority(), 90);
    lan.run_until(Instant::from_secs(20));
    assert_eq!(
        lan.became_master_at(1),
        vec![(9_570 + 3_609, ChangeReason::MasterDown)]
    );
    assert_eq!(lan.state(0), VrrpState::Backup);
    // The interface comes back: A (110, preempt) takes the role back.
    lan.nodes[0].set_interface(lan.now, OUTSIDE, true);
    lan.run_until(Instant::from_secs(30));
    assert_eq!(lan.state(0), VrrpState::Master);
    assert_eq!(lan.state(1), VrrpState::Backup);
}

#[test]
fn ha_split_brain_heals_by_rfc_5798_rule() {
    // Rule (RFC 5798 §6.4.3): a Master hearing an advertisement with a higher priority, or
    // an equal priority from a higher primary address, becomes Backup at once; otherwise it
    // ignores it and its own next advertisement demotes the other.
    for (pa, pb, winner) in [
        (110u8, 100u8, 0usize),
        (100, 110, 1),
        (100, 100, 1 /* B = .2 > .1 */),
    ] {
        let mut lan = Lan::new(vec![node(A, pa, false), node(B, pb, false)]);
        lan.start(0);
        lan.start(1);
        lan.run_until(Instant::from_secs(5));
        lan.linked = false; // partition
        lan.run_until(Instant::from_secs(15));
        assert_eq!(lan.state(0), VrrpState::Master, "split brain ({pa}, {pb})");
        assert_eq!(lan.state(1), VrrpState::Master, "split brain ({pa}, {pb})");
        lan.linked = true; // heal
        lan.run_until(Instant::from_secs(18));
        assert_eq!(lan.state(winner), VrrpState::Master, "({pa}, {pb})");
        assert_eq!(lan.state(1 - winner), VrrpState::Backup, "({pa}, {pb})");
        // The loser stepped down because of a better master (not a timer), and stays down.
        assert!(lan.log.iter().any(|(n, e)| *n == 1 - winner
            && matches!(
                e,
                VrrpEvent::RoleChanged {
                    to: VrrpState::Backup,
                    reason: ChangeReason::BetterMaster,
                    ..
                }
            )));
        lan.run_until(Instant::from_secs(30));
        assert_eq!(lan.state(winner), VrrpState::Master);
    }
}

#[test]
fn ha_host_driven_mode() {
    let mut c = VrrpConfig::new(3, A, VIP);
    c.mode = VrrpMode::HostDriven;
    let mut v = Vrrp::new(c).unwrap();
    v.startup(Instant::ZERO);
    assert_eq!(v.state(), VrrpState::Backup);
    assert_eq!(v.poll_timeout(), None);
    v.set_role(Instant::from_secs(1), HaRole::Active).unwrap();
    assert_eq!(v.role(), HaRole::Active);
    let mut buf = [0u8; 64];
    assert!(v.poll_transmit(Instant::from_secs(1), &mut buf).is_none());
    let evs: Vec<_> = std::iter::from_fn(|| v.poll_event()).collect();
    assert_eq!(evs.len(), 2);
    assert!(matches!(
        evs[1],
        VrrpEvent::RoleChanged {
            to: VrrpState::Master,
            reason: ChangeReason::Host,
            ..
        }
    ));
    let mut p = node(B, 100, true);
    assert_eq!(
        p.set_role(Instant::ZERO, HaRole::Active),
        Err(VrrpError::Ignored)
    );
}

#[test]
fn ha_advertisement_wire_round_trip_in_an_ipv4_packet() {
    let mut a = node(A, 255, true); // the address owner: Master at once
    a.startup(Instant::ZERO);
    assert_eq!(a.state(), VrrpState::Master);
    let mut buf = [0u8; 64];
    let tx = a.poll_transmit(Instant::ZERO, &mut buf).unwrap();
    assert_eq!(
        &buf[..tx.len],
        &[0x31, 1, 255, 1, 0x00, 100, buf[6], buf[7], 192, 0, 2, 100]
    );
    let p = VrrpPacket::new_checked(&buf[..tx.len]).unwrap();
    assert!(p.verify_checksum(A, packet::MULTICAST_V4));
    let repr = VrrpRepr::parse(&p, A, packet::MULTICAST_V4).unwrap();
    assert_eq!(
        (repr.vrid, repr.priority, repr.max_adver_int),
        (1, 255, 100)
    );
    assert_eq!(repr.addresses.as_slice(), &[VIP]);

    // Carried in IPv4 to B.
    let ip = |ttl: u8, body: &[u8]| {
        let r = Ipv4Repr {
            src: A,
            dst: packet::MULTICAST_V4,
            protocol: packet::PROTOCOL,
            payload_len: body.len(),
            ttl,
            tos: 0xc0,
            ident: 0,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
        };
        let mut v = vec![0u8; r.buffer_len()];
        r.emit(&mut v).unwrap();
        v[20..].copy_from_slice(body);
        v
    };
    let mut b = node(B, 100, true);
    b.startup(Instant::ZERO);
    assert_eq!(
        b.handle_ip_packet(Instant::from_millis(5), &ip(255, &buf[..tx.len])),
        Ok(())
    );
    assert_eq!(b.master_ip(), Some(A));
    // TTL other than 255 (it crossed a router): refused.
    assert_eq!(
        b.handle_ip_packet(Instant::from_millis(6), &ip(254, &buf[..tx.len])),
        Err(VrrpError::NotVrrp)
    );
    // A corrupted checksum: refused and counted.
    let mut bad = buf[..tx.len].to_vec();
    bad[6] ^= 1;
    assert!(matches!(
        b.handle_ip_packet(Instant::from_millis(7), &ip(255, &bad)),
        Err(VrrpError::Wire(_))
    ));
    assert_eq!(b.counters().bad_packets, 2);
    // Another VRID is not ours.
    let other = VrrpRepr { vrid: 9, ..repr };
    let mut ob = [0u8; 64];
    let n = other.emit(&mut ob, A, packet::MULTICAST_V4).unwrap();
    assert_eq!(
        b.handle_advert(Instant::from_millis(8), A, &ob[..n]),
        Err(VrrpError::OtherVrid)
    );
}
