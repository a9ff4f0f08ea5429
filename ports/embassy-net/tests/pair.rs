//! Two embassy-net nodes in one process, on embassy's std executor and embassy-time's
//! std clock: outer stacks A (203.0.113.1) and B (203.0.113.2) joined by an in-memory
//! wire (two channel drivers and a task copying frames), an `IpsecRunner` on each, and
//! inner stacks 198.51.100.1 / 198.51.100.129 on their tunnels. A's inner UDP socket
//! sends to B's inner UDP echo server: the first datagram triggers IKE (acquire), Main
//! Mode + Quick Mode run over embassy-net UDP sockets, and the echo crosses the tunnel
//! both ways. The wire is a one-to-one NAT (A appears as 203.0.113.100), so NAT-T
//! floats IKE to 4500 and ESP goes in UDP, the form strongSwan needs. Real time,
//! bounded by a 60 s watchdog.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use embassy_executor::{Executor, Spawner};
use embassy_futures::select::{Either, select};
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{Config, IpEndpoint, Ipv4Cidr, Stack, StackResources, StaticConfigV4};
use embassy_net_driver_channel as ch;
use embassy_net_driver_channel::driver::{HardwareAddress, LinkState};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::channel::Channel;
use embassy_time::{Duration, Timer, with_timeout};
use hal_traits::{CipherAlg, DhGroup, HashAlg, MacAlg};
use ipsec_core::esp::{Encryption, Mode, Transform};
use ipsec_core::spd::{AddrRange, Selector};
use ipsec_embassy_net::{
    Engine, EngineConfig, Event, IpsecRunner, Resources, TunnelDevice, TunnelState, tunnel,
};
use ipsec_ike::v1::{CryptoMapEntry, IkeConfig, IsakmpPolicy, PresharedKey, TransformSet};
use ipsec_soft_crypto::{OsRng, SoftCrypto};

const WIRE_MTU: usize = 1500;
const TUN_MTU: usize = 1400;
type Runner = IpsecRunner<'static, SoftCrypto, OsRng>;

static DONE: AtomicBool = AtomicBool::new(false);
static ECHOES: AtomicU32 = AtomicU32::new(0);
static TUNNELS_UP: AtomicU32 = AtomicU32::new(0);
static ENCAPSULATED: AtomicU32 = AtomicU32::new(0);
static ESP_IN_UDP: AtomicU32 = AtomicU32::new(0);
static EVENTS: Channel<CriticalSectionRawMutex, Event, 8> = Channel::new();

fn leak<T>(t: T) -> &'static mut T {
    Box::leak(Box::new(t))
}

fn net(a: [u8; 4], len: u8) -> AddrRange {
    AddrRange::from_prefix(IpAddr::V4(Ipv4Addr::from(a)), len).unwrap()
}

fn ike_config(local: [u8; 4], peer: [u8; 4], lnet: AddrRange, rnet: AddrRange) -> IkeConfig {
    let mut cfg = IkeConfig::new(IpAddr::V4(local.into()));
    cfg.add_policy(IsakmpPolicy::new(
        10,
        CipherAlg::Aes128Cbc,
        HashAlg::Sha1,
        DhGroup::Modp1024,
    ))
    .unwrap();
    cfg.add_key(PresharedKey::address(IpAddr::V4(peer.into()), b"embassy-psk").unwrap())
        .unwrap();
    let mut e = CryptoMapEntry::new(10, Selector::new(lnet, rnet).unwrap());
    e.add_peer(IpAddr::V4(peer.into())).unwrap();
    let t = Transform {
        enc: Encryption::Cbc(CipherAlg::Aes128Cbc),
        auth: Some(MacAlg::HmacSha1_96),
    };
    e.add_transform_set(TransformSet::new("ts", t, Mode::Tunnel).unwrap())
        .unwrap();
    cfg.add_crypto_map(e).unwrap();
    cfg
}

fn stack_config(addr: [u8; 4]) -> Config {
    Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(Ipv4Addr::from(addr), 24),
        gateway: None,
        dns_servers: Default::default(),
    })
}

#[embassy_executor::task(pool_size = 2)]
async fn outer_net(mut r: embassy_net::Runner<'static, ch::Device<'static, WIRE_MTU>>) -> ! {
    r.run().await
}

#[embassy_executor::task(pool_size = 2)]
async fn inner_net(mut r: embassy_net::Runner<'static, TunnelDevice<'static, TUN_MTU>>) -> ! {
    r.run().await
}

#[embassy_executor::task(pool_size = 2)]
async fn ipsec(mut r: Runner) -> ! {
    r.run().await
}

