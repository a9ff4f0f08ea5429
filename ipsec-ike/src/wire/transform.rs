//! Transform payload (RFC 2408 §3.6), nested in a Proposal.
#![allow(clippy::indexing_slicing)] // every index is guarded by `check_len`

use super::IkeWireError;
use super::attribute::Attributes;
use super::consts::payload_type;
use super::nested::{NestedList, NestedPayload};

/// A zero-copy view of a Transform payload body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransformPayload<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TransformPayload<T> {
    /// Wraps a body without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps and checks a body.
    ///
    /// # Errors
    /// [`IkeWireError::Truncated`] for fewer than 4 bytes.
    pub fn new_checked(buffer: T) -> Result<Self, IkeWireError> {
        let v = Self::new_unchecked(buffer);
        v.check_len()?;
        Ok(v)
    }

    /// Checks the fixed part.
    ///
    /// # Errors
    /// See [`TransformPayload::new_checked`].
    pub fn check_len(&self) -> Result<(), IkeWireError> {
        if self.buffer.as_ref().len() < 4 {
            Err(IkeWireError::Truncated)
        } else {
            Ok(())
        }
    }

    /// Transform number.
    #[must_use]
    pub fn number(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// Transform ID (KEY_IKE = 1 in phase 1; an ESP/AH transform ID in phase 2).
    #[must_use]
    pub fn transform_id(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    /// The encoded SA attributes.
    #[must_use]
    pub fn attributes(&self) -> &[u8] {
        &self.buffer.as_ref()[4..]
    }
}

/// A Transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransformRepr<'a> {
    /// Transform number.
    pub number: u8,
    /// Transform ID.
    pub transform_id: u8,
    /// SA attributes.
    pub attributes: Attributes<'a>,
}

impl<'a> TransformRepr<'a> {
    /// Parses a body.
    ///
    /// # Errors
    /// [`IkeWireError::Truncated`], [`IkeWireError::BadAttribute`].
    pub fn parse(body: &'a [u8]) -> Result<Self, IkeWireError> {
        let v = TransformPayload::new_checked(body)?;
        Ok(Self {
            number: v.number(),
            transform_id: v.transform_id(),
            attributes: Attributes::parse(&body[4..])?,
        })
    }

    /// Body length.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        4 + self.attributes.buffer_len()
    }

    /// Writes the body into `buf[..self.buffer_len()]`.
    ///
    /// # Errors
    /// [`IkeWireError::BufferTooSmall`], [`IkeWireError::ValueTooLarge`].
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), IkeWireError> {
        let out = buf
            .get_mut(..self.buffer_len())
            .ok_or(IkeWireError::BufferTooSmall)?;
        out[0] = self.number;
        out[1] = self.transform_id;
        out[2] = 0;
        out[3] = 0;
        self.attributes.emit(&mut out[4..])
    }
}

impl<'a> NestedPayload<'a> for TransformRepr<'a> {
    const PAYLOAD_TYPE: u8 = payload_type::TRANSFORM;

    fn parse_body(body: &'a [u8]) -> Result<Self, IkeWireError> {
        Self::parse(body)
    }

    fn body_len(&self) -> usize {
        self.buffer_len()
    }

    fn emit_body(&self, buf: &mut [u8]) -> Result<(), IkeWireError> {
        self.emit(buf)
    }
}

/// The Transforms of a Proposal.
pub type Transforms<'a> = NestedList<'a, TransformRepr<'a>>;
