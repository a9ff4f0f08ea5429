//! NAT traversal (RFC 3947): a NAT box in the simulated network rewrites the
//! initiator's address (and ports); NAT-D finds it on the right side, both float to
//! 4500 with the non-ESP marker from MM5 / AM3 on, and the child SAs get UDP
//! encapsulation with the ports actually seen. Without a NAT nothing floats.
//!
//! Also: NAT-OA in Quick Mode for UDP-Encapsulated-Transport and the transport checksum
//! fix-up after decapsulation (RFC 3947 §5.2, RFC 3948 §3.1.2); the responder following
//! the initiator's new NAT mapping on an authenticated R-U-THERE; NAT mappings kept
//! open by keepalives (and expiring without them).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod sim;

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;

use hal_traits::{CipherAlg, DhGroup, HashAlg};
use ipsec_core::esp::{EspSa, Mode, UdpEncap};
use ipsec_core::spd::AddrRange;
use ipsec_core::{Duration, Instant};
use ipsec_ike::v1::{ChildSa, ExchangeMode, IkeEvent, NatStatus};
use ipsec_ike::wire::{Header, consts::vendor_id, payload_type};
use ipsec_nat_t::{Fixup, FixupMethod, KeepaliveConfig, NatKeepalive, OriginalAddrs};
use ipsec_soft_crypto::SoftCrypto;
use sim::*;

const INSIDE: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);

fn setup(seed: u64, remap: bool, exchange: ExchangeMode) -> Net {
    let pol = policy(CipherAlg::Aes128Cbc, HashAlg::Sha1, DhGroup::Modp1024);
    let mut a = config(INSIDE, pol, b"natsecret");
    a.add_crypto_map(map(
        10,
        &[B],
        net(A_NET),
        net(B_NET),
        aes_sha1(),
        Mode::Tunnel,
        None,
        exchange,
    ))
    .unwrap();
    let mut b = config(B, pol, b"natsecret");
    // The responder knows the peer by its public (NAT) address.
    b.add_crypto_map(map(
        10,
        &[NAT_PUBLIC],
        net(B_NET),
        net(A_NET),
        aes_sha1(),
        Mode::Tunnel,
        None,
        exchange,
    ))
    .unwrap();
    let mut n = Net::pair(seed, a, b);
    n.nat = Some(Nat::new(INSIDE, NAT_PUBLIC, remap));
    n
}

fn up(n: &Net) -> bool {
    !n.children(0).is_empty() && !n.children(1).is_empty()
}

fn nat_of(n: &Net, k: usize) -> NatStatus {
    n.nodes[k]
        .events
        .iter()
        .find_map(|e| match e {
            IkeEvent::Phase1Established { nat, .. } => Some(*nat),
            _ => None,
        })
        .unwrap()
}

