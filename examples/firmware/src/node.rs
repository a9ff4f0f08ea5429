//! One IPsec gateway (IKE control plane + ESP data plane + its RNG) and the in-memory
//! "network" that carries IKE datagrams between two of them on a virtual clock.
//!
//! The gateway also does the port's share of Dead Peer Detection: the data plane reports
//! every ESP packet it sealed for a peer ([`Node::esp_sent`] -> `Ike::note_outbound`)
//! and every one it opened from a peer ([`Node::esp_received`] -> `Ike::note_inbound`),
//! and a `ChildSaDeleted` event removes both directions of the pair from the data plane.

use core::fmt::Debug;
use core::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use cortex_m_semihosting::hprintln;
use ipsec_core::dataplane::Dataplane;
use ipsec_core::esp::EspSa;
use ipsec_core::sadb::SaHandle;
use ipsec_core::{Duration, Instant};
use ipsec_ike::v1::{DeleteReason, Ike, IkeEvent};
use ipsec_soft_crypto::SoftCrypto;

use crate::rng::DemoRng;

// Capacities chosen by this firmware (const generics of the library).
/// IKE SAs per node (one peer, plus room for a phase-1 rekey).
pub const IKE_SAS: usize = 2;
/// Child SA records per node.
pub const IKE_CHILDREN: usize = 4;
/// Entries of each SADB (inbound and outbound).
pub const SADB_N: usize = 4;
/// SPD entries.
pub const POLICIES: usize = 2;
/// Replay bitmap words (64 packets each) of every ESP SA; 2 = the library default.
pub const REPLAY_W: usize = 2;
/// Reassembly slots of the data plane ([`Dataplane::receive`] path; unused here).
pub const FRAGS: usize = 1;
/// Bytes per reassembly slot.
pub const FRAG_SIZE: usize = 1536;
/// Outbound flow-cache entries (64 bytes each): two policies need few; the library
/// default (64) would add 3.5 KB per data plane for nothing.
pub const FLOWS: usize = 8;

/// The IKE control plane of one node.
pub type FwIke = Ike<SoftCrypto, IKE_SAS, IKE_CHILDREN>;
/// The ESP data plane of one node.
pub type FwDataplane = Dataplane<SoftCrypto, SADB_N, POLICIES, REPLAY_W, FRAGS, FRAG_SIZE, FLOWS>;
/// One ESP SA (one direction).
pub type FwEspSa = EspSa<SoftCrypto, REPLAY_W>;

