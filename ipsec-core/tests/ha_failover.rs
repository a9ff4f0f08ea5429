//! Stateful failover in a simulated network, on a virtual clock.
//!
//! ```text
//!   spoke 203.0.113.5 ──(ESP, to the VIP 192.0.2.100)──┬── gw1 192.0.2.1 (VRRP 110)
//!   10.0.68.0/24                                        └── gw2 192.0.2.2 (VRRP 100)
//!                                      LAN 10.0.1.0/24 behind both; sync link gw1 <-> gw2
//! ```
//!
//! The spoke and the gateways hold real `EspSa<SoftCrypto>` pairs (AES-256-CBC +
//! HMAC-SHA-256-128), manually keyed as a `ChildSa` would give them. Traffic flows both
//! ways at 100 packets/s through whichever gateway owns the VIP. gw1 (VRRP Master) streams
//! its SADB to gw2 over the encrypted sync channel (with 5 % datagram loss), at the replay
//! interval. gw1 dies mid-stream; gw2's master-down timer fires, it takes over with the SAs
//! it received, and the spoke carries on with the same SAs (no IKE at all in this test:
//! the spoke could not renegotiate even if it wanted to). Then gw1 comes back as Standby
//! and receives a full snapshot.
//!
//! Checked on every ESP packet: no sequence number is ever used twice on either SA; no
//! packet accepted by gw1 is accepted again by gw2 (all of them are replayed at gw2); the
//! spoke's SAs never see an ICV or replay failure. Lost packets around the switchover
//! are counted, bounded and printed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::needless_range_loop,
    missing_docs
)]

use std::collections::{BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr};

use hal_traits::route::{NextHop, Route};
use hal_traits::{CipherAlg, CryptoError, MacAlg, SecretBytes, SecureRng};
use ipsec_core::dataplane::{Dataplane, DataplaneError, Inbound, Outbound};
use ipsec_core::esp::{Direction, Encryption, EspConfig, EspError, EspSa, Transform};
use ipsec_core::ha::HaRole;
use ipsec_core::ha::channel::{ChannelConfig, ChannelEvent, Received, Suite, SyncChannel};
use ipsec_core::ha::record::{SaKeys, SaPairRecord, SaProgress};
use ipsec_core::ha::rri::{Rri, RriConfig, RriEvent};
use ipsec_core::ha::status::HaStatus;
use ipsec_core::ha::sync::{HaSync, ReplayInterval, SyncConfig};
use ipsec_core::ha::vrrp::{Vrrp, VrrpConfig, VrrpEvent, VrrpState};
use ipsec_core::spd::{AddrRange, Policy, PolicyAction, Selector};
use ipsec_core::wire::ipv4::Ipv4Repr;
use ipsec_core::wire::proto;
use ipsec_core::{Duration, Instant};
use ipsec_soft_crypto::SoftCrypto;

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const GW1: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const GW2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const SPOKE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
const LAN_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 10);
const SPOKE_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 68, 10);
const SPI_TO_GW: u32 = 0x1001;
const SPI_TO_SPOKE: u32 = 0x2001;
const MAP: u32 = 10;

const T: Transform = Transform {
    enc: Encryption::Cbc(CipherAlg::Aes256Cbc),
    auth: Some(MacAlg::HmacSha256_128),
};

struct Rng(u64);
impl SecureRng for Rng {
    fn fill_bytes(&mut self, d: &mut [u8]) -> Result<(), CryptoError> {
        for b in d {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            *b = (self.0 >> 56) as u8;
        }
        Ok(())
    }
}

fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

fn selector_gw() -> Selector {
    Selector::new(
        AddrRange::from_prefix(v4(Ipv4Addr::new(10, 0, 1, 0)), 24).unwrap(),
        AddrRange::from_prefix(v4(Ipv4Addr::new(10, 0, 68, 0)), 24).unwrap(),
    )
    .unwrap()
}

/// (gw inbound, gw outbound) configs and keys, as a ChildSa would give them to the gateway.
fn gw_configs() -> (EspConfig, EspConfig) {
    let mut i = EspConfig::tunnel(SPI_TO_GW, Direction::Inbound, T, v4(VIP), v4(SPOKE));
    i.selector = Some(selector_gw());
    let mut o = EspConfig::tunnel(SPI_TO_SPOKE, Direction::Outbound, T, v4(VIP), v4(SPOKE));
    o.selector = Some(selector_gw());
    (i, o)
}

const K_TO_GW: ([u8; 32], [u8; 32]) = ([0x11; 32], [0x22; 32]);
const K_TO_SPOKE: ([u8; 32], [u8; 32]) = ([0x33; 32], [0x44; 32]);

fn udp_packet(src: Ipv4Addr, dst: Ipv4Addr, id: u32) -> Vec<u8> {
    let mut payload = vec![0u8; 8 + 4 + 52];
    payload[0..2].copy_from_slice(&4000u16.to_be_bytes());
    payload[2..4].copy_from_slice(&5000u16.to_be_bytes());
    let ulen = payload.len() as u16;
    payload[4..6].copy_from_slice(&ulen.to_be_bytes());
    payload[8..12].copy_from_slice(&id.to_be_bytes());
    let repr = Ipv4Repr {
        src,
        dst,
        protocol: proto::UDP,
        payload_len: payload.len(),
        ttl: 64,
        tos: 0,
        ident: id as u16,
        dont_frag: false,
        more_frags: false,
        frag_offset: 0,
    };
    let mut p = vec![0u8; repr.buffer_len()];
    repr.emit(&mut p).unwrap();
    p[20..].copy_from_slice(&payload);
    p
}

