//! The forwarder: the node side of the native protocol, as a library. A program creates a
//! [`Forwarder`], hands it trace objects, metrics and data points, and the forwarder's task
//! delivers them to tracerd over a Unix or TCP socket.
//!
//! What it does, in order of the trace objects' life:
//!
//! * **Bounded queue.** [`Forwarder::trace`] never blocks. Every trace object counts against
//!   [`ForwarderConfig::queue_capacity`] from the moment it is accepted until tracerd
//!   acknowledges it (or it is given up). When the queue is full the *newest* object is
//!   refused: [`SubmitError::QueueFull`], counted in [`Stats::dropped`]. Refused objects get no
//!   sequence number, so tracerd sees no gap.
//! * **Batching.** Objects are numbered (sequence numbers continue tracerd's
//!   `HelloAccept.persisted_seq` for this node name) and encoded into `TraceBatch` frames of up
//!   to [`ForwarderConfig::max_batch_objects`] objects and at most the frame size tracerd
//!   announced. A partial batch waits at most [`ForwarderConfig::linger`].
//! * **Connection.** Connects to a [`crate::config::Address`] (the same syntax as tracerd's
//!   `acceptAt`), and after any failure reconnects with capped exponential backoff
//!   ([`ForwarderConfig::backoff_initial`] doubling up to [`ForwarderConfig::backoff_max`],
//!   with ±20 % jitter; reset by a successful handshake).
//! * **Resend.** Encoded batches are kept until tracerd acknowledges them (`Ack`). After a
//!   reconnect, batches covered by `HelloAccept.persisted_seq` are released and every other
//!   kept batch is sent again first, in order. tracerd drops objects it already persisted,
//!   so resending is safe; when tracerd stopped gracefully (final `Ack` before closing),
//!   every object ends up in its logs exactly once.
//! * **Metrics and data points** are state, not a stream: the forwarder keeps the latest value
//!   per name, sends what changed, and sends the whole set again after every reconnect.
//! * **Liveness.** It answers tracerd's `Ping` with `Pong`, and sends its own `Ping` every
//!   [`ForwarderConfig::ping_every`] to measure the round-trip time ([`Stats::rtt`]).
//!
//! The forwarder runs as one tokio task (plus one reader task per connection) on the runtime
//! that calls [`Forwarder::start`]. See `examples/forward.rs`.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::Address;
use crate::model::{DataPoint, MetricValue, MetricsUpdate, TraceBatch, TraceObject};
use crate::native::{
    encode_node_frame, ForwarderCodec, FrameError, Hello, NodeMessage, RefuseReason, Software,
    TracerMessage, PROTOCOL_VERSION,
};

/// Largest frame the forwarder accepts from tracerd (tracerd's messages are all small).
const MAX_INCOMING_FRAME: usize = 64 * 1024;
/// Upper bound of the protobuf overhead of one trace object beyond its text fields.
const OBJECT_OVERHEAD: usize = 64;
/// Room kept free in a frame for the batch's own fields.
const FRAME_SLACK: usize = 64;
/// How long a closing connection's reader may take to deliver the last `Ack`.
const READER_GRACE: Duration = Duration::from_secs(2);

/// How a forwarder connects and behaves.
#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    /// Where tracerd listens: a Unix socket path or `host:port` (see [`Address::parse`]).
    pub address: Address,
    /// The node's name (tracerd files the node's logs under it).
    pub node_name: String,
    /// tracerd's `networkMagic`.
    pub network_magic: u32,
    /// What the node runs, for tracerd's logs.
    pub software: Software,
    /// Trace objects held at most: queued, in flight, or sent and not yet acknowledged.
    pub queue_capacity: usize,
    /// Most trace objects in one `TraceBatch`.
    pub max_batch_objects: usize,
    /// Largest batch frame, in bytes (further capped by tracerd's `max_frame_bytes`).
    pub max_batch_bytes: usize,
    /// Longest time a partial batch waits for more objects.
    pub linger: Duration,
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Time allowed for connecting and for tracerd's answer to `Hello`.
    pub connect_timeout: Duration,
    /// Period of the forwarder's own round-trip probe; `None` disables it.
    pub ping_every: Option<Duration>,
}

impl ForwarderConfig {
    /// A configuration with defaults: mainnet magic, 65,536 objects of queue, batches of up to
    /// 1,024 objects or 512 KiB, 5 ms linger, backoff 100 ms doubling to 5 s, 10 s connect
    /// timeout, a ping every 5 s.
    pub fn new(address: Address, node_name: impl Into<String>) -> ForwarderConfig {
        ForwarderConfig {
            address,
            node_name: node_name.into(),
            network_magic: crate::config::DEFAULT_NETWORK_MAGIC,
            software: Software {
                name: "tracerd-forwarder".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                commit: String::new(),
            },
            queue_capacity: 65_536,
            max_batch_objects: 1024,
            max_batch_bytes: 512 * 1024,
            linger: Duration::from_millis(5),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            ping_every: Some(Duration::from_secs(5)),
        }
    }
}

