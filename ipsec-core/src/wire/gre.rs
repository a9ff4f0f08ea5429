//! GRE headers: RFC 2784 (checksum, version 0) with the RFC 2890 key and sequence number
//! extensions.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |C| |K|S| Reserved0       | Ver |         Protocol Type         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |      Checksum (optional)      |       Reserved1 (Optional)    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Key (optional)                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Sequence Number (Optional)                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! What [`GrePacket::check_len`] rejects, precisely:
//!
//! * a version (bits 13-15) other than 0: [`WireError::BadVersion`]. This rejects the
//!   enhanced GRE of PPTP (RFC 2637, version 1);
//! * bit 1 (RFC 1701 Routing Present), bit 4 (RFC 1701 Strict Source Route) or bit 5 (the
//!   top bit of RFC 1701's Recursion Control) set: [`WireError::Malformed`]. RFC 2784 §2.3
//!   says a receiver MUST discard a packet where any of bits 1-5 are non-zero unless it
//!   implements RFC 1701; RFC 2890 then gives bits 2 and 3 their meaning (Key and
//!   Sequence Number Present), which leaves bits 1, 4 and 5;
//! * a buffer shorter than the header its flags announce: [`WireError::Truncated`].
//!
//! Bits 6-12 are **not** rejected: RFC 2784 §2.3 says they "MUST be sent as zero and MUST
//! be ignored on receipt" (so a packet with them set is accepted, and [`GreRepr::emit`]
//! writes them as zero). Reserved1 is likewise ignored on receipt and sent as zero.
//!
//! GRE has no length field: the payload is the rest of the buffer, so the caller slices
//! the GRE packet out of its delivery header (whose length is authoritative). The checksum,
//! when present, covers the GRE header and the payload; [`GreRepr::parse`] and
//! [`GrePacket::verify_checksum`] check it.

use super::{WireError, checksum};

/// Protocol Type values (EtherTypes) this library names. Any other value is carried as
/// opaque payload.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// Transparent Ethernet bridging (RFC 1701).
    pub const TRANSPARENT_ETHERNET: u16 = 0x6558;
    /// PPP (PPTP's enhanced GRE, RFC 2637).
    pub const PPP: u16 = 0x880b;
    /// Protocol type 0: what the innermost GRE header of a Cisco-style keepalive carries.
    pub const KEEPALIVE: u16 = 0x0000;
}

/// The length of a GRE header without optional fields.
pub const BASE_HEADER_LEN: usize = field::PROTOCOL.end;

/// The length of a GRE header with checksum, key and sequence number.
pub const MAX_HEADER_LEN: usize = BASE_HEADER_LEN + 12;

mod field {
    use core::ops::Range;

    pub const FLAGS_VER: Range<usize> = 0..2;
    pub const PROTOCOL: Range<usize> = 2..4;
}

/// Checksum Present (bit 0).
const FLAG_C: u16 = 0x8000;
/// Key Present (bit 2, RFC 2890).
const FLAG_K: u16 = 0x2000;
/// Sequence Number Present (bit 3, RFC 2890).
const FLAG_S: u16 = 0x1000;
/// Bits 1, 4 and 5: RFC 1701 routing, strict source route and the top recursion bit. A
/// version 0 receiver that does not implement RFC 1701 discards packets with these set.
const MUST_DISCARD: u16 = 0x4000 | 0x0800 | 0x0400;
/// Bits 13-15.
const VERSION_MASK: u16 = 0x0007;

