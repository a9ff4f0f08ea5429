//! Stateful failover of IKE SAs: [`Ike::export_sa`] writes one established IKE SA as a
//! versioned binary record, [`Ike::import_sa`] recreates it on another node (in
//! `QM_IDLE`, sending nothing), and [`Ike::import_child`] re-attaches the child SA
//! records that the HA SA-pair records carry, so that the standby can continue Quick
//! Mode, Informational (DELETE), DPD and rekeying with the peer as if nothing happened.
//!
//! The body is what `ipsec_core::ha::record::IkeSaRecord` carries (at most
//! [`ipsec_core::ha::record::MAX_IKE_BODY`] bytes; an export is at most
//! [`MAX_EXPORT_LEN`]).
//!
//! **The exported bytes are secret**: they hold SKEYID_d, SKEYID_a and SKEYID_e. They
//! must only travel inside an encrypted, authenticated channel (the HA sync channel
//! encrypts them) and the caller should zeroize its copies when done.
//!
//! # Encoding, version 1 (all integers big endian)
//!
//! ```text
//! magic "IKSA" | version u8 = 1 | body length u16 | body
//! body:
//!   CKY-I [8] | CKY-R [8] | conn-id u32 | role u8 (0 initiator, 1 responder)
//!   mode u8 (0 Main, 1 Aggressive) | flags u8 (see `flag`) | NAT-T u8 (0 none,
//!     1 RFC 3947, 2 draft)
//!   local address: family u8 (4 | 6) | address [4 | 16] | port u16   (after floating)
//!   peer address: same
//!   transform: encryption u16 | key bits u16 (0: none) | hash u16 | auth method u16
//!     | group u16 | life seconds u64 | life kilobytes u64   (u64::MAX: not given)
//!   lifetime seconds u64 | expires in ms u64 (u64::MAX: never) | rekey in ms u64
//!     (u64::MAX: no rekey time)   (relative to the export's `now`)
//!   crypto map u32 | peer-list position u8          (flag CRYPTO_MAP)
//!   DPD: last sequence sent u32 | outstanding u32  (flag DPD_OUTSTANDING)
//!   recent message IDs: count u8 (<= 16) | u32 each, oldest first
//!   peer identity: length u16 (<= 256) | IDii_b / IDir_b body
//!   SKEYID_d, SKEYID_a, SKEYID_e: length u8 (= hash length) | bytes, each
//!   last phase-1 CBC block: length u8 (= cipher block) | bytes
//! ```
//!
//! Ka is re-derived from SKEYID_e on import. Not carried:
//!
//! * exchanges in flight (Quick Mode, Informational, a queued Quick Mode request): the
//!   peer retransmits or re-initiates an unfinished Quick Mode, and our own pending
//!   requests are re-triggered by the data plane's `NoSa` / `SoftExpired` on the new
//!   node;
//! * SKEYID itself (only needed for phase-1 HASH_I/HASH_R);
//! * the DPD round (the import counts as proof of life; a new round starts from there)
//!   and the NAT keepalive interval (configuration, the same on both nodes);
//! * the child SAs: they travel as HA SA-pair records (which name the owning IKE SA by
//!   its cookies) and are re-attached with [`Ike::import_child`].

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hal_traits::{CryptoProvider, DhGroup, SecretBytes};
use ipsec_core::esp::EspConfig;
use ipsec_core::ha::record::SaPairRecord;
use ipsec_core::{Duration, Instant};

use super::IkeError;
use super::config::ExchangeMode;
use super::events::NatStatus;
use super::ike::Ike;
use super::keys::{Iv, Phase1Keys, PrfSecret};
use super::sa::{ChildRecord, IkeSa, MAX_ID_BODY, P1Crypto, P1State, RECENT_MIDS, Writer};
use super::status::Role;
use crate::wire::ike_attr::{
    Phase1Transform, auth_method, cipher_from_attr, cipher_to_attr, group_from_attr, group_to_attr,
    hash_from_attr, hash_to_attr,
};
use crate::wire::vendor_id::NatTVariant;

