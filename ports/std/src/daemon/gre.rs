//! GRE tunnels with tunnel protection: `interface Tunnel0` / `tunnel source` /
//! `tunnel destination` / `tunnel protection ipsec profile P` / `keepalive 10 3`.
//!
//! Each `[[tunnel]]` is a TUN device named after it in lowercase (`tunnel0`) carrying
//! the tunnel's address (its connected route comes with it) and MTU, and a library
//! [`GreTunnel`] that does the GRE work: encapsulation, decapsulation, keepalives and
//! line protocol. The configuration turned the tunnel's protection into a crypto map
//! entry of its own (`Tunnel::seq`): selector GRE between tunnel source and
//! destination, peer = destination, the profile's transform sets, PFS and lifetime.
//! Its SPD policy is installed with the other static entries, so the data plane
//! protects the tunnel's delivery packets like any other traffic.
//!
//! * **Out**: a packet read from `tunnel0` is GRE-encapsulated (delivery header tunnel
//!   source -> destination, protocol 47) and handed to the daemon's outbound path
//!   (`Daemon::outbound_packet`): SPD, SA, ESP, NAT-T, the sockets. Without an SA the
//!   delivery packet is queued and IKE started (acquire), as for a crypto map.
//! * **In**: a packet the data plane decrypted that is GRE from a tunnel's destination
//!   to its source goes to that tunnel's [`GreTunnel::decapsulate`]; data is written to
//!   its TUN, a returning keepalive only counts, and the peer's keepalive (an IPv4 packet
//!   from us to the peer) is sent back out through the outbound path, as IOS routes it.
//! * **Negotiation** starts at daemon start for every tunnel (IOS brings tunnel
//!   protection up without waiting for traffic), and again on demand: any later data
//!   packet or keepalive without an SA acquires one.
//! * **Transport or tunnel mode** is the profile's transform set's. In transport mode
//!   the SA's addresses are the IKE peers' ([`fill_transport_addresses`]), so DPD and
//!   `show crypto ipsec sa` see the peer as for tunnel mode.
//! * **Keepalives and line protocol** are the library's (see `ipsec_core::gre`): a
//!   keepalive every `period`, line protocol down at the tick where more than `retries`
//!   are unanswered, that is `(retries + 1) × period` after the last one answered, and up
//!   again the moment one returns. While it is down the library drops data both ways
//!   (counted) and the TUN's carrier is switched off (`ip link set dev tunnel0 carrier
//!   off`), with `ignore_routes_with_linkdown` set on the device: the interface and its
//!   address stay, the routes through it stop being used (`linkdown`), as on IOS where
//!   the connected route of a tunnel whose line protocol is down leaves the table.

use std::net::{IpAddr, Ipv4Addr};

use ipsec_core::Instant;
use ipsec_core::esp::{EspConfig, Mode};
use ipsec_core::gre::{Delivered, GreConfig, GreEvent, GreTunnel, KeepaliveConfig};
use ipsec_core::wire::gre::ethertype;
use ipsec_core::wire::ipv4::Ipv4Packet;
use ipsec_core::wire::proto;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use tracing::{debug, info, trace, warn};

use ipsec_core::sadb::SaHandle;

use super::{BUDGET, Daemon};
use crate::config::{Config, Tunnel};

/// mio tokens of the tunnels' TUNs: `TOKEN_BASE + index`.
pub const TOKEN_BASE: usize = 100;

/// One tunnel interface.
pub struct GreIf {
    /// Its configuration.
    pub cfg: Tunnel,
    /// The library's tunnel: GRE, keepalives, line protocol, counters.
    pub gre: GreTunnel,
    dev: Option<tun::Device>,
    /// Packets read from the TUN.
    pub tun_rx: u64,
    /// Packets written to the TUN.
    pub tun_tx: u64,
    /// TUN packets that were neither IPv4 nor IPv6, and failed TUN writes.
    pub tun_errors: u64,
    /// Delivery packets (data, keepalives, the peer's keepalives) handed to IPsec.
    pub to_ipsec: u64,
}

