//! Reverse route injection: dynamic routes with the SAs (withdrawn on idle timeout,
//! DELETE and DPD dead), static routes from configuration, dynamic peers' proxy IDs,
//! reference counting, redundancy gating, and a `RouteTable` driven directly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use hal_traits::MacAlg;
use hal_traits::route::{NextHop, Route, RouteError, RouteTable};
use ipsec_core::dataplane::Dataplane;
use ipsec_core::esp::{Direction, Encryption, EspConfig, EspSa, SaEvent, Transform};
use ipsec_core::ha::rri::{NextHopPolicy, Rri, RriConfig, RriError, RriEvent, RriMode};
use ipsec_core::spd::{AddrRange, PolicyAction, Selector};
use ipsec_core::{Duration, Instant};
use ipsec_soft_crypto::SoftCrypto;

fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

fn sel(remote: [u8; 4], len: u8) -> Selector {
    Selector::new(
        AddrRange::from_prefix(v4([10, 0, 1, 0]), 24).unwrap(),
        AddrRange::from_prefix(v4(remote), len).unwrap(),
    )
    .unwrap()
}

fn route(dest: [u8; 4], len: u8, via: IpAddr) -> Route {
    Route {
        dest: v4(dest),
        prefix_len: len,
        next_hop: NextHop::Gateway(via),
        distance: 1,
        tag: 0,
    }
}

fn events<const S: usize, const R: usize>(r: &mut Rri<S, R>) -> Vec<RriEvent> {
    std::iter::from_fn(|| r.poll_event()).collect()
}

const SPOKE1: [u8; 4] = [203, 0, 113, 5];
const SPOKE2: [u8; 4] = [203, 0, 113, 6];

#[test]
fn ha_dynamic_routes_follow_the_sas() {
    let mut rri: Rri<8, 8> = Rri::new(RriConfig::default());
    assert!(events(&mut rri).is_empty());
    rri.sa_up(0x1001, &sel([10, 0, 68, 0], 24), v4(SPOKE1))
        .unwrap();
    let r68 = route([10, 0, 68, 0], 24, v4(SPOKE1));
    assert_eq!(events(&mut rri), vec![RriEvent::RouteAdd(r68)]);
    assert!(events(&mut rri).is_empty(), "never injected twice");
    // DELETE received for the pair: withdrawn.
    assert!(rri.sa_down(0x1001));
    assert_eq!(events(&mut rri), vec![RriEvent::RouteRemove(r68)]);
    assert!(!rri.sa_down(0x1001));
    assert!(events(&mut rri).is_empty(), "never withdrawn twice");

    // DPD declares the peer dead: all its pairs' routes go.
    rri.sa_up(0x2001, &sel([10, 0, 68, 0], 24), v4(SPOKE1))
        .unwrap();
    rri.sa_up(0x2002, &sel([10, 0, 69, 0], 24), v4(SPOKE1))
        .unwrap();
    rri.sa_up(0x3001, &sel([10, 0, 70, 0], 24), v4(SPOKE2))
        .unwrap();
    assert_eq!(events(&mut rri).len(), 3);
    assert_eq!(rri.peer_down(v4(SPOKE1)), 2);
    let ev = events(&mut rri);
    assert_eq!(ev.len(), 2);
    for r in [
        route([10, 0, 68, 0], 24, v4(SPOKE1)),
        route([10, 0, 69, 0], 24, v4(SPOKE1)),
    ] {
        assert!(ev.contains(&RriEvent::RouteRemove(r)));
    }
    assert_eq!(rri.injected().count(), 1);
}