/// A read/write view of a GRE packet (header and payload) in a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> GrePacket<T> {
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

    /// Check that the buffer holds a whole version-0 GRE header, after which no accessor
    /// panics. The checksum is not verified here (see [`verify_checksum`]).
    ///
    /// # Errors
    ///
    /// [`WireError::Truncated`] if the buffer is shorter than 4 bytes or than the header
    /// the flags announce; [`WireError::BadVersion`] if the version is not 0;
    /// [`WireError::Malformed`] if bit 1, 4 or 5 of Reserved0 is set (see the module
    /// docs).
    ///
    /// [`verify_checksum`]: Self::verify_checksum
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < BASE_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 0 {
            return Err(WireError::BadVersion);
        }
        if self.flags_ver() & MUST_DISCARD != 0 {
            return Err(WireError::Malformed);
        }
        if len < self.header_len() {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn flags_ver(&self) -> u16 {
        self.read_u16(field::FLAGS_VER.start)
    }

    /// The version (bits 13-15; 0 after [`check_len`](Self::check_len)).
    pub fn version(&self) -> u8 {
        // Three bits: always fits.
        u8::try_from(self.flags_ver() & VERSION_MASK).unwrap_or(u8::MAX)
    }

    /// The Reserved0 bits (1-12) as they stand in the first 16-bit word, the C, K and S
    /// bits and the version masked out. Bits 6-12 may be non-zero in an accepted packet.
    pub fn reserved0(&self) -> u16 {
        self.flags_ver() & !(FLAG_C | FLAG_K | FLAG_S | VERSION_MASK)
    }

    /// Whether the Checksum Present bit is set.
    pub fn checksum_present(&self) -> bool {
        self.flags_ver() & FLAG_C != 0
    }

    /// Whether the Key Present bit is set (RFC 2890).
    pub fn key_present(&self) -> bool {
        self.flags_ver() & FLAG_K != 0
    }

    /// Whether the Sequence Number Present bit is set (RFC 2890).
    pub fn seq_present(&self) -> bool {
        self.flags_ver() & FLAG_S != 0
    }

    /// The Protocol Type: the EtherType of the payload (see [`ethertype`]).
    pub fn protocol_type(&self) -> u16 {
        self.read_u16(field::PROTOCOL.start)
    }

    /// The header length the flags announce: 4, plus 4 for each of checksum, key and
    /// sequence number.
    pub fn header_len(&self) -> usize {
        BASE_HEADER_LEN
            + 4 * usize::from(self.checksum_present())
            + 4 * usize::from(self.key_present())
            + 4 * usize::from(self.seq_present())
    }

    fn checksum_at(&self) -> Option<usize> {
        self.checksum_present().then_some(BASE_HEADER_LEN)
    }

    fn key_at(&self) -> Option<usize> {
        self.key_present()
            .then_some(BASE_HEADER_LEN + 4 * usize::from(self.checksum_present()))
    }

    fn seq_at(&self) -> Option<usize> {
        self.seq_present().then_some(
            BASE_HEADER_LEN
                + 4 * usize::from(self.checksum_present())
                + 4 * usize::from(self.key_present()),
        )
    }

    /// The checksum field, if present.
    pub fn checksum(&self) -> Option<u16> {
        self.checksum_at().and_then(|at| self.get_u16(at))
    }

    /// The Reserved1 field (after the checksum), if present. Ignored on receipt.
    pub fn reserved1(&self) -> Option<u16> {
        self.checksum_at().and_then(|at| self.get_u16(at + 2))
    }

    /// The key, if present (RFC 2890 §2.1).
    pub fn key(&self) -> Option<u32> {
        self.key_at().and_then(|at| self.get_u32(at))
    }

    /// The sequence number, if present (RFC 2890 §2.2).
    pub fn seq(&self) -> Option<u32> {
        self.seq_at().and_then(|at| self.get_u32(at))
    }

    /// Whether the checksum verifies: true when no checksum is present, else the
    /// ones' complement sum over the header (checksum field included) and the payload
    /// must be 0xffff (RFC 2784 §2.5).
    #[must_use]
    pub fn checksum_ok(&self) -> bool {
        !self.checksum_present() || checksum::checksum(self.buffer.as_ref()) == 0
    }

    /// Verify the checksum, if present.
    ///
    /// # Errors
    ///
    /// [`WireError::BadChecksum`] if a checksum is present and does not verify.
    pub fn verify_checksum(&self) -> Result<(), WireError> {
        if self.checksum_ok() {
            Ok(())
        } else {
            Err(WireError::BadChecksum)
        }
    }

    /// The header, optional fields included.
    pub fn header(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        &data[..self.header_end()]
    }

    /// The payload: everything after the header.
    pub fn payload(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        &data[self.header_end()..]
    }

    fn read_u16(&self, at: usize) -> u16 {
        let data = self.buffer.as_ref();
        u16::from_be_bytes([data[at], data[at + 1]])
    }

    // Optional fields are read through `get` so that a flag setter that lengthens the
    // header past the buffer makes them `None` rather than panicking.
    fn get_u16(&self, at: usize) -> Option<u16> {
        match self.buffer.as_ref().get(at..at + 2)? {
            &[a, b] => Some(u16::from_be_bytes([a, b])),
            _ => None,
        }
    }

    fn get_u32(&self, at: usize) -> Option<u32> {
        match self.buffer.as_ref().get(at..at + 4)? {
            &[a, b, c, d] => Some(u32::from_be_bytes([a, b, c, d])),
            _ => None,
        }
    }

    fn header_end(&self) -> usize {
        self.header_len().min(self.buffer.as_ref().len())
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> GrePacket<&'a T> {
    /// The payload, borrowed for the lifetime of the buffer rather than of the view.
    pub fn into_payload(self) -> &'a [u8] {
        let start = self.header_end();
        &self.buffer.as_ref()[start..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> GrePacket<T> {
    /// Write the first word: the C, K and S bits, Reserved0 zero and version 0. This
    /// changes where the optional fields lie; set them afterwards.
    pub fn set_flags(&mut self, checksum: bool, key: bool, seq: bool) {
        let mut v = 0;
        if checksum {
            v |= FLAG_C;
        }
        if key {
            v |= FLAG_K;
        }
        if seq {
            v |= FLAG_S;
        }
        self.write_u16(field::FLAGS_VER.start, v);
    }

    /// Set the Protocol Type.
    pub fn set_protocol_type(&mut self, value: u16) {
        self.write_u16(field::PROTOCOL.start, value);
    }

    /// Set the checksum field as is (no-op without the C bit).
    pub fn set_checksum(&mut self, value: u16) {
        if let Some(at) = self.checksum_at() {
            self.put(at, &value.to_be_bytes());
        }
    }

    /// Set Reserved1 (no-op without the C bit). It should stay zero.
    pub fn set_reserved1(&mut self, value: u16) {
        if let Some(at) = self.checksum_at() {
            self.put(at + 2, &value.to_be_bytes());
        }
    }

    /// Set the key (no-op without the K bit).
    pub fn set_key(&mut self, key: u32) {
        if let Some(at) = self.key_at() {
            self.put(at, &key.to_be_bytes());
        }
    }

    /// Set the sequence number (no-op without the S bit).
    pub fn set_seq(&mut self, seq: u32) {
        if let Some(at) = self.seq_at() {
            self.put(at, &seq.to_be_bytes());
        }
    }

    /// Compute the checksum over the whole buffer (header and payload) and write it; a
    /// no-op without the C bit. Call after the payload is in place.
    pub fn fill_checksum(&mut self) {
        if self.checksum_present() {
            self.set_checksum(0);
            let ck = checksum::checksum(self.buffer.as_ref());
            self.set_checksum(ck);
        }
    }

    /// The payload, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_end();
        &mut self.buffer.as_mut()[start..]
    }

    fn write_u16(&mut self, at: usize, value: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&value.to_be_bytes());
    }

    fn put(&mut self, at: usize, bytes: &[u8]) {
        if let Some(dst) = self.buffer.as_mut().get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    }
}

/// A high-level description of a GRE header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GreRepr {
    /// The Protocol Type of the payload (see [`ethertype`]).
    pub protocol: u16,
    /// Whether the header carries a checksum (C bit).
    pub checksum: bool,
    /// The key (K bit), RFC 2890 §2.1.
    pub key: Option<u32>,
    /// The sequence number (S bit), RFC 2890 §2.2.
    pub seq: Option<u32>,
}

