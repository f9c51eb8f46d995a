//! One node session over the native protocol: handshake, then a read loop that routes trace
//! batches to the node's writer, metrics and data points to the node registry, and sends
//! acknowledgements as the writer persists.
//!
//! The writer of a session is a task of its own that owns the node's [`NodeLog`] and does its
//! I/O on the blocking pool; the queue between the read loop and the writer is bounded, so a
//! slow disk slows the reading of the socket (TCP backpressure) instead of growing memory.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::config::Limits;
use crate::logs::writer::{NodeLog, WriteError};
use crate::logs::LogSettings;
use crate::model::{TraceBatch, TraceObject};
use crate::node::{self, Lease, Nodes};
use crate::protocol::{
    CodecError, Hello, NodeMessage, RefuseReason, TracerCodec, TracerMessage, PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
};
use crate::telemetry::Telemetry;
use crate::utc;

/// How often tracerd probes a node's round-trip time.
pub const PING_EVERY: Duration = Duration::from_secs(5);
/// Most queued batches the writer merges into one write.
const MAX_MERGED_BATCHES: usize = 64;

/// What every session shares.
#[derive(Debug, Clone)]
pub struct Shared {
    /// Network magic nodes must present.
    pub network_magic: u32,
    /// Bounds.
    pub limits: Limits,
    /// Log targets and rotation.
    pub logs: Arc<LogSettings>,
    /// Node registry.
    pub nodes: Nodes,
    /// Own metrics.
    pub telemetry: Telemetry,
}

/// How a session ended, when it ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The node closed the connection.
    PeerClosed,
    /// tracerd is shutting down.
    Shutdown,
    /// The handshake was refused.
    Refused(RefuseReason),
}

impl End {
    /// A bounded label for counting.
    pub fn label(self) -> &'static str {
        match self {
            End::PeerClosed => "peer_closed",
            End::Shutdown => "shutdown",
            End::Refused(r) => refuse_label(r),
        }
    }
}

fn refuse_label(r: RefuseReason) -> &'static str {
    match r {
        RefuseReason::WrongMagic => "wrong_magic",
        RefuseReason::UnsupportedVersion => "unsupported_version",
        RefuseReason::NameRejected => "name_rejected",
        RefuseReason::NoHello => "no_hello",
    }
}

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No `Hello` within the handshake timeout.
    #[error("no Hello within {0:?}")]
    HandshakeTimeout(Duration),
    /// The peer sent something that is not a valid frame or message.
    #[error("bad input from node")]
    Codec(#[from] CodecError),
    /// The node's logs could not be written.
    #[error("cannot write the node's logs")]
    Write(#[from] WriteError),
    /// The writer task panicked or was cancelled.
    #[error("log writer task failed: {0}")]
    WriterTask(String),
}

impl SessionError {
    /// A bounded label for counting.
    pub fn label(&self) -> &'static str {
        match self {
            SessionError::HandshakeTimeout(_) => "handshake_timeout",
            SessionError::Codec(CodecError::Io(_)) => "io_error",
            SessionError::Codec(e) => e.kind(),
            SessionError::Write(_) => "write_error",
            SessionError::WriterTask(_) => "writer_task_failed",
        }
    }
}

/// Objects on their way to the writer, numbered up to `last_seq`.
struct Job {
    objects: Vec<TraceObject>,
    last_seq: u64,
}

