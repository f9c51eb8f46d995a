//! One node's forwarding to one native downstream: a task that connects as that node, learns
//! what the downstream holds (`HelloAccept.persisted_seq`), sends the node's lines from its
//! files in numbered batches (at most `maxInFlight` unacknowledged) and moves its fsynced
//! cursor only as far as the downstream's `Ack`s cover. Any failure: back off, reconnect and
//! start again from the cursor (the downstream drops what it already has).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::line::Cursor;
use super::metrics::Metrics;
use super::mirror::Mirror;
use super::reader::{Read, Reader};
use crate::config::NativeDownstream;
use crate::model::{MetricValue, TraceBatch};
use crate::native::{ForwarderCodec, Hello, NodeMessage, RefuseReason, Software, TracerMessage};
use crate::ship::cursor::{Lag, Pos};
use crate::ship::state::StateDir;
use tracerd_wire::Backoff;

/// How long connecting and the handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// A session with batches in flight and no message from the downstream for this long is
/// given up (and reconnected).
const STALL: Duration = Duration::from_secs(60);
/// Cursor writes (fsync) at most this often; the cursor may lag the acknowledgements
/// safely (what is resent is dropped downstream).
const SAVE_EVERY: Duration = Duration::from_millis(100);
/// Largest frame read from the downstream (its messages are small).
const READ_FRAME: usize = 1 << 20;
/// Largest frame sent when the downstream announces none.
const DEFAULT_FRAME: usize = 1 << 20;
/// How often the node's files are listed while the downstream is away.
const RELIST_EVERY: Duration = Duration::from_millis(250);
/// How often the node's latest metrics and data points are compared with what the
/// downstream has and the difference sent.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// Everything one node's task needs.
pub struct NodeTask {
    /// The downstream.
    pub downstream: Arc<NativeDownstream>,
    /// The node's directory name (its name towards the downstream).
    pub node: String,
    /// The node's files.
    pub reader: Reader,
    /// The downstream's cursor files.
    pub state: StateDir,
    /// Metrics.
    pub metrics: Metrics,
    /// `networkMagic`.
    pub magic: u32,
    /// The node registry: the node's latest metrics and data points.
    pub nodes: crate::node::Nodes,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("handshake timed out")]
    HandshakeTimeout,
    #[error("refused: {0}")]
    Refused(String),
    #[error("refused as a re-forwarding loop: {0}")]
    Loop(String),
    #[error("the node's tracer path changed: reconnecting to announce it")]
    PathChanged,
    #[error("connection closed")]
    Closed,
    #[error("no answer for {0:?} with batches in flight")]
    Stalled(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Frame(#[from] crate::native::FrameError),
}

/// The mutable state of a node's forwarding across sessions.
struct State {
    reader: Reader,
    confirmed: Cursor,
    saved: Cursor,
    last_save: Instant,
    lag: Lag,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking forward task panicked")
}

impl NodeTask {
    /// Runs until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        let NodeTask {
            downstream,
            node,
            reader,
            state,
            metrics,
            magic,
            nodes,
        } = self;
        let name = downstream.name.clone();
        let (st, n) = (state.clone(), node.clone());
        let confirmed = match blocking(move || st.load_text(&n)).await {
            Ok(Some(text)) => Cursor::from_text(&text).unwrap_or_else(|| {
                tracing::warn!(downstream = %name, node = %node, cursor = ?text,
                    "unreadable forwarding cursor: forwarding the node's files from the oldest (the downstream drops what it has)");
                Cursor::default()
            }),
            Ok(None) => Cursor::default(),
            Err(e) => {
                tracing::warn!(downstream = %name, node = %node, error = %e,
                    "unreadable forwarding cursor: forwarding the node's files from the oldest");
                Cursor::default()
            }
        };
        let mut reader = reader;
        reader.next = confirmed;
        let mut s = State {
            reader,
            confirmed,
            saved: confirmed,
            last_save: Instant::now(),
            lag: Lag::default(),
        };
        let mut backoff =
            Backoff::new(Duration::from_millis(200), Duration::from_secs(5)).jittered();
        // When the last warning was logged, and what it said: a new reason is logged at
        // once, the same one at most every minute.
        let mut last_warn: Option<(Instant, String)> = None;
        let connected = metrics.connected.with_label_values(&[&name, &node]);
        loop {
            if cancel.is_cancelled() {
                break;
            }
            let started = Instant::now();
            let outcome = tokio::select! {
                _ = cancel.cancelled() => break,
                o = session(&downstream, &node, magic, &metrics, &state, &mut s, &connected, &nodes) => o,
            };
            connected.set(0);
            s.reader.next = s.confirmed;
            save(&state, &node, &mut s, true).await;
            match outcome {
                Ok(()) => break,
                Err(SessionError::PathChanged) => {
                    // Not a failure: the next Hello names the new path (which the downstream
                    // may refuse as a loop: that is then logged as what it is).
                    tracing::info!(downstream = %name, node = %node,
                        "{}", SessionError::PathChanged);
                    continue;
                }
                Err(e) => {
                    metrics.failures.with_label_values(&[&name]).inc();
                    if started.elapsed() > Duration::from_secs(10) {
                        backoff.reset();
                        last_warn = None;
                    }
                    let error = e.to_string();
                    let repeated = last_warn.as_ref().is_some_and(|(t, said)| {
                        *said == error && t.elapsed() <= Duration::from_secs(60)
                    });
                    if !repeated {
                        tracing::warn!(downstream = %name, node = %node, address = %downstream.address,
                            error = %error, "native downstream unavailable; the node's lines wait in its files");
                        last_warn = Some((Instant::now(), error));
                    }
                }
            }
            // While the downstream is away, look at the node's files every `RELIST_EVERY`:
            // the lag gauges keep rising, and a file retention deletes is noticed (and
            // counted) even when it lived for less than the backoff.
            let until = Instant::now() + backoff.next_delay();
            loop {
                relist(&downstream, &metrics, &node, &mut s).await;
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(left.min(RELIST_EVERY)) => {}
                }
            }
            if cancel.is_cancelled() {
                break;
            }
        }
        connected.set(0);
        save(&state, &node, &mut s, true).await;
    }
}

