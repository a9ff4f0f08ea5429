//! Dead Peer Detection (RFC 3706) and IKE keepalives: when to send R-U-THERE, when a
//! peer is dead, and what happens then.
//!
//! The state is per peer address, not per SA: a peer is alive if anything authenticated
//! came from it, on any of its IKE SAs or IPsec SAs. [`DpdTable`] holds it in a few
//! words per peer, found through a hash (chained buckets, so lookups stay O(1) even when
//! every slot is used), with at most one deadline per peer kept in an indexed binary
//! heap. Nothing is periodic unless [`KeepaliveMode::Periodic`] asks for it:
//!
//! * [`Ike::note_inbound`] (called by the data plane for every authenticated inbound
//!   packet) stores the time and, unless an R-U-THERE is unanswered, touches nothing
//!   else: no timer is armed, moved or woken.
//! * [`Ike::note_outbound`] (for every packet sent to the peer) compares the time of the
//!   last proof of life with the idle interval; only when the peer has been silent that
//!   long and no probe is running does it arm a deadline, for `now`. The idle deadline is
//!   thus computed lazily, from the last proof of life, when traffic needs the peer.
//! * So 10,000 idle tunnels in on-demand mode send nothing and wake nothing;
//!   [`DpdTable::next_deadline`] is the heap's top, O(1).
//!
//! A round: the first R-U-THERE at `t1`, a new one (next sequence number) every
//! `retry` while none is answered, `retries` in all, and the peer is dead at
//! `t1 + retries × retry` (see [`Keepalive`]). The round ends at any proof of life: the
//! R-U-THERE-ACK carrying the sequence number of the outstanding R-U-THERE, any other
//! authenticated IKE message from the peer, or inbound IPsec traffic. An ACK with
//! another sequence number (late, replayed) is counted and ignored; it is not proof of
//! life. A dead peer loses its IKE SAs and IPsec SAs (events with
//! [`DeleteReason::DpdDead`], then
//! [`IkeEvent::PeerDead`](super::IkeEvent::PeerDead)), and every crypto map entry that
//! used it moves to its next peer and negotiates with it at once (`PeerChanged`); the
//! usual failover wraps back to the first peer later. A single-peer entry is
//! re-established on demand by the port (`initiate` on the data plane's `NoSa`).
//!
//! Only a peer that sent the DPD vendor ID is probed, unless
//! [`Keepalive::without_peer_vid`] says it answers anyway. R-U-THEREs from the peer are
//! always answered (in `info`).

use core::net::{IpAddr, Ipv4Addr, SocketAddr};

use hal_traits::{CryptoProvider, SecureRng};
use ipsec_core::Instant;

use super::IkeError;
use super::config::{Keepalive, KeepaliveMode, MAX_CRYPTO_MAPS};
use super::events::{DeleteReason, Queued};
use super::ike::{Ike, emit};
use super::info::InfoItem;
use super::sa::QmRequest;
use crate::wire::{NotifyRepr, notify};

const NIL: u32 = u32::MAX;

/// DPD counters of one peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DpdCounters {
    /// R-U-THEREs sent (each retry counts).
    pub sent: u32,
    /// Rounds ended by the matching R-U-THERE-ACK.
    pub acked: u32,
    /// R-U-THEREs left unanswered for a retry interval.
    pub timed_out: u32,
    /// R-U-THERE-ACKs with a sequence number that was not outstanding (ignored).
    pub unexpected_acks: u32,
}

/// The DPD part of `show crypto isakmp sa detail` for one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DpdStatus {
    /// The peer announced DPD (its vendor ID).
    pub peer_dpd: bool,
    /// Keepalives are configured and this peer is probed (the `K` flag).
    pub probed: bool,
    /// Last proof of life: phase 1, an authenticated IKE message, the matching ACK or
    /// inbound IPsec traffic.
    pub last_proof_of_life: Instant,
    /// R-U-THEREs sent in the current round (0: none unanswered).
    pub unanswered: u8,
    /// The armed deadline, if any (an R-U-THERE due, a retry, or the next periodic one).
    pub deadline: Option<Instant>,
    /// Counters.
    pub counters: DpdCounters,
}

