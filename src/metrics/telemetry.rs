//! tracerd's own metrics: one `prometheus` registry of `tracerd_*` counters and gauges that
//! every module records into, so each non-fatal problem is counted, never silent; plus the
//! process metrics (CPU, RSS, open fds) sampled from `/proc` at scrape time by
//! [`crate::metrics::process`], and the rendering of all of it in either exposition format.

use prometheus::proto::MetricType;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

use std::sync::Arc;

use crate::metrics::exposition::{self, Format, Kind};
use crate::metrics::node_series::{NodeSeries, Registered};
use crate::metrics::process;

/// The stages of one write job, children of `tracerd_ingest_stage_seconds{stage}` (one
/// shared copy, so a node's writer holds one pointer, not one per stage).
#[derive(Debug)]
pub struct IngestStages {
    /// From the writer handing a job to a writer thread to the job starting there.
    pub hop: Histogram,
    /// Rendering and `write(2)` of the job's lines to every target.
    pub write: Histogram,
    /// The part of a write that rotated files (creating the next file of each target that
    /// reached its size limit and swapping `node.<ext>`), for writes that rotated.
    pub rotate: Histogram,
    /// Writing the checkpoint (and, in fsync modes, the `fdatasync` before it).
    pub checkpoint: Histogram,
    /// From an operation's end on a writer thread to the writer task, which waited for it,
    /// running again (checkpoint timers, idle closes, retries; a write job is collected
    /// later without waiting, so it has no `back`).
    pub back: Histogram,
    /// From the persisted sequence number's publication to the session's `Ack` sent.
    pub ack: Histogram,
    /// From a batch handed to the node's queue to the `Ack` covering it, sampled: the first
    /// batch queued while no timed batch awaits its `Ack`.
    pub server: Histogram,
}

/// Buckets of `tracerd_ingest_stage_seconds`: 10 µs to 1 s.
pub const STAGE_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.003, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 1.0,
];

impl IngestStages {
    fn register(r: &Registry) -> IngestStages {
        let vec = prometheus::HistogramVec::new(
            HistogramOpts::new(
                "tracerd_ingest_stage_seconds",
                "Where a trace batch's time goes on its way to its Ack, by stage: hop (to a \
                 writer thread), write, rotate (the part of a write that started new files), checkpoint, back (to the writer task, for what it \
                 waits for), ack (publication to Ack sent), server (queued to Ack sent, \
                 sampled).",
            )
            .buckets(STAGE_BUCKETS.to_vec()),
            &["stage"],
        )
        .expect("valid constant");
        r.register(Box::new(vec.clone())).expect("registered once");
        let s = |name: &str| vec.with_label_values(&[name]);
        IngestStages {
            hop: s("hop"),
            write: s("write"),
            rotate: s("rotate"),
            checkpoint: s("checkpoint"),
            back: s("back"),
            ack: s("ack"),
            server: s("server"),
        }
    }
}

/// The daemon's own metrics. Cheap to clone (every field is an `Arc` inside).
#[derive(Clone, Debug)]
pub struct Telemetry {
    /// The registry holding every metric below.
    pub registry: Registry,
    /// Connections accepted, by protocol.
    pub connections_accepted: IntCounterVec,
    /// Connections refused at accept or handshake, by reason.
    pub connections_refused: IntCounterVec,
    /// HTTP connections refused at accept, by reason.
    pub http_connections_refused: IntCounterVec,
    /// Sessions ended, by reason.
    pub connections_closed: IntCounterVec,
    /// Nodes connected now, by protocol.
    pub nodes_connected: IntGaugeVec,
    /// Frames that could not be decoded, by reason.
    pub decode_errors: IntCounterVec,
    /// The per-node series: trace objects received and written, bytes written, round-trip
    /// times (`node_name`-labelled; kept compact, see [`NodeSeries`]).
    pub nodes: Arc<NodeSeries>,
    /// Trace objects not written, by reason (`duplicate`, `write_error`, ...).
    pub objects_dropped: IntCounterVec,
    /// Trace objects whose machine text was not JSON (kept as a JSON string).
    pub invalid_machine_json: IntCounter,
    /// Log file rotations.
    pub rotations: IntCounter,
    /// Files deleted by retention.
    pub files_pruned: IntCounter,
    /// Log write errors.
    pub write_errors: IntCounter,
    /// fsync failures (each closed its file and started a new one).
    pub fsync_errors: IntCounter,
    /// Node writers blocked by write errors now (e.g. disk full): 0 when all is well.
    pub writers_blocked: prometheus::IntGauge,
    /// Latency of one write batch (render + write), seconds.
    pub write_batch_seconds: Histogram,
    /// Where a batch's time goes between its frame and its `Ack` (`tracerd_ingest_stage_seconds`).
    pub ingest_stages: Arc<IngestStages>,
    /// HTTP requests served, by route and status code.
    pub http_requests: IntCounterVec,
    /// Time to render one exposition, by route.
    pub exposition_seconds: prometheus::HistogramVec,
    /// Node metric samples left out of an exposition because their name collided.
    pub metric_name_collisions: IntCounter,
    /// Node metric samples dropped as invalid in their family (negative counters, ...).
    pub metric_samples_invalid: IntCounter,
    /// Node metrics and data points refused by the per-node caps.
    pub node_metrics_refused: IntCounter,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)
        .expect("metric name and labels are valid constants");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let metric = IntCounter::new(name, help).expect("metric name is a valid constant");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

