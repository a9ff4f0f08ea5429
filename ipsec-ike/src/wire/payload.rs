//! The generic payload header (RFC 2408 §3.2), the payload chain iterator, and the typed
//! [`PayloadRepr`] over all payloads this library knows.
#![allow(clippy::indexing_slicing)] // every index is guarded by a length check

use super::IkeWireError;
use super::consts::{exchange_type, payload_type};
use super::{
    DeleteRepr, HashRepr, IdRepr, KeRepr, NatDRepr, NatOaRepr, NonceRepr, NotifyRepr, SaRepr,
    VendorIdRepr,
};

/// Length of the generic payload header: next payload, reserved, payload length.
pub const GENERIC_HEADER_LEN: usize = 4;

/// A zero-copy view of one payload: generic header and body.
///
/// After [`PayloadHeader::new_checked`] the buffer holds at least the generic header and
/// the length field lies between 4 and the buffer length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> PayloadHeader<T> {
    /// Wraps a buffer without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps and checks a payload at the start of `buffer`.
    ///
    /// # Errors
    /// [`IkeWireError::Truncated`] for fewer than 4 bytes, [`IkeWireError::BadLength`] if
    /// the length field is below 4 or beyond the buffer.
    pub fn new_checked(buffer: T) -> Result<Self, IkeWireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks the generic header against the buffer.
    ///
    /// # Errors
    /// See [`PayloadHeader::new_checked`].
    pub fn check_len(&self) -> Result<(), IkeWireError> {
        let buf = self.buffer.as_ref();
        if buf.len() < GENERIC_HEADER_LEN {
            return Err(IkeWireError::Truncated);
        }
        let len = usize::from(self.payload_len());
        if len < GENERIC_HEADER_LEN || len > buf.len() {
            return Err(IkeWireError::BadLength);
        }
        Ok(())
    }

    /// Type of the payload that follows this one (0 for the last).
    #[must_use]
    pub fn next_payload(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// The reserved byte (must be zero; not enforced on receipt).
    #[must_use]
    pub fn reserved(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    /// The payload length field, generic header included.
    #[must_use]
    pub fn payload_len(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[2], b[3]])
    }

    /// The payload body.
    #[must_use]
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[GENERIC_HEADER_LEN..usize::from(self.payload_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> PayloadHeader<T> {
    /// Sets the next payload type.
    pub fn set_next_payload(&mut self, t: u8) {
        self.buffer.as_mut()[0] = t;
    }

    /// Clears the reserved byte.
    pub fn clear_reserved(&mut self) {
        self.buffer.as_mut()[1] = 0;
    }

    /// Sets the payload length field.
    pub fn set_payload_len(&mut self, len: u16) {
        self.buffer.as_mut()[2..4].copy_from_slice(&len.to_be_bytes());
    }
}

/// One payload of a chain, as the iterator found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPayload<'a> {
    /// This payload's type (from the previous payload's Next Payload field, or the
    /// header's).
    pub payload_type: u8,
    /// The type of the payload after this one (0 for the last).
    pub next_payload: u8,
    /// The body, after the 4-byte generic header. This is what RFC 2409 calls e.g.
    /// `Ni_b` or `IDii_b`.
    pub body: &'a [u8],
    /// The whole payload, generic header included (for Quick Mode and Informational
    /// hashes, which cover whole payloads).
    pub raw: &'a [u8],
    /// Offset of the payload in the area being iterated.
    pub offset: usize,
}

impl RawPayload<'_> {
    /// Offset just past this payload in the area being iterated.
    #[must_use]
    pub const fn end(&self) -> usize {
        self.offset + self.raw.len()
    }

    /// Whether the type is one this library knows.
    #[must_use]
    pub const fn is_known(&self) -> bool {
        payload_type::is_known(self.payload_type)
    }
}

/// Iterator over a payload chain: yields each payload with every length checked.
///
/// Each step consumes at least 4 bytes, so iteration is bounded by a quarter of the area.
/// The first error is yielded once, after which the iterator is exhausted. Bytes after
/// the last payload (IKEv1 encryption padding) are ignored; [`Payloads::position`] tells
/// where the chain ended.
#[derive(Debug, Clone)]
pub struct Payloads<'a> {
    next_type: u8,
    data: &'a [u8],
    offset: usize,
    done: bool,
}