/// Why the forwarder could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A size or count that must be positive is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// The node name is empty.
    #[error("node name is empty")]
    EmptyName,
    /// Not called from within a tokio runtime.
    #[error("Forwarder::start must be called from within a tokio runtime")]
    NoRuntime,
}

/// Why a trace object was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The queue holds `queue_capacity` objects: the object was dropped (and counted).
    #[error("forwarder queue full: trace object dropped")]
    QueueFull,
    /// The forwarder is closing or closed.
    #[error("forwarder closed")]
    Closed,
}

/// Why a connection ended (reported in [`Stats::last_error`]).
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// Connecting failed.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// Where.
        address: String,
        /// Why.
        source: io::Error,
    },
    /// No answer to `Hello` (or no connection) within the connect timeout.
    #[error("no handshake answer within {0:?}")]
    Timeout(Duration),
    /// tracerd refused the handshake.
    #[error("tracerd refused the handshake ({reason:?}): {message}")]
    Refused {
        /// Why.
        reason: RefuseReason,
        /// tracerd's explanation.
        message: String,
    },
    /// tracerd sent something unexpected.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// tracerd closed the connection.
    #[error("connection closed by tracerd")]
    Closed,
    /// Reading or writing failed.
    #[error("connection i/o error: {0}")]
    Io(#[from] io::Error),
    /// A frame from tracerd could not be decoded.
    #[error("bad frame from tracerd: {0}")]
    Codec(#[from] FrameError),
}

/// A snapshot of a forwarder's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Trace objects accepted by [`Forwarder::trace`].
    pub submitted: u64,
    /// Trace objects written to a connection for the first time.
    pub sent: u64,
    /// Trace objects written again after a reconnect.
    pub resent: u64,
    /// Trace objects acknowledged by tracerd.
    pub acked: u64,
    /// Trace objects refused because the queue was full, too large for a frame, or
    /// superseded (tracerd had already persisted their sequence numbers from another sender).
    pub dropped: u64,
    /// Trace objects held now (queued, or sent and not yet acknowledged).
    pub buffered: u64,
    /// Bytes of frames written (trace batches, resends, metrics, control).
    pub bytes_sent: u64,
    /// Highest sequence number acknowledged (0: none).
    pub acked_seq: u64,
    /// Successful handshakes so far.
    pub connects: u64,
    /// A session is open now.
    pub connected: bool,
    /// Last measured round-trip time (own `Ping` to `Pong`).
    pub rtt: Option<Duration>,
    /// The name tracerd files this node under (known after the first handshake).
    pub assigned_name: Option<String>,
    /// Why the last connection attempt or session ended, if it failed.
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Counters {
    submitted: AtomicU64,
    sent: AtomicU64,
    resent: AtomicU64,
    acked: AtomicU64,
    dropped: AtomicU64,
    bytes_sent: AtomicU64,
    acked_seq: AtomicU64,
    connects: AtomicU64,
    connected: AtomicBool,
    rtt_micros: AtomicU64,
}

/// Latest-value state of metrics or data points: the whole set plus what changed since the
/// last send.
#[derive(Debug)]
struct StateSet<V> {
    all: BTreeMap<String, V>,
    dirty: BTreeMap<String, V>,
    /// The last update replaced the whole set.
    replaced: bool,
}

impl<V> Default for StateSet<V> {
    fn default() -> Self {
        StateSet {
            all: BTreeMap::new(),
            dirty: BTreeMap::new(),
            replaced: false,
        }
    }
}

impl<V: Clone> StateSet<V> {
    fn update(&mut self, full: bool, items: Vec<(String, V)>) {
        if full {
            self.all.clear();
            self.dirty.clear();
            self.replaced = true;
        }
        for (name, value) in items {
            self.all.insert(name.clone(), value.clone());
            self.dirty.insert(name, value);
        }
    }

    fn is_dirty(&self) -> bool {
        self.replaced || !self.dirty.is_empty()
    }

    /// What to send now: everything (`full`), or the changes since the last call.
    fn take(&mut self, full: bool) -> (bool, Vec<(String, V)>) {
        let full = full || self.replaced;
        self.replaced = false;
        let changed = std::mem::take(&mut self.dirty);
        if full {
            (
                true,
                self.all
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )
        } else {
            (false, changed.into_iter().collect())
        }
    }
}

#[derive(Debug, Default)]
struct Queue {
    traces: VecDeque<TraceObject>,
    /// When the oldest queued object arrived (for the linger deadline).
    oldest: Option<Instant>,
    metrics: StateSet<MetricValue>,
    points: StateSet<String>,
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    capacity: usize,
    max_batch_objects: usize,
    queue: Mutex<Queue>,
    notify: Notify,
    /// Objects accepted and not yet acknowledged or dropped.
    buffered: AtomicUsize,
    counters: Counters,
    /// Acknowledged-object count, for waiters.
    acked_tx: watch::Sender<u64>,
    assigned_name: Mutex<Option<String>>,
    last_error: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn stats(&self) -> Stats {
        let c = &self.counters;
        let rtt = c.rtt_micros.load(Ordering::Relaxed);
        Stats {
            submitted: c.submitted.load(Ordering::Relaxed),
            sent: c.sent.load(Ordering::Relaxed),
            resent: c.resent.load(Ordering::Relaxed),
            acked: c.acked.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            buffered: self.buffered.load(Ordering::Relaxed) as u64,
            bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
            acked_seq: c.acked_seq.load(Ordering::Relaxed),
            connects: c.connects.load(Ordering::Relaxed),
            connected: c.connected.load(Ordering::Relaxed),
            rtt: (rtt > 0).then(|| Duration::from_micros(rtt)),
            assigned_name: lock(&self.assigned_name).clone(),
            last_error: lock(&self.last_error).clone(),
        }
    }

    fn release(&self, n: usize) {
        self.buffered.fetch_sub(n, Ordering::AcqRel);
    }

    fn set_error(&self, e: &ConnectionError) {
        *lock(&self.last_error) = Some(e.to_string());
    }
}

/// A handle to a running forwarder. Cheap methods, callable from any thread; dropping the
/// handle stops the forwarder at once (use [`Forwarder::close`] to drain first).
#[derive(Debug)]
pub struct Forwarder {
    shared: Arc<Shared>,
    closing: CancellationToken,
    task: Option<JoinHandle<()>>,
    _stop: DropGuard,
    stop: CancellationToken,
}

impl Forwarder {
    /// Validates `config` and starts the forwarder's task on the current tokio runtime. It
    /// connects in the background; objects submitted meanwhile wait in the queue.
    pub fn start(config: ForwarderConfig) -> Result<Forwarder, ConfigError> {
        for (what, v) in [
            ("queue_capacity", config.queue_capacity),
            ("max_batch_objects", config.max_batch_objects),
            ("max_batch_bytes", config.max_batch_bytes),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(what));
            }
        }
        if config.node_name.is_empty() {
            return Err(ConfigError::EmptyName);
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
        let (acked_tx, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            capacity: config.queue_capacity,
            max_batch_objects: config.max_batch_objects,
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
            buffered: AtomicUsize::new(0),
            counters: Counters::default(),
            acked_tx,
            assigned_name: Mutex::new(None),
            last_error: Mutex::new(None),
        });
        let stop = CancellationToken::new();
        let closing = CancellationToken::new();
        let task = runtime.spawn(run(config, shared.clone(), stop.clone(), closing.clone()));
        Ok(Forwarder {
            shared,
            closing,
            task: Some(task),
            _stop: stop.clone().drop_guard(),
            stop,
        })
    }

    /// Queues one trace object. Never blocks; when the queue is full the object is dropped and
    /// counted.
    pub fn trace(&self, object: TraceObject) -> Result<(), SubmitError> {
        let mut one = Some(object);
        match self.trace_many(std::iter::from_fn(|| one.take())) {
            1 => Ok(()),
            _ if lock(&self.shared.queue).closed => Err(SubmitError::Closed),
            _ => Err(SubmitError::QueueFull),
        }
    }

    /// Queues trace objects in order, as many as fit; the rest are dropped (newest first) and
    /// counted. Returns how many were accepted. Cheaper than calling [`Forwarder::trace`] per
    /// object.
    pub fn trace_many(&self, objects: impl IntoIterator<Item = TraceObject>) -> usize {
        let shared = &*self.shared;
        let mut accepted = 0usize;
        let mut refused = 0u64;
        let wake;
        {
            let mut q = lock(&shared.queue);
            if q.closed {
                return 0;
            }
            let before = q.traces.len();
            for object in objects {
                let prev = shared.buffered.fetch_add(1, Ordering::AcqRel);
                if prev >= shared.capacity {
                    shared.buffered.fetch_sub(1, Ordering::AcqRel);
                    refused += 1;
                    continue;
                }
                q.traces.push_back(object);
                accepted += 1;
            }
            let after = q.traces.len();
            if before == 0 && after > 0 {
                q.oldest = Some(Instant::now());
            }
            // Wake the task when a linger period starts or a batch is full.
            wake = (before == 0 && after > 0)
                || (after / shared.max_batch_objects > before / shared.max_batch_objects);
        }
        let c = &shared.counters;
        c.submitted.fetch_add(accepted as u64, Ordering::Relaxed);
        if refused > 0 {
            c.dropped.fetch_add(refused, Ordering::Relaxed);
        }
        if wake {
            shared.notify.notify_one();
        }
        accepted
    }

    /// Updates metrics: `update.full` replaces the whole set, otherwise the listed names are
    /// inserted or overwritten. Only the latest value per name is kept.
    pub fn metrics(&self, update: MetricsUpdate) {
        lock(&self.shared.queue)
            .metrics
            .update(update.full, update.metrics);
        self.shared.notify.notify_one();
    }

    /// Updates data points (each replaces the previous value of its name).
    pub fn data_points(&self, points: Vec<DataPoint>) {
        lock(&self.shared.queue).points.update(
            false,
            points.into_iter().map(|p| (p.name, p.json)).collect(),
        );
        self.shared.notify.notify_one();
    }

    /// Trace objects that can be queued now without a drop.
    pub fn space(&self) -> usize {
        self.shared
            .capacity
            .saturating_sub(self.shared.buffered.load(Ordering::Acquire))
    }

    /// A receiver of the acknowledged-object count ([`Stats::acked`]), to wait for progress.
    pub fn acked_watch(&self) -> watch::Receiver<u64> {
        self.shared.acked_tx.subscribe()
    }

    /// The current counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Waits until every accepted trace object is acknowledged or dropped, or `timeout`
    /// passes. Returns whether the queue is empty.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let mut rx = self.acked_watch();
        let deadline = Instant::now() + timeout;
        loop {
            if self.shared.buffered.load(Ordering::Acquire) == 0 {
                return true;
            }
            // Wake up at least every 50 ms: drops change `buffered` without an ack.
            let until = deadline.min(Instant::now() + Duration::from_millis(50));
            if tokio::time::timeout_at(until, rx.changed())
                .await
                .is_ok_and(|r| r.is_err())
            {
                return self.shared.buffered.load(Ordering::Acquire) == 0;
            }
            if Instant::now() >= deadline {
                return self.shared.buffered.load(Ordering::Acquire) == 0;
            }
        }
    }

    /// Stops accepting objects, sends what is queued, waits (at most `timeout`) for tracerd to
    /// acknowledge everything, closes the connection and returns the final counters.
    pub async fn close(mut self, timeout: Duration) -> Stats {
        lock(&self.shared.queue).closed = true;
        self.closing.cancel();
        self.shared.notify.notify_one();
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(timeout, &mut task).await.is_err() {
                self.stop.cancel();
                let _ = task.await;
            }
        }
        self.shared
            .counters
            .connected
            .store(false, Ordering::Relaxed);
        self.shared.stats()
    }
}

