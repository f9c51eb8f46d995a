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
//!   announced. A partial batch is sent at once when every batch sent before it has been
//!   acknowledged; while one is awaiting its `Ack`, new objects accumulate (up to a full
//!   batch) and wait at most [`ForwarderConfig::linger`] (Nagle's rule: a lightly loaded node
//!   pays no linger, a busy one sends large batches).
//! * **Connection.** Connects to a [`tracerd_wire::Address`] (the same syntax as tracerd's
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
//! * **Tracing configuration.** Objects are filtered when they are queued by the
//!   configuration in force ([`ForwarderConfig::tracing`] at start; trace-dispatcher's shape:
//!   per namespace prefix a severity filter, a detail level and a maximum frequency). With
//!   [`ForwarderConfig::remote_config`] the forwarder announces `tracing-config.v1`, reports
//!   its configuration after every handshake and every change, and applies the ones tracerd
//!   pushes (after the program's [`ConfigGuard`], if any): from the next batch on only what
//!   the new configuration lets through is sent, and a `Reflection.TracerConfigInfo` trace
//!   records the change in the node's own logs. [`Forwarder::layer`] turns `tracing` events
//!   into trace objects under the same configuration (module `layer`).
//!
//! The forwarder runs as one tokio task (plus one reader task per connection) on the runtime
//! that calls [`Forwarder::start`]. See `examples/forward.rs`.
//!
//! This crate depends on `tracerd-wire` (without its `cardano` feature) and the tokio stack
//! only: no HTTP, metrics or daemon code. Modules: this file is the public API and the state
//! the caller and the task share; `outbox` the pure bookkeeping (sequence numbers, kept
//! batches, latest-value sets); `encode` the `TraceBatch` frame from borrowed objects; `connection` the task (connect, handshake, stream, resend,
//! reconnect); `config` the tracing configuration in force (filter, limiters, apply, report);
//! `layer` the `tracing-subscriber` layer; `timing` the optional timing of batches for
//! benchmarks.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use tracerd_wire::model::{DataPoint, MetricValue, MetricsUpdate, TraceObject};
use tracerd_wire::native::{FrameError, RefuseReason, Software};
use tracerd_wire::tracing_config::{ConfigProblem, Filter, Resolved, TracingConfig};

mod config;
mod connection;
mod encode;
mod layer;
mod outbox;
mod timing;
#[cfg(feature = "tls")]
pub mod tls;

pub use config::{ApplyError, ConfigGuard, CONFIG_NAMESPACE};
pub use layer::ForwarderLayer;
pub use timing::{SendCause, Written};
/// The types a forwarder sends, its tracing configuration, and the address syntax, so a node
/// needs only this crate.
pub use tracerd_wire::{model, tracing_config, Address};

use connection::run;
use outbox::StateSet;

/// Largest frame the forwarder accepts from tracerd (tracerd's messages are all small).
const MAX_INCOMING_FRAME: usize = 64 * 1024;
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
    /// Longest time a partial batch waits for more objects. It waits only while an earlier
    /// batch is awaiting tracerd's `Ack`; with nothing in flight it is sent at once.
    pub linger: Duration,
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Time allowed for connecting and for tracerd's answer to `Hello`.
    pub connect_timeout: Duration,
    /// Period of the forwarder's own round-trip probe; `None` disables it.
    pub ping_every: Option<Duration>,
    /// The identity token sent in `Hello` (tracerd's `tracerd.native.identities`).
    pub token: Option<String>,
    /// TLS over TCP (tracerd's `tracerd.native.tls`); `None`: plain. Ignored for Unix sockets.
    #[cfg(feature = "tls")]
    pub tls: Option<tls::TlsClient>,
    /// The tracing configuration in force at start (default: everything forwarded).
    pub tracing: TracingConfig,
    /// Announce `tracing-config.v1`: report the configuration to tracerd and apply the ones it
    /// pushes (default true). When false, the forwarder is what an older one was to tracerd.
    pub remote_config: bool,
    /// Asked before a pushed configuration is applied; its `Err` is the refusal's reason.
    pub config_guard: Option<ConfigGuard>,
    /// Queue one `Reflection.TracerConfigInfo` trace with the configuration at start (one
    /// follows every change either way; default false, so a program's first object is 1).
    pub trace_config_at_start: bool,
    /// The `hostname` of the forwarder's own traces and of the layer's (default: the
    /// system's host name).
    pub hostname: String,
}