impl<'a> Payloads<'a> {
    /// Iterates the chain in `data` whose first payload has type `first`.
    #[must_use]
    pub const fn new(first: u8, data: &'a [u8]) -> Self {
        Self {
            next_type: first,
            data,
            offset: 0,
            done: false,
        }
    }

    /// Offset of the next payload; once the iterator has returned `None` after success,
    /// the end of the chain (where padding starts).
    #[must_use]
    pub const fn position(&self) -> usize {
        self.offset
    }

    /// Walks the whole chain and returns where it ends.
    ///
    /// # Errors
    /// The first length error of the chain.
    pub fn chain_end(mut self) -> Result<usize, IkeWireError> {
        for p in self.by_ref() {
            p?;
        }
        Ok(self.offset)
    }
}

impl<'a> Iterator for Payloads<'a> {
    type Item = Result<RawPayload<'a>, IkeWireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.next_type == payload_type::NONE {
            return None;
        }
        let rest = self.data.get(self.offset..).unwrap_or(&[]);
        let p = match PayloadHeader::new_checked(rest) {
            Ok(p) => p,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        let len = usize::from(p.payload_len());
        let item = RawPayload {
            payload_type: self.next_type,
            next_payload: p.next_payload(),
            body: &rest[GENERIC_HEADER_LEN..len],
            raw: &rest[..len],
            offset: self.offset,
        };
        self.next_type = item.next_payload;
        self.offset += len;
        Some(Ok(item))
    }
}

impl core::iter::FusedIterator for Payloads<'_> {}

/// How a payload type relates to the chain it appears in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PayloadClass {
    /// A payload this library knows and that may appear in a message's chain.
    TopLevel,
    /// Proposal or Transform: only valid nested inside an SA payload.
    Nested,
    /// A type this library does not know (IKEv1 has no critical bit: the state machine
    /// answers INVALID-PAYLOAD-TYPE or ignores it, as its exchange dictates).
    Unknown,
}

/// Classifies a payload type.
#[must_use]
pub const fn classify(t: u8) -> PayloadClass {
    match t {
        payload_type::PROPOSAL | payload_type::TRANSFORM => PayloadClass::Nested,
        t if payload_type::is_known(t) => PayloadClass::TopLevel,
        _ => PayloadClass::Unknown,
    }
}

/// Whether payload type `t` may appear in an exchange of type `exchange`.
///
/// Exchanges this library does not speak allow every top-level payload; the state
/// machine rejects the exchange itself.
#[must_use]
pub const fn allowed_in(exchange: u8, t: u8) -> bool {
    use payload_type as p;
    if !matches!(classify(t), PayloadClass::TopLevel) {
        return false;
    }
    match exchange {
        exchange_type::IDENTITY_PROTECTION
        | exchange_type::AGGRESSIVE
        | exchange_type::BASE
        | exchange_type::AUTHENTICATION_ONLY => !matches!(t, p::NAT_OA | p::NAT_OA_DRAFT),
        exchange_type::QUICK_MODE => matches!(
            t,
            p::SA
                | p::KE
                | p::ID
                | p::HASH
                | p::NONCE
                | p::NOTIFY
                | p::VENDOR_ID
                | p::NAT_OA
                | p::NAT_OA_DRAFT
        ),
        exchange_type::INFORMATIONAL => matches!(t, p::HASH | p::NOTIFY | p::DELETE),
        _ => true,
    }
}

/// Checks a whole chain: every length, and every payload type known and allowed in
/// `exchange` (see [`allowed_in`]). Returns the offset where the chain ends.
///
/// # Errors
/// Length errors from the iterator; [`IkeWireError::InvalidPayloadType`] (notify
/// INVALID-PAYLOAD-TYPE) for the first unknown or misplaced payload.
pub fn validate_chain(exchange: u8, first: u8, area: &[u8]) -> Result<usize, IkeWireError> {
    let mut it = Payloads::new(first, area);
    for p in it.by_ref() {
        let p = p?;
        if !allowed_in(exchange, p.payload_type) {
            return Err(IkeWireError::InvalidPayloadType(p.payload_type));
        }
    }
    Ok(it.position())
}

