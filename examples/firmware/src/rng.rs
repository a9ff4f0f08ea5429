//! DEMO RNG, NOT SECURE.
//!
//! QEMU's mps2-an386 has no TRNG, so this firmware brings a deterministic generator: an
//! HMAC-SHA-256 DRBG in counter mode over the provider's [`SoftPrf`], keyed by a constant
//! that is compiled into the image. Every run produces the same cookies, nonces, SPIs and
//! Diffie-Hellman private values, which anyone with the binary can recompute. That is
//! what a reproducible demo wants and exactly what a product must never do: a real
//! firmware implements [`SecureRng`] over its TRNG peripheral (or seeds a DRBG from it).

use hal_traits::{CryptoError, HashAlg, Prf, SecureRng};
use ipsec_soft_crypto::SoftPrf;
use zeroize::Zeroize;

/// The compiled-in seed. Public by construction: demo only.
const DEMO_SEED: &[u8; 32] = b"ipsec-firmware demo seed, public";

/// Deterministic HMAC-DRBG-style generator: block `i` is
/// `HMAC-SHA-256(DEMO_SEED, "demo-drbg" | label | i)`. Demo RNG, not secure.
pub struct DemoRng {
    prf: SoftPrf,
    label: &'static [u8],
    counter: u64,
}

impl DemoRng {
    /// A generator for one node; `label` separates the nodes' streams.
    ///
    /// # Errors
    /// If the provider refuses HMAC-SHA-256.
    pub fn new(label: &'static [u8]) -> Result<Self, CryptoError> {
        Ok(Self {
            prf: SoftPrf::new(HashAlg::Sha256, DEMO_SEED)?,
            label,
            counter: 0,
        })
    }
}

impl SecureRng for DemoRng {
    fn fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), CryptoError> {
        let mut block = [0u8; 32];
        for chunk in dest.chunks_mut(block.len()) {
            self.counter = self.counter.wrapping_add(1);
            let n = self.prf.compute(
                &[b"demo-drbg", self.label, &self.counter.to_be_bytes()],
                &mut block,
            )?;
            let src = block.get(..chunk.len().min(n)).ok_or(CryptoError::Rng)?;
            if src.len() != chunk.len() {
                return Err(CryptoError::Rng);
            }
            chunk.copy_from_slice(src);
        }
        block.zeroize();
        Ok(())
    }
}
