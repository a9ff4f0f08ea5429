//! A redundancy group with a virtual IP: the VRRPv3 state machine (RFC 5798 §6), the
//! open equivalent of the HSRP groups of the IOS chapter, sans-IO.
//!
//! States: Initialize, Backup (HSRP's Standby) and Master (HSRP's Active). The master
//! sends an advertisement every `Advertisement_Interval`; a backup that hears none for
//! `Master_Down_Interval = 3 × Master_Adver_Interval + Skew_Time`, with
//! `Skew_Time = (256 − Priority) × Master_Adver_Interval / 256`, takes over (a higher
//! priority backup takes over sooner). Intervals are in centiseconds on the wire and
//! converted to milliseconds here.
//!
//! * **Priority**: 1..=254, 255 for the owner of the virtual address, which becomes Master
//!   at once on startup. Priority 0 in an advertisement means the master is resigning
//!   (`shutdown`): backups then take over after `Skew_Time` only.
//! * **Preemption** (`preempt`): a backup with a higher priority than the current master
//!   ignores its advertisements and so takes over when its master-down timer expires.
//!   `preempt_delay` postpones that takeover (HSRP's `preempt delay minimum`): the backup
//!   first waits that long after hearing the lower-priority master, to let routing and the
//!   SA synchronisation settle. The delay never applies to a dead master.
//! * **Tracking** (`standby track`): each tracked interface that goes down lowers the
//!   priority by its decrement (never below 1). A master whose priority changes
//!   advertises at once, so a preempting backup with a higher priority takes over.
//! * **Split brain**: after a partition both nodes are Master. When the partition heals,
//!   each hears the other's advertisement and RFC 5798 §6.4.3 decides: the one with the
//!   higher priority stays Master, a tie goes to the higher primary IPv4 address, and the
//!   loser becomes Backup at once (no timer involved).
//!
//! Inputs: [`Vrrp::startup`], [`Vrrp::handle_advert`] (or [`Vrrp::handle_ip_packet`]),
//! [`Vrrp::handle_timeout`], [`Vrrp::set_interface`], [`Vrrp::shutdown`]. Outputs:
//! [`Vrrp::poll_transmit`] (an advertisement and the IPv4 header fields to send it with),
//! [`Vrrp::poll_timeout`] and [`Vrrp::poll_event`] ([`VrrpEvent::RoleChanged`]). The
//! port answers ARP for the virtual addresses (and sends gratuitous ARP) while Master.
//!
//! **Host-driven mode** ([`VrrpMode::HostDriven`]): no advertisements and no timers; the
//! host sets the role with [`Vrrp::set_role`] (from a cluster manager, a GPIO, a CLI) and
//! gets the same events.

pub mod packet;

use core::fmt;
use core::net::Ipv4Addr;

use heapless::{Deque, Vec};

use super::HaRole;
use crate::time::{Duration, Instant};
use crate::wire::WireError;
use crate::wire::ipv4::{Ipv4Packet, Ipv4Repr};
use packet::{MAX_ADDRS, MULTICAST_V4, PROTOCOL, TTL, VrrpPacket, VrrpRepr};

/// Most tracked interfaces.
pub const MAX_TRACKS: usize = 8;

/// The priority of the address owner.
pub const OWNER_PRIORITY: u8 = 255;

/// VRRP states (RFC 5798 §6.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum VrrpState {
    /// Not started, or shut down.
    Initialize,
    /// Backup (HSRP Standby).
    Backup,
    /// Master (HSRP Active): owns the virtual IP.
    Master,
}

impl VrrpState {
    /// The redundancy role this state gives the node.
    #[must_use]
    pub const fn role(self) -> HaRole {
        match self {
            Self::Master => HaRole::Active,
            Self::Initialize | Self::Backup => HaRole::Standby,
        }
    }
}

impl fmt::Display for VrrpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Initialize => "Init",
            Self::Backup => "Backup",
            Self::Master => "Master",
        })
    }
}

