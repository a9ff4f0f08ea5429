//! The HA sync channel: a secure, reliable datagram stream between the two nodes of a
//! redundancy group, sans-IO and allocation-free. Any transport will do (UDP on a
//! dedicated link, a VLAN, a serial line): the channel only consumes and produces
//! datagrams of at most `MTU` bytes.
//!
//! # Security
//!
//! Both nodes are configured with the same key `K` (`crypto ha key`), their own node id
//! and the peer's. `K` itself is never used to encrypt:
//!
//! 1. A handshake (`INIT` with the initiator's 32-byte nonce, `RESP` echoing it with the
//!    responder's nonce) is authenticated with HMAC-SHA-256-128 under
//!    `K_hs = PRF(K, "ipsec-ha v1 handshake")`. A replayed `INIT` only makes the
//!    responder prepare a session nobody can use; a replayed `RESP` matches no nonce.
//! 2. Session keys: `SKEYSEED = PRF(K, "ipsec-ha v1 session" | Ni | Nr | id_i | id_r |
//!    suite)`, then per sending node `X`: `enc_X = PRF(SKEYSEED, "enc" | X)`,
//!    `auth_X = PRF(SKEYSEED, "auth" | X)`, `salt_X = PRF(SKEYSEED, "salt" | X)[..4]`
//!    (PRF = HMAC-SHA-256 through [`hal_traits::Prf`]). Fresh nonces mean fresh keys on
//!    every (re)start, so packet counters can restart at 1 without ever reusing a GCM
//!    nonce or accepting a message of an older session.
//! 3. Every other message is encrypted and authenticated: AES-256-CBC with a random IV,
//!    then HMAC-SHA-256-128 over header, IV and ciphertext (encrypt-then-MAC), or
//!    AES-256-GCM-16 with nonce `salt | packet number` and the header as AAD. The MAC or
//!    tag is checked before anything is decrypted or believed.
//! 4. Packet numbers are strictly increasing per session and direction, checked against a
//!    64-packet sliding window before the MAC and updated after it: a replayed datagram
//!    is refused.
//!
//! # Reliability
//!
//! `DATA` messages carry a data sequence number and are delivered in order, exactly
//! once (go-back-N): out-of-order data is dropped and provokes a duplicate ACK; every
//! message carries the cumulative ACK of the data received. Sent data stays in a bounded
//! queue of `Q` messages until acknowledged and is resent (with a new packet number and
//! IV) when the oldest is not acknowledged within the retransmission timeout. When the
//! queue is full, [`SyncChannel::send`] refuses and the caller retries later: the sync
//! layer keeps its own "dirty" state, so nothing is lost.
//!
//! A `HEARTBEAT` is sent when nothing else was sent for the heartbeat interval; a peer
//! not heard from for the dead interval is reported lost ([`ChannelEvent::PeerLost`]) and
//! the handshake starts again. A new session is reported with [`ChannelEvent::PeerUp`],
//! the cue for the active node to send a full snapshot.
//!
//! # Wire format (version 1)
//!
//! ```text
//!  0: version (1)   1: type   2: suite   3: reserved (0)
//!  4: sender node id (u32)    8: session id (u32)
//! 12: packet number (u64)    20: data sequence number (u64, DATA only)
//! 28: cumulative ACK (u64)   36: body length (u16)   38: reserved (u16, 0)
//! 40: body (INIT: Ni; RESP: Ni | Nr; else: [IV (CBC)] | ciphertext)
//!     tag (16 bytes)
//! ```

use core::fmt;

use hal_traits::{
    Aead, AeadAlg, CbcCipher, CipherAlg, CryptoError, CryptoProvider, HashAlg, Mac, MacAlg, Prf,
    SecretBytes, SecureRng,
};
use heapless::{Deque, Vec};
use zeroize::Zeroize;

use crate::time::{Duration, Instant};

/// Protocol version.
pub const VERSION: u8 = 1;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;
/// Length of the MAC or AEAD tag.
pub const TAG_LEN: usize = 16;
/// Length of a handshake nonce.
pub const NONCE_LEN: usize = 32;
const IV_LEN: usize = 16;
const BLOCK: usize = 16;

/// Message types.
pub mod msg_type {
    /// Handshake request.
    pub const INIT: u8 = 1;
    /// Handshake response.
    pub const RESP: u8 = 2;
    /// Reliable data (sync records).
    pub const DATA: u8 = 3;
    /// Acknowledgement only.
    pub const ACK: u8 = 4;
    /// Keepalive.
    pub const HEARTBEAT: u8 = 5;
}

/// The protection of the channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Suite {
    /// AES-256-CBC and HMAC-SHA-256-128, encrypt-then-MAC.
    #[default]
    AesCbcHmacSha256,
    /// AES-256-GCM with a 16-byte tag.
    AesGcm,
}

