//! The crypto *engine* interface: submit a burst of ESP crypto jobs, poll completions.
//!
//! The per-call traits ([`CbcCipher`], [`Aead`], [`Mac`]) block the caller until the
//! bytes are done. A SoC crypto block (CAAM job rings, SafeXcel descriptor rings, a
//! kernel crypto queue) works the other way: the CPU writes descriptors, the engine DMAs
//! the packets and raises a completion later. [`CryptoEngine`] is that shape, without
//! allocation and without `unsafe`:
//!
//! - A job lends the engine a caller buffer as `&'a mut [u8]` ([`JobDesc::buf`]). The
//!   engine keeps the borrow while the job is in flight and hands it back in the
//!   [`Completion`], so the borrow checker, not a convention, guarantees that nobody
//!   touches a packet the engine may still be writing. `'a` is the lifetime of the
//!   caller's buffer pool (typically a `static` or a ring owned by the port's runner),
//!   which outlives the engine value.
//! - A refused job comes back whole in [`Rejected`], so a full queue never loses a buffer.
//! - Keys live in a session ([`CryptoEngine::Session`]), created once per SA and
//!   borrowed by every job of that SA, as engines keep per-SA context records.
//! - Positions are [`Region`]s within the one buffer (ESP: SPI .. ICV), so an engine
//!   with scatter-gather can describe the packet in a single descriptor.
//!
//! Completions may arrive in any order; [`JobId`] identifies them. An engine may defer
//! starting work until [`CryptoEngine::flush`] (a doorbell) or until it has a full burst.
//!
//! [`SyncEngine`] adapts any [`CryptoProvider`] to this interface: it does the work in
//! `submit` and queues the result, so code written against [`CryptoEngine`] runs
//! unchanged on a software provider, and a DMA engine can replace it later.
//!
//! [`CbcCipher`]: crate::CbcCipher
//! [`Aead`]: crate::Aead
//! [`Mac`]: crate::Mac

use core::fmt;

use crate::{Aead, CbcCipher, CryptoError, CryptoProvider, MAX_ICV_LEN, Mac};

/// Identifies one submitted job until its completion has been polled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct JobId(u32);

impl JobId {
    /// A job id from the engine's own numbering.
    #[must_use]
    pub const fn new(raw: u32) -> Self {
        Self(raw)
    }

    /// The raw number.
    #[must_use]
    pub const fn get(self) -> u32 {
        self.0
    }
}

/// Why a job was refused at submission. The job itself comes back in [`Rejected`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum EngineError {
    /// Every slot is in flight: poll completions, then resubmit.
    Full,
    /// A region lies outside the buffer, the cipher region overlaps the ICV, or the IV,
    /// nonce or ICV length does not fit the session's algorithms.
    InvalidJob,
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full => "crypto engine queue full",
            Self::InvalidJob => "invalid crypto job descriptor",
        })
    }
}

impl core::error::Error for EngineError {}

/// What a job does: ESP outbound or inbound processing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum JobOp {
    /// Encrypt the cipher region, then write the ICV (MAC over the auth region, or the
    /// AEAD tag) at [`JobDesc::icv_offset`].
    Seal,
    /// Verify the ICV first (constant time) and only then decrypt the cipher region.
    /// A failed check completes with [`CryptoError::AuthenticationFailed`] and the cipher
    /// region left undecrypted (AEAD: unspecified).
    Open,
}

/// A byte range `offset .. offset + len` of [`JobDesc::buf`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Region {
    /// First byte.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
}

impl Region {
    /// `offset .. offset + len`.
    #[must_use]
    pub const fn new(offset: usize, len: usize) -> Self {
        Self { offset, len }
    }

    /// One past the last byte, if that does not overflow.
    #[must_use]
    pub const fn end(self) -> Option<usize> {
        self.offset.checked_add(self.len)
    }

    fn within(self, buf_len: usize) -> bool {
        matches!(self.end(), Some(end) if end <= buf_len)
    }