/// A's real address and the address the NAT on the wire maps it to: B only ever sees
/// `NAT_ADDR`, so both sides detect the NAT, float to 4500 and use ESP-in-UDP.
const A_ADDR: [u8; 4] = [203, 0, 113, 1];
const NAT_ADDR: [u8; 4] = [203, 0, 113, 100];

fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Rewrites the source (`src = true`) or destination address of an IPv4 packet and fixes
/// the header and UDP checksums: a one-to-one NAT.
fn nat(p: &mut [u8], src: bool, from: [u8; 4], to: [u8; 4]) {
    let off = if src { 12 } else { 16 };
    if p[off..off + 4] != from {
        return;
    }
    p[off..off + 4].copy_from_slice(&to);
    let hl = usize::from(p[0] & 0x0f) * 4;
    p[10..12].copy_from_slice(&[0, 0]);
    let c = fold(sum16(&p[..hl], 0));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    if p[9] == 17 && p[hl + 6..hl + 8] != [0, 0] {
        let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
        p[hl + 6..hl + 8].copy_from_slice(&[0, 0]);
        let len = u32::try_from(total - hl).unwrap();
        let pseudo = sum16(&p[12..20], 17 + len);
        let c = fold(sum16(&p[hl..total], pseudo));
        let c = if c == 0 { 0xffff } else { c };
        p[hl + 6..hl + 8].copy_from_slice(&c.to_be_bytes());
    }
}

/// UDP to 4500 that is neither IKE (non-ESP marker) nor a keepalive.
fn is_esp_in_udp(p: &[u8]) -> bool {
    let hl = usize::from(p[0] & 0x0f) * 4;
    p[9] == 17
        && p[hl + 2..hl + 4] == [0x11, 0x94]
        && p.len() > hl + 12
        && p[hl + 8..hl + 12] != [0, 0, 0, 0]
}

/// The wire: frames from one channel driver's TX into the other's RX, through the NAT.
#[embassy_executor::task]
async fn wire(a: ch::Runner<'static, WIRE_MTU>, b: ch::Runner<'static, WIRE_MTU>) -> ! {
    let (sa, mut a_rx, mut a_tx) = a.split();
    let (sb, mut b_rx, mut b_tx) = b.split();
    sa.set_link_state(LinkState::Up);
    sb.set_link_state(LinkState::Up);
    loop {
        match select(a_tx.tx_buf(), b_tx.tx_buf()).await {
            Either::First(p) => {
                let n = p.len();
                if is_esp_in_udp(p) {
                    ESP_IN_UDP.fetch_add(1, Ordering::SeqCst);
                }
                let dst = b_rx.rx_buf().await;
                dst[..n].copy_from_slice(p);
                nat(&mut dst[..n], true, A_ADDR, NAT_ADDR);
                b_rx.rx_done(n);
                a_tx.tx_done();
            }
            Either::Second(p) => {
                let n = p.len();
                let dst = a_rx.rx_buf().await;
                dst[..n].copy_from_slice(p);
                nat(&mut dst[..n], false, NAT_ADDR, A_ADDR);
                a_rx.rx_done(n);
                b_tx.tx_done();
            }
        }
    }
}