impl Suite {
    const fn code(self) -> u8 {
        match self {
            Self::AesCbcHmacSha256 => 1,
            Self::AesGcm => 2,
        }
    }
}

/// Channel configuration.
#[derive(Clone, Debug)]
pub struct ChannelConfig {
    /// Our node id (any value, different from the peer's).
    pub node_id: u32,
    /// The peer's node id.
    pub peer_id: u32,
    /// Protection.
    pub suite: Suite,
    /// The configured key (any length; 32 random bytes recommended).
    pub key: SecretBytes<64>,
    /// Retransmission timeout of unacknowledged data.
    pub retransmit: Duration,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// The peer is lost when nothing was heard for this long.
    pub dead_interval: Duration,
    /// Interval between handshake attempts.
    pub hello_interval: Duration,
}

impl ChannelConfig {
    /// A configuration with 200 ms retransmission, 1 s heartbeats, 3 s dead interval and
    /// 1 s handshake retries.
    #[must_use]
    pub fn new(node_id: u32, peer_id: u32, suite: Suite, key: SecretBytes<64>) -> Self {
        Self {
            node_id,
            peer_id,
            suite,
            key,
            retransmit: Duration::from_millis(200),
            heartbeat: Duration::from_secs(1),
            dead_interval: Duration::from_secs(3),
            hello_interval: Duration::from_secs(1),
        }
    }
}

/// Why a datagram was refused or a call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ChannelError {
    /// Shorter than its header or its length fields say.
    Truncated,
    /// Another protocol version.
    BadVersion,
    /// A field holds a forbidden value (type, suite, lengths, padding).
    Malformed,
    /// Not from our configured peer, or for a session we do not have.
    UnknownPeer,
    /// The MAC or tag did not verify.
    AuthenticationFailed,
    /// A packet number already seen, or older than the window.
    Replayed,
    /// No session established yet.
    NoSession,
    /// The retransmission queue is full: retry later.
    Full,
    /// The payload does not fit in one datagram.
    TooLarge,
    /// The output buffer is smaller than the datagram.
    BufferTooSmall,
    /// The crypto provider failed.
    Crypto(CryptoError),
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("sync message truncated"),
            Self::BadVersion => f.write_str("unknown sync protocol version"),
            Self::Malformed => f.write_str("malformed sync message"),
            Self::UnknownPeer => f.write_str("sync message from an unknown peer or session"),
            Self::AuthenticationFailed => f.write_str("sync message authentication failed"),
            Self::Replayed => f.write_str("replayed sync message"),
            Self::NoSession => f.write_str("no sync session"),
            Self::Full => f.write_str("sync retransmission queue full"),
            Self::TooLarge => f.write_str("sync payload too large"),
            Self::BufferTooSmall => f.write_str("buffer too small for a sync message"),
            Self::Crypto(e) => write!(f, "sync channel crypto: {e}"),
        }
    }
}

impl core::error::Error for ChannelError {}

impl From<CryptoError> for ChannelError {
    fn from(e: CryptoError) -> Self {
        Self::Crypto(e)
    }
}

/// A parsed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Message type ([`msg_type`]).
    pub msg_type: u8,
    /// Suite code (1 CBC+HMAC, 2 GCM).
    pub suite: u8,
    /// Sender node id.
    pub sender: u32,
    /// Session id (0 in INIT).
    pub session: u32,
    /// Packet number.
    pub pkt_seq: u64,
    /// Data sequence number (DATA only).
    pub data_seq: u64,
    /// Cumulative acknowledgement.
    pub ack: u64,
    /// Body length.
    pub body_len: u16,
}

impl Header {
    fn emit(&self, out: &mut [u8]) -> Result<(), ChannelError> {
        let h = out
            .get_mut(..HEADER_LEN)
            .ok_or(ChannelError::BufferTooSmall)?;
        h.fill(0);
        let mut put = |at: usize, b: &[u8]| {
            if let Some(d) = h.get_mut(at..at + b.len()) {
                d.copy_from_slice(b);
            }
        };
        put(0, &[VERSION, self.msg_type, self.suite, 0]);
        put(4, &self.sender.to_be_bytes());
        put(8, &self.session.to_be_bytes());
        put(12, &self.pkt_seq.to_be_bytes());
        put(20, &self.data_seq.to_be_bytes());
        put(28, &self.ack.to_be_bytes());
        put(36, &self.body_len.to_be_bytes());
        Ok(())
    }
}

fn be<const N: usize>(b: &[u8], at: usize) -> Result<[u8; N], ChannelError> {
    let mut a = [0u8; N];
    a.copy_from_slice(
        b.get(at..at.saturating_add(N))
            .ok_or(ChannelError::Truncated)?,
    );
    Ok(a)
}

