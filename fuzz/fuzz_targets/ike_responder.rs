//! `ike_responder`: an IKEv1 responder (`ipsec_ike::v1::Ike`) fed arbitrary datagrams,
//! time jumps and commands, next to a loopback initiator so that real exchanges happen.
//!
//! Both nodes use `NullCrypto` (fuzz_targets/common/null_crypto.rs: identity CBC, a
//! deterministic or constant PRF, DH with public = private and shared = XOR), so that
//! encrypted messages are plaintext to the fuzzer and, in constant-PRF mode, every HASH
//! payload is `0x42..`: mutated and injected messages get past authentication.
//!
//! Nodes: the responder R (198.51.100.2; crypto map 10 toward I, plus a dynamic entry 20
//! for any peer) and the initiator I (192.0.2.1; crypto map 10 toward R). Pre-shared key
//! for any address on both. Optionally I sits behind a NAT (its packets reach R from
//! 203.0.113.1, ports 40000/40001), which makes both float to port 4500.
//!
//! Input: byte 0 is the configuration:
//!
//! | bit | meaning |
//! |---|---|
//! | 0 | constant PRF (forgeable hashes) instead of the FNV PRF |
//! | 1 | I's crypto map uses Aggressive Mode |
//! | 2 | PFS (group 2) on both crypto maps |
//! | 3 | periodic keepalives (DPD) on both nodes |
//! | 4 | transport mode instead of tunnel |
//! | 5 | I behind a NAT |
//! | 6 | R has NAT traversal off |
//! | 7 | 3DES/MD5 phase 1 (8-byte blocks) instead of AES-128/SHA-1 |
//!
//! then operations, each an opcode byte (taken modulo 16) and its arguments:
//!
//! | op | arguments | effect |
//! |---|---|---|
//! | 0 | – | deliver the oldest datagram I sent to R |
//! | 1 | – | deliver the oldest datagram R sent to I |
//! | 2 | u16 offset, u8 mask | deliver the oldest I→R datagram with one byte XORed (tampered) |
//! | 3 | u8 source, u16 len, bytes | inject a datagram to R: source % 6 picks A:500, A:4500, 198.51.100.3:500, 198.51.100.3:4500, 203.0.113.1:40000, 203.0.113.1:4500; to R's port 500, or 4500 for the 4500 sources (tampered) |
//! | 4 | u16 ms | advance time, run both nodes' timers |
//! | 5 | u16 s | advance time by seconds, run timers |
//! | 6 | u8 node | `initiate` crypto map 10 on I (even) or R (odd) |
//! | 7 | u8 node, u8 k | `delete_child` of the node's k-th child SA |
//! | 8 | u8 node, u8 k | `delete_ike_sa` of the node's k-th IKE SA |
//! | 9 | u8 node, u8 k | `rekey_child` of the node's k-th child SA |
//! | 10 | u8 node, u8 k | `dpd_probe` on the node's k-th IKE SA |
//! | 11 | – | deliver the last I→R datagram again (a retransmission) |
//! | 12 | u8 dir | drop the oldest datagram of a direction |
//! | 13 | u8 k | replay the k-th of the last 16 I→R datagrams |
//! | 14 | u16 len, bytes | inject a datagram to I from R's address, port 500 (tampered) |
//! | 15 | u16 offset, u8 mask | deliver the oldest R→I datagram with one byte XORed (tampered) |
//!
//! Invariants: no panic; every transmitted datagram is a well-formed ISAKMP message from
//! the node's address (behind the non-ESP marker on port 4500); the SA tables never
//! exceed their capacity; after `handle_timeout(now)`, `poll_timeout()` is after `now`;
//! `rx_datagrams` counts every datagram handed in; every event is well formed (a child
//! SA's configs have the right directions, SPIs >= 256 and keys that build an `EspSa`);
//! and, unless a datagram was tampered with or injected, both nodes hold the same keys
//! for each SPI they share.
#![no_main]

