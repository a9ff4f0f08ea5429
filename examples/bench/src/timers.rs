//! Data-plane scaling with the number of SAs: the lifetime timers (`poll_timeout` /
//! `handle_timeout`), the inbound packet path, and the outbound policy lookup; plus the
//! IKE control plane's `poll_timeout` against its SA capacity.
//!
//! (Idle-timeout timers have their own bench in `ipsec-core/benches/timers.rs`.)

use std::cell::RefCell;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;

use hal_traits::AeadAlg;
use ipsec_core::dataplane::{Dataplane, Inbound, Outbound};
use ipsec_core::esp::{Direction, Encryption, EspSa, SaEvent, Transform};
use ipsec_core::lifetime::LifetimeConfig;
use ipsec_core::spd::{AddrRange, Flow, Policy, PolicyAction, Selector};
use ipsec_core::{Duration, Instant};
use ipsec_ike::v1::{Ike, IkeConfig};
use ipsec_soft_crypto::SoftCrypto;

use crate::timing::{Chunked, Plan, Timed, batched, cpu_now, fixed, interleave, median};
use crate::util::{LOCAL, Rng, big_stack, config, ipv4_udp, keys};

const GCM: Transform = Transform {
    enc: Encryption::Gcm(AeadAlg::Aes128Gcm16),
    auth: None,
};
type Dp<const N: usize> = Dataplane<SoftCrypto, N, 4>;

/// SAs are installed over the first `SPREAD_S` seconds, with soft and hard lifetimes of
/// 3240 s and 3600 s (IOS defaults, soft at 90 %): 2 deadlines per SA.
const SPREAD_S: u64 = 1000;
const SOFT_S: u64 = 3240;
const HARD_S: u64 = 3600;
/// Traffic time: every SA installed, none expired.
const T_TRAFFIC: Instant = Instant::from_secs(SPREAD_S);
const INNER: usize = 64;

fn lifetime() -> LifetimeConfig {
    LifetimeConfig {
        soft_time: Some(Duration::from_secs(SOFT_S)),
        hard_time: Some(Duration::from_secs(HARD_S)),
        soft_bytes: None,
        hard_bytes: None,
    }
}

/// A data plane with `N` inbound aes128-gcm16 SAs under random SPIs, installed at times
/// spread over `SPREAD_S`. Returns it, the SPIs, and the CPU ns per install.
fn build<const N: usize>(seed: u64) -> (Box<Dp<N>>, Vec<u32>, f64) {
    let mut dp: Box<Dp<N>> = Box::new(Dp::<N>::new(PolicyAction::Bypass));
    let mut rng = Rng(seed);
    let (e, a) = keys(GCM);
    let mut spis = Vec::with_capacity(N);
    let mut seen = std::collections::HashSet::with_capacity(N);
    let mut sas = Vec::with_capacity(N);
    while sas.len() < N {
        let spi = rng.next_u64() as u32 | 0x100;
        if !seen.insert(spi) {
            continue;
        }
        let i = sas.len() as u64;
        let created = Instant::from_millis(i * SPREAD_S * 1000 / N as u64);
        let mut c = config(spi, Direction::Inbound, GCM, 64);
        c.lifetime = lifetime();
        sas.push(EspSa::new(c, &e, &a, created).expect("SA"));
        spis.push(spi);
    }
    let c0 = cpu_now();
    for sa in sas {
        dp.install_inbound(sa).expect("install");
    }
    let install = (cpu_now() - c0).as_nanos() as f64 / N as f64;
    (dp, spis, install)
}

/// Runs every deadline in order, as a port would (sleep until `poll_timeout`,
/// `handle_timeout`, drain events, remove hard-expired SAs). Returns CPU time, events and
/// wakeups.
fn drain_timers<const N: usize>(dp: &mut Dp<N>) -> (Timed, u64, u64) {
    let (mut events, mut wakeups) = (0u64, 0u64);
    let (c0, w0) = (cpu_now(), std::time::Instant::now());
    while let Some(t) = dp.poll_timeout() {
        dp.handle_timeout(t);
        wakeups += 1;
        while let Some(ev) = dp.poll_event() {
            events += 1;
            if matches!(ev.event, SaEvent::HardExpired { .. }) {
                black_box(dp.remove_inbound(ev.sa));
            }
        }
    }
    let t = Timed {
        cpu: cpu_now() - c0,
        wall: w0.elapsed(),
        ops: events,
    };
    (t, events, wakeups)
}

