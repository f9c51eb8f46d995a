//! Sequencing of one node's trace batches, pure: [`number`] assigns sequence numbers to
//! batches that carry none, trims what was already persisted (a node resending after a
//! reconnect), and logs gaps. No I/O, no clock.

use crate::model::{TraceBatch, TraceObject};

/// Objects on their way to the writer, numbered up to `last_seq`: boxed, so that a node's
/// queue (an `mpsc` channel whose first block of 32 slots is allocated with it) costs 32
/// pointers, 256 bytes, on every idle node rather than 32 jobs, 2 KiB (issue 21); one
/// allocation per batch more.
pub(super) struct Job(Box<JobParts>);

impl std::ops::Deref for Job {
    type Target = JobParts;
    fn deref(&self) -> &JobParts {
        &self.0
    }
}

impl std::ops::DerefMut for Job {
    fn deref_mut(&mut self) -> &mut JobParts {
        &mut self.0
    }
}

impl Job {
    /// A job of `parts`.
    pub(super) fn new(parts: JobParts) -> Job {
        Job(Box::new(parts))
    }
}

/// What a [`Job`] holds.
pub(super) struct JobParts {
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

/// What queued objects cost in memory: each object's own size plus its strings' lengths
/// (an empty object is 2 bytes on the wire and ~`size_of::<TraceObject>()` decoded). A
/// native object's strings are slices of its frame, so their lengths are the frame's bytes
/// (less a few bytes of protobuf tags per field); an owned string's spare capacity is not
/// counted (the Cardano and prost paths build exact-length strings).
pub(super) fn cost(objects: &[TraceObject]) -> u64 {
    let per_object = std::mem::size_of::<TraceObject>() as u64;
    objects
        .iter()
        .map(|o| {
            per_object
                + (o.namespace.len()
                    + o.hostname.len()
                    + o.thread_id.len()
                    + o.machine.len()
                    + o.human.as_deref().map_or(0, str::len)) as u64
        })
        .sum()
}
/// The highest sequence number an object may have: numbers never wrap, and the next expected
/// number (`last + 1`) must still be a `u64`.
pub const MAX_SEQ: u64 = u64::MAX - 1;

/// A batch whose objects would be numbered past [`MAX_SEQ`]; refused whole, nothing of it
/// is queued and the sequence state is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sequence numbers would pass {MAX_SEQ}: a batch of {count} objects from sequence number {first}")]
pub struct SeqOverflow {
    /// The first object's sequence number (assigned by tracerd when the batch had none).
    pub first: u64,
    /// Objects in the batch.
    pub count: u64,
}

/// Assigns sequence numbers, trims what was already persisted, and logs gaps. Returns `None`
/// when nothing new is left; refuses a batch that would pass [`MAX_SEQ`].
pub(super) fn number(
    batch: TraceBatch,
    expected: &mut u64,
    node: &str,
    duplicates: &prometheus::IntCounter,
) -> Result<Option<Job>, SeqOverflow> {
    let TraceBatch {
        first_seq,
        mut objects,
    } = batch;
    if objects.is_empty() {
        return Ok(None);
    }
    let first = if first_seq == 0 { *expected } else { first_seq };
    let count = objects.len() as u64;
    let last = match first.checked_add(count - 1) {
        Some(last) if last <= MAX_SEQ => last,
        _ => return Err(SeqOverflow { first, count }),
    };
    if last < *expected {
        duplicates.inc_by(count);
        return Ok(None);
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
    Ok(Some(Job::new(JobParts {
        objects,
        last_seq: last,
        budget: None,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DetailLevel, Severity, Text};

    fn batch(first_seq: u64, n: usize) -> TraceBatch {
        let obj = TraceObject {
            namespace: "a".into(),
            severity: Severity::Info,
            detail: DetailLevel::Normal,
            timestamp_ns: 0,
            hostname: Text::new(),
            thread_id: Text::new(),
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
        let number = |b, e: &mut u64, n, d| number(b, e, n, d).unwrap();
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

    #[test]
    fn sequence_numbers_never_wrap() {
        let dup = prometheus::IntCounter::new("d", "d").unwrap();
        let mut expected = MAX_SEQ - 2;
        let job = number(batch(0, 2), &mut expected, "n", &dup)
            .unwrap()
            .unwrap();
        assert_eq!((job.last_seq, expected), (MAX_SEQ - 1, MAX_SEQ));
        // One object left: a batch of two (numbered by tracerd or by the node) is refused
        // whole and changes nothing.
        let err = number(batch(0, 2), &mut expected, "n", &dup).err().unwrap();
        assert_eq!(
            err,
            SeqOverflow {
                first: MAX_SEQ,
                count: 2
            }
        );
        let err = number(batch(u64::MAX, 1), &mut expected, "n", &dup)
            .err()
            .unwrap();
        assert_eq!(err.first, u64::MAX);
        assert_eq!(expected, MAX_SEQ);
        let job = number(batch(0, 1), &mut expected, "n", &dup)
            .unwrap()
            .unwrap();
        assert_eq!(job.last_seq, MAX_SEQ);
        assert!(number(batch(0, 1), &mut expected, "n", &dup).is_err());
    }
}
