//! smoltcp port of the ipsec workspace: IKEv1 and ESP on a smoltcp
//! [`Interface`](smoltcp::iface::Interface), without heap and without `std`.
//!
//! # Layers
//!
//! * [`Engine`] (always built, no smoltcp needed): the socket-agnostic glue between
//!   the IKEv1 control plane ([`ipsec_ike::v1::Ike`]), the ESP data plane
//!   ([`ipsec_core::dataplane::Dataplane`]) and NAT keepalives
//!   ([`ipsec_nat_t::keepalive`]). It demultiplexes UDP 500 / 4500 (non-ESP marker,
//!   keepalive, ESP-in-UDP), installs the SA pairs IKE negotiates, starts IKE when the
//!   SPD wants an SA that is not there (the "acquire"), rekeys on soft expiry and
//!   reports [`Event`]s. The embassy-net port (`ipsec-embassy-net`) uses it too.
//! * [`IpsecStack`] (feature `iface`, default): the engine on two smoltcp UDP sockets
//!   (500, 4500) and, with feature `raw-esp`, a raw socket for IP protocol 50.
//!   [`IpsecStack::poll`] runs the interface and the engine;
//!   [`IpsecStack::poll_at`] is the earlier of smoltcp's and the engine's deadlines.
//! * The protected side is an [`InnerPath`]. [`TunnelDevice`] implements it as a
//!   virtual smoltcp device (medium IP): put a second smoltcp `Interface` with the
//!   protected addresses on it, and its sockets talk through the tunnel. That was
//!   chosen over a bare callback because it needs no packet crafting by the
//!   application and exercises the whole path (smoltcp's own ICMP echo goes through
//!   ESP in the host test), while a callback user only implements the two methods of
//!   [`InnerPath`].
//!
//! # Time
//!
//! The library's [`Instant`](ipsec_core::Instant) is milliseconds on the port's
//! clock; [`time::from_smoltcp`] / [`time::to_smoltcp`] convert (the same epoch is
//! used: smoltcp's milliseconds, negative values clamp to zero).
//!
//! # Invariants
//!
//! No allocation (all tables are `heapless` with const-generic capacities), no
//! `unsafe`, no panics on any input: a full queue or a short buffer is a counted drop.
//! Keys never leave the engine: [`Event`] carries SPIs and addresses only.
//!
//! # Host test
//!
//! `examples/smoltcp_tun.rs` (feature `std`) runs the stack on a TAP device inside a
//! network namespace against strongSwan; `tests/strongswan.sh` sets it up (the
//! topology, a TAP bridged with the veth so that smoltcp owns the address, is described
//! at its top). `tests/pair.rs` runs two stacks in process on a virtual clock.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "std")]
extern crate std;

pub mod engine;
#[cfg(feature = "iface")]
mod stack;
#[cfg(feature = "iface")]
pub mod time;
#[cfg(feature = "iface")]
pub mod tunnel;

pub use engine::{
    Datagram, Engine, EngineConfig, EngineDataplane, Error, Event, HEADROOM, Received, Sent,
};
#[cfg(feature = "iface")]
pub use stack::{IpsecStack, StackCounters};
#[cfg(feature = "iface")]
pub use tunnel::{InnerPath, TunnelDevice};

/// The smoltcp this port is built against (0.13, the one embassy-net 0.9 uses).
#[cfg(feature = "iface")]
pub use smoltcp;