    fn overlaps(self, other: Self) -> bool {
        let (Some(a_end), Some(b_end)) = (self.end(), other.end()) else {
            return true;
        };
        self.len != 0 && other.len != 0 && self.offset < b_end && other.offset < a_end
    }
}

/// Up to `N` bytes held inline in a descriptor (IV, nonce, AAD, ESN high bits), so a job
/// borrows nothing but its packet buffer and its session.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct InlineBytes<const N: usize> {
    bytes: [u8; N],
    // `u8` keeps descriptors (and so `Rejected`) small; `from_slice` bounds it by `N`.
    len: u8,
}

impl<const N: usize> InlineBytes<N> {
    /// No bytes.
    #[must_use]
    pub const fn empty() -> Self {
        Self {
            bytes: [0; N],
            len: 0,
        }
    }

    /// A copy of `src`.
    ///
    /// # Errors
    /// [`EngineError::InvalidJob`] if `src` is longer than `N` (or than 255 bytes).
    pub fn from_slice(src: &[u8]) -> Result<Self, EngineError> {
        let mut s = Self::empty();
        s.bytes
            .get_mut(..src.len())
            .ok_or(EngineError::InvalidJob)?
            .copy_from_slice(src);
        s.len = u8::try_from(src.len()).map_err(|_| EngineError::InvalidJob)?;
        Ok(s)
    }

    /// The bytes.
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

impl<const N: usize> fmt::Debug for InlineBytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // IVs, nonces and AADs are public (they travel in the packet).
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// One ESP crypto job over a lent buffer.
///
/// For ESP with CBC + HMAC the cipher region is the padded payload after the IV, the auth
/// region runs from the SPI to the end of the ciphertext and the ICV follows it. For
/// AES-GCM the auth region is unused: the AAD (SPI | [seq high] | seq low) and the nonce
/// (salt | explicit IV) are carried inline. For NULL encryption the cipher region is
/// empty.
pub struct JobDesc<'a, S> {
    /// The keys: a session of the engine this job is submitted to.
    pub session: &'a S,
    /// Seal or open.
    pub op: JobOp,
    /// The packet. Lent to the engine until the job's [`Completion`].
    pub buf: &'a mut [u8],
    /// Encrypted (seal) or decrypted (open) in place.
    pub cipher: Region,
    /// Covered by the MAC (ignored by AEAD sessions).
    pub auth: Region,
    /// Where the ICV is written (seal) or read from (open); its length is the session's.
    pub icv_offset: usize,
    /// CBC IV (one block) or AEAD nonce (12 bytes).
    pub iv: InlineBytes<16>,
    /// AEAD associated data.
    pub aad: InlineBytes<16>,
    /// Appended to the MAC input after the auth region: the ESN high bits (RFC 4303 §3.3.2.1).
    pub mac_trailer: InlineBytes<4>,
}

impl<S> fmt::Debug for JobDesc<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Neither the session (keys) nor the packet bytes.
        f.debug_struct("JobDesc")
            .field("op", &self.op)
            .field("buf_len", &self.buf.len())
            .field("cipher", &self.cipher)
            .field("auth", &self.auth)
            .field("icv_offset", &self.icv_offset)
            .field("iv", &self.iv)
            .field("aad", &self.aad)
            .finish_non_exhaustive()
    }
}

/// A refused job, returned whole so its buffer is not lost.
pub struct Rejected<'a, S> {
    /// Why.
    pub error: EngineError,
    /// The job as submitted.
    pub job: JobDesc<'a, S>,
}

impl<S> fmt::Debug for Rejected<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejected")
            .field("error", &self.error)
            .field("job", &self.job)
            .finish()
    }
}

/// A finished job: its id, its outcome and the buffer it borrowed.
pub struct Completion<'a> {
    /// The id [`CryptoEngine::submit`] returned.
    pub id: JobId,
    /// `Ok` or the (opaque) crypto failure; an open that fails verification is
    /// [`CryptoError::AuthenticationFailed`].
    pub result: Result<(), CryptoError>,
    /// The job's buffer, processed in place.
    pub buf: &'a mut [u8],
}