/// `protocol` values of `tracerd_connections_accepted_total` (`session::Protocol` labels).
pub const KNOWN_PROTOCOLS: &[&str] = &["native", "cardano"];
/// `reason` values of `tracerd_connections_refused_total`: the connection limit and
/// `session`'s handshake refusals.
pub const KNOWN_REFUSALS: &[&str] = &[
    "connection_limit",
    "handshake_rate",
    "name_rejected",
    "no_hello",
    "per_source_limit",
    "source_not_allowed",
    "tls_handshake",
    "unsupported_version",
    "wrong_magic",
];
/// `reason` values of `tracerd_http_connections_refused_total` (`http::conns`).
pub const KNOWN_HTTP_REFUSALS: &[&str] = &["endpoint_full", "per_client_limit", "socket_limit"];
/// `reason` values of `tracerd_decode_errors_total`: the native `FrameError` kinds.
pub const KNOWN_DECODE_ERRORS: &[&str] = &[
    "frame_too_large",
    "invalid_message",
    "malformed_protobuf",
    "too_many_objects",
    "truncated_frame",
];
/// `reason` values of `tracerd_trace_objects_dropped_total`.
pub const KNOWN_DROPS: &[&str] = &["duplicate", "write_error"];

pub use crate::metrics::node_series::{NODE_RTT, RTT_BUCKETS};

impl Telemetry {
    /// Records a round-trip time to `node`.
    pub fn observe_rtt(&self, node: &str, rtt: std::time::Duration) {
        self.nodes.node(node).observe_rtt(rtt.as_secs_f64());
    }

    /// Removes the `node_name` series of `node` (its node has left; issue 12, point 12).
    pub fn forget_node(&self, node: &str) {
        self.nodes.forget(node);
    }

