//! The PAT-side IPsec pass-through helper, driven through its public API on a virtual
//! clock, with every translated packet checked by independent full checksum computations.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use core::net::{Ipv4Addr, SocketAddrV4};

use ipsec_core::{Duration, Instant};
use ipsec_nat_t::pat::{DropReason, Pat, PatConfig, RowProtocol, TranslationRow, Verdict};

const GLOBAL: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const H1: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 2);
const H2: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 3);
const H3: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 4);
const PEER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const PEER2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 8);

const C1: [u8; 8] = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
const C2: [u8; 8] = [0xe4, 0x7a, 0x59, 0x1f, 0xd0, 0x57, 0x58, 0x7f];

fn secs(s: u64) -> Instant {
    Instant::from_secs(s)
}

/// RFC 1071, the naive way.
fn cksum(data: &[u8]) -> u16 {
    let mut s: u64 = 0;
    for (i, b) in data.iter().enumerate() {
        s += if i % 2 == 0 {
            u64::from(*b) << 8
        } else {
            u64::from(*b)
        };
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn ip_header(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload_len: usize, frag: u16) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&((20 + payload_len) as u16).to_be_bytes());
    h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    h[8] = 64;
    h[9] = protocol;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let ck = cksum(&h);
    h[10..12].copy_from_slice(&ck.to_be_bytes());
    h
}

fn udp_checksum(src: Ipv4Addr, dst: Ipv4Addr, udp: &[u8]) -> u16 {
    let mut all = Vec::new();
    all.extend_from_slice(&src.octets());
    all.extend_from_slice(&dst.octets());
    all.extend_from_slice(&[0, 17]);
    all.extend_from_slice(&(udp.len() as u16).to_be_bytes());
    let mut u = udp.to_vec();
    u[6] = 0;
    u[7] = 0;
    all.extend_from_slice(&u);
    match cksum(&all) {
        0 => 0xffff,
        c => c,
    }
}

/// An IKE Main Mode message 1 from `src`:`sport` to `dst`:`dport` with initiator cookie
/// `cky_i`, UDP checksum filled.
fn ike(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, cky_i: [u8; 8]) -> Vec<u8> {
    let mut isakmp = Vec::new();
    isakmp.extend_from_slice(&cky_i);
    isakmp.extend_from_slice(&[0; 8]);
    isakmp.extend_from_slice(&[1, 0x10, 2, 0, 0, 0, 0, 0]);
    isakmp.extend_from_slice(&44u32.to_be_bytes());
    isakmp.extend_from_slice(&[0, 0, 0, 16, 0xaa, 0xbb, 0xcc, 0xdd, 1, 2, 3, 4, 5, 6, 7, 8]);
    let mut udp = Vec::new();
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&((8 + isakmp.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&isakmp);
    let ck = udp_checksum(src, dst, &udp);
    udp[6..8].copy_from_slice(&ck.to_be_bytes());
    let mut p = ip_header(src, dst, 17, udp.len(), 0);
    p.extend_from_slice(&udp);
    p
}

fn esp(src: Ipv4Addr, dst: Ipv4Addr, spi: u32, seq: u32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&spi.to_be_bytes());
    body.extend_from_slice(&seq.to_be_bytes());
    body.extend((0..48u8).map(|i| i.wrapping_mul(37)));
    let mut p = ip_header(src, dst, 50, body.len(), 0);
    p.extend_from_slice(&body);
    p
}

fn src_of(p: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(p[12], p[13], p[14], p[15])
}

fn dst_of(p: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(p[16], p[17], p[18], p[19])
}

/// Checks a translated packet: header checksum valid, UDP checksum valid (if non-zero),
/// and nothing changed but the expected address and the checksums.
fn check_translated(before: &[u8], after: &[u8]) {
    assert_eq!(cksum(&after[..20]), 0, "IPv4 header checksum");
    assert_eq!(before.len(), after.len());
    let same = |r: core::ops::Range<usize>| assert_eq!(&before[r.clone()], &after[r]);
    same(0..10);
    let frag = u16::from_be_bytes([after[6], after[7]]) & 0x1fff != 0;
    if after[9] == 17 && !frag {
        same(20..26);
        same(28..after.len());
        let ck = u16::from_be_bytes([after[26], after[27]]);
        if ck != 0 {
            assert_eq!(ck, udp_checksum(src_of(after), dst_of(after), &after[20..]));
        }
    } else {
        same(20..after.len());
    }
}