/// Per-N results.
#[derive(Default, Clone)]
struct Scale {
    n: usize,
    install_ns: f64,
    poll_ns: f64,
    spurious_ns: f64,
    inbound_ns: f64,
    event_ns: f64,
    wakeup_ns: f64,
    events: u64,
    wakeups: u64,
    bytes: usize,
}

/// The inbound path: a batch of 64-byte packets for random SAs, sealed by twins of
/// those SAs (untimed), then `process_inbound` (classify, SADB lookup, decapsulate).
fn inbound_chunk<'a, const N: usize>(dp: &'a RefCell<Box<Dp<N>>>, spis: &'a [u32]) -> Chunked<'a> {
    const BATCH: usize = 256;
    let inner = ipv4_udp(INNER);
    let len = 20 + GCM.sealed_len(INNER);
    let (e, a) = keys(GCM);
    let slots = Rc::new(RefCell::new(vec![0u8; BATCH * len]));
    let run_slots = Rc::clone(&slots);
    let mut rng = Rng(N as u64);
    let mut seq = 1u64;
    batched(
        move || {
            let mut s = slots.borrow_mut();
            for p in s.chunks_exact_mut(len) {
                let spi = spis[(rng.next_u64() % spis.len() as u64) as usize];
                let mut twin: EspSa<SoftCrypto> =
                    EspSa::new(config(spi, Direction::Outbound, GCM, 0), &e, &a, T_TRAFFIC)
                        .expect("twin");
                // Fresh for every SA's replay window: one counter across all SAs.
                seq += 1;
                twin.advance_seq_to(seq);
                twin.encapsulate(T_TRAFFIC, &inner, None, &mut rng, p)
                    .expect("encapsulate");
            }
        },
        move || {
            let mut s = run_slots.borrow_mut();
            let mut d = dp.borrow_mut();
            for p in s.chunks_exact_mut(len) {
                match d.process_inbound(T_TRAFFIC, black_box(p)).expect("inbound") {
                    Inbound::Decapsulated { packet, .. } => {
                        black_box(packet.len());
                    }
                    _ => panic!("not ESP"),
                }
            }
            BATCH as u64
        },
    )
}