    /// A fresh registry with every tracerd metric registered.
    pub fn new() -> Telemetry {
        let r = Registry::new();
        let nodes_connected = IntGaugeVec::new(
            Opts::new(
                "tracerd_nodes_connected",
                "Nodes connected now, by protocol.",
            ),
            &["protocol"],
        )
        .expect("valid constant");
        r.register(Box::new(nodes_connected.clone()))
            .expect("registered once");
        let write_batch_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "tracerd_write_batch_seconds",
                "Time to render and write one batch of trace objects to every target.",
            )
            .buckets(vec![
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 1.0,
            ]),
        )
        .expect("valid constant");
        r.register(Box::new(write_batch_seconds.clone()))
            .expect("registered once");
        let exposition_seconds = prometheus::HistogramVec::new(
            HistogramOpts::new(
                "tracerd_exposition_render_seconds",
                "Time to render one metrics exposition, by route.",
            )
            .buckets(vec![
                0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["route"],
        )
        .expect("valid constant");
        r.register(Box::new(exposition_seconds.clone()))
            .expect("registered once");
        let nodes = Arc::new(NodeSeries::new());
        r.register(Box::new(Registered(nodes.clone())))
            .expect("registered once");
        let ingest_stages = Arc::new(IngestStages::register(&r));
        let t = Telemetry {
            nodes,
            ingest_stages,
            http_requests: counter_vec(
                &r,
                "tracerd_http_requests_total",
                "HTTP requests served, by route and status code.",
                &["route", "code"],
            ),
            metric_name_collisions: counter(
                &r,
                "tracerd_metric_name_collisions_total",
                "Node metric samples left out of an exposition because their Prometheus name \
                 collided with another metric's.",
            ),
            metric_samples_invalid: counter(
                &r,
                "tracerd_metric_samples_invalid_total",
                "Node metric samples left out of an exposition because they are invalid there \
                 (a negative value of a counter, clashing label names).",
            ),
            node_metrics_refused: counter(
                &r,
                "tracerd_node_metrics_refused_total",
                "Node metrics and data points refused because the node already had the most \
                 allowed.",
            ),
            exposition_seconds,
            connections_accepted: counter_vec(
                &r,
                "tracerd_connections_accepted_total",
                "Connections accepted, by protocol.",
                &["protocol"],
            ),
            connections_refused: counter_vec(
                &r,
                "tracerd_connections_refused_total",
                "Connections refused at accept or handshake, by reason.",
                &["reason"],
            ),
            http_connections_refused: counter_vec(
                &r,
                "tracerd_http_connections_refused_total",
                "HTTP connections refused at accept, by reason.",
                &["reason"],
            ),
            connections_closed: counter_vec(
                &r,
                "tracerd_connections_closed_total",
                "Sessions ended, by reason.",
                &["reason"],
            ),
            decode_errors: counter_vec(
                &r,
                "tracerd_decode_errors_total",
                "Frames that could not be decoded, by reason.",
                &["reason"],
            ),
            objects_dropped: counter_vec(
                &r,
                "tracerd_trace_objects_dropped_total",
                "Trace objects not written, by reason.",
                &["reason"],
            ),
            invalid_machine_json: counter(
                &r,
                "tracerd_invalid_machine_json_total",
                "Trace objects whose machine text was not JSON and was kept as a JSON string.",
            ),
            rotations: counter(&r, "tracerd_log_rotations_total", "Log file rotations."),
            files_pruned: counter(
                &r,
                "tracerd_log_files_pruned_total",
                "Log files deleted by retention.",
            ),
            write_errors: counter(
                &r,
                "tracerd_log_write_errors_total",
                "Errors writing log files.",
            ),
            fsync_errors: counter(
                &r,
                "tracerd_log_fsync_errors_total",
                "fsync failures; each closed its file and started a new one.",
            ),
            writers_blocked: {
                let g = prometheus::IntGauge::new(
                    "tracerd_log_writers_blocked",
                    "Node log writers blocked by write errors now (e.g. disk full).",
                )
                .expect("valid constant");
                r.register(Box::new(g.clone())).expect("registered once");
                g
            },
            nodes_connected,
            write_batch_seconds,
            registry: r,
        };
        t.init_known_labels();
        t
    }

    /// Creates every known label value of the labelled counters at 0, so a dashboard panel
    /// shows 0 instead of "No data" before the first event (issue 11 point 9).
    fn init_known_labels(&self) {
        let known: [(&IntCounterVec, &[&str]); 5] = [
            (&self.connections_accepted, KNOWN_PROTOCOLS),
            (&self.connections_refused, KNOWN_REFUSALS),
            (&self.http_connections_refused, KNOWN_HTTP_REFUSALS),
            (&self.decode_errors, KNOWN_DECODE_ERRORS),
            (&self.objects_dropped, KNOWN_DROPS),
        ];
        for (family, values) in known {
            for v in values {
                family.with_label_values(&[v]);
            }
        }
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode_utf8(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot render tracerd metrics");
        }
        out
    }
}