fn out<const N: usize>(pat: &mut Pat<N>, now: Instant, p: &[u8]) -> (Verdict, Vec<u8>) {
    let mut q = p.to_vec();
    let v = pat.outbound(now, &mut q);
    match v {
        Verdict::Forward => {
            check_translated(p, &q);
            assert_eq!(src_of(&q), GLOBAL);
            assert_eq!(dst_of(&q), dst_of(p));
        }
        _ => assert_eq!(q, p, "untouched unless forwarded"),
    }
    (v, q)
}

fn inb<const N: usize>(pat: &mut Pat<N>, now: Instant, p: &[u8]) -> (Verdict, Vec<u8>) {
    let mut q = p.to_vec();
    let v = pat.inbound(now, &mut q);
    match v {
        Verdict::Forward => {
            check_translated(p, &q);
            assert_eq!(src_of(&q), src_of(p));
        }
        _ => assert_eq!(q, p, "untouched unless forwarded"),
    }
    (v, q)
}

fn rows<const N: usize>(pat: &Pat<N>) -> Vec<TranslationRow> {
    pat.translations().collect()
}

#[test]
fn two_hosts_ike_to_one_peer_keep_sessions_by_cookie() {
    let mut pat: Pat<8> = Pat::new(PatConfig::new(GLOBAL));
    let t = secs(10);
    let (v, q) = out(&mut pat, t, &ike(H1, 500, PEER, 500, C1));
    assert_eq!(v, Verdict::Forward);
    assert_eq!(
        u16::from_be_bytes([q[20], q[21]]),
        500,
        "source port preserved"
    );
    assert_eq!(
        out(&mut pat, t, &ike(H2, 500, PEER, 500, C2)).0,
        Verdict::Forward
    );
    assert_eq!(pat.len(), 2);

    // The peer answers both on global:500; the cookie picks the host.
    let (v, q) = inb(&mut pat, t, &ike(PEER, 500, GLOBAL, 500, C2));
    assert_eq!((v, dst_of(&q)), (Verdict::Forward, H2));
    let (v, q) = inb(&mut pat, t, &ike(PEER, 500, GLOBAL, 500, C1));
    assert_eq!((v, dst_of(&q)), (Verdict::Forward, H1));
    // An unknown cookie, or a known one from another peer, has no translation.
    let c3 = [9u8; 8];
    assert_eq!(
        inb(&mut pat, t, &ike(PEER, 500, GLOBAL, 500, c3)).0,
        Verdict::Drop(DropReason::NoTranslation)
    );
    assert_eq!(
        inb(&mut pat, t, &ike(PEER2, 500, GLOBAL, 500, C1)).0,
        Verdict::Drop(DropReason::NoTranslation)
    );
    // H2 reusing H1's cookie toward the same peer is refused.
    assert_eq!(
        out(&mut pat, t, &ike(H2, 500, PEER, 500, C1)).0,
        Verdict::Drop(DropReason::Conflict)
    );
    // The same cookie toward another peer is another session.
    assert_eq!(
        out(&mut pat, t, &ike(H2, 500, PEER2, 500, C1)).0,
        Verdict::Forward
    );
    let c = pat.counters();
    assert_eq!((c.ike_out, c.ike_in, c.created), (3, 2, 3));
    assert_eq!((c.no_translation, c.conflicts), (2, 1));
}

