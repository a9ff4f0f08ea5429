//! # ipsec-nat-t: NAT traversal for IPsec, allocation-free and sans-IO
//!
//! IPsec and NAT do not mix on their own: ESP has no ports for a NAT to multiplex on, a
//! NAT that rewrites addresses breaks transport-mode checksums, and IKE insists on port 500
//! at both ends. RFC 3947 (negotiation in IKE) and RFC 3948 (UDP encapsulation of ESP) fix
//! that by detecting NATs during Main Mode and then carrying IKE and ESP together over UDP
//! port 4500. This crate holds the pieces of NAT-T that are not IKE state machines, so that
//! the data plane and a NAT box can use them without pulling in IKE:
//!
//! * [`consts`] and [`vid`]: the ports, markers and payload numbers, and the NAT-T vendor
//!   IDs with the version each announces ([`NatTVersion`]), including the drafts still in
//!   the field, and [`vid::choose`] to settle on one version from both sides' IDs.
//! * [`natd`]: the NAT-D hashes (RFC 3947 §3.2) and the decision they lead to, a
//!   [`NatStatus`] saying which side is behind a NAT.
//! * [`demux`]: sorting UDP 4500 payloads into IKE (behind the non-ESP marker), NAT
//!   keepalives and ESP, and framing IKE for port 4500.
//! * [`keepalive`]: the NAT keepalive timer of the side behind the NAT.
//! * [`checksum`]: the transport-mode TCP/UDP checksum fix-up after decapsulation
//!   (RFC 3948 §3.1.2), incremental with NAT-OA or by recomputation.
//! * [`pat`]: the other side of the story, a PAT router's IPsec pass-through for inside
//!   hosts that do *not* use NAT-T (IOS `ip nat service ... IKE preserve-port` and
//!   `ESP spi-match`).
//!
//! The IKE side of NAT-T (sending the vendor IDs and NAT-D payloads, floating to 4500,
//! NAT-OA in Quick Mode) lives in `ipsec-ike`, which uses this crate; this crate depends
//! only on `hal-traits` and `ipsec-core`. UDP encapsulation itself is an ESP SA option
//! in `ipsec-core` ([`ipsec_core::esp::UdpEncap`]), whose data plane already applies the
//! same demultiplexing rule as [`demux::classify`].
//!
//! Invariants, as in every core crate: no heap (`alloc` is never linked), no `unsafe`, no
//! panics on any input, no clock (every time-dependent call takes an
//! [`Instant`](ipsec_core::Instant)), no I/O; tables have const-generic capacities, and
//! running out of room is a verdict, not a panic. Packets are rewritten in place in the
//! caller's buffers.
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

pub mod checksum;
pub mod consts;
pub mod demux;
mod error;
pub mod keepalive;
pub mod natd;
pub mod pat;
pub mod vid;

pub use checksum::{Fixup, FixupMethod, OriginalAddrs, fix_transport_checksum};
pub use demux::{Classified, classify};
pub use error::NatTError;
pub use keepalive::{Keepalive, KeepaliveConfig, NatKeepalive};
pub use natd::{NatDHash, NatStatus, nat_d_hash};
pub use pat::{DropReason, Pat, PatConfig, Verdict};
pub use vid::{NatTVersion, VersionSet, recognise};
