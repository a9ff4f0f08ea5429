//! The socket-agnostic glue between the control plane ([`Ike`]), the data plane
//! ([`Dataplane`]) and NAT keepalives: what every network port does with them, written
//! once. It never touches a socket or a clock; the smoltcp [`IpsecStack`] and the
//! embassy-net runner (crate `ipsec-embassy-net`) feed it datagrams and time.
//!
//! * Received UDP payloads go to [`Engine::handle_udp`]: UDP 500 and the non-ESP
//!   marker on 4500 are IKE, `0xFF` is a NAT keepalive, anything else on 4500 is ESP.
//!   ESP is given back its outer IPv4 and UDP headers (written into the
//!   [`HEADROOM`] the caller left in front of the payload) and handed to
//!   [`Dataplane::process_inbound`], so SPI lookup, replay, ICV and selector checks are
//!   the data plane's own. Raw ESP (IP protocol 50) goes to [`Engine::handle_ip`].
//! * Packets from the protected side go to [`Engine::send`]: the SPD decides; a
//!   protect policy with no SA yet starts IKE for its crypto map entry (the IOS
//!   "acquire") and the packet is dropped, as IOS does. The ESP-in-UDP result is
//!   returned as a UDP payload plus destination, for the port's 4500 socket.
//! * IKE datagrams and keepalives come out of [`Engine::poll_transmit`].
//! * The earliest deadline of all three is [`Engine::poll_timeout`]; the port sleeps
//!   until then and calls [`Engine::handle_timeout`].
//! * IKE events are acted on inside (child SA pairs installed with
//!   [`Dataplane::install_pair`], deleted, rekeyed on soft expiry) and summarised for
//!   the application as [`Event`]s without key material.
//!
//! [`IpsecStack`]: crate::IpsecStack

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use hal_traits::{CryptoProvider, SecureRng};
use heapless::{Deque, Vec};
use ipsec_core::dataplane::{Dataplane, DataplaneError, IKE_PORT, Inbound, NAT_T_PORT, Outbound};
use ipsec_core::esp::{Direction, EspSa, SaEvent};
use ipsec_core::sadb::SaHandle;
use ipsec_core::spd::{Policy, PolicyAction};
use ipsec_core::wire::ipv4::{Ipv4Packet, Ipv4Repr};
use ipsec_core::wire::proto;
use ipsec_core::{Duration, Instant};
use ipsec_ike::v1::{ChildSa, FailReason, Ike, IkeConfig, IkeError, IkeEvent, NatStatus};
use ipsec_nat_t::keepalive::{KeepaliveConfig, NatKeepalive};
use ipsec_nat_t::natd::NatStatus as NattStatus;

/// Bytes a caller leaves free in front of a received UDP payload, for the outer IPv4
/// and UDP headers [`Engine::handle_udp`] writes there.
pub const HEADROOM: usize = 28;

/// The non-ESP marker (RFC 3948 §2.2) that starts IKE on the NAT-T port.
const NON_ESP_MARKER: [u8; 4] = [0; 4];

/// First SPD sequence number used for policies of dynamic (responder-only) entries,
/// above any crypto map sequence number a configuration would use.
const DYNAMIC_SEQ: u32 = 0x8000_0000;

/// Outbound flow-cache entries of the engine's data plane (64 bytes each): a
/// microcontroller's few policies and flows need few.
pub const ENGINE_FLOWS: usize = 16;

/// The data plane the engine drives: replay window of 64 packets (`W = 2` words), the
/// smallest reassembler (the engine uses the per-packet paths, which never reassemble)
/// and a 16-entry flow cache.
pub type EngineDataplane<P, const CHILDREN: usize, const POLICIES: usize> =
    Dataplane<P, CHILDREN, POLICIES, 2, 1, 64, ENGINE_FLOWS>;

