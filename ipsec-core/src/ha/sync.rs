//! Stateful failover: the Active node streams its SADB to the Standby so that the Standby
//! can take over the IPsec SAs without the peers renegotiating.
//!
//! # What flows
//!
//! * When the Standby (re)joins (a new channel session, [`HaSync::peer_up`]), or asks
//!   ([`Record::SnapshotRequest`]), the Active sends a **full snapshot**:
//!   `SnapshotBegin`, every SA pair and IKE SA in full, `SnapshotEnd`. The Standby drops
//!   whatever the snapshot did not refresh.
//! * **Incremental updates** afterwards: a new pair in full as soon as it is installed
//!   ([`HaSync::sa_installed`], with the keys the control plane got from IKE), a delete
//!   when it goes ([`HaSync::sa_removed`]), and counter updates at the **replay interval**
//!   (`crypto map vpn ha replay-interval inbound M outbound N`): the outbound sequence
//!   counter when it moved by `N` packets since last sent, the inbound replay window when
//!   its top moved by `M`. Counters are *checked on a tick* ([`HaSync::tick`], e.g. every
//!   10-100 ms), never per packet: the data path is untouched. KB-lifetime byte counts and
//!   the age ride along at most every `lifetime_interval`.
//!
//! # Takeover
//!
//! [`HaSync::activate`] installs every received pair into the data plane, with:
//!
//! * the outbound counter moved to `synced + N + seq_margin`: never below any number the
//!   old Active used, so no sequence number (and no GCM nonce) is ever reused;
//! * the inbound window's top moved to `synced + M + window_margin` with every number at
//!   or below it marked as seen: no packet the old Active accepted can be replayed. The
//!   price is that the peer's genuinely new packets numbered below the new top are
//!   dropped (at most `M + window_margin` per SA);
//! * the lifetimes shortened by the age and the bytes already used.
//!
//! The guarantee holds while the counters' lag at the instant the Active died was at most
//! `interval + margin`. The lag is at most `interval - 1`, plus the packets one SA
//! carries between two ticks, plus those carried while an update was in flight
//! (unacknowledged when the Active died): size the margins as "packets per SA per tick
//! interval, plus per retransmission timeout". Skipping outbound numbers costs nothing,
//! so `seq_margin` can be generous; `window_margin` costs dropped packets.
//!
//! # Graceful handover: no margins
//!
//! The margins pay for not knowing how far the Active got. When the Active resigns on
//! purpose it can say so: [`HaSync::hand_over`] reads the final counters from the data
//! plane and takes the pairs out of it (so that no sequence number is used and no packet
//! accepted after that point), queues every pair's final counters, and after them a
//! [`Record::Handover`] whose [`HandoverMarker`] is a digest of exactly that state. The
//! node is Standby from then on; the host sends the messages, waits for their
//! acknowledgement, and then resigns in the redundancy protocol.
//!
//! The Standby keeps the marker until the next record: any later record (a new snapshot,
//! an update, a delete) means the sender did not stop, and the marker is dropped
//! ([`SyncCounters::handovers_superseded`]). The channel delivers in order, so a marker
//! that arrives after a complete snapshot (none half-applied) comes after every record it
//! vouches for. At [`HaSync::activate`] the Standby also compares the marker with the
//! digest of what it holds ([`state_digest`]), which catches a missing or reordered record
//! on any other transport. If all of that holds, every pair is installed with
//! its outbound counter exactly where the old Active stopped (its next packet carries the
//! next number) and its inbound window exactly as the old Active left it: no number
//! reused, no accepted packet accepted again, no genuine packet refused
//! ([`TakeoverKind::Exact`]). A pair whose window does not have the shape of the rebuilt
//! SA's (another size or bitmap width) still gets the margins. With no marker (a crash,
//! a lost marker, an older peer: [`TakeoverKind::Failover`]) or one that does not match
//! (a missing or reordered record: [`TakeoverKind::Unverified`],
//! [`SyncCounters::handovers_unverified`]) every pair gets the margins, as above.
//!
//! # Split brain
//!
//! A node demoted by the redundancy protocol calls [`HaSync::deactivate`]: its SAs leave
//! its data plane (their last counters kept) and it asks the winner for a fresh
//! snapshot. A node only applies records while Standby.

use core::fmt;

use hal_traits::CryptoProvider;
use heapless::{Deque, Vec};
use zeroize::Zeroize;

use super::HaRole;
use super::channel::SyncChannel;
use super::record::{
    HandoverMarker, IkeSaRecord, MAX_IKE_BODY, Reader, Record, RecordError, SaPairRecord,
    SaProgress, SaUpdate, Writer, state_digest, update_flags,
};
use crate::dataplane::{Dataplane, DataplaneError};
use crate::esp::{EspError, EspSa};
use crate::lifetime::LifetimeConfig;
use crate::replay::ReplaySnapshot;
use crate::sadb::SaHandle;
use crate::time::{Duration, Instant};

/// `crypto map ... ha replay-interval inbound M outbound N`, in packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReplayInterval {
    /// Sync the inbound replay window when its top moved by this many packets.
    pub inbound: u32,
    /// Sync the outbound sequence counter when it moved by this many packets.
    pub outbound: u32,
}

impl Default for ReplayInterval {
    /// `inbound 100 outbound 1`, the values of the chapter's example.
    fn default() -> Self {
        Self {
            inbound: 100,
            outbound: 1,
        }
    }
}

/// Replication policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SyncConfig {
    /// The replay interval.
    pub replay: ReplayInterval,
    /// Extra outbound sequence numbers skipped at takeover (see the [module docs](self)).
    pub seq_margin: u64,
    /// Extra inbound window advance at takeover.
    pub window_margin: u64,
    /// Byte counts and age are refreshed at most this often per pair.
    pub lifetime_interval: Duration,
}

impl Default for SyncConfig {
    /// The default replay interval, margins of 64 and 32 packets, 10 s lifetime refresh.
    fn default() -> Self {
        Self {
            replay: ReplayInterval::default(),
            seq_margin: 64,
            window_margin: 32,
            lifetime_interval: Duration::from_secs(10),
        }
    }
}

impl SyncConfig {
    /// How far a takeover moves every outbound counter beyond the last synced value.
    #[must_use]
    pub fn seq_advance(&self) -> u64 {
        u64::from(self.replay.outbound.max(1)).saturating_add(self.seq_margin)
    }

    /// How far a takeover moves every inbound window's top beyond the last synced value.
    #[must_use]
    pub fn window_advance(&self) -> u64 {
        u64::from(self.replay.inbound.max(1)).saturating_add(self.window_margin)
    }
}

/// Why a sync operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SyncError {
    /// The table is full.
    Full,
    /// A pair with this inbound SPI is already known.
    Duplicate,
    /// Only the Active node does this.
    NotActive,
    /// There is no connected peer to hand over to.
    NotConnected,
    /// A record could not be encoded or decoded.
    Record(RecordError),
    /// Installing into the data plane failed.
    Install(DataplaneError),
    /// Rebuilding an SA failed.
    Esp(EspError),
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full => f.write_str("HA sync table full"),
            Self::Duplicate => f.write_str("SA pair already synchronised"),
            Self::NotActive => f.write_str("not the Active node"),
            Self::NotConnected => f.write_str("no connected HA peer"),
            Self::Record(e) => write!(f, "{e}"),
            Self::Install(e) => write!(f, "takeover install: {e}"),
            Self::Esp(e) => write!(f, "takeover SA: {e}"),
        }
    }
}

impl core::error::Error for SyncError {}

impl From<RecordError> for SyncError {
    fn from(e: RecordError) -> Self {
        Self::Record(e)
    }
}