fn packet_id(inner: &[u8]) -> u32 {
    u32::from_be_bytes(inner[28..32].try_into().unwrap())
}

/// The ESP sequence number of an outer IPv4 + ESP packet.
fn esp_seq(outer: &[u8]) -> u32 {
    u32::from_be_bytes(outer[24..28].try_into().unwrap())
}

type Dp = Dataplane<SoftCrypto, 8, 4>;
type Chan = SyncChannel<SoftCrypto, 32, 1400>;

struct Gw {
    name: &'static str,
    addr: Ipv4Addr,
    alive: bool,
    dp: Dp,
    vrrp: Vrrp,
    sync: HaSync<8, 2>,
    chan: Chan,
    rri: Rri<8, 8>,
    routes: Vec<RriEvent>,
    takeover: Option<(Instant, ipsec_core::ha::sync::TakeoverReport)>,
}

fn gateway(
    name: &'static str,
    addr: Ipv4Addr,
    prio: u8,
    node: u32,
    peer: u32,
    sync_cfg: SyncConfig,
    now: Instant,
) -> Gw {
    let mut dp = Dp::new(PolicyAction::Discard);
    dp.spd_mut()
        .insert(Policy {
            seq: 10,
            selector: selector_gw(),
            action: PolicyAction::Protect { sa_group: MAP },
        })
        .unwrap();
    let mut vc = VrrpConfig::new(1, addr, VIP);
    vc.priority = prio;
    vc.adver_interval = 10; // 100 ms
    vc.preempt = false;
    let mut vrrp = Vrrp::new(vc).unwrap();
    vrrp.startup(now);
    let mut cc = ChannelConfig::new(
        node,
        peer,
        Suite::AesCbcHmacSha256,
        SecretBytes::from_slice(b"ha sync key of the pair, 32 B!!").unwrap(),
    );
    cc.retransmit = Duration::from_millis(50);
    cc.heartbeat = Duration::from_millis(300);
    cc.dead_interval = Duration::from_secs(1);
    cc.hello_interval = Duration::from_millis(200);
    let mut rri = Rri::new(RriConfig::default());
    rri.bind_redundancy();
    Gw {
        name,
        addr,
        alive: true,
        dp,
        vrrp,
        sync: HaSync::new(sync_cfg, HaRole::Standby, now),
        chan: Chan::new(cc, now).unwrap(),
        rri,
        routes: Vec::new(),
        takeover: None,
    }
}

impl Gw {
    fn owns_vip(&self) -> bool {
        self.alive && self.vrrp.state() == VrrpState::Master
    }

    /// Reacts to redundancy and channel events (the host glue of an HA gateway).
    fn glue(&mut self, now: Instant) {
        while let Some(VrrpEvent::RoleChanged { to, .. }) = self.vrrp.poll_event() {
            match to {
                VrrpState::Master => {
                    let report = self.sync.activate(now, &mut self.dp);
                    // Every pair now installed gets its route (only injected while Active).
                    for p in self.sync.pairs() {
                        let _ =
                            self.rri
                                .sa_up(p.id(), p.inbound.selector.as_ref().unwrap(), p.peer);
                    }
                    self.rri.set_active(true);
                    self.takeover = Some((now, report));
                }
                _ => {
                    if self.sync.role() == HaRole::Active {
                        self.sync.deactivate(now, &mut self.dp);
                    }
                    self.rri.set_active(false);
                }
            }
        }
        while let Some(e) = self.chan.poll_event() {
            match e {
                ChannelEvent::PeerUp { .. } => self.sync.peer_up(),
                ChannelEvent::PeerLost => self.sync.peer_lost(),
                _ => {}
            }
        }
        while let Some(ev) = self.rri.poll_event() {
            self.routes.push(ev);
        }
    }
}

/// VRRP on the LAN for one millisecond: timers, then each live gateway's adverts to the
/// other (multicast, no loss).
fn vrrp_step(gws: &mut [Gw; 2], now: Instant, buf: &mut [u8]) {
    for i in 0..2 {
        if !gws[i].alive {
            continue;
        }
        if gws[i].vrrp.poll_timeout().is_some_and(|t| t <= now) {
            gws[i].vrrp.handle_timeout(now);
        }
        while let Some(t) = gws[i].vrrp.poll_transmit(now, buf) {
            let adv = buf[..t.len].to_vec();
            if gws[1 - i].alive {
                let src = gws[i].addr;
                let _ = gws[1 - i].vrrp.handle_advert(now, src, &adv);
            }
        }
    }
}

#[derive(Default)]
struct Wire {
    /// (deliver at, to gw index, datagram)
    sync: VecDeque<(Instant, usize, Vec<u8>)>,
}

struct Outcome {
    lost_to_lan: usize,
    lost_to_spoke: usize,
    sent_each_way: usize,
    detection_ms: u64,
    seq_advance: u64,
    window_advance: u64,
    gw1_last_out_seq: u32,
    gw2_first_out_seq: u32,
    gw1_top_in: u32,
    gw2_first_in: u32,
}

