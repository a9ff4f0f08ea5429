//! The packet paths of DESIGN.md, tying the SPD, the SADB and the ESP SAs together.
//!
//! Outbound: SPD lookup by the packet's selectors, then the SA bound to the matching
//! crypto-map entry (`sa_group`), then ESP. A protect policy with no SA yet is reported as
//! [`DataplaneError::NoSa`], the cue for the control plane to negotiate one (the IOS
//! "acquire"). The SPD is a first-match list, scanned in order; the [`flow`] cache
//! remembers the decision and the SA of recent flows, so only the first packet of a flow
//! pays for the scan, and the entry-to-SA binding is a hash table. Neither grows with
//! the number of policies or SAs.
//!
//! Inbound: ESP (IP protocol 50, or UDP to the NAT-T port that is not IKE and not a
//! keepalive) is looked up by SPI and destination and opened; IKE and NAT keepalives are
//! handed back to the caller; anything else is cleartext and must be admitted by the SPD
//! (a cleartext packet that matches a protect policy is dropped, RFC 4301 §5.2).
//!
//! Timers: one min-heap of SA deadlines, so `poll_timeout` is O(1) and `handle_timeout`
//! costs O(log n) per deadline that fires, whatever the number of SAs. Idle timeouts and
//! path MTU aging have heaps of their own, on the same terms.
//!
//! [`Dataplane::process_outbound`] and [`Dataplane::process_inbound`] are the basic paths
//! (one packet in, one packet out, no MTU handling). [`Dataplane::send`] and
//! [`Dataplane::receive`] are the full paths of DESIGN.md: MSS clamping, path MTU and the
//! DF bit, fragmentation before or after encryption, ICMP "too big" in both directions,
//! and reassembly before decryption. The SA idle timeout applies to both.

mod bindings;
pub mod flow;
pub mod idle;
pub mod path;
pub mod peer;

pub use path::{
    Fragmentation, IcmpReject, MssClamp, PathCounters, PathMtuChange, Received, SendBuffers, Sent,
};

use core::fmt;
use core::net::IpAddr;

use hal_traits::{CryptoProvider, SecureRng};
use heapless::Deque;
use heapless::binary_heap::{BinaryHeap, Min};

use crate::esp::{Direction, EspError, EspSa, SaEvent};
use crate::fragment::FragmentError;
use crate::reassembly::{Reassembler, ReassemblyError};
use crate::sadb::{SaHandle, Sadb, SadbError};
use crate::spd::{Flow, PolicyAction, Spd};
use crate::time::Instant;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::ipv6::Ipv6Packet;
use crate::wire::udp::UdpPacket;
use crate::wire::{WireError, proto};

/// The IKE port.
pub const IKE_PORT: u16 = 500;
/// The NAT-T port (RFC 3948).
pub const NAT_T_PORT: u16 = 4500;

/// Why the data plane refused a packet. Each has a counter in [`DataplaneCounters`] (or,
/// for [`DataplaneError::Esp`], in the SA's own counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DataplaneError {
    /// No inbound SA has this SPI (`#pkts invalid sa (rcv)`).
    UnknownSpi {
        /// The SPI.
        spi: u32,
    },
    /// A discard policy matched.
    Discarded,
    /// A protect policy matched but no outbound SA is installed for its entry: negotiate.
    NoSa {
        /// The crypto map entry to negotiate for.
        sa_group: u32,
    },
    /// A cleartext packet matched a protect policy (or the default discard).
    CleartextRejected,
    /// An unparsable packet.
    Malformed(WireError),
    /// The SA refused the packet (see its counters).
    Esp(EspError),
    /// The SADB, the binding table or the timer heap is full.
    Full,
    /// A fragment was refused by reassembly (see [`Dataplane::reassembly_counters`]).
    Reassembly(ReassemblyError),
    /// An ICMP "too big" about one of our SAs failed validation (see
    /// [`Dataplane::path_counters`]).
    Icmp(IcmpReject),
    /// An outbound packet could not be fragmented.
    Fragment(FragmentError),
}

impl fmt::Display for DataplaneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownSpi { spi } => write!(f, "no SA for SPI {spi:#010x}"),
            Self::Discarded => f.write_str("discarded by policy"),
            Self::NoSa { sa_group } => write!(f, "no SA yet for crypto map entry {sa_group}"),
            Self::CleartextRejected => f.write_str("cleartext packet where policy requires IPsec"),
            Self::Malformed(e) => write!(f, "malformed packet: {e}"),
            Self::Esp(e) => write!(f, "{e}"),
            Self::Full => f.write_str("table full"),
            Self::Reassembly(e) => write!(f, "{e}"),
            Self::Icmp(e) => write!(f, "ICMP ignored: {e}"),
            Self::Fragment(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for DataplaneError {}

impl From<WireError> for DataplaneError {
    fn from(e: WireError) -> Self {
        Self::Malformed(e)
    }
}

impl From<EspError> for DataplaneError {
    fn from(e: EspError) -> Self {
        Self::Esp(e)
    }
}

impl From<SadbError> for DataplaneError {
    fn from(_: SadbError) -> Self {
        Self::Full
    }
}

/// Counters for drops that happen before an SA is found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DataplaneCounters {
    /// ESP with an SPI we have no SA for (`#pkts invalid sa (rcv)`).
    pub invalid_sa: u64,
    /// Outbound packets dropped by a discard policy.
    pub policy_discard: u64,
    /// Outbound packets that matched a protect policy with no SA (acquires).
    pub no_sa: u64,
    /// Inbound cleartext refused by policy.
    pub cleartext_rejected: u64,
    /// Inbound cleartext admitted by policy.
    pub cleartext_admitted: u64,
    /// Outbound packets sent in clear by a bypass policy.
    pub bypassed: u64,
    /// NAT keepalives received (RFC 3948 §2.3).
    pub nat_keepalives: u64,
    /// Unparsable packets.
    pub malformed: u64,
    /// Outbound packets whose SPD decision came from the [`flow`] cache (no SPD scan).
    pub flow_cache_hits: u64,
    /// Outbound packets that scanned the SPD: the first of a flow, one whose entry was
    /// evicted or predates an SPD change, or any while the cache is off.
    pub flow_cache_misses: u64,
}

/// Events for the control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DataplaneEvent {
    /// The SA concerned.
    pub sa: SaHandle,
    /// Its direction.
    pub direction: Direction,
    /// What happened.
    pub event: SaEvent,
}

