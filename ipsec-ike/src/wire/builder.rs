//! Building ISAKMP messages into a caller buffer: header, chained payloads with every
//! Next Payload field and the header length filled in, and the zero padding that IKEv1
//! encryption needs (RFC 2409 Appendix B; the state machine then encrypts the payload
//! area in place).

use super::IkeWireError;
use super::consts::flags;
use super::header::{HEADER_LEN, Header, HeaderRepr};
use super::payload::{GENERIC_HEADER_LEN, PayloadHeader, PayloadRepr, emit_payload};

/// Where a payload was written: returned by the builder so that a HASH payload can be
/// reserved first and filled in once the payloads it covers exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadSlot {
    offset: usize,
    len: usize,
}

impl PayloadSlot {
    /// Offset of the payload (its generic header) from the start of the message.
    #[must_use]
    pub const fn offset(&self) -> usize {
        self.offset
    }

    /// Length of the payload, generic header included.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload is empty (never: the generic header is always there).
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Offset just past the payload.
    #[must_use]
    pub const fn end(&self) -> usize {
        self.offset + self.len
    }
}

/// Writes an ISAKMP message into a caller buffer.
///
/// ```
/// use ipsec_ike::wire::{HeaderRepr, MessageBuilder, NonceRepr, PayloadRepr, exchange_type};
/// let mut buf = [0u8; 256];
/// let hdr = HeaderRepr {
///     initiator_cookie: [1; 8], responder_cookie: [2; 8], next_payload: 0,
///     exchange_type: exchange_type::IDENTITY_PROTECTION, flags: 0, message_id: 0, length: 0,
/// };
/// let mut b = MessageBuilder::new(&mut buf, &hdr)?;
/// b.push(&PayloadRepr::Nonce(NonceRepr::new(&[7; 16])))?;
/// let len = b.finish()?;
/// assert_eq!(len, 28 + 4 + 16);
/// # Ok::<(), ipsec_ike::wire::IkeWireError>(())
/// ```
#[derive(Debug)]
pub struct MessageBuilder<'b> {
    buf: &'b mut [u8],
    len: usize,
    last: Option<usize>,
}

impl<'b> MessageBuilder<'b> {
    /// Starts a message with `header` (its `next_payload` and `length` are filled in
    /// later).
    ///
    /// # Errors
    /// [`IkeWireError::BufferTooSmall`] if `buf` cannot hold the header.
    pub fn new(buf: &'b mut [u8], header: &HeaderRepr) -> Result<Self, IkeWireError> {
        let h = HeaderRepr {
            next_payload: 0,
            length: 0,
            ..*header
        };
        h.emit(buf)?;
        Ok(Self {
            buf,
            len: HEADER_LEN,
            last: None,
        })
    }

