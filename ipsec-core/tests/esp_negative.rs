//! Negative tests for ESP SAs: every rejection is a typed error and a counter, the replay
//! window moves only for authentic packets, and no input makes the data plane panic or
//! accept garbage.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hal_traits::{Aead, AeadAlg, CbcCipher, CipherAlg, CryptoError, Mac, MacAlg, SecureRng};
use ipsec_core::esp::{
    Direction, Encryption, EspConfig, EspCounters, EspError, EspSa, Mode, SaEvent, SealOptions,
    Transform, UdpEncap,
};
use ipsec_core::lifetime::LifetimeConfig;
use ipsec_core::replay::ReplaySnapshot;
use ipsec_core::spd::{AddrRange, Selector};
use ipsec_core::wire::WireError;
use ipsec_core::{Duration, Instant};
use ipsec_soft_crypto::{SoftAead, SoftCbc, SoftCrypto, SoftMac};

type Sa = EspSa<SoftCrypto>;

const T0: Instant = Instant::ZERO;
const SPI: u32 = 0x0102_0304;

// Outer (gateway or host) addresses: the outbound SA lives on A, the inbound one on B.
const A4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const B4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
// Hosts behind A and B (tunnel mode inner addresses).
const H1_4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 5);
const H2_4: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 7);
const H1_6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 5);
const H2_6: Ipv6Addr = Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 7);

const PROTO_ICMP: u8 = 1;
const PROTO_IPV4: u8 = 4;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_IPV6: u8 = 41;
const PROTO_ESP: u8 = 50;
const PROTO_ICMPV6: u8 = 58;
const PROTO_NONE: u8 = 59;

// ---------------------------------------------------------------------------------------
// Deterministic randomness.

/// SplitMix64: deterministic, seedable, good enough to pick IVs and garbage.
struct TestRng(u64);

impl TestRng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next_u64() % u64::try_from(n).unwrap()).unwrap()
    }

    fn byte(&mut self) -> u8 {
        self.next_u64().to_le_bytes()[0]
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

impl SecureRng for TestRng {
    fn fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), CryptoError> {
        self.fill(dest);
        Ok(())
    }
}

/// A random source that always fails, like a TRNG with a fault.
struct BrokenRng;

impl SecureRng for BrokenRng {
    fn fill_bytes(&mut self, _dest: &mut [u8]) -> Result<(), CryptoError> {
        Err(CryptoError::Rng)
    }
}

// ---------------------------------------------------------------------------------------
// Packets.

fn u16_of(n: usize) -> [u8; 2] {
    u16::try_from(n).unwrap().to_be_bytes()
}

/// The Internet checksum of the concatenation of `parts` (each part but the last even).
fn inet_checksum(parts: &[&[u8]]) -> [u8; 2] {
    let mut sum = 0u64;
    for part in parts {
        for c in part.chunks(2) {
            let w = if let [hi, lo] = c {
                [*hi, *lo]
            } else {
                [c[0], 0]
            };
            sum += u64::from(u16::from_be_bytes(w));
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    (!u16::try_from(sum).unwrap()).to_be_bytes()
}

fn ipv4_header_checksum(pkt: &mut [u8]) {
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    pkt[10..12].copy_from_slice(&[0, 0]);
    let c = inet_checksum(&[&pkt[..ihl]]);
    pkt[10..12].copy_from_slice(&c);
}

/// An option-less IPv4 packet with DF set and a correct header checksum.
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&u16_of(20 + payload.len()));
    p.extend_from_slice(&[0x1c, 0x46, 0x40, 0x00, 64, proto, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    ipv4_header_checksum(&mut p);
    p.extend_from_slice(payload);
    p
}

fn ipv6_with(src: Ipv6Addr, dst: Ipv6Addr, nh: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&u16_of(payload.len()));
    p.extend_from_slice(&[nh, 64]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&u16_of(len));
    p
}

fn pseudo_v6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, proto]);
    p
}

/// A UDP datagram with its checksum over `pseudo`.
fn udp(pseudo: &[u8], sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&u16_of(8 + data.len()));
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    let c = inet_checksum(&[pseudo, &u]);
    u[6..8].copy_from_slice(&c);
    u
}

/// An echo request (ICMP type 8, or ICMPv6 type 128 with `pseudo`).
fn echo(icmp_type: u8, pseudo: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = vec![icmp_type, 0, 0, 0, 0x12, 0x34, 0, 1];
    m.extend_from_slice(data);
    let c = inet_checksum(&[pseudo, &m]);
    m[2..4].copy_from_slice(&c);
    m
}

fn ipv4_icmp(src: Ipv4Addr, dst: Ipv4Addr, data: &[u8]) -> Vec<u8> {
    ipv4(src, dst, PROTO_ICMP, &echo(8, &[], data))
}

fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, data: &[u8]) -> Vec<u8> {
    let pseudo = pseudo_v4(src, dst, PROTO_UDP, 8 + data.len());
    ipv4(src, dst, PROTO_UDP, &udp(&pseudo, 5000, 53, data))
}

fn ipv6_icmp(src: Ipv6Addr, dst: Ipv6Addr, data: &[u8]) -> Vec<u8> {
    let pseudo = pseudo_v6(src, dst, PROTO_ICMPV6, 8 + data.len());
    ipv6_with(src, dst, PROTO_ICMPV6, &echo(128, &pseudo, data))
}

fn ipv6_udp(src: Ipv6Addr, dst: Ipv6Addr, data: &[u8]) -> Vec<u8> {
    let pseudo = pseudo_v6(src, dst, PROTO_UDP, 8 + data.len());
    ipv6_with(src, dst, PROTO_UDP, &udp(&pseudo, 5000, 53, data))
}

/// IPv6 with an 8-byte Hop-by-Hop header (a 4-byte PadN option) before the upper layer.
fn ipv6_hbh(src: Ipv6Addr, dst: Ipv6Addr, icmp: bool, data: &[u8]) -> Vec<u8> {
    let (proto, upper) = if icmp {
        let pseudo = pseudo_v6(src, dst, PROTO_ICMPV6, 8 + data.len());
        (PROTO_ICMPV6, echo(128, &pseudo, data))
    } else {
        let pseudo = pseudo_v6(src, dst, PROTO_UDP, 8 + data.len());
        (PROTO_UDP, udp(&pseudo, 5000, 53, data))
    };
    let mut ext = vec![proto, 0, 1, 4, 0, 0, 0, 0];
    ext.extend_from_slice(&upper);
    ipv6_with(src, dst, 0, &ext)
}

// ---------------------------------------------------------------------------------------
// SAs.

fn cbc(c: CipherAlg, m: MacAlg) -> Transform {
    Transform {
        enc: Encryption::Cbc(c),
        auth: Some(m),
    }
}

fn gcm(a: AeadAlg) -> Transform {
    Transform {
        enc: Encryption::Gcm(a),
        auth: None,
    }
}

fn representative() -> Vec<(&'static str, Transform)> {
    vec![
        (
            "aes128-cbc+sha1",
            cbc(CipherAlg::Aes128Cbc, MacAlg::HmacSha1_96),
        ),
        (
            "3des-cbc+sha1",
            cbc(CipherAlg::TripleDesCbc, MacAlg::HmacSha1_96),
        ),
        (
            "aes256-cbc+sha256",
            cbc(CipherAlg::Aes256Cbc, MacAlg::HmacSha256_128),
        ),
        ("des-cbc+md5", cbc(CipherAlg::DesCbc, MacAlg::HmacMd5_96)),
        ("aes128-gcm8", gcm(AeadAlg::Aes128Gcm8)),
        ("aes128-gcm12", gcm(AeadAlg::Aes128Gcm12)),
        ("aes128-gcm16", gcm(AeadAlg::Aes128Gcm16)),
        ("aes256-gcm16", gcm(AeadAlg::Aes256Gcm16)),
        (
            "null+sha1",
            Transform {
                enc: Encryption::Null,
                auth: Some(MacAlg::HmacSha1_96),
            },
        ),
    ]
}

fn is_null(t: Transform) -> bool {
    matches!(t.enc, Encryption::Null)
}

/// Random keying material of the right lengths for `t`.
fn keys(t: Transform, rng: &mut TestRng) -> (Vec<u8>, Vec<u8>) {
    let enc = rng.bytes(t.enc.keymat_len());
    let auth = rng.bytes(t.auth.map_or(0, MacAlg::key_len));
    (enc, auth)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    mode: Mode,
    /// The outer family (tunnel) or the packet's family (transport).
    outer6: bool,
    /// The inner family (tunnel mode only).
    inner6: bool,
    /// Transport mode over IPv6 with a Hop-by-Hop header.
    hbh: bool,
}

const TUNNEL_4IN4: Layout = Layout {
    mode: Mode::Tunnel,
    outer6: false,
    inner6: false,
    hbh: false,
};
const TUNNEL_6IN6: Layout = Layout {
    mode: Mode::Tunnel,
    outer6: true,
    inner6: true,
    hbh: false,
};
const TUNNEL_6IN4: Layout = Layout {
    mode: Mode::Tunnel,
    outer6: false,
    inner6: true,
    hbh: false,
};
const TUNNEL_4IN6: Layout = Layout {
    mode: Mode::Tunnel,
    outer6: true,
    inner6: false,
    hbh: false,
};
const TRANSPORT_4: Layout = Layout {
    mode: Mode::Transport,
    outer6: false,
    inner6: false,
    hbh: false,
};
const TRANSPORT_6: Layout = Layout {
    mode: Mode::Transport,
    outer6: true,
    inner6: true,
    hbh: false,
};
const TRANSPORT_6_HBH: Layout = Layout {
    mode: Mode::Transport,
    outer6: true,
    inner6: true,
    hbh: true,
};

