//! Quick Mode (RFC 2409 §5.5): three messages, encrypted with the per-M-ID IV.
//!
//! ```text
//! QM1 (I)  HASH(1), SA, Ni [, KE] [, IDci, IDcr]   HASH(1) = prf(SKEYID_a, M-ID | rest)
//! QM2 (R)  HASH(2), SA, Nr [, KE] [, IDci, IDcr]   HASH(2) = prf(SKEYID_a, M-ID | Ni_b | rest)
//! QM3 (I)  HASH(3)                                 HASH(3) = prf(SKEYID_a, 0 | M-ID | Ni_b | Nr_b)
//! ```
//!
//! With NAT-T active and transport mode (UDP-Encapsulated-Transport), both sides add
//! NAT-OAi and NAT-OAr after the IDs (RFC 3947 §5.2; payload type 131 with the drafts):
//! each sends the initiator's and the responder's address as it sees them. The
//! initiator sends them when any of its transform sets is transport mode, the
//! responder when it chose transport mode. What the peer sent ends up in
//! [`ChildSa::nat_oa`](super::ChildSa::nat_oa) for the transport checksum fix-up.
//!
//! KEYMAT per direction uses the receiver's SPI: inbound keys use our SPI. The
//! initiator reports the pair after sending QM3, the responder after receiving it; the
//! responder retransmits QM2 until QM3 arrives, the initiator resends QM3 when QM2 is
//! repeated.

use core::net::{IpAddr, SocketAddr};

use hal_traits::{CryptoProvider, DiffieHellman, MAX_DH_LEN, SecureRng};
use ipsec_core::esp::{Direction, EspConfig, Mode, UdpEncap};
use ipsec_core::lifetime::LifetimeConfig;
use ipsec_core::spd::{AddrRange, Selector};
use ipsec_core::{Duration, Instant};

use super::IkeError;
use super::events::{FailReason, Queued};
use super::ike::{Ike, emit};
use super::info::InfoItem;
use super::keys::phase2_iv;
use super::msg::{self, decrypt, encrypt};
use super::negotiate::{
    check_phase2_reply, choose_phase2, core_transform, id_for, selector_of, write_phase2_sa,
    write_sa_reply,
};
use super::phase1::dh_shared;
use super::sa::{
    ChildRecord, IkeSa, NONCE_LEN, QmRequest, QmState, QuickMode, fingerprint, random, random_u32,
};
use super::status::Role;
use crate::wire::vendor_id::NatTVariant;
use crate::wire::{
    HashRepr, HeaderRepr, KeRepr, MessageBuilder, NatOaRepr, NonceRepr, NotifyRepr, PayloadRepr,
    doi, exchange_type, flags, notify, payload_type, protocol_id,
};

/// Pushes NAT-OAi and NAT-OAr.
fn push_nat_oa(
    b: &mut MessageBuilder<'_>,
    initiator: IpAddr,
    responder: IpAddr,
    draft: bool,
) -> Result<(), IkeError> {
    for addr in [initiator, responder] {
        b.push(&PayloadRepr::NatOa(NatOaRepr { addr, draft }))?;
    }
    Ok(())
}

/// The received NAT-OAi and NAT-OAr, if both are there.
fn received_nat_oa(m: &msg::Msg<'_>) -> Option<(IpAddr, IpAddr)> {
    match m.nat_oa.as_slice() {
        [i, r] => Some((i.addr, r.addr)),
        _ => None,
    }
}

fn qm_header(sa_cky: ([u8; 8], [u8; 8]), mid: u32) -> HeaderRepr {
    HeaderRepr {
        initiator_cookie: sa_cky.0,
        responder_cookie: sa_cky.1,
        next_payload: 0,
        exchange_type: exchange_type::QUICK_MODE,
        flags: 0,
        message_id: mid,
        length: 0,
    }
}

/// A free Quick Mode slot (evicting a finished one if needed).
fn free_qm<P: CryptoProvider>(sa: &IkeSa<P>) -> Option<usize> {
    sa.qm.iter().position(Option::is_none).or_else(|| {
        sa.qm
            .iter()
            .position(|q| q.as_ref().is_some_and(|q| q.state == QmState::Done))
    })
}

