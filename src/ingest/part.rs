//! How the node writer cuts what it took from the queue: runs of contiguous sequence numbers,
//! each in parts of bounded text, one `NodeLog::append_run` per part. Pure.

use super::number::Job;
use crate::model::TraceObject;

/// About how many bytes of text one [`NodeLog::append_run`](crate::logs::writer::NodeLog::append_run) renders and writes: a longer run
/// of jobs is written in parts. At max load the writer takes up to `MAX_MERGED_BATCHES` (`writer.rs`) queued
/// batches at once (several MB of lines); rendered whole, the buffer grew by doubling into
/// fresh pages and was given back after every write (`Rendered::shrink`), ~45,000 page faults
/// per million objects. In parts it stays below the size kept between writes and in cache
/// for the copy into the page cache (BENCHMARKS.md, sixth session: ~9,000 faults per million).
const PART_BYTES: usize = 256 * 1024;

/// Per line, what a rendered line adds to an object's strings (keys, timestamp, severity),
/// roughly: only [`PART_BYTES`]' estimate uses it.
const LINE_OVERHEAD: usize = 96;

/// Objects of consecutive sequence numbers from `first`, rendered and written by one
/// [`NodeLog::append_run`](crate::logs::writer::NodeLog::append_run).
pub(super) struct Part<'a> {
    pub(super) first: u64,
    pub(super) objects: Vec<&'a TraceObject>,
}

/// The runs of contiguous sequence numbers of `jobs`, in order, each cut into parts of at
/// most [`PART_BYTES`] of text (a part holds at least one object, however large). Depends only
/// on `jobs`, so a retry finds the part it failed at under the same index.
pub(super) fn parts(jobs: &[Job]) -> Vec<Part<'_>> {
    let mut out: Vec<Part<'_>> = Vec::new();
    let mut next = 0;
    let mut bytes = 0;
    for job in jobs {
        let mut seq = job.last_seq + 1 - job.objects.len() as u64;
        for object in &job.objects {
            let size = text_bytes(object);
            match out.last_mut() {
                Some(part) if seq == next && bytes + size <= PART_BYTES => {
                    part.objects.push(object);
                    bytes += size;
                }
                _ => {
                    out.push(Part {
                        first: seq,
                        objects: vec![object],
                    });
                    bytes = size;
                }
            }
            seq += 1;
            next = seq;
        }
    }
    out
}

/// About how many bytes `object`'s lines take (see [`PART_BYTES`]).
fn text_bytes(object: &TraceObject) -> usize {
    object.machine.len()
        + object.namespace.len()
        + object.hostname.len()
        + object.thread_id.len()
        + object.human.as_deref().map_or(0, str::len)
        + LINE_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::number::JobParts;
    use crate::model::{DetailLevel, Severity};

    fn object(machine_bytes: usize) -> TraceObject {
        TraceObject {
            namespace: "A.B".into(),
            severity: Severity::Info,
            detail: DetailLevel::Normal,
            timestamp_ns: 1,
            hostname: "h".into(),
            thread_id: "1".into(),
            machine: format!("\"{}\"", "x".repeat(machine_bytes.saturating_sub(2))).into(),
            human: None,
            form: Default::default(),
        }
    }

    fn job(first: u64, count: usize, machine_bytes: usize) -> Job {
        Job::new(JobParts {
            objects: (0..count).map(|_| object(machine_bytes)).collect(),
            last_seq: first + count as u64 - 1,
            budget: None,
        })
    }

    /// Every object once, in order, each part's numbers consecutive from its `first`.
    fn check_cover(jobs: &[Job], parts: &[Part<'_>]) {
        let expect: Vec<(u64, *const TraceObject)> = jobs
            .iter()
            .flat_map(|j| {
                let first = j.last_seq + 1 - j.objects.len() as u64;
                j.objects
                    .iter()
                    .enumerate()
                    .map(move |(k, o)| (first + k as u64, o as *const TraceObject))
            })
            .collect();
        let got: Vec<(u64, *const TraceObject)> = parts
            .iter()
            .flat_map(|p| {
                p.objects
                    .iter()
                    .enumerate()
                    .map(|(k, o)| (p.first + k as u64, *o as *const TraceObject))
            })
            .collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn a_long_run_is_cut_into_parts_of_bounded_text_and_gaps_always_cut() {
        // 64 full batches of 1,024 objects of ~200 bytes: what the writer takes at max load.
        let jobs: Vec<Job> = (0..64).map(|k| job(1 + k * 1024, 1024, 200)).collect();
        let cut = parts(&jobs);
        check_cover(&jobs, &cut);
        for part in &cut {
            let bytes: usize = part.objects.iter().map(|o| text_bytes(o)).sum();
            assert!(bytes <= PART_BYTES, "{bytes}");
        }
        assert!(cut.len() >= 64 * 1024 * 200 / PART_BYTES, "{}", cut.len());

        // A gap between jobs (a resend after a reconnect) starts a new part; so does an
        // object larger than a part, alone; empty jobs add nothing.
        let jobs = vec![
            job(1, 3, 10),
            job(10, 2, 10),
            Job::new(JobParts {
                objects: Vec::new(),
                last_seq: 40,
                budget: None,
            }),
            job(12, 1, PART_BYTES * 2),
            job(13, 2, 10),
        ];
        let cut = parts(&jobs);
        check_cover(&jobs, &cut);
        let shape: Vec<(u64, usize)> = cut.iter().map(|p| (p.first, p.objects.len())).collect();
        assert_eq!(shape, [(1, 3), (10, 2), (12, 1), (13, 2)]);
    }
}
