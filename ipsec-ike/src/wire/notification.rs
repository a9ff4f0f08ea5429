//! Notification payload (RFC 2408 §3.14): errors, INITIAL-CONTACT,
//! RESPONDER-LIFETIME, and DPD's R-U-THERE / R-U-THERE-ACK (RFC 3706 §5).
#![allow(clippy::indexing_slicing)] // every index is guarded by `check_len`

use super::IkeWireError;
use super::consts::{doi, protocol_id};

mod field {
    pub const PROTOCOL: usize = 4;
    pub const SPI_SIZE: usize = 5;
    pub const TYPE: usize = 6;
    pub const SPI: usize = 8;
}

/// A zero-copy view of a Notification payload body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifyPayload<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> NotifyPayload<T> {
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

    /// Checks the fixed part and the SPI.
    ///
    /// # Errors
    /// See [`NotifyPayload::new_checked`].
    pub fn check_len(&self) -> Result<(), IkeWireError> {
        let b = self.buffer.as_ref();
        if b.len() < field::SPI || b.len() < field::SPI + usize::from(b[field::SPI_SIZE]) {
            Err(IkeWireError::Truncated)
        } else {
            Ok(())
        }
    }

    /// DOI.
    #[must_use]
    pub fn doi(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Protocol ID.
    #[must_use]
    pub fn protocol_id(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Notify Message Type.
    #[must_use]
    pub fn notify_type(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[field::TYPE], b[field::TYPE + 1]])
    }

    /// SPI.
    #[must_use]
    pub fn spi(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[field::SPI..field::SPI + usize::from(b[field::SPI_SIZE])]
    }

    /// Notification data.
    #[must_use]
    pub fn data(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[field::SPI + usize::from(b[field::SPI_SIZE])..]
    }
}

/// A Notification payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifyRepr<'a> {
    /// DOI (1 = IPsec; some peers send 0 in Informational exchanges).
    pub doi: u32,
    /// Protocol ID the SPI belongs to.
    pub protocol_id: u8,
    /// Notify Message Type (see [`super::consts::notify`]).
    pub notify_type: u16,
    /// SPI (CKY-I | CKY-R for ISAKMP notifies such as DPD).
    pub spi: &'a [u8],
    /// Notification data (the 32-bit sequence number for DPD).
    pub data: &'a [u8],
}

impl<'a> NotifyRepr<'a> {
    /// A notify about the ISAKMP SA with SPI = CKY-I | CKY-R (`spi` must hold the 16
    /// cookie bytes), as DPD and INITIAL-CONTACT send it.
    #[must_use]
    pub const fn isakmp(notify_type: u16, spi: &'a [u8], data: &'a [u8]) -> Self {
        Self {
            doi: doi::IPSEC,
            protocol_id: protocol_id::ISAKMP,
            notify_type,
            spi,
            data,
        }
    }

    /// Parses a body.
    ///
    /// # Errors
    /// [`IkeWireError::Truncated`].
    pub fn parse(body: &'a [u8]) -> Result<Self, IkeWireError> {
        let v = NotifyPayload::new_checked(body)?;
        let spi_end = field::SPI + usize::from(body[field::SPI_SIZE]);
        Ok(Self {
            doi: v.doi(),
            protocol_id: v.protocol_id(),
            notify_type: v.notify_type(),
            spi: &body[field::SPI..spi_end],
            data: &body[spi_end..],
        })
    }

    /// Body length.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        field::SPI + self.spi.len() + self.data.len()
    }

    /// Writes the body into `buf[..self.buffer_len()]`.
    ///
    /// # Errors
    /// [`IkeWireError::BufferTooSmall`]; [`IkeWireError::ValueTooLarge`] for an SPI over
    /// 255 bytes.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), IkeWireError> {
        let spi_size = u8::try_from(self.spi.len()).map_err(|_| IkeWireError::ValueTooLarge)?;
        let out = buf
            .get_mut(..self.buffer_len())
            .ok_or(IkeWireError::BufferTooSmall)?;
        out[0..4].copy_from_slice(&self.doi.to_be_bytes());
        out[field::PROTOCOL] = self.protocol_id;
        out[field::SPI_SIZE] = spi_size;
        out[field::TYPE..field::SPI].copy_from_slice(&self.notify_type.to_be_bytes());
        let spi_end = field::SPI + self.spi.len();
        out[field::SPI..spi_end].copy_from_slice(self.spi);
        out[spi_end..].copy_from_slice(self.data);
        Ok(())
    }

    /// The data as a DPD sequence number, when it is exactly 4 bytes.
    #[must_use]
    pub fn dpd_sequence(&self) -> Option<u32> {
        <[u8; 4]>::try_from(self.data).ok().map(u32::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::super::consts::notify;
    use super::*;

    #[test]
    fn dpd_r_u_there() {
        // From natt_dpd_gre_reference.json synthetic_dpd (plaintext after HASH(1)).
        let body = [
            0x00, 0x00, 0x00, 0x01, 0x01, 0x10, 0x8d, 0x28, 0x59, 0xce, 0xdc, 0x5d, 0xce, 0xa5,
            0x58, 0xfe, 0x9e, 0x16, 0x98, 0x42, 0x36, 0x44, 0x52, 0x57, 0x12, 0x34, 0x56, 0x78,
        ];
        let r = NotifyRepr::parse(&body).unwrap();
        assert_eq!(r.notify_type, notify::R_U_THERE);
        assert_eq!(r.dpd_sequence(), Some(0x1234_5678));
        assert_eq!(
            r,
            NotifyRepr::isakmp(notify::R_U_THERE, &body[8..24], &body[24..])
        );
        let mut out = [0u8; 28];
        r.emit(&mut out).unwrap();
        assert_eq!(out, body);
        for n in 0..24 {
            assert_eq!(NotifyRepr::parse(&body[..n]), Err(IkeWireError::Truncated));
        }
    }

    #[test]
    fn no_proposal_chosen_without_spi() {
        // ipsec.cap frame 3.
        let r = NotifyRepr::parse(&[0, 0, 0, 1, 1, 0, 0, 14]).unwrap();
        assert_eq!(r.notify_type, notify::NO_PROPOSAL_CHOSEN);
        assert!(r.spi.is_empty() && r.data.is_empty());
    }
}