/// The daemon's GRE tunnels.
#[derive(Default)]
pub struct Tunnels {
    /// In configuration order (index = token - [`TOKEN_BASE`]).
    pub ifs: Vec<GreIf>,
    buf: Vec<u8>,
}

/// The library's configuration of a `[[tunnel]]`.
///
/// # Errors
/// A tunnel that is not IPv4 (the configuration refuses those already).
pub fn gre_config(t: &Tunnel) -> Result<GreConfig, String> {
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (t.source, t.destination) else {
        return Err(format!("tunnel {}: GRE delivery is IPv4 only", t.name));
    };
    let mut c = GreConfig::new(src, dst);
    c.ip_mtu = t.mtu;
    c.keepalive = t
        .keepalive
        .map(|(period, retries)| KeepaliveConfig::new(u64::from(period), retries));
    Ok(c)
}

/// Transport-mode SAs of a tunnel's protection carry no addresses of their own (the
/// delivery header is kept); give them the IKE peers' so that the daemon's per-peer
/// bookkeeping (DPD proof of life, NAT keepalives, `show crypto ipsec sa`) works as in
/// tunnel mode. Tunnel-mode configurations are left alone.
pub fn fill_transport_addresses(c: &mut EspConfig, local: IpAddr, peer: IpAddr) {
    if c.mode == Mode::Transport {
        c.local = c.local.or(Some(local));
        c.remote = c.remote.or(Some(peer));
    }
}

/// The tunnel a decrypted packet belongs to: IPv4 GRE from a tunnel's destination to its
/// source. `None` for anything else (it goes to the crypto map TUN as before).
pub fn demux<'a>(tunnels: impl IntoIterator<Item = &'a GreTunnel>, packet: &[u8]) -> Option<usize> {
    let ip = Ipv4Packet::new_checked(packet).ok()?;
    if ip.protocol() != proto::GRE {
        return None;
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    tunnels
        .into_iter()
        .position(|t| t.config().destination == src && t.config().source == dst)
}

/// The GRE protocol type of a packet read from a tunnel's TUN, by its IP version.
#[must_use]
pub fn protocol_of(packet: &[u8]) -> Option<u16> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => Some(ethertype::IPV4),
        Some(6) => Some(ethertype::IPV6),
        _ => None,
    }
}

fn netmask(len: u8) -> Ipv4Addr {
    Ipv4Addr::from(
        u32::MAX
            .checked_shl(32 - u32::from(len.min(32)))
            .unwrap_or(0),
    )
}

impl Tunnels {
    /// Creates every tunnel's TUN (address, MTU, up) and its library state.
    ///
    /// # Errors
    /// A TUN that cannot be created or configured.
    pub fn open(cfg: &Config, now: Instant) -> Result<Self, String> {
        let mut ifs = Vec::new();
        for t in &cfg.tunnels {
            let gre = GreTunnel::new(gre_config(t)?, now)
                .map_err(|e| format!("tunnel {}: {e}", t.name))?;
            let mut tc = tun::Configuration::default();
            tc.tun_name(&t.device)
                .address(t.address.0)
                .netmask(IpAddr::V4(netmask(t.address.1)))
                .mtu(t.mtu)
                .up();
            let dev = tun::create(&tc).map_err(|e| format!("TUN {}: {e}", t.device))?;
            dev.set_nonblock()
                .map_err(|e| format!("TUN {} non-blocking: {e}", t.device))?;
            // A carrier-less tunnel's routes must stop being used, not only be marked.
            let knob = format!(
                "/proc/sys/net/ipv4/conf/{}/ignore_routes_with_linkdown",
                t.device
            );
            if let Err(e) = std::fs::write(&knob, "1") {
                warn!(target: "daemon", "interface {}: {knob}: {e} (routes through it stay usable while line protocol is down)", t.name);
            }
            info!(target: "daemon", "interface {} ({}) up: {}/{}, mtu {}, tunnel source {}, destination {}, protection ipsec profile {}{}",
                t.name, t.device, t.address.0, t.address.1, t.mtu, t.source, t.destination,
                t.protection.as_deref().unwrap_or("-"),
                t.keepalive.map_or_else(String::new, |(p, r)| format!(", keepalive {p} {r}")));
            ifs.push(GreIf {
                cfg: t.clone(),
                gre,
                dev: Some(dev),
                tun_rx: 0,
                tun_tx: 0,
                tun_errors: 0,
                to_ipsec: 0,
            });
        }
        Ok(Self {
            ifs,
            buf: vec![0; 65_600],
        })
    }

