//! Failures: wrong PSK, no proposal (both phases), proxy identities outside the
//! responder's selector, tampered encrypted messages, malformed and unknown payloads,
//! replays, unauthenticated DELETE / notifies, half-open floods. Every failure ends
//! with the tables empty again.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod sim;

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;

use hal_traits::{CipherAlg, DhGroup, HashAlg, MacAlg};
use ipsec_core::Duration;
use ipsec_core::esp::{Encryption, Mode, Transform};
use ipsec_core::spd::AddrRange;
use ipsec_ike::v1::{
    ExchangeMode, FailReason, IkeConfig, IkeError, IkeEvent, IsakmpPolicy, IsakmpState,
};
use ipsec_ike::wire::{
    DeleteRepr, Header, HeaderRepr, IkeWireError, MessageBuilder, NotifyRepr, PayloadRepr,
    exchange_type, notify, protocol_id,
};
use sim::*;

fn pol() -> IsakmpPolicy {
    policy(CipherAlg::Aes128Cbc, HashAlg::Sha1, DhGroup::Modp1024)
}

fn cfgs(
    pa: IsakmpPolicy,
    pb: IsakmpPolicy,
    ka: &[u8],
    kb: &[u8],
    ta: Transform,
    tb: Transform,
    exchange: ExchangeMode,
) -> (IkeConfig, IkeConfig) {
    let mut a = config(A, pa, ka);
    a.add_crypto_map(map(
        10,
        &[B],
        net(A_NET),
        net(B_NET),
        ta,
        Mode::Tunnel,
        None,
        exchange,
    ))
    .unwrap();
    let mut b = config(B, pb, kb);
    b.add_crypto_map(map(
        10,
        &[A],
        net(B_NET),
        net(A_NET),
        tb,
        Mode::Tunnel,
        None,
        exchange,
    ))
    .unwrap();
    (a, b)
}

fn failed(n: &Net, k: usize) -> Vec<(Option<u32>, FailReason)> {
    n.nodes[k]
        .events
        .iter()
        .filter_map(|e| match e {
            IkeEvent::NegotiationFailed {
                crypto_map, reason, ..
            } => Some((*crypto_map, *reason)),
            _ => None,
        })
        .collect()
}

fn nothing_installed(n: &Net) {
    for k in 0..2 {
        assert!(n.children(k).is_empty());
        assert_eq!(n.nodes[k].ike.ipsec_status().count(), 0);
    }
}

fn empty(n: &Net) -> bool {
    n.nodes.iter().all(|x| x.ike.isakmp_status().count() == 0)
}

fn three_des_md5() -> Transform {
    Transform {
        enc: Encryption::Cbc(CipherAlg::TripleDesCbc),
        auth: Some(MacAlg::HmacMd5_96),
    }
}

fn wrong_psk(exchange: ExchangeMode) {
    let (a, b) = cfgs(
        pol(),
        pol(),
        b"right",
        b"wrong",
        aes_sha1(),
        aes_sha1(),
        exchange,
    );
    let mut n = Net::pair(41, a, b);
    n.initiate(0, 10).unwrap();
    assert!(
        n.run_until(Duration::from_secs(120), |n| !failed(n, 0).is_empty()
            && !failed(n, 1).is_empty())
    );
    assert_eq!(
        failed(&n, 0),
        [(Some(10), FailReason::AuthenticationFailed)]
    );
    assert_eq!(failed(&n, 1), [(None, FailReason::AuthenticationFailed)]);
    for k in 0..2 {
        assert_eq!(n.phase1_up(k), 0);
    }
    nothing_installed(&n);
    assert!(empty(&n), "no leaked half-open SAs");
    let side = if exchange == ExchangeMode::Main { 1 } else { 0 };
    assert!(n.nodes[side].ike.counters().auth_failures >= 1);
    // Capacity is back: the right key now works.
    let key = ipsec_ike::v1::PresharedKey::address(v4(Ipv4Addr::UNSPECIFIED), b"right").unwrap();
    let cfg = n.nodes[1].ike.config_mut();
    cfg.keys.clear();
    cfg.add_key(key).unwrap();
    n.initiate(0, 10).unwrap();
    assert!(
        n.run_until(Duration::from_secs(10), |n| n.children(0).len() == 1
            && n.children(1).len() == 1)
    );
}

