//! GRE over IPsec with real ESP SAs (`ipsec_soft_crypto::SoftCrypto`) between two routers
//! on a virtual clock: keepalives through IPsec with exact line protocol times, a
//! multicast OSPF hello carried byte-exact in every mode, and the overhead and MTU numbers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

// Inside a module named after GRE so that `cargo test -p ipsec-core gre` selects every test.
mod gre_over_ipsec {

    use std::net::{IpAddr, Ipv4Addr};

    use hal_traits::{AeadAlg, CipherAlg, MacAlg};
    use ipsec_core::esp::{
        Direction, Encryption, EspConfig, EspError, EspSa, Mode, SealOptions, Transform,
    };
    use ipsec_core::gre::ipsec::{
        crypto_map_sa, gre_policy, gre_selector, max_delivery_len, max_inner_len,
        tunnel_protection_sa, tunnel_selector,
    };
    use ipsec_core::gre::{
        Delivered, GRE_OVERHEAD, GreConfig, GreError, GreEvent, GreTunnel, KeepaliveConfig,
        PmtudConfig,
    };
    use ipsec_core::spd::{self, AddrRange, Flow, Selector};
    use ipsec_core::wire::gre::ethertype;
    use ipsec_core::wire::ipv4::Ipv4Repr;
    use ipsec_core::wire::{checksum, proto};
    use ipsec_core::{Duration, Instant};
    use ipsec_soft_crypto::SoftCrypto;

    type Sa = EspSa<SoftCrypto>;

    const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
    const ENC: [u8; 16] = *b"0123456789abcdef";
    const AUTH: [u8; 20] = *b"authentication-key!!";

    /// `esp-aes esp-sha-hmac`.
    const AES_SHA: Transform = Transform {
        enc: Encryption::Cbc(CipherAlg::Aes128Cbc),
        auth: Some(MacAlg::HmacSha1_96),
    };

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[derive(Clone, Copy, Debug)]
    enum Setup {
        /// `tunnel protection ipsec profile` (transport mode).
        Protection,
        /// A crypto map with `permit gre host A host B`, in this mode.
        CryptoMap(Mode),
    }

    const SETUPS: [Setup; 3] = [
        Setup::Protection,
        Setup::CryptoMap(Mode::Tunnel),
        Setup::CryptoMap(Mode::Transport),
    ];

    fn sa_config(
        setup: Setup,
        gre: &GreConfig,
        spi: u32,
        dir: Direction,
        t: Transform,
    ) -> EspConfig {
        match setup {
            Setup::Protection => tunnel_protection_sa(gre, spi, dir, t),
            Setup::CryptoMap(mode) => crypto_map_sa(
                gre,
                spi,
                dir,
                t,
                mode,
                IpAddr::V4(gre.source),
                IpAddr::V4(gre.destination),
            ),
        }
    }

    fn keys(t: Transform) -> (&'static [u8], &'static [u8]) {
        match t.enc {
            Encryption::Gcm(_) => (&[7u8; 20], &[]),
            Encryption::Null => (&[], &AUTH),
            Encryption::Cbc(_) => (&ENC, &AUTH),
        }
    }

    /// One router: a GRE tunnel interface protected by a pair of ESP SAs.
    struct Router {
        gre: GreTunnel,
        out_sa: Sa,
        in_sa: Sa,
        ivs: u64,
        /// Data delivered by the tunnel: (time, protocol, payload).
        delivered: Vec<(u64, u16, Vec<u8>)>,
    }

    impl Router {
        fn new(setup: Setup, gre: GreConfig, out_spi: u32, in_spi: u32, start: u64) -> Self {
            let (e, a) = keys(AES_SHA);
            let out = sa_config(setup, &gre, out_spi, Direction::Outbound, AES_SHA);
            let inb = sa_config(setup, &gre, in_spi, Direction::Inbound, AES_SHA);
            Self {
                gre: GreTunnel::new(gre, t(start)).unwrap(),
                out_sa: Sa::new(out, e, a, t(0)).unwrap(),
                in_sa: Sa::new(inb, e, a, t(0)).unwrap(),
                ivs: 0,
                delivered: Vec::new(),
            }
        }

