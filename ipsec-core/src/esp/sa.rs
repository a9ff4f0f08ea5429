use core::ops::Range;

use hal_traits::{Aead, CbcCipher, CryptoProvider, Mac, SecureRng};
use zeroize::Zeroize;

use super::counters::bump;
use super::transform::{ESP_HEADER_LEN, ESP_TRAILER_LEN, GCM_SALT_LEN};
use super::{Direction, Encryption, EspConfig, EspCounters, EspError, Mode, SaEvent, Transform};
use crate::lifetime::{Lifetime, LifetimeEvent};
use crate::replay::{ReplaySnapshot, ReplayWindow};
use crate::time::Instant;
use crate::wire::proto;

/// The keyed cipher state of an SA.
enum CipherState<P: CryptoProvider> {
    Null,
    Cbc(P::Cbc),
    Gcm {
        aead: P::Aead,
        salt: [u8; GCM_SALT_LEN],
    },
}

/// What [`EspSa::open_in_place`] found inside a verified, decrypted ESP packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedEsp {
    /// The next header from the trailer (4 / 41 in tunnel mode, the upper layer in
    /// transport mode).
    pub next_header: u8,
    /// Where the payload lies in the buffer given to `open_in_place`.
    pub payload: Range<usize>,
    /// The full (64-bit with ESN) sequence number of the packet.
    pub seq: u64,
}

/// One unidirectional ESP security association (RFC 4303).
///
/// Generic over the crypto provider `P` and the replay bitmap size `W` in 64-bit words
/// (window of up to `(W - 1) * 64` packets; the default, 2, gives IOS's 64).
///
/// Outbound SAs own the sequence counter; inbound SAs own the replay window. Both count
/// every packet and every drop in [`EspCounters`], track their lifetime, and remember
/// when they last carried traffic.
pub struct EspSa<P: CryptoProvider, const W: usize = 2> {
    pub(super) spi: u32,
    pub(super) direction: Direction,
    pub(super) mode: Mode,
    pub(super) transform: Transform,
    cipher: CipherState<P>,
    mac: Option<P::Mac>,
    esn: bool,
    next_seq: u64,
    replay: ReplayWindow<W>,
    pub(super) config: EspConfig,
    lifetime: Lifetime,
    pub(super) counters: EspCounters,
    last_used: Instant,
    pending_soft: bool,
    pending_hard: bool,
}

impl<P: CryptoProvider, const W: usize> Drop for EspSa<P, W> {
    fn drop(&mut self) {
        // Provider key schedules zeroize themselves; the GCM salt is ours.
        if let CipherState::Gcm { salt, .. } = &mut self.cipher {
            salt.zeroize();
        }
    }
}

impl<P: CryptoProvider, const W: usize> crate::sadb::SaEntry for EspSa<P, W> {
    fn spi(&self) -> u32 {
        self.spi
    }

    /// Inbound: our address; outbound: the peer's (RFC 4301 §4.1). Unspecified in
    /// transport mode, where the addresses come from each packet.
    fn dst(&self) -> core::net::IpAddr {
        let a = match self.direction {
            Direction::Inbound => self.config.local,
            Direction::Outbound => self.config.remote,
        };
        a.unwrap_or(core::net::IpAddr::V4(core::net::Ipv4Addr::UNSPECIFIED))
    }
}

impl<P: CryptoProvider, const W: usize> core::fmt::Debug for EspSa<P, W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never the keys.
        f.debug_struct("EspSa")
            .field("spi", &format_args!("{:#010x}", self.spi))
            .field("direction", &self.direction)
            .field("mode", &self.mode)
            .field("transform", &self.transform)
            .field("esn", &self.esn)
            .field("next_seq", &self.next_seq)
            .field("replay_top", &self.replay.top())
            .finish_non_exhaustive()
    }
}