#[test]
fn wrong_psk_main_mode() {
    wrong_psk(ExchangeMode::Main);
}

#[test]
fn wrong_psk_aggressive_mode() {
    wrong_psk(ExchangeMode::Aggressive);
}

#[test]
fn no_proposal_phase1() {
    let pb = policy(CipherAlg::TripleDesCbc, HashAlg::Md5, DhGroup::Modp768);
    let (a, b) = cfgs(
        pol(),
        pb,
        b"k",
        b"k",
        aes_sha1(),
        aes_sha1(),
        ExchangeMode::Main,
    );
    let mut n = Net::pair(42, a, b);
    n.initiate(0, 10).unwrap();
    assert!(n.run_until(Duration::from_secs(5), |n| !failed(n, 0).is_empty()));
    assert_eq!(failed(&n, 0), [(Some(10), FailReason::NoProposalChosen)]);
    assert_eq!(failed(&n, 1), [(None, FailReason::NoProposalChosen)]);
    // Immediately (the unauthenticated answer to MM1 ends it), not after a timeout.
    assert!(n.log.len() <= 2, "{:?}", n.log);
    assert!(empty(&n));
    nothing_installed(&n);
}

#[test]
fn no_proposal_phase2() {
    let (a, b) = cfgs(
        pol(),
        pol(),
        b"k",
        b"k",
        aes_sha1(),
        three_des_md5(),
        ExchangeMode::Main,
    );
    let mut n = Net::pair(43, a, b);
    n.initiate(0, 10).unwrap();
    assert!(
        n.run_until(Duration::from_secs(5), |n| !failed(n, 0).is_empty()
            && !failed(n, 1).is_empty())
    );
    assert_eq!(failed(&n, 0), [(Some(10), FailReason::NoProposalChosen)]);
    assert_eq!(failed(&n, 1), [(None, FailReason::NoProposalChosen)]);
    nothing_installed(&n);
    // Phase 1 stays up.
    for k in 0..2 {
        assert_eq!(
            n.nodes[k].ike.isakmp_status().next().unwrap().state,
            IsakmpState::QmIdle
        );
    }
}

#[test]
fn proxy_ids_outside_selector() {
    let (a, mut b) = cfgs(
        pol(),
        pol(),
        b"k",
        b"k",
        aes_sha1(),
        aes_sha1(),
        ExchangeMode::Main,
    );
    // The responder only protects a /24 of its side: the initiator's /16 is too wide.
    b.crypto_maps[0].selector.local =
        AddrRange::from_prefix(v4(Ipv4Addr::new(10, 2, 0, 0)), 24).unwrap();
    let mut n = Net::pair(44, a, b);
    n.initiate(0, 10).unwrap();
    assert!(n.run_until(Duration::from_secs(5), |n| !failed(n, 0).is_empty()));
    assert_eq!(
        failed(&n, 0),
        [(Some(10), FailReason::InvalidIdInformation)]
    );
    assert_eq!(failed(&n, 1), [(None, FailReason::InvalidIdInformation)]);
    nothing_installed(&n);
}