/// Who decides the role.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum VrrpMode {
    /// The VRRPv3 protocol.
    #[default]
    Protocol,
    /// The host, through [`Vrrp::set_role`].
    HostDriven,
}

/// A tracked interface (`standby track <if> <decrement>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Track {
    /// The port's interface index.
    pub interface: u32,
    /// Priority lost while it is down.
    pub decrement: u8,
}

/// Configuration of one virtual router.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpConfig {
    /// Virtual router id, 1..=255 (HSRP's group number).
    pub vrid: u8,
    /// Priority, 1..=254, or 255 for the address owner.
    pub priority: u8,
    /// Advertisement interval in centiseconds (1..=4095; 100 = 1 s).
    pub adver_interval: u16,
    /// Whether a higher-priority backup takes over from a lower-priority master.
    pub preempt: bool,
    /// How long to wait before preempting (see the [module docs](self)).
    pub preempt_delay: Duration,
    /// Our primary address on the VRRP interface: the advertisements' source, and the
    /// tie-breaker between equal priorities.
    pub primary_ip: Ipv4Addr,
    /// The virtual addresses (the VIP the IPsec peers talk to).
    pub virtual_ips: Vec<Ipv4Addr, MAX_ADDRS>,
    /// Tracked interfaces.
    pub tracks: Vec<Track, MAX_TRACKS>,
    /// Protocol-driven or host-driven.
    pub mode: VrrpMode,
}

impl VrrpConfig {
    /// A group with one virtual IP, priority 100, 1 s advertisements, preemption on with
    /// no delay, nothing tracked (the RFC 5798 defaults).
    #[must_use]
    pub fn new(vrid: u8, primary_ip: Ipv4Addr, vip: Ipv4Addr) -> Self {
        let mut virtual_ips = Vec::new();
        let _ = virtual_ips.push(vip);
        Self {
            vrid,
            priority: 100,
            adver_interval: 100,
            preempt: true,
            preempt_delay: Duration::ZERO,
            primary_ip,
            virtual_ips,
            tracks: Vec::new(),
            mode: VrrpMode::Protocol,
        }
    }
}

/// Why the role changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ChangeReason {
    /// [`Vrrp::startup`].
    Startup,
    /// No advertisement for the master down interval (or the master resigned).
    MasterDown,
    /// A better master was heard (higher priority, or equal priority and higher address):
    /// preemption by the other node, or the split-brain rule.
    BetterMaster,
    /// [`Vrrp::shutdown`].
    Shutdown,
    /// [`Vrrp::set_role`] in host-driven mode.
    Host,
}

/// What a [`Vrrp`] tells the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum VrrpEvent {
    /// The state changed.
    RoleChanged {
        /// The virtual router.
        vrid: u8,
        /// Old state.
        from: VrrpState,
        /// New state.
        to: VrrpState,
        /// When.
        at: Instant,
        /// Why.
        reason: ChangeReason,
    },
}

/// An advertisement to send: `len` bytes of VRRP in the caller's buffer, to carry in an
/// IPv4 header with these fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VrrpTransmit {
    /// Length of the VRRP message in the buffer.
    pub len: usize,
    /// IPv4 source (our primary address).
    pub src: Ipv4Addr,
    /// IPv4 destination (224.0.0.18).
    pub dst: Ipv4Addr,
    /// IPv4 TTL (255).
    pub ttl: u8,
    /// IPv4 protocol (112).
    pub protocol: u8,
}

/// Why an advertisement was not processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum VrrpError {
    /// Malformed, wrong version or bad checksum.
    Wire(WireError),
    /// For another virtual router.
    OtherVrid,
    /// Not from the VRRP multicast group with TTL 255, or not protocol 112.
    NotVrrp,
    /// Our own advertisement looped back.
    Own,
    /// Not accepted in this state (Initialize, or host-driven mode).
    Ignored,
    /// A misconfiguration (priority 0, no virtual address, interval 0).
    InvalidConfig,
}

