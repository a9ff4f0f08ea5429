//! The outbound flow cache: the SPD decision and the outbound SA of recently seen flows,
//! so that a packet of a known flow costs O(1) whatever the number of policies.
//!
//! The SPD is an ordered first-match list (ACL semantics, see [`crate::spd`]), so finding
//! the policy of a packet scans the policies. The decision is a pure function of the
//! packet's [`Flow`] (addresses, protocol, ports, whether the ports are known) and of
//! the SPD, and the SA is a function of the decision and of the group-to-SA bindings. So
//! the cache is keyed by the whole `Flow`, compared exactly (a hash collision can never
//! pick another flow's policy), and each entry carries two generation numbers:
//!
//! * the **SPD generation**, bumped by every mutable access to the SPD
//!   ([`Dataplane::spd_mut`](super::Dataplane::spd_mut): insert, remove, clear, default
//!   action). An entry from an older SPD generation is a miss: the SPD is scanned again.
//! * the **SA generation**, bumped by every change to the outbound SAs or their bindings
//!   ([`Dataplane::install_outbound`](super::Dataplane::install_outbound) — which is also
//!   how a rekey replaces an SA — and
//!   [`Dataplane::remove_outbound`](super::Dataplane::remove_outbound), which the idle
//!   timeout also goes through). An entry whose policy is current but whose SA generation
//!   is old keeps its decision and only looks its SA up again, in O(1); so a rekey does
//!   not send every flow back to the linear scan.
//!
//! Inbound SAs play no part in the outbound decision and leave the cache alone.
//!
//! The first packet of a new flow still scans the SPD: the cache removes the scan from
//! every packet after the first, as any per-flow cache in front of an ordered policy list
//! does (Linux's xfrm worked this way until its flow cache was removed in 4.14; it now
//! hashes policies into bins by address prefix instead).
//!
//! # Layout and cost
//!
//! `N` entries of [`ENTRY_BYTES`] bytes in `N / 2` sets of two ways (two-way
//! set-associative, LRU within a set: a miss evicts the older way). `N` must be even; 0
//! turns the cache off. The set is chosen by a keyed multilinear hash of the flow
//! (strongly universal over the 64-bit key words, Lemire and Kaser 2014), with keys drawn
//! from the caller's [`SecureRng`] on the first outbound packet, so that the hosts behind
//! us cannot pick flows that land in the same set on purpose and evict one another's
//! entries (cache-thrashing DoS). If the RNG fails, the packet takes the uncached path and
//! the next packet tries again.
//!
//! Generations are `u32` and start at 1; 0 marks an empty or stale entry. When a counter
//! would wrap, every entry is marked stale, so no entry from 2^32 changes ago can ever be
//! taken for a current one.

use core::net::{IpAddr, Ipv4Addr};

use hal_traits::SecureRng;

use crate::sadb::SaHandle;
use crate::spd::{Flow, PolicyAction};

/// Words of the hash input: source and destination (4 each), protocol and flags, ports.
const WORDS: usize = 10;
/// One key word per input word, plus the additive constant.
const KEYS: usize = WORDS + 1;

/// The size of one cache entry in bytes (on 32- and 64-bit targets alike): a
/// `Dataplane` with a cache of `N` entries holds `N * ENTRY_BYTES + 104` bytes for it.
pub const ENTRY_BYTES: usize = core::mem::size_of::<Entry>();

/// What the SPD decided for a flow, and the SA that carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Decision {
    /// The action of the first matching policy, or the default action.
    pub action: PolicyAction,
    /// For [`PolicyAction::Protect`]: the outbound SA bound to its group, if any.
    pub sa: Option<SaHandle>,
}