#[test]
fn dynamic_map_accepts_the_initiators_proxy_ids() {
    let (a, mut b) = cfgs(
        pol(),
        pol(),
        b"k",
        b"k",
        aes_sha1(),
        aes_sha1(),
        ExchangeMode::Main,
    );
    b.crypto_maps[0].dynamic = true;
    b.crypto_maps[0].peers.clear();
    b.crypto_maps[0].selector.local = AddrRange::host(v4(Ipv4Addr::new(10, 9, 9, 9)));
    let mut n = Net::pair(45, a, b);
    n.initiate(0, 10).unwrap();
    assert!(n.run_until(Duration::from_secs(5), |n| n.children(1).len() == 1));
    let c = n.children(1)[0];
    let sel = c.inbound.selector.unwrap();
    assert_eq!((sel.local, sel.remote), (net(B_NET), net(A_NET)));
    // A dynamic entry cannot initiate.
    let now = n.now;
    let node = &mut n.nodes[1];
    assert_eq!(
        node.ike.initiate(now, &mut node.rng, 10),
        Err(IkeError::DynamicMap)
    );
}

/// Flips one byte of the first message matching `which` (once).
fn tamper_once(n: &mut Net, which: impl Fn(&HeaderRepr) -> bool + 'static) {
    let done = Rc::new(RefCell::new(false));
    n.tamper = Some(Box::new(move |_, _, d| {
        let off = if d.len() > 4 && d[..4] == [0; 4] {
            4
        } else {
            0
        };
        let Ok(h) = Header::new_checked(&d[off..]) else {
            return true;
        };
        let Ok(r) = HeaderRepr::parse(&h) else {
            return true;
        };
        if !*done.borrow() && which(&r) {
            *done.borrow_mut() = true;
            // The first ciphertext block: garbles the first payload (a HASH or ID),
            // so the message fails authentication. (Garbling only the last block of
            // MM5 could hit the N(INITIAL-CONTACT), which HASH_I does not cover.)
            d[off + 28 + 2] ^= 0x40;
        }
        true
    }));
}

#[test]
fn tampered_encrypted_messages_are_dropped_and_retransmission_recovers() {
    for (name, which) in [
        (
            "MM5",
            Box::new(|h: &HeaderRepr| {
                h.exchange_type == exchange_type::IDENTITY_PROTECTION && h.flags & 1 == 1
            }) as Box<dyn Fn(&HeaderRepr) -> bool>,
        ),
        (
            "QM1",
            Box::new(|h: &HeaderRepr| h.exchange_type == exchange_type::QUICK_MODE),
        ),
    ] {
        let (a, b) = cfgs(
            pol(),
            pol(),
            b"k",
            b"k",
            aes_sha1(),
            aes_sha1(),
            ExchangeMode::Main,
        );
        let mut n = Net::pair(46, a, b);
        tamper_once(&mut n, which);
        n.initiate(0, 10).unwrap();
        assert!(
            n.run_until(Duration::from_secs(10), |n| n.children(0).len() == 1
                && n.children(1).len() == 1),
            "{name}: {:?} {:?} {:?} {:?} {:?}",
            n.nodes[0].errors,
            n.nodes[1].errors,
            n.nodes[0].events,
            n.nodes[1].events,
            n.log
        );
        let c = n.nodes[1].ike.counters();
        assert_eq!(c.auth_failures, 1, "{name}: {c:?}");
        assert!(n.nodes[1].errors.contains(&IkeError::AuthenticationFailed));
        assert!(n.nodes[0].ike.counters().retransmits >= 1, "{name}");
        assert_eq!(n.phase1_up(0), 1);
        let a = n.children(0)[0].clone();
        let b = n.children(1)[0].clone();
        let p = ipv4_udp(
            Ipv4Addr::new(10, 1, 1, 1),
            Ipv4Addr::new(10, 2, 2, 2),
            b"ok",
        );
        esp_one_way(&a, &b, &p, None, &mut Rng(1));
    }
}