/// Prints a library error (its `Debug` is a small enum, never key material) and turns it
/// into the firmware's error type.
pub fn ctx<T, E: Debug>(r: Result<T, E>, what: &'static str) -> Result<T, &'static str> {
    r.map_err(|e| {
        hprintln!("error: {}: {:?}", what, e);
        what
    })
}

/// A gateway.
pub struct Node {
    pub name: &'static str,
    pub addr: Ipv4Addr,
    pub ike: &'static mut FwIke,
    pub dp: &'static mut FwDataplane,
    pub rng: DemoRng,
    /// The established IKE SA, once up.
    pub conn_id: Option<u32>,
    /// Child SA pairs installed into the data plane (ever; deletions not subtracted).
    pub children: u32,
    /// `NegotiationFailed` events seen.
    pub failures: u32,
    /// Datagrams `handle_datagram` refused.
    pub rx_errors: u32,
    /// What DPD did to this node's SAs.
    pub dpd: DpdSeen,
}

/// The DPD events a node saw, in the order the control plane queued them.
#[derive(Clone, Copy, Debug, Default)]
pub struct DpdSeen {
    /// `PeerDead`: the peer, its last proof of life, and when it was declared dead.
    pub dead: Option<(IpAddr, Instant, Instant)>,
    /// `ChildSaDeleted` with `DeleteReason::DpdDead` (after `PeerDead`).
    pub children_deleted: u32,
    /// `Phase1Deleted` with `DeleteReason::DpdDead` (after the child SAs).
    pub phase1_deleted: u32,
    /// The events came in the documented order: `PeerDead`, then `ChildSaDeleted`,
    /// then `Phase1Deleted`.
    pub in_order: bool,
    /// ESP SAs (either direction) removed from the data plane for `ChildSaDeleted`.
    pub esp_removed: u32,
}

impl Node {
    /// Data plane -> DPD: outbound SA `h` just sealed a packet for its peer. Returns
    /// whether that armed an R-U-THERE (on demand: the peer was silent for the interval).
    pub fn esp_sent(&mut self, now: Instant, h: SaHandle) -> bool {
        let Some(peer) = self.dp.outbound_sa(h).and_then(|sa| sa.config().remote) else {
            return false;
        };
        self.ike.note_outbound(now, peer)
    }

    /// Data plane -> DPD: inbound SA `h` just authenticated and opened a packet from its
    /// peer: proof of life.
    pub fn esp_received(&mut self, now: Instant, h: SaHandle) {
        if let Some(peer) = self.dp.inbound_sa(h).and_then(|sa| sa.config().remote) {
            self.ike.note_inbound(now, peer);
        }
    }

    /// Removes the ESP SAs with these SPIs from the data plane; returns how many went.
    fn remove_esp(&mut self, inbound_spi: u32, outbound_spi: u32) -> u32 {
        let mut n = 0;
        let inb = self.dp.inbound_sas().find(|(_, s)| s.spi() == inbound_spi);
        if let Some(h) = inb.map(|(h, _)| h) {
            n += u32::from(self.dp.remove_inbound(h).is_some());
        }
        let out = self
            .dp
            .outbound_sas()
            .find(|(_, s)| s.spi() == outbound_spi);
        if let Some(h) = out.map(|(h, _)| h) {
            n += u32::from(self.dp.remove_outbound(h).is_some());
        }
        n
    }

    /// Drains the control plane's events: phase 1 up, child SAs into the data plane,
    /// deleted child SAs out of it.
    pub fn drain_events(&mut self, now: Instant) -> Result<(), &'static str> {
        while let Some(ev) = self.ike.poll_event() {
            let t = now.as_millis();
            match ev {
                IkeEvent::Phase1Established { conn_id, peer, .. } => {
                    self.conn_id = Some(conn_id);
                    hprintln!(
                        "  [{} t={}ms] phase 1 (Main Mode) up: conn {} with {}",
                        self.name,
                        t,
                        conn_id,
                        peer
                    );
                }
                IkeEvent::ChildSaEstablished(cs) => {
                    // SPIs are public (they travel in the clear); keys are never printed.
                    hprintln!(
                        "  [{} t={}ms] Quick Mode done: child SA in {:#010x} / out {:#010x}, map {}",
                        self.name,
                        t,
                        cs.inbound.spi,
                        cs.outbound.spi,
                        cs.crypto_map
                    );
                    let (enc, auth) = cs.inbound_keys();
                    let sa = ctx(
                        FwEspSa::new(cs.inbound.clone(), enc, auth, now),
                        "inbound EspSa",
                    )?;
                    ctx(self.dp.install_inbound(sa), "install inbound")?;
                    let (enc, auth) = cs.outbound_keys();
                    let sa = ctx(
                        FwEspSa::new(cs.outbound.clone(), enc, auth, now),
                        "outbound EspSa",
                    )?;
                    ctx(
                        self.dp.install_outbound(cs.crypto_map, sa),
                        "install outbound",
                    )?;
                    self.children += 1;
                    // `cs` (and its keys) is zeroized when dropped here.
                }
                IkeEvent::NegotiationFailed { reason, peer, .. } => {
                    self.failures += 1;
                    hprintln!(
                        "  [{} t={}ms] negotiation with {} failed: {:?}",
                        self.name,
                        t,
                        peer,
                        reason
                    );
                }
                IkeEvent::Phase1Deleted {
                    conn_id, reason, ..
                } => {
                    if self.conn_id == Some(conn_id) {
                        self.conn_id = None;
                    }
                    if reason == DeleteReason::DpdDead {
                        self.dpd.in_order &= self.dpd.children_deleted > 0;
                        self.dpd.phase1_deleted += 1;
                    }
                    hprintln!(
                        "  [{} t={}ms] phase 1 conn {} deleted: {:?}",
                        self.name,
                        t,
                        conn_id,
                        reason
                    );
                }
                IkeEvent::ChildSaDeleted {
                    inbound_spi,
                    outbound_spi,
                    reason,
                    ..
                } => {
                    let removed = self.remove_esp(inbound_spi, outbound_spi);
                    if reason == DeleteReason::DpdDead {
                        self.dpd.in_order &=
                            self.dpd.dead.is_some() && self.dpd.phase1_deleted == 0;
                        self.dpd.children_deleted += 1;
                        self.dpd.esp_removed += removed;
                    }
                    hprintln!(
                        "  [{} t={}ms] child SA in {:#010x} / out {:#010x} deleted: {:?}; {} ESP SAs removed from the data plane",
                        self.name,
                        t,
                        inbound_spi,
                        outbound_spi,
                        reason,
                        removed
                    );
                }
                IkeEvent::PeerDead {
                    peer,
                    last_proof_of_life,
                } => {
                    self.dpd.in_order = self.dpd.dead.is_none()
                        && self.dpd.children_deleted == 0
                        && self.dpd.phase1_deleted == 0;
                    self.dpd.dead = Some((peer, last_proof_of_life, now));
                    hprintln!(
                        "  [{} t={}ms] PeerDead: {} (last proof of life t={}ms)",
                        self.name,
                        t,
                        peer,
                        last_proof_of_life.as_millis()
                    );
                }
                IkeEvent::PeerChanged { from, to, .. } => {
                    hprintln!("  [{} t={}ms] peer {} -> {}", self.name, t, from, to);
                }
                _ => hprintln!("  [{} t={}ms] other IKE event", self.name, t),
            }
        }
        Ok(())
    }
}

