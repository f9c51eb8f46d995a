//! Alerting end to end (issue 15): rule files evaluated on the metric history, alerts
//! delivered to a real Alertmanager (Debian's `prometheus-alertmanager`, started here on
//! loopback with its own data directory) and resolved there; `tracerd validate` naming bad
//! rules; the shipped rules accepted by `promtool check rules`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::Value;
use tracerd::model::{MetricValue, MetricsUpdate};
use tracerd::native::NodeMessage;

use crate::history::{instant, now_secs};
use crate::http::http_get;
use crate::support::*;

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
const INSTALL: &str =
    "prometheus-alertmanager is not installed: apt-get install prometheus-alertmanager \
     (./test.sh does it as root)";

/// A real Alertmanager on a free loopback port, killed on drop.
pub struct Alertmanager {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Alertmanager {
    /// Starts it (panics with the install line when it is missing) and waits until it is
    /// ready.
    pub fn start(port: u16) -> Alertmanager {
        assert!(Path::new(ALERTMANAGER).exists(), "{INSTALL}");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route: { receiver: blackhole, group_wait: 0s, group_interval: 1s }\nreceivers:\n  - name: blackhole\n",
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("am.log")).unwrap();
        let child = Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect(INSTALL);
        let am = Alertmanager {
            port,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && http_get(port, "/-/ready", &[]).0 == 200
            {
                return am;
            }
            assert!(
                Instant::now() < deadline,
                "alertmanager did not start within 60 s: {}",
                std::fs::read_to_string(am._dir.path().join("am.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its active alerts (`GET /api/v2/alerts`).
    pub fn alerts(&self) -> Vec<Value> {
        let (status, _, body) = http_get(self.port, "/api/v2/alerts", &[]);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }
}

fn gauge(name: &str, v: f64) -> NodeMessage {
    NodeMessage::Metrics(MetricsUpdate {
        full: false,
        metrics: vec![(name.to_string(), MetricValue::Gauge(v))],
    })
}

const MEM: &str = "cardano.node.metrics.Mem.resident_int";

const RULES: &str = r#"groups:
  - name: nodes
    interval: 1s
    rules:
      - alert: MemHigh
        expr: cardano_node_metrics_Mem_resident_int > 100
        for: 2s
        labels: { severity: page }
        annotations:
          summary: '{{ $labels.node_name }} uses {{ $value }} bytes'
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_reaches_alertmanager_and_resolves() {
    let am_port = free_port();
    let am = tokio::task::spawn_blocking(move || Alertmanager::start(am_port))
        .await
        .unwrap();
    let ts_port = free_port();
    let dead_port = free_port(); // nothing listens: delivery failures are counted
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES).unwrap();
    let d = Daemon::start(&format!(
        "  history: {{sampleIntervalSecs: 0.5}}\n  alerts:\n    ruleFiles: [\"{}\"]\n    \
         alertmanagers: [\"http://127.0.0.1:{am_port}\", \"http://127.0.0.1:{dead_port}\"]\n\
         hasTimeseries: {{epHost: 127.0.0.1, epPort: {ts_port}}}\n",
        rules.display()
    ));
    let mut a = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay-a").await;
    let mut b = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay-b").await;
    a.framed.send(gauge(MEM, 50.0)).await.unwrap();
    b.framed.send(gauge(MEM, 150.0)).await.unwrap();
    let exceeded = Instant::now();
    let t_exceeded = now_secs();
    // Alertmanager is polled on the blocking pool while the nodes keep streaming.
    let am = std::sync::Arc::new(am);
    let am2 = am.clone();
    let firing = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = am2.alerts();
            if let Some(x) = got.iter().find(|x| x["labels"]["alertname"] == "MemHigh") {
                return (x.clone(), got.len(), Instant::now());
            }
            assert!(Instant::now() < deadline, "no alert reached Alertmanager");
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let mut i = 0.0;
    while !firing.is_finished() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        i += 1.0;
        a.framed.send(gauge(MEM, 50.0 + i)).await.unwrap();
        b.framed.send(gauge(MEM, 150.0)).await.unwrap();
    }
    let (alert, count, at) = firing.await.unwrap();
    let took = at.duration_since(exceeded);
    // `for` (2 s) + one interval (1 s), plus the 100 ms poll and delivery under load.
    assert!(took <= Duration::from_millis(3_800), "took {took:?}");
    assert!(
        took >= Duration::from_secs(2),
        "fired before `for`: {took:?}"
    );
    assert_eq!(count, 1, "only relay-b exceeds");
    assert_eq!(alert["labels"]["node_name"], "relay-b", "{alert}");
    assert_eq!(alert["labels"]["severity"], "page", "{alert}");
    assert!(
        alert["labels"].get("__name__").is_none(),
        "metric name dropped: {alert}"
    );
    assert_eq!(
        alert["annotations"]["summary"], "relay-b uses 150 bytes",
        "{alert}"
    );
    assert_eq!(alert["status"]["state"], "active", "{alert}");
    // endsAt as Prometheus sets it: now + 4 × max(interval, resend delay) = now + 4 s.
    let ends = rfc3339_secs(alert["endsAt"].as_str().unwrap());
    let starts = rfc3339_secs(alert["startsAt"].as_str().unwrap());
    assert!(
        starts >= t_exceeded + 1.5 && starts <= t_exceeded + 3.5,
        "startsAt is when it fired: {alert}"
    );
    assert!(
        ends > now_secs() && ends <= now_secs() + 4.5,
        "endsAt: {alert}"
    );

    // Prometheus's alert and rule routes on the hasTimeseries endpoint (Grafana reads them).
    let (status, v) = crate::history::get_json(ts_port, "/api/v1/alerts");
    assert_eq!(
        (status, &v["status"]),
        (200, &Value::from("success")),
        "{v}"
    );
    let listed = v["data"]["alerts"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{v}");
    assert_eq!(listed[0]["state"], "firing", "{v}");
    assert_eq!(listed[0]["labels"]["node_name"], "relay-b", "{v}");
    assert_eq!(listed[0]["value"], "150", "{v}");
    let (status, v) = crate::history::get_json(ts_port, "/api/v1/rules");
    assert_eq!(status, 200, "{v}");
    let group = &v["data"]["groups"][0];
    assert_eq!(
        (&group["name"], &group["interval"]),
        (&Value::from("nodes"), &Value::from(1.0)),
        "{v}"
    );
    let rule = &group["rules"][0];
    assert_eq!(rule["name"], "MemHigh", "{v}");
    assert_eq!(rule["state"], "firing", "{v}");
    assert_eq!(rule["health"], "ok", "{v}");
    assert_eq!(rule["type"], "alerting", "{v}");
    assert_eq!(rule["duration"], 2.0, "{v}");
    assert_eq!(
        rule["query"], "cardano_node_metrics_Mem_resident_int > 100",
        "{v}"
    );
    assert_eq!(
        rule["annotations"]["summary"], "{{ $labels.node_name }} uses {{ $value }} bytes",
        "{v}"
    );

    // relay-b recovers: the alert is resolved (sent once with endsAt = the resolve time)
    // and Alertmanager no longer lists it as active.
    let am3 = am.clone();
    let resolved = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if !am3
                .alerts()
                .iter()
                .any(|x| x["labels"]["alertname"] == "MemHigh")
            {
                return Instant::now();
            }
            assert!(Instant::now() < deadline, "the alert was not resolved");
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let recovered = Instant::now();
    while !resolved.is_finished() {
        a.framed.send(gauge(MEM, 50.0)).await.unwrap();
        b.framed.send(gauge(MEM, 60.0)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let at = resolved.await.unwrap();
    // Resolved at the next evaluation, not by Alertmanager's own endsAt timeout (4 s).
    assert!(
        at.duration_since(recovered) < Duration::from_millis(2_500),
        "resolved after {:?}",
        at.duration_since(recovered)
    );

    // Delivery counted per Alertmanager: the live one got alerts, the dead one failed.
    let counted = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let sent = instant(ts_port, "tracerd_alerts_sent_total", None);
            let errors = instant(ts_port, "tracerd_alerts_errors_total", None);
            let v = |r: &[Value], port: u16| {
                r.iter()
                    .find(|s| s["metric"]["alertmanager"] == format!("http://127.0.0.1:{port}"))
                    .map(|s| s["value"][1].as_str().unwrap().parse::<f64>().unwrap())
            };
            if let (Some(s), Some(e)) = (v(&sent, am_port), v(&errors, dead_port)) {
                if s >= 2.0 && e >= 1.0 {
                    return (s, e, v(&errors, am_port));
                }
            }
            assert!(Instant::now() < deadline, "sent {sent:?} errors {errors:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    assert_eq!(counted.2.unwrap_or(0.0), 0.0, "no failure for the live one");
    let log = d.stderr();
    let lines = log
        .lines()
        .filter(|l| l.contains("cannot send alerts to Alertmanager"))
        .count();
    assert!(
        (1..=2).contains(&lines),
        "failures logged at a bounded rate: {lines}\n{log}"
    );
}

/// Seconds since the epoch of an RFC 3339 UTC time as Alertmanager prints it.
pub fn rfc3339_secs(s: &str) -> f64 {
    let (date, time) = s.split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let time = time.trim_end_matches('Z');
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    let secs = tracerd::utc::DateTime {
        year: d[0],
        month: d[1] as u32,
        day: d[2] as u32,
        hour: t[0] as u32,
        minute: t[1] as u32,
        second: t[2] as u32,
    }
    .to_unix();
    secs as f64 + format!("0.{frac}").parse::<f64>().unwrap()
}

#[test]
fn validate_names_bad_rules_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad_expr = dir.path().join("bad.yml");
    std::fs::write(&bad_expr, RULES.replace("> 100", "> ")).unwrap();
    let unknown = dir.path().join("unknown.yml");
    std::fs::write(
        &unknown,
        RULES.replace("for: 2s", "for: 2s\n        fro: 1m"),
    )
    .unwrap();
    let good = dir.path().join("good.yml");
    std::fs::write(&good, RULES).unwrap();
    let config = dir.path().join("c.yaml");
    let write = |files: &[&Path]| {
        let list: Vec<String> = files
            .iter()
            .map(|f| format!("\"{}\"", f.display()))
            .collect();
        std::fs::write(
            &config,
            format!(
                "networkMagic: {MAGIC}\nnetwork: null\nlogging: [{{logRoot: {}, logMode: FileMode, logFormat: ForMachine}}]\n\
                 hasTimeseries: {{epHost: 127.0.0.1, epPort: 1}}\ntracerd:\n  alerts:\n    ruleFiles: [{}]\n",
                dir.path().join("logs").display(),
                list.join(", ")
            ),
        )
        .unwrap();
    };
    let validate = || {
        Command::new(env!("CARGO_BIN_EXE_tracerd"))
            .arg("-c")
            .arg(&config)
            .arg("validate")
            .output()
            .unwrap()
    };
    write(&[&good]);
    let out = validate();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    write(&[&bad_expr, &unknown]);
    let out = validate();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:5: group \"nodes\", rule \"MemHigh\": bad PromQL",
            bad_expr.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&unknown.display().to_string())
            && err.contains("unknown field `fro`")
            && err.contains("line 8"),
        "{err}"
    );
    // Rules without the history they are evaluated on are refused by the config check.
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("hasTimeseries: {epHost: 127.0.0.1, epPort: 1}\n", ""),
    )
    .unwrap();
    let out = validate();
    assert_eq!(out.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs hasTimeseries"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The shipped rule files are accepted by promtool (as Prometheus would load them) and by
/// `tracerd validate` through the example config.
#[test]
fn shipped_rules_pass_promtool_and_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(root.join("config/alerts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    let out = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .args(&files)
        .output()
        .expect(
            "promtool is not installed: apt-get install prometheus (./test.sh does it as root)",
        );
    assert!(out.status.success(), "{out:?}");
    let out = Command::new(env!("CARGO_BIN_EXE_tracerd"))
        .args(["-c", "config/examples/alerts.yaml", "validate"])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// A node killed mid-stream fires the shipped NodeDisconnected rule (its threshold and
/// `for` shortened for the test) at Alertmanager, while two nodes that keep streaming do
/// not, and lose nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_fires_the_disconnect_rule() {
    let am_port = free_port();
    let am = tokio::task::spawn_blocking(move || Alertmanager::start(am_port))
        .await
        .unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(root.join("config/alerts/nodes.yml")).unwrap();
    let fast = shipped
        .replace(
            "tracerd_node_last_message_timestamp_seconds[1h])) > 30",
            "tracerd_node_last_message_timestamp_seconds[1h])) > 1",
        )
        .replace("interval: 5s", "interval: 500ms")
        .replace("for: 10s", "for: 1s");
    assert_ne!(fast, shipped);
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("nodes.yml");
    std::fs::write(&rules, fast).unwrap();
    let ts_port = free_port();
    let d = Daemon::start(&format!(
        "  history: {{sampleIntervalSecs: 0.2}}\n  alerts:\n    ruleFiles: [\"{}\"]\n    \
         alertmanagers: [\"http://127.0.0.1:{am_port}\"]\n\
         hasTimeseries: {{epHost: 127.0.0.1, epPort: {ts_port}}}\n",
        rules.display()
    ));
    let mut a = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay-a").await;
    let mut b = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay-b").await;
    let mut victim = FakeNode::handshake(connect_tcp(d.tcp_port).await, "victim").await;
    // It streams for a second (several history samples), then is killed mid-stream.
    for i in 0..10u64 {
        victim.send_batch(1 + 10 * i, 10, 16).await;
        victim.wait_ack(10 * (i + 1)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    victim.send_batch(101, 5, 16).await;
    drop(victim); // killed mid-stream: the socket closes with nothing more
    let am2 = std::sync::Arc::new(am);
    let am3 = am2.clone();
    let fired = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = am3.alerts();
            let names: Vec<_> = got
                .iter()
                .filter(|x| x["labels"]["alertname"] == "NodeDisconnected")
                .map(|x| x["labels"]["node_name"].as_str().unwrap_or("").to_string())
                .collect();
            if !names.is_empty() {
                return (names, got);
            }
            assert!(
                Instant::now() < deadline,
                "NodeDisconnected never fired: {got:?} {:?}",
                instant(
                    ts_port,
                    "time() - max by (node_name) (max_over_time(tracerd_node_last_message_timestamp_seconds[1h]))",
                    None
                )
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let (mut seq, mut n) = (1u64, 0);
    while !fired.is_finished() {
        for node in [&mut a, &mut b] {
            node.send_batch(seq, 20, 64).await;
        }
        for node in [&mut a, &mut b] {
            node.wait_ack(seq + 19).await;
        }
        seq += 20;
        n += 1;
        assert!(n < 400, "bounded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (names, got) = fired.await.unwrap();
    assert_eq!(names, vec!["victim".to_string()], "{got:?}");
    let alert = got
        .iter()
        .find(|x| x["labels"]["alertname"] == "NodeDisconnected")
        .unwrap();
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(
        alert["annotations"]["summary"],
        "Node victim is disconnected"
    );
    // The streaming nodes lost nothing.
    for name in ["relay-a", "relay-b"] {
        let want: Vec<u64> = (1..seq).collect();
        assert_eq!(seqs(&d.logs().join(name)), want, "{name}");
    }
}

/// `config/examples/alerts.yaml` runs as is from the repository root (a copy of the layout in
/// a temporary directory): the history and the shipped rules load, every rule evaluates
/// without failure on the real store, and an Alertmanager at 127.0.0.1:9093 is its target.
/// Run in a network namespace of its own where it can be (the embedded defaults' fixed
/// ports).
#[test]
fn the_alerts_example_runs_as_is() {
    if !crate::history::run_in_own_netns("alerts::inner_alerts_example") {
        alerts_example();
    }
}

#[test]
#[ignore = "run by the_alerts_example_runs_as_is in a network namespace of its own"]
fn inner_alerts_example() {
    alerts_example();
}

fn alerts_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "config/examples/alerts.yaml",
        "config/alerts/nodes.yml",
        "config/alerts/tracerd.yml",
    ] {
        std::fs::create_dir_all(dir.path().join(f).parent().unwrap()).unwrap();
        std::fs::copy(root.join(f), dir.path().join(f)).unwrap();
    }
    let _ports = crate::history::PortsLock::take();
    let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let mut child = crate::history::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_tracerd"))
            .args(["-c", "config/examples/alerts.yaml"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let metric = |text: &str, name: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
    };
    let result = loop {
        if child.0.try_wait().unwrap().is_some() {
            break Err(format!("tracerd exited:\n{}", log()));
        }
        if std::net::TcpStream::connect("127.0.0.1:12808").is_ok() {
            let (_, _, text) = http_get(12808, "/metrics", &[]);
            if metric(&text, "tracerd_alerts_rule_evaluations_total").unwrap_or(0.0) >= 7.0 {
                break Ok(text);
            }
        }
        if Instant::now() > deadline {
            break Err(format!("no evaluations:\n{}", log()));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(child);
    let text = result.unwrap();
    assert_eq!(
        metric(&text, "tracerd_alerts_rule_evaluation_failures_total"),
        Some(0.0),
        "{}",
        log()
    );
    assert!(log().contains("alerting rules loaded"), "{}", log());
    assert!(
        log().contains("groups=2") && log().contains("alertmanagers=1"),
        "{}",
        log()
    );
}

/// An Alertmanager stopped while an alert fires (and started again empty, on the same
/// address) gets the alert again within an interval or so: firing alerts are resent at
/// every evaluation; the failures meanwhile are logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alertmanager_back_from_a_restart_gets_the_firing_alert() {
    let am_port = free_port();
    let am = tokio::task::spawn_blocking(move || Alertmanager::start(am_port))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES.replace("for: 2s", "for: 0s")).unwrap();
    let ts_port = free_port();
    let d = Daemon::start(&format!(
        "  history: {{sampleIntervalSecs: 0.5}}\n  alerts:\n    ruleFiles: [\"{}\"]\n    \
         alertmanagers: [\"http://127.0.0.1:{am_port}\"]\n\
         hasTimeseries: {{epHost: 127.0.0.1, epPort: {ts_port}}}\n",
        rules.display()
    ));
    let mut b = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay-b").await;
    let wait_alert = |am: std::sync::Arc<Alertmanager>| {
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(15);
            while !am
                .alerts()
                .iter()
                .any(|x| x["labels"]["alertname"] == "MemHigh")
            {
                assert!(Instant::now() < deadline, "no alert at Alertmanager");
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let am = std::sync::Arc::new(am);
    let first = wait_alert(am.clone());
    while !first.is_finished() {
        b.framed.send(gauge(MEM, 150.0)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    first.await.unwrap();
    drop(am); // stopped (its data directory goes with it)
              // Down until tracerd has failed to reach it (three attempts over ~1.2 s per send, a send
              // per evaluation): a fixed wait raced with a retry reaching the next Alertmanager.
    let down = Instant::now();
    while !d.stderr().contains("cannot send alerts to Alertmanager") {
        assert!(
            down.elapsed() < Duration::from_secs(20),
            "no failed send logged while Alertmanager was down: {}",
            d.stderr()
        );
        b.framed.send(gauge(MEM, 150.0)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A fresh Alertmanager (its own new data directory): whatever it lists, tracerd sent
    // after it came back. (Asserting it empty right after start raced with that send.)
    let back = Instant::now();
    let am = tokio::task::spawn_blocking(move || Alertmanager::start(am_port))
        .await
        .unwrap();
    let started = back.elapsed();
    let am = std::sync::Arc::new(am);
    let again = wait_alert(am.clone());
    while !again.is_finished() {
        b.framed.send(gauge(MEM, 150.0)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    again.await.unwrap();
    assert!(
        back.elapsed() < started + Duration::from_secs(3),
        "{:?} after a start of {started:?}",
        back.elapsed()
    );
}
