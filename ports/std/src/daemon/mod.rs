//! `ipsec up`: the userspace VPN daemon. The library's sans-IO state machines (IKE, the
//! data plane, NAT keepalives) bound to a Linux host: UDP sockets on 500 and 4500, a raw
//! IP socket for ESP (protocol 50), a TUN device for the protected traffic, routes into
//! it, a control socket for `ipsec show`, and the host's monotonic clock.
//!
//! # One loop
//!
//! Everything runs on one thread around one `mio` poll (epoll): the sockets, the TUN,
//! the control socket and a self-pipe for SIGINT/SIGTERM. The poll timeout is the
//! earliest of `Ike::poll_timeout`, `Dataplane::poll_timeout` and the NAT keepalive
//! deadlines, so an idle daemon sleeps until something is due. Why mio and not
//! `poll(2)` through `nix`: the TUN crate exposes only a raw fd, which mio registers
//! without unsafe code (`SourceFd`), and epoll does not rescan every fd per wakeup. No
//! async runtime: nothing here awaits anything but the next readiness or deadline.
//!
//! # Packet paths
//!
//! * TUN -> `Dataplane::send` (SPD, SA, MSS/DF/fragmentation) -> each outer packet: an
//!   unfragmented ESP-in-UDP packet leaves through the UDP 4500 socket with its outer
//!   IP/UDP headers stripped (the kernel adds its own); raw ESP and outer fragments
//!   leave through the raw socket (`IP_HDRINCL`). `NoSa { sa_group }` queues the packet
//!   (a few per entry) and starts IKE for that crypto map entry.
//! * UDP 4500 -> non-ESP marker: IKE; `0xFF`: NAT keepalive; else ESP: an outer IPv4 +
//!   UDP header is put back in front (the datagram's real addresses) and
//!   `Dataplane::receive` opens it; the inner packet goes to the TUN.
//! * UDP 500 -> IKE. Raw socket (protocol 50) -> `Dataplane::receive` as it is.
//! * GRE tunnels (`[[tunnel]]`, see [`gre`]): their own TUNs; a packet read from one is
//!   GRE-encapsulated and takes the TUN path above; a decrypted packet that is one
//!   tunnel's GRE goes to that tunnel instead of the TUN.
//!
//! # Control plane
//!
//! `ChildSaEstablished` installs the pair (`install_pair`) and, for `reverse_route`
//! entries, a route; `ChildSaDeleted` removes both. The data plane's idle and hard
//! expiries delete the child through IKE (a DELETE goes to the peer), its soft expiry
//! rekeys it. SIGINT/SIGTERM: every IKE SA is deleted (DELETE notifies sent), routes
//! removed, the TUN closed (it disappears), exit 0.

pub mod control;
pub mod gre;
pub mod ha;
mod packet;
pub mod routes;

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read as _};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use ipsec_core::dataplane::{Dataplane, DataplaneError, Received, SendBuffers, Sent};
use ipsec_core::esp::{Direction, EspSa, SaEvent};
use ipsec_core::sadb::SaHandle;
use ipsec_core::spd::{Policy, PolicyAction, Selector};
use ipsec_core::{Duration, Instant};
use ipsec_ike::v1::{ChildSa, DeleteReason, Ike, IkeError, IkeEvent};
use ipsec_nat_t::{Classified, KeepaliveConfig, NatKeepalive, NatStatus};
use ipsec_soft_crypto::{BufferedOsRng, SoftCrypto};
use mio::net::UdpSocket;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use tracing::{debug, info, trace, warn};

use crate::config::Config;
use crate::show::transform_name;
use routes::{RouteKind, Routes};

/// Most SAs per direction.
pub const MAX_SAS: usize = 64;
/// Most SPD policies (static entries plus dynamic pairs).
pub const MAX_POLICIES: usize = 32;
/// Reassembly buffer size (largest reassembled datagram).
const FRAG_SIZE: usize = 9216;
/// Packets kept per crypto map entry while IKE negotiates.
const PENDING_PER_MAP: usize = 16;
/// After a failed negotiation, traffic does not start another one for this long.
const HOLD_DOWN: Duration = Duration::from_secs(2);
/// How long packets queued during a negotiation we initiated wait after Quick Mode
/// completes. Our QM3 and the first ESP packet leave back to back, and the responder
/// installs its inbound SA only once it has processed QM3: strongSwan with
/// kernel-libipsec dropped the first packet ("no SA for SPI") when it raced. RFC 2408's
/// commit bit exists for this; a short settle time is what implementations do instead.
const QUEUE_SETTLE: Duration = Duration::from_millis(50);
/// Packets handled per source per wakeup before the others get their turn.
const BUDGET: usize = 128;

/// Outbound flow-cache entries (64 bytes each, 64 KiB): a gateway carries many flows,
/// and a flow that does not fit scans the SPD on every packet.
pub const FLOWS: usize = 1024;

/// The data plane as the daemon sizes it.
pub type Dp = Dataplane<SoftCrypto, MAX_SAS, MAX_POLICIES, 2, 4, FRAG_SIZE, FLOWS>;

const T500: Token = Token(0);
const T4500: Token = Token(1);
const TRAW: Token = Token(2);
const TTUN: Token = Token(3);
const TCTL: Token = Token(4);
const TSIG: Token = Token(5);

/// Options of `ipsec up` beyond the configuration file.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Control socket path (overrides the config's).
    pub control: Option<PathBuf>,
}

