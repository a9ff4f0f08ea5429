//! Whole-packet ESP processing: tunnel and transport mode over IPv4 and IPv6, raw
//! (IP protocol 50) or UDP-encapsulated (RFC 3948).
//!
//! Outbound, the packet is copied once into the caller's output buffer at the offset the
//! outer headers need, sealed in place, and the headers are written in front of it.
//! Inbound, everything happens in the caller's buffer: the ESP part is opened in place and
//! the result is a sub-slice of the same buffer. In transport mode the original IP header
//! is moved up to sit in front of the decrypted payload, with its protocol, length and
//! checksum fixed, so the result is the packet as the sender had it.

use core::net::IpAddr;
use core::ops::Range;

use hal_traits::{CryptoProvider, SecureRng};

use super::transform::ESP_HEADER_LEN;
use super::{DfBit, Encryption, EspConfig, EspError, EspSa, Mode};
use crate::spd::Flow;
use crate::wire::ipv4::{self, Ipv4Packet, Ipv4Repr};
use crate::wire::ipv6::{self, Ipv6Packet, Ipv6Repr};
use crate::wire::udp::{self, UdpPacket, UdpRepr};
use crate::wire::{WireError, proto};

/// Per-packet choices for [`EspSa::encapsulate_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SealOptions<'a> {
    /// A fixed IV (tests, reproducible tools). `None`: GCM uses the sequence number, NULL
    /// needs none, CBC must be given one (use [`EspSa::encapsulate`] for a random IV).
    pub iv: Option<&'a [u8]>,
    /// The IPv4 identification of a tunnel-mode outer header. `None`: the low 16 bits of
    /// the sequence number, which are unique among recent packets of the SA.
    pub ipv4_ident: Option<u16>,
}

/// A decapsulated packet: a sub-slice of the buffer given to [`EspSa::decapsulate`].
#[derive(Debug)]
pub struct Decapsulated<'b> {
    /// The inner IP packet (tunnel mode) or the reconstructed original packet (transport).
    pub packet: &'b mut [u8],
    /// The packet's full sequence number.
    pub seq: u64,
    /// The ESP next header (4 or 41 in tunnel mode, the upper layer in transport mode).
    pub next_header: u8,
}

/// Where the ESP part of a received packet lies, and what precedes it.
struct Located {
    /// The ESP header to the end of the ICV.
    esp: Range<usize>,
    /// Transport mode: the IP header (and IPv6 extension headers) to keep.
    prefix_len: usize,
    /// Offset of the byte naming the protocol after the kept prefix.
    nh_pos: usize,
    is_v6: bool,
}

/// Reads the low 32 bits of the sequence number of a received packet without opening it
/// (for tools that must set up ESN state for a single packet).
///
/// # Errors
/// As the parsing steps of [`EspSa::decapsulate`].
pub fn peek_seq(packet: &[u8], config: &EspConfig) -> Result<u32, EspError> {
    let loc = locate(packet, config)?;
    let hdr = packet
        .get(loc.esp)
        .and_then(|e| e.get(4..8))
        .ok_or(EspError::InvalidLength)?;
    let mut b = [0u8; 4];
    b.copy_from_slice(hdr);
    Ok(u32::from_be_bytes(b))
}