/// Largest IKE datagram carried (the library's own transmit buffer is 1536 bytes).
pub const WIRE_MTU: usize = 1536;
/// Datagrams in flight at once.
pub const WIRE_SLOTS: usize = 6;

struct Slot {
    used: bool,
    at: Instant,
    seq: u32,
    from: SocketAddr,
    to: SocketAddr,
    len: usize,
    buf: [u8; WIRE_MTU],
}

const NOWHERE: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

impl Slot {
    const EMPTY: Self = Self {
        used: false,
        at: Instant::ZERO,
        seq: 0,
        from: NOWHERE,
        to: NOWHERE,
        len: 0,
        buf: [0; WIRE_MTU],
    };
}

/// A UDP "network" in RAM with a fixed one-way latency and a virtual clock. Datagrams
/// are written by `poll_transmit` straight into a slot and read from it by
/// `handle_datagram`: no copy.
pub struct Wire {
    pub now: Instant,
    pub latency: Duration,
    /// A dead peer: everything sent to it is dropped, and it sends nothing (whatever it
    /// queues is dropped too).
    pub silent: Option<Ipv4Addr>,
    pub sent: u32,
    pub dropped: u32,
    pub largest: usize,
    slots: [Slot; WIRE_SLOTS],
    seq: u32,
}

impl Wire {
    /// An idle network at time zero. All zero bytes, so that a static of it lands in
    /// .bss rather than .data (which would cost its size in flash too); set `now` and
    /// `latency` at run time.
    pub const fn new() -> Self {
        Self {
            now: Instant::ZERO,
            latency: Duration::ZERO,
            silent: None,
            sent: 0,
            dropped: 0,
            largest: 0,
            slots: [const { Slot::EMPTY }; WIRE_SLOTS],
            seq: 0,
        }
    }

    /// Moves every datagram `n` wants to send onto the wire (while slots are free).
    pub fn collect(&mut self, n: &mut Node) {
        let now = self.now;
        let at = now + self.latency;
        loop {
            let Some(slot) = self.slots.iter_mut().find(|s| !s.used) else {
                return; // the rest stays queued in the control plane
            };
            let Some(t) = n.ike.poll_transmit(now, &mut slot.buf) else {
                return;
            };
            slot.used = true;
            slot.at = at;
            slot.seq = self.seq;
            slot.from = t.src;
            slot.to = t.dst;
            slot.len = t.len;
            self.seq = self.seq.wrapping_add(1);
            self.sent += 1;
            self.largest = self.largest.max(t.len);
        }
    }