fn scaling(plan: Plan) -> Vec<Scale> {
    // 16 SAs: a cache-resident reference for the per-packet path.
    let (dp0, s0, i0) = build::<16>(0);
    let (dp1, s1, i1) = build::<1_000>(1);
    let (dp2, s2, i2) = build::<10_000>(2);
    let (dp3, s3, i3) = build::<100_000>(3);
    let (dp0, dp1, dp2, dp3) = (
        RefCell::new(dp0),
        RefCell::new(dp1),
        RefCell::new(dp2),
        RefCell::new(dp3),
    );
    macro_rules! poll {
        ($dp:expr) => {{
            let dp = &$dp;
            fixed(move || {
                black_box(black_box(&**dp.borrow()).poll_timeout());
            })
        }};
    }
    macro_rules! spurious {
        ($dp:expr) => {{
            let dp = &$dp;
            fixed(move || {
                // Before the first deadline: nothing fires.
                dp.borrow_mut().handle_timeout(black_box(T_TRAFFIC));
            })
        }};
    }
    let mut ms: Vec<Chunked<'_>> = vec![
        poll!(dp0),
        poll!(dp1),
        poll!(dp2),
        poll!(dp3),
        spurious!(dp0),
        spurious!(dp1),
        spurious!(dp2),
        spurious!(dp3),
        inbound_chunk(&dp0, &s0),
        inbound_chunk(&dp1, &s1),
        inbound_chunk(&dp2, &s2),
        inbound_chunk(&dp3, &s3),
    ];
    let p = interleave(plan.reps, plan.budget, &mut ms);
    drop(ms);
    let mut out = vec![
        Scale {
            n: 16,
            install_ns: i0,
            bytes: std::mem::size_of::<Dp<16>>(),
            ..Scale::default()
        },
        Scale {
            n: 1_000,
            install_ns: i1,
            bytes: std::mem::size_of::<Dp<1_000>>(),
            ..Scale::default()
        },
        Scale {
            n: 10_000,
            install_ns: i2,
            bytes: std::mem::size_of::<Dp<10_000>>(),
            ..Scale::default()
        },
        Scale {
            n: 100_000,
            install_ns: i3,
            bytes: std::mem::size_of::<Dp<100_000>>(),
            ..Scale::default()
        },
    ];
    for (k, s) in out.iter_mut().enumerate() {
        s.poll_ns = p.ns(k);
        s.spurious_ns = p.ns(4 + k);
        s.inbound_ns = p.ns(8 + k);
    }
    drop((dp0, dp1, dp2, dp3));

    // The timer loop consumes the SAs: a fresh data plane per repetition.
    fn loop_reps<const N: usize>(reps: usize, s: &mut Scale) {
        let (mut ev, mut wk) = (Vec::new(), Vec::new());
        for r in 0..reps {
            let (mut dp, _, _) = build::<N>(10 + r as u64);
            let (t, events, wakeups) = drain_timers(&mut dp);
            assert_eq!(events, 2 * N as u64, "soft + hard per SA");
            assert_eq!(dp.inbound_sas().count(), 0);
            ev.push(t.cpu.as_nanos() as f64 / events as f64);
            wk.push(t.cpu.as_nanos() as f64 / wakeups as f64);
            s.events = events;
            s.wakeups = wakeups;
        }
        s.event_ns = median(&ev);
        s.wakeup_ns = median(&wk);
    }
    loop_reps::<16>(plan.reps, &mut out[0]);
    loop_reps::<1_000>(plan.reps, &mut out[1]);
    loop_reps::<10_000>(plan.reps, &mut out[2]);
    loop_reps::<100_000>(plan.reps, &mut out[3]);
    out
}

/// Distinct flows (source ports) of the miss measurement: far more than the flow cache
/// holds, cycled in order, so every packet is the first of its flow as far as the cache
/// knows (each of the 32 two-way sets of the default 64-entry cache sees ~128 flows per
/// cycle).
const MISS_FLOWS: usize = 4096;

/// Number of measurements per data plane in [`outbound`].
const OUT_MEASURES: usize = 5;

type OutDp<const P: usize> = Dataplane<SoftCrypto, P, P>;

/// A data plane with `P` protect policies, each bound to its own outbound SA, and the
/// packets of the outbound measurements: to the first policy's network, to the last's, and
/// `MISS_FLOWS` distinct flows to the last's.
struct OutCase<const P: usize> {
    dp: RefCell<Box<OutDp<P>>>,
    first: Vec<u8>,
    last: Vec<u8>,
    misses: Vec<Vec<u8>>,
}

/// An IPv4/UDP packet of `INNER` bytes from 10.1.0.5 to the network of policy `i`, with
/// source port `sport`.
fn packet_to(i: usize, sport: u16) -> Vec<u8> {
    let mut p = ipv4_udp(INNER);
    p[19] = 7;
    p[16..19].copy_from_slice(&[10, 100 + (i / 256) as u8, (i % 256) as u8]);
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    // Fix the header checksum; the UDP checksum is 0 (none, for IPv4).
    p[10..12].copy_from_slice(&[0, 0]);
    let mut s = 0u32;
    for c in p[..20].chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    p[10..12].copy_from_slice(&(!(s as u16)).to_be_bytes());
    p
}