fn locate(packet: &[u8], config: &EspConfig) -> Result<Located, EspError> {
    let version = packet.first().map(|b| b >> 4).ok_or(WireError::Truncated)?;
    let (ip_proto, l4, end, prefix_len, nh_pos, is_v6) = match version {
        4 => {
            let ip = Ipv4Packet::new_checked(packet)?;
            ip.verify_checksum()?;
            if ip.is_fragment() {
                // Reassembly happens before ESP (RFC 4303 §3.4.1); fragments never get here.
                return Err(WireError::Malformed.into());
            }
            let h = ip.header_len();
            (ip.protocol(), h, usize::from(ip.total_len()), h, 9, false)
        }
        6 => {
            let ip = Ipv6Packet::new_checked(packet)?;
            let (p, off, nh_pos) = ipv6_upper_layer(packet)?;
            let end = ipv6::HEADER_LEN + usize::from(ip.payload_len());
            (p, off, end, off, nh_pos, true)
        }
        _ => return Err(WireError::BadVersion.into()),
    };
    let esp = match (ip_proto, config.udp_encap) {
        (proto::ESP, None) => l4..end,
        (proto::UDP, Some(encap)) => {
            let seg = packet.get(l4..end).ok_or(WireError::Truncated)?;
            let udp = UdpPacket::new_checked(seg)?;
            if udp.dst_port() != encap.local_port {
                return Err(EspError::NotEsp);
            }
            let payload = udp.payload();
            // RFC 3948 §2.2: a zero SPI is the non-ESP marker (IKE), a single 0xFF byte a
            // NAT keepalive. Neither is ESP.
            if payload.len() < ESP_HEADER_LEN || payload.get(..4) == Some(&[0, 0, 0, 0]) {
                return Err(EspError::NotEsp);
            }
            let start = l4 + udp::HEADER_LEN;
            start..start + payload.len()
        }
        _ => return Err(EspError::NotEsp),
    };
    Ok(Located {
        esp,
        prefix_len,
        nh_pos,
        is_v6,
    })
}

/// Walks IPv6 extension headers that may precede ESP (Hop-by-Hop, Routing, Destination
/// Options). Returns the upper protocol, its offset, and the offset of the byte that names
/// it (the fixed header's next header field, or the last extension header's).
fn ipv6_upper_layer(buf: &[u8]) -> Result<(u8, usize, usize), WireError> {
    let ip = Ipv6Packet::new_checked(buf)?;
    // Extension headers must end within the payload length, not merely within the buffer
    // (which may carry link-layer padding).
    let end = ip.total_len();
    let mut nh_pos = 6;
    let mut off = ipv6::HEADER_LEN;
    let mut nh = ip.next_header();
    for _ in 0..ipv6::MAX_EXT_HEADERS {
        match nh {
            ipv6::ext::HOP_BY_HOP | ipv6::ext::ROUTING | ipv6::ext::DEST_OPTS => {
                let next = *buf.get(off).ok_or(WireError::Truncated)?;
                let len = usize::from(*buf.get(off + 1).ok_or(WireError::Truncated)?);
                nh_pos = off;
                off = off.checked_add((len + 1) * 8).ok_or(WireError::BadLength)?;
                if off > end {
                    return Err(WireError::Truncated);
                }
                nh = next;
            }
            _ => return Ok((nh, off, nh_pos)),
        }
    }
    Err(WireError::Malformed)
}

impl<P: CryptoProvider, const W: usize> EspSa<P, W> {
    /// Bytes of the outer IP and UDP headers this SA adds in front of the ESP header
    /// (tunnel mode), or the UDP header only (transport mode, which keeps the original).
    #[must_use]
    pub fn outer_header_len(&self) -> usize {
        let udp = if self.config.udp_encap.is_some() {
            udp::HEADER_LEN
        } else {
            0
        };
        let ip = match (self.mode, self.config.remote) {
            (Mode::Transport, _) => 0,
            (Mode::Tunnel, Some(IpAddr::V6(_))) => ipv6::HEADER_LEN,
            (Mode::Tunnel, _) => ipv4::HEADER_LEN,
        };
        ip + udp
    }

    /// The largest packet [`EspSa::encapsulate`] can take without the result exceeding
    /// `mtu` bytes. In transport mode it assumes an option-less IP header of the family
    /// of the SA's peer (IPv4 when unknown).
    #[must_use]
    pub fn max_inner_len(&self, mtu: usize) -> usize {
        let outer = self.outer_header_len();
        let room = mtu.saturating_sub(outer);
        match self.mode {
            Mode::Tunnel => self.transform.max_payload(room),
            Mode::Transport => {
                let ip = match self.config.remote {
                    Some(IpAddr::V6(_)) => ipv6::HEADER_LEN,
                    _ => ipv4::HEADER_LEN,
                };
                let p = self.transform.max_payload(room.saturating_sub(ip));
                if p == 0 { 0 } else { p + ip }
            }
        }
    }

