//! The control plane's error type.

use core::fmt;

use hal_traits::CryptoError;

use crate::wire::IkeWireError;

/// Why an [`Ike`](super::Ike) call did nothing, or why a received datagram was dropped.
///
/// Dropping a datagram never changes the state of an SA; the error is for counters and
/// logs. Fatal outcomes of a negotiation are reported as
/// [`IkeEvent::NegotiationFailed`](super::IkeEvent::NegotiationFailed), not as errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum IkeError {
    /// The datagram failed the codec's checks (the notify it deserves was sent where the
    /// RFC expects one).
    Malformed(IkeWireError),
    /// A datagram on the NAT-T port that is not IKE (ESP-in-UDP): for the data plane.
    NotIke,
    /// No IKE SA has these cookies (or this connection id).
    UnknownSa,
    /// No child SA has this SPI.
    UnknownChild,
    /// No crypto map entry has this sequence number.
    UnknownCryptoMap,
    /// A dynamic crypto map entry only responds; it cannot initiate.
    DynamicMap,
    /// The crypto map entry has no peer (or no transform set).
    NoPeer,
    /// No pre-shared key is configured for the peer.
    NoPresharedKey,
    /// The message is not valid in the SA's current state (or repeats an old one).
    UnexpectedMessage,
    /// A HASH or decryption check failed: the message was not from the peer.
    AuthenticationFailed,
    /// No proposal was acceptable.
    NoProposalChosen,
    /// The proxy identities are outside the crypto map's selector.
    InvalidIdInformation,
    /// The exchange type is not one this library speaks.
    UnsupportedExchange,
    /// The IKE SA table is full.
    TableFull,
    /// Too many half-open phase-1 SAs (per peer or in total): refused.
    HalfOpenLimit,
    /// The child SA table is full.
    ChildTableFull,
    /// Too many Quick Mode exchanges are in flight on the IKE SA.
    Busy,
    /// A configuration list is full.
    CapacityExceeded,
    /// A configuration value is out of range.
    InvalidConfig,
    /// A datagram or message does not fit the fixed buffers.
    TooLarge,
    /// The crypto provider failed (or does not implement a negotiated algorithm).
    Crypto(CryptoError),
    /// The IKE SA is not established (only established SAs are exported for HA).
    NotEstablished,
    /// HA import data is truncated, of an unknown version, or holds a value out of range.
    InvalidImport,
}

impl From<IkeWireError> for IkeError {
    fn from(e: IkeWireError) -> Self {
        match e {
            IkeWireError::BufferTooSmall | IkeWireError::ValueTooLarge => Self::TooLarge,
            e => Self::Malformed(e),
        }
    }
}

impl From<CryptoError> for IkeError {
    fn from(e: CryptoError) -> Self {
        Self::Crypto(e)
    }
}

impl fmt::Display for IkeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(e) => write!(f, "malformed ISAKMP message: {e}"),
            Self::NotIke => f.write_str("not an IKE message"),
            Self::UnknownSa => f.write_str("no such IKE SA"),
            Self::UnknownChild => f.write_str("no such IPsec SA"),
            Self::UnknownCryptoMap => f.write_str("no such crypto map entry"),
            Self::DynamicMap => f.write_str("a dynamic crypto map cannot initiate"),
            Self::NoPeer => f.write_str("crypto map entry has no peer or transform set"),
            Self::NoPresharedKey => f.write_str("no pre-shared key for the peer"),
            Self::UnexpectedMessage => f.write_str("message not expected in this state"),
            Self::AuthenticationFailed => f.write_str("authentication failed"),
            Self::NoProposalChosen => f.write_str("no proposal chosen"),
            Self::InvalidIdInformation => f.write_str("proxy identities not acceptable"),
            Self::UnsupportedExchange => f.write_str("unsupported exchange type"),
            Self::TableFull => f.write_str("IKE SA table full"),
            Self::HalfOpenLimit => f.write_str("half-open IKE SA limit reached"),
            Self::ChildTableFull => f.write_str("IPsec SA table full"),
            Self::Busy => f.write_str("too many Quick Mode exchanges in flight"),
            Self::CapacityExceeded => f.write_str("configuration capacity exceeded"),
            Self::InvalidConfig => f.write_str("invalid configuration value"),
            Self::TooLarge => f.write_str("message too large for the fixed buffers"),
            Self::Crypto(e) => write!(f, "crypto provider: {e}"),
            Self::NotEstablished => f.write_str("IKE SA not established"),
            Self::InvalidImport => f.write_str("invalid HA IKE SA import data"),
        }
    }
}

impl core::error::Error for IkeError {}
