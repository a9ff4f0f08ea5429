//! NAT Original Address payload (RFC 3947 §5.2; payload type 21, or 131 in the drafts):
//! sent in Quick Mode for transport mode behind a NAT.
#![allow(clippy::indexing_slicing)] // every index is guarded by a length check

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::IkeWireError;
use super::consts::id_type;

/// A zero-copy view of a NAT-OA payload body: ID type, 3 reserved bytes, address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatOaPayload<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> NatOaPayload<T> {
    /// Wraps a body without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps and checks a body.
    ///
    /// # Errors
    /// [`IkeWireError::Malformed`] unless it is an IPv4 (8 bytes) or IPv6 (20 bytes) one.
    pub fn new_checked(buffer: T) -> Result<Self, IkeWireError> {
        let v = Self::new_unchecked(buffer);
        v.check_len()?;
        Ok(v)
    }

    /// Checks the ID type against the length.
    ///
    /// # Errors
    /// See [`NatOaPayload::new_checked`].
    pub fn check_len(&self) -> Result<(), IkeWireError> {
        match self.buffer.as_ref() {
            [id_type::IPV4_ADDR, _, _, _, _, _, _, _] => Ok(()),
            [id_type::IPV6_ADDR, rest @ ..] if rest.len() == 19 => Ok(()),
            _ => Err(IkeWireError::Malformed),
        }
    }

    /// The original address.
    #[must_use]
    pub fn addr(&self) -> IpAddr {
        let b = self.buffer.as_ref();
        if b[0] == id_type::IPV4_ADDR {
            IpAddr::V4(Ipv4Addr::new(b[4], b[5], b[6], b[7]))
        } else {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[4..20]);
            IpAddr::V6(Ipv6Addr::from(a))
        }
    }
}

/// A NAT-OA payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatOaRepr {
    /// The original address.
    pub addr: IpAddr,
    /// Send as payload type 131 (drafts) instead of 21.
    pub draft: bool,
}

impl NatOaRepr {
    /// Parses a body.
    ///
    /// # Errors
    /// [`IkeWireError::Malformed`].
    pub fn parse(body: &[u8]) -> Result<Self, IkeWireError> {
        Ok(Self {
            addr: NatOaPayload::new_checked(body)?.addr(),
            draft: false,
        })
    }

    /// Body length.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        match self.addr {
            IpAddr::V4(_) => 8,
            IpAddr::V6(_) => 20,
        }
    }

    /// Writes the body into `buf[..self.buffer_len()]`.
    ///
    /// # Errors
    /// [`IkeWireError::BufferTooSmall`].
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), IkeWireError> {
        let out = buf
            .get_mut(..self.buffer_len())
            .ok_or(IkeWireError::BufferTooSmall)?;
        out[1..4].fill(0);
        match self.addr {
            IpAddr::V4(a) => {
                out[0] = id_type::IPV4_ADDR;
                out[4..].copy_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                out[0] = id_type::IPV6_ADDR;
                out[4..].copy_from_slice(&a.octets());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_v6() {
        let r = NatOaRepr {
            addr: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
            draft: false,
        };
        let mut out = [0u8; 8];
        r.emit(&mut out).unwrap();
        assert_eq!(out, [1, 0, 0, 0, 10, 1, 2, 3]);
        assert_eq!(NatOaRepr::parse(&out), Ok(r));
        let r6 = NatOaRepr {
            addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
            draft: false,
        };
        let mut out6 = [0u8; 20];
        r6.emit(&mut out6).unwrap();
        assert_eq!(NatOaRepr::parse(&out6), Ok(r6));
        assert_eq!(NatOaRepr::parse(&out6[..19]), Err(IkeWireError::Malformed));
        assert_eq!(
            NatOaRepr::parse(&[5, 0, 0, 0, 1, 2, 3, 4]),
            Err(IkeWireError::Malformed)
        );
    }
}