/// Serves one connection until the peer closes, the input is bad, or `cancel` fires.
pub async fn serve<S>(
    stream: S,
    peer: String,
    protocol: &'static str,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) -> Result<End, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let max = shared.limits.max_frame_bytes as usize;
    let mut framed = Framed::new(stream, TracerCodec::new(max));
    let timeout = Duration::from_secs_f64(shared.limits.handshake_timeout_secs);
    let first = tokio::select! {
        _ = cancel.cancelled() => return Ok(End::Shutdown),
        first = tokio::time::timeout(timeout, framed.next()) => first,
    };
    let hello = match first {
        Err(_) => return Err(SessionError::HandshakeTimeout(timeout)),
        Ok(None) => return Ok(End::PeerClosed),
        Ok(Some(Err(e))) => return Err(e.into()),
        Ok(Some(Ok(NodeMessage::Hello(hello)))) => hello,
        Ok(Some(Ok(_))) => {
            let message = "the first message must be Hello".to_string();
            return refuse(&mut framed, RefuseReason::NoHello, message, &peer, &shared).await;
        }
    };
    let name = match check_hello(&hello, shared.network_magic) {
        Ok(name) => name,
        Err((reason, message)) => {
            return refuse(&mut framed, reason, message, &peer, &shared).await
        }
    };
    let lease = shared.nodes.claim(&name, &peer, protocol);
    if lease.name() != name {
        tracing::info!(%peer, requested = %hello.node_name, assigned = %lease.name(),
            "node name already connected; filing this node under a distinct name");
    }
    let logs = shared.logs.clone();
    let dir_name = lease.name().to_string();
    let log = tokio::task::spawn_blocking(move || NodeLog::open(&logs, &dir_name, utc::now_unix()))
        .await
        .map_err(|e| SessionError::WriterTask(e.to_string()))??;
    tracing::info!(
        %peer, protocol, node = %lease.name(), software = %hello.software.name,
        version = %hello.software.version, files = ?log.current_paths(),
        "node connected"
    );
    framed
        .send(TracerMessage::Accept {
            version: PROTOCOL_VERSION,
            node_name: lease.name().to_string(),
            persisted_seq: lease.persisted_seq,
            max_frame_bytes: shared.limits.max_frame_bytes,
        })
        .await?;
    shared
        .telemetry
        .nodes_connected
        .with_label_values(&[protocol])
        .inc();
    let result = stream_node(&mut framed, &lease, log, &shared, &cancel).await;
    shared
        .telemetry
        .nodes_connected
        .with_label_values(&[protocol])
        .dec();
    result
}

fn check_hello(hello: &Hello, magic: u32) -> Result<String, (RefuseReason, String)> {
    if hello.network_magic != magic {
        return Err((
            RefuseReason::WrongMagic,
            format!(
                "network magic {} does not match tracerd's networkMagic {magic}",
                hello.network_magic
            ),
        ));
    }
    if !hello
        .versions
        .iter()
        .any(|v| SUPPORTED_VERSIONS.contains(v))
    {
        return Err((
            RefuseReason::UnsupportedVersion,
            format!(
                "no common protocol version: node offers {:?}, tracerd speaks {SUPPORTED_VERSIONS:?}",
                hello.versions
            ),
        ));
    }
    node::sanitise(&hello.node_name).map_err(|e| (RefuseReason::NameRejected, e.to_string()))
}

async fn refuse<S>(
    framed: &mut Framed<S, TracerCodec>,
    reason: RefuseReason,
    message: String,
    peer: &str,
    shared: &Shared,
) -> Result<End, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tracing::warn!(%peer, reason = refuse_label(reason), %message, "handshake refused");
    shared
        .telemetry
        .connections_refused
        .with_label_values(&[refuse_label(reason)])
        .inc();
    // The peer may already be gone; the refusal is best effort.
    let _ = framed.send(TracerMessage::Refuse { reason, message }).await;
    Ok(End::Refused(reason))
}