/// What a due DPD timer asks the control plane to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DpdAction {
    /// Send an R-U-THERE to `peer`: the `attempt`-th of the round (1 = the first).
    Probe {
        /// The peer.
        peer: IpAddr,
        /// 1-based number of this R-U-THERE in the round.
        attempt: u8,
    },
    /// `peer` is dead: the last R-U-THERE of the round went unanswered. Its entry has
    /// been removed.
    Dead {
        /// The peer.
        peer: IpAddr,
        /// When it last showed a sign of life.
        last_proof_of_life: Instant,
    },
}

#[derive(Clone, Copy)]
struct Slot {
    peer: IpAddr,
    /// Next slot in the bucket chain (or in the free list).
    next: u32,
    /// Position in the deadline heap; `NIL` when no timer is armed.
    heap: u32,
    deadline: Instant,
    last_rx: Instant,
    round_start: Instant,
    unanswered: u8,
    peer_dpd: bool,
    used: bool,
    counters: DpdCounters,
}

impl Slot {
    const EMPTY: Self = Self {
        peer: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        next: NIL,
        heap: NIL,
        deadline: Instant::ZERO,
        last_rx: Instant::ZERO,
        round_start: Instant::ZERO,
        unanswered: 0,
        peer_dpd: false,
        used: false,
        counters: DpdCounters {
            sent: 0,
            acked: 0,
            timed_out: 0,
            unexpected_acks: 0,
        },
    };

    fn probed(&self, ka: Option<&Keepalive>) -> bool {
        ka.is_some_and(|k| self.peer_dpd || k.without_peer_vid)
    }
}

#[allow(clippy::cast_possible_truncation)] // u32 -> usize never truncates here
const fn ix(k: u32) -> usize {
    k as usize
}

fn to_u32(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(NIL)
}

/// Per-peer DPD state for up to `N` peers: a hash by peer address (chained, `N`
/// buckets) and an indexed min-heap of deadlines (at most one per peer). Every
/// operation is O(1) except arming or disarming a deadline, O(log N). Fixed size, no
/// heap allocation: about 80 bytes per peer.
///
/// [`Ike`] keeps one with `N = SAS`; it is public so that its cost can be measured
/// alone at sizes an `Ike` would not fit in (see `benches/dpd.rs`).
pub struct DpdTable<const N: usize> {
    slots: [Slot; N],
    buckets: [u32; N],
    heap: [u32; N],
    heap_len: usize,
    free: u32,
    len: usize,
}

impl<const N: usize> Default for DpdTable<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> core::fmt::Debug for DpdTable<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DpdTable")
            .field("peers", &self.len)
            .field("armed", &self.heap_len)
            .field("next_deadline", &self.next_deadline())
            .finish()
    }
}

impl<const N: usize> DpdTable<N> {
    /// An empty table.
    #[must_use]
    pub fn new() -> Self {
        let mut t = Self {
            slots: [Slot::EMPTY; N],
            buckets: [NIL; N],
            heap: [NIL; N],
            heap_len: 0,
            free: if N == 0 { NIL } else { 0 },
            len: 0,
        };
        for (k, s) in t.slots.iter_mut().enumerate() {
            s.next = if k + 1 < N { to_u32(k + 1) } else { NIL };
        }
        t
    }

    /// Peers tracked.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether no peer is tracked.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Deadlines armed (R-U-THEREs due or unanswered, periodic keepalives).
    #[must_use]
    pub const fn armed(&self) -> usize {
        self.heap_len
    }

