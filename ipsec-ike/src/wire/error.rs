//! The codec's error type and the notify each error answers with.

use core::fmt;

use super::consts::notify;

/// A malformed or unacceptable ISAKMP message.
///
/// Every variant says, through [`IkeWireError::notify_type`], which Notification
/// (RFC 2408 §3.14.1) a responder would send back, so that the state machine never has to
/// guess. Errors about our own output buffer have no notify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum IkeWireError {
    /// The buffer is shorter than a fixed header or than a length field says.
    Truncated,
    /// A payload length field is below its minimum or runs past the enclosing data.
    BadLength,
    /// The ISAKMP header length disagrees with the datagram (RFC 2408 §5.1).
    UnequalLengths,
    /// Major version other than 1.
    InvalidMajorVersion,
    /// A payload type that is unknown or not allowed where it appears.
    InvalidPayloadType(u8),
    /// A Domain of Interpretation other than IPsec (1) where the format depends on it.
    DoiNotSupported,
    /// A situation other than SIT_IDENTITY_ONLY.
    SituationNotSupported,
    /// A protocol ID that is not valid where it appears.
    InvalidProtocolId,
    /// An SPI of an impossible size.
    InvalidSpi,
    /// Proposal/transform nesting or counts are inconsistent.
    BadProposalSyntax,
    /// A data attribute is truncated or has an impossible length.
    BadAttribute,
    /// Attributes this library does not support, or a mandatory one missing.
    AttributesNotSupported,
    /// A transform ID this library does not support.
    InvalidTransformId,
    /// An identification payload whose data does not fit its ID type.
    InvalidIdInformation,
    /// An empty Key Exchange payload.
    InvalidKeyInformation,
    /// An empty Hash payload.
    InvalidHashInformation,
    /// A field holds a value the protocol forbids (a nonce of the wrong size, say).
    Malformed,
    /// The output buffer is too small for what is to be emitted.
    BufferTooSmall,
    /// A value does not fit its wire field (a payload longer than 65535 bytes, say).
    ValueTooLarge,
}

impl IkeWireError {
    /// The Notify Message Type (RFC 2408 §3.14.1) to answer this error with, or `None`
    /// for errors about our own output.
    #[must_use]
    pub const fn notify_type(self) -> Option<u16> {
        Some(match self {
            Self::Truncated | Self::BadLength | Self::BadAttribute | Self::Malformed => {
                notify::PAYLOAD_MALFORMED
            }
            Self::UnequalLengths => notify::UNEQUAL_PAYLOAD_LENGTHS,
            Self::InvalidMajorVersion => notify::INVALID_MAJOR_VERSION,
            Self::InvalidPayloadType(_) => notify::INVALID_PAYLOAD_TYPE,
            Self::DoiNotSupported => notify::DOI_NOT_SUPPORTED,
            Self::SituationNotSupported => notify::SITUATION_NOT_SUPPORTED,
            Self::InvalidProtocolId => notify::INVALID_PROTOCOL_ID,
            Self::InvalidSpi => notify::INVALID_SPI,
            Self::BadProposalSyntax => notify::BAD_PROPOSAL_SYNTAX,
            Self::InvalidIdInformation => notify::INVALID_ID_INFORMATION,
            Self::AttributesNotSupported => notify::ATTRIBUTES_NOT_SUPPORTED,
            Self::InvalidTransformId => notify::INVALID_TRANSFORM_ID,
            Self::InvalidKeyInformation => notify::INVALID_KEY_INFORMATION,
            Self::InvalidHashInformation => notify::INVALID_HASH_INFORMATION,
            Self::BufferTooSmall | Self::ValueTooLarge => return None,
        })
    }
}

impl fmt::Display for IkeWireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("ISAKMP message truncated"),
            Self::BadLength => f.write_str("bad ISAKMP payload length"),
            Self::UnequalLengths => f.write_str("ISAKMP header length disagrees with datagram"),
            Self::InvalidMajorVersion => f.write_str("invalid ISAKMP major version"),
            Self::InvalidPayloadType(t) => write!(f, "invalid payload type {t}"),
            Self::DoiNotSupported => f.write_str("DOI not supported"),
            Self::SituationNotSupported => f.write_str("situation not supported"),
            Self::InvalidProtocolId => f.write_str("invalid protocol ID"),
            Self::InvalidSpi => f.write_str("invalid SPI"),
            Self::BadProposalSyntax => f.write_str("bad proposal syntax"),
            Self::BadAttribute => f.write_str("malformed data attribute"),
            Self::AttributesNotSupported => f.write_str("attributes not supported"),
            Self::InvalidTransformId => f.write_str("transform ID not supported"),
            Self::InvalidIdInformation => f.write_str("invalid identification payload"),
            Self::InvalidKeyInformation => f.write_str("invalid key exchange payload"),
            Self::InvalidHashInformation => f.write_str("invalid hash payload"),
            Self::Malformed => f.write_str("malformed payload"),
            Self::BufferTooSmall => f.write_str("output buffer too small"),
            Self::ValueTooLarge => f.write_str("value too large for its wire field"),
        }
    }
}

impl core::error::Error for IkeWireError {}