/// Captures the initiator's MM1 (dropping it).
fn capture_mm1() -> Vec<u8> {
    let (a, b) = cfgs(
        pol(),
        pol(),
        b"k",
        b"k",
        aes_sha1(),
        aes_sha1(),
        ExchangeMode::Main,
    );
    let mut n = Net::pair(47, a, b);
    let got: Rc<RefCell<Vec<u8>>> = Rc::default();
    let g2 = got.clone();
    n.tamper = Some(Box::new(move |_, _, d| {
        if g2.borrow().is_empty() {
            *g2.borrow_mut() = d.clone();
        }
        false
    }));
    n.initiate(0, 10).unwrap();
    got.take()
}

/// Feeds `data` to a fresh responder; returns its result and the notify it sent.
fn feed(data: &[u8]) -> (Result<(), IkeError>, Option<u16>, usize) {
    let (_, b) = cfgs(
        pol(),
        pol(),
        b"k",
        b"k",
        aes_sha1(),
        aes_sha1(),
        ExchangeMode::Main,
    );
    let mut n = Net::new(48);
    n.add(b, 1);
    let now = n.now;
    let node = &mut n.nodes[0];
    let from = SocketAddr::new(v4(A), 500);
    let r = node
        .ike
        .handle_datagram(now, &mut node.rng, from, SocketAddr::new(v4(B), 500), data);
    let mut buf = [0u8; 2048];
    let sent = node.ike.poll_transmit(now, &mut buf).and_then(|t| {
        assert_eq!(t.dst, from);
        let h = Header::new_checked(&buf[..t.len]).unwrap();
        if h.exchange_type() != exchange_type::INFORMATIONAL {
            return None; // MM2
        }
        let p = h.payloads().next().unwrap().unwrap();
        match PayloadRepr::from_raw(&p).unwrap() {
            PayloadRepr::Notify(x) => Some(x.notify_type),
            other => panic!("{other:?}"),
        }
    });
    (r, sent, node.ike.isakmp_status().count())
}

#[test]
fn malformed_and_unknown_payloads() {
    let mm1 = capture_mm1();
    assert_eq!(mm1[16], 1, "MM1 starts with SA");
    // Sanity: the captured MM1 is accepted.
    let (r, sent, sas) = feed(&mm1);
    assert_eq!((r, sent, sas), (Ok(()), None, 1));

    // SA payload length runs past the datagram.
    let mut m = mm1.clone();
    let l = u16::from_be_bytes([m[30], m[31]]) + 100;
    m[30..32].copy_from_slice(&l.to_be_bytes());
    let (r, sent, sas) = feed(&m);
    assert_eq!(r, Err(IkeError::Malformed(IkeWireError::BadLength)));
    assert_eq!((sent, sas), (Some(notify::PAYLOAD_MALFORMED), 0));

    // Payload length below the generic header.
    let mut m = mm1.clone();
    m[30..32].copy_from_slice(&3u16.to_be_bytes());
    let (r, sent, sas) = feed(&m);
    assert!(matches!(r, Err(IkeError::Malformed(_))));
    assert_eq!((sent, sas), (Some(notify::PAYLOAD_MALFORMED), 0));

    // Unknown first payload type.
    let mut m = mm1.clone();
    m[16] = 99;
    let (r, sent, sas) = feed(&m);
    assert_eq!(
        r,
        Err(IkeError::Malformed(IkeWireError::InvalidPayloadType(99)))
    );
    assert_eq!((sent, sas), (Some(notify::INVALID_PAYLOAD_TYPE), 0));

    // Truncated datagrams, a header length beyond the datagram, a wrong major version:
    // dropped, nothing sent, no state.
    for cut in [0, 1, 27, 28, 40, mm1.len() - 1] {
        let (r, sent, sas) = feed(&mm1[..cut]);
        assert!(matches!(r, Err(IkeError::Malformed(_))), "{cut}: {r:?}");
        assert_eq!((sent, sas), (None, 0), "{cut}");
    }
    let mut m = mm1.clone();
    m[17] = 0x20;
    let (r, _, sas) = feed(&m);
    assert_eq!(
        (r, sas),
        (
            Err(IkeError::Malformed(IkeWireError::InvalidMajorVersion)),
            0
        )
    );
    // Every truncation and every single-byte corruption of the header and first
    // payload header: never a panic, never a leaked SA on failure.
    for i in 0..40.min(mm1.len()) {
        for v in [0u8, 0xff, 0x80] {
            let mut m = mm1.clone();
            m[i] = v;
            let (r, _, sas) = feed(&m);
            if r.is_err() {
                assert_eq!(sas, 0, "byte {i} = {v}");
            }
        }
    }
}

