//! The metric history against a real Prometheus 2.42 (issue 13, "Done means"): two nodes
//! stream metrics and traces into one tracerd; Debian's `prometheus` scrapes that tracerd's
//! `/metrics` every 250 ms meanwhile; the same instant and range queries asked of both
//! return the same series with values equal within what the scrape timing explains.
//!
//! Tolerances, each derived from the timing and measured from Prometheus's own samples
//! (`gap`: the longest interval between two of its scrapes; `u`: the nodes' update period):
//!
//! * After the nodes stopped (queries at `T`, ≥ 1 s after the last update, when both have
//!   the final values): instant selectors, `sum by (node_name)`, `max_over_time` and
//!   `histogram_quantile` over the classic buckets of `tracerd_write_batch_seconds` are
//!   exact (1e-9 relative): both hold the same final values.
//! * `rate(counter[1m])` over a counter that grew for `D` seconds: each system extrapolates
//!   the sampled interval by at most one sample interval at either end, and Prometheus's first
//!   sample can lag the series' start by `gap`, so the two rates differ by at most
//!   `increase / 60 × 2 (gap + u) / D`.
//! * A range query over the streaming period: at each step, Prometheus's value is the node's
//!   value as of its last scrape (up to `gap` old, itself up to `u` old), the history's as of
//!   the node's last update (up to `u` old): for a gauge of slope `k`, `|Δ| ≤ k (gap + u)`.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::Value;
use tracerd::model::{MetricValue, MetricsUpdate};
use tracerd::native::NodeMessage;

use crate::history::{instant, now_secs, range};
use crate::http::http_get;
use crate::support::*;

/// Debian's Prometheus scraping `/metrics` on `target` every 250 ms; killed on drop.
struct Prometheus {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(target: u16) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 250ms, scrape_timeout: 250ms}}\n\
                 scrape_configs:\n\
                 \x20 - job_name: tracerd\n\
                 \x20   static_configs: [{{targets: ['127.0.0.1:{target}']}}]\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run prometheus ({e}): apt-get install prometheus (.ci/run installs it)"
                )
            });
        Prometheus { child, port, dir }
    }

    /// Waits (bounded) until Prometheus has scraped tracerd successfully.
    fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                let (status, _, body) = http_get(self.port, "/api/v1/query?query=up", &[]);
                if status == 200 && body.contains("\"value\":[") && body.contains("\"1\"]") {
                    return;
                }
            }
            let log =
                std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "Prometheus never scraped tracerd:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A result's series by their labels, less the target labels Prometheus adds (`job`,
/// `instance`: the history has no scrape target), with their values (instant) or points.
fn by_labels(result: &[Value]) -> BTreeMap<String, Vec<(f64, f64)>> {
    let point = |p: &Value| {
        (
            p[0].as_f64().unwrap(),
            p[1].as_str().unwrap().parse::<f64>().unwrap(),
        )
    };
    result
        .iter()
        .map(|s| {
            let mut m = s["metric"].as_object().unwrap().clone();
            m.remove("job");
            m.remove("instance");
            let points = match s.get("values") {
                Some(vs) => vs.as_array().unwrap().iter().map(point).collect(),
                None => vec![point(&s["value"])],
            };
            (Value::Object(m).to_string(), points)
        })
        .collect()
}

/// Asks both the same instant query at `t`; asserts the same series and values within `tol`
/// (absolute, per series, given its value); returns both for further checks.
fn same_instant(
    prom: u16,
    hist: u16,
    query: &str,
    t: f64,
    tol: impl Fn(f64) -> f64,
) -> BTreeMap<String, Vec<(f64, f64)>> {
    let p = by_labels(&instant(prom, query, Some(t)));
    let h = by_labels(&instant(hist, query, Some(t)));
    assert!(!p.is_empty(), "{query}: Prometheus returned nothing");
    assert_eq!(
        p.keys().collect::<Vec<_>>(),
        h.keys().collect::<Vec<_>>(),
        "{query}: series differ"
    );
    for (k, pv) in &p {
        let (pv, hv) = (pv[0].1, h[k][0].1);
        eprintln!(
            "{query} {k}: Prometheus {pv}, history {hv}, tolerance {}",
            tol(pv)
        );
        assert!(
            (pv - hv).abs() <= tol(pv),
            "{query} {k}: Prometheus {pv}, history {hv}, tolerance {}",
            tol(pv)
        );
    }
    h
}

