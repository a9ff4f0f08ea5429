//! Hash payload (RFC 2408 §3.11): HASH_I / HASH_R, and Quick Mode / Informational
//! HASH(1), HASH(2), HASH(3).

use super::IkeWireError;
use super::payload::data_payload;

data_payload!(
    /// A zero-copy view of a Hash payload body.
    view HashPayload,
    /// A Hash payload. Compare a received hash in constant time (the key schedule's
    /// digests do that); the codec only carries the bytes.
    repr HashRepr {},
    min 1, max hal_traits::MAX_HASH_LEN, err IkeWireError::InvalidHashInformation
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(
            HashRepr::parse(&[]),
            Err(IkeWireError::InvalidHashInformation)
        );
        assert_eq!(
            HashRepr::parse(&[0; 65]),
            Err(IkeWireError::InvalidHashInformation)
        );
        assert!(HashRepr::parse(&[0; 20]).is_ok());
    }
}
