//! The security policy database: selectors and the protect / bypass / discard decision
//! (RFC 4301 §4.4.1).
//!
//! The model is a Cisco crypto map with its access list:
//!
//! ```text
//! access-list 100 permit ip 10.0.68.0 0.0.0.255 10.1.1.0 0.0.0.255
//! crypto map VPN 10 ipsec-isakmp
//!  match address 100
//! ```
//!
//! which becomes a [`Policy`] with sequence number 10, a [`Selector`] whose local range is
//! `10.0.68.0/24` and whose remote range is `10.1.1.0/24`, and the action
//! [`PolicyAction::Protect`]. Policies are searched in sequence-number order and the first
//! match wins, as crypto map entries and ACL lines are.
//!
//! Selectors are written from our point of view (local / remote), as RFC 4301 and IKE
//! proxy identities are; [`Direction`] says how a packet's source and destination map onto
//! them. A [`Flow`] is what a packet offers to the selectors; [`Flow::from_ip_packet`]
//! extracts it from raw IPv4 or IPv6 bytes.
//!
//! ## Ports, ICMP and fragments
//!
//! * TCP, UDP, SCTP, DCCP and UDP-Lite carry their source and destination ports.
//! * ICMP and ICMPv6 carry the message type in `src_port` and the code in `dst_port` (the
//!   convention of Linux XFRM selectors). A selector therefore sees the type in the port
//!   of the side that sent the message: `local_ports` for outbound, `remote_ports` for
//!   inbound. Most ICMP policies use [`PortRange::ANY`] and need not care.
//! * Non-initial fragments, and protocols without ports, carry no port information
//!   ([`Flow::ports_known`] is `false`). Such a flow matches only selectors whose ports are
//!   both [`PortRange::ANY`]: RFC 4301's OPAQUE, conservatively handled (§4.4.1, §7).

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::{WireError, proto};

/// An error in building a selector or in managing the SPD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SpdError {
    /// The SPD already holds as many policies as its capacity.
    Full,
    /// A policy with the same sequence number is already installed.
    DuplicateSeq,
    /// IPv4 and IPv6 addresses were mixed where one family is required.
    FamilyMismatch,
    /// A range's start is after its end.
    InvalidRange,
    /// A prefix length is longer than the address (32 or 128 bits).
    PrefixTooLong,
    /// A netmask or wildcard mask is not contiguous (IOS accepts `0.0.255.0`; we do not).
    NonContiguousMask,
}

impl fmt::Display for SpdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full => "security policy database full",
            Self::DuplicateSeq => "duplicate policy sequence number",
            Self::FamilyMismatch => "address families do not match",
            Self::InvalidRange => "range start is after its end",
            Self::PrefixTooLong => "prefix length too long",
            Self::NonContiguousMask => "mask is not contiguous",
        })
    }
}

impl core::error::Error for SpdError {}

/// The addresses as integers: comparisons and masks are plain integer operations.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum Span {
    V4 { start: u32, end: u32 },
    V6 { start: u128, end: u128 },
}

/// An inclusive range of IPv4 or IPv6 addresses, `start..=end`, never empty and never
/// mixing families.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AddrRange(Span);

/// All ones in the low `bits - len` bits (the host part of a `/len` prefix).
fn host_mask_v4(len: u8) -> u32 {
    u32::MAX.checked_shr(u32::from(len)).unwrap_or(0)
}

fn host_mask_v6(len: u8) -> u128 {
    u128::MAX.checked_shr(u32::from(len)).unwrap_or(0)
}

impl AddrRange {
    /// The range `start..=end`.
    ///
    /// # Errors
    ///
    /// [`SpdError::FamilyMismatch`] if one address is IPv4 and the other IPv6,
    /// [`SpdError::InvalidRange`] if `start > end`.
    pub fn new(start: IpAddr, end: IpAddr) -> Result<Self, SpdError> {
        let span = match (start, end) {
            (IpAddr::V4(s), IpAddr::V4(e)) => Span::V4 {
                start: s.to_bits(),
                end: e.to_bits(),
            },
            (IpAddr::V6(s), IpAddr::V6(e)) => Span::V6 {
                start: s.to_bits(),
                end: e.to_bits(),
            },
            _ => return Err(SpdError::FamilyMismatch),
        };
        let ordered = match span {
            Span::V4 { start, end } => start <= end,
            Span::V6 { start, end } => start <= end,
        };
        if ordered {
            Ok(Self(span))
        } else {
            Err(SpdError::InvalidRange)
        }
    }

    /// The prefix `addr/len`. Host bits set in `addr` are ignored, so `10.0.68.7/24` is
    /// `10.0.68.0..=10.0.68.255`.
    ///
    /// # Errors
    ///
    /// [`SpdError::PrefixTooLong`] if `len` exceeds 32 (IPv4) or 128 (IPv6).
    pub fn from_prefix(addr: IpAddr, len: u8) -> Result<Self, SpdError> {
        match addr {
            IpAddr::V4(a) => {
                if len > 32 {
                    return Err(SpdError::PrefixTooLong);
                }
                let host = host_mask_v4(len);
                let start = a.to_bits() & !host;
                Ok(Self(Span::V4 {
                    start,
                    end: start | host,
                }))
            }
            IpAddr::V6(a) => {
                if len > 128 {
                    return Err(SpdError::PrefixTooLong);
                }
                let host = host_mask_v6(len);
                let start = a.to_bits() & !host;
                Ok(Self(Span::V6 {
                    start,
                    end: start | host,
                }))
            }
        }
    }

    /// An IOS access-list address and wildcard, as in `10.0.68.0 0.0.0.255`. Only
    /// contiguous wildcards (`0.0.0.255`, `0.0.3.255`, ...) are accepted, since a policy
    /// must be expressible as IKE identities; bits of `addr` under the wildcard are
    /// ignored, as IOS does.
    ///
    /// # Errors
    ///
    /// [`SpdError::NonContiguousMask`] for a wildcard such as `0.0.255.0`.
    pub fn from_wildcard(addr: Ipv4Addr, wildcard: Ipv4Addr) -> Result<Self, SpdError> {
        let w = wildcard.to_bits();
        if w & w.wrapping_add(1) != 0 {
            return Err(SpdError::NonContiguousMask);
        }
        let start = addr.to_bits() & !w;
        Ok(Self(Span::V4 {
            start,
            end: start | w,
        }))
    }

    /// An address and netmask, as in IKE's `ID_IPV4_ADDR_SUBNET` / `ID_IPV6_ADDR_SUBNET`
    /// (`10.0.68.0 255.255.255.0`). Host bits set in `addr` are ignored.
    ///
    /// # Errors
    ///
    /// [`SpdError::FamilyMismatch`] if the families differ,
    /// [`SpdError::NonContiguousMask`] if the mask is not a prefix mask.
    pub fn from_netmask(addr: IpAddr, mask: IpAddr) -> Result<Self, SpdError> {
        match (addr, mask) {
            (IpAddr::V4(_), IpAddr::V4(m)) => {
                let host = !m.to_bits();
                if host & host.wrapping_add(1) != 0 {
                    return Err(SpdError::NonContiguousMask);
                }
                Self::from_prefix(addr, m.to_bits().leading_ones().try_into().unwrap_or(32))
            }
            (IpAddr::V6(_), IpAddr::V6(m)) => {
                let host = !m.to_bits();
                if host & host.wrapping_add(1) != 0 {
                    return Err(SpdError::NonContiguousMask);
                }
                Self::from_prefix(addr, m.to_bits().leading_ones().try_into().unwrap_or(128))
            }
            _ => Err(SpdError::FamilyMismatch),
        }
    }

