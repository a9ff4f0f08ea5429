//! Stateful failover for the daemon: `[redundancy]` binds the library's HA pieces
//! (`ipsec_core::ha`: the VRRPv3 election, the sync channel and `HaSync`; `ipsec_ike`'s
//! `export_sa` / `import_sa` / `import_child`) to the host, the way
//! `examples/demo/src/bin/topology.rs` wires them in simulation. The IOS model is
//! `standby <group> ip <vip>` + `redundancy inter-device` + `crypto map ... redundancy
//! <group> stateful`.
//!
//! # On the wire
//!
//! * **VRRPv3 adverts** (IP protocol 112, TTL 255) to the all-VRRP-routers group
//!   224.0.0.18, out of the `[redundancy] interface` (`IP_MULTICAST_IF` = our own
//!   address), received on a raw socket joined to the group. Standard VRRPv3, so a
//!   capture dissects it and it works on any broadcast segment (a veth pair, a Linux
//!   bridge: link-local groups are always flooded).
//! * **Sync channel**: UDP between the two members' own addresses on `sync_port`; the
//!   channel (`SyncChannel`) authenticates and encrypts with keys derived from
//!   `sync_key` and fresh nonces. Datagrams from any other source are dropped (counted).
//! * **The virtual IP**: IKE (UDP 500/4500) is bound to it with `IP_FREEBIND` on both
//!   members, so the standby's sockets exist before it owns the address. The active
//!   member adds it (`ip addr add VIP/32 dev IF`) and announces it with a gratuitous ARP
//!   (`arping -U -c 1 -I IF VIP`, iputils-arping), so the neighbours move to its MAC.
//!
//! # Roles
//!
//! * **Standby** (VRRP Backup): sends nothing but adverts' absence and sync acks; applies
//!   the active's records (SA pairs with keys, SPIs, sequence and replay progress, IKE SA
//!   bodies); packets from the TUN are dropped, nothing is negotiated.
//! * **Takeover** (master down, or the active resigned): the VIP is added and announced,
//!   `HaSync::activate` installs every synced pair with the outbound counters moved
//!   `seq_advance` ahead and the inbound windows closed `window_advance` ahead (after a
//!   crash), or with the exact counters the resigning active vouched for (after a
//!   graceful handover, below), the IKE SAs are imported (QM_IDLE, nothing sent) and the
//!   children re-attached, SPD policies of dynamic entries and reverse routes are added.
//!   The peer sees the same SPIs and IKE SA: no renegotiation.
//! * **Active**: every `TICK` the data plane's counters and the IKE SAs' exports are
//!   handed to `HaSync`, which decides from the replay interval what to send.
//! * **Demotion** (a better master appeared: preemption or a healed split brain):
//!   `HaSync::deactivate` takes the pairs out of the data plane, the IKE state is dropped
//!   without DELETEs (the winner owns it), the VIP is removed.
//!
//! # Graceful shutdown of the active
//!
//! IOS keeps the SAs of a stateful crypto map when the active reloads: the standby
//! carries them, nothing is deleted (a DELETE would tear down the SAs the standby is
//! about to use, since they share SPIs and IKE cookies). We do the same: on SIGTERM with
//! a connected sync peer the event loop stops (no TUN packet is sealed, no ESP opened
//! after that), the IKE SAs are exported a last time, `HaSync::hand_over` reads the
//! final counters, takes the pairs out of the data plane and queues them with a handover
//! marker; the active waits (at most `HANDOVER_WAIT`) for the channel to be
//! acknowledged, sends a VRRP priority-0 advert (RFC 5798 §6.4.3: the backup takes over
//! after Skew_Time, not the master-down interval), removes the VIP and its routes and
//! exits without a DELETE. The standby that applied the marker takes over with the exact
//! counters: no sequence number skipped, no genuine packet refused as a replay; only the
//! packets that reach neither member while the VIP moves are lost. With no connected
//! peer there is nobody to hand over to and the ordinary shutdown (DELETE to every peer)
//! follows.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::io::{ErrorKind, Read as _};
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};

use ipsec_core::ha::HaRole;
use ipsec_core::ha::channel::{ChannelConfig, ChannelEvent, Received, Suite, SyncChannel};
use ipsec_core::ha::record::{SaKeys, SaPairRecord, SaProgress};
use ipsec_core::ha::status::HaStatus;
use ipsec_core::ha::sync::{HaSync, ReplayInterval, SyncConfig, TakeoverReport};
use ipsec_core::ha::vrrp::packet::MULTICAST_V4;
use ipsec_core::ha::vrrp::{Vrrp, VrrpConfig, VrrpEvent, VrrpState};
use ipsec_core::sadb::SaHandle;
use ipsec_core::spd::{Policy, PolicyAction};
use ipsec_core::{Duration, Instant};
use ipsec_ike::v1::{ChildImport, ChildSa, Ike, IsakmpState, MAX_EXPORT_LEN};
use ipsec_nat_t::{KeepaliveConfig, NatKeepalive, NatStatus};
use ipsec_soft_crypto::SoftCrypto;
use mio::net::UdpSocket;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use serde_json::{Value, json};
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{debug, info, warn};

use super::routes::RouteKind;
use super::{ChildRec, Daemon, MAX_SAS};
use crate::config::Redundancy;

/// The VRRP raw socket's token in the daemon's poll.
pub const TVRRP: Token = Token(6);
/// The sync socket's token.
pub const TSYNC: Token = Token(7);
/// How often the active hands counters and IKE SAs to `HaSync` (it sends only what the
/// replay interval asks for).
const TICK: Duration = Duration::from_millis(50);
/// An unchanged IKE SA is exported again this often anyway, so that the lifetime left the
/// standby holds is at most this stale.
const IKE_REFRESH: Duration = Duration::from_secs(10);
/// How long a handing-over active waits for the standby to acknowledge the last update.
const HANDOVER_WAIT: std::time::Duration = std::time::Duration::from_millis(500);
/// IKE SAs replicated at most.
const MAX_IKE: usize = 16;