impl ForwarderConfig {
    /// A configuration with defaults: mainnet magic, 65,536 objects of queue, batches of up to
    /// 1,024 objects or 512 KiB, 5 ms linger, backoff 100 ms doubling to 5 s, 10 s connect
    /// timeout, a ping every 5 s.
    pub fn new(address: Address, node_name: impl Into<String>) -> ForwarderConfig {
        ForwarderConfig {
            address,
            node_name: node_name.into(),
            network_magic: tracerd_wire::MAINNET_NETWORK_MAGIC,
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
            token: None,
            #[cfg(feature = "tls")]
            tls: None,
            tracing: TracingConfig::everything(),
            remote_config: true,
            config_guard: None,
            trace_config_at_start: false,
            hostname: system_hostname(),
        }
    }
}

/// The system's host name (Linux's `/proc/sys/kernel/hostname`), or `localhost`.
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
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
    /// The initial tracing configuration is malformed.
    #[error("tracing configuration: {0}")]
    Tracing(#[from] ConfigProblem),
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
    /// Trace objects not forwarded because the tracing configuration's severity filter
    /// refused them (when queued, or still queued when a configuration changed).
    pub filtered: u64,
    /// Trace objects not forwarded because their entry's `maxFrequency` was exceeded.
    pub limited: u64,
    /// Tracing configurations applied (pushed by tracerd or set by the program).
    pub config_changes: u64,
    /// Configurations tracerd pushed that were refused (malformed, or the guard's veto).
    pub configs_refused: u64,
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
    filtered: AtomicU64,
    limited: AtomicU64,
    config_changes: AtomicU64,
    configs_refused: AtomicU64,
    bytes_sent: AtomicU64,
    acked_seq: AtomicU64,
    connects: AtomicU64,
    connected: AtomicBool,
    rtt_micros: AtomicU64,
}

#[derive(Debug)]
struct Queue {
    traces: VecDeque<TraceObject>,
    /// When the oldest queued object arrived (for the linger deadline).
    oldest: Option<Instant>,
    metrics: StateSet<MetricValue>,
    points: StateSet<String>,
    closed: bool,
    /// The tracing configuration in force, compiled, and its rate limiters.
    filter: Arc<Filter>,
    limits: config::Limits,
}

#[derive(Debug)]
struct Shared {
    capacity: usize,
    max_batch_objects: usize,
    queue: Mutex<Queue>,
    notify: Notify,
    /// Objects accepted and not yet acknowledged or dropped. Raised only under the queue
    /// lock (`submit`, `config::queue_unfiltered`), lowered anywhere.
    buffered: AtomicUsize,
    counters: Counters,
    /// Acknowledged-object count, for waiters.
    acked_tx: watch::Sender<u64>,
    assigned_name: Mutex<Option<String>>,
    last_error: Mutex<Option<String>>,
    /// A copy of `Queue::filter`, for checks before an object is built.
    filter: RwLock<Arc<Filter>>,
    in_force: Mutex<config::InForce>,
    /// The program changed the configuration: report it on the open session.
    report_pending: AtomicBool,
    hostname: String,
    /// Batch write and `Ack` times, for benchmarks (off unless asked for).
    timing: timing::Timing,
}

fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
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
            filtered: c.filtered.load(Ordering::Relaxed),
            limited: c.limited.load(Ordering::Relaxed),
            config_changes: c.config_changes.load(Ordering::Relaxed),
            configs_refused: c.configs_refused.load(Ordering::Relaxed),
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

