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