#[test]
fn replayed_messages_are_answered_from_the_stored_reply_or_ignored() {
    let (a, b) = cfgs(
        pol(),
        pol(),
        b"k",
        b"k",
        aes_sha1(),
        aes_sha1(),
        ExchangeMode::Main,
    );
    let mut n = Net::pair(49, a, b);
    let seen: Seen = Rc::default();
    let s2 = seen.clone();
    n.tamper = Some(Box::new(move |f, t, d| {
        s2.borrow_mut().push((f, t, d.clone()));
        true
    }));
    n.initiate(0, 10).unwrap();
    assert!(n.run_until(Duration::from_secs(10), |n| n.children(1).len() == 1));
    n.run_for(Duration::from_secs(1));
    let msgs = seen.borrow().clone();
    assert_eq!(msgs.len(), 9);

    let (f, t, mm5) = msgs[4].clone();
    let (_, _, qm1) = msgs[6].clone();
    let replay = |n: &mut Net, data: &[u8]| {
        let now = n.now;
        let node = &mut n.nodes[1];
        node.ike.handle_datagram(now, &mut node.rng, f, t, data)
    };
    let sent_before = n.log.len();
    // MM5 again: B answers with its stored MM6; A ignores the repeated MM6 (no loop).
    assert_eq!(replay(&mut n, &mm5), Ok(()));
    // QM1 again while the finished exchange lingers: recognised and ignored.
    assert_eq!(replay(&mut n, &qm1), Ok(()));
    n.run_for(Duration::from_secs(2));
    assert_eq!(n.log.len(), sent_before + 1, "MM6 once, nothing else");
    assert_eq!(n.nodes[1].ike.counters().duplicates, 2);
    assert_eq!(
        n.nodes[0].ike.counters().duplicates,
        1,
        "{:?} {:?}",
        n.nodes[0].errors,
        n.nodes[0].ike.counters()
    );
    // Later, the QM1 of a finished exchange is refused (message ID already used).
    n.run_for(Duration::from_secs(60));
    assert_eq!(replay(&mut n, &qm1), Err(IkeError::UnexpectedMessage));
    // No new SAs from any of it.
    assert_eq!(n.children(1).len(), 1);
    assert_eq!(n.phase1_up(1), 1);
    assert_eq!(n.nodes[1].ike.ipsec_status().count(), 1);
}

