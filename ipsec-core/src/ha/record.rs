//! The records of SADB state that the active node streams to the standby, and their
//! binary encoding.
//!
//! A sync message body (the plaintext of one channel datagram) is a sequence of records,
//! each `type (u8) | length (u16, big endian) | body`. Unknown types are skipped, so a
//! newer active can talk to an older standby; a record that overruns the message is an
//! error and stops parsing. All integers are big endian.
//!
//! | type | record | sent |
//! |---|---|---|
//! | 1 | [`Record::SnapshotBegin`] | before a full snapshot |
//! | 2 | [`Record::SnapshotEnd`] | after it: entries not refreshed since Begin are stale |
//! | 3 | [`Record::SaPair`] ([`SaPairRecord`]) | new pair, or in a snapshot |
//! | 4 | [`Record::SaUpdate`] ([`SaUpdate`]) | counters moved by the replay interval |
//! | 5 | [`Record::SaDelete`] | pair gone |
//! | 6 | [`Record::IkeSa`] ([`IkeSaRecord`]) | IKE SA state, opaque |
//! | 7 | [`Record::IkeDelete`] | IKE SA gone |
//! | 8 | [`Record::SnapshotRequest`] | a standby asks for a snapshot |
//! | 9 | [`Record::Handover`] ([`HandoverMarker`]) | last record of a resigning active |
//!
//! Type 9 is newer than the others: a standby that does not know it skips it and takes
//! over with its margins, as after a crash, so an old standby and a new active (or the
//! reverse) still hand over, only not losslessly.
//!
//! An [`SaPairRecord`] carries everything needed to rebuild both ESP SAs of a pair with
//! `EspSa::new`: the two [`EspConfig`]s (SPIs, mode, transform, ESN, replay window size,
//! outer addresses, UDP encapsulation, selectors, lifetime limits, DF policy, TTL), the
//! keys, the crypto-map entry and peer, the owning IKE SA's cookies, and the progress
//! ([`SaProgress`]: outbound sequence counter, inbound replay window, bytes counted
//! against the KB lifetimes, age). Keys travel only inside the encrypted channel.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hal_traits::{AeadAlg, CipherAlg, MacAlg, SecretBytes};

use crate::esp::{DfBit, Direction, Encryption, EspConfig, Mode, Transform, UdpEncap};
use crate::lifetime::LifetimeConfig;
use crate::replay::ReplaySnapshot;
use crate::spd::{AddrRange, PortRange, Selector};
use crate::time::Duration;

/// Longest ESP encryption keying material (AES-256 + the 4-byte GCM salt).
pub const MAX_ENC_KEY: usize = 36;
/// Longest ESP integrity key.
pub const MAX_AUTH_KEY: usize = 64;
/// Longest opaque IKE SA body.
pub const MAX_IKE_BODY: usize = 1024;
/// Length of a record's type and length fields.
pub const RECORD_HEADER_LEN: usize = 3;

/// Record type numbers.
pub mod kind {
    /// [`super::Record::SnapshotBegin`].
    pub const SNAPSHOT_BEGIN: u8 = 1;
    /// [`super::Record::SnapshotEnd`].
    pub const SNAPSHOT_END: u8 = 2;
    /// [`super::Record::SaPair`].
    pub const SA_PAIR: u8 = 3;
    /// [`super::Record::SaUpdate`].
    pub const SA_UPDATE: u8 = 4;
    /// [`super::Record::SaDelete`].
    pub const SA_DELETE: u8 = 5;
    /// [`super::Record::IkeSa`].
    pub const IKE_SA: u8 = 6;
    /// [`super::Record::IkeDelete`].
    pub const IKE_DELETE: u8 = 7;
    /// [`super::Record::SnapshotRequest`].
    pub const SNAPSHOT_REQUEST: u8 = 8;
    /// [`super::Record::Handover`].
    pub const HANDOVER: u8 = 9;
}

/// Why a record could not be encoded or decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum RecordError {
    /// Decoding ran past the end of the record or message.
    Truncated,
    /// A field holds a value this version does not know or allow.
    Malformed,
    /// The output buffer is too small.
    BufferTooSmall,
}

impl core::fmt::Display for RecordError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Truncated => "sync record truncated",
            Self::Malformed => "malformed sync record",
            Self::BufferTooSmall => "buffer too small for sync record",
        })
    }
}

impl core::error::Error for RecordError {}

/// The keys of one ESP SA, captured when it was installed (the SA itself keeps only the
/// provider's key schedule). Zeroized on drop, never printed.
#[derive(Clone, Debug)]
pub struct SaKeys {
    /// Encryption keying material (for GCM: key | salt).
    pub enc: SecretBytes<MAX_ENC_KEY>,
    /// Integrity key (empty for GCM).
    pub auth: SecretBytes<MAX_AUTH_KEY>,
}

impl SaKeys {
    /// Copies keys as `ChildSa::inbound_keys()` / `outbound_keys()` give them.
    ///
    /// # Errors
    /// [`RecordError::Malformed`] if a key is longer than this module supports.
    pub fn new(enc: &[u8], auth: &[u8]) -> Result<Self, RecordError> {
        Ok(Self {
            enc: SecretBytes::from_slice(enc).map_err(|_| RecordError::Malformed)?,
            auth: SecretBytes::from_slice(auth).map_err(|_| RecordError::Malformed)?,
        })
    }
}

