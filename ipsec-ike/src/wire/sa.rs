//! Security Association payload (RFC 2408 §3.4) in the IPsec DOI with
//! SIT_IDENTITY_ONLY (RFC 2407 §4.6.1): DOI, situation, then Proposal payloads.
#![allow(clippy::indexing_slicing)] // every index is guarded by `check_len`

use super::IkeWireError;
use super::consts::{doi, situation};
use super::nested::NestedList;
use super::proposal::Proposals;

/// Length of DOI + situation.
const FIXED_LEN: usize = 8;

/// A zero-copy view of an SA payload body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaPayload<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> SaPayload<T> {
    /// Wraps a body without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps and checks a body.
    ///
    /// # Errors
    /// [`IkeWireError::Truncated`] for fewer than 8 bytes.
    pub fn new_checked(buffer: T) -> Result<Self, IkeWireError> {
        let v = Self::new_unchecked(buffer);
        v.check_len()?;
        Ok(v)
    }

    /// Checks the fixed part.
    ///
    /// # Errors
    /// See [`SaPayload::new_checked`].
    pub fn check_len(&self) -> Result<(), IkeWireError> {
        if self.buffer.as_ref().len() < FIXED_LEN {
            Err(IkeWireError::Truncated)
        } else {
            Ok(())
        }
    }

    /// Domain of Interpretation.
    #[must_use]
    pub fn doi(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Situation bitmap.
    #[must_use]
    pub fn situation(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }

    /// The encoded proposal chain.
    #[must_use]
    pub fn proposals(&self) -> &[u8] {
        &self.buffer.as_ref()[FIXED_LEN..]
    }
}

/// An SA payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaRepr<'a> {
    /// DOI (always [`doi::IPSEC`] when parsed).
    pub doi: u32,
    /// Situation (always [`situation::IDENTITY_ONLY`] when parsed).
    pub situation: u32,
    /// Proposals, in order of preference.
    pub proposals: Proposals<'a>,
}

impl<'a> SaRepr<'a> {
    /// An IPsec-DOI, SIT_IDENTITY_ONLY SA payload offering `proposals`.
    #[must_use]
    pub const fn new(proposals: Proposals<'a>) -> Self {
        Self {
            doi: doi::IPSEC,
            situation: situation::IDENTITY_ONLY,
            proposals,
        }
    }

    /// Parses and validates a body down to every attribute.
    ///
    /// # Errors
    /// [`IkeWireError::DoiNotSupported`], [`IkeWireError::SituationNotSupported`],
    /// [`IkeWireError::BadProposalSyntax`], and nested length errors.
    pub fn parse(body: &'a [u8]) -> Result<Self, IkeWireError> {
        let v = SaPayload::new_checked(body)?;
        if v.doi() != doi::IPSEC {
            return Err(IkeWireError::DoiNotSupported);
        }
        if v.situation() != situation::IDENTITY_ONLY {
            return Err(IkeWireError::SituationNotSupported);
        }
        Ok(Self {
            doi: v.doi(),
            situation: v.situation(),
            proposals: NestedList::parse(&body[FIXED_LEN..], None)?,
        })
    }

    /// Body length.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        FIXED_LEN + self.proposals.buffer_len()
    }

    /// Writes the body into `buf[..self.buffer_len()]`.
    ///
    /// # Errors
    /// [`IkeWireError::BufferTooSmall`], [`IkeWireError::ValueTooLarge`].
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), IkeWireError> {
        let out = buf
            .get_mut(..self.buffer_len())
            .ok_or(IkeWireError::BufferTooSmall)?;
        out[0..4].copy_from_slice(&self.doi.to_be_bytes());
        out[4..8].copy_from_slice(&self.situation.to_be_bytes());
        self.proposals.emit(&mut out[FIXED_LEN..])
    }
}

#[cfg(test)]
mod tests {
    use super::super::{AttributeRepr, Attributes, ProposalRepr, TransformRepr, Transforms};
    use super::*;

    // SAi_b of the RUB-NDS exchange (ikev1_mainmode_psk_rubnds.json).
    const SAI_B: [u8; 52] = [
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x01, 0x00,
        0x01, 0x00, 0x00, 0x00, 0x24, 0x00, 0x01, 0x00, 0x00, 0x80, 0x01, 0x00, 0x07, 0x80, 0x0e,
        0x00, 0x80, 0x80, 0x02, 0x00, 0x02, 0x80, 0x04, 0x00, 0x02, 0x80, 0x03, 0x00, 0x01, 0x80,
        0x0b, 0x00, 0x01, 0x80, 0x0c, 0x70, 0x80,
    ];

    #[test]
    fn parse_build_round_trip() {
        let sa = SaRepr::parse(&SAI_B).unwrap();
        assert_eq!(sa.proposals.len(), 1);
        let p = sa.proposals.iter().next().unwrap();
        assert_eq!((p.number, p.protocol_id, p.spi), (0, 1, &[][..]));
        let t = p.transforms.iter().next().unwrap();
        assert_eq!((t.number, t.transform_id), (0, 1));
        assert_eq!(t.attributes.get(1).unwrap().as_u16(), Some(7));

        let attrs = [
            AttributeRepr::basic(1, 7),
            AttributeRepr::basic(14, 128),
            AttributeRepr::basic(2, 2),
            AttributeRepr::basic(4, 2),
            AttributeRepr::basic(3, 1),
            AttributeRepr::basic(11, 1),
            AttributeRepr::integer(12, 28800),
        ];
        let ts = [TransformRepr {
            number: 0,
            transform_id: 1,
            attributes: Attributes::from_slice(&attrs),
        }];
        let ps = [ProposalRepr {
            number: 0,
            protocol_id: 1,
            spi: &[],
            transforms: Transforms::from_slice(&ts),
        }];
        let built = SaRepr::new(Proposals::from_slice(&ps));
        assert_eq!(built, sa);
        let mut out = [0u8; 52];
        assert_eq!(built.buffer_len(), 52);
        built.emit(&mut out).unwrap();
        assert_eq!(out, SAI_B);
        assert_eq!(
            built.emit(&mut [0u8; 51]),
            Err(IkeWireError::BufferTooSmall)
        );
    }

    #[test]
    fn rejects() {
        let mut b = SAI_B;
        b[3] = 2;
        assert_eq!(SaRepr::parse(&b), Err(IkeWireError::DoiNotSupported));
        let mut b = SAI_B;
        b[7] = 3;
        assert_eq!(SaRepr::parse(&b), Err(IkeWireError::SituationNotSupported));
        // Transform count 2 but one transform.
        let mut b = SAI_B;
        b[15] = 2;
        assert_eq!(SaRepr::parse(&b), Err(IkeWireError::BadProposalSyntax));
        // Proposal's next payload says "another transform" type.
        let mut b = SAI_B;
        b[8] = 3;
        assert!(SaRepr::parse(&b).is_err());
        // No proposals at all.
        assert_eq!(
            SaRepr::parse(&SAI_B[..8]),
            Err(IkeWireError::BadProposalSyntax)
        );
        for n in 0..SAI_B.len() {
            assert!(SaRepr::parse(&SAI_B[..n]).is_err());
        }
    }
}
