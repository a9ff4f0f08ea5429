//! IPv6 headers (RFC 8200): the fixed 40-byte header, and a walk over the extension
//! headers that precede ESP or an upper-layer protocol.

use core::net::Ipv6Addr;

use super::WireError;

/// The length of the fixed IPv6 header.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// The most extension headers [`Ipv6Packet::upper_layer`] walks before giving up.
pub const MAX_EXT_HEADERS: usize = 8;

/// Next-header values of the extension headers [`Ipv6Packet::upper_layer`] skips.
pub mod ext {
    /// Hop-by-Hop Options; only allowed right after the fixed header.
    pub const HOP_BY_HOP: u8 = 0;
    /// Routing header.
    pub const ROUTING: u8 = 43;
    /// Destination Options.
    pub const DEST_OPTS: u8 = 60;
}

mod field {
    use core::ops::Range;

    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Range<usize> = 8..24;
    pub const DST_ADDR: Range<usize> = 24..40;
}

const FLOW_LABEL_MASK: u32 = 0x000f_ffff;

/// A read/write view of an IPv6 packet in a buffer.
///
/// The buffer may be longer than `40 + payload_len`; the extra bytes are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wrap a buffer without checking it. Accessors may panic unless [`check_len`]
    /// succeeds; untrusted input goes through [`new_checked`].
    ///
    /// [`check_len`]: Self::check_len
    /// [`new_checked`]: Self::new_checked
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wrap a buffer and [`check_len`](Self::check_len) it.
    ///
    /// # Errors
    ///
    /// As [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Check that the buffer holds the fixed header and the payload it announces, after
    /// which no accessor panics.
    ///
    /// # Errors
    ///
    /// [`WireError::Truncated`] if the buffer is shorter than 40 bytes or than
    /// `40 + payload_len`; [`WireError::BadVersion`] if the version is not 6.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 6 {
            return Err(WireError::BadVersion);
        }
        if len < self.total_len() {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn word0(&self) -> u32 {
        let d = self.buffer.as_ref();
        u32::from_be_bytes([d[0], d[1], d[2], d[3]])
    }

    /// The version field (6 after [`check_len`](Self::check_len)).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW.start] >> 4
    }

    /// The traffic class (DSCP and ECN).
    pub fn traffic_class(&self) -> u8 {
        let [.., tc] = (self.word0() >> 20).to_be_bytes();
        tc
    }

    /// The 20-bit flow label.
    pub fn flow_label(&self) -> u32 {
        self.word0() & FLOW_LABEL_MASK
    }

    /// The payload length field: the bytes after the fixed header, extension headers
    /// included.
    pub fn payload_len(&self) -> u16 {
        let d = self.buffer.as_ref();
        u16::from_be_bytes([d[field::PAYLOAD_LEN.start], d[field::PAYLOAD_LEN.start + 1]])
    }

    /// The length of the packet: `40 + payload_len`.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len())
    }

    /// The next header field of the fixed header.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// The hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// The source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        self.read_addr(field::SRC_ADDR.start)
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        self.read_addr(field::DST_ADDR.start)
    }

    /// The payload: the `payload_len` bytes after the fixed header, extension headers
    /// included.
    pub fn payload(&self) -> &[u8] {
        let end = self.end();
        &self.buffer.as_ref()[HEADER_LEN.min(end)..end]
    }

    /// Walk the Hop-by-Hop, Routing and Destination Options headers and return the first
    /// other next-header value with its byte offset from the start of the packet.
    ///
    /// The walk stops at anything else, including Fragment (44), ESP (50), AH (51) and
    /// "no next header" (59, whose offset may equal the packet length).
    ///
    /// # Errors
    ///
    /// [`WireError::Truncated`] if an extension header runs past the payload length;
    /// [`WireError::Malformed`] if Hop-by-Hop appears anywhere but first, or if there are
    /// more than [`MAX_EXT_HEADERS`] extension headers.
    pub fn upper_layer(&self) -> Result<(u8, usize), WireError> {
        let data = self.buffer.as_ref();
        let end = self.end();
        let mut next = self.next_header();
        let mut offset = HEADER_LEN;
        for i in 0..MAX_EXT_HEADERS {
            match next {
                ext::HOP_BY_HOP if i > 0 => return Err(WireError::Malformed),
                ext::HOP_BY_HOP | ext::ROUTING | ext::DEST_OPTS => {
                    // Both bytes read here lie before `end`, which is within the buffer.
                    if end < offset + 2 {
                        return Err(WireError::Truncated);
                    }
                    let len = (usize::from(data[offset + 1]) + 1) * 8;
                    if end < offset + len {
                        return Err(WireError::Truncated);
                    }
                    next = data[offset];
                    offset += len;
                }
                _ => return Ok((next, offset)),
            }
        }
        match next {
            ext::HOP_BY_HOP | ext::ROUTING | ext::DEST_OPTS => Err(WireError::Malformed),
            _ => Ok((next, offset)),
        }
    }

    fn read_addr(&self, at: usize) -> Ipv6Addr {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&self.buffer.as_ref()[at..at + 16]);
        Ipv6Addr::from(octets)
    }

    // Clamped so that a setter breaking the length invariant cannot make slicing panic.
    fn end(&self) -> usize {
        self.total_len().min(self.buffer.as_ref().len())
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv6Packet<&'a T> {
    /// The payload, borrowed for the lifetime of the buffer rather than of the view.
    pub fn into_payload(self) -> &'a [u8] {
        let end = self.end();
        &self.buffer.as_ref()[HEADER_LEN.min(end)..end]
    }
}