/// One installed child SA pair.
#[derive(Clone, Debug)]
pub struct ChildRec {
    /// IKE SA that negotiated it.
    pub conn_id: u32,
    /// Crypto map entry.
    pub map: u32,
    /// SPD `sa_group` it is bound to.
    pub group: u32,
    /// Peer IKE address.
    pub peer: SocketAddr,
    /// Our SPI.
    pub in_spi: u32,
    /// The peer's SPI.
    pub out_spi: u32,
    /// Data plane handles (they may be gone after an idle expiry).
    pub hin: SaHandle,
    /// Outbound handle.
    pub hout: SaHandle,
    /// Negotiated selector (our view).
    pub selector: Selector,
    /// Reverse route held, if any.
    pub route: Option<(IpAddr, u8)>,
    /// A policy added for a dynamic entry.
    pub dyn_policy: Option<u32>,
    /// A rekey was asked for.
    pub rekeying: bool,
}

/// Daemon-level counters (beyond the library's).
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Packets read from the TUN.
    pub tun_rx: u64,
    /// Packets written to the TUN.
    pub tun_tx: u64,
    /// ESP packets sent (UDP or raw).
    pub esp_tx: u64,
    /// ESP packets received.
    pub esp_rx: u64,
    /// IKE datagrams sent.
    pub ike_tx: u64,
    /// IKE datagrams received.
    pub ike_rx: u64,
    /// NAT keepalives sent.
    pub keepalive_tx: u64,
    /// NAT keepalives received.
    pub keepalive_rx: u64,
    /// TUN packets no policy protects (dropped: routed here by mistake).
    pub no_policy: u64,
    /// Packets dropped while waiting for an SA (queue full or negotiation failed).
    pub acquire_dropped: u64,
    /// Send errors on the sockets.
    pub send_errors: u64,
    /// Packets the data plane refused (see its counters).
    pub dp_errors: u64,
}

/// The running daemon's state.
pub struct Daemon {
    /// The configuration.
    pub cfg: Config,
    /// IKE.
    pub ike: Box<Ike<SoftCrypto>>,
    /// The data plane.
    pub dp: Box<Dp>,
    /// Installed child SA pairs.
    pub children: Vec<ChildRec>,
    /// Routes into the TUN.
    pub routes: Routes,
    /// NAT keepalive timers by peer address.
    pub keepalives: HashMap<IpAddr, NatKeepalive>,
    /// Counters.
    pub stats: Stats,
    /// When the daemon started.
    pub started: StdInstant,
    /// Control socket path.
    pub control_path: PathBuf,
    listener: UnixListener,
    rng: BufferedOsRng,
    s500: UdpSocket,
    s4500: UdpSocket,
    raw: Option<socket2::Socket>,
    tun: tun::Device,
    /// GRE tunnels (`[[tunnel]]`).
    pub gre: gre::Tunnels,
    pending: HashMap<u32, VecDeque<Vec<u8>>>,
    /// SA groups whose queued packets leave at the given time (see [`QUEUE_SETTLE`]).
    flush_at: HashMap<u32, Instant>,
    hold_down: HashMap<u32, Instant>,
    next_dyn: u32,
    /// `[redundancy]`: the VRRP election, the sync channel and the replicated SADB.
    ha: Option<Box<ha::Ha>>,
    buf: Vec<u8>,
    reasm: Vec<u8>,
    work: Vec<u8>,
    frag: Vec<u8>,
    tx: Vec<u8>,
}