/// How far an SA pair has progressed: what the replay interval synchronises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaProgress<const W: usize> {
    /// The outbound SA's next sequence number.
    pub out_next_seq: u64,
    /// The inbound SA's replay window.
    pub in_window: ReplaySnapshot<W>,
    /// Bytes counted against the inbound SA's KB lifetime.
    pub in_bytes: u64,
    /// Bytes counted against the outbound SA's KB lifetime.
    pub out_bytes: u64,
    /// Time since the pair was installed, when this progress was taken.
    pub age: Duration,
}

impl<const W: usize> SaProgress<W> {
    /// The progress of a pair that has carried nothing yet.
    #[must_use]
    pub const fn fresh(esn: bool, window: u32) -> Self {
        Self {
            out_next_seq: 1,
            in_window: ReplaySnapshot {
                bitmap: [0; W],
                top: 0,
                size: window,
                esn,
            },
            in_bytes: 0,
            out_bytes: 0,
            age: Duration::ZERO,
        }
    }
}

/// An IPsec SA pair: everything to rebuild both SAs (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct SaPairRecord<const W: usize> {
    /// The crypto-map entry the outbound SA is bound to (`sa_group`).
    pub sa_group: u32,
    /// The IKE peer.
    pub peer: IpAddr,
    /// The owning IKE SA's cookies (initiator | responder), zeros if unknown.
    pub ike_cookies: [u8; 16],
    /// The inbound SA's configuration (our SPI).
    pub inbound: EspConfig,
    /// The outbound SA's configuration (the peer's SPI).
    pub outbound: EspConfig,
    /// The inbound SA's keys.
    pub inbound_keys: SaKeys,
    /// The outbound SA's keys.
    pub outbound_keys: SaKeys,
    /// Counters at the time of the record.
    pub progress: SaProgress<W>,
}

impl<const W: usize> SaPairRecord<W> {
    /// The pair's name on the sync channel: its inbound SPI (unique among our inbound
    /// SAs, since we allocated it).
    #[must_use]
    pub const fn id(&self) -> u32 {
        self.inbound.spi
    }
}

/// Fields of an [`SaUpdate`] that are present.
pub mod update_flags {
    /// `out_next_seq`.
    pub const OUT_SEQ: u8 = 1;
    /// The inbound replay window.
    pub const IN_WINDOW: u8 = 2;
    /// Byte counts and age.
    pub const LIFETIME: u8 = 4;
}

/// Counters of a pair that moved (only the flagged parts are meaningful).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaUpdate<const W: usize> {
    /// The pair's inbound SPI.
    pub inbound_spi: u32,
    /// Which parts of `progress` are carried ([`update_flags`]).
    pub flags: u8,
    /// The counters.
    pub progress: SaProgress<W>,
}

/// An IKE SA's state, opaque to this crate: `ipsec-ike` fills the body with
/// `Ike::export_sa` on the active node (on phase-1 establishment and each sync tick) and
/// the standby recreates the SA at takeover with `Ike::import_sa` (from
/// [`HaSync::ike_records`](super::sync::HaSync::ike_records)), then re-attaches the child
/// SAs with `Ike::import_child` (from the [`SaPairRecord`]s, which name their IKE SA by
/// its cookies). The body is secret (it holds SKEYID_d/a/e): it only travels inside the
/// encrypted sync channel. The layout is versioned and documented in `ipsec_ike::v1::ha`.
///
/// The body lets the standby continue the IKE SA without renegotiation. It holds (the
/// IKE crate owns the exact layout and versions it):
///
/// * the cookies (CKY-I, CKY-R; also the record's key here) and our role (initiator or
///   responder), the peer's address and port and ours (after NAT-T floating);
/// * the negotiated phase-1 transform (encryption, hash/PRF, DH group, auth method) and
///   the peer's identity;
/// * SKEYID_d (for Quick Mode keying material), SKEYID_a (HASH(1..3), Informational
///   hashes) and SKEYID_e (phase-1 and phase-2 encryption);
/// * the phase-1 IV state: the last CBC block of the last phase-1 message (the base of
///   every new per-message-ID IV) and the message IDs already used; exchanges in flight
///   are not carried by `ipsec-ike` (the peer retries or re-initiates them);
/// * the lifetime: remaining seconds and kilobytes, and whether a rekey is under way;
/// * DPD (RFC 3706): our next R-U-THERE sequence number and the last one of the peer;
/// * NAT-T: whether NAT was detected on which side, the floated ports, draft or RFC
///   encapsulation (the keepalive interval is configuration, the same on both nodes);
/// * the crypto-map entry and peer-list position, so that failover keeps the peer order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IkeSaRecord<'a> {
    /// CKY-I | CKY-R.
    pub cookies: [u8; 16],
    /// The opaque body (at most [`MAX_IKE_BODY`] bytes).
    pub body: &'a [u8],
}

