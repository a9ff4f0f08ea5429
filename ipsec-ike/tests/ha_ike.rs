//! Stateful failover of an IKE SA through the real HA path: a spoke negotiates Main
//! Mode + Quick Mode with gw1 (behind the VIP shared with gw2); gw1 replicates the SA
//! pair and its exported IKE SA over `HaSync` + an encrypted `SyncChannel` to gw2; gw1
//! dies; gw2 activates, imports the IKE SA (`ike_records()` -> `import_sa`) and the
//! child (`pairs()` -> `import_child`); the spoke's DPD and a rekey Quick Mode then
//! succeed with gw2, and the spoke never sends Main Mode again.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    missing_docs
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hal_traits::{CipherAlg, CryptoError, DhGroup, HashAlg, MacAlg, SecretBytes, SecureRng};
use ipsec_core::dataplane::Dataplane;
use ipsec_core::esp::{Encryption, Mode, Transform};
use ipsec_core::ha::HaRole;
use ipsec_core::ha::channel::{ChannelConfig, Received, Suite, SyncChannel};
use ipsec_core::ha::record::{SaKeys, SaPairRecord, SaProgress};
use ipsec_core::ha::sync::{HaSync, SyncConfig};
use ipsec_core::spd::{AddrRange, Policy, PolicyAction, Selector};
use ipsec_core::{Duration, Instant};
use ipsec_ike::v1::{
    ChildImport, CryptoMapEntry, Ike, IkeConfig, IkeEvent, IsakmpPolicy, IsakmpState, PresharedKey,
    TransformSet,
};
use ipsec_ike::wire::exchange_type;
use ipsec_soft_crypto::SoftCrypto;

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const SPOKE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
const MAP: u32 = 10;

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

type I = Ike<SoftCrypto, 4, 8>;
type Dp = Dataplane<SoftCrypto, 8, 4>;
type Chan = SyncChannel<SoftCrypto, 32, 1400>;

fn net(o: [u8; 2]) -> AddrRange {
    AddrRange::from_prefix(IpAddr::V4(Ipv4Addr::new(o[0], o[1], 0, 0)), 16).unwrap()
}

fn selector(local: [u8; 2], remote: [u8; 2]) -> Selector {
    Selector::new(net(local), net(remote)).unwrap()
}

fn cfg(local: Ipv4Addr, peer: Ipv4Addr, ln: [u8; 2], rn: [u8; 2]) -> IkeConfig {
    let mut c = IkeConfig::new(IpAddr::V4(local));
    c.add_policy(IsakmpPolicy::new(
        10,
        CipherAlg::Aes128Cbc,
        HashAlg::Sha1,
        DhGroup::Modp1024,
    ))
    .unwrap();
    c.add_key(PresharedKey::address(IpAddr::V4(peer), b"cisco123").unwrap())
        .unwrap();
    let mut e = CryptoMapEntry::new(MAP, selector(ln, rn));
    e.add_peer(IpAddr::V4(peer)).unwrap();
    let t = Transform {
        enc: Encryption::Cbc(CipherAlg::Aes128Cbc),
        auth: Some(MacAlg::HmacSha1_96),
    };
    e.add_transform_set(TransformSet::new("ESP-AES-SHA", t, Mode::Tunnel).unwrap())
        .unwrap();
    c.add_crypto_map(e).unwrap();
    c
}

struct Gw {
    alive: bool,
    ike: I,
    dp: Dp,
    sync: HaSync<8, 4>,
    chan: Chan,
}

fn gateway(node: u32, peer: u32, role: HaRole, now: Instant) -> Gw {
    let mut dp = Dp::new(PolicyAction::Discard);
    dp.spd_mut()
        .insert(Policy {
            seq: 10,
            selector: selector([10, 2], [10, 1]),
            action: PolicyAction::Protect { sa_group: MAP },
        })
        .unwrap();
    let mut cc = ChannelConfig::new(
        node,
        peer,
        Suite::AesCbcHmacSha256,
        SecretBytes::from_slice(b"ha sync key of the pair, 32 B!!").unwrap(),
    );
    cc.retransmit = Duration::from_millis(50);
    cc.hello_interval = Duration::from_millis(100);
    Gw {
        alive: true,
        // Both gateways speak IKE from the VIP.
        ike: I::new(cfg(VIP, SPOKE, [10, 2], [10, 1])),
        dp,
        sync: HaSync::new(SyncConfig::default(), role, now),
        chan: Chan::new(cc, now).unwrap(),
    }
}

struct World {
    now: Instant,
    rng: Rng,
    spoke: I,
    gws: [Gw; 2],
    /// Exchange types of every datagram the spoke sent.
    spoke_sent: Vec<u8>,
}

impl World {
    /// The gateway that owns the VIP (the first alive one).
    fn vip(&self) -> usize {
        self.gws.iter().position(|g| g.alive).expect("a gateway")
    }