impl<'a, T: AsRef<[u8]> + AsMut<[u8]> + ?Sized> Ipv6Packet<&'a mut T> {
    /// The payload, mutably borrowed for the lifetime of the buffer.
    pub fn into_payload_mut(self) -> &'a mut [u8] {
        let end = self.end();
        &mut self.buffer.as_mut()[HEADER_LEN.min(end)..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    fn set_word0(&mut self, word: u32) {
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&word.to_be_bytes());
    }

    /// Set the version field (normally 6).
    pub fn set_version(&mut self, version: u8) {
        let word = (self.word0() & 0x0fff_ffff) | (u32::from(version & 0x0f) << 28);
        self.set_word0(word);
    }

    /// Set the traffic class.
    pub fn set_traffic_class(&mut self, tc: u8) {
        let word = (self.word0() & 0xf00f_ffff) | (u32::from(tc) << 20);
        self.set_word0(word);
    }

    /// Set the flow label (20 bits; higher bits are ignored).
    pub fn set_flow_label(&mut self, label: u32) {
        let word = (self.word0() & !FLOW_LABEL_MASK) | (label & FLOW_LABEL_MASK);
        self.set_word0(word);
    }

    /// Set the payload length field.
    pub fn set_payload_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::PAYLOAD_LEN].copy_from_slice(&len.to_be_bytes());
    }

    /// Set the next header field of the fixed header.
    pub fn set_next_header(&mut self, next_header: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = next_header;
    }

    /// Set the hop limit.
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hop_limit;
    }

    /// Set the source address.
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Set the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// The payload, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.end();
        &mut self.buffer.as_mut()[HEADER_LEN.min(end)..end]
    }
}