fn run(replay: ReplayInterval, loss_percent: u64) -> Outcome {
    let sync_cfg = SyncConfig {
        replay,
        seq_margin: 16,
        window_margin: 4,
        ..SyncConfig::default()
    };
    let t0 = Instant::ZERO;
    let mut gws = [
        gateway("gw1", GW1, 110, 1, 2, sync_cfg, t0),
        gateway("gw2", GW2, 100, 2, 1, sync_cfg, t0),
    ];
    let mut rng = Rng(7);
    let mut loss = Rng(99);
    let mut wire = Wire::default();

    // The spoke's SAs (mirror image).
    let mut sc_out = EspConfig::tunnel(SPI_TO_GW, Direction::Outbound, T, v4(SPOKE), v4(VIP));
    sc_out.selector = Some(selector_gw().mirrored());
    let mut sc_in = EspConfig::tunnel(SPI_TO_SPOKE, Direction::Inbound, T, v4(SPOKE), v4(VIP));
    sc_in.selector = Some(selector_gw().mirrored());
    let mut spoke_out: EspSa<SoftCrypto> = EspSa::new(sc_out, &K_TO_GW.0, &K_TO_GW.1, t0).unwrap();
    let mut spoke_in: EspSa<SoftCrypto> =
        EspSa::new(sc_in, &K_TO_SPOKE.0, &K_TO_SPOKE.1, t0).unwrap();

    // Bookkeeping.
    let mut spoke_seqs_seen = BTreeSet::new(); // every ESP packet arriving at the spoke
    let mut gw1_out_seqs = BTreeSet::new();
    let mut gw2_out_seqs = BTreeSet::new();
    let mut accepted_in = [BTreeSet::new(), BTreeSet::new()]; // seqs accepted per gw
    let mut captured_at_gw1: Vec<Vec<u8>> = Vec::new();
    let mut delivered_lan = BTreeSet::new();
    let mut delivered_spoke = BTreeSet::new();
    let mut sent_ids = 0u32;

    let installed_at = Instant::from_millis(500);
    let traffic_from = Instant::from_millis(600);
    let die_at = Instant::from_millis(5_003);
    let return_at = Instant::from_millis(9_000);
    let traffic_until = Instant::from_millis(12_000);
    let end = Instant::from_millis(13_000);
    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; 2048];

    let mut now = t0;
    while now <= end {
        // gw1 dies (no goodbye) and comes back as a fresh node.
        if now == die_at {
            gws[0].alive = false;
        }
        if now == return_at {
            gws[0] = gateway("gw1", GW1, 110, 1, 2, sync_cfg, now);
        }

        // The control plane of the Active node installs the negotiated pair.
        if now == installed_at {
            let gw = gws
                .iter_mut()
                .find(|g| g.owns_vip())
                .expect("a master by now");
            assert_eq!(gw.name, "gw1");
            let (ci, co) = gw_configs();
            let si: EspSa<SoftCrypto> =
                EspSa::new(ci.clone(), &K_TO_GW.0, &K_TO_GW.1, now).unwrap();
            let so: EspSa<SoftCrypto> =
                EspSa::new(co.clone(), &K_TO_SPOKE.0, &K_TO_SPOKE.1, now).unwrap();
            let h = gw.dp.install_pair(MAP, si, so).unwrap();
            let rec = SaPairRecord {
                sa_group: MAP,
                peer: v4(SPOKE),
                ike_cookies: [0xc0; 16],
                inbound: ci.clone(),
                outbound: co,
                inbound_keys: SaKeys::new(&K_TO_GW.0, &K_TO_GW.1).unwrap(),
                outbound_keys: SaKeys::new(&K_TO_SPOKE.0, &K_TO_SPOKE.1).unwrap(),
                progress: SaProgress::fresh(false, 64),
            };
            gw.sync.sa_installed(now, rec, Some(h)).unwrap();
            gw.rri
                .sa_up(SPI_TO_GW, ci.selector.as_ref().unwrap(), v4(SPOKE))
                .unwrap();
            // An opaque IKE SA record, as ipsec-ike will export it.
            gw.sync
                .ike_updated([0xc0; 16], b"opaque IKE SA state")
                .unwrap();
        }

        // Traffic, 100 packets/s each way, through whoever owns the VIP.
        let ms = now.as_millis();
        if now >= traffic_from && now < traffic_until && ms % 10 == 0 {
            sent_ids += 1;
            let id = sent_ids;
            // Spoke -> LAN.
            let inner = udp_packet(SPOKE_HOST, LAN_HOST, id);
            let n = spoke_out
                .encapsulate(now, &inner, None, &mut rng, &mut out)
                .unwrap();
            if let Some(gi) = gws.iter().position(Gw::owns_vip) {
                let seq = esp_seq(&out[..n]);
                let mut pkt = out[..n].to_vec();
                if gi == 0 {
                    captured_at_gw1.push(pkt.clone());
                }
                match gws[gi].dp.process_inbound(now, &mut pkt) {
                    Ok(Inbound::Decapsulated { packet, .. }) => {
                        assert!(accepted_in[gi].insert(seq));
                        assert!(
                            !accepted_in[1 - gi].contains(&seq),
                            "seq {seq} accepted by both gateways"
                        );
                        delivered_lan.insert(packet_id(packet));
                    }
                    Err(DataplaneError::Esp(EspError::Replayed | EspError::TooOld)) => {
                        // The conservative window after a takeover: a counted loss.
                    }
                    other => panic!("{}: unexpected {other:?}", gws[gi].name),
                }
            }
            // LAN -> spoke, through the VIP owner.
            let inner = udp_packet(LAN_HOST, SPOKE_HOST, id);
            if let Some(gi) = gws.iter().position(Gw::owns_vip) {
                if let Ok(Outbound::Protected { len, .. }) =
                    gws[gi].dp.process_outbound(now, &inner, &mut rng, &mut out)
                {
                    let seq = esp_seq(&out[..len]);
                    assert!(
                        spoke_seqs_seen.insert(seq),
                        "sequence number {seq} reused towards the spoke"
                    );
                    if gi == 0 {
                        gw1_out_seqs.insert(seq)
                    } else {
                        gw2_out_seqs.insert(seq)
                    };
                    let mut pkt = out[..len].to_vec();
                    let d = spoke_in
                        .decapsulate(now, &mut pkt)
                        .expect("the spoke accepts every packet");
                    delivered_spoke.insert(packet_id(d.packet));
                }
            }
        }

        // VRRP on the LAN (multicast, no loss).
        vrrp_step(&mut gws, now, &mut buf);

        // Sync: tick every 10 ms on the Active, the channel always.
        for i in 0..2 {
            if !gws[i].alive {
                continue;
            }
            gws[i].glue(now);
            if ms % 10 == 5 {
                let g = &mut gws[i];
                g.sync.tick(now, &g.dp);
            }
            let g = &mut gws[i];
            let _ = g.sync.poll_send(now, &mut g.chan);
            if g.chan.poll_timeout().is_some_and(|t| t <= now) {
                g.chan.handle_timeout(now);
            }
            while let Some(n) = g.chan.poll_transmit(now, &mut rng, &mut buf) {
                let lost = {
                    let mut b = [0u8; 1];
                    loss.fill_bytes(&mut b).unwrap();
                    u64::from(b[0]) * 100 < loss_percent * 256
                };
                if !lost {
                    wire.sync
                        .push_back((now + Duration::from_millis(1), 1 - i, buf[..n].to_vec()));
                }
            }
        }
        while wire.sync.front().is_some_and(|(t, _, _)| *t <= now) {
            let (_, to, mut d) = wire.sync.pop_front().unwrap();
            let g = &mut gws[to];
            if !g.alive {
                continue;
            }
            if let Ok(Received::Data(p)) = g.chan.handle_datagram(now, &mut rng, &mut d) {
                g.sync.handle_payload(now, p).unwrap();
            }
            g.glue(now);
        }

        now = now + Duration::from_millis(1);
    }

    // --- Checks -------------------------------------------------------------------------
    let (takeover_at, report) = gws[1].takeover.expect("gw2 took over");
    assert_eq!(report.pairs, 1);
    assert_eq!(report.failed, 0);
    assert!(takeover_at > die_at);
    let detection_ms = (takeover_at - die_at).as_millis();
    // Master down interval of gw2: 3 x 100 ms + skew (156/256 x 100 ms) ~ 361 ms, plus
    // up to the last advert period.
    assert!(
        detection_ms <= 361 + 100,
        "detection took {detection_ms} ms"
    );

    // No sequence number reused towards the spoke: gw2 starts above anything gw1 used.
    let gw1_last = *gw1_out_seqs.last().unwrap();
    let gw2_first = *gw2_out_seqs.first().unwrap();
    assert!(
        gw2_first > gw1_last,
        "gw2 starts at {gw2_first}, gw1 used {gw1_last}"
    );
    assert!(u64::from(gw2_first - gw1_last) <= report.seq_advance + 1);
    // The spoke never refused anything and never renegotiated (same SAs throughout).
    assert_eq!(spoke_in.counters().recv_errors, 0);
    assert_eq!(spoke_in.counters().replay_failed, 0);
    assert_eq!(spoke_out.counters().send_errors, 0);
    assert_eq!(spoke_in.spi(), SPI_TO_SPOKE);
    assert_eq!(spoke_out.spi(), SPI_TO_GW);

    // gw1 came back as Standby and holds a full, current snapshot.
    let gw1 = &gws[0];
    assert_eq!(gw1.vrrp.state(), VrrpState::Backup);
    assert_eq!(gw1.sync.role(), HaRole::Standby);
    assert!(gw1.sync.in_sync());
    assert!(gw1.sync.counters().snapshots_received >= 1);
    assert_eq!(gw1.sync.pair_count(), 1);
    assert_eq!(
        gw1.sync.ike_count(),
        1,
        "the opaque IKE record travelled twice"
    );
    let (_, live_out) = gws[1].sync.handles(SPI_TO_GW).unwrap();
    let live = gws[1].dp.outbound_sa(live_out).unwrap().next_seq();
    let copy = gw1.sync.pair(SPI_TO_GW).unwrap().progress.out_next_seq;
    assert!(
        copy <= live && live - copy <= u64::from(replay.outbound) + 1,
        "copy {copy}, live {live}"
    );
    assert!(gw1.routes.is_empty(), "a Standby injects no route");

    // No replayed packet is accepted: every packet gw1 accepted is refused by gw2.
    let mut gw2 = gws.into_iter().nth(1).unwrap();
    let t_replay = end + Duration::from_millis(1);
    let mut refused = 0;
    for mut p in captured_at_gw1.clone() {
        match gw2.dp.process_inbound(t_replay, &mut p) {
            Err(DataplaneError::Esp(EspError::Replayed | EspError::TooOld)) => refused += 1,
            other => panic!("replayed gw1 packet accepted or misrouted: {other:?}"),
        }
    }
    assert_eq!(refused, captured_at_gw1.len());
    let gw1_top = *accepted_in[0].last().unwrap();
    let gw2_first_in = *accepted_in[1].first().unwrap();
    assert!(gw2_first_in > gw1_top);

    // RRI: gw2 injected the spoke's subnet via the spoke once it was Active.
    let want = Route {
        dest: v4(Ipv4Addr::new(10, 0, 68, 0)),
        prefix_len: 24,
        next_hop: NextHop::Gateway(v4(SPOKE)),
        distance: 1,
        tag: 0,
    };
    assert_eq!(gw2.routes, vec![RriEvent::RouteAdd(want)]);

    let sent = sent_ids as usize;
    Outcome {
        lost_to_lan: sent - delivered_lan.len(),
        lost_to_spoke: sent - delivered_spoke.len(),
        sent_each_way: sent,
        detection_ms,
        seq_advance: report.seq_advance,
        window_advance: report.window_advance,
        gw1_last_out_seq: gw1_last,
        gw2_first_out_seq: gw2_first,
        gw1_top_in: gw1_top,
        gw2_first_in,
    }
}