fn run_nat(exchange: ExchangeMode, remap: bool) {
    let mut n = setup(31, remap, exchange);
    // Record every datagram as sent (before the NAT): (from, to, first bytes).
    let seen: Seen = Rc::default();
    let s2 = seen.clone();
    n.tamper = Some(Box::new(move |f, t, d| {
        s2.borrow_mut().push((f, t, d.clone()));
        true
    }));
    n.initiate(0, 10).unwrap();
    assert!(
        n.run_until(Duration::from_secs(10), up),
        "{:?}",
        n.nodes[1].errors
    );
    // The initiator is behind the NAT: it sees its own address changed; the responder
    // sees the peer's changed.
    assert_eq!(
        nat_of(&n, 0),
        NatStatus {
            local_behind_nat: true,
            remote_behind_nat: false
        }
    );
    assert_eq!(
        nat_of(&n, 1),
        NatStatus {
            local_behind_nat: false,
            remote_behind_nat: true
        }
    );
    // Floating: the first messages on 500, the rest on 4500 behind the marker.
    let seen = seen.borrow();
    let float_at = match exchange {
        ExchangeMode::Main => 4,
        ExchangeMode::Aggressive => 2,
    };
    for (k, (f, t, d)) in seen.iter().enumerate() {
        if k < float_at {
            assert_eq!(
                (f.port(), t.port() == 500 || t.port() >= 40_000),
                (500, true),
                "{k}"
            );
        } else {
            assert_eq!(f.port(), 4500, "message {k} floated");
            assert_eq!(&d[..4], &[0, 0, 0, 0], "non-ESP marker");
            Header::new_checked(&d[4..]).unwrap();
        }
    }
    let pub_4500 = n
        .nat
        .as_ref()
        .unwrap()
        .public_port(SocketAddr::new(v4(INSIDE), 4500));
    let pub_4500 = pub_4500.unwrap();
    if remap {
        assert_ne!(pub_4500, 4500);
    } else {
        assert_eq!(pub_4500, 4500);
    }
    let a = n.children(0)[0].clone();
    let b = n.children(1)[0].clone();
    assert_eq!(a.inbound.udp_encap, Some(UdpEncap::STANDARD));
    assert_eq!(a.outbound.udp_encap, Some(UdpEncap::STANDARD));
    // Tunnel mode: no NAT-OA.
    assert_eq!((a.nat_oa, b.nat_oa), (None, None));
    assert_eq!(
        b.inbound.udp_encap,
        Some(UdpEncap {
            local_port: 4500,
            remote_port: pub_4500
        })
    );
    assert_eq!(b.peer, SocketAddr::new(v4(NAT_PUBLIC), pub_4500));
    assert_eq!(b.outbound.remote, Some(v4(NAT_PUBLIC)));
    // Status shows the N flag on both sides.
    for k in 0..2 {
        let st = n.nodes[k].ike.isakmp_status().next().unwrap();
        assert!(st.capabilities.nat_t);
        assert_eq!(st.local.port(), 4500);
    }
    // ESP in UDP both ways; the NAT rewrites B -> A's destination port back to 4500.
    let mut rng = Rng(3);
    let ab = ipv4_udp(
        Ipv4Addr::new(10, 1, 0, 1),
        Ipv4Addr::new(10, 2, 0, 1),
        b"nat a->b",
    );
    let ba = ipv4_udp(
        Ipv4Addr::new(10, 2, 0, 1),
        Ipv4Addr::new(10, 1, 0, 1),
        b"nat b->a",
    );
    esp_one_way(&a, &b, &ab, None, &mut rng);
    esp_one_way(&b, &a, &ba, Some(4500), &mut rng);
}

#[test]
fn main_mode_behind_nat_with_port_remap() {
    run_nat(ExchangeMode::Main, true);
}

#[test]
fn main_mode_behind_nat_keeping_ports() {
    run_nat(ExchangeMode::Main, false);
}

#[test]
fn aggressive_mode_behind_nat() {
    run_nat(ExchangeMode::Aggressive, true);
}

#[test]
fn no_nat_no_float() {
    let pol = policy(CipherAlg::Aes128Cbc, HashAlg::Sha1, DhGroup::Modp1024);
    let mut a = config(A, pol, b"k");
    a.add_crypto_map(map(
        10,
        &[B],
        net(A_NET),
        net(B_NET),
        aes_sha1(),
        Mode::Tunnel,
        None,
        ExchangeMode::Main,
    ))
    .unwrap();
    let mut b = config(B, pol, b"k");
    b.add_crypto_map(map(
        10,
        &[A],
        net(B_NET),
        net(A_NET),
        aes_sha1(),
        Mode::Tunnel,
        None,
        ExchangeMode::Main,
    ))
    .unwrap();
    let mut n = Net::pair(32, a, b);
    n.initiate(0, 10).unwrap();
    assert!(n.run_until(Duration::from_secs(10), up));
    assert!(!nat_of(&n, 0).detected() && !nat_of(&n, 1).detected());
    assert!(
        n.log
            .iter()
            .all(|(_, f, t, _)| f.port() == 500 && t.port() == 500)
    );
    assert_eq!(n.children(0)[0].inbound.udp_encap, None);
    assert!(
        !n.nodes[0]
            .ike
            .isakmp_status()
            .next()
            .unwrap()
            .capabilities
            .nat_t
    );
}

