//! NAT Discovery payload (RFC 3947 §3.2; payload type 20, or 130 in the drafts).
//!
//! The body is `HASH(CKY-I | CKY-R | IP | Port)` with the negotiated (plain) hash; the
//! first NAT-D of a message covers the receiver's address, the others the sender's.

use super::IkeWireError;
use super::payload::data_payload;

data_payload!(
    /// A zero-copy view of a NAT-D payload body.
    view NatDPayload,
    /// A NAT-D payload. `draft` selects payload type 130 instead of 20.
    repr NatDRepr { draft: bool = false },
    min 1, max hal_traits::MAX_HASH_LEN, err IkeWireError::Malformed
);

impl<'a> NatDRepr<'a> {
    /// A NAT-D payload with the draft payload type (130).
    #[must_use]
    pub const fn new_draft(data: &'a [u8]) -> Self {
        Self { data, draft: true }
    }
}
