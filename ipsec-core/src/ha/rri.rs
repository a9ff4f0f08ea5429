//! Reverse route injection (`set reverse-route` on a crypto map entry).
//!
//! A hub behind which many spokes' subnets are reachable only through IPsec tells its
//! internal routing about them: a route to each remote protected subnet, pointing at the
//! peer. Two modes, as in IOS:
//!
//! * **Dynamic** (the default): a route exists while at least one IPsec SA pair protects
//!   the subnet. It appears when [`Rri::sa_up`] is called for a new pair and is withdrawn
//!   when the last pair for that subnet goes: [`Rri::sa_down`] (DELETE received or sent,
//!   idle timeout, hard expiry without a rekey) or [`Rri::peer_down`] (DPD declared the
//!   peer dead). For dynamic crypto maps the subnet is the proxy identity the initiator
//!   sent, i.e. the remote half of the SA's selector.
//! * **Static**: the routes of the crypto-map entries' ACLs exist from configuration
//!   time ([`Rri::add_static`]), whether or not an SA is up. Traffic for a spoke whose SA
//!   is down is then black-holed into the crypto map (which triggers negotiation) rather
//!   than following a default route in the clear: the legacy behaviour.
//!
//! The next hop is the SA's peer, a configured `remote-peer` address, or an interface
//! ([`NextHopPolicy`]). A non-prefix range selector (`10.0.0.1-10.0.0.5`) is covered by
//! the minimal set of prefixes.
//!
//! # Invariants
//!
//! Routes are reference counted: two SA pairs to the same subnet and next hop (a rekey
//! overlap, two crypto-map entries) share one route, which is injected once and withdrawn
//! once, when the last user goes. The manager keeps, for each route, what it *wants*
//! (referenced or static, and allowed by the redundancy role) and what it *reported*; a
//! change is an event only when the two differ, so no route is ever injected twice or
//! withdrawn without having been injected, whatever order the inputs come in. There is no
//! event queue to overflow: [`Rri::poll_event`] reads the differences.
//!
//! When bound to a redundancy group ([`Rri::bind_redundancy`]), routes are injected only
//! while the node is Active: a standby keeps its reference counts (from synchronised SAs)
//! but advertises nothing, and withdraws everything when it loses the Active role.
//!
//! Capacities are fixed: `SAS` SA pairs and `ROUTES` distinct routes.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hal_traits::route::{NextHop, Route, RouteError, RouteTable};
use heapless::Vec;

use crate::spd::{AddrRange, Selector};

/// When routes exist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RriMode {
    /// With the SAs (`reverse-route`): added on SA up, withdrawn on SA down.
    #[default]
    Dynamic,
    /// From configuration time (`reverse-route static`), independent of SAs.
    Static,
}

/// Where injected routes point.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NextHopPolicy {
    /// The SA's peer (the IOS default).
    #[default]
    Peer,
    /// A configured address (`reverse-route remote-peer <ip>`), e.g. the next router
    /// towards the peer.
    RemotePeer(IpAddr),
    /// An interface, with no gateway (`reverse-route remote-peer` on a point-to-point
    /// link).
    Interface(u32),
}

/// RRI configuration of a crypto map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RriConfig {
    /// Dynamic or static.
    pub mode: RriMode,
    /// Next hop of the routes.
    pub next_hop: NextHopPolicy,
    /// Administrative distance of the routes.
    pub distance: u8,
    /// Route tag.
    pub tag: u32,
}

impl Default for RriConfig {
    /// Dynamic, via the peer, distance 1, no tag.
    fn default() -> Self {
        Self {
            mode: RriMode::Dynamic,
            next_hop: NextHopPolicy::Peer,
            distance: 1,
            tag: 0,
        }
    }
}

/// A route change for the port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RriEvent {
    /// Install this route.
    RouteAdd(Route),
    /// Withdraw this route.
    RouteRemove(Route),
}

/// Why the RRI manager refused an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum RriError {
    /// The SA table or the route table is full; nothing was changed.
    Full,
    /// An SA pair with this inbound SPI is already known.
    DuplicateSa,
}

impl fmt::Display for RriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full => "RRI table full",
            Self::DuplicateSa => "SA already registered for RRI",
        })
    }
}

impl core::error::Error for RriError {}

#[derive(Clone, Copy, Debug)]
struct SaRef {
    inbound_spi: u32,
    peer: IpAddr,
    remote: AddrRange,
    next_hop: NextHop,
}