#[test]
fn ha_routes_withdrawn_on_idle_timeout_from_the_data_plane() {
    let t = Transform {
        enc: Encryption::Null,
        auth: Some(MacAlg::HmacSha1_96),
    };
    let (a, b) = (v4([192, 0, 2, 100]), v4(SPOKE1));
    let mut dp: Dataplane<SoftCrypto, 4, 2> = Dataplane::new(PolicyAction::Discard);
    dp.set_idle_time(Some(Duration::from_secs(120)));
    let mut ci = EspConfig::tunnel(0x1001, Direction::Inbound, t, a, b);
    ci.selector = Some(sel([10, 0, 68, 0], 24));
    let co = EspConfig::tunnel(0x2001, Direction::Outbound, t, a, b);
    let si: EspSa<SoftCrypto> = EspSa::new(ci.clone(), &[], &[7; 20], Instant::ZERO).unwrap();
    let so: EspSa<SoftCrypto> = EspSa::new(co, &[], &[8; 20], Instant::ZERO).unwrap();
    dp.install_pair(1, si, so).unwrap();
    let mut rri: Rri<4, 4> = Rri::new(RriConfig::default());
    rri.sa_up(0x1001, ci.selector.as_ref().unwrap(), b).unwrap();
    assert_eq!(events(&mut rri).len(), 1);
    // No traffic for 120 s: the data plane deletes the pair; the host withdraws the route.
    let deadline = dp.poll_timeout().unwrap();
    assert_eq!(deadline, Instant::from_secs(120));
    dp.handle_timeout(deadline);
    while let Some(e) = dp.poll_event() {
        if let (Direction::Inbound, SaEvent::IdleExpired { spi }) = (e.direction, e.event) {
            assert!(rri.sa_down(spi));
        }
    }
    assert_eq!(
        events(&mut rri),
        vec![RriEvent::RouteRemove(route([10, 0, 68, 0], 24, b))]
    );
}

#[test]
fn ha_static_routes_exist_from_configuration() {
    let cfg = RriConfig {
        mode: RriMode::Static,
        ..RriConfig::default()
    };
    let mut rri: Rri<8, 8> = Rri::new(cfg);
    let remote = AddrRange::from_prefix(v4([10, 0, 68, 0]), 24).unwrap();
    rri.add_static(&remote, v4(SPOKE1)).unwrap();
    let r = route([10, 0, 68, 0], 24, v4(SPOKE1));
    assert_eq!(events(&mut rri), vec![RriEvent::RouteAdd(r)]);
    // SAs come and go: the route stays (the legacy black-hole behaviour).
    rri.sa_up(0x1001, &sel([10, 0, 68, 0], 24), v4(SPOKE1))
        .unwrap();
    assert!(rri.sa_down(0x1001));
    assert_eq!(rri.peer_down(v4(SPOKE1)), 0);
    assert!(events(&mut rri).is_empty());
    assert_eq!(rri.injected().copied().collect::<Vec<_>>(), vec![r]);
    // Removing the crypto map entry removes it.
    rri.remove_static(&remote, v4(SPOKE1));
    assert_eq!(events(&mut rri), vec![RriEvent::RouteRemove(r)]);
}

#[test]
fn ha_dynamic_peer_routes_come_from_the_proxy_id() {
    // A dynamic crypto map: the spoke's address is unknown until it connects; the route is
    // the remote half of the selector it proposed, here a host and a range.
    let cfg = RriConfig {
        next_hop: NextHopPolicy::RemotePeer(v4([192, 0, 2, 254])),
        distance: 5,
        tag: 42,
        ..RriConfig::default()
    };
    let mut rri: Rri<4, 16> = Rri::new(cfg);
    let proxy = Selector::new(
        AddrRange::from_prefix(v4([10, 0, 1, 0]), 24).unwrap(),
        AddrRange::new(v4([172, 16, 0, 1]), v4([172, 16, 0, 6])).unwrap(),
    )
    .unwrap();
    rri.sa_up(0x1001, &proxy, v4([198, 51, 100, 77])).unwrap();
    let got: Vec<String> = events(&mut rri)
        .into_iter()
        .map(|e| match e {
            RriEvent::RouteAdd(r) => r.to_string(),
            RriEvent::RouteRemove(_) => panic!(),
        })
        .collect();
    assert_eq!(
        got,
        [
            "172.16.0.1/32 via 192.0.2.254 [5] tag 42",
            "172.16.0.2/31 via 192.0.2.254 [5] tag 42",
            "172.16.0.4/31 via 192.0.2.254 [5] tag 42",
            "172.16.0.6/32 via 192.0.2.254 [5] tag 42",
        ]
    );
    // Interface next hop.
    let mut rri: Rri<4, 4> = Rri::new(RriConfig {
        next_hop: NextHopPolicy::Interface(3),
        ..RriConfig::default()
    });
    rri.sa_up(1, &sel([10, 9, 0, 0], 16), v4(SPOKE2)).unwrap();
    let e = events(&mut rri);
    assert!(matches!(
        e[0],
        RriEvent::RouteAdd(Route {
            next_hop: NextHop::Interface(3),
            prefix_len: 16,
            ..
        })
    ));
}

