//! [`Ike`]: all IKE SAs of one node, keyed by cookies, and the sans-IO surface.

use core::net::{IpAddr, SocketAddr};

use hal_traits::{CryptoProvider, HashAlg, Prf, SecureRng};
use ipsec_core::Instant;

use super::IkeError;
use super::config::{IkeConfig, MAX_CRYPTO_MAPS};
use super::events::{ChildSa, DeleteReason, EVENT_QUEUE, FailReason, IkeEvent, Queued};
use super::sa::{
    ChildRecord, IkeSa, ONESHOT_QUEUE, OneShot, QmRequest, QmState, RX_BUF, TxTimeout, random,
};
use super::status::{Capabilities, ChildSaStatus, IsakmpSaStatus, Role};
use crate::wire::{Header, HeaderRepr, exchange_type};

/// A datagram to send: the UDP payload was written to `buf[..len]` (with the 4-byte
/// non-ESP marker when `src` is the NAT-T port).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Our address and port to send from.
    pub src: SocketAddr,
    /// The destination.
    pub dst: SocketAddr,
    /// Bytes written.
    pub len: usize,
}

#[cfg(feature = "defmt")]
impl defmt::Format for Transmit {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(
            f,
            "Transmit {{ src: {}, dst: {}, len: {=usize} }}",
            defmt::Display2Format(&self.src),
            defmt::Display2Format(&self.dst),
            self.len
        );
    }
}

/// Counters for drops and retransmissions (`show crypto isakmp` style diagnostics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct IkeCounters {
    /// Datagrams handed to `handle_datagram`.
    pub rx_datagrams: u64,
    /// Datagrams handed out by `poll_transmit`.
    pub tx_datagrams: u64,
    /// Our retransmissions (timer driven).
    pub retransmits: u64,
    /// Retransmissions by the peer recognised (answered from the stored reply or
    /// ignored).
    pub duplicates: u64,
    /// Datagrams the codec refused.
    pub malformed: u64,
    /// Messages whose HASH or decryption did not verify.
    pub auth_failures: u64,
    /// Datagrams for unknown SAs.
    pub unknown_sa: u64,
    /// Messages unexpected in the SA's state, or old message IDs.
    pub unexpected: u64,
    /// New phase-1 SAs refused by the half-open or table limits.
    pub half_open_refused: u64,
    /// Unauthenticated notifies received (recorded, never acted upon after MM1/AM1).
    pub unauthenticated_notifies: u64,
    /// Notifies we sent.
    pub notifies_sent: u64,
    /// DPD R-U-THERE received and answered with R-U-THERE-ACK.
    pub dpd_answered: u64,
    /// DPD R-U-THERE-ACKs received for our outstanding R-U-THERE.
    pub dpd_acks: u64,
    /// DPD R-U-THEREs we sent (timer driven and [`Ike::dpd_probe`]).
    pub dpd_sent: u64,
    /// Our R-U-THEREs left unanswered for a retry interval.
    pub dpd_timeouts: u64,
    /// R-U-THERE-ACKs whose sequence number was not the outstanding one (ignored).
    pub dpd_unexpected_acks: u64,
    /// Peers declared dead by DPD.
    pub dpd_peers_dead: u64,
    /// Events lost because the queue was full.
    pub events_dropped: u64,
    /// Datagrams lost because the queue was full or the caller's buffer too small.
    pub tx_dropped: u64,
}

/// The IKEv1 control plane of one node: every IKE SA (up to `SAS`, keyed by cookies)
/// with their Quick Mode exchanges, and the child SA records (up to `CHILDREN`).
///
/// Large fixed buffers live here, not on the stack: a firmware puts it in a static.
/// See the [module documentation](super) for the protocol choices.
pub struct Ike<P: CryptoProvider, const SAS: usize = 16, const CHILDREN: usize = 32> {
    pub(super) config: IkeConfig,
    pub(super) sas: [Option<IkeSa<P>>; SAS],
    pub(super) children: heapless::Vec<ChildRecord, CHILDREN>,
    pub(super) peer_index: [u8; MAX_CRYPTO_MAPS],
    pub(super) events: heapless::Deque<Queued, EVENT_QUEUE>,
    pub(super) out: heapless::Deque<OneShot, ONESHOT_QUEUE>,
    pub(super) rx: [u8; RX_BUF],
    pub(super) scratch: [u8; super::sa::MAX_SA_BODY],
    pub(super) cookie_secret: Option<hal_traits::SecretBytes<32>>,
    pub(super) next_conn_id: u32,
    pub(super) counters: IkeCounters,
    pub(super) last_now: Instant,
    pub(super) rr: usize,
    pub(super) dpd: super::dpd::DpdTable<SAS>,
}

