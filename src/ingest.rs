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

use crate::config::{Config, Durability, FsyncPolicy, Limits};
use crate::live::{Effective, Live};
use crate::logs::writer::{Appended, NodeLog, WriteError};
use crate::logs::LogSettings;
use crate::model::{TraceBatch, TraceObject};
use crate::node::{Lease, Nodes};
use crate::telemetry::Telemetry;
use crate::utc;

/// Most queued batches the writer merges into one write.
const MAX_MERGED_BATCHES: usize = 64;

/// What every session shares.
#[derive(Debug, Clone)]
pub struct Shared {
    /// Network magic nodes must present.
    pub network_magic: u32,
    /// The effective config, replaced by a reload: sessions read limits, durability and log
    /// settings from it when they start; writers follow rotation changes.
    pub live: Live,
    /// Node registry.
    pub nodes: Nodes,
    /// Own metrics.
    pub telemetry: Telemetry,
}

impl Shared {
    /// Shared state for `config`, with an empty registry and fresh metrics.
    pub fn new(config: &Config, telemetry: Telemetry) -> Shared {
        Shared {
            network_magic: config.network_magic,
            live: Live::new(config.clone()),
            nodes: Nodes::default(),
            telemetry,
        }
    }

    /// Current bounds.
    pub fn limits(&self) -> Limits {
        self.live.current().config.tracerd.limits.clone()
    }

    /// Current durability policy.
    pub fn durability(&self) -> Durability {
        self.live.current().config.tracerd.durability.clone()
    }

    /// Current verbosity of connection problem reports.
    pub fn verbosity(&self) -> crate::config::Verbosity {
        self.live.current().config.verbosity
    }

    /// Current log targets and rotation.
    pub fn logs(&self) -> Arc<LogSettings> {
        self.live.current().logs.clone()
    }
}

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
        shared: &Shared,
        name: &str,
        peer: &str,
        protocol: &'static str,
    ) -> Result<NodeSink, SinkError> {
        let mut lease = shared
            .nodes
            .claim_waiting(name, peer, crate::node::RECLAIM_WAIT)
            .await;
        if lease.name() != name {
            tracing::info!(%peer, requested = %name, assigned = %lease.name(),
                "node name already connected; filing this node under a distinct name");
        }
        let mut settings = shared.live.subscribe();
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
        let (persisted_tx, persisted) = watch::channel(lease.persisted_seq);
        let writer = tokio::spawn(write_loop(
            log,
            rx,
            persisted_tx,
            shared.telemetry.clone(),
            lease.name().to_string(),
            durability,
            settings,
        ));
        let t = &shared.telemetry;
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

/// The writer of one node: merges queued batches, writes them on the blocking pool with a
/// checkpoint, and publishes the highest sequence number persisted under the durability
/// policy.
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
    let task_failed = |e: tokio::task::JoinError| WriteError::Write {
        path: node.clone().into(),
        source: std::io::Error::other(e.to_string()),
    };
    let interval = Duration::from_millis(durability.fsync_interval_ms.max(1));
    let mut log = Some(log);
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_MERGED_BATCHES);
    // Interval mode: data written but not yet synced and acknowledged.
    let mut unsynced = false;
    let mut last_sync = Instant::now();
    loop {
        let received = if unsynced {
            tokio::select! {
                n = rx.recv_many(&mut jobs, MAX_MERGED_BATCHES) => n,
                _ = tokio::time::sleep_until(last_sync + interval) => {
                    let mut l = log.take().ok_or(WriteError::Closed)?;
                    let (l, result) = tokio::task::spawn_blocking(move || {
                        let r = l.checkpoint();
                        (l, r)
                    })
                    .await
                    .map_err(task_failed)?;
                    result?;
                    persisted.send_replace(l.seq());
                    log = Some(l);
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
        let mut l = log.take().ok_or(WriteError::Closed)?;
        if settings.has_changed().unwrap_or(false) {
            // A reload: the new rotation policy applies from this batch on.
            l.set_policy(settings.borrow_and_update().logs.policy);
        }
        let (l, batch, result) = tokio::task::spawn_blocking(move || {
            let result = write_runs(&mut l, &batch, sync_now);
            (l, batch, result)
        })
        .await
        .map_err(task_failed)?;
        let count: u64 = batch.iter().map(|j| j.objects.len() as u64).sum();
        let appended = match result {
            Ok(appended) => appended,
            Err(e) => {
                telemetry.write_errors.inc();
                telemetry
                    .objects_dropped
                    .with_label_values(&["write_error"])
                    .inc_by(count);
                return Err(e);
            }
        };
        telemetry
            .write_batch_seconds
            .observe(started.elapsed().as_secs_f64());
        telemetry.rotations.inc_by(appended.rotations);
        telemetry.invalid_machine_json.inc_by(appended.invalid_json);
        if appended.journal_truncated > 0 {
            tracing::warn!(node = %node, entries = appended.journal_truncated,
                "journal entries too large for one datagram were sent with their message cut");
        }
        written.inc_by(count);
        bytes.inc_by(appended.bytes);
        if sync_now {
            persisted.send_replace(l.seq());
            unsynced = false;
            if durability.fsync == FsyncPolicy::Interval {
                last_sync = Instant::now();
            }
        } else {
            unsynced = true;
        }
        log = Some(l);
        jobs = batch;
        jobs.clear();
    }
    let Some(mut l) = log else {
        return Ok(());
    };
    let l = tokio::task::spawn_blocking(move || {
        l.sync()?;
        l.checkpoint()?;
        Ok::<_, WriteError>(l)
    })
    .await
    .map_err(task_failed)??;
    persisted.send_replace(l.seq());
    Ok(())
}

/// Writes queued jobs as runs of contiguous sequence numbers, then checkpoints if `checkpoint`
/// (which syncs first in fsync modes).
fn write_runs(log: &mut NodeLog, jobs: &[Job], checkpoint: bool) -> Result<Appended, WriteError> {
    let now = utc::now_unix();
    let mut total = Appended::default();
    let mut run: Vec<&TraceObject> = Vec::new();
    let mut run_first = 0;
    for job in jobs {
        let first = job.last_seq + 1 - job.objects.len() as u64;
        if !run.is_empty() && first != run_first + run.len() as u64 {
            total += log.append_run(run_first, &run, now)?;
            run.clear();
        }
        if run.is_empty() {
            run_first = first;
        }
        run.extend(job.objects.iter());
    }
    total += log.append_run(run_first, &run, now)?;
    if checkpoint {
        log.checkpoint()?;
    }
    Ok(total)
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
