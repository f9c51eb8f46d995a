//! The protocol-independent ingest path of one connected node: a [`NodeSink`] claims the
//! node's name, hands recovery to the node's log, owns its writer task, and reports what has
//! been persisted. The native session and the Cardano session both feed one.
//!
//! The sequencing is pure ([`number`]); the writer task ([`writer`]) owns the node's
//! `NodeLog` and does its I/O on the blocking pool. The queue in front of it is bounded, so a
//! slow disk slows the reading of the socket (TCP backpressure) instead of growing memory.

mod number;
mod part;
mod pool;
mod writer;

use std::sync::Arc;

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

use self::number::{cost, number, Budget, Job};
pub use self::number::{SeqOverflow, MAX_SEQ};
use self::writer::{write_loop, Persisted};
pub use self::writer::{CHECKPOINT_EVERY, WRITE_ERROR_REPORT, WRITE_RETRY};
use crate::config::FsyncPolicy;
use crate::logs::writer::{NodeLog, WriteError};
use crate::metrics::telemetry::Telemetry;
use crate::model::TraceBatch;
use crate::node::{Lease, Nodes};
use crate::running::Running;
use crate::utc;

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
    /// The batch would number objects past the highest sequence number; refused whole.
    #[error("batch refused")]
    Sequence(#[from] SeqOverflow),
}

/// The ingest path of one connected node.
pub struct NodeSink {
    lease: Lease,
    /// `tracerd_nodes_connected{protocol}`, decremented by [`NodeSink::close`] (the gauge, not
    /// all of `Telemetry`: this is part of every idle session's future).
    connected: prometheus::IntGauge,
    tx: mpsc::Sender<Job>,
    persisted: watch::Receiver<Persisted>,
    /// The batch whose way to its `Ack` is being timed: its last sequence number and when
    /// it was queued (`tracerd_ingest_stage_seconds{stage="server"}`).
    timed: Option<(u64, tokio::time::Instant)>,
    stages: Arc<crate::metrics::telemetry::IngestStages>,
    /// The writer task, started by the first batch ([`NodeSink::start_writer`]): an idle node
    /// holds its arguments, not a task and its future (~2 KiB a node).
    writer: Option<JoinHandle<Result<(), WriteError>>>,
    /// The writer task's arguments until it starts.
    pending: Option<Box<WriterArgs>>,
    expected: u64,
    /// The node's `tracerd_*` series (objects received).
    series: Arc<crate::metrics::node_series::NodeCounters>,
    duplicates: prometheus::IntCounter,
    /// This node's queue budget in decoded bytes (`queueBytes`).
    node_budget: Arc<Semaphore>,
    node_budget_bytes: u32,
    /// Every node's queue budget together (`totalQueueBytes`).
    budget: Arc<Semaphore>,
    budget_bytes: u32,
    /// Re-forwarding's copy of what is queued (`hasForwarding`), when configured.
    tap: Option<crate::forward::Tap>,
}

/// What the writer task of a node is started with.
struct WriterArgs {
    log: NodeLog,
    rx: mpsc::Receiver<Job>,
    persisted: watch::Sender<Persisted>,
    telemetry: Telemetry,
    node: String,
    durability: crate::config::Durability,
    settings: watch::Receiver<Arc<crate::running::Effective>>,
    live: Arc<crate::node::live::NodeLive>,
}

impl NodeSink {
    /// Claims `name` (sanitised) for `peer`, opens fresh log files and starts the writer.
    pub async fn open(
        nodes: &Nodes,
        running: &Running,
        telemetry: &Telemetry,
        budget: &Arc<Semaphore>,
        name: &str,
        peer: &str,
        protocol: &'static str,
    ) -> Result<NodeSink, SinkError> {
        NodeSink::open_as(
            nodes, running, telemetry, budget, name, name, peer, protocol,
        )
        .await
    }

