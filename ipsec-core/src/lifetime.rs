//! SA lifetimes in seconds and kilobytes (RFC 2407 §4.5, RFC 4301 §4.4.2.1), in the manner
//! of IOS `set security-association lifetime seconds 3600 kilobytes 4608000`.
//!
//! A lifetime has up to four limits: soft and hard, each in time and in bytes. The soft
//! limit tells the control plane to rekey while the SA is still usable; the hard limit
//! says the SA must no longer be used. [`LifetimeConfig`] holds the limits,
//! [`Lifetime`] the runtime state of one SA.
//!
//! Sans-IO: time-based limits are *deadlines*. The owner of the SA asks
//! [`Lifetime::deadline`] for the next one, arms a single timer for the earliest deadline
//! across all its SAs, and calls [`Lifetime::on_timeout`] when it expires. Byte-based
//! limits fire from [`Lifetime::add_bytes`]. Each of `Soft` and `Hard` fires at most once.
//!
//! One kilobyte is 1024 bytes, as in IOS.

use core::fmt;

use crate::time::{Duration, Instant};

/// Bytes in one kilobyte, as IOS counts lifetimes.
pub const KILOBYTE: u64 = 1024;

/// The IOS default hard lifetime in seconds (`crypto ipsec security-association lifetime
/// seconds 3600`).
pub const IOS_DEFAULT_SECONDS: u64 = 3600;

/// The IOS default hard lifetime in kilobytes (`... lifetime kilobytes 4608000`).
pub const IOS_DEFAULT_KILOBYTES: u64 = 4_608_000;

/// The soft limit we recommend, as a percentage of the hard limit.
///
/// 90 % leaves 6 minutes of a one-hour SA (and 10 % of the volume) for Quick Mode to
/// install the replacement before the old SA dies, which covers several retransmissions
/// of a lost exchange. IOS likewise starts rekeying ahead of expiry.
pub const DEFAULT_SOFT_PERCENT: u8 = 90;

/// An invalid lifetime configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum LifetimeError {
    /// A soft limit is larger than the hard limit of the same kind.
    SoftExceedsHard,
    /// The soft percentage is above 100.
    BadSoftPercent,
}

impl fmt::Display for LifetimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SoftExceedsHard => "soft lifetime exceeds hard lifetime",
            Self::BadSoftPercent => "soft lifetime percentage above 100",
        })
    }
}

impl core::error::Error for LifetimeError {}

/// The limits of an SA's lifetime. `None` means "no limit of this kind".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LifetimeConfig {
    /// Time after installation at which to start rekeying.
    pub soft_time: Option<Duration>,
    /// Time after installation at which the SA must be deleted.
    pub hard_time: Option<Duration>,
    /// Bytes processed after which to start rekeying.
    pub soft_bytes: Option<u64>,
    /// Bytes processed after which the SA must be deleted.
    pub hard_bytes: Option<u64>,
}

impl LifetimeConfig {
    /// No limits at all: the SA lives until it is deleted explicitly.
    pub const UNLIMITED: Self = Self {
        soft_time: None,
        hard_time: None,
        soft_bytes: None,
        hard_bytes: None,
    };

