//! The writer task of one node ([`write_loop`]): merges queued batches, writes them through
//! the node's `NodeLog` on the blocking pool ([`Blocking`]), checkpoints, and publishes the
//! persisted sequence number under the durability policy; write errors block and retry or
//! drop, per `onWriteError`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::number::Job;
use super::part::parts;
use crate::config::{Durability, FsyncPolicy, WriteErrorPolicy};
use crate::events::{WriteDropped, WriteFailed, WriteResumed};
use crate::logs::writer::{NodeLog, WriteError};
use crate::metrics::telemetry::{IngestStages, Telemetry};
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
    // Shared with the writer threads, which publish what they wrote (`Blocking::submit`).
    let persisted = Arc::new(persisted);
    let interval = durability.fsync_interval();
    let mut writer = Blocking::new(log, node, telemetry, durability.on_write_error, live);
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
        // A job still on a writer thread may owe a checkpoint: the timer settles it first.
        let timer = if unsynced {
            Some((last_sync + interval, Timer::Sync))
        } else if writer.checkpoint_owed() || writer.in_flight() {
            Some((last_checkpoint + CHECKPOINT_EVERY, Timer::Checkpoint))
        } else if open {
            Some((Instant::now() + IDLE_CLOSE, Timer::Idle))
        } else {
            None
        };
        let failed = writer.failed.clone();
        let received = match timer {
            None => rx.recv_many(&mut jobs, MAX_MERGED_BATCHES).await,
            Some((at, timer)) => tokio::select! {
                n = rx.recv_many(&mut jobs, MAX_MERGED_BATCHES) => n,
                // Only a failed job wakes this task; one written is collected lazily.
                () = failed.notified(), if writer.in_flight() => {
                    writer.settle(&persisted).await?;
                    if !writer.checkpoint_owed() {
                        last_checkpoint = Instant::now();
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(at) => {
                    writer.settle(&persisted).await?;
                    match timer {
                        Timer::Sync => {
                            let seq = writer.checkpoint().await?;
                            persisted.send_replace(Persisted::now(seq));
                            unsynced = false;
                            last_sync = Instant::now();
                        }
                        Timer::Checkpoint => {
                            if writer.checkpoint_owed() {
                                writer.checkpoint().await?;
                            }
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
        // The previous job first (written by now, as a rule: nothing to wait for).
        writer.settle(&persisted).await?;
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
        writer.submit(
            batch,
            checkpoint_now,
            sync_now.then_some(&persisted),
            started,
        )?;
        if checkpoint_now {
            last_checkpoint = Instant::now();
        }
        open = true;
        if sync_now {
            unsynced = false;
            if durability.fsync == FsyncPolicy::Interval {
                last_sync = Instant::now();
            }
        } else {
            unsynced = true;
        }
        if let Some(spare) = writer.spare.take() {
            if jobs.capacity() < spare.capacity() {
                jobs = spare;
            }
        }
    }
    writer.settle(&persisted).await?;
    let seq = writer.close().await?;
    persisted.send_replace(Persisted::now(seq));
    Ok(())
}

/// A session's last operation on its log: writes what a failure left (one attempt), syncs,
/// checkpoints and finishes; the sequence number on disk.
fn finish(log: &mut NodeLog) -> Result<u64, WriteError> {
    if log.has_pending() {
        log.resume(utc::now_unix())?;
    }
    log.sync()?;
    log.checkpoint()?;
    log.finish()?;
    Ok(log.seq())
}

/// Finishes the log of a node whose writer task never started (it sent no batch) on a
/// writer thread, without starting one: when 10,000 idle nodes leave at once, each waiting
/// close holds its log only, not a writer task as well (issue 21's idle-fleet RSS).
pub(super) async fn finish_unstarted(log: NodeLog, node: &str) -> Result<u64, WriteError> {
    super::pool::pool()
        .run(move || {
            let mut log = log;
            finish(&mut log)
        })
        .await
        .map_err(|_| WriteError::Write {
            path: node.into(),
            source: std::io::Error::other("the log writer panicked"),
        })?
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
    /// Part of `write_time` spent rotating (observed only if `rotations > 0`).
    rotate_time: Duration,
    checkpoint_time: Option<Duration>,
}

/// The node's [`NodeLog`], moved to a writer thread ([`super::pool`]) for each operation.
struct Blocking {
    log: Option<NodeLog>,
    node: String,
    telemetry: Telemetry,
    /// What a write job counts, shared with the writer threads.
    books: Arc<Books>,
    policy: WriteErrorPolicy,
    live: Arc<crate::node::live::NodeLive>,
    /// The write job on a writer thread, not yet collected ([`Blocking::settle`]).
    in_flight: Option<InFlight>,
    /// Woken by a write job that failed (one that succeeded wakes no one).
    failed: Arc<tokio::sync::Notify>,
    /// The emptied job list of the last write, for the next batches.
    spare: Option<Vec<Job>>,
    /// When the current error streak was last reported, and errors since.
    reported: Option<(Instant, u64)>,
    blocked_since: Option<Instant>,
    /// Whether the log owes a checkpoint (`NodeLog::checkpoint_owed`) as of its last job.
    owed: bool,
    stages: Arc<IngestStages>,
}

/// A write job handed to a writer thread.
struct InFlight {
    done: tokio::sync::oneshot::Receiver<Done>,
    checkpoint: bool,
    /// Whether it publishes its sequence number (else the interval's sync does).
    publish: bool,
    /// When the writer took the batch (`tracerd_write_batch_seconds`).
    started: Instant,
}

/// What a write job hands back: the log, its jobs (emptied, if written), and what it wrote
/// or where it failed.
type Done = (NodeLog, Vec<Job>, (Written, Option<(usize, WriteError)>));

impl Blocking {
    fn new(
        log: NodeLog,
        node: String,
        telemetry: Telemetry,
        policy: WriteErrorPolicy,
        live: Arc<crate::node::live::NodeLive>,
    ) -> Blocking {
        Blocking {
            log: Some(log),
            books: Arc::new(Books {
                series: telemetry.nodes.node(&node),
                write_batch_seconds: telemetry.write_batch_seconds.clone(),
                rotations: telemetry.rotations.clone(),
                invalid_json: telemetry.invalid_machine_json.clone(),
                node: node.clone(),
            }),
            stages: telemetry.ingest_stages.clone(),
            telemetry,
            node,
            policy,
            live,
            in_flight: None,
            failed: Arc::new(tokio::sync::Notify::new()),
            spare: None,
            reported: None,
            blocked_since: None,
            owed: false,
        }
    }

    /// Whether lines were written since the last checkpoint.
    fn checkpoint_owed(&self) -> bool {
        self.owed
    }

    /// Whether a write job is on a writer thread, not yet collected.
    fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Runs `f` on the log on a writer thread (after collecting a write job still there).
    async fn run<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut NodeLog) -> R + Send + 'static,
    ) -> Result<R, WriteError> {
        debug_assert!(self.in_flight.is_none(), "settle before run");
        self.run_now(f).await
    }

    async fn run_now<R: Send + 'static>(
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
            .map_err(|_| self.panicked())?;
        self.stages.hop.observe((started - submitted).as_secs_f64());
        self.stages.back.observe(ended.elapsed().as_secs_f64());
        self.owed = log.checkpoint_owed();
        self.log = Some(log);
        Ok(r)
    }

    fn panicked(&self) -> WriteError {
        WriteError::Write {
            path: self.node.clone().into(),
            source: std::io::Error::other("the log writer panicked"),
        }
    }

    /// Hands `jobs` to a writer thread, which writes them and checkpoints if `checkpoint`;
    /// with `publish`, a write that succeeded publishes the new sequence number from there
    /// as soon as it is written (and synced, in fsync modes), so the session can send its
    /// `Ack` without this task running in between. It also counts what it wrote and offers
    /// the lines to the node's live view before that, so an `Ack` always follows the live
    /// view's lines (a watcher that subscribes after it sees only later ones) and the
    /// counters. This task collects the job later ([`Blocking::settle`]): before the next
    /// one, at a timer, or at once if it failed.
    fn submit(
        &mut self,
        jobs: Vec<Job>,
        checkpoint: bool,
        publish: Option<&Arc<watch::Sender<Persisted>>>,
        started: Instant,
    ) -> Result<(), WriteError> {
        debug_assert!(self.in_flight.is_none(), "one write job at a time");
        let mut log = self.log.take().ok_or(WriteError::Closed)?;
        let tx = publish.cloned();
        let live = self.live.clone();
        let failed = self.failed.clone();
        let books = self.books.clone();
        let stages = self.stages.clone();
        let submitted = Instant::now();
        let done = super::pool::pool().run(move || {
            let begun = Instant::now();
            let mut jobs = jobs;
            let r = write_runs(&mut log, &jobs, 0, checkpoint);
            // Timed here, so they are counted before the `Ack` is published.
            stages.hop.observe((begun - submitted).as_secs_f64());
            observe_written(&stages, &r.0);
            if r.1.is_some() {
                failed.notify_one();
            } else {
                tap(&live, &log, &jobs);
                let count: u64 = jobs.iter().map(|j| j.objects.len() as u64).sum();
                books.account(&r.0, count, started);
                if let Some(tx) = tx {
                    publish_seq(&tx, log.seq());
                }
                // Their queue budget goes back now, not when this task collects the job.
                jobs.clear();
            }
            (log, jobs, r)
        });
        self.in_flight = Some(InFlight {
            done,
            checkpoint,
            publish: publish.is_some(),
            started,
        });
        Ok(())
    }

    /// Collects the write job on a writer thread, if any (waiting for it if it runs still):
    /// takes the log back and, if the job failed, retries or drops per `onWriteError` as
    /// [`Blocking::write`] does.
    async fn settle(
        &mut self,
        persisted: &Arc<watch::Sender<Persisted>>,
    ) -> Result<(), WriteError> {
        let Some(job) = self.in_flight.take() else {
            return Ok(());
        };
        let (log, jobs, (written, failure)) = job.done.await.map_err(|_| self.panicked())?;
        self.owed = log.checkpoint_owed();
        self.log = Some(log);
        let Some((failed_part, error)) = failure else {
            self.resumed();
            self.spare = Some(jobs);
            return Ok(());
        };
        // The error path, as before the lazy collection: retry (or drop), then count and
        // publish here.
        let publish = job.publish.then_some(persisted);
        let (jobs, appended, seq) = self
            .write(
                jobs,
                (written, Some((failed_part, error))),
                job.checkpoint,
                publish,
            )
            .await?;
        let count: u64 = jobs.iter().map(|j| j.objects.len() as u64).sum();
        if !appended.tapped {
            if let Some(log) = self.log.as_ref() {
                tap(&self.live, log, &jobs);
            }
        }
        self.books.account(&appended, count, job.started);
        if job.publish {
            // Published already by a retry that succeeded, except after a drop.
            publish_seq(persisted, seq);
        }
        Ok(())
    }

    /// Writes `jobs` from the failed attempt `failed` on (retrying or dropping on errors,
    /// per the policy) and checkpoints if `checkpoint`. Returns the jobs, what was written,
    /// and the sequence number on disk. A retry that succeeded publishes as
    /// [`Blocking::submit`] does.
    async fn write(
        &mut self,
        jobs: Vec<Job>,
        first: (Written, Option<(usize, WriteError)>),
        checkpoint: bool,
        publish: Option<&Arc<watch::Sender<Persisted>>>,
    ) -> Result<(Vec<Job>, Written, u64), WriteError> {
        let mut jobs = jobs;
        let mut total = Written::default();
        let mut attempt = first;
        let policy = self.policy;
        loop {
            let (written, failure) = attempt;
            total.tapped = failure.is_none();
            total.bytes += written.bytes;
            total.rotations += written.rotations;
            total.invalid_json += written.invalid_json;
            total.journal_truncated += written.journal_truncated;
            let Some((failed_part, error)) = failure else {
                self.resumed();
                let seq = self.log.as_ref().map_or(0, NodeLog::seq);
                return Ok((jobs, total, seq));
            };
            self.failed(&error, policy);
            match policy {
                WriteErrorPolicy::Backpressure => {
                    tokio::time::sleep(WRITE_RETRY).await;
                    let publish = publish.cloned();
                    let live = self.live.clone();
                    let (back, r) = self
                        .run_now(move |log| {
                            let r = write_runs(log, &jobs, failed_part, checkpoint);
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
                    observe_written(&self.stages, &r.0);
                    attempt = r;
                }
                WriteErrorPolicy::Drop => {
                    let parts = parts(&jobs);
                    let lost: u64 = parts[failed_part.min(parts.len())..]
                        .iter()
                        .map(|part| part.objects.len() as u64)
                        .sum();
                    WriteDropped { objects: lost }.emit(&self.telemetry);
                    total.dropped += lost;
                    let last = jobs.last().map_or(0, |j| j.last_seq);
                    // Acknowledge past the dropped objects, so the node does not resend
                    // them; the checkpoint may fail too while the disk is full.
                    let seq = self
                        .run_now(move |log| {
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
    async fn checkpoint(&mut self) -> Result<u64, WriteError> {
        loop {
            let checkpoint = |log: &mut NodeLog| {
                let started = std::time::Instant::now();
                log.checkpoint().map(|()| (log.seq(), started.elapsed()))
            };
            match self.run(checkpoint).await? {
                Ok((seq, took)) => {
                    self.stages.checkpoint.observe(took.as_secs_f64());
                    self.resumed();
                    return Ok(seq);
                }
                Err(e) => {
                    self.failed(&e, WriteErrorPolicy::Backpressure);
                    tokio::time::sleep(WRITE_RETRY).await;
                }
            }
        }
    }

    /// Finishes: writes what a failure left (one attempt), syncs and checkpoints.
    async fn close(&mut self) -> Result<u64, WriteError> {
        self.run(finish).await?
    }

    fn failed(&mut self, error: &WriteError, policy: WriteErrorPolicy) {
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
        .emit(&self.telemetry);
    }

    fn resumed(&mut self) {
        if let Some(since) = self.blocked_since.take() {
            self.reported = None;
            WriteResumed {
                node: &self.node,
                after: since.elapsed(),
            }
            .emit(&self.telemetry);
        }
    }
}

/// Times a write in `tracerd_ingest_stage_seconds`: `write`, and `rotate` and `checkpoint`
/// when it did them.
fn observe_written(stages: &IngestStages, written: &Written) {
    stages.write.observe(written.write_time.as_secs_f64());
    if written.rotations > 0 {
        stages.rotate.observe(written.rotate_time.as_secs_f64());
    }
    if let Some(t) = written.checkpoint_time {
        stages.checkpoint.observe(t.as_secs_f64());
    }
}

/// What a write job counts, on the writer thread before its `Ack` is published (or by the
/// writer task on the error path).
struct Books {
    series: Arc<crate::metrics::node_series::NodeCounters>,
    write_batch_seconds: prometheus::Histogram,
    rotations: prometheus::IntCounter,
    invalid_json: prometheus::IntCounter,
    node: String,
}

impl Books {
    /// Counts a write of `count` objects taken from the queue at `started`.
    fn account(&self, written: &Written, count: u64, started: Instant) {
        self.write_batch_seconds
            .observe(started.elapsed().as_secs_f64());
        self.rotations.inc_by(written.rotations);
        self.invalid_json.inc_by(written.invalid_json);
        if written.journal_truncated > 0 {
            tracing::warn!(node = %self.node, entries = written.journal_truncated,
                "journal entries too large for one datagram were sent with their message cut");
        }
        self.series
            .add_written(count.saturating_sub(written.dropped));
        self.series.add_bytes(written.bytes);
    }
}

/// Writes the [`parts`](super::part::parts) of `jobs` from part `from` on (resuming a part a failure interrupted),
/// then checkpoints if `checkpoint` or if a target started a new file (the checkpoint then
/// names the current file, never one retention may delete). On failure returns the index of
/// the part to retry from (`parts.len()` for the checkpoint itself).
fn write_runs(
    log: &mut NodeLog,
    jobs: &[Job],
    from: usize,
    checkpoint: bool,
) -> (Written, Option<(usize, WriteError)>) {
    let now = utc::now_unix();
    let started = std::time::Instant::now();
    let mut total = Written::default();
    let parts = parts(jobs);
    for (i, part) in parts.iter().enumerate().skip(from) {
        let result = if log.has_pending() {
            log.resume(now)
        } else {
            log.append_run(part.first, &part.objects, now)
        };
        match result {
            Ok(a) => {
                total.bytes += a.bytes;
                total.rotations += a.rotations;
                total.rotate_time += a.rotate_time;
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
            return (total, Some((parts.len(), e)));
        }
    }
    if checkpoint || log.checkpoint_due() {
        let started = std::time::Instant::now();
        let r = log.checkpoint();
        total.checkpoint_time = Some(started.elapsed());
        if let Err(e) = r {
            return (total, Some((parts.len(), e)));
        }
    }
    (total, None)
}
