//! `esp_roundtrip`: differential seal/open over every transform and SA shape.
//!
//! The input (decoded with `arbitrary`) picks a transform from the full list (NULL + MAC,
//! DES/3DES/AES-128/192/256-CBC with or without a MAC, AES-GCM-8/12/16 with 128/192/256-bit
//! keys), tunnel or transport mode, the inner and outer IP versions, UDP encapsulation,
//! ESN, the window size, the first sequence number, the SPI, keys, IV and the payload.
//!
//! * ESP layer: `seal_with_iv` then `open_in_place` returns exactly the payload, next
//!   header and sequence number; a short buffer is `BufferTooSmall { needed }` without
//!   using up a sequence number; a second open is a replay.
//! * Packet layer: an IP packet built around the payload is sealed 1-4 times with
//!   `encapsulate_with`, delivered in a fuzzer-chosen order, and each `decapsulate` returns
//!   exactly the original packet with its sequence number; `max_inner_len(mtu)` keeps its
//!   promise; redelivery is a replay.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use hal_traits::{AeadAlg, CipherAlg, MacAlg};
use ipsec_core::Instant;
use ipsec_core::esp::{
    Direction, Encryption, EspConfig, EspError, EspSa, SealOptions, Transform, UdpEncap,
};
use ipsec_core::replay::ReplaySnapshot;
use ipsec_core::wire::ipv4::{Ipv4Packet, Ipv4Repr};
use ipsec_core::wire::ipv6::{Ipv6Packet, Ipv6Repr};
use ipsec_core::wire::proto;
use ipsec_soft_crypto::SoftCrypto;
use libfuzzer_sys::fuzz_target;

const NOW: Instant = Instant::ZERO;

const ENCRYPTIONS: [Encryption; 15] = [
    Encryption::Null,
    Encryption::Cbc(CipherAlg::DesCbc),
    Encryption::Cbc(CipherAlg::TripleDesCbc),
    Encryption::Cbc(CipherAlg::Aes128Cbc),
    Encryption::Cbc(CipherAlg::Aes192Cbc),
    Encryption::Cbc(CipherAlg::Aes256Cbc),
    Encryption::Gcm(AeadAlg::Aes128Gcm8),
    Encryption::Gcm(AeadAlg::Aes128Gcm12),
    Encryption::Gcm(AeadAlg::Aes128Gcm16),
    Encryption::Gcm(AeadAlg::Aes192Gcm8),
    Encryption::Gcm(AeadAlg::Aes192Gcm12),
    Encryption::Gcm(AeadAlg::Aes192Gcm16),
    Encryption::Gcm(AeadAlg::Aes256Gcm8),
    Encryption::Gcm(AeadAlg::Aes256Gcm12),
    Encryption::Gcm(AeadAlg::Aes256Gcm16),
];

const MACS: [MacAlg; 3] = [
    MacAlg::HmacMd5_96,
    MacAlg::HmacSha1_96,
    MacAlg::HmacSha256_128,
];

#[derive(Arbitrary, Debug)]
struct Case<'a> {
    enc: u8,
    auth: u8,
    tunnel: bool,
    inner_v6: bool,
    outer_v6: bool,
    udp: bool,
    esn: bool,
    window: u8,
    seq: u64,
    spi: u32,
    keymat: [u8; 36],
    auth_key: [u8; 32],
    iv: [u8; 16],
    next_header: u8,
    protocol: u8,
    dest_opts: bool,
    tos: u8,
    ident: u16,
    dont_frag: bool,
    count: u8,
    order: u8,
    mtu: u16,
    short_by: u8,
    /// The rest of the input.
    payload: &'a [u8],
}

fuzz_target!(|c: Case<'_>| {
    if c.payload.len() > 4000 {
        return;
    }
    let enc = ENCRYPTIONS[usize::from(c.enc) % ENCRYPTIONS.len()];
    let auth = match enc {
        Encryption::Gcm(_) => None,
        Encryption::Null => Some(MACS[usize::from(c.auth) % MACS.len()]),
        Encryption::Cbc(_) => {
            [None, Some(MACS[0]), Some(MACS[1]), Some(MACS[2])][usize::from(c.auth) % 4]
        }
    };
    let t = Transform { enc, auth };
    let window = [0, 32, 64, 4096][usize::from(c.window) % 4];
    if window > 64 {
        esp_layer::<65>(&c, t, window);
        packet_layer::<65>(&c, t, window);
    } else {
        esp_layer::<2>(&c, t, window);
        packet_layer::<2>(&c, t, window);
    }
});

/// The first sequence number: what `advance_seq_to` leaves for the given input.
fn first_seq(c: &Case<'_>) -> u64 {
    let s = if c.esn {
        c.seq
    } else {
        c.seq & u64::from(u32::MAX)
    };
    s.max(1)
}

