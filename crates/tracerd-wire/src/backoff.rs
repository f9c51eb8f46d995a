//! [`Backoff`]: the one capped exponential backoff of every retry loop on either side (the
//! forwarder's reconnects, ConnectTo dialing, the accept loops): `initial * 2^attempt`, at
//! most `max`, optionally with ±20 % jitter, reset by the caller after a success.

use std::time::Duration;

/// A capped exponential backoff. [`Backoff::next_delay`] returns the pause before the next attempt
/// and doubles the one after it; [`Backoff::reset`] starts again from `initial`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: bool,
    attempt: u32,
}

impl Backoff {
    /// `initial` doubling up to `max`, without jitter.
    pub const fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            jitter: false,
            attempt: 0,
        }
    }

    /// The same, with each pause scaled by a factor in 0.8..=1.2, so that many clients that
    /// failed together do not retry together.
    pub const fn jittered(self) -> Backoff {
        Backoff {
            jitter: true,
            ..self
        }
    }

    /// The pause [`Backoff::next_delay`] returns next, before jitter.
    pub fn current(&self) -> Duration {
        self.initial
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max)
    }

    /// The pause before the next attempt; the one after it is twice as long (capped).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current();
        self.attempt = self.attempt.saturating_add(1);
        if self.jitter {
            jitter(base, noise())
        } else {
            base
        }
    }

    /// Starts again from `initial` (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// `base` scaled by a factor of 0.8..=1.2 taken from `noise`.
fn jitter(base: Duration, noise: u64) -> Duration {
    // noise % 401 is in 0..=400, i.e. a factor of 0.8..=1.2.
    let factor = 800 + (noise % 401);
    base.saturating_mul(factor as u32) / 1000
}

fn noise() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    u64::from(t).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 17
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The jittered pause before attempt `attempt` (0-based) with the given noise.
    fn delay(initial: Duration, max: Duration, attempt: u32, noise: u64) -> Duration {
        let mut b = Backoff::new(initial, max).jittered();
        for _ in 0..attempt {
            b.next_delay();
        }
        jitter(b.current(), noise)
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let i = Duration::from_millis(100);
        let m = Duration::from_secs(5);
        assert_eq!(delay(i, m, 0, 200), Duration::from_millis(100));
        assert_eq!(delay(i, m, 3, 200), Duration::from_millis(800));
        assert_eq!(delay(i, m, 30, 200), m);
        assert_eq!(delay(i, m, 0, 0), Duration::from_millis(80));
        assert_eq!(delay(i, m, 0, 400), Duration::from_millis(120));
        let mut b = Backoff::new(i, m).jittered();
        for _ in 0..40 {
            let d = b.next_delay();
            assert!(d >= i * 8 / 10 && d <= m * 12 / 10, "{d:?}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut seen = Vec::new();
        for _ in 0..7 {
            seen.push(b.next_delay().as_secs());
        }
        assert_eq!(seen, vec![1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        assert_eq!(b.current(), Duration::from_secs(1));
    }
}
