//! Property tests: sealing then opening is the identity, for every transform, mode and
//! family, and the lengths and counters are the ones the API promises.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hal_traits::{AeadAlg, CipherAlg, CryptoError, MacAlg, SecureRng};
use ipsec_core::esp::{
    Direction, Encryption, EspConfig, EspError, EspSa, SealOptions, Transform, UdpEncap,
};
use ipsec_core::lifetime::LifetimeConfig;
use ipsec_core::replay::ReplaySnapshot;
use ipsec_core::{Duration, Instant};
use ipsec_soft_crypto::SoftCrypto;
use proptest::prelude::*;

type Sa = EspSa<SoftCrypto>;

const A4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const B4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const H1_4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 5);
const H2_4: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 7);
const H1_6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 5);
const H2_6: Ipv6Addr = Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 7);

const PROTO_ICMP: u8 = 1;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;
const PROTO_NONE: u8 = 59;

/// SplitMix64, for keys and IVs derived from a proptest-chosen seed.
struct TestRng(u64);

impl TestRng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
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

// ---------------------------------------------------------------------------------------
// Transforms.

/// Every transform the SA accepts: NULL with each MAC; DES, 3DES and AES-128/192/256 in
/// CBC mode with each MAC and without; AES-128/192/256-GCM with 8, 12 and 16-byte ICVs.
fn all_transforms() -> Vec<Transform> {
    let macs = [
        MacAlg::HmacMd5_96,
        MacAlg::HmacSha1_96,
        MacAlg::HmacSha256_128,
    ];
    let mut v: Vec<Transform> = macs
        .iter()
        .map(|&m| Transform {
            enc: Encryption::Null,
            auth: Some(m),
        })
        .collect();
    for c in [
        CipherAlg::DesCbc,
        CipherAlg::TripleDesCbc,
        CipherAlg::Aes128Cbc,
        CipherAlg::Aes192Cbc,
        CipherAlg::Aes256Cbc,
    ] {
        for auth in [None, Some(macs[0]), Some(macs[1]), Some(macs[2])] {
            v.push(Transform {
                enc: Encryption::Cbc(c),
                auth,
            });
        }
    }
    for a in [
        AeadAlg::Aes128Gcm8,
        AeadAlg::Aes128Gcm12,
        AeadAlg::Aes128Gcm16,
        AeadAlg::Aes192Gcm8,
        AeadAlg::Aes192Gcm12,
        AeadAlg::Aes192Gcm16,
        AeadAlg::Aes256Gcm8,
        AeadAlg::Aes256Gcm12,
        AeadAlg::Aes256Gcm16,
    ] {
        v.push(Transform {
            enc: Encryption::Gcm(a),
            auth: None,
        });
    }
    v
}

fn transform() -> impl Strategy<Value = Transform> {
    prop::sample::select(all_transforms())
}

fn keys(t: Transform, rng: &mut TestRng) -> (Vec<u8>, Vec<u8>) {
    let enc = rng.bytes(t.enc.keymat_len());
    let auth = rng.bytes(t.auth.map_or(0, MacAlg::key_len));
    (enc, auth)
}

fn is_null(t: Transform) -> bool {
    matches!(t.enc, Encryption::Null)
}

/// A starting sequence number: anywhere, or close to a 2^32 boundary.
fn start_seq(esn: bool) -> BoxedStrategy<u64> {
    if esn {
        prop_oneof![
            1..u64::MAX - 16,
            (0u64..8, 0u64..64).prop_map(|(hi, back)| ((hi + 1) << 32).saturating_sub(back).max(1)),
            1u64..200,
        ]
        .boxed()
    } else {
        prop_oneof![1..=u64::from(u32::MAX) - 8, 1u64..200].boxed()
    }
}

