//! Two smoltcp nodes running `IpsecStack` over an in-memory wire, on a virtual clock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    dead_code
)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::vec::Vec;

use hal_traits::{CipherAlg, DhGroup, HashAlg, MacAlg};
use ipsec_core::esp::{Encryption, Mode, Transform};
use ipsec_core::spd::{AddrRange, Selector};
use ipsec_ike::v1::{CryptoMapEntry, IkeConfig, IsakmpPolicy, PresharedKey, TransformSet};
use ipsec_smoltcp::smoltcp;
use ipsec_smoltcp::{Engine, EngineConfig, IpsecStack, TunnelDevice};
use ipsec_soft_crypto::{OsRng, SoftCrypto};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::{icmp, raw, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{
    HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, IpProtocol, IpVersion,
};

pub type Stack = IpsecStack<SoftCrypto, OsRng>;
type Queue = Rc<RefCell<VecDeque<Vec<u8>>>>;

/// One end of a point-to-point IP link (medium IP, no ARP).
pub struct WireEnd {
    rx: Queue,
    tx: Queue,
    /// Every packet this end sent, for inspection.
    pub sent: Rc<RefCell<Vec<Vec<u8>>>>,
}

pub fn wire() -> (WireEnd, WireEnd) {
    let (a, b): (Queue, Queue) = Default::default();
    (
        WireEnd {
            rx: a.clone(),
            tx: b.clone(),
            sent: Default::default(),
        },
        WireEnd {
            rx: b,
            tx: a,
            sent: Default::default(),
        },
    )
}

pub struct Rx(Vec<u8>);
impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}
pub struct Tx(Queue, Rc<RefCell<Vec<Vec<u8>>>>);
impl phy::TxToken for Tx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut p = vec![0; len];
        let r = f(&mut p);
        self.1.borrow_mut().push(p.clone());
        self.0.borrow_mut().push_back(p);
        r
    }
}

impl Device for WireEnd {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx;
    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx)> {
        let p = self.rx.borrow_mut().pop_front()?;
        Some((Rx(p), Tx(self.tx.clone(), self.sent.clone())))
    }
    fn transmit(&mut self, _: Instant) -> Option<Tx> {
        Some(Tx(self.tx.clone(), self.sent.clone()))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = 1500;
        c
    }
}

pub fn net(a: [u8; 4], len: u8) -> AddrRange {
    AddrRange::from_prefix(IpAddr::V4(Ipv4Addr::from(a)), len).unwrap()
}

/// Main Mode PSK (AES-128, SHA-1, MODP 1024) + Quick Mode ESP AES-128/SHA-1 tunnel.
pub fn ike_config(local: [u8; 4], peer: [u8; 4], lnet: AddrRange, rnet: AddrRange) -> IkeConfig {
    let mut cfg = IkeConfig::new(IpAddr::V4(local.into()));
    cfg.add_policy(IsakmpPolicy::new(
        10,
        CipherAlg::Aes128Cbc,
        HashAlg::Sha1,
        DhGroup::Modp1024,
    ))
    .unwrap();
    cfg.add_key(PresharedKey::address(IpAddr::V4(peer.into()), b"in-process-psk").unwrap())
        .unwrap();
    let mut e = CryptoMapEntry::new(10, Selector::new(lnet, rnet).unwrap());
    e.add_peer(IpAddr::V4(peer.into())).unwrap();
    let t = Transform {
        enc: Encryption::Cbc(CipherAlg::Aes128Cbc),
        auth: Some(MacAlg::HmacSha1_96),
    };
    e.add_transform_set(TransformSet::new("ts", t, Mode::Tunnel).unwrap())
        .unwrap();
    cfg.add_crypto_map(e).unwrap();
    cfg
}

/// An outer interface on a wire end, the IPsec stack on it, and an inner interface on
/// its tunnel device with one ICMP socket.
pub struct Node {
    pub iface: Interface,
    pub dev: WireEnd,
    pub sockets: SocketSet<'static>,
    pub stack: Stack,
    pub tunnel: TunnelDevice<8, 1400>,
    pub inner: Interface,
    pub inner_sockets: SocketSet<'static>,
    pub icmp: SocketHandle,
}

fn udp_socket() -> udp::Socket<'static> {
    let buf = || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0; 8192]);
    udp::Socket::new(buf(), buf())
}

impl Node {
    pub fn new(
        dev: WireEnd,
        outer: [u8; 4],
        inner_addr: [u8; 4],
        cfg: IkeConfig,
        now: Instant,
    ) -> Self {
        let mut dev = dev;
        let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut dev, now);
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::from(Ipv4Addr::from(outer)), 24))
                .unwrap()
        });
        let mut sockets = SocketSet::new(vec![]);
        let engine = Engine::new(cfg, EngineConfig::default(), OsRng).unwrap();
        let raw_buf = || raw::PacketBuffer::new(vec![raw::PacketMetadata::EMPTY; 8], vec![0; 8192]);
        let raw = raw::Socket::new(
            Some(IpVersion::Ipv4),
            Some(IpProtocol::IpSecEsp),
            raw_buf(),
            raw_buf(),
        );
        let stack = Stack::new(engine, &mut sockets, udp_socket(), udp_socket())
            .unwrap()
            .with_raw_esp(&mut sockets, raw);
        let mut tunnel = TunnelDevice::new();
        let mut inner = Interface::new(Config::new(HardwareAddress::Ip), &mut tunnel, now);
        inner.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::from(Ipv4Addr::from(inner_addr)), 24))
                .unwrap()
        });
        let mut inner_sockets = SocketSet::new(vec![]);
        let icmp_buf =
            || icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]);
        let mut s = icmp::Socket::new(icmp_buf(), icmp_buf());
        s.bind(icmp::Endpoint::Ident(0x4950)).unwrap();
        let icmp = inner_sockets.add(s);
        Self {
            iface,
            dev,
            sockets,
            stack,
            tunnel,
            inner,
            inner_sockets,
            icmp,
        }
    }

    pub fn poll(&mut self, now: Instant) {
        self.inner
            .poll(now, &mut self.tunnel, &mut self.inner_sockets);
        self.stack.poll(
            now,
            &mut self.iface,
            &mut self.dev,
            &mut self.sockets,
            &mut self.tunnel,
        );
        self.inner
            .poll(now, &mut self.tunnel, &mut self.inner_sockets);
    }

    /// Queues an ICMP echo request to `dst` on the inner ICMP socket.
    pub fn ping(&mut self, dst: [u8; 4], seq: u16) {
        let s = self.inner_sockets.get_mut::<icmp::Socket>(self.icmp);
        let data = b"ipsec-smoltcp echo";
        let repr = Icmpv4Repr::EchoRequest {
            ident: 0x4950,
            seq_no: seq,
            data,
        };
        let buf = s
            .send(repr.buffer_len(), IpAddress::from(Ipv4Addr::from(dst)))
            .unwrap();
        repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &Default::default());
    }

    /// Echo replies received on the inner ICMP socket: (source, seq).
    pub fn replies(&mut self) -> Vec<(IpAddress, u16)> {
        let s = self.inner_sockets.get_mut::<icmp::Socket>(self.icmp);
        let mut out = vec![];
        while let Ok((p, from)) = s.recv() {
            let pkt = Icmpv4Packet::new_checked(p).unwrap();
            if let Ok(Icmpv4Repr::EchoReply { seq_no, .. }) =
                Icmpv4Repr::parse(&pkt, &Default::default())
            {
                out.push((from, seq_no));
            }
        }
        out
    }
}
