//! What the control plane tells its port: SAs up and down, failures, peer changes.

use core::fmt;
use core::net::{IpAddr, SocketAddr};

use ipsec_core::Instant;
use ipsec_core::esp::EspConfig;

use super::keys::Keymat;

/// Who is behind a NAT, as NAT-D (RFC 3947 §3.2) found out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NatStatus {
    /// Our address was changed on the way (we are behind a NAT).
    pub local_behind_nat: bool,
    /// The peer's address was changed on the way (it is behind a NAT).
    pub remote_behind_nat: bool,
}

impl NatStatus {
    /// Whether any NAT was detected (so IKE floats to 4500 and ESP goes in UDP).
    #[must_use]
    pub const fn detected(&self) -> bool {
        self.local_behind_nat || self.remote_behind_nat
    }
}

/// Why an SA went away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DeleteReason {
    /// Deleted locally (`clear crypto sa`, idle timeout, hard expiry via the port).
    Local,
    /// The peer sent an authenticated DELETE.
    PeerDelete,
    /// The lifetime ran out.
    Expired,
    /// The peer sent INITIAL-CONTACT in a new phase 1: it rebooted, older SAs are stale.
    InitialContact,
    /// Deleted together with its IKE SA (`delete_ike_sa`).
    IkeSaDeleted,
    /// Dead Peer Detection declared the peer dead (R-U-THEREs unanswered).
    DpdDead,
}

/// Why a negotiation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum FailReason {
    /// No proposal matched (ours, or the peer said NO-PROPOSAL-CHOSEN).
    NoProposalChosen,
    /// HASH_I / HASH_R / Quick Mode hash mismatch, undecryptable phase-1 message, or the
    /// peer said AUTHENTICATION-FAILED / PAYLOAD-MALFORMED after our MM5 (a wrong PSK
    /// looks like this).
    AuthenticationFailed,
    /// The peer did not answer (retransmissions exhausted, or a half-open SA expired).
    Timeout,
    /// A malformed or unacceptable payload.
    InvalidPayload,
    /// The proxy identities were refused (ours, or the peer's INVALID-ID-INFORMATION).
    InvalidIdInformation,
    /// No pre-shared key for the peer.
    NoPresharedKey,
    /// The peer sent this error notify.
    PeerNotify(u16),
    /// The crypto provider failed (e.g. a negotiated algorithm it lacks).
    Crypto,
    /// Out of table space (IKE SAs, child SAs or half-open SAs).
    Resources,
}

/// An IPsec SA pair negotiated by Quick Mode, ready for the data plane.
///
/// `EspSa::new(cs.inbound.clone(), enc, auth, now)` with `(enc, auth) =
/// cs.inbound_keys()` (and likewise outbound) builds the data plane SAs. The keys are
/// zeroized when this value is dropped and never printed.
#[derive(Clone)]
pub struct ChildSa {
    /// The IKE SA that negotiated it.
    pub conn_id: u32,
    /// The crypto map entry (the data plane's `sa_group`).
    pub crypto_map: u32,
    /// The peer's IKE address and port (after NAT-T floating).
    pub peer: SocketAddr,
    /// The inbound SA: our SPI, our selector view, UDP encapsulation if NAT-T.
    pub inbound: EspConfig,
    /// The outbound SA: the peer's SPI.
    pub outbound: EspConfig,
    /// The inbound SA's old SPI when this pair rekeys another one.
    pub replaces: Option<u32>,
    /// NAT-OA (RFC 3947 §5.2), for UDP-Encapsulated-Transport pairs when the peer sent
    /// it: `(the peer's original address, our address as the peer saw it)`. After
    /// decapsulating, a port fixes TCP/UDP checksums with
    /// `ipsec_nat_t::checksum::fix_transport_checksum(packet,
    /// FixupMethod::preferred(Some(OriginalAddrs { src: peer_original, dst: ours_seen })))`
    /// (RFC 3948 §3.1.2); `None` (tunnel mode, no NAT, or no NAT-OA received) means
    /// recompute instead.
    pub nat_oa: Option<(IpAddr, IpAddr)>,
    pub(crate) inbound_keymat: Keymat,
    pub(crate) outbound_keymat: Keymat,
    pub(crate) enc_len: usize,
}

impl ChildSa {
    fn split<'a>(&self, k: &'a Keymat) -> (&'a [u8], &'a [u8]) {
        let b = k.expose();
        let n = self.enc_len.min(b.len());
        b.split_at(n)
    }

    /// `(encryption key incl. the GCM salt, integrity key)` of the inbound SA.
    #[must_use]
    pub fn inbound_keys(&self) -> (&[u8], &[u8]) {
        self.split(&self.inbound_keymat)
    }

    /// `(encryption key incl. the GCM salt, integrity key)` of the outbound SA.
    #[must_use]
    pub fn outbound_keys(&self) -> (&[u8], &[u8]) {
        self.split(&self.outbound_keymat)
    }
}