impl fmt::Display for VrrpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Wire(e) => write!(f, "bad VRRP packet: {e}"),
            Self::OtherVrid => f.write_str("advertisement for another virtual router"),
            Self::NotVrrp => f.write_str("not a VRRP advertisement"),
            Self::Own => f.write_str("own advertisement"),
            Self::Ignored => f.write_str("advertisement ignored in this state"),
            Self::InvalidConfig => f.write_str("invalid VRRP configuration"),
        }
    }
}

impl core::error::Error for VrrpError {}

impl From<WireError> for VrrpError {
    fn from(e: WireError) -> Self {
        Self::Wire(e)
    }
}

/// Counters of one virtual router.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct VrrpCounters {
    /// Advertisements sent.
    pub adverts_sent: u64,
    /// Valid advertisements received for our VRID.
    pub adverts_received: u64,
    /// Priority-0 advertisements received.
    pub resign_received: u64,
    /// Malformed packets, bad checksums, wrong TTL.
    pub bad_packets: u64,
    /// Transitions to Master.
    pub became_master: u64,
}

/// One virtual router (see the [module docs](self)).
#[derive(Debug)]
pub struct Vrrp {
    cfg: VrrpConfig,
    state: VrrpState,
    since: Instant,
    /// Bit `i` set: `cfg.tracks[i]` is down.
    down: u32,
    master_adver_interval: u16,
    adver_timer: Option<Instant>,
    master_down_timer: Option<Instant>,
    /// When preemption of a lower-priority master becomes allowed.
    preempt_at: Option<Instant>,
    /// When a lower-priority master was last heard.
    lower_heard: Option<Instant>,
    /// An advertisement to send, with this priority.
    send: Option<u8>,
    master_ip: Option<Ipv4Addr>,
    events: Deque<VrrpEvent, 8>,
    counters: VrrpCounters,
}

const fn cs(c: u16) -> Duration {
    Duration::from_millis(c as u64 * 10)
}

impl Vrrp {
    /// A virtual router in the Initialize state.
    ///
    /// # Errors
    /// [`VrrpError::InvalidConfig`] for a priority of 0, an interval of 0 or above 4095,
    /// or no virtual address.
    pub fn new(cfg: VrrpConfig) -> Result<Self, VrrpError> {
        if cfg.priority == 0
            || cfg.adver_interval == 0
            || cfg.adver_interval > 0x0fff
            || cfg.virtual_ips.is_empty()
            || cfg.vrid == 0
        {
            return Err(VrrpError::InvalidConfig);
        }
        let mai = cfg.adver_interval;
        Ok(Self {
            cfg,
            state: VrrpState::Initialize,
            since: Instant::ZERO,
            down: 0,
            master_adver_interval: mai,
            adver_timer: None,
            master_down_timer: None,
            preempt_at: None,
            lower_heard: None,
            send: None,
            master_ip: None,
            events: Deque::new(),
            counters: VrrpCounters::default(),
        })
    }

    /// The configuration.
    #[must_use]
    pub const fn config(&self) -> &VrrpConfig {
        &self.cfg
    }

    /// The current state.
    #[must_use]
    pub const fn state(&self) -> VrrpState {
        self.state
    }

    /// The redundancy role of the current state.
    #[must_use]
    pub const fn role(&self) -> HaRole {
        self.state.role()
    }

    /// When the current state was entered.
    #[must_use]
    pub const fn since(&self) -> Instant {
        self.since
    }

    /// The counters.
    #[must_use]
    pub const fn counters(&self) -> &VrrpCounters {
        &self.counters
    }

    /// The primary address of the master last heard (ours while Master).
    #[must_use]
    pub const fn master_ip(&self) -> Option<Ipv4Addr> {
        self.master_ip
    }

