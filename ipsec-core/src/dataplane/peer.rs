//! Following a peer whose NAT mapping changed (RFC 3947 §4, RFC 3948 §2.3).
//!
//! When IKE sees an authenticated message from a new address or port for a known peer
//! (its NAT rebooted or the mapping timed out), it tells the port with
//! `IkeEvent::PeerMoved { from, to }`; the port calls [`Dataplane::move_peer`] and the
//! installed SAs send to the new mapping from the next packet on, with the same keys,
//! sequence numbers and replay windows. No lookup changes: SAs are found by SPI
//! (inbound) and by policy (outbound), never by the peer's address.

use super::Dataplane;
use core::net::SocketAddr;
use hal_traits::CryptoProvider;

impl<
    P: CryptoProvider,
    const SAS: usize,
    const POLICIES: usize,
    const W: usize,
    const FRAGS: usize,
    const FRAG_SIZE: usize,
    const FLOWS: usize,
> Dataplane<P, SAS, POLICIES, W, FRAGS, FRAG_SIZE, FLOWS>
{
    /// Re-addresses every SA whose peer is `from` to `to` (see
    /// [`EspSa::follow_peer`](crate::esp::EspSa::follow_peer)). Returns how many
    /// outbound SAs now send to `to`.
    pub fn move_peer(&mut self, from: SocketAddr, to: SocketAddr) -> usize {
        let mut moved = 0;
        for (_, sa) in self.outbound.iter_mut() {
            // The SADB buckets entries by SPI and checks `dst()` only as a predicate, so
            // changing an outbound SA's destination in place keeps the index valid.
            if sa.follow_peer(from, to) {
                moved += 1;
            }
        }
        for (_, sa) in self.inbound.iter_mut() {
            sa.follow_peer(from, to);
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use core::net::{IpAddr, Ipv4Addr, SocketAddr};

    use ipsec_soft_crypto::SoftCrypto;

    use crate::dataplane::tests::{Counter, Dp, T, ip, net};
    use crate::dataplane::{Inbound, Outbound};
    use crate::esp::{Direction, EspConfig, EspSa, UdpEncap};
    use crate::spd::{Policy, PolicyAction, Selector};
    use crate::time::Instant;
    use crate::wire::ipv4::Ipv4Packet;
    use crate::wire::udp::UdpPacket;

    const US: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
    const NAT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
    const NAT2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);

    fn selector() -> Selector {
        Selector::new(net([192, 0, 2, 0], 25), net([192, 0, 2, 128], 25)).unwrap()
    }

    /// A gateway with one UDP-encapsulated pair towards a peer behind a NAT at
    /// `NAT:4501`.
    fn gateway() -> Dp {
        let mut dp = Dp::new(PolicyAction::Bypass);
        dp.spd_mut()
            .insert(Policy {
                seq: 10,
                selector: selector(),
                action: PolicyAction::Protect { sa_group: 10 },
            })
            .unwrap();
        let encap = Some(UdpEncap {
            local_port: 4500,
            remote_port: 4501,
        });
        let mut o = EspConfig::tunnel(
            0x1111,
            Direction::Outbound,
            T,
            IpAddr::V4(US),
            IpAddr::V4(NAT),
        );
        o.selector = Some(selector());
        o.udp_encap = encap;
        let mut i = EspConfig::tunnel(
            0x2222,
            Direction::Inbound,
            T,
            IpAddr::V4(US),
            IpAddr::V4(NAT),
        );
        i.selector = Some(selector());
        i.udp_encap = encap;
        let o = EspSa::new(o, &[7; 16], &[9; 20], Instant::ZERO).unwrap();
        let i = EspSa::new(i, &[7; 16], &[9; 20], Instant::ZERO).unwrap();
        dp.install_pair(10, i, o).unwrap();
        dp
    }

    fn inner() -> Vec<u8> {
        ip(
            [192, 0, 2, 1],
            [192, 0, 2, 129],
            crate::wire::proto::ICMP,
            &[8, 0, 0, 0, 0, 1, 0, 1],
        )
    }

    /// `(outer destination, UDP destination port, ESP sequence number)` of the next
    /// outbound packet.
    fn send(dp: &mut Dp) -> (Ipv4Addr, u16, u32) {
        let mut out = [0u8; 256];
        let Ok(Outbound::Protected { len, .. }) =
            dp.process_outbound(Instant::ZERO, &inner(), &mut Counter(1), &mut out)
        else {
            panic!("not protected")
        };
        let ip = Ipv4Packet::new_checked(&out[..len]).unwrap();
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        let esp = udp.payload();
        let seq = u32::from_be_bytes([esp[4], esp[5], esp[6], esp[7]]);
        (ip.dst_addr(), udp.dst_port(), seq)
    }

    #[test]
    fn outbound_follows_the_new_mapping_with_the_same_sa() {
        let mut dp = gateway();
        assert_eq!(send(&mut dp), (NAT, 4501, 1));
        // Another peer's mapping: nothing moves.
        let other = SocketAddr::new(IpAddr::V4(NAT2), 4501);
        assert_eq!(
            dp.move_peer(other, SocketAddr::new(IpAddr::V4(NAT2), 4600)),
            0
        );
        // Same address, another port (the NAT restarted its mapping): nothing moves.
        let wrong_port = SocketAddr::new(IpAddr::V4(NAT), 4500);
        assert_eq!(
            dp.move_peer(wrong_port, SocketAddr::new(IpAddr::V4(NAT), 4600)),
            0
        );
        assert_eq!(send(&mut dp), (NAT, 4501, 2));
        // The mapping that is ours moves; the sequence numbers carry on.
        let from = SocketAddr::new(IpAddr::V4(NAT), 4501);
        let to = SocketAddr::new(IpAddr::V4(NAT2), 62_001);
        assert_eq!(dp.move_peer(from, to), 1);
        assert_eq!(send(&mut dp), (NAT2, 62_001, 3));
        // Moving again from the old mapping is a no-op.
        assert_eq!(dp.move_peer(from, to), 0);
        // The inbound SA is still found by its SPI and shows the new peer.
        let (_, sa) = dp.inbound_sas().next().unwrap();
        assert_eq!(sa.config().remote, Some(IpAddr::V4(NAT2)));
        assert_eq!(sa.config().udp_encap.map(|u| u.remote_port), Some(62_001));
    }

    #[test]
    fn raw_esp_moves_by_address_only() {
        let mut dp = Dp::new(PolicyAction::Bypass);
        let o = EspConfig::tunnel(
            0x1111,
            Direction::Outbound,
            T,
            IpAddr::V4(US),
            IpAddr::V4(NAT),
        );
        let o = EspSa::new(o, &[7; 16], &[9; 20], Instant::ZERO).unwrap();
        dp.install_outbound(10, o).unwrap();
        let from = SocketAddr::new(IpAddr::V4(NAT), 500);
        let to = SocketAddr::new(IpAddr::V4(NAT2), 500);
        assert_eq!(dp.move_peer(from, to), 1);
        let (_, sa) = dp.outbound_sas().next().unwrap();
        assert_eq!(sa.config().remote, Some(IpAddr::V4(NAT2)));
        assert_eq!(sa.config().udp_encap, None);
        // Inbound: the peer's packets from its new address still open (found by SPI).
        let mut peer = EspConfig::tunnel(
            0x2222,
            Direction::Outbound,
            T,
            IpAddr::V4(NAT2),
            IpAddr::V4(US),
        );
        peer.selector = None;
        let mut peer: EspSa<SoftCrypto> =
            EspSa::new(peer, &[7; 16], &[9; 20], Instant::ZERO).unwrap();
        let mut i = EspConfig::tunnel(
            0x2222,
            Direction::Inbound,
            T,
            IpAddr::V4(US),
            IpAddr::V4(NAT),
        );
        i.selector = None;
        dp.install_inbound(EspSa::new(i, &[7; 16], &[9; 20], Instant::ZERO).unwrap())
            .unwrap();
        let mut out = [0u8; 256];
        let n = peer
            .encapsulate(Instant::ZERO, &inner(), None, &mut Counter(3), &mut out)
            .unwrap();
        let Ok(Inbound::Decapsulated { packet, .. }) =
            dp.process_inbound(Instant::ZERO, &mut out[..n])
        else {
            panic!("not decapsulated")
        };
        assert_eq!(packet, &inner()[..]);
    }
}
