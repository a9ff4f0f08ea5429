//! The full packet paths: path MTU discovery (RFC 1191, RFC 8201, RFC 4301 §8), the DF
//! bit, fragmentation before or after encryption, reassembly before decryption, and TCP
//! MSS clamping.
//!
//! # Outbound: [`Dataplane::send`]
//!
//! SPD, then the SA, then:
//!
//! 1. MSS clamping of TCP SYNs ([`MssClamp`]).
//! 2. If the inner packet fits the SA's tunnel MTU (the largest inner packet whose ESP
//!    packet fits the SA's path MTU, see [`crate::mtu`]), it is sealed and sent.
//! 3. Otherwise the *effective DF* decides: the SA's [`DfBit`] policy, where `Copy` takes
//!    DF from an IPv4 inner header and treats an IPv6 inner packet as DF (routers never
//!    fragment IPv6; its source must hear about the MTU). With DF, the packet is dropped
//!    and an ICMP "fragmentation needed" (IPv4) or "packet too big" (IPv6) carrying the
//!    tunnel MTU is written for the inner source (RFC 4301 §8.2.1). An IPv6 inner packet
//!    is never told an MTU below 1280 (RFC 8200 §5): the tunnel fragments instead.
//! 4. Without DF, [`Fragmentation::BeforeEncryption`] (tunnel mode, IPv4 inner packet
//!    with DF clear) cuts the inner packet so that each fragment is its own ESP packet;
//!    otherwise ([`Fragmentation::AfterEncryption`], the RFC 4303 default, and always in
//!    transport mode) the ESP packet is sealed whole and its outer IPv4 header fragmented.
//!    Fragmenting an IPv6 outer header (a Fragment extension header) is not implemented:
//!    such packets are refused with [`DataplaneError::Fragment`].
//!
//! Packets go to the caller's `transmit` callback one by one from the caller's buffers,
//! so several ESP packets cost no allocation.
//!
//! # Inbound: [`Dataplane::receive`]
//!
//! IPv4 fragments of ESP or UDP (NAT-T ESP, IKE) are reassembled first, into the caller's
//! buffer (see [`crate::reassembly`]). ICMP "too big" messages about our ESP packets
//! lower the path MTU of the SA they name; everything else follows
//! [`Dataplane::process_inbound`]. Decapsulated TCP SYNs are MSS-clamped on the way out of
//! the tunnel.
//!
//! # Path MTU
//!
//! Each outbound SA has a path MTU: the interface MTU ([`Dataplane::set_interface_mtu`],
//! default 1500) unless an ICMP message lowered it. ICMP is checked as RFC 5927 advises
//! before it is believed: the checksum verifies; the quoted packet is ESP (or UDP to the
//! SA's NAT-T port) from our address to the SA's peer with the SA's SPI; its sequence
//! number was sent recently (within the last 2^16 packets); the MTU is at least 576
//! (IPv4) or 1280 (IPv6); and only decreases are taken. A learned path MTU ages back to
//! the interface MTU after [`Dataplane::set_pmtu_aging`] (default 10 minutes, RFC 1191
//! §6.3), through a deadline heap like every other timer.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hal_traits::{CryptoProvider, SecureRng};
use heapless::binary_heap::{BinaryHeap, Min};

use super::{Class, Dataplane, DataplaneError, Inbound, NAT_T_PORT, bump, classify};
use crate::esp::{DfBit, EspError, Mode};
use crate::fragment::{FragmentError, Ipv4Fragmenter};
use crate::mss::{self, MssOutcome};
use crate::reassembly::{Reassembly, ReassemblyCounters};
use crate::sadb::SaHandle;
use crate::spd::{Flow, PolicyAction};
use crate::time::{Duration, Instant};
use crate::wire::icmp::{self, IcmpPacket, IcmpTooBigRepr, QuotedIp};
use crate::wire::ipv4::{self, Ipv4Packet, Ipv4Repr};
use crate::wire::ipv6::{Ipv6Packet, Ipv6Repr};
use crate::wire::{WireError, proto};

/// The default interface MTU.
pub const DEFAULT_MTU: u16 = 1500;
/// The default time after which a learned path MTU is forgotten (RFC 1191 §6.3).
pub const DEFAULT_PMTU_AGING: Duration = Duration::from_secs(600);
/// How far back a quoted sequence number may lie (RFC 5927 §4.1 style validation).
const SEQ_WINDOW: u32 = 1 << 16;

/// Where packets too big for the path MTU are fragmented (`crypto ipsec fragmentation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Fragmentation {
    /// Seal first, then fragment the outer packet; the peer reassembles before
    /// decryption (RFC 4303 §3.3.5, the default here).
    #[default]
    AfterEncryption,
    /// Tunnel mode, IPv4 inner packets with DF clear: fragment the inner packet first and
    /// seal each fragment (look-ahead fragmentation); the inner destination reassembles.
    BeforeEncryption,
}