/// A payload with its body decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadRepr<'a> {
    /// Security Association.
    Sa(SaRepr<'a>),
    /// Key Exchange.
    Ke(KeRepr<'a>),
    /// Identification.
    Id(IdRepr<'a>),
    /// Hash.
    Hash(HashRepr<'a>),
    /// Nonce.
    Nonce(NonceRepr<'a>),
    /// Notification.
    Notify(NotifyRepr<'a>),
    /// Delete.
    Delete(DeleteRepr<'a>),
    /// Vendor ID.
    VendorId(VendorIdRepr<'a>),
    /// NAT-D (RFC 3947 or draft numbering).
    NatD(NatDRepr<'a>),
    /// NAT-OA (RFC 3947 or draft numbering).
    NatOa(NatOaRepr),
    /// Any other payload, body kept raw: CERT, CERT_REQ, SIG, or an unknown type.
    Other {
        /// Payload type.
        payload_type: u8,
        /// Body.
        body: &'a [u8],
    },
}

impl<'a> PayloadRepr<'a> {
    /// Decodes the body of a payload of type `payload_type`.
    ///
    /// # Errors
    /// The body's own errors; [`IkeWireError::InvalidPayloadType`] for a Proposal or
    /// Transform outside an SA, or for type 0.
    pub fn parse(payload_type: u8, body: &'a [u8]) -> Result<Self, IkeWireError> {
        use super::consts::payload_type as p;
        Ok(match payload_type {
            p::SA => Self::Sa(SaRepr::parse(body)?),
            p::KE => Self::Ke(KeRepr::parse(body)?),
            p::ID => Self::Id(IdRepr::parse(body)?),
            p::HASH => Self::Hash(HashRepr::parse(body)?),
            p::NONCE => Self::Nonce(NonceRepr::parse(body)?),
            p::NOTIFY => Self::Notify(NotifyRepr::parse(body)?),
            p::DELETE => Self::Delete(DeleteRepr::parse(body)?),
            p::VENDOR_ID => Self::VendorId(VendorIdRepr::parse(body)?),
            p::NAT_D => Self::NatD(NatDRepr::parse(body)?),
            p::NAT_D_DRAFT => Self::NatD(NatDRepr {
                draft: true,
                ..NatDRepr::parse(body)?
            }),
            p::NAT_OA => Self::NatOa(NatOaRepr::parse(body)?),
            p::NAT_OA_DRAFT => Self::NatOa(NatOaRepr {
                draft: true,
                ..NatOaRepr::parse(body)?
            }),
            p::NONE | p::PROPOSAL | p::TRANSFORM => {
                return Err(IkeWireError::InvalidPayloadType(payload_type));
            }
            t => Self::Other {
                payload_type: t,
                body,
            },
        })
    }

    /// Decodes a payload the chain iterator returned.
    ///
    /// # Errors
    /// See [`PayloadRepr::parse`].
    pub fn from_raw(raw: &RawPayload<'a>) -> Result<Self, IkeWireError> {
        Self::parse(raw.payload_type, raw.body)
    }

    /// The payload type this payload is sent as.
    #[must_use]
    pub const fn payload_type(&self) -> u8 {
        use payload_type as p;
        match self {
            Self::Sa(_) => p::SA,
            Self::Ke(_) => p::KE,
            Self::Id(_) => p::ID,
            Self::Hash(_) => p::HASH,
            Self::Nonce(_) => p::NONCE,
            Self::Notify(_) => p::NOTIFY,
            Self::Delete(_) => p::DELETE,
            Self::VendorId(_) => p::VENDOR_ID,
            Self::NatD(r) => {
                if r.draft {
                    p::NAT_D_DRAFT
                } else {
                    p::NAT_D
                }
            }
            Self::NatOa(r) => {
                if r.draft {
                    p::NAT_OA_DRAFT
                } else {
                    p::NAT_OA
                }
            }
            Self::Other { payload_type, .. } => *payload_type,
        }
    }

    /// Length of the body [`PayloadRepr::emit_body`] writes (generic header excluded).
    #[must_use]
    pub fn body_len(&self) -> usize {
        match self {
            Self::Sa(r) => r.buffer_len(),
            Self::Ke(r) => r.buffer_len(),
            Self::Id(r) => r.buffer_len(),
            Self::Hash(r) => r.buffer_len(),
            Self::Nonce(r) => r.buffer_len(),
            Self::Notify(r) => r.buffer_len(),
            Self::Delete(r) => r.buffer_len(),
            Self::VendorId(r) => r.buffer_len(),
            Self::NatD(r) => r.buffer_len(),
            Self::NatOa(r) => r.buffer_len(),
            Self::Other { body, .. } => body.len(),
        }
    }

    /// Writes the body into `buf[..self.body_len()]`.
    ///
    /// # Errors
    /// [`IkeWireError::BufferTooSmall`], or [`IkeWireError::ValueTooLarge`] if a nested
    /// length does not fit its field.
    pub fn emit_body(&self, buf: &mut [u8]) -> Result<(), IkeWireError> {
        match self {
            Self::Sa(r) => r.emit(buf),
            Self::Ke(r) => r.emit(buf),
            Self::Id(r) => r.emit(buf),
            Self::Hash(r) => r.emit(buf),
            Self::Nonce(r) => r.emit(buf),
            Self::Notify(r) => r.emit(buf),
            Self::Delete(r) => r.emit(buf),
            Self::VendorId(r) => r.emit(buf),
            Self::NatD(r) => r.emit(buf),
            Self::NatOa(r) => r.emit(buf),
            Self::Other { body, .. } => {
                buf.get_mut(..body.len())
                    .ok_or(IkeWireError::BufferTooSmall)?
                    .copy_from_slice(body);
                Ok(())
            }
        }
    }
}

/// Writes one payload (generic header + body from `emit_body`) at the start of `buf` and
/// returns its length. Shared by the message builder and the SA/proposal emitters.
pub(crate) fn emit_payload(
    buf: &mut [u8],
    next_payload: u8,
    body_len: usize,
    emit_body: impl FnOnce(&mut [u8]) -> Result<(), IkeWireError>,
) -> Result<usize, IkeWireError> {
    let total = body_len
        .checked_add(GENERIC_HEADER_LEN)
        .ok_or(IkeWireError::ValueTooLarge)?;
    let len16 = u16::try_from(total).map_err(|_| IkeWireError::ValueTooLarge)?;
    let out = buf.get_mut(..total).ok_or(IkeWireError::BufferTooSmall)?;
    let (hdr, body) = out.split_at_mut(GENERIC_HEADER_LEN);
    let mut h = PayloadHeader::new_unchecked(hdr);
    h.set_next_payload(next_payload);
    h.clear_reserved();
    h.set_payload_len(len16);
    emit_body(body)?;
    Ok(total)
}

/// Defines a payload whose body is one opaque byte string (KE, HASH, NONCE, VID, NAT-D):
/// a view with `new_checked` and `data`, and a Repr with `parse` / `buffer_len` / `emit`.
macro_rules! data_payload {
    (
        $(#[$vdoc:meta])* view $view:ident,
        $(#[$rdoc:meta])* repr $repr:ident { $($extra:ident : $ety:ty = $edef:expr),* },
        min $min:expr, max $max:expr, err $err:expr
    ) => {
        $(#[$vdoc])*
        ///
        /// After `new_checked` the body length lies within the limits of the payload.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $view<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $view<T> {
            /// Minimum body length accepted on receipt.
            pub const MIN_LEN: usize = $min;
            /// Maximum body length accepted on receipt.
            pub const MAX_LEN: usize = $max;

            /// Wraps a payload body without checks.
            pub const fn new_unchecked(buffer: T) -> Self {
                Self { buffer }
            }

            /// Wraps and checks a payload body.
            ///
            /// # Errors
            /// If the body length is outside `MIN_LEN..=MAX_LEN`.
            pub fn new_checked(buffer: T) -> Result<Self, $crate::wire::IkeWireError> {
                let v = Self::new_unchecked(buffer);
                v.check_len()?;
                Ok(v)
            }

            /// Checks the body length.
            ///
            /// # Errors
            /// See `new_checked`.
            pub fn check_len(&self) -> Result<(), $crate::wire::IkeWireError> {
                let len = self.buffer.as_ref().len();
                if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&len) {
                    Err($err)
                } else {
                    Ok(())
                }
            }

            /// The payload data (the whole body).
            #[must_use]
            pub fn data(&self) -> &[u8] {
                self.buffer.as_ref()
            }
        }

        $(#[$rdoc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $repr<'a> {
            /// The payload data.
            pub data: &'a [u8],
            $(
                #[doc = concat!("`", stringify!($extra), "`: see the type documentation.")]
                pub $extra: $ety,
            )*
        }

        impl<'a> $repr<'a> {
            /// A payload carrying `data`.
            #[must_use]
            pub const fn new(data: &'a [u8]) -> Self {
                Self { data, $($extra: $edef),* }
            }

            /// Parses a payload body.
            ///
            /// # Errors
            /// If the body length is outside the payload's limits.
            pub fn parse(body: &'a [u8]) -> Result<Self, $crate::wire::IkeWireError> {
                $view::new_checked(body)?;
                Ok(Self::new(body))
            }

            /// Body length.
            #[must_use]
            pub const fn buffer_len(&self) -> usize {
                self.data.len()
            }

            /// Writes the body into `buf[..self.buffer_len()]`.
            ///
            /// # Errors
            /// [`IkeWireError::BufferTooSmall`](crate::wire::IkeWireError::BufferTooSmall).
            pub fn emit(&self, buf: &mut [u8]) -> Result<(), $crate::wire::IkeWireError> {
                buf.get_mut(..self.data.len())
                    .ok_or($crate::wire::IkeWireError::BufferTooSmall)?
                    .copy_from_slice(self.data);
                Ok(())
            }
        }
    };
}
pub(crate) use data_payload;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_and_errors() {
        // VID(4 bytes) -> NONCE(8 bytes), then 3 bytes of padding.
        let area = [
            10, 0, 0, 8, 1, 2, 3, 4, 0, 0, 0, 12, 9, 9, 9, 9, 9, 9, 9, 9, 0, 0, 0,
        ];
        let v: std::vec::Vec<_> = Payloads::new(13, &area).map(Result::unwrap).collect();
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].payload_type, v[0].body), (13, &[1u8, 2, 3, 4][..]));
        assert_eq!(v[1].payload_type, 10);
        assert_eq!(v[1].offset, 8);
        assert_eq!(Payloads::new(13, &area).chain_end(), Ok(20));
        assert_eq!(
            validate_chain(exchange_type::IDENTITY_PROTECTION, 13, &area),
            Ok(20)
        );
        assert_eq!(
            validate_chain(exchange_type::INFORMATIONAL, 13, &area),
            Err(IkeWireError::InvalidPayloadType(13))
        );
        assert_eq!(
            validate_chain(exchange_type::IDENTITY_PROTECTION, 99, &area),
            Err(IkeWireError::InvalidPayloadType(99))
        );
        assert_eq!(
            validate_chain(exchange_type::IDENTITY_PROTECTION, 2, &area),
            Err(IkeWireError::InvalidPayloadType(2))
        );

        // Length 3 (< 4), length past the end, truncated generic header.
        for bad in [
            &[0u8, 0, 0, 3][..],
            &[0, 0, 0, 9, 1, 2, 3, 4][..],
            &[0, 0, 0][..],
        ] {
            let mut it = Payloads::new(13, bad);
            assert!(it.next().unwrap().is_err());
            assert!(it.next().is_none());
        }
        // A chain that says "more" but ends.
        let mut it = Payloads::new(13, &area[..8]);
        assert!(it.next().unwrap().is_ok());
        assert_eq!(it.next().unwrap(), Err(IkeWireError::Truncated));
    }

    #[test]
    fn unknown_is_kept_raw() {
        let r = PayloadRepr::parse(200, &[1, 2]).unwrap();
        assert_eq!(
            r,
            PayloadRepr::Other {
                payload_type: 200,
                body: &[1, 2]
            }
        );
        assert_eq!(classify(200), PayloadClass::Unknown);
        assert_eq!(classify(3), PayloadClass::Nested);
        assert_eq!(classify(20), PayloadClass::TopLevel);
        assert!(PayloadRepr::parse(2, &[]).is_err());
    }
}