fn emit_fail<const N: usize>(
    events: &mut heapless::Deque<Queued, N>,
    counters: &mut super::ike::IkeCounters,
    crypto_map: Option<u32>,
    peer: SocketAddr,
    reason: FailReason,
) {
    if events
        .push_back(Queued::Failed {
            crypto_map,
            peer,
            reason,
        })
        .is_err()
    {
        counters.events_dropped += 1;
    }
}

impl<P: CryptoProvider, const SAS: usize, const CHILDREN: usize> Ike<P, SAS, CHILDREN> {
    /// Initiator: starts Quick Mode for `req` on established SA `i` (queues it if all
    /// slots are busy).
    pub(super) fn start_qm<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        i: usize,
        req: QmRequest,
    ) -> Result<(), IkeError> {
        let spi = self.alloc_spi(rng)?;
        let rt = self.config.retransmit;
        let entry = self
            .config
            .crypto_map(req.crypto_map)
            .ok_or(IkeError::UnknownCryptoMap)?;
        let Some(Some(sa)) = self.sas.get_mut(i) else {
            return Err(IkeError::UnknownSa);
        };
        let Some(slot) = free_qm(sa) else {
            return sa.pending.push(req).map_err(|_| IkeError::Busy);
        };
        let crypto = sa.crypto.as_ref().ok_or(IkeError::UnexpectedMessage)?;
        let last = sa.last_block.ok_or(IkeError::UnexpectedMessage)?;
        let mid = random_u32(rng, 1, |m| sa.mid_known(m))?;
        let hash = crypto.keys.hash_alg();
        let iv = phase2_iv::<P::Prf>(hash, last.as_slice(), mid)?;
        let udp = sa
            .natt_active()
            .then(|| sa.peer_natt == Some(NatTVariant::Draft));
        // NAT-OA when UDP-Encapsulated-Transport may be chosen.
        let nat_oa = udp
            .filter(|_| {
                entry
                    .transform_sets
                    .iter()
                    .any(|ts| matches!(ts.mode, Mode::Transport))
            })
            .map(|draft| (sa.local.ip(), sa.remote.ip(), draft));
        let n = write_phase2_sa(&mut self.scratch, entry, spi, udp)?;
        let sa_body = self.scratch.get(..n).unwrap_or(&[]);
        let selector = req.selector.unwrap_or(entry.selector);
        let idci = id_for(&selector.local, selector.protocol, &selector.local_ports);
        let idcr = id_for(&selector.remote, selector.protocol, &selector.remote_ports);
        let mut q = QuickMode::new(Role::Initiator, mid, req, iv);
        q.spi_in = spi;
        q.selector = Some(selector);
        q.pfs = entry.pfs;
        q.ni.set(&random::<R, NONCE_LEN>(rng)?)?;
        let mut ke = [0u8; MAX_DH_LEN];
        let mut ke_len = 0;
        if let Some(g) = entry.pfs {
            let dh = P::Dh::generate(g, rng)?;
            ke_len = dh.public_key(&mut ke)?;
            q.dh = Some(dh);
        }
        let cky = (sa.cky_i, sa.cky_r);
        let Some(qs) = sa.qm.get_mut(slot) else {
            return Err(IkeError::Busy);
        };
        let q = qs.insert(q);
        let mut b = MessageBuilder::new(&mut q.tx.buf, &qm_header(cky, mid))?;
        let hs = b.reserve(payload_type::HASH, hash.output_len())?;
        b.push_raw(payload_type::SA, sa_body)?;
        b.push(&PayloadRepr::Nonce(NonceRepr::new(q.ni.as_slice())))?;
        if ke_len > 0 {
            b.push(&PayloadRepr::Ke(KeRepr::new(
                ke.get(..ke_len).unwrap_or(&[]),
            )))?;
        }
        b.push(&PayloadRepr::Id(idci))?;
        b.push(&PayloadRepr::Id(idcr))?;
        if let Some((i, r, draft)) = nat_oa {
            push_nat_oa(&mut b, i, r, draft)?;
        }
        let (h, rest) = b.split_at(hs)?;
        let d = crypto.keys.quick_hash1(mid, rest)?;
        h.copy_from_slice(d.as_slice());
        let len = b.finish_encrypted(crypto.block)?;
        q.iv = encrypt(&crypto.cbc()?, &iv, &mut q.tx.buf, len)?;
        q.tx.arm(len, now, &rt, true);
        sa.remember_mid(mid);
        Ok(())
    }

    /// Every Quick Mode message.
    pub(super) fn on_quick<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        from: SocketAddr,
        to: SocketAddr,
        hdr: &HeaderRepr,
        msg: &[u8],
    ) -> Result<(), IkeError> {
        let i = self
            .sas
            .iter()
            .position(|s| {
                s.as_ref().is_some_and(|sa| {
                    sa.cky_i == hdr.initiator_cookie && sa.cky_r == hdr.responder_cookie
                })
            })
            .ok_or(IkeError::UnknownSa)?;
        let sa = self.sa_mut(i)?;
        if !sa.is_established() || hdr.flags & flags::ENCRYPTION == 0 || hdr.message_id == 0 {
            return Err(IkeError::UnexpectedMessage);
        }
        let fp = fingerprint::<P::Prf>(msg)?;
        let slot = sa
            .qm
            .iter()
            .position(|q| q.as_ref().is_some_and(|q| q.mid == hdr.message_id));
        let Some(s) = slot else {
            if sa.mid_known(hdr.message_id) {
                return Err(IkeError::UnexpectedMessage); // an old exchange replayed
            }
            let r = self.qm_r1(now, rng, i, hdr, msg, from, to, fp);
            if r.is_ok() {
                self.dpd_alive(now, from.ip());
            }
            return r;
        };
        let Some(Some(q)) = sa.qm.get_mut(s) else {
            return Err(IkeError::UnknownSa);
        };
        if q.last_rx == Some(fp) {
            if !(q.role == Role::Responder && q.state == QmState::Done) {
                q.tx.resend();
            }
            self.counters.duplicates += 1;
            return Ok(());
        }
        let r = match (q.role, q.state) {
            (Role::Initiator, QmState::I1) => self.qm_i2(now, rng, i, s, hdr, msg, from, to, fp),
            (Role::Responder, QmState::R2) => self.qm_r3(now, rng, i, s, hdr, msg, from, to, fp),
            _ => Err(IkeError::UnexpectedMessage),
        };
        if r.is_ok() {
            self.dpd_alive(now, from.ip());
        }
        r
    }

    /// Responder, QM1: verify HASH(1), find the crypto map entry by the proxy
    /// identities, choose a proposal, answer with QM2.
    #[allow(clippy::too_many_arguments)]
    fn qm_r1<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        i: usize,
        hdr: &HeaderRepr,
        msg: &[u8],
        from: SocketAddr,
        to: SocketAddr,
        fp: super::sa::Fingerprint,
    ) -> Result<(), IkeError> {
        let mid = hdr.message_id;
        let spi_in = self.alloc_spi(rng)?;
        let rt = self.config.retransmit;
        let Some(Some(sa)) = self.sas.get_mut(i) else {
            return Err(IkeError::UnknownSa);
        };
        let Some(slot) = free_qm(sa) else {
            return Err(IkeError::Busy);
        };
        let crypto = sa.crypto.as_ref().ok_or(IkeError::UnexpectedMessage)?;
        let last = sa.last_block.ok_or(IkeError::UnexpectedMessage)?;
        let iv = phase2_iv::<P::Prf>(crypto.keys.hash_alg(), last.as_slice(), mid)?;
        let (pt, next) = decrypt(&crypto.cbc()?, &iv, msg, &mut self.rx)
            .map_err(|_| IkeError::AuthenticationFailed)?;
        // Until HASH(1) verifies, nothing is trusted: a broken chain is an
        // authentication failure (no notify, no state).
        let (h, covered) =
            msg::hashed(hdr.next_payload, pt).map_err(|_| IkeError::AuthenticationFailed)?;
        crypto
            .keys
            .quick_hash1(mid, covered)?
            .verify(h)
            .map_err(|_| IkeError::AuthenticationFailed)?;
        if let Some(e) = msg::parse(exchange_type::QUICK_MODE, hdr.next_payload, pt).err() {
            // Authenticated but unacceptable (an unknown payload type, a malformed SA):
            // say so, encrypted (RFC 2408 §5).
            super::sa::remember(&mut sa.recent_mids, &mut sa.mid_next, mid);
            if let Some(t) = e.notify_type() {
                let n = NotifyRepr {
                    doi: doi::IPSEC,
                    protocol_id: protocol_id::ESP,
                    notify_type: t,
                    spi: &[],
                    data: &[],
                };
                let _ = self.send_info(rng, i, &[InfoItem::Notify(n)]);
                self.counters.notifies_sent += 1;
            }
            return Err(e.into());
        }
        let m = msg::parse(exchange_type::QUICK_MODE, hdr.next_payload, pt)?;
        super::sa::remember(&mut sa.recent_mids, &mut sa.mid_next, mid);
        if sa.role == Role::Responder {
            let old = core::mem::replace(&mut sa.remote, from);
            sa.local = to;
            super::ike::follow_peer(
                &mut self.events,
                &mut self.counters,
                &mut self.children,
                sa.conn_id,
                old,
                from,
            );
        }
        let peer = sa.remote;
        let natt = sa.natt_active();
        // Proxy identities: from the message, or the phase-1 addresses.
        let (sa_repr, _) = m.sa.ok_or(IkeError::Malformed(
            crate::wire::IkeWireError::InvalidPayloadType(payload_type::SA),
        ))?;
        let first_spi = sa_repr
            .proposals
            .iter()
            .find(|p| p.protocol_id == protocol_id::ESP)
            .map(|p| p.spi);
        let proposed = match m.ids.as_slice() {
            [] => Selector::new(
                AddrRange::host(sa.local.ip()),
                AddrRange::host(sa.remote.ip()),
            )
            .ok(),
            [(ci, _), (cr, _)] => selector_of(cr, ci),
            _ => None,
        };
        let mut reason = FailReason::InvalidIdInformation;
        let mut found = None;
        // Static entries first, in seq order, then dynamic ones: a dynamic entry is the
        // last resort (IOS: a dynamic map goes last in the crypto map set), so an entry
        // numbered above it, such as a GRE tunnel's protection, still gets its traffic.
        let maps = &self.config.crypto_maps;
        let ordered = maps
            .iter()
            .filter(|e| !e.dynamic)
            .chain(maps.iter().filter(|e| e.dynamic));
        for e in ordered {
            let peer_ok = e.dynamic || e.peers.contains(&peer.ip());
            let Some(sel) = proposed else { break };
            if !peer_ok || !(e.dynamic || sel.is_subset_of(&e.selector)) {
                continue;
            }
            reason = FailReason::NoProposalChosen;
            if let Some(c) = choose_phase2(e, &sa_repr) {
                found = Some((e, c, sel));
                break;
            }
        }
        let Some((entry, choice, selector)) = found else {
            // Authenticated refusal: an encrypted notify with the initiator's SPI.
            let t = match reason {
                FailReason::NoProposalChosen => notify::NO_PROPOSAL_CHOSEN,
                _ => notify::INVALID_ID_INFORMATION,
            };
            let mut spi = [0u8; 4];
            if let Some(s) = first_spi.filter(|s| s.len() == 4) {
                spi.copy_from_slice(s);
            }
            let n = NotifyRepr {
                doi: doi::IPSEC,
                protocol_id: protocol_id::ESP,
                notify_type: t,
                spi: &spi,
                data: &[],
            };
            drop(m);
            let _ = self.send_info(rng, i, &[InfoItem::Notify(n)]);
            self.counters.notifies_sent += 1;
            emit_fail(&mut self.events, &mut self.counters, None, peer, reason);
            return Err(match reason {
                FailReason::NoProposalChosen => IkeError::NoProposalChosen,
                _ => IkeError::InvalidIdInformation,
            });
        };
        let ni = m.nonce.ok_or(IkeError::Malformed(
            crate::wire::IkeWireError::InvalidPayloadType(payload_type::NONCE),
        ))?;
        let spi_out = u32::from_be_bytes(
            <[u8; 4]>::try_from(choice.proposal.spi)
                .map_err(|_| IkeError::Malformed(crate::wire::IkeWireError::InvalidSpi))?,
        );
        let n = write_sa_reply(
            &mut self.scratch,
            &choice.proposal,
            &spi_in.to_be_bytes(),
            &choice.transform,
        )?;
        let sa_body = self.scratch.get(..n).unwrap_or(&[]);
        let mut q = QuickMode::new(
            Role::Responder,
            mid,
            QmRequest {
                crypto_map: entry.seq,
                replaces: None,
                attempts_left: 0,
                selector: None,
            },
            iv,
        );
        q.spi_in = spi_in;
        q.spi_out = spi_out;
        q.esp = Some(choice.esp);
        q.ts_index = choice.ts_index;
        q.selector = Some(selector);
        q.pfs = choice.esp.group;
        q.ni.set(ni)?;
        q.nr.set(&random::<R, NONCE_LEN>(rng)?)?;
        if let [(_, ci), (_, cr)] = m.ids.as_slice() {
            q.idci.set(ci)?;
            q.idcr.set(cr)?;
        }
        let mut ke = [0u8; MAX_DH_LEN];
        let mut ke_len = 0;
        if let Some(g) = choice.esp.group {
            let their = m.ke.ok_or(IkeError::Malformed(
                crate::wire::IkeWireError::InvalidPayloadType(payload_type::KE),
            ))?;
            let dh = P::Dh::generate(g, rng)?;
            q.gxy = Some(dh_shared(&dh, g, their)?);
            ke_len = dh.public_key(&mut ke)?;
        }
        // UDP-Encapsulated-Transport: keep the initiator's NAT-OA (NAT-OAi is its
        // original address, NAT-OAr ours as it saw it) and answer with our view.
        let transport = natt && !choice.esp.mode.is_tunnel();
        if transport {
            q.nat_oa = received_nat_oa(&m);
        }
        let draft = sa.peer_natt == Some(NatTVariant::Draft);
        let (remote_ip, local_ip) = (sa.remote.ip(), sa.local.ip());
        let cky = (sa.cky_i, sa.cky_r);
        let Some(qs) = sa.qm.get_mut(slot) else {
            return Err(IkeError::Busy);
        };
        let q = qs.insert(q);
        let mut b = MessageBuilder::new(&mut q.tx.buf, &qm_header(cky, mid))?;
        let hs = b.reserve(payload_type::HASH, crypto.keys.hash_alg().output_len())?;
        b.push_raw(payload_type::SA, sa_body)?;
        b.push(&PayloadRepr::Nonce(NonceRepr::new(q.nr.as_slice())))?;
        if ke_len > 0 {
            b.push(&PayloadRepr::Ke(KeRepr::new(
                ke.get(..ke_len).unwrap_or(&[]),
            )))?;
        }
        if !q.idci.is_empty() {
            b.push_raw(payload_type::ID, q.idci.as_slice())?;
            b.push_raw(payload_type::ID, q.idcr.as_slice())?;
        }
        if transport {
            push_nat_oa(&mut b, remote_ip, local_ip, draft)?;
        }
        let (h, rest) = b.split_at(hs)?;
        let d = crypto.keys.quick_hash2(mid, q.ni.as_slice(), rest)?;
        h.copy_from_slice(d.as_slice());
        let len = b.finish_encrypted(crypto.block)?;
        q.iv = encrypt(&crypto.cbc()?, &next, &mut q.tx.buf, len)?;
        q.tx.arm(len, now, &rt, true);
        q.last_rx = Some(fp);
        Ok(())
    }

    /// Initiator, QM2: verify HASH(2), check the answer, PFS; send QM3; child up.
    #[allow(clippy::too_many_arguments)]
    fn qm_i2<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        i: usize,
        s: usize,
        hdr: &HeaderRepr,
        msg: &[u8],
        from: SocketAddr,
        to: SocketAddr,
        fp: super::sa::Fingerprint,
    ) -> Result<(), IkeError> {
        let _ = (from, to);
        let mid = hdr.message_id;
        let rt = self.config.retransmit;
        let linger = rt.total();
        let Some(Some(sa)) = self.sas.get_mut(i) else {
            return Err(IkeError::UnknownSa);
        };
        let cky = (sa.cky_i, sa.cky_r);
        let peer = sa.remote;
        let crypto = sa.crypto.as_ref().ok_or(IkeError::UnexpectedMessage)?;
        let Some(Some(q)) = sa.qm.get_mut(s) else {
            return Err(IkeError::UnknownSa);
        };
        let (pt, next) = decrypt(&crypto.cbc()?, &q.iv, msg, &mut self.rx)
            .map_err(|_| IkeError::AuthenticationFailed)?;
        let m = msg::parse(exchange_type::QUICK_MODE, hdr.next_payload, pt)
            .map_err(|_| IkeError::AuthenticationFailed)?;
        let h = m
            .leading_hash()
            .map_err(|_| IkeError::AuthenticationFailed)?;
        crypto
            .keys
            .quick_hash2(mid, q.ni.as_slice(), m.after_first)?
            .verify(h)
            .map_err(|_| IkeError::AuthenticationFailed)?;
        let entry = self.config.crypto_map(q.req.crypto_map);
        let checked = entry
            .zip(m.sa)
            .and_then(|(e, (sa_repr, _))| check_phase2_reply(e, &sa_repr));
        let nr = m.nonce;
        let (esp, ts_index, spi_out, nr) = match (checked, nr) {
            (Some((esp, ts, spi)), Some(nr)) if spi >= 256 => (esp, ts, spi, nr),
            _ => {
                let req = q.req;
                if let Some(x) = sa.qm.get_mut(s) {
                    *x = None;
                }
                emit_fail(
                    &mut self.events,
                    &mut self.counters,
                    Some(req.crypto_map),
                    peer,
                    FailReason::NoProposalChosen,
                );
                return Err(IkeError::NoProposalChosen);
            }
        };
        if let Some(g) = esp.group {
            let (Some(dh), Some(their)) = (q.dh.as_ref(), m.ke) else {
                return Err(IkeError::Malformed(
                    crate::wire::IkeWireError::InvalidKeyInformation,
                ));
            };
            q.gxy = Some(dh_shared(dh, g, their)?);
        }
        q.nr.set(nr)?;
        // The responder's NAT-OAi is our address as it saw it, NAT-OAr its own.
        q.nat_oa = received_nat_oa(&m).map(|(i, r)| (r, i));
        q.esp = Some(esp);
        q.ts_index = ts_index;
        q.spi_out = spi_out;
        q.dh = None;
        // QM3.
        let mut b = MessageBuilder::new(&mut q.tx.buf, &qm_header(cky, mid))?;
        let d = crypto
            .keys
            .quick_hash3(mid, q.ni.as_slice(), q.nr.as_slice())?;
        b.push(&PayloadRepr::Hash(HashRepr::new(d.as_slice())))?;
        let len = b.finish_encrypted(crypto.block)?;
        q.iv = encrypt(&crypto.cbc()?, &next, &mut q.tx.buf, len)?;
        let child = make_child(sa, s, &self.config, now);
        let Some(Some(q)) = sa.qm.get_mut(s) else {
            return Err(IkeError::UnknownSa);
        };
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                let req = q.req;
                if let Some(x) = sa.qm.get_mut(s) {
                    *x = None;
                }
                emit_fail(
                    &mut self.events,
                    &mut self.counters,
                    Some(req.crypto_map),
                    peer,
                    FailReason::Crypto,
                );
                return Err(e);
            }
        };
        q.tx.arm(len, now, &rt, false);
        q.state = QmState::Done;
        q.linger = Some(now + linger);
        q.last_rx = Some(fp);
        q.gxy = None;
        drop(m);
        self.install_child(child, Role::Initiator)
            .inspect_err(|_| {
                emit_fail(
                    &mut self.events,
                    &mut self.counters,
                    None,
                    peer,
                    FailReason::Resources,
                )
            })?;
        self.drain_pending(now, rng, i);
        Ok(())
    }

    /// Responder, QM3: verify HASH(3); child up.
    #[allow(clippy::too_many_arguments)]
    fn qm_r3<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        i: usize,
        s: usize,
        hdr: &HeaderRepr,
        msg: &[u8],
        from: SocketAddr,
        to: SocketAddr,
        fp: super::sa::Fingerprint,
    ) -> Result<(), IkeError> {
        let mid = hdr.message_id;
        let linger = self.config.retransmit.total();
        let Some(Some(sa)) = self.sas.get_mut(i) else {
            return Err(IkeError::UnknownSa);
        };
        let peer = sa.remote;
        let crypto = sa.crypto.as_ref().ok_or(IkeError::UnexpectedMessage)?;
        let Some(Some(q)) = sa.qm.get(s) else {
            return Err(IkeError::UnknownSa);
        };
        let (pt, _) = decrypt(&crypto.cbc()?, &q.iv, msg, &mut self.rx)
            .map_err(|_| IkeError::AuthenticationFailed)?;
        let m = msg::parse(exchange_type::QUICK_MODE, hdr.next_payload, pt)
            .map_err(|_| IkeError::AuthenticationFailed)?;
        let h = m
            .leading_hash()
            .map_err(|_| IkeError::AuthenticationFailed)?;
        crypto
            .keys
            .quick_hash3(mid, q.ni.as_slice(), q.nr.as_slice())?
            .verify(h)
            .map_err(|_| IkeError::AuthenticationFailed)?;
        if sa.role == Role::Responder {
            let old = core::mem::replace(&mut sa.remote, from);
            sa.local = to;
            super::ike::follow_peer(
                &mut self.events,
                &mut self.counters,
                &mut self.children,
                sa.conn_id,
                old,
                from,
            );
        }
        let child = make_child(sa, s, &self.config, now);
        let Some(Some(q)) = sa.qm.get_mut(s) else {
            return Err(IkeError::UnknownSa);
        };
        q.tx.disarm();
        q.state = QmState::Done;
        q.linger = Some(now + linger);
        // `last_rx` stays QM1's: a replayed QM1 is then recognised (and ignored, the
        // exchange is over); a repeated QM3 is an unexpected message (ignored too).
        let _ = fp;
        q.gxy = None;
        drop(m);
        let child = child.inspect_err(|_| {
            emit_fail(
                &mut self.events,
                &mut self.counters,
                None,
                peer,
                FailReason::Crypto,
            );
        })?;
        self.install_child(child, Role::Responder)
            .inspect_err(|_| {
                emit_fail(
                    &mut self.events,
                    &mut self.counters,
                    None,
                    peer,
                    FailReason::Resources,
                );
            })?;
        self.drain_pending(now, rng, i);
        Ok(())
    }

    fn install_child(&mut self, mut c: ChildRecord, role: Role) -> Result<(), IkeError> {
        let spi = c.inbound.spi;
        if role == Role::Responder && c.replaces.is_none() {
            // The initiator rekeys: the newest pair of the same entry, peer and
            // selector is the one being replaced.
            c.replaces = self
                .children
                .iter()
                .filter(|o| {
                    o.crypto_map == c.crypto_map
                        && o.peer.ip() == c.peer.ip()
                        && o.inbound.selector == c.inbound.selector
                })
                .max_by_key(|o| o.expires)
                .map(|o| o.inbound.spi);
        }
        self.children
            .push(c)
            .map_err(|_| IkeError::ChildTableFull)?;
        emit(
            &mut self.events,
            &mut self.counters,
            Queued::ChildUp { inbound_spi: spi },
        );
        Ok(())
    }

    /// An authenticated error notify about one of our Quick Modes (by our SPI, or the
    /// only one in flight).
    pub(super) fn qm_refused(&mut self, i: usize, spi: Option<u32>, reason: FailReason) {
        let Ok(sa) = self.sa_mut(i) else { return };
        let peer = sa.remote;
        let mut hit = None;
        for q in sa.qm.iter_mut() {
            let Some(x) = q else { continue };
            if x.role == Role::Initiator
                && x.state == QmState::I1
                && spi.is_none_or(|s| s == x.spi_in)
            {
                hit = Some(x.req);
                *q = None;
                break;
            }
        }
        if let Some(req) = hit {
            emit_fail(
                &mut self.events,
                &mut self.counters,
                Some(req.crypto_map),
                peer,
                reason,
            );
        }
    }
}

