//! A tiny deterministic network for `Ike` pairs: virtual clock, seeded loss, duplication
//! and reordering, an optional NAT box, a tamper hook; plus ESP round trips through
//! ipsec-core to prove that the negotiated keys match.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    missing_docs
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hal_traits::{CipherAlg, CryptoError, DhGroup, HashAlg, SecureRng};
use ipsec_core::esp::{EspSa, Mode, Transform};
use ipsec_core::spd::{AddrRange, Selector};
use ipsec_core::{Duration, Instant};
use ipsec_ike::v1::{
    ChildSa, CryptoMapEntry, ExchangeMode, Ike, IkeConfig, IkeError, IkeEvent, IsakmpPolicy,
    PresharedKey, Retransmit, TransformSet,
};
use ipsec_soft_crypto::SoftCrypto;

pub type TestIke = Ike<SoftCrypto, 8, 16>;

/// A deterministic "secure" RNG for tests (SplitMix64).
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

impl SecureRng for Rng {
    fn fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), CryptoError> {
        for c in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
        Ok(())
    }
}

pub const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const C: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
pub const NAT_PUBLIC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const A_NET: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 0);
pub const B_NET: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 0);

pub fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

pub fn net(a: Ipv4Addr) -> AddrRange {
    AddrRange::from_prefix(v4(a), 16).unwrap()
}

pub fn fast_retransmit() -> Retransmit {
    Retransmit {
        timeout: Duration::from_millis(500),
        base_permille: 1800,
        tries: 5,
    }
}

pub fn aes_sha1() -> Transform {
    Transform {
        enc: ipsec_core::esp::Encryption::Cbc(CipherAlg::Aes128Cbc),
        auth: Some(hal_traits::MacAlg::HmacSha1_96),
    }
}

/// A config for `local` with one policy, a wildcard PSK, fast retransmissions.
pub fn config(local: Ipv4Addr, policy: IsakmpPolicy, psk: &[u8]) -> IkeConfig {
    let mut c = IkeConfig::new(v4(local));
    c.retransmit = fast_retransmit();
    c.half_open_timeout = Duration::from_secs(30);
    c.add_policy(policy).unwrap();
    c.add_key(PresharedKey::address(v4(Ipv4Addr::UNSPECIFIED), psk).unwrap())
        .unwrap();
    c
}

/// Datagrams recorded by a tamper hook: (from, to, bytes).
pub type Seen = std::rc::Rc<std::cell::RefCell<Vec<(SocketAddr, SocketAddr, Vec<u8>)>>>;

/// A crypto map entry `seq` protecting `local_net <-> remote_net` with one transform set.
#[allow(clippy::too_many_arguments)]
pub fn map(
    seq: u32,
    peers: &[Ipv4Addr],
    local_net: AddrRange,
    remote_net: AddrRange,
    ts: Transform,
    mode: Mode,
    pfs: Option<DhGroup>,
    exchange: ExchangeMode,
) -> CryptoMapEntry {
    let mut e = CryptoMapEntry::new(seq, Selector::new(local_net, remote_net).unwrap());
    for p in peers {
        e.add_peer(v4(*p)).unwrap();
    }
    e.add_transform_set(TransformSet::new("T", ts, mode).unwrap())
        .unwrap();
    e.pfs = pfs;
    e.exchange = exchange;
    e
}

pub fn policy(enc: CipherAlg, hash: HashAlg, group: DhGroup) -> IsakmpPolicy {
    IsakmpPolicy::new(10, enc, hash, group)
}

pub struct Node {
    pub addr: IpAddr,
    pub ike: Box<TestIke>,
    pub rng: Rng,
    pub events: Vec<IkeEvent>,
    pub errors: Vec<IkeError>,
}

pub struct Nat {
    /// The inside host's address.
    pub inside: IpAddr,
    pub public: IpAddr,
    /// Remap source ports (like `masquerade random`) or keep them.
    pub remap: bool,
    /// Mappings unused (in either direction) for this long are dropped; a later
    /// outbound packet creates a new one (with a new public port when remapping).
    pub idle_timeout: Option<Duration>,
    /// Inbound packets dropped for lack of a mapping.
    pub dropped: u64,
    /// (inside socket, public port, last used).
    map: Vec<(SocketAddr, u16, Instant)>,
    next_port: u16,
}

