use core::fmt;

/// What went wrong in a crypto operation. Deliberately coarse: it never says where a tag
/// or padding check failed, so it leaks nothing an attacker could use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum CryptoError {
    /// A key of the wrong length for the algorithm.
    InvalidKeyLength,
    /// A buffer, IV, nonce or tag of the wrong length.
    InvalidLength,
    /// A MAC or AEAD tag did not verify.
    AuthenticationFailed,
    /// A Diffie-Hellman public value outside the group.
    InvalidPublicKey,
    /// The provider does not implement this algorithm.
    Unsupported,
    /// The random source failed.
    Rng,
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InvalidKeyLength => "invalid key length",
            Self::InvalidLength => "invalid buffer length",
            Self::AuthenticationFailed => "authentication failed",
            Self::InvalidPublicKey => "invalid Diffie-Hellman public value",
            Self::Unsupported => "algorithm not supported by this provider",
            Self::Rng => "random source failed",
        })
    }
}

impl core::error::Error for CryptoError {}