/// A snapshot of a receiver that has seen the packet `back + 1` before `start` (none if
/// that would be 0).
fn restore_near(i: &mut Sa, start: u64, back: u64, esn: bool) {
    let top = start.saturating_sub(1 + back);
    if top == 0 {
        return;
    }
    let mut snap = ReplaySnapshot::<2> {
        bitmap: [0; 2],
        top,
        size: 64,
        esn,
    };
    // Mark the top itself as seen, as a live window would have it.
    let block = usize::try_from((top / 64) % 2).unwrap();
    snap.bitmap[block] |= 1 << (top % 64);
    i.restore_replay(&snap).unwrap();
}

// ---------------------------------------------------------------------------------------
// Packets.

fn u16_of(n: usize) -> [u8; 2] {
    u16::try_from(n).unwrap().to_be_bytes()
}

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

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, tos: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, tos];
    p.extend_from_slice(&u16_of(20 + payload.len()));
    p.extend_from_slice(&[0x1c, 0x46, 0x40, 0x00, 64, proto, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = inet_checksum(&[&p]);
    p[10..12].copy_from_slice(&c);
    p.extend_from_slice(payload);
    p
}

fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, nh: u8, tc: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60 | (tc >> 4), tc << 4, 0x12, 0x34];
    p.extend_from_slice(&u16_of(payload.len()));
    p.extend_from_slice(&[nh, 64]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

/// The upper layer (ICMP echo or UDP) with its checksum; `pseudo` is empty for ICMPv4.
fn upper(icmp: bool, v6: bool, pseudo: &[u8], data: &[u8]) -> (u8, Vec<u8>) {
    let mut m = if icmp {
        vec![if v6 { 128 } else { 8 }, 0, 0, 0, 0x12, 0x34, 0, 1]
    } else {
        let mut u = vec![0x13, 0x88, 0, 53];
        u.extend_from_slice(&u16_of(8 + data.len()));
        u.extend_from_slice(&[0, 0]);
        u
    };
    m.extend_from_slice(data);
    let c = inet_checksum(&[pseudo, &m]);
    let at = if icmp { 2 } else { 6 };
    m[at..at + 2].copy_from_slice(&c);
    let proto = match (icmp, v6) {
        (true, false) => PROTO_ICMP,
        (true, true) => PROTO_ICMPV6,
        (false, _) => PROTO_UDP,
    };
    (proto, m)
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

fn packet_v4(src: Ipv4Addr, dst: Ipv4Addr, icmp: bool, tos: u8, data: &[u8]) -> Vec<u8> {
    let proto = if icmp { PROTO_ICMP } else { PROTO_UDP };
    let pseudo = if icmp {
        Vec::new()
    } else {
        pseudo_v4(src, dst, proto, 8 + data.len())
    };
    let (proto, l4) = upper(icmp, false, &pseudo, data);
    ipv4(src, dst, proto, tos, &l4)
}

fn packet_v6(src: Ipv6Addr, dst: Ipv6Addr, icmp: bool, hbh: bool, tc: u8, data: &[u8]) -> Vec<u8> {
    let proto = if icmp { PROTO_ICMPV6 } else { PROTO_UDP };
    let pseudo = pseudo_v6(src, dst, proto, 8 + data.len());
    let (proto, l4) = upper(icmp, true, &pseudo, data);
    if hbh {
        // Hop-by-Hop with a Router Alert option (RFC 2711) and PadN.
        let mut ext = vec![proto, 0, 5, 2, 0, 0, 1, 0];
        ext.extend_from_slice(&l4);
        ipv6(src, dst, 0, tc, &ext)
    } else {
        ipv6(src, dst, proto, tc, &l4)
    }
}

// ---------------------------------------------------------------------------------------
// Layouts.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    Tunnel { outer6: bool, inner6: bool },
    Transport { v6: bool, hbh: bool },
}

const LAYOUTS: [Layout; 7] = [
    Layout::Tunnel {
        outer6: false,
        inner6: false,
    },
    Layout::Tunnel {
        outer6: false,
        inner6: true,
    },
    Layout::Tunnel {
        outer6: true,
        inner6: false,
    },
    Layout::Tunnel {
        outer6: true,
        inner6: true,
    },
    Layout::Transport {
        v6: false,
        hbh: false,
    },
    Layout::Transport {
        v6: true,
        hbh: false,
    },
    Layout::Transport {
        v6: true,
        hbh: true,
    },
];

impl Layout {
    fn outer6(self) -> bool {
        match self {
            Self::Tunnel { outer6, .. } => outer6,
            Self::Transport { v6, .. } => v6,
        }
    }

    /// Bytes of the original packet kept in front of ESP in transport mode.
    fn prefix_len(self) -> usize {
        match self {
            Self::Tunnel { .. } => 0,
            Self::Transport { v6: false, .. } => 20,
            Self::Transport { v6: true, hbh } => 40 + if hbh { 8 } else { 0 },
        }
    }

    /// The packet this layout sends, carrying `data` in ICMP or UDP.
    fn packet(self, icmp: bool, tos: u8, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Tunnel { inner6: false, .. } => packet_v4(H1_4, H2_4, icmp, tos, data),
            Self::Tunnel { inner6: true, .. } => packet_v6(H1_6, H2_6, icmp, false, tos, data),
            Self::Transport { v6: false, .. } => packet_v4(A4, B4, icmp, tos, data),
            Self::Transport { v6: true, hbh } => packet_v6(A6, B6, icmp, hbh, tos, data),
        }
    }

    /// The smallest packet [`Layout::packet`] builds (no data).
    fn min_packet(self) -> usize {
        self.packet(false, 0, &[]).len()
    }
}