    /// The earliest armed deadline: O(1).
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.heap_len == 0 {
            return None;
        }
        let k = *self.heap.first()?;
        Some(self.slots.get(ix(k))?.deadline)
    }

    fn bucket(peer: &IpAddr) -> usize {
        let x = match peer {
            IpAddr::V4(a) => u64::from(u32::from(*a)),
            IpAddr::V6(a) => {
                let v = u128::from(*a);
                let lo = u64::try_from(v & u128::from(u64::MAX)).unwrap_or(0);
                let hi = u64::try_from(v >> 64).unwrap_or(0);
                lo ^ hi.rotate_left(29)
            }
        };
        // splitmix64 finaliser: sequential addresses spread over the buckets.
        let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let n = u64::try_from(N.max(1)).unwrap_or(u64::MAX);
        usize::try_from(z % n).unwrap_or(0)
    }

    fn find(&self, peer: &IpAddr) -> Option<u32> {
        let mut k = *self.buckets.get(Self::bucket(peer))?;
        while k != NIL {
            let s = self.slots.get(ix(k))?;
            if s.peer == *peer {
                return Some(k);
            }
            k = s.next;
        }
        None
    }

    fn slot_mut(&mut self, k: u32) -> Option<&mut Slot> {
        self.slots.get_mut(ix(k))
    }

    fn deadline_of(&self, k: u32) -> Instant {
        self.slots.get(ix(k)).map_or(Instant::ZERO, |s| s.deadline)
    }

    /// Hash quality: (longest bucket chain, mean slots visited by a successful
    /// lookup). Diagnostics for benchmarks; O(N).
    #[must_use]
    pub fn chain_stats(&self) -> (usize, f64) {
        let (mut longest, mut visits) = (0usize, 0usize);
        for &head in &self.buckets {
            let (mut k, mut depth) = (head, 0usize);
            while k != NIL {
                depth += 1;
                visits += depth;
                k = self.slots.get(ix(k)).map_or(NIL, |s| s.next);
            }
            longest = longest.max(depth);
        }
        #[allow(clippy::cast_precision_loss)]
        let mean = if self.len == 0 {
            0.0
        } else {
            visits as f64 / self.len as f64
        };
        (longest, mean)
    }

    /// Whether `peer` is tracked.
    #[must_use]
    pub fn contains(&self, peer: IpAddr) -> bool {
        self.find(&peer).is_some()
    }

    /// The state of `peer`.
    #[must_use]
    pub fn status(&self, peer: IpAddr, ka: Option<&Keepalive>) -> Option<DpdStatus> {
        let s = self.slots.get(ix(self.find(&peer)?))?;
        Some(DpdStatus {
            peer_dpd: s.peer_dpd,
            probed: s.probed(ka),
            last_proof_of_life: s.last_rx,
            unanswered: s.unanswered,
            deadline: (s.heap != NIL).then_some(s.deadline),
            counters: s.counters,
        })
    }

    /// Starts tracking `peer`, or refreshes it: a phase 1 with it just completed, which
    /// is proof of life and ends any running round. `peer_dpd`: it sent the DPD vendor
    /// ID. In periodic mode the first R-U-THERE is armed for `now + interval`.
    ///
    /// # Errors
    /// [`IkeError::TableFull`].
    pub fn insert(
        &mut self,
        now: Instant,
        peer: IpAddr,
        peer_dpd: bool,
        ka: Option<&Keepalive>,
    ) -> Result<(), IkeError> {
        let k = match self.find(&peer) {
            Some(k) => k,
            None => {
                let k = self.free;
                let b = Self::bucket(&peer);
                let head = *self.buckets.get(b).ok_or(IkeError::TableFull)?;
                let s = self.slot_mut(k).ok_or(IkeError::TableFull)?;
                let next_free = s.next;
                *s = Slot::EMPTY;
                s.peer = peer;
                s.used = true;
                s.next = head;
                self.free = next_free;
                if let Some(h) = self.buckets.get_mut(b) {
                    *h = k;
                }
                self.len += 1;
                k
            }
        };
        self.disarm(k);
        let Some(s) = self.slot_mut(k) else {
            return Err(IkeError::TableFull);
        };
        s.peer_dpd = peer_dpd;
        s.last_rx = now;
        s.round_start = now;
        s.unanswered = 0;
        let first = ka
            .filter(|ka| ka.mode == KeepaliveMode::Periodic && s.probed(Some(ka)))
            .map(|ka| now + ka.interval_ms_duration());
        if let Some(t) = first {
            self.arm(k, t);
        }
        Ok(())
    }

    /// Stops tracking `peer` (its last IKE SA is gone). Returns whether it was tracked.
    pub fn remove(&mut self, peer: IpAddr) -> bool {
        let b = Self::bucket(&peer);
        let Some(mut k) = self.buckets.get(b).copied() else {
            return false;
        };
        let mut prev = NIL;
        while k != NIL {
            let Some(s) = self.slots.get(ix(k)) else {
                return false;
            };
            let next = s.next;
            if s.peer == peer {
                self.disarm(k);
                if prev == NIL {
                    if let Some(h) = self.buckets.get_mut(b) {
                        *h = next;
                    }
                } else if let Some(p) = self.slot_mut(prev) {
                    p.next = next;
                }
                let free = self.free;
                if let Some(s) = self.slot_mut(k) {
                    *s = Slot::EMPTY;
                    s.next = free;
                }
                self.free = k;
                self.len -= 1;
                return true;
            }
            prev = k;
            k = next;
        }
        false
    }

    /// Removes every peer for which `keep` is false (a safety sweep; O(N)).
    pub fn retain(&mut self, mut keep: impl FnMut(IpAddr) -> bool) {
        for k in 0..N {
            let Some(s) = self.slots.get(k) else { break };
            if s.used && !keep(s.peer) {
                let p = s.peer;
                self.remove(p);
            }
        }
    }

    /// Proof of life from `peer` (inbound IPsec traffic, an authenticated IKE message).
    /// O(1) and arms nothing; if a round was running it ends (its retry deadline is
    /// dropped, and in periodic mode the next keepalive armed instead). Returns whether
    /// `peer` is tracked.
    pub fn note_inbound(&mut self, now: Instant, peer: IpAddr, ka: Option<&Keepalive>) -> bool {
        let Some(k) = self.find(&peer) else {
            return false;
        };
        self.alive(k, now, ka);
        true
    }

    fn alive(&mut self, k: u32, now: Instant, ka: Option<&Keepalive>) {
        let Some(s) = self.slot_mut(k) else { return };
        if now > s.last_rx {
            s.last_rx = now;
        }
        if s.unanswered == 0 {
            return;
        }
        s.unanswered = 0;
        let next = ka
            .filter(|ka| ka.mode == KeepaliveMode::Periodic && s.probed(Some(ka)))
            .map(|ka| {
                let t = s.round_start + ka.interval_ms_duration();
                if t > now { t } else { now }
            });
        self.disarm(k);
        if let Some(t) = next {
            self.arm(k, t);
        }
    }

    /// Outbound traffic to `peer` is waiting. O(1): in on-demand mode, if `peer` has
    /// been silent for the interval and no round is running, an R-U-THERE is armed for
    /// `now`. Returns whether one was.
    pub fn note_outbound(&mut self, now: Instant, peer: IpAddr, ka: Option<&Keepalive>) -> bool {
        let Some(ka) = ka.filter(|ka| ka.mode == KeepaliveMode::OnDemand) else {
            return false;
        };
        let Some(k) = self.find(&peer) else {
            return false;
        };
        let Some(s) = self.slots.get(ix(k)) else {
            return false;
        };
        if s.heap != NIL
            || s.unanswered != 0
            || !s.probed(Some(ka))
            || now < s.last_rx + ka.interval_ms_duration()
        {
            return false;
        }
        self.arm(k, now);
        true
    }

    /// The R-U-THERE-ACK for the outstanding R-U-THERE arrived: the round ends.
    pub fn acked(&mut self, now: Instant, peer: IpAddr, ka: Option<&Keepalive>) {
        let Some(k) = self.find(&peer) else { return };
        if let Some(s) = self.slot_mut(k) {
            s.counters.acked = s.counters.acked.saturating_add(1);
        }
        self.alive(k, now, ka);
    }

    /// An R-U-THERE-ACK with a sequence number that was not outstanding: counted only.
    pub fn unexpected_ack(&mut self, peer: IpAddr) {
        if let Some(s) = self.find(&peer).and_then(|k| self.slot_mut(k)) {
            s.counters.unexpected_acks = s.counters.unexpected_acks.saturating_add(1);
        }
    }

    /// Pops the next due timer (if any is due at `now`) and advances that peer's round:
    /// the action to take. Call until `None`. Timers whose reason went away meanwhile
    /// (proof of life since an on-demand probe was armed, keepalives switched off) are
    /// dropped on the way.
    pub fn poll_due(&mut self, now: Instant, ka: Option<&Keepalive>) -> Option<DpdAction> {
        loop {
            if self.heap_len == 0 {
                return None;
            }
            let k = *self.heap.first()?;
            if self.deadline_of(k) > now {
                return None;
            }
            self.disarm(k);
            let Some(ka) = ka else { continue };
            let s = self.slot_mut(k)?;
            if !s.probed(Some(ka)) {
                s.unanswered = 0;
                continue;
            }
            let retry = ka.retry_ms_duration();
            if s.unanswered == 0 {
                if ka.mode == KeepaliveMode::OnDemand && now < s.last_rx + ka.interval_ms_duration()
                {
                    continue; // the peer spoke since the probe was armed
                }
                s.unanswered = 1;
                s.round_start = now;
                s.counters.sent = s.counters.sent.saturating_add(1);
                let peer = s.peer;
                self.arm(k, now + retry);
                return Some(DpdAction::Probe { peer, attempt: 1 });
            }
            s.counters.timed_out = s.counters.timed_out.saturating_add(1);
            if s.unanswered >= ka.retries.max(1) {
                let (peer, last_proof_of_life) = (s.peer, s.last_rx);
                self.remove(peer);
                return Some(DpdAction::Dead {
                    peer,
                    last_proof_of_life,
                });
            }
            s.unanswered += 1;
            s.counters.sent = s.counters.sent.saturating_add(1);
            let (peer, attempt) = (s.peer, s.unanswered);
            self.arm(k, now + retry);
            return Some(DpdAction::Probe { peer, attempt });
        }
    }

    // --------------------------------------------------------------- the heap --

    fn less(&self, a: u32, b: u32) -> bool {
        (self.deadline_of(a), a) < (self.deadline_of(b), b)
    }

    fn place(&mut self, pos: usize, k: u32) {
        if let Some(h) = self.heap.get_mut(pos) {
            *h = k;
        }
        if let Some(s) = self.slot_mut(k) {
            s.heap = to_u32(pos);
        }
    }

    fn at(&self, pos: usize) -> u32 {
        self.heap.get(pos).copied().unwrap_or(NIL)
    }

    fn sift_up(&mut self, mut pos: usize) -> usize {
        let k = self.at(pos);
        while pos > 0 {
            let parent = (pos - 1) / 2;
            let p = self.at(parent);
            if !self.less(k, p) {
                break;
            }
            self.place(pos, p);
            pos = parent;
        }
        self.place(pos, k);
        pos
    }

    fn sift_down(&mut self, mut pos: usize) {
        let k = self.at(pos);
        loop {
            let l = 2 * pos + 1;
            if l >= self.heap_len {
                break;
            }
            let r = l + 1;
            let mut m = l;
            if r < self.heap_len && self.less(self.at(r), self.at(l)) {
                m = r;
            }
            let c = self.at(m);
            if !self.less(c, k) {
                break;
            }
            self.place(pos, c);
            pos = m;
        }
        self.place(pos, k);
    }

    fn arm(&mut self, k: u32, at: Instant) {
        let Some(s) = self.slot_mut(k) else { return };
        s.deadline = at;
        if s.heap == NIL {
            if self.heap_len >= N {
                return;
            }
            let pos = self.heap_len;
            self.heap_len += 1;
            self.place(pos, k);
            self.sift_up(pos);
        } else {
            let pos = ix(s.heap);
            let pos = self.sift_up(pos);
            self.sift_down(pos);
        }
    }

    fn disarm(&mut self, k: u32) {
        let Some(s) = self.slot_mut(k) else { return };
        if s.heap == NIL {
            return;
        }
        let pos = ix(s.heap);
        s.heap = NIL;
        self.heap_len -= 1;
        let last = self.heap_len;
        if pos != last {
            let moved = self.at(last);
            self.place(pos, moved);
            let pos = self.sift_up(pos);
            self.sift_down(pos);
        }
    }
}

