//! Path MTU discovery, the DF bit, fragmentation before and after encryption, reassembly
//! and MSS clamping through `Dataplane::send` / `Dataplane::receive`, on a virtual clock.
//!
//! The topology is the chapter's: spoke gateway A (10.0.68.0/24 behind 192.0.2.1) and hub
//! B (10.1.1.0/24 behind 198.51.100.2), `esp-3des esp-sha-hmac` in tunnel mode, 1500-byte
//! interfaces, and a router in between (192.0.2.254) whose next hop has an MTU of 1400.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    missing_docs
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hal_traits::{CipherAlg, CryptoError, MacAlg, SecureRng};
use ipsec_core::dataplane::{
    Dataplane, DataplaneError, Fragmentation, IcmpReject, MssClamp, PathMtuChange, Received,
    SendBuffers, Sent,
};
use ipsec_core::esp::{DfBit, Direction, Encryption, EspConfig, EspSa, Transform, UdpEncap};
use ipsec_core::lifetime::LifetimeConfig;
use ipsec_core::spd::{AddrRange, Policy, PolicyAction, Selector};
use ipsec_core::wire::checksum;
use ipsec_core::wire::icmp::IcmpPacket;
use ipsec_core::wire::ipv4::{Ipv4Packet, Ipv4Repr};
use ipsec_core::wire::ipv6::Ipv6Repr;
use ipsec_core::{Duration, Instant};
use ipsec_soft_crypto::SoftCrypto;

type Dp = Dataplane<SoftCrypto, 8, 4>;

const GW_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const GW_B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
const HOST_A: [u8; 4] = [10, 0, 68, 5];
const HOST_B: [u8; 4] = [10, 1, 1, 7];
const INSIDE_A: Ipv4Addr = Ipv4Addr::new(10, 0, 68, 1);

const T: Transform = Transform {
    enc: Encryption::Cbc(CipherAlg::TripleDesCbc),
    auth: Some(MacAlg::HmacSha1_96),
};
const SPI_AB: u32 = 0x5ea1_0001;
const SPI_BA: u32 = 0x5ea1_0002;

struct Rng(u8);
impl SecureRng for Rng {
    fn fill_bytes(&mut self, d: &mut [u8]) -> Result<(), CryptoError> {
        for b in d {
            self.0 = self.0.wrapping_add(29);
            *b = self.0;
        }
        Ok(())
    }
}

fn net(a: [u8; 4], len: u8) -> AddrRange {
    AddrRange::from_prefix(IpAddr::V4(Ipv4Addr::from(a)), len).unwrap()
}

fn selector(a_side: bool) -> Selector {
    let (l, r) = (net([10, 0, 68, 0], 24), net([10, 1, 1, 0], 24));
    if a_side {
        Selector::new(l, r).unwrap()
    } else {
        Selector::new(r, l).unwrap()
    }
}

fn sa(
    spi: u32,
    dir: Direction,
    local: IpAddr,
    remote: IpAddr,
    tweak: impl Fn(&mut EspConfig),
) -> EspSa<SoftCrypto> {
    let mut c = EspConfig::tunnel(spi, dir, T, local, remote);
    c.lifetime = LifetimeConfig::UNLIMITED;
    tweak(&mut c);
    EspSa::new(c, &[0x3d; 24], &[0x5a; 20], Instant::ZERO).unwrap()
}

/// The two gateways, with `tweak` applied to every SA's configuration.
fn gateways_with(tweak: impl Fn(&mut EspConfig) + Copy) -> (Dp, Dp) {
    let (a4, b4) = (IpAddr::V4(GW_A), IpAddr::V4(GW_B));
    let mut a = Dp::new(PolicyAction::Bypass);
    let mut b = Dp::new(PolicyAction::Bypass);
    for (dp, side) in [(&mut a, true), (&mut b, false)] {
        dp.spd_mut()
            .insert(Policy {
                seq: 10,
                selector: selector(side),
                action: PolicyAction::Protect { sa_group: 10 },
            })
            .unwrap();
    }
    a.install_pair(
        10,
        sa(SPI_BA, Direction::Inbound, a4, b4, tweak),
        sa(SPI_AB, Direction::Outbound, a4, b4, tweak),
    )
    .unwrap();
    b.install_pair(
        10,
        sa(SPI_AB, Direction::Inbound, b4, a4, tweak),
        sa(SPI_BA, Direction::Outbound, b4, a4, tweak),
    )
    .unwrap();
    (a, b)
}