impl GreRepr {
    /// A header with no optional fields.
    #[must_use]
    pub const fn plain(protocol: u16) -> Self {
        Self {
            protocol,
            checksum: false,
            key: None,
            seq: None,
        }
    }

    /// Parse a packet's header, verifying the checksum if there is one.
    ///
    /// # Errors
    ///
    /// Those of [`GrePacket::check_len`], and [`WireError::BadChecksum`] if a checksum is
    /// present and does not verify.
    pub fn parse<T: AsRef<[u8]>>(packet: &GrePacket<T>) -> Result<Self, WireError> {
        packet.check_len()?;
        packet.verify_checksum()?;
        Ok(Self {
            protocol: packet.protocol_type(),
            checksum: packet.checksum_present(),
            key: packet.key(),
            seq: packet.seq(),
        })
    }

    /// The length of the header: 4 to 16 bytes.
    #[must_use]
    pub const fn header_len(&self) -> usize {
        let mut len = BASE_HEADER_LEN;
        if self.checksum {
            len += 4;
        }
        if self.key.is_some() {
            len += 4;
        }
        if self.seq.is_some() {
            len += 4;
        }
        len
    }

    /// The length of a GRE packet carrying `payload_len` bytes.
    #[must_use]
    pub const fn buffer_len(&self, payload_len: usize) -> usize {
        self.header_len().saturating_add(payload_len)
    }

