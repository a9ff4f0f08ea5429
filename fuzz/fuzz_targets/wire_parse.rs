//! `wire_parse`: every wire parser over the same bytes.
//!
//! The input goes to `Ipv4Packet`, `Ipv6Packet`, `UdpPacket` and `EspPacket::new_checked`
//! (then every accessor), their `Repr::parse`, `Ipv6Packet::upper_layer`,
//! `Flow::from_ip_packet` and `esp::packet::peek_seq`; IP payloads go on to the UDP and ESP
//! parsers. Invariants: no panic; a parsed `Repr` emits into a buffer of `buffer_len()`
//! bytes and re-parses to an equal `Repr`; lengths agree with the length fields; the
//! parsers agree with each other on addresses and protocol; filled checksums verify and
//! the incremental IPv4 checksum update equals a recomputation.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};

use hal_traits::{CipherAlg, MacAlg};
use ipsec_core::esp::packet::peek_seq;
use ipsec_core::esp::{Direction, Encryption, EspConfig, Transform, UdpEncap};
use ipsec_core::spd::Flow;
use ipsec_core::wire::checksum;
use ipsec_core::wire::esp::{EspPacket, EspRepr};
use ipsec_core::wire::ipv4::{Ipv4Packet, Ipv4Repr};
use ipsec_core::wire::ipv6::{Ipv6Packet, Ipv6Repr};
use ipsec_core::wire::proto;
use ipsec_core::wire::udp::{UdpPacket, UdpRepr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ipv4(data);
    ipv6(data);
    udp(data);
    esp(data);
    let _ = Flow::from_ip_packet(data);
    let t = Transform {
        enc: Encryption::Cbc(CipherAlg::Aes128Cbc),
        auth: Some(MacAlg::HmacSha1_96),
    };
    let mut config = EspConfig::transport(1, Direction::Inbound, t);
    let _ = peek_seq(data, &config);
    config.udp_encap = Some(UdpEncap::STANDARD);
    let _ = peek_seq(data, &config);
});

fn upper(protocol: u8, payload: &[u8]) {
    match protocol {
        proto::UDP => udp(payload),
        proto::ESP => esp(payload),
        _ => {}
    }
}