/// The result of [`FlowCache::probe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Probe {
    /// Decision and SA are both current.
    Hit(Decision),
    /// The decision is current but the outbound SAs changed since: look the SA of
    /// `sa_group` up and store it with [`FlowCache::set_sa`] at `slot`.
    Rebind {
        /// The entry.
        slot: usize,
        /// The group of its protect policy.
        sa_group: u32,
    },
    /// Not cached, or cached under an older SPD: decide, then [`FlowCache::insert`] at
    /// `set`.
    Miss {
        /// The set the flow hashes to.
        set: usize,
    },
    /// The cache is off (no entries) or not keyed yet.
    Off,
}

/// Entry kinds, so that the action and the SA fit with the flow in 64 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Bypass,
    Discard,
    Protect,
    /// Protect, no SA bound to the group yet.
    ProtectNoSa,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    flow: Flow,
    sa: SaHandle,
    sa_group: u32,
    /// 0: empty or stale.
    spd_gen: u32,
    sa_gen: u32,
    kind: Kind,
}

const EMPTY_FLOW: Flow = Flow {
    src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    protocol: 0,
    src_port: 0,
    dst_port: 0,
    ports_known: false,
};

impl Entry {
    const EMPTY: Self = Self {
        flow: EMPTY_FLOW,
        sa: SaHandle::NONE,
        sa_group: 0,
        spd_gen: 0,
        sa_gen: 0,
        kind: Kind::Bypass,
    };

    fn decision(&self) -> Decision {
        match self.kind {
            Kind::Bypass => Decision {
                action: PolicyAction::Bypass,
                sa: None,
            },
            Kind::Discard => Decision {
                action: PolicyAction::Discard,
                sa: None,
            },
            Kind::Protect | Kind::ProtectNoSa => Decision {
                action: PolicyAction::Protect {
                    sa_group: self.sa_group,
                },
                sa: (self.kind == Kind::Protect).then_some(self.sa),
            },
        }
    }

    fn set_sa(&mut self, sa: Option<SaHandle>) {
        match sa {
            Some(h) => {
                self.kind = Kind::Protect;
                self.sa = h;
            }
            None => {
                self.kind = Kind::ProtectNoSa;
                self.sa = SaHandle::NONE;
            }
        }
    }
}

/// A two-way set-associative cache of `N` outbound flows (see the [module docs](self)).
pub(super) struct FlowCache<const N: usize> {
    entries: [Entry; N],
    /// Hash keys; `keyed` says whether they were drawn yet.
    keys: [u64; KEYS],
    keyed: bool,
    spd_gen: u32,
    sa_gen: u32,
}

impl<const N: usize> FlowCache<N> {
    /// Refuses at compile time a size that does not split into sets of two.
    const EVEN: () = assert!(N % 2 == 0, "the flow cache size must be even");
    const SETS: usize = N / 2;

    pub(super) const fn new() -> Self {
        let () = Self::EVEN;
        Self {
            entries: [Entry::EMPTY; N],
            keys: [0; KEYS],
            keyed: false,
            spd_gen: 1,
            sa_gen: 1,
        }
    }

    /// Draws the hash keys from `rng` if that has not been done yet. Returns whether the
    /// cache is usable.
    pub(super) fn ensure_keyed<R: SecureRng>(&mut self, rng: &mut R) -> bool {
        if N == 0 {
            return false;
        }
        if !self.keyed {
            let mut bytes = [0u8; 8 * KEYS];
            if rng.fill_bytes(&mut bytes).is_err() {
                return false;
            }
            self.set_keys(&bytes);
        }
        true
    }

