//! IPv4 headers (RFC 791).
//!
//! [`Ipv4Packet`] reads and writes any header, options included; [`Ipv4Repr`] emits only
//! option-less 20-byte headers and, when parsing, skips options.

use core::net::Ipv4Addr;

use super::{WireError, checksum};

/// The length of an IPv4 header without options.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// The largest IPv4 header (IHL 15).
pub const MAX_HEADER_LEN: usize = 60;

mod field {
    use core::ops::Range;

    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC_ADDR: Range<usize> = 12..16;
    pub const DST_ADDR: Range<usize> = 16..20;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A read/write view of an IPv4 packet in a buffer.
///
/// The buffer may be longer than the packet's total length (Ethernet padding, say); the
/// extra bytes are ignored by [`payload`](Self::payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
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

    /// Check that the buffer holds a whole IPv4 packet, after which no accessor panics.
    ///
    /// # Errors
    ///
    /// [`WireError::Truncated`] if the buffer is shorter than 20 bytes or than the total
    /// length; [`WireError::BadVersion`] if the version is not 4;
    /// [`WireError::BadLength`] if the IHL is below 5 or the header is longer than the
    /// total length.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 4 {
            return Err(WireError::BadVersion);
        }
        let header_len = self.header_len();
        let total_len = usize::from(self.total_len());
        if header_len < HEADER_LEN || total_len < header_len {
            return Err(WireError::BadLength);
        }
        if len < total_len {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field (4 after [`check_len`](Self::check_len)).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header length in bytes (IHL × 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The type-of-service byte (DSCP and ECN).
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    /// The differentiated services code point (the top six bits of the TOS byte).
    pub fn dscp(&self) -> u8 {
        self.tos() >> 2
    }

    /// The explicit congestion notification bits (the low two bits of the TOS byte).
    pub fn ecn(&self) -> u8 {
        self.tos() & 0x03
    }

    /// The total length field: header plus payload, in bytes.
    pub fn total_len(&self) -> u16 {
        self.read_u16(field::LENGTH.start)
    }

    /// The identification field.
    pub fn ident(&self) -> u16 {
        self.read_u16(field::IDENT.start)
    }

    /// The Don't Fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.read_u16(field::FLG_OFF.start) & FLAG_DF != 0
    }

    /// The More Fragments flag.
    pub fn more_frags(&self) -> bool {
        self.read_u16(field::FLG_OFF.start) & FLAG_MF != 0
    }

    /// The fragment offset as carried, in 8-byte units.
    pub fn frag_offset_units(&self) -> u16 {
        self.read_u16(field::FLG_OFF.start) & OFFSET_MASK
    }

    /// The fragment offset in bytes (a multiple of 8, at most 65528).
    pub fn frag_offset_bytes(&self) -> u16 {
        self.frag_offset_units() * 8
    }

    /// Whether this packet is a fragment (More Fragments set or a nonzero offset).
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset_units() != 0
    }

    /// The time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol of the payload (see [`super::proto`]).
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// The header checksum field.
    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM.start)
    }

    /// The source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.read_octets(field::SRC_ADDR.start))
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.read_octets(field::DST_ADDR.start))
    }

    /// Whether the header checksum verifies.
    #[must_use]
    pub fn header_checksum_ok(&self) -> bool {
        checksum::checksum(self.header()) == 0
    }

    /// Verify the header checksum.
    ///
    /// # Errors
    ///
    /// [`WireError::BadChecksum`] if it does not verify.
    pub fn verify_checksum(&self) -> Result<(), WireError> {
        if self.header_checksum_ok() {
            Ok(())
        } else {
            Err(WireError::BadChecksum)
        }
    }

    /// The whole header, options included.
    pub fn header(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        &data[..self.header_end()]
    }

    /// The options: the bytes between the fixed header and the payload (often empty).
    pub fn options(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        let end = self.header_end();
        &data[HEADER_LEN.min(end)..end]
    }

    /// The payload: the bytes from the end of the header to the total length.
    pub fn payload(&self) -> &[u8] {
        let (start, end) = self.payload_range();
        &self.buffer.as_ref()[start..end]
    }

    fn read_u16(&self, at: usize) -> u16 {
        let data = self.buffer.as_ref();
        u16::from_be_bytes([data[at], data[at + 1]])
    }

    fn read_octets(&self, at: usize) -> [u8; 4] {
        let data = self.buffer.as_ref();
        [data[at], data[at + 1], data[at + 2], data[at + 3]]
    }

    // The ranges below are clamped to the buffer so that a setter that breaks the length
    // invariants (a larger total length, say) makes slices shorter rather than panicking.
    fn header_end(&self) -> usize {
        self.header_len().min(self.buffer.as_ref().len())
    }

    fn payload_range(&self) -> (usize, usize) {
        let end = usize::from(self.total_len()).min(self.buffer.as_ref().len());
        (self.header_len().min(end), end)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv4Packet<&'a T> {
    /// The payload, borrowed for the lifetime of the buffer rather than of the view.
    pub fn into_payload(self) -> &'a [u8] {
        let (start, end) = self.payload_range();
        &self.buffer.as_ref()[start..end]
    }
}