#[test]
fn esp_spi_matching_binds_out_and_in() {
    let mut pat: Pat<8> = Pat::new(PatConfig::new(GLOBAL));
    let t = secs(100);
    assert_eq!(
        out(&mut pat, t, &esp(H1, PEER, 0xaaaa_0001, 1)).0,
        Verdict::Forward
    );
    let r = rows(&pat);
    assert_eq!((r[0].spi_out, r[0].spi_in), (Some(0xaaaa_0001), None));
    // The peer's first ESP packet with a new SPI binds to the pending translation.
    let (v, q) = inb(&mut pat, t, &esp(PEER, GLOBAL, 0xbbbb_0001, 1));
    assert_eq!((v, dst_of(&q)), (Verdict::Forward, H1));
    assert_eq!(rows(&pat)[0].spi_in, Some(0xbbbb_0001));
    // From now on: known SPIs flow both ways.
    for seq in 2..5 {
        assert_eq!(
            out(&mut pat, t, &esp(H1, PEER, 0xaaaa_0001, seq)).0,
            Verdict::Forward
        );
        let (v, q) = inb(&mut pat, t, &esp(PEER, GLOBAL, 0xbbbb_0001, seq));
        assert_eq!((v, dst_of(&q)), (Verdict::Forward, H1));
    }
    // Another SPI from the peer with nothing pending has nowhere to go.
    assert_eq!(
        inb(&mut pat, t, &esp(PEER, GLOBAL, 0xbbbb_0002, 1)).0,
        Verdict::Drop(DropReason::NoTranslation)
    );
    // Nor does the right SPI from another peer.
    assert_eq!(
        inb(&mut pat, t, &esp(PEER2, GLOBAL, 0xbbbb_0001, 1)).0,
        Verdict::Drop(DropReason::NoTranslation)
    );
    // Another host sending with H1's outbound SPI to the same peer is a conflict.
    assert_eq!(
        out(&mut pat, t, &esp(H2, PEER, 0xaaaa_0001, 1)).0,
        Verdict::Drop(DropReason::Conflict)
    );
    let c = pat.counters();
    assert_eq!((c.esp_out, c.esp_in, c.bound, c.created), (4, 4, 1, 1));
}

#[test]
fn second_host_waits_until_first_binds() {
    let mut pat: Pat<8> = Pat::new(PatConfig::new(GLOBAL));
    let t = secs(1);
    assert_eq!(
        out(&mut pat, t, &esp(H1, PEER, 0x1000, 1)).0,
        Verdict::Forward
    );
    // H2's new session to the same peer is blocked while H1's is pending, every time.
    for seq in 1..=3 {
        assert_eq!(
            out(&mut pat, t, &esp(H2, PEER, 0x2000, seq)).0,
            Verdict::Drop(DropReason::Blocked)
        );
    }
    assert_eq!(pat.counters().blocked, 3);
    // H2 to another peer is not affected; IKE is not affected.
    assert_eq!(
        out(&mut pat, t, &esp(H2, PEER2, 0x2000, 1)).0,
        Verdict::Forward
    );
    assert_eq!(
        out(&mut pat, t, &ike(H2, 500, PEER, 500, C2)).0,
        Verdict::Forward
    );
    // H1's reply arrives: H1 is bound, and H2 may now open its session.
    let (v, q) = inb(&mut pat, t, &esp(PEER, GLOBAL, 0x1001, 1));
    assert_eq!((v, dst_of(&q)), (Verdict::Forward, H1));
    assert_eq!(
        out(&mut pat, t, &esp(H2, PEER, 0x2000, 4)).0,
        Verdict::Forward
    );
    // Now H2 is pending, so H3 and even the bound H1's *new* SPI (a rekey) wait...
    assert_eq!(
        out(&mut pat, t, &esp(H3, PEER, 0x3000, 1)).0,
        Verdict::Drop(DropReason::Blocked)
    );
    assert_eq!(
        out(&mut pat, t, &esp(H1, PEER, 0x1100, 1)).0,
        Verdict::Drop(DropReason::Blocked)
    );
    // ...but H1's established SA keeps flowing.
    assert_eq!(
        out(&mut pat, t, &esp(H1, PEER, 0x1000, 2)).0,
        Verdict::Forward
    );
    let (v, q) = inb(&mut pat, t, &esp(PEER, GLOBAL, 0x1001, 2));
    assert_eq!((v, dst_of(&q)), (Verdict::Forward, H1));
    // The peer's first packet with a new SPI goes to H2.
    let (v, q) = inb(&mut pat, t, &esp(PEER, GLOBAL, 0x2001, 1));
    assert_eq!((v, dst_of(&q)), (Verdict::Forward, H2));
    assert_eq!(
        out(&mut pat, t, &esp(H3, PEER, 0x3000, 2)).0,
        Verdict::Forward
    );
    assert_eq!(pat.counters().blocked, 5);
    assert_eq!(pat.counters().bound, 2);
}