/// The magic at the start of an export.
pub const EXPORT_MAGIC: [u8; 4] = *b"IKSA";
/// The encoding version written by this build (the only one it reads).
pub const EXPORT_VERSION: u8 = 1;
/// The longest export (fits `ipsec_core::ha::record::MAX_IKE_BODY`).
pub const MAX_EXPORT_LEN: usize = 7 // header
    + 16 + 4 + 4 // cookies, conn id, role/mode/flags/natt
    + 2 * (1 + 16 + 2) // addresses
    + 10 + 16 // transform
    + 24 // lifetimes
    + 5 + 8 // crypto map, DPD
    + 1 + 4 * RECENT_MIDS
    + 2 + MAX_ID_BODY
    + 3 * (1 + hal_traits::MAX_HASH_LEN)
    + 1 + hal_traits::MAX_BLOCK_LEN;

const HEADER_LEN: usize = 7;
const NEVER: u64 = u64::MAX;

/// Bits of the flags byte.
mod flag {
    pub const PEER_DPD: u8 = 1;
    pub const LOCAL_BEHIND_NAT: u8 = 2;
    pub const REMOTE_BEHIND_NAT: u8 = 4;
    pub const REKEY_STARTED: u8 = 8;
    pub const CRYPTO_MAP: u8 = 16;
    pub const DPD_OUTSTANDING: u8 = 32;
    pub const ALL: u8 = 63;
}

/// A child SA pair to re-attach to an imported IKE SA ([`Ike::import_child`]): what
/// `delete_child`, `rekey_child`, a peer's DELETE and `show crypto ipsec sa` need.
#[derive(Clone, Debug)]
pub struct ChildImport {
    /// The crypto map entry the pair belongs to.
    pub crypto_map: u32,
    /// The owning IKE SA's cookies (CKY-I | CKY-R); all zero: the newest established
    /// IKE SA with `peer`.
    pub ike_cookies: [u8; 16],
    /// The IKE peer's address.
    pub peer: IpAddr,
    /// The inbound SA (our SPI).
    pub inbound: EspConfig,
    /// The outbound SA (the peer's SPI).
    pub outbound: EspConfig,
    /// Time left until the hard lifetime (`None`: no time limit).
    pub lifetime_left: Option<Duration>,
    /// PFS group, if known (status only).
    pub pfs: Option<DhGroup>,
}

impl ChildImport {
    /// The child of an HA SA-pair record (`HaSync::pairs()` on the standby).
    #[must_use]
    pub fn from_ha_record<const W: usize>(rec: &SaPairRecord<W>) -> Self {
        Self {
            crypto_map: rec.sa_group,
            ike_cookies: rec.ike_cookies,
            peer: rec.peer,
            inbound: rec.inbound.clone(),
            outbound: rec.outbound.clone(),
            lifetime_left: rec.inbound.lifetime.hard_time.map(|h| {
                Duration::from_millis(h.as_millis().saturating_sub(rec.progress.age.as_millis()))
            }),
            pfs: None,
        }
    }
}

fn ms_until(now: Instant, t: Option<Instant>) -> u64 {
    t.map_or(NEVER, |t| (t - now).as_millis().min(NEVER - 1))
}

fn write_addr(w: &mut Writer<'_>, a: SocketAddr) -> Result<(), IkeError> {
    match a.ip() {
        IpAddr::V4(v) => {
            w.u8(4)?;
            w.bytes(&v.octets())?;
        }
        IpAddr::V6(v) => {
            w.u8(6)?;
            w.bytes(&v.octets())?;
        }
    }
    w.u16(a.port())
}

fn write_secret(w: &mut Writer<'_>, s: &PrfSecret) -> Result<(), IkeError> {
    let b = s.expose();
    w.u8(u8::try_from(b.len()).map_err(|_| IkeError::TooLarge)?)?;
    w.bytes(b)
}

fn u64_of(v: Option<u64>) -> u64 {
    v.map_or(NEVER, |v| v.min(NEVER - 1))
}