/// Why a datagram or packet was not processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The control plane dropped a datagram (see its counters).
    Ike(IkeError),
    /// The data plane refused a packet (see its counters).
    Dataplane(DataplaneError),
    /// A protect policy matched but its SA is still being negotiated: the packet was
    /// dropped and IKE started (or is already running) for this crypto map entry.
    Negotiating {
        /// The crypto map entry being negotiated.
        crypto_map: u32,
    },
    /// The negotiation for this crypto map entry failed recently; packets are dropped
    /// until the hold-down ends ([`EngineConfig::hold_down`]).
    HeldDown {
        /// The crypto map entry.
        crypto_map: u32,
    },
    /// A caller buffer is too small (no [`HEADROOM`], or the datagram does not fit).
    BufferTooSmall,
    /// IPv6 outer headers are not supported by this port yet.
    Unsupported,
    /// A table of the engine (SPD, child records) is full.
    Full,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ike(e) => write!(f, "IKE: {e}"),
            Self::Dataplane(e) => write!(f, "ESP: {e}"),
            Self::Negotiating { crypto_map } => {
                write!(f, "negotiating an SA for crypto map entry {crypto_map}")
            }
            Self::HeldDown { crypto_map } => {
                write!(
                    f,
                    "crypto map entry {crypto_map} held down after a failed negotiation"
                )
            }
            Self::BufferTooSmall => f.write_str("buffer too small"),
            Self::Unsupported => f.write_str("IPv6 outer headers are not supported"),
            Self::Full => f.write_str("table full"),
        }
    }
}

impl core::error::Error for Error {}

impl From<IkeError> for Error {
    fn from(e: IkeError) -> Self {
        Self::Ike(e)
    }
}

impl From<DataplaneError> for Error {
    fn from(e: DataplaneError) -> Self {
        Self::Dataplane(e)
    }
}

/// What the application is told. No key material, ever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Phase 1 (the ISAKMP SA) is up with `peer`.
    Phase1Up {
        /// The peer's IKE address and port (4500 after a NAT-T float).
        peer: SocketAddr,
        /// What NAT discovery found.
        nat: NatStatus,
    },
    /// The ISAKMP SA with `peer` is gone.
    Phase1Down {
        /// The peer's IKE address and port.
        peer: SocketAddr,
    },
    /// An IPsec SA pair was installed in the data plane: traffic flows.
    TunnelUp {
        /// Its crypto map entry.
        crypto_map: u32,
        /// The peer's IKE address and port.
        peer: SocketAddr,
        /// Our SPI (the peer sends with it).
        inbound_spi: u32,
        /// The peer's SPI (we send with it).
        outbound_spi: u32,
        /// ESP is UDP-encapsulated (RFC 3948).
        udp_encap: bool,
    },
    /// An IPsec SA pair was removed.
    TunnelDown {
        /// Its crypto map entry.
        crypto_map: u32,
        /// Our SPI.
        inbound_spi: u32,
        /// The peer's SPI.
        outbound_spi: u32,
    },
    /// A negotiation failed.
    NegotiationFailed {
        /// The crypto map entry, when we initiated.
        crypto_map: Option<u32>,
        /// The peer.
        peer: SocketAddr,
        /// Why.
        reason: FailReason,
    },
}

/// Policy knobs of the glue (the protocol ones are in [`IkeConfig`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// NAT keepalive interval when we are behind a NAT (`crypto isakmp nat keepalive`).
    pub nat_keepalive: KeepaliveConfig,
    /// After a failed negotiation, packets for that entry are dropped without a new
    /// attempt for this long.
    pub hold_down: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            nat_keepalive: KeepaliveConfig::seconds(20),
            hold_down: Duration::from_secs(10),
        }
    }
}

/// A datagram to send, written at the start of the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// Our UDP port to send from (500 or 4500).
    pub src_port: u16,
    /// The destination.
    pub dst: SocketAddr,
    /// Bytes written.
    pub len: usize,
}