/// How a takeover set the counters (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TakeoverKind {
    /// No handover marker (the Active failed, its marker was lost, or it does not send
    /// one): every pair with the margins.
    #[default]
    Failover,
    /// A graceful handover whose marker matched the state held: the exact counters.
    Exact,
    /// A handover marker arrived but the state held did not match it (or no complete
    /// snapshot was held): every pair with the margins.
    Unverified,
}

impl fmt::Display for TakeoverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Failover => "failover",
            Self::Exact => "exact handover",
            Self::Unverified => "unverified handover",
        })
    }
}

/// What a takeover did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TakeoverReport {
    /// Pairs installed into the data plane.
    pub pairs: usize,
    /// Pairs that could not be rebuilt or installed (kept, not installed).
    pub failed: usize,
    /// Failover, or a graceful handover (verified or not).
    pub kind: TakeoverKind,
    /// Pairs installed with their exact final counters (only with [`TakeoverKind::Exact`]).
    pub exact: usize,
    /// Outbound sequence numbers skipped beyond the last synced value, per SA taken over
    /// with margins (0 if every pair was exact).
    pub seq_advance: u64,
    /// Inbound window advance beyond the last synced top, per SA taken over with margins
    /// (0 if every pair was exact).
    pub window_advance: u64,
}

/// Sync counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SyncCounters {
    /// Sync messages handed to the channel.
    pub messages_sent: u64,
    /// Payload bytes handed to the channel.
    pub payload_bytes_sent: u64,
    /// Full pair records sent.
    pub pairs_sent: u64,
    /// Update records sent.
    pub updates_sent: u64,
    /// Delete records sent.
    pub deletes_sent: u64,
    /// Snapshots started.
    pub snapshots_sent: u64,
    /// Records applied (Standby).
    pub records_applied: u64,
    /// Records ignored (received while Active, unknown pair, table full).
    pub records_ignored: u64,
    /// Snapshots completed (Standby).
    pub snapshots_received: u64,
    /// Handover markers sent (resigning Active).
    pub handovers_sent: u64,
    /// Handover markers received (Standby).
    pub handovers_received: u64,
    /// Handover markers dropped because another record followed them.
    pub handovers_superseded: u64,
    /// Takeovers after a handover marker that did not match the state held (margins).
    pub handovers_unverified: u64,
    /// Takeovers with the exact counters of a handover.
    pub exact_takeovers: u64,
}

const FULL: u8 = 0x80;

#[derive(Clone, Debug)]
struct Entry<const W: usize> {
    rec: SaPairRecord<W>,
    handles: Option<(SaHandle, SaHandle)>,
    /// Active: what was last sent.
    sent: SaProgress<W>,
    /// When `rec.progress.age` was true (local clock).
    age_at: Instant,
    last_lifetime: Instant,
    flags: u8,
    stale: bool,
}

/// An exported IKE SA (`Ike::export_sa`): it carries SKEYID_d/a/e and the phase-1 IV,
/// so it is wiped when replaced or dropped and never printed.
struct IkeBody(Vec<u8, MAX_IKE_BODY>);

impl IkeBody {
    fn from_slice(b: &[u8]) -> Option<Self> {
        let mut v = Vec::new();
        v.extend_from_slice(b).ok()?;
        Some(Self(v))
    }
}

impl Drop for IkeBody {
    fn drop(&mut self) {
        self.0.as_mut_slice().zeroize();
    }
}

impl core::ops::Deref for IkeBody {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

struct IkeEntry {
    cookies: [u8; 16],
    body: IkeBody,
    dirty: bool,
    stale: bool,
}

impl fmt::Debug for IkeEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IkeEntry")
            .field("cookies", &self.cookies)
            .field("body_len", &self.body.len())
            .field("dirty", &self.dirty)
            .field("stale", &self.stale)
            .finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delete {
    Sa(u32),
    Ike([u8; 16]),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Snapshot {
    Idle,
    Begin(u32),
    Sending(u32),
}

/// The SADB replication of one node (see the [module docs](self)).
///
/// `SAS` pairs, `IKE` IKE SA records, replay bitmaps of `W` words (as the data plane's).
pub struct HaSync<const SAS: usize, const IKE: usize = 0, const W: usize = 2> {
    cfg: SyncConfig,
    role: HaRole,
    since: Instant,
    entries: Vec<Entry<W>, SAS>,
    ike: Vec<IkeEntry, IKE>,
    deletes: Deque<Delete, SAS>,
    connected: bool,
    snapshot: Snapshot,
    generation: u32,
    receiving: Option<u32>,
    request_snapshot: bool,
    in_sync: bool,
    last_sync: Option<Instant>,
    /// Resigning: the marker still to be sent after everything else.
    resigning: Option<HandoverMarker>,
    /// Standby: the marker of a resigning Active, until another record arrives, and
    /// whether a complete snapshot was held when it arrived.
    handover: Option<(HandoverMarker, bool)>,
    counters: SyncCounters,
}

impl<const SAS: usize, const IKE: usize, const W: usize> fmt::Debug for HaSync<SAS, IKE, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HaSync")
            .field("role", &self.role)
            .field("pairs", &self.entries.len())
            .field("ike", &self.ike.len())
            .field("connected", &self.connected)
            .field("in_sync", &self.in_sync)
            .finish_non_exhaustive()
    }
}

fn sub(d: Duration, by: Duration) -> Duration {
    Duration::from_millis(d.as_millis().saturating_sub(by.as_millis()))
}

/// The lifetime limits left after `age` and `bytes`.
fn remaining(l: &LifetimeConfig, age: Duration, bytes: u64) -> LifetimeConfig {
    LifetimeConfig {
        soft_time: l.soft_time.map(|t| sub(t, age)),
        hard_time: l.hard_time.map(|t| sub(t, age)),
        soft_bytes: l.soft_bytes.map(|b| b.saturating_sub(bytes)),
        hard_bytes: l.hard_bytes.map(|b| b.saturating_sub(bytes)),
    }
}

impl<const SAS: usize, const IKE: usize, const W: usize> HaSync<SAS, IKE, W> {
    /// A node in `role` with nothing to sync. A Standby starts out of sync.
    #[must_use]
    pub const fn new(cfg: SyncConfig, role: HaRole, now: Instant) -> Self {
        Self {
            cfg,
            role,
            since: now,
            entries: Vec::new(),
            ike: Vec::new(),
            deletes: Deque::new(),
            connected: false,
            snapshot: Snapshot::Idle,
            generation: 0,
            receiving: None,
            request_snapshot: false,
            in_sync: false,
            last_sync: None,
            resigning: None,
            handover: None,
            counters: SyncCounters {
                messages_sent: 0,
                payload_bytes_sent: 0,
                pairs_sent: 0,
                updates_sent: 0,
                deletes_sent: 0,
                snapshots_sent: 0,
                records_applied: 0,
                records_ignored: 0,
                snapshots_received: 0,
                handovers_sent: 0,
                handovers_received: 0,
                handovers_superseded: 0,
                handovers_unverified: 0,
                exact_takeovers: 0,
            },
        }
    }

    /// The configuration.
    #[must_use]
    pub const fn config(&self) -> &SyncConfig {
        &self.cfg
    }

    /// The role.
    #[must_use]
    pub const fn role(&self) -> HaRole {
        self.role
    }

    /// When the role was entered.
    #[must_use]
    pub const fn since(&self) -> Instant {
        self.since
    }

    /// The counters.
    #[must_use]
    pub const fn counters(&self) -> &SyncCounters {
        &self.counters
    }

    /// Number of SA pairs held (Active: being replicated; Standby: received).
    #[must_use]
    pub fn pair_count(&self) -> usize {
        self.entries.len()
    }

    /// Number of IKE SA records held.
    #[must_use]
    pub fn ike_count(&self) -> usize {
        self.ike.len()
    }

