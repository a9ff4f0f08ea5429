use core::net::Ipv4Addr;

use heapless::Deque;

use super::counters::{add, bump};
use super::{
    DELIVERY_HEADER_LEN, Delivered, GreConfig, GreCounters, GreError, GreEvent, GreStatus,
    KEEPALIVE_TOS, KeepaliveConfig, Transmit,
};
use crate::esp::DfBit;
use crate::time::{Duration, Instant};
use crate::wire::gre::{GrePacket, GreRepr, ethertype};
use crate::wire::ipv4::{Ipv4Packet, Ipv4Repr};
use crate::wire::proto;

/// The smallest MTU an IPv4 link may have (RFC 791).
const MIN_IPV4_MTU: u16 = 68;

/// Events not yet polled; older ones are dropped first if the caller never polls.
const EVENT_QUEUE: usize = 8;

/// One GRE tunnel interface: encapsulation, decapsulation, RFC 2890 key and sequencing,
/// tunnel MTU with path MTU discovery, and Cisco-style keepalives. See the
/// [module docs](super) for the rules.
#[derive(Debug)]
pub struct GreTunnel {
    config: GreConfig,
    line_up: bool,
    /// When the next keepalive tick falls (keepalives on).
    next_keepalive: Option<Instant>,
    /// Keepalives sent (ticked) since the last one returned.
    unanswered: u32,
    /// A keepalive waits for `poll_transmit`.
    keepalive_pending: bool,
    /// The next sequence number to send.
    tx_seq: u32,
    /// The last sequence number accepted.
    rx_seq: Option<u32>,
    /// The learned path MTU of the delivery path, and when it ages out.
    path_mtu: Option<(u16, Option<Instant>)>,
    ident: u16,
    counters: GreCounters,
    events: Deque<GreEvent, EVENT_QUEUE>,
}

impl GreTunnel {
    /// A tunnel created at `now`, line protocol up. With keepalives, the first one is due
    /// at `now + period`.
    ///
    /// # Errors
    ///
    /// [`GreError::InvalidConfig`] for a zero keepalive period, an `ip mtu` below 68, or a
    /// source equal to the destination.
    pub fn new(config: GreConfig, now: Instant) -> Result<Self, GreError> {
        validate(&config)?;
        Ok(Self {
            next_keepalive: config.keepalive.map(|k| now + k.period),
            config,
            line_up: true,
            unanswered: 0,
            keepalive_pending: false,
            tx_seq: 0,
            rx_seq: None,
            path_mtu: None,
            ident: 0,
            counters: GreCounters::default(),
            events: Deque::new(),
        })
    }

    /// The configuration.
    #[must_use]
    pub const fn config(&self) -> &GreConfig {
        &self.config
    }

    /// The counters.
    #[must_use]
    pub const fn counters(&self) -> &GreCounters {
        &self.counters
    }

    /// Whether line protocol is up.
    #[must_use]
    pub const fn is_line_protocol_up(&self) -> bool {
        self.line_up
    }

    /// Bytes the tunnel adds to a data payload (24 for plain GRE).
    #[must_use]
    pub const fn overhead(&self) -> usize {
        self.config.overhead()
    }

    /// The learned path MTU of the delivery path, if path MTU discovery has one.
    #[must_use]
    pub fn path_mtu(&self) -> Option<u16> {
        self.path_mtu.map(|(m, _)| m)
    }

    /// The tunnel MTU in force: `ip mtu`, lowered to the learned path MTU minus the
    /// overhead (never below `min_mtu`) while one is learned.
    #[must_use]
    pub fn tunnel_mtu(&self) -> u16 {
        let ip_mtu = self.config.ip_mtu;
        match (self.config.path_mtu_discovery, self.path_mtu) {
            (Some(p), Some((learned, _))) => {
                let overhead = u16::try_from(self.overhead()).unwrap_or(u16::MAX);
                let from_path = learned.saturating_sub(overhead).max(p.min_mtu);
                ip_mtu.min(from_path)
            }
            _ => ip_mtu,
        }
    }