/// KEYMAT for both directions and the data plane configs of a finished exchange.
fn make_child<P: CryptoProvider>(
    sa: &IkeSa<P>,
    s: usize,
    config: &super::config::IkeConfig,
    now: Instant,
) -> Result<ChildRecord, IkeError> {
    let q = sa
        .qm
        .get(s)
        .and_then(Option::as_ref)
        .ok_or(IkeError::UnknownSa)?;
    let crypto = sa.crypto.as_ref().ok_or(IkeError::UnexpectedMessage)?;
    let esp = q.esp.ok_or(IkeError::UnexpectedMessage)?;
    let selector = q.selector.ok_or(IkeError::UnexpectedMessage)?;
    let len = esp.keymat_len();
    let gxy = q.gxy.as_ref().map(hal_traits::SecretBytes::expose);
    let (ni, nr) = (q.ni.as_slice(), q.nr.as_slice());
    let ik = crypto
        .keys
        .keymat(gxy, protocol_id::ESP, &q.spi_in.to_be_bytes(), ni, nr, len)?;
    let ok = crypto
        .keys
        .keymat(gxy, protocol_id::ESP, &q.spi_out.to_be_bytes(), ni, nr, len)?;
    let transform = core_transform(&esp);
    let secs = esp
        .life_seconds
        .unwrap_or(ipsec_core::lifetime::IOS_DEFAULT_SECONDS);
    let kb = esp
        .life_kilobytes
        .unwrap_or(ipsec_core::lifetime::IOS_DEFAULT_KILOBYTES);
    let lifetime = LifetimeConfig::from_hard(Some(secs), Some(kb), config.child_soft_percent)
        .map_err(|_| IkeError::InvalidConfig)?;
    let udp_encap = sa.natt_active().then(|| UdpEncap {
        local_port: sa.local.port(),
        remote_port: sa.remote.port(),
    });
    let (local, remote): (IpAddr, IpAddr) = (sa.local.ip(), sa.remote.ip());
    let mode = if esp.mode.is_tunnel() {
        Mode::Tunnel
    } else {
        Mode::Transport
    };
    let nat_oa = match (mode, udp_encap) {
        (Mode::Transport, Some(_)) => q.nat_oa,
        _ => None,
    };
    // UDP-Encapsulated-Transport: the peer's proxy identity is its original (private)
    // address (NAT-OAi/r), but its packets arrive with the NAT's: the SAs' selector
    // uses the address IKE sees instead (as strongSwan and racoon do).
    let mut selector = selector;
    let peer_ip = sa.remote.ip();
    if matches!(mode, Mode::Transport)
        && udp_encap.is_some()
        && selector.remote.start() == selector.remote.end()
        && selector.remote.start() != peer_ip
    {
        selector.remote = AddrRange::host(peer_ip);
    }
    let cfg = |spi, direction| {
        let mut c = match mode {
            Mode::Tunnel => EspConfig::tunnel(spi, direction, transform, local, remote),
            Mode::Transport => EspConfig::transport(spi, direction, transform),
        };
        c.replay_window = config.replay_window;
        c.udp_encap = udp_encap;
        c.selector = Some(selector);
        c.lifetime = lifetime;
        c
    };
    Ok(ChildRecord {
        conn_id: sa.conn_id,
        crypto_map: q.req.crypto_map,
        peer: sa.remote,
        inbound: cfg(q.spi_in, Direction::Inbound),
        outbound: cfg(q.spi_out, Direction::Outbound),
        keys: Some((ik, ok, esp.cipher.keymat_len())),
        replaces: q.req.replaces,
        expires: now + Duration::from_secs(secs),
        pfs: q.pfs,
        lifetime_kb: kb,
        nat_oa,
    })
}