    /// Whether the peer is connected (as told by [`HaSync::peer_up`] / `peer_lost`).
    #[must_use]
    pub const fn is_connected(&self) -> bool {
        self.connected
    }

    /// Standby: a full snapshot was received and applied since joining. Active: the last
    /// snapshot was completely handed to the channel.
    #[must_use]
    pub const fn in_sync(&self) -> bool {
        self.in_sync
    }

    /// When sync data was last sent (Active) or applied (Standby).
    #[must_use]
    pub const fn last_sync(&self) -> Option<Instant> {
        self.last_sync
    }

    /// A resigning node still has its handover marker to send (see [`HaSync::hand_over`]).
    #[must_use]
    pub const fn handover_pending(&self) -> bool {
        self.resigning.is_some()
    }

    /// Standby: the handover marker received from a resigning Active, if no record
    /// followed it.
    #[must_use]
    pub fn handover_marker(&self) -> Option<HandoverMarker> {
        self.handover.map(|(m, _)| m)
    }

    /// The pairs held, with their last known progress.
    pub fn pairs(&self) -> impl Iterator<Item = &SaPairRecord<W>> + '_ {
        self.entries.iter().map(|e| &e.rec)
    }

    /// The pair with inbound SPI `inbound_spi`.
    #[must_use]
    pub fn pair(&self, inbound_spi: u32) -> Option<&SaPairRecord<W>> {
        self.entries
            .iter()
            .find(|e| e.rec.id() == inbound_spi)
            .map(|e| &e.rec)
    }

    /// The data plane handles of a pair installed on this node.
    #[must_use]
    pub fn handles(&self, inbound_spi: u32) -> Option<(SaHandle, SaHandle)> {
        self.entries
            .iter()
            .find(|e| e.rec.id() == inbound_spi)
            .and_then(|e| e.handles)
    }

    /// The IKE SA records held, for `ipsec-ike` to import at takeover.
    pub fn ike_records(&self) -> impl Iterator<Item = IkeSaRecord<'_>> + '_ {
        self.ike.iter().map(|e| IkeSaRecord {
            cookies: e.cookies,
            body: &e.body,
        })
    }

    fn index(&self, id: u32) -> Option<usize> {
        self.entries.iter().position(|e| e.rec.id() == id)
    }

    fn start_snapshot(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.snapshot = Snapshot::Begin(self.generation);
        self.in_sync = false;
        self.deletes.clear();
        for e in &mut self.entries {
            e.flags = FULL;
        }
        for i in &mut self.ike {
            i.dirty = true;
        }
        self.counters.snapshots_sent = self.counters.snapshots_sent.saturating_add(1);
    }

    /// The channel established a session with the peer (its `PeerUp` event). The Active
    /// node starts a full snapshot.
    pub fn peer_up(&mut self) {
        self.connected = true;
        if self.role == HaRole::Active {
            self.start_snapshot();
        }
    }

    /// The channel lost the peer. Pending changes are dropped: the next session starts
    /// with a full snapshot.
    pub fn peer_lost(&mut self) {
        self.connected = false;
        self.snapshot = Snapshot::Idle;
        self.deletes.clear();
        // Whatever was not handed to the channel is lost with the session, so the marker
        // could no longer vouch for it: the standby takes over with margins.
        self.resigning = None;
        for e in &mut self.entries {
            e.flags = 0;
        }
        if self.role == HaRole::Standby {
            self.in_sync = false;
        }
        // A received handover marker stays: a resigned Active goes quiet, so its channel
        // may well be declared dead before the redundancy protocol hands over, and the
        // marker only vouches for state already applied.
    }

    /// Active: an SA pair was installed. `record` carries the configurations and the
    /// keys as IKE delivered them (`ChildSa::inbound`/`outbound` and
    /// `inbound_keys()`/`outbound_keys()`), and its progress (normally
    /// [`SaProgress::fresh`]); `handles` are the data plane's, for [`HaSync::tick`].
    ///
    /// # Errors
    /// [`SyncError::NotActive`], [`SyncError::Duplicate`], [`SyncError::Full`].
    pub fn sa_installed(
        &mut self,
        now: Instant,
        record: SaPairRecord<W>,
        handles: Option<(SaHandle, SaHandle)>,
    ) -> Result<(), SyncError> {
        if self.role != HaRole::Active {
            return Err(SyncError::NotActive);
        }
        if self.index(record.id()).is_some() {
            return Err(SyncError::Duplicate);
        }
        let sent = record.progress;
        self.entries
            .push(Entry {
                rec: record,
                handles,
                sent,
                age_at: now,
                last_lifetime: now,
                flags: if self.connected { FULL } else { 0 },
                stale: false,
            })
            .map_err(|_| SyncError::Full)
    }

    /// An SA pair is gone (DELETE, idle timeout, expiry): the standby forgets it too.
    /// Returns whether it was known.
    pub fn sa_removed(&mut self, inbound_spi: u32) -> bool {
        let Some(i) = self.index(inbound_spi) else {
            return false;
        };
        self.entries.swap_remove(i);
        if self.role == HaRole::Active && self.connected {
            self.queue_delete(Delete::Sa(inbound_spi));
        }
        true
    }

    fn queue_delete(&mut self, d: Delete) {
        if self.deletes.push_back(d).is_err() {
            // More deletes than the queue holds: a snapshot says it all.
            self.start_snapshot();
        }
    }

    /// Active: an IKE SA's exported state changed (new, rekeyed, DPD sequence moved).
    ///
    /// # Errors
    /// [`SyncError::NotActive`], [`SyncError::Full`], [`SyncError::Record`] for a body
    /// over [`MAX_IKE_BODY`].
    pub fn ike_updated(&mut self, cookies: [u8; 16], body: &[u8]) -> Result<(), SyncError> {
        if self.role != HaRole::Active {
            return Err(SyncError::NotActive);
        }
        let v = IkeBody::from_slice(body).ok_or(SyncError::Record(RecordError::Malformed))?;
        let dirty = self.connected;
        if let Some(e) = self.ike.iter_mut().find(|e| e.cookies == cookies) {
            e.body = v;
            e.dirty = dirty;
            return Ok(());
        }
        self.ike
            .push(IkeEntry {
                cookies,
                body: v,
                dirty,
                stale: false,
            })
            .map_err(|_| SyncError::Full)
    }

    /// An IKE SA is gone. Returns whether it was known.
    pub fn ike_removed(&mut self, cookies: [u8; 16]) -> bool {
        let Some(i) = self.ike.iter().position(|e| e.cookies == cookies) else {
            return false;
        };
        self.ike.swap_remove(i);
        if self.role == HaRole::Active && self.connected {
            self.queue_delete(Delete::Ike(cookies));
        }
        true
    }

    /// Active: reads the counters of every installed pair from the data plane and marks
    /// what the replay interval says must be sent. Call on a periodic tick (its cost is
    /// one pass over the pairs; the data path is not involved). Pairs whose SAs have left
    /// the data plane are treated as removed.
    pub fn tick<
        P: CryptoProvider,
        const DSAS: usize,
        const POL: usize,
        const F: usize,
        const FS: usize,
        const FL: usize,
    >(
        &mut self,
        now: Instant,
        dp: &Dataplane<P, DSAS, POL, W, F, FS, FL>,
    ) {
        if self.role != HaRole::Active {
            return;
        }
        // Pairs whose SAs left the data plane behind our back are gone.
        let mut i = 0;
        while let Some(e) = self.entries.get(i) {
            let gone = e.handles.is_some_and(|(hi, ho)| {
                dp.inbound_sa(hi).is_none() || dp.outbound_sa(ho).is_none()
            });
            if gone {
                let id = e.rec.id();
                self.sa_removed(id);
            } else {
                i += 1;
            }
        }
        self.observe(now, |_, h| {
            let (hi, ho) = h?;
            Some(progress_of(now, dp.inbound_sa(hi)?, dp.outbound_sa(ho)?))
        });
    }

    /// Active: the counters of one pair, for hosts that do not use [`Dataplane`]. Marks
    /// what must be sent. Returns whether the pair is known. (O(pairs): for many pairs
    /// per tick use [`HaSync::observe`].)
    pub fn note_progress(&mut self, now: Instant, inbound_spi: u32, p: SaProgress<W>) -> bool {
        let mut found = false;
        self.observe(now, |spi, _| {
            if spi == inbound_spi {
                found = true;
                Some(p)
            } else {
                None
            }
        });
        found
    }

    /// Active: one pass over the pairs; `progress(inbound_spi, handles)` returns the
    /// current counters of a pair (or `None` if unchanged or unknown), and what the replay
    /// interval says must be sent is marked. The cost is O(pairs) per call.
    pub fn observe(
        &mut self,
        now: Instant,
        mut progress: impl FnMut(u32, Option<(SaHandle, SaHandle)>) -> Option<SaProgress<W>>,
    ) {
        let n = u64::from(self.cfg.replay.outbound.max(1));
        let m = u64::from(self.cfg.replay.inbound.max(1));
        let connected = self.connected && self.role == HaRole::Active;
        let lifetime_interval = self.cfg.lifetime_interval;
        for e in &mut self.entries {
            let Some(p) = progress(e.rec.id(), e.handles) else {
                continue;
            };
            e.rec.progress = p;
            e.age_at = now;
            if !connected || e.flags & FULL != 0 {
                continue;
            }
            if p.out_next_seq >= e.sent.out_next_seq.saturating_add(n) {
                e.flags |= update_flags::OUT_SEQ;
            }
            if p.in_window.top >= e.sent.in_window.top.saturating_add(m) {
                e.flags |= update_flags::IN_WINDOW;
            }
            if now >= e.last_lifetime + lifetime_interval
                && (p.in_bytes != e.sent.in_bytes || p.out_bytes != e.sent.out_bytes)
            {
                e.flags |= update_flags::LIFETIME;
            }
        }
    }

    /// Hands as many sync messages to `channel` as it takes (its queue room), each packed
    /// with records: snapshot markers, deletes, IKE SAs, new pairs, updates. Returns the
    /// number of messages queued. Call after every input and tick; then drain the
    /// channel's `poll_transmit`.
    pub fn poll_send<P: CryptoProvider, const Q: usize, const MTU: usize>(
        &mut self,
        now: Instant,
        channel: &mut SyncChannel<P, Q, MTU>,
    ) -> usize {
        let mut sent = 0;
        while channel.is_connected() && channel.queue_room() > 0 {
            let mut buf = [0u8; MTU];
            let cap = channel.max_payload().min(MTU);
            let Some(dst) = buf.get_mut(..cap) else { break };
            let n = self.fill(dst);
            if n == 0 {
                break;
            }
            let Some(payload) = buf.get(..n) else { break };
            if channel.send(payload).is_err() {
                // Cannot happen (room and size were checked); resynchronise fully.
                self.start_snapshot();
                break;
            }
            self.counters.messages_sent = self.counters.messages_sent.saturating_add(1);
            self.counters.payload_bytes_sent = self
                .counters
                .payload_bytes_sent
                .saturating_add(u64::try_from(n).unwrap_or(0));
            self.last_sync = Some(now);
            sent += 1;
        }
        sent
    }

    /// Writes as many pending records as fit into `buf` and marks them sent. Returns the
    /// length written (0: nothing pending). [`HaSync::poll_send`] uses it; a host with its
    /// own transport may too.
    pub fn fill(&mut self, buf: &mut [u8]) -> usize {
        let mut w = Writer::new(buf);
        if self.role == HaRole::Standby && self.resigning.is_none() {
            if self.request_snapshot && w.record::<W>(&Record::SnapshotRequest).is_ok() {
                self.request_snapshot = false;
            }
            return w.len();
        }
        if !self.connected {
            return 0;
        }
        if let Snapshot::Begin(g) = self.snapshot {
            if w.record::<W>(&Record::SnapshotBegin { generation: g })
                .is_err()
            {
                return w.len();
            }
            self.snapshot = Snapshot::Sending(g);
        }
        while let Some(d) = self.deletes.front().copied() {
            let r: Record<'_, W> = match d {
                Delete::Sa(spi) => Record::SaDelete { inbound_spi: spi },
                Delete::Ike(cookies) => Record::IkeDelete { cookies },
            };
            if w.record(&r).is_err() {
                return w.len();
            }
            let _ = self.deletes.pop_front();
            self.counters.deletes_sent = self.counters.deletes_sent.saturating_add(1);
        }
        for e in self.ike.iter_mut().filter(|e| e.dirty) {
            let r: Record<'_, W> = Record::IkeSa(IkeSaRecord {
                cookies: e.cookies,
                body: &e.body,
            });
            if w.record(&r).is_err() {
                return w.len();
            }
            e.dirty = false;
        }
        for e in self.entries.iter_mut().filter(|e| e.flags & FULL != 0) {
            if w.record(&Record::SaPair(e.rec.clone())).is_err() {
                return w.len();
            }
            e.flags = 0;
            e.sent = e.rec.progress;
            e.last_lifetime = e.age_at;
            self.counters.pairs_sent = self.counters.pairs_sent.saturating_add(1);
        }
        for e in self.entries.iter_mut().filter(|e| e.flags != 0) {
            let u = SaUpdate {
                inbound_spi: e.rec.id(),
                flags: e.flags,
                progress: e.rec.progress,
            };
            if w.record(&Record::SaUpdate(u)).is_err() {
                return w.len();
            }
            if e.flags & update_flags::OUT_SEQ != 0 {
                e.sent.out_next_seq = u.progress.out_next_seq;
            }
            if e.flags & update_flags::IN_WINDOW != 0 {
                e.sent.in_window = u.progress.in_window;
            }
            if e.flags & update_flags::LIFETIME != 0 {
                e.sent.in_bytes = u.progress.in_bytes;
                e.sent.out_bytes = u.progress.out_bytes;
                e.sent.age = u.progress.age;
                e.last_lifetime = e.age_at;
            }
            e.flags = 0;
            self.counters.updates_sent = self.counters.updates_sent.saturating_add(1);
        }
        if let Snapshot::Sending(g) = self.snapshot {
            if w.record::<W>(&Record::SnapshotEnd { generation: g })
                .is_ok()
            {
                self.snapshot = Snapshot::Idle;
                self.in_sync = true;
            }
        }
        // The marker goes last, once everything it vouches for is in the channel before it.
        if let Some(m) = self.resigning {
            if self.snapshot == Snapshot::Idle && w.record::<W>(&Record::Handover(m)).is_ok() {
                self.resigning = None;
                self.in_sync = false;
                self.counters.handovers_sent = self.counters.handovers_sent.saturating_add(1);
            }
        }
        w.len()
    }

    /// Applies a sync message body received from the channel. Standby nodes apply
    /// everything; an Active node only honours a snapshot request.
    ///
    /// # Errors
    /// [`SyncError::Record`] for a malformed record: the records before it were applied,
    /// the rest of the message is ignored (the channel authenticated it, so this means a
    /// bug or a version mismatch, not an attack).
    pub fn handle_payload(&mut self, now: Instant, payload: &[u8]) -> Result<usize, SyncError> {
        let mut r = Reader::new(payload);
        let mut n = 0;
        while let Some(rec) = r.next_record::<W>()? {
            if self.apply(now, rec) {
                self.counters.records_applied = self.counters.records_applied.saturating_add(1);
                n += 1;
            } else {
                self.counters.records_ignored = self.counters.records_ignored.saturating_add(1);
            }
        }
        if n > 0 {
            self.last_sync = Some(now);
        }
        Ok(n)
    }

    fn apply(&mut self, now: Instant, rec: Record<'_, W>) -> bool {
        if self.role == HaRole::Active {
            if matches!(rec, Record::SnapshotRequest) && self.connected {
                self.start_snapshot();
                return true;
            }
            return false;
        }
        match rec {
            Record::SnapshotRequest => return false,
            Record::Handover(m) => {
                // The channel delivers in order: a snapshot completed before the marker
                // in this session means every record the marker vouches for was applied.
                self.handover = Some((m, self.in_sync && self.receiving.is_none()));
                self.counters.handovers_received =
                    self.counters.handovers_received.saturating_add(1);
                return true;
            }
            _ => {
                // The marker was meant to be the last word of a resigning Active.
                if self.handover.take().is_some() {
                    self.counters.handovers_superseded =
                        self.counters.handovers_superseded.saturating_add(1);
                }
            }
        }
        match rec {
            Record::SnapshotRequest | Record::Handover(_) => false,
            Record::SnapshotBegin { generation } => {
                self.receiving = Some(generation);
                self.in_sync = false;
                for e in &mut self.entries {
                    e.stale = true;
                }
                for i in &mut self.ike {
                    i.stale = true;
                }
                true
            }
            Record::SnapshotEnd { generation } => {
                if self.receiving != Some(generation) {
                    return false;
                }
                self.receiving = None;
                self.entries.retain(|e| !e.stale);
                self.ike.retain(|e| !e.stale);
                self.in_sync = true;
                self.counters.snapshots_received =
                    self.counters.snapshots_received.saturating_add(1);
                true
            }
            Record::SaPair(p) => {
                let sent = p.progress;
                let e = Entry {
                    rec: p,
                    handles: None,
                    sent,
                    age_at: now,
                    last_lifetime: now,
                    flags: 0,
                    stale: false,
                };
                if let Some(i) = self.index(e.rec.id()) {
                    if let Some(slot) = self.entries.get_mut(i) {
                        *slot = e;
                    }
                    true
                } else {
                    self.entries.push(e).is_ok()
                }
            }
            Record::SaUpdate(u) => {
                let Some(e) = self
                    .entries
                    .iter_mut()
                    .find(|e| e.rec.id() == u.inbound_spi)
                else {
                    return false;
                };
                let p = &mut e.rec.progress;
                if u.flags & update_flags::OUT_SEQ != 0 {
                    p.out_next_seq = p.out_next_seq.max(u.progress.out_next_seq);
                }
                if u.flags & update_flags::IN_WINDOW != 0
                    && u.progress.in_window.top >= p.in_window.top
                {
                    p.in_window = u.progress.in_window;
                }
                if u.flags & update_flags::LIFETIME != 0 {
                    p.in_bytes = p.in_bytes.max(u.progress.in_bytes);
                    p.out_bytes = p.out_bytes.max(u.progress.out_bytes);
                    p.age = u.progress.age;
                    e.age_at = now;
                }
                true
            }
            Record::SaDelete { inbound_spi } => {
                if let Some(i) = self.index(inbound_spi) {
                    self.entries.swap_remove(i);
                    true
                } else {
                    false
                }
            }
            Record::IkeSa(r) => {
                let Some(body) = IkeBody::from_slice(r.body) else {
                    return false;
                };
                if let Some(e) = self.ike.iter_mut().find(|e| e.cookies == r.cookies) {
                    e.body = body;
                    e.stale = false;
                    true
                } else {
                    self.ike
                        .push(IkeEntry {
                            cookies: r.cookies,
                            body,
                            dirty: false,
                            stale: false,
                        })
                        .is_ok()
                }
            }
            Record::IkeDelete { cookies } => {
                let before = self.ike.len();
                self.ike.retain(|e| e.cookies != cookies);
                self.ike.len() != before
            }
        }
    }

    /// Standby -> Active: installs every received pair into `dp` (see the
    /// [module docs](self) for how counters and windows are moved) and becomes Active.
    /// Pairs that fail to rebuild or install are counted in the report and kept (they
    /// will be renegotiated by the peer). Starts a snapshot towards a connected peer.
    pub fn activate<
        P: CryptoProvider,
        const DSAS: usize,
        const POL: usize,
        const F: usize,
        const FS: usize,
        const FL: usize,
    >(
        &mut self,
        now: Instant,
        dp: &mut Dataplane<P, DSAS, POL, W, F, FS, FL>,
    ) -> TakeoverReport {
        let seq_advance = self.cfg.seq_advance();
        let window_advance = self.cfg.window_advance();
        let kind = match self.handover.take() {
            None => TakeoverKind::Failover,
            Some((m, complete)) if complete && self.verifies(m) => TakeoverKind::Exact,
            Some(_) => {
                self.counters.handovers_unverified =
                    self.counters.handovers_unverified.saturating_add(1);
                TakeoverKind::Unverified
            }
        };
        let mut report = TakeoverReport {
            kind,
            seq_advance,
            window_advance,
            ..TakeoverReport::default()
        };
        let exact = kind == TakeoverKind::Exact;
        for e in &mut self.entries {
            if e.handles.is_some() {
                continue;
            }
            match rebuild::<P, W>(now, e, seq_advance, window_advance, exact) {
                Ok((isa, osa, was_exact)) => match dp.install_pair(e.rec.sa_group, isa, osa) {
                    Ok(h) => {
                        e.handles = Some(h);
                        if let (Some(i), Some(o)) = (dp.inbound_sa(h.0), dp.outbound_sa(h.1)) {
                            e.rec.progress = progress_of(now, i, o);
                            e.sent = e.rec.progress;
                            e.age_at = now;
                        }
                        report.pairs += 1;
                        if was_exact {
                            report.exact += 1;
                        }
                    }
                    Err(_) => report.failed += 1,
                },
                Err(_) => report.failed += 1,
            }
        }
        if exact && report.exact == report.pairs {
            report.seq_advance = 0;
            report.window_advance = 0;
        }
        if exact {
            self.counters.exact_takeovers = self.counters.exact_takeovers.saturating_add(1);
        }
        self.resigning = None;
        self.role = HaRole::Active;
        self.since = now;
        self.receiving = None;
        if self.connected {
            self.start_snapshot();
        }
        report
    }

    /// Active -> Standby (the redundancy protocol demoted this node, e.g. the loser of a
    /// split brain): removes the replicated pairs from `dp`, keeping their last counters,
    /// and asks the peer for a snapshot. Returns the number of pairs removed.
    pub fn deactivate<
        P: CryptoProvider,
        const DSAS: usize,
        const POL: usize,
        const F: usize,
        const FS: usize,
        const FL: usize,
    >(
        &mut self,
        now: Instant,
        dp: &mut Dataplane<P, DSAS, POL, W, F, FS, FL>,
    ) -> usize {
        let n = self.withdraw(now, dp);
        for e in &mut self.entries {
            e.flags = 0;
        }
        self.role = HaRole::Standby;
        self.since = now;
        self.snapshot = Snapshot::Idle;
        self.deletes.clear();
        self.in_sync = false;
        self.request_snapshot = true;
        self.resigning = None;
        self.handover = None;
        n
    }

    /// Takes every installed pair out of `dp`, keeping its last counters in the record.
    /// Returns how many were removed.
    fn withdraw<
        P: CryptoProvider,
        const DSAS: usize,
        const POL: usize,
        const F: usize,
        const FS: usize,
        const FL: usize,
    >(
        &mut self,
        now: Instant,
        dp: &mut Dataplane<P, DSAS, POL, W, F, FS, FL>,
    ) -> usize {
        let mut n = 0;
        for e in &mut self.entries {
            if let Some((hi, ho)) = e.handles.take() {
                if let (Some(i), Some(o)) = (dp.inbound_sa(hi), dp.outbound_sa(ho)) {
                    e.rec.progress = progress_of(now, i, o);
                    e.age_at = now;
                }
                dp.remove_inbound(hi);
                dp.remove_outbound(ho);
                n += 1;
            }
        }
        n
    }

    /// Whether the pairs held are exactly what a resigning Active vouched for: none in
    /// the data plane yet, and the same digest over the same number of pairs.
    fn verifies(&self, m: HandoverMarker) -> bool {
        self.role == HaRole::Standby
            && self.entries.iter().all(|e| e.handles.is_none())
            && state_digest(self.entries.iter().map(|e| &e.rec)) == (m.pairs, m.digest)
    }

    /// Active -> Standby on purpose (a graceful shutdown with a connected peer): reads
    /// the final counters of every installed pair from `dp` and removes the pairs from
    /// it, so that from here on this node neither seals nor opens a packet with them;
    /// then queues those counters and, last, the [`Record::Handover`] marker that lets
    /// the peer take over without margins (see the [module docs](self)). The node is
    /// Standby on return; keep calling [`HaSync::poll_send`] (and draining the channel)
    /// until [`HaSync::handover_pending`] is false and the channel has nothing
    /// unacknowledged, then resign in the redundancy protocol. Returns the marker and the
    /// number of pairs taken out of `dp`.
    ///
    /// The host must not install new pairs or seal with other copies of these SAs after
    /// the call: the marker vouches that the counters it carries are final.
    ///
    /// # Errors
    /// [`SyncError::NotActive`], or [`SyncError::NotConnected`] (nobody to vouch to: use
    /// [`HaSync::deactivate`] or just stop). Nothing is changed then.
    pub fn hand_over<
        P: CryptoProvider,
        const DSAS: usize,
        const POL: usize,
        const F: usize,
        const FS: usize,
        const FL: usize,
    >(
        &mut self,
        now: Instant,
        dp: &mut Dataplane<P, DSAS, POL, W, F, FS, FL>,
    ) -> Result<(HandoverMarker, usize), SyncError> {
        if self.role != HaRole::Active {
            return Err(SyncError::NotActive);
        }
        if !self.connected {
            return Err(SyncError::NotConnected);
        }
        let n = self.withdraw(now, dp);
        for e in &mut self.entries {
            // Everything, whatever the replay interval says: the marker vouches for it.
            if e.flags & FULL == 0 {
                e.flags = update_flags::OUT_SEQ | update_flags::IN_WINDOW | update_flags::LIFETIME;
            }
        }
        let marker = HandoverMarker::of(self.entries.iter().map(|e| &e.rec));
        self.resigning = Some(marker);
        self.handover = None;
        self.request_snapshot = false;
        self.role = HaRole::Standby;
        self.since = now;
        Ok((marker, n))
    }

    /// Per-pair HA status (`show crypto ipsec sa` HA lines).
    pub fn sa_status(&self) -> impl Iterator<Item = super::status::SaHaStatus> + '_ {
        let role = self.role;
        self.entries.iter().map(move |e| super::status::SaHaStatus {
            inbound_spi: e.rec.inbound.spi,
            outbound_spi: e.rec.outbound.spi,
            sa_group: e.rec.sa_group,
            peer: e.rec.peer,
            state: if e.handles.is_some() {
                HaRole::Active
            } else if role == HaRole::Active {
                // Known but not in the data plane (a failed takeover): not carrying traffic.
                HaRole::Standby
            } else {
                role
            },
            out_next_seq: e.rec.progress.out_next_seq,
            in_top: e.rec.progress.in_window.top,
        })
    }
}