    /// [`NodeSink::open`] for the node identity `identity` (the exact name it sent; `name`
    /// is its sanitised form). Sequence state belongs to the identity: a directory whose
    /// checkpoint names another identity is skipped for the next collision suffix.
    #[allow(clippy::too_many_arguments)]
    pub async fn open_as(
        nodes: &Nodes,
        running: &Running,
        telemetry: &Telemetry,
        budget: &Arc<Semaphore>,
        name: &str,
        identity: &str,
        peer: &str,
        protocol: &'static str,
    ) -> Result<NodeSink, SinkError> {
        let mut lease = nodes
            .claim_waiting_as(name, identity, peer, protocol, crate::node::RECLAIM_WAIT)
            .await;
        let mut settings = running.subscribe();
        let current = settings.borrow_and_update().clone();
        let durability = current.config.tracerd.durability.clone();
        let sync = durability.fsync != FsyncPolicy::Never;
        // Bounded: each round moves to the next suffix.
        let mut rounds = 0;
        let (log, recovery) = loop {
            let logs = current.logs.clone();
            let dir_name = lease.name().to_string();
            let known = lease.persisted_seq;
            let who = identity.to_string();
            let opened = tokio::task::spawn_blocking(move || {
                let (mut log, recovery) =
                    NodeLog::open_as(&logs, &dir_name, Some(&who), utc::now_unix(), sync)?;
                // This process may know more than the checkpoint (a session of this name
                // ended cleanly earlier); never less, since every session ends with one.
                let seq = log.seq().max(known);
                log.set_seq(seq)?;
                Ok::<_, WriteError>((log, recovery))
            })
            .await
            .map_err(|e| SinkError::WriterTask(e.to_string()))?;
            match opened {
                Err(WriteError::Owned { owner, .. }) if rounds < 1000 => {
                    rounds += 1;
                    nodes.disown(lease, &owner);
                    lease = nodes.claim_as(name, identity, peer, protocol);
                }
                other => break other?,
            }
        };
        if lease.name() != name {
            tracing::info!(%peer, requested = %crate::node::escape_name(identity), assigned = %lease.name(),
                "node name already connected or owned by another node; filing this node under a distinct name");
        }
        for note in &recovery.notes {
            tracing::warn!(node = %lease.name(), "recovery: {note}");
        }
        lease.recover(log.seq());
        tracing::info!(%peer, protocol, node = %lease.name(), resume_after = log.seq(),
            files = ?log.current_paths(), "node connected");
        let (tx, rx) = mpsc::channel::<Job>(current.config.tracerd.limits.queue_batches);
        lease.watch_queue(tx.downgrade());
        let (persisted_tx, persisted) = watch::channel(Persisted::now(lease.persisted_seq));
        let pending = Box::new(WriterArgs {
            log,
            rx,
            persisted: persisted_tx,
            telemetry: telemetry.clone(),
            node: lease.name().to_string(),
            durability,
            settings,
            live: lease.live().clone(),
        });
        let limits = &current.config.tracerd.limits;
        // One acquire takes at most u32::MAX permits; a batch never needs more than a budget.
        let node_budget_bytes = u32::try_from(limits.queue_bytes.max(1)).unwrap_or(u32::MAX);
        let budget_bytes = u32::try_from(limits.total_queue_bytes.max(1)).unwrap_or(u32::MAX);
        let t = telemetry;
        let connected = t.nodes_connected.with_label_values(&[protocol]);
        connected.inc();
        Ok(NodeSink {
            series: t.nodes.node(lease.name()),
            duplicates: t.objects_dropped.with_label_values(&["duplicate"]),
            connected,
            expected: lease.persisted_seq + 1,
            lease,
            tx,
            persisted,
            timed: None,
            stages: t.ingest_stages.clone(),
            writer: None,
            pending: Some(pending),
            node_budget: Arc::new(Semaphore::new(node_budget_bytes as usize)),
            node_budget_bytes,
            budget: budget.clone(),
            budget_bytes,
            tap: None,
        })
    }

    /// Starts the writer task, if not yet started.
    fn start_writer(&mut self) {
        if let Some(a) = self.pending.take() {
            self.writer = Some(tokio::spawn(write_loop(
                a.log,
                a.rx,
                a.persisted,
                a.telemetry,
                a.node,
                a.durability,
                a.settings,
                a.live,
            )));
        }
    }

    /// The name the node is filed under.
    pub fn name(&self) -> &str {
        self.lease.name()
    }

    /// Copies every object queued from now on to re-forwarding (`hasForwarding`).
    pub fn set_tap(&mut self, tap: crate::forward::Tap) {
        self.tap = Some(tap);
    }

