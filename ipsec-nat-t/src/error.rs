//! The crate's error type.

use core::fmt;

use hal_traits::CryptoError;
use ipsec_core::wire::WireError;

/// What went wrong in a NAT-T operation. Small and `Copy`; crypto failures stay opaque.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum NatTError {
    /// The crypto provider failed (unsupported hash, say).
    Crypto,
    /// An output buffer is too small; `needed` bytes are required.
    BufferTooSmall {
        /// The length that would have been enough.
        needed: usize,
    },
    /// A packet is malformed.
    Wire(WireError),
    /// The peer sent no NAT-D payload, so nothing can be detected (RFC 3947 §3.2 requires
    /// at least two).
    NoNatD,
    /// Addresses of different families (IPv4 and IPv6) were mixed.
    AddressFamily,
    /// The packet does not carry TCP or UDP, so it has no checksum to fix.
    NotTcpOrUdp,
    /// The operation needs the whole datagram but the packet is a fragment.
    Fragmented,
}

impl fmt::Display for NatTError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Crypto => f.write_str("crypto provider failed"),
            Self::BufferTooSmall { needed } => {
                write!(f, "output buffer too small ({needed} bytes needed)")
            }
            Self::Wire(e) => write!(f, "malformed packet: {e}"),
            Self::NoNatD => f.write_str("no NAT-D payload received"),
            Self::AddressFamily => f.write_str("mixed IPv4 and IPv6 addresses"),
            Self::NotTcpOrUdp => f.write_str("not a TCP or UDP packet"),
            Self::Fragmented => f.write_str("packet is a fragment"),
        }
    }
}

impl core::error::Error for NatTError {}

impl From<WireError> for NatTError {
    fn from(e: WireError) -> Self {
        Self::Wire(e)
    }
}

impl From<CryptoError> for NatTError {
    fn from(_: CryptoError) -> Self {
        Self::Crypto
    }
}