/// TCP MSS clamping of SYNs entering and leaving the tunnel (`ip tcp adjust-mss`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum MssClamp {
    /// Leave SYNs alone (the default).
    #[default]
    Off,
    /// Lower the MSS option to this value.
    Fixed(u16),
    /// Lower it to what fits the SA's tunnel MTU: tunnel MTU - 40 (IPv4) or - 60 (IPv6).
    FromMtu,
}

/// Why an ICMP "too big" about one of our SAs was not believed. Each has a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum IcmpReject {
    /// The ICMP checksum does not verify.
    BadChecksum,
    /// The ICMP message or the quoted header is malformed.
    Malformed,
    /// Too little of the offending packet was quoted to find the SPI.
    QuoteTooShort,
    /// The quoted packet is not one this SA sends (source, peer or ports differ).
    NotOurs,
    /// The quoted sequence number was not sent recently.
    NotSent,
    /// The reported MTU is below 576 (IPv4) or 1280 (IPv6), or 0.
    BelowFloor {
        /// The MTU reported.
        mtu: u32,
    },
}

impl fmt::Display for IcmpReject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadChecksum => f.write_str("bad checksum"),
            Self::Malformed => f.write_str("malformed"),
            Self::QuoteTooShort => f.write_str("quote too short"),
            Self::NotOurs => f.write_str("quoted packet not ours"),
            Self::NotSent => f.write_str("quoted sequence number not recently sent"),
            Self::BelowFloor { mtu } => write!(f, "MTU {mtu} below the minimum"),
        }
    }
}

/// Path MTU, fragmentation and MSS counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PathCounters {
    /// ICMP "too big" messages received (any).
    pub icmp_too_big: u64,
    /// ... that lowered an SA's path MTU.
    pub pmtu_updates: u64,
    /// ... that reported an MTU not below the current one (ignored, RFC 1191).
    pub pmtu_not_lower: u64,
    /// ... that reported an MTU below the floor (ignored).
    pub pmtu_below_floor: u64,
    /// ... with a bad checksum.
    pub icmp_bad_checksum: u64,
    /// ... malformed, or quoting too little.
    pub icmp_malformed: u64,
    /// ... quoting a packet this SA did not send (addresses, ports, sequence number).
    pub icmp_not_ours: u64,
    /// ... quoting ESP with an SPI we have no outbound SA for (handed on as cleartext).
    pub icmp_unmatched: u64,
    /// Learned path MTUs that aged out.
    pub pmtu_aged: u64,
    /// Inner packets dropped for DF with an ICMP written for their source
    /// (`frag. needed and DF set unreachable sent`).
    pub too_big_icmp: u64,
    /// Inner packets dropped for DF without an ICMP (no source address to send it from).
    pub too_big_silent: u64,
    /// Packets fragmented after encryption.
    pub frag_after: u64,
    /// Packets fragmented before encryption.
    pub frag_before: u64,
    /// Fragments sent (both kinds).
    pub fragments_out: u64,
    /// Packets that could not be fragmented (IPv6 outer header, buffers).
    pub frag_failed: u64,
    /// TCP SYNs whose MSS was lowered.
    pub mss_clamped: u64,
}

/// A path MTU reported for an SA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PathMtuChange {
    /// The outbound SA.
    pub sa: SaHandle,
    /// Its SPI.
    pub spi: u32,
    /// The path MTU before (`adjusting path mtu from 1500 ...`).
    pub old: u16,
    /// The path MTU now (`... to 1400`); equal to `old` if the report was not lower.
    pub new: u16,
}

/// The caller's buffers for [`Dataplane::send`]. `work` must hold the largest ESP packet
/// (before fragmentation) or ICMP message; `frag` the largest fragment (the MTU).
#[derive(Debug)]
pub struct SendBuffers<'a> {
    /// Sealing and ICMP buffer.
    pub work: &'a mut [u8],
    /// Fragment buffer.
    pub frag: &'a mut [u8],
}

/// What [`Dataplane::send`] did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Sent {
    /// Protected: `packets` ESP packets (or fragments) went to `transmit`.
    Protected {
        /// The outbound SA.
        sa: SaHandle,
        /// How many packets were transmitted.
        packets: usize,
        /// Whether and how the packet was fragmented.
        fragmented: Option<Fragmentation>,
    },
    /// A bypass policy matched: send the packet as it is.
    Bypass,
    /// Too big for the path with DF: dropped. If `icmp_len` is given, `work[..icmp_len]`
    /// holds an ICMP error (with its IP header) to send to the inner source.
    TooBig {
        /// The outbound SA.
        sa: SaHandle,
        /// The MTU reported to the source: the tunnel MTU.
        mtu: u16,
        /// Length of the ICMP packet in the work buffer.
        icmp_len: Option<usize>,
    },
}

