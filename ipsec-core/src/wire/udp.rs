//! UDP headers (RFC 768), as used for IKE and for UDP-encapsulated ESP (RFC 3948).
//!
//! Checksums need the addresses of the enclosing IP header, so they are verified and
//! filled by separate calls rather than by [`UdpRepr::parse`] / [`UdpRepr::emit`]:
//! RFC 3948 lets ESP-in-UDP senders leave the checksum zero over IPv4.

use core::net::{Ipv4Addr, Ipv6Addr};

use super::{WireError, checksum, proto};

/// The length of a UDP header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;

mod field {
    use core::ops::Range;

    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// A read/write view of a UDP datagram in a buffer.
///
/// The buffer may be longer than the length field; the extra bytes are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
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

    /// Check that the buffer holds the header and the length the header announces, after
    /// which no accessor panics.
    ///
    /// # Errors
    ///
    /// [`WireError::Truncated`] if the buffer is shorter than 8 bytes or than the length
    /// field; [`WireError::BadLength`] if the length field is below 8.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let field_len = usize::from(self.len());
        if field_len < HEADER_LEN {
            return Err(WireError::BadLength);
        }
        if len < field_len {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn read_u16(&self, at: usize) -> u16 {
        let d = self.buffer.as_ref();
        u16::from_be_bytes([d[at], d[at + 1]])
    }

    /// The source port.
    pub fn src_port(&self) -> u16 {
        self.read_u16(field::SRC_PORT.start)
    }

    /// The destination port.
    pub fn dst_port(&self) -> u16 {
        self.read_u16(field::DST_PORT.start)
    }

    /// The length field: header plus payload, in bytes.
    #[allow(clippy::len_without_is_empty)] // a datagram always has its 8-byte header
    pub fn len(&self) -> u16 {
        self.read_u16(field::LENGTH.start)
    }

    /// The checksum field (0 over IPv4 means "not computed").
    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM.start)
    }

    /// The payload: the bytes after the header, up to the length field.
    pub fn payload(&self) -> &[u8] {
        let end = self.end();
        &self.buffer.as_ref()[HEADER_LEN.min(end)..end]
    }

    /// Whether the checksum verifies for an IPv4 pseudo-header. A zero checksum means the
    /// sender did not compute one and counts as valid.
    #[must_use]
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let ph = checksum::pseudo_header_v4(src, dst, proto::UDP, self.len());
        checksum::finish(checksum::combine(ph, self.datagram_sum())) == 0
    }

    /// Whether the checksum verifies for an IPv6 pseudo-header. The checksum is mandatory
    /// over IPv6, so zero is invalid.
    #[must_use]
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        if self.checksum() == 0 {
            return false;
        }
        let ph = checksum::pseudo_header_v6(src, dst, proto::UDP, u32::from(self.len()));
        checksum::finish(checksum::combine(ph, self.datagram_sum())) == 0
    }

    fn datagram_sum(&self) -> u32 {
        checksum::sum(&self.buffer.as_ref()[..self.end()])
    }

    // Clamped so that a setter breaking the length invariant cannot make slicing panic.
    fn end(&self) -> usize {
        usize::from(self.len()).min(self.buffer.as_ref().len())
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> UdpPacket<&'a T> {
    /// The payload, borrowed for the lifetime of the buffer rather than of the view.
    pub fn into_payload(self) -> &'a [u8] {
        let end = self.end();
        &self.buffer.as_ref()[HEADER_LEN.min(end)..end]
    }
}

impl<'a, T: AsRef<[u8]> + AsMut<[u8]> + ?Sized> UdpPacket<&'a mut T> {
    /// The payload, mutably borrowed for the lifetime of the buffer.
    pub fn into_payload_mut(self) -> &'a mut [u8] {
        let end = self.end();
        &mut self.buffer.as_mut()[HEADER_LEN.min(end)..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    fn write_u16(&mut self, at: usize, value: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&value.to_be_bytes());
    }

    /// Set the source port.
    pub fn set_src_port(&mut self, port: u16) {
        self.write_u16(field::SRC_PORT.start, port);
    }

    /// Set the destination port.
    pub fn set_dst_port(&mut self, port: u16) {
        self.write_u16(field::DST_PORT.start, port);
    }

    /// Set the length field.
    pub fn set_len(&mut self, len: u16) {
        self.write_u16(field::LENGTH.start, len);
    }