fn big_stack<F: FnOnce() + Send + 'static>(f: F) {
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

fn report(label: &str, o: &Outcome) {
    println!(
        "[{label}] sent {} each way; lost spoke->LAN {}, LAN->spoke {}; VRRP detection {} ms; \
         outbound seq: gw1 last {} -> gw2 first {} (advance {}); inbound: gw1 top {} -> gw2 first accepted {} (window advance {})",
        o.sent_each_way,
        o.lost_to_lan,
        o.lost_to_spoke,
        o.detection_ms,
        o.gw1_last_out_seq,
        o.gw2_first_out_seq,
        o.seq_advance,
        o.gw1_top_in,
        o.gw2_first_in,
        o.window_advance
    );
}

#[test]
fn ha_failover_replay_interval_100_1() {
    big_stack(|| {
        let o = run(
            ReplayInterval {
                inbound: 100,
                outbound: 1,
            },
            5,
        );
        report("inbound 100 outbound 1, 5% sync loss", &o);
        // Losses: the outage (detection time at 100 pps, both ways) plus, inbound, the
        // packets below the conservatively advanced window (at most M + margin).
        let outage = (o.detection_ms / 10 + 2) as usize;
        assert!(o.lost_to_spoke <= outage, "{}", o.lost_to_spoke);
        assert!(
            o.lost_to_lan <= outage + o.window_advance as usize,
            "{}",
            o.lost_to_lan
        );
    });
}

