//! The 28-byte ISAKMP header (RFC 2408 §3.1) and the message view built on it.
#![allow(clippy::indexing_slicing)] // every index is guarded by `check_len`

use super::IkeWireError;
use super::consts::flags;
use super::payload::Payloads;

mod field {
    use core::ops::Range;
    pub const INIT_COOKIE: Range<usize> = 0..8;
    pub const RESP_COOKIE: Range<usize> = 8..16;
    pub const NEXT_PAYLOAD: usize = 16;
    pub const VERSION: usize = 17;
    pub const EXCHANGE: usize = 18;
    pub const FLAGS: usize = 19;
    pub const MESSAGE_ID: Range<usize> = 20..24;
    pub const LENGTH: Range<usize> = 24..28;
}

/// Length of the ISAKMP header.
pub const HEADER_LEN: usize = 28;
/// The version byte this library sends: major 1, minor 0.
pub const VERSION_1_0: u8 = 0x10;

/// A zero-copy view of an ISAKMP message: header and payload area.
///
/// After [`Header::new_checked`] the buffer holds at least [`HEADER_LEN`] bytes and the
/// length field lies between [`HEADER_LEN`] and the buffer length, so no accessor panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Wraps a buffer without checks. Accessors may panic until [`Header::check_len`]
    /// succeeds; use [`Header::new_checked`] on untrusted input.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps and checks a received message.
    ///
    /// # Errors
    /// [`IkeWireError::Truncated`] for fewer than 28 bytes, [`IkeWireError::BadLength`] if
    /// the length field is below 28, [`IkeWireError::UnequalLengths`] if it exceeds the
    /// buffer.
    pub fn new_checked(buffer: T) -> Result<Self, IkeWireError> {
        let h = Self::new_unchecked(buffer);
        h.check_len()?;
        Ok(h)
    }

    /// Checks the header and length field against the buffer.
    ///
    /// # Errors
    /// See [`Header::new_checked`].
    pub fn check_len(&self) -> Result<(), IkeWireError> {
        let buf = self.buffer.as_ref();
        if buf.len() < HEADER_LEN {
            return Err(IkeWireError::Truncated);
        }
        let len = self.length_field();
        if len < HEADER_LEN {
            Err(IkeWireError::BadLength)
        } else if len > buf.len() {
            Err(IkeWireError::UnequalLengths)
        } else {
            Ok(())
        }
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Initiator cookie (CKY-I).
    #[must_use]
    pub fn initiator_cookie(&self) -> [u8; 8] {
        let mut c = [0; 8];
        c.copy_from_slice(&self.buffer.as_ref()[field::INIT_COOKIE]);
        c
    }

    /// Responder cookie (CKY-R); all zeros in the first message.
    #[must_use]
    pub fn responder_cookie(&self) -> [u8; 8] {
        let mut c = [0; 8];
        c.copy_from_slice(&self.buffer.as_ref()[field::RESP_COOKIE]);
        c
    }

    /// Type of the first payload.
    #[must_use]
    pub fn next_payload(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_PAYLOAD]
    }

    /// Major version (high nibble of the version byte).
    #[must_use]
    pub fn major_version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION] >> 4
    }

    /// Minor version (low nibble of the version byte).
    #[must_use]
    pub fn minor_version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION] & 0x0f
    }

    /// Exchange type (see [`super::consts::exchange_type`]).
    #[must_use]
    pub fn exchange_type(&self) -> u8 {
        self.buffer.as_ref()[field::EXCHANGE]
    }

    /// The flags byte (see [`super::consts::flags`]).
    #[must_use]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Whether the E (encryption) flag is set.
    #[must_use]
    pub fn is_encrypted(&self) -> bool {
        self.flags() & flags::ENCRYPTION != 0
    }

    /// Message ID (zero during phase 1).
    #[must_use]
    pub fn message_id(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::MESSAGE_ID];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The raw length field.
    #[must_use]
    pub fn length(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::LENGTH];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    fn length_field(&self) -> usize {
        usize::try_from(self.length()).unwrap_or(usize::MAX)
    }

    /// The message as the length field delimits it (header included).
    #[must_use]
    pub fn message(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.length_field()]
    }

    /// The bytes after the header up to the length field: the payload chain, or its
    /// ciphertext when [`Header::is_encrypted`].
    #[must_use]
    pub fn payload_area(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.length_field()]
    }

    /// Iterates the payload chain of an unencrypted (or already decrypted) message.
    #[must_use]
    pub fn payloads(&self) -> Payloads<'_> {
        Payloads::new(self.next_payload(), self.payload_area())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    /// Sets the initiator cookie.
    pub fn set_initiator_cookie(&mut self, c: [u8; 8]) {
        self.buffer.as_mut()[field::INIT_COOKIE].copy_from_slice(&c);
    }

    /// Sets the responder cookie.
    pub fn set_responder_cookie(&mut self, c: [u8; 8]) {
        self.buffer.as_mut()[field::RESP_COOKIE].copy_from_slice(&c);
    }

    /// Sets the first payload type.
    pub fn set_next_payload(&mut self, t: u8) {
        self.buffer.as_mut()[field::NEXT_PAYLOAD] = t;
    }

    /// Sets the version byte (major << 4 | minor).
    pub fn set_version(&mut self, v: u8) {
        self.buffer.as_mut()[field::VERSION] = v;
    }

    /// Sets the exchange type.
    pub fn set_exchange_type(&mut self, t: u8) {
        self.buffer.as_mut()[field::EXCHANGE] = t;
    }

    /// Sets the flags byte.
    pub fn set_flags(&mut self, f: u8) {
        self.buffer.as_mut()[field::FLAGS] = f;
    }

    /// Sets the message ID.
    pub fn set_message_id(&mut self, id: u32) {
        self.buffer.as_mut()[field::MESSAGE_ID].copy_from_slice(&id.to_be_bytes());
    }

    /// Sets the length field.
    pub fn set_length(&mut self, len: u32) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    /// The payload area, mutable: decrypt it in place, then iterate.
    pub fn payload_area_mut(&mut self) -> &mut [u8] {
        let end = self.length_field();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// The header's fields, for building and for the state machine's checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct HeaderRepr {
    /// CKY-I.
    pub initiator_cookie: [u8; 8],
    /// CKY-R.
    pub responder_cookie: [u8; 8],
    /// Type of the first payload (filled in by the message builder).
    pub next_payload: u8,
    /// Exchange type.
    pub exchange_type: u8,
    /// Flags byte.
    pub flags: u8,
    /// Message ID.
    pub message_id: u32,
    /// Total message length (filled in by the message builder).
    pub length: u32,
}

