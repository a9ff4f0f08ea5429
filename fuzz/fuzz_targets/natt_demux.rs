//! `natt_demux`: the NAT-T helpers of `ipsec-nat-t`.
//!
//! Byte 0 selects the part (modulo 3); the rest is its input.
//!
//! * 0, demux: the rest is a UDP 4500 payload for `demux::classify`, checked against the
//!   RFC 3948 §2 rules the module documents (keepalive only for the single `0xFF`, IKE
//!   only behind four zero octets with at least a 28-octet header, ESP with its SPI
//!   above 255 and at least 8 octets). Then framing: `frame_ike` and
//!   `frame_ike_in_place` of the rest must agree, classify back to `Ike(rest)` when it
//!   is at least 28 octets long, and refuse a short buffer with the length needed.
//! * 1, NAT-D: byte 1 picks the hash (MD5/SHA-1/SHA-256/SHA-384/SHA-512), then CKY-I,
//!   CKY-R, the local and remote addresses (IPv4 or IPv6 by a flag byte) and ports, then
//!   the received hashes (each a length byte and bytes). `natd::detect` with the real
//!   hash (`SoftPrf`) must agree with `detect_hashes` over `NatDHash::compute`, which
//!   must agree with `nat_d_hash`; hashes the peer would send (`natd::outgoing` from the
//!   other side) must give "no NAT", and with the addresses changed, the right side
//!   behind a NAT.
//! * 2, PAT: a `Pat<4>` (global 203.0.113.1) fed operations: raw outbound / inbound
//!   packets (IPv4 header checksum optionally fixed up so they get past the parser),
//!   structured packets (IKE to/from port 500 with a cookie, ESP with an SPI, later
//!   fragments, UDP 4500) between 4 inside hosts and 3 peers, and time jumps.
//!   Invariants: no panic; a forwarded packet has a valid IPv4 header checksum and, if
//!   its UDP checksum verified before, it still does; outbound forwarded packets come
//!   from the global address; the table never exceeds 4 entries; after
//!   `handle_timeout(now)` every deadline is after `now`; the translation table prints.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hal_traits::HashAlg;
use ipsec_core::wire::checksum;
use ipsec_core::wire::ipv4::Ipv4Packet;
use ipsec_core::wire::udp::UdpPacket;
use ipsec_core::{Duration, Instant};
use ipsec_nat_t::NatTError;
use ipsec_nat_t::demux::{
    Classified, InvalidReason, classify, frame_ike, frame_ike_in_place, framed_len,
};
use ipsec_nat_t::natd::{self, NatDHash, detect, detect_hashes, nat_d_hash, nat_d_input};
use ipsec_nat_t::pat::{Pat, PatConfig, Verdict};
use ipsec_soft_crypto::SoftPrf;
use libfuzzer_sys::fuzz_target;

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
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        for b in &mut a {
            *b = self.u8();
        }
        a
    }
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel % 3 {
        0 => demux(rest),
        1 => nat_d(Cursor(rest)),
        _ => pat(Cursor(rest)),
    }
});

fn demux(p: &[u8]) {
    let c = classify(p);
    match c {
        Classified::Keepalive => assert_eq!(p, [0xff]),
        Classified::Ike(ike) => {
            assert_eq!(p[..4], [0, 0, 0, 0]);
            assert_eq!(ike, &p[4..]);
            assert!(ike.len() >= 28);
        }
        Classified::Esp { spi } => {
            assert!(p.len() >= 8);
            assert_eq!(spi, u32::from_be_bytes([p[0], p[1], p[2], p[3]]));
            assert!(spi > 255);
        }
        Classified::Invalid(r) => match r {
            InvalidReason::Empty => assert!(p.is_empty()),
            InvalidReason::TooShortForIke => assert!(p.len() < 32 && p.starts_with(&[0; 4])),
            InvalidReason::TooShortForEsp => assert!(p.len() < 8 && p != [0xff]),
            InvalidReason::ReservedSpi => {
                assert!(p.len() >= 8 && u32::from_be_bytes([p[0], p[1], p[2], p[3]]) <= 255);
            }
            _ => {}
        },
    }
    if p.len() >= 32 && p.starts_with(&[0; 4]) {
        assert_eq!(c, Classified::Ike(&p[4..]));
    }

    // Framing round trip.
    let needed = framed_len(p.len());
    assert_eq!(needed, p.len() + 4);
    let mut out = vec![0u8; needed];
    assert_eq!(frame_ike(p, &mut out), Ok(needed));
    let mut inplace = vec![0u8; needed];
    inplace[..p.len()].copy_from_slice(p);
    assert_eq!(frame_ike_in_place(&mut inplace, p.len()), Ok(needed));
    assert_eq!(out, inplace, "frame_ike and frame_ike_in_place");
    match classify(&out) {
        Classified::Ike(ike) => {
            assert!(p.len() >= 28);
            assert_eq!(ike, p);
        }
        other => {
            assert!(p.len() < 28, "framed IKE classified as {other:?}");
            assert_eq!(other, Classified::Invalid(InvalidReason::TooShortForIke));
        }
    }
    let mut short = vec![0u8; needed - 1];
    assert_eq!(frame_ike(p, &mut short), Err(NatTError::BufferTooSmall { needed }));
    assert_eq!(
        frame_ike_in_place(&mut short, p.len()),
        Err(NatTError::BufferTooSmall { needed })
    );
}

