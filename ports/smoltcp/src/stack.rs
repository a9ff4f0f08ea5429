//! [`IpsecStack`]: the [`Engine`] bound to smoltcp sockets on an
//! [`Interface`].

use core::net::{IpAddr, SocketAddr, SocketAddrV4};

use hal_traits::{CryptoProvider, SecureRng};
use smoltcp::iface::{Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::udp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::IpEndpoint;

use crate::engine::{Datagram, Engine, Error, HEADROOM, Received, Sent};
use crate::time::{from_smoltcp, to_smoltcp};
use crate::tunnel::InnerPath;

/// What went through the stack, and what was dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackCounters {
    /// IKE datagrams (and NAT keepalives) sent.
    pub ike_tx: u64,
    /// IKE datagrams received.
    pub ike_rx: u64,
    /// ESP packets sent (in UDP or raw).
    pub esp_tx: u64,
    /// ESP packets received and opened.
    pub esp_rx: u64,
    /// Received datagrams the engine refused (bad ESP, dropped IKE, ...).
    pub rx_dropped: u64,
    /// Inner packets not sent: no SA yet (negotiation started), policy, or errors.
    pub tx_dropped: u64,
    /// Inner packets a bypass policy let out in clear, dropped here (the tunnel is
    /// not a route to the outside).
    pub bypass_dropped: u64,
    /// smoltcp refused a datagram (socket buffer full, no route).
    pub socket_errors: u64,
}

/// The smoltcp port: an [`Engine`] plus its UDP sockets (500 and 4500, and optionally a
/// raw socket for IP protocol 50) in the caller's [`SocketSet`].
///
/// Drive it from the main loop:
///
/// ```text
/// loop {
///     let now = smoltcp::time::Instant::now();             // or the board's clock
///     inner_iface.poll(now, &mut tunnel, &mut inner_sockets); // protected-side sockets
///     stack.poll(now, &mut iface, &mut device, &mut sockets, &mut tunnel);
///     inner_iface.poll(now, &mut tunnel, &mut inner_sockets); // deliver what came in
///     sleep_until(min(stack.poll_at(now, &mut iface, &sockets), inner_iface.poll_at(..)));
/// }
/// ```
///
/// `BUF` is the size of the two work buffers (receive and transmit); it bounds the
/// largest datagram, so 1600 covers an Ethernet MTU.
pub struct IpsecStack<
    P: CryptoProvider,
    R: SecureRng,
    const SAS: usize = 4,
    const CHILDREN: usize = 8,
    const POLICIES: usize = 8,
    const BUF: usize = 1600,
> {
    engine: Engine<P, R, SAS, CHILDREN, POLICIES>,
    ike_socket: SocketHandle,
    natt_socket: SocketHandle,
    #[cfg(feature = "raw-esp")]
    raw_socket: Option<SocketHandle>,
    rx: [u8; BUF],
    tx: [u8; BUF],
    counters: StackCounters,
}

impl<
    P: CryptoProvider,
    R: SecureRng,
    const SAS: usize,
    const CHILDREN: usize,
    const POLICIES: usize,
    const BUF: usize,
> core::fmt::Debug for IpsecStack<P, R, SAS, CHILDREN, POLICIES, BUF>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IpsecStack")
            .field("engine", &self.engine)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl<
    P: CryptoProvider,
    R: SecureRng,
    const SAS: usize,
    const CHILDREN: usize,
    const POLICIES: usize,
    const BUF: usize,
