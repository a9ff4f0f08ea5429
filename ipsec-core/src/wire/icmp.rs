//! ICMP error messages for path MTU discovery: ICMPv4 Destination Unreachable /
//! Fragmentation Needed (RFC 792, RFC 1191) and ICMPv6 Packet Too Big (RFC 4443 §3.2).
//!
//! Both share the 8-byte header layout `type | code | checksum | 4 bytes`, followed by as
//! much of the offending packet as the sender quoted. [`IcmpPacket`] is a view over that
//! header; [`QuotedIp`] reads the (usually truncated) quoted IP header, which cannot go
//! through [`Ipv4Packet::new_checked`](super::ipv4::Ipv4Packet::new_checked) because its
//! length field describes bytes that were not quoted. [`IcmpTooBigRepr`] builds the
//! messages a gateway sends back to an inner source.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{WireError, checksum, ipv4, ipv6, proto};

/// Length of the ICMP header (type, code, checksum and the 4-byte rest of header).
pub const HEADER_LEN: usize = 8;

/// ICMPv4 type: Destination Unreachable.
pub const V4_DEST_UNREACHABLE: u8 = 3;
/// ICMPv4 Destination Unreachable code: fragmentation needed and DF set (RFC 1191).
pub const V4_CODE_FRAG_NEEDED: u8 = 4;
/// ICMPv6 type: Packet Too Big.
pub const V6_PACKET_TOO_BIG: u8 = 2;

/// The smallest MTU every IPv4 host must accept (RFC 791: 576-byte datagrams); RFC 1191
/// reports below it are not believed.
pub const IPV4_MIN_MTU: u16 = 576;
/// The IPv6 minimum link MTU (RFC 8200 §5).
pub const IPV6_MIN_MTU: u16 = 1280;

/// How much of an offending packet an ICMPv4 error quotes: the whole message stays within
/// 576 bytes (RFC 1812 §4.3.2.3).
pub const V4_MAX_QUOTE: usize = 576 - ipv4::HEADER_LEN - HEADER_LEN;
/// How much of an offending packet an ICMPv6 error quotes: the whole message stays within
/// the minimum MTU (RFC 4443 §2.4 (c)).
pub const V6_MAX_QUOTE: usize = IPV6_MIN_MTU as usize - ipv6::HEADER_LEN - HEADER_LEN;

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: core::ops::Range<usize> = 2..4;
    pub const REST: core::ops::Range<usize> = 4..8;
}

/// A read/write view of an ICMPv4 or ICMPv6 message (the IP payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// Wrap a buffer without checking it; accessors may panic unless
    /// [`check_len`](Self::check_len) succeeds.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wrap a buffer and [`check_len`](Self::check_len) it.
    ///
    /// # Errors
    ///
    /// As [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Check that the buffer holds the 8-byte header, after which no accessor panics.
    ///
    /// # Errors
    ///
    /// [`WireError::Truncated`] if it is shorter.
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The message type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// The code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        let d = self.buffer.as_ref();
        u16::from_be_bytes([d[field::CHECKSUM.start], d[field::CHECKSUM.start + 1]])
    }

    /// The 4 bytes after the checksum, as a big-endian word.
    pub fn rest_of_header(&self) -> u32 {
        let d = self.buffer.as_ref();
        let r = field::REST.start;
        u32::from_be_bytes([d[r], d[r + 1], d[r + 2], d[r + 3]])
    }

    /// ICMPv4 Fragmentation Needed: the next-hop MTU (RFC 1191 §4, the low 16 bits of the
    /// rest of header; 0 from routers older than RFC 1191).
    pub fn next_hop_mtu(&self) -> u16 {
        let d = self.buffer.as_ref();
        u16::from_be_bytes([d[6], d[7]])
    }

    /// ICMPv6 Packet Too Big: the MTU (RFC 4443 §3.2, the whole rest of header).
    pub fn ptb_mtu(&self) -> u32 {
        self.rest_of_header()
    }

    /// Whether this is an ICMPv4 "fragmentation needed and DF set".
    pub fn is_v4_frag_needed(&self) -> bool {
        self.msg_type() == V4_DEST_UNREACHABLE && self.code() == V4_CODE_FRAG_NEEDED
    }

    /// Whether this is an ICMPv6 "packet too big".
    pub fn is_v6_packet_too_big(&self) -> bool {
        self.msg_type() == V6_PACKET_TOO_BIG
    }

    /// The quoted part of the offending packet.
    pub fn quoted(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// Whether the ICMPv4 checksum (over the whole message) verifies.
    #[must_use]
    pub fn verify_checksum_v4(&self) -> bool {
        checksum::checksum(self.buffer.as_ref()) == 0
    }

    /// Whether the ICMPv6 checksum (over an IPv6 pseudo-header and the message) verifies.
    #[must_use]
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let d = self.buffer.as_ref();
        let Ok(len) = u32::try_from(d.len()) else {
            return false;
        };
        let ph = checksum::pseudo_header_v6(src, dst, proto::ICMPV6, len);
        checksum::finish(checksum::combine(ph, checksum::sum(d))) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    /// Set the type.
    pub fn set_msg_type(&mut self, t: u8) {
        self.buffer.as_mut()[field::TYPE] = t;
    }

    /// Set the code.
    pub fn set_code(&mut self, c: u8) {
        self.buffer.as_mut()[field::CODE] = c;
    }

    /// Set the checksum field as is.
    pub fn set_checksum(&mut self, ck: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&ck.to_be_bytes());
    }

    /// Set the 4 bytes after the checksum.
    pub fn set_rest_of_header(&mut self, v: u32) {
        self.buffer.as_mut()[field::REST].copy_from_slice(&v.to_be_bytes());
    }

    /// Compute and write the ICMPv4 checksum over the whole buffer.
    pub fn fill_checksum_v4(&mut self) {
        self.set_checksum(0);
        let ck = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(ck);
    }

    /// Compute and write the ICMPv6 checksum over the pseudo-header and the whole buffer.
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let d = self.buffer.as_ref();
        let len = u32::try_from(d.len()).unwrap_or(u32::MAX);
        let ph = checksum::pseudo_header_v6(src, dst, proto::ICMPV6, len);
        let ck = checksum::finish(checksum::combine(ph, checksum::sum(d)));
        self.set_checksum(ck);
    }
}

