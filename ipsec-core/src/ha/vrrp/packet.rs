//! The VRRPv3 advertisement (RFC 5798 §5) over IPv4.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |(rsvd) |     Max Adver Int     |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       IPvX Address(es)                        |
//! ```
//!
//! Carried in IPv4 protocol 112 to 224.0.0.18 with TTL 255. The checksum covers the
//! VRRP message and the IPv4 pseudo-header (RFC 5798 §5.2.8), so parsing and emitting
//! need the IP source and destination.
#![allow(clippy::indexing_slicing)] // every index below is guarded by `check_len`

use core::net::Ipv4Addr;

use heapless::Vec;

use crate::wire::{WireError, checksum};

/// IP protocol number of VRRP.
pub const PROTOCOL: u8 = 112;
/// The IPv4 multicast group of VRRP advertisements.
pub const MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The TTL advertisements are sent with, and the only one accepted (RFC 5798 §5.1.1.3).
pub const TTL: u8 = 255;
/// VRRP version 3.
pub const VERSION: u8 = 3;
/// The only message type: ADVERTISEMENT.
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Most virtual addresses this implementation carries in one advertisement.
pub const MAX_ADDRS: usize = 8;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 8;

mod field {
    use core::ops::Range;
    pub const VER_TYPE: usize = 0;
    pub const VRID: usize = 1;
    pub const PRIORITY: usize = 2;
    pub const COUNT: usize = 3;
    pub const MAX_ADVER: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// A read view of an advertisement (IPv4 addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VrrpPacket<T> {
    /// Wraps a buffer and checks that it holds the header and the announced addresses,
    /// after which no accessor panics. Trailing bytes are ignored.
    ///
    /// # Errors
    /// [`WireError::Truncated`].
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self { buffer };
        p.check_len()?;
        Ok(p)
    }

    /// See [`VrrpPacket::new_checked`].
    ///
    /// # Errors
    /// [`WireError::Truncated`].
    pub fn check_len(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN || b.len() < self.total_len_unchecked() {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    fn total_len_unchecked(&self) -> usize {
        let count = self.buffer.as_ref().get(field::COUNT).copied().unwrap_or(0);
        HEADER_LEN + 4 * usize::from(count)
    }

    /// Length of the message: header and addresses.
    #[must_use]
    pub fn total_len(&self) -> usize {
        self.total_len_unchecked()
    }

    /// The version (3).
    #[must_use]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] >> 4
    }

    /// The type (1, ADVERTISEMENT).
    #[must_use]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] & 0x0f
    }

    /// The virtual router id.
    #[must_use]
    pub fn vrid(&self) -> u8 {
        self.buffer.as_ref()[field::VRID]
    }

    /// The sender's priority (0: it stops being master; 255: it owns the addresses).
    #[must_use]
    pub fn priority(&self) -> u8 {
        self.buffer.as_ref()[field::PRIORITY]
    }

    /// Number of addresses.
    #[must_use]
    pub fn count(&self) -> u8 {
        self.buffer.as_ref()[field::COUNT]
    }

    /// The advertisement interval in centiseconds (12 bits).
    #[must_use]
    pub fn max_adver_int(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::MAX_ADVER];
        u16::from_be_bytes([b[0], b[1]]) & 0x0fff
    }

    /// The checksum field.
    #[must_use]
    pub fn checksum(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::CHECKSUM];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The `i`th address, if there is one.
    #[must_use]
    pub fn addr(&self, i: usize) -> Option<Ipv4Addr> {
        if i >= usize::from(self.count()) {
            return None;
        }
        let o = HEADER_LEN + 4 * i;
        let b = &self.buffer.as_ref()[o..o + 4];
        Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }

    /// Whether the checksum verifies, with the pseudo-header of `src` -> `dst`.
    #[must_use]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let msg = &self.buffer.as_ref()[..self.total_len()];
        let Ok(len) = u16::try_from(msg.len()) else {
            return false;
        };
        let s = checksum::combine(
            checksum::pseudo_header_v4(src, dst, PROTOCOL, len),
            checksum::sum(msg),
        );
        checksum::fold(s) == 0xffff
    }
}

/// An advertisement, parsed or to be emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpRepr {
    /// Virtual router id (1..=255).
    pub vrid: u8,
    /// Priority: 0 (resigning), 1..=254, 255 (owner).
    pub priority: u8,
    /// Advertisement interval in centiseconds (1..=4095).
    pub max_adver_int: u16,
    /// The virtual addresses.
    pub addresses: Vec<Ipv4Addr, MAX_ADDRS>,
}

impl VrrpRepr {
    /// Parses and validates an advertisement received from `src` to `dst` (the IPv4
    /// header's addresses): version 3, type ADVERTISEMENT, a non-zero VRID and interval,
    /// at most [`MAX_ADDRS`] addresses, and a correct checksum.
    ///
    /// # Errors
    /// [`WireError::BadVersion`], [`WireError::Malformed`], [`WireError::BadChecksum`].
    pub fn parse<T: AsRef<[u8]>>(
        p: &VrrpPacket<T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<Self, WireError> {
        if p.version() != VERSION {
            return Err(WireError::BadVersion);
        }
        if p.msg_type() != TYPE_ADVERTISEMENT || p.vrid() == 0 || p.max_adver_int() == 0 {
            return Err(WireError::Malformed);
        }
        if usize::from(p.count()) > MAX_ADDRS {
            return Err(WireError::Malformed);
        }
        if !p.verify_checksum(src, dst) {
            return Err(WireError::BadChecksum);
        }
        let mut addresses = Vec::new();
        for i in 0..usize::from(p.count()) {
            if let Some(a) = p.addr(i) {
                addresses.push(a).map_err(|_| WireError::Malformed)?;
            }
        }
        Ok(Self {
            vrid: p.vrid(),
            priority: p.priority(),
            max_adver_int: p.max_adver_int(),
            addresses,
        })
    }

    /// Length of the emitted message.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + 4 * self.addresses.len()
    }