impl fmt::Debug for Completion<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("id", &self.id)
            .field("result", &self.result)
            .field("buf_len", &self.buf.len())
            .finish()
    }
}

/// A queue-based crypto engine: submit jobs, poll completions.
///
/// `'a` is the lifetime of the buffers and sessions lent to it. An engine must not
/// block in [`CryptoEngine::submit`] or [`CryptoEngine::poll_complete`] waiting for the
/// hardware; a caller with nothing else to do waits in its own way (an interrupt, an
/// event fd) and polls again.
pub trait CryptoEngine<'a> {
    /// The engine's per-SA keyed context.
    type Session: 'a;

    /// Queues a job.
    ///
    /// # Errors
    /// The job comes back in [`Rejected`] with [`EngineError::Full`] when
    /// [`CryptoEngine::in_flight`] has reached [`CryptoEngine::capacity`], or
    /// [`EngineError::InvalidJob`] when its regions or lengths are wrong.
    fn submit(
        &mut self,
        job: JobDesc<'a, Self::Session>,
    ) -> Result<JobId, Rejected<'a, Self::Session>>;

    /// Starts work on everything submitted so far (rings the doorbell). Engines that
    /// start at submission need not override it.
    fn flush(&mut self) {}

    /// A finished job, if one is ready, in no particular order.
    fn poll_complete(&mut self) -> Option<Completion<'a>>;

    /// How many jobs can be in flight at once.
    fn capacity(&self) -> usize;

    /// Jobs submitted whose completion has not been polled yet.
    fn in_flight(&self) -> usize;
}

/// The cipher half of a [`Session`].
pub enum SessionCipher<P: CryptoProvider> {
    /// No encryption (ESP NULL, RFC 2410).
    Null,
    /// A CBC cipher, combined with the session's MAC.
    Cbc(P::Cbc),
    /// An AEAD; the session's MAC must then be `None`.
    Aead(P::Aead),
}

/// The keyed context of one SA direction for [`SyncEngine`]: provider instances.
pub struct Session<P: CryptoProvider> {
    cipher: SessionCipher<P>,
    mac: Option<P::Mac>,
}

impl<P: CryptoProvider> fmt::Debug for Session<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cipher = match &self.cipher {
            SessionCipher::Null => "null",
            SessionCipher::Cbc(_) => "cbc",
            SessionCipher::Aead(_) => "aead",
        };
        f.debug_struct("Session")
            .field("cipher", &cipher)
            .field("mac", &self.mac.as_ref().map(Mac::alg))
            .finish_non_exhaustive()
    }
}

impl<P: CryptoProvider> Session<P> {
    /// A session from keyed provider instances.
    ///
    /// # Errors
    /// [`CryptoError::Unsupported`] for an AEAD combined with a MAC.
    pub fn new(cipher: SessionCipher<P>, mac: Option<P::Mac>) -> Result<Self, CryptoError> {
        if matches!(cipher, SessionCipher::Aead(_)) && mac.is_some() {
            return Err(CryptoError::Unsupported);
        }
        Ok(Self { cipher, mac })
    }

    /// ICV length of this session's jobs: the AEAD tag or the truncated MAC, else 0.
    #[must_use]
    pub fn icv_len(&self) -> usize {
        match (&self.cipher, &self.mac) {
            (SessionCipher::Aead(a), _) => a.alg().icv_len(),
            (_, Some(m)) => m.alg().icv_len(),
            _ => 0,
        }
    }