    /// Turns keepalives on (from `now`: first one at `now + period`), changes them, or
    /// turns them off (line protocol then comes up, as an interface without keepalives
    /// is up).
    ///
    /// # Errors
    ///
    /// [`GreError::InvalidConfig`] for a zero period.
    pub fn set_keepalive(
        &mut self,
        now: Instant,
        keepalive: Option<KeepaliveConfig>,
    ) -> Result<(), GreError> {
        if keepalive.is_some_and(|k| k.period == Duration::ZERO) {
            return Err(GreError::InvalidConfig);
        }
        self.config.keepalive = keepalive;
        self.next_keepalive = keepalive.map(|k| now + k.period);
        self.unanswered = 0;
        self.keepalive_pending = false;
        if keepalive.is_none() {
            self.set_line(true);
        }
        Ok(())
    }

    /// Forgets the last received sequence number, so the next one is accepted whatever
    /// it is (after the peer restarted its numbering, say).
    pub fn reset_receive_sequence(&mut self) {
        self.rx_seq = None;
    }

    /// Feeds a path MTU learned for the delivery path (from an ICMP "fragmentation
    /// needed" quoting a delivery packet; over IPsec, the largest delivery packet the SA
    /// fits into its path MTU). Ignored without path MTU discovery, and unless lower than
    /// the value already learned; restarts the age timer. Returns whether the tunnel MTU
    /// changed (a [`GreEvent::MtuChanged`] is queued then).
    pub fn set_path_mtu(&mut self, now: Instant, mtu: u16) -> bool {
        let Some(p) = self.config.path_mtu_discovery else {
            return false;
        };
        self.expire_path_mtu(now);
        if self.path_mtu.is_some_and(|(m, _)| mtu >= m) {
            return false;
        }
        let before = self.tunnel_mtu();
        let expires = (p.age_timer != Duration::MAX).then(|| now + p.age_timer);
        self.path_mtu = Some((mtu.max(MIN_IPV4_MTU), expires));
        self.mtu_maybe_changed(before)
    }

