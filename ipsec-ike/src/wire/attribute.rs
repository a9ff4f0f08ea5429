//! Data attributes (RFC 2408 §3.3): the TV ("basic", AF bit set, 16-bit value) and TLV
//! ("variable", AF bit clear, length-prefixed value) encodings, and lists of them.
#![allow(clippy::indexing_slicing)] // every index is guarded by `check_len`

use super::IkeWireError;

/// The Attribute Format bit: set for TV (basic) attributes.
pub const AF_BIT: u16 = 0x8000;

/// A zero-copy view of one data attribute at the start of a buffer.
///
/// After [`Attribute::new_checked`] the fixed part and, for TLV, the whole value are in
/// the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Attribute<T> {
    /// Wraps a buffer without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps and checks the attribute at the start of `buffer`.
    ///
    /// # Errors
    /// [`IkeWireError::BadAttribute`] if the buffer is too short.
    pub fn new_checked(buffer: T) -> Result<Self, IkeWireError> {
        let a = Self::new_unchecked(buffer);
        a.check_len()?;
        Ok(a)
    }

    /// Checks the lengths.
    ///
    /// # Errors
    /// See [`Attribute::new_checked`].
    pub fn check_len(&self) -> Result<(), IkeWireError> {
        let buf = self.buffer.as_ref();
        if buf.len() < 4 || buf.len() < self.total_len() {
            Err(IkeWireError::BadAttribute)
        } else {
            Ok(())
        }
    }

    fn word(&self, at: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    /// Whether this is a TV (basic) attribute.
    #[must_use]
    pub fn is_basic(&self) -> bool {
        self.word(0) & AF_BIT != 0
    }

    /// The attribute type, without the AF bit.
    #[must_use]
    pub fn attr_type(&self) -> u16 {
        self.word(0) & !AF_BIT
    }

    /// Encoded length: 4 for TV, 4 + value length for TLV.
    #[must_use]
    pub fn total_len(&self) -> usize {
        let b = self.buffer.as_ref();
        if b.len() < 4 || self.is_basic() {
            4
        } else {
            4 + usize::from(self.word(2))
        }
    }

    /// The value: TV values as their 2 bytes, TLV values as they are.
    #[must_use]
    pub fn value_bytes(&self) -> &[u8] {
        if self.is_basic() {
            &self.buffer.as_ref()[2..4]
        } else {
            &self.buffer.as_ref()[4..self.total_len()]
        }
    }
}

/// An attribute value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum AttrValue<'a> {
    /// TV format: a 16-bit value.
    Basic(u16),
    /// TLV format: value bytes as received or to be sent verbatim.
    Variable(&'a [u8]),
    /// An integer to emit in the shortest form: TV up to 0xffff, else TLV of 4 or 8
    /// bytes (life durations). Never produced by parsing.
    Integer(u64),
}

/// One data attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AttributeRepr<'a> {
    /// Attribute type (15 bits, no AF bit).
    pub attr_type: u16,
    /// Value.
    pub value: AttrValue<'a>,
}

impl<'a> AttributeRepr<'a> {
    /// A TV attribute.
    #[must_use]
    pub const fn basic(attr_type: u16, value: u16) -> Self {
        Self {
            attr_type,
            value: AttrValue::Basic(value),
        }
    }

    /// A TLV attribute with the given bytes.
    #[must_use]
    pub const fn variable(attr_type: u16, value: &'a [u8]) -> Self {
        Self {
            attr_type,
            value: AttrValue::Variable(value),
        }
    }

    /// An integer attribute in its shortest form: [`AttrValue::Basic`] when it fits 16
    /// bits, else [`AttrValue::Integer`].
    #[must_use]
    pub const fn integer(attr_type: u16, value: u64) -> Self {
        if value <= 0xffff {
            #[allow(clippy::cast_possible_truncation)] // checked just above
            return Self::basic(attr_type, value as u16);
        }
        Self {
            attr_type,
            value: AttrValue::Integer(value),
        }
    }

    /// Parses the attribute at the start of `buf`.
    ///
    /// # Errors
    /// [`IkeWireError::BadAttribute`] if it is truncated.
    pub fn parse(buf: &'a [u8]) -> Result<Self, IkeWireError> {
        let a = Attribute::new_checked(buf)?;
        let value = if a.is_basic() {
            AttrValue::Basic(a.word(2))
        } else {
            AttrValue::Variable(&buf[4..a.total_len()])
        };
        Ok(Self {
            attr_type: a.attr_type(),
            value,
        })
    }

