//! Re-forwarding (`hasForwarding`): tracerd plays a node towards downstream tracers over
//! Cardano's forwarding protocol (the forwarder side, `tracerd_wire::cardano::forwarder`).
//!
//! Every accepted trace object whose namespace matches a prefix is copied, when its node's
//! `NodeSink` queues it for writing, into a bounded [`queue::Queue`] per downstream
//! connection ([`Tap::offer`]); a full queue drops its oldest objects (counted in
//! `tracerd_reforward_dropped_total`, logged), so a slow or absent downstream never slows
//! ingest.
//!
//! * `ConnectTo` ([`dial`]): for every node and every listed address, one connection that
//!   tracerd dials with trace-dispatcher's backoff (1 s doubling to `maxReconnectDelay`),
//!   serving that node's objects, its latest metrics (EKG) and its data points — `NodeInfo`
//!   included, so the downstream names the node as tracerd does. It ends once the node's
//!   session ended and its queue is empty.
//! * `AcceptAt` ([`accept`]): downstream tracers connect to tracerd's socket and pull one
//!   merged stream of every node (the origin is in each object's `host`), as cardano-tracer
//!   serves it: no metrics, no data points; several downstreams share the one queue.

pub mod accept;
pub mod dial;
pub mod native;
pub mod queue;

use std::sync::{Arc, OnceLock};

use prometheus::{IntCounterVec, IntGauge, Opts};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::queue::{NodeSource, Queue};
use crate::config::forwarding::Forwarding;
use crate::config::{Address, Network};
use crate::model::{MachineForm, TraceObject};
use crate::node::live::NodeLive;

/// The label of the merged `AcceptAt` stream in metrics.
pub const MERGED: &str = "accept_at";

/// The data point naming the tracers a node's objects passed through: a JSON list of tracer
/// ids, the nearest last. tracerd asks for it beside `NodeInfo` (a node answers "none") and
/// serves it to its downstreams with its own id appended; a tracer that finds its own id in
/// it refuses the connection (a loop).
pub const TRACERD_PATH: &str = "TracerdPath";
/// Longest path accepted: a chain longer than this is refused as a loop too.
pub const MAX_HOPS: usize = 16;

/// Longest tracer id accepted on a path (tracerd's are 16 hex digits).
pub const MAX_ID_BYTES: usize = 64;

/// This process's tracer id on re-forwarding paths (the `TracerdPath` data point of
/// Cardano's protocol, `Hello.tracers` of the native one): random per process.
pub fn tracer_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(new_tracer_id)
}

/// Why a node arriving with `path` (the JSON of its `TracerdPath`) must be refused, if it
/// must: this tracer (`own`, when it re-forwards) is already on it, or it is too long.
pub fn loop_refusal(own: Option<&str>, path: Option<&[u8]>) -> Option<String> {
    let path: Vec<String> = serde_json::from_slice(path?).ok()?;
    path_refusal(own, &path)
}

/// Why a node whose objects passed through the tracers `path` (nearest last) must be
/// refused, if it must: `own` is on it (a loop), it is [`MAX_HOPS`] long, or an id is longer
/// than [`MAX_ID_BYTES`].
pub fn path_refusal(own: Option<&str>, path: &[String]) -> Option<String> {
    if let Some(long) = path.iter().find(|p| p.len() > MAX_ID_BYTES) {
        return Some(format!(
            "re-forwarding path with a tracer id of {} bytes (at most {MAX_ID_BYTES}); refused",
            long.len()
        ));
    }
    if let Some(own) = own {
        if path.iter().any(|p| p == own) {
            return Some(format!(
                "re-forwarding loop: this tracer (id {own}) already forwarded this node's \
                 objects (path {}); refusing it so objects do not circle",
                path.join(" -> ")
            ));
        }
    }
    (path.len() >= MAX_HOPS).then(|| {
        format!(
            "re-forwarding chain of {} tracers (at most {MAX_HOPS}): {}; refused as a loop",
            path.len(),
            path.join(" -> ")
        )
    })
}

/// A tracer id for this process: distinct between processes (pid, start time, host).
fn new_tracer_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    format!("{:016x}", h.finish())
}

/// Re-forwarding's own metrics.
#[derive(Debug, Clone)]
pub struct ForwardMetrics {
    /// Trace objects written to a downstream, by downstream.
    pub forwarded: IntCounterVec,
    /// Trace objects dropped because a downstream's queue was full (or it gave up), by downstream.
    pub dropped: IntCounterVec,
    /// Downstream connections open now.
    pub connections: IntGauge,
}

impl ForwardMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &prometheus::Registry) -> ForwardMetrics {
        let vec = |name: &str, help: &str| {
            let metric = IntCounterVec::new(Opts::new(name, help), &["downstream"])
                .expect("metric name and labels are valid constants");
            // A second registration (tests building twice) keeps the first.
            let _ = registry.register(Box::new(metric.clone()));
            metric
        };
        let connections = IntGauge::new(
            "tracerd_reforward_connections",
            "Downstream re-forwarding connections open now",
        )
        .expect("metric name is a valid constant");
        let _ = registry.register(Box::new(connections.clone()));
        ForwardMetrics {
            forwarded: vec(
                "tracerd_reforwarded_objects_total",
                "Trace objects re-forwarded to a downstream tracer",
            ),
            dropped: vec(
                "tracerd_reforward_dropped_total",
                "Trace objects not re-forwarded because the downstream's queue was full",
            ),
            connections,
        }
    }
}

