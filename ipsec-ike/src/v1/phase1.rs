//! Phase 1: Main Mode (RFC 2409 §5, 6 messages) and Aggressive Mode (3 messages) with
//! pre-shared keys, Vendor IDs, and NAT-T discovery and floating (RFC 3947).
//!
//! | message | Main Mode | Aggressive Mode |
//! |---|---|---|
//! | 1 (I) | SA, VID(NAT-T x3, DPD) | SA, KE, Ni, IDii, VIDs |
//! | 2 (R) | SA, VIDs | SA, KE, Nr, IDir, HASH_R, VIDs, NAT-D x2 |
//! | 3 (I) | KE, Ni, NAT-D x2 | *HASH_I, NAT-D x2, N(INITIAL-CONTACT)* (floated) |
//! | 4 (R) | KE, Nr, NAT-D x2 | |
//! | 5 (I) | *IDii, HASH_I, N(INITIAL-CONTACT)* (floated) | |
//! | 6 (R) | *IDir, HASH_R* | |
//!
//! (*italic* = encrypted.) The first NAT-D hashes the receiver's address and port, the
//! second the sender's. A side whose own address does not hash to the first NAT-D it
//! receives is behind a NAT; a peer none of whose NAT-Ds hash to the packet's source is.

use core::net::{IpAddr, SocketAddr};

use hal_traits::{CryptoProvider, DhGroup, DiffieHellman, MAX_DH_LEN, SecretBytes, SecureRng};
use ipsec_core::{Duration, Instant};
use zeroize::Zeroize;

use super::IkeError;
use super::config::{ExchangeMode, IkeConfig, IsakmpPolicy, LocalIdentity, MAX_HOSTNAME_LEN};
use super::events::{FailReason, NatStatus, Queued};
use super::ike::{Ike, emit};
use super::info::plain_notify;
use super::keys::{Iv, Phase1Keys, phase1_iv};
use super::msg::{self, decrypt, encrypt};
use super::negotiate::{
    address_identity, check_phase1_reply, choose_phase1, natd_hash, write_phase1_sa, write_sa_reply,
};
use super::sa::{IkeSa, NONCE_LEN, P1Crypto, P1State, QmRequest, fingerprint, random};
use super::status::Role;
use crate::wire::ike_attr::Phase1Transform;
use crate::wire::vendor_id::{self, NatTVariant};
use crate::wire::{
    HEADER_LEN, HashRepr, HeaderRepr, IdRepr, Identity, KeRepr, MessageBuilder, NatDRepr,
    NonceRepr, NotifyRepr, PayloadRepr, VendorIdRepr, exchange_type, flags, notify, payload_type,
};

/// Our phase-1 identification body.
pub(super) struct LocalId {
    buf: [u8; 4 + MAX_HOSTNAME_LEN + 12],
    len: usize,
}

impl LocalId {
    pub(super) fn new(config: &IkeConfig, local: IpAddr) -> Result<Self, IkeError> {
        let identity = match &config.identity {
            LocalIdentity::Address => address_identity(local),
            LocalIdentity::Hostname(h) => Identity::Fqdn(h.as_bytes()),
        };
        let r = IdRepr::new(identity);
        let mut id = Self {
            buf: [0; 4 + MAX_HOSTNAME_LEN + 12],
            len: r.buffer_len(),
        };
        r.emit(&mut id.buf)?;
        Ok(id)
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

fn header(sa_cky_i: [u8; 8], cky_r: [u8; 8], exchange: u8, message_id: u32) -> HeaderRepr {
    HeaderRepr {
        initiator_cookie: sa_cky_i,
        responder_cookie: cky_r,
        next_payload: 0,
        exchange_type: exchange,
        flags: 0,
        message_id,
        length: 0,
    }
}

const fn exchange_of(mode: ExchangeMode) -> u8 {
    match mode {
        ExchangeMode::Main => exchange_type::IDENTITY_PROTECTION,
        ExchangeMode::Aggressive => exchange_type::AGGRESSIVE,
    }
}

/// Our Vendor IDs: NAT-T (RFC 3947, draft-02\n, draft-03) when enabled, and DPD.
fn push_our_vids(b: &mut MessageBuilder<'_>, natt: bool) -> Result<(), IkeError> {
    if natt {
        for v in [
            &vendor_id::NATT_RFC3947[..],
            &vendor_id::NATT_DRAFT_02_N[..],
            &vendor_id::NATT_DRAFT_03[..],
        ] {
            b.push(&PayloadRepr::VendorId(VendorIdRepr::new(v)))?;
        }
    }
    b.push(&PayloadRepr::VendorId(VendorIdRepr::new(&vendor_id::DPD)))?;
    Ok(())
}

/// What the peer's Vendor IDs announce: the NAT-T numbering (RFC preferred) with the
/// VID to echo, and DPD.
fn peer_vids<'a>(vids: &[&'a [u8]]) -> (Option<(NatTVariant, &'a [u8])>, bool) {
    let mut natt: Option<(NatTVariant, &'a [u8])> = None;
    let mut dpd = false;
    for v in vids {
        match vendor_id::nat_t_variant(v) {
            Some(NatTVariant::Rfc3947) => natt = Some((NatTVariant::Rfc3947, v)),
            Some(NatTVariant::Draft) if natt.is_none() => natt = Some((NatTVariant::Draft, v)),
            _ => {}
        }
        if *v == vendor_id::DPD {
            dpd = true;
        }
    }
    (natt, dpd)
}

fn natd_repr(data: &[u8], variant: NatTVariant) -> PayloadRepr<'_> {
    PayloadRepr::NatD(match variant {
        NatTVariant::Rfc3947 => NatDRepr::new(data),
        NatTVariant::Draft => NatDRepr::new_draft(data),
    })
}

/// Appends NAT-D(remote), NAT-D(local).
#[allow(clippy::too_many_arguments)]
fn push_natd<P: CryptoProvider>(
    b: &mut MessageBuilder<'_>,
    cky_i: &[u8; 8],
    cky_r: &[u8; 8],
    hash: hal_traits::HashAlg,
    variant: NatTVariant,
    remote: SocketAddr,
    local: SocketAddr,
) -> Result<(), IkeError> {
    for a in [remote, local] {
        let (h, n) = natd_hash::<P::Prf>(hash, cky_i, cky_r, a)?;
        b.push(&natd_repr(h.get(..n).unwrap_or(&[]), variant))?;
    }
    Ok(())
}

/// NAT detection from received NAT-Ds (first: our address as the peer saw it).
fn detect<P: CryptoProvider>(
    sa: &IkeSa<P>,
    hash: hal_traits::HashAlg,
    natds: &[&[u8]],
    local: SocketAddr,
    remote: SocketAddr,
) -> Result<Option<NatStatus>, IkeError> {
    let Some((first, others)) = natds.split_first() else {
        return Ok(None);
    };
    if others.is_empty() {
        return Ok(None);
    }
    let (l, ln) = natd_hash::<P::Prf>(hash, &sa.cky_i, &sa.cky_r, local)?;
    let (r, rn) = natd_hash::<P::Prf>(hash, &sa.cky_i, &sa.cky_r, remote)?;
    let r = r.get(..rn).unwrap_or(&[]);
    Ok(Some(NatStatus {
        local_behind_nat: *first != l.get(..ln).unwrap_or(&[]),
        remote_behind_nat: !others.contains(&r),
    }))
}

/// `g^xy` with the peer's public value (which must be exactly the group's length).
pub(super) fn dh_shared<D: DiffieHellman>(
    dh: &D,
    group: DhGroup,
    peer: &[u8],
) -> Result<SecretBytes<MAX_DH_LEN>, IkeError> {
    if peer.len() != group.len() {
        return Err(IkeError::Malformed(
            crate::wire::IkeWireError::InvalidKeyInformation,
        ));
    }
    let mut buf = [0u8; MAX_DH_LEN];
    let r = dh
        .shared_secret(peer, &mut buf)
        .map_err(|_| IkeError::Malformed(crate::wire::IkeWireError::InvalidKeyInformation))
        .and_then(|n| Ok(SecretBytes::from_slice(buf.get(..n).unwrap_or(&[]))?));
    buf.zeroize();
    r
}

/// SKEYID and children, Ka, the cipher and the phase-1 IV.
#[allow(clippy::too_many_arguments)]
fn derive<P: CryptoProvider>(
    chosen: &Phase1Transform,
    psk: &[u8],
    ni: &[u8],
    nr: &[u8],
    gxy: &[u8],
    cky_i: &[u8; 8],
    cky_r: &[u8; 8],
    g_xi: &[u8],
    g_xr: &[u8],
) -> Result<(P1Crypto<P>, Iv), IkeError> {
    let keys = Phase1Keys::<P::Prf>::from_psk(chosen.hash, psk, ni, nr, gxy, cky_i, cky_r)?;
    let ka = keys.encryption_key(chosen.cipher)?;
    let block = chosen.cipher.block_len();
    let iv = phase1_iv::<P::Prf>(chosen.hash, g_xi, g_xr, block)?;
    let c = P1Crypto {
        keys,
        ka,
        alg: chosen.cipher,
        block,
    };
    c.cbc()?; // the provider has this cipher
    Ok((c, iv))
}

fn float(sa_local: &mut SocketAddr, sa_remote: &mut SocketAddr, port: u16) {
    sa_local.set_port(port);
    sa_remote.set_port(port);
}

fn cookies(cky_i: &[u8; 8], cky_r: &[u8; 8]) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[..8].copy_from_slice(cky_i);
    c[8..].copy_from_slice(cky_r);
    c
}

