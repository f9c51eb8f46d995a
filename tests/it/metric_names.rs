//! Drop-in metric names: what a Prometheus server stores when it scrapes tracerd is what it
//! stores scraping cardano-tracer (same series names, same label sets), and the OpenMetrics
//! output passes a strict parser (Python's `prometheus_client.openmetrics.parser`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tracerd::model::{MetricValue, MetricsUpdate};
use tracerd::native::NodeMessage;

use crate::http::{http_get, start_prometheus, wait_for};
use crate::support::*;

/// One stored series: its name and its label set.
type Series = (String, BTreeMap<String, String>);

/// Metrics as a cardano-node forwards them (names from cardano-node's EKG store: the
/// `cardano.node.metrics.` prefix and `_int`/`_counter`/`_real` suffixes of trace-dispatcher's
/// `ekgTracer`, unprefixed `rts.gc.*` from ekg-core, a `PrometheusM` label set).
fn cardano_node_metrics() -> Vec<(String, MetricValue)> {
    [
        (
            "cardano.node.metrics.served.block_counter",
            MetricValue::Counter(12),
        ),
        ("rts.gc.gc_cpu_ms", MetricValue::Counter(50)),
        ("rts.gc.max_bytes_used", MetricValue::Gauge(4_400_000.0)),
        (
            "cardano.node.metrics.Mem.resident_int",
            MetricValue::Gauge(103_792_640.0),
        ),
        (
            "cardano.node.metrics.density_real",
            MetricValue::Label("4.9e-2".into()),
        ),
        (
            "cardano.node.metrics.peerSelection.warm-peers_int",
            MetricValue::Gauge(7.0),
        ),
        (
            "cardano.node.metrics.cardano_build_info",
            MetricValue::Label("{version=\"10.5.1\",revision=\"0a21a74\"} 1".into()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// cardano-tracer's series for one metric, derived from its rendering rules
/// (trace-dispatcher 2.12 `Cardano.Logging.Prometheus.Exposition.renderExpositionFromSampleWith`,
/// quoted in /work/scratch/upstream/NOTES.md §a): `prepareName` maps `.`, `-` and space to `_`
/// and deletes everything outside `[A-Za-z0-9_]`; without `metricsNoSuffix` nothing is
/// stripped; no `_total` is ever added; a label whose text starts with `{` is written as the
/// name directly followed by that text, so its labels are the series' labels.
fn upstream_series(name: &str, value: &MetricValue) -> Series {
    let prom: String = name
        .chars()
        .map(|c| if matches!(c, '.' | '-' | ' ') { '_' } else { c })
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let labels = match value {
        MetricValue::Label(text) if text.starts_with('{') => parse_labels(&text[1..]).0,
        _ => BTreeMap::new(),
    };
    (prom, labels)
}

/// Everything cardano-tracer's node page holds: the node's metrics plus its own
/// `ekg.server_timestamp_ms` counter (`Acceptors/Utils.hs` registers it in every node store).
fn upstream_expectation() -> BTreeSet<Series> {
    let mut all: BTreeSet<Series> = cardano_node_metrics()
        .iter()
        .map(|(k, v)| upstream_series(k, v))
        .collect();
    all.insert(upstream_series(
        "ekg.server_timestamp_ms",
        &MetricValue::Counter(0),
    ));
    all
}

/// Parses `k="v",...}` (after the `{`); returns the labels and the rest after `}`.
fn parse_labels(mut s: &str) -> (BTreeMap<String, String>, &str) {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches(',');
        if let Some(rest) = s.strip_prefix('}') {
            return (labels, rest);
        }
        let (key, rest) = s.split_once("=\"").expect("label");
        let end = rest.find('"').expect("closing quote");
        labels.insert(key.to_string(), rest[..end].to_string());
        s = &rest[end + 1..];
    }
}

/// The series of an exposition (sample lines only).
fn exposed_series(text: &str) -> BTreeSet<Series> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let end = l.find(['{', ' ']).expect("sample line");
            let labels = match l[end..].strip_prefix('{') {
                Some(rest) => parse_labels(rest).0,
                None => BTreeMap::new(),
            };
            (l[..end].to_string(), labels)
        })
        .collect()
}