> IpsecStack<P, R, SAS, CHILDREN, POLICIES, BUF>
{
    /// Binds `ike_socket` and `natt_socket` to the engine's address and ports (500 and
    /// 4500 by default), adds them to `sockets` and returns the stack.
    ///
    /// # Errors
    /// [`Error::Unsupported`] if a socket cannot be bound (already bound, port 0).
    pub fn new<'a>(
        engine: Engine<P, R, SAS, CHILDREN, POLICIES>,
        sockets: &mut SocketSet<'a>,
        mut ike_socket: udp::Socket<'a>,
        mut natt_socket: udp::Socket<'a>,
    ) -> Result<Self, Error> {
        let IpAddr::V4(local) = engine.local_addr() else {
            return Err(Error::Unsupported);
        };
        let (ike_port, natt_port) = engine.ports();
        ike_socket
            .bind(SocketAddrV4::new(local, ike_port))
            .map_err(|_| Error::Unsupported)?;
        natt_socket
            .bind(SocketAddrV4::new(local, natt_port))
            .map_err(|_| Error::Unsupported)?;
        Ok(Self {
            engine,
            ike_socket: sockets.add(ike_socket),
            natt_socket: sockets.add(natt_socket),
            #[cfg(feature = "raw-esp")]
            raw_socket: None,
            rx: [0; BUF],
            tx: [0; BUF],
            counters: StackCounters::default(),
        })
    }

    /// Also receives and sends ESP as IP protocol 50 through `socket` (a smoltcp raw
    /// socket for IPv4 / `IpProtocol::IpSecEsp`), added to `sockets`. Without it, raw
    /// ESP that the data plane builds (an SA negotiated without NAT-T) is dropped.
    #[cfg(feature = "raw-esp")]
    pub fn with_raw_esp<'a>(
        mut self,
        sockets: &mut SocketSet<'a>,
        socket: smoltcp::socket::raw::Socket<'a>,
    ) -> Self {
        self.raw_socket = Some(sockets.add(socket));
        self
    }

    /// The engine (IKE and data plane state, counters).
    #[must_use]
    pub const fn engine(&self) -> &Engine<P, R, SAS, CHILDREN, POLICIES> {
        &self.engine
    }

    /// The engine, to initiate or shut down.
    pub fn engine_mut(&mut self) -> &mut Engine<P, R, SAS, CHILDREN, POLICIES> {
        &mut self.engine
    }

    /// What went through, what was dropped.
    #[must_use]
    pub const fn counters(&self) -> &StackCounters {
        &self.counters
    }

    /// Runs smoltcp and the engine once: polls `iface`, fires due timers, feeds every
    /// received IKE / ESP datagram to the engine (decrypted packets to `inner`), protects
    /// every packet `inner` has, sends IKE, and polls `iface` again to flush. Returns
    /// `true` if anything happened (call again before sleeping).
    pub fn poll(
        &mut self,
        now: SmolInstant,
        iface: &mut Interface,
        device: &mut (impl Device + ?Sized),
        sockets: &mut SocketSet<'_>,
        inner: &mut impl InnerPath,
    ) -> bool {
        let t = from_smoltcp(now);
        let mut activity = iface.poll(now, device, sockets) != PollResult::None;
        if self.engine.poll_timeout().is_some_and(|d| d <= t) {
            self.engine.handle_timeout(t);
            activity = true;
        }
        activity |= self.receive(t, sockets, inner);
        activity |= self.protect(t, sockets, inner);
        activity |= self.transmit(t, sockets);
        if activity {
            let _ = iface.poll(now, device, sockets);
        }
        activity
    }

    /// The next time [`IpsecStack::poll`] must run: the earlier of smoltcp's deadline
    /// and the engine's. `None` means "only when a packet arrives".
    pub fn poll_at(
        &self,
        now: SmolInstant,
        iface: &mut Interface,
        sockets: &SocketSet<'_>,
    ) -> Option<SmolInstant> {
        let ours = self.engine.poll_timeout().map(to_smoltcp);
        match (iface.poll_at(now, sockets), ours) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn receive(
        &mut self,
        t: ipsec_core::Instant,
        sockets: &mut SocketSet<'_>,
        inner: &mut impl InnerPath,
    ) -> bool {
        let mut any = false;
        let local = self.engine.local_addr();
        for h in [self.ike_socket, self.natt_socket] {
            loop {
                let s = sockets.get_mut::<udp::Socket>(h);
                let port = s.endpoint().port;
                let Some(room) = self.rx.get_mut(HEADROOM..) else {
                    return any;
                };
                let (n, meta) = match s.recv_slice(room) {
                    Ok(r) => r,
                    Err(udp::RecvError::Truncated) => {
                        self.counters.rx_dropped += 1;
                        continue;
                    }
                    Err(udp::RecvError::Exhausted) => break,
                };
                any = true;
                let from: SocketAddr = meta.endpoint.into();
                let to_ip = meta.local_address.map_or(local, IpAddr::from);
                let to = SocketAddr::new(to_ip, port);
                match self.engine.handle_udp(t, from, to, &mut self.rx, n) {
                    Ok(Received::Packet(p)) => {
                        self.counters.esp_rx += 1;
                        inner.deliver(p);
                    }
                    Ok(Received::Ike) => self.counters.ike_rx += 1,
                    Ok(Received::NatKeepalive | Received::Cleartext) => {}
                    Err(_) => self.counters.rx_dropped += 1,
                }
            }
        }
        #[cfg(feature = "raw-esp")]
        if let Some(h) = self.raw_socket {
            loop {
                let s = sockets.get_mut::<smoltcp::socket::raw::Socket>(h);
                let n = match s.recv_slice(&mut self.rx) {
                    Ok(n) => n,
                    Err(smoltcp::socket::raw::RecvError::Truncated) => {
                        self.counters.rx_dropped += 1;
                        continue;
                    }
                    Err(smoltcp::socket::raw::RecvError::Exhausted) => break,
                };
                any = true;
                let Some(pkt) = self.rx.get_mut(..n) else {
                    break;
                };
                match self.engine.handle_ip(t, pkt) {
                    Ok(Received::Packet(p)) => {
                        self.counters.esp_rx += 1;
                        inner.deliver(p);
                    }
                    Ok(_) => {}
                    Err(_) => self.counters.rx_dropped += 1,
                }
            }
        }
        any
    }

    fn protect(
        &mut self,
        t: ipsec_core::Instant,
        sockets: &mut SocketSet<'_>,
        inner: &mut impl InnerPath,
    ) -> bool {
        let mut any = false;
        // Only take a packet when the socket has room for its result.
        while sockets.get::<udp::Socket>(self.natt_socket).can_send() {
            let Some(n) = inner.take_outbound(&mut self.rx) else {
                break;
            };
            any = true;
            let Some(pkt) = self.rx.get(..n) else { break };
            match self.engine.send(t, pkt, &mut self.tx) {
                Ok(Sent::Udp {
                    dst, offset, len, ..
                }) => {
                    let data = self.tx.get(offset..offset + len).unwrap_or(&[]);
                    let s = sockets.get_mut::<udp::Socket>(self.natt_socket);
                    let Some(dst) = endpoint(dst) else {
                        self.counters.tx_dropped += 1;
                        continue;
                    };
                    match s.send_slice(data, dst) {
                        Ok(()) => self.counters.esp_tx += 1,
                        Err(_) => self.counters.socket_errors += 1,
                    }
                }
                Ok(Sent::Ip { len }) => self.send_raw(sockets, len),
                Ok(Sent::Bypass) => self.counters.bypass_dropped += 1,
                Err(_) => self.counters.tx_dropped += 1,
            }
        }
        any
    }

    #[cfg(feature = "raw-esp")]
    fn send_raw(&mut self, sockets: &mut SocketSet<'_>, len: usize) {
        let (Some(h), Some(data)) = (self.raw_socket, self.tx.get(..len)) else {
            self.counters.tx_dropped += 1;
            return;
        };
        match sockets
            .get_mut::<smoltcp::socket::raw::Socket>(h)
            .send_slice(data)
        {
            Ok(()) => self.counters.esp_tx += 1,
            Err(_) => self.counters.socket_errors += 1,
        }
    }

    #[cfg(not(feature = "raw-esp"))]
    fn send_raw(&mut self, _: &mut SocketSet<'_>, _: usize) {
        self.counters.tx_dropped += 1;
    }

    fn transmit(&mut self, t: ipsec_core::Instant, sockets: &mut SocketSet<'_>) -> bool {
        let mut any = false;
        loop {
            // IKE may answer on either socket: both need room before a datagram is taken.
            let room = [self.ike_socket, self.natt_socket]
                .iter()
                .all(|h| sockets.get::<udp::Socket>(*h).can_send());
            if !room {
                break;
            }
            let Some(Datagram { src_port, dst, len }) = self.engine.poll_transmit(t, &mut self.tx)
            else {
                break;
            };
            any = true;
            let h = if src_port == self.engine.ports().1 {
                self.natt_socket
            } else {
                self.ike_socket
            };
            let data = self.tx.get(..len).unwrap_or(&[]);
            let Some(dst) = endpoint(dst) else {
                self.counters.socket_errors += 1;
                continue;
            };
            match sockets.get_mut::<udp::Socket>(h).send_slice(data, dst) {
                Ok(()) => self.counters.ike_tx += 1,
                Err(_) => self.counters.socket_errors += 1,
            }
        }
        any
    }
}

/// smoltcp's endpoint for an IPv4 socket address (the port's outer family).
fn endpoint(sa: SocketAddr) -> Option<IpEndpoint> {
    match sa {
        SocketAddr::V4(v4) => Some(v4.into()),
        SocketAddr::V6(_) => None,
    }
}
