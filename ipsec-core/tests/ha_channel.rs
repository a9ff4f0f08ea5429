//! The HA sync channel: handshake, confidentiality, integrity, anti-replay, truncation,
//! retransmission after loss, in-order delivery, heartbeats and peer loss, for both
//! suites.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    missing_docs
)]

use hal_traits::{CryptoError, SecretBytes, SecureRng};
use ipsec_core::ha::channel::{
    self, ChannelConfig, ChannelError, ChannelEvent, Received, Suite, SyncChannel,
};
use ipsec_core::{Duration, Instant};
use ipsec_soft_crypto::SoftCrypto;

struct Rng(u64);
impl SecureRng for Rng {
    fn fill_bytes(&mut self, d: &mut [u8]) -> Result<(), CryptoError> {
        for b in d {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            *b = (self.0 >> 56) as u8;
        }
        Ok(())
    }
}

type Chan = SyncChannel<SoftCrypto, 4, 512>;

fn cfg(node: u32, peer: u32, suite: Suite) -> ChannelConfig {
    ChannelConfig::new(
        node,
        peer,
        suite,
        SecretBytes::from_slice(&[0x5a; 32]).unwrap(),
    )
}

fn pair(suite: Suite) -> (Chan, Chan, Rng) {
    (
        Chan::new(cfg(1, 2, suite), Instant::ZERO).unwrap(),
        Chan::new(cfg(2, 1, suite), Instant::ZERO).unwrap(),
        Rng(42),
    )
}

/// All datagrams `from` wants to send now.
fn drain(from: &mut Chan, now: Instant, rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    let mut buf = [0u8; 512];
    while let Some(n) = from.poll_transmit(now, rng, &mut buf) {
        v.push(buf[..n].to_vec());
    }
    v
}

/// Delivers everything both ways until quiet; returns the payloads each side got.
fn settle(a: &mut Chan, b: &mut Chan, now: Instant, rng: &mut Rng) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    for _ in 0..20 {
        let mut quiet = true;
        for mut d in drain(a, now, rng) {
            quiet = false;
            if let Ok(Received::Data(p)) = b.handle_datagram(now, rng, &mut d) {
                got_b.push(p.to_vec());
            }
        }
        for mut d in drain(b, now, rng) {
            quiet = false;
            if let Ok(Received::Data(p)) = a.handle_datagram(now, rng, &mut d) {
                got_a.push(p.to_vec());
            }
        }
        if quiet {
            break;
        }
    }
    (got_a, got_b)
}

fn connected(suite: Suite) -> (Chan, Chan, Rng) {
    let (mut a, mut b, mut rng) = pair(suite);
    settle(&mut a, &mut b, Instant::ZERO, &mut rng);
    assert!(a.is_connected() && b.is_connected());
    assert!(matches!(a.poll_event(), Some(ChannelEvent::PeerUp { .. })));
    assert!(matches!(b.poll_event(), Some(ChannelEvent::PeerUp { .. })));
    (a, b, rng)
}

const SUITES: [Suite; 2] = [Suite::AesCbcHmacSha256, Suite::AesGcm];

#[test]
fn ha_data_flows_both_ways_and_is_encrypted() {
    for suite in SUITES {
        let (mut a, mut b, mut rng) = connected(suite);
        let secret = [0xA7u8; 100]; // think: ESP keys inside a record
        a.send(&secret).unwrap();
        b.send(b"from b").unwrap();
        let t = Instant::from_millis(1);
        let wire = drain(&mut a, t, &mut rng);
        assert_eq!(wire.len(), 1);
        assert!(
            !wire[0].windows(8).any(|w| w == [0xA7; 8]),
            "payload visible on the wire"
        );
        assert_eq!(wire[0].len(), a.datagram_len(100));
        let mut d = wire[0].clone();
        assert_eq!(
            b.handle_datagram(t, &mut rng, &mut d).unwrap(),
            Received::Data(&secret[..])
        );
        let (got_a, _) = settle(&mut a, &mut b, t, &mut rng);
        assert_eq!(got_a, vec![b"from b".to_vec()]);
        assert_eq!(a.unacked(), 0);
        assert_eq!(b.unacked(), 0);
    }
}

