//! The operating system's random source (feature `std`).
//!
//! Firmware brings its own [`hal_traits::SecureRng`] (a TRNG peripheral); this crate
//! deliberately has no software fallback.

#[cfg(feature = "std")]
pub use os::OsRng;

#[cfg(feature = "std")]
mod os {
    use hal_traits::{CryptoError, SecureRng};

    /// Randomness from the operating system (`getrandom`: `getrandom(2)`, `/dev/urandom`,
    /// `BCryptGenRandom`, ...). Stateless, so it can be created wherever one is needed.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct OsRng;

    impl SecureRng for OsRng {
        fn fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), CryptoError> {
            getrandom::fill(dest).map_err(|_| CryptoError::Rng)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn fills_and_differs() {
            let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
            OsRng.fill_bytes(&mut a).unwrap();
            OsRng.fill_bytes(&mut b).unwrap();
            assert_ne!(a, b);
            OsRng.fill_bytes(&mut []).unwrap();
        }
    }
}
