//! tracerd's own per-node series, `node_name`-labelled: `tracerd_trace_objects_received_total`,
//! `tracerd_trace_objects_written_total`, `tracerd_log_bytes_written_total` and the
//! `tracerd_node_rtt_seconds` histogram.
//!
//! Kept outside `prometheus`'s labelled vectors on purpose (issue 21): each child of an
//! `IntCounterVec` or `HistogramVec` carries its own copy of the family's description (help
//! text, label names), its label pairs and, for a histogram, two shards of buckets, about
//! 2.3 KiB per node for these four series, most of an idle node's metrics. Here a node's
//! series are one [`NodeCounters`] (three atomics and, once the node's first round-trip time
//! is known, a boxed bucket array) under one copy of its name. [`NodeSeries`] is a
//! `prometheus` [`Collector`] registered in tracerd's registry, so gathering, ordering and
//! rendering are unchanged: the same families, help texts, labels and values as before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

/// `tracerd_trace_objects_received_total`.
pub const RECEIVED: &str = "tracerd_trace_objects_received_total";
const RECEIVED_HELP: &str = "Trace objects received, by node.";
/// `tracerd_trace_objects_written_total`.
pub const WRITTEN: &str = "tracerd_trace_objects_written_total";
const WRITTEN_HELP: &str = "Trace objects written to every log target, by node.";
/// `tracerd_log_bytes_written_total`.
pub const BYTES: &str = "tracerd_log_bytes_written_total";
const BYTES_HELP: &str = "Bytes written to log files, by node.";
/// The histogram of round-trip times per node.
pub const NODE_RTT: &str = "tracerd_node_rtt_seconds";
const NODE_RTT_HELP: &str = "Round-trip time to the node, in seconds: native Ping to Pong; \
    Cardano request (EKG poll, data point) to the first SDU of its reply, less the node's \
    processing as its SDU timestamps show it.";

/// Buckets of `tracerd_node_rtt_seconds`: from a loopback or same-rack LAN (100 µs) through
/// a continent (25–100 ms) to a congested intercontinental path (10 s).
pub const RTT_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
    0.3, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const RTT_BUCKET_COUNT: usize = 19;
const _: () = assert!(RTT_BUCKETS.len() == RTT_BUCKET_COUNT);

/// The label of every per-node series.
const LABEL: &str = "node_name";

/// One node's series. Cheap to update from the ingest path (relaxed atomics); the histogram
/// is allocated by the first round-trip time.
#[derive(Debug, Default)]
pub struct NodeCounters {
    received: AtomicU64,
    written: AtomicU64,
    bytes: AtomicU64,
    rtt: Mutex<Option<Box<RttHistogram>>>,
}

/// Round-trip times: samples per bucket (not cumulative), their count and sum.
#[derive(Debug, Default)]
struct RttHistogram {
    buckets: [u64; RTT_BUCKET_COUNT],
    count: u64,
    sum: f64,
}

