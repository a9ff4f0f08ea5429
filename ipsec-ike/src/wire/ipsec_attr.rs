//! IPsec DOI SA attributes and transform IDs (RFC 2407 §4.4.4 and §4.5, RFC 3947 §5.1
//! for the UDP encapsulation modes, RFC 4106 §8 for AES-GCM), and their mapping to the
//! [`hal_traits`] algorithm enums.

use hal_traits::{AeadAlg, CipherAlg, DhGroup, MacAlg};

use super::IkeWireError;
use super::attribute::{AttributeRepr, Attributes};
use super::ike_attr::life_type;

/// IPsec DOI attribute types.
pub mod attr {
    /// SA Life Type (B).
    pub const SA_LIFE_TYPE: u16 = 1;
    /// SA Life Duration (V).
    pub const SA_LIFE_DURATION: u16 = 2;
    /// Group Description (B): PFS group.
    pub const GROUP_DESCRIPTION: u16 = 3;
    /// Encapsulation Mode (B).
    pub const ENCAPSULATION_MODE: u16 = 4;
    /// Authentication Algorithm (B).
    pub const AUTH_ALGORITHM: u16 = 5;
    /// Key Length in bits (B).
    pub const KEY_LENGTH: u16 = 6;
    /// Key Rounds (B).
    pub const KEY_ROUNDS: u16 = 7;
}

/// Encapsulation Mode values.
pub mod encapsulation {
    /// Tunnel.
    pub const TUNNEL: u16 = 1;
    /// Transport.
    pub const TRANSPORT: u16 = 2;
    /// UDP-Encapsulated-Tunnel (RFC 3947).
    pub const UDP_TUNNEL: u16 = 3;
    /// UDP-Encapsulated-Transport (RFC 3947).
    pub const UDP_TRANSPORT: u16 = 4;
    /// UDP-Encapsulated-Tunnel as the NAT-T drafts numbered it.
    pub const UDP_TUNNEL_DRAFT: u16 = 61443;
    /// UDP-Encapsulated-Transport as the NAT-T drafts numbered it.
    pub const UDP_TRANSPORT_DRAFT: u16 = 61444;
}

/// Authentication Algorithm values.
pub mod auth_algorithm {
    /// HMAC-MD5.
    pub const HMAC_MD5: u16 = 1;
    /// HMAC-SHA (SHA-1).
    pub const HMAC_SHA: u16 = 2;
    /// HMAC-SHA2-256 (RFC 4868).
    pub const HMAC_SHA2_256: u16 = 5;
    /// HMAC-SHA2-384.
    pub const HMAC_SHA2_384: u16 = 6;
    /// HMAC-SHA2-512.
    pub const HMAC_SHA2_512: u16 = 7;
}

/// ESP transform IDs (RFC 2407 §4.4.4, RFC 4106 §8.4).
pub mod esp_transform {
    /// ESP_DES.
    pub const DES: u8 = 2;
    /// ESP_3DES.
    pub const TRIPLE_DES: u8 = 3;
    /// ESP_NULL.
    pub const NULL: u8 = 11;
    /// ESP_AES (CBC, RFC 3602).
    pub const AES_CBC: u8 = 12;
    /// AES-GCM with an 8-byte ICV.
    pub const AES_GCM_8: u8 = 18;
    /// AES-GCM with a 12-byte ICV.
    pub const AES_GCM_12: u8 = 19;
    /// AES-GCM with a 16-byte ICV.
    pub const AES_GCM_16: u8 = 20;
}

/// AH transform IDs (RFC 2407 §4.4.3).
pub mod ah_transform {
    /// AH_MD5.
    pub const MD5: u8 = 2;
    /// AH_SHA.
    pub const SHA: u8 = 3;
    /// AH_SHA2-256.
    pub const SHA2_256: u8 = 5;
}

/// What an ESP transform encrypts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EspCipher {
    /// ESP_NULL: integrity only.
    Null,
    /// A CBC cipher, with a separate Authentication Algorithm.
    Cbc(CipherAlg),
    /// AES-GCM (no separate Authentication Algorithm).
    Aead(AeadAlg),
}

impl EspCipher {
    /// Key bytes this cipher takes from KEYMAT (GCM includes the 4-byte salt, RFC 4106
    /// §8.1).
    #[must_use]
    pub const fn keymat_len(self) -> usize {
        match self {
            Self::Null => 0,
            Self::Cbc(c) => c.key_len(),
            Self::Aead(a) => a.key_len() + 4,
        }
    }
}