#[test]
fn one_host_may_open_several_sessions_while_pending() {
    let mut pat: Pat<8> = Pat::new(PatConfig::new(GLOBAL));
    assert_eq!(
        out(&mut pat, secs(1), &esp(H1, PEER, 0x1000, 1)).0,
        Verdict::Forward
    );
    assert_eq!(
        out(&mut pat, secs(2), &esp(H1, PEER, 0x1100, 1)).0,
        Verdict::Forward
    );
    // Replies bind the oldest pending translation first; both reach H1.
    let (_, q) = inb(&mut pat, secs(3), &esp(PEER, GLOBAL, 0x1101, 1));
    assert_eq!(dst_of(&q), H1);
    let (_, q) = inb(&mut pat, secs(3), &esp(PEER, GLOBAL, 0x1001, 1));
    assert_eq!(dst_of(&q), H1);
    let r = rows(&pat);
    assert_eq!((r[0].spi_out, r[0].spi_in), (Some(0x1000), Some(0x1101)));
    assert_eq!((r[1].spi_out, r[1].spi_in), (Some(0x1100), Some(0x1001)));
}

#[test]
fn translations_expire_at_exactly_the_configured_time() {
    let config = PatConfig {
        global: GLOBAL,
        ike_timeout: Duration::from_secs(300),
        esp_timeout: Duration::from_secs(120),
        esp_pending_timeout: Duration::from_secs(30),
    };
    let mut pat: Pat<8> = Pat::new(config);
    assert_eq!(pat.poll_timeout(), None);
    let t0 = Instant::from_millis(1_000);
    assert_eq!(
        out(&mut pat, t0, &ike(H1, 500, PEER, 500, C1)).0,
        Verdict::Forward
    );
    assert_eq!(pat.poll_timeout(), Some(Instant::from_millis(301_000)));
    // Traffic in either direction refreshes.
    let t1 = Instant::from_millis(200_000);
    assert_eq!(
        inb(&mut pat, t1, &ike(PEER, 500, GLOBAL, 500, C1)).0,
        Verdict::Forward
    );
    assert_eq!(pat.poll_timeout(), Some(Instant::from_millis(500_000)));
    pat.handle_timeout(Instant::from_millis(499_999));
    assert_eq!(pat.len(), 1);
    pat.handle_timeout(Instant::from_millis(500_000));
    assert_eq!(pat.len(), 0);
    assert_eq!(pat.counters().expired, 1);
    assert_eq!(pat.poll_timeout(), None);
    // Expired without handle_timeout: a packet at the deadline finds nothing either.
    assert_eq!(
        out(&mut pat, secs(1000), &ike(H1, 500, PEER, 500, C1)).0,
        Verdict::Forward
    );
    assert_eq!(
        inb(&mut pat, secs(1300), &ike(PEER, 500, GLOBAL, 500, C1)).0,
        Verdict::Drop(DropReason::NoTranslation)
    );
    assert_eq!(pat.counters().expired, 2);

    // A pending ESP translation expires 30 s after creation, refreshes notwithstanding.
    let t = secs(2000);
    assert_eq!(
        out(&mut pat, t, &esp(H1, PEER, 0x1000, 1)).0,
        Verdict::Forward
    );
    assert_eq!(
        out(&mut pat, secs(2020), &esp(H1, PEER, 0x1000, 2)).0,
        Verdict::Forward
    );
    assert_eq!(pat.poll_timeout(), Some(secs(2030)));
    assert_eq!(
        out(&mut pat, secs(2029), &esp(H2, PEER, 0x2000, 1)).0,
        Verdict::Drop(DropReason::Blocked)
    );
    pat.handle_timeout(secs(2030));
    assert!(pat.is_empty());
    assert_eq!(
        out(&mut pat, secs(2030), &esp(H2, PEER, 0x2000, 2)).0,
        Verdict::Forward
    );
    // Once bound, the idle timeout (120 s) applies from the last packet.
    assert_eq!(
        inb(&mut pat, secs(2040), &esp(PEER, GLOBAL, 0x2001, 1)).0,
        Verdict::Forward
    );
    assert_eq!(pat.poll_timeout(), Some(secs(2160)));
    assert_eq!(
        out(&mut pat, secs(2100), &esp(H2, PEER, 0x2000, 3)).0,
        Verdict::Forward
    );
    assert_eq!(pat.poll_timeout(), Some(secs(2220)));
    pat.handle_timeout(Instant::from_millis(2_219_999));
    assert_eq!(pat.len(), 1);
    pat.handle_timeout(secs(2220));
    assert!(pat.is_empty());
    assert_eq!(pat.counters().expired, 4);
    // Spurious calls are no-ops.
    pat.handle_timeout(secs(1));
    pat.handle_timeout(secs(100_000));
    assert_eq!(pat.counters().expired, 4);
}

