//! IKEv1 (RFC 2409): the key schedule ([`keys`]) and the control plane ([`Ike`]).
//!
//! [`Ike`] holds every IKE SA of one node, keyed by cookies, and drives them through a
//! sans-IO surface: [`Ike::handle_datagram`] / [`Ike::handle_timeout`] in,
//! [`Ike::poll_transmit`] / [`Ike::poll_timeout`] / [`Ike::poll_event`] out, and
//! [`Ike::initiate`] / [`Ike::rekey_child`] / [`Ike::delete_child`] /
//! [`Ike::delete_ike_sa`] as commands from the port.
//!
//! What it does, file by file:
//!
//! * `phase1`: Main Mode and Aggressive Mode with pre-shared keys, initiator and
//!   responder; Vendor IDs (DPD, NAT-T RFC 3947 and drafts 02/03); NAT-D and floating
//!   to port 4500 with the non-ESP marker.
//! * `quick`: Quick Mode with optional PFS, proxy identities from the crypto map's
//!   selector, proposals from its transform sets, KEYMAT per direction; NAT-OAi /
//!   NAT-OAr for UDP-Encapsulated-Transport ([`ChildSa::nat_oa`], RFC 3947 §5.2).
//! * `info`: Informational exchanges: DELETE (IPsec and ISAKMP), INITIAL-CONTACT,
//!   error notifies, and R-U-THERE answered with R-U-THERE-ACK.
//! * [`dpd`]: Dead Peer Detection and IKE keepalives ([`IkeConfig::keepalive`]):
//!   per-peer liveness fed by [`Ike::note_inbound`] / [`Ike::note_outbound`] in O(1),
//!   R-U-THERE rounds, declaring a peer dead and failing over to the next peer.
//! * [`ha`]: stateful failover: [`Ike::export_sa`] / [`Ike::import_sa`] carry an
//!   established IKE SA to a standby node, [`Ike::import_child`] re-attaches its child
//!   SAs from the HA SA-pair records.
//! * `ike`: the SA table, retransmission (strongSwan-like backoff), duplicates, peer
//!   failover, phase-1 rekey and expiry, child expiry, events and status.
//!
//! Choices worth knowing:
//!
//! * Responder cookies are `HMAC(secret, peer address | port | CKY-I)`, so a
//!   retransmitted MM1 finds its SA by cookies; half-open SAs are bounded per peer and
//!   in total ([`IkeConfig::max_half_open_per_peer`], [`IkeConfig::max_half_open`]),
//!   refusals are counted.
//! * The responder follows a NAT-T peer's new address or port (a NAT mapping that
//!   changed) only on authenticated Quick Mode and Informational messages (an
//!   R-U-THERE does); its child SAs follow and [`IkeEvent::PeerMoved`] tells the port
//!   to update the data plane's UDP encapsulation port.
//! * A retransmitted request (same bytes as the last message received in that
//!   exchange) is answered from the stored reply and never reprocessed. Stored replies
//!   live in fixed buffers inside the SA.
//! * The phase-1 responder never retransmits MM2/MM4/MM6 on its own (the initiator
//!   drives); the Aggressive Mode and Quick Mode responders retransmit their last
//!   message until the final one arrives.
//! * A phase-1 initiator re-establishes the IKE SA at
//!   [`IkeConfig::phase1_rekey_percent`] (90 %) of its lifetime; the old SA is deleted
//!   (with an ISAKMP DELETE) when its lifetime ends, its child SAs moving to the new one.
//!   The responder takes the initiator's lifetime when it is not longer than its own.
//! * Child SAs are not rekeyed automatically: the port calls [`Ike::rekey_child`] on the
//!   data plane's soft expiry. They are deleted (with a DELETE) at their hard lifetime.

mod config;
pub mod dpd;
mod error;
mod events;
pub mod ha;
mod ike;
mod info;
pub mod keys;
mod msg;
mod negotiate;
mod phase1;
mod quick;
mod sa;
mod status;

pub use config::{
    CryptoMapEntry, ExchangeMode, Hostname, IkeConfig, IsakmpAuth, IsakmpPolicy, Keepalive,
    KeepaliveMode, KeyPeer, LocalIdentity, MAX_CRYPTO_MAPS, MAX_HOSTNAME_LEN, MAX_KEYS,
    MAX_NAME_LEN, MAX_PEERS, MAX_POLICIES, MAX_PSK_LEN, MAX_TRANSFORM_SETS, PresharedKey, Psk,
    Retransmit, TransformSet,
};
pub use dpd::{DpdAction, DpdCounters, DpdStatus, DpdTable};
pub use error::IkeError;
pub use events::{ChildSa, DeleteReason, FailReason, IkeEvent, NatStatus};
pub use ha::{ChildImport, EXPORT_VERSION, MAX_EXPORT_LEN};
pub use ike::{Ike, IkeCounters, KeyLogPhase1, Transmit};
pub use status::{Capabilities, ChildSaStatus, IsakmpSaStatus, IsakmpState, Role};

#[cfg(test)]
mod tests;
