//! std host port of the ipsec workspace: what a Linux host needs around the sans-IO core.
//!
//! * [`show`]: renders state the way IOS `show crypto ...` commands print it, so a network
//!   engineer reads our status without a glossary.
//! * [`daemon`]: `ipsec up`, the userspace VPN daemon over a TUN device.
//! * [`config`]: the daemon's TOML configuration, IOS concepts, errors with line numbers.
#![forbid(unsafe_code)]

pub mod config;
pub mod daemon;
pub mod show;