type Chan = SyncChannel<SoftCrypto, 32, 1400>;
type Sync = HaSync<MAX_SAS, MAX_IKE, 2>;

/// Counters of the host side of HA (the library keeps its own per component).
#[derive(Clone, Copy, Debug, Default)]
pub struct HaStats {
    /// VRRP packets dropped before the state machine: TTL not 255.
    pub vrrp_bad_ttl: u64,
    /// VRRP packets the state machine refused (malformed, other group, ...).
    pub vrrp_refused: u64,
    /// Sync datagrams from an address that is not the peer.
    pub sync_wrong_source: u64,
    /// Sync datagrams the channel refused (authentication, replay, malformed).
    pub sync_refused: u64,
    /// Sync payloads `HaSync` could not parse.
    pub sync_bad_payload: u64,
    /// Send errors on the VRRP or sync socket.
    pub send_errors: u64,
    /// TUN packets dropped because this member is standby.
    pub standby_drops: u64,
    /// Gratuitous ARPs started.
    pub garp: u64,
    /// Takeovers (Backup -> Master).
    pub takeovers: u64,
}

/// The last takeover, for `ipsec show ha`.
#[derive(Clone, Copy, Debug)]
pub struct Takeover {
    /// When.
    pub at: Instant,
    /// What `HaSync::activate` did.
    pub report: TakeoverReport,
    /// IKE SAs imported.
    pub ike_sas: usize,
}

/// The HA state of the daemon.
pub struct Ha {
    /// The configuration.
    pub cfg: Redundancy,
    /// The VRRP election.
    pub vrrp: Vrrp,
    /// The replicated SADB.
    pub sync: Box<Sync>,
    /// The sync channel.
    pub chan: Chan,
    /// Counters.
    pub stats: HaStats,
    /// The last takeover.
    pub last_takeover: Option<Takeover>,
    /// Whether we added the VIP.
    pub vip_owned: bool,
    vrrp_sock: Socket,
    sync_sock: UdpSocket,
    next_tick: Instant,
    /// Per IKE SA (cookies): a hash of its last export taken at a fixed `now`, to tell a
    /// changed SA (DPD sequence, message IDs, rekey) from one whose only change is the
    /// lifetime left, which every export relative to the current time carries; and when
    /// it was last exported.
    ike_probe: HashMap<[u8; 16], (u64, Instant)>,
    arping: Vec<Child>,
    buf: Vec<u8>,
}

