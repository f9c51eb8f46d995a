//! A sink's position in one node's machine-format files, as a pure value: the file (its
//! [`FileKey`], so positions order by file creation, then by byte) and the byte offset just
//! after the last line the remote confirmed. Also the cursor file's text and the lag
//! bookkeeping ([`Lag`]). No I/O, no clock: callers pass `now`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::logs::rotation::FileKey;

/// Extension of the files the sinks follow (`ForMachine`).
pub const EXT: &str = "json";

/// A byte position in a node's files: offsets only ever fall on line boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    /// The file.
    pub file: FileKey,
    /// Bytes of that file before the position.
    pub offset: u64,
}

impl Pos {
    /// The file's name (`node-<stamp>[_<n>].json`).
    pub fn file_name(&self) -> String {
        self.file.file_name(EXT)
    }

    /// Parses a file name and an offset, as stored in a cursor file or in ClickHouse.
    pub fn parse(file: &str, offset: u64) -> Option<Pos> {
        Some(Pos {
            file: FileKey::parse(file, EXT)?,
            offset,
        })
    }

    /// The cursor file's text: `<file name> <offset>\n`.
    pub fn to_text(&self) -> String {
        format!("{} {}\n", self.file_name(), self.offset)
    }

    /// Reads [`Pos::to_text`]'s output back; `None` for anything else.
    pub fn from_text(text: &str) -> Option<Pos> {
        let (file, offset) = text.strip_suffix('\n')?.split_once(' ')?;
        Pos::parse(file, offset.parse().ok()?)
    }
}

/// Most samples [`Lag`] keeps; past it every other one goes (the oldest stays, so the lag is
/// never under-reported).
const MAX_SAMPLES: usize = 4096;

/// How far behind a sink is for one node: the age of the oldest byte it has not had
/// confirmed. Each look at the files records the end of the node's data with the time it was
/// seen ([`Lag::saw_end`]); the lag is the time since the first end past the confirmed
/// position was seen, so it is exact to one polling period and zero when caught up.
#[derive(Debug, Default, Clone)]
pub struct Lag {
    samples: VecDeque<(Pos, Instant)>,
}

impl Lag {
    /// Records that the node's data ended at `end` at `now`.
    pub fn saw_end(&mut self, end: Pos, now: Instant) {
        if self.samples.back().is_some_and(|(p, _)| *p >= end) {
            return;
        }
        if self.samples.len() >= MAX_SAMPLES {
            let mut i = 0;
            self.samples.retain(|_| {
                i += 1;
                i % 2 == 1
            });
        }
        self.samples.push_back((end, now));
    }

    /// Forgets what the remote now holds (everything up to `confirmed`).
    pub fn confirmed(&mut self, confirmed: Pos) {
        while self
            .samples
            .front()
            .is_some_and(|(end, _)| *end <= confirmed)
        {
            self.samples.pop_front();
        }
    }

    /// The lag at `now`: zero when everything seen was confirmed.
    pub fn lag(&self, now: Instant) -> Duration {
        self.samples
            .front()
            .map_or(Duration::ZERO, |(_, t)| now.saturating_duration_since(*t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(stamp: i64, counter: u32, offset: u64) -> Pos {
        Pos {
            file: FileKey {
                stamp,
                counter,
                legacy: false,
            },
            offset,
        }
    }

    #[test]
    fn positions_order_by_file_then_offset_and_round_trip() {
        let a = pos(1_784_714_812, 0, 900);
        let b = pos(1_784_714_812, 1, 10);
        let c = pos(1_784_714_813, 0, 0);
        assert!(a < b && b < c);
        for p in [a, b, c] {
            assert_eq!(Pos::from_text(&p.to_text()), Some(p));
            assert_eq!(Pos::parse(&p.file_name(), p.offset), Some(p));
        }
        assert_eq!(Pos::from_text("node-x.json 3\n"), None);
        assert_eq!(Pos::from_text(&a.to_text().replace('\n', "")), None);
    }

    #[test]
    fn lag_is_the_age_of_the_oldest_unconfirmed_end() {
        let t0 = Instant::now();
        let mut lag = Lag::default();
        assert_eq!(lag.lag(t0), Duration::ZERO);
        lag.saw_end(pos(1, 0, 100), t0);
        lag.saw_end(pos(1, 0, 100), t0 + Duration::from_secs(1));
        lag.saw_end(pos(1, 0, 200), t0 + Duration::from_secs(2));
        assert_eq!(lag.lag(t0 + Duration::from_secs(5)), Duration::from_secs(5));
        lag.confirmed(pos(1, 0, 100));
        assert_eq!(lag.lag(t0 + Duration::from_secs(5)), Duration::from_secs(3));
        lag.confirmed(pos(1, 0, 200));
        assert_eq!(lag.lag(t0 + Duration::from_secs(5)), Duration::ZERO);
    }

    #[test]
    fn lag_samples_stay_bounded_and_keep_the_oldest() {
        let t0 = Instant::now();
        let mut lag = Lag::default();
        for i in 0..(3 * MAX_SAMPLES as u64) {
            lag.saw_end(pos(1, 0, i + 1), t0 + Duration::from_millis(i));
        }
        assert!(lag.samples.len() <= MAX_SAMPLES);
        assert_eq!(
            lag.lag(t0 + Duration::from_secs(100)),
            Duration::from_secs(100)
        );
    }
}
