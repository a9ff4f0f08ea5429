//! IKEv1 handshakes per second in process (Main Mode + Quick Mode, PSK, no PFS) against
//! the Diffie-Hellman work they must do: 2 key generations and 2 shared secrets.
//!
//! The pattern of `ipsec-ike/tests/sim`: an initiator and a responder `Ike` on a virtual
//! clock that never moves (no loss, so no timer fires), datagrams handed from one
//! `poll_transmit` straight to the other's `handle_datagram`.

use std::cell::RefCell;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use hal_traits::{CipherAlg, DhGroup, DiffieHellman, HashAlg, MAX_DH_LEN, MacAlg};
use ipsec_core::Instant;
use ipsec_core::esp::{Encryption, Mode, Transform};
use ipsec_core::spd::{AddrRange, Selector};
use ipsec_ike::v1::{
    CryptoMapEntry, ExchangeMode, Ike, IkeConfig, IkeEvent, IsakmpPolicy, PresharedKey,
    TransformSet,
};
use ipsec_soft_crypto::{SoftCrypto, SoftDh};

use crate::timing::{Chunked, Plan, batched, fixed, interleave};
use crate::util::{LOCAL, REMOTE, Rng};

/// What the bench instantiates: room for a few IKE SAs and child records.
pub type BenchIke = Ike<SoftCrypto, 4, 8>;

const NOW: Instant = Instant::from_secs(1000);

fn net(a: [u8; 4]) -> AddrRange {
    AddrRange::from_prefix(IpAddr::V4(Ipv4Addr::from(a)), 16).expect("prefix")
}

/// One side's configuration: Main Mode, AES-128/SHA-1/`group` phase 1 with a PSK, one
/// crypto map entry (tunnel mode, AES-128-CBC + HMAC-SHA1-96, no PFS).
pub fn config(local: Ipv4Addr, peer: Ipv4Addr, group: DhGroup, initiator: bool) -> IkeConfig {
    let mut c = IkeConfig::new(IpAddr::V4(local));
    c.add_policy(IsakmpPolicy::new(
        10,
        CipherAlg::Aes128Cbc,
        HashAlg::Sha1,
        group,
    ))
    .expect("policy");
    c.add_key(
        PresharedKey::address(IpAddr::V4(Ipv4Addr::UNSPECIFIED), b"benchmark-secret").expect("psk"),
    )
    .expect("key");
    let (l, r) = if initiator {
        (net([10, 1, 0, 0]), net([10, 2, 0, 0]))
    } else {
        (net([10, 2, 0, 0]), net([10, 1, 0, 0]))
    };
    let mut e = CryptoMapEntry::new(10, Selector::new(l, r).expect("selector"));
    e.add_peer(IpAddr::V4(peer)).expect("peer");
    let ts = Transform {
        enc: Encryption::Cbc(CipherAlg::Aes128Cbc),
        auth: Some(MacAlg::HmacSha1_96),
    };
    e.add_transform_set(TransformSet::new("T", ts, Mode::Tunnel).expect("ts"))
        .expect("ts");
    e.pfs = None;
    e.exchange = ExchangeMode::Main;
    c.add_crypto_map(e).expect("map");
    c
}

pub struct Node {
    ike: Box<BenchIke>,
    rng: Rng,
    up: bool,
}

impl Node {
    fn new(cfg: IkeConfig, seed: u64) -> Self {
        Self {
            ike: Box::new(BenchIke::new(cfg)),
            rng: Rng(seed),
            up: false,
        }
    }
}