        /// The outbound path for a delivery packet: the SPD entry for the tunnel must match
        /// it (keepalives and forwarded keepalives included), then ESP.
        fn protect(&mut self, now: u64, delivery: &[u8]) -> Vec<u8> {
            let policy = gre_policy(10, self.gre.config(), 1);
            let flow = Flow::from_ip_packet(delivery).unwrap();
            assert!(policy.selector.matches(&flow, spd::Direction::Outbound));
            self.ivs += 1;
            let mut iv = [0u8; 16];
            iv[8..].copy_from_slice(&self.ivs.to_be_bytes());
            let opts = SealOptions {
                iv: Some(&iv),
                ipv4_ident: None,
            };
            let mut out = vec![0u8; delivery.len() + 100];
            let n = self
                .out_sa
                .encapsulate_with(t(now), delivery, &opts, &mut out)
                .unwrap();
            out.truncate(n);
            out
        }

        /// Sends a payload into the tunnel and through ESP; the tunnel may refuse it.
        fn send(&mut self, now: u64, protocol: u16, payload: &[u8]) -> Result<Vec<u8>, GreError> {
            let mut buf = vec![0u8; payload.len() + 64];
            let n = self.gre.encapsulate(t(now), protocol, payload, &mut buf)?;
            Ok(self.protect(now, &buf[..n]))
        }

        /// The inbound path: ESP, then GRE. Returns what to send back, if anything.
        fn receive(&mut self, now: u64, mut pkt: Vec<u8>) -> Option<Vec<u8>> {
            let d = self.in_sa.decapsulate(t(now), &mut pkt).unwrap();
            let delivery = d.packet.to_vec();
            match self.gre.decapsulate(t(now), &delivery) {
                Ok(Delivered::Data { protocol, payload }) => {
                    self.delivered.push((now, protocol, payload.to_vec()));
                    None
                }
                Ok(Delivered::KeepaliveReturned) => None,
                Ok(Delivered::ForwardBack(back)) => {
                    let back = back.to_vec();
                    Some(self.protect(now, &back))
                }
                Err(GreError::LineProtocolDown) => None,
                Err(e) => panic!("unexpected GRE error {e:?}"),
            }
        }
    }

    /// Two routers and the network between them (one-way delay 10 ms, can be cut).
    struct Net {
        a: Router,
        b: Router,
        now: u64,
        wire: Vec<(u64, bool, Vec<u8>)>,
        cut: bool,
        events: Vec<(u64, char, GreEvent)>,
    }

    impl Net {
        fn new(setup: Setup, ka: Option<KeepaliveConfig>, b_start: u64) -> Self {
            let mut ca = GreConfig::new(A, B);
            let mut cb = GreConfig::new(B, A);
            ca.keepalive = ka;
            cb.keepalive = ka;
            Self {
                a: Router::new(setup, ca, 0x1000, 0x2000, 0),
                b: Router::new(setup, cb, 0x2000, 0x1000, b_start),
                now: 0,
                wire: Vec::new(),
                cut: false,
                events: Vec::new(),
            }
        }

        fn put(&mut self, to_b: bool, pkt: Vec<u8>) {
            if !self.cut {
                self.wire.push((self.now + 10, to_b, pkt));
            }
        }

        fn run_until(&mut self, until: u64) {
            loop {
                let next = [
                    self.a.gre.poll_timeout().map(Instant::as_millis),
                    self.b.gre.poll_timeout().map(Instant::as_millis),
                    self.wire.iter().map(|w| w.0).min(),
                ]
                .into_iter()
                .flatten()
                .min();
                let Some(now) = next.filter(|&n| n <= until) else {
                    break;
                };
                self.now = now;
                for to_b in [true, false] {
                    let r = if to_b { &mut self.a } else { &mut self.b };
                    r.gre.handle_timeout(t(now));
                    let mut buf = [0u8; 128];
                    let mut sent = Vec::new();
                    while let Some(tx) = r.gre.poll_transmit(t(now), &mut buf) {
                        let pkt = buf[..tx.len].to_vec();
                        sent.push(r.protect(now, &pkt));
                    }
                    for p in sent {
                        self.put(to_b, p);
                    }
                }
                let (due, rest): (Vec<_>, Vec<_>) = self.wire.drain(..).partition(|w| w.0 <= now);
                self.wire = rest;
                for (_, to_b, pkt) in due {
                    let r = if to_b { &mut self.b } else { &mut self.a };
                    if let Some(back) = r.receive(now, pkt) {
                        self.put(!to_b, back);
                    }
                }
                while let Some(e) = self.a.gre.poll_event() {
                    self.events.push((now, 'A', e));
                }
                while let Some(e) = self.b.gre.poll_event() {
                    self.events.push((now, 'B', e));
                }
            }
            self.now = until;
        }
    }