/// What became of an outbound packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outbound {
    /// Encapsulated into `out[..len]` with the SA `sa`.
    Protected {
        /// Length of the packet in the output buffer.
        len: usize,
        /// The outbound SA used.
        sa: SaHandle,
    },
    /// A bypass policy matched: send the packet as it is.
    Bypass,
}

/// What became of an inbound packet.
#[derive(Debug)]
pub enum Inbound<'b> {
    /// ESP was opened: the inner (or rebuilt transport-mode) packet.
    Decapsulated {
        /// The packet, inside the caller's buffer.
        packet: &'b mut [u8],
        /// The inbound SA that opened it.
        sa: SaHandle,
    },
    /// IKE (UDP 500, or UDP 4500 with the non-ESP marker): for the control plane.
    Ike,
    /// A NAT keepalive: counted and dropped.
    NatKeepalive,
    /// Cleartext admitted by a bypass policy: deliver as it is.
    Cleartext,
}

/// One direction's SA table.
type Table<P, const N: usize, const W: usize> = Sadb<EspSa<P, W>, N>;

/// The SPD, inbound and outbound SADBs, the bindings from crypto-map entries to outbound
/// SAs, the outbound flow cache, and the lifetime timers.
///
/// `SAS` is the capacity of each SADB (inbound and outbound), `POLICIES` that of the SPD,
/// `W` the replay bitmap size of every SA (see [`EspSa`]), `FRAGS` and `FRAG_SIZE` the
/// number and payload size of the reassembly buffers used by [`Dataplane::receive`].
///
/// `FLOWS` is the number of entries of the outbound [`flow`] cache (even; 0 turns it
/// off). Each costs [`flow::ENTRY_BYTES`] (64) bytes, plus 104 bytes for the cache:
/// 4 200 bytes at the default of 64 entries, 16 488 at 256, 65 640 at 1024. A firmware
/// that sends to a handful of networks needs few; a hub should have room for its busy
/// flows, since a flow that does not fit scans the SPD on every packet.
pub struct Dataplane<
    P: CryptoProvider,
    const SAS: usize,
    const POLICIES: usize,
    const W: usize = 2,
    const FRAGS: usize = 4,
    const FRAG_SIZE: usize = 4096,
    const FLOWS: usize = 64,
