//! Memory per SA (sizes of the fixed-capacity structures) and SADB lookup by SPI at
//! 1 000, 10 000 and 100 000 SAs.

use std::collections::HashSet;
use std::hint::black_box;
use std::mem::size_of;
use std::net::IpAddr;

use hal_traits::AeadAlg;
use ipsec_core::dataplane::Dataplane;
use ipsec_core::esp::{Direction, Encryption, EspConfig, EspCounters, EspSa, Transform};
use ipsec_core::gre::GreTunnel;
use ipsec_core::lifetime::Lifetime;
use ipsec_core::replay::ReplayWindow;
use ipsec_core::sadb::{SaEntry, Sadb};
use ipsec_ike::v1::{ChildSa, Ike, IkeConfig};
use ipsec_nat_t::keepalive::NatKeepalive;
use ipsec_soft_crypto::{SoftAead, SoftCbc, SoftCrypto, SoftDh, SoftMac};

use crate::timing::{Chunked, Plan, fixed, interleave};
use crate::util::{REMOTE, Rng, big_stack, sa};

type Sa = EspSa<SoftCrypto>;
type Dp<const N: usize> = Dataplane<SoftCrypto, N, 1>;

fn per<const A: usize, const B: usize>(big: usize, small: usize) -> f64 {
    (big as f64 - small as f64) / (B - A) as f64
}

fn sizes() -> Vec<String> {
    let esp = size_of::<Sa>();
    let sadb_slot = per::<1000, 2000>(size_of::<Sadb<Sa, 2000>>(), size_of::<Sadb<Sa, 1000>>());
    let dp_pair = per::<1000, 2000>(size_of::<Dp<2000>>(), size_of::<Dp<1000>>());
    let ike_sa = per::<16, 32>(
        size_of::<Ike<SoftCrypto, 32, 32>>(),
        size_of::<Ike<SoftCrypto, 16, 32>>(),
    );
    let ike_child = per::<32, 64>(
        size_of::<Ike<SoftCrypto, 16, 64>>(),
        size_of::<Ike<SoftCrypto, 16, 32>>(),
    );
    let ike_fixed = size_of::<Ike<SoftCrypto, 0, 0>>();
    let ike_16_32 = size_of::<Ike<SoftCrypto, 16, 32>>();

    println!("\n## 4. Memory\n");
    println!(
        "Sizes from `size_of` (x86_64, `SoftCrypto`, replay bitmap W = 2). \"per slot\" figures \
         are differences between two capacities, so they include every per-capacity array \
         (hash links, timer heaps, ...). Nothing is allocated at run time: this is all of it.\n"
    );
    println!("| what | bytes |");
    println!("|---|---:|");
    let rows: Vec<(String, String)> = vec![
        (
            "ESP SA pair (2 x `EspSa<SoftCrypto>`)".into(),
            format!("{}", 2 * esp),
        ),
        ("  one `EspSa<SoftCrypto>`".into(), format!("{esp}")),
        (
            "  of which: `SoftAead` / `SoftCbc` / `SoftMac` (the enum sizes, largest variant)"
                .into(),
            format!(
                "{} / {} / {}",
                size_of::<SoftAead>(),
                size_of::<SoftCbc>(),
                size_of::<SoftMac>()
            ),
        ),
        (
            "  of which: `EspConfig` / `ReplayWindow<2>` / `Lifetime` / `EspCounters`".into(),
            format!(
                "{} / {} / {} / {}",
                size_of::<EspConfig>(),
                size_of::<ReplayWindow<2>>(),
                size_of::<Lifetime>(),
                size_of::<EspCounters>()
            ),
        ),
        (
            "`Sadb<EspSa, N>` per slot (entry + index)".into(),
            format!("{sadb_slot:.0}"),
        ),
        (
            "`Sadb<EspSa, N>` per slot, index only (bucket, link, SPI, generation)".into(),
            format!("{:.0}", sadb_slot - size_of::<Option<Sa>>() as f64),
        ),
        (
            "`Dataplane<SoftCrypto, N, ..>` per SA pair (both SADBs, lifetime/idle/PMTU timers)"
                .into(),
            format!("{dp_pair:.0}"),
        ),
        (
            "`Ike<SoftCrypto, SAS, CHILDREN>` per IKE SA slot".into(),
            format!("{ike_sa:.0}"),
        ),
        (
            "`Ike<SoftCrypto, SAS, CHILDREN>` per child SA record".into(),
            format!("{ike_child:.0}"),
        ),
        (
            "`Ike<SoftCrypto, 0, 0>` fixed part (config, rx buffer, queues)".into(),
            format!("{ike_fixed}"),
        ),
        (
            "`Ike<SoftCrypto, 16, 32>` (the default capacities) / per IKE SA".into(),
            format!("{ike_16_32} / {:.0}", ike_16_32 as f64 / 16.0),
        ),
        ("`IkeConfig`".into(), format!("{}", size_of::<IkeConfig>())),
        (
            "a small firmware: `Dataplane<SoftCrypto, 16, 8>` / `Ike<SoftCrypto, 4, 8>`".into(),
            format!(
                "{} / {}",
                size_of::<Dataplane<SoftCrypto, 16, 8>>(),
                size_of::<Ike<SoftCrypto, 4, 8>>()
            ),
        ),
        (
            "one SPD entry (`spd::Policy`)".into(),
            format!("{}", size_of::<ipsec_core::spd::Policy>()),
        ),
        (
            "outbound flow cache: per entry / the default 64 entries (in `Dataplane`)".into(),
            format!(
                "{} / {}",
                ipsec_core::dataplane::flow::ENTRY_BYTES,
                size_of::<Dataplane<SoftCrypto, 16, 8>>()
                    - size_of::<Dataplane<SoftCrypto, 16, 8, 2, 4, 4096, 0>>()
            ),
        ),
        (
            "`ChildSa` (the event carrying a negotiated pair)".into(),
            format!("{}", size_of::<ChildSa>()),
        ),
        (
            "`SoftDh` (a DH key pair in flight)".into(),
            format!("{}", size_of::<SoftDh>()),
        ),
        (
            "NAT-T keepalive state (`ipsec_nat_t::NatKeepalive`)".into(),
            format!("{}", size_of::<NatKeepalive>()),
        ),
        (
            "GRE tunnel (`ipsec_core::gre::GreTunnel`)".into(),
            format!("{}", size_of::<GreTunnel>()),
        ),
    ];
    for (k, v) in &rows {
        println!("| {k} | {v} |");
    }
    vec![format!(
        "Memory: {} B per ESP SA pair, {:.0} B per SA pair of data-plane capacity, {:.0} B per IKE SA slot (+{:.0} B per child record)",
        2 * esp,
        dp_pair,
        ike_sa,
        ike_child
    )]
}

