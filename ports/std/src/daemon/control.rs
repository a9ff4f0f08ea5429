//! The control socket: a Unix stream socket, one JSON request line in, one JSON response
//! line out, then the connection closes.
//!
//! ```text
//! -> {"show":"isakmp-sa"}          (or "ipsec-sa", "interfaces", "ha")
//! <- {"ok":true,"text":"...IOS-style table...","data":{...}}
//! <- {"ok":false,"error":"unknown request"}
//! ```
//!
//! The daemon renders the text (it owns the SAs and reuses [`crate::show`]); `--json`
//! prints `data` instead, for machines.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration as StdDuration;

use hal_traits::{CipherAlg, HashAlg};
use ipsec_core::spd::AddrRange;
use ipsec_ike::v1::{IsakmpSaStatus, Role};
use serde_json::{Value, json};
use tracing::debug;

use super::Daemon;
use super::routes::RouteKind;
use crate::show::{SaPair, crypto_ipsec_sa, transform_name};

/// What `ipsec show` can ask for.
pub const TOPICS: [&str; 4] = ["isakmp-sa", "ipsec-sa", "interfaces", "ha"];

/// Binds the control socket, replacing a stale one (refusing if a daemon answers).
///
/// # Errors
/// Another daemon owns the socket, or the bind failed.
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!(
                "control socket {} is in use: is another daemon running?",
                path.display()
            ));
        }
        let _ = std::fs::remove_file(path);
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let l =
        UnixListener::bind(path).map_err(|e| format!("control socket {}: {e}", path.display()))?;
    l.set_nonblocking(true)
        .map_err(|e| format!("control socket: {e}"))?;
    Ok(l)
}

/// Answers one client (bounded: 500 ms to send its request).
pub fn serve(d: &Daemon, stream: UnixStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(StdDuration::from_millis(500)));
    let _ = stream.set_write_timeout(Some(StdDuration::from_millis(500)));
    let mut line = String::new();
    let mut reader = BufReader::new(&stream);
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let resp = match serde_json::from_str::<Value>(&line) {
        Ok(req) => match req.get("show").and_then(Value::as_str) {
            Some(topic) => match render(d, topic) {
                Some((text, data)) => json!({"ok": true, "text": text, "data": data}),
                None => {
                    json!({"ok": false, "error": format!("unknown topic {topic:?} (expected one of {})", TOPICS.join(", "))})
                }
            },
            None => json!({"ok": false, "error": "unknown request (expected {\"show\": TOPIC})"}),
        },
        Err(e) => json!({"ok": false, "error": format!("bad request: {e}")}),
    };
    debug!(target: "daemon", "control request {}", line.trim());
    let mut w = &stream;
    let _ = writeln!(w, "{resp}");
}

/// Sends one request to a running daemon and returns its response.
///
/// # Errors
/// The daemon is not running, or answered garbage or an error.
pub fn request(path: &Path, topic: &str) -> Result<Value, String> {
    let stream = UnixStream::connect(path).map_err(|e| {
        format!(
            "cannot reach the daemon at {}: {e} (is `ipsec up` running? --control PATH)",
            path.display()
        )
    })?;
    stream
        .set_read_timeout(Some(StdDuration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut w = &stream;
    writeln!(w, "{}", json!({ "show": topic })).map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(|e| format!("control socket: {e}"))?;
    let v: Value = serde_json::from_str(&line).map_err(|e| format!("bad response: {e}"))?;
    if v.get("ok") == Some(&Value::Bool(true)) {
        Ok(v)
    } else {
        Err(v
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("daemon error")
            .to_string())
    }
}

fn render(d: &Daemon, topic: &str) -> Option<(String, Value)> {
    Some(match topic {
        "isakmp-sa" => isakmp_sa(d),
        "ipsec-sa" => ipsec_sa(d),
        "interfaces" => interfaces(d),
        "ha" => d.ha_show(),
        _ => return None,
    })
}

fn enc_name(c: Option<CipherAlg>) -> &'static str {
    match c {
        Some(CipherAlg::DesCbc) => "des",
        Some(CipherAlg::TripleDesCbc) => "3des",
        Some(CipherAlg::Aes128Cbc) => "aes",
        Some(CipherAlg::Aes192Cbc) => "aes192",
        Some(CipherAlg::Aes256Cbc) => "aes256",
        Some(_) => "?",
        None => "",
    }
}

fn hash_name(h: Option<HashAlg>) -> &'static str {
    match h {
        Some(HashAlg::Md5) => "md5",
        Some(HashAlg::Sha1) => "sha",
        Some(HashAlg::Sha256) => "sha256",
        Some(_) => "?",
        None => "",
    }
}