    /// Encapsulates `packet` (the inner packet in tunnel mode, the original packet in
    /// transport mode) into `out`, with a random IV from `rng` for CBC. Returns the length
    /// of the outer packet.
    ///
    /// # Errors
    /// [`EspError::Malformed`] for an unparsable `packet`, [`EspError::InvalidConfig`]
    /// for tunnel endpoints of mixed families, and those of [`EspSa::seal_in_place`].
    pub fn encapsulate<R: SecureRng>(
        &mut self,
        now: crate::Instant,
        packet: &[u8],
        ipv4_ident: Option<u16>,
        rng: &mut R,
        out: &mut [u8],
    ) -> Result<usize, EspError> {
        let mut iv = [0u8; 16];
        let iv = match self.transform.enc {
            Encryption::Cbc(c) => {
                let dst = iv.get_mut(..c.block_len()).ok_or(EspError::InvalidConfig)?;
                if let Err(e) = rng.fill_bytes(dst) {
                    return Err(self.reject_outbound(EspError::Crypto(e)));
                }
                Some(&*dst)
            }
            Encryption::Null | Encryption::Gcm(_) => None,
        };
        self.encapsulate_with(now, packet, &SealOptions { iv, ipv4_ident }, out)
    }

    /// As [`EspSa::encapsulate`] with explicit per-packet options.
    ///
    /// # Errors
    /// As [`EspSa::encapsulate`].
    pub fn encapsulate_with(
        &mut self,
        now: crate::Instant,
        packet: &[u8],
        opts: &SealOptions<'_>,
        out: &mut [u8],
    ) -> Result<usize, EspError> {
        let r = match self.mode {
            Mode::Tunnel => self.prepare_tunnel(packet, opts, out),
            Mode::Transport => self.prepare_transport(packet, out),
        };
        let prep = match r {
            Ok(p) => p,
            Err(e) => return Err(self.reject_outbound(e)),
        };
        let esp_buf = out.get_mut(prep.esp_off..).ok_or(EspError::InvalidLength)?;
        let esp_len =
            self.seal_in_place(now, prep.next_header, esp_buf, prep.payload_len, opts.iv)?;
        // Headers are written after sealing, when the ESP length is final.
        self.write_outer(&prep, esp_len, out)
            .map_err(|e| self.reject_outbound(e))
    }

    fn reject_outbound(&mut self, e: EspError) -> EspError {
        self.counters.send_error(e);
        e
    }

