//! Two gateways in one process, on a virtual clock, with manually keyed ESP SAs
//! (`crypto map vpn 10 ipsec-manual`): the data plane end to end, with the drops an
//! operator would see in `show crypto ipsec sa`.
//!
//! Topology (the chapter's spoke and hub):
//!
//! ```text
//!  10.0.68.0/24 -- spoke-1-east 203.0.113.1 ==== 203.0.113.2 vpn-gw1-east -- 10.1.1.0/24
//! ```

use std::net::{IpAddr, Ipv4Addr};

use hal_traits::{CipherAlg, CryptoError, MacAlg, SecureRng};
use ipsec_core::dataplane::{Dataplane, DataplaneError, DataplaneEvent, Inbound, Outbound};
use ipsec_core::esp::{Direction, Encryption, EspConfig, EspSa, SaEvent, Transform};
use ipsec_core::lifetime::LifetimeConfig;
use ipsec_core::spd::{AddrRange, Policy, PolicyAction, Selector};
use ipsec_core::wire::ipv4::Ipv4Repr;
use ipsec_core::wire::proto;
use ipsec_core::{Duration, Instant};
use ipsec_soft_crypto::{OsRng, SoftCrypto};
use ipsec_std::show::{SaPair, crypto_ipsec_sa, transform_name};

type Gw = Dataplane<SoftCrypto, 16, 8>;

const SPOKE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const HUB: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const TRANSFORM: Transform = Transform {
    enc: Encryption::Cbc(CipherAlg::Aes128Cbc),
    auth: Some(MacAlg::HmacSha1_96),
};

fn net(a: [u8; 4], len: u8) -> AddrRange {
    AddrRange::from_prefix(IpAddr::V4(Ipv4Addr::from(a)), len).expect("valid prefix")
}

/// `access-list 100 permit ip 10.0.68.0 0.0.0.255 10.1.1.0 0.0.0.255` (mirrored on the hub).
fn acl100(spoke_side: bool) -> Selector {
    let (spoke, hub) = (net([10, 0, 68, 0], 24), net([10, 1, 1, 0], 24));
    let (l, r) = if spoke_side {
        (spoke, hub)
    } else {
        (hub, spoke)
    };
    Selector::new(l, r).expect("same family")
}

fn sa(
    spi: u32,
    dir: Direction,
    local: Ipv4Addr,
    remote: Ipv4Addr,
    spoke_side: bool,
    keys: (&[u8], &[u8]),
) -> EspSa<SoftCrypto> {
    let mut c = EspConfig::tunnel(spi, dir, TRANSFORM, IpAddr::V4(local), IpAddr::V4(remote));
    c.selector = Some(acl100(spoke_side));
    c.lifetime =
        LifetimeConfig::from_hard(Some(3600), Some(4_608_000), 90).expect("valid lifetime");
    EspSa::new(c, keys.0, keys.1, Instant::ZERO).expect("valid SA")
}

fn gateway(
    spoke_side: bool,
    out_spi: u32,
    in_spi: u32,
    k_out: (&[u8], &[u8]),
    k_in: (&[u8], &[u8]),
) -> Gw {
    let (me, peer) = if spoke_side {
        (SPOKE, HUB)
    } else {
        (HUB, SPOKE)
    };
    let mut gw = Gw::new(PolicyAction::Bypass);
    let policy = Policy {
        seq: 10,
        selector: acl100(spoke_side),
        action: PolicyAction::Protect { sa_group: 10 },
    };
    gw.spd_mut().insert(policy).expect("room");
    gw.install_outbound(
        10,
        sa(out_spi, Direction::Outbound, me, peer, spoke_side, k_out),
    )
    .expect("room");
    gw.install_inbound(sa(in_spi, Direction::Inbound, me, peer, spoke_side, k_in))
        .expect("room");
    gw
}