    /// Runs `job` to completion, in place.
    ///
    /// # Errors
    /// [`CryptoError::InvalidLength`] for regions that do not fit (checked by
    /// [`Session::check`] first in [`SyncEngine`]), or the provider's error.
    pub fn run(&self, job: &mut JobDesc<'_, Self>) -> Result<(), CryptoError> {
        let icv_len = self.icv_len();
        let mut icv = [0u8; MAX_ICV_LEN];
        let icv = icv.get_mut(..icv_len).ok_or(CryptoError::InvalidLength)?;
        let icv_range = job.icv_offset..job.icv_offset.saturating_add(icv_len);
        let cipher_range = job.cipher.offset..job.cipher.end().unwrap_or(usize::MAX);
        let auth_range = job.auth.offset..job.auth.end().unwrap_or(usize::MAX);
        let trailer = job.mac_trailer.as_slice();

        if job.op == JobOp::Open {
            icv.copy_from_slice(
                job.buf
                    .get(icv_range.clone())
                    .ok_or(CryptoError::InvalidLength)?,
            );
            if let Some(mac) = &self.mac {
                let auth = job
                    .buf
                    .get(auth_range.clone())
                    .ok_or(CryptoError::InvalidLength)?;
                mac.verify(&[auth, trailer], icv)?;
            }
        }
        let data = job
            .buf
            .get_mut(cipher_range)
            .ok_or(CryptoError::InvalidLength)?;
        match (&self.cipher, job.op) {
            (SessionCipher::Null, _) => {}
            (SessionCipher::Cbc(c), JobOp::Seal) => c.encrypt(job.iv.as_slice(), data)?,
            (SessionCipher::Cbc(c), JobOp::Open) => c.decrypt(job.iv.as_slice(), data)?,
            (SessionCipher::Aead(a), op) => {
                let nonce: &[u8; 12] = job
                    .iv
                    .as_slice()
                    .try_into()
                    .map_err(|_| CryptoError::InvalidLength)?;
                let aad = job.aad.as_slice();
                match op {
                    JobOp::Seal => a.seal(nonce, aad, data, icv)?,
                    JobOp::Open => a.open(nonce, aad, data, icv)?,
                }
            }
        }
        if job.op == JobOp::Seal {
            if let Some(mac) = &self.mac {
                let auth = job.buf.get(auth_range).ok_or(CryptoError::InvalidLength)?;
                mac.compute(&[auth, trailer], icv)?;
            }
            job.buf
                .get_mut(icv_range)
                .ok_or(CryptoError::InvalidLength)?
                .copy_from_slice(icv);
        }
        Ok(())
    }

    /// Checks a job's shape against this session without touching any bytes: regions
    /// inside the buffer, the cipher region clear of the ICV, IV or nonce length, whole
    /// cipher blocks.
    ///
    /// # Errors
    /// [`EngineError::InvalidJob`].
    pub fn check(&self, job: &JobDesc<'_, Self>) -> Result<(), EngineError> {
        let len = job.buf.len();
        let icv = Region::new(job.icv_offset, self.icv_len());
        let mut ok = job.cipher.within(len) && icv.within(len) && !job.cipher.overlaps(icv);
        if self.mac.is_some() {
            ok &= job.auth.within(len) && !job.auth.overlaps(icv);
        }
        ok &= match &self.cipher {
            SessionCipher::Null => job.cipher.len == 0,
            SessionCipher::Cbc(c) => {
                let block = c.alg().block_len();
                job.iv.as_slice().len() == block && job.cipher.len % block == 0
            }
            SessionCipher::Aead(_) => job.iv.as_slice().len() == 12,
        };
        if ok {
            Ok(())
        } else {
            Err(EngineError::InvalidJob)
        }
    }
}

/// [`CryptoEngine`] over any [`CryptoProvider`], with up to `N` completions queued.
///
/// Synchronous: `submit` does the work at once and queues the result; `poll_complete`
/// returns results in submission order. No allocation; the queue is a fixed ring.
pub struct SyncEngine<'a, P: CryptoProvider, const N: usize> {
    done: [Option<Completion<'a>>; N],
    head: usize,
    len: usize,
    next_id: u32,
    _provider: core::marker::PhantomData<P>,
}

