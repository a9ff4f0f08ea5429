//! How many bytes ESP adds, and the largest inner packet an SA carries without
//! fragmentation: the number a port gives its TUN interface as MTU, the MTU reported in
//! ICMP "fragmentation needed" to inner hosts, and the base of MSS clamping.
//!
//! An ESP packet is, in order: the outer IP header (tunnel mode; 20 bytes for IPv4, 40 for
//! IPv6) or the original IP header (transport mode), the UDP header if NAT-T encapsulates
//! (8), the ESP header (SPI and sequence number, 8), the IV (8 for DES, 3DES and GCM, 16
//! for AES-CBC, 0 for NULL), the payload (the inner packet, or the transport payload),
//! padding so that payload + padding + 2 is a multiple of the cipher block (4 for GCM and
//! NULL, RFC 4303 §2.4), the pad length and next header bytes (2), and the ICV (12 for the
//! 96-bit HMACs, 16 for HMAC-SHA-256-128 and GCM-16).
//!
//! Padding makes the overhead depend on the inner length, so "the overhead" of an SA is
//! given for an MTU: [`EspGeometry::max_inner_len`] is exact (the largest inner packet
//! whose ESP packet fits in `mtu` bytes; one byte more does not fit), and
//! [`EspGeometry::max_overhead`] is `mtu` minus that. Transport mode assumes an IP header
//! without options (IPv4) or extension headers (IPv6); each option byte of a real packet
//! costs one byte of payload room.

use core::net::IpAddr;

use crate::esp::{EspConfig, Mode, Transform};
use crate::wire::{ipv4, ipv6, udp};

/// The shape of an SA's packets: everything that determines its overhead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EspGeometry {
    /// The transform (IV, block and ICV sizes).
    pub transform: Transform,
    /// Tunnel or transport.
    pub mode: Mode,
    /// Whether the outer (tunnel) or original (transport) IP header is IPv6.
    pub ipv6: bool,
    /// Whether ESP is UDP-encapsulated (RFC 3948).
    pub udp_encap: bool,
}

impl EspGeometry {
    /// The geometry of an SA's configuration; the family is that of the peer's address
    /// (IPv4 when unknown, as in transport mode without addresses).
    #[must_use]
    pub fn of(config: &EspConfig) -> Self {
        Self {
            transform: config.transform,
            mode: config.mode,
            ipv6: matches!(config.remote, Some(IpAddr::V6(_))),
            udp_encap: config.udp_encap.is_some(),
        }
    }

    const fn ip_header_len(&self) -> usize {
        if self.ipv6 {
            ipv6::HEADER_LEN
        } else {
            ipv4::HEADER_LEN
        }
    }

    const fn udp_len(&self) -> usize {
        if self.udp_encap { udp::HEADER_LEN } else { 0 }
    }

    /// Bytes in front of the ESP header: outer IP header (tunnel mode) or the original
    /// IP header (transport mode), plus the UDP header if encapsulated.
    #[must_use]
    pub const fn header_len(&self) -> usize {
        self.ip_header_len() + self.udp_len()
    }

    /// Length of the ESP packet built from an inner packet of `inner_len` bytes (in
    /// transport mode, the original packet, IP header included).
    #[must_use]
    pub const fn packet_len(&self, inner_len: usize) -> usize {
        match self.mode {
            Mode::Tunnel => self
                .header_len()
                .saturating_add(self.transform.sealed_len(inner_len)),
            Mode::Transport => {
                let payload = inner_len.saturating_sub(self.ip_header_len());
                self.header_len()
                    .saturating_add(self.transform.sealed_len(payload))
            }
        }
    }

    /// Bytes ESP adds to an inner packet of `inner_len` bytes.
    #[must_use]
    pub const fn overhead(&self, inner_len: usize) -> usize {
        self.packet_len(inner_len).saturating_sub(inner_len)
    }

    /// The largest inner packet whose ESP packet fits in `mtu` bytes, or 0 if none does.
    /// Exact: `packet_len(max_inner_len(mtu)) <= mtu < packet_len(max_inner_len(mtu) + 1)`.
    #[must_use]
    pub const fn max_inner_len(&self, mtu: usize) -> usize {
        let room = mtu.saturating_sub(self.header_len());
        let payload = self.transform.max_payload(room);
        if payload == 0 {
            return 0;
        }
        match self.mode {
            Mode::Tunnel => payload,
            Mode::Transport => payload + self.ip_header_len(),
        }
    }

