//! Proposal payload (RFC 2408 §3.5), nested in an SA payload.
#![allow(clippy::indexing_slicing)] // every index is guarded by `check_len`

use super::IkeWireError;
use super::consts::payload_type;
use super::nested::{NestedList, NestedPayload};
use super::transform::Transforms;

mod field {
    pub const NUMBER: usize = 0;
    pub const PROTOCOL: usize = 1;
    pub const SPI_SIZE: usize = 2;
    pub const TRANSFORMS: usize = 3;
    pub const SPI: usize = 4;
}

/// A zero-copy view of a Proposal payload body.
///
/// After [`ProposalPayload::new_checked`] the fixed part and the SPI are in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProposalPayload<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ProposalPayload<T> {
    /// Wraps a body without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps and checks a body.
    ///
    /// # Errors
    /// [`IkeWireError::Truncated`] if the fixed part or the SPI is cut short.
    pub fn new_checked(buffer: T) -> Result<Self, IkeWireError> {
        let v = Self::new_unchecked(buffer);
        v.check_len()?;
        Ok(v)
    }

    /// Checks the fixed part and SPI.
    ///
    /// # Errors
    /// See [`ProposalPayload::new_checked`].
    pub fn check_len(&self) -> Result<(), IkeWireError> {
        let len = self.buffer.as_ref().len();
        if len < field::SPI || len < field::SPI + usize::from(self.spi_size()) {
            Err(IkeWireError::Truncated)
        } else {
            Ok(())
        }
    }

    /// Proposal number (equal numbers form one AND-ed proposal, e.g. AH + ESP).
    #[must_use]
    pub fn number(&self) -> u8 {
        self.buffer.as_ref()[field::NUMBER]
    }

    /// Protocol ID (see [`super::consts::protocol_id`]).
    #[must_use]
    pub fn protocol_id(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// SPI size in bytes.
    #[must_use]
    pub fn spi_size(&self) -> u8 {
        self.buffer
            .as_ref()
            .get(field::SPI_SIZE)
            .copied()
            .unwrap_or(0)
    }

    /// Number of transforms, as the field says.
    #[must_use]
    pub fn transform_count(&self) -> u8 {
        self.buffer.as_ref()[field::TRANSFORMS]
    }

    /// The SPI.
    #[must_use]
    pub fn spi(&self) -> &[u8] {
        &self.buffer.as_ref()[field::SPI..field::SPI + usize::from(self.spi_size())]
    }

    /// The encoded transform chain.
    #[must_use]
    pub fn transforms(&self) -> &[u8] {
        &self.buffer.as_ref()[field::SPI + usize::from(self.spi_size())..]
    }
}

/// A Proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProposalRepr<'a> {
    /// Proposal number.
    pub number: u8,
    /// Protocol ID.
    pub protocol_id: u8,
    /// SPI (empty or the 16 cookie bytes for ISAKMP; 4 bytes for ESP/AH).
    pub spi: &'a [u8],
    /// Transforms, in order of preference.
    pub transforms: Transforms<'a>,
}

impl<'a> ProposalRepr<'a> {
    /// Parses a body: the transform count must match the chain.
    ///
    /// # Errors
    /// [`IkeWireError::Truncated`], [`IkeWireError::BadProposalSyntax`], transform errors.
    pub fn parse(body: &'a [u8]) -> Result<Self, IkeWireError> {
        let v = ProposalPayload::new_checked(body)?;
        let start = field::SPI + usize::from(v.spi_size());
        Ok(Self {
            number: v.number(),
            protocol_id: v.protocol_id(),
            spi: &body[field::SPI..start],
            transforms: NestedList::parse(&body[start..], Some(usize::from(v.transform_count())))?,
        })
    }

    /// Body length.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        field::SPI + self.spi.len() + self.transforms.buffer_len()
    }

    /// Writes the body into `buf[..self.buffer_len()]`.
    ///
    /// # Errors
    /// [`IkeWireError::BufferTooSmall`]; [`IkeWireError::ValueTooLarge`] for an SPI over
    /// 255 bytes or more than 255 transforms.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), IkeWireError> {
        let spi_size = u8::try_from(self.spi.len()).map_err(|_| IkeWireError::ValueTooLarge)?;
        let count = u8::try_from(self.transforms.len()).map_err(|_| IkeWireError::ValueTooLarge)?;
        let out = buf
            .get_mut(..self.buffer_len())
            .ok_or(IkeWireError::BufferTooSmall)?;
        out[field::NUMBER] = self.number;
        out[field::PROTOCOL] = self.protocol_id;
        out[field::SPI_SIZE] = spi_size;
        out[field::TRANSFORMS] = count;
        let start = field::SPI + self.spi.len();
        out[field::SPI..start].copy_from_slice(self.spi);
        self.transforms.emit(&mut out[start..])
    }
}

impl<'a> NestedPayload<'a> for ProposalRepr<'a> {
    const PAYLOAD_TYPE: u8 = payload_type::PROPOSAL;

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

/// The Proposals of an SA payload.
pub type Proposals<'a> = NestedList<'a, ProposalRepr<'a>>;
