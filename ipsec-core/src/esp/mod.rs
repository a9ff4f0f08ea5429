//! ESP (RFC 4303): security associations and the packet paths through them.
//!
//! * [`EspSa`] seals and opens the ESP part of a packet (SPI to ICV): sequence numbers,
//!   padding, encryption, ICV, anti-replay. It knows nothing of IP.
//! * [`packet`] wraps that in tunnel or transport mode, over IPv4 or IPv6, raw (IP
//!   protocol 50) or UDP-encapsulated (RFC 3948): building the outer headers on the way out,
//!   parsing them and checking the inner packet on the way in.
//!
//! The inbound order of checks is the RFC's: replay window, then ICV, then window update,
//! then decryption, then padding, next header and selectors. Every failure is an
//! [`EspError`] and increments a counter in [`EspCounters`].

mod counters;
mod error;
pub mod packet;
mod sa;
mod socket;
mod transform;

use core::net::IpAddr;

pub use counters::EspCounters;
pub use error::EspError;
pub use packet::{Decapsulated, SealOptions};
pub use sa::{EspSa, OpenedEsp};
pub use transform::{
    ESP_HEADER_LEN, ESP_TRAILER_LEN, Encryption, GCM_IV_LEN, GCM_SALT_LEN, Transform,
};

use crate::lifetime::LifetimeConfig;
use crate::spd::Selector;

/// ESP mode (RFC 4301 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Mode {
    /// The whole inner IP packet is protected and a new outer header added.
    Tunnel,
    /// Only the payload is protected; ESP is inserted after the IP header.
    Transport,
}

/// Which way an SA carries traffic (SAs are unidirectional): the same notion as a
/// flow's direction in the SPD.
pub use crate::spd::Direction;

/// UDP encapsulation of ESP (RFC 3948): the UDP ports of the outer header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UdpEncap {
    /// Our port (4500 unless a NAT changed it).
    pub local_port: u16,
    /// The peer's port (4500 unless a NAT changed it).
    pub remote_port: u16,
}

impl UdpEncap {
    /// The IKE NAT-T port, 4500, on both sides.
    pub const STANDARD: Self = Self {
        local_port: 4500,
        remote_port: 4500,
    };
}

/// Treatment of the outer IPv4 header's Don't Fragment bit (`crypto ipsec df-bit`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DfBit {
    /// Copy DF from the inner header (the IOS default). Transport mode always keeps it.
    #[default]
    Copy,
    /// Always clear DF.
    Clear,
    /// Always set DF.
    Set,
}

/// Everything that defines an SA except its keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EspConfig {
    /// The SPI (chosen by the receiver of this SA's traffic).
    pub spi: u32,
    /// Inbound or outbound.
    pub direction: Direction,
    /// Tunnel or transport.
    pub mode: Mode,
    /// Algorithms.
    pub transform: Transform,
    /// Extended Sequence Numbers (RFC 4303 Appendix A).
    pub esn: bool,
    /// Anti-replay window in packets (inbound); 0 disables anti-replay.
    pub replay_window: u32,
    /// Outer addresses: ours and the peer's. Required for tunnel mode; in transport mode
    /// they are taken from the packet.
    pub local: Option<IpAddr>,
    /// The peer's outer address.
    pub remote: Option<IpAddr>,
    /// UDP encapsulation, if NAT traversal negotiated it.
    pub udp_encap: Option<UdpEncap>,
    /// Traffic selectors the inner packets must match (inbound check, RFC 4301 §5.2), from
    /// the local side's point of view. `None` skips the check (manual keying tools).
    pub selector: Option<Selector>,
    /// Soft and hard lifetimes.
    pub lifetime: LifetimeConfig,
    /// DF bit policy for tunnel mode over IPv4.
    pub df_bit: DfBit,
    /// TTL / hop limit of outer headers built in tunnel mode.
    pub outer_ttl: u8,
}

impl EspConfig {
    /// A tunnel-mode SA between `local` and `remote` with default policy knobs: 64-packet
    /// replay window, no ESN, no encapsulation, no selector check, IOS default lifetimes,
    /// DF copied, TTL 64.
    #[must_use]
    pub fn tunnel(
        spi: u32,
        direction: Direction,
        transform: Transform,
        local: IpAddr,
        remote: IpAddr,
    ) -> Self {
        Self {
            spi,
            direction,
            mode: Mode::Tunnel,
            transform,
            esn: false,
            replay_window: 64,
            local: Some(local),
            remote: Some(remote),
            udp_encap: None,
            selector: None,
            lifetime: LifetimeConfig::default(),
            df_bit: DfBit::Copy,
            outer_ttl: 64,
        }
    }

    /// A transport-mode SA with the same defaults as [`EspConfig::tunnel`].
    #[must_use]
    pub fn transport(spi: u32, direction: Direction, transform: Transform) -> Self {
        Self {
            mode: Mode::Transport,
            local: None,
            remote: None,
            ..Self::tunnel(
                spi,
                direction,
                transform,
                IpAddr::V4(core::net::Ipv4Addr::UNSPECIFIED),
                IpAddr::V4(core::net::Ipv4Addr::UNSPECIFIED),
            )
        }
    }
}

/// Events an SA raises for the control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SaEvent {
    /// The soft lifetime (time or kilobytes) was reached: negotiate a replacement.
    SoftExpired {
        /// The SA's SPI.
        spi: u32,
    },
    /// The hard lifetime was reached: the SA refuses all traffic and should be deleted.
    HardExpired {
        /// The SA's SPI.
        spi: u32,
    },
    /// The SA (and its pair) carried no traffic for the idle time and was deleted
    /// (`crypto ipsec security-association idle-time`): send a DELETE for it. Raised by
    /// the [`Dataplane`](crate::dataplane::Dataplane), never by an SA on its own.
    IdleExpired {
        /// The SA's SPI.
        spi: u32,
    },
}
