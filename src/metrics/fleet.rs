//! Fleet rendering: the expositions of the node routes and of `/metrics`, built from the node
//! registry's views and tracerd's own telemetry. Every node's metrics (labelled `node_name`
//! on `/metrics`), the per-node families tracerd adds from each node's state, then
//! tracerd's own metrics. Blocking only in that it read-locks one node at a time and samples
//! `/proc` (through [`Telemetry::render_into`]): run it on the blocking pool.

use std::sync::{Arc, Mutex};

use crate::metrics::exposition::{self, Format, Kind, MetricName, RenderStats, Renderer};
use crate::metrics::telemetry::Telemetry;
use crate::model::MetricValue;

/// Most memory kept between `/metrics` renders for reuse: enough for the family buffers of a
/// fleet of ordinary size; a larger render allocates afresh and frees what it used, so a
/// burst of large renders or a fleet that shrank does not keep its peak.
const MAX_KEPT_BUFFER_BYTES: usize = 16 << 20;

/// Per-node families tracerd adds to `/metrics` from each node's live state.
/// The RTT histogram is tracerd's own (`Telemetry::node_rtt`); its name is reserved here.
pub use crate::metrics::telemetry::NODE_RTT;
pub const NODE_LAST_MESSAGE: &str = "tracerd_node_last_message_timestamp_seconds";
pub const NODE_METRICS: &str = "tracerd_node_metrics";
pub const NODE_QUEUE: &str = "tracerd_node_write_queue_batches";

/// What fleet rendering reads of one node. The node registry's `NodeView` implements it
/// (`node/fleet.rs`), so this layer does not import the registry.
pub trait FleetNode {
    /// The node's name (the `node_name` label).
    fn name(&self) -> &str;
    /// Hands the node's metrics, read-locked for this call only, to `visit`.
    fn visit_metrics<V: VisitMetrics>(&self, visit: V) -> V::Output;
    /// When the last message arrived, in milliseconds since the Unix epoch.
    fn last_message_ms(&self) -> Option<u64>;
    /// Batches waiting in the node's write queue.
    fn queue_depth(&self) -> Option<usize>;
}

/// A use of one node's metrics while they are read-locked.
pub trait VisitMetrics {
    /// What the visit returns.
    type Output;
    /// Visits the `len` metrics of one node.
    fn visit<'a>(
        self,
        metrics: impl Iterator<Item = (&'a Arc<MetricName>, &'a MetricValue)>,
        len: usize,
    ) -> Self::Output;
}

/// cardano-tracer's counter on every node page: wall-clock Unix milliseconds at scrape time.
pub const EKG_SERVER_TIMESTAMP: &str = "ekg.server_timestamp_ms";

struct RenderOne<'e> {
    format: Format,
    /// Added after the node's metrics unless the node sent a metric of the same name.
    extra: (&'e Arc<MetricName>, &'e MetricValue),
}

impl VisitMetrics for RenderOne<'_> {
    type Output = (String, RenderStats);
    fn visit<'a>(
        self,
        metrics: impl Iterator<Item = (&'a Arc<MetricName>, &'a MetricValue)>,
        _len: usize,
    ) -> Self::Output {
        let (name, value) = self.extra;
        let mut items: Vec<(&Arc<MetricName>, &MetricValue)> = metrics.map(shorten).collect();
        if !items.iter().any(|(n, _)| n.internal == name.internal) {
            items.push((name, value));
        }
        exposition::render_node(self.format, items)
    }
}

struct AddNode<'r> {
    renderer: &'r mut Renderer,
    name: &'r str,
}

impl VisitMetrics for AddNode<'_> {
    type Output = usize;
    fn visit<'a>(
        self,
        metrics: impl Iterator<Item = (&'a Arc<MetricName>, &'a MetricValue)>,
        len: usize,
    ) -> usize {
        self.renderer.add_node(Some(self.name), metrics);
        len
    }
}

