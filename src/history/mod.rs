//! The metric history (`hasTimeseries`, issue 13): the thin shell that feeds the embedded
//! store ([`tracerd_tsdb::Store`]) from ingest and runs its timers; Prometheus's query API over
//! it is [`crate::http::prom_api`].
//!
//! * Every node metric update is recorded as it arrives, through the node registry's
//!   [`MetricsObserver`] hook: one [`NodeRecorder`] per session keeps the node's series
//!   handles, named by [`series`] with the exposition's rules (the same names and labels as
//!   `/metrics`). A full snapshot that no longer holds a metric, a label set that changed
//!   text, and the end of the session append Prometheus's staleness marker to the series
//!   concerned, so queries stop returning them after the lookback window, as Prometheus does
//!   for a target that vanished.
//! * Every `sampleIntervalSecs` ([`tasks`]): tracerd's own exposition (`tracerd_*`, read back
//!   from the text `/metrics` writes) is appended, and a node metric the node did not resend
//!   within the interval (a delta update leaves it out) is appended again with its last value,
//!   as each scrape of `/metrics` would see it; the byte cap is enforced when exceeded.
//! * Every `pruneEveryMinutes`: retention by time.

pub mod control;
pub mod series;
pub mod tasks;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tracerd_promql::{stale_nan, Labels};
use tracerd_tsdb::{AppendError, SeriesRef, Store};

use crate::config::HistorySettings;
use crate::metrics::exposition::{MetricName, Naming};
use crate::model::MetricsUpdate;
use crate::node::live::MAX_METRICS_PER_NODE;
use crate::node::{MetricsObserver, NodeMetrics};
use series::SeriesKey;

/// The history's own metrics (registered in tracerd's registry, so they are on `/metrics`
/// and in the history too).
#[derive(Debug, Clone)]
pub struct HistoryMetrics {
    /// Samples removed, by reason (`retention`, `max_bytes`).
    pub dropped: IntCounterVec,
    /// Samples not stored, by reason (`out_of_order`, `too_many_series`, ...).
    pub refused: IntCounterVec,
    /// Bytes counted against `maxBytes` now.
    pub bytes: IntGauge,
    /// Series held now.
    pub series: IntGauge,
    /// Samples held now.
    pub samples: IntGauge,
}

impl HistoryMetrics {
    /// Registers the history's metrics in `registry`.
    pub fn register(registry: &Registry) -> HistoryMetrics {
        let vec = |name: &str, help: &str| {
            let m = IntCounterVec::new(Opts::new(name, help), &["reason"]).expect("valid constant");
            registry
                .register(Box::new(m.clone()))
                .expect("registered once");
            m
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid constant");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let m = HistoryMetrics {
            dropped: vec(
                "tracerd_history_samples_dropped_total",
                "Samples removed from the metric history, by reason: retention (older than \
                 tracerd.history.retentionHours) or max_bytes (the oldest, to stay under \
                 tracerd.history.maxBytes).",
            ),
            refused: vec(
                "tracerd_history_samples_refused_total",
                "Samples the metric history did not store, by reason.",
            ),
            bytes: gauge(
                "tracerd_history_bytes",
                "Bytes the metric history holds, as counted against tracerd.history.maxBytes.",
            ),
            series: gauge("tracerd_history_series", "Series the metric history holds."),
            samples: gauge(
                "tracerd_history_samples",
                "Samples the metric history holds.",
            ),
        };
        for reason in ["retention", "max_bytes"] {
            m.dropped.with_label_values(&[reason]);
        }
        for reason in ["out_of_order", "too_many_series", "node_series_limit"] {
            m.refused.with_label_values(&[reason]);
        }
        m
    }
}