/// The ESP cipher for a transform ID and optional Key Length attribute (bits). AES
/// needs the key length (RFC 3602 §5.3, RFC 4106 §8.4).
#[must_use]
pub const fn esp_cipher_from(transform_id: u8, key_bits: Option<u16>) -> Option<EspCipher> {
    use esp_transform as t;
    match (transform_id, key_bits) {
        (t::NULL, None) => Some(EspCipher::Null),
        (t::DES, None | Some(64)) => Some(EspCipher::Cbc(CipherAlg::DesCbc)),
        (t::TRIPLE_DES, None | Some(192)) => Some(EspCipher::Cbc(CipherAlg::TripleDesCbc)),
        (t::AES_CBC, Some(128)) => Some(EspCipher::Cbc(CipherAlg::Aes128Cbc)),
        (t::AES_CBC, Some(192)) => Some(EspCipher::Cbc(CipherAlg::Aes192Cbc)),
        (t::AES_CBC, Some(256)) => Some(EspCipher::Cbc(CipherAlg::Aes256Cbc)),
        (t::AES_GCM_8 | t::AES_GCM_12 | t::AES_GCM_16, Some(bits)) => match gcm(transform_id, bits)
        {
            Some(a) => Some(EspCipher::Aead(a)),
            None => None,
        },
        _ => None,
    }
}

const fn gcm(icv_id: u8, bits: u16) -> Option<AeadAlg> {
    let base = match bits {
        128 => AeadAlg::Aes128Gcm16,
        192 => AeadAlg::Aes192Gcm16,
        256 => AeadAlg::Aes256Gcm16,
        _ => return None,
    };
    base.with_icv_len(match icv_id {
        esp_transform::AES_GCM_8 => 8,
        esp_transform::AES_GCM_12 => 12,
        _ => 16,
    })
}

/// The ESP transform ID and Key Length attribute (bits, AES only) for `c`, or `None`
/// for a cipher the IPsec DOI has no number for.
#[must_use]
pub const fn esp_cipher_to(c: EspCipher) -> Option<(u8, Option<u16>)> {
    use esp_transform as t;
    Some(match c {
        EspCipher::Null => (t::NULL, None),
        EspCipher::Cbc(CipherAlg::DesCbc) => (t::DES, None),
        EspCipher::Cbc(CipherAlg::TripleDesCbc) => (t::TRIPLE_DES, None),
        EspCipher::Cbc(CipherAlg::Aes128Cbc) => (t::AES_CBC, Some(128)),
        EspCipher::Cbc(CipherAlg::Aes192Cbc) => (t::AES_CBC, Some(192)),
        EspCipher::Cbc(CipherAlg::Aes256Cbc) => (t::AES_CBC, Some(256)),
        EspCipher::Aead(a) => {
            let id = match a.icv_len() {
                8 => t::AES_GCM_8,
                12 => t::AES_GCM_12,
                _ => t::AES_GCM_16,
            };
            // key_len() is 16, 24 or 32, so the product fits.
            let bits = match a.key_len() {
                16 => 128,
                24 => 192,
                _ => 256,
            };
            (id, Some(bits))
        }
        EspCipher::Cbc(_) => return None,
    })
}

/// The ESP integrity algorithm for an Authentication Algorithm value.
#[must_use]
pub const fn mac_from_attr(v: u16) -> Option<MacAlg> {
    match v {
        auth_algorithm::HMAC_MD5 => Some(MacAlg::HmacMd5_96),
        auth_algorithm::HMAC_SHA => Some(MacAlg::HmacSha1_96),
        auth_algorithm::HMAC_SHA2_256 => Some(MacAlg::HmacSha256_128),
        _ => None,
    }
}

/// The Authentication Algorithm value for `m`, or `None` for one the IPsec DOI has no
/// number for.
#[must_use]
pub const fn mac_to_attr(m: MacAlg) -> Option<u16> {
    Some(match m {
        MacAlg::HmacMd5_96 => auth_algorithm::HMAC_MD5,
        MacAlg::HmacSha1_96 => auth_algorithm::HMAC_SHA,
        MacAlg::HmacSha256_128 => auth_algorithm::HMAC_SHA2_256,
        _ => return None,
    })
}

/// Encapsulation mode, independent of the NAT-T numbering it was negotiated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EncapsulationMode {
    /// Tunnel mode.
    Tunnel,
    /// Transport mode.
    Transport,
    /// Tunnel mode in UDP (RFC 3948).
    UdpTunnel,
    /// Transport mode in UDP (RFC 3948).
    UdpTransport,
}

impl EncapsulationMode {
    /// Decodes RFC 3947 and draft values alike.
    #[must_use]
    pub const fn from_attr(v: u16) -> Option<Self> {
        use encapsulation as e;
        match v {
            e::TUNNEL => Some(Self::Tunnel),
            e::TRANSPORT => Some(Self::Transport),
            e::UDP_TUNNEL | e::UDP_TUNNEL_DRAFT => Some(Self::UdpTunnel),
            e::UDP_TRANSPORT | e::UDP_TRANSPORT_DRAFT => Some(Self::UdpTransport),
            _ => None,
        }
    }

