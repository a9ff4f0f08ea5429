//! # ipsec-ike: IKEv1 for the ipsec workspace
//!
//! Two layers, kept apart so that a reader finds the room for any RFC section:
//!
//! * [`wire`]: the ISAKMP codec (RFC 2408/2409, RFC 2407 IPsec DOI, RFC 3947 NAT-T
//!   payloads, RFC 3706 DPD notifies). Zero-copy views whose `new_checked` validates
//!   every length once, `Repr`s with `parse` / `buffer_len` / `emit`, a payload-chain
//!   iterator, and a [`wire::MessageBuilder`] that writes into caller buffers. Every error
//!   is a [`wire::IkeWireError`] that names the notify to answer with.
//! * [`v1`]: IKEv1 itself. [`v1::keys`] is the key schedule of RFC 2409 §5 and
//!   Appendix B (SKEYID and children, encryption key expansion, IVs, HASH_I/HASH_R,
//!   Quick Mode and Informational hashes, KEYMAT), generic over the
//!   [`hal_traits::Prf`] of any crypto provider. [`v1::Ike`] is the control plane: Main
//!   and Aggressive Mode with pre-shared keys, NAT-T (RFC 3947), Quick Mode with PFS,
//!   Informational DELETE / notifies / DPD answers, retransmission, peer failover and
//!   rekeying, configured like IOS ([`v1::IkeConfig`]) and reporting through
//!   [`v1::IkeEvent`]s.
//!
//! Invariants: `#![no_std]`, no heap (nested lists are received bytes or caller
//! slices), no `unsafe`, no panics on any input, sans-IO. Wire code never decides and
//! never encrypts: the state machines decrypt the payload area in place, iterate it, and
//! encrypt what the builder padded.
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

#[cfg(test)]
extern crate std;

pub mod v1;
pub mod wire;
