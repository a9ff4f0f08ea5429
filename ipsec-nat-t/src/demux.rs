//! Sorting what arrives on UDP port 4500 (RFC 3948 §2), and framing IKE to send there.
//!
//! After the port float, one UDP port carries three things, told apart by their first
//! octets:
//!
//! | payload | meaning | RFC 3948 |
//! |---|---|---|
//! | exactly one octet `0xFF` | NAT keepalive: drop silently | §2.3 |
//! | four zero octets, then an IKE header | IKE behind the non-ESP marker | §2.2 |
//! | anything else | ESP, starting with its (non-zero) SPI | §2.1 |
//!
//! Decisions where the RFCs leave room, made here once:
//!
//! * an empty payload, or one of 1 to 7 octets that is not a keepalive, is
//!   [`Invalid`](Classified::Invalid): too short for an ESP header (SPI and sequence
//!   number, RFC 4303 §2), and not the one keepalive form;
//! * the non-ESP marker followed by fewer than 28 octets is invalid: no IKE message
//!   (IKEv1 or IKEv2) is shorter than its 28-octet header;
//! * an SPI from 1 to 255 is invalid: RFC 4303 §2.1 reserves those values, so no SA can
//!   carry them and looking them up would be wasted work (and a fuzzing surface);
//! * a payload whose first octet is `0xFF` but which is longer than one octet is ESP (an
//!   SPI may start with `0xFF`).

use crate::NatTError;
use crate::consts::{
    ESP_HEADER_LEN, ISAKMP_HEADER_LEN, KEEPALIVE_BYTE, MAX_RESERVED_SPI, NON_ESP_MARKER,
    NON_ESP_MARKER_LEN,
};

/// What a UDP payload received on port 4500 is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Classified<'a> {
    /// An IKE message; the slice starts after the non-ESP marker, at the ISAKMP header.
    Ike(&'a [u8]),
    /// A NAT keepalive.
    Keepalive,
    /// An ESP packet (the whole payload, from the SPI on, is the ESP packet).
    Esp {
        /// The SPI, for the SA lookup.
        spi: u32,
    },
    /// Not a valid NAT-T payload: drop it and count it.
    Invalid(InvalidReason),
}

/// Why a payload was [`Classified::Invalid`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum InvalidReason {
    /// A zero-length payload.
    Empty,
    /// Shorter than an ESP header and not a keepalive.
    TooShortForEsp,
    /// A non-ESP marker followed by less than an ISAKMP header.
    TooShortForIke,
    /// An SPI from 1 to 255 (reserved, RFC 4303 §2.1).
    ReservedSpi,
}

/// Classifies the UDP payload of a datagram received on the NAT-T port.
#[must_use]
pub fn classify(payload: &[u8]) -> Classified<'_> {
    match payload {
        [] => Classified::Invalid(InvalidReason::Empty),
        [KEEPALIVE_BYTE] => Classified::Keepalive,
        [0, 0, 0, 0, ike @ ..] => {
            if ike.len() < ISAKMP_HEADER_LEN {
                Classified::Invalid(InvalidReason::TooShortForIke)
            } else {
                Classified::Ike(ike)
            }
        }
        _ if payload.len() < ESP_HEADER_LEN => Classified::Invalid(InvalidReason::TooShortForEsp),
        [a, b, c, d, ..] => {
            let spi = u32::from_be_bytes([*a, *b, *c, *d]);
            if spi <= MAX_RESERVED_SPI {
                Classified::Invalid(InvalidReason::ReservedSpi)
            } else {
                Classified::Esp { spi }
            }
        }
        // Unreachable: shorter payloads were handled above; kept total without a panic.
        _ => Classified::Invalid(InvalidReason::TooShortForEsp),
    }
}

/// The length of an IKE message of `ike_len` octets once framed for port 4500.
#[must_use]
pub const fn framed_len(ike_len: usize) -> usize {
    ike_len.saturating_add(NON_ESP_MARKER_LEN)
}

/// Writes the non-ESP marker and then `ike` into `out`, and returns the length written.
///
/// # Errors
///
/// [`NatTError::BufferTooSmall`] if `out` is shorter than `4 + ike.len()`.
pub fn frame_ike(ike: &[u8], out: &mut [u8]) -> Result<usize, NatTError> {
    let needed = framed_len(ike.len());
    let out = out
        .get_mut(..needed)
        .ok_or(NatTError::BufferTooSmall { needed })?;
    let (marker, body) = out.split_at_mut(NON_ESP_MARKER_LEN);
    marker.copy_from_slice(&NON_ESP_MARKER);
    body.copy_from_slice(ike);
    Ok(needed)
}

