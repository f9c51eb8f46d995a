//! Fleet rendering: the expositions of the node routes and of `/metrics`, built from the node
//! registry's views and tracerd's own telemetry. Every node's metrics (labelled `node_name`
//! on `/metrics`), the per-node families tracerd adds from each node's state, then
//! tracerd's own metrics. Blocking only in that it read-locks one node at a time and samples
//! `/proc` (through [`Telemetry::render_into`]): run it on the blocking pool.

use std::sync::{Arc, Mutex};

use crate::metrics::exposition::{
    self, FleetRender, Format, Kind, LineCache, MetricName, RenderStats,
};
use crate::metrics::telemetry::Telemetry;
use crate::model::MetricValue;

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
    /// Visits the `len` metrics of one node, read at store version `version` (equal versions
    /// of one node mean equal metrics).
    fn visit<'a>(
        self,
        metrics: impl Iterator<Item = (&'a Arc<MetricName>, &'a MetricValue)> + Clone,
        len: usize,
        version: u64,
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
        metrics: impl Iterator<Item = (&'a Arc<MetricName>, &'a MetricValue)> + Clone,
        _len: usize,
        _version: u64,
    ) -> Self::Output {
        let (name, value) = self.extra;
        let mut items: Vec<(&Arc<MetricName>, &MetricValue)> = metrics.map(shorten).collect();
        if !items.iter().any(|(n, _)| n.internal == name.internal) {
            items.push((name, value));
        }
        exposition::render_node(self.format, items)
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

/// Renders `/metrics`, keeping every node's rendered lines for the next render
/// ([`exposition::FleetRender`]: at most [`exposition::MAX_CACHED_BYTES`] of them).
#[derive(Debug, Default)]
pub struct FleetRenderer {
    /// The nodes' lines of the last render; empty while a render has them.
    cache: Mutex<LineCache>,
}

struct AddNode<'r> {
    render: &'r mut FleetRender,
    name: &'r str,
}

impl VisitMetrics for AddNode<'_> {
    type Output = usize;
    fn visit<'a>(
        self,
        metrics: impl Iterator<Item = (&'a Arc<MetricName>, &'a MetricValue)> + Clone,
        len: usize,
        version: u64,
    ) -> usize {
        self.render.add_node(self.name, version, metrics);
        len
    }
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
        // Every piece is a `&str`: the bytes are UTF-8.
        String::from_utf8(self.render_all_bytes(telemetry, views, format))
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// [`FleetRenderer::render_all`] as bytes (what the HTTP route sends).
    pub fn render_all_bytes<N: FleetNode>(
        &self,
        telemetry: &Telemetry,
        views: &[N],
        format: Format,
    ) -> Vec<u8> {
        // A concurrent render finds the cache empty and formats every node itself.
        let cache = std::mem::take(&mut *crate::sync::lock(&self.cache));
        let mut render = FleetRender::new(format, cache, views.len());
        for name in telemetry.reserved_names() {
            render.reserve(&name);
        }
        for name in [NODE_RTT, NODE_LAST_MESSAGE, NODE_METRICS, NODE_QUEUE] {
            render.reserve(name);
        }
        for suffix in ["_bucket", "_count", "_sum", "_created"] {
            render.reserve(&format!("{NODE_RTT}{suffix}"));
        }
        let mut last = Vec::with_capacity(views.len());
        let mut counts = Vec::with_capacity(views.len());
        let mut queues = Vec::with_capacity(views.len());
        for v in views {
            let name = v.name();
            let len = v.visit_metrics(AddNode {
                render: &mut render,
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
        let (out, cache) = render.finish(|stats| {
            telemetry.metric_name_collisions.inc_by(stats.collisions);
            telemetry.metric_samples_invalid.inc_by(stats.invalid);
            let mut out = String::new();
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
        });
        *crate::sync::lock(&self.cache) = cache;
        out
    }
}