    /// Registers the TUNs with the poll.
    ///
    /// # Errors
    /// The registration's.
    pub fn register(&self, reg: &Registry) -> std::io::Result<()> {
        for (i, g) in self.ifs.iter().enumerate() {
            if let Some(d) = &g.dev {
                reg.register(
                    &mut SourceFd(&d.as_raw_fd()),
                    Token(TOKEN_BASE + i),
                    Interest::READABLE,
                )?;
            }
        }
        Ok(())
    }

    /// The tunnel of a poll token.
    #[must_use]
    pub fn index_of(&self, t: Token) -> Option<usize> {
        t.0.checked_sub(TOKEN_BASE).filter(|i| *i < self.ifs.len())
    }

    /// The earliest keepalive deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.ifs.iter().filter_map(|g| g.gre.poll_timeout()).min()
    }
}

impl Daemon {
    /// Starts IKE for every protected tunnel (IOS brings tunnel protection up at once).
    pub(super) fn gre_start(&mut self, now: Instant) {
        let seqs: Vec<(String, u32)> = self
            .gre
            .ifs
            .iter()
            .map(|g| (g.cfg.name.clone(), g.cfg.seq))
            .collect();
        for (name, seq) in seqs {
            match self.ike.initiate(now, &mut self.rng, seq) {
                Ok(()) => {
                    debug!(target: "ipsec", "IPSEC(sa_request): interface {name}: tunnel protection, negotiating at start (crypto map entry {seq})");
                }
                Err(e) => {
                    warn!(target: "isakmp", "ISAKMP: interface {name}: cannot initiate tunnel protection: {e}");
                }
            }
        }
        self.drain(now);
    }

