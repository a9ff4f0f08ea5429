use core::net::Ipv4Addr;

use super::{DEFAULT_IP_MTU, DELIVERY_HEADER_LEN};
use crate::esp::DfBit;
use crate::time::Duration;
use crate::wire::gre::BASE_HEADER_LEN;

/// `keepalive <period> <retries>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct KeepaliveConfig {
    /// Time between keepalives (`keepalive 20 3`: 20 s). Must not be zero.
    pub period: Duration,
    /// Consecutive unanswered keepalives tolerated; one more takes line protocol down.
    pub retries: u32,
}

impl KeepaliveConfig {
    /// `keepalive` with no arguments: every 10 s, 3 retries.
    pub const DEFAULT: Self = Self::new(10, 3);

    /// `keepalive <period_secs> <retries>`.
    #[must_use]
    pub const fn new(period_secs: u64, retries: u32) -> Self {
        Self {
            period: Duration::from_secs(period_secs),
            retries,
        }
    }
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// `tunnel path-mtu-discovery [age-timer <minutes>] [min-mtu <bytes>]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PmtudConfig {
    /// How long a learned path MTU holds before the tunnel MTU goes back up (default
    /// 10 minutes; [`Duration::MAX`] for `age-timer infinite`).
    pub age_timer: Duration,
    /// The tunnel MTU is never lowered below this (default 92).
    pub min_mtu: u16,
}

impl PmtudConfig {
    /// The IOS defaults: age timer 10 minutes, minimum MTU 92.
    pub const DEFAULT: Self = Self {
        age_timer: Duration::from_secs(600),
        min_mtu: 92,
    };
}

impl Default for PmtudConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The configuration of one GRE tunnel interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GreConfig {
    /// `tunnel source`: our delivery address.
    #[cfg_attr(feature = "defmt", defmt(Display2Format))]
    pub source: Ipv4Addr,
    /// `tunnel destination`: the peer's delivery address.
    #[cfg_attr(feature = "defmt", defmt(Display2Format))]
    pub destination: Ipv4Addr,
    /// `tunnel key`: sent in every packet and required on every received one (RFC 2890).
    pub key: Option<u32>,
    /// `tunnel sequence-datagrams`: send sequence numbers and drop out-of-order data.
    pub sequencing: bool,
    /// `tunnel checksum`: send checksums (received ones are always verified).
    pub checksum: bool,
    /// `ip mtu`: the largest payload the tunnel takes (default 1476).
    pub ip_mtu: u16,
    /// `tunnel ttl`: TTL of the delivery header (default 255).
    pub ttl: u8,
    /// `tunnel tos`: a fixed ToS for the delivery header; `None` copies the payload's
    /// (IPv4 ToS, IPv6 traffic class; 0 for other protocols). Keepalives always use
    /// [`KEEPALIVE_TOS`](super::KEEPALIVE_TOS).
    pub tos: Option<u8>,
    /// The delivery header's DF bit: [`DfBit::Clear`] by default (delivery packets may be
    /// fragmented); [`DfBit::Copy`] copies an IPv4 payload's DF, as
    /// `tunnel path-mtu-discovery` does; [`DfBit::Set`] always sets it.
    pub df_bit: DfBit,
    /// `tunnel path-mtu-discovery`: learn the path MTU (see
    /// [`GreTunnel::set_path_mtu`](super::GreTunnel::set_path_mtu)).
    pub path_mtu_discovery: Option<PmtudConfig>,
    /// `keepalive`: `None` runs none (line protocol then stays up).
    pub keepalive: Option<KeepaliveConfig>,
}

impl GreConfig {
    /// A tunnel between `source` and `destination` with the IOS defaults: no key, no
    /// sequencing, no checksum, `ip mtu 1476`, TTL 255, ToS copied, DF clear, no path MTU
    /// discovery, no keepalives.
    #[must_use]
    pub const fn new(source: Ipv4Addr, destination: Ipv4Addr) -> Self {
        Self {
            source,
            destination,
            key: None,
            sequencing: false,
            checksum: false,
            ip_mtu: DEFAULT_IP_MTU,
            ttl: 255,
            tos: None,
            df_bit: DfBit::Clear,
            path_mtu_discovery: None,
            keepalive: None,
        }
    }

    /// The same tunnel with `keepalive`.
    #[must_use]
    pub const fn with_keepalive(mut self, keepalive: KeepaliveConfig) -> Self {
        self.keepalive = Some(keepalive);
        self
    }

    /// The same tunnel with `tunnel path-mtu-discovery`, which also copies DF from IPv4
    /// payloads to the delivery header.
    #[must_use]
    pub const fn with_path_mtu_discovery(mut self, pmtud: PmtudConfig) -> Self {
        self.path_mtu_discovery = Some(pmtud);
        self.df_bit = DfBit::Copy;
        self
    }

    /// The length of the GRE header of data packets: 4, plus 4 each for checksum, key and
    /// sequence number.
    #[must_use]
    pub const fn gre_header_len(&self) -> usize {
        let mut len = BASE_HEADER_LEN;
        if self.checksum {
            len += 4;
        }
        if self.key.is_some() {
            len += 4;
        }
        if self.sequencing {
            len += 4;
        }
        len
    }

    /// Bytes the tunnel adds to each payload: the 20-byte delivery header and the GRE
    /// header (24 for plain GRE).
    #[must_use]
    pub const fn overhead(&self) -> usize {
        DELIVERY_HEADER_LEN + self.gre_header_len()
    }
}