const LAYOUTS: [Layout; 7] = [
    TUNNEL_4IN4,
    TUNNEL_6IN6,
    TUNNEL_6IN4,
    TUNNEL_4IN6,
    TRANSPORT_4,
    TRANSPORT_6,
    TRANSPORT_6_HBH,
];

fn outer_addrs(layout: Layout) -> (IpAddr, IpAddr) {
    if layout.outer6 {
        (IpAddr::V6(A6), IpAddr::V6(B6))
    } else {
        (IpAddr::V4(A4), IpAddr::V4(B4))
    }
}

/// Configurations of the two ends: outbound on A, inbound on B.
fn configs(t: Transform, layout: Layout, udp: bool, spi: u32) -> (EspConfig, EspConfig) {
    let (a, b) = outer_addrs(layout);
    let (mut o, mut i) = match layout.mode {
        Mode::Tunnel => (
            EspConfig::tunnel(spi, Direction::Outbound, t, a, b),
            EspConfig::tunnel(spi, Direction::Inbound, t, b, a),
        ),
        Mode::Transport => (
            EspConfig::transport(spi, Direction::Outbound, t),
            EspConfig::transport(spi, Direction::Inbound, t),
        ),
    };
    if udp {
        // Distinct ports, so that a mix-up of local and remote would show.
        o.udp_encap = Some(UdpEncap {
            local_port: 4500,
            remote_port: 4600,
        });
        i.udp_encap = Some(UdpEncap {
            local_port: 4600,
            remote_port: 4500,
        });
    }
    (o, i)
}

fn build(cfg: EspConfig, enc: &[u8], auth: &[u8]) -> Sa {
    Sa::new(cfg, enc, auth, T0).unwrap()
}

fn pair(t: Transform, layout: Layout, udp: bool, spi: u32, rng: &mut TestRng) -> (Sa, Sa) {
    let (enc, auth) = keys(t, rng);
    let (o, i) = configs(t, layout, udp, spi);
    (build(o, &enc, &auth), build(i, &enc, &auth))
}

/// A real packet for the layout: the inner packet (tunnel) or the original one (transport).
fn inner_packet(layout: Layout, icmp: bool, data: &[u8]) -> Vec<u8> {
    match (layout.mode, layout.inner6, layout.outer6, layout.hbh) {
        (Mode::Tunnel, false, _, _) if icmp => ipv4_icmp(H1_4, H2_4, data),
        (Mode::Tunnel, false, _, _) => ipv4_udp(H1_4, H2_4, data),
        (Mode::Tunnel, true, _, _) if icmp => ipv6_icmp(H1_6, H2_6, data),
        (Mode::Tunnel, true, _, _) => ipv6_udp(H1_6, H2_6, data),
        (Mode::Transport, _, false, _) if icmp => ipv4_icmp(A4, B4, data),
        (Mode::Transport, _, false, _) => ipv4_udp(A4, B4, data),
        (Mode::Transport, _, true, true) => ipv6_hbh(A6, B6, icmp, data),
        (Mode::Transport, _, true, false) if icmp => ipv6_icmp(A6, B6, data),
        (Mode::Transport, _, true, false) => ipv6_udp(A6, B6, data),
    }
}

/// Bytes of the original packet that transport mode keeps outside ESP.
fn prefix_len(layout: Layout) -> usize {
    match (layout.mode, layout.outer6, layout.hbh) {
        (Mode::Tunnel, ..) => 0,
        (Mode::Transport, false, _) => 20,
        (Mode::Transport, true, false) => 40,
        (Mode::Transport, true, true) => 48,
    }
}

/// The bytes ESP protects (and the counters and lifetimes count).
fn protected_len(layout: Layout, packet: &[u8]) -> usize {
    packet.len() - prefix_len(layout)
}

fn encap(o: &mut Sa, rng: &mut TestRng, packet: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; packet.len() + 200];
    let n = o.encapsulate(T0, packet, None, rng, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// Seals `payload` at the ESP layer (SPI to ICV).
fn seal(o: &mut Sa, rng: &mut TestRng, nh: u8, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; o.sealed_len(payload.len())];
    let n = o.seal(T0, nh, payload, rng, &mut buf).unwrap();
    assert_eq!(n, buf.len());
    buf
}

/// Wraps an ESP packet in the outer headers a packet of `layout` arrives with at B.
fn wrap(layout: Layout, udp_encap: bool, esp: &[u8]) -> Vec<u8> {
    let (proto, l4) = if udp_encap {
        let mut u = Vec::new();
        u.extend_from_slice(&4500u16.to_be_bytes());
        u.extend_from_slice(&4600u16.to_be_bytes());
        u.extend_from_slice(&u16_of(8 + esp.len()));
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(esp);
        if layout.outer6 {
            let c = inet_checksum(&[&pseudo_v6(A6, B6, PROTO_UDP, u.len()), &u]);
            u[6..8].copy_from_slice(&c);
        }
        (PROTO_UDP, u)
    } else {
        (PROTO_ESP, esp.to_vec())
    };
    if layout.outer6 {
        ipv6_with(A6, B6, proto, &l4)
    } else {
        ipv4(A4, B4, proto, &l4)
    }
}

/// Rewrites the outer length fields (IP and UDP) and checksum for a truncated packet, so
/// that parsing reaches ESP.
fn fix_lengths(pkt: &mut [u8], layout: Layout, udp_encap: bool) {
    let len = pkt.len();
    let l4 = if layout.outer6 {
        if len < 40 {
            return;
        }
        pkt[4..6].copy_from_slice(&u16_of(len - 40));
        40 + if layout.mode == Mode::Transport && layout.hbh {
            8
        } else {
            0
        }
    } else {
        if len < 20 {
            return;
        }
        pkt[2..4].copy_from_slice(&u16_of(len));
        ipv4_header_checksum(pkt);
        20
    };
    if udp_encap && len >= l4 + 8 {
        pkt[l4 + 4..l4 + 6].copy_from_slice(&u16_of(len - l4));
    }
}

fn seq_of(esp: &[u8]) -> u32 {
    u32::from_be_bytes(esp[4..8].try_into().unwrap())
}

/// Counts one inbound rejection with `e`, as the SA must.
fn count_recv(c: &mut EspCounters, e: EspError) {
    c.recv_errors += 1;
    reason(c, e);
}

fn count_send(c: &mut EspCounters, e: EspError) {
    c.send_errors += 1;
    reason(c, e);
}

fn reason(c: &mut EspCounters, e: EspError) {
    match e {
        EspError::Replayed => c.replay_failed += 1,
        EspError::TooOld => c.replay_too_old += 1,
        EspError::IcvMismatch => c.verify_failed += 1,
        EspError::InvalidLength => c.invalid_len += 1,
        EspError::BadPadding => c.bad_padding += 1,
        EspError::BadNextHeader => c.bad_next_header += 1,
        EspError::DummyPacket => c.dummy += 1,
        EspError::PolicyMismatch => c.policy_mismatch += 1,
        EspError::Malformed(_) => c.malformed += 1,
        EspError::NotEsp => c.not_esp += 1,
        EspError::SpiMismatch => c.invalid_spi += 1,
        EspError::SequenceOverflow => c.seq_overflow += 1,
        EspError::Expired => c.expired += 1,
        EspError::BufferTooSmall { .. } => c.buffer_too_small += 1,
        _ => c.internal += 1,
    }
}

/// What a successful `open_in_place` adds.
fn count_opened(c: &mut EspCounters, t: Transform) {
    c.verify += 1;
    if !is_null(t) {
        c.decrypt += 1;
    }
}

/// What a successful `decapsulate` of `bytes` protected bytes adds.
fn count_decap(c: &mut EspCounters, t: Transform, bytes: usize) {
    count_opened(c, t);
    c.decaps += 1;
    c.bytes_in += u64::try_from(bytes).unwrap();
}

fn count_encap(c: &mut EspCounters, t: Transform, bytes: usize) {
    c.encaps += 1;
    if !is_null(t) {
        c.encrypt += 1;
    }
    c.digest += 1;
    c.bytes_out += u64::try_from(bytes).unwrap();
}

fn snapshot(top: u64, esn: bool) -> ReplaySnapshot<2> {
    ReplaySnapshot {
        bitmap: [0; 2],
        top,
        size: 64,
        esn,
    }
}

// ---------------------------------------------------------------------------------------
// Tampering.

