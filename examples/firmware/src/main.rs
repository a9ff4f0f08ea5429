//! Cortex-M4 firmware example: two IPsec gateways in the RAM of one microcontroller.
//!
//! Run under QEMU (`cargo run --release` in this folder; the runner is
//! `qemu-system-arm -M mps2-an386` with semihosting, see `.cargo/config.toml`):
//!
//! 1. gateway A (192.0.2.1, LAN 10.1.0.0/16) and gateway B (198.51.100.2, LAN
//!    10.2.0.0/16) are built in statics: IKEv1 control plane (`Ike`), ESP data plane
//!    (`Dataplane`: SPD + two SADBs), and an RNG each;
//! 2. a ping from A's LAN hits the SPD's protect policy with no SA (the IOS "acquire"),
//!    so A initiates: Main Mode (PSK, AES-128-CBC, SHA-1, MODP group 14) and Quick Mode
//!    (ESP AES-128-CBC + HMAC-SHA1-96, tunnel) run over an in-memory UDP network on a
//!    virtual clock; the child SAs are installed into both data planes;
//! 3. pings go both ways through the tunnels (encapsulate, decapsulate, reply), one
//!    ESP packet is replayed to show the anti-replay drop, and the `show crypto ipsec sa`
//!    style counters are printed;
//! 4. DPD: the library does not (yet) have DPD timers, so this says so; it only shows
//!    the one thing that exists, a manual R-U-THERE answered with R-U-THERE-ACK;
//! 5. sizes of the main state structs and the stack high-water mark per phase (stack
//!    painting) are printed, then the program exits through semihosting with success
//!    or failure.
//!
//! Output goes through semihosting (`hprintln`). defmt would need a debug probe (RTT)
//! that QEMU does not emulate, so plain semihosting text is used; no key byte is ever
//! printed (SPIs are public, they travel in the clear).
//!
//! Nothing large is kept on the stack: the control and data planes are in `StaticCell`s,
//! the network and packet buffers in `ConstStaticCell`s (zero-initialised in .bss, no
//! copy at all). The library's by-value constructors still cost a stack temporary once,
//! at boot (measured: "setup").
//!
//! The RNG is a **demo RNG, not secure**: a deterministic DRBG seeded by a constant
//! (see `rng.rs`). A product uses its TRNG.
#![no_std]
#![no_main]

mod node;
mod ping;
mod rng;
mod stack;

use core::mem::size_of;
use core::net::{IpAddr, Ipv4Addr};

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use hal_traits::{CipherAlg, DhGroup, HashAlg, MacAlg};
use ipsec_core::dataplane::{Dataplane, DataplaneError, Inbound, Outbound};
use ipsec_core::esp::{Encryption, Mode, Transform};
use ipsec_core::sadb::Sadb;
use ipsec_core::spd::{AddrRange, Policy, PolicyAction, Selector};
use ipsec_core::{Duration, Instant};
use ipsec_ike::v1::{
    ChildSa, CryptoMapEntry, Ike, IkeConfig, IkeEvent, IsakmpPolicy, PresharedKey, TransformSet,
};
use ipsec_soft_crypto::{SoftCrypto, SoftDh};
use static_cell::{ConstStaticCell, StaticCell};

use node::{FwDataplane, FwEspSa, FwIke, Node, Wire, ctx};
use ping::{ECHO_REPLY, ECHO_REQUEST, Echo};
use rng::DemoRng;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprintln!("PANIC: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}

// ----------------------------------------------------------------- the setup --

const GW_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const GW_B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const LAN_A: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 0);
const LAN_B: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 0);
const HOST_A: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 10);
const HOST_B: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 20);
/// `crypto map VPN 10`: the data plane's `sa_group`.
const MAP: u32 = 10;
/// Phase-1 group. Group 14 (2048-bit) is the default of IOS and strongSwan; the
/// `modp1024` feature selects group 2 (1024-bit, legacy) to compare the bignum cost.
#[cfg(not(feature = "modp1024"))]
const GROUP: DhGroup = DhGroup::Modp2048;
#[cfg(feature = "modp1024")]
const GROUP: DhGroup = DhGroup::Modp1024;
/// A demo pre-shared key; never printed.
const PSK: &[u8] = b"firmware-demo-psk";
/// Pings each way.
const PINGS: u16 = 3;
/// ICMP payload bytes per ping (the classic 56).
const PING_PAYLOAD: usize = 56;