    /// Writes the advertisement, checksum included, for `src` -> `dst`. Returns its length.
    ///
    /// # Errors
    /// [`WireError::BufferTooSmall`]; [`WireError::Malformed`] for an interval above 4095.
    pub fn emit(&self, buf: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) -> Result<usize, WireError> {
        let len = self.buffer_len();
        if buf.len() < len {
            return Err(WireError::BufferTooSmall);
        }
        if self.max_adver_int > 0x0fff {
            return Err(WireError::Malformed);
        }
        let count = u8::try_from(self.addresses.len()).map_err(|_| WireError::Malformed)?;
        buf[field::VER_TYPE] = (VERSION << 4) | TYPE_ADVERTISEMENT;
        buf[field::VRID] = self.vrid;
        buf[field::PRIORITY] = self.priority;
        buf[field::COUNT] = count;
        buf[field::MAX_ADVER].copy_from_slice(&self.max_adver_int.to_be_bytes());
        buf[field::CHECKSUM].copy_from_slice(&[0, 0]);
        for (i, a) in self.addresses.iter().enumerate() {
            let o = HEADER_LEN + 4 * i;
            buf[o..o + 4].copy_from_slice(&a.octets());
        }
        let len16 = u16::try_from(len).map_err(|_| WireError::Malformed)?;
        let s = checksum::combine(
            checksum::pseudo_header_v4(src, dst, PROTOCOL, len16),
            checksum::sum(&buf[..len]),
        );
        buf[field::CHECKSUM].copy_from_slice(&checksum::finish(s).to_be_bytes());
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VRRPv3 advertisement for VRID 51, priority 100, 1 s interval, VIP
    /// 192.168.1.100 (checksum left zero; the test computes it independently).
    const SAMPLE: [u8; 12] = [
        0x31, 0x33, 0x64, 0x01, 0x00, 0x64, 0x00, 0x00, 192, 168, 1, 100,
    ];

    #[test]
    fn round_trip_and_checksum() {
        let src = Ipv4Addr::new(192, 168, 1, 10);
        let mut repr = VrrpRepr {
            vrid: 51,
            priority: 100,
            max_adver_int: 100,
            addresses: Vec::new(),
        };
        repr.addresses
            .push(Ipv4Addr::new(192, 168, 1, 100))
            .unwrap();
        let mut buf = [0u8; 32];
        let n = repr.emit(&mut buf, src, MULTICAST_V4).unwrap();
        assert_eq!(n, 12);
        // Header bytes match the sample apart from the checksum.
        assert_eq!(&buf[..6], &SAMPLE[..6]);
        assert_eq!(&buf[8..12], &SAMPLE[8..12]);
        // Independent checksum: ones' complement sum of pseudo-header and message.
        let mut words: u32 = 0;
        for w in [0xc0a8u32, 0x010a, 0xe000, 0x0012, 112, 12] {
            words += w;
        }
        let mut zeroed = buf;
        zeroed[6] = 0;
        zeroed[7] = 0;
        for c in zeroed[..12].chunks(2) {
            words += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        while words > 0xffff {
            words = (words & 0xffff) + (words >> 16);
        }
        assert_eq!(
            u16::from_be_bytes([buf[6], buf[7]]),
            !u16::try_from(words).unwrap()
        );

        let p = VrrpPacket::new_checked(&buf[..n]).unwrap();
        assert_eq!(VrrpRepr::parse(&p, src, MULTICAST_V4).unwrap(), repr);
        // Wrong source (pseudo-header) fails.
        assert_eq!(
            VrrpRepr::parse(&p, Ipv4Addr::new(192, 168, 1, 11), MULTICAST_V4),
            Err(WireError::BadChecksum)
        );
        // Any flipped bit fails.
        for i in 0..n * 8 {
            let mut b = buf;
            b[i / 8] ^= 1 << (i % 8);
            let r = VrrpPacket::new_checked(&b[..n])
                .and_then(|p| VrrpRepr::parse(&p, src, MULTICAST_V4));
            assert!(r.is_err(), "bit {i}");
        }
    }

    #[test]
    fn truncated_and_bad() {
        assert_eq!(
            VrrpPacket::new_checked(&SAMPLE[..7]).err(),
            Some(WireError::Truncated)
        );
        assert_eq!(
            VrrpPacket::new_checked(&SAMPLE[..11]).err(),
            Some(WireError::Truncated)
        );
        let mut v2 = SAMPLE;
        v2[0] = 0x21;
        let p = VrrpPacket::new_checked(&v2[..]).unwrap();
        assert_eq!(
            VrrpRepr::parse(&p, Ipv4Addr::LOCALHOST, MULTICAST_V4),
            Err(WireError::BadVersion)
        );
        for len in 0..SAMPLE.len() {
            let _ = VrrpPacket::new_checked(&SAMPLE[..len])
                .map(|p| VrrpRepr::parse(&p, Ipv4Addr::LOCALHOST, MULTICAST_V4));
        }
    }
}