/// What [`Dataplane::receive`] made of a packet.
#[derive(Debug)]
pub enum Received<'b> {
    /// ESP opened: the inner (or rebuilt transport-mode) packet, MSS-clamped if enabled.
    Decapsulated {
        /// The packet, inside the caller's packet or reassembly buffer.
        packet: &'b mut [u8],
        /// The inbound SA.
        sa: SaHandle,
    },
    /// IKE (UDP 500, or 4500 with the non-ESP marker), possibly reassembled.
    Ike {
        /// The IP packet.
        packet: &'b mut [u8],
    },
    /// A NAT keepalive: counted and dropped.
    NatKeepalive,
    /// Cleartext admitted by policy, possibly reassembled.
    Cleartext {
        /// The IP packet.
        packet: &'b mut [u8],
    },
    /// A fragment was stored; its datagram is not complete.
    FragmentHeld,
    /// An ICMP "too big" about one of our SAs was processed.
    PathMtu(PathMtuChange),
}

#[derive(Clone, Copy, Debug)]
struct Learned {
    sa: SaHandle,
    mtu: u16,
    expires: Instant,
}

/// Path state of every outbound SA (indexed by SADB slot) and the path policy knobs.
pub(super) struct PathState<const SAS: usize> {
    mtu: u16,
    aging: Duration,
    fragmentation: Fragmentation,
    mss: MssClamp,
    icmp_v4: Option<Ipv4Addr>,
    icmp_v6: Option<Ipv6Addr>,
    learned: [Option<Learned>; SAS],
    heap: BinaryHeap<(Instant, SaHandle), Min, SAS>,
    counters: PathCounters,
}

impl<const SAS: usize> PathState<SAS> {
    pub(super) const fn new() -> Self {
        Self {
            mtu: DEFAULT_MTU,
            aging: DEFAULT_PMTU_AGING,
            fragmentation: Fragmentation::AfterEncryption,
            mss: MssClamp::Off,
            icmp_v4: None,
            icmp_v6: None,
            learned: [None; SAS],
            heap: BinaryHeap::new(),
            counters: PathCounters {
                icmp_too_big: 0,
                pmtu_updates: 0,
                pmtu_not_lower: 0,
                pmtu_below_floor: 0,
                icmp_bad_checksum: 0,
                icmp_malformed: 0,
                icmp_not_ours: 0,
                icmp_unmatched: 0,
                pmtu_aged: 0,
                too_big_icmp: 0,
                too_big_silent: 0,
                frag_after: 0,
                frag_before: 0,
                fragments_out: 0,
                frag_failed: 0,
                mss_clamped: 0,
            },
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|(t, _)| *t)
    }

    fn learned(&self, h: SaHandle) -> Option<&Learned> {
        self.learned
            .get(usize::try_from(h.index()).ok()?)?
            .as_ref()
            .filter(|l| l.sa == h)
    }

    fn reject(&mut self, r: IcmpReject) -> DataplaneError {
        let c = &mut self.counters;
        bump(match r {
            IcmpReject::BadChecksum => &mut c.icmp_bad_checksum,
            IcmpReject::Malformed | IcmpReject::QuoteTooShort => &mut c.icmp_malformed,
            IcmpReject::NotOurs | IcmpReject::NotSent => &mut c.icmp_not_ours,
            IcmpReject::BelowFloor { .. } => &mut c.pmtu_below_floor,
        });
        DataplaneError::Icmp(r)
    }
}

/// What `send` needs to know about the inner packet.
struct InnerInfo {
    len: usize,
    v6: bool,
    df: bool,
    src: IpAddr,
}

fn inner_info(packet: &[u8]) -> Result<InnerInfo, WireError> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let ip = Ipv4Packet::new_checked(packet)?;
            Ok(InnerInfo {
                len: usize::from(ip.total_len()),
                v6: false,
                df: ip.dont_frag(),
                src: IpAddr::V4(ip.src_addr()),
            })
        }
        Some(6) => {
            let ip = Ipv6Packet::new_checked(packet)?;
            Ok(InnerInfo {
                len: ip.total_len(),
                v6: true,
                df: true,
                src: IpAddr::V6(ip.src_addr()),
            })
        }
        _ => Err(WireError::BadVersion),
    }
}

/// Whether an ICMP error may be sent about `packet`: never about an ICMP error, nor about
/// a non-first IPv4 fragment (RFC 1812 §4.3.2.7, RFC 4443 §2.4 (e)); IPv6 fragments, whose
/// offset is not parsed here, are never answered either.
fn may_answer(packet: &[u8], v6: bool) -> bool {
    if v6 {
        return Ipv6Packet::new_checked(packet).is_ok_and(|ip| match ip.upper_layer() {
            // Types below 128 are errors.
            Ok((proto::ICMPV6, off)) => packet.get(off).is_some_and(|t| *t >= 128),
            Ok((proto::IPV6_FRAG, _)) | Err(_) => false,
            Ok(_) => true,
        });
    }
    Ipv4Packet::new_checked(packet).is_ok_and(|ip| {
        ip.frag_offset_units() == 0
            && (ip.protocol() != proto::ICMP
                // Echo reply, echo request, timestamp and friends are not errors.
                || ip
                    .payload()
                    .first()
                    .is_some_and(|t| matches!(t, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18)))
    })
}

