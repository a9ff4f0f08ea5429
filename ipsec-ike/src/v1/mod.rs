//! IKEv1 (RFC 2409): key derivation now; the Main, Aggressive and Quick Mode state
//! machines build on it.

pub mod keys;