#[path = "common/null_crypto.rs"]
mod null_crypto;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hal_traits::{CipherAlg, DhGroup, HashAlg, MacAlg};
use ipsec_core::esp::{Direction, Encryption, EspSa, Mode, Transform};
use ipsec_core::spd::{AddrRange, Selector};
use ipsec_core::{Duration, Instant};
use ipsec_ike::v1::{
    ChildSa, CryptoMapEntry, ExchangeMode, Ike, IkeConfig, IkeEvent, IsakmpPolicy, Keepalive,
    PresharedKey, Retransmit, TransformSet,
};
use ipsec_ike::wire::Header;
use libfuzzer_sys::fuzz_target;
use null_crypto::{FuzzRng, NullCrypto, PrfMode, set_prf_mode};

const SAS: usize = 4;
const CHILDREN: usize = 8;
type TestIke = Ike<NullCrypto, SAS, CHILDREN>;

const I_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const R_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const OTHER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
const NAT_PUBLIC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const I_NET: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 0);
const R_NET: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 0);

fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

fn sock(a: Ipv4Addr, p: u16) -> SocketAddr {
    SocketAddr::new(v4(a), p)
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

struct Node {
    addr: IpAddr,
    ike: Box<TestIke>,
    rng: FuzzRng,
    rx_calls: u64,
    /// Child SAs reported up and not yet reported down.
    children: Vec<ChildSa>,
}

impl Node {
    fn conn_ids(&self) -> Vec<u32> {
        self.ike.isakmp_status().map(|s| s.conn_id).collect()
    }
    fn child_spis(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.ike.ipsec_status().map(|c| c.inbound_spi).collect();
        v.extend(self.children.iter().map(|c| c.inbound.spi));
        v
    }
}

type Dgram = (SocketAddr, SocketAddr, Vec<u8>);

struct World {
    now: Instant,
    nodes: [Node; 2], // 0 = I, 1 = R
    /// I → R and R → I, addresses as the receiver sees them.
    queues: [VecDeque<Dgram>; 2],
    history: VecDeque<Dgram>,
    last_ir: Option<Dgram>,
    nat: bool,
    tampered: bool,
}

fn config(local: Ipv4Addr, flags: u8) -> IkeConfig {
    let mut c = IkeConfig::new(v4(local));
    c.retransmit = Retransmit {
        timeout: Duration::from_millis(500),
        base_permille: 1800,
        tries: 3,
    };
    c.half_open_timeout = Duration::from_secs(30);
    let policy = if flags & 0x80 != 0 {
        IsakmpPolicy::new(10, CipherAlg::TripleDesCbc, HashAlg::Md5, DhGroup::Modp1024)
    } else {
        IsakmpPolicy::new(10, CipherAlg::Aes128Cbc, HashAlg::Sha1, DhGroup::Modp1024)
    };
    c.add_policy(policy.with_lifetime(3600)).expect("policy");
    c.add_key(PresharedKey::address(v4(Ipv4Addr::UNSPECIFIED), b"fuzz").expect("key"))
        .expect("add key");
    if flags & 0x08 != 0 {
        c.keepalive =
            Some(Keepalive::new(Duration::from_secs(10), Duration::from_secs(2)).periodic());
    }
    c
}

fn map(seq: u32, peer: Ipv4Addr, local: Ipv4Addr, remote: Ipv4Addr, flags: u8) -> CryptoMapEntry {
    let transport = flags & 0x10 != 0;
    let (l, r) = if transport {
        (AddrRange::from_prefix(v4(local), 32), AddrRange::from_prefix(v4(remote), 32))
    } else {
        (AddrRange::from_prefix(v4(local), 16), AddrRange::from_prefix(v4(remote), 16))
    };
    let mut e = CryptoMapEntry::new(seq, Selector::new(l.expect("l"), r.expect("r")).expect("sel"));
    e.add_peer(v4(peer)).expect("peer");
    let t = Transform {
        enc: Encryption::Cbc(CipherAlg::Aes128Cbc),
        auth: Some(MacAlg::HmacSha1_96),
    };
    let mode = if transport { Mode::Transport } else { Mode::Tunnel };
    e.add_transform_set(TransformSet::new("T", t, mode).expect("ts"))
        .expect("add ts");
    let gcm = Transform {
        enc: Encryption::Gcm(hal_traits::AeadAlg::Aes256Gcm16),
        auth: None,
    };
    e.add_transform_set(TransformSet::new("G", gcm, mode).expect("ts"))
        .expect("add ts");
    if flags & 0x04 != 0 {
        e.pfs = Some(DhGroup::Modp1024);
    }
    e.lifetime_seconds = 600;
    e
}

impl World {
    fn new(flags: u8) -> Self {
        let transport = flags & 0x10 != 0;
        let (inet, rnet) = if transport { (I_ADDR, R_ADDR) } else { (I_NET, R_NET) };
        let mut ic = config(I_ADDR, flags);
        let mut im = map(10, R_ADDR, inet, rnet, flags);
        if flags & 0x02 != 0 {
            im.exchange = ExchangeMode::Aggressive;
        }
        ic.add_crypto_map(im).expect("I map");
        let mut rc = config(R_ADDR, flags);
        rc.nat_traversal = flags & 0x40 == 0;
        rc.add_crypto_map(map(10, I_ADDR, rnet, inet, flags))
            .expect("R map");
        let any = AddrRange::new(v4(Ipv4Addr::UNSPECIFIED), v4(Ipv4Addr::BROADCAST)).expect("any");
        let mut dynamic = map(20, OTHER, R_ADDR, I_ADDR, flags);
        dynamic.selector = Selector::new(any, any).expect("any selector");
        dynamic.peers.clear();
        dynamic.dynamic = true;
        rc.add_crypto_map(dynamic).expect("R dynamic map");
        let node = |c: IkeConfig, addr: Ipv4Addr, seed: u64| Node {
            addr: v4(addr),
            ike: Box::new(TestIke::new(c)),
            rng: FuzzRng(seed),
            rx_calls: 0,
            children: Vec::new(),
        };
        Self {
            now: Instant::from_millis(1_000),
            nodes: [node(ic, I_ADDR, 1), node(rc, R_ADDR, 2)],
            queues: [VecDeque::new(), VecDeque::new()],
            history: VecDeque::new(),
            last_ir: None,
            nat: flags & 0x20 != 0,
            tampered: false,
        }
    }

    /// Hands a datagram to node `k`.
    fn deliver(&mut self, k: usize, (from, to, data): Dgram) {
        let now = self.now;
        let n = &mut self.nodes[k];
        n.rx_calls += 1;
        let _ = n.ike.handle_datagram(now, &mut n.rng, from, to, &data);
        assert_eq!(n.ike.counters().rx_datagrams, n.rx_calls, "rx_datagrams");
        if k == 1 {
            self.history.push_back((from, to, data.clone()));
            if self.history.len() > 16 {
                self.history.pop_front();
            }
            self.last_ir = Some((from, to, data));
        }
    }

    /// Collects what both nodes send and routes it: I's datagrams to R (through the NAT
    /// if configured), R's datagrams for I's (public) address back to I; anything else
    /// leaves the world.
    fn drain(&mut self) {
        let mut buf = vec![0u8; 4096];
        for k in 0..2 {
            let mut sent = 0;
            while let Some(t) = self.nodes[k].ike.poll_transmit(self.now, &mut buf) {
                sent += 1;
                assert!(sent < 1000, "poll_transmit never ends");
                check_transmit(&self.nodes[k], &t, &buf);
                let data = buf[..t.len].to_vec();
                let routed = if k == 0 {
                    if t.dst.ip() != v4(R_ADDR) {
                        None
                    } else if self.nat {
                        let p = if t.src.port() == 4500 { 40_001 } else { 40_000 };
                        Some((sock(NAT_PUBLIC, p), t.dst, data))
                    } else {
                        Some((t.src, t.dst, data))
                    }
                } else if self.nat && t.dst.ip() == v4(NAT_PUBLIC) {
                    match t.dst.port() {
                        40_000 => Some((t.src, sock(I_ADDR, 500), data)),
                        40_001 => Some((t.src, sock(I_ADDR, 4500), data)),
                        _ => None,
                    }
                } else if !self.nat && t.dst.ip() == v4(I_ADDR) {
                    Some((t.src, t.dst, data))
                } else {
                    None
                };
                if let Some(d) = routed {
                    let q = &mut self.queues[k];
                    q.push_back(d);
                    if q.len() > 32 {
                        q.pop_front();
                    }
                }
            }
        }
    }

    fn events(&mut self) {
        for k in 0..2 {
            while let Some(ev) = self.nodes[k].ike.poll_event() {
                self.check_event(k, ev);
            }
        }
    }

    fn check_event(&mut self, k: usize, ev: IkeEvent) {
        if debug() {
            eprintln!("[{}] node {k}: {ev:?}", self.now.as_millis());
        }
        let addr = self.nodes[k].addr;
        match ev {
            IkeEvent::Phase1Established { conn_id, local, .. } => {
                assert_ne!(conn_id, 0);
                assert_eq!(local.ip(), addr, "phase-1 local address");
            }
            IkeEvent::Phase1Deleted { conn_id, .. } => assert_ne!(conn_id, 0),
            IkeEvent::ChildSaEstablished(c) => {
                check_child(&c, self.now);
                if !self.tampered {
                    let other = &self.nodes[1 - k];
                    for o in &other.children {
                        if o.outbound.spi == c.inbound.spi && o.inbound.spi == c.outbound.spi {
                            assert_eq!(o.outbound_keys(), c.inbound_keys(), "keys for SPI {:#x}", c.inbound.spi);
                            assert_eq!(o.inbound_keys(), c.outbound_keys(), "keys for SPI {:#x}", c.outbound.spi);
                            assert_eq!(o.outbound.transform, c.inbound.transform);
                        }
                    }
                }
                let n = &mut self.nodes[k];
                n.children.retain(|x| x.inbound.spi != c.inbound.spi);
                n.children.push(c);
            }
            IkeEvent::ChildSaDeleted { inbound_spi, .. } => {
                self.nodes[k].children.retain(|x| x.inbound.spi != inbound_spi);
            }
            _ => {}
        }
    }

    fn timers(&mut self) {
        let now = self.now;
        for n in &mut self.nodes {
            n.ike.handle_timeout(now, &mut n.rng);
            if let Some(t) = n.ike.poll_timeout() {
                assert!(t > now, "poll_timeout {t:?} not after handle_timeout({now:?})");
            }
        }
    }

    fn check(&self) {
        for n in &self.nodes {
            assert!(n.ike.isakmp_status().count() <= SAS);
            assert!(n.ike.ipsec_status().count() <= CHILDREN);
            for s in n.ike.isakmp_status() {
                assert_eq!(s.local.ip(), n.addr);
            }
        }
    }
}

fn check_transmit(n: &Node, t: &ipsec_ike::v1::Transmit, buf: &[u8]) {
    assert!(t.len <= buf.len());
    assert_eq!(t.src.ip(), n.addr, "source address");
    let data = &buf[..t.len];
    let ike = match t.src.port() {
        4500 => {
            assert_eq!(data.get(..4), Some(&[0u8; 4][..]), "non-ESP marker");
            &data[4..]
        }
        500 => data,
        p => panic!("sent from port {p}"),
    };
    let h = Header::new_checked(ike).expect("a sent message parses");
    assert_eq!(h.length() as usize, ike.len(), "length field of a sent message");
    assert_eq!(h.major_version(), 1);
}

fn check_child(c: &ChildSa, now: Instant) {
    assert_eq!(c.inbound.direction, Direction::Inbound);
    assert_eq!(c.outbound.direction, Direction::Outbound);
    assert!(c.inbound.spi >= 256 && c.outbound.spi >= 256, "reserved SPI");
    assert_eq!(c.inbound.transform, c.outbound.transform);
    for (cfg, (enc, auth)) in [(&c.inbound, c.inbound_keys()), (&c.outbound, c.outbound_keys())] {
        assert_eq!(enc.len(), cfg.transform.enc.keymat_len(), "encryption key length");
        assert_eq!(auth.len(), cfg.transform.auth.map_or(0, MacAlg::key_len), "auth key length");
        if let Err(e) = EspSa::<NullCrypto, 2>::new(cfg.clone(), enc, auth, now) {
            panic!("negotiated SA does not build: {e:?} {cfg:?}");
        }
    }
}

/// `IKE_FUZZ_DEBUG=1`: print every event (for writing seeds).
fn debug() -> bool {
    static D: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *D.get_or_init(|| std::env::var_os("IKE_FUZZ_DEBUG").is_some())
}

fn node_index(sel: u8) -> usize {
    usize::from(sel & 1)
}

fn pick<T: Copy>(v: &[T], k: u8) -> Option<T> {
    if v.is_empty() {
        None
    } else {
        Some(v[usize::from(k) % v.len()])
    }
}

fn xor_at(mut d: Dgram, off: u16, mask: u8) -> Dgram {
    if !d.2.is_empty() {
        let i = usize::from(off) % d.2.len();
        d.2[i] ^= mask.max(1);
    }
    d
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor(data);
    let Some(flags) = c.u8() else { return };
    set_prf_mode(if flags & 1 != 0 { PrfMode::Constant } else { PrfMode::Fold });
    let mut w = World::new(flags);
    let r_sock = |p| sock(R_ADDR, p);
    let mut ops = 0;
    while let Some(op) = c.u8() {
        ops += 1;
        if ops > 200 {
            break;
        }
        match op % 16 {
            0 => {
                if let Some(d) = w.queues[0].pop_front() {
                    w.deliver(1, d);
                }
            }
            1 => {
                if let Some(d) = w.queues[1].pop_front() {
                    w.deliver(0, d);
                }
            }
            2 => {
                let (off, mask) = (c.u16().unwrap_or(0), c.u8().unwrap_or(1));
                if let Some(d) = w.queues[0].pop_front() {
                    w.tampered = true;
                    w.deliver(1, xor_at(d, off, mask));
                }
            }
            3 => {
                let src = c.u8().unwrap_or(0) % 6;
                let len = usize::from(c.u16().unwrap_or(0));
                let bytes = c.bytes(len).to_vec();
                let (from, to) = match src {
                    0 => (sock(I_ADDR, 500), r_sock(500)),
                    1 => (sock(I_ADDR, 4500), r_sock(4500)),
                    2 => (sock(OTHER, 500), r_sock(500)),
                    3 => (sock(OTHER, 4500), r_sock(4500)),
                    4 => (sock(NAT_PUBLIC, 40_000), r_sock(500)),
                    _ => (sock(NAT_PUBLIC, 4500), r_sock(4500)),
                };
                w.tampered = true;
                w.deliver(1, (from, to, bytes));
            }
            4 | 5 => {
                let v = u64::from(c.u16().unwrap_or(0));
                let ms = if op % 16 == 4 { v } else { v * 1000 };
                w.now = w.now + Duration::from_millis(ms);
                w.timers();
            }
            6 => {
                let k = node_index(c.u8().unwrap_or(0));
                let now = w.now;
                let n = &mut w.nodes[k];
                let _ = n.ike.initiate(now, &mut n.rng, 10);
            }
            7 | 9 => {
                let (k, i) = (node_index(c.u8().unwrap_or(0)), c.u8().unwrap_or(0));
                let now = w.now;
                let n = &mut w.nodes[k];
                if let Some(spi) = pick(&n.child_spis(), i) {
                    if op % 16 == 7 {
                        let _ = n.ike.delete_child(now, &mut n.rng, spi);
                    } else {
                        let _ = n.ike.rekey_child(now, &mut n.rng, spi);
                    }
                }
            }
            8 | 10 => {
                let (k, i) = (node_index(c.u8().unwrap_or(0)), c.u8().unwrap_or(0));
                let now = w.now;
                let n = &mut w.nodes[k];
                if let Some(id) = pick(&n.conn_ids(), i) {
                    if op % 16 == 8 {
                        let _ = n.ike.delete_ike_sa(now, &mut n.rng, id);
                    } else {
                        let _ = n.ike.dpd_probe(now, &mut n.rng, id);
                    }
                }
            }
            11 => {
                if let Some(d) = w.last_ir.clone() {
                    w.deliver(1, d);
                }
            }
            12 => {
                let k = node_index(c.u8().unwrap_or(0));
                w.queues[k].pop_front();
            }
            13 => {
                let i = usize::from(c.u8().unwrap_or(0));
                if !w.history.is_empty() {
                    let d = w.history[i % w.history.len()].clone();
                    w.deliver(1, d);
                }
            }
            14 => {
                let len = usize::from(c.u16().unwrap_or(0));
                let bytes = c.bytes(len).to_vec();
                w.tampered = true;
                w.deliver(0, (r_sock(500), sock(I_ADDR, 500), bytes));
            }
            _ => {
                let (off, mask) = (c.u16().unwrap_or(0), c.u8().unwrap_or(1));
                if let Some(d) = w.queues[1].pop_front() {
                    w.tampered = true;
                    w.deliver(0, xor_at(d, off, mask));
                }
            }
        }
        w.drain();
        w.events();
        w.check();
    }
});
