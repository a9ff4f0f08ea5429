//! GRE over IPsec, the two ways IOS configures it, and the MTU arithmetic.
//!
//! **Tunnel protection** (`tunnel protection ipsec profile P` on the tunnel interface): the
//! SPD entry is derived from the tunnel: GRE (IP protocol 47) between tunnel source and
//! destination, and the SAs are in transport mode by default, since the delivery header
//! already names the two endpoints. [`tunnel_protection_sa`] builds the SA configuration,
//! [`gre_selector`] and [`gre_policy`] the SPD side.
//!
//! **Crypto map** on the physical interface whose ACL matches the tunnel's packets:
//!
//! ```text
//! access-list 101 permit gre host 203.0.113.1 host 203.0.113.2
//! crypto map VPN 10 ipsec-isakmp
//!  set peer 203.0.113.2
//!  set transform-set TS        ! mode tunnel (default) or mode transport
//!  match address 101
//! ```
//!
//! The selector is the same; [`crypto_map_sa`] takes the mode and the crypto peers.
//!
//! **Overhead.** GRE adds 24 bytes (20 of delivery header, 4 of GRE). In transport mode
//! ESP protects the GRE header and the payload and keeps the delivery header as the
//! outer one, so for a payload of `n` bytes the packet on the wire is `20 + sealed(n + 4)`
//! where plain IPsec tunnel mode (the payload itself as the inner packet) sends
//! `20 + sealed(n)`: GRE over IPsec transport mode costs exactly the 4 bytes of GRE more
//! than plain tunnel mode, before padding, and the largest payload is exactly 4 bytes
//! smaller ([`max_inner_len`]). In tunnel mode the delivery header is itself protected
//! and a new outer header added: 24 bytes more than plain tunnel mode.

use core::net::IpAddr;

use hal_traits::CryptoProvider;

use super::GreConfig;
use crate::esp::{Direction, EspConfig, EspSa, Mode, Transform};
use crate::spd::{AddrRange, Policy, PolicyAction, Selector, SpdError};
use crate::wire::proto;

/// The selector of GRE between `local` and `remote` (our tunnel source and the tunnel
/// destination), from our point of view: `permit gre host <local> host <remote>`.
///
/// # Errors
///
/// [`SpdError::FamilyMismatch`] if one address is IPv4 and the other IPv6.
pub fn gre_selector(local: IpAddr, remote: IpAddr) -> Result<Selector, SpdError> {
    Ok(Selector::new(AddrRange::host(local), AddrRange::host(remote))?.with_protocol(proto::GRE))
}

/// The selector of a tunnel's GRE traffic.
#[must_use]
pub fn tunnel_selector(tunnel: &GreConfig) -> Selector {
    let local = AddrRange::host(IpAddr::V4(tunnel.source));
    let remote = AddrRange::host(IpAddr::V4(tunnel.destination));
    // Both IPv4: no family mismatch is possible, so build it directly.
    Selector {
        local,
        remote,
        protocol: Some(proto::GRE),
        local_ports: crate::spd::PortRange::ANY,
        remote_ports: crate::spd::PortRange::ANY,
    }
}

/// The SPD entry that protects a tunnel's GRE traffic with the SAs of `sa_group`.
#[must_use]
pub fn gre_policy(seq: u32, tunnel: &GreConfig, sa_group: u32) -> Policy {
    Policy {
        seq,
        selector: tunnel_selector(tunnel),
        action: PolicyAction::Protect { sa_group },
    }
}

/// `tunnel protection ipsec profile`: an SA in transport mode for the tunnel's GRE
/// traffic, with the tunnel's selector (checked on inbound packets) and the tunnel
/// endpoints as the SA's addresses. Other knobs are [`EspConfig::transport`]'s defaults.
#[must_use]
pub fn tunnel_protection_sa(
    tunnel: &GreConfig,
    spi: u32,
    direction: Direction,
    transform: Transform,
) -> EspConfig {
    let mut c = EspConfig::transport(spi, direction, transform);
    c.local = Some(IpAddr::V4(tunnel.source));
    c.remote = Some(IpAddr::V4(tunnel.destination));
    c.selector = Some(tunnel_selector(tunnel));
    c
}

/// A crypto map entry matching `permit gre host <source> host <destination>`, in `mode`,
/// between the crypto peers `local_peer` and `remote_peer` (usually, but not necessarily,
/// the tunnel endpoints). In tunnel mode the delivery packet becomes the inner packet.
#[must_use]
pub fn crypto_map_sa(
    tunnel: &GreConfig,
    spi: u32,
    direction: Direction,
    transform: Transform,
    mode: Mode,
    local_peer: IpAddr,
    remote_peer: IpAddr,
) -> EspConfig {
    let mut c = EspConfig::tunnel(spi, direction, transform, local_peer, remote_peer);
    c.mode = mode;
    c.selector = Some(tunnel_selector(tunnel));
    c
}

/// The largest delivery packet (delivery header, GRE header and payload) `sa` carries
/// without exceeding `link_mtu`: what to feed [`GreTunnel::set_path_mtu`] when `link_mtu`
/// is the path MTU of the SA's outer packets.
///
/// [`GreTunnel::set_path_mtu`]: super::GreTunnel::set_path_mtu
#[must_use]
pub fn max_delivery_len<P: CryptoProvider, const W: usize>(
    sa: &EspSa<P, W>,
    link_mtu: usize,
) -> usize {
    sa.max_inner_len(link_mtu)
}

/// The largest payload (inner packet) that fits through the GRE tunnel `tunnel` over
/// `sa` without the ESP packet exceeding `link_mtu`: the SA's largest delivery packet
/// minus the tunnel overhead. The same formula holds in transport mode (where the SA's
/// [`max_inner_len`](EspSa::max_inner_len) already counts the delivery header it keeps)
/// and in tunnel mode.
#[must_use]
pub fn max_inner_len<P: CryptoProvider, const W: usize>(
    sa: &EspSa<P, W>,
    tunnel: &GreConfig,
    link_mtu: usize,
) -> usize {
    sa.max_inner_len(link_mtu).saturating_sub(tunnel.overhead())
}