#[test]
fn defaults() {
    let c = PatConfig::new(GLOBAL);
    assert_eq!(c.ike_timeout, Duration::from_secs(300));
    assert_eq!(c.esp_timeout, Duration::from_secs(300));
    assert_eq!(c.esp_pending_timeout, Duration::from_secs(60));
}

#[test]
fn status_rows() {
    let mut pat: Pat<8> = Pat::new(PatConfig::new(GLOBAL));
    assert_eq!(
        out(&mut pat, secs(10), &ike(H1, 500, PEER, 500, C1)).0,
        Verdict::Forward
    );
    assert_eq!(
        out(&mut pat, secs(20), &esp(H1, PEER, 0xf1e4_c3b2, 1)).0,
        Verdict::Forward
    );
    assert_eq!(
        inb(&mut pat, secs(25), &esp(PEER, GLOBAL, 0x8d2f_1a0b, 1)).0,
        Verdict::Forward
    );
    assert_eq!(
        out(&mut pat, secs(30), &esp(H2, PEER2, 0x0000_1234, 1)).0,
        Verdict::Forward
    );
    let r = rows(&pat);
    assert_eq!(
        r[0],
        TranslationRow {
            protocol: RowProtocol::Udp,
            inside_global: SocketAddrV4::new(GLOBAL, 500),
            inside_local: SocketAddrV4::new(H1, 500),
            outside_local: SocketAddrV4::new(PEER, 500),
            outside_global: SocketAddrV4::new(PEER, 500),
            cookie: Some(C1),
            spi_in: None,
            spi_out: None,
            created: secs(10),
            last_used: secs(10),
            expires: secs(310),
        }
    );
    assert_eq!(
        r[1],
        TranslationRow {
            protocol: RowProtocol::Esp,
            inside_global: SocketAddrV4::new(GLOBAL, 0),
            inside_local: SocketAddrV4::new(H1, 0),
            outside_local: SocketAddrV4::new(PEER, 0),
            outside_global: SocketAddrV4::new(PEER, 0),
            cookie: None,
            spi_in: Some(0x8d2f_1a0b),
            spi_out: Some(0xf1e4_c3b2),
            created: secs(20),
            last_used: secs(25),
            expires: secs(325),
        }
    );
    assert_eq!(r[2].expires, secs(90), "pending: 60 s after creation");
    assert_eq!(r[2].left(secs(40)), Duration::from_secs(50));
    let text: Vec<String> = r.iter().map(ToString::to_string).collect();
    assert_eq!(
        TranslationRow::HEADER,
        "Pro Inside global         Inside local          Outside local         Outside global        SPI in   SPI out"
    );
    assert_eq!(
        text,
        [
            "udp 203.0.113.1:500       10.1.1.2:500          198.51.100.7:500      198.51.100.7:500      -        -",
            "esp 203.0.113.1:0         10.1.1.2:0            198.51.100.7:0        198.51.100.7:0        8D2F1A0B F1E4C3B2",
            "esp 203.0.113.1:0         10.1.1.3:0            198.51.100.8:0        198.51.100.8:0        -        00001234",
        ]
    );
    // The columns line up under the header.
    let col = |s: &str, name: &str| s.find(name).unwrap();
    for t in &text {
        assert_eq!(
            t.find("10.1.1."),
            Some(col(TranslationRow::HEADER, "Inside local"))
        );
        assert_eq!(
            t.find("198.51.100."),
            Some(col(TranslationRow::HEADER, "Outside local"))
        );
    }
}

