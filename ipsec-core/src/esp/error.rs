use core::fmt;

use hal_traits::CryptoError;

use crate::replay::ReplayError;
use crate::wire::WireError;

/// Why an ESP operation failed. Each variant has its own counter in [`EspCounters`].
///
/// [`EspCounters`]: super::EspCounters
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum EspError {
    /// The output buffer is too small; `needed` bytes are required.
    BufferTooSmall {
        /// Bytes the operation needs.
        needed: usize,
    },
    /// The packet is too short for the SA's IV, a cipher block and the ICV, or its
    /// ciphertext is not a whole number of blocks.
    InvalidLength,
    /// A malformed outer or inner IP/UDP header.
    Malformed(WireError),
    /// The packet is not ESP (nor UDP-encapsulated ESP on the SA's port).
    NotEsp,
    /// The packet's SPI is not this SA's.
    SpiMismatch,
    /// Anti-replay: the sequence number was already received.
    Replayed,
    /// Anti-replay: the sequence number is left of the window.
    TooOld,
    /// Integrity check (ICV or AEAD tag) failed.
    IcvMismatch,
    /// The padding bytes are not 1, 2, 3, ... or the pad length exceeds the payload.
    BadPadding,
    /// The next header does not fit the SA's mode (tunnel mode carries only IPv4 or IPv6)
    /// or disagrees with the inner packet.
    BadNextHeader,
    /// A dummy packet (next header 59, RFC 4303 §2.6): discarded by design.
    DummyPacket,
    /// The decrypted inner packet is outside the SA's selectors (RFC 4301 §5.2).
    PolicyMismatch,
    /// The outbound sequence number would wrap: the SA must be rekeyed (RFC 4303 §3.3.3).
    SequenceOverflow,
    /// The SA's hard lifetime has expired.
    Expired,
    /// The operation does not match the SA's direction (sealing with an inbound SA, ...).
    WrongDirection,
    /// The SA's configuration is invalid (key lengths, NULL with no integrity, ...).
    InvalidConfig,
    /// The crypto provider failed (opaque).
    Crypto(CryptoError),
}

impl fmt::Display for EspError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BufferTooSmall { needed } => {
                write!(f, "buffer too small ({needed} bytes needed)")
            }
            Self::InvalidLength => f.write_str("invalid ESP length"),
            Self::Malformed(e) => write!(f, "malformed packet: {e}"),
            Self::NotEsp => f.write_str("not an ESP packet"),
            Self::SpiMismatch => f.write_str("SPI does not belong to this SA"),
            Self::Replayed => f.write_str("replayed packet"),
            Self::TooOld => f.write_str("sequence number left of the replay window"),
            Self::IcvMismatch => f.write_str("ICV mismatch"),
            Self::BadPadding => f.write_str("bad padding"),
            Self::BadNextHeader => f.write_str("bad next header"),
            Self::DummyPacket => f.write_str("dummy packet (next header 59)"),
            Self::PolicyMismatch => f.write_str("inner packet outside the SA's selectors"),
            Self::SequenceOverflow => f.write_str("sequence number overflow, rekey required"),
            Self::Expired => f.write_str("SA lifetime expired"),
            Self::WrongDirection => f.write_str("operation does not match the SA direction"),
            Self::InvalidConfig => f.write_str("invalid SA configuration"),
            Self::Crypto(e) => write!(f, "crypto error: {e}"),
        }
    }
}

impl core::error::Error for EspError {}

impl From<WireError> for EspError {
    fn from(e: WireError) -> Self {
        Self::Malformed(e)
    }
}

impl From<ReplayError> for EspError {
    fn from(e: ReplayError) -> Self {
        match e {
            ReplayError::Replayed => Self::Replayed,
            // Sequence number 0 (or above 2^32 without ESN) is left of every window.
            _ => Self::TooOld,
        }
    }
}
