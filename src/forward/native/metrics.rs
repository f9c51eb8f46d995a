//! Native forwarding's metrics, `tracerd_native_forward_*`, by `downstream` (and `node`).

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

/// Every downstream's counters and gauges. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Age of the oldest line the downstream has not acknowledged, by downstream and node.
    pub lag_seconds: prometheus::GaugeVec,
    /// Objects the downstream has not acknowledged: sent and unacknowledged, plus unread
    /// bytes divided by the mean line length (an estimate), by downstream and node.
    pub lag_objects: IntGaugeVec,
    /// Bytes of the node's files after the acknowledged position, by downstream and node.
    pub lag_bytes: IntGaugeVec,
    /// Whether the node's connection to the downstream is open, by downstream and node.
    pub connected: IntGaugeVec,
    /// Objects sent (resends after a reconnect included), by downstream.
    pub sent: IntCounterVec,
    /// Objects the downstream acknowledged, by downstream.
    pub acked: IntCounterVec,
    /// Connection attempts or sessions that failed, by downstream.
    pub failures: IntCounterVec,
    /// Files retention deleted before they were forwarded in full, by downstream.
    pub skipped_files: IntCounterVec,
    /// Bytes of lines in those files that were not forwarded, by downstream.
    pub skipped_bytes: IntCounterVec,
    /// Objects in those bytes (estimated from the mean line length), by downstream.
    pub skipped_objects: IntCounterVec,
    /// Lines too long for the downstream's frame limit, not forwarded, by downstream.
    pub too_large: IntCounterVec,
}

fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, m: M) -> M {
    // A second registration (tests building twice) keeps the first.
    let _ = registry.register(Box::new(m.clone()));
    m
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &Registry) -> Metrics {
        let counter = |name: &str, help: &str| {
            register(
                registry,
                IntCounterVec::new(Opts::new(name, help), &["downstream"]).expect("valid metric"),
            )
        };
        let gauge = |name: &str, help: &str| {
            register(
                registry,
                IntGaugeVec::new(Opts::new(name, help), &["downstream", "node"])
                    .expect("valid metric"),
            )
        };
        Metrics {
            lag_seconds: register(
                registry,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "tracerd_native_forward_lag_seconds",
                        "Age of the oldest trace line the downstream has not acknowledged (0 when caught up).",
                    ),
                    &["downstream", "node"],
                )
                .expect("valid metric"),
            ),
            lag_objects: gauge(
                "tracerd_native_forward_lag_objects",
                "Trace objects the downstream has not acknowledged (unread ones estimated from the mean line length).",
            ),
            lag_bytes: gauge(
                "tracerd_native_forward_lag_bytes",
                "Bytes of the node's machine files after the position the downstream acknowledged.",
            ),
            connected: gauge(
                "tracerd_native_forward_connected",
                "1 while the node's connection to the downstream is open.",
            ),
            sent: counter(
                "tracerd_native_forward_objects_sent_total",
                "Trace objects sent to the downstream (resends after a reconnect included).",
            ),
            acked: counter(
                "tracerd_native_forward_objects_acked_total",
                "Trace objects the downstream acknowledged as persisted.",
            ),
            failures: counter(
                "tracerd_native_forward_failures_total",
                "Connections to the downstream that could not be opened or broke.",
            ),
            skipped_files: counter(
                "tracerd_native_forward_skipped_files_total",
                "Log files retention deleted before they were forwarded in full.",
            ),
            skipped_bytes: counter(
                "tracerd_native_forward_skipped_bytes_total",
                "Bytes of trace lines in deleted files that were not forwarded.",
            ),
            skipped_objects: counter(
                "tracerd_native_forward_skipped_objects_total",
                "Trace objects in deleted files that were not forwarded (estimated from the mean line length).",
            ),
            too_large: counter(
                "tracerd_native_forward_too_large_total",
                "Trace lines longer than the downstream's frame limit, not forwarded.",
            ),
        }
    }
}