/// The newest sample time of `query` (a vector) as of `at`, or 0.
fn newest(port: u16, query: &str, at: f64) -> f64 {
    instant(port, &format!("max(timestamp({query}))"), Some(at))
        .first()
        .map_or(0.0, |s| s["value"][1].as_str().unwrap().parse().unwrap())
}

/// Waits (bounded) until both Prometheus's last scrape and the history's last sample of
/// tracerd's own series are at or after `after`; returns a time just past both.
fn settled_time(prom: u16, hist: u16, after: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = now_secs();
        let scraped = newest(prom, "up", now);
        let sampled = newest(hist, "tracerd_nodes_connected", now);
        if scraped >= after && sampled >= after {
            // A moment later, so both have that sample within their lookback at `t`.
            let t = scraped.max(sampled) + 0.05;
            // A scrape that timed out (250 ms, on a loaded machine) records `up` 0 and marks
            // every series stale: compare only at a `t` whose last scrape succeeded, asked
            // once every scrape begun by `t` has ended.
            std::thread::sleep(Duration::from_secs_f64((t + 0.35 - now_secs()).max(0.1)));
            let up = instant(prom, "min(up)", Some(t));
            if up.first().is_some_and(|s| s["value"][1] == "1") {
                return t;
            }
            eprintln!("the scrape before {t} failed; waiting for the next");
        }
        assert!(
            Instant::now() < deadline,
            "no scrape ({scraped}) or sample ({sampled}) after {after}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn exact(v: f64) -> f64 {
    v.abs() * 1e-9
}

fn update(i: i64, base: f64, counter: i64) -> NodeMessage {
    NodeMessage::Metrics(MetricsUpdate {
        full: i == 0,
        metrics: vec![
            (
                "cardano.node.metrics.served_counter".into(),
                MetricValue::Counter(counter),
            ),
            (
                "cardano.node.metrics.Mem.resident_int".into(),
                MetricValue::Gauge(base + GAUGE_SLOPE * UPDATE_SECS * i as f64),
            ),
        ],
    })
}

/// The nodes' update period, seconds (`u`).
const UPDATE_SECS: f64 = 0.1;
/// Updates per node.
const UPDATES: i64 = 30;
/// The gauge's growth per second.
const GAUGE_SLOPE: f64 = 10.0;
/// The counter's growth per update.
const COUNTER_STEP: i64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_a_real_prometheus_answer_the_same_queries() {
    let prom_port = free_port();
    let (d, hist) = crate::history::start_with_history(
        0.25,
        &format!("hasPrometheus: {{epHost: 127.0.0.1, epPort: {prom_port}}}\n"),
    );
    let prom = Prometheus::start(prom_port);
    let prom = tokio::task::spawn_blocking(move || {
        prom.wait_up();
        prom
    })
    .await
    .unwrap();
    let mut a = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay-a").await;
    let mut b = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay-b").await;
    let started = now_secs();
    let mut seq = 1;
    for i in 0..UPDATES {
        a.framed
            .send(update(i, 1000.0, COUNTER_STEP * i))
            .await
            .unwrap();
        b.framed
            .send(update(i, 5000.0, 2 * COUNTER_STEP * i))
            .await
            .unwrap();
        if i % 2 == 0 {
            // Trace batches, so tracerd_write_batch_seconds fills its buckets.
            a.send_batch(seq, 5, 64).await;
            b.send_batch(seq, 5, 64).await;
            seq += 5;
        }
        tokio::time::sleep(Duration::from_secs_f64(UPDATE_SECS)).await;
    }
    a.wait_ack(seq - 1).await;
    b.wait_ack(seq - 1).await;
    let stopped = now_secs();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let p = prom.port;
    tokio::task::spawn_blocking(move || {
        // `t`: a time by which both hold the final values — Prometheus has scraped, and the
        // history sampled tracerd's own series, at least 0.5 s after the last update (on a
        // loaded machine a scrape can come late: wait for it, bounded).
        let t = settled_time(p, hist, stopped + 0.5);
        // Prometheus's scrape gaps, from its own samples of `up`.
        let raw = instant(p, "up[1m]", Some(t));
        let ts: Vec<f64> = raw[0]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v[0].as_f64().unwrap())
            .collect();
        let gap = ts.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
        eprintln!(
            "Prometheus scrape gap: max {gap:.3} s over {} scrapes",
            ts.len()
        );

        let gauge = "cardano_node_metrics_Mem_resident_int";
        let last = GAUGE_SLOPE * UPDATE_SECS * (UPDATES - 1) as f64;
        let h = same_instant(p, hist, gauge, t, exact);
        assert_eq!(h.len(), 2);
        assert!(h.values().any(|v| v[0].1 == 1000.0 + last), "{h:?}");
        let h = same_instant(p, hist, &format!("sum by (node_name) ({gauge})"), t, exact);
        assert_eq!(h.len(), 2);
        same_instant(p, hist, &format!("max_over_time({gauge}[1m])"), t, exact);
        let q = "histogram_quantile(0.9, sum by (le) (tracerd_write_batch_seconds_bucket))";
        let h = same_instant(p, hist, q, t, exact);
        assert!(h.values().all(|v| v[0].1 > 0.0), "{h:?}");
        let q = "histogram_quantile(0.5, tracerd_write_batch_seconds_bucket)";
        same_instant(p, hist, q, t, exact);

        // rate over [1m]: within what the two systems' sample timing explains.
        let d_secs = UPDATE_SECS * (UPDATES - 1) as f64;
        let rate_tol = |v: f64| {
            // v ≈ increase / 60; the extrapolations differ by 2 (gap + u) of D seconds.
            v * 2.0 * (gap + UPDATE_SECS) / d_secs + 1e-9
        };
        let h = same_instant(
            p,
            hist,
            "rate(cardano_node_metrics_served_counter[1m])",
            t,
            rate_tol,
        );
        let increase_a = (COUNTER_STEP * (UPDATES - 1)) as f64;
        let ra = h
            .iter()
            .find(|(k, _)| k.contains("relay-a"))
            .map(|(_, v)| v[0].1)
            .unwrap();
        assert!(
            (ra - increase_a / 60.0).abs() <= rate_tol(increase_a / 60.0) * 2.0,
            "history rate {ra} vs increase {increase_a} / 60"
        );

        // Metadata: the same type and help for every family both know.
        let (_, pm) = crate::history::get_json(p, "/api/v1/metadata");
        let (_, hm) = crate::history::get_json(hist, "/api/v1/metadata");
        let mut both = 0;
        for (name, pv) in pm["data"].as_object().unwrap() {
            if let Some(hv) = hm["data"].get(name) {
                both += 1;
                assert_eq!(pv[0]["type"], hv[0]["type"], "{name}");
                assert_eq!(pv[0]["help"], hv[0]["help"], "{name}");
            }
        }
        for name in [
            "cardano_node_metrics_served_counter",
            "cardano_node_metrics_Mem_resident_int",
            "tracerd_write_batch_seconds",
            "tracerd_connections_accepted",
        ] {
            assert!(
                pm["data"].get(name).is_some() && hm["data"].get(name).is_some(),
                "{name}"
            );
        }
        eprintln!("metadata: {both} families compared");

        // A range query across the streaming period and after.
        let start = (started + 0.5).floor();
        let step = 0.25;
        let q = format!("{gauge}{{node_name=\"relay-a\"}}");
        let pr = by_labels(&range(p, &q, start, t, step));
        let hr = by_labels(&range(hist, &q, start, t, step));
        assert_eq!(pr.keys().collect::<Vec<_>>(), hr.keys().collect::<Vec<_>>());
        let (pp, hp) = (pr.values().next().unwrap(), hr.values().next().unwrap());
        let hmap: BTreeMap<i64, f64> = hp.iter().map(|(t, v)| ((t * 1000.0) as i64, *v)).collect();
        let tol = GAUGE_SLOPE * (gap + UPDATE_SECS) + 1e-9;
        let mut compared = 0;
        for (pt, pv) in pp {
            let Some(hv) = hmap.get(&((pt * 1000.0) as i64)) else {
                // Prometheus's series starts one scrape later at most.
                continue;
            };
            compared += 1;
            let tol = if *pt > stopped + gap + 0.1 { 1e-9 } else { tol };
            assert!(
                (pv - hv).abs() <= tol,
                "{q} at {pt}: Prometheus {pv}, history {hv}, tolerance {tol}"
            );
        }
        assert!(
            compared + 2 >= hp.len() && compared >= 10,
            "{compared} of {}",
            hp.len()
        );
    })
    .await
    .unwrap();
    drop((a, b, prom));
}
