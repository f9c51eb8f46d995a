//! The writer task of one node ([`write_loop`]): merges queued batches, writes them through
//! the node's `NodeLog` on the blocking pool ([`Blocking`]), checkpoints, and publishes the
//! persisted sequence number under the durability policy; write errors block and retry or
//! drop, per `onWriteError`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::number::Job;
use crate::config::{Durability, FsyncPolicy, WriteErrorPolicy};
use crate::events::{WriteDropped, WriteFailed, WriteResumed};
use crate::logs::writer::{NodeLog, WriteError};
use crate::metrics::telemetry::{IngestStages, Telemetry};
use crate::model::TraceObject;
use crate::running::Effective;
use crate::utc;

/// Most queued batches the writer merges into one write.
const MAX_MERGED_BATCHES: usize = 64;

/// A node that wrote nothing for this long has its files' descriptors closed (the next write
/// reopens them), so an idle node holds one descriptor, its socket.
pub const IDLE_CLOSE: Duration = Duration::from_secs(2);

/// With `fsync: never`, how long a node's checkpoint may lag behind its files. A checkpoint
/// per write job cost a `pwrite` of 4 KiB (and once an `open` and a `close`) per batch;
/// recovery does not need it to find the end (`NodeLog::checkpoint_owed`). It bounds how far
/// recovery scans after a crash and how far native re-forwarding, which reads no further than
/// the checkpoint, lags.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// The persisted sequence number as the writer publishes it, with when.
#[derive(Debug, Clone, Copy)]
pub(super) struct Persisted {
    pub(super) seq: u64,
    pub(super) at: Instant,
}

impl Persisted {
    pub(super) fn now(seq: u64) -> Persisted {
        Persisted {
            seq,
            at: Instant::now(),
        }
    }
}

