//! The PAT side of IPsec: pass-through for inside hosts that do not use NAT-T.
//!
//! A router doing port address translation (many inside hosts behind one global address)
//! cannot translate IKE or ESP the ordinary way: IKE peers expect UDP port 500 on both
//! sides, and ESP has no ports at all. IOS solves it with two services, reproduced here as a
//! sans-IO translation table the router's forwarding path consults:
//!
//! * `ip nat service list 1 IKE preserve-port`: IKE keeps its source port (500), and
//!   sessions of several inside hosts with the same outside peer are told apart by the
//!   *initiator cookie* (CKY-I, the first 8 octets of the ISAKMP header). An outbound IKE
//!   packet (UDP to port 500) from inside host H to peer P creates or refreshes the entry
//!   `CKY-I → H`; an inbound IKE packet (UDP from port 500) from P goes to the host whose
//!   entry has its CKY-I.
//! * `ip nat service list 1 ESP spi-match`, in the restricted (serialised) mode: an
//!   outbound ESP packet with a new SPI (SPI_out, chosen by P) from H creates a *pending*
//!   translation toward P. The first inbound ESP packet from P with an unknown SPI (SPI_in,
//!   chosen by H) binds to the pending translation toward P. Until that happens no other
//!   inside host may open a new ESP session to the same P: its packets are dropped and
//!   counted as *blocked*, because the router could not tell whose reply a new SPI is.
//!   (The same host may open several sessions meanwhile: any binding then reaches the right
//!   host.) Inbound ESP with a known SPI_in goes to its host.
//!
//! Packets are rewritten in place: the source address on the way out becomes the global
//! address, the destination on the way in becomes the inside host's. The IPv4 header
//! checksum and, for IKE, the UDP checksum are updated incrementally (RFC 1624). A
//! non-first IPv4 fragment carries no cookie or SPI: outbound it follows the host's
//! translations toward that peer, inbound it is forwarded only if exactly one inside host
//! has translations toward the sender.
//!
//! Idle translations expire; every entry has a deadline and [`Pat::poll_timeout`] returns
//! the earliest. Defaults (see [`PatConfig::new`]): IKE 300 s, like IOS's
//! `ip nat translation udp-timeout`; bound ESP 300 s for the same reason (an SA pair with
//! DPD or NAT-less keepalives sees traffic well within it); a *pending* ESP translation
//! 60 s after it was created, however chatty its host, so that a peer that never answers
//! cannot block the other hosts for longer than that.
//!
//! Traffic the helper does not handle (IPv6, other protocols, UDP not to or from port 500,
//! packets not addressed to the global address) gets [`Verdict::Pass`]: the router's
//! ordinary translation takes it. NAT-T traffic (UDP 4500) is ordinary UDP to a PAT and
//! passes.

use core::fmt;
use core::net::{Ipv4Addr, SocketAddrV4};

use heapless::Vec;
use ipsec_core::wire::checksum;
use ipsec_core::wire::ipv4::Ipv4Packet;
use ipsec_core::wire::proto;
use ipsec_core::{Duration, Instant};

use crate::consts::{COOKIE_LEN, ESP_HEADER_LEN, IKE_PORT, ISAKMP_HEADER_LEN};

/// Translation policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
// No `defmt::Format`: defmt has no impl for `core::net` addresses.
pub struct PatConfig {
    /// The inside global address: the router's outside address all hosts share.
    pub global: Ipv4Addr,
    /// Idle time after which an IKE translation expires.
    pub ike_timeout: Duration,
    /// Idle time after which a bound ESP translation expires.
    pub esp_timeout: Duration,
    /// Time after its creation at which a pending (unanswered) ESP translation expires.
    pub esp_pending_timeout: Duration,
}

impl PatConfig {
    /// The default IKE idle timeout, 300 s (IOS `udp-timeout`).
    pub const DEFAULT_IKE_TIMEOUT: Duration = Duration::from_secs(300);
    /// The default bound-ESP idle timeout, 300 s.
    pub const DEFAULT_ESP_TIMEOUT: Duration = Duration::from_secs(300);
    /// The default pending-ESP lifetime, 60 s.
    pub const DEFAULT_ESP_PENDING_TIMEOUT: Duration = Duration::from_secs(60);