    fn set_keys(&mut self, bytes: &[u8; 8 * KEYS]) {
        for (k, c) in self.keys.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            *k = u64::from_le_bytes(w);
        }
        self.keyed = true;
        // Entries placed under other keys would sit in the wrong sets.
        self.clear();
    }

    /// Marks every entry empty.
    fn clear(&mut self) {
        for e in &mut self.entries {
            e.spd_gen = 0;
            e.sa_gen = 0;
        }
    }

    /// The SPD changed: every decision is stale.
    pub(super) fn spd_changed(&mut self) {
        self.spd_gen = self.spd_gen.wrapping_add(1);
        if self.spd_gen == 0 {
            self.clear();
            self.spd_gen = 1;
        }
    }

    /// The outbound SAs or their bindings changed: every cached SA is stale.
    pub(super) fn sas_changed(&mut self) {
        self.sa_gen = self.sa_gen.wrapping_add(1);
        if self.sa_gen == 0 {
            for e in &mut self.entries {
                e.sa_gen = 0;
            }
            self.sa_gen = 1;
        }
    }

    /// The set `flow` belongs to.
    fn set_of(&self, flow: &Flow) -> usize {
        let [k0, keys @ ..] = &self.keys;
        let mut h = *k0;
        for (k, w) in keys.iter().zip(words(flow)) {
            h = h.wrapping_add(k.wrapping_mul(u64::from(w)));
        }
        // Multiply-shift of the high half (the well-mixed bits) onto 0..SETS.
        let sets = u64::try_from(Self::SETS).unwrap_or(u64::MAX);
        usize::try_from(((h >> 32).wrapping_mul(sets)) >> 32).unwrap_or(0)
    }

    /// Looks `flow` up. Call [`FlowCache::ensure_keyed`] first.
    pub(super) fn probe(&mut self, flow: &Flow) -> Probe {
        if N == 0 || !self.keyed {
            return Probe::Off;
        }
        let set = self.set_of(flow);
        let Some(base) = set.checked_mul(2) else {
            return Probe::Off;
        };
        let spd_gen = self.spd_gen;
        let found = (0..2).find(|&w| {
            self.entries
                .get(base.saturating_add(w))
                .is_some_and(|e| e.spd_gen == spd_gen && e.flow == *flow)
        });
        let Some(way) = found else {
            return Probe::Miss { set };
        };
        if way == 1 {
            // Most recently used first: the next miss in this set evicts the other way.
            if let Some(pair) = self.entries.get_mut(base..base.saturating_add(2)) {
                pair.swap(0, 1);
            }
        }
        let Some(e) = self.entries.get(base) else {
            return Probe::Miss { set };
        };
        if e.sa_gen == self.sa_gen || !matches!(e.kind, Kind::Protect | Kind::ProtectNoSa) {
            Probe::Hit(e.decision())
        } else {
            Probe::Rebind {
                slot: base,
                sa_group: e.sa_group,
            }
        }
    }

    /// Stores the SA now bound to the group of the entry at `slot` (after
    /// [`Probe::Rebind`]).
    pub(super) fn set_sa(&mut self, slot: usize, sa: Option<SaHandle>) {
        let sa_gen = self.sa_gen;
        if let Some(e) = self.entries.get_mut(slot) {
            e.set_sa(sa);
            e.sa_gen = sa_gen;
        }
    }

    /// Caches `decision` for `flow` in `set` (after [`Probe::Miss`]), evicting the least
    /// recently used way.
    pub(super) fn insert(&mut self, set: usize, flow: &Flow, decision: Decision) {
        let Some(base) = set.checked_mul(2) else {
            return;
        };
        let Some(pair) = self.entries.get_mut(base..base.saturating_add(2)) else {
            return;
        };
        let (sa_group, kind) = match decision.action {
            PolicyAction::Bypass => (0, Kind::Bypass),
            PolicyAction::Discard => (0, Kind::Discard),
            PolicyAction::Protect { sa_group } => (sa_group, Kind::Protect),
        };
        pair.swap(0, 1);
        if let Some(e) = pair.first_mut() {
            *e = Entry {
                flow: *flow,
                sa: SaHandle::NONE,
                sa_group,
                spd_gen: self.spd_gen,
                sa_gen: self.sa_gen,
                kind,
            };
            if kind == Kind::Protect {
                e.set_sa(decision.sa);
            }
        }
    }
}

