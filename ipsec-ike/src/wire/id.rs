//! Identification payload (RFC 2408 §3.8) with the IPsec DOI's ID types, protocol and
//! port (RFC 2407 §4.6.2): phase-1 identities (IDii/IDir) and phase-2 client identities
//! (IDci/IDcr, the traffic selectors).
#![allow(clippy::indexing_slicing)] // every index is guarded by `check_len`

use core::net::{Ipv4Addr, Ipv6Addr};

use super::IkeWireError;
use super::consts::id_type;

/// Length of ID type, protocol ID and port.
const FIXED_LEN: usize = 4;

/// A zero-copy view of an Identification payload body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdPayload<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IdPayload<T> {
    /// Wraps a body without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps and checks a body.
    ///
    /// # Errors
    /// [`IkeWireError::InvalidIdInformation`] for fewer than 4 bytes.
    pub fn new_checked(buffer: T) -> Result<Self, IkeWireError> {
        let v = Self::new_unchecked(buffer);
        v.check_len()?;
        Ok(v)
    }

    /// Checks the fixed part.
    ///
    /// # Errors
    /// See [`IdPayload::new_checked`].
    pub fn check_len(&self) -> Result<(), IkeWireError> {
        if self.buffer.as_ref().len() < FIXED_LEN {
            Err(IkeWireError::InvalidIdInformation)
        } else {
            Ok(())
        }
    }

    /// ID type (see [`id_type`]).
    #[must_use]
    pub fn id_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// IP protocol ID (0 = any; 17 = UDP in phase 1 by many implementations).
    #[must_use]
    pub fn protocol_id(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    /// Port (0 = any).
    #[must_use]
    pub fn port(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[2], b[3]])
    }

    /// Identification data.
    #[must_use]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[FIXED_LEN..]
    }
}

