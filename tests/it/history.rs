//! The metric history end to end (issue 13): nodes stream metrics into the real tracerd,
//! Prometheus's query API on the `hasTimeseries` port answers with their values under the
//! same names and labels as `/metrics`, and a node that leaves stops being returned.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::Value;
use tracerd::model::{MetricValue, MetricsUpdate};
use tracerd::native::NodeMessage;

use crate::http::http_get;
use crate::support::*;

/// Percent-encodes a query parameter.
pub fn enc(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET path` on `port`, parsed as JSON: (status, body).
pub fn get_json(port: u16, path: &str) -> (u16, Value) {
    let (status, _, body) = http_get(port, path, &[]);
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, v)
}

/// An instant query's result list (asserting success).
pub fn instant(port: u16, query: &str, time: Option<f64>) -> Vec<Value> {
    let mut path = format!("/api/v1/query?query={}", enc(query));
    if let Some(t) = time {
        path.push_str(&format!("&time={t:.3}"));
    }
    let (status, v) = get_json(port, &path);
    assert_eq!(
        (status, &v["status"]),
        (200, &Value::from("success")),
        "{query}: {v}"
    );
    v["data"]["result"].as_array().unwrap().clone()
}

/// A range query's result list (asserting success).
pub fn range(port: u16, query: &str, start: f64, end: f64, step: f64) -> Vec<Value> {
    let path = format!(
        "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={step}",
        enc(query)
    );
    let (status, v) = get_json(port, &path);
    assert_eq!(
        (status, &v["status"]),
        (200, &Value::from("success")),
        "{query}: {v}"
    );
    v["data"]["result"].as_array().unwrap().clone()
}

/// The value of a vector element whose `node_name` is `node`.
pub fn value_of(result: &[Value], node: &str) -> Option<f64> {
    result
        .iter()
        .find(|s| s["metric"]["node_name"] == node)
        .map(|s| s["value"][1].as_str().unwrap().parse().unwrap())
}

/// Polls until `pred` holds on an instant query's result (bounded by [`WAIT`]; 65,536 new
/// series took tracerd's debug build up to 15 s on a loaded 2-core machine).
pub fn until(port: u16, query: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = instant(port, query, None);
        if pred(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "{query}: last result {r:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A tracerd with the history on a free port, sampling every `sample` seconds.
pub fn start_with_history(sample: f64, extra: &str) -> (Daemon, u16) {
    let port = free_port();
    let d = Daemon::start(&format!(
        "  history: {{sampleIntervalSecs: {sample}}}\nhasTimeseries: {{epHost: 127.0.0.1, epPort: {port}}}\n{extra}"
    ));
    (d, port)
}

fn metrics(full: bool, m: Vec<(&str, MetricValue)>) -> NodeMessage {
    NodeMessage::Metrics(MetricsUpdate {
        full,
        metrics: m.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_answers_prometheus_queries_and_forgets_a_node_that_left() {
    let (d, port) = start_with_history(0.5, "");
    let t0 = now_secs();
    let mut a = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay-a").await;
    let mut b = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay-b").await;
    for (node, base) in [(&mut a, 0.0), (&mut b, 100.0)] {
        let first = metrics(
            true,
            vec![
                (
                    "cardano.node.metrics.served_counter",
                    MetricValue::Counter(0),
                ),
                (
                    "cardano.node.metrics.Mem.resident_int",
                    MetricValue::Gauge(base),
                ),
                (
                    "cardano.node.metrics.era",
                    MetricValue::Label("Conway".into()),
                ),
            ],
        );
        node.framed.send(first).await.unwrap();
    }
    // Deltas only: `era` is not resent, yet stays queryable (repeated as a scrape sees it).
    for i in 1..=5i64 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        for (node, base) in [(&mut a, 0.0), (&mut b, 100.0)] {
            let delta = metrics(
                false,
                vec![
                    (
                        "cardano.node.metrics.served_counter",
                        MetricValue::Counter(10 * i),
                    ),
                    (
                        "cardano.node.metrics.Mem.resident_int",
                        MetricValue::Gauge(base + i as f64),
                    ),
                ],
            );
            node.framed.send(delta).await.unwrap();
        }
    }
    let port2 = port;
    let t_both = tokio::task::spawn_blocking(move || {
        let port = port2;
        let served = until(port, "cardano_node_metrics_served_counter", |r| {
            value_of(r, "relay-a") == Some(50.0) && value_of(r, "relay-b") == Some(50.0)
        });
        assert_eq!(served.len(), 2, "{served:?}");
        let mem = until(port, "cardano_node_metrics_Mem_resident_int", |r| {
            value_of(r, "relay-b") == Some(105.0)
        });
        assert_eq!(value_of(&mem, "relay-a"), Some(5.0));
        // Both nodes' last values are stored by now: the time asked of the history below,
        // once relay-b has left (taken here, not at the end of this block, so that nothing
        // the rest of the block waits for can move it past anything relay-b's session does).
        let t_both = now_secs();
        // Same labels as /metrics: the label set's text is a label.
        let era = instant(port, "cardano_node_metrics_era", None);
        assert_eq!(era.len(), 2, "{era:?}");
        assert_eq!(era[0]["metric"]["value"], "Conway");
        let sum = instant(port, "sum(cardano_node_metrics_Mem_resident_int)", None);
        assert_eq!(sum[0]["value"][1], "110");
        // The range: every value of relay-a's counter, in order, ending at 50.
        // Past the last sample by more than a step, so the last point sees it.
        let end = now_secs() + 0.1;
        let r = range(
            port,
            "cardano_node_metrics_served_counter{node_name=\"relay-a\"}",
            t0,
            end,
            0.05,
        );
        assert_eq!(r.len(), 1, "{r:?}");
        let values: Vec<f64> = r[0]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[1].as_str().unwrap().parse().unwrap())
            .collect();
        assert!(values.windows(2).all(|w| w[0] <= w[1]), "{values:?}");
        assert_eq!(values.last(), Some(&50.0));
        for v in [10.0, 20.0, 30.0, 40.0] {
            assert!(values.contains(&v), "{v} missing from {values:?}");
        }
        // A metric sent once is repeated every sampling interval.
        std::thread::sleep(Duration::from_millis(1200));
        let repeated = instant(
            port,
            "count_over_time(cardano_node_metrics_era{node_name=\"relay-a\"}[1s])",
            None,
        );
        assert!(
            repeated[0]["value"][1]
                .as_str()
                .unwrap()
                .parse::<f64>()
                .unwrap()
                >= 1.0,
            "{repeated:?}"
        );
        // tracerd's own series, sampled.
        let own = until(port, "tracerd_nodes_connected{protocol=\"native\"}", |r| {
            r.first().is_some_and(|s| s["value"][1] == "2")
        });
        assert_eq!(own.len(), 1);
        // Metadata as a Prometheus scraping /metrics (OpenMetrics) stores it.
        let (status, meta) = get_json(port, "/api/v1/metadata");
        assert_eq!(status, 200);
        let m = &meta["data"];
        assert_eq!(
            m["cardano_node_metrics_served_counter"][0]["type"], "unknown",
            "{m}"
        );
        assert_eq!(
            m["cardano_node_metrics_Mem_resident_int"][0]["type"],
            "gauge"
        );
        assert_eq!(m["tracerd_nodes_connected"][0]["type"], "gauge");
        assert_eq!(m["tracerd_connections_accepted"][0]["type"], "counter");
        assert_eq!(m["tracerd_write_batch_seconds"][0]["type"], "histogram");
        // A bad query: Prometheus's error envelope.
        let (status, v) = get_json(port, &format!("/api/v1/query?query={}", enc("sum(")));
        assert_eq!((status, &v["errorType"]), (400, &Value::from("bad_data")));
        t_both
    })
    .await
    .unwrap();
    // relay-b leaves: its series are marked stale at once, relay-a's stay.
    drop(b);
    tokio::task::spawn_blocking(move || {
        let after = until(port, "cardano_node_metrics_Mem_resident_int", |r| {
            r.len() == 1
        });
        assert_eq!(value_of(&after, "relay-a"), Some(5.0));
        let era = instant(port, "cardano_node_metrics_era", None);
        assert_eq!(era.len(), 1, "{era:?}");
        // Before it left, it is still there (history is kept until it ages out).
        let before = instant(port, "cardano_node_metrics_Mem_resident_int", Some(t_both));
        if value_of(&before, "relay-b") != Some(105.0) {
            // Say what the history holds for relay-b around that time before failing.
            let q = "cardano_node_metrics_Mem_resident_int{node_name=\"relay-b\"}[5m]";
            let raw = instant(port, q, None);
            panic!("relay-b at {t_both:.3}: {before:?}; its samples: {raw:?}");
        }
    })
    .await
    .unwrap();
    drop(a);
}

/// Holds the machine-wide lock of the embedded defaults' fixed ports (3179, 12808, 12818),
/// so concurrent test runs (other worktrees) take turns instead of failing to bind: a
/// listener on an abstract Unix socket name, released when the test (or its process) ends.
pub struct PortsLock(#[allow(dead_code)] std::os::unix::net::UnixListener);

impl PortsLock {
    pub fn take() -> PortsLock {
        use std::os::linux::net::SocketAddrExt;
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(b"tracerd-default-ports").unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match std::os::unix::net::UnixListener::bind_addr(&addr) {
                Ok(l) => return PortsLock(l),
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "the default ports stayed locked: {e}"
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Runs the `#[ignore]`d test `inner` of this binary alone in a network namespace of its
/// own (loopback up), where the embedded defaults' fixed ports are free whatever else runs
/// on the machine; panics with its output if it fails. `false` (nothing run) where a
/// namespace cannot be made (not root, no `unshare` or `ip`): the caller then runs the test
/// here, under [`PortsLock`].
pub fn run_in_own_netns(inner: &str) -> bool {
    let probe = std::process::Command::new("unshare")
        .args(["-n", "ip", "link", "set", "lo", "up"])
        .output();
    if !matches!(&probe, Ok(o) if o.status.success()) {
        eprintln!(
            "NOTICE: {inner} runs in this network namespace under PortsLock (no namespace of \
             its own here: {probe:?})"
        );
        return false;
    }
    run_ignored_in_netns(inner, "ip link set lo up", &[]);
    true
}

/// A child process killed and reaped when dropped, also when the test panics: an example's
/// tracerd must not keep the default ports after its test failed (the next example test
/// would then talk to it).
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `config/examples/timeseries.yaml` runs as is from the repository root (a copy of the
/// layout in a temporary directory, so the repository gets no logs or sockets): it is the
/// embedded defaults plus `hasTimeseries` on 127.0.0.1:12818, and a node's metrics are
/// queryable there, also with promtool. Run in a network namespace of its own where it can
/// be, so nothing else on the machine holds those ports.
#[test]
fn the_timeseries_example_runs_as_is() {
    if !run_in_own_netns("history::inner_timeseries_example") {
        timeseries_example();
    }
}

#[test]
#[ignore = "run by the_timeseries_example_runs_as_is in a network namespace of its own"]
fn inner_timeseries_example() {
    timeseries_example();
}

fn timeseries_example() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let tracerd = env!("CARGO_BIN_EXE_tracerd");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config/examples")).unwrap();
    std::fs::copy(
        root.join("config/examples/timeseries.yaml"),
        dir.path().join("config/examples/timeseries.yaml"),
    )
    .unwrap();
    let print = |args: &[&str]| {
        let out = std::process::Command::new(tracerd)
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let defaults = print(&["print-config"]);
    let example = print(&["print-config", "-c", "config/examples/timeseries.yaml"]);
    let added = "hasTimeseries:\n  epHost: 127.0.0.1\n  epPort: 12818\n";
    assert!(example.contains(added), "{example}");
    assert_eq!(example.replace(added, ""), defaults);

    let _ports = PortsLock::take();
    let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let mut child = KillOnDrop(
        std::process::Command::new(tracerd)
            .args(["-c", "config/examples/timeseries.yaml"])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect("127.0.0.1:3179").is_err()
        || std::net::TcpStream::connect("127.0.0.1:12818").is_err()
    {
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "tracerd exited:\n{}",
            log()
        );
        assert!(
            Instant::now() < deadline,
            "tracerd did not listen:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let node = rt.block_on(async {
        let mut node = FakeNode::handshake(connect_tcp(3179).await, "example-relay").await;
        let m = metrics(
            true,
            vec![(
                "cardano.node.metrics.slotNum_int",
                MetricValue::Counter(777),
            )],
        );
        node.framed.send(m).await.unwrap();
        node
    });
    let r = until(12818, "cardano_node_metrics_slotNum_int", |r| !r.is_empty());
    assert_eq!(value_of(&r, "example-relay"), Some(777.0));
    let (status, build) = get_json(12818, "/api/v1/status/buildinfo");
    assert_eq!(
        (status, &build["data"]["version"]),
        (200, &Value::from("2.42.0"))
    );
    // A stock Prometheus client: promtool's instant query (a POST form, as Grafana sends).
    let out = std::process::Command::new("promtool")
        .args([
            "query",
            "instant",
            "http://127.0.0.1:12818",
            "cardano_node_metrics_slotNum_int",
        ])
        .output()
        .expect("promtool is not installed: apt-get install prometheus (.ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("example-relay") && text.contains("=> 777 @"),
        "{out:?}"
    );
    drop(node);
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.0.kill();
            panic!("tracerd did not stop:\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{}", log());
}

/// Hostile input: a node whose label sets change text on every update (each change is a new
/// series) while two well-behaved nodes stream. Its new series are refused past the
/// per-session limit (counted), the history stays bounded, and the other nodes lose nothing:
/// every value they sent is in the history, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_churning_label_sets_cannot_crowd_out_the_others() {
    const SENDS: i64 = 100;
    let (d, port) = start_with_history(0.25, "");
    let mut good = Vec::new();
    for name in ["good-1", "good-2"] {
        good.push(FakeNode::handshake(connect_tcp(d.tcp_port).await, name).await);
    }
    let mut hostile = FakeNode::handshake(connect_tcp(d.tcp_port).await, "churner").await;
    let churn = tokio::spawn(async move {
        // 80 updates × 1,000 label sets, each update a new text for all: 80,000 new series.
        for k in 0..80 {
            let m = (0..1000)
                .map(|j| {
                    (
                        format!("churn.m{j}"),
                        MetricValue::Label(format!("{{build=\"v{k}\"}}")),
                    )
                })
                .collect();
            let update = NodeMessage::Metrics(MetricsUpdate {
                full: k == 0,
                metrics: m,
            });
            hostile.framed.send(update).await.unwrap();
        }
        hostile
    });
    for i in 0..SENDS {
        for (n, node) in good.iter_mut().enumerate() {
            let m = metrics(
                i == 0,
                vec![(
                    "cardano.node.metrics.blockNum_int",
                    MetricValue::Counter(i * (n as i64 + 1)),
                )],
            );
            node.framed.send(m).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hostile = churn.await.unwrap();
    tokio::task::spawn_blocking(move || {
        until(
            port,
            "tracerd_history_samples_refused_total{reason=\"node_series_limit\"}",
            |r| r.first().is_some_and(|s| s["value"][1] != "0"),
        );
        let series = until(port, "tracerd_history_series", |r| !r.is_empty());
        let held: f64 = series[0]["value"][1].as_str().unwrap().parse().unwrap();
        assert!(held <= 65_536.0 + 500.0, "the history holds {held} series");
        let deadline = Instant::now() + WAIT;
        for (n, name) in ["good-1", "good-2"].iter().enumerate() {
            let q = format!("cardano_node_metrics_blockNum_int{{node_name=\"{name}\"}}[1m]");
            loop {
                let r = instant(port, &q, None);
                let mut values: Vec<i64> = r[0]["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p[1].as_str().unwrap().parse().unwrap())
                    .collect();
                // The last value is repeated every sampling interval; every other value is
                // a sample the node sent.
                values.dedup();
                let sent: Vec<i64> = (0..SENDS).map(|i| i * (n as i64 + 1)).collect();
                if values == sent {
                    break;
                }
                assert!(Instant::now() < deadline, "{name} lost samples: {values:?}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    })
    .await
    .unwrap();
    drop((good, hostile));
}
