//! The smoltcp port on a real link: `IpsecStack` on smoltcp's `TunTapInterface` (a TAP
//! device, Ethernet medium: smoltcp answers ARP itself), negotiating IKEv1 with a peer
//! (strongSwan in `tests/strongswan.sh`) and pinging through the tunnel with smoltcp's
//! own ICMP socket on a second interface over the `TunnelDevice`.
//!
//! ```text
//! smoltcp_tun --tap smol0 --local 203.0.113.1/24 --peer 203.0.113.2 --psk KEY \
//!     --local-net 198.51.100.0/25 --remote-net 198.51.100.128/25 \
//!     --inner 198.51.100.1 --ping 198.51.100.129 [--count 3] [--timeout 30] \
//!     [--linger 0] [--respond] [--group modp2048|modp1024]
//! ```
//!
//! It prints one line per event (`ike:`), per echo reply (`ping:`), and the counters at
//! the end; exit status 0 when `--count` replies came back (or, with `--respond`, when
//! the tunnel came up), 1 otherwise. Needs root (TUN/TAP) and an existing TAP device.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::Instant as StdInstant;

use hal_traits::{CipherAlg, DhGroup, HashAlg, MacAlg};
use ipsec_core::esp::{Encryption, Mode, Transform};
use ipsec_core::spd::{AddrRange, Selector};
use ipsec_ike::v1::{CryptoMapEntry, IkeConfig, IsakmpPolicy, PresharedKey, TransformSet};
use ipsec_smoltcp::smoltcp;
use ipsec_smoltcp::time::from_smoltcp;
use ipsec_smoltcp::{Engine, EngineConfig, Event, IpsecStack, TunnelDevice};
use ipsec_soft_crypto::{OsRng, SoftCrypto};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{Medium, TunTapInterface, wait as phy_wait};
use smoltcp::socket::{icmp, udp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr,
};

const MAP: u32 = 10;
const IDENT: u16 = 0x4950;

fn args() -> HashMap<String, String> {
    let mut m = HashMap::new();
    let mut it = std::env::args().skip(1).peekable();
    while let Some(k) = it.next() {
        let k = k.trim_start_matches("--").to_string();
        let v = match it.peek() {
            Some(v) if !v.starts_with("--") => it.next().unwrap(),
            _ => "true".into(),
        };
        m.insert(k, v);
    }
    m
}

fn prefix(s: &str) -> (Ipv4Addr, u8) {
    let (a, l) = s.split_once('/').expect("ADDR/LEN");
    (
        a.parse().expect("address"),
        l.parse().expect("prefix length"),
    )
}

fn range(s: &str) -> AddrRange {
    let (a, l) = prefix(s);
    AddrRange::from_prefix(IpAddr::V4(a), l).expect("prefix")
}