/// A high-level description of the fixed IPv6 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Repr {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Next header of the fixed header (an extension header or the upper layer).
    pub next_header: u8,
    /// Payload length in bytes (extension headers included).
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// The length of the header [`emit`](Self::emit) writes.
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// Parse the fixed header of a packet (extension headers are left in the payload).
    ///
    /// # Errors
    ///
    /// Those of [`Ipv6Packet::check_len`].
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv6Packet<T>) -> Result<Self, WireError> {
        packet.check_len()?;
        Ok(Self {
            src: packet.src_addr(),
            dst: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
        })
    }

    /// The length of the emitted header: 40.
    #[must_use]
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// The length of the whole packet: header plus payload.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Write the 40-byte fixed header into the start of `buf` and return its length. The
    /// payload (which follows) is not touched.
    ///
    /// # Errors
    ///
    /// [`WireError::BufferTooSmall`] if `buf` is shorter than 40 bytes;
    /// [`WireError::BadLength`] if `payload_len` exceeds 65535 (jumbograms are not
    /// supported); [`WireError::Malformed`] if `flow_label` does not fit in 20 bits.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let payload_len = u16::try_from(self.payload_len).map_err(|_| WireError::BadLength)?;
        if self.flow_label & !FLOW_LABEL_MASK != 0 {
            return Err(WireError::Malformed);
        }
        let header = buf.get_mut(..HEADER_LEN).ok_or(WireError::BufferTooSmall)?;
        let mut packet = Ipv6Packet::new_unchecked(header);
        packet.set_word0(0);
        packet.set_version(6);
        packet.set_traffic_class(self.traffic_class);
        packet.set_flow_label(self.flow_label);
        packet.set_payload_len(payload_len);
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src);
        packet.set_dst_addr(self.dst);
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    extern crate std;

    use super::*;
    use crate::wire::proto;
    use std::vec::Vec;

    fn addrs() -> (Ipv6Addr, Ipv6Addr) {
        (
            "2001:db8::1".parse().unwrap(),
            "2001:db8:0:1::2".parse().unwrap(),
        )
    }

    /// A hand-built packet: fixed header (TC 0xb8, flow label 0x12345, hop limit 64) |
    /// Hop-by-Hop (8 bytes: PadN) | Destination Options (16 bytes: PadN) | ESP header
    /// (SPI 0x00004321, seq 1, from RFC 3602 case 5) | 4 bytes of ciphertext.
    fn hand_built() -> Vec<u8> {
        let (src, dst) = addrs();
        let mut p = Vec::new();
        // Version 6, TC 0xb8, flow 0x12345: 0110 1011 1000 0001 0010 0011 0100 0101.
        p.extend_from_slice(&[0x6b, 0x81, 0x23, 0x45]);
        p.extend_from_slice(&(8u16 + 16 + 8 + 4).to_be_bytes());
        p.extend_from_slice(&[ext::HOP_BY_HOP, 64]);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        // Hop-by-Hop: next = Destination Options, hdr ext len 0, PadN with 4 bytes.
        p.extend_from_slice(&[ext::DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
        // Destination Options: next = ESP, hdr ext len 1 (16 bytes), PadN with 12 bytes.
        p.extend_from_slice(&[proto::ESP, 1, 1, 12]);
        p.extend_from_slice(&[0; 12]);
        p.extend_from_slice(&[0, 0, 0x43, 0x21, 0, 0, 0, 1]);
        p.extend_from_slice(&[0xf6, 0x63, 0xc2, 0x5d]);
        p
    }

    #[test]
    fn parse_hand_built() {
        let bytes = hand_built();
        let p = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        let (src, dst) = addrs();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 36);
        assert_eq!(p.next_header(), ext::HOP_BY_HOP);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), src);
        assert_eq!(p.dst_addr(), dst);
        assert_eq!(p.payload(), &bytes[40..]);
        assert_eq!(p.upper_layer(), Ok((proto::ESP, 64)));
        assert_eq!(&bytes[64..68], &[0, 0, 0x43, 0x21]);
        let repr = Ipv6Repr::parse(&p).unwrap();
        assert_eq!(
            repr,
            Ipv6Repr {
                src,
                dst,
                next_header: 0,
                payload_len: 36,
                hop_limit: 64,
                traffic_class: 0xb8,
                flow_label: 0x12345,
            }
        );
        assert_eq!(repr.buffer_len(), bytes.len());
        let mut out = [0xffu8; 40];
        assert_eq!(repr.emit(&mut out), Ok(40));
        assert_eq!(&out[..], &bytes[..40]);
    }

    #[test]
    fn upper_layer_variants() {
        let mut bytes = hand_built();
        // No extension headers: ESP right after the fixed header.
        bytes[6] = proto::ESP;
        assert_eq!(
            Ipv6Packet::new_checked(&bytes[..]).unwrap().upper_layer(),
            Ok((50, 40))
        );
        // Stops at Fragment without looking inside.
        bytes[6] = proto::IPV6_FRAG;
        assert_eq!(
            Ipv6Packet::new_checked(&bytes[..]).unwrap().upper_layer(),
            Ok((44, 40))
        );
        // Hop-by-Hop in second place is malformed.
        bytes[6] = ext::DEST_OPTS;
        bytes[40] = ext::HOP_BY_HOP;
        assert_eq!(
            Ipv6Packet::new_checked(&bytes[..]).unwrap().upper_layer(),
            Err(WireError::Malformed)
        );
        // Routing header in place of the Hop-by-Hop header, then Destination Options.
        let mut bytes = hand_built();
        bytes[6] = ext::ROUTING;
        assert_eq!(
            Ipv6Packet::new_checked(&bytes[..]).unwrap().upper_layer(),
            Ok((proto::ESP, 64))
        );
        // The Destination Options header claims 32 bytes: past the payload.
        bytes[49] = 3;
        assert_eq!(
            Ipv6Packet::new_checked(&bytes[..]).unwrap().upper_layer(),
            Err(WireError::Truncated)
        );
        // Ends exactly at the payload end with "no next header".
        let mut bytes = hand_built();
        bytes.truncate(64);
        bytes[4..6].copy_from_slice(&24u16.to_be_bytes());
        bytes[48] = proto::NO_NEXT_HEADER;
        assert_eq!(
            Ipv6Packet::new_checked(&bytes[..]).unwrap().upper_layer(),
            Ok((proto::NO_NEXT_HEADER, 64))
        );
        // Destination Options announced but the payload ends before its length byte.
        bytes[48] = ext::DEST_OPTS;
        assert_eq!(
            Ipv6Packet::new_checked(&bytes[..]).unwrap().upper_layer(),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn upper_layer_is_bounded() {
        // A chain of 8-byte Destination Options headers, `n` long, then UDP.
        let (src, dst) = addrs();
        for n in 0..=MAX_EXT_HEADERS + 2 {
            let mut b = std::vec![0u8; 40 + 8 * n];
            let repr = Ipv6Repr {
                src,
                dst,
                next_header: if n == 0 { proto::UDP } else { ext::DEST_OPTS },
                payload_len: 8 * n,
                hop_limit: 1,
                traffic_class: 0,
                flow_label: 0,
            };
            repr.emit(&mut b).unwrap();
            for i in 0..n {
                b[40 + 8 * i] = if i + 1 == n {
                    proto::UDP
                } else {
                    ext::DEST_OPTS
                };
            }
            let res = Ipv6Packet::new_checked(&b[..]).unwrap().upper_layer();
            if n <= MAX_EXT_HEADERS {
                assert_eq!(res, Ok((proto::UDP, 40 + 8 * n)), "{n} headers");
            } else {
                assert_eq!(res, Err(WireError::Malformed), "{n} headers");
            }
        }
    }

    #[test]
    fn upper_layer_never_panics_on_any_ext_len() {
        let mut bytes = hand_built();
        for hbh_len in 0..=255u8 {
            for do_len in 0..=255u8 {
                bytes[41] = hbh_len;
                bytes[49] = do_len;
                let p = Ipv6Packet::new_checked(&bytes[..]).unwrap();
                let res = p.upper_layer();
                if hbh_len == 0 && do_len == 1 {
                    assert_eq!(res, Ok((proto::ESP, 64)));
                } else if let Ok((_, off)) = res {
                    assert!(off <= bytes.len());
                }
            }
        }
    }

    #[test]
    fn bad_version_and_emit_errors() {
        let mut bytes = hand_built();
        bytes[0] = 0x4b;
        assert_eq!(
            Ipv6Packet::new_checked(&bytes[..]),
            Err(WireError::BadVersion)
        );
        let repr = Ipv6Repr {
            src: Ipv6Addr::UNSPECIFIED,
            dst: Ipv6Addr::LOCALHOST,
            next_header: proto::ESP,
            payload_len: 0,
            hop_limit: 255,
            traffic_class: 0,
            flow_label: 0,
        };
        for n in 0..40 {
            let mut buf = std::vec![0u8; n];
            assert_eq!(repr.emit(&mut buf), Err(WireError::BufferTooSmall));
        }
        let mut buf = [0u8; 40];
        let big = Ipv6Repr {
            payload_len: 65536,
            ..repr
        };
        assert_eq!(big.emit(&mut buf), Err(WireError::BadLength));
        let flow = Ipv6Repr {
            flow_label: 0x10_0000,
            ..repr
        };
        assert_eq!(flow.emit(&mut buf), Err(WireError::Malformed));
        assert_eq!(repr.emit(&mut buf), Ok(40));
        assert_eq!(
            Ipv6Repr::parse(&Ipv6Packet::new_checked(&buf[..]).unwrap()),
            Ok(repr)
        );
    }

    #[test]
    fn setters() {
        let mut bytes = hand_built();
        let mut p = Ipv6Packet::new_checked(&mut bytes[..]).unwrap();
        p.set_traffic_class(0x01);
        assert_eq!(
            (p.version(), p.traffic_class(), p.flow_label()),
            (6, 0x01, 0x12345)
        );
        p.set_flow_label(0xfffff);
        assert_eq!(
            (p.version(), p.traffic_class(), p.flow_label()),
            (6, 0x01, 0xfffff)
        );
        p.set_hop_limit(3);
        p.set_next_header(proto::ESP);
        p.payload_mut()[0] = 0xaa;
        // A payload length beyond the buffer breaks the invariant but never panics.
        p.set_payload_len(1000);
        assert_eq!(p.check_len(), Err(WireError::Truncated));
        assert_eq!(p.payload().len(), 36);
        assert_eq!(p.upper_layer(), Ok((proto::ESP, 40)));
        assert_eq!(p.into_payload_mut()[0], 0xaa);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = hand_built();
        for n in 0..bytes.len() {
            assert_eq!(
                Ipv6Packet::new_checked(&bytes[..n]),
                Err(WireError::Truncated),
                "prefix {n}"
            );
        }
        // With padding after the payload, the packet is fine and the padding ignored.
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0; 7]);
        let p = Ipv6Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.into_payload(), &bytes[40..]);
    }
}
