//! The round-trip times of one node's session over the last minute: the pure window behind the
//! latest value and the p50/p99 that `/api/nodes` shows (the histogram of every sample is
//! `tracerd_node_rtt_seconds` in `metrics::telemetry`). The caller gives the time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back the percentiles look.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Most samples kept: more than a minute of EKG polls at 10 per second; beyond it the oldest
/// go first, so the window never holds more than `MAX_SAMPLES * 24` bytes.
pub const MAX_SAMPLES: usize = 1024;

/// What `/api/nodes` shows of a node's round-trip times.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RttSummary {
    /// The last sample, in seconds.
    pub latest: f64,
    /// The median of the samples of the last minute, in seconds.
    pub p50: f64,
    /// The 99th percentile of the samples of the last minute, in seconds.
    pub p99: f64,
    /// How many samples the last minute holds.
    pub samples: usize,
}

/// Samples of the last [`WINDOW`], oldest first.
#[derive(Debug, Default)]
pub struct RttWindow {
    samples: VecDeque<(Instant, Duration)>,
    latest: Option<Duration>,
}

impl RttWindow {
    /// Adds a sample taken at `at`.
    pub fn record(&mut self, at: Instant, rtt: Duration) {
        self.expire(at);
        if self.samples.len() == MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((at, rtt));
        self.latest = Some(rtt);
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, _)) = self.samples.front() {
            if now.saturating_duration_since(at) <= WINDOW {
                break;
            }
            self.samples.pop_front();
        }
    }

    /// The latest sample and the percentiles of the last minute at `now`; `None` before the
    /// first sample. With no sample in the last minute, the percentiles are the latest value's.
    pub fn summary(&self, now: Instant) -> Option<RttSummary> {
        let latest = self.latest?;
        let mut recent: Vec<Duration> = self
            .samples
            .iter()
            .filter(|(at, _)| now.saturating_duration_since(*at) <= WINDOW)
            .map(|&(_, d)| d)
            .collect();
        recent.sort_unstable();
        let samples = recent.len();
        let pick = |q: f64| match samples {
            0 => latest.as_secs_f64(),
            // Nearest rank: the smallest sample with at least q of them at or below it.
            n => recent[((q * n as f64).ceil() as usize).clamp(1, n) - 1].as_secs_f64(),
        };
        Some(RttSummary {
            latest: latest.as_secs_f64(),
            p50: pick(0.5),
            p99: pick(0.99),
            samples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_are_nearest_rank_over_the_last_minute() {
        let t0 = Instant::now();
        let mut w = RttWindow::default();
        assert_eq!(w.summary(t0), None);
        // An old, slow sample that leaves the window.
        w.record(t0, ms(900));
        for i in 1..=100 {
            w.record(t0 + Duration::from_secs(30) + ms(i), ms(i));
        }
        let now = t0 + Duration::from_secs(61);
        let s = w.summary(now).unwrap();
        assert_eq!(s.samples, 100);
        assert_eq!(s.latest, 0.1);
        assert_eq!(s.p50, 0.05);
        assert_eq!(s.p99, 0.099);
        // A minute later nothing is recent: the latest stands for all.
        let s = w.summary(now + Duration::from_secs(60)).unwrap();
        assert_eq!((s.samples, s.p50, s.p99), (0, 0.1, 0.1));
    }

    #[test]
    fn the_window_is_bounded() {
        let t0 = Instant::now();
        let mut w = RttWindow::default();
        for i in 0..(MAX_SAMPLES as u64 * 3) {
            w.record(t0 + Duration::from_micros(i), ms(i % 7));
        }
        assert_eq!(w.samples.len(), MAX_SAMPLES);
    }
}