    fn prepare_tunnel(
        &self,
        inner: &[u8],
        opts: &SealOptions<'_>,
        out: &mut [u8],
    ) -> Result<Prepared, EspError> {
        let (next_header, inner, tos, inner_df) = match inner.first().map(|b| b >> 4) {
            Some(4) => {
                let ip = Ipv4Packet::new_checked(inner)?;
                let len = usize::from(ip.total_len());
                (
                    proto::IPV4,
                    inner.get(..len).ok_or(WireError::Truncated)?,
                    ip.tos(),
                    ip.dont_frag(),
                )
            }
            Some(6) => {
                let ip = Ipv6Packet::new_checked(inner)?;
                let len = ipv6::HEADER_LEN + usize::from(ip.payload_len());
                (
                    proto::IPV6,
                    inner.get(..len).ok_or(WireError::Truncated)?,
                    ip.traffic_class(),
                    false,
                )
            }
            Some(_) => return Err(WireError::BadVersion.into()),
            None => return Err(WireError::Truncated.into()),
        };
        let (Some(local), Some(remote)) = (self.config.local, self.config.remote) else {
            return Err(EspError::InvalidConfig);
        };
        let outer = match (local, remote) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Outer::V4 { src: s, dst: d },
            (IpAddr::V6(s), IpAddr::V6(d)) => Outer::V6 { src: s, dst: d },
            _ => return Err(EspError::InvalidConfig),
        };
        let dont_frag = match self.config.df_bit {
            DfBit::Copy => inner_df,
            DfBit::Clear => false,
            DfBit::Set => true,
        };
        let ident = opts
            .ipv4_ident
            .unwrap_or_else(|| u16::try_from(self.next_seq() & 0xffff).unwrap_or(0));
        let prep = Prepared {
            esp_off: self.outer_header_len(),
            payload_len: inner.len(),
            next_header,
            header: Header::Tunnel {
                outer,
                tos,
                dont_frag,
                ident,
            },
        };
        self.place_payload(&prep, inner, out)?;
        Ok(prep)
    }

    fn prepare_transport(&self, packet: &[u8], out: &mut [u8]) -> Result<Prepared, EspError> {
        let udp = if self.config.udp_encap.is_some() {
            udp::HEADER_LEN
        } else {
            0
        };
        let (prefix, payload, next_header, nh_pos, is_v6) = match packet.first().map(|b| b >> 4) {
            Some(4) => {
                let ip = Ipv4Packet::new_checked(packet)?;
                if ip.is_fragment() {
                    // Transport mode protects whole datagrams only.
                    return Err(WireError::Malformed.into());
                }
                let (h, end) = (ip.header_len(), usize::from(ip.total_len()));
                let prefix = packet.get(..h).ok_or(WireError::Truncated)?;
                let payload = packet.get(h..end).ok_or(WireError::Truncated)?;
                (prefix, payload, ip.protocol(), 9, false)
            }
            Some(6) => {
                let ip = Ipv6Packet::new_checked(packet)?;
                let (p, off, nh_pos) = ipv6_upper_layer(packet)?;
                if p == proto::IPV6_FRAG {
                    return Err(WireError::Malformed.into());
                }
                let end = ipv6::HEADER_LEN + usize::from(ip.payload_len());
                let prefix = packet.get(..off).ok_or(WireError::Truncated)?;
                let payload = packet.get(off..end).ok_or(WireError::Truncated)?;
                (prefix, payload, p, nh_pos, true)
            }
            Some(_) => return Err(WireError::BadVersion.into()),
            None => return Err(WireError::Truncated.into()),
        };
        let prep = Prepared {
            esp_off: prefix.len() + udp,
            payload_len: payload.len(),
            next_header,
            header: Header::Transport {
                prefix_len: prefix.len(),
                nh_pos,
                is_v6,
            },
        };
        out.get_mut(..prefix.len())
            .ok_or(EspError::BufferTooSmall {
                needed: self.needed(&prep),
            })?
            .copy_from_slice(prefix);
        self.place_payload(&prep, payload, out)?;
        Ok(prep)
    }

    fn needed(&self, prep: &Prepared) -> usize {
        prep.esp_off
            .saturating_add(self.sealed_len(prep.payload_len))
    }

    fn place_payload(
        &self,
        prep: &Prepared,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<(), EspError> {
        let needed = self.needed(prep);
        if out.len() < needed {
            return Err(EspError::BufferTooSmall { needed });
        }
        let start = prep.esp_off + ESP_HEADER_LEN + self.transform.iv_len();
        out.get_mut(start..start + payload.len())
            .ok_or(EspError::BufferTooSmall { needed })?
            .copy_from_slice(payload);
        Ok(())
    }

    fn write_outer(
        &self,
        prep: &Prepared,
        esp_len: usize,
        out: &mut [u8],
    ) -> Result<usize, EspError> {
        let total = prep.esp_off + esp_len;
        let transport_proto = if self.config.udp_encap.is_some() {
            proto::UDP
        } else {
            proto::ESP
        };
        let ip_len = match prep.header {
            Header::Tunnel {
                outer: Outer::V4 { src, dst },
                tos,
                dont_frag,
                ident,
            } => Ipv4Repr {
                src,
                dst,
                protocol: transport_proto,
                payload_len: total - ipv4::HEADER_LEN,
                ttl: self.config.outer_ttl,
                tos,
                ident,
                dont_frag,
                more_frags: false,
                frag_offset: 0,
            }
            .emit(out)?,
            Header::Tunnel {
                outer: Outer::V6 { src, dst },
                tos,
                ..
            } => Ipv6Repr {
                src,
                dst,
                next_header: transport_proto,
                payload_len: total - ipv6::HEADER_LEN,
                hop_limit: self.config.outer_ttl,
                traffic_class: tos,
                flow_label: 0,
            }
            .emit(out)?,
            Header::Transport {
                prefix_len,
                nh_pos,
                is_v6,
            } => {
                let hdr = out.get_mut(..total).ok_or(WireError::BufferTooSmall)?;
                *hdr.get_mut(nh_pos).ok_or(WireError::Truncated)? = transport_proto;
                if is_v6 {
                    let mut ip = Ipv6Packet::new_unchecked(hdr);
                    ip.set_payload_len(
                        u16::try_from(total - ipv6::HEADER_LEN)
                            .map_err(|_| WireError::BadLength)?,
                    );
                } else {
                    let mut ip = Ipv4Packet::new_unchecked(hdr);
                    ip.set_total_len(u16::try_from(total).map_err(|_| WireError::BadLength)?);
                    ip.fill_checksum();
                }
                prefix_len
            }
        };
        if let Some(encap) = self.config.udp_encap {
            let seg = out
                .get_mut(ip_len..total)
                .ok_or(WireError::BufferTooSmall)?;
            UdpRepr {
                src_port: encap.local_port,
                dst_port: encap.remote_port,
            }
            .emit(seg, esp_len)?;
            // RFC 3948 §2.1: the checksum SHOULD be zero over IPv4; IPv6 requires one.
            let v6_addrs = match prep.header {
                Header::Tunnel {
                    outer: Outer::V6 { src, dst },
                    ..
                } => Some((src, dst)),
                Header::Transport { is_v6: true, .. } => {
                    let ip = Ipv6Packet::new_checked(&*out)?;
                    Some((ip.src_addr(), ip.dst_addr()))
                }
                _ => None,
            };
            if let Some((src, dst)) = v6_addrs {
                let seg = out
                    .get_mut(ip_len..total)
                    .ok_or(WireError::BufferTooSmall)?;
                UdpPacket::new_unchecked(seg).fill_checksum_v6(src, dst);
            }
        }
        Ok(total)
    }

    /// Opens a received outer IP packet in place: finds the ESP part (raw, or behind the
    /// SA's UDP port), verifies and decrypts it, checks the inner packet against the mode
    /// and the SA's selectors, and returns the result as a sub-slice of `packet`.
    ///
    /// The caller looked the SA up by SPI; fragments must be reassembled before this.
    ///
    /// # Errors
    /// [`EspError::NotEsp`] for IKE, keepalives or other traffic; [`EspError::Malformed`];
    /// those of [`EspSa::open_in_place`]; [`EspError::BadNextHeader`] when the inner
    /// packet does not fit the mode; [`EspError::PolicyMismatch`] when it is outside the
    /// SA's selectors.
    pub fn decapsulate<'b>(
        &mut self,
        now: crate::Instant,
        packet: &'b mut [u8],
    ) -> Result<Decapsulated<'b>, EspError> {
        let loc = match locate(packet, &self.config) {
            Ok(l) => l,
            Err(e) => {
                self.counters.recv_error(e);
                return Err(e);
            }
        };
        let esp_start = loc.esp.start;
        let esp = packet
            .get_mut(loc.esp.clone())
            .ok_or(EspError::InvalidLength)?;
        let opened = self.open_in_place(now, esp)?;
        let payload = esp_start + opened.payload.start..esp_start + opened.payload.end;
        let range = match self.mode {
            Mode::Tunnel => tunnel_inner(packet, payload, opened.next_header),
            Mode::Transport => transport_rebuild(packet, &loc, payload, opened.next_header),
        };
        let range = match range.and_then(|r| self.check_selector(packet, r)) {
            Ok(r) => r,
            Err(e) => return Err(self.reject_inbound(e)),
        };
        // Count what the sender counted: in transport mode the kept IP header was not sealed.
        let protected = match self.mode {
            Mode::Tunnel => range.len(),
            Mode::Transport => range.len().saturating_sub(loc.prefix_len),
        };
        self.delivered(now, protected);
        let out = packet.get_mut(range).ok_or(EspError::InvalidLength)?;
        Ok(Decapsulated {
            packet: out,
            seq: opened.seq,
            next_header: opened.next_header,
        })
    }

    pub(super) fn check_selector(
        &self,
        packet: &[u8],
        range: Range<usize>,
    ) -> Result<Range<usize>, EspError> {
        if let Some(sel) = &self.config.selector {
            let inner = packet.get(range.clone()).ok_or(EspError::InvalidLength)?;
            let flow = Flow::from_ip_packet(inner)?;
            if !sel.matches(&flow, super::Direction::Inbound) {
                return Err(EspError::PolicyMismatch);
            }
        }
        Ok(range)
    }
}

