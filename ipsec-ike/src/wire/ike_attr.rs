//! Phase-1 (ISAKMP SA) attribute types and values (RFC 2409 Appendix A, RFC 3602 §5 for
//! AES), and their mapping to the [`hal_traits`] algorithm enums.

use hal_traits::{CipherAlg, DhGroup, HashAlg};

use super::IkeWireError;
use super::attribute::{AttributeRepr, Attributes};

/// Attribute types.
pub mod attr {
    /// Encryption Algorithm (B).
    pub const ENCRYPTION: u16 = 1;
    /// Hash Algorithm (B).
    pub const HASH: u16 = 2;
    /// Authentication Method (B).
    pub const AUTH_METHOD: u16 = 3;
    /// Group Description (B).
    pub const GROUP_DESCRIPTION: u16 = 4;
    /// Group Type (B).
    pub const GROUP_TYPE: u16 = 5;
    /// Life Type (B).
    pub const LIFE_TYPE: u16 = 11;
    /// Life Duration (V; often sent as TV when it fits).
    pub const LIFE_DURATION: u16 = 12;
    /// PRF (B).
    pub const PRF: u16 = 13;
    /// Key Length in bits (B).
    pub const KEY_LENGTH: u16 = 14;
}

/// Encryption Algorithm values.
pub mod encryption {
    /// DES-CBC.
    pub const DES_CBC: u16 = 1;
    /// 3DES-CBC.
    pub const TRIPLE_DES_CBC: u16 = 5;
    /// AES-CBC (RFC 3602), with a Key Length attribute.
    pub const AES_CBC: u16 = 7;
}

/// Hash Algorithm values.
pub mod hash {
    /// MD5.
    pub const MD5: u16 = 1;
    /// SHA-1.
    pub const SHA: u16 = 2;
    /// SHA2-256 (RFC 4868).
    pub const SHA2_256: u16 = 4;
    /// SHA2-384.
    pub const SHA2_384: u16 = 5;
    /// SHA2-512.
    pub const SHA2_512: u16 = 6;
}

/// Authentication Method values.
pub mod auth_method {
    /// Pre-shared key.
    pub const PRE_SHARED_KEY: u16 = 1;
    /// DSS signatures.
    pub const DSS_SIGNATURES: u16 = 2;
    /// RSA signatures.
    pub const RSA_SIGNATURES: u16 = 3;
    /// Encryption with RSA.
    pub const RSA_ENCRYPTION: u16 = 4;
    /// Revised encryption with RSA.
    pub const RSA_REVISED_ENCRYPTION: u16 = 5;
    /// XAUTH initiator with pre-shared key (draft-beaulieu-ike-xauth).
    pub const XAUTH_INIT_PRE_SHARED: u16 = 65001;
}

/// Life Type values (phase 1 and IPsec DOI share them).
pub mod life_type {
    /// Seconds.
    pub const SECONDS: u16 = 1;
    /// Kilobytes.
    pub const KILOBYTES: u16 = 2;
}

/// The phase-1 cipher for an Encryption Algorithm value and optional Key Length (bits).
/// AES needs the key length (RFC 3602 §5.3); DES and 3DES must not carry another one.
#[must_use]
pub const fn cipher_from_attr(enc: u16, key_bits: Option<u16>) -> Option<CipherAlg> {
    match (enc, key_bits) {
        (encryption::DES_CBC, None | Some(64)) => Some(CipherAlg::DesCbc),
        (encryption::TRIPLE_DES_CBC, None | Some(192)) => Some(CipherAlg::TripleDesCbc),
        (encryption::AES_CBC, Some(128)) => Some(CipherAlg::Aes128Cbc),
        (encryption::AES_CBC, Some(192)) => Some(CipherAlg::Aes192Cbc),
        (encryption::AES_CBC, Some(256)) => Some(CipherAlg::Aes256Cbc),
        _ => None,
    }
}

/// The Encryption Algorithm value and Key Length attribute (bits, AES only) for `alg`,
/// or `None` for an algorithm IKEv1 has no number for.
#[must_use]
pub const fn cipher_to_attr(alg: CipherAlg) -> Option<(u16, Option<u16>)> {
    Some(match alg {
        CipherAlg::DesCbc => (encryption::DES_CBC, None),
        CipherAlg::TripleDesCbc => (encryption::TRIPLE_DES_CBC, None),
        CipherAlg::Aes128Cbc => (encryption::AES_CBC, Some(128)),
        CipherAlg::Aes192Cbc => (encryption::AES_CBC, Some(192)),
        CipherAlg::Aes256Cbc => (encryption::AES_CBC, Some(256)),
        _ => return None,
    })
}

