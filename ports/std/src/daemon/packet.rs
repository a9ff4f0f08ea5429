//! Outer headers between the data plane (which works on whole IP packets) and the
//! sockets (which own the outer IP and UDP headers).

use std::net::{IpAddr, SocketAddr, SocketAddrV4};

use ipsec_core::wire::ipv4::{Ipv4Packet, Ipv4Repr};
use ipsec_core::wire::proto;
use mio::net::UdpSocket;
use tracing::{debug, trace};

use super::Stats;

/// Room kept in front of a received UDP payload for an IPv4 and a UDP header.
pub const HEADROOM: usize = 28;

/// Puts an outer IPv4 + UDP header in front of the UDP payload at
/// `buf[HEADROOM..HEADROOM + n]`, with the datagram's real addresses and ports, so the
/// data plane sees the ESP-in-UDP packet as it travelled. Returns where the packet
/// starts, or `None` for IPv6 (not supported yet).
pub fn prepend_udp_headers(
    buf: &mut [u8],
    n: usize,
    from: SocketAddr,
    to: SocketAddr,
) -> Option<usize> {
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (from.ip(), to.ip()) else {
        return None;
    };
    let udp_len = u16::try_from(n + 8).ok()?;
    let ip = Ipv4Repr {
        src,
        dst,
        protocol: proto::UDP,
        payload_len: usize::from(udp_len),
        ttl: 64,
        tos: 0,
        ident: 0,
        dont_frag: false,
        more_frags: false,
        frag_offset: 0,
    };
    ip.emit(buf.get_mut(..20)?).ok()?;
    let udp = buf.get_mut(20..28)?;
    udp[0..2].copy_from_slice(&from.port().to_be_bytes());
    udp[2..4].copy_from_slice(&to.port().to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    Some(0)
}

/// The UDP payload and destination of an unfragmented IPv4 UDP packet: what a UDP socket
/// sends for it. `None` for anything else (raw ESP, fragments, IPv6).
#[must_use]
pub fn udp_payload(out: &[u8]) -> Option<(SocketAddr, &[u8])> {
    let ip = Ipv4Packet::new_checked(out).ok()?;
    if ip.protocol() != proto::UDP || ip.is_fragment() {
        return None;
    }
    let total = usize::from(ip.total_len()).min(out.len());
    let udp = out.get(ip.header_len()..total)?;
    let port = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    Some((
        SocketAddr::V4(SocketAddrV4::new(ip.dst_addr(), port)),
        udp.get(8..)?,
    ))
}

/// Sends one outer packet built by the data plane: an unfragmented IPv4 UDP packet
/// through the NAT-T socket (headers stripped; the kernel adds its own, with our bound
/// address and port), anything else (raw ESP, outer fragments) through the raw socket
/// with its header included.
pub fn transmit(out: &[u8], s4500: &UdpSocket, raw: Option<&socket2::Socket>, stats: &mut Stats) {
    let Ok(ip) = Ipv4Packet::new_checked(out) else {
        stats.send_errors += 1;
        debug!(target: "ipsec", "IPSEC: outer packet is not IPv4 (IPv6 outer headers are not supported yet), dropped");
        return;
    };
    let total = usize::from(ip.total_len()).min(out.len());
    let dst = ip.dst_addr();
    if let Some((to, payload)) = udp_payload(out) {
        match s4500.send_to(payload, to) {
            Ok(_) => {
                stats.esp_tx += 1;
                trace!(target: "ipsec", "IPSEC: ESP-in-UDP {} bytes to {to}", payload.len());
            }
            Err(e) => {
                stats.send_errors += 1;
                debug!(target: "ipsec", "IPSEC: send to {to}: {e}");
            }
        }
        return;
    }
    let Some(raw) = raw else {
        stats.send_errors += 1;
        debug!(target: "ipsec", "IPSEC: raw ESP or fragment to {dst} but no raw socket, dropped");
        return;
    };
    let addr = socket2::SockAddr::from(SocketAddrV4::new(dst, 0));
    match raw.send_to(out.get(..total).unwrap_or(out), &addr) {
        Ok(_) => stats.esp_tx += 1,
        Err(e) => {
            stats.send_errors += 1;
            debug!(target: "ipsec", "IPSEC: raw send to {dst}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use hal_traits::{CipherAlg, MacAlg};
    use ipsec_core::Instant;
    use ipsec_core::esp::{Direction, Encryption, EspConfig, EspSa, Transform, UdpEncap};
    use ipsec_soft_crypto::{OsRng, SoftCrypto};

    use super::*;

    const T: Transform = Transform {
        enc: Encryption::Cbc(CipherAlg::Aes128Cbc),
        auth: Some(MacAlg::HmacSha1_96),
    };

    fn sa(dir: Direction, local: [u8; 4], remote: [u8; 4]) -> EspSa<SoftCrypto> {
        let mut c = EspConfig::tunnel(
            0x1234_5678,
            dir,
            T,
            IpAddr::V4(Ipv4Addr::from(local)),
            IpAddr::V4(Ipv4Addr::from(remote)),
        );
        c.udp_encap = Some(UdpEncap::STANDARD);
        EspSa::new(c, &[7; 16], &[9; 20], Instant::ZERO).unwrap()
    }

    /// What the daemon does to ESP-in-UDP, both ways: strip the outer headers the data
    /// plane built (the socket sends the payload), then rebuild them around a received
    /// payload so the peer's data plane opens it.
    #[test]
    fn strip_and_rebuild_outer_headers() {
        let mut out_sa = sa(Direction::Outbound, [203, 0, 113, 1], [203, 0, 113, 2]);
        let mut in_sa = sa(Direction::Inbound, [203, 0, 113, 2], [203, 0, 113, 1]);
        let inner = [
            0x45, 0, 0, 28, 0, 1, 0, 0, 64, 17, 0, 0, 198, 51, 100, 1, 198, 51, 100, 129, 0x30,
            0x39, 0x30, 0x39, 0, 8, 0, 0,
        ];
        let mut inner = inner.to_vec();
        let sum = ipsec_core::wire::checksum::checksum(&inner[..20]);
        inner[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut buf = vec![0u8; 256];
        let n = out_sa
            .encapsulate(Instant::ZERO, &inner, None, &mut OsRng, &mut buf)
            .unwrap();
        let (to, payload) = udp_payload(&buf[..n]).expect("ESP-in-UDP");
        assert_eq!(to, "203.0.113.2:4500".parse().unwrap());
        assert_eq!(payload.len(), n - 28);

        let mut rx = vec![0u8; HEADROOM + payload.len()];
        rx[HEADROOM..].copy_from_slice(payload);
        let from: SocketAddr = "203.0.113.1:4500".parse().unwrap();
        let start = prepend_udp_headers(&mut rx, payload.len(), from, to).unwrap();
        let d = in_sa.decapsulate(Instant::ZERO, &mut rx[start..]).unwrap();
        assert_eq!(d.packet, &inner[..]);

        // Raw ESP is not for the UDP socket; neither is IPv6.
        let v6: SocketAddr = "[2001:db8::1]:4500".parse().unwrap();
        assert!(prepend_udp_headers(&mut rx, 8, v6, v6).is_none());
        assert!(udp_payload(&inner[..20]).is_none());
    }
}