/// Virtual time the run starts at.
const T0: Instant = Instant::from_secs(1);

static NODE_A: StaticCell<Node> = StaticCell::new();
static NODE_B: StaticCell<Node> = StaticCell::new();
static IKE_A: StaticCell<FwIke> = StaticCell::new();
static IKE_B: StaticCell<FwIke> = StaticCell::new();
static DP_A: StaticCell<FwDataplane> = StaticCell::new();
static DP_B: StaticCell<FwDataplane> = StaticCell::new();
static WIRE: ConstStaticCell<Wire> = ConstStaticCell::new(Wire::new());
static BUFS: ConstStaticCell<Bufs> = ConstStaticCell::new(Bufs::new());

/// Packet buffers of the ESP path.
struct Bufs {
    /// Inner (cleartext) packet.
    plain: [u8; 1600],
    /// ESP packet on the wire.
    wire: [u8; 1600],
    /// A copy of one ESP packet, replayed later.
    replay: [u8; 1600],
    replay_len: usize,
}

impl Bufs {
    const fn new() -> Self {
        Self {
            plain: [0; 1600],
            wire: [0; 1600],
            replay: [0; 1600],
            replay_len: 0,
        }
    }
}

const fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

fn lan(a: Ipv4Addr) -> Result<AddrRange, &'static str> {
    ctx(AddrRange::from_prefix(v4(a), 16), "LAN prefix")
}

/// `crypto isakmp policy 10 / encr aes / hash sha / authentication pre-share / group 14`,
/// `crypto isakmp key ... address <peer>`, `crypto ipsec transform-set ESP-AES-SHA
/// esp-aes esp-sha-hmac`, `crypto map VPN 10 / set peer / match address`.
#[inline(never)]
fn ike_config(c: &mut IkeConfig, peer: Ipv4Addr, selector: Selector) -> Result<(), &'static str> {
    ctx(
        c.add_policy(IsakmpPolicy::new(
            10,
            CipherAlg::Aes128Cbc,
            HashAlg::Sha1,
            GROUP,
        )),
        "isakmp policy",
    )?;
    let key = ctx(PresharedKey::address(v4(peer), PSK), "isakmp key")?;
    ctx(c.add_key(key), "isakmp key")?;
    let esp = Transform {
        enc: Encryption::Cbc(CipherAlg::Aes128Cbc),
        auth: Some(MacAlg::HmacSha1_96),
    };
    let ts = ctx(
        TransformSet::new("ESP-AES-SHA", esp, Mode::Tunnel),
        "transform set",
    )?;
    let mut map = CryptoMapEntry::new(MAP, selector);
    ctx(map.add_peer(v4(peer)), "set peer")?;
    ctx(map.add_transform_set(ts), "set transform-set")?;
    ctx(c.add_crypto_map(map), "crypto map")?;
    Ok(())
}