fn gateways() -> (Dp, Dp) {
    gateways_with(|_| {})
}

/// An IPv4 packet of exactly `len` bytes from HOST_A to HOST_B.
fn inner(len: usize, df: bool, ident: u16) -> Vec<u8> {
    let r = Ipv4Repr {
        src: Ipv4Addr::from(HOST_A),
        dst: Ipv4Addr::from(HOST_B),
        protocol: 17,
        payload_len: len - 20,
        ttl: 64,
        tos: 0,
        ident,
        dont_frag: df,
        more_frags: false,
        frag_offset: 0,
    };
    let mut v = vec![0u8; len];
    r.emit(&mut v).unwrap();
    for (i, b) in v[20..].iter_mut().enumerate() {
        *b = (i * 31 + 7) as u8;
    }
    v
}

/// Sends `packet` from `dp`, collecting what goes to the wire.
fn send(
    dp: &mut Dp,
    now: Instant,
    packet: &[u8],
) -> (Result<Sent, DataplaneError>, Vec<Vec<u8>>, Vec<u8>) {
    let mut p = packet.to_vec();
    let mut work = vec![0u8; 4096];
    let mut frag = vec![0u8; 1500];
    let mut wire = Vec::new();
    let r = dp.send(
        now,
        &mut p,
        &mut Rng(1),
        SendBuffers {
            work: &mut work,
            frag: &mut frag,
        },
        |pkt| wire.push(pkt.to_vec()),
    );
    (r, wire, work)
}

/// The router's ICMP frag-needed for `esp` (a packet A sent), with next-hop MTU `mtu`.
fn frag_needed(esp: &[u8], mtu: u16, quote: usize) -> Vec<u8> {
    let mut msg = vec![3u8, 4, 0, 0, 0, 0];
    msg.extend_from_slice(&mtu.to_be_bytes());
    msg.extend_from_slice(&esp[..quote.min(esp.len())]);
    let ck = checksum::checksum(&msg);
    msg[2..4].copy_from_slice(&ck.to_be_bytes());
    let r = Ipv4Repr {
        src: ROUTER,
        dst: GW_A,
        protocol: 1,
        payload_len: msg.len(),
        ttl: 255,
        tos: 0,
        ident: 77,
        dont_frag: false,
        more_frags: false,
        frag_offset: 0,
    };
    let mut p = vec![0u8; 20];
    r.emit(&mut p).unwrap();
    p.extend_from_slice(&msg);
    p
}

fn receive(dp: &mut Dp, now: Instant, packet: &[u8]) -> Result<Option<Vec<u8>>, DataplaneError> {
    let mut p = packet.to_vec();
    let mut re = vec![0u8; 4096];
    match dp.receive(now, &mut p, &mut re)? {
        Received::Decapsulated { packet, .. } => Ok(Some(packet.to_vec())),
        Received::FragmentHeld => Ok(None),
        other => panic!("unexpected {other:?}"),
    }
}