    /// Encodes, with the draft numbers (61443/61444) when `draft` is set.
    #[must_use]
    pub const fn to_attr(self, draft: bool) -> u16 {
        use encapsulation as e;
        match (self, draft) {
            (Self::Tunnel, _) => e::TUNNEL,
            (Self::Transport, _) => e::TRANSPORT,
            (Self::UdpTunnel, false) => e::UDP_TUNNEL,
            (Self::UdpTunnel, true) => e::UDP_TUNNEL_DRAFT,
            (Self::UdpTransport, false) => e::UDP_TRANSPORT,
            (Self::UdpTransport, true) => e::UDP_TRANSPORT_DRAFT,
        }
    }

    /// Whether ESP travels in UDP.
    #[must_use]
    pub const fn is_udp(self) -> bool {
        matches!(self, Self::UdpTunnel | Self::UdpTransport)
    }

    /// Whether this is a tunnel mode.
    #[must_use]
    pub const fn is_tunnel(self) -> bool {
        matches!(self, Self::Tunnel | Self::UdpTunnel)
    }
}

/// An ESP transform decoded into this library's algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EspTransform {
    /// Encryption.
    pub cipher: EspCipher,
    /// Integrity (`None` for AES-GCM).
    pub mac: Option<MacAlg>,
    /// Encapsulation mode (tunnel if absent, RFC 2407 §4.5 leaves it host-specific).
    pub mode: EncapsulationMode,
    /// PFS group, if any.
    pub group: Option<DhGroup>,
    /// Lifetime in seconds, if given.
    pub life_seconds: Option<u64>,
    /// Lifetime in kilobytes, if given.
    pub life_kilobytes: Option<u64>,
}

impl EspTransform {
    /// KEYMAT bytes this SA needs per direction: encryption key (and GCM salt), then
    /// integrity key (RFC 2409 §5.5 and RFC 4106 §8.1).
    #[must_use]
    pub const fn keymat_len(&self) -> usize {
        self.cipher.keymat_len()
            + match self.mac {
                Some(m) => m.key_len(),
                None => 0,
            }
    }

    /// Decodes an ESP transform.
    ///
    /// # Errors
    /// [`IkeWireError::InvalidTransformId`] for an unknown cipher,
    /// [`IkeWireError::AttributesNotSupported`] for unknown attributes or values, an
    /// integrity algorithm with GCM, or none with a CBC cipher or NULL.
    pub fn from_attributes(transform_id: u8, attrs: &Attributes<'_>) -> Result<Self, IkeWireError> {
        let unsupported = IkeWireError::AttributesNotSupported;
        let (mut key_bits, mut mac, mut mode, mut group) = (None, None, None, None);
        let (mut life_type, mut life_seconds, mut life_kilobytes) = (None, None, None);
        for a in attrs.iter() {
            let v16 = a.as_u16().ok_or(unsupported);
            match a.attr_type {
                attr::KEY_LENGTH => key_bits = Some(v16?),
                attr::AUTH_ALGORITHM => mac = Some(mac_from_attr(v16?).ok_or(unsupported)?),
                attr::ENCAPSULATION_MODE => {
                    mode = Some(EncapsulationMode::from_attr(v16?).ok_or(unsupported)?)
                }
                attr::GROUP_DESCRIPTION => {
                    group = Some(DhGroup::from_number(v16?).ok_or(unsupported)?)
                }
                attr::SA_LIFE_TYPE => life_type = Some(v16?),
                attr::SA_LIFE_DURATION => match life_type.take() {
                    Some(life_type::SECONDS) => life_seconds = Some(a.as_u64().ok_or(unsupported)?),
                    Some(life_type::KILOBYTES) => {
                        life_kilobytes = Some(a.as_u64().ok_or(unsupported)?)
                    }
                    _ => return Err(unsupported),
                },
                _ => return Err(unsupported),
            }
        }
        let cipher = match esp_cipher_from(transform_id, key_bits) {
            Some(c) => c,
            None if esp_cipher_from(transform_id, Some(128)).is_some() => return Err(unsupported),
            None => return Err(IkeWireError::InvalidTransformId),
        };
        match (cipher, mac) {
            (EspCipher::Aead(_), Some(_)) | (EspCipher::Cbc(_) | EspCipher::Null, None) => {
                return Err(unsupported);
            }
            _ => {}
        }
        Ok(Self {
            cipher,
            mac,
            mode: mode.unwrap_or(EncapsulationMode::Tunnel),
            group,
            life_seconds,
            life_kilobytes,
        })
    }