impl<P: CryptoProvider, const W: usize> EspSa<P, W> {
    /// Creates an SA from its configuration and keys.
    ///
    /// Any SPI is accepted, so that published vectors (which use 0) can be reproduced;
    /// SPIs 0..=255 are reserved (RFC 4303 §2.1) and IKE never allocates them.
    ///
    /// `enc_key` is the cipher key (for GCM: key | 4-byte salt, RFC 4106 §8.1); `auth_key`
    /// the integrity key (empty for GCM). Key bytes are copied into the provider's key
    /// schedule and not kept otherwise.
    ///
    /// # Errors
    /// [`EspError::InvalidConfig`] for a bad transform combination, wrong key lengths or a
    /// replay window the bitmap cannot hold; [`EspError::Crypto`] if the provider refuses.
    pub fn new(
        config: EspConfig,
        enc_key: &[u8],
        auth_key: &[u8],
        now: Instant,
    ) -> Result<Self, EspError> {
        let transform = config.transform;
        transform.validate()?;
        if enc_key.len() != transform.enc.keymat_len() {
            return Err(EspError::InvalidConfig);
        }
        let cipher = match transform.enc {
            Encryption::Null => CipherState::Null,
            Encryption::Cbc(alg) => {
                CipherState::Cbc(P::Cbc::new(alg, enc_key).map_err(EspError::Crypto)?)
            }
            Encryption::Gcm(alg) => {
                let split = alg.key_len();
                let key = enc_key.get(..split).ok_or(EspError::InvalidConfig)?;
                let salt_src = enc_key.get(split..).ok_or(EspError::InvalidConfig)?;
                let mut salt = [0u8; GCM_SALT_LEN];
                if salt_src.len() != GCM_SALT_LEN {
                    return Err(EspError::InvalidConfig);
                }
                salt.copy_from_slice(salt_src);
                CipherState::Gcm {
                    aead: P::Aead::new(alg, key).map_err(EspError::Crypto)?,
                    salt,
                }
            }
        };
        let mac = match transform.auth {
            Some(alg) => {
                if auth_key.len() != alg.key_len() {
                    return Err(EspError::InvalidConfig);
                }
                Some(P::Mac::new(alg, auth_key).map_err(EspError::Crypto)?)
            }
            None if auth_key.is_empty() => None,
            None => return Err(EspError::InvalidConfig),
        };
        let replay = if config.replay_window == 0 {
            ReplayWindow::disabled(config.esn)
        } else {
            ReplayWindow::new(config.replay_window, config.esn)
                .map_err(|_| EspError::InvalidConfig)?
        };
        Ok(Self {
            spi: config.spi,
            direction: config.direction,
            mode: config.mode,
            transform,
            cipher,
            mac,
            esn: config.esn,
            next_seq: 1,
            replay,
            lifetime: Lifetime::new(config.lifetime, now),
            config,
            counters: EspCounters::default(),
            last_used: now,
            pending_soft: false,
            pending_hard: false,
        })
    }

    /// The SPI.
    #[must_use]
    pub const fn spi(&self) -> u32 {
        self.spi
    }

    /// The configuration the SA was created with.
    #[must_use]
    pub const fn config(&self) -> &EspConfig {
        &self.config
    }

    /// The counters.
    #[must_use]
    pub const fn counters(&self) -> &EspCounters {
        &self.counters
    }

    /// The sequence number the next outbound packet will carry.
    #[must_use]
    pub const fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Moves the outbound sequence counter forward (never backward): used when a standby
    /// takes over an SA, so no sequence number is reused.
    pub fn advance_seq_to(&mut self, seq: u64) {
        self.next_seq = self.next_seq.max(seq);
    }

    /// The peer's NAT mapping changed: IKE got an authenticated message from `to` while
    /// it knew the peer at `from` (RFC 3947 §4: the responder follows the initiator's
    /// new address and port). An SA whose peer is `from` (tunnel endpoint and, with UDP
    /// encapsulation, the peer's port) is re-addressed to `to`; keys, sequence numbers
    /// and counters stay. Returns whether this SA changed.
    ///
    /// What matters is the outbound SA: its packets now go to `to`. An inbound SA
    /// follows only so that status shows the peer where it is: a receiver does not
    /// check the source of ESP-in-UDP (RFC 3948 §3.3).
    pub fn follow_peer(&mut self, from: core::net::SocketAddr, to: core::net::SocketAddr) -> bool {
        if from == to {
            return false;
        }
        let addr_match = match self.config.remote {
            Some(r) => r == from.ip(),
            None => self.config.udp_encap.is_some(),
        };
        let port_match = self
            .config
            .udp_encap
            .is_none_or(|u| u.remote_port == from.port());
        if !addr_match || !port_match {
            return false;
        }
        let mut changed = false;
        if let Some(u) = self.config.udp_encap.as_mut() {
            changed |= u.remote_port != to.port();
            u.remote_port = to.port();
        }
        if let Some(r) = self.config.remote.as_mut() {
            changed |= *r != to.ip();
            *r = to.ip();
        }
        changed
    }

    /// The inbound replay window.
    #[must_use]
    pub const fn replay_window(&self) -> &ReplayWindow<W> {
        &self.replay
    }

