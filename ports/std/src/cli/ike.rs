//! `ipsec ike connect`: one IKEv1 connection over real UDP sockets, driven by the host
//! clock. The interop tests run it in a network namespace against strongSwan; it is also
//! a quick way to try a peer by hand. It sends ICMP echoes through the negotiated SA
//! itself (no TUN needed), so it proves that keys, SPIs and encapsulation agree.

use std::io::{ErrorKind, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use clap::Args;
use hal_traits::{AeadAlg, CipherAlg, DhGroup, HashAlg, MacAlg};
use ipsec_core::esp::{Encryption, EspSa, Mode, Transform};
use ipsec_core::gre::{Delivered, GreConfig, GreTunnel};
use ipsec_core::spd::{AddrRange, Selector};
use ipsec_core::wire::ipv4::{Ipv4Packet, Ipv4Repr};
use ipsec_core::wire::{checksum, proto};
use ipsec_core::{Duration, Instant};
use ipsec_ike::v1::{
    CryptoMapEntry, DeleteReason, ExchangeMode, Ike, IkeConfig, IkeCounters, IkeEvent,
    IsakmpPolicy, Keepalive, KeepaliveMode, PresharedKey, Retransmit, TransformSet,
};
use ipsec_nat_t::keepalive::{KeepaliveConfig, NatKeepalive};
use ipsec_nat_t::natd::NatStatus as NattStatus;
use ipsec_soft_crypto::{OsRng, SoftCrypto};

use ipsec_std::show::transform_name;

/// The crypto map entry this tool configures.
const MAP: u32 = 10;

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// Our address (UDP 500 and 4500 are bound on it).
    #[arg(long)]
    local: IpAddr,
    /// The peer's address.
    #[arg(long)]
    peer: IpAddr,
    /// The pre-shared key (or set IPSEC_PSK).
    #[arg(long, env = "IPSEC_PSK", hide_env_values = true)]
    psk: String,
    /// Phase-1 proposal in strongSwan syntax: ENC-HASH-GROUP, e.g. aes128-sha1-modp2048,
    /// 3des-sha1-modp1024, aes256-sha256-modp2048.
    #[arg(long, default_value = "aes128-sha1-modp2048")]
    ike: String,
    /// Phase-2 proposal: ENC-HASH[-GROUP] (a group means PFS), e.g. aes128-sha1,
    /// aes256-sha256-modp2048, 3des-sha1, aes128gcm16.
    #[arg(long, default_value = "aes128-sha1")]
    esp: String,
    /// Our protected network (prefix), the local proxy identity.
    #[arg(long)]
    local_net: String,
    /// The peer's protected network (prefix).
    #[arg(long)]
    remote_net: String,
    /// Use Aggressive Mode instead of Main Mode when initiating.
    #[arg(long)]
    aggressive: bool,
    /// Do not initiate: wait for the peer to.
    #[arg(long)]
    respond: bool,
    /// Once the SA is up, send ICMP echo requests to this address through it.
    #[arg(long)]
    ping: Option<Ipv4Addr>,
    /// Source address of the echo requests (inside the local network).
    #[arg(long)]
    ping_src: Option<Ipv4Addr>,
    /// How many echo replies to wait for (up to four times as many requests are sent).
    #[arg(long, default_value_t = 3)]
    count: u32,
    /// After the pings, delete the IPsec SA and the IKE SA (DELETE notifies).
    #[arg(long)]
    delete: bool,
    /// After the pings, wait until the peer deletes the IPsec SA.
    #[arg(long)]
    wait_delete: bool,
    /// Wait until this many echo requests from the peer's side have been answered
    /// through the tunnel (this tool answers pings to any address of the local network).
    #[arg(long, default_value_t = 0)]
    answer: u32,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 20)]
    timeout: u64,
    /// Retransmission timeout of IKE requests in milliseconds.
    #[arg(long, default_value_t = 1000)]
    retransmit_ms: u64,
    /// NAT keepalive interval in seconds (`crypto isakmp nat keepalive`), sent only when
    /// we are behind a NAT and nothing else went to the peer in that interval.
    #[arg(long, default_value_t = 20)]
    nat_keepalive: u64,
    /// Stay up this many seconds after everything asked for is done (to let keepalives
    /// or the peer's DPD be observed).
    #[arg(long, default_value_t = 0)]
    linger: u64,
    /// Dead Peer Detection (`crypto isakmp keepalive`): `INTERVAL[,RETRY[,COUNT]]` in
    /// seconds (retry default 2, count default 5 R-U-THEREs). On demand unless
    /// --dpd-periodic: an R-U-THERE only when the peer was silent for INTERVAL and there
    /// is traffic to send it (see --keep-pinging). Dead at the first R-U-THERE + COUNT x
    /// RETRY.
    #[arg(long, value_name = "INTERVAL[,RETRY[,COUNT]]")]
    dpd: Option<String>,
    /// Periodic IKE keepalives: an R-U-THERE every INTERVAL, traffic or not.
    #[arg(long, requires = "dpd")]
    dpd_periodic: bool,
    /// Probe the peer even if it did not send the DPD vendor ID.
    #[arg(long, requires = "dpd")]
    dpd_without_vid: bool,
    /// A backup peer (`set peer`, in order; same PSK): negotiated when the current peer
    /// fails or is declared dead.
    #[arg(long, value_name = "IP")]
    backup_peer: Vec<IpAddr>,
    /// After the pings, keep sending one echo request every --ping-interval-ms while a
    /// tunnel is up (outbound traffic for on-demand DPD).
    #[arg(long, requires = "ping")]
    keep_pinging: bool,
    /// Interval of --keep-pinging echo requests.
    #[arg(long, default_value_t = 1000)]
    ping_interval_ms: u64,
    /// Keep running until DPD declares the peer dead (exit 0 then).
    #[arg(long, requires = "dpd")]
    until_dead: bool,
    /// Keep running until DPD declares the peer dead and the tunnel is up again with the
    /// next peer (--backup-peer), with --count echo replies through it.
    #[arg(long, requires = "dpd", requires = "backup_peer")]
    until_backup: bool,
    /// Restrict the proxy identities to one IP protocol (47 = GRE, as a `permit gre`
    /// access list).
    #[arg(long)]
    protocol: Option<u8>,
    /// Once the SA is up, send this many GRE packets (a GRE tunnel from --ping-src to
    /// --ping) through it and wait until the peer's side echoes them back.
    #[arg(long, default_value_t = 0)]
    gre_echo: u32,
    /// TEST ONLY: append the negotiated SKEYID_d/a/e and ESP keys to this file, like SSLKEYLOGFILE, so
    /// they can be compared with the peer's debug log. Never use on a real deployment.
    #[arg(long)]
    keylog: Option<PathBuf>,
}