/// What became of a packet from the protected side ([`Engine::send`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// ESP-in-UDP: send `out[offset..offset + len]` from our UDP port `src_port` to
    /// `dst`.
    Udp {
        /// Our port (4500).
        src_port: u16,
        /// The peer's NAT-T address and port.
        dst: SocketAddr,
        /// Where the UDP payload starts in `out`.
        offset: usize,
        /// Its length.
        len: usize,
    },
    /// A whole outer IP packet in `out[..len]` (raw ESP, IP protocol 50): for a raw
    /// socket with the header included.
    Ip {
        /// Its length.
        len: usize,
    },
    /// A bypass policy matched: the packet may go in clear (the caller decides where;
    /// a tunnel-only interface drops it).
    Bypass,
}

/// What a received datagram or packet was.
#[derive(Debug)]
pub enum Received<'b> {
    /// IKE: handled by the control plane (answers come out of
    /// [`Engine::poll_transmit`]).
    Ike,
    /// A NAT keepalive: nothing to do.
    NatKeepalive,
    /// ESP that opened: the inner IP packet, inside the caller's buffer.
    Packet(&'b mut [u8]),
    /// A raw IP packet that was not ESP and that the SPD admits in clear.
    Cleartext,
}

/// One installed SA pair.
#[derive(Clone, Copy, Debug)]
struct ChildRec {
    crypto_map: u32,
    in_spi: u32,
    out_spi: u32,
    hin: SaHandle,
    hout: SaHandle,
    dyn_policy: Option<u32>,
    rekeying: bool,
}

/// IKE + ESP + NAT keepalives for one node, without any I/O. See the [module](self).
///
/// `SAS` bounds the IKE SAs (and peers with keepalives), `CHILDREN` the IPsec SA pairs
/// (IKE's child table and each direction of the data plane), `POLICIES` the SPD.
pub struct Engine<
    P: CryptoProvider,
    R: SecureRng,
    const SAS: usize = 4,
    const CHILDREN: usize = 8,
    const POLICIES: usize = 8,
> {
    ike: Ike<P, SAS, CHILDREN>,
    dp: EngineDataplane<P, CHILDREN, POLICIES>,
    rng: R,
    config: EngineConfig,
    children: Vec<ChildRec, CHILDREN>,
    keepalives: Vec<NatKeepalive, SAS>,
    hold_down: Vec<(u32, Instant), POLICIES>,
    events: Deque<Event, 16>,
    next_dyn: u32,
    local: IpAddr,
    ike_port: u16,
    natt_port: u16,
}

impl<
    P: CryptoProvider,
    R: SecureRng,
    const SAS: usize,
    const CHILDREN: usize,
    const POLICIES: usize,
> fmt::Debug for Engine<P, R, SAS, CHILDREN, POLICIES>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("local", &self.local)
            .field("children", &self.children.len())
            .field("keepalives", &self.keepalives.len())
            .finish_non_exhaustive()
    }
}

impl<
    P: CryptoProvider,
    R: SecureRng,
    const SAS: usize,
    const CHILDREN: usize,
    const POLICIES: usize,
