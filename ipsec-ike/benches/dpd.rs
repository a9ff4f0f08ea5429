//! DPD at scale: timer work and per-event cost of the per-peer DPD state
//! ([`DpdTable`]) with 10,000 and 100,000 peers.
//!
//! Measured on the component, not on a whole `Ike<_, 100_000>`: an `Ike` holds every
//! IKE SA's retransmission buffers inline (several KB each), so 100,000 of them would
//! be most of a gigabyte, and bringing them up would mean 100,000 handshakes. `Ike`
//! keeps exactly this table (`DpdTable<SAS>`) and adds its `next_deadline()` to
//! `poll_timeout`, so what is counted here is what an `Ike` would wake for.
//!
//! Run: `cargo bench -p ipsec-ike --bench dpd` (or `cargo test -p ipsec-ike --bench
//! dpd` for an unoptimised run). Virtual clock; `std::time` only to time the calls.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    missing_docs
)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant as WallClock;

use ipsec_core::{Duration, Instant};
use ipsec_ike::v1::{DpdAction, DpdTable, Keepalive};

const HOUR: Duration = Duration::from_secs(3600);

fn peer(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i as u32))
}

/// `crypto isakmp keepalive 60 3` (on demand, 5 R-U-THEREs).
fn ios() -> Keepalive {
    Keepalive::new(Duration::from_secs(60), Duration::from_secs(3))
}

/// A port's timer loop over `[start, start + span]`: sleep until `next_deadline`, then
/// run every due timer. Returns (wakeups, actions); `on_probe` answers R-U-THEREs.
fn timer_loop<const N: usize>(
    t: &mut DpdTable<N>,
    ka: &Keepalive,
    start: Instant,
    span: Duration,
    ack: bool,
) -> (u64, u64) {
    let end = start + span;
    let (mut wakeups, mut actions) = (0u64, 0u64);
    while let Some(at) = t.next_deadline() {
        if at > end {
            break;
        }
        wakeups += 1;
        while let Some(a) = t.poll_due(at, Some(ka)) {
            actions += 1;
            if let (true, DpdAction::Probe { peer, .. }) = (ack, a) {
                t.acked(at + Duration::from_millis(20), peer, Some(ka));
            }
        }
    }
    (wakeups, actions)
}

fn ns_per(op: u64, f: impl FnOnce()) -> f64 {
    let t0 = WallClock::now();
    f();
    t0.elapsed().as_nanos() as f64 / op as f64
}

fn run<const N: usize>() {
    let ka = ios();
    let mut t: Box<DpdTable<N>> = Box::default();
    let t0 = Instant::from_secs(1);
    let build = ns_per(N as u64, || {
        for i in 0..N {
            t.insert(t0, peer(i), true, Some(&ka)).unwrap();
        }
    });
    let (longest, mean) = t.chain_stats();
    println!(
        "N = {N:>7}: table {:>6} KiB ({} B/peer), insert {build:.0} ns/peer; hash chains: longest {longest}, {mean:.2} slots per lookup",
        core::mem::size_of::<DpdTable<N>>() / 1024,
        core::mem::size_of::<DpdTable<N>>() / N
    );

    // 1. On demand, no traffic, one simulated hour: nothing armed, nothing to do.
    let wall = WallClock::now();
    let (w, a) = timer_loop(&mut t, &ka, t0, HOUR, false);
    println!(
        "  on demand, idle, 1 h: {w} wakeups, {a} timer actions, {} armed, next_deadline {:?} ({:?} of CPU)",
        t.armed(),
        t.next_deadline(),
        wall.elapsed()
    );
    assert_eq!((w, a, t.armed()), (0, 0, 0));

    // 2. Per-event cost with traffic flowing (last proof of life is recent, so neither
    //    call arms anything), pseudo-random peers. Flat in N: a hash lookup and a store.
    const OPS: u64 = 2_000_000;
    let now = t0 + Duration::from_secs(10);
    let mut x = 0x1234_5678u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % N as u64) as usize
    };
    let ns_in = ns_per(OPS, || {
        for _ in 0..OPS {
            black_box(t.note_inbound(now, peer(next()), Some(&ka)));
        }
    });
    let ns_out = ns_per(OPS, || {
        for _ in 0..OPS {
            black_box(t.note_outbound(now, peer(next()), Some(&ka)));
        }
    });
    println!("  note_inbound {ns_in:.1} ns/call, note_outbound {ns_out:.1} ns/call (no probe due)");
    assert_eq!(t.armed(), 0);

    // 3. Outbound after the idle interval on 1 % of the peers: each arms one deadline
    //    (O(log N)); the probes go out, get answered, and the timers are gone again.
    let later = t0 + Duration::from_secs(120);
    let k = (N / 100) as u64;
    let ns_arm = ns_per(k, || {
        for i in 0..N / 100 {
            assert!(t.note_outbound(later, peer(i * 100), Some(&ka)));
        }
    });
    let (w, a) = timer_loop(&mut t, &ka, later, HOUR, true);
    println!(
        "  {k} idle peers get traffic: arm {ns_arm:.0} ns each; {w} wakeup(s), {a} R-U-THEREs, all answered; {} armed after",
        t.armed()
    );
    assert_eq!((a, t.armed()), (k, 0));
}

fn periodic<const N: usize>() {
    let ka = ios().periodic();
    let mut t: Box<DpdTable<N>> = Box::default();
    let t0 = Instant::from_secs(1);
    for i in 0..N {
        // Spread over the first interval, as tunnels come up over time.
        let at = t0 + Duration::from_millis((i as u64 * 60_000) / N as u64);
        t.insert(at, peer(i), true, Some(&ka)).unwrap();
    }
    let wall = WallClock::now();
    let (w, a) = timer_loop(&mut t, &ka, t0, HOUR, true);
    let el = wall.elapsed();
    println!(
        "N = {N:>7}: periodic keepalives, 1 h, all answered: {w} wakeups, {a} R-U-THEREs ({:.0} ns per R-U-THERE, incl. the ACK)",
        el.as_nanos() as f64 / a as f64
    );
}

fn main() {
    // The tables live on the heap; the thread's large stack only covers the temporary
    // an unoptimised `Box::default()` builds first.
    std::thread::Builder::new()
        .stack_size(512 << 20)
        .spawn(|| {
            run::<10_000>();
            run::<100_000>();
            periodic::<10_000>();
            periodic::<100_000>();
        })
        .unwrap()
        .join()
        .unwrap();
}
