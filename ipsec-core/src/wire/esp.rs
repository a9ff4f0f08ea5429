//! The ESP header (RFC 4303 §2): SPI and the low 32 bits of the sequence number.
//!
//! Everything after those 8 bytes (IV, ciphertext, padding, pad length, next header and
//! ICV) depends on the SA's transform and is interpreted by the ESP layer, not here.

use super::WireError;

/// The length of the ESP header: SPI and sequence number.
pub const HEADER_LEN: usize = field::SEQ.end;

mod field {
    use core::ops::Range;

    pub const SPI: Range<usize> = 0..4;
    pub const SEQ: Range<usize> = 4..8;
}

/// A read/write view of an ESP packet (from the SPI to the end of the ICV) in a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EspPacket<T> {
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

    /// Check that the buffer holds the 8-byte header, after which no accessor panics.
    ///
    /// Whether the rest is long enough for an IV and an ICV depends on the SA; the ESP
    /// layer checks that.
    ///
    /// # Errors
    ///
    /// [`WireError::Truncated`] if the buffer is shorter than 8 bytes.
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

    fn read_u32(&self, at: usize) -> u32 {
        let d = self.buffer.as_ref();
        u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
    }

    /// The Security Parameters Index.
    pub fn spi(&self) -> u32 {
        self.read_u32(field::SPI.start)
    }

    /// The sequence number as carried: its low 32 bits when ESN is in use.
    pub fn seq(&self) -> u32 {
        self.read_u32(field::SEQ.start)
    }

    /// The 8-byte header (SPI | sequence number), the start of what the ICV covers.
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..HEADER_LEN]
    }

    /// Everything after the header: IV | ciphertext | ICV.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> EspPacket<&'a T> {
    /// The payload, borrowed for the lifetime of the buffer rather than of the view.
    pub fn into_payload(self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<'a, T: AsRef<[u8]> + AsMut<[u8]> + ?Sized> EspPacket<&'a mut T> {
    /// The payload, mutably borrowed for the lifetime of the buffer (to decrypt in place).
    pub fn into_payload_mut(self) -> &'a mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EspPacket<T> {
    /// Set the SPI.
    pub fn set_spi(&mut self, spi: u32) {
        self.buffer.as_mut()[field::SPI].copy_from_slice(&spi.to_be_bytes());
    }

    /// Set the sequence number field (the low 32 bits when ESN is in use).
    pub fn set_seq(&mut self, seq: u32) {
        self.buffer.as_mut()[field::SEQ].copy_from_slice(&seq.to_be_bytes());
    }

    /// The payload, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// A high-level description of an ESP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EspRepr {
    /// Security Parameters Index (never 0 on the wire).
    pub spi: u32,
    /// Sequence number, low 32 bits.
    pub seq: u32,
}

impl EspRepr {
    /// The length of the ESP header.
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// Parse the header of an ESP packet.
    ///
    /// # Errors
    ///
    /// Those of [`EspPacket::check_len`], and [`WireError::Malformed`] for SPI 0, which
    /// RFC 4303 §2.1 reserves for local use and forbids on the wire.
    pub fn parse<T: AsRef<[u8]>>(packet: &EspPacket<T>) -> Result<Self, WireError> {
        packet.check_len()?;
        let spi = packet.spi();
        if spi == 0 {
            return Err(WireError::Malformed);
        }
        Ok(Self {
            spi,
            seq: packet.seq(),
        })
    }

    /// The length of the header: 8.
    #[must_use]
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// The length of what [`emit`](Self::emit) writes: 8.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write the 8-byte header into the start of `buf` and return its length.
    ///
    /// # Errors
    ///
    /// [`WireError::BufferTooSmall`] if `buf` is shorter than 8 bytes;
    /// [`WireError::Malformed`] for SPI 0.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        if self.spi == 0 {
            return Err(WireError::Malformed);
        }
        let header = buf.get_mut(..HEADER_LEN).ok_or(WireError::BufferTooSmall)?;
        let mut packet = EspPacket::new_unchecked(header);
        packet.set_spi(self.spi);
        packet.set_seq(self.seq);
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::wire::ipv4::{Ipv4Packet, Ipv4Repr};
    use crate::wire::proto;
    use crate::wire::udp::{UdpPacket, UdpRepr};
    use core::net::Ipv4Addr;
    use std::vec::Vec;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// rfc3602_aes_cbc_esp.json, case 5 (transport mode), `full_ip_packet`.
    const RFC3602_CASE5: &str = "4500007c08f200004032f9a5c0a87b03c0a87b640000432100000001e96e8c08\
        ab465763fd098d45dd3ff893f663c25d325c18c6a9453e194e120849a4870b66cc6b9965330013b4898dc856\
        a4699e523a55db080b59ec3a8e4b7e52775b07d1db34ed9c538ab50c551b874aa269add047ad2d5913ac19b7\
        cfbad4a6";

    /// scapy_esp_vectors.json "aes128-gcm-16_tunnel_udp4500", `full_packet`: outer IPv4,
    /// UDP 4500, ESP at `esp_offset` 28 with SPI 0x10000020, seq 97, IV 5afb37fb66f8663b.
    const SCAPY_GCM_UDP: &str = "450000802020000040116e16c0000201c633640211941194006c000010000020\
        000000615afb37fb66f8663b374e4e3b165b9cb76f6b235d0321d17e79ba248209e89fca85c4caf4a3ae4874\
        a26e6b9dbe8802c6e95d4b1a68ff8a0790a84eceb0e62280e8df4673e5d4aad9c3bb41bbda7f8a0e166c6889\
        f7ee08c36eaeb1cd";

    #[test]
    fn parse_rfc3602_case5() {
        let ip = hex(RFC3602_CASE5);
        let outer = Ipv4Packet::new_checked(&ip[..]).unwrap();
        assert_eq!(outer.protocol(), proto::ESP);
        let esp = EspPacket::new_checked(outer.payload()).unwrap();
        assert_eq!(esp.spi(), 0x4321);
        assert_eq!(esp.seq(), 1);
        assert_eq!(esp.header(), &ip[20..28]);
        // IV (16 bytes, from the vector's `iv`) then the 80-byte ciphertext; no ICV.
        assert_eq!(
            &esp.payload()[..16],
            &hex("e96e8c08ab465763fd098d45dd3ff893")[..]
        );
        assert_eq!(esp.payload().len(), 16 + 80);
        let repr = EspRepr::parse(&esp).unwrap();
        assert_eq!(
            repr,
            EspRepr {
                spi: 0x4321,
                seq: 1
            }
        );
        let mut out = [0u8; 8];
        assert_eq!(repr.emit(&mut out), Ok(8));
        assert_eq!(&out[..], &ip[20..28]);
    }

    #[test]
    fn parse_scapy_udp_encapsulated() {
        let ip = hex(SCAPY_GCM_UDP);
        assert_eq!(ip.len(), 0x80);
        let outer = Ipv4Packet::new_checked(&ip[..]).unwrap();
        assert_eq!(outer.protocol(), proto::UDP);
        let udp = UdpPacket::new_checked(outer.payload()).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port()), (4500, 4500));
        assert_eq!(udp.len(), 0x6c);
        assert!(udp.verify_checksum_v4(outer.src_addr(), outer.dst_addr())); // zero: not computed
        let esp = EspPacket::new_checked(udp.into_payload()).unwrap();
        assert_eq!(esp.header(), &ip[28..36]);
        assert_eq!((esp.spi(), esp.seq()), (0x1000_0020, 97));
        assert_eq!(
            EspRepr::parse(&esp),
            Ok(EspRepr {
                spi: 0x1000_0020,
                seq: 97
            })
        );
        // IV (8 bytes) | ciphertext | 16-byte ICV.
        assert_eq!(&esp.payload()[..8], &hex("5afb37fb66f8663b")[..]);
        assert_eq!(esp.into_payload().len(), 0x80 - 28 - 8);
    }

    #[test]
    fn emit_outer_headers_of_scapy_vector() {
        // Rebuild IPv4 | UDP | ESP headers of the same vector from Reprs: identical bytes.
        let ip = hex(SCAPY_GCM_UDP);
        let ipv4 = Ipv4Repr {
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::new(198, 51, 100, 2),
            protocol: proto::UDP,
            payload_len: ip.len() - 20,
            ttl: 64,
            tos: 0,
            ident: 0x2020,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
        };
        let udp = UdpRepr {
            src_port: 4500,
            dst_port: 4500,
        };
        let esp = EspRepr {
            spi: 0x1000_0020,
            seq: 97,
        };
        let mut out = std::vec![0u8; ipv4.buffer_len()];
        let mut at = ipv4.emit(&mut out).unwrap();
        at += udp.emit(&mut out[at..], ip.len() - 28).unwrap();
        at += esp.emit(&mut out[at..]).unwrap();
        assert_eq!(at, 36);
        assert_eq!(&out[..at], &ip[..at]);
    }

    #[test]
    fn setters_and_in_place_payload() {
        let mut ip = hex(RFC3602_CASE5);
        let mut esp = EspPacket::new_checked(&mut ip[20..]).unwrap();
        esp.set_spi(0xdead_beef);
        esp.set_seq(u32::MAX);
        esp.payload_mut()[0] = 0;
        assert_eq!(
            EspRepr::parse(&esp),
            Ok(EspRepr {
                spi: 0xdead_beef,
                seq: u32::MAX
            })
        );
        let payload = esp.into_payload_mut();
        payload[1] = 0;
        assert_eq!(
            &ip[20..30],
            &[0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff, 0xff, 0, 0]
        );
    }

    #[test]
    fn spi_zero_is_rejected() {
        let bytes = [0u8; 16];
        let esp = EspPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(esp.spi(), 0);
        assert_eq!(EspRepr::parse(&esp), Err(WireError::Malformed));
        let mut out = [0u8; 8];
        assert_eq!(
            EspRepr { spi: 0, seq: 1 }.emit(&mut out),
            Err(WireError::Malformed)
        );
    }

    #[test]
    fn emit_short_buffer() {
        let repr = EspRepr { spi: 1, seq: 2 };
        for n in 0..8 {
            let mut buf = std::vec![0u8; n];
            assert_eq!(repr.emit(&mut buf), Err(WireError::BufferTooSmall));
        }
        let mut buf = [0u8; 9];
        assert_eq!(repr.emit(&mut buf), Ok(8));
        assert_eq!(buf, [0, 0, 0, 1, 0, 0, 0, 2, 0]);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let ip = hex(RFC3602_CASE5);
        let esp = &ip[20..];
        for n in 0..HEADER_LEN {
            assert_eq!(EspPacket::new_checked(&esp[..n]), Err(WireError::Truncated));
        }
        for n in HEADER_LEN..=esp.len() {
            let p = EspPacket::new_checked(&esp[..n]).unwrap();
            assert_eq!(p.payload().len(), n - HEADER_LEN);
        }
    }
}