impl<P: CryptoProvider, const SAS: usize, const CHILDREN: usize> core::fmt::Debug
    for Ike<P, SAS, CHILDREN>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ike")
            .field("sas", &self.sas.iter().flatten().count())
            .field("children", &self.children.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// The responder got an authenticated message of IKE SA `conn_id` from `to` while it
/// knew the peer at `from` (its NAT mapping changed): the child SAs follow (peer, UDP
/// encapsulation port, tunnel endpoint) and the port is told with `PeerMoved`.
pub(super) fn follow_peer<const CHILDREN: usize>(
    events: &mut heapless::Deque<Queued, EVENT_QUEUE>,
    counters: &mut IkeCounters,
    children: &mut heapless::Vec<ChildRecord, CHILDREN>,
    conn_id: u32,
    from: SocketAddr,
    to: SocketAddr,
) {
    if from == to {
        return;
    }
    for c in children
        .iter_mut()
        .filter(|c| c.conn_id == conn_id && c.peer == from)
    {
        c.peer = to;
        for cfg in [&mut c.inbound, &mut c.outbound] {
            if let Some(u) = cfg.udp_encap.as_mut() {
                u.remote_port = to.port();
            }
            if cfg.remote == Some(from.ip()) {
                cfg.remote = Some(to.ip());
            }
        }
    }
    emit(events, counters, Queued::PeerMoved { conn_id, from, to });
}

pub(super) fn emit(
    events: &mut heapless::Deque<Queued, EVENT_QUEUE>,
    counters: &mut IkeCounters,
    q: Queued,
) {
    if events.push_back(q).is_err() {
        counters.events_dropped += 1;
    }
}

impl<P: CryptoProvider, const SAS: usize, const CHILDREN: usize> Ike<P, SAS, CHILDREN> {
    /// A control plane with `config` and no SAs.
    #[must_use]
    pub fn new(config: IkeConfig) -> Self {
        Self {
            config,
            sas: core::array::from_fn(|_| None),
            children: heapless::Vec::new(),
            peer_index: [0; MAX_CRYPTO_MAPS],
            events: heapless::Deque::new(),
            out: heapless::Deque::new(),
            rx: [0; RX_BUF],
            scratch: [0; super::sa::MAX_SA_BODY],
            cookie_secret: None,
            next_conn_id: 1,
            counters: IkeCounters::default(),
            last_now: Instant::ZERO,
            rr: 0,
            dpd: super::dpd::DpdTable::new(),
        }
    }

    /// The configuration.
    #[must_use]
    pub const fn config(&self) -> &IkeConfig {
        &self.config
    }

    /// The configuration, to change at run time (IOS-style: new policies, keys, crypto
    /// map entries and transform sets apply to negotiations started afterwards). The
    /// peer failover position is kept per entry position.
    pub fn config_mut(&mut self) -> &mut IkeConfig {
        &mut self.config
    }

    /// Drop and retransmission counters.
    #[must_use]
    pub const fn counters(&self) -> &IkeCounters {
        &self.counters
    }

    /// Starts negotiating child SAs for crypto map entry `crypto_map`: Quick Mode on an
    /// established IKE SA with the entry's current peer, else phase 1 first (Main or
    /// Aggressive Mode as configured). A port calls this on the data plane's
    /// `NoSa { sa_group }`. Does nothing if a negotiation for the entry is already in
    /// flight. If it fails, the entry's next peers are tried in turn (one round).
    ///
    /// # Errors
    /// [`IkeError::UnknownCryptoMap`], [`IkeError::DynamicMap`], [`IkeError::NoPeer`],
    /// [`IkeError::NoPresharedKey`], [`IkeError::TableFull`], [`IkeError::Busy`],
    /// provider errors.
    pub fn initiate<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        crypto_map: u32,
    ) -> Result<(), IkeError> {
        self.last_now = now;
        let entry = self
            .config
            .crypto_map(crypto_map)
            .ok_or(IkeError::UnknownCryptoMap)?;
        if entry.dynamic {
            return Err(IkeError::DynamicMap);
        }
        let attempts = u8::try_from(entry.peers.len().saturating_sub(1)).unwrap_or(u8::MAX);
        self.initiate_req(
            now,
            rng,
            QmRequest {
                crypto_map,
                replaces: None,
                attempts_left: attempts,
                selector: None,
            },
            None,
        )
    }

    /// Starts a new Quick Mode for the crypto map entry of the child SA whose inbound
    /// SPI is `inbound_spi`; the new pair's event carries `replaces: Some(inbound_spi)`.
    /// The old pair stays until it expires or is deleted. A port calls this on the data
    /// plane's `SoftExpired`.
    ///
    /// # Errors
    /// [`IkeError::UnknownChild`], and those of [`Ike::initiate`].
    pub fn rekey_child<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        inbound_spi: u32,
    ) -> Result<(), IkeError> {
        self.last_now = now;
        let c = self
            .children
            .iter()
            .find(|c| c.inbound.spi == inbound_spi)
            .ok_or(IkeError::UnknownChild)?;
        let req = QmRequest {
            crypto_map: c.crypto_map,
            replaces: Some(inbound_spi),
            attempts_left: 0,
            selector: c.inbound.selector,
        };
        let peer = c.peer.ip();
        self.initiate_req(now, rng, req, Some(peer))
    }

    pub(super) fn initiate_req<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        req: QmRequest,
        peer: Option<IpAddr>,
    ) -> Result<(), IkeError> {
        self.ensure_secret(rng)?;
        let pos = self
            .config
            .crypto_maps
            .iter()
            .position(|m| m.seq == req.crypto_map)
            .ok_or(IkeError::UnknownCryptoMap)?;
        let entry = self
            .config
            .crypto_maps
            .get(pos)
            .ok_or(IkeError::UnknownCryptoMap)?;
        let peer = match peer {
            Some(p) => p,
            None => {
                let idx = usize::from(self.peer_index.get(pos).copied().unwrap_or(0));
                *entry
                    .peers
                    .get(idx)
                    .or(entry.peers.first())
                    .ok_or(IkeError::NoPeer)?
            }
        };
        let mode = entry.exchange;
        // Already in flight for this entry (and purpose)?
        let in_flight = self.sas.iter().flatten().any(|sa| {
            sa.remote.ip() == peer
                && (sa
                    .pending
                    .iter()
                    .any(|p| p.crypto_map == req.crypto_map && p.replaces == req.replaces)
                    || sa.qm.iter().flatten().any(|q| {
                        q.role == Role::Initiator
                            && q.state == QmState::I1
                            && q.req.crypto_map == req.crypto_map
                            && q.req.replaces == req.replaces
                    }))
        });
        if in_flight {
            return Ok(());
        }
        if let Some(i) = self.established_to(peer, None) {
            return self.start_qm(now, rng, i, req);
        }
        if let Some(i) = self.sas.iter().position(|s| {
            s.as_ref().is_some_and(|sa| {
                sa.remote.ip() == peer && sa.role == Role::Initiator && !sa.is_established()
            })
        }) {
            let sa = self.sa_mut(i)?;
            return sa.pending.push(req).map_err(|_| IkeError::Busy);
        }
        let attempts = req.attempts_left;
        self.start_phase1(
            now,
            rng,
            peer,
            mode,
            Some(req),
            Some(req.crypto_map),
            attempts,
        )
        .map(|_| ())
    }

    /// Processes one received UDP payload (`to` is our address and port it arrived on;
    /// on the NAT-T port it starts with the non-ESP marker).
    ///
    /// # Errors
    /// Why the datagram was dropped: [`IkeError::NotIke`] for ESP-in-UDP (the data
    /// plane's), [`IkeError::Malformed`], [`IkeError::UnknownSa`],
    /// [`IkeError::AuthenticationFailed`], [`IkeError::UnexpectedMessage`], ... A
    /// dropped datagram never changes an SA's state.
    pub fn handle_datagram<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        from: SocketAddr,
        to: SocketAddr,
        data: &[u8],
    ) -> Result<(), IkeError> {
        self.last_now = now;
        self.counters.rx_datagrams += 1;
        let r = self.datagram(now, rng, from, to, data);
        match r {
            Err(IkeError::Malformed(_)) => self.counters.malformed += 1,
            Err(IkeError::AuthenticationFailed) => self.counters.auth_failures += 1,
            Err(IkeError::UnknownSa) => self.counters.unknown_sa += 1,
            Err(IkeError::UnexpectedMessage) => self.counters.unexpected += 1,
            _ => {}
        }
        r
    }

    fn datagram<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        from: SocketAddr,
        to: SocketAddr,
        data: &[u8],
    ) -> Result<(), IkeError> {
        let data = if to.port() == self.config.natt_port {
            if data == [0xff] {
                return Ok(()); // NAT keepalive
            }
            match data.split_first_chunk::<4>() {
                Some(([0, 0, 0, 0], rest)) => rest,
                _ => return Err(IkeError::NotIke),
            }
        } else {
            data
        };
        let h = Header::new_checked(data)?;
        let hdr = HeaderRepr::parse(&h)?;
        let msg = h.message();
        if msg.len() > RX_BUF {
            return Err(IkeError::TooLarge);
        }
        self.ensure_secret(rng)?;
        match hdr.exchange_type {
            exchange_type::IDENTITY_PROTECTION | exchange_type::AGGRESSIVE => {
                self.on_phase1(now, rng, from, to, &hdr, msg)
            }
            exchange_type::QUICK_MODE => self.on_quick(now, rng, from, to, &hdr, msg),
            exchange_type::INFORMATIONAL => self.on_info(now, rng, from, to, &hdr, msg),
            _ => Err(IkeError::UnsupportedExchange),
        }
    }

    /// The next datagram to send, written into `buf`.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.last_now = now;
        let natt = self.config.natt_port;
        while let Some(o) = self.out.pop_front() {
            if let Some(t) = write_out(buf, natt, o.src, o.dst, o.buf.get(..o.len).unwrap_or(&[])) {
                self.counters.tx_datagrams += 1;
                return Some(t);
            }
            self.counters.tx_dropped += 1;
        }
        for k in 0..SAS {
            let i = (self.rr + k) % SAS.max(1);
            let Some(Some(sa)) = self.sas.get_mut(i) else {
                continue;
            };
            let (src, dst) = (sa.local, sa.remote);
            let slot = if sa.tx.pending {
                Some(&mut sa.tx)
            } else {
                sa.qm
                    .iter_mut()
                    .flatten()
                    .map(|q| &mut q.tx)
                    .find(|t| t.pending)
            };
            if let Some(tx) = slot {
                tx.pending = false;
                self.rr = i;
                if let Some(t) = write_out(buf, natt, src, dst, tx.message()) {
                    self.counters.tx_datagrams += 1;
                    return Some(t);
                }
                self.counters.tx_dropped += 1;
            }
        }
        None
    }

    /// The earliest deadline (retransmission, half-open expiry, rekey, lifetime, DPD).
    /// Idle peers in on-demand DPD mode contribute none.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let half_open = self.config.half_open_timeout;
        let mut best: Option<Instant> = self.dpd.next_deadline();
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                best = Some(best.map_or(t, |b| b.min(t)));
            }
        };
        for sa in self.sas.iter().flatten() {
            consider(sa.tx.deadline);
            if !sa.is_established() {
                consider(Some(sa.created + half_open));
            }
            if !sa.rekey_started {
                consider(sa.rekey_at);
            }
            consider(sa.expires);
            for q in sa.qm.iter().flatten() {
                consider(q.tx.deadline);
                consider(q.linger);
                consider(q.deadline);
            }
        }
        for c in &self.children {
            consider(Some(c.expires));
        }
        best
    }

    /// Runs every timer due at `now`: retransmissions (and giving up, with peer
    /// failover), half-open expiry, phase-1 rekey and expiry, child SA expiry, DPD
    /// (R-U-THEREs, declaring a peer dead, failover).
    pub fn handle_timeout<R: SecureRng>(&mut self, now: Instant, rng: &mut R) {
        self.last_now = now;
        let rt = self.config.retransmit;
        let half_open = self.config.half_open_timeout;
        for i in 0..SAS {
            let Some(Some(sa)) = self.sas.get_mut(i) else {
                continue;
            };
            match sa.tx.on_timeout(now, &rt) {
                TxTimeout::Resent => self.counters.retransmits += 1,
                TxTimeout::GiveUp if !sa.is_established() => {
                    let reason = sa.recorded.unwrap_or(FailReason::Timeout);
                    self.fail_phase1(now, rng, i, reason);
                    continue;
                }
                _ => {}
            }
            if !sa.is_established() && now >= sa.created + half_open {
                let reason = sa.recorded.unwrap_or(FailReason::Timeout);
                self.fail_phase1(now, rng, i, reason);
                continue;
            }
            // Quick Mode slots.
            let mut failed = [None; super::sa::QM_SLOTS];
            let mut freed = false;
            for (s, q) in sa.qm.iter_mut().enumerate() {
                let Some(qm) = q else { continue };
                match qm.tx.on_timeout(now, &rt) {
                    TxTimeout::Resent => self.counters.retransmits += 1,
                    TxTimeout::GiveUp if qm.state != QmState::Done => {
                        if let Some(f) = failed.get_mut(s) {
                            *f = Some((qm.req, qm.role));
                        }
                        *q = None;
                        freed = true;
                        continue;
                    }
                    _ => {}
                }
                if qm.linger.is_some_and(|l| l <= now) || qm.deadline.is_some_and(|d| d <= now) {
                    if qm.state != QmState::Done {
                        if let Some(f) = failed.get_mut(s) {
                            *f = Some((qm.req, qm.role));
                        }
                    }
                    *q = None;
                    freed = true;
                }
            }
            let peer = sa.remote;
            let rekey =
                sa.is_established() && !sa.rekey_started && sa.rekey_at.is_some_and(|t| t <= now);
            let expired = sa.expires.is_some_and(|t| t <= now);
            if rekey {
                sa.rekey_started = true;
            }
            let (mode, map) = (sa.mode, sa.crypto_map);
            for (req, role) in failed.into_iter().flatten() {
                let map = Some(req.crypto_map);
                emit(
                    &mut self.events,
                    &mut self.counters,
                    Queued::Failed {
                        crypto_map: map,
                        peer,
                        reason: FailReason::Timeout,
                    },
                );
                if role == Role::Initiator {
                    self.failover(now, rng, req, peer.ip());
                }
            }
            // Only an IKE SA still in use is re-established (it has child SAs with
            // the peer); an idle one just expires, as on IOS.
            let in_use = self.children.iter().any(|c| c.peer.ip() == peer.ip());
            if rekey && in_use && self.newer_sa_to(peer.ip(), i).is_none() {
                // Re-establish phase 1 before this one dies; Quick Modes move to the new
                // SA once it is up (this one keeps serving until then).
                let _ = self.start_phase1(now, rng, peer.ip(), mode, None, map, 0);
            }
            if expired {
                self.expire_phase1(rng, i);
                continue;
            }
            if freed {
                self.drain_pending(now, rng, i);
            }
        }
        // Child SAs.
        let mut k = 0;
        while let Some(c) = self.children.get(k) {
            if c.expires <= now {
                let (spi, peer) = (c.inbound.spi, c.peer.ip());
                let c = self.children.swap_remove(k);
                if let Some(i) = self.established_to(peer, Some(c.conn_id)) {
                    let _ = self.send_delete_esp(rng, i, &[spi]);
                }
                emit(
                    &mut self.events,
                    &mut self.counters,
                    Queued::ChildDeleted {
                        crypto_map: c.crypto_map,
                        inbound_spi: c.inbound.spi,
                        outbound_spi: c.outbound.spi,
                        reason: DeleteReason::Expired,
                    },
                );
            } else {
                k += 1;
            }
        }
        self.dpd_timers(now, rng);
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<IkeEvent> {
        while let Some(q) = self.events.pop_front() {
            let ev = match q {
                Queued::Phase1Established {
                    conn_id,
                    local,
                    peer,
                    nat,
                } => IkeEvent::Phase1Established {
                    conn_id,
                    local,
                    peer,
                    nat,
                },
                Queued::Phase1Deleted {
                    conn_id,
                    peer,
                    reason,
                } => IkeEvent::Phase1Deleted {
                    conn_id,
                    peer,
                    reason,
                },
                Queued::ChildUp { inbound_spi } => {
                    let Some(c) = self
                        .children
                        .iter_mut()
                        .find(|c| c.inbound.spi == inbound_spi)
                    else {
                        continue; // deleted before it was polled
                    };
                    let Some((ik, ok, enc_len)) = c.keys.take() else {
                        continue;
                    };
                    IkeEvent::ChildSaEstablished(ChildSa {
                        conn_id: c.conn_id,
                        crypto_map: c.crypto_map,
                        peer: c.peer,
                        inbound: c.inbound.clone(),
                        outbound: c.outbound.clone(),
                        replaces: c.replaces,
                        nat_oa: c.nat_oa,
                        inbound_keymat: ik,
                        outbound_keymat: ok,
                        enc_len,
                    })
                }
                Queued::ChildDeleted {
                    crypto_map,
                    inbound_spi,
                    outbound_spi,
                    reason,
                } => IkeEvent::ChildSaDeleted {
                    crypto_map,
                    inbound_spi,
                    outbound_spi,
                    reason,
                },
                Queued::Failed {
                    crypto_map,
                    peer,
                    reason,
                } => IkeEvent::NegotiationFailed {
                    crypto_map,
                    peer,
                    reason,
                },
                Queued::PeerChanged {
                    crypto_map,
                    from,
                    to,
                } => IkeEvent::PeerChanged {
                    crypto_map,
                    from,
                    to,
                },
                Queued::PeerDead {
                    peer,
                    last_proof_of_life,
                } => IkeEvent::PeerDead {
                    peer,
                    last_proof_of_life,
                },
                Queued::PeerMoved { conn_id, from, to } => {
                    IkeEvent::PeerMoved { conn_id, from, to }
                }
            };
            return Some(ev);
        }
        None
    }

    /// Deletes the child SA pair whose inbound SPI is `inbound_spi`: sends a DELETE
    /// (IPsec, our inbound SPI) if an IKE SA with the peer is up, and emits
    /// `ChildSaDeleted { reason: Local }`.
    ///
    /// # Errors
    /// [`IkeError::UnknownChild`]; a failure to queue the DELETE is not an error (the
    /// child is deleted locally anyway).
    pub fn delete_child<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        inbound_spi: u32,
    ) -> Result<(), IkeError> {
        self.last_now = now;
        let k = self
            .children
            .iter()
            .position(|c| c.inbound.spi == inbound_spi)
            .ok_or(IkeError::UnknownChild)?;
        let c = self.children.swap_remove(k);
        if let Some(i) = self.established_to(c.peer.ip(), Some(c.conn_id)) {
            let _ = self.send_delete_esp(rng, i, &[inbound_spi]);
        }
        emit(
            &mut self.events,
            &mut self.counters,
            Queued::ChildDeleted {
                crypto_map: c.crypto_map,
                inbound_spi,
                outbound_spi: c.outbound.spi,
                reason: DeleteReason::Local,
            },
        );
        Ok(())
    }

    /// Deletes IKE SA `conn_id`: sends DELETEs for its child SAs and for itself (if it
    /// is established), deletes the children, and emits the events.
    ///
    /// # Errors
    /// [`IkeError::UnknownSa`].
    pub fn delete_ike_sa<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        conn_id: u32,
    ) -> Result<(), IkeError> {
        self.last_now = now;
        let i = self
            .sas
            .iter()
            .position(|s| s.as_ref().is_some_and(|sa| sa.conn_id == conn_id))
            .ok_or(IkeError::UnknownSa)?;
        let sa = self.sa_ref(i)?;
        let (established, peer) = (sa.is_established(), sa.remote);
        let mut spis: heapless::Vec<u32, CHILDREN> = heapless::Vec::new();
        for c in self.children.iter().filter(|c| c.conn_id == conn_id) {
            let _ = spis.push(c.inbound.spi);
        }
        if established {
            for chunk in spis.chunks(super::info::MAX_DELETE_SPIS) {
                let _ = self.send_delete_esp(rng, i, chunk);
            }
            let _ = self.send_delete_isakmp(rng, i);
        }
        self.remove_children(|c| c.conn_id == conn_id, DeleteReason::IkeSaDeleted);
        if let Some(s) = self.sas.get_mut(i) {
            *s = None;
        }
        self.dpd_gc(peer.ip());
        emit(
            &mut self.events,
            &mut self.counters,
            Queued::Phase1Deleted {
                conn_id,
                peer,
                reason: DeleteReason::Local,
            },
        );
        Ok(())
    }

    /// The phase-1 secrets of an established IKE SA, for a key log (like TLS's
    /// SSLKEYLOGFILE): tools that must prove their keys equal a peer's debug log, or feed a
    /// dissector, call this explicitly. Nothing in the library ever logs them.
    ///
    /// Returns `(CKY-I, CKY-R, SKEYID_d, SKEYID_a, SKEYID_e)`, or `None` if `conn_id` has
    /// no keys yet.
    #[must_use]
    pub fn keylog_phase1(&self, conn_id: u32) -> Option<KeyLogPhase1<'_>> {
        let sa = self.sas.iter().flatten().find(|sa| sa.conn_id == conn_id)?;
        let c = sa.crypto.as_ref()?;
        Some(KeyLogPhase1 {
            cky_i: sa.cky_i,
            cky_r: sa.cky_r,
            skeyid_d: c.keys.skeyid_d().expose(),
            skeyid_a: c.keys.skeyid_a().expose(),
            skeyid_e: c.keys.skeyid_e().expose(),
        })
    }

    /// `show crypto isakmp sa detail`.
    pub fn isakmp_status(&self) -> impl Iterator<Item = IsakmpSaStatus> + '_ {
        let now = self.last_now;
        let ka = self.config.keepalive;
        self.sas.iter().flatten().map(move |sa| {
            let dpd = if sa.is_established() {
                self.dpd.status(sa.remote.ip(), ka.as_ref())
            } else {
                None
            };
            IsakmpSaStatus {
                conn_id: sa.conn_id,
                local: sa.local,
                remote: sa.remote,
                state: sa.state.status(),
                role: sa.role,
                encryption: sa.chosen.map(|c| c.cipher),
                hash: sa.chosen.map(|c| c.hash),
                auth: super::config::IsakmpAuth::PreShare,
                group: sa.chosen.map(|c| c.group),
                lifetime_left: sa.expires.map(|e| e - now),
                capabilities: Capabilities {
                    dpd: sa.peer_dpd,
                    keepalive: sa.is_established()
                        && ka.is_some_and(|k| sa.peer_dpd || k.without_peer_vid),
                    nat_t: sa.natt_active(),
                },
                nat: sa.nat,
                dpd,
                initiator_cookie: sa.cky_i,
                responder_cookie: sa.cky_r,
            }
        })
    }

    /// The IPsec part of `show crypto ipsec sa`: one entry per child SA pair.
    pub fn ipsec_status(&self) -> impl Iterator<Item = ChildSaStatus> + '_ {
        let now = self.last_now;
        self.children.iter().filter_map(move |c| {
            Some(ChildSaStatus {
                crypto_map: c.crypto_map,
                conn_id: c.conn_id,
                selector: c.inbound.selector?,
                peer: c.peer,
                inbound_spi: c.inbound.spi,
                outbound_spi: c.outbound.spi,
                transform: c.inbound.transform,
                mode: c.inbound.mode,
                udp_encap: c.inbound.udp_encap,
                pfs: c.pfs,
                lifetime_left: c.expires - now,
                lifetime_kilobytes: c.lifetime_kb,
                replaces: c.replaces,
            })
        })
    }

    // ------------------------------------------------------------------ helpers --

    pub(super) fn sa_mut(&mut self, i: usize) -> Result<&mut IkeSa<P>, IkeError> {
        self.sas
            .get_mut(i)
            .and_then(Option::as_mut)
            .ok_or(IkeError::UnknownSa)
    }

    pub(super) fn sa_ref(&self, i: usize) -> Result<&IkeSa<P>, IkeError> {
        self.sas
            .get(i)
            .and_then(Option::as_ref)
            .ok_or(IkeError::UnknownSa)
    }

    /// An established IKE SA with `peer`: `prefer` (a conn id) if it qualifies, else
    /// the newest.
    pub(super) fn established_to(&self, peer: IpAddr, prefer: Option<u32>) -> Option<usize> {
        let mut best: Option<(usize, Instant)> = None;
        for (i, sa) in self.sas.iter().enumerate() {
            let Some(sa) = sa else { continue };
            if !sa.is_established() || sa.remote.ip() != peer {
                continue;
            }
            if Some(sa.conn_id) == prefer {
                return Some(i);
            }
            let t = sa.established_at.unwrap_or(sa.created);
            if best.is_none_or(|(_, b)| t > b) {
                best = Some((i, t));
            }
        }
        best.map(|(i, _)| i)
    }

    /// Another IKE SA with `peer` created after SA `i` (a rekey in progress or done).
    pub(super) fn newer_sa_to(&self, peer: IpAddr, i: usize) -> Option<usize> {
        let created = self.sa_ref(i).ok()?.created;
        self.sas.iter().enumerate().find_map(|(k, s)| {
            let s = s.as_ref()?;
            (k != i && s.remote.ip() == peer && s.created >= created).then_some(k)
        })
    }

    pub(super) fn ensure_secret<R: SecureRng>(&mut self, rng: &mut R) -> Result<(), IkeError> {
        if self.cookie_secret.is_none() {
            let mut b = random::<R, 32>(rng)?;
            self.cookie_secret = Some(hal_traits::SecretBytes::from_slice(&b)?);
            zeroize::Zeroize::zeroize(&mut b);
        }
        Ok(())
    }

    /// CKY-R = HMAC(secret, peer address | port | CKY-I), truncated: a retransmitted
    /// MM1 maps to the same SA without a lookup table.
    pub(super) fn responder_cookie(
        &self,
        from: SocketAddr,
        cky_i: &[u8; 8],
    ) -> Result<[u8; 8], IkeError> {
        let secret = self.cookie_secret.as_ref().ok_or(IkeError::InvalidConfig)?;
        let prf = P::Prf::new(HashAlg::Sha256, secret.expose())?;
        let mut out = [0u8; hal_traits::MAX_HASH_LEN];
        let port = from.port().to_be_bytes();
        match from.ip() {
            IpAddr::V4(a) => prf.compute(&[&a.octets(), &port, cky_i], &mut out)?,
            IpAddr::V6(a) => prf.compute(&[&a.octets(), &port, cky_i], &mut out)?,
        };
        let mut c = [0u8; 8];
        c.copy_from_slice(out.get(..8).unwrap_or(&[1; 8]));
        if c == [0; 8] {
            c[7] = 1;
        }
        Ok(c)
    }

    pub(super) fn alloc_conn_id(&mut self) -> u32 {
        loop {
            let id = self.next_conn_id;
            self.next_conn_id = self.next_conn_id.wrapping_add(1).max(1);
            if !self.sas.iter().flatten().any(|s| s.conn_id == id) {
                return id;
            }
        }
    }

    /// A fresh SPI (>= 256), unused by any child or Quick Mode in flight.
    pub(super) fn alloc_spi<R: SecureRng>(&self, rng: &mut R) -> Result<u32, IkeError> {
        super::sa::random_u32(rng, 256, |v| {
            self.children.iter().any(|c| c.inbound.spi == v)
                || self
                    .sas
                    .iter()
                    .flatten()
                    .any(|sa| sa.qm.iter().flatten().any(|q| q.spi_in == v))
        })
    }

    /// Removes the children `which` selects, emitting `ChildSaDeleted`.
    pub(super) fn remove_children(
        &mut self,
        which: impl Fn(&ChildRecord) -> bool,
        reason: DeleteReason,
    ) {
        let mut k = 0;
        while let Some(c) = self.children.get(k) {
            if which(c) {
                let c = self.children.swap_remove(k);
                emit(
                    &mut self.events,
                    &mut self.counters,
                    Queued::ChildDeleted {
                        crypto_map: c.crypto_map,
                        inbound_spi: c.inbound.spi,
                        outbound_spi: c.outbound.spi,
                        reason,
                    },
                );
            } else {
                k += 1;
            }
        }
    }

    /// A phase-1 negotiation failed: events, peer failover, slot freed.
    pub(super) fn fail_phase1<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        i: usize,
        reason: FailReason,
    ) {
        let Some(Some(sa)) = self.sas.get_mut(i) else {
            return;
        };
        let peer = sa.remote;
        let role = sa.role;
        let pending = sa.pending.clone();
        let map = sa.crypto_map;
        let attempts = sa.attempts_left;
        if let Some(s) = self.sas.get_mut(i) {
            *s = None;
        }
        if pending.is_empty() {
            emit(
                &mut self.events,
                &mut self.counters,
                Queued::Failed {
                    crypto_map: map,
                    peer,
                    reason,
                },
            );
            if let (Role::Initiator, Some(m)) = (role, map) {
                let req = QmRequest {
                    crypto_map: m,
                    replaces: None,
                    attempts_left: attempts,
                    selector: None,
                };
                // A failed phase-1 rekey does not move the entry to another peer.
                if attempts > 0 {
                    self.failover(now, rng, req, peer.ip());
                }
            }
        }
        for req in pending {
            emit(
                &mut self.events,
                &mut self.counters,
                Queued::Failed {
                    crypto_map: Some(req.crypto_map),
                    peer,
                    reason,
                },
            );
            if role == Role::Initiator {
                self.failover(now, rng, req, peer.ip());
            }
        }
    }

    /// Moves crypto map entry `req.crypto_map` from `failed` to its next peer and, if
    /// attempts are left in this round, tries it.
    pub(super) fn failover<R: SecureRng>(
        &mut self,
        now: Instant,
        rng: &mut R,
        req: QmRequest,
        failed: IpAddr,
    ) {
        let Some(pos) = self
            .config
            .crypto_maps
            .iter()
            .position(|m| m.seq == req.crypto_map)
        else {
            return;
        };
        let Some(entry) = self.config.crypto_maps.get(pos) else {
            return;
        };
        let n = entry.peers.len();
        if n < 2 || entry.dynamic {
            return;
        }
        let Some(cur) = self.peer_index.get_mut(pos) else {
            return;
        };
        let idx = usize::from(*cur) % n;
        if entry.peers.get(idx) != Some(&failed) {
            return; // already moved on
        }
        let next = (idx + 1) % n;
        *cur = u8::try_from(next).unwrap_or(0);
        let Some(&to) = entry.peers.get(next) else {
            return;
        };
        emit(
            &mut self.events,
            &mut self.counters,
            Queued::PeerChanged {
                crypto_map: req.crypto_map,
                from: failed,
                to,
            },
        );
        if req.attempts_left > 0 {
            let next_req = QmRequest {
                attempts_left: req.attempts_left - 1,
                ..req
            };
            if self.initiate_req(now, rng, next_req, None).is_err() {
                emit(
                    &mut self.events,
                    &mut self.counters,
                    Queued::Failed {
                        crypto_map: Some(req.crypto_map),
                        peer: SocketAddr::new(to, self.config.ike_port),
                        reason: FailReason::Resources,
                    },
                );
            }
        }
    }

    /// Phase-1 lifetime over: DELETE it (the children survive, IKEv1 style, and move to
    /// a newer IKE SA with the peer if there is one).
    pub(super) fn expire_phase1<R: SecureRng>(&mut self, rng: &mut R, i: usize) {
        let Ok(sa) = self.sa_ref(i) else { return };
        let (conn_id, peer) = (sa.conn_id, sa.remote);
        let _ = self.send_delete_isakmp(rng, i);
        if let Some(s) = self.sas.get_mut(i) {
            *s = None;
        }
        self.dpd_gc(peer.ip());
        self.reparent(conn_id, peer.ip());
        emit(
            &mut self.events,
            &mut self.counters,
            Queued::Phase1Deleted {
                conn_id,
                peer,
                reason: DeleteReason::Expired,
            },
        );
    }

    /// IKE SA `conn_id` is gone: its children (which survive, IKEv1 style) now belong to
    /// the newest established IKE SA with the peer, if any.
    pub(super) fn reparent(&mut self, conn_id: u32, peer: IpAddr) {
        let Some(j) = self.established_to(peer, None) else {
            return;
        };
        let Ok(new) = self.sa_ref(j).map(|s| s.conn_id) else {
            return;
        };
        for c in self.children.iter_mut().filter(|c| c.conn_id == conn_id) {
            c.conn_id = new;
        }
    }

    /// Queues a ready-made one-shot datagram.
    pub(super) fn queue_oneshot(&mut self, o: OneShot) {
        if self.out.push_back(o).is_err() {
            self.counters.tx_dropped += 1;
        }
    }

    /// Starts queued Quick Modes on established SA `i` while slots are free.
    pub(super) fn drain_pending<R: SecureRng>(&mut self, now: Instant, rng: &mut R, i: usize) {
        loop {
            let Ok(sa) = self.sa_mut(i) else { return };
            if !sa.is_established()
                || !sa
                    .qm
                    .iter()
                    .any(|q| q.as_ref().is_none_or(|q| q.state == QmState::Done))
            {
                return;
            }
            if sa.pending.is_empty() {
                return;
            }
            let req = sa.pending.remove(0);
            if let Err(e) = self.start_qm(now, rng, i, req) {
                let peer = self.sa_ref(i).map(|s| s.remote).unwrap_or(SocketAddr::new(
                    self.config.local_addr,
                    self.config.ike_port,
                ));
                let reason = match e {
                    IkeError::Crypto(_) => FailReason::Crypto,
                    _ => FailReason::Resources,
                };
                emit(
                    &mut self.events,
                    &mut self.counters,
                    Queued::Failed {
                        crypto_map: Some(req.crypto_map),
                        peer,
                        reason,
                    },
                );
            }
        }
    }

    /// Handles INITIAL-CONTACT received on SA `i`: every older SA with the peer is
    /// stale (it rebooted). Nothing is sent for them.
    pub(super) fn initial_contact(&mut self, i: usize) {
        let Ok(sa) = self.sa_ref(i) else { return };
        let (peer, me) = (sa.remote.ip(), sa.conn_id);
        for k in 0..SAS {
            if k == i {
                continue;
            }
            let Some(Some(s)) = self.sas.get(k) else {
                continue;
            };
            if s.remote.ip() != peer || !s.is_established() {
                continue;
            }
            let (conn_id, speer) = (s.conn_id, s.remote);
            if let Some(s) = self.sas.get_mut(k) {
                *s = None;
            }
            emit(
                &mut self.events,
                &mut self.counters,
                Queued::Phase1Deleted {
                    conn_id,
                    peer: speer,
                    reason: DeleteReason::InitialContact,
                },
            );
        }
        self.remove_children(
            |c| c.peer.ip() == peer && c.conn_id != me,
            DeleteReason::InitialContact,
        );
    }

    /// Whether we hold any SA (IKE or child) with `peer` (INITIAL-CONTACT is sent only
    /// when not).
    pub(super) fn has_state_with(&self, peer: IpAddr) -> bool {
        self.sas
            .iter()
            .flatten()
            .any(|s| s.remote.ip() == peer && s.is_established())
            || self.children.iter().any(|c| c.peer.ip() == peer)
    }

    /// Number of half-open SAs (phase 1 not done) in total and with `peer`.
    pub(super) fn half_open(&self, peer: IpAddr) -> (usize, usize) {
        let mut total = 0;
        let mut per = 0;
        for sa in self.sas.iter().flatten() {
            if !sa.is_established() && sa.role == Role::Responder {
                total += 1;
                if sa.remote.ip() == peer {
                    per += 1;
                }
            }
        }
        (total, per)
    }
}

/// Writes one datagram (marker on the NAT-T port) into `buf`.
fn write_out(
    buf: &mut [u8],
    natt: u16,
    src: SocketAddr,
    dst: SocketAddr,
    msg: &[u8],
) -> Option<Transmit> {
    let mut len = 0;
    if src.port() == natt {
        buf.get_mut(..4)?.fill(0);
        len = 4;
    }
    buf.get_mut(len..len + msg.len())?.copy_from_slice(msg);
    Some(Transmit {
        src,
        dst,
        len: len + msg.len(),
    })
}

/// What [`Ike::keylog_phase1`] returns: secret, for key logs only.
pub struct KeyLogPhase1<'a> {
    /// The initiator cookie.
    pub cky_i: [u8; 8],
    /// The responder cookie.
    pub cky_r: [u8; 8],
    /// SKEYID_d (keys child SAs).
    pub skeyid_d: &'a [u8],
    /// SKEYID_a (authenticates IKE messages).
    pub skeyid_a: &'a [u8],
    /// SKEYID_e (encrypts IKE messages).
    pub skeyid_e: &'a [u8],
}

impl core::fmt::Debug for KeyLogPhase1<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyLogPhase1").finish_non_exhaustive()
    }
}