/// A kept, encoded batch.
#[derive(Debug)]
struct Kept {
    first_seq: u64,
    last_seq: u64,
    frame: Bytes,
    /// Written completely at least once (a later write counts as a resend).
    written: bool,
}

impl Kept {
    fn len(&self) -> usize {
        (self.last_seq - self.first_seq + 1) as usize
    }
}

/// The sequence-number bookkeeping of the forwarder's task.
#[derive(Debug)]
struct Outbox {
    /// Sent (or to be resent) and not yet acknowledged, oldest first.
    kept: VecDeque<Kept>,
    /// The number the next object gets.
    next_seq: u64,
    /// Highest sequence number acknowledged.
    acked_seq: u64,
}

impl Outbox {
    fn new() -> Outbox {
        Outbox {
            kept: VecDeque::new(),
            next_seq: 1,
            acked_seq: 0,
        }
    }

    /// Releases batches covered by `seq`; returns how many objects were released.
    fn ack(&mut self, seq: u64) -> usize {
        if seq <= self.acked_seq {
            return 0;
        }
        self.acked_seq = seq;
        let mut released = 0;
        while self.kept.front().is_some_and(|k| k.last_seq <= seq) {
            if let Some(k) = self.kept.pop_front() {
                released += k.len();
            }
        }
        released
    }

