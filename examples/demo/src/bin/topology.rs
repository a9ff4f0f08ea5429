//! The chapter's Figure 3-1 / 3-14 topology in one process, on a virtual clock: a spoke
//! behind a NAT router, two hub gateways sharing a virtual IP, IKEv1 with NAT-T, ESP,
//! Dead Peer Detection, GRE over IPsec, stateful failover with RRI, and the SA idle timer.
//!
//! ```text
//!  10.0.68.0/24 -- spoke-1-east 192.0.2.2 -- NAT 203.0.113.1 --+-- vpn-gw1-east .11 --+-- 10.1.1.0/24
//!                                  (PAT, ports remapped)      |   VIP 198.51.100.10  |
//!                                                             +-- vpn-gw2-east .12 --+
//!                                                     (VRRP group 1, SADB sync, RRI)
//! ```
//!
//! Everything is the workspace's sans-IO code: `Ike` (ipsec-ike), `Dataplane`, `GreTunnel`
//! and `ha::*` (ipsec-core), `NatKeepalive` (ipsec-nat-t). The "network" is a queue of
//! IPv4 packets with 10 ms of latency on the WAN and 1 ms on the hub LAN; the NAT box
//! rewrites the spoke's source address and UDP port. Seeded RNGs and a virtual clock make
//! the output identical on every run. No root, no sockets.

use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hal_traits::route::{NextHop, Route};
use hal_traits::{CipherAlg, CryptoError, DhGroup, HashAlg, MacAlg, SecretBytes, SecureRng};
use ipsec_core::dataplane::{Dataplane, DataplaneError, DataplaneEvent, Inbound, Outbound};
use ipsec_core::esp::{Direction, Encryption, EspSa, Mode, SaEvent, Transform};
use ipsec_core::gre::{Delivered, GreConfig, GreEvent, GreTunnel, KeepaliveConfig as GreKeepalive};
use ipsec_core::ha::HaRole;
use ipsec_core::ha::channel::{ChannelConfig, ChannelEvent, Received, Suite, SyncChannel};
use ipsec_core::ha::record::{SaKeys, SaPairRecord, SaProgress};
use ipsec_core::ha::rri::{Rri, RriConfig, RriEvent};
use ipsec_core::ha::status::HaStatus;
use ipsec_core::ha::sync::{HaSync, ReplayInterval, SyncConfig, TakeoverReport};
use ipsec_core::ha::vrrp::{Vrrp, VrrpConfig, VrrpEvent, VrrpState};
use ipsec_core::spd::{AddrRange, Policy, PolicyAction, Selector};
use ipsec_core::wire::gre::ethertype;
use ipsec_core::wire::ipv4::Ipv4Repr;
use ipsec_core::wire::proto;
use ipsec_core::{Duration, Instant};
use ipsec_ike::v1::{
    ChildImport, ChildSa, CryptoMapEntry, IkeConfig, IkeEvent, IsakmpPolicy, IsakmpState,
    Keepalive, PresharedKey, Role, TransformSet,
};
use ipsec_nat_t::{KeepaliveConfig as NatKeepaliveConfig, NatKeepalive, NatStatus as NatTStatus};
use ipsec_soft_crypto::SoftCrypto;
use ipsec_std::show::{SaPair, crypto_ipsec_sa, transform_name};

type Ike = ipsec_ike::v1::Ike<SoftCrypto, 8, 16>;
type Dp = Dataplane<SoftCrypto, 16, 8>;
type Chan = SyncChannel<SoftCrypto, 32, 1400>;

const SPOKE: usize = 0;
const GW1: usize = 1;
const GW2: usize = 2;

const SPOKE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const NAT_PUBLIC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const GW1_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
const GW2_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 12);
const SPOKE_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 68, 5);
const HUB_HOST: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 7);
const SPOKE_TUNNEL_END: Ipv4Addr = Ipv4Addr::new(10, 0, 68, 1);
const HUB_TUNNEL_END: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 1);

/// `crypto map vpn 10`: the data plane's `sa_group`.
const MAP: u32 = 10;
const WAN_DELAY: Duration = Duration::from_millis(10);
const LAN_DELAY: Duration = Duration::from_millis(1);
const HA_TICK: Duration = Duration::from_millis(100);
/// `crypto ipsec security-association idle-time 120`.
const IDLE_TIME: u64 = 120;
const TRANSFORM: Transform = Transform {
    enc: Encryption::Cbc(CipherAlg::Aes128Cbc),
    auth: Some(MacAlg::HmacSha1_96),
};

// ------------------------------------------------------------------ plumbing ----

/// A deterministic "secure" RNG (SplitMix64): the demo must print the same every run.
struct Rng(u64);

impl SecureRng for Rng {
    fn fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), CryptoError> {
        for c in dest.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let v = (z ^ (z >> 31)).to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
        Ok(())
    }
}

fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

fn net(a: [u8; 4], len: u8) -> AddrRange {
    AddrRange::from_prefix(v4(Ipv4Addr::from(a)), len).expect("valid prefix")
}

/// `access-list 100 permit ip 10.0.68.0 0.0.0.255 10.1.1.0 0.0.0.255` (mirrored on the hub).
fn acl100(spoke_side: bool) -> Selector {
    let (spoke, hub) = (net([10, 0, 68, 0], 24), net([10, 1, 1, 0], 24));
    let (l, r) = if spoke_side {
        (spoke, hub)
    } else {
        (hub, spoke)
    };
    Selector::new(l, r).expect("same family")
}

fn stamp(t: Instant) -> String {
    let ms = t.as_millis();
    format!("[{:>4}.{:03}]", ms / 1000, ms % 1000)
}

/// A log line of one router, IOS `service timestamps` style.
fn say(now: Instant, who: &str, msg: impl Display) {
    println!("  {} {who}: {msg}", stamp(now));
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let r = Ipv4Repr {
        src,
        dst,
        protocol,
        payload_len: payload.len(),
        ttl: 64,
        tos: 0,
        ident: 0,
        dont_frag: false,
        more_frags: false,
        frag_offset: 0,
    };
    let mut p = vec![0; r.buffer_len()];
    r.emit(&mut p).expect("fits");
    p[20..].copy_from_slice(payload);
    p
}

/// An IPv4/UDP datagram (UDP checksum 0, as RFC 3948 allows for ESP-in-UDP).
fn udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
        panic!("IPv4 only")
    };
    let len = u16::try_from(8 + payload.len()).expect("fits a datagram");
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&src.port().to_be_bytes());
    u.extend_from_slice(&dst.port().to_be_bytes());
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    ipv4(s, d, proto::UDP, &u)
}

fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, reply: bool, seq: u16) -> Vec<u8> {
    let mut icmp = vec![if reply { 0 } else { 8 }, 0, 0, 0, 0x12, 0x34];
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(b"abcdefghijklmnopqrstuvwabcdefghi");
    let sum = ipsec_core::wire::checksum::checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    ipv4(src, dst, proto::ICMP, &icmp)
}

/// The fields of an IPv4 header the demo looks at (owned, so the buffer stays free).
struct IpInfo {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    /// Offset and end of the payload.
    payload: (usize, usize),
}

fn parse_ip(p: &[u8]) -> Option<IpInfo> {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]])).min(p.len());
    (ihl <= total).then(|| IpInfo {
        src: Ipv4Addr::new(p[12], p[13], p[14], p[15]),
        dst: Ipv4Addr::new(p[16], p[17], p[18], p[19]),
        protocol: p[9],
        payload: (ihl, total),
    })
}

/// (source port, destination port, payload) of a UDP datagram.
fn parse_udp(p: &[u8]) -> Option<(u16, u16, &[u8])> {
    let ip = parse_ip(p)?;
    if ip.protocol != proto::UDP {
        return None;
    }
    let u = p.get(ip.payload.0..ip.payload.1)?;
    let body = u.get(8..)?;
    Some((
        u16::from_be_bytes([u[0], u[1]]),
        u16::from_be_bytes([u[2], u[3]]),
        body,
    ))
}