/// Tunnel mode: the payload must be an IP packet of the version the next header names.
/// TFC padding after it (RFC 4303 §2.7) is trimmed.
pub(super) fn tunnel_inner(
    packet: &[u8],
    payload: Range<usize>,
    nh: u8,
) -> Result<Range<usize>, EspError> {
    let inner = packet.get(payload.clone()).ok_or(EspError::InvalidLength)?;
    let version = inner.first().map(|b| b >> 4);
    let len = match (nh, version) {
        (proto::IPV4, Some(4)) => usize::from(Ipv4Packet::new_checked(inner)?.total_len()),
        (proto::IPV6, Some(6)) => {
            ipv6::HEADER_LEN + usize::from(Ipv6Packet::new_checked(inner)?.payload_len())
        }
        _ => return Err(EspError::BadNextHeader),
    };
    Ok(payload.start..payload.start + len)
}

/// Transport mode: move the kept IP header (and IPv6 extension headers) up against the
/// payload and restore the upper protocol, length and checksum.
fn transport_rebuild(
    packet: &mut [u8],
    loc: &Located,
    payload: Range<usize>,
    nh: u8,
) -> Result<Range<usize>, EspError> {
    if matches!(nh, proto::IPV4 | proto::IPV6) {
        // An IP packet inside a transport-mode SA: the peer is in tunnel mode.
        return Err(EspError::BadNextHeader);
    }
    let start = payload
        .start
        .checked_sub(loc.prefix_len)
        .ok_or(EspError::InvalidLength)?;
    packet.copy_within(0..loc.prefix_len, start);
    let total = payload.end - start;
    let rebuilt = packet
        .get_mut(start..payload.end)
        .ok_or(EspError::InvalidLength)?;
    *rebuilt.get_mut(loc.nh_pos).ok_or(EspError::InvalidLength)? = nh;
    if loc.is_v6 {
        let len = u16::try_from(total - ipv6::HEADER_LEN).map_err(|_| WireError::BadLength)?;
        Ipv6Packet::new_unchecked(rebuilt).set_payload_len(len);
    } else {
        let len = u16::try_from(total).map_err(|_| WireError::BadLength)?;
        let mut ip = Ipv4Packet::new_unchecked(rebuilt);
        ip.set_total_len(len);
        ip.fill_checksum();
    }
    Ok(start..payload.end)
}

#[derive(Clone, Copy)]
enum Outer {
    V4 {
        src: core::net::Ipv4Addr,
        dst: core::net::Ipv4Addr,
    },
    V6 {
        src: core::net::Ipv6Addr,
        dst: core::net::Ipv6Addr,
    },
}

#[derive(Clone, Copy)]
enum Header {
    Tunnel {
        outer: Outer,
        tos: u8,
        dont_frag: bool,
        ident: u16,
    },
    Transport {
        prefix_len: usize,
        nh_pos: usize,
        is_v6: bool,
    },
}

/// An outbound packet laid out in the output buffer, waiting for its headers.
struct Prepared {
    esp_off: usize,
    payload_len: usize,
    next_header: u8,
    header: Header,
}