impl<const P: usize> OutCase<P> {
    fn new() -> Self {
        let mut dp: Box<OutDp<P>> = Box::new(Dataplane::new(PolicyAction::Bypass));
        let (e, a) = keys(GCM);
        let local =
            AddrRange::from_prefix(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 0)), 16).expect("net");
        for i in 0..P {
            let remote = Ipv4Addr::new(10, 100 + (i / 256) as u8, (i % 256) as u8, 0);
            let sel = Selector::new(
                local,
                AddrRange::from_prefix(IpAddr::V4(remote), 24).expect("net"),
            )
            .expect("selector");
            let seq = 10 * (i as u32 + 1);
            dp.spd_mut()
                .insert(Policy {
                    seq,
                    selector: sel,
                    action: PolicyAction::Protect { sa_group: seq },
                })
                .expect("policy");
            let sa: EspSa<SoftCrypto> = EspSa::new(
                config(0x1000 + i as u32, Direction::Outbound, GCM, 0),
                &e,
                &a,
                T_TRAFFIC,
            )
            .expect("SA");
            dp.install_outbound(seq, sa).expect("install");
        }
        let case = Self {
            dp: RefCell::new(dp),
            first: packet_to(0, 1234),
            last: packet_to(P - 1, 1234),
            misses: (0..MISS_FLOWS)
                .map(|k| packet_to(P - 1, 20_000 + k as u16))
                .collect(),
        };
        case.check();
        case
    }

    fn send(&self, pkt: &[u8], out: &mut [u8], rng: &mut Rng) {
        match self
            .dp
            .borrow_mut()
            .process_outbound(T_TRAFFIC, black_box(pkt), rng, out)
            .expect("outbound")
        {
            Outbound::Protected { len, .. } => black_box(len),
            Outbound::Bypass => panic!("bypassed"),
        };
    }

    /// The cache does what the measurements assume: a repeated flow hits, the cycle of
    /// `MISS_FLOWS` flows misses every time.
    fn check(&self) {
        let (mut out, mut rng) = (vec![0u8; 256], Rng(9));
        let count = || {
            let c = *self.dp.borrow().counters();
            (c.flow_cache_hits, c.flow_cache_misses)
        };
        self.send(&self.last, &mut out, &mut rng);
        let (h0, m0) = count();
        for _ in 0..1000 {
            self.send(&self.last, &mut out, &mut rng);
        }
        let (h1, m1) = count();
        assert_eq!((h1 - h0, m1 - m0), (1000, 0), "a repeated flow must hit");
        for p in self.misses.iter().cycle().take(2 * MISS_FLOWS) {
            self.send(p, &mut out, &mut rng);
        }
        let (h2, m2) = count();
        assert_eq!(
            (h2 - h1, m2 - m1),
            (0, 2 * MISS_FLOWS as u64),
            "the miss cycle must miss"
        );
    }

    /// Cached packet to the first and to the last policy, a new flow to the last, the SPD
    /// scan alone and the binding lookup alone (both for the last policy).
    fn measures(&self) -> [Chunked<'_>; OUT_MEASURES] {
        let (mut out_a, mut rng_a) = (vec![0u8; 256], Rng(5));
        let (mut out_b, mut rng_b) = (vec![0u8; 256], Rng(6));
        let (mut out_c, mut rng_c) = (vec![0u8; 256], Rng(7));
        let last_group = 10 * P as u32;
        let flow = Flow::from_ip_packet(&self.last).expect("flow");
        let mut k = 0usize;
        [
            fixed(move || self.send(&self.first, &mut out_a, &mut rng_a)),
            fixed(move || self.send(&self.last, &mut out_b, &mut rng_b)),
            fixed(move || {
                k = (k + 1) % MISS_FLOWS;
                self.send(&self.misses[k], &mut out_c, &mut rng_c);
            }),
            fixed(move || {
                black_box(self.dp.borrow().spd().decide_outbound(black_box(&flow)));
            }),
            fixed(move || {
                black_box(self.dp.borrow().outbound_for(black_box(last_group)));
            }),
        ]
    }
}

/// One row of the outbound table: ns per packet, and the ratios to the 1-policy row.
struct OutRow {
    policies: usize,
    ns: [f64; OUT_MEASURES],
    /// Cached (matches last) and miss, against the same at 1 policy: (median, ±).
    hit_ratio: (f64, f64),
    miss_ratio: (f64, f64),
}