    /// Encodes the transform: returns the transform ID and the filled attributes.
    /// `draft` selects the draft numbers for UDP encapsulation modes.
    ///
    /// # Errors
    /// [`IkeWireError::AttributesNotSupported`] for an algorithm the DOI cannot express.
    pub fn to_attributes<'o>(
        &self,
        draft: bool,
        out: &'o mut [AttributeRepr<'static>; 9],
    ) -> Result<(u8, &'o [AttributeRepr<'static>]), IkeWireError> {
        let unsupported = IkeWireError::AttributesNotSupported;
        let (id, key_bits) = esp_cipher_to(self.cipher).ok_or(unsupported)?;
        let mac = match self.mac {
            Some(m) => Some(mac_to_attr(m).ok_or(unsupported)?),
            None => None,
        };
        let mut n = 0;
        let mut push = |a: AttributeRepr<'static>| {
            if let Some(slot) = out.get_mut(n) {
                *slot = a;
                n += 1;
            }
        };
        if let Some(s) = self.life_seconds {
            push(AttributeRepr::basic(attr::SA_LIFE_TYPE, life_type::SECONDS));
            push(AttributeRepr::integer(attr::SA_LIFE_DURATION, s));
        }
        if let Some(k) = self.life_kilobytes {
            push(AttributeRepr::basic(
                attr::SA_LIFE_TYPE,
                life_type::KILOBYTES,
            ));
            push(AttributeRepr::integer(attr::SA_LIFE_DURATION, k));
        }
        if let Some(g) = self.group {
            push(AttributeRepr::basic(attr::GROUP_DESCRIPTION, g.number()));
        }
        push(AttributeRepr::basic(
            attr::ENCAPSULATION_MODE,
            self.mode.to_attr(draft),
        ));
        if let Some(m) = mac {
            push(AttributeRepr::basic(attr::AUTH_ALGORITHM, m));
        }
        if let Some(k) = key_bits {
            push(AttributeRepr::basic(attr::KEY_LENGTH, k));
        }
        Ok((id, out.get(..n).unwrap_or(&[])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_mappings() {
        for c in [
            EspCipher::Null,
            EspCipher::Cbc(CipherAlg::DesCbc),
            EspCipher::Cbc(CipherAlg::TripleDesCbc),
            EspCipher::Cbc(CipherAlg::Aes128Cbc),
            EspCipher::Cbc(CipherAlg::Aes256Cbc),
            EspCipher::Aead(AeadAlg::Aes128Gcm16),
            EspCipher::Aead(AeadAlg::Aes256Gcm8),
            EspCipher::Aead(AeadAlg::Aes192Gcm12),
        ] {
            let (id, k) = esp_cipher_to(c).unwrap();
            assert_eq!(esp_cipher_from(id, k), Some(c), "{c:?}");
        }
        assert_eq!(
            esp_cipher_to(EspCipher::Aead(AeadAlg::Aes128Gcm8)),
            Some((18, Some(128)))
        );
        assert_eq!(esp_cipher_from(esp_transform::AES_CBC, None), None);
        for m in [
            MacAlg::HmacMd5_96,
            MacAlg::HmacSha1_96,
            MacAlg::HmacSha256_128,
        ] {
            assert_eq!(mac_from_attr(mac_to_attr(m).unwrap()), Some(m));
        }
        for (v, m) in [
            (3, EncapsulationMode::UdpTunnel),
            (61444, EncapsulationMode::UdpTransport),
        ] {
            assert_eq!(EncapsulationMode::from_attr(v), Some(m));
        }
        assert_eq!(EncapsulationMode::UdpTunnel.to_attr(true), 61443);
    }

    #[test]
    fn rubnds_quick_mode_transform() {
        // QM1 transform: ESP_AES; life seconds 3600, tunnel, HMAC-SHA, key length 128.
        let enc = [
            0x80, 0x04, 0x00, 0x01, 0x80, 0x01, 0x00, 0x01, 0x80, 0x02, 0x0e, 0x10, 0x80, 0x05,
            0x00, 0x02, 0x80, 0x06, 0x00, 0x80,
        ];
        let t = EspTransform::from_attributes(12, &Attributes::parse(&enc).unwrap()).unwrap();
        assert_eq!(t.cipher, EspCipher::Cbc(CipherAlg::Aes128Cbc));
        assert_eq!(t.mac, Some(MacAlg::HmacSha1_96));
        assert_eq!(t.mode, EncapsulationMode::Tunnel);
        assert_eq!(t.life_seconds, Some(3600));
        assert_eq!(t.keymat_len(), 36);
        let mut store = [AttributeRepr::basic(0, 0); 9];
        let (id, attrs) = t.to_attributes(false, &mut store).unwrap();
        assert_eq!(
            EspTransform::from_attributes(id, &Attributes::from_slice(attrs)),
            Ok(t)
        );
        assert_eq!(
            EspTransform::from_attributes(99, &Attributes::from_slice(attrs)),
            Err(IkeWireError::InvalidTransformId)
        );
    }
}