impl<'a, T: AsRef<[u8]> + AsMut<[u8]> + ?Sized> Ipv4Packet<&'a mut T> {
    /// The payload, mutably borrowed for the lifetime of the buffer.
    pub fn into_payload_mut(self) -> &'a mut [u8] {
        let (start, end) = self.payload_range();
        &mut self.buffer.as_mut()[start..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Set the version field (normally 4).
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (version << 4);
    }

    /// Set the header length in bytes (rounded down to a multiple of 4, at most 60).
    pub fn set_header_len(&mut self, len: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((len / 4) & 0x0f);
    }

    /// Set the type-of-service byte.
    pub fn set_tos(&mut self, tos: u8) {
        self.buffer.as_mut()[field::TOS] = tos;
    }

    /// Set the DSCP (six bits), keeping the ECN bits.
    pub fn set_dscp(&mut self, dscp: u8) {
        let tos = (dscp << 2) | self.ecn();
        self.set_tos(tos);
    }

    /// Set the ECN bits (two bits), keeping the DSCP.
    pub fn set_ecn(&mut self, ecn: u8) {
        let tos = (self.tos() & !0x03) | (ecn & 0x03);
        self.set_tos(tos);
    }

    /// Set the total length field.
    pub fn set_total_len(&mut self, len: u16) {
        self.write_u16(field::LENGTH.start, len);
    }

    /// Set the identification field.
    pub fn set_ident(&mut self, ident: u16) {
        self.write_u16(field::IDENT.start, ident);
    }

    /// Set or clear the Don't Fragment flag.
    pub fn set_dont_frag(&mut self, value: bool) {
        self.set_flag(FLAG_DF, value);
    }

    /// Set or clear the More Fragments flag.
    pub fn set_more_frags(&mut self, value: bool) {
        self.set_flag(FLAG_MF, value);
    }

    /// Set the fragment offset in 8-byte units (13 bits; higher bits are ignored).
    pub fn set_frag_offset_units(&mut self, units: u16) {
        let v = self.read_u16(field::FLG_OFF.start);
        self.write_u16(
            field::FLG_OFF.start,
            (v & !OFFSET_MASK) | (units & OFFSET_MASK),
        );
    }

    /// Set the fragment offset in bytes (rounded down to a multiple of 8).
    pub fn set_frag_offset_bytes(&mut self, bytes: u16) {
        self.set_frag_offset_units(bytes / 8);
    }

    /// Set the time to live.
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Set the protocol field.
    pub fn set_protocol(&mut self, protocol: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol;
    }

    /// Set the header checksum field as is.
    pub fn set_checksum(&mut self, checksum: u16) {
        self.write_u16(field::CHECKSUM.start, checksum);
    }

    /// Set the source address.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Set the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Compute the header checksum and write it (call after the last header change).
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let ck = checksum::checksum(self.header());
        self.set_checksum(ck);
    }

    /// The options, mutably.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_end();
        &mut self.buffer.as_mut()[HEADER_LEN.min(end)..end]
    }

    /// The payload, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = self.payload_range();
        &mut self.buffer.as_mut()[start..end]
    }

    fn write_u16(&mut self, at: usize, value: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&value.to_be_bytes());
    }

    fn set_flag(&mut self, flag: u16, value: bool) {
        let v = self.read_u16(field::FLG_OFF.start);
        self.write_u16(
            field::FLG_OFF.start,
            if value { v | flag } else { v & !flag },
        );
    }
}

