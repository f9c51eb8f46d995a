//! The protocol-independent ingest path of one connected node: a [`NodeSink`] claims the
//! node's name, owns its writer task, numbers and de-duplicates trace batches, and reports what
//! has been persisted. The native session and the Cardano session both feed one.
//!
//! The writer task owns the node's [`NodeLog`] and does its I/O on the blocking pool; the
//! queue in front of it is bounded, so a slow disk slows the reading of the socket (TCP
//! backpressure) instead of growing memory.

use std::sync::Arc;

use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use tokio::time::Instant;

use crate::config::{Durability, FsyncPolicy, WriteErrorPolicy};
use crate::events::{WriteDropped, WriteFailed, WriteResumed};
use crate::logs::writer::{NodeLog, WriteError};
use crate::metrics::telemetry::Telemetry;
use crate::model::{TraceBatch, TraceObject};
use crate::node::{Lease, Nodes};
use crate::running::{Effective, Running};
use crate::utc;

/// Most queued batches the writer merges into one write.
const MAX_MERGED_BATCHES: usize = 64;

/// Why a node's sink failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The node's logs could not be written.
    #[error("cannot write the node's logs")]
    Write(#[from] WriteError),
    /// The writer task panicked or was cancelled.
    #[error("log writer task failed: {0}")]
    WriterTask(String),
    /// The writer stopped (after an error, reported by [`NodeSink::close`]).
    #[error("log writer stopped")]
    WriterStopped,
}

/// Objects on their way to the writer, numbered up to `last_seq`.
struct Job {
    objects: Vec<TraceObject>,
    last_seq: u64,
}

/// The ingest path of one connected node.
pub struct NodeSink {
    lease: Lease,
    protocol: &'static str,
    telemetry: Telemetry,
    tx: mpsc::Sender<Job>,
    persisted: watch::Receiver<u64>,
    writer: JoinHandle<Result<(), WriteError>>,
    expected: u64,
    received: prometheus::IntCounter,
    duplicates: prometheus::IntCounter,
}

impl NodeSink {
    /// Claims `name` (sanitised) for `peer`, opens fresh log files and starts the writer.
    pub async fn open(
        nodes: &Nodes,
        running: &Running,
        telemetry: &Telemetry,
        name: &str,
        peer: &str,
        protocol: &'static str,
    ) -> Result<NodeSink, SinkError> {
        let mut lease = nodes
            .claim_waiting(name, peer, protocol, crate::node::RECLAIM_WAIT)
            .await;
        if lease.name() != name {
            tracing::info!(%peer, requested = %name, assigned = %lease.name(),
                "node name already connected; filing this node under a distinct name");
        }
        let mut settings = running.subscribe();
        let current = settings.borrow_and_update().clone();
        let logs = current.logs.clone();
        let durability = current.config.tracerd.durability.clone();
        let dir_name = lease.name().to_string();
        let known = lease.persisted_seq;
        let sync = durability.fsync != FsyncPolicy::Never;
        let (log, recovery) = tokio::task::spawn_blocking(move || {
            let (mut log, recovery) = NodeLog::open(&logs, &dir_name, utc::now_unix(), sync)?;
            // This process may know more than the checkpoint (a session of this name ended
            // cleanly earlier); never less, since every session ends with a checkpoint.
            let seq = log.seq().max(known);
            log.set_seq(seq)?;
            Ok::<_, WriteError>((log, recovery))
        })
        .await
        .map_err(|e| SinkError::WriterTask(e.to_string()))??;
        for note in &recovery.notes {
            tracing::warn!(node = %lease.name(), "recovery: {note}");
        }
        lease.recover(log.seq());
        tracing::info!(%peer, protocol, node = %lease.name(), resume_after = log.seq(),
            files = ?log.current_paths(), "node connected");
        let (tx, rx) = mpsc::channel::<Job>(current.config.tracerd.limits.queue_batches);
        lease.watch_queue(tx.downgrade());
        let (persisted_tx, persisted) = watch::channel(lease.persisted_seq);
        let writer = tokio::spawn(write_loop(
            log,
            rx,
            persisted_tx,
            telemetry.clone(),
            lease.name().to_string(),
            durability,
            settings,
        ));
        let t = telemetry;
        t.nodes_connected.with_label_values(&[protocol]).inc();
        Ok(NodeSink {
            received: t.objects_received.with_label_values(&[lease.name()]),
            duplicates: t.objects_dropped.with_label_values(&["duplicate"]),
            telemetry: t.clone(),
            expected: lease.persisted_seq + 1,
            lease,
            protocol,
            tx,
            persisted,
            writer,
        })
    }