impl Ha {
    /// Opens the VRRP and sync sockets and starts the election (as Backup).
    ///
    /// # Errors
    /// A socket or the library refused the configuration.
    pub fn new(cfg: &Redundancy, now: Instant) -> Result<Self, String> {
        let mut vrrp = Vrrp::new(vrrp_config(cfg)).map_err(|e| format!("VRRP: {e}"))?;
        let chan = Chan::new(
            ChannelConfig::new(
                u32::from(cfg.primary),
                u32::from(cfg.peer),
                Suite::AesCbcHmacSha256,
                cfg.sync_key.clone(),
            ),
            now,
        )
        .map_err(|e| format!("HA sync channel: {e}"))?;
        let sc = SyncConfig {
            replay: ReplayInterval {
                inbound: cfg.replay_interval.0,
                outbound: cfg.replay_interval.1,
            },
            seq_margin: u64::from(cfg.seq_margin),
            window_margin: u64::from(cfg.window_margin),
            lifetime_interval: Duration::from_secs(10),
        };
        let sync = Box::new(HaSync::new(sc, HaRole::Standby, now));

        let vrrp_sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(112)))
            .map_err(|e| format!("VRRP raw socket: {e}"))?;
        vrrp_sock
            .set_multicast_if_v4(&cfg.primary)
            .and_then(|()| vrrp_sock.set_multicast_ttl_v4(255))
            .and_then(|()| vrrp_sock.set_multicast_loop_v4(false))
            .and_then(|()| vrrp_sock.join_multicast_v4(&MULTICAST_V4, &cfg.primary))
            .and_then(|()| vrrp_sock.set_nonblocking(true))
            .map_err(|e| format!("VRRP socket on {}: {e}", cfg.primary))?;
        let s = std::net::UdpSocket::bind(SocketAddrV4::new(cfg.primary, cfg.sync_port))
            .map_err(|e| format!("bind sync channel {}:{}: {e}", cfg.primary, cfg.sync_port))?;
        s.set_nonblocking(true)
            .map_err(|e| format!("sync socket: {e}"))?;
        let sync_sock = UdpSocket::from_std(s);

        // A crash may have left the VIP on our interface: we start as Backup, so it goes.
        let vip = format!("{}/32", cfg.virtual_ip);
        if super::routes::ip(&["addr", "del", &vip, "dev", &cfg.interface]).is_ok() {
            info!(target: "ha", "HA: removed a stale virtual IP {} from {}", cfg.virtual_ip, cfg.interface);
        }
        vrrp.startup(now);
        info!(target: "ha", "%VRRP-6-CONFIG: {} Grp {} vip {} priority {}{}, adverts every {} ms to 224.0.0.18; sync peer {}:{}",
            cfg.interface, cfg.group, cfg.virtual_ip, cfg.priority, if cfg.preempt { " preempt" } else { "" },
            cfg.advert_interval_ms, cfg.peer, cfg.sync_port);
        Ok(Self {
            cfg: cfg.clone(),
            vrrp,
            sync,
            chan,
            stats: HaStats::default(),
            last_takeover: None,
            vip_owned: false,
            vrrp_sock,
            sync_sock,
            next_tick: now + TICK,
            ike_probe: HashMap::new(),
            arping: Vec::new(),
            buf: vec![0; 2048],
        })
    }

    /// Registers the two sockets in the daemon's poll.
    ///
    /// # Errors
    /// The registration failed.
    pub fn register(&mut self, reg: &Registry) -> std::io::Result<()> {
        reg.register(
            &mut SourceFd(&self.vrrp_sock.as_raw_fd()),
            TVRRP,
            Interest::READABLE,
        )?;
        reg.register(&mut self.sync_sock, TSYNC, Interest::READABLE)
    }

    /// The earliest HA deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let tick = (self.sync.role() == HaRole::Active || !self.arping.is_empty())
            .then_some(self.next_tick);
        [self.vrrp.poll_timeout(), self.chan.poll_timeout(), tick]
            .into_iter()
            .flatten()
            .min()
    }

    fn add_vip(&mut self) {
        let c = &self.cfg;
        let vip = format!("{}/32", c.virtual_ip);
        match super::routes::ip(&["addr", "replace", &vip, "dev", &c.interface]) {
            Ok(()) => {
                self.vip_owned = true;
                info!(target: "ha", "HA: virtual IP added: ip addr add {vip} dev {}", c.interface);
            }
            Err(e) => warn!(target: "ha", "HA: cannot add the virtual IP: {e}"),
        }
        let vip = c.virtual_ip.to_string();
        match Command::new("arping")
            .args(["-U", "-c", "1", "-w", "2", "-I", &c.interface, &vip])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => {
                self.stats.garp += 1;
                self.arping.push(child);
                info!(target: "ha", "HA: gratuitous ARP for {vip} on {}: arping -U -c 1 -I {} {vip}", c.interface, c.interface);
            }
            Err(e) => {
                warn!(target: "ha", "HA: no gratuitous ARP (arping: {e}); neighbours move when their ARP entry for {vip} expires");
            }
        }
    }

    fn remove_vip(&mut self) {
        if !self.vip_owned {
            return;
        }
        let vip = format!("{}/32", self.cfg.virtual_ip);
        match super::routes::ip(&["addr", "del", &vip, "dev", &self.cfg.interface]) {
            Ok(()) => {
                info!(target: "ha", "HA: virtual IP removed: ip addr del {vip} dev {}", self.cfg.interface)
            }
            Err(e) => warn!(target: "ha", "HA: {e}"),
        }
        self.vip_owned = false;
    }

    fn reap(&mut self) {
        self.arping.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
    }

    fn send_adverts(&mut self, now: Instant) {
        while let Some(t) = self.vrrp.poll_transmit(now, &mut self.buf) {
            let Some(data) = self.buf.get(..t.len) else {
                break;
            };
            let dst = SocketAddr::from(SocketAddrV4::new(t.dst, 0));
            if let Err(e) = self.vrrp_sock.send_to(data, &dst.into()) {
                self.stats.send_errors += 1;
                debug!(target: "ha", "VRRP: send: {e}");
            }
        }
    }

    /// The status text and JSON of `ipsec show ha`.
    #[must_use]
    pub fn show(&self, now: Instant) -> (String, Value) {
        let st = HaStatus::collect(now, 0, &self.vrrp, &self.sync, &self.chan);
        let c = &self.cfg;
        let vc = self.vrrp.counters();
        let cc = self.chan.counters();
        let sc = self.sync.counters();
        let ms = |t: Instant| now.saturating_since(t).as_millis();
        let mut t = String::new();
        use std::fmt::Write as _;
        let _ = writeln!(
            t,
            "{} - Group {} (VRRPv3, virtual IP {})",
            c.interface, c.group, c.virtual_ip
        );
        let _ = writeln!(
            t,
            "  State is {} for {}.{:03} s, HA role {}",
            st.redundancy,
            ms(st.redundancy_since) / 1000,
            ms(st.redundancy_since) % 1000,
            st.role
        );
        let _ = writeln!(
            t,
            "  Virtual IP {} {} here",
            c.virtual_ip,
            if self.vip_owned {
                "is active"
            } else {
                "is not"
            }
        );
        let _ = writeln!(
            t,
            "  Priority {} (configured {}){}, advertisement interval {} ms, master down interval {} ms",
            self.vrrp.priority(),
            c.priority,
            if c.preempt { ", may preempt" } else { "" },
            c.advert_interval_ms,
            self.vrrp.master_down_interval().as_millis()
        );
        let _ = writeln!(
            t,
            "  Master router is {}",
            self.vrrp.master_ip().map_or_else(
                || "unknown".into(),
                |m| if m == c.primary {
                    format!("{m} (local)")
                } else {
                    m.to_string()
                }
            )
        );
        let _ = writeln!(
            t,
            "  Adverts sent {}, received {}, resign received {}, bad {} (TTL {}), became master {}",
            vc.adverts_sent,
            vc.adverts_received,
            vc.resign_received,
            vc.bad_packets + self.stats.vrrp_refused,
            self.stats.vrrp_bad_ttl,
            vc.became_master
        );
        let _ = writeln!(
            t,
            "Sync peer {}:{}: {}, {}, {} unacknowledged",
            c.peer,
            c.sync_port,
            if st.peer_connected {
                "connected"
            } else {
                "down"
            },
            if st.in_sync { "in sync" } else { "not in sync" },
            st.unacked
        );
        let _ = writeln!(
            t,
            "  Channel: sent {}, received {}, retransmits {}, sessions {}, refused {} (auth {}, replay {}, malformed {}), wrong source {}",
            cc.sent,
            cc.received,
            cc.retransmits,
            cc.sessions,
            self.stats.sync_refused,
            cc.auth_failed,
            cc.replayed,
            cc.malformed,
            self.stats.sync_wrong_source
        );
        let _ = writeln!(
            t,
            "  Sync: snapshots sent {} received {}, pairs sent {}, updates sent {}, deletes sent {}, records applied {} ignored {}",
            sc.snapshots_sent,
            sc.snapshots_received,
            sc.pairs_sent,
            sc.updates_sent,
            sc.deletes_sent,
            sc.records_applied,
            sc.records_ignored
        );
        let _ = writeln!(
            t,
            "  Replay interval inbound {} outbound {}; takeover advances: outbound +{}, inbound window +{}",
            c.replay_interval.0,
            c.replay_interval.1,
            self.sync.config().seq_advance(),
            self.sync.config().window_advance()
        );
        if let Some(l) = self.last_sync_ago(now) {
            let _ = writeln!(t, "  Last sync {}.{:03} s ago", l / 1000, l % 1000);
        }
        let _ = writeln!(
            t,
            "Synced SAs: {} IPsec SA pair(s), {} IKE SA(s)",
            st.sa_pairs, st.ike_sas
        );
        let pairs: Vec<Value> = self
            .sync
            .sa_status()
            .map(|s| {
                let map = map_of_group(s.sa_group);
                let group = if map == s.sa_group {
                    String::new()
                } else {
                    format!(" (dynamic, SA group {})", s.sa_group)
                };
                let _ = writeln!(
                    t,
                    "  peer {} map entry {map}{group}: inbound spi {:#010x}, outbound spi {:#010x}, HA status: {} (out seq {}, in top {})",
                    s.peer, s.inbound_spi, s.outbound_spi, s.state, s.out_next_seq, s.in_top
                );
                json!({
                    "peer": s.peer.to_string(), "crypto_map": map, "sa_group": s.sa_group,
                    "inbound_spi": format!("{:#010x}", s.inbound_spi),
                    "outbound_spi": format!("{:#010x}", s.outbound_spi),
                    "state": s.state.to_string(), "out_next_seq": s.out_next_seq, "in_top": s.in_top,
                })
            })
            .collect();
        if let Some(k) = &self.last_takeover {
            let _ = writeln!(
                t,
                "Last takeover {}.{:03} s ago ({}): {} SA pair(s) installed ({} failed, {} exact), {} IKE SA(s) imported, outbound +{}, inbound window +{}",
                ms(k.at) / 1000,
                ms(k.at) % 1000,
                k.report.kind,
                k.report.pairs,
                k.report.failed,
                k.report.exact,
                k.ike_sas,
                k.report.seq_advance,
                k.report.window_advance
            );
        }
        let _ = writeln!(
            t,
            "Drops while standby {}, gratuitous ARPs {}, takeovers {}, send errors {}",
            self.stats.standby_drops, self.stats.garp, self.stats.takeovers, self.stats.send_errors
        );
        let data = json!({
            "redundancy": "configured",
            "interface": c.interface, "group": c.group, "virtual_ip": c.virtual_ip.to_string(),
            "state": st.redundancy.to_string(), "role": st.role.to_string(),
            "state_for_ms": ms(st.redundancy_since), "vip_owned": self.vip_owned,
            "priority": self.vrrp.priority(), "preempt": c.preempt,
            "advert_interval_ms": c.advert_interval_ms,
            "master_down_interval_ms": self.vrrp.master_down_interval().as_millis(),
            "master": self.vrrp.master_ip().map(|m| m.to_string()),
            "peer": c.peer.to_string(), "sync_port": c.sync_port,
            "peer_connected": st.peer_connected, "in_sync": st.in_sync, "unacked": st.unacked,
            "last_sync_ms_ago": self.last_sync_ago(now),
            "synced_sa_pairs": st.sa_pairs, "synced_ike_sas": st.ike_sas, "pairs": pairs,
            "vrrp": {"adverts_sent": vc.adverts_sent, "adverts_received": vc.adverts_received,
                "resign_received": vc.resign_received, "bad_packets": vc.bad_packets,
                "refused": self.stats.vrrp_refused, "bad_ttl": self.stats.vrrp_bad_ttl,
                "became_master": vc.became_master},
            "channel": {"sent": cc.sent, "received": cc.received, "retransmits": cc.retransmits,
                "sessions": cc.sessions, "auth_failed": cc.auth_failed, "replayed": cc.replayed,
                "malformed": cc.malformed, "refused": self.stats.sync_refused,
                "wrong_source": self.stats.sync_wrong_source},
            "sync": {"snapshots_sent": sc.snapshots_sent, "snapshots_received": sc.snapshots_received,
                "pairs_sent": sc.pairs_sent, "updates_sent": sc.updates_sent,
                "deletes_sent": sc.deletes_sent, "records_applied": sc.records_applied,
                "records_ignored": sc.records_ignored, "bad_payloads": self.stats.sync_bad_payload,
                "handovers_sent": sc.handovers_sent, "handovers_received": sc.handovers_received,
                "handovers_superseded": sc.handovers_superseded,
                "handovers_unverified": sc.handovers_unverified,
                "exact_takeovers": sc.exact_takeovers},
            "replay_interval": {"inbound": c.replay_interval.0, "outbound": c.replay_interval.1},
            "seq_advance": self.sync.config().seq_advance(),
            "window_advance": self.sync.config().window_advance(),
            "last_takeover": self.last_takeover.map(|k| json!({
                "ms_ago": ms(k.at), "kind": k.report.kind.to_string(), "exact": k.report.exact,
                "pairs": k.report.pairs, "failed": k.report.failed,
                "ike_sas": k.ike_sas, "seq_advance": k.report.seq_advance,
                "window_advance": k.report.window_advance})),
            "standby_drops": self.stats.standby_drops, "garp": self.stats.garp,
            "takeovers": self.stats.takeovers, "send_errors": self.stats.send_errors,
        });
        (t, data)
    }

    fn last_sync_ago(&self, now: Instant) -> Option<u64> {
        self.sync
            .last_sync()
            .map(|l| now.saturating_since(l).as_millis())
    }
}

