//! The sinks' own metrics, `tracerd_sink_*`, in tracerd's registry (served on `/metrics`).

use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};

/// Every sink's counters and gauges, labelled by `sink` (`clickhouse`, ...). Cheap to clone.
#[derive(Clone, Debug)]
pub struct SinkMetrics {
    /// Age of the oldest line the remote has not confirmed, by sink and node.
    pub lag_seconds: GaugeVec,
    /// Trace lines the remote confirmed.
    pub rows_sent: IntCounterVec,
    /// Requests that failed, by reason (`connect`, `timeout`, `status`, ...).
    pub requests_failed: IntCounterVec,
    /// Files retention deleted before the sink had sent them (in full).
    pub lost_files: IntCounterVec,
    /// Bytes of lines in those files the sink had not sent, where known.
    pub lost_bytes: IntCounterVec,
    /// Times a sink asked the remote what it holds after an uncertain request (or at start).
    pub resyncs: IntCounterVec,
    /// Trace lines in requests the remote refused for good (Loki's 400): not retried.
    pub rows_refused: IntCounterVec,
    /// Trace lines sent with a time other than their own (Loki: none readable, or older than
    /// their stream's newest entry, which Loki would refuse).
    pub rows_retimed: IntCounterVec,
}

fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, m: M) -> M {
    registry
        .register(Box::new(m.clone()))
        .expect("each sink metric is registered once");
    m
}

impl SinkMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &Registry) -> SinkMetrics {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(
                registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        SinkMetrics {
            lag_seconds: register(
                registry,
                GaugeVec::new(
                    Opts::new(
                        "tracerd_sink_lag_seconds",
                        "Age of the oldest trace line the sink's remote has not confirmed (0 when caught up).",
                    ),
                    &["sink", "node"],
                )
                .expect("valid metric"),
            ),
            rows_sent: counter(
                "tracerd_sink_rows_sent_total",
                "Trace lines the sink's remote confirmed.",
                &["sink"],
            ),
            requests_failed: counter(
                "tracerd_sink_requests_failed_total",
                "Requests to the sink's remote that failed, by reason (retried).",
                &["sink", "reason"],
            ),
            lost_files: counter(
                "tracerd_sink_lost_files_total",
                "Log files retention deleted before the sink had sent all of them.",
                &["sink"],
            ),
            lost_bytes: counter(
                "tracerd_sink_lost_bytes_total",
                "Bytes of trace lines in deleted files the sink had not sent (where known).",
                &["sink"],
            ),
            resyncs: counter(
                "tracerd_sink_resyncs_total",
                "Times the sink asked its remote what it holds (at start and after an uncertain request).",
                &["sink"],
            ),
            rows_refused: counter(
                "tracerd_sink_rows_refused_total",
                "Trace lines in requests the sink's remote refused for good (not retried; Loki's 400).",
                &["sink"],
            ),
            rows_retimed: counter(
                "tracerd_sink_rows_retimed_total",
                "Trace lines sent with their stream's newest time instead of their own (none readable, or out of order).",
                &["sink"],
            ),
        }
    }
}