/// Queues trace objects (see [`Forwarder::trace_many`]); shared with the layer. Returns how
/// many were queued and how many the tracing configuration kept back.
fn submit(shared: &Shared, objects: impl IntoIterator<Item = TraceObject>) -> (usize, u64) {
    let mut accepted = 0usize;
    let mut refused = 0u64;
    let (mut filtered, mut limited) = (0u64, 0u64);
    let wake;
    {
        let mut q = lock(&shared.queue);
        if q.closed {
            return (0, 0);
        }
        let before = q.traces.len();
        // Every increase of `buffered` happens under the queue lock, held here; outside it,
        // it only falls (acknowledgements). So the room counted now cannot shrink before the
        // one addition below: the objects are counted once, not one atomic add each.
        let mut room = shared
            .capacity
            .saturating_sub(shared.buffered.load(Ordering::Acquire));
        for object in objects {
            match config::verdict(&mut q, &object) {
                config::Verdict::Pass => {}
                config::Verdict::Filtered => {
                    filtered += 1;
                    continue;
                }
                config::Verdict::Limited => {
                    limited += 1;
                    continue;
                }
            }
            if room == 0 {
                refused += 1;
                continue;
            }
            room -= 1;
            q.traces.push_back(object);
            accepted += 1;
        }
        if accepted > 0 {
            shared.buffered.fetch_add(accepted, Ordering::AcqRel);
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
    if filtered > 0 {
        c.filtered.fetch_add(filtered, Ordering::Relaxed);
    }
    if limited > 0 {
        c.limited.fetch_add(limited, Ordering::Relaxed);
    }
    if wake {
        shared.notify.notify_one();
    }
    (accepted, filtered + limited)
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
        config.tracing.check()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
        let (acked_tx, _) = watch::channel(0);
        let (filter, in_force) = config::initial(&config.tracing);
        let queue = Queue {
            traces: VecDeque::new(),
            oldest: None,
            metrics: StateSet::default(),
            points: StateSet::default(),
            closed: false,
            limits: config::Limits::new(&filter),
            filter: filter.clone(),
        };
        let shared = Arc::new(Shared {
            capacity: config.queue_capacity,
            max_batch_objects: config.max_batch_objects,
            queue: Mutex::new(queue),
            notify: Notify::new(),
            buffered: AtomicUsize::new(0),
            counters: Counters::default(),
            acked_tx,
            assigned_name: Mutex::new(None),
            last_error: Mutex::new(None),
            filter: RwLock::new(filter),
            in_force: Mutex::new(in_force),
            report_pending: AtomicBool::new(false),
            hostname: config.hostname.clone(),
            timing: timing::Timing::default(),
        });
        if config.trace_config_at_start {
            let in_force = lock(&shared.in_force);
            let trace = config::config_trace(&shared, &in_force.config, in_force.since_ns);
            config::queue_unfiltered(&shared, &mut lock(&shared.queue), trace);
        }
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
    /// counted. An object the tracing configuration keeps back is `Ok` too (counted in
    /// [`Stats::filtered`] or [`Stats::limited`]).
    pub fn trace(&self, object: TraceObject) -> Result<(), SubmitError> {
        let mut one = Some(object);
        match submit(&self.shared, std::iter::from_fn(|| one.take())) {
            (1, _) | (_, 1) => Ok(()),
            _ if lock(&self.shared.queue).closed => Err(SubmitError::Closed),
            _ => Err(SubmitError::QueueFull),
        }
    }

    /// Queues trace objects in order, as many as fit and as the tracing configuration lets
    /// through; the rest are dropped (newest first) and counted. Returns how many were
    /// accepted. Cheaper than calling [`Forwarder::trace`] per object.
    pub fn trace_many(&self, objects: impl IntoIterator<Item = TraceObject>) -> usize {
        submit(&self.shared, objects).0
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

    /// The tracing configuration in force (its entry `""` states severity and detail).
    pub fn tracing_config(&self) -> TracingConfig {
        lock(&self.shared.in_force).config.clone()
    }

    /// The options in force for `namespace` (for a program that renders by detail level).
    pub fn options(&self, namespace: &str) -> Resolved {
        config::options(&self.shared.filter, namespace)
    }

    /// Whether an object of `severity` under `namespace` passes the severity filter now.
    pub fn enabled(&self, namespace: &str, severity: model::Severity) -> bool {
        self.options(namespace).severity.admits(severity)
    }

    /// Replaces the tracing configuration from the program (no [`ConfigGuard`] is asked):
    /// from the next batch on only what it lets through is sent; tracerd is sent a report
    /// and a `Reflection.TracerConfigInfo` trace records it. Returns the configuration now in
    /// force.
    pub fn set_tracing_config(&self, config: TracingConfig) -> Result<TracingConfig, ApplyError> {
        let effective = config::apply(&self.shared, config, None)?;
        self.shared.report_pending.store(true, Ordering::Release);
        self.shared.notify.notify_one();
        Ok(effective)
    }

    /// A `tracing-subscriber` layer that forwards `tracing` events through this forwarder
    /// (see [`ForwarderLayer`]).
    pub fn layer(&self) -> ForwarderLayer {
        ForwarderLayer::new(self.shared.clone())
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

    /// For benchmarks: from now on, remember when each batch is first written to the
    /// connection and when each `Ack` is read from it (see [`Forwarder::take_timing`]). Costs
    /// a lock per batch and per `Ack`; at most 65,536 entries of each kind are held between
    /// two takes (later ones are not recorded).
    pub fn record_timing(&self) {
        self.shared.timing.start();
    }

    /// Appends what was recorded since the last call (oldest first) and forgets it: each
    /// batch's first write, and each `Ack` read as (acknowledged sequence number, when the
    /// reader had decoded it). Nothing unless [`Forwarder::record_timing`] was called.
    pub fn take_timing(&self, writes: &mut Vec<Written>, acks: &mut Vec<(u64, Instant)>) {
        self.shared.timing.take(writes, acks);
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