    /// The single address `addr` (`host 10.0.0.1`).
    #[must_use]
    pub const fn host(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(a) => Self(Span::V4 {
                start: a.to_bits(),
                end: a.to_bits(),
            }),
            IpAddr::V6(a) => Self(Span::V6 {
                start: a.to_bits(),
                end: a.to_bits(),
            }),
        }
    }

    /// Every IPv4 address (`any`, `0.0.0.0/0`).
    #[must_use]
    pub const fn any_v4() -> Self {
        Self(Span::V4 {
            start: 0,
            end: u32::MAX,
        })
    }

    /// Every IPv6 address (`::/0`).
    #[must_use]
    pub const fn any_v6() -> Self {
        Self(Span::V6 {
            start: 0,
            end: u128::MAX,
        })
    }

    /// The first address of the range.
    #[must_use]
    pub const fn start(&self) -> IpAddr {
        match self.0 {
            Span::V4 { start, .. } => IpAddr::V4(Ipv4Addr::from_bits(start)),
            Span::V6 { start, .. } => IpAddr::V6(Ipv6Addr::from_bits(start)),
        }
    }

    /// The last address of the range.
    #[must_use]
    pub const fn end(&self) -> IpAddr {
        match self.0 {
            Span::V4 { end, .. } => IpAddr::V4(Ipv4Addr::from_bits(end)),
            Span::V6 { end, .. } => IpAddr::V6(Ipv6Addr::from_bits(end)),
        }
    }

    /// Whether this is an IPv4 range.
    #[must_use]
    pub const fn is_ipv4(&self) -> bool {
        matches!(self.0, Span::V4 { .. })
    }

    /// Whether this is an IPv6 range.
    #[must_use]
    pub const fn is_ipv6(&self) -> bool {
        matches!(self.0, Span::V6 { .. })
    }

    /// Whether the range is every address of its family.
    #[must_use]
    pub const fn is_any(&self) -> bool {
        match self.0 {
            Span::V4 { start, end } => start == 0 && end == u32::MAX,
            Span::V6 { start, end } => start == 0 && end == u128::MAX,
        }
    }

    /// Whether `addr` is in the range (never, if the families differ).
    #[must_use]
    pub const fn contains(&self, addr: IpAddr) -> bool {
        match (self.0, addr) {
            (Span::V4 { start, end }, IpAddr::V4(a)) => start <= a.to_bits() && a.to_bits() <= end,
            (Span::V6 { start, end }, IpAddr::V6(a)) => start <= a.to_bits() && a.to_bits() <= end,
            _ => false,
        }
    }

    /// Whether every address of `self` is in `other` (never, if the families differ).
    #[must_use]
    pub const fn is_subset_of(&self, other: &Self) -> bool {
        match (self.0, other.0) {
            (Span::V4 { start: s, end: e }, Span::V4 { start: os, end: oe }) => os <= s && e <= oe,
            (Span::V6 { start: s, end: e }, Span::V6 { start: os, end: oe }) => os <= s && e <= oe,
            _ => false,
        }
    }

    /// Whether some address is in both ranges (never, if the families differ).
    #[must_use]
    pub const fn overlaps(&self, other: &Self) -> bool {
        match (self.0, other.0) {
            (Span::V4 { start: s, end: e }, Span::V4 { start: os, end: oe }) => s <= oe && os <= e,
            (Span::V6 { start: s, end: e }, Span::V6 { start: os, end: oe }) => s <= oe && os <= e,
            _ => false,
        }
    }

    /// The range as `(network, prefix_len)` if it is exactly one prefix, as IKE's
    /// `ID_IPV4_ADDR_SUBNET` needs; `None` for a range such as `10.0.0.1-10.0.0.5`, which
    /// needs `ID_IPV4_ADDR_RANGE` instead.
    #[must_use]
    pub fn as_prefix(&self) -> Option<(IpAddr, u8)> {
        match self.0 {
            Span::V4 { start, end } => {
                let host = end.wrapping_sub(start);
                let aligned = host & host.wrapping_add(1) == 0 && start & host == 0;
                let len = 32_u32.saturating_sub(host.count_ones());
                aligned.then(|| (self.start(), u8::try_from(len).unwrap_or(32)))
            }
            Span::V6 { start, end } => {
                let host = end.wrapping_sub(start);
                let aligned = host & host.wrapping_add(1) == 0 && start & host == 0;
                let len = 128_u32.saturating_sub(host.count_ones());
                aligned.then(|| (self.start(), u8::try_from(len).unwrap_or(128)))
            }
        }
    }

    /// The range as `(network, netmask)` if it is exactly one prefix: the two fields of
    /// `ID_IPV4_ADDR_SUBNET` / `ID_IPV6_ADDR_SUBNET`.
    #[must_use]
    pub fn as_subnet(&self) -> Option<(IpAddr, IpAddr)> {
        let (net, len) = self.as_prefix()?;
        let mask = match net {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from_bits(!host_mask_v4(len))),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from_bits(!host_mask_v6(len))),
        };
        Some((net, mask))
    }
}

impl fmt::Display for AddrRange {
    /// `10.0.68.0/24` for a prefix, `10.0.0.1-10.0.0.5` otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_prefix() {
            Some((net, len)) => write!(f, "{net}/{len}"),
            None => write!(f, "{}-{}", self.start(), self.end()),
        }
    }
}

impl fmt::Debug for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AddrRange({self})")
    }
}

/// An inclusive range of ports, `start..=end`, never empty.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PortRange {
    start: u16,
    end: u16,
}

impl PortRange {
    /// Every port, `0..=65535`; also matches flows whose ports are unknown (OPAQUE).
    pub const ANY: Self = Self {
        start: 0,
        end: u16::MAX,
    };

    /// The range `start..=end`.
    ///
    /// # Errors
    ///
    /// [`SpdError::InvalidRange`] if `start > end`.
    pub const fn new(start: u16, end: u16) -> Result<Self, SpdError> {
        if start <= end {
            Ok(Self { start, end })
        } else {
            Err(SpdError::InvalidRange)
        }
    }

    /// The single port `port`.
    #[must_use]
    pub const fn single(port: u16) -> Self {
        Self {
            start: port,
            end: port,
        }
    }

    /// The first port.
    #[must_use]
    pub const fn start(&self) -> u16 {
        self.start
    }

    /// The last port.
    #[must_use]
    pub const fn end(&self) -> u16 {
        self.end
    }

    /// Whether this is [`PortRange::ANY`].
    #[must_use]
    pub const fn is_any(&self) -> bool {
        self.start == 0 && self.end == u16::MAX
    }

    /// Whether `port` is in the range.
    #[must_use]
    pub const fn contains(&self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }

    /// Whether every port of `self` is in `other`.
    #[must_use]
    pub const fn is_subset_of(&self, other: &Self) -> bool {
        other.start <= self.start && self.end <= other.end
    }

    /// Whether some port is in both ranges.
    #[must_use]
    pub const fn overlaps(&self, other: &Self) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

impl Default for PortRange {
    fn default() -> Self {
        Self::ANY
    }
}

impl fmt::Display for PortRange {
    /// `any`, `80`, or `1024-65535`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_any() {
            f.write_str("any")
        } else if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl fmt::Debug for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PortRange({self})")
    }
}

/// Which way a packet travels relative to us.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Direction {
    /// A packet we send: its source is local, its destination remote.
    Outbound,
    /// A packet we receive: its destination is local, its source remote.
    Inbound,
}

/// The fields of a packet that selectors look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Next layer protocol (after IPv6 extension headers).
    pub protocol: u8,
    /// Source port, or ICMP type.
    pub src_port: u16,
    /// Destination port, or ICMP code.
    pub dst_port: u16,
    /// Whether `src_port` / `dst_port` hold real values. `false` for non-initial fragments
    /// and for protocols without ports (both zero then); such a flow only matches
    /// selectors whose ports are [`PortRange::ANY`].
    pub ports_known: bool,
}

