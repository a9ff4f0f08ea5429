//! High availability: reverse route injection, redundancy groups with a virtual IP, and
//! stateful failover by SADB synchronisation.
//!
//! Everything here is a sans-IO building block; the host (a port, or the control plane
//! of a firmware) wires them together. None reads a clock, sends a packet or touches an
//! OS table:
//!
//! * [`rri`]: reverse route injection. Route add/remove decisions for the remote
//!   protected subnets of the SAs (dynamic) or of the crypto-map entries (static), with
//!   reference counting, emitted as events or applied to a
//!   [`RouteTable`](hal_traits::route::RouteTable). Gated on the redundancy role.
//! * [`vrrp`]: a VRRPv3 (RFC 5798) state machine, the open equivalent of HSRP, with
//!   preemption delay and interface tracking, and its advertisement wire format; or a
//!   host-driven role.
//! * [`record`]: the records of SADB state the active node streams to the standby: IPsec
//!   SA pairs (keys, configuration, sequence counters, replay windows, lifetimes) and
//!   opaque IKE SA records.
//! * [`channel`]: the sync channel: versioned, encrypted and authenticated datagrams
//!   (AES-CBC + HMAC-SHA-256 or AES-GCM, session keys from a configured key and fresh
//!   nonces), with acknowledgements, bounded retransmission and heartbeats.
//! * [`sync`]: the replication logic: full snapshot when the standby joins, incremental
//!   updates at the configured replay interval (checked on a tick, not per packet),
//!   deletes, and the takeover that installs the received SAs with their outbound
//!   counters advanced and their replay windows closed conservatively.
//! * [`status`]: `show crypto ipsec ha`-style data.
//!
//! # The safety argument of a takeover
//!
//! The standby only ever knows a *lagging* copy of the counters. ESP would be broken by
//! a reused sequence number (and, for GCM, a reused nonce), and by a replayed packet that
//! the old active had already accepted. So at takeover every outbound counter is moved to
//! `last synced + outbound interval + margin` and every inbound window's top to
//! `last synced + inbound interval + margin` with every number below marked as seen. As
//! long as the lag at the moment the active died is at most `interval + margin` (see
//! [`sync::SyncConfig`] for the bound), no number is reused and no replay is accepted;
//! the price is a few skipped sequence numbers and a few dropped genuine packets.
//!
//! A *graceful* handover does not pay it: the resigning active stops carrying traffic,
//! sends its final counters and a handover marker that vouches for them
//! ([`sync::HaSync::hand_over`]), and a standby that holds exactly that state takes over
//! with the same counters. Without the marker (a crash), or if the state does not match
//! it, the margins apply.
//!
//! # Wiring (one gateway)
//!
//! ```text
//!  VRRP adverts <-> Vrrp ──RoleChanged──> HaSync::activate / deactivate
//!                                    └──> Rri::set_active
//!  IKE ChildSaEstablished ──> Dataplane::install_pair + HaSync::sa_installed + Rri::sa_up
//!  IKE ChildSaDeleted / idle / DPD dead ──> HaSync::sa_removed + Rri::sa_down / peer_down
//!  tick ──> HaSync::tick(dataplane) ──> SyncChannel ──datagrams──> peer
//! ```

pub mod channel;
pub mod record;
pub mod rri;
pub mod status;
pub mod sync;
pub mod vrrp;

use core::fmt;

/// The redundancy role of this node for a virtual IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum HaRole {
    /// Owns the virtual IP, carries the traffic, injects routes, streams state.
    Active,
    /// Receives state, injects no routes, ready to take over.
    Standby,
}

impl fmt::Display for HaRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Active => "ACTIVE",
            Self::Standby => "STANDBY",
        })
    }
}