#[test]
fn ha_failover_replay_interval_10_1() {
    big_stack(|| {
        let o = run(
            ReplayInterval {
                inbound: 10,
                outbound: 1,
            },
            0,
        );
        report("inbound 10 outbound 1, no sync loss", &o);
        let outage = (o.detection_ms / 10 + 2) as usize;
        assert!(o.lost_to_spoke <= outage);
        assert!(o.lost_to_lan <= outage + o.window_advance as usize);
    });
}

#[test]
fn ha_returning_node_gets_a_full_snapshot_and_status() {
    big_stack(|| {
        // The end of the failover story on its own: gw2 Active with a pair, gw1 boots
        // and must come up as Standby and receive a full snapshot.
        let sync_cfg = SyncConfig::default();
        let t0 = Instant::ZERO;
        let mut a = gateway("gw2", GW2, 100, 2, 1, sync_cfg, t0);
        // gw1 boots at 1 s, while gw2 is already Master.
        let mut b = gateway("gw1", GW1, 110, 1, 2, sync_cfg, Instant::from_secs(1));
        let mut rng = Rng(3);
        // gw2 becomes Master alone and installs one pair (as after a takeover).
        let mut now = t0;
        let mut buf = vec![0u8; 2048];
        let mut installed = false;
        while now <= Instant::from_secs(3) {
            // gw1 only joins at 1 s: it must come up as Backup behind gw2 (no preempt).
            let nodes: &mut [&mut Gw] = if now >= Instant::from_secs(1) {
                &mut [&mut a, &mut b]
            } else {
                &mut [&mut a]
            };
            for g in nodes.iter_mut() {
                if g.vrrp.poll_timeout().is_some_and(|t| t <= now) {
                    g.vrrp.handle_timeout(now);
                }
                g.glue(now);
                if g.chan.poll_timeout().is_some_and(|t| t <= now) {
                    g.chan.handle_timeout(now);
                }
            }
            if !installed && a.owns_vip() {
                installed = true;
                let (ci, co) = gw_configs();
                let si: EspSa<SoftCrypto> =
                    EspSa::new(ci.clone(), &K_TO_GW.0, &K_TO_GW.1, now).unwrap();
                let so: EspSa<SoftCrypto> =
                    EspSa::new(co.clone(), &K_TO_SPOKE.0, &K_TO_SPOKE.1, now).unwrap();
                let h = a.dp.install_pair(MAP, si, so).unwrap();
                let rec = SaPairRecord {
                    sa_group: MAP,
                    peer: v4(SPOKE),
                    ike_cookies: [0; 16],
                    inbound: ci,
                    outbound: co,
                    inbound_keys: SaKeys::new(&K_TO_GW.0, &K_TO_GW.1).unwrap(),
                    outbound_keys: SaKeys::new(&K_TO_SPOKE.0, &K_TO_SPOKE.1).unwrap(),
                    progress: SaProgress::fresh(false, 64),
                };
                a.sync.sa_installed(now, rec, Some(h)).unwrap();
                // Some traffic so the counters are not trivial.
                for id in 0..7 {
                    let inner = udp_packet(LAN_HOST, SPOKE_HOST, id);
                    let mut out = [0u8; 256];
                    a.dp.process_outbound(now, &inner, &mut rng, &mut out)
                        .unwrap();
                }
            }
            // Exchange adverts and sync datagrams instantly.
            let joined = now >= Instant::from_secs(1);
            for (src, dst) in [(0usize, 1usize), (1, 0)] {
                if !joined && (src == 1 || dst == 1) {
                    continue;
                }
                let (s, d) = if src == 0 {
                    (&mut a, &mut b)
                } else {
                    (&mut b, &mut a)
                };
                while let Some(t) = s.vrrp.poll_transmit(now, &mut buf) {
                    let adv = buf[..t.len].to_vec();
                    let _ = d.vrrp.handle_advert(now, s.addr, &adv);
                }
                s.sync.tick(now, &s.dp);
                let _ = s.sync.poll_send(now, &mut s.chan);
                while let Some(n) = s.chan.poll_transmit(now, &mut rng, &mut buf) {
                    let mut dg = buf[..n].to_vec();
                    if let Ok(Received::Data(p)) = d.chan.handle_datagram(now, &mut rng, &mut dg) {
                        d.sync.handle_payload(now, p).unwrap();
                    }
                    d.glue(now);
                }
            }
            now = now + Duration::from_millis(1);
        }
        assert_eq!(a.vrrp.state(), VrrpState::Master);
        assert_eq!(b.vrrp.state(), VrrpState::Backup, "gw1 returns as Standby");
        assert_eq!(b.sync.role(), HaRole::Standby);
        assert!(b.sync.in_sync(), "full snapshot received");
        assert_eq!(b.sync.pair_count(), 1);
        assert_eq!(b.sync.counters().snapshots_received, 1);
        let p = b.sync.pair(SPI_TO_GW).unwrap();
        assert_eq!(
            p.progress.out_next_seq, 8,
            "the snapshot carries the live counter"
        );
        assert_eq!(p.inbound_keys.enc.expose(), &K_TO_GW.0);
        assert_eq!(b.sync.ike_count(), 0);

        let sa = HaStatus::collect(now, 2, &a.vrrp, &a.sync, &a.chan);
        let sb = HaStatus::collect(now, 2, &b.vrrp, &b.sync, &b.chan);
        print!("gw2:\n{sa}");
        for s in a.sync.sa_status() {
            println!("{s}");
        }
        print!("gw1:\n{sb}");
        for s in b.sync.sa_status() {
            println!("{s}");
        }
        assert_eq!(sa.role, HaRole::Active);
        assert_eq!(sb.role, HaRole::Standby);
        assert!(sa.peer_connected && sb.peer_connected);
        assert_eq!(a.sync.sa_status().next().unwrap().state, HaRole::Active);
        assert_eq!(b.sync.sa_status().next().unwrap().state, HaRole::Standby);
        assert!(sa.to_string().contains("HA state: ACTIVE"));
        assert!(sb.to_string().contains("HA state: STANDBY"));
    });
}