fn pair<const W: usize>(
    c: &Case<'_>,
    t: Transform,
    window: u32,
    make: impl Fn(Direction) -> EspConfig,
) -> (EspSa<SoftCrypto, W>, EspSa<SoftCrypto, W>) {
    let enc_key = &c.keymat[..t.enc.keymat_len()];
    let auth_key = match t.auth {
        Some(m) => &c.auth_key[..m.key_len()],
        None => &[],
    };
    let sa = |d| {
        let mut cfg = make(d);
        cfg.esn = c.esn;
        cfg.replay_window = window;
        cfg.udp_encap = c.udp.then_some(UdpEncap::STANDARD);
        EspSa::<SoftCrypto, W>::new(cfg, enc_key, auth_key, NOW).expect("valid SA")
    };
    let mut out = sa(Direction::Outbound);
    let mut inb = sa(Direction::Inbound);
    let seq = first_seq(c);
    out.advance_seq_to(seq);
    if seq > 1 {
        let snapshot = ReplaySnapshot::<W> {
            bitmap: [0; W],
            top: seq - 1,
            size: window,
            esn: c.esn,
        };
        inb.restore_replay(&snapshot).expect("window top");
    }
    (out, inb)
}

fn esp_layer<const W: usize>(c: &Case<'_>, t: Transform, window: u32) {
    let spi = c.spi.max(1);
    let (mut out, mut inb) = pair::<W>(c, t, window, |d| EspConfig::transport(spi, d, t));
    let seq = out.next_seq();
    let payload = c.payload;
    let iv = &c.iv[..t.iv_len()];
    let needed = out.sealed_len(payload.len());

    if c.short_by > 0 {
        let mut short = vec![0u8; needed.saturating_sub(usize::from(c.short_by))];
        let r = out.seal_with_iv(NOW, c.next_header, payload, iv, &mut short);
        assert_eq!(r, Err(EspError::BufferTooSmall { needed }), "short buffer");
        assert_eq!(
            out.next_seq(),
            seq,
            "a failed seal used up a sequence number"
        );
    }

    let mut buf = vec![0u8; needed + usize::from(c.short_by)];
    let len = out
        .seal_with_iv(NOW, c.next_header, payload, iv, &mut buf)
        .expect("seal");
    assert_eq!(len, needed, "sealed length");
    buf.truncate(len);
    assert_eq!(buf[..4], spi.to_be_bytes(), "SPI");
    #[allow(clippy::cast_possible_truncation)]
    let seq_lo = (seq as u32).to_be_bytes();
    assert_eq!(buf[4..8], seq_lo, "sequence number");
    let sealed = buf.clone();

    match inb.open_in_place(NOW, &mut buf) {
        Ok(o) => {
            assert_ne!(
                c.next_header,
                proto::NO_NEXT_HEADER,
                "dummy packet delivered"
            );
            assert_eq!(&buf[o.payload.clone()], &payload[..], "payload");
            assert_eq!(o.next_header, c.next_header, "next header");
            assert_eq!(o.seq, seq, "sequence number");
        }
        Err(EspError::DummyPacket) if c.next_header == proto::NO_NEXT_HEADER => {}
        Err(e) => panic!("open of a freshly sealed packet failed: {e:?}"),
    }
    let mut again = sealed;
    let r = inb.open_in_place(NOW, &mut again);
    if window > 0 {
        assert_eq!(r.err(), Some(EspError::Replayed), "second open");
    }
}

fn packet_layer<const W: usize>(c: &Case<'_>, t: Transform, window: u32) {
    let Some(original) = build_packet(c) else {
        return;
    };
    let spi = c.spi.max(1);
    let (a, b): (IpAddr, IpAddr) = if c.outer_v6 {
        (
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2).into(),
        )
    } else {
        (
            Ipv4Addr::new(192, 0, 2, 1).into(),
            Ipv4Addr::new(198, 51, 100, 2).into(),
        )
    };
    let (mut out, mut inb) = pair::<W>(c, t, window, |d| {
        if c.tunnel {
            let (l, r) = if d == Direction::Outbound {
                (a, b)
            } else {
                (b, a)
            };
            EspConfig::tunnel(spi, d, t, l, r)
        } else {
            EspConfig::transport(spi, d, t)
        }
    });
    let opts = SealOptions {
        iv: Some(&c.iv[..t.iv_len()]).filter(|_| matches!(t.enc, Encryption::Cbc(_))),
        ipv4_ident: None,
    };
    let count = 1 + usize::from(c.count % 4);
    let limit = if c.esn { u64::MAX } else { u64::from(u32::MAX) };

    // Seal `count` copies: packets[i] carries sequence number seqs[i].
    let mut packets = Vec::new();
    let mut seqs = Vec::new();
    for i in 0..count {
        let seq = out.next_seq();
        let mut buf = vec![0u8; original.len() + 128];
        let total = match out.encapsulate_with(NOW, &original, &opts, &mut buf) {
            Ok(n) => n,
            Err(EspError::SequenceOverflow) => {
                assert!(seq == 0 || seq > limit, "overflow at sequence {seq}");
                break;
            }
            Err(e) => panic!("encapsulate failed: {e:?}"),
        };
        buf.truncate(total);
        if i == 0 {
            check_sizes(c, &out, &original, total, &opts);
        }
        packets.push(buf);
        seqs.push(seq);
    }
    if packets.is_empty() {
        return;
    }

    // Deliver in the order the input picks (a permutation by Lehmer code).
    let mut left: Vec<usize> = (0..packets.len()).collect();
    let mut code = usize::from(c.order);
    let mut first = None;
    while !left.is_empty() {
        let i = left.remove(code % left.len());
        code /= left.len() + 1;
        first.get_or_insert(i);
        let mut buf = packets[i].clone();
        let d = inb
            .decapsulate(NOW, &mut buf)
            .unwrap_or_else(|e| panic!("decapsulate of packet {i} (seq {}): {e:?}", seqs[i]));
        assert_eq!(d.packet, &original[..], "decapsulated packet {i}");
        assert_eq!(d.seq, seqs[i], "sequence number of packet {i}");
    }
    let i = first.expect("one packet");
    let mut buf = packets[i].clone();
    let r = inb.decapsulate(NOW, &mut buf).map(|d| d.packet.to_vec());
    if window > 0 {
        assert_eq!(r, Err(EspError::Replayed), "redelivery");
    } else {
        assert_eq!(r, Ok(original), "redelivery without anti-replay");
    }
}