/// Builds a control plane in its static. `Ike::new` returns ~47 KB by value; kept out
/// of line, LLVM writes most of it straight into the static, but this frame still holds
/// a ~17.6 KB temporary (measured: README). Only a const or in-place constructor in
/// ipsec-ike would remove it.
#[inline(never)]
fn init_ike(cell: &'static StaticCell<FwIke>, config: IkeConfig) -> &'static mut FwIke {
    cell.init_with(|| Ike::new(config))
}

/// The same for the data plane (13 KB; this frame measures ~19.5 KB). `Dataplane::new`
/// is built only of const constructors; were it a `const fn`, a `ConstStaticCell` would
/// need no stack at all.
#[inline(never)]
fn init_dataplane(cell: &'static StaticCell<FwDataplane>) -> &'static mut FwDataplane {
    cell.init_with(|| Dataplane::new(PolicyAction::Discard))
}

#[allow(clippy::too_many_arguments)]
fn make_node(
    cell: &'static StaticCell<Node>,
    ike: &'static StaticCell<FwIke>,
    dp: &'static StaticCell<FwDataplane>,
    name: &'static str,
    addr: Ipv4Addr,
    peer: Ipv4Addr,
    local_lan: Ipv4Addr,
    remote_lan: Ipv4Addr,
) -> Result<&'static mut Node, &'static str> {
    let selector = ctx(Selector::new(lan(local_lan)?, lan(remote_lan)?), "selector")?;
    // Filled in place: IkeConfig is ~4 KB, every move of it is a stack copy.
    let mut config = IkeConfig::new(v4(addr));
    ike_config(&mut config, peer, selector)?;
    let rng = ctx(DemoRng::new(name.as_bytes()), "demo rng")?;
    // The stack cost of this step is measured below ("setup").
    let ike = init_ike(ike, config);
    let dp = init_dataplane(dp);
    let node = cell.init_with(move || Node {
        name,
        addr,
        ike,
        dp,
        rng,
        conn_id: None,
        children: 0,
        failures: 0,
        rx_errors: 0,
    });
    ctx(
        node.dp.spd_mut().insert(Policy {
            seq: MAP,
            selector,
            action: PolicyAction::Protect { sa_group: MAP },
        }),
        "SPD policy",
    )?;
    Ok(node)
}

/// Host time in centiseconds (semihosting `SYS_CLOCK`: wall clock of the QEMU process,
/// 10 ms resolution). Only used to report how long each phase takes under emulation.
fn host_cs() -> usize {
    // SAFETY: SYS_CLOCK takes no argument and has no side effect.
    unsafe { cortex_m_semihosting::syscall!(CLOCK) }
}

struct Phase {
    name: &'static str,
    stack: usize,
    host_ms: usize,
}

/// Ends a phase: reads the stack high-water mark and host time, repaints.
fn end_phase(name: &'static str, started_cs: usize) -> Phase {
    let p = Phase {
        name,
        stack: stack::high_water(),
        host_ms: host_cs().saturating_sub(started_cs) * 10,
    };
    hprintln!("stack: {}: {}", p.name, p.stack);
    hprintln!("time: {}: {} ms", p.name, p.host_ms);
    stack::paint();
    p
}

// ------------------------------------------------------------------ the ESP path --

/// One ping `src -> dst` from `from`'s LAN and its echo reply from `to`'s LAN, both
/// through the tunnel. Returns the ESP length of the request.
#[allow(clippy::too_many_arguments)]
fn ping(
    now: Instant,
    from: &mut Node,
    to: &mut Node,
    bufs: &mut Bufs,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    seq: u16,
    keep_copy: bool,
) -> Result<usize, &'static str> {
    let req = Echo {
        src,
        dst,
        kind: ECHO_REQUEST,
        id: 0x4d34,
        seq,
        payload_len: PING_PAYLOAD,
    };
    let n = ping::build(&mut bufs.plain, &req).ok_or("build echo request")?;
    let plain = bufs.plain.get(..n).ok_or("echo request length")?;
    let esp_len = match ctx(
        from.dp
            .process_outbound(now, plain, &mut from.rng, &mut bufs.wire),
        "outbound",
    )? {
        Outbound::Protected { len, .. } => len,
        Outbound::Bypass => return Err("request bypassed the tunnel"),
    };
    if keep_copy {
        let src = bufs.wire.get(..esp_len).ok_or("copy")?;
        bufs.replay
            .get_mut(..esp_len)
            .ok_or("copy")?
            .copy_from_slice(src);
        bufs.replay_len = esp_len;
    }
    // On the wire: outer IPv4, protocol 50.
    let packet = bufs.wire.get_mut(..esp_len).ok_or("esp length")?;
    let got = match ctx(to.dp.process_inbound(now, packet), "inbound")? {
        Inbound::Decapsulated { packet, .. } => {
            ping::parse(packet).ok_or("decapsulated request is not our echo")?
        }
        _ => return Err("request was not decapsulated"),
    };
    if got != req {
        return Err("request changed in transit");
    }
    let rep = Echo {
        src: dst,
        dst: src,
        kind: ECHO_REPLY,
        ..req
    };
    let n = ping::build(&mut bufs.plain, &rep).ok_or("build echo reply")?;
    let plain = bufs.plain.get(..n).ok_or("echo reply length")?;
    let len = match ctx(
        to.dp
            .process_outbound(now, plain, &mut to.rng, &mut bufs.wire),
        "outbound reply",
    )? {
        Outbound::Protected { len, .. } => len,
        Outbound::Bypass => return Err("reply bypassed the tunnel"),
    };
    let packet = bufs.wire.get_mut(..len).ok_or("esp length")?;
    let got = match ctx(from.dp.process_inbound(now, packet), "inbound reply")? {
        Inbound::Decapsulated { packet, .. } => {
            ping::parse(packet).ok_or("decapsulated reply is not our echo")?
        }
        _ => return Err("reply was not decapsulated"),
    };
    if got != rep {
        return Err("reply changed in transit");
    }
    hprintln!(
        "  {} -> {}: echo seq {} ({} B inner, {} B ESP) ... reply ok",
        src,
        dst,
        seq,
        n,
        esp_len
    );
    Ok(esp_len)
}

fn print_esp(n: &Node) {
    for (_, sa) in n.dp.outbound_sas() {
        let c = sa.counters();
        hprintln!(
            "  {} outbound spi {:#010x}: #pkts encaps {} encrypt {} digest {}, send errors {}",
            n.name,
            sa.spi(),
            c.encaps,
            c.encrypt,
            c.digest,
            c.send_errors
        );
    }
    for (_, sa) in n.dp.inbound_sas() {
        let c = sa.counters();
        hprintln!(
            "  {} inbound  spi {:#010x}: #pkts decaps {} decrypt {} verify {}, replay failed {}, verify failed {}, recv errors {}",
            n.name,
            sa.spi(),
            c.decaps,
            c.decrypt,
            c.verify,
            c.replay_failed,
            c.verify_failed,
            c.recv_errors
        );
    }
    let d = n.dp.counters();
    hprintln!(
        "  {} data plane: no_sa (acquires) {}, invalid_sa {}, policy_discard {}",
        n.name,
        d.no_sa,
        d.invalid_sa,
        d.policy_discard
    );
}

// ------------------------------------------------------------------------ run --

fn run() -> Result<(), &'static str> {
    let t_start = host_cs();
    hprintln!("ipsec firmware example: Cortex-M4 (QEMU mps2-an386), no heap, semihosting output");
    hprintln!("RNG: demo RNG, not secure (deterministic DRBG seeded by a constant)");

    // ---- setup: statics.
    let t = host_cs();
    let a = make_node(&NODE_A, &IKE_A, &DP_A, "A", GW_A, GW_B, LAN_A, LAN_B)?;
    let b = make_node(&NODE_B, &IKE_B, &DP_B, "B", GW_B, GW_A, LAN_B, LAN_A)?;
    let wire = WIRE.take();
    wire.now = T0;
    wire.latency = Duration::from_millis(5);
    let bufs = BUFS.take();
    let setup = end_phase("setup", t);

    // ---- 1. IKE: the first packet is the trigger.
    hprintln!(
        "1. IKEv1 Main Mode + Quick Mode (PSK, aes128-sha1, MODP group {}), A initiates",
        GROUP.number()
    );
    let t = host_cs();
    let req = Echo {
        src: HOST_A,
        dst: HOST_B,
        kind: ECHO_REQUEST,
        id: 1,
        seq: 0,
        payload_len: PING_PAYLOAD,
    };
    let n = ping::build(&mut bufs.plain, &req).ok_or("build echo")?;
    let plain = bufs.plain.get(..n).ok_or("echo length")?;
    match a
        .dp
        .process_outbound(wire.now, plain, &mut a.rng, &mut bufs.wire)
    {
        Err(DataplaneError::NoSa { sa_group }) => {
            hprintln!(
                "  [A t={}ms] {} -> {}: no SA for crypto map {}: initiating",
                wire.now.as_millis(),
                HOST_A,
                HOST_B,
                sa_group
            );
            ctx(a.ike.initiate(wire.now, &mut a.rng, sa_group), "initiate")?;
        }
        other => {
            hprintln!("unexpected first packet result: {:?}", other.map(|_| ()));
            return Err("the first packet did not trigger IKE");
        }
    }
    let t_ike0 = wire.now;
    wire.run_until(a, b, Duration::from_secs(60), |a, b| {
        a.children >= 1 && b.children >= 1
    })?;
    hprintln!(
        "  SAs up after {} ms of virtual time, {} IKE datagrams (largest {} B), {} retransmissions",
        (wire.now - t_ike0).as_millis(),
        wire.sent,
        wire.largest,
        a.ike.counters().retransmits + b.ike.counters().retransmits
    );
    if a.failures + b.failures + a.rx_errors + b.rx_errors != 0 {
        return Err("IKE reported failures");
    }
    let ike = end_phase("IKE handshake", t);

    // ---- 2. ESP both ways.
    hprintln!("2. ESP through the installed SAs: {} pings each way", PINGS);
    let t = host_cs();
    for seq in 1..=PINGS {
        wire.now = wire.now + Duration::from_millis(1000);
        ping(wire.now, a, b, bufs, HOST_A, HOST_B, seq, seq == 1)?;
    }
    for seq in 1..=PINGS {
        wire.now = wire.now + Duration::from_millis(1000);
        ping(wire.now, b, a, bufs, HOST_B, HOST_A, seq, false)?;
    }
    // Replay A's first ESP packet to B: the anti-replay window must drop it.
    let replay = bufs
        .replay
        .get_mut(..bufs.replay_len)
        .ok_or("replay copy")?;
    match b.dp.process_inbound(wire.now, replay) {
        Err(DataplaneError::Esp(e)) => hprintln!("  replayed ESP packet dropped by B: {:?}", e),
        Err(e) => {
            hprintln!("  replayed ESP packet: unexpected {:?}", e);
            return Err("replay not dropped as a replay");
        }
        Ok(_) => return Err("replayed ESP packet accepted"),
    }
    print_esp(a);
    print_esp(b);
    let mut sent = 0;
    let mut received = 0;
    let mut replayed = 0;
    for n in [&*a, &*b] {
        sent +=
            n.dp.outbound_sas()
                .map(|(_, s)| s.counters().encaps)
                .sum::<u64>();
        received +=
            n.dp.inbound_sas()
                .map(|(_, s)| s.counters().decaps)
                .sum::<u64>();
        replayed +=
            n.dp.inbound_sas()
                .map(|(_, s)| s.counters().replay_failed)
                .sum::<u64>();
    }
    let expect = u64::from(PINGS) * 4;
    if sent != expect || received != expect || replayed != 1 {
        return Err("ESP counters do not add up");
    }
    let esp = end_phase("ESP path", t);

    // ---- 3. DPD.
    hprintln!("3. DPD to a silent peer");
    let t = host_cs();
    // Checked against ipsec-ike at the time of writing: IkeConfig has no DPD/keepalive
    // settings and nothing declares a peer dead, so there is nothing to run. Not faked.
    hprintln!(
        "  DPD: not available in this build (IkeConfig has no DPD/keepalive settings; no dead-peer timers in ipsec-ike)"
    );
    // What does exist: R-U-THERE answered with R-U-THERE-ACK, and a one-shot probe.
    let conn = a.conn_id.ok_or("no IKE SA")?;
    let seq = ctx(a.ike.dpd_probe(wire.now, &mut a.rng, conn), "dpd_probe")?;
    wire.run_until(a, b, Duration::from_secs(10), |a, _| {
        a.ike.counters().dpd_acks >= 1
    })?;
    hprintln!(
        "  manual R-U-THERE (Ike::dpd_probe, seq {:#010x}) to the live peer: ACK received (A dpd_acks {}, B dpd_answered {})",
        seq,
        a.ike.counters().dpd_acks,
        b.ike.counters().dpd_answered
    );
    let dpd = end_phase("R-U-THERE probe", t);

    // ---- 4. Sizes.
    hprintln!("4. Sizes (bytes, thumbv7em) and stack");
    let sizes = [
        (
            "EspSa<SoftCrypto> (one direction, 128-packet replay bitmap)",
            size_of::<FwEspSa>(),
        ),
        ("Sadb<EspSa<SoftCrypto>, 4>", size_of::<Sadb<FwEspSa, 4>>()),
        (
            "Sadb<EspSa<SoftCrypto>, 16>",
            size_of::<Sadb<FwEspSa, 16>>(),
        ),
        (
            "Sadb<EspSa<SoftCrypto>, 64>",
            size_of::<Sadb<FwEspSa, 64>>(),
        ),
        (
            "Sadb: each further entry",
            (size_of::<Sadb<FwEspSa, 64>>() - size_of::<Sadb<FwEspSa, 16>>()) / 48,
        ),
        (
            "Dataplane<SoftCrypto, 4 SAs, 2 policies, 1x1536 B reassembly> (used)",
            size_of::<FwDataplane>(),
        ),
        (
            "Dataplane: each further SA slot (inbound + outbound SADB, timers)",
            size_of::<Dataplane<SoftCrypto, 5, 2, 2, 1, 1536>>() - size_of::<FwDataplane>(),
        ),
        (
            "Dataplane<SoftCrypto, 4 SAs, 2 policies> with default reassembly (4x4096 B)",
            size_of::<Dataplane<SoftCrypto, 4, 2>>(),
        ),
        (
            "Ike<SoftCrypto, 2 SAs, 4 children> (used)",
            size_of::<FwIke>(),
        ),
        (
            "Ike: each further IKE SA slot",
            size_of::<Ike<SoftCrypto, 3, 4>>() - size_of::<FwIke>(),
        ),
        (
            "Ike: each further child SA record",
            size_of::<Ike<SoftCrypto, 2, 5>>() - size_of::<FwIke>(),
        ),
        (
            "Ike<SoftCrypto> (defaults: 16 SAs, 32 children)",
            size_of::<Ike<SoftCrypto>>(),
        ),
        ("IkeConfig", size_of::<IkeConfig>()),
        ("IkeEvent", size_of::<IkeEvent>()),
        ("ChildSa", size_of::<ChildSa>()),
        ("SoftDh", size_of::<SoftDh>()),
        (
            "Node (references to Ike and Dataplane, RNG, counters)",
            size_of::<Node>(),
        ),
        ("Wire (6 x 1536 B in-memory network)", size_of::<Wire>()),
    ];
    for (name, bytes) in sizes {
        hprintln!("size: {}: {}", name, bytes);
    }
    hprintln!("size: DPD state: n/a (no DPD in this build)");
    hprintln!("stack: capacity: {}", stack::capacity());
    let peak = [&setup, &ike, &esp, &dpd]
        .iter()
        .map(|p| p.stack)
        .max()
        .unwrap_or(0);
    hprintln!("stack: peak: {}", peak);
    hprintln!("time: total: {} ms", host_cs().saturating_sub(t_start) * 10);

    hprintln!(
        "RESULT: ok: IKE up (A {} / B {} child SA pairs), {} ESP packets sealed and opened, 1 replay dropped, DPD not available",
        a.children,
        b.children,
        sent
    );
    Ok(())
}

#[entry]
fn main() -> ! {
    stack::paint();
    match run() {
        Ok(()) => debug::exit(debug::EXIT_SUCCESS),
        Err(e) => {
            hprintln!("RESULT: FAILED: {}", e);
            debug::exit(debug::EXIT_FAILURE);
        }
    }
    // Not reached under QEMU (semihosting exit ends it); on hardware, sleep.
    loop {
        cortex_m::asm::wfi();
    }
}