    /// Handles `HelloAccept.persisted_seq`: returns (objects acknowledged by it, objects
    /// superseded). When tracerd has persisted sequence numbers this forwarder never assigned
    /// (an earlier process with the same node name), numbering continues after them.
    fn accept(&mut self, persisted: u64) -> (usize, usize) {
        if persisted < self.next_seq {
            return (self.ack(persisted), 0);
        }
        // Everything we kept is at or below `persisted`: tracerd would drop it as duplicate.
        let superseded = self.kept.drain(..).map(|k| k.len()).sum();
        self.acked_seq = self.acked_seq.max(persisted);
        self.next_seq = persisted + 1;
        (0, superseded)
    }
}

/// The delay before reconnect attempt `attempt` (0-based): `initial * 2^attempt`, capped, with
/// ±20 % jitter taken from `noise`.
fn backoff_delay(initial: Duration, max: Duration, attempt: u32, noise: u64) -> Duration {
    let base = initial.saturating_mul(1u32 << attempt.min(20)).min(max);
    // noise % 401 is in 0..=400, i.e. a factor of 0.8..=1.2.
    let factor = 800 + (noise % 401);
    base.saturating_mul(factor as u32) / 1000
}

fn noise() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    u64::from(t).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 17
}

type Reader = Pin<Box<dyn AsyncRead + Send>>;
type Writer = Pin<Box<dyn AsyncWrite + Send>>;

