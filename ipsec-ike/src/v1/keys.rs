//! IKEv1 key derivation (RFC 2409 §5, §5.5 and Appendix B), generic over the
//! [`Prf`] of a [`hal_traits::CryptoProvider`].
//!
//! | value | formula |
//! |---|---|
//! | SKEYID (pre-shared key) | `prf(psk, Ni_b \| Nr_b)` |
//! | SKEYID (signatures) | `prf(Ni_b \| Nr_b, g^xy)` |
//! | SKEYID_d | `prf(SKEYID, g^xy \| CKY-I \| CKY-R \| 0)` |
//! | SKEYID_a | `prf(SKEYID, SKEYID_d \| g^xy \| CKY-I \| CKY-R \| 1)` |
//! | SKEYID_e | `prf(SKEYID, SKEYID_a \| g^xy \| CKY-I \| CKY-R \| 2)` |
//! | Ka | SKEYID_e truncated, or `K1 \| K2 \| ...`, `K1 = prf(SKEYID_e, 0)`, `Kn = prf(SKEYID_e, Kn-1)` |
//! | phase-1 IV | `hash(g^xi \| g^xr)` truncated to the block |
//! | phase-2 / Informational IV | `hash(last phase-1 CBC block \| M-ID)` truncated |
//! | HASH_I | `prf(SKEYID, g^xi \| g^xr \| CKY-I \| CKY-R \| SAi_b \| IDii_b)` |
//! | HASH_R | `prf(SKEYID, g^xr \| g^xi \| CKY-R \| CKY-I \| SAi_b \| IDir_b)` |
//! | Quick Mode HASH(1) | `prf(SKEYID_a, M-ID \| payloads after HASH)` (also Informational) |
//! | Quick Mode HASH(2) | `prf(SKEYID_a, M-ID \| Ni_b \| payloads after HASH)` |
//! | Quick Mode HASH(3) | `prf(SKEYID_a, 0 \| M-ID \| Ni_b \| Nr_b)` |
//! | KEYMAT | `K1 \| K2 \| ...`, `K1 = prf(SKEYID_d, [g(qm)^xy \|] protocol \| SPI \| Ni_b \| Nr_b)`, `Kn = prf(SKEYID_d, Kn-1 \| ...)` |
//!
//! Aggressive Mode uses the same formulas. Secrets live in [`SecretBytes`] (zeroized,
//! never printed); hashes that travel on the wire are [`Digest`]s, compared in constant
//! time.

use core::fmt;
use core::marker::PhantomData;

use hal_traits::{CipherAlg, CryptoError, HashAlg, MAX_BLOCK_LEN, MAX_HASH_LEN, Prf, SecretBytes};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// A PRF output that is key material (SKEYID and its children).
pub type PrfSecret = SecretBytes<MAX_HASH_LEN>;

/// Longest phase-1 encryption key (AES-256).
pub const MAX_ENC_KEY_LEN: usize = 32;

/// Longest KEYMAT this module derives per SA direction (AES-256 + HMAC-SHA-512 fits).
pub const MAX_KEYMAT_LEN: usize = 128;

/// A phase-1 encryption key.
pub type EncryptionKey = SecretBytes<MAX_ENC_KEY_LEN>;

/// Key material for one IPsec SA (one SPI).
pub type Keymat = SecretBytes<MAX_KEYMAT_LEN>;

/// A hash that is sent or compared on the wire (HASH_I, HASH(1), ...): not secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    bytes: [u8; MAX_HASH_LEN],
    len: usize,
}