    /// The priority in effect: the configured one minus the decrements of tracked
    /// interfaces that are down, never below 1.
    #[must_use]
    pub fn priority(&self) -> u8 {
        let dec: u32 = self
            .cfg
            .tracks
            .iter()
            .enumerate()
            .filter(|(i, _)| self.down & (1u32 << i) != 0)
            .map(|(_, t)| u32::from(t.decrement))
            .sum();
        if dec == 0 {
            return self.cfg.priority;
        }
        let p = u32::from(self.cfg.priority).saturating_sub(dec).max(1);
        u8::try_from(p).unwrap_or(1)
    }

    /// `Skew_Time` in milliseconds for our priority.
    #[must_use]
    pub fn skew_time(&self) -> Duration {
        let cs10 = (256 - u64::from(self.priority())) * u64::from(self.master_adver_interval) * 10;
        Duration::from_millis(cs10 / 256)
    }

    /// `Master_Down_Interval` in milliseconds.
    #[must_use]
    pub fn master_down_interval(&self) -> Duration {
        Duration::from_millis(cs(self.master_adver_interval).as_millis() * 3) + self.skew_time()
    }

    fn change(&mut self, now: Instant, to: VrrpState, reason: ChangeReason) {
        let from = self.state;
        if from == to {
            return;
        }
        self.state = to;
        self.since = now;
        if to == VrrpState::Master {
            self.counters.became_master = self.counters.became_master.saturating_add(1);
            self.master_ip = Some(self.cfg.primary_ip);
        }
        if self.events.is_full() {
            let _ = self.events.pop_front();
        }
        let _ = self.events.push_back(VrrpEvent::RoleChanged {
            vrid: self.cfg.vrid,
            from,
            to,
            at: now,
            reason,
        });
    }

    fn become_master(&mut self, now: Instant, reason: ChangeReason) {
        self.send = Some(self.priority());
        self.adver_timer = Some(now + cs(self.cfg.adver_interval));
        self.master_down_timer = None;
        self.preempt_at = None;
        self.lower_heard = None;
        self.change(now, VrrpState::Master, reason);
    }

    fn become_backup(&mut self, now: Instant, reason: ChangeReason) {
        self.adver_timer = None;
        self.master_down_timer = Some(now + self.master_down_interval());
        self.change(now, VrrpState::Backup, reason);
    }

    /// The startup event (RFC 5798 §6.4.1): the owner becomes Master at once, anyone else
    /// Backup. In host-driven mode: Backup, until [`Vrrp::set_role`].
    pub fn startup(&mut self, now: Instant) {
        if self.state != VrrpState::Initialize {
            return;
        }
        self.since = now;
        if self.cfg.mode == VrrpMode::HostDriven {
            self.change(now, VrrpState::Backup, ChangeReason::Startup);
            return;
        }
        self.master_adver_interval = self.cfg.adver_interval;
        if self.priority() == OWNER_PRIORITY {
            self.become_master(now, ChangeReason::Startup);
        } else {
            self.become_backup(now, ChangeReason::Startup);
        }
    }

    /// The shutdown event: a master resigns with a priority-0 advertisement (so backups
    /// take over after `Skew_Time`); every state goes to Initialize.
    pub fn shutdown(&mut self, now: Instant) {
        if self.state == VrrpState::Master && self.cfg.mode == VrrpMode::Protocol {
            self.send = Some(0);
        }
        self.adver_timer = None;
        self.master_down_timer = None;
        self.preempt_at = None;
        self.change(now, VrrpState::Initialize, ChangeReason::Shutdown);
    }

    /// Sets the role in host-driven mode (Master for Active, Backup for Standby).
    ///
    /// # Errors
    /// [`VrrpError::Ignored`] in protocol mode.
    pub fn set_role(&mut self, now: Instant, role: HaRole) -> Result<(), VrrpError> {
        if self.cfg.mode != VrrpMode::HostDriven {
            return Err(VrrpError::Ignored);
        }
        let to = match role {
            HaRole::Active => VrrpState::Master,
            HaRole::Standby => VrrpState::Backup,
        };
        self.change(now, to, ChangeReason::Host);
        Ok(())
    }