/// Lists the node's files again, counts what retention deleted unsent and updates the lag.
async fn relist(downstream: &Arc<NativeDownstream>, metrics: &Metrics, node: &str, s: &mut State) {
    let name = downstream.name.as_str();
    let mut r = std::mem::take(&mut s.reader);
    let filter = downstream.clone();
    let (r, lost) = blocking(move || {
        let lost = r.relist(&filter);
        (r, lost)
    })
    .await;
    s.reader = r;
    count_lost(metrics, name, node, &s.reader, &lost);
    let conf = s.confirmed;
    publish(metrics, name, node, s, conf, conf.seq);
}

/// Stores the confirmed cursor if it moved (at most every `SAVE_EVERY` unless `now`).
async fn save(state: &StateDir, node: &str, s: &mut State, now: bool) {
    if s.confirmed == s.saved || (!now && s.last_save.elapsed() < SAVE_EVERY) {
        return;
    }
    let (st, n, text) = (state.clone(), node.to_string(), s.confirmed.to_text());
    match blocking(move || st.save_text(&[(n.as_str(), text)])).await {
        Ok(()) => s.saved = s.confirmed,
        Err(e) => tracing::warn!(node = %node, error = %e,
            "cannot store the forwarding cursor (a restart resends more; the downstream drops it)"),
    }
    s.last_save = Instant::now();
}

/// Counts the files in `lost` (retention deleted them before they were sent in full) and
/// logs them once, in one line for all of them.
fn count_lost(metrics: &Metrics, name: &str, node: &str, reader: &Reader, lost: &[(String, u64)]) {
    let (Some((first, _)), Some((last, _))) = (lost.first(), lost.last()) else {
        return;
    };
    let bytes: u64 = lost.iter().map(|(_, b)| b).sum();
    let objects = reader.objects_in(bytes);
    metrics
        .skipped_files
        .with_label_values(&[name])
        .inc_by(lost.len() as u64);
    metrics
        .skipped_bytes
        .with_label_values(&[name])
        .inc_by(bytes);
    metrics
        .skipped_objects
        .with_label_values(&[name])
        .inc_by(objects);
    tracing::warn!(downstream = %name, node = %node, files = lost.len(), first = %first,
        last = %last, unsent_bytes = bytes, about_objects = objects,
        "retention deleted log files before they were forwarded; their unsent lines are lost to this downstream");
}

