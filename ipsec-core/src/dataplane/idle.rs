//! SA idle timeout (`crypto ipsec security-association idle-time 120`).
//!
//! # What is idle
//!
//! SAs come in pairs: the inbound and the outbound SA negotiated together by one Quick
//! Mode exchange, for one crypto-map entry and one peer. [`Dataplane::install_pair`]
//! installs such a pair (or [`Dataplane::pair`] links two installed SAs). A pair is idle
//! when *neither* SA sealed or opened a packet for the idle time: traffic in either
//! direction keeps both alive, so a one-way flow (a syslog stream, say) does not lose the
//! reverse SA its peer will need. An SA installed alone is its own pair. When a pair
//! goes idle, both SAs are removed and each raises [`SaEvent::IdleExpired`], the cue for
//! the control plane to send a DELETE for both SPIs.
//!
//! The idle time is [`Dataplane::set_idle_time`] (global) or
//! [`Dataplane::set_pair_idle_time`] (one pair). `None`, the default, means "the SA
//! lifetime": no idle timer is armed at all, and the hard lifetime deletes the SA.
//!
//! # Cost
//!
//! Deadlines, not polling, and nothing at all per packet: an SA already records when it
//! last carried traffic. Each SA has one entry in a min-heap at "last activity of the
//! pair + idle time", computed when the entry is pushed. When it pops, the pair's
//! activity is read again: if there was traffic since, the entry is pushed back at the
//! new deadline (lazy re-arming); otherwise the pair is deleted. So an idle SA costs one
//! O(log n) wakeup per idle period, and a busy one at most one per idle period as well,
//! however many packets it carries. 10 000 idle SAs are 10 000 heap entries and one
//! timer for the port, not 10 000 periodic wakeups (see `benches/timers.rs`).

use heapless::binary_heap::{BinaryHeap, Min};

use super::{Dataplane, DataplaneError, DataplaneEvent};
use crate::esp::{Direction, EspSa, SaEvent};
use crate::sadb::SaHandle;
use crate::time::{Duration, Instant};
use hal_traits::CryptoProvider;

/// Per-SA idle state, indexed by the SADB slot (validated by the handle it stores).
#[derive(Clone, Copy, Debug)]
struct Slot {
    sa: Option<SaHandle>,
    partner: Option<SaHandle>,
    idle: Option<Duration>,
    /// Set by [`Dataplane::set_pair_idle_time`]: the global default no longer applies.
    pinned: bool,
}

impl Slot {
    const EMPTY: Self = Self {
        sa: None,
        partner: None,
        idle: None,
        pinned: false,
    };
}

type Heap<const N: usize> = BinaryHeap<(Instant, SaHandle), Min, N>;

/// The idle state of every SA, and one deadline heap per direction.
pub(super) struct IdleTimers<const SAS: usize> {
    default: Option<Duration>,
    slots_in: [Slot; SAS],
    slots_out: [Slot; SAS],
    heap_in: Heap<SAS>,
    heap_out: Heap<SAS>,
}