> Engine<P, R, SAS, CHILDREN, POLICIES>
{
    /// An engine for `config`. Every static crypto map entry gets its protect policy in
    /// the SPD (sequence number and `sa_group` = the entry's sequence number); anything
    /// else bypasses. Dynamic entries (responder only) get a policy per negotiated SA.
    ///
    /// # Errors
    /// [`Error::Full`] if the SPD cannot hold one policy per crypto map entry.
    pub fn new(ike_config: IkeConfig, config: EngineConfig, rng: R) -> Result<Self, Error> {
        let mut dp = EngineDataplane::<P, CHILDREN, POLICIES>::new(PolicyAction::Bypass);
        for e in ike_config.crypto_maps.iter().filter(|e| !e.dynamic) {
            dp.spd_mut()
                .insert(Policy {
                    seq: e.seq,
                    selector: e.selector,
                    action: PolicyAction::Protect { sa_group: e.seq },
                })
                .map_err(|_| Error::Full)?;
        }
        let local = ike_config.local_addr;
        let (ike_port, natt_port) = (ike_config.ike_port, ike_config.natt_port);
        Ok(Self {
            ike: Ike::new(ike_config),
            dp,
            rng,
            config,
            children: Vec::new(),
            keepalives: Vec::new(),
            hold_down: Vec::new(),
            events: Deque::new(),
            next_dyn: DYNAMIC_SEQ,
            local,
            ike_port,
            natt_port,
        })
    }

    /// Our IKE address.
    #[must_use]
    pub const fn local_addr(&self) -> IpAddr {
        self.local
    }

    /// Our IKE port (500) and NAT-T port (4500).
    #[must_use]
    pub const fn ports(&self) -> (u16, u16) {
        (self.ike_port, self.natt_port)
    }

    /// The control plane (status, counters).
    #[must_use]
    pub const fn ike(&self) -> &Ike<P, SAS, CHILDREN> {
        &self.ike
    }

    /// The control plane, for commands the engine does not wrap.
    pub fn ike_mut(&mut self) -> &mut Ike<P, SAS, CHILDREN> {
        &mut self.ike
    }

    /// The data plane (SAs and their counters, SPD).
    #[must_use]
    pub const fn dataplane(&self) -> &EngineDataplane<P, CHILDREN, POLICIES> {
        &self.dp
    }

    /// The data plane, to change policies.
    pub fn dataplane_mut(&mut self) -> &mut EngineDataplane<P, CHILDREN, POLICIES> {
        &mut self.dp
    }

    /// Number of IPsec SA pairs installed.
    #[must_use]
    pub fn tunnels(&self) -> usize {
        self.children.len()
    }

    /// Starts IKE for crypto map entry `crypto_map` now, without waiting for traffic.
    ///
    /// # Errors
    /// Those of [`Ike::initiate`].
    pub fn initiate(&mut self, now: Instant, crypto_map: u32) -> Result<(), Error> {
        self.ike.initiate(now, &mut self.rng, crypto_map)?;
        self.process_events(now);
        Ok(())
    }

    /// Deletes every IPsec SA and IKE SA with DELETE notifies (a clean shutdown); the
    /// notifies come out of [`Engine::poll_transmit`].
    pub fn shutdown(&mut self, now: Instant) {
        let spis: Vec<u32, CHILDREN> = self.children.iter().map(|c| c.in_spi).collect();
        for spi in spis {
            let _ = self.ike.delete_child(now, &mut self.rng, spi);
        }
        let conns: Vec<u32, SAS> = self.ike.isakmp_status().map(|s| s.conn_id).collect();
        for c in conns {
            let _ = self.ike.delete_ike_sa(now, &mut self.rng, c);
        }
        self.process_events(now);
    }

    /// Handles one UDP datagram received on our port `to.port()`. Its payload is
    /// `buf[HEADROOM..HEADROOM + len]`; the headroom is overwritten.
    ///
    /// # Errors
    /// [`Error::BufferTooSmall`] when `buf` does not hold headroom + payload,
    /// [`Error::Ike`] for an IKE datagram the control plane dropped,
    /// [`Error::Dataplane`] for ESP the data plane refused, [`Error::Unsupported`] for
    /// IPv6.
    pub fn handle_udp<'b>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        buf: &'b mut [u8],
        len: usize,
    ) -> Result<Received<'b>, Error> {
        let end = HEADROOM.checked_add(len).ok_or(Error::BufferTooSmall)?;
        let payload = buf.get(HEADROOM..end).ok_or(Error::BufferTooSmall)?;
        if to.port() == self.ike_port || payload.starts_with(&NON_ESP_MARKER) {
            let r = self
                .ike
                .handle_datagram(now, &mut self.rng, from, to, payload);
            self.process_events(now);
            return r.map(|()| Received::Ike).map_err(Error::Ike);
        }
        if payload == [0xff] {
            return Ok(Received::NatKeepalive);
        }
        let (IpAddr::V4(src), IpAddr::V4(dst)) = (from.ip(), to.ip()) else {
            return Err(Error::Unsupported);
        };
        prepend_udp_headers(buf, len, src, from.port(), dst, to.port())?;
        let packet = buf.get_mut(..end).ok_or(Error::BufferTooSmall)?;
        let r = self.dp.process_inbound(now, packet);
        self.process_events(now);
        match r? {
            Inbound::Decapsulated { packet, .. } => Ok(Received::Packet(packet)),
            // Not reachable for a datagram that got here, but harmless.
            Inbound::Ike | Inbound::NatKeepalive => Ok(Received::NatKeepalive),
            Inbound::Cleartext => Ok(Received::Cleartext),
        }
    }

    /// Handles one whole IP packet from a raw socket (ESP as IP protocol 50).
    ///
    /// # Errors
    /// [`Error::Dataplane`] for a packet the data plane refused.
    pub fn handle_ip<'b>(
        &mut self,
        now: Instant,
        packet: &'b mut [u8],
    ) -> Result<Received<'b>, Error> {
        let r = self.dp.process_inbound(now, packet);
        self.process_events(now);
        match r? {
            Inbound::Decapsulated { packet, .. } => Ok(Received::Packet(packet)),
            // IKE over a raw socket is not ours to take: the UDP socket has it too.
            Inbound::Ike => Ok(Received::Ike),
            Inbound::NatKeepalive => Ok(Received::NatKeepalive),
            Inbound::Cleartext => Ok(Received::Cleartext),
        }
    }

    /// Protects `inner` (an IP packet from the protected side) into `out`.
    ///
    /// # Errors
    /// [`Error::Negotiating`] (IKE started), [`Error::HeldDown`], [`Error::Dataplane`]
    /// (discard policy, malformed packet, SA refused it, `out` too small),
    /// [`Error::Unsupported`] for an IPv6 outer header.
    pub fn send(&mut self, now: Instant, inner: &[u8], out: &mut [u8]) -> Result<Sent, Error> {
        let r = self.dp.process_outbound(now, inner, &mut self.rng, out);
        let r = match r {
            Ok(Outbound::Bypass) => Ok(Sent::Bypass),
            Ok(Outbound::Protected { len, .. }) => {
                let sent = outer_to_sent(out.get(..len).ok_or(Error::BufferTooSmall)?);
                if let Ok(Sent::Udp { dst, .. }) = sent {
                    self.note_sent(now, dst.ip());
                }
                sent
            }
            Err(DataplaneError::NoSa { sa_group }) => Err(self.acquire(now, sa_group)),
            Err(e) => Err(e.into()),
        };
        self.process_events(now);
        r
    }

    /// The next IKE datagram or NAT keepalive to send, written into `buf`.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Datagram> {
        if let Some(tx) = self.ike.poll_transmit(now, buf) {
            if tx.src.port() == self.natt_port {
                self.note_sent(now, tx.dst.ip());
            }
            return Some(Datagram {
                src_port: tx.src.port(),
                dst: tx.dst,
                len: tx.len,
            });
        }
        for ka in &mut self.keepalives {
            if let Some(k) = ka.poll_transmit(now) {
                let p = k.payload();
                let dst = buf.get_mut(..p.len())?;
                dst.copy_from_slice(p);
                return Some(Datagram {
                    src_port: k.src_port,
                    dst: k.dst,
                    len: p.len(),
                });
            }
        }
        None
    }

    /// The earliest deadline of IKE, the data plane and the keepalives.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.ike.poll_timeout(), self.dp.poll_timeout()]
            .into_iter()
            .flatten()
            .chain(
                self.keepalives
                    .iter()
                    .filter_map(NatKeepalive::poll_timeout),
            )
            .min()
    }

    /// Fires whatever is due at `now`. A spurious call is a no-op.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ike.poll_timeout().is_some_and(|t| t <= now) {
            self.ike.handle_timeout(now, &mut self.rng);
        }
        if self.dp.poll_timeout().is_some_and(|t| t <= now) {
            self.dp.handle_timeout(now);
        }
        for ka in &mut self.keepalives {
            if ka.poll_timeout().is_some_and(|t| t <= now) {
                ka.handle_timeout(now);
            }
        }
        self.hold_down.retain(|(_, t)| *t > now);
        self.process_events(now);
    }

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ------------------------------------------------------------ internals --

    fn push_event(&mut self, e: Event) {
        if self.events.is_full() {
            let _ = self.events.pop_front();
        }
        let _ = self.events.push_back(e);
    }

    fn note_sent(&mut self, now: Instant, peer: IpAddr) {
        if let Some(k) = self.keepalives.iter_mut().find(|k| k.peer().ip() == peer) {
            k.note_sent(now);
        }
    }

    /// The IOS acquire: start IKE for `sa_group` unless it is held down.
    fn acquire(&mut self, now: Instant, sa_group: u32) -> Error {
        if self
            .hold_down
            .iter()
            .any(|(m, t)| *m == sa_group && *t > now)
        {
            return Error::HeldDown {
                crypto_map: sa_group,
            };
        }
        match self.ike.initiate(now, &mut self.rng, sa_group) {
            Ok(()) => Error::Negotiating {
                crypto_map: sa_group,
            },
            Err(e) => Error::Ike(e),
        }
    }

    /// Acts on every pending control-plane and data-plane event.
    fn process_events(&mut self, now: Instant) {
        // Bounded: each round consumes events, and acting on them creates few new ones.
        for _ in 0..16 {
            let mut any = false;
            while let Some(ev) = self.ike.poll_event() {
                any = true;
                self.on_ike_event(now, ev);
            }
            while let Some(ev) = self.dp.poll_event() {
                any = true;
                self.on_dp_event(now, ev.direction, ev.event);
            }
            if !any {
                break;
            }
        }
    }

    fn on_ike_event(&mut self, now: Instant, ev: IkeEvent) {
        match ev {
            IkeEvent::Phase1Established { peer, nat, .. } => {
                let status = NattStatus {
                    local_behind_nat: nat.local_behind_nat,
                    remote_behind_nat: nat.remote_behind_nat,
                };
                let ka = NatKeepalive::new(now, self.config.nat_keepalive, peer, status)
                    .with_src_port(self.natt_port);
                if let Some(k) = self
                    .keepalives
                    .iter_mut()
                    .find(|k| k.peer().ip() == peer.ip())
                {
                    *k = ka;
                } else if ka.is_active() {
                    let _ = self.keepalives.push(ka);
                }
                self.push_event(Event::Phase1Up { peer, nat });
            }
            IkeEvent::Phase1Deleted { peer, .. } => {
                if !self.ike.isakmp_status().any(|s| s.remote.ip() == peer.ip()) {
                    self.keepalives.retain(|k| k.peer().ip() != peer.ip());
                }
                self.push_event(Event::Phase1Down { peer });
            }
            IkeEvent::ChildSaEstablished(cs) => self.install(now, &cs),
            IkeEvent::ChildSaDeleted { inbound_spi, .. } => self.uninstall(inbound_spi),
            IkeEvent::PeerMoved { from, to, .. } => {
                // The peer's NAT mapping changed: our SAs and keepalives follow it.
                self.dp.move_peer(from, to);
                for k in self.keepalives.iter_mut().filter(|k| k.peer() == from) {
                    k.set_peer(to);
                }
            }
            IkeEvent::NegotiationFailed {
                crypto_map,
                peer,
                reason,
            } => {
                if let Some(m) = crypto_map {
                    let until = now + self.config.hold_down;
                    if let Some(h) = self.hold_down.iter_mut().find(|(x, _)| *x == m) {
                        h.1 = until;
                    } else {
                        let _ = self.hold_down.push((m, until));
                    }
                }
                self.push_event(Event::NegotiationFailed {
                    crypto_map,
                    peer,
                    reason,
                });
            }
            _ => {}
        }
    }

    fn install(&mut self, now: Instant, cs: &ChildSa) {
        let (ie, ia) = cs.inbound_keys();
        let (oe, oa) = cs.outbound_keys();
        let (inbound, outbound) = match (
            EspSa::new(cs.inbound.clone(), ie, ia, now),
            EspSa::new(cs.outbound.clone(), oe, oa, now),
        ) {
            (Ok(i), Ok(o)) => (i, o),
            _ => {
                let _ = self.ike.delete_child(now, &mut self.rng, cs.inbound.spi);
                return;
            }
        };
        let static_entry = self
            .ike
            .config()
            .crypto_map(cs.crypto_map)
            .is_some_and(|e| !e.dynamic);
        let (group, dyn_policy) = if static_entry {
            (cs.crypto_map, None)
        } else {
            let Some(selector) = cs.inbound.selector else {
                let _ = self.ike.delete_child(now, &mut self.rng, cs.inbound.spi);
                return;
            };
            let g = self.next_dyn;
            self.next_dyn = self.next_dyn.wrapping_add(1).max(DYNAMIC_SEQ);
            let p = Policy {
                seq: g,
                selector,
                action: PolicyAction::Protect { sa_group: g },
            };
            if self.dp.spd_mut().insert(p).is_err() {
                let _ = self.ike.delete_child(now, &mut self.rng, cs.inbound.spi);
                return;
            }
            (g, Some(g))
        };
        if self.children.is_full() {
            self.drop_pair(now, cs.inbound.spi, dyn_policy);
            return;
        }
        let (hin, hout) = match self.dp.install_pair(group, inbound, outbound) {
            Ok(h) => h,
            Err(_) => {
                self.drop_pair(now, cs.inbound.spi, dyn_policy);
                return;
            }
        };
        if let Some(c) = cs
            .replaces
            .and_then(|old| self.children.iter_mut().find(|c| c.in_spi == old))
        {
            c.rekeying = true;
        }
        let _ = self.children.push(ChildRec {
            crypto_map: cs.crypto_map,
            in_spi: cs.inbound.spi,
            out_spi: cs.outbound.spi,
            hin,
            hout,
            dyn_policy,
            rekeying: false,
        });
        self.hold_down.retain(|(m, _)| *m != cs.crypto_map);
        self.push_event(Event::TunnelUp {
            crypto_map: cs.crypto_map,
            peer: cs.peer,
            inbound_spi: cs.inbound.spi,
            outbound_spi: cs.outbound.spi,
            udp_encap: cs.outbound.udp_encap.is_some(),
        });
    }

    fn drop_pair(&mut self, now: Instant, in_spi: u32, dyn_policy: Option<u32>) {
        if let Some(g) = dyn_policy {
            self.dp.spd_mut().remove(g);
        }
        let _ = self.ike.delete_child(now, &mut self.rng, in_spi);
    }

    fn uninstall(&mut self, in_spi: u32) {
        let Some(i) = self.children.iter().position(|c| c.in_spi == in_spi) else {
            return;
        };
        let c = self.children.swap_remove(i);
        self.dp.remove_inbound(c.hin);
        self.dp.remove_outbound(c.hout);
        if let Some(g) = c.dyn_policy {
            self.dp.spd_mut().remove(g);
        }
        self.push_event(Event::TunnelDown {
            crypto_map: c.crypto_map,
            inbound_spi: c.in_spi,
            outbound_spi: c.out_spi,
        });
    }

    fn on_dp_event(&mut self, now: Instant, dir: Direction, ev: SaEvent) {
        let spi = match ev {
            SaEvent::SoftExpired { spi }
            | SaEvent::HardExpired { spi }
            | SaEvent::IdleExpired { spi } => spi,
            _ => return,
        };
        let Some(c) = self.children.iter_mut().find(|c| match dir {
            Direction::Inbound => c.in_spi == spi,
            Direction::Outbound => c.out_spi == spi,
        }) else {
            return;
        };
        let in_spi = c.in_spi;
        match ev {
            SaEvent::SoftExpired { .. } if !c.rekeying => {
                c.rekeying = true;
                let _ = self.ike.rekey_child(now, &mut self.rng, in_spi);
            }
            SaEvent::HardExpired { .. } | SaEvent::IdleExpired { .. } => {
                match self.ike.delete_child(now, &mut self.rng, in_spi) {
                    // IKE reports ChildSaDeleted, which uninstalls.
                    Ok(()) => {}
                    Err(_) => self.uninstall(in_spi),
                }
            }
            _ => {}
        }
    }
}