#[derive(Clone, Copy, Debug)]
struct RouteEntry {
    route: Route,
    /// SA pairs using the route.
    refs: u32,
    /// Configured statically.
    pinned: bool,
    /// Reported as added (and not since withdrawn).
    installed: bool,
}

/// Whether routes may be injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gate {
    /// Not bound to a redundancy group: always.
    Unbound,
    /// Bound, and Active.
    Active,
    /// Bound, and not Active.
    Standby,
}

/// The RRI manager of one crypto map (see the [module docs](self)).
#[derive(Debug)]
pub struct Rri<const SAS: usize, const ROUTES: usize> {
    config: RriConfig,
    sas: Vec<SaRef, SAS>,
    routes: Vec<RouteEntry, ROUTES>,
    gate: Gate,
}

impl<const SAS: usize, const ROUTES: usize> Rri<SAS, ROUTES> {
    /// A manager with no routes, not bound to a redundancy group.
    #[must_use]
    pub const fn new(config: RriConfig) -> Self {
        Self {
            config,
            sas: Vec::new(),
            routes: Vec::new(),
            gate: Gate::Unbound,
        }
    }

    /// The configuration.
    #[must_use]
    pub const fn config(&self) -> &RriConfig {
        &self.config
    }

    /// Binds the manager to a redundancy group (`reverse-route` with `redundancy`):
    /// routes are injected only while [`Rri::set_active`] says the node is Active. Starts
    /// as not Active.
    pub fn bind_redundancy(&mut self) {
        if self.gate == Gate::Unbound {
            self.gate = Gate::Standby;
        }
    }

    /// The redundancy role changed. Becoming Active injects every wanted route; losing it
    /// withdraws every injected one. Ignored unless bound.
    pub fn set_active(&mut self, active: bool) {
        if self.gate != Gate::Unbound {
            self.gate = if active { Gate::Active } else { Gate::Standby };
        }
    }

    /// Whether routes may currently be injected.
    #[must_use]
    pub fn is_injecting(&self) -> bool {
        self.gate != Gate::Standby
    }

    /// Number of SA pairs registered.
    #[must_use]
    pub fn sa_count(&self) -> usize {
        self.sas.len()
    }

    fn next_hop_for(&self, peer: IpAddr) -> NextHop {
        match self.config.next_hop {
            NextHopPolicy::Peer => NextHop::Gateway(peer),
            NextHopPolicy::RemotePeer(a) => NextHop::Gateway(a),
            NextHopPolicy::Interface(i) => NextHop::Interface(i),
        }
    }

    fn route(&self, dest: IpAddr, prefix_len: u8, next_hop: NextHop) -> Route {
        Route {
            dest,
            prefix_len,
            next_hop,
            distance: self.config.distance,
            tag: self.config.tag,
        }
    }

    fn find(&self, r: &Route) -> Option<usize> {
        self.routes.iter().position(|e| {
            e.route.dest == r.dest
                && e.route.prefix_len == r.prefix_len
                && e.route.next_hop == r.next_hop
        })
    }

    /// How many new route entries covering `range` via `nh` would need.
    fn missing(&self, range: &AddrRange, nh: NextHop) -> usize {
        let mut n = 0usize;
        for_each_prefix(range, |dest, len| {
            if self.find(&self.route(dest, len, nh)).is_none() {
                n = n.saturating_add(1);
            }
        });
        n
    }

    /// Adds one reference (or the static pin) to every prefix of `range`. The caller has
    /// checked there is room.
    fn reference(&mut self, range: &AddrRange, nh: NextHop, pin: bool) {
        let mut todo: Vec<(IpAddr, u8), 256> = Vec::new();
        for_each_prefix(range, |dest, len| {
            let _ = todo.push((dest, len));
        });
        for (dest, len) in todo {
            let r = self.route(dest, len, nh);
            if let Some(i) = self.find(&r) {
                if let Some(e) = self.routes.get_mut(i) {
                    if pin {
                        e.pinned = true;
                    } else {
                        e.refs = e.refs.saturating_add(1);
                    }
                }
            } else {
                let _ = self.routes.push(RouteEntry {
                    route: r,
                    refs: u32::from(!pin),
                    pinned: pin,
                    installed: false,
                });
            }
        }
    }