/// The hash for a Hash Algorithm value.
#[must_use]
pub const fn hash_from_attr(v: u16) -> Option<HashAlg> {
    match v {
        hash::MD5 => Some(HashAlg::Md5),
        hash::SHA => Some(HashAlg::Sha1),
        hash::SHA2_256 => Some(HashAlg::Sha256),
        hash::SHA2_384 => Some(HashAlg::Sha384),
        hash::SHA2_512 => Some(HashAlg::Sha512),
        _ => None,
    }
}

/// The Hash Algorithm value for `alg`, or `None` for a hash IKEv1 has no number for.
#[must_use]
pub const fn hash_to_attr(alg: HashAlg) -> Option<u16> {
    Some(match alg {
        HashAlg::Md5 => hash::MD5,
        HashAlg::Sha1 => hash::SHA,
        HashAlg::Sha256 => hash::SHA2_256,
        HashAlg::Sha384 => hash::SHA2_384,
        HashAlg::Sha512 => hash::SHA2_512,
        _ => return None,
    })
}

/// The group for a Group Description value.
#[must_use]
pub const fn group_from_attr(v: u16) -> Option<DhGroup> {
    DhGroup::from_number(v)
}

/// The Group Description value for `g`.
#[must_use]
pub const fn group_to_attr(g: DhGroup) -> u16 {
    g.number()
}

/// A phase-1 transform decoded into this library's algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Phase1Transform {
    /// Encryption.
    pub cipher: CipherAlg,
    /// Hash (and PRF = HMAC of it).
    pub hash: HashAlg,
    /// Authentication Method value (see [`auth_method`]).
    pub auth_method: u16,
    /// Diffie-Hellman group.
    pub group: DhGroup,
    /// Lifetime in seconds, if given.
    pub life_seconds: Option<u64>,
    /// Lifetime in kilobytes, if given.
    pub life_kilobytes: Option<u64>,
}

impl Phase1Transform {
    /// Decodes KEY_IKE transform attributes. Life Type/Life Duration pairs are matched in
    /// order (RFC 2407 §4.5).
    ///
    /// # Errors
    /// [`IkeWireError::AttributesNotSupported`] for a missing mandatory attribute, an
    /// algorithm this library does not know, a PRF attribute (none is defined) or a life
    /// duration without a type.
    pub fn from_attributes(attrs: &Attributes<'_>) -> Result<Self, IkeWireError> {
        let unsupported = IkeWireError::AttributesNotSupported;
        let (mut enc, mut key_bits, mut hash, mut auth, mut group) = (None, None, None, None, None);
        let (mut life_type, mut life_seconds, mut life_kilobytes) = (None, None, None);
        for a in attrs.iter() {
            let v16 = a.as_u16();
            match a.attr_type {
                attr::ENCRYPTION => enc = v16,
                attr::KEY_LENGTH => key_bits = v16,
                attr::HASH => hash = v16,
                attr::AUTH_METHOD => auth = v16,
                attr::GROUP_DESCRIPTION => group = v16,
                attr::LIFE_TYPE => life_type = Some(v16.ok_or(unsupported)?),
                attr::LIFE_DURATION => match life_type.take() {
                    Some(life_type::SECONDS) => life_seconds = Some(a.as_u64().ok_or(unsupported)?),
                    Some(life_type::KILOBYTES) => {
                        life_kilobytes = Some(a.as_u64().ok_or(unsupported)?)
                    }
                    _ => return Err(unsupported),
                },
                _ => return Err(unsupported),
            }
        }
        Ok(Self {
            cipher: cipher_from_attr(enc.ok_or(unsupported)?, key_bits).ok_or(unsupported)?,
            hash: hash_from_attr(hash.ok_or(unsupported)?).ok_or(unsupported)?,
            auth_method: auth.ok_or(unsupported)?,
            group: group_from_attr(group.ok_or(unsupported)?).ok_or(unsupported)?,
            life_seconds,
            life_kilobytes,
        })
    }