/// Reads fields, every failure being [`IkeError::InvalidImport`].
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], IkeError> {
        if n > self.data.len() {
            return Err(IkeError::InvalidImport);
        }
        let (a, b) = self.data.split_at(n);
        self.data = b;
        Ok(a)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], IkeError> {
        <[u8; N]>::try_from(self.take(N)?).map_err(|_| IkeError::InvalidImport)
    }

    fn u8(&mut self) -> Result<u8, IkeError> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    fn u16(&mut self) -> Result<u16, IkeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, IkeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, IkeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn addr(&mut self) -> Result<SocketAddr, IkeError> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            _ => return Err(IkeError::InvalidImport),
        };
        let port = self.u16()?;
        if ip.is_unspecified() || ip.is_multicast() || port == 0 {
            return Err(IkeError::InvalidImport);
        }
        Ok(SocketAddr::new(ip, port))
    }

    fn secret(&mut self, len: usize) -> Result<PrfSecret, IkeError> {
        if usize::from(self.u8()?) != len {
            return Err(IkeError::InvalidImport);
        }
        SecretBytes::from_slice(self.take(len)?).map_err(|_| IkeError::InvalidImport)
    }
}

fn opt_u64(v: u64) -> Option<u64> {
    (v != NEVER).then_some(v)
}

impl<P: CryptoProvider, const SAS: usize, const CHILDREN: usize> Ike<P, SAS, CHILDREN> {
    /// Writes the state of established IKE SA `conn_id` into `out` (see the
    /// [module documentation](self) for the encoding) and returns its length, at most
    /// [`MAX_EXPORT_LEN`]. Lifetimes are written as time left after `now`. Nothing
    /// changes in the SA.
    ///
    /// **The output is secret** (it holds SKEYID_d/a/e): send it only over the
    /// encrypted HA channel, and zeroize `out` afterwards.
    ///
    /// Exchanges in flight are not exported (the peer retries an unfinished Quick
    /// Mode). Export again whenever the SA changes (establishment, each DPD exchange or
    /// new Quick Mode message ID, or simply on every HA sync tick).
    ///
    /// # Errors
    /// [`IkeError::UnknownSa`], [`IkeError::NotEstablished`], [`IkeError::TooLarge`]
    /// (`out` too short; [`MAX_EXPORT_LEN`] always suffices).
    pub fn export_sa(&self, now: Instant, conn_id: u32, out: &mut [u8]) -> Result<usize, IkeError> {
        let sa = self
            .sas
            .iter()
            .flatten()
            .find(|s| s.conn_id == conn_id)
            .ok_or(IkeError::UnknownSa)?;
        if !sa.is_established() {
            return Err(IkeError::NotEstablished);
        }
        let (Some(t), Some(crypto), Some(last)) = (sa.chosen, sa.crypto.as_ref(), sa.last_block)
        else {
            return Err(IkeError::NotEstablished);
        };
        let mut w = Writer::new(out);
        w.bytes(&EXPORT_MAGIC)?;
        w.u8(EXPORT_VERSION)?;
        w.u16(0)?; // patched below
        w.bytes(&sa.cky_i)?;
        w.bytes(&sa.cky_r)?;
        w.u32(sa.conn_id)?;
        w.u8(match sa.role {
            Role::Initiator => 0,
            Role::Responder => 1,
        })?;
        w.u8(match sa.mode {
            ExchangeMode::Main => 0,
            ExchangeMode::Aggressive => 1,
        })?;
        let mut f = 0;
        if sa.peer_dpd {
            f |= flag::PEER_DPD;
        }
        if sa.nat.local_behind_nat {
            f |= flag::LOCAL_BEHIND_NAT;
        }
        if sa.nat.remote_behind_nat {
            f |= flag::REMOTE_BEHIND_NAT;
        }
        if sa.rekey_started {
            f |= flag::REKEY_STARTED;
        }
        if sa.crypto_map.is_some() {
            f |= flag::CRYPTO_MAP;
        }
        if sa.dpd_outstanding.is_some() {
            f |= flag::DPD_OUTSTANDING;
        }
        w.u8(f)?;
        w.u8(match sa.peer_natt {
            None => 0,
            Some(NatTVariant::Rfc3947) => 1,
            Some(NatTVariant::Draft) => 2,
        })?;
        write_addr(&mut w, sa.local)?;
        write_addr(&mut w, sa.remote)?;
        let (enc, bits) = cipher_to_attr(t.cipher).ok_or(IkeError::InvalidConfig)?;
        w.u16(enc)?;
        w.u16(bits.unwrap_or(0))?;
        w.u16(hash_to_attr(t.hash).ok_or(IkeError::InvalidConfig)?)?;
        w.u16(t.auth_method)?;
        w.u16(group_to_attr(t.group))?;
        w.bytes(&u64_of(t.life_seconds).to_be_bytes())?;
        w.bytes(&u64_of(t.life_kilobytes).to_be_bytes())?;
        w.bytes(&sa.lifetime_secs.to_be_bytes())?;
        w.bytes(&ms_until(now, sa.expires).to_be_bytes())?;
        w.bytes(&ms_until(now, sa.rekey_at).to_be_bytes())?;
        let map = sa.crypto_map.unwrap_or(0);
        let pos = self
            .config
            .crypto_maps
            .iter()
            .position(|m| m.seq == map)
            .and_then(|p| self.peer_index.get(p).copied())
            .unwrap_or(0);
        w.u32(map)?;
        w.u8(pos)?;
        w.u32(sa.dpd_seq)?;
        w.u32(sa.dpd_outstanding.unwrap_or(0))?;
        // The ring from oldest to newest, zeros (unused) left out.
        let mut mids = [0u32; RECENT_MIDS];
        let mut n = 0;
        for k in 0..RECENT_MIDS {
            let m = sa
                .recent_mids
                .get((sa.mid_next + k) % RECENT_MIDS)
                .copied()
                .unwrap_or(0);
            if m != 0 {
                if let Some(slot) = mids.get_mut(n) {
                    *slot = m;
                    n += 1;
                }
            }
        }
        w.u8(u8::try_from(n).map_err(|_| IkeError::TooLarge)?)?;
        for m in mids.get(..n).unwrap_or(&[]) {
            w.u32(*m)?;
        }
        let id = sa.peer_id.as_slice();
        w.u16(u16::try_from(id.len()).map_err(|_| IkeError::TooLarge)?)?;
        w.bytes(id)?;
        write_secret(&mut w, crypto.keys.skeyid_d())?;
        write_secret(&mut w, crypto.keys.skeyid_a())?;
        write_secret(&mut w, crypto.keys.skeyid_e())?;
        let lb = last.as_slice();
        w.u8(u8::try_from(lb.len()).map_err(|_| IkeError::TooLarge)?)?;
        w.bytes(lb)?;
        let len = w.pos();
        let body = u16::try_from(len - HEADER_LEN).map_err(|_| IkeError::TooLarge)?;
        w.patch_u16(5, body)?;
        Ok(len)
    }