    /// The node's registry entry, for metrics, data points and RTT.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Highest sequence number persisted under this name when the sink was opened.
    pub fn resume_from(&self) -> u64 {
        self.lease.persisted_seq
    }

    /// Queues a batch for writing, waiting while the queue is full (backpressure): full in
    /// batches (`queueBatches`), in this node's decoded bytes (`queueBytes`) or in every
    /// node's together (`totalQueueBytes`). The session does not read while it waits.
    pub async fn push(&mut self, batch: TraceBatch) -> Result<(), SinkError> {
        self.lease.touch();
        self.series.add_received(batch.objects.len() as u64);
        let Some(mut job) = number(
            batch,
            &mut self.expected,
            self.lease.name(),
            &self.duplicates,
        )?
        else {
            return Ok(());
        };
        if let Some(tap) = &self.tap {
            tap.offer(&job.objects);
        }
        self.lease.live().traces().count(&job.objects);
        self.lease
            .tracer_config()
            .offer(&job.objects, crate::node::live::now_ms());
        // The alerts' trace rules (non-blocking, bounded).
        self.lease.offer_traces(&job.objects);
        // The node's own budget first, so a node waiting for the global budget holds only
        // its own share; a batch larger than a budget takes all of it (and waits for it).
        let bytes = cost(&job.objects);
        let node_bytes = u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .min(self.node_budget_bytes);
        let node = self
            .node_budget
            .clone()
            .acquire_many_owned(node_bytes)
            .await
            .map_err(|_| SinkError::WriterStopped)?;
        let global_bytes = u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .min(self.budget_bytes);
        let global = self
            .budget
            .clone()
            .acquire_many_owned(global_bytes)
            .await
            .map_err(|_| SinkError::WriterStopped)?;
        job.budget = Some(Budget {
            _node: node,
            _global: global,
        });
        if self.timed.is_none() {
            self.timed = Some((job.last_seq, tokio::time::Instant::now()));
        }
        self.start_writer();
        self.tx
            .send(job)
            .await
            .map_err(|_| SinkError::WriterStopped)
    }

    /// Resolves when the persisted sequence number moved past `acked`, with the new value.
    /// Cancel-safe. Errors when the writer has stopped.
    pub async fn persisted_beyond(&mut self, acked: u64) -> Result<u64, SinkError> {
        loop {
            let seq = self.persisted.borrow_and_update().seq;
            if seq > acked {
                return Ok(seq);
            }
            self.persisted
                .changed()
                .await
                .map_err(|_| SinkError::WriterStopped)?;
        }
    }

    /// Records that an `Ack` of `seq` (from [`NodeSink::persisted_beyond`]) was sent: the
    /// time since its publication, and the timed batch's time since it was queued.
    pub fn ack_sent(&mut self, seq: u64) {
        let stages = &self.stages;
        let published = self.persisted.borrow().at;
        stages.ack.observe(published.elapsed().as_secs_f64());
        if let Some((last, queued)) = self.timed {
            if seq >= last {
                stages.server.observe(queued.elapsed().as_secs_f64());
                self.timed = None;
            }
        }
    }

    /// Drains the queue, syncs the files, releases the name; returns the highest sequence
    /// number persisted and the writer's outcome.
    pub async fn close(self) -> (u64, Result<(), SinkError>) {
        let NodeSink {
            lease,
            connected,
            tx,
            persisted,
            writer,
            pending,
            ..
        } = self;
        drop(tx);
        let (seq, written) = match (writer, pending) {
            (Some(writer), _) => {
                let written = match writer.await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(SinkError::Write(e)),
                    Err(e) => Err(SinkError::WriterTask(e.to_string())),
                };
                (persisted.borrow().seq, written)
            }
            // A node that sent nothing still ends with its log's sync and checkpoint, on a
            // writer thread but without a writer task.
            (None, Some(args)) => {
                let WriterArgs { log, node, .. } = *args;
                match writer::finish_unstarted(log, &node).await {
                    Ok(seq) => (seq, Ok(())),
                    Err(e) => (persisted.borrow().seq, Err(SinkError::Write(e))),
                }
            }
            // Not reached: one of the two is always there.
            (None, None) => (persisted.borrow().seq, Ok(())),
        };
        lease.set_persisted(seq);
        connected.dec();
        (seq, written)
    }
}