    /// An OSPFv2 hello from 10.0.0.1 to AllSPFRouters (224.0.0.5), IP protocol 89, TTL 1,
    /// precedence 6.
    fn ospf_hello() -> Vec<u8> {
        let mut ospf = vec![
            2, 1, 0, 44, // version 2, hello, length 44
            1, 1, 1, 1, // router ID
            0, 0, 0, 0, // area 0
            0, 0, 0, 0, // checksum, autype 0
            0, 0, 0, 0, 0, 0, 0, 0, // authentication
            255, 255, 255, 252, // network mask
            0, 10, 0x02, 1, // hello interval 10, options E, priority 1
            0, 0, 0, 40, // dead interval
            0, 0, 0, 0, 0, 0, 0, 0, // DR, BDR
        ];
        let ck = checksum::checksum(&ospf);
        ospf[12..14].copy_from_slice(&ck.to_be_bytes());
        let mut pkt = vec![0u8; 20 + ospf.len()];
        Ipv4Repr {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(224, 0, 0, 5),
            protocol: 89,
            payload_len: ospf.len(),
            ttl: 1,
            tos: 0xc0,
            ident: 0x1234,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
        }
        .emit(&mut pkt)
        .unwrap();
        pkt[20..].copy_from_slice(&ospf);
        pkt
    }