/// The fields of a quoted (possibly truncated) IP header inside an ICMP error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotedIp<'a> {
    /// Source address of the offending packet.
    pub src: IpAddr,
    /// Destination address of the offending packet.
    pub dst: IpAddr,
    /// Its protocol (IPv4) or the fixed header's next header (IPv6).
    pub protocol: u8,
    /// Whether the quoted IPv4 header had DF set (always `false` for IPv6).
    pub dont_frag: bool,
    /// The quoted bytes after the IP header (the ESP or UDP header, truncated).
    pub payload: &'a [u8],
}

impl<'a> QuotedIp<'a> {
    /// Parse the start of a quoted packet. Only the header itself must be complete; the
    /// length fields are not checked against what was quoted.
    ///
    /// # Errors
    ///
    /// [`WireError::Truncated`] if the header is cut short, [`WireError::BadVersion`],
    /// [`WireError::BadLength`] for an IHL below 5.
    pub fn parse(q: &'a [u8]) -> Result<Self, WireError> {
        match q.first().map(|b| b >> 4) {
            Some(4) => {
                if q.len() < ipv4::HEADER_LEN {
                    return Err(WireError::Truncated);
                }
                let ihl = usize::from(q[0] & 0x0f) * 4;
                if ihl < ipv4::HEADER_LEN {
                    return Err(WireError::BadLength);
                }
                let payload = q.get(ihl..).ok_or(WireError::Truncated)?;
                Ok(Self {
                    src: IpAddr::V4(Ipv4Addr::new(q[12], q[13], q[14], q[15])),
                    dst: IpAddr::V4(Ipv4Addr::new(q[16], q[17], q[18], q[19])),
                    protocol: q[9],
                    dont_frag: q[6] & 0x40 != 0,
                    payload,
                })
            }
            Some(6) => {
                if q.len() < ipv6::HEADER_LEN {
                    return Err(WireError::Truncated);
                }
                let mut s = [0u8; 16];
                let mut d = [0u8; 16];
                s.copy_from_slice(&q[8..24]);
                d.copy_from_slice(&q[24..40]);
                Ok(Self {
                    src: IpAddr::V6(Ipv6Addr::from(s)),
                    dst: IpAddr::V6(Ipv6Addr::from(d)),
                    protocol: q[6],
                    dont_frag: false,
                    payload: &q[ipv6::HEADER_LEN..],
                })
            }
            Some(_) => Err(WireError::BadVersion),
            None => Err(WireError::Truncated),
        }
    }
}

/// An ICMP "too big" message to build: ICMPv4 Fragmentation Needed or ICMPv6 Packet Too
/// Big, quoting the start of `original`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpTooBigRepr<'a> {
    /// The MTU to report.
    pub mtu: u16,
    /// The offending packet; as much as the quoting limit allows is copied.
    pub original: &'a [u8],
}