    /// A tracked interface changed state. A master advertises its new priority at once.
    /// Unknown interfaces are ignored.
    pub fn set_interface(&mut self, now: Instant, interface: u32, up: bool) {
        let before = self.priority();
        for (i, t) in self.cfg.tracks.iter().enumerate() {
            if t.interface == interface {
                let bit = 1u32 << i;
                if up {
                    self.down &= !bit;
                } else {
                    self.down |= bit;
                }
            }
        }
        if self.priority() != before && self.state == VrrpState::Master {
            self.send = Some(self.priority());
            self.adver_timer = Some(now + cs(self.cfg.adver_interval));
        }
    }

    /// Handles a whole IPv4 packet: checks protocol 112, destination 224.0.0.18 and TTL
    /// 255 (RFC 5798 §7.1), then [`Vrrp::handle_advert`].
    ///
    /// # Errors
    /// [`VrrpError::NotVrrp`] and those of [`Vrrp::handle_advert`].
    pub fn handle_ip_packet(&mut self, now: Instant, packet: &[u8]) -> Result<(), VrrpError> {
        let ip = Ipv4Packet::new_checked(packet).inspect_err(|_| self.bad())?;
        let repr = Ipv4Repr::parse(&ip).inspect_err(|_| self.bad())?;
        if repr.protocol != PROTOCOL || repr.dst != MULTICAST_V4 || repr.ttl != TTL {
            self.bad();
            return Err(VrrpError::NotVrrp);
        }
        let hl = ip.header_len();
        let payload = packet
            .get(hl..hl.saturating_add(repr.payload_len))
            .ok_or(VrrpError::Wire(WireError::Truncated))?;
        self.handle_advert(now, repr.src, payload)
    }

    fn bad(&mut self) {
        self.counters.bad_packets = self.counters.bad_packets.saturating_add(1);
    }

    /// Handles an advertisement (the IPv4 payload) from `from`, already known to have
    /// arrived with TTL 255 to 224.0.0.18 (see [`Vrrp::handle_ip_packet`]).
    ///
    /// # Errors
    /// [`VrrpError::Wire`], [`VrrpError::OtherVrid`], [`VrrpError::Own`],
    /// [`VrrpError::Ignored`]. Every error leaves the state unchanged.
    pub fn handle_advert(
        &mut self,
        now: Instant,
        from: Ipv4Addr,
        packet: &[u8],
    ) -> Result<(), VrrpError> {
        let p = VrrpPacket::new_checked(packet).inspect_err(|_| self.bad())?;
        let adv = VrrpRepr::parse(&p, from, MULTICAST_V4).inspect_err(|_| self.bad())?;
        if adv.vrid != self.cfg.vrid {
            return Err(VrrpError::OtherVrid);
        }
        if from == self.cfg.primary_ip {
            return Err(VrrpError::Own);
        }
        if self.cfg.mode == VrrpMode::HostDriven || self.state == VrrpState::Initialize {
            return Err(VrrpError::Ignored);
        }
        self.counters.adverts_received = self.counters.adverts_received.saturating_add(1);
        let local = self.priority();
        match self.state {
            VrrpState::Initialize => {}
            VrrpState::Backup => {
                if adv.priority == 0 {
                    self.counters.resign_received = self.counters.resign_received.saturating_add(1);
                    self.master_down_timer = Some(now + self.skew_time());
                } else if !self.cfg.preempt || adv.priority >= local {
                    self.master_adver_interval = adv.max_adver_int;
                    self.master_down_timer = Some(now + self.master_down_interval());
                    self.master_ip = Some(from);
                    self.preempt_at = None;
                    self.lower_heard = None;
                } else {
                    // A lower-priority master and we preempt: let the master-down timer
                    // run out, no sooner than the preemption delay.
                    self.master_ip = Some(from);
                    self.lower_heard = Some(now);
                    if self.preempt_at.is_none() {
                        self.preempt_at = Some(now + self.cfg.preempt_delay);
                    }
                }
            }
            VrrpState::Master => {
                if adv.priority == 0 {
                    self.counters.resign_received = self.counters.resign_received.saturating_add(1);
                    self.send = Some(local);
                    self.adver_timer = Some(now + cs(self.cfg.adver_interval));
                } else if adv.priority > local
                    || (adv.priority == local && u32::from(from) > u32::from(self.cfg.primary_ip))
                {
                    // Preempted, or the split-brain rule: the better master stays.
                    self.master_adver_interval = adv.max_adver_int;
                    self.master_ip = Some(from);
                    self.become_backup(now, ChangeReason::BetterMaster);
                }
                // Otherwise we are the better master: discard; our next advertisement
                // makes the other side step down.
            }
        }
        Ok(())
    }