impl fmt::Debug for ChildSa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSa")
            .field("conn_id", &self.conn_id)
            .field("crypto_map", &self.crypto_map)
            .field("peer", &self.peer)
            .field("inbound", &self.inbound)
            .field("outbound", &self.outbound)
            .field("replaces", &self.replaces)
            .field("nat_oa", &self.nat_oa)
            .finish_non_exhaustive()
    }
}

/// Everything the port needs to know.
///
/// `ChildSaEstablished` is large (two configs and the keys); the others are small. No
/// heap to box it in, and events are moved out one at a time.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
#[non_exhaustive]
pub enum IkeEvent {
    /// An IKE SA reached QM_IDLE.
    Phase1Established {
        /// Its connection id.
        conn_id: u32,
        /// Our address and port (after floating).
        local: SocketAddr,
        /// The peer's address and port (after floating).
        peer: SocketAddr,
        /// Who is behind a NAT.
        nat: NatStatus,
    },
    /// An IKE SA is gone (its child SAs stay unless deleted separately).
    Phase1Deleted {
        /// Its connection id.
        conn_id: u32,
        /// The peer.
        peer: SocketAddr,
        /// Why.
        reason: DeleteReason,
    },
    /// A child SA pair is up (both directions, keys included).
    ChildSaEstablished(ChildSa),
    /// A child SA pair is gone: remove both directions from the data plane.
    ChildSaDeleted {
        /// Its crypto map entry.
        crypto_map: u32,
        /// Our SPI.
        inbound_spi: u32,
        /// The peer's SPI.
        outbound_spi: u32,
        /// Why.
        reason: DeleteReason,
    },
    /// A phase-1 or Quick Mode negotiation failed.
    NegotiationFailed {
        /// The crypto map entry, when known.
        crypto_map: Option<u32>,
        /// The peer.
        peer: SocketAddr,
        /// Why.
        reason: FailReason,
    },
    /// A crypto map entry moved to its next peer after a failure.
    PeerChanged {
        /// The entry.
        crypto_map: u32,
        /// The peer that failed.
        from: IpAddr,
        /// The peer tried now.
        to: IpAddr,
    },
    /// Dead Peer Detection declared `peer` dead: its IKE SAs and IPsec SAs are being
    /// deleted (`DeleteReason::DpdDead` events follow), then its crypto map entries move
    /// to their next peers (`PeerChanged`).
    PeerDead {
        /// The peer.
        peer: IpAddr,
        /// When it last showed a sign of life.
        last_proof_of_life: Instant,
    },
    /// The responder saw an authenticated Quick Mode or Informational message of this
    /// IKE SA from a new address or port (the peer's NAT mapping changed, RFC 3947 §5):
    /// IKE now sends to `to`. The child SAs of the IKE SA follow in the control plane
    /// (status, HA export); the port must update its data plane SAs too: the UDP
    /// encapsulation's `remote_port` (and a tunnel's `remote` address) of every SA pair
    /// of `conn_id` whose peer was `from`.
    PeerMoved {
        /// The IKE SA.
        conn_id: u32,
        /// The peer's old address and port.
        from: SocketAddr,
        /// Where it is now.
        to: SocketAddr,
    },
}

/// An event as queued: small and `Copy`; a child SA is materialised (keys and all)
/// from the child table when polled.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Queued {
    Phase1Established {
        conn_id: u32,
        local: SocketAddr,
        peer: SocketAddr,
        nat: NatStatus,
    },
    Phase1Deleted {
        conn_id: u32,
        peer: SocketAddr,
        reason: DeleteReason,
    },
    ChildUp {
        inbound_spi: u32,
    },
    ChildDeleted {
        crypto_map: u32,
        inbound_spi: u32,
        outbound_spi: u32,
        reason: DeleteReason,
    },
    Failed {
        crypto_map: Option<u32>,
        peer: SocketAddr,
        reason: FailReason,
    },
    PeerChanged {
        crypto_map: u32,
        from: IpAddr,
        to: IpAddr,
    },
    PeerDead {
        peer: IpAddr,
        last_proof_of_life: Instant,
    },
    PeerMoved {
        conn_id: u32,
        from: SocketAddr,
        to: SocketAddr,
    },
}

/// Capacity of the event queue (events are small; a ChildSa is built when polled).
pub(crate) const EVENT_QUEUE: usize = 64;