/// Lets one node's metrics and the extra metric meet at their common lifetime.
fn shorten<'s>(
    item: (&'s Arc<MetricName>, &'s MetricValue),
) -> (&'s Arc<MetricName>, &'s MetricValue) {
    item
}

/// One node's exposition, with cardano-tracer's `ekg_server_timestamp_ms` counter (named by
/// `naming`, valued `now_ms`) unless the node sent that metric itself.
pub fn render_node(
    node: &impl FleetNode,
    format: Format,
    naming: &exposition::Naming,
    now_ms: u64,
) -> (String, RenderStats) {
    let name = naming.name(EKG_SERVER_TIMESTAMP);
    let value = MetricValue::Counter(i64::try_from(now_ms).unwrap_or(i64::MAX));
    node.visit_metrics(RenderOne {
        format,
        extra: (&name, &value),
    })
}

/// Renders `/metrics`, keeping the family buffers of one render for the next.
#[derive(Debug, Default)]
pub struct FleetRenderer {
    /// Family buffers of the last `/metrics` render, reused by the next.
    buffers: Mutex<Vec<String>>,
}

impl FleetRenderer {
    /// Every node's metrics labelled `node_name`, then tracerd's own metrics. Counts name
    /// collisions in `telemetry`.
    pub fn render_all<N: FleetNode>(
        &self,
        telemetry: &Telemetry,
        views: &[N],
        format: Format,
    ) -> String {
        let mut renderer = Renderer::with_nodes(format, views.len());
        renderer.reuse(std::mem::take(&mut *crate::sync::lock(&self.buffers)));
        for name in telemetry.reserved_names() {
            renderer.reserve(&name);
        }
        for name in [NODE_RTT, NODE_LAST_MESSAGE, NODE_METRICS, NODE_QUEUE] {
            renderer.reserve(name);
        }
        for suffix in ["_bucket", "_count", "_sum", "_created"] {
            renderer.reserve(&format!("{NODE_RTT}{suffix}"));
        }
        let mut last = Vec::with_capacity(views.len());
        let mut counts = Vec::with_capacity(views.len());
        let mut queues = Vec::with_capacity(views.len());
        for v in views {
            let name = v.name();
            let len = v.visit_metrics(AddNode {
                renderer: &mut renderer,
                name,
            });
            counts.push((name, len as f64));
            if let Some(ms) = v.last_message_ms() {
                last.push((name, ms as f64 / 1e3));
            }
            if let Some(depth) = v.queue_depth() {
                queues.push((name, depth as f64));
            }
        }
        let mut out = String::new();
        let mut spare = Vec::new();
        let stats = renderer.finish_reusing(&mut out, &mut spare);
        // Keep as many buffers as this render filled: those of families gone with their
        // nodes are freed.
        spare.truncate(stats.families);
        let kept: usize = spare.iter().map(String::capacity).sum();
        if kept <= MAX_KEPT_BUFFER_BYTES {
            *crate::sync::lock(&self.buffers) = spare;
        }
        telemetry.metric_name_collisions.inc_by(stats.collisions);
        telemetry.metric_samples_invalid.inc_by(stats.invalid);
        let mut per_node = |name: &str, help: &str, values: &[(&str, f64)]| {
            let names = exposition::family_names(name, Kind::Gauge);
            exposition::write_header(&mut out, format, &names, Kind::Gauge, help);
            for (node, value) in values {
                out.push_str(name);
                exposition::write_labels(&mut out, [("node_name", *node)]);
                out.push(' ');
                exposition::write_f64(&mut out, *value);
                out.push('\n');
            }
        };
        per_node(
            NODE_LAST_MESSAGE,
            "When the node's last message arrived, in seconds since the Unix epoch.",
            &last,
        );
        per_node(
            NODE_METRICS,
            "Distinct metrics the node has sent in its current session.",
            &counts,
        );
        per_node(
            NODE_QUEUE,
            "Batches of trace objects waiting in the node's write queue.",
            &queues,
        );
        telemetry.render_into(format, &mut out);
        if format == Format::OpenMetrics {
            out.push_str("# EOF\n");
        }
        out
    }
}