    /// Loads an inbound replay window state (from the active node of an HA pair).
    ///
    /// # Errors
    /// [`EspError::InvalidConfig`] if the snapshot does not fit this SA's window.
    pub fn restore_replay(&mut self, snapshot: &ReplaySnapshot<W>) -> Result<(), EspError> {
        if snapshot.esn != self.esn {
            return Err(EspError::InvalidConfig);
        }
        self.replay
            .restore(snapshot)
            .map_err(|_| EspError::InvalidConfig)
    }

    /// When the SA last sealed or opened a packet (proof of life for DPD, idle timeout).
    #[must_use]
    pub const fn last_used(&self) -> Instant {
        self.last_used
    }

    /// The SA's lifetime state (for `remaining key lifetime (k/sec)`).
    #[must_use]
    pub const fn lifetime(&self) -> &Lifetime {
        &self.lifetime
    }

    /// Length of the ESP packet (header to ICV) for `payload_len` bytes of payload.
    #[must_use]
    pub const fn sealed_len(&self, payload_len: usize) -> usize {
        self.transform.sealed_len(payload_len)
    }

    /// The earliest lifetime deadline, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.lifetime.deadline()
    }

    /// Fires due lifetime deadlines. A spurious call is a no-op.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(ev) = self.lifetime.on_timeout(now) {
            self.note_lifetime(ev);
        }
    }

    /// The next pending event: soft expiry (rekey now) or hard expiry (SA unusable).
    #[must_use]
    pub fn poll_event(&mut self) -> Option<SaEvent> {
        if self.pending_hard {
            self.pending_hard = false;
            self.pending_soft = false;
            return Some(SaEvent::HardExpired { spi: self.spi });
        }
        if self.pending_soft {
            self.pending_soft = false;
            return Some(SaEvent::SoftExpired { spi: self.spi });
        }
        None
    }

    /// Whether [`EspSa::poll_event`] has something to report.
    #[must_use]
    pub const fn has_pending_event(&self) -> bool {
        self.pending_soft || self.pending_hard
    }

    fn note_lifetime(&mut self, ev: LifetimeEvent) {
        match ev {
            LifetimeEvent::Soft => self.pending_soft = true,
            LifetimeEvent::Hard => self.pending_hard = true,
        }
    }

    fn account(&mut self, now: Instant, bytes: usize) {
        self.last_used = now;
        if let Some(ev) = self
            .lifetime
            .add_bytes(u64::try_from(bytes).unwrap_or(u64::MAX))
        {
            self.note_lifetime(ev);
        }
    }

    /// Builds an ESP packet in `out` from `payload`, with an IV from `rng` for CBC and the
    /// sequence number as the (unique, RFC 4106 §3.1) GCM IV. Returns its length.
    ///
    /// # Errors
    /// See [`EspSa::seal_in_place`]; also [`EspError::Crypto`] if `rng` fails.
    pub fn seal<R: SecureRng>(
        &mut self,
        now: Instant,
        next_header: u8,
        payload: &[u8],
        rng: &mut R,
        out: &mut [u8],
    ) -> Result<usize, EspError> {
        let mut iv = [0u8; 16];
        if let Encryption::Cbc(_) = self.transform.enc {
            let n = self.transform.iv_len();
            let dst = iv.get_mut(..n).ok_or(EspError::InvalidConfig)?;
            if let Err(e) = rng.fill_bytes(dst) {
                self.counters.send_error(EspError::Crypto(e));
                return Err(EspError::Crypto(e));
            }
            return self.seal_copy(now, next_header, payload, Some(dst), out);
        }
        self.seal_copy(now, next_header, payload, None, out)
    }

    /// As [`EspSa::seal`] with a caller-chosen IV: for known-answer tests and tools that
    /// must reproduce packets. Never reuse an IV for CBC in production.
    ///
    /// # Errors
    /// See [`EspSa::seal_in_place`]; [`EspError::InvalidConfig`] for a wrong IV length.
    pub fn seal_with_iv(
        &mut self,
        now: Instant,
        next_header: u8,
        payload: &[u8],
        iv: &[u8],
        out: &mut [u8],
    ) -> Result<usize, EspError> {
        self.seal_copy(now, next_header, payload, Some(iv), out)
    }

    fn seal_copy(
        &mut self,
        now: Instant,
        next_header: u8,
        payload: &[u8],
        iv: Option<&[u8]>,
        out: &mut [u8],
    ) -> Result<usize, EspError> {
        let start = ESP_HEADER_LEN.saturating_add(self.transform.iv_len());
        let needed = self.sealed_len(payload.len());
        let have = out.len();
        let Some(dst) = out
            .get_mut(start..start.saturating_add(payload.len()))
            .filter(|_| have >= needed)
        else {
            let e = EspError::BufferTooSmall { needed };
            self.counters.send_error(e);
            return Err(e);
        };
        dst.copy_from_slice(payload);
        self.seal_in_place(now, next_header, out, payload.len(), iv)
    }

    /// Seals a payload that the caller already placed at
    /// `buf[8 + iv_len .. 8 + iv_len + payload_len]` (the headroom left for the ESP header and
    /// IV), writing header, IV, trailer and ICV around it. Returns the ESP packet length.
    /// This is the zero-copy path: ports that build the payload in place use it directly.
    ///
    /// `iv` overrides the IV (must be `iv_len` bytes); `None` is only valid for NULL and GCM
    /// (whose IV is the sequence number).
    ///
    /// # Errors
    /// [`EspError::WrongDirection`], [`EspError::Expired`], [`EspError::SequenceOverflow`],
    /// [`EspError::BufferTooSmall`], [`EspError::InvalidConfig`] (IV), [`EspError::Crypto`].
    pub fn seal_in_place(
        &mut self,
        now: Instant,
        next_header: u8,
        buf: &mut [u8],
        payload_len: usize,
        iv: Option<&[u8]>,
    ) -> Result<usize, EspError> {
        match self.seal_inner(next_header, buf, payload_len, iv) {
            Ok(len) => {
                bump(&mut self.counters.encaps);
                if !matches!(self.transform.enc, Encryption::Null) {
                    bump(&mut self.counters.encrypt);
                }
                if self.transform.icv_len() > 0 {
                    bump(&mut self.counters.digest);
                }
                self.counters.bytes_out = self
                    .counters
                    .bytes_out
                    .saturating_add(u64::try_from(payload_len).unwrap_or(u64::MAX));
                self.account(now, payload_len);
                Ok(len)
            }
            Err(e) => {
                self.counters.send_error(e);
                Err(e)
            }
        }
    }

    fn seal_inner(
        &mut self,
        next_header: u8,
        buf: &mut [u8],
        payload_len: usize,
        iv: Option<&[u8]>,
    ) -> Result<usize, EspError> {
        if self.direction != Direction::Outbound {
            return Err(EspError::WrongDirection);
        }
        if self.lifetime.is_hard_expired() {
            return Err(EspError::Expired);
        }
        let seq = self.next_seq;
        let limit = if self.esn {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        };
        if seq > limit || seq == 0 {
            return Err(EspError::SequenceOverflow);
        }
        let t = self.transform;
        let iv_len = t.iv_len();
        let icv_len = t.icv_len();
        let total = t.sealed_len(payload_len);
        if buf.len() < total {
            return Err(EspError::BufferTooSmall { needed: total });
        }
        let ct_start = ESP_HEADER_LEN + iv_len;
        let padded = t.padded_len(payload_len);
        let ct_end = ct_start + padded;
        let (seq_hi, seq_lo) = split_seq(seq);

        // Header.
        let hdr = buf
            .get_mut(..ESP_HEADER_LEN)
            .ok_or(EspError::InvalidLength)?;
        let (spi_dst, seq_dst) = hdr.split_at_mut(4);
        spi_dst.copy_from_slice(&self.spi.to_be_bytes());
        seq_dst.copy_from_slice(&seq_lo.to_be_bytes());

        // IV.
        let iv_dst = buf
            .get_mut(ESP_HEADER_LEN..ct_start)
            .ok_or(EspError::InvalidLength)?;
        match (iv, t.enc) {
            (Some(v), _) if v.len() == iv_len => iv_dst.copy_from_slice(v),
            (None, Encryption::Null) => {}
            (None, Encryption::Gcm(_)) => iv_dst.copy_from_slice(&seq.to_be_bytes()),
            _ => return Err(EspError::InvalidConfig),
        }

        // Trailer: padding 1, 2, 3, ... (RFC 4303 §2.4), pad length, next header.
        let pad_len = padded - payload_len - ESP_TRAILER_LEN;
        let trailer = buf
            .get_mut(ct_start + payload_len..ct_end)
            .ok_or(EspError::InvalidLength)?;
        let (pad, tail) = trailer.split_at_mut(pad_len);
        for (b, v) in pad.iter_mut().zip(1u8..) {
            *b = v;
        }
        if let [pl, nh] = tail {
            // At most align - 1 <= 15: fits.
            *pl = u8::try_from(pad_len).map_err(|_| EspError::InvalidConfig)?;
            *nh = next_header;
        }

        // Encrypt, then MAC (or AEAD).
        let (authed, rest) = buf.split_at_mut(ct_end);
        let icv = rest.get_mut(..icv_len).ok_or(EspError::InvalidLength)?;
        match &self.cipher {
            CipherState::Null => {}
            CipherState::Cbc(c) => {
                let (head, ct) = authed.split_at_mut(ct_start);
                let iv = head.get(ESP_HEADER_LEN..).ok_or(EspError::InvalidLength)?;
                c.encrypt(iv, ct).map_err(EspError::Crypto)?;
            }
            CipherState::Gcm { aead, salt } => {
                let (head, ct) = authed.split_at_mut(ct_start);
                let nonce = gcm_nonce(salt, head.get(ESP_HEADER_LEN..).unwrap_or(&[]))?;
                let mut aad = [0u8; 12];
                let aad = esp_aad(&mut aad, self.spi, seq, self.esn);
                aead.seal(&nonce, aad, ct, icv).map_err(EspError::Crypto)?;
            }
        }
        if let Some(mac) = &self.mac {
            let hi = seq_hi.to_be_bytes();
            if self.esn {
                mac.compute(&[authed, &hi], icv).map_err(EspError::Crypto)?;
            } else {
                mac.compute(&[authed], icv).map_err(EspError::Crypto)?;
            }
        }
        self.next_seq = seq.wrapping_add(1);
        Ok(total)
    }

    /// Verifies and decrypts an ESP packet (from the SPI to the end of the ICV) in place.
    /// Counts `verify`/`decrypt` and drops; delivery (`decaps`, bytes, lifetime) is
    /// counted by the packet-level callers once the inner packet passed its checks.
    ///
    /// Order, as RFC 4303 §3.4 requires: replay check, ICV check, replay window update,
    /// decryption, trailer check. Nothing about the packet is trusted before the ICV has
    /// verified, and the window moves only for authentic packets.
    ///
    /// # Errors
    /// [`EspError::InvalidLength`], [`EspError::SpiMismatch`], [`EspError::Replayed`],
    /// [`EspError::TooOld`], [`EspError::IcvMismatch`], [`EspError::BadPadding`],
    /// [`EspError::DummyPacket`], [`EspError::Expired`], [`EspError::WrongDirection`].
    pub fn open_in_place(&mut self, now: Instant, esp: &mut [u8]) -> Result<OpenedEsp, EspError> {
        match self.open_inner(esp) {
            Ok(o) => {
                self.last_used = now;
                Ok(o)
            }
            Err(e) => {
                self.counters.recv_error(e);
                Err(e)
            }
        }
    }

    /// Records a delivered packet: the last step of a successful inbound path, after any
    /// inner checks (selectors, next header) the caller makes.
    pub(super) fn delivered(&mut self, now: Instant, payload_len: usize) {
        bump(&mut self.counters.decaps);
        self.counters.bytes_in = self
            .counters
            .bytes_in
            .saturating_add(u64::try_from(payload_len).unwrap_or(u64::MAX));
        self.account(now, payload_len);
    }

    /// Counts an inbound drop decided after decryption (bad inner packet, selectors).
    pub(super) fn reject_inbound(&mut self, e: EspError) -> EspError {
        self.counters.recv_error(e);
        e
    }

    fn open_inner(&mut self, esp: &mut [u8]) -> Result<OpenedEsp, EspError> {
        if self.direction != Direction::Inbound {
            return Err(EspError::WrongDirection);
        }
        if self.lifetime.is_hard_expired() {
            return Err(EspError::Expired);
        }
        let t = self.transform;
        let iv_len = t.iv_len();
        let icv_len = t.icv_len();
        let align = t.enc.align();
        let ct_start = ESP_HEADER_LEN + iv_len;
        let ct_end = esp
            .len()
            .checked_sub(icv_len)
            .ok_or(EspError::InvalidLength)?;
        let ct_len = ct_end
            .checked_sub(ct_start)
            .ok_or(EspError::InvalidLength)?;
        if ct_len < ESP_TRAILER_LEN || ct_len % align != 0 {
            return Err(EspError::InvalidLength);
        }
        let Some(&[s0, s1, s2, s3, q0, q1, q2, q3]) = esp.first_chunk::<ESP_HEADER_LEN>() else {
            return Err(EspError::InvalidLength);
        };
        let spi = u32::from_be_bytes([s0, s1, s2, s3]);
        let seq_lo = u32::from_be_bytes([q0, q1, q2, q3]);
        if spi != self.spi {
            return Err(EspError::SpiMismatch);
        }
        let seq = self.replay.check(seq_lo)?;
        let seq_hi = split_seq(seq).0.to_be_bytes();

        let (authed, icv) = esp.split_at_mut(ct_end);
        if let Some(mac) = &self.mac {
            let r = if self.esn {
                mac.verify(&[authed, &seq_hi], icv)
            } else {
                mac.verify(&[authed], icv)
            };
            r.map_err(|_| EspError::IcvMismatch)?;
        }
        match &self.cipher {
            CipherState::Null | CipherState::Cbc(_) => {}
            CipherState::Gcm { aead, salt } => {
                let (head, ct) = authed.split_at_mut(ct_start);
                let nonce = gcm_nonce(salt, head.get(ESP_HEADER_LEN..).unwrap_or(&[]))?;
                let mut aad = [0u8; 12];
                let aad = esp_aad(&mut aad, self.spi, seq, self.esn);
                aead.open(&nonce, aad, ct, icv)
                    .map_err(|_| EspError::IcvMismatch)?;
            }
        }
        // Authentic: only now may the window move.
        self.replay.update(seq)?;
        bump(&mut self.counters.verify);
        if let CipherState::Cbc(c) = &self.cipher {
            let (head, ct) = authed.split_at_mut(ct_start);
            let iv = head.get(ESP_HEADER_LEN..).ok_or(EspError::InvalidLength)?;
            c.decrypt(iv, ct).map_err(EspError::Crypto)?;
        }
        if !matches!(self.cipher, CipherState::Null) {
            bump(&mut self.counters.decrypt);
        }

        let ct = authed.get(ct_start..).ok_or(EspError::InvalidLength)?;
        let &[.., pad_len, next_header] = ct else {
            return Err(EspError::InvalidLength);
        };
        let pad_len = usize::from(pad_len);
        let payload_len = ct_len
            .checked_sub(ESP_TRAILER_LEN + pad_len)
            .ok_or(EspError::BadPadding)?;
        let pad = ct
            .get(payload_len..payload_len + pad_len)
            .ok_or(EspError::BadPadding)?;
        // The default padding is 1, 2, 3, ... (RFC 4303 §2.4); check it like strongSwan's
        // libipsec does. Not secret: the ICV already verified.
        if pad.iter().zip(1u8..).any(|(&b, v)| b != v) {
            return Err(EspError::BadPadding);
        }
        if next_header == proto::NO_NEXT_HEADER {
            return Err(EspError::DummyPacket);
        }
        Ok(OpenedEsp {
            next_header,
            payload: ct_start..ct_start + payload_len,
            seq,
        })
    }
}