fn ipv4(data: &[u8]) {
    let Ok(p) = Ipv4Packet::new_checked(data) else {
        return;
    };
    let total = usize::from(p.total_len());
    let hl = p.header_len();
    assert_eq!(p.version(), 4);
    assert_eq!(p.header().len(), hl);
    assert_eq!(p.options().len(), hl - 20);
    assert_eq!(p.payload().len(), total - hl);
    assert_eq!(p.dscp() << 2 | p.ecn(), p.tos());
    assert_eq!(p.frag_offset_bytes(), p.frag_offset_units() * 8);
    assert_eq!(
        p.is_fragment(),
        p.more_frags() || p.frag_offset_units() != 0
    );
    let _ = (p.ident(), p.dont_frag(), p.ttl(), p.checksum());
    assert_eq!(p.header_checksum_ok(), p.verify_checksum().is_ok());
    upper(p.protocol(), p.payload());

    if let Ok(flow) = Flow::from_ip_packet(data) {
        assert_eq!(flow.src, p.src_addr());
        assert_eq!(flow.dst, p.dst_addr());
        assert_eq!(flow.protocol, p.protocol());
        if !p.is_fragment() && p.protocol() == proto::UDP {
            let l4 = p.payload();
            assert!(flow.ports_known);
            assert_eq!(flow.src_port, u16::from_be_bytes([l4[0], l4[1]]));
            assert_eq!(flow.dst_port, u16::from_be_bytes([l4[2], l4[3]]));
        }
    }

    // A filled checksum verifies, and an incremental update equals a recomputation.
    let mut copy = data[..total].to_vec();
    let mut q = Ipv4Packet::new_unchecked(&mut copy[..]);
    q.fill_checksum();
    assert!(
        q.header_checksum_ok(),
        "filled IPv4 checksum does not verify"
    );
    let old_ck = q.checksum();
    let old_word = u16::from_be_bytes([copy[8], copy[9]]); // TTL | protocol
    let new_word = old_word.rotate_left(5) ^ 0x5a5a;
    copy[8..10].copy_from_slice(&new_word.to_be_bytes());
    let incremental = checksum::update(old_ck, old_word, new_word);
    let mut q = Ipv4Packet::new_unchecked(&mut copy[..]);
    q.fill_checksum();
    assert_eq!(incremental, q.checksum(), "incremental checksum update");

    let Ok(repr) = Ipv4Repr::parse(&p) else {
        return;
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    assert_eq!(repr.emit(&mut buf), Ok(repr.header_len()));
    buf[repr.header_len()..].copy_from_slice(p.payload());
    let p2 = Ipv4Packet::new_checked(&buf[..]).expect("emitted IPv4 parses");
    let repr2 = Ipv4Repr::parse(&p2).expect("emitted IPv4 Repr parses");
    assert_eq!(repr, repr2);
    assert_eq!(p2.payload(), p.payload());
}

fn ipv6(data: &[u8]) {
    let Ok(p) = Ipv6Packet::new_checked(data) else {
        return;
    };
    assert_eq!(p.version(), 6);
    assert_eq!(p.total_len(), 40 + usize::from(p.payload_len()));
    assert_eq!(p.payload().len(), usize::from(p.payload_len()));
    assert!(p.flow_label() < 1 << 20);
    let _ = (p.traffic_class(), p.hop_limit(), p.next_header());
    let upper_layer = p.upper_layer();
    if let Ok((nh, off)) = upper_layer {
        assert!(off <= p.total_len(), "upper layer past the payload");
        assert!(!matches!(nh, 0 | 43 | 60), "stopped on an extension header");
        upper(nh, &data[off..p.total_len()]);
        if let Ok(flow) = Flow::from_ip_packet(data) {
            assert_eq!(flow.src, p.src_addr());
            assert_eq!(flow.dst, p.dst_addr());
            if nh != proto::IPV6_FRAG {
                assert_eq!(flow.protocol, nh, "Flow and upper_layer disagree");
            }
        }
    }

    let Ok(repr) = Ipv6Repr::parse(&p) else {
        return;
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    assert_eq!(repr.emit(&mut buf), Ok(repr.header_len()));
    buf[repr.header_len()..].copy_from_slice(p.payload());
    let p2 = Ipv6Packet::new_checked(&buf[..]).expect("emitted IPv6 parses");
    let repr2 = Ipv6Repr::parse(&p2).expect("emitted IPv6 Repr parses");
    assert_eq!(repr, repr2);
    assert_eq!(p2.upper_layer(), upper_layer);
}

fn udp(data: &[u8]) {
    let Ok(u) = UdpPacket::new_checked(data) else {
        return;
    };
    let len = usize::from(u.len());
    assert_eq!(u.payload().len(), len - 8);
    let _ = (u.src_port(), u.dst_port(), u.checksum());
    let (s4, d4) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(198, 51, 100, 2));
    let (s6, d6) = (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2),
    );
    let _ = (u.verify_checksum_v4(s4, d4), u.verify_checksum_v6(s6, d6));

    let mut copy = data[..len].to_vec();
    let mut q = UdpPacket::new_unchecked(&mut copy[..]);
    q.fill_checksum_v4(s4, d4);
    assert_ne!(q.checksum(), 0, "a filled checksum is never 0");
    assert!(q.verify_checksum_v4(s4, d4), "filled UDP/IPv4 checksum");
    q.fill_checksum_v6(s6, d6);
    assert!(q.verify_checksum_v6(s6, d6), "filled UDP/IPv6 checksum");

    let repr = UdpRepr::parse(&u).expect("checked UDP parses");
    let payload = u.payload();
    let mut buf = vec![0u8; repr.buffer_len(payload.len())];
    assert_eq!(repr.emit(&mut buf, payload.len()), Ok(repr.header_len()));
    buf[repr.header_len()..].copy_from_slice(payload);
    let u2 = UdpPacket::new_checked(&buf[..]).expect("emitted UDP parses");
    assert_eq!(UdpRepr::parse(&u2), Ok(repr));
    assert_eq!(u2.len(), u.len());
    assert_eq!(u2.payload(), payload);
}

fn esp(data: &[u8]) {
    let Ok(e) = EspPacket::new_checked(data) else {
        return;
    };
    assert_eq!(e.header().len() + e.payload().len(), data.len());
    let (spi, seq) = (e.spi(), e.seq());
    let Ok(repr) = EspRepr::parse(&e) else {
        assert_eq!(spi, 0, "only SPI 0 is refused");
        return;
    };
    assert_eq!((repr.spi, repr.seq), (spi, seq));
    let mut buf = vec![0u8; repr.buffer_len()];
    assert_eq!(repr.emit(&mut buf), Ok(repr.header_len()));
    let e2 = EspPacket::new_checked(&buf[..]).expect("emitted ESP parses");
    assert_eq!(EspRepr::parse(&e2), Ok(repr));
    assert_eq!(e2.header(), e.header());
}
