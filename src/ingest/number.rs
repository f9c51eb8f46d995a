//! Sequencing of one node's trace batches, pure: [`number`] assigns sequence numbers to
//! batches that carry none, trims what was already persisted (a node resending after a
//! reconnect), and logs gaps. No I/O, no clock.

use crate::model::{TraceBatch, TraceObject};

/// Objects on their way to the writer, numbered up to `last_seq`.
pub(super) struct Job {
    pub(super) objects: Vec<TraceObject>,
    pub(super) last_seq: u64,
    /// The queue budget this job holds until the writer is done with it (dropped with it).
    pub(super) budget: Option<Budget>,
}

/// The permits of a queued job: its node's share and the global one.
pub(super) struct Budget {
    pub(super) _node: tokio::sync::OwnedSemaphorePermit,
    pub(super) _global: tokio::sync::OwnedSemaphorePermit,
}

/// What queued objects cost in memory: each object's own size plus its strings' capacities
/// (an empty object is 2 bytes on the wire and ~`size_of::<TraceObject>()` decoded).
pub(super) fn cost(objects: &[TraceObject]) -> u64 {
    let per_object = std::mem::size_of::<TraceObject>() as u64;
    objects
        .iter()
        .map(|o| {
            per_object
                + (o.namespace.capacity()
                    + o.hostname.capacity()
                    + o.thread_id.capacity()
                    + o.machine.capacity()
                    + o.human.as_ref().map_or(0, String::capacity)) as u64
        })
        .sum()
}
/// Assigns sequence numbers, trims what was already persisted, and logs gaps. Returns `None`
/// when nothing new is left.
pub(super) fn number(
    batch: TraceBatch,
    expected: &mut u64,
    node: &str,
    duplicates: &prometheus::IntCounter,
) -> Option<Job> {
    let TraceBatch {
        first_seq,
        mut objects,
    } = batch;
    if objects.is_empty() {
        return None;
    }
    let first = if first_seq == 0 { *expected } else { first_seq };
    let count = objects.len() as u64;
    let last = first + count - 1;
    if last < *expected {
        duplicates.inc_by(count);
        return None;
    }
    if first < *expected {
        let skip = *expected - first;
        duplicates.inc_by(skip);
        objects.drain(..skip as usize);
    } else if first > *expected {
        tracing::warn!(
            node,
            expected = *expected,
            got = first,
            missing = first - *expected,
            "gap in sequence numbers: the node did not send these objects"
        );
    }
    *expected = last + 1;
    Some(Job {
        objects,
        last_seq: last,
        budget: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DetailLevel, Severity};

    fn batch(first_seq: u64, n: usize) -> TraceBatch {
        let obj = TraceObject {
            namespace: "a".into(),
            severity: Severity::Info,
            detail: DetailLevel::Normal,
            timestamp_ns: 0,
            hostname: String::new(),
            thread_id: String::new(),
            machine: "{}".into(),
            human: None,
            form: Default::default(),
        };
        TraceBatch {
            first_seq,
            objects: vec![obj; n],
        }
    }

    #[test]
    fn numbering_trims_duplicates_and_accepts_gaps() {
        let dup = prometheus::IntCounter::new("d", "d").unwrap();
        let mut expected = 11;
        assert!(number(batch(1, 10), &mut expected, "n", &dup).is_none());
        assert_eq!(dup.get(), 10);
        let job = number(batch(8, 5), &mut expected, "n", &dup).unwrap();
        assert_eq!((job.objects.len(), job.last_seq, expected), (2, 12, 13));
        assert_eq!(dup.get(), 13);
        let job = number(batch(20, 1), &mut expected, "n", &dup).unwrap();
        assert_eq!((job.last_seq, expected), (20, 21));
        let job = number(batch(0, 3), &mut expected, "n", &dup).unwrap();
        assert_eq!((job.last_seq, expected), (23, 24));
        assert!(number(batch(30, 0), &mut expected, "n", &dup).is_none());
    }
}