    /// Reads packets from tunnel `i`'s TUN, encapsulates them and sends them to IPsec.
    pub(super) fn read_gre_tun(&mut self, i: usize) -> bool {
        let mut buf = std::mem::take(&mut self.buf);
        let mut out = std::mem::take(&mut self.gre.buf);
        let mut more = true;
        for _ in 0..BUDGET {
            let now = self.now();
            let Some(g) = self.gre.ifs.get_mut(i) else {
                more = false;
                break;
            };
            let Some(dev) = &g.dev else {
                more = false;
                break;
            };
            let n = match dev.recv(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    if e.kind() != ErrorKind::WouldBlock {
                        warn!(target: "daemon", "TUN {} read: {e}", g.cfg.device);
                    }
                    more = false;
                    break;
                }
            };
            g.tun_rx += 1;
            let payload = buf.get(..n).unwrap_or(&[]);
            let Some(protocol) = protocol_of(payload) else {
                g.tun_errors += 1;
                continue;
            };
            match g.gre.encapsulate(now, protocol, payload, &mut out) {
                Ok(len) => {
                    g.to_ipsec += 1;
                    if let Some(p) = out.get_mut(..len) {
                        self.outbound_packet(now, p);
                    }
                }
                Err(e) => {
                    trace!(target: "ipsec", "interface {}: packet not encapsulated: {e}", g.cfg.name);
                }
            }
        }
        self.buf = buf;
        self.gre.buf = out;
        more
    }

    /// A packet the data plane decrypted with the inbound SA `sa`: if it is GRE of one
    /// of the tunnels and came through that tunnel's own SA pair, the tunnel takes it
    /// (and `true` is returned). GRE that arrived through another SA (a dynamic entry's
    /// broad selectors, say) is not the tunnel's and goes where it went before.
    pub(super) fn gre_inbound(&mut self, now: Instant, packet: &[u8], sa: SaHandle) -> bool {
        let Some(i) = demux(self.gre.ifs.iter().map(|g| &g.gre), packet) else {
            return false;
        };
        let group = self.children.iter().find(|c| c.hin == sa).map(|c| c.group);
        let Some(g) = self.gre.ifs.get_mut(i) else {
            return false;
        };
        if group != Some(g.cfg.seq) {
            trace!(target: "ipsec", "interface {}: GRE from {} through another SA, not the tunnel's", g.cfg.name, g.cfg.destination);
            return false;
        }
        let back = match g.gre.decapsulate(now, packet) {
            Ok(Delivered::Data { payload, .. }) => {
                match g.dev.as_ref().map(|d| d.send(payload)) {
                    Some(Ok(_)) => g.tun_tx += 1,
                    Some(Err(e)) => {
                        g.tun_errors += 1;
                        debug!(target: "daemon", "TUN {} write: {e}", g.cfg.device);
                    }
                    None => {}
                }
                None
            }
            Ok(Delivered::KeepaliveReturned) => {
                trace!(target: "ipsec", "interface {}: keepalive returned", g.cfg.name);
                None
            }
            Ok(Delivered::ForwardBack(p)) => Some(p.to_vec()),
            Err(e) => {
                debug!(target: "ipsec", "interface {}: GRE packet dropped: {e}", g.cfg.name);
                None
            }
        };
        if let Some(mut p) = back {
            // The peer's keepalive: its inner packet is routed back to the peer, which
            // means through the tunnel's SA.
            g.to_ipsec += 1;
            trace!(target: "ipsec", "interface {}: answering the peer's keepalive", g.cfg.name);
            self.outbound_packet(now, &mut p);
        }
        true
    }

    /// Keepalive timers, keepalives to send, line protocol changes.
    pub(super) fn gre_timers(&mut self, now: Instant) {
        let mut out = std::mem::take(&mut self.gre.buf);
        for i in 0..self.gre.ifs.len() {
            let Some(g) = self.gre.ifs.get_mut(i) else {
                break;
            };
            if g.gre.poll_timeout().is_some_and(|t| t <= now) {
                g.gre.handle_timeout(now);
            }
            let mut events = Vec::new();
            while let Some(ev) = g.gre.poll_event() {
                events.push(ev);
            }
            let (name, device) = (g.cfg.name.clone(), g.cfg.device.clone());
            let tx = g.gre.poll_transmit(now, &mut out);
            if tx.is_some() {
                g.to_ipsec += 1;
            }
            for ev in events {
                on_event(&name, &device, ev);
            }
            if let Some(tx) = tx {
                trace!(target: "ipsec", "interface {name}: keepalive {} -> {}", tx.src, tx.dst);
                if let Some(p) = out.get_mut(..tx.len) {
                    self.outbound_packet(now, p);
                }
            }
        }
        self.gre.buf = out;
    }
}

fn on_event(name: &str, device: &str, ev: GreEvent) {
    match ev {
        GreEvent::LineProtocolUp | GreEvent::LineProtocolDown => {
            let up = ev == GreEvent::LineProtocolUp;
            let state = if up { "up" } else { "down" };
            info!(target: "daemon", "%LINEPROTO-5-UPDOWN: Line protocol on Interface {name}, changed state to {state}");
            let carrier = if up { "on" } else { "off" };
            match super::routes::ip(&["link", "set", "dev", device, "carrier", carrier]) {
                Ok(()) => info!(target: "daemon", "ip link set dev {device} carrier {carrier}"),
                Err(e) => warn!(target: "daemon", "{e}"),
            }
        }
        GreEvent::MtuChanged { mtu } => {
            debug!(target: "daemon", "interface {name}: tunnel MTU now {mtu}");
        }
        _ => {}
    }
}

