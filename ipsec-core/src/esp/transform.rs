use hal_traits::{AeadAlg, CipherAlg, MacAlg};

use super::EspError;

/// Length of the ESP header: SPI and sequence number (RFC 4303 §2).
pub const ESP_HEADER_LEN: usize = 8;
/// Length of the ESP trailer's fixed part: pad length and next header.
pub const ESP_TRAILER_LEN: usize = 2;
/// Explicit IV length of AES-GCM in ESP (RFC 4106 §3.1).
pub const GCM_IV_LEN: usize = 8;
/// Salt length of AES-GCM keying material (RFC 4106 §8.1).
pub const GCM_SALT_LEN: usize = 4;

/// The confidentiality part of an ESP transform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Encryption {
    /// ESP_NULL (RFC 2410): integrity only.
    Null,
    /// A CBC block cipher with an explicit random IV per packet (RFC 2405, 2451, 3602).
    Cbc(CipherAlg),
    /// AES-GCM (RFC 4106): combined mode, no separate integrity algorithm.
    Gcm(AeadAlg),
}

impl Encryption {
    /// Length of the explicit IV carried in every packet.
    #[must_use]
    pub const fn iv_len(self) -> usize {
        match self {
            Self::Null => 0,
            Self::Cbc(c) => c.block_len(),
            Self::Gcm(_) => GCM_IV_LEN,
        }
    }

    /// The payload, padding, pad length and next header must end on a multiple of this
    /// (the cipher block, or 4 bytes: RFC 4303 §2.4).
    #[must_use]
    pub const fn align(self) -> usize {
        match self {
            Self::Null | Self::Gcm(_) => 4,
            Self::Cbc(c) => c.block_len(),
        }
    }

    /// Length of the keying material: the cipher key, plus the 4-byte salt for GCM.
    #[must_use]
    pub const fn keymat_len(self) -> usize {
        match self {
            Self::Null => 0,
            Self::Cbc(c) => c.key_len(),
            Self::Gcm(a) => a.key_len() + GCM_SALT_LEN,
        }
    }
}

/// An ESP transform: encryption plus, unless it is an AEAD, an integrity algorithm
/// (`crypto ipsec transform-set T esp-aes esp-sha-hmac`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Transform {
    /// Confidentiality.
    pub enc: Encryption,
    /// Integrity; must be `None` for GCM and `Some` for NULL encryption.
    pub auth: Option<MacAlg>,
}

impl Transform {
    /// Checks the combination: an AEAD takes no separate MAC, and NULL encryption without
    /// integrity would be no protection at all (RFC 4303 §3.2).
    ///
    /// # Errors
    /// [`EspError::InvalidConfig`].
    pub const fn validate(&self) -> Result<(), EspError> {
        match (self.enc, self.auth) {
            (Encryption::Gcm(_), Some(_)) | (Encryption::Null, None) => {
                Err(EspError::InvalidConfig)
            }
            _ => Ok(()),
        }
    }

    /// Explicit IV length.
    #[must_use]
    pub const fn iv_len(&self) -> usize {
        self.enc.iv_len()
    }

    /// ICV length (the MAC's truncation, or the GCM tag).
    #[must_use]
    pub const fn icv_len(&self) -> usize {
        match (self.enc, self.auth) {
            (Encryption::Gcm(a), _) => a.icv_len(),
            (_, Some(m)) => m.icv_len(),
            (_, None) => 0,
        }
    }

    /// Length of the padded encrypted part for `payload_len` bytes of payload.
    #[must_use]
    pub const fn padded_len(&self, payload_len: usize) -> usize {
        let align = self.enc.align();
        let raw = payload_len.saturating_add(ESP_TRAILER_LEN);
        raw.saturating_add((align - raw % align) % align)
    }

    /// Length of the whole ESP packet (header to ICV) carrying `payload_len` bytes.
    #[must_use]
    pub const fn sealed_len(&self, payload_len: usize) -> usize {
        ESP_HEADER_LEN
            .saturating_add(self.iv_len())
            .saturating_add(self.padded_len(payload_len))
            .saturating_add(self.icv_len())
    }

    /// The largest payload whose ESP packet fits in `esp_len` bytes, or 0.
    #[must_use]
    pub const fn max_payload(&self, esp_len: usize) -> usize {
        let fixed = ESP_HEADER_LEN + self.iv_len() + self.icv_len();
        if esp_len < fixed {
            return 0;
        }
        let room = esp_len - fixed;
        let aligned = room - room % self.enc.align();
        aligned.saturating_sub(ESP_TRAILER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_len_examples() {
        // 3DES + SHA1: 8 header + 8 IV + pad to 8 + 12 ICV.
        let t = Transform {
            enc: Encryption::Cbc(CipherAlg::TripleDesCbc),
            auth: Some(MacAlg::HmacSha1_96),
        };
        assert_eq!(t.sealed_len(84), 8 + 8 + 88 + 12);
        assert_eq!(t.sealed_len(86), 8 + 8 + 88 + 12);
        assert_eq!(t.sealed_len(87), 8 + 8 + 96 + 12);
        // AES-GCM-16: 8 header + 8 IV + pad to 4 + 16 ICV.
        let g = Transform {
            enc: Encryption::Gcm(AeadAlg::Aes128Gcm16),
            auth: None,
        };
        assert_eq!(g.sealed_len(84), 8 + 8 + 88 + 16);
        assert_eq!(g.sealed_len(85), 8 + 8 + 88 + 16);
        assert_eq!(g.sealed_len(87), 8 + 8 + 92 + 16);
    }

    #[test]
    fn max_payload_inverts_sealed_len() {
        let ts = [
            Transform {
                enc: Encryption::Cbc(CipherAlg::Aes128Cbc),
                auth: Some(MacAlg::HmacSha1_96),
            },
            Transform {
                enc: Encryption::Cbc(CipherAlg::DesCbc),
                auth: Some(MacAlg::HmacMd5_96),
            },
            Transform {
                enc: Encryption::Gcm(AeadAlg::Aes256Gcm8),
                auth: None,
            },
            Transform {
                enc: Encryption::Null,
                auth: Some(MacAlg::HmacSha256_128),
            },
        ];
        for t in ts {
            for esp_len in 0..600 {
                let p = t.max_payload(esp_len);
                if p > 0 {
                    assert!(t.sealed_len(p) <= esp_len, "{t:?} {esp_len}");
                    assert!(
                        t.sealed_len(p + 1) > esp_len || t.sealed_len(p + 1) == t.sealed_len(p)
                    );
                }
            }
        }
    }

    #[test]
    fn invalid_combinations() {
        assert!(
            Transform {
                enc: Encryption::Null,
                auth: None
            }
            .validate()
            .is_err()
        );
        assert!(
            Transform {
                enc: Encryption::Gcm(AeadAlg::Aes128Gcm16),
                auth: Some(MacAlg::HmacSha1_96)
            }
            .validate()
            .is_err()
        );
        assert!(
            Transform {
                enc: Encryption::Cbc(CipherAlg::Aes128Cbc),
                auth: None
            }
            .validate()
            .is_ok()
        );
    }
}
