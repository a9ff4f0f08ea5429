//! Informational exchanges (RFC 2408 §4.8, RFC 2409 §5.7): DELETE, notifies, and the
//! Dead Peer Detection notifies of RFC 3706.
//!
//! Once phase 1 is up, Informationals are encrypted with the IV `hash(last phase-1
//! block | M-ID)` and authenticated by `HASH(1) = prf(SKEYID_a, M-ID | N/D)`; each has a
//! fresh random message ID. Before keys exist, error notifies travel in the clear.
//!
//! Trust: an unauthenticated notify never tears down state, with one exception: an
//! error in answer to our very first message (MM1/AM1), where nothing is authenticated
//! either way and strongSwan and IOS give up at once; it comes from the peer's address
//! and carries our fresh CKY-I. Later unauthenticated errors are only recorded, as the
//! reason reported if the exchange then times out.
//!
//! DPD: a received R-U-THERE (protocol ISAKMP, SPI = CKY-I | CKY-R, 4-byte sequence
//! number) is always answered with R-U-THERE-ACK in a new Informational. An ACK counts
//! only if it carries the sequence number of our outstanding R-U-THERE; any other is
//! counted ([`IkeCounters::dpd_unexpected_acks`]) and ignored, never fatal. Every
//! other authenticated Informational is proof of life for the DPD timers
//! ([`super::dpd`]); [`Ike::dpd_probe`] sends one R-U-THERE by hand.

use core::net::SocketAddr;

use hal_traits::{CryptoProvider, SecureRng};
use ipsec_core::Instant;

use super::IkeError;
use super::events::{DeleteReason, FailReason, Queued};
use super::ike::{Ike, IkeCounters, emit};
use super::keys::phase2_iv;
use super::msg::{self, decrypt, encrypt};
use super::sa::{ONESHOT_BUF, ONESHOT_QUEUE, OneShot, P1State, random_u32};
use super::status::Role;
use crate::wire::{
    DeleteRepr, HEADER_LEN, HeaderRepr, MessageBuilder, NotifyRepr, PayloadRepr, exchange_type,
    flags, notify, payload_type, protocol_id,
};

/// Most SPIs in one DELETE payload we send.
pub const MAX_DELETE_SPIS: usize = 64;