    /// Set the checksum field as is (0 over IPv4 for "not computed").
    pub fn set_checksum(&mut self, checksum: u16) {
        self.write_u16(field::CHECKSUM.start, checksum);
    }

    /// Compute and write the checksum for an IPv4 pseudo-header, over the header and
    /// payload as they are now. A computed 0 is sent as `0xffff`.
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        let ph = checksum::pseudo_header_v4(src, dst, proto::UDP, self.len());
        self.fill_with(ph);
    }

    /// Compute and write the checksum for an IPv6 pseudo-header, over the header and
    /// payload as they are now. A computed 0 is sent as `0xffff`.
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        let ph = checksum::pseudo_header_v6(src, dst, proto::UDP, u32::from(self.len()));
        self.fill_with(ph);
    }

    fn fill_with(&mut self, pseudo_header: u32) {
        self.set_checksum(0);
        let ck = checksum::finish(checksum::combine(pseudo_header, self.datagram_sum()));
        // RFC 768: zero is reserved for "no checksum"; its ones' complement twin is sent.
        self.set_checksum(if ck == 0 { 0xffff } else { ck });
    }

    /// The payload, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.end();
        &mut self.buffer.as_mut()[HEADER_LEN.min(end)..end]
    }
}

/// A high-level description of a UDP header. The length comes from the payload length
/// given to [`emit`](Self::emit); the checksum is filled separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

impl UdpRepr {
    /// The length of the header [`emit`](Self::emit) writes.
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// Parse a datagram's ports. The checksum is not verified: see
    /// [`UdpPacket::verify_checksum_v4`] and [`UdpPacket::verify_checksum_v6`].
    ///
    /// # Errors
    ///
    /// Those of [`UdpPacket::check_len`].
    pub fn parse<T: AsRef<[u8]>>(packet: &UdpPacket<T>) -> Result<Self, WireError> {
        packet.check_len()?;
        Ok(Self {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
        })
    }

    /// The length of the header: 8.
    #[must_use]
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// The length of a datagram carrying `payload_len` bytes.
    #[must_use]
    pub const fn buffer_len(&self, payload_len: usize) -> usize {
        HEADER_LEN + payload_len
    }