/// The policies an initiator proposes: all, or (Aggressive Mode, one KE) those of the
/// first policy's group.
fn proposed(config: &IkeConfig, mode: ExchangeMode) -> impl Iterator<Item = &IsakmpPolicy> + Clone {
    let ps = config.effective_policies();
    let g = ps.first().map(|p| p.group);
    ps.iter()
        .filter(move |p| mode == ExchangeMode::Main || Some(p.group) == g)
}

/// Whether a repeated copy of the last message received is answered by resending our
/// stored reply. Only a request is answered: MM1/MM3/MM5 (and AM1) at the responder,
/// and AM2 at an established Aggressive Mode initiator (the responder retransmits AM2
/// until AM3 arrives). A repeated response (MM2/MM4/MM6, AM3) is not: answering both
/// ways would ping-pong forever.
fn answers_duplicate<P: CryptoProvider>(sa: &IkeSa<P>) -> bool {
    match (sa.role, sa.mode) {
        (Role::Responder, ExchangeMode::Main) => true,
        (Role::Responder, ExchangeMode::Aggressive) => !sa.is_established(),
        (Role::Initiator, ExchangeMode::Main) => false,
        (Role::Initiator, ExchangeMode::Aggressive) => sa.is_established(),
    }
}

fn no_proposal() -> IkeError {
    IkeError::NoProposalChosen
}

fn missing(t: u8) -> IkeError {
    IkeError::Malformed(crate::wire::IkeWireError::InvalidPayloadType(t))
}

impl<P: CryptoProvider, const SAS: usize, const CHILDREN: usize> Ike<P, SAS, CHILDREN> {
    fn free_slot(&self) -> Option<usize> {
        self.sas.iter().position(Option::is_none)
    }

    fn find_sa(&self, cky_i: &[u8; 8], cky_r: &[u8; 8]) -> Option<usize> {
        self.sas.iter().position(|s| {
            s.as_ref()
                .is_some_and(|sa| sa.cky_i == *cky_i && sa.cky_r == *cky_r)
        })
    }

    /// The SA a message belongs to: both cookies, or (answer to our first message) our
    /// CKY-I while we do not know CKY-R yet.
    pub(super) fn find_sa_for(&self, cky_i: &[u8; 8], cky_r: &[u8; 8]) -> Option<usize> {
        self.find_sa(cky_i, cky_r).or_else(|| {
            self.sas.iter().position(|s| {
                s.as_ref().is_some_and(|sa| {
                    sa.role == Role::Initiator
                        && sa.cky_i == *cky_i
                        && sa.cky_r == [0; 8]
                        && matches!(sa.state, P1State::MmI1 | P1State::AmI1)
                })
            })
        })
    }