fn configs(t: Transform, layout: Layout, udp: bool, spi: u32) -> (EspConfig, EspConfig) {
    let (a, b) = if layout.outer6() {
        (IpAddr::V6(A6), IpAddr::V6(B6))
    } else {
        (IpAddr::V4(A4), IpAddr::V4(B4))
    };
    let (mut o, mut i) = match layout {
        Layout::Tunnel { .. } => (
            EspConfig::tunnel(spi, Direction::Outbound, t, a, b),
            EspConfig::tunnel(spi, Direction::Inbound, t, b, a),
        ),
        Layout::Transport { .. } => {
            let mut o = EspConfig::transport(spi, Direction::Outbound, t);
            let mut i = EspConfig::transport(spi, Direction::Inbound, t);
            // Not needed to build packets, but tells `max_inner_len` the family.
            (o.local, o.remote) = (Some(a), Some(b));
            (i.local, i.remote) = (Some(b), Some(a));
            (o, i)
        }
    };
    if udp {
        o.udp_encap = Some(UdpEncap {
            local_port: 4500,
            remote_port: 4600,
        });
        i.udp_encap = Some(UdpEncap {
            local_port: 4600,
            remote_port: 4500,
        });
    }
    o.lifetime = LifetimeConfig::UNLIMITED;
    i.lifetime = LifetimeConfig::UNLIMITED;
    (o, i)
}

fn layout() -> impl Strategy<Value = Layout> {
    prop::sample::select(LAYOUTS.to_vec())
}