/// Parses a datagram into its header, body and tag, checking every length. Nothing is
/// authenticated yet. Trailing bytes after the tag are refused.
///
/// # Errors
/// [`ChannelError::Truncated`], [`ChannelError::BadVersion`], [`ChannelError::Malformed`].
pub fn parse(datagram: &[u8]) -> Result<(Header, &[u8], &[u8]), ChannelError> {
    let h = datagram.get(..HEADER_LEN).ok_or(ChannelError::Truncated)?;
    let [version, t, suite, rsvd] = be::<4>(h, 0)?;
    if version != VERSION {
        return Err(ChannelError::BadVersion);
    }
    if !(msg_type::INIT..=msg_type::HEARTBEAT).contains(&t)
        || !(1..=2).contains(&suite)
        || rsvd != 0
    {
        return Err(ChannelError::Malformed);
    }
    let header = Header {
        msg_type: t,
        suite,
        sender: u32::from_be_bytes(be(h, 4)?),
        session: u32::from_be_bytes(be(h, 8)?),
        pkt_seq: u64::from_be_bytes(be(h, 12)?),
        data_seq: u64::from_be_bytes(be(h, 20)?),
        ack: u64::from_be_bytes(be(h, 28)?),
        body_len: u16::from_be_bytes(be(h, 36)?),
    };
    if be::<2>(h, 38)? != [0, 0] {
        return Err(ChannelError::Malformed);
    }
    let body_end = HEADER_LEN + usize::from(header.body_len);
    let body = datagram
        .get(HEADER_LEN..body_end)
        .ok_or(ChannelError::Truncated)?;
    let tag = datagram
        .get(body_end..body_end + TAG_LEN)
        .ok_or(ChannelError::Truncated)?;
    if datagram.len() != body_end + TAG_LEN {
        return Err(ChannelError::Malformed);
    }
    let expected_body = match t {
        msg_type::INIT => Some(NONCE_LEN),
        msg_type::RESP => Some(2 * NONCE_LEN),
        _ => None,
    };
    if let Some(n) = expected_body {
        if body.len() != n {
            return Err(ChannelError::Malformed);
        }
    } else if suite == Suite::AesCbcHmacSha256.code()
        && (body.len() < IV_LEN + BLOCK || (body.len() - IV_LEN) % BLOCK != 0)
    {
        return Err(ChannelError::Malformed);
    }
    Ok((header, body, tag))
}

/// What a received datagram turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<'b> {
    /// In-order data: the payload (decrypted in the caller's buffer) for the sync layer.
    Data(&'b [u8]),
    /// Handshake, acknowledgement or heartbeat: nothing to deliver.
    Control,
    /// Data already delivered (a retransmission): acknowledged again, not delivered.
    Duplicate,
    /// Data after a gap: dropped, the sender will go back.
    OutOfOrder,
}

/// What the channel tells its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ChannelEvent {
    /// A new session with the peer is up (a (re)join): the active sends a snapshot.
    PeerUp {
        /// The session id.
        session: u32,
    },
    /// Nothing heard from the peer for the dead interval.
    PeerLost,
}

/// Channel counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ChannelCounters {
    /// Datagrams sent.
    pub sent: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Authentic datagrams received.
    pub received: u64,
    /// DATA messages sent for the first time.
    pub data_sent: u64,
    /// DATA messages sent again.
    pub retransmits: u64,
    /// ACK messages sent.
    pub acks_sent: u64,
    /// HEARTBEAT messages sent.
    pub heartbeats_sent: u64,
    /// Payloads delivered.
    pub delivered: u64,
    /// Refused: MAC or tag.
    pub auth_failed: u64,
    /// Refused: replayed packet number.
    pub replayed: u64,
    /// Refused: truncated, malformed, wrong version, unknown peer or session.
    pub malformed: u64,
    /// Data dropped after a gap.
    pub out_of_order: u64,
    /// Data received again.
    pub duplicates: u64,
    /// Sessions established.
    pub sessions: u64,
}

struct DirKeys<P: CryptoProvider> {
    cbc: Option<P::Cbc>,
    mac: Option<P::Mac>,
    aead: Option<P::Aead>,
    salt: [u8; 4],
}

impl<P: CryptoProvider> Drop for DirKeys<P> {
    fn drop(&mut self) {
        self.salt.zeroize();
    }
}

struct Session<P: CryptoProvider> {
    id: u32,
    tx: DirKeys<P>,
    rx: DirKeys<P>,
    tx_seq: u64,
    rx_top: u64,
    rx_bits: u64,
}

impl<P: CryptoProvider> Session<P> {
    fn replay_ok(&self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.rx_top {
            return true;
        }
        let d = self.rx_top - seq;
        d < 64 && self.rx_bits & (1u64 << d) == 0
    }