    #[test]
    fn multicast_ospf_hello_crosses_gre_over_ipsec_in_every_mode() {
        let hello = ospf_hello();
        for setup in SETUPS {
            let mut net = Net::new(setup, None, 0);
            let pkt = net.a.send(0, ethertype::IPV4, &hello).unwrap();
            // What is on the wire is ESP between the endpoints, nothing else.
            assert_eq!(pkt[9], proto::ESP, "{setup:?}");
            assert_eq!(&pkt[12..20], &[192, 0, 2, 1, 198, 51, 100, 2]);
            net.put(true, pkt);
            net.run_until(1_000);
            assert_eq!(
                net.b.delivered,
                vec![(10, ethertype::IPV4, hello.clone())],
                "{setup:?}"
            );
            assert_eq!(net.b.in_sa.counters().decaps, 1);
            // And back the other way.
            let back = net.b.send(1_000, ethertype::IPV4, &hello).unwrap();
            net.put(false, back);
            net.run_until(2_000);
            assert_eq!(
                net.a.delivered,
                vec![(1_010, ethertype::IPV4, hello.clone())]
            );
        }
        // Plain IPsec could not: a crypto ACL names unicast subnets, and the hello matches no
        // such selector, where its GRE delivery packet matches the tunnel's.
        let acl = Selector::new(
            AddrRange::from_prefix(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), 24).unwrap(),
            AddrRange::from_prefix(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 0)), 24).unwrap(),
        )
        .unwrap();
        let flow = Flow::from_ip_packet(&hello).unwrap();
        assert!(!acl.matches(&flow, spd::Direction::Outbound));
    }

    #[test]
    fn keepalives_through_ipsec_exact_line_protocol_times() {
        // Both routers `keepalive 10 3`, A from 0 s, B from 5 s; the path fails at 32 s and
        // heals at 97 s. Rule: down (retries + 1) x period after the last answered keepalive
        // was sent; up when a keepalive returns.
        let ka = KeepaliveConfig::new(10, 3);
        for setup in [Setup::Protection, Setup::CryptoMap(Mode::Tunnel)] {
            let mut net = Net::new(setup, Some(ka), 5_000);
            net.run_until(32_000);
            assert!(net.events.is_empty(), "{setup:?}");
            // A's keepalives at 10, 20, 30 s, each forwarded back by B; B's at 15, 25 s.
            assert_eq!(net.a.gre.counters().keepalives_returned, 3);
            assert_eq!(net.b.gre.counters().keepalives_forwarded, 3);
            assert_eq!(net.b.gre.counters().keepalives_returned, 2);
            assert_eq!(net.a.gre.counters().keepalives_forwarded, 2);
            // Each round trip is two ESP packets, one per direction: 3 + 2 each way.
            assert_eq!(net.b.in_sa.counters().decaps, 5);
            assert_eq!(net.a.in_sa.counters().decaps, 5);

            // Data flows while up.
            let hello = ospf_hello();
            let p = net.a.send(32_000, ethertype::IPV4, &hello).unwrap();
            net.put(true, p);
            net.run_until(32_010);
            assert_eq!(net.b.delivered.len(), 1);

            net.cut = true;
            net.run_until(64_999);
            assert!(net.events.is_empty());
            net.run_until(97_000);
            assert_eq!(
                net.events,
                vec![
                    (65_000, 'B', GreEvent::LineProtocolDown),
                    (70_000, 'A', GreEvent::LineProtocolDown),
                ],
                "{setup:?}"
            );
            // Down: no data is forwarded.
            assert_eq!(
                net.a.send(80_000, ethertype::IPV4, &hello),
                Err(GreError::LineProtocolDown)
            );
            assert_eq!(net.a.gre.counters().down_drops_out, 1);
            // Keepalives kept going out while down (and while the path was cut).
            assert_eq!(net.a.gre.counters().keepalives_sent, 9);

            net.cut = false;
            net.run_until(100_019);
            assert_eq!(net.events.len(), 2);
            // A's keepalive of 100 s comes back at 100.020 s, forwarded by B while B is down;
            // B's of 105 s at 105.020 s.
            net.run_until(106_000);
            assert_eq!(
                net.events[2..],
                [
                    (100_020, 'A', GreEvent::LineProtocolUp),
                    (105_020, 'B', GreEvent::LineProtocolUp),
                ],
                "{setup:?}"
            );
            assert!(net.a.gre.is_line_protocol_up() && net.b.gre.is_line_protocol_up());
            let p = net.a.send(106_000, ethertype::IPV4, &hello).unwrap();
            net.put(true, p);
            net.run_until(107_000);
            assert_eq!(net.b.delivered.len(), 2);
        }
    }

    #[test]
    fn data_is_dropped_by_a_receiver_whose_line_protocol_is_down() {
        let ka = KeepaliveConfig::new(10, 3);
        let mut net = Net::new(Setup::Protection, Some(ka), 5_000);
        net.run_until(32_000);
        net.cut = true;
        net.run_until(97_000);
        net.cut = false;
        // A is up again at 100.020 s, B only at 105.020 s.
        net.run_until(101_000);
        let hello = ospf_hello();
        let p = net.a.send(101_000, ethertype::IPV4, &hello).unwrap();
        net.put(true, p);
        net.run_until(101_010);
        assert!(net.b.delivered.is_empty());
        assert_eq!(net.b.gre.counters().down_drops_in, 1);
        // The ESP layer did deliver it to GRE.
        assert!(net.b.in_sa.counters().decaps > 0);
    }

    #[test]
    fn selectors_and_sa_configs() {
        let gre = GreConfig::new(A, B);
        let sel = tunnel_selector(&gre);
        assert_eq!(
            sel,
            gre_selector(IpAddr::V4(A), IpAddr::V4(B)).unwrap(),
            "permit gre host A host B"
        );
        assert_eq!(sel.protocol, Some(47));
        let p = tunnel_protection_sa(&gre, 7, Direction::Outbound, AES_SHA);
        assert_eq!(p.mode, Mode::Transport, "transport mode by default");
        assert_eq!(p.selector, Some(sel));
        assert_eq!(
            (p.local, p.remote),
            (Some(IpAddr::V4(A)), Some(IpAddr::V4(B)))
        );
        let peer = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
        let c = crypto_map_sa(
            &gre,
            8,
            Direction::Inbound,
            AES_SHA,
            Mode::Tunnel,
            IpAddr::V4(A),
            peer,
        );
        assert_eq!(
            (c.mode, c.remote, c.selector),
            (Mode::Tunnel, Some(peer), Some(sel))
        );
        assert!(gre_selector(IpAddr::V4(A), "2001:db8::1".parse().unwrap()).is_err());
        // An inbound packet outside the selector (not GRE) is refused by the SA.
        let (e, a) = keys(AES_SHA);
        let mut out_sa = Sa::new(
            EspConfig::transport(9, Direction::Outbound, AES_SHA),
            e,
            a,
            t(0),
        )
        .unwrap();
        let mut in_cfg =
            tunnel_protection_sa(&GreConfig::new(B, A), 9, Direction::Inbound, AES_SHA);
        in_cfg.spi = 9;
        let mut in_sa = Sa::new(in_cfg, e, a, t(0)).unwrap();
        let mut udp = vec![0u8; 28];
        Ipv4Repr {
            src: A,
            dst: B,
            protocol: proto::UDP,
            payload_len: 8,
            ttl: 64,
            tos: 0,
            ident: 1,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
        }
        .emit(&mut udp)
        .unwrap();
        udp[20..28].copy_from_slice(&[0, 53, 0, 53, 0, 8, 0, 0]);
        let mut buf = vec![0u8; 200];
        let iv = [1u8; 16];
        let opts = SealOptions {
            iv: Some(&iv),
            ipv4_ident: None,
        };
        let n = out_sa
            .encapsulate_with(t(0), &udp, &opts, &mut buf)
            .unwrap();
        assert_eq!(
            in_sa.decapsulate(t(0), &mut buf[..n]).err(),
            Some(EspError::PolicyMismatch)
        );
    }

    fn sa(mode: Mode, transform: Transform) -> Sa {
        let gre = GreConfig::new(A, B);
        let cfg = match mode {
            Mode::Transport => tunnel_protection_sa(&gre, 1, Direction::Outbound, transform),
            Mode::Tunnel => EspConfig::tunnel(
                1,
                Direction::Outbound,
                transform,
                IpAddr::V4(A),
                IpAddr::V4(B),
            ),
        };
        let (e, a) = keys(transform);
        Sa::new(cfg, e, a, t(0)).unwrap()
    }

    #[test]
    fn overhead_24_bytes_and_4_more_than_plain_tunnel_mode() {
        let gre = GreConfig::new(A, B);
        assert_eq!(GRE_OVERHEAD, 24);
        assert_eq!(gre.overhead(), 24);
        // Plain GRE: 1500 - 24.
        assert_eq!(gre.ip_mtu, 1476);

        // esp-aes esp-sha-hmac over a 1500-byte link.
        let plain_tunnel = sa(Mode::Tunnel, AES_SHA);
        let gre_transport = sa(Mode::Transport, AES_SHA);
        assert_eq!(plain_tunnel.max_inner_len(1500), 1438);
        assert_eq!(max_inner_len(&gre_transport, &gre, 1500), 1434);
        assert_eq!(max_inner_len(&plain_tunnel, &gre, 1500), 1414);
        assert_eq!(max_delivery_len(&gre_transport, 1500), 1458);
        // Exactly 4 (transport) and 24 (tunnel) bytes less, at every link MTU.
        for mtu in 200..=1500 {
            let plain = plain_tunnel.max_inner_len(mtu);
            assert_eq!(max_inner_len(&gre_transport, &gre, mtu), plain - 4, "{mtu}");
            assert_eq!(max_inner_len(&plain_tunnel, &gre, mtu), plain - 24, "{mtu}");
        }

        // On the wire, for the same payload: with a 4-byte-aligned transform (GCM), GRE over
        // transport mode is always exactly 4 bytes longer than plain tunnel mode.
        let gcm = Transform {
            enc: Encryption::Gcm(AeadAlg::Aes128Gcm16),
            auth: None,
        };
        let mut plain = sa(Mode::Tunnel, gcm);
        let mut over = sa(Mode::Transport, gcm);
        let mut tun = GreTunnel::new(gre, t(0)).unwrap();
        let hello = ospf_hello();
        for n in 20..=1400 {
            let mut inner = hello.clone();
            inner.resize(n, 0xab);
            inner[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            let opts = SealOptions::default();
            let mut out = vec![0u8; 1600];
            let plain_len = plain
                .encapsulate_with(t(0), &inner, &opts, &mut out)
                .unwrap();
            let mut delivery = vec![0u8; n + 24];
            let d = tun
                .encapsulate(t(0), ethertype::IPV4, &inner, &mut delivery)
                .unwrap();
            assert_eq!(d, n + 24);
            let over_len = over
                .encapsulate_with(t(0), &delivery, &opts, &mut out)
                .unwrap();
            assert_eq!(over_len, plain_len + 4, "payload {n}");
        }
    }

    #[test]
    fn largest_payload_fits_the_link_exactly() {
        for (mode, max) in [(Mode::Transport, 1434), (Mode::Tunnel, 1414)] {
            let mut s = sa(mode, AES_SHA);
            let gre = GreConfig::new(A, B);
            assert_eq!(max_inner_len(&s, &gre, 1500), max);
            let mut tun = GreTunnel::new(gre, t(0)).unwrap();
            for (n, fits) in [(max, true), (max + 1, false)] {
                let payload = vec![0x5a; n];
                let mut delivery = vec![0u8; n + 24];
                let d = tun
                    .encapsulate(t(0), 0x88b5, &payload, &mut delivery)
                    .unwrap();
                let mut out = vec![0u8; 1600];
                let iv = [3u8; 16];
                let opts = SealOptions {
                    iv: Some(&iv),
                    ipv4_ident: None,
                };
                let len = s
                    .encapsulate_with(t(0), &delivery[..d], &opts, &mut out)
                    .unwrap();
                assert_eq!(len <= 1500, fits, "{mode:?} {n}: {len}");
            }
        }
    }

    #[test]
    fn tunnel_path_mtu_follows_the_ipsec_path_mtu_and_ages_back() {
        let gre = GreConfig::new(A, B).with_path_mtu_discovery(PmtudConfig::DEFAULT);
        let mut tun = GreTunnel::new(gre, t(0)).unwrap();
        let s = sa(Mode::Transport, AES_SHA);
        assert_eq!(tun.tunnel_mtu(), 1476);
        // The ESP path learns 1400 (ICMP type 3 code 4 for the SA's packets): the largest
        // delivery packet becomes 1362, the tunnel MTU 1362 - 24.
        let delivery = max_delivery_len(&s, 1400);
        assert_eq!(delivery, 1362);
        assert!(tun.set_path_mtu(t(5_000), u16::try_from(delivery).unwrap()));
        assert_eq!(tun.tunnel_mtu(), 1338);
        assert_eq!(tun.tunnel_mtu() as usize, max_inner_len(&s, &gre, 1400));
        let mut out = vec![0u8; 1600];
        assert_eq!(
            tun.encapsulate(t(6_000), 0x88b5, &[0; 1339], &mut out),
            Err(GreError::TooBig { mtu: 1338 })
        );
        assert!(
            tun.encapsulate(t(6_000), 0x88b5, &[0; 1338], &mut out)
                .is_ok()
        );
        // Aged back up after 10 minutes.
        assert_eq!(tun.poll_timeout(), Some(t(605_000)));
        tun.handle_timeout(t(605_000));
        assert_eq!(tun.tunnel_mtu(), 1476);
        // A lazily noticed expiry works too.
        assert!(tun.set_path_mtu(t(700_000), 1362));
        let age = Duration::from_secs(600).as_millis();
        assert!(
            tun.encapsulate(t(700_000 + age), 0x88b5, &[0; 1400], &mut out)
                .is_ok()
        );
    }
}