impl Nat {
    pub fn new(inside: Ipv4Addr, public: Ipv4Addr, remap: bool) -> Self {
        Self {
            inside: v4(inside),
            public: v4(public),
            remap,
            idle_timeout: None,
            dropped: 0,
            map: Vec::new(),
            next_port: 40_000,
        }
    }

    /// With an idle timeout per mapping.
    pub fn with_idle_timeout(mut self, t: Duration) -> Self {
        self.idle_timeout = Some(t);
        self
    }

    /// Drops the mappings idle for `idle_timeout` at `now`.
    pub fn expire(&mut self, now: Instant) {
        if let Some(t) = self.idle_timeout {
            self.map.retain(|(_, _, used)| *used + t > now);
        }
    }

    /// Forgets the mapping of `inside` (as after a timeout or a NAT reboot): its next
    /// outbound packet gets a new one.
    pub fn forget(&mut self, inside: SocketAddr) {
        self.map.retain(|(s, _, _)| *s != inside);
    }

    fn out(&mut self, src: SocketAddr, now: Instant) -> SocketAddr {
        self.expire(now);
        if let Some((_, p, used)) = self.map.iter_mut().find(|(s, _, _)| *s == src) {
            *used = now;
            return SocketAddr::new(self.public, *p);
        }
        let p = if self.remap {
            self.next_port += 1;
            self.next_port - 1
        } else {
            src.port()
        };
        self.map.push((src, p, now));
        SocketAddr::new(self.public, p)
    }

    fn back(&mut self, dst: SocketAddr, now: Instant) -> Option<SocketAddr> {
        self.expire(now);
        let Some((s, _, used)) = self.map.iter_mut().find(|(_, p, _)| *p == dst.port()) else {
            self.dropped += 1;
            return None;
        };
        *used = now;
        Some(*s)
    }

    /// The public port of an inside socket, if mapped.
    pub fn public_port(&self, inside: SocketAddr) -> Option<u16> {
        self.map
            .iter()
            .find(|(s, _, _)| *s == inside)
            .map(|(_, p, _)| *p)
    }
}

pub struct Packet {
    pub at: Instant,
    pub seq: u64,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub data: Vec<u8>,
}

/// What a tamper hook sees: (from, to, bytes), and may change or drop (return false).
pub type Tamper = Box<dyn FnMut(SocketAddr, SocketAddr, &mut Vec<u8>) -> bool>;

pub struct Net {
    pub now: Instant,
    pub nodes: Vec<Node>,
    pub queue: Vec<Packet>,
    pub loss: f64,
    pub dup: f64,
    pub reorder: f64,
    pub latency: Duration,
    pub nat: Option<Nat>,
    pub rng: Rng,
    /// Every datagram sent: (time, from as sent, to, length, delivered-to-a-node).
    pub log: Vec<(Instant, SocketAddr, SocketAddr, usize)>,
    pub tamper: Option<Tamper>,
    /// Addresses that silently drop everything (a dead peer).
    pub black_holes: Vec<IpAddr>,
    /// Every datagram delivered to a node (after the NAT): (time, from, to, bytes).
    pub delivered: Vec<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    seq: u64,
}

impl Net {
    pub fn new(seed: u64) -> Self {
        Self {
            now: Instant::from_secs(1000),
            nodes: Vec::new(),
            queue: Vec::new(),
            loss: 0.0,
            dup: 0.0,
            reorder: 0.0,
            latency: Duration::from_millis(10),
            nat: None,
            rng: Rng(seed),
            log: Vec::new(),
            tamper: None,
            black_holes: Vec::new(),
            delivered: Vec::new(),
            seq: 0,
        }
    }

    /// Adds a node; returns its index.
    pub fn add(&mut self, config: IkeConfig, seed: u64) -> usize {
        let addr = config.local_addr;
        self.nodes.push(Node {
            addr,
            ike: Box::new(TestIke::new(config)),
            rng: Rng(seed),
            events: Vec::new(),
            errors: Vec::new(),
        });
        self.nodes.len() - 1
    }