/// Cisco's Example 3-8: `adjusting path mtu from 1500 to 1400`, then
/// `frag. needed and DF set unreachable sent to 10.0.68.5`, and RFC 1191 aging.
#[test]
fn chapter_pmtu_scenario() {
    let (mut a, mut b) = gateways();
    a.set_icmp_source(IpAddr::V4(INSIDE_A));
    let ho = a.outbound_for(10).unwrap();
    assert_eq!(a.path_mtu(ho), 1500);
    // 1500 - 20 = 1480; 1480 - 28 = 1452 -> 1448 -> 1446 fits.
    assert_eq!(a.tunnel_mtu(ho), Some(1446));

    // A 1400-byte packet with DF fits a 1500-byte path: one ESP packet of
    // 20 + 8 + 8 + 1408 (1400 + 2, padded to 8) + 12 = 1456 bytes.
    let big = inner(1400, true, 1);
    let (r, wire, _) = send(&mut a, Instant::ZERO, &big);
    assert!(matches!(
        r,
        Ok(Sent::Protected {
            packets: 1,
            fragmented: None,
            ..
        })
    ));
    assert_eq!(wire[0].len(), 1456);
    assert_eq!(
        receive(&mut b, Instant::ZERO, &wire[0]).unwrap().unwrap(),
        big
    );

    // The router cannot forward it over its 1400-byte link: frag-needed, quoting the
    // whole header and 8 bytes (SPI, sequence number), as RFC 792 requires at least.
    let icmp = frag_needed(&wire[0], 1400, 28);
    let mut p = icmp.clone();
    let mut re = [0u8; 64];
    let Ok(Received::PathMtu(change)) = a.receive(Instant::from_secs(1), &mut p, &mut re) else {
        panic!()
    };
    assert_eq!(
        change,
        PathMtuChange {
            sa: ho,
            spi: SPI_AB,
            old: 1500,
            new: 1400
        }
    );
    assert_eq!(a.path_mtu(ho), 1400);
    // 1400 - 20 = 1380; 1380 - 28 = 1352 (a multiple of 8) -> 1350.
    assert_eq!(a.tunnel_mtu(ho), Some(1350));

    // The next 1400-byte packet with DF no longer fits: dropped, and an ICMP
    // frag-needed with MTU 1350 goes to 10.0.68.5 from the inside address.
    let (r, wire, work) = send(&mut a, Instant::from_secs(2), &big);
    let Ok(Sent::TooBig {
        sa,
        mtu: 1350,
        icmp_len: Some(n),
    }) = r
    else {
        panic!("{r:?}")
    };
    assert_eq!(sa, ho);
    assert!(wire.is_empty());
    let ip = Ipv4Packet::new_checked(&work[..n]).unwrap();
    assert!(ip.header_checksum_ok());
    assert_eq!(ip.src_addr(), INSIDE_A);
    assert_eq!(ip.dst_addr(), Ipv4Addr::from(HOST_A));
    assert_eq!(ip.protocol(), 1);
    let msg = IcmpPacket::new_checked(ip.payload()).unwrap();
    assert!(msg.is_v4_frag_needed() && msg.verify_checksum_v4());
    assert_eq!(msg.next_hop_mtu(), 1350);
    assert_eq!(&msg.quoted()[..28], &big[..28]);
    assert_eq!(a.path_counters().too_big_icmp, 1);
    // A packet of exactly 1350 bytes still goes, in 1400 bytes.
    let (r, wire, _) = send(&mut a, Instant::from_secs(3), &inner(1350, true, 2));
    assert!(matches!(r, Ok(Sent::Protected { packets: 1, .. })));
    assert_eq!(wire[0].len(), 1400);

    // RFC 1191 §6.3: after 10 minutes the path MTU is tried at 1500 again.
    assert_eq!(a.poll_timeout(), Some(Instant::from_secs(601)));
    a.handle_timeout(Instant::from_millis(600_999));
    assert_eq!(a.path_mtu(ho), 1400);
    a.handle_timeout(Instant::from_secs(601));
    assert_eq!(a.path_mtu(ho), 1500);
    assert_eq!(a.path_counters().pmtu_aged, 1);
    let (r, _, _) = send(&mut a, Instant::from_secs(602), &big);
    assert!(matches!(r, Ok(Sent::Protected { packets: 1, .. })));
}

/// No ICMP error about an ICMP error (RFC 1812 §4.3.2.7): dropped silently, counted.
#[test]
fn no_icmp_about_icmp_errors() {
    let (mut a, _) = gateways_with(|c| c.df_bit = DfBit::Set);
    let mut p = inner(1500, false, 1);
    p[9] = 1; // ICMP
    p[20] = 3; // destination unreachable
    p[10..12].copy_from_slice(&[0, 0]);
    let ck = checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&ck.to_be_bytes());
    let (r, wire, _) = send(&mut a, Instant::ZERO, &p);
    assert!(matches!(
        r,
        Ok(Sent::TooBig {
            mtu: 1446,
            icmp_len: None,
            ..
        })
    ));
    assert!(wire.is_empty());
    p[20] = 8; // an echo request is answered
    let (r, _, _) = send(&mut a, Instant::ZERO, &p);
    assert!(matches!(
        r,
        Ok(Sent::TooBig {
            icmp_len: Some(_),
            ..
        })
    ));
    let c = a.path_counters();
    assert_eq!((c.too_big_silent, c.too_big_icmp), (1, 1));
}