/// The library's VRRP configuration for `[redundancy]` (intervals in centiseconds).
#[must_use]
pub fn vrrp_config(cfg: &Redundancy) -> VrrpConfig {
    let mut vc = VrrpConfig::new(cfg.group, cfg.primary, cfg.virtual_ip);
    vc.priority = cfg.priority;
    vc.preempt = cfg.preempt;
    vc.preempt_delay = Duration::from_secs(u64::from(cfg.preempt_delay));
    vc.adver_interval = u16::try_from(cfg.advert_interval_ms / 10).unwrap_or(100);
    vc
}

/// The crypto map entry of an SA group: dynamic pairs carry it in the high 16 bits (see
/// `Daemon::dyn_group`), static ones are the entry's sequence number.
#[must_use]
pub const fn map_of_group(group: u32) -> u32 {
    if group > 0xffff { group >> 16 } else { group }
}

impl Daemon {
    /// Whether HA is configured and this member is not the active one.
    pub(super) fn ha_standby(&self) -> bool {
        self.ha
            .as_deref()
            .is_some_and(|h| h.sync.role() != HaRole::Active)
    }

    /// Timers of the election, the channel and the sync tick; then sends what is due.
    pub(super) fn ha_service(&mut self, now: Instant) {
        let Some(ha) = self.ha.as_deref_mut() else {
            return;
        };
        if ha.vrrp.poll_timeout().is_some_and(|t| t <= now) {
            ha.vrrp.handle_timeout(now);
        }
        if ha.chan.poll_timeout().is_some_and(|t| t <= now) {
            ha.chan.handle_timeout(now);
        }
        if ha.next_tick <= now {
            ha.next_tick = now + TICK;
            ha.reap();
            if ha.sync.role() == HaRole::Active {
                ha.sync.tick(now, &*self.dp);
                self.ha_export_ike(now);
            }
        }
        self.ha_pump(now);
    }