    /// The defaults for global address `global`.
    #[must_use]
    pub const fn new(global: Ipv4Addr) -> Self {
        Self {
            global,
            ike_timeout: Self::DEFAULT_IKE_TIMEOUT,
            esp_timeout: Self::DEFAULT_ESP_TIMEOUT,
            esp_pending_timeout: Self::DEFAULT_ESP_PENDING_TIMEOUT,
        }
    }
}

/// What to do with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Verdict {
    /// Translated in place: send it on.
    Forward,
    /// Not IPsec pass-through traffic: the packet is untouched; ordinary NAT applies.
    Pass,
    /// Drop it.
    Drop(DropReason),
}

/// Why a packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DropReason {
    /// A malformed or truncated IPv4, UDP, IKE or ESP header, or a bad header checksum.
    Malformed,
    /// A new ESP session toward a peer while another host's session to it is pending.
    Blocked,
    /// Inbound traffic that matches no translation.
    NoTranslation,
    /// The table is full.
    TableFull,
    /// The cookie or SPI is already in use by another inside host toward that peer.
    Conflict,
    /// A non-first fragment from a peer several inside hosts talk to.
    AmbiguousFragment,
}

/// Counters in the manner of `show ip nat statistics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PatCounters {
    /// Outbound IKE packets translated.
    pub ike_out: u64,
    /// Inbound IKE packets translated.
    pub ike_in: u64,
    /// Outbound ESP packets translated.
    pub esp_out: u64,
    /// Inbound ESP packets translated.
    pub esp_in: u64,
    /// Non-first fragments translated (either direction).
    pub fragments: u64,
    /// Translations created.
    pub created: u64,
    /// Translations expired.
    pub expired: u64,
    /// Pending ESP translations bound to an inbound SPI.
    pub bound: u64,
    /// Packets dropped as [`DropReason::Blocked`].
    pub blocked: u64,
    /// Packets dropped as [`DropReason::NoTranslation`].
    pub no_translation: u64,
    /// Packets dropped as [`DropReason::TableFull`].
    pub table_full: u64,
    /// Packets dropped as [`DropReason::Malformed`].
    pub malformed: u64,
    /// Packets dropped as [`DropReason::Conflict`].
    pub conflicts: u64,
    /// Packets dropped as [`DropReason::AmbiguousFragment`].
    pub ambiguous: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ike {
        cky_i: [u8; COOKIE_LEN],
        /// The inside host's port, preserved as the global port.
        port: u16,
        /// The peer's port (500).
        outside_port: u16,
    },
    Esp {
        spi_out: u32,
        spi_in: Option<u32>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    kind: Kind,
    inside: Ipv4Addr,
    outside: Ipv4Addr,
    created: Instant,
    last_used: Instant,
}

impl Entry {
    fn is_ike(&self) -> bool {
        matches!(self.kind, Kind::Ike { .. })
    }

    fn is_pending(&self) -> bool {
        matches!(self.kind, Kind::Esp { spi_in: None, .. })
    }

    fn deadline(&self, c: &PatConfig) -> Instant {
        match self.kind {
            Kind::Ike { .. } => self.last_used + c.ike_timeout,
            Kind::Esp {
                spi_in: Some(_), ..
            } => self.last_used + c.esp_timeout,
            Kind::Esp { spi_in: None, .. } => {
                let idle = self.last_used + c.esp_timeout;
                let pending = self.created + c.esp_pending_timeout;
                idle.min(pending)
            }
        }
    }
}

/// The protocol column of a translation row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RowProtocol {
    /// IKE (`udp`).
    Udp,
    /// ESP (`esp`).
    Esp,
}