#[test]
fn table_full() {
    let mut pat: Pat<2> = Pat::new(PatConfig::new(GLOBAL));
    assert_eq!(
        out(&mut pat, secs(0), &ike(H1, 500, PEER, 500, C1)).0,
        Verdict::Forward
    );
    assert_eq!(
        out(&mut pat, secs(1), &ike(H2, 500, PEER, 500, C2)).0,
        Verdict::Forward
    );
    assert_eq!(
        out(&mut pat, secs(2), &esp(H1, PEER, 0x1000, 1)).0,
        Verdict::Drop(DropReason::TableFull)
    );
    assert_eq!(pat.counters().table_full, 1);
    // Existing translations still work; expiry makes room.
    assert_eq!(
        inb(&mut pat, secs(3), &ike(PEER, 500, GLOBAL, 500, C2)).0,
        Verdict::Forward
    );
    assert_eq!(
        out(&mut pat, secs(300), &esp(H1, PEER, 0x1000, 2)).0,
        Verdict::Forward
    );
    assert_eq!(pat.len(), 2);
}

#[test]
fn not_ours_passes_untouched() {
    let mut pat: Pat<4> = Pat::new(PatConfig::new(GLOBAL));
    let t = secs(1);
    // NAT-T and other UDP, TCP, IPv6: ordinary NAT's business.
    assert_eq!(
        out(&mut pat, t, &ike(H1, 4500, PEER, 4500, C1)).0,
        Verdict::Pass
    );
    assert_eq!(
        inb(&mut pat, t, &ike(PEER, 4500, GLOBAL, 4500, C1)).0,
        Verdict::Pass
    );
    let mut tcp = ip_header(H1, PEER, 6, 20, 0);
    tcp.extend_from_slice(&[0; 20]);
    assert_eq!(out(&mut pat, t, &tcp).0, Verdict::Pass);
    let mut v6 = vec![0x60u8; 60];
    assert_eq!(pat.outbound(t, &mut v6), Verdict::Pass);
    assert_eq!(pat.inbound(t, &mut v6), Verdict::Pass);
    // Inbound not addressed to the global address.
    assert_eq!(inb(&mut pat, t, &esp(PEER, H1, 0x1000, 1)).0, Verdict::Pass);
    assert!(pat.is_empty());
}

#[test]
fn malformed_is_dropped() {
    let mut pat: Pat<4> = Pat::new(PatConfig::new(GLOBAL));
    let t = secs(1);
    let mut p = esp(H1, PEER, 0x1000, 1);
    p[10] ^= 1; // header checksum
    assert_eq!(out(&mut pat, t, &p).0, Verdict::Drop(DropReason::Malformed));
    // ESP shorter than SPI + sequence number.
    let mut p = ip_header(H1, PEER, 50, 7, 0);
    p.extend_from_slice(&[0, 0, 0x10, 0, 0, 0, 1]);
    assert_eq!(out(&mut pat, t, &p).0, Verdict::Drop(DropReason::Malformed));
    // IKE shorter than an ISAKMP header.
    let full = ike(H1, 500, PEER, 500, C1);
    let mut p = ip_header(H1, PEER, 17, 8 + 27, 0);
    p.extend_from_slice(&full[20..20 + 8 + 27]);
    assert_eq!(out(&mut pat, t, &p).0, Verdict::Drop(DropReason::Malformed));
    // Truncated buffers.
    for n in 0..full.len() {
        let mut q = full[..n].to_vec();
        let v = pat.outbound(t, &mut q);
        assert!(
            matches!(v, Verdict::Drop(DropReason::Malformed) | Verdict::Pass),
            "{n}: {v:?}"
        );
    }
    assert!(pat.is_empty());
    assert!(pat.counters().malformed >= 3);
}