impl Keepalive {
    fn interval_ms_duration(&self) -> ipsec_core::Duration {
        ipsec_core::Duration::from_millis(self.interval_ms())
    }

    fn retry_ms_duration(&self) -> ipsec_core::Duration {
        ipsec_core::Duration::from_millis(self.retry_ms())
    }
}

// ---------------------------------------------------------------- control plane --

impl<P: CryptoProvider, const SAS: usize, const CHILDREN: usize> Ike<P, SAS, CHILDREN> {
    /// The data plane received authenticated IPsec traffic from `peer` (its IKE
    /// address): proof of life for Dead Peer Detection. O(1) (a hash lookup and a
    /// store); it never arms or wakes a timer. Returns whether `peer` is tracked (it has
    /// an established IKE SA).
    pub fn note_inbound(&mut self, now: Instant, peer: IpAddr) -> bool {
        self.dpd
            .note_inbound(now, peer, self.config.keepalive.as_ref())
    }

    /// The data plane has traffic to send to `peer` (call it per packet, or at least
    /// once per packet burst). O(1). In on-demand mode, if nothing was received from
    /// `peer` for the keepalive interval and no R-U-THERE is unanswered, the DPD timer
    /// is armed for `now`: [`Ike::poll_timeout`] returns `now` and the R-U-THERE goes
    /// out in the next [`Ike::handle_timeout`]. Returns whether that happened.
    pub fn note_outbound(&mut self, now: Instant, peer: IpAddr) -> bool {
        self.dpd
            .note_outbound(now, peer, self.config.keepalive.as_ref())
    }

