//! The topology demo runs to the end and shows what it claims, step by step: the tunnel
//! comes up on the first packet, NAT-T floats to 4500, counters move, DPD probes only an
//! idle peer, GRE keepalives are answered, gw2 takes over without renegotiation, and the
//! idle timer deletes the SAs with a DELETE.

use std::process::Command;

fn output() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_topology"))
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The text of step `n` (from its header to the next one).
fn step(s: &str, n: u32) -> &str {
    let start = s
        .find(&format!("== {n}. "))
        .unwrap_or_else(|| panic!("no step {n} in:\n{s}"));
    let rest = &s[start..];
    let end = rest.find(&format!("== {}. ", n + 1)).unwrap_or(rest.len());
    &rest[..end]
}

fn has(s: &str, line: &str) {
    assert!(s.contains(line), "missing {line:?} in:\n{s}");
}

/// The numbers following `key` on every line that contains it.
fn numbers_after(s: &str, key: &str) -> Vec<u64> {
    s.lines()
        .filter_map(|l| l.split_once(key))
        .map(|(_, rest)| {
            let digits: String = rest
                .trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits
                .parse()
                .unwrap_or_else(|_| panic!("no number after {key:?} in {rest:?}"))
        })
        .collect()
}

#[test]
fn topology_demo_output() {
    let s = output();
    assert_eq!(s, output(), "deterministic output");

    // 1. Main Mode and Quick Mode on the first packet.
    let s1 = step(&s, 1);
    has(
        s1,
        "spoke-1-east: no IPsec SA for crypto map vpn 10: packet dropped, starting IKE",
    );
    has(s1, "ISAKMP Main Mode");
    has(s1, "non-ESP marker + ISAKMP Quick Mode");
    has(
        s1,
        "spoke-1-east: %CRYPTO-6-IKMP_SA_UP: ISAKMP SA conn-id 1 is QM_IDLE",
    );
    has(
        s1,
        "vpn-gw1-east: %CRYPTO-5-SESSION_STATUS: IPsec SA pair up with 203.0.113.1:40001",
    );
    has(s1, ".!!!!\nSuccess rate is 80 percent (4/5)");
    has(
        s1,
        "dst             src             state          conn-id slot status",
    );
    has(
        s1,
        "198.51.100.10   192.0.2.2       QM_IDLE              1    0 ACTIVE",
    );
    has(
        s1,
        "198.51.100.10   203.0.113.1     QM_IDLE              1    0 ACTIVE",
    );

    // 2. Traffic both ways, counters moving on both ends.
    let s2 = step(&s, 2);
    assert_eq!(
        s2.matches("Success rate is 100 percent (5/5)").count(),
        2,
        "{s2}"
    );
    let enc = numbers_after(s2, "#pkts encaps:");
    let dec = numbers_after(s2, "#pkts decaps:");
    assert!(
        enc.len() == 2 && enc.iter().chain(&dec).all(|&n| n >= 14),
        "{s2}"
    );
    has(
        s2,
        "#pkts replay failed (rcv): 0, #pkts replay too old (rcv): 0, #pkts verify failed: 0",
    );

    // 3. NAT detected, floated to 4500, ESP in UDP, keepalives from the spoke only.
    let s3 = step(&s, 3);
    has(
        &s,
        "spoke-1-east: NAT-T: NAT-D hashes differ, we are behind a NAT: IKE floated to UDP 4500",
    );
    has(
        s3,
        "udp 203.0.113.1:40001     192.0.2.2:4500        198.51.100.10:4500",
    );
    has(
        s3,
        "1     192.0.2.2:4500       198.51.100.10:4500   ACTIVE aes  sha  psk  2",
    );
    has(
        s3,
        "1     198.51.100.10:4500   203.0.113.1:40001    ACTIVE aes  sha  psk  2",
    );
    assert_eq!(s3.matches(" D K N\n").count(), 2, "{s3}");
    has(s3, "NAT-T: local behind NAT: yes, peer behind NAT: no");
    has(
        s3,
        "capture: UDP 203.0.113.1:40001 > 198.51.100.10:4500  ESP spi",
    );
    has(
        s3,
        "capture: UDP 198.51.100.10:4500 > 203.0.113.1:40001  ESP spi",
    );
    assert_eq!(
        s3.matches("NAT-keepalive (one octet 0xFF)").count(),
        3,
        "{s3}"
    );
    has(
        s3,
        "NAT keepalives: sent by spoke-1-east 3, received by vpn-gw1-east 3, sent by vpn-gw1-east 0",
    );
    has(s3, "current_peer 203.0.113.1 port 40001");
    has(s3, "in use settings ={Tunnel UDP-Encaps, }");

    // 4. DPD: nothing while idle, one R-U-THERE when traffic resumes, none while busy.
    let s4 = step(&s, 4);
    has(s4, "has sent 0 R-U-THERE and armed no timer");
    has(
        s4,
        "DPD on spoke-1-east: R-U-THERE sent 1, R-U-THERE-ACK received 1; vpn-gw1-east answered 1",
    );
    has(s4, "Success rate is 100 percent (20/20)");
    has(s4, "R-U-THERE sent during the busy period: 0");
    has(s4, "R-U-THERE sent 1, acked 1, unanswered now 0");

    // 5. GRE keepalives answered both ways; multicast through the tunnel.
    let s5 = step(&s, 5);
    assert_eq!(
        s5.matches("Tunnel0 is up, line protocol is up").count(),
        2,
        "{s5}"
    );
    let ka: Vec<(u64, u64)> = s5
        .lines()
        .filter(|l| l.contains("keepalives sent"))
        .map(|l| {
            let n: Vec<u64> = l
                .split_whitespace()
                .filter_map(|w| w.trim_end_matches(',').parse().ok())
                .collect();
            (n[0], n[1])
        })
        .collect();
    assert_eq!(ka.len(), 2, "{s5}");
    assert!(
        ka.iter()
            .all(|&(sent, returned)| sent >= 5 && returned == sent),
        "{ka:?}"
    );
    has(
        s5,
        "vpn-gw1-east: Tunnel0 received IPv4 172.16.0.1 -> 224.0.0.5 proto 89",
    );

    // 6. Stateful failover: same SAs, no IKE, the route moves to gw2.
    let s6 = step(&s, 6);
    has(s6, "HA status: STANDBY (out seq");
    has(
        s6,
        "S     10.0.68.0/24 [1/0] via 203.0.113.1 tag 0, injected by vpn-gw1-east",
    );
    has(
        s6,
        "vpn-gw2-east: %VRRP-6-STATECHANGE: Gi0/1 Grp 1 state Backup -> Master (MasterDown)",
    );
    has(
        s6,
        "vpn-gw2-east: HA takeover: 1 SA pair(s) installed from the synchronised SADB (0 failed)",
    );
    has(
        s6,
        "S     10.0.68.0/24 [1/0] via 203.0.113.1 tag 0, injected by vpn-gw2-east",
    );
    has(s6, ": the same SAs");
    has(
        s6,
        "IKE datagrams sent by spoke-1-east during the failover: 0 (no renegotiation)",
    );
    let outage = s6
        .lines()
        .find(|l| l.len() == 10 && l.chars().all(|c| c == '.' || c == '!'))
        .expect("the 10 echoes across the failover");
    let trimmed = outage.trim_start_matches('.');
    assert!(
        trimmed.len() >= 5 && trimmed.chars().all(|c| c == '!'),
        "{outage}"
    );
    has(s6, "vpn-gw2-east#ping 10.0.68.5 source 10.1.1.7 repeat 5");
    has(s6, "!!!!!\nSuccess rate is 100 percent (5/5)");
    has(s6, "HA status: ACTIVE (out seq");
    let gw2 = &s6[s6
        .find("vpn-gw2-east#show crypto ipsec sa")
        .expect("gw2 table")..];
    assert!(numbers_after(gw2, "#pkts decaps:")[0] > 0, "{gw2}");
    has(gw2, "#pkts replay failed (rcv): 0");
    // The ISAKMP SA was synchronised too: gw2 holds it in QM_IDLE after the takeover.
    has(
        s6,
        "vpn-gw2-east: HA takeover: 1 ISAKMP SA(s) imported from the synchronised state (QM_IDLE, nothing sent)",
    );
    let gw2_isakmp = &s6[s6
        .find("vpn-gw2-east#show crypto isakmp sa")
        .expect("gw2 isakmp table")..];
    has(
        gw2_isakmp,
        "198.51.100.10   203.0.113.1     QM_IDLE              1    0 ACTIVE",
    );
    assert!(!s6.contains("not synchronised"), "{s6}");

    // 7. Idle timeout: SAs deleted, a DELETE sent, tables empty.
    let s7 = step(&s, 7);
    has(s7, "spoke-1-east: %CRYPTO-6-IDLE: Inbound SA");
    has(s7, "spoke-1-east: sending IPsec DELETE for SPI");
    has(
        s7,
        "capture: UDP 203.0.113.1:40001 > 198.51.100.10:4500  non-ESP marker + ISAKMP Informational",
    );
    // gw2 holds the IKE SA, so it processes the spoke's DELETE.
    assert!(
        s7.lines()
            .any(|l| l.contains("vpn-gw2-east: IPsec SA pair")
                && l.ends_with("deleted (PeerDelete)")),
        "{s7}"
    );
    has(
        s7,
        "vpn-gw2-east: RRI: route 10.0.68.0/24 [1/0] via 203.0.113.1 tag 0 removed",
    );
    assert_eq!(s7.matches("(no IPsec SAs)").count(), 2, "{s7}");
    has(s7, "% Network not in table");
    has(s7, "IPsec SA pairs: 0, IKE SAs: 1");
}