    /// Exchanges IKE datagrams between the spoke and the VIP owner until quiet; the
    /// active gateway replicates what it installs.
    fn ike_settle(&mut self) {
        let mut buf = [0u8; 4096];
        for _ in 0..50 {
            let mut moved = false;
            let g = self.vip();
            while let Some(t) = self.spoke.poll_transmit(self.now, &mut buf) {
                assert_eq!(t.dst, SocketAddr::new(IpAddr::V4(VIP), 500));
                self.spoke_sent.push(buf[18]);
                let d = buf[..t.len].to_vec();
                let _ = self.gws[g]
                    .ike
                    .handle_datagram(self.now, &mut self.rng, t.src, t.dst, &d);
                moved = true;
            }
            while let Some(t) = self.gws[g].ike.poll_transmit(self.now, &mut buf) {
                assert_eq!(t.src, SocketAddr::new(IpAddr::V4(VIP), 500), "from the VIP");
                let d = buf[..t.len].to_vec();
                let _ = self
                    .spoke
                    .handle_datagram(self.now, &mut self.rng, t.src, t.dst, &d);
                moved = true;
            }
            self.gw_events(g);
            if !moved {
                return;
            }
        }
    }

    /// The port glue of gateway `g`: install pairs; when active, replicate them and
    /// the IKE SA.
    fn gw_events(&mut self, g: usize) {
        let now = self.now;
        let gw = &mut self.gws[g];
        while let Some(e) = gw.ike.poll_event() {
            match e {
                IkeEvent::ChildSaEstablished(cs) => {
                    let (ie, ia) = cs.inbound_keys();
                    let (oe, oa) = cs.outbound_keys();
                    let st = gw
                        .ike
                        .isakmp_status()
                        .find(|s| s.conn_id == cs.conn_id)
                        .unwrap();
                    let mut ck = [0u8; 16];
                    ck[..8].copy_from_slice(&st.initiator_cookie);
                    ck[8..].copy_from_slice(&st.responder_cookie);
                    if gw.sync.role() == HaRole::Active {
                        let rec = SaPairRecord {
                            sa_group: cs.crypto_map,
                            peer: cs.peer.ip(),
                            ike_cookies: ck,
                            inbound: cs.inbound.clone(),
                            outbound: cs.outbound.clone(),
                            inbound_keys: SaKeys::new(ie, ia).unwrap(),
                            outbound_keys: SaKeys::new(oe, oa).unwrap(),
                            progress: SaProgress::fresh(cs.inbound.esn, cs.inbound.replay_window),
                        };
                        gw.sync.sa_installed(now, rec, None).unwrap();
                    }
                }
                IkeEvent::ChildSaDeleted { inbound_spi, .. } => {
                    gw.sync.sa_removed(inbound_spi);
                }
                _ => {}
            }
        }
        // Export every established IKE SA (cheap; a port does it on each sync tick).
        if gw.sync.role() == HaRole::Active {
            let ids: Vec<(u32, [u8; 16])> = gw
                .ike
                .isakmp_status()
                .filter(|s| s.state == IsakmpState::QmIdle)
                .map(|s| {
                    let mut ck = [0u8; 16];
                    ck[..8].copy_from_slice(&s.initiator_cookie);
                    ck[8..].copy_from_slice(&s.responder_cookie);
                    (s.conn_id, ck)
                })
                .collect();
            for (id, ck) in ids {
                let mut body = [0u8; ipsec_ike::v1::MAX_EXPORT_LEN];
                let n = gw.ike.export_sa(now, id, &mut body).unwrap();
                gw.sync.ike_updated(ck, &body[..n]).unwrap();
                body.fill(0);
            }
        }
    }

    /// Runs the HA channel between live gateways for `ms` of virtual time.
    fn ha_run(&mut self, ms: u64) {
        let mut buf = [0u8; 2048];
        for _ in 0..ms / 10 {
            self.now = self.now + Duration::from_millis(10);
            let now = self.now;
            for g in 0..2 {
                if !self.gws[g].alive {
                    continue;
                }
                let gw = &mut self.gws[g];
                if gw.chan.poll_timeout().is_some_and(|t| t <= now) {
                    gw.chan.handle_timeout(now);
                }
                while let Some(e) = gw.chan.poll_event() {
                    match e {
                        ipsec_core::ha::channel::ChannelEvent::PeerUp { .. } => gw.sync.peer_up(),
                        ipsec_core::ha::channel::ChannelEvent::PeerLost => gw.sync.peer_lost(),
                        _ => {}
                    }
                }
                let _ = gw.sync.poll_send(now, &mut gw.chan);
                let mut out = Vec::new();
                while let Some(len) = gw.chan.poll_transmit(now, &mut self.rng, &mut buf) {
                    out.push(buf[..len].to_vec());
                }
                let other = &mut self.gws[1 - g];
                if !other.alive {
                    continue;
                }
                for mut d in out {
                    if let Ok(Received::Data(p)) =
                        other.chan.handle_datagram(now, &mut self.rng, &mut d)
                    {
                        other.sync.handle_payload(now, p).unwrap();
                    }
                }
            }
        }
    }
}