/// Writes an outer IPv4 + UDP header into `buf[..HEADROOM]` for the payload at
/// `buf[HEADROOM..HEADROOM + len]`, with the datagram's real addresses and ports, so the
/// data plane sees the ESP-in-UDP packet as it travelled (UDP checksum 0: the socket
/// layer checked it).
fn prepend_udp_headers(
    buf: &mut [u8],
    len: usize,
    src: Ipv4Addr,
    src_port: u16,
    dst: Ipv4Addr,
    dst_port: u16,
) -> Result<(), Error> {
    let udp_len = u16::try_from(len + 8).map_err(|_| Error::BufferTooSmall)?;
    let ip = Ipv4Repr {
        src,
        dst,
        protocol: proto::UDP,
        payload_len: usize::from(udp_len),
        ttl: 64,
        tos: 0,
        ident: 0,
        dont_frag: false,
        more_frags: false,
        frag_offset: 0,
    };
    ip.emit(buf.get_mut(..20).ok_or(Error::BufferTooSmall)?)
        .map_err(|_| Error::BufferTooSmall)?;
    let udp = buf.get_mut(20..HEADROOM).ok_or(Error::BufferTooSmall)?;
    let [s0, s1] = src_port.to_be_bytes();
    let [d0, d1] = dst_port.to_be_bytes();
    let [l0, l1] = udp_len.to_be_bytes();
    udp.copy_from_slice(&[s0, s1, d0, d1, l0, l1, 0, 0]);
    Ok(())
}