    /// Hard limits as IOS configures them (seconds, kilobytes), with soft limits derived as
    /// `soft_percent` % of each hard limit (rounded down; see [`DEFAULT_SOFT_PERCENT`]).
    /// A `soft_percent` of 0 means "no soft limits"; 100 puts soft and hard together, in
    /// which case only `Hard` is reported.
    ///
    /// # Errors
    ///
    /// [`LifetimeError::BadSoftPercent`] if `soft_percent` is above 100.
    pub fn from_hard(
        seconds: Option<u64>,
        kilobytes: Option<u64>,
        soft_percent: u8,
    ) -> Result<Self, LifetimeError> {
        if soft_percent > 100 {
            return Err(LifetimeError::BadSoftPercent);
        }
        let hard_time = seconds.map(Duration::from_secs);
        let hard_bytes = kilobytes.map(|kb| kb.saturating_mul(KILOBYTE));
        let soft = |hard: u64| (soft_percent != 0).then(|| percent_of(hard, soft_percent));
        let cfg = Self {
            soft_time: hard_time
                .and_then(|h| soft(h.as_millis()))
                .map(Duration::from_millis),
            hard_time,
            soft_bytes: hard_bytes.and_then(soft),
            hard_bytes,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that no soft limit exceeds the hard limit of the same kind.
    ///
    /// # Errors
    ///
    /// [`LifetimeError::SoftExceedsHard`] if one does.
    pub fn validate(&self) -> Result<(), LifetimeError> {
        let time_ok = match (self.soft_time, self.hard_time) {
            (Some(s), Some(h)) => s <= h,
            _ => true,
        };
        let bytes_ok = match (self.soft_bytes, self.hard_bytes) {
            (Some(s), Some(h)) => s <= h,
            _ => true,
        };
        if time_ok && bytes_ok {
            Ok(())
        } else {
            Err(LifetimeError::SoftExceedsHard)
        }
    }
}

impl Default for LifetimeConfig {
    /// The IOS defaults: 3600 s and 4 608 000 KB hard, soft at 90 %.
    fn default() -> Self {
        let hard_time = Duration::from_secs(IOS_DEFAULT_SECONDS);
        let hard_bytes = IOS_DEFAULT_KILOBYTES.saturating_mul(KILOBYTE);
        Self {
            soft_time: Some(Duration::from_millis(percent_of(
                hard_time.as_millis(),
                DEFAULT_SOFT_PERCENT,
            ))),
            hard_time: Some(hard_time),
            soft_bytes: Some(percent_of(hard_bytes, DEFAULT_SOFT_PERCENT)),
            hard_bytes: Some(hard_bytes),
        }
    }
}

/// `value * percent / 100`, rounded down, without overflow.
fn percent_of(value: u64, percent: u8) -> u64 {
    let scaled = u128::from(value) * u128::from(percent) / 100;
    // `percent <= 100` in every caller, so this never saturates; be safe anyway.
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

/// A lifetime limit was reached. Which kind of limit follows from the call that returned
/// the event: [`Lifetime::add_bytes`] reports byte limits, [`Lifetime::on_timeout`] time
/// limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LifetimeEvent {
    /// Soft limit: start rekeying; the SA stays usable.
    Soft,
    /// Hard limit: stop using the SA and delete it.
    Hard,
}

/// The runtime lifetime state of one SA.
///
/// Invariants: `Soft` is reported at most once and `Hard` at most once, whichever limit
/// (time or bytes) is reached first. A `Hard` event implies the soft stage: if the hard
/// limit is reached before any soft event was reported (both time limits due at the same
/// call, or one `add_bytes` jumping past both byte limits), only `Hard` is reported and no
/// `Soft` follows, since there is nothing left to rekey early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Lifetime {
    cfg: LifetimeConfig,
    created: Instant,
    bytes: u64,
    soft_fired: bool,
    hard_fired: bool,
}

impl Lifetime {
    /// The lifetime of an SA installed at `now`.
    #[must_use]
    pub const fn new(cfg: LifetimeConfig, now: Instant) -> Self {
        Self {
            cfg,
            created: now,
            bytes: 0,
            soft_fired: false,
            hard_fired: false,
        }
    }

    /// The limits.
    #[must_use]
    pub const fn config(&self) -> &LifetimeConfig {
        &self.cfg
    }

    /// When the SA was installed.
    #[must_use]
    pub const fn created(&self) -> Instant {
        self.created
    }

    /// Bytes counted so far (saturating).
    #[must_use]
    pub const fn bytes_used(&self) -> u64 {
        self.bytes
    }

    /// Whether the soft stage has been reached (reported as `Soft`, or skipped by `Hard`).
    #[must_use]
    pub const fn is_soft_expired(&self) -> bool {
        self.soft_fired
    }

    /// Whether the hard limit has been reached: the SA must not be used any more.
    #[must_use]
    pub const fn is_hard_expired(&self) -> bool {
        self.hard_fired
    }

    /// Counts `n` more bytes processed by the SA (the caller decides which bytes count;
    /// IOS counts the protected payload). A limit is reached when the counter becomes
    /// greater than or equal to it.
    ///
    /// Returns the event this crossing causes, if any: `Hard` if the hard byte limit is
    /// reached now, else `Soft` if the soft byte limit is reached now and no `Soft` was
    /// reported before.
    #[must_use]
    pub fn add_bytes(&mut self, n: u64) -> Option<LifetimeEvent> {
        self.bytes = self.bytes.saturating_add(n);
        if self.hard_fired {
            return None;
        }
        if self.cfg.hard_bytes.is_some_and(|h| self.bytes >= h) {
            return Some(self.fire_hard());
        }
        if !self.soft_fired && self.cfg.soft_bytes.is_some_and(|s| self.bytes >= s) {
            self.soft_fired = true;
            return Some(LifetimeEvent::Soft);
        }
        None
    }

