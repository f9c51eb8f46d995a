//! Round-trip times of a Cardano session: the pure estimator. tracerd times the requests a
//! node answers at once — an EKG poll and a data-point request; a trace request is blocking
//! (the node holds it until it has objects), so its reply time is the node's, not the
//! network's — from when the request was written to when the first SDU of its reply was
//! decoded.
//!
//! That raw time holds the node's processing too. The protocol gives one way to take most of
//! it out: every SDU header carries the sender's clock (microseconds, lower 32 bits) at the
//! moment it sent the SDU, i.e. after the node processed the request. With tracerd's clock
//! `T` and the node's `t`, for request `i` sent at `T0ᵢ` and answered at node time `t2ᵢ`:
//! `aᵢ = t2ᵢ − T0ᵢ = offset + forward delay + processingᵢ`. The offset between the clocks is
//! unknown but constant over a short window, so `aᵢ − min(a)` over the last [`WINDOW`] is the
//! processing beyond the window's quickest answer (plus forward-delay jitter), and
//! `rttᵢ = rawᵢ − (aᵢ − min(a))`. What remains of processing is the quickest answer's; the
//! error from the two clocks' drift is at most drift × [`WINDOW`] (50 ppm: 0.5 ms). A node whose
//! timestamps do not advance (constant or zero) gets its raw times, never less than 0 nor
//! more than raw.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back the quickest answer is looked for.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Most answers kept for that: the window holds at most this many.
pub const MAX_KEPT: usize = 256;

/// The estimator of one session.
#[derive(Debug)]
pub struct ReplyClock {
    /// tracerd's time origin for this session.
    origin: Instant,
    /// The node's clock, unwrapped from its 32 bits: the last timestamp seen and the
    /// microseconds it stands for.
    remote: Option<(u32, i64)>,
    /// `(sent, a)` of the window's answers, oldest first.
    kept: VecDeque<(Instant, i64)>,
}

impl ReplyClock {
    /// A fresh estimator.
    pub fn new(origin: Instant) -> ReplyClock {
        ReplyClock {
            origin,
            remote: None,
            kept: VecDeque::new(),
        }
    }

    /// The round-trip time of a request written at `sent` whose reply's first SDU was
    /// decoded at `received` and stamped `remote_micros` by the node.
    pub fn sample(&mut self, sent: Instant, received: Instant, remote_micros: u32) -> Duration {
        let raw = received.saturating_duration_since(sent);
        // Consecutive answers are seconds apart, far less than the 35 minutes a signed 32-bit
        // difference covers, so the clock is unwrapped step by step.
        let remote = match self.remote {
            None => i64::from(remote_micros),
            Some((last, at)) => at + i64::from(remote_micros.wrapping_sub(last) as i32),
        };
        self.remote = Some((remote_micros, remote));
        let local = i64::try_from(sent.saturating_duration_since(self.origin).as_micros())
            .unwrap_or(i64::MAX);
        let a = remote.saturating_sub(local);
        while let Some(&(at, _)) = self.kept.front() {
            if sent.saturating_duration_since(at) <= WINDOW && self.kept.len() < MAX_KEPT {
                break;
            }
            self.kept.pop_front();
        }
        self.kept.push_back((sent, a));
        let least = self.kept.iter().map(|&(_, a)| a).min().unwrap_or(a);
        let excess = u64::try_from(a.saturating_sub(least)).unwrap_or(0);
        raw.saturating_sub(Duration::from_micros(excess))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A node whose clock is `offset` µs ahead (wrapping), one-way delay `d`, processing `p`.
    fn answer(
        clock: &mut ReplyClock,
        t0: Instant,
        at: Duration,
        offset: u64,
        d: Duration,
        p: Duration,
    ) -> Duration {
        let sent = t0 + at;
        let node_sends = at + d + p;
        let stamp = (offset + node_sends.as_micros() as u64) as u32;
        clock.sample(sent, sent + d + p + d, stamp)
    }

    #[test]
    fn the_nodes_processing_beyond_its_quickest_answer_is_taken_out() {
        let t0 = Instant::now();
        // The node's clock wraps its 32 bits during the run.
        let offset = u64::from(u32::MAX) - 2_500_000;
        let mut c = ReplyClock::new(t0);
        let d = ms(20);
        assert_eq!(answer(&mut c, t0, ms(0), offset, d, ms(1)), ms(41));
        for i in 1..10 {
            // Slow answers (30 ms of processing) still show the 40 ms path plus the
            // quickest answer's 1 ms.
            let at = Duration::from_secs(i);
            assert_eq!(answer(&mut c, t0, at, offset, d, ms(31)), ms(41), "{i}");
        }
    }

    #[test]
    fn timestamps_that_do_not_advance_give_the_raw_time() {
        let t0 = Instant::now();
        let mut c = ReplyClock::new(t0);
        for i in 0..5u64 {
            let sent = t0 + Duration::from_secs(i);
            assert_eq!(c.sample(sent, sent + ms(40 + i), 0), ms(40 + i));
        }
        // Garbage timestamps never make a time negative or larger than raw.
        for (i, stamp) in [u32::MAX, 7, 1 << 31, 3].into_iter().enumerate() {
            let sent = t0 + Duration::from_secs(10 + i as u64);
            let rtt = c.sample(sent, sent + ms(5), stamp);
            assert!(rtt <= ms(5));
        }
    }

    #[test]
    fn old_answers_leave_the_window() {
        let t0 = Instant::now();
        let mut c = ReplyClock::new(t0);
        let d = ms(10);
        // A quick answer long ago, then the node slows for good: once the quick answer is
        // out of the window, the new quickest (slow) one is the reference.
        answer(&mut c, t0, ms(0), 0, d, ms(0));
        let late = answer(&mut c, t0, WINDOW + ms(1000), 0, d, ms(50));
        assert_eq!(late, ms(70));
        for _ in 0..(MAX_KEPT * 2) {
            c.sample(t0, t0, 0);
        }
        assert!(c.kept.len() <= MAX_KEPT);
    }
}