impl NodeCounters {
    /// `n` more trace objects received.
    pub fn add_received(&self, n: u64) {
        self.received.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` more trace objects written.
    pub fn add_written(&self, n: u64) {
        self.written.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` more bytes written to log files.
    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Trace objects received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Trace objects written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Records one round-trip time, in seconds (as `prometheus::Histogram::observe`: the
    /// first bucket whose bound is at least `seconds`, none past the last bound).
    pub fn observe_rtt(&self, seconds: f64) {
        let mut rtt = crate::sync::lock(&self.rtt);
        let h = rtt.get_or_insert_with(Box::default);
        if let Some(i) = RTT_BUCKETS.iter().position(|b| seconds <= *b) {
            h.buckets[i] += 1;
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// The histogram as `prometheus` exposes one, `None` before the first round-trip time.
    fn rtt_proto(&self) -> Option<proto::Histogram> {
        let rtt = crate::sync::lock(&self.rtt);
        let h = rtt.as_ref()?;
        let mut cumulative = 0;
        let buckets = RTT_BUCKETS
            .iter()
            .zip(h.buckets)
            .map(|(bound, n)| {
                cumulative += n;
                let mut b = proto::Bucket::default();
                b.set_cumulative_count(cumulative);
                b.set_upper_bound(*bound);
                b
            })
            .collect();
        let mut p = proto::Histogram::default();
        p.set_sample_count(h.count);
        p.set_sample_sum(h.sum);
        p.set_bucket(buckets);
        Some(p)
    }
}

/// Every node's series, by node name; a `prometheus` collector of the four families.
#[derive(Debug)]
pub struct NodeSeries {
    nodes: RwLock<HashMap<String, Arc<NodeCounters>>>,
    descs: Vec<Desc>,
}

impl Default for NodeSeries {
    fn default() -> Self {
        NodeSeries::new()
    }
}

impl NodeSeries {
    /// No node yet.
    pub fn new() -> NodeSeries {
        let desc = |name: &str, help: &str| {
            Desc::new(name.into(), help.into(), vec![LABEL.into()], HashMap::new())
                .expect("metric name, help and label are valid constants")
        };
        NodeSeries {
            nodes: RwLock::default(),
            descs: vec![
                desc(RECEIVED, RECEIVED_HELP),
                desc(WRITTEN, WRITTEN_HELP),
                desc(BYTES, BYTES_HELP),
                desc(NODE_RTT, NODE_RTT_HELP),
            ],
        }
    }

    /// `node`'s series, created at zero (its three counters then show 0; its histogram
    /// shows once it has a sample).
    pub fn node(&self, node: &str) -> Arc<NodeCounters> {
        if let Some(c) = crate::sync::read(&self.nodes).get(node) {
            return c.clone();
        }
        crate::sync::write(&self.nodes)
            .entry(node.to_string())
            .or_default()
            .clone()
    }

    /// `node`'s series if it has any (nothing is created).
    pub fn get(&self, node: &str) -> Option<Arc<NodeCounters>> {
        crate::sync::read(&self.nodes).get(node).cloned()
    }

    /// Removes `node`'s series (its node has left); a later [`NodeSeries::node`] starts
    /// them at zero again.
    pub fn forget(&self, node: &str) {
        crate::sync::write(&self.nodes).remove(node);
    }

    /// Trace objects written by every node with series.
    pub fn written_total(&self) -> u64 {
        crate::sync::read(&self.nodes)
            .values()
            .map(|c| c.written())
            .sum()
    }
}

fn family(desc: &Desc, kind: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(desc.fq_name.clone());
    f.set_help(desc.help.clone());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn labelled(node: &str) -> proto::Metric {
    let mut label = proto::LabelPair::default();
    label.set_name(LABEL.to_string());
    label.set_value(node.to_string());
    proto::Metric::from_label(vec![label])
}

fn counter(node: &str, value: u64) -> proto::Metric {
    let mut m = labelled(node);
    let mut c = proto::Counter::default();
    c.set_value(value as f64);
    m.set_counter(c);
    m
}

impl Collector for NodeSeries {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    /// The four families, their series in no particular order (the registry sorts them).
    fn collect(&self) -> Vec<MetricFamily> {
        let nodes = crate::sync::read(&self.nodes);
        let (mut received, mut written, mut bytes, mut rtt) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (name, c) in nodes.iter() {
            received.push(counter(name, c.received()));
            written.push(counter(name, c.written()));
            bytes.push(counter(name, c.bytes()));
            if let Some(h) = c.rtt_proto() {
                let mut m = labelled(name);
                m.set_histogram(h);
                rtt.push(m);
            }
        }
        drop(nodes);
        let d = &self.descs;
        vec![
            family(&d[0], MetricType::COUNTER, received),
            family(&d[1], MetricType::COUNTER, written),
            family(&d[2], MetricType::COUNTER, bytes),
            family(&d[3], MetricType::HISTOGRAM, rtt),
        ]
    }
}

/// A [`NodeSeries`] shared with the registry that gathers it.
#[derive(Debug)]
pub struct Registered(pub Arc<NodeSeries>);

impl Collector for Registered {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The families this collector gathers are those the `prometheus` vectors it replaced
    /// gathered, series for series (names, help, labels, values, buckets).
    #[test]
    fn gathers_what_prometheus_vectors_gathered() {
        let old = prometheus::Registry::new();
        let vec = |name: &str, help: &str| {
            let v = prometheus::IntCounterVec::new(prometheus::Opts::new(name, help), &[LABEL])
                .unwrap();
            old.register(Box::new(v.clone())).unwrap();
            v
        };
        let (r, w, b) = (
            vec(RECEIVED, RECEIVED_HELP),
            vec(WRITTEN, WRITTEN_HELP),
            vec(BYTES, BYTES_HELP),
        );
        let h = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new(NODE_RTT, NODE_RTT_HELP).buckets(RTT_BUCKETS.to_vec()),
            &[LABEL],
        )
        .unwrap();
        old.register(Box::new(h.clone())).unwrap();

        let new = prometheus::Registry::new();
        let series = Arc::new(NodeSeries::new());
        new.register(Box::new(Registered(series.clone()))).unwrap();

        for (i, node) in ["relay-b", "relay-a", "bp \"1\"", "quiet"]
            .iter()
            .enumerate()
        {
            let n = series.node(node);
            let i = i as u64;
            r.with_label_values(&[node]).inc_by(10 * i);
            n.add_received(10 * i);
            w.with_label_values(&[node]).inc_by(7 * i);
            n.add_written(7 * i);
            b.with_label_values(&[node]).inc_by(300 * i);
            n.add_bytes(300 * i);
            if *node != "quiet" {
                // One sample per bucket edge, one between edges, one past the last bound.
                for s in [0.000_1, 0.003, 0.075, 0.4, 10.0, 11.0, 0.000_05] {
                    let s = s * (i + 1) as f64;
                    h.with_label_values(&[node]).observe(s);
                    n.observe_rtt(s);
                }
            }
        }
        let render = |r: &prometheus::Registry| {
            let mut out = String::new();
            prometheus::TextEncoder::new()
                .encode_utf8(&r.gather(), &mut out)
                .unwrap();
            out
        };
        let (before, after) = (render(&old), render(&new));
        assert!(
            after.contains(
                "tracerd_node_rtt_seconds_bucket{node_name=\"relay-a\",le=\"0.005\"} 2\n"
            ),
            "{after}"
        );
        assert_eq!(before, after);

        series.forget("relay-a");
        r.remove_label_values(&["relay-a"]).unwrap();
        w.remove_label_values(&["relay-a"]).unwrap();
        b.remove_label_values(&["relay-a"]).unwrap();
        h.remove_label_values(&["relay-a"]).unwrap();
        let (before, after) = (render(&old), render(&new));
        assert!(!after.contains("relay-a"));
        assert_eq!(before, after);
        // relay-b 0, bp 14, quiet 21 (relay-a, 7, is gone).
        assert_eq!(series.written_total(), 35);
    }
}
