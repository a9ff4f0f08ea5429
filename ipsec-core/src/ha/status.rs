//! `show crypto ipsec ha`-style status: the redundancy group (interface, virtual IP,
//! state and since when), the sync peer, the SA count, and the HA state of each SA pair
//! (ACTIVE on the node carrying it, STANDBY on the node holding a synchronised copy).
//!
//! Plain data with `Display` impls; the port decides how to print it (CLI, defmt, JSON).

use core::fmt;
use core::net::{IpAddr, Ipv4Addr};

use hal_traits::CryptoProvider;

use super::HaRole;
use super::channel::SyncChannel;
use super::sync::HaSync;
use super::vrrp::{Vrrp, VrrpState};
use crate::time::Instant;

/// The HA state of a node for one virtual IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HaStatus {
    /// The port's index of the interface carrying the virtual IP.
    pub interface: u32,
    /// The virtual IP.
    pub vip: Ipv4Addr,
    /// The redundancy group (VRID).
    pub group: u8,
    /// The redundancy protocol state.
    pub redundancy: VrrpState,
    /// When the redundancy state was entered.
    pub redundancy_since: Instant,
    /// The sync role.
    pub role: HaRole,
    /// When the sync role was entered.
    pub role_since: Instant,
    /// SA pairs held.
    pub sa_pairs: usize,
    /// IKE SAs held.
    pub ike_sas: usize,
    /// Whether the sync channel has a session.
    pub peer_connected: bool,
    /// Whether the last snapshot completed.
    pub in_sync: bool,
    /// Messages sent and not yet acknowledged.
    pub unacked: usize,
    /// When sync data was last sent or applied.
    pub last_sync: Option<Instant>,
    /// The time the status was taken (to print ages).
    pub now: Instant,
}

impl HaStatus {
    /// Collects the status from the three HA components of a node.
    #[must_use]
    pub fn collect<
        P: CryptoProvider,
        const SAS: usize,
        const IKE: usize,
        const W: usize,
        const Q: usize,
        const MTU: usize,
    >(
        now: Instant,
        interface: u32,
        vrrp: &Vrrp,
        sync: &HaSync<SAS, IKE, W>,
        channel: &SyncChannel<P, Q, MTU>,
    ) -> Self {
        Self {
            interface,
            vip: vrrp
                .config()
                .virtual_ips
                .first()
                .copied()
                .unwrap_or(Ipv4Addr::UNSPECIFIED),
            group: vrrp.config().vrid,
            redundancy: vrrp.state(),
            redundancy_since: vrrp.since(),
            role: sync.role(),
            role_since: sync.since(),
            sa_pairs: sync.pair_count(),
            ike_sas: sync.ike_count(),
            peer_connected: channel.is_connected(),
            in_sync: sync.in_sync(),
            unacked: channel.unacked(),
            last_sync: sync.last_sync(),
            now,
        }
    }
}

fn secs(f: &mut fmt::Formatter<'_>, ms: u64) -> fmt::Result {
    write!(f, "{}.{:03}s", ms / 1000, ms % 1000)
}

impl fmt::Display for HaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Interface #{}, VIP {}, group {}",
            self.interface, self.vip, self.group
        )?;
        write!(f, "  Redundancy state: {} for ", self.redundancy)?;
        secs(f, (self.now - self.redundancy_since).as_millis())?;
        writeln!(f)?;
        write!(f, "  HA state: {} for ", self.role)?;
        secs(f, (self.now - self.role_since).as_millis())?;
        writeln!(f)?;
        writeln!(
            f,
            "  IPsec SA pairs: {}, IKE SAs: {}",
            self.sa_pairs, self.ike_sas
        )?;
        write!(
            f,
            "  Sync peer: {}, {}, {} unacknowledged",
            if self.peer_connected {
                "connected"
            } else {
                "down"
            },
            if self.in_sync {
                "in sync"
            } else {
                "not in sync"
            },
            self.unacked
        )?;
        if let Some(t) = self.last_sync {
            write!(f, ", last sync ")?;
            secs(f, (self.now - t).as_millis())?;
            write!(f, " ago")?;
        }
        writeln!(f)
    }
}

/// The HA state of one SA pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaHaStatus {
    /// Our SPI.
    pub inbound_spi: u32,
    /// The peer's SPI.
    pub outbound_spi: u32,
    /// The crypto-map entry.
    pub sa_group: u32,
    /// The IKE peer.
    pub peer: IpAddr,
    /// ACTIVE: installed and carrying traffic here; STANDBY: a synchronised copy.
    pub state: HaRole,
    /// The outbound counter as last known here.
    pub out_next_seq: u64,
    /// The inbound window top as last known here.
    pub in_top: u64,
}

impl fmt::Display for SaHaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "  peer {} map entry {}: inbound spi {:#010x}, outbound spi {:#010x}, HA status: {} (out seq {}, in top {})",
            self.peer,
            self.sa_group,
            self.inbound_spi,
            self.outbound_spi,
            self.state,
            self.out_next_seq,
            self.in_top
        )
    }
}