#[test]
fn ha_tampered_messages_are_refused_and_change_nothing() {
    for suite in SUITES {
        let (mut a, mut b, mut rng) = connected(suite);
        a.send(b"update record").unwrap();
        let t = Instant::from_millis(1);
        let d = drain(&mut a, t, &mut rng).remove(0);
        for i in 0..d.len() {
            for bit in [0x01u8, 0x80] {
                let mut x = d.clone();
                x[i] ^= bit;
                let r = b.handle_datagram(t, &mut rng, &mut x);
                assert!(r.is_err(), "byte {i} bit {bit:#x} accepted: {r:?}");
            }
        }
        assert!(b.counters().auth_failed > 0);
        // The genuine message is still accepted afterwards.
        let mut x = d.clone();
        assert_eq!(
            b.handle_datagram(t, &mut rng, &mut x).unwrap(),
            Received::Data(&b"update record"[..])
        );
    }
}

#[test]
fn ha_replayed_and_truncated_messages_are_refused() {
    for suite in SUITES {
        let (mut a, mut b, mut rng) = connected(suite);
        a.send(b"one").unwrap();
        let t = Instant::from_millis(1);
        let d = drain(&mut a, t, &mut rng).remove(0);
        for len in 0..d.len() {
            let mut x = d[..len].to_vec();
            let e = b.handle_datagram(t, &mut rng, &mut x).unwrap_err();
            assert!(
                matches!(e, ChannelError::Truncated | ChannelError::Malformed),
                "len {len}: {e:?}"
            );
        }
        let mut longer = d.clone();
        longer.push(0);
        assert!(b.handle_datagram(t, &mut rng, &mut longer).is_err());
        let mut x = d.clone();
        assert!(matches!(
            b.handle_datagram(t, &mut rng, &mut x),
            Ok(Received::Data(_))
        ));
        let mut x = d.clone();
        assert_eq!(
            b.handle_datagram(t, &mut rng, &mut x),
            Err(ChannelError::Replayed)
        );
        assert_eq!(b.counters().replayed, 1);
        assert_eq!(b.counters().delivered, 1);
    }
}

#[test]
fn ha_lost_data_is_resent_and_delivered_in_order() {
    for suite in SUITES {
        let (mut a, mut b, mut rng) = connected(suite);
        a.send(b"first").unwrap();
        a.send(b"second").unwrap();
        let t = Instant::from_millis(10);
        let mut w = drain(&mut a, t, &mut rng);
        assert_eq!(w.len(), 2);
        // The first is lost; the second arrives out of order and is not delivered.
        assert_eq!(
            b.handle_datagram(t, &mut rng, &mut w[1]).unwrap(),
            Received::OutOfOrder
        );
        // b's duplicate ACK says "nothing yet".
        for mut d in drain(&mut b, t, &mut rng) {
            a.handle_datagram(t, &mut rng, &mut d).unwrap();
        }
        assert_eq!(a.unacked(), 2);
        // Nothing is resent before the timeout, and the deadline is exact.
        assert!(drain(&mut a, t, &mut rng).is_empty());
        let rto = t + a.config().retransmit;
        assert_eq!(a.poll_timeout(), Some(rto));
        a.handle_timeout(rto);
        let (_, got_b) = settle(&mut a, &mut b, rto, &mut rng);
        assert_eq!(got_b, vec![b"first".to_vec(), b"second".to_vec()]);
        assert_eq!(a.counters().retransmits, 2);
        assert_eq!(a.unacked(), 0);
        // A late copy of the original first message is a duplicate, not a new delivery.
        assert_eq!(
            b.handle_datagram(rto, &mut rng, &mut w[0]).unwrap(),
            Received::Duplicate
        );
    }
}

#[test]
fn ha_bounded_queue_and_sizes() {
    let (mut a, _b, _rng) = connected(Suite::AesCbcHmacSha256);
    let max = a.max_payload();
    assert!(a.datagram_len(max) <= 512);
    assert_eq!(a.send(&vec![0; max + 1]), Err(ChannelError::TooLarge));
    for _ in 0..4 {
        a.send(&[1]).unwrap();
    }
    assert_eq!(a.send(&[1]), Err(ChannelError::Full));
    let (mut c, _, _) = pair(Suite::AesGcm);
    assert_eq!(c.send(&[1]), Err(ChannelError::NoSession));
}