    /// The name the node is filed under.
    pub fn name(&self) -> &str {
        self.lease.name()
    }

    /// The node's registry entry, for metrics, data points and RTT.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Highest sequence number persisted under this name when the sink was opened.
    pub fn resume_from(&self) -> u64 {
        self.lease.persisted_seq
    }

    /// Queues a batch for writing, waiting while the queue is full (backpressure).
    pub async fn push(&mut self, batch: TraceBatch) -> Result<(), SinkError> {
        self.lease.touch();
        self.received.inc_by(batch.objects.len() as u64);
        let Some(job) = number(
            batch,
            &mut self.expected,
            self.lease.name(),
            &self.duplicates,
        ) else {
            return Ok(());
        };
        self.tx
            .send(job)
            .await
            .map_err(|_| SinkError::WriterStopped)
    }

    /// Resolves when the persisted sequence number moved past `acked`, with the new value.
    /// Cancel-safe. Errors when the writer has stopped.
    pub async fn persisted_beyond(&mut self, acked: u64) -> Result<u64, SinkError> {
        loop {
            let seq = *self.persisted.borrow_and_update();
            if seq > acked {
                return Ok(seq);
            }
            self.persisted
                .changed()
                .await
                .map_err(|_| SinkError::WriterStopped)?;
        }
    }

    /// Drains the queue, syncs the files, releases the name; returns the highest sequence
    /// number persisted and the writer's outcome.
    pub async fn close(self) -> (u64, Result<(), SinkError>) {
        let NodeSink {
            lease,
            protocol,
            telemetry,
            tx,
            persisted,
            writer,
            ..
        } = self;
        drop(tx);
        let written = match writer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SinkError::Write(e)),
            Err(e) => Err(SinkError::WriterTask(e.to_string())),
        };
        let seq = *persisted.borrow();
        lease.set_persisted(seq);
        telemetry
            .nodes_connected
            .with_label_values(&[protocol])
            .dec();
        (seq, written)
    }
}

/// Assigns sequence numbers, trims what was already persisted, and logs gaps. Returns `None`
/// when nothing new is left.
fn number(
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
    })
}

/// How long a writer blocked by write errors waits between attempts.
pub const WRITE_RETRY: Duration = Duration::from_secs(1);
/// A blocked writer reports its error at most this often.
pub const WRITE_ERROR_REPORT: Duration = Duration::from_secs(30);

/// The writer of one node: merges queued batches, writes them on the blocking pool with a
/// checkpoint, and publishes the highest sequence number persisted under the durability
/// policy. Write errors (e.g. a full disk) either block the writer, which retries every
/// [`WRITE_RETRY`] while its queue fills and the node is slowed down (backpressure), or drop
/// the batch and count it (`onWriteError: drop`).
async fn write_loop(
    log: NodeLog,
    mut rx: mpsc::Receiver<Job>,
    persisted: watch::Sender<u64>,
    telemetry: Telemetry,
    node: String,
    durability: Durability,
    mut settings: watch::Receiver<Arc<Effective>>,
) -> Result<(), WriteError> {
    let written = telemetry.objects_written.with_label_values(&[&node]);
    let bytes = telemetry.bytes_written.with_label_values(&[&node]);
    let interval = Duration::from_millis(durability.fsync_interval_ms.max(1));
    let mut writer = Blocking::new(log, node.clone());
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_MERGED_BATCHES);
    // Interval mode: data written but not yet synced and acknowledged.
    let mut unsynced = false;
    let mut last_sync = Instant::now();
    loop {
        let received = if unsynced {
            tokio::select! {
                n = rx.recv_many(&mut jobs, MAX_MERGED_BATCHES) => n,
                _ = tokio::time::sleep_until(last_sync + interval) => {
                    let seq = writer.checkpoint(&telemetry).await?;
                    persisted.send_replace(seq);
                    unsynced = false;
                    last_sync = Instant::now();
                    continue;
                }
            }
        } else {
            rx.recv_many(&mut jobs, MAX_MERGED_BATCHES).await
        };
        if received == 0 {
            break;
        }
        let started = Instant::now();
        let sync_now = match durability.fsync {
            FsyncPolicy::Never | FsyncPolicy::Batch => true,
            FsyncPolicy::Interval => last_sync.elapsed() >= interval,
        };
        let batch = std::mem::take(&mut jobs);
        if settings.has_changed().unwrap_or(false) {
            // A reload: the new rotation policy applies from this batch on.
            let policy = settings.borrow_and_update().logs.policy;
            writer.run(move |log| log.set_policy(policy)).await?;
        }
        let (batch, appended, seq) = writer
            .write(batch, sync_now, durability.on_write_error, &telemetry)
            .await?;
        let count: u64 = batch.iter().map(|j| j.objects.len() as u64).sum();
        telemetry
            .write_batch_seconds
            .observe(started.elapsed().as_secs_f64());
        telemetry.rotations.inc_by(appended.rotations);
        telemetry.invalid_machine_json.inc_by(appended.invalid_json);
        if appended.journal_truncated > 0 {
            tracing::warn!(node = %node, entries = appended.journal_truncated,
                "journal entries too large for one datagram were sent with their message cut");
        }
        written.inc_by(count.saturating_sub(appended.dropped));
        bytes.inc_by(appended.bytes);
        if sync_now {
            persisted.send_replace(seq);
            unsynced = false;
            if durability.fsync == FsyncPolicy::Interval {
                last_sync = Instant::now();
            }
        } else {
            unsynced = true;
        }
        jobs = batch;
        jobs.clear();
    }
    let seq = writer.close().await?;
    persisted.send_replace(seq);
    Ok(())
}