    fn replay_mark(&mut self, seq: u64) {
        if seq > self.rx_top {
            let shift = seq - self.rx_top;
            self.rx_bits = if shift >= 64 {
                0
            } else {
                self.rx_bits << shift
            };
            self.rx_bits |= 1;
            self.rx_top = seq;
        } else {
            let d = self.rx_top - seq;
            if d < 64 {
                self.rx_bits |= 1u64 << d;
            }
        }
    }
}

struct Pending<const MTU: usize> {
    data_seq: u64,
    sent_at: Option<Instant>,
    payload: Vec<u8, MTU>,
}

struct InitState {
    nonce: [u8; NONCE_LEN],
    next_at: Instant,
}

/// One end of the sync channel (see the [module docs](self)).
///
/// `Q` is the retransmission queue length in messages, `MTU` the largest datagram.
pub struct SyncChannel<P: CryptoProvider, const Q: usize = 16, const MTU: usize = 1400> {
    cfg: ChannelConfig,
    hs_mac: P::Mac,
    session: Option<Session<P>>,
    pending: Option<Session<P>>,
    init: Option<InitState>,
    resp: Option<([u8; NONCE_LEN], [u8; NONCE_LEN], u32)>,
    queue: Deque<Pending<MTU>, Q>,
    resend_from: usize,
    next_data_seq: u64,
    rx_expected: u64,
    ack_pending: bool,
    last_rx: Instant,
    last_tx: Instant,
    events: Deque<ChannelEvent, 4>,
    counters: ChannelCounters,
}

