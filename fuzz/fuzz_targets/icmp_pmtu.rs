//! `icmp_pmtu`: ICMP "too big" handling, `ipsec_core::wire::icmp` and
//! `Dataplane::handle_icmp` / `Dataplane::receive` (dataplane/path.rs).
//!
//! A `Dataplane` with four outbound SAs (and their inbound twins):
//!
//! | # | SPI | shape |
//! |---|---|---|
//! | 0 | 0x1001 | IPv4 tunnel 192.0.2.1 → 198.51.100.2, raw ESP |
//! | 1 | 0x1002 | IPv4 tunnel 192.0.2.1 → 203.0.113.9, UDP-encapsulated 4500 → 4500 |
//! | 2 | 0x1003 | IPv6 tunnel 2001:db8::1 → 2001:db8::2, raw ESP, ESN |
//! | 3 | 0x1004 | transport mode (no addresses: found for destination 0.0.0.0) |
//!
//! Input: byte 0 picks the interface MTU (1280, 1400, 1500, 9000) and the PMTU aging (10 s
//! or the default); then for each SA a `u32`: packets already "sent" (its next sequence
//! number is advanced past them; SA 2 also starts above 2^32). Then operations (opcode
//! modulo 5):
//!
//! | op | arguments | effect |
//! |---|---|---|
//! | 0 | u16 len, bytes | a raw IP packet for `handle_icmp` |
//! | 1 | u8 sa, u8 flags, u32 mtu, u32 seq, u8 quote | a frag-needed / packet-too-big about SA `sa` quoting (the first `quote` bytes of) an ESP or ESP-in-UDP packet with sequence number `seq`; flags: bit 0 correct checksum off, bit 1 through `receive` instead, bit 2 quote a wrong source, bit 3 quote the IKE non-ESP marker, bit 4 wrong UDP port, bit 5 sequence number relative to the SA's next one (`next - seq`), bit 6 outer IP version flipped |
//! | 2 | u16 s | advance time (seconds), `handle_timeout` |
//! | 3 | u8 | set the interface MTU (1280, 1400, 1500, 9000) |
//! | 4 | u16 len, bytes | a raw packet through `receive` |
//!
//! Invariants: no panic; for every SA, the path MTU is never above the interface MTU
//! nor below the floor of its family (576 for IPv4, 1280 for IPv6); a reported
//! `PathMtuChange` never raises the MTU, names the SA's SPI, and is what `path_mtu`
//! returns afterwards; the tunnel MTU fits the path MTU; PMTU counters only grow.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hal_traits::{CipherAlg, MacAlg};
use ipsec_core::dataplane::{Dataplane, PathMtuChange, Received};
use ipsec_core::esp::{Direction, Encryption, EspConfig, EspSa, Transform, UdpEncap};
use ipsec_core::lifetime::LifetimeConfig;
use ipsec_core::sadb::SaHandle;
use ipsec_core::spd::PolicyAction;
use ipsec_core::wire::checksum;
use ipsec_core::wire::icmp::{self, IcmpPacket, IcmpTooBigRepr, QuotedIp};
use ipsec_core::{Duration, Instant};
use ipsec_soft_crypto::SoftCrypto;
use libfuzzer_sys::fuzz_target;

type Dp = Dataplane<SoftCrypto, 8, 4>;

const T: Transform = Transform {
    enc: Encryption::Cbc(CipherAlg::Aes128Cbc),
    auth: Some(MacAlg::HmacSha1_96),
};
const MTUS: [u16; 4] = [1280, 1400, 1500, 9000];

struct SaInfo {
    h: SaHandle,
    spi: u32,
    local: IpAddr,
    remote: IpAddr,
    udp: bool,
    floor: u16,
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

fn cfg(spi: u32, d: Direction, local: Option<IpAddr>, remote: Option<IpAddr>) -> EspConfig {
    let mut c = match (local, remote) {
        (Some(l), Some(r)) => EspConfig::tunnel(spi, d, T, l, r),
        _ => EspConfig::transport(spi, d, T),
    };
    c.lifetime = LifetimeConfig::UNLIMITED;
    c
}

fn setup(c: &mut Cursor<'_>) -> (Dp, Vec<SaInfo>) {
    let conf = c.u8();
    let mut dp = Dp::new(PolicyAction::Bypass);
    dp.set_interface_mtu(MTUS[usize::from(conf % 4)]);
    if conf & 4 != 0 {
        dp.set_pmtu_aging(Duration::from_secs(10));
    }
    let a4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let b4 = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2));
    let n4 = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
    let a6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    let b6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let shapes: [(u32, Option<IpAddr>, Option<IpAddr>, bool, bool); 4] = [
        (0x1001, Some(a4), Some(b4), false, false),
        (0x1002, Some(a4), Some(n4), true, false),
        (0x1003, Some(a6), Some(b6), false, true),
        (0x1004, None, None, false, false),
    ];
    let mut sas = Vec::new();
    for (i, (spi, l, r, udp, esn)) in shapes.into_iter().enumerate() {
        let sent = u64::from(c.u32());
        let mk = |d: Direction, l, r| {
            let mut x = cfg(spi, d, l, r);
            x.esn = esn;
            if udp {
                x.udp_encap = Some(UdpEncap::STANDARD);
            }
            EspSa::<SoftCrypto>::new(x, &[0x11; 16], &[0x22; 20], Instant::ZERO).expect("SA")
        };
        let inb = mk(Direction::Inbound, r, l);
        let mut out = mk(Direction::Outbound, l, r);
        let base = if esn { 1u64 << 32 } else { 0 };
        out.advance_seq_to(base + 1 + sent);
        let (_, h) = dp.install_pair(10 + i as u32, inb, out).expect("install");
        let v6 = matches!(l, Some(IpAddr::V6(_)));
        sas.push(SaInfo {
            h,
            spi,
            local: l.unwrap_or(any),
            remote: r.unwrap_or(any),
            udp,
            floor: if v6 { icmp::IPV6_MIN_MTU } else { icmp::IPV4_MIN_MTU },
        });
    }
    (dp, sas)
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let ck = checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&ck.to_be_bytes());
    p[20..].copy_from_slice(payload);
    p
}

fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, nh: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40 + payload.len()];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    p[6] = nh;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[40..].copy_from_slice(payload);
    p
}

/// The packet SA `s` would have sent with sequence number `seq` (ESP or ESP-in-UDP).
fn quoted_packet(s: &SaInfo, seq: u32, flags: u8) -> Vec<u8> {
    let mut esp = Vec::new();
    esp.extend_from_slice(&s.spi.to_be_bytes());
    esp.extend_from_slice(&seq.to_be_bytes());
    esp.extend_from_slice(&[0x5a; 24]);
    let (src, dst) = if flags & 4 != 0 {
        (s.remote, s.local)
    } else {
        (s.local, s.remote)
    };
    let (proto, l4) = if s.udp || flags & 8 != 0 {
        let mut u = Vec::new();
        let dport: u16 = if flags & 16 != 0 { 4501 } else { 4500 };
        u.extend_from_slice(&4500u16.to_be_bytes());
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&((8 + esp.len() + 4) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        if flags & 8 != 0 {
            u.extend_from_slice(&[0; 4]);
        }
        u.extend_from_slice(&esp);
        (17, u)
    } else {
        (50, esp)
    };
    match (src, dst) {
        (IpAddr::V6(a), IpAddr::V6(b)) => ipv6(a, b, proto, &l4),
        (IpAddr::V4(a), IpAddr::V4(b)) => ipv4(a, b, proto, &l4),
        _ => unreachable!(),
    }
}

/// A frag-needed (IPv4) or packet-too-big (IPv6) from a router to our address.
fn too_big(s: &SaInfo, mtu: u32, quote: &[u8], flags: u8) -> Vec<u8> {
    let v6 = matches!(s.local, IpAddr::V6(_)) != (flags & 64 != 0);
    let router4 = Ipv4Addr::new(192, 0, 2, 254);
    let router6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe);
    let our4 = match s.local {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => Ipv4Addr::new(192, 0, 2, 1),
    };
    let our6 = match s.local {
        IpAddr::V6(a) => a,
        IpAddr::V4(_) => Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
    };
    let mut msg = vec![0u8; 8 + quote.len()];
    msg[8..].copy_from_slice(quote);
    let mut p = IcmpPacket::new_unchecked(&mut msg[..]);
    if v6 {
        p.set_msg_type(icmp::V6_PACKET_TOO_BIG);
        p.set_code(0);
        p.set_rest_of_header(mtu);
        p.fill_checksum_v6(router6, our6);
    } else {
        p.set_msg_type(icmp::V4_DEST_UNREACHABLE);
        p.set_code(icmp::V4_CODE_FRAG_NEEDED);
        p.set_rest_of_header(mtu & 0xffff);
        p.fill_checksum_v4();
    }
    if flags & 1 != 0 {
        msg[2] ^= 0x01;
    }
    if v6 {
        ipv6(router6, our6, 58, &msg)
    } else {
        ipv4(router4, our4, 1, &msg)
    }
}

fn check(dp: &Dp, sas: &[SaInfo], change: Option<PathMtuChange>) {
    let iface = dp.interface_mtu();
    for s in sas {
        let pm = dp.path_mtu(s.h);
        assert!(pm <= iface, "path MTU {pm} above the interface MTU {iface} (SPI {:#x})", s.spi);
        assert!(pm >= s.floor, "path MTU {pm} below the floor {} (SPI {:#x})", s.floor, s.spi);
        let tm = dp.tunnel_mtu(s.h).expect("outbound SA");
        assert!(tm <= usize::from(pm));
    }
    if let Some(c) = change {
        assert!(c.new <= c.old, "an ICMP message raised the path MTU: {c:?}");
        let s = sas.iter().find(|s| s.h == c.sa).expect("change for one of our SAs");
        assert_eq!(c.spi, s.spi);
        assert_eq!(dp.path_mtu(c.sa), c.new.min(iface));
    }
}