// `defmt` has no impl for `core::net` addresses; print them by hand.
#[cfg(feature = "defmt")]
fn format_ip(f: defmt::Formatter<'_>, addr: IpAddr) {
    match addr {
        IpAddr::V4(a) => {
            let [b0, b1, b2, b3] = a.octets();
            defmt::write!(f, "{=u8}.{=u8}.{=u8}.{=u8}", b0, b1, b2, b3);
        }
        IpAddr::V6(a) => defmt::write!(f, "{=[u8]:02x}", a.octets()),
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Flow {
    fn format(&self, f: defmt::Formatter<'_>) {
        format_ip(f, self.src);
        defmt::write!(f, " -> ");
        format_ip(f, self.dst);
        defmt::write!(
            f,
            " proto {=u8} ports {=u16} -> {=u16} (known: {=bool})",
            self.protocol,
            self.src_port,
            self.dst_port,
            self.ports_known
        );
    }
}

/// IPv6 extension headers we walk past to find the next layer protocol (RFC 4301 §4.4.1.1).
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const DEST_OPTS: u8 = 60;
/// Transport protocols with 16-bit source and destination ports in their first 4 bytes.
const SCTP: u8 = 132;
const DCCP: u8 = 33;
const UDP_LITE: u8 = 136;
/// More extension headers than this is not a packet we classify.
const MAX_EXT_HEADERS: usize = 8;

fn be16(p: &[u8], off: usize) -> Result<u16, WireError> {
    let b = p
        .get(off..off.saturating_add(2))
        .ok_or(WireError::Truncated)?;
    match *b {
        [hi, lo] => Ok(u16::from_be_bytes([hi, lo])),
        _ => Err(WireError::Truncated),
    }
}

fn byte(p: &[u8], off: usize) -> Result<u8, WireError> {
    p.get(off).copied().ok_or(WireError::Truncated)
}

fn array<const K: usize>(p: &[u8], off: usize) -> Result<[u8; K], WireError> {
    p.get(off..off.saturating_add(K))
        .and_then(|s| s.try_into().ok())
        .ok_or(WireError::Truncated)
}

impl Flow {
    /// Extracts the flow from a complete IPv4 or IPv6 packet (no link-layer header).
    ///
    /// Reads only what selectors need and validates only what it reads: the version, the
    /// header and total lengths, the IPv6 extension-header chain (at most
    /// 8 headers of types Hop-by-Hop, Routing, Destination Options and Fragment), and the
    /// first 4 bytes of the transport header. Checksums and options are not checked. The
    /// buffer may extend past the packet's length field (link-layer padding).
    ///
    /// # Errors
    ///
    /// [`WireError::BadVersion`] if the version is neither 4 nor 6,
    /// [`WireError::Truncated`] if a header or the length field runs past the buffer,
    /// [`WireError::BadLength`] if the IPv4 IHL or total length is too small,
    /// [`WireError::Malformed`] if the IPv6 extension-header chain is too long.
    pub fn from_ip_packet(packet: &[u8]) -> Result<Self, WireError> {
        match byte(packet, 0)? >> 4 {
            4 => Self::from_ipv4(packet),
            6 => Self::from_ipv6(packet),
            _ => Err(WireError::BadVersion),
        }
    }

    fn from_ipv4(p: &[u8]) -> Result<Self, WireError> {
        if p.len() < 20 {
            return Err(WireError::Truncated);
        }
        let ihl = usize::from(byte(p, 0)? & 0x0f) * 4;
        let total = usize::from(be16(p, 2)?);
        if ihl < 20 || total < ihl {
            return Err(WireError::BadLength);
        }
        let packet = p.get(..total).ok_or(WireError::Truncated)?;
        let frag_offset = be16(packet, 6)? & 0x1fff;
        let protocol = byte(packet, 9)?;
        let src = IpAddr::V4(Ipv4Addr::from(array::<4>(packet, 12)?));
        let dst = IpAddr::V4(Ipv4Addr::from(array::<4>(packet, 16)?));
        let l4 = packet.get(ihl..).ok_or(WireError::Truncated)?;
        Self::with_ports(src, dst, protocol, frag_offset == 0, l4)
    }

    fn from_ipv6(p: &[u8]) -> Result<Self, WireError> {
        if p.len() < 40 {
            return Err(WireError::Truncated);
        }
        let end = 40 + usize::from(be16(p, 4)?);
        let packet = p.get(..end).ok_or(WireError::Truncated)?;
        let src = IpAddr::V6(Ipv6Addr::from(array::<16>(packet, 8)?));
        let dst = IpAddr::V6(Ipv6Addr::from(array::<16>(packet, 24)?));
        let mut next = byte(packet, 6)?;
        let mut off: usize = 40;
        let mut initial = true;
        let mut headers = 0;
        loop {
            match next {
                HOP_BY_HOP | ROUTING | DEST_OPTS => {
                    let len = (usize::from(byte(packet, off.saturating_add(1))?) + 1) * 8;
                    next = byte(packet, off)?;
                    off = off.saturating_add(len);
                }
                proto::IPV6_FRAG => {
                    let hdr = array::<8>(packet, off)?;
                    let [nh, _, hi, lo, ..] = hdr;
                    next = nh;
                    off = off.saturating_add(8);
                    if u16::from_be_bytes([hi, lo]) >> 3 != 0 {
                        // What follows is the middle of the fragmentable part, not a header.
                        initial = false;
                        break;
                    }
                }
                _ => break,
            }
            headers += 1;
            if headers > MAX_EXT_HEADERS {
                return Err(WireError::Malformed);
            }
        }
        let l4 = if initial {
            packet.get(off..).ok_or(WireError::Truncated)?
        } else {
            &[]
        };
        Self::with_ports(src, dst, next, initial, l4)
    }

    fn with_ports(
        src: IpAddr,
        dst: IpAddr,
        protocol: u8,
        initial_fragment: bool,
        l4: &[u8],
    ) -> Result<Self, WireError> {
        let mut flow = Self {
            src,
            dst,
            protocol,
            src_port: 0,
            dst_port: 0,
            ports_known: false,
        };
        if !initial_fragment {
            return Ok(flow);
        }
        match protocol {
            proto::TCP | proto::UDP | SCTP | DCCP | UDP_LITE => {
                flow.src_port = be16(l4, 0)?;
                flow.dst_port = be16(l4, 2)?;
                flow.ports_known = true;
            }
            proto::ICMP | proto::ICMPV6 => {
                flow.src_port = u16::from(byte(l4, 0)?);
                flow.dst_port = u16::from(byte(l4, 1)?);
                flow.ports_known = true;
            }
            _ => {}
        }
        Ok(flow)
    }
}

/// Traffic selectors (RFC 4301 §4.4.1.1), from our point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Selector {
    /// Our side's addresses (the ACL source, IKE's IDci when we initiate).
    pub local: AddrRange,
    /// The peer side's addresses (the ACL destination).
    pub remote: AddrRange,
    /// Next layer protocol; `None` is any (`permit ip`).
    pub protocol: Option<u8>,
    /// Our side's ports (or ICMP type/code, see the module docs).
    pub local_ports: PortRange,
    /// The peer side's ports.
    pub remote_ports: PortRange,
}

impl Selector {
    /// Any protocol and any ports between `local` and `remote`, like
    /// `permit ip <local> <remote>`.
    ///
    /// # Errors
    ///
    /// [`SpdError::FamilyMismatch`] if one range is IPv4 and the other IPv6.
    pub const fn new(local: AddrRange, remote: AddrRange) -> Result<Self, SpdError> {
        if local.is_ipv4() != remote.is_ipv4() {
            return Err(SpdError::FamilyMismatch);
        }
        Ok(Self {
            local,
            remote,
            protocol: None,
            local_ports: PortRange::ANY,
            remote_ports: PortRange::ANY,
        })
    }

    /// The same selector restricted to `protocol`.
    #[must_use]
    pub const fn with_protocol(mut self, protocol: u8) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// The same selector restricted to local ports `ports`.
    #[must_use]
    pub const fn with_local_ports(mut self, ports: PortRange) -> Self {
        self.local_ports = ports;
        self
    }

    /// The same selector restricted to remote ports `ports`.
    #[must_use]
    pub const fn with_remote_ports(mut self, ports: PortRange) -> Self {
        self.remote_ports = ports;
        self
    }

    /// The selector as the peer sees it: local and remote swapped.
    #[must_use]
    pub const fn mirrored(&self) -> Self {
        Self {
            local: self.remote,
            remote: self.local,
            protocol: self.protocol,
            local_ports: self.remote_ports,
            remote_ports: self.local_ports,
        }
    }

    /// Whether a packet with `flow`, travelling in `direction`, matches. Outbound, the
    /// packet's source is matched against `local`; inbound, its destination is.
    #[must_use]
    pub fn matches(&self, flow: &Flow, direction: Direction) -> bool {
        let (local, remote, local_port, remote_port) = match direction {
            Direction::Outbound => (flow.src, flow.dst, flow.src_port, flow.dst_port),
            Direction::Inbound => (flow.dst, flow.src, flow.dst_port, flow.src_port),
        };
        if !self.local.contains(local) || !self.remote.contains(remote) {
            return false;
        }
        if self.protocol.is_some_and(|p| p != flow.protocol) {
            return false;
        }
        if self.local_ports.is_any() && self.remote_ports.is_any() {
            return true;
        }
        flow.ports_known
            && self.local_ports.contains(local_port)
            && self.remote_ports.contains(remote_port)
    }

    /// Whether every packet `self` matches is matched by `other`: used to check that the
    /// selectors a peer negotiated lie within our policy.
    #[must_use]
    pub fn is_subset_of(&self, other: &Self) -> bool {
        let protocol = match (self.protocol, other.protocol) {
            (_, None) => true,
            (Some(a), Some(b)) => a == b,
            (None, Some(_)) => false,
        };
        protocol
            && self.local.is_subset_of(&other.local)
            && self.remote.is_subset_of(&other.remote)
            && self.local_ports.is_subset_of(&other.local_ports)
            && self.remote_ports.is_subset_of(&other.remote_ports)
    }

    /// Whether some packet is matched by both: used to find overlapping policies.
    #[must_use]
    pub fn overlaps(&self, other: &Self) -> bool {
        let protocol = match (self.protocol, other.protocol) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        protocol
            && self.local.overlaps(&other.local)
            && self.remote.overlaps(&other.remote)
            && self.local_ports.overlaps(&other.local_ports)
            && self.remote_ports.overlaps(&other.remote_ports)
    }
}

/// What to do with the traffic a policy selects (RFC 4301 §4.4.1: PROTECT, BYPASS,
/// DISCARD).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PolicyAction {
    /// Send through IPsec, using the SAs of group `sa_group` (the crypto map entry / SA
    /// bundle the control plane negotiates; if none is up yet, that is the trigger for
    /// IKE).
    Protect {
        /// The crypto map entry whose SAs carry this traffic.
        sa_group: u32,
    },
    /// Send or accept in the clear.
    Bypass,
    /// Drop.
    Discard,
}

