//! The GRE tunnel state machine on its own (no IPsec): known frames from
//! `natt_dpd_gre_reference.json` in and out, key and RFC 2890 sequencing, keepalive timing
//! against a peer on a virtual clock, tunnel MTU and path MTU discovery, counters and
//! status.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

// Inside a module named after GRE so that `cargo test -p ipsec-core gre` selects every test.
mod gre_tunnel {

    use std::net::Ipv4Addr;

    use ipsec_core::esp::DfBit;
    use ipsec_core::gre::{
        Delivered, GreConfig, GreError, GreEvent, GreTunnel, KEEPALIVE_TOS, KeepaliveConfig,
        PmtudConfig,
    };
    use ipsec_core::wire::WireError;
    use ipsec_core::wire::gre::ethertype;
    use ipsec_core::wire::ipv4::Ipv4Packet;
    use ipsec_core::{Duration, Instant};

    const A: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
    const B: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

    // natt_dpd_gre_reference.json `gre.frames_hex`, 203.0.113.1 -> 203.0.113.2.
    const PLAIN: &str = "4500004400010000402f0286cb007101cb007102000008004500002c0007000040011fa8ac100101\
    ac1002010800e6c6000100016772652d746573742d7061796c6f6164";
    const KEY_SEQ1: &str = "4500004c00020000402f027dcb007101cb0071023000080000001234000000014500002c00070\
    00040011fa8ac100101ac1002010800e6c6000100016772652d746573742d7061796c6f6164";
    const KEY_SEQ2: &str = "4500004c00030000402f027ccb007101cb0071023000080000001234000000024500002c00070\
    00040011fa8ac100101ac1002010800e6c6000100016772652d746573742d7061796c6f6164";
    const CHECKSUM: &str = "4500004800040000402f027fcb007101cb0071028000080077ff00004500002c00070000400\
    11fa8ac100101ac1002010800e6c6000100016772652d746573742d7061796c6f6164";
    const KEEPALIVE: &str = "4500003000060000ff2f4394cb007101cb007102000008004500001800050000ff2f43adcb00\
    7102cb00710100000000";
    const KEEPALIVE_RETURNED: &str = "4500001800050000ff2f43adcb007102cb00710100000000";
    /// The inner packet of every data frame: ICMP echo 172.16.1.1 -> 172.16.2.1.
    const INNER: &str = "4500002c0007000040011fa8ac100101ac1002010800e6c6000100016772652d746573742d7061\
    796c6f6164";

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    /// Rewrites the ident (and ToS) of an IPv4 header and fixes its checksum.
    fn patch_ip(pkt: &mut [u8], tos: u8, ident: u16) {
        let mut ip = Ipv4Packet::new_unchecked(&mut pkt[..]);
        ip.set_tos(tos);
        ip.set_ident(ident);
        ip.fill_checksum();
    }