impl IcmpTooBigRepr<'_> {
    /// Length of the ICMPv4 message (without IP header).
    #[must_use]
    pub fn buffer_len_v4(&self) -> usize {
        HEADER_LEN + self.original.len().min(V4_MAX_QUOTE)
    }

    /// Length of the ICMPv6 message (without IP header).
    #[must_use]
    pub fn buffer_len_v6(&self) -> usize {
        HEADER_LEN + self.original.len().min(V6_MAX_QUOTE)
    }

    /// Write an ICMPv4 type 3 code 4 with the next-hop MTU, checksum included. Returns the
    /// message length.
    ///
    /// # Errors
    ///
    /// [`WireError::BufferTooSmall`].
    pub fn emit_v4(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let len = self.buffer_len_v4();
        let msg = buf.get_mut(..len).ok_or(WireError::BufferTooSmall)?;
        msg[HEADER_LEN..].copy_from_slice(&self.original[..len - HEADER_LEN]);
        let mut p = IcmpPacket::new_unchecked(msg);
        p.set_msg_type(V4_DEST_UNREACHABLE);
        p.set_code(V4_CODE_FRAG_NEEDED);
        p.set_rest_of_header(u32::from(self.mtu));
        p.fill_checksum_v4();
        Ok(len)
    }

    /// Write an ICMPv6 Packet Too Big, checksum included (which covers the addresses of
    /// the IPv6 header it will travel in). Returns the message length.
    ///
    /// # Errors
    ///
    /// [`WireError::BufferTooSmall`].
    pub fn emit_v6(
        &self,
        buf: &mut [u8],
        src: Ipv6Addr,
        dst: Ipv6Addr,
    ) -> Result<usize, WireError> {
        let len = self.buffer_len_v6();
        let msg = buf.get_mut(..len).ok_or(WireError::BufferTooSmall)?;
        msg[HEADER_LEN..].copy_from_slice(&self.original[..len - HEADER_LEN]);
        let mut p = IcmpPacket::new_unchecked(msg);
        p.set_msg_type(V6_PACKET_TOO_BIG);
        p.set_code(0);
        p.set_rest_of_header(u32::from(self.mtu));
        p.fill_checksum_v6(src, dst);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    /// A frag-needed as RFC 1191 lays it out (built by hand, not captured): next-hop MTU
    /// 1400, quoting the first 8 bytes of an ESP packet from 192.0.2.1 to 198.51.100.2 with
    /// SPI 0x1111 and sequence number 7. The ICMP checksum is computed here.
    fn frag_needed() -> std::vec::Vec<u8> {
        let mut m = hex::decode(
            "0304000000000578\
             450005dc0007400040320000c0000201c6336402\
             0000111100000007",
        )
        .unwrap();
        let ck = checksum::checksum(&m);
        m[2..4].copy_from_slice(&ck.to_be_bytes());
        m
    }

    #[test]
    fn parses_frag_needed_and_quote() {
        let m = frag_needed();
        let p = IcmpPacket::new_checked(&m[..]).unwrap();
        assert!(p.is_v4_frag_needed());
        assert!(p.verify_checksum_v4());
        assert_eq!(p.next_hop_mtu(), 1400);
        let q = QuotedIp::parse(p.quoted()).unwrap();
        assert_eq!(q.src, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(q.dst, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)));
        assert_eq!(q.protocol, proto::ESP);
        assert!(q.dont_frag);
        assert_eq!(q.payload, &[0, 0, 0x11, 0x11, 0, 0, 0, 7]);
    }

    #[test]
    fn truncated_and_bad_inputs_are_errors() {
        assert_eq!(
            IcmpPacket::new_checked(&[3u8, 4, 0][..]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(QuotedIp::parse(&[]).unwrap_err(), WireError::Truncated);
        assert_eq!(
            QuotedIp::parse(&[0x45; 10]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            QuotedIp::parse(&[0x44; 20]).unwrap_err(),
            WireError::BadLength
        );
        assert_eq!(
            QuotedIp::parse(&[0x4f; 30]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            QuotedIp::parse(&[0x75; 30]).unwrap_err(),
            WireError::BadVersion
        );
        assert_eq!(
            QuotedIp::parse(&[0x60; 39]).unwrap_err(),
            WireError::Truncated
        );
        let mut m = frag_needed();
        m[9] ^= 1;
        assert!(
            !IcmpPacket::new_checked(&m[..])
                .unwrap()
                .verify_checksum_v4()
        );
    }

    #[test]
    fn emits_what_it_parses() {
        let original = [0x45u8; 1300];
        let r = IcmpTooBigRepr {
            mtu: 1342,
            original: &original,
        };
        let mut buf = [0u8; 1300];
        let n = r.emit_v4(&mut buf).unwrap();
        assert_eq!(n, 576 - 20);
        let p = IcmpPacket::new_checked(&buf[..n]).unwrap();
        assert!(p.is_v4_frag_needed() && p.verify_checksum_v4());
        assert_eq!(p.next_hop_mtu(), 1342);
        assert_eq!(p.quoted(), &original[..n - 8]);

        let (s, d): (Ipv6Addr, Ipv6Addr) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        let n = r.emit_v6(&mut buf, s, d).unwrap();
        assert_eq!(n, 1280 - 40);
        let p = IcmpPacket::new_checked(&buf[..n]).unwrap();
        assert!(p.is_v6_packet_too_big() && p.verify_checksum_v6(s, d));
        assert!(!p.verify_checksum_v6(d, d));
        assert_eq!(p.ptb_mtu(), 1342);
        assert_eq!(r.emit_v4(&mut [0u8; 10]), Err(WireError::BufferTooSmall));
    }
}