    /// DPD state and counters of `peer`, if it has an established IKE SA.
    #[must_use]
    pub fn dpd_status(&self, peer: IpAddr) -> Option<DpdStatus> {
        self.dpd.status(peer, self.config.keepalive.as_ref())
    }

    /// Phase 1 with the peer of SA `i` is up: track the peer (proof of life).
    pub(super) fn dpd_established(&mut self, now: Instant, i: usize) {
        let Ok(sa) = self.sa_ref(i) else { return };
        let (peer, peer_dpd) = (sa.remote.ip(), sa.peer_dpd);
        let ka = self.config.keepalive;
        if self.dpd.insert(now, peer, peer_dpd, ka.as_ref()).is_err() {
            // Only possible if an entry outlived its SAs: sweep and retry once.
            let sas = &self.sas;
            self.dpd.retain(|p| {
                sas.iter()
                    .flatten()
                    .any(|s| s.remote.ip() == p && s.is_established())
            });
            let _ = self.dpd.insert(now, peer, peer_dpd, ka.as_ref());
        }
    }

    /// An authenticated IKE message from `peer`: proof of life.
    pub(super) fn dpd_alive(&mut self, now: Instant, peer: IpAddr) {
        self.dpd
            .note_inbound(now, peer, self.config.keepalive.as_ref());
    }