/// One line of `show ip nat translations` (plus the IPsec details and timers of
/// `verbose`). ESP rows have port 0, as IOS shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TranslationRow {
    /// `udp` or `esp`.
    pub protocol: RowProtocol,
    /// Inside global: the router's global address (and the preserved port).
    pub inside_global: SocketAddrV4,
    /// Inside local: the inside host.
    pub inside_local: SocketAddrV4,
    /// Outside local: the peer (no outside translation, so equal to outside global).
    pub outside_local: SocketAddrV4,
    /// Outside global: the peer.
    pub outside_global: SocketAddrV4,
    /// The initiator cookie of an IKE row.
    pub cookie: Option<[u8; COOKIE_LEN]>,
    /// The inbound SPI of an ESP row, once bound.
    pub spi_in: Option<u32>,
    /// The outbound SPI of an ESP row.
    pub spi_out: Option<u32>,
    /// When the translation was created.
    pub created: Instant,
    /// When it last carried a packet.
    pub last_used: Instant,
    /// When it expires unless used.
    pub expires: Instant,
}

impl TranslationRow {
    /// The column header [`Display`](fmt::Display) lines up with.
    pub const HEADER: &'static str = "Pro Inside global         Inside local          Outside local         Outside global        SPI in   SPI out";

    /// Time left before expiry at `now`.
    #[must_use]
    pub fn left(&self, now: Instant) -> Duration {
        self.expires.saturating_since(now)
    }
}

struct Spi(Option<u32>);

impl fmt::Display for Spi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(s) => write!(f, "{s:08X}"),
            None => f.write_str("-       "),
        }
    }
}

/// Pads a `Display` value to a column width without allocating.
struct Col<T>(T, usize);

impl<T: fmt::Display> fmt::Display for Col<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Counter(usize);
        impl fmt::Write for Counter {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                self.0 += s.len();
                Ok(())
            }
        }
        let mut c = Counter(0);
        fmt::write(&mut c, format_args!("{}", self.0))?;
        write!(f, "{}", self.0)?;
        for _ in c.0..self.1 {
            f.write_str(" ")?;
        }
        Ok(())
    }
}

impl fmt::Display for TranslationRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pro = match self.protocol {
            RowProtocol::Udp => "udp",
            RowProtocol::Esp => "esp",
        };
        write!(
            f,
            "{} {}{}{}{}",
            pro,
            Col(self.inside_global, 22),
            Col(self.inside_local, 22),
            Col(self.outside_local, 22),
            Col(self.outside_global, 22),
        )?;
        match self.protocol {
            RowProtocol::Esp => write!(f, "{} {}", Spi(self.spi_in), Spi(self.spi_out)),
            RowProtocol::Udp => f.write_str("-        -"),
        }
    }
}

/// The translation table, holding at most `N` translations.
#[derive(Clone, Debug)]
pub struct Pat<const N: usize> {
    config: PatConfig,
    entries: Vec<Entry, N>,
    counters: PatCounters,
}

/// What the helper needs from an IPv4 header.
struct Header {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    start: usize,
    end: usize,
    later_fragment: bool,
}

enum Parsed {
    NotIpv4,
    Bad,
    Ok(Header),
}

fn parse(packet: &[u8]) -> Parsed {
    if packet.first().map(|b| b >> 4) != Some(4) {
        return Parsed::NotIpv4;
    }
    let Ok(ip) = Ipv4Packet::new_checked(packet) else {
        return Parsed::Bad;
    };
    if !ip.header_checksum_ok() {
        return Parsed::Bad;
    }
    Parsed::Ok(Header {
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        protocol: ip.protocol(),
        start: ip.header_len(),
        end: usize::from(ip.total_len()),
        later_fragment: ip.frag_offset_units() != 0,
    })
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let w = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([*w.first()?, *w.get(1)?]))
}

/// Which address to rewrite.
#[derive(Clone, Copy)]
enum Side {
    Src,
    Dst,
}

/// Rewrites one address of a checked IPv4 packet, with incremental checksum updates of the
/// header and, for the first fragment of a UDP datagram, of the UDP checksum.
fn rewrite(packet: &mut [u8], h: &Header, side: Side, new: Ipv4Addr) {
    let old = match side {
        Side::Src => h.src,
        Side::Dst => h.dst,
    };
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut *packet);
        match side {
            Side::Src => ip.set_src_addr(new),
            Side::Dst => ip.set_dst_addr(new),
        }
        let ck = checksum::update_u32(ip.checksum(), u32::from(old), u32::from(new));
        ip.set_checksum(ck);
    }
    if h.protocol == proto::UDP && !h.later_fragment {
        let at = h.start.saturating_add(6);
        if let Some(ck) = be16(packet, at).filter(|ck| *ck != 0) {
            let ck = checksum::update_u32(ck, u32::from(old), u32::from(new));
            // RFC 768: zero means "no checksum", so a computed zero is sent as all ones.
            let ck = if ck == 0 { 0xffff } else { ck };
            if let Some(dst) = packet.get_mut(at..at + 2) {
                dst.copy_from_slice(&ck.to_be_bytes());
            }
        }
    }
}