/// Runs Python's strict OpenMetrics parser over `text`: `Err` with its message when it rejects
/// it. Panics, with the install command, when `prometheus_client` is missing.
pub fn openmetrics_strict(text: &str) -> Result<(), String> {
    let script = "import sys\n\
        try:\n    from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
        except ImportError:\n    sys.exit(17)\n\
        try:\n    list(text_string_to_metric_families(sys.stdin.read()))\n\
        except Exception as e:\n    print(e)\n    sys.exit(1)\n";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 must be installed for the OpenMetrics strict-parser tests");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    match out.status.code() {
        Some(0) => Ok(()),
        Some(17) => panic!(
            "Python's prometheus_client is missing: run `pip install prometheus-client` \
             (.ci/run installs it)"
        ),
        _ => Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

fn start() -> (Daemon, u16) {
    let prom = free_port();
    let d = Daemon::start(&format!(
        "hasPrometheus: {{epHost: 127.0.0.1, epPort: {prom}}}\n"
    ));
    (d, prom)
}

fn update(metrics: Vec<(String, MetricValue)>) -> NodeMessage {
    NodeMessage::Metrics(MetricsUpdate {
        full: true,
        metrics,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_pages_carry_cardano_tracers_series_names_and_labels() {
    let (d, prom) = start();
    let mut node = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay_1").await;
    node.framed
        .send(update(cardano_node_metrics()))
        .await
        .unwrap();
    let (text, om, all) = tokio::task::spawn_blocking(move || {
        wait_for(prom, "/relay-1", |b| b.contains("cardano_build_info"));
        (
            http_get(prom, "/relay-1", &[("Accept", "text/plain")]),
            http_get(
                prom,
                "/relay-1",
                &[("Accept", "application/openmetrics-text;version=1.0.0")],
            ),
            http_get(prom, "/metrics", &[]),
        )
    })
    .await
    .unwrap();
    let expected = upstream_expectation();
    assert_eq!(text.1, "text/plain;version=0.0.4;charset=utf-8");
    assert_eq!(exposed_series(&text.2), expected, "text 0.0.4:\n{}", text.2);
    assert_eq!(exposed_series(&om.2), expected, "OpenMetrics:\n{}", om.2);
    assert!(
        text.2
            .contains("cardano_node_metrics_served_block_counter 12\n"),
        "{}",
        text.2
    );
    assert!(
        text.2.contains("# TYPE rts_gc_gc_cpu_ms counter\n"),
        "{}",
        text.2
    );
    openmetrics_strict(&om.2).unwrap_or_else(|e| panic!("/relay-1 rejected: {e}\n{}", om.2));
    openmetrics_strict(&all.2).unwrap_or_else(|e| panic!("/metrics rejected: {e}\n{}", all.2));
    // /metrics carries the same names, labelled with the node.
    assert!(all
        .2
        .contains("cardano_node_metrics_served_block_counter{node_name=\"relay_1\"} 12\n"));
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openmetrics_names_are_an_opt_in() {
    let prom = free_port();
    let d = Daemon::start(&format!(
        // Continues the `tracerd:` section the test config ends with.
        "  openMetricsNames: true\nhasPrometheus: {{epHost: 127.0.0.1, epPort: {prom}}}\n"
    ));
    let mut node = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay_1").await;
    node.framed
        .send(update(cardano_node_metrics()))
        .await
        .unwrap();
    let om = tokio::task::spawn_blocking(move || {
        wait_for(prom, "/relay-1", |b| b.contains("cardano_build_info"));
        http_get(prom, "/relay-1", &[]).2
    })
    .await
    .unwrap();
    assert!(om.contains("rts_gc_gc_cpu_ms_total 50\n"), "{om}");
    assert!(om.contains("# TYPE rts_gc_gc_cpu_ms counter\n"), "{om}");
    openmetrics_strict(&om).unwrap_or_else(|e| panic!("rejected: {e}\n{om}"));
    drop(node);
}

/// The series names and label sets a real Prometheus (default `Accept` header: OpenMetrics
/// first) stores for one tracerd target, less the labels it adds itself (`job`, `instance`)
/// and the target labels of `/targets` (`node_name`).
fn stored_series(port: u16) -> BTreeSet<Series> {
    let (status, _, body) = http_get(
        port,
        "/api/v1/series?match%5B%5D=%7Bjob%3D%22tracerd%22%7D",
        &[],
    );
    if status != 200 {
        return BTreeSet::new();
    }
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let map = s.as_object()?;
            let name = map.get("__name__")?.as_str()?.to_string();
            if name == "up" || name.starts_with("scrape_") {
                return None;
            }
            let labels = map
                .iter()
                .filter(|(k, _)| {
                    !["__name__", "job", "instance", "node_name"].contains(&k.as_str())
                })
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect();
            Some((name, labels))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_stores_cardano_tracers_series() {
    let (d, prom) = start();
    let Some(server) = start_prometheus(prom) else {
        panic!("prometheus is not installed: apt-get install prometheus (.ci/run installs it)");
    };
    let mut node = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay_1").await;
    node.framed
        .send(update(cardano_node_metrics()))
        .await
        .unwrap();
    let expected = upstream_expectation();
    let stored = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let stored = if std::net::TcpStream::connect(("127.0.0.1", server.port)).is_ok() {
                stored_series(server.port)
            } else {
                BTreeSet::new()
            };
            if stored.len() >= expected.len() || Instant::now() > deadline {
                return stored;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    })
    .await
    .unwrap();
    assert_eq!(stored, upstream_expectation());
    drop(node);
}

/// A counter value of tracerd's own `/metrics` output, 0 when absent.
fn own_counter(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Issue 12 point 13: a node sending metrics a strict OpenMetrics parser rejects (a negative
/// counter, a gauge `c_created` beside a counter `c`, a gauge clashing with tracerd's own
/// counter family, clashing label names) loses only those metrics, each counted; `/metrics`
/// and the node's page stay valid, and two nodes streaming traces meanwhile lose nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_invalid_metrics_are_dropped_alone_and_counted() {
    const TOTAL: u64 = 300;
    let (d, prom) = start();
    let streams: Vec<_> = ["good-a", "good-b"]
        .iter()
        .map(|n| {
            tokio::spawn(crate::hostile_logs::stream(
                n.to_string(),
                d.tcp_port,
                TOTAL,
                false,
            ))
        })
        .collect();
    let mut hostile = FakeNode::handshake(connect_tcp(d.tcp_port).await, "hostile").await;
    hostile
        .framed
        .send(update(vec![
            ("neg_total".into(), MetricValue::Counter(-5)),
            ("c_total".into(), MetricValue::Counter(1)),
            ("c_created".into(), MetricValue::Gauge(2.0)),
            (
                "tracerd_connections_accepted_created".into(),
                MetricValue::Gauge(1.0),
            ),
            (
                "set".into(),
                MetricValue::Label("{node_name=\"x\",exported_node_name=\"y\"} 1".into()),
            ),
            ("kept".into(), MetricValue::Gauge(7.0)),
        ]))
        .await
        .unwrap();
    let (page, all) = tokio::task::spawn_blocking(move || {
        wait_for(prom, "/hostile", |b| b.contains("kept"));
        let page = http_get(prom, "/hostile", &[]).2;
        let all = http_get(prom, "/metrics", &[]).2;
        (page, all)
    })
    .await
    .unwrap();
    openmetrics_strict(&page).unwrap_or_else(|e| panic!("/hostile rejected: {e}\n{page}"));
    openmetrics_strict(&all).unwrap_or_else(|e| panic!("/metrics rejected: {e}\n{all}"));
    assert!(
        page.contains("kept 7\n") && page.contains("c_total 1\n"),
        "{page}"
    );
    assert!(
        !page.contains("neg_total -5") && !page.contains("c_created 2"),
        "{page}"
    );
    assert!(all.contains("kept{node_name=\"hostile\"} 7\n"), "{all}");
    for bad in [
        "neg_total{",
        "c_created{",
        "exported_node_name",
        "accepted_created{",
    ] {
        assert!(!all.contains(bad), "{bad} in\n{all}");
    }
    // /hostile dropped 1 invalid + 1 clash; /metrics 2 invalid + 2 clashes.
    assert!(
        own_counter(&all, "tracerd_metric_samples_invalid_total") >= 1.0,
        "{all}"
    );
    assert!(
        own_counter(&all, "tracerd_metric_name_collisions_total") >= 1.0,
        "{all}"
    );
    for s in streams {
        assert_eq!(s.await.unwrap(), TOTAL);
    }
    for n in ["good-a", "good-b"] {
        let seqs = crate::hostile_logs::machine_seqs(&d.logs().join(n));
        assert_eq!(seqs, (1..=TOTAL).collect::<Vec<_>>(), "{n}");
    }
    drop(hostile);
}

/// Issue 11 point 9: labelled self-metric families show their known label values at 0
/// before the first event, so a dashboard panel says 0, not "No data".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_self_metrics_start_at_zero() {
    let (_d, prom) = start();
    let body = tokio::task::spawn_blocking(move || {
        wait_for(prom, "/metrics", |b| b.contains("tracerd_"));
        http_get(prom, "/metrics", &[("Accept", "text/plain")]).2
    })
    .await
    .unwrap();
    for line in [
        "tracerd_connections_refused_total{reason=\"connection_limit\"} 0",
        "tracerd_connections_refused_total{reason=\"wrong_magic\"} 0",
        "tracerd_decode_errors_total{reason=\"frame_too_large\"} 0",
        "tracerd_decode_errors_total{reason=\"malformed_protobuf\"} 0",
        "tracerd_config_reloads_total{result=\"applied\"} 0",
        "tracerd_config_reloads_total{result=\"rejected\"} 0",
        "tracerd_connections_accepted_total{protocol=\"cardano\"} 0",
        "tracerd_trace_objects_dropped_total{reason=\"write_error\"} 0",
    ] {
        assert!(body.lines().any(|l| l == line), "no `{line}` in\n{body}");
    }
}