/// Updates the lag gauges: `sent_seq` is the number of the last line sent.
fn publish(metrics: &Metrics, name: &str, node: &str, s: &mut State, _c: Cursor, sent_seq: u64) {
    let now = Instant::now();
    if let Some(end) = s.reader.end() {
        s.lag.saw_end(end, now);
    }
    if let Some(p) = s.confirmed.pos {
        s.lag.confirmed(p);
    }
    let unread = s.reader.bytes_after(s.reader.next.pos);
    let in_flight = sent_seq.saturating_sub(s.confirmed.seq);
    let labels = [name, node];
    metrics
        .lag_seconds
        .with_label_values(&labels)
        .set(s.lag.lag(now).as_secs_f64());
    metrics
        .lag_bytes
        .with_label_values(&labels)
        .set(i64::try_from(s.reader.bytes_after(s.confirmed.pos)).unwrap_or(i64::MAX));
    let objects = in_flight + s.reader.objects_in(unread);
    metrics
        .lag_objects
        .with_label_values(&labels)
        .set(i64::try_from(objects).unwrap_or(i64::MAX));
}

/// A node's metrics and data points, by name.
type Latest = (Vec<(String, MetricValue)>, Vec<(String, String)>);

/// The node's latest metrics and data points, if it is connected to this tracerd (none
/// otherwise: the downstream's copy empties).
fn latest(nodes: &crate::node::Nodes, node: &str) -> Latest {
    let Some(live) = nodes
        .with(node, |e| e.connected.then(|| e.live.clone()))
        .flatten()
    else {
        return (Vec::new(), Vec::new());
    };
    let metrics = live
        .metrics()
        .entries()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect();
    let points = live
        .data_point_names()
        .into_iter()
        // The path travels in the Hello (with this tracer's id), never as a data point.
        .filter(|n| n != crate::forward::TRACERD_PATH)
        .filter_map(|n| live.data_point(&n).map(|j| (n, j)))
        .collect();
    (metrics, points)
}

/// The tracers the node's objects passed through before this one (its `TracerdPath`, as its
/// session here stored it), then this tracer's id: the downstream Hello's `tracers`.
fn path_of(nodes: &crate::node::Nodes, node: &str) -> Vec<String> {
    let mut path: Vec<String> = nodes
        .with(node, |e| e.live.data_point(crate::forward::TRACERD_PATH))
        .flatten()
        .and_then(|json| serde_json::from_str(&json).ok())
        .unwrap_or_default();
    path.push(crate::forward::tracer_id().to_string());
    path
}