    /// Active: the IKE SAs that changed since their last export (or were last exported
    /// `IKE_REFRESH` ago) go to `HaSync`, and those gone are removed. The change test
    /// hashes an export taken at a fixed instant (so the lifetime left does not count as
    /// a change); a changed SA is exported again at `now` for the standby.
    fn ha_export_ike(&mut self, now: Instant) {
        let Some(ha) = self.ha.as_deref_mut() else {
            return;
        };
        let sas: Vec<(u32, [u8; 16])> = self
            .ike
            .isakmp_status()
            .filter(|s| s.state == IsakmpState::QmIdle)
            .map(|s| {
                let mut c = [0u8; 16];
                c[..8].copy_from_slice(&s.initiator_cookie);
                c[8..].copy_from_slice(&s.responder_cookie);
                (s.conn_id, c)
            })
            .collect();
        let mut body = [0u8; MAX_EXPORT_LEN];
        for (conn_id, cookies) in &sas {
            // SKEYID_d/a/e: they leave only through the encrypted channel.
            let Ok(n) = self.ike.export_sa(Instant::ZERO, *conn_id, &mut body) else {
                continue;
            };
            let mut h = DefaultHasher::new();
            body.get(..n).unwrap_or(&[]).hash(&mut h);
            let probe = h.finish();
            if ha
                .ike_probe
                .get(cookies)
                .is_some_and(|&(p, at)| p == probe && now < at + IKE_REFRESH)
            {
                continue;
            }
            let Ok(n) = self.ike.export_sa(now, *conn_id, &mut body) else {
                continue;
            };
            match ha.sync.ike_updated(*cookies, body.get(..n).unwrap_or(&[])) {
                Ok(()) => {
                    ha.ike_probe.insert(*cookies, (probe, now));
                }
                Err(e) => debug!(target: "ha", "HA: IKE SA {conn_id} not replicated: {e}"),
            }
        }
        body.fill(0);
        ha.ike_probe.retain(|c, _| sas.iter().any(|(_, x)| x == c));
        let gone: Vec<[u8; 16]> = ha
            .sync
            .ike_records()
            .map(|r| r.cookies)
            .filter(|c| !sas.iter().any(|(_, x)| x == c))
            .collect();
        for c in gone {
            ha.sync.ike_removed(c);
        }
    }

    /// Handles the election's and the channel's events, then sends adverts and sync
    /// datagrams until nothing is left.
    pub(super) fn ha_pump(&mut self, now: Instant) {
        for _ in 0..8 {
            let Some(ha) = self.ha.as_deref_mut() else {
                return;
            };
            let mut changes = Vec::new();
            while let Some(VrrpEvent::RoleChanged {
                from, to, reason, ..
            }) = ha.vrrp.poll_event()
            {
                info!(target: "ha", "%VRRP-6-STATECHANGE: {} Grp {} state {from} -> {to} ({reason:?})", ha.cfg.interface, ha.cfg.group);
                changes.push(to);
            }
            while let Some(e) = ha.chan.poll_event() {
                match e {
                    ChannelEvent::PeerUp { session } => {
                        info!(target: "ha", "HA: sync channel to {} up (session {session:#x})", ha.cfg.peer);
                        ha.sync.peer_up();
                        // The snapshot carries the stored exports; fresh ones follow.
                        ha.ike_probe.clear();
                    }
                    ChannelEvent::PeerLost => {
                        warn!(target: "ha", "HA: sync channel to {}: peer lost", ha.cfg.peer);
                        ha.sync.peer_lost();
                    }
                    _ => {}
                }
            }
            let any = !changes.is_empty();
            for to in changes {
                if to == VrrpState::Master {
                    self.ha_take_over(now);
                } else {
                    self.ha_step_down(now);
                }
            }
            let Some(ha) = self.ha.as_deref_mut() else {
                return;
            };
            ha.send_adverts(now);
            let _ = ha.sync.poll_send(now, &mut ha.chan);
            let peer = SocketAddr::from(SocketAddrV4::new(ha.cfg.peer, ha.cfg.sync_port));
            while let Some(n) = ha.chan.poll_transmit(now, &mut self.rng, &mut ha.buf) {
                if let Err(e) = ha.sync_sock.send_to(ha.buf.get(..n).unwrap_or(&[]), peer) {
                    ha.stats.send_errors += 1;
                    debug!(target: "ha", "HA: sync send to {peer}: {e}");
                }
            }
            if !any {
                break;
            }
        }
    }

