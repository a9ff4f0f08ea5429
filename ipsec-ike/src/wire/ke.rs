//! Key Exchange payload (RFC 2408 §3.7): the Diffie-Hellman public value, big-endian,
//! left-padded to the group length (checking that length is the state machine's job,
//! it knows the group).

use super::IkeWireError;
use super::payload::data_payload;

data_payload!(
    /// A zero-copy view of a Key Exchange payload body.
    view KePayload,
    /// A Key Exchange payload: `g^xi` or `g^xr`.
    repr KeRepr {},
    min 1, max usize::MAX, err IkeWireError::InvalidKeyInformation
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_invalid_key_information() {
        assert_eq!(KeRepr::parse(&[]), Err(IkeWireError::InvalidKeyInformation));
        assert_eq!(KeRepr::parse(&[1, 2]).unwrap().data, &[1, 2]);
    }
}