    /// Starts phase 1 as initiator towards `peer`; returns the SA slot.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_phase1<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        peer: IpAddr,
        mode: ExchangeMode,
        req: Option<QmRequest>,
        crypto_map: Option<u32>,
        attempts_left: u8,
    ) -> Result<usize, IkeError> {
        self.ensure_secret(rng)?;
        let slot = self.free_slot().ok_or(IkeError::TableFull)?;
        let psk = self
            .config
            .psk_for_addr(peer)
            .ok_or(IkeError::NoPresharedKey)?
            .clone();
        let mut cky_i = random::<R, 8>(rng)?;
        while cky_i == [0; 8] || self.sas.iter().flatten().any(|s| s.cky_i == cky_i) {
            cky_i = random::<R, 8>(rng)?;
        }
        let conn_id = self.alloc_conn_id();
        let local = SocketAddr::new(self.config.local_addr, self.config.ike_port);
        let remote = SocketAddr::new(peer, self.config.ike_port);
        let initial_contact = self.config.initial_contact && !self.has_state_with(peer);
        let Some(s) = self.sas.get_mut(slot) else {
            return Err(IkeError::TableFull);
        };
        *s = Some(IkeSa::new(
            conn_id,
            Role::Initiator,
            mode,
            cky_i,
            [0; 8],
            local,
            remote,
            now,
        ));
        let sa = self.sa_mut(slot)?;
        sa.psk = Some(psk);
        sa.crypto_map = crypto_map;
        sa.attempts_left = attempts_left;
        sa.send_initial_contact = initial_contact;
        if let Some(r) = req {
            let _ = sa.pending.push(r);
        }
        let r = match mode {
            ExchangeMode::Main => self.send_mm1(now, slot),
            ExchangeMode::Aggressive => self.send_am1(now, rng, slot),
        };
        if let Err(e) = r {
            if let Some(s) = self.sas.get_mut(slot) {
                *s = None;
            }
            return Err(e);
        }
        Ok(slot)
    }

    fn send_mm1(&mut self, now: Instant, i: usize) -> Result<(), IkeError> {
        let natt = self.config.nat_traversal;
        let rt = self.config.retransmit;
        let ps = proposed(&self.config, ExchangeMode::Main);
        let Some(Some(sa)) = self.sas.get_mut(i) else {
            return Err(IkeError::UnknownSa);
        };
        let n = write_phase1_sa(sa.sai_b.storage(), ps)?;
        sa.sai_b.set_len(n);
        let hdr = header(sa.cky_i, [0; 8], exchange_type::IDENTITY_PROTECTION, 0);
        let mut b = MessageBuilder::new(&mut sa.tx.buf, &hdr)?;
        b.push_raw(payload_type::SA, sa.sai_b.as_slice())?;
        push_our_vids(&mut b, natt)?;
        let len = b.finish()?;
        sa.tx.arm(len, now, &rt, true);
        Ok(())
    }

    fn send_am1<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        i: usize,
    ) -> Result<(), IkeError> {
        let natt = self.config.nat_traversal;
        let rt = self.config.retransmit;
        let group = self
            .config
            .effective_policies()
            .first()
            .map(|p| p.group)
            .ok_or(IkeError::InvalidConfig)?;
        let ps = proposed(&self.config, ExchangeMode::Aggressive);
        let local_ip = self.sa_ref(i)?.local.ip();
        let id = LocalId::new(&self.config, local_ip)?;
        let Some(Some(sa)) = self.sas.get_mut(i) else {
            return Err(IkeError::UnknownSa);
        };
        let n = write_phase1_sa(sa.sai_b.storage(), ps)?;
        sa.sai_b.set_len(n);
        let dh = P::Dh::generate(group, rng)?;
        let n = dh.public_key(sa.g_xi.storage())?;
        sa.g_xi.set_len(n);
        sa.dh = Some(dh);
        sa.ni.set(&random::<R, NONCE_LEN>(rng)?)?;
        let hdr = header(sa.cky_i, [0; 8], exchange_type::AGGRESSIVE, 0);
        let mut b = MessageBuilder::new(&mut sa.tx.buf, &hdr)?;
        b.push_raw(payload_type::SA, sa.sai_b.as_slice())?;
        b.push(&PayloadRepr::Ke(KeRepr::new(sa.g_xi.as_slice())))?;
        b.push(&PayloadRepr::Nonce(NonceRepr::new(sa.ni.as_slice())))?;
        b.push_raw(payload_type::ID, id.as_slice())?;
        push_our_vids(&mut b, natt)?;
        let len = b.finish()?;
        sa.tx.arm(len, now, &rt, true);
        Ok(())
    }

    /// Every Main / Aggressive Mode message.
    pub(super) fn on_phase1<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        from: SocketAddr,
        to: SocketAddr,
        hdr: &HeaderRepr,
        msg: &[u8],
    ) -> Result<(), IkeError> {
        if hdr.message_id != 0 {
            return Err(IkeError::UnexpectedMessage);
        }
        let mode = if hdr.exchange_type == exchange_type::AGGRESSIVE {
            ExchangeMode::Aggressive
        } else {
            ExchangeMode::Main
        };
        let fp = fingerprint::<P::Prf>(msg)?;
        if hdr.responder_cookie == [0; 8] {
            let cky_r = self.responder_cookie(from, &hdr.initiator_cookie)?;
            if let Some(i) = self.find_sa(&hdr.initiator_cookie, &cky_r) {
                let sa = self.sa_mut(i)?;
                if sa.last_rx == Some(fp) {
                    if answers_duplicate(sa) {
                        sa.tx.resend();
                    }
                    self.counters.duplicates += 1;
                    return Ok(());
                }
                return Err(IkeError::UnexpectedMessage);
            }
            if self
                .sas
                .iter()
                .flatten()
                .any(|s| s.cky_i == hdr.initiator_cookie && s.role == Role::Initiator)
            {
                return Err(IkeError::UnexpectedMessage);
            }
            return self.respond_first(now, rng, from, to, hdr, msg, cky_r, mode, fp);
        }
        let i = self
            .find_sa_for(&hdr.initiator_cookie, &hdr.responder_cookie)
            .ok_or(IkeError::UnknownSa)?;
        let sa = self.sa_mut(i)?;
        if sa.mode != mode || from.ip() != sa.remote.ip() {
            return Err(IkeError::UnexpectedMessage);
        }
        if sa.last_rx == Some(fp) {
            if answers_duplicate(sa) {
                sa.tx.resend();
            }
            self.counters.duplicates += 1;
            return Ok(());
        }
        let conn_id = sa.conn_id;
        let encrypted = hdr.flags & flags::ENCRYPTION != 0;
        let r = match (sa.state, encrypted) {
            (P1State::MmI1, false) => self.mm_i2(now, rng, i, hdr, msg, to),
            (P1State::MmI3, false) => self.mm_i4(now, i, hdr, msg, from, to),
            (P1State::MmI5, true) => self.mm_i6(now, rng, i, hdr, msg),
            (P1State::MmR2, false) => self.mm_r3(now, rng, i, hdr, msg, from, to),
            (P1State::MmR4, true) => self.mm_r5(now, rng, i, hdr, msg, from, to),
            (P1State::AmI1, false) => self.am_i2(now, rng, i, hdr, msg, from, to),
            (P1State::AmR2, _) => self.am_r3(now, rng, i, hdr, msg, from, to, encrypted),
            _ => Err(IkeError::UnexpectedMessage),
        };
        if r.is_ok() {
            if let Some(Some(sa)) = self.sas.get_mut(i) {
                if sa.conn_id == conn_id {
                    sa.last_rx = Some(fp);
                }
            }
        }
        r
    }

    /// MM1 / AM1 from a new peer: choose a policy and answer, or refuse.
    #[allow(clippy::too_many_arguments)]
    fn respond_first<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        from: SocketAddr,
        to: SocketAddr,
        hdr: &HeaderRepr,
        msg: &[u8],
        cky_r: [u8; 8],
        mode: ExchangeMode,
        fp: super::sa::Fingerprint,
    ) -> Result<(), IkeError> {
        let (total, per) = self.half_open(from.ip());
        if total >= usize::from(self.config.max_half_open)
            || per >= usize::from(self.config.max_half_open_per_peer)
        {
            self.counters.half_open_refused += 1;
            return Err(IkeError::HalfOpenLimit);
        }
        let Some(slot) = self.free_slot() else {
            self.counters.half_open_refused += 1;
            return Err(IkeError::TableFull);
        };
        let cky_i = hdr.initiator_cookie;
        let area = msg.get(HEADER_LEN..).unwrap_or(&[]);
        let m = match msg::parse(exchange_of(mode), hdr.next_payload, area) {
            Ok(m) => m,
            Err(e) => {
                if let Some(t) = e.notify_type() {
                    let _ = plain_notify(
                        &mut self.out,
                        &mut self.counters,
                        rng,
                        cky_i,
                        cky_r,
                        to,
                        from,
                        t,
                    );
                }
                return Err(e.into());
            }
        };
        let peer_fail = |s: &mut Self, reason: FailReason| {
            emit(
                &mut s.events,
                &mut s.counters,
                Queued::Failed {
                    crypto_map: None,
                    peer: from,
                    reason,
                },
            );
        };
        let Some((sa_repr, sa_body)) = m.sa else {
            let _ = plain_notify(
                &mut self.out,
                &mut self.counters,
                rng,
                cky_i,
                cky_r,
                to,
                from,
                notify::PAYLOAD_MALFORMED,
            );
            return Err(missing(payload_type::SA));
        };
        let ke_len = m.ke.map(<[u8]>::len);
        let chosen = choose_phase1(self.config.effective_policies(), &sa_repr, None)
            .filter(|c| mode == ExchangeMode::Main || Some(c.chosen.group.len()) == ke_len);
        let Some(choice) = chosen else {
            let _ = plain_notify(
                &mut self.out,
                &mut self.counters,
                rng,
                cky_i,
                cky_r,
                to,
                from,
                notify::NO_PROPOSAL_CHOSEN,
            );
            peer_fail(self, FailReason::NoProposalChosen);
            return Err(no_proposal());
        };
        // The key: by address in Main Mode (the identity is still encrypted), by the
        // identity first in Aggressive Mode.
        let psk = match (mode, m.ids.first()) {
            (ExchangeMode::Aggressive, Some((id, _))) => match id.identity {
                Identity::Fqdn(n) | Identity::UserFqdn(n) => self.config.psk_for_hostname(n),
                Identity::Ipv4Addr(a) => self.config.psk_for_addr(IpAddr::V4(a)),
                Identity::Ipv6Addr(a) => self.config.psk_for_addr(IpAddr::V6(a)),
                _ => None,
            }
            .or_else(|| self.config.psk_for_addr(from.ip())),
            (ExchangeMode::Aggressive, None) => {
                let _ = plain_notify(
                    &mut self.out,
                    &mut self.counters,
                    rng,
                    cky_i,
                    cky_r,
                    to,
                    from,
                    notify::PAYLOAD_MALFORMED,
                );
                return Err(missing(payload_type::ID));
            }
            (ExchangeMode::Main, _) => self.config.psk_for_addr(from.ip()),
        };
        let Some(psk) = psk.cloned() else {
            let _ = plain_notify(
                &mut self.out,
                &mut self.counters,
                rng,
                cky_i,
                cky_r,
                to,
                from,
                notify::AUTHENTICATION_FAILED,
            );
            peer_fail(self, FailReason::NoPresharedKey);
            return Err(IkeError::NoPresharedKey);
        };
        let natt_cfg = self.config.nat_traversal;
        let (natt, dpd) = peer_vids(&m.vids);
        let natt = natt.filter(|_| natt_cfg);
        let conn_id = self.alloc_conn_id();
        let n = write_sa_reply(&mut self.scratch, &choice.proposal, &[], &choice.transform)?;
        let sa_reply = self.scratch.get(..n).unwrap_or(&[]);
        let Some(s) = self.sas.get_mut(slot) else {
            return Err(IkeError::TableFull);
        };
        *s = Some(IkeSa::new(
            conn_id,
            Role::Responder,
            mode,
            cky_i,
            cky_r,
            to,
            from,
            now,
        ));
        let Some(Some(sa)) = self.sas.get_mut(slot) else {
            return Err(IkeError::TableFull);
        };
        sa.sai_b.set(sa_body)?;
        sa.chosen = Some(choice.chosen);
        sa.peer_natt = natt.map(|(v, _)| v);
        sa.peer_dpd = dpd;
        sa.psk = Some(psk);
        let rt = self.config.retransmit;
        let r = match mode {
            ExchangeMode::Main => (|| {
                let mut b = MessageBuilder::new(
                    &mut sa.tx.buf,
                    &header(cky_i, cky_r, exchange_type::IDENTITY_PROTECTION, 0),
                )?;
                b.push_raw(payload_type::SA, sa_reply)?;
                if let Some((_, v)) = natt {
                    b.push(&PayloadRepr::VendorId(VendorIdRepr::new(v)))?;
                }
                b.push(&PayloadRepr::VendorId(VendorIdRepr::new(&vendor_id::DPD)))?;
                let len = b.finish()?;
                sa.tx.arm(len, now, &rt, false);
                Ok::<(), IkeError>(())
            })(),
            ExchangeMode::Aggressive => {
                let ke = m.ke.ok_or(missing(payload_type::KE));
                let ni = m.nonce.ok_or(missing(payload_type::NONCE));
                let id = m
                    .ids
                    .first()
                    .map(|(_, b)| *b)
                    .ok_or(missing(payload_type::ID));
                let local_id = LocalId::new(&self.config, to.ip());
                (|| {
                    let (ke, ni, id, local_id) = (ke?, ni?, id?, local_id?);
                    sa.g_xi.set(ke)?;
                    sa.ni.set(ni)?;
                    sa.peer_id.set(id)?;
                    Self::send_am2(sa, rng, sa_reply, natt, &local_id, now, &rt)
                })()
            }
        };
        match r {
            Ok(()) => {
                sa.last_rx = Some(fp);
                Ok(())
            }
            Err(e) => {
                if let Some(s) = self.sas.get_mut(slot) {
                    *s = None;
                }
                if let IkeError::Malformed(w) = e {
                    if let Some(t) = w.notify_type() {
                        let _ = plain_notify(
                            &mut self.out,
                            &mut self.counters,
                            rng,
                            cky_i,
                            cky_r,
                            to,
                            from,
                            t,
                        );
                    }
                }
                Err(e)
            }
        }
    }

    /// AM2: our KE and nonce, keys, HASH_R, NAT-D.
    fn send_am2<R: SecureRng>(
        sa: &mut IkeSa<P>,
        rng: &mut R,
        sa_reply: &[u8],
        natt: Option<(NatTVariant, &[u8])>,
        local_id: &LocalId,
        now: Instant,
        rt: &super::config::Retransmit,
    ) -> Result<(), IkeError> {
        let chosen = sa.chosen.ok_or(IkeError::UnexpectedMessage)?;
        let dh = P::Dh::generate(chosen.group, rng)?;
        let n = dh.public_key(sa.g_xr.storage())?;
        sa.g_xr.set_len(n);
        sa.nr.set(&random::<R, NONCE_LEN>(rng)?)?;
        let gxy = dh_shared(&dh, chosen.group, sa.g_xi.as_slice())?;
        let psk = sa.psk.as_ref().ok_or(IkeError::NoPresharedKey)?;
        let (crypto, iv) = derive::<P>(
            &chosen,
            psk.expose(),
            sa.ni.as_slice(),
            sa.nr.as_slice(),
            gxy.expose(),
            &sa.cky_i,
            &sa.cky_r,
            sa.g_xi.as_slice(),
            sa.g_xr.as_slice(),
        )?;
        let hash_r = crypto.keys.hash_r(
            sa.g_xi.as_slice(),
            sa.g_xr.as_slice(),
            &sa.cky_i,
            &sa.cky_r,
            sa.sai_b.as_slice(),
            local_id.as_slice(),
        )?;
        let hdr = header(sa.cky_i, sa.cky_r, exchange_type::AGGRESSIVE, 0);
        let mut b = MessageBuilder::new(&mut sa.tx.buf, &hdr)?;
        b.push_raw(payload_type::SA, sa_reply)?;
        b.push(&PayloadRepr::Ke(KeRepr::new(sa.g_xr.as_slice())))?;
        b.push(&PayloadRepr::Nonce(NonceRepr::new(sa.nr.as_slice())))?;
        b.push_raw(payload_type::ID, local_id.as_slice())?;
        b.push(&PayloadRepr::Hash(HashRepr::new(hash_r.as_slice())))?;
        if let Some((v, vid)) = natt {
            b.push(&PayloadRepr::VendorId(VendorIdRepr::new(vid)))?;
            b.push(&PayloadRepr::VendorId(VendorIdRepr::new(&vendor_id::DPD)))?;
            let (r, l) = (sa.remote, sa.local);
            for a in [r, l] {
                let (h, n) = natd_hash::<P::Prf>(chosen.hash, &sa.cky_i, &sa.cky_r, a)?;
                b.push(&natd_repr(h.get(..n).unwrap_or(&[]), v))?;
            }
        } else {
            b.push(&PayloadRepr::VendorId(VendorIdRepr::new(&vendor_id::DPD)))?;
        }
        let len = b.finish()?;
        sa.tx.arm(len, now, rt, true);
        sa.crypto = Some(crypto);
        sa.iv = Some(iv);
        sa.dh = None;
        Ok(())
    }

    /// Initiator, MM2: the chosen proposal; send KE, Ni, NAT-D.
    fn mm_i2<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        i: usize,
        hdr: &HeaderRepr,
        msg: &[u8],
        to: SocketAddr,
    ) -> Result<(), IkeError> {
        let area = msg.get(HEADER_LEN..).unwrap_or(&[]);
        let m = msg::parse(exchange_type::IDENTITY_PROTECTION, hdr.next_payload, area)?;
        let (sa_repr, _) = m.sa.ok_or(missing(payload_type::SA))?;
        let Some(chosen) = check_phase1_reply(proposed(&self.config, ExchangeMode::Main), &sa_repr)
        else {
            self.fail_phase1(now, rng, i, FailReason::NoProposalChosen);
            return Err(no_proposal());
        };
        let natt_cfg = self.config.nat_traversal;
        let rt = self.config.retransmit;
        let (natt, dpd) = peer_vids(&m.vids);
        let Some(Some(sa)) = self.sas.get_mut(i) else {
            return Err(IkeError::UnknownSa);
        };
        sa.cky_r = hdr.responder_cookie;
        sa.chosen = Some(chosen);
        sa.peer_natt = natt.filter(|_| natt_cfg).map(|(v, _)| v);
        sa.peer_dpd = dpd;
        sa.local = SocketAddr::new(to.ip(), sa.local.port());
        let dh = P::Dh::generate(chosen.group, rng)?;
        let n = dh.public_key(sa.g_xi.storage())?;
        sa.g_xi.set_len(n);
        sa.dh = Some(dh);
        sa.ni.set(&random::<R, NONCE_LEN>(rng)?)?;
        let hdr = header(sa.cky_i, sa.cky_r, exchange_type::IDENTITY_PROTECTION, 0);
        let mut b = MessageBuilder::new(&mut sa.tx.buf, &hdr)?;
        b.push(&PayloadRepr::Ke(KeRepr::new(sa.g_xi.as_slice())))?;
        b.push(&PayloadRepr::Nonce(NonceRepr::new(sa.ni.as_slice())))?;
        if let Some(v) = sa.peer_natt {
            push_natd::<P>(
                &mut b,
                &sa.cky_i,
                &sa.cky_r,
                chosen.hash,
                v,
                sa.remote,
                sa.local,
            )?;
        }
        let len = b.finish()?;
        sa.tx.arm(len, now, &rt, true);
        sa.state = P1State::MmI3;
        Ok(())
    }

    /// Initiator, MM4: keys, NAT detection, float; send MM5.
    fn mm_i4(
        &mut self,
        now: Instant,
        i: usize,
        hdr: &HeaderRepr,
        msg: &[u8],
        from: SocketAddr,
        to: SocketAddr,
    ) -> Result<(), IkeError> {
        let area = msg.get(HEADER_LEN..).unwrap_or(&[]);
        let m = msg::parse(exchange_type::IDENTITY_PROTECTION, hdr.next_payload, area)?;
        let ke = m.ke.ok_or(missing(payload_type::KE))?;
        let nr = m.nonce.ok_or(missing(payload_type::NONCE))?;
        let local_ip = self.sa_ref(i)?.local.ip();
        let id = LocalId::new(&self.config, local_ip)?;
        let natt_port = self.config.natt_port;
        let rt = self.config.retransmit;
        let Some(Some(sa)) = self.sas.get_mut(i) else {
            return Err(IkeError::UnknownSa);
        };
        let chosen = sa.chosen.ok_or(IkeError::UnexpectedMessage)?;
        let dh = sa.dh.as_ref().ok_or(IkeError::UnexpectedMessage)?;
        let gxy = dh_shared(dh, chosen.group, ke)?;
        let psk = sa.psk.as_ref().ok_or(IkeError::NoPresharedKey)?;
        let (crypto, iv) = derive::<P>(
            &chosen,
            psk.expose(),
            sa.ni.as_slice(),
            nr,
            gxy.expose(),
            &sa.cky_i,
            &sa.cky_r,
            sa.g_xi.as_slice(),
            ke,
        )?;
        sa.g_xr.set(ke)?;
        sa.nr.set(nr)?;
        if sa.peer_natt.is_some() {
            match detect(sa, chosen.hash, &m.natd, to, from)? {
                Some(nat) => {
                    sa.nat = nat;
                    if nat.detected() {
                        float(&mut sa.local, &mut sa.remote, natt_port);
                    }
                }
                None => sa.peer_natt = None,
            }
        }
        let hash_i = crypto.keys.hash_i(
            sa.g_xi.as_slice(),
            sa.g_xr.as_slice(),
            &sa.cky_i,
            &sa.cky_r,
            sa.sai_b.as_slice(),
            id.as_slice(),
        )?;
        let ck = cookies(&sa.cky_i, &sa.cky_r);
        let hdr = header(sa.cky_i, sa.cky_r, exchange_type::IDENTITY_PROTECTION, 0);
        let mut b = MessageBuilder::new(&mut sa.tx.buf, &hdr)?;
        b.push_raw(payload_type::ID, id.as_slice())?;
        b.push(&PayloadRepr::Hash(HashRepr::new(hash_i.as_slice())))?;
        if sa.send_initial_contact {
            b.push(&PayloadRepr::Notify(NotifyRepr::isakmp(
                notify::INITIAL_CONTACT,
                &ck,
                &[],
            )))?;
        }
        let len = b.finish_encrypted(crypto.block)?;
        let next = encrypt(&crypto.cbc()?, &iv, &mut sa.tx.buf, len)?;
        sa.tx.arm(len, now, &rt, true);
        sa.iv = Some(next);
        sa.crypto = Some(crypto);
        sa.state = P1State::MmI5;
        Ok(())
    }

    /// Initiator, MM6: verify HASH_R; established.
    fn mm_i6<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        i: usize,
        hdr: &HeaderRepr,
        msg: &[u8],
    ) -> Result<(), IkeError> {
        let Some(Some(sa)) = self.sas.get_mut(i) else {
            return Err(IkeError::UnknownSa);
        };
        let crypto = sa.crypto.as_ref().ok_or(IkeError::UnexpectedMessage)?;
        let iv = sa.iv.ok_or(IkeError::UnexpectedMessage)?;
        let verified = (|| {
            let (pt, next) = decrypt(&crypto.cbc()?, &iv, msg, &mut self.rx)?;
            let m = msg::parse(exchange_type::IDENTITY_PROTECTION, hdr.next_payload, pt)?;
            let (_, idr) = m.ids.first().ok_or(missing(payload_type::ID))?;
            let h = m.hash.ok_or(missing(payload_type::HASH))?;
            crypto
                .keys
                .hash_r(
                    sa.g_xi.as_slice(),
                    sa.g_xr.as_slice(),
                    &sa.cky_i,
                    &sa.cky_r,
                    sa.sai_b.as_slice(),
                    idr,
                )?
                .verify(h)
                .map_err(|_| IkeError::AuthenticationFailed)?;
            sa.peer_id.set(idr)?;
            Ok::<_, IkeError>((
                next,
                m.notifies
                    .iter()
                    .any(|n| n.notify_type == notify::INITIAL_CONTACT),
            ))
        })();
        let (next, ic) = match verified {
            Ok(v) => v,
            Err(e) => {
                sa.recorded = Some(FailReason::AuthenticationFailed);
                return Err(match e {
                    IkeError::Malformed(_) => IkeError::AuthenticationFailed,
                    e => e,
                });
            }
        };
        sa.iv = Some(next);
        sa.last_block = Some(next);
        self.phase1_established(now, rng, i, ic);
        Ok(())
    }

    /// Responder, MM3: our KE and nonce, keys, NAT detection; send MM4.
    #[allow(clippy::too_many_arguments)]
    fn mm_r3<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        i: usize,
        hdr: &HeaderRepr,
        msg: &[u8],
        from: SocketAddr,
        to: SocketAddr,
    ) -> Result<(), IkeError> {
        let area = msg.get(HEADER_LEN..).unwrap_or(&[]);
        let parsed = msg::parse(exchange_type::IDENTITY_PROTECTION, hdr.next_payload, area);
        let rt = self.config.retransmit;
        let Some(Some(sa)) = self.sas.get_mut(i) else {
            return Err(IkeError::UnknownSa);
        };
        let (cky_i, cky_r) = (sa.cky_i, sa.cky_r);
        let r = (|| {
            let m = parsed?;
            let ke = m.ke.ok_or(missing(payload_type::KE))?;
            let ni = m.nonce.ok_or(missing(payload_type::NONCE))?;
            let chosen = sa.chosen.ok_or(IkeError::UnexpectedMessage)?;
            let dh = P::Dh::generate(chosen.group, rng)?;
            let gxy = dh_shared(&dh, chosen.group, ke)?;
            let mut gxr = [0u8; MAX_DH_LEN];
            let n = dh.public_key(&mut gxr)?;
            let gxr = gxr.get(..n).unwrap_or(&[]);
            let nr = random::<R, NONCE_LEN>(rng)?;
            let psk = sa.psk.as_ref().ok_or(IkeError::NoPresharedKey)?;
            let (crypto, iv) = derive::<P>(
                &chosen,
                psk.expose(),
                ni,
                &nr,
                gxy.expose(),
                &cky_i,
                &cky_r,
                ke,
                gxr,
            )?;
            sa.g_xi.set(ke)?;
            sa.g_xr.set(gxr)?;
            sa.ni.set(ni)?;
            sa.nr.set(&nr)?;
            if sa.peer_natt.is_some() {
                match detect(sa, chosen.hash, &m.natd, to, from)? {
                    Some(nat) => sa.nat = nat,
                    None => sa.peer_natt = None,
                }
            }
            let hdr = header(cky_i, cky_r, exchange_type::IDENTITY_PROTECTION, 0);
            let mut b = MessageBuilder::new(&mut sa.tx.buf, &hdr)?;
            b.push(&PayloadRepr::Ke(KeRepr::new(sa.g_xr.as_slice())))?;
            b.push(&PayloadRepr::Nonce(NonceRepr::new(sa.nr.as_slice())))?;
            if let Some(v) = sa.peer_natt {
                push_natd::<P>(&mut b, &cky_i, &cky_r, chosen.hash, v, from, to)?;
            }
            let len = b.finish()?;
            sa.tx.arm(len, now, &rt, false);
            sa.crypto = Some(crypto);
            sa.iv = Some(iv);
            sa.state = P1State::MmR4;
            Ok::<(), IkeError>(())
        })();
        if let Err(IkeError::Malformed(w)) = r {
            if let Some(t) = w.notify_type() {
                let _ = plain_notify(
                    &mut self.out,
                    &mut self.counters,
                    rng,
                    cky_i,
                    cky_r,
                    to,
                    from,
                    t,
                );
            }
        }
        r
    }

    /// Responder, MM5: verify HASH_I (a wrong PSK fails here); follow the peer's
    /// (floated) address; send MM6; established.
    #[allow(clippy::too_many_arguments)]
    fn mm_r5<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        i: usize,
        hdr: &HeaderRepr,
        msg: &[u8],
        from: SocketAddr,
        to: SocketAddr,
    ) -> Result<(), IkeError> {
        let rt = self.config.retransmit;
        let local_ip = self.sa_ref(i)?.local.ip();
        let id = LocalId::new(&self.config, local_ip)?;
        let Some(Some(sa)) = self.sas.get_mut(i) else {
            return Err(IkeError::UnknownSa);
        };
        let (cky_i, cky_r) = (sa.cky_i, sa.cky_r);
        let crypto = sa.crypto.as_ref().ok_or(IkeError::UnexpectedMessage)?;
        let iv = sa.iv.ok_or(IkeError::UnexpectedMessage)?;
        let verified = (|| {
            let (pt, next) = decrypt(&crypto.cbc()?, &iv, msg, &mut self.rx)?;
            let m = msg::parse(exchange_type::IDENTITY_PROTECTION, hdr.next_payload, pt)?;
            let (_, idi) = m.ids.first().ok_or(missing(payload_type::ID))?;
            let h = m.hash.ok_or(missing(payload_type::HASH))?;
            crypto
                .keys
                .hash_i(
                    sa.g_xi.as_slice(),
                    sa.g_xr.as_slice(),
                    &cky_i,
                    &cky_r,
                    sa.sai_b.as_slice(),
                    idi,
                )?
                .verify(h)
                .map_err(|_| IkeError::AuthenticationFailed)?;
            sa.peer_id.set(idi)?;
            Ok::<_, IkeError>((
                next,
                m.notifies
                    .iter()
                    .any(|n| n.notify_type == notify::INITIAL_CONTACT),
            ))
        })();
        let (next, ic) = match verified {
            Ok(v) => v,
            Err(e) => {
                sa.recorded = Some(FailReason::AuthenticationFailed);
                let addrs = (to, from);
                let (out, counters) = (&mut self.out, &mut self.counters);
                return Err(reject_auth(out, counters, rng, cky_i, cky_r, addrs, e));
            }
        };
        // Authenticated: the peer may have floated (or a NAT remapped it).
        sa.remote = from;
        sa.local = to;
        let hash_r = crypto.keys.hash_r(
            sa.g_xi.as_slice(),
            sa.g_xr.as_slice(),
            &cky_i,
            &cky_r,
            sa.sai_b.as_slice(),
            id.as_slice(),
        )?;
        let hdr = header(cky_i, cky_r, exchange_type::IDENTITY_PROTECTION, 0);
        let mut b = MessageBuilder::new(&mut sa.tx.buf, &hdr)?;
        b.push_raw(payload_type::ID, id.as_slice())?;
        b.push(&PayloadRepr::Hash(HashRepr::new(hash_r.as_slice())))?;
        let len = b.finish_encrypted(crypto.block)?;
        let last = encrypt(&crypto.cbc()?, &next, &mut sa.tx.buf, len)?;
        sa.tx.arm(len, now, &rt, false);
        sa.iv = Some(last);
        sa.last_block = Some(last);
        self.phase1_established(now, rng, i, ic);
        Ok(())
    }

    /// Initiator, AM2: verify HASH_R, keys, NAT detection, float; send AM3; established.
    #[allow(clippy::too_many_arguments)]
    fn am_i2<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        i: usize,
        hdr: &HeaderRepr,
        msg: &[u8],
        from: SocketAddr,
        to: SocketAddr,
    ) -> Result<(), IkeError> {
        let area = msg.get(HEADER_LEN..).unwrap_or(&[]);
        let m = msg::parse(exchange_type::AGGRESSIVE, hdr.next_payload, area)?;
        let (sa_repr, _) = m.sa.ok_or(missing(payload_type::SA))?;
        let chosen = check_phase1_reply(proposed(&self.config, ExchangeMode::Aggressive), &sa_repr);
        let Some(chosen) = chosen else {
            self.fail_phase1(now, rng, i, FailReason::NoProposalChosen);
            return Err(no_proposal());
        };
        let ke = m.ke.ok_or(missing(payload_type::KE))?;
        let nr = m.nonce.ok_or(missing(payload_type::NONCE))?;
        let (_, idr) = m.ids.first().ok_or(missing(payload_type::ID))?;
        let h = m.hash.ok_or(missing(payload_type::HASH))?;
        let natt_cfg = self.config.natt_port;
        let natt_on = self.config.nat_traversal;
        let rt = self.config.retransmit;
        let (natt, dpd) = peer_vids(&m.vids);
        let Some(Some(sa)) = self.sas.get_mut(i) else {
            return Err(IkeError::UnknownSa);
        };
        let cky_i = sa.cky_i;
        let cky_r = hdr.responder_cookie;
        let dh = sa.dh.as_ref().ok_or(IkeError::UnexpectedMessage)?;
        if dh.group() != chosen.group {
            return Err(no_proposal());
        }
        let gxy = dh_shared(dh, chosen.group, ke)?;
        let psk = sa.psk.as_ref().ok_or(IkeError::NoPresharedKey)?;
        let (crypto, iv) = derive::<P>(
            &chosen,
            psk.expose(),
            sa.ni.as_slice(),
            nr,
            gxy.expose(),
            &cky_i,
            &cky_r,
            sa.g_xi.as_slice(),
            ke,
        )?;
        let ok = crypto
            .keys
            .hash_r(
                sa.g_xi.as_slice(),
                ke,
                &cky_i,
                &cky_r,
                sa.sai_b.as_slice(),
                idr,
            )?
            .verify(h)
            .is_ok();
        if !ok {
            sa.recorded = Some(FailReason::AuthenticationFailed);
            let (src, dst) = (sa.local, sa.remote);
            let _ = plain_notify(
                &mut self.out,
                &mut self.counters,
                rng,
                cky_i,
                cky_r,
                src,
                dst,
                notify::AUTHENTICATION_FAILED,
            );
            return Err(IkeError::AuthenticationFailed);
        }
        sa.cky_r = cky_r;
        sa.chosen = Some(chosen);
        sa.peer_natt = natt.filter(|_| natt_on).map(|(v, _)| v);
        sa.peer_dpd = dpd;
        sa.g_xr.set(ke)?;
        sa.nr.set(nr)?;
        sa.peer_id.set(idr)?;
        sa.local = SocketAddr::new(to.ip(), sa.local.port());
        if sa.peer_natt.is_some() {
            match detect(sa, chosen.hash, &m.natd, to, from)? {
                Some(nat) => {
                    sa.nat = nat;
                    if nat.detected() {
                        float(&mut sa.local, &mut sa.remote, natt_cfg);
                    }
                }
                None => sa.peer_natt = None,
            }
        }
        let local_id = LocalId::new(&self.config, sa.local.ip())?;
        let hash_i = crypto.keys.hash_i(
            sa.g_xi.as_slice(),
            sa.g_xr.as_slice(),
            &cky_i,
            &cky_r,
            sa.sai_b.as_slice(),
            local_id.as_slice(),
        )?;
        let ck = cookies(&cky_i, &cky_r);
        let hdr = header(cky_i, cky_r, exchange_type::AGGRESSIVE, 0);
        let mut b = MessageBuilder::new(&mut sa.tx.buf, &hdr)?;
        b.push(&PayloadRepr::Hash(HashRepr::new(hash_i.as_slice())))?;
        if let Some(v) = sa.peer_natt {
            // After floating: the addresses the peer will see this message on.
            push_natd::<P>(&mut b, &cky_i, &cky_r, chosen.hash, v, sa.remote, sa.local)?;
        }
        if sa.send_initial_contact {
            b.push(&PayloadRepr::Notify(NotifyRepr::isakmp(
                notify::INITIAL_CONTACT,
                &ck,
                &[],
            )))?;
        }
        let len = b.finish_encrypted(crypto.block)?;
        let last = encrypt(&crypto.cbc()?, &iv, &mut sa.tx.buf, len)?;
        sa.tx.arm(len, now, &rt, false);
        sa.iv = Some(last);
        sa.last_block = Some(last);
        sa.crypto = Some(crypto);
        self.phase1_established(now, rng, i, false);
        Ok(())
    }

    /// Responder, AM3 (encrypted, as strongSwan and Cisco send it, or not): verify
    /// HASH_I, NAT detection, follow the peer's address; established.
    #[allow(clippy::too_many_arguments)]
    fn am_r3<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        i: usize,
        hdr: &HeaderRepr,
        msg: &[u8],
        from: SocketAddr,
        to: SocketAddr,
        encrypted: bool,
    ) -> Result<(), IkeError> {
        let Some(Some(sa)) = self.sas.get_mut(i) else {
            return Err(IkeError::UnknownSa);
        };
        let (cky_i, cky_r) = (sa.cky_i, sa.cky_r);
        let crypto = sa.crypto.as_ref().ok_or(IkeError::UnexpectedMessage)?;
        let iv = sa.iv.ok_or(IkeError::UnexpectedMessage)?;
        let chosen = sa.chosen.ok_or(IkeError::UnexpectedMessage)?;
        let verified = (|| {
            let (area, next) = if encrypted {
                decrypt(&crypto.cbc()?, &iv, msg, &mut self.rx)?
            } else {
                (msg.get(HEADER_LEN..).unwrap_or(&[]), iv)
            };
            let m = msg::parse(exchange_type::AGGRESSIVE, hdr.next_payload, area)?;
            let h = m.hash.ok_or(missing(payload_type::HASH))?;
            crypto
                .keys
                .hash_i(
                    sa.g_xi.as_slice(),
                    sa.g_xr.as_slice(),
                    &cky_i,
                    &cky_r,
                    sa.sai_b.as_slice(),
                    sa.peer_id.as_slice(),
                )?
                .verify(h)
                .map_err(|_| IkeError::AuthenticationFailed)?;
            let nat = if sa.peer_natt.is_some() {
                detect(sa, chosen.hash, &m.natd, to, from)?
            } else {
                None
            };
            Ok::<_, IkeError>((
                next,
                nat,
                m.notifies
                    .iter()
                    .any(|n| n.notify_type == notify::INITIAL_CONTACT),
            ))
        })();
        let (next, nat, ic) = match verified {
            Ok(v) => v,
            Err(e) => {
                sa.recorded = Some(FailReason::AuthenticationFailed);
                let addrs = (to, from);
                let (out, counters) = (&mut self.out, &mut self.counters);
                return Err(reject_auth(out, counters, rng, cky_i, cky_r, addrs, e));
            }
        };
        match nat {
            Some(n) => sa.nat = n,
            None => sa.peer_natt = None,
        }
        sa.remote = from;
        sa.local = to;
        sa.iv = Some(next);
        sa.last_block = Some(next);
        sa.tx.disarm();
        self.phase1_established(now, rng, i, ic);
        Ok(())
    }

    /// Phase 1 is up: lifetimes, event, INITIAL-CONTACT, queued Quick Modes.
    fn phase1_established<R: SecureRng>(&mut self, now: Instant, rng: &mut R, i: usize, ic: bool) {
        let pct = u64::from(self.config.phase1_rekey_percent.min(100));
        let Ok(sa) = self.sa_mut(i) else { return };
        sa.state = P1State::Established;
        sa.established_at = Some(now);
        let life = sa
            .chosen
            .and_then(|c| c.life_seconds)
            .unwrap_or(u64::from(IsakmpPolicy::DEFAULT_LIFETIME));
        sa.lifetime_secs = life;
        let life_ms = Duration::from_secs(life).as_millis();
        sa.expires = Some(now + Duration::from_millis(life_ms));
        if sa.role == Role::Initiator && pct > 0 {
            sa.rekey_at = Some(now + Duration::from_millis(life_ms / 100 * pct));
        }
        if sa.role == Role::Initiator {
            sa.tx.disarm();
        }
        sa.forget_negotiation();
        let q = Queued::Phase1Established {
            conn_id: sa.conn_id,
            local: sa.local,
            peer: sa.remote,
            nat: sa.nat,
        };
        emit(&mut self.events, &mut self.counters, q);
        self.dpd_established(now, i);
        if ic {
            self.initial_contact(i);
        }
        self.drain_pending(now, rng, i);
    }
}