/// Every single-bit change anywhere in the ESP packet is refused, by the SPI check, the
/// replay check (a sequence number of 0) or the ICV, and none moves the window.
#[test]
fn every_bit_flip_is_refused_without_moving_the_window() {
    let mut rng = TestRng(1);
    for (name, t) in representative() {
        for esn in [false, true] {
            let (mut o, mut i) = {
                let (enc, auth) = keys(t, &mut rng);
                let (mut oc, mut ic) = configs(t, TRANSPORT_4, false, SPI);
                oc.esn = esn;
                ic.esn = esn;
                (build(oc, &enc, &auth), build(ic, &enc, &auth))
            };
            let payload = ipv4_icmp(H1_4, H2_4, &[0xab; 37]);
            let esp = seal(&mut o, &mut rng, PROTO_IPV4, &payload);
            let mut want = EspCounters::default();
            for bit in 0..esp.len() * 8 {
                let mut p = esp.clone();
                p[bit / 8] ^= 1 << (bit % 8);
                let expected = if bit < 32 {
                    EspError::SpiMismatch
                } else if seq_of(&p) == 0 {
                    EspError::TooOld
                } else {
                    EspError::IcvMismatch
                };
                let got = i.open_in_place(T0, &mut p);
                assert_eq!(got, Err(expected), "{name} esn={esn} bit {bit}");
                count_recv(&mut want, expected);
                assert_eq!(*i.counters(), want, "{name} esn={esn} bit {bit}");
                assert_eq!(i.replay_window().top(), 0);
            }
            assert_eq!(
                want.verify_failed,
                u64::try_from(esp.len() * 8 - 33).unwrap()
            );
            let mut p = esp.clone();
            let opened = i.open_in_place(T0, &mut p).unwrap();
            assert_eq!(&p[opened.payload], &payload[..], "{name}");
            assert_eq!((opened.seq, opened.next_header), (1, PROTO_IPV4));
            count_opened(&mut want, t);
            assert_eq!(*i.counters(), want, "{name}");
        }
    }
}