    /// Encodes the transform's attributes into `out` (in the order strongSwan and the
    /// RUB-NDS tool use) and returns the filled part.
    ///
    /// # Errors
    /// [`IkeWireError::AttributesNotSupported`] for an algorithm IKEv1 cannot express.
    pub fn to_attributes<'o>(
        &self,
        out: &'o mut [AttributeRepr<'static>; 9],
    ) -> Result<&'o [AttributeRepr<'static>], IkeWireError> {
        let (enc, key_bits) =
            cipher_to_attr(self.cipher).ok_or(IkeWireError::AttributesNotSupported)?;
        let hash = hash_to_attr(self.hash).ok_or(IkeWireError::AttributesNotSupported)?;
        let mut n = 0;
        let mut push = |a: AttributeRepr<'static>| {
            if let Some(slot) = out.get_mut(n) {
                *slot = a;
                n += 1;
            }
        };
        push(AttributeRepr::basic(attr::ENCRYPTION, enc));
        if let Some(k) = key_bits {
            push(AttributeRepr::basic(attr::KEY_LENGTH, k));
        }
        push(AttributeRepr::basic(attr::HASH, hash));
        push(AttributeRepr::basic(
            attr::GROUP_DESCRIPTION,
            group_to_attr(self.group),
        ));
        push(AttributeRepr::basic(attr::AUTH_METHOD, self.auth_method));
        if let Some(s) = self.life_seconds {
            push(AttributeRepr::basic(attr::LIFE_TYPE, life_type::SECONDS));
            push(AttributeRepr::integer(attr::LIFE_DURATION, s));
        }
        if let Some(k) = self.life_kilobytes {
            push(AttributeRepr::basic(attr::LIFE_TYPE, life_type::KILOBYTES));
            push(AttributeRepr::integer(attr::LIFE_DURATION, k));
        }
        Ok(out.get(..n).unwrap_or(&[]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_round_trip() {
        for c in [
            CipherAlg::DesCbc,
            CipherAlg::TripleDesCbc,
            CipherAlg::Aes128Cbc,
            CipherAlg::Aes192Cbc,
            CipherAlg::Aes256Cbc,
        ] {
            let (e, k) = cipher_to_attr(c).unwrap();
            assert_eq!(cipher_from_attr(e, k), Some(c));
        }
        assert_eq!(cipher_from_attr(encryption::AES_CBC, None), None);
        assert_eq!(cipher_from_attr(encryption::AES_CBC, Some(100)), None);
        for h in [
            HashAlg::Md5,
            HashAlg::Sha1,
            HashAlg::Sha256,
            HashAlg::Sha384,
            HashAlg::Sha512,
        ] {
            assert_eq!(hash_from_attr(hash_to_attr(h).unwrap()), Some(h));
        }
        assert_eq!(hash_from_attr(3), None);
        assert_eq!(
            group_from_attr(group_to_attr(DhGroup::Modp2048)),
            Some(DhGroup::Modp2048)
        );
    }

    #[test]
    fn rubnds_phase1_transform() {
        let enc = [
            0x80, 0x01, 0x00, 0x07, 0x80, 0x0e, 0x00, 0x80, 0x80, 0x02, 0x00, 0x02, 0x80, 0x04,
            0x00, 0x02, 0x80, 0x03, 0x00, 0x01, 0x80, 0x0b, 0x00, 0x01, 0x80, 0x0c, 0x70, 0x80,
        ];
        let t = Phase1Transform::from_attributes(&Attributes::parse(&enc).unwrap()).unwrap();
        assert_eq!(t.cipher, CipherAlg::Aes128Cbc);
        assert_eq!(t.hash, HashAlg::Sha1);
        assert_eq!(t.group, DhGroup::Modp1024);
        assert_eq!(t.auth_method, auth_method::PRE_SHARED_KEY);
        assert_eq!(t.life_seconds, Some(28800));
        let mut store = [AttributeRepr::basic(0, 0); 9];
        let attrs = t.to_attributes(&mut store).unwrap();
        let again = Phase1Transform::from_attributes(&Attributes::from_slice(attrs)).unwrap();
        assert_eq!(again, t);
        // Life duration without a life type.
        let bad = [0x80, 0x0c, 0x70, 0x80];
        assert_eq!(
            Phase1Transform::from_attributes(&Attributes::parse(&bad).unwrap()),
            Err(IkeWireError::AttributesNotSupported)
        );
    }
}
