//! The bounded, sharded queue between sampling and sending, as a pure value: a series always
//! goes to the same shard (by a hash of its labels), so one sender per shard keeps its samples
//! in order; a full shard drops its oldest samples (counted by the caller).

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};

use super::proto::SeriesLabels;

/// One queued sample.
pub type Item = (SeriesLabels, f64, i64);

/// The shard of a series among `shards`.
pub fn shard_of(labels: &[(String, String)], shards: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    labels.hash(&mut h);
    (h.finish() % shards.max(1) as u64) as usize
}

/// One shard's queue.
#[derive(Debug)]
pub struct Shard {
    items: VecDeque<Item>,
    capacity: usize,
}

impl Shard {
    /// An empty shard holding at most `capacity` samples.
    pub fn new(capacity: usize) -> Shard {
        Shard {
            items: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Appends a sample; returns how many of the oldest were dropped to make room.
    pub fn push(&mut self, item: Item) -> u64 {
        let mut dropped = 0;
        while self.items.len() >= self.capacity {
            self.items.pop_front();
            dropped += 1;
        }
        self.items.push_back(item);
        dropped
    }

    /// Takes up to `max` of the oldest samples.
    pub fn take(&mut self, max: usize) -> Vec<Item> {
        let n = self.items.len().min(max);
        self.items.drain(..n).collect()
    }

    /// Samples waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Timestamp of the oldest waiting sample.
    pub fn oldest(&self) -> Option<i64> {
        self.items.front().map(|i| i.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_full_shard_drops_the_oldest_and_takes_in_order() {
        let l: SeriesLabels = Arc::new(vec![("__name__".into(), "m".into())]);
        let mut s = Shard::new(3);
        for t in 0..5 {
            s.push((l.clone(), 0.0, t));
        }
        assert_eq!(s.len(), 3);
        let ts: Vec<i64> = s.take(2).into_iter().map(|i| i.2).collect();
        assert_eq!(ts, [2, 3]);
        assert_eq!(s.take(10).len(), 1);
        assert_eq!(s.len(), 0);
        let labels = vec![("__name__".to_string(), "x".to_string())];
        assert_eq!(shard_of(&labels, 4), shard_of(&labels, 4));
        assert!(shard_of(&labels, 4) < 4);
    }
}