/// What one merged write did.
#[derive(Debug, Default, Clone, Copy)]
struct Written {
    bytes: u64,
    rotations: u64,
    invalid_json: u64,
    /// Journal entries sent with their message cut.
    journal_truncated: u64,
    /// Objects dropped under `onWriteError: drop`.
    dropped: u64,
}

/// The node's [`NodeLog`], moved to the blocking pool for each operation.
struct Blocking {
    log: Option<NodeLog>,
    node: String,
    /// When the current error streak was last reported, and errors since.
    reported: Option<(Instant, u64)>,
    blocked_since: Option<Instant>,
}

impl Blocking {
    fn new(log: NodeLog, node: String) -> Blocking {
        Blocking {
            log: Some(log),
            node,
            reported: None,
            blocked_since: None,
        }
    }

    /// Runs `f` on the log on the blocking pool.
    async fn run<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut NodeLog) -> R + Send + 'static,
    ) -> Result<R, WriteError> {
        let mut log = self.log.take().ok_or(WriteError::Closed)?;
        let (log, r) = tokio::task::spawn_blocking(move || {
            let r = f(&mut log);
            (log, r)
        })
        .await
        .map_err(|e| WriteError::Write {
            path: self.node.clone().into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        self.log = Some(log);
        Ok(r)
    }

    /// Writes `jobs` (retrying or dropping on errors, per `policy`) and checkpoints if
    /// `checkpoint`. Returns the jobs, what was written, and the sequence number on disk.
    async fn write(
        &mut self,
        jobs: Vec<Job>,
        checkpoint: bool,
        policy: WriteErrorPolicy,
        telemetry: &Telemetry,
    ) -> Result<(Vec<Job>, Written, u64), WriteError> {
        let mut jobs = jobs;
        let mut from = 0;
        let mut total = Written::default();
        loop {
            let (back, r) = self
                .run(move |log| {
                    let r = write_runs(log, &jobs, from, checkpoint);
                    (jobs, r)
                })
                .await?;
            jobs = back;
            let (written, failure) = r;
            total.bytes += written.bytes;
            total.rotations += written.rotations;
            total.invalid_json += written.invalid_json;
            total.journal_truncated += written.journal_truncated;
            let Some((failed_run, error)) = failure else {
                self.resumed(telemetry);
                let seq = self.log.as_ref().map_or(0, NodeLog::seq);
                return Ok((jobs, total, seq));
            };
            self.failed(&error, telemetry, policy);
            match policy {
                WriteErrorPolicy::Backpressure => {
                    from = failed_run;
                    tokio::time::sleep(WRITE_RETRY).await;
                }
                WriteErrorPolicy::Drop => {
                    let runs = runs(&jobs);
                    let lost: u64 = runs[failed_run.min(runs.len())..]
                        .iter()
                        .map(|(_, r)| {
                            jobs[r.clone()]
                                .iter()
                                .map(|j| j.objects.len() as u64)
                                .sum::<u64>()
                        })
                        .sum();
                    WriteDropped { objects: lost }.emit(telemetry);
                    total.dropped += lost;
                    let last = jobs.last().map_or(0, |j| j.last_seq);
                    // Acknowledge past the dropped objects, so the node does not resend
                    // them; the checkpoint may fail too while the disk is full.
                    let seq = self
                        .run(move |log| {
                            log.discard_pending();
                            let _ = log.set_seq(last.max(log.seq()));
                            log.seq()
                        })
                        .await?;
                    return Ok((jobs, total, seq));
                }
            }
        }
    }

    /// Syncs (in fsync modes) and checkpoints; retries on errors.
    async fn checkpoint(&mut self, telemetry: &Telemetry) -> Result<u64, WriteError> {
        loop {
            match self.run(|log| log.checkpoint().map(|()| log.seq())).await? {
                Ok(seq) => {
                    self.resumed(telemetry);
                    return Ok(seq);
                }
                Err(e) => {
                    self.failed(&e, telemetry, WriteErrorPolicy::Backpressure);
                    tokio::time::sleep(WRITE_RETRY).await;
                }
            }
        }
    }

    /// Finishes: writes what a failure left (one attempt), syncs and checkpoints.
    async fn close(&mut self) -> Result<u64, WriteError> {
        self.run(|log| {
            if log.has_pending() {
                log.resume(utc::now_unix())?;
            }
            log.sync()?;
            log.checkpoint()?;
            Ok(log.seq())
        })
        .await?
    }

    fn failed(&mut self, error: &WriteError, telemetry: &Telemetry, policy: WriteErrorPolicy) {
        let blocking = self.blocked_since.is_none();
        if blocking {
            self.blocked_since = Some(Instant::now());
        }
        let due = match &mut self.reported {
            Some((at, count)) if at.elapsed() < WRITE_ERROR_REPORT => {
                *count += 1;
                false
            }
            _ => true,
        };
        let report = due.then(|| {
            let suppressed = self.reported.map_or(0, |(_, n)| n);
            let action = match policy {
                WriteErrorPolicy::Backpressure => {
                    "retrying every second; the node is slowed down meanwhile"
                }
                WriteErrorPolicy::Drop => "dropping the batch (onWriteError: drop)",
            };
            self.reported = Some((Instant::now(), 0));
            (suppressed, action)
        });
        WriteFailed {
            node: &self.node,
            error,
            blocking,
            report,
        }
        .emit(telemetry);
    }

    fn resumed(&mut self, telemetry: &Telemetry) {
        if let Some(since) = self.blocked_since.take() {
            self.reported = None;
            WriteResumed {
                node: &self.node,
                after: since.elapsed(),
            }
            .emit(telemetry);
        }
    }
}

/// Runs of contiguous sequence numbers: (first sequence number, range of jobs).
fn runs(jobs: &[Job]) -> Vec<(u64, std::ops::Range<usize>)> {
    let mut out: Vec<(u64, std::ops::Range<usize>)> = Vec::new();
    let mut next = 0;
    for (i, job) in jobs.iter().enumerate() {
        let first = job.last_seq + 1 - job.objects.len() as u64;
        match out.last_mut() {
            Some((_, range)) if first == next => range.end = i + 1,
            _ => out.push((first, i..i + 1)),
        }
        next = job.last_seq + 1;
    }
    out
}

/// Writes the runs of `jobs` from run `from` on (resuming a run a failure interrupted), then
/// checkpoints if `checkpoint`. On failure returns the index of the run to retry from
/// (`runs.len()` for the checkpoint itself).
fn write_runs(
    log: &mut NodeLog,
    jobs: &[Job],
    from: usize,
    checkpoint: bool,
) -> (Written, Option<(usize, WriteError)>) {
    let now = utc::now_unix();
    let mut total = Written::default();
    let runs = runs(jobs);
    for (i, (first, range)) in runs.iter().enumerate().skip(from) {
        let result = if log.has_pending() {
            log.resume(now)
        } else {
            let objects: Vec<&TraceObject> = jobs[range.clone()]
                .iter()
                .flat_map(|j| j.objects.iter())
                .collect();
            log.append_run(*first, &objects, now)
        };
        match result {
            Ok(a) => {
                total.bytes += a.bytes;
                total.rotations += a.rotations;
                total.invalid_json += a.invalid_json;
                total.journal_truncated += a.journal_truncated;
            }
            Err(e) => return (total, Some((i, e))),
        }
    }
    if checkpoint {
        if let Err(e) = log.checkpoint() {
            return (total, Some((runs.len(), e)));
        }
    }
    (total, None)
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