/// One SPD entry: a sequence number (its place in the search order), a selector and an
/// action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Policy {
    /// Search order: lower first, like crypto map sequence numbers. Unique within an SPD.
    pub seq: u32,
    /// The traffic this policy applies to.
    pub selector: Selector,
    /// What to do with it.
    pub action: PolicyAction,
}

/// An ordered security policy database of at most `N` policies.
///
/// Lookups scan the policies in `seq` order and return the first match, so their cost is
/// linear in the number of policies, as an ACL's is. Per-flow results belong in a cache:
/// [`Dataplane`](crate::dataplane::Dataplane) keeps one (see [`crate::dataplane::flow`]),
/// so only the first packet of a flow pays for the scan. A lookup is a pure function of
/// the [`Flow`] and of the SPD, which is what makes that cache exact.
///
/// Traffic no policy matches gets the default action, which the constructor makes
/// explicit: RFC 4301 says [`PolicyAction::Discard`]; IOS behaves as
/// [`PolicyAction::Bypass`] (traffic outside every crypto map ACL is sent in the clear).
#[derive(Clone, Debug)]
pub struct Spd<const N: usize> {
    policies: heapless::Vec<Policy, N>,
    default_action: PolicyAction,
}

impl<const N: usize> Spd<N> {
    /// An empty SPD with the given action for unmatched traffic.
    #[must_use]
    pub const fn new(default_action: PolicyAction) -> Self {
        Self {
            policies: heapless::Vec::new(),
            default_action,
        }
    }

    /// The action for traffic no policy matches.
    #[must_use]
    pub const fn default_action(&self) -> PolicyAction {
        self.default_action
    }

    /// Changes the action for traffic no policy matches.
    pub fn set_default_action(&mut self, action: PolicyAction) {
        self.default_action = action;
    }

    /// Installs `policy` at its place in `seq` order.
    ///
    /// # Errors
    ///
    /// [`SpdError::DuplicateSeq`] if a policy with the same `seq` exists,
    /// [`SpdError::Full`] if `N` policies are installed.
    pub fn insert(&mut self, policy: Policy) -> Result<(), SpdError> {
        let pos = match self.policies.binary_search_by_key(&policy.seq, |p| p.seq) {
            Ok(_) => return Err(SpdError::DuplicateSeq),
            Err(pos) => pos,
        };
        self.policies
            .insert(pos, policy)
            .map_err(|_| SpdError::Full)
    }

    /// Removes and returns the policy with sequence number `seq`.
    pub fn remove(&mut self, seq: u32) -> Option<Policy> {
        let pos = self.policies.binary_search_by_key(&seq, |p| p.seq).ok()?;
        (pos < self.policies.len()).then(|| self.policies.remove(pos))
    }

    /// The policy with sequence number `seq`.
    #[must_use]
    pub fn get(&self, seq: u32) -> Option<&Policy> {
        let pos = self.policies.binary_search_by_key(&seq, |p| p.seq).ok()?;
        self.policies.get(pos)
    }

    /// Removes every policy.
    pub fn clear(&mut self) {
        self.policies.clear();
    }

    /// The number of installed policies.
    #[must_use]
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// Whether no policy is installed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The maximum number of policies, `N`.
    #[must_use]
    pub const fn capacity(&self) -> usize {
        N
    }