impl Digest {
    /// The digest bytes.
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }

    /// Length in bytes.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty (never, for a computed digest).
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Constant-time comparison with a received hash.
    #[must_use]
    pub fn ct_eq(&self, received: &[u8]) -> bool {
        received.len() == self.len && bool::from(self.as_slice().ct_eq(received))
    }

    /// Checks a received hash in constant time.
    ///
    /// # Errors
    /// [`CryptoError::AuthenticationFailed`] on mismatch (answer with
    /// AUTHENTICATION-FAILED or INVALID-HASH-INFORMATION, as the exchange dictates).
    pub fn verify(&self, received: &[u8]) -> Result<(), CryptoError> {
        if self.ct_eq(received) {
            Ok(())
        } else {
            Err(CryptoError::AuthenticationFailed)
        }
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Digest(")?;
        for b in self.as_slice() {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// An IKEv1 CBC IV: derived at the start of an exchange, then the last ciphertext block
/// of each message (RFC 2409 Appendix B).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Iv {
    bytes: [u8; MAX_BLOCK_LEN],
    len: usize,
}

impl Iv {
    /// An IV from explicit bytes (restoring HA state, say).
    ///
    /// # Errors
    /// [`CryptoError::InvalidLength`] if longer than [`MAX_BLOCK_LEN`] or empty.
    pub fn from_slice(b: &[u8]) -> Result<Self, CryptoError> {
        let mut iv = Self {
            bytes: [0; MAX_BLOCK_LEN],
            len: b.len(),
        };
        if b.is_empty() {
            return Err(CryptoError::InvalidLength);
        }
        iv.bytes
            .get_mut(..b.len())
            .ok_or(CryptoError::InvalidLength)?
            .copy_from_slice(b);
        Ok(iv)
    }

    /// The IV bytes (one cipher block).
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }

    /// The block length.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty (never).
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The IV for the next message of the exchange: the last block of `ciphertext`
    /// (the payload area of the message just sent or received).
    ///
    /// # Errors
    /// [`CryptoError::InvalidLength`] if `ciphertext` is shorter than a block or not a
    /// multiple of it.
    pub fn chain(&self, ciphertext: &[u8]) -> Result<Self, CryptoError> {
        if ciphertext.len() < self.len || ciphertext.len() % self.len.max(1) != 0 {
            return Err(CryptoError::InvalidLength);
        }
        Self::from_slice(ciphertext.get(ciphertext.len() - self.len..).unwrap_or(&[]))
    }
}

fn digest_of(out: &[u8; MAX_HASH_LEN], len: usize) -> Digest {
    Digest { bytes: *out, len }
}

fn truncated_iv(h: &[u8; MAX_HASH_LEN], len: usize, block_len: usize) -> Result<Iv, CryptoError> {
    if block_len == 0 || block_len > len || block_len > MAX_BLOCK_LEN {
        return Err(CryptoError::InvalidLength);
    }
    Iv::from_slice(h.get(..block_len).unwrap_or(&[]))
}

/// The phase-1 IV: `hash(g^xi | g^xr)` truncated to `block_len`.
///
/// # Errors
/// [`CryptoError::InvalidLength`] if the block is longer than the hash or than
/// [`MAX_BLOCK_LEN`]; provider errors.
pub fn phase1_iv<P: Prf>(
    hash: HashAlg,
    g_xi: &[u8],
    g_xr: &[u8],
    block_len: usize,
) -> Result<Iv, CryptoError> {
    let mut h = [0u8; MAX_HASH_LEN];
    let n = P::hash(hash, &[g_xi, g_xr], &mut h)?;
    truncated_iv(&h, n, block_len)
}

/// The IV of a Quick Mode or Informational exchange: `hash(last phase-1 CBC block |
/// M-ID)` truncated to the block of `last_phase1_block`.
///
/// # Errors
/// As [`phase1_iv`].
pub fn phase2_iv<P: Prf>(
    hash: HashAlg,
    last_phase1_block: &[u8],
    message_id: u32,
) -> Result<Iv, CryptoError> {
    let mut h = [0u8; MAX_HASH_LEN];
    let n = P::hash(
        hash,
        &[last_phase1_block, &message_id.to_be_bytes()],
        &mut h,
    )?;
    truncated_iv(&h, n, last_phase1_block.len())
}

fn prf_secret<P: Prf>(
    hash: HashAlg,
    key: &[u8],
    parts: &[&[u8]],
) -> Result<PrfSecret, CryptoError> {
    let mut out = [0u8; MAX_HASH_LEN];
    let r = P::new(hash, key).and_then(|p| p.compute(parts, &mut out));
    let s = r.and_then(|n| PrfSecret::from_slice(out.get(..n).unwrap_or(&[])));
    out.zeroize();
    s
}

fn prf_digest<P: Prf>(hash: HashAlg, key: &[u8], parts: &[&[u8]]) -> Result<Digest, CryptoError> {
    let mut out = [0u8; MAX_HASH_LEN];
    let n = P::new(hash, key)?.compute(parts, &mut out)?;
    Ok(digest_of(&out, n))
}

/// `SKEYID = prf(pre-shared-key, Ni_b | Nr_b)` (RFC 2409 §5).
///
/// # Errors
/// Provider errors.
pub fn skeyid_psk<P: Prf>(
    hash: HashAlg,
    psk: &[u8],
    ni_b: &[u8],
    nr_b: &[u8],
) -> Result<PrfSecret, CryptoError> {
    prf_secret::<P>(hash, psk, &[ni_b, nr_b])
}

/// `SKEYID = prf(Ni_b | Nr_b, g^xy)` for signature authentication (RFC 2409 §5).
///
/// # Errors
/// [`CryptoError::InvalidLength`] if the nonces together exceed 512 bytes; provider
/// errors.
pub fn skeyid_sig<P: Prf>(
    hash: HashAlg,
    ni_b: &[u8],
    nr_b: &[u8],
    g_xy: &[u8],
) -> Result<PrfSecret, CryptoError> {
    let mut key = [0u8; 512];
    let n = ni_b.len() + nr_b.len();
    let r = (|| {
        key.get_mut(..ni_b.len())
            .ok_or(CryptoError::InvalidLength)?
            .copy_from_slice(ni_b);
        key.get_mut(ni_b.len()..n)
            .ok_or(CryptoError::InvalidLength)?
            .copy_from_slice(nr_b);
        prf_secret::<P>(hash, key.get(..n).unwrap_or(&[]), &[g_xy])
    })();
    key.zeroize();
    r
}

/// The phase-1 key schedule: SKEYID and its three children.
pub struct Phase1Keys<P: Prf> {
    hash: HashAlg,
    skeyid: PrfSecret,
    skeyid_d: PrfSecret,
    skeyid_a: PrfSecret,
    skeyid_e: PrfSecret,
    _prf: PhantomData<fn() -> P>,
}

impl<P: Prf> fmt::Debug for Phase1Keys<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Phase1Keys")
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

impl<P: Prf> Phase1Keys<P> {
    /// Derives SKEYID_d, SKEYID_a and SKEYID_e from SKEYID, `g^xy` and the cookies.
    ///
    /// # Errors
    /// Provider errors.
    pub fn from_skeyid(
        hash: HashAlg,
        skeyid: PrfSecret,
        g_xy: &[u8],
        cky_i: &[u8; 8],
        cky_r: &[u8; 8],
    ) -> Result<Self, CryptoError> {
        let k = skeyid.expose();
        let skeyid_d = prf_secret::<P>(hash, k, &[g_xy, cky_i, cky_r, &[0]])?;
        let skeyid_a = prf_secret::<P>(hash, k, &[skeyid_d.expose(), g_xy, cky_i, cky_r, &[1]])?;
        let skeyid_e = prf_secret::<P>(hash, k, &[skeyid_a.expose(), g_xy, cky_i, cky_r, &[2]])?;
        Ok(Self {
            hash,
            skeyid,
            skeyid_d,
            skeyid_a,
            skeyid_e,
            _prf: PhantomData,
        })
    }

    /// The whole pre-shared-key schedule.
    ///
    /// # Errors
    /// Provider errors.
    pub fn from_psk(
        hash: HashAlg,
        psk: &[u8],
        ni_b: &[u8],
        nr_b: &[u8],
        g_xy: &[u8],
        cky_i: &[u8; 8],
        cky_r: &[u8; 8],
    ) -> Result<Self, CryptoError> {
        Self::from_skeyid(
            hash,
            skeyid_psk::<P>(hash, psk, ni_b, nr_b)?,
            g_xy,
            cky_i,
            cky_r,
        )
    }

    /// A schedule restored from its parts (HA import of an established IKE SA). SKEYID
    /// itself is only needed for HASH_I/HASH_R during phase 1 and may be empty.
    #[must_use]
    pub const fn from_parts(
        hash: HashAlg,
        skeyid: PrfSecret,
        skeyid_d: PrfSecret,
        skeyid_a: PrfSecret,
        skeyid_e: PrfSecret,
    ) -> Self {
        Self {
            hash,
            skeyid,
            skeyid_d,
            skeyid_a,
            skeyid_e,
            _prf: PhantomData,
        }
    }

    /// The negotiated hash (the PRF is HMAC of it).
    #[must_use]
    pub const fn hash_alg(&self) -> HashAlg {
        self.hash
    }

    /// SKEYID.
    #[must_use]
    pub const fn skeyid(&self) -> &PrfSecret {
        &self.skeyid
    }

    /// SKEYID_d: keys KEYMAT.
    #[must_use]
    pub const fn skeyid_d(&self) -> &PrfSecret {
        &self.skeyid_d
    }

    /// SKEYID_a: keys the phase-2 and Informational hashes.
    #[must_use]
    pub const fn skeyid_a(&self) -> &PrfSecret {
        &self.skeyid_a
    }

    /// SKEYID_e: the source of the phase-1 encryption key.
    #[must_use]
    pub const fn skeyid_e(&self) -> &PrfSecret {
        &self.skeyid_e
    }

    /// The phase-1 encryption key Ka for `cipher` (RFC 2409 Appendix B): SKEYID_e
    /// truncated, or expanded when it is too short.
    ///
    /// # Errors
    /// Provider errors.
    pub fn encryption_key(&self, cipher: CipherAlg) -> Result<EncryptionKey, CryptoError> {
        let need = cipher.key_len();
        let e = self.skeyid_e.expose();
        if e.len() >= need {
            return EncryptionKey::from_slice(e.get(..need).unwrap_or(&[]));
        }
        let prf = P::new(self.hash, e)?;
        let mut ka = [0u8; MAX_ENC_KEY_LEN + MAX_HASH_LEN];
        let mut k = [0u8; MAX_HASH_LEN];
        let r = (|| {
            let mut n = prf.compute(&[&[0]], &mut k)?;
            let mut have = 0;
            while have < need {
                let kn = k.get(..n).ok_or(CryptoError::InvalidLength)?;
                ka.get_mut(have..have + n)
                    .ok_or(CryptoError::InvalidLength)?
                    .copy_from_slice(kn);
                have += n;
                if have < need {
                    let mut prev = k;
                    let r = prf.compute(&[prev.get(..n).unwrap_or(&[])], &mut k);
                    prev.zeroize();
                    n = r?;
                }
            }
            EncryptionKey::from_slice(ka.get(..need).unwrap_or(&[]))
        })();
        ka.zeroize();
        k.zeroize();
        r
    }

    /// HASH_I = `prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b)`.
    ///
    /// # Errors
    /// Provider errors.
    pub fn hash_i(
        &self,
        g_xi: &[u8],
        g_xr: &[u8],
        cky_i: &[u8; 8],
        cky_r: &[u8; 8],
        sai_b: &[u8],
        idii_b: &[u8],
    ) -> Result<Digest, CryptoError> {
        prf_digest::<P>(
            self.hash,
            self.skeyid.expose(),
            &[g_xi, g_xr, cky_i, cky_r, sai_b, idii_b],
        )
    }

    /// HASH_R = `prf(SKEYID, g^xr | g^xi | CKY-R | CKY-I | SAi_b | IDir_b)`. Arguments
    /// are in initiator/responder order; the swap is done here.
    ///
    /// # Errors
    /// Provider errors.
    pub fn hash_r(
        &self,
        g_xi: &[u8],
        g_xr: &[u8],
        cky_i: &[u8; 8],
        cky_r: &[u8; 8],
        sai_b: &[u8],
        idir_b: &[u8],
    ) -> Result<Digest, CryptoError> {
        prf_digest::<P>(
            self.hash,
            self.skeyid.expose(),
            &[g_xr, g_xi, cky_r, cky_i, sai_b, idir_b],
        )
    }

    /// Quick Mode HASH(1) = `prf(SKEYID_a, M-ID | rest)`, `rest` being every payload after
    /// the HASH payload (generic headers included, padding excluded).
    ///
    /// # Errors
    /// Provider errors.
    pub fn quick_hash1(&self, message_id: u32, rest: &[u8]) -> Result<Digest, CryptoError> {
        prf_digest::<P>(
            self.hash,
            self.skeyid_a.expose(),
            &[&message_id.to_be_bytes(), rest],
        )
    }

    /// Quick Mode HASH(2) = `prf(SKEYID_a, M-ID | Ni_b | rest)`.
    ///
    /// # Errors
    /// Provider errors.
    pub fn quick_hash2(
        &self,
        message_id: u32,
        ni_b: &[u8],
        rest: &[u8],
    ) -> Result<Digest, CryptoError> {
        prf_digest::<P>(
            self.hash,
            self.skeyid_a.expose(),
            &[&message_id.to_be_bytes(), ni_b, rest],
        )
    }

    /// Quick Mode HASH(3) = `prf(SKEYID_a, 0 | M-ID | Ni_b | Nr_b)`.
    ///
    /// # Errors
    /// Provider errors.
    pub fn quick_hash3(
        &self,
        message_id: u32,
        ni_b: &[u8],
        nr_b: &[u8],
    ) -> Result<Digest, CryptoError> {
        prf_digest::<P>(
            self.hash,
            self.skeyid_a.expose(),
            &[&[0], &message_id.to_be_bytes(), ni_b, nr_b],
        )
    }

    /// Informational HASH(1) = `prf(SKEYID_a, M-ID | N/D payloads)` (RFC 2409 §5.7): the
    /// same rule as Quick Mode HASH(1). DPD uses it.
    ///
    /// # Errors
    /// Provider errors.
    pub fn informational_hash(
        &self,
        message_id: u32,
        payloads: &[u8],
    ) -> Result<Digest, CryptoError> {
        self.quick_hash1(message_id, payloads)
    }

    /// KEYMAT for the SA with `spi` (RFC 2409 §5.5): `len` bytes of
    /// `K1 | K2 | ...`, `K1 = prf(SKEYID_d, [g(qm)^xy |] protocol | SPI | Ni_b | Nr_b)`,
    /// `Kn = prf(SKEYID_d, Kn-1 | [g(qm)^xy |] protocol | SPI | Ni_b | Nr_b)`. The nonces
    /// are the Quick Mode ones; `g_qm_xy` is the PFS shared secret, if any.
    ///
    /// # Errors
    /// [`CryptoError::InvalidLength`] if `len` exceeds [`MAX_KEYMAT_LEN`]; provider errors.
    pub fn keymat(
        &self,
        g_qm_xy: Option<&[u8]>,
        protocol: u8,
        spi: &[u8],
        ni_b: &[u8],
        nr_b: &[u8],
        len: usize,
    ) -> Result<Keymat, CryptoError> {
        if len > MAX_KEYMAT_LEN {
            return Err(CryptoError::InvalidLength);
        }
        let prf = P::new(self.hash, self.skeyid_d.expose())?;
        let g = g_qm_xy.unwrap_or(&[]);
        let proto = [protocol];
        let mut out = [0u8; MAX_KEYMAT_LEN + MAX_HASH_LEN];
        let mut k = [0u8; MAX_HASH_LEN];
        let r = (|| {
            let mut n = prf.compute(&[g, &proto, spi, ni_b, nr_b], &mut k)?;
            let mut have = 0;
            loop {
                let kn = k.get(..n).ok_or(CryptoError::InvalidLength)?;
                out.get_mut(have..have + n)
                    .ok_or(CryptoError::InvalidLength)?
                    .copy_from_slice(kn);
                have += n;
                if have >= len {
                    break;
                }
                let mut prev = k;
                let r = prf.compute(
                    &[prev.get(..n).unwrap_or(&[]), g, &proto, spi, ni_b, nr_b],
                    &mut k,
                );
                prev.zeroize();
                n = r?;
            }
            Keymat::from_slice(out.get(..len).unwrap_or(&[]))
        })();
        out.zeroize();
        k.zeroize();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iv_chaining() {
        let iv = Iv::from_slice(&[1; 16]).unwrap();
        let ct: std::vec::Vec<u8> = (0u8..48).collect();
        assert_eq!(iv.chain(&ct).unwrap().as_slice(), &ct[32..]);
        assert_eq!(iv.chain(&ct[..47]), Err(CryptoError::InvalidLength));
        assert_eq!(iv.chain(&ct[..8]), Err(CryptoError::InvalidLength));
        assert_eq!(Iv::from_slice(&[]), Err(CryptoError::InvalidLength));
        assert_eq!(Iv::from_slice(&[0; 17]), Err(CryptoError::InvalidLength));
    }

    #[test]
    fn digest_compare() {
        let mut b = [0u8; MAX_HASH_LEN];
        b[..20].copy_from_slice(&[7; 20]);
        let d = digest_of(&b, 20);
        assert!(d.ct_eq(&[7; 20]));
        assert!(!d.ct_eq(&[7; 19]));
        assert!(!d.ct_eq(&[7; 21]));
        assert_eq!(d.verify(&[8; 20]), Err(CryptoError::AuthenticationFailed));
        assert_eq!(
            std::format!("{d:?}"),
            std::format!("Digest({})", "07".repeat(20))
        );
        assert!(truncated_iv(&b, 20, 16).is_ok());
        assert_eq!(truncated_iv(&b, 16, 17), Err(CryptoError::InvalidLength));
        assert_eq!(truncated_iv(&b, 20, 0), Err(CryptoError::InvalidLength));
    }
}