    fn soft_deadline(&self) -> Option<Instant> {
        self.cfg.soft_time.map(|d| self.created + d)
    }

    fn hard_deadline(&self) -> Option<Instant> {
        self.cfg.hard_time.map(|d| self.created + d)
    }

    /// The next time-based deadline (soft or hard) that has not fired yet, if any. Once the
    /// soft stage is reached (by time or by bytes) only the hard deadline remains.
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        if self.hard_fired {
            return None;
        }
        let hard = self.hard_deadline();
        let soft = if self.soft_fired {
            None
        } else {
            self.soft_deadline()
        };
        match (soft, hard) {
            (Some(s), Some(h)) => Some(s.min(h)),
            (s, h) => s.or(h),
        }
    }

    /// Reports the time-based event due at `now`, if any. A call before any deadline is a
    /// no-op returning `None`. If both the soft and the hard deadline are due, only `Hard`
    /// is returned (and `Soft` is never reported afterwards).
    #[must_use]
    pub fn on_timeout(&mut self, now: Instant) -> Option<LifetimeEvent> {
        if self.hard_fired {
            return None;
        }
        if self.hard_deadline().is_some_and(|h| now >= h) {
            return Some(self.fire_hard());
        }
        if !self.soft_fired && self.soft_deadline().is_some_and(|s| now >= s) {
            self.soft_fired = true;
            return Some(LifetimeEvent::Soft);
        }
        None
    }

    fn fire_hard(&mut self) -> LifetimeEvent {
        self.hard_fired = true;
        self.soft_fired = true;
        LifetimeEvent::Hard
    }

    /// What is left of the hard limits at `now`: time and bytes, `None` where there is no
    /// such limit, zero once reached. This is the `sa timing: remaining key lifetime
    /// (k/sec)` line of `show crypto ipsec sa`; see [`Lifetime::remaining_kb_secs`].
    #[must_use]
    pub fn remaining(&self, now: Instant) -> (Option<Duration>, Option<u64>) {
        let time = self.hard_deadline().map(|h| h - now);
        let bytes = self.cfg.hard_bytes.map(|h| h.saturating_sub(self.bytes));
        (time, bytes)
    }

