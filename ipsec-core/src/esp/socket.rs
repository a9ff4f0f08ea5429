//! Tunnel-mode ESP for ports that carry it over UDP sockets (RFC 3948 through a socket
//! on port 4500): the kernel owns the outer IP and UDP headers, so the SA works on the
//! UDP payload alone.

use hal_traits::{CryptoProvider, SecureRng};

use super::packet::{Decapsulated, tunnel_inner};
use super::{EspError, EspSa, Mode};
use crate::Instant;
use crate::wire::{WireError, proto};

impl<P: CryptoProvider, const W: usize> EspSa<P, W> {
    /// Seals an inner IP packet into `out` as the payload of a UDP datagram (no outer
    /// headers): what a port writes to its UDP 4500 socket. Tunnel mode only.
    ///
    /// # Errors
    /// [`EspError::InvalidConfig`] for a transport-mode SA (its outer header is the
    /// original packet's, which a socket cannot send), [`EspError::Malformed`] for an
    /// inner packet that is not IPv4 or IPv6, and those of [`EspSa::seal`].
    pub fn seal_udp_payload<R: SecureRng>(
        &mut self,
        now: Instant,
        inner: &[u8],
        rng: &mut R,
        out: &mut [u8],
    ) -> Result<usize, EspError> {
        if self.mode != Mode::Tunnel {
            return Err(EspError::InvalidConfig);
        }
        let nh = match inner.first().map(|b| b >> 4) {
            Some(4) => proto::IPV4,
            Some(6) => proto::IPV6,
            _ => {
                self.counters
                    .send_error(EspError::Malformed(WireError::BadVersion));
                return Err(EspError::Malformed(WireError::BadVersion));
            }
        };
        self.seal(now, nh, inner, rng, out)
    }

    /// Opens ESP received as a UDP payload (after the port's demux has ruled out the
    /// non-ESP marker and keepalives), in place, and checks the inner packet as
    /// [`EspSa::decapsulate`] does. Tunnel mode only.
    ///
    /// # Errors
    /// As [`EspSa::decapsulate`]; [`EspError::InvalidConfig`] for transport mode.
    pub fn open_udp_payload<'b>(
        &mut self,
        now: Instant,
        esp: &'b mut [u8],
    ) -> Result<Decapsulated<'b>, EspError> {
        if self.mode != Mode::Tunnel {
            return Err(EspError::InvalidConfig);
        }
        let opened = self.open_in_place(now, esp)?;
        let range = match tunnel_inner(esp, opened.payload.clone(), opened.next_header)
            .and_then(|r| self.check_selector(esp, r))
        {
            Ok(r) => r,
            Err(e) => return Err(self.reject_inbound(e)),
        };
        self.delivered(now, range.len());
        let packet = esp.get_mut(range).ok_or(EspError::InvalidLength)?;
        Ok(Decapsulated {
            packet,
            seq: opened.seq,
            next_header: opened.next_header,
        })
    }
}

#[cfg(test)]
mod tests {
    use core::net::{IpAddr, Ipv4Addr};

    use hal_traits::{AeadAlg, CryptoError};
    use ipsec_soft_crypto::SoftCrypto;

    use super::*;
    use crate::esp::{Direction, Encryption, EspConfig, Transform, UdpEncap};

    struct Rng;
    impl SecureRng for Rng {
        fn fill_bytes(&mut self, d: &mut [u8]) -> Result<(), CryptoError> {
            d.fill(0x5a);
            Ok(())
        }
    }

    #[test]
    fn udp_payload_round_trip_matches_full_packet_path() {
        let t = Transform {
            enc: Encryption::Gcm(AeadAlg::Aes128Gcm16),
            auth: None,
        };
        let a = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
        let b = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 2));
        let mut oc = EspConfig::tunnel(0x4444, Direction::Outbound, t, a, b);
        oc.udp_encap = Some(UdpEncap::STANDARD);
        let mut ic = EspConfig::tunnel(0x4444, Direction::Inbound, t, b, a);
        ic.udp_encap = Some(UdpEncap::STANDARD);
        let key = [3u8; 20];
        let mut o: EspSa<SoftCrypto> = EspSa::new(oc, &key, &[], Instant::ZERO).unwrap();
        let mut i: EspSa<SoftCrypto> = EspSa::new(ic, &key, &[], Instant::ZERO).unwrap();
        let inner = [
            0x45, 0, 0, 28, 0, 1, 0, 0, 64, 1, 0, 0, 198, 51, 100, 1, 198, 51, 100, 129, 8, 0,
            0xf7, 0xff, 0, 0, 0, 0,
        ];
        let mut out = [0u8; 128];
        let n = o
            .seal_udp_payload(Instant::ZERO, &inner, &mut Rng, &mut out)
            .unwrap();
        assert_eq!(n, o.sealed_len(inner.len()));
        let d = i.open_udp_payload(Instant::ZERO, &mut out[..n]).unwrap();
        assert_eq!(d.packet, &inner[..]);
        assert_eq!(i.counters().decaps, 1);

        let mut tr = EspConfig::transport(1, Direction::Outbound, t);
        tr.udp_encap = Some(UdpEncap::STANDARD);
        let mut tsa: EspSa<SoftCrypto> = EspSa::new(tr, &key, &[], Instant::ZERO).unwrap();
        assert_eq!(
            tsa.seal_udp_payload(Instant::ZERO, &inner, &mut Rng, &mut out),
            Err(EspError::InvalidConfig)
        );
    }
}
