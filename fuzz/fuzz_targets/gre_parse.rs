//! `gre_parse`: the GRE wire parser and the GRE tunnel's inbound path over the same bytes,
//! then a short session of arbitrary packets and time jumps.
//!
//! Invariants: no panic; a parsed `GreRepr` emits (with the payload in place) into
//! `buffer_len()` bytes that re-parse to an equal `GreRepr` and the same payload; an
//! accepted header never claims more bytes than the buffer; whatever a tunnel delivers is
//! part of the input, a `ForwardBack` is an IPv4 GRE packet of protocol type 0 addressed
//! to the tunnel's peer, and a keepalive it builds is decapsulated by its peer as one to
//! send back; `poll_timeout` is never in the past after `handle_timeout`.
#![no_main]

use std::net::Ipv4Addr;

use ipsec_core::Instant;
use ipsec_core::gre::{Delivered, GreConfig, GreTunnel, KeepaliveConfig, PmtudConfig};
use ipsec_core::wire::gre::{GrePacket, GreRepr, ethertype};
use ipsec_core::wire::ipv4::Ipv4Packet;
use libfuzzer_sys::fuzz_target;

const A: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const B: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

fuzz_target!(|data: &[u8]| {
    wire(data);
    // Also as the payload of an IPv4 delivery header, where the captures put it.
    if let Ok(ip) = Ipv4Packet::new_checked(data) {
        wire(ip.payload());
    }
    for cfg in configs(A, B) {
        if let Ok(mut tun) = GreTunnel::new(cfg, Instant::ZERO) {
            inbound(&mut tun, data);
        }
    }
    session(data);
});

fn wire(data: &[u8]) {
    let Ok(p) = GrePacket::new_checked(data) else {
        return;
    };
    assert_eq!(p.version(), 0);
    assert!(p.header_len() <= data.len());
    let _ = (p.checksum(), p.reserved0(), p.reserved1(), p.key(), p.seq());
    let Ok(repr) = GreRepr::parse(&p) else {
        return;
    };
    let payload = p.payload();
    assert_eq!(repr.header_len(), p.header_len());
    let mut out = vec![0u8; repr.buffer_len(payload.len())];
    out[repr.header_len()..].copy_from_slice(payload);
    assert_eq!(repr.emit(&mut out, payload.len()), Ok(repr.header_len()));
    let q = GrePacket::new_checked(&out[..]).expect("emitted header parses");
    assert_eq!(GreRepr::parse(&q), Ok(repr));
    assert_eq!(q.payload(), payload);
}

fn configs(src: Ipv4Addr, dst: Ipv4Addr) -> [GreConfig; 3] {
    let plain = GreConfig::new(src, dst);
    let mut keyed = plain.with_keepalive(KeepaliveConfig::new(10, 3));
    keyed.key = Some(0x1234);
    keyed.sequencing = true;
    keyed.checksum = true;
    let mut pmtu = plain.with_path_mtu_discovery(PmtudConfig::DEFAULT);
    pmtu.ip_mtu = 1400;
    [plain, keyed, pmtu]
}

fn inbound(tun: &mut GreTunnel, data: &[u8]) {
    let range = data.as_ptr_range();
    let now = Instant::ZERO;
    match tun.decapsulate(now, data) {
        Ok(Delivered::Data { payload, .. }) => {
            assert!(range.start <= payload.as_ptr() && payload.as_ptr_range().end <= range.end);
        }
        Ok(Delivered::ForwardBack(back)) => {
            assert!(range.start <= back.as_ptr() && back.as_ptr_range().end <= range.end);
            let ip = Ipv4Packet::new_checked(back).expect("forwarded packet is IPv4");
            assert_eq!(ip.protocol(), 47);
            assert_eq!(ip.dst_addr(), tun.config().destination);
            assert_eq!(usize::from(ip.total_len()), back.len());
            let gre = GrePacket::new_checked(ip.payload()).expect("GRE inside");
            assert_eq!(gre.protocol_type(), ethertype::KEEPALIVE);
        }
        Ok(Delivered::KeepaliveReturned) | Err(_) => {}
    }
}

/// Ops: 0 = advance time by the next byte × 1 s and run timers, 1 = poll a keepalive and
/// give it to the peer, 2 = encapsulate a chunk and decapsulate it at the peer,
/// 3 = decapsulate a chunk, 4 = learn a path MTU.
fn session(data: &[u8]) {
    let [sel, rest @ ..] = data else {
        return;
    };
    let cfgs = configs(A, B);
    let peers = configs(B, A);
    let i = usize::from(*sel) % cfgs.len();
    let (Ok(mut a), Ok(mut b)) = (
        GreTunnel::new(cfgs[i], Instant::ZERO),
        GreTunnel::new(peers[i], Instant::ZERO),
    ) else {
        return;
    };
    let mut now = Instant::ZERO;
    let mut buf = [0u8; 2048];
    let mut ops = rest;
    while let [op, arg, tail @ ..] = ops {
        let len = usize::from(*arg).min(tail.len());
        let (chunk, next) = tail.split_at(len);
        match op % 5 {
            0 => {
                now = Instant::from_millis(now.as_millis() + u64::from(*arg) * 1000);
                a.handle_timeout(now);
                if let Some(t) = a.poll_timeout() {
                    assert!(t > now);
                }
                while a.poll_event().is_some() {}
                ops = tail;
                continue;
            }
            1 => {
                if let Some(tx) = a.poll_transmit(now, &mut buf) {
                    let pkt = &buf[..tx.len];
                    assert!(matches!(
                        b.decapsulate(now, pkt),
                        Ok(Delivered::ForwardBack(_))
                    ));
                }
                ops = tail;
                continue;
            }
            2 => {
                if let Ok(n) = a.encapsulate(now, u16::from(*arg) << 8, chunk, &mut buf) {
                    assert_eq!(n, chunk.len() + a.overhead());
                    let _ = b.decapsulate(now, &buf[..n]);
                }
            }
            3 => inbound(&mut a, chunk),
            _ => {
                let mtu = u16::from_be_bytes([*arg, chunk.first().copied().unwrap_or(0)]);
                let _ = a.set_path_mtu(now, mtu);
                assert!(a.tunnel_mtu() <= a.config().ip_mtu);
            }
        }
        ops = next;
    }
}
