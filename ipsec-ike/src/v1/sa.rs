//! The state the control plane keeps: IKE SAs with their Quick Mode exchanges, child
//! SA records, transmit slots, and small fixed-size helpers. All inline, no heap.

use core::net::{IpAddr, SocketAddr};

use hal_traits::{
    CbcCipher, CipherAlg, CryptoError, CryptoProvider, DhGroup, HashAlg, MAX_DH_LEN, Prf,
    SecretBytes, SecureRng,
};
use ipsec_core::Instant;
use ipsec_core::esp::EspConfig;
use ipsec_core::spd::Selector;

use super::IkeError;
use super::config::{ExchangeMode, Psk, Retransmit};
use super::events::{FailReason, NatStatus};
use super::keys::{EncryptionKey, Iv, Keymat, Phase1Keys};
use super::status::{IsakmpState, Role};
use crate::wire::ike_attr::Phase1Transform;
use crate::wire::ipsec_attr::EspTransform;
use crate::wire::vendor_id::NatTVariant;

/// Largest ISAKMP message we send or keep for retransmission (without the non-ESP
/// marker).
pub const TX_BUF: usize = 1536;
/// Largest ISAKMP message we accept.
pub const RX_BUF: usize = 2048;
/// Largest one-shot message (Informational, error notify).
pub const ONESHOT_BUF: usize = 512;
/// One-shot messages queued for `poll_transmit`.
pub const ONESHOT_QUEUE: usize = 8;
/// Longest nonce (RFC 2409 §5: 8..=256 bytes).
pub const MAX_NONCE: usize = 256;
/// Length of the nonces we send.
pub const NONCE_LEN: usize = 32;
/// Longest SA payload body we keep (SAi_b for HASH_I/HASH_R).
pub const MAX_SA_BODY: usize = 1024;
/// Longest phase-1 identification body we keep (a peer's IDii_b/IDir_b).
pub const MAX_ID_BODY: usize = 256;
/// Longest Quick Mode client identity body (IPv6 range: 4 + 32).
pub const MAX_QM_ID: usize = 36;
/// Quick Mode exchanges in flight (or lingering for retransmissions) per IKE SA.
pub const QM_SLOTS: usize = 2;
/// Quick Mode requests waiting for their phase 1.
pub const PENDING_QM: usize = 4;
/// Message IDs remembered per IKE SA to refuse replays and reuse.
pub const RECENT_MIDS: usize = 16;
/// Length of the fingerprint that recognises a retransmitted message.
pub const FINGERPRINT_LEN: usize = 20;

/// A message fingerprint (SHA-1 of the message bytes; not a security function, it only
/// decides when to resend a stored reply).
pub type Fingerprint = [u8; FINGERPRINT_LEN];

/// Computes a message fingerprint.
pub fn fingerprint<P: Prf>(msg: &[u8]) -> Result<Fingerprint, CryptoError> {
    let mut out = [0u8; hal_traits::MAX_HASH_LEN];
    P::hash(HashAlg::Sha1, &[msg], &mut out)?;
    let mut f = [0u8; FINGERPRINT_LEN];
    f.copy_from_slice(out.get(..FINGERPRINT_LEN).unwrap_or(&[0; FINGERPRINT_LEN]));
    Ok(f)
}

/// Up to `N` bytes (not secret).
#[derive(Clone)]
pub struct Buf<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Buf<N> {
    /// Empty.
    pub const fn new() -> Self {
        Self {
            bytes: [0; N],
            len: 0,
        }
    }

    /// Replaces the contents.
    pub fn set(&mut self, src: &[u8]) -> Result<(), IkeError> {
        self.bytes
            .get_mut(..src.len())
            .ok_or(IkeError::TooLarge)?
            .copy_from_slice(src);
        self.len = src.len();
        Ok(())
    }

    /// The whole storage, to be filled and then committed with [`Buf::set_len`].
    pub fn storage(&mut self) -> &mut [u8; N] {
        &mut self.bytes
    }

    /// Commits a length after writing into [`Buf::storage`].
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(N);
    }

    /// The contents.
    pub fn as_slice(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }

    /// Whether empty.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Random bytes into a fixed array.
pub fn random<R: SecureRng, const N: usize>(rng: &mut R) -> Result<[u8; N], IkeError> {
    let mut b = [0u8; N];
    rng.fill_bytes(&mut b)?;
    Ok(b)
}

/// A random non-zero `u32` for which `taken` is false (bounded tries).
pub fn random_u32<R: SecureRng>(
    rng: &mut R,
    min: u32,
    taken: impl Fn(u32) -> bool,
) -> Result<u32, IkeError> {
    for _ in 0..32 {
        let v = u32::from_be_bytes(random::<R, 4>(rng)?);
        if v >= min && v != 0 && !taken(v) {
            return Ok(v);
        }
    }
    Err(IkeError::Crypto(CryptoError::Rng))
}