// ---------------------------------------------------------------------------------------
// Properties.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// ESP layer: `seal` / `seal_with_iv` then `open_in_place` gives back the payload, the
    /// next header and the full sequence number, for every transform, with and without
    /// ESN, from any starting sequence number.
    #[test]
    fn esp_seal_open_is_the_identity(
        t in transform(),
        seed in any::<u64>(),
        spi in 256u32..,
        (esn, start) in any::<bool>().prop_flat_map(|esn| (Just(esn), start_seq(esn))),
        back in 0u64..40,
        payloads in prop::collection::vec(
            (any::<u8>(), prop::collection::vec(any::<u8>(), 0..1500), any::<bool>()),
            1..4,
        ),
    ) {
        let mut rng = TestRng(seed);
        let (enc, auth) = keys(t, &mut rng);
        let mut oc = EspConfig::transport(spi, Direction::Outbound, t);
        oc.esn = esn;
        let ic = EspConfig { direction: Direction::Inbound, ..oc.clone() };
        let mut o = Sa::new(oc, &enc, &auth, Instant::ZERO).unwrap();
        let mut i = Sa::new(ic, &enc, &auth, Instant::ZERO).unwrap();
        o.advance_seq_to(start);
        restore_near(&mut i, start, back, esn);

        let (mut bytes, mut delivered) = (0u64, 0u64);
        for (k, (nh, payload, fixed_iv)) in payloads.iter().enumerate() {
            let seq = start + u64::try_from(k).unwrap();
            let sealed_len = o.sealed_len(payload.len());
            let mut buf = vec![0u8; sealed_len + 3];
            let n = if *fixed_iv {
                let iv = rng.bytes(t.iv_len());
                o.seal_with_iv(Instant::ZERO, *nh, payload, &iv, &mut buf).unwrap()
            } else {
                o.seal(Instant::ZERO, *nh, payload, &mut rng, &mut buf).unwrap()
            };
            prop_assert_eq!(n, sealed_len);
            prop_assert_eq!((n - 8 - t.iv_len() - t.icv_len()) % t.enc.align(), 0);
            prop_assert_eq!(&buf[..4], &spi.to_be_bytes());
            prop_assert_eq!(&buf[4..8], &(seq & 0xffff_ffff).to_be_bytes()[4..]);
            bytes += u64::try_from(payload.len()).unwrap();

            let mut wire = buf[..n].to_vec();
            let got = i.open_in_place(Instant::ZERO, &mut wire);
            if *nh == PROTO_NONE {
                prop_assert_eq!(got, Err(EspError::DummyPacket));
                continue;
            }
            let opened = got.unwrap();
            prop_assert_eq!(opened.seq, seq);
            prop_assert_eq!(opened.next_header, *nh);
            prop_assert_eq!(&wire[opened.payload], &payload[..]);
            delivered += 1;
        }
        let n = u64::try_from(payloads.len()).unwrap();
        let c = *o.counters();
        prop_assert_eq!(c.encaps, n);
        prop_assert_eq!(c.encrypt, if is_null(t) { 0 } else { n });
        prop_assert_eq!(c.digest, if t.icv_len() > 0 { n } else { 0 });
        prop_assert_eq!(c.bytes_out, bytes);
        prop_assert_eq!(c.send_errors, 0);
        prop_assert_eq!(o.next_seq(), start + n);
        let c = *i.counters();
        // Dummy packets verify too; they are dropped after decryption.
        prop_assert_eq!(c.verify, n);
        prop_assert_eq!(c.recv_errors, n - delivered);
        prop_assert_eq!(c.dummy, n - delivered);
        prop_assert_eq!(i.replay_window().top(), start + n - 1);
    }

    /// Whole packets: tunnel mode (IPv4 and IPv6 inside IPv4 and IPv6) and transport mode
    /// (IPv4, IPv6, IPv6 with a Hop-by-Hop header), raw or UDP-encapsulated: the receiver
    /// gets the packet back byte for byte, the outer packet has the promised length, and
    /// the counters of both ends agree.
    #[test]
    fn encapsulate_decapsulate_is_the_identity(
        t in transform(),
        layout in layout(),
        udp in any::<bool>(),
        seed in any::<u64>(),
        spi in 256u32..,
        (esn, start) in any::<bool>().prop_flat_map(|esn| (Just(esn), start_seq(esn))),
        packets in prop::collection::vec(
            (any::<bool>(), any::<u8>(), prop::collection::vec(any::<u8>(), 0..1400), any::<bool>()),
            1..4,
        ),
    ) {
        let mut rng = TestRng(seed);
        let (enc, auth) = keys(t, &mut rng);
        let (mut oc, mut ic) = configs(t, layout, udp, spi);
        oc.esn = esn;
        ic.esn = esn;
        let mut o = Sa::new(oc, &enc, &auth, Instant::ZERO).unwrap();
        let mut i = Sa::new(ic, &enc, &auth, Instant::ZERO).unwrap();
        o.advance_seq_to(start);
        restore_near(&mut i, start, 0, esn);

        let mut bytes = 0u64;
        for (k, (icmp, tos, data, random_iv)) in packets.iter().enumerate() {
            let packet = layout.packet(*icmp, *tos, data);
            let protected = packet.len() - layout.prefix_len();
            let expected_len = layout.prefix_len() + o.outer_header_len() + o.sealed_len(protected);
            let mut out = vec![0u8; expected_len + 5];
            let iv = rng.bytes(t.iv_len());
            let n = if *random_iv {
                o.encapsulate(Instant::ZERO, &packet, None, &mut rng, &mut out).unwrap()
            } else {
                let opts = SealOptions {
                    iv: (!matches!(t.enc, Encryption::Gcm(_))).then_some(&iv[..]),
                    ipv4_ident: Some(0x4242),
                };
                o.encapsulate_with(Instant::ZERO, &packet, &opts, &mut out).unwrap()
            };
            prop_assert_eq!(n, expected_len);
            bytes += u64::try_from(protected).unwrap();

            let mut wire = out[..n].to_vec();
            let seq = start + u64::try_from(k).unwrap();
            let d = i.decapsulate(Instant::from_millis(7), &mut wire).unwrap();
            prop_assert_eq!(&d.packet[..], &packet[..]);
            prop_assert_eq!(d.seq, seq);
        }
        let n = u64::try_from(packets.len()).unwrap();
        let (co, ci) = (*o.counters(), *i.counters());
        prop_assert_eq!(co.encaps, n);
        prop_assert_eq!(ci.decaps, n);
        prop_assert_eq!(ci.verify, n);
        prop_assert_eq!(co.bytes_out, bytes);
        prop_assert_eq!(ci.bytes_in, bytes);
        prop_assert_eq!(co.send_errors + ci.recv_errors, 0);
        prop_assert_eq!(o.lifetime().bytes_used(), i.lifetime().bytes_used());
        prop_assert_eq!(i.last_used(), Instant::from_millis(7));
    }

    /// `max_inner_len(mtu)` is a promise: a packet of that length encapsulates to at most
    /// `mtu` bytes, and one a cipher block (alignment unit) longer no longer fits.
    #[test]
    fn max_inner_len_fits_the_mtu(
        t in transform(),
        layout in layout().prop_filter("option-less headers only", |l| {
            !matches!(l, Layout::Transport { hbh: true, .. })
        }),
        udp in any::<bool>(),
        mtu in 60usize..=1500,
        icmp in any::<bool>(),
    ) {
        let mut rng = TestRng(u64::try_from(mtu).unwrap());
        let (enc, auth) = keys(t, &mut rng);
        let (oc, _) = configs(t, layout, udp, 0x1000);
        let mut o = Sa::new(oc, &enc, &auth, Instant::ZERO).unwrap();
        let len = o.max_inner_len(mtu);
        let min = layout.min_packet();
        if len < min {
            // Nothing useful fits; the promise is vacuous.
            return Ok(());
        }
        let pad = |extra: usize| vec![0x5a; len + extra - min];
        let mut out = vec![0u8; mtu + 64];

        let packet = layout.packet(icmp, 0, &pad(0));
        prop_assert_eq!(packet.len(), len);
        let n = o.encapsulate(Instant::ZERO, &packet, None, &mut rng, &mut out).unwrap();
        prop_assert!(n <= mtu, "{} bytes for mtu {}", n, mtu);
        let protected = len - layout.prefix_len();
        prop_assert_eq!(n, layout.prefix_len() + o.outer_header_len() + o.sealed_len(protected));

        let align = t.enc.align();
        let bigger = layout.packet(icmp, 0, &pad(align));
        let n = o.encapsulate(Instant::ZERO, &bigger, None, &mut rng, &mut out).unwrap();
        prop_assert!(n > mtu, "{} + {} bytes gave {} for mtu {}", len, align, n, mtu);
    }
}