async fn connect(address: &Address) -> io::Result<(Reader, Writer)> {
    match address {
        Address::Unix(path) => {
            let s = tokio::net::UnixStream::connect(path).await?;
            let (r, w) = s.into_split();
            Ok((Box::pin(r), Box::pin(w)))
        }
        Address::Tcp { host, port } => {
            let s = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
            s.set_nodelay(true)?;
            let (r, w) = s.into_split();
            Ok((Box::pin(r), Box::pin(w)))
        }
    }
}

/// The forwarder's task: connect, serve a session, back off, repeat until closed.
async fn run(
    config: ForwarderConfig,
    shared: Arc<Shared>,
    stop: CancellationToken,
    closing: CancellationToken,
) {
    let mut outbox = Outbox::new();
    let mut attempt = 0u32;
    loop {
        if closing.is_cancelled() && drained(&shared, &outbox) {
            return;
        }
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = session(&config, &shared, &mut outbox, &closing) => r,
        };
        shared.counters.connected.store(false, Ordering::Relaxed);
        match result {
            Ok(()) => return,
            Err((handshaken, e)) => {
                tracing::debug!(node = %config.node_name, error = %e, "forwarder connection ended");
                shared.set_error(&e);
                if handshaken {
                    attempt = 0;
                }
            }
        }
        if closing.is_cancelled() && drained(&shared, &outbox) {
            return;
        }
        let delay = backoff_delay(config.backoff_initial, config.backoff_max, attempt, noise());
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

fn drained(shared: &Shared, outbox: &Outbox) -> bool {
    outbox.kept.is_empty() && lock(&shared.queue).traces.is_empty()
}

/// What the reader task forwards besides acknowledgements.
#[derive(Debug)]
enum Control {
    Ping(u64),
    Pong(u64),
}

/// One connection. `Err((handshaken, why))` when it ends otherwise than by a drained close.
async fn session(
    config: &ForwarderConfig,
    shared: &Shared,
    outbox: &mut Outbox,
    closing: &CancellationToken,
) -> Result<(), (bool, ConnectionError)> {
    let timeout = config.connect_timeout;
    let (reader, mut writer) = match tokio::time::timeout(timeout, connect(&config.address)).await {
        Err(_) => return Err((false, ConnectionError::Timeout(timeout))),
        Ok(Err(source)) => {
            return Err((
                false,
                ConnectionError::Connect {
                    address: config.address.to_string(),
                    source,
                },
            ))
        }
        Ok(Ok(rw)) => rw,
    };
    let mut frames = FramedRead::new(reader, ForwarderCodec::new(MAX_INCOMING_FRAME));
    let hello = encode_node_frame(NodeMessage::Hello(Hello {
        versions: vec![PROTOCOL_VERSION],
        network_magic: config.network_magic,
        node_name: config.node_name.clone(),
        software: config.software.clone(),
    }));
    let fail = |e: ConnectionError| (false, e);
    writer.write_all(&hello).await.map_err(|e| fail(e.into()))?;
    let answer = tokio::time::timeout(timeout, frames.next())
        .await
        .map_err(|_| fail(ConnectionError::Timeout(timeout)))?;
    let (persisted, max_frame) = match answer {
        None => return Err(fail(ConnectionError::Closed)),
        Some(Err(e)) => return Err(fail(e.into())),
        Some(Ok(TracerMessage::Accept {
            node_name,
            persisted_seq,
            max_frame_bytes,
            ..
        })) => {
            *lock(&shared.assigned_name) = Some(node_name);
            (persisted_seq, max_frame_bytes as usize)
        }
        Some(Ok(TracerMessage::Refuse { reason, message })) => {
            return Err(fail(ConnectionError::Refused { reason, message }))
        }
        Some(Ok(other)) => {
            return Err(fail(ConnectionError::Protocol(format!(
                "expected HelloAccept, got {other:?}"
            ))))
        }
    };
    let c = &shared.counters;
    c.connects.fetch_add(1, Ordering::Relaxed);
    c.connected.store(true, Ordering::Relaxed);
    let (acked_now, superseded) = outbox.accept(persisted);
    note_acked(shared, outbox, acked_now);
    if superseded > 0 {
        c.dropped.fetch_add(superseded as u64, Ordering::Relaxed);
        shared.release(superseded);
    }
    let frame_budget = config
        .max_batch_bytes
        .min(max_frame.saturating_sub(FRAME_SLACK))
        .max(1);

    // The reader: acknowledgements through a coalescing watch, the rest through a channel.
    let (ack_tx, mut ack_rx) = watch::channel(0u64);
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<Control>(16);
    let mut reader = AbortOnDrop(tokio::spawn(read_loop(frames, ack_tx, ctl_tx)));

    let mut s = Session {
        shared,
        writer: &mut writer,
        frame_budget,
        reader_done: false,
    };
    let result = s
        .stream(
            config,
            outbox,
            closing,
            &mut reader.0,
            &mut ack_rx,
            &mut ctl_rx,
        )
        .await;
    if result.is_err() && !s.reader_done {
        // Collect the last Ack tracerd sent before the connection went away.
        let _ = tokio::time::timeout(READER_GRACE, &mut reader.0).await;
        let seq = *ack_rx.borrow();
        let n = outbox.ack(seq);
        note_acked(shared, outbox, n);
    }
    result.map_err(|e| (true, e))
}

struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn note_acked(shared: &Shared, outbox: &Outbox, released: usize) {
    let c = &shared.counters;
    c.acked_seq.store(outbox.acked_seq, Ordering::Relaxed);
    if released > 0 {
        shared.release(released);
        let total = c.acked.fetch_add(released as u64, Ordering::Relaxed) + released as u64;
        shared.acked_tx.send_replace(total);
    }
}

async fn read_loop(
    mut frames: FramedRead<Reader, ForwarderCodec>,
    ack_tx: watch::Sender<u64>,
    ctl_tx: mpsc::Sender<Control>,
) -> Result<(), ConnectionError> {
    while let Some(msg) = frames.next().await {
        match msg? {
            TracerMessage::Ack(seq) => {
                ack_tx.send_if_modified(|v| {
                    let newer = seq > *v;
                    if newer {
                        *v = seq;
                    }
                    newer
                });
            }
            // A full channel means the writer is stuck: dropping a probe is harmless.
            TracerMessage::Ping(n) => {
                let _ = ctl_tx.try_send(Control::Ping(n));
            }
            TracerMessage::Pong(n) => {
                let _ = ctl_tx.try_send(Control::Pong(n));
            }
            other => {
                return Err(ConnectionError::Protocol(format!(
                    "unexpected message in session: {other:?}"
                )))
            }
        }
    }
    Err(ConnectionError::Closed)
}

struct Session<'a> {
    shared: &'a Shared,
    writer: &'a mut Writer,
    frame_budget: usize,
    /// The reader task has been awaited to completion (it must not be polled again).
    reader_done: bool,
}