/// RFC 5927 validation of ICMP: each forgery is refused and counted.
#[test]
fn forged_or_useless_icmp_is_ignored_and_counted() {
    let (mut a, _) = gateways();
    let ho = a.outbound_for(10).unwrap();
    let (_, wire, _) = send(&mut a, Instant::ZERO, &inner(100, true, 1));
    let esp = &wire[0];
    let try_icmp = |a: &mut Dp, icmp: &[u8]| {
        let mut p = icmp.to_vec();
        let mut re = [0u8; 64];
        a.receive(Instant::ZERO, &mut p, &mut re).map(|r| match r {
            Received::PathMtu(c) => Some(c.new),
            Received::Cleartext { .. } => None,
            other => panic!("{other:?}"),
        })
    };
    // Below the 576 floor, and the pre-RFC 1191 "MTU 0".
    for mtu in [0u16, 68, 575] {
        assert_eq!(
            try_icmp(&mut a, &frag_needed(esp, mtu, 28)),
            Err(DataplaneError::Icmp(IcmpReject::BelowFloor {
                mtu: u32::from(mtu)
            }))
        );
    }
    // An SPI we have no SA for: not ours to handle, passed on as cleartext.
    let mut other = esp.clone();
    other[20..24].copy_from_slice(&0xdead_beef_u32.to_be_bytes());
    other[10..12].copy_from_slice(&[0, 0]);
    assert_eq!(try_icmp(&mut a, &frag_needed(&other, 1400, 28)), Ok(None));
    // Our SPI, but a source address that is not ours.
    let mut spoofed = esp.clone();
    spoofed[12..16].copy_from_slice(&[192, 0, 2, 99]);
    assert_eq!(
        try_icmp(&mut a, &frag_needed(&spoofed, 1400, 28)),
        Err(DataplaneError::Icmp(IcmpReject::NotOurs))
    );
    // A sequence number we never sent (the SA has sent 1).
    let mut future = esp.clone();
    future[24..28].copy_from_slice(&5u32.to_be_bytes());
    assert_eq!(
        try_icmp(&mut a, &frag_needed(&future, 1400, 28)),
        Err(DataplaneError::Icmp(IcmpReject::NotSent))
    );
    // A bad ICMP checksum.
    let mut bad = frag_needed(esp, 1400, 28);
    bad[30] ^= 1;
    assert_eq!(
        try_icmp(&mut a, &bad),
        Err(DataplaneError::Icmp(IcmpReject::BadChecksum))
    );
    // Quote too short for the sequence number.
    assert_eq!(
        try_icmp(&mut a, &frag_needed(esp, 1400, 24)),
        Err(DataplaneError::Icmp(IcmpReject::QuoteTooShort))
    );
    // An increase is not believed (RFC 1191).
    assert_eq!(
        try_icmp(&mut a, &frag_needed(esp, 9000, 28)),
        Ok(Some(1500))
    );
    assert_eq!(a.path_mtu(ho), 1500);
    let c = a.path_counters();
    assert_eq!(
        (
            c.icmp_too_big,
            c.pmtu_below_floor,
            c.icmp_unmatched,
            c.icmp_not_ours,
            c.icmp_bad_checksum,
            c.icmp_malformed,
            c.pmtu_not_lower,
            c.pmtu_updates
        ),
        (9, 3, 1, 2, 1, 1, 1, 0)
    );
}

/// PMTU for UDP-encapsulated ESP (NAT-T, port 4500): the quote holds IP + UDP + SPI + seq.
#[test]
fn pmtu_for_udp_encapsulated_esp() {
    let (mut a, _) = gateways_with(|c| c.udp_encap = Some(UdpEncap::STANDARD));
    let ho = a.outbound_for(10).unwrap();
    // 1500 - 20 - 8 = 1472; - 28 = 1444 -> 1440 -> 1438.
    assert_eq!(a.tunnel_mtu(ho), Some(1438));
    let (_, wire, _) = send(&mut a, Instant::ZERO, &inner(100, true, 1));
    assert_eq!(wire[0][9], 17);
    assert_eq!(
        {
            let mut p = frag_needed(&wire[0], 1300, 28);
            let mut re = [0u8; 64];
            a.receive(Instant::ZERO, &mut p, &mut re).unwrap_err()
        },
        DataplaneError::Icmp(IcmpReject::QuoteTooShort)
    );
    let mut p = frag_needed(&wire[0], 1300, 36);
    let mut re = [0u8; 64];
    assert!(matches!(
        a.receive(Instant::ZERO, &mut p, &mut re),
        Ok(Received::PathMtu(PathMtuChange { new: 1300, .. }))
    ));
    // 1300 - 28 = 1272; - 28 = 1244 -> 1240 -> 1238.
    assert_eq!(a.tunnel_mtu(ho), Some(1238));
}

