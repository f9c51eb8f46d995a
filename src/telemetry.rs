//! tracerd's own metrics: one `prometheus` registry of `tracerd_*` counters and gauges that
//! every module records into, so each non-fatal problem is counted, never silent.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// The daemon's own metrics. Cheap to clone (every field is an `Arc` inside).
#[derive(Clone, Debug)]
pub struct Telemetry {
    /// The registry holding every metric below.
    pub registry: Registry,
    /// Connections accepted, by protocol.
    pub connections_accepted: IntCounterVec,
    /// Connections refused at accept or handshake, by reason.
    pub connections_refused: IntCounterVec,
    /// Sessions ended, by reason.
    pub connections_closed: IntCounterVec,
    /// Nodes connected now, by protocol.
    pub nodes_connected: IntGaugeVec,
    /// Frames that could not be decoded, by reason.
    pub decode_errors: IntCounterVec,
    /// Trace objects received, by node.
    pub objects_received: IntCounterVec,
    /// Trace objects written to every target, by node.
    pub objects_written: IntCounterVec,
    /// Bytes written to log files, by node.
    pub bytes_written: IntCounterVec,
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

impl Telemetry {
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
        Telemetry {
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
            objects_received: counter_vec(
                &r,
                "tracerd_trace_objects_received_total",
                "Trace objects received, by node.",
                &["node_name"],
            ),
            objects_written: counter_vec(
                &r,
                "tracerd_trace_objects_written_total",
                "Trace objects written to every log target, by node.",
                &["node_name"],
            ),
            bytes_written: counter_vec(
                &r,
                "tracerd_log_bytes_written_total",
                "Bytes written to log files, by node.",
                &["node_name"],
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

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}