/// Outbound: the flow cache against the SPD's first-match scan, with 1 to 10 000 protect
/// policies, all measured interleaved in the same repetitions so that the ratios between
/// policy counts are taken under the same load.
fn outbound(plan: Plan) -> Vec<OutRow> {
    let c1 = OutCase::<1>::new();
    let c100 = OutCase::<100>::new();
    let c1k = OutCase::<1_000>::new();
    let c10k = OutCase::<10_000>::new();
    let mut ms: Vec<Chunked<'_>> = Vec::new();
    ms.extend(c1.measures());
    ms.extend(c100.measures());
    ms.extend(c1k.measures());
    ms.extend(c10k.measures());
    let p = interleave(plan.reps, plan.budget, &mut ms);
    drop(ms);
    [1, 100, 1_000, 10_000]
        .into_iter()
        .enumerate()
        .map(|(r, policies)| {
            let at = |m: usize| r * OUT_MEASURES + m;
            OutRow {
                policies,
                ns: std::array::from_fn(|m| p.ns(at(m))),
                hit_ratio: (p.ratio(at(1), 1), p.ratio_noise(at(1), 1)),
                miss_ratio: (p.ratio(at(2), 2), p.ratio_noise(at(2), 2)),
            }
        })
        .collect()
}

/// `Ike::poll_timeout` and an idle `poll_transmit` against the SA capacity (no SAs).
fn ike_poll(plan: Plan) -> Vec<(usize, f64, f64)> {
    fn one<const S: usize>(plan: Plan) -> (usize, f64, f64) {
        let mut ike: Box<Ike<SoftCrypto, S, 8>> =
            Box::new(Ike::new(IkeConfig::new(IpAddr::V4(LOCAL))));
        let ike = RefCell::new(&mut ike);
        let mut buf = vec![0u8; 2048];
        let mut ms: Vec<Chunked<'_>> = vec![
            fixed(|| {
                black_box(ike.borrow().poll_timeout());
            }),
            fixed(|| {
                black_box(ike.borrow_mut().poll_transmit(T_TRAFFIC, &mut buf));
            }),
        ];
        let p = interleave(plan.reps, plan.budget, &mut ms);
        (S, p.ns(0), p.ns(1))
    }
    vec![one::<16>(plan), one::<256>(plan), one::<1024>(plan)]
}

