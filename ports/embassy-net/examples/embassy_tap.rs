//! The embassy-net port on a real link: `IpsecRunner` on embassy's std executor, the
//! outer stack on a TAP device (`embassy-net-tuntap`, Ethernet), the protected side an
//! inner embassy-net stack on the tunnel, pinging through it with `PingManager`.
//! `tests/strongswan.sh` runs it against strongSwan.
//!
//! ```text
//! embassy_tap --tap smol0 --local 203.0.113.1/24 --peer 203.0.113.2 --psk KEY \
//!     --local-net 198.51.100.0/25 --remote-net 198.51.100.128/25 \
//!     --inner 198.51.100.1 --ping 198.51.100.129 [--count 3] [--timeout 30] [--linger 0]
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use embassy_executor::{Executor, Spawner};
use embassy_net::icmp::PacketMetadata;
use embassy_net::icmp::ping::{PingManager, PingParams};
use embassy_net::{Config, Ipv4Cidr, Stack, StackResources, StaticConfigV4};
use embassy_net_tuntap::TunTapDevice;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::channel::Channel;
use embassy_time::{Duration, Timer};
use hal_traits::{CipherAlg, DhGroup, HashAlg, MacAlg};
use ipsec_core::esp::{Encryption, Mode, Transform};
use ipsec_core::spd::{AddrRange, Selector};
use ipsec_embassy_net::{
    Engine, EngineConfig, Event, IpsecRunner, Resources, TunnelDevice, TunnelState, now, tunnel,
};
use ipsec_ike::v1::{CryptoMapEntry, IkeConfig, IsakmpPolicy, PresharedKey, TransformSet};
use ipsec_soft_crypto::{OsRng, SoftCrypto};

const MAP: u32 = 10;
const TUN_MTU: usize = 1400;
type Runner = IpsecRunner<'static, SoftCrypto, OsRng>;

static EVENTS: Channel<CriticalSectionRawMutex, Event, 8> = Channel::new();
static UP: AtomicBool = AtomicBool::new(false);
static ARGS: OnceLock<HashMap<String, String>> = OnceLock::new();

fn leak<T>(t: T) -> &'static mut T {
    Box::leak(Box::new(t))
}

fn arg(k: &str) -> Option<&'static str> {
    ARGS.get().and_then(|m| m.get(k)).map(String::as_str)
}

fn must(k: &str) -> &'static str {
    arg(k).unwrap_or_else(|| panic!("missing --{k}"))
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

fn stack_config(addr: Ipv4Addr, len: u8) -> Config {
    Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(addr, len),
        gateway: None,
        dns_servers: Default::default(),
    })
}

#[embassy_executor::task]
async fn outer_net(mut r: embassy_net::Runner<'static, TunTapDevice>) -> ! {
    r.run().await
}

#[embassy_executor::task]
async fn inner_net(mut r: embassy_net::Runner<'static, TunnelDevice<'static, TUN_MTU>>) -> ! {
    r.run().await
}

#[embassy_executor::task]
async fn ipsec(mut r: Runner) -> ! {
    r.run().await
}

#[embassy_executor::task]
async fn events() {
    loop {
        match EVENTS.receive().await {
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
                println!(
                    "ike: tunnel up map {crypto_map} peer {peer} in spi {inbound_spi:#010x} out spi {outbound_spi:#010x} encap {}",
                    if udp_encap {
                        "udp 4500"
                    } else {
                        "none (raw ESP)"
                    }
                );
                UP.store(true, Ordering::SeqCst);
            }
            other => println!("ike: {other:?}"),
        }
    }
}

