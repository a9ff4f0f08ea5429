//! The ISAKMP codec (RFC 2408, RFC 2409, RFC 3947 NAT-T payloads, RFC 3706 DPD notifies).
//!
//! Layout, smoltcp style: one file per concept, each with a zero-copy view
//! (`Header`, `SaPayload`, `ProposalPayload`, ...) whose `new_checked` validates every
//! length once, after which no accessor panics, and a `Repr` with `parse` / `buffer_len`
//! / `emit`.
//!
//! * Receiving: [`Header::new_checked`] on the datagram, [`HeaderRepr::parse`] for the
//!   version check, then (after decryption, if the E flag is set) [`Header::payloads`]
//!   iterates the chain, yielding [`RawPayload`]s (`payload_type`, `body`, `raw`) with
//!   every length checked; [`PayloadRepr::from_raw`] decodes one. [`validate_chain`]
//!   classifies unknown or misplaced payload types for an exchange.
//! * Sending: [`MessageBuilder`] writes the header and chained payloads into a caller
//!   buffer, fills every Next Payload field and the length, reserves HASH payloads to be
//!   filled in after the payloads they cover, and zero-pads the payload area to the
//!   cipher block for encryption.
//! * Nested lists (proposals in an SA, transforms in a proposal, attributes in a
//!   transform) are either validated received bytes or caller slices
//!   ([`NestedList::from_slice`], [`Attributes::from_slice`]): no heap, and a parsed
//!   payload re-emits byte for byte.
//! * Numbers: [`consts`], [`ike_attr`] (phase 1) and [`ipsec_attr`] (IPsec DOI), with
//!   the mappings to the [`hal_traits`] algorithm enums.
//!
//! Wire code never decides: it reports what a message says and, through
//! [`IkeWireError::notify_type`], which notify a malformed one deserves.

mod attribute;
mod builder;
pub mod consts;
mod delete;
mod error;
mod hash;
mod header;
mod id;
pub mod ike_attr;
pub mod ipsec_attr;
mod ke;
mod nat_d;
mod nat_oa;
mod nested;
mod nonce;
mod notification;
mod payload;
mod proposal;
mod sa;
mod transform;
mod vendor;

pub use attribute::{
    AF_BIT, AttrValue, Attribute, AttributeIter, AttributeRepr, Attributes, AttrsIter,
};
pub use builder::{MessageBuilder, PayloadSlot, pad_payload_area};
pub use consts::{
    doi, exchange_type, flags, id_type, notify, payload_type, protocol_id, situation, vendor_id,
};
pub use delete::{DeletePayload, DeleteRepr};
pub use error::IkeWireError;
pub use hash::{HashPayload, HashRepr};
pub use header::{HEADER_LEN, Header, HeaderRepr, VERSION_1_0};
pub use id::{IdPayload, IdRepr, Identity};
pub use ke::{KePayload, KeRepr};
pub use nat_d::{NatDPayload, NatDRepr};
pub use nat_oa::{NatOaPayload, NatOaRepr};
pub use nested::{NestedIter, NestedList, NestedPayload};
pub use nonce::{NoncePayload, NonceRepr};
pub use notification::{NotifyPayload, NotifyRepr};
pub use payload::{
    GENERIC_HEADER_LEN, PayloadClass, PayloadHeader, PayloadRepr, Payloads, RawPayload, allowed_in,
    classify, validate_chain,
};
pub use proposal::{ProposalPayload, ProposalRepr, Proposals};
pub use sa::{SaPayload, SaRepr};
pub use transform::{TransformPayload, TransformRepr, Transforms};
pub use vendor::{VendorIdPayload, VendorIdRepr};