    fn encap(tun: &mut GreTunnel, now: Instant, proto: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 2000];
        let n = tun.encapsulate(now, proto, payload, &mut out).unwrap();
        out.truncate(n);
        out
    }

    fn cfg(src: Ipv4Addr, dst: Ipv4Addr) -> GreConfig {
        let mut c = GreConfig::new(src, dst);
        c.ttl = 64; // the reference frames' TTL
        c
    }

    #[test]
    fn encapsulation_reproduces_the_reference_frames() {
        let inner = hex(INNER);
        // Plain.
        let mut tun = GreTunnel::new(cfg(A, B), t(0)).unwrap();
        let mut got = encap(&mut tun, t(0), ethertype::IPV4, &inner);
        patch_ip(&mut got, 0, 1);
        assert_eq!(hex::encode(&got), hex::encode(hex(PLAIN)));

        // Key 0x1234 and sequence numbers: ours start at 0, the reference's at 1.
        let mut c = cfg(A, B);
        c.key = Some(0x1234);
        c.sequencing = true;
        let mut tun = GreTunnel::new(c, t(0)).unwrap();
        let first = encap(&mut tun, t(0), ethertype::IPV4, &inner);
        assert_eq!(&first[20..32], &hex("300008000000123400000000")[..]);
        for (ident, frame) in [(2, KEY_SEQ1), (3, KEY_SEQ2)] {
            let mut got = encap(&mut tun, t(0), ethertype::IPV4, &inner);
            patch_ip(&mut got, 0, ident);
            assert_eq!(hex::encode(&got), hex::encode(hex(frame)));
        }

        // Checksum (0x77ff, as Wireshark verified).
        let mut c = cfg(A, B);
        c.checksum = true;
        let mut tun = GreTunnel::new(c, t(0)).unwrap();
        let mut got = encap(&mut tun, t(0), ethertype::IPV4, &inner);
        patch_ip(&mut got, 0, 4);
        assert_eq!(hex::encode(&got), hex::encode(hex(CHECKSUM)));
    }

    #[test]
    fn keepalive_matches_the_reference_but_for_tos() {
        let c = cfg(A, B).with_keepalive(KeepaliveConfig::new(10, 3));
        let mut tun = GreTunnel::new(GreConfig { ttl: 255, ..c }, t(0)).unwrap();
        assert_eq!(tun.poll_timeout(), Some(t(10_000)));
        let mut buf = [0u8; 64];
        assert!(tun.poll_transmit(t(0), &mut buf).is_none());
        tun.handle_timeout(t(10_000));
        let tx = tun.poll_transmit(t(10_000), &mut buf).unwrap();
        assert_eq!((tx.src, tx.dst, tx.len), (A, B, 48));
        let got = &mut buf[..tx.len];
        // Precedence 5 outside and inside.
        assert_eq!(got[1], KEEPALIVE_TOS);
        assert_eq!(got[24 + 1], KEEPALIVE_TOS);
        // With the reference's ToS 0 and idents 6 / 5 it is the reference frame.
        patch_ip(&mut got[24..], 0, 5);
        patch_ip(got, 0, 6);
        assert_eq!(hex::encode(&got), KEEPALIVE.replace(' ', ""));
        // Only one per tick.
        assert!(tun.poll_transmit(t(10_000), &mut buf).is_none());
        assert_eq!(tun.counters().keepalives_sent, 1);
    }

    #[test]
    fn reference_keepalive_is_forwarded_back_and_recognised() {
        // At the peer (203.0.113.2), frame 5 decapsulates to the packet to send back, which is
        // frame 6 byte for byte.
        let mut peer = GreTunnel::new(cfg(B, A), t(0)).unwrap();
        let ka = hex(KEEPALIVE);
        let returned = hex(KEEPALIVE_RETURNED);
        assert_eq!(
            peer.decapsulate(t(0), &ka),
            Ok(Delivered::ForwardBack(&returned[..]))
        );
        assert_eq!(peer.counters().keepalives_forwarded, 1);
        assert_eq!(peer.counters().packets_in, 0);
        // At the sender, frame 6 is a returned keepalive.
        let mut tun = GreTunnel::new(cfg(A, B), t(0)).unwrap();
        let back = hex(KEEPALIVE_RETURNED);
        assert_eq!(
            tun.decapsulate(t(0), &back),
            Ok(Delivered::KeepaliveReturned)
        );
        assert_eq!(tun.counters().keepalives_returned, 1);
    }

    #[test]
    fn reference_data_frames_decapsulate() {
        let inner = hex(INNER);
        let mut plain = GreTunnel::new(cfg(B, A), t(0)).unwrap();
        for f in [PLAIN, CHECKSUM] {
            let pkt = hex(f);
            let d = plain.decapsulate(t(0), &pkt).unwrap();
            assert_eq!(
                d,
                Delivered::Data {
                    protocol: ethertype::IPV4,
                    payload: &inner
                }
            );
        }
        // Keyed frames need the key...
        assert_eq!(
            plain.decapsulate(t(0), &hex(KEY_SEQ1)),
            Err(GreError::KeyMismatch)
        );
        let mut c = cfg(B, A);
        c.key = Some(0x1234);
        c.sequencing = true;
        let mut keyed = GreTunnel::new(c, t(0)).unwrap();
        // ... and unkeyed frames are refused by a keyed tunnel.
        assert_eq!(
            keyed.decapsulate(t(0), &hex(PLAIN)),
            Err(GreError::KeyMismatch)
        );
        let f1 = hex(KEY_SEQ1);
        let f2 = hex(KEY_SEQ2);
        assert!(keyed.decapsulate(t(0), &f1).is_ok());
        assert!(keyed.decapsulate(t(0), &f2).is_ok());
        // Duplicate and older: dropped.
        assert_eq!(keyed.decapsulate(t(0), &f2), Err(GreError::OutOfSequence));
        assert_eq!(keyed.decapsulate(t(0), &f1), Err(GreError::OutOfSequence));
        let c = keyed.counters();
        assert_eq!((c.packets_in, c.key_mismatch, c.out_of_sequence), (2, 1, 2));
        assert_eq!(plain.counters().key_mismatch, 1);
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_not_a_panic() {
        let mut c = cfg(B, A);
        c.key = Some(0x1234);
        let mut keyed = GreTunnel::new(c, t(0)).unwrap();
        let mut plain = GreTunnel::new(cfg(B, A), t(0)).unwrap();
        let mut ka_side = GreTunnel::new(cfg(A, B), t(0)).unwrap();
        for f in [PLAIN, KEY_SEQ1, CHECKSUM, KEEPALIVE, KEEPALIVE_RETURNED] {
            let bytes = hex(f);
            for n in 0..bytes.len() {
                for tun in [&mut keyed, &mut plain, &mut ka_side] {
                    assert!(
                        tun.decapsulate(t(0), &bytes[..n]).is_err(),
                        "{f} prefix {n}"
                    );
                }
            }
            // Every single-bit flip either errors or decapsulates: never a panic.
            for i in 0..bytes.len() {
                for bit in 0..8 {
                    let mut b = bytes.clone();
                    b[i] ^= 1 << bit;
                    for tun in [&mut keyed, &mut plain, &mut ka_side] {
                        let _ = tun.decapsulate(t(0), &b);
                    }
                }
            }
        }
        // A corrupted checksum frame is a checksum error, counted as such.
        let mut b = hex(CHECKSUM);
        let last = b.len() - 1;
        b[last] ^= 1;
        let before = plain.counters().checksum_errors;
        assert_eq!(
            plain.decapsulate(t(0), &b),
            Err(GreError::Malformed(WireError::BadChecksum))
        );
        assert_eq!(plain.counters().checksum_errors, before + 1);
    }

    #[test]
    fn pptp_version_1_is_rejected_by_the_tunnel() {
        // gre-pptp.pcap frame 1 from its IPv4 header: enhanced GRE, version 1.
        let pkt = hex(
            "4500008b8caf0000402f75fe100000c8c034a69a3081880b0067178000068fb100083a76ff03002145000063\
         000040003c115667ac102c03080808089f400035004f2d23a62c01000001000000000000357871742d646574\
         6563742d6d6f6465322d39373731326538382d313637612d343562392d393365652d39313331343065373636\
         373800001c0001",
        );
        let src = Ipv4Addr::new(16, 0, 0, 200);
        let dst = Ipv4Addr::new(192, 52, 166, 154);
        let mut tun = GreTunnel::new(GreConfig::new(dst, src), t(0)).unwrap();
        assert_eq!(
            tun.decapsulate(t(0), &pkt),
            Err(GreError::Malformed(WireError::BadVersion))
        );
        assert_eq!(tun.counters().malformed, 1);
    }

    #[test]
    fn wrong_endpoints_not_gre_and_fragments() {
        let mut tun = GreTunnel::new(cfg(B, A), t(0)).unwrap();
        let mut other = GreTunnel::new(cfg(B, Ipv4Addr::new(198, 51, 100, 7)), t(0)).unwrap();
        let f = hex(PLAIN);
        assert_eq!(other.decapsulate(t(0), &f), Err(GreError::WrongEndpoints));
        let mut icmp = hex(INNER);
        let mut ip = Ipv4Packet::new_unchecked(&mut icmp[..]);
        ip.set_src_addr(A);
        ip.set_dst_addr(B);
        ip.fill_checksum();
        assert_eq!(tun.decapsulate(t(0), &icmp), Err(GreError::NotGre));
        let mut frag = f.clone();
        let mut ip = Ipv4Packet::new_unchecked(&mut frag[..]);
        ip.set_more_frags(true);
        ip.fill_checksum();
        assert_eq!(tun.decapsulate(t(0), &frag), Err(GreError::Fragment));
        assert_eq!(tun.counters().not_gre, 2);
        assert_eq!(other.counters().wrong_endpoints, 1);
    }

    #[test]
    fn any_protocol_type_round_trips() {
        let mut a = GreTunnel::new(GreConfig::new(A, B), t(0)).unwrap();
        let mut b = GreTunnel::new(GreConfig::new(B, A), t(0)).unwrap();
        // IPv6 (traffic class 0xb8 copied to the delivery ToS), an opaque protocol, and a
        // broadcast IPv4 packet.
        let mut v6 = vec![0x6b, 0x80, 0, 0, 0, 8, 17, 64];
        v6.extend_from_slice(&[0x20; 32]);
        v6.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
        let opaque = b"\x01\x02\x03 opaque bridged frame".to_vec();
        let mut bcast = hex(INNER);
        let mut ip = Ipv4Packet::new_unchecked(&mut bcast[..]);
        ip.set_dst_addr(Ipv4Addr::BROADCAST);
        ip.set_tos(0x10);
        ip.fill_checksum();
        for (proto, payload, tos) in [
            (ethertype::IPV6, &v6, 0xb8),
            (0x88b5, &opaque, 0),
            (ethertype::IPV4, &bcast, 0x10),
        ] {
            let pkt = encap(&mut a, t(0), proto, payload);
            assert_eq!(pkt.len(), payload.len() + 24);
            assert_eq!(pkt[1], tos);
            assert_eq!(
                b.decapsulate(t(0), &pkt).unwrap(),
                Delivered::Data {
                    protocol: proto,
                    payload
                }
            );
        }
        let c = a.counters();
        assert_eq!(c.packets_out, 3);
        assert_eq!(c.bytes_out, (v6.len() + opaque.len() + bcast.len()) as u64);
        assert_eq!(b.counters().bytes_in, c.bytes_out);
    }

    #[test]
    fn sequencing_rules() {
        let mut ca = GreConfig::new(A, B);
        ca.sequencing = true;
        let mut cb = GreConfig::new(B, A);
        cb.sequencing = true;
        let mut a = GreTunnel::new(ca, t(0)).unwrap();
        let mut b = GreTunnel::new(cb, t(0)).unwrap();
        let p: Vec<Vec<u8>> = (0..5)
            .map(|_| encap(&mut a, t(0), ethertype::IPV4, &hex(INNER)))
            .collect();
        // 0, 2 (1 lost: gaps are fine), 1 (late: dropped), 2 (duplicate), 4, 3 (late).
        let r: Vec<bool> = [0, 2, 1, 2, 4, 3]
            .iter()
            .map(|&i| b.decapsulate(t(0), &p[i]).is_ok())
            .collect();
        assert_eq!(r, [true, true, false, false, true, false]);
        assert_eq!(b.counters().out_of_sequence, 3);
        // A data packet without a sequence number is dropped.
        let mut plain = GreTunnel::new(GreConfig::new(A, B), t(0)).unwrap();
        let no_seq = encap(&mut plain, t(0), ethertype::IPV4, &hex(INNER));
        assert_eq!(b.decapsulate(t(0), &no_seq), Err(GreError::MissingSequence));
        // Serial arithmetic across the wrap, and a reset.
        b.reset_receive_sequence();
        let mut late = p[0].clone();
        late[24..28].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(b.decapsulate(t(0), &late).is_ok());
        assert!(b.decapsulate(t(0), &p[0]).is_ok(), "0 follows 2^32 - 1");
    }

    /// Two tunnels joined by a lossless wire with a one-way delay, on a virtual clock.
    struct Pair {
        a: GreTunnel,
        b: GreTunnel,
        now: u64,
        delay: u64,
        /// (arrival time, to_b, packet)
        wire: Vec<(u64, bool, Vec<u8>)>,
        cut: bool,
        events: Vec<(u64, bool, GreEvent)>,
    }

    impl Pair {
        fn new(a: GreConfig, b: GreConfig, b_start: u64) -> Self {
            Self {
                a: GreTunnel::new(a, t(0)).unwrap(),
                b: GreTunnel::new(b, t(b_start)).unwrap(),
                now: 0,
                delay: 10,
                wire: Vec::new(),
                cut: false,
                events: Vec::new(),
            }
        }

        fn send(&mut self, to_b: bool, pkt: Vec<u8>) {
            if !self.cut {
                self.wire.push((self.now + self.delay, to_b, pkt));
            }
        }

        /// Runs every deadline and delivery up to `until`.
        fn run_until(&mut self, until: u64) {
            loop {
                let next = [
                    self.a.poll_timeout().map(|i| i.as_millis()),
                    self.b.poll_timeout().map(|i| i.as_millis()),
                    self.wire.iter().map(|w| w.0).min(),
                ]
                .into_iter()
                .flatten()
                .min();
                let Some(next) = next.filter(|&n| n <= until) else {
                    break;
                };
                self.now = next;
                let now = t(next);
                self.a.handle_timeout(now);
                self.b.handle_timeout(now);
                let mut buf = [0u8; 128];
                while let Some(tx) = self.a.poll_transmit(now, &mut buf) {
                    self.send(true, buf[..tx.len].to_vec());
                }
                while let Some(tx) = self.b.poll_transmit(now, &mut buf) {
                    self.send(false, buf[..tx.len].to_vec());
                }
                let (due, rest): (Vec<_>, Vec<_>) = self.wire.drain(..).partition(|w| w.0 <= next);
                self.wire = rest;
                for (_, to_b, pkt) in due {
                    let tun = if to_b { &mut self.b } else { &mut self.a };
                    if let Ok(Delivered::ForwardBack(back)) = tun.decapsulate(now, &pkt) {
                        let back = back.to_vec();
                        self.send(!to_b, back);
                    }
                }
                self.collect();
            }
            self.now = until;
        }

        fn collect(&mut self) {
            while let Some(e) = self.a.poll_event() {
                self.events.push((self.now, true, e));
            }
            while let Some(e) = self.b.poll_event() {
                self.events.push((self.now, false, e));
            }
        }
    }

    #[test]
    fn keepalive_down_after_retries_plus_one_periods_and_up_on_return() {
        // `keepalive 10 3` on A; B runs no keepalives but answers (it just forwards).
        let ka = KeepaliveConfig::new(10, 3);
        let mut p = Pair::new(
            GreConfig::new(A, B).with_keepalive(ka),
            GreConfig::new(B, A),
            0,
        );
        p.run_until(35_000);
        assert_eq!(p.a.counters().keepalives_sent, 3); // 10, 20, 30 s
        assert_eq!(p.a.counters().keepalives_returned, 3);
        assert_eq!(p.b.counters().keepalives_forwarded, 3);
        assert!(p.a.is_line_protocol_up());
        // The far end vanishes after answering the keepalive of 30 s.
        p.cut = true;
        p.run_until(69_999);
        assert!(p.a.is_line_protocol_up());
        assert_eq!(p.a.status().keepalives_unanswered, 3);
        p.run_until(70_000);
        assert!(!p.a.is_line_protocol_up());
        assert_eq!(p.events, vec![(70_000, true, GreEvent::LineProtocolDown)]);
        // Down: data refused both ways, keepalives still sent.
        let mut out = [0u8; 200];
        assert_eq!(
            p.a.encapsulate(t(70_000), ethertype::IPV4, &hex(INNER), &mut out),
            Err(GreError::LineProtocolDown)
        );
        let mut fromb = GreTunnel::new(GreConfig::new(B, A), t(0)).unwrap();
        let n = fromb
            .encapsulate(t(0), ethertype::IPV4, &hex(INNER), &mut out)
            .unwrap();
        assert_eq!(
            p.a.decapsulate(t(70_000), &out[..n]),
            Err(GreError::LineProtocolDown)
        );
        assert_eq!(p.a.counters().down_drops_out, 1);
        assert_eq!(p.a.counters().down_drops_in, 1);
        // Back at 95 s: the keepalive of 100 s returns at 100.020 s.
        p.run_until(95_000);
        assert_eq!(p.a.counters().keepalives_sent, 9);
        p.cut = false;
        p.run_until(100_019);
        assert!(!p.a.is_line_protocol_up());
        p.run_until(100_020);
        assert!(p.a.is_line_protocol_up());
        assert_eq!(
            p.events,
            vec![
                (70_000, true, GreEvent::LineProtocolDown),
                (100_020, true, GreEvent::LineProtocolUp)
            ]
        );
        assert_eq!(p.a.status().keepalives_unanswered, 0);
        assert_eq!(p.a.counters().line_protocol_transitions, 2);
        // B never had keepalives: always up, no events.
        assert!(p.b.is_line_protocol_up());
    }

    #[test]
    fn keepalive_never_answered_goes_down_after_retries_plus_one_periods_from_start() {
        let ka = KeepaliveConfig::new(5, 2);
        let mut p = Pair::new(
            GreConfig::new(A, B).with_keepalive(ka),
            GreConfig::new(B, A),
            0,
        );
        p.cut = true;
        p.run_until(14_999);
        assert!(p.a.is_line_protocol_up());
        p.run_until(15_000);
        assert!(!p.a.is_line_protocol_up());
        // Disabling keepalives brings line protocol up.
        p.a.set_keepalive(t(15_000), None).unwrap();
        assert!(p.a.is_line_protocol_up());
        assert_eq!(p.a.poll_timeout(), None);
    }

    #[test]
    fn both_sides_with_keepalives_and_a_down_peer_still_answers() {
        // A from 0 s, B from 5 s, both `keepalive 10 3`; the link fails at 32 s.
        let ka = KeepaliveConfig::new(10, 3);
        let mut p = Pair::new(
            GreConfig::new(A, B).with_keepalive(ka),
            GreConfig::new(B, A).with_keepalive(ka),
            5_000,
        );
        p.run_until(32_000);
        p.cut = true;
        // A's last answered keepalive was sent at 30 s, B's at 25 s.
        p.run_until(97_000);
        assert_eq!(
            p.events,
            vec![
                (65_000, false, GreEvent::LineProtocolDown),
                (70_000, true, GreEvent::LineProtocolDown)
            ]
        );
        p.cut = false;
        // A's keepalive of 100 s is answered by B although B is down; B's of 105 s by A.
        p.run_until(110_000);
        assert_eq!(
            p.events[2..],
            [
                (100_020, true, GreEvent::LineProtocolUp),
                (105_020, false, GreEvent::LineProtocolUp)
            ]
        );
    }

    #[test]
    fn tunnel_mtu_and_path_mtu_discovery() {
        let mut c = GreConfig::new(A, B);
        assert_eq!(c.ip_mtu, 1476);
        assert_eq!(c.overhead(), 24);
        c.ip_mtu = 1400; // `ip mtu 1400`
        let mut tun = GreTunnel::new(c, t(0)).unwrap();
        let mut out = vec![0u8; 2000];
        let mut big = hex(INNER);
        big.resize(1401, 0);
        assert_eq!(
            tun.encapsulate(t(0), ethertype::IPV4, &big, &mut out),
            Err(GreError::TooBig { mtu: 1400 })
        );
        assert_eq!(
            tun.encapsulate(t(0), ethertype::IPV4, &big[..1400], &mut out),
            Ok(1424)
        );
        assert_eq!(
            tun.encapsulate(t(0), ethertype::IPV4, &big[..1400], &mut out[..1423]),
            Err(GreError::BufferTooSmall { needed: 1424 })
        );
        assert_eq!(tun.counters().too_big, 1);
        assert_eq!(tun.counters().buffer_too_small, 1);
        // Without path MTU discovery a learned path MTU is ignored.
        assert!(!tun.set_path_mtu(t(0), 1300));
        assert_eq!(tun.tunnel_mtu(), 1400);

        // With it (and a key: 28 bytes of overhead), DF is copied and the MTU follows the path.
        let mut c = GreConfig::new(A, B).with_path_mtu_discovery(PmtudConfig::DEFAULT);
        c.ip_mtu = 1400;
        c.key = Some(7);
        assert_eq!(c.df_bit, DfBit::Copy);
        let mut tun = GreTunnel::new(c, t(0)).unwrap();
        assert!(!tun.set_path_mtu(t(1_000), 1500)); // 1500 - 28 > 1400: no change
        assert!(tun.set_path_mtu(t(2_000), 1400));
        assert_eq!(tun.tunnel_mtu(), 1372);
        assert_eq!(tun.poll_event(), Some(GreEvent::MtuChanged { mtu: 1372 }));
        assert!(!tun.set_path_mtu(t(3_000), 1450), "only lowers");
        assert!(tun.set_path_mtu(t(4_000), 100));
        assert_eq!(tun.tunnel_mtu(), 92, "min-mtu");
        assert_eq!(tun.path_mtu(), Some(100));
        // Aged out 10 minutes after the last lowering.
        assert_eq!(tun.poll_timeout(), Some(t(604_000)));
        tun.handle_timeout(t(603_999));
        assert_eq!(tun.tunnel_mtu(), 92);
        tun.handle_timeout(t(604_000));
        assert_eq!(tun.tunnel_mtu(), 1400);
        assert_eq!(tun.path_mtu(), None);
        assert_eq!(tun.poll_timeout(), None);
        let evs: Vec<_> = std::iter::from_fn(|| tun.poll_event()).collect();
        assert_eq!(
            evs,
            [
                GreEvent::MtuChanged { mtu: 92 },
                GreEvent::MtuChanged { mtu: 1400 }
            ]
        );
        // DF copied from the payload.
        let mut df = hex(INNER);
        Ipv4Packet::new_unchecked(&mut df[..]).set_dont_frag(true);
        let n = tun
            .encapsulate(t(700_000), ethertype::IPV4, &df, &mut out)
            .unwrap();
        assert!(Ipv4Packet::new_checked(&out[..n]).unwrap().dont_frag());
        let n = tun
            .encapsulate(t(700_000), ethertype::IPV4, &hex(INNER), &mut out)
            .unwrap();
        assert!(!Ipv4Packet::new_checked(&out[..n]).unwrap().dont_frag());
        // Infinite age timer: no deadline.
        let c = GreConfig::new(A, B).with_path_mtu_discovery(PmtudConfig {
            age_timer: Duration::MAX,
            min_mtu: 92,
        });
        let mut tun = GreTunnel::new(c, t(0)).unwrap();
        assert!(tun.set_path_mtu(t(0), 1000));
        assert_eq!(tun.tunnel_mtu(), 976);
        assert_eq!(tun.poll_timeout(), None);
    }

    #[test]
    fn invalid_configurations() {
        let mut c = GreConfig::new(A, B);
        c.ip_mtu = 67;
        assert_eq!(GreTunnel::new(c, t(0)).err(), Some(GreError::InvalidConfig));
        assert_eq!(
            GreTunnel::new(GreConfig::new(A, A), t(0)).err(),
            Some(GreError::InvalidConfig)
        );
        let zero = KeepaliveConfig {
            period: Duration::ZERO,
            retries: 3,
        };
        assert_eq!(
            GreTunnel::new(GreConfig::new(A, B).with_keepalive(zero), t(0)).err(),
            Some(GreError::InvalidConfig)
        );
        let mut tun = GreTunnel::new(GreConfig::new(A, B), t(0)).unwrap();
        assert_eq!(
            tun.set_keepalive(t(0), Some(zero)),
            Err(GreError::InvalidConfig)
        );
    }

    #[test]
    fn status_reads_like_show_interface() {
        let mut c = GreConfig::new(A, B).with_keepalive(KeepaliveConfig::new(20, 3));
        c.key = Some(0x1234);
        c.sequencing = true;
        c.ip_mtu = 1400;
        let mut tun = GreTunnel::new(c, t(0)).unwrap();
        let _ = encap(&mut tun, t(0), ethertype::IPV4, &hex(INNER));
        let s = tun.status();
        assert!(s.line_protocol_up);
        assert_eq!(s.keepalive, Some(KeepaliveConfig::new(20, 3)));
        assert_eq!((s.source, s.destination), (A, B));
        assert_eq!(s.protocol_transport, "GRE/IP");
        assert_eq!(
            (s.key, s.sequencing, s.checksumming),
            (Some(0x1234), true, false)
        );
        assert_eq!((s.ip_mtu, s.tunnel_mtu, s.overhead), (1400, 1400, 32));
        assert_eq!(s.counters.packets_out, 1);
        let text = s.to_string();
        for line in [
            "line protocol is up",
            "Keepalive set (20 sec), retries 3",
            "Tunnel source 203.0.113.1, destination 203.0.113.2",
            "Tunnel protocol/transport GRE/IP",
            "Key 0x1234, sequencing enabled",
            "Checksumming of packets disabled",
            "Tunnel TTL 255",
            "MTU 1400 bytes",
            "1 packets output, 44 bytes",
        ] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
    }
}