/// One connection, until it fails (every end is an error, and retried).
#[allow(clippy::too_many_arguments)]
async fn session(
    downstream: &NativeDownstream,
    node: &str,
    magic: u32,
    metrics: &Metrics,
    state: &StateDir,
    s: &mut State,
    connected: &prometheus::IntGauge,
    nodes: &crate::node::Nodes,
) -> Result<(), SessionError> {
    let name = downstream.name.as_str();
    let path = path_of(nodes, node);
    let stream = tokio::time::timeout(HANDSHAKE, tracerd_wire::connect(&downstream.address))
        .await
        .map_err(|_| SessionError::HandshakeTimeout)?
        .map_err(SessionError::Connect)?;
    let mut framed = Framed::new(stream, ForwarderCodec::new(READ_FRAME));
    framed
        .send(NodeMessage::Hello(Box::new(Hello {
            versions: crate::native::SUPPORTED_VERSIONS.to_vec(),
            network_magic: magic,
            node_name: node.to_string(),
            software: Software {
                name: "tracerd".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                commit: String::new(),
            },
            capabilities: Vec::new(),
            token: String::new(),
            tracers: path.clone(),
        })))
        .await?;
    let (persisted, max_frame) = loop {
        match tokio::time::timeout(HANDSHAKE, framed.next()).await {
            Err(_) => return Err(SessionError::HandshakeTimeout),
            Ok(None) => return Err(SessionError::Closed),
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(Some(Ok(TracerMessage::Accept {
                persisted_seq,
                max_frame_bytes,
                ..
            }))) => break (persisted_seq, max_frame_bytes as usize),
            Ok(Some(Ok(TracerMessage::Refuse {
                reason: RefuseReason::Loop,
                message,
            }))) => return Err(SessionError::Loop(message)),
            Ok(Some(Ok(TracerMessage::Refuse { reason, message }))) => {
                return Err(SessionError::Refused(format!("{reason:?}: {message}")))
            }
            Ok(Some(Ok(TracerMessage::Ping(n)))) => framed.send(NodeMessage::Pong(n)).await?,
            Ok(Some(Ok(_))) => {}
        }
    };
    let max_frame = if max_frame == 0 {
        DEFAULT_FRAME
    } else {
        max_frame
    };
    if persisted < s.confirmed.seq {
        tracing::warn!(downstream = %name, node = %node, downstream_has = persisted,
            acknowledged = s.confirmed.seq,
            "the downstream holds less than it acknowledged before (its files were removed?); forwarding on from the cursor");
    }
    tracing::info!(downstream = %name, node = %node, persisted_seq = persisted,
        cursor_seq = s.confirmed.seq, "forwarding the node's lines to the native downstream");
    connected.set(1);
    let mut acked = persisted;
    let mut sent_seq = s.confirmed.seq.max(persisted);
    // (number of the last line, position after it) of each read not yet acknowledged.
    let mut in_flight: VecDeque<(u64, Pos)> = VecDeque::new();
    let mut idle = false;
    let mut last_heard = Instant::now();
    let window = downstream.max_in_flight.max(1) as usize;
    let max_objects = downstream.batch_objects.max(1) as usize;
    let mut mirror = Mirror::default();
    let mut last_sync: Option<Instant> = None;
    loop {
        if last_sync.is_none_or(|t| t.elapsed() >= SYNC_EVERY) {
            last_sync = Some(Instant::now());
            // A tracer the node's objects now pass that the Hello did not name: say so anew.
            if path_of(nodes, node).iter().any(|id| !path.contains(id)) {
                return Err(SessionError::PathChanged);
            }
            let (m, p) = latest(nodes, node);
            for msg in mirror.sync(m, p, max_frame / 2) {
                framed.feed(msg).await?;
            }
            framed.flush().await?;
        }
        // Confirm every read the acknowledgements cover.
        let mut moved = false;
        while let Some(&(seq, pos)) = in_flight.front() {
            if seq > acked {
                break;
            }
            in_flight.pop_front();
            if s.confirmed.pos.is_none_or(|c| c < pos) {
                s.confirmed = Cursor {
                    pos: Some(pos),
                    seq,
                };
                moved = true;
            }
        }
        if moved {
            save(state, node, s, false).await;
            publish(metrics, name, node, s, s.confirmed, sent_seq);
        }
        let room = in_flight.len() < window;
        if room && !idle {
            let mut reader = std::mem::take(&mut s.reader);
            let filter = downstream.clone();
            let (reader, read): (Reader, Read) = blocking(move || {
                let r = reader.read(&filter, max_objects, max_frame / 2, max_frame, acked);
                (reader, r)
            })
            .await;
            s.reader = reader;
            count_lost(metrics, name, node, &s.reader, &read.lost);
            if read.too_large > 0 {
                metrics
                    .too_large
                    .with_label_values(&[name])
                    .inc_by(read.too_large);
                tracing::warn!(downstream = %name, node = %node, lines = read.too_large,
                    max_frame, "trace lines longer than the downstream's frame limit were not forwarded");
            }
            let Some(end) = read.end else {
                idle = true;
                publish(metrics, name, node, s, s.confirmed, sent_seq);
                continue;
            };
            if let Some(&(first_seq, _)) = read.objects.first() {
                let n = read.objects.len() as u64;
                let objects = read.objects.into_iter().map(|(_, o)| o).collect();
                framed
                    .send(NodeMessage::Traces(TraceBatch { first_seq, objects }))
                    .await?;
                metrics.sent.with_label_values(&[name]).inc_by(n);
            }
            sent_seq = sent_seq.max(read.last_seq);
            in_flight.push_back((read.last_seq, end));
            if in_flight.len() == 1 {
                last_heard = Instant::now();
            }
            publish(metrics, name, node, s, s.confirmed, sent_seq);
            continue;
        }
        let wait = if idle {
            Duration::from_millis(downstream.poll_ms.max(1))
        } else {
            STALL.saturating_sub(last_heard.elapsed())
        };
        let wait =
            wait.min(SYNC_EVERY.saturating_sub(last_sync.map_or(SYNC_EVERY, |t| t.elapsed())));
        tokio::select! {
            msg = framed.next() => {
                last_heard = Instant::now();
                match msg {
                    None => return Err(SessionError::Closed),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(TracerMessage::Ack(n))) => {
                        if n > acked {
                            let newly = n.min(sent_seq).saturating_sub(acked.max(s.confirmed.seq));
                            metrics.acked.with_label_values(&[name]).inc_by(newly);
                            acked = n;
                        }
                    }
                    Some(Ok(TracerMessage::Ping(n))) => framed.send(NodeMessage::Pong(n)).await?,
                    Some(Ok(_)) => {}
                }
            }
            _ = tokio::time::sleep(wait) => {
                if idle {
                    idle = false;
                } else if !in_flight.is_empty() && last_heard.elapsed() >= STALL {
                    return Err(SessionError::Stalled(STALL));
                }
            }
        }
    }
}