/// Turns the data plane's outer packet into what a socket sends: the UDP payload of an
/// unfragmented IPv4/UDP packet, else the whole IP packet (raw ESP).
fn outer_to_sent(outer: &[u8]) -> Result<Sent, Error> {
    if outer.first().map(|b| b >> 4) != Some(4) {
        return Err(Error::Unsupported);
    }
    let ip = Ipv4Packet::new_checked(outer).map_err(|e| Error::Dataplane(e.into()))?;
    let hl = ip.header_len();
    let total = usize::from(ip.total_len()).min(outer.len());
    if ip.protocol() != proto::UDP || ip.is_fragment() {
        return Ok(Sent::Ip { len: total });
    }
    let udp = outer.get(hl..total).ok_or(Error::BufferTooSmall)?;
    let Some(ports) = udp.first_chunk::<4>() else {
        return Err(Error::BufferTooSmall);
    };
    let [s0, s1, d0, d1] = *ports;
    let src_port = u16::from_be_bytes([s0, s1]);
    let port = u16::from_be_bytes([d0, d1]);
    Ok(Sent::Udp {
        src_port: if src_port == 0 { NAT_T_PORT } else { src_port },
        dst: SocketAddr::V4(SocketAddrV4::new(ip.dst_addr(), port)),
        offset: hl + 8,
        len: total.saturating_sub(hl + 8),
    })
}

/// Our IKE port, re-exported for ports that bind sockets before building an engine.
pub const DEFAULT_IKE_PORT: u16 = IKE_PORT;
/// Our NAT-T port, re-exported likewise.
pub const DEFAULT_NAT_T_PORT: u16 = NAT_T_PORT;
