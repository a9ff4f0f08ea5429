//! Algorithm identifiers and their fixed sizes.
//!
//! These are this library's own names, independent of any wire encoding: the IKEv1
//! attribute numbers and ESP transform IDs live in `ipsec-ike`, next to the codec.

/// Block ciphers used in CBC mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum CipherAlg {
    /// DES-CBC (RFC 2405). Legacy: 56-bit key.
    DesCbc,
    /// Triple-DES EDE3-CBC (RFC 2451). Legacy: 64-bit block.
    TripleDesCbc,
    /// AES-128-CBC (RFC 3602).
    Aes128Cbc,
    /// AES-192-CBC (RFC 3602).
    Aes192Cbc,
    /// AES-256-CBC (RFC 3602).
    Aes256Cbc,
}

impl CipherAlg {
    /// Key length in bytes.
    #[must_use]
    pub const fn key_len(self) -> usize {
        match self {
            Self::DesCbc => 8,
            Self::TripleDesCbc | Self::Aes192Cbc => 24,
            Self::Aes128Cbc => 16,
            Self::Aes256Cbc => 32,
        }
    }

    /// Block length in bytes, which is also the IV length.
    #[must_use]
    pub const fn block_len(self) -> usize {
        match self {
            Self::DesCbc | Self::TripleDesCbc => 8,
            Self::Aes128Cbc | Self::Aes192Cbc | Self::Aes256Cbc => 16,
        }
    }

    /// Supported only to talk to old equipment; never a default.
    #[must_use]
    pub const fn is_legacy(self) -> bool {
        matches!(self, Self::DesCbc | Self::TripleDesCbc)
    }
}

/// AES-GCM for ESP (RFC 4106), with the ICV length it is negotiated with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum AeadAlg {
    /// AES-128-GCM, 8-byte ICV.
    Aes128Gcm8,
    /// AES-128-GCM, 12-byte ICV.
    Aes128Gcm12,
    /// AES-128-GCM, 16-byte ICV.
    Aes128Gcm16,
    /// AES-192-GCM, 8-byte ICV.
    Aes192Gcm8,
    /// AES-192-GCM, 12-byte ICV.
    Aes192Gcm12,
    /// AES-192-GCM, 16-byte ICV.
    Aes192Gcm16,
    /// AES-256-GCM, 8-byte ICV.
    Aes256Gcm8,
    /// AES-256-GCM, 12-byte ICV.
    Aes256Gcm12,
    /// AES-256-GCM, 16-byte ICV.
    Aes256Gcm16,
}

impl AeadAlg {
    /// AES key length in bytes (without the 4-byte RFC 4106 salt).
    #[must_use]
    pub const fn key_len(self) -> usize {
        match self {
            Self::Aes128Gcm8 | Self::Aes128Gcm12 | Self::Aes128Gcm16 => 16,
            Self::Aes192Gcm8 | Self::Aes192Gcm12 | Self::Aes192Gcm16 => 24,
            Self::Aes256Gcm8 | Self::Aes256Gcm12 | Self::Aes256Gcm16 => 32,
        }
    }

    /// ICV (tag) length in bytes.
    #[must_use]
    pub const fn icv_len(self) -> usize {
        match self {
            Self::Aes128Gcm8 | Self::Aes192Gcm8 | Self::Aes256Gcm8 => 8,
            Self::Aes128Gcm12 | Self::Aes192Gcm12 | Self::Aes256Gcm12 => 12,
            Self::Aes128Gcm16 | Self::Aes192Gcm16 | Self::Aes256Gcm16 => 16,
        }
    }

    /// The same key size with another ICV length, if `icv_len` is 8, 12 or 16.
    #[must_use]
    pub const fn with_icv_len(self, icv_len: usize) -> Option<Self> {
        let by_key = match self.key_len() {
            16 => [Self::Aes128Gcm8, Self::Aes128Gcm12, Self::Aes128Gcm16],
            24 => [Self::Aes192Gcm8, Self::Aes192Gcm12, Self::Aes192Gcm16],
            _ => [Self::Aes256Gcm8, Self::Aes256Gcm12, Self::Aes256Gcm16],
        };
        match icv_len {
            8 => Some(by_key[0]),
            12 => Some(by_key[1]),
            16 => Some(by_key[2]),
            _ => None,
        }
    }
}

/// Truncated HMACs used as ESP integrity algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum MacAlg {
    /// HMAC-MD5-96 (RFC 2403). Legacy.
    HmacMd5_96,
    /// HMAC-SHA1-96 (RFC 2404).
    HmacSha1_96,
    /// HMAC-SHA-256-128 (RFC 4868).
    HmacSha256_128,
}