/// What the writer waits for beside its queue.
#[derive(Clone, Copy)]
enum Timer {
    /// `fsync: interval`: sync, checkpoint and publish what was written.
    Sync,
    /// `fsync: never`: the checkpoint deferred by [`CHECKPOINT_EVERY`].
    Checkpoint,
    /// Close the descriptors after [`IDLE_CLOSE`] without a job.
    Idle,
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
#[allow(clippy::too_many_arguments)]
pub(super) async fn write_loop(
    log: NodeLog,
    mut rx: mpsc::Receiver<Job>,
    persisted: watch::Sender<Persisted>,
    telemetry: Telemetry,
    node: String,
    durability: Durability,
    mut settings: watch::Receiver<Arc<Effective>>,
    live: Arc<crate::node::live::NodeLive>,
) -> Result<(), WriteError> {
    let series = telemetry.nodes.node(&node);
    // Shared with the blocking pool, which publishes what it wrote (`Blocking::write`).
    let persisted = Arc::new(persisted);
    let interval = durability.fsync_interval();
    let mut writer = Blocking::new(log, node.clone(), telemetry.ingest_stages.clone());
    // Grown by the first batches; given back when the node goes idle (64 jobs are 4 KiB).
    let mut jobs: Vec<Job> = Vec::new();
    // Interval mode: data written but not yet synced and acknowledged.
    let mut unsynced = false;
    let mut last_sync = Instant::now();
    // `fsync: never`: when the last checkpoint was written.
    let mut last_checkpoint = Instant::now();
    // Whether a write may have left descriptors open (closed after `IDLE_CLOSE` without jobs).
    let mut open = false;
    loop {
        let timer = if unsynced {
            Some((last_sync + interval, Timer::Sync))
        } else if writer.checkpoint_owed() {
            Some((last_checkpoint + CHECKPOINT_EVERY, Timer::Checkpoint))
        } else if open {
            Some((Instant::now() + IDLE_CLOSE, Timer::Idle))
        } else {
            None
        };
        let received = match timer {
            None => rx.recv_many(&mut jobs, MAX_MERGED_BATCHES).await,
            Some((at, timer)) => tokio::select! {
                n = rx.recv_many(&mut jobs, MAX_MERGED_BATCHES) => n,
                _ = tokio::time::sleep_until(at) => {
                    match timer {
                        Timer::Sync => {
                            let seq = writer.checkpoint(&telemetry).await?;
                            persisted.send_replace(Persisted::now(seq));
                            unsynced = false;
                            last_sync = Instant::now();
                        }
                        Timer::Checkpoint => {
                            writer.checkpoint(&telemetry).await?;
                            last_checkpoint = Instant::now();
                        }
                        Timer::Idle => {
                            writer.run(NodeLog::close_idle).await?;
                            open = false;
                            jobs = Vec::new();
                        }
                    }
                    continue;
                }
            },
        };
        if received == 0 {
            break;
        }
        let started = Instant::now();
        // Publish now (else at the interval), and checkpoint now (else later).
        let (sync_now, checkpoint_now) = match durability.fsync {
            FsyncPolicy::Never => (true, last_checkpoint.elapsed() >= CHECKPOINT_EVERY),
            FsyncPolicy::Batch => (true, true),
            FsyncPolicy::Interval => {
                let due = last_sync.elapsed() >= interval;
                (due, due)
            }
        };
        let batch = std::mem::take(&mut jobs);
        if settings.has_changed().unwrap_or(false) {
            // A reload: the new rotation policy applies from this batch on.
            let policy = settings.borrow_and_update().logs.policy;
            writer.run(move |log| log.set_policy(policy)).await?;
        }
        let (batch, appended, seq) = writer
            .write(
                batch,
                checkpoint_now,
                sync_now.then_some(&persisted),
                &live,
                durability.on_write_error,
                &telemetry,
            )
            .await?;
        if !writer.checkpoint_owed() {
            last_checkpoint = Instant::now();
        }
        open = true;
        let count: u64 = batch.iter().map(|j| j.objects.len() as u64).sum();
        if !appended.tapped {
            // Written on an error path (the blocking job offers what it wrote otherwise).
            if let Some(log) = writer.log.as_ref() {
                tap(&live, log, &batch);
            }
        }
        telemetry
            .write_batch_seconds
            .observe(started.elapsed().as_secs_f64());
        telemetry.rotations.inc_by(appended.rotations);
        telemetry.invalid_machine_json.inc_by(appended.invalid_json);
        if appended.journal_truncated > 0 {
            tracing::warn!(node = %node, entries = appended.journal_truncated,
                "journal entries too large for one datagram were sent with their message cut");
        }
        series.add_written(count.saturating_sub(appended.dropped));
        series.add_bytes(appended.bytes);
        if sync_now {
            // Published already on the blocking pool, except after a drop.
            publish_seq(&persisted, seq);
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
    persisted.send_replace(Persisted::now(seq));
    Ok(())
}

/// Offers `jobs`' objects, rendered as machine lines, to the node's live view (issue 14) with
/// the file that holds them, if anyone watches.
fn tap(live: &crate::node::live::NodeLive, log: &NodeLog, jobs: &[Job]) {
    if !live.traces().watched() {
        return;
    }
    let file = machine_file(log);
    for job in jobs {
        live.traces().publish(&job.objects, &file);
    }
}

/// The node's current machine file (else its first file), for the live view.
fn machine_file(log: &NodeLog) -> Arc<str> {
    let paths = log.current_paths();
    let machine = crate::config::LogFormat::ForMachine.extension();
    let path = paths
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == machine))
        .or(paths.first());
    Arc::from(path.map_or_else(String::new, |p| p.display().to_string()))
}

/// Publishes `seq` as persisted, unless it already is (a receiver is not woken for nothing).
fn publish_seq(tx: &watch::Sender<Persisted>, seq: u64) {
    tx.send_if_modified(|p| {
        if p.seq == seq {
            return false;
        }
        *p = Persisted::now(seq);
        true
    });
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
    /// Whether the written lines were offered to the live view already (on the blocking
    /// pool, before the sequence number was published).
    tapped: bool,
    /// Time spent rendering and writing lines, and checkpointing.
    write_time: Duration,
    checkpoint_time: Option<Duration>,
}

/// The node's [`NodeLog`], moved to a writer thread ([`super::pool`]) for each operation.
struct Blocking {
    log: Option<NodeLog>,
    node: String,
    /// When the current error streak was last reported, and errors since.
    reported: Option<(Instant, u64)>,
    blocked_since: Option<Instant>,
    /// Whether the log owes a checkpoint (`NodeLog::checkpoint_owed`) as of its last job.
    owed: bool,
    stages: Arc<IngestStages>,
}

impl Blocking {
    fn new(log: NodeLog, node: String, stages: Arc<IngestStages>) -> Blocking {
        Blocking {
            log: Some(log),
            node,
            reported: None,
            blocked_since: None,
            owed: false,
            stages,
        }
    }

