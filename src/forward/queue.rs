//! The bounded queue of trace objects waiting for one downstream connection, and
//! [`NodeSource`], what a downstream connection serves from it (the forwarder side's
//! [`Source`]): the queue's objects, the node's latest metrics as EKG values, and its data
//! points (a node tracerd has no `NodeInfo` of gets one naming it, so the downstream files it
//! under the same name).
//!
//! Ingest never waits here: a full queue drops its oldest objects, counted and logged (at
//! most once per [`DROP_LOG_EVERY`] per queue).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::cardano::codec::EkgValue;
use crate::cardano::forwarder::Source;
use crate::model::{MetricValue, TraceObject};
use crate::node::live::NodeLive;
use crate::sync::lock;

/// How often a queue that keeps dropping logs it.
pub const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// How long a downstream's data-point request waits for a node that is asked live (a
/// Cardano node); then the last value tracerd holds is the answer. Below cardano-tracer's own
/// 10 s, so the downstream gets an answer.
pub const DATA_POINT_ASK: Duration = Duration::from_secs(5);

/// The data point that names a node.
const NODE_INFO: &str = "NodeInfo";

/// The bytes an object holds in a queue (its texts and a fixed overhead).
pub fn cost(o: &TraceObject) -> usize {
    let human = o.human.as_deref().map_or(0, str::len);
    o.machine.len() + human + o.namespace.len() + o.hostname.len() + o.thread_id.len() + 128
}

#[derive(Default)]
struct Inner {
    objects: VecDeque<TraceObject>,
    bytes: usize,
    /// Dropped since the last log line, and when that was.
    unlogged: u64,
    logged_at: Option<Instant>,
}

/// Trace objects waiting for one downstream, at most `max_objects` and `max_bytes`.
pub struct Queue {
    inner: Mutex<Inner>,
    max_objects: usize,
    max_bytes: usize,
    notify: Notify,
    finished: AtomicBool,
    /// Who the queue is for, for the drop log line.
    label: String,
    dropped: prometheus::IntCounter,
    forwarded: prometheus::IntCounter,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("label", &self.label).finish()
    }
}

impl Queue {
    /// An empty queue for `label` (downstream and node, for logs).
    pub fn new(
        label: String,
        max_objects: usize,
        max_bytes: usize,
        dropped: prometheus::IntCounter,
        forwarded: prometheus::IntCounter,
    ) -> Queue {
        Queue {
            inner: Mutex::default(),
            max_objects: max_objects.max(1),
            max_bytes: max_bytes.max(1),
            notify: Notify::new(),
            finished: AtomicBool::new(false),
            label,
            dropped,
            forwarded,
        }
    }

    /// Queues copies of `objects`, dropping the oldest queued ones beyond the bounds.
    pub fn push(&self, objects: impl IntoIterator<Item = TraceObject>) {
        let mut dropped = 0u64;
        let mut pushed = false;
        let mut inner = lock(&self.inner);
        for o in objects {
            inner.bytes += cost(&o);
            inner.objects.push_back(o);
            pushed = true;
            while inner.objects.len() > self.max_objects
                || (inner.bytes > self.max_bytes && inner.objects.len() > 1)
            {
                if let Some(old) = inner.objects.pop_front() {
                    inner.bytes -= cost(&old);
                    dropped += 1;
                }
            }
        }
        if dropped > 0 {
            self.dropped.inc_by(dropped);
            inner.unlogged += dropped;
            let now = Instant::now();
            if inner
                .logged_at
                .is_none_or(|at| now.duration_since(at) >= DROP_LOG_EVERY)
            {
                tracing::warn!(downstream = %self.label, dropped = inner.unlogged,
                    queue_size = self.max_objects,
                    "re-forwarding queue full: dropped the oldest trace objects \
                     (the downstream is slow or absent)");
                inner.unlogged = 0;
                inner.logged_at = Some(now);
            }
        }
        drop(inner);
        if pushed {
            self.notify.notify_one();
        }
    }

    /// Takes up to `max` objects, oldest first.
    pub fn take(&self, max: usize) -> Vec<TraceObject> {
        let mut inner = lock(&self.inner);
        let n = inner.objects.len().min(max);
        let taken: Vec<_> = inner.objects.drain(..n).collect();
        inner.bytes -= taken.iter().map(cost).sum::<usize>();
        taken
    }

