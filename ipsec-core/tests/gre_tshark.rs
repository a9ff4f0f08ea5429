//! Wireshark's dissector as an independent judge of the GRE packets we build: plain,
//! checksum, key and sequence number, keepalive (request and returned), IPv6 and opaque
//! payloads, a multicast hello, all inside IPv4 delivery headers, written to a pcap
//! (linktype 101, raw IP) and read back with `tshark`.
//!
//! Skipped, with a notice, when `tshark` is not installed (CI installs it).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

// Inside a module named after GRE so that `cargo test -p ipsec-core gre` selects every test.
mod gre_tshark {

    use std::net::Ipv4Addr;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use ipsec_core::Instant;
    use ipsec_core::gre::{Delivered, GreConfig, GreTunnel, KeepaliveConfig};
    use ipsec_core::wire::gre::ethertype;
    use ipsec_core::wire::ipv4::Ipv4Repr;

    const A: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
    const B: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
    /// LINKTYPE_RAW: packets begin with an IPv4 or IPv6 header.
    const LINKTYPE_RAW: u32 = 101;

    fn tshark_available() -> bool {
        Command::new("tshark")
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// A classic pcap file: 24-byte global header, then a 16-byte record header per packet.
    fn write_pcap(path: &Path, packets: &[Vec<u8>]) {
        let mut f = Vec::new();
        f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        f.extend_from_slice(&2u16.to_le_bytes());
        f.extend_from_slice(&4u16.to_le_bytes());
        f.extend_from_slice(&0i32.to_le_bytes()); // thiszone
        f.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        f.extend_from_slice(&65_535u32.to_le_bytes()); // snaplen
        f.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
        for (i, p) in packets.iter().enumerate() {
            f.extend_from_slice(&(1_700_000_000u32 + i as u32).to_le_bytes());
            f.extend_from_slice(&0u32.to_le_bytes());
            f.extend_from_slice(&(p.len() as u32).to_le_bytes());
            f.extend_from_slice(&(p.len() as u32).to_le_bytes());
            f.extend_from_slice(p);
        }
        std::fs::write(path, f).unwrap();
    }

    fn tshark(path: &Path, args: &[&str]) -> String {
        let out = Command::new("tshark")
            .arg("-n")
            .arg("-r")
            .arg(path)
            .args(["-o", "ip.check_checksum:TRUE"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tshark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn encap(tun: &mut GreTunnel, proto: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; payload.len() + 64];
        let n = tun.encapsulate(t(0), proto, payload, &mut out).unwrap();
        out.truncate(n);
        out
    }

    /// An ICMP echo request 10.1.0.1 -> `dst` with a valid checksum.
    fn icmp_echo(dst: Ipv4Addr, tos: u8) -> Vec<u8> {
        let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1];
        icmp.extend_from_slice(b"gre-tshark-check");
        let ck = ipsec_core::wire::checksum::checksum(&icmp);
        icmp[2..4].copy_from_slice(&ck.to_be_bytes());
        let mut p = vec![0u8; 20 + icmp.len()];
        Ipv4Repr {
            src: Ipv4Addr::new(10, 1, 0, 1),
            dst,
            protocol: 1,
            payload_len: icmp.len(),
            ttl: 64,
            tos,
            ident: 7,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
        }
        .emit(&mut p)
        .unwrap();
        p[20..].copy_from_slice(&icmp);
        p
    }

    /// A UDP-in-IPv6 packet with a zero-length payload.
    fn ipv6_udp() -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        p.extend_from_slice(
            &"2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        p.extend_from_slice(
            &"2001:db8::2"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        p.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0, 8, 0, 0]);
        // UDP over IPv6 needs a checksum: compute it over the pseudo-header.
        let src = "2001:db8::1".parse().unwrap();
        let dst = "2001:db8::2".parse().unwrap();
        let ph = ipsec_core::wire::checksum::pseudo_header_v6(src, dst, 17, 8);
        let ck = ipsec_core::wire::checksum::finish(ph + ipsec_core::wire::checksum::sum(&p[40..]));
        p[46..48].copy_from_slice(&ck.to_be_bytes());
        p
    }