    /// When the next datagram arrives.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.slots.iter().filter(|s| s.used).map(|s| s.at).min()
    }

    /// Delivers the oldest datagram due now, if any.
    pub fn deliver_one(&mut self, a: &mut Node, b: &mut Node) -> bool {
        let now = self.now;
        let Some(slot) = self
            .slots
            .iter_mut()
            .filter(|s| s.used && s.at <= now)
            .min_by_key(|s| (s.at, s.seq))
        else {
            return false;
        };
        slot.used = false;
        let to_ip = slot.to.ip();
        if self.silent.is_some_and(|s| slot.from.ip() == IpAddr::V4(s)) {
            self.dropped += 1;
            return true;
        }
        let node = if to_ip == IpAddr::V4(a.addr) {
            a
        } else if to_ip == IpAddr::V4(b.addr) {
            b
        } else {
            self.dropped += 1;
            return true;
        };
        if self.silent == Some(node.addr) {
            self.dropped += 1;
            return true;
        }
        let data = slot.buf.get(..slot.len).unwrap_or(&[]);
        if let Err(e) = node
            .ike
            .handle_datagram(now, &mut node.rng, slot.from, slot.to, data)
        {
            node.rx_errors += 1;
            hprintln!(
                "  [{} t={}ms] datagram refused: {:?}",
                node.name,
                now.as_millis(),
                e
            );
        }
        true
    }

    /// The next thing due: a datagram arrival or a control-plane timer.
    fn next_due(&self, a: &Node, b: &Node) -> Option<Instant> {
        [
            self.next_arrival(),
            a.ike.poll_timeout(),
            b.ike.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Moves queued datagrams onto the wire and drains both nodes' events.
    fn settle(&mut self, a: &mut Node, b: &mut Node) -> Result<(), &'static str> {
        self.collect(a);
        self.collect(b);
        a.drain_events(self.now)?;
        b.drain_events(self.now)?;
        Ok(())
    }

    /// One step: delivers a datagram due now, or advances the clock to the next arrival
    /// or timer (never past `end`) and runs the due timers. `false`: nothing is due up
    /// to `end`.
    fn step(&mut self, a: &mut Node, b: &mut Node, end: Instant) -> Result<bool, &'static str> {
        self.settle(a, b)?;
        if self.deliver_one(a, b) {
            return Ok(true);
        }
        let Some(next) = self.next_due(a, b).filter(|t| *t <= end) else {
            return Ok(false);
        };
        if next > self.now {
            self.now = next;
        }
        for n in [&mut *a, &mut *b] {
            if n.ike.poll_timeout().is_some_and(|t| t <= self.now) {
                n.ike.handle_timeout(self.now, &mut n.rng);
            }
        }
        Ok(true)
    }

    /// Runs the two nodes until `done` holds; gives up after `limit` of virtual time.
    pub fn run_until(
        &mut self,
        a: &mut Node,
        b: &mut Node,
        limit: Duration,
        done: impl Fn(&Node, &Node) -> bool,
    ) -> Result<(), &'static str> {
        let end = self.now + limit;
        for _ in 0..20_000 {
            self.settle(a, b)?;
            if done(a, b) {
                return Ok(());
            }
            if !self.step(a, b, end)? {
                return Err(if self.next_due(a, b).is_none() {
                    "nothing left to do before the goal was reached"
                } else {
                    "virtual time limit reached"
                });
            }
        }
        Err("too many simulation steps")
    }

    /// Runs everything due up to `end`, then sets the clock to `end`. `each` is called
    /// after every step with both nodes and the time of that step (to watch counters).
    pub fn run_to(
        &mut self,
        a: &mut Node,
        b: &mut Node,
        end: Instant,
        mut each: impl FnMut(&Node, &Node, Instant),
    ) -> Result<(), &'static str> {
        for _ in 0..20_000 {
            if !self.step(a, b, end)? {
                self.settle(a, b)?;
                if end > self.now {
                    self.now = end;
                }
                return Ok(());
            }
            each(a, b, self.now);
        }
        Err("too many simulation steps")
    }
}