    /// Bytes written so far, header included.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether no payload has been written yet.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.last.is_none()
    }

    fn link(&mut self, payload_type: u8) {
        match self.last {
            None => {
                if let Some(b) = self.buf.get_mut(..HEADER_LEN) {
                    Header::new_unchecked(b).set_next_payload(payload_type);
                }
            }
            Some(off) => {
                if let Some(b) = self.buf.get_mut(off..off + GENERIC_HEADER_LEN) {
                    PayloadHeader::new_unchecked(b).set_next_payload(payload_type);
                }
            }
        }
    }

    fn append(
        &mut self,
        payload_type: u8,
        body_len: usize,
        emit: impl FnOnce(&mut [u8]) -> Result<(), IkeWireError>,
    ) -> Result<PayloadSlot, IkeWireError> {
        let out = self
            .buf
            .get_mut(self.len..)
            .ok_or(IkeWireError::BufferTooSmall)?;
        let n = emit_payload(out, 0, body_len, emit)?;
        self.link(payload_type);
        let slot = PayloadSlot {
            offset: self.len,
            len: n,
        };
        self.last = Some(self.len);
        self.len += n;
        Ok(slot)
    }

    /// Appends a payload.
    ///
    /// # Errors
    /// [`IkeWireError::BufferTooSmall`], [`IkeWireError::ValueTooLarge`]. On error the
    /// message is unchanged.
    pub fn push(&mut self, p: &PayloadRepr<'_>) -> Result<PayloadSlot, IkeWireError> {
        self.append(p.payload_type(), p.body_len(), |b| p.emit_body(b))
    }

    /// Appends a payload of any type with a ready-made body.
    ///
    /// # Errors
    /// As [`MessageBuilder::push`].
    pub fn push_raw(&mut self, payload_type: u8, body: &[u8]) -> Result<PayloadSlot, IkeWireError> {
        self.append(payload_type, body.len(), |b| {
            b.get_mut(..body.len())
                .ok_or(IkeWireError::BufferTooSmall)?
                .copy_from_slice(body);
            Ok(())
        })
    }

    /// Appends a payload with a zeroed body of `body_len` bytes, to be filled in later
    /// with [`MessageBuilder::body_mut`] or [`MessageBuilder::split_at`] (a HASH payload
    /// that covers the payloads after it).
    ///
    /// # Errors
    /// As [`MessageBuilder::push`].
    pub fn reserve(
        &mut self,
        payload_type: u8,
        body_len: usize,
    ) -> Result<PayloadSlot, IkeWireError> {
        self.append(payload_type, body_len, |b| {
            b.get_mut(..body_len)
                .ok_or(IkeWireError::BufferTooSmall)?
                .fill(0);
            Ok(())
        })
    }

    /// The body of a payload written by this builder.
    ///
    /// # Errors
    /// [`IkeWireError::BufferTooSmall`] if `slot` does not lie in what was written.
    pub fn body_mut(&mut self, slot: PayloadSlot) -> Result<&mut [u8], IkeWireError> {
        Ok(self.split_at(slot)?.0)
    }

    /// The body of `slot`, mutable, and every payload written after it: what Quick Mode
    /// HASH(1)/HASH(2) and Informational HASH(1) cover.
    ///
    /// # Errors
    /// [`IkeWireError::BufferTooSmall`] if `slot` does not lie in what was written.
    pub fn split_at(&mut self, slot: PayloadSlot) -> Result<(&mut [u8], &[u8]), IkeWireError> {
        if slot.len < GENERIC_HEADER_LEN || slot.end() > self.len || slot.offset < HEADER_LEN {
            return Err(IkeWireError::BufferTooSmall);
        }
        let area = self
            .buf
            .get_mut(slot.offset + GENERIC_HEADER_LEN..self.len)
            .ok_or(IkeWireError::BufferTooSmall)?;
        let (body, rest) = area.split_at_mut(slot.len - GENERIC_HEADER_LEN);
        Ok((body, rest))
    }

    /// The payloads written so far (after the header).
    #[must_use]
    pub fn payloads(&self) -> &[u8] {
        self.buf.get(HEADER_LEN..self.len).unwrap_or(&[])
    }

    /// Fixes up the header length and returns the message length.
    ///
    /// # Errors
    /// [`IkeWireError::ValueTooLarge`] if the message is longer than `u32::MAX`.
    pub fn finish(self) -> Result<usize, IkeWireError> {
        self.finish_with(None)
    }

    /// Zero-pads the payload area to a multiple of `block_len` (the cipher block), sets
    /// the E flag and fixes up the header length. The caller then encrypts
    /// `buf[28..len]` in place.
    ///
    /// # Errors
    /// [`IkeWireError::BufferTooSmall`] if the padding does not fit;
    /// [`IkeWireError::ValueTooLarge`] for a zero block length.
    pub fn finish_encrypted(self, block_len: usize) -> Result<usize, IkeWireError> {
        self.finish_with(Some(block_len))
    }

    fn finish_with(self, block_len: Option<usize>) -> Result<usize, IkeWireError> {
        let len = match block_len {
            None => self.len,
            Some(bl) => {
                HEADER_LEN
                    + pad_payload_area(
                        self.buf.get_mut(HEADER_LEN..).unwrap_or(&mut []),
                        self.len - HEADER_LEN,
                        bl,
                    )?
            }
        };
        let len32 = u32::try_from(len).map_err(|_| IkeWireError::ValueTooLarge)?;
        let hdr = self
            .buf
            .get_mut(..HEADER_LEN)
            .ok_or(IkeWireError::BufferTooSmall)?;
        let mut h = Header::new_unchecked(hdr);
        h.set_length(len32);
        if block_len.is_some() {
            let f = h.flags();
            h.set_flags(f | flags::ENCRYPTION);
        }
        Ok(len)
    }
}