    /// The value as an unsigned integer: TV values, and TLV values of up to 8 bytes
    /// (big-endian; an empty TLV is `None`).
    #[must_use]
    pub fn as_u64(&self) -> Option<u64> {
        match self.value {
            AttrValue::Basic(v) => Some(u64::from(v)),
            AttrValue::Integer(v) => Some(v),
            AttrValue::Variable(b) if !b.is_empty() && b.len() <= 8 => {
                Some(b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
            }
            AttrValue::Variable(_) => None,
        }
    }

    /// The value as a `u16`, if it fits.
    #[must_use]
    pub fn as_u16(&self) -> Option<u16> {
        self.as_u64().and_then(|v| u16::try_from(v).ok())
    }

    /// Encoded length.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        match self.value {
            AttrValue::Basic(_) => 4,
            AttrValue::Variable(b) => 4 + b.len(),
            AttrValue::Integer(v) if v <= 0xffff => 4,
            AttrValue::Integer(v) if v <= 0xffff_ffff => 8,
            AttrValue::Integer(_) => 12,
        }
    }

    /// Writes the attribute into `buf[..self.buffer_len()]`.
    ///
    /// # Errors
    /// [`IkeWireError::BufferTooSmall`]; [`IkeWireError::ValueTooLarge`] for a type with
    /// the AF bit set or a TLV value longer than 65535 bytes.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), IkeWireError> {
        if self.attr_type & AF_BIT != 0 {
            return Err(IkeWireError::ValueTooLarge);
        }
        let out = buf
            .get_mut(..self.buffer_len())
            .ok_or(IkeWireError::BufferTooSmall)?;
        let (tv, val): (bool, &[u8]);
        let int_bytes;
        match self.value {
            AttrValue::Basic(v) => {
                out[0..2].copy_from_slice(&(self.attr_type | AF_BIT).to_be_bytes());
                out[2..4].copy_from_slice(&v.to_be_bytes());
                return Ok(());
            }
            AttrValue::Integer(v) => {
                int_bytes = v.to_be_bytes();
                let n = self.buffer_len() - 4;
                if n == 0 {
                    tv = true;
                    val = &int_bytes[6..];
                } else {
                    tv = false;
                    val = &int_bytes[8 - n..];
                }
            }
            AttrValue::Variable(b) => {
                tv = false;
                val = b;
            }
        }
        if tv {
            out[0..2].copy_from_slice(&(self.attr_type | AF_BIT).to_be_bytes());
            out[2..4].copy_from_slice(val);
        } else {
            let len = u16::try_from(val.len()).map_err(|_| IkeWireError::ValueTooLarge)?;
            out[0..2].copy_from_slice(&self.attr_type.to_be_bytes());
            out[2..4].copy_from_slice(&len.to_be_bytes());
            out[4..].copy_from_slice(val);
        }
        Ok(())
    }
}

/// Iterator over encoded attributes. Yields the first error once, then stops.
#[derive(Debug, Clone)]
pub struct AttributeIter<'a> {
    data: &'a [u8],
}

impl<'a> AttributeIter<'a> {
    /// Iterates the attributes encoded back to back in `data`.
    #[must_use]
    pub const fn new(data: &'a [u8]) -> Self {
        Self { data }
    }
}

impl<'a> Iterator for AttributeIter<'a> {
    type Item = Result<AttributeRepr<'a>, IkeWireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.data.is_empty() {
            return None;
        }
        match AttributeRepr::parse(self.data) {
            Ok(a) => {
                self.data = self.data.get(a.buffer_len()..).unwrap_or(&[]);
                Some(Ok(a))
            }
            Err(e) => {
                self.data = &[];
                Some(Err(e))
            }
        }
    }
}

impl core::iter::FusedIterator for AttributeIter<'_> {}

#[derive(Debug, Clone, Copy)]
enum AttrList<'a> {
    Wire(&'a [u8]),
    Items(&'a [AttributeRepr<'a>]),
}

/// A list of attributes: either validated received bytes or caller-provided items.
///
/// Parsed lists keep their bytes, so emitting a parsed list reproduces it exactly.
#[derive(Debug, Clone, Copy)]
pub struct Attributes<'a>(AttrList<'a>);

impl<'a> Attributes<'a> {
    /// Validates encoded attributes (every length checked).
    ///
    /// # Errors
    /// [`IkeWireError::BadAttribute`] for a truncated attribute.
    pub fn parse(data: &'a [u8]) -> Result<Self, IkeWireError> {
        for a in AttributeIter::new(data) {
            a?;
        }
        Ok(Self(AttrList::Wire(data)))
    }