/// A peer that announces only the NAT-T drafts: NAT-D travels as payload type 130 and
/// the exchange still completes (with draft encapsulation modes 61443/61444).
#[test]
fn draft_only_peer_uses_draft_numbers() {
    let mut n = setup(33, true, ExchangeMode::Main);
    let natd_types: Rc<RefCell<Vec<u8>>> = Rc::default();
    let t2 = natd_types.clone();
    n.tamper = Some(Box::new(move |_, _, d| {
        let off = if d.len() > 4 && d[..4] == [0, 0, 0, 0] {
            4
        } else {
            0
        };
        let Ok(h) = Header::new_checked(&d[off..]) else {
            return true;
        };
        if h.is_encrypted() {
            return true;
        }
        let mut rfc_at = None;
        for p in h.payloads().flatten() {
            if p.payload_type == payload_type::VENDOR_ID && p.body == vendor_id::NATT_RFC3947 {
                rfc_at = Some(off + 28 + p.offset + 4);
            }
            if matches!(
                p.payload_type,
                payload_type::NAT_D | payload_type::NAT_D_DRAFT
            ) {
                t2.borrow_mut().push(p.payload_type);
            }
        }
        // Blank the RFC 3947 VID of the initiator (Vendor IDs are not authenticated).
        if let Some(at) = rfc_at {
            if h.responder_cookie() == [0; 8] {
                d[at..at + 16].fill(0xee);
            }
        }
        true
    }));
    n.initiate(0, 10).unwrap();
    assert!(n.run_until(Duration::from_secs(10), up));
    let types = natd_types.borrow();
    assert_eq!(types.len(), 4, "NAT-D x2 in MM3 and MM4");
    assert!(types.iter().all(|t| *t == payload_type::NAT_D_DRAFT));
    let a = n.children(0)[0].clone();
    let b = n.children(1)[0].clone();
    let mut rng = Rng(4);
    let ab = ipv4_udp(
        Ipv4Addr::new(10, 1, 0, 1),
        Ipv4Addr::new(10, 2, 0, 1),
        b"draft",
    );
    esp_one_way(&a, &b, &ab, None, &mut rng);
}

/// The responder follows the peer's new address only for authenticated messages: a
/// forged message from elsewhere with the right cookies changes nothing.
#[test]
fn unauthenticated_messages_do_not_move_the_peer() {
    let mut n = setup(34, true, ExchangeMode::Main);
    n.initiate(0, 10).unwrap();
    assert!(n.run_until(Duration::from_secs(10), up));
    let before = n.nodes[1].ike.isakmp_status().next().unwrap();
    // A forged encrypted Informational with the SA's cookies from another port.
    let mut forged = vec![0u8, 0, 0, 0];
    forged.extend_from_slice(&before.initiator_cookie);
    forged.extend_from_slice(&before.responder_cookie);
    forged.extend_from_slice(&[8, 0x10, 5, 1, 0x12, 0x34, 0x56, 0x78, 0, 0, 0, 60]);
    forged.extend_from_slice(&[0xab; 32]);
    let now = n.now;
    let node = &mut n.nodes[1];
    let r = node.ike.handle_datagram(
        now,
        &mut node.rng,
        SocketAddr::new(v4(NAT_PUBLIC), 41_234),
        SocketAddr::new(v4(B), 4500),
        &forged,
    );
    assert!(r.is_err());
    let after = n.nodes[1].ike.isakmp_status().next().unwrap();
    assert_eq!(after.remote, before.remote);
    assert_eq!(n.nodes[1].ike.counters().auth_failures, 1);
    // An ESP-in-UDP packet on 4500 is not IKE.
    let node = &mut n.nodes[1];
    let r = node.ike.handle_datagram(
        now,
        &mut node.rng,
        before.remote,
        SocketAddr::new(v4(B), 4500),
        &[1, 2, 3, 4, 0, 0, 0, 1, 9, 9],
    );
    assert_eq!(r, Err(ipsec_ike::v1::IkeError::NotIke));
    // A NAT keepalive is silently fine.
    let r = node.ike.handle_datagram(
        now,
        &mut node.rng,
        before.remote,
        SocketAddr::new(v4(B), 4500),
        &[0xff],
    );
    assert_eq!(r, Ok(()));
}

// ------------------------------------------------- transport mode, NAT-OA ----

/// The one's-complement sum of `b` (folded, not inverted).
fn sum16(b: &[u8]) -> u32 {
    let mut s = 0u32;
    for c in b.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s
}

/// An independent full check of an IPv4 TCP/UDP packet's transport checksum against
/// the addresses in its own header (a zero UDP checksum does not count as valid here).
fn l4_checksum_ok(p: &[u8]) -> bool {
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    let seg = &p[ihl..total];
    if p[9] == 17 && seg[6..8] == [0, 0] {
        return false;
    }
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&p[12..20]);
    pseudo.extend_from_slice(&[0, p[9]]);
    pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    let s = sum16(&pseudo) + sum16(seg);
    sum16(&s.to_be_bytes()) == 0xffff
}