impl MacAlg {
    /// Key length in bytes as negotiated by IKE (the hash output length).
    #[must_use]
    pub const fn key_len(self) -> usize {
        match self {
            Self::HmacMd5_96 => 16,
            Self::HmacSha1_96 => 20,
            Self::HmacSha256_128 => 32,
        }
    }

    /// ICV length in bytes.
    #[must_use]
    pub const fn icv_len(self) -> usize {
        match self {
            Self::HmacMd5_96 | Self::HmacSha1_96 => 12,
            Self::HmacSha256_128 => 16,
        }
    }

    /// The underlying hash.
    #[must_use]
    pub const fn hash(self) -> HashAlg {
        match self {
            Self::HmacMd5_96 => HashAlg::Md5,
            Self::HmacSha1_96 => HashAlg::Sha1,
            Self::HmacSha256_128 => HashAlg::Sha256,
        }
    }

    /// Supported only to talk to old equipment; never a default.
    #[must_use]
    pub const fn is_legacy(self) -> bool {
        matches!(self, Self::HmacMd5_96)
    }
}

/// Hash functions for IKE's PRF (HMAC-hash) and plain hashing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum HashAlg {
    /// MD5. Legacy.
    Md5,
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl HashAlg {
    /// Digest length in bytes.
    #[must_use]
    pub const fn output_len(self) -> usize {
        match self {
            Self::Md5 => 16,
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// Supported only to talk to old equipment; never a default.
    #[must_use]
    pub const fn is_legacy(self) -> bool {
        matches!(self, Self::Md5)
    }
}

/// Diffie-Hellman groups (IKEv1 group numbers in the comments).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DhGroup {
    /// Group 1, 768-bit MODP (RFC 2409 §6.1). Legacy.
    Modp768,
    /// Group 2, 1024-bit MODP (RFC 2409 §6.2).
    Modp1024,
    /// Group 5, 1536-bit MODP (RFC 3526 §2).
    Modp1536,
    /// Group 14, 2048-bit MODP (RFC 3526 §3).
    Modp2048,
    /// Group 15, 3072-bit MODP (RFC 3526 §4).
    Modp3072,
}

impl DhGroup {
    /// IANA / IKEv1 group number.
    #[must_use]
    pub const fn number(self) -> u16 {
        match self {
            Self::Modp768 => 1,
            Self::Modp1024 => 2,
            Self::Modp1536 => 5,
            Self::Modp2048 => 14,
            Self::Modp3072 => 15,
        }
    }

    /// The group with IANA number `n`, if this library knows it.
    #[must_use]
    pub const fn from_number(n: u16) -> Option<Self> {
        match n {
            1 => Some(Self::Modp768),
            2 => Some(Self::Modp1024),
            5 => Some(Self::Modp1536),
            14 => Some(Self::Modp2048),
            15 => Some(Self::Modp3072),
            _ => None,
        }
    }

    /// Length in bytes of public values and shared secrets.
    #[must_use]
    #[allow(clippy::len_without_is_empty)] // a size of the group's values, never empty
    pub const fn len(self) -> usize {
        match self {
            Self::Modp768 => 96,
            Self::Modp1024 => 128,
            Self::Modp1536 => 192,
            Self::Modp2048 => 256,
            Self::Modp3072 => 384,
        }
    }

    /// Supported only to talk to old equipment; never a default.
    #[must_use]
    pub const fn is_legacy(self) -> bool {
        matches!(self, Self::Modp768)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcm_icv_variants_round_trip() {
        for alg in [
            AeadAlg::Aes128Gcm16,
            AeadAlg::Aes192Gcm8,
            AeadAlg::Aes256Gcm12,
        ] {
            for icv in [8, 12, 16] {
                let other = alg.with_icv_len(icv).unwrap();
                assert_eq!(other.icv_len(), icv);
                assert_eq!(other.key_len(), alg.key_len());
            }
            assert_eq!(alg.with_icv_len(10), None);
        }
    }

    #[test]
    fn dh_group_numbers_round_trip() {
        for g in [
            DhGroup::Modp768,
            DhGroup::Modp1024,
            DhGroup::Modp1536,
            DhGroup::Modp2048,
            DhGroup::Modp3072,
        ] {
            assert_eq!(DhGroup::from_number(g.number()), Some(g));
            assert!(g.len() <= crate::MAX_DH_LEN);
        }
        assert_eq!(DhGroup::from_number(3), None);
    }
}
