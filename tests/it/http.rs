//! Metrics over HTTP end to end: the real binary, a node that sends metrics (and no traces),
//! scrapes over real sockets, promtool on the real output, and HTTP answering until the
//! sessions have drained at shutdown.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tracerd::model::{MetricValue, MetricsUpdate};
use tracerd::native::NodeMessage;

use crate::support::*;

/// A minimal HTTP/1.1 GET over a fresh loopback connection: (status, content type, body).
/// Connects to a daemon's HTTP port, waiting up to 15 s while nothing listens there yet: a
/// test may ask right after the daemon has bound its node socket but before its HTTP endpoint
/// is up (seen under load). Any other error, or a port still refused after that, fails the test.
pub fn connect_http(port: u16) -> std::net::TcpStream {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("HTTP port {port}: {e}"),
        }
    }
}

pub fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut s = connect_http(port);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let ct = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_string)
        })
        .unwrap_or_default();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, ct, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// Polls `path` until `pred` holds on the body (bounded by [`WAIT`]).
pub fn wait_for(port: u16, path: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, _, body) = http_get(port, path, &[("Accept", "text/plain")]);
        if pred(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "timed out; last body:\n{body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `promtool check metrics` on `text`, less its one lint that cardano-tracer's names break on
/// purpose (a counter without `_total`, and `ekg_server_timestamp_ms`'s `ms`, kept for drop-in
/// dashboards, docs/HTTP.md); `None` when
/// promtool is not installed. Parse errors and every other lint still fail.
fn promtool(text: &str) -> Option<(bool, String)> {
    let (ok, report) = promtool_raw(text)?;
    let rest: Vec<&str> = report
        .lines()
        .filter(|l| !l.ends_with("counter metrics should have \"_total\" suffix"))
        .filter(|l| {
            *l != "ekg_server_timestamp_ms metric names should not contain abbreviated units"
        })
        .collect();
    let only_total_lint = !ok && rest.is_empty() && !report.contains("error");
    Some((ok || only_total_lint, rest.join("\n")))
}

fn promtool_raw(text: &str) -> Option<(bool, String)> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), report))
}

fn start() -> (Daemon, u16, u16) {
    let prom = free_port();
    let ekg = free_port();
    let d = Daemon::start(&format!(
        "hasPrometheus: {{epHost: 127.0.0.1, epPort: {prom}}}\n\
         hasEKG: {{epHost: 127.0.0.1, epPort: {ekg}}}\n\
         metricsNoSuffix: true\n\
         prometheusLabels: {{cluster: it}}\n\
         metricsHelp: {{Mem.resident: \"Kernel-reported RSS (resident set size)\"}}\n"
    ));
    (d, prom, ekg)
}