/// Zero-pads `area[..used]` up to a multiple of `block_len` and returns the padded
/// length. A length that is already a multiple gets no padding (as strongSwan and the
/// RUB-NDS peer do; the receiver ignores whatever follows the last payload).
///
/// # Errors
/// [`IkeWireError::BufferTooSmall`] if `area` cannot hold the padding;
/// [`IkeWireError::ValueTooLarge`] for a zero block length.
pub fn pad_payload_area(
    area: &mut [u8],
    used: usize,
    block_len: usize,
) -> Result<usize, IkeWireError> {
    if block_len == 0 {
        return Err(IkeWireError::ValueTooLarge);
    }
    let padded = used
        .div_ceil(block_len)
        .checked_mul(block_len)
        .ok_or(IkeWireError::ValueTooLarge)?;
    area.get_mut(used..padded)
        .ok_or(IkeWireError::BufferTooSmall)?
        .fill(0);
    Ok(padded)
}

#[cfg(test)]
mod tests {
    use super::super::consts::{exchange_type, payload_type};
    use super::super::{HashRepr, NonceRepr, VendorIdRepr};
    use super::*;

    fn hdr() -> HeaderRepr {
        HeaderRepr {
            initiator_cookie: [1; 8],
            responder_cookie: [2; 8],
            next_payload: 99,
            exchange_type: exchange_type::QUICK_MODE,
            flags: 0,
            message_id: 0x259c_f133,
            length: 99,
        }
    }

    #[test]
    fn chain_hash_first_and_pad() {
        let mut buf = [0xaau8; 128];
        let mut b = MessageBuilder::new(&mut buf, &hdr()).unwrap();
        let h = b.reserve(payload_type::HASH, 20).unwrap();
        b.push(&PayloadRepr::Nonce(NonceRepr::new(&[5; 8])))
            .unwrap();
        b.push(&PayloadRepr::VendorId(VendorIdRepr::new(&[6; 3])))
            .unwrap();
        let (hash, rest) = b.split_at(h).unwrap();
        assert_eq!(rest.len(), 12 + 7);
        hash.copy_from_slice(&[9; 20]);
        let len = b.finish_encrypted(16).unwrap();
        assert_eq!(len, 28 + 48);
        let m = Header::new_checked(&buf[..len]).unwrap();
        assert!(m.is_encrypted());
        assert_eq!(m.length(), 76);
        let types: std::vec::Vec<_> = m.payloads().map(|p| p.unwrap().payload_type).collect();
        assert_eq!(types, [8, 10, 13]);
        let first = m.payloads().next().unwrap().unwrap();
        assert_eq!(
            PayloadRepr::from_raw(&first),
            Ok(PayloadRepr::Hash(HashRepr::new(&[9; 20])))
        );
        assert_eq!(
            Header::new_checked(&buf[..len])
                .unwrap()
                .payloads()
                .chain_end(),
            Ok(43)
        );
        assert!(buf[28 + 43..len].iter().all(|&x| x == 0));
    }

    #[test]
    fn too_small_never_panics() {
        let nonce = PayloadRepr::Nonce(NonceRepr::new(&[5; 32]));
        for n in 0..80 {
            let mut buf = [0u8; 80];
            let Ok(mut b) = MessageBuilder::new(&mut buf[..n], &hdr()) else {
                assert!(n < 28);
                continue;
            };
            let r = b.push(&nonce);
            assert_eq!(r.is_ok(), n >= 64, "{n}");
            // Without the nonce nothing needs padding; with it, 36 bytes pad to 48.
            assert_eq!(
                b.finish_encrypted(16).is_ok(),
                !(64..76).contains(&n),
                "{n}"
            );
        }
        assert_eq!(
            pad_payload_area(&mut [0; 4], 3, 0),
            Err(IkeWireError::ValueTooLarge)
        );
        assert_eq!(pad_payload_area(&mut [0; 16], 16, 16), Ok(16));
        assert_eq!(pad_payload_area(&mut [0; 16], 0, 8), Ok(0));
    }
}