/// The read loop of an accepted session, and the drain of its writer at the end.
async fn stream_node<S>(
    framed: &mut Framed<S, TracerCodec>,
    lease: &Lease,
    log: NodeLog,
    shared: &Shared,
    cancel: &CancellationToken,
) -> Result<End, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (tx, rx) = mpsc::channel::<Job>(shared.limits.queue_batches);
    lease.watch_queue(tx.downgrade());
    let (persisted_tx, mut persisted_rx) = watch::channel(lease.persisted_seq);
    let writer = tokio::spawn(write_loop(
        log,
        rx,
        persisted_tx,
        shared.telemetry.clone(),
        lease.name().to_string(),
    ));
    let received = shared
        .telemetry
        .objects_received
        .with_label_values(&[lease.name()]);
    let duplicates = shared
        .telemetry
        .objects_dropped
        .with_label_values(&["duplicate"]);
    let mut expected = lease.persisted_seq + 1;
    let mut acked = lease.persisted_seq;
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    let mut ping_sent: Option<(u64, Instant)> = None;
    let mut nonce = 0u64;

    let outcome: Result<End, SessionError> = loop {
        tokio::select! {
            _ = cancel.cancelled() => break Ok(End::Shutdown),
            changed = persisted_rx.changed() => {
                if changed.is_err() {
                    // The writer ended early: its error is collected below.
                    break Ok(End::PeerClosed);
                }
                let seq = *persisted_rx.borrow_and_update();
                if seq > acked {
                    acked = seq;
                    if let Err(e) = framed.send(TracerMessage::Ack(seq)).await {
                        break Err(e.into());
                    }
                }
            }
            _ = ping.tick() => {
                nonce += 1;
                ping_sent = Some((nonce, Instant::now()));
                if let Err(e) = framed.send(TracerMessage::Ping(nonce)).await {
                    break Err(e.into());
                }
            }
            frame = framed.next() => match frame {
                None => break Ok(End::PeerClosed),
                Some(Err(e)) => break Err(e.into()),
                Some(Ok(msg)) => match lease.arrived(msg) {
                    NodeMessage::Traces(batch) => {
                        received.inc_by(batch.objects.len() as u64);
                        let Some(job) = number(batch, &mut expected, lease.name(), &duplicates) else {
                            continue;
                        };
                        if tx.send(job).await.is_err() {
                            break Ok(End::PeerClosed);
                        }
                    }
                    NodeMessage::Metrics(update) => lease.apply_metrics(update),
                    NodeMessage::DataPoints(points) => lease.apply_data_points(points),
                    NodeMessage::Ping(n) => {
                        if let Err(e) = framed.send(TracerMessage::Pong(n)).await {
                            break Err(e.into());
                        }
                    }
                    NodeMessage::Pong(n) => {
                        if let Some((sent_nonce, at)) = ping_sent.take() {
                            if sent_nonce == n {
                                lease.set_rtt(at.elapsed().as_micros() as u64);
                            }
                        }
                    }
                    NodeMessage::Hello(_) => {
                        break Err(CodecError::Invalid("second Hello in one session".into()).into());
                    }
                },
            },
        }
    };

    // Drain: the writer finishes every queued batch once the queue closes, then syncs.
    drop(tx);
    let written = writer
        .await
        .map_err(|e| SessionError::WriterTask(e.to_string()))
        .and_then(|r| r.map_err(SessionError::from));
    let persisted = *persisted_rx.borrow();
    lease.set_persisted(persisted);
    if persisted > acked && outcome.is_ok() {
        // Best effort: the node may already have closed.
        let _ = framed.send(TracerMessage::Ack(persisted)).await;
    }
    written?;
    outcome
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

/// The writer of one session: merges queued batches, writes them on the blocking pool, and
/// publishes the highest sequence number written.
async fn write_loop(
    log: NodeLog,
    mut rx: mpsc::Receiver<Job>,
    persisted: watch::Sender<u64>,
    telemetry: Telemetry,
    node: String,
) -> Result<(), WriteError> {
    let written = telemetry.objects_written.with_label_values(&[&node]);
    let bytes = telemetry.bytes_written.with_label_values(&[&node]);
    let mut log = log;
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_MERGED_BATCHES);
    while rx.recv_many(&mut jobs, MAX_MERGED_BATCHES).await > 0 {
        let started = Instant::now();
        let batch = std::mem::take(&mut jobs);
        let (back, batch, result) = tokio::task::spawn_blocking(move || {
            let mut log = log;
            let now = utc::now_unix();
            let result = log.append(batch.iter().flat_map(|j| j.objects.iter()), now);
            (log, batch, result)
        })
        .await
        .map_err(|e| WriteError::Write {
            path: node.clone().into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        log = back;
        let appended = match result {
            Ok(appended) => appended,
            Err(e) => {
                telemetry.write_errors.inc();
                let lost: usize = batch.iter().map(|j| j.objects.len()).sum();
                telemetry
                    .objects_dropped
                    .with_label_values(&["write_error"])
                    .inc_by(lost as u64);
                return Err(e);
            }
        };
        telemetry
            .write_batch_seconds
            .observe(started.elapsed().as_secs_f64());
        telemetry.rotations.inc_by(appended.rotations);
        telemetry.invalid_machine_json.inc_by(appended.invalid_json);
        written.inc_by(batch.iter().map(|j| j.objects.len() as u64).sum());
        bytes.inc_by(appended.bytes);
        if let Some(last) = batch.last() {
            persisted.send_replace(last.last_seq);
        }
        jobs = batch;
        jobs.clear();
    }
    tokio::task::spawn_blocking(move || log.sync())
        .await
        .map_err(|e| WriteError::Write {
            path: node.into(),
            source: std::io::Error::other(e.to_string()),
        })?
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