fn hms(secs: u64) -> String {
    format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// `show crypto isakmp sa` followed by `show crypto isakmp sa detail`.
fn isakmp_sa(d: &Daemon) -> (String, Value) {
    let sas: Vec<IsakmpSaStatus> = d.ike.isakmp_status().collect();
    let mut s = String::new();
    let _ = writeln!(s, "IPv4 Crypto ISAKMP SA");
    let _ = writeln!(
        s,
        "dst             src             state          conn-id status"
    );
    for a in &sas {
        let (dst, src) = match a.role {
            Role::Initiator => (a.remote.ip(), a.local.ip()),
            Role::Responder => (a.local.ip(), a.remote.ip()),
        };
        let status = if a.state == ipsec_ike::v1::IsakmpState::QmIdle {
            "ACTIVE"
        } else {
            "NEGOTIATING"
        };
        let _ = writeln!(
            s,
            "{:<15} {:<15} {:<14} {:>7} {status}",
            dst.to_string(),
            src.to_string(),
            a.state.to_string(),
            a.conn_id
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Codes: C - IKE configuration mode, D - Dead Peer Detection"
    );
    let _ = writeln!(s, "       K - Keepalives, N - NAT-traversal");
    let _ = writeln!(s, "       X - IKE Extended Authentication");
    let _ = writeln!(s, "       psk - Preshared key, rsig - RSA signature");
    let _ = writeln!(s, "       renc - RSA encryption");
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "C-id  Local                 Remote                I-VRF  Status Encr   Hash   Auth DH Lifetime Cap."
    );
    let mut data = Vec::new();
    for a in &sas {
        let status = if a.state == ipsec_ike::v1::IsakmpState::QmIdle {
            "ACTIVE"
        } else {
            "NEGOT"
        };
        let life = a.lifetime_left.map(|l| l.as_millis() / 1000);
        let _ = writeln!(
            s,
            "{:<5} {:<21} {:<21}        {:<6} {:<6} {:<6} psk  {:<2} {:<8} {}",
            a.conn_id,
            a.local.to_string(),
            a.remote.to_string(),
            status,
            enc_name(a.encryption),
            hash_name(a.hash),
            a.group.map_or_else(String::new, |g| g.number().to_string()),
            life.map_or_else(String::new, hms),
            a.capabilities
        );
        let _ = writeln!(s, "       Engine-id:Conn-id =  SW:{}", a.conn_id);
        let _ = writeln!(
            s,
            "       {} , {}, NAT: local behind NAT {}, peer behind NAT {}",
            match a.role {
                Role::Initiator => "Initiator",
                Role::Responder => "Responder",
            },
            a.state,
            if a.nat.local_behind_nat { "yes" } else { "no" },
            if a.nat.remote_behind_nat { "yes" } else { "no" }
        );
        data.push(json!({
            "conn_id": a.conn_id,
            "local": a.local.to_string(),
            "remote": a.remote.to_string(),
            "state": a.state.to_string(),
            "role": match a.role { Role::Initiator => "initiator", Role::Responder => "responder" },
            "encryption": enc_name(a.encryption),
            "hash": hash_name(a.hash),
            "auth": "psk",
            "dh_group": a.group.map(|g| g.number()),
            "lifetime_left_s": life,
            "capabilities": a.capabilities.to_string(),
            "nat_local": a.nat.local_behind_nat,
            "nat_remote": a.nat.remote_behind_nat,
            "initiator_cookie": hex::encode(a.initiator_cookie),
            "responder_cookie": hex::encode(a.responder_cookie),
        }));
    }
    if sas.is_empty() {
        let _ = writeln!(s, "(no ISAKMP SAs)");
    }
    let k = d.cfg.keepalive.map_or_else(
        || "isakmp keepalive: not configured".to_string(),
        |k| {
            format!(
                "isakmp keepalive: {} s, retry {} s, {:?} (DPD)",
                k.interval, k.retry, k.mode
            )
        },
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "{k}");
    let c = d.ike.counters();
    let _ = writeln!(
        s,
        "IKE datagrams: {} in, {} out, {} retransmits, {} malformed, {} auth failures, {} unknown SA",
        c.rx_datagrams, c.tx_datagrams, c.retransmits, c.malformed, c.auth_failures, c.unknown_sa
    );
    (
        s,
        json!({ "isakmp_sas": data, "counters": {
            "rx": c.rx_datagrams, "tx": c.tx_datagrams, "retransmits": c.retransmits,
            "malformed": c.malformed, "auth_failures": c.auth_failures, "unknown_sa": c.unknown_sa,
            "dpd_answered": c.dpd_answered,
        }}),
    )
}

fn range(r: &AddrRange) -> String {
    r.to_string()
}

/// `show crypto ipsec sa`.
fn ipsec_sa(d: &Daemon) -> (String, Value) {
    let now = d.clock();
    let local = d.cfg.ike.local_addr;
    let mut pairs = Vec::new();
    let mut data = Vec::new();
    // Tunnel protection: IOS shows the tunnel interface and "Tunnel0-head-0".
    let tags: Vec<String> = d
        .children
        .iter()
        .map(|c| match (d.cfg.map(c.map), d.cfg.tunnel(c.map)) {
            (Some(m), _) => m.name.clone(),
            (None, Some(t)) => format!("{}-head-0", t.name),
            (None, None) => "dynamic".into(),
        })
        .collect();
    for (c, map_tag) in d.children.iter().zip(&tags) {
        let tunnel = d.cfg.tunnel(c.map);
        let inbound = d.dp.inbound_sa(c.hin);
        let outbound = d.dp.outbound_sa(c.hout);
        pairs.push(SaPair {
            interface: tunnel.map_or(&d.cfg.interface.name, |t| &t.name),
            map_tag,
            local,
            peer: c.peer.ip(),
            inbound,
            outbound,
        });
        let ic = inbound.map(|s| *s.counters()).unwrap_or_default();
        let oc = outbound.map(|s| *s.counters()).unwrap_or_default();
        let t = outbound
            .or(inbound)
            .map(|s| transform_name(&s.config().transform));
        let encap = outbound.and_then(|s| s.config().udp_encap);
        data.push(json!({
            "crypto_map": map_tag,
            "seq": c.map,
            "conn_id": c.conn_id,
            "peer": c.peer.to_string(),
            "local_ident": range(&c.selector.local),
            "remote_ident": range(&c.selector.remote),
            "inbound_spi": format!("{:#010X}", c.in_spi),
            "outbound_spi": format!("{:#010X}", c.out_spi),
            "transform": t,
            "udp_encap": encap.map(|u| json!({"local_port": u.local_port, "remote_port": u.remote_port})),
            "installed": inbound.is_some() && outbound.is_some(),
            "pkts_encaps": oc.encaps, "pkts_encrypt": oc.encrypt, "pkts_digest": oc.digest,
            "pkts_decaps": ic.decaps, "pkts_decrypt": ic.decrypt, "pkts_verify": ic.verify,
            "bytes_out": oc.bytes_out, "bytes_in": ic.bytes_in,
            "send_errors": oc.send_errors, "recv_errors": ic.recv_errors,
            "replay_failed": ic.replay_failed, "verify_failed": ic.verify_failed,
            "lifetime_left": outbound.map(|s| {
                let (kb, secs) = s.lifetime().remaining_kb_secs(now);
                json!({"kilobytes": kb, "seconds": secs})
            }),
            "idle_deadline_in_s": d.dp.idle_deadline(ipsec_core::esp::Direction::Inbound, c.hin)
                .map(|t| if t > now { (t - now).as_millis() / 1000 } else { 0 }),
        }));
    }
    let mut s = crypto_ipsec_sa(now, &pairs);
    if pairs.is_empty() {
        let _ = writeln!(s, "interface: {}", d.cfg.interface.name);
        for e in &d.cfg.ike.crypto_maps {
            let tag = match (d.cfg.map(e.seq), d.cfg.tunnel(e.seq)) {
                (Some(m), _) => m.name.clone(),
                (None, Some(t)) => format!("{}-head-0", t.name),
                (None, None) => String::new(),
            };
            let _ = writeln!(s, "    Crypto map tag: {tag}, local addr {local}");
            let _ = writeln!(
                s,
                "   local  ident (addr/mask/prot/port): ({})",
                e.selector.local
            );
            let _ = writeln!(
                s,
                "   remote ident (addr/mask/prot/port): ({})",
                e.selector.remote
            );
            let _ = writeln!(
                s,
                "   current_peer {} port 500",
                e.peers
                    .first()
                    .map_or_else(|| "(dynamic)".into(), ToString::to_string)
            );
            let _ = writeln!(s, "    #pkts encaps: 0, #pkts encrypt: 0, #pkts digest: 0");
            let _ = writeln!(s, "    #pkts decaps: 0, #pkts decrypt: 0, #pkts verify: 0");
            let _ = writeln!(s, "     inbound esp sas:");
            let _ = writeln!(s, "     outbound esp sas:");
            let _ = writeln!(s);
        }
    }
    let c = d.dp.counters();
    let st = d.stats;
    let _ = writeln!(
        s,
        "Data plane: #pkts invalid sa (rcv): {}, #pkts no sa (acquire): {}, #pkts no policy: {}, #acquire queue drops: {}, #cleartext rejected: {}, #nat keepalives rcv: {}, sent: {}",
        c.invalid_sa,
        c.no_sa,
        st.no_policy,
        st.acquire_dropped,
        c.cleartext_rejected,
        st.keepalive_rx,
        st.keepalive_tx
    );
    let _ = writeln!(
        s,
        "Flow cache: {} entries, {} hits, {} misses (SPD lookups)",
        super::FLOWS,
        c.flow_cache_hits,
        c.flow_cache_misses
    );
    let idle = d.cfg.idle_time.map_or_else(
        || "lifetime".to_string(),
        |t| format!("{} s", t.as_millis() / 1000),
    );
    let _ = writeln!(
        s,
        "Security association idle-time: {idle}, df-bit: {:?}, fragmentation: {:?}",
        d.cfg.df_bit, d.cfg.fragmentation
    );
    (
        s,
        json!({
            "sas": data,
            "dataplane": {
                "invalid_sa": c.invalid_sa, "no_sa": c.no_sa, "no_policy": st.no_policy,
                "acquire_dropped": st.acquire_dropped, "cleartext_rejected": c.cleartext_rejected,
                "malformed": c.malformed, "nat_keepalives_rx": st.keepalive_rx, "nat_keepalives_tx": st.keepalive_tx,
                "esp_rx": st.esp_rx, "esp_tx": st.esp_tx, "send_errors": st.send_errors, "dp_errors": st.dp_errors,
                "flow_cache_entries": super::FLOWS, "flow_cache_hits": c.flow_cache_hits, "flow_cache_misses": c.flow_cache_misses,
            },
        }),
    )
}

/// The TUN, the outside interface with its crypto map, routes, and GRE tunnels.
fn interfaces(d: &Daemon) -> (String, Value) {
    let i = &d.cfg.interface;
    let st = d.stats;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} is up, line protocol is up (TUN, protected traffic)",
        i.tun
    );
    let _ = writeln!(
        s,
        "  MTU {} bytes, route source {}",
        i.mtu,
        i.source.map_or_else(|| "(none)".into(), |a| a.to_string())
    );
    let _ = writeln!(
        s,
        "  {} packets input (from hosts, to encrypt), {} packets output (decrypted)",
        st.tun_rx, st.tun_tx
    );
    let _ = writeln!(
        s,
        "  {} no policy drops, {} acquire drops",
        st.no_policy, st.acquire_dropped
    );
    let map = d.cfg.maps.first().map_or("(none)", |m| m.name.as_str());
    let _ = writeln!(
        s,
        "{} ({}): crypto map {map}, {} entries",
        i.name,
        i.address,
        d.cfg.maps.len()
    );
    let _ = writeln!(
        s,
        "  IKE UDP {}:500 and {}:4500, raw ESP (protocol 50) {}",
        i.address,
        i.address,
        if d.raw.is_some() {
            "open"
        } else {
            "unavailable"
        }
    );
    let _ = writeln!(
        s,
        "  ESP {} packets in, {} out; IKE {} datagrams in, {} out; {} send errors",
        st.esp_rx, st.esp_tx, st.ike_rx, st.ike_tx, st.send_errors
    );
    let _ = writeln!(s, "Routes into {}:", i.tun);
    let mut routes = Vec::new();
    for r in d.routes.installed() {
        let kind = match r.kind {
            RouteKind::Acquire => "acquire",
            RouteKind::Reverse => "reverse-route",
        };
        let _ = writeln!(
            s,
            "  {}/{} dev {}{} metric {} ({kind}, crypto map entry {}, {} SA pair(s))",
            r.prefix.0,
            r.prefix.1,
            i.tun,
            d.routes
                .source()
                .map_or_else(String::new, |a| format!(" src {a}")),
            r.metric,
            r.map,
            if r.kind == RouteKind::Reverse {
                r.refs
            } else {
                0
            }
        );
        routes.push(json!({"prefix": format!("{}/{}", r.prefix.0, r.prefix.1), "metric": r.metric, "kind": kind, "map": r.map}));
    }
    let tunnels = super::gre::show(d, &mut s);
    (
        s,
        json!({
            "tun": {"name": i.tun, "mtu": i.mtu, "rx": st.tun_rx, "tx": st.tun_tx, "source": i.source.map(|a| a.to_string())},
            "outside": {"name": i.name, "address": i.address.to_string(), "crypto_map": map, "esp_rx": st.esp_rx, "esp_tx": st.esp_tx, "ike_rx": st.ike_rx, "ike_tx": st.ike_tx},
            "routes": routes,
            "tunnels": tunnels,
        }),
    )
}