/// The last record of a graceful handover: the resigning active has stopped sealing and
/// opening ESP, sent the final counters of every pair, and vouches for them with this
/// digest. A standby that holds exactly that state (same pairs, same outbound counters,
/// same inbound windows) may take over without any margin; see
/// [`HaSync::hand_over`](super::sync::HaSync::hand_over).
///
/// Body: `pairs (u32) | digest (u64)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct HandoverMarker {
    /// Number of SA pairs the active held when it resigned.
    pub pairs: u32,
    /// [`state_digest`] of their final progress.
    pub digest: u64,
}

impl HandoverMarker {
    /// The marker for `pairs` as they stand.
    pub fn of<'r, const W: usize>(pairs: impl IntoIterator<Item = &'r SaPairRecord<W>>) -> Self {
        let (pairs, digest) = state_digest(pairs);
        Self { pairs, digest }
    }
}

/// A digest of what makes a takeover safe without margins: per pair, both SPIs, the
/// outbound counter and the whole inbound replay window (top, size, ESN, bitmap). The
/// pairs are combined by a wrapping sum, so the order of the table does not matter.
///
/// Not a cryptographic hash: the channel already authenticates the peer, the digest only
/// has to tell "the standby applied every record the active sent" from "something is
/// missing, stale or reordered". Returns the number of pairs and the digest.
pub fn state_digest<'r, const W: usize>(
    pairs: impl IntoIterator<Item = &'r SaPairRecord<W>>,
) -> (u32, u64) {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    fn eat(h: u64, bytes: &[u8]) -> u64 {
        bytes
            .iter()
            .fold(h, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
    }
    let mut n = 0u32;
    let mut sum = 0u64;
    for p in pairs {
        let w = &p.progress.in_window;
        let mut h = eat(OFFSET, &p.inbound.spi.to_be_bytes());
        h = eat(h, &p.outbound.spi.to_be_bytes());
        h = eat(h, &p.progress.out_next_seq.to_be_bytes());
        h = eat(h, &w.top.to_be_bytes());
        h = eat(h, &w.size.to_be_bytes());
        h = eat(h, &[u8::from(w.esn)]);
        for word in &w.bitmap {
            h = eat(h, &word.to_be_bytes());
        }
        // A final avalanche so that the sum of two pairs cannot cancel field by field.
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        sum = sum.wrapping_add(h);
        n = n.saturating_add(1);
    }
    (n, sum)
}

/// One decoded record.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // no heap to box in; decoded one at a time
pub enum Record<'a, const W: usize> {
    /// A full snapshot starts.
    SnapshotBegin {
        /// Snapshot number.
        generation: u32,
    },
    /// The full snapshot is complete.
    SnapshotEnd {
        /// Snapshot number.
        generation: u32,
    },
    /// An SA pair, in full.
    SaPair(SaPairRecord<W>),
    /// Counters of a known pair.
    SaUpdate(SaUpdate<W>),
    /// A pair is gone.
    SaDelete {
        /// Its inbound SPI.
        inbound_spi: u32,
    },
    /// An IKE SA, opaque.
    IkeSa(IkeSaRecord<'a>),
    /// An IKE SA is gone.
    IkeDelete {
        /// Its cookies.
        cookies: [u8; 16],
    },
    /// A standby asks for a full snapshot.
    SnapshotRequest,
    /// A resigning active has sent its final state (see [`HandoverMarker`]).
    Handover(HandoverMarker),
}

/// A cursor writing big-endian fields into a buffer.
pub struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl<'b> Writer<'b> {
    /// A writer at the start of `buf`.
    pub fn new(buf: &'b mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes written.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.pos
    }

    /// Whether nothing was written.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// Room left.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn bytes(&mut self, b: &[u8]) -> Result<(), RecordError> {
        let end = self
            .pos
            .checked_add(b.len())
            .ok_or(RecordError::BufferTooSmall)?;
        self.buf
            .get_mut(self.pos..end)
            .ok_or(RecordError::BufferTooSmall)?
            .copy_from_slice(b);
        self.pos = end;
        Ok(())
    }

    fn u8(&mut self, v: u8) -> Result<(), RecordError> {
        self.bytes(&[v])
    }

    fn u16(&mut self, v: u16) -> Result<(), RecordError> {
        self.bytes(&v.to_be_bytes())
    }

    fn u32(&mut self, v: u32) -> Result<(), RecordError> {
        self.bytes(&v.to_be_bytes())
    }

    fn u64(&mut self, v: u64) -> Result<(), RecordError> {
        self.bytes(&v.to_be_bytes())
    }

    fn set_u16(&mut self, at: usize, v: u16) -> Result<(), RecordError> {
        self.buf
            .get_mut(at..at.saturating_add(2))
            .ok_or(RecordError::BufferTooSmall)?
            .copy_from_slice(&v.to_be_bytes());
        Ok(())
    }

    /// Writes one record; on error nothing is written (the position is restored).
    ///
    /// # Errors
    /// [`RecordError::BufferTooSmall`], or [`RecordError::Malformed`] for a field this
    /// format cannot carry (an IKE body over [`MAX_IKE_BODY`], an unknown algorithm).
    pub fn record<const W: usize>(&mut self, r: &Record<'_, W>) -> Result<(), RecordError> {
        let start = self.pos;
        let res = self.record_inner(r);
        if res.is_err() {
            self.pos = start;
        }
        res
    }

    fn record_inner<const W: usize>(&mut self, r: &Record<'_, W>) -> Result<(), RecordError> {
        let start = self.pos;
        let t = match r {
            Record::SnapshotBegin { .. } => kind::SNAPSHOT_BEGIN,
            Record::SnapshotEnd { .. } => kind::SNAPSHOT_END,
            Record::SaPair(_) => kind::SA_PAIR,
            Record::SaUpdate(_) => kind::SA_UPDATE,
            Record::SaDelete { .. } => kind::SA_DELETE,
            Record::IkeSa(_) => kind::IKE_SA,
            Record::IkeDelete { .. } => kind::IKE_DELETE,
            Record::SnapshotRequest => kind::SNAPSHOT_REQUEST,
            Record::Handover(_) => kind::HANDOVER,
        };
        self.u8(t)?;
        self.u16(0)?;
        match r {
            Record::SnapshotBegin { generation } | Record::SnapshotEnd { generation } => {
                self.u32(*generation)?;
            }
            Record::SaPair(p) => {
                self.u32(p.sa_group)?;
                self.addr(Some(p.peer))?;
                self.bytes(&p.ike_cookies)?;
                self.config(&p.inbound)?;
                self.config(&p.outbound)?;
                self.keys(&p.inbound_keys)?;
                self.keys(&p.outbound_keys)?;
                self.progress(
                    &p.progress,
                    update_flags::OUT_SEQ | update_flags::IN_WINDOW | update_flags::LIFETIME,
                )?;
            }
            Record::SaUpdate(u) => {
                self.u32(u.inbound_spi)?;
                self.u8(u.flags)?;
                self.progress(&u.progress, u.flags)?;
            }
            Record::SaDelete { inbound_spi } => self.u32(*inbound_spi)?,
            Record::IkeSa(i) => {
                if i.body.len() > MAX_IKE_BODY {
                    return Err(RecordError::Malformed);
                }
                self.bytes(&i.cookies)?;
                self.u16(u16::try_from(i.body.len()).map_err(|_| RecordError::Malformed)?)?;
                self.bytes(i.body)?;
            }
            Record::IkeDelete { cookies } => self.bytes(cookies)?,
            Record::SnapshotRequest => {}
            Record::Handover(m) => {
                self.u32(m.pairs)?;
                self.u64(m.digest)?;
            }
        }
        let body = self
            .pos
            .saturating_sub(start)
            .saturating_sub(RECORD_HEADER_LEN);
        self.set_u16(
            start.saturating_add(1),
            u16::try_from(body).map_err(|_| RecordError::Malformed)?,
        )
    }

    fn progress<const W: usize>(
        &mut self,
        p: &SaProgress<W>,
        flags: u8,
    ) -> Result<(), RecordError> {
        if flags & update_flags::OUT_SEQ != 0 {
            self.u64(p.out_next_seq)?;
        }
        if flags & update_flags::IN_WINDOW != 0 {
            let w = &p.in_window;
            self.u64(w.top)?;
            self.u32(w.size)?;
            self.u8(u8::from(w.esn))?;
            self.u8(u8::try_from(W).map_err(|_| RecordError::Malformed)?)?;
            for word in &w.bitmap {
                self.u64(*word)?;
            }
        }
        if flags & update_flags::LIFETIME != 0 {
            self.u64(p.in_bytes)?;
            self.u64(p.out_bytes)?;
            self.u64(p.age.as_millis())?;
        }
        Ok(())
    }

    fn keys(&mut self, k: &SaKeys) -> Result<(), RecordError> {
        for s in [k.enc.expose(), k.auth.expose()] {
            self.u8(u8::try_from(s.len()).map_err(|_| RecordError::Malformed)?)?;
            self.bytes(s)?;
        }
        Ok(())
    }

    fn addr(&mut self, a: Option<IpAddr>) -> Result<(), RecordError> {
        match a {
            None => self.u8(0),
            Some(IpAddr::V4(v)) => {
                self.u8(4)?;
                self.bytes(&v.octets())
            }
            Some(IpAddr::V6(v)) => {
                self.u8(6)?;
                self.bytes(&v.octets())
            }
        }
    }

    fn opt_u64(&mut self, v: Option<u64>) -> Result<(), RecordError> {
        match v {
            None => self.u8(0),
            Some(x) => {
                self.u8(1)?;
                self.u64(x)
            }
        }
    }

    fn config(&mut self, c: &EspConfig) -> Result<(), RecordError> {
        self.u32(c.spi)?;
        self.u8(match c.direction {
            Direction::Inbound => 0,
            Direction::Outbound => 1,
        })?;
        self.u8(match c.mode {
            Mode::Tunnel => 0,
            Mode::Transport => 1,
        })?;
        let (ek, ea) = enc_code(c.transform.enc)?;
        self.u8(ek)?;
        self.u8(ea)?;
        self.u8(mac_code(c.transform.auth)?)?;
        self.u8(u8::from(c.esn))?;
        self.u32(c.replay_window)?;
        self.addr(c.local)?;
        self.addr(c.remote)?;
        match c.udp_encap {
            None => self.u8(0)?,
            Some(u) => {
                self.u8(1)?;
                self.u16(u.local_port)?;
                self.u16(u.remote_port)?;
            }
        }
        match &c.selector {
            None => self.u8(0)?,
            Some(s) => {
                self.u8(1)?;
                for r in [s.local, s.remote] {
                    self.addr(Some(r.start()))?;
                    self.addr(Some(r.end()))?;
                }
                match s.protocol {
                    None => self.u16(0xffff)?,
                    Some(p) => self.u16(u16::from(p))?,
                }
                for p in [s.local_ports, s.remote_ports] {
                    self.u16(p.start())?;
                    self.u16(p.end())?;
                }
            }
        }
        let l = &c.lifetime;
        self.opt_u64(l.soft_time.map(Duration::as_millis))?;
        self.opt_u64(l.hard_time.map(Duration::as_millis))?;
        self.opt_u64(l.soft_bytes)?;
        self.opt_u64(l.hard_bytes)?;
        self.u8(match c.df_bit {
            DfBit::Copy => 0,
            DfBit::Clear => 1,
            DfBit::Set => 2,
        })?;
        self.u8(c.outer_ttl)
    }
}