    /// The policies in search (`seq`) order.
    pub fn iter(&self) -> core::slice::Iter<'_, Policy> {
        self.policies.iter()
    }

    /// The first policy (in `seq` order) matching an outbound packet's `flow`, or `None` if
    /// the default action applies.
    #[must_use]
    pub fn lookup_outbound(&self, flow: &Flow) -> Option<&Policy> {
        self.policies
            .iter()
            .find(|p| p.selector.matches(flow, Direction::Outbound))
    }

    /// The first policy matching an inbound packet's `flow`, or `None` if the default
    /// action applies.
    ///
    /// This is for packets that arrived **in the clear**. If the answer is
    /// [`PolicyAction::Protect`], the packet should have come through an SA and the caller
    /// must drop it (RFC 4301 §5.2); only `Bypass` admits it.
    /// [`Spd::admits_cleartext`] applies that rule. Packets that came out of an SA are
    /// checked against that SA's own selectors instead.
    #[must_use]
    pub fn lookup_inbound(&self, flow: &Flow) -> Option<&Policy> {
        self.policies
            .iter()
            .find(|p| p.selector.matches(flow, Direction::Inbound))
    }

    /// The action for an outbound packet: the first matching policy's, else the default.
    #[must_use]
    pub fn decide_outbound(&self, flow: &Flow) -> PolicyAction {
        self.lookup_outbound(flow)
            .map_or(self.default_action, |p| p.action)
    }

    /// The action for an inbound cleartext packet: the first matching policy's, else the
    /// default. `Protect` here means "drop": see [`Spd::lookup_inbound`].
    #[must_use]
    pub fn decide_inbound(&self, flow: &Flow) -> PolicyAction {
        self.lookup_inbound(flow)
            .map_or(self.default_action, |p| p.action)
    }

    /// Whether an inbound packet that arrived in the clear may be delivered: only if its
    /// action is `Bypass`.
    #[must_use]
    pub fn admits_cleartext(&self, flow: &Flow) -> bool {
        self.decide_inbound(flow) == PolicyAction::Bypass
    }

    /// The first installed policy (in `seq` order) whose selector overlaps `selector`:
    /// a configuration check, since with overlapping policies the order decides.
    #[must_use]
    pub fn first_overlap(&self, selector: &Selector) -> Option<&Policy> {
        self.policies.iter().find(|p| p.selector.overlaps(selector))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec;

    use super::*;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }

    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }

    fn wc(addr: &str, wildcard: &str) -> AddrRange {
        AddrRange::from_wildcard(addr.parse().unwrap(), wildcard.parse().unwrap()).unwrap()
    }

    /// A minimal IPv4 packet: 20-byte header (or longer with `options`), then `l4`.
    fn ipv4_packet(
        src: &str,
        dst: &str,
        protocol: u8,
        frag_field: u16,
        options: &[u8],
        l4: &[u8],
    ) -> Vec<u8> {
        let ihl = 20 + options.len();
        assert_eq!(ihl % 4, 0);
        let total = u16::try_from(ihl + l4.len()).unwrap();
        let mut p = Vec::new();
        p.push(0x40 | u8::try_from(ihl / 4).unwrap());
        p.push(0);
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0x12, 0x34]);
        p.extend_from_slice(&frag_field.to_be_bytes());
        p.push(64);
        p.push(protocol);
        p.extend_from_slice(&[0, 0]); // checksum: not checked
        p.extend_from_slice(&src.parse::<Ipv4Addr>().unwrap().octets());
        p.extend_from_slice(&dst.parse::<Ipv4Addr>().unwrap().octets());
        p.extend_from_slice(options);
        p.extend_from_slice(l4);
        p
    }

    /// A minimal IPv6 packet: fixed header with `next`, then `rest` (ext headers + l4).
    fn ipv6_packet(src: &str, dst: &str, next: u8, rest: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&[0x60, 0, 0, 0]);
        p.extend_from_slice(&u16::try_from(rest.len()).unwrap().to_be_bytes());
        p.push(next);
        p.push(64);
        p.extend_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&dst.parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(rest);
        p
    }

    fn udp(sport: u16, dport: u16) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&sport.to_be_bytes());
        h.extend_from_slice(&dport.to_be_bytes());
        h.extend_from_slice(&[0, 8, 0, 0]);
        h
    }

    fn tcp(sport: u16, dport: u16) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&sport.to_be_bytes());
        h.extend_from_slice(&dport.to_be_bytes());
        h.extend_from_slice(&[0; 16]);
        h
    }

    /// `access-list 100 permit ip 10.0.68.0 0.0.0.255 10.1.1.0 0.0.0.255`
    fn acl_100() -> Selector {
        Selector::new(wc("10.0.68.0", "0.0.0.255"), wc("10.1.1.0", "0.0.0.255")).unwrap()
    }

    fn flow_v4(src: &str, dst: &str, protocol: u8, sp: u16, dp: u16) -> Flow {
        Flow {
            src: v4(src),
            dst: v4(dst),
            protocol,
            src_port: sp,
            dst_port: dp,
            ports_known: true,
        }
    }

    #[test]
    fn wildcard_and_prefix_constructors() {
        let r = wc("10.0.68.0", "0.0.0.255");
        assert_eq!(r.start(), v4("10.0.68.0"));
        assert_eq!(r.end(), v4("10.0.68.255"));
        assert_eq!(r.as_prefix(), Some((v4("10.0.68.0"), 24)));
        assert_eq!(r.as_subnet(), Some((v4("10.0.68.0"), v4("255.255.255.0"))));
        assert_eq!(r, AddrRange::from_prefix(v4("10.0.68.77"), 24).unwrap());
        assert_eq!(
            r,
            AddrRange::from_netmask(v4("10.0.68.9"), v4("255.255.255.0")).unwrap()
        );
        // Bits under the wildcard are ignored, as IOS does.
        assert_eq!(r, wc("10.0.68.5", "0.0.0.255"));
        assert_eq!(
            wc("10.0.0.0", "0.0.3.255").as_prefix(),
            Some((v4("10.0.0.0"), 22))
        );
        assert_eq!(wc("1.2.3.4", "0.0.0.0"), AddrRange::host(v4("1.2.3.4")));
        assert_eq!(wc("1.2.3.4", "255.255.255.255"), AddrRange::any_v4());
        for bad in ["0.0.255.0", "255.0.0.0", "0.0.0.254", "0.255.0.255"] {
            assert_eq!(
                AddrRange::from_wildcard(Ipv4Addr::UNSPECIFIED, bad.parse().unwrap()),
                Err(SpdError::NonContiguousMask),
                "{bad}"
            );
        }
        assert_eq!(
            AddrRange::from_netmask(v4("10.0.0.0"), v4("255.0.255.0")),
            Err(SpdError::NonContiguousMask)
        );
        assert_eq!(
            AddrRange::from_netmask(v4("10.0.0.0"), v6("ffff::")),
            Err(SpdError::FamilyMismatch)
        );
        assert_eq!(
            AddrRange::from_prefix(v4("10.0.0.0"), 33),
            Err(SpdError::PrefixTooLong)
        );
        assert_eq!(
            AddrRange::from_prefix(v6("::"), 129),
            Err(SpdError::PrefixTooLong)
        );
        assert_eq!(
            AddrRange::from_prefix(v4("9.9.9.9"), 0).unwrap(),
            AddrRange::any_v4()
        );
        assert_eq!(
            AddrRange::from_prefix(v6("::1"), 0).unwrap(),
            AddrRange::any_v6()
        );
        assert_eq!(
            AddrRange::from_prefix(v4("9.9.9.9"), 32).unwrap(),
            AddrRange::host(v4("9.9.9.9"))
        );
    }

    #[test]
    fn ranges_and_prefix_conversion() {
        let r = AddrRange::new(v4("10.0.0.1"), v4("10.0.0.5")).unwrap();
        assert_eq!(r.as_prefix(), None);
        assert_eq!(r.as_subnet(), None);
        assert_eq!(std::format!("{r}"), "10.0.0.1-10.0.0.5");
        assert!(r.contains(v4("10.0.0.1")) && r.contains(v4("10.0.0.5")));
        assert!(!r.contains(v4("10.0.0.0")) && !r.contains(v4("10.0.0.6")));
        assert!(!r.contains(v6("::a00:1")), "families never mix");
        // Power-of-two size but misaligned: not a prefix.
        let r = AddrRange::new(v4("10.0.0.2"), v4("10.0.0.5")).unwrap();
        assert_eq!(r.as_prefix(), None);
        assert_eq!(
            AddrRange::new(v4("10.0.0.5"), v4("10.0.0.1")),
            Err(SpdError::InvalidRange)
        );
        assert_eq!(
            AddrRange::new(v4("10.0.0.5"), v6("::1")),
            Err(SpdError::FamilyMismatch)
        );
        assert_eq!(AddrRange::any_v4().as_prefix(), Some((v4("0.0.0.0"), 0)));
        assert_eq!(AddrRange::any_v6().as_prefix(), Some((v6("::"), 0)));
        assert_eq!(
            AddrRange::host(v6("2001:db8::1")).as_prefix(),
            Some((v6("2001:db8::1"), 128))
        );
        assert_eq!(AddrRange::any_v6().as_subnet(), Some((v6("::"), v6("::"))));
        assert_eq!(std::format!("{}", AddrRange::any_v4()), "0.0.0.0/0");
        assert_eq!(
            std::format!("{:?}", AddrRange::host(v4("1.2.3.4"))),
            "AddrRange(1.2.3.4/32)"
        );
    }

    #[test]
    fn every_v4_prefix_round_trips() {
        let addr = v4("172.31.255.255");
        for len in 0..=32 {
            let r = AddrRange::from_prefix(addr, len).unwrap();
            let (net, got) = r.as_prefix().unwrap();
            assert_eq!(got, len);
            let (net2, mask) = r.as_subnet().unwrap();
            assert_eq!(net, net2);
            assert_eq!(AddrRange::from_netmask(net, mask).unwrap(), r);
            assert!(r.contains(addr));
            // Wildcard = inverted netmask.
            let IpAddr::V4(m) = mask else { unreachable!() };
            let IpAddr::V4(n) = net else { unreachable!() };
            assert_eq!(
                AddrRange::from_wildcard(n, Ipv4Addr::from_bits(!m.to_bits())).unwrap(),
                r
            );
        }
    }

    #[test]
    fn every_v6_prefix_round_trips() {
        let addr = v6("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff");
        for len in 0..=128 {
            let r = AddrRange::from_prefix(addr, len).unwrap();
            assert_eq!(r.as_prefix().map(|(_, l)| l), Some(len));
            let (net, mask) = r.as_subnet().unwrap();
            assert_eq!(AddrRange::from_netmask(net, mask).unwrap(), r);
            assert!(r.contains(addr));
            assert!(r.is_ipv6() && !r.is_ipv4());
        }
    }

    #[test]
    fn acl_example_against_real_ipv4_packets() {
        let sel = acl_100();
        let out = ipv4_packet(
            "10.0.68.5",
            "10.1.1.9",
            proto::TCP,
            0x4000,
            &[],
            &tcp(40000, 23),
        );
        let flow = Flow::from_ip_packet(&out).unwrap();
        assert_eq!(
            flow,
            flow_v4("10.0.68.5", "10.1.1.9", proto::TCP, 40000, 23)
        );
        assert!(sel.matches(&flow, Direction::Outbound));
        assert!(!sel.matches(&flow, Direction::Inbound));

        // The reply, arriving from the peer's network.
        let back = ipv4_packet("10.1.1.9", "10.0.68.5", proto::TCP, 0, &[], &tcp(23, 40000));
        let flow = Flow::from_ip_packet(&back).unwrap();
        assert!(sel.matches(&flow, Direction::Inbound));
        assert!(!sel.matches(&flow, Direction::Outbound));

        // Outside the ACL: wrong source, wrong destination.
        for (s, d) in [
            ("10.0.69.5", "10.1.1.9"),
            ("10.0.68.5", "10.1.2.9"),
            ("10.1.1.9", "10.0.68.5"),
        ] {
            let p = ipv4_packet(s, d, proto::UDP, 0, &[], &udp(1, 2));
            let flow = Flow::from_ip_packet(&p).unwrap();
            assert!(!sel.matches(&flow, Direction::Outbound), "{s} -> {d}");
        }
        // `permit ip` matches any protocol, including ones without ports.
        let gre = ipv4_packet("10.0.68.1", "10.1.1.1", proto::GRE, 0, &[], &[0; 4]);
        let flow = Flow::from_ip_packet(&gre).unwrap();
        assert!(!flow.ports_known);
        assert!(sel.matches(&flow, Direction::Outbound));
        // Buffers longer than the packet (link padding) are fine.
        let mut padded = ipv4_packet("10.0.68.1", "10.1.1.1", proto::UDP, 0, &[], &udp(500, 500));
        padded.extend_from_slice(&[0xee; 18]);
        assert_eq!(Flow::from_ip_packet(&padded).unwrap().dst_port, 500);
    }

    #[test]
    fn ipv4_options_icmp_and_errors() {
        // 4 bytes of options (NOP NOP NOP EOL): ports come after them.
        let p = ipv4_packet(
            "1.1.1.1",
            "2.2.2.2",
            proto::UDP,
            0,
            &[1, 1, 1, 0],
            &udp(500, 4500),
        );
        let f = Flow::from_ip_packet(&p).unwrap();
        assert_eq!((f.src_port, f.dst_port, f.ports_known), (500, 4500, true));

        // ICMP echo request: type 8 in src_port, code 0 in dst_port.
        let p = ipv4_packet(
            "1.1.1.1",
            "2.2.2.2",
            proto::ICMP,
            0,
            &[],
            &[8, 0, 0, 0, 0, 1, 0, 1],
        );
        let f = Flow::from_ip_packet(&p).unwrap();
        assert_eq!(
            (f.protocol, f.src_port, f.dst_port, f.ports_known),
            (1, 8, 0, true)
        );
        // ICMP type 3 code 4 (fragmentation needed).
        let p = ipv4_packet(
            "1.1.1.1",
            "2.2.2.2",
            proto::ICMP,
            0,
            &[],
            &[3, 4, 0, 0, 0, 0, 5, 0xdc],
        );
        let f = Flow::from_ip_packet(&p).unwrap();
        assert_eq!((f.src_port, f.dst_port), (3, 4));

        let good = ipv4_packet("1.1.1.1", "2.2.2.2", proto::UDP, 0, &[], &udp(1, 2));
        assert_eq!(Flow::from_ip_packet(&[]), Err(WireError::Truncated));
        assert_eq!(Flow::from_ip_packet(&good[..19]), Err(WireError::Truncated));
        assert_eq!(
            Flow::from_ip_packet(&good[..27]),
            Err(WireError::Truncated),
            "total length past buffer"
        );
        let mut bad = good.clone();
        bad[0] = 0x44;
        assert_eq!(
            Flow::from_ip_packet(&bad),
            Err(WireError::BadLength),
            "IHL 4"
        );
        let mut bad = good.clone();
        bad[0] = 0x4f; // IHL 60 > total length 28
        assert_eq!(Flow::from_ip_packet(&bad), Err(WireError::BadLength));
        let mut bad = good.clone();
        bad[0] = 0x35;
        assert_eq!(Flow::from_ip_packet(&bad), Err(WireError::BadVersion));
        let mut bad = good.clone();
        bad[2..4].copy_from_slice(&22u16.to_be_bytes()); // UDP ports cut short
        assert_eq!(Flow::from_ip_packet(&bad), Err(WireError::Truncated));
        // Every prefix of a valid packet is rejected without panicking.
        for n in 0..good.len() {
            assert!(Flow::from_ip_packet(&good[..n]).is_err(), "{n}");
        }
    }

    #[test]
    fn ipv4_fragments() {
        let sel = acl_100()
            .with_protocol(proto::UDP)
            .with_remote_ports(PortRange::single(53));
        let any_ports = acl_100().with_protocol(proto::UDP);
        // First fragment (MF set, offset 0): ports are there.
        let first = ipv4_packet(
            "10.0.68.1",
            "10.1.1.1",
            proto::UDP,
            0x2000,
            &[],
            &udp(1000, 53),
        );
        let f = Flow::from_ip_packet(&first).unwrap();
        assert!(f.ports_known);
        assert!(sel.matches(&f, Direction::Outbound));
        // Non-initial fragment (offset 185 * 8): the bytes there are not a UDP header.
        let later = ipv4_packet(
            "10.0.68.1",
            "10.1.1.1",
            proto::UDP,
            0x2000 | 185,
            &[],
            &udp(1000, 53),
        );
        let f = Flow::from_ip_packet(&later).unwrap();
        assert_eq!((f.ports_known, f.src_port, f.dst_port), (false, 0, 0));
        assert!(
            !sel.matches(&f, Direction::Outbound),
            "port selector cannot match OPAQUE"
        );
        assert!(any_ports.matches(&f, Direction::Outbound));
        assert!(acl_100().matches(&f, Direction::Outbound));
        // A non-initial fragment may be too short to hold any ports: still fine.
        let tiny = ipv4_packet("10.0.68.1", "10.1.1.1", proto::TCP, 3, &[], &[0xaa]);
        assert!(!Flow::from_ip_packet(&tiny).unwrap().ports_known);
    }

    #[test]
    fn ports_and_protocol() {
        let telnet = acl_100()
            .with_protocol(proto::TCP)
            .with_remote_ports(PortRange::single(23));
        let f = flow_v4("10.0.68.5", "10.1.1.9", proto::TCP, 40000, 23);
        assert!(telnet.matches(&f, Direction::Outbound));
        let f2 = Flow { dst_port: 22, ..f };
        assert!(!telnet.matches(&f2, Direction::Outbound));
        let f3 = Flow {
            protocol: proto::UDP,
            ..f
        };
        assert!(!telnet.matches(&f3, Direction::Outbound));
        let f4 = Flow {
            ports_known: false,
            ..f
        };
        assert!(!telnet.matches(&f4, Direction::Outbound));
        // Inbound: the peer's telnet server answers from port 23.
        let reply = flow_v4("10.1.1.9", "10.0.68.5", proto::TCP, 23, 40000);
        assert!(telnet.matches(&reply, Direction::Inbound));
        let high = telnet.with_local_ports(PortRange::new(1024, 65535).unwrap());
        assert!(high.matches(&reply, Direction::Inbound));
        let low = telnet.with_local_ports(PortRange::new(0, 1023).unwrap());
        assert!(!low.matches(&reply, Direction::Inbound));
        // Mirrored selector sees the same packet from the other side.
        assert!(telnet.mirrored().matches(&f, Direction::Inbound));
        assert!(telnet.mirrored().mirrored() == telnet);

        assert_eq!(PortRange::new(5, 4), Err(SpdError::InvalidRange));
        assert_eq!(std::format!("{}", PortRange::ANY), "any");
        assert_eq!(std::format!("{}", PortRange::single(80)), "80");
        assert_eq!(
            std::format!("{:?}", PortRange::new(1024, 65535).unwrap()),
            "PortRange(1024-65535)"
        );
        assert_eq!(PortRange::default(), PortRange::ANY);
        assert_eq!(
            (PortRange::single(7).start(), PortRange::single(7).end()),
            (7, 7)
        );
    }

    #[test]
    fn ipv6_prefixes_and_extension_headers() {
        let sel = Selector::new(
            AddrRange::from_prefix(v6("2001:db8:1::"), 48).unwrap(),
            AddrRange::from_prefix(v6("2001:db8:2::"), 48).unwrap(),
        )
        .unwrap()
        .with_protocol(proto::UDP)
        .with_local_ports(PortRange::single(500));
        let plain = ipv6_packet(
            "2001:db8:1::5",
            "2001:db8:2:77::1",
            proto::UDP,
            &udp(500, 500),
        );
        let f = Flow::from_ip_packet(&plain).unwrap();
        assert_eq!(f.src, v6("2001:db8:1::5"));
        assert_eq!(
            (f.protocol, f.src_port, f.dst_port, f.ports_known),
            (17, 500, 500, true)
        );
        assert!(sel.matches(&f, Direction::Outbound));
        let outside = ipv6_packet("2001:db8:3::5", "2001:db8:2::1", proto::UDP, &udp(500, 500));
        assert!(!sel.matches(
            &Flow::from_ip_packet(&outside).unwrap(),
            Direction::Outbound
        ));

        // Hop-by-Hop (8 bytes) -> Routing (16 bytes) -> DestOpts (8 bytes) -> UDP.
        let mut rest = Vec::new();
        rest.extend_from_slice(&[ROUTING, 0, 1, 4, 0, 0, 0, 0]);
        rest.extend_from_slice(&[DEST_OPTS, 1, 0, 0, 0, 0, 0, 0]);
        rest.extend_from_slice(&[0; 8]);
        rest.extend_from_slice(&[proto::UDP, 0, 1, 4, 0, 0, 0, 0]);
        rest.extend_from_slice(&udp(500, 4500));
        let p = ipv6_packet("2001:db8:1::5", "2001:db8:2::1", HOP_BY_HOP, &rest);
        let f = Flow::from_ip_packet(&p).unwrap();
        assert_eq!(
            (f.protocol, f.src_port, f.dst_port, f.ports_known),
            (17, 500, 4500, true)
        );
        assert!(sel.matches(&f, Direction::Outbound));
        for n in 0..p.len() {
            assert!(Flow::from_ip_packet(&p[..n]).is_err(), "{n}");
        }

        // ICMPv6 echo request.
        let p = ipv6_packet("::1", "::2", proto::ICMPV6, &[128, 0, 0, 0, 0, 0, 0, 0]);
        let f = Flow::from_ip_packet(&p).unwrap();
        assert_eq!((f.protocol, f.src_port, f.dst_port), (58, 128, 0));

        // No next header: no ports, no error.
        let p = ipv6_packet("::1", "::2", proto::NO_NEXT_HEADER, &[]);
        let f = Flow::from_ip_packet(&p).unwrap();
        assert_eq!((f.protocol, f.ports_known), (59, false));
    }

    #[test]
    fn ipv6_fragments_and_header_chain_limits() {
        // Fragment header, offset 0, M=1: the UDP header follows.
        let mut rest = Vec::from([proto::UDP, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef]);
        rest.extend_from_slice(&udp(1234, 53));
        let p = ipv6_packet("::1", "::2", proto::IPV6_FRAG, &rest);
        let f = Flow::from_ip_packet(&p).unwrap();
        assert_eq!(
            (f.protocol, f.src_port, f.dst_port, f.ports_known),
            (17, 1234, 53, true)
        );

        // Offset 100 (x8 bytes): non-initial.
        let mut rest = Vec::from([proto::UDP, 0, 0x03, 0x20, 0xde, 0xad, 0xbe, 0xef]);
        rest.extend_from_slice(&[0x55; 3]);
        let p = ipv6_packet("::1", "::2", proto::IPV6_FRAG, &rest);
        let f = Flow::from_ip_packet(&p).unwrap();
        assert_eq!(
            (f.protocol, f.src_port, f.dst_port, f.ports_known),
            (17, 0, 0, false)
        );
        let any = Selector::new(AddrRange::any_v6(), AddrRange::any_v6()).unwrap();
        assert!(any.matches(&f, Direction::Outbound));
        assert!(
            !any.with_remote_ports(PortRange::single(53))
                .matches(&f, Direction::Outbound)
        );

        // Nine Destination Options headers: over the bound.
        let mut rest = Vec::new();
        for _ in 0..9 {
            rest.extend_from_slice(&[DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
        }
        let p = ipv6_packet("::1", "::2", DEST_OPTS, &rest);
        assert_eq!(Flow::from_ip_packet(&p), Err(WireError::Malformed));
        // Eight then UDP: fine.
        let mut rest = Vec::new();
        for _ in 0..7 {
            rest.extend_from_slice(&[DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
        }
        rest.extend_from_slice(&[proto::UDP, 0, 1, 4, 0, 0, 0, 0]);
        rest.extend_from_slice(&udp(7, 9));
        let p = ipv6_packet("::1", "::2", DEST_OPTS, &rest);
        assert_eq!(Flow::from_ip_packet(&p).unwrap().dst_port, 9);

        // Extension header length running past the payload length.
        let p = ipv6_packet("::1", "::2", DEST_OPTS, &[proto::UDP, 5, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Flow::from_ip_packet(&p), Err(WireError::Truncated));
        // Payload length past the buffer.
        let mut p = ipv6_packet("::1", "::2", proto::UDP, &udp(1, 2));
        p[5] += 1;
        assert_eq!(Flow::from_ip_packet(&p), Err(WireError::Truncated));
    }

    #[test]
    fn parser_never_panics_on_noise() {
        // A small deterministic generator: every byte string shape the parser can meet.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut buf = [0u8; 96];
        for i in 0..20_000 {
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x.to_le_bytes()[0];
            }
            buf[0] = if i % 2 == 0 {
                0x45 | (buf[0] & 0x0f)
            } else {
                0x60
            };
            buf[2] = 0;
            buf[4] = 0;
            let len = usize::from(buf[1]) % buf.len();
            let _ = Flow::from_ip_packet(&buf[..len]);
        }
    }

    /// Every address range over a 3-bit universe, as (start, end) within 10.0.0.0..=10.0.0.7.
    fn small_ranges() -> Vec<AddrRange> {
        let mut v = Vec::new();
        for s in 0..8u32 {
            for e in s..8u32 {
                let base = 0x0a00_0000;
                v.push(
                    AddrRange::new(
                        IpAddr::V4(Ipv4Addr::from_bits(base + s)),
                        IpAddr::V4(Ipv4Addr::from_bits(base + e)),
                    )
                    .unwrap(),
                );
            }
        }
        v
    }

    fn members(r: &AddrRange) -> Vec<u32> {
        (0..8u32)
            .filter(|i| r.contains(IpAddr::V4(Ipv4Addr::from_bits(0x0a00_0000 + i))))
            .collect()
    }

    #[test]
    fn addr_range_relations_exhaustive() {
        let all = small_ranges();
        assert_eq!(all.len(), 36);
        for a in &all {
            let ma = members(a);
            for b in &all {
                let mb = members(b);
                let subset = ma.iter().all(|x| mb.contains(x));
                let overlap = ma.iter().any(|x| mb.contains(x));
                assert_eq!(a.is_subset_of(b), subset, "{a} <= {b}");
                assert_eq!(a.overlaps(b), overlap, "{a} & {b}");
            }
            assert!(!a.is_subset_of(&AddrRange::any_v6()));
            assert!(!a.overlaps(&AddrRange::any_v6()));
            assert!(a.is_subset_of(&AddrRange::any_v4()));
        }
    }

    #[test]
    fn port_range_relations_exhaustive() {
        let mut all = Vec::new();
        for s in 0..6u16 {
            for e in s..6u16 {
                all.push(PortRange::new(s, e).unwrap());
            }
        }
        for a in &all {
            for b in &all {
                let subset = (a.start()..=a.end()).all(|p| b.contains(p));
                let overlap = (a.start()..=a.end()).any(|p| b.contains(p));
                assert_eq!(a.is_subset_of(b), subset);
                assert_eq!(a.overlaps(b), overlap);
            }
            assert!(a.is_subset_of(&PortRange::ANY));
        }
    }

    /// Selector relations checked against brute force over every flow of a tiny universe.
    #[test]
    fn selector_relations_exhaustive() {
        let ranges = [
            AddrRange::new(v4("10.0.0.0"), v4("10.0.0.1")).unwrap(),
            AddrRange::new(v4("10.0.0.1"), v4("10.0.0.2")).unwrap(),
            AddrRange::host(v4("10.0.0.2")),
        ];
        let ports = [
            PortRange::ANY,
            PortRange::new(0, 1).unwrap(),
            PortRange::single(2),
        ];
        let protos = [None, Some(proto::TCP), Some(proto::UDP)];
        let mut sels = Vec::new();
        for l in ranges {
            for r in ranges {
                for p in protos {
                    for lp in ports {
                        for rp in [PortRange::ANY, PortRange::single(1)] {
                            sels.push(Selector {
                                local: l,
                                remote: r,
                                protocol: p,
                                local_ports: lp,
                                remote_ports: rp,
                            });
                        }
                    }
                }
            }
        }
        let hosts = ["10.0.0.0", "10.0.0.1", "10.0.0.2"];
        let mut flows = Vec::new();
        for s in hosts {
            for d in hosts {
                for p in [proto::TCP, proto::UDP, proto::ICMP] {
                    for sp in 0..3 {
                        for dp in 0..3 {
                            flows.push(flow_v4(s, d, p, sp, dp));
                        }
                    }
                }
            }
        }
        for a in &sels {
            let ma: Vec<bool> = flows
                .iter()
                .map(|f| a.matches(f, Direction::Outbound))
                .collect();
            for b in &sels {
                let mb: Vec<bool> = flows
                    .iter()
                    .map(|f| b.matches(f, Direction::Outbound))
                    .collect();
                let overlap = ma.iter().zip(&mb).any(|(x, y)| *x && *y);
                assert_eq!(a.overlaps(b), overlap, "{a:?} & {b:?}");
                // Brute-force subset over the finite universe is weaker than the real
                // relation only where `a` could reach values outside the universe: ANY
                // ports or any protocol. Check the implication that must hold.
                if a.is_subset_of(b) {
                    assert!(ma.iter().zip(&mb).all(|(x, y)| !*x || *y), "{a:?} <= {b:?}");
                }
                let structural = (b.protocol.is_none() || a.protocol == b.protocol)
                    && a.local.is_subset_of(&b.local)
                    && a.remote.is_subset_of(&b.remote)
                    && a.local_ports.is_subset_of(&b.local_ports)
                    && a.remote_ports.is_subset_of(&b.remote_ports);
                assert_eq!(a.is_subset_of(b), structural);
            }
            assert!(a.is_subset_of(a) && a.overlaps(a));
        }
    }

    #[test]
    fn negotiated_selector_within_policy() {
        let policy = acl_100();
        let narrower = Selector::new(
            AddrRange::host(v4("10.0.68.5")),
            AddrRange::from_prefix(v4("10.1.1.0"), 25).unwrap(),
        )
        .unwrap()
        .with_protocol(proto::TCP);
        assert!(narrower.is_subset_of(&policy));
        assert!(!policy.is_subset_of(&narrower));
        let wider = Selector::new(
            AddrRange::from_prefix(v4("10.0.0.0"), 16).unwrap(),
            policy.remote,
        )
        .unwrap();
        assert!(!wider.is_subset_of(&policy));
        assert!(wider.overlaps(&policy));
        assert_eq!(
            Selector::new(AddrRange::any_v4(), AddrRange::any_v6()),
            Err(SpdError::FamilyMismatch)
        );
    }

    fn policy(seq: u32, selector: Selector, action: PolicyAction) -> Policy {
        Policy {
            seq,
            selector,
            action,
        }
    }

    #[test]
    fn spd_orders_by_seq_and_first_match_wins() {
        let mut spd: Spd<4> = Spd::new(PolicyAction::Discard);
        let telnet_clear = acl_100()
            .with_protocol(proto::TCP)
            .with_remote_ports(PortRange::single(23));
        // Inserted out of order: seq decides, not insertion order.
        spd.insert(policy(
            20,
            acl_100(),
            PolicyAction::Protect { sa_group: 10 },
        ))
        .unwrap();
        spd.insert(policy(10, telnet_clear, PolicyAction::Bypass))
            .unwrap();
        let any = Selector::new(AddrRange::any_v4(), AddrRange::any_v4()).unwrap();
        spd.insert(policy(30, any, PolicyAction::Bypass)).unwrap();
        assert_eq!(spd.iter().map(|p| p.seq).collect::<Vec<_>>(), [10, 20, 30]);

        let telnet = flow_v4("10.0.68.5", "10.1.1.9", proto::TCP, 40000, 23);
        let ssh = flow_v4("10.0.68.5", "10.1.1.9", proto::TCP, 40000, 22);
        let web = flow_v4("10.0.68.5", "8.8.8.8", proto::TCP, 40000, 443);
        assert_eq!(spd.lookup_outbound(&telnet).map(|p| p.seq), Some(10));
        assert_eq!(
            spd.decide_outbound(&ssh),
            PolicyAction::Protect { sa_group: 10 }
        );
        assert_eq!(spd.decide_outbound(&web), PolicyAction::Bypass);

        // Inbound cleartext: the reply to ssh matches a Protect policy, so it must be
        // dropped; the telnet reply is bypassed.
        let ssh_reply = flow_v4("10.1.1.9", "10.0.68.5", proto::TCP, 22, 40000);
        let telnet_reply = flow_v4("10.1.1.9", "10.0.68.5", proto::TCP, 23, 40000);
        assert_eq!(spd.lookup_inbound(&ssh_reply).map(|p| p.seq), Some(20));
        assert!(!spd.admits_cleartext(&ssh_reply));
        assert!(spd.admits_cleartext(&telnet_reply));

        assert_eq!(spd.remove(30).map(|p| p.seq), Some(30));
        assert_eq!(spd.remove(30), None);
        assert_eq!(spd.lookup_outbound(&web), None);
        assert_eq!(
            spd.decide_outbound(&web),
            PolicyAction::Discard,
            "RFC 4301 default"
        );
        spd.set_default_action(PolicyAction::Bypass);
        assert_eq!(spd.default_action(), PolicyAction::Bypass);
        assert_eq!(
            spd.decide_outbound(&web),
            PolicyAction::Bypass,
            "IOS default"
        );

        assert_eq!(spd.first_overlap(&any).map(|p| p.seq), Some(10));
        let elsewhere =
            Selector::new(AddrRange::host(v4("192.0.2.1")), AddrRange::any_v4()).unwrap();
        assert_eq!(spd.first_overlap(&elsewhere), None);
        assert_eq!(
            spd.get(20).map(|p| p.action),
            Some(PolicyAction::Protect { sa_group: 10 })
        );
        assert_eq!(spd.get(21), None);
    }

    #[test]
    fn spd_capacity_and_duplicates() {
        let mut spd: Spd<2> = Spd::new(PolicyAction::Discard);
        assert!(spd.is_empty());
        assert_eq!(spd.capacity(), 2);
        spd.insert(policy(5, acl_100(), PolicyAction::Bypass))
            .unwrap();
        assert_eq!(
            spd.insert(policy(5, acl_100(), PolicyAction::Discard)),
            Err(SpdError::DuplicateSeq)
        );
        spd.insert(policy(1, acl_100(), PolicyAction::Discard))
            .unwrap();
        assert_eq!(
            spd.insert(policy(9, acl_100(), PolicyAction::Discard)),
            Err(SpdError::Full)
        );
        assert_eq!(spd.len(), 2);
        assert_eq!(spd.get(5).map(|p| p.action), Some(PolicyAction::Bypass));
        spd.clear();
        assert!(spd.is_empty());
        let mut none: Spd<0> = Spd::new(PolicyAction::Bypass);
        assert_eq!(
            none.insert(policy(1, acl_100(), PolicyAction::Discard)),
            Err(SpdError::Full)
        );
        assert_eq!(none.remove(1), None);
    }

    #[test]
    fn spd_lookup_matches_model() {
        // Random policies over a tiny universe; lookups must equal a linear first-match
        // over a seq-sorted model.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let hosts = ["10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3"];
        for _ in 0..200 {
            let mut spd: Spd<8> = Spd::new(PolicyAction::Discard);
            let mut model: Vec<Policy> = Vec::new();
            for _ in 0..8 {
                let r = |n: u64| {
                    let a = u32::try_from(n % 4).unwrap();
                    let b = a + u32::try_from((n >> 8) % (4 - u64::from(a))).unwrap();
                    AddrRange::new(
                        IpAddr::V4(Ipv4Addr::from_bits(0x0a00_0000 + a)),
                        IpAddr::V4(Ipv4Addr::from_bits(0x0a00_0000 + b)),
                    )
                    .unwrap()
                };
                let sel = Selector {
                    local: r(next()),
                    remote: r(next()),
                    protocol: [None, Some(proto::TCP)][usize::try_from(next() % 2).unwrap()],
                    local_ports: PortRange::ANY,
                    remote_ports: [PortRange::ANY, PortRange::single(1)]
                        [usize::try_from(next() % 2).unwrap()],
                };
                let seq = u32::try_from(next() % 16).unwrap();
                let p = policy(seq, sel, PolicyAction::Protect { sa_group: seq });
                let res = spd.insert(p);
                if model.iter().any(|m| m.seq == seq) {
                    assert_eq!(res, Err(SpdError::DuplicateSeq));
                } else {
                    res.unwrap();
                    model.push(p);
                }
            }
            model.sort_by_key(|p| p.seq);
            for s in hosts {
                for d in hosts {
                    for (pr, dp) in [(proto::TCP, 1), (proto::TCP, 2), (proto::UDP, 1)] {
                        let f = flow_v4(s, d, pr, 0, dp);
                        for dir in [Direction::Outbound, Direction::Inbound] {
                            let want = model.iter().find(|p| p.selector.matches(&f, dir));
                            let got = match dir {
                                Direction::Outbound => spd.lookup_outbound(&f),
                                Direction::Inbound => spd.lookup_inbound(&f),
                            };
                            assert_eq!(got, want);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn error_display() {
        use std::string::ToString;
        assert_eq!(SpdError::Full.to_string(), "security policy database full");
        assert_eq!(
            SpdError::NonContiguousMask.to_string(),
            "mask is not contiguous"
        );
    }
}