/// A full SADB of `N` aes128-gcm16 SAs with random SPIs; returns it and its SPIs.
fn filled<const N: usize>(rng: &mut Rng) -> (Box<Sadb<Sa, N>>, Vec<u32>) {
    let t = Transform {
        enc: Encryption::Gcm(AeadAlg::Aes128Gcm16),
        auth: None,
    };
    let mut db: Box<Sadb<Sa, N>> = Box::new(Sadb::with_seed(rng.next_u64()));
    let mut spis = Vec::with_capacity(N);
    let mut seen = HashSet::with_capacity(N);
    while spis.len() < N {
        let spi = (rng.next_u64() as u32) | 0x100;
        if !seen.insert(spi) {
            continue;
        }
        db.insert(sa(spi, Direction::Inbound, t, 64))
            .expect("insert");
        spis.push(spi);
    }
    (db, spis)
}

/// A minimal SADB entry, to time the index alone (the table stays cache-resident).
struct Tiny {
    spi: u32,
    dst: IpAddr,
}

impl SaEntry for Tiny {
    fn spi(&self) -> u32 {
        self.spi
    }
    fn dst(&self) -> IpAddr {
        self.dst
    }
}

fn filled_tiny<const N: usize>(spis: &[u32]) -> Box<Sadb<Tiny, N>> {
    let mut db: Box<Sadb<Tiny, N>> = Box::new(Sadb::with_seed(0x1234));
    for &spi in spis {
        db.insert(Tiny {
            spi,
            dst: IpAddr::V4(REMOTE),
        })
        .expect("insert");
    }
    db
}

/// `count` random queries: SPIs of the table (hits) or SPIs not in it (misses).
fn queries(rng: &mut Rng, spis: &[u32], hits: bool, count: usize) -> Vec<u32> {
    let set: HashSet<u32> = spis.iter().copied().collect();
    (0..count)
        .map(|_| {
            if hits {
                spis[(rng.next_u64() % spis.len() as u64) as usize]
            } else {
                loop {
                    let s = rng.next_u64() as u32 | 0x100;
                    if !set.contains(&s) {
                        break s;
                    }
                }
            }
        })
        .collect()
}

const QUERIES: usize = 1 << 16;