/// A short buffer fails cleanly, and `max_inner_len` keeps its promise.
fn check_sizes<const W: usize>(
    c: &Case<'_>,
    out: &EspSa<SoftCrypto, W>,
    original: &[u8],
    total: usize,
    opts: &SealOptions<'_>,
) {
    // Only the option-less IPv4 header (or tunnel mode) is what `max_inner_len` assumes.
    if c.tunnel || !c.inner_v6 {
        let mtu = usize::from(c.mtu);
        if original.len() <= out.max_inner_len(mtu) {
            assert!(
                total <= mtu,
                "max_inner_len({mtu}) let through {total} bytes"
            );
        }
    }
    if c.tunnel {
        assert_eq!(
            total,
            out.outer_header_len() + out.sealed_len(original.len()),
            "tunnel-mode length"
        );
    }
    if c.short_by > 0 {
        // The SA is not `Clone`: a twin at the same sequence number tries a shorter buffer,
        // which must fail before the counter moves.
        let mut probe = EspSa::<SoftCrypto, W>::new(
            out.config().clone(),
            &c.keymat[..out.config().transform.enc.keymat_len()],
            match out.config().transform.auth {
                Some(m) => &c.auth_key[..m.key_len()],
                None => &[],
            },
            NOW,
        )
        .expect("valid SA");
        probe.advance_seq_to(out.next_seq());
        let seq = probe.next_seq();
        let mut short = vec![0u8; total.saturating_sub(usize::from(c.short_by))];
        let r = probe.encapsulate_with(NOW, original, opts, &mut short);
        if !matches!(r, Err(EspError::SequenceOverflow)) {
            assert_eq!(
                r,
                Err(EspError::BufferTooSmall { needed: total }),
                "short output buffer"
            );
        }
        assert_eq!(
            probe.next_seq(),
            seq,
            "a failed encapsulate used a sequence number"
        );
    }
}

/// The packet to protect: IPv4 or IPv6 (optionally with a Destination Options header)
/// around the payload, with a protocol that transport mode can carry.
fn build_packet(c: &Case<'_>) -> Option<Vec<u8>> {
    let mut protocol = c.protocol;
    // Tunnel/dummy next headers and IPv6 extension headers would change the meaning.
    if matches!(
        protocol,
        proto::IPV4 | proto::IPV6 | proto::NO_NEXT_HEADER | proto::IPV6_FRAG | 0 | 43 | 60
    ) {
        protocol = proto::UDP;
    }
    let payload = c.payload;
    if c.inner_v6 {
        let ext = if c.dest_opts { 8 } else { 0 };
        let repr = Ipv6Repr {
            src: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1),
            dst: Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2),
            next_header: if c.dest_opts { 60 } else { protocol },
            payload_len: ext + payload.len(),
            hop_limit: 64,
            traffic_class: c.tos,
            flow_label: 0x12345,
        };
        let mut p = vec![0u8; repr.buffer_len()];
        repr.emit(&mut p).ok()?;
        if c.dest_opts {
            // Next header, length 0 (8 bytes), PadN of 4.
            p[40..48].copy_from_slice(&[protocol, 0, 1, 4, 0, 0, 0, 0]);
        }
        p[40 + ext..].copy_from_slice(payload);
        Ipv6Packet::new_checked(&p[..]).ok()?;
        Some(p)
    } else {
        let repr = Ipv4Repr {
            src: Ipv4Addr::new(10, 1, 0, 1),
            dst: Ipv4Addr::new(10, 2, 0, 2),
            protocol,
            payload_len: payload.len(),
            ttl: 64,
            tos: c.tos,
            ident: c.ident,
            dont_frag: c.dont_frag,
            more_frags: false,
            frag_offset: 0,
        };
        let mut p = vec![0u8; repr.buffer_len()];
        repr.emit(&mut p).ok()?;
        p[20..].copy_from_slice(payload);
        Ipv4Packet::new_checked(&p[..]).ok()?;
        Some(p)
    }
}
