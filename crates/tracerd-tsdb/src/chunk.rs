//! Gorilla-style chunks: delta-of-delta timestamps and XOR floats (Pelkonen et al., VLDB 2015),
//! with timestamp buckets tuned for millisecond jitter around a regular interval.
//!
//! Layout of one chunk: the first timestamp (64 bits) and value (64 bits) raw; then per sample
//! the timestamp's delta-of-delta (`0` | `10`+7 bits | `110`+12 | `1110`+20 | `1111`+64) and
//! the value XOR its predecessor (`0` when equal; `10` + meaningful bits inside the previous
//! window; `11` + 5 bits leading zeros + 6 bits length + the bits).

use crate::bits::{BitReader, BitWriter};
use tracerd_promql::Sample;

/// Delta-of-delta buckets: (control bits, control length, payload bits).
const DOD_BUCKETS: [(u64, u32, u32); 3] = [(0b10, 2, 7), (0b110, 3, 12), (0b1110, 4, 20)];

fn fits(v: i64, bits: u32) -> bool {
    let lo = -(1i64 << (bits - 1)) + 1;
    let hi = 1i64 << (bits - 1);
    v >= lo && v <= hi
}

/// The open (head) chunk of a series: samples are appended in time order.
#[derive(Debug, Clone)]
pub struct Encoder {
    w: BitWriter,
    count: u32,
    mint: i64,
    maxt: i64,
    delta: i64,
    prev_v: u64,
    leading: u32,
    trailing: u32,
}

impl Encoder {
    pub fn new(expected_samples: usize) -> Self {
        Encoder {
            // About 1.2 bytes a sample for regular data, plus the raw first sample.
            w: BitWriter::with_capacity(16 + expected_samples + expected_samples / 4),
            count: 0,
            mint: 0,
            maxt: 0,
            delta: 0,
            prev_v: 0,
            leading: u32::MAX,
            trailing: 0,
        }
    }

    pub fn count(&self) -> u32 {
        self.count
    }
    pub fn mint(&self) -> i64 {
        self.mint
    }
    pub fn maxt(&self) -> i64 {
        self.maxt
    }
    pub fn last_value(&self) -> f64 {
        f64::from_bits(self.prev_v)
    }
    /// Heap bytes this encoder holds.
    pub fn heap_bytes(&self) -> usize {
        self.w.capacity()
    }

    /// Append a sample; the caller guarantees `t > maxt()` when `count() > 0`.
    pub fn push(&mut self, t: i64, v: f64) {
        let bits = v.to_bits();
        if self.count == 0 {
            self.w.write(t as u64, 64);
            self.w.write(bits, 64);
            self.mint = t;
        } else {
            let delta = t.wrapping_sub(self.maxt);
            let dod = delta.wrapping_sub(self.delta);
            if dod == 0 {
                self.w.bit(false);
            } else if let Some(&(ctl, ctl_len, n)) =
                DOD_BUCKETS.iter().find(|&&(_, _, n)| fits(dod, n))
            {
                self.w.write(ctl, ctl_len);
                self.w.write(dod as u64, n);
            } else {
                self.w.write(0b1111, 4);
                self.w.write(dod as u64, 64);
            }
            self.delta = delta;
            self.push_value(bits);
        }
        self.prev_v = bits;
        self.maxt = t;
        self.count += 1;
    }

    fn push_value(&mut self, bits: u64) {
        let xor = bits ^ self.prev_v;
        if xor == 0 {
            self.w.bit(false);
            return;
        }
        self.w.bit(true);
        let leading = xor.leading_zeros().min(31);
        let trailing = xor.trailing_zeros();
        if self.leading != u32::MAX && leading >= self.leading && trailing >= self.trailing {
            self.w.bit(false);
            let len = 64 - self.leading - self.trailing;
            self.w.write(xor >> self.trailing, len);
        } else {
            self.w.bit(true);
            let len = 64 - leading - trailing;
            self.w.write(u64::from(leading), 5);
            // A length of 64 is written as 0 (it never is 0 for a non-zero XOR).
            self.w.write(u64::from(len % 64), 6);
            self.w.write(xor >> trailing, len);
            self.leading = leading;
            self.trailing = trailing;
        }
    }

    /// The samples so far.
    pub fn iter(&self) -> ChunkIter<'_> {
        ChunkIter::new(self.w.bytes(), self.count)
    }

    /// Close this chunk: its bytes trimmed, its time range and count.
    pub fn seal(self) -> Chunk {
        Chunk {
            mint: self.mint,
            maxt: self.maxt,
            count: self.count,
            data: self.w.into_boxed(),
        }
    }
}

/// A sealed chunk: immutable.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub mint: i64,
    pub maxt: i64,
    pub count: u32,
    pub data: Box<[u8]>,
}

impl Chunk {
    pub fn iter(&self) -> ChunkIter<'_> {
        ChunkIter::new(&self.data, self.count)
    }
    /// Bytes this chunk costs: its payload plus the fixed part of the struct.
    pub fn bytes(&self) -> usize {
        self.data.len() + std::mem::size_of::<Chunk>()
    }
}

