//! Unit tests that need the SA internals: messages re-encrypted with the negotiated keys.
#![allow(clippy::cast_possible_truncation)]

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::vec::Vec;

use hal_traits::{CipherAlg, CryptoError, DhGroup, HashAlg, SecureRng};
use ipsec_core::esp::{Encryption, Mode, Transform};
use ipsec_core::spd::{AddrRange, Selector};
use ipsec_core::{Duration, Instant};
use ipsec_soft_crypto::SoftCrypto;

use super::keys::phase2_iv;
use super::msg::{decrypt, encrypt};
use super::*;
use crate::wire::{Header, HeaderRepr, pad_payload_area};

struct Rng(u64);

impl SecureRng for Rng {
    fn fill_bytes(&mut self, d: &mut [u8]) -> Result<(), CryptoError> {
        for b in d {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            *b = (self.0 >> 33) as u8;
        }
        Ok(())
    }
}

type T = Ike<SoftCrypto, 2, 4>;

const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

fn cfg(local: Ipv4Addr, peer: Ipv4Addr, ln: [u8; 2], rn: [u8; 2]) -> IkeConfig {
    let mut c = IkeConfig::new(IpAddr::V4(local));
    c.add_policy(IsakmpPolicy::new(
        1,
        CipherAlg::Aes128Cbc,
        HashAlg::Sha1,
        DhGroup::Modp768,
    ))
    .unwrap();
    c.add_key(PresharedKey::address(IpAddr::V4(peer), b"k").unwrap())
        .unwrap();
    let net = |o: [u8; 2]| {
        AddrRange::from_prefix(IpAddr::V4(Ipv4Addr::new(o[0], o[1], 0, 0)), 16).unwrap()
    };
    let mut e = CryptoMapEntry::new(10, Selector::new(net(ln), net(rn)).unwrap());
    e.add_peer(IpAddr::V4(peer)).unwrap();
    let t = Transform {
        enc: Encryption::Cbc(CipherAlg::Aes128Cbc),
        auth: Some(hal_traits::MacAlg::HmacSha1_96),
    };
    e.add_transform_set(TransformSet::new("T", t, Mode::Tunnel).unwrap())
        .unwrap();
    c.add_crypto_map(e).unwrap();
    c
}

fn sock(a: Ipv4Addr) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(a), 500)
}