    /// A standard pair: node 0 at `A` initiating map 10 to `B`, node 1 at `B`.
    pub fn pair(seed: u64, a: IkeConfig, b: IkeConfig) -> Self {
        let mut n = Self::new(seed);
        n.add(a, seed ^ 0xa);
        n.add(b, seed ^ 0xb);
        n
    }

    pub fn node(&mut self, k: usize) -> &mut Node {
        &mut self.nodes[k]
    }

    pub fn initiate(&mut self, k: usize, map: u32) -> Result<(), IkeError> {
        let now = self.now;
        let n = &mut self.nodes[k];
        let r = n.ike.initiate(now, &mut n.rng, map);
        self.pump();
        r
    }

    /// Sends a datagram that is not IKE's (ESP in UDP, a NAT keepalive) through the
    /// network; it is logged in `delivered` and handed to the node's IKE like any other.
    pub fn inject(&mut self, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        self.send(from, to, data);
    }

    fn send(&mut self, mut from: SocketAddr, to: SocketAddr, mut data: Vec<u8>) {
        self.log.push((self.now, from, to, data.len()));
        if let Some(t) = self.tamper.as_mut() {
            if !t(from, to, &mut data) {
                return;
            }
        }
        if self.rng.chance(self.loss) {
            return;
        }
        if let Some(nat) = self.nat.as_mut() {
            if from.ip() == nat.inside {
                from = nat.out(from, self.now);
            }
        }
        let copies = if self.rng.chance(self.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let extra = if self.rng.chance(self.reorder) {
                Duration::from_millis(self.rng.below(self.latency.as_millis() * 4 + 1))
            } else {
                Duration::ZERO
            };
            self.seq += 1;
            self.queue.push(Packet {
                at: self.now + self.latency + extra,
                seq: self.seq,
                from,
                to,
                data: data.clone(),
            });
        }
    }

    /// Collects every pending transmission.
    pub fn pump(&mut self) {
        let mut buf = vec![0u8; 4096];
        for k in 0..self.nodes.len() {
            loop {
                let now = self.now;
                let Some(t) = self.nodes[k].ike.poll_transmit(now, &mut buf) else {
                    break;
                };
                assert_eq!(t.src.ip(), self.nodes[k].addr, "sends from its own address");
                let data = buf[..t.len].to_vec();
                self.send(t.src, t.dst, data);
            }
            while let Some(e) = self.nodes[k].ike.poll_event() {
                self.nodes[k].events.push(e);
            }
        }
    }

    fn deliver_due(&mut self) {
        self.queue.sort_by_key(|p| (p.at, p.seq));
        while self.queue.first().is_some_and(|p| p.at <= self.now) {
            let p = self.queue.remove(0);
            let mut to = p.to;
            let now = self.now;
            if let Some(nat) = self.nat.as_mut() {
                if to.ip() == nat.public {
                    match nat.back(to, now) {
                        Some(inside) => to = inside,
                        None => continue,
                    }
                }
            }
            if self.black_holes.contains(&to.ip()) {
                continue;
            }
            if let Some(n) = self.nodes.iter_mut().find(|n| n.addr == to.ip()) {
                self.delivered.push((now, p.from, to, p.data.clone()));
                if let Err(e) = n.ike.handle_datagram(now, &mut n.rng, p.from, to, &p.data) {
                    n.errors.push(e);
                }
            }
            self.pump();
        }
    }

    /// One step: deliver what is due, then advance the clock to the next event.
    /// Returns false when nothing is left to do.
    pub fn step(&mut self) -> bool {
        self.pump();
        if self.queue.iter().any(|p| p.at <= self.now) {
            self.deliver_due();
            return true;
        }
        let mut next = self.queue.iter().map(|p| p.at).min();
        for n in &self.nodes {
            if let Some(t) = n.ike.poll_timeout() {
                next = Some(next.map_or(t, |x| x.min(t)));
            }
        }
        let Some(next) = next else { return false };
        if next > self.now {
            self.now = next;
        }
        let now = self.now;
        for n in &mut self.nodes {
            if n.ike.poll_timeout().is_some_and(|t| t <= now) {
                n.ike.handle_timeout(now, &mut n.rng);
            }
        }
        self.pump();
        true
    }