/// Pings through the tunnel once it is up, then lingers and exits the process.
#[embassy_executor::task]
async fn pinger(stack: Stack<'static>) {
    let count: u32 = arg("count").unwrap_or("3").parse().unwrap();
    let linger = Duration::from_secs(arg("linger").unwrap_or("0").parse().unwrap());
    while !UP.load(Ordering::SeqCst) {
        Timer::after_millis(20).await;
    }
    if let Some(dst) = arg("ping") {
        let dst: Ipv4Addr = dst.parse().unwrap();
        let mut pm = PingManager::new(
            stack,
            leak([PacketMetadata::EMPTY; 4]),
            leak([0u8; 1024]),
            leak([PacketMetadata::EMPTY; 4]),
            leak([0u8; 1024]),
        );
        let mut params = PingParams::new(dst);
        params
            .set_payload(b"ipsec-embassy-net echo through ESP")
            .set_count(1)
            .set_timeout(Duration::from_secs(1));
        let (mut sent, mut replies) = (0, 0);
        while replies < count && sent < count * 4 {
            sent += 1;
            match pm.ping(&params).await {
                Ok(rtt) => {
                    replies += 1;
                    println!(
                        "ping: reply {replies} from {dst} in {} ms (decrypted from ESP)",
                        rtt.as_millis()
                    );
                }
                Err(e) => println!("ping: request {sent}: {e:?}"),
            }
        }
        println!("ping: {replies}/{sent} replies");
        if replies < count {
            std::process::exit(1);
        }
    }
    Timer::after(linger).await;
    std::process::exit(0);
}

#[embassy_executor::task]
async fn watchdog(secs: u64) {
    Timer::after_secs(secs).await;
    println!("timeout after {secs} s");
    std::process::exit(1);
}

fn init(spawner: Spawner) {
    let (local, local_len) = prefix(must("local"));
    let peer: Ipv4Addr = must("peer").parse().unwrap();
    let inner_addr: Ipv4Addr = must("inner").parse().unwrap();

    let mut cfg = IkeConfig::new(IpAddr::V4(local));
    cfg.add_policy(IsakmpPolicy::new(
        10,
        CipherAlg::Aes128Cbc,
        HashAlg::Sha1,
        DhGroup::Modp2048,
    ))
    .unwrap();
    cfg.add_key(PresharedKey::address(IpAddr::V4(peer), must("psk").as_bytes()).unwrap())
        .unwrap();
    let mut entry = CryptoMapEntry::new(
        MAP,
        Selector::new(range(must("local-net")), range(must("remote-net"))).unwrap(),
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

    let tap = must("tap");
    let mut dev = TunTapDevice::new(tap).unwrap_or_else(|e| panic!("open TAP {tap}: {e}"));
    dev.set_hardware_address([0x02, 0x45, 0x4d, 0x42, 0x00, 0x01]);
    let seed = u64::from(std::process::id());
    let (outer, outer_runner) = embassy_net::new(
        dev,
        stack_config(local, local_len),
        leak(StackResources::<4>::new()),
        seed,
    );
    spawner.spawn(outer_net(outer_runner).unwrap());
    let (tun, tun_dev) = tunnel(leak(TunnelState::<TUN_MTU, 4, 4>::new()));
    // /24: the peer's protected /25 is on-link for this medium-IP interface.
    let (inner, inner_runner) = embassy_net::new(
        tun_dev,
        stack_config(inner_addr, 24),
        leak(StackResources::<4>::new()),
        seed + 1,
    );
    spawner.spawn(inner_net(inner_runner).unwrap());

    let engine = Engine::new(cfg, EngineConfig::default(), OsRng).unwrap();
    let mut runner: Runner =
        IpsecRunner::new(engine, outer, leak(Resources::<8, 8192, 1600>::new()), tun)
            .unwrap()
            .with_events(EVENTS.dyn_sender());
    runner.engine_mut().initiate(now(), MAP).unwrap();
    println!("embassy: {local}/{local_len} on {tap}, inner {inner_addr}, peer {peer}");
    println!("ike: initiating crypto map entry {MAP} to {peer}");
    spawner.spawn(ipsec(runner).unwrap());
    spawner.spawn(events().unwrap());
    spawner.spawn(pinger(inner).unwrap());
    spawner.spawn(watchdog(arg("timeout").unwrap_or("30").parse().unwrap()).unwrap());
}

fn main() {
    let mut m = HashMap::new();
    let mut it = std::env::args().skip(1).peekable();
    while let Some(k) = it.next() {
        let v = match it.peek() {
            Some(v) if !v.starts_with("--") => it.next().unwrap(),
            _ => "true".into(),
        };
        m.insert(k.trim_start_matches("--").to_string(), v);
    }
    ARGS.set(m).unwrap();
    leak(Executor::new()).run(init);
}