#[test]
fn unauthenticated_delete_and_notifies_are_ignored() {
    let (a, b) = cfgs(
        pol(),
        pol(),
        b"k",
        b"k",
        aes_sha1(),
        aes_sha1(),
        ExchangeMode::Main,
    );
    let mut n = Net::pair(50, a, b);
    n.initiate(0, 10).unwrap();
    assert!(n.run_until(Duration::from_secs(10), |n| n.children(1).len() == 1));
    let st = n.nodes[1].ike.isakmp_status().next().unwrap();
    let spi = n.children(1)[0].outbound.spi.to_be_bytes();
    let mut ck = [0u8; 16];
    ck[..8].copy_from_slice(&st.initiator_cookie);
    ck[8..].copy_from_slice(&st.responder_cookie);
    let mut buf = [0u8; 512];
    let hdr = HeaderRepr {
        initiator_cookie: st.initiator_cookie,
        responder_cookie: st.responder_cookie,
        next_payload: 0,
        exchange_type: exchange_type::INFORMATIONAL,
        flags: 0,
        message_id: 0x1234,
        length: 0,
    };
    let mut bld = MessageBuilder::new(&mut buf, &hdr).unwrap();
    bld.push(&PayloadRepr::Delete(DeleteRepr::new(
        protocol_id::ISAKMP,
        16,
        &ck,
    )))
    .unwrap();
    bld.push(&PayloadRepr::Delete(DeleteRepr::new(
        protocol_id::ESP,
        4,
        &spi,
    )))
    .unwrap();
    bld.push(&PayloadRepr::Notify(NotifyRepr::isakmp(
        notify::INITIAL_CONTACT,
        &ck,
        &[],
    )))
    .unwrap();
    bld.push(&PayloadRepr::Notify(NotifyRepr::isakmp(
        notify::AUTHENTICATION_FAILED,
        &[],
        &[],
    )))
    .unwrap();
    let len = bld.finish().unwrap();
    let now = n.now;
    let node = &mut n.nodes[1];
    let r = node.ike.handle_datagram(
        now,
        &mut node.rng,
        SocketAddr::new(v4(A), 500),
        SocketAddr::new(v4(B), 500),
        &buf[..len],
    );
    assert_eq!(r, Ok(()));
    assert_eq!(node.ike.counters().unauthenticated_notifies, 1);
    n.run_for(Duration::from_secs(1));
    assert_eq!(n.nodes[1].ike.isakmp_status().count(), 1);
    assert_eq!(n.nodes[1].ike.ipsec_status().count(), 1);
    assert_eq!(
        n.count(1, |e| matches!(
            e,
            IkeEvent::ChildSaDeleted { .. } | IkeEvent::Phase1Deleted { .. }
        )),
        0
    );
}

#[test]
fn half_open_flood_is_bounded_and_drains() {
    let mm1 = capture_mm1();
    let (_, b) = cfgs(
        pol(),
        pol(),
        b"k",
        b"k",
        aes_sha1(),
        aes_sha1(),
        ExchangeMode::Main,
    );
    let mut n = Net::new(51);
    n.add(b, 1);
    let now = n.now;
    let to = SocketAddr::new(v4(B), 500);
    let mut ok = 0;
    let mut refused = 0;
    // 12 MM1s from one address, then from 12 addresses: 4 per peer, 8 in total.
    for (k, src) in (0..12u8)
        .map(|k| (k, Ipv4Addr::new(192, 0, 2, 1)))
        .chain((0..12u8).map(|k| (k + 100, Ipv4Addr::new(192, 0, 2, 10 + k))))
    {
        let mut m = mm1.clone();
        m[0] = k;
        let node = &mut n.nodes[0];
        match node
            .ike
            .handle_datagram(now, &mut node.rng, SocketAddr::new(v4(src), 500), to, &m)
        {
            Ok(()) => ok += 1,
            Err(IkeError::HalfOpenLimit) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!((ok, refused), (8, 16));
    assert_eq!(n.nodes[0].ike.counters().half_open_refused, 16);
    assert_eq!(n.nodes[0].ike.isakmp_status().count(), 8);
    assert!(
        n.nodes[0]
            .ike
            .isakmp_status()
            .all(|s| s.state == IsakmpState::MmSaSetup)
    );
    // They expire (the initiators never come back) and capacity returns.
    n.run_for(Duration::from_secs(31));
    assert_eq!(n.nodes[0].ike.isakmp_status().count(), 0);
    assert_eq!(
        n.count(0, |e| matches!(
            e,
            IkeEvent::NegotiationFailed {
                reason: FailReason::Timeout,
                ..
            }
        )),
        8
    );
    let node = &mut n.nodes[0];
    let now = n.now;
    assert_eq!(
        node.ike
            .handle_datagram(now, &mut node.rng, SocketAddr::new(v4(A), 500), to, &mm1),
        Ok(())
    );
}