    /// Runs until `done` holds or `limit` of virtual time passed (or nothing is left).
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Net) -> bool) -> bool {
        let end = self.now + limit;
        for _ in 0..200_000 {
            if done(self) {
                return true;
            }
            if self.now > end || !self.step() {
                return done(self);
            }
        }
        panic!("simulation did not settle");
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.pump();
            let mut next = self.queue.iter().map(|p| p.at).min();
            for n in &self.nodes {
                if let Some(t) = n.ike.poll_timeout() {
                    next = Some(next.map_or(t, |x| x.min(t)));
                }
            }
            match next {
                Some(t) if t <= end => {
                    self.step();
                }
                _ => {
                    self.now = end;
                    self.pump();
                    self.deliver_due();
                }
            }
        }
    }

    pub fn children(&self, k: usize) -> Vec<&ChildSa> {
        self.nodes[k]
            .events
            .iter()
            .filter_map(|e| match e {
                IkeEvent::ChildSaEstablished(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    pub fn count(&self, k: usize, f: impl Fn(&IkeEvent) -> bool) -> usize {
        self.nodes[k].events.iter().filter(|e| f(e)).count()
    }

    pub fn phase1_up(&self, k: usize) -> usize {
        self.count(k, |e| matches!(e, IkeEvent::Phase1Established { .. }))
    }
}

// ------------------------------------------------------------------------ ESP ----

fn checksum(b: &[u8]) -> [u8; 2] {
    let mut s = 0u32;
    for c in b.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    (!(s as u16)).to_be_bytes()
}

/// An IPv4/UDP packet (UDP checksum 0) with a valid header checksum.
pub fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, data: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + data.len();
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, 17, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = checksum(&p);
    p[10..12].copy_from_slice(&c);
    p.extend_from_slice(&1234u16.to_be_bytes());
    p.extend_from_slice(&5678u16.to_be_bytes());
    p.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(data);
    p
}

/// Seals `inner` with `out` (one side's outbound SA) and opens it with `inb` (the other
/// side's inbound SA). `rewrite_dport`: what a NAT does to the outer UDP destination
/// port on the way (public -> inside).
pub fn esp_one_way(
    out: &ChildSa,
    inb: &ChildSa,
    inner: &[u8],
    rewrite_dport: Option<u16>,
    rng: &mut Rng,
) {
    assert_eq!(out.outbound.spi, inb.inbound.spi, "SPIs pair up");
    let now = Instant::from_secs(1);
    let (e, a) = out.outbound_keys();
    let mut o = EspSa::<SoftCrypto>::new(out.outbound.clone(), e, a, now).unwrap();
    let (e, a) = inb.inbound_keys();
    let mut i = EspSa::<SoftCrypto>::new(inb.inbound.clone(), e, a, now).unwrap();
    let mut buf = vec![0u8; inner.len() + 256];
    let n = o.encapsulate(now, inner, None, rng, &mut buf).unwrap();
    buf.truncate(n);
    if let Some(p) = rewrite_dport {
        let ihl = usize::from(buf[0] & 0x0f) * 4;
        assert_eq!(buf[9], 17, "UDP-encapsulated");
        buf[ihl + 2..ihl + 4].copy_from_slice(&p.to_be_bytes());
    }
    let d = i.decapsulate(now, &mut buf).unwrap();
    assert_eq!(&d.packet[..], inner, "inner packet survives");
}

/// Both directions between two ChildSa events of a pair.
pub fn esp_both_ways(a: &ChildSa, b: &ChildSa, ab: &[u8], ba: &[u8], rng: &mut Rng) {
    esp_one_way(a, b, ab, None, rng);
    esp_one_way(b, a, ba, None, rng);
}

/// The matching child of the other side (by SPI).
pub fn partner<'a>(cs: &ChildSa, others: &[&'a ChildSa]) -> &'a ChildSa {
    others
        .iter()
        .find(|o| o.inbound.spi == cs.outbound.spi)
        .copied()
        .expect("partner child SA")
}