fn enc_code(e: Encryption) -> Result<(u8, u8), RecordError> {
    Ok(match e {
        Encryption::Null => (0, 0),
        Encryption::Cbc(c) => (
            1,
            match c {
                CipherAlg::DesCbc => 1,
                CipherAlg::TripleDesCbc => 2,
                CipherAlg::Aes128Cbc => 3,
                CipherAlg::Aes192Cbc => 4,
                CipherAlg::Aes256Cbc => 5,
                _ => return Err(RecordError::Malformed),
            },
        ),
        Encryption::Gcm(a) => (
            2,
            match a {
                AeadAlg::Aes128Gcm8 => 1,
                AeadAlg::Aes128Gcm12 => 2,
                AeadAlg::Aes128Gcm16 => 3,
                AeadAlg::Aes192Gcm8 => 4,
                AeadAlg::Aes192Gcm12 => 5,
                AeadAlg::Aes192Gcm16 => 6,
                AeadAlg::Aes256Gcm8 => 7,
                AeadAlg::Aes256Gcm12 => 8,
                AeadAlg::Aes256Gcm16 => 9,
                _ => return Err(RecordError::Malformed),
            },
        ),
    })
}

fn enc_from(kind: u8, alg: u8) -> Result<Encryption, RecordError> {
    Ok(match (kind, alg) {
        (0, 0) => Encryption::Null,
        (1, 1) => Encryption::Cbc(CipherAlg::DesCbc),
        (1, 2) => Encryption::Cbc(CipherAlg::TripleDesCbc),
        (1, 3) => Encryption::Cbc(CipherAlg::Aes128Cbc),
        (1, 4) => Encryption::Cbc(CipherAlg::Aes192Cbc),
        (1, 5) => Encryption::Cbc(CipherAlg::Aes256Cbc),
        (2, 1) => Encryption::Gcm(AeadAlg::Aes128Gcm8),
        (2, 2) => Encryption::Gcm(AeadAlg::Aes128Gcm12),
        (2, 3) => Encryption::Gcm(AeadAlg::Aes128Gcm16),
        (2, 4) => Encryption::Gcm(AeadAlg::Aes192Gcm8),
        (2, 5) => Encryption::Gcm(AeadAlg::Aes192Gcm12),
        (2, 6) => Encryption::Gcm(AeadAlg::Aes192Gcm16),
        (2, 7) => Encryption::Gcm(AeadAlg::Aes256Gcm8),
        (2, 8) => Encryption::Gcm(AeadAlg::Aes256Gcm12),
        (2, 9) => Encryption::Gcm(AeadAlg::Aes256Gcm16),
        _ => return Err(RecordError::Malformed),
    })
}