    /// A list to emit.
    #[must_use]
    pub const fn from_slice(items: &'a [AttributeRepr<'a>]) -> Self {
        Self(AttrList::Items(items))
    }

    /// The attributes in order.
    #[must_use]
    pub fn iter(&self) -> AttrsIter<'a> {
        match self.0 {
            AttrList::Wire(d) => AttrsIter::Wire(AttributeIter::new(d)),
            AttrList::Items(i) => AttrsIter::Items(i.iter()),
        }
    }

    /// The first attribute of type `attr_type`.
    #[must_use]
    pub fn get(&self, attr_type: u16) -> Option<AttributeRepr<'a>> {
        self.iter().find(|a| a.attr_type == attr_type)
    }

    /// Number of attributes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Encoded length.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        match self.0 {
            AttrList::Wire(d) => d.len(),
            AttrList::Items(i) => i.iter().map(AttributeRepr::buffer_len).sum(),
        }
    }

    /// Writes the attributes into `buf[..self.buffer_len()]`.
    ///
    /// # Errors
    /// [`IkeWireError::BufferTooSmall`], [`IkeWireError::ValueTooLarge`].
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), IkeWireError> {
        match self.0 {
            AttrList::Wire(d) => {
                buf.get_mut(..d.len())
                    .ok_or(IkeWireError::BufferTooSmall)?
                    .copy_from_slice(d);
            }
            AttrList::Items(items) => {
                let mut off = 0;
                for a in items {
                    a.emit(buf.get_mut(off..).ok_or(IkeWireError::BufferTooSmall)?)?;
                    off += a.buffer_len();
                }
            }
        }
        Ok(())
    }
}

impl PartialEq for Attributes<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Attributes<'_> {}

/// Iterator over an [`Attributes`] list.
#[derive(Debug, Clone)]
pub enum AttrsIter<'a> {
    /// Over validated bytes.
    Wire(AttributeIter<'a>),
    /// Over caller items.
    Items(core::slice::Iter<'a, AttributeRepr<'a>>),
}

impl<'a> Iterator for AttrsIter<'a> {
    type Item = AttributeRepr<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            // Validated at construction, so an error cannot occur; stop if it did.
            Self::Wire(it) => it.next().and_then(Result::ok),
            Self::Items(it) => it.next().copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Phase-1 transform attributes of the RUB-NDS MM1: AES, key length 128, SHA, group 2,
    // PSK, life type seconds, life duration 28800.
    const ATTRS: [u8; 28] = [
        0x80, 0x01, 0x00, 0x07, 0x80, 0x0e, 0x00, 0x80, 0x80, 0x02, 0x00, 0x02, 0x80, 0x04, 0x00,
        0x02, 0x80, 0x03, 0x00, 0x01, 0x80, 0x0b, 0x00, 0x01, 0x80, 0x0c, 0x70, 0x80,
    ];

    #[test]
    fn parse_tv() {
        let a = Attributes::parse(&ATTRS).unwrap();
        assert_eq!(a.len(), 7);
        assert_eq!(a.get(14).unwrap().as_u64(), Some(128));
        assert_eq!(a.get(12).unwrap().as_u16(), Some(28800));
        let mut out = [0u8; 28];
        a.emit(&mut out).unwrap();
        assert_eq!(out, ATTRS);
        // Rebuilt from items: identical bytes.
        let items: std::vec::Vec<_> = a.iter().collect();
        let b = Attributes::from_slice(&items);
        assert_eq!(b, a);
        let mut out2 = [0u8; 28];
        b.emit(&mut out2).unwrap();
        assert_eq!(out2, ATTRS);
    }

    #[test]
    fn tlv_and_integer() {
        // Life duration 86400 as a 4-byte TLV.
        let enc = [0x00, 0x02, 0x00, 0x04, 0x00, 0x01, 0x51, 0x80];
        let a = AttributeRepr::parse(&enc).unwrap();
        assert_eq!(a.value, AttrValue::Variable(&enc[4..]));
        assert_eq!(a.as_u64(), Some(86400));
        let i = AttributeRepr::integer(2, 86400);
        let mut out = [0u8; 8];
        i.emit(&mut out).unwrap();
        assert_eq!(out, enc);
        let mut out = [0u8; 4];
        AttributeRepr::integer(2, 3600).emit(&mut out).unwrap();
        assert_eq!(out, [0x80, 0x02, 0x0e, 0x10]);
        assert_eq!(AttributeRepr::integer(2, 1 << 40).buffer_len(), 12);
        assert_eq!(AttributeRepr::variable(1, &[0; 9]).as_u64(), None);
        assert_eq!(
            AttributeRepr::basic(0x8001, 1).emit(&mut [0; 4]),
            Err(IkeWireError::ValueTooLarge)
        );
    }

    #[test]
    fn truncated() {
        assert!(Attributes::parse(&ATTRS[..27]).is_err());
        assert!(Attributes::parse(&[0x00, 0x02, 0x00, 0x04, 0, 0, 0]).is_err());
        for n in 0..ATTRS.len() {
            let _ = Attributes::parse(&ATTRS[..n]);
        }
    }
}