    /// Write the 8-byte header for a payload of `payload_len` bytes into the start of `buf`,
    /// with a zero checksum, and return its length. The payload (which follows) is not
    /// touched; to checksum it, call [`UdpPacket::fill_checksum_v4`] or
    /// [`UdpPacket::fill_checksum_v6`] once it is in place.
    ///
    /// # Errors
    ///
    /// [`WireError::BufferTooSmall`] if `buf` is shorter than 8 bytes;
    /// [`WireError::BadLength`] if `8 + payload_len` exceeds 65535.
    pub fn emit(&self, buf: &mut [u8], payload_len: usize) -> Result<usize, WireError> {
        let len = HEADER_LEN
            .checked_add(payload_len)
            .and_then(|l| u16::try_from(l).ok())
            .ok_or(WireError::BadLength)?;
        let header = buf.get_mut(..HEADER_LEN).ok_or(WireError::BufferTooSmall)?;
        let mut packet = UdpPacket::new_unchecked(header);
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(len);
        packet.set_checksum(0);
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    extern crate std;

    use super::*;
    use std::vec::Vec;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// ipsec-ikev1-isakmp-main-mode.pcap frame 9: IPv4 192.168.12.1 -> 192.168.12.2,
    /// UDP 500 -> 500, length 68, checksum 0x70a8 (valid).
    const IKE_FRAME9: &str = "45c00058028d0000ff111ef4c0a80c01c0a80c0201f401f4004470a8e47a591fd0\
        57587fa00b8ef0902bb8ec08102001635a2e6a0000003c05750fa41560dbaca0027bdcdfe39a1e8a4890d34f\
        8fd05afb82064818e96728";

    /// synthetic_natt_keepalive_nonesp_marker_espinudp.pcap frame 1: a NAT-keepalive,
    /// 10.0.3.1 -> 10.0.3.10, UDP 4500 -> 4500, length 9 (payload 0xff), checksum 0xc3a8.
    const KEEPALIVE: &str = "4500001d00000000401160c60a0003010a00030a119411940009c3a8ff";

    /// scapy_esp_vectors.json "des-cbc_hmac-sha1-96_transport_udp4500" `full_packet`:
    /// 192.0.2.1 -> 198.51.100.2, UDP 4500 -> 4500 with a zero checksum, then ESP.
    const SCAPY_UDP4500: &str = "450000681002000040117e4cc0000201c633640211941194005400001000000\
        200000007fcfe92beaad5b71675f478aca0d9026845b1df051f065090fc9428feed2f2dcda31643c0a75e70\
        cf9123c9a765980f7c2d00d14289036210e9f1eb71f1bc47ea6d8491f7";

    fn v4_addrs(ip: &[u8]) -> (Ipv4Addr, Ipv4Addr) {
        let a = |o: usize| Ipv4Addr::new(ip[o], ip[o + 1], ip[o + 2], ip[o + 3]);
        (a(12), a(16))
    }

    #[test]
    fn real_ike_datagram() {
        let ip = hex(IKE_FRAME9);
        let (src, dst) = v4_addrs(&ip);
        let mut udp = ip[20..].to_vec();
        let p = UdpPacket::new_checked(&udp[..]).unwrap();
        assert_eq!(
            (p.src_port(), p.dst_port(), p.len(), p.checksum()),
            (500, 500, 68, 0x70a8)
        );
        assert_eq!(p.payload(), &ip[28..]);
        assert!(p.verify_checksum_v4(src, dst));
        assert!(!p.verify_checksum_v4(dst, Ipv4Addr::new(192, 168, 12, 3)));
        let repr = UdpRepr::parse(&p).unwrap();
        assert_eq!(
            repr,
            UdpRepr {
                src_port: 500,
                dst_port: 500
            }
        );
        assert_eq!(repr.buffer_len(p.payload().len()), udp.len());

        // Re-emit the header, then fill the checksum: identical bytes.
        let payload_len = udp.len() - 8;
        let mut out = udp.clone();
        out[..8].fill(0xee);
        assert_eq!(repr.emit(&mut out, payload_len), Ok(8));
        assert_eq!(&out[6..8], &[0, 0]);
        let mut q = UdpPacket::new_checked(&mut out[..]).unwrap();
        q.fill_checksum_v4(src, dst);
        assert_eq!(out, udp);

        // A flipped payload bit no longer verifies.
        udp[30] ^= 0x10;
        assert!(
            !UdpPacket::new_checked(&udp[..])
                .unwrap()
                .verify_checksum_v4(src, dst)
        );
    }

    #[test]
    fn odd_length_keepalive() {
        let ip = hex(KEEPALIVE);
        let (src, dst) = v4_addrs(&ip);
        let mut udp = ip[20..].to_vec();
        let p = UdpPacket::new_checked(&udp[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.len()), (4500, 4500, 9));
        assert_eq!(p.payload(), &[0xff]);
        assert!(p.verify_checksum_v4(src, dst));
        let mut p = UdpPacket::new_checked(&mut udp[..]).unwrap();
        p.set_checksum(0x1234);
        p.fill_checksum_v4(src, dst);
        assert_eq!(p.checksum(), 0xc3a8);
    }

    #[test]
    fn zero_checksum_over_ipv4_is_accepted() {
        let ip = hex(SCAPY_UDP4500);
        let (src, dst) = v4_addrs(&ip);
        let udp = &ip[20..];
        let p = UdpPacket::new_checked(udp).unwrap();
        assert_eq!(
            (p.src_port(), p.dst_port(), p.len(), p.checksum()),
            (4500, 4500, 84, 0)
        );
        assert!(p.verify_checksum_v4(src, dst));
        assert_eq!(&p.into_payload()[..4], &[0x10, 0, 0, 2]); // the ESP SPI
        let mut out = [0u8; 8];
        UdpRepr {
            src_port: 4500,
            dst_port: 4500,
        }
        .emit(&mut out, 76)
        .unwrap();
        assert_eq!(&out[..], &udp[..8]);
    }

    /// The naive reference: RFC 768 / RFC 8200 checksum over an explicit pseudo-header.
    fn reference_v6(src: Ipv6Addr, dst: Ipv6Addr, udp: &[u8]) -> u16 {
        let mut all = Vec::new();
        all.extend_from_slice(&src.octets());
        all.extend_from_slice(&dst.octets());
        all.extend_from_slice(&(udp.len() as u32).to_be_bytes());
        all.extend_from_slice(&[0, 0, 0, 17]);
        all.extend_from_slice(udp);
        let mut s: u32 = 0;
        for (i, b) in all.iter().enumerate() {
            s += if i % 2 == 0 {
                u32::from(*b) << 8
            } else {
                u32::from(*b)
            };
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    #[test]
    fn ipv6_checksum() {
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8:0:1::2".parse().unwrap();
        for payload_len in [0usize, 1, 4, 13, 100] {
            let mut buf = std::vec![0u8; 8 + payload_len];
            for (i, b) in buf[8..].iter_mut().enumerate() {
                *b = (i * 37 + 11) as u8;
            }
            let repr = UdpRepr {
                src_port: 4500,
                dst_port: 4501,
            };
            repr.emit(&mut buf, payload_len).unwrap();
            let mut p = UdpPacket::new_checked(&mut buf[..]).unwrap();
            assert!(!p.verify_checksum_v6(src, dst), "zero is invalid over IPv6");
            p.fill_checksum_v6(src, dst);
            assert!(p.verify_checksum_v6(src, dst));
            let ck = p.checksum();
            buf[6..8].fill(0);
            let expected = reference_v6(src, dst, &buf);
            assert_eq!(ck, if expected == 0 { 0xffff } else { expected });
        }
    }

    #[test]
    fn computed_zero_is_sent_as_ffff() {
        // Choose the last payload word so that the checksum comes out as zero.
        let src = Ipv4Addr::new(10, 0, 0, 1);
        let dst = Ipv4Addr::new(10, 0, 0, 2);
        let mut buf = [0u8; 10];
        UdpRepr {
            src_port: 1,
            dst_port: 2,
        }
        .emit(&mut buf, 2)
        .unwrap();
        let ck = {
            let mut p = UdpPacket::new_checked(&mut buf[..]).unwrap();
            p.fill_checksum_v4(src, dst);
            p.checksum()
        };
        // Adding the checksum value as data makes the sum 0xffff, i.e. the checksum 0.
        buf[6..8].fill(0);
        buf[8..10].copy_from_slice(&ck.to_be_bytes());
        let mut p = UdpPacket::new_checked(&mut buf[..]).unwrap();
        p.fill_checksum_v4(src, dst);
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum_v4(src, dst));
        let v6s = Ipv6Addr::LOCALHOST;
        p.fill_checksum_v6(v6s, v6s);
        assert!(p.verify_checksum_v6(v6s, v6s));
    }

    #[test]
    fn lengths() {
        let ip = hex(IKE_FRAME9);
        let mut udp = ip[20..].to_vec();
        for bad in 0..8u16 {
            udp[4..6].copy_from_slice(&bad.to_be_bytes());
            assert_eq!(UdpPacket::new_checked(&udp[..]), Err(WireError::BadLength));
        }
        udp[4..6].copy_from_slice(&69u16.to_be_bytes());
        assert_eq!(UdpPacket::new_checked(&udp[..]), Err(WireError::Truncated));
        // A shorter length field: the rest of the buffer is not payload.
        udp[4..6].copy_from_slice(&10u16.to_be_bytes());
        let p = UdpPacket::new_checked(&udp[..]).unwrap();
        assert_eq!(p.payload().len(), 2);

        let repr = UdpRepr {
            src_port: 1,
            dst_port: 2,
        };
        for n in 0..8 {
            let mut buf = std::vec![0u8; n];
            assert_eq!(repr.emit(&mut buf, 0), Err(WireError::BufferTooSmall));
        }
        let mut buf = [0u8; 8];
        assert_eq!(repr.emit(&mut buf, 65528), Err(WireError::BadLength));
        assert_eq!(repr.emit(&mut buf, usize::MAX), Err(WireError::BadLength));
        assert_eq!(repr.emit(&mut buf, 65527), Ok(8));
        // The header claims 65535 bytes: check_len refuses, accessors stay in bounds.
        let p = UdpPacket::new_unchecked(&buf[..]);
        assert_eq!(p.check_len(), Err(WireError::Truncated));
        assert_eq!(p.payload().len(), 0);
    }

    #[test]
    fn every_truncation_is_an_error() {
        for s in [IKE_FRAME9, KEEPALIVE, SCAPY_UDP4500] {
            let ip = hex(s);
            let udp = &ip[20..];
            for n in 0..udp.len() {
                assert_eq!(
                    UdpPacket::new_checked(&udp[..n]),
                    Err(WireError::Truncated),
                    "prefix {n}"
                );
            }
            assert!(UdpPacket::new_checked(udp).is_ok());
        }
    }
}