    /// An IKE SA with `peer` was freed: forget the peer if it has no other one.
    pub(super) fn dpd_gc(&mut self, peer: IpAddr) {
        let any = self
            .sas
            .iter()
            .flatten()
            .any(|s| s.remote.ip() == peer && s.is_established());
        if !any {
            self.dpd.remove(peer);
        }
    }

    /// Sends one R-U-THERE on established SA `i` with the next sequence number (a
    /// random start, RFC 3706 §5.5) and makes it the outstanding one.
    pub(super) fn send_r_u_there<R: SecureRng>(
        &mut self,
        rng: &mut R,
        i: usize,
    ) -> Result<u32, IkeError> {
        let sa = self.sa_mut(i)?;
        if !sa.is_established() {
            return Err(IkeError::UnexpectedMessage);
        }
        let seq = if sa.dpd_seq == 0 {
            super::sa::random_u32(rng, 1, |v| v > 0x7fff_ffff)?
        } else {
            sa.dpd_seq.wrapping_add(1).max(1)
        };
        sa.dpd_seq = seq;
        sa.dpd_outstanding = Some(seq);
        let mut ck = [0u8; 16];
        ck[..8].copy_from_slice(&sa.cky_i);
        ck[8..].copy_from_slice(&sa.cky_r);
        let b = seq.to_be_bytes();
        let n = NotifyRepr::isakmp(notify::R_U_THERE, &ck, &b);
        self.send_info(rng, i, &[InfoItem::Notify(n)])?;
        self.counters.dpd_sent += 1;
        Ok(seq)
    }

    /// Runs the due DPD timers (from `handle_timeout`).
    pub(super) fn dpd_timers<R: SecureRng>(&mut self, now: Instant, rng: &mut R) {
        let ka = self.config.keepalive;
        while let Some(a) = self.dpd.poll_due(now, ka.as_ref()) {
            match a {
                DpdAction::Probe { peer, attempt } => {
                    if attempt > 1 {
                        self.counters.dpd_timeouts += 1;
                    }
                    match self.established_to(peer, None) {
                        Some(i) => {
                            let _ = self.send_r_u_there(rng, i);
                        }
                        None => {
                            self.dpd.remove(peer);
                        }
                    }
                }
                DpdAction::Dead {
                    peer,
                    last_proof_of_life,
                } => {
                    self.counters.dpd_timeouts += 1;
                    self.peer_dead(now, rng, peer, last_proof_of_life);
                }
            }
        }
    }