    fn unreference(&mut self, range: &AddrRange, nh: NextHop, unpin: bool) {
        let mut todo: Vec<(IpAddr, u8), 256> = Vec::new();
        for_each_prefix(range, |dest, len| {
            let _ = todo.push((dest, len));
        });
        for (dest, len) in todo {
            let r = self.route(dest, len, nh);
            if let Some(i) = self.find(&r) {
                if let Some(e) = self.routes.get_mut(i) {
                    if unpin {
                        e.pinned = false;
                    } else {
                        e.refs = e.refs.saturating_sub(1);
                    }
                }
            }
        }
        self.collect_garbage();
    }

    /// Frees entries nobody wants that were never reported (or whose withdrawal was).
    fn collect_garbage(&mut self) {
        self.routes
            .retain(|e| e.refs > 0 || e.pinned || e.installed);
    }

    /// Configures a static route (static mode, or a static entry in dynamic mode) to the
    /// remote range `remote` of a crypto-map entry whose peer is `peer`.
    ///
    /// # Errors
    /// [`RriError::Full`] if the route table has no room; nothing changes then.
    pub fn add_static(&mut self, remote: &AddrRange, peer: IpAddr) -> Result<(), RriError> {
        let nh = self.next_hop_for(peer);
        if self.routes.len().saturating_add(self.missing(remote, nh)) > ROUTES {
            return Err(RriError::Full);
        }
        self.reference(remote, nh, true);
        Ok(())
    }

    /// Removes a static route configured with [`Rri::add_static`] (the crypto-map entry
    /// was deleted). Routes still used by SAs stay.
    pub fn remove_static(&mut self, remote: &AddrRange, peer: IpAddr) {
        let nh = self.next_hop_for(peer);
        self.unreference(remote, nh, true);
    }

    /// An IPsec SA pair was installed: `inbound_spi` names it for [`Rri::sa_down`],
    /// `selector` is its traffic selector from our side (its `remote` half is the peer's
    /// protected subnet, the proxy identity a dynamic peer sent), `peer` the IKE peer.
    /// In static mode only the pair is recorded: routes come from configuration.
    ///
    /// # Errors
    /// [`RriError::DuplicateSa`] if the SPI is already registered; [`RriError::Full`] if
    /// a table has no room. Nothing changes on error.
    pub fn sa_up(
        &mut self,
        inbound_spi: u32,
        selector: &Selector,
        peer: IpAddr,
    ) -> Result<(), RriError> {
        if self.sas.iter().any(|s| s.inbound_spi == inbound_spi) {
            return Err(RriError::DuplicateSa);
        }
        let nh = self.next_hop_for(peer);
        let dynamic = self.config.mode == RriMode::Dynamic;
        if dynamic
            && self
                .routes
                .len()
                .saturating_add(self.missing(&selector.remote, nh))
                > ROUTES
        {
            return Err(RriError::Full);
        }
        self.sas
            .push(SaRef {
                inbound_spi,
                peer,
                remote: selector.remote,
                next_hop: nh,
            })
            .map_err(|_| RriError::Full)?;
        if dynamic {
            self.reference(&selector.remote, nh, false);
        }
        Ok(())
    }

    /// The SA pair with inbound SPI `inbound_spi` is gone (DELETE, idle timeout, expiry
    /// without rekey). Returns whether it was registered.
    pub fn sa_down(&mut self, inbound_spi: u32) -> bool {
        let Some(i) = self.sas.iter().position(|s| s.inbound_spi == inbound_spi) else {
            return false;
        };
        let s = self.sas.swap_remove(i);
        if self.config.mode == RriMode::Dynamic {
            self.unreference(&s.remote, s.next_hop, false);
        }
        true
    }

    /// The peer `peer` was declared dead (DPD): every SA pair with it is gone. Returns
    /// how many were registered.
    pub fn peer_down(&mut self, peer: IpAddr) -> usize {
        let mut n = 0;
        while let Some(spi) = self
            .sas
            .iter()
            .find(|s| s.peer == peer)
            .map(|s| s.inbound_spi)
        {
            self.sa_down(spi);
            n += 1;
        }
        n
    }

    fn wanted(&self, e: &RouteEntry) -> bool {
        (e.refs > 0 || e.pinned) && self.gate != Gate::Standby
    }

    /// The first route whose reported state differs from the wanted one.
    fn pending(&self) -> Option<(usize, bool)> {
        self.routes
            .iter()
            .enumerate()
            .find(|(_, e)| self.wanted(e) != e.installed)
            .map(|(i, e)| (i, !e.installed))
    }

