//! The durations the daemon derives from config values, each through [`secs`], which
//! saturates instead of panicking (issue 12, point 11: `handshakeTimeoutSecs: 1e300` once
//! passed validation and then panicked in `Duration::from_secs_f64` on every connection).
//! Validation keeps every value in its range (`shape.rs`); these conversions hold even for
//! a value that bypassed it. Property-tested over random values of every numeric key in
//! `tests/config_values.rs`.

use std::time::Duration;

use super::schema::{Durability, Limits, TracerdSettings};

/// Longest duration derived from a config value: 100 years (an `Instant` plus it cannot
/// overflow).
pub const MAX_DERIVED: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `seconds` as a `Duration`: NaN and negatives are 0, anything over [`MAX_DERIVED`] is it.
pub fn secs(seconds: f64) -> Duration {
    if seconds.is_nan() || seconds <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(seconds).map_or(MAX_DERIVED, |d| d.min(MAX_DERIVED))
}

/// `n` units of `unit` as a `Duration`, saturating at [`MAX_DERIVED`].
pub fn times(unit: Duration, n: u64) -> Duration {
    u32::try_from(n)
        .ok()
        .and_then(|n| unit.checked_mul(n))
        .map_or(MAX_DERIVED, |d| d.min(MAX_DERIVED))
}

impl Limits {
    /// `handshakeTimeoutSecs`.
    pub fn handshake_timeout(&self) -> Duration {
        secs(self.handshake_timeout_secs)
    }

    /// `idleTimeoutSecs`.
    pub fn idle_timeout(&self) -> Duration {
        secs(self.idle_timeout_secs)
    }
}

impl TracerdSettings {
    /// `shutdownGraceSecs`.
    pub fn shutdown_grace(&self) -> Duration {
        secs(self.shutdown_grace_secs)
    }

    /// `departedSeriesSecs`.
    pub fn departed_series(&self) -> Duration {
        times(Duration::from_secs(1), self.departed_series_secs)
    }
}

impl Durability {
    /// `fsyncIntervalMs` (at least 1 ms).
    pub fn fsync_interval(&self) -> Duration {
        times(Duration::from_millis(1), self.fsync_interval_ms.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_saturate() {
        assert_eq!(secs(1e300), MAX_DERIVED);
        assert_eq!(secs(f64::INFINITY), MAX_DERIVED);
        assert_eq!(secs(f64::NAN), Duration::ZERO);
        assert_eq!(secs(-5.0), Duration::ZERO);
        assert_eq!(secs(1.5), Duration::from_millis(1500));
        assert_eq!(times(Duration::from_secs(1), u64::MAX), MAX_DERIVED);
        assert_eq!(
            times(Duration::from_millis(1), 20),
            Duration::from_millis(20)
        );
        let _ = std::time::Instant::now() + MAX_DERIVED;
    }
}