impl<P: CryptoProvider, const Q: usize, const MTU: usize> fmt::Debug for SyncChannel<P, Q, MTU> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncChannel")
            .field("node_id", &self.cfg.node_id)
            .field("peer_id", &self.cfg.peer_id)
            .field("session", &self.session.as_ref().map(|s| s.id))
            .field("queued", &self.queue.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

fn prf32<P: CryptoProvider>(key: &[u8], parts: &[&[u8]]) -> Result<[u8; 32], ChannelError> {
    let prf = P::Prf::new(HashAlg::Sha256, key)?;
    let mut out = [0u8; 32];
    prf.compute(parts, &mut out)?;
    Ok(out)
}

impl<P: CryptoProvider, const Q: usize, const MTU: usize> SyncChannel<P, Q, MTU> {
    /// A channel that starts its handshake at the first [`SyncChannel::poll_transmit`].
    ///
    /// # Errors
    /// [`ChannelError::Crypto`] if the provider lacks HMAC-SHA-256; [`ChannelError::Malformed`]
    /// for equal node ids or an `MTU` too small for a message.
    pub fn new(cfg: ChannelConfig, now: Instant) -> Result<Self, ChannelError> {
        if cfg.node_id == cfg.peer_id || MTU < HEADER_LEN + 2 * NONCE_LEN + TAG_LEN + 64 {
            return Err(ChannelError::Malformed);
        }
        let mut k = prf32::<P>(cfg.key.expose(), &[b"ipsec-ha v1 handshake"])?;
        let hs_mac = P::Mac::new(MacAlg::HmacSha256_128, &k);
        k.zeroize();
        Ok(Self {
            cfg,
            hs_mac: hs_mac?,
            session: None,
            pending: None,
            init: None,
            resp: None,
            queue: Deque::new(),
            resend_from: 0,
            next_data_seq: 1,
            rx_expected: 1,
            ack_pending: false,
            last_rx: now,
            last_tx: now,
            events: Deque::new(),
            counters: ChannelCounters::default(),
        })
    }

    /// The configuration.
    #[must_use]
    pub const fn config(&self) -> &ChannelConfig {
        &self.cfg
    }

    /// The counters.
    #[must_use]
    pub const fn counters(&self) -> &ChannelCounters {
        &self.counters
    }

    /// Whether a session is established (data can be sent).
    #[must_use]
    pub const fn is_connected(&self) -> bool {
        self.session.is_some()
    }

    /// Messages sent and not yet acknowledged.
    #[must_use]
    pub fn unacked(&self) -> usize {
        self.queue.len()
    }

    /// Room in the retransmission queue.
    #[must_use]
    pub fn queue_room(&self) -> usize {
        Q.saturating_sub(self.queue.len())
    }

    /// The largest payload one [`SyncChannel::send`] takes.
    #[must_use]
    pub const fn max_payload(&self) -> usize {
        let room = MTU.saturating_sub(HEADER_LEN + TAG_LEN);
        match self.cfg.suite {
            Suite::AesGcm => room,
            Suite::AesCbcHmacSha256 => {
                (room.saturating_sub(IV_LEN) / BLOCK * BLOCK).saturating_sub(1)
            }
        }
    }

    /// Datagram length for a payload of `len` bytes.
    #[must_use]
    pub const fn datagram_len(&self, len: usize) -> usize {
        match self.cfg.suite {
            Suite::AesGcm => HEADER_LEN + len + TAG_LEN,
            Suite::AesCbcHmacSha256 => HEADER_LEN + IV_LEN + (len / BLOCK + 1) * BLOCK + TAG_LEN,
        }
    }

    /// Queues `payload` for reliable, in-order delivery. Returns its data sequence
    /// number.
    ///
    /// # Errors
    /// [`ChannelError::NoSession`], [`ChannelError::TooLarge`], [`ChannelError::Full`].
    pub fn send(&mut self, payload: &[u8]) -> Result<u64, ChannelError> {
        if self.session.is_none() {
            return Err(ChannelError::NoSession);
        }
        if payload.len() > self.max_payload() {
            return Err(ChannelError::TooLarge);
        }
        let mut v = Vec::new();
        v.extend_from_slice(payload)
            .map_err(|_| ChannelError::TooLarge)?;
        let seq = self.next_data_seq;
        self.queue
            .push_back(Pending {
                data_seq: seq,
                sent_at: None,
                payload: v,
            })
            .map_err(|_| ChannelError::Full)?;
        self.next_data_seq += 1;
        Ok(seq)
    }

    fn derive(
        &self,
        ni: &[u8; NONCE_LEN],
        nr: &[u8; NONCE_LEN],
        initiator: u32,
        responder: u32,
    ) -> Result<Session<P>, ChannelError> {
        let suite = [self.cfg.suite.code()];
        let mut seed = prf32::<P>(
            self.cfg.key.expose(),
            &[
                b"ipsec-ha v1 session",
                ni,
                nr,
                &initiator.to_be_bytes(),
                &responder.to_be_bytes(),
                &suite,
            ],
        )?;
        let sid = prf32::<P>(&seed, &[b"sid"])?;
        let mut id = u32::from_be_bytes([sid[0], sid[1], sid[2], sid[3]]);
        if id == 0 {
            id = 1;
        }
        let tx = self.dir_keys(&seed, self.cfg.node_id);
        let rx = self.dir_keys(&seed, self.cfg.peer_id);
        seed.zeroize();
        Ok(Session {
            id,
            tx: tx?,
            rx: rx?,
            tx_seq: 0,
            rx_top: 0,
            rx_bits: 0,
        })
    }

    fn dir_keys(&self, seed: &[u8; 32], node: u32) -> Result<DirKeys<P>, ChannelError> {
        let n = node.to_be_bytes();
        let mut enc = prf32::<P>(seed, &[b"enc", &n])?;
        let mut keys = DirKeys {
            cbc: None,
            mac: None,
            aead: None,
            salt: [0; 4],
        };
        match self.cfg.suite {
            Suite::AesCbcHmacSha256 => {
                let mut auth = prf32::<P>(seed, &[b"auth", &n])?;
                keys.cbc = Some(P::Cbc::new(CipherAlg::Aes256Cbc, &enc)?);
                keys.mac = Some(P::Mac::new(MacAlg::HmacSha256_128, &auth)?);
                auth.zeroize();
            }
            Suite::AesGcm => {
                let mut salt = prf32::<P>(seed, &[b"salt", &n])?;
                keys.aead = Some(P::Aead::new(AeadAlg::Aes256Gcm16, &enc)?);
                keys.salt.copy_from_slice(salt.get(..4).unwrap_or(&[0; 4]));
                salt.zeroize();
            }
        }
        enc.zeroize();
        Ok(keys)
    }

    fn reset_stream(&mut self) {
        self.queue.clear();
        self.resend_from = 0;
        self.next_data_seq = 1;
        self.rx_expected = 1;
        self.ack_pending = false;
    }

    fn established(&mut self, now: Instant, s: Session<P>) {
        let id = s.id;
        self.session = Some(s);
        self.pending = None;
        self.init = None;
        self.reset_stream();
        self.last_rx = now;
        self.counters.sessions = self.counters.sessions.saturating_add(1);
        if self.events.is_full() {
            let _ = self.events.pop_front();
        }
        let _ = self.events.push_back(ChannelEvent::PeerUp { session: id });
    }

    /// Handles a datagram from the peer, decrypting it in place.
    ///
    /// # Errors
    /// [`ChannelError::Truncated`], [`ChannelError::BadVersion`], [`ChannelError::Malformed`],
    /// [`ChannelError::UnknownPeer`], [`ChannelError::AuthenticationFailed`],
    /// [`ChannelError::Replayed`], [`ChannelError::Crypto`] (no state changes on any).
    pub fn handle_datagram<'b, R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        data: &'b mut [u8],
    ) -> Result<Received<'b>, ChannelError> {
        let r = self.handle_inner(now, rng, data);
        if let Err(e) = &r {
            let c = match e {
                ChannelError::AuthenticationFailed => &mut self.counters.auth_failed,
                ChannelError::Replayed => &mut self.counters.replayed,
                _ => &mut self.counters.malformed,
            };
            *c = c.saturating_add(1);
        }
        r
    }

    fn handle_inner<'b, R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        data: &'b mut [u8],
    ) -> Result<Received<'b>, ChannelError> {
        let (h, body, tag) = parse(data)?;
        if h.sender != self.cfg.peer_id || h.suite != self.cfg.suite.code() {
            return Err(ChannelError::UnknownPeer);
        }
        let body_end = HEADER_LEN + usize::from(h.body_len);
        match h.msg_type {
            msg_type::INIT | msg_type::RESP => {
                let authed = data.get(..body_end).ok_or(ChannelError::Truncated)?;
                self.hs_mac
                    .verify(&[authed], tag)
                    .map_err(|_| ChannelError::AuthenticationFailed)?;
                let mut ni = [0u8; NONCE_LEN];
                ni.copy_from_slice(body.get(..NONCE_LEN).ok_or(ChannelError::Truncated)?);
                self.counters.received = self.counters.received.saturating_add(1);
                if h.msg_type == msg_type::INIT {
                    self.on_init(rng, ni)?;
                } else {
                    let mut nr = [0u8; NONCE_LEN];
                    nr.copy_from_slice(body.get(NONCE_LEN..).ok_or(ChannelError::Truncated)?);
                    self.on_resp(now, &h, &ni, &nr)?;
                }
                return Ok(Received::Control);
            }
            _ => {}
        }
        // Session traffic: the current session, or a pending one it confirms.
        let use_pending = match (&self.session, &self.pending) {
            (Some(s), _) if s.id == h.session => false,
            (_, Some(p)) if p.id == h.session => true,
            _ => return Err(ChannelError::UnknownPeer),
        };
        let s = if use_pending {
            self.pending.as_ref()
        } else {
            self.session.as_ref()
        }
        .ok_or(ChannelError::UnknownPeer)?;
        if !s.replay_ok(h.pkt_seq) {
            return Err(ChannelError::Replayed);
        }
        let pt = open::<P>(&s.rx, &h, data, body_end)?;
        // Authentic.
        if use_pending {
            if let Some(p) = self.pending.take() {
                self.established(now, p);
            }
        }
        let Some(s) = self.session.as_mut() else {
            return Err(ChannelError::UnknownPeer);
        };
        s.replay_mark(h.pkt_seq);
        self.last_rx = now;
        self.counters.received = self.counters.received.saturating_add(1);
        self.on_ack(h.ack);
        if h.msg_type != msg_type::DATA {
            return Ok(Received::Control);
        }
        self.ack_pending = true;
        if h.data_seq == self.rx_expected {
            self.rx_expected += 1;
            self.counters.delivered = self.counters.delivered.saturating_add(1);
            Ok(Received::Data(data.get(pt).unwrap_or(&[])))
        } else if h.data_seq < self.rx_expected {
            self.counters.duplicates = self.counters.duplicates.saturating_add(1);
            Ok(Received::Duplicate)
        } else {
            self.counters.out_of_order = self.counters.out_of_order.saturating_add(1);
            Ok(Received::OutOfOrder)
        }
    }

    fn on_init<R: SecureRng>(
        &mut self,
        rng: &mut R,
        ni: [u8; NONCE_LEN],
    ) -> Result<(), ChannelError> {
        if self.init.is_some() && self.cfg.node_id > self.cfg.peer_id {
            // Both initiated: the higher node id stays initiator; the peer answers ours.
            return Ok(());
        }
        let mut nr = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nr)?;
        let s = self.derive(&ni, &nr, self.cfg.peer_id, self.cfg.node_id)?;
        self.resp = Some((ni, nr, s.id));
        self.pending = Some(s);
        self.init = None;
        Ok(())
    }

    fn on_resp(
        &mut self,
        now: Instant,
        h: &Header,
        ni: &[u8; NONCE_LEN],
        nr: &[u8; NONCE_LEN],
    ) -> Result<(), ChannelError> {
        let Some(init) = &self.init else {
            return Err(ChannelError::UnknownPeer);
        };
        if init.nonce != *ni {
            return Err(ChannelError::UnknownPeer);
        }
        let s = self.derive(ni, nr, self.cfg.node_id, self.cfg.peer_id)?;
        if s.id != h.session {
            return Err(ChannelError::Malformed);
        }
        self.established(now, s);
        // Confirm the session to the responder at once.
        self.ack_pending = true;
        Ok(())
    }

    fn on_ack(&mut self, ack: u64) {
        if ack >= self.next_data_seq {
            return; // acknowledges what we never sent: ignore
        }
        while self.queue.front().is_some_and(|p| p.data_seq <= ack) {
            let _ = self.queue.pop_front();
            self.resend_from = self.resend_from.saturating_sub(1);
        }
    }

    /// The next datagram to send, written into `buf` (at least `MTU` bytes). Returns its
    /// length.
    #[must_use]
    pub fn poll_transmit<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        buf: &mut [u8],
    ) -> Option<usize> {
        let r = self.transmit_inner(now, rng, buf);
        if let Some(n) = r {
            self.counters.sent = self.counters.sent.saturating_add(1);
            self.counters.bytes_sent = self
                .counters
                .bytes_sent
                .saturating_add(u64::try_from(n).unwrap_or(0));
            self.last_tx = now;
        }
        r
    }

    fn handshake(&self, t: u8, session: u32, body: &[&[u8]], buf: &mut [u8]) -> Option<usize> {
        let len: usize = body.iter().map(|b| b.len()).sum();
        let end = HEADER_LEN + len;
        let h = Header {
            msg_type: t,
            suite: self.cfg.suite.code(),
            sender: self.cfg.node_id,
            session,
            pkt_seq: 0,
            data_seq: 0,
            ack: 0,
            body_len: u16::try_from(len).ok()?,
        };
        h.emit(buf).ok()?;
        let mut at = HEADER_LEN;
        for b in body {
            buf.get_mut(at..at + b.len())?.copy_from_slice(b);
            at += b.len();
        }
        let (authed, rest) = buf.split_at_mut(end);
        self.hs_mac
            .compute(&[authed], rest.get_mut(..TAG_LEN)?)
            .ok()?;
        Some(end + TAG_LEN)
    }

    fn transmit_inner<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        buf: &mut [u8],
    ) -> Option<usize> {
        if buf.len() < MTU {
            return None;
        }
        if let Some((ni, nr, sid)) = self.resp.take() {
            return self.handshake(msg_type::RESP, sid, &[&ni, &nr], buf);
        }
        if self.session.is_none() && self.pending.is_none() {
            if self.init.is_none() {
                let mut nonce = [0u8; NONCE_LEN];
                rng.fill_bytes(&mut nonce).ok()?;
                self.init = Some(InitState {
                    nonce,
                    next_at: now,
                });
            }
            if let Some(init) = self.init.as_mut().filter(|i| i.next_at <= now) {
                init.next_at = now + self.cfg.hello_interval;
                let nonce = init.nonce;
                return self.handshake(msg_type::INIT, 0, &[&nonce], buf);
            }
            return None;
        }
        self.session.as_ref()?;
        let ack = self.rx_expected - 1;
        // Data first (new or resent), then a bare ACK, then a heartbeat.
        if self.resend_from < self.queue.len() {
            let i = self.resend_from;
            let mut payload: Vec<u8, MTU> = Vec::new();
            let mut data_seq = 0;
            let mut again = false;
            if let Some(p) = self.queue.iter_mut().nth(i) {
                again = p.sent_at.is_some();
                p.sent_at = Some(now);
                data_seq = p.data_seq;
                payload = p.payload.clone();
            }
            self.resend_from += 1;
            let n = self.seal(rng, msg_type::DATA, data_seq, ack, &payload, buf)?;
            let c = if again {
                &mut self.counters.retransmits
            } else {
                &mut self.counters.data_sent
            };
            *c = c.saturating_add(1);
            self.ack_pending = false;
            return Some(n);
        }
        if self.ack_pending {
            self.ack_pending = false;
            self.counters.acks_sent = self.counters.acks_sent.saturating_add(1);
            return self.seal(rng, msg_type::ACK, 0, ack, &[], buf);
        }
        if now >= self.last_tx + self.cfg.heartbeat {
            self.counters.heartbeats_sent = self.counters.heartbeats_sent.saturating_add(1);
            return self.seal(rng, msg_type::HEARTBEAT, 0, ack, &[], buf);
        }
        None
    }

    fn seal<R: SecureRng>(
        &mut self,
        rng: &mut R,
        t: u8,
        data_seq: u64,
        ack: u64,
        payload: &[u8],
        buf: &mut [u8],
    ) -> Option<usize> {
        let suite = self.cfg.suite;
        let node = self.cfg.node_id;
        let s = self.session.as_mut()?;
        s.tx_seq += 1;
        let body_len = match suite {
            Suite::AesGcm => payload.len(),
            Suite::AesCbcHmacSha256 => IV_LEN + (payload.len() / BLOCK + 1) * BLOCK,
        };
        let h = Header {
            msg_type: t,
            suite: suite.code(),
            sender: node,
            session: s.id,
            pkt_seq: s.tx_seq,
            data_seq,
            ack,
            body_len: u16::try_from(body_len).ok()?,
        };
        let end = HEADER_LEN + body_len;
        if buf.len() < end + TAG_LEN {
            return None;
        }
        h.emit(buf).ok()?;
        let (authed, rest) = buf.split_at_mut(end);
        let tag = rest.get_mut(..TAG_LEN)?;
        let (hdr, body) = authed.split_at_mut(HEADER_LEN);
        match suite {
            Suite::AesGcm => {
                body.get_mut(..payload.len())?.copy_from_slice(payload);
                let nonce = gcm_nonce(&s.tx.salt, s.tx_seq);
                s.tx.aead.as_ref()?.seal(&nonce, hdr, body, tag).ok()?;
            }
            Suite::AesCbcHmacSha256 => {
                let (iv, ct) = body.split_at_mut(IV_LEN);
                rng.fill_bytes(iv).ok()?;
                ct.get_mut(..payload.len())?.copy_from_slice(payload);
                let pad = ct.len() - payload.len();
                for b in ct.get_mut(payload.len()..)? {
                    *b = u8::try_from(pad).ok()?;
                }
                s.tx.cbc.as_ref()?.encrypt(iv, ct).ok()?;
                s.tx.mac.as_ref()?.compute(&[authed], tag).ok()?;
            }
        }
        Some(end + TAG_LEN)
    }

    /// The earliest deadline: handshake retry, retransmission, heartbeat, dead peer.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut at = |x: Instant| t = Some(t.map_or(x, |y| y.min(x)));
        if let Some(i) = &self.init {
            at(i.next_at);
        }
        if self.session.is_some() {
            at(self.last_tx + self.cfg.heartbeat);
            at(self.last_rx + self.cfg.dead_interval);
            if let Some(sent) = self.queue.front().and_then(|p| p.sent_at) {
                at(sent + self.cfg.retransmit);
            }
        } else if self.init.is_none() && self.pending.is_none() {
            at(self.last_tx);
        }
        t
    }

    /// Fires due deadlines. A spurious call is a no-op.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.session.is_some() && now >= self.last_rx + self.cfg.dead_interval {
            self.session = None;
            self.pending = None;
            self.reset_stream();
            if self.events.is_full() {
                let _ = self.events.pop_front();
            }
            let _ = self.events.push_back(ChannelEvent::PeerLost);
            return;
        }
        if self
            .queue
            .front()
            .and_then(|p| p.sent_at)
            .is_some_and(|t| now >= t + self.cfg.retransmit)
        {
            // Go back N: everything unacknowledged is sent again.
            self.resend_from = 0;
        }
        if self.pending.is_some()
            && self.session.is_none()
            && now >= self.last_rx + self.cfg.dead_interval
        {
            // The initiator never confirmed: start over.
            self.pending = None;
        }
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ChannelEvent> {
        self.events.pop_front()
    }
}