/// The promise at every MTU, for one transform of each kind and every layout (a sweep, to
/// back the sampled property above).
#[test]
fn max_inner_len_sweep() {
    let ts = [
        Transform {
            enc: Encryption::Cbc(CipherAlg::Aes128Cbc),
            auth: Some(MacAlg::HmacSha1_96),
        },
        Transform {
            enc: Encryption::Cbc(CipherAlg::TripleDesCbc),
            auth: None,
        },
        Transform {
            enc: Encryption::Gcm(AeadAlg::Aes256Gcm12),
            auth: None,
        },
        Transform {
            enc: Encryption::Null,
            auth: Some(MacAlg::HmacSha256_128),
        },
    ];
    let mut rng = TestRng(99);
    for t in ts {
        for layout in LAYOUTS {
            if matches!(layout, Layout::Transport { hbh: true, .. }) {
                continue;
            }
            for udp in [false, true] {
                let (enc, auth) = keys(t, &mut rng);
                let (oc, _) = configs(t, layout, udp, 0x1000);
                let o = Sa::new(oc, &enc, &auth, Instant::ZERO).unwrap();
                let overhead = layout.prefix_len() + o.outer_header_len();
                for mtu in 0..=1600 {
                    let len = o.max_inner_len(mtu);
                    if len == 0 {
                        continue;
                    }
                    let protected = len - layout.prefix_len();
                    assert!(
                        overhead + o.sealed_len(protected) <= mtu,
                        "{t:?} {layout:?}"
                    );
                    let more = protected + t.enc.align();
                    assert!(
                        overhead + o.sealed_len(more) > mtu,
                        "{t:?} {layout:?} {mtu}"
                    );
                }
            }
        }
    }
}