/// A reference reassembler, written independently of the crate's: fragments sorted by
/// offset, checked contiguous, payloads concatenated, header from the first fragment.
fn reference_reassemble(mut frags: Vec<Vec<u8>>) -> Vec<u8> {
    let off = |f: &Vec<u8>| (u16::from_be_bytes([f[6], f[7]]) & 0x1fff) as usize * 8;
    frags.sort_by_key(off);
    let hl = |f: &Vec<u8>| usize::from(f[0] & 0xf) * 4;
    let mut payload = Vec::new();
    for f in &frags {
        assert_eq!(off(f), payload.len(), "contiguous");
        let total = usize::from(u16::from_be_bytes([f[2], f[3]]));
        payload.extend_from_slice(&f[hl(f)..total]);
    }
    assert_eq!(
        frags.last().unwrap()[6] & 0x20,
        0,
        "last fragment has MF clear"
    );
    let mut out = frags[0][..hl(&frags[0])].to_vec();
    let total = (out.len() + payload.len()) as u16;
    out[2..4].copy_from_slice(&total.to_be_bytes());
    out[6] = 0;
    out[7] = 0;
    out[10] = 0;
    out[11] = 0;
    let ck = checksum::checksum(&out);
    out[10..12].copy_from_slice(&ck.to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

#[test]
fn look_ahead_fragmentation_makes_two_esp_packets() {
    let (mut a, mut b) = gateways();
    a.set_fragmentation(Fragmentation::BeforeEncryption);
    let original = inner(1500, false, 0x1234);
    let (r, wire, _) = send(&mut a, Instant::ZERO, &original);
    assert!(matches!(
        r,
        Ok(Sent::Protected {
            packets: 2,
            fragmented: Some(Fragmentation::BeforeEncryption),
            ..
        })
    ));
    assert_eq!(wire.len(), 2);
    // The tunnel MTU is 1446: the first inner fragment carries 1424 bytes (1446 - 20,
    // down to a multiple of 8), so the fragments are 1444 and 20 + 56 = 76 bytes, and
    // their ESP packets 20 + 8 + 8 + 1448 + 12 = 1496 and 20 + 8 + 8 + 80 + 12 = 128.
    assert_eq!(
        wire.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![1496, 128]
    );
    for w in &wire {
        assert!(w.len() <= 1500);
        let ip = Ipv4Packet::new_checked(&w[..]).unwrap();
        assert!(!ip.is_fragment(), "each is a whole ESP packet");
    }
    // B decrypts each into an inner fragment and delivers it; the inner host reassembles.
    let delivered: Vec<Vec<u8>> = wire
        .iter()
        .map(|w| receive(&mut b, Instant::ZERO, w).unwrap().unwrap())
        .collect();
    assert_eq!(delivered.len(), 2);
    assert!(
        delivered
            .iter()
            .all(|f| Ipv4Packet::new_checked(&f[..]).unwrap().is_fragment())
    );
    assert_eq!(reference_reassemble(delivered), original);
    assert_eq!(a.path_counters().frag_before, 1);
    assert_eq!(
        b.reassembly_counters().fragments,
        0,
        "B reassembled nothing"
    );

    // DF set: no look-ahead, ICMP instead (at MTU 1446).
    let (r, wire, _) = send(&mut a, Instant::ZERO, &inner(1500, true, 9));
    assert!(matches!(
        r,
        Ok(Sent::TooBig {
            mtu: 1446,
            icmp_len: Some(_),
            ..
        })
    ));
    assert!(wire.is_empty());
}

#[test]
fn transport_mode_never_fragments_before_encryption() {
    let mut a = Dp::new(PolicyAction::Bypass);
    a.spd_mut()
        .insert(Policy {
            seq: 1,
            selector: Selector::new(net([192, 0, 2, 1], 32), net([198, 51, 100, 2], 32)).unwrap(),
            action: PolicyAction::Protect { sa_group: 1 },
        })
        .unwrap();
    let mut c = EspConfig::transport(SPI_AB, Direction::Outbound, T);
    c.lifetime = LifetimeConfig::UNLIMITED;
    c.remote = Some(IpAddr::V4(GW_B));
    a.install_outbound(
        1,
        EspSa::new(c, &[0x3d; 24], &[0x5a; 20], Instant::ZERO).unwrap(),
    )
    .unwrap();
    a.set_fragmentation(Fragmentation::BeforeEncryption);
    let mut p = inner(1500, false, 3);
    p[12..16].copy_from_slice(&GW_A.octets());
    p[16..20].copy_from_slice(&GW_B.octets());
    p[10..12].copy_from_slice(&[0, 0]);
    let ck = checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&ck.to_be_bytes());
    let (r, wire, _) = send(&mut a, Instant::ZERO, &p);
    assert!(matches!(
        r,
        Ok(Sent::Protected {
            packets: 2,
            fragmented: Some(Fragmentation::AfterEncryption),
            ..
        })
    ));
    assert!(
        wire.iter()
            .all(|w| Ipv4Packet::new_checked(&w[..]).unwrap().is_fragment())
    );
}

#[test]
fn post_encryption_fragmentation_round_trip() {
    let (mut a, mut b) = gateways();
    let original = inner(1500, false, 0x4321);
    let (r, wire, _) = send(&mut a, Instant::ZERO, &original);
    assert!(matches!(
        r,
        Ok(Sent::Protected {
            packets: 2,
            fragmented: Some(Fragmentation::AfterEncryption),
            ..
        })
    ));
    // ESP: 20 + 8 + 8 + 1504 + 12 = 1552 bytes, cut into 1500 (1480 of payload) and
    // 20 + 52 = 72.
    assert_eq!(
        wire.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![1500, 72]
    );
    // In order.
    assert_eq!(receive(&mut b, Instant::ZERO, &wire[0]).unwrap(), None);
    assert_eq!(
        receive(&mut b, Instant::ZERO, &wire[1]).unwrap().unwrap(),
        original
    );
    // Out of order, with a duplicate in between.
    let (_, wire, _) = send(&mut a, Instant::ZERO, &original);
    assert_eq!(receive(&mut b, Instant::ZERO, &wire[1]).unwrap(), None);
    assert_eq!(
        receive(&mut b, Instant::ZERO, &wire[1]),
        Err(DataplaneError::Reassembly(
            ipsec_core::reassembly::ReassemblyError::Duplicate
        ))
    );
    assert_eq!(
        receive(&mut b, Instant::ZERO, &wire[0]).unwrap().unwrap(),
        original
    );
    // Only the first fragment: times out after 30 s, counted.
    let (_, wire, _) = send(&mut a, Instant::ZERO, &original);
    assert_eq!(
        receive(&mut b, Instant::from_secs(1), &wire[0]).unwrap(),
        None
    );
    assert_eq!(b.poll_timeout(), Some(Instant::from_secs(31)));
    b.handle_timeout(Instant::from_secs(31));
    assert_eq!(
        receive(&mut b, Instant::from_secs(32), &wire[1]).unwrap(),
        None
    );
    let c = b.reassembly_counters();
    assert_eq!((c.reassembled, c.duplicates, c.timed_out), (2, 1, 1));
    assert_eq!(a.path_counters().frag_after, 3);
    assert_eq!(a.path_counters().fragments_out, 6);

    // Bigger than the reassembly slot (4096): refused and counted, no panic.
    let huge = inner(5000, false, 0x7777);
    let (r, wire, _) = {
        let mut p = huge.clone();
        let mut work = vec![0u8; 8192];
        let mut frag = vec![0u8; 1500];
        let mut wire = Vec::new();
        let r = a.send(
            Instant::ZERO,
            &mut p,
            &mut Rng(3),
            SendBuffers {
                work: &mut work,
                frag: &mut frag,
            },
            |pkt| wire.push(pkt.to_vec()),
        );
        (r, wire, ())
    };
    assert!(matches!(r, Ok(Sent::Protected { packets: 4, .. })));
    let results: Vec<_> = wire
        .iter()
        .map(|w| receive(&mut b, Instant::from_secs(40), w))
        .collect();
    assert!(results.iter().any(|r| matches!(
        r,
        Err(DataplaneError::Reassembly(
            ipsec_core::reassembly::ReassemblyError::TooBig
        ))
    )));
}

/// The DF policy on the outer header: copy (default), clear, set; including an IPv6 inner
/// packet over the IPv4 outer header.
#[test]
fn df_bit_policy_on_the_outer_header() {
    let outer_df = |w: &Vec<u8>| Ipv4Packet::new_checked(&w[..]).unwrap().dont_frag();
    let v6_inner = {
        let r = Ipv6Repr {
            src: "fd00::5".parse::<Ipv6Addr>().unwrap(),
            dst: "fd00:1::7".parse::<Ipv6Addr>().unwrap(),
            next_header: 59,
            payload_len: 60,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        };
        let mut v = vec![0u8; 100];
        r.emit(&mut v).unwrap();
        v
    };
    for (policy, df_in, df_out, v6_out) in [
        (DfBit::Copy, true, true, false),
        (DfBit::Copy, false, false, false),
        (DfBit::Clear, true, false, false),
        (DfBit::Clear, false, false, false),
        (DfBit::Set, true, true, true),
        (DfBit::Set, false, true, true),
    ] {
        let (mut a, _) = gateways_with(|c| c.df_bit = policy);
        let (_, wire, _) = send(&mut a, Instant::ZERO, &inner(200, df_in, 1));
        assert_eq!(outer_df(&wire[0]), df_out, "{policy:?} inner DF {df_in}");
        // IPv6 inside IPv4: there is no inner DF; copy means clear.
        let mut a6 = a;
        a6.spd_mut()
            .insert(Policy {
                seq: 5,
                selector: Selector::new(
                    AddrRange::from_prefix("fd00::".parse().unwrap(), 16).unwrap(),
                    AddrRange::from_prefix("fd00::".parse().unwrap(), 16).unwrap(),
                )
                .unwrap(),
                action: PolicyAction::Protect { sa_group: 10 },
            })
            .unwrap();
        let (r, wire, _) = send(&mut a6, Instant::ZERO, &v6_inner);
        assert!(matches!(r, Ok(Sent::Protected { packets: 1, .. })), "{r:?}");
        assert_eq!(wire[0][9], 50);
        assert_eq!(outer_df(&wire[0]), v6_out, "{policy:?} IPv6 inner");
    }

    // Too big: `clear` encrypts and fragments even a DF packet; `set` bounces even a
    // DF-clear one.
    let (mut a, mut b) = gateways_with(|c| c.df_bit = DfBit::Clear);
    let p = inner(1500, true, 5);
    let (r, wire, _) = send(&mut a, Instant::ZERO, &p);
    assert!(matches!(r, Ok(Sent::Protected { packets: 2, .. })));
    assert_eq!(receive(&mut b, Instant::ZERO, &wire[0]).unwrap(), None);
    assert_eq!(
        receive(&mut b, Instant::ZERO, &wire[1]).unwrap().unwrap(),
        p
    );
    let (mut a, _) = gateways_with(|c| c.df_bit = DfBit::Set);
    let (r, wire, _) = send(&mut a, Instant::ZERO, &inner(1500, false, 6));
    // No inside address configured: the SA's own (IPv4) address is the ICMP source.
    assert!(matches!(
        r,
        Ok(Sent::TooBig {
            mtu: 1446,
            icmp_len: Some(_),
            ..
        })
    ));
    assert!(wire.is_empty());
}

/// An independent TCP checksum (explicit pseudo-header, RFC 1071 word by word).
fn tcp_ok(p: &[u8]) -> bool {
    let seg = &p[20..usize::from(u16::from_be_bytes([p[2], p[3]]))];
    let mut b = Vec::new();
    b.extend_from_slice(&p[12..20]);
    b.extend_from_slice(&[0, 6]);
    b.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    b.extend_from_slice(seg);
    if b.len() % 2 == 1 {
        b.push(0);
    }
    let mut s: u32 = 0;
    for w in b.chunks(2) {
        s += u32::from(w[0]) << 8 | u32::from(w[1]);
        s = (s & 0xffff) + (s >> 16);
    }
    s == 0xffff
}

fn syn(from: [u8; 4], to: [u8; 4], mss: u16, flags: u8) -> Vec<u8> {
    let [h, l] = mss.to_be_bytes();
    let mut seg = vec![
        0xc3, 0x50, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, flags, 0xff, 0xff, 0, 0, 0, 0, 2, 4, h, l,
    ];
    let r = Ipv4Repr {
        src: Ipv4Addr::from(from),
        dst: Ipv4Addr::from(to),
        protocol: 6,
        payload_len: seg.len(),
        ttl: 64,
        tos: 0,
        ident: 1,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
    };
    let mut p = vec![0u8; 20];
    r.emit(&mut p).unwrap();
    let mut tmp = p.clone();
    tmp.extend_from_slice(&seg);
    // Fill the checksum so that the independent check passes.
    let mut b = Vec::new();
    b.extend_from_slice(&tmp[12..20]);
    b.extend_from_slice(&[0, 6, 0, seg.len() as u8]);
    b.extend_from_slice(&seg);
    let ck = checksum::checksum(&b);
    seg[16..18].copy_from_slice(&ck.to_be_bytes());
    p.extend_from_slice(&seg);
    assert!(tcp_ok(&p));
    p
}

#[test]
fn mss_clamped_entering_and_leaving_the_tunnel() {
    let (mut a, mut b) = gateways();
    a.set_mss_clamp(MssClamp::Fixed(1360));
    // Entering at A.
    let (_, wire, _) = send(&mut a, Instant::ZERO, &syn(HOST_A, HOST_B, 1460, 0x02));
    let got = receive(&mut b, Instant::ZERO, &wire[0]).unwrap().unwrap();
    assert_eq!(u16::from_be_bytes([got[42], got[43]]), 1360);
    assert!(tcp_ok(&got));
    // Leaving at A: B's SYN-ACK (B does not clamp) is clamped when A decapsulates it.
    let (_, wire, _) = send(&mut b, Instant::ZERO, &syn(HOST_B, HOST_A, 1460, 0x12));
    let got = receive(&mut a, Instant::ZERO, &wire[0]).unwrap().unwrap();
    assert_eq!(u16::from_be_bytes([got[42], got[43]]), 1360);
    assert!(tcp_ok(&got));
    // Non-SYN untouched.
    let ack = syn(HOST_A, HOST_B, 1460, 0x10);
    let (_, wire, _) = send(&mut a, Instant::ZERO, &ack);
    assert_eq!(
        receive(&mut b, Instant::ZERO, &wire[0]).unwrap().unwrap(),
        ack
    );
    assert_eq!(a.path_counters().mss_clamped, 2);
    // Derived from the tunnel MTU: 1446 - 40 = 1406.
    a.set_mss_clamp(MssClamp::FromMtu);
    let (_, wire, _) = send(&mut a, Instant::ZERO, &syn(HOST_A, HOST_B, 1460, 0x02));
    let got = receive(&mut b, Instant::ZERO, &wire[0]).unwrap().unwrap();
    assert_eq!(u16::from_be_bytes([got[42], got[43]]), 1406);
    assert!(tcp_ok(&got));
}

/// Fragments and ICMP through `receive` in random shapes: never a panic.
#[test]
fn random_input_to_receive_never_panics() {
    let (mut a, mut b) = gateways();
    let (_, wire, _) = send(&mut a, Instant::ZERO, &inner(1500, false, 1));
    let mut x: u64 = 42;
    let mut next = |m: u64| {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (x >> 33) % m
    };
    for i in 0..5000u64 {
        let mut p = wire[(i % 2) as usize].clone();
        for _ in 0..next(4) {
            let at = next(p.len() as u64) as usize;
            p[at] = next(256) as u8;
        }
        p.truncate(next(p.len() as u64 + 1) as usize);
        let mut re = vec![0u8; next(5000) as usize];
        let _ = b.receive(Instant::from_millis(i * 10), &mut p, &mut re);
        let mut icmp = frag_needed(&wire[0], next(2000) as u16, next(60) as usize);
        let at = next(icmp.len() as u64) as usize;
        icmp[at] ^= next(2) as u8;
        let _ = a.receive(Instant::from_millis(i * 10), &mut icmp, &mut re);
        b.handle_timeout(Instant::from_millis(i * 10));
    }
}

#[test]
fn idle_time_applies_to_pairs_installed_by_install_pair() {
    let (mut a, _) = gateways();
    a.set_idle_time(Some(Duration::from_secs(120)));
    let ho = a.outbound_for(10).unwrap();
    assert_eq!(
        a.idle_deadline(Direction::Outbound, ho),
        Some(Instant::from_secs(120))
    );
}