fn update() -> NodeMessage {
    NodeMessage::Metrics(MetricsUpdate {
        full: true,
        metrics: vec![
            (
                "cardano.node.metrics.Mem.resident_int".into(),
                MetricValue::Gauge(103_792_640.0),
            ),
            (
                "cardano.node.metrics.served_counter".into(),
                MetricValue::Counter(24),
            ),
            (
                "cardano.node.metrics.density_real".into(),
                MetricValue::Label("0.049".into()),
            ),
            (
                "cardano.node.metrics.node_build".into(),
                MetricValue::Label("{version=\"10.1\",commit=\"a\\\"b\\\\c\"} 1".into()),
            ),
            (
                "cardano.node.metrics.era".into(),
                MetricValue::Label("Conway \"quoted\"\nline ü".into()),
            ),
        ],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_only_node_is_scraped_over_real_sockets() {
    let (mut d, prom, ekg) = start();
    let mut node = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay_1").await;
    node.framed.send(update()).await.unwrap();

    let body = tokio::task::spawn_blocking(move || {
        wait_for(prom, "/metrics", |b| b.contains("Mem_resident{"))
    })
    .await
    .unwrap();
    assert!(
        body.contains("cardano_node_metrics_Mem_resident{node_name=\"relay_1\"} 103792640\n"),
        "{body}"
    );
    assert!(body.contains(
        "# HELP cardano_node_metrics_Mem_resident Kernel-reported RSS (resident set size)\n"
    ));
    assert!(body.contains("cardano_node_metrics_served{node_name=\"relay_1\"} 24\n"));
    assert!(body.contains("tracerd_nodes_connected{protocol=\"native\"} 1\n"));

    let checks = tokio::task::spawn_blocking(move || {
        let root = http_get(prom, "/", &[]);
        let targets = http_get(prom, "/targets", &[]);
        let om = http_get(prom, "/relay-1", &[]);
        let text = http_get(prom, "/relay-1", &[("Accept", "text/plain")]);
        let missing = http_get(prom, "/nope", &[]);
        let ready = http_get(prom, "/readyz", &[]);
        let ekg_node = http_get(ekg, "/relay-1/cardano/node/metrics/served_counter", &[]);
        (root, targets, om, text, missing, ready, ekg_node)
    })
    .await
    .unwrap();
    let (root, targets, om, text, missing, ready, ekg_node) = checks;
    assert_eq!(
        root,
        (
            200,
            "application/json".into(),
            r#"{"relay_1":"/relay-1"}"#.into()
        )
    );
    assert_eq!(
        targets.2,
        format!(
            "[{{\"labels\":{{\"__metrics_path__\":\"/relay-1\",\"cluster\":\"it\",\"node_name\":\"relay_1\"}},\"targets\":[\"127.0.0.1:{prom}\"]}}]"
        )
    );
    assert_eq!(om.0, 200);
    assert_eq!(
        om.1,
        "application/openmetrics-text;version=1.0.0;charset=utf-8"
    );
    assert!(om.2.ends_with("# EOF\n"), "{}", om.2);
    assert!(om
        .2
        .contains("cardano_node_metrics_node_build{version=\"10.1\",commit=\"a\\\"b\\\\c\"} 1\n"));
    assert!(om
        .2
        .contains("cardano_node_metrics_era{value=\"Conway \\\"quoted\\\"\\nline ü\"} 1\n"));
    assert_eq!(text.1, "text/plain;version=0.0.4;charset=utf-8");
    assert_eq!(
        missing,
        (
            404,
            "text/plain;charset=utf-8".into(),
            "Not found: nope".into()
        )
    );
    assert_eq!(ready.2, "ready");
    assert_eq!(ekg_node.2, r#"{"type":"c","val":24}"#);

    match (promtool(&body), promtool(&text.2)) {
        (Some((ok_all, report_all)), Some((ok_node, report_node))) => {
            assert!(
                ok_all && report_all.trim().is_empty(),
                "promtool on /metrics:\n{report_all}\n{body}"
            );
            assert!(
                ok_node && report_node.trim().is_empty(),
                "promtool on /relay-1:\n{report_node}\n{}",
                text.2
            );
        }
        _ => panic!(
            "promtool is not installed: apt-get install prometheus (./test.sh does it as root)"
        ),
    }

    // Shutdown drains the session, then stops HTTP, and exits cleanly.
    drop(node);
    d.signal("TERM");
    let status = tokio::task::spawn_blocking(move || {
        let status = d.wait(Duration::from_secs(20));
        (status, d)
    })
    .await
    .unwrap();
    assert!(status.0.success(), "{}", status.1.stderr());
}

/// A Prometheus server run for one test, killed on drop.
pub struct PrometheusServer {
    child: std::process::Child,
    pub port: u16,
    pub _dir: tempfile::TempDir,
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Debian's `prometheus` with HTTP service discovery at tracerd's `/targets`;
/// `None` when it is not installed.
pub fn start_prometheus(tracerd_http: u16) -> Option<PrometheusServer> {
    start_prometheus_with(&format!(
        "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\n\
         scrape_configs:\n\
         \x20 - job_name: tracerd\n\
         \x20   http_sd_configs: [{{url: 'http://127.0.0.1:{tracerd_http}/targets', refresh_interval: 1s}}]\n"
    ))
}

/// Starts Debian's `prometheus` with the config text `yaml`; `None` when it is not installed.
pub fn start_prometheus_with(yaml: &str) -> Option<PrometheusServer> {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, yaml).unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let child = match Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot run prometheus: {e}"),
    };
    Some(PrometheusServer {
        child,
        port,
        _dir: dir,
    })
}

/// Asks Prometheus's query API for `query` until it returns a sample (bounded).
pub fn query_until_found(server: &PrometheusServer, query: &str) -> serde_json::Value {
    let encoded: String = query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", server.port)).is_ok() {
            let (status, _, body) =
                http_get(server.port, &format!("/api/v1/query?query={encoded}"), &[]);
            if status == 200 {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                if let Some(first) = v["data"]["result"].get(0) {
                    return first.clone();
                }
            }
        }
        let log =
            std::fs::read_to_string(server._dir.path().join("prometheus.log")).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "Prometheus never returned {query}; its log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_discovers_and_scrapes_nodes() {
    let (d, prom, _) = start();
    let Some(server) = start_prometheus(prom) else {
        panic!(
            "prometheus is not installed: apt-get install prometheus (./test.sh does it as root)"
        );
    };
    let mut node = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay_1").await;
    node.framed.send(update()).await.unwrap();
    let (gauge, counter, info) = tokio::task::spawn_blocking(move || {
        let gauge = query_until_found(&server, "cardano_node_metrics_Mem_resident");
        let counter = query_until_found(&server, "cardano_node_metrics_served");
        let info = query_until_found(&server, "cardano_node_metrics_node_build");
        (gauge, counter, info)
    })
    .await
    .unwrap();
    assert_eq!(gauge["metric"]["node_name"], "relay_1");
    assert_eq!(gauge["metric"]["cluster"], "it");
    assert_eq!(gauge["value"][1], "103792640");
    assert_eq!(counter["metric"]["node_name"], "relay_1");
    assert_eq!(counter["value"][1], "24");
    assert_eq!(info["metric"]["commit"], "a\"b\\c");
    assert_eq!(info["value"][1], "1");
    drop(node);
}