    /// `mtu - max_inner_len(mtu)`: the most ESP can cost at this MTU, padding included.
    #[must_use]
    pub const fn max_overhead(&self, mtu: usize) -> usize {
        mtu.saturating_sub(self.max_inner_len(mtu))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec;

    use core::net::{Ipv4Addr, Ipv6Addr};

    use hal_traits::{AeadAlg, CipherAlg, CryptoError, MacAlg, SecureRng};
    use ipsec_soft_crypto::SoftCrypto;

    use super::*;
    use crate::esp::{Direction, Encryption, EspSa, UdpEncap};
    use crate::time::Instant;
    use crate::wire::ipv4::Ipv4Repr;

    const DES3_SHA: Transform = Transform {
        enc: Encryption::Cbc(CipherAlg::TripleDesCbc),
        auth: Some(MacAlg::HmacSha1_96),
    };
    const DES_MD5: Transform = Transform {
        enc: Encryption::Cbc(CipherAlg::DesCbc),
        auth: Some(MacAlg::HmacMd5_96),
    };
    const AES_SHA: Transform = Transform {
        enc: Encryption::Cbc(CipherAlg::Aes128Cbc),
        auth: Some(MacAlg::HmacSha1_96),
    };
    const AES256_SHA256: Transform = Transform {
        enc: Encryption::Cbc(CipherAlg::Aes256Cbc),
        auth: Some(MacAlg::HmacSha256_128),
    };
    const GCM16: Transform = Transform {
        enc: Encryption::Gcm(AeadAlg::Aes128Gcm16),
        auth: None,
    };
    const NULL_SHA: Transform = Transform {
        enc: Encryption::Null,
        auth: Some(MacAlg::HmacSha1_96),
    };

    fn g(transform: Transform, mode: Mode, ipv6: bool, udp_encap: bool) -> EspGeometry {
        EspGeometry {
            transform,
            mode,
            ipv6,
            udp_encap,
        }
    }

    /// Largest inner packet over a 1500-byte MTU, worked by hand. Tunnel mode, IPv4:
    /// room = 1500 - 20 (outer IP) [- 8 UDP]; fixed = 8 (ESP) + IV + ICV; the rest is
    /// rounded down to the block and 2 trailer bytes are taken off.
    #[test]
    fn overhead_at_1500_by_hand() {
        let cases = [
            // esp-3des esp-sha-hmac, tunnel: 1480 - (8 + 8 + 12) = 1452, down to a
            // multiple of 8 = 1448, minus 2 = 1446 bytes of inner packet: 54 bytes overhead.
            (DES3_SHA, Mode::Tunnel, false, false, 1446, 54),
            // esp-des esp-md5-hmac: same sizes as 3DES-SHA1.
            (DES_MD5, Mode::Tunnel, false, false, 1446, 54),
            // esp-aes esp-sha-hmac: 1480 - (8 + 16 + 12) = 1444 -> 1440 (x16) -> 1438: 62.
            (AES_SHA, Mode::Tunnel, false, false, 1438, 62),
            // esp-aes 256 esp-sha256-hmac: 1480 - 40 = 1440 (x16) -> 1438: 62.
            (AES256_SHA256, Mode::Tunnel, false, false, 1438, 62),
            // esp-gcm 128 (16-byte ICV): 1480 - 32 = 1448 (x4) -> 1446: 54.
            (GCM16, Mode::Tunnel, false, false, 1446, 54),
            // esp-null esp-sha-hmac: 1480 - 20 = 1460 (x4) -> 1458: 42.
            (NULL_SHA, Mode::Tunnel, false, false, 1458, 42),
            // NAT-T adds 8: 3DES 1472 - 28 = 1444 -> 1440 -> 1438 (62);
            (DES3_SHA, Mode::Tunnel, false, true, 1438, 62),
            // AES: 1472 - 36 = 1436 -> 1424 -> 1422 (78); GCM: 1472 - 32 = 1440 -> 1438 (62).
            (AES_SHA, Mode::Tunnel, false, true, 1422, 78),
            (GCM16, Mode::Tunnel, false, true, 1438, 62),
            // Transport mode keeps the 20-byte header: the ESP part gets 1480 bytes, as a
            // tunnel's does, so the payload is the same and the inner packet 20 bytes more:
            // 3DES 1446 + 20 = 1466 (34), AES 1438 + 20 = 1458 (42), GCM 1466 (34).
            (DES3_SHA, Mode::Transport, false, false, 1466, 34),
            (AES_SHA, Mode::Transport, false, false, 1458, 42),
            (GCM16, Mode::Transport, false, false, 1466, 34),
            // Transport + NAT-T: 3DES 1438 + 20 = 1458 (42), AES 1422 + 20 = 1442 (58).
            (DES3_SHA, Mode::Transport, false, true, 1458, 42),
            (AES_SHA, Mode::Transport, false, true, 1442, 58),
            // IPv6 outer: room 1460. 3DES 1460 - 28 = 1432 (x8) -> 1430 (70); AES
            // 1460 - 36 = 1424 (x16) -> 1422 (78).
            (DES3_SHA, Mode::Tunnel, true, false, 1430, 70),
            (AES_SHA, Mode::Tunnel, true, false, 1422, 78),
        ];
        for (t, mode, v6, udp, inner, overhead) in cases {
            let geo = g(t, mode, v6, udp);
            assert_eq!(geo.max_inner_len(1500), inner, "{geo:?}");
            assert_eq!(geo.max_overhead(1500), overhead, "{geo:?}");
            assert!(geo.packet_len(inner) <= 1500);
            assert!(geo.packet_len(inner + 1) > 1500);
        }
        // The padding makes the overhead of 3DES-SHA1 tunnel vary between 50 and 57:
        // 20 + 8 + 8 + 12 = 48 fixed, plus 2 to 9 bytes of trailer and padding.
        let geo = g(DES3_SHA, Mode::Tunnel, false, false);
        let all: std::vec::Vec<usize> = (40..1446).map(|n| geo.overhead(n)).collect();
        assert_eq!((all.iter().min(), all.iter().max()), (Some(&50), Some(&57)));
        assert_eq!(geo.max_inner_len(30), 0);
    }

    struct Rng;
    impl SecureRng for Rng {
        fn fill_bytes(&mut self, d: &mut [u8]) -> Result<(), CryptoError> {
            d.fill(0x5a);
            Ok(())
        }
    }

    fn inner(len: usize) -> std::vec::Vec<u8> {
        let r = Ipv4Repr {
            src: Ipv4Addr::new(10, 0, 68, 5),
            dst: Ipv4Addr::new(10, 1, 1, 7),
            protocol: 17,
            payload_len: len - 20,
            ttl: 64,
            tos: 0,
            ident: 1,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
        };
        let mut v = vec![0u8; len];
        r.emit(&mut v).unwrap();
        v
    }

    /// The real encapsulation agrees with the arithmetic for every transform, mode and
    /// encapsulation, at several MTUs: the largest packet fits, one byte more does not.
    #[test]
    fn encapsulation_agrees_with_max_inner_len() {
        let keys = |t: Transform| {
            let e = vec![0x11u8; t.enc.keymat_len()];
            let a = vec![0x22u8; t.auth.map_or(0, |m| m.key_len())];
            (e, a)
        };
        for t in [DES3_SHA, DES_MD5, AES_SHA, AES256_SHA256, GCM16, NULL_SHA] {
            for mode in [Mode::Tunnel, Mode::Transport] {
                for v6 in [false, true] {
                    for udp in [false, true] {
                        let (local, remote) = if v6 {
                            (
                                IpAddr::V6(Ipv6Addr::LOCALHOST),
                                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
                            )
                        } else {
                            (
                                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                                IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)),
                            )
                        };
                        if mode == Mode::Transport && v6 {
                            continue; // the inner packets below are IPv4
                        }
                        let mut c = EspConfig::tunnel(1, Direction::Outbound, t, local, remote);
                        c.mode = mode;
                        c.udp_encap = udp.then_some(UdpEncap::STANDARD);
                        let geo = EspGeometry::of(&c);
                        let (e, a) = keys(t);
                        let mut sa: EspSa<SoftCrypto> =
                            EspSa::new(c, &e, &a, Instant::ZERO).unwrap();
                        for mtu in [576usize, 1280, 1400, 1500, 9000] {
                            let max = geo.max_inner_len(mtu);
                            assert_eq!(max, sa.max_inner_len(mtu), "{geo:?} {mtu}");
                            let mut out = vec![0u8; mtu + 100];
                            let n = sa
                                .encapsulate(Instant::ZERO, &inner(max), None, &mut Rng, &mut out)
                                .unwrap();
                            assert_eq!(n, geo.packet_len(max));
                            assert!(n <= mtu, "{geo:?} {mtu}");
                            let n = sa
                                .encapsulate(
                                    Instant::ZERO,
                                    &inner(max + 1),
                                    None,
                                    &mut Rng,
                                    &mut out,
                                )
                                .unwrap();
                            assert!(n > mtu, "{geo:?} {mtu}");
                        }
                    }
                }
            }
        }
    }
}