/// Decodes the samples of a chunk in order.
#[derive(Debug, Clone)]
pub struct ChunkIter<'a> {
    r: BitReader<'a>,
    left: u32,
    first: bool,
    t: i64,
    delta: i64,
    v: u64,
    leading: u32,
    len: u32,
}

impl<'a> ChunkIter<'a> {
    fn new(bytes: &'a [u8], count: u32) -> Self {
        ChunkIter {
            r: BitReader::new(bytes),
            left: count,
            first: true,
            t: 0,
            delta: 0,
            v: 0,
            leading: 0,
            len: 0,
        }
    }

    fn read_dod(&mut self) -> Option<i64> {
        // The control is `0`, `10`, `110`, `1110` or `1111`: its leading ones, in one look.
        let ones = ((self.r.peek(4) << 60).leading_ones()).min(4);
        if ones == 0 {
            self.r.skip(1)?;
            return Some(0);
        }
        let n = match DOD_BUCKETS.get(ones as usize - 1) {
            Some(&(_, _, bits)) => {
                self.r.skip(ones + 1)?;
                bits
            }
            None => {
                self.r.skip(4)?;
                64
            }
        };
        let raw = self.r.read(n)?;
        if n == 64 {
            return Some(raw as i64);
        }
        // The bucket holds [-(2^(n-1)) + 1, 2^(n-1)], as Prometheus's XOR chunks do.
        Some(if raw > 1 << (n - 1) {
            raw as i64 - (1i64 << n)
        } else {
            raw as i64
        })
    }

    fn next_inner(&mut self) -> Option<Sample> {
        if self.first {
            self.first = false;
            self.t = self.r.read(64)? as i64;
            self.v = self.r.read(64)?;
        } else {
            let dod = self.read_dod()?;
            self.delta = self.delta.wrapping_add(dod);
            self.t = self.t.wrapping_add(self.delta);
            // The value's control: `0` (same value), `10` (same window), `11` (new window).
            let ctl = self.r.peek(2);
            if ctl >= 0b10 {
                self.r.skip(2)?;
                if ctl == 0b11 {
                    let w = self.r.read(11)? as u32;
                    self.leading = w >> 6;
                    let len = w & 0x3f;
                    self.len = if len == 0 { 64 } else { len };
                }
                let trailing = 64 - self.leading - self.len;
                let bits = self.r.read(self.len)?;
                self.v ^= bits << trailing;
            } else {
                self.r.skip(1)?;
            }
        }
        Some(Sample {
            t: self.t,
            v: f64::from_bits(self.v),
        })
    }
}

impl Iterator for ChunkIter<'_> {
    type Item = Sample;
    fn next(&mut self) -> Option<Sample> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let s = self.next_inner();
        if s.is_none() {
            self.left = 0;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracerd_promql::{is_stale_nan, stale_nan};

    fn round_trip(samples: &[(i64, f64)]) -> usize {
        let mut e = Encoder::new(samples.len());
        for &(t, v) in samples {
            e.push(t, v);
        }
        let head: Vec<(i64, u64)> = e.iter().map(|s| (s.t, s.v.to_bits())).collect();
        let c = e.seal();
        let sealed: Vec<(i64, u64)> = c.iter().map(|s| (s.t, s.v.to_bits())).collect();
        let want: Vec<(i64, u64)> = samples.iter().map(|&(t, v)| (t, v.to_bits())).collect();
        assert_eq!(head, want);
        assert_eq!(sealed, want);
        c.data.len()
    }

    #[test]
    fn regular_constant_series_costs_about_two_bits_a_sample() {
        let s: Vec<(i64, f64)> = (0..120)
            .map(|i| (1_700_000_000_000 + i * 1000, 42.0))
            .collect();
        let n = round_trip(&s);
        // 16 raw bytes, the first delta (15 + 1 bits), then 2 bits a sample.
        assert_eq!(n, (128 + 16 + 118 * 2usize).div_ceil(8), "{n} bytes");
    }

    #[test]
    fn every_timestamp_bucket_and_value_shape_round_trips() {
        let mut t = -5_000i64;
        let mut s = Vec::new();
        let gaps = [
            1000,
            1000,
            1003,
            997,
            1000,
            1500,
            3000,
            100_000,
            1,
            9_000_000_000,
            1000,
            2,
        ];
        let vals = [
            0.0,
            -0.0,
            1.0,
            f64::NAN,
            stale_nan(),
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            f64::MAX,
            1e-300,
            123456789.125,
            -7.5,
        ];
        for i in 0..400 {
            t += gaps[i % gaps.len()];
            s.push((t, vals[(i * 7) % vals.len()]));
        }
        round_trip(&s);
        let mut e = Encoder::new(4);
        e.push(1, stale_nan());
        assert!(is_stale_nan(e.iter().next().unwrap().v));
    }

    #[test]
    fn counter_with_millisecond_jitter_stays_small() {
        let s: Vec<(i64, f64)> = (0..120)
            .map(|i| (i * 1000 + [0, 3, -2, 5][i as usize % 4], (i * 3) as f64))
            .collect();
        let n = round_trip(&s);
        assert!(n < 120 * 4, "{n} bytes");
    }

    #[test]
    fn fits_is_the_signed_range_of_the_bucket() {
        assert!(fits(64, 7) && fits(-63, 7));
        assert!(!fits(65, 7) && !fits(-64, 7));
    }
}