/// `show interfaces` for the tunnels: text appended to `s`, one JSON object each.
pub fn show(d: &Daemon, s: &mut String) -> Vec<Value> {
    let mut out = Vec::new();
    for g in &d.gre.ifs {
        let t = &g.cfg;
        let st = g.gre.status();
        let c = st.counters;
        let line = if st.line_protocol_up { "up" } else { "down" };
        let sa = d.children.iter().find(|c| c.group == t.seq);
        let _ = writeln!(
            s,
            "{} is up, line protocol is {line} (TUN {})",
            t.name, t.device
        );
        let _ = writeln!(
            s,
            "  Internet address is {}/{}, MTU {} bytes",
            t.address.0, t.address.1, st.tunnel_mtu
        );
        let _ = writeln!(
            s,
            "  Tunnel source {}, destination {}, protocol/transport {}",
            st.source, st.destination, st.protocol_transport
        );
        let _ = writeln!(
            s,
            "  Tunnel protection via IPSec (profile \"{}\"), crypto map entry {}, SA pair {}",
            t.protection.as_deref().unwrap_or("-"),
            t.seq,
            sa.map_or_else(
                || "none (negotiated on demand)".into(),
                |c| format!(
                    "in {:#010X} out {:#010X} with {}",
                    c.in_spi,
                    c.out_spi,
                    c.peer.ip()
                )
            )
        );
        match st.keepalive {
            Some(k) => {
                let _ = writeln!(
                    s,
                    "  Keepalive set ({} sec), retries {}, {} unanswered",
                    k.period.as_secs(),
                    k.retries,
                    st.keepalives_unanswered
                );
            }
            None => {
                let _ = writeln!(s, "  Keepalive not set");
            }
        }
        let _ = writeln!(
            s,
            "     {} packets input, {} bytes, {} input errors",
            c.packets_in,
            c.bytes_in,
            c.input_errors()
        );
        let _ = writeln!(
            s,
            "     {} packets output, {} bytes, {} output drops ({} while line protocol down)",
            c.packets_out,
            c.bytes_out,
            c.output_drops(),
            c.down_drops_out
        );
        let _ = writeln!(
            s,
            "     {} keepalives sent, {} returned, {} forwarded for the peer, {} line protocol transitions",
            c.keepalives_sent,
            c.keepalives_returned,
            c.keepalives_forwarded,
            c.line_protocol_transitions
        );
        let _ = writeln!(
            s,
            "     TUN {} packets read, {} written, {} errors; {} delivery packets to IPsec",
            g.tun_rx, g.tun_tx, g.tun_errors, g.to_ipsec
        );
        out.push(json!({
            "name": t.name,
            "device": t.device,
            "address": format!("{}/{}", t.address.0, t.address.1),
            "source": t.source.to_string(),
            "destination": t.destination.to_string(),
            "protection": t.protection,
            "crypto_map_entry": t.seq,
            "sa": sa.map(|c| json!({"inbound_spi": c.in_spi, "outbound_spi": c.out_spi, "peer": c.peer.ip().to_string()})),
            "line_protocol_up": st.line_protocol_up,
            "mtu": st.tunnel_mtu,
            "keepalive": st.keepalive.map(|k| json!({"period": k.period.as_secs(), "retries": k.retries})),
            "keepalives_unanswered": st.keepalives_unanswered,
            "counters": {
                "packets_in": c.packets_in, "bytes_in": c.bytes_in,
                "packets_out": c.packets_out, "bytes_out": c.bytes_out,
                "keepalives_sent": c.keepalives_sent, "keepalives_returned": c.keepalives_returned,
                "keepalives_forwarded": c.keepalives_forwarded,
                "line_protocol_transitions": c.line_protocol_transitions,
                "input_errors": c.input_errors(), "output_drops": c.output_drops(),
                "down_drops_in": c.down_drops_in, "down_drops_out": c.down_drops_out,
                "wrong_endpoints": c.wrong_endpoints, "malformed": c.malformed,
                "checksum_errors": c.checksum_errors, "key_mismatch": c.key_mismatch,
                "too_big": c.too_big, "buffer_too_small": c.buffer_too_small,
            },
            "tun": {"rx": g.tun_rx, "tx": g.tun_tx, "errors": g.tun_errors, "to_ipsec": g.to_ipsec},
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    //! The daemon's GRE path without sockets or TUNs: two configurations negotiate
    //! tunnel protection in **transport mode** with the library's IKE on a virtual
    //! clock (strongSwan's libipsec, the interop peer, has tunnel mode only), the SAs
    //! are built and installed as `Daemon::install` does, and data and keepalives
    //! cross through both data planes and the [`demux`] / [`GreTunnel`] steps the
    //! daemon takes.
    use std::net::SocketAddr;

    use ipsec_core::dataplane::{Dataplane, Received, SendBuffers, Sent};
    use ipsec_core::esp::EspSa;
    use ipsec_core::spd::{Policy, PolicyAction};
    use ipsec_core::wire::ipv4::Ipv4Repr;
    use ipsec_ike::v1::{ChildSa, Ike, IkeEvent};
    use ipsec_soft_crypto::{OsRng, SoftCrypto};

    use super::*;
    use crate::daemon::Dp;

    fn cfg(me: &str, peer: &str, addr: &str, mode: &str) -> Config {
        Config::parse(&format!(
            r#"
[interface]
address = "{me}"
[[isakmp.key]]
key = "gre-test"
address = "{peer}"
[[transform_set]]
name = "TS"
esp = ["esp-aes", "esp-sha-hmac"]
mode = "{mode}"
[[ipsec_profile]]
name = "P"
transform_sets = ["TS"]
[[tunnel]]
name = "Tunnel0"
address = "{addr}"
source = "{me}"
destination = "{peer}"
protection = "P"
keepalive = {{ period = 10, retries = 3 }}
"#
        ))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    struct Side {
        cfg: Config,
        ike: Box<Ike<SoftCrypto>>,
        dp: Box<Dp>,
        gre: GreTunnel,
        children: Vec<ChildSa>,
    }

    fn side(cfg: Config) -> Side {
        let mut dp: Box<Dp> = Box::new(Dataplane::new(PolicyAction::Bypass));
        for e in &cfg.ike.crypto_maps {
            dp.spd_mut()
                .insert(Policy {
                    seq: e.seq,
                    selector: e.selector,
                    action: PolicyAction::Protect { sa_group: e.seq },
                })
                .unwrap();
        }
        let gre = GreTunnel::new(gre_config(&cfg.tunnels[0]).unwrap(), Instant::ZERO).unwrap();
        Side {
            ike: Box::new(Ike::new(cfg.ike.clone())),
            cfg,
            dp,
            gre,
            children: Vec::new(),
        }
    }

    /// Sends what `x` has to send to `y`, collects `x`'s child SAs; whether it sent.
    fn step(now: Instant, x: &mut Side, y: &mut Side) -> bool {
        let mut buf = vec![0u8; 4096];
        let mut any = false;
        while let Some(tx) = x.ike.poll_transmit(now, &mut buf) {
            any = true;
            let (from, to): (SocketAddr, SocketAddr) = (tx.src, tx.dst);
            let _ = y
                .ike
                .handle_datagram(now, &mut OsRng, from, to, &buf[..tx.len]);
        }
        while let Some(ev) = x.ike.poll_event() {
            if let IkeEvent::ChildSaEstablished(cs) = ev {
                x.children.push(cs);
            }
        }
        any
    }

    /// Runs IKE between the two until both are quiet.
    fn pump(now: Instant, a: &mut Side, b: &mut Side) {
        for _ in 0..64 {
            let sent_a = step(now, a, b);
            let sent_b = step(now, b, a);
            if !sent_a && !sent_b {
                return;
            }
        }
    }

    /// What `Daemon::install` does with a child SA.
    fn install(s: &mut Side, cs: &ChildSa) {
        let (mut i, mut o) = (cs.inbound.clone(), cs.outbound.clone());
        let (local, peer) = (s.cfg.interface.address, cs.peer.ip());
        fill_transport_addresses(&mut i, local, peer);
        fill_transport_addresses(&mut o, local, peer);
        assert_eq!(o.remote, Some(peer));
        let (ie, ia) = cs.inbound_keys();
        let (oe, oa) = cs.outbound_keys();
        let inb = EspSa::new(i, ie, ia, Instant::ZERO).unwrap();
        let out = EspSa::new(o, oe, oa, Instant::ZERO).unwrap();
        s.dp.install_pair(cs.crypto_map, inb, out).unwrap();
    }

    /// `outbound_packet`: the delivery packet through the data plane; the ESP packets.
    fn send(now: Instant, s: &mut Side, delivery: &mut [u8]) -> Vec<Vec<u8>> {
        let (mut work, mut frag) = (vec![0u8; 4096], vec![0u8; 2048]);
        let mut sent = Vec::new();
        let bufs = SendBuffers {
            work: &mut work,
            frag: &mut frag,
        };
        let r =
            s.dp.send(now, delivery, &mut OsRng, bufs, |p| sent.push(p.to_vec()));
        assert!(matches!(r, Ok(Sent::Protected { .. })), "{r:?}");
        sent
    }

    /// `inbound_packet` + `gre_inbound`: what the tunnel made of an ESP packet.
    fn receive(
        now: Instant,
        s: &mut Side,
        esp: &mut [u8],
    ) -> (Option<Vec<u8>>, bool, Option<Vec<u8>>) {
        let mut reasm = vec![0u8; 9300];
        let Ok(Received::Decapsulated { packet, .. }) = s.dp.receive(now, esp, &mut reasm) else {
            panic!("not decapsulated");
        };
        assert_eq!(demux([&s.gre], packet), Some(0));
        match s.gre.decapsulate(now, packet).unwrap() {
            Delivered::Data { payload, .. } => (Some(payload.to_vec()), false, None),
            Delivered::KeepaliveReturned => (None, true, None),
            Delivered::ForwardBack(p) => (None, false, Some(p.to_vec())),
        }
    }

    fn ping(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        Ipv4Repr {
            src: src.into(),
            dst: dst.into(),
            protocol: proto::ICMP,
            payload_len: 8,
            ttl: 64,
            tos: 0,
            ident: 7,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
        }
        .emit(&mut p)
        .unwrap();
        p[20] = 8;
        p
    }

    fn tunnel_protection(mode: &str) {
        let mut l = side(cfg("203.0.113.1", "203.0.113.2", "172.16.68.1/30", mode));
        let mut r = side(cfg("203.0.113.2", "203.0.113.1", "172.16.68.2/30", mode));
        let seq = l.cfg.tunnels[0].seq;
        let mut now = Instant::ZERO;
        // At start (as `gre_start`): the left side initiates for the tunnel's entry.
        l.ike.initiate(now, &mut OsRng, seq).unwrap();
        pump(now, &mut l, &mut r);
        let (lc, rc) = (l.children.pop().unwrap(), r.children.pop().unwrap());
        assert_eq!((lc.crypto_map, rc.crypto_map), (seq, r.cfg.tunnels[0].seq));
        let want = if mode == "transport" {
            Mode::Transport
        } else {
            Mode::Tunnel
        };
        assert_eq!((lc.outbound.mode, rc.outbound.mode), (want, want));
        install(&mut l, &lc);
        install(&mut r, &rc);

        // Data: a ping from tunnel0 on the left to the right's tunnel0.
        let inner = ping([172, 16, 68, 1], [172, 16, 68, 2]);
        let mut out = vec![0u8; 2048];
        let n = l
            .gre
            .encapsulate(now, protocol_of(&inner).unwrap(), &inner, &mut out)
            .unwrap();
        let mut esp = send(now, &mut l, &mut out[..n]);
        assert_eq!(esp.len(), 1);
        let outer = Ipv4Packet::new_checked(&esp[0][..]).unwrap();
        // Transport mode keeps the delivery header: tunnel source -> destination, ESP.
        // Tunnel mode adds an outer header between the same two addresses.
        assert_eq!(outer.protocol(), proto::ESP);
        assert_eq!(
            (outer.src_addr(), outer.dst_addr()),
            ([203, 0, 113, 1].into(), [203, 0, 113, 2].into())
        );
        let extra = esp[0].len() - n;
        assert!(
            if mode == "transport" {
                extra < 60
            } else {
                extra >= 60
            },
            "{mode}: {extra} bytes of overhead"
        );
        let (data, _, _) = receive(now, &mut r, &mut esp[0]);
        assert_eq!(data.as_deref(), Some(&inner[..]));

        // Keepalive: the left's goes to the right, which routes its inner packet back.
        now = now + ipsec_core::Duration::from_secs(10);
        l.gre.handle_timeout(now);
        let tx = l.gre.poll_transmit(now, &mut out).unwrap();
        let mut esp = send(now, &mut l, &mut out[..tx.len]);
        let (_, _, back) = receive(now, &mut r, &mut esp[0]);
        let mut back = back.expect("the peer's keepalive is forwarded back");
        let mut esp = send(now, &mut r, &mut back);
        let (_, returned, _) = receive(now, &mut l, &mut esp[0]);
        assert!(returned);
        let c = *l.gre.counters();
        assert_eq!(
            (c.keepalives_sent, c.keepalives_returned, c.packets_out),
            (1, 1, 1)
        );
        assert_eq!(r.gre.counters().keepalives_forwarded, 1);
        assert_eq!(r.gre.counters().packets_in, 1);

        // No answers: line protocol goes down at the fourth unanswered tick, 40 s on.
        for k in 1..=4u64 {
            l.gre
                .handle_timeout(now + ipsec_core::Duration::from_secs(10 * k));
            let _ = l.gre.poll_transmit(now, &mut out);
            assert_eq!(l.gre.is_line_protocol_up(), k < 4, "tick {k}");
        }
        assert_eq!(l.gre.poll_event(), Some(GreEvent::LineProtocolDown));
        // Data is refused while down, and counted.
        assert!(l.gre.encapsulate(now, 0x0800, &inner, &mut out).is_err());
        assert_eq!(l.gre.counters().down_drops_out, 1);
    }

    /// The data plane and IKE are built on the stack before being boxed, as in the
    /// daemon (whose main thread has 8 MiB); test threads get 2 MiB.
    fn with_big_stack(f: fn()) {
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn transport_mode_tunnel_protection() {
        with_big_stack(|| tunnel_protection("transport"));
    }

    #[test]
    fn tunnel_mode_tunnel_protection() {
        with_big_stack(|| tunnel_protection("tunnel"));
    }

    #[test]
    fn demux_takes_only_the_tunnels_gre() {
        let t = GreTunnel::new(
            GreConfig::new([203, 0, 113, 1].into(), [203, 0, 113, 2].into()),
            Instant::ZERO,
        )
        .unwrap();
        let mut g = vec![0u8; 24];
        let ip = |src: [u8; 4], dst: [u8; 4], p: u8, buf: &mut [u8]| {
            Ipv4Repr {
                src: src.into(),
                dst: dst.into(),
                protocol: p,
                payload_len: 4,
                ttl: 64,
                tos: 0,
                ident: 0,
                dont_frag: false,
                more_frags: false,
                frag_offset: 0,
            }
            .emit(buf)
            .unwrap();
        };
        ip([203, 0, 113, 2], [203, 0, 113, 1], proto::GRE, &mut g);
        assert_eq!(demux([&t], &g), Some(0));
        ip([203, 0, 113, 1], [203, 0, 113, 2], proto::GRE, &mut g);
        assert_eq!(demux([&t], &g), None, "our own direction");
        ip([203, 0, 113, 2], [203, 0, 113, 1], proto::UDP, &mut g);
        assert_eq!(demux([&t], &g), None, "not GRE");
        assert_eq!(demux([&t], &g[..10]), None, "truncated");
        assert_eq!(protocol_of(&[0x45]), Some(ethertype::IPV4));
        assert_eq!(protocol_of(&[0x60]), Some(ethertype::IPV6));
        assert_eq!(protocol_of(&[0x10]), None);
        assert_eq!(protocol_of(&[]), None);
        assert_eq!(netmask(30), Ipv4Addr::new(255, 255, 255, 252));
        assert_eq!(netmask(0), Ipv4Addr::UNSPECIFIED);
    }
}