fn udp(stack: Stack<'static>, port: u16) -> UdpSocket<'static> {
    let m = || leak([PacketMetadata::EMPTY; 4]).as_mut_slice();
    let b = || leak([0u8; 4096]).as_mut_slice();
    let mut s = UdpSocket::new(stack, m(), b(), m(), b());
    s.bind(port).unwrap();
    s
}

/// B's protected host: UDP echo on port 7.
#[embassy_executor::task]
async fn echo_server(stack: Stack<'static>) -> ! {
    let s = udp(stack, 7);
    let mut buf = [0u8; 512];
    loop {
        let (n, meta) = s.recv_from(&mut buf).await.unwrap();
        s.send_to(&buf[..n], meta).await.unwrap();
    }
}

/// A's protected host: send until three echoes came back through the tunnel.
#[embassy_executor::task]
async fn client(stack: Stack<'static>) {
    let s = udp(stack, 5000);
    let dst = IpEndpoint::new(Ipv4Addr::new(198, 51, 100, 129).into(), 7);
    let mut buf = [0u8; 512];
    for i in 0..100u32 {
        let msg = format!("echo {i} through ESP");
        s.send_to(msg.as_bytes(), dst).await.unwrap();
        if let Ok(Ok((n, from))) =
            with_timeout(Duration::from_millis(300), s.recv_from(&mut buf)).await
        {
            assert_eq!(&buf[..n], msg.as_bytes());
            assert_eq!(from.endpoint, dst);
            if ECHOES.fetch_add(1, Ordering::SeqCst) + 1 == 3 {
                break;
            }
        }
    }
    DONE.store(true, Ordering::SeqCst);
}

#[embassy_executor::task]
async fn events() {
    loop {
        if let Event::TunnelUp {
            crypto_map: 10,
            udp_encap,
            ..
        } = EVENTS.receive().await
        {
            TUNNELS_UP.fetch_add(1, Ordering::SeqCst);
            if udp_encap {
                ENCAPSULATED.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

#[embassy_executor::task]
async fn watchdog() {
    Timer::after(Duration::from_secs(60)).await;
    DONE.store(true, Ordering::SeqCst);
}

struct Node {
    outer_runner: ch::Runner<'static, WIRE_MTU>,
}

fn node(
    spawner: Spawner,
    outer: [u8; 4],
    inner: [u8; 4],
    cfg: IkeConfig,
    seed: u64,
) -> (Node, Stack<'static>) {
    let (outer_runner, outer_dev) = ch::new(
        leak(ch::State::<WIRE_MTU, 4, 4>::new()),
        HardwareAddress::Ip,
    );
    let (outer_stack, outer_net_runner) = embassy_net::new(
        outer_dev,
        stack_config(outer),
        leak(StackResources::<4>::new()),
        seed,
    );
    spawner.spawn(outer_net(outer_net_runner).unwrap());
    let (tun, tun_dev) = tunnel(leak(TunnelState::<TUN_MTU, 4, 4>::new()));
    let (inner_stack, inner_net_runner) = embassy_net::new(
        tun_dev,
        stack_config(inner),
        leak(StackResources::<4>::new()),
        seed + 1,
    );
    spawner.spawn(inner_net(inner_net_runner).unwrap());
    let engine = Engine::new(cfg, EngineConfig::default(), OsRng).unwrap();
    let runner: Runner = IpsecRunner::new(
        engine,
        outer_stack,
        leak(Resources::<8, 8192, 1600>::new()),
        tun,
    )
    .unwrap()
    .with_events(EVENTS.dyn_sender());
    spawner.spawn(ipsec(runner).unwrap());
    (Node { outer_runner }, inner_stack)
}

#[test]
fn echo_through_the_tunnel_between_two_embassy_stacks() {
    // Each node's engine (an `Ike` with the default 16 IKE SA slots, ~260 KB, and its
    // data plane) is built by value and moved into its runner and task: an unoptimised
    // build keeps several copies in `node`'s frame, past the test thread's 2 MiB. A
    // firmware puts the engine in a static (see examples/firmware); here a thread with
    // a larger stack does.
    let t = std::thread::Builder::new()
        .stack_size(16 << 20)
        .spawn(run_pair)
        .unwrap();
    if let Err(e) = t.join() {
        std::panic::resume_unwind(e);
    }
}

fn run_pair() {
    let executor = leak(Executor::new());
    executor.run_until(
        |spawner| {
            let lnet = net([198, 51, 100, 0], 25);
            let rnet = net([198, 51, 100, 128], 25);
            let b_addr = [203, 0, 113, 2];
            let (a, a_inner) = node(
                spawner,
                A_ADDR,
                [198, 51, 100, 1],
                ike_config(A_ADDR, b_addr, lnet, rnet),
                1,
            );
            // B knows A by the address the NAT gives it.
            let (b, b_inner) = node(
                spawner,
                b_addr,
                [198, 51, 100, 129],
                ike_config(b_addr, NAT_ADDR, rnet, lnet),
                3,
            );
            spawner.spawn(wire(a.outer_runner, b.outer_runner).unwrap());
            spawner.spawn(echo_server(b_inner).unwrap());
            spawner.spawn(client(a_inner).unwrap());
            spawner.spawn(events().unwrap());
            spawner.spawn(watchdog().unwrap());
        },
        || DONE.load(Ordering::SeqCst),
    );
    assert_eq!(
        ECHOES.load(Ordering::SeqCst),
        3,
        "three echoes through the tunnel"
    );
    assert_eq!(
        TUNNELS_UP.load(Ordering::SeqCst),
        2,
        "TunnelUp on both runners"
    );
    assert_eq!(
        ENCAPSULATED.load(Ordering::SeqCst),
        2,
        "NAT detected: ESP in UDP on both"
    );
    assert!(
        ESP_IN_UDP.load(Ordering::SeqCst) >= 3,
        "ESP-in-UDP on the wire"
    );
}
