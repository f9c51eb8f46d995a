//! The forwarder's pure bookkeeping, no I/O: [`Outbox`] (sequence numbers and the encoded
//! batches kept until tracerd acknowledges them) and [`StateSet`] (latest-value metrics and
//! data points: the whole set plus what changed since the last send).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

/// Latest-value state of metrics or data points: the whole set plus what changed since the
/// last send.
#[derive(Debug)]
pub(crate) struct StateSet<V> {
    pub(crate) all: BTreeMap<String, V>,
    pub(crate) dirty: BTreeMap<String, V>,
    /// The last update replaced the whole set.
    pub(crate) replaced: bool,
}

impl<V> Default for StateSet<V> {
    fn default() -> Self {
        StateSet {
            all: BTreeMap::new(),
            dirty: BTreeMap::new(),
            replaced: false,
        }
    }
}

impl<V: Clone> StateSet<V> {
    pub(crate) fn update(&mut self, full: bool, items: Vec<(String, V)>) {
        if full {
            self.all.clear();
            self.dirty.clear();
            self.replaced = true;
        }
        for (name, value) in items {
            self.all.insert(name.clone(), value.clone());
            self.dirty.insert(name, value);
        }
    }

    pub(crate) fn is_dirty(&self) -> bool {
        self.replaced || !self.dirty.is_empty()
    }

    /// What to send now: everything (`full`), or the changes since the last call.
    pub(crate) fn take(&mut self, full: bool) -> (bool, Vec<(String, V)>) {
        let full = full || self.replaced;
        self.replaced = false;
        let changed = std::mem::take(&mut self.dirty);
        if full {
            (
                true,
                self.all
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )
        } else {
            (false, changed.into_iter().collect())
        }
    }
}

/// A kept, encoded batch.
#[derive(Debug)]
pub(crate) struct Kept {
    pub(crate) first_seq: u64,
    pub(crate) last_seq: u64,
    pub(crate) frame: Bytes,
    /// Written completely at least once (a later write counts as a resend).
    pub(crate) written: bool,
}

impl Kept {
    pub(crate) fn len(&self) -> usize {
        (self.last_seq - self.first_seq + 1) as usize
    }
}

/// The sequence-number bookkeeping of the forwarder's task.
#[derive(Debug)]
pub(crate) struct Outbox {
    /// Sent (or to be resent) and not yet acknowledged, oldest first.
    pub(crate) kept: VecDeque<Kept>,
    /// The number the next object gets.
    pub(crate) next_seq: u64,
    /// Highest sequence number acknowledged.
    pub(crate) acked_seq: u64,
}

impl Outbox {
    pub(crate) fn new() -> Outbox {
        Outbox {
            kept: VecDeque::new(),
            next_seq: 1,
            acked_seq: 0,
        }
    }

    /// Releases batches covered by `seq`; returns how many objects were released.
    pub(crate) fn ack(&mut self, seq: u64) -> usize {
        if seq <= self.acked_seq {
            return 0;
        }
        self.acked_seq = seq;
        let mut released = 0;
        while self.kept.front().is_some_and(|k| k.last_seq <= seq) {
            if let Some(k) = self.kept.pop_front() {
                released += k.len();
            }
        }
        released
    }

    /// Handles `HelloAccept.persisted_seq`: returns (objects acknowledged by it, objects
    /// superseded). When tracerd has persisted sequence numbers this forwarder never assigned
    /// (an earlier process with the same node name), numbering continues after them.
    pub(crate) fn accept(&mut self, persisted: u64) -> (usize, usize) {
        if persisted < self.next_seq {
            return (self.ack(persisted), 0);
        }
        // Everything we kept is at or below `persisted`: tracerd would drop it as duplicate.
        let superseded = self.kept.drain(..).map(|k| k.len()).sum();
        self.acked_seq = self.acked_seq.max(persisted);
        self.next_seq = persisted + 1;
        (0, superseded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn kept(first: u64, last: u64) -> Kept {
        Kept {
            first_seq: first,
            last_seq: last,
            frame: Bytes::new(),
            written: true,
        }
    }

    #[test]
    pub(crate) fn acks_release_whole_batches_in_order() {
        let mut o = Outbox::new();
        o.kept.extend([kept(1, 10), kept(11, 20), kept(21, 25)]);
        o.next_seq = 26;
        assert_eq!(o.ack(5), 0);
        assert_eq!(o.ack(20), 20);
        assert_eq!(o.ack(19), 0);
        assert_eq!(o.kept.len(), 1);
        assert_eq!(o.ack(25), 5);
        assert!(o.kept.is_empty());
    }

    #[test]
    pub(crate) fn accept_trims_or_continues_numbering() {
        let mut o = Outbox::new();
        o.kept.extend([kept(1, 10), kept(11, 20)]);
        o.next_seq = 21;
        // tracerd restarted and knows nothing: keep everything for resend.
        assert_eq!(o.accept(0), (0, 0));
        assert_eq!(o.kept.len(), 2);
        assert_eq!(o.accept(10), (10, 0));
        assert_eq!(o.kept.len(), 1);
        // tracerd has sequence numbers from an earlier process of the same name.
        assert_eq!(o.accept(100), (0, 10));
        assert_eq!(o.next_seq, 101);
        let mut fresh = Outbox::new();
        assert_eq!(fresh.accept(41), (0, 0));
        assert_eq!(fresh.next_seq, 42);
    }

    #[test]
    pub(crate) fn state_sets_send_changes_then_everything_after_reconnect() {
        let mut s = StateSet::<i64>::default();
        s.update(false, vec![("a".into(), 1), ("b".into(), 2)]);
        assert_eq!(
            s.take(false),
            (false, vec![("a".into(), 1), ("b".into(), 2)])
        );
        assert!(!s.is_dirty());
        s.update(false, vec![("a".into(), 3)]);
        assert_eq!(s.take(false), (false, vec![("a".into(), 3)]));
        assert_eq!(s.take(true), (true, vec![("a".into(), 3), ("b".into(), 2)]));
        s.update(true, vec![("c".into(), 4)]);
        assert_eq!(s.take(false), (true, vec![("c".into(), 4)]));
    }
}