struct HandoverOutcome {
    sent: usize,
    lost_to_lan: usize,
    lost_to_spoke: usize,
    /// Genuine packets gw2 refused as replays or too old.
    refused_by_gw2: usize,
    /// From `hand_over` to gw2's takeover.
    gap_ms: u64,
    report: ipsec_core::ha::sync::TakeoverReport,
    gw1_last_out_seq: u32,
    gw2_first_out_seq: u32,
    gw1_top_in: u32,
    gw2_first_in: u32,
}

/// A graceful handover: gw1 stops carrying traffic, hands its final counters and the
/// handover marker to gw2 over the (lossy) channel, waits for the acknowledgement (at most
/// 500 ms), then resigns with a priority-0 advert and goes away. Traffic runs throughout;
/// whatever reaches gw1 after it stopped, or nobody while the VIP moves, is lost.
fn run_handover(loss_percent: u64) -> HandoverOutcome {
    let sync_cfg = SyncConfig {
        replay: ReplayInterval {
            inbound: 100,
            outbound: 10,
        },
        seq_margin: 16,
        window_margin: 4,
        ..SyncConfig::default()
    };
    let t0 = Instant::ZERO;
    let mut gws = [
        gateway("gw1", GW1, 110, 1, 2, sync_cfg, t0),
        gateway("gw2", GW2, 100, 2, 1, sync_cfg, t0),
    ];
    let mut rng = Rng(11);
    let mut loss = Rng(5);
    let mut wire = Wire::default();
    let mut sc_out = EspConfig::tunnel(SPI_TO_GW, Direction::Outbound, T, v4(SPOKE), v4(VIP));
    sc_out.selector = Some(selector_gw().mirrored());
    let mut sc_in = EspConfig::tunnel(SPI_TO_SPOKE, Direction::Inbound, T, v4(SPOKE), v4(VIP));
    sc_in.selector = Some(selector_gw().mirrored());
    let mut spoke_out: EspSa<SoftCrypto> = EspSa::new(sc_out, &K_TO_GW.0, &K_TO_GW.1, t0).unwrap();
    let mut spoke_in: EspSa<SoftCrypto> =
        EspSa::new(sc_in, &K_TO_SPOKE.0, &K_TO_SPOKE.1, t0).unwrap();

    let mut out_seqs = [BTreeSet::new(), BTreeSet::new()];
    let mut accepted_in = [BTreeSet::new(), BTreeSet::new()];
    let mut captured_at_gw1: Vec<Vec<u8>> = Vec::new();
    let mut delivered_lan = BTreeSet::new();
    let mut delivered_spoke = BTreeSet::new();
    let mut refused_by_gw2 = 0;
    let mut sent_ids = 0u32;

    let installed_at = Instant::from_millis(500);
    let traffic_from = Instant::from_millis(600);
    let resign_at = Instant::from_millis(5_003);
    let traffic_until = Instant::from_millis(8_000);
    let end = Instant::from_millis(8_500);
    // gw1: carrying traffic, handing over (waiting for the acknowledgement), gone.
    let mut handing_over = false;
    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; 2048];
    let mut now = t0;
    while now <= end {
        if now == installed_at {
            let gw = &mut gws[0];
            assert!(gw.owns_vip());
            let (ci, co) = gw_configs();
            let si: EspSa<SoftCrypto> =
                EspSa::new(ci.clone(), &K_TO_GW.0, &K_TO_GW.1, now).unwrap();
            let so: EspSa<SoftCrypto> =
                EspSa::new(co.clone(), &K_TO_SPOKE.0, &K_TO_SPOKE.1, now).unwrap();
            let h = gw.dp.install_pair(MAP, si, so).unwrap();
            let rec = SaPairRecord {
                sa_group: MAP,
                peer: v4(SPOKE),
                ike_cookies: [0xc0; 16],
                inbound: ci,
                outbound: co,
                inbound_keys: SaKeys::new(&K_TO_GW.0, &K_TO_GW.1).unwrap(),
                outbound_keys: SaKeys::new(&K_TO_SPOKE.0, &K_TO_SPOKE.1).unwrap(),
                progress: SaProgress::fresh(false, 64),
            };
            gw.sync.sa_installed(now, rec, Some(h)).unwrap();
        }
        if now == resign_at {
            // SIGTERM: the event loop stops, then the final state goes to the standby.
            let g = &mut gws[0];
            let (m, n) = g.sync.hand_over(now, &mut g.dp).unwrap();
            assert_eq!((m.pairs, n), (1, 1));
            handing_over = true;
        }
        if handing_over
            && ((!gws[0].sync.handover_pending() && gws[0].chan.unacked() == 0)
                || now >= resign_at + Duration::from_millis(500))
        {
            let [g1, g2] = &mut gws;
            g1.vrrp.shutdown(now);
            while let Some(t) = g1.vrrp.poll_transmit(now, &mut buf) {
                let adv = buf[..t.len].to_vec();
                let _ = g2.vrrp.handle_advert(now, GW1, &adv);
            }
            gws[0].alive = false;
            handing_over = false;
        }

        let ms = now.as_millis();
        if now >= traffic_from && now < traffic_until && ms % 10 == 0 {
            sent_ids += 1;
            let id = sent_ids;
            let inner = udp_packet(SPOKE_HOST, LAN_HOST, id);
            let n = spoke_out
                .encapsulate(now, &inner, None, &mut rng, &mut out)
                .unwrap();
            // gw1 still owns the VIP while it hands over, but carries nothing any more.
            let gi = gws.iter().position(Gw::owns_vip);
            if let Some(gi) = gi.filter(|&g| !(g == 0 && handing_over)) {
                let seq = esp_seq(&out[..n]);
                let mut pkt = out[..n].to_vec();
                if gi == 0 {
                    captured_at_gw1.push(pkt.clone());
                }
                match gws[gi].dp.process_inbound(now, &mut pkt) {
                    Ok(Inbound::Decapsulated { packet, .. }) => {
                        assert!(accepted_in[gi].insert(seq));
                        assert!(!accepted_in[1 - gi].contains(&seq));
                        delivered_lan.insert(packet_id(packet));
                    }
                    Err(DataplaneError::Esp(EspError::Replayed | EspError::TooOld)) => {
                        assert_eq!(gi, 1, "gw1 never refuses a genuine packet");
                        refused_by_gw2 += 1;
                    }
                    other => panic!("{}: unexpected {other:?}", gws[gi].name),
                }
            }
            let inner = udp_packet(LAN_HOST, SPOKE_HOST, id);
            if let Some(gi) = gi.filter(|&g| !(g == 0 && handing_over)) {
                if let Ok(Outbound::Protected { len, .. }) =
                    gws[gi].dp.process_outbound(now, &inner, &mut rng, &mut out)
                {
                    let seq = esp_seq(&out[..len]);
                    assert!(
                        !out_seqs[0].contains(&seq) && !out_seqs[1].contains(&seq),
                        "sequence number {seq} reused towards the spoke"
                    );
                    out_seqs[gi].insert(seq);
                    let mut pkt = out[..len].to_vec();
                    let d = spoke_in
                        .decapsulate(now, &mut pkt)
                        .expect("the spoke accepts every packet");
                    delivered_spoke.insert(packet_id(d.packet));
                }
            }
        }

        vrrp_step(&mut gws, now, &mut buf);
        for i in 0..2 {
            if !gws[i].alive {
                continue;
            }
            gws[i].glue(now);
            if ms % 10 == 5 {
                let g = &mut gws[i];
                g.sync.tick(now, &g.dp);
            }
            let g = &mut gws[i];
            let _ = g.sync.poll_send(now, &mut g.chan);
            if g.chan.poll_timeout().is_some_and(|t| t <= now) {
                g.chan.handle_timeout(now);
            }
            while let Some(n) = g.chan.poll_transmit(now, &mut rng, &mut buf) {
                let mut b = [0u8; 1];
                loss.fill_bytes(&mut b).unwrap();
                if u64::from(b[0]) * 100 >= loss_percent * 256 {
                    wire.sync
                        .push_back((now + Duration::from_millis(1), 1 - i, buf[..n].to_vec()));
                }
            }
        }
        while wire.sync.front().is_some_and(|(t, _, _)| *t <= now) {
            let (_, to, mut d) = wire.sync.pop_front().unwrap();
            let g = &mut gws[to];
            if !g.alive {
                continue;
            }
            if let Ok(Received::Data(p)) = g.chan.handle_datagram(now, &mut rng, &mut d) {
                g.sync.handle_payload(now, p).unwrap();
            }
            g.glue(now);
        }
        now = now + Duration::from_millis(1);
    }

    let (takeover_at, report) = gws[1].takeover.expect("gw2 took over");
    // Nothing gw1 accepted is accepted again by gw2.
    let mut gw2 = gws.into_iter().nth(1).unwrap();
    for mut p in captured_at_gw1 {
        match gw2
            .dp
            .process_inbound(end + Duration::from_millis(1), &mut p)
        {
            Err(DataplaneError::Esp(EspError::Replayed | EspError::TooOld)) => {}
            other => panic!("replayed gw1 packet accepted or misrouted: {other:?}"),
        }
    }
    assert_eq!(spoke_in.counters().replay_failed, 0);
    assert_eq!(spoke_in.counters().recv_errors, 0);
    let sent = sent_ids as usize;
    HandoverOutcome {
        sent,
        lost_to_lan: sent - delivered_lan.len(),
        lost_to_spoke: sent - delivered_spoke.len(),
        refused_by_gw2,
        gap_ms: (takeover_at - resign_at).as_millis(),
        report,
        gw1_last_out_seq: *out_seqs[0].last().unwrap(),
        gw2_first_out_seq: *out_seqs[1].first().unwrap(),
        gw1_top_in: *accepted_in[0].last().unwrap(),
        gw2_first_in: *accepted_in[1].first().unwrap(),
    }
}