#[test]
fn standby_gateway_continues_the_ike_sa_after_takeover() {
    // The IKE tables, data planes and sync buffers are large fixed-size arrays.
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(takeover)
        .unwrap()
        .join()
        .unwrap();
}

fn takeover() {
    let now = Instant::from_secs(100);
    let mut spoke_cfg = cfg(SPOKE, VIP, [10, 1], [10, 2]);
    spoke_cfg.local_addr = IpAddr::V4(SPOKE);
    let mut w = World {
        now,
        rng: Rng(7),
        spoke: I::new(spoke_cfg),
        gws: [
            gateway(1, 2, HaRole::Active, now),
            gateway(2, 1, HaRole::Standby, now),
        ],
        spoke_sent: Vec::new(),
    };
    w.ha_run(500);
    assert!(w.gws[0].chan.is_connected());

    // Main Mode + Quick Mode with gw1 (the VIP owner).
    w.spoke.initiate(w.now, &mut w.rng, MAP).unwrap();
    w.ike_settle();
    assert_eq!(w.spoke.ipsec_status().count(), 1);
    assert!(w.spoke_sent.contains(&exchange_type::IDENTITY_PROTECTION));
    let spoke_conn = w.spoke.isakmp_status().next().unwrap().conn_id;
    let old_spi = w.spoke.ipsec_status().next().unwrap().inbound_spi;
    while w.spoke.poll_event().is_some() {}
    // Replicate.
    w.ha_run(1000);
    assert_eq!(w.gws[1].sync.pair_count(), 1);
    assert_eq!(w.gws[1].sync.ike_count(), 1);
    assert_eq!(w.gws[1].ike.isakmp_status().count(), 0);

    // gw1 dies; gw2 takes over: pairs into the data plane, the IKE SA and child into IKE.
    w.gws[0].alive = false;
    w.now = w.now + Duration::from_secs(3);
    let now = w.now;
    let gw2 = &mut w.gws[1];
    let report = gw2.sync.activate(now, &mut gw2.dp);
    assert_eq!(report.pairs, 1);
    let mut imported = 0;
    for r in gw2.sync.ike_records() {
        gw2.ike.import_sa(now, r.body).unwrap();
        imported += 1;
    }
    assert_eq!(imported, 1);
    for p in gw2.sync.pairs() {
        gw2.ike
            .import_child(now, &ChildImport::from_ha_record(p))
            .unwrap();
    }
    let st = gw2.ike.isakmp_status().next().unwrap();
    assert_eq!(st.state, IsakmpState::QmIdle);
    assert_eq!(st.local, SocketAddr::new(IpAddr::V4(VIP), 500));
    assert_eq!(gw2.ike.ipsec_status().count(), 1);
    w.spoke_sent.clear();

    // The spoke's DPD R-U-THERE to the VIP is answered by gw2.
    w.spoke.dpd_probe(w.now, &mut w.rng, spoke_conn).unwrap();
    w.ike_settle();
    assert_eq!(w.gws[1].ike.counters().dpd_answered, 1);
    assert_eq!(w.spoke.counters().dpd_acks, 1);

    // A rekey Quick Mode from the spoke succeeds with gw2.
    w.spoke.rekey_child(w.now, &mut w.rng, old_spi).unwrap();
    w.ike_settle();
    let ev: Vec<IkeEvent> = core::iter::from_fn(|| w.spoke.poll_event()).collect();
    assert!(
        ev.iter().any(|e| matches!(
            e,
            IkeEvent::ChildSaEstablished(cs) if cs.replaces == Some(old_spi)
        )),
        "{ev:?}"
    );
    assert_eq!(w.gws[1].ike.ipsec_status().count(), 2);
    // ... and gw2, now active, replicates the new pair.
    assert_eq!(w.gws[1].sync.pair_count(), 2);

    // gw2 deletes the old pair towards the spoke; the spoke accepts the DELETE.
    let gw_old = w.gws[1]
        .ike
        .ipsec_status()
        .find(|c| c.outbound_spi == old_spi)
        .unwrap()
        .inbound_spi;
    w.gws[1]
        .ike
        .delete_child(w.now, &mut w.rng, gw_old)
        .unwrap();
    w.ike_settle();
    assert_eq!(w.spoke.ipsec_status().count(), 1);

    // No Main Mode (nor anything but Informational and Quick Mode) from the spoke.
    assert!(!w.spoke_sent.is_empty());
    assert!(
        w.spoke_sent
            .iter()
            .all(|&t| t == exchange_type::INFORMATIONAL || t == exchange_type::QUICK_MODE),
        "{:?}",
        w.spoke_sent
    );
    assert_eq!(w.spoke.isakmp_status().count(), 1);
    assert_eq!(w.spoke.counters().auth_failures, 0);
    assert_eq!(w.gws[1].ike.counters().auth_failures, 0);
}
