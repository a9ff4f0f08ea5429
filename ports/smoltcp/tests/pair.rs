//! Two smoltcp nodes with `IpsecStack`, in process, on a virtual clock: the first ping
//! from A's protected side triggers IKE (acquire), Main Mode + Quick Mode run over
//! smoltcp UDP sockets, and smoltcp's own ICMP echo crosses the tunnel both ways as raw
//! ESP (no NAT, so no UDP encapsulation).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{Node, ike_config, net, wire};
use ipsec_smoltcp::Event;
use ipsec_smoltcp::smoltcp::time::{Duration, Instant};
use ipsec_smoltcp::smoltcp::wire::IpAddress;

const A: [u8; 4] = [203, 0, 113, 1];
const B: [u8; 4] = [203, 0, 113, 2];
const HOST_A: [u8; 4] = [198, 51, 100, 1];
const HOST_B: [u8; 4] = [198, 51, 100, 129];

#[test]
fn acquire_negotiate_and_ping_through_raw_esp() {
    let (wa, wb) = wire();
    let mut now = Instant::from_millis(1_000);
    let lnet = net([198, 51, 100, 0], 25);
    let rnet = net([198, 51, 100, 128], 25);
    let mut a = Node::new(wa, A, HOST_A, ike_config(A, B, lnet, rnet), now);
    let mut b = Node::new(wb, B, HOST_B, ike_config(B, A, rnet, lnet), now);
    let sent_by_a = a.dev.sent.clone();

    let mut seq = 0u16;
    let mut next_ping = now;
    let mut replies = vec![];
    let (mut up_a, mut up_b) = (None, None);
    let deadline = now + Duration::from_secs(30);
    while replies.len() < 3 {
        assert!(
            now < deadline,
            "no 3 replies by {now}: {:?} {:?}",
            a.stack.counters(),
            b.stack.counters()
        );
        if now >= next_ping {
            seq += 1;
            a.ping(HOST_B, seq);
            next_ping = now + Duration::from_millis(200);
        }
        a.poll(now);
        b.poll(now);
        replies.extend(a.replies());
        while let Some(e) = a.stack.engine_mut().poll_event() {
            if let Event::TunnelUp { .. } = e {
                up_a = Some(e);
            }
        }
        while let Some(e) = b.stack.engine_mut().poll_event() {
            if let Event::TunnelUp { .. } = e {
                up_b = Some(e);
            }
        }
        now += Duration::from_millis(5);
    }
    let (
        Some(Event::TunnelUp {
            inbound_spi: ai,
            outbound_spi: ao,
            udp_encap,
            ..
        }),
        Some(Event::TunnelUp {
            inbound_spi: bi,
            outbound_spi: bo,
            ..
        }),
    ) = (up_a, up_b)
    else {
        panic!("no TunnelUp: {up_a:?} {up_b:?}");
    };
    assert_eq!((ai, ao), (bo, bi), "SPIs mirror each other");
    assert!(!udp_encap, "no NAT: raw ESP");
    assert!(
        replies
            .iter()
            .all(|(from, _)| *from == IpAddress::from(std::net::Ipv4Addr::from(HOST_B)))
    );
    // The first echo (the acquire) was dropped while IKE ran: the replies start later.
    assert!(
        replies[0].1 > 1,
        "first echo dropped by the acquire: {replies:?}"
    );
    let (ca, cb) = (a.stack.counters(), b.stack.counters());
    assert!(
        ca.esp_tx >= 3 && ca.esp_rx >= 3 && cb.esp_rx >= 3 && cb.esp_tx >= 3,
        "{ca:?} {cb:?}"
    );
    assert!(
        ca.tx_dropped >= 1,
        "the acquire dropped the first packet: {ca:?}"
    );
    // On the wire: IKE on UDP 500 and ESP (protocol 50), never the inner ICMP in clear.
    let sent = sent_by_a.borrow();
    assert!(sent.iter().any(|p| p[9] == 50), "raw ESP on the wire");
    assert!(
        sent.iter().all(|p| p[9] != 1),
        "no cleartext ICMP on the wire"
    );
    // The data plane's own counters agree.
    let dp = a.stack.engine().dataplane();
    let (_, out_sa) = dp.outbound_sas().next().unwrap();
    assert!(out_sa.counters().encaps >= 3);
}

#[test]
fn shutdown_deletes_the_tunnel_on_both_sides() {
    let (wa, wb) = wire();
    let mut now = Instant::from_millis(0);
    let lnet = net([198, 51, 100, 0], 25);
    let rnet = net([198, 51, 100, 128], 25);
    let mut a = Node::new(wa, A, HOST_A, ike_config(A, B, lnet, rnet), now);
    let mut b = Node::new(wb, B, HOST_B, ike_config(B, A, rnet, lnet), now);
    a.stack
        .engine_mut()
        .initiate(ipsec_smoltcp::time::from_smoltcp(now), 10)
        .unwrap();
    for _ in 0..2000 {
        a.poll(now);
        b.poll(now);
        now += Duration::from_millis(5);
        if a.stack.engine().tunnels() == 1 && b.stack.engine().tunnels() == 1 {
            break;
        }
    }
    assert_eq!(
        (a.stack.engine().tunnels(), b.stack.engine().tunnels()),
        (1, 1)
    );
    a.stack
        .engine_mut()
        .shutdown(ipsec_smoltcp::time::from_smoltcp(now));
    let mut down_b = false;
    for _ in 0..200 {
        a.poll(now);
        b.poll(now);
        now += Duration::from_millis(5);
        while let Some(e) = b.stack.engine_mut().poll_event() {
            down_b |= matches!(e, Event::TunnelDown { crypto_map: 10, .. });
        }
    }
    assert!(down_b, "B saw the DELETE");
    assert_eq!(
        (a.stack.engine().tunnels(), b.stack.engine().tunnels()),
        (0, 0)
    );
}