pub fn run(plan: Plan) -> Vec<String> {
    let scales = big_stack(move || scaling(plan));
    println!("\n## 3. Timers and per-packet cost against the number of SAs\n");
    println!(
        "`Dataplane<SoftCrypto, N, 4>` holding N inbound aes128-gcm16 SAs under random SPIs, \
         installed over {SPREAD_S} s with soft/hard lifetimes of {SOFT_S}/{HARD_S} s (2 \
         deadlines per SA). The timer loop runs every deadline as a port would (`poll_timeout`, \
         `handle_timeout`, drain `poll_event`, `remove_inbound` on hard expiry) until no SA \
         is left: 2N events. The inbound path is `process_inbound` of a {INNER}-byte inner \
         packet for a random SA (classify, SADB lookup, replay, GCM open, inner checks). \
         Thread CPU time, median of {} runs.\n",
        plan.reps
    );
    println!(
        "| SAs | data plane MB | install ns/SA | `poll_timeout` ns | `handle_timeout` (nothing due) ns | timer loop ns/event | wakeups | ns/wakeup | `process_inbound` ns/pkt |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in &scales {
        println!(
            "| {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.0} | {} | {:.0} | {:.0} |",
            s.n,
            s.bytes as f64 / 1e6,
            s.install_ns,
            s.poll_ns,
            s.spurious_ns,
            s.event_ns,
            s.wakeups,
            s.wakeup_ns,
            s.inbound_ns,
        );
    }
    let (a, c) = (&scales[1], &scales[3]);
    println!(
        "\n100 000 vs 1 000 SAs: poll_timeout x{:.2}, timer event x{:.2}, process_inbound x{:.2} \
         (a per-SA scan would be x100; a heap pop/push grows as log n: x1.67).",
        c.poll_ns / a.poll_ns,
        c.event_ns / a.event_ns,
        c.inbound_ns / a.inbound_ns
    );

    let o = big_stack(move || outbound(plan));
    println!("\n### Outbound: policy lookup against the number of crypto map entries\n");
    println!(
        "`process_outbound` of a {INNER}-byte packet (aes128-gcm16, tunnel) with P protect \
         policies, each bound to its own outbound SA, and the default 64-entry flow cache. \
         *Cached*: the same flow over and over (the packet matches the first or the last \
         policy). *New flow*: {MISS_FLOWS} distinct flows to the last policy in turn, more \
         than the cache holds, so each packet scans the SPD (first match in sequence order, \
         ACL semantics), then is cached. The SPD scan and the binding lookup are also timed \
         alone. All rows are measured interleaved in the same repetitions; the ratios are to \
         the 1-policy row, median of the per-repetition ratios, ± half their range.\n"
    );
    println!(
        "| policies (= SA pairs) | cached, matches first ns/pkt | cached, matches last ns/pkt | new flow, matches last ns/pkt | `Spd::decide_outbound` alone ns | `outbound_for` alone ns | cached vs 1 policy | new flow vs 1 policy |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &o {
        let [f, l, m, scan, bind] = r.ns;
        println!(
            "| {} | {f:.0} | {l:.0} | {m:.0} | {scan:.0} | {bind:.1} | x{:.2} ± {:.2} | x{:.2} ± {:.2} |",
            r.policies, r.hit_ratio.0, r.hit_ratio.1, r.miss_ratio.0, r.miss_ratio.1
        );
    }
    let o10k = &o[3];
    println!(
        "\n10 000 vs 1 policy: cached x{:.2} (a per-policy scan would be x10 000 on the lookup); \
         a new flow's first packet x{:.2} (the scan, which the cache takes off every later \
         packet of the flow).",
        o10k.hit_ratio.0, o10k.miss_ratio.0
    );

    let ik = big_stack(move || ike_poll(plan));
    println!("\n### IKE control plane: `poll_timeout` against the SA capacity\n");
    println!(
        "`Ike<SoftCrypto, SAS, 8>` with no SAs at all: the cost of the scan over the SA slots \
         that `poll_timeout` and `poll_transmit` make on every call.\n"
    );
    println!("| SAS (capacity) | `poll_timeout` ns | idle `poll_transmit` ns |");
    println!("|---:|---:|---:|");
    for (s, pt, tx) in &ik {
        println!("| {s} | {pt:.0} | {tx:.0} |");
    }

    let mut goals = vec![format!(
        "Timers flat in the number of SAs: poll_timeout {:.1}/{:.1}/{:.1} ns and {:.0}/{:.0}/{:.0} ns per \
         lifetime event at 1k/10k/100k SAs; one wakeup per deadline ({} wakeups for {} events at 100k), no periodic scan",
        scales[1].poll_ns,
        scales[2].poll_ns,
        scales[3].poll_ns,
        scales[1].event_ns,
        scales[2].event_ns,
        scales[3].event_ns,
        c.wakeups,
        c.events,
    )];
    goals.push(format!(
        "Inbound per-packet work independent of the number of SAs: process_inbound {:.0}/{:.0}/{:.0} ns at 1k/10k/100k \
         ({:.0} ns with 16 cache-resident SAs; the growth is cache misses on a {:.0} MB table)",
        scales[1].inbound_ns, scales[2].inbound_ns, scales[3].inbound_ns, scales[0].inbound_ns, c.bytes as f64 / 1e6
    ));
    goals.push(format!(
        "Outbound per-packet work independent of the number of policies for a known flow (flow cache): \
         {:.0}/{:.0}/{:.0}/{:.0} ns at 1/100/1000/10000 policies (x{:.2} from 1 to 10000); the first packet of a \
         flow scans the SPD: {:.0} ns at 10000",
        o[0].ns[1], o[1].ns[1], o[2].ns[1], o[3].ns[1], o10k.hit_ratio.0, o10k.ns[2]
    ));
    goals
}

/// For `perf record`: builds the 100 000-SA data plane and runs its timer loop, 3 times.
pub fn spin_timers() {
    big_stack(|| {
        for r in 0..3 {
            let (mut dp, _, _) = build::<100_000>(r);
            let (t, events, wakeups) = drain_timers(&mut dp);
            eprintln!(
                "timer loop: {events} events, {wakeups} wakeups, {:.0} ns/event",
                t.cpu.as_nanos() as f64 / events as f64
            );
        }
    });
}