/// The metric history: the store, its settings, and the recorders of connected nodes.
pub struct History {
    store: Arc<Store>,
    /// Retention and pruning period in force (the `/timeseries/config` routes change them).
    control: Arc<control::Control>,
    settings: HistorySettings,
    metrics: HistoryMetrics,
    live: Mutex<HashMap<u64, Weak<NodeSeries>>>,
    next_id: AtomicU64,
    /// Store counters already added to `metrics.dropped`.
    counted: Mutex<(u64, u64)>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch, the time of every sample.
pub fn now_ms() -> i64 {
    crate::node::live::now_ms() as i64
}

impl History {
    /// A history bounded by `settings`, counting into `metrics`.
    pub fn new(settings: &HistorySettings, metrics: HistoryMetrics) -> Arc<History> {
        let store = Store::new(tracerd_tsdb::Config {
            retention_ms: (settings.retention_hours * 3_600_000.0) as i64,
            max_bytes: usize::try_from(settings.max_bytes).unwrap_or(usize::MAX),
            max_series: usize::try_from(settings.max_series).unwrap_or(usize::MAX),
            ..tracerd_tsdb::Config::default()
        });
        let control = control::Control::new(
            (settings.retention_hours * 3_600_000.0) as u64,
            Some((settings.prune_every_minutes * 60_000.0) as u64).filter(|p| *p > 0),
        );
        Arc::new(History {
            store: Arc::new(store),
            control: Arc::new(control),
            settings: settings.clone(),
            metrics,
            live: Mutex::default(),
            next_id: AtomicU64::new(0),
            counted: Mutex::default(),
        })
    }

