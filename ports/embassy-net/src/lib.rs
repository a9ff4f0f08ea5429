//! embassy-net port of the ipsec workspace: IKEv1 and ESP as one async task.
//!
//! # Layers
//!
//! * The protocol work is the socket-agnostic [`Engine`] of `ipsec-smoltcp` (built
//!   there without smoltcp features, so this crate never changes embassy-net's smoltcp
//!   configuration): UDP 500 / 4500 demultiplexing, the ESP data plane, IKE, NAT
//!   keepalives, SA installation and rekeying.
//! * [`IpsecRunner`] owns two embassy-net [`UdpSocket`]s (500 and 4500) on the outer
//!   [`Stack`] and the [`Tunnel`] to the protected side, and runs everything in one
//!   task: [`IpsecRunner::run`] waits with `select` for a datagram on either socket,
//!   a packet from the protected side, or the engine's next deadline. The clock lives
//!   here, as in embassy's own runners: `poll_timeout` becomes `Timer::at`. No busy
//!   loop, no periodic tick.
//! * The protected side is an embassy-net driver backed by packet channels
//!   (`embassy-net-driver-channel`, medium IP): [`tunnel`] returns the [`Tunnel`] (the
//!   runner's end) and a [`TunnelDevice`] to give to a second `embassy_net::new` with
//!   the protected addresses. Its sockets (UDP, TCP, ICMP) then talk through ESP.
//!
//! ESP is carried in UDP 4500 (RFC 3948), the form every NAT and strongSwan's
//! userspace ESP need. Raw ESP (IP protocol 50) needs a raw socket, which embassy-net
//! has (`raw` feature) but this port does not use yet: an SA negotiated without NAT-T
//! would build raw ESP, which is dropped and counted ([`Counters::tx_dropped`]).
//!
//! # Invariants
//!
//! `no_std`, no allocation (the caller provides [`Resources`] and the tunnel state,
//! typically in `StaticCell`s), no `unsafe`. Events ([`Event`]) go to an optional
//! embassy-sync channel; a full channel drops the oldest-unread event for the newest,
//! never blocks the data path. Long computations (the Diffie-Hellman of phase 1) run
//! inline in the task: give it its own executor priority if that matters.
#![no_std]
#![forbid(unsafe_code)]

use core::net::{IpAddr, SocketAddr};

use embassy_futures::select::{Either4, select4};
use embassy_net::udp::{PacketMetadata, UdpMetadata, UdpSocket};
use embassy_net::{IpEndpoint, Stack};
use embassy_net_driver_channel as ch;
use embassy_net_driver_channel::driver::{HardwareAddress, LinkState};
use embassy_sync::channel::DynamicSender;
use embassy_time::Timer;
use hal_traits::{CryptoProvider, SecureRng};
pub use ipsec_smoltcp::engine::{Datagram, Received, Sent};
pub use ipsec_smoltcp::{Engine, EngineConfig, Error, Event, HEADROOM};

/// The library's clock from embassy-time's (both in milliseconds since boot).
#[must_use]
pub fn now() -> ipsec_core::Instant {
    ipsec_core::Instant::from_millis(embassy_time::Instant::now().as_millis())
}

/// A library deadline as an embassy-time instant (saturating at the end of time).
#[must_use]
pub fn to_embassy(t: ipsec_core::Instant) -> embassy_time::Instant {
    embassy_time::Instant::try_from_millis(t.as_millis()).unwrap_or(embassy_time::Instant::MAX)
}

/// Storage for the channel device of the protected side: `N_RX` packets towards the
/// inner stack and `N_TX` from it, each of at most `MTU` bytes.
pub type TunnelState<const MTU: usize, const N_RX: usize, const N_TX: usize> =
    ch::State<MTU, N_RX, N_TX>;

/// The driver to give to the inner `embassy_net::new` (medium IP).
pub type TunnelDevice<'d, const MTU: usize> = ch::Device<'d, MTU>;