fn progress_of<P: CryptoProvider, const W: usize>(
    now: Instant,
    isa: &EspSa<P, W>,
    osa: &EspSa<P, W>,
) -> SaProgress<W> {
    SaProgress {
        out_next_seq: osa.next_seq(),
        in_window: isa.replay_window().snapshot(),
        in_bytes: isa.lifetime().bytes_used(),
        out_bytes: osa.lifetime().bytes_used(),
        age: now - isa.lifetime().created(),
    }
}

/// Builds the two SAs of a pair for a takeover.
///
/// With `exact` (a verified handover) the counters are taken as they are, if the synced
/// window has the rebuilt SA's shape; the third value says whether they were.
fn rebuild<P: CryptoProvider, const W: usize>(
    now: Instant,
    e: &Entry<W>,
    seq_advance: u64,
    window_advance: u64,
    exact: bool,
) -> Result<(EspSa<P, W>, EspSa<P, W>, bool), SyncError> {
    let p = &e.rec.progress;
    let age = p.age + (now - e.age_at);
    let mut icfg = e.rec.inbound.clone();
    icfg.lifetime = remaining(&icfg.lifetime, age, p.in_bytes);
    let mut ocfg = e.rec.outbound.clone();
    ocfg.lifetime = remaining(&ocfg.lifetime, age, p.out_bytes);
    let mut isa = EspSa::<P, W>::new(
        icfg,
        e.rec.inbound_keys.enc.expose(),
        e.rec.inbound_keys.auth.expose(),
        now,
    )
    .map_err(SyncError::Esp)?;
    let mut osa = EspSa::<P, W>::new(
        ocfg,
        e.rec.outbound_keys.enc.expose(),
        e.rec.outbound_keys.auth.expose(),
        now,
    )
    .map_err(SyncError::Esp)?;
    let w = isa.replay_window();
    // Only a window of the same size and numbering means the same thing bit for bit
    // (a larger size would consult bits the old window never kept up to date).
    if exact && p.in_window.size == w.size() && p.in_window.esn == w.is_esn() {
        if w.is_enabled() {
            isa.restore_replay(&p.in_window).map_err(SyncError::Esp)?;
        }
        osa.advance_seq_to(p.out_next_seq);
        return Ok((isa, osa, true));
    }
    if w.is_enabled() {
        let limit = if w.is_esn() {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        };
        let top = p.in_window.top.saturating_add(window_advance).min(limit);
        // Everything at or below the new top counts as seen: nothing the old Active
        // accepted can be accepted again.
        let snap = ReplaySnapshot {
            bitmap: [u64::MAX; W],
            top,
            size: w.size(),
            esn: w.is_esn(),
        };
        isa.restore_replay(&snap).map_err(SyncError::Esp)?;
    }
    osa.advance_seq_to(p.out_next_seq.saturating_add(seq_advance));
    Ok((isa, osa, false))
}