fn main() -> ExitCode {
    let a = args();
    let get = |k: &str| a.get(k).unwrap_or_else(|| panic!("missing --{k}")).clone();
    let opt = |k: &str, d: &str| a.get(k).cloned().unwrap_or_else(|| d.into());
    let (local, local_len) = prefix(&get("local"));
    let peer: Ipv4Addr = get("peer").parse().expect("--peer");
    let inner_addr: Ipv4Addr = get("inner").parse().expect("--inner");
    let ping: Option<Ipv4Addr> = a.get("ping").map(|p| p.parse().expect("--ping"));
    let count: usize = opt("count", "3").parse().expect("--count");
    let timeout = Duration::from_secs(opt("timeout", "30").parse().expect("--timeout"));
    let linger = Duration::from_secs(opt("linger", "0").parse().expect("--linger"));
    let respond = a.contains_key("respond");
    let group = match opt("group", "modp2048").as_str() {
        "modp1024" => DhGroup::Modp1024,
        "modp1536" => DhGroup::Modp1536,
        _ => DhGroup::Modp2048,
    };

    // --- IKE configuration: one crypto map entry, like `ipsec ike connect`. ---
    let mut cfg = IkeConfig::new(IpAddr::V4(local));
    cfg.add_policy(IsakmpPolicy::new(
        10,
        CipherAlg::Aes128Cbc,
        HashAlg::Sha1,
        group,
    ))
    .unwrap();
    cfg.add_key(PresharedKey::address(IpAddr::V4(peer), get("psk").as_bytes()).unwrap())
        .unwrap();
    let mut entry = CryptoMapEntry::new(
        MAP,
        Selector::new(range(&get("local-net")), range(&get("remote-net"))).unwrap(),
    );
    entry.add_peer(IpAddr::V4(peer)).unwrap();
    let t = Transform {
        enc: Encryption::Cbc(CipherAlg::Aes128Cbc),
        auth: Some(MacAlg::HmacSha1_96),
    };
    entry
        .add_transform_set(TransformSet::new("ts", t, Mode::Tunnel).unwrap())
        .unwrap();
    cfg.add_crypto_map(entry).unwrap();
    let engine: Engine<SoftCrypto, OsRng> =
        Engine::new(cfg, EngineConfig::default(), OsRng).unwrap();

    // --- The outer side: smoltcp on the TAP device. ---
    let start = StdInstant::now();
    let clock =
        || Instant::from_millis(i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX));
    let tap = get("tap");
    let mut device = TunTapInterface::new(&tap, Medium::Ethernet)
        .unwrap_or_else(|e| panic!("open TAP {tap}: {e}"));
    let fd = device.as_raw_fd();
    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress([
        0x02, 0x53, 0x4d, 0x4f, 0x4c, 0x01,
    ])));
    config.random_seed = u64::from(std::process::id());
    let mut iface = Interface::new(config, &mut device, clock());
    iface.update_ip_addrs(|ips| {
        ips.push(IpCidr::new(IpAddress::Ipv4(local), local_len))
            .unwrap()
    });
    let mut sockets = SocketSet::new(vec![]);
    let udp_socket = || {
        let b = || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 16 * 1600]);
        udp::Socket::new(b(), b())
    };
    let mut stack: IpsecStack<SoftCrypto, OsRng> =
        IpsecStack::new(engine, &mut sockets, udp_socket(), udp_socket()).unwrap();

    // --- The protected side: a second smoltcp interface on the tunnel. ---
    let mut tunnel: TunnelDevice<8, 1400> = TunnelDevice::new();
    let mut inner = Interface::new(Config::new(HardwareAddress::Ip), &mut tunnel, clock());
    // /24: the peer's protected /25 is on-link for this medium-IP interface.
    inner.update_ip_addrs(|ips| {
        ips.push(IpCidr::new(IpAddress::Ipv4(inner_addr), 24))
            .unwrap()
    });
    let mut inner_sockets = SocketSet::new(vec![]);
    let icmp_buf = || icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], vec![0; 4096]);
    let mut icmp_socket = icmp::Socket::new(icmp_buf(), icmp_buf());
    icmp_socket.bind(icmp::Endpoint::Ident(IDENT)).unwrap();
    let icmp_h = inner_sockets.add(icmp_socket);

    println!("smoltcp: {local}/{local_len} on {tap}, inner {inner_addr}, peer {peer}");
    if !respond {
        stack
            .engine_mut()
            .initiate(from_smoltcp(clock()), MAP)
            .unwrap();
        println!("ike: initiating crypto map entry {MAP} to {peer}");
    }

    let deadline = clock() + timeout;
    let (mut sent, mut replies, mut next_ping) = (0u16, 0usize, clock());
    let mut up = false;
    let mut done_at: Option<Instant> = None;
    let ok = loop {
        let now = clock();
        if now >= deadline {
            println!(
                "timeout after {} s (pings {replies}/{sent})",
                timeout.secs()
            );
            break false;
        }
        // Until quiet: an echo request delivered to the inner interface is answered at
        // once, and that answer must go out through the stack in the same round.
        for _ in 0..8 {
            inner.poll(now, &mut tunnel, &mut inner_sockets);
            let busy = stack.poll(now, &mut iface, &mut device, &mut sockets, &mut tunnel);
            inner.poll(now, &mut tunnel, &mut inner_sockets);
            if !busy && tunnel.pending_outbound() == 0 {
                break;
            }
        }
        while let Some(ev) = stack.engine_mut().poll_event() {
            match ev {
                Event::Phase1Up { peer, nat } => println!(
                    "ike: phase 1 established with {peer} nat local={} remote={}",
                    nat.local_behind_nat, nat.remote_behind_nat
                ),
                Event::TunnelUp {
                    crypto_map,
                    peer,
                    inbound_spi,
                    outbound_spi,
                    udp_encap,
                } => {
                    up = true;
                    println!(
                        "ike: tunnel up map {crypto_map} peer {peer} in spi {inbound_spi:#010x} out spi {outbound_spi:#010x} encap {}",
                        if udp_encap {
                            "udp 4500"
                        } else {
                            "none (raw ESP)"
                        }
                    );
                }
                Event::NegotiationFailed { peer, reason, .. } => {
                    println!("ike: negotiation with {peer} failed: {reason:?}")
                }
                other => println!("ike: {other:?}"),
            }
        }
        // smoltcp's own ICMP echo, through the tunnel.
        let s = inner_sockets.get_mut::<icmp::Socket>(icmp_h);
        while let Ok((p, from)) = s.recv() {
            if let Ok(Icmpv4Repr::EchoReply { seq_no, data, .. }) =
                Icmpv4Repr::parse(&Icmpv4Packet::new_checked(p).unwrap(), &Default::default())
            {
                replies += 1;
                println!(
                    "ping: reply {replies} from {from} seq {seq_no} ({} bytes, decrypted from ESP)",
                    data.len()
                );
            }
        }
        if let Some(dst) = ping {
            // Keep pinging until `count` replies: the first echo only triggers nothing
            // (we initiated already) but the peer installs its SA a moment after QM3.
            if up
                && replies < count
                && now >= next_ping
                && s.can_send()
                && usize::from(sent) < count * 4
            {
                sent += 1;
                let data = b"ipsec-smoltcp echo through ESP..";
                let repr = Icmpv4Repr::EchoRequest {
                    ident: IDENT,
                    seq_no: sent,
                    data,
                };
                let buf = s.send(repr.buffer_len(), IpAddress::Ipv4(dst)).unwrap();
                repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &Default::default());
                next_ping = now + Duration::from_millis(500);
            }
        }
        let finished = up && (ping.is_none() || replies >= count);
        if finished && done_at.is_none() {
            if ping.is_some() {
                println!("ping: {replies}/{sent} replies");
            }
            done_at = Some(now);
        }
        if done_at.is_some_and(|t| now >= t + linger) {
            break true;
        }
        // Sleep until smoltcp or the engine needs us, a packet arrives, or the next ping.
        let now = clock();
        let mut wake = [
            stack.poll_at(now, &mut iface, &sockets),
            inner.poll_at(now, &inner_sockets),
            Some(now + Duration::from_millis(100)),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap();
        if ping.is_some() && up && replies < count {
            wake = wake.min(next_ping);
        }
        let delay = if wake > now {
            Some(wake - now)
        } else {
            Some(Duration::ZERO)
        };
        phy_wait(fd, delay).ok();
    };

    // Counters, then a clean shutdown (DELETE notifies).
    let c = *stack.counters();
    println!(
        "counters: ike tx {} rx {}, esp tx {} rx {}, dropped rx {} tx {}, socket errors {}",
        c.ike_tx, c.ike_rx, c.esp_tx, c.esp_rx, c.rx_dropped, c.tx_dropped, c.socket_errors
    );
    let dp = stack.engine().dataplane();
    for (_, sa) in dp.inbound_sas() {
        println!(
            "esp: inbound spi {:#010x} decaps {} ",
            sa.spi(),
            sa.counters().decaps
        );
    }
    for (_, sa) in dp.outbound_sas() {
        println!(
            "esp: outbound spi {:#010x} encaps {}",
            sa.spi(),
            sa.counters().encaps
        );
    }
    let now = clock();
    stack.engine_mut().shutdown(from_smoltcp(now));
    let end = now + Duration::from_millis(500);
    while clock() < end {
        let now = clock();
        while stack.poll(now, &mut iface, &mut device, &mut sockets, &mut tunnel) {}
        phy_wait(fd, Some(Duration::from_millis(20))).ok();
    }
    println!("ike: sent DELETE for the IPsec and IKE SAs");
    if ok || (respond && up) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