    /// Objects queued now.
    pub fn len(&self) -> usize {
        lock(&self.inner).objects.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// No more objects will come (the node's session ended).
    pub fn finish(&self) {
        self.finished.store(true, Ordering::Release);
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    /// Whether [`Queue::finish`] was called.
    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Drops what is still queued (the connection gave up), counted as dropped.
    pub fn discard(&self) -> usize {
        let n = self.take(usize::MAX).len();
        self.dropped.inc_by(n as u64);
        n
    }
}

/// What one downstream connection serves.
#[derive(Debug, Clone)]
pub struct NodeSource {
    /// The objects to forward.
    pub queue: Arc<Queue>,
    /// The node's live state (metrics, data points); `None` for the merged stream.
    pub live: Option<Arc<NodeLive>>,
    /// The node's name in tracerd, for a `NodeInfo` it did not send.
    pub name: Option<String>,
    /// This tracer's id, appended to the node's `TracerdPath`.
    pub tracer_id: Arc<str>,
}

impl Source for NodeSource {
    fn take(&self, max: usize) -> Vec<TraceObject> {
        self.queue.take(max)
    }

    fn changed(&self) -> impl Future<Output = ()> + Send {
        self.queue.notify.notified()
    }

    fn finished(&self) -> bool {
        self.queue.is_finished()
    }

    fn metrics(&self) -> Vec<(String, EkgValue)> {
        let Some(live) = &self.live else {
            return Vec::new();
        };
        let store = live.metrics();
        store
            .entries()
            .map(|(name, value)| (name.to_string(), ekg_value(value)))
            .collect()
    }

    fn data_point(&self, name: &str) -> impl Future<Output = Option<Vec<u8>>> + Send {
        let (live, node, name) = (self.live.clone(), self.name.clone(), name.to_string());
        let id = self.tracer_id.clone();
        async move {
            if name == super::TRACERD_PATH {
                return Some(extend_path(live.as_deref(), &id));
            }
            let live = live?;
            // NodeInfo is asked right after the handshake: answer it from the store.
            let known = match name.as_str() {
                NODE_INFO => live.data_point(&name),
                _ => live.fetch_data_point(&name, DATA_POINT_ASK).await,
            };
            if let Some(json) = known {
                return Some(json.into_bytes());
            }
            match (node, name.as_str()) {
                (Some(node), NODE_INFO) => Some(
                    serde_json::json!({ "niName": node })
                        .to_string()
                        .into_bytes(),
                ),
                _ => None,
            }
        }
    }

    fn sent(&self, n: usize) {
        self.queue.forwarded.inc_by(n as u64);
    }
}

/// The node's `TracerdPath` (as tracerd received it, if it came through tracers) with `id`
/// appended, as JSON.
fn extend_path(live: Option<&NodeLive>, id: &str) -> Vec<u8> {
    let mut path: Vec<String> = live
        .and_then(|l| l.data_point(super::TRACERD_PATH))
        .and_then(|json| serde_json::from_str(&json).ok())
        .unwrap_or_default();
    path.push(id.to_string());
    serde_json::to_vec(&path).unwrap_or_default()
}

/// A metric value as ekg-forward carries it: a gauge with a fraction becomes a label with
/// its decimal text, as the node's EKG backend sends `_real` metrics.
pub fn ekg_value(value: &MetricValue) -> EkgValue {
    match value {
        MetricValue::Counter(n) => EkgValue::Counter(*n),
        MetricValue::Gauge(g) if g.fract() == 0.0 && g.abs() < 9.0e18 => EkgValue::Gauge(*g as i64),
        MetricValue::Gauge(g) => EkgValue::Label(g.to_string()),
        MetricValue::Label(t) => EkgValue::Label(t.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DetailLevel, MachineForm, Severity};

    fn obj(seq: u64) -> TraceObject {
        TraceObject {
            namespace: "A.B".into(),
            severity: Severity::Info,
            detail: DetailLevel::Normal,
            timestamp_ns: 0,
            hostname: "h".into(),
            thread_id: "1".into(),
            machine: format!("{{\"seq\":{seq}}}").into(),
            form: MachineForm::Line,
            human: None,
        }
    }

    fn counter() -> prometheus::IntCounter {
        prometheus::IntCounter::new("c", "c").unwrap()
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_them() {
        let dropped = counter();
        let q = Queue::new("d".into(), 3, 1 << 20, dropped.clone(), counter());
        let objects: Vec<_> = (1..=5).map(obj).collect();
        q.push(objects.clone());
        assert_eq!(dropped.get(), 2);
        let left: Vec<_> = q.take(10).into_iter().map(|o| o.machine).collect();
        assert_eq!(left, ["{\"seq\":3}", "{\"seq\":4}", "{\"seq\":5}"]);
        assert!(q.is_empty());
        // The byte bound holds too, keeping at least the newest object.
        let small = Queue::new("d".into(), 100, cost(&obj(1)) * 2, counter(), counter());
        small.push(objects);
        assert_eq!(small.len(), 2);
    }

    #[test]
    fn loops_and_long_chains_are_refused() {
        use crate::forward::{loop_refusal, MAX_HOPS};
        assert_eq!(loop_refusal(Some("a"), None), None);
        assert_eq!(loop_refusal(Some("a"), Some(br#"["b","c"]"#)), None);
        let refusal = loop_refusal(Some("a"), Some(br#"["a","b"]"#)).unwrap();
        assert!(refusal.contains("a -> b"), "{refusal}");
        let long = serde_json::to_vec(&vec!["x"; MAX_HOPS]).unwrap();
        assert!(loop_refusal(None, Some(&long)).is_some());
        assert_eq!(loop_refusal(None, Some(b"not json")), None);
        // The native Hello's list, checked the same way; an over-long id is refused too.
        use crate::forward::{path_refusal, tracer_id, MAX_ID_BYTES};
        let path = vec!["b".to_string(), tracer_id().to_string()];
        assert!(path_refusal(Some(tracer_id()), &path).is_some());
        assert_eq!(path_refusal(Some(tracer_id()), &path[..1]), None);
        assert!(path_refusal(None, &["x".repeat(MAX_ID_BYTES + 1)]).is_some());
        assert_eq!(tracer_id(), tracer_id());
        assert_eq!(tracer_id().len(), 16);
    }

    #[test]
    fn metrics_become_ekg_values() {
        assert_eq!(ekg_value(&MetricValue::Gauge(3.0)), EkgValue::Gauge(3));
        assert_eq!(
            ekg_value(&MetricValue::Gauge(0.5)),
            EkgValue::Label("0.5".into())
        );
        assert_eq!(ekg_value(&MetricValue::Counter(7)), EkgValue::Counter(7));
    }
}