fn parse_group(s: &str) -> Result<DhGroup, String> {
    Ok(match s {
        "modp768" => DhGroup::Modp768,
        "modp1024" => DhGroup::Modp1024,
        "modp1536" => DhGroup::Modp1536,
        "modp2048" => DhGroup::Modp2048,
        "modp3072" => DhGroup::Modp3072,
        _ => return Err(format!("unknown DH group {s}")),
    })
}

fn parse_ike(s: &str) -> Result<IsakmpPolicy, String> {
    let parts: Vec<&str> = s.split('-').collect();
    let [enc, hash, group] = parts.as_slice() else {
        return Err(format!("phase-1 proposal {s:?}: expected ENC-HASH-GROUP"));
    };
    let enc = match *enc {
        "des" => CipherAlg::DesCbc,
        "3des" => CipherAlg::TripleDesCbc,
        "aes128" | "aes" => CipherAlg::Aes128Cbc,
        "aes192" => CipherAlg::Aes192Cbc,
        "aes256" => CipherAlg::Aes256Cbc,
        other => return Err(format!("unknown phase-1 cipher {other}")),
    };
    let hash = match *hash {
        "md5" => HashAlg::Md5,
        "sha1" | "sha" => HashAlg::Sha1,
        "sha256" => HashAlg::Sha256,
        other => return Err(format!("unknown phase-1 hash {other}")),
    };
    Ok(IsakmpPolicy::new(10, enc, hash, parse_group(group)?))
}