> {
    spd: Spd<POLICIES>,
    inbound: Table<P, SAS, W>,
    outbound: Table<P, SAS, W>,
    bindings: bindings::Bindings<POLICIES>,
    flows: flow::FlowCache<FLOWS>,
    // One heap per table, so each can always hold a deadline for every live SA.
    in_timers: BinaryHeap<(Instant, SaHandle), Min, SAS>,
    out_timers: BinaryHeap<(Instant, SaHandle), Min, SAS>,
    events: Deque<DataplaneEvent, 16>,
    counters: DataplaneCounters,
    idle: idle::IdleTimers<SAS>,
    path: path::PathState<SAS>,
    reassembler: Reassembler<FRAGS, FRAG_SIZE>,
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
    /// An empty data plane whose SPD falls back to `default_action` (RFC 4301: discard;
    /// IOS: bypass).
    #[must_use]
    pub fn new(default_action: PolicyAction) -> Self {
        Self {
            spd: Spd::new(default_action),
            inbound: Sadb::new(),
            outbound: Sadb::new(),
            bindings: bindings::Bindings::new(),
            flows: flow::FlowCache::new(),
            in_timers: BinaryHeap::new(),
            out_timers: BinaryHeap::new(),
            events: Deque::new(),
            counters: DataplaneCounters::default(),
            idle: idle::IdleTimers::new(),
            path: path::PathState::new(),
            reassembler: Reassembler::new(crate::reassembly::DEFAULT_TIMEOUT),
        }
    }

    /// The security policy database.
    #[must_use]
    pub const fn spd(&self) -> &Spd<POLICIES> {
        &self.spd
    }

    /// The security policy database, to add or remove policies.
    ///
    /// Every call invalidates the decisions in the [`flow`] cache (whatever the caller
    /// then does): each flow scans the SPD again on its next packet.
    pub fn spd_mut(&mut self) -> &mut Spd<POLICIES> {
        self.flows.spd_changed();
        &mut self.spd
    }

    /// Counters of drops before any SA.
    #[must_use]
    pub const fn counters(&self) -> &DataplaneCounters {
        &self.counters
    }

    /// Installs an inbound SA.
    ///
    /// # Errors
    /// [`DataplaneError::Esp`] with [`EspError::WrongDirection`] for an outbound SA;
    /// [`DataplaneError::Full`].
    pub fn install_inbound(&mut self, sa: EspSa<P, W>) -> Result<SaHandle, DataplaneError> {
        if sa.config().direction != Direction::Inbound {
            return Err(EspError::WrongDirection.into());
        }
        let deadline = sa.poll_timeout();
        let h = self.inbound.insert(sa)?;
        self.arm(deadline, h, true);
        self.idle_track(h, true);
        Ok(h)
    }

    /// Installs an outbound SA and binds crypto-map entry `sa_group` to it. A previous SA
    /// of the same entry stays installed (rekey overlap) until removed, but new traffic
    /// uses the new one.
    ///
    /// # Errors
    /// As [`Dataplane::install_inbound`].
    pub fn install_outbound(
        &mut self,
        sa_group: u32,
        sa: EspSa<P, W>,
    ) -> Result<SaHandle, DataplaneError> {
        if sa.config().direction != Direction::Outbound {
            return Err(EspError::WrongDirection.into());
        }
        let deadline = sa.poll_timeout();
        let h = self.outbound.insert(sa)?;
        // Before the binding: even a failed install has touched the SADB.
        self.flows.sas_changed();
        if self.bindings.bind(sa_group, h).is_err() {
            self.outbound.remove(h);
            return Err(DataplaneError::Full);
        }
        self.arm(deadline, h, false);
        self.idle_track(h, false);
        Ok(h)
    }

    /// Removes an inbound SA.
    pub fn remove_inbound(&mut self, h: SaHandle) -> Option<EspSa<P, W>> {
        self.inbound.remove(h)
    }

    /// Removes an outbound SA and any binding to it. Traffic of its crypto-map entry then
    /// gets [`DataplaneError::NoSa`] until another SA is installed for the entry.
    pub fn remove_outbound(&mut self, h: SaHandle) -> Option<EspSa<P, W>> {
        self.flows.sas_changed();
        self.bindings.unbind_sa(h);
        self.outbound.remove(h)
    }

    /// An inbound SA.
    #[must_use]
    pub fn inbound_sa(&self, h: SaHandle) -> Option<&EspSa<P, W>> {
        self.inbound.get(h)
    }

    /// An outbound SA.
    #[must_use]
    pub fn outbound_sa(&self, h: SaHandle) -> Option<&EspSa<P, W>> {
        self.outbound.get(h)
    }

    /// The outbound SA bound to crypto-map entry `sa_group`.
    #[must_use]
    pub fn outbound_for(&self, sa_group: u32) -> Option<SaHandle> {
        self.bindings.get(sa_group)
    }

    /// The SPD decision for an outbound `flow` and, for a protect policy, its current SA:
    /// from the flow cache if it has them, else by a scan of the SPD (then cached).
    fn decide_outbound<R: SecureRng>(&mut self, flow: &Flow, rng: &mut R) -> flow::Decision {
        let probe = if self.flows.ensure_keyed(rng) {
            self.flows.probe(flow)
        } else {
            flow::Probe::Off
        };
        match probe {
            flow::Probe::Hit(d) => {
                bump(&mut self.counters.flow_cache_hits);
                d
            }
            flow::Probe::Rebind { slot, sa_group } => {
                bump(&mut self.counters.flow_cache_hits);
                let sa = self.bindings.get(sa_group);
                self.flows.set_sa(slot, sa);
                flow::Decision {
                    action: PolicyAction::Protect { sa_group },
                    sa,
                }
            }
            flow::Probe::Miss { set } => {
                bump(&mut self.counters.flow_cache_misses);
                let d = self.decide_uncached(flow);
                self.flows.insert(set, flow, d);
                d
            }
            flow::Probe::Off => {
                bump(&mut self.counters.flow_cache_misses);
                self.decide_uncached(flow)
            }
        }
    }

    fn decide_uncached(&self, flow: &Flow) -> flow::Decision {
        let action = self.spd.decide_outbound(flow);
        let sa = match action {
            PolicyAction::Protect { sa_group } => self.bindings.get(sa_group),
            PolicyAction::Bypass | PolicyAction::Discard => None,
        };
        flow::Decision { action, sa }
    }

    /// All inbound SAs.
    pub fn inbound_sas(&self) -> impl Iterator<Item = (SaHandle, &EspSa<P, W>)> + '_ {
        self.inbound.iter()
    }

    /// All outbound SAs.
    pub fn outbound_sas(&self) -> impl Iterator<Item = (SaHandle, &EspSa<P, W>)> + '_ {
        self.outbound.iter()
    }

    /// Sends `packet` (an IP packet from the protected side) through policy: protected
    /// into `out`, or bypassed.
    ///
    /// # Errors
    /// [`DataplaneError::Discarded`], [`DataplaneError::NoSa`], [`DataplaneError::Malformed`],
    /// [`DataplaneError::Esp`].
    pub fn process_outbound<R: SecureRng>(
        &mut self,
        now: Instant,
        packet: &[u8],
        rng: &mut R,
        out: &mut [u8],
    ) -> Result<Outbound, DataplaneError> {
        let flow = match Flow::from_ip_packet(packet) {
            Ok(f) => f,
            Err(e) => {
                bump(&mut self.counters.malformed);
                return Err(e.into());
            }
        };
        let decision = self.decide_outbound(&flow, rng);
        match decision.action {
            PolicyAction::Bypass => {
                bump(&mut self.counters.bypassed);
                Ok(Outbound::Bypass)
            }
            PolicyAction::Discard => {
                bump(&mut self.counters.policy_discard);
                Err(DataplaneError::Discarded)
            }
            PolicyAction::Protect { sa_group } => {
                let Some((h, sa)) = decision
                    .sa
                    .and_then(|h| self.outbound.get_mut(h).map(|sa| (h, sa)))
                else {
                    bump(&mut self.counters.no_sa);
                    return Err(DataplaneError::NoSa { sa_group });
                };
                let r = sa.encapsulate(now, packet, None, rng, out);
                if sa.has_pending_event() {
                    self.collect(h, false);
                }
                Ok(Outbound::Protected { len: r?, sa: h })
            }
        }
    }

    /// Handles a packet received from the network.
    ///
    /// # Errors
    /// [`DataplaneError::UnknownSpi`], [`DataplaneError::CleartextRejected`],
    /// [`DataplaneError::Malformed`], [`DataplaneError::Esp`].
    pub fn process_inbound<'b>(
        &mut self,
        now: Instant,
        packet: &'b mut [u8],
    ) -> Result<Inbound<'b>, DataplaneError> {
        let class = match classify(packet) {
            Ok(c) => c,
            Err(e) => {
                bump(&mut self.counters.malformed);
                return Err(e.into());
            }
        };
        match class {
            Class::Ike => Ok(Inbound::Ike),
            Class::NatKeepalive => {
                bump(&mut self.counters.nat_keepalives);
                Ok(Inbound::NatKeepalive)
            }
            Class::Esp { spi, dst } => {
                let Some(h) = self
                    .inbound
                    .lookup(spi, dst)
                    .or_else(|| self.inbound.lookup_spi(spi))
                else {
                    bump(&mut self.counters.invalid_sa);
                    return Err(DataplaneError::UnknownSpi { spi });
                };
                let sa = self
                    .inbound
                    .get_mut(h)
                    .ok_or(DataplaneError::UnknownSpi { spi })?;
                let r = sa.decapsulate(now, packet);
                if sa.has_pending_event() {
                    self.collect(h, true);
                }
                let d = r?;
                Ok(Inbound::Decapsulated {
                    packet: d.packet,
                    sa: h,
                })
            }
            Class::Other => {
                let flow = Flow::from_ip_packet(packet)?;
                if self.spd.admits_cleartext(&flow) {
                    bump(&mut self.counters.cleartext_admitted);
                    Ok(Inbound::Cleartext)
                } else {
                    bump(&mut self.counters.cleartext_rejected);
                    Err(DataplaneError::CleartextRejected)
                }
            }
        }
    }

    /// The earliest deadline: lifetimes, idle timeouts, path MTU aging, reassembly.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.in_timers.peek().map(|(t, _)| *t),
            self.out_timers.peek().map(|(t, _)| *t),
            self.idle.next_deadline(),
            self.path.next_deadline(),
            self.reassembler.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fires every deadline due at `now`. A spurious call is a no-op.
    ///
    /// Drain [`Dataplane::poll_event`] afterwards: idle deletions wait for room in the
    /// event queue rather than lose their event, so they stay due until it is drained.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.fire(now, true);
        self.fire(now, false);
        self.fire_idle(now);
        self.fire_pmtu_aging(now);
        self.reassembler.handle_timeout(now);
    }

    fn fire(&mut self, now: Instant, inbound: bool) {
        loop {
            let timers = if inbound {
                &mut self.in_timers
            } else {
                &mut self.out_timers
            };
            let Some(&(t, h)) = timers.peek() else { break };
            if t > now {
                break;
            }
            let _ = timers.pop();
            let table = if inbound {
                &mut self.inbound
            } else {
                &mut self.outbound
            };
            let Some(sa) = table.get_mut(h) else { continue }; // removed since
            sa.handle_timeout(now);
            let next = sa.poll_timeout();
            if sa.has_pending_event() {
                self.collect(h, inbound);
            }
            self.arm(next, h, inbound);
        }
    }

    /// The next event for the control plane.
    pub fn poll_event(&mut self) -> Option<DataplaneEvent> {
        self.events.pop_front()
    }

    /// Moves an SA's pending lifetime events into the event queue.
    fn collect(&mut self, h: SaHandle, inbound: bool) {
        let (table, direction) = if inbound {
            (&mut self.inbound, Direction::Inbound)
        } else {
            (&mut self.outbound, Direction::Outbound)
        };
        let Some(sa) = table.get_mut(h) else { return };
        while let Some(event) = sa.poll_event() {
            // A full queue drops the oldest: the SA's state still says it expired.
            if self.events.is_full() {
                let _ = self.events.pop_front();
            }
            let _ = self.events.push_back(DataplaneEvent {
                sa: h,
                direction,
                event,
            });
        }
    }

    fn arm(&mut self, deadline: Option<Instant>, h: SaHandle, inbound: bool) {
        let Some(t) = deadline else { return };
        let (timers, table) = if inbound {
            (&mut self.in_timers, &self.inbound)
        } else {
            (&mut self.out_timers, &self.outbound)
        };
        if timers.push((t, h)).is_ok() {
            return;
        }
        // Full of entries for removed SAs: rebuild from the live ones, which always fit
        // (one entry each, at most SAS of them).
        timers.clear();
        for (hh, sa) in table.iter() {
            if let Some(d) = sa.poll_timeout() {
                let _ = timers.push((d, hh));
            }
        }
    }
}

