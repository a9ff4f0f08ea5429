//! std host port of the ipsec workspace: what a Linux host needs around the sans-IO core.
//!
//! * [`show`]: renders state the way IOS `show crypto ...` commands print it, so a network
//!   engineer reads our status without a glossary.
#![forbid(unsafe_code)]

pub mod show;