#[cfg(test)]
mod tests {
    use core::net::{IpAddr, Ipv4Addr};

    use hal_traits::{CipherAlg, MacAlg};
    use ipsec_soft_crypto::SoftCrypto;

    use super::*;
    use crate::esp::{Direction, Encryption, EspConfig, Transform};
    use crate::ha::record::SaKeys;
    use crate::spd::PolicyAction;

    extern crate std;

    type Dp = Dataplane<SoftCrypto, 4, 2>;

    fn pair(now: Instant, dp: &mut Dp) -> (SaPairRecord<2>, (SaHandle, SaHandle)) {
        let t = Transform {
            enc: Encryption::Cbc(CipherAlg::Aes128Cbc),
            auth: Some(MacAlg::HmacSha1_96),
        };
        let (a, b) = (
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100)),
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5)),
        );
        let i = EspConfig::tunnel(0x1001, Direction::Inbound, t, a, b);
        let o = EspConfig::tunnel(0x2001, Direction::Outbound, t, a, b);
        let si = EspSa::new(i.clone(), &[1; 16], &[2; 20], now).unwrap();
        let so = EspSa::new(o.clone(), &[3; 16], &[4; 20], now).unwrap();
        let h = dp.install_pair(5, si, so).unwrap();
        let rec = SaPairRecord {
            sa_group: 5,
            peer: b,
            ike_cookies: [0; 16],
            inbound: i,
            outbound: o,
            inbound_keys: SaKeys::new(&[1; 16], &[2; 20]).unwrap(),
            outbound_keys: SaKeys::new(&[3; 16], &[4; 20]).unwrap(),
            progress: SaProgress::fresh(false, 64),
        };
        (rec, h)
    }

    /// Moves every pending message from `from` to `to`.
    fn flush(now: Instant, from: &mut HaSync<4, 1>, to: &mut HaSync<4, 1>) -> usize {
        let mut buf = [0u8; 1300];
        let mut msgs = 0;
        loop {
            let n = from.fill(&mut buf);
            if n == 0 {
                return msgs;
            }
            to.handle_payload(now, &buf[..n]).unwrap();
            msgs += 1;
        }
    }

    #[test]
    fn snapshot_delete_and_split_brain_resync() {
        let t0 = Instant::ZERO;
        let mut dpa = Dp::new(PolicyAction::Discard);
        let mut dpb = Dp::new(PolicyAction::Discard);
        let mut a: HaSync<4, 1> = HaSync::new(SyncConfig::default(), HaRole::Active, t0);
        let mut b: HaSync<4, 1> = HaSync::new(SyncConfig::default(), HaRole::Standby, t0);
        let (rec, h) = pair(t0, &mut dpa);
        a.sa_installed(t0, rec, Some(h)).unwrap();
        a.ike_updated([9; 16], b"ike").unwrap();
        assert_eq!(
            b.sa_installed(t0, a.pairs().next().unwrap().clone(), None),
            Err(SyncError::NotActive)
        );
        a.peer_up();
        b.peer_up();
        assert_eq!(flush(t0, &mut a, &mut b), 1);
        assert!(b.in_sync() && a.in_sync());
        assert_eq!((b.pair_count(), b.ike_count()), (1, 1));

        // Split brain: b takes over while a is still Active.
        let t1 = Instant::from_secs(5);
        let r = b.activate(t1, &mut dpb);
        assert_eq!((r.pairs, r.failed), (1, 0));
        let (_, ho) = b.handles(0x1001).unwrap();
        assert_eq!(dpb.outbound_sa(ho).unwrap().next_seq(), 1 + r.seq_advance);
        // Both Active: records between them are ignored.
        flush(t1, &mut b, &mut a);
        assert!(a.counters().records_ignored > 0);
        // a loses the election: its SAs leave its data plane and it asks for a snapshot.
        assert_eq!(a.deactivate(t1, &mut dpa), 1);
        assert_eq!(dpa.inbound_sas().count(), 0);
        assert_eq!(a.role(), HaRole::Standby);
        assert!(!a.in_sync());
        assert_eq!(flush(t1, &mut a, &mut b), 1); // the request
        flush(t1, &mut b, &mut a); // the snapshot
        assert!(a.in_sync());
        assert_eq!(
            a.pair(0x1001).unwrap().progress.out_next_seq,
            1 + r.seq_advance
        );

        // A delete on the Active reaches the Standby; the IKE record too.
        assert!(b.sa_removed(0x1001));
        assert!(b.ike_removed([9; 16]));
        flush(t1, &mut b, &mut a);
        assert_eq!((a.pair_count(), a.ike_count()), (0, 0));
    }

    /// A pair that has carried traffic: outbound next 43, inbound top 40 with holes.
    fn moved_pair(
        now: Instant,
        dp: &mut Dp,
    ) -> (SaPairRecord<2>, (SaHandle, SaHandle), ReplaySnapshot<2>) {
        let (rec, h) = pair(now, dp);
        let mut si = dp.remove_inbound(h.0).unwrap();
        let mut so = dp.remove_outbound(h.1).unwrap();
        let win = ReplaySnapshot {
            bitmap: [(1 << 40) | (1 << 39) | (1 << 37) | (1 << 30), 0],
            top: 40,
            size: 64,
            esn: false,
        };
        si.restore_replay(&win).unwrap();
        so.advance_seq_to(43);
        let h = dp.install_pair(5, si, so).unwrap();
        (rec, h, win)
    }

    /// Active `a` with one moved pair in `dpa`, Standby `b` holding a snapshot that
    /// predates the traffic (as if the replay interval had not been reached since).
    fn handover_pair() -> (Dp, HaSync<4, 1>, HaSync<4, 1>, ReplaySnapshot<2>) {
        let t0 = Instant::ZERO;
        let mut dpa = Dp::new(PolicyAction::Discard);
        let mut a: HaSync<4, 1> = HaSync::new(SyncConfig::default(), HaRole::Active, t0);
        let mut b: HaSync<4, 1> = HaSync::new(SyncConfig::default(), HaRole::Standby, t0);
        let (rec, h, win) = moved_pair(t0, &mut dpa);
        a.sa_installed(t0, rec, Some(h)).unwrap();
        a.peer_up();
        b.peer_up();
        flush(t0, &mut a, &mut b);
        assert!(b.in_sync());
        assert_eq!(b.pair(0x1001).unwrap().progress.out_next_seq, 1);
        (dpa, a, b, win)
    }

    /// The records of one message, re-encoded without the ones `keep` refuses.
    fn filtered(payload: &[u8], keep: impl Fn(&Record<'_, 2>) -> bool) -> std::vec::Vec<u8> {
        let mut out = [0u8; 1300];
        let mut w = Writer::new(&mut out);
        let mut r = Reader::new(payload);
        while let Some(rec) = r.next_record::<2>().unwrap() {
            if keep(&rec) {
                w.record(&rec).unwrap();
            }
        }
        let n = w.len();
        out[..n].to_vec()
    }

    fn installed(b: &HaSync<4, 1>, dp: &Dp) -> (u64, ReplaySnapshot<2>) {
        let (hi, ho) = b.handles(0x1001).unwrap();
        (
            dp.outbound_sa(ho).unwrap().next_seq(),
            dp.inbound_sa(hi).unwrap().replay_window().snapshot(),
        )
    }

    #[test]
    fn exact_handover_installs_the_final_counters() {
        let (mut dpa, mut a, mut b, win) = handover_pair();
        let t1 = Instant::from_secs(1);
        let (m, n) = a.hand_over(t1, &mut dpa).unwrap();
        assert_eq!((m.pairs, n), (1, 1));
        // The resigning node can no longer seal or open with the pair, and is Standby.
        assert_eq!(dpa.inbound_sas().count() + dpa.outbound_sas().count(), 0);
        assert_eq!(a.role(), HaRole::Standby);
        assert!(a.handover_pending());
        assert_eq!(a.hand_over(t1, &mut dpa), Err(SyncError::NotActive));
        assert_eq!(
            flush(t1, &mut a, &mut b),
            1,
            "final counters and marker together"
        );
        assert!(!a.handover_pending());
        assert_eq!(a.counters().handovers_sent, 1);
        assert_eq!(b.handover_marker(), Some(m));
        assert_eq!(b.counters().handovers_received, 1);

        let mut dpb = Dp::new(PolicyAction::Discard);
        let r = b.activate(Instant::from_secs(2), &mut dpb);
        assert_eq!(r.kind, TakeoverKind::Exact);
        assert_eq!((r.pairs, r.exact, r.failed), (1, 1, 0));
        assert_eq!((r.seq_advance, r.window_advance), (0, 0));
        // The next outbound number is the one after the last the old Active used; the
        // window is the old Active's, holes included.
        let (next, w) = installed(&b, &dpb);
        assert_eq!(next, 43);
        assert_eq!(w, win);
        assert_eq!(b.counters().exact_takeovers, 1);
        assert_eq!(b.handover_marker(), None, "used once");
    }

    #[test]
    fn handover_marker_missing_means_margins() {
        let (mut dpa, mut a, mut b, win) = handover_pair();
        let t1 = Instant::from_secs(1);
        a.hand_over(t1, &mut dpa).unwrap();
        let mut buf = [0u8; 1300];
        let n = a.fill(&mut buf);
        // The final counters arrive, the marker does not (an older active, or lost).
        let p = filtered(&buf[..n], |r| !matches!(r, Record::Handover(_)));
        assert!(p.len() < n);
        b.handle_payload(t1, &p).unwrap();
        assert_eq!(b.pair(0x1001).unwrap().progress.out_next_seq, 43);
        let mut dpb = Dp::new(PolicyAction::Discard);
        let r = b.activate(Instant::from_secs(2), &mut dpb);
        let cfg = SyncConfig::default();
        assert_eq!(r.kind, TakeoverKind::Failover);
        assert_eq!(r.exact, 0);
        assert_eq!(
            (r.seq_advance, r.window_advance),
            (cfg.seq_advance(), cfg.window_advance())
        );
        let (next, w) = installed(&b, &dpb);
        assert_eq!(next, 43 + cfg.seq_advance());
        assert_eq!(w.top, win.top + cfg.window_advance());
        for n in w.top - 63..=w.top {
            let block = w.bitmap[usize::try_from((n / 64) % 2).unwrap()];
            assert_eq!(
                (block >> (n % 64)) & 1,
                1,
                "{n} below the top counts as seen"
            );
        }
    }

    #[test]
    fn handover_marker_before_the_final_counters_means_margins() {
        let (mut dpa, mut a, mut b, _) = handover_pair();
        let t1 = Instant::from_secs(1);
        a.hand_over(t1, &mut dpa).unwrap();
        let mut buf = [0u8; 1300];
        let n = a.fill(&mut buf);
        let marker = filtered(&buf[..n], |r| matches!(r, Record::Handover(_)));
        let rest = filtered(&buf[..n], |r| !matches!(r, Record::Handover(_)));

        // Reordered (a host with its own transport): the marker, then the counters. A
        // record after the marker means the sender did not stop: it no longer counts.
        let (mut dpa2, mut a2, mut b2, _) = handover_pair();
        a2.hand_over(t1, &mut dpa2).unwrap();
        assert_eq!(a2.fill(&mut buf), n);
        b2.handle_payload(t1, &marker).unwrap();
        b2.handle_payload(t1, &rest).unwrap();
        assert_eq!(b2.handover_marker(), None);
        assert_eq!(b2.counters().handovers_superseded, 1);
        let mut dpb = Dp::new(PolicyAction::Discard);
        let r = b2.activate(Instant::from_secs(2), &mut dpb);
        assert_eq!(r.kind, TakeoverKind::Failover);
        assert_eq!(
            installed(&b2, &dpb).0,
            43 + SyncConfig::default().seq_advance()
        );

        // The counters never arrive: the marker does not match what is held.
        b.handle_payload(t1, &marker).unwrap();
        assert!(b.handover_marker().is_some());
        let mut dpb = Dp::new(PolicyAction::Discard);
        let r = b.activate(Instant::from_secs(2), &mut dpb);
        assert_eq!(r.kind, TakeoverKind::Unverified);
        assert_eq!(b.counters().handovers_unverified, 1);
        assert_eq!(r.seq_advance, SyncConfig::default().seq_advance());
        // From the stale copy (1), with the full margin.
        assert_eq!(
            installed(&b, &dpb).0,
            1 + SyncConfig::default().seq_advance()
        );
    }

    #[test]
    fn handover_marker_without_a_complete_snapshot_means_margins() {
        let (mut dpa, mut a, _, _) = handover_pair();
        let t1 = Instant::from_secs(1);
        a.hand_over(t1, &mut dpa).unwrap();
        let mut buf = [0u8; 1300];
        let n = a.fill(&mut buf);
        // A standby that joined late: the same records, but it never saw a snapshot.
        let mut c: HaSync<4, 1> = HaSync::new(SyncConfig::default(), HaRole::Standby, t1);
        c.peer_up();
        let pair = filtered(&buf[..n], |_| true);
        c.handle_payload(t1, &pair).unwrap();
        assert!(!c.in_sync());
        let mut dpc = Dp::new(PolicyAction::Discard);
        assert_eq!(c.activate(t1, &mut dpc).kind, TakeoverKind::Unverified);
    }

    #[test]
    fn hand_over_needs_an_active_node_and_a_peer() {
        let t0 = Instant::ZERO;
        let mut dp = Dp::new(PolicyAction::Discard);
        let mut a: HaSync<4, 1> = HaSync::new(SyncConfig::default(), HaRole::Active, t0);
        let (rec, h) = pair(t0, &mut dp);
        a.sa_installed(t0, rec, Some(h)).unwrap();
        assert_eq!(a.hand_over(t0, &mut dp), Err(SyncError::NotConnected));
        assert_eq!(a.role(), HaRole::Active);
        assert_eq!(dp.inbound_sas().count(), 1, "nothing changed");
        let mut s: HaSync<4, 1> = HaSync::new(SyncConfig::default(), HaRole::Standby, t0);
        s.peer_up();
        assert_eq!(s.hand_over(t0, &mut dp), Err(SyncError::NotActive));
        // Losing the peer before the marker left: nothing is vouched for.
        a.peer_up();
        a.hand_over(t0, &mut dp).unwrap();
        assert!(a.handover_pending());
        a.peer_lost();
        assert!(!a.handover_pending());
        assert_eq!(a.fill(&mut [0u8; 1300]), 0);
    }

    #[test]
    fn tick_marks_only_at_the_replay_interval() {
        let t0 = Instant::ZERO;
        let mut dp = Dp::new(PolicyAction::Discard);
        let cfg = SyncConfig {
            replay: ReplayInterval {
                inbound: 100,
                outbound: 10,
            },
            ..SyncConfig::default()
        };
        let mut a: HaSync<4, 1> = HaSync::new(cfg, HaRole::Active, t0);
        let mut b: HaSync<4, 1> = HaSync::new(cfg, HaRole::Standby, t0);
        let (rec, h) = pair(t0, &mut dp);
        a.sa_installed(t0, rec, Some(h)).unwrap();
        a.peer_up();
        flush(t0, &mut a, &mut b);
        // Real counters (covered with traffic by tests/ha_failover.rs) have not moved.
        a.tick(Instant::from_millis(20), &dp);
        assert_eq!(flush(Instant::from_millis(20), &mut a, &mut b), 0);
        // Move the counter by hand through `observe`: 9 packets: no update; 10: one.
        let mut p = a.pair(0x1001).unwrap().progress;
        p.out_next_seq = 10;
        a.observe(Instant::from_millis(30), |_, _| Some(p));
        assert_eq!(flush(Instant::from_millis(30), &mut a, &mut b), 0);
        p.out_next_seq = 11;
        a.observe(Instant::from_millis(31), |_, _| Some(p));
        assert_eq!(flush(Instant::from_millis(31), &mut a, &mut b), 1);
        assert_eq!(b.pair(0x1001).unwrap().progress.out_next_seq, 11);
        // SAs removed from the data plane behind our back are deleted on the next tick.
        dp.remove_inbound(h.0);
        a.tick(Instant::from_millis(40), &dp);
        assert_eq!(a.pair_count(), 0);
        flush(Instant::from_millis(40), &mut a, &mut b);
        assert_eq!(b.pair_count(), 0);
    }
}
