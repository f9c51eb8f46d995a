//! Alerting benchmark (issue 15, point 3): the CPU one evaluation of the shipped rules
//! (`config/alerts/nodes.yml`, `tracerd.yml` and `traces.tracerd.yaml`) costs with 1,000
//! nodes' series in the metric history. Loads `nodes` nodes × `metrics` node metrics (plus
//! the `tracerd_node_*` series the history samples for each node, a KES metric for one node
//! in ten, and tracerd's own series) over the last two hours at the history's 15 s period,
//! claims the nodes in a registry (the lifecycle rules read it), then evaluates every group
//! once per round, as the timers do, and prints the thread CPU time of a round (median, p99,
//! max) and of each group. Run from the repository root:
//!
//! `cargo run --release --example alerts_bench [nodes] [metrics] [rounds]` (defaults 1000, 100, 200).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracerd::alerts::{evaluate_group, Alerts, AlertsMetrics, Sources};
use tracerd::config::AlertsSettings;
use tracerd::node::{Nodes, TraceObserver};
use tracerd_promql::Labels;
use tracerd_tsdb::Store;

const STEP_MS: i64 = 15_000;
const SPAN_MS: i64 = 2 * 3600 * 1000;

/// CPU time of this thread.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn labels(name: &str, pairs: &[(&str, &str)]) -> Labels {
    let mut l: Labels = vec![("__name__".to_string(), name.to_string())];
    l.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    l.sort();
    l
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let nodes_n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let metrics_n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);

    let settings = AlertsSettings {
        rule_files: vec![
            PathBuf::from("config/alerts/nodes.yml"),
            PathBuf::from("config/alerts/tracerd.yml"),
        ],
        trace_rule_files: vec![PathBuf::from("config/alerts/traces.tracerd.yaml")],
        ..AlertsSettings::default()
    };
    let metrics = AlertsMetrics::register(&prometheus::Registry::new());
    let alerts = Alerts::load(&settings, metrics.clone())
        .unwrap_or_else(|e| panic!("run from the repository root: {e}"));
    let rules: usize = alerts.groups.iter().map(|g| g.group.rules.len()).sum();

    // The history: every series sampled every 15 s for two hours, ending now.
    let store = Arc::new(Store::new(tracerd_tsdb::Config {
        max_bytes: usize::MAX,
        max_series: usize::MAX,
        ..tracerd_tsdb::Config::default()
    }));
    let end = tracerd::history::now_ms();
    let start = end - SPAN_MS;
    let loading = Instant::now();
    let mut series = 0usize;
    let names: Vec<String> = (0..nodes_n).map(|n| format!("relay-{n:04}")).collect();
    for (n, node) in names.iter().enumerate() {
        let nl = [("node_name", node.as_str())];
        // Ten nodes left ten minutes ago (NodeDisconnected fires for them).
        let gone = n % 100 == 99;
        let last = if gone { end - 600_000 } else { end };
        let mut put = |l: &Labels, f: &dyn Fn(i64) -> f64| {
            let r = store.series(l).unwrap();
            let mut t = start;
            while t <= last {
                store.append_ref(r, t, f(t)).unwrap();
                t += STEP_MS;
            }
            series += 1;
        };
        put(
            &labels("tracerd_node_last_message_timestamp_seconds", &nl),
            &|t| (t / 1000) as f64,
        );
        put(&labels("tracerd_node_metrics", &nl), &|_| metrics_n as f64);
        put(&labels("tracerd_node_write_queue_batches", &nl), &|t| {
            ((t / STEP_MS) % 3) as f64
        });
        if n % 10 == 0 {
            put(
                &labels("cardano_node_metrics_remainingKESPeriods_int", &nl),
                &|_| 40.0,
            );
        }
        for i in 0..metrics_n {
            let name = match i % 4 {
                0 | 1 => format!("cardano_node_metrics_Area{}_gaugeValue{i}_int", i % 7),
                2 => format!("cardano_node_metrics_Area{}_served{i}_counter", i % 7),
                _ => format!("cardano_node_metrics_Area{}_ratio{i}_real", i % 7),
            };
            put(&labels(&name, &nl), &|t| (t / STEP_MS + i as i64) as f64);
        }
    }
    // tracerd's own series the tracerd.yml rules read.
    let own: Vec<Labels> = vec![
        labels("tracerd_log_writers_blocked", &[]),
        labels("tracerd_log_write_errors_total", &[]),
        labels(
            "tracerd_trace_objects_dropped_total",
            &[("reason", "duplicate")],
        ),
        labels(
            "tracerd_trace_objects_dropped_total",
            &[("reason", "write_error")],
        ),
        labels(
            "tracerd_alerts_errors_total",
            &[("alertmanager", "http://127.0.0.1:9093")],
        ),
        labels(
            "tracerd_log_root_avail_bytes",
            &[("log_root", "/var/log/tracerd")],
        ),
        labels(
            "tracerd_log_root_size_bytes",
            &[("log_root", "/var/log/tracerd")],
        ),
        labels(
            "tracerd_log_root_inodes_free",
            &[("log_root", "/var/log/tracerd")],
        ),
        labels(
            "tracerd_log_root_inodes",
            &[("log_root", "/var/log/tracerd")],
        ),
    ];
    for l in &own {
        let mut t = start;
        while t <= end {
            store.append(l, t, 1e9).unwrap();
            t += STEP_MS;
        }
        series += 1;
    }
    let loaded = loading.elapsed();

    // The registry the lifecycle rules read, the trace rules' per-node facts.
    let nodes = Nodes::default();
    let _leases: Vec<_> = names
        .iter()
        .map(|n| {
            let _ = alerts.traces.open(n);
            nodes.claim(n, "127.0.0.1:1", "native")
        })
        .collect();
    let src = Sources {
        store: Some(store.clone()),
        traces: alerts.traces.clone(),
        nodes,
    };

    let mut total = Vec::with_capacity(rounds);
    let mut per_group = vec![Vec::with_capacity(rounds); alerts.groups.len()];
    let mut sent = 0;
    for round in 0..rounds {
        // Each round a little later (the ALERTS series is appended at each evaluation).
        let now = end + round as i64;
        let cpu = thread_cpu();
        for (g, times) in alerts.groups.iter().zip(per_group.iter_mut()) {
            let before = thread_cpu();
            sent += evaluate_group(&src, g, now, 0, &metrics).len();
            times.push(thread_cpu() - before);
        }
        total.push(thread_cpu() - cpu);
    }
    assert_eq!(
        metrics.evaluation_failures.get(),
        0,
        "a shipped rule failed to evaluate"
    );
    let stats = store.stats();
    println!(
        "{nodes_n} nodes, {series} series, {} samples loaded in {:.1} s ({} MiB of chunks); \
         {} groups, {rules} rules; {rounds} rounds; {} alerts sent in the last round",
        stats.samples,
        loaded.as_secs_f64(),
        stats.bytes >> 20,
        alerts.groups.len(),
        sent / rounds,
    );
    total.sort();
    println!(
        "one evaluation of every shipped rule: CPU median {}, p99 {}, max {}",
        ms(percentile(&total, 0.5)),
        ms(percentile(&total, 0.99)),
        ms(*total.last().unwrap()),
    );
    for (g, mut times) in alerts.groups.iter().zip(per_group) {
        times.sort();
        println!(
            "  group {} ({} rules, every {} ms): CPU median {}, p99 {}",
            g.group.name,
            g.group.rules.len(),
            g.group.interval_ms,
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99)),
        );
    }
}
