use core::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::CryptoError;

/// Up to `N` bytes of key material: zeroized on drop, never printed.
///
/// `Debug` shows only the length. There is deliberately no `Clone`-free way to copy the
/// bytes out other than [`SecretBytes::expose`], so every use of raw key bytes is visible
/// in the code.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> SecretBytes<N> {
    /// An empty secret.
    #[must_use]
    pub const fn empty() -> Self {
        Self {
            bytes: [0; N],
            len: 0,
        }
    }

    /// Copies `src` into a new secret.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeyLength`] if `src` is longer than `N`.
    pub fn from_slice(src: &[u8]) -> Result<Self, CryptoError> {
        let mut s = Self::empty();
        let dst = s
            .bytes
            .get_mut(..src.len())
            .ok_or(CryptoError::InvalidKeyLength)?;
        dst.copy_from_slice(src);
        s.len = src.len();
        Ok(s)
    }

    /// The key bytes. Call only to hand them to a cipher.
    #[must_use]
    pub fn expose(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }

    /// Length in bytes.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the secret holds no bytes.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<const N: usize> fmt::Debug for SecretBytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes({} bytes, redacted)", self.len)
    }
}

#[cfg(feature = "defmt")]
impl<const N: usize> defmt::Format for SecretBytes<N> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "SecretBytes({=usize} bytes, redacted)", self.len);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    #[test]
    fn debug_never_shows_bytes() {
        let s = SecretBytes::<32>::from_slice(&[0xab; 20]).unwrap();
        let d = format!("{s:?}");
        assert!(!d.to_lowercase().contains("ab"), "{d}");
        assert!(d.contains("20 bytes"));
    }

    #[test]
    fn too_long_is_an_error() {
        assert_eq!(
            SecretBytes::<4>::from_slice(&[1; 5]).err(),
            Some(CryptoError::InvalidKeyLength)
        );
        assert_eq!(
            SecretBytes::<4>::from_slice(&[1; 4]).unwrap().expose(),
            &[1; 4]
        );
    }

    #[test]
    fn zeroize_clears() {
        let mut s = SecretBytes::<8>::from_slice(&[7; 8]).unwrap();
        s.zeroize();
        assert!(s.is_empty());
        assert_eq!(s.expose(), &[] as &[u8]);
    }
}