fn parse_esp(s: &str) -> Result<(Transform, Option<DhGroup>), String> {
    let parts: Vec<&str> = s.split('-').collect();
    let (enc, rest) = parts.split_first().ok_or("empty ESP proposal")?;
    let enc = match *enc {
        "null" => Encryption::Null,
        "des" => Encryption::Cbc(CipherAlg::DesCbc),
        "3des" => Encryption::Cbc(CipherAlg::TripleDesCbc),
        "aes128" | "aes" => Encryption::Cbc(CipherAlg::Aes128Cbc),
        "aes192" => Encryption::Cbc(CipherAlg::Aes192Cbc),
        "aes256" => Encryption::Cbc(CipherAlg::Aes256Cbc),
        "aes128gcm8" => Encryption::Gcm(AeadAlg::Aes128Gcm8),
        "aes128gcm12" => Encryption::Gcm(AeadAlg::Aes128Gcm12),
        "aes128gcm16" => Encryption::Gcm(AeadAlg::Aes128Gcm16),
        "aes256gcm8" => Encryption::Gcm(AeadAlg::Aes256Gcm8),
        "aes256gcm12" => Encryption::Gcm(AeadAlg::Aes256Gcm12),
        "aes256gcm16" => Encryption::Gcm(AeadAlg::Aes256Gcm16),
        other => return Err(format!("unknown ESP cipher {other}")),
    };
    let mut auth = None;
    let mut pfs = None;
    for p in rest {
        match *p {
            "md5" => auth = Some(MacAlg::HmacMd5_96),
            "sha1" | "sha" => auth = Some(MacAlg::HmacSha1_96),
            "sha256" => auth = Some(MacAlg::HmacSha256_128),
            g => pfs = Some(parse_group(g)?),
        }
    }
    let t = Transform { enc, auth };
    t.validate()
        .map_err(|_| format!("invalid ESP proposal {s:?}"))?;
    Ok((t, pfs))
}

fn parse_net(s: &str) -> Result<AddrRange, String> {
    let (a, l) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: expected ADDR/LEN"))?;
    let a: IpAddr = a.parse().map_err(|e| format!("{s:?}: {e}"))?;
    let l: u8 = l.parse().map_err(|e| format!("{s:?}: {e}"))?;
    AddrRange::from_prefix(a, l).map_err(|e| format!("{s:?}: {e}"))
}

/// `--dpd INTERVAL[,RETRY[,COUNT]]` (see `ConnectArgs`).
fn parse_dpd(s: &str, periodic: bool, without_vid: bool) -> Result<Keepalive, String> {
    let v: Vec<&str> = s.split(',').collect();
    let num = |i: usize, d: u64| -> Result<u64, String> {
        v.get(i).map_or(Ok(d), |x| {
            x.trim().parse().map_err(|e| format!("--dpd {s:?}: {e}"))
        })
    };
    if v.len() > 3 || num(0, 0)? == 0 {
        return Err(format!(
            "--dpd {s:?}: expected INTERVAL[,RETRY[,COUNT]] (seconds, interval > 0)"
        ));
    }
    let count =
        u8::try_from(num(2, 5)?.max(1)).map_err(|_| format!("--dpd {s:?}: count too large"))?;
    let mut k = Keepalive::new(
        Duration::from_secs(num(0, 0)?),
        Duration::from_secs(num(1, 2)?.max(1)),
    )
    .with_retries(count);
    if periodic {
        k = k.periodic();
    }
    k.without_peer_vid = without_vid;
    Ok(k)
}