fn icmp_echo(src: [u8; 4], dst: [u8; 4], reply: bool, seq: u16) -> Vec<u8> {
    let mut icmp = vec![
        if reply { 0 } else { 8 },
        0,
        0,
        0,
        0x12,
        0x34,
        (seq >> 8) as u8,
        seq as u8,
    ];
    icmp.extend_from_slice(b"abcdefghijklmnopqrstuvwabcdefghi");
    let sum = ipsec_core::wire::checksum::checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let r = Ipv4Repr {
        src: Ipv4Addr::from(src),
        dst: Ipv4Addr::from(dst),
        protocol: proto::ICMP,
        payload_len: icmp.len(),
        ttl: 64,
        tos: 0,
        ident: seq,
        dont_frag: false,
        more_frags: false,
        frag_offset: 0,
    };
    let mut p = vec![0; r.buffer_len()];
    r.emit(&mut p).expect("fits");
    p[20..].copy_from_slice(&icmp);
    p
}

/// Deterministic key material for the demo, so runs are comparable. (Real deployments get
/// keys from IKE; see the README's status.)
struct DemoKeys(u8);
impl SecureRng for DemoKeys {
    fn fill_bytes(&mut self, d: &mut [u8]) -> Result<(), CryptoError> {
        for b in d {
            self.0 = self.0.wrapping_mul(167).wrapping_add(13);
            *b = self.0;
        }
        Ok(())
    }
}

fn show_events(name: &str, gw: &mut Gw) {
    while let Some(DataplaneEvent {
        direction, event, ..
    }) = gw.poll_event()
    {
        let what = match event {
            SaEvent::SoftExpired { spi } => {
                format!("soft lifetime reached on {direction:?} SA {spi:#x}: rekey now")
            }
            SaEvent::HardExpired { spi } => format!(
                "hard lifetime reached on {direction:?} SA {spi:#x}: SA unusable, delete it"
            ),
            other => format!("{other:?}"),
        };
        println!("  [{name}] event: {what}");
    }
}

