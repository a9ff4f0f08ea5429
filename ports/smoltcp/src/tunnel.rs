//! The protected side: where inner packets come from and go to.
//!
//! [`InnerPath`] is all [`IpsecStack`](crate::IpsecStack) needs: take the next packet
//! to protect, deliver a decrypted one. Implement it for whatever carries your
//! protected traffic (a function, a bridge to another NIC).
//!
//! [`TunnelDevice`] is the ready-made one: a smoltcp [`Device`] (medium IP) backed by
//! two fixed queues, so a second smoltcp [`Interface`](smoltcp::iface::Interface) with
//! the protected addresses (say 198.51.100.1) runs its own sockets (ICMP, UDP, TCP)
//! through the tunnel. Packets that smoltcp transmits on it are protected by the
//! stack; decrypted packets are received by it. Nothing is allocated: each queue holds
//! `N` packets of at most `MTU` bytes.

use heapless::{Deque, Vec};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant as SmolInstant;

/// The protected side of an [`IpsecStack`](crate::IpsecStack).
pub trait InnerPath {
    /// Copies the next packet to protect into `buf` and returns its length, or `None`
    /// when there is none (or it does not fit: it is dropped then).
    fn take_outbound(&mut self, buf: &mut [u8]) -> Option<usize>;
    /// Takes a decrypted inner packet (an IP packet that passed the SA's selectors).
    fn deliver(&mut self, packet: &[u8]);
}

/// A virtual smoltcp [`Device`] (medium IP) whose "wire" is the IPsec tunnel. See the
/// [module](self).
#[derive(Debug, Default)]
pub struct TunnelDevice<const N: usize = 4, const MTU: usize = 1400> {
    to_tunnel: Deque<Vec<u8, MTU>, N>,
    from_tunnel: Deque<Vec<u8, MTU>, N>,
    dropped: u64,
}

impl<const N: usize, const MTU: usize> TunnelDevice<N, MTU> {
    /// An empty device.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            to_tunnel: Deque::new(),
            from_tunnel: Deque::new(),
            dropped: 0,
        }
    }

    /// Decrypted packets dropped because the receive queue was full or they exceeded
    /// `MTU`.
    #[must_use]
    pub const fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Packets waiting to be protected.
    #[must_use]
    pub fn pending_outbound(&self) -> usize {
        self.to_tunnel.len()
    }
}

impl<const N: usize, const MTU: usize> InnerPath for TunnelDevice<N, MTU> {
    fn take_outbound(&mut self, buf: &mut [u8]) -> Option<usize> {
        let p = self.to_tunnel.pop_front()?;
        let Some(dst) = buf.get_mut(..p.len()) else {
            self.dropped = self.dropped.saturating_add(1);
            return None;
        };
        dst.copy_from_slice(&p);
        Some(p.len())
    }

    fn deliver(&mut self, packet: &[u8]) {
        let ok = Vec::from_slice(packet)
            .ok()
            .is_some_and(|v| self.from_tunnel.push_back(v).is_ok());
        if !ok {
            self.dropped = self.dropped.saturating_add(1);
        }
    }
}

/// A received packet, owned.
#[derive(Debug)]
pub struct RxToken<const MTU: usize>(Vec<u8, MTU>);

impl<const MTU: usize> phy::RxToken for RxToken<MTU> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

/// Room in the to-tunnel queue.
#[derive(Debug)]
pub struct TxToken<'a, const N: usize, const MTU: usize>(&'a mut Deque<Vec<u8, MTU>, N>);

impl<const N: usize, const MTU: usize> phy::TxToken for TxToken<'_, N, MTU> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut p: Vec<u8, MTU> = Vec::new();
        // smoltcp never asks for more than the MTU it was given in the capabilities.
        let _ = p.resize(len.min(MTU), 0);
        let r = f(&mut p);
        let _ = self.0.push_back(p);
        r
    }
}

impl<const N: usize, const MTU: usize> Device for TunnelDevice<N, MTU> {
    type RxToken<'a>
        = RxToken<MTU>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a, N, MTU>
    where
        Self: 'a;

    fn receive(&mut self, _: SmolInstant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if self.to_tunnel.is_full() {
            // No room for a reply: leave the packet queued until the stack drained.
            return None;
        }
        let p = self.from_tunnel.pop_front()?;
        Some((RxToken(p), TxToken(&mut self.to_tunnel)))
    }

    fn transmit(&mut self, _: SmolInstant) -> Option<Self::TxToken<'_>> {
        (!self.to_tunnel.is_full()).then_some(TxToken(&mut self.to_tunnel))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = MTU;
        caps.max_burst_size = Some(N);
        caps
    }
}