/// Runs one handshake to completion (both sides report the child SA pair). Returns the
/// number of datagrams exchanged.
pub fn handshake(nodes: &mut [Node; 2], buf: &mut [u8]) -> usize {
    {
        let n = &mut nodes[0];
        n.ike.initiate(NOW, &mut n.rng, 10).expect("initiate");
    }
    let mut msgs = 0;
    loop {
        let mut progressed = false;
        for i in 0..2 {
            let (a, b) = nodes.split_at_mut(1);
            let (me, other) = if i == 0 {
                (&mut a[0], &mut b[0])
            } else {
                (&mut b[0], &mut a[0])
            };
            while let Some(t) = me.ike.poll_transmit(NOW, buf) {
                msgs += 1;
                progressed = true;
                other
                    .ike
                    .handle_datagram(NOW, &mut other.rng, t.src, t.dst, &buf[..t.len])
                    .expect("handle_datagram");
            }
            while let Some(e) = me.ike.poll_event() {
                match e {
                    IkeEvent::ChildSaEstablished(c) => {
                        black_box(c);
                        me.up = true;
                    }
                    IkeEvent::NegotiationFailed { .. } => panic!("negotiation failed: {e:?}"),
                    _ => {}
                }
            }
        }
        if nodes[0].up && nodes[1].up {
            return msgs;
        }
        assert!(progressed, "handshake stalled");
    }
}

pub fn fresh_pair(group: DhGroup, seed: u64) -> [Node; 2] {
    [
        Node::new(config(LOCAL, REMOTE, group, true), seed),
        Node::new(config(REMOTE, LOCAL, group, false), seed ^ 0xb),
    ]
}

/// The DH work of one handshake: each side generates a key pair and computes the shared
/// secret from the other's public value.
fn dh_pair(group: DhGroup, rng: &mut Rng) {
    let a = SoftDh::generate(group, rng).expect("generate");
    let b = SoftDh::generate(group, rng).expect("generate");
    let (mut pa, mut pb) = ([0u8; MAX_DH_LEN], [0u8; MAX_DH_LEN]);
    let la = a.public_key(&mut pa).expect("public");
    let lb = b.public_key(&mut pb).expect("public");
    let mut s1 = [0u8; MAX_DH_LEN];
    let mut s2 = [0u8; MAX_DH_LEN];
    a.shared_secret(&pb[..lb], &mut s1).expect("shared");
    b.shared_secret(&pa[..la], &mut s2).expect("shared");
    assert_eq!(s1, s2);
    black_box((s1, s2));
}

pub fn run(plan: Plan) {
    println!("\n## 2. IKEv1 handshakes, one core, in process\n");
    println!(
        "Main Mode (PSK, AES-128-CBC/SHA-1, NAT-D payloads) + Quick Mode (AES-128-CBC/HMAC-SHA1-96 \
         tunnel, no PFS) between two `Ike<SoftCrypto, 4, 8>` in one thread, datagrams passed \
         directly; each handshake starts from freshly built nodes (building them is not \
         timed). DH only = 2 `SoftDh::generate` + 2 `shared_secret` (the DH work of one \
         handshake). Median of {} runs, thread CPU time.\n",
        plan.reps
    );
    println!(
        "| DH group | handshakes/s | ms per handshake | DH only, ms | DH share of the handshake | everything else, ms | datagrams |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    // Handshakes are milliseconds each: give each run more time than the ESP runs.
    let budget = plan.budget * 4;
    for group in [
        DhGroup::Modp768,
        DhGroup::Modp1024,
        DhGroup::Modp1536,
        DhGroup::Modp2048,
    ] {
        let mut seed = 1u64;
        let state = RefCell::new((fresh_pair(group, seed), vec![0u8; 4096], 0usize));
        let mut rng = Rng(42);
        let mut ms: [Chunked<'_>; 2] = [
            batched(
                || {
                    seed += 1;
                    state.borrow_mut().0 = fresh_pair(group, seed);
                },
                || {
                    let mut g = state.borrow_mut();
                    let (nodes, buf, msgs) = &mut *g;
                    *msgs = handshake(nodes, buf);
                    1
                },
            ),
            fixed(|| dh_pair(group, &mut rng)),
        ];
        let p = interleave(plan.reps, budget, &mut ms);
        let (hs, dh) = (p.ns(0), p.ns(1));
        let share = p.ratio(1, 0);
        println!(
            "| {} (MODP-{}) | {:.0} | {:.2} | {:.2} | {:.0} % | {:.2} | {} |",
            group.number(),
            group.len() * 8,
            1e9 / hs,
            hs / 1e6,
            dh / 1e6,
            share * 100.0,
            (hs - dh) / 1e6,
            state.borrow().2,
        );
    }
}