    /// Write the header into the start of `buf`, in front of a payload of `payload_len`
    /// bytes that must already be in place at `buf[header_len..]` when a checksum is to
    /// be computed. Returns the header length. Reserved0 and Reserved1 are written as zero.
    ///
    /// # Errors
    ///
    /// [`WireError::BufferTooSmall`] if `buf` is shorter than
    /// [`buffer_len(payload_len)`](Self::buffer_len).
    pub fn emit(&self, buf: &mut [u8], payload_len: usize) -> Result<usize, WireError> {
        let header_len = self.header_len();
        let packet = buf
            .get_mut(..self.buffer_len(payload_len))
            .ok_or(WireError::BufferTooSmall)?;
        let mut packet = GrePacket::new_unchecked(packet);
        packet.set_flags(self.checksum, self.key.is_some(), self.seq.is_some());
        packet.set_protocol_type(self.protocol);
        packet.set_reserved1(0);
        if let Some(key) = self.key {
            packet.set_key(key);
        }
        if let Some(seq) = self.seq {
            packet.set_seq(seq);
        }
        packet.fill_checksum();
        Ok(header_len)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::wire::ipv4::Ipv4Packet;
    use std::vec::Vec;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// The GRE part of an IPv4 delivery packet (option-less header).
    fn gre_of(ip: &[u8]) -> Vec<u8> {
        Ipv4Packet::new_checked(ip).unwrap().payload().to_vec()
    }

    // natt_dpd_gre_reference.json `gre.frames_hex` (= captures/synthetic_gre_rfc2784_rfc2890_
    // keepalive.pcap without Ethernet): 203.0.113.1 -> 203.0.113.2, inner ICMP echo
    // 172.16.1.1 -> 172.16.2.1 with payload "gre-test-payload".
    const PLAIN: &str = "4500004400010000402f0286cb007101cb007102000008004500002c0007000040011fa8ac10\
        0101ac1002010800e6c6000100016772652d746573742d7061796c6f6164";
    const KEY_SEQ1: &str = "4500004c00020000402f027dcb007101cb0071023000080000001234000000014500002c0\
        007000040011fa8ac100101ac1002010800e6c6000100016772652d746573742d7061796c6f6164";
    const KEY_SEQ2: &str = "4500004c00030000402f027ccb007101cb0071023000080000001234000000024500002c0\
        007000040011fa8ac100101ac1002010800e6c6000100016772652d746573742d7061796c6f6164";
    const CHECKSUM: &str = "4500004800040000402f027fcb007101cb0071028000080077ff00004500002c0007000\
        040011fa8ac100101ac1002010800e6c6000100016772652d746573742d7061796c6f6164";
    const KEEPALIVE: &str = "4500003000060000ff2f4394cb007101cb007102000008004500001800050000ff2f43adc\
        b007102cb00710100000000";
    const KEEPALIVE_RETURNED: &str = "4500001800050000ff2f43adcb007102cb00710100000000";

    /// captures/gre-sample.pcap frame 1 (Ethernet stripped): 172.27.1.66 -> 66.59.109.137,
    /// plain GRE carrying an ICMP echo request 66.59.111.190 -> 172.28.2.3.
    const SAMPLE1: &str = "4500006c00004000ff2f1e41ac1b0142423b6d890000080045000054000040004001da9042\
        3b6fbeac1c0203080046c9cb6801007072e63e97190c0008090a0b0c0d0e0f101112131415161718191a1b1c1d\
        1e1f202122232425262728292a2b2c2d2e2f3031323334353637";

    /// captures/gre-pptp.pcap frame 1, from the IPv4 header on (Ethernet, VLAN and an
    /// IPv6-in-IPv6 outer layer stripped): enhanced GRE version 1, flags 0x3081 (K, S, A),
    /// protocol 0x880b (PPP).
    const PPTP: &str = "4500008b8caf0000402f75fe100000c8c034a69a3081880b0067178000068fb100083a76ff03\
        002145000063000040003c115667ac102c03080808089f400035004f2d23a62c010000010000000000003578\
        71742d6465746563742d6d6f6465322d39373731326538382d313637612d343562392d393365652d3931333134\
        3065373636373800001c0001";

    /// captures/gre-within-gre.pcap frame 4: GRE in GRE, the innermost packet a RIPv2
    /// response from 3.3.3.1 to the multicast group 224.0.0.9.
    const NESTED_RIP: &str = "450000a000004000ff2f011b48cd3646566aa4960000080045c0008827e20000fe2f678d0a\
        0a0b020a0a0d020000080045c00070000000000211d1b003030301e000000902080208005ca2dc02020000000\
        2000009090900ffffff000000000000000002000200000a0a0b00fffffffc000000000000000100020000\
        0a0a1900ffffff0000000000000000010002000014141400fffffffc0000000000000001";

    /// captures/gre-syslog.pcap frame 1 (Ethernet and VLAN stripped): GRE carrying UDP
    /// syslog 2.2.2.3:12345 -> 2.2.2.2:514.
    const SYSLOG: &str = "4500003800010000402f76920101010201010101000008004500002000010000401172c4020\
        202030202020230390202000c36f04556494c";

    #[test]
    fn plain_frame() {
        let gre = gre_of(&hex(PLAIN));
        let p = GrePacket::new_checked(&gre[..]).unwrap();
        assert_eq!(p.version(), 0);
        assert!(!p.checksum_present() && !p.key_present() && !p.seq_present());
        assert_eq!(p.protocol_type(), ethertype::IPV4);
        assert_eq!(p.header_len(), 4);
        assert_eq!((p.checksum(), p.key(), p.seq()), (None, None, None));
        assert_eq!(&p.payload()[..4], &hex("4500002c")[..]);
        let repr = GreRepr::parse(&p).unwrap();
        assert_eq!(repr, GreRepr::plain(ethertype::IPV4));
        let mut out = std::vec![0u8; repr.buffer_len(p.payload().len())];
        out[4..].copy_from_slice(p.payload());
        assert_eq!(repr.emit(&mut out, p.payload().len()), Ok(4));
        assert_eq!(out, gre);
    }

    #[test]
    fn key_and_sequence_frames() {
        for (frame, seq) in [(KEY_SEQ1, 1), (KEY_SEQ2, 2)] {
            let gre = gre_of(&hex(frame));
            let p = GrePacket::new_checked(&gre[..]).unwrap();
            assert!(p.key_present() && p.seq_present() && !p.checksum_present());
            assert_eq!(p.header_len(), 12);
            assert_eq!(p.key(), Some(0x1234));
            assert_eq!(p.seq(), Some(seq));
            let repr = GreRepr::parse(&p).unwrap();
            assert_eq!(
                repr,
                GreRepr {
                    protocol: ethertype::IPV4,
                    checksum: false,
                    key: Some(0x1234),
                    seq: Some(seq)
                }
            );
            let mut out = std::vec![0u8; gre.len()];
            out[12..].copy_from_slice(p.payload());
            repr.emit(&mut out, p.payload().len()).unwrap();
            assert_eq!(out, gre);
        }
    }

    #[test]
    fn checksum_frame() {
        let gre = gre_of(&hex(CHECKSUM));
        let p = GrePacket::new_checked(&gre[..]).unwrap();
        assert!(p.checksum_present());
        assert_eq!(p.checksum(), Some(0x77ff));
        assert_eq!(p.reserved1(), Some(0));
        assert_eq!(p.header_len(), 8);
        assert!(p.checksum_ok());
        let repr = GreRepr::parse(&p).unwrap();
        assert!(repr.checksum);
        // Emitting recomputes the same checksum.
        let mut out = std::vec![0u8; gre.len()];
        out[8..].copy_from_slice(p.payload());
        repr.emit(&mut out, p.payload().len()).unwrap();
        assert_eq!(out, gre);
        // Any flipped bit in header or payload breaks it.
        for i in 0..gre.len() {
            let mut b = gre.clone();
            b[i] ^= 0x10;
            let Ok(p) = GrePacket::new_checked(&b[..]) else {
                continue; // flags changed: another error
            };
            if p.checksum_present() {
                assert_eq!(GreRepr::parse(&p), Err(WireError::BadChecksum), "byte {i}");
            }
        }
    }

    #[test]
    fn keepalive_frames() {
        // The request: a plain GRE header whose payload is an IPv4 packet from the peer
        // back to the sender, itself carrying GRE with protocol type 0.
        let gre = gre_of(&hex(KEEPALIVE));
        let p = GrePacket::new_checked(&gre[..]).unwrap();
        assert_eq!(p.protocol_type(), ethertype::IPV4);
        assert_eq!(p.payload(), &hex(KEEPALIVE_RETURNED)[..]);
        let inner = Ipv4Packet::new_checked(p.payload()).unwrap();
        assert_eq!(inner.protocol(), crate::wire::proto::GRE);
        assert_eq!(inner.src_addr().octets(), [203, 0, 113, 2]);
        assert_eq!(inner.dst_addr().octets(), [203, 0, 113, 1]);
        let ka = GrePacket::new_checked(inner.payload()).unwrap();
        assert_eq!(ka.protocol_type(), ethertype::KEEPALIVE);
        assert_eq!(ka.header_len(), 4);
        assert!(ka.payload().is_empty());
        let mut out = [0u8; 4];
        GreRepr::plain(ethertype::KEEPALIVE)
            .emit(&mut out, 0)
            .unwrap();
        assert_eq!(out, [0; 4]);
    }

    #[test]
    fn real_captures() {
        let gre = gre_of(&hex(SAMPLE1));
        let p = GrePacket::new_checked(&gre[..]).unwrap();
        assert_eq!(GreRepr::parse(&p), Ok(GreRepr::plain(ethertype::IPV4)));
        assert_eq!(p.payload().len(), 0x54);

        let gre = gre_of(&hex(SYSLOG));
        let p = GrePacket::new_checked(&gre[..]).unwrap();
        let inner = Ipv4Packet::new_checked(p.payload()).unwrap();
        assert_eq!(inner.protocol(), crate::wire::proto::UDP);

        // Two GRE layers, then multicast RIP.
        let gre = gre_of(&hex(NESTED_RIP));
        let outer = GrePacket::new_checked(&gre[..]).unwrap();
        assert_eq!(outer.protocol_type(), ethertype::IPV4);
        let mid = Ipv4Packet::new_checked(outer.payload()).unwrap();
        assert_eq!(mid.protocol(), crate::wire::proto::GRE);
        let inner_gre = GrePacket::new_checked(mid.payload()).unwrap();
        let rip = Ipv4Packet::new_checked(inner_gre.payload()).unwrap();
        assert_eq!(rip.dst_addr().octets(), [224, 0, 0, 9]);
        assert_eq!(rip.protocol(), crate::wire::proto::UDP);
    }

    #[test]
    fn pptp_version_1_is_rejected() {
        let gre = gre_of(&hex(PPTP));
        assert_eq!(gre[..4], hex("3081880b")[..]);
        assert_eq!(GrePacket::new_checked(&gre[..]), Err(WireError::BadVersion));
        // Every other non-zero version too.
        for v in 1..8u8 {
            let b = [0x00, v, 0x08, 0x00];
            assert_eq!(GrePacket::new_checked(&b[..]), Err(WireError::BadVersion));
        }
    }

    #[test]
    fn reserved0_bits() {
        let payload = [0x45u8; 8];
        for bit in 1..=12u16 {
            let word = 0x8000u16 >> bit;
            let mut b = std::vec![0u8; 4 + 12 + payload.len()];
            b[..2].copy_from_slice(&word.to_be_bytes());
            b[2..4].copy_from_slice(&0x0800u16.to_be_bytes());
            let r = GrePacket::new_checked(&b[..]);
            match bit {
                // R, strict source route, top recursion bit: discarded (RFC 2784 §2.3).
                1 | 4 | 5 => assert_eq!(r, Err(WireError::Malformed), "bit {bit}"),
                // K and S: RFC 2890.
                2 | 3 => assert!(r.is_ok(), "bit {bit}"),
                // 6-12: ignored on receipt.
                _ => {
                    let p = r.unwrap();
                    assert_eq!(p.reserved0(), word);
                    assert_eq!(p.header_len(), 4);
                    assert!(GreRepr::parse(&p).is_ok());
                }
            }
        }
    }

    #[test]
    fn every_truncation_of_the_header_is_an_error() {
        // Header with C, K and S: 16 bytes; every shorter prefix is truncated.
        let repr = GreRepr {
            protocol: ethertype::IPV6,
            checksum: true,
            key: Some(0xdead_beef),
            seq: Some(7),
        };
        let mut b = std::vec![0u8; 16 + 3];
        b[16..].copy_from_slice(&[1, 2, 3]);
        repr.emit(&mut b, 3).unwrap();
        for n in 0..16 {
            assert_eq!(
                GrePacket::new_checked(&b[..n]),
                Err(WireError::Truncated),
                "prefix {n}"
            );
        }
        // A truncated payload under a checksum fails the checksum.
        for n in 16..b.len() {
            let p = GrePacket::new_checked(&b[..n]).unwrap();
            assert_eq!(
                GreRepr::parse(&p),
                Err(WireError::BadChecksum),
                "prefix {n}"
            );
        }
        assert_eq!(
            GreRepr::parse(&GrePacket::new_checked(&b[..]).unwrap()),
            Ok(repr)
        );
        for s in [PLAIN, KEY_SEQ1, CHECKSUM, KEEPALIVE] {
            let gre = gre_of(&hex(s));
            let hl = GrePacket::new_checked(&gre[..]).unwrap().header_len();
            for n in 0..hl {
                assert_eq!(GrePacket::new_checked(&gre[..n]), Err(WireError::Truncated));
            }
        }
    }

    #[test]
    fn emit_needs_room() {
        let repr = GreRepr {
            protocol: ethertype::IPV4,
            checksum: false,
            key: Some(1),
            seq: None,
        };
        let mut b = [0u8; 10];
        assert_eq!(repr.emit(&mut b, 3), Err(WireError::BufferTooSmall));
        assert_eq!(repr.emit(&mut b, 2), Ok(8));
    }

    #[test]
    fn setters_that_break_lengths_do_not_panic() {
        let mut b = [0u8; 6];
        let mut p = GrePacket::new_checked(&mut b[..]).unwrap();
        p.set_flags(true, true, true);
        p.set_key(5);
        p.set_seq(6);
        p.set_checksum(7);
        p.fill_checksum();
        assert_eq!((p.key(), p.seq()), (None, None));
        // The checksum field fits in the 6 bytes; Reserved1 does not.
        assert!(p.checksum().is_some());
        assert_eq!(p.reserved1(), None);
        assert!(p.payload().is_empty());
        assert!(p.payload_mut().is_empty());
        assert_eq!(p.check_len(), Err(WireError::Truncated));
    }

    #[test]
    fn arbitrary_headers_never_panic() {
        let mut buf = [0u8; 24];
        for len in 0..=buf.len() {
            for hi in 0..=255u8 {
                for lo in [0u8, 1, 7, 0x08, 0xf8, 0xff] {
                    buf[0] = hi;
                    buf[1] = lo;
                    if let Ok(p) = GrePacket::new_checked(&buf[..len]) {
                        assert!(p.header_len() <= len);
                        let _ = (p.checksum(), p.key(), p.seq(), p.payload(), p.reserved1());
                        let _ = GreRepr::parse(&p);
                    }
                }
            }
        }
    }
}
