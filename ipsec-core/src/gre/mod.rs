//! GRE tunnels (RFC 2784, RFC 2890) with Cisco-style keepalives and tunnel MTU handling,
//! and GRE over IPsec.
//!
//! * [`GreTunnel`] is one `interface Tunnel0`: `tunnel source`, `tunnel destination`,
//!   `tunnel key`, `tunnel sequence-datagrams`, `tunnel checksum`, `ip mtu`, `tunnel ttl`,
//!   `tunnel path-mtu-discovery` and `keepalive <period> <retries>`, all in a
//!   [`GreConfig`]. It is sans-IO: [`GreTunnel::encapsulate`] turns a payload of any
//!   protocol type into a delivery packet (IPv4 + GRE + payload) in the caller's buffer,
//!   [`GreTunnel::decapsulate`] does the reverse and returns a borrowed [`Delivered`], and
//!   keepalives come out of [`GreTunnel::poll_transmit`] on the timers of
//!   [`GreTunnel::poll_timeout`] / [`GreTunnel::handle_timeout`]. Line protocol changes are
//!   [`GreEvent`]s; [`GreTunnel::status`] is `show interface tunnel0` as data.
//! * [`ipsec`] puts GRE under IPsec, both ways: `tunnel protection ipsec profile`
//!   (an SA whose selector is GRE between the tunnel endpoints, transport mode by default)
//!   and a crypto map whose ACL is `permit gre host A host B` (tunnel or transport mode),
//!   with the MTU arithmetic of the overhead.
//!
//! The delivery header is IPv4 (`tunnel mode gre ip`); the payload may be anything:
//! IPv4, IPv6, or an opaque protocol type. Because GRE gives multicast and broadcast inner
//! packets (an OSPF hello to 224.0.0.5, say) a unicast delivery header between two fixed
//! endpoints, it carries what a plain IPsec SA, whose selectors name unicast flows,
//! cannot.
//!
//! # Keepalives
//!
//! Every `period` the tunnel sends the peer a GRE packet whose payload is an IPv4 packet
//! from the peer back to us (protocol 47, TTL 255, ToS 0xA0) carrying a bare GRE header
//! with protocol type 0 (and our key, if one is configured). The peer's ordinary
//! decapsulation yields that inner packet, which it simply routes back
//! ([`Delivered::ForwardBack`]); when it reaches us it decapsulates to
//! [`Delivered::KeepaliveReturned`], which resets the count of unanswered keepalives.
//!
//! The timing rule, exactly: keepalive ticks fall at `start + k × period` (k = 1, 2, ...),
//! where `start` is when the tunnel was created or keepalives were enabled. At each tick
//! one keepalive is queued and the count of unanswered keepalives goes up by one; a
//! returned keepalive sets it to zero. Line protocol goes **down at the tick where the
//! count becomes greater than `retries`**: that is `(retries + 1) × period` after the
//! tick that sent the last keepalive to be answered (or after `start`, if none ever was).
//! With `keepalive 10 3` and a peer that vanishes just after answering the keepalive of
//! time T, line protocol goes down at T + 40 s. While down, keepalives are still sent and
//! processed (including answering the peer's), data is dropped both ways, and line
//! protocol comes up the moment a keepalive returns.
//!
//! # Sequencing (RFC 2890 §2.2)
//!
//! With `sequencing` on, data packets are sent with sequence numbers 0, 1, 2, ... and,
//! on receipt, a data packet is accepted only if its sequence number is later, in 32-bit
//! serial arithmetic, than the last accepted one (gaps are fine: lost packets are not
//! waited for). Duplicates and older packets are dropped: the simple model, with no
//! reordering buffer (RFC 2890's OOO_PACKETS = 0). A data packet without a sequence number
//! is dropped too. Keepalives, ours returning and the peer's passing through, are control
//! traffic and are exempt from the check (the returned ones carry none).
//!
//! # Tunnel MTU
//!
//! The tunnel MTU is `ip_mtu` (default 1476 = 1500 - 24), lowered, when path MTU discovery
//! is on, to the learned path MTU of the delivery path minus the tunnel overhead (20 + the
//! GRE header), but never below `min_mtu`. The learned value is an input
//! ([`GreTunnel::set_path_mtu`]), only ever lowers, and ages out after `age_timer`, when
//! the MTU goes back up. Over IPsec, feed it the SA's
//! [`max_inner_len`](crate::esp::EspSa::max_inner_len) of the path MTU (see [`ipsec`]).
//! A payload larger than the tunnel MTU is refused with [`GreError::TooBig`]: the caller
//! fragments it (IPv4 without DF) or answers with ICMP "fragmentation needed" / "packet
//! too big" carrying that MTU.