    /// Recreates an IKE SA from [`Ike::export_sa`] output (taken on another node at some
    /// earlier time; lifetimes continue from `now`). Everything is validated first
    /// (magic, version, lengths, algorithm identifiers, addresses, the crypto map entry
    /// and its peer position against this node's configuration, and that the provider
    /// has the cipher): on error nothing changes. The SA is `QM_IDLE`, nothing is sent
    /// and no event is emitted; the peer is tracked for DPD from `now`. An SA with the
    /// same cookies is replaced (a newer export of it). Returns the SA's connection id
    /// (the exported one unless another SA here uses it).
    ///
    /// `data` is secret (see [`Ike::export_sa`]); zeroize it after the call.
    ///
    /// # Errors
    /// [`IkeError::InvalidImport`] (truncated, trailing bytes, unknown version or value),
    /// [`IkeError::UnknownCryptoMap`], [`IkeError::TableFull`], provider errors.
    pub fn import_sa(&mut self, now: Instant, data: &[u8]) -> Result<u32, IkeError> {
        self.last_now = now;
        let mut r = Reader { data };
        if r.array::<4>()? != EXPORT_MAGIC || r.u8()? != EXPORT_VERSION {
            return Err(IkeError::InvalidImport);
        }
        let body_len = usize::from(r.u16()?);
        if body_len != r.data.len() {
            return Err(IkeError::InvalidImport);
        }
        let cky_i = r.array::<8>()?;
        let cky_r = r.array::<8>()?;
        if cky_i == [0; 8] || cky_r == [0; 8] {
            return Err(IkeError::InvalidImport);
        }
        let conn_id = r.u32()?;
        let role = match r.u8()? {
            0 => Role::Initiator,
            1 => Role::Responder,
            _ => return Err(IkeError::InvalidImport),
        };
        let mode = match r.u8()? {
            0 => ExchangeMode::Main,
            1 => ExchangeMode::Aggressive,
            _ => return Err(IkeError::InvalidImport),
        };
        let f = r.u8()?;
        if f & !flag::ALL != 0 {
            return Err(IkeError::InvalidImport);
        }
        let peer_natt = match r.u8()? {
            0 => None,
            1 => Some(NatTVariant::Rfc3947),
            2 => Some(NatTVariant::Draft),
            _ => return Err(IkeError::InvalidImport),
        };
        let local = r.addr()?;
        let remote = r.addr()?;
        if local.is_ipv4() != remote.is_ipv4() {
            return Err(IkeError::InvalidImport);
        }
        let enc = r.u16()?;
        let bits = r.u16()?;
        let cipher =
            cipher_from_attr(enc, (bits != 0).then_some(bits)).ok_or(IkeError::InvalidImport)?;
        let hash = hash_from_attr(r.u16()?).ok_or(IkeError::InvalidImport)?;
        let auth = r.u16()?;
        if !matches!(
            auth,
            auth_method::PRE_SHARED_KEY | auth_method::XAUTH_INIT_PRE_SHARED
        ) {
            return Err(IkeError::InvalidImport);
        }
        let group = group_from_attr(r.u16()?).ok_or(IkeError::InvalidImport)?;
        let chosen = Phase1Transform {
            cipher,
            hash,
            auth_method: auth,
            group,
            life_seconds: opt_u64(r.u64()?),
            life_kilobytes: opt_u64(r.u64()?),
        };
        let lifetime_secs = r.u64()?;
        let expires = opt_u64(r.u64()?).map(|ms| now + Duration::from_millis(ms));
        let rekey_at = opt_u64(r.u64()?).map(|ms| now + Duration::from_millis(ms));
        let map = r.u32()?;
        let pos = r.u8()?;
        let crypto_map = (f & flag::CRYPTO_MAP != 0).then_some(map);
        let mut peer_pos = None;
        if let Some(m) = crypto_map {
            let p = self
                .config
                .crypto_maps
                .iter()
                .position(|e| e.seq == m)
                .ok_or(IkeError::UnknownCryptoMap)?;
            let n = self.config.crypto_maps.get(p).map_or(0, |e| e.peers.len());
            if usize::from(pos) >= n.max(1) {
                return Err(IkeError::InvalidImport);
            }
            peer_pos = Some((p, pos));
        } else if map != 0 || pos != 0 {
            return Err(IkeError::InvalidImport);
        }
        let dpd_seq = r.u32()?;
        let out = r.u32()?;
        let dpd_outstanding = (f & flag::DPD_OUTSTANDING != 0).then_some(out);
        if dpd_outstanding.is_none() && out != 0 {
            return Err(IkeError::InvalidImport);
        }
        let n_mids = usize::from(r.u8()?);
        if n_mids > RECENT_MIDS {
            return Err(IkeError::InvalidImport);
        }
        let mut recent_mids = [0u32; RECENT_MIDS];
        for m in recent_mids.iter_mut().take(n_mids) {
            *m = r.u32()?;
            if *m == 0 {
                return Err(IkeError::InvalidImport);
            }
        }
        let id_len = usize::from(r.u16()?);
        if id_len > MAX_ID_BODY {
            return Err(IkeError::InvalidImport);
        }
        let peer_id = r.take(id_len)?;
        let hl = hash.output_len();
        let skeyid_d = r.secret(hl)?;
        let skeyid_a = r.secret(hl)?;
        let skeyid_e = r.secret(hl)?;
        let block = cipher.block_len();
        if usize::from(r.u8()?) != block {
            return Err(IkeError::InvalidImport);
        }
        let last = Iv::from_slice(r.take(block)?).map_err(|_| IkeError::InvalidImport)?;
        if !r.data.is_empty() {
            return Err(IkeError::InvalidImport);
        }
        // Keys: Ka from SKEYID_e; the provider must have the cipher.
        let keys = Phase1Keys::<P::Prf>::from_parts(
            hash,
            SecretBytes::empty(),
            skeyid_d,
            skeyid_a,
            skeyid_e,
        );
        let ka = keys.encryption_key(cipher)?;
        let crypto = P1Crypto {
            keys,
            ka,
            alg: cipher,
            block,
        };
        crypto.cbc()?;
        // A slot: the same SA (a newer export) or a free one.
        let same = self.sas.iter().position(|s| {
            s.as_ref()
                .is_some_and(|s| s.cky_i == cky_i && s.cky_r == cky_r)
        });
        let (slot, conn_id) = match same {
            Some(k) => (k, self.sa_ref(k)?.conn_id),
            None => {
                let k = self
                    .sas
                    .iter()
                    .position(Option::is_none)
                    .ok_or(IkeError::TableFull)?;
                let taken = conn_id == 0 || self.sas.iter().flatten().any(|s| s.conn_id == conn_id);
                (k, if taken { self.alloc_conn_id() } else { conn_id })
            }
        };
        let mut sa = IkeSa::new(conn_id, role, mode, cky_i, cky_r, local, remote, now);
        sa.state = P1State::Established;
        sa.established_at = Some(now);
        sa.expires = expires;
        sa.rekey_at = rekey_at;
        sa.rekey_started = f & flag::REKEY_STARTED != 0;
        sa.chosen = Some(chosen);
        sa.lifetime_secs = lifetime_secs;
        sa.peer_natt = peer_natt;
        sa.peer_dpd = f & flag::PEER_DPD != 0;
        sa.nat = NatStatus {
            local_behind_nat: f & flag::LOCAL_BEHIND_NAT != 0,
            remote_behind_nat: f & flag::REMOTE_BEHIND_NAT != 0,
        };
        sa.peer_id.set(peer_id)?;
        sa.crypto = Some(crypto);
        sa.iv = Some(last);
        sa.last_block = Some(last);
        sa.recent_mids = recent_mids;
        sa.mid_next = n_mids % RECENT_MIDS;
        sa.crypto_map = crypto_map;
        sa.dpd_seq = dpd_seq;
        sa.dpd_outstanding = dpd_outstanding;
        if let Some(s) = self.sas.get_mut(slot) {
            *s = Some(sa);
        }
        if let Some((p, pos)) = peer_pos {
            if let Some(x) = self.peer_index.get_mut(p) {
                *x = pos;
            }
        }
        self.dpd_established(now, slot);
        Ok(conn_id)
    }

