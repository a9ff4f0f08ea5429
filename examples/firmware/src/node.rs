//! One IPsec gateway (IKE control plane + ESP data plane + its RNG) and the in-memory
//! "network" that carries IKE datagrams between two of them on a virtual clock.

use core::fmt::Debug;
use core::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use cortex_m_semihosting::hprintln;
use ipsec_core::dataplane::Dataplane;
use ipsec_core::esp::EspSa;
use ipsec_core::{Duration, Instant};
use ipsec_ike::v1::{Ike, IkeEvent};
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

/// The IKE control plane of one node.
pub type FwIke = Ike<SoftCrypto, IKE_SAS, IKE_CHILDREN>;
/// The ESP data plane of one node.
pub type FwDataplane = Dataplane<SoftCrypto, SADB_N, POLICIES, REPLAY_W, FRAGS, FRAG_SIZE>;
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
    /// Child SA pairs installed into the data plane.
    pub children: u32,
    /// `NegotiationFailed` events seen.
    pub failures: u32,
    /// Datagrams `handle_datagram` refused.
    pub rx_errors: u32,
}

impl Node {
    /// Drains the control plane's events: phase 1 up, child SAs into the data plane.
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
                    reason,
                    ..
                } => {
                    hprintln!(
                        "  [{} t={}ms] child SA {:#010x} deleted: {:?}",
                        self.name,
                        t,
                        inbound_spi,
                        reason
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
    /// A peer that silently drops everything sent to it (a dead peer).
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
            self.collect(a);
            self.collect(b);
            a.drain_events(self.now)?;
            b.drain_events(self.now)?;
            if done(a, b) {
                return Ok(());
            }
            if self.deliver_one(a, b) {
                continue;
            }
            let next = [
                self.next_arrival(),
                a.ike.poll_timeout(),
                b.ike.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next else {
                return Err("nothing left to do before the goal was reached");
            };
            if next > end {
                return Err("virtual time limit reached");
            }
            if next > self.now {
                self.now = next;
            }
            for n in [&mut *a, &mut *b] {
                if n.ike.poll_timeout().is_some_and(|t| t <= self.now) {
                    n.ike.handle_timeout(self.now, &mut n.rng);
                }
            }
        }
        Err("too many simulation steps")
    }
}