    /// [`Lifetime::remaining`] in the units IOS prints: (kilobytes, seconds), both rounded
    /// down, as in `(4607999/3590)`.
    #[must_use]
    pub fn remaining_kb_secs(&self, now: Instant) -> (Option<u64>, Option<u64>) {
        let (time, bytes) = self.remaining(now);
        (bytes.map(|b| b / KILOBYTE), time.map(Duration::as_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Instant {
        Instant::from_secs(s)
    }

    const SOFT: Option<LifetimeEvent> = Some(LifetimeEvent::Soft);
    const HARD: Option<LifetimeEvent> = Some(LifetimeEvent::Hard);

    #[test]
    fn ios_defaults() {
        let cfg = LifetimeConfig::default();
        assert_eq!(cfg.hard_time, Some(Duration::from_secs(3600)));
        assert_eq!(cfg.soft_time, Some(Duration::from_secs(3240)));
        assert_eq!(cfg.hard_bytes, Some(4_608_000 * 1024));
        assert_eq!(cfg.soft_bytes, Some(4_608_000 * 1024 / 10 * 9));
        assert_eq!(cfg.validate(), Ok(()));
        assert_eq!(
            LifetimeConfig::from_hard(Some(3600), Some(4_608_000), DEFAULT_SOFT_PERCENT),
            Ok(cfg)
        );
    }

    #[test]
    fn from_hard_variants() {
        let cfg = LifetimeConfig::from_hard(Some(120), None, 0).unwrap();
        assert_eq!(cfg.soft_time, None);
        assert_eq!(cfg.hard_time, Some(Duration::from_secs(120)));
        assert_eq!(cfg.soft_bytes, None);
        assert_eq!(cfg.hard_bytes, None);

        let cfg = LifetimeConfig::from_hard(None, Some(10), 100).unwrap();
        assert_eq!(cfg.soft_bytes, Some(10_240));
        assert_eq!(cfg.hard_bytes, Some(10_240));
        assert_eq!(cfg.soft_time, None);

        // Rounds down to the millisecond.
        let cfg = LifetimeConfig::from_hard(Some(1), None, 33).unwrap();
        assert_eq!(cfg.soft_time, Some(Duration::from_millis(330)));

        assert_eq!(
            LifetimeConfig::from_hard(Some(1), None, 101),
            Err(LifetimeError::BadSoftPercent)
        );
        // Huge values saturate instead of overflowing.
        let cfg = LifetimeConfig::from_hard(Some(u64::MAX), Some(u64::MAX), 90).unwrap();
        assert_eq!(cfg.hard_bytes, Some(u64::MAX));
        assert_eq!(cfg.hard_time, Some(Duration::MAX));
        assert_eq!(cfg.validate(), Ok(()));
    }

    #[test]
    fn validate_rejects_soft_above_hard() {
        let mut cfg = LifetimeConfig::UNLIMITED;
        assert_eq!(cfg.validate(), Ok(()));
        cfg.soft_time = Some(Duration::from_secs(10));
        assert_eq!(cfg.validate(), Ok(()), "soft alone is fine");
        cfg.hard_time = Some(Duration::from_secs(9));
        assert_eq!(cfg.validate(), Err(LifetimeError::SoftExceedsHard));
        cfg.hard_time = Some(Duration::from_secs(10));
        assert_eq!(cfg.validate(), Ok(()));
        cfg.soft_bytes = Some(5);
        cfg.hard_bytes = Some(4);
        assert_eq!(cfg.validate(), Err(LifetimeError::SoftExceedsHard));
    }

    #[test]
    fn time_events_fire_exactly_once_at_their_deadlines() {
        let cfg = LifetimeConfig::from_hard(Some(100), None, 90).unwrap();
        let t0 = Instant::from_millis(5_000);
        let mut lt = Lifetime::new(cfg, t0);
        assert_eq!(lt.deadline(), Some(t0 + Duration::from_secs(90)));
        // Spurious wakeups before the deadline are no-ops.
        assert_eq!(lt.on_timeout(t0), None);
        assert_eq!(
            lt.on_timeout(t0 + Duration::from_millis(89_999)),
            None,
            "one millisecond early"
        );
        assert_eq!(lt.deadline(), Some(t0 + Duration::from_secs(90)));
        assert_eq!(lt.on_timeout(t0 + Duration::from_secs(90)), SOFT);
        assert!(lt.is_soft_expired());
        assert!(!lt.is_hard_expired());
        assert_eq!(lt.on_timeout(t0 + Duration::from_secs(90)), None);
        assert_eq!(lt.on_timeout(t0 + Duration::from_secs(95)), None);
        assert_eq!(lt.deadline(), Some(t0 + Duration::from_secs(100)));
        assert_eq!(lt.on_timeout(t0 + Duration::from_secs(100)), HARD);
        assert!(lt.is_hard_expired());
        assert_eq!(lt.deadline(), None);
        assert_eq!(lt.on_timeout(t0 + Duration::from_secs(1000)), None);
        assert_eq!(lt.add_bytes(u64::MAX), None);
    }

    #[test]
    fn late_timeout_with_both_due_reports_hard_only() {
        let cfg = LifetimeConfig::from_hard(Some(100), None, 90).unwrap();
        let mut lt = Lifetime::new(cfg, at(0));
        assert_eq!(lt.on_timeout(at(500)), HARD);
        assert_eq!(lt.on_timeout(at(500)), None);
        assert!(lt.is_soft_expired());
        assert_eq!(lt.deadline(), None);
    }

    #[test]
    fn soft_equal_to_hard_reports_hard_only() {
        let cfg = LifetimeConfig::from_hard(Some(10), Some(1), 100).unwrap();
        let mut lt = Lifetime::new(cfg, at(0));
        assert_eq!(lt.deadline(), Some(at(10)));
        assert_eq!(lt.on_timeout(at(10)), HARD);
        let mut lt = Lifetime::new(cfg, at(0));
        assert_eq!(lt.add_bytes(1024), HARD);
        assert_eq!(lt.on_timeout(at(10)), None);
    }

    #[test]
    fn bytes_cross_soft_then_hard() {
        let cfg = LifetimeConfig {
            soft_bytes: Some(900),
            hard_bytes: Some(1000),
            ..LifetimeConfig::UNLIMITED
        };
        let mut lt = Lifetime::new(cfg, at(0));
        assert_eq!(lt.deadline(), None);
        assert_eq!(lt.add_bytes(899), None);
        assert_eq!(lt.add_bytes(1), SOFT);
        assert_eq!(lt.add_bytes(0), None);
        assert_eq!(lt.add_bytes(50), None);
        assert_eq!(lt.add_bytes(49), None);
        assert_eq!(lt.bytes_used(), 999);
        assert_eq!(lt.add_bytes(1), HARD);
        assert_eq!(lt.add_bytes(1), None);
        assert!(lt.is_hard_expired());
        assert_eq!(lt.bytes_used(), 1001);
    }

    #[test]
    fn one_big_packet_jumps_both_byte_limits() {
        let cfg = LifetimeConfig {
            soft_bytes: Some(900),
            hard_bytes: Some(1000),
            ..LifetimeConfig::UNLIMITED
        };
        let mut lt = Lifetime::new(cfg, at(0));
        assert_eq!(lt.add_bytes(5000), HARD);
        assert_eq!(lt.add_bytes(5000), None);
    }

    #[test]
    fn byte_counter_saturates() {
        let cfg = LifetimeConfig {
            hard_bytes: Some(u64::MAX),
            ..LifetimeConfig::UNLIMITED
        };
        let mut lt = Lifetime::new(cfg, at(0));
        assert_eq!(lt.add_bytes(u64::MAX - 1), None);
        assert_eq!(lt.add_bytes(u64::MAX), HARD);
        assert_eq!(lt.bytes_used(), u64::MAX);
    }

    #[test]
    fn soft_by_bytes_then_only_hard_time_remains() {
        let cfg = LifetimeConfig::from_hard(Some(100), Some(1), 50).unwrap();
        let mut lt = Lifetime::new(cfg, at(0));
        assert_eq!(lt.deadline(), Some(at(50)));
        assert_eq!(lt.add_bytes(512), SOFT);
        assert_eq!(lt.deadline(), Some(at(100)));
        assert_eq!(lt.on_timeout(at(50)), None, "soft already reported");
        assert_eq!(lt.on_timeout(at(100)), HARD);
        assert_eq!(lt.add_bytes(512), None, "hard already reported");
    }

    #[test]
    fn soft_by_time_then_hard_by_bytes() {
        let cfg = LifetimeConfig::from_hard(Some(100), Some(1), 50).unwrap();
        let mut lt = Lifetime::new(cfg, at(0));
        assert_eq!(lt.on_timeout(at(60)), SOFT);
        assert_eq!(lt.add_bytes(600), None, "soft already reported");
        assert_eq!(lt.add_bytes(424), HARD);
        assert_eq!(lt.deadline(), None);
        assert_eq!(lt.on_timeout(at(100)), None);
    }

    #[test]
    fn unlimited_never_fires() {
        let mut lt = Lifetime::new(LifetimeConfig::UNLIMITED, at(0));
        assert_eq!(lt.deadline(), None);
        assert_eq!(lt.on_timeout(Instant::from_millis(u64::MAX)), None);
        assert_eq!(lt.add_bytes(u64::MAX), None);
        assert_eq!(lt.remaining(at(5)), (None, None));
    }

    #[test]
    fn remaining_like_show_crypto_ipsec_sa() {
        let mut lt = Lifetime::new(LifetimeConfig::default(), at(1000));
        assert_eq!(
            lt.remaining(at(1000)),
            (Some(Duration::from_secs(3600)), Some(4_608_000 * 1024))
        );
        assert_eq!(lt.add_bytes(1024), None);
        assert_eq!(
            lt.remaining_kb_secs(at(1010)),
            (Some(4_607_999), Some(3590))
        );
        assert_eq!(lt.add_bytes(1), None);
        // Partial kilobytes and seconds round down.
        assert_eq!(
            lt.remaining_kb_secs(at(1010) + Duration::from_millis(1)),
            (Some(4_607_998), Some(3589))
        );
        // Past the end, remaining is zero, never negative.
        assert_eq!(lt.remaining(at(10_000)).0, Some(Duration::ZERO));
        assert_eq!(lt.add_bytes(u64::MAX), HARD);
        assert_eq!(lt.remaining(at(1000)).1, Some(0));
    }

    #[test]
    fn error_display() {
        extern crate std;
        use std::string::ToString;
        assert_eq!(
            LifetimeError::SoftExceedsHard.to_string(),
            "soft lifetime exceeds hard lifetime"
        );
        assert_eq!(
            LifetimeError::BadSoftPercent.to_string(),
            "soft lifetime percentage above 100"
        );
    }
}