mod config;
mod counters;
pub mod ipsec;
mod tunnel;

use core::fmt;
use core::net::Ipv4Addr;

pub use config::{GreConfig, KeepaliveConfig, PmtudConfig};
pub use counters::GreCounters;
pub use tunnel::GreTunnel;

use crate::wire::WireError;

/// The delivery (outer) IPv4 header: 20 bytes, no options.
pub const DELIVERY_HEADER_LEN: usize = crate::wire::ipv4::HEADER_LEN;

/// The overhead of a plain GRE tunnel: 20 bytes of IPv4 plus 4 of GRE.
pub const GRE_OVERHEAD: usize = DELIVERY_HEADER_LEN + crate::wire::gre::BASE_HEADER_LEN;

/// The ToS byte of keepalives: IP precedence 5 (internetwork control is 6; Cisco uses 5).
pub const KEEPALIVE_TOS: u8 = 0xa0;

/// The default `ip mtu` of a GRE tunnel over Ethernet: 1500 - 24.
pub const DEFAULT_IP_MTU: u16 = 1476;

/// Why a GRE operation failed. Each variant has a counter in [`GreCounters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum GreError {
    /// A malformed delivery or GRE header: truncated, a version other than 0, reserved
    /// bits 1, 4 or 5 set, a bad IPv4 header checksum or a bad GRE checksum
    /// ([`WireError::BadChecksum`]).
    Malformed(WireError),
    /// The delivery packet is not GRE (IP protocol is not 47).
    NotGre,
    /// The delivery packet is a fragment: reassemble before decapsulating.
    Fragment,
    /// The delivery packet's addresses are not this tunnel's destination and source.
    WrongEndpoints,
    /// The key is absent, present when none is configured, or different (RFC 2890 §2.1).
    KeyMismatch,
    /// Sequencing: a duplicate or older sequence number (RFC 2890 §2.2).
    OutOfSequence,
    /// Sequencing: a data packet without a sequence number.
    MissingSequence,
    /// Line protocol is down (keepalives unanswered): data is not forwarded.
    LineProtocolDown,
    /// The payload exceeds the tunnel MTU, given here.
    TooBig {
        /// The tunnel MTU.
        mtu: u16,
    },
    /// The output buffer is too small; `needed` bytes are required.
    BufferTooSmall {
        /// Bytes the operation needs.
        needed: usize,
    },
    /// The configuration is unusable (zero keepalive period, an MTU below 68, ...).
    InvalidConfig,
}

impl fmt::Display for GreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(e) => write!(f, "malformed GRE packet: {e}"),
            Self::NotGre => f.write_str("not a GRE packet"),
            Self::Fragment => f.write_str("fragmented delivery packet"),
            Self::WrongEndpoints => f.write_str("delivery addresses are not the tunnel's"),
            Self::KeyMismatch => f.write_str("GRE key mismatch"),
            Self::OutOfSequence => f.write_str("GRE sequence number out of order"),
            Self::MissingSequence => f.write_str("GRE sequence number missing"),
            Self::LineProtocolDown => f.write_str("tunnel line protocol is down"),
            Self::TooBig { mtu } => write!(f, "packet exceeds tunnel MTU {mtu}"),
            Self::BufferTooSmall { needed } => {
                write!(f, "buffer too small ({needed} bytes needed)")
            }
            Self::InvalidConfig => f.write_str("invalid tunnel configuration"),
        }
    }
}

impl core::error::Error for GreError {}

impl From<WireError> for GreError {
    fn from(e: WireError) -> Self {
        Self::Malformed(e)
    }
}

/// What [`GreTunnel::decapsulate`] found: borrowed from the caller's packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivered<'b> {
    /// A payload for the upper layer (or the router), of GRE protocol type `protocol`.
    Data {
        /// The Protocol Type (an EtherType: 0x0800 IPv4, 0x86dd IPv6, or opaque).
        protocol: u16,
        /// The payload packet.
        payload: &'b [u8],
    },
    /// One of our keepalives came back: the peer is alive. Nothing to deliver.
    KeepaliveReturned,
    /// The peer's keepalive: an IPv4 packet addressed from us to the peer, to be sent as
    /// it is (routed, and so protected by IPsec like any GRE packet to the peer). This is
    /// ordinary forwarding of the inner packet; it happens whether or not this tunnel runs
    /// keepalives itself, and also while line protocol is down.
    ForwardBack(&'b [u8]),
}

/// A delivery packet [`GreTunnel::poll_transmit`] wrote into the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Transmit {
    /// Its length, from the start of the buffer.
    pub len: usize,
    /// The delivery source address (the tunnel source).
    #[cfg_attr(feature = "defmt", defmt(Display2Format))]
    pub src: Ipv4Addr,
    /// The delivery destination address (the tunnel destination).
    #[cfg_attr(feature = "defmt", defmt(Display2Format))]
    pub dst: Ipv4Addr,
}

