//! Scrape benchmark: renders `/metrics` for many nodes × many metrics, and one node's route,
//! and prints p50/p99. Run with `cargo run --release --example scrape_bench [nodes] [metrics]`
//! (defaults 1000 × 200). `/metrics` is timed twice: with the nodes' metrics unchanged between
//! scrapes (the figure issue 21 names), and with every node sending a new snapshot (every
//! value changed) before each scrape, the worst case for the per-node line cache; the
//! snapshots themselves are not timed.

use std::time::{Duration, Instant};

use tracerd::metrics::exposition::Format;
use tracerd::metrics::fleet::{render_node, FleetRenderer};
use tracerd::metrics::telemetry::Telemetry;
use tracerd::model::{MetricValue, MetricsUpdate};
use tracerd::node::Nodes;

/// A cardano-like mix: gauges (`_int`), counters, numeric labels (`_real`), label sets.
fn metrics(node: usize, count: usize, round: usize) -> Vec<(String, MetricValue)> {
    (0..count)
        .map(|i| {
            let v = (node * 1000 + i + round) as f64;
            match i % 20 {
                0..=11 => (
                    format!("cardano.node.metrics.Area{}.gaugeValue{i}_int", i % 7),
                    MetricValue::Gauge(v),
                ),
                12..=15 => (
                    format!("cardano.node.metrics.Area{}.served{i}_counter", i % 7),
                    MetricValue::Counter(v as i64),
                ),
                16..=18 => (
                    format!("cardano.node.metrics.Area{}.ratio{i}_real", i % 7),
                    MetricValue::Label(format!("{}", v / 7.0)),
                ),
                _ => (
                    format!("cardano.node.metrics.build{i}"),
                    MetricValue::Label(format!("{{version=\"10.{i}\",commit=\"abc{node}\"}} 1")),
                ),
            }
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let nodes_n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let metrics_n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let nodes = Nodes::default();
    let leases: Vec<_> = (0..nodes_n)
        .map(|n| {
            let lease = nodes.claim(&format!("relay-{n:04}"), "127.0.0.1:1", "native");
            lease.apply_metrics(MetricsUpdate {
                full: true,
                metrics: metrics(n, metrics_n, 0),
            });
            lease
        })
        .collect();
    let fleet = FleetRenderer::default();
    let telemetry = Telemetry::new();
    let views = nodes.views();
    let mut round = 0;
    for format in [Format::OpenMetrics, Format::Text] {
        for changed in [false, true] {
            let mut times = Vec::new();
            let mut size = 0;
            let samples = if changed { 50 } else { 200 };
            for _ in 0..samples {
                if changed {
                    round += 1;
                    for (n, lease) in leases.iter().enumerate() {
                        lease.apply_metrics(MetricsUpdate {
                            full: true,
                            metrics: metrics(n, metrics_n, round),
                        });
                    }
                }
                let t = Instant::now();
                let body = fleet.render_all(&telemetry, &views, format);
                times.push(t.elapsed());
                size = body.len();
            }
            times.sort();
            println!(
                "/metrics {format:?}{}: {} nodes x {} metrics = {} series, {:.1} MiB: p50 {:.1} ms, p99 {:.1} ms",
                if changed { " (every node changed)" } else { "" },
                nodes_n,
                metrics_n,
                nodes_n * metrics_n,
                size as f64 / (1 << 20) as f64,
                percentile(&times, 0.5).as_secs_f64() * 1e3,
                percentile(&times, 0.99).as_secs_f64() * 1e3,
            );
        }
        let mut times = Vec::new();
        for i in 0..2000 {
            let view = &views[i % views.len()];
            let t = Instant::now();
            let (body, _) = render_node(view, format, nodes.naming(), 0);
            times.push(t.elapsed());
            std::hint::black_box(body);
        }
        times.sort();
        println!(
            "/<slug> {format:?}: {} metrics: p50 {:.3} ms, p99 {:.3} ms",
            metrics_n,
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
        );
    }
    drop(leases);
}