/// Inserts the non-ESP marker in front of the IKE message in `buf[..ike_len]`, moving it
/// four octets up, and returns the framed length. Use it when the IKE message was built
/// without headroom.
///
/// # Errors
///
/// [`NatTError::BufferTooSmall`] if `buf` is shorter than `ike_len + 4`.
pub fn frame_ike_in_place(buf: &mut [u8], ike_len: usize) -> Result<usize, NatTError> {
    let needed = framed_len(ike_len);
    let buf = buf
        .get_mut(..needed)
        .ok_or(NatTError::BufferTooSmall { needed })?;
    buf.copy_within(..ike_len, NON_ESP_MARKER_LEN);
    let (marker, _) = buf.split_at_mut(NON_ESP_MARKER_LEN);
    marker.copy_from_slice(&NON_ESP_MARKER);
    Ok(needed)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// A tiny reader for little-endian classic pcap files with Ethernet link type: the
    /// frames, in order.
    fn pcap_frames(bytes: &[u8]) -> Vec<&[u8]> {
        assert_eq!(&bytes[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "little-endian pcap");
        assert_eq!(
            u32::from_le_bytes(bytes[20..24].try_into().unwrap()),
            1,
            "Ethernet"
        );
        let mut frames = Vec::new();
        let mut off = 24;
        while off < bytes.len() {
            let incl = u32::from_le_bytes(bytes[off + 8..off + 12].try_into().unwrap()) as usize;
            off += 16;
            frames.push(&bytes[off..off + incl]);
            off += incl;
        }
        frames
    }

    /// The UDP payload of an Ethernet / IPv4 / UDP frame, checking the ports are 4500.
    fn udp4500_payload(frame: &[u8]) -> &[u8] {
        use ipsec_core::wire::{ipv4::Ipv4Packet, udp::UdpPacket};
        assert_eq!(&frame[12..14], &[0x08, 0x00]);
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        assert!(ip.header_checksum_ok());
        assert_eq!(ip.protocol(), 17);
        let udp = UdpPacket::new_checked(ip.into_payload()).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port()), (4500, 4500));
        udp.into_payload()
    }

    #[test]
    fn synthetic_capture() {
        let pcap =
            include_bytes!("../tests/data/synthetic_natt_keepalive_nonesp_marker_espinudp.pcap");
        let frames = pcap_frames(pcap);
        assert_eq!(frames.len(), 5);
        let classes: Vec<Classified<'_>> = frames
            .iter()
            .map(|f| classify(udp4500_payload(f)))
            .collect();
        assert_eq!(classes[0], Classified::Keepalive);
        assert_eq!(classes[3], Classified::Keepalive);
        // The DPD R-U-THERE and its ACK: after the marker, the ISAKMP header with the
        // RUB-NDS cookies, next payload 8 (HASH), version 1.0, exchange 5 (Informational).
        for (i, mid) in [(1, [0x5a, 0x5a, 0x00, 0x01]), (2, [0xa5, 0xa5, 0x00, 0x02])] {
            let Classified::Ike(ike) = classes[i] else {
                panic!("frame {} is {:?}", i + 1, classes[i]);
            };
            let payload = udp4500_payload(frames[i]);
            assert_eq!(ike, &payload[4..]);
            assert_eq!(hex::encode(&ike[..16]), "59cedc5dcea558fe9e16984236445257");
            assert_eq!(&ike[16..20], &[0x08, 0x10, 0x05, 0x01]);
            assert_eq!(&ike[20..24], &mid);
            assert_eq!(
                u32::from_be_bytes(ike[24..28].try_into().unwrap()) as usize,
                ike.len()
            );
            // Framing it again reproduces the captured payload, both ways.
            let mut out = [0u8; 256];
            let n = frame_ike(ike, &mut out).unwrap();
            assert_eq!(&out[..n], payload);
            let mut buf = [0u8; 256];
            buf[..ike.len()].copy_from_slice(ike);
            let n = frame_ike_in_place(&mut buf, ike.len()).unwrap();
            assert_eq!(&buf[..n], payload);
        }
        // scapy's aes128-cbc_hmac-sha1-96_tunnel_udp4500: SPI 0x10000010.
        assert_eq!(classes[4], Classified::Esp { spi: 0x1000_0010 });
    }

    #[test]
    fn edge_cases() {
        use InvalidReason::*;
        assert_eq!(classify(&[]), Classified::Invalid(Empty));
        assert_eq!(classify(&[0xfe]), Classified::Invalid(TooShortForEsp));
        assert_eq!(classify(&[0xff, 0xff]), Classified::Invalid(TooShortForEsp));
        assert_eq!(classify(&[0; 3]), Classified::Invalid(TooShortForEsp));
        assert_eq!(
            classify(&[1, 2, 3, 4, 5, 6, 7]),
            Classified::Invalid(TooShortForEsp)
        );
        assert_eq!(classify(&[0; 4]), Classified::Invalid(TooShortForIke));
        assert_eq!(classify(&[0; 31]), Classified::Invalid(TooShortForIke));
        assert_eq!(classify(&[0; 32]), Classified::Ike(&[0; 28]));
        assert_eq!(
            classify(&[0, 0, 0, 1, 0, 0, 0, 1]),
            Classified::Invalid(ReservedSpi)
        );
        assert_eq!(
            classify(&[0, 0, 0, 0xff, 0, 0, 0, 1]),
            Classified::Invalid(ReservedSpi)
        );
        assert_eq!(
            classify(&[0, 0, 1, 0, 0, 0, 0, 1]),
            Classified::Esp { spi: 256 }
        );
        assert_eq!(
            classify(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1]),
            Classified::Esp { spi: u32::MAX }
        );
        let mut out = [0u8; 31];
        assert_eq!(
            frame_ike(&[0u8; 28], &mut out),
            Err(NatTError::BufferTooSmall { needed: 32 })
        );
        assert_eq!(
            frame_ike_in_place(&mut out, 28),
            Err(NatTError::BufferTooSmall { needed: 32 })
        );
        assert_eq!(framed_len(usize::MAX), usize::MAX);
    }

    #[test]
    fn every_short_payload() {
        // Every payload of up to 2 octets: classify never
        // panics and a keepalive is only ever the single 0xFF.
        for len in 0..=2usize {
            for v in 0..(1u32 << (8 * len)) {
                let bytes = v.to_be_bytes();
                let p = &bytes[4 - len..];
                let c = classify(p);
                assert_eq!(c == Classified::Keepalive, p == [0xff]);
                assert!(matches!(c, Classified::Keepalive | Classified::Invalid(_)));
            }
        }
    }
}