fn bump(c: &mut u64) {
    *c = c.saturating_add(1);
}

impl<const N: usize> Pat<N> {
    /// An empty table.
    #[must_use]
    pub const fn new(config: PatConfig) -> Self {
        Self {
            config,
            entries: Vec::new(),
            counters: PatCounters {
                ike_out: 0,
                ike_in: 0,
                esp_out: 0,
                esp_in: 0,
                fragments: 0,
                created: 0,
                expired: 0,
                bound: 0,
                blocked: 0,
                no_translation: 0,
                table_full: 0,
                malformed: 0,
                conflicts: 0,
                ambiguous: 0,
            },
        }
    }

    /// The configuration.
    #[must_use]
    pub const fn config(&self) -> &PatConfig {
        &self.config
    }

    /// The counters.
    #[must_use]
    pub const fn counters(&self) -> &PatCounters {
        &self.counters
    }

    /// The number of live translations.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no translation.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The earliest expiry deadline, if any translation exists.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries.iter().map(|e| e.deadline(&self.config)).min()
    }

    /// Expires every translation whose deadline is at or before `now`. Early or repeated
    /// calls are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        let config = self.config;
        let before = self.entries.len();
        self.entries.retain(|e| e.deadline(&config) > now);
        let gone = before.saturating_sub(self.entries.len());
        self.counters.expired = self
            .counters
            .expired
            .saturating_add(u64::try_from(gone).unwrap_or(u64::MAX));
    }

    /// The translations, as `show ip nat translations` rows, oldest first.
    pub fn translations(&self) -> impl Iterator<Item = TranslationRow> + '_ {
        let global = self.config.global;
        self.entries.iter().map(move |e| {
            let (protocol, port, oport, cookie, spi_in, spi_out) = match e.kind {
                Kind::Ike {
                    cky_i,
                    port,
                    outside_port,
                } => (
                    RowProtocol::Udp,
                    port,
                    outside_port,
                    Some(cky_i),
                    None,
                    None,
                ),
                Kind::Esp { spi_out, spi_in } => {
                    (RowProtocol::Esp, 0, 0, None, spi_in, Some(spi_out))
                }
            };
            TranslationRow {
                protocol,
                inside_global: SocketAddrV4::new(global, port),
                inside_local: SocketAddrV4::new(e.inside, port),
                outside_local: SocketAddrV4::new(e.outside, oport),
                outside_global: SocketAddrV4::new(e.outside, oport),
                cookie,
                spi_in,
                spi_out,
                created: e.created,
                last_used: e.last_used,
                expires: e.deadline(&self.config),
            }
        })
    }

    fn drop(&mut self, reason: DropReason) -> Verdict {
        let c = &mut self.counters;
        bump(match reason {
            DropReason::Malformed => &mut c.malformed,
            DropReason::Blocked => &mut c.blocked,
            DropReason::NoTranslation => &mut c.no_translation,
            DropReason::TableFull => &mut c.table_full,
            DropReason::Conflict => &mut c.conflicts,
            DropReason::AmbiguousFragment => &mut c.ambiguous,
        });
        Verdict::Drop(reason)
    }

    fn insert(&mut self, entry: Entry) -> Result<(), DropReason> {
        if self.entries.push(entry).is_err() {
            return Err(DropReason::TableFull);
        }
        bump(&mut self.counters.created);
        Ok(())
    }

    /// Translates a packet arriving from the inside (a whole IPv4 packet, in place).
    pub fn outbound(&mut self, now: Instant, packet: &mut [u8]) -> Verdict {
        self.handle_timeout(now);
        let h = match parse(packet) {
            Parsed::NotIpv4 => return Verdict::Pass,
            Parsed::Bad => return self.drop(DropReason::Malformed),
            Parsed::Ok(h) => h,
        };
        if h.protocol != proto::UDP && h.protocol != proto::ESP {
            return Verdict::Pass;
        }
        if h.later_fragment {
            return self.outbound_fragment(packet, &h);
        }
        let Some(l4) = packet.get(h.start..h.end) else {
            return self.drop(DropReason::Malformed);
        };
        let result = if h.protocol == proto::UDP {
            match (be16(l4, 0), be16(l4, 2)) {
                (Some(sport), Some(IKE_PORT)) => {
                    let Some(cookie) = l4.get(8..).and_then(Self::cookie) else {
                        return self.drop(DropReason::Malformed);
                    };
                    self.ike_out(now, &h, sport, cookie)
                }
                (Some(_), Some(_)) => return Verdict::Pass,
                _ => Err(DropReason::Malformed),
            }
        } else {
            match Self::spi(l4) {
                Some(spi) => self.esp_out(now, &h, spi),
                None => Err(DropReason::Malformed),
            }
        };
        match result {
            Ok(()) => {
                rewrite(packet, &h, Side::Src, self.config.global);
                Verdict::Forward
            }
            Err(r) => self.drop(r),
        }
    }

    /// Translates a packet arriving from the outside (a whole IPv4 packet, in place).
    pub fn inbound(&mut self, now: Instant, packet: &mut [u8]) -> Verdict {
        self.handle_timeout(now);
        let h = match parse(packet) {
            Parsed::NotIpv4 => return Verdict::Pass,
            Parsed::Bad => return self.drop(DropReason::Malformed),
            Parsed::Ok(h) => h,
        };
        if h.dst != self.config.global || (h.protocol != proto::UDP && h.protocol != proto::ESP) {
            return Verdict::Pass;
        }
        if h.later_fragment {
            return self.inbound_fragment(packet, &h);
        }
        let Some(l4) = packet.get(h.start..h.end) else {
            return self.drop(DropReason::Malformed);
        };
        let result = if h.protocol == proto::UDP {
            match (be16(l4, 0), be16(l4, 2)) {
                (Some(IKE_PORT), Some(dport)) => {
                    let Some(cookie) = l4.get(8..).and_then(Self::cookie) else {
                        return self.drop(DropReason::Malformed);
                    };
                    self.ike_in(now, &h, dport, cookie)
                }
                (Some(_), Some(_)) => return Verdict::Pass,
                _ => Err(DropReason::Malformed),
            }
        } else {
            match Self::spi(l4) {
                Some(spi) => self.esp_in(now, &h, spi),
                None => Err(DropReason::Malformed),
            }
        };
        match result {
            Ok(inside) => {
                rewrite(packet, &h, Side::Dst, inside);
                Verdict::Forward
            }
            Err(r) => self.drop(r),
        }
    }

    /// The CKY-I of an ISAKMP message (the UDP payload), if it has a whole header.
    fn cookie(ike: &[u8]) -> Option<[u8; COOKIE_LEN]> {
        if ike.len() < ISAKMP_HEADER_LEN {
            return None;
        }
        ike.first_chunk::<COOKIE_LEN>().copied()
    }

    fn spi(esp: &[u8]) -> Option<u32> {
        if esp.len() < ESP_HEADER_LEN {
            return None;
        }
        esp.first_chunk::<4>().map(|s| u32::from_be_bytes(*s))
    }

    fn ike_out(
        &mut self,
        now: Instant,
        h: &Header,
        sport: u16,
        cky_i: [u8; COOKIE_LEN],
    ) -> Result<(), DropReason> {
        let found = self.entries.iter_mut().find(|e| {
            e.outside == h.dst && matches!(e.kind, Kind::Ike { cky_i: c, .. } if c == cky_i)
        });
        match found {
            Some(e) if e.inside != h.src => return Err(DropReason::Conflict),
            Some(e) => {
                e.last_used = now;
                if let Kind::Ike { port, .. } = &mut e.kind {
                    *port = sport;
                }
            }
            None => self.insert(Entry {
                kind: Kind::Ike {
                    cky_i,
                    port: sport,
                    outside_port: IKE_PORT,
                },
                inside: h.src,
                outside: h.dst,
                created: now,
                last_used: now,
            })?,
        }
        bump(&mut self.counters.ike_out);
        Ok(())
    }

    fn ike_in(
        &mut self,
        now: Instant,
        h: &Header,
        dport: u16,
        cky_i: [u8; COOKIE_LEN],
    ) -> Result<Ipv4Addr, DropReason> {
        let e = self
            .entries
            .iter_mut()
            .find(|e| {
                e.outside == h.src
                    && matches!(e.kind, Kind::Ike { cky_i: c, port, .. } if c == cky_i && port == dport)
            })
            .ok_or(DropReason::NoTranslation)?;
        e.last_used = now;
        bump(&mut self.counters.ike_in);
        Ok(e.inside)
    }

    fn esp_out(&mut self, now: Instant, h: &Header, spi: u32) -> Result<(), DropReason> {
        let found = self.entries.iter_mut().find(|e| {
            e.outside == h.dst && matches!(e.kind, Kind::Esp { spi_out, .. } if spi_out == spi)
        });
        match found {
            Some(e) if e.inside != h.src => return Err(DropReason::Conflict),
            Some(e) => e.last_used = now,
            None => {
                let blocked = self
                    .entries
                    .iter()
                    .any(|e| e.outside == h.dst && e.is_pending() && e.inside != h.src);
                if blocked {
                    return Err(DropReason::Blocked);
                }
                self.insert(Entry {
                    kind: Kind::Esp {
                        spi_out: spi,
                        spi_in: None,
                    },
                    inside: h.src,
                    outside: h.dst,
                    created: now,
                    last_used: now,
                })?;
            }
        }
        bump(&mut self.counters.esp_out);
        Ok(())
    }

    fn esp_in(&mut self, now: Instant, h: &Header, spi: u32) -> Result<Ipv4Addr, DropReason> {
        let known = self.entries.iter().position(|e| {
            e.outside == h.src && matches!(e.kind, Kind::Esp { spi_in: Some(s), .. } if s == spi)
        });
        let index = match known {
            Some(i) => i,
            None => {
                // The oldest pending translation toward this peer takes the new SPI.
                let (i, _) = self
                    .entries
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.outside == h.src && e.is_pending())
                    .min_by_key(|(_, e)| e.created)
                    .ok_or(DropReason::NoTranslation)?;
                i
            }
        };
        let e = self
            .entries
            .get_mut(index)
            .ok_or(DropReason::NoTranslation)?;
        if let Kind::Esp { spi_in, .. } = &mut e.kind
            && spi_in.is_none()
        {
            *spi_in = Some(spi);
            bump(&mut self.counters.bound);
        }
        e.last_used = now;
        let inside = e.inside;
        bump(&mut self.counters.esp_in);
        Ok(inside)
    }

    fn outbound_fragment(&mut self, packet: &mut [u8], h: &Header) -> Verdict {
        let want_ike = h.protocol == proto::UDP;
        let known = self
            .entries
            .iter()
            .any(|e| e.inside == h.src && e.outside == h.dst && e.is_ike() == want_ike);
        if !known {
            return self.drop(DropReason::NoTranslation);
        }
        rewrite(packet, h, Side::Src, self.config.global);
        bump(&mut self.counters.fragments);
        Verdict::Forward
    }

    fn inbound_fragment(&mut self, packet: &mut [u8], h: &Header) -> Verdict {
        let want_ike = h.protocol == proto::UDP;
        let mut hosts = self
            .entries
            .iter()
            .filter(|e| e.outside == h.src && e.is_ike() == want_ike)
            .map(|e| e.inside);
        let Some(first) = hosts.next() else {
            return self.drop(DropReason::NoTranslation);
        };
        if hosts.any(|h| h != first) {
            return self.drop(DropReason::AmbiguousFragment);
        }
        rewrite(packet, h, Side::Dst, first);
        bump(&mut self.counters.fragments);
        Verdict::Forward
    }
}