    /// The earliest deadline: the next keepalive tick or the path MTU ageing out.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let age = self.path_mtu.and_then(|(_, e)| e);
        match (self.next_keepalive, age) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs due timers. A spurious call is a no-op.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire_path_mtu(now);
        let (Some(ka), Some(at)) = (self.config.keepalive, self.next_keepalive) else {
            return;
        };
        if now < at {
            return;
        }
        self.unanswered = self.unanswered.saturating_add(1);
        self.keepalive_pending = true;
        if self.unanswered > ka.retries {
            self.set_line(false);
        }
        // Ticks stay on the `start + k × period` grid unless the caller slept past one.
        let next = at + ka.period;
        self.next_keepalive = Some(if next <= now { now + ka.period } else { next });
    }

    /// Writes a due keepalive into `buf` (a delivery packet to the peer, at most 60
    /// bytes). `None` when there is none, or when `buf` is too small (it stays due).
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let _ = now;
        if !self.keepalive_pending {
            return None;
        }
        let len = self.build_keepalive(buf).ok()?;
        self.keepalive_pending = false;
        bump(&mut self.counters.keepalives_sent);
        Some(Transmit {
            len,
            src: self.config.source,
            dst: self.config.destination,
        })
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<GreEvent> {
        self.events.pop_front()
    }

    /// The state of the tunnel, as `show interface tunnel0`.
    #[must_use]
    pub fn status(&self) -> GreStatus {
        GreStatus {
            line_protocol_up: self.line_up,
            keepalive: self.config.keepalive,
            keepalives_unanswered: self.unanswered,
            source: self.config.source,
            destination: self.config.destination,
            protocol_transport: "GRE/IP",
            key: self.config.key,
            sequencing: self.config.sequencing,
            checksumming: self.config.checksum,
            ttl: self.config.ttl,
            ip_mtu: self.config.ip_mtu,
            tunnel_mtu: self.tunnel_mtu(),
            overhead: self.overhead(),
            path_mtu_discovery: self.config.path_mtu_discovery,
            path_mtu: self.path_mtu(),
            counters: self.counters,
        }
    }

    /// Encapsulates `payload` of GRE protocol type `protocol` (an EtherType; see
    /// [`ethertype`]) into a delivery packet in `out`: IPv4 header, GRE header, payload.
    /// Returns its length. Multicast and broadcast payloads are carried like any other.
    ///
    /// The delivery ToS is `tos` or copied from an IPv4/IPv6 payload; DF follows
    /// `df_bit`.
    ///
    /// # Errors
    ///
    /// [`GreError::LineProtocolDown`] while keepalives declare the tunnel down;
    /// [`GreError::TooBig`] if the payload exceeds the tunnel MTU;
    /// [`GreError::BufferTooSmall`] if `out` cannot hold the delivery packet (or a
    /// delivery header could not, beyond 65535 bytes).
    pub fn encapsulate(
        &mut self,
        now: Instant,
        protocol: u16,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize, GreError> {
        self.expire_path_mtu(now);
        match self.encapsulate_inner(protocol, payload, out) {
            Ok(len) => {
                bump(&mut self.counters.packets_out);
                add(&mut self.counters.bytes_out, payload.len());
                Ok(len)
            }
            Err(e) => {
                self.counters.outbound_error(e);
                Err(e)
            }
        }
    }

    fn encapsulate_inner(
        &mut self,
        protocol: u16,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize, GreError> {
        if !self.line_up {
            return Err(GreError::LineProtocolDown);
        }
        let mtu = self.tunnel_mtu();
        if payload.len() > usize::from(mtu) {
            return Err(GreError::TooBig { mtu });
        }
        let (inner_tos, inner_df) = peek_tos_df(protocol, payload);
        let tos = self.config.tos.unwrap_or(inner_tos);
        let dont_frag = match self.config.df_bit {
            DfBit::Copy => inner_df,
            DfBit::Clear => false,
            DfBit::Set => true,
        };
        let gre_len = self.config.gre_header_len();
        let needed = DELIVERY_HEADER_LEN + gre_len + payload.len();
        let start = DELIVERY_HEADER_LEN + gre_len;
        out.get_mut(start..needed)
            .ok_or(GreError::BufferTooSmall { needed })?
            .copy_from_slice(payload);
        self.write_headers(out, protocol, payload.len(), tos, dont_frag)
    }

    /// Writes the delivery and GRE headers in front of a payload of `payload_len` bytes
    /// already at `out[overhead..]`, consuming a sequence number and an IP ident.
    fn write_headers(
        &mut self,
        out: &mut [u8],
        protocol: u16,
        payload_len: usize,
        tos: u8,
        dont_frag: bool,
    ) -> Result<usize, GreError> {
        let gre = GreRepr {
            protocol,
            checksum: self.config.checksum,
            key: self.config.key,
            seq: self.config.sequencing.then_some(self.tx_seq),
        };
        let gre_len = gre.buffer_len(payload_len);
        let needed = DELIVERY_HEADER_LEN + gre_len;
        let ip = Ipv4Repr {
            src: self.config.source,
            dst: self.config.destination,
            protocol: proto::GRE,
            payload_len: gre_len,
            ttl: self.config.ttl,
            tos,
            ident: self.ident,
            dont_frag,
            more_frags: false,
            frag_offset: 0,
        };
        let packet = out
            .get_mut(..needed)
            .ok_or(GreError::BufferTooSmall { needed })?;
        // Checks the 65535 limit before anything is consumed.
        ip.emit(packet)
            .map_err(|_| GreError::BufferTooSmall { needed })?;
        let seg = packet
            .get_mut(DELIVERY_HEADER_LEN..)
            .ok_or(GreError::BufferTooSmall { needed })?;
        gre.emit(seg, payload_len)?;
        self.ident = self.ident.wrapping_add(1);
        if self.config.sequencing {
            self.tx_seq = self.tx_seq.wrapping_add(1);
        }
        Ok(needed)
    }

    fn build_keepalive(&mut self, buf: &mut [u8]) -> Result<usize, GreError> {
        // The innermost GRE header: protocol type 0, our key so that the returning packet
        // passes our key check; no checksum, no sequence number.
        let ka_gre = GreRepr {
            protocol: ethertype::KEEPALIVE,
            checksum: false,
            key: self.config.key,
            seq: None,
        };
        let inner_len = DELIVERY_HEADER_LEN + ka_gre.header_len();
        let off = self.overhead();
        let needed = off + inner_len;
        let inner = buf
            .get_mut(off..needed)
            .ok_or(GreError::BufferTooSmall { needed })?;
        Ipv4Repr {
            src: self.config.destination,
            dst: self.config.source,
            protocol: proto::GRE,
            payload_len: ka_gre.header_len(),
            ttl: 255,
            tos: KEEPALIVE_TOS,
            ident: 0,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
        }
        .emit(inner)?;
        let ka = inner
            .get_mut(DELIVERY_HEADER_LEN..)
            .ok_or(GreError::BufferTooSmall { needed })?;
        ka_gre.emit(ka, 0)?;
        let dont_frag = matches!(self.config.df_bit, DfBit::Set);
        self.write_headers(buf, ethertype::IPV4, inner_len, KEEPALIVE_TOS, dont_frag)
    }

    /// Decapsulates a delivery packet (an IPv4 packet carrying GRE, after IPsec if any):
    /// checks the endpoints, the GRE header and checksum, the key and the sequence
    /// number, and says what it held. The result borrows from `packet`.
    ///
    /// # Errors
    ///
    /// [`GreError::Malformed`], [`GreError::NotGre`], [`GreError::Fragment`],
    /// [`GreError::WrongEndpoints`], [`GreError::KeyMismatch`],
    /// [`GreError::OutOfSequence`], [`GreError::MissingSequence`], and
    /// [`GreError::LineProtocolDown`] for data while line protocol is down.
    pub fn decapsulate<'b>(
        &mut self,
        now: Instant,
        packet: &'b [u8],
    ) -> Result<Delivered<'b>, GreError> {
        self.expire_path_mtu(now);
        match self.decapsulate_inner(packet) {
            Ok(d) => {
                match d {
                    Delivered::Data { payload, .. } => {
                        bump(&mut self.counters.packets_in);
                        add(&mut self.counters.bytes_in, payload.len());
                    }
                    Delivered::KeepaliveReturned => {
                        bump(&mut self.counters.keepalives_returned);
                    }
                    Delivered::ForwardBack(_) => bump(&mut self.counters.keepalives_forwarded),
                }
                Ok(d)
            }
            Err(e) => {
                self.counters.inbound_error(e);
                Err(e)
            }
        }
    }

    fn decapsulate_inner<'b>(&mut self, packet: &'b [u8]) -> Result<Delivered<'b>, GreError> {
        let ip = Ipv4Packet::new_checked(packet)?;
        ip.verify_checksum()?;
        if ip.protocol() != proto::GRE {
            return Err(GreError::NotGre);
        }
        if ip.is_fragment() {
            return Err(GreError::Fragment);
        }
        if ip.src_addr() != self.config.destination || ip.dst_addr() != self.config.source {
            return Err(GreError::WrongEndpoints);
        }
        let gre = GrePacket::new_checked(ip.into_payload())?;
        gre.verify_checksum()?;
        if gre.key() != self.config.key {
            return Err(GreError::KeyMismatch);
        }
        let protocol = gre.protocol_type();
        let seq = gre.seq();
        let payload = gre.into_payload();
        if protocol == ethertype::KEEPALIVE {
            self.unanswered = 0;
            self.set_line(true);
            return Ok(Delivered::KeepaliveReturned);
        }
        if protocol == ethertype::IPV4 {
            if let Some(back) = self.peer_keepalive(payload) {
                return Ok(Delivered::ForwardBack(back));
            }
        }
        if self.config.sequencing {
            self.check_sequence(seq)?;
        }
        if !self.line_up {
            return Err(GreError::LineProtocolDown);
        }
        Ok(Delivered::Data { protocol, payload })
    }

    /// The peer's keepalive: an IPv4 packet from us to the peer carrying GRE of protocol
    /// type 0. Returns it trimmed to its total length.
    fn peer_keepalive<'b>(&self, payload: &'b [u8]) -> Option<&'b [u8]> {
        let ip = Ipv4Packet::new_checked(payload).ok()?;
        if ip.protocol() != proto::GRE
            || ip.src_addr() != self.config.source
            || ip.dst_addr() != self.config.destination
            || ip.is_fragment()
        {
            return None;
        }
        let total = usize::from(ip.total_len());
        let gre = GrePacket::new_checked(ip.into_payload()).ok()?;
        if gre.protocol_type() != ethertype::KEEPALIVE {
            return None;
        }
        payload.get(..total)
    }

    fn check_sequence(&mut self, seq: Option<u32>) -> Result<(), GreError> {
        let seq = seq.ok_or(GreError::MissingSequence)?;
        if let Some(last) = self.rx_seq {
            // RFC 1982 serial arithmetic: later means 1 ..= 2^31 - 1 ahead.
            let ahead = seq.wrapping_sub(last);
            if ahead == 0 || ahead >= 0x8000_0000 {
                return Err(GreError::OutOfSequence);
            }
        }
        self.rx_seq = Some(seq);
        Ok(())
    }

    fn set_line(&mut self, up: bool) {
        if self.line_up == up {
            return;
        }
        self.line_up = up;
        bump(&mut self.counters.line_protocol_transitions);
        self.push_event(if up {
            GreEvent::LineProtocolUp
        } else {
            GreEvent::LineProtocolDown
        });
    }

    fn expire_path_mtu(&mut self, now: Instant) {
        if let Some((_, Some(at))) = self.path_mtu {
            if now >= at {
                let before = self.tunnel_mtu();
                self.path_mtu = None;
                self.mtu_maybe_changed(before);
            }
        }
    }

    fn mtu_maybe_changed(&mut self, before: u16) -> bool {
        let mtu = self.tunnel_mtu();
        if mtu == before {
            return false;
        }
        self.push_event(GreEvent::MtuChanged { mtu });
        true
    }

    fn push_event(&mut self, ev: GreEvent) {
        if self.events.is_full() {
            let _ = self.events.pop_front();
        }
        let _ = self.events.push_back(ev);
    }
}

fn validate(config: &GreConfig) -> Result<(), GreError> {
    if config.keepalive.is_some_and(|k| k.period == Duration::ZERO)
        || config.ip_mtu < MIN_IPV4_MTU
        || config.source == config.destination
        || config.source == Ipv4Addr::UNSPECIFIED
    {
        return Err(GreError::InvalidConfig);
    }
    Ok(())
}

/// The ToS (or traffic class) and DF of an IPv4 or IPv6 payload; zero and clear for
/// anything else, including a payload too short to be what its protocol type says.
fn peek_tos_df(protocol: u16, payload: &[u8]) -> (u8, bool) {
    match (protocol, payload) {
        (ethertype::IPV4, [vihl, tos, _, _, _, _, flags, ..]) if vihl >> 4 == 4 => {
            (*tos, flags & 0x40 != 0)
        }
        (ethertype::IPV6, [b0, b1, ..]) if b0 >> 4 == 6 => (((b0 & 0x0f) << 4) | (b1 >> 4), false),
        _ => (0, false),
    }
}
