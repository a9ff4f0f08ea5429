//! `ha_sync_parse`: the HA sync channel's datagram parser and the sync record decoder,
//! and a Standby `HaSync` applying whatever decodes, then taking over.
//!
//! Byte 0 selects the target: even, the datagram header parser (`channel::parse`, which
//! runs before any authentication); odd, the record decoder over the rest as a message
//! body (what an authenticated peer could send), applied by a Standby node. Neither may
//! panic; a record that decodes must re-encode, and the encoding must decode again. With
//! bit 1 of byte 0 set the Standby then takes over into a data plane: with or without a
//! handover marker (record type 9), matching or not, the takeover must account for every
//! pair, and only a verified marker may install exact counters.
#![no_main]

use ipsec_core::Instant;
use ipsec_core::dataplane::Dataplane;
use ipsec_core::ha::HaRole;
use ipsec_core::ha::channel;
use ipsec_core::ha::record::{Reader, Writer};
use ipsec_core::ha::sync::{HaSync, SyncConfig, TakeoverKind};
use ipsec_core::spd::PolicyAction;
use ipsec_soft_crypto::SoftCrypto;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    if sel & 1 == 0 {
        if let Ok((h, body, tag)) = channel::parse(rest) {
            assert_eq!(
                channel::HEADER_LEN + usize::from(h.body_len) + channel::TAG_LEN,
                rest.len()
            );
            assert_eq!(body.len(), usize::from(h.body_len));
            assert_eq!(tag.len(), channel::TAG_LEN);
        }
        return;
    }
    let mut r = Reader::new(rest);
    while let Ok(Some(rec)) = r.next_record::<2>() {
        let mut buf = [0u8; 4096];
        let mut w = Writer::new(&mut buf);
        w.record(&rec).expect("a decoded record re-encodes");
        let n = w.len();
        let mut again = Reader::new(&buf[..n]);
        assert!(matches!(again.next_record::<2>(), Ok(Some(_))));
    }
    let mut standby: HaSync<4, 2, 2> =
        HaSync::new(SyncConfig::default(), HaRole::Standby, Instant::ZERO);
    let _ = standby.handle_payload(Instant::from_millis(1), rest);
    assert!(standby.pair_count() <= 4);
    if sel & 2 == 0 {
        return;
    }
    let marker = standby.handover_marker();
    let held = standby.pair_count();
    let mut dp: Dataplane<SoftCrypto, 8, 4> = Dataplane::new(PolicyAction::Discard);
    let report = standby.activate(Instant::from_millis(2), &mut dp);
    assert_eq!(report.pairs + report.failed, held);
    assert!(report.exact <= report.pairs);
    match report.kind {
        TakeoverKind::Exact => assert!(marker.is_some()),
        TakeoverKind::Unverified => assert!(marker.is_some() && report.exact == 0),
        TakeoverKind::Failover => assert!(marker.is_none() && report.exact == 0),
    }
    assert_eq!(standby.role(), HaRole::Active);
});
