//! Timer cost with many SAs: `poll_timeout` and `handle_timeout` of the data plane with
//! 10 000 and 100 000 SAs under an idle timeout, to show the cost per event stays flat
//! (a heap pop and push, O(log n)) and that idle SAs cost one wakeup per idle period each,
//! not periodic polling.
//!
//! Run: `cargo bench -p ipsec-core --bench timers -- --quick` (or without `--quick` for
//! more repetitions of the `poll_timeout` loop). Plain `std::time::Instant` timing; no
//! criterion.
//!
//! Scenario per size N: N inbound SAs (ESP_NULL + HMAC-MD5-96, so that the crypto does not
//! dominate the traffic phase), created with last-use times spread over the first 120 s,
//! idle time 120 s. Half of them receive one packet at t = 150 s. The clock is then run
//! deadline by deadline, as a port would: sleep until `poll_timeout`, `handle_timeout`,
//! drain events. Each SA pops once per idle period: the idle half is deleted on its first
//! pop, the active half is re-armed lazily once and deleted on its second.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    missing_docs
)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant as Clock;

use hal_traits::{CryptoError, MacAlg, SecureRng};
use ipsec_core::dataplane::Dataplane;
use ipsec_core::esp::{Direction, Encryption, EspConfig, EspSa, Transform};
use ipsec_core::lifetime::LifetimeConfig;
use ipsec_core::spd::PolicyAction;
use ipsec_core::wire::ipv4::Ipv4Repr;
use ipsec_core::{Duration, Instant};
use ipsec_soft_crypto::SoftCrypto;

const T: Transform = Transform {
    enc: Encryption::Null,
    auth: Some(MacAlg::HmacMd5_96),
};
const IDLE_S: u64 = 120;

struct Rng;
impl SecureRng for Rng {
    fn fill_bytes(&mut self, d: &mut [u8]) -> Result<(), CryptoError> {
        d.fill(1);
        Ok(())
    }
}

fn config(spi: u32, dir: Direction) -> EspConfig {
    let (a, b) = (
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)),
    );
    let (l, r) = if dir == Direction::Inbound {
        (a, b)
    } else {
        (b, a)
    };
    let mut c = EspConfig::tunnel(spi, dir, T, l, r);
    c.lifetime = LifetimeConfig::UNLIMITED;
    c
}

fn run<const N: usize>(quick: bool) {
    type Dp<const N: usize> = Dataplane<SoftCrypto, N, 1>;
    let mut dp: Dp<N> = Dp::<N>::new(PolicyAction::Bypass);
    dp.set_idle_time(Some(Duration::from_secs(IDLE_S)));
    let period_ms = IDLE_S * 1000;
    let spread = |i: usize| Instant::from_millis(i as u64 * period_ms / N as u64);

    let t0 = Clock::now();
    for i in 0..N {
        let sa = EspSa::new(
            config(0x1000 + i as u32, Direction::Inbound),
            &[],
            &[7; 16],
            spread(i),
        )
        .unwrap();
        dp.install_inbound(sa).unwrap();
    }
    let install = t0.elapsed();

    // poll_timeout: a peek at three heaps and the reassembly slots.
    let reps = if quick { 1_000_000 } else { 10_000_000 };
    let t0 = Clock::now();
    let mut acc = 0u64;
    for _ in 0..reps {
        acc = acc.wrapping_add(
            std::hint::black_box(&dp)
                .poll_timeout()
                .unwrap()
                .as_millis(),
        );
    }
    let poll_ns = t0.elapsed().as_nanos() as f64 / f64::from(reps);
    std::hint::black_box(acc);

    // Traffic on every other SA at t = 150 s (after the first of them would have expired:
    // run the clock to 150 s first).
    let mut wakeups = 0u64;
    let mut fired_events = 0u64;
    let mut timer_time = std::time::Duration::ZERO;
    let mut advance = |dp: &mut Dp<N>, until: Instant, wakeups: &mut u64, events: &mut u64| {
        while let Some(t) = dp.poll_timeout() {
            if t > until {
                break;
            }
            let c = Clock::now();
            dp.handle_timeout(t);
            timer_time += c.elapsed();
            *wakeups += 1;
            while dp.poll_event().is_some() {
                *events += 1;
            }
        }
    };
    advance(
        &mut dp,
        Instant::from_secs(119),
        &mut wakeups,
        &mut fired_events,
    );
    let inner = {
        let r = Ipv4Repr {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            protocol: 17,
            payload_len: 8,
            ttl: 64,
            tos: 0,
            ident: 1,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
        };
        let mut v = vec![0u8; 28];
        r.emit(&mut v).unwrap();
        v
    };
    let t_traffic = Instant::from_secs(119);
    let t0 = Clock::now();
    let mut buf = [0u8; 256];
    for i in (0..N).step_by(2) {
        let mut twin: EspSa<SoftCrypto> = EspSa::new(
            config(0x1000 + i as u32, Direction::Outbound),
            &[],
            &[7; 16],
            t_traffic,
        )
        .unwrap();
        let n = twin
            .encapsulate(t_traffic, &inner, None, &mut Rng, &mut buf)
            .unwrap();
        dp.process_inbound(t_traffic, &mut buf[..n]).unwrap();
    }
    let traffic = t0.elapsed();
    advance(
        &mut dp,
        Instant::from_secs(1000),
        &mut wakeups,
        &mut fired_events,
    );
    assert_eq!(fired_events, N as u64, "every SA deleted exactly once");
    assert_eq!(dp.inbound_sas().count(), 0);
    // Pops: N first pops (half deleted, half re-armed) + N/2 second pops.
    let pops = N as f64 * 1.5;
    println!(
        "N = {N:>6} SAs: install {:>7.1} ms | poll_timeout {:>5.1} ns/call | \
         handle_timeout {:>6.1} ms for {:>6} wakeups, {:>6.0} heap pops, {:>6} deletions \
         = {:>5.0} ns per pop | traffic {:>6.1} ms for {} packets | Dataplane {} KiB",
        install.as_secs_f64() * 1e3,
        poll_ns,
        timer_time.as_secs_f64() * 1e3,
        wakeups,
        pops,
        fired_events,
        timer_time.as_nanos() as f64 / pops,
        traffic.as_secs_f64() * 1e3,
        N / 2,
        std::mem::size_of::<Dp<N>>() / 1024,
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // The data plane is one value with fixed arrays: give it a thread stack that fits.
    let big = |f: fn(bool)| {
        std::thread::Builder::new()
            .stack_size(1 << 30)
            .spawn(move || f(quick))
            .unwrap()
            .join()
            .unwrap();
    };
    big(run::<10_000>);
    big(run::<100_000>);
}
