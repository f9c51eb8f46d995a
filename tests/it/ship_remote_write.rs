//! Prometheus remote_write (issue 18, point 3): tracerd samples its `/metrics` and writes it
//! to a real Prometheus 2.42 (`--web.enable-remote-write-receiver`, read back through its
//! API) and a real VictoriaMetrics (`/api/v1/write`, read back with `/api/v1/export`), both
//! killed for a while during streaming, and tracerd killed -9 once. Afterwards every series of
//! `/metrics` is in both stores with the external label, no receiver refused a sample (a
//! Prometheus refuses out-of-order samples), VictoriaMetrics holds every series' samples in
//! strictly increasing time, and a disconnected node's series ended with a staleness marker.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tracerd::model::{MetricValue, MetricsUpdate};
use tracerd::native::NodeMessage;

use crate::http::http_get;
use crate::support::*;

const INSTALL_PROMETHEUS: &str =
    "prometheus is not installed: apt-get install prometheus (./test.sh does it as root)";
const INSTALL_VM: &str =
    "victoria-metrics is not installed: apt-get install victoria-metrics (./test.sh does it as root)";

/// A receiver process on its own data directory, restartable, killed on drop.
pub struct Receiver {
    pub dir: tempfile::TempDir,
    pub port: u16,
    args: Vec<String>,
    program: &'static str,
    install: &'static str,
    child: Option<Child>,
    ready_path: &'static str,
}

impl Receiver {
    pub fn prometheus() -> Receiver {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        std::fs::write(dir.path().join("prometheus.yml"), "global: {}\n").unwrap();
        let d = dir.path().display();
        let args = vec![
            format!("--config.file={d}/prometheus.yml"),
            format!("--storage.tsdb.path={d}/data"),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--web.enable-remote-write-receiver".into(),
        ];
        Receiver::start(
            dir,
            port,
            "prometheus",
            args,
            INSTALL_PROMETHEUS,
            "/-/ready",
        )
    }

    pub fn victoria_metrics() -> Receiver {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display();
        let args = vec![
            format!("-storageDataPath={d}/data"),
            format!("-httpListenAddr=127.0.0.1:{port}"),
            "-retentionPeriod=1".into(),
            // Samples of the last seconds are searchable at once (the test reads them back).
            "-search.latencyOffset=0s".into(),
            "-search.cacheTimestampOffset=0s".into(),
        ];
        Receiver::start(dir, port, "victoria-metrics", args, INSTALL_VM, "/health")
    }

    fn start(
        dir: tempfile::TempDir,
        port: u16,
        program: &'static str,
        args: Vec<String>,
        install: &'static str,
        ready_path: &'static str,
    ) -> Receiver {
        let mut r = Receiver {
            dir,
            port,
            args,
            program,
            install,
            child: None,
            ready_path,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("log.txt"))
            .unwrap();
        let child = match Command::new(self.program)
            .args(&self.args)
            .current_dir(self.dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{}", self.install),
            Err(e) => panic!("cannot run {}: {e}", self.program),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && http_get(self.port, self.ready_path, &[]).0 == 200
            {
                return;
            }
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{} exited with {s}: {}", self.program, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not start: {}",
                self.program,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log.txt")).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn get(&self, path_and_query: &str) -> String {
        let (status, _, body) = http_get(self.port, path_and_query, &[]);
        assert_eq!(status, 200, "{} {path_and_query}: {body}", self.program);
        body
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.program, self.log());
        }
        self.kill();
    }
}

pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A node that streams traces and metrics for `rounds` rounds, then disconnects.
async fn node(port: u16, name: &'static str, rounds: u64) {
    let framed = connect_tcp(port).await;
    let mut n = FakeNode::handshake(framed, name).await;
    let mut next = n.acked + 1;
    for r in 0..rounds {
        n.framed
            .send(NodeMessage::Metrics(MetricsUpdate {
                full: true,
                metrics: vec![
                    (
                        "cardano.node.metrics.slotNum_int".into(),
                        MetricValue::Gauge(r as f64),
                    ),
                    (
                        "cardano.node.metrics.served_counter".into(),
                        MetricValue::Counter(r as i64),
                    ),
                ],
            }))
            .await
            .unwrap();
        n.send_batch(next, 20, 50).await;
        next += 20;
        n.wait_ack(next - 1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The series of an exposition as canonical label-set strings, external label added.
fn series_of(exposition: &str) -> BTreeSet<String> {
    tracerd::history::series::parse_exposition(exposition)
        .unwrap()
        .into_iter()
        .map(|(mut labels, _)| {
            labels.push(("tracer".into(), "site-a".into()));
            labels.retain(|(_, v)| !v.is_empty());
            labels.sort();
            canon(&labels)
        })
        .collect()
}

fn canon(labels: &[(String, String)]) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn labels_of(metric: &serde_json::Map<String, serde_json::Value>) -> String {
    let mut l: Vec<(String, String)> = metric
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    l.sort();
    canon(&l)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_reach_prometheus_and_victoriametrics_in_order_across_outages_and_a_kill() {
    let mut prom = Receiver::prometheus();
    let mut vm = Receiver::victoria_metrics();
    let http = free_port();
    let extra = format!(
        "  remoteWrite:\n\
         \x20   - url: http://127.0.0.1:{}/api/v1/write\n\
         \x20     externalLabels: {{tracer: site-a}}\n\
         \x20     intervalSecs: 0.2\n\
         \x20     queue: {{maxBackoffSecs: 0.5}}\n\
         \x20     timeoutSecs: 2\n\
         \x20   - url: http://127.0.0.1:{}/api/v1/write\n\
         \x20     externalLabels: {{tracer: site-a}}\n\
         \x20     intervalSecs: 0.2\n\
         \x20     queue: {{maxBackoffSecs: 0.5, shards: 3}}\n\
         \x20     timeoutSecs: 2\n\
         hasPrometheus: {{epHost: 127.0.0.1, epPort: {http}}}\n",
        prom.port, vm.port
    );
    let mut d = Daemon::start(&extra);
    let port = d.tcp_port;
    // Streaming; both receivers killed for a while in the middle of it.
    let a = tokio::spawn(node(port, "rw-a", 30));
    let b = tokio::spawn(node(port, "rw-b", 30));
    tokio::time::sleep(Duration::from_millis(800)).await;
    prom.kill();
    vm.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    prom.restart();
    vm.restart();
    a.await.unwrap();
    b.await.unwrap();
    // tracerd killed -9 once, restarted; one node comes back, the other does not.
    d = d.crash_and_restart().await;
    let a = tokio::spawn(node(port, "rw-a", 10));
    let b = tokio::spawn(node(port, "rw-b", 3));
    b.await.unwrap();
    a.await.unwrap();
    // rw-a stays connected (its metrics stay in /metrics); rw-b has left.
    let framed = connect_tcp(port).await;
    let mut keep = FakeNode::handshake(framed, "rw-a").await;
    keep.framed
        .send(NodeMessage::Metrics(MetricsUpdate {
            full: true,
            metrics: vec![(
                "cardano.node.metrics.slotNum_int".into(),
                MetricValue::Gauge(99.0),
            )],
        }))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Every series of /metrics is in both stores (polled: the last samples take a pass).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, _, exposition) = http_get(http, "/metrics", &[]);
        let want: BTreeSet<String> = series_of(&exposition)
            .into_iter()
            // Process and queue gauges may appear within the last pass; the rest must be there.
            .filter(|s| !s.contains("tracerd_remote_write_") && !s.contains("tracerd_http_"))
            .collect();
        let in_prom: BTreeSet<String> = {
            let body = prom.get(&format!(
                "/api/v1/series?match[]={}",
                enc("{tracer=\"site-a\"}")
            ));
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| labels_of(m.as_object().unwrap()))
                .collect()
        };
        let vm_export = vm.get(&format!(
            "/api/v1/export?match[]={}",
            enc("{tracer=\"site-a\"}")
        ));
        let in_vm: BTreeSet<String> = vm_export
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                labels_of(v["metric"].as_object().unwrap())
            })
            .collect();
        let missing_p: Vec<&String> = want.difference(&in_prom).collect();
        let missing_v: Vec<&String> = want.difference(&in_vm).collect();
        if missing_p.is_empty() && missing_v.is_empty() {
            assert!(
                want.iter()
                    .any(|s| s.contains("cardano_node_metrics_slotNum_int")),
                "{want:?}"
            );
            // VictoriaMetrics keeps what it is sent: every series' samples in time order.
            for line in vm_export.lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                let ts: Vec<i64> = v["timestamps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_i64().unwrap())
                    .collect();
                assert!(ts.windows(2).all(|w| w[0] < w[1]), "out of order: {line}");
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "missing in Prometheus: {missing_p:?}\nmissing in VictoriaMetrics: {missing_v:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // No receiver refused a sample (Prometheus refuses out-of-order ones with a 400).
    let stderr = d.stderr();
    assert!(!stderr.contains("refused the samples"), "{stderr}");
    assert!(
        stderr.contains("remote_write failed; retrying"),
        "the outage was not seen: {stderr}"
    );
    // rw-b left: Prometheus has its metric's samples, but the staleness marker ends the series.
    let q = |query: &str| -> serde_json::Value {
        let body = prom.get(&format!("/api/v1/query?query={}", enc(query)));
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["data"]["result"].clone()
    };
    let gone = "cardano_node_metrics_slotNum_int{node_name=\"rw-b\",tracer=\"site-a\"}";
    assert_eq!(
        q(gone).as_array().unwrap().len(),
        0,
        "rw-b not stale: {}",
        q(gone)
    );
    let past = q(&format!("count_over_time({gone}[10m])"));
    assert!(
        past[0]["value"][1]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            >= 3.0,
        "{past}"
    );
    let here = q("cardano_node_metrics_slotNum_int{node_name=\"rw-a\",tracer=\"site-a\"}");
    assert_eq!(here[0]["value"][1], "99", "{here}");
    drop(keep);
}