/// Self-checks of the ICMP codec on the raw bytes.
fn codec(bytes: &[u8]) {
    if let Ok(p) = IcmpPacket::new_checked(bytes) {
        let _ = (p.msg_type(), p.code(), p.checksum(), p.next_hop_mtu(), p.ptb_mtu());
        let _ = (p.verify_checksum_v4(), p.is_v4_frag_needed(), p.is_v6_packet_too_big());
        assert_eq!(p.quoted().len(), bytes.len() - icmp::HEADER_LEN);
        if let Ok(q) = QuotedIp::parse(p.quoted()) {
            assert!(q.payload.len() <= p.quoted().len());
        }
        // Re-emit a too-big quoting the same bytes: parses back.
        let r = IcmpTooBigRepr { mtu: p.next_hop_mtu(), original: p.quoted() };
        let mut out = vec![0u8; r.buffer_len_v4().max(r.buffer_len_v6())];
        let n = r.emit_v4(&mut out).expect("emit_v4");
        let q = IcmpPacket::new_checked(&out[..n]).expect("emitted");
        assert!(q.is_v4_frag_needed() && q.verify_checksum_v4());
        assert_eq!(q.next_hop_mtu(), r.mtu);
        let (s6, d6) = (Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED);
        let n = r.emit_v6(&mut out, s6, d6).expect("emit_v6");
        let q = IcmpPacket::new_checked(&out[..n]).expect("emitted");
        assert!(q.is_v6_packet_too_big() && q.verify_checksum_v6(s6, d6));
        assert_eq!(q.ptb_mtu(), u32::from(r.mtu));
    }
}

/// Require that a quoted sequence number was really sent. On by default since the library
/// fix (it used to trust numbers never sent on a young SA); `PMTU_STRICT_SEQ=0` turns it
/// off.
fn strict_seq() -> bool {
    static S: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *S.get_or_init(|| std::env::var_os("PMTU_STRICT_SEQ").is_none_or(|v| v != "0"))
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor(data);
    let (mut dp, sas) = setup(&mut c);
    let mut now = Instant::from_millis(1000);
    let mut ops = 0;
    let mut reass = vec![0u8; 9000];
    check(&dp, &sas, None);
    while !c.0.is_empty() && ops < 100 {
        ops += 1;
        let op = c.u8();
        let before = *dp.path_counters();
        let change = match op % 5 {
            0 => {
                let len = usize::from(c.u16() % 2048);
                let p = c.bytes(len);
                if p.len() > 20 {
                    codec(&p[20..]);
                }
                dp.handle_icmp(now, p).ok().flatten()
            }
            1 => {
                let s = &sas[usize::from(c.u8()) % sas.len()];
                let flags = c.u8();
                let mtu = c.u32();
                let mut seq = c.u32();
                let quote_len = usize::from(c.u8());
                if flags & 32 != 0 {
                    let next = dp.outbound_sa(s.h).expect("SA").next_seq();
                    seq = (next as u32).wrapping_sub(seq % 70_000);
                }
                let q = quoted_packet(s, seq, flags);
                let q = &q[..q.len().min(quote_len.max(1))];
                let mut p = too_big(s, mtu, q, flags);
                codec(&p[if p[0] >> 4 == 6 { 40 } else { 20 }..]);
                let next = dp.outbound_sa(s.h).expect("SA").next_seq();
                let ch = if flags & 2 != 0 {
                    match dp.receive(now, &mut p, &mut reass) {
                        Ok(Received::PathMtu(ch)) => Some(ch),
                        _ => None,
                    }
                } else {
                    dp.handle_icmp(now, &p).ok().flatten()
                };
                if strict_seq() && ch.is_some_and(|ch| ch.new < ch.old) {
                    // The quoted sequence number must be one of the last 2^16 the SA
                    // really used: 1 ..= next - 1 (low 32 bits on the wire).
                    let first = next.saturating_sub(1 << 16).max(1);
                    let ago = u64::from((next as u32).wrapping_sub(seq));
                    assert!(
                        ago >= 1 && ago <= next - first,
                        "PMTU lowered by an ICMP quoting sequence number {seq:#x}, never sent \
                         (next {next:#x})"
                    );
                }
                ch
            }
            2 => {
                now = now + Duration::from_secs(u64::from(c.u16()));
                dp.handle_timeout(now);
                None
            }
            3 => {
                dp.set_interface_mtu(MTUS[usize::from(c.u8() % 4)]);
                None
            }
            _ => {
                let len = usize::from(c.u16() % 2048);
                let mut p = c.bytes(len).to_vec();
                match dp.receive(now, &mut p, &mut reass) {
                    Ok(Received::PathMtu(ch)) => Some(ch),
                    _ => None,
                }
            }
        };
        check(&dp, &sas, change);
        let after = dp.path_counters();
        assert!(after.pmtu_updates >= before.pmtu_updates);
        assert!(after.icmp_too_big >= before.icmp_too_big);
    }
});
