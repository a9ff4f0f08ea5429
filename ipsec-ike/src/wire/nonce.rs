//! Nonce payload (RFC 2408 §3.13). RFC 2409 §5 bounds IKEv1 nonces to 8..=256 bytes.

use super::IkeWireError;
use super::payload::data_payload;

data_payload!(
    /// A zero-copy view of a Nonce payload body.
    view NoncePayload,
    /// A Nonce payload (`Ni_b` / `Nr_b` is its body).
    repr NonceRepr {},
    min 8, max 256, err IkeWireError::Malformed
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(NonceRepr::parse(&[0; 7]), Err(IkeWireError::Malformed));
        assert_eq!(NonceRepr::parse(&[0; 257]), Err(IkeWireError::Malformed));
        assert!(NonceRepr::parse(&[0; 8]).is_ok());
        assert!(NonceRepr::parse(&[0; 256]).is_ok());
    }
}