fn main() {
    let mut keygen = DemoKeys(7);
    let mut k = |n: usize| {
        let mut v = vec![0u8; n];
        keygen.fill_bytes(&mut v).expect("demo keys");
        v
    };
    let (enc_sh, auth_sh, enc_hs, auth_hs) = (k(16), k(20), k(16), k(20));
    println!(
        "== ESP tunnel demo: spoke-1-east <-> vpn-gw1-east, manual keys, {}",
        transform_name(&TRANSFORM)
    );
    println!("   crypto map vpn 10 ipsec-manual / match address 100 / set peer <other gateway>");
    println!("   access-list 100 permit ip 10.0.68.0 0.0.0.255 10.1.1.0 0.0.0.255");
    println!();
    let mut spoke = gateway(
        true,
        0x1000_0001,
        0x2000_0002,
        (&enc_sh, &auth_sh),
        (&enc_hs, &auth_hs),
    );
    let mut hub = gateway(
        false,
        0x2000_0002,
        0x1000_0001,
        (&enc_hs, &auth_hs),
        (&enc_sh, &auth_sh),
    );
    let mut rng = OsRng;
    let mut now = Instant::ZERO;
    let mut wire = [0u8; 2048];
    let mut last_esp = Vec::new();

    println!("== 1. ping 10.1.1.7 source 10.0.68.5, repeat 5");
    let mut replies = 0;
    for seq in 1..=5u16 {
        now = now + Duration::from_secs(1);
        let echo = icmp_echo([10, 0, 68, 5], [10, 1, 1, 7], false, seq);
        let Ok(Outbound::Protected { len, .. }) =
            spoke.process_outbound(now, &echo, &mut rng, &mut wire)
        else {
            panic!("echo not protected")
        };
        last_esp = wire[..len].to_vec();
        let delivered = match hub.process_inbound(now, &mut wire[..len]) {
            Ok(Inbound::Decapsulated { packet, .. }) => packet == &echo[..],
            _ => false,
        };
        let reply = icmp_echo([10, 1, 1, 7], [10, 0, 68, 5], true, seq);
        let Ok(Outbound::Protected { len: rlen, .. }) =
            hub.process_outbound(now, &reply, &mut rng, &mut wire)
        else {
            panic!("reply not protected")
        };
        let back = matches!(spoke.process_inbound(now, &mut wire[..rlen]), Ok(Inbound::Decapsulated { packet, .. }) if packet == &reply[..]);
        if delivered && back {
            replies += 1;
        }
        println!(
            "   seq {seq}: {} -> {len} bytes of ESP -> hub delivers it: {delivered}; reply {rlen} bytes -> spoke: {back}",
            echo.len()
        );
    }
    println!("   Success rate is {}% ({replies}/5)", replies * 20);
    println!();

    println!("== 2. what the hub drops");
    let mut replayed = last_esp.clone();
    let r = hub.process_inbound(now, &mut replayed).err();
    println!(
        "   a captured ESP packet sent again:        {}",
        r.map_or("accepted (!)".into(), |e| e.to_string())
    );
    let mut tampered = icmp_echo([10, 0, 68, 5], [10, 1, 1, 7], false, 6);
    if let Ok(Outbound::Protected { len, .. }) =
        spoke.process_outbound(now, &tampered, &mut rng, &mut wire)
    {
        tampered = wire[..len].to_vec();
        let mid = tampered.len() / 2;
        tampered[mid] ^= 0x40;
    }
    let r = hub.process_inbound(now, &mut tampered).err();
    println!(
        "   an ESP packet with one bit flipped:      {}",
        r.map_or("accepted (!)".into(), |e| e.to_string())
    );
    let mut spoofed = icmp_echo([10, 0, 68, 66], [10, 1, 1, 7], false, 1);
    let r = hub.process_inbound(now, &mut spoofed).err();
    println!(
        "   10.0.68.66 -> 10.1.1.7 sent in clear:    {}",
        r.map_or("accepted (!)".into(), |e| e.to_string())
    );
    let mut unknown = last_esp.clone();
    unknown[20..24].copy_from_slice(&0xdead_beef_u32.to_be_bytes());
    let r = hub.process_inbound(now, &mut unknown).err();
    println!(
        "   ESP for an SPI nobody negotiated:        {}",
        r.map_or("accepted (!)".into(), |e| e.to_string())
    );
    let other = icmp_echo([10, 0, 68, 5], [192, 0, 2, 80], false, 1);
    let r = spoke.process_outbound(now, &other, &mut rng, &mut wire);
    println!(
        "   10.0.68.5 -> 192.0.2.80 (not in ACL 100): {}",
        match r {
            Ok(Outbound::Bypass) => "sent in clear (bypass)".to_string(),
            Ok(_) => "protected (!)".into(),
            Err(e) => e.to_string(),
        }
    );
    println!();

    println!("== 3. vpn-gw1-east# show crypto ipsec sa");
    let pairs: Vec<SaPair<'_, SoftCrypto, 2>> = vec![SaPair {
        interface: "Ethernet0/0",
        map_tag: "vpn",
        local: IpAddr::V4(HUB),
        peer: IpAddr::V4(SPOKE),
        inbound: hub.inbound_sas().next().map(|(_, sa)| sa),
        outbound: hub.outbound_sas().next().map(|(_, sa)| sa),
    }];
    print!("{}", crypto_ipsec_sa(now, &pairs));
    println!("   data plane drops before any SA: {:?}", hub.counters());
    println!();

    println!("== 4. lifetimes (3600 s / 4608000 KB, soft at 90 %) on the virtual clock");
    let soft = spoke.poll_timeout().expect("a deadline");
    println!("   next deadline: t = {} s", soft.as_millis() / 1000);
    now = soft;
    spoke.handle_timeout(now);
    show_events("spoke", &mut spoke);
    now = spoke.poll_timeout().expect("the hard deadline");
    spoke.handle_timeout(now);
    show_events("spoke", &mut spoke);
    let echo = icmp_echo([10, 0, 68, 5], [10, 1, 1, 7], false, 7);
    let r = spoke.process_outbound(now, &echo, &mut rng, &mut wire);
    println!(
        "   t = {} s, ping again: {}",
        now.as_millis() / 1000,
        match r {
            Err(DataplaneError::Esp(e)) => format!("refused: {e}"),
            Err(e) => format!("refused: {e}"),
            Ok(_) => "sent (!)".into(),
        }
    );
    println!();
    println!(
        "Negotiating these SAs with IKEv1 instead of manual keys is the next step (see README)."
    );
}