    /// Re-attaches a child SA pair (installed in the data plane from an HA SA-pair
    /// record, see [`ChildImport::from_ha_record`]) to its imported IKE SA, so that
    /// [`Ike::delete_child`], [`Ike::rekey_child`], the peer's DELETE, child expiry and
    /// `ipsec_status` know it. Emits no event (the data plane has the pair already). A
    /// record with the same inbound SPI is replaced. Returns the owning IKE SA's
    /// connection id.
    ///
    /// # Errors
    /// [`IkeError::UnknownSa`] (no established IKE SA with these cookies, or with the
    /// peer when they are zero), [`IkeError::ChildTableFull`].
    pub fn import_child(&mut self, now: Instant, child: &ChildImport) -> Result<u32, IkeError> {
        self.last_now = now;
        let i = if child.ike_cookies == [0; 16] {
            self.established_to(child.peer, None)
        } else {
            self.sas.iter().position(|s| {
                s.as_ref().is_some_and(|s| {
                    s.is_established()
                        && s.cky_i.as_slice() == child.ike_cookies.get(..8).unwrap_or(&[])
                        && s.cky_r.as_slice() == child.ike_cookies.get(8..).unwrap_or(&[])
                })
            })
        }
        .ok_or(IkeError::UnknownSa)?;
        let sa = self.sa_ref(i)?;
        if sa.remote.ip() != child.peer {
            return Err(IkeError::UnknownSa);
        }
        let rec = ChildRecord {
            conn_id: sa.conn_id,
            crypto_map: child.crypto_map,
            peer: sa.remote,
            inbound: child.inbound.clone(),
            outbound: child.outbound.clone(),
            keys: None,
            replaces: None,
            expires: now + child.lifetime_left.unwrap_or(Duration::from_millis(NEVER)),
            pfs: child.pfs,
            lifetime_kb: child.inbound.lifetime.hard_bytes.map_or(0, |b| b / 1024),
            nat_oa: None,
        };
        let conn_id = rec.conn_id;
        if let Some(c) = self
            .children
            .iter_mut()
            .find(|c| c.inbound.spi == child.inbound.spi)
        {
            *c = rec;
        } else {
            self.children
                .push(rec)
                .map_err(|_| IkeError::ChildTableFull)?;
        }
        Ok(conn_id)
    }
}
