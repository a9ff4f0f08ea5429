//! # ipsec-ike: IKEv1 for the ipsec workspace
//!
//! * [`wire`]: the ISAKMP codec (RFC 2408/2409, RFC 3947 NAT-T payloads), zero-copy
//!   parsing with every length checked, building into caller buffers.
//! * [`v1`]: IKEv1 key derivation (RFC 2409 §5 and Appendix B).
//!
//! `#![no_std]`, no heap, no `unsafe`, sans-IO.
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)
)]

pub mod v1;
pub mod wire;
