//! Lists of payloads nested inside another payload: the Proposals of an SA payload and
//! the Transforms of a Proposal payload (RFC 2408 §3.4–3.6). Each nested payload has a
//! generic header whose Next Payload field is its own type, or 0 for the last one.

use core::fmt;

use super::IkeWireError;
use super::payload::{Payloads, emit_payload};

mod sealed {
    pub trait Sealed {}
}

/// A payload that only appears nested ([`super::ProposalRepr`], [`super::TransformRepr`]).
pub trait NestedPayload<'a>: Sized + Copy + sealed::Sealed {
    /// Its payload type, which every Next Payload field of the list carries except the
    /// last.
    const PAYLOAD_TYPE: u8;
    /// Parses one body.
    ///
    /// # Errors
    /// The body's own errors.
    fn parse_body(body: &'a [u8]) -> Result<Self, IkeWireError>;
    /// Body length.
    fn body_len(&self) -> usize;
    /// Writes the body into `buf[..self.body_len()]`.
    ///
    /// # Errors
    /// [`IkeWireError::BufferTooSmall`], [`IkeWireError::ValueTooLarge`].
    fn emit_body(&self, buf: &mut [u8]) -> Result<(), IkeWireError>;
}

impl sealed::Sealed for super::ProposalRepr<'_> {}
impl sealed::Sealed for super::TransformRepr<'_> {}

#[derive(Clone, Copy)]
enum Inner<'a, R> {
    Wire(&'a [u8]),
    Items(&'a [R]),
}

/// A list of nested payloads: either validated received bytes (emitted back verbatim) or
/// caller-provided items.
#[derive(Clone, Copy)]
pub struct NestedList<'a, R>(Inner<'a, R>);

impl<'a, R: NestedPayload<'a>> NestedList<'a, R> {
    /// Validates the chain in `area`: every payload of type `R::PAYLOAD_TYPE`, every body
    /// valid, the chain filling `area` exactly and holding `count` payloads when a count
    /// is given.
    ///
    /// # Errors
    /// [`IkeWireError::BadProposalSyntax`] for a wrong type, count or trailing bytes;
    /// length and body errors as found.
    pub fn parse(area: &'a [u8], count: Option<usize>) -> Result<Self, IkeWireError> {
        if area.is_empty() {
            return Err(IkeWireError::BadProposalSyntax);
        }
        let mut it = Payloads::new(R::PAYLOAD_TYPE, area);
        let mut n = 0usize;
        for p in it.by_ref() {
            let p = p?;
            if p.payload_type != R::PAYLOAD_TYPE {
                return Err(IkeWireError::BadProposalSyntax);
            }
            R::parse_body(p.body)?;
            n += 1;
        }
        if it.position() != area.len() || count.is_some_and(|c| c != n) || n == 0 {
            return Err(IkeWireError::BadProposalSyntax);
        }
        Ok(Self(Inner::Wire(area)))
    }

    /// A list to emit.
    #[must_use]
    pub const fn from_slice(items: &'a [R]) -> Self {
        Self(Inner::Items(items))
    }

    /// The items in order.
    #[must_use]
    pub fn iter(&self) -> NestedIter<'a, R> {
        match self.0 {
            Inner::Wire(area) => NestedIter::Wire(Payloads::new(R::PAYLOAD_TYPE, area)),
            Inner::Items(items) => NestedIter::Items(items.iter()),
        }
    }

    /// Number of items.
    #[must_use]
    pub fn len(&self) -> usize {
        match self.0 {
            Inner::Wire(_) => self.iter().count(),
            Inner::Items(items) => items.len(),
        }
    }

    /// Whether the list is empty (never true for a parsed list).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Encoded length, generic headers included.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        match self.0 {
            Inner::Wire(area) => area.len(),
            Inner::Items(items) => items.iter().map(|r| r.body_len() + 4).sum(),
        }
    }

    /// Writes the list into `buf[..self.buffer_len()]`.
    ///
    /// # Errors
    /// [`IkeWireError::BufferTooSmall`], [`IkeWireError::ValueTooLarge`].
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), IkeWireError> {
        match self.0 {
            Inner::Wire(area) => {
                buf.get_mut(..area.len())
                    .ok_or(IkeWireError::BufferTooSmall)?
                    .copy_from_slice(area);
            }
            Inner::Items(items) => {
                let mut off = 0;
                for (i, r) in items.iter().enumerate() {
                    let next = if i + 1 < items.len() {
                        R::PAYLOAD_TYPE
                    } else {
                        0
                    };
                    let out = buf.get_mut(off..).ok_or(IkeWireError::BufferTooSmall)?;
                    off += emit_payload(out, next, r.body_len(), |b| r.emit_body(b))?;
                }
            }
        }
        Ok(())
    }
}

impl<'a, R: NestedPayload<'a> + PartialEq> PartialEq for NestedList<'a, R> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl<'a, R: NestedPayload<'a> + Eq> Eq for NestedList<'a, R> {}

impl<'a, R: NestedPayload<'a> + fmt::Debug> fmt::Debug for NestedList<'a, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterator over a [`NestedList`].
#[derive(Debug, Clone)]
pub enum NestedIter<'a, R> {
    /// Over validated bytes.
    Wire(Payloads<'a>),
    /// Over caller items.
    Items(core::slice::Iter<'a, R>),
}

impl<'a, R: NestedPayload<'a>> Iterator for NestedIter<'a, R> {
    type Item = R;

    fn next(&mut self) -> Option<R> {
        match self {
            // Validated at construction: errors cannot occur; stop if one did.
            Self::Wire(it) => it
                .next()
                .and_then(Result::ok)
                .and_then(|p| R::parse_body(p.body).ok()),
            Self::Items(it) => it.next().copied(),
        }
    }
}