    /// Whether lines were written since the last checkpoint.
    fn checkpoint_owed(&self) -> bool {
        self.owed
    }

    /// Runs `f` on the log on the blocking pool.
    async fn run<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut NodeLog) -> R + Send + 'static,
    ) -> Result<R, WriteError> {
        let mut log = self.log.take().ok_or(WriteError::Closed)?;
        let submitted = Instant::now();
        let (log, r, started, ended) = super::pool::pool()
            .run(move || {
                let started = Instant::now();
                let r = f(&mut log);
                (log, r, started, Instant::now())
            })
            .await
            .map_err(|_| WriteError::Write {
                path: self.node.clone().into(),
                source: std::io::Error::other("the log writer panicked"),
            })?;
        self.stages.hop.observe((started - submitted).as_secs_f64());
        self.stages.back.observe(ended.elapsed().as_secs_f64());
        self.owed = log.checkpoint_owed();
        self.log = Some(log);
        Ok(r)
    }

    /// Writes `jobs` (retrying or dropping on errors, per `policy`) and checkpoints if
    /// `checkpoint`. Returns the jobs, what was written, and the sequence number on disk.
    /// With `publish`, a write that succeeded publishes the new sequence number from the
    /// blocking pool as soon as it is written (and synced, in fsync modes), so the session
    /// can send its `Ack` without waiting for this task to be scheduled again. A write that
    /// succeeded also offers its lines to the node's live view first, so an `Ack` always
    /// follows the live view's lines (a watcher that subscribes after it sees only later ones).
    #[allow(clippy::too_many_arguments)]
    async fn write(
        &mut self,
        jobs: Vec<Job>,
        checkpoint: bool,
        publish: Option<&Arc<watch::Sender<Persisted>>>,
        live: &Arc<crate::node::live::NodeLive>,
        policy: WriteErrorPolicy,
        telemetry: &Telemetry,
    ) -> Result<(Vec<Job>, Written, u64), WriteError> {
        let mut jobs = jobs;
        let mut from = 0;
        let mut total = Written::default();
        loop {
            let publish = publish.cloned();
            let live = live.clone();
            let (back, r) = self
                .run(move |log| {
                    let r = write_runs(log, &jobs, from, checkpoint);
                    let written = r.1.is_none();
                    if written {
                        tap(&live, log, &jobs);
                    }
                    if let (true, Some(tx)) = (written, publish) {
                        publish_seq(&tx, log.seq());
                    }
                    (jobs, r)
                })
                .await?;
            jobs = back;
            let (written, failure) = r;
            total.tapped = failure.is_none();
            total.bytes += written.bytes;
            total.rotations += written.rotations;
            total.invalid_json += written.invalid_json;
            total.journal_truncated += written.journal_truncated;
            self.stages.write.observe(written.write_time.as_secs_f64());
            if let Some(t) = written.checkpoint_time {
                self.stages.checkpoint.observe(t.as_secs_f64());
            }
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
            let checkpoint = |log: &mut NodeLog| {
                let started = std::time::Instant::now();
                log.checkpoint().map(|()| (log.seq(), started.elapsed()))
            };
            match self.run(checkpoint).await? {
                Ok((seq, took)) => {
                    self.stages.checkpoint.observe(took.as_secs_f64());
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
            log.finish()?;
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
/// checkpoints if `checkpoint` or if a target started a new file (the checkpoint then names
/// the current file, never one retention may delete). On failure returns the index of the run to retry
/// from (`runs.len()` for the checkpoint itself).
fn write_runs(
    log: &mut NodeLog,
    jobs: &[Job],
    from: usize,
    checkpoint: bool,
) -> (Written, Option<(usize, WriteError)>) {
    let now = utc::now_unix();
    let started = std::time::Instant::now();
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
            Err(e) => {
                total.write_time = started.elapsed();
                return (total, Some((i, e)));
            }
        }
    }
    total.write_time = started.elapsed();
    if !checkpoint {
        // As a checkpoint would: a deleted current file is replaced at once.
        if let Err(e) = log.check_files() {
            return (total, Some((runs.len(), e)));
        }
    }
    if checkpoint || log.checkpoint_due() {
        let started = std::time::Instant::now();
        let r = log.checkpoint();
        total.checkpoint_time = Some(started.elapsed());
        if let Err(e) = r {
            return (total, Some((runs.len(), e)));
        }
    }
    (total, None)
}
