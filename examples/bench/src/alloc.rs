//! The "no allocation" goal, checked: a counting global allocator around the library's
//! hot paths (the bench's own set-up allocates freely, outside the counted regions).

use std::hint::black_box;

use hal_traits::DhGroup;
use ipsec_core::dataplane::{Dataplane, Inbound, Outbound};
use ipsec_core::esp::{Direction, EspSa};
use ipsec_core::lifetime::LifetimeConfig;
use ipsec_core::sadb::Sadb;
use ipsec_core::spd::{AddrRange, Policy, PolicyAction, Selector};
use ipsec_core::{Duration, Instant};
use ipsec_soft_crypto::SoftCrypto;

use crate::timing::allocations;
use crate::util::{CASES, Rng, config, ipv4_udp, keys, sa};

const NOW: Instant = Instant::from_secs(1);
const CALLS: usize = 1000;

/// Counts the allocations `f` makes.
fn count(f: impl FnOnce()) -> u64 {
    let a = allocations();
    f();
    allocations() - a
}

pub fn run() -> Vec<String> {
    let mut rows: Vec<(String, usize, u64)> = Vec::new();
    for case in &CASES {
        let t = case.transform;
        let iv = [0x42u8; 16];
        let iv = matches!(t.enc, ipsec_core::esp::Encryption::Cbc(_)).then_some(&iv[..t.iv_len()]);
        let mut tx = sa(7000, Direction::Outbound, t, 0);
        let mut rx = sa(7000, Direction::Inbound, t, 64);
        let mut buf = vec![0u8; t.sealed_len(512)];
        let n = count(|| {
            for _ in 0..CALLS {
                let len = tx.seal_in_place(NOW, 4, &mut buf, 512, iv).expect("seal");
                black_box(rx.open_in_place(NOW, &mut buf[..len]).expect("open"));
            }
        });
        rows.push((
            format!("{}: seal_in_place + open_in_place", case.name),
            2 * CALLS,
            n,
        ));

        let inner = ipv4_udp(512);
        let mut rng = Rng(1);
        let mut tx = sa(7001, Direction::Outbound, t, 0);
        let mut rx = sa(7001, Direction::Inbound, t, 64);
        let mut out = vec![0u8; 20 + t.sealed_len(512)];
        let n = count(|| {
            for _ in 0..CALLS {
                let len = tx
                    .encapsulate(NOW, &inner, None, &mut rng, &mut out)
                    .expect("encapsulate");
                black_box(rx.decapsulate(NOW, &mut out[..len]).expect("decapsulate"));
            }
        });
        rows.push((
            format!("{}: encapsulate + decapsulate", case.name),
            2 * CALLS,
            n,
        ));
    }

    // The data plane: SPD, SADB, ESP both ways, then every lifetime deadline.
    {
        let t = CASES[0].transform;
        let (e, a) = keys(t);
        let mut dp: Box<Dataplane<SoftCrypto, 64, 8>> =
            Box::new(Dataplane::new(PolicyAction::Bypass));
        let net = |o: u8| {
            AddrRange::from_prefix(std::net::IpAddr::V4([10, o, 0, 0].into()), 16).expect("net")
        };
        dp.spd_mut()
            .insert(Policy {
                seq: 10,
                selector: Selector::new(net(1), net(2)).expect("sel"),
                action: PolicyAction::Protect { sa_group: 10 },
            })
            .expect("policy");
        let life = LifetimeConfig {
            soft_time: Some(Duration::from_secs(90)),
            hard_time: Some(Duration::from_secs(100)),
            soft_bytes: None,
            hard_bytes: None,
        };
        let mut co = config(0x9000, Direction::Outbound, t, 0);
        co.lifetime = life;
        let mut ci = config(0x9000, Direction::Inbound, t, 64);
        ci.lifetime = life;
        let o: EspSa<SoftCrypto> = EspSa::new(co, &e, &a, NOW).expect("sa");
        let i: EspSa<SoftCrypto> = EspSa::new(ci, &e, &a, NOW).expect("sa");
        dp.install_outbound(10, o).expect("install");
        dp.install_inbound(i).expect("install");
        let inner = ipv4_udp(512);
        let mut rng = Rng(3);
        let mut out = vec![0u8; 2048];
        let n = count(|| {
            for _ in 0..CALLS {
                let len = match dp
                    .process_outbound(NOW, &inner, &mut rng, &mut out)
                    .expect("outbound")
                {
                    Outbound::Protected { len, .. } => len,
                    Outbound::Bypass => panic!("bypass"),
                };
                match dp.process_inbound(NOW, &mut out[..len]).expect("inbound") {
                    Inbound::Decapsulated { packet, .. } => black_box(packet.len()),
                    _ => panic!("not ESP"),
                };
            }
        });
        rows.push((
            "Dataplane: process_outbound + process_inbound".into(),
            2 * CALLS,
            n,
        ));
        let mut calls = 0;
        let n = count(|| {
            while let Some(t) = dp.poll_timeout() {
                dp.handle_timeout(t);
                calls += 2;
                while let Some(ev) = dp.poll_event() {
                    black_box(ev);
                }
                if t > Instant::from_secs(200) {
                    break;
                }
            }
        });
        rows.push((
            "Dataplane: poll_timeout + handle_timeout (lifetimes)".into(),
            calls,
            n,
        ));
    }

    // The SADB.
    {
        let t = CASES[0].transform;
        let mut db: Box<Sadb<EspSa<SoftCrypto>, 1024>> = Box::new(Sadb::new());
        let sas: Vec<_> = (0..CALLS as u32)
            .map(|k| sa(0x100 + k, Direction::Inbound, t, 64))
            .collect();
        let n = count(|| {
            let mut hs = [None; CALLS];
            for (k, s) in sas.into_iter().enumerate() {
                hs[k] = Some(db.insert(s).expect("insert"));
            }
            for k in 0..CALLS as u32 {
                black_box(db.lookup_spi(0x100 + k).expect("lookup"));
            }
            for h in hs.into_iter().flatten() {
                black_box(db.remove(h));
            }
        });
        rows.push(("Sadb: insert + lookup_spi + remove".into(), 3 * CALLS, n));
    }

    // One IKE handshake (the nodes are built before counting).
    {
        let mut nodes = crate::ike::fresh_pair(DhGroup::Modp1024, 77);
        let mut buf = vec![0u8; 4096];
        let mut msgs = 0;
        let n = count(|| msgs = crate::ike::handshake(&mut nodes, &mut buf));
        rows.push((
            "Ike: Main Mode + Quick Mode handshake (both sides)".into(),
            msgs,
            n,
        ));
    }

    println!("\n### Allocations on the hot paths\n");
    println!(
        "A counting global allocator around each path (set-up excluded). \"calls\" counts \
         library calls that carry packets (or datagrams, for IKE).\n"
    );
    println!("| path | calls | allocations |");
    println!("|---|---:|---:|");
    for (p, c, n) in &rows {
        println!("| {p} | {c} | {n} |");
    }
    let total: u64 = rows.iter().map(|r| r.2).sum();
    let calls: usize = rows.iter().map(|r| r.1).sum();
    vec![if total == 0 {
        format!("No allocation: MET (0 allocations in {calls} hot-path calls)")
    } else {
        format!("No allocation: MISSED ({total} allocations in {calls} hot-path calls)")
    }]
}