#[test]
fn ha_reference_counting_two_sas_one_subnet() {
    let mut rri: Rri<8, 8> = Rri::new(RriConfig::default());
    let r = route([10, 0, 68, 0], 24, v4(SPOKE1));
    rri.sa_up(0x1001, &sel([10, 0, 68, 0], 24), v4(SPOKE1))
        .unwrap();
    // A rekey: the new pair comes up before the old one is deleted.
    rri.sa_up(0x1002, &sel([10, 0, 68, 0], 24), v4(SPOKE1))
        .unwrap();
    assert_eq!(events(&mut rri), vec![RriEvent::RouteAdd(r)]);
    assert_eq!(rri.references(&r), Some((2, false)));
    assert_eq!(
        rri.sa_up(0x1002, &sel([10, 0, 68, 0], 24), v4(SPOKE1)),
        Err(RriError::DuplicateSa)
    );
    rri.sa_down(0x1001);
    assert!(events(&mut rri).is_empty(), "still needed by 0x1002");
    rri.sa_down(0x1002);
    assert_eq!(events(&mut rri), vec![RriEvent::RouteRemove(r)]);
    assert_eq!(rri.references(&r), None, "entry freed");
    // Fixed capacity: a full route table is an error, and nothing changes.
    let mut small: Rri<8, 1> = Rri::new(RriConfig::default());
    small
        .sa_up(1, &sel([10, 0, 68, 0], 24), v4(SPOKE1))
        .unwrap();
    assert_eq!(
        small.sa_up(2, &sel([10, 0, 69, 0], 24), v4(SPOKE1)),
        Err(RriError::Full)
    );
    assert_eq!(small.sa_count(), 1);
}

#[test]
fn ha_no_injection_while_standby() {
    let mut rri: Rri<8, 8> = Rri::new(RriConfig::default());
    rri.bind_redundancy();
    assert!(!rri.is_injecting());
    rri.sa_up(0x1001, &sel([10, 0, 68, 0], 24), v4(SPOKE1))
        .unwrap();
    assert!(events(&mut rri).is_empty(), "Standby: nothing injected");
    let r = route([10, 0, 68, 0], 24, v4(SPOKE1));
    rri.set_active(true);
    assert_eq!(events(&mut rri), vec![RriEvent::RouteAdd(r)]);
    rri.set_active(false);
    assert_eq!(events(&mut rri), vec![RriEvent::RouteRemove(r)]);
    // An SA going away while Standby produces no withdrawal of a route never injected.
    rri.sa_down(0x1001);
    assert!(events(&mut rri).is_empty());
    rri.set_active(true);
    assert!(events(&mut rri).is_empty());
}

/// A table that fails once, to show that a failed change is retried.
#[derive(Default)]
struct Table {
    routes: BTreeSet<String>,
    fail_next: bool,
}

impl RouteTable for Table {
    fn add(&mut self, r: &Route) -> Result<(), RouteError> {
        if std::mem::take(&mut self.fail_next) {
            return Err(RouteError::Full);
        }
        assert!(self.routes.insert(r.to_string()), "added twice");
        Ok(())
    }
    fn remove(&mut self, r: &Route) -> Result<(), RouteError> {
        assert!(self.routes.remove(&r.to_string()), "removed but absent");
        Ok(())
    }
}

#[test]
fn ha_driving_a_route_table() {
    let mut rri: Rri<8, 8> = Rri::new(RriConfig::default());
    let mut table = Table {
        fail_next: true,
        ..Table::default()
    };
    rri.sa_up(1, &sel([10, 0, 68, 0], 24), v4(SPOKE1)).unwrap();
    assert_eq!(rri.apply(&mut table), Err(RouteError::Full));
    assert!(table.routes.is_empty());
    assert_eq!(rri.apply(&mut table), Ok(1));
    assert_eq!(table.routes.len(), 1);
    rri.sa_up(2, &sel([10, 0, 69, 0], 24), v4(SPOKE1)).unwrap();
    rri.sa_down(1);
    assert_eq!(rri.apply(&mut table), Ok(2));
    assert_eq!(
        table.routes.iter().cloned().collect::<Vec<_>>(),
        ["10.0.69.0/24 via 203.0.113.5 [1] tag 0"]
    );
}