/// One stored outgoing message with its retransmission state.
pub struct TxSlot {
    pub buf: [u8; TX_BUF],
    pub len: usize,
    /// To be handed out by `poll_transmit`.
    pub pending: bool,
    /// Transmissions after the first so far.
    pub sent: u8,
    /// When to retransmit (or give up); `None`: not retransmitted by timer.
    pub deadline: Option<Instant>,
}

/// What a retransmission timer decided.
pub enum TxTimeout {
    /// Nothing due.
    Idle,
    /// Retransmitted.
    Resent,
    /// Retransmissions exhausted.
    GiveUp,
}

impl TxSlot {
    pub const fn new() -> Self {
        Self {
            buf: [0; TX_BUF],
            len: 0,
            pending: false,
            sent: 0,
            deadline: None,
        }
    }

    /// A new message was written into `buf[..len]`: send it, and retransmit it on
    /// timeouts if `retransmit`.
    pub fn arm(&mut self, len: usize, now: Instant, rt: &Retransmit, retransmit: bool) {
        self.len = len;
        self.pending = true;
        self.sent = 0;
        self.deadline = retransmit.then(|| now + rt.timeout_after(0));
    }

    /// Stops retransmitting (the message stays stored for duplicates).
    pub fn disarm(&mut self) {
        self.deadline = None;
    }

    /// Sends the stored message again (the peer retransmitted its request).
    pub fn resend(&mut self) {
        if self.len > 0 {
            self.pending = true;
        }
    }

    pub fn on_timeout(&mut self, now: Instant, rt: &Retransmit) -> TxTimeout {
        match self.deadline {
            Some(d) if d <= now => {
                if self.sent >= rt.tries {
                    self.deadline = None;
                    TxTimeout::GiveUp
                } else {
                    self.sent += 1;
                    self.pending = true;
                    self.deadline = Some(now + rt.timeout_after(self.sent));
                    TxTimeout::Resent
                }
            }
            _ => TxTimeout::Idle,
        }
    }

    pub fn message(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

/// Phase-1 progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum P1State {
    MmI1,
    MmI3,
    MmI5,
    MmR2,
    MmR4,
    AmI1,
    AmR2,
    Established,
}

impl P1State {
    pub const fn status(self) -> IsakmpState {
        match self {
            Self::MmI1 => IsakmpState::MmNoState,
            Self::MmI3 | Self::MmR2 => IsakmpState::MmSaSetup,
            Self::MmI5 | Self::MmR4 => IsakmpState::MmKeyExch,
            Self::AmI1 => IsakmpState::AgNoState,
            Self::AmR2 => IsakmpState::AgInitExch,
            Self::Established => IsakmpState::QmIdle,
        }
    }
}

/// The phase-1 keys once the key exchange is done. The cipher is keyed per message
/// from Ka (cheap, and it keeps an expanded key schedule out of every SA).
pub struct P1Crypto<P: CryptoProvider> {
    pub keys: Phase1Keys<P::Prf>,
    pub ka: EncryptionKey,
    pub alg: CipherAlg,
    pub block: usize,
}

impl<P: CryptoProvider> P1Crypto<P> {
    /// The phase-1 cipher, keyed with Ka.
    pub fn cbc(&self) -> Result<P::Cbc, IkeError> {
        Ok(<P::Cbc as CbcCipher>::new(self.alg, self.ka.expose())?)
    }
}

/// A Quick Mode request waiting for phase 1 (or for a free slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QmRequest {
    pub crypto_map: u32,
    pub replaces: Option<u32>,
    /// Further peers to try if this negotiation fails.
    pub attempts_left: u8,
    /// Proxy identities to propose instead of the entry's (rekey of a child whose
    /// selector was negotiated, e.g. on a dynamic entry).
    pub selector: Option<Selector>,
}

/// Quick Mode progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QmState {
    /// Initiator: QM1 sent.
    I1,
    /// Responder: QM2 sent.
    R2,
    /// Done (initiator sent QM3, or responder got it); kept to answer retransmissions.
    Done,
}