/// An IPv4 packet of `proto` (6 or 17) with valid header and transport checksums.
fn ipv4_l4(
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    data: &[u8],
) -> Vec<u8> {
    let hl = if proto == 6 { 20 } else { 8 };
    let total = 20 + hl + data.len();
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, proto, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = !(sum16(&p) as u16);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let mut seg = Vec::new();
    seg.extend_from_slice(&sport.to_be_bytes());
    seg.extend_from_slice(&dport.to_be_bytes());
    if proto == 6 {
        seg.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        seg.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
        seg.extend_from_slice(&[0, 0]);
    }
    seg.extend_from_slice(data);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    let c = !(sum16(&[sum16(&pseudo).to_be_bytes(), sum16(&seg).to_be_bytes()].concat()) as u16);
    let at = if proto == 6 { 16 } else { 6 };
    seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&seg);
    assert!(l4_checksum_ok(&p));
    p
}

/// What the NAT box does to an outer IPv4/UDP packet: new source or destination
/// address and UDP port, the IP header checksum updated.
fn nat_rewrite(buf: &mut [u8], src: Option<SocketAddr>, dst: Option<SocketAddr>) {
    let ihl = usize::from(buf[0] & 0x0f) * 4;
    assert_eq!(buf[9], 17, "UDP-encapsulated");
    let v4 = |a: IpAddr| match a {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => unreachable!(),
    };
    if let Some(s) = src {
        buf[12..16].copy_from_slice(&v4(s.ip()));
        buf[ihl..ihl + 2].copy_from_slice(&s.port().to_be_bytes());
    }
    if let Some(d) = dst {
        buf[16..20].copy_from_slice(&v4(d.ip()));
        buf[ihl + 2..ihl + 4].copy_from_slice(&d.port().to_be_bytes());
    }
    // ESP-in-UDP goes with a zero UDP checksum (RFC 3948 §2.1); the IP header's is fixed.
    buf[ihl + 6..ihl + 8].fill(0);
    buf[10..12].fill(0);
    let c = !(sum16(&buf[..ihl]) as u16);
    buf[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Seals `inner` with `out`'s outbound SA, lets `nat` rewrite the outer packet, opens
/// it with `inb`'s inbound SA; returns the decapsulated packet.
fn esp_via_nat(
    out: &ChildSa,
    inb: &ChildSa,
    inner: &[u8],
    nat: impl FnOnce(&mut [u8]),
    rng: &mut Rng,
) -> Vec<u8> {
    assert_eq!(out.outbound.spi, inb.inbound.spi, "SPIs pair up");
    let now = Instant::from_secs(1);
    let (e, a) = out.outbound_keys();
    let mut o = EspSa::<SoftCrypto>::new(out.outbound.clone(), e, a, now).unwrap();
    let (e, a) = inb.inbound_keys();
    let mut i = EspSa::<SoftCrypto>::new(inb.inbound.clone(), e, a, now).unwrap();
    let mut buf = vec![0u8; inner.len() + 256];
    let n = o.encapsulate(now, inner, None, rng, &mut buf).unwrap();
    buf.truncate(n);
    nat(&mut buf);
    i.decapsulate(now, &mut buf).unwrap().packet.to_vec()
}

/// A transport-mode crypto map between the initiator behind the NAT and `B`.
fn transport_setup(seed: u64) -> Net {
    let pol = policy(CipherAlg::Aes128Cbc, HashAlg::Sha1, DhGroup::Modp1024);
    let mut a = config(INSIDE, pol, b"natsecret");
    a.add_crypto_map(map(
        20,
        &[B],
        AddrRange::host(v4(INSIDE)),
        AddrRange::host(v4(B)),
        aes_sha1(),
        Mode::Transport,
        None,
        ExchangeMode::Main,
    ))
    .unwrap();
    let mut b = config(B, pol, b"natsecret");
    // The initiator's proxy identity is its private address: any remote host.
    b.add_crypto_map(map(
        20,
        &[NAT_PUBLIC],
        AddrRange::host(v4(B)),
        AddrRange::from_prefix(v4(Ipv4Addr::UNSPECIFIED), 0).unwrap(),
        aes_sha1(),
        Mode::Transport,
        None,
        ExchangeMode::Main,
    ))
    .unwrap();
    let mut n = Net::pair(seed, a, b);
    n.nat = Some(Nat::new(INSIDE, NAT_PUBLIC, true));
    n
}

/// UDP-Encapsulated-Transport behind the NAT: NAT-OAi / NAT-OAr travel in QM1 and
/// QM2 and each side learns the other's original address and its own address as the
/// other saw it; a TCP segment sealed by the initiator (source rewritten by the NAT)
/// and a UDP datagram sealed by the responder (destination rewritten) both carry a
/// valid transport checksum after `fix_transport_checksum` with the NAT-OA addresses,
/// and an invalid one before.
#[test]
fn transport_mode_nat_oa_fixes_checksums() {
    let mut n = transport_setup(35);
    // QM1 / QM2 (encrypted) grow by two NAT-OA payloads (2 x 12 bytes, rounded up to
    // the block): recorded for the comparison with tunnel mode below.
    let seen: Seen = Rc::default();
    let s2 = seen.clone();
    n.tamper = Some(Box::new(move |f, t, d| {
        s2.borrow_mut().push((f, t, d.clone()));
        true
    }));
    n.initiate(0, 20).unwrap();
    assert!(
        n.run_until(Duration::from_secs(10), up),
        "{:?} {:?}",
        n.nodes[0].errors,
        n.nodes[1].errors
    );
    let a = n.children(0)[0].clone();
    let b = n.children(1)[0].clone();
    assert_eq!(a.inbound.mode, Mode::Transport);
    assert_eq!(b.inbound.mode, Mode::Transport);
    let pub_4500 = n
        .nat
        .as_ref()
        .unwrap()
        .public_port(SocketAddr::new(v4(INSIDE), 4500))
        .unwrap();
    assert_eq!(a.outbound.udp_encap, Some(UdpEncap::STANDARD));
    assert_eq!(
        b.outbound.udp_encap,
        Some(UdpEncap {
            local_port: 4500,
            remote_port: pub_4500
        })
    );
    // (the peer's original address, ours as the peer saw it)
    assert_eq!(a.nat_oa, Some((v4(B), v4(NAT_PUBLIC))));
    assert_eq!(b.nat_oa, Some((v4(INSIDE), v4(B))));
    // Quick Mode messages are larger than the tunnel-mode ones by the NAT-OA payloads.
    let qm_lens = |s: &Seen| -> Vec<usize> {
        s.borrow()
            .iter()
            .filter(|(_, _, d)| d.len() > 32 && d[..4] == [0; 4] && d[4 + 18] == 32)
            .map(|(_, _, d)| d.len())
            .collect()
    };
    let transport_qm = qm_lens(&seen);
    let mut tn = setup(35, true, ExchangeMode::Main);
    let seen_t: Seen = Rc::default();
    let s3 = seen_t.clone();
    tn.tamper = Some(Box::new(move |f, t, d| {
        s3.borrow_mut().push((f, t, d.clone()));
        true
    }));
    tn.initiate(0, 10).unwrap();
    assert!(tn.run_until(Duration::from_secs(10), up));
    let tunnel_qm = qm_lens(&seen_t);
    assert_eq!(transport_qm.len(), 3, "QM1, QM2, QM3");
    assert_eq!(tunnel_qm.len(), 3);
    // Tunnel-mode IDs are subnets (16 bytes) where transport's are hosts (12): the
    // NAT-OA pair adds 24 bytes to QM1 and QM2, none to QM3.
    for k in 0..2 {
        assert!(
            transport_qm[k] >= tunnel_qm[k] + 24 - 8 - 15,
            "QM{} carries NAT-OA: {transport_qm:?} vs {tunnel_qm:?}",
            k + 1
        );
    }
    assert_eq!(transport_qm[2], tunnel_qm[2]);

    let mut rng = Rng(5);
    let public = SocketAddr::new(v4(NAT_PUBLIC), pub_4500);
    // Initiator -> responder: TCP, the NAT rewrites the source.
    let tcp = ipv4_l4(6, INSIDE, B, 40_001, 80, b"GET / over transport");
    let mut got = esp_via_nat(
        &a,
        &b,
        &tcp,
        |p| nat_rewrite(p, Some(public), None),
        &mut rng,
    );
    assert_eq!(
        &got[12..16],
        &NAT_PUBLIC.octets(),
        "the outer header is the NAT's"
    );
    assert!(!l4_checksum_ok(&got), "broken by the NAT");
    let (orig, seen_ours) = b.nat_oa.unwrap();
    let f = ipsec_nat_t::fix_transport_checksum(
        &mut got,
        FixupMethod::preferred(Some(OriginalAddrs {
            src: orig,
            dst: seen_ours,
        })),
    )
    .unwrap();
    assert!(matches!(f, Fixup::Updated { old, new } if old != new));
    assert!(l4_checksum_ok(&got), "fixed with NAT-OA");
    assert_eq!(&got[40..], &tcp[40..], "payload intact");
    // Responder -> initiator: UDP, the NAT rewrites the destination.
    let udp = ipv4_l4(17, B, NAT_PUBLIC, 53, 40_001, b"answer over transport");
    let inside = SocketAddr::new(v4(INSIDE), 4500);
    let mut got = esp_via_nat(
        &b,
        &a,
        &udp,
        |p| nat_rewrite(p, None, Some(inside)),
        &mut rng,
    );
    assert_eq!(&got[16..20], &INSIDE.octets());
    assert!(!l4_checksum_ok(&got), "broken by the NAT");
    let (orig, seen_ours) = a.nat_oa.unwrap();
    ipsec_nat_t::fix_transport_checksum(
        &mut got,
        FixupMethod::preferred(Some(OriginalAddrs {
            src: orig,
            dst: seen_ours,
        })),
    )
    .unwrap();
    assert!(l4_checksum_ok(&got), "fixed with NAT-OA");
    assert_eq!(&got[28..], &udp[28..], "payload intact");
}

// ------------------------------------------------------------- rebinding ----

/// The NAT gives the initiator a new public port (its old mapping timed out); the
/// initiator's next authenticated message, a DPD R-U-THERE, arrives from it. The
/// responder follows: its IKE SA, its answers, its child SAs' UDP encapsulation port
/// (`PeerMoved` tells the port), and ESP flows both ways over the new mapping.
#[test]
fn rebinding_responder_follows_authenticated_message_from_new_port() {
    let mut n = setup(36, true, ExchangeMode::Main);
    n.initiate(0, 10).unwrap();
    assert!(n.run_until(Duration::from_secs(10), up));
    let inside = SocketAddr::new(v4(INSIDE), 4500);
    let old = n.nodes[1].ike.isakmp_status().next().unwrap().remote;
    assert_eq!(
        old,
        SocketAddr::new(
            v4(NAT_PUBLIC),
            n.nat.as_ref().unwrap().public_port(inside).unwrap()
        )
    );
    n.nat.as_mut().unwrap().forget(inside);
    let conn = n.nodes[0].ike.isakmp_status().next().unwrap().conn_id;
    let sent_before = n.log.len();
    let now = n.now;
    let node = &mut n.nodes[0];
    node.ike.dpd_probe(now, &mut node.rng, conn).unwrap();
    n.pump();
    n.run_for(Duration::from_secs(2));
    let new_port = n.nat.as_ref().unwrap().public_port(inside).unwrap();
    let new = SocketAddr::new(v4(NAT_PUBLIC), new_port);
    assert_ne!(new, old, "a new mapping");
    // IKE follows.
    let st = n.nodes[1].ike.isakmp_status().next().unwrap();
    assert_eq!(st.remote, new);
    assert_eq!(n.nodes[0].ike.counters().dpd_acks, 1, "the ACK came back");
    assert!(
        n.log[sent_before..]
            .iter()
            .any(|(_, f, t, _)| f.ip() == v4(B) && *t == new),
        "the R-U-THERE-ACK went to the new port"
    );
    assert!(
        n.log[sent_before..]
            .iter()
            .all(|(_, f, t, _)| f.ip() != v4(B) || *t != old),
        "nothing went to the old one"
    );
    // The child SAs follow and the port is told.
    let moved: Vec<_> = n.nodes[1]
        .events
        .iter()
        .filter_map(|e| match e {
            IkeEvent::PeerMoved { conn_id, from, to } => Some((*conn_id, *from, *to)),
            _ => None,
        })
        .collect();
    let b_conn = st.conn_id;
    assert_eq!(moved, vec![(b_conn, old, new)]);
    let cs = n.nodes[1].ike.ipsec_status().next().unwrap();
    assert_eq!(cs.peer, new);
    assert_eq!(
        cs.udp_encap,
        Some(UdpEncap {
            local_port: 4500,
            remote_port: new_port
        })
    );
    assert!(n.count(1, |e| matches!(e, IkeEvent::PeerMoved { .. })) == 1);
    // The port applies PeerMoved to its data plane SAs; ESP then flows both ways.
    let a = n.children(0)[0].clone();
    let mut b = n.children(1)[0].clone();
    for c in [&mut b.inbound, &mut b.outbound] {
        c.udp_encap.as_mut().unwrap().remote_port = new_port;
    }
    let mut rng = Rng(6);
    let ab = ipv4_udp(
        Ipv4Addr::new(10, 1, 0, 1),
        Ipv4Addr::new(10, 2, 0, 1),
        b"after rebinding a->b",
    );
    let ba = ipv4_udp(
        Ipv4Addr::new(10, 2, 0, 1),
        Ipv4Addr::new(10, 1, 0, 1),
        b"after rebinding b->a",
    );
    let got = esp_via_nat(&a, &b, &ab, |p| nat_rewrite(p, Some(new), None), &mut rng);
    assert_eq!(got, ab);
    // B's packets go to the new public port; the NAT maps them back to 4500.
    let mut seen_dst = None;
    let got = esp_via_nat(
        &b,
        &a,
        &ba,
        |p| {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            seen_dst = Some(u16::from_be_bytes([p[ihl + 2], p[ihl + 3]]));
            assert_eq!(n.nat.as_ref().unwrap().public_port(inside), seen_dst);
            nat_rewrite(p, None, Some(inside));
        },
        &mut rng,
    );
    assert_eq!(seen_dst, Some(new_port));
    assert_eq!(got, ba);
}

// ------------------------------------------------ mapping timeout, keepalives ----

/// The tunnel up behind a NAT whose mappings expire after 30 s idle, then 90 s with
/// nothing but (optionally) NAT keepalives every 20 s from the initiator. Returns the
/// net, the public port before, and the ESP-in-UDP payload B then sends to it.
fn idle_behind_nat(seed: u64, keepalives: bool) -> (Net, u16, Vec<u8>) {
    let mut n = setup(seed, true, ExchangeMode::Main);
    n.nat = Some(Nat::new(INSIDE, NAT_PUBLIC, true).with_idle_timeout(Duration::from_secs(30)));
    n.initiate(0, 10).unwrap();
    assert!(n.run_until(Duration::from_secs(10), up));
    let inside = SocketAddr::new(v4(INSIDE), 4500);
    let before = n.nat.as_ref().unwrap().public_port(inside).unwrap();
    let st = nat_of(&n, 0);
    let mut ka = NatKeepalive::new(
        n.now,
        KeepaliveConfig::seconds(20),
        SocketAddr::new(v4(B), 4500),
        ipsec_nat_t::NatStatus {
            local_behind_nat: st.local_behind_nat,
            remote_behind_nat: st.remote_behind_nat,
        },
    );
    assert!(ka.is_active());
    let log_at = n.log.len();
    for _ in 0..90 {
        n.run_for(Duration::from_secs(1));
        if keepalives {
            let now = n.now;
            if let Some(k) = ka.poll_transmit(now) {
                n.inject(
                    SocketAddr::new(v4(INSIDE), k.src_port),
                    k.dst,
                    k.payload().to_vec(),
                );
            }
        }
    }
    // Nothing but keepalives crossed the NAT while idle.
    let idle: Vec<_> = n.log[log_at..].to_vec();
    if keepalives {
        assert!(ka.sent() >= 4, "{}", ka.sent());
        assert_eq!(idle.len() as u64, ka.sent());
        assert!(idle.iter().all(|(_, f, _, len)| *f == inside && *len == 1));
    } else {
        assert!(idle.is_empty(), "{idle:?}");
    }
    // Then B sends ESP in UDP to the mapping it knows.
    let b = n.children(1)[0].clone();
    let ba = ipv4_udp(
        Ipv4Addr::new(10, 2, 0, 1),
        Ipv4Addr::new(10, 1, 0, 1),
        b"after idle",
    );
    let now = Instant::from_secs(1);
    let (e, a) = b.outbound_keys();
    let mut o = EspSa::<SoftCrypto>::new(b.outbound.clone(), e, a, now).unwrap();
    let mut buf = vec![0u8; ba.len() + 256];
    let len = o
        .encapsulate(now, &ba, None, &mut Rng(7), &mut buf)
        .unwrap();
    buf.truncate(len);
    let ihl = usize::from(buf[0] & 0x0f) * 4;
    assert_eq!(u16::from_be_bytes([buf[ihl + 2], buf[ihl + 3]]), before);
    let payload = buf[ihl + 8..].to_vec();
    n.delivered.clear();
    n.inject(
        SocketAddr::new(v4(B), 4500),
        SocketAddr::new(v4(NAT_PUBLIC), before),
        payload.clone(),
    );
    n.run_for(Duration::from_secs(1));
    // Hand back the whole packet as sealed, for a decapsulation by A.
    (n, before, buf)
}

/// With keepalives every 20 s the 30 s mapping survives 90 s of idleness: the same
/// public port, and B's ESP still reaches the initiator and decapsulates.
#[test]
fn keepalives_keep_the_nat_mapping() {
    let (n, before, mut sealed) = idle_behind_nat(37, true);
    let inside = SocketAddr::new(v4(INSIDE), 4500);
    let nat = n.nat.as_ref().unwrap();
    assert_eq!(nat.public_port(inside), Some(before), "same mapping");
    assert_eq!(nat.dropped, 0);
    let ihl = usize::from(sealed[0] & 0x0f) * 4;
    let payload = sealed[ihl + 8..].to_vec();
    assert!(
        n.delivered
            .iter()
            .any(|(_, f, t, d)| *f == SocketAddr::new(v4(B), 4500)
                && *t == inside
                && *d == payload),
        "ESP from the outside got in"
    );
    // And it is B's ESP for A.
    let a = n.children(0)[0].clone();
    nat_rewrite(&mut sealed, None, Some(inside));
    let now = Instant::from_secs(1);
    let (e, k) = a.inbound_keys();
    let mut i = EspSa::<SoftCrypto>::new(a.inbound.clone(), e, k, now).unwrap();
    let d = i.decapsulate(now, &mut sealed).unwrap();
    assert_eq!(&d.packet[28..], b"after idle");
}

/// The control: without keepalives the mapping expires after 30 s, B's ESP is dropped
/// by the NAT, and the initiator's next packet gets a new public port.
#[test]
fn without_keepalives_the_nat_mapping_expires() {
    let (mut n, before, _) = idle_behind_nat(37, false);
    let inside = SocketAddr::new(v4(INSIDE), 4500);
    let nat = n.nat.as_ref().unwrap();
    assert_eq!(nat.public_port(inside), None, "mapping gone");
    assert_eq!(nat.dropped, 1, "B's ESP dropped at the NAT");
    assert!(n.delivered.is_empty(), "nothing got in");
    n.inject(inside, SocketAddr::new(v4(B), 4500), vec![0xff]);
    n.run_for(Duration::from_secs(1));
    let again = n.nat.as_ref().unwrap().public_port(inside).unwrap();
    assert_ne!(again, before, "a new mapping, a new port");
}

/// With a draft-only peer the NAT-OA payloads travel as type 131 (and the modes as
/// 61444): the addresses still arrive on both sides.
#[test]
fn transport_mode_nat_oa_with_draft_peer() {
    let mut n = transport_setup(38);
    let natd_types: Rc<RefCell<Vec<u8>>> = Rc::default();
    let t2 = natd_types.clone();
    n.tamper = Some(Box::new(move |_, _, d| {
        let Ok(h) = Header::new_checked(&d[..]) else {
            return true;
        };
        if !h.is_encrypted() {
            t2.borrow_mut().extend(
                h.payloads()
                    .flatten()
                    .map(|p| p.payload_type)
                    .filter(|t| matches!(*t, payload_type::NAT_D | payload_type::NAT_D_DRAFT)),
            );
        }
        if h.is_encrypted() || h.responder_cookie() != [0; 8] {
            return true;
        }
        let at = h
            .payloads()
            .flatten()
            .find(|p| {
                p.payload_type == payload_type::VENDOR_ID && p.body == vendor_id::NATT_RFC3947
            })
            .map(|p| 28 + p.offset + 4);
        if let Some(at) = at {
            d[at..at + 16].fill(0xee);
        }
        true
    }));
    n.initiate(0, 20).unwrap();
    assert!(n.run_until(Duration::from_secs(10), up));
    assert_eq!(
        *natd_types.borrow(),
        vec![payload_type::NAT_D_DRAFT; 4],
        "drafts chosen"
    );
    let a = n.children(0)[0].clone();
    let b = n.children(1)[0].clone();
    assert_eq!(a.nat_oa, Some((v4(B), v4(NAT_PUBLIC))));
    assert_eq!(b.nat_oa, Some((v4(INSIDE), v4(B))));
    let mut rng = Rng(8);
    let pub_4500 = b.outbound.udp_encap.unwrap().remote_port;
    let public = SocketAddr::new(v4(NAT_PUBLIC), pub_4500);
    let tcp = ipv4_l4(6, INSIDE, B, 40_002, 22, b"draft transport");
    let mut got = esp_via_nat(
        &a,
        &b,
        &tcp,
        |p| nat_rewrite(p, Some(public), None),
        &mut rng,
    );
    let (src, dst) = b.nat_oa.unwrap();
    ipsec_nat_t::fix_transport_checksum(
        &mut got,
        FixupMethod::preferred(Some(OriginalAddrs { src, dst })),
    )
    .unwrap();
    assert!(l4_checksum_ok(&got));
}