fn lookup_bench(plan: Plan) -> Vec<String> {
    let mut rng = Rng(0x5adb);
    let (db1, s1) = filled::<1_000>(&mut rng);
    let (db2, s2) = filled::<10_000>(&mut rng);
    let (db3, s3) = filled::<100_000>(&mut rng);
    let (t1, t2, t3) = (
        filled_tiny::<1_000>(&s1),
        filled_tiny::<10_000>(&s2),
        filled_tiny::<100_000>(&s3),
    );
    let dst = IpAddr::V4(REMOTE);
    let q = [
        (
            queries(&mut rng, &s1, true, QUERIES),
            queries(&mut rng, &s1, false, QUERIES),
        ),
        (
            queries(&mut rng, &s2, true, QUERIES),
            queries(&mut rng, &s2, false, QUERIES),
        ),
        (
            queries(&mut rng, &s3, true, QUERIES),
            queries(&mut rng, &s3, false, QUERIES),
        ),
    ];
    // One closure per (table, hit/miss, lookup kind), all interleaved.
    macro_rules! m {
        ($db:expr, $q:expr, $expect:expr, spi) => {{
            let (db, q) = (&$db, &$q);
            let mut i = 0usize;
            fixed(move || {
                let r = db.lookup_spi(black_box(q[i & (QUERIES - 1)]));
                debug_assert_eq!(r.is_some(), $expect);
                black_box(r);
                i += 1;
            })
        }};
        ($db:expr, $q:expr, $expect:expr, dst) => {{
            let (db, q) = (&$db, &$q);
            let mut i = 0usize;
            fixed(move || {
                let r = db.lookup(black_box(q[i & (QUERIES - 1)]), dst);
                debug_assert_eq!(r.is_some(), $expect);
                black_box(r);
                i += 1;
            })
        }};
    }
    let mut ms: Vec<Chunked<'_>> = vec![
        m!(db1, q[0].0, true, spi),
        m!(db1, q[0].1, false, spi),
        m!(db1, q[0].0, true, dst),
        m!(db2, q[1].0, true, spi),
        m!(db2, q[1].1, false, spi),
        m!(db2, q[1].0, true, dst),
        m!(db3, q[2].0, true, spi),
        m!(db3, q[2].1, false, spi),
        m!(db3, q[2].0, true, dst),
        m!(t1, q[0].0, true, spi),
        m!(t1, q[0].1, false, spi),
        m!(t2, q[1].0, true, spi),
        m!(t2, q[1].1, false, spi),
        m!(t3, q[2].0, true, spi),
        m!(t3, q[2].1, false, spi),
    ];
    let p = interleave(plan.reps, plan.budget, &mut ms);
    // Sanity, outside the timing: hits hit and misses miss.
    assert!(
        q[2].0
            .iter()
            .take(1000)
            .all(|&s| db3.lookup_spi(s).is_some())
    );
    assert!(
        q[2].1
            .iter()
            .take(1000)
            .all(|&s| db3.lookup_spi(s).is_none())
    );

    println!("\n### SADB lookup by SPI (full tables, random SPIs, load factor 1)\n");
    println!(
        "`Sadb<EspSa<SoftCrypto>, N>` filled to capacity with aes128-gcm16 SAs under random \
         SPIs; {QUERIES} random queries cycled. ns per lookup, median of {} runs. Misses walk a \
         whole chain; `lookup` also compares the destination address.\n",
        plan.reps
    );
    println!(
        "| SAs | table MB | `lookup_spi` hit ns | `lookup_spi` miss ns | `lookup(spi, dst)` hit ns | index alone (24-byte entries): hit ns | miss ns |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (k, n) in [1_000usize, 10_000, 100_000].iter().enumerate() {
        let bytes = match k {
            0 => size_of::<Sadb<Sa, 1_000>>(),
            1 => size_of::<Sadb<Sa, 10_000>>(),
            _ => size_of::<Sadb<Sa, 100_000>>(),
        };
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            n,
            bytes as f64 / 1e6,
            p.ns(3 * k),
            p.ns(3 * k + 1),
            p.ns(3 * k + 2),
            p.ns(9 + 2 * k),
            p.ns(10 + 2 * k),
        );
    }
    let hit_ratio = p.ratio(6, 0);
    let miss_ratio = p.ratio(7, 1);
    let idx_hit = p.ratio(13, 9);
    let idx_miss = p.ratio(14, 10);
    println!(
        "\n100 000 vs 1 000 SAs: hit x{hit_ratio:.2}, miss x{miss_ratio:.2}; index alone: hit \
         x{idx_hit:.2}, miss x{idx_miss:.2} (a linear scan would be x100). A hit with real \
         entries reads the entry's slot (1.9 KB apart): at 100 000 SAs that is a miss to DRAM."
    );
    vec![format!(
        "SADB lookup O(1): 100k vs 1k SAs costs x{idx_hit:.2}/x{idx_miss:.2} (hit/miss) for the index alone, \
         x{hit_ratio:.2}/x{miss_ratio:.2} with real 1.9 KB entries (cache misses of a {:.0} MB table, not work)",
        size_of::<Sadb<Sa, 100_000>>() as f64 / 1e6
    )]
}

pub fn run(plan: Plan) -> Vec<String> {
    let mut out = sizes();
    out.extend(big_stack(move || lookup_bench(plan)));
    out
}