fn fix_ip_checksum(p: &mut [u8]) {
    let ihl = usize::from(p[0] & 0x0f) * 4;
    p[10..12].copy_from_slice(&[0, 0]);
    let c = ipsec_core::wire::checksum::checksum(&p[..ihl]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

/// One line of a capture on the public segment.
fn describe(p: &[u8]) -> String {
    let Some(ip) = parse_ip(p) else {
        return "not IPv4".into();
    };
    let Some((sport, dport, body)) = parse_udp(p) else {
        return format!(
            "IP proto {} {} > {}, {} bytes",
            ip.protocol,
            ip.src,
            ip.dst,
            p.len()
        );
    };
    let isakmp = |m: &[u8]| match m.get(18) {
        Some(2) => "ISAKMP Main Mode",
        Some(4) => "ISAKMP Aggressive Mode",
        Some(5) => "ISAKMP Informational (encrypted)",
        Some(32) => "ISAKMP Quick Mode",
        _ => "ISAKMP",
    };
    let what = if body == [0xff] {
        "NAT-keepalive (one octet 0xFF)".to_string()
    } else if sport == 500 || dport == 500 {
        isakmp(body).to_string()
    } else if let Some(rest) = body.strip_prefix(&[0, 0, 0, 0]) {
        format!("non-ESP marker + {}", isakmp(rest))
    } else if body.len() >= 8 {
        let spi = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        let seq = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
        format!("ESP spi {spi:#010x} seq {seq}")
    } else {
        "UDP".to_string()
    };
    format!(
        "UDP {}:{sport} > {}:{dport}  {what}, {} bytes",
        ip.src,
        ip.dst,
        p.len()
    )
}

// ------------------------------------------------------------------------ NAT ----

/// One `show ip nat translations` row.
struct NatEntry {
    inside: SocketAddr,
    global: SocketAddr,
    outside: SocketAddr,
    packets: u64,
}

/// The spoke's NAT router: PAT of the inside host to the public address, with source
/// ports remapped (`ip nat inside source list 1 interface Gi0/1 overload`). Raw ESP
/// (IP protocol 50) has no port to multiplex on and is dropped: hence NAT-T.
struct Nat {
    inside: Ipv4Addr,
    public: Ipv4Addr,
    next_port: u16,
    table: Vec<NatEntry>,
}

impl Nat {
    /// Translates a packet leaving the inside; `false` drops it.
    fn outbound(&mut self, p: &mut [u8]) -> bool {
        let Some(ip) = parse_ip(p) else { return false };
        if ip.src != self.inside {
            return true;
        }
        let Some((sport, dport, _)) = parse_udp(p) else {
            return false;
        };
        let inside = SocketAddr::new(v4(ip.src), sport);
        let outside = SocketAddr::new(v4(ip.dst), dport);
        let k = match self.table.iter().position(|e| e.inside == inside) {
            Some(k) => k,
            None => {
                let global = SocketAddr::new(v4(self.public), self.next_port);
                self.next_port += 1;
                self.table.push(NatEntry {
                    inside,
                    global,
                    outside,
                    packets: 0,
                });
                self.table.len() - 1
            }
        };
        let e = &mut self.table[k];
        e.packets += 1;
        e.outside = outside;
        let port = e.global.port();
        let at = ip.payload.0;
        p[12..16].copy_from_slice(&self.public.octets());
        p[at..at + 2].copy_from_slice(&port.to_be_bytes());
        fix_ip_checksum(p);
        true
    }

    /// Translates a packet arriving at the public address; `false` drops it.
    fn inbound(&mut self, p: &mut [u8]) -> bool {
        let Some(ip) = parse_ip(p) else { return false };
        let Some((_, dport, _)) = parse_udp(p) else {
            return false;
        };
        let Some(e) = self.table.iter_mut().find(|e| e.global.port() == dport) else {
            return false;
        };
        e.packets += 1;
        let IpAddr::V4(inside) = e.inside.ip() else {
            return false;
        };
        let at = ip.payload.0;
        p[16..20].copy_from_slice(&inside.octets());
        p[at + 2..at + 4].copy_from_slice(&e.inside.port().to_be_bytes());
        fix_ip_checksum(p);
        true
    }
}

// ---------------------------------------------------------------------- nodes ----

/// The HA pieces of a hub gateway (ipsec-core's `ha` module).
struct Ha {
    vrrp: Vrrp,
    sync: HaSync<8, 4>,
    chan: Chan,
    rri: Rri<8, 8>,
    next_tick: Instant,
    takeover: Option<TakeoverReport>,
}

/// One router: IKE, the data plane, and what it runs besides.
struct Node {
    name: &'static str,
    addr: Ipv4Addr,
    lan: [u8; 3],
    alive: bool,
    ike: Box<Ike>,
    dp: Box<Dp>,
    rng: Rng,
    nat_keepalive: Option<NatKeepalive>,
    gre: Option<GreTunnel>,
    ha: Option<Box<Ha>>,
    echo_replies: Vec<u16>,
}

impl Node {
    fn new(name: &'static str, addr: Ipv4Addr, hub: bool, seed: u64) -> Self {
        let ike_addr = if hub { VIP } else { addr };
        let mut c = IkeConfig::new(v4(ike_addr));
        // crypto isakmp policy 10 / encryption aes / hash sha / authentication pre-share / group 2
        c.add_policy(IsakmpPolicy::new(
            10,
            CipherAlg::Aes128Cbc,
            HashAlg::Sha1,
            DhGroup::Modp1024,
        ))
        .expect("room");
        // crypto isakmp keepalive 10 2 (on-demand)
        c.keepalive = Some(Keepalive::new(
            Duration::from_secs(10),
            Duration::from_secs(2),
        ));
        let peer = if hub { Ipv4Addr::UNSPECIFIED } else { VIP };
        c.add_key(PresharedKey::address(v4(peer), b"cisco123").expect("key"))
            .expect("room");
        let mut e = CryptoMapEntry::new(MAP, acl100(!hub));
        if hub {
            e.dynamic = true; // crypto dynamic-map: any spoke
        } else {
            e.add_peer(v4(VIP)).expect("room");
        }
        e.add_transform_set(
            TransformSet::new("ESP-AES-SHA", TRANSFORM, Mode::Tunnel).expect("valid"),
        )
        .expect("room");
        c.add_crypto_map(e).expect("valid map");

        let mut dp = Box::new(Dp::new(PolicyAction::Bypass));
        let policy = Policy {
            seq: 10,
            selector: acl100(!hub),
            action: PolicyAction::Protect { sa_group: MAP },
        };
        dp.spd_mut().insert(policy).expect("room");
        dp.set_idle_time(Some(Duration::from_secs(IDLE_TIME)));
        let lan = if hub { [10, 1, 1] } else { [10, 0, 68] };
        Self {
            name,
            addr,
            lan,
            alive: true,
            ike: Box::new(Ike::new(c)),
            dp,
            rng: Rng(seed),
            nat_keepalive: None,
            gre: None,
            ha: None,
            echo_replies: Vec::new(),
        }
    }

    fn with_ha(mut self, priority: u8, node_id: u32, peer_id: u32, now: Instant) -> Self {
        let mut vc = VrrpConfig::new(1, self.addr, VIP);
        vc.priority = priority;
        let mut vrrp = Vrrp::new(vc).expect("valid VRRP config");
        vrrp.startup(now);
        let key = SecretBytes::from_slice(b"vpn-gw-east HA sync key (32 B)!!").expect("key");
        let chan = Chan::new(
            ChannelConfig::new(node_id, peer_id, Suite::AesCbcHmacSha256, key),
            now,
        )
        .expect("channel");
        let mut rri = Rri::new(RriConfig::default());
        rri.bind_redundancy();
        // crypto map vpn ha replay-interval inbound 1 outbound 1
        let cfg = SyncConfig {
            replay: ReplayInterval {
                inbound: 1,
                outbound: 1,
            },
            seq_margin: 16,
            window_margin: 2,
            lifetime_interval: Duration::from_secs(10),
        };
        let sync = HaSync::new(cfg, HaRole::Standby, now);
        self.ha = Some(Box::new(Ha {
            vrrp,
            sync,
            chan,
            rri,
            next_tick: now + HA_TICK,
            takeover: None,
        }));
        self
    }

    fn on_lan(&self, a: Ipv4Addr) -> bool {
        a.octets()[..3] == self.lan
    }

    fn deadlines(&self) -> impl Iterator<Item = Instant> {
        let ha = self.ha.as_deref();
        [
            self.ike.poll_timeout(),
            self.dp.poll_timeout(),
            self.gre.as_ref().and_then(GreTunnel::poll_timeout),
            self.nat_keepalive
                .as_ref()
                .and_then(NatKeepalive::poll_timeout),
            ha.and_then(|h| h.vrrp.poll_timeout()),
            ha.and_then(|h| h.chan.poll_timeout()),
            ha.map(|h| h.next_tick),
        ]
        .into_iter()
        .flatten()
    }

    /// Runs every timer due at `now`.
    fn fire(&mut self, now: Instant) {
        if self.ike.poll_timeout().is_some_and(|t| t <= now) {
            self.ike.handle_timeout(now, &mut self.rng);
        }
        if self.dp.poll_timeout().is_some_and(|t| t <= now) {
            self.dp.handle_timeout(now);
        }
        if let Some(g) = self
            .gre
            .as_mut()
            .filter(|g| g.poll_timeout().is_some_and(|t| t <= now))
        {
            g.handle_timeout(now);
        }
        if let Some(k) = self.nat_keepalive.as_mut() {
            k.handle_timeout(now);
        }
        if let Some(ha) = self.ha.as_deref_mut() {
            if ha.vrrp.poll_timeout().is_some_and(|t| t <= now) {
                ha.vrrp.handle_timeout(now);
            }
            if ha.chan.poll_timeout().is_some_and(|t| t <= now) {
                ha.chan.handle_timeout(now);
            }
            if ha.next_tick <= now {
                ha.sync.tick(now, &*self.dp);
                // The IKE SAs too (DPD sequence numbers, message IDs, lifetime left).
                sync_ike(&self.ike, ha, now);
                ha.next_tick = now + HA_TICK;
            }
        }
    }

    fn is_master(&self) -> bool {
        self.alive
            && self
                .ha
                .as_ref()
                .is_some_and(|h| h.vrrp.state() == VrrpState::Master)
    }

    /// (inbound SPI, outbound SPI) of every installed pair.
    fn spis(&self) -> Vec<(u32, u32)> {
        self.dp
            .inbound_sas()
            .map(|(h, sa)| {
                let out = self
                    .dp
                    .partner_of(Direction::Inbound, h)
                    .and_then(|o| self.dp.outbound_sa(o));
                (sa.spi(), out.map_or(0, EspSa::spi))
            })
            .collect()
    }
}

// ---------------------------------------------------------------------- world ----

enum Frame {
    /// An IPv4 packet on the WAN, routed by destination when it arrives.
    Wan(Vec<u8>),
    /// A VRRP advertisement on the hub LAN.
    Vrrp {
        to: usize,
        from: Ipv4Addr,
        data: Vec<u8>,
    },
    /// A datagram of the HA sync channel on the hub LAN.
    Sync { to: usize, data: Vec<u8> },
}

struct Packet {
    at: Instant,
    seq: u64,
    frame: Frame,
}

/// The routers, the NAT box, the clock and the packets in flight.
struct World {
    now: Instant,
    nodes: Vec<Node>,
    nat: Nat,
    queue: Vec<Packet>,
    seq: u64,
    /// RRI routes, with the gateway that injected them (redistributed into the LAN IGP).
    routes: Vec<(Route, usize)>,
    /// Print every packet on the public segment.
    capture: bool,
    ping_seq: u16,
}

impl World {
    fn new() -> Self {
        let now = Instant::ZERO;
        Self {
            now,
            nodes: vec![
                Node::new("spoke-1-east", SPOKE_ADDR, false, 1),
                Node::new("vpn-gw1-east", GW1_ADDR, true, 2).with_ha(110, 1, 2, now),
                Node::new("vpn-gw2-east", GW2_ADDR, true, 3).with_ha(100, 2, 1, now),
            ],
            nat: Nat {
                inside: SPOKE_ADDR,
                public: NAT_PUBLIC,
                next_port: 40_000,
                table: Vec::new(),
            },
            queue: Vec::new(),
            seq: 0,
            routes: Vec::new(),
            capture: false,
            ping_seq: 0,
        }
    }

    fn push(&mut self, delay: Duration, frame: Frame) {
        self.seq += 1;
        self.queue.push(Packet {
            at: self.now + delay,
            seq: self.seq,
            frame,
        });
    }

    fn vip_owner(&self) -> Option<usize> {
        [GW1, GW2].into_iter().find(|&i| self.nodes[i].is_master())
    }

    /// A packet leaves router `from` on its WAN interface.
    fn send_wan(&mut self, from: usize, mut p: Vec<u8>) {
        if from == SPOKE && !self.nat.outbound(&mut p) {
            say(
                self.now,
                "nat-router",
                "dropped a packet it cannot translate",
            );
            return;
        }
        if self.capture {
            println!("  {}   capture: {}", stamp(self.now), describe(&p));
        }
        self.push(WAN_DELAY, Frame::Wan(p));
    }

    /// A packet from router `i`'s LAN (or the router itself) towards the other site:
    /// through the crypto map.
    fn send_lan(&mut self, i: usize, packet: Vec<u8>) {
        let now = self.now;
        let n = &mut self.nodes[i];
        let mut out = vec![0u8; 2048];
        match n.dp.process_outbound(now, &packet, &mut n.rng, &mut out) {
            Ok(Outbound::Protected { len, sa }) => {
                if let Some(peer) = n.dp.outbound_sa(sa).and_then(|s| s.config().remote) {
                    if n.ike.note_outbound(now, peer) {
                        say(
                            now,
                            n.name,
                            format!(
                                "DPD: nothing heard from {peer} for 10 s and traffic to send: R-U-THERE"
                            ),
                        );
                    }
                }
                if let Some(k) = n.nat_keepalive.as_mut() {
                    k.note_sent(now);
                }
                out.truncate(len);
                self.send_wan(i, out);
            }
            Ok(Outbound::Bypass) => {}
            Err(DataplaneError::NoSa { sa_group }) => {
                say(
                    now,
                    n.name,
                    format!(
                        "no IPsec SA for crypto map vpn {sa_group}: packet dropped, starting IKE"
                    ),
                );
                if let Err(e) = n.ike.initiate(now, &mut n.rng, sa_group) {
                    say(now, n.name, format!("IKE not started: {e}"));
                }
            }
            Err(e) => say(now, n.name, format!("outbound packet dropped: {e}")),
        }
    }

    /// An IPv4 packet arrives on router `i`'s WAN interface.
    fn receive_wan(&mut self, i: usize, mut p: Vec<u8>) {
        enum What {
            Ike,
            Inner(Vec<u8>, Option<IpAddr>),
            Nothing,
        }
        let now = self.now;
        let n = &mut self.nodes[i];
        let what = match n.dp.process_inbound(now, &mut p) {
            Ok(Inbound::Ike) => What::Ike,
            Ok(Inbound::Decapsulated { packet, sa }) => {
                let peer = n.dp.inbound_sa(sa).and_then(|s| s.config().remote);
                What::Inner(packet.to_vec(), peer)
            }
            Ok(Inbound::NatKeepalive | Inbound::Cleartext) => What::Nothing,
            Err(e) => {
                say(now, n.name, format!("inbound packet dropped: {e}"));
                What::Nothing
            }
        };
        match what {
            What::Ike => {
                let Some((ip, (sport, dport, body))) = parse_ip(&p).zip(parse_udp(&p)) else {
                    return;
                };
                let from = SocketAddr::new(v4(ip.src), sport);
                let to = SocketAddr::new(v4(ip.dst), dport);
                if let Err(e) = n.ike.handle_datagram(now, &mut n.rng, from, to, body) {
                    say(
                        now,
                        n.name,
                        format!("IKE datagram from {from} dropped: {e}"),
                    );
                }
            }
            What::Inner(inner, peer) => {
                if let Some(peer) = peer {
                    n.ike.note_inbound(now, peer);
                }
                self.deliver_lan(i, inner);
            }
            What::Nothing => {}
        }
    }

    /// A decapsulated packet reaches router `i`'s LAN (hosts answer pings; GRE goes to
    /// the tunnel interface).
    fn deliver_lan(&mut self, i: usize, p: Vec<u8>) {
        let now = self.now;
        let Some(ip) = parse_ip(&p) else { return };
        let body = &p[ip.payload.0..ip.payload.1];
        match ip.protocol {
            proto::ICMP if body.len() >= 8 => {
                let seq = u16::from_be_bytes([body[6], body[7]]);
                if body[0] == 8 && self.nodes[i].on_lan(ip.dst) {
                    let reply = icmp_echo(ip.dst, ip.src, true, seq);
                    self.send_lan(i, reply);
                } else if body[0] == 0 {
                    self.nodes[i].echo_replies.push(seq);
                }
            }
            proto::GRE => {
                let n = &mut self.nodes[i];
                let Some(g) = n.gre.as_mut() else { return };
                let back = match g.decapsulate(now, &p) {
                    Ok(Delivered::ForwardBack(b)) => Some(b.to_vec()),
                    Ok(Delivered::KeepaliveReturned) => None,
                    Ok(Delivered::Data { protocol, payload }) => {
                        let what = parse_ip(payload).map_or_else(
                            || format!("protocol {protocol:#06x}"),
                            |x| format!("IPv4 {} -> {} proto {}", x.src, x.dst, x.protocol),
                        );
                        say(
                            now,
                            n.name,
                            format!(
                                "Tunnel0 received {what} ({} bytes) over GRE/IPsec",
                                payload.len()
                            ),
                        );
                        None
                    }
                    Err(e) => {
                        say(now, n.name, format!("Tunnel0 dropped a GRE packet: {e}"));
                        None
                    }
                };
                if let Some(b) = back {
                    self.send_lan(i, b);
                }
            }
            _ => {}
        }
    }

    fn deliver(&mut self, frame: Frame) {
        let now = self.now;
        match frame {
            Frame::Wan(mut p) => {
                let Some(ip) = parse_ip(&p) else { return };
                let to = if ip.dst == NAT_PUBLIC {
                    if !self.nat.inbound(&mut p) {
                        return;
                    }
                    Some(SPOKE)
                } else if ip.dst == VIP {
                    self.vip_owner()
                } else {
                    self.nodes.iter().position(|n| n.addr == ip.dst)
                };
                if let Some(i) = to.filter(|&i| self.nodes[i].alive) {
                    self.receive_wan(i, p);
                }
            }
            Frame::Vrrp { to, from, data } => {
                let n = &mut self.nodes[to];
                if let Some(ha) = n.ha.as_deref_mut().filter(|_| n.alive) {
                    let _ = ha.vrrp.handle_advert(now, from, &data);
                }
            }
            Frame::Sync { to, mut data } => {
                let n = &mut self.nodes[to];
                if let Some(ha) = n.ha.as_deref_mut().filter(|_| n.alive) {
                    if let Ok(Received::Data(payload)) =
                        ha.chan.handle_datagram(now, &mut n.rng, &mut data)
                    {
                        let _ = ha.sync.handle_payload(now, payload);
                    }
                }
            }
        }
    }

    // ----------------------------------------------------------- the port glue ----

    fn on_ike_event(&mut self, i: usize, e: IkeEvent) {
        let now = self.now;
        let n = &mut self.nodes[i];
        let name = n.name;
        match e {
            IkeEvent::Phase1Established {
                conn_id,
                local,
                peer,
                nat,
            } => {
                say(
                    now,
                    name,
                    format!(
                        "%CRYPTO-6-IKMP_SA_UP: ISAKMP SA conn-id {conn_id} is QM_IDLE: {local} <-> {peer}"
                    ),
                );
                if let Some(ha) = n.ha.as_deref_mut() {
                    sync_ike(&n.ike, ha, now);
                }
                if nat.detected() {
                    let who = if nat.local_behind_nat {
                        "we are behind a NAT"
                    } else {
                        "the peer is behind a NAT"
                    };
                    say(
                        now,
                        name,
                        format!("NAT-T: NAT-D hashes differ, {who}: IKE floated to UDP 4500"),
                    );
                }
                if nat.local_behind_nat && n.nat_keepalive.is_none() {
                    let status = NatTStatus {
                        local_behind_nat: true,
                        remote_behind_nat: nat.remote_behind_nat,
                    };
                    n.nat_keepalive = Some(NatKeepalive::new(
                        now,
                        NatKeepaliveConfig::seconds(20),
                        peer,
                        status,
                    ));
                    say(
                        now,
                        name,
                        format!("crypto isakmp nat keepalive 20: keepalives to {peer} when idle"),
                    );
                }
            }
            IkeEvent::ChildSaEstablished(cs) => self.install_child(i, &cs),
            IkeEvent::ChildSaDeleted {
                inbound_spi,
                outbound_spi,
                reason,
                ..
            } => {
                say(
                    now,
                    name,
                    format!(
                        "IPsec SA pair {inbound_spi:#010x}/{outbound_spi:#010x} deleted ({reason:?})"
                    ),
                );
                self.remove_pair(i, inbound_spi);
            }
            IkeEvent::Phase1Deleted {
                conn_id,
                peer,
                reason,
            } => {
                say(
                    now,
                    name,
                    format!("ISAKMP SA conn-id {conn_id} with {peer} deleted ({reason:?})"),
                );
            }
            IkeEvent::NegotiationFailed {
                crypto_map,
                peer,
                reason,
            } => {
                say(
                    now,
                    name,
                    format!("negotiation with {peer} failed (map {crypto_map:?}): {reason:?}"),
                );
            }
            IkeEvent::PeerDead { peer, .. } => {
                say(now, name, format!("DPD: peer {peer} declared dead"))
            }
            other => say(now, name, format!("{other:?}")),
        }
    }

    /// `ChildSaEstablished`: install the pair; on the active gateway, replicate it and
    /// inject its route.
    fn install_child(&mut self, i: usize, cs: &ChildSa) {
        let now = self.now;
        let n = &mut self.nodes[i];
        let (ie, ia) = cs.inbound_keys();
        let (oe, oa) = cs.outbound_keys();
        let isa = EspSa::new(cs.inbound.clone(), ie, ia, now).expect("inbound SA");
        let osa = EspSa::new(cs.outbound.clone(), oe, oa, now).expect("outbound SA");
        let h =
            n.dp.install_pair(cs.crypto_map, isa, osa)
                .expect("room in the SADB");
        let mode = if cs.inbound.udp_encap.is_some() {
            "Tunnel UDP-Encaps"
        } else {
            "Tunnel"
        };
        say(
            now,
            n.name,
            format!(
                "%CRYPTO-5-SESSION_STATUS: IPsec SA pair up with {}: in {:#010x} / out {:#010x}, {}, {mode}",
                cs.peer,
                cs.inbound.spi,
                cs.outbound.spi,
                transform_name(&cs.inbound.transform)
            ),
        );
        let cookies = n
            .ike
            .isakmp_status()
            .find(|s| s.conn_id == cs.conn_id)
            .map_or([0; 16], |s| {
                let mut c = [0u8; 16];
                c[..8].copy_from_slice(&s.initiator_cookie);
                c[8..].copy_from_slice(&s.responder_cookie);
                c
            });
        if let Some(ha) =
            n.ha.as_deref_mut()
                .filter(|h| h.sync.role() == HaRole::Active)
        {
            let rec = SaPairRecord {
                sa_group: cs.crypto_map,
                peer: cs.peer.ip(),
                ike_cookies: cookies,
                inbound: cs.inbound.clone(),
                outbound: cs.outbound.clone(),
                inbound_keys: SaKeys::new(ie, ia).expect("key sizes"),
                outbound_keys: SaKeys::new(oe, oa).expect("key sizes"),
                progress: SaProgress::fresh(cs.inbound.esn, cs.inbound.replay_window),
            };
            ha.sync
                .sa_installed(now, rec, Some(h))
                .expect("room in the sync table");
            if let Some(sel) = cs.inbound.selector {
                ha.rri
                    .sa_up(cs.inbound.spi, &sel, cs.peer.ip())
                    .expect("room for the route");
            }
            say(
                now,
                n.name,
                "HA: pair replicated to the standby, reverse route requested",
            );
        }
    }

    fn remove_pair(&mut self, i: usize, inbound_spi: u32) {
        let n = &mut self.nodes[i];
        let found =
            n.dp.inbound_sas()
                .find(|(_, sa)| sa.spi() == inbound_spi)
                .map(|(h, _)| h);
        if let Some(h) = found {
            let partner = n.dp.partner_of(Direction::Inbound, h);
            n.dp.remove_inbound(h);
            if let Some(o) = partner {
                n.dp.remove_outbound(o);
            }
        }
        if let Some(ha) = n.ha.as_deref_mut() {
            ha.sync.sa_removed(inbound_spi);
            ha.rri.sa_down(inbound_spi);
        }
    }

    fn on_dp_event(&mut self, i: usize, ev: DataplaneEvent) {
        let now = self.now;
        let n = &mut self.nodes[i];
        let name = n.name;
        match ev.event {
            SaEvent::IdleExpired { spi } => {
                say(
                    now,
                    name,
                    format!(
                        "%CRYPTO-6-IDLE: {:?} SA {spi:#010x} idle for {IDLE_TIME} s: removed",
                        ev.direction
                    ),
                );
                if ev.direction == Direction::Inbound {
                    if let Some(ha) = n.ha.as_deref_mut() {
                        ha.sync.sa_removed(spi);
                        ha.rri.sa_down(spi);
                    }
                    match n.ike.delete_child(now, &mut n.rng, spi) {
                        Ok(()) => say(
                            now,
                            name,
                            format!("sending IPsec DELETE for SPI {spi:#010x} to the peer"),
                        ),
                        Err(e) => say(
                            now,
                            name,
                            format!(
                                "no DELETE sent for {spi:#010x}: {e} (this node's IKE did not negotiate it)"
                            ),
                        ),
                    }
                }
            }
            SaEvent::SoftExpired { spi } if ev.direction == Direction::Inbound => {
                let _ = n.ike.rekey_child(now, &mut n.rng, spi);
            }
            other => say(now, name, format!("{:?} SA: {other:?}", ev.direction)),
        }
    }

    /// VRRP role changes, sync channel sessions and RRI routes of gateway `i`.
    fn ha_events(&mut self, i: usize) -> bool {
        let now = self.now;
        let n = &mut self.nodes[i];
        let name = n.name;
        let Some(ha) = n.ha.as_deref_mut() else {
            return false;
        };
        let mut did = false;
        while let Some(e) = ha.vrrp.poll_event() {
            did = true;
            let VrrpEvent::RoleChanged {
                from, to, reason, ..
            } = e
            else {
                continue;
            };
            say(
                now,
                name,
                format!("%VRRP-6-STATECHANGE: Gi0/1 Grp 1 state {from} -> {to} ({reason:?})"),
            );
            if to == VrrpState::Master {
                let report = ha.sync.activate(now, &mut *n.dp);
                // The IKE SAs (QM_IDLE, nothing sent) and the child records they own.
                let mut ike_sas = 0;
                for r in ha.sync.ike_records() {
                    if n.ike.import_sa(now, r.body).is_ok() {
                        ike_sas += 1;
                    }
                }
                for p in ha.sync.pairs() {
                    let _ = n.ike.import_child(now, &ChildImport::from_ha_record(p));
                }
                if ike_sas > 0 {
                    say(
                        now,
                        name,
                        format!(
                            "HA takeover: {ike_sas} ISAKMP SA(s) imported from the synchronised state (QM_IDLE, nothing sent)"
                        ),
                    );
                }
                for p in ha.sync.pairs() {
                    if let Some(sel) = p.inbound.selector {
                        let _ = ha.rri.sa_up(p.id(), &sel, p.peer);
                    }
                }
                ha.rri.set_active(true);
                if report.pairs > 0 || report.failed > 0 {
                    say(
                        now,
                        name,
                        format!(
                            "HA takeover: {} SA pair(s) installed from the synchronised SADB ({} failed), outbound sequence numbers +{}, inbound windows +{}",
                            report.pairs, report.failed, report.seq_advance, report.window_advance
                        ),
                    );
                    ha.takeover = Some(report);
                }
            } else {
                if ha.sync.role() == HaRole::Active {
                    ha.sync.deactivate(now, &mut *n.dp);
                }
                ha.rri.set_active(false);
            }
        }
        while let Some(e) = ha.chan.poll_event() {
            did = true;
            match e {
                ChannelEvent::PeerUp { session } => {
                    say(
                        now,
                        name,
                        format!("HA sync channel up (session {session:#x})"),
                    );
                    ha.sync.peer_up();
                }
                ChannelEvent::PeerLost => {
                    say(now, name, "HA sync channel: peer lost");
                    ha.sync.peer_lost();
                }
                _ => {}
            }
        }
        let mut changes = Vec::new();
        while let Some(e) = ha.rri.poll_event() {
            changes.push(e);
        }
        for e in changes {
            did = true;
            match e {
                RriEvent::RouteAdd(r) => {
                    say(now, name, format!("RRI: route {} added", show_route(&r)));
                    self.routes.push((r, i));
                }
                RriEvent::RouteRemove(r) => {
                    say(now, name, format!("RRI: route {} removed", show_route(&r)));
                    self.routes.retain(|(x, g)| !(*x == r && *g == i));
                }
            }
        }
        did
    }

    /// Drains router `i`'s events and transmissions. Returns whether anything happened.
    fn pump(&mut self, i: usize) -> bool {
        if !self.nodes[i].alive {
            return false;
        }
        let now = self.now;
        let mut did = false;
        while let Some(e) = self.nodes[i].ike.poll_event() {
            did = true;
            self.on_ike_event(i, e);
        }
        while let Some(e) = self.nodes[i].dp.poll_event() {
            did = true;
            self.on_dp_event(i, e);
        }
        did |= self.ha_events(i);
        let name = self.nodes[i].name;
        while let Some(e) = self.nodes[i].gre.as_mut().and_then(GreTunnel::poll_event) {
            did = true;
            let msg = match e {
                GreEvent::LineProtocolUp => {
                    "Line protocol on Interface Tunnel0, changed state to up".to_string()
                }
                GreEvent::LineProtocolDown => {
                    "Line protocol on Interface Tunnel0, changed state to down".to_string()
                }
                other => format!("Tunnel0: {other:?}"),
            };
            say(now, name, format!("%LINEPROTO-5-UPDOWN: {msg}"));
        }
        let mut buf = vec![0u8; 4096];
        loop {
            let n = &mut self.nodes[i];
            let Some(t) = n.ike.poll_transmit(now, &mut buf) else {
                break;
            };
            if let Some(k) = n.nat_keepalive.as_mut() {
                k.note_sent(now);
            }
            let p = udp(t.src, t.dst, &buf[..t.len]);
            self.send_wan(i, p);
            did = true;
        }
        let n = &mut self.nodes[i];
        if let Some(ka) = n.nat_keepalive.as_mut().and_then(|k| k.poll_transmit(now)) {
            let p = udp(
                SocketAddr::new(v4(n.addr), ka.src_port),
                ka.dst,
                ka.payload(),
            );
            self.send_wan(i, p);
            did = true;
        }
        while let Some(t) = self.nodes[i]
            .gre
            .as_mut()
            .and_then(|g| g.poll_transmit(now, &mut buf))
        {
            let p = buf[..t.len].to_vec();
            self.send_lan(i, p);
            did = true;
        }
        let mut frames = Vec::new();
        let n = &mut self.nodes[i];
        if let Some(ha) = n.ha.as_deref_mut() {
            let other = if i == GW1 { GW2 } else { GW1 };
            while let Some(t) = ha.vrrp.poll_transmit(now, &mut buf) {
                frames.push(Frame::Vrrp {
                    to: other,
                    from: t.src,
                    data: buf[..t.len].to_vec(),
                });
            }
            let _ = ha.sync.poll_send(now, &mut ha.chan);
            while let Some(len) = ha.chan.poll_transmit(now, &mut n.rng, &mut buf) {
                frames.push(Frame::Sync {
                    to: other,
                    data: buf[..len].to_vec(),
                });
            }
        }
        for f in frames {
            did = true;
            self.push(LAN_DELAY, f);
        }
        did
    }

    fn pump_all(&mut self) {
        for _ in 0..100 {
            let mut did = false;
            for i in 0..self.nodes.len() {
                did |= self.pump(i);
            }
            if !did {
                return;
            }
        }
    }

    fn next_event(&self) -> Option<Instant> {
        let timers = self
            .nodes
            .iter()
            .filter(|n| n.alive)
            .flat_map(Node::deadlines);
        self.queue.iter().map(|p| p.at).chain(timers).min()
    }

    /// Runs the world until `end` on the virtual clock.
    fn run_until(&mut self, end: Instant) {
        let mut spins = 0u32;
        loop {
            self.pump_all();
            let next = self.next_event().filter(|&t| t <= end);
            let Some(t) = next else {
                self.now = self.now.max(end);
                self.pump_all();
                return;
            };
            if t > self.now {
                self.now = t;
                spins = 0;
            } else {
                spins += 1;
                assert!(
                    spins < 100_000,
                    "the simulation does not advance at {}",
                    stamp(self.now)
                );
            }
            self.queue.sort_by_key(|p| (p.at, p.seq));
            while self.queue.first().is_some_and(|p| p.at <= self.now) {
                let p = self.queue.remove(0);
                self.deliver(p.frame);
                self.pump_all();
            }
            let now = self.now;
            for n in self.nodes.iter_mut().filter(|n| n.alive) {
                n.fire(now);
            }
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until(end);
    }

    /// One echo from a host on router `i`'s LAN; waits a second for the reply.
    fn ping(&mut self, i: usize, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.ping_seq += 1;
        let seq = self.ping_seq;
        self.send_lan(i, icmp_echo(src, dst, false, seq));
        self.run_for(Duration::from_secs(1));
        self.nodes[i].echo_replies.contains(&seq)
    }

    /// `ping <dst> source <src> repeat <count>`, one per second. Returns the replies.
    fn ping_series(&mut self, i: usize, src: Ipv4Addr, dst: Ipv4Addr, count: usize) -> usize {
        println!(
            "{}#ping {dst} source {src} repeat {count}",
            self.nodes[i].name
        );
        println!("Sending {count}, 60-byte ICMP Echos to {dst}, timeout is 1 seconds:");
        let mut line = String::new();
        for _ in 0..count {
            line.push(if self.ping(i, src, dst) { '!' } else { '.' });
        }
        let ok = line.matches('!').count();
        println!("{line}");
        println!(
            "Success rate is {} percent ({ok}/{count})",
            ok * 100 / count
        );
        ok
    }

    // ------------------------------------------------------------- show commands ----

    fn prompt(&self, i: usize, cmd: &str) -> bool {
        let n = &self.nodes[i];
        if n.alive {
            println!("{}#{cmd}", n.name);
        } else {
            println!("{}#{cmd}\n  (no answer: {} is down)", n.name, n.name);
        }
        n.alive
    }

    fn show_isakmp(&self, i: usize, detail: bool) {
        let cmd = if detail {
            "show crypto isakmp sa detail"
        } else {
            "show crypto isakmp sa"
        };
        if !self.prompt(i, cmd) {
            return;
        }
        let n = &self.nodes[i];
        if detail {
            println!("Codes: C - IKE configuration mode, D - Dead Peer Detection");
            println!("       K - Keepalives, N - NAT-traversal");
            println!("       psk - Preshared key, rsig - RSA signature");
        }
        println!("IPv4 Crypto ISAKMP SA");
        if detail {
            println!(
                "C-id  Local                Remote               Status Encr Hash Auth DH Lifetime Cap."
            );
        } else {
            println!("dst             src             state          conn-id slot status");
        }
        let mut any = false;
        for s in n.ike.isakmp_status() {
            any = true;
            let status = if s.state == IsakmpState::QmIdle {
                "ACTIVE"
            } else {
                "PENDING"
            };
            if !detail {
                let (dst, src) = match s.role {
                    Role::Initiator => (s.remote.ip(), s.local.ip()),
                    Role::Responder => (s.local.ip(), s.remote.ip()),
                };
                println!(
                    "{:<15} {:<15} {:<14} {:>7} {:>4} {status}",
                    dst.to_string(),
                    src.to_string(),
                    s.state.to_string(),
                    s.conn_id,
                    0
                );
                continue;
            }
            let encr = match s.encryption {
                Some(CipherAlg::Aes128Cbc) => "aes".to_string(),
                Some(CipherAlg::Aes256Cbc) => "aes256".to_string(),
                Some(CipherAlg::TripleDesCbc) => "3des".to_string(),
                other => format!("{other:?}"),
            };
            let hash = match s.hash {
                Some(HashAlg::Sha1) => "sha".to_string(),
                Some(HashAlg::Sha256) => "sha256".to_string(),
                other => format!("{other:?}"),
            };
            let dh = s.group.map_or(0, DhGroup::number);
            let life = s.lifetime_left.map_or(0, Duration::as_secs);
            let life = format!("{:02}:{:02}:{:02}", life / 3600, life / 60 % 60, life % 60);
            println!(
                "{:<5} {:<20} {:<20} {status} {encr:<4} {hash:<4} psk  {dh:<2} {life} {}",
                s.conn_id,
                s.local.to_string(),
                s.remote.to_string(),
                s.capabilities
            );
            println!(
                "      Engine-id:Conn-id = SW:{}, role {:?}",
                s.conn_id, s.role
            );
            println!(
                "      NAT-T: local behind NAT: {}, peer behind NAT: {}",
                yes(s.nat.local_behind_nat),
                yes(s.nat.remote_behind_nat)
            );
            if let Some(d) = s.dpd {
                let quiet = (self.now - d.last_proof_of_life).as_millis();
                println!(
                    "      DPD: peer announced DPD: {}, probed: {}, last proof of life {}.{:03} s ago, R-U-THERE sent {}, acked {}, unanswered now {}",
                    yes(d.peer_dpd),
                    yes(d.probed),
                    quiet / 1000,
                    quiet % 1000,
                    d.counters.sent,
                    d.counters.acked,
                    d.unanswered
                );
            }
        }
        if !any {
            println!("(no ISAKMP SAs)");
        }
        println!();
    }

    /// `show crypto ipsec sa` through ports/std's renderer, whole or `| include`d.
    fn show_ipsec(&self, i: usize, full: bool) {
        let cmd = if full {
            "show crypto ipsec sa"
        } else {
            "show crypto ipsec sa | include peer|pkts encaps|pkts decaps|spi:|settings|replay failed"
        };
        if !self.prompt(i, cmd) {
            return;
        }
        let n = &self.nodes[i];
        let pairs: Vec<SaPair<'_, SoftCrypto, 2>> =
            n.dp.inbound_sas()
                .map(|(h, sa)| SaPair {
                    interface: "GigabitEthernet0/1",
                    map_tag: "vpn",
                    local: sa.config().local.unwrap_or(v4(n.addr)),
                    peer: sa.config().remote.unwrap_or(v4(Ipv4Addr::UNSPECIFIED)),
                    inbound: Some(sa),
                    outbound: n
                        .dp
                        .partner_of(Direction::Inbound, h)
                        .and_then(|o| n.dp.outbound_sa(o)),
                })
                .collect();
        if pairs.is_empty() {
            println!("interface: GigabitEthernet0/1\n    Crypto map tag: vpn\n   (no IPsec SAs)\n");
            return;
        }
        let text = crypto_ipsec_sa(self.now, &pairs);
        if full {
            print!("{text}");
            return;
        }
        let keep = [
            "current_peer",
            "#pkts encaps",
            "#pkts decaps",
            "spi: 0x",
            "in use settings",
            "replay failed",
        ];
        for l in text.lines().filter(|l| keep.iter().any(|k| l.contains(k))) {
            println!("{l}");
        }
        println!();
    }

    fn show_nat(&self) {
        println!("nat-router#show ip nat translations");
        println!(
            "Pro Inside global         Inside local          Outside local         Outside global     packets"
        );
        for e in &self.nat.table {
            let (g, l, o) = (
                e.global.to_string(),
                e.inside.to_string(),
                e.outside.to_string(),
            );
            println!("udp {g:<21} {l:<21} {o:<21} {o:<18} {}", e.packets);
        }
        println!();
    }

    fn show_vrrp(&self) {
        for i in [GW1, GW2] {
            if !self.prompt(i, "show vrrp brief") {
                continue;
            }
            let Some(ha) = self.nodes[i].ha.as_deref() else {
                continue;
            };
            let v = &ha.vrrp;
            println!("Interface  Grp Pri Time  Own Pre State   Master addr     Group addr");
            let master = v
                .master_ip()
                .map_or_else(|| "unknown".to_string(), |a| a.to_string());
            println!(
                "Gi0/1      {:<3} {:<3} {:<5} {:<3} {:<3} {:<7} {master:<15} {VIP}",
                v.config().vrid,
                v.priority(),
                v.master_down_interval().as_millis(),
                "",
                if v.config().preempt { "Y" } else { "N" },
                v.state().to_string(),
            );
        }
        println!();
    }

    fn show_ha(&self, i: usize) {
        if !self.prompt(i, "show crypto ipsec ha") {
            return;
        }
        let Some(ha) = self.nodes[i].ha.as_deref() else {
            return;
        };
        print!(
            "{}",
            HaStatus::collect(self.now, 1, &ha.vrrp, &ha.sync, &ha.chan)
        );
        for s in ha.sync.sa_status() {
            println!("{s}");
        }
        println!();
    }

    fn show_routes(&self) {
        println!(
            "core-router#show ip route 10.0.68.0 255.255.255.0   (RRI routes redistributed by the gateways)"
        );
        if self.routes.is_empty() {
            println!("% Network not in table");
        }
        for (r, g) in &self.routes {
            println!(
                "S     {}, injected by {}",
                show_route(r),
                self.nodes[*g].name
            );
        }
        println!();
    }
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn show_route(r: &Route) -> String {
    let via = match r.next_hop {
        NextHop::Gateway(a) => format!("via {a}"),
        NextHop::Interface(k) => format!("is directly connected, interface #{k}"),
    };
    format!(
        "{}/{} [{}/0] {via} tag {}",
        r.dest, r.prefix_len, r.distance, r.tag
    )
}

// ---------------------------------------------------------------------- steps ----

fn header(title: &str) {
    println!();
    println!("==================================================================================");
    println!("== {title}");
    println!("==================================================================================");
}

fn bring_up(w: &mut World) {
    header("0. Bring-up: VRRP elects the active hub gateway, the HA sync channel comes up");
    w.run_for(Duration::from_secs(5));
    w.show_vrrp();
    w.show_ha(GW1);
    w.show_ha(GW2);
}

fn step1_main_mode_quick_mode(w: &mut World) {
    header("1. Main Mode and Quick Mode, started by the spoke's first packet");
    println!("No SA yet: the first echo matches ACL 100, the data plane answers NoSa, the spoke");
    println!("calls ike.initiate(crypto map vpn 10): Main Mode (6 messages) then Quick Mode (3).");
    w.capture = true;
    w.ping_series(SPOKE, SPOKE_HOST, HUB_HOST, 5);
    w.capture = false;
    println!();
    w.show_isakmp(SPOKE, false);
    w.show_isakmp(GW1, false);
    w.show_ipsec(SPOKE, false);
}

fn step2_traffic(w: &mut World) {
    header("2. Traffic through ESP, both ways");
    w.ping_series(SPOKE, SPOKE_HOST, HUB_HOST, 5);
    let hub = w.vip_owner().expect("an active hub gateway");
    w.ping_series(hub, HUB_HOST, SPOKE_HOST, 5);
    println!();
    w.show_ipsec(hub, true);
    w.show_ipsec(SPOKE, false);
}

fn step3_nat_t(w: &mut World) {
    header("3. NAT-T: detection, floating to 4500, UDP-encapsulated ESP, NAT keepalives");
    println!("NAT-D in MM3/MM4 showed the spoke's address was rewritten, so from MM5 on IKE runs");
    println!("on UDP 4500 (with the non-ESP marker) and ESP is carried in UDP 4500 (RFC 3948).");
    println!();
    w.show_nat();
    w.show_isakmp(SPOKE, true);
    w.show_isakmp(GW1, true);
    println!("One echo, as seen on the public segment (after the NAT):");
    w.capture = true;
    w.ping(SPOKE, SPOKE_HOST, HUB_HOST);
    println!();
    println!("The tunnel now idles for 65 s. The spoke (behind the NAT) keeps its mapping open");
    println!("with NAT keepalives every 20 s of silence; the hub, not behind a NAT, sends none:");
    w.run_for(Duration::from_secs(65));
    w.capture = false;
    let sent = w.nodes[SPOKE]
        .nat_keepalive
        .as_ref()
        .map_or(0, NatKeepalive::sent);
    let hub = w.vip_owner().expect("an active hub gateway");
    println!(
        "NAT keepalives: sent by spoke-1-east {sent}, received by {} {}, sent by {} {}",
        w.nodes[hub].name,
        w.nodes[hub].dp.counters().nat_keepalives,
        w.nodes[hub].name,
        w.nodes[hub]
            .nat_keepalive
            .as_ref()
            .map_or(0, NatKeepalive::sent)
    );
    println!();
    w.show_nat();
    w.show_ipsec(hub, false);
}

fn step4_dpd(w: &mut World) {
    header("4. Dead Peer Detection on an idle, then a busy tunnel (crypto isakmp keepalive 10 2)");
    let vip = v4(VIP);
    let dpd = |w: &World| {
        w.nodes[SPOKE]
            .ike
            .dpd_status(vip)
            .expect("DPD tracks the hub")
    };
    let d = dpd(w);
    let quiet = (w.now - d.last_proof_of_life).as_secs();
    println!("Idle: nothing from the hub for {quiet} s, but nothing to send either: on-demand DPD");
    println!(
        "has sent {} R-U-THERE and armed {} timer (an idle tunnel costs no message).",
        d.counters.sent,
        if d.deadline.is_none() { "no" } else { "a" }
    );
    println!();
    println!("Traffic after the idle period: the first packet makes the spoke ask R-U-THERE:");
    w.capture = true;
    w.ping(SPOKE, SPOKE_HOST, HUB_HOST);
    w.capture = false;
    let d = dpd(w);
    let hub = w.vip_owner().expect("an active hub gateway");
    println!(
        "DPD on spoke-1-east: R-U-THERE sent {}, R-U-THERE-ACK received {}; {} answered {}",
        d.counters.sent,
        d.counters.acked,
        w.nodes[hub].name,
        w.nodes[hub].ike.counters().dpd_answered
    );
    println!();
    println!("Busy: 20 echoes, one a second. Inbound ESP is proof of life, so no R-U-THERE:");
    let before = d.counters.sent;
    w.ping_series(SPOKE, SPOKE_HOST, HUB_HOST, 20);
    println!(
        "R-U-THERE sent during the busy period: {}",
        dpd(w).counters.sent - before
    );
    println!();
    w.show_isakmp(SPOKE, true);
}

fn step5_gre(w: &mut World) {
    header("5. GRE over IPsec, with keepalives (interface Tunnel0, keepalive 5 3)");
    let hub = w.vip_owner().expect("an active hub gateway");
    println!("Tunnel0 runs between 10.0.68.1 (spoke) and 10.1.1.1 (hub): its GRE packets match");
    println!("ACL 100 and ride the ESP SAs negotiated in step 1. A keepalive is a GRE packet");
    println!("carrying a GRE packet addressed back to its sender: the peer just routes it back.");
    let now = w.now;
    let ka = GreKeepalive::new(5, 3);
    let spoke_cfg = GreConfig::new(SPOKE_TUNNEL_END, HUB_TUNNEL_END).with_keepalive(ka);
    let hub_cfg = GreConfig::new(HUB_TUNNEL_END, SPOKE_TUNNEL_END).with_keepalive(ka);
    w.nodes[SPOKE].gre = Some(GreTunnel::new(spoke_cfg, now).expect("valid tunnel"));
    w.nodes[hub].gre = Some(GreTunnel::new(hub_cfg, now).expect("valid tunnel"));
    w.run_for(Duration::from_secs(30));
    println!();
    println!("GRE also carries what a plain IPsec SA cannot, e.g. an OSPF hello to 224.0.0.5:");
    let hello = ipv4(
        Ipv4Addr::new(172, 16, 0, 1),
        Ipv4Addr::new(224, 0, 0, 5),
        89,
        &[0u8; 44],
    );
    let mut buf = vec![0u8; 2048];
    let g = w.nodes[SPOKE].gre.as_mut().expect("tunnel");
    let len = g
        .encapsulate(w.now, ethertype::IPV4, &hello, &mut buf)
        .expect("fits");
    w.send_lan(SPOKE, buf[..len].to_vec());
    w.run_for(Duration::from_secs(1));
    println!();
    for i in [SPOKE, hub] {
        w.prompt(i, "show interface tunnel0");
        if let Some(g) = w.nodes[i].gre.as_ref() {
            print!("Tunnel0 is up, line protocol is ");
            let s = g.status().to_string();
            print!(
                "{}",
                s.strip_prefix("Tunnel is up, line protocol is ")
                    .unwrap_or(&s)
            );
        }
        println!();
    }
    w.show_ipsec(SPOKE, false);
    println!("interface Tunnel0 / shutdown (on both ends; the rest of the demo is plain IPsec)");
    w.nodes[SPOKE].gre = None;
    w.nodes[hub].gre = None;
}

fn step6_failover(w: &mut World) {
    header("6. vpn-gw1-east fails; vpn-gw2-east takes over statefully, RRI moves the route");
    println!("gw1 (VRRP Master for 198.51.100.10) has streamed its SADB to gw2 over the encrypted");
    println!("sync channel (replay-interval inbound 1 outbound 1, checked every 100 ms):");
    println!();
    w.show_ha(GW1);
    w.show_ha(GW2);
    w.show_routes();
    let spis_before = w.nodes[SPOKE].spis();
    let ike_before = w.nodes[SPOKE].ike.counters().tx_datagrams;
    w.ping_series(SPOKE, SPOKE_HOST, HUB_HOST, 3);
    println!();
    say(
        w.now,
        "vpn-gw1-east",
        "*** power failure *** (no goodbye: VRRP, IKE and the sync channel just stop)",
    );
    w.nodes[GW1].alive = false;
    w.routes.retain(|(_, g)| *g != GW1);
    say(
        w.now,
        "core-router",
        "routes learned from vpn-gw1-east withdrawn (IGP adjacency down)",
    );
    w.ping_series(SPOKE, SPOKE_HOST, HUB_HOST, 10);
    w.ping_series(GW2, HUB_HOST, SPOKE_HOST, 5);
    println!();
    let spis_after = w.nodes[SPOKE].spis();
    let ike_sent = w.nodes[SPOKE].ike.counters().tx_datagrams - ike_before;
    let report = w.nodes[GW2]
        .ha
        .as_ref()
        .and_then(|h| h.takeover)
        .expect("gw2 took over");
    println!(
        "Takeover by vpn-gw2-east: {} pair(s) installed, outbound seq +{}, inbound window +{}",
        report.pairs, report.seq_advance, report.window_advance
    );
    println!(
        "spoke-1-east SAs before {} after {}: {}",
        fmt_spis(&spis_before),
        fmt_spis(&spis_after),
        if spis_before == spis_after {
            "the same SAs"
        } else {
            "CHANGED"
        }
    );
    println!(
        "IKE datagrams sent by spoke-1-east during the failover: {ike_sent} (no renegotiation)"
    );
    println!();
    w.show_vrrp();
    w.show_routes();
    w.show_ha(GW2);
    w.show_ipsec(GW2, true);
    w.show_isakmp(GW2, false);
    println!("The ISAKMP SA was synchronised too (ipsec-ike export_sa/import_sa): gw2 holds the");
    println!("spoke's IKE SA in QM_IDLE, answers DPD, Quick Mode and DELETE from the VIP with the");
    println!("same cookies and keys; the spoke never noticed the failover.");
}

fn step7_idle(w: &mut World) {
    header("7. SA idle timeout (crypto ipsec security-association idle-time 120)");
    let sa = w.nodes[SPOKE]
        .dp
        .inbound_sas()
        .next()
        .map(|(h, _)| h)
        .expect("an SA");
    let deadline = w.nodes[SPOKE]
        .dp
        .idle_deadline(Direction::Inbound, sa)
        .expect("idle time set");
    println!(
        "No more traffic. spoke-1-east's pair is deleted at {} unless a packet flows.",
        stamp(deadline)
    );
    w.run_until(Instant::from_millis(deadline.as_millis() - 1000));
    w.capture = true;
    w.run_for(Duration::from_secs(2));
    w.capture = false;
    println!();
    w.show_ipsec(SPOKE, false);
    w.show_ipsec(GW2, false);
    w.show_isakmp(SPOKE, false);
    w.show_routes();
    w.show_ha(GW2);
    println!(
        "The ISAKMP SA stays (as on IOS); a new packet would bring up new IPsec SAs with Quick Mode."
    );
}

/// Active HA node: exports every established IKE SA into the sync state (on
/// `Phase1Established` and on each sync tick; unchanged bodies cost one copy).
fn sync_ike(ike: &Ike, ha: &mut Ha, now: Instant) {
    if ha.sync.role() != HaRole::Active {
        return;
    }
    let sas: Vec<(u32, [u8; 16])> = ike
        .isakmp_status()
        .filter(|s| s.state == IsakmpState::QmIdle)
        .map(|s| {
            let mut c = [0u8; 16];
            c[..8].copy_from_slice(&s.initiator_cookie);
            c[8..].copy_from_slice(&s.responder_cookie);
            (s.conn_id, c)
        })
        .collect();
    let mut body = [0u8; ipsec_ike::v1::MAX_EXPORT_LEN];
    for (conn_id, cookies) in sas {
        // The export holds SKEYID_d/a/e: it only leaves over the encrypted channel.
        if let Ok(n) = ike.export_sa(now, conn_id, &mut body) {
            let _ = ha.sync.ike_updated(cookies, &body[..n]);
        }
    }
    body.fill(0);
}

fn fmt_spis(s: &[(u32, u32)]) -> String {
    s.iter()
        .map(|(i, o)| format!("in {i:#010x}/out {o:#010x}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn run() {
    println!("== Figure 3-1 / 3-14 on a virtual clock: spoke-1-east behind NAT, vpn-gw1-east and");
    println!("   vpn-gw2-east sharing VIP {VIP} (physical {GW1_ADDR}, {GW2_ADDR})");
    println!(
        "   crypto isakmp policy 10: aes sha pre-share group 2 / crypto isakmp keepalive 10 2"
    );
    println!(
        "   crypto ipsec transform-set ESP-AES-SHA {} / idle-time {IDLE_TIME}",
        transform_name(&TRANSFORM)
    );
    println!(
        "   access-list 100 permit ip 10.0.68.0 0.0.0.255 10.1.1.0 0.0.0.255 (mirrored on the hubs)"
    );
    println!("   nat-router: inside {SPOKE_ADDR} -> {NAT_PUBLIC}, UDP ports remapped from 40000");
    let mut w = World::new();
    bring_up(&mut w);
    step1_main_mode_quick_mode(&mut w);
    step2_traffic(&mut w);
    step3_nat_t(&mut w);
    step4_dpd(&mut w);
    step5_gre(&mut w);
    step6_failover(&mut w);
    step7_idle(&mut w);
    println!();
    println!("== done at {} of virtual time", stamp(w.now));
}

fn main() {
    // Generous stack: the SADBs, IKE tables and sync buffers are fixed-size arrays.
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(run)
        .expect("thread")
        .join()
        .expect("the demo ran to the end");
}