/// The runner's end of the protected side.
pub struct Tunnel<'d, const MTU: usize>(ch::Runner<'d, MTU>);

impl<const MTU: usize> core::fmt::Debug for Tunnel<'_, MTU> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Tunnel").field("mtu", &MTU).finish()
    }
}

/// Creates the protected side: the [`Tunnel`] for [`IpsecRunner::new`] and the
/// [`TunnelDevice`] for the inner embassy-net stack. The link is up from the start.
pub fn tunnel<'d, const MTU: usize, const N_RX: usize, const N_TX: usize>(
    state: &'d mut TunnelState<MTU, N_RX, N_TX>,
) -> (Tunnel<'d, MTU>, TunnelDevice<'d, MTU>) {
    let (mut runner, device) = ch::new(state, HardwareAddress::Ip);
    runner.set_link_state(LinkState::Up);
    (Tunnel(runner), device)
}

/// Socket and work buffers for one [`IpsecRunner`]: `META` datagrams and `SOCK` bytes
/// per socket direction, three work buffers of `BUF` bytes (the largest datagram).
/// Put it in a `StaticCell` (it is a few tens of kilobytes with the defaults).
pub struct Resources<const META: usize = 8, const SOCK: usize = 8192, const BUF: usize = 1600> {
    meta: [[PacketMetadata; META]; 4],
    sock: [[u8; SOCK]; 4],
    work: [[u8; BUF]; 3],
}

impl<const META: usize, const SOCK: usize, const BUF: usize> Resources<META, SOCK, BUF> {
    /// Zeroed resources (usable in a `static`).
    #[must_use]
    pub const fn new() -> Self {
        Self {
            meta: [[PacketMetadata::EMPTY; META]; 4],
            sock: [[0; SOCK]; 4],
            work: [[0; BUF]; 3],
        }
    }
}

impl<const META: usize, const SOCK: usize, const BUF: usize> Default
    for Resources<META, SOCK, BUF>
{
    fn default() -> Self {
        Self::new()
    }
}

/// What went through the runner, and what was dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// IKE datagrams and NAT keepalives sent.
    pub ike_tx: u64,
    /// IKE datagrams received and accepted.
    pub ike_rx: u64,
    /// ESP-in-UDP packets sent.
    pub esp_tx: u64,
    /// ESP packets opened and delivered to the protected side.
    pub esp_rx: u64,
    /// Received datagrams the engine refused.
    pub rx_dropped: u64,
    /// Inner packets not sent (no SA yet, policy, raw ESP without a raw socket, ...).
    pub tx_dropped: u64,
    /// Decrypted packets dropped because the inner stack's queue was full.
    pub inner_full: u64,
    /// Datagrams embassy-net refused (no route, too large).
    pub socket_errors: u64,
}

/// The IPsec task: an [`Engine`] on embassy-net sockets. See the [crate docs](crate).
pub struct IpsecRunner<
    'd,
    P: CryptoProvider,
    R: SecureRng,
    const SAS: usize = 4,
    const CHILDREN: usize = 8,
    const POLICIES: usize = 8,
    const MTU: usize = 1400,
    const BUF: usize = 1600,
> {
    engine: Engine<P, R, SAS, CHILDREN, POLICIES>,
    ike_socket: UdpSocket<'d>,
    natt_socket: UdpSocket<'d>,
    tunnel: Tunnel<'d, MTU>,
    rx_ike: &'d mut [u8; BUF],
    rx_natt: &'d mut [u8; BUF],
    tx: &'d mut [u8; BUF],
    events: Option<DynamicSender<'d, Event>>,
    counters: Counters,
}

impl<
    P: CryptoProvider,
    R: SecureRng,
    const SAS: usize,
    const CHILDREN: usize,
    const POLICIES: usize,
    const MTU: usize,
    const BUF: usize,
