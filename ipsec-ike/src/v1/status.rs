//! Plain-data snapshots for `show crypto isakmp sa detail` and the IPsec part of
//! `show crypto ipsec sa`.

use core::fmt;
use core::net::SocketAddr;

use hal_traits::{CipherAlg, DhGroup, HashAlg};
use ipsec_core::Duration;
use ipsec_core::esp::{Mode, Transform, UdpEncap};
use ipsec_core::spd::Selector;

use super::config::IsakmpAuth;
use super::dpd::DpdStatus;
use super::events::NatStatus;

/// Phase-1 state, with the names IOS prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum IsakmpState {
    /// Main Mode: first message sent, nothing agreed yet.
    MmNoState,
    /// Main Mode: proposal agreed.
    MmSaSetup,
    /// Main Mode: key exchange done.
    MmKeyExch,
    /// Aggressive Mode: first message sent.
    AgNoState,
    /// Aggressive Mode: second message sent, waiting for the last one.
    AgInitExch,
    /// Established: ready for Quick Mode.
    QmIdle,
}

impl fmt::Display for IsakmpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::MmNoState => "MM_NO_STATE",
            Self::MmSaSetup => "MM_SA_SETUP",
            Self::MmKeyExch => "MM_KEY_EXCH",
            Self::AgNoState => "AG_NO_STATE",
            Self::AgInitExch => "AG_INIT_EXCH",
            Self::QmIdle => "QM_IDLE",
        })
    }
}

/// Which side started an exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Role {
    /// We sent the first message.
    Initiator,
    /// The peer did.
    Responder,
}

/// The capability flags of `show crypto isakmp sa detail` (`D`, `K`, `N`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Capabilities {
    /// D: both sides announced Dead Peer Detection (RFC 3706).
    pub dpd: bool,
    /// K: keepalives / DPD are configured and this peer is probed (it announced DPD, or
    /// [`Keepalive::without_peer_vid`](super::Keepalive::without_peer_vid)).
    pub keepalive: bool,
    /// N: NAT traversal was negotiated and a NAT detected (ESP in UDP).
    pub nat_t: bool,
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (on, c) in [(self.dpd, "D"), (self.keepalive, "K"), (self.nat_t, "N")] {
            if on {
                if !first {
                    f.write_str(" ")?;
                }
                f.write_str(c)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// One line of `show crypto isakmp sa detail`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IsakmpSaStatus {
    /// Connection id.
    pub conn_id: u32,
    /// Our address and port.
    pub local: SocketAddr,
    /// The peer's address and port.
    pub remote: SocketAddr,
    /// Phase-1 state.
    pub state: IsakmpState,
    /// Initiator or responder.
    pub role: Role,
    /// Encryption, once agreed.
    pub encryption: Option<CipherAlg>,
    /// Hash, once agreed.
    pub hash: Option<HashAlg>,
    /// Authentication method.
    pub auth: IsakmpAuth,
    /// DH group, once agreed.
    pub group: Option<DhGroup>,
    /// Lifetime left, once established.
    pub lifetime_left: Option<Duration>,
    /// Capability flags.
    pub capabilities: Capabilities,
    /// NAT detection result.
    pub nat: NatStatus,
    /// Dead Peer Detection state of the peer (established SAs).
    pub dpd: Option<DpdStatus>,
    /// CKY-I.
    pub initiator_cookie: [u8; 8],
    /// CKY-R.
    pub responder_cookie: [u8; 8],
}

/// The IPsec part of `show crypto ipsec sa` for one SA pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildSaStatus {
    /// Crypto map entry.
    pub crypto_map: u32,
    /// The IKE SA that negotiated it.
    pub conn_id: u32,
    /// `local ident` / `remote ident` (our view: local = our proxy identity).
    pub selector: Selector,
    /// `current_peer` (IKE address and port).
    pub peer: SocketAddr,
    /// Inbound ESP SPI.
    pub inbound_spi: u32,
    /// Outbound ESP SPI.
    pub outbound_spi: u32,
    /// Algorithms.
    pub transform: Transform,
    /// Tunnel or transport.
    pub mode: Mode,
    /// UDP encapsulation (`Tunnel UDP-Encaps`), if negotiated.
    pub udp_encap: Option<UdpEncap>,
    /// PFS group.
    pub pfs: Option<DhGroup>,
    /// Remaining lifetime in time.
    pub lifetime_left: Duration,
    /// Negotiated lifetime in kilobytes.
    pub lifetime_kilobytes: u64,
    /// The SPI this pair replaced (rekey).
    pub replaces: Option<u32>,
}