const HASHES: [HashAlg; 5] = [
    HashAlg::Md5,
    HashAlg::Sha1,
    HashAlg::Sha256,
    HashAlg::Sha384,
    HashAlg::Sha512,
];

fn addr(c: &mut Cursor<'_>, v6: bool) -> SocketAddr {
    let ip = if v6 {
        IpAddr::V6(Ipv6Addr::from(c.array::<16>()))
    } else {
        IpAddr::V4(Ipv4Addr::from(c.array::<4>()))
    };
    SocketAddr::new(ip, c.u16())
}

fn nat_d(mut c: Cursor<'_>) {
    let alg = HASHES[usize::from(c.u8()) % HASHES.len()];
    let flags = c.u8();
    let cky_i = c.array::<8>();
    let cky_r = c.array::<8>();
    let local = addr(&mut c, flags & 1 != 0);
    let remote = addr(&mut c, flags & 2 != 0);
    let mut received: Vec<&[u8]> = Vec::new();
    while !c.0.is_empty() && received.len() < 8 {
        let n = usize::from(c.u8() % 80);
        received.push(c.bytes(n));
    }

    let mine = NatDHash::compute::<SoftPrf>(alg, &cky_i, &cky_r, local).expect("hash");
    let his = NatDHash::compute::<SoftPrf>(alg, &cky_i, &cky_r, remote).expect("hash");
    assert_eq!(mine.as_bytes().len(), alg.output_len());
    let mut raw = [0u8; 64];
    let n = nat_d_hash::<SoftPrf>(alg, &cky_i, &cky_r, local.ip(), local.port(), &mut raw)
        .expect("nat_d_hash");
    assert_eq!(&raw[..n], mine.as_bytes());
    assert!(mine.matches(&raw[..n]));
    let mut short = vec![0u8; n - 1];
    assert_eq!(
        nat_d_hash::<SoftPrf>(alg, &cky_i, &cky_r, local.ip(), local.port(), &mut short),
        Err(NatTError::BufferTooSmall { needed: n })
    );
    let mut input = [0u8; 64];
    let len = nat_d_input(&cky_i, &cky_r, local.ip(), local.port(), &mut input).expect("input");
    assert_eq!(len, 18 + if local.is_ipv4() { 4 } else { 16 });
    let _ = format!("{mine:?}");

    // Arbitrary received hashes: detect agrees with the rule.
    let d = detect::<SoftPrf>(alg, &cky_i, &cky_r, local, remote, &received);
    assert_eq!(d, detect_hashes(mine.as_bytes(), his.as_bytes(), &received));
    match d {
        Err(e) => {
            assert!(received.is_empty());
            assert_eq!(e, NatTError::NoNatD);
        }
        Ok(s) => {
            assert_eq!(s.local_behind_nat, received[0] != mine.as_bytes());
            assert_eq!(
                s.remote_behind_nat,
                !received[1..].iter().any(|r| *r == his.as_bytes())
            );
            let _ = (s.summary(), s.mine_message(), s.his_message(), s.nat_detected());
        }
    }

    // What the peer sends, seen without and with a NAT in between.
    let [r0, r1] =
        natd::outgoing::<SoftPrf>(alg, &cky_i, &cky_r, remote, local).expect("outgoing");
    let sent = [r0.as_bytes(), r1.as_bytes()];
    let s = detect::<SoftPrf>(alg, &cky_i, &cky_r, local, remote, &sent).expect("detect");
    assert!(!s.nat_detected(), "no NAT between {local} and {remote}");
    let mut moved = remote;
    moved.set_port(remote.port() ^ 0x8000);
    let s = detect::<SoftPrf>(alg, &cky_i, &cky_r, local, moved, &sent).expect("detect");
    assert!(s.remote_behind_nat && !s.local_behind_nat);
    let mut moved = local;
    moved.set_port(local.port() ^ 0x8000);
    let s = detect::<SoftPrf>(alg, &cky_i, &cky_r, moved, remote, &sent).expect("detect");
    assert!(s.local_behind_nat && !s.remote_behind_nat);
    let s = detect::<SoftPrf>(alg, &cky_i, &cky_r, local, remote, &sent[..1]).expect("detect");
    assert!(s.remote_behind_nat, "a single NAT-D proves nothing about the sender");
}

const GLOBAL: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const N: usize = 4;

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, frag: u16, l4: &[u8]) -> Vec<u8> {
    let total = 20 + l4.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    p[6..8].copy_from_slice(&frag.to_be_bytes());
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let ck = checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&ck.to_be_bytes());
    p[20..].copy_from_slice(l4);
    p
}

fn udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut l4 = vec![0u8; 8 + payload.len()];
    l4[8..].copy_from_slice(payload);
    let mut u = UdpPacket::new_unchecked(&mut l4[..]);
    u.set_src_port(sport);
    u.set_dst_port(dport);
    u.set_len((8 + payload.len()) as u16);
    u.fill_checksum_v4(src, dst);
    ipv4(src, dst, 17, 0, &l4)
}