    fn build_packets() -> Vec<Vec<u8>> {
        let echo = icmp_echo(Ipv4Addr::new(10, 2, 0, 1), 0);
        let mut pkts = Vec::new();
        // 1: plain.
        let mut plain = GreTunnel::new(GreConfig::new(A, B), t(0)).unwrap();
        pkts.push(encap(&mut plain, ethertype::IPV4, &echo));
        // 2: checksum.
        let mut c = GreConfig::new(A, B);
        c.checksum = true;
        let mut ck = GreTunnel::new(c, t(0)).unwrap();
        pkts.push(encap(&mut ck, ethertype::IPV4, &echo));
        // 3, 4: key 0x1234 and sequence numbers 0, 1.
        let mut c = GreConfig::new(A, B);
        c.key = Some(0x1234);
        c.sequencing = true;
        let mut ks = GreTunnel::new(c, t(0)).unwrap();
        pkts.push(encap(&mut ks, ethertype::IPV4, &echo));
        pkts.push(encap(&mut ks, ethertype::IPV4, &echo));
        // 5: all three options.
        let mut c = GreConfig::new(A, B);
        c.key = Some(0xdead_beef);
        c.sequencing = true;
        c.checksum = true;
        let mut all = GreTunnel::new(c, t(0)).unwrap();
        pkts.push(encap(&mut all, ethertype::IPV4, &echo));
        // 6: a keepalive, 7: the same keepalive as the peer forwards it back.
        let mut ka = GreTunnel::new(
            GreConfig::new(A, B).with_keepalive(KeepaliveConfig::new(10, 3)),
            t(0),
        )
        .unwrap();
        ka.handle_timeout(t(10_000));
        let mut buf = [0u8; 64];
        let tx = ka.poll_transmit(t(10_000), &mut buf).unwrap();
        let request = buf[..tx.len].to_vec();
        let mut peer = GreTunnel::new(GreConfig::new(B, A), t(0)).unwrap();
        let Ok(Delivered::ForwardBack(back)) = peer.decapsulate(t(10_000), &request) else {
            panic!("keepalive not forwarded");
        };
        let back = back.to_vec();
        pkts.push(request);
        pkts.push(back);
        // 8: IPv6 payload; 9: multicast IPv4 payload with precedence 6 (copied).
        pkts.push(encap(&mut plain, ethertype::IPV6, &ipv6_udp()));
        pkts.push(encap(
            &mut plain,
            ethertype::IPV4,
            &icmp_echo(Ipv4Addr::new(224, 0, 0, 5), 0xc0),
        ));
        pkts
    }

    #[test]
    fn tshark_dissects_our_gre_packets_as_intended() {
        if !tshark_available() {
            eprintln!("NOTICE: tshark not installed; skipping the Wireshark cross-check of GRE");
            return;
        }
        let dir: PathBuf = std::env::temp_dir().join(format!("gre-tshark-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pcap = dir.join("gre.pcap");
        write_pcap(&pcap, &build_packets());

        let verbose = tshark(&pcap, &["-V"]);
        if std::env::var_os("GRE_TSHARK_DUMP").is_some() {
            std::fs::copy(&pcap, std::env::temp_dir().join("gre-tshark-dump.pcap")).unwrap();
        }
        for bad in [
            "Malformed",
            "Expert Info (Error",
            "Expert Info (Warning",
            "status: Bad",
            "Status: Bad",
            "[Incorrect",
        ] {
            assert!(
                !verbose.contains(bad),
                "{bad:?} in tshark output:\n{verbose}"
            );
        }
        // The RFC 2784 checksum of frame 2 depends on the GRE header only (the inner IPv4
        // header and ICMP message each sum to zero): ~(0x8000 + 0x0800).
        assert!(verbose.contains("Checksum: 0x77ff [correct]"));
        assert!(verbose.contains("Possible GRE keepalive packet"));

        let fields = tshark(
            &pcap,
            &[
                "-T",
                "fields",
                "-E",
                "separator=|",
                "-E",
                "occurrence=a",
                "-E",
                "aggregator=,",
                "-e",
                "frame.protocols",
                "-e",
                "gre.flags.checksum",
                "-e",
                "gre.flags.key",
                "-e",
                "gre.flags.sequence_number",
                "-e",
                "gre.flags.version",
                "-e",
                "gre.key",
                "-e",
                "gre.sequence_number",
                "-e",
                "gre.proto",
                "-e",
                "gre.checksum.status",
                "-e",
                "ip.dsfield",
                "-e",
                "ip.ttl",
                "-e",
                "ip.dst",
            ],
        );
        let lines: Vec<&str> = fields.lines().collect();
        let expected = [
            // protocols | C | K | S | version | key | seq | proto | checksum good | tos | ttl | dst
            "raw:ip:gre:ip:icmp:data|0|0|0|0|||0x0800||0x00,0x00|255,64|203.0.113.2,10.2.0.1",
            "raw:ip:gre:ip:icmp:data|1|0|0|0|||0x0800|1|0x00,0x00|255,64|203.0.113.2,10.2.0.1",
            "raw:ip:gre:ip:icmp:data|0|1|1|0|0x00001234|0|0x0800||0x00,0x00|255,64|203.0.113.2,10.2.0.1",
            "raw:ip:gre:ip:icmp:data|0|1|1|0|0x00001234|1|0x0800||0x00,0x00|255,64|203.0.113.2,10.2.0.1",
            "raw:ip:gre:ip:icmp:data|1|1|1|0|0xdeadbeef|0|0x0800|1|0x00,0x00|255,64|203.0.113.2,10.2.0.1",
            "raw:ip:gre:ip:gre|0,0|0,0|0,0|0,0|||0x0800,0x0000||0xa0,0xa0|255,255|203.0.113.2,203.0.113.1",
            "raw:ip:gre|0|0|0|0|||0x0000||0xa0|255|203.0.113.1",
            "raw:ip:gre:ipv6:udp|0|0|0|0|||0x86dd||0x00|255|203.0.113.2",
            "raw:ip:gre:ip:icmp:data|0|0|0|0|||0x0800||0xc0,0xc0|255,64|203.0.113.2,224.0.0.5",
        ];
        assert_eq!(lines.len(), expected.len(), "{fields}");
        for (i, (got, want)) in lines.iter().zip(expected).enumerate() {
            assert_eq!(*got, want, "frame {}", i + 1);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
