//! Timing: thread CPU time as the primary clock (like `openssl speed`, which divides by
//! user CPU time), wall time beside it, repetitions and medians.
//!
//! CPU time rather than wall time because the bench shares two cores with other builds:
//! time spent descheduled is not ours. It cannot remove the other effects of sharing
//! (caches, memory bandwidth, SMT-free but frequency-shared cores), hence repetitions and
//! medians, and ratios taken from measurements interleaved in the same repetition.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// CPU time consumed by the calling thread.
pub fn cpu_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux knows.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(r, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Settings shared by every measurement.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Repetitions of each measurement (the median is reported).
    pub reps: usize,
    /// CPU time per repetition of a throughput measurement.
    pub budget: Duration,
}

/// The median of `v` (the mean of the middle two for an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// Relative spread of `v`: (max - min) / median, for judging the noise.
pub fn spread(v: &[f64]) -> f64 {
    let max = v.iter().copied().fold(f64::MIN, f64::max);
    let min = v.iter().copied().fold(f64::MAX, f64::min);
    (max - min) / median(v)
}

/// Medians over repetitions of several measurements taken together in each repetition
/// (interleaved, in rotating order, so that a change of load hits them all alike).
pub struct Paired {
    pub cpu: Vec<Vec<f64>>,
    pub wall: Vec<Vec<f64>>,
}

impl Paired {
    /// Median CPU ns/op of measurement `k`.
    pub fn ns(&self, k: usize) -> f64 {
        median(&self.cpu[k])
    }

    /// Median over repetitions of the per-repetition ratio `cpu[a] / cpu[b]`.
    pub fn ratio(&self, a: usize, b: usize) -> f64 {
        let r: Vec<f64> = self.cpu[a]
            .iter()
            .zip(&self.cpu[b])
            .map(|(x, y)| x / y)
            .collect();
        median(&r)
    }

    /// Half the range of the per-repetition ratios `cpu[a] / cpu[b]`: the run-to-run noise
    /// of [`Paired::ratio`].
    pub fn ratio_noise(&self, a: usize, b: usize) -> f64 {
        let r: Vec<f64> = self.cpu[a]
            .iter()
            .zip(&self.cpu[b])
            .map(|(x, y)| x / y)
            .collect();
        let max = r.iter().copied().fold(f64::MIN, f64::max);
        let min = r.iter().copied().fold(f64::MAX, f64::min);
        (max - min) / 2.0
    }

    /// Median wall/CPU ratio over everything: 1.0 means never descheduled.
    pub fn wall_over_cpu(&self) -> f64 {
        let mut r = Vec::new();
        for (c, w) in self.cpu.iter().zip(&self.wall) {
            r.extend(c.iter().zip(w).map(|(c, w)| w / c));
        }
        median(&r)
    }

    /// The largest relative spread among the measurements.
    pub fn max_spread(&self) -> f64 {
        self.cpu.iter().map(|v| spread(v)).fold(0.0, f64::max)
    }
}

/// One timed chunk of work: CPU time, wall time, operations done.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timed {
    pub cpu: Duration,
    pub wall: Duration,
    pub ops: u64,
}

/// A measurement that can be run in short chunks, so that several can be interleaved
/// finely: whatever the other tenants of the machine do hits them all alike.
pub type Chunked<'a> = Box<dyn FnMut() -> Timed + 'a>;

/// Chunks of ~`CHUNK` of repeated calls of `f` (one operation each).
pub fn fixed<'a>(mut f: impl FnMut() + 'a) -> Chunked<'a> {
    let mut n: Option<u64> = None;
    Box::new(move || {
        let n = *n.get_or_insert_with(|| {
            // Calibrate (and warm up) by CPU time, the best of three tries: a burst of
            // interference during calibration must not shrink the chunks until the clock
            // reads dominate them. One untimed call first, so a cold call cannot either.
            f();
            let mut best = f64::MAX;
            for _ in 0..3 {
                let mut k: u64 = 1;
                loop {
                    let t = cpu_now();
                    for _ in 0..k {
                        f();
                    }
                    let e = cpu_now() - t;
                    if e >= CHUNK / 8 || k >= 1 << 30 {
                        best = best.min(e.as_nanos() as f64 / k as f64);
                        break;
                    }
                    k *= 2;
                }
            }
            ((CHUNK.as_nanos() as f64 / best.max(1.0)) as u64).max(1)
        });
        let (c, w) = (cpu_now(), Instant::now());
        for _ in 0..n {
            f();
        }
        Timed {
            cpu: cpu_now() - c,
            wall: w.elapsed(),
            ops: n,
        }
    })
}

/// Chunks of one batch: `prep` (untimed) readies it, `run` (timed) processes it and
/// returns how many operations it did.
pub fn batched<'a>(mut prep: impl FnMut() + 'a, mut run: impl FnMut() -> u64 + 'a) -> Chunked<'a> {
    let mut warm = false;
    Box::new(move || {
        if !warm {
            prep();
            black_box(run());
            warm = true;
        }
        prep();
        let (c, w) = (cpu_now(), Instant::now());
        let ops = run();
        Timed {
            cpu: cpu_now() - c,
            wall: w.elapsed(),
            ops,
        }
    })
}

/// Length of one chunk of [`fixed`].
const CHUNK: Duration = Duration::from_micros(200);

/// Runs the measurements `ms` `reps` times. Within a repetition they are interleaved
/// chunk by chunk (round robin) until each has had `budget` of CPU time.
pub fn interleave(reps: usize, budget: Duration, ms: &mut [Chunked<'_>]) -> Paired {
    let k = ms.len();
    let mut cpu = vec![Vec::with_capacity(reps); k];
    let mut wall = vec![Vec::with_capacity(reps); k];
    for _ in 0..reps {
        let mut acc = vec![Timed::default(); k];
        while acc.iter().any(|a| a.cpu < budget) {
            for (m, a) in ms.iter_mut().zip(acc.iter_mut()) {
                if a.cpu < budget {
                    let t = m();
                    a.cpu += t.cpu;
                    a.wall += t.wall;
                    a.ops += t.ops;
                }
            }
        }
        for (i, a) in acc.iter().enumerate() {
            cpu[i].push(a.cpu.as_nanos() as f64 / a.ops as f64);
            wall[i].push(a.wall.as_nanos() as f64 / a.ops as f64);
        }
    }
    Paired { cpu, wall }
}
/// MB/s (10^6 bytes per second, as `openssl speed` counts) for `bytes` per `ns`.
pub fn mbps(bytes: usize, ns: f64) -> f64 {
    bytes as f64 / ns * 1e3
}

/// The load average as `/proc/loadavg` has it (1, 5, 15 minutes).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// A global allocator that counts allocations, to check the hot paths make none.
pub struct Counting;

static ALLOCS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

/// Allocations (and reallocations) made so far by the whole process.
pub fn allocations() -> u64 {
    ALLOCS.load(std::sync::atomic::Ordering::Relaxed)
}