#[test]
fn ha_heartbeats_keep_the_session_and_silence_loses_the_peer() {
    let (mut a, mut b, mut rng) = connected(Suite::AesGcm);
    // 10 s of heartbeats.
    let mut now = Instant::ZERO;
    while now < Instant::from_secs(10) {
        now = now + Duration::from_millis(100);
        a.handle_timeout(now);
        b.handle_timeout(now);
        settle(&mut a, &mut b, now, &mut rng);
    }
    assert!(a.is_connected() && b.is_connected());
    assert!(a.counters().heartbeats_sent >= 9);
    assert_eq!(a.poll_event(), None);
    // b goes silent.
    let dead = now + a.config().dead_interval;
    assert!(a.poll_timeout().unwrap() <= dead);
    a.handle_timeout(dead);
    assert_eq!(a.poll_event(), Some(ChannelEvent::PeerLost));
    assert!(!a.is_connected());
}

#[test]
fn ha_a_restarted_peer_gets_a_new_session_and_old_messages_are_refused() {
    for suite in SUITES {
        let (mut a, mut b, mut rng) = connected(suite);
        a.send(b"old session").unwrap();
        let t = Instant::from_millis(5);
        let old = drain(&mut a, t, &mut rng).remove(0);
        let mut x = old.clone();
        assert!(matches!(
            b.handle_datagram(t, &mut rng, &mut x),
            Ok(Received::Data(_))
        ));
        // b reboots: a fresh channel with the same configuration.
        let mut b2 = Chan::new(cfg(2, 1, suite), t).unwrap();
        let (_, _) = settle(&mut a, &mut b2, t, &mut rng);
        assert!(b2.is_connected());
        assert!(matches!(a.poll_event(), Some(ChannelEvent::PeerUp { .. })));
        // The old session's message, replayed to the new b: refused.
        let mut x = old.clone();
        assert_eq!(
            b2.handle_datagram(t, &mut rng, &mut x),
            Err(ChannelError::UnknownPeer)
        );
        // A replayed handshake does not disturb the session in use.
        a.send(b"new session").unwrap();
        let (_, got) = settle(&mut a, &mut b2, t, &mut rng);
        assert_eq!(got, vec![b"new session".to_vec()]);
        drop(b);
    }
}

#[test]
fn ha_handshake_replay_and_wrong_key_are_harmless() {
    let (mut a, mut b, mut rng) = pair(Suite::AesCbcHmacSha256);
    let init = drain(&mut a, Instant::ZERO, &mut rng).remove(0);
    // A node with another key refuses the INIT.
    let mut other = ChannelConfig::new(
        2,
        1,
        Suite::AesCbcHmacSha256,
        SecretBytes::from_slice(&[1; 32]).unwrap(),
    );
    other.heartbeat = Duration::from_secs(1);
    let mut wrong = Chan::new(other, Instant::ZERO).unwrap();
    let mut x = init.clone();
    assert_eq!(
        wrong.handle_datagram(Instant::ZERO, &mut rng, &mut x),
        Err(ChannelError::AuthenticationFailed)
    );
    // The real peer answers; the session comes up.
    let mut x = init.clone();
    b.handle_datagram(Instant::ZERO, &mut rng, &mut x).unwrap();
    settle(&mut a, &mut b, Instant::ZERO, &mut rng);
    assert!(a.is_connected() && b.is_connected());
    // Replaying the INIT later makes b prepare a session nobody confirms; data on the
    // established one still flows.
    let mut x = init.clone();
    b.handle_datagram(Instant::from_millis(1), &mut rng, &mut x)
        .unwrap();
    let resp = drain(&mut b, Instant::from_millis(1), &mut rng);
    let mut r = resp[0].clone();
    // a has no INIT outstanding: the RESP is refused.
    assert_eq!(
        a.handle_datagram(Instant::from_millis(1), &mut rng, &mut r),
        Err(ChannelError::UnknownPeer)
    );
    a.send(b"still here").unwrap();
    let (_, got) = settle(&mut a, &mut b, Instant::from_millis(2), &mut rng);
    assert_eq!(got, vec![b"still here".to_vec()]);
}

#[test]
fn ha_parser_never_panics_on_garbage() {
    let mut x = 1u64;
    for len in 0..200usize {
        for _ in 0..20 {
            let mut v = vec![0u8; len];
            for b in &mut v {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(3);
                *b = (x >> 56) as u8;
            }
            if len > 4 {
                v[0] = 1;
                v[1] = (v[1] % 5) + 1;
                v[2] = (v[2] % 2) + 1;
                v[3] = 0;
            }
            let _ = channel::parse(&v);
        }
    }
}
