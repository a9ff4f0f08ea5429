//! The routing table, as reverse route injection (RRI) sees it.
//!
//! The core never touches an operating system's routing table: its RRI manager decides
//! which routes must exist (the remote protected subnets of the IPsec SAs, or of the
//! static crypto-map entries) and hands each change to a [`RouteTable`] that the port
//! implements: netlink on Linux, the smoltcp route table on a microcontroller, a routing
//! protocol's redistribution hook, or a plain list in tests.
//!
//! A route is a prefix, a next hop, an administrative distance and a tag (what IOS's
//! `reverse-route` installs as a static route, which a routing protocol can redistribute
//! by tag). The RRI manager never adds a route twice and never removes one it did not
//! add, so an implementation may treat either as an error.

use core::fmt;
use core::net::IpAddr;

/// Where a route sends its traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NextHop {
    /// Through a gateway: the IPsec peer, or a configured `remote-peer` address.
    Gateway(IpAddr),
    /// Out of an interface (by the port's interface index), with no gateway: the
    /// `reverse-route remote-peer <ip> gateway`-less, point-to-point form.
    Interface(u32),
}

/// One route: `dest/prefix_len` via `next_hop`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    /// The network address (host bits clear).
    pub dest: IpAddr,
    /// The prefix length: 0..=32 for IPv4, 0..=128 for IPv6.
    pub prefix_len: u8,
    /// Where the traffic goes.
    pub next_hop: NextHop,
    /// Administrative distance (IOS `set reverse-route distance`, 1 by default).
    pub distance: u8,
    /// Route tag for redistribution filters (IOS `set reverse-route tag`), 0 for none.
    pub tag: u32,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} ", self.dest, self.prefix_len)?;
        match self.next_hop {
            NextHop::Gateway(a) => write!(f, "via {a}")?,
            NextHop::Interface(i) => write!(f, "dev #{i}")?,
        }
        write!(f, " [{}] tag {}", self.distance, self.tag)
    }
}

/// Why a routing table refused a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum RouteError {
    /// No room for another route.
    Full,
    /// The route to remove is not in the table.
    NotFound,
    /// The route already exists.
    Exists,
    /// The platform refused the change (permissions, an unknown interface, ...).
    Rejected,
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full => "route table full",
            Self::NotFound => "no such route",
            Self::Exists => "route already present",
            Self::Rejected => "route change rejected by the platform",
        })
    }
}

impl core::error::Error for RouteError {}

/// A routing table a port lets the core change.
///
/// Both calls are synchronous and must be idempotent from the table's point of view only
/// in the sense documented above: the caller pairs every `add` with at most one `remove`.
pub trait RouteTable {
    /// Installs `route`.
    ///
    /// # Errors
    /// [`RouteError::Full`], [`RouteError::Exists`], [`RouteError::Rejected`]. The caller
    /// retries a failed add later; nothing was installed.
    fn add(&mut self, route: &Route) -> Result<(), RouteError>;

    /// Withdraws `route`.
    ///
    /// # Errors
    /// [`RouteError::NotFound`], [`RouteError::Rejected`]. The caller retries later.
    fn remove(&mut self, route: &Route) -> Result<(), RouteError>;
}

impl<T: RouteTable + ?Sized> RouteTable for &mut T {
    fn add(&mut self, route: &Route) -> Result<(), RouteError> {
        (**self).add(route)
    }

    fn remove(&mut self, route: &Route) -> Result<(), RouteError> {
        (**self).remove(route)
    }
}