/// A responder's answer to a final phase-1 message (MM5, AM3) that does not authenticate.
/// strongSwan answers an undecryptable MM5 with PAYLOAD-MALFORMED; a bad HASH_I is
/// AUTHENTICATION-FAILED. Both mean a wrong PSK (or tampering): the caller records it and
/// keeps the SA (the genuine message may still come) for the half-open timer to end.
fn reject_auth<R: SecureRng>(
    out: &mut heapless::Deque<super::sa::OneShot, { super::sa::ONESHOT_QUEUE }>,
    counters: &mut super::ike::IkeCounters,
    rng: &mut R,
    cky_i: [u8; 8],
    cky_r: [u8; 8],
    (src, dst): (SocketAddr, SocketAddr),
    e: IkeError,
) -> IkeError {
    let t = match e {
        IkeError::Malformed(_) => notify::PAYLOAD_MALFORMED,
        _ => notify::AUTHENTICATION_FAILED,
    };
    let _ = plain_notify(out, counters, rng, cky_i, cky_r, src, dst, t);
    IkeError::AuthenticationFailed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vid_detection() {
        let v = [
            &vendor_id::NATT_DRAFT_02_N[..],
            &vendor_id::DPD[..],
            &vendor_id::NATT_RFC3947[..],
        ];
        let (n, dpd) = peer_vids(&v);
        assert_eq!(n.map(|x| x.0), Some(NatTVariant::Rfc3947));
        assert!(dpd);
        let (n, dpd) = peer_vids(&v[..1]);
        assert_eq!(n.map(|x| x.0), Some(NatTVariant::Draft));
        assert!(!dpd);
    }
}