/// Events for the control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum GreEvent {
    /// `%LINEPROTO-5-UPDOWN: Line protocol on Interface Tunnel0, changed state to up`.
    LineProtocolUp,
    /// Line protocol went down: `retries` keepalives in a row went unanswered.
    LineProtocolDown,
    /// The tunnel MTU changed (path MTU learned or aged out).
    MtuChanged {
        /// The new tunnel MTU.
        mtu: u16,
    },
}

/// The state of a tunnel, as `show interface tunnel0` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GreStatus {
    /// Line protocol state.
    pub line_protocol_up: bool,
    /// Keepalive period and retries, if keepalives run.
    pub keepalive: Option<KeepaliveConfig>,
    /// Keepalives sent since the last one returned.
    pub keepalives_unanswered: u32,
    /// Tunnel source.
    #[cfg_attr(feature = "defmt", defmt(Display2Format))]
    pub source: Ipv4Addr,
    /// Tunnel destination.
    #[cfg_attr(feature = "defmt", defmt(Display2Format))]
    pub destination: Ipv4Addr,
    /// `Tunnel protocol/transport`: always `"GRE/IP"`.
    pub protocol_transport: &'static str,
    /// The key, if any.
    pub key: Option<u32>,
    /// Whether sequence numbers are sent and checked.
    pub sequencing: bool,
    /// Whether checksums are sent.
    pub checksumming: bool,
    /// TTL of the delivery header.
    pub ttl: u8,
    /// The configured `ip mtu`.
    pub ip_mtu: u16,
    /// The tunnel MTU in force (lowered by path MTU discovery).
    pub tunnel_mtu: u16,
    /// Bytes added to each payload: delivery header and GRE header.
    pub overhead: usize,
    /// Path MTU discovery settings, if on.
    pub path_mtu_discovery: Option<PmtudConfig>,
    /// The learned path MTU of the delivery path, if any.
    pub path_mtu: Option<u16>,
    /// Counters.
    pub counters: GreCounters,
}

impl fmt::Display for GreStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let up = if self.line_protocol_up { "up" } else { "down" };
        writeln!(f, "Tunnel is up, line protocol is {up}")?;
        writeln!(f, "  Hardware is Tunnel")?;
        writeln!(f, "  MTU {} bytes", self.tunnel_mtu)?;
        match self.keepalive {
            Some(k) => writeln!(
                f,
                "  Keepalive set ({} sec), retries {}",
                k.period.as_secs(),
                k.retries
            )?,
            None => writeln!(f, "  Keepalive not set")?,
        }
        writeln!(
            f,
            "  Tunnel source {}, destination {}",
            self.source, self.destination
        )?;
        writeln!(f, "  Tunnel protocol/transport {}", self.protocol_transport)?;
        match self.key {
            Some(k) => write!(f, "    Key {k:#x}, ")?,
            None => write!(f, "    Key disabled, ")?,
        }
        let seq = if self.sequencing {
            "enabled"
        } else {
            "disabled"
        };
        writeln!(f, "sequencing {seq}")?;
        let ck = if self.checksumming {
            "enabled"
        } else {
            "disabled"
        };
        writeln!(f, "    Checksumming of packets {ck}")?;
        writeln!(f, "  Tunnel TTL {}", self.ttl)?;
        writeln!(
            f,
            "  Tunnel transport MTU {} bytes",
            usize::from(self.tunnel_mtu) + self.overhead
        )?;
        match (self.path_mtu_discovery, self.path_mtu) {
            (Some(p), learned) => {
                write!(
                    f,
                    "  Path MTU Discovery, ager {} mins, min MTU {}",
                    p.age_timer.as_secs() / 60,
                    p.min_mtu
                )?;
                match learned {
                    Some(m) => writeln!(f, ", path MTU {m}")?,
                    None => writeln!(f)?,
                }
            }
            (None, _) => writeln!(f, "  Path MTU Discovery disabled")?,
        }
        let c = &self.counters;
        writeln!(
            f,
            "     {} packets input, {} bytes, {} input errors",
            c.packets_in,
            c.bytes_in,
            c.input_errors()
        )?;
        writeln!(
            f,
            "     {} packets output, {} bytes, {} output drops",
            c.packets_out,
            c.bytes_out,
            c.output_drops()
        )?;
        writeln!(
            f,
            "     {} keepalives sent, {} returned, {} forwarded for the peer",
            c.keepalives_sent, c.keepalives_returned, c.keepalives_forwarded
        )
    }
}
