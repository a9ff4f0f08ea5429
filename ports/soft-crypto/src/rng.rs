//! The operating system's random source (feature `std`).
//!
//! Firmware brings its own [`hal_traits::SecureRng`] (a TRNG peripheral); this crate
//! deliberately has no software fallback.

#[cfg(feature = "std")]
pub use os::{BufferedOsRng, OsRng};

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

    /// [`OsRng`] read in 4 KiB blocks: one system call per 256 CBC IVs instead of one per
    /// packet (which costs a third of the ESP seal time at 1400 bytes, see the benchmarks).
    /// Every byte still comes straight from the operating system; bytes handed out are
    /// wiped from the buffer, so a later memory disclosure cannot reveal nonces or DH
    /// private values already used.
    pub struct BufferedOsRng {
        buf: [u8; 4096],
        pos: usize,
    }

    impl BufferedOsRng {
        /// An empty buffer; the first call fills it.
        #[must_use]
        pub const fn new() -> Self {
            Self {
                buf: [0; 4096],
                pos: 4096,
            }
        }
    }

    impl Default for BufferedOsRng {
        fn default() -> Self {
            Self::new()
        }
    }

    impl core::fmt::Debug for BufferedOsRng {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            write!(
                f,
                "BufferedOsRng({} bytes buffered)",
                self.buf.len() - self.pos
            )
        }
    }

    impl Drop for BufferedOsRng {
        fn drop(&mut self) {
            zeroize::Zeroize::zeroize(&mut self.buf);
        }
    }

    impl SecureRng for BufferedOsRng {
        fn fill_bytes(&mut self, mut dest: &mut [u8]) -> Result<(), CryptoError> {
            // Requests larger than the buffer go straight to the OS.
            if dest.len() > self.buf.len() {
                return OsRng.fill_bytes(dest);
            }
            while !dest.is_empty() {
                if self.pos >= self.buf.len() {
                    getrandom::fill(&mut self.buf).map_err(|_| CryptoError::Rng)?;
                    self.pos = 0;
                }
                let avail = self.buf.get_mut(self.pos..).unwrap_or(&mut []);
                let n = avail.len().min(dest.len());
                let (now, rest) = core::mem::take(&mut dest).split_at_mut(n);
                let src = avail.get_mut(..n).unwrap_or(&mut []);
                now.copy_from_slice(src);
                zeroize::Zeroize::zeroize(src);
                self.pos += n;
                dest = rest;
            }
            Ok(())
        }
    }

    #[cfg(test)]
    mod tests {
        extern crate std;
        use std::vec;

        use super::*;

        #[test]
        fn buffered_fills_across_refills_and_differs() {
            let mut r = BufferedOsRng::new();
            let mut seen = std::collections::HashSet::new();
            for len in [16usize, 8, 4000, 200, 16, 5000, 0, 1] {
                let mut v = vec![0u8; len];
                r.fill_bytes(&mut v).unwrap();
                if len >= 16 {
                    assert!(v.iter().any(|&b| b != 0));
                    assert!(seen.insert(v), "repeated output");
                }
            }
        }

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
