//! # ipsec-core: the IPsec data plane, allocation-free and sans-IO
//!
//! Layers, from the bytes up:
//!
//! * [`wire`]: zero-copy views and builders for IPv4, IPv6, UDP and ESP headers, and the
//!   ICMP "too big" messages of path MTU discovery. Untrusted input enters only through
//!   `new_checked`; after it, no accessor panics.
//! * [`replay`]: the anti-replay window (RFC 4303 §3.4.3, a bitmap in the manner of
//!   RFC 6479), with Extended Sequence Numbers (RFC 4303 Appendix A).
//! * [`esp`]: ESP security associations: seal and open in tunnel or transport mode, over
//!   IPv4 or IPv6, raw or UDP-encapsulated (RFC 3948), with the counters of
//!   `show crypto ipsec sa`.
//! * [`lifetime`]: soft and hard lifetimes in seconds and kilobytes.
//! * [`spd`] and [`sadb`]: the security policy database (selectors, protect / bypass /
//!   discard) and the fixed-capacity security association database.
//! * [`gre`]: GRE (RFC 2784/2890) tunnels with Cisco-style keepalives and tunnel MTU
//!   handling, and GRE over IPsec (tunnel protection or crypto map).
//! * [`mtu`]: ESP overhead per transform and mode, and the exact largest inner packet an
//!   SA carries without fragmentation (the tunnel MTU).
//! * [`fragment`] and [`reassembly`]: IPv4 fragmentation into caller buffers, and
//!   reassembly in fixed buffers with a timeout and RFC 5722-style overlap rejection.
//! * [`mss`]: TCP MSS clamping of SYNs with an incremental checksum update (RFC 1624).
//! * [`dataplane`]: the packet paths through all of the above, outbound (SPD, SA, MSS
//!   clamp, path MTU and DF bit, fragmentation before or after encryption, ESP) and
//!   inbound (reassembly, ICMP "too big", demux, SA by SPI, ESP, selectors), with
//!   lifetime, idle-timeout and path-MTU-aging deadlines on heaps.
//! * [`ha`]: high availability: reverse route injection, a VRRPv3 redundancy group with a
//!   virtual IP, and stateful failover by SADB synchronisation over an encrypted channel.
//!
//! Invariants: no heap (`alloc` is never linked), no `unsafe`, no panics on any input, no
//! clock (every time-dependent call takes [`Instant`]), no I/O. Capacities are const
//! generics. Cryptography comes from a [`hal_traits::CryptoProvider`].
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

pub mod dataplane;
pub mod esp;
pub mod fragment;
pub mod gre;
pub mod ha;
pub mod lifetime;
pub mod mss;
pub mod mtu;
pub mod reassembly;
pub mod replay;
pub mod sadb;
pub mod spd;
pub mod time;
pub mod wire;

pub use time::{Duration, Instant};