    /// The next advertisement to send, written into `buf`.
    #[must_use]
    pub fn poll_transmit(&mut self, _now: Instant, buf: &mut [u8]) -> Option<VrrpTransmit> {
        let prio = self.send?;
        let repr = VrrpRepr {
            vrid: self.cfg.vrid,
            priority: prio,
            max_adver_int: self.cfg.adver_interval,
            addresses: self.cfg.virtual_ips.clone(),
        };
        let len = repr.emit(buf, self.cfg.primary_ip, MULTICAST_V4).ok()?;
        self.send = None;
        self.counters.adverts_sent = self.counters.adverts_sent.saturating_add(1);
        Some(VrrpTransmit {
            len,
            src: self.cfg.primary_ip,
            dst: MULTICAST_V4,
            ttl: TTL,
            protocol: PROTOCOL,
        })
    }

    /// The next deadline (advertisement timer, master-down timer).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.adver_timer, self.master_down_timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires due timers. A spurious call is a no-op.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            VrrpState::Master => {
                if self.adver_timer.is_some_and(|t| t <= now) {
                    self.send = Some(self.priority());
                    self.adver_timer = Some(now + cs(self.cfg.adver_interval));
                }
            }
            VrrpState::Backup => {
                if self.master_down_timer.is_some_and(|t| t <= now) {
                    // A lower-priority master still alive: wait for the preemption delay.
                    let lower_alive = self
                        .lower_heard
                        .is_some_and(|t| now < t + self.master_down_interval());
                    if let Some(at) = self.preempt_at.filter(|&at| lower_alive && now < at) {
                        self.master_down_timer = Some(at);
                        return;
                    }
                    self.become_master(now, ChangeReason::MasterDown);
                }
            }
            VrrpState::Initialize => {}
        }
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<VrrpEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_match_rfc_formulas() {
        let mut c = VrrpConfig::new(1, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 100));
        c.priority = 100;
        let v = Vrrp::new(c).unwrap();
        // Skew = (256-100)*100/256 cs = 60.9375 cs = 609 ms; MDI = 3 s + skew.
        assert_eq!(v.skew_time(), Duration::from_millis(609));
        assert_eq!(v.master_down_interval(), Duration::from_millis(3609));
    }

    #[test]
    fn owner_starts_master_and_invalid_configs() {
        let mut c = VrrpConfig::new(1, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 1));
        c.priority = 255;
        let mut v = Vrrp::new(c.clone()).unwrap();
        v.startup(Instant::ZERO);
        assert_eq!(v.state(), VrrpState::Master);
        let mut buf = [0u8; 64];
        let t = v.poll_transmit(Instant::ZERO, &mut buf).unwrap();
        assert_eq!((t.ttl, t.protocol, t.dst), (255, 112, MULTICAST_V4));
        c.priority = 0;
        assert_eq!(Vrrp::new(c).err(), Some(VrrpError::InvalidConfig));
    }
}