/// Counters and lifetimes of a longer exchange in one direction: both ends count the same
/// packets and the same bytes, and the receiver's lifetime events match the sender's.
#[test]
fn long_exchange_counts_agree() {
    let mut rng = TestRng(7);
    for t in all_transforms() {
        for layout in LAYOUTS {
            let (mut oc, mut ic) = configs(t, layout, layout.outer6(), 0x2000);
            let lifetime = LifetimeConfig {
                soft_bytes: Some(3000),
                hard_bytes: Some(6000),
                soft_time: Some(Duration::from_secs(60)),
                hard_time: None,
            };
            oc.lifetime = lifetime;
            ic.lifetime = lifetime;
            let (enc, auth) = keys(t, &mut rng);
            let mut o = Sa::new(oc, &enc, &auth, Instant::ZERO).unwrap();
            let mut i = Sa::new(ic, &enc, &auth, Instant::ZERO).unwrap();
            let mut k = 0u8;
            let mut sent = 0u64;
            loop {
                let data = rng.bytes(usize::from(k) * 7 % 300);
                let packet = layout.packet(k % 2 == 0, k, &data);
                let mut out = vec![0u8; packet.len() + 128];
                match o.encapsulate(Instant::ZERO, &packet, None, &mut rng, &mut out) {
                    Ok(n) => {
                        let d = i.decapsulate(Instant::ZERO, &mut out[..n]).unwrap();
                        assert_eq!(d.packet, &packet[..]);
                        sent += u64::try_from(packet.len() - layout.prefix_len()).unwrap();
                    }
                    Err(e) => {
                        assert_eq!(e, EspError::Expired, "{t:?} {layout:?}");
                        break;
                    }
                }
                assert_eq!(
                    o.poll_event(),
                    i.poll_event(),
                    "{t:?} {layout:?} packet {k}"
                );
                k += 1;
            }
            let (co, ci) = (*o.counters(), *i.counters());
            assert_eq!(co.encaps, u64::from(k));
            assert_eq!(ci.decaps, u64::from(k));
            assert_eq!(co.bytes_out, sent);
            assert_eq!(ci.bytes_in, sent);
            assert!(sent >= 6000);
            assert_eq!(co.expired, 1);
            assert!(i.lifetime().is_hard_expired(), "{t:?} {layout:?}");
        }
    }
}