/// A payload of an Informational we send.
#[derive(Clone, Copy, Debug)]
pub enum InfoItem<'a> {
    /// A notify.
    Notify(NotifyRepr<'a>),
    /// A delete.
    Delete(DeleteRepr<'a>),
}

/// Queues an unencrypted Informational with one error notify (before keys exist).
#[allow(clippy::too_many_arguments)]
pub(super) fn plain_notify<R: SecureRng>(
    out: &mut heapless::Deque<OneShot, ONESHOT_QUEUE>,
    counters: &mut IkeCounters,
    rng: &mut R,
    cky_i: [u8; 8],
    cky_r: [u8; 8],
    src: SocketAddr,
    dst: SocketAddr,
    notify_type: u16,
) -> Result<(), IkeError> {
    let mid = random_u32(rng, 1, |_| false)?;
    let mut o = OneShot {
        src,
        dst,
        len: 0,
        buf: [0; ONESHOT_BUF],
    };
    let hdr = HeaderRepr {
        initiator_cookie: cky_i,
        responder_cookie: cky_r,
        next_payload: 0,
        exchange_type: exchange_type::INFORMATIONAL,
        flags: 0,
        message_id: mid,
        length: 0,
    };
    let mut b = MessageBuilder::new(&mut o.buf, &hdr)?;
    b.push(&PayloadRepr::Notify(NotifyRepr::isakmp(
        notify_type,
        &[],
        &[],
    )))?;
    o.len = b.finish()?;
    if out.push_back(o).is_err() {
        counters.tx_dropped += 1;
    } else {
        counters.notifies_sent += 1;
    }
    Ok(())
}

/// The failure a notify type stands for.
fn reason_of(t: u16, after_mm5: bool) -> FailReason {
    match t {
        notify::NO_PROPOSAL_CHOSEN => FailReason::NoProposalChosen,
        notify::AUTHENTICATION_FAILED | notify::INVALID_HASH_INFORMATION => {
            FailReason::AuthenticationFailed
        }
        // strongSwan's answer to an MM5 it cannot decrypt: a wrong PSK.
        notify::PAYLOAD_MALFORMED if after_mm5 => FailReason::AuthenticationFailed,
        notify::PAYLOAD_MALFORMED | notify::INVALID_PAYLOAD_TYPE => FailReason::InvalidPayload,
        notify::INVALID_ID_INFORMATION => FailReason::InvalidIdInformation,
        t => FailReason::PeerNotify(t),
    }
}

impl<P: CryptoProvider, const SAS: usize, const CHILDREN: usize> Ike<P, SAS, CHILDREN> {
    /// Sends an encrypted, HASH(1)-authenticated Informational on established SA `i`.
    pub(super) fn send_info<R: SecureRng>(
        &mut self,
        rng: &mut R,
        i: usize,
        items: &[InfoItem<'_>],
    ) -> Result<(), IkeError> {
        let sa = self.sa_mut(i)?;
        let crypto = sa.crypto.as_ref().ok_or(IkeError::UnexpectedMessage)?;
        let last = sa.last_block.ok_or(IkeError::UnexpectedMessage)?;
        let mid = random_u32(rng, 1, |m| sa.mid_known(m))?;
        let hash = crypto.keys.hash_alg();
        let iv = phase2_iv::<P::Prf>(hash, last.as_slice(), mid)?;
        let mut o = OneShot {
            src: sa.local,
            dst: sa.remote,
            len: 0,
            buf: [0; ONESHOT_BUF],
        };
        let hdr = HeaderRepr {
            initiator_cookie: sa.cky_i,
            responder_cookie: sa.cky_r,
            next_payload: 0,
            exchange_type: exchange_type::INFORMATIONAL,
            flags: 0,
            message_id: mid,
            length: 0,
        };
        let mut b = MessageBuilder::new(&mut o.buf, &hdr)?;
        let hs = b.reserve(payload_type::HASH, hash.output_len())?;
        for it in items {
            match it {
                InfoItem::Notify(n) => b.push(&PayloadRepr::Notify(*n))?,
                InfoItem::Delete(d) => b.push(&PayloadRepr::Delete(*d))?,
            };
        }
        let (h, rest) = b.split_at(hs)?;
        let d = crypto.keys.informational_hash(mid, rest)?;
        h.copy_from_slice(d.as_slice());
        let len = b.finish_encrypted(crypto.block)?;
        encrypt(&crypto.cbc()?, &iv, &mut o.buf, len)?;
        o.len = len;
        sa.remember_mid(mid);
        self.queue_oneshot(o);
        Ok(())
    }

    /// DELETE for IPsec SAs (protocol ESP, our inbound SPIs).
    pub(super) fn send_delete_esp<R: SecureRng>(
        &mut self,
        rng: &mut R,
        i: usize,
        spis: &[u32],
    ) -> Result<(), IkeError> {
        let mut buf = [0u8; 4 * MAX_DELETE_SPIS];
        let n = spis.len().min(MAX_DELETE_SPIS);
        for (k, s) in spis.iter().take(n).enumerate() {
            if let Some(d) = buf.get_mut(4 * k..4 * k + 4) {
                d.copy_from_slice(&s.to_be_bytes());
            }
        }
        let d = DeleteRepr::new(protocol_id::ESP, 4, buf.get(..4 * n).unwrap_or(&[]));
        self.send_info(rng, i, &[InfoItem::Delete(d)])
    }

    /// DELETE for the ISAKMP SA itself (protocol ISAKMP, SPI = CKY-I | CKY-R).
    pub(super) fn send_delete_isakmp<R: SecureRng>(
        &mut self,
        rng: &mut R,
        i: usize,
    ) -> Result<(), IkeError> {
        let sa = self.sa_ref(i)?;
        let mut ck = [0u8; 16];
        ck[..8].copy_from_slice(&sa.cky_i);
        ck[8..].copy_from_slice(&sa.cky_r);
        let d = DeleteRepr::new(protocol_id::ISAKMP, 16, &ck);
        self.send_info(rng, i, &[InfoItem::Delete(d)])
    }

    /// Every Informational.
    pub(super) fn on_info<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        from: SocketAddr,
        to: SocketAddr,
        hdr: &HeaderRepr,
        msg: &[u8],
    ) -> Result<(), IkeError> {
        let i = self
            .find_sa_for(&hdr.initiator_cookie, &hdr.responder_cookie)
            .ok_or(IkeError::UnknownSa)?;
        if hdr.flags & flags::ENCRYPTION == 0 {
            return self.on_plain_info(now, rng, i, from, hdr, msg);
        }
        let Some(Some(sa)) = self.sas.get_mut(i) else {
            return Err(IkeError::UnknownSa);
        };
        if !sa.is_established() {
            // The peer could not (or would not) answer our MM5 in phase 1: with
            // strongSwan this is its encrypted PAYLOAD-MALFORMED for a wrong PSK.
            if sa.state == P1State::MmI5 {
                sa.recorded = Some(FailReason::AuthenticationFailed);
            }
            return Err(IkeError::AuthenticationFailed);
        }
        let mid = hdr.message_id;
        if mid == 0 || sa.mid_known(mid) {
            return Err(IkeError::UnexpectedMessage);
        }
        let crypto = sa.crypto.as_ref().ok_or(IkeError::UnexpectedMessage)?;
        let last = sa.last_block.ok_or(IkeError::UnexpectedMessage)?;
        let iv = phase2_iv::<P::Prf>(crypto.keys.hash_alg(), last.as_slice(), mid)?;
        let (pt, _) = decrypt(&crypto.cbc()?, &iv, msg, &mut self.rx)
            .map_err(|_| IkeError::AuthenticationFailed)?;
        let m = msg::parse(exchange_type::INFORMATIONAL, hdr.next_payload, pt)
            .map_err(|_| IkeError::AuthenticationFailed)?;
        let h = m
            .leading_hash()
            .map_err(|_| IkeError::AuthenticationFailed)?;
        crypto
            .keys
            .informational_hash(mid, m.after_first)?
            .verify(h)
            .map_err(|_| IkeError::AuthenticationFailed)?;
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
        let (cky_i, cky_r, peer) = (sa.cky_i, sa.cky_r, sa.remote);
        let mut ck = [0u8; 16];
        ck[..8].copy_from_slice(&cky_i);
        ck[8..].copy_from_slice(&cky_r);
        // Copy what we act on out of the receive buffer (the handlers below send).
        let mut acks: heapless::Vec<u32, 4> = heapless::Vec::new();
        let mut refused: heapless::Vec<(Option<u32>, FailReason), 4> = heapless::Vec::new();
        let mut initial_contact = false;
        // DPD: the outstanding R-U-THERE answered; ACKs that were not expected; and
        // whether anything else in the message shows the peer is alive.
        let (mut acked, mut stale_acks, mut proof) = (false, 0u32, !m.deletes.is_empty());
        for n in &m.notifies {
            let stale = matches!(n.notify_type, notify::R_U_THERE_ACK);
            proof |= !stale;
            match n.notify_type {
                notify::R_U_THERE if n.protocol_id == protocol_id::ISAKMP && n.spi == ck => {
                    if let Some(seq) = n.dpd_sequence() {
                        let _ = acks.push(seq);
                    }
                }
                notify::R_U_THERE_ACK => {
                    let seq = n.dpd_sequence();
                    if n.protocol_id == protocol_id::ISAKMP
                        && n.spi == ck
                        && seq.is_some()
                        && sa.dpd_outstanding == seq
                    {
                        sa.dpd_outstanding = None;
                        self.counters.dpd_acks += 1;
                        acked = true;
                    } else {
                        self.counters.dpd_unexpected_acks += 1;
                        stale_acks += 1;
                    }
                }
                notify::INITIAL_CONTACT => initial_contact = true,
                t if notify::is_error(t) => {
                    let spi = <[u8; 4]>::try_from(n.spi).ok().map(u32::from_be_bytes);
                    if n.protocol_id != protocol_id::ISAKMP {
                        let _ = refused.push((spi, reason_of(t, false)));
                    }
                }
                _ => {}
            }
        }
        let mut esp_spis: heapless::Vec<u32, MAX_DELETE_SPIS> = heapless::Vec::new();
        let mut ike_dels: heapless::Vec<([u8; 8], [u8; 8]), 4> = heapless::Vec::new();
        for d in &m.deletes {
            match (d.protocol_id, d.spi_size) {
                (protocol_id::ESP | protocol_id::AH, 4) => {
                    for s in d.iter() {
                        if let Ok(b) = <[u8; 4]>::try_from(s) {
                            let _ = esp_spis.push(u32::from_be_bytes(b));
                        }
                    }
                }
                (protocol_id::ISAKMP, 16) => {
                    for s in d.iter() {
                        let (a, b) = s.split_at(8);
                        if let (Ok(a), Ok(b)) = (<[u8; 8]>::try_from(a), <[u8; 8]>::try_from(b)) {
                            let _ = ike_dels.push((a, b));
                        }
                    }
                }
                _ => {}
            }
        }
        drop(m);
        let ka = self.config.keepalive;
        let pip = peer.ip();
        if acked {
            self.dpd.acked(now, pip, ka.as_ref());
        } else if proof {
            self.dpd_alive(now, pip);
        }
        for _ in 0..stale_acks {
            self.dpd.unexpected_ack(pip);
        }
        for seq in acks {
            self.on_dpd(rng, i, seq)?;
        }
        for (spi, reason) in refused {
            self.qm_refused(i, spi, reason);
        }
        if initial_contact {
            self.initial_contact(i);
        }
        self.remove_children(
            |c| c.peer.ip() == pip && esp_spis.contains(&c.outbound.spi),
            DeleteReason::PeerDelete,
        );
        for (a, b) in ike_dels {
            let Some(k) = self.sas.iter().position(|s| {
                s.as_ref()
                    .is_some_and(|s| s.cky_i == a && s.cky_r == b && s.remote.ip() == pip)
            }) else {
                continue;
            };
            let conn_id = self.sa_ref(k).map(|s| s.conn_id).unwrap_or(0);
            if let Some(s) = self.sas.get_mut(k) {
                *s = None;
            }
            self.dpd_gc(pip);
            self.reparent(conn_id, pip);
            emit(
                &mut self.events,
                &mut self.counters,
                Queued::Phase1Deleted {
                    conn_id,
                    peer,
                    reason: DeleteReason::PeerDelete,
                },
            );
        }
        Ok(())
    }

    /// DPD (RFC 3706): answer a valid R-U-THERE with R-U-THERE-ACK, same sequence.
    pub(super) fn on_dpd<R: SecureRng>(
        &mut self,
        rng: &mut R,
        i: usize,
        seq: u32,
    ) -> Result<(), IkeError> {
        let sa = self.sa_ref(i)?;
        let mut ck = [0u8; 16];
        ck[..8].copy_from_slice(&sa.cky_i);
        ck[8..].copy_from_slice(&sa.cky_r);
        let seq = seq.to_be_bytes();
        let n = NotifyRepr::isakmp(notify::R_U_THERE_ACK, &ck, &seq);
        self.send_info(rng, i, &[InfoItem::Notify(n)])?;
        self.counters.dpd_answered += 1;
        Ok(())
    }

    /// Sends one DPD R-U-THERE (RFC 3706) on IKE SA `conn_id` now, outside the DPD
    /// timers ([`IkeConfig::keepalive`](super::IkeConfig::keepalive)), and returns its
    /// sequence number; the peer's R-U-THERE-ACK clears it (counted in
    /// [`IkeCounters::dpd_acks`]).
    ///
    /// # Errors
    /// [`IkeError::UnknownSa`], [`IkeError::UnexpectedMessage`] if phase 1 is not up,
    /// provider errors.
    pub fn dpd_probe<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        conn_id: u32,
    ) -> Result<u32, IkeError> {
        self.last_now = now;
        let i = self
            .sas
            .iter()
            .position(|s| s.as_ref().is_some_and(|sa| sa.conn_id == conn_id))
            .ok_or(IkeError::UnknownSa)?;
        self.send_r_u_there(rng, i)
    }

    /// An unencrypted Informational: error notifies are recorded (or, in answer to our
    /// first message, end the negotiation); nothing else is believed.
    fn on_plain_info<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        i: usize,
        from: SocketAddr,
        hdr: &HeaderRepr,
        msg: &[u8],
    ) -> Result<(), IkeError> {
        let area = msg.get(HEADER_LEN..).unwrap_or(&[]);
        let m = msg::parse(exchange_type::INFORMATIONAL, hdr.next_payload, area)?;
        let Some(t) = m
            .notifies
            .iter()
            .map(|n| n.notify_type)
            .find(|&t| notify::is_error(t))
        else {
            return Ok(());
        };
        self.counters.unauthenticated_notifies += 1;
        let sa = self.sa_mut(i)?;
        if sa.is_established() || from.ip() != sa.remote.ip() {
            return Ok(());
        }
        let reason = reason_of(t, sa.state == P1State::MmI5);
        if matches!(sa.state, P1State::MmI1 | P1State::AmI1) {
            self.fail_phase1(now, rng, i, reason);
        } else {
            sa.recorded = Some(reason);
        }
        Ok(())
    }
}