/// A high-level description of an IPv4 header without options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol of the payload (see [`super::proto`]).
    pub protocol: u8,
    /// Payload length in bytes (total length minus header length, options excluded).
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// Type-of-service byte (DSCP and ECN).
    pub tos: u8,
    /// Identification.
    pub ident: u16,
    /// Don't Fragment flag.
    pub dont_frag: bool,
    /// More Fragments flag.
    pub more_frags: bool,
    /// Fragment offset **in bytes** (a multiple of 8, at most 65528).
    pub frag_offset: u16,
}

impl Ipv4Repr {
    /// The length of the header [`emit`](Self::emit) writes.
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// Parse a packet's header, skipping any options.
    ///
    /// # Errors
    ///
    /// Those of [`Ipv4Packet::check_len`], and [`WireError::BadChecksum`] if the header
    /// checksum does not verify.
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv4Packet<T>) -> Result<Self, WireError> {
        packet.check_len()?;
        packet.verify_checksum()?;
        Ok(Self {
            src: packet.src_addr(),
            dst: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: packet.payload().len(),
            ttl: packet.ttl(),
            tos: packet.tos(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
            more_frags: packet.more_frags(),
            frag_offset: packet.frag_offset_bytes(),
        })
    }

    /// The length of the emitted header: 20.
    #[must_use]
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// The length of the whole packet: header plus payload.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Write the 20-byte header, checksum included, into the start of `buf` and return its
    /// length. The payload (which follows) is not touched.
    ///
    /// # Errors
    ///
    /// [`WireError::BufferTooSmall`] if `buf` is shorter than 20 bytes;
    /// [`WireError::BadLength`] if the total length would exceed 65535;
    /// [`WireError::Malformed`] if `frag_offset` is not a multiple of 8.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let total_len = u16::try_from(self.buffer_len()).map_err(|_| WireError::BadLength)?;
        if self.frag_offset & 7 != 0 {
            return Err(WireError::Malformed);
        }
        let header = buf.get_mut(..HEADER_LEN).ok_or(WireError::BufferTooSmall)?;
        let mut packet = Ipv4Packet::new_unchecked(header);
        packet.set_version(4);
        packet.set_header_len(20);
        packet.set_tos(self.tos);
        packet.set_total_len(total_len);
        packet.set_ident(self.ident);
        packet.write_u16(field::FLG_OFF.start, 0);
        packet.set_dont_frag(self.dont_frag);
        packet.set_more_frags(self.more_frags);
        packet.set_frag_offset_bytes(self.frag_offset);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src);
        packet.set_dst_addr(self.dst);
        packet.fill_checksum();
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

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// scapy_esp_vectors.json, "des-cbc_hmac-sha1-96_transport", `full_packet`.
    const SCAPY_TRANSPORT: &str = "450000601001000040327e34c0000201c633640210000001000000044ad29ae1\
        ad1ec0a83a11e70ab68a3762977d2f6ff21fca5c3dae87d5fc5b4ad1a029e7484270c29d39a7c99ff49968\
        7b011c38dc57967a5e84e64e9ff6c250d4571fea7e";

    /// rfc3602_aes_cbc_esp.json, case 7 (tunnel mode), `full_ip_packet`.
    const RFC3602_CASE7: &str = "4500008c090500004032f91ec0a87b03c0a87bc80000876500000002f4e76524\
        4f6407adf13dc1380f673f37773b5241a4c449225e4f3ce5ed611b0c237ca96cf74a93013c1b0ea1a0cf70\
        f8e4ecaec78ac53aad7a0f022b859243c647752e94a859352b8a4d4d2decd136e5c177f132ad3fbfb2201a\
        c9904c74ee0a109e0ca1e4dfe9d5a100b842f1c22f0d";

    /// ipsec-ikev1-isakmp-main-mode.pcap frame 9: TOS 0xc0, TTL 255, UDP.
    const IKE_FRAME9: &str = "45c00058028d0000ff111ef4c0a80c01c0a80c0201f401f4004470a8e47a591fd0\
        57587fa00b8ef0902bb8ec08102001635a2e6a0000003c05750fa41560dbaca0027bdcdfe39a1e8a4890d34f\
        8fd05afb82064818e96728";

    #[test]
    fn parse_scapy_transport() {
        let bytes = hex(SCAPY_TRANSPORT);
        let p = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 96);
        assert_eq!(p.ident(), 0x1001);
        assert!(!p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), proto::ESP);
        assert_eq!(p.checksum(), 0x7e34);
        assert!(p.header_checksum_ok());
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(198, 51, 100, 2));
        assert!(p.options().is_empty());
        assert_eq!(p.payload(), &bytes[20..]);
        assert_eq!(&p.payload()[..4], &[0x10, 0, 0, 1]); // the ESP SPI
        assert_eq!(p.into_payload().len(), 76);
    }

    #[test]
    fn repr_round_trip_real_headers() {
        for s in [SCAPY_TRANSPORT, RFC3602_CASE7, IKE_FRAME9] {
            let bytes = hex(s);
            let p = Ipv4Packet::new_checked(&bytes[..]).unwrap();
            let repr = Ipv4Repr::parse(&p).unwrap();
            assert_eq!(repr.buffer_len(), bytes.len());
            let mut out = [0u8; 20];
            assert_eq!(repr.emit(&mut out), Ok(20));
            assert_eq!(&out[..], &bytes[..20]);
        }
        let bytes = hex(IKE_FRAME9);
        let repr = Ipv4Repr::parse(&Ipv4Packet::new_checked(&bytes[..]).unwrap()).unwrap();
        assert_eq!(
            repr,
            Ipv4Repr {
                src: Ipv4Addr::new(192, 168, 12, 1),
                dst: Ipv4Addr::new(192, 168, 12, 2),
                protocol: proto::UDP,
                payload_len: 68,
                ttl: 255,
                tos: 0xc0,
                ident: 0x028d,
                dont_frag: false,
                more_frags: false,
                frag_offset: 0,
            }
        );
        let p = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!((p.dscp(), p.ecn()), (0x30, 0));
    }

    #[test]
    fn emit_errors() {
        let repr = Ipv4Repr {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            protocol: proto::ESP,
            payload_len: 100,
            ttl: 64,
            tos: 0,
            ident: 7,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
        };
        for n in 0..20 {
            let mut buf = std::vec![0u8; n];
            assert_eq!(repr.emit(&mut buf), Err(WireError::BufferTooSmall));
        }
        let mut buf = [0u8; 20];
        let big = Ipv4Repr {
            payload_len: 65516,
            ..repr
        };
        assert_eq!(big.emit(&mut buf), Err(WireError::BadLength));
        let max = Ipv4Repr {
            payload_len: 65515,
            ..repr
        };
        assert_eq!(max.emit(&mut buf), Ok(20));
        let odd = Ipv4Repr {
            frag_offset: 12,
            ..repr
        };
        assert_eq!(odd.emit(&mut buf), Err(WireError::Malformed));
    }

    #[test]
    fn fragments_and_flags() {
        let repr = Ipv4Repr {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            protocol: proto::UDP,
            payload_len: 8,
            ttl: 1,
            tos: 0xb8,
            ident: 0xbeef,
            dont_frag: false,
            more_frags: true,
            frag_offset: 1480,
        };
        let mut buf = [0u8; 28];
        repr.emit(&mut buf).unwrap();
        assert_eq!(&buf[6..8], &[0x20, 185]); // MF | 1480 / 8
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert!(p.is_fragment());
        assert_eq!(p.frag_offset_units(), 185);
        assert_eq!(p.frag_offset_bytes(), 1480);
        assert_eq!(Ipv4Repr::parse(&p), Ok(repr));

        let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        p.set_more_frags(false);
        p.set_frag_offset_units(0);
        p.set_dont_frag(true);
        assert!(!p.is_fragment());
        assert_eq!(Ipv4Repr::parse(&p), Err(WireError::BadChecksum));
        p.fill_checksum();
        assert!(p.dont_frag());
        p.set_ttl(0);
        p.set_dscp(0x2e);
        p.set_ecn(0x03);
        p.fill_checksum();
        let r = Ipv4Repr::parse(&p).unwrap();
        assert_eq!(
            (r.tos, r.ttl, r.dont_frag, r.more_frags),
            (0xbb, 0, true, false)
        );
        // The reference checksum, computed independently of the packet code.
        let mut hdr = buf[..20].to_vec();
        hdr[10] = 0;
        hdr[11] = 0;
        assert_eq!(
            u16::from_be_bytes([buf[10], buf[11]]),
            checksum::checksum(&hdr)
        );
    }

    #[test]
    fn options_are_skipped() {
        // RFC 3602 case 7's outer header with a Router Alert option (94 04 00 00) spliced in.
        let orig = hex(RFC3602_CASE7);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&orig[..20]);
        bytes.extend_from_slice(&[0x94, 0x04, 0x00, 0x00]);
        bytes.extend_from_slice(&orig[20..]);
        bytes[0] = 0x46;
        let total = (bytes.len() as u16).to_be_bytes();
        bytes[2..4].copy_from_slice(&total);
        {
            let mut p = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
            assert!(!p.header_checksum_ok());
            p.fill_checksum();
            assert!(p.header_checksum_ok());
        }
        let p = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[0x94, 0x04, 0x00, 0x00]);
        assert_eq!(p.payload(), &orig[20..]);
        let repr = Ipv4Repr::parse(&p).unwrap();
        assert_eq!(repr.payload_len, orig.len() - 20);
        // Emitting drops the option.
        let mut out = std::vec![0u8; repr.buffer_len()];
        repr.emit(&mut out).unwrap();
        out[20..].copy_from_slice(&orig[20..]);
        assert_eq!(out, orig);
    }

    #[test]
    fn padding_after_total_len_is_ignored() {
        let mut bytes = hex(SCAPY_TRANSPORT);
        let len = bytes.len();
        bytes.extend_from_slice(&[0; 6]);
        let p = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.payload().len(), len - 20);
        assert_eq!(Ipv4Repr::parse(&p).unwrap().payload_len, len - 20);
    }

    #[test]
    fn bad_fields() {
        let good = hex(SCAPY_TRANSPORT);
        let mut b = good.clone();
        b[0] = 0x65;
        assert_eq!(Ipv4Packet::new_checked(&b[..]), Err(WireError::BadVersion));
        for ihl in 0..5u8 {
            b[0] = 0x40 | ihl;
            assert_eq!(Ipv4Packet::new_checked(&b[..]), Err(WireError::BadLength));
        }
        // Header (60) longer than the total length (40).
        let mut b = good.clone();
        b[0] = 0x4f;
        b[2..4].copy_from_slice(&40u16.to_be_bytes());
        assert_eq!(Ipv4Packet::new_checked(&b[..]), Err(WireError::BadLength));
        // Total length beyond the buffer.
        let mut b = good.clone();
        b[2..4].copy_from_slice(&97u16.to_be_bytes());
        assert_eq!(Ipv4Packet::new_checked(&b[..]), Err(WireError::Truncated));
        // Corrupt one byte: the checksum catches it.
        let mut b = good;
        b[8] ^= 1;
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(!p.header_checksum_ok());
        assert_eq!(p.verify_checksum(), Err(WireError::BadChecksum));
        assert_eq!(Ipv4Repr::parse(&p), Err(WireError::BadChecksum));
    }

    #[test]
    fn setters_that_break_lengths_do_not_panic() {
        let mut b = hex(SCAPY_TRANSPORT);
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_total_len(u16::MAX);
        assert_eq!(p.payload().len(), 76);
        p.set_header_len(60);
        p.set_total_len(30);
        assert_eq!(p.payload().len(), 0);
        assert_eq!(p.options().len(), 40);
        p.fill_checksum();
        assert_eq!(p.check_len(), Err(WireError::BadLength));
        assert_eq!(p.into_payload_mut().len(), 0);
    }

    #[test]
    fn every_truncation_is_an_error() {
        for s in [SCAPY_TRANSPORT, RFC3602_CASE7, IKE_FRAME9] {
            let bytes = hex(s);
            for n in 0..bytes.len() {
                assert_eq!(
                    Ipv4Packet::new_checked(&bytes[..n]),
                    Err(WireError::Truncated),
                    "prefix {n}"
                );
            }
            assert!(Ipv4Packet::new_checked(&bytes[..]).is_ok());
        }
    }

    #[test]
    fn arbitrary_headers_never_panic() {
        // Every value of the first four bytes (version/IHL, TOS ignored, total length)
        // over a buffer of every length up to 64: check_len either fails or all
        // accessors work.
        let mut buf = [0u8; 64];
        for len in 0..=buf.len() {
            for ver_ihl in 0..=255u8 {
                for total in [0u16, 19, 20, 24, 40, 60, 63, 64, 65, 0xffff] {
                    buf[0] = ver_ihl;
                    buf[2..4].copy_from_slice(&total.to_be_bytes());
                    if let Ok(p) = Ipv4Packet::new_checked(&buf[..len]) {
                        assert!(p.header_len() <= usize::from(p.total_len()));
                        let _ = (p.options(), p.payload(), p.header_checksum_ok());
                        let _ = Ipv4Repr::parse(&p);
                    }
                }
            }
        }
    }
}