fn gcm_nonce(salt: &[u8; 4], seq: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    let (a, b) = n.split_at_mut(4);
    a.copy_from_slice(salt);
    b.copy_from_slice(&seq.to_be_bytes());
    n
}

/// Verifies and decrypts in place; returns the plaintext range.
fn open<P: CryptoProvider>(
    keys: &DirKeys<P>,
    h: &Header,
    data: &mut [u8],
    body_end: usize,
) -> Result<core::ops::Range<usize>, ChannelError> {
    if data.len() < body_end + TAG_LEN {
        return Err(ChannelError::Truncated);
    }
    let (authed, rest) = data.split_at_mut(body_end);
    let tag = rest.get(..TAG_LEN).ok_or(ChannelError::Truncated)?;
    if let (Some(aead), None) = (&keys.aead, &keys.cbc) {
        let (hdr, body) = authed.split_at_mut(HEADER_LEN);
        let nonce = gcm_nonce(&keys.salt, h.pkt_seq);
        aead.open(&nonce, hdr, body, tag)
            .map_err(|_| ChannelError::AuthenticationFailed)?;
        return Ok(HEADER_LEN..body_end);
    }
    let (Some(cbc), Some(mac)) = (&keys.cbc, &keys.mac) else {
        return Err(ChannelError::Malformed);
    };
    mac.verify(&[authed], tag)
        .map_err(|_| ChannelError::AuthenticationFailed)?;
    let body = authed
        .get_mut(HEADER_LEN..)
        .ok_or(ChannelError::Truncated)?;
    let (iv, ct) = body.split_at_mut(IV_LEN);
    cbc.decrypt(iv, ct)?;
    // Authentic, so the padding is no oracle; check it anyway.
    let pad = usize::from(*ct.last().ok_or(ChannelError::Malformed)?);
    if pad == 0 || pad > BLOCK || pad > ct.len() {
        return Err(ChannelError::Malformed);
    }
    let n = ct.len() - pad;
    if ct
        .get(n..)
        .is_none_or(|p| p.iter().any(|&b| usize::from(b) != pad))
    {
        return Err(ChannelError::Malformed);
    }
    Ok(HEADER_LEN + IV_LEN..HEADER_LEN + IV_LEN + n)
}