fn gcm_nonce(salt: &[u8; GCM_SALT_LEN], iv: &[u8]) -> Result<[u8; 12], EspError> {
    let mut nonce = [0u8; 12];
    let (s, i) = nonce.split_at_mut(GCM_SALT_LEN);
    s.copy_from_slice(salt);
    if iv.len() != i.len() {
        return Err(EspError::InvalidLength);
    }
    i.copy_from_slice(iv);
    Ok(nonce)
}

/// The high and low 32 bits of a 64-bit sequence number.
#[allow(clippy::cast_possible_truncation)] // intended: the two halves
const fn split_seq(seq: u64) -> (u32, u32) {
    ((seq >> 32) as u32, seq as u32)
}

/// RFC 4106 §5: AAD is SPI | seq (32-bit) or SPI | seq high | seq low with ESN.
fn esp_aad(buf: &mut [u8; 12], spi: u32, seq: u64, esn: bool) -> &[u8] {
    let (hi, lo) = split_seq(seq);
    let [a0, a1, a2, a3] = spi.to_be_bytes();
    let [h0, h1, h2, h3] = hi.to_be_bytes();
    let [l0, l1, l2, l3] = lo.to_be_bytes();
    if esn {
        *buf = [a0, a1, a2, a3, h0, h1, h2, h3, l0, l1, l2, l3];
        buf
    } else {
        *buf = [a0, a1, a2, a3, l0, l1, l2, l3, 0, 0, 0, 0];
        buf.get(..8).unwrap_or(&[])
    }
}