/// Whole packets, every mode and family, raw and UDP-encapsulated: a flipped bit in the
/// sequence number, IV, ciphertext or ICV is an ICV mismatch; a wrong SPI, a broken outer
/// header and a foreign UDP port are refused; the packet still opens afterwards, once.
#[test]
fn tampered_packets_are_refused_and_counted() {
    let mut rng = TestRng(2);
    for (name, t) in representative() {
        for layout in LAYOUTS {
            for udp in [false, true] {
                let ctx = format!("{name} {layout:?} udp={udp}");
                let (enc, auth) = keys(t, &mut rng);
                let (oc, ic) = configs(t, layout, udp, SPI);
                let mut o = build(oc, &enc, &auth);
                let mut i = build(ic.clone(), &enc, &auth);
                let mut other = build(EspConfig { spi: SPI + 1, ..ic }, &enc, &auth);
                let inner = inner_packet(layout, udp, &rng.bytes(41));
                let pkt = encap(&mut o, &mut rng, &inner);
                let plen = protected_len(layout, &inner);
                let esp_len = o.sealed_len(plen);
                assert_eq!(
                    pkt.len(),
                    prefix_len(layout) + o.outer_header_len() + esp_len,
                    "{ctx}"
                );
                let mut want_out = EspCounters::default();
                count_encap(&mut want_out, t, plen);
                assert_eq!(*o.counters(), want_out, "{ctx}");

                let esp = pkt.len() - esp_len;
                let iv = esp + 8;
                let ct = iv + t.iv_len();
                let icv = pkt.len() - t.icv_len();
                let mut spots = vec![esp + 4, esp + 7, ct, (ct + icv) / 2, icv - 1, icv];
                spots.push(pkt.len() - 1);
                if t.iv_len() > 0 {
                    spots.extend([iv, ct - 1]);
                }
                let mut want = EspCounters::default();
                for spot in spots {
                    for mask in [0x01, 0x10, 0x80] {
                        let mut p = pkt.clone();
                        p[spot] ^= mask;
                        let expected = if seq_of(&p[esp..]) == 0 {
                            EspError::TooOld
                        } else {
                            EspError::IcvMismatch
                        };
                        let got = i.decapsulate(T0, &mut p).map(|d| d.seq);
                        assert_eq!(got, Err(expected), "{ctx} at {spot} ^ {mask:#x}");
                        count_recv(&mut want, expected);
                        assert_eq!(*i.counters(), want, "{ctx}");
                    }
                }

                // Outer header damage: a wrong IPv4 checksum, a foreign UDP port.
                if !layout.outer6 {
                    let mut p = pkt.clone();
                    p[8] ^= 1; // TTL, without fixing the checksum
                    let e = Err(EspError::Malformed(WireError::BadChecksum));
                    assert_eq!(i.decapsulate(T0, &mut p).map(|d| d.seq), e, "{ctx}");
                    count_recv(&mut want, EspError::Malformed(WireError::BadChecksum));
                }
                if udp {
                    // Another UDP destination port: not ours.
                    let mut p = pkt.clone();
                    p[esp - 6] ^= 0x40;
                    let got = i.decapsulate(T0, &mut p).map(|d| d.seq);
                    assert_eq!(got, Err(EspError::NotEsp), "{ctx}");
                    count_recv(&mut want, EspError::NotEsp);
                    // Raw ESP sent to an SA that expects UDP encapsulation.
                    let mut p = wrap(layout, false, &pkt[esp..]);
                    let got = i.decapsulate(T0, &mut p).map(|d| d.seq);
                    assert_eq!(got, Err(EspError::NotEsp), "{ctx}");
                    count_recv(&mut want, EspError::NotEsp);
                } else {
                    // UDP-encapsulated ESP sent to an SA that expects raw ESP.
                    let mut p = wrap(layout, true, &pkt[esp..]);
                    let got = i.decapsulate(T0, &mut p).map(|d| d.seq);
                    assert_eq!(got, Err(EspError::NotEsp), "{ctx}");
                    count_recv(&mut want, EspError::NotEsp);
                }
                assert_eq!(*i.counters(), want, "{ctx}");

                // The same packet on an SA with another SPI.
                let mut p = pkt.clone();
                let got = other.decapsulate(T0, &mut p).map(|d| d.seq);
                assert_eq!(got, Err(EspError::SpiMismatch), "{ctx}");
                let mut want_other = EspCounters::default();
                count_recv(&mut want_other, EspError::SpiMismatch);
                assert_eq!(*other.counters(), want_other, "{ctx}");
                let mut p = pkt[esp..].to_vec();
                let got = other.open_in_place(T0, &mut p);
                assert_eq!(got, Err(EspError::SpiMismatch), "{ctx}");

                // Nothing moved: the genuine packet opens, exactly once.
                assert_eq!(i.replay_window().top(), 0, "{ctx}");
                let mut p = pkt.clone();
                let d = i.decapsulate(T0, &mut p).unwrap();
                assert_eq!(d.packet, &inner[..], "{ctx}");
                assert_eq!(d.seq, 1);
                count_decap(&mut want, t, plen);
                assert_eq!(*i.counters(), want, "{ctx}");
                let mut p = pkt.clone();
                let got = i.decapsulate(T0, &mut p).map(|d| d.seq);
                assert_eq!(got, Err(EspError::Replayed), "{ctx}");
                count_recv(&mut want, EspError::Replayed);
                assert_eq!(*i.counters(), want, "{ctx}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Anti-replay.

#[test]
fn duplicates_are_replayed_and_old_packets_too_old() {
    let mut rng = TestRng(3);
    for (name, t) in representative() {
        let (mut o, mut i) = pair(t, TUNNEL_4IN4, false, SPI, &mut rng);
        let inners: Vec<Vec<u8>> = (0..120u8)
            .map(|k| inner_packet(TUNNEL_4IN4, k % 2 == 0, &[k; 20]))
            .collect();
        let pkts: Vec<Vec<u8>> = inners.iter().map(|p| encap(&mut o, &mut rng, p)).collect();
        let mut want = EspCounters::default();
        let open = |i: &mut Sa, k: usize| {
            let mut p = pkts[k].clone();
            i.decapsulate(T0, &mut p).map(|d| {
                assert_eq!(d.packet, &inners[k][..], "{name}");
                d.seq
            })
        };
        // Seq 120 first: the window is now 57..=120.
        assert_eq!(open(&mut i, 119), Ok(120), "{name}");
        count_decap(&mut want, t, inners[119].len());
        for k in [0, 30, 55] {
            assert_eq!(
                open(&mut i, k),
                Err(EspError::TooOld),
                "{name} seq {}",
                k + 1
            );
            count_recv(&mut want, EspError::TooOld);
        }
        assert_eq!(open(&mut i, 56), Ok(57), "{name}");
        count_decap(&mut want, t, inners[56].len());
        for k in [56, 119] {
            assert_eq!(open(&mut i, k), Err(EspError::Replayed), "{name}");
            count_recv(&mut want, EspError::Replayed);
        }
        assert_eq!(*i.counters(), want, "{name}");
        // Everything else in the window, backwards, once each.
        for k in (57..119).rev() {
            assert_eq!(open(&mut i, k), Ok(u64::try_from(k + 1).unwrap()), "{name}");
            count_decap(&mut want, t, inners[k].len());
        }
        assert_eq!(*i.counters(), want, "{name}");
        assert_eq!(i.counters().replay_failed, 2);
        assert_eq!(i.counters().replay_too_old, 3);
    }
}

#[test]
fn esp_level_replay_and_disabled_window() {
    let mut rng = TestRng(4);
    let t = gcm(AeadAlg::Aes128Gcm16);
    let (enc, auth) = keys(t, &mut rng);
    let (oc, ic) = configs(t, TRANSPORT_4, false, SPI);
    let mut o = build(oc, &enc, &auth);
    let mut i = build(ic.clone(), &enc, &auth);
    let mut no_window = build(
        EspConfig {
            replay_window: 0,
            ..ic
        },
        &enc,
        &auth,
    );
    let pkts: Vec<Vec<u8>> = (0..100u8)
        .map(|k| seal(&mut o, &mut rng, PROTO_UDP, &[k; 9]))
        .collect();
    let mut p = pkts[99].clone();
    assert_eq!(i.open_in_place(T0, &mut p).map(|o| o.seq), Ok(100));
    let mut p = pkts[99].clone();
    assert_eq!(i.open_in_place(T0, &mut p), Err(EspError::Replayed));
    let mut p = pkts[35].clone();
    assert_eq!(i.open_in_place(T0, &mut p), Err(EspError::TooOld));
    let mut p = pkts[36].clone();
    assert_eq!(i.open_in_place(T0, &mut p).map(|o| o.seq), Ok(37));
    let mut want = EspCounters::default();
    count_opened(&mut want, t);
    count_opened(&mut want, t);
    count_recv(&mut want, EspError::Replayed);
    count_recv(&mut want, EspError::TooOld);
    assert_eq!(*i.counters(), want);

    // Anti-replay off: duplicates and old packets pass (RFC 4303 §3.4.3), forgeries do not.
    for k in [99, 99, 0, 0, 50] {
        let mut p = pkts[k].clone();
        let opened = no_window.open_in_place(T0, &mut p).unwrap();
        assert_eq!(&p[opened.payload], &[u8::try_from(k).unwrap(); 9]);
    }
    let mut p = pkts[3].clone();
    *p.last_mut().unwrap() ^= 1;
    assert_eq!(
        no_window.open_in_place(T0, &mut p),
        Err(EspError::IcvMismatch)
    );
}

// ---------------------------------------------------------------------------------------
// Truncation.

#[test]
fn truncated_esp_never_opens() {
    let mut rng = TestRng(5);
    for (name, t) in representative() {
        for esn in [false, true] {
            let (enc, auth) = keys(t, &mut rng);
            let (mut oc, mut ic) = configs(t, TRANSPORT_4, false, SPI);
            oc.esn = esn;
            ic.esn = esn;
            let mut o = build(oc, &enc, &auth);
            let mut i = build(ic, &enc, &auth);
            for payload_len in [0, 1, 17, 64] {
                let payload = rng.bytes(payload_len);
                let esp = seal(&mut o, &mut rng, PROTO_UDP, &payload);
                let mut want = *i.counters();
                for len in 0..esp.len() {
                    let mut p = esp[..len].to_vec();
                    let e = i.open_in_place(T0, &mut p).unwrap_err();
                    assert!(
                        matches!(e, EspError::InvalidLength | EspError::IcvMismatch),
                        "{name} len {len}/{}: {e:?}",
                        esp.len()
                    );
                    count_recv(&mut want, e);
                    assert_eq!(*i.counters(), want, "{name} len {len}");
                }
                let mut p = esp.clone();
                let opened = i.open_in_place(T0, &mut p).unwrap();
                assert_eq!(&p[opened.payload], &payload[..], "{name}");
            }
        }
    }
}

#[test]
fn truncated_packets_never_decapsulate() {
    let mut rng = TestRng(6);
    for (name, t) in representative() {
        for layout in LAYOUTS {
            for udp in [false, true] {
                let ctx = format!("{name} {layout:?} udp={udp}");
                let (mut o, mut i) = pair(t, layout, udp, SPI, &mut rng);
                let inner = inner_packet(layout, !udp, &rng.bytes(23));
                let pkt = encap(&mut o, &mut rng, &inner);
                let mut want = EspCounters::default();
                for len in 0..pkt.len() {
                    for fix in [false, true] {
                        let mut p = pkt[..len].to_vec();
                        if fix {
                            fix_lengths(&mut p, layout, udp);
                        }
                        let e = i.decapsulate(T0, &mut p).map(|d| d.seq).unwrap_err();
                        assert!(
                            matches!(
                                e,
                                EspError::InvalidLength
                                    | EspError::IcvMismatch
                                    | EspError::NotEsp
                                    | EspError::Malformed(_)
                            ),
                            "{ctx} len {len}/{} fix={fix}: {e:?}",
                            pkt.len()
                        );
                        count_recv(&mut want, e);
                        assert_eq!(*i.counters(), want, "{ctx} len {len} fix={fix}");
                    }
                }
                // Link-layer padding after a whole packet is ignored.
                let mut p = pkt.clone();
                p.extend_from_slice(&[0xee; 7]);
                let d = i.decapsulate(T0, &mut p).unwrap();
                assert_eq!(d.packet, &inner[..], "{ctx}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Hand-built packets with a valid ICV.

/// Builds an ESP packet by hand with the provider's primitives: `plaintext` is what goes
/// between the IV and the ICV before encryption (payload, padding, pad length, next header).
fn forge(
    t: Transform,
    enc_key: &[u8],
    auth_key: &[u8],
    seq: u32,
    iv: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    assert_eq!(plaintext.len() % t.enc.align(), 0);
    assert_eq!(iv.len(), t.iv_len());
    let mut pkt = Vec::new();
    pkt.extend_from_slice(&SPI.to_be_bytes());
    pkt.extend_from_slice(&seq.to_be_bytes());
    pkt.extend_from_slice(iv);
    pkt.extend_from_slice(plaintext);
    let ct = 8 + iv.len();
    match t.enc {
        Encryption::Null => {}
        Encryption::Cbc(alg) => {
            let c = SoftCbc::new(alg, enc_key).unwrap();
            c.encrypt(iv, &mut pkt[ct..]).unwrap();
        }
        Encryption::Gcm(alg) => {
            let (key, salt) = enc_key.split_at(alg.key_len());
            let a = SoftAead::new(alg, key).unwrap();
            let mut nonce = [0u8; 12];
            nonce[..4].copy_from_slice(salt);
            nonce[4..].copy_from_slice(iv);
            let aad: Vec<u8> = pkt[..8].to_vec();
            let mut tag = vec![0u8; alg.icv_len()];
            a.seal(&nonce, &aad, &mut pkt[ct..], &mut tag).unwrap();
            pkt.extend_from_slice(&tag);
        }
    }
    if let Some(m) = t.auth {
        let mac = SoftMac::new(m, auth_key).unwrap();
        let mut icv = vec![0u8; m.icv_len()];
        mac.compute(&[&pkt], &mut icv).unwrap();
        pkt.extend_from_slice(&icv);
    }
    pkt
}

/// payload | pad | pad length | next header, padded to the cipher's alignment, with the
/// padding bytes produced by `pad_byte(i)` for i = 1, 2, ...
fn plaintext(t: Transform, payload: &[u8], nh: u8, pad_byte: impl Fn(u8) -> u8) -> Vec<u8> {
    let align = t.enc.align();
    let pad = (align - (payload.len() + 2) % align) % align;
    let mut p = payload.to_vec();
    for k in 1..=u8::try_from(pad).unwrap() {
        p.push(pad_byte(k));
    }
    p.push(u8::try_from(pad).unwrap());
    p.push(nh);
    p
}

#[test]
fn bad_padding_with_a_valid_icv() {
    let mut rng = TestRng(7);
    let mut transforms = representative();
    transforms.push((
        "aes192-cbc+sha256",
        cbc(CipherAlg::Aes192Cbc, MacAlg::HmacSha256_128),
    ));
    for (name, t) in transforms {
        let (enc, auth) = keys(t, &mut rng);
        let (_, ic) = configs(t, TRANSPORT_4, false, SPI);
        let mut i = build(ic, &enc, &auth);
        let mut want = EspCounters::default();
        let mut seq = 0u32;
        let mut iv = || rng.bytes(t.iv_len());

        // Control: a well-formed forgery opens, so the forging itself is right.
        let payload = b"nineteen bytes long";
        seq += 1;
        let good = forge(
            t,
            &enc,
            &auth,
            seq,
            &iv(),
            &plaintext(t, payload, PROTO_UDP, |k| k),
        );
        let mut p = good.clone();
        let opened = i.open_in_place(T0, &mut p).unwrap();
        assert_eq!(&p[opened.payload], payload, "{name}");
        count_opened(&mut want, t);

        // Padding bytes that are not 1, 2, 3, ...: zeros, off by one, one byte changed.
        let bad_pads: [&dyn Fn(u8) -> u8; 3] =
            [&|_| 0, &|k| k + 1, &|k| if k == 3 { 0xff } else { k }];
        for (n, pad) in bad_pads.into_iter().enumerate() {
            // At least 3 bytes of padding: a 17-byte payload takes 5 (DES) or 13 (AES), an
            // 11-byte one 3 with the 4-byte alignment of NULL and GCM.
            let len = if t.enc.align() == 4 { 11 } else { 17 };
            let pt = plaintext(t, &payload[..len], PROTO_UDP, pad);
            if pt[len..pt.len() - 2]
                .iter()
                .zip(1u8..)
                .all(|(&b, v)| b == v)
            {
                continue;
            }
            seq += 1;
            let pkt = forge(t, &enc, &auth, seq, &iv(), &pt);
            let mut p = pkt.clone();
            assert_eq!(
                i.open_in_place(T0, &mut p),
                Err(EspError::BadPadding),
                "{name} pad {n}"
            );
            // Verified and decrypted, then refused for its trailer.
            count_opened(&mut want, t);
            count_recv(&mut want, EspError::BadPadding);
            // Authentic, so the window did move: the same packet is now a replay.
            let mut p = pkt.clone();
            assert_eq!(i.open_in_place(T0, &mut p), Err(EspError::Replayed));
            count_recv(&mut want, EspError::Replayed);
        }

        // A pad length beyond the payload (and beyond the whole ciphertext).
        for pad_len in [t.enc.align() * 2 - 1, 200, 255] {
            let mut pt = vec![0u8; t.enc.align() * 2];
            let n = pt.len();
            pt[n - 2] = u8::try_from(pad_len).unwrap();
            pt[n - 1] = PROTO_UDP;
            for (k, b) in pt[..n - 2].iter_mut().enumerate() {
                *b = u8::try_from(k + 1).unwrap();
            }
            seq += 1;
            let pkt = forge(t, &enc, &auth, seq, &iv(), &pt);
            let mut p = pkt.clone();
            assert_eq!(
                i.open_in_place(T0, &mut p),
                Err(EspError::BadPadding),
                "{name} pad length {pad_len}"
            );
            count_opened(&mut want, t);
            count_recv(&mut want, EspError::BadPadding);
        }
        // The largest pad length that fits is fine: an empty payload.
        let mut pt: Vec<u8> = (1..=u8::try_from(t.enc.align() * 2 - 2).unwrap()).collect();
        pt.extend_from_slice(&[u8::try_from(pt.len()).unwrap(), PROTO_UDP]);
        seq += 1;
        let mut p = forge(t, &enc, &auth, seq, &iv(), &pt);
        let opened = i.open_in_place(T0, &mut p).unwrap();
        assert!(opened.payload.is_empty(), "{name}");
        count_opened(&mut want, t);

        assert_eq!(*i.counters(), want, "{name}");
        assert!(i.counters().bad_padding >= 4, "{name}");
    }
}

// ---------------------------------------------------------------------------------------
// Next header, dummy packets, selectors.

#[test]
fn next_header_must_fit_the_mode() {
    let mut rng = TestRng(8);
    let tcp_segment = [
        0x13, 0x88, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0x20, 0x00, 0, 0, 0, 0,
    ];
    let v4 = ipv4_icmp(H1_4, H2_4, &[1, 2, 3, 4]);
    let v6 = ipv6_icmp(H1_6, H2_6, &[1, 2, 3, 4]);
    for (name, t) in representative() {
        for udp in [false, true] {
            for layout in [TUNNEL_4IN4, TUNNEL_6IN6, TRANSPORT_4, TRANSPORT_6] {
                let ctx = format!("{name} {layout:?} udp={udp}");
                let (mut o, mut i) = pair(t, layout, udp, SPI, &mut rng);
                let cases: Vec<(u8, &[u8], EspError)> = match layout.mode {
                    Mode::Tunnel => vec![
                        (PROTO_TCP, &tcp_segment[..], EspError::BadNextHeader),
                        (PROTO_IPV4, &v6[..], EspError::BadNextHeader),
                        (PROTO_IPV6, &v4[..], EspError::BadNextHeader),
                        (PROTO_UDP, &v4[..], EspError::BadNextHeader),
                        (
                            PROTO_IPV4,
                            &v4[..10],
                            EspError::Malformed(WireError::Truncated),
                        ),
                        (PROTO_NONE, &v4[..], EspError::DummyPacket),
                        (PROTO_NONE, &[], EspError::DummyPacket),
                    ],
                    Mode::Transport => vec![
                        (PROTO_IPV4, &v4[..], EspError::BadNextHeader),
                        (PROTO_IPV6, &v6[..], EspError::BadNextHeader),
                        (PROTO_NONE, &tcp_segment[..], EspError::DummyPacket),
                    ],
                };
                let mut want = EspCounters::default();
                for (nh, payload, err) in cases {
                    let esp = seal(&mut o, &mut rng, nh, payload);
                    // In transport mode too the outer header runs from A to B.
                    let pkt = wrap(layout, udp, &esp);
                    let mut p = pkt.clone();
                    let got = i.decapsulate(T0, &mut p).map(|d| d.seq);
                    assert_eq!(got, Err(err), "{ctx} nh {nh}");
                    // Verified and decrypted, then refused on what was inside.
                    count_opened(&mut want, t);
                    count_recv(&mut want, err);
                    assert_eq!(*i.counters(), want, "{ctx} nh {nh}");
                    // The packet was authentic: the window moved.
                    let mut p = pkt.clone();
                    let got = i.decapsulate(T0, &mut p).map(|d| d.seq);
                    assert_eq!(got, Err(EspError::Replayed), "{ctx} nh {nh}");
                    count_recv(&mut want, EspError::Replayed);
                }
                assert_eq!(*i.counters(), want, "{ctx}");
                assert_eq!(i.counters().decaps, 0);
            }
        }
    }
}

#[test]
fn dummy_packets_at_the_esp_layer() {
    let mut rng = TestRng(9);
    for (name, t) in representative() {
        let (mut o, mut i) = pair(t, TRANSPORT_4, false, SPI, &mut rng);
        let filler = rng.bytes(33);
        let esp = seal(&mut o, &mut rng, PROTO_NONE, &filler);
        let mut p = esp.clone();
        assert_eq!(
            i.open_in_place(T0, &mut p),
            Err(EspError::DummyPacket),
            "{name}"
        );
        let mut want = EspCounters::default();
        count_opened(&mut want, t);
        count_recv(&mut want, EspError::DummyPacket);
        assert_eq!(*i.counters(), want, "{name}");
    }
}

#[test]
fn inner_packets_outside_the_selectors_are_refused() {
    let mut rng = TestRng(10);
    for (name, t) in representative() {
        for udp in [false, true] {
            let (enc, auth) = keys(t, &mut rng);
            let (oc, mut ic) = configs(t, TUNNEL_4IN4, udp, SPI);
            let local = AddrRange::from_prefix(IpAddr::V4(Ipv4Addr::new(10, 2, 0, 0)), 16).unwrap();
            let remote =
                AddrRange::from_prefix(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 0)), 16).unwrap();
            ic.selector = Some(Selector::new(local, remote).unwrap());
            let mut udp_only = ic.clone();
            udp_only.selector = ic.selector.map(|s| s.with_protocol(PROTO_UDP));
            let mut o = build(oc, &enc, &auth);
            let mut i = build(ic, &enc, &auth);
            let mut iu = build(udp_only, &enc, &auth);

            let inside = ipv4_udp(H1_4, H2_4, b"in policy");
            let cases: [(Vec<u8>, Result<(), EspError>); 5] = [
                (inside.clone(), Ok(())),
                (
                    ipv4_udp(Ipv4Addr::new(10, 9, 9, 9), H2_4, b"spoofed source"),
                    Err(EspError::PolicyMismatch),
                ),
                (
                    ipv4_icmp(H1_4, Ipv4Addr::new(10, 3, 0, 1), b"elsewhere"),
                    Err(EspError::PolicyMismatch),
                ),
                (
                    ipv6_udp(H1_6, H2_6, b"wrong family"),
                    Err(EspError::PolicyMismatch),
                ),
                (ipv4_icmp(H1_4, H2_4, b"in policy"), Ok(())),
            ];
            let mut want = EspCounters::default();
            let mut want_u = EspCounters::default();
            for (k, (inner, expect)) in cases.iter().enumerate() {
                let pkt = encap(&mut o, &mut rng, inner);
                let mut p = pkt.clone();
                let got = i.decapsulate(T0, &mut p).map(|d| {
                    assert_eq!(d.packet, &inner[..]);
                });
                assert_eq!(got, *expect, "{name} udp={udp} case {k}");
                match expect {
                    Ok(()) => count_decap(&mut want, t, inner.len()),
                    Err(e) => {
                        count_opened(&mut want, t);
                        count_recv(&mut want, *e);
                    }
                }
                // The protocol-restricted selector takes only the UDP packet.
                let mut p = pkt.clone();
                let got = iu.decapsulate(T0, &mut p).map(|_| ());
                let expect_u = if *inner == inside {
                    Ok(())
                } else {
                    Err(EspError::PolicyMismatch)
                };
                assert_eq!(got, expect_u, "{name} udp={udp} case {k} (udp only)");
                match expect_u {
                    Ok(()) => count_decap(&mut want_u, t, inner.len()),
                    Err(e) => {
                        count_opened(&mut want_u, t);
                        count_recv(&mut want_u, e);
                    }
                }
            }
            assert_eq!(*i.counters(), want, "{name}");
            assert_eq!(*iu.counters(), want_u, "{name}");
            assert_eq!(i.counters().policy_mismatch, 3);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Sequence numbers.

#[test]
fn sequence_overflow_without_esn() {
    let mut rng = TestRng(11);
    for (name, t) in representative() {
        let (mut o, mut i) = pair(t, TUNNEL_4IN4, false, SPI, &mut rng);
        o.advance_seq_to(0xffff_ffff);
        let inner = inner_packet(TUNNEL_4IN4, true, b"last one");
        let pkt = encap(&mut o, &mut rng, &inner);
        let mut want_out = EspCounters::default();
        count_encap(&mut want_out, t, inner.len());

        i.restore_replay(&snapshot(0xffff_fff0, false)).unwrap();
        let mut p = pkt.clone();
        assert_eq!(i.decapsulate(T0, &mut p).unwrap().seq, 0xffff_ffff);

        let mut buf = vec![0u8; 512];
        for _ in 0..2 {
            assert_eq!(
                o.encapsulate(T0, &inner, None, &mut rng, &mut buf),
                Err(EspError::SequenceOverflow),
                "{name}"
            );
            count_send(&mut want_out, EspError::SequenceOverflow);
            assert_eq!(
                o.seal(T0, PROTO_IPV4, &inner, &mut rng, &mut buf),
                Err(EspError::SequenceOverflow),
                "{name}"
            );
            count_send(&mut want_out, EspError::SequenceOverflow);
        }
        assert_eq!(*o.counters(), want_out, "{name}");
        assert_eq!(o.next_seq(), 1 << 32);
    }
}

#[test]
fn esn_crosses_the_32_bit_boundary() {
    let mut rng = TestRng(12);
    for (name, t) in representative() {
        for layout in [TUNNEL_4IN4, TRANSPORT_6] {
            let (enc, auth) = keys(t, &mut rng);
            let (mut oc, mut ic) = configs(t, layout, false, SPI);
            oc.esn = true;
            ic.esn = true;
            let mut o = build(oc, &enc, &auth);
            let mut i = build(ic, &enc, &auth);
            let start = (1u64 << 32) - 20;
            o.advance_seq_to(start);
            i.restore_replay(&snapshot(start - 1, true)).unwrap();
            let inners: Vec<Vec<u8>> = (0..40u8)
                .map(|k| inner_packet(layout, k % 3 == 0, &[k; 11]))
                .collect();
            let pkts: Vec<Vec<u8>> = inners.iter().map(|p| encap(&mut o, &mut rng, p)).collect();
            // Seq 2^32 travels as 0: valid with ESN.
            let esp_off =
                |k: usize| pkts[k].len() - o.sealed_len(protected_len(layout, &inners[k]));
            assert_eq!(seq_of(&pkts[20][esp_off(20)..]), 0, "{name}");
            assert_eq!(seq_of(&pkts[19][esp_off(19)..]), 0xffff_ffff, "{name}");
            // Hold some packets from before the boundary back until after it: the window
            // then spans two subspaces and the receiver must infer the lower one.
            let held = [5usize, 12, 17, 19];
            let order = (0..40)
                .filter(|k| !held.contains(k))
                .chain(held.iter().copied());
            for k in order {
                let mut p = pkts[k].clone();
                let d = i
                    .decapsulate(T0, &mut p)
                    .unwrap_or_else(|e| panic!("{name} {layout:?} packet {k}: {e}"));
                assert_eq!(d.seq, start + u64::try_from(k).unwrap(), "{name}");
                assert_eq!(d.packet, &inners[k][..]);
            }
            for k in [0, 19, 20, 39] {
                let mut p = pkts[k].clone();
                let got = i.decapsulate(T0, &mut p).map(|d| d.seq);
                assert_eq!(got, Err(EspError::Replayed), "{name} packet {k}");
            }
            assert_eq!(i.replay_window().top(), start + 39);
            assert_eq!(i.counters().decaps, 40);
            assert_eq!(o.next_seq(), start + 40);
        }
    }
}

#[test]
fn esn_overflows_only_at_the_end_of_64_bits() {
    let mut rng = TestRng(13);
    let t = gcm(AeadAlg::Aes256Gcm16);
    let (enc, auth) = keys(t, &mut rng);
    let (mut oc, _) = configs(t, TRANSPORT_4, false, SPI);
    oc.esn = true;
    let mut o = build(oc, &enc, &auth);
    o.advance_seq_to(u64::MAX);
    let esp = seal(&mut o, &mut rng, PROTO_UDP, b"x");
    assert_eq!(seq_of(&esp), u32::MAX);
    let mut buf = [0u8; 128];
    assert_eq!(
        o.seal(T0, PROTO_UDP, b"x", &mut rng, &mut buf),
        Err(EspError::SequenceOverflow)
    );
    assert_eq!(o.counters().seq_overflow, 1);
    assert_eq!(o.counters().encaps, 1);
}

// ---------------------------------------------------------------------------------------
// Lifetimes.

#[test]
fn byte_lifetime_soft_then_hard() {
    let mut rng = TestRng(14);
    let limits = LifetimeConfig {
        soft_bytes: Some(250),
        hard_bytes: Some(500),
        ..LifetimeConfig::UNLIMITED
    };
    for (name, t) in representative() {
        for layout in [TUNNEL_4IN4, TRANSPORT_4] {
            let (enc, auth) = keys(t, &mut rng);
            let (mut oc, ic) = configs(t, layout, false, SPI);
            oc.lifetime = limits;
            let mut o = build(oc.clone(), &enc, &auth);
            // An unlimited sender for the receiver's half of the test.
            let mut feeder = build(
                EspConfig {
                    lifetime: LifetimeConfig::UNLIMITED,
                    ..oc
                },
                &enc,
                &auth,
            );
            let mut i = build(
                EspConfig {
                    lifetime: limits,
                    ..ic
                },
                &enc,
                &auth,
            );
            // 100 protected bytes per packet.
            let data_len = 100 - protected_len(layout, &inner_packet(layout, true, &[]));
            let inner = inner_packet(layout, true, &vec![7; data_len]);
            assert_eq!(protected_len(layout, &inner), 100);
            let events = [
                None,
                None,
                Some(SaEvent::SoftExpired { spi: SPI }),
                None,
                Some(SaEvent::HardExpired { spi: SPI }),
            ];
            for (k, ev) in events.iter().enumerate() {
                let _ = encap(&mut o, &mut rng, &inner);
                assert_eq!(o.poll_event(), *ev, "{name} out packet {}", k + 1);
                assert_eq!(o.poll_event(), None);
                let mut p = encap(&mut feeder, &mut rng, &inner);
                i.decapsulate(T0, &mut p).unwrap();
                assert_eq!(i.poll_event(), *ev, "{name} {layout:?} in packet {}", k + 1);
                assert_eq!(i.poll_event(), None);
            }
            assert_eq!(o.lifetime().bytes_used(), 500);
            assert_eq!(i.lifetime().bytes_used(), 500);
            assert!(o.lifetime().is_hard_expired());

            let mut buf = vec![0u8; 512];
            let got = o.encapsulate(T0, &inner, None, &mut rng, &mut buf);
            assert_eq!(got, Err(EspError::Expired), "{name}");
            let got = o.seal(T0, PROTO_UDP, &inner, &mut rng, &mut buf);
            assert_eq!(got, Err(EspError::Expired), "{name}");
            assert_eq!(o.counters().expired, 2);
            assert_eq!(o.counters().send_errors, 2);
            assert_eq!(o.counters().encaps, 5);

            let mut p = encap(&mut feeder, &mut rng, &inner);
            let got = i.decapsulate(T0, &mut p).map(|d| d.seq);
            assert_eq!(got, Err(EspError::Expired), "{name}");
            let mut want = EspCounters::default();
            for _ in 0..5 {
                count_decap(&mut want, t, 100);
            }
            count_recv(&mut want, EspError::Expired);
            assert_eq!(*i.counters(), want, "{name} {layout:?}");
            assert_eq!(o.poll_event(), None);
            assert_eq!(i.poll_event(), None);
        }
    }
}

#[test]
fn time_lifetime_fires_exactly_at_the_deadline() {
    let mut rng = TestRng(15);
    let t = cbc(CipherAlg::Aes128Cbc, MacAlg::HmacSha1_96);
    let created = Instant::from_millis(5_000);
    let lifetime = LifetimeConfig {
        soft_time: Some(Duration::from_secs(10)),
        hard_time: Some(Duration::from_secs(20)),
        ..LifetimeConfig::UNLIMITED
    };
    let (enc, auth) = keys(t, &mut rng);
    let (mut oc, mut ic) = configs(t, TUNNEL_4IN4, false, SPI);
    oc.lifetime = lifetime;
    ic.lifetime = lifetime;
    let mut o = Sa::new(oc, &enc, &auth, created).unwrap();
    let mut i = Sa::new(ic, &enc, &auth, created).unwrap();
    let inner = inner_packet(TUNNEL_4IN4, true, b"tick");
    let at = Instant::from_millis;

    for sa in [&mut o, &mut i] {
        assert_eq!(sa.poll_timeout(), Some(at(15_000)));
        sa.handle_timeout(at(14_999));
        assert_eq!(sa.poll_event(), None);
        assert_eq!(sa.poll_timeout(), Some(at(15_000)));
        sa.handle_timeout(at(15_000));
        assert_eq!(sa.poll_event(), Some(SaEvent::SoftExpired { spi: SPI }));
        assert_eq!(sa.poll_event(), None);
        assert_eq!(sa.poll_timeout(), Some(at(25_000)));
        // Spurious wake-ups are no-ops.
        sa.handle_timeout(at(15_000));
        sa.handle_timeout(at(24_999));
        assert_eq!(sa.poll_event(), None);
        assert_eq!(sa.poll_timeout(), Some(at(25_000)));
    }
    // Still usable between soft and hard.
    let mut p = encap(&mut o, &mut rng, &inner);
    assert!(i.decapsulate(at(24_999), &mut p).is_ok());
    let keep = encap(&mut o, &mut rng, &inner);

    for sa in [&mut o, &mut i] {
        sa.handle_timeout(at(25_000));
        assert_eq!(sa.poll_event(), Some(SaEvent::HardExpired { spi: SPI }));
        assert_eq!(sa.poll_event(), None);
        assert_eq!(sa.poll_timeout(), None);
        sa.handle_timeout(at(99_000));
        assert_eq!(sa.poll_event(), None);
    }
    let mut buf = vec![0u8; 256];
    let got = o.encapsulate(at(25_000), &inner, None, &mut rng, &mut buf);
    assert_eq!(got, Err(EspError::Expired));
    let mut p = keep.clone();
    assert_eq!(
        i.decapsulate(at(25_000), &mut p).map(|d| d.seq),
        Err(EspError::Expired)
    );
    assert_eq!(o.counters().expired, 1);
    assert_eq!(i.counters().expired, 1);

    // Both deadlines already due at the first wake-up: only the hard event.
    let (oc, _) = configs(t, TUNNEL_4IN4, false, SPI);
    let mut late = Sa::new(EspConfig { lifetime, ..oc }, &enc, &auth, created).unwrap();
    late.handle_timeout(at(1_000_000));
    assert_eq!(late.poll_event(), Some(SaEvent::HardExpired { spi: SPI }));
    assert_eq!(late.poll_event(), None);
}

// ---------------------------------------------------------------------------------------
// Buffers, direction, configuration.

#[test]
fn every_short_output_buffer_is_refused_with_the_needed_length() {
    let mut rng = TestRng(16);
    for (name, t) in representative() {
        for layout in LAYOUTS {
            for udp in [false, true] {
                let ctx = format!("{name} {layout:?} udp={udp}");
                let (mut o, _) = pair(t, layout, udp, SPI, &mut rng);
                let inner = inner_packet(layout, udp, &rng.bytes(29));
                let plen = protected_len(layout, &inner);
                let needed = prefix_len(layout) + o.outer_header_len() + o.sealed_len(plen);
                let iv = rng.bytes(t.iv_len());
                let opts = SealOptions {
                    iv: matches!(t.enc, Encryption::Cbc(_)).then_some(&iv[..]),
                    ipv4_ident: Some(7),
                };
                let mut want = EspCounters::default();
                for len in 0..needed {
                    let mut buf = vec![0u8; len];
                    let got = o.encapsulate_with(T0, &inner, &opts, &mut buf);
                    assert_eq!(got, Err(EspError::BufferTooSmall { needed }), "{ctx} {len}");
                    count_send(&mut want, EspError::BufferTooSmall { needed });
                }
                assert_eq!(*o.counters(), want, "{ctx}");
                assert_eq!(o.next_seq(), 1, "{ctx}");
                let mut buf = vec![0u8; needed];
                assert_eq!(o.encapsulate_with(T0, &inner, &opts, &mut buf), Ok(needed));

                let sealed = o.sealed_len(inner.len());
                for len in 0..sealed {
                    let mut buf = vec![0u8; len];
                    let got = o.seal_with_iv(T0, PROTO_IPV4, &inner, &iv, &mut buf);
                    let e = EspError::BufferTooSmall { needed: sealed };
                    assert_eq!(got, Err(e), "{ctx} {len}");
                    count_send(&mut want, e);
                }
                // seal_in_place, with the payload already in place.
                let sealed5 = o.sealed_len(5);
                for len in 0..sealed5 {
                    let mut buf = vec![0u8; len];
                    let got = o.seal_in_place(T0, PROTO_UDP, &mut buf, 5, Some(&iv));
                    let e = EspError::BufferTooSmall { needed: sealed5 };
                    assert_eq!(got, Err(e), "{ctx} {len}");
                    count_send(&mut want, e);
                }
                count_encap(&mut want, t, plen);
                assert_eq!(o.counters().buffer_too_small, want.buffer_too_small);
                assert_eq!(*o.counters(), want, "{ctx}");
            }
        }
    }
}

#[test]
fn wrong_direction_is_refused_everywhere() {
    let mut rng = TestRng(17);
    for (name, t) in representative() {
        let (mut o, mut i) = pair(t, TUNNEL_4IN4, false, SPI, &mut rng);
        let inner = inner_packet(TUNNEL_4IN4, true, b"which way");
        let iv = rng.bytes(t.iv_len());
        let mut buf = vec![0u8; 512];
        let opts = SealOptions {
            iv: Some(&iv),
            ipv4_ident: None,
        };
        let wd = Some(EspError::WrongDirection);
        assert_eq!(
            i.seal(T0, 4, &inner, &mut rng, &mut buf).err(),
            wd,
            "{name}"
        );
        assert_eq!(
            i.seal_with_iv(T0, 4, &inner, &iv, &mut buf).err(),
            wd,
            "{name}"
        );
        assert_eq!(i.seal_in_place(T0, 4, &mut buf, 10, Some(&iv)).err(), wd);
        assert_eq!(
            i.encapsulate(T0, &inner, None, &mut rng, &mut buf).err(),
            wd
        );
        assert_eq!(i.encapsulate_with(T0, &inner, &opts, &mut buf).err(), wd);

        let pkt = encap(&mut o, &mut rng, &inner);
        let mut p = pkt.clone();
        assert_eq!(o.decapsulate(T0, &mut p).map(|d| d.seq).err(), wd, "{name}");
        let esp_off = pkt.len() - o.sealed_len(inner.len());
        let mut p = pkt[esp_off..].to_vec();
        assert_eq!(o.open_in_place(T0, &mut p).err(), wd, "{name}");

        let mut want_i = EspCounters::default();
        for _ in 0..5 {
            count_send(&mut want_i, EspError::WrongDirection);
        }
        let mut want_o = EspCounters::default();
        count_encap(&mut want_o, t, inner.len());
        for _ in 0..2 {
            count_recv(&mut want_o, EspError::WrongDirection);
        }
        assert_eq!(*i.counters(), want_i, "{name}");
        assert_eq!(*o.counters(), want_o, "{name}");
        // The inbound SA is untouched and still opens the packet.
        let mut p = pkt.clone();
        assert_eq!(i.decapsulate(T0, &mut p).unwrap().packet, &inner[..]);
    }
}

#[test]
fn invalid_configurations_are_refused() {
    let bad = Some(EspError::InvalidConfig);
    let new = |t: Transform, enc: &[u8], auth: &[u8]| {
        Sa::new(
            EspConfig::transport(SPI, Direction::Inbound, t),
            enc,
            auth,
            T0,
        )
        .map(|sa| sa.spi())
    };
    let aes = cbc(CipherAlg::Aes128Cbc, MacAlg::HmacSha1_96);
    assert_eq!(new(aes, &[1; 16], &[2; 20]), Ok(SPI));
    for (enc, auth) in [
        (15, 20),
        (17, 20),
        (0, 20),
        (16, 19),
        (16, 21),
        (16, 0),
        (32, 20),
    ] {
        assert_eq!(
            new(aes, &vec![1; enc], &vec![2; auth]).err(),
            bad,
            "{enc}/{auth}"
        );
    }
    let tdes = cbc(CipherAlg::TripleDesCbc, MacAlg::HmacMd5_96);
    assert_eq!(new(tdes, &[1; 24], &[2; 16]), Ok(SPI));
    assert_eq!(new(tdes, &[1; 8], &[2; 16]).err(), bad);
    assert_eq!(new(tdes, &[1; 24], &[2; 20]).err(), bad);

    // CBC without integrity takes no integrity key.
    let aes_only = Transform {
        enc: Encryption::Cbc(CipherAlg::Aes256Cbc),
        auth: None,
    };
    assert_eq!(new(aes_only, &[1; 32], &[]), Ok(SPI));
    assert_eq!(new(aes_only, &[1; 32], &[2; 20]).err(), bad);

    // GCM: key plus a 4-byte salt, and no separate MAC.
    for alg in [
        AeadAlg::Aes128Gcm8,
        AeadAlg::Aes192Gcm12,
        AeadAlg::Aes256Gcm16,
    ] {
        let k = alg.key_len();
        assert_eq!(new(gcm(alg), &vec![1; k + 4], &[]), Ok(SPI));
        for enc in [k, k + 3, k + 5, 0] {
            assert_eq!(
                new(gcm(alg), &vec![1; enc], &[]).err(),
                bad,
                "{alg:?} {enc}"
            );
        }
        assert_eq!(new(gcm(alg), &vec![1; k + 4], &[2; 20]).err(), bad);
        let with_mac = Transform {
            enc: Encryption::Gcm(alg),
            auth: Some(MacAlg::HmacSha1_96),
        };
        assert_eq!(new(with_mac, &vec![1; k + 4], &[2; 20]).err(), bad);
        assert_eq!(new(with_mac, &vec![1; k + 4], &[]).err(), bad);
    }

    // NULL: integrity required, no cipher key.
    let null_only = Transform {
        enc: Encryption::Null,
        auth: None,
    };
    assert_eq!(new(null_only, &[], &[]).err(), bad);
    let null_sha = Transform {
        enc: Encryption::Null,
        auth: Some(MacAlg::HmacSha256_128),
    };
    assert_eq!(new(null_sha, &[], &[2; 32]), Ok(SPI));
    assert_eq!(new(null_sha, &[1; 16], &[2; 32]).err(), bad);

    // Replay windows the bitmap cannot hold.
    for window in [1, 31, 65, 1024] {
        let mut cfg = EspConfig::transport(SPI, Direction::Inbound, aes);
        cfg.replay_window = window;
        let got = Sa::new(cfg, &[1; 16], &[2; 20], T0).map(|sa| sa.spi());
        assert_eq!(got.err(), bad, "window {window}");
    }
    for window in [0, 32, 64] {
        let mut cfg = EspConfig::transport(SPI, Direction::Inbound, aes);
        cfg.replay_window = window;
        assert!(
            Sa::new(cfg, &[1; 16], &[2; 20], T0).is_ok(),
            "window {window}"
        );
    }

    // Misuse after creation: an ESN snapshot for a non-ESN SA, a wrong IV length, tunnel
    // endpoints of two families. All count as internal errors where they are counted.
    let mut rng = TestRng(18);
    let (mut o, mut i) = pair(aes, TUNNEL_4IN4, false, SPI, &mut rng);
    assert_eq!(i.restore_replay(&snapshot(5, true)).err(), bad);
    let mut big = snapshot(5, false);
    big.size = 128;
    assert_eq!(i.restore_replay(&big).err(), bad);
    let mut buf = vec![0u8; 256];
    assert_eq!(o.seal_with_iv(T0, 4, b"x", &[0; 8], &mut buf).err(), bad);
    assert_eq!(o.seal_with_iv(T0, 4, b"x", &[], &mut buf).err(), bad);
    assert_eq!(o.seal_in_place(T0, 4, &mut buf, 1, None).err(), bad);
    let mut want = EspCounters::default();
    for _ in 0..3 {
        count_send(&mut want, EspError::InvalidConfig);
    }
    assert_eq!(*o.counters(), want);
    assert_eq!(o.next_seq(), 1);

    let mut cfg = EspConfig::tunnel(
        SPI,
        Direction::Outbound,
        aes,
        IpAddr::V4(A4),
        IpAddr::V6(B6),
    );
    cfg.lifetime = LifetimeConfig::UNLIMITED;
    let mut mixed = Sa::new(cfg, &[1; 16], &[2; 20], T0).unwrap();
    let inner = inner_packet(TUNNEL_4IN4, true, b"x");
    let got = mixed.encapsulate(T0, &inner, None, &mut rng, &mut buf);
    assert_eq!(got.err(), bad);
    assert_eq!(mixed.counters().internal, 1);

    // A random source that fails: a crypto error, counted, nothing sent.
    let got = o.seal(T0, 4, b"x", &mut BrokenRng, &mut buf);
    assert_eq!(got, Err(EspError::Crypto(CryptoError::Rng)));
    let got = o.encapsulate(T0, &inner, None, &mut BrokenRng, &mut buf);
    assert_eq!(got, Err(EspError::Crypto(CryptoError::Rng)));
    assert_eq!(o.counters().internal, 5);
    assert_eq!(o.next_seq(), 1);
}

// ---------------------------------------------------------------------------------------
// Garbage.

/// An IPv6 packet whose Hop-by-Hop header runs past its payload length (but not past the
/// buffer: link-layer padding) must be refused as malformed, and counted.
#[test]
fn ipv6_extension_header_beyond_the_payload_is_counted() {
    let mut rng = TestRng(19);
    let t = cbc(CipherAlg::Aes128Cbc, MacAlg::HmacSha1_96);
    for layout in [TRANSPORT_6, TUNNEL_6IN6] {
        for udp in [false, true] {
            let (mut o, mut i) = pair(t, layout, udp, SPI, &mut rng);
            let esp = seal(&mut o, &mut rng, PROTO_UDP, &[9; 30]);
            // 40-byte header, then an 8-byte Hop-by-Hop header and ESP, but a payload
            // length that ends inside the extension header.
            let mut p = ipv6_with(A6, B6, 0, &[]);
            p.extend_from_slice(&[if udp { PROTO_UDP } else { PROTO_ESP }, 0, 1, 4, 0, 0, 0, 0]);
            p.extend_from_slice(&esp);
            p[4..6].copy_from_slice(&4u16.to_be_bytes());
            let got = i.decapsulate(T0, &mut p).map(|d| d.seq);
            assert!(
                matches!(got, Err(EspError::Malformed(_) | EspError::NotEsp)),
                "{layout:?} udp={udp}: {got:?}"
            );
            assert_eq!(i.counters().recv_errors, 1, "{layout:?} udp={udp}");
            assert_eq!(i.counters().malformed, 1, "{layout:?} udp={udp}");
        }
    }
}

/// Thousands of random buffers, some dressed as the SA's traffic (valid outer headers,
/// the right SPI, a sequence number in the window, ESP-sized), all refused and all
/// counted; the genuine packet still opens afterwards.
#[test]
fn random_bytes_never_decapsulate() {
    let mut rng = TestRng(20);
    let setups = [
        (
            cbc(CipherAlg::Aes128Cbc, MacAlg::HmacSha1_96),
            TUNNEL_4IN4,
            false,
        ),
        (gcm(AeadAlg::Aes128Gcm16), TUNNEL_4IN4, true),
        (gcm(AeadAlg::Aes256Gcm8), TUNNEL_6IN6, false),
        (
            Transform {
                enc: Encryption::Null,
                auth: Some(MacAlg::HmacSha1_96),
            },
            TRANSPORT_6_HBH,
            false,
        ),
        (
            cbc(CipherAlg::TripleDesCbc, MacAlg::HmacMd5_96),
            TRANSPORT_4,
            true,
        ),
        (
            cbc(CipherAlg::DesCbc, MacAlg::HmacSha256_128),
            TRANSPORT_6,
            true,
        ),
    ];
    for (t, layout, udp) in setups {
        let (mut o, mut i) = pair(t, layout, udp, SPI, &mut rng);
        let inner = inner_packet(layout, true, b"the real thing");
        let genuine = encap(&mut o, &mut rng, &inner);
        let esp_len = o.sealed_len(protected_len(layout, &inner));
        let esp_off = genuine.len() - esp_len;
        let tries = 1500;
        for n in 0..tries {
            let kind = n % 6;
            let len = rng.below(if kind == 0 { 300 } else { 200 });
            let mut p = match kind {
                // Pure noise.
                0 => rng.bytes(len),
                // Noise behind the genuine headers (lengths fixed up), the right SPI, a
                // sequence number in the window.
                1..=3 => {
                    let mut p = genuine[..esp_off].to_vec();
                    p.extend_from_slice(&SPI.to_be_bytes());
                    p.extend_from_slice(&u32::try_from(1 + rng.below(70)).unwrap().to_be_bytes());
                    let body = if kind == 3 {
                        // Exactly ESP-sized and block-aligned.
                        esp_len - 8
                    } else {
                        len
                    };
                    p.extend(rng.bytes(body));
                    fix_lengths(&mut p, layout, udp);
                    p
                }
                // The genuine packet with a few random bytes of its ESP part changed (the
                // outer header is not ESP's to protect).
                4 => {
                    let mut p = genuine.clone();
                    for _ in 0..1 + rng.below(4) {
                        let at = esp_off + rng.below(esp_len);
                        let b = rng.byte() | 1;
                        p[at] ^= b;
                    }
                    p
                }
                // A random IPv6 or IPv4 header chain in front of noise, with trailing
                // bytes after the announced length.
                _ => {
                    let mut p = if rng.below(2) == 0 {
                        let mut h = ipv6_with(A6, B6, [0, 43, 60, 50, 17][rng.below(5)], &[]);
                        h.extend(rng.bytes(len));
                        let plen = rng.below(len + 1);
                        h[4..6].copy_from_slice(&u16_of(plen));
                        h
                    } else {
                        let mut h = ipv4(A4, B4, [50, 17][rng.below(2)], &rng.bytes(len));
                        let total = 20 + rng.below(len + 1);
                        h[2..4].copy_from_slice(&u16_of(total));
                        ipv4_header_checksum(&mut h);
                        h
                    };
                    if rng.below(2) == 0 && p.len() > 44 {
                        // An SPI that matches right where ESP might be.
                        let at = 20 + rng.below(p.len() - 24);
                        p[at..at + 4].copy_from_slice(&SPI.to_be_bytes());
                    }
                    p
                }
            };
            let got = i.decapsulate(T0, &mut p).map(|d| d.seq);
            assert!(
                got.is_err(),
                "{t:?} {layout:?} try {n} kind {kind}: accepted"
            );
            assert_eq!(
                i.counters().recv_errors,
                u64::try_from(n + 1).unwrap(),
                "{t:?} {layout:?} try {n} kind {kind}: {got:?} not counted"
            );
        }
        let c = *i.counters();
        assert_eq!(c.decaps, 0);
        assert_eq!(c.verify, 0);
        assert_eq!(
            c.replay_failed
                + c.replay_too_old
                + c.verify_failed
                + c.invalid_len
                + c.bad_padding
                + c.bad_next_header
                + c.dummy
                + c.policy_mismatch
                + c.malformed
                + c.invalid_spi
                + c.not_esp
                + c.internal,
            c.recv_errors
        );
        assert_eq!(i.replay_window().top(), 0);
        let mut p = genuine.clone();
        assert_eq!(i.decapsulate(T0, &mut p).unwrap().packet, &inner[..]);
    }
}