/// One Quick Mode exchange.
pub struct QuickMode<P: CryptoProvider> {
    pub role: Role,
    pub state: QmState,
    pub mid: u32,
    pub req: QmRequest,
    pub iv: Iv,
    pub ni: Buf<MAX_NONCE>,
    pub nr: Buf<MAX_NONCE>,
    pub spi_in: u32,
    pub spi_out: u32,
    pub esp: Option<EspTransform>,
    pub ts_index: usize,
    /// Our view: local = our proxy identity.
    pub selector: Option<Selector>,
    /// Responder: the received IDci/IDcr bodies (echoed in QM2).
    pub idci: Buf<MAX_QM_ID>,
    pub idcr: Buf<MAX_QM_ID>,
    pub dh: Option<P::Dh>,
    pub pfs: Option<DhGroup>,
    pub gxy: Option<SecretBytes<MAX_DH_LEN>>,
    pub tx: TxSlot,
    pub last_rx: Option<Fingerprint>,
    /// When a done exchange is forgotten.
    pub linger: Option<Instant>,
    /// Responder: when an unanswered exchange is given up.
    pub deadline: Option<Instant>,
    /// NAT-OA received: (the peer's original address, ours as the peer saw it).
    pub nat_oa: Option<(IpAddr, IpAddr)>,
}

impl<P: CryptoProvider> QuickMode<P> {
    pub fn new(role: Role, mid: u32, req: QmRequest, iv: Iv) -> Self {
        Self {
            role,
            state: if matches!(role, Role::Initiator) {
                QmState::I1
            } else {
                QmState::R2
            },
            mid,
            req,
            iv,
            ni: Buf::new(),
            nr: Buf::new(),
            spi_in: 0,
            spi_out: 0,
            esp: None,
            ts_index: 0,
            selector: None,
            idci: Buf::new(),
            idcr: Buf::new(),
            dh: None,
            pfs: None,
            gxy: None,
            tx: TxSlot::new(),
            last_rx: None,
            linger: None,
            deadline: None,
            nat_oa: None,
        }
    }
}

/// One IKE (ISAKMP) SA and everything it negotiates.
pub struct IkeSa<P: CryptoProvider> {
    pub conn_id: u32,
    pub role: Role,
    pub mode: ExchangeMode,
    pub state: P1State,
    pub cky_i: [u8; 8],
    pub cky_r: [u8; 8],
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub created: Instant,
    pub established_at: Option<Instant>,
    pub expires: Option<Instant>,
    pub rekey_at: Option<Instant>,
    pub chosen: Option<Phase1Transform>,
    pub lifetime_secs: u64,
    pub peer_natt: Option<NatTVariant>,
    pub peer_dpd: bool,
    pub nat: NatStatus,
    pub dh: Option<P::Dh>,
    pub g_xi: Buf<MAX_DH_LEN>,
    pub g_xr: Buf<MAX_DH_LEN>,
    pub ni: Buf<MAX_NONCE>,
    pub nr: Buf<MAX_NONCE>,
    pub sai_b: Buf<MAX_SA_BODY>,
    /// The peer's phase-1 identification body (AM responder: IDii_b for HASH_I).
    pub peer_id: Buf<MAX_ID_BODY>,
    pub psk: Option<Psk>,
    pub crypto: Option<P1Crypto<P>>,
    /// The phase-1 CBC chain.
    pub iv: Option<Iv>,
    /// The last phase-1 CBC block (seeds Quick Mode and Informational IVs).
    pub last_block: Option<Iv>,
    pub tx: TxSlot,
    pub last_rx: Option<Fingerprint>,
    pub qm: [Option<QuickMode<P>>; QM_SLOTS],
    pub pending: heapless::Vec<QmRequest, PENDING_QM>,
    pub recent_mids: [u32; RECENT_MIDS],
    pub mid_next: usize,
    /// The crypto map entry this SA was initiated for (peer failover).
    pub crypto_map: Option<u32>,
    pub attempts_left: u8,
    /// An unauthenticated error seen meanwhile: the reason if the exchange times out.
    pub recorded: Option<FailReason>,
    pub rekey_started: bool,
    pub send_initial_contact: bool,
    /// DPD: the last R-U-THERE sequence number sent, and the one awaiting its ACK.
    pub dpd_seq: u32,
    pub dpd_outstanding: Option<u32>,
}