> core::fmt::Debug for IpsecRunner<'_, P, R, SAS, CHILDREN, POLICIES, MTU, BUF>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IpsecRunner")
            .field("engine", &self.engine)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl<
    'd,
    P: CryptoProvider,
    R: SecureRng,
    const SAS: usize,
    const CHILDREN: usize,
    const POLICIES: usize,
    const MTU: usize,
    const BUF: usize,
> IpsecRunner<'d, P, R, SAS, CHILDREN, POLICIES, MTU, BUF>
{
    /// Opens UDP 500 and 4500 on `stack` (bound to the engine's address and ports) with
    /// buffers from `resources`.
    ///
    /// # Errors
    /// [`Error::Unsupported`] if a socket cannot be bound (an IPv6 or unspecified
    /// engine address, a port in use).
    pub fn new<const META: usize, const SOCK: usize>(
        engine: Engine<P, R, SAS, CHILDREN, POLICIES>,
        stack: Stack<'d>,
        resources: &'d mut Resources<META, SOCK, BUF>,
        tunnel: Tunnel<'d, MTU>,
    ) -> Result<Self, Error> {
        let IpAddr::V4(local) = engine.local_addr() else {
            return Err(Error::Unsupported);
        };
        let (ike_port, natt_port) = engine.ports();
        let Resources { meta, sock, work } = resources;
        let [m0, m1, m2, m3] = meta;
        let [s0, s1, s2, s3] = sock;
        let [rx_ike, rx_natt, tx] = work;
        let mut ike_socket = UdpSocket::new(stack, m0, s0, m1, s1);
        let mut natt_socket = UdpSocket::new(stack, m2, s2, m3, s3);
        ike_socket
            .bind(IpEndpoint::new(local.into(), ike_port))
            .map_err(|_| Error::Unsupported)?;
        natt_socket
            .bind(IpEndpoint::new(local.into(), natt_port))
            .map_err(|_| Error::Unsupported)?;
        Ok(Self {
            engine,
            ike_socket,
            natt_socket,
            tunnel,
            rx_ike,
            rx_natt,
            tx,
            events: None,
            counters: Counters::default(),
        })
    }

    /// Sends [`Event`]s to `sender` (e.g. `CHANNEL.dyn_sender()`); without it they are
    /// discarded.
    #[must_use]
    pub fn with_events(mut self, sender: DynamicSender<'d, Event>) -> Self {
        self.events = Some(sender);
        self
    }

    /// The engine, to initiate before [`IpsecRunner::run`] (traffic from the protected
    /// side needing an SA also starts IKE by itself).
    pub fn engine_mut(&mut self) -> &mut Engine<P, R, SAS, CHILDREN, POLICIES> {
        &mut self.engine
    }

    /// The engine.
    #[must_use]
    pub const fn engine(&self) -> &Engine<P, R, SAS, CHILDREN, POLICIES> {
        &self.engine
    }

    /// What went through so far.
    #[must_use]
    pub const fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Runs the IPsec task forever. Spawn it (`#[embassy_executor::task]` around a
    /// concrete instantiation) next to the runners of both embassy-net stacks.
    pub async fn run(&mut self) -> ! {
        loop {
            self.step().await;
        }
    }

    /// One round: fire due timers, send what IKE has, report events, then wait for the
    /// first of: a datagram on 500, a datagram on 4500, a packet from the protected
    /// side, the engine's next deadline; and handle it. [`IpsecRunner::run`] loops on
    /// it; a test or a custom task may call it directly.
    pub async fn step(&mut self) {
        let Self {
            engine,
            ike_socket,
            natt_socket,
            tunnel,
            rx_ike,
            rx_natt,
            tx,
            events,
            counters,
        } = self;
        let (ike_port, natt_port) = engine.ports();
        let t = now();
        if engine.poll_timeout().is_some_and(|d| d <= t) {
            engine.handle_timeout(t);
        }
        while let Some(Datagram { src_port, dst, len }) = engine.poll_transmit(t, &mut tx[..]) {
            let sock = if src_port == natt_port {
                &*natt_socket
            } else {
                &*ike_socket
            };
            send(sock, tx.get(..len).unwrap_or(&[]), dst, counters, true).await;
        }
        while let Some(e) = engine.poll_event() {
            if let Some(s) = events {
                let _ = s.try_send(e);
            }
        }
        let deadline = engine
            .poll_timeout()
            .map_or(embassy_time::Instant::MAX, to_embassy);
        let (_, mut inner_rx, mut inner_tx) = tunnel.0.borrow_split();
        let woke = select4(
            ike_socket.recv_from(rx_ike.get_mut(HEADROOM..).unwrap_or(&mut [])),
            natt_socket.recv_from(rx_natt.get_mut(HEADROOM..).unwrap_or(&mut [])),
            inner_tx.tx_buf(),
            Timer::at(deadline),
        )
        .await;
        let t = now();
        match woke {
            Either4::First(r) => {
                receive(
                    engine,
                    r,
                    &mut rx_ike[..],
                    ike_port,
                    &mut inner_rx,
                    counters,
                );
            }
            Either4::Second(r) => {
                receive(
                    engine,
                    r,
                    &mut rx_natt[..],
                    natt_port,
                    &mut inner_rx,
                    counters,
                );
            }
            Either4::Third(pkt) => {
                let r = engine.send(t, pkt, &mut tx[..]);
                inner_tx.tx_done();
                match r {
                    Ok(Sent::Udp {
                        dst, offset, len, ..
                    }) => {
                        let data = tx.get(offset..offset.saturating_add(len)).unwrap_or(&[]);
                        send(natt_socket, data, dst, counters, false).await;
                    }
                    // Raw ESP needs a raw socket; cleartext has nowhere to go from here.
                    Ok(Sent::Ip { .. } | Sent::Bypass) | Err(_) => counters.tx_dropped += 1,
                }
            }
            // The deadline: fired at the top of the next round.
            Either4::Fourth(()) => {}
        }
    }
}

/// One received datagram into the engine; a decrypted packet to the inner stack.
fn receive<
    P: CryptoProvider,
    R: SecureRng,
    const SAS: usize,
    const CHILDREN: usize,
    const POLICIES: usize,
    const MTU: usize,
>(
    engine: &mut Engine<P, R, SAS, CHILDREN, POLICIES>,
    r: Result<(usize, UdpMetadata), embassy_net::udp::RecvError>,
    buf: &mut [u8],
    port: u16,
    inner: &mut ch::RxRunner<'_, MTU>,
    counters: &mut Counters,
) {
    let Ok((n, meta)) = r else {
        counters.rx_dropped += 1;
        return;
    };
    let from = SocketAddr::from(meta.endpoint);
    let to_ip = meta.local_address.map_or(engine.local_addr(), IpAddr::from);
    match engine.handle_udp(now(), from, SocketAddr::new(to_ip, port), buf, n) {
        Ok(Received::Packet(p)) => {
            counters.esp_rx += 1;
            let Some(slot) = inner.try_rx_buf() else {
                counters.inner_full += 1;
                return;
            };
            let Some(dst) = slot.get_mut(..p.len()) else {
                counters.inner_full += 1;
                return;
            };
            dst.copy_from_slice(p);
            inner.rx_done(p.len());
        }
        Ok(Received::Ike) => counters.ike_rx += 1,
        Ok(Received::NatKeepalive | Received::Cleartext) => {}
        Err(_) => counters.rx_dropped += 1,
    }
}

async fn send(
    sock: &UdpSocket<'_>,
    data: &[u8],
    dst: SocketAddr,
    counters: &mut Counters,
    ike: bool,
) {
    let SocketAddr::V4(v4) = dst else {
        counters.socket_errors += 1;
        return;
    };
    let meta: UdpMetadata = IpEndpoint::from(v4).into();
    match sock.send_to(data, meta).await {
        Ok(()) if ike => counters.ike_tx += 1,
        Ok(()) => counters.esp_tx += 1,
        Err(_) => counters.socket_errors += 1,
    }
}