impl<const SAS: usize> IdleTimers<SAS> {
    pub(super) const fn new() -> Self {
        Self {
            default: None,
            slots_in: [Slot::EMPTY; SAS],
            slots_out: [Slot::EMPTY; SAS],
            heap_in: BinaryHeap::new(),
            heap_out: BinaryHeap::new(),
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let a = self.heap_in.peek().map(|(t, _)| *t);
        let b = self.heap_out.peek().map(|(t, _)| *t);
        a.into_iter().chain(b).min()
    }

    fn slot(&self, h: SaHandle, inbound: bool) -> Option<&Slot> {
        let slots = if inbound {
            &self.slots_in
        } else {
            &self.slots_out
        };
        slots
            .get(usize::try_from(h.index()).ok()?)
            .filter(|s| s.sa == Some(h))
    }

    fn slot_mut(&mut self, h: SaHandle, inbound: bool) -> Option<&mut Slot> {
        let slots = if inbound {
            &mut self.slots_in
        } else {
            &mut self.slots_out
        };
        slots
            .get_mut(usize::try_from(h.index()).ok()?)
            .filter(|s| s.sa == Some(h))
    }
}

const fn dir(inbound: bool) -> Direction {
    if inbound {
        Direction::Inbound
    } else {
        Direction::Outbound
    }
}

impl<
    P: CryptoProvider,
    const SAS: usize,
    const POLICIES: usize,
    const W: usize,
    const FRAGS: usize,
    const FRAG_SIZE: usize,
    const FLOWS: usize,
> Dataplane<P, SAS, POLICIES, W, FRAGS, FRAG_SIZE, FLOWS>
{
    /// Sets the idle time of every SA pair that has no idle time of its own
    /// (`crypto ipsec security-association idle-time`), installed or to come. `None`, the
    /// default, leaves SAs to their lifetime. Costs O(n log n) once, for the re-arming.
    pub fn set_idle_time(&mut self, idle: Option<Duration>) {
        self.idle.default = idle;
        for s in self
            .idle
            .slots_in
            .iter_mut()
            .chain(self.idle.slots_out.iter_mut())
        {
            if !s.pinned {
                s.idle = idle;
            }
        }
        self.rebuild_idle(true);
        self.rebuild_idle(false);
    }

    /// The global idle time.
    #[must_use]
    pub const fn idle_time(&self) -> Option<Duration> {
        self.idle.default
    }

    /// Sets the idle time of one pair (the SA `h` of `direction` and its partner), as a
    /// crypto-map entry's `set security-association idle-time` does. Returns `false` if
    /// the SA is not installed.
    pub fn set_pair_idle_time(
        &mut self,
        direction: Direction,
        h: SaHandle,
        idle: Option<Duration>,
    ) -> bool {
        let inbound = direction == Direction::Inbound;
        let Some(s) = self.idle.slot_mut(h, inbound) else {
            return false;
        };
        s.idle = idle;
        s.pinned = true;
        let partner = s.partner;
        if let Some(p) = partner {
            if let Some(ps) = self.idle.slot_mut(p, !inbound) {
                ps.idle = idle;
                ps.pinned = true;
            }
            self.arm_idle(p, !inbound);
        }
        self.arm_idle(h, inbound);
        true
    }

    /// Installs the inbound and outbound SA of one negotiation as a pair (see the
    /// [idle module](self)), binding crypto-map entry `sa_group` to the outbound one.
    ///
    /// # Errors
    /// As [`Dataplane::install_inbound`] and [`Dataplane::install_outbound`]; on error
    /// neither SA stays installed.
    pub fn install_pair(
        &mut self,
        sa_group: u32,
        inbound: EspSa<P, W>,
        outbound: EspSa<P, W>,
    ) -> Result<(SaHandle, SaHandle), DataplaneError> {
        let hi = self.install_inbound(inbound)?;
        let ho = match self.install_outbound(sa_group, outbound) {
            Ok(h) => h,
            Err(e) => {
                self.remove_inbound(hi);
                return Err(e);
            }
        };
        self.pair(hi, ho);
        Ok((hi, ho))
    }

    /// Links an installed inbound SA and outbound SA as a pair for the idle timeout.
    /// Returns `false` if either is not installed.
    pub fn pair(&mut self, inbound: SaHandle, outbound: SaHandle) -> bool {
        if !self.inbound.contains(inbound) || !self.outbound.contains(outbound) {
            return false;
        }
        if let Some(s) = self.idle.slot_mut(inbound, true) {
            s.partner = Some(outbound);
        }
        if let Some(s) = self.idle.slot_mut(outbound, false) {
            s.partner = Some(inbound);
        }
        true
    }

    /// The other SA of `h`'s pair, if it has one and it is still installed.
    #[must_use]
    pub fn partner_of(&self, direction: Direction, h: SaHandle) -> Option<SaHandle> {
        let inbound = direction == Direction::Inbound;
        let p = self.idle.slot(h, inbound)?.partner?;
        let alive = if inbound {
            self.outbound.contains(p)
        } else {
            self.inbound.contains(p)
        };
        alive.then_some(p)
    }

    /// When `h`'s pair will be deleted for idleness if no traffic flows until then, or
    /// `None` if no idle time applies.
    #[must_use]
    pub fn idle_deadline(&self, direction: Direction, h: SaHandle) -> Option<Instant> {
        let inbound = direction == Direction::Inbound;
        let idle = self.idle.slot(h, inbound)?.idle?;
        Some(self.pair_activity(h, inbound)? + idle)
    }

    /// A newly installed SA: fresh slot, the global idle time, one heap entry.
    pub(super) fn idle_track(&mut self, h: SaHandle, inbound: bool) {
        let default = self.idle.default;
        let slots = if inbound {
            &mut self.idle.slots_in
        } else {
            &mut self.idle.slots_out
        };
        let Some(s) = usize::try_from(h.index())
            .ok()
            .and_then(|i| slots.get_mut(i))
        else {
            return;
        };
        *s = Slot {
            sa: Some(h),
            idle: default,
            ..Slot::EMPTY
        };
        self.arm_idle(h, inbound);
    }

    /// The latest use of `h` or its partner.
    fn pair_activity(&self, h: SaHandle, inbound: bool) -> Option<Instant> {
        let (table, other) = if inbound {
            (&self.inbound, &self.outbound)
        } else {
            (&self.outbound, &self.inbound)
        };
        let mine = table.get(h)?.last_used();
        let theirs = self
            .idle
            .slot(h, inbound)
            .and_then(|s| s.partner)
            .and_then(|p| other.get(p))
            .map(EspSa::last_used);
        Some(theirs.map_or(mine, |t| t.max(mine)))
    }

    fn arm_idle(&mut self, h: SaHandle, inbound: bool) {
        let Some(idle) = self.idle.slot(h, inbound).and_then(|s| s.idle) else {
            return;
        };
        let Some(at) = self.pair_activity(h, inbound) else {
            return;
        };
        let heap = if inbound {
            &mut self.idle.heap_in
        } else {
            &mut self.idle.heap_out
        };
        if heap.push((at + idle, h)).is_err() {
            // Full of stale entries (removed SAs): rebuild from the live ones, which fit.
            self.rebuild_idle(inbound);
        }
    }

    fn rebuild_idle(&mut self, inbound: bool) {
        let mut heap = Heap::<SAS>::new();
        let table = if inbound {
            &self.inbound
        } else {
            &self.outbound
        };
        for (h, _) in table.iter() {
            let idle = self.idle.slot(h, inbound).and_then(|s| s.idle);
            if let (Some(idle), Some(at)) = (idle, self.pair_activity(h, inbound)) {
                let _ = heap.push((at + idle, h));
            }
        }
        if inbound {
            self.idle.heap_in = heap;
        } else {
            self.idle.heap_out = heap;
        }
    }

    pub(super) fn fire_idle(&mut self, now: Instant) {
        for inbound in [true, false] {
            loop {
                let heap = if inbound {
                    &mut self.idle.heap_in
                } else {
                    &mut self.idle.heap_out
                };
                let Some(&(t, h)) = heap.peek() else { break };
                if t > now {
                    break;
                }
                // Deleting a pair raises two events; wait for the queue to drain rather
                // than drop DELETE cues (the entry stays due, so poll_timeout says so).
                if self.events.capacity() - self.events.len() < 2 {
                    return;
                }
                let _ = heap.pop();
                let Some(idle) = self.idle.slot(h, inbound).and_then(|s| s.idle) else {
                    continue; // removed since, or idle timeout switched off
                };
                let Some(at) = self.pair_activity(h, inbound) else {
                    continue;
                };
                let deadline = at + idle;
                if deadline > now {
                    // Used since the entry was pushed: lazy re-arm.
                    let heap = if inbound {
                        &mut self.idle.heap_in
                    } else {
                        &mut self.idle.heap_out
                    };
                    if heap.push((deadline, h)).is_err() {
                        self.rebuild_idle(inbound);
                    }
                } else {
                    self.expire_idle(h, inbound);
                }
            }
        }
    }

    fn expire_idle(&mut self, h: SaHandle, inbound: bool) {
        let partner = self.idle.slot(h, inbound).and_then(|s| s.partner);
        self.remove_idle_sa(h, inbound);
        if let Some(p) = partner {
            self.remove_idle_sa(p, !inbound);
        }
    }

    fn remove_idle_sa(&mut self, h: SaHandle, inbound: bool) {
        let removed = if inbound {
            self.remove_inbound(h)
        } else {
            self.remove_outbound(h)
        };
        if let Some(s) = self.idle.slot_mut(h, inbound) {
            *s = Slot::EMPTY;
        }
        if let Some(sa) = removed {
            if self.events.is_full() {
                let _ = self.events.pop_front();
            }
            let _ = self.events.push_back(DataplaneEvent {
                sa: h,
                direction: dir(inbound),
                event: SaEvent::IdleExpired { spi: sa.spi() },
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use core::net::{IpAddr, Ipv4Addr};

    use hal_traits::{CipherAlg, CryptoError, MacAlg, SecureRng};
    use ipsec_soft_crypto::SoftCrypto;

    use super::*;
    use crate::dataplane::{Inbound, Outbound};
    use crate::esp::{Encryption, EspConfig, Transform};
    use crate::lifetime::LifetimeConfig;
    use crate::spd::{AddrRange, Policy, PolicyAction, Selector};
    use crate::wire::ipv4::Ipv4Repr;
    use crate::wire::proto;

    type Dp = Dataplane<SoftCrypto, 8, 4>;

    struct Rng;
    impl SecureRng for Rng {
        fn fill_bytes(&mut self, d: &mut [u8]) -> Result<(), CryptoError> {
            d.fill(7);
            Ok(())
        }
    }

    const T: Transform = Transform {
        enc: Encryption::Cbc(CipherAlg::Aes128Cbc),
        auth: Some(MacAlg::HmacSha1_96),
    };
    const A: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
    const B: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

    fn sel(a_side: bool) -> Selector {
        let l = AddrRange::from_prefix(IpAddr::V4(Ipv4Addr::new(10, 0, 68, 0)), 24).unwrap();
        let r = AddrRange::from_prefix(IpAddr::V4(Ipv4Addr::new(10, 1, 1, 0)), 24).unwrap();
        if a_side {
            Selector::new(l, r).unwrap()
        } else {
            Selector::new(r, l).unwrap()
        }
    }

    fn sa(spi: u32, dir: Direction, local: Ipv4Addr, remote: Ipv4Addr) -> EspSa<SoftCrypto> {
        let mut c = EspConfig::tunnel(spi, dir, T, IpAddr::V4(local), IpAddr::V4(remote));
        c.lifetime = LifetimeConfig::UNLIMITED;
        EspSa::new(c, &[7; 16], &[9; 20], Instant::ZERO).unwrap()
    }

    /// Gateway A and B with one pair each way, installed at t = 0, idle time 120 s.
    fn pair_of_gateways() -> (Dp, Dp) {
        let mut a = Dp::new(PolicyAction::Bypass);
        let mut b = Dp::new(PolicyAction::Bypass);
        for (dp, side) in [(&mut a, true), (&mut b, false)] {
            dp.spd_mut()
                .insert(Policy {
                    seq: 10,
                    selector: sel(side),
                    action: PolicyAction::Protect { sa_group: 10 },
                })
                .unwrap();
            dp.set_idle_time(Some(Duration::from_secs(120)));
        }
        a.install_pair(
            10,
            sa(0x2222, Direction::Inbound, A, B),
            sa(0x1111, Direction::Outbound, A, B),
        )
        .unwrap();
        b.install_pair(
            10,
            sa(0x1111, Direction::Inbound, B, A),
            sa(0x2222, Direction::Outbound, B, A),
        )
        .unwrap();
        (a, b)
    }

    fn ping(src: [u8; 4], dst: [u8; 4]) -> std::vec::Vec<u8> {
        extern crate std;
        let r = Ipv4Repr {
            src: Ipv4Addr::from(src),
            dst: Ipv4Addr::from(dst),
            protocol: proto::ICMP,
            payload_len: 8,
            ttl: 64,
            tos: 0,
            ident: 1,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
        };
        let mut v = std::vec![0u8; 28];
        r.emit(&mut v).unwrap();
        v[20] = 8;
        v
    }
    extern crate std;

    /// A sends to B at `t`: A's outbound and B's inbound SA are used.
    fn a_to_b(a: &mut Dp, b: &mut Dp, t: Instant) {
        let mut out = [0u8; 256];
        let Ok(Outbound::Protected { len, .. }) =
            a.process_outbound(t, &ping([10, 0, 68, 5], [10, 1, 1, 7]), &mut Rng, &mut out)
        else {
            panic!()
        };
        assert!(matches!(
            b.process_inbound(t, &mut out[..len]),
            Ok(Inbound::Decapsulated { .. })
        ));
    }

    fn b_to_a(a: &mut Dp, b: &mut Dp, t: Instant) {
        let mut out = [0u8; 256];
        let Ok(Outbound::Protected { len, .. }) =
            b.process_outbound(t, &ping([10, 1, 1, 7], [10, 0, 68, 5]), &mut Rng, &mut out)
        else {
            panic!()
        };
        assert!(matches!(
            a.process_inbound(t, &mut out[..len]),
            Ok(Inbound::Decapsulated { .. })
        ));
    }

    /// Runs `dp`'s timers up to `until`, returning the instants at which events came out.
    fn run(dp: &mut Dp, until: Instant) -> std::vec::Vec<(Instant, DataplaneEvent)> {
        let mut seen = std::vec::Vec::new();
        while let Some(t) = dp.poll_timeout() {
            if t > until {
                break;
            }
            dp.handle_timeout(t);
            while let Some(e) = dp.poll_event() {
                seen.push((t, e));
            }
        }
        seen
    }

    #[test]
    fn idle_pair_is_deleted_at_the_exact_time() {
        let (mut a, _) = pair_of_gateways();
        assert_eq!(a.poll_timeout(), Some(Instant::from_secs(120)));
        assert!(run(&mut a, Instant::from_millis(119_999)).is_empty());
        let ev = run(&mut a, Instant::from_secs(1000));
        assert_eq!(ev.len(), 2);
        assert!(ev.iter().all(|(t, _)| *t == Instant::from_secs(120)));
        let spis: std::vec::Vec<_> = ev
            .iter()
            .map(|(_, e)| match e.event {
                SaEvent::IdleExpired { spi } => (e.direction, spi),
                _ => panic!(),
            })
            .collect();
        assert!(spis.contains(&(Direction::Inbound, 0x2222)));
        assert!(spis.contains(&(Direction::Outbound, 0x1111)));
        assert_eq!(a.inbound_sas().count() + a.outbound_sas().count(), 0);
        assert_eq!(a.outbound_for(10), None);
        assert_eq!(a.poll_timeout(), None);
    }

    #[test]
    fn traffic_in_either_direction_resets_the_timer() {
        let (mut a, mut b) = pair_of_gateways();
        // Outbound traffic from A at 50 s (A's outbound SA).
        assert!(run(&mut a, Instant::from_secs(50)).is_empty());
        a_to_b(&mut a, &mut b, Instant::from_secs(50));
        // At 120 s the entry pops, sees activity at 50, re-arms at 170.
        assert!(run(&mut a, Instant::from_secs(150)).is_empty());
        assert_eq!(a.poll_timeout(), Some(Instant::from_secs(170)));
        // Inbound traffic at A (B -> A) at 160 s: the pair lives until 280 s.
        b_to_a(&mut a, &mut b, Instant::from_secs(160));
        let (hi, _) = a.inbound_sas().next().unwrap();
        let ho = a.outbound_for(10).unwrap();
        assert_eq!(
            a.idle_deadline(Direction::Outbound, ho),
            Some(Instant::from_secs(280))
        );
        assert_eq!(a.partner_of(Direction::Inbound, hi), Some(ho));
        assert!(run(&mut a, Instant::from_millis(279_999)).is_empty());
        let ev = run(&mut a, Instant::from_secs(300));
        assert_eq!(ev.len(), 2);
        assert!(ev.iter().all(|(t, _)| *t == Instant::from_secs(280)));
        // B saw its inbound used at 50 and its outbound at 160: also deleted at 280.
        let ev = run(&mut b, Instant::from_secs(300));
        assert_eq!(ev.len(), 2);
        assert!(ev.iter().all(|(t, _)| *t == Instant::from_secs(280)));
    }

    #[test]
    fn wakeups_are_one_per_idle_period_however_busy() {
        let (mut a, mut b) = pair_of_gateways();
        let mut wakeups = 0;
        // A packet every second for 1000 s: the pair stays, with ~2 wakeups per 120 s.
        for s in 1..=1000u64 {
            let now = Instant::from_secs(s);
            while a.poll_timeout().is_some_and(|t| t <= now) {
                a.handle_timeout(now);
                wakeups += 1;
            }
            a_to_b(&mut a, &mut b, now);
        }
        assert_eq!(a.poll_event(), None);
        // Two SAs, each popping about once per 120 s: 1000 / 120 = 8 periods.
        assert!(wakeups <= 2 * 9, "{wakeups}");
    }

    #[test]
    fn default_none_and_per_pair_override() {
        let (mut a, _) = pair_of_gateways();
        a.set_idle_time(None);
        assert_eq!(a.poll_timeout(), None);
        let ho = a.outbound_for(10).unwrap();
        assert!(a.set_pair_idle_time(Direction::Outbound, ho, Some(Duration::from_secs(10))));
        assert_eq!(a.poll_timeout(), Some(Instant::from_secs(10)));
        // The global setting no longer touches a pinned pair.
        a.set_idle_time(Some(Duration::from_secs(500)));
        let ev = run(&mut a, Instant::from_secs(20));
        assert_eq!(ev.len(), 2);
        // An unpaired SA is its own pair.
        let h = a
            .install_inbound(sa(0x3333, Direction::Inbound, A, B))
            .unwrap();
        assert_eq!(a.partner_of(Direction::Inbound, h), None);
        assert_eq!(
            a.idle_deadline(Direction::Inbound, h),
            Some(Instant::from_secs(500))
        );
    }

    #[test]
    fn a_full_event_queue_delays_instead_of_dropping() {
        let mut a = Dataplane::<SoftCrypto, 16, 16>::new(PolicyAction::Bypass);
        a.set_idle_time(Some(Duration::from_secs(1)));
        for i in 0..16u32 {
            a.install_inbound(sa(0x100 + i, Direction::Inbound, A, B))
                .unwrap();
            a.install_outbound(i, sa(0x200 + i, Direction::Outbound, A, B))
                .unwrap();
        }
        // 32 unpaired SAs expire at once; the queue holds 16 events.
        let (mut events, mut rounds) = (0, 0);
        while let Some(t) = a.poll_timeout() {
            assert_eq!(t, Instant::from_secs(1));
            a.handle_timeout(Instant::from_secs(5));
            rounds += 1;
            while let Some(e) = a.poll_event() {
                assert!(matches!(e.event, SaEvent::IdleExpired { .. }));
                events += 1;
            }
        }
        assert_eq!((events, rounds), (32, 3));
    }
}