    /// `peer` did not answer: clear everything with it and fail its crypto map entries
    /// over to their next peers.
    fn peer_dead<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        peer: IpAddr,
        last_proof_of_life: Instant,
    ) {
        self.counters.dpd_peers_dead += 1;
        let mut maps: heapless::Vec<u32, MAX_CRYPTO_MAPS> = heapless::Vec::new();
        let mut add = |m: u32| {
            if !maps.contains(&m) {
                let _ = maps.push(m);
            }
        };
        for c in self.children.iter().filter(|c| c.peer.ip() == peer) {
            add(c.crypto_map);
        }
        for sa in self.sas.iter().flatten().filter(|s| s.remote.ip() == peer) {
            if let Some(m) = sa.crypto_map {
                add(m);
            }
            for p in &sa.pending {
                add(p.crypto_map);
            }
        }
        emit(
            &mut self.events,
            &mut self.counters,
            Queued::PeerDead {
                peer,
                last_proof_of_life,
            },
        );
        self.remove_children(|c| c.peer.ip() == peer, DeleteReason::DpdDead);
        for k in 0..SAS {
            let Some(slot) = self.sas.get_mut(k) else {
                continue;
            };
            let Some(sa) = slot.as_ref() else { continue };
            if sa.remote.ip() != peer {
                continue;
            }
            let (conn_id, remote): (u32, SocketAddr) = (sa.conn_id, sa.remote);
            *slot = None;
            emit(
                &mut self.events,
                &mut self.counters,
                Queued::Phase1Deleted {
                    conn_id,
                    peer: remote,
                    reason: DeleteReason::DpdDead,
                },
            );
        }
        self.dpd.remove(peer);
        for m in maps {
            let n = self.config.crypto_map(m).map_or(0, |e| e.peers.len());
            let req = QmRequest {
                crypto_map: m,
                replaces: None,
                attempts_left: u8::try_from(n.saturating_sub(1)).unwrap_or(u8::MAX),
                selector: None,
            };
            self.failover(now, rng, req, peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv6Addr;
    use ipsec_core::Duration;
    use std::vec::Vec;

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
    }

    fn ka() -> Keepalive {
        Keepalive::new(Duration::from_secs(10), Duration::from_secs(2))
    }

    #[test]
    fn insert_find_remove_reuse() {
        let mut t: DpdTable<8> = DpdTable::new();
        for i in 0..8 {
            t.insert(Instant::ZERO, ip(i), true, None).unwrap();
        }
        assert_eq!(
            t.insert(Instant::ZERO, ip(9), true, None),
            Err(IkeError::TableFull)
        );
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert!(!t.contains(v6));
        for i in 0..8 {
            assert!(t.contains(ip(i)));
        }
        assert!(t.remove(ip(3)));
        assert!(!t.remove(ip(3)));
        t.insert(Instant::ZERO, v6, false, None).unwrap();
        assert!(t.contains(v6) && !t.contains(ip(3)) && t.len() == 8);
        t.retain(|p| p != v6);
        assert_eq!(t.len(), 7);
    }

    #[test]
    fn heap_pops_in_deadline_order_against_a_model() {
        // Arm/disarm pseudo-randomly; pops must come out in (deadline, slot) order.
        let mut t: DpdTable<64> = DpdTable::new();
        let k = ka().periodic();
        let mut x = 12345u64;
        let mut model: Vec<(u64, IpAddr)> = Vec::new();
        for i in 0..64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let at = (x >> 40) % 1000;
            t.insert(Instant::from_millis(at), ip(i), true, Some(&k))
                .unwrap();
            model.push((at + 10_000, ip(i)));
            if i % 5 == 0 {
                t.remove(ip(i / 2));
                model.retain(|(_, p)| *p != ip(i / 2));
            }
        }
        model.sort();
        let mut got = Vec::new();
        let end = Instant::from_secs(20);
        while let Some(DpdAction::Probe { peer, .. }) = t.poll_due(end, Some(&k)) {
            got.push(peer);
            t.remove(peer);
        }
        let want: Vec<_> = model.iter().map(|(_, p)| *p).collect();
        assert_eq!(got.len(), want.len());
        let mut sorted_deadlines = Vec::new();
        for p in &got {
            sorted_deadlines.push(model.iter().find(|(_, q)| q == p).unwrap().0);
        }
        assert!(sorted_deadlines.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn on_demand_round_and_death_timing() {
        let k = ka();
        let mut t: DpdTable<4> = DpdTable::new();
        let p = ip(1);
        let t0 = Instant::from_secs(100);
        t.insert(t0, p, true, Some(&k)).unwrap();
        assert_eq!(t.next_deadline(), None, "on demand: nothing armed");
        assert!(!t.note_outbound(t0 + Duration::from_secs(9), p, Some(&k)));
        assert_eq!(t.next_deadline(), None);
        let t1 = t0 + Duration::from_secs(12);
        assert!(t.note_outbound(t1, p, Some(&k)));
        assert_eq!(t.next_deadline(), Some(t1));
        assert_eq!(
            t.poll_due(t1, Some(&k)),
            Some(DpdAction::Probe {
                peer: p,
                attempt: 1
            })
        );
        for a in 2..=5u8 {
            let at = t1 + Duration::from_secs(2 * u64::from(a - 1));
            assert_eq!(t.next_deadline(), Some(at));
            assert_eq!(
                t.poll_due(at, Some(&k)),
                Some(DpdAction::Probe {
                    peer: p,
                    attempt: a
                })
            );
        }
        let dead = t1 + k.dead_after();
        assert_eq!(
            t.poll_due(Instant::from_millis(dead.as_millis() - 1), Some(&k)),
            None
        );
        assert_eq!(
            t.poll_due(dead, Some(&k)),
            Some(DpdAction::Dead {
                peer: p,
                last_proof_of_life: t0
            })
        );
        assert!(t.is_empty() && t.next_deadline().is_none());
    }

    #[test]
    fn inbound_ends_a_round_and_never_arms() {
        let k = ka();
        let mut t: DpdTable<4> = DpdTable::new();
        let p = ip(1);
        t.insert(Instant::ZERO, p, true, Some(&k)).unwrap();
        for s in 0..100 {
            assert!(t.note_inbound(Instant::from_secs(s), p, Some(&k)));
            assert_eq!(t.armed(), 0);
        }
        let t1 = Instant::from_secs(200);
        assert!(t.note_outbound(t1, p, Some(&k)));
        assert!(matches!(
            t.poll_due(t1, Some(&k)),
            Some(DpdAction::Probe { .. })
        ));
        assert_eq!(t.armed(), 1);
        t.note_inbound(t1 + Duration::from_secs(1), p, Some(&k));
        assert_eq!(t.armed(), 0, "round over");
        // An outbound probe armed, then inbound before it fires: dropped when due.
        let t2 = t1 + Duration::from_secs(30);
        assert!(t.note_outbound(t2, p, Some(&k)));
        t.note_inbound(t2, p, Some(&k));
        assert_eq!(t.poll_due(t2, Some(&k)), None);
        // A peer without the DPD VID is never probed unless configured.
        let q = ip(2);
        t.insert(Instant::ZERO, q, false, Some(&k)).unwrap();
        assert!(!t.note_outbound(Instant::from_secs(500), q, Some(&k)));
        let forced = Keepalive {
            without_peer_vid: true,
            ..k
        };
        assert!(t.note_outbound(Instant::from_secs(500), q, Some(&forced)));
    }

    #[test]
    fn periodic_probes_regardless_of_traffic() {
        let k = ka().periodic();
        let mut t: DpdTable<4> = DpdTable::new();
        let p = ip(1);
        t.insert(Instant::ZERO, p, true, Some(&k)).unwrap();
        assert_eq!(t.next_deadline(), Some(Instant::from_secs(10)));
        t.note_inbound(Instant::from_secs(9), p, Some(&k));
        assert_eq!(
            t.poll_due(Instant::from_secs(10), Some(&k)),
            Some(DpdAction::Probe {
                peer: p,
                attempt: 1
            })
        );
        t.acked(Instant::from_millis(10_020), p, Some(&k));
        assert_eq!(t.next_deadline(), Some(Instant::from_secs(20)));
        assert_eq!(t.status(p, Some(&k)).unwrap().counters.acked, 1);
    }
}