#[test]
fn ha_graceful_handover_is_exact() {
    use ipsec_core::ha::sync::TakeoverKind;
    big_stack(|| {
        for loss in [0, 5] {
            let o = run_handover(loss);
            println!(
                "[graceful handover, {loss}% sync loss] sent {} each way; lost spoke->LAN {}, LAN->spoke {}; \
                 {} refused as replays by gw2; {} ms from hand_over to takeover; outbound seq: gw1 last {} -> gw2 first {}; \
                 inbound: gw1 top {} -> gw2 first accepted {}; takeover {:?}",
                o.sent,
                o.lost_to_lan,
                o.lost_to_spoke,
                o.refused_by_gw2,
                o.gap_ms,
                o.gw1_last_out_seq,
                o.gw2_first_out_seq,
                o.gw1_top_in,
                o.gw2_first_in,
                o.report
            );
            assert_eq!(o.report.kind, TakeoverKind::Exact);
            assert_eq!((o.report.pairs, o.report.exact), (1, 1));
            assert_eq!((o.report.seq_advance, o.report.window_advance), (0, 0));
            // Not one number skipped, not one genuine packet refused.
            assert_eq!(o.gw2_first_out_seq, o.gw1_last_out_seq + 1);
            assert_eq!(o.refused_by_gw2, 0);
            assert!(o.gw2_first_in > o.gw1_top_in);
            // The only losses: the packets of the gap (100 pps), both ways alike.
            let gap = (o.gap_ms / 10 + 1) as usize;
            assert!(o.lost_to_lan <= gap, "{} > {gap}", o.lost_to_lan);
            assert!(o.lost_to_spoke <= gap, "{} > {gap}", o.lost_to_spoke);
        }
    });
}
