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
//!    style counters are printed. The data plane feeds Dead Peer Detection all along:
//!    `Ike::note_outbound` for every ESP packet sealed for the peer, `Ike::note_inbound`
//!    for every one opened from it;
//! 4. DPD (`crypto isakmp keepalive 10 2`, on demand, on A): a manual R-U-THERE to the
//!    live peer is answered; then B goes silent while A keeps pinging B's LAN. A probes
//!    B (R-U-THERE at the first packet 10 s after the last proof of life, then every
//!    2 s, 5 in all), declares it dead exactly `interval + retries x retry` after the
//!    last proof of life, and clears its IKE SA and child SAs (`DeleteReason::DpdDead`),
//!    which the firmware removes from the data plane: the next ping meets `NoSa`;
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
    ChildSa, CryptoMapEntry, DpdTable, Ike, IkeConfig, IkeEvent, IsakmpPolicy, Keepalive,
    PresharedKey, TransformSet,
};
use ipsec_soft_crypto::{SoftCrypto, SoftDh};
use static_cell::{ConstStaticCell, StaticCell};

use node::{DpdSeen, FwDataplane, FwEspSa, FwIke, IKE_SAS, Node, Wire, ctx};
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
/// `crypto isakmp keepalive 10 2` (on demand, 5 R-U-THEREs) on A; small numbers keep
/// the virtual-clock run short. B has no keepalive setting (it answers R-U-THEREs
/// either way).
const KEEPALIVE: Keepalive = Keepalive::new(Duration::from_secs(10), Duration::from_secs(2));
/// Period of A's pings to the silent peer.
const DPD_PING_EVERY: Duration = Duration::from_secs(1);

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
/// a ~29 KB temporary (measured with the current ipsec-ike: README). Only a const or
/// in-place constructor in ipsec-ike would remove it.
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
    keepalive: Option<Keepalive>,
) -> Result<&'static mut Node, &'static str> {
    let selector = ctx(Selector::new(lan(local_lan)?, lan(remote_lan)?), "selector")?;
    // Filled in place: IkeConfig is ~4 KB, every move of it is a stack copy.
    let mut config = IkeConfig::new(v4(addr));
    ike_config(&mut config, peer, selector)?;
    config.keepalive = keepalive;
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
        dpd: DpdSeen::default(),
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
        Outbound::Protected { len, sa } => {
            dpd_sent_hook(now, from, sa);
            len
        }
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
        Inbound::Decapsulated { packet, sa } => {
            to.esp_received(now, sa);
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
        Outbound::Protected { len, sa } => {
            dpd_sent_hook(now, to, sa);
            len
        }
        Outbound::Bypass => return Err("reply bypassed the tunnel"),
    };
    let packet = bufs.wire.get_mut(..len).ok_or("esp length")?;
    let got = match ctx(from.dp.process_inbound(now, packet), "inbound reply")? {
        Inbound::Decapsulated { packet, sa } => {
            from.esp_received(now, sa);
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

/// `Ike::note_outbound` for a packet `n` just sealed with outbound SA `sa`; says so if
/// that armed an R-U-THERE.
fn dpd_sent_hook(now: Instant, n: &mut Node, sa: ipsec_core::sadb::SaHandle) -> bool {
    let armed = n.esp_sent(now, sa);
    if armed {
        hprintln!(
            "  [{} t={}ms] note_outbound: nothing from the peer for the keepalive interval: R-U-THERE armed",
            n.name,
            now.as_millis()
        );
    }
    armed
}

/// One ping from A's LAN to the silent B: sealed (and fed to DPD), then lost. `None`:
/// there is no SA any more (`NoSa`, the acquire).
fn ping_silent(
    now: Instant,
    a: &mut Node,
    bufs: &mut Bufs,
    seq: u16,
) -> Result<Option<bool>, &'static str> {
    let req = Echo {
        src: HOST_A,
        dst: HOST_B,
        kind: ECHO_REQUEST,
        id: 0x4d35,
        seq,
        payload_len: PING_PAYLOAD,
    };
    let n = ping::build(&mut bufs.plain, &req).ok_or("build echo request")?;
    let plain = bufs.plain.get(..n).ok_or("echo request length")?;
    match a
        .dp
        .process_outbound(now, plain, &mut a.rng, &mut bufs.wire)
    {
        // The ESP packet goes to B, which is silent: it is never answered.
        Ok(Outbound::Protected { sa, .. }) => Ok(Some(dpd_sent_hook(now, a, sa))),
        Err(DataplaneError::NoSa { .. }) => Ok(None),
        Ok(Outbound::Bypass) => Err("ping to the silent peer bypassed the tunnel"),
        Err(e) => ctx(Err(e), "outbound to the silent peer"),
    }
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

// ------------------------------------------------------------------------ DPD --

/// Step 3: a manual R-U-THERE to the live peer, then B goes silent while A keeps
/// sending to it, until A's on-demand DPD declares B dead. Checks every time against
/// the formula of `Keepalive`. Returns when B was declared dead.
fn dpd(
    a: &mut Node,
    b: &mut Node,
    wire: &mut Wire,
    bufs: &mut Bufs,
) -> Result<Instant, &'static str> {
    let peer = v4(GW_B);
    let k = KEEPALIVE;

    // 3a. The live peer answers an R-U-THERE (Ike::dpd_probe: one, by hand).
    let conn = a.conn_id.ok_or("no IKE SA")?;
    let seq = ctx(a.ike.dpd_probe(wire.now, &mut a.rng, conn), "dpd_probe")?;
    wire.run_until(a, b, Duration::from_secs(10), |a, _| {
        a.ike.counters().dpd_acks >= 1
    })?;
    hprintln!(
        "  manual R-U-THERE (Ike::dpd_probe, seq {:#010x}) to the live peer: ACK at t={}ms (A dpd_acks {}, B dpd_answered {})",
        seq,
        wire.now.as_millis(),
        a.ike.counters().dpd_acks,
        b.ike.counters().dpd_answered
    );

    // 3b. B goes silent; A's LAN keeps pinging B's.
    let st = a.ike.dpd_status(peer).ok_or("A does not track B")?;
    let alive = st.last_proof_of_life; // the ACK
    if alive != wire.now || st.unanswered != 0 || st.deadline.is_some() {
        return Err("the ACK did not end the DPD round");
    }
    let c0 = *a.ike.counters();
    wire.silent = Some(GW_B);
    hprintln!(
        "  [t={}ms] B goes silent; A pings {} every {} ms (ESP sealed, note_outbound, lost)",
        wire.now.as_millis(),
        HOST_B,
        DPD_PING_EVERY.as_millis()
    );

    let mut probes = [Instant::ZERO; 8];
    let mut n_probes = 0usize;
    let mut sent_seen = c0.dpd_sent;
    let mut armed_at = None;
    let mut lost = 0u32;
    let mut next_ping = alive + DPD_PING_EVERY;
    let give_up = alive + k.interval + k.dead_after() + Duration::from_secs(5);
    let mut seq: u16 = 0;
    let cleared_at = loop {
        // The control plane's timers (R-U-THEREs, the dead verdict) up to the next ping.
        wire.run_to(a, b, next_ping, |a, _, t| {
            let sent = a.ike.counters().dpd_sent;
            while sent_seen < sent {
                sent_seen += 1;
                let attempt = a.ike.dpd_status(peer).map_or(0, |s| s.unanswered);
                hprintln!(
                    "  [A t={}ms] R-U-THERE #{} to {} (no answer: B is silent)",
                    t.as_millis(),
                    attempt,
                    peer
                );
                if let Some(p) = probes.get_mut(n_probes) {
                    *p = t;
                }
                n_probes += 1;
            }
        })?;
        let now = wire.now;
        seq = seq.wrapping_add(1);
        match ping_silent(now, a, bufs, seq)? {
            Some(armed) => {
                lost += 1;
                if armed && armed_at.replace(now).is_some() {
                    return Err("a second DPD round was armed");
                }
            }
            None => break now,
        }
        next_ping = now + DPD_PING_EVERY;
        if next_ping > give_up {
            return Err("the silent peer was not declared dead in time");
        }
    };

    // Checks: the documented timing, to the millisecond.
    let (dead_peer, last_alive, dead_at) = a.dpd.dead.ok_or("no PeerDead event")?;
    let t1 = armed_at.ok_or("no R-U-THERE was armed")?;
    let retries = usize::from(k.retries);
    let probes = probes
        .get(..n_probes)
        .ok_or("more R-U-THEREs than recorded")?;
    let mut expected = t1;
    for (i, p) in probes.iter().enumerate() {
        if *p != expected || i >= retries {
            return Err("R-U-THERE times differ from t1 + k x retry");
        }
        expected = expected + k.retry;
    }
    let formula = last_alive + k.interval + k.dead_after();
    hprintln!(
        "  {} R-U-THEREs: t1={}ms (last proof of life t={}ms + interval {} ms, first ping after it) and every {} ms after; dead at t={}ms",
        n_probes,
        t1.as_millis(),
        last_alive.as_millis(),
        k.interval.as_millis(),
        k.retry.as_millis(),
        dead_at.as_millis()
    );
    hprintln!(
        "  dead time: t1 + retries x retry = {} + {} x {} = {} ms; last proof of life + interval + retries x retry = {} + {} + {} x {} = {} ms: {}",
        t1.as_millis(),
        k.retries,
        k.retry.as_millis(),
        (t1 + k.dead_after()).as_millis(),
        last_alive.as_millis(),
        k.interval.as_millis(),
        k.retries,
        k.retry.as_millis(),
        formula.as_millis(),
        if dead_at == formula && dead_at == t1 + k.dead_after() {
            "exact"
        } else {
            "MISMATCH"
        }
    );
    if dead_peer != peer
        || last_alive != alive
        || n_probes != retries
        || t1 != alive + k.interval
        || dead_at != t1 + k.dead_after()
        || dead_at != formula
    {
        return Err("DPD timing differs from the documented formula");
    }

    // Checks: counters, and everything with B cleared on A.
    let c = a.ike.counters();
    let (sent, timeouts, dead) = (
        c.dpd_sent - c0.dpd_sent,
        c.dpd_timeouts - c0.dpd_timeouts,
        c.dpd_peers_dead - c0.dpd_peers_dead,
    );
    hprintln!(
        "  A counters: dpd_sent +{}, dpd_timeouts +{}, dpd_peers_dead +{}; {} pings to the silent peer lost, {} IKE datagrams to it dropped",
        sent,
        timeouts,
        dead,
        lost,
        wire.dropped
    );
    let d = a.dpd;
    let esp_left = a.dp.inbound_sas().count() + a.dp.outbound_sas().count();
    let ike_left = a.ike.isakmp_status().count() + a.ike.ipsec_status().count();
    hprintln!(
        "  A cleared: PeerDead, then {} ChildSaDeleted(DpdDead) ({} ESP SAs removed from the data plane), then {} Phase1Deleted(DpdDead); left: {} ESP SAs, {} IKE/IPsec SAs, DPD entry {}",
        d.children_deleted,
        d.esp_removed,
        d.phase1_deleted,
        esp_left,
        ike_left,
        if a.ike.dpd_status(peer).is_some() {
            "kept"
        } else {
            "gone"
        }
    );
    hprintln!(
        "  [A t={}ms] next ping: no SA for crypto map {} (acquire): a port would initiate again; not done here, B stays silent",
        cleared_at.as_millis(),
        MAP
    );
    if (sent, timeouts, dead) != (u64::from(k.retries), u64::from(k.retries), 1)
        || !d.in_order
        || d.children_deleted != 1
        || d.phase1_deleted != 1
        || d.esp_removed != 2
        || esp_left != 0
        || ike_left != 0
        || a.ike.dpd_status(peer).is_some()
        || cleared_at != dead_at
        || a.conn_id.is_some()
    {
        return Err("A's SAs were not cleared as documented");
    }
    Ok(dead_at)
}

// ------------------------------------------------------------------------ run --

fn run() -> Result<(), &'static str> {
    let t_start = host_cs();
    hprintln!("ipsec firmware example: Cortex-M4 (QEMU mps2-an386), no heap, semihosting output");
    hprintln!("RNG: demo RNG, not secure (deterministic DRBG seeded by a constant)");

    // ---- setup: statics.
    let t = host_cs();
    let a = make_node(
        &NODE_A,
        &IKE_A,
        &DP_A,
        "A",
        GW_A,
        GW_B,
        LAN_A,
        LAN_B,
        Some(KEEPALIVE),
    )?;
    let b = make_node(&NODE_B, &IKE_B, &DP_B, "B", GW_B, GW_A, LAN_B, LAN_A, None)?;
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
    // Traffic both ways is proof of life: on-demand DPD sent nothing.
    let st = a
        .ike
        .dpd_status(v4(GW_B))
        .ok_or("A does not track B for DPD")?;
    hprintln!(
        "  A DPD for {}: peer announced DPD {}, probed {}, last proof of life t={}ms, R-U-THEREs sent {}",
        GW_B,
        st.peer_dpd,
        st.probed,
        st.last_proof_of_life.as_millis(),
        a.ike.counters().dpd_sent
    );
    if !st.probed || a.ike.counters().dpd_sent != 0 || st.last_proof_of_life != wire.now {
        return Err("DPD state after the ESP path is not as expected");
    }
    let esp = end_phase("ESP path", t);

    // ---- 3. DPD.
    hprintln!(
        "3. DPD: crypto isakmp keepalive {} {} on A (on demand, {} R-U-THEREs per round)",
        KEEPALIVE.interval.as_millis() / 1000,
        KEEPALIVE.retry.as_millis() / 1000,
        KEEPALIVE.retries
    );
    let t = host_cs();
    let dpd_at = dpd(a, b, wire, bufs)?;
    let dpd = end_phase("DPD", t);

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
            "Dataplane<SoftCrypto, 4 SAs, 2 policies, 1x1536 B reassembly, 8 flows> (used)",
            size_of::<FwDataplane>(),
        ),
        (
            "Dataplane: each further SA slot (inbound + outbound SADB, timers)",
            size_of::<Dataplane<SoftCrypto, 5, 2, 2, 1, 1536, 8>>() - size_of::<FwDataplane>(),
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
        (
            "DpdTable<2> (DPD state inside Ike: one slot per IKE SA)",
            size_of::<DpdTable<IKE_SAS>>(),
        ),
        (
            "DPD state: each further peer",
            (size_of::<DpdTable<64>>() - size_of::<DpdTable<16>>()) / 48,
        ),
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
    hprintln!("stack: capacity: {}", stack::capacity());
    let peak = [&setup, &ike, &esp, &dpd]
        .iter()
        .map(|p| p.stack)
        .max()
        .unwrap_or(0);
    hprintln!("stack: peak: {}", peak);
    hprintln!("time: total: {} ms", host_cs().saturating_sub(t_start) * 10);

    hprintln!(
        "RESULT: ok: IKE up (A {} / B {} child SA pairs), {} ESP packets sealed and opened, 1 replay dropped, DPD declared the silent peer dead at {} ms",
        a.children,
        b.children,
        sent,
        dpd_at.as_millis()
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