impl<P: CryptoProvider> IkeSa<P> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        conn_id: u32,
        role: Role,
        mode: ExchangeMode,
        cky_i: [u8; 8],
        cky_r: [u8; 8],
        local: SocketAddr,
        remote: SocketAddr,
        now: Instant,
    ) -> Self {
        let state = match (role, mode) {
            (Role::Initiator, ExchangeMode::Main) => P1State::MmI1,
            (Role::Initiator, ExchangeMode::Aggressive) => P1State::AmI1,
            (Role::Responder, ExchangeMode::Main) => P1State::MmR2,
            (Role::Responder, ExchangeMode::Aggressive) => P1State::AmR2,
        };
        Self {
            conn_id,
            role,
            mode,
            state,
            cky_i,
            cky_r,
            local,
            remote,
            created: now,
            established_at: None,
            expires: None,
            rekey_at: None,
            chosen: None,
            lifetime_secs: 0,
            peer_natt: None,
            peer_dpd: false,
            nat: NatStatus::default(),
            dh: None,
            g_xi: Buf::new(),
            g_xr: Buf::new(),
            ni: Buf::new(),
            nr: Buf::new(),
            sai_b: Buf::new(),
            peer_id: Buf::new(),
            psk: None,
            crypto: None,
            iv: None,
            last_block: None,
            tx: TxSlot::new(),
            last_rx: None,
            qm: core::array::from_fn(|_| None),
            pending: heapless::Vec::new(),
            recent_mids: [0; RECENT_MIDS],
            mid_next: 0,
            crypto_map: None,
            attempts_left: 0,
            recorded: None,
            rekey_started: false,
            send_initial_contact: false,
            dpd_seq: 0,
            dpd_outstanding: None,
        }
    }

    pub fn is_established(&self) -> bool {
        matches!(self.state, P1State::Established)
    }

    /// Whether NAT traversal is in use for ESP (negotiated and a NAT detected).
    pub fn natt_active(&self) -> bool {
        self.peer_natt.is_some() && self.nat.detected()
    }

    pub fn mid_known(&self, mid: u32) -> bool {
        self.recent_mids.contains(&mid) || self.qm.iter().flatten().any(|q| q.mid == mid)
    }

    pub fn remember_mid(&mut self, mid: u32) {
        remember(&mut self.recent_mids, &mut self.mid_next, mid);
    }

    /// Drops the negotiation secrets once phase 1 is done.
    pub fn forget_negotiation(&mut self) {
        self.dh = None;
        self.psk = None;
    }
}

/// Records a message ID in the ring of recent ones.
pub fn remember(recent: &mut [u32; RECENT_MIDS], next: &mut usize, mid: u32) {
    if let Some(m) = recent.get_mut(*next) {
        *m = mid;
    }
    *next = (*next + 1) % RECENT_MIDS;
}

/// An established child SA pair, as the control plane remembers it.
pub struct ChildRecord {
    pub conn_id: u32,
    pub crypto_map: u32,
    pub peer: SocketAddr,
    pub inbound: EspConfig,
    pub outbound: EspConfig,
    /// (inbound KEYMAT, outbound KEYMAT, encryption part length) until the event is
    /// polled.
    pub keys: Option<(Keymat, Keymat, usize)>,
    pub replaces: Option<u32>,
    pub expires: Instant,
    pub pfs: Option<DhGroup>,
    pub lifetime_kb: u64,
    /// NAT-OA: (the peer's original address, ours as the peer saw it).
    pub nat_oa: Option<(IpAddr, IpAddr)>,
}

/// A queued one-shot datagram.
pub struct OneShot {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub len: usize,
    pub buf: [u8; ONESHOT_BUF],
}

/// Writes bytes sequentially into a slice.
pub struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub const fn pos(&self) -> usize {
        self.pos
    }

    pub fn bytes(&mut self, b: &[u8]) -> Result<(), IkeError> {
        self.buf
            .get_mut(self.pos..self.pos + b.len())
            .ok_or(IkeError::TooLarge)?
            .copy_from_slice(b);
        self.pos += b.len();
        Ok(())
    }

    pub fn u8(&mut self, v: u8) -> Result<(), IkeError> {
        self.bytes(&[v])
    }

    pub fn u16(&mut self, v: u16) -> Result<(), IkeError> {
        self.bytes(&v.to_be_bytes())
    }

    pub fn u32(&mut self, v: u32) -> Result<(), IkeError> {
        self.bytes(&v.to_be_bytes())
    }

    /// The unwritten rest (for emitters that take a slice); advance with `skip`.
    pub fn rest(&mut self) -> &mut [u8] {
        self.buf.get_mut(self.pos..).unwrap_or(&mut [])
    }

    pub fn skip(&mut self, n: usize) -> Result<(), IkeError> {
        if self.pos + n > self.buf.len() {
            return Err(IkeError::TooLarge);
        }
        self.pos += n;
        Ok(())
    }

    /// Overwrites a big-endian `u16` at `at` (a length written later).
    pub fn patch_u16(&mut self, at: usize, v: u16) -> Result<(), IkeError> {
        self.buf
            .get_mut(at..at + 2)
            .ok_or(IkeError::TooLarge)?
            .copy_from_slice(&v.to_be_bytes());
        Ok(())
    }
}