/// A structured packet between inside host `h` and peer `p` (or the global address).
fn structured(c: &mut Cursor<'_>, outbound: bool) -> Vec<u8> {
    let (h, p, kind, value) = (c.u8(), c.u8(), c.u8(), c.u32());
    let inside = Ipv4Addr::new(10, 0, 0, 1 + h % 4);
    let peer = Ipv4Addr::new(198, 51, 100, 1 + p % 3);
    let (src, dst) = if outbound { (inside, peer) } else { (peer, GLOBAL) };
    let mut ike = vec![0u8; 28];
    ike[..4].copy_from_slice(&value.to_be_bytes());
    ike[4] = h;
    ike[16] = 1;
    ike[17] = 0x10;
    ike[27] = 28;
    let sport = if kind & 0x10 != 0 { 500 } else { 1000 + u16::from(h % 4) };
    match kind % 5 {
        0 => {
            let (sp, dp) = if outbound { (sport, 500) } else { (500, sport) };
            udp(src, dst, sp, dp, &ike)
        }
        1 | 2 => {
            let mut esp = value.max(256).to_be_bytes().to_vec();
            esp.extend_from_slice(&[0, 0, 0, 1, 0xaa, 0xbb, 0xcc, 0xdd]);
            ipv4(src, dst, 50, 0, &esp)
        }
        3 => ipv4(src, dst, if kind & 0x20 != 0 { 50 } else { 17 }, 0x00b9, &[7u8; 16]),
        _ => udp(src, dst, 4500, 4500, &ike[..12]),
    }
}

fn check_forwarded(before: &[u8], after: &[u8], outbound: bool) {
    let ip = Ipv4Packet::new_checked(after).expect("a forwarded packet parses");
    assert!(ip.header_checksum_ok(), "IPv4 header checksum of a forwarded packet");
    if outbound {
        assert_eq!(ip.src_addr(), GLOBAL, "source of an outbound packet");
    }
    let old = Ipv4Packet::new_checked(before).expect("parsed before");
    if old.protocol() == 17 && !old.is_fragment() {
        let ok_before = UdpPacket::new_checked(old.payload())
            .is_ok_and(|u| u.checksum() != 0 && u.verify_checksum_v4(old.src_addr(), old.dst_addr()));
        if ok_before {
            let u = UdpPacket::new_checked(ip.payload()).expect("UDP");
            assert!(
                u.verify_checksum_v4(ip.src_addr(), ip.dst_addr()),
                "UDP checksum after the rewrite"
            );
        }
    }
}

fn pat(mut c: Cursor<'_>) {
    let mut cfg = PatConfig::new(GLOBAL);
    if c.u8() & 1 != 0 {
        cfg.ike_timeout = Duration::from_secs(20);
        cfg.esp_timeout = Duration::from_secs(30);
        cfg.esp_pending_timeout = Duration::from_secs(5);
    }
    let mut p: Pat<N> = Pat::new(cfg);
    let mut now = Instant::from_millis(0);
    let mut ops = 0;
    while !c.0.is_empty() && ops < 300 {
        ops += 1;
        let op = c.u8();
        let outbound = op & 0x80 == 0;
        let mut pkt = match op % 4 {
            0 => {
                let len = usize::from(c.u16() % 2048);
                let mut v = c.bytes(len).to_vec();
                // Bit 6: fix up the IPv4 header checksum, so the packet reaches the helper.
                if op & 0x40 != 0 && v.len() >= 20 && v[0] >> 4 == 4 {
                    let hl = (usize::from(v[0] & 0xf) * 4).clamp(20, v.len());
                    v[10] = 0;
                    v[11] = 0;
                    let ck = checksum::checksum(&v[..hl]);
                    v[10..12].copy_from_slice(&ck.to_be_bytes());
                }
                v
            }
            1 => structured(&mut c, outbound),
            2 => {
                now = now + Duration::from_millis(u64::from(c.u16()) * 100);
                p.handle_timeout(now);
                if let Some(t) = p.poll_timeout() {
                    assert!(t > now, "deadline {t:?} not after handle_timeout({now:?})");
                }
                continue;
            }
            _ => {
                now = now + Duration::from_millis(u64::from(c.u8()));
                continue;
            }
        };
        let before = pkt.clone();
        let v = if outbound {
            p.outbound(now, &mut pkt)
        } else {
            p.inbound(now, &mut pkt)
        };
        match v {
            Verdict::Forward => check_forwarded(&before, &pkt, outbound),
            Verdict::Pass | Verdict::Drop(_) => assert_eq!(pkt, before, "a packet not forwarded changed"),
        }
        assert!(p.len() <= N);
        if let Some(t) = p.poll_timeout() {
            assert!(t > now, "deadline {t:?} not after {now:?} right after a packet");
        }
        for row in p.translations() {
            let _ = format!("{row}");
            assert!(row.expires > now);
        }
    }
    let c = p.counters();
    assert!(c.created >= c.expired);
}