#[test]
fn fragments_follow_the_translations() {
    let mut pat: Pat<8> = Pat::new(PatConfig::new(GLOBAL));
    let t = secs(1);
    assert_eq!(
        out(&mut pat, t, &ike(H1, 500, PEER, 500, C1)).0,
        Verdict::Forward
    );
    // A second IKE fragment (offset 1480) from H1: source rewritten, payload untouched.
    let mut frag = ip_header(H1, PEER, 17, 40, 185);
    frag.extend((0..40u8).collect::<Vec<_>>());
    assert_eq!(out(&mut pat, t, &frag).0, Verdict::Forward);
    // From a host with no translation toward that peer: dropped.
    let mut frag2 = ip_header(H2, PEER, 17, 40, 185);
    frag2.extend([0u8; 40]);
    assert_eq!(
        out(&mut pat, t, &frag2).0,
        Verdict::Drop(DropReason::NoTranslation)
    );
    // Inbound: one host talks IKE to the peer, so the fragment is its.
    let mut back = ip_header(PEER, GLOBAL, 17, 40, 185);
    back.extend([7u8; 40]);
    let (v, q) = inb(&mut pat, t, &back);
    assert_eq!((v, dst_of(&q)), (Verdict::Forward, H1));
    // Two hosts: ambiguous.
    assert_eq!(
        out(&mut pat, t, &ike(H2, 500, PEER, 500, C2)).0,
        Verdict::Forward
    );
    assert_eq!(
        inb(&mut pat, t, &back).0,
        Verdict::Drop(DropReason::AmbiguousFragment)
    );
    // A first fragment (MF set) is translated like a whole packet.
    let mut first = ike(H1, 500, PEER, 500, C1);
    first[6] = 0x20;
    first[10..12].fill(0);
    let ck = cksum(&first[..20]);
    first[10..12].copy_from_slice(&ck.to_be_bytes());
    assert_eq!(out(&mut pat, t, &first).0, Verdict::Forward);
    assert_eq!(pat.counters().fragments, 2);
    assert_eq!(pat.counters().ambiguous, 1);
}

#[test]
fn udp_zero_checksum_stays_zero() {
    let mut pat: Pat<4> = Pat::new(PatConfig::new(GLOBAL));
    let mut p = ike(H1, 500, PEER, 500, C1);
    p[26..28].fill(0);
    let (v, q) = out(&mut pat, secs(1), &p);
    assert_eq!(v, Verdict::Forward);
    assert_eq!(&q[26..28], &[0, 0]);
}

#[test]
fn random_packets_never_panic() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut pat: Pat<16> = Pat::new(PatConfig::new(GLOBAL));
    let hosts = [H1, H2, H3];
    let peers = [PEER, PEER2];
    let mut now = 0u64;
    for i in 0..20_000 {
        now += rnd() % 5_000;
        let t = Instant::from_millis(now);
        let h = hosts[(rnd() % 3) as usize];
        let p = peers[(rnd() % 2) as usize];
        let inbound = rnd() % 2 == 0;
        let (src, dst) = if inbound { (p, GLOBAL) } else { (h, p) };
        let mut pkt = match rnd() % 4 {
            0 => ike(src, 500, dst, 500, [(rnd() % 3) as u8; 8]),
            1 => esp(src, dst, 0x100 + (rnd() % 6) as u32, i),
            2 => {
                let len = (rnd() % 80) as usize;
                (0..len).map(|_| rnd() as u8).collect()
            }
            _ => {
                let mut q = if rnd() % 2 == 0 {
                    ike(src, 500, dst, 500, C1)
                } else {
                    esp(src, dst, 0x100, i)
                };
                for _ in 0..(rnd() % 4) {
                    let at = (rnd() as usize) % q.len();
                    q[at] = rnd() as u8;
                }
                let keep = (rnd() as usize) % (q.len() + 1);
                q.truncate(keep.max(q.len() / 2));
                q
            }
        };
        let before = pkt.clone();
        let v = if inbound {
            pat.inbound(t, &mut pkt)
        } else {
            pat.outbound(t, &mut pkt)
        };
        if v == Verdict::Forward {
            assert_eq!(cksum(&pkt[..20]), 0);
        } else {
            assert_eq!(pkt, before);
        }
        assert!(pat.len() <= 16);
        if let Some(d) = pat.poll_timeout() {
            assert!(d > t, "no deadline is already past after a packet");
        }
        if rnd() % 50 == 0 {
            pat.handle_timeout(t);
        }
    }
    let c = pat.counters();
    assert!(c.ike_out > 0 && c.esp_out > 0 && c.esp_in > 0 && c.blocked > 0 && c.malformed > 0);
}