impl<P: CryptoProvider, const N: usize> fmt::Debug for SyncEngine<'_, P, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncEngine")
            .field("capacity", &N)
            .field("in_flight", &self.len)
            .finish_non_exhaustive()
    }
}

impl<P: CryptoProvider, const N: usize> Default for SyncEngine<'_, P, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: CryptoProvider, const N: usize> SyncEngine<'_, P, N> {
    /// An empty engine.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            done: [const { None }; N],
            head: 0,
            len: 0,
            next_id: 0,
            _provider: core::marker::PhantomData,
        }
    }
}

impl<'a, P: CryptoProvider + 'a, const N: usize> CryptoEngine<'a> for SyncEngine<'a, P, N> {
    type Session = Session<P>;

    fn submit(
        &mut self,
        mut job: JobDesc<'a, Session<P>>,
    ) -> Result<JobId, Rejected<'a, Session<P>>> {
        if self.len >= N {
            return Err(Rejected {
                error: EngineError::Full,
                job,
            });
        }
        if let Err(error) = job.session.check(&job) {
            return Err(Rejected { error, job });
        }
        let result = job.session.run(&mut job);
        let id = JobId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        let tail = (self.head + self.len) % N;
        let Some(slot) = self.done.get_mut(tail) else {
            return Err(Rejected {
                error: EngineError::Full,
                job,
            });
        };
        *slot = Some(Completion {
            id,
            result,
            buf: job.buf,
        });
        self.len += 1;
        Ok(id)
    }

    fn poll_complete(&mut self) -> Option<Completion<'a>> {
        if self.len == 0 {
            return None;
        }
        let c = self.done.get_mut(self.head)?.take();
        self.head = (self.head + 1) % N;
        self.len -= 1;
        c
    }

    fn capacity(&self) -> usize {
        N
    }

    fn in_flight(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AeadAlg, CipherAlg, DhGroup, DiffieHellman, HashAlg, MacAlg, Prf, SecureRng};

    // A toy provider: XOR "cipher" and a sum "MAC", enough to test the queue and the
    // job plumbing without real crypto (the ports test real providers).
    struct Toy;
    struct ToyCbc(u8);
    struct ToyMac(u8);
    struct ToyAead(u8);
    struct ToyPrf;
    struct ToyDh;

    impl CbcCipher for ToyCbc {
        fn new(_: CipherAlg, key: &[u8]) -> Result<Self, CryptoError> {
            Ok(Self(key[0]))
        }
        fn alg(&self) -> CipherAlg {
            CipherAlg::Aes128Cbc
        }
        fn encrypt(&self, iv: &[u8], buf: &mut [u8]) -> Result<(), CryptoError> {
            buf.iter_mut().for_each(|b| *b ^= self.0 ^ iv[0]);
            Ok(())
        }
        fn decrypt(&self, iv: &[u8], buf: &mut [u8]) -> Result<(), CryptoError> {
            self.encrypt(iv, buf)
        }
    }
    fn toy_icv(k: u8, parts: &[&[u8]], out: &mut [u8]) {
        let s = parts
            .iter()
            .flat_map(|p| p.iter())
            .fold(k, |a, &b| a.wrapping_add(b));
        out.fill(s);
    }
    impl Mac for ToyMac {
        fn new(_: MacAlg, key: &[u8]) -> Result<Self, CryptoError> {
            Ok(Self(key[0]))
        }
        fn alg(&self) -> MacAlg {
            MacAlg::HmacSha1_96
        }
        fn compute(&self, parts: &[&[u8]], out: &mut [u8]) -> Result<(), CryptoError> {
            toy_icv(self.0, parts, out);
            Ok(())
        }
        fn verify(&self, parts: &[&[u8]], icv: &[u8]) -> Result<(), CryptoError> {
            let mut want = [0u8; 12];
            toy_icv(self.0, parts, &mut want);
            if want == icv {
                Ok(())
            } else {
                Err(CryptoError::AuthenticationFailed)
            }
        }
    }
    impl Aead for ToyAead {
        fn new(_: AeadAlg, key: &[u8]) -> Result<Self, CryptoError> {
            Ok(Self(key[0]))
        }
        fn alg(&self) -> AeadAlg {
            AeadAlg::Aes128Gcm8
        }
        fn seal(
            &self,
            n: &[u8; 12],
            aad: &[u8],
            buf: &mut [u8],
            tag: &mut [u8],
        ) -> Result<(), CryptoError> {
            buf.iter_mut().for_each(|b| *b ^= self.0 ^ n[0]);
            toy_icv(self.0, &[aad, buf], tag);
            Ok(())
        }
        fn open(
            &self,
            n: &[u8; 12],
            aad: &[u8],
            buf: &mut [u8],
            tag: &[u8],
        ) -> Result<(), CryptoError> {
            let mut want = [0u8; 8];
            toy_icv(self.0, &[aad, buf], &mut want);
            if want != tag {
                return Err(CryptoError::AuthenticationFailed);
            }
            buf.iter_mut().for_each(|b| *b ^= self.0 ^ n[0]);
            Ok(())
        }
    }
    impl Prf for ToyPrf {
        fn new(_: HashAlg, _: &[u8]) -> Result<Self, CryptoError> {
            Err(CryptoError::Unsupported)
        }
        fn alg(&self) -> HashAlg {
            HashAlg::Sha1
        }
        fn compute(&self, _: &[&[u8]], _: &mut [u8]) -> Result<usize, CryptoError> {
            Err(CryptoError::Unsupported)
        }
        fn hash(_: HashAlg, _: &[&[u8]], _: &mut [u8]) -> Result<usize, CryptoError> {
            Err(CryptoError::Unsupported)
        }
    }
    impl DiffieHellman for ToyDh {
        fn generate<R: SecureRng>(_: DhGroup, _: &mut R) -> Result<Self, CryptoError> {
            Err(CryptoError::Unsupported)
        }
        fn from_private(_: DhGroup, _: &[u8]) -> Result<Self, CryptoError> {
            Err(CryptoError::Unsupported)
        }
        fn group(&self) -> DhGroup {
            DhGroup::Modp2048
        }
        fn public_key(&self, _: &mut [u8]) -> Result<usize, CryptoError> {
            Err(CryptoError::Unsupported)
        }
        fn shared_secret(&self, _: &[u8], _: &mut [u8]) -> Result<usize, CryptoError> {
            Err(CryptoError::Unsupported)
        }
    }
    impl CryptoProvider for Toy {
        type Cbc = ToyCbc;
        type Aead = ToyAead;
        type Mac = ToyMac;
        type Prf = ToyPrf;
        type Dh = ToyDh;
    }

    fn cbc_session() -> Session<Toy> {
        Session::new(SessionCipher::Cbc(ToyCbc(0x5a)), Some(ToyMac(7))).unwrap()
    }

    fn cbc_job<'a>(s: &'a Session<Toy>, op: JobOp, buf: &'a mut [u8]) -> JobDesc<'a, Session<Toy>> {
        // 8-byte header, 16-byte IV slot, 32 bytes of data, 12-byte ICV = 68 bytes.
        JobDesc {
            session: s,
            op,
            buf,
            cipher: Region::new(24, 32),
            auth: Region::new(0, 56),
            icv_offset: 56,
            iv: InlineBytes::from_slice(&[3; 16]).unwrap(),
            aad: InlineBytes::empty(),
            mac_trailer: InlineBytes::from_slice(&[0, 0, 0, 1]).unwrap(),
        }
    }

    #[test]
    fn seal_open_round_trip_fifo_and_full() {
        let s = cbc_session();
        let mut pool = [[0u8; 68]; 3];
        for (i, p) in pool.iter_mut().enumerate() {
            p[24..56].fill(u8::try_from(i).unwrap());
        }
        let mut e = SyncEngine::<Toy, 2>::new();
        let [a, b, c] = &mut pool;
        let ia = e.submit(cbc_job(&s, JobOp::Seal, a)).unwrap();
        let ib = e.submit(cbc_job(&s, JobOp::Seal, b)).unwrap();
        assert_eq!(e.in_flight(), 2);
        let rej = e.submit(cbc_job(&s, JobOp::Seal, c)).unwrap_err();
        assert_eq!(rej.error, EngineError::Full);
        let c = rej.job.buf; // the refused buffer is handed back
        let done = e.poll_complete().unwrap();
        assert_eq!((done.id, done.result), (ia, Ok(())));
        assert_eq!(done.buf[24], 0x5a ^ 3);
        let a = done.buf;
        let ic = e.submit(cbc_job(&s, JobOp::Seal, c)).unwrap();
        let b = e.poll_complete().unwrap();
        assert_eq!(b.id, ib);
        assert_eq!(e.poll_complete().unwrap().id, ic);
        assert!(e.poll_complete().is_none());
        // Open what was sealed; then a tampered copy fails and stays encrypted.
        e.submit(cbc_job(&s, JobOp::Open, a)).unwrap();
        let opened = e.poll_complete().unwrap();
        assert_eq!(opened.result, Ok(()));
        assert!(opened.buf[24..56].iter().all(|&x| x == 0));
        b.buf[30] ^= 1;
        e.submit(cbc_job(&s, JobOp::Open, b.buf)).unwrap();
        let bad = e.poll_complete().unwrap();
        assert_eq!(bad.result, Err(CryptoError::AuthenticationFailed));
        assert_eq!(bad.buf[24], 1 ^ 0x5a ^ 3);
    }

    #[test]
    fn malformed_jobs_are_refused_whole() {
        let s = cbc_session();
        let mut buf = [0u8; 68];
        let mut e = SyncEngine::<Toy, 4>::new();
        let mut job = cbc_job(&s, JobOp::Seal, &mut buf);
        job.cipher = Region::new(24, 31); // partial block
        let r = e.submit(job).unwrap_err();
        assert_eq!(r.error, EngineError::InvalidJob);
        let mut job = r.job;
        job.cipher = Region::new(24, 48); // over the ICV
        let mut job = e.submit(job).unwrap_err().job;
        job.cipher = Region::new(usize::MAX, 16); // overflow
        let mut job = e.submit(job).unwrap_err().job;
        job.cipher = Region::new(24, 32);
        job.iv = InlineBytes::from_slice(&[0; 12]).unwrap(); // wrong IV length
        assert_eq!(e.submit(job).unwrap_err().error, EngineError::InvalidJob);
        assert_eq!(e.in_flight(), 0);
        assert!(InlineBytes::<4>::from_slice(&[0; 5]).is_err());
    }

    #[test]
    fn aead_job_and_session_rules() {
        assert!(Session::<Toy>::new(SessionCipher::Aead(ToyAead(1)), Some(ToyMac(1))).is_err());
        let s = Session::<Toy>::new(SessionCipher::Aead(ToyAead(9)), None).unwrap();
        assert_eq!(s.icv_len(), 8);
        let mut buf = [4u8; 40];
        let mut e = SyncEngine::<Toy, 1>::new();
        let job = |op, buf| JobDesc {
            session: &s,
            op,
            buf,
            cipher: Region::new(16, 16),
            auth: Region::default(),
            icv_offset: 32,
            iv: InlineBytes::from_slice(&[1; 12]).unwrap(),
            aad: InlineBytes::from_slice(&[2; 8]).unwrap(),
            mac_trailer: InlineBytes::empty(),
        };
        e.submit(job(JobOp::Seal, &mut buf)).unwrap();
        let c = e.poll_complete().unwrap();
        assert_eq!(c.buf[16], 4 ^ 9 ^ 1);
        e.submit(job(JobOp::Open, c.buf)).unwrap();
        let c = e.poll_complete().unwrap();
        assert_eq!(c.result, Ok(()));
        assert!(c.buf[..32].iter().all(|&x| x == 4));
    }
}
