//! The live state of one node that HTTP serves: its latest metric values, data points and
//! session facts, each behind its own short-held lock so that ingest and scrapes of thousands
//! of nodes never wait on one another for long.
//!
//! Ingest takes a node's metric write lock only to apply one update; a scrape takes each
//! node's read lock in turn, only while writing that node's samples (microseconds), never a
//! lock across nodes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::budget::{cost, MetricBudget};
use crate::metrics::exposition::{MetricName, Naming};
use crate::model::{DataPoint, MetricValue, MetricsUpdate};
use crate::node::rtt::{RttSummary, RttWindow};

/// Most distinct metrics kept per node; further new names are refused (and counted).
pub const MAX_METRICS_PER_NODE: usize = 65_536;
/// Most data points kept per node; further new names are refused (and counted).
pub const MAX_DATA_POINTS_PER_NODE: usize = 4_096;

/// One stored metric.
#[derive(Debug, Clone)]
pub struct Slot {
    /// Its names, shared with every node sending the same internal name.
    pub name: Arc<MetricName>,
    /// Latest value.
    pub value: MetricValue,
}

/// The latest value of every metric of one node, by internal name.
#[derive(Debug, Default)]
pub struct MetricStore {
    slots: HashMap<String, Slot>,
    /// What the slots are charged against the shared `metricBytes` budget; given back on drop.
    charged: u64,
    budget: Option<Arc<MetricBudget>>,
    /// Changes with every update (unique across stores; 0 only for a store never updated,
    /// which is empty): `/metrics` reuses a node's rendered lines while it stays the same.
    version: u64,
}

/// Source of [`MetricStore`] versions: one counter for every store, so a node's new session
/// never repeats a version of its last one.
static STORE_VERSIONS: AtomicU64 = AtomicU64::new(1);

impl Drop for MetricStore {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.refund(self.charged);
        }
    }
}

impl MetricStore {
    /// Applies a full snapshot (replacing everything) or a delta; returns how many new names
    /// (or grown label values) were refused because the node already has
    /// [`MAX_METRICS_PER_NODE`] or the shared `metricBytes` budget is spent.
    pub fn apply(&mut self, update: MetricsUpdate, naming: &Naming) -> u64 {
        let budget = self
            .budget
            .get_or_insert_with(|| naming.budget().clone())
            .clone();
        self.version = STORE_VERSIONS.fetch_add(1, Ordering::Relaxed);
        let mut refused = 0;
        if update.full {
            let mut old = std::mem::take(&mut self.slots);
            for (key, value) in update.metrics {
                match old.remove_entry(&key) {
                    Some((key, mut slot)) => {
                        refused += set(&budget, &mut self.charged, &key, &mut slot.value, value);
                        self.slots.insert(key, slot);
                    }
                    None => refused += self.insert_new(&budget, key, value, naming),
                }
            }
            let gone: u64 = old.iter().map(|(k, s)| cost(k, &s.value)).sum();
            self.charged = self.charged.saturating_sub(gone);
            budget.refund(gone);
        } else {
            for (key, value) in update.metrics {
                match self.slots.get_mut(key.as_str()) {
                    Some(slot) => {
                        refused += set(&budget, &mut self.charged, &key, &mut slot.value, value)
                    }
                    None => refused += self.insert_new(&budget, key, value, naming),
                }
            }
        }
        refused
    }

    fn insert_new(
        &mut self,
        budget: &MetricBudget,
        key: String,
        value: MetricValue,
        naming: &Naming,
    ) -> u64 {
        if self.slots.len() >= MAX_METRICS_PER_NODE {
            return 1;
        }
        let c = cost(&key, &value);
        if !budget.try_charge(c) {
            return 1;
        }
        self.charged = self.charged.saturating_add(c);
        let name = naming.name(&key);
        self.slots.insert(key, Slot { name, value });
        0
    }

    /// Every metric, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<MetricName>, &MetricValue)> + Clone {
        self.slots.values().map(|s| (&s.name, &s.value))
    }

    /// Every metric by internal name (as the node sent it), in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &MetricValue)> {
        self.slots.iter().map(|(k, s)| (k.as_str(), &s.value))
    }

    /// One metric by internal name.
    pub fn get(&self, internal: &str) -> Option<&MetricValue> {
        self.slots.get(internal).map(|s| &s.value)
    }

    /// The store's version: equal versions mean equal contents.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Number of metrics.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// No metrics yet.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// Replaces a kept metric's value if its cost fits the budget; 1 if refused (the old value