impl Session<'_> {
    async fn write(&mut self, frame: &[u8]) -> Result<(), ConnectionError> {
        self.writer.write_all(frame).await?;
        self.shared
            .counters
            .bytes_sent
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn stream(
        &mut self,
        config: &ForwarderConfig,
        outbox: &mut Outbox,
        closing: &CancellationToken,
        reader: &mut JoinHandle<Result<(), ConnectionError>>,
        ack_rx: &mut watch::Receiver<u64>,
        ctl_rx: &mut mpsc::Receiver<Control>,
    ) -> Result<(), ConnectionError> {
        let shared = self.shared;
        // Resend, oldest first, everything tracerd has not acknowledged.
        // Nothing touches `outbox` while this loop runs, so the indices stay valid.
        for i in 0..outbox.kept.len() {
            let (frame, n, written) = {
                let k = &outbox.kept[i];
                (k.frame.clone(), k.len(), k.written)
            };
            self.write(&frame).await?;
            let counter = if written {
                &shared.counters.resent
            } else {
                &shared.counters.sent
            };
            counter.fetch_add(n as u64, Ordering::Relaxed);
            outbox.kept[i].written = true;
        }
        // Metrics and data points: the whole state after every (re)connect.
        self.send_state(true).await?;

        let ping_every = config.ping_every.unwrap_or(Duration::from_secs(3600));
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        let mut ping_sent: Option<(u64, Instant)> = None;
        let mut nonce = 0u64;
        let mut linger: Option<Instant> = None;
        loop {
            let close_now = closing.is_cancelled();
            let deadline = linger.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                joined = &mut *reader => {
                    self.reader_done = true;
                    let seq = *ack_rx.borrow_and_update();
                    let n = outbox.ack(seq);
                    note_acked(shared, outbox, n);
                    return Err(match joined {
                        Ok(Err(e)) => e,
                        Ok(Ok(())) => ConnectionError::Closed,
                        Err(e) => ConnectionError::Protocol(format!("reader task failed: {e}")),
                    });
                }
                changed = ack_rx.changed() => {
                    let seq = *ack_rx.borrow_and_update();
                    let n = outbox.ack(seq);
                    note_acked(shared, outbox, n);
                    if changed.is_err() {
                        // The reader has ended (it dropped the sender); collect why, bounded.
                        self.reader_done = true;
                        return Err(match tokio::time::timeout(READER_GRACE, &mut *reader).await {
                            Ok(Ok(Err(e))) => e,
                            Ok(Ok(Ok(()))) | Err(_) => ConnectionError::Closed,
                            Ok(Err(e)) => ConnectionError::Protocol(format!("reader task failed: {e}")),
                        });
                    }
                }
                Some(ctl) = ctl_rx.recv() => match ctl {
                    Control::Ping(n) => self.write(&encode_node_frame(NodeMessage::Pong(n))).await?,
                    Control::Pong(n) => {
                        if let Some((sent, at)) = ping_sent.take() {
                            if sent == n {
                                let micros = at.elapsed().as_micros().max(1) as u64;
                                shared.counters.rtt_micros.store(micros, Ordering::Relaxed);
                            } else {
                                ping_sent = Some((sent, at));
                            }
                        }
                    }
                },
                _ = ping.tick(), if config.ping_every.is_some() => {
                    nonce += 1;
                    ping_sent = Some((nonce, Instant::now()));
                    self.write(&encode_node_frame(NodeMessage::Ping(nonce))).await?;
                }
                _ = shared.notify.notified() => {}
                _ = tokio::time::sleep_until(deadline), if linger.is_some() => {}
                _ = closing.cancelled(), if !close_now => {}
            }
            linger = self
                .send_ready(config, outbox, closing.is_cancelled())
                .await?;
            self.send_state(false).await?;
            if closing.is_cancelled() && drained(shared, outbox) {
                return Ok(());
            }
        }
    }

    /// Sends every full batch, and a partial one when its linger time is over (or when
    /// closing). Returns the linger deadline of what stays queued.
    async fn send_ready(
        &mut self,
        config: &ForwarderConfig,
        outbox: &mut Outbox,
        flush_all: bool,
    ) -> Result<Option<Instant>, ConnectionError> {
        let shared = self.shared;
        loop {
            let now = Instant::now();
            let batch = {
                let mut q = lock(&shared.queue);
                if q.traces.is_empty() {
                    return Ok(None);
                }
                let due = q.oldest.is_none_or(|t| t + config.linger <= now);
                if q.traces.len() < config.max_batch_objects && !due && !flush_all {
                    return Ok(q.oldest.map(|t| t + config.linger));
                }
                let mut objects = Vec::with_capacity(q.traces.len().min(config.max_batch_objects));
                let mut bytes = 0usize;
                let mut oversize = 0usize;
                while objects.len() < config.max_batch_objects {
                    let Some(size) = q.traces.front().map(estimate) else {
                        break;
                    };
                    if size > self.frame_budget {
                        q.traces.pop_front();
                        oversize += 1;
                        continue;
                    }
                    if bytes + size > self.frame_budget && !objects.is_empty() {
                        break;
                    }
                    bytes += size;
                    if let Some(o) = q.traces.pop_front() {
                        objects.push(o);
                    }
                }
                q.oldest = if q.traces.is_empty() { None } else { Some(now) };
                if oversize > 0 {
                    shared
                        .counters
                        .dropped
                        .fetch_add(oversize as u64, Ordering::Relaxed);
                    shared.release(oversize);
                }
                objects
            };
            if batch.is_empty() {
                continue;
            }
            let n = batch.len();
            let first_seq = outbox.next_seq;
            outbox.next_seq += n as u64;
            let frame = encode_node_frame(NodeMessage::Traces(TraceBatch {
                first_seq,
                objects: batch,
            }))
            .freeze();
            outbox.kept.push_back(Kept {
                first_seq,
                last_seq: first_seq + n as u64 - 1,
                frame: frame.clone(),
                written: false,
            });
            self.write(&frame).await?;
            if let Some(k) = outbox.kept.back_mut() {
                k.written = true;
            }
            shared.counters.sent.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Sends changed (or, with `all`, every) metric and data point.
    async fn send_state(&mut self, all: bool) -> Result<(), ConnectionError> {
        let (metrics, points) = {
            let mut q = lock(&self.shared.queue);
            let metrics = (all && !q.metrics.all.is_empty() || q.metrics.is_dirty())
                .then(|| q.metrics.take(all));
            let points = (all && !q.points.all.is_empty() || q.points.is_dirty())
                .then(|| q.points.take(all).1);
            (metrics, points)
        };
        if let Some((full, metrics)) = metrics {
            let frame = encode_node_frame(NodeMessage::Metrics(MetricsUpdate { full, metrics }));
            self.write(&frame).await?;
        }
        if let Some(points) = points.filter(|p| !p.is_empty()) {
            let points = points
                .into_iter()
                .map(|(name, json)| DataPoint { name, json })
                .collect();
            self.write(&encode_node_frame(NodeMessage::DataPoints(points)))
                .await?;
        }
        Ok(())
    }
}

/// An upper bound of the encoded size of one trace object inside a batch.
fn estimate(o: &TraceObject) -> usize {
    o.namespace.len()
        + o.hostname.len()
        + o.thread_id.len()
        + o.machine.len()
        + o.human.as_ref().map_or(0, String::len)
        + OBJECT_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(first: u64, last: u64) -> Kept {
        Kept {
            first_seq: first,
            last_seq: last,
            frame: Bytes::new(),
            written: true,
        }
    }

    #[test]
    fn acks_release_whole_batches_in_order() {
        let mut o = Outbox::new();
        o.kept.extend([kept(1, 10), kept(11, 20), kept(21, 25)]);
        o.next_seq = 26;
        assert_eq!(o.ack(5), 0);
        assert_eq!(o.ack(20), 20);
        assert_eq!(o.ack(19), 0);
        assert_eq!(o.kept.len(), 1);
        assert_eq!(o.ack(25), 5);
        assert!(o.kept.is_empty());
    }

    #[test]
    fn accept_trims_or_continues_numbering() {
        let mut o = Outbox::new();
        o.kept.extend([kept(1, 10), kept(11, 20)]);
        o.next_seq = 21;
        // tracerd restarted and knows nothing: keep everything for resend.
        assert_eq!(o.accept(0), (0, 0));
        assert_eq!(o.kept.len(), 2);
        assert_eq!(o.accept(10), (10, 0));
        assert_eq!(o.kept.len(), 1);
        // tracerd has sequence numbers from an earlier process of the same name.
        assert_eq!(o.accept(100), (0, 10));
        assert_eq!(o.next_seq, 101);
        let mut fresh = Outbox::new();
        assert_eq!(fresh.accept(41), (0, 0));
        assert_eq!(fresh.next_seq, 42);
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let i = Duration::from_millis(100);
        let m = Duration::from_secs(5);
        assert_eq!(backoff_delay(i, m, 0, 200), Duration::from_millis(100));
        assert_eq!(backoff_delay(i, m, 3, 200), Duration::from_millis(800));
        assert_eq!(backoff_delay(i, m, 30, 200), m);
        assert_eq!(backoff_delay(i, m, 0, 0), Duration::from_millis(80));
        assert_eq!(backoff_delay(i, m, 0, 400), Duration::from_millis(120));
    }

    #[test]
    fn state_sets_send_changes_then_everything_after_reconnect() {
        let mut s = StateSet::<i64>::default();
        s.update(false, vec![("a".into(), 1), ("b".into(), 2)]);
        assert_eq!(
            s.take(false),
            (false, vec![("a".into(), 1), ("b".into(), 2)])
        );
        assert!(!s.is_dirty());
        s.update(false, vec![("a".into(), 3)]);
        assert_eq!(s.take(false), (false, vec![("a".into(), 3)]));
        assert_eq!(s.take(true), (true, vec![("a".into(), 3), ("b".into(), 2)]));
        s.update(true, vec![("c".into(), 4)]);
        assert_eq!(s.take(false), (true, vec![("c".into(), 4)]));
    }
}