fn io_err(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl Daemon {
    fn now(&self) -> Instant {
        Instant::from_millis(u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// Opens sockets and the TUN, installs policies and acquire routes.
    ///
    /// # Errors
    /// Why the daemon cannot start (a bind, the TUN, ...).
    pub fn new(cfg: Config, opts: &RunOptions) -> Result<Self, String> {
        // With HA, IKE and ESP use the virtual IP (the standby binds it before owning it).
        let local = cfg.ike.local_addr;
        let bind = |port| {
            if cfg.redundancy.is_some() {
                ha::bind_freebind(SocketAddr::new(local, port))
            } else {
                UdpSocket::bind(SocketAddr::new(local, port))
            }
        };
        let s500 = bind(500).map_err(io_err(&format!("bind {local}:500")))?;
        let s4500 = bind(4500).map_err(io_err(&format!("bind {local}:4500")))?;
        let control_path = opts
            .control
            .clone()
            .unwrap_or_else(|| cfg.control_socket.clone());
        // Before the TUN and the routes: a second daemon fails without touching them.
        let listener = control::bind(&control_path)?;
        let raw = match open_raw(local) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(target: "ipsec", "raw ESP socket unavailable ({e}): only ESP-in-UDP will work");
                None
            }
        };
        let mut tc = tun::Configuration::default();
        tc.tun_name(&cfg.interface.tun).mtu(cfg.interface.mtu).up();
        let tun = tun::create(&tc).map_err(|e| format!("TUN {}: {e}", cfg.interface.tun))?;
        tun.set_nonblock().map_err(io_err("TUN non-blocking"))?;
        info!(target: "daemon", "TUN {} up, mtu {}", cfg.interface.tun, cfg.interface.mtu);

        let mut dp: Box<Dp> = Box::new(Dataplane::new(PolicyAction::Bypass));
        dp.set_idle_time(cfg.idle_time);
        dp.set_fragmentation(cfg.fragmentation);
        dp.set_icmp_source(cfg.interface.source.unwrap_or(local));
        for e in &cfg.ike.crypto_maps {
            if e.dynamic {
                continue;
            }
            dp.spd_mut()
                .insert(Policy {
                    seq: e.seq,
                    selector: e.selector,
                    action: PolicyAction::Protect { sa_group: e.seq },
                })
                .map_err(|e| format!("SPD: {e}"))?;
        }
        let ike = Box::new(Ike::new(cfg.ike.clone()));
        let mut routes = Routes::new(&cfg.interface.tun, cfg.interface.source);
        for e in &cfg.ike.crypto_maps {
            // A tunnel's delivery packets never pass through the kernel's routes.
            if e.dynamic || cfg.tunnel(e.seq).is_some() {
                continue;
            }
            match e.selector.remote.as_prefix() {
                Some(p) => routes.add(p, RouteKind::Acquire, e.seq),
                None => {
                    warn!(target: "ipsec", "crypto map entry {}: remote {} is not a prefix, no route", e.seq, e.selector.remote)
                }
            }
        }
        if let Some(k) = cfg.keepalive {
            info!(target: "isakmp", "ISAKMP: DPD {:?}, interval {} s, retry {} s", k.mode, k.interval, k.retry);
        }
        let started = StdInstant::now();
        let ha = match &cfg.redundancy {
            Some(r) => Some(Box::new(ha::Ha::new(r, Instant::ZERO)?)),
            None => None,
        };
        let gre = gre::Tunnels::open(&cfg, Instant::ZERO)?;
        Ok(Self {
            cfg,
            ike,
            dp,
            children: Vec::new(),
            routes,
            keepalives: HashMap::new(),
            stats: Stats::default(),
            started,
            control_path,
            listener,
            rng: BufferedOsRng::new(),
            s500,
            s4500,
            raw,
            tun,
            gre,
            pending: HashMap::new(),
            flush_at: HashMap::new(),
            hold_down: HashMap::new(),
            next_dyn: 0,
            ha,
            buf: vec![0; 65_600],
            reasm: vec![0; FRAG_SIZE + 64],
            work: vec![0; 65_600],
            frag: vec![0; 2048],
            tx: vec![0; 65_600],
        })
    }

    /// Runs until SIGINT or SIGTERM, then deletes every SA, removes the routes and
    /// closes the TUN.
    ///
    /// # Errors
    /// A fatal I/O error (the loop itself).
    pub fn run(mut self) -> Result<(), String> {
        let r = self.event_loop();
        match &r {
            Ok(()) => info!(target: "daemon", "signal received: deleting all SAs"),
            Err(e) => warn!(target: "daemon", "{e}: deleting all SAs"),
        }
        self.shutdown();
        let _ = std::fs::remove_file(&self.control_path);
        info!(target: "daemon", "stopped");
        r
    }

    fn event_loop(&mut self) -> Result<(), String> {
        let mut poll = Poll::new().map_err(io_err("epoll"))?;
        let (sig_r, sig_w) = UnixStream::pair().map_err(io_err("signal pipe"))?;
        sig_r.set_nonblocking(true).map_err(io_err("signal pipe"))?;
        let sig_w2 = sig_w.try_clone().map_err(io_err("signal pipe"))?;
        let sig_ids = [
            signal_hook::low_level::pipe::register(signal_hook::consts::SIGTERM, sig_w)
                .map_err(io_err("SIGTERM"))?,
            signal_hook::low_level::pipe::register(signal_hook::consts::SIGINT, sig_w2)
                .map_err(io_err("SIGINT"))?,
        ];
        let reg = poll.registry();
        reg.register(&mut self.s500, T500, Interest::READABLE)
            .map_err(io_err("register"))?;
        reg.register(&mut self.s4500, T4500, Interest::READABLE)
            .map_err(io_err("register"))?;
        if let Some(r) = &self.raw {
            reg.register(&mut SourceFd(&r.as_raw_fd()), TRAW, Interest::READABLE)
                .map_err(io_err("register"))?;
        }
        reg.register(
            &mut SourceFd(&self.tun.as_raw_fd()),
            TTUN,
            Interest::READABLE,
        )
        .map_err(io_err("register"))?;
        reg.register(
            &mut SourceFd(&self.listener.as_raw_fd()),
            TCTL,
            Interest::READABLE,
        )
        .map_err(io_err("register"))?;
        reg.register(&mut SourceFd(&sig_r.as_raw_fd()), TSIG, Interest::READABLE)
            .map_err(io_err("register"))?;
        if let Some(h) = self.ha.as_deref_mut() {
            h.register(reg).map_err(io_err("register"))?;
        }
        self.gre.register(reg).map_err(io_err("register"))?;
        info!(target: "daemon", "{}: up on {} ({}), control socket {}", self.cfg.hostname,
            self.cfg.interface.address, self.cfg.interface.name, self.control_path.display());

        let mut events = Events::with_capacity(64);
        // Sources that still had packets when their budget ran out (edge-triggered).
        let mut busy: Vec<Token> = Vec::new();
        let mut stop = false;
        let now = self.now();
        self.gre_start(now);
        while !stop {
            self.service_timers();
            let timeout = if busy.is_empty() {
                self.next_wakeup()
            } else {
                Some(StdDuration::ZERO)
            };
            match poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("poll: {e}")),
            }
            let mut ready: Vec<Token> = events.iter().map(mio::event::Event::token).collect();
            for t in busy.drain(..) {
                if !ready.contains(&t) {
                    ready.push(t);
                }
            }
            for t in ready {
                let more = match t {
                    T500 => self.read_udp(false),
                    T4500 => self.read_udp(true),
                    TRAW => self.read_raw(),
                    TTUN => self.read_tun(),
                    ha::TVRRP => {
                        self.ha_read_vrrp();
                        false
                    }
                    ha::TSYNC => {
                        self.ha_read_sync();
                        false
                    }
                    TCTL => {
                        self.serve_control();
                        false
                    }
                    TSIG => {
                        let mut b = [0u8; 16];
                        while matches!((&sig_r).read(&mut b), Ok(n) if n > 0) {}
                        stop = true;
                        false
                    }
                    t => match self.gre.index_of(t) {
                        Some(i) => self.read_gre_tun(i),
                        None => false,
                    },
                };
                if more {
                    busy.push(t);
                }
            }
        }
        for id in sig_ids {
            signal_hook::low_level::unregister(id);
        }
        Ok(())
    }

    fn next_wakeup(&self) -> Option<StdDuration> {
        let now = self.now();
        let mut t = [
            self.ike.poll_timeout(),
            self.dp.poll_timeout(),
            self.ha.as_deref().and_then(ha::Ha::poll_timeout),
        ]
        .into_iter()
        .flatten()
        .chain(
            self.keepalives
                .values()
                .filter_map(NatKeepalive::poll_timeout),
        )
        .min();
        let gre = self.gre.poll_timeout();
        for h in self
            .hold_down
            .values()
            .chain(self.flush_at.values())
            .chain(&gre)
        {
            t = Some(t.map_or(*h, |x| x.min(*h)));
        }
        // Bound the sleep anyway: a missed deadline must never stall the daemon.
        let max = StdDuration::from_secs(5);
        Some(t.map_or(max, |t| {
            if t <= now {
                StdDuration::ZERO
            } else {
                StdDuration::from_millis((t - now).as_millis()).min(max)
            }
        }))
    }

    fn service_timers(&mut self) {
        let now = self.now();
        if self.ike.poll_timeout().is_some_and(|t| t <= now) {
            self.ike.handle_timeout(now, &mut self.rng);
        }
        if self.dp.poll_timeout().is_some_and(|t| t <= now) {
            self.dp.handle_timeout(now);
        }
        self.hold_down.retain(|_, t| *t > now);
        self.gre_timers(now);
        self.flush_queues(now);
        self.drain(now);
        self.ha_service(now);
        let due: Vec<IpAddr> = self
            .keepalives
            .iter()
            .filter(|(_, k)| k.poll_timeout().is_some_and(|t| t <= now))
            .map(|(a, _)| *a)
            .collect();
        for a in due {
            if let Some(k) = self.keepalives.get_mut(&a) {
                if let Some(ka) = k.poll_transmit(now) {
                    match self.s4500.send_to(ka.payload(), ka.dst) {
                        Ok(_) => {
                            self.stats.keepalive_tx += 1;
                            debug!(target: "isakmp", "ISAKMP: NAT keepalive sent to {}", ka.dst);
                        }
                        Err(e) => {
                            self.stats.send_errors += 1;
                            warn!(target: "isakmp", "NAT keepalive to {}: {e}", ka.dst);
                        }
                    }
                }
            }
        }
    }

    /// Sends what IKE has to send and handles every pending event, IKE's and the data
    /// plane's, until both are quiet.
    fn drain(&mut self, now: Instant) {
        for _ in 0..16 {
            let mut any = false;
            while let Some(tx) = self.ike.poll_transmit(now, &mut self.tx) {
                any = true;
                let sock = if tx.src.port() == self.cfg.ike.natt_port {
                    &self.s4500
                } else {
                    &self.s500
                };
                let data = self.tx.get(..tx.len).unwrap_or(&[]);
                match sock.send_to(data, tx.dst) {
                    Ok(_) => {
                        self.stats.ike_tx += 1;
                        debug!(target: "isakmp", "ISAKMP ({}): sending packet to {} my_port {} peer_port {} ({} bytes) {}",
                            self.conn_of(tx.dst), tx.dst.ip(), tx.src.port(), tx.dst.port(), tx.len, self.state_of(tx.dst));
                    }
                    Err(e) => {
                        self.stats.send_errors += 1;
                        warn!(target: "isakmp", "ISAKMP: send to {} failed: {e}", tx.dst);
                    }
                }
                if let Some(k) = self.keepalives.get_mut(&tx.dst.ip()) {
                    k.note_sent(now);
                }
            }
            while let Some(ev) = self.ike.poll_event() {
                any = true;
                self.on_ike_event(now, ev);
            }
            while let Some(ev) = self.dp.poll_event() {
                any = true;
                self.on_dp_event(now, ev.direction, ev.event);
            }
            if !any {
                break;
            }
        }
    }

    fn conn_of(&self, peer: SocketAddr) -> u32 {
        self.ike
            .isakmp_status()
            .find(|s| s.remote.ip() == peer.ip())
            .map_or(0, |s| s.conn_id)
    }

    fn state_of(&self, peer: SocketAddr) -> String {
        self.ike
            .isakmp_status()
            .filter(|s| s.remote.ip() == peer.ip())
            .last()
            .map_or_else(String::new, |s| {
                format!(
                    "({}) {}",
                    if s.role == ipsec_ike::v1::Role::Initiator {
                        "I"
                    } else {
                        "R"
                    },
                    s.state
                )
            })
    }

    // ----------------------------------------------------------- IKE events --

    fn on_ike_event(&mut self, now: Instant, ev: IkeEvent) {
        match ev {
            IkeEvent::Phase1Established {
                conn_id,
                local,
                peer,
                nat,
            } => {
                info!(target: "isakmp", "ISAKMP:({conn_id}): SA has been authenticated with {} (local {local}, peer {peer}); IKE_P1_COMPLETE, QM_IDLE", peer.ip());
                if nat.detected() {
                    debug!(target: "isakmp", "ISAKMP:({conn_id}): NAT found, local behind NAT: {}, peer behind NAT: {}; floated to port {}",
                        nat.local_behind_nat, nat.remote_behind_nat, local.port());
                }
                if nat.local_behind_nat && self.cfg.nat_keepalive > 0 {
                    let status = NatStatus {
                        local_behind_nat: true,
                        remote_behind_nat: nat.remote_behind_nat,
                    };
                    let k = NatKeepalive::new(
                        now,
                        KeepaliveConfig::seconds(self.cfg.nat_keepalive),
                        peer,
                        status,
                    );
                    self.keepalives.insert(peer.ip(), k);
                    info!(target: "isakmp", "ISAKMP:({conn_id}): behind a NAT: NAT keepalives to {peer} every {} s", self.cfg.nat_keepalive);
                }
            }
            IkeEvent::Phase1Deleted {
                conn_id,
                peer,
                reason,
            } => {
                info!(target: "isakmp", "ISAKMP:({conn_id}): deleting SA with {} reason {reason:?}", peer.ip());
                if !self.ike.isakmp_status().any(|s| s.remote.ip() == peer.ip()) {
                    self.keepalives.remove(&peer.ip());
                }
            }
            IkeEvent::ChildSaEstablished(cs) => self.install(now, &cs),
            IkeEvent::ChildSaDeleted {
                crypto_map,
                inbound_spi,
                outbound_spi,
                reason,
            } => {
                info!(target: "ipsec", "IPSEC(delete_sa): deleting SA pair of crypto map entry {crypto_map}: inbound spi {inbound_spi:#010X}, outbound spi {outbound_spi:#010X}, reason {}",
                    match reason { DeleteReason::PeerDelete => "peer DELETE".to_string(), r => format!("{r:?}") });
                self.uninstall(inbound_spi);
            }
            IkeEvent::NegotiationFailed {
                crypto_map,
                peer,
                reason,
            } => {
                warn!(target: "isakmp", "ISAKMP: negotiation with {} failed: {reason:?} (crypto map entry {})",
                    peer.ip(), crypto_map.map_or_else(|| "-".into(), |m| m.to_string()));
                if let Some(m) = crypto_map {
                    if let Some(q) = self.pending.remove(&m) {
                        self.stats.acquire_dropped += q.len() as u64;
                    }
                    self.hold_down.insert(m, now + HOLD_DOWN);
                }
            }
            IkeEvent::PeerChanged {
                crypto_map,
                from,
                to,
            } => {
                info!(target: "isakmp", "ISAKMP: crypto map entry {crypto_map}: peer {from} failed, trying {to}");
            }
            IkeEvent::PeerMoved { conn_id, from, to } => self.peer_moved(conn_id, from, to),
            IkeEvent::PeerDead {
                peer,
                last_proof_of_life,
            } => {
                let silent = now.saturating_since(last_proof_of_life).as_millis();
                warn!(target: "isakmp", "ISAKMP: DPD: peer {peer} is dead (nothing heard for {silent} ms): clearing its SAs");
            }
            other => debug!(target: "isakmp", "ISAKMP: {other:?}"),
        }
    }

    /// The peer's NAT mapping changed (IKE checked the message that showed it): the SA
    /// pairs, the NAT keepalive and the status follow it, keys and counters unchanged.
    fn peer_moved(&mut self, conn_id: u32, from: SocketAddr, to: SocketAddr) {
        let moved = self.dp.move_peer(from, to);
        for c in self.children.iter_mut().filter(|c| c.peer == from) {
            c.peer = to;
        }
        if let Some(mut k) = self.keepalives.remove(&from.ip()) {
            k.set_peer(to);
            self.keepalives.insert(to.ip(), k);
        }
        info!(target: "isakmp", "ISAKMP:({conn_id}): peer's NAT mapping changed from {from} to {to}; {moved} outbound SA(s) follow");
    }

    fn install(&mut self, now: Instant, cs: &ChildSa) {
        let (ie, ia) = cs.inbound_keys();
        let (oe, oa) = cs.outbound_keys();
        let mut in_cfg = cs.inbound.clone();
        let mut out_cfg = cs.outbound.clone();
        out_cfg.df_bit = self.cfg.df_bit;
        let (local, peer) = (self.cfg.interface.address, cs.peer.ip());
        gre::fill_transport_addresses(&mut in_cfg, local, peer);
        gre::fill_transport_addresses(&mut out_cfg, local, peer);
        let t = transform_name(&cs.outbound.transform);
        let (inbound, outbound) = match (
            EspSa::new(in_cfg, ie, ia, now),
            EspSa::new(out_cfg, oe, oa, now),
        ) {
            (Ok(i), Ok(o)) => (i, o),
            (Err(e), _) | (_, Err(e)) => {
                warn!(target: "ipsec", "IPSEC(create_sa): cannot build SA pair: {e}");
                let _ = self.ike.delete_child(now, &mut self.rng, cs.inbound.spi);
                return;
            }
        };
        let Some(selector) = cs.inbound.selector else {
            warn!(target: "ipsec", "IPSEC(create_sa): SA without selector refused");
            let _ = self.ike.delete_child(now, &mut self.rng, cs.inbound.spi);
            return;
        };
        let dynamic = self
            .cfg
            .ike
            .crypto_map(cs.crypto_map)
            .is_none_or(|e| e.dynamic);
        let (group, dyn_policy) = if dynamic {
            let g = self.dyn_group(cs.crypto_map);
            let p = Policy {
                seq: g,
                selector,
                action: PolicyAction::Protect { sa_group: g },
            };
            if let Err(e) = self.dp.spd_mut().insert(p) {
                warn!(target: "ipsec", "IPSEC(create_sa): SPD full ({e}); SA pair refused");
                let _ = self.ike.delete_child(now, &mut self.rng, cs.inbound.spi);
                return;
            }
            (g, Some(g))
        } else {
            (cs.crypto_map, None)
        };
        let (hin, hout) = match self.dp.install_pair(group, inbound, outbound) {
            Ok(h) => h,
            Err(e) => {
                warn!(target: "ipsec", "IPSEC(create_sa): cannot install SA pair: {e}");
                if let Some(g) = dyn_policy {
                    self.dp.spd_mut().remove(g);
                }
                let _ = self.ike.delete_child(now, &mut self.rng, cs.inbound.spi);
                return;
            }
        };
        let encap = cs.outbound.udp_encap.map_or_else(
            || "".into(),
            |u| format!(" UDP-Encaps {}->{}", u.local_port, u.remote_port),
        );
        info!(target: "ipsec", "IPSEC(create_sa): sa created, (sa) sa_dest= {}, sa_proto= 50, sa_spi= {:#010X}({}), sa_trans= {t}{encap}, sa_conn_id= {}",
            self.cfg.ike.local_addr, cs.inbound.spi, cs.inbound.spi, cs.conn_id);
        info!(target: "ipsec", "IPSEC(create_sa): sa created, (sa) sa_dest= {}, sa_proto= 50, sa_spi= {:#010X}({}), sa_trans= {t}{encap}, sa_conn_id= {}",
            cs.peer.ip(), cs.outbound.spi, cs.outbound.spi, cs.conn_id);
        debug!(target: "ipsec", "IPSEC(create_sa): local_proxy= {}, remote_proxy= {}, crypto map entry {}, lifetime {} s / {} kB{}",
            selector.local, selector.remote, cs.crypto_map,
            cs.inbound.lifetime.hard_time.map_or_else(|| "-".into(), |s| (s.as_millis() / 1000).to_string()),
            cs.inbound.lifetime.hard_bytes.map_or_else(|| "-".into(), |b| (b / 1024).to_string()),
            cs.replaces.map_or_else(String::new, |o| format!(", rekey of {o:#010X}")));
        let reverse = self.cfg.map(cs.crypto_map).is_some_and(|m| m.reverse_route) || dynamic;
        let route = if reverse {
            selector.remote.as_prefix()
        } else {
            None
        };
        if let Some(p) = route {
            self.routes.add(p, RouteKind::Reverse, cs.crypto_map);
        }
        if let Some(old) = cs.replaces {
            if let Some(c) = self.children.iter_mut().find(|c| c.in_spi == old) {
                c.rekeying = true;
            }
        }
        self.children.push(ChildRec {
            conn_id: cs.conn_id,
            map: cs.crypto_map,
            group,
            peer: cs.peer,
            in_spi: cs.inbound.spi,
            out_spi: cs.outbound.spi,
            hin,
            hout,
            selector,
            route,
            dyn_policy,
            rekeying: false,
        });
        self.ha_sa_installed(now, cs, group, (hin, hout));
        // Packets that waited for this SA leave once the peer has had time to install it.
        if let Some(q) = self
            .pending
            .remove(&group)
            .or_else(|| self.pending.remove(&cs.crypto_map))
        {
            self.pending.insert(group, q);
            self.flush_at.insert(group, now + QUEUE_SETTLE);
        }
    }

    /// Sends the queued packets of every group whose settle time has passed.
    fn flush_queues(&mut self, now: Instant) {
        let due: Vec<u32> = self
            .flush_at
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(g, _)| *g)
            .collect();
        for g in due {
            self.flush_at.remove(&g);
            let Some(q) = self.pending.remove(&g) else {
                continue;
            };
            debug!(target: "ipsec", "IPSEC: sending {} packet(s) queued during negotiation", q.len());
            for mut p in q {
                self.outbound_packet(now, &mut p);
            }
        }
    }

    /// SA group (and SPD sequence number) of a dynamic pair: the crypto map entry in the
    /// high 16 bits, so it sorts after every static entry and an HA standby can tell the
    /// entry from the group alone ([`ha::map_of_group`]).
    fn dyn_group(&mut self, map: u32) -> u32 {
        let base = (map & 0xffff) << 16;
        for _ in 0..=0xffff {
            let g = base | (self.next_dyn & 0xffff);
            self.next_dyn = self.next_dyn.wrapping_add(1);
            if g > 0xffff && !self.children.iter().any(|c| c.group == g) {
                return g;
            }
        }
        base
    }

    fn uninstall(&mut self, in_spi: u32) {
        let Some(i) = self.children.iter().position(|c| c.in_spi == in_spi) else {
            return;
        };
        let c = self.children.remove(i);
        self.ha_sa_removed(in_spi);
        self.dp.remove_inbound(c.hin);
        self.dp.remove_outbound(c.hout);
        if let Some(g) = c.dyn_policy {
            self.dp.spd_mut().remove(g);
        }
        if let Some(p) = c.route {
            self.routes.release(p);
        }
    }

    // ------------------------------------------------------ data plane events --

    fn on_dp_event(&mut self, now: Instant, dir: Direction, ev: SaEvent) {
        let spi_of = |ev: SaEvent| match ev {
            SaEvent::SoftExpired { spi }
            | SaEvent::HardExpired { spi }
            | SaEvent::IdleExpired { spi } => spi,
            _ => 0,
        };
        let spi = spi_of(ev);
        let Some(c) = self.children.iter_mut().find(|c| {
            if dir == Direction::Inbound {
                c.in_spi == spi
            } else {
                c.out_spi == spi
            }
        }) else {
            return;
        };
        let in_spi = c.in_spi;
        match ev {
            SaEvent::SoftExpired { .. } if !c.rekeying => {
                c.rekeying = true;
                info!(target: "ipsec", "IPSEC(sa_soft_expiry): SA {in_spi:#010X} reached its soft lifetime, rekeying");
                if let Err(e) = self.ike.rekey_child(now, &mut self.rng, in_spi) {
                    warn!(target: "ipsec", "IPSEC: rekey of {in_spi:#010X} failed: {e}");
                }
            }
            SaEvent::HardExpired { .. } => {
                info!(target: "ipsec", "IPSEC(sa_hard_expiry): SA {in_spi:#010X} reached its hard lifetime, deleting");
                self.delete_child(now, in_spi);
            }
            SaEvent::IdleExpired { .. } => {
                let idle = self.cfg.idle_time.map_or(0, |d| d.as_millis() / 1000);
                info!(target: "ipsec", "IPSEC(sa_idle): SA pair {in_spi:#010X} idle for {idle} seconds, deleting (DELETE to {})", c.peer.ip());
                self.delete_child(now, in_spi);
            }
            _ => {}
        }
    }

    fn delete_child(&mut self, now: Instant, in_spi: u32) {
        match self.ike.delete_child(now, &mut self.rng, in_spi) {
            Ok(()) => {}
            Err(IkeError::UnknownChild) => self.uninstall(in_spi),
            Err(e) => {
                warn!(target: "ipsec", "IPSEC: delete of {in_spi:#010X}: {e}");
                self.uninstall(in_spi);
            }
        }
        self.drain(now);
    }

    // ------------------------------------------------------------- packets --

    fn read_tun(&mut self) -> bool {
        for _ in 0..BUDGET {
            let mut pkt = std::mem::take(&mut self.buf);
            let r = self.tun.recv(&mut pkt);
            match r {
                Ok(n) => {
                    self.stats.tun_rx += 1;
                    let now = self.now();
                    if let Some(p) = pkt.get_mut(..n) {
                        self.outbound_packet(now, p);
                    }
                    self.buf = pkt;
                }
                Err(e) => {
                    self.buf = pkt;
                    if e.kind() != ErrorKind::WouldBlock {
                        warn!(target: "daemon", "TUN read: {e}");
                    }
                    return false;
                }
            }
        }
        true
    }

    fn outbound_packet(&mut self, now: Instant, pkt: &mut [u8]) {
        if self.ha_standby() {
            // The active member carries the traffic; a standby negotiates nothing.
            if let Some(h) = self.ha.as_deref_mut() {
                h.stats.standby_drops += 1;
            }
            return;
        }
        let bufs = SendBuffers {
            work: &mut self.work,
            frag: &mut self.frag,
        };
        let (s4500, raw, stats) = (&self.s4500, self.raw.as_ref(), &mut self.stats);
        let r = self.dp.send(now, pkt, &mut self.rng, bufs, |out| {
            packet::transmit(out, s4500, raw, stats)
        });
        match r {
            Ok(Sent::Protected { sa, .. }) => {
                if let Some(peer) = self.dp.outbound_sa(sa).and_then(|s| s.config().remote) {
                    if let Some(k) = self.keepalives.get_mut(&peer) {
                        k.note_sent(now);
                    }
                    // On-demand DPD: traffic is waiting for this peer.
                    if self.ike.note_outbound(now, peer) {
                        self.ike.handle_timeout(now, &mut self.rng);
                    }
                }
            }
            Ok(Sent::Bypass) => {
                self.stats.no_policy += 1;
                trace!(target: "ipsec", "IPSEC: packet from the TUN matches no crypto map entry, dropped");
            }
            Ok(Sent::TooBig { mtu, icmp_len, .. }) => {
                debug!(target: "ipsec", "IPSEC: packet too big for the tunnel (mtu {mtu}), ICMP to the source");
                if let Some(n) = icmp_len {
                    if let Some(icmp) = self.work.get(..n) {
                        if self.tun.send(icmp).is_ok() {
                            self.stats.tun_tx += 1;
                        }
                    }
                }
            }
            Err(DataplaneError::NoSa { sa_group }) => self.acquire(now, sa_group, pkt),
            Err(e) => {
                self.stats.dp_errors += 1;
                debug!(target: "ipsec", "IPSEC: outbound packet dropped: {e}");
            }
        }
        self.drain(now);
    }

    fn acquire(&mut self, now: Instant, group: u32, pkt: &[u8]) {
        let q = self.pending.entry(group).or_default();
        if q.len() < PENDING_PER_MAP {
            q.push_back(pkt.to_vec());
        } else {
            self.stats.acquire_dropped += 1;
        }
        if self.hold_down.contains_key(&group) {
            return;
        }
        let Some(entry) = self.cfg.ike.crypto_map(group) else {
            return;
        };
        let ts = entry
            .transform_sets
            .first()
            .map(|t| transform_name(&t.transform))
            .unwrap_or_default();
        let mode = match entry.transform_sets.first().map(|t| t.mode) {
            Some(ipsec_core::esp::Mode::Transport) => "Transport",
            _ => "Tunnel",
        };
        let (sel, peer, secs, kb) = (
            entry.selector,
            entry.peers.first().copied(),
            entry.lifetime_seconds,
            entry.lifetime_kilobytes,
        );
        let busy = self
            .ike
            .isakmp_status()
            .any(|s| Some(s.remote.ip()) == peer && s.state != ipsec_ike::v1::IsakmpState::QmIdle);
        match self.ike.initiate(now, &mut self.rng, group) {
            Ok(()) => {
                if !busy {
                    debug!(target: "ipsec", "IPSEC(sa_request): , (key eng. msg.) OUTBOUND local= {}, remote= {}, local_proxy= {}, remote_proxy= {}, protocol= ESP, transform= {ts} ({mode}), lifedur= {secs}s and {kb}kb",
                        self.cfg.interface.address, peer.map_or_else(|| "-".into(), |p| p.to_string()), sel.local, sel.remote);
                }
            }
            Err(IkeError::DynamicMap) => {}
            Err(e) => {
                warn!(target: "isakmp", "ISAKMP: cannot initiate for crypto map entry {group}: {e}");
                self.hold_down.insert(group, now + HOLD_DOWN);
            }
        }
    }

    fn read_udp(&mut self, natt: bool) -> bool {
        // Room in front of the payload for the outer headers put back for the data plane.
        const HEAD: usize = packet::HEADROOM;
        for _ in 0..BUDGET {
            let mut buf = std::mem::take(&mut self.buf);
            let sock = if natt { &self.s4500 } else { &self.s500 };
            let r = sock.recv_from(buf.get_mut(HEAD..).unwrap_or(&mut []));
            match r {
                Ok((n, from)) => {
                    let now = self.now();
                    let port = if natt {
                        self.cfg.ike.natt_port
                    } else {
                        self.cfg.ike.ike_port
                    };
                    let to = SocketAddr::new(self.cfg.ike.local_addr, port);
                    self.datagram(now, &mut buf, n, from, to, natt);
                    self.buf = buf;
                    self.drain(now);
                }
                Err(e) => {
                    self.buf = buf;
                    if e.kind() != ErrorKind::WouldBlock {
                        debug!(target: "daemon", "UDP recv: {e}");
                        continue;
                    }
                    return false;
                }
            }
        }
        true
    }

    fn datagram(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        n: usize,
        from: SocketAddr,
        to: SocketAddr,
        natt: bool,
    ) {
        const HEAD: usize = packet::HEADROOM;
        let Some(data) = buf.get(HEAD..HEAD + n) else {
            return;
        };
        let class = if natt {
            ipsec_nat_t::classify(data)
        } else {
            Classified::Ike(data)
        };
        match class {
            Classified::Ike(_) => {
                self.stats.ike_rx += 1;
                debug!(target: "isakmp", "ISAKMP ({}): received packet from {} dport {} sport {} ({} bytes) {}",
                    self.conn_of(from), from.ip(), to.port(), from.port(), n, self.state_of(from));
                if let Err(e) = self.ike.handle_datagram(now, &mut self.rng, from, to, data) {
                    debug!(target: "isakmp", "ISAKMP: packet from {from} dropped: {e}");
                }
            }
            Classified::Keepalive => {
                self.stats.keepalive_rx += 1;
                trace!(target: "isakmp", "ISAKMP: NAT keepalive from {from}");
            }
            Classified::Esp { .. } => {
                self.stats.esp_rx += 1;
                let Some(start) = packet::prepend_udp_headers(buf, n, from, to) else {
                    debug!(target: "ipsec", "IPSEC: ESP over IPv6 outer headers is not supported yet, dropped");
                    return;
                };
                let total = HEAD + n;
                if let Some(p) = buf.get_mut(start..total) {
                    self.inbound_packet(now, p);
                }
            }
            Classified::Invalid(r) => {
                debug!(target: "ipsec", "IPSEC: invalid datagram on 4500 from {from}: {r:?}")
            }
        }
    }

    fn read_raw(&mut self) -> bool {
        for _ in 0..BUDGET {
            let mut buf = std::mem::take(&mut self.buf);
            let r = match self.raw.as_ref() {
                Some(s) => (&*s).read(&mut buf),
                None => Err(ErrorKind::WouldBlock.into()),
            };
            match r {
                Ok(n) => {
                    self.stats.esp_rx += 1;
                    let now = self.now();
                    if let Some(p) = buf.get_mut(..n) {
                        self.inbound_packet(now, p);
                    }
                    self.buf = buf;
                }
                Err(e) => {
                    self.buf = buf;
                    if e.kind() != ErrorKind::WouldBlock {
                        debug!(target: "daemon", "raw socket recv: {e}");
                    }
                    return false;
                }
            }
        }
        true
    }

    fn inbound_packet(&mut self, now: Instant, p: &mut [u8]) {
        let mut reasm = std::mem::take(&mut self.reasm);
        match self.dp.receive(now, p, &mut reasm) {
            Ok(Received::Decapsulated { packet, sa }) => {
                if !self.gre_inbound(now, packet, sa) {
                    match self.tun.send(packet) {
                        Ok(_) => self.stats.tun_tx += 1,
                        Err(e) => debug!(target: "ipsec", "TUN write: {e}"),
                    }
                }
                if let Some(peer) = self.dp.inbound_sa(sa).and_then(|s| s.config().remote) {
                    trace!(target: "ipsec", "IPSEC: decapsulated packet from {peer}");
                    // Inbound ESP is proof of life for DPD.
                    self.ike.note_inbound(now, peer);
                }
            }
            Ok(Received::NatKeepalive | Received::FragmentHeld) => {}
            Ok(Received::PathMtu(ch)) => {
                info!(target: "ipsec", "IPSEC: adjusting path mtu of SA {:#010X} from {} to {}", ch.spi, ch.old, ch.new);
            }
            Ok(other) => debug!(target: "ipsec", "IPSEC: unexpected inbound packet: {other:?}"),
            Err(e) => {
                self.stats.dp_errors += 1;
                debug!(target: "ipsec", "IPSEC: inbound packet dropped: {e}");
            }
        }
        self.reasm = reasm;
        self.drain(now);
    }

    // --------------------------------------------------------------- control --

    fn serve_control(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => control::serve(self, stream),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    debug!(target: "daemon", "control accept: {e}");
                    return;
                }
            }
        }
    }

    /// The current time on the daemon's clock (for status rendering).
    #[must_use]
    pub fn clock(&self) -> Instant {
        self.now()
    }

    // -------------------------------------------------------------- shutdown --

    fn shutdown(&mut self) {
        if self.ha_hand_over() {
            self.routes.remove_all();
            return;
        }
        let now = self.now();
        let conns: Vec<u32> = self.ike.isakmp_status().map(|s| s.conn_id).collect();
        for c in conns {
            let _ = self.ike.delete_ike_sa(now, &mut self.rng, c);
        }
        // Children not tied to a live IKE SA.
        let spis: Vec<u32> = self.children.iter().map(|c| c.in_spi).collect();
        for s in spis {
            let _ = self.ike.delete_child(now, &mut self.rng, s);
        }
        self.drain(now);
        let left: Vec<u32> = self.children.iter().map(|c| c.in_spi).collect();
        for s in left {
            self.uninstall(s);
        }
        self.routes.remove_all();
        if let Some(q) = self
            .pending
            .values()
            .map(VecDeque::len)
            .reduce(|a, b| a + b)
        {
            if q > 0 {
                debug!(target: "daemon", "{q} queued packet(s) discarded");
            }
        }
    }
}

fn open_raw(local: IpAddr) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if local.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::RAW, Some(Protocol::from(50)))?;
    if local.is_ipv4() {
        s.set_header_included_v4(true)?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

/// `ipsec up`: loads nothing itself; runs a validated configuration until a signal.
///
/// # Errors
/// Why the daemon could not start or stopped abnormally.
pub fn run(cfg: Config, opts: &RunOptions) -> Result<(), String> {
    let d = Daemon::new(cfg, opts)?;
    d.run()
}