impl HeaderRepr {
    /// Parses a checked header.
    ///
    /// # Errors
    /// [`IkeWireError::InvalidMajorVersion`] unless the major version is 1 (the minor
    /// version is ignored, as RFC 2408 §5.1 allows).
    pub fn parse<T: AsRef<[u8]>>(h: &Header<T>) -> Result<Self, IkeWireError> {
        if h.major_version() != 1 {
            return Err(IkeWireError::InvalidMajorVersion);
        }
        Ok(Self {
            initiator_cookie: h.initiator_cookie(),
            responder_cookie: h.responder_cookie(),
            next_payload: h.next_payload(),
            exchange_type: h.exchange_type(),
            flags: h.flags(),
            message_id: h.message_id(),
            length: h.length(),
        })
    }

    /// Bytes [`HeaderRepr::emit`] writes.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header (version 1.0) into the first 28 bytes of `buf`.
    ///
    /// # Errors
    /// [`IkeWireError::BufferTooSmall`] if `buf` is shorter than 28 bytes.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), IkeWireError> {
        let buf = buf
            .get_mut(..HEADER_LEN)
            .ok_or(IkeWireError::BufferTooSmall)?;
        let mut h = Header::new_unchecked(buf);
        h.set_initiator_cookie(self.initiator_cookie);
        h.set_responder_cookie(self.responder_cookie);
        h.set_next_payload(self.next_payload);
        h.set_version(VERSION_1_0);
        h.set_exchange_type(self.exchange_type);
        h.set_flags(self.flags);
        h.set_message_id(self.message_id);
        h.set_length(self.length);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RUB-NDS Main Mode message 1 header (ikev1_mainmode_psk_rubnds.json).
    const MM1_HDR: [u8; 28] = [
        0x59, 0xce, 0xdc, 0x5d, 0xce, 0xa5, 0x58, 0xfe, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x10, 0x02,
        0x00, 0, 0, 0, 0, 0, 0, 0, 0x1c,
    ];

    #[test]
    fn parse_and_emit() {
        let h = Header::new_checked(&MM1_HDR[..]).unwrap();
        let r = HeaderRepr::parse(&h).unwrap();
        assert_eq!(r.exchange_type, 2);
        assert_eq!(r.next_payload, 1);
        assert_eq!(r.length, 28);
        assert!(!h.is_encrypted());
        assert!(h.payload_area().is_empty());
        let mut out = [0u8; 28];
        r.emit(&mut out).unwrap();
        assert_eq!(out, MM1_HDR);
        assert_eq!(r.emit(&mut out[..27]), Err(IkeWireError::BufferTooSmall));
    }

    #[test]
    fn length_checks() {
        assert_eq!(
            Header::new_checked(&MM1_HDR[..27]).err(),
            Some(IkeWireError::Truncated)
        );
        let mut b = MM1_HDR;
        b[27] = 27;
        assert_eq!(
            Header::new_checked(&b[..]).err(),
            Some(IkeWireError::BadLength)
        );
        b[27] = 29;
        assert_eq!(
            Header::new_checked(&b[..]).err(),
            Some(IkeWireError::UnequalLengths)
        );
        b[24] = 0xff;
        assert_eq!(
            Header::new_checked(&b[..]).err(),
            Some(IkeWireError::UnequalLengths)
        );
        let mut b = MM1_HDR;
        b[17] = 0x20;
        let h = Header::new_checked(&b[..]).unwrap();
        assert_eq!(
            HeaderRepr::parse(&h),
            Err(IkeWireError::InvalidMajorVersion)
        );
    }
}