    /// Reads VRRP adverts.
    pub(super) fn ha_read_vrrp(&mut self) {
        let now = self.now();
        let Some(ha) = self.ha.as_deref_mut() else {
            return;
        };
        for _ in 0..64 {
            let n = match (&ha.vrrp_sock).read(&mut ha.buf) {
                Ok(n) => n,
                Err(e) => {
                    if e.kind() != ErrorKind::WouldBlock {
                        debug!(target: "ha", "VRRP: recv: {e}");
                    }
                    break;
                }
            };
            let p = ha.buf.get(..n).unwrap_or(&[]);
            // RFC 5798 §7.1: an advert with a TTL other than 255 came through a router.
            if p.get(8) != Some(&255) {
                ha.stats.vrrp_bad_ttl += 1;
                continue;
            }
            match ha.vrrp.handle_ip_packet(now, p) {
                Ok(()) => {}
                Err(e) => {
                    ha.stats.vrrp_refused += 1;
                    debug!(target: "ha", "VRRP: advert refused: {e}");
                }
            }
        }
        self.ha_pump(now);
    }

    /// Reads sync datagrams.
    pub(super) fn ha_read_sync(&mut self) {
        let now = self.now();
        let Some(ha) = self.ha.as_deref_mut() else {
            return;
        };
        for _ in 0..256 {
            let (n, from) = match ha.sync_sock.recv_from(&mut ha.buf) {
                Ok(x) => x,
                Err(e) => {
                    if e.kind() != ErrorKind::WouldBlock {
                        debug!(target: "ha", "HA: sync recv: {e}");
                    }
                    break;
                }
            };
            if from.ip() != IpAddr::V4(ha.cfg.peer) {
                ha.stats.sync_wrong_source += 1;
                continue;
            }
            let Some(data) = ha.buf.get_mut(..n) else {
                continue;
            };
            match ha.chan.handle_datagram(now, &mut self.rng, data) {
                Ok(Received::Data(payload)) => {
                    if let Err(e) = ha.sync.handle_payload(now, payload) {
                        ha.stats.sync_bad_payload += 1;
                        warn!(target: "ha", "HA: sync message from {from}: {e}");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    ha.stats.sync_refused += 1;
                    debug!(target: "ha", "HA: sync datagram from {from} refused: {e}");
                }
            }
        }
        self.ha_pump(now);
    }

    /// Active: a pair was installed; replicate it with the keys IKE delivered.
    pub(super) fn ha_sa_installed(
        &mut self,
        now: Instant,
        cs: &ChildSa,
        group: u32,
        handles: (SaHandle, SaHandle),
    ) {
        let Some(ha) = self
            .ha
            .as_deref_mut()
            .filter(|h| h.sync.role() == HaRole::Active)
        else {
            return;
        };
        let (ie, ia) = cs.inbound_keys();
        let (oe, oa) = cs.outbound_keys();
        let (Ok(ik), Ok(ok)) = (SaKeys::new(ie, ia), SaKeys::new(oe, oa)) else {
            warn!(target: "ha", "HA: SA pair {:#010X}: keys too long for a sync record, not replicated", cs.inbound.spi);
            return;
        };
        let cookies = self
            .ike
            .isakmp_status()
            .find(|s| s.conn_id == cs.conn_id)
            .map_or([0; 16], |s| {
                let mut c = [0u8; 16];
                c[..8].copy_from_slice(&s.initiator_cookie);
                c[8..].copy_from_slice(&s.responder_cookie);
                c
            });
        let mut outbound = cs.outbound.clone();
        outbound.df_bit = self.cfg.df_bit;
        let rec = SaPairRecord {
            sa_group: group,
            peer: cs.peer.ip(),
            ike_cookies: cookies,
            inbound: cs.inbound.clone(),
            outbound,
            inbound_keys: ik,
            outbound_keys: ok,
            progress: SaProgress::fresh(cs.inbound.esn, cs.inbound.replay_window),
        };
        match ha.sync.sa_installed(now, rec, Some(handles)) {
            Ok(()) => {
                debug!(target: "ha", "HA: SA pair {:#010X}/{:#010X} replicated to the standby", cs.inbound.spi, cs.outbound.spi);
            }
            Err(e) => {
                warn!(target: "ha", "HA: SA pair {:#010X} not replicated: {e}", cs.inbound.spi);
            }
        }
        // The IKE SA that carried it goes along in the same message where possible.
        self.ha_export_ike(now);
    }

    /// Active: a pair is gone; the standby forgets it.
    pub(super) fn ha_sa_removed(&mut self, in_spi: u32) {
        if let Some(ha) = self
            .ha
            .as_deref_mut()
            .filter(|h| h.sync.role() == HaRole::Active)
        {
            ha.sync.sa_removed(in_spi);
        }
    }

    /// Backup -> Master: the VIP, then the synced SAs, IKE SAs and routes.
    fn ha_take_over(&mut self, now: Instant) {
        let Some(ha) = self.ha.as_deref_mut() else {
            return;
        };
        ha.add_vip();
        if ha.sync.role() == HaRole::Active {
            return;
        }
        let report = ha.sync.activate(now, &mut self.dp);
        let mut ike_sas = 0;
        for r in ha.sync.ike_records() {
            match self.ike.import_sa(now, r.body) {
                Ok(c) => {
                    ike_sas += 1;
                    info!(target: "isakmp", "ISAKMP:({c}): IKE SA imported from the synchronised state (QM_IDLE, nothing sent)");
                }
                Err(e) => warn!(target: "isakmp", "ISAKMP: synchronised IKE SA not imported: {e}"),
            }
        }
        // Behind a NAT, the imported IKE SAs need their NAT keepalives as negotiated ones do.
        if self.cfg.nat_keepalive > 0 {
            let natted: Vec<(SocketAddr, NatStatus)> = self
                .ike
                .isakmp_status()
                .filter(|s| s.nat.local_behind_nat)
                .map(|s| {
                    (
                        s.remote,
                        NatStatus {
                            local_behind_nat: true,
                            remote_behind_nat: s.nat.remote_behind_nat,
                        },
                    )
                })
                .collect();
            for (peer, status) in natted {
                let k = NatKeepalive::new(
                    now,
                    KeepaliveConfig::seconds(self.cfg.nat_keepalive),
                    peer,
                    status,
                );
                self.keepalives.insert(peer.ip(), k);
                info!(target: "isakmp", "ISAKMP: behind a NAT: NAT keepalives to {peer} every {} s (taken over)", self.cfg.nat_keepalive);
            }
        }
        struct Imp {
            import: ChildImport,
            group: u32,
            handles: (SaHandle, SaHandle),
            port: u16,
        }
        let imps: Vec<Imp> = ha
            .sync
            .pairs()
            .filter_map(|p| {
                let handles = ha.sync.handles(p.id())?;
                let mut import = ChildImport::from_ha_record(p);
                import.crypto_map = map_of_group(p.sa_group);
                let port = p.outbound.udp_encap.map_or(500, |u| u.remote_port);
                Some(Imp {
                    import,
                    group: p.sa_group,
                    handles,
                    port,
                })
            })
            .collect();
        if report.pairs + report.failed == 0 && ike_sas == 0 {
            info!(target: "ha", "HA: active, with no synchronised state to install");
        } else {
            ha.stats.takeovers += 1;
            ha.last_takeover = Some(Takeover {
                at: now,
                report,
                ike_sas,
            });
            info!(target: "ha", "%HA-5-TAKEOVER: {} SA pair(s) installed from the synchronised SADB ({} failed), {ike_sas} IKE SA(s) imported; {}: {} pair(s) exact, outbound sequence numbers +{}, inbound windows +{}",
                report.pairs, report.failed, report.kind, report.exact, report.seq_advance, report.window_advance);
        }
        for m in imps {
            let Some(selector) = m.import.inbound.selector else {
                continue;
            };
            let map = m.import.crypto_map;
            let dynamic = self.cfg.ike.crypto_map(map).is_none_or(|e| e.dynamic);
            let dyn_policy = if dynamic {
                let p = Policy {
                    seq: m.group,
                    selector,
                    action: PolicyAction::Protect { sa_group: m.group },
                };
                match self.dp.spd_mut().insert(p) {
                    Ok(_) => Some(m.group),
                    Err(e) => {
                        warn!(target: "ha", "HA: SPD full ({e}): pair {:#010X} carries no traffic", m.import.inbound.spi);
                        None
                    }
                }
            } else {
                None
            };
            let conn_id = match self.ike.import_child(now, &m.import) {
                Ok(c) => c,
                Err(e) => {
                    warn!(target: "ha", "HA: pair {:#010X} not re-attached to an IKE SA ({e}): it lives until its lifetime, no rekey", m.import.inbound.spi);
                    0
                }
            };
            let reverse = self.cfg.map(map).is_some_and(|x| x.reverse_route) || dynamic;
            let route = if reverse {
                selector.remote.as_prefix()
            } else {
                None
            };
            if let Some(p) = route {
                self.routes.add(p, RouteKind::Reverse, map);
            }
            info!(target: "ipsec", "IPSEC(create_sa): sa activated from HA state, inbound spi {:#010X}, outbound spi {:#010X}, peer {}, crypto map entry {map}",
                m.import.inbound.spi, m.import.outbound.spi, m.import.peer);
            self.children.push(ChildRec {
                conn_id,
                map,
                group: m.group,
                peer: SocketAddr::new(m.import.peer, m.port),
                in_spi: m.import.inbound.spi,
                out_spi: m.import.outbound.spi,
                hin: m.handles.0,
                hout: m.handles.1,
                selector,
                route,
                dyn_policy,
                rekeying: false,
            });
        }
    }

    /// Master -> Backup or Init: the pairs leave the data plane (their counters kept in
    /// `HaSync`), the IKE state is forgotten without DELETEs, the VIP goes.
    fn ha_step_down(&mut self, now: Instant) {
        let Some(ha) = self.ha.as_deref_mut() else {
            return;
        };
        ha.remove_vip();
        if ha.sync.role() != HaRole::Active {
            return;
        }
        let n = ha.sync.deactivate(now, &mut self.dp);
        for c in std::mem::take(&mut self.children) {
            self.dp.remove_inbound(c.hin);
            self.dp.remove_outbound(c.hout);
            if let Some(g) = c.dyn_policy {
                self.dp.spd_mut().remove(g);
            }
            if let Some(p) = c.route {
                self.routes.release(p);
            }
        }
        *self.ike = Ike::new(self.cfg.ike.clone());
        self.keepalives.clear();
        warn!(target: "ha", "%HA-5-STANDBY: demoted: {n} SA pair(s) left the data plane, IKE state dropped without DELETE (the active member owns it)");
    }

    /// SIGTERM with HA. Returns whether the SAs were handed over (then no DELETE may be
    /// sent): the active with a connected standby pushes a last update, waits for its
    /// acknowledgement, resigns (priority-0 advert) and removes the VIP. Otherwise it only
    /// resigns and removes the VIP, and the ordinary shutdown follows.
    pub(super) fn ha_hand_over(&mut self) -> bool {
        let Some(ha) = self.ha.as_deref() else {
            return false;
        };
        let handover = ha.sync.role() == HaRole::Active && ha.chan.is_connected();
        if handover {
            // The event loop has stopped: nothing was sealed or opened since, and
            // `hand_over` takes the pairs out of the data plane with their final counters,
            // so the marker after them vouches for the last numbers used and accepted.
            let now = self.now();
            self.ha_export_ike(now);
            if let Some(ha) = self.ha.as_deref_mut() {
                match ha.sync.hand_over(now, &mut self.dp) {
                    Ok((m, n)) => {
                        info!(target: "ha", "HA: handing over: {n} SA pair(s) out of the data plane, final counters and handover marker ({} pair(s), digest {:#018x}) to the standby", m.pairs, m.digest);
                    }
                    Err(e) => {
                        warn!(target: "ha", "HA: no handover marker ({e}): the standby takes over with margins");
                    }
                }
            }
            self.ha_pump(now);
            let deadline = std::time::Instant::now() + HANDOVER_WAIT;
            while std::time::Instant::now() < deadline
                && self
                    .ha
                    .as_deref()
                    .is_some_and(|h| h.chan.unacked() > 0 || h.sync.handover_pending())
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
                self.ha_read_sync();
                let now = self.now();
                self.ha_service(now);
            }
        }
        let now = self.now();
        let Some(ha) = self.ha.as_deref_mut() else {
            return false;
        };
        let unacked = ha.chan.unacked() + usize::from(ha.sync.handover_pending());
        ha.vrrp.shutdown(now);
        ha.send_adverts(now);
        ha.remove_vip();
        if handover {
            info!(target: "ha", "%HA-5-HANDOVER: resigned (priority 0 advert); {} SA pair(s) and {} IKE SA(s) left to the standby {} without DELETE ({unacked} sync message(s) unacknowledged)",
                ha.sync.pair_count(), ha.sync.ike_count(), ha.cfg.peer);
            for c in std::mem::take(&mut self.children) {
                self.dp.remove_inbound(c.hin);
                self.dp.remove_outbound(c.hout);
            }
        }
        handover
    }