fn mac_code(m: Option<MacAlg>) -> Result<u8, RecordError> {
    Ok(match m {
        None => 0,
        Some(MacAlg::HmacMd5_96) => 1,
        Some(MacAlg::HmacSha1_96) => 2,
        Some(MacAlg::HmacSha256_128) => 3,
        Some(_) => return Err(RecordError::Malformed),
    })
}

fn mac_from(c: u8) -> Result<Option<MacAlg>, RecordError> {
    Ok(match c {
        0 => None,
        1 => Some(MacAlg::HmacMd5_96),
        2 => Some(MacAlg::HmacSha1_96),
        3 => Some(MacAlg::HmacSha256_128),
        _ => return Err(RecordError::Malformed),
    })
}

/// A cursor reading big-endian fields; never panics, whatever the input.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over a whole message body (a sequence of records).
    #[must_use]
    pub const fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let end = self.pos.checked_add(n).ok_or(RecordError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(RecordError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    fn u16(&mut self) -> Result<u16, RecordError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn flag(&mut self) -> Result<bool, RecordError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(RecordError::Malformed),
        }
    }

    fn addr(&mut self) -> Result<Option<IpAddr>, RecordError> {
        Ok(match self.u8()? {
            0 => None,
            4 => Some(IpAddr::V4(Ipv4Addr::from(self.array::<4>()?))),
            6 => Some(IpAddr::V6(Ipv6Addr::from(self.array::<16>()?))),
            _ => return Err(RecordError::Malformed),
        })
    }

    fn some_addr(&mut self) -> Result<IpAddr, RecordError> {
        self.addr()?.ok_or(RecordError::Malformed)
    }

    fn opt_u64(&mut self) -> Result<Option<u64>, RecordError> {
        Ok(if self.flag()? {
            Some(self.u64()?)
        } else {
            None
        })
    }

    fn range(&mut self) -> Result<AddrRange, RecordError> {
        let s = self.some_addr()?;
        let e = self.some_addr()?;
        AddrRange::new(s, e).map_err(|_| RecordError::Malformed)
    }

    fn ports(&mut self) -> Result<PortRange, RecordError> {
        let s = self.u16()?;
        let e = self.u16()?;
        PortRange::new(s, e).map_err(|_| RecordError::Malformed)
    }

    fn config(&mut self) -> Result<EspConfig, RecordError> {
        let spi = self.u32()?;
        let direction = match self.u8()? {
            0 => Direction::Inbound,
            1 => Direction::Outbound,
            _ => return Err(RecordError::Malformed),
        };
        let mode = match self.u8()? {
            0 => Mode::Tunnel,
            1 => Mode::Transport,
            _ => return Err(RecordError::Malformed),
        };
        let ek = self.u8()?;
        let ea = self.u8()?;
        let transform = Transform {
            enc: enc_from(ek, ea)?,
            auth: mac_from(self.u8()?)?,
        };
        transform.validate().map_err(|_| RecordError::Malformed)?;
        let esn = self.flag()?;
        let replay_window = self.u32()?;
        let local = self.addr()?;
        let remote = self.addr()?;
        let udp_encap = if self.flag()? {
            Some(UdpEncap {
                local_port: self.u16()?,
                remote_port: self.u16()?,
            })
        } else {
            None
        };
        let selector = if self.flag()? {
            let local = self.range()?;
            let remote = self.range()?;
            let protocol = match self.u16()? {
                0xffff => None,
                p => Some(u8::try_from(p).map_err(|_| RecordError::Malformed)?),
            };
            let mut s = Selector::new(local, remote).map_err(|_| RecordError::Malformed)?;
            s.protocol = protocol;
            s.local_ports = self.ports()?;
            s.remote_ports = self.ports()?;
            Some(s)
        } else {
            None
        };
        let lifetime = LifetimeConfig {
            soft_time: self.opt_u64()?.map(Duration::from_millis),
            hard_time: self.opt_u64()?.map(Duration::from_millis),
            soft_bytes: self.opt_u64()?,
            hard_bytes: self.opt_u64()?,
        };
        let df_bit = match self.u8()? {
            0 => DfBit::Copy,
            1 => DfBit::Clear,
            2 => DfBit::Set,
            _ => return Err(RecordError::Malformed),
        };
        let outer_ttl = self.u8()?;
        Ok(EspConfig {
            spi,
            direction,
            mode,
            transform,
            esn,
            replay_window,
            local,
            remote,
            udp_encap,
            selector,
            lifetime,
            df_bit,
            outer_ttl,
        })
    }

    fn keys(&mut self) -> Result<SaKeys, RecordError> {
        let n = usize::from(self.u8()?);
        let enc = self.take(n)?;
        let m = usize::from(self.u8()?);
        let auth = self.take(m)?;
        SaKeys::new(enc, auth)
    }

    fn progress<const W: usize>(&mut self, flags: u8) -> Result<SaProgress<W>, RecordError> {
        let mut p = SaProgress::<W>::fresh(false, 0);
        if flags & update_flags::OUT_SEQ != 0 {
            p.out_next_seq = self.u64()?;
        }
        if flags & update_flags::IN_WINDOW != 0 {
            p.in_window.top = self.u64()?;
            p.in_window.size = self.u32()?;
            p.in_window.esn = self.flag()?;
            let words = usize::from(self.u8()?);
            if words == W {
                for w in &mut p.in_window.bitmap {
                    *w = self.u64()?;
                }
            } else {
                // Another bitmap size: keep top and size only; a takeover closes the
                // window conservatively anyway.
                self.take(words.saturating_mul(8))?;
                p.in_window.bitmap = [u64::MAX; W];
            }
        }
        if flags & update_flags::LIFETIME != 0 {
            p.in_bytes = self.u64()?;
            p.out_bytes = self.u64()?;
            p.age = Duration::from_millis(self.u64()?);
        }
        Ok(p)
    }

    /// The next record, `None` at the end of the message. Unknown record types are
    /// skipped.
    ///
    /// # Errors
    /// [`RecordError::Truncated`] or [`RecordError::Malformed`]; the rest of the message
    /// cannot be trusted after one and the reader stays at the end.
    pub fn next_record<const W: usize>(&mut self) -> Result<Option<Record<'a, W>>, RecordError> {
        loop {
            if self.pos >= self.buf.len() {
                return Ok(None);
            }
            let r = self.record_inner();
            match r {
                Ok(Some(rec)) => return Ok(Some(rec)),
                Ok(None) => {}
                Err(e) => {
                    self.pos = self.buf.len();
                    return Err(e);
                }
            }
        }
    }

    fn record_inner<const W: usize>(&mut self) -> Result<Option<Record<'a, W>>, RecordError> {
        let t = self.u8()?;
        let len = usize::from(self.u16()?);
        let body = self.take(len)?;
        let mut r = Reader::new(body);
        let rec = match t {
            kind::SNAPSHOT_BEGIN => Record::SnapshotBegin {
                generation: r.u32()?,
            },
            kind::SNAPSHOT_END => Record::SnapshotEnd {
                generation: r.u32()?,
            },
            kind::SA_PAIR => {
                let sa_group = r.u32()?;
                let peer = r.some_addr()?;
                let ike_cookies = r.array()?;
                let inbound = r.config()?;
                let outbound = r.config()?;
                if inbound.direction != Direction::Inbound
                    || outbound.direction != Direction::Outbound
                {
                    return Err(RecordError::Malformed);
                }
                let inbound_keys = r.keys()?;
                let outbound_keys = r.keys()?;
                let progress = r.progress(
                    update_flags::OUT_SEQ | update_flags::IN_WINDOW | update_flags::LIFETIME,
                )?;
                Record::SaPair(SaPairRecord {
                    sa_group,
                    peer,
                    ike_cookies,
                    inbound,
                    outbound,
                    inbound_keys,
                    outbound_keys,
                    progress,
                })
            }
            kind::SA_UPDATE => {
                let inbound_spi = r.u32()?;
                let flags = r.u8()?;
                if flags
                    & !(update_flags::OUT_SEQ | update_flags::IN_WINDOW | update_flags::LIFETIME)
                    != 0
                {
                    return Err(RecordError::Malformed);
                }
                let progress = r.progress(flags)?;
                Record::SaUpdate(SaUpdate {
                    inbound_spi,
                    flags,
                    progress,
                })
            }
            kind::SA_DELETE => Record::SaDelete {
                inbound_spi: r.u32()?,
            },
            kind::IKE_SA => {
                let cookies = r.array()?;
                let n = usize::from(r.u16()?);
                if n > MAX_IKE_BODY {
                    return Err(RecordError::Malformed);
                }
                Record::IkeSa(IkeSaRecord {
                    cookies,
                    body: r.take(n)?,
                })
            }
            kind::IKE_DELETE => Record::IkeDelete {
                cookies: r.array()?,
            },
            kind::SNAPSHOT_REQUEST => Record::SnapshotRequest,
            kind::HANDOVER => Record::Handover(HandoverMarker {
                pairs: r.u32()?,
                digest: r.u64()?,
            }),
            _ => return Ok(None),
        };
        if r.pos != body.len() {
            return Err(RecordError::Malformed);
        }
        Ok(Some(rec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esp::Encryption;

    pub(crate) fn sample() -> SaPairRecord<2> {
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100));
        let b = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5));
        let t = Transform {
            enc: Encryption::Cbc(CipherAlg::Aes256Cbc),
            auth: Some(MacAlg::HmacSha256_128),
        };
        let mut i = EspConfig::tunnel(0x1001, Direction::Inbound, t, a, b);
        let sel = Selector::new(
            AddrRange::from_prefix(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 0)), 24).unwrap(),
            AddrRange::from_prefix(IpAddr::V4(Ipv4Addr::new(10, 0, 68, 0)), 24).unwrap(),
        )
        .unwrap()
        .with_protocol(17)
        .with_remote_ports(PortRange::new(500, 600).unwrap());
        i.selector = Some(sel);
        i.udp_encap = Some(UdpEncap::STANDARD);
        let mut o = EspConfig::tunnel(0x2001, Direction::Outbound, t, a, b);
        o.selector = Some(sel);
        o.esn = true;
        o.lifetime = LifetimeConfig::UNLIMITED;
        let mut progress = SaProgress::fresh(false, 64);
        progress.out_next_seq = 77;
        progress.in_window.top = 70;
        progress.in_window.bitmap = [0xdead_beef, 3];
        progress.age = Duration::from_millis(12_345);
        SaPairRecord {
            sa_group: 10,
            peer: b,
            ike_cookies: [7; 16],
            inbound: i,
            outbound: o,
            inbound_keys: SaKeys::new(&[1; 32], &[2; 32]).unwrap(),
            outbound_keys: SaKeys::new(&[3; 32], &[4; 32]).unwrap(),
            progress,
        }
    }

    #[test]
    fn round_trip_every_record() {
        let p = sample();
        let body = [9u8; 40];
        let recs: [Record<'_, 2>; 9] = [
            Record::SnapshotBegin { generation: 3 },
            Record::SaPair(p.clone()),
            Record::SaUpdate(SaUpdate {
                inbound_spi: 0x1001,
                flags: update_flags::OUT_SEQ,
                progress: p.progress,
            }),
            Record::SaDelete {
                inbound_spi: 0x1001,
            },
            Record::IkeSa(IkeSaRecord {
                cookies: [5; 16],
                body: &body,
            }),
            Record::IkeDelete { cookies: [5; 16] },
            Record::SnapshotRequest,
            Record::SnapshotEnd { generation: 3 },
            Record::Handover(HandoverMarker::of([&p])),
        ];
        let mut buf = [0u8; 2048];
        let mut w = Writer::new(&mut buf);
        for r in &recs {
            w.record(r).unwrap();
        }
        let n = w.len();
        let mut rd = Reader::new(&buf[..n]);
        let mut count = 0;
        while let Some(r) = rd.next_record::<2>().unwrap() {
            match (&r, &recs[count]) {
                (Record::SaPair(a), Record::SaPair(b)) => {
                    assert_eq!(a.inbound, b.inbound);
                    assert_eq!(a.outbound, b.outbound);
                    assert_eq!(a.progress, b.progress);
                    assert_eq!(a.inbound_keys.enc.expose(), b.inbound_keys.enc.expose());
                    assert_eq!(a.outbound_keys.auth.expose(), b.outbound_keys.auth.expose());
                    assert_eq!(
                        (a.sa_group, a.peer, a.ike_cookies),
                        (b.sa_group, b.peer, b.ike_cookies)
                    );
                }
                (Record::SaUpdate(a), Record::SaUpdate(b)) => {
                    assert_eq!(a.progress.out_next_seq, b.progress.out_next_seq);
                    assert_eq!(a.flags, b.flags);
                }
                (a, b) => assert_eq!(std::format!("{a:?}"), std::format!("{b:?}")),
            }
            count += 1;
        }
        assert_eq!(count, recs.len());

        // Every truncation is an error or a shorter valid prefix, never a panic.
        for cut in 0..n {
            let mut rd = Reader::new(&buf[..cut]);
            while let Ok(Some(_)) = rd.next_record::<2>() {}
        }
        // A record in a too-small buffer leaves the writer where it was.
        let mut small = [0u8; 50];
        let mut w = Writer::new(&mut small);
        w.record::<2>(&Record::SnapshotRequest).unwrap();
        assert!(w.record(&recs[1]).is_err());
        assert_eq!(w.len(), 3);
    }

    #[test]
    fn handover_marker_bytes_and_old_readers() {
        let m = HandoverMarker {
            pairs: 2,
            digest: 0x0102_0304_0506_0708,
        };
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        w.record::<2>(&Record::Handover(m)).unwrap();
        w.record::<2>(&Record::SnapshotRequest).unwrap();
        let n = w.len();
        assert_eq!(
            &buf[..n],
            &[9, 0, 12, 0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8, 8, 0, 0][..]
        );
        let mut r = Reader::new(&buf[..n]);
        assert!(matches!(r.next_record::<2>(), Ok(Some(Record::Handover(x))) if x == m));
        assert!(matches!(
            r.next_record::<2>(),
            Ok(Some(Record::SnapshotRequest))
        ));
        // A body of the wrong length is malformed, a short one truncated: never a panic.
        let long = [9u8, 0, 13, 0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8, 0];
        assert_eq!(
            Reader::new(&long).next_record::<2>().unwrap_err(),
            RecordError::Malformed
        );
        let short = [9u8, 0, 11, 0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7];
        assert_eq!(
            Reader::new(&short).next_record::<2>().unwrap_err(),
            RecordError::Truncated
        );
        // How a reader without type 9 sees it: an unknown type, skipped whole.
        let mut future = buf;
        future[0] = 200;
        let mut r = Reader::new(&future[..n]);
        assert!(matches!(
            r.next_record::<2>(),
            Ok(Some(Record::SnapshotRequest))
        ));
    }

    #[test]
    fn state_digest_sees_every_counter_and_ignores_order() {
        let a = sample();
        let mut b = sample();
        b.inbound.spi = 0x1002;
        b.outbound.spi = 0x2002;
        let base = state_digest([&a, &b]);
        assert_eq!(base.0, 2);
        assert_eq!(base, state_digest([&b, &a]), "order does not matter");
        assert_ne!(base, state_digest([&a]));
        let tweaks: [fn(&mut SaPairRecord<2>); 6] = [
            |p| p.progress.out_next_seq += 1,
            |p| p.progress.in_window.top += 1,
            |p| p.progress.in_window.bitmap[1] ^= 1 << 63,
            |p| p.progress.in_window.size = 128,
            |p| p.progress.in_window.esn = true,
            |p| p.outbound.spi ^= 1,
        ];
        for t in tweaks {
            let mut c = b.clone();
            t(&mut c);
            assert_ne!(state_digest([&a, &c]), base);
        }
        // Lifetime counters are not part of it: they do not decide what is a replay.
        let mut c = b.clone();
        c.progress.in_bytes += 100;
        c.progress.age = Duration::from_secs(1);
        assert_eq!(state_digest([&a, &c]), base);
        assert_eq!(state_digest::<2>([]), (0, 0));
    }

    extern crate std;
}