/// stays).
fn set(
    budget: &MetricBudget,
    charged: &mut u64,
    key: &str,
    slot: &mut MetricValue,
    value: MetricValue,
) -> u64 {
    let (old, new) = (cost(key, slot), cost(key, &value));
    if new > old && !budget.try_charge(new - old) {
        return 1;
    }
    *slot = value;
    *charged = charged.saturating_add(new).saturating_sub(old);
    budget.refund(old.saturating_sub(new));
    0
}

/// Facts about the node's current (or last) session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionInfo {
    /// Protocol the session speaks (`native`, ...).
    pub protocol: String,
    /// Peer address.
    pub peer: String,
    /// When the session was accepted, milliseconds since the Unix epoch.
    pub connected_since_ms: u64,
    /// The software the node said it runs in its handshake (native `Hello`), when it did.
    pub software: Option<Software>,
}

/// A node's software as its handshake named it (each field at most [`SOFTWARE_CHARS`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Software {
    /// The program's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its source revision (may be empty).
    pub commit: String,
}

/// Most characters of each [`Software`] field kept (a hostile handshake cannot grow a card).
pub const SOFTWARE_CHARS: usize = 200;

/// Everything HTTP reads about one node; shared by the node's session (through its lease)
/// and the registry.
#[derive(Debug, Default)]
pub struct NodeLive {
    metrics: RwLock<MetricStore>,
    data_points: RwLock<HashMap<String, String>>,
    session: Mutex<SessionInfo>,
    last_message_ms: AtomicU64,
    /// Round-trip time in microseconds, `u64::MAX` when not measured yet.
    rtt_micros: AtomicU64,
    /// Round-trip times of the last minute, for their percentiles.
    rtt_window: Mutex<RttWindow>,
    refused: AtomicU64,
    queue: Mutex<Option<QueueProbe>>,
    /// For protocols that pull data points on demand (Cardano): where to ask.
    data_point_source: Mutex<Option<mpsc::Sender<DataPointRequest>>>,
    /// The live view's tap on written lines and the severity counts (issue 14).
    traces: super::tap::TraceTap,
}

/// A request for a data point's current value: its name, and where the answer goes (the JSON
/// text, or `None` when the node has no such data point).
pub type DataPointRequest = (String, oneshot::Sender<Option<String>>);

/// How long a data point asked of a node may take, as in cardano-tracer.
pub const DATA_POINT_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the depth of a session's write queue without keeping the queue open.
pub struct QueueProbe(Box<dyn Fn() -> Option<usize> + Send + Sync>);