    /// `ipsec show ha`.
    pub(super) fn ha_show(&self) -> (String, Value) {
        match self.ha.as_deref() {
            Some(ha) => ha.show(self.now()),
            None => (
                "redundancy: not configured\n".into(),
                json!({"redundancy": "not configured"}),
            ),
        }
    }
}

/// The VIP a member binds IKE to: freebind lets the standby bind before it owns it.
///
/// # Errors
/// The socket calls failed.
pub fn bind_freebind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv4() {
        s.set_freebind_v4(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(UdpSocket::from_std(s.into()))
}

#[cfg(test)]
mod tests {
    use super::{map_of_group, vrrp_config};
    use crate::config::Config;
    use ipsec_core::ha::vrrp::{Vrrp, VrrpState};
    use ipsec_core::{Duration, Instant};

    const CFG: &str = r#"
[interface]
address = "203.0.113.11"
[[isakmp.key]]
key = "k"
address = "203.0.113.2"
[[transform_set]]
name = "TS"
esp = ["esp-aes", "esp-sha-hmac"]
[[crypto_map]]
name = "vpn"
seq = 10
dynamic = true
transform_sets = ["TS"]
[redundancy]
enabled = true
virtual_ip = "203.0.113.10"
group = 7
priority = 110
preempt = true
preempt_delay = 5
peer = "203.0.113.12"
interface = "ha-out"
advert_interval_ms = 200
sync_key = "0123456789abcdef"
"#;

    #[test]
    fn vrrp_follows_the_configuration() {
        let cfg = Config::parse(CFG).expect("valid");
        let r = cfg.redundancy.as_ref().expect("enabled");
        let vc = vrrp_config(r);
        assert_eq!((vc.vrid, vc.priority, vc.preempt), (7, 110, true));
        assert_eq!(vc.adver_interval, 20, "centiseconds");
        assert_eq!(vc.preempt_delay, Duration::from_secs(5));
        assert_eq!(vc.primary_ip.to_string(), "203.0.113.11");
        assert_eq!(
            vc.virtual_ips.first().map(ToString::to_string).as_deref(),
            Some("203.0.113.10")
        );
        // Alone on the segment it becomes master after 3 x 200 ms + skew
        // ((256 - 110) x 200 / 256 = 114 ms).
        let mut v = Vrrp::new(vc).expect("accepted");
        v.startup(Instant::ZERO);
        assert_eq!(v.state(), VrrpState::Backup);
        assert_eq!(v.master_down_interval(), Duration::from_millis(714));
        v.handle_timeout(Instant::from_millis(713));
        assert_eq!(v.state(), VrrpState::Backup);
        v.handle_timeout(Instant::from_millis(714));
        assert_eq!(v.state(), VrrpState::Master);
    }

    #[test]
    fn groups_name_their_crypto_map_entry() {
        // Static entries: the group is the entry's sequence number.
        assert_eq!(map_of_group(10), 10);
        assert_eq!(map_of_group(0xffff), 0xffff);
        // Dynamic pairs: the entry in the high 16 bits, a counter below.
        assert_eq!(map_of_group((20 << 16) | 7), 20);
        assert_eq!(map_of_group((0xffff << 16) | 0xffff), 0xffff);
        assert_eq!(map_of_group(1 << 16), 1);
    }
}