/// Identification data, by ID type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity<'a> {
    /// ID_IPV4_ADDR.
    Ipv4Addr(Ipv4Addr),
    /// ID_FQDN.
    Fqdn(&'a [u8]),
    /// ID_USER_FQDN.
    UserFqdn(&'a [u8]),
    /// ID_IPV4_ADDR_SUBNET.
    Ipv4Subnet {
        /// Network address.
        addr: Ipv4Addr,
        /// Mask.
        mask: Ipv4Addr,
    },
    /// ID_IPV6_ADDR.
    Ipv6Addr(Ipv6Addr),
    /// ID_IPV6_ADDR_SUBNET.
    Ipv6Subnet {
        /// Network address.
        addr: Ipv6Addr,
        /// Mask.
        mask: Ipv6Addr,
    },
    /// ID_IPV4_ADDR_RANGE.
    Ipv4Range {
        /// First address.
        start: Ipv4Addr,
        /// Last address.
        end: Ipv4Addr,
    },
    /// ID_IPV6_ADDR_RANGE.
    Ipv6Range {
        /// First address.
        start: Ipv6Addr,
        /// Last address.
        end: Ipv6Addr,
    },
    /// ID_DER_ASN1_DN.
    DerAsn1Dn(&'a [u8]),
    /// ID_DER_ASN1_GN.
    DerAsn1Gn(&'a [u8]),
    /// ID_KEY_ID.
    KeyId(&'a [u8]),
    /// Any other ID type, kept raw.
    Other {
        /// ID type.
        id_type: u8,
        /// Data.
        data: &'a [u8],
    },
}

fn v4(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

fn v6(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    Ipv6Addr::from(a)
}

impl<'a> Identity<'a> {
    /// Decodes `data` of ID type `t`.
    ///
    /// # Errors
    /// [`IkeWireError::InvalidIdInformation`] if the length does not fit the type or a
    /// name is empty.
    pub fn parse(t: u8, data: &'a [u8]) -> Result<Self, IkeWireError> {
        let want = |n: usize| {
            if data.len() == n {
                Ok(())
            } else {
                Err(IkeWireError::InvalidIdInformation)
            }
        };
        let named = |f: fn(&'a [u8]) -> Self| {
            if data.is_empty() {
                Err(IkeWireError::InvalidIdInformation)
            } else {
                Ok(f(data))
            }
        };
        match t {
            id_type::IPV4_ADDR => want(4).map(|()| Self::Ipv4Addr(v4(data))),
            id_type::IPV4_ADDR_SUBNET => want(8).map(|()| Self::Ipv4Subnet {
                addr: v4(data),
                mask: v4(&data[4..]),
            }),
            id_type::IPV4_ADDR_RANGE => want(8).map(|()| Self::Ipv4Range {
                start: v4(data),
                end: v4(&data[4..]),
            }),
            id_type::IPV6_ADDR => want(16).map(|()| Self::Ipv6Addr(v6(data))),
            id_type::IPV6_ADDR_SUBNET => want(32).map(|()| Self::Ipv6Subnet {
                addr: v6(data),
                mask: v6(&data[16..]),
            }),
            id_type::IPV6_ADDR_RANGE => want(32).map(|()| Self::Ipv6Range {
                start: v6(data),
                end: v6(&data[16..]),
            }),
            id_type::FQDN => named(Self::Fqdn),
            id_type::USER_FQDN => named(Self::UserFqdn),
            id_type::DER_ASN1_DN => named(Self::DerAsn1Dn),
            id_type::DER_ASN1_GN => named(Self::DerAsn1Gn),
            id_type::KEY_ID => named(Self::KeyId),
            _ => Ok(Self::Other { id_type: t, data }),
        }
    }

    /// The ID type.
    #[must_use]
    pub const fn id_type(&self) -> u8 {
        match self {
            Self::Ipv4Addr(_) => id_type::IPV4_ADDR,
            Self::Fqdn(_) => id_type::FQDN,
            Self::UserFqdn(_) => id_type::USER_FQDN,
            Self::Ipv4Subnet { .. } => id_type::IPV4_ADDR_SUBNET,
            Self::Ipv6Addr(_) => id_type::IPV6_ADDR,
            Self::Ipv6Subnet { .. } => id_type::IPV6_ADDR_SUBNET,
            Self::Ipv4Range { .. } => id_type::IPV4_ADDR_RANGE,
            Self::Ipv6Range { .. } => id_type::IPV6_ADDR_RANGE,
            Self::DerAsn1Dn(_) => id_type::DER_ASN1_DN,
            Self::DerAsn1Gn(_) => id_type::DER_ASN1_GN,
            Self::KeyId(_) => id_type::KEY_ID,
            Self::Other { id_type, .. } => *id_type,
        }
    }

    /// Encoded data length.
    #[must_use]
    pub const fn data_len(&self) -> usize {
        match self {
            Self::Ipv4Addr(_) => 4,
            Self::Ipv4Subnet { .. } | Self::Ipv4Range { .. } => 8,
            Self::Ipv6Addr(_) => 16,
            Self::Ipv6Subnet { .. } | Self::Ipv6Range { .. } => 32,
            Self::Fqdn(d)
            | Self::UserFqdn(d)
            | Self::DerAsn1Dn(d)
            | Self::DerAsn1Gn(d)
            | Self::KeyId(d) => d.len(),
            Self::Other { data, .. } => data.len(),
        }
    }

    fn emit(&self, out: &mut [u8]) {
        match self {
            Self::Ipv4Addr(a) => out.copy_from_slice(&a.octets()),
            Self::Ipv4Subnet { addr: a, mask: b } | Self::Ipv4Range { start: a, end: b } => {
                out[..4].copy_from_slice(&a.octets());
                out[4..].copy_from_slice(&b.octets());
            }
            Self::Ipv6Addr(a) => out.copy_from_slice(&a.octets()),
            Self::Ipv6Subnet { addr: a, mask: b } | Self::Ipv6Range { start: a, end: b } => {
                out[..16].copy_from_slice(&a.octets());
                out[16..].copy_from_slice(&b.octets());
            }
            Self::Fqdn(d)
            | Self::UserFqdn(d)
            | Self::DerAsn1Dn(d)
            | Self::DerAsn1Gn(d)
            | Self::KeyId(d) => {
                out.copy_from_slice(d);
            }
            Self::Other { data, .. } => out.copy_from_slice(data),
        }
    }
}

/// An Identification payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRepr<'a> {
    /// IP protocol (0 = any).
    pub protocol_id: u8,
    /// Port (0 = any).
    pub port: u16,
    /// The identity.
    pub identity: Identity<'a>,
}

impl<'a> IdRepr<'a> {
    /// An identity with protocol and port "any", as phase 1 usually sends it.
    #[must_use]
    pub const fn new(identity: Identity<'a>) -> Self {
        Self {
            protocol_id: 0,
            port: 0,
            identity,
        }
    }

    /// Parses a body.
    ///
    /// # Errors
    /// [`IkeWireError::InvalidIdInformation`].
    pub fn parse(body: &'a [u8]) -> Result<Self, IkeWireError> {
        let v = IdPayload::new_checked(body)?;
        Ok(Self {
            protocol_id: v.protocol_id(),
            port: v.port(),
            identity: Identity::parse(v.id_type(), &body[FIXED_LEN..])?,
        })
    }

    /// Body length.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        FIXED_LEN + self.identity.data_len()
    }

    /// Writes the body into `buf[..self.buffer_len()]`.
    ///
    /// # Errors
    /// [`IkeWireError::BufferTooSmall`].
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), IkeWireError> {
        let out = buf
            .get_mut(..self.buffer_len())
            .ok_or(IkeWireError::BufferTooSmall)?;
        out[0] = self.identity.id_type();
        out[1] = self.protocol_id;
        out[2..4].copy_from_slice(&self.port.to_be_bytes());
        self.identity.emit(&mut out[FIXED_LEN..]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase1_ipv4() {
        // IDii_b of the RUB-NDS exchange; the aggressive-mode capture's UDP/any variant.
        let b = [0x01, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x03, 0x01];
        let r = IdRepr::parse(&b).unwrap();
        assert_eq!(r.identity, Identity::Ipv4Addr(Ipv4Addr::new(10, 0, 3, 1)));
        let mut out = [0u8; 8];
        r.emit(&mut out).unwrap();
        assert_eq!(out, b);
        let b = [0x01, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x0c, 0x02];
        assert_eq!(IdRepr::parse(&b).unwrap().protocol_id, 17);
    }

    #[test]
    fn phase2_subnet_and_errors() {
        let b = [4, 0, 0, 0, 192, 168, 1, 0, 255, 255, 255, 0];
        let r = IdRepr::parse(&b).unwrap();
        assert_eq!(
            r.identity,
            Identity::Ipv4Subnet {
                addr: Ipv4Addr::new(192, 168, 1, 0),
                mask: Ipv4Addr::new(255, 255, 255, 0)
            }
        );
        let mut out = [0u8; 12];
        r.emit(&mut out).unwrap();
        assert_eq!(out, b);
        assert_eq!(
            IdRepr::parse(&b[..11]),
            Err(IkeWireError::InvalidIdInformation)
        );
        assert_eq!(
            IdRepr::parse(&[2, 0, 0, 0]),
            Err(IkeWireError::InvalidIdInformation)
        );
        assert_eq!(
            IdRepr::parse(&[1, 0, 0]),
            Err(IkeWireError::InvalidIdInformation)
        );
        let v6 = [6u8; 36];
        let mut v6 = v6;
        v6[0] = 6;
        let r = IdRepr::parse(&v6).unwrap();
        assert!(matches!(r.identity, Identity::Ipv6Subnet { .. }));
        let r = IdRepr::parse(b"\x02\x00\x00\x00vpn.example").unwrap();
        assert_eq!(r.identity, Identity::Fqdn(b"vpn.example"));
    }
}