impl std::fmt::Debug for QueueProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueueProbe")
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl NodeLive {
    /// Fresh state for a new session: metrics and data points of an earlier session are gone.
    pub fn new(protocol: &str, peer: &str) -> NodeLive {
        NodeLive {
            session: Mutex::new(SessionInfo {
                protocol: protocol.to_string(),
                peer: peer.to_string(),
                connected_since_ms: now_ms(),
                software: None,
            }),
            rtt_micros: AtomicU64::new(u64::MAX),
            ..NodeLive::default()
        }
    }

    /// Read access to the metrics; hold it only while copying or rendering this node.
    pub fn metrics(&self) -> RwLockReadGuard<'_, MetricStore> {
        // Every update is applied entry by entry; a panic mid-update leaves valid entries.
        crate::sync::read(&self.metrics)
    }

    /// Applies a metrics update; returns how many new names were refused.
    pub fn apply_metrics(&self, update: MetricsUpdate, naming: &Naming) -> u64 {
        let refused = crate::sync::write(&self.metrics).apply(update, naming);
        if refused > 0 {
            self.refused.fetch_add(refused, Ordering::Relaxed);
        }
        refused
    }

    /// The session ended: its metrics and data points go (their budget is given back).
    pub fn release_metrics(&self) {
        let store = std::mem::take(&mut *crate::sync::write(&self.metrics));
        drop(store);
        let points = std::mem::take(&mut *crate::sync::write(&self.data_points));
        drop(points);
    }

    /// Stores data points; returns how many new names were refused.
    pub fn apply_data_points(&self, points: Vec<DataPoint>) -> u64 {
        let mut map = crate::sync::write(&self.data_points);
        let mut refused = 0;
        for p in points {
            if map.len() >= MAX_DATA_POINTS_PER_NODE && !map.contains_key(&p.name) {
                refused += 1;
                continue;
            }
            map.insert(p.name, p.json);
        }
        self.refused.fetch_add(refused, Ordering::Relaxed);
        refused
    }

    /// A data point's JSON text.
    pub fn data_point(&self, name: &str) -> Option<String> {
        crate::sync::read(&self.data_points).get(name).cloned()
    }

    /// Lets [`NodeLive::fetch_data_point`] ask the session for live values.
    pub fn serve_data_points(&self, source: mpsc::Sender<DataPointRequest>) {
        *crate::sync::lock(&self.data_point_source) = Some(source);
    }

    /// A data point's current JSON text: asked of the node when its protocol pulls data
    /// points (the answer is stored), else, or when the node does not answer within
    /// `timeout`, the last value it sent.
    pub async fn fetch_data_point(&self, name: &str, timeout: Duration) -> Option<String> {
        let source = crate::sync::lock(&self.data_point_source).clone();
        if let Some(source) = source {
            let (tx, rx) = oneshot::channel();
            if source.try_send((name.to_string(), tx)).is_ok() {
                if let Ok(Ok(answer)) = tokio::time::timeout(timeout, rx).await {
                    return answer;
                }
            }
        }
        self.data_point(name)
    }

    /// Names of the node's data points, sorted.
    pub fn data_point_names(&self) -> Vec<String> {
        let mut names: Vec<String> = crate::sync::read(&self.data_points)
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// Records the software the node's handshake named, each field cut to [`SOFTWARE_CHARS`].
    pub fn set_software(&self, name: &str, version: &str, commit: &str) {
        let cut = |t: &str| t.chars().take(SOFTWARE_CHARS).collect::<String>();
        crate::sync::lock(&self.session).software = Some(Software {
            name: cut(name),
            version: cut(version),
            commit: cut(commit),
        });
    }

    /// Session facts.
    pub fn session(&self) -> SessionInfo {
        crate::sync::lock(&self.session).clone()
    }

    /// Records that a message arrived now.
    pub fn touch(&self) {
        self.last_message_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// When the last message arrived, milliseconds since the Unix epoch.
    pub fn last_message_ms(&self) -> Option<u64> {
        match self.last_message_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(ms),
        }
    }

    /// Records a round-trip time.
    pub fn set_rtt(&self, micros: u64) {
        self.rtt_micros
            .store(micros.min(u64::MAX - 1), Ordering::Relaxed);
    }

    /// Records a round-trip time measured at `at`: the latest value and the last minute's
    /// window.
    pub fn record_rtt(&self, at: std::time::Instant, rtt: Duration) {
        self.set_rtt(u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX));
        crate::sync::lock(&self.rtt_window).record(at, rtt);
    }

    /// The latest round-trip time and the percentiles of the last minute.
    pub fn rtt_summary(&self, now: std::time::Instant) -> Option<RttSummary> {
        crate::sync::lock(&self.rtt_window).summary(now)
    }

    /// Last round-trip time, in microseconds.
    pub fn rtt_micros(&self) -> Option<u64> {
        match self.rtt_micros.load(Ordering::Relaxed) {
            u64::MAX => None,
            us => Some(us),
        }
    }

    /// Watches the session's write queue through a weak handle (the queue still closes when
    /// the session drops its sender).
    pub fn watch_queue<T: Send + 'static>(&self, queue: tokio::sync::mpsc::WeakSender<T>) {
        let probe = QueueProbe(Box::new(move || {
            queue.upgrade().map(|tx| tx.max_capacity() - tx.capacity())
        }));
        *crate::sync::lock(&self.queue) = Some(probe);
    }

    /// Batches waiting in the session's write queue; `None` when no queue is open.
    pub fn queue_depth(&self) -> Option<usize> {
        crate::sync::lock(&self.queue)
            .as_ref()
            .and_then(|probe| (probe.0)())
    }

    /// The live view's tap on this session's written lines, and its severity counts.
    pub fn traces(&self) -> &super::tap::TraceTap {
        &self.traces
    }

    /// Metrics and data points refused by the per-node caps.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(full: bool, m: &[(&str, MetricValue)]) -> MetricsUpdate {
        MetricsUpdate {
            full,
            metrics: m.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        }
    }

    #[test]
    fn full_snapshots_replace_and_deltas_update() {
        let naming = Naming::default();
        let mut s = MetricStore::default();
        s.apply(
            update(
                true,
                &[
                    ("a", MetricValue::Counter(1)),
                    ("b", MetricValue::Gauge(2.0)),
                ],
            ),
            &naming,
        );
        s.apply(update(false, &[("a", MetricValue::Counter(5))]), &naming);
        assert_eq!(s.get("a"), Some(&MetricValue::Counter(5)));
        assert_eq!(s.get("b"), Some(&MetricValue::Gauge(2.0)));
        s.apply(
            update(true, &[("c", MetricValue::Label("x".into()))]),
            &naming,
        );
        assert_eq!(s.len(), 1);
        assert_eq!(s.get("a"), None);
    }

    #[test]
    fn names_are_shared_between_nodes() {
        let naming = Naming::default();
        let (mut a, mut b) = (MetricStore::default(), MetricStore::default());
        a.apply(update(true, &[("x.y", MetricValue::Counter(1))]), &naming);
        b.apply(update(true, &[("x.y", MetricValue::Counter(2))]), &naming);
        let na = a.iter().next().unwrap().0.clone();
        let nb = b.iter().next().unwrap().0.clone();
        assert!(Arc::ptr_eq(&na, &nb));
    }

    #[tokio::test]
    async fn queue_depth_is_read_without_keeping_the_queue_open() {
        let live = NodeLive::new("native", "p");
        assert_eq!(live.queue_depth(), None);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u8>(8);
        live.watch_queue(tx.downgrade());
        tx.send(1).await.unwrap();
        tx.send(2).await.unwrap();
        assert_eq!(live.queue_depth(), Some(2));
        drop(tx);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, None);
        assert_eq!(live.queue_depth(), None);
    }

    #[test]
    fn caps_refuse_new_names_only() {
        let live = NodeLive::new("native", "p");
        let naming = Naming::default();
        let many: Vec<(String, MetricValue)> = (0..MAX_METRICS_PER_NODE + 3)
            .map(|i| (format!("m{i}"), MetricValue::Counter(1)))
            .collect();
        live.apply_metrics(
            MetricsUpdate {
                full: true,
                metrics: many,
            },
            &naming,
        );
        assert_eq!(live.metrics().len(), MAX_METRICS_PER_NODE);
        assert_eq!(live.refused(), 3);
        live.apply_metrics(update(false, &[("m0", MetricValue::Counter(9))]), &naming);
        assert_eq!(live.refused(), 3);
        assert_eq!(live.metrics().get("m0"), Some(&MetricValue::Counter(9)));
    }

    #[test]
    fn every_store_charges_one_budget_and_gives_it_back() {
        use crate::metrics::budget::cost;
        let one = cost("a.b", &MetricValue::Counter(1));
        let naming = Naming::default().with_metric_bytes(3 * one);
        let (mut a, mut b) = (MetricStore::default(), MetricStore::default());
        let two = [
            ("a.b", MetricValue::Counter(1)),
            ("a.c", MetricValue::Counter(2)),
        ];
        assert_eq!(a.apply(update(true, &two), &naming), 0);
        // The second node gets what is left, the rest is refused.
        assert_eq!(b.apply(update(true, &two), &naming), 1);
        assert_eq!(naming.budget().used(), 3 * one);
        // A snapshot without a metric gives its share back; a grown label that no longer
        // fits is refused and the old value stays.
        assert_eq!(a.apply(update(true, &two[..1]), &naming), 0);
        assert_eq!(naming.budget().used(), 2 * one);
        let big = MetricValue::Label("x".repeat(2 * one as usize));
        assert_eq!(a.apply(update(false, &[("a.b", big)]), &naming), 1);
        assert_eq!(a.get("a.b"), Some(&MetricValue::Counter(1)));
        drop(a);
        drop(b);
        assert_eq!(naming.budget().used(), 0);
    }
}
