//! Conversions between smoltcp's clock and the library's.
//!
//! Both count milliseconds from the port's epoch; smoltcp's is signed (microseconds
//! inside), the library's unsigned. Times before the epoch clamp to zero.

use ipsec_core::Instant;
use smoltcp::time::Instant as SmolInstant;

/// smoltcp's instant as the library's (millisecond resolution, negative -> zero).
#[must_use]
pub fn from_smoltcp(t: SmolInstant) -> Instant {
    Instant::from_millis(u64::try_from(t.total_millis()).unwrap_or(0))
}

/// The library's instant as smoltcp's (saturating at smoltcp's end of time).
#[must_use]
pub fn to_smoltcp(t: Instant) -> SmolInstant {
    // smoltcp keeps microseconds in an i64: stay well inside it.
    const MAX_MS: u64 = (i64::MAX / 1000) as u64;
    let ms = i64::try_from(t.as_millis().min(MAX_MS)).unwrap_or(i64::MAX / 1000);
    SmolInstant::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for ms in [0u64, 1, 999, 1_000, 86_400_000, 1 << 40] {
            assert_eq!(
                from_smoltcp(to_smoltcp(Instant::from_millis(ms))).as_millis(),
                ms
            );
        }
        assert_eq!(from_smoltcp(SmolInstant::from_millis(-5)), Instant::ZERO);
        assert!(to_smoltcp(Instant::from_millis(u64::MAX)).total_millis() > 0);
    }
}