/// The hash input: every field [`crate::spd::Selector::matches`] looks at.
fn words(flow: &Flow) -> [u32; WORDS] {
    let ([s0, s1, s2, s3], src_v6) = quad(flow.src);
    let ([d0, d1, d2, d3], dst_v6) = quad(flow.dst);
    let meta = u32::from(flow.protocol)
        | u32::from(flow.ports_known) << 8
        | u32::from(src_v6) << 9
        | u32::from(dst_v6) << 10;
    let ports = u32::from(flow.src_port) << 16 | u32::from(flow.dst_port);
    [s0, s1, s2, s3, d0, d1, d2, d3, meta, ports]
}

/// An address as four words (IPv4 as the IPv4-compatible IPv6 address) and whether it is
/// IPv6.
fn quad(addr: IpAddr) -> ([u32; 4], bool) {
    let (o, v6) = match addr {
        IpAddr::V4(a) => (a.to_ipv6_compatible().octets(), false),
        IpAddr::V6(a) => (a.octets(), true),
    };
    let [a, b, c, d, e, f, g, h, i, j, k, l, m, n, p, q] = o;
    (
        [
            u32::from_be_bytes([a, b, c, d]),
            u32::from_be_bytes([e, f, g, h]),
            u32::from_be_bytes([i, j, k, l]),
            u32::from_be_bytes([m, n, p, q]),
        ],
        v6,
    )
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use core::net::Ipv6Addr;

    use hal_traits::CryptoError;

    use super::*;

    struct Seq(u8);
    impl SecureRng for Seq {
        fn fill_bytes(&mut self, d: &mut [u8]) -> Result<(), CryptoError> {
            for b in d {
                self.0 = self.0.wrapping_mul(29).wrapping_add(71);
                *b = self.0;
            }
            Ok(())
        }
    }

    struct Broken;
    impl SecureRng for Broken {
        fn fill_bytes(&mut self, _: &mut [u8]) -> Result<(), CryptoError> {
            Err(CryptoError::Rng)
        }
    }

    fn flow(last: u8, sport: u16) -> Flow {
        Flow {
            src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            dst: IpAddr::V4(Ipv4Addr::new(10, 1, 0, last)),
            protocol: 17,
            src_port: sport,
            dst_port: 53,
            ports_known: true,
        }
    }

    fn handle(i: u32) -> SaHandle {
        SaHandle::for_test(i, 7)
    }

    const PROTECT: Decision = Decision {
        action: PolicyAction::Protect { sa_group: 10 },
        sa: None,
    };

    fn keyed<const N: usize>() -> FlowCache<N> {
        let mut c = FlowCache::<N>::new();
        assert!(c.ensure_keyed(&mut Seq(3)));
        c
    }

    #[test]
    fn entry_fits_a_cache_line() {
        assert_eq!(ENTRY_BYTES, 64);
        assert_eq!(core::mem::size_of::<FlowCache<0>>(), 104);
        assert_eq!(
            core::mem::size_of::<FlowCache<64>>(),
            64 * ENTRY_BYTES + 104
        );
    }

    #[test]
    fn miss_then_hit_for_every_kind() {
        let mut c = keyed::<16>();
        let decisions = [
            Decision {
                action: PolicyAction::Bypass,
                sa: None,
            },
            Decision {
                action: PolicyAction::Discard,
                sa: None,
            },
            Decision {
                action: PolicyAction::Protect { sa_group: 7 },
                sa: Some(handle(3)),
            },
            Decision {
                action: PolicyAction::Protect { sa_group: 9 },
                sa: None,
            },
        ];
        for (i, d) in decisions.into_iter().enumerate() {
            let f = flow(u8::try_from(i).unwrap(), 1000);
            let Probe::Miss { set } = c.probe(&f) else {
                panic!("cold cache hit");
            };
            c.insert(set, &f, d);
            assert_eq!(c.probe(&f), Probe::Hit(d));
        }
    }

    #[test]
    fn unkeyed_or_empty_cache_is_off() {
        let mut c = FlowCache::<4>::new();
        assert_eq!(c.probe(&flow(1, 1)), Probe::Off);
        assert!(!c.ensure_keyed(&mut Broken));
        assert_eq!(c.probe(&flow(1, 1)), Probe::Off);
        assert!(c.ensure_keyed(&mut Seq(1)));
        assert!(matches!(c.probe(&flow(1, 1)), Probe::Miss { .. }));
        let mut z = FlowCache::<0>::new();
        assert!(!z.ensure_keyed(&mut Seq(1)));
        assert_eq!(z.probe(&flow(1, 1)), Probe::Off);
    }

    #[test]
    fn spd_change_invalidates_everything() {
        let mut c = keyed::<8>();
        let f = flow(1, 1);
        let Probe::Miss { set } = c.probe(&f) else {
            panic!()
        };
        c.insert(set, &f, PROTECT);
        assert!(matches!(c.probe(&f), Probe::Hit(_)));
        c.spd_changed();
        assert_eq!(c.probe(&f), Probe::Miss { set });
    }

    #[test]
    fn sa_change_rebinds_protect_only() {
        let mut c = keyed::<8>();
        let (p, b) = (flow(1, 1), flow(2, 2));
        let d = Decision {
            action: PolicyAction::Protect { sa_group: 10 },
            sa: Some(handle(1)),
        };
        for (f, d) in [
            (p, d),
            (
                b,
                Decision {
                    action: PolicyAction::Bypass,
                    sa: None,
                },
            ),
        ] {
            let Probe::Miss { set } = c.probe(&f) else {
                panic!()
            };
            c.insert(set, &f, d);
        }
        c.sas_changed();
        // Bypass does not depend on SAs.
        assert!(matches!(c.probe(&b), Probe::Hit(_)));
        let Probe::Rebind { slot, sa_group } = c.probe(&p) else {
            panic!("stale SA handed out");
        };
        assert_eq!(sa_group, 10);
        c.set_sa(slot, None);
        assert_eq!(
            c.probe(&p),
            Probe::Hit(Decision {
                action: PolicyAction::Protect { sa_group: 10 },
                sa: None
            })
        );
        c.sas_changed();
        let Probe::Rebind { slot, .. } = c.probe(&p) else {
            panic!()
        };
        c.set_sa(slot, Some(handle(2)));
        assert_eq!(
            c.probe(&p),
            Probe::Hit(Decision {
                action: PolicyAction::Protect { sa_group: 10 },
                sa: Some(handle(2))
            })
        );
    }

    /// Flows that hash to the same set, found by search under the test keys.
    fn same_set<const N: usize>(c: &FlowCache<N>, n: usize) -> Vec<Flow> {
        let target = c.set_of(&flow(0, 0));
        (0..=u16::MAX)
            .map(|p| flow(0, p))
            .filter(|f| c.set_of(f) == target)
            .take(n)
            .collect()
    }

    #[test]
    fn colliding_flows_share_a_set_with_lru_eviction() {
        let mut c = keyed::<8>();
        let fs = same_set(&c, 3);
        assert_eq!(fs.len(), 3);
        let d = |g| Decision {
            action: PolicyAction::Protect { sa_group: g },
            sa: Some(handle(g)),
        };
        for (g, f) in (1..).zip(&fs[..2]) {
            let Probe::Miss { set } = c.probe(f) else {
                panic!()
            };
            c.insert(set, f, d(g));
        }
        // Both ways hold their own flow: equal hashes never mix up decisions.
        assert_eq!(c.probe(&fs[0]), Probe::Hit(d(1)));
        assert_eq!(c.probe(&fs[1]), Probe::Hit(d(2)));
        // fs[1] was used last: a third flow evicts fs[0].
        assert_eq!(c.probe(&fs[0]), Probe::Hit(d(1)));
        assert_eq!(c.probe(&fs[1]), Probe::Hit(d(2)));
        let Probe::Miss { set } = c.probe(&fs[2]) else {
            panic!()
        };
        c.insert(set, &fs[2], d(3));
        assert!(matches!(c.probe(&fs[0]), Probe::Miss { .. }));
        assert_eq!(c.probe(&fs[1]), Probe::Hit(d(2)));
        assert_eq!(c.probe(&fs[2]), Probe::Hit(d(3)));
    }

    #[test]
    fn every_selector_field_is_part_of_the_key() {
        let mut c = keyed::<64>();
        let base = flow(1, 1000);
        let variants = [
            Flow {
                src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
                ..base
            },
            Flow {
                dst: IpAddr::V4(Ipv4Addr::new(10, 1, 0, 2)),
                ..base
            },
            Flow {
                protocol: 6,
                ..base
            },
            Flow {
                src_port: 1001,
                ..base
            },
            Flow {
                dst_port: 54,
                ..base
            },
            Flow {
                ports_known: false,
                ..base
            },
            // The IPv4-compatible IPv6 address hashes like the IPv4 one but is not it.
            Flow {
                dst: IpAddr::V6(Ipv4Addr::new(10, 1, 0, 1).to_ipv6_compatible()),
                ..base
            },
            Flow {
                src: IpAddr::V6(Ipv6Addr::LOCALHOST),
                dst: IpAddr::V6(Ipv6Addr::LOCALHOST),
                ..base
            },
        ];
        let Probe::Miss { set } = c.probe(&base) else {
            panic!()
        };
        c.insert(set, &base, PROTECT);
        for v in variants {
            assert_ne!(v, base);
            assert!(
                matches!(c.probe(&v), Probe::Miss { .. }),
                "{v:?} taken for {base:?}"
            );
        }
        assert_eq!(c.probe(&base), Probe::Hit(PROTECT));
    }

    #[test]
    fn keys_spread_flows_over_sets() {
        let c = keyed::<256>();
        let mut used = [0u32; 128];
        for p in 0..1024 {
            used[c.set_of(&flow(9, p))] += 1;
        }
        // 1024 flows into 128 sets: 8 per set on average; a stuck hash would fill one.
        assert!(used.iter().all(|&n| n < 32), "{used:?}");
        assert!(used.iter().filter(|&&n| n == 0).count() < 8);
        // Other keys, other sets.
        let d = {
            let mut d = FlowCache::<256>::new();
            assert!(d.ensure_keyed(&mut Seq(200)));
            d
        };
        let moved = (0..256)
            .filter(|&p| c.set_of(&flow(9, p)) != d.set_of(&flow(9, p)))
            .count();
        assert!(moved > 200, "{moved}");
    }

    #[test]
    fn generation_wrap_forgets_everything() {
        let mut c = keyed::<4>();
        let f = flow(1, 1);
        let Probe::Miss { set } = c.probe(&f) else {
            panic!()
        };
        let d = Decision {
            action: PolicyAction::Protect { sa_group: 1 },
            sa: Some(handle(1)),
        };
        c.insert(set, &f, d);
        // Jump the counters to the edge and wrap them.
        c.sa_gen = u32::MAX;
        if let Some(e) = c.entries.iter_mut().find(|e| e.spd_gen != 0) {
            e.sa_gen = 1; // would match the wrapped counter without the reset
        }
        c.sas_changed();
        assert_eq!(c.sa_gen, 1);
        assert!(matches!(c.probe(&f), Probe::Rebind { .. }));
        c.spd_gen = u32::MAX;
        if let Some(e) = c.entries.iter_mut().find(|e| e.spd_gen != 0) {
            e.spd_gen = u32::MAX;
        }
        assert!(matches!(c.probe(&f), Probe::Rebind { .. }));
        c.spd_changed();
        assert_eq!(c.spd_gen, 1);
        assert!(c.entries.iter().all(|e| e.spd_gen == 0));
        assert!(matches!(c.probe(&f), Probe::Miss { .. }));
    }
}