    fn mark(&mut self, i: usize, installed: bool) {
        if let Some(e) = self.routes.get_mut(i) {
            e.installed = installed;
        }
        if !installed {
            self.collect_garbage();
        }
    }

    /// The next route change, marked as done. Withdrawals and additions come in table
    /// order; call until `None` after every input.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<RriEvent> {
        let (i, add) = self.pending()?;
        let route = self.routes.get(i)?.route;
        self.mark(i, add);
        Some(if add {
            RriEvent::RouteAdd(route)
        } else {
            RriEvent::RouteRemove(route)
        })
    }

    /// Applies every pending change to `table`, as an alternative to
    /// [`Rri::poll_event`]. Returns the number of changes applied.
    ///
    /// # Errors
    /// The first error of `table`; that change (and any after it) stays pending and is
    /// retried by the next call.
    pub fn apply<T: RouteTable>(&mut self, table: &mut T) -> Result<usize, RouteError> {
        let mut n = 0;
        while let Some((i, add)) = self.pending() {
            let Some(route) = self.routes.get(i).map(|e| e.route) else {
                break;
            };
            if add {
                table.add(&route)?;
            } else {
                table.remove(&route)?;
            }
            self.mark(i, add);
            n += 1;
        }
        Ok(n)
    }

    /// The routes currently injected (reported as added), for status output.
    pub fn injected(&self) -> impl Iterator<Item = &Route> + '_ {
        self.routes.iter().filter(|e| e.installed).map(|e| &e.route)
    }

    /// The number of SA pairs and static pins using `route`, if it is known.
    #[must_use]
    pub fn references(&self, route: &Route) -> Option<(u32, bool)> {
        self.find(route)
            .and_then(|i| self.routes.get(i))
            .map(|e| (e.refs, e.pinned))
    }
}

/// Calls `f` with each prefix of the minimal prefix cover of `range`, in address order.
pub fn for_each_prefix(range: &AddrRange, mut f: impl FnMut(IpAddr, u8)) {
    let (mut s, e, bits, v4) = match (range.start(), range.end()) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (
            u128::from(a.to_bits()),
            u128::from(b.to_bits()),
            32u32,
            true,
        ),
        (IpAddr::V6(a), IpAddr::V6(b)) => (a.to_bits(), b.to_bits(), 128u32, false),
        _ => return,
    };
    loop {
        // The largest aligned block starting at `s` that does not pass `e`.
        let mut k = if s == 0 {
            bits
        } else {
            s.trailing_zeros().min(bits)
        };
        let span = |k: u32| u128::MAX.checked_shr(128 - k).unwrap_or(0);
        while k > 0 && s.checked_add(span(k)).is_none_or(|last| last > e) {
            k -= 1;
        }
        let len = u8::try_from(bits - k).unwrap_or(0);
        let addr = if v4 {
            IpAddr::V4(Ipv4Addr::from_bits(u32::try_from(s).unwrap_or(0)))
        } else {
            IpAddr::V6(Ipv6Addr::from_bits(s))
        };
        f(addr, len);
        let last = s.saturating_add(span(k));
        if last >= e {
            break;
        }
        s = last + 1;
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec as StdVec;

    use super::*;

    fn prefixes(r: &AddrRange) -> StdVec<std::string::String> {
        let mut v = StdVec::new();
        for_each_prefix(r, |a, l| v.push(std::format!("{a}/{l}")));
        v
    }

    #[test]
    fn prefix_cover() {
        let v4 = |s: &str| IpAddr::V4(s.parse().unwrap());
        let r = AddrRange::from_prefix(v4("10.0.68.0"), 24).unwrap();
        assert_eq!(prefixes(&r), ["10.0.68.0/24"]);
        let r = AddrRange::new(v4("10.0.0.1"), v4("10.0.0.6")).unwrap();
        assert_eq!(
            prefixes(&r),
            ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
        );
        assert_eq!(prefixes(&AddrRange::any_v4()), ["0.0.0.0/0"]);
        assert_eq!(prefixes(&AddrRange::any_v6()), ["::/0"]);
        let r = AddrRange::new(v4("0.0.0.0"), v4("255.255.255.254")).unwrap();
        assert_eq!(prefixes(&r).len(), 32);
        let r = AddrRange::host(v4("255.255.255.255"));
        assert_eq!(prefixes(&r), ["255.255.255.255/32"]);
    }
}