/// Exchanges datagrams between the two until quiet; `hook` may rewrite each one
/// (a, b: which side sent it).
fn settle(
    a: &mut T,
    b: &mut T,
    rng: &mut Rng,
    now: Instant,
    mut hook: impl FnMut(bool, &mut Vec<u8>, &mut T),
) {
    let mut buf = [0u8; 4096];
    for _ in 0..50 {
        let mut moved = false;
        while let Some(t) = a.poll_transmit(now, &mut buf) {
            let mut d = buf[..t.len].to_vec();
            hook(true, &mut d, a);
            let _ = b.handle_datagram(now, rng, t.src, t.dst, &d);
            moved = true;
        }
        while let Some(t) = b.poll_transmit(now, &mut buf) {
            let mut d = buf[..t.len].to_vec();
            hook(false, &mut d, b);
            let _ = a.handle_datagram(now, rng, t.src, t.dst, &d);
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

fn events(x: &mut T) -> Vec<IkeEvent> {
    core::iter::from_fn(|| x.poll_event()).collect()
}

/// Re-encrypts `d` (a Quick Mode message of SA `sa`) after letting `edit` change the
/// plaintext payload area; HASH(1) is recomputed over the new payloads.
fn rewrite_qm1(owner: &T, d: &mut Vec<u8>, edit: impl FnOnce(&mut Vec<u8>)) {
    let h = HeaderRepr::parse(&Header::new_checked(&d[..]).unwrap()).unwrap();
    let sa = owner.sas.iter().flatten().next().unwrap();
    let crypto = sa.crypto.as_ref().unwrap();
    let iv = phase2_iv::<ipsec_soft_crypto::SoftPrf>(
        crypto.keys.hash_alg(),
        sa.last_block.unwrap().as_slice(),
        h.message_id,
    )
    .unwrap();
    let mut rx = [0u8; 2048];
    let (pt, _) = decrypt(&crypto.cbc().unwrap(), &iv, d, &mut rx).unwrap();
    let end = crate::wire::Payloads::new(h.next_payload, pt)
        .chain_end()
        .unwrap();
    let mut area = pt[..end].to_vec();
    edit(&mut area);
    let hash_len = crypto.keys.hash_alg().output_len();
    let digest = crypto
        .keys
        .quick_hash1(h.message_id, &area[4 + hash_len..])
        .unwrap();
    area[4..4 + hash_len].copy_from_slice(digest.as_slice());
    let used = area.len();
    area.resize(used + 16, 0);
    let padded = pad_payload_area(&mut area, used, crypto.block).unwrap();
    area.truncate(padded);
    let mut out = d[..28].to_vec();
    out.extend_from_slice(&area);
    let len = out.len();
    out[24..28].copy_from_slice(&(len as u32).to_be_bytes());
    encrypt(&crypto.cbc().unwrap(), &iv, &mut out, len).unwrap();
    *d = out;
}

#[test]
fn authenticated_quick_mode_with_an_unknown_payload_gets_invalid_payload_type() {
    let mut a = T::new(cfg(A, B, [10, 1], [10, 2]));
    let mut b = T::new(cfg(B, A, [10, 2], [10, 1]));
    let mut rng = Rng(5);
    let now = Instant::from_secs(10);
    a.initiate(now, &mut rng, 10).unwrap();
    settle(&mut a, &mut b, &mut rng, now, |from_a, d, owner| {
        // QM1: append a payload of unknown type 99 after the last ID.
        if from_a && d[18] == crate::wire::exchange_type::QUICK_MODE && d[19] & 1 == 1 {
            rewrite_qm1(owner, d, |area| {
                // Walk to the last payload and link it to the new one.
                let mut off = 0;
                loop {
                    let len = usize::from(u16::from_be_bytes([area[off + 2], area[off + 3]]));
                    if area[off] == 0 {
                        area[off] = 99;
                        break;
                    }
                    off += len;
                }
                area.extend_from_slice(&[0, 0, 0, 8, 1, 2, 3, 4]);
            });
        }
    });
    assert_eq!(b.counters().notifies_sent, 1);
    assert_eq!(b.counters().auth_failures, 0, "HASH(1) verified first");
    let ea = events(&mut a);
    assert!(
        ea.iter().any(|e| matches!(
            e,
            IkeEvent::NegotiationFailed {
                crypto_map: Some(10),
                reason: FailReason::InvalidPayload,
                ..
            }
        )),
        "{ea:?}"
    );
    assert_eq!(a.ipsec_status().count(), 0);
    assert_eq!(b.ipsec_status().count(), 0);
    // Nothing else broke: a clean Quick Mode follows.
    let later = now + Duration::from_secs(1);
    a.initiate(later, &mut rng, 10).unwrap();
    settle(&mut a, &mut b, &mut rng, later, |_, _, _| {});
    assert_eq!(a.ipsec_status().count(), 1);
    assert_eq!(b.ipsec_status().count(), 1);
    let _ = sock(A);
}

// ------------------------------------------------------------ HA export/import --

/// `a` (the peer) and `b` (the active node) after MM + QM; `c` is the standby node with
/// b's IKE SA and child imported. Returns (a, c, a's conn id, c's conn id, now).
fn failed_over(rng: &mut Rng) -> (T, T, u32, u32, Instant) {
    let mut a = T::new(cfg(A, B, [10, 1], [10, 2]));
    let mut b = T::new(cfg(B, A, [10, 2], [10, 1]));
    let now = Instant::from_secs(10);
    a.initiate(now, rng, 10).unwrap();
    settle(&mut a, &mut b, rng, now, |_, _, _| {});
    assert_eq!(b.ipsec_status().count(), 1);
    let _ = events(&mut a);
    let _ = events(&mut b);
    let b_conn = b.isakmp_status().next().unwrap().conn_id;
    let mut buf = [0u8; ha::MAX_EXPORT_LEN];
    let later = now + Duration::from_secs(5);
    let n = b.export_sa(later, b_conn, &mut buf).unwrap();
    assert!(n <= ipsec_core::ha::record::MAX_IKE_BODY);
    // b dies; c takes over.
    let mut c = T::new(cfg(B, A, [10, 2], [10, 1]));
    let c_conn = c.import_sa(later, &buf[..n]).unwrap();
    assert_eq!(c_conn, b_conn);
    let child = &b.children[0];
    let sa = b.sas.iter().flatten().next().unwrap();
    let mut ck = [0u8; 16];
    ck[..8].copy_from_slice(&sa.cky_i);
    ck[8..].copy_from_slice(&sa.cky_r);
    let imp = ChildImport {
        crypto_map: child.crypto_map,
        ike_cookies: ck,
        peer: child.peer.ip(),
        inbound: child.inbound.clone(),
        outbound: child.outbound.clone(),
        lifetime_left: Some(Duration::from_secs(3000)),
        pfs: None,
    };
    assert_eq!(c.import_child(later, &imp).unwrap(), c_conn);
    let st = c.isakmp_status().next().unwrap();
    assert_eq!(st.state, IsakmpState::QmIdle);
    assert_eq!(st.remote, sock(A));
    assert_eq!(st.local, sock(B));
    let bs = b.isakmp_status().next().unwrap();
    assert_eq!(st.role, bs.role);
    assert_eq!(st.encryption, bs.encryption);
    assert_eq!(c.ipsec_status().count(), 1);
    // Import sends nothing and emits nothing.
    assert!(c.poll_transmit(later, &mut [0u8; 2048]).is_none());
    assert!(c.poll_event().is_none());
    let a_conn = a.isakmp_status().next().unwrap().conn_id;
    (a, c, a_conn, c_conn, later)
}

#[test]
fn imported_sa_answers_dpd_and_probes() {
    let mut rng = Rng(11);
    let (mut a, mut c, a_conn, c_conn, now) = failed_over(&mut rng);
    a.dpd_probe(now, &mut rng, a_conn).unwrap();
    settle(&mut a, &mut c, &mut rng, now, |_, _, _| {});
    assert_eq!(c.counters().dpd_answered, 1);
    assert_eq!(a.counters().dpd_acks, 1);
    c.dpd_probe(now, &mut rng, c_conn).unwrap();
    settle(&mut a, &mut c, &mut rng, now, |_, _, _| {});
    assert_eq!(a.counters().dpd_answered, 1);
    assert_eq!(c.counters().dpd_acks, 1);
    assert_eq!(a.counters().auth_failures + c.counters().auth_failures, 0);
}

#[test]
fn imported_sa_runs_quick_mode_both_ways() {
    let mut rng = Rng(12);
    let (mut a, mut c, _, _, now) = failed_over(&mut rng);
    // The peer rekeys its child.
    let spi = a.children[0].inbound.spi;
    a.rekey_child(now, &mut rng, spi).unwrap();
    settle(&mut a, &mut c, &mut rng, now, |_, _, _| {});
    assert_eq!(a.ipsec_status().count(), 2);
    assert_eq!(c.ipsec_status().count(), 2);
    let ev = events(&mut c);
    assert!(
        ev.iter()
            .any(|e| matches!(e, IkeEvent::ChildSaEstablished(_))),
        "{ev:?}"
    );
    // The new node initiates.
    let later = now + Duration::from_secs(1);
    c.initiate(later, &mut rng, 10).unwrap();
    settle(&mut a, &mut c, &mut rng, later, |_, _, _| {});
    assert_eq!(a.ipsec_status().count(), 3);
    assert_eq!(c.ipsec_status().count(), 3);
    // No new phase 1 anywhere.
    assert_eq!(a.isakmp_status().count(), 1);
    assert_eq!(c.isakmp_status().count(), 1);
    assert_eq!(a.counters().auth_failures + c.counters().auth_failures, 0);
}

#[test]
fn imported_sa_processes_and_sends_delete() {
    let mut rng = Rng(13);
    let (mut a, mut c, _, _, now) = failed_over(&mut rng);
    let _ = events(&mut a);
    // The peer deletes its child: c removes the imported record.
    let spi = a.children[0].inbound.spi;
    a.delete_child(now, &mut rng, spi).unwrap();
    settle(&mut a, &mut c, &mut rng, now, |_, _, _| {});
    let ev = events(&mut c);
    assert!(
        ev.iter().any(|e| matches!(
            e,
            IkeEvent::ChildSaDeleted {
                reason: DeleteReason::PeerDelete,
                ..
            }
        )),
        "{ev:?}"
    );
    assert_eq!(c.ipsec_status().count(), 0);
    // A new pair, deleted by the new node this time.
    a.initiate(now, &mut rng, 10).unwrap();
    settle(&mut a, &mut c, &mut rng, now, |_, _, _| {});
    let _ = events(&mut a);
    let spi = c.children[0].inbound.spi;
    c.delete_child(now, &mut rng, spi).unwrap();
    settle(&mut a, &mut c, &mut rng, now, |_, _, _| {});
    let ev = events(&mut a);
    assert!(
        ev.iter().any(|e| matches!(
            e,
            IkeEvent::ChildSaDeleted {
                reason: DeleteReason::PeerDelete,
                ..
            }
        )),
        "{ev:?}"
    );
    assert_eq!(a.ipsec_status().count(), 0);
    // And the IKE SA itself.
    let c_conn = c.isakmp_status().next().unwrap().conn_id;
    c.delete_ike_sa(now, &mut rng, c_conn).unwrap();
    settle(&mut a, &mut c, &mut rng, now, |_, _, _| {});
    assert_eq!(a.isakmp_status().count(), 0);
}

#[test]
fn malformed_imports_are_rejected() {
    let mut rng = Rng(14);
    let mut a = T::new(cfg(A, B, [10, 1], [10, 2]));
    let mut b = T::new(cfg(B, A, [10, 2], [10, 1]));
    let now = Instant::from_secs(10);
    a.initiate(now, &mut rng, 10).unwrap();
    settle(&mut a, &mut b, &mut rng, now, |_, _, _| {});
    let conn = a.isakmp_status().next().unwrap().conn_id;
    let mut buf = [0u8; ha::MAX_EXPORT_LEN];
    // Too short an output buffer.
    assert_eq!(
        a.export_sa(now, conn, &mut buf[..40]),
        Err(IkeError::TooLarge)
    );
    assert_eq!(a.export_sa(now, 999, &mut buf), Err(IkeError::UnknownSa));
    let n = a.export_sa(now, conn, &mut buf).unwrap();
    let data = &buf[..n];
    let mut c = T::new(cfg(A, B, [10, 1], [10, 2]));
    // Every truncation.
    for cut in 0..n {
        assert_eq!(
            c.import_sa(now, &data[..cut]),
            Err(IkeError::InvalidImport),
            "{cut}"
        );
    }
    // Trailing data.
    let mut long = data.to_vec();
    long.push(0);
    assert!(c.import_sa(now, &long).is_err());
    // Wrong magic, version, length.
    for at in [0usize, 4, 5, 6] {
        let mut d = data.to_vec();
        d[at] ^= 0x40;
        assert_eq!(c.import_sa(now, &d), Err(IkeError::InvalidImport), "{at}");
    }
    // Every single-byte corruption: never a panic, and nothing half-imported.
    for at in 0..n {
        for x in [0x01u8, 0x80, 0xff] {
            let mut d = data.to_vec();
            d[at] ^= x;
            let mut fresh = T::new(cfg(A, B, [10, 1], [10, 2]));
            if fresh.import_sa(now, &d).is_err() {
                assert_eq!(fresh.isakmp_status().count(), 0);
            }
        }
    }
    // Untouched: imports (twice: the second replaces the first).
    let id = c.import_sa(now, data).unwrap();
    assert_eq!(c.import_sa(now, data).unwrap(), id);
    assert_eq!(c.isakmp_status().count(), 1);
    // Not established: refused.
    let mut d = T::new(cfg(A, B, [10, 1], [10, 2]));
    d.initiate(now, &mut rng, 10).unwrap();
    let half = d.isakmp_status().next().unwrap().conn_id;
    assert_eq!(
        d.export_sa(now, half, &mut buf),
        Err(IkeError::NotEstablished)
    );
}

#[test]
fn responder_prefers_a_static_entry_to_a_dynamic_one_numbered_before_it() {
    let mut rng = Rng(7);
    let now = Instant::from_millis(1_000);
    let mut a = T::new(cfg(A, B, [10, 1], [10, 2]));
    let mut bc = cfg(B, A, [10, 2], [10, 1]);
    // A catch-all dynamic entry with a lower seq than the matching static entry 10.
    let mut d = CryptoMapEntry::new(
        5,
        Selector::new(AddrRange::any_v4(), AddrRange::any_v4()).unwrap(),
    );
    d.dynamic = true;
    d.add_transform_set(bc.crypto_maps[0].transform_sets[0].clone())
        .unwrap();
    bc.add_crypto_map(d).unwrap();
    assert_eq!(bc.crypto_maps[0].seq, 5);
    let mut b = T::new(bc);
    a.initiate(now, &mut rng, 10).unwrap();
    settle(&mut a, &mut b, &mut rng, now, |_, _, _| {});
    let maps: Vec<u32> = events(&mut b)
        .into_iter()
        .filter_map(|e| match e {
            IkeEvent::ChildSaEstablished(c) => Some(c.crypto_map),
            _ => None,
        })
        .collect();
    assert_eq!(maps, [10]);
}
