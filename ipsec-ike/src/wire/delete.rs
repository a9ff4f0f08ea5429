//! Delete payload (RFC 2408 §3.15).
#![allow(clippy::indexing_slicing)] // every index is guarded by `check_len`

use super::IkeWireError;
use super::consts::doi;

mod field {
    pub const PROTOCOL: usize = 4;
    pub const SPI_SIZE: usize = 5;
    pub const COUNT: usize = 6;
    pub const SPIS: usize = 8;
}

/// A zero-copy view of a Delete payload body.
///
/// After [`DeletePayload::new_checked`], exactly `spi_count * spi_size` SPI bytes follow
/// the fixed part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletePayload<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> DeletePayload<T> {
    /// Wraps a body without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps and checks a body.
    ///
    /// # Errors
    /// [`IkeWireError::Truncated`] if the fixed part is cut short,
    /// [`IkeWireError::BadLength`] if the SPIs do not fill the rest exactly,
    /// [`IkeWireError::InvalidSpi`] for SPI size 0 with a nonzero count.
    pub fn new_checked(buffer: T) -> Result<Self, IkeWireError> {
        let v = Self::new_unchecked(buffer);
        v.check_len()?;
        Ok(v)
    }

    /// Checks the lengths.
    ///
    /// # Errors
    /// See [`DeletePayload::new_checked`].
    pub fn check_len(&self) -> Result<(), IkeWireError> {
        let b = self.buffer.as_ref();
        if b.len() < field::SPIS {
            return Err(IkeWireError::Truncated);
        }
        if self.spi_size() == 0 && self.spi_count() != 0 {
            return Err(IkeWireError::InvalidSpi);
        }
        if usize::from(self.spi_size()) * usize::from(self.spi_count()) != b.len() - field::SPIS {
            return Err(IkeWireError::BadLength);
        }
        Ok(())
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

    /// SPI size.
    #[must_use]
    pub fn spi_size(&self) -> u8 {
        self.buffer.as_ref()[field::SPI_SIZE]
    }

    /// Number of SPIs.
    #[must_use]
    pub fn spi_count(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[field::COUNT], b[field::COUNT + 1]])
    }

    /// The SPIs, back to back.
    #[must_use]
    pub fn spis(&self) -> &[u8] {
        &self.buffer.as_ref()[field::SPIS..]
    }
}

/// A Delete payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteRepr<'a> {
    /// DOI.
    pub doi: u32,
    /// Protocol ID of the SAs deleted.
    pub protocol_id: u8,
    /// Size of each SPI (4 for ESP/AH, 16 for ISAKMP).
    pub spi_size: u8,
    /// The SPIs, concatenated (`len` a multiple of `spi_size`).
    pub spis: &'a [u8],
}

impl<'a> DeleteRepr<'a> {
    /// Deletes the SAs of `protocol_id` whose `spi_size`-byte SPIs are concatenated in
    /// `spis`, in the IPsec DOI.
    #[must_use]
    pub const fn new(protocol_id: u8, spi_size: u8, spis: &'a [u8]) -> Self {
        Self {
            doi: doi::IPSEC,
            protocol_id,
            spi_size,
            spis,
        }
    }

    /// Parses a body.
    ///
    /// # Errors
    /// See [`DeletePayload::new_checked`].
    pub fn parse(body: &'a [u8]) -> Result<Self, IkeWireError> {
        let v = DeletePayload::new_checked(body)?;
        Ok(Self {
            doi: v.doi(),
            protocol_id: v.protocol_id(),
            spi_size: v.spi_size(),
            spis: &body[field::SPIS..],
        })
    }

    /// The SPIs one by one.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        self.spis.chunks_exact(usize::from(self.spi_size.max(1)))
    }

    /// Body length.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        field::SPIS + self.spis.len()
    }

    /// Writes the body into `buf[..self.buffer_len()]`.
    ///
    /// # Errors
    /// [`IkeWireError::BufferTooSmall`]; [`IkeWireError::ValueTooLarge`] if `spis` is not a
    /// whole number of SPIs or there are more than 65535.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), IkeWireError> {
        let size = usize::from(self.spi_size);
        if (size == 0 && !self.spis.is_empty()) || (size != 0 && self.spis.len() % size != 0) {
            return Err(IkeWireError::ValueTooLarge);
        }
        let count = self.spis.len().checked_div(size).unwrap_or(0);
        let count = u16::try_from(count).map_err(|_| IkeWireError::ValueTooLarge)?;
        let out = buf
            .get_mut(..self.buffer_len())
            .ok_or(IkeWireError::BufferTooSmall)?;
        out[0..4].copy_from_slice(&self.doi.to_be_bytes());
        out[field::PROTOCOL] = self.protocol_id;
        out[field::SPI_SIZE] = self.spi_size;
        out[field::COUNT..field::SPIS].copy_from_slice(&count.to_be_bytes());
        out[field::SPIS..].copy_from_slice(self.spis);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_esp_spis() {
        let spis = [0x1c, 0x0d, 0x7b, 0x38, 0x08, 0x79, 0x35, 0x5b];
        let r = DeleteRepr::new(3, 4, &spis);
        let mut out = [0u8; 16];
        r.emit(&mut out).unwrap();
        assert_eq!(out[..8], [0, 0, 0, 1, 3, 4, 0, 2]);
        let p = DeleteRepr::parse(&out).unwrap();
        assert_eq!(p, r);
        let v: std::vec::Vec<_> = p.iter().collect();
        assert_eq!(v, [&spis[..4], &spis[4..]]);
        assert_eq!(DeleteRepr::parse(&out[..15]), Err(IkeWireError::BadLength));
        assert_eq!(DeleteRepr::parse(&out[..7]), Err(IkeWireError::Truncated));
        assert_eq!(
            DeleteRepr::parse(&[0, 0, 0, 1, 3, 0, 0, 1]),
            Err(IkeWireError::InvalidSpi)
        );
        assert_eq!(
            DeleteRepr::new(3, 4, &spis[..7]).emit(&mut out),
            Err(IkeWireError::ValueTooLarge)
        );
    }
}