/// Where tasks are spawned, set by `app::run` before any node connects.
#[derive(Debug, Clone)]
struct Spawner {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

/// Re-forwarding, shared by every node's ingest path.
#[derive(Debug)]
pub struct Reforwarder {
    config: Forwarding,
    magic: u32,
    /// Per-queue byte bound (`tracerd.limits.queueBytes`).
    queue_bytes: usize,
    metrics: ForwardMetrics,
    /// The merged stream of `AcceptAt`.
    merged: Option<Arc<Queue>>,
    spawner: OnceLock<Spawner>,
    /// This tracer's id on re-forwarding paths.
    id: Arc<str>,
}

impl Reforwarder {
    /// Re-forwarding as `config` says, on network `magic`.
    pub fn new(
        config: Forwarding,
        magic: u32,
        queue_bytes: u64,
        metrics: ForwardMetrics,
    ) -> Reforwarder {
        let queue_bytes = usize::try_from(queue_bytes).unwrap_or(usize::MAX);
        let merged = matches!(config.network, Network::AcceptAt(_)).then(|| {
            Arc::new(Queue::new(
                MERGED.to_string(),
                config.queue_size,
                queue_bytes,
                metrics.dropped.with_label_values(&[MERGED]),
                metrics.forwarded.with_label_values(&[MERGED]),
            ))
        });
        Reforwarder {
            config,
            magic,
            queue_bytes,
            metrics,
            merged,
            spawner: OnceLock::new(),
            id: tracer_id().into(),
        }
    }

    /// This tracer's id on re-forwarding paths (`TracerdPath`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The parsed `hasForwarding`.
    pub fn config(&self) -> &Forwarding {
        &self.config
    }

    /// Lets the re-forwarder spawn its connections on `tracker` under `cancel`.
    pub fn start(&self, tracker: TaskTracker, cancel: CancellationToken) {
        let _ = self.spawner.set(Spawner { tracker, cancel });
    }

    /// The merged `AcceptAt` stream, as a downstream connection serves it.
    pub fn merged_source(&self) -> Option<NodeSource> {
        self.merged.as_ref().map(|queue| NodeSource {
            queue: queue.clone(),
            live: None,
            name: None,
            tracer_id: self.id.clone(),
        })
    }

    /// The metrics.
    pub fn metrics(&self) -> &ForwardMetrics {
        &self.metrics
    }

    /// A node's session started under `name`: its tap, and for `ConnectTo` one downstream
    /// connection per address serving it.
    pub fn attach(self: &Arc<Self>, name: &str, live: Arc<NodeLive>) -> Tap {
        let mut queues = Vec::new();
        if let Some(merged) = &self.merged {
            queues.push((merged.clone(), false));
        }
        if let (Network::ConnectTo(addrs), Some(spawner)) =
            (&self.config.network, self.spawner.get())
        {
            for addr in addrs {
                let label = addr.to_string();
                let queue = Arc::new(Queue::new(
                    format!("{label} (node {name})"),
                    self.config.queue_size,
                    self.queue_bytes,
                    self.metrics.dropped.with_label_values(&[&label]),
                    self.metrics.forwarded.with_label_values(&[&label]),
                ));
                let source = NodeSource {
                    queue: queue.clone(),
                    live: Some(live.clone()),
                    name: Some(name.to_string()),
                    tracer_id: self.id.clone(),
                };
                spawner.tracker.spawn(dial::connect_loop(
                    addr.clone(),
                    name.to_string(),
                    source,
                    self.clone(),
                    spawner.cancel.clone(),
                ));
                queues.push((queue, true));
            }
        }
        Tap {
            forwarding: self.clone(),
            queues,
        }
    }

    fn magic(&self) -> u32 {
        self.magic
    }
}

/// One node's entry into re-forwarding, held by its `NodeSink`; dropping it ends the node's
/// own downstream connections once their queues are sent.
#[derive(Debug)]
pub struct Tap {
    forwarding: Arc<Reforwarder>,
    /// Each queue, and whether it is this node's own (finished when the tap drops).
    queues: Vec<(Arc<Queue>, bool)>,
}

impl Tap {
    /// Copies the objects that match the prefixes into every downstream queue; never waits.
    pub fn offer(&self, objects: &[TraceObject]) {
        let config = &self.forwarding.config;
        let matching: Vec<TraceObject> = objects
            .iter()
            .filter(|o| config.matches(&o.namespace))
            .map(as_line)
            .collect();
        if matching.is_empty() {
            return;
        }
        if let Some(((last, _), others)) = self.queues.split_last() {
            for (queue, _) in others {
                queue.push(matching.iter().cloned());
            }
            last.push(matching);
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        for (queue, own) in &self.queues {
            if *own {
                queue.finish();
            }
        }
    }
}

/// The object as a downstream receives it: Cardano's `toMachine` is a complete machine line,
/// so a native object's payload is wrapped into the line tracerd writes for it (`at`, `ns`,
/// `data`, `sev`, `thread`, `host`).
fn as_line(o: &TraceObject) -> TraceObject {
    // Detached: a queued copy must not keep the frame it was decoded from alive.
    let mut copy = o.detached();
    if o.form == MachineForm::Payload {
        let mut line = Vec::with_capacity(o.machine.len() + 160);
        crate::logs::format::push_machine(&mut line, o);
        while line.last() == Some(&b'\n') {
            line.pop();
        }
        copy.machine = String::from_utf8_lossy(&line).into_owned().into();
        copy.form = MachineForm::Line;
    }
    copy
}

/// Every downstream address of a config, for logs.
pub fn describe(config: &Forwarding) -> String {
    match &config.network {
        Network::AcceptAt(a) => format!("AcceptAt {a}"),
        Network::ConnectTo(addrs) => {
            let list: Vec<String> = addrs.iter().map(Address::to_string).collect();
            format!("ConnectTo {}", list.join(", "))
        }
    }
}