/// Whether `packet` is an IPv4 fragment that [`Dataplane::receive`] reassembles.
fn wants_reassembly(packet: &[u8]) -> bool {
    Ipv4Packet::new_checked(packet)
        .is_ok_and(|ip| ip.is_fragment() && matches!(ip.protocol(), proto::ESP | proto::UDP))
}

/// Whether `packet` is an ICMP "too big" (not fragmented).
fn is_too_big(packet: &[u8]) -> bool {
    match packet.first().map(|b| b >> 4) {
        Some(4) => Ipv4Packet::new_checked(packet).is_ok_and(|ip| {
            !ip.is_fragment()
                && ip.protocol() == proto::ICMP
                && ip.payload().get(..2)
                    == Some(&[icmp::V4_DEST_UNREACHABLE, icmp::V4_CODE_FRAG_NEEDED])
        }),
        Some(6) => Ipv6Packet::new_checked(packet).is_ok_and(|ip| {
            ip.upper_layer().is_ok_and(|(nh, off)| {
                nh == proto::ICMPV6 && packet.get(off) == Some(&icmp::V6_PACKET_TOO_BIG)
            })
        }),
        _ => false,
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
    /// Sets the MTU of the interface ESP leaves by: every SA's path MTU until ICMP
    /// lowers it. Default 1500.
    pub fn set_interface_mtu(&mut self, mtu: u16) {
        self.path.mtu = mtu;
    }

    /// The interface MTU.
    #[must_use]
    pub const fn interface_mtu(&self) -> u16 {
        self.path.mtu
    }

    /// Sets how long a learned path MTU is kept (default 10 minutes).
    pub fn set_pmtu_aging(&mut self, aging: Duration) {
        self.path.aging = aging;
    }

    /// Chooses fragmentation before or after encryption (default after).
    pub fn set_fragmentation(&mut self, f: Fragmentation) {
        self.path.fragmentation = f;
    }

    /// Sets TCP MSS clamping (default off).
    pub fn set_mss_clamp(&mut self, m: MssClamp) {
        self.path.mss = m;
    }

    /// Sets the source address of the ICMP errors sent to inner hosts (the gateway's
    /// inside address). Without one, the SA's local address is used when its family
    /// matches; otherwise the packet is dropped silently.
    pub fn set_icmp_source(&mut self, addr: IpAddr) {
        match addr {
            IpAddr::V4(a) => self.path.icmp_v4 = Some(a),
            IpAddr::V6(a) => self.path.icmp_v6 = Some(a),
        }
    }

    /// Sets the reassembly timeout (default 30 s) for datagrams started from now on.
    pub fn set_reassembly_timeout(&mut self, timeout: Duration) {
        self.reassembler.set_timeout(timeout);
    }

    /// Path MTU, fragmentation and MSS counters.
    #[must_use]
    pub const fn path_counters(&self) -> &PathCounters {
        &self.path.counters
    }

    /// Reassembly counters.
    #[must_use]
    pub const fn reassembly_counters(&self) -> &ReassemblyCounters {
        self.reassembler.counters()
    }

    /// The path MTU of outbound SA `h`: the interface MTU, or less if ICMP said so.
    #[must_use]
    pub fn path_mtu(&self, h: SaHandle) -> u16 {
        self.path
            .learned(h)
            .map_or(self.path.mtu, |l| l.mtu.min(self.path.mtu))
    }

    /// The tunnel MTU of outbound SA `h`: the largest inner packet it carries without
    /// fragmentation at its current path MTU (exact, see [`crate::mtu`]). This is the
    /// MTU a port gives its TUN interface, and the one reported in ICMP errors.
    #[must_use]
    pub fn tunnel_mtu(&self, h: SaHandle) -> Option<usize> {
        let mtu = usize::from(self.path_mtu(h));
        self.outbound.get(h).map(|sa| sa.max_inner_len(mtu))
    }

    pub(super) fn fire_pmtu_aging(&mut self, now: Instant) {
        while let Some(&(t, h)) = self.path.heap.peek() {
            if t > now {
                break;
            }
            let _ = self.path.heap.pop();
            let Some(slot) = usize::try_from(h.index())
                .ok()
                .and_then(|i| self.path.learned.get_mut(i))
            else {
                continue;
            };
            // A later decrease re-armed the SA further out; only its own deadline counts.
            if slot.is_some_and(|l| l.sa == h && l.expires <= now) {
                *slot = None;
                bump(&mut self.path.counters.pmtu_aged);
            }
        }
    }

    fn learn_mtu(&mut self, now: Instant, h: SaHandle, mtu: u16) {
        let expires = now + self.path.aging;
        if let Some(slot) = usize::try_from(h.index())
            .ok()
            .and_then(|i| self.path.learned.get_mut(i))
        {
            *slot = Some(Learned {
                sa: h,
                mtu,
                expires,
            });
        }
        if self.path.heap.push((expires, h)).is_err() {
            // Full of stale entries: rebuild from the learned values, one per slot.
            self.path.heap.clear();
            for l in self.path.learned.iter().flatten() {
                let _ = self.path.heap.push((l.expires, l.sa));
            }
        }
    }

    /// Handles an ICMPv4 "fragmentation needed" or ICMPv6 "packet too big" received from
    /// the network. If it names one of our outbound SAs (see the [module docs](self) for
    /// the checks), that SA's path MTU is lowered and the change returned. `Ok(None)`: not
    /// a "too big", or not about our ESP (the caller treats it as any other packet).
    ///
    /// # Errors
    /// [`DataplaneError::Icmp`] when it is about our ESP but fails validation (counted);
    /// [`DataplaneError::Malformed`] for an unparsable IP header.
    pub fn handle_icmp(
        &mut self,
        now: Instant,
        packet: &[u8],
    ) -> Result<Option<PathMtuChange>, DataplaneError> {
        let (v6, msg) = match packet.first().map(|b| b >> 4) {
            Some(4) => {
                let ip = Ipv4Packet::new_checked(packet)?;
                if ip.is_fragment() || ip.protocol() != proto::ICMP {
                    return Ok(None);
                }
                (None, ip.into_payload())
            }
            Some(6) => {
                let ip = Ipv6Packet::new_checked(packet)?;
                let (nh, off) = ip.upper_layer()?;
                if nh != proto::ICMPV6 {
                    return Ok(None);
                }
                let msg = packet
                    .get(off..ip.total_len())
                    .ok_or(WireError::Truncated)?;
                (Some((ip.src_addr(), ip.dst_addr())), msg)
            }
            _ => return Err(WireError::BadVersion.into()),
        };
        let Ok(icmp) = IcmpPacket::new_checked(msg) else {
            return Ok(None);
        };
        let (mtu, floor) = match v6 {
            None if icmp.is_v4_frag_needed() => {
                (u32::from(icmp.next_hop_mtu()), icmp::IPV4_MIN_MTU)
            }
            Some(_) if icmp.is_v6_packet_too_big() => (icmp.ptb_mtu(), icmp::IPV6_MIN_MTU),
            _ => return Ok(None),
        };
        bump(&mut self.path.counters.icmp_too_big);
        let checksum_ok = match v6 {
            None => icmp.verify_checksum_v4(),
            Some((s, d)) => icmp.verify_checksum_v6(s, d),
        };
        if !checksum_ok {
            return Err(self.path.reject(IcmpReject::BadChecksum));
        }
        let Ok(q) = QuotedIp::parse(icmp.quoted()) else {
            return Err(self.path.reject(IcmpReject::Malformed));
        };
        if q.src.is_ipv6() != v6.is_some() {
            return Err(self.path.reject(IcmpReject::Malformed));
        }
        let be32 = |b: &[u8], at: usize| {
            b.get(at..at + 4)
                .and_then(|s| s.first_chunk::<4>())
                .map(|s| u32::from_be_bytes(*s))
        };
        let be16 = |b: &[u8], at: usize| {
            b.get(at..at + 2)
                .and_then(|s| s.first_chunk::<2>())
                .map(|s| u16::from_be_bytes(*s))
        };
        // (SPI, sequence number, UDP ports) of the quoted packet.
        let (spi, seq, ports) = match q.protocol {
            proto::ESP => match (be32(q.payload, 0), be32(q.payload, 4)) {
                (Some(spi), Some(seq)) => (spi, seq, None),
                _ => return Err(self.path.reject(IcmpReject::QuoteTooShort)),
            },
            proto::UDP => {
                let (Some(sp), Some(dp)) = (be16(q.payload, 0), be16(q.payload, 2)) else {
                    return Ok(None);
                };
                match (be32(q.payload, 8), be32(q.payload, 12)) {
                    // The non-ESP marker: IKE, whose PMTU is IKE's business.
                    (Some(0), _) => return Ok(None),
                    (Some(spi), Some(seq)) => (spi, seq, Some((sp, dp))),
                    _ if dp == NAT_T_PORT => {
                        return Err(self.path.reject(IcmpReject::QuoteTooShort));
                    }
                    _ => return Ok(None),
                }
            }
            _ => return Ok(None),
        };
        let Some(h) = self.outbound.lookup(spi, q.dst) else {
            bump(&mut self.path.counters.icmp_unmatched);
            return Ok(None);
        };
        let Some(sa) = self.outbound.get(h) else {
            return Ok(None);
        };
        let cfg = sa.config();
        let addr_ok = cfg.local.is_none_or(|l| l == q.src) && cfg.remote.is_none_or(|r| r == q.dst);
        let ports_ok = match (cfg.udp_encap, ports) {
            (None, None) => true,
            (Some(e), Some((sp, dp))) => e.local_port == sp && e.remote_port == dp,
            _ => false,
        };
        if !addr_ok || !ports_ok {
            return Err(self.path.reject(IcmpReject::NotOurs));
        }
        // The low 32 bits of the next sequence number, minus the quoted one: how many
        // packets ago it was sent. 0 means "not sent yet".
        // It must also not reach back before the first packet (sequence numbers start at
        // 1, so `next_seq - 1` packets exist): found by fuzzing, a fresh SA otherwise
        // trusted quotes of numbers it never sent, such as 0.
        let next_lo = u32::try_from(sa.next_seq() & u64::from(u32::MAX)).unwrap_or(0);
        let ago = next_lo.wrapping_sub(seq);
        let sent = sa.next_seq().saturating_sub(1);
        if ago == 0 || ago > SEQ_WINDOW || u64::from(ago) > sent {
            return Err(self.path.reject(IcmpReject::NotSent));
        }
        if mtu < u32::from(floor) {
            return Err(self.path.reject(IcmpReject::BelowFloor { mtu }));
        }
        let mtu = u16::try_from(mtu).unwrap_or(u16::MAX);
        let old = self.path_mtu(h);
        if mtu >= old {
            bump(&mut self.path.counters.pmtu_not_lower);
            return Ok(Some(PathMtuChange {
                sa: h,
                spi,
                old,
                new: old,
            }));
        }
        self.learn_mtu(now, h, mtu);
        bump(&mut self.path.counters.pmtu_updates);
        Ok(Some(PathMtuChange {
            sa: h,
            spi,
            old,
            new: mtu,
        }))
    }

    /// Sends `packet` (an IP packet from the protected side) through policy, the SA, the
    /// path MTU and fragmentation, as described in the [module docs](self). Each packet
    /// for the peer is passed to `transmit` as soon as it is built. `packet` is modified
    /// only by MSS clamping.
    ///
    /// # Errors
    /// [`DataplaneError::Discarded`], [`DataplaneError::NoSa`],
    /// [`DataplaneError::Malformed`], [`DataplaneError::Esp`] (including
    /// [`EspError::BufferTooSmall`] for a short `work` buffer),
    /// [`DataplaneError::Fragment`]. Packets transmitted before an error stay sent.
    pub fn send<R: SecureRng, F: FnMut(&[u8])>(
        &mut self,
        now: Instant,
        packet: &mut [u8],
        rng: &mut R,
        bufs: SendBuffers<'_>,
        mut transmit: F,
    ) -> Result<Sent, DataplaneError> {
        let (flow, info) =
            match Flow::from_ip_packet(packet).and_then(|f| Ok((f, inner_info(packet)?))) {
                Ok(x) => x,
                Err(e) => {
                    bump(&mut self.counters.malformed);
                    return Err(e.into());
                }
            };
        let decision = self.decide_outbound(&flow, rng);
        let sa_group = match decision.action {
            PolicyAction::Bypass => {
                bump(&mut self.counters.bypassed);
                return Ok(Sent::Bypass);
            }
            PolicyAction::Discard => {
                bump(&mut self.counters.policy_discard);
                return Err(DataplaneError::Discarded);
            }
            PolicyAction::Protect { sa_group } => sa_group,
        };
        let Some((h, sa)) = decision
            .sa
            .and_then(|h| self.outbound.get(h).map(|sa| (h, sa)))
        else {
            bump(&mut self.counters.no_sa);
            return Err(DataplaneError::NoSa { sa_group });
        };
        let mtu = usize::from(self.path_mtu(h));
        let max_inner = sa.max_inner_len(mtu);
        let (mode, df_bit, local) = (sa.config().mode, sa.config().df_bit, sa.config().local);

        let clamp = match self.path.mss {
            MssClamp::Off => None,
            MssClamp::Fixed(v) => Some(v),
            MssClamp::FromMtu => Some(mss::mss_for_mtu(max_inner, info.v6)),
        };
        if let Some(v) = clamp {
            if let Ok(MssOutcome::Clamped { .. }) = mss::clamp_mss(packet, v) {
                bump(&mut self.path.counters.mss_clamped);
            }
        }
        let packet = packet.get(..info.len).ok_or(WireError::Truncated)?;
        let SendBuffers { work, frag } = bufs;

        if info.len <= max_inner {
            let n = self.seal(now, h, packet, rng, work)?;
            transmit(work.get(..n).ok_or(WireError::Truncated)?);
            return Ok(Sent::Protected {
                sa: h,
                packets: 1,
                fragmented: None,
            });
        }

        let mut df = match (mode, df_bit) {
            (Mode::Transport, _) | (Mode::Tunnel, DfBit::Copy) => info.df,
            (Mode::Tunnel, DfBit::Clear) => false,
            (Mode::Tunnel, DfBit::Set) => true,
        };
        if info.v6 && max_inner < usize::from(icmp::IPV6_MIN_MTU) && df_bit != DfBit::Set {
            // IPv6 promises 1280 bytes end to end: below that the tunnel fragments.
            df = false;
        }
        if df {
            let report = if info.v6 {
                max_inner.max(usize::from(icmp::IPV6_MIN_MTU))
            } else {
                max_inner
            };
            let report = u16::try_from(report).unwrap_or(u16::MAX);
            let icmp_len = self.write_too_big(packet, &info, report, local, work);
            bump(if icmp_len.is_some() {
                &mut self.path.counters.too_big_icmp
            } else {
                &mut self.path.counters.too_big_silent
            });
            return Ok(Sent::TooBig {
                sa: h,
                mtu: report,
                icmp_len,
            });
        }

        if self.path.fragmentation == Fragmentation::BeforeEncryption
            && mode == Mode::Tunnel
            && !info.v6
        {
            if let Ok(mut pieces) = Ipv4Fragmenter::new(packet, max_inner) {
                let mut packets = 0;
                while let Some(piece) = pieces.next_fragment(frag) {
                    let n = piece.map_err(|e| self.frag_failed(e))?;
                    let inner = frag.get(..n).ok_or(WireError::Truncated)?;
                    let m = self.seal(now, h, inner, rng, work)?;
                    transmit(work.get(..m).ok_or(WireError::Truncated)?);
                    packets += 1;
                }
                bump(&mut self.path.counters.frag_before);
                self.path.counters.fragments_out = self
                    .path
                    .counters
                    .fragments_out
                    .saturating_add(u64::try_from(packets).unwrap_or(u64::MAX));
                return Ok(Sent::Protected {
                    sa: h,
                    packets,
                    fragmented: Some(Fragmentation::BeforeEncryption),
                });
            }
            // DF set on the inner packet under `df-bit clear`, or a tiny MTU: after.
        }

        let n = self.seal(now, h, packet, rng, work)?;
        let outer = work.get(..n).ok_or(WireError::Truncated)?;
        if outer.first().map(|b| b >> 4) != Some(4) {
            return Err(self.frag_failed(FragmentError::Malformed(WireError::BadVersion)));
        }
        let mut pieces = Ipv4Fragmenter::new(outer, mtu).map_err(|e| self.frag_failed(e))?;
        let mut packets = 0;
        while let Some(piece) = pieces.next_fragment(frag) {
            let m = piece.map_err(|e| self.frag_failed(e))?;
            transmit(frag.get(..m).ok_or(WireError::Truncated)?);
            packets += 1;
        }
        bump(&mut self.path.counters.frag_after);
        self.path.counters.fragments_out = self
            .path
            .counters
            .fragments_out
            .saturating_add(u64::try_from(packets).unwrap_or(u64::MAX));
        Ok(Sent::Protected {
            sa: h,
            packets,
            fragmented: (packets > 1).then_some(Fragmentation::AfterEncryption),
        })
    }

    fn frag_failed(&mut self, e: FragmentError) -> DataplaneError {
        bump(&mut self.path.counters.frag_failed);
        DataplaneError::Fragment(e)
    }

    fn seal<R: SecureRng>(
        &mut self,
        now: Instant,
        h: SaHandle,
        inner: &[u8],
        rng: &mut R,
        out: &mut [u8],
    ) -> Result<usize, DataplaneError> {
        let sa = self
            .outbound
            .get_mut(h)
            .ok_or(DataplaneError::Esp(EspError::Expired))?;
        let r = sa.encapsulate(now, inner, None, rng, out);
        if sa.has_pending_event() {
            self.collect(h, false);
        }
        Ok(r?)
    }

    /// Writes an ICMP "too big" for the source of `packet` into `out`; `None` without a
    /// source address of the right family or room.
    fn write_too_big(
        &self,
        packet: &[u8],
        info: &InnerInfo,
        mtu: u16,
        local: Option<IpAddr>,
        out: &mut [u8],
    ) -> Option<usize> {
        if !may_answer(packet, info.v6) {
            return None;
        }
        let repr = IcmpTooBigRepr {
            mtu,
            original: packet,
        };
        match info.src {
            IpAddr::V4(dst) => {
                let src = self.path.icmp_v4.or(match local {
                    Some(IpAddr::V4(a)) => Some(a),
                    _ => None,
                })?;
                let body = out.get_mut(ipv4::HEADER_LEN..)?;
                let n = repr.emit_v4(body).ok()?;
                Ipv4Repr {
                    src,
                    dst,
                    protocol: proto::ICMP,
                    payload_len: n,
                    ttl: 64,
                    tos: 0,
                    ident: 0,
                    dont_frag: false,
                    more_frags: false,
                    frag_offset: 0,
                }
                .emit(out)
                .ok()?;
                Some(ipv4::HEADER_LEN + n)
            }
            IpAddr::V6(dst) => {
                let src = self.path.icmp_v6.or(match local {
                    Some(IpAddr::V6(a)) => Some(a),
                    _ => None,
                })?;
                let body = out.get_mut(crate::wire::ipv6::HEADER_LEN..)?;
                let n = repr.emit_v6(body, src, dst).ok()?;
                Ipv6Repr {
                    src,
                    dst,
                    next_header: proto::ICMPV6,
                    payload_len: n,
                    hop_limit: 64,
                    traffic_class: 0,
                    flow_label: 0,
                }
                .emit(out)
                .ok()?;
                Some(crate::wire::ipv6::HEADER_LEN + n)
            }
        }
    }

    /// Handles a packet received from the network: reassembly of IPv4 fragments of ESP or
    /// UDP into `reassembly_out`, ICMP "too big" about our SAs, then
    /// [`Dataplane::process_inbound`]'s demux and ESP, and MSS clamping of decapsulated
    /// SYNs. `reassembly_out` must hold the largest datagram to reassemble (header
    /// included); results lie in `packet` or in `reassembly_out`.
    ///
    /// Pass only packets addressed to this gateway: fragments are reassembled here, and
    /// a router must not reassemble transit traffic.
    ///
    /// # Errors
    /// [`DataplaneError::Reassembly`], [`DataplaneError::Icmp`], and those of
    /// [`Dataplane::process_inbound`].
    pub fn receive<'b>(
        &mut self,
        now: Instant,
        packet: &'b mut [u8],
        reassembly_out: &'b mut [u8],
    ) -> Result<Received<'b>, DataplaneError> {
        let data: &'b mut [u8] = if wants_reassembly(packet) {
            match self.reassembler.push(now, packet, reassembly_out) {
                Ok(Reassembly::Incomplete) => return Ok(Received::FragmentHeld),
                Ok(Reassembly::Complete(n)) => {
                    reassembly_out.get_mut(..n).ok_or(WireError::Truncated)?
                }
                Err(e) => return Err(DataplaneError::Reassembly(e)),
            }
        } else {
            packet
        };
        if is_too_big(data) {
            if let Some(change) = self.handle_icmp(now, data)? {
                return Ok(Received::PathMtu(change));
            }
        }
        let class = match classify(data) {
            Ok(c) => c,
            Err(e) => {
                bump(&mut self.counters.malformed);
                return Err(e.into());
            }
        };
        match class {
            Class::Ike => Ok(Received::Ike { packet: data }),
            Class::NatKeepalive => {
                bump(&mut self.counters.nat_keepalives);
                Ok(Received::NatKeepalive)
            }
            Class::Esp { .. } => match self.process_inbound(now, data)? {
                Inbound::Decapsulated { packet, sa } => {
                    self.clamp_leaving(sa, packet);
                    Ok(Received::Decapsulated { packet, sa })
                }
                Inbound::NatKeepalive => Ok(Received::NatKeepalive),
                Inbound::Ike | Inbound::Cleartext => Err(WireError::Malformed.into()),
            },
            Class::Other => {
                let flow = Flow::from_ip_packet(data)?;
                if self.spd.admits_cleartext(&flow) {
                    bump(&mut self.counters.cleartext_admitted);
                    Ok(Received::Cleartext { packet: data })
                } else {
                    bump(&mut self.counters.cleartext_rejected);
                    Err(DataplaneError::CleartextRejected)
                }
            }
        }
    }

    /// MSS clamping of a SYN leaving the tunnel. `FromMtu` uses the inbound SA's own
    /// geometry at the interface MTU: the peer's path towards us is not known here.
    fn clamp_leaving(&mut self, h: SaHandle, packet: &mut [u8]) {
        let v6 = packet.first().map(|b| b >> 4) == Some(6);
        let v = match self.path.mss {
            MssClamp::Off => return,
            MssClamp::Fixed(v) => v,
            MssClamp::FromMtu => match self.inbound.get(h) {
                Some(sa) => mss::mss_for_mtu(sa.max_inner_len(usize::from(self.path.mtu)), v6),
                None => return,
            },
        };
        if let Ok(MssOutcome::Clamped { .. }) = mss::clamp_mss(packet, v) {
            bump(&mut self.path.counters.mss_clamped);
        }
    }
}