fn bump(c: &mut u64) {
    *c = c.saturating_add(1);
}

enum Class {
    Esp { spi: u32, dst: IpAddr },
    Ike,
    NatKeepalive,
    Other,
}

/// Sorts a received packet by the first rule of DESIGN.md's inbound path.
fn classify(packet: &[u8]) -> Result<Class, WireError> {
    let (proto_, l4, dst) = match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let ip = Ipv4Packet::new_checked(packet)?;
            if ip.is_fragment() {
                return Ok(Class::Other);
            }
            let end = usize::from(ip.total_len());
            (
                ip.protocol(),
                packet
                    .get(ip.header_len()..end)
                    .ok_or(WireError::Truncated)?,
                IpAddr::V4(ip.dst_addr()),
            )
        }
        Some(6) => {
            let ip = Ipv6Packet::new_checked(packet)?;
            let (p, off) = ip.upper_layer()?;
            let end = ip.total_len();
            (
                p,
                packet.get(off..end).ok_or(WireError::Truncated)?,
                IpAddr::V6(ip.dst_addr()),
            )
        }
        _ => return Err(WireError::BadVersion),
    };
    let spi_of = |b: &[u8]| -> Result<u32, WireError> {
        let s = b.first_chunk::<4>().ok_or(WireError::Truncated)?;
        Ok(u32::from_be_bytes(*s))
    };
    match proto_ {
        proto::ESP => Ok(Class::Esp {
            spi: spi_of(l4)?,
            dst,
        }),
        proto::UDP => {
            let udp = UdpPacket::new_checked(l4)?;
            let payload = udp.payload();
            match udp.dst_port() {
                IKE_PORT => Ok(Class::Ike),
                NAT_T_PORT => match payload {
                    [0xff] => Ok(Class::NatKeepalive),
                    [0, 0, 0, 0, ..] => Ok(Class::Ike),
                    _ => Ok(Class::Esp {
                        spi: spi_of(payload)?,
                        dst,
                    }),
                },
                _ => Ok(Class::Other),
            }
        }
        _ => Ok(Class::Other),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec;
    use std::vec::Vec;

    use core::net::Ipv4Addr;

    use hal_traits::{CipherAlg, CryptoError, MacAlg};
    use ipsec_soft_crypto::SoftCrypto;

    use super::*;
    use crate::esp::{Encryption, EspConfig, Transform, UdpEncap};
    use crate::lifetime::LifetimeConfig;
    use crate::spd::{AddrRange, Policy, Selector};
    use crate::time::Duration;
    use crate::wire::ipv4::Ipv4Repr;

    pub(super) struct Counter(pub(super) u8);
    impl SecureRng for Counter {
        fn fill_bytes(&mut self, d: &mut [u8]) -> Result<(), CryptoError> {
            for b in d {
                self.0 = self.0.wrapping_add(37);
                *b = self.0;
            }
            Ok(())
        }
    }

    pub(super) type Dp = Dataplane<SoftCrypto, 8, 4>;
    pub(super) const T: Transform = Transform {
        enc: Encryption::Cbc(CipherAlg::Aes128Cbc),
        auth: Some(MacAlg::HmacSha1_96),
    };
    const GW_A: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
    const GW_B: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

    pub(super) fn net(a: [u8; 4], len: u8) -> AddrRange {
        AddrRange::from_prefix(IpAddr::V4(Ipv4Addr::from(a)), len).unwrap()
    }

    /// `access-list 100 permit ip 10.0.68.0 0.0.0.255 10.1.1.0 0.0.0.255` on A, mirrored on B.
    fn selector(a_side: bool) -> Selector {
        let (l, r) = (net([10, 0, 68, 0], 24), net([10, 1, 1, 0], 24));
        if a_side {
            Selector::new(l, r).unwrap()
        } else {
            Selector::new(r, l).unwrap()
        }
    }

    fn sa(
        spi: u32,
        dir: Direction,
        local: Ipv4Addr,
        remote: Ipv4Addr,
        a_side: bool,
        lt: LifetimeConfig,
    ) -> EspSa<SoftCrypto> {
        let mut c = EspConfig::tunnel(spi, dir, T, IpAddr::V4(local), IpAddr::V4(remote));
        c.selector = Some(selector(a_side));
        c.lifetime = lt;
        EspSa::new(c, &[7; 16], &[9; 20], Instant::ZERO).unwrap()
    }

    fn gateways(lt: LifetimeConfig) -> (Dp, Dp) {
        let mut a = Dp::new(PolicyAction::Bypass);
        let mut b = Dp::new(PolicyAction::Bypass);
        a.spd_mut()
            .insert(Policy {
                seq: 10,
                selector: selector(true),
                action: PolicyAction::Protect { sa_group: 10 },
            })
            .unwrap();
        b.spd_mut()
            .insert(Policy {
                seq: 10,
                selector: selector(false),
                action: PolicyAction::Protect { sa_group: 10 },
            })
            .unwrap();
        a.install_outbound(10, sa(0x1111, Direction::Outbound, GW_A, GW_B, true, lt))
            .unwrap();
        b.install_inbound(sa(0x1111, Direction::Inbound, GW_B, GW_A, false, lt))
            .unwrap();
        b.install_outbound(10, sa(0x2222, Direction::Outbound, GW_B, GW_A, false, lt))
            .unwrap();
        a.install_inbound(sa(0x2222, Direction::Inbound, GW_A, GW_B, true, lt))
            .unwrap();
        (a, b)
    }

    pub(super) fn ip(src: [u8; 4], dst: [u8; 4], protocol: u8, payload: &[u8]) -> Vec<u8> {
        let r = Ipv4Repr {
            src: Ipv4Addr::from(src),
            dst: Ipv4Addr::from(dst),
            protocol,
            payload_len: payload.len(),
            ttl: 64,
            tos: 0,
            ident: 1,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
        };
        let mut v = vec![0u8; r.buffer_len()];
        r.emit(&mut v).unwrap();
        v[20..].copy_from_slice(payload);
        v
    }

    #[test]
    fn protected_traffic_crosses_and_returns() {
        let (mut a, mut b) = gateways(LifetimeConfig::default());
        let mut rng = Counter(0);
        let ping = ip(
            [10, 0, 68, 5],
            [10, 1, 1, 7],
            proto::ICMP,
            &[8, 0, 0, 0, 0, 1, 0, 1],
        );
        let mut out = [0u8; 256];
        let Outbound::Protected { len, .. } = a
            .process_outbound(Instant::ZERO, &ping, &mut rng, &mut out)
            .unwrap()
        else {
            panic!("not protected");
        };
        assert_eq!(out[9], proto::ESP);
        let Inbound::Decapsulated { packet, .. } =
            b.process_inbound(Instant::ZERO, &mut out[..len]).unwrap()
        else {
            panic!("not ESP");
        };
        assert_eq!(packet, &ping[..]);

        let reply = ip(
            [10, 1, 1, 7],
            [10, 0, 68, 5],
            proto::ICMP,
            &[0, 0, 0, 0, 0, 1, 0, 1],
        );
        let Outbound::Protected { len, .. } = b
            .process_outbound(Instant::ZERO, &reply, &mut rng, &mut out)
            .unwrap()
        else {
            panic!("not protected");
        };
        let Inbound::Decapsulated { packet, .. } =
            a.process_inbound(Instant::ZERO, &mut out[..len]).unwrap()
        else {
            panic!("not ESP");
        };
        assert_eq!(packet, &reply[..]);
        let (_, sa) = a.outbound_sas().next().unwrap();
        assert_eq!(
            (
                sa.counters().encaps,
                sa.counters().encrypt,
                sa.counters().digest
            ),
            (1, 1, 1)
        );
    }

    #[test]
    fn policy_decisions_and_drops_are_counted() {
        let (mut a, mut b) = gateways(LifetimeConfig::default());
        let mut rng = Counter(0);
        let mut out = [0u8; 256];
        // Not matched by ACL 100: bypass (the IOS default for crypto maps).
        let other = ip(
            [192, 0, 2, 9],
            [198, 51, 100, 9],
            proto::UDP,
            &[0, 1, 0, 2, 0, 8, 0, 0],
        );
        assert_eq!(
            a.process_outbound(Instant::ZERO, &other, &mut rng, &mut out),
            Ok(Outbound::Bypass)
        );
        // A discard policy in front.
        a.spd_mut()
            .insert(Policy {
                seq: 5,
                selector: Selector::new(net([10, 0, 68, 66], 32), net([10, 1, 1, 0], 24)).unwrap(),
                action: PolicyAction::Discard,
            })
            .unwrap();
        let blocked = ip([10, 0, 68, 66], [10, 1, 1, 1], proto::ICMP, &[8, 0, 0, 0]);
        assert_eq!(
            a.process_outbound(Instant::ZERO, &blocked, &mut rng, &mut out),
            Err(DataplaneError::Discarded)
        );
        // A protect policy without SA: acquire.
        a.spd_mut()
            .insert(Policy {
                seq: 20,
                selector: Selector::new(net([10, 0, 69, 0], 24), net([10, 2, 0, 0], 16)).unwrap(),
                action: PolicyAction::Protect { sa_group: 20 },
            })
            .unwrap();
        let new_net = ip([10, 0, 69, 1], [10, 2, 3, 4], proto::ICMP, &[8, 0, 0, 0]);
        assert_eq!(
            a.process_outbound(Instant::ZERO, &new_net, &mut rng, &mut out),
            Err(DataplaneError::NoSa { sa_group: 20 })
        );
        // Cleartext that should have been protected is refused inbound.
        let mut clear = ip([10, 1, 1, 7], [10, 0, 68, 5], proto::ICMP, &[0, 0, 0, 0]);
        assert_eq!(
            a.process_inbound(Instant::ZERO, &mut clear).unwrap_err(),
            DataplaneError::CleartextRejected
        );
        let mut fine = other.clone();
        assert!(matches!(
            b.process_inbound(Instant::ZERO, &mut fine),
            Ok(Inbound::Cleartext)
        ));
        // Unknown SPI.
        let mut esp = ip(
            [203, 0, 113, 2],
            [203, 0, 113, 1],
            proto::ESP,
            &[0, 0, 0x99, 0x99, 0, 0, 0, 1, 0, 0, 0, 0],
        );
        assert_eq!(
            a.process_inbound(Instant::ZERO, &mut esp).unwrap_err(),
            DataplaneError::UnknownSpi { spi: 0x9999 }
        );
        // IKE and keepalives are sorted out, not treated as ESP.
        let mut ike = ip(
            [203, 0, 113, 2],
            [203, 0, 113, 1],
            proto::UDP,
            &[0x11, 0x94, 0x11, 0x94, 0, 16, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
        );
        assert!(matches!(
            a.process_inbound(Instant::ZERO, &mut ike),
            Ok(Inbound::Ike)
        ));
        let mut ka = ip(
            [203, 0, 113, 2],
            [203, 0, 113, 1],
            proto::UDP,
            &[0x11, 0x94, 0x11, 0x94, 0, 9, 0, 0, 0xff],
        );
        assert!(matches!(
            a.process_inbound(Instant::ZERO, &mut ka),
            Ok(Inbound::NatKeepalive)
        ));
        let c = a.counters();
        assert_eq!(
            (
                c.bypassed,
                c.policy_discard,
                c.no_sa,
                c.cleartext_rejected,
                c.invalid_sa,
                c.nat_keepalives
            ),
            (1, 1, 1, 1, 1, 1)
        );
        assert_eq!(b.counters().cleartext_admitted, 1);
    }

    #[test]
    fn udp_encapsulated_sa_is_found_by_spi() {
        let mut b = Dp::new(PolicyAction::Discard);
        let mut cfg = EspConfig::tunnel(
            0x4242,
            Direction::Inbound,
            T,
            IpAddr::V4(GW_B),
            IpAddr::V4(GW_A),
        );
        cfg.udp_encap = Some(UdpEncap::STANDARD);
        b.install_inbound(EspSa::new(cfg.clone(), &[1; 16], &[2; 20], Instant::ZERO).unwrap())
            .unwrap();
        cfg.direction = Direction::Outbound;
        cfg.local = Some(IpAddr::V4(GW_A));
        cfg.remote = Some(IpAddr::V4(GW_B));
        let mut o: EspSa<SoftCrypto> = EspSa::new(cfg, &[1; 16], &[2; 20], Instant::ZERO).unwrap();
        let inner = ip([10, 0, 68, 5], [10, 1, 1, 7], proto::ICMP, &[8, 0, 0, 0]);
        let mut out = [0u8; 256];
        let n = o
            .encapsulate(Instant::ZERO, &inner, None, &mut Counter(1), &mut out)
            .unwrap();
        let Inbound::Decapsulated { packet, .. } =
            b.process_inbound(Instant::ZERO, &mut out[..n]).unwrap()
        else {
            panic!()
        };
        assert_eq!(packet, &inner[..]);
    }

    #[test]
    fn lifetimes_fire_from_one_heap_in_order() {
        let lt = LifetimeConfig {
            soft_time: Some(Duration::from_secs(90)),
            hard_time: Some(Duration::from_secs(100)),
            soft_bytes: None,
            hard_bytes: None,
        };
        let (mut a, _) = gateways(lt);
        assert_eq!(a.poll_timeout(), Some(Instant::from_secs(90)));
        a.handle_timeout(Instant::from_millis(89_999));
        assert_eq!(a.poll_event(), None);
        a.handle_timeout(Instant::from_secs(90));
        let e1 = a.poll_event().unwrap();
        let e2 = a.poll_event().unwrap();
        assert!(matches!(e1.event, SaEvent::SoftExpired { .. }));
        assert!(matches!(e2.event, SaEvent::SoftExpired { .. }));
        assert_ne!(e1.direction, e2.direction);
        assert_eq!(a.poll_event(), None);
        assert_eq!(a.poll_timeout(), Some(Instant::from_secs(100)));
        a.handle_timeout(Instant::from_secs(100));
        assert!(matches!(
            a.poll_event().unwrap().event,
            SaEvent::HardExpired { .. }
        ));
        assert!(matches!(
            a.poll_event().unwrap().event,
            SaEvent::HardExpired { .. }
        ));
        assert_eq!(a.poll_timeout(), None);
        // The expired outbound SA refuses traffic.
        let ping = ip([10, 0, 68, 5], [10, 1, 1, 7], proto::ICMP, &[8, 0, 0, 0]);
        let mut out = [0u8; 256];
        assert_eq!(
            a.process_outbound(Instant::from_secs(100), &ping, &mut Counter(0), &mut out),
            Err(DataplaneError::Esp(EspError::Expired))
        );
    }

    #[test]
    fn removed_sas_leave_no_timer_behind() {
        let lt = LifetimeConfig {
            soft_time: None,
            hard_time: Some(Duration::from_secs(5)),
            soft_bytes: None,
            hard_bytes: None,
        };
        let (mut a, _) = gateways(lt);
        let hs: Vec<_> = a.inbound_sas().map(|(h, _)| h).collect();
        for h in hs {
            assert!(a.remove_inbound(h).is_some());
        }
        let ho = a.outbound_for(10).unwrap();
        assert!(a.remove_outbound(ho).is_some());
        assert_eq!(a.outbound_for(10), None);
        a.handle_timeout(Instant::from_secs(10));
        assert_eq!(a.poll_event(), None);
        assert_eq!(a.poll_timeout(), None);
    }

    fn ping_from(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        ip(src, dst, proto::ICMP, &[8, 0, 0, 0, 0, 1, 0, 1])
    }

    fn sa_of(r: Result<Outbound, DataplaneError>) -> Result<Option<SaHandle>, DataplaneError> {
        r.map(|o| match o {
            Outbound::Protected { sa, .. } => Some(sa),
            Outbound::Bypass => None,
        })
    }

    #[test]
    fn repeated_flow_hits_the_cache() {
        let (mut a, _) = gateways(LifetimeConfig::default());
        let mut out = [0u8; 256];
        let h = a.outbound_for(10).unwrap();
        let p = ping_from([10, 0, 68, 5], [10, 1, 1, 7]);
        for _ in 0..5 {
            let r = a.process_outbound(Instant::ZERO, &p, &mut Counter(0), &mut out);
            assert_eq!(sa_of(r), Ok(Some(h)));
        }
        let other = ping_from([10, 0, 68, 6], [10, 1, 1, 7]);
        let r = a.process_outbound(Instant::ZERO, &other, &mut Counter(0), &mut out);
        assert_eq!(sa_of(r), Ok(Some(h)));
        let c = a.counters();
        assert_eq!((c.flow_cache_misses, c.flow_cache_hits), (2, 4));
        // Malformed packets never reach the cache.
        assert!(
            a.process_outbound(Instant::ZERO, &[0x45, 0], &mut Counter(0), &mut out)
                .is_err()
        );
        assert_eq!(a.counters().flow_cache_misses, 2);
    }

    struct Broken;
    impl SecureRng for Broken {
        fn fill_bytes(&mut self, _: &mut [u8]) -> Result<(), CryptoError> {
            Err(CryptoError::Rng)
        }
    }

    #[test]
    fn failing_rng_leaves_the_cache_off_not_the_traffic() {
        let (mut a, _) = gateways(LifetimeConfig::default());
        let mut out = [0u8; 256];
        let clear = ping_from([192, 0, 2, 1], [198, 51, 100, 1]);
        for _ in 0..3 {
            assert_eq!(
                a.process_outbound(Instant::ZERO, &clear, &mut Broken, &mut out),
                Ok(Outbound::Bypass)
            );
        }
        assert_eq!(a.counters().flow_cache_misses, 3);
        assert_eq!(a.counters().flow_cache_hits, 0);
        for _ in 0..3 {
            assert_eq!(
                a.process_outbound(Instant::ZERO, &clear, &mut Counter(0), &mut out),
                Ok(Outbound::Bypass)
            );
        }
        assert_eq!(a.counters().flow_cache_misses, 4);
        assert_eq!(a.counters().flow_cache_hits, 2);
    }

    #[test]
    fn cached_decisions_follow_policy_order_changes() {
        let (mut a, _) = gateways(LifetimeConfig::default());
        let mut out = [0u8; 256];
        let h = a.outbound_for(10).unwrap();
        let p = ping_from([10, 0, 68, 5], [10, 1, 1, 7]);
        let mut send =
            |a: &mut Dp| sa_of(a.process_outbound(Instant::ZERO, &p, &mut Counter(0), &mut out));
        assert_eq!(send(&mut a), Ok(Some(h)));
        assert_eq!(send(&mut a), Ok(Some(h)));
        // An overlapping discard in front of the cached protect policy wins at once.
        let host = Selector::new(net([10, 0, 68, 5], 32), net([10, 1, 1, 0], 24)).unwrap();
        a.spd_mut()
            .insert(Policy {
                seq: 5,
                selector: host,
                action: PolicyAction::Discard,
            })
            .unwrap();
        assert_eq!(send(&mut a), Err(DataplaneError::Discarded));
        assert_eq!(send(&mut a), Err(DataplaneError::Discarded));
        // An overlapping bypass behind it changes nothing; once the discard goes, the
        // protect policy is first again.
        a.spd_mut()
            .insert(Policy {
                seq: 20,
                selector: host,
                action: PolicyAction::Bypass,
            })
            .unwrap();
        assert_eq!(send(&mut a), Err(DataplaneError::Discarded));
        a.spd_mut().remove(5).unwrap();
        assert_eq!(send(&mut a), Ok(Some(h)));
        // Without the protect policy the bypass behind it matches.
        a.spd_mut().remove(10).unwrap();
        assert_eq!(send(&mut a), Ok(None));
        assert_eq!(send(&mut a), Ok(None));
        // A protect policy of another entry in front: acquire for that entry.
        a.spd_mut()
            .insert(Policy {
                seq: 1,
                selector: selector(true),
                action: PolicyAction::Protect { sa_group: 99 },
            })
            .unwrap();
        assert_eq!(send(&mut a), Err(DataplaneError::NoSa { sa_group: 99 }));
        // Nothing left matches: the default action, and its changes, apply.
        a.spd_mut().clear();
        assert_eq!(send(&mut a), Ok(None));
        a.spd_mut().set_default_action(PolicyAction::Discard);
        assert_eq!(send(&mut a), Err(DataplaneError::Discarded));
        let c = a.counters();
        assert_eq!(c.flow_cache_hits + c.flow_cache_misses, 11);
        assert_eq!(c.flow_cache_hits, 3);
    }

    #[test]
    fn cached_sas_follow_rekey_and_removal() {
        let (mut a, _) = gateways(LifetimeConfig::default());
        let mut out = [0u8; 256];
        let old = a.outbound_for(10).unwrap();
        let p = ping_from([10, 0, 68, 5], [10, 1, 1, 7]);
        let mut send =
            |a: &mut Dp| sa_of(a.process_outbound(Instant::ZERO, &p, &mut Counter(0), &mut out));
        assert_eq!(send(&mut a), Ok(Some(old)));
        // Rekey: the new SA carries the traffic from the next packet on.
        let lt = LifetimeConfig::default();
        let new = a
            .install_outbound(10, sa(0x3333, Direction::Outbound, GW_A, GW_B, true, lt))
            .unwrap();
        assert_eq!(send(&mut a), Ok(Some(new)));
        // Removing the old SA of the overlap leaves the new one in use.
        a.remove_outbound(old).unwrap();
        assert_eq!(send(&mut a), Ok(Some(new)));
        // Removing the last SA of the entry: acquire, every time, not a dangling handle.
        a.remove_outbound(new).unwrap();
        assert_eq!(send(&mut a), Err(DataplaneError::NoSa { sa_group: 10 }));
        assert_eq!(send(&mut a), Err(DataplaneError::NoSa { sa_group: 10 }));
        assert_eq!(a.counters().no_sa, 2);
        // A new SA in the old one's slot (same index, next generation) is found.
        let again = a
            .install_outbound(10, sa(0x4444, Direction::Outbound, GW_A, GW_B, true, lt))
            .unwrap();
        assert!(again.index() == old.index() || again.index() == new.index());
        assert_eq!(send(&mut a), Ok(Some(again)));
        // Inbound SAs do not touch outbound decisions.
        let hits = a.counters().flow_cache_hits;
        let hi = a
            .install_inbound(sa(0x5555, Direction::Inbound, GW_A, GW_B, true, lt))
            .unwrap();
        a.remove_inbound(hi).unwrap();
        assert_eq!(send(&mut a), Ok(Some(again)));
        assert_eq!(a.counters().flow_cache_hits, hits + 1);
        // Only the first packet scanned the SPD: SA changes alone never force a scan.
        assert_eq!(a.counters().flow_cache_misses, 1);
    }

    /// A tiny cache (2 sets of 2) under random SPD and SA churn, against the uncached
    /// answer after every change: the cache must never be observable.
    #[test]
    fn cache_is_never_stale_under_random_churn() {
        type Small = Dataplane<SoftCrypto, 8, 16, 2, 1, 64, 4>;
        let mut dp = Small::new(PolicyAction::Bypass);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        // Overlapping selectors, all inside the SAs' own selector.
        let sels = [
            selector(true),
            Selector::new(net([10, 0, 68, 1], 32), net([10, 1, 1, 0], 24)).unwrap(),
            Selector::new(net([10, 0, 68, 0], 24), net([10, 1, 1, 2], 32)).unwrap(),
            selector(true).with_protocol(proto::UDP),
            selector(true)
                .with_protocol(proto::UDP)
                .with_remote_ports(crate::spd::PortRange::single(53)),
            selector(true).with_protocol(proto::ICMP),
        ];
        let flows: Vec<Vec<u8>> = [1u8, 2]
            .iter()
            .flat_map(|&s| [1u8, 2].map(move |d| (s, d)))
            .flat_map(|(s, d)| {
                let (src, dst) = ([10, 0, 68, s], [10, 1, 1, d]);
                [
                    ping_from(src, dst),
                    ip(src, dst, proto::UDP, &[0x30, 0x39, 0, 53, 0, 8, 0, 0]),
                    ip(src, dst, proto::UDP, &[0x30, 0x39, 0, 80, 0, 8, 0, 0]),
                ]
            })
            .collect();
        let mut spi = 0x1000u32;
        let mut out = [0u8; 256];
        let mut work = [0u8; 256];
        let mut frag = [0u8; 256];
        let mut lookups = 0u64;
        for step in 0..4000 {
            match next(40) {
                0..=1 => {
                    let action = match next(5) {
                        0 => PolicyAction::Bypass,
                        1 => PolicyAction::Discard,
                        g => PolicyAction::Protect {
                            sa_group: u32::try_from(g).unwrap(),
                        },
                    };
                    let sel = sels[usize::try_from(next(6)).unwrap()];
                    let seq = u32::try_from(next(12)).unwrap();
                    let _ = dp.spd_mut().insert(Policy {
                        seq,
                        selector: sel,
                        action,
                    });
                }
                2..=3 => {
                    let seq = u32::try_from(next(12)).unwrap();
                    let _ = dp.spd_mut().remove(seq);
                }
                4 => {
                    let d =
                        [PolicyAction::Bypass, PolicyAction::Discard][usize::from(step % 2 == 0)];
                    dp.spd_mut().set_default_action(d);
                }
                5..=6 => {
                    let g = u32::try_from(2 + next(3)).unwrap();
                    spi += 1;
                    let lt = LifetimeConfig::default();
                    let _ =
                        dp.install_outbound(g, sa(spi, Direction::Outbound, GW_A, GW_B, true, lt));
                }
                7..=8 => {
                    let hs: Vec<_> = dp.outbound_sas().map(|(h, _)| h).collect();
                    if !hs.is_empty() {
                        let h = hs[usize::try_from(next(hs.len() as u64)).unwrap()];
                        dp.remove_outbound(h).unwrap();
                    }
                }
                _ => {
                    let pkt = &flows[usize::try_from(next(flows.len() as u64)).unwrap()];
                    let f = Flow::from_ip_packet(pkt).unwrap();
                    let want = match dp.spd().decide_outbound(&f) {
                        PolicyAction::Bypass => Ok(None),
                        PolicyAction::Discard => Err(DataplaneError::Discarded),
                        PolicyAction::Protect { sa_group } => match dp
                            .outbound_sas()
                            .map(|(h, _)| h)
                            .filter(|&h| dp.outbound_for(sa_group) == Some(h))
                            .last()
                        {
                            Some(h) => Ok(Some(h)),
                            None => Err(DataplaneError::NoSa { sa_group }),
                        },
                    };
                    let got = if next(2) == 0 {
                        sa_of(dp.process_outbound(Instant::ZERO, pkt, &mut Counter(1), &mut out))
                    } else {
                        let mut p = pkt.clone();
                        let bufs = SendBuffers {
                            work: &mut work,
                            frag: &mut frag,
                        };
                        dp.send(Instant::ZERO, &mut p, &mut Counter(1), bufs, |_| {})
                            .map(|s| match s {
                                Sent::Protected { sa, .. } => Some(sa),
                                _ => None,
                            })
                    };
                    assert_eq!(got, want, "step {step}");
                    lookups += 1;
                }
            }
        }
        let c = dp.counters();
        assert_eq!(c.flow_cache_hits + c.flow_cache_misses, lookups);
        // 12 flows in 4 entries under churn still hit often enough (about 1 in 5) to
        // exercise hits and rebinds; a cache that never hit would prove nothing.
        assert!(c.flow_cache_hits > lookups / 10, "{c:?}");
    }

    #[test]
    fn timer_heap_survives_churn() {
        let lt = |secs| LifetimeConfig {
            soft_time: None,
            hard_time: Some(Duration::from_secs(secs)),
            soft_bytes: None,
            hard_bytes: None,
        };
        let mut a = Dp::new(PolicyAction::Bypass);
        // Far more installs and removals than the heap holds.
        for i in 0..100u32 {
            let h = a
                .install_inbound(sa(
                    0x100 + i,
                    Direction::Inbound,
                    GW_A,
                    GW_B,
                    true,
                    lt(1000),
                ))
                .unwrap();
            a.remove_inbound(h).unwrap();
        }
        let keep: Vec<_> = (0..8u32)
            .map(|i| {
                a.install_inbound(sa(
                    0x900 + i,
                    Direction::Inbound,
                    GW_A,
                    GW_B,
                    true,
                    lt(50 + u64::from(i)),
                ))
                .unwrap()
            })
            .collect();
        assert_eq!(a.poll_timeout(), Some(Instant::from_secs(50)));
        a.handle_timeout(Instant::from_secs(57));
        let mut fired = 0;
        while let Some(e) = a.poll_event() {
            assert!(keep.contains(&e.sa));
            assert!(matches!(e.event, SaEvent::HardExpired { .. }));
            fired += 1;
        }
        assert_eq!(fired, 8);
        assert_eq!(a.poll_timeout(), None);
    }
}