fn config(a: &ConnectArgs) -> Result<IkeConfig, String> {
    let mut cfg = IkeConfig::new(a.local);
    cfg.retransmit = Retransmit {
        timeout: Duration::from_millis(a.retransmit_ms),
        ..Retransmit::default()
    };
    cfg.add_policy(parse_ike(&a.ike)?)
        .map_err(|e| e.to_string())?;
    for p in std::iter::once(&a.peer).chain(&a.backup_peer) {
        cfg.add_key(PresharedKey::address(*p, a.psk.as_bytes()).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    if let Some(d) = &a.dpd {
        cfg.keepalive = Some(parse_dpd(d, a.dpd_periodic, a.dpd_without_vid)?);
    }
    let (t, pfs) = parse_esp(&a.esp)?;
    let mut sel = Selector::new(parse_net(&a.local_net)?, parse_net(&a.remote_net)?)
        .map_err(|e| e.to_string())?;
    if let Some(p) = a.protocol {
        sel = sel.with_protocol(p);
    }
    let mut entry = CryptoMapEntry::new(MAP, sel);
    for p in std::iter::once(&a.peer).chain(&a.backup_peer) {
        entry.add_peer(*p).map_err(|e| e.to_string())?;
    }
    entry
        .add_transform_set(TransformSet::new("ts", t, Mode::Tunnel).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    entry.pfs = pfs;
    if a.aggressive {
        entry.exchange = ExchangeMode::Aggressive;
    }
    cfg.add_crypto_map(entry).map_err(|e| e.to_string())?;
    Ok(cfg)
}

fn echo_request(src: Ipv4Addr, dst: Ipv4Addr, seq: u16) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0, 0x49, 0x50];
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(b"ipsec-rs interop echo payload..");
    let sum = checksum::checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let r = Ipv4Repr {
        src,
        dst,
        protocol: proto::ICMP,
        payload_len: icmp.len(),
        ttl: 64,
        tos: 0,
        ident: seq,
        dont_frag: false,
        more_frags: false,
        frag_offset: 0,
    };
    let mut p = vec![0; r.buffer_len()];
    let h = r.emit(&mut p).unwrap_or(20);
    p[h..].copy_from_slice(&icmp);
    p
}

/// The reply to an ICMP echo request, or `None` if `p` is not one. Lets this tool answer
/// pings from the peer's protected hosts without a TUN device.
fn answer_echo(p: &[u8]) -> Option<Vec<u8>> {
    let ip = Ipv4Packet::new_checked(p).ok()?;
    let icmp = ip.payload();
    if ip.protocol() != proto::ICMP || icmp.first() != Some(&8) {
        return None;
    }
    let mut reply_icmp = icmp.to_vec();
    reply_icmp[0] = 0;
    reply_icmp[2..4].copy_from_slice(&[0, 0]);
    let sum = checksum::checksum(&reply_icmp);
    reply_icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let r = Ipv4Repr {
        src: ip.dst_addr(),
        dst: ip.src_addr(),
        protocol: proto::ICMP,
        payload_len: reply_icmp.len(),
        ttl: 64,
        tos: ip.tos(),
        ident: ip.ident(),
        dont_frag: false,
        more_frags: false,
        frag_offset: 0,
    };
    let mut out = vec![0; r.buffer_len()];
    let h = r.emit(&mut out).ok()?;
    out[h..].copy_from_slice(&reply_icmp);
    Some(out)
}

/// The inner packet carried in GRE packet `n`: a small IPv4 packet, recognisable on return.
fn gre_payload(n: u32) -> Vec<u8> {
    let text = format!("ipsec-rs GRE over IPsec, packet {n}");
    let r = Ipv4Repr {
        src: Ipv4Addr::new(172, 16, 0, 1),
        dst: Ipv4Addr::new(224, 0, 0, 5),
        protocol: 89,
        payload_len: text.len(),
        ttl: 1,
        tos: 0xc0,
        ident: u16::try_from(n & 0xffff).unwrap_or(0),
        dont_frag: false,
        more_frags: false,
        frag_offset: 0,
    };
    let mut p = vec![0; r.buffer_len()];
    let h = r.emit(&mut p).unwrap_or(20);
    p[h..].copy_from_slice(text.as_bytes());
    p
}

/// An echo reply to us, as (source, sequence number).
fn echo_reply(p: &[u8]) -> Option<(Ipv4Addr, u16)> {
    let ip = Ipv4Packet::new_checked(p).ok()?;
    let icmp = ip.payload();
    (ip.protocol() == proto::ICMP
        && icmp.first() == Some(&0)
        && icmp.get(4..6) == Some(&[0x49, 0x50]))
    .then(|| {
        Some((
            ip.src_addr(),
            u16::from_be_bytes([*icmp.get(6)?, *icmp.get(7)?]),
        ))
    })
    .flatten()
}

struct Child {
    inbound: EspSa<SoftCrypto>,
    outbound: EspSa<SoftCrypto>,
    peer_esp: SocketAddr,
}

/// Wall-clock seconds since the Unix epoch (for `dpd:` lines the test suite compares
/// with the time it killed the peer).
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Prints what the DPD counters say happened since `last`.
fn report_dpd(c: &IkeCounters, last: &IkeCounters, peer: Option<IpAddr>) {
    let p = peer.map_or_else(|| "-".into(), |p| p.to_string());
    for _ in last.dpd_sent..c.dpd_sent {
        println!("dpd: R-U-THERE sent to {p}");
    }
    for _ in last.dpd_acks..c.dpd_acks {
        println!("dpd: R-U-THERE-ACK received from {p}");
    }
    for _ in last.dpd_answered..c.dpd_answered {
        println!("dpd: R-U-THERE from {p} answered with R-U-THERE-ACK");
    }
    for _ in last.dpd_unexpected_acks..c.dpd_unexpected_acks {
        println!("dpd: R-U-THERE-ACK with an unexpected sequence number ignored");
    }
}

pub fn connect(a: ConnectArgs) -> Result<(), String> {
    let cfg = config(&a)?;
    let mut ike: Ike<SoftCrypto> = Ike::new(cfg);
    let s500 = UdpSocket::bind((a.local, 500)).map_err(|e| format!("bind {}:500: {e}", a.local))?;
    let s4500 =
        UdpSocket::bind((a.local, 4500)).map_err(|e| format!("bind {}:4500: {e}", a.local))?;
    for s in [&s500, &s4500] {
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
    }
    let start = StdInstant::now();
    let clock =
        || Instant::from_millis(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX));
    let deadline = clock() + Duration::from_secs(a.timeout);
    let mut rng = OsRng;
    let mut buf = vec![0u8; 65_536];
    let mut child: Option<Child> = None;
    if !a.respond {
        ike.initiate(clock(), &mut rng, MAP)
            .map_err(|e| format!("initiate: {e}"))?;
    }
    let (mut sent, mut replies, mut next_ping) = (0u32, 0u32, Instant::ZERO);
    let mut deleted_by_peer = false;
    let mut answered = 0u32;
    let (mut gre_sent, mut gre_back, mut gre_retry_at) = (0u32, 0u32, Instant::ZERO);
    let mut gre: Option<GreTunnel> = None;
    let mut keepalive: Option<NatKeepalive> = None;
    let mut done_at: Option<Instant> = None;
    // DPD bookkeeping: the peer of the current tunnel, when the first peer was declared
    // dead, and the counters last reported.
    let mut current_peer: Option<IpAddr> = None;
    let mut dead_at: Option<(Instant, IpAddr)> = None;
    let mut last_counters = *ike.counters();
    let mut backup_reported = false;
    if let Some(k) = ike.config().keepalive {
        println!(
            "dpd: {} every {} s, retry {} s, {} R-U-THEREs, dead {} s after the first unanswered one",
            if k.mode == KeepaliveMode::Periodic {
                "periodic keepalives"
            } else {
                "on-demand DPD"
            },
            k.interval.as_secs(),
            k.retry.as_secs(),
            k.retries,
            k.dead_after().as_secs()
        );
    }
    loop {
        let now = clock();
        if now >= deadline {
            return Err(format!(
                "timeout after {} s (pings {replies}/{sent})",
                a.timeout
            ));
        }
        if ike.poll_timeout().is_some_and(|t| t <= now) {
            ike.handle_timeout(now, &mut rng);
        }
        if let Some(ka) = keepalive.as_mut() {
            if ka.poll_timeout().is_some_and(|t| t <= now) {
                ka.handle_timeout(now);
            }
            if let Some(k) = ka.poll_transmit(now) {
                let _ = s4500.send_to(k.payload(), k.dst);
                println!("natt: keepalive sent to {}", k.dst);
            }
        }
        while let Some(tx) = ike.poll_transmit(now, &mut buf) {
            let sock = if tx.src.port() == 4500 { &s4500 } else { &s500 };
            if tx.src.port() == 4500 {
                if let Some(ka) = keepalive.as_mut() {
                    ka.note_sent(now);
                }
            }
            if let Err(e) = sock.send_to(&buf[..tx.len], tx.dst) {
                eprintln!("ike: send to {}: {e}", tx.dst);
            }
        }
        while let Some(ev) = ike.poll_event() {
            match ev {
                IkeEvent::Phase1Established {
                    conn_id,
                    local,
                    peer,
                    nat,
                } => {
                    println!(
                        "ike: phase 1 established conn {conn_id} local {local} peer {peer} nat local={} remote={}",
                        nat.local_behind_nat, nat.remote_behind_nat
                    );
                    if let (Some(path), Some(k)) = (&a.keylog, ike.keylog_phase1(conn_id)) {
                        let line = format!(
                            "ike cky_i={} cky_r={} skeyid_d={} skeyid_a={} skeyid_e={}\n",
                            hex::encode(k.cky_i),
                            hex::encode(k.cky_r),
                            hex::encode(k.skeyid_d),
                            hex::encode(k.skeyid_a),
                            hex::encode(k.skeyid_e)
                        );
                        let mut f = std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(path)
                            .map_err(|e| e.to_string())?;
                        f.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
                    }
                    let status = NattStatus {
                        local_behind_nat: nat.local_behind_nat,
                        remote_behind_nat: nat.remote_behind_nat,
                    };
                    let cfg = KeepaliveConfig::seconds(a.nat_keepalive);
                    let ka = NatKeepalive::new(now, cfg, SocketAddr::new(peer.ip(), 4500), status);
                    if ka.is_active() {
                        println!("natt: behind a NAT, keepalives every {} s", a.nat_keepalive);
                    }
                    keepalive = Some(ka);
                    current_peer = Some(peer.ip());
                    if let Some(st) = ike.isakmp_status().find(|s| s.conn_id == conn_id) {
                        println!(
                            "dpd: conn {conn_id} peer {} capabilities [{}]",
                            peer.ip(),
                            st.capabilities
                        );
                    }
                }
                IkeEvent::ChildSaEstablished(cs) => {
                    let (ie, ia) = cs.inbound_keys();
                    let (oe, oa) = cs.outbound_keys();
                    let t = cs.outbound.transform;
                    println!(
                        "ike: child sa established map {} in spi {:#010x} out spi {:#010x} transform {} encap {}",
                        cs.crypto_map,
                        cs.inbound.spi,
                        cs.outbound.spi,
                        transform_name(&t),
                        cs.outbound.udp_encap.map_or("none".into(), |u| format!(
                            "udp {}->{}",
                            u.local_port, u.remote_port
                        )),
                    );
                    if let Some(path) = &a.keylog {
                        let line = format!(
                            "esp in spi={:08x} enc={} auth={}\nesp out spi={:08x} enc={} auth={}\n",
                            cs.inbound.spi,
                            hex::encode(ie),
                            hex::encode(ia),
                            cs.outbound.spi,
                            hex::encode(oe),
                            hex::encode(oa)
                        );
                        let mut f = std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(path)
                            .map_err(|e| e.to_string())?;
                        f.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
                    }
                    let inbound = EspSa::new(cs.inbound.clone(), ie, ia, now)
                        .map_err(|e| format!("inbound SA: {e}"))?;
                    let outbound = EspSa::new(cs.outbound.clone(), oe, oa, now)
                        .map_err(|e| format!("outbound SA: {e}"))?;
                    let port = cs.outbound.udp_encap.map_or(4500, |u| u.remote_port);
                    child = Some(Child {
                        inbound,
                        outbound,
                        peer_esp: SocketAddr::new(cs.peer.ip(), port),
                    });
                    // strongSwan installs its SA only after processing QM3: an echo
                    // sent at once can race it and be dropped (interop NOTES 6.3).
                    next_ping = now + Duration::from_millis(150);
                    // Count the pings of each tunnel on their own (a backup peer's).
                    (sent, replies) = (0, 0);
                }
                IkeEvent::ChildSaDeleted {
                    inbound_spi,
                    outbound_spi,
                    reason,
                    ..
                } => {
                    println!(
                        "ike: child sa deleted in spi {inbound_spi:#010x} out spi {outbound_spi:#010x} reason {reason:?}"
                    );
                    child = None;
                    if reason != DeleteReason::DpdDead {
                        deleted_by_peer = true;
                    }
                }
                IkeEvent::PeerDead {
                    peer,
                    last_proof_of_life,
                } => {
                    let silent = now.saturating_since(last_proof_of_life);
                    println!(
                        "dpd: peer {peer} declared dead at unix={:.3}, last proof of life {}.{:03} s before",
                        unix_now(),
                        silent.as_secs(),
                        silent.as_millis() % 1000
                    );
                    dead_at = Some((now, peer));
                    current_peer = None;
                }
                IkeEvent::PeerMoved { from, to, .. } => {
                    println!("nat-t: peer's mapping changed from {from} to {to}");
                    if let Some(c) = child.as_mut().filter(|c| c.peer_esp == from) {
                        c.outbound.follow_peer(from, to);
                        c.inbound.follow_peer(from, to);
                        c.peer_esp = to;
                    }
                }
                IkeEvent::PeerChanged { from, to, .. } => {
                    println!("dpd: crypto map entry {MAP} fails over from {from} to {to}");
                }
                IkeEvent::Phase1Deleted {
                    conn_id, reason, ..
                } => {
                    println!("ike: phase 1 deleted conn {conn_id} reason {reason:?}");
                }
                IkeEvent::NegotiationFailed { reason, peer, .. } => {
                    println!("ike: negotiation failed with {peer}: {reason:?}");
                    // With backup peers the next one is tried (PeerChanged); the overall
                    // --timeout still bounds the run.
                    if a.backup_peer.is_empty() {
                        return Err(format!("negotiation failed: {reason:?}"));
                    }
                }
                other => println!("ike: {other:?}"),
            }
        }
        // Receive.
        for (sock, port) in [(&s500, 500u16), (&s4500, 4500u16)] {
            loop {
                match sock.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        let to = SocketAddr::new(a.local, port);
                        let data = &mut buf[..n];
                        if port == 500 || data.starts_with(&[0, 0, 0, 0]) {
                            if let Err(e) = ike.handle_datagram(now, &mut rng, from, to, data) {
                                eprintln!("ike: dropped datagram from {from}: {e}");
                            }
                        } else if data == [0xff] {
                            // NAT keepalive.
                        } else if let Some(c) = child.as_mut() {
                            match c.inbound.open_udp_payload(now, data) {
                                Ok(d) => {
                                    // Authenticated inbound ESP: proof of life for DPD.
                                    ike.note_inbound(now, from.ip());
                                    let is_gre = Ipv4Packet::new_checked(&*d.packet)
                                        .is_ok_and(|ip| ip.protocol() == proto::GRE);
                                    if let (true, Some(t)) = (is_gre, gre.as_mut()) {
                                        match t.decapsulate(now, d.packet) {
                                            Ok(Delivered::Data { protocol, payload }) => {
                                                let want = gre_payload(gre_back + 1);
                                                let ok = payload == want.as_slice();
                                                gre_back += 1;
                                                println!(
                                                    "gre: echo {gre_back} back through the SA: protocol {protocol:#06x}, {} bytes, payload {}",
                                                    payload.len(),
                                                    if ok { "intact" } else { "DIFFERENT" }
                                                );
                                                if !ok {
                                                    return Err(
                                                        "GRE payload came back changed".into()
                                                    );
                                                }
                                            }
                                            Ok(other) => println!("gre: {other:?}"),
                                            Err(e) => println!("gre: dropped: {e}"),
                                        }
                                    } else if let Some((src, seq)) = echo_reply(d.packet) {
                                        replies += 1;
                                        println!("ping: reply {replies} from {src} seq {seq}");
                                    } else if let Some(reply) = answer_echo(d.packet) {
                                        let mut out = vec![0u8; reply.len() + 128];
                                        let n = c
                                            .outbound
                                            .seal_udp_payload(now, &reply, &mut rng, &mut out)
                                            .map_err(|e| e.to_string())?;
                                        s4500
                                            .send_to(&out[..n], c.peer_esp)
                                            .map_err(|e| e.to_string())?;
                                        ike.note_outbound(now, c.peer_esp.ip());
                                        answered += 1;
                                        println!(
                                            "ping: answered echo request {answered} through the tunnel"
                                        );
                                    }
                                }
                                Err(e) => eprintln!("esp: dropped packet from {from}: {e}"),
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(format!("recv: {e}")),
                }
            }
        }
        // Pings through the SA.
        if let (Some(c), Some(dst), Some(src)) = (child.as_mut(), a.ping, a.ping_src) {
            // Keep pinging until `count` replies came back: the peer may install its SA a
            // moment after the last Quick Mode message and drop the first echo.
            let more = replies < a.count && sent < a.count.saturating_mul(4);
            if a.gre_echo == 0 && (more || a.keep_pinging) && now >= next_ping {
                sent += 1;
                let pkt = echo_request(src, dst, u16::try_from(sent).unwrap_or(u16::MAX));
                let n = c
                    .outbound
                    .seal_udp_payload(now, &pkt, &mut rng, &mut buf)
                    .map_err(|e| e.to_string())?;
                s4500
                    .send_to(&buf[..n], c.peer_esp)
                    .map_err(|e| e.to_string())?;
                // Outbound traffic: on-demand DPD probes now if the peer has been silent.
                ike.note_outbound(now, c.peer_esp.ip());
                if let Some(ka) = keepalive.as_mut() {
                    ka.note_sent(now);
                }
                next_ping =
                    now + Duration::from_millis(if more { 500 } else { a.ping_interval_ms });
            }
        }
        // GRE packets through the SA (a `permit gre` crypto map).
        if let (Some(c), Some(dst), Some(src)) = (child.as_mut(), a.ping, a.ping_src) {
            // The next packet once the last one came back; the same one again after a
            // second without its echo (strongSwan may install its SA a moment late).
            let next = gre_sent < a.gre_echo && gre_back == gre_sent && now >= next_ping;
            let again = gre_back < gre_sent && now >= gre_retry_at;
            if a.gre_echo > 0 && (next || again) {
                let t = match gre.as_mut() {
                    Some(t) => t,
                    None => gre.insert(
                        GreTunnel::new(GreConfig::new(src, dst), now).map_err(|e| e.to_string())?,
                    ),
                };
                if next {
                    gre_sent += 1;
                }
                gre_retry_at = now + Duration::from_secs(1);
                let mut pkt = vec![0u8; 256];
                let n = t
                    .encapsulate(now, 0x0800, &gre_payload(gre_sent), &mut pkt)
                    .map_err(|e| format!("GRE: {e}"))?;
                let m = c
                    .outbound
                    .seal_udp_payload(now, &pkt[..n], &mut rng, &mut buf)
                    .map_err(|e| e.to_string())?;
                s4500
                    .send_to(&buf[..m], c.peer_esp)
                    .map_err(|e| e.to_string())?;
                println!(
                    "gre: sent GRE packet {gre_sent} {src} -> {dst} ({n} bytes) through the SA"
                );
                next_ping = now + Duration::from_millis(300);
            }
        }
        let c = *ike.counters();
        report_dpd(&c, &last_counters, current_peer.or(Some(a.peer)));
        last_counters = c;
        // Finished?
        let gre_done = a.gre_echo == 0 || gre_back >= a.gre_echo;
        let pinged = (a.ping.is_none() || a.gre_echo > 0 || replies >= a.count)
            && answered >= a.answer
            && gre_done;
        let backup_up = match (dead_at, &child) {
            (Some((_, dead)), Some(c)) => c.peer_esp.ip() != dead && pinged,
            _ => false,
        };
        if backup_up && !backup_reported {
            backup_reported = true;
            if let (Some((t, dead)), Some(c)) = (dead_at, &child) {
                let d = now.saturating_since(t);
                println!(
                    "dpd: backup peer {} up ({} -> {}), {replies}/{sent} pings through it, {}.{:03} s after {dead} was declared dead",
                    c.peer_esp.ip(),
                    dead,
                    c.peer_esp.ip(),
                    d.as_secs(),
                    d.as_millis() % 1000
                );
            }
        }
        let ready = if a.until_backup {
            backup_up
        } else if a.until_dead {
            dead_at.is_some()
        } else {
            child.is_some() && pinged
        };
        if done_at.is_none() && ready {
            if a.ping.is_some() {
                println!("ping: {replies}/{sent} replies");
            }
            if a.delete {
                let spi = child.as_ref().map_or(0, |c| c.inbound.spi());
                ike.delete_child(now, &mut rng, spi)
                    .map_err(|e| format!("delete: {e}"))?;
                let conns: Vec<u32> = ike.isakmp_status().map(|s| s.conn_id).collect();
                for c in conns {
                    let _ = ike.delete_ike_sa(now, &mut rng, c);
                }
                println!("ike: sent DELETE for the IPsec and IKE SAs");
            }
            done_at = Some(now);
        }
        if let Some(t) = done_at {
            let waited = !a.wait_delete || deleted_by_peer;
            // Linger a moment so DELETEs and late replies go out.
            if waited && now >= t + Duration::from_millis(500) + Duration::from_secs(a.linger) {
                return Ok(());
            }
        }
        std::thread::sleep(StdDuration::from_millis(2));
    }
}