    /// The store the query API reads.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The retention and pruning period in force.
    pub fn control(&self) -> &Arc<control::Control> {
        &self.control
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &HistorySettings {
        &self.settings
    }

    fn refused(&self, e: &AppendError) {
        self.metrics.refused.with_label_values(&[e.kind()]).inc();
    }

    /// Appends one sample by labels (tracerd's own series).
    pub fn append(&self, labels: &Labels, t: i64, v: f64) {
        if let Err(e) = self.store.append(labels, t, v) {
            self.refused(&e);
        }
    }

    /// Applies retention and the byte cap at `now`, counting what went.
    pub fn prune(&self, now: i64) {
        self.control.prune(&self.store, now);
        self.update_metrics();
    }

    /// Enforces the byte cap if it is exceeded (cheap when it is not).
    pub fn enforce_cap(&self, now: i64) {
        if self.store.bytes() > self.store.config().max_bytes {
            self.prune(now);
        }
    }

    /// Refreshes the history's gauges and drop counters from the store.
    pub fn update_metrics(&self) {
        let s = self.store.stats();
        let m = &self.metrics;
        m.bytes.set(i64::try_from(s.bytes).unwrap_or(i64::MAX));
        m.series.set(i64::try_from(s.series).unwrap_or(i64::MAX));
        m.samples.set(i64::try_from(s.samples).unwrap_or(i64::MAX));
        let mut counted = crate::sync::lock(&self.counted);
        let (retention, cap) = (s.dropped_by_retention_samples, s.dropped_by_cap_samples);
        m.dropped
            .with_label_values(&["retention"])
            .inc_by(retention.saturating_sub(counted.0));
        m.dropped
            .with_label_values(&["max_bytes"])
            .inc_by(cap.saturating_sub(counted.1));
        *counted = (retention.max(counted.0), cap.max(counted.1));
    }

    /// Appends again, at `now`, the last value of every connected node's series that got no
    /// sample for `interval_ms` (what a scrape of `/metrics` would see).
    pub fn repeat_unchanged(&self, now: i64, interval_ms: i64) {
        let nodes: Vec<Arc<NodeSeries>> = crate::sync::lock(&self.live)
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for node in nodes {
            let mut entries = crate::sync::lock(&node.entries);
            for e in entries.values_mut() {
                if e.last_t + interval_ms <= now {
                    self.put(e, now, e.value);
                }
            }
        }
    }

    /// Appends `v` to an entry's series at `t` (or just after its last sample).
    fn put(&self, e: &mut Entry, t: i64, v: f64) {
        let t = t.max(e.last_t + 1);
        let r = match e.series {
            Some(r) => self.store.append_ref(r, t, v),
            None => Err(None),
        };
        let result = match r {
            Ok(()) => Ok(()),
            // Aged out (or never created): resolve the labels again.
            Err(None) => self.store.append(&e.labels, t, v).map(|r| {
                e.series = Some(r);
            }),
            Err(Some(err)) => Err(err),
        };
        match result {
            Ok(()) => {
                e.last_t = t;
                e.value = v;
            }
            Err(err) => self.refused(&err),
        }
    }
}

/// One series of a connected node: its labels, handle and last sample.
#[derive(Debug)]
struct Entry {
    key: SeriesKey,
    labels: Labels,
    series: Option<SeriesRef>,
    last_t: i64,
    value: f64,
}

/// The series of one session of one node, by the metric's internal name.
#[derive(Debug)]
pub struct NodeSeries {
    node: String,
    entries: Mutex<HashMap<Box<str>, Entry>>,
}

/// A session's recorder (the node registry's [`NodeMetrics`]): records each update; marks
/// every series of the session stale when dropped.
#[derive(Debug)]
pub struct NodeRecorder {
    history: Arc<History>,
    id: u64,
    series: Arc<NodeSeries>,
    /// Series this session created (changed only under `series.entries`' lock).
    created: AtomicCell,
    warned: AtomicFlag,
}

/// Most series one session may create: a node's whole metric allowance
/// ([`MAX_METRICS_PER_NODE`]), or churn of label sets up to that many; past it new series
/// are refused and counted (`tracerd_history_samples_refused_total{reason="node_series_limit"}`),
/// so one node cannot fill `tracerd.history.maxSeries` for the others.
pub const MAX_SERIES_PER_SESSION: u64 = MAX_METRICS_PER_NODE as u64;

/// A counter read and written under another lock (`Sync`, unlike `Cell`).
#[derive(Debug, Default)]
struct AtomicCell(AtomicU64);

impl AtomicCell {
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct AtomicFlag(std::sync::atomic::AtomicBool);

impl AtomicFlag {
    /// Sets the flag; returns what it was.
    fn replace(&self, v: bool) -> bool {
        self.0.swap(v, Ordering::Relaxed)
    }
}

impl MetricsObserver for Arc<History> {
    fn open(&self, node: &str) -> Box<dyn NodeMetrics> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let series = Arc::new(NodeSeries {
            node: node.to_string(),
            entries: Mutex::default(),
        });
        crate::sync::lock(&self.live).insert(id, Arc::downgrade(&series));
        Box::new(NodeRecorder {
            history: self.clone(),
            id,
            series,
            created: AtomicCell::default(),
            warned: AtomicFlag::default(),
        })
    }
}

impl NodeMetrics for NodeRecorder {
    fn record(&self, update: &MetricsUpdate, naming: &Naming) {
        let h = &self.history;
        let mut entries = crate::sync::lock(&self.series.entries);
        let now = now_ms();
        if update.full {
            let kept: std::collections::HashSet<&str> =
                update.metrics.iter().map(|(k, _)| k.as_str()).collect();
            entries.retain(|k, e| {
                let keep = kept.contains(&**k);
                if !keep {
                    h.put(e, now, stale_nan());
                }
                keep
            });
        }
        for (internal, value) in &update.metrics {
            let key = series::key_of(value);
            let v = series::value_of(value);
            match entries.get_mut(internal.as_str()) {
                Some(e) if e.key == key => h.put(e, now, v),
                found => {
                    let changed = found.is_some();
                    if let Some(old) = found {
                        h.put(old, now, stale_nan());
                    }
                    if !changed && entries.len() >= MAX_METRICS_PER_NODE {
                        continue;
                    }
                    if self.created.get() >= MAX_SERIES_PER_SESSION {
                        // A label set changing text without end: refused, counted, and
                        // said once per session.
                        entries.remove(internal.as_str());
                        h.metrics
                            .refused
                            .with_label_values(&["node_series_limit"])
                            .inc();
                        if !self.warned.replace(true) {
                            tracing::warn!(node = %crate::node::escape_name(&self.series.node),
                                limit = MAX_SERIES_PER_SESSION,
                                "node created the most series a session may; its new series are not stored in the metric history");
                        }
                        continue;
                    }
                    self.created.set(self.created.get() + 1);
                    let name: Arc<MetricName> = naming.name(internal);
                    let Some(labels) = series::labels_of(&name, value, &self.series.node) else {
                        entries.remove(internal.as_str());
                        continue;
                    };
                    let mut e = Entry {
                        key,
                        labels,
                        series: None,
                        last_t: i64::MIN / 2,
                        value: v,
                    };
                    h.put(&mut e, now, v);
                    entries.insert(internal.as_str().into(), e);
                }
            }
        }
    }
}

impl Drop for NodeRecorder {
    fn drop(&mut self) {
        crate::sync::lock(&self.history.live).remove(&self.id);
        let now = now_ms();
        let mut entries = crate::sync::lock(&self.series.entries);
        for e in entries.values_mut() {
            self.history.put(e, now, stale_nan());
        }
        // A sampling pass that took this node's series from `live` just before the removal
        // above must find nothing to repeat: a repeat after the marker would bring a departed
        // node back for a lookback window.
        entries.clear();
    }
}

#[cfg(test)]
mod tests;