impl Telemetry {
    /// Appends every registered metric, then the process metrics, in `format` (no `# EOF`).
    /// Reads `/proc`: call it off the async runtime's worker threads.
    pub fn render_into(&self, format: Format, out: &mut String) {
        for family in self.registry.gather() {
            let kind = match family.get_field_type() {
                MetricType::COUNTER => Kind::Counter,
                MetricType::GAUGE => Kind::Gauge,
                MetricType::HISTOGRAM => {
                    write_histogram(out, format, &family);
                    continue;
                }
                _ => continue,
            };
            let names = exposition::family_names(family.name(), kind);
            exposition::write_header(out, format, &names, kind, family.help());
            for m in family.get_metric() {
                out.push_str(&names.series);
                let labels = m.get_label().iter().map(|l| (l.name(), l.value()));
                exposition::write_labels(out, labels);
                out.push(' ');
                let v = match kind {
                    Kind::Counter => m.get_counter().get_value(),
                    _ => m.get_gauge().get_value(),
                };
                exposition::write_f64(out, v);
                out.push('\n');
            }
        }
        let p = process::sample();
        let mut gauge = |name: &str, help: &str, kind: Kind, v: Option<f64>| {
            if let Some(v) = v {
                let names = exposition::family_names(name, kind);
                exposition::write_header(out, format, &names, kind, help);
                out.push_str(&names.series);
                out.push(' ');
                exposition::write_f64(out, v);
                out.push('\n');
            }
        };
        gauge(
            "tracerd_process_cpu_seconds_total",
            "User and system CPU time of the tracerd process, in seconds.",
            Kind::Counter,
            p.cpu_seconds(),
        );
        gauge(
            "tracerd_process_resident_memory_bytes",
            "Resident set size of the tracerd process, in bytes.",
            Kind::Gauge,
            p.resident_bytes.map(|v| v as f64),
        );
        gauge(
            "tracerd_process_open_fds",
            "Open file descriptors of the tracerd process.",
            Kind::Gauge,
            p.open_fds.map(|v| v as f64),
        );
        gauge(
            "tracerd_process_max_fds",
            "Limit on open file descriptors of the tracerd process.",
            Kind::Gauge,
            p.max_fds.map(|v| v as f64),
        );
        gauge(
            "tracerd_process_threads",
            "Threads of the tracerd process.",
            Kind::Gauge,
            p.threads.map(|v| v as f64),
        );
    }

    /// Every name [`Telemetry::render_into`] writes, so node metrics cannot shadow them.
    pub fn reserved_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .registry
            .gather()
            .iter()
            .flat_map(|f| {
                let n = f.name().to_string();
                let base = n.strip_suffix("_total").unwrap_or(&n).to_string();
                [
                    format!("{base}_created"),
                    format!("{base}_bucket"),
                    format!("{base}_count"),
                    format!("{base}_sum"),
                    base,
                    n,
                ]
            })
            .collect();
        for n in [
            "tracerd_process_cpu_seconds",
            "tracerd_process_cpu_seconds_total",
            "tracerd_process_cpu_seconds_created",
            "tracerd_process_resident_memory_bytes",
            "tracerd_process_open_fds",
            "tracerd_process_max_fds",
            "tracerd_process_threads",
        ]
        .into_iter()
        .chain(crate::metrics::disk::NAMES.iter().copied())
        {
            names.push(n.to_string());
        }
        names
    }
}

fn write_histogram(out: &mut String, format: Format, family: &prometheus::proto::MetricFamily) {
    let base = family.name();
    exposition::write_help_type(out, format, base, "histogram", family.help());
    for m in family.get_metric() {
        let h = m.get_histogram();
        let labels: Vec<(&str, &str)> = m
            .get_label()
            .iter()
            .map(|l| (l.name(), l.value()))
            .collect();
        let mut inf_seen = false;
        for b in h.get_bucket() {
            let le = b.upper_bound();
            inf_seen |= le.is_infinite();
            let mut le_text = String::new();
            write_le(&mut le_text, le);
            bucket_line(out, base, &labels, &le_text, b.cumulative_count());
        }
        if !inf_seen {
            bucket_line(out, base, &labels, "+Inf", h.get_sample_count());
        }
        out.push_str(base);
        out.push_str("_sum");
        exposition::write_labels(out, labels.iter().copied());
        out.push(' ');
        exposition::write_f64(out, h.get_sample_sum());
        out.push('\n');
        out.push_str(base);
        out.push_str("_count");
        exposition::write_labels(out, labels.iter().copied());
        out.push_str(&format!(" {}\n", h.get_sample_count()));
    }
}

/// OpenMetrics wants canonical `le` values: `1.0`, not `1`.
fn write_le(out: &mut String, le: f64) {
    if le.is_finite() && le.fract() == 0.0 {
        out.push_str(&format!("{le:.1}"));
    } else {
        exposition::write_f64(out, le);
    }
}

fn bucket_line(out: &mut String, base: &str, labels: &[(&str, &str)], le: &str, count: u64) {
    out.push_str(base);
    out.push_str("_bucket");
    let all = labels.iter().copied().chain(std::iter::once(("le", le)));
    exposition::write_labels(out, all);
    out.push_str(&format!(" {count}\n"));
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}
