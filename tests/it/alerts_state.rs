//! Alert state across a reload and a restart (issue 15, point 3): with `--state-dir`, a
//! firing alert survives SIGHUP and a restart of tracerd without a new pending period (same
//! `activeAt`, same `startsAt` at Alertmanager); `GET /api/alerts/history` lists its firing
//! before the restart and its resolution after, once each; the `ALERTS` series is in the
//! metric history as Prometheus writes it.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::Value;
use tracerd::model::{MetricValue, MetricsUpdate};
use tracerd::native::NodeMessage;

use crate::alerts::Alertmanager;
use crate::history::{get_json, instant};
use crate::support::*;

const MEM: &str = "cardano.node.metrics.Mem.resident_int";

/// One group, one rule: `MemHigh` when the node's resident memory is over 100, after `for_`
/// (`alerts_for_state` uses it with its own `for`).
pub(crate) fn mem_high_rules(for_: &str) -> String {
    format!(
        r#"groups:
  - name: nodes
    interval: 500ms
    rules:
      - alert: MemHigh
        expr: cardano_node_metrics_Mem_resident_int > 100
        for: {for_}
        labels: {{ severity: page }}
        annotations:
          summary: '{{{{ $labels.node_name }}}} is high'
"#
    )
}

/// The node's resident memory as one metrics update.
pub(crate) fn gauge(v: f64) -> NodeMessage {
    NodeMessage::Metrics(MetricsUpdate {
        full: false,
        metrics: vec![(MEM.to_string(), MetricValue::Gauge(v))],
    })
}

/// The MemHigh alerts tracerd lists (`/api/v1/alerts`).
fn listed(port: u16) -> Vec<Value> {
    let (status, v) = get_json(port, "/api/v1/alerts");
    assert_eq!(status, 200, "{v}");
    v["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["labels"]["alertname"] == "MemHigh")
        .cloned()
        .collect()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_alert_survives_reload_and_restart() {
    let am_port = free_port();
    let am = Arc::new(blocking(move || Alertmanager::start(am_port)).await);
    let ts_port = free_port();
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = rules_dir.path().join("rules.yml");
    std::fs::write(&rules, mem_high_rules("3s")).unwrap();
    let mut d = Daemon::configure(
        |_, _| String::new(),
        &format!(
            "  history: {{sampleIntervalSecs: 0.2}}\n  alerts:\n    ruleFiles: [\"{}\"]\n    \
             alertmanagers: [\"http://127.0.0.1:{am_port}\"]\n\
             hasTimeseries: {{epHost: 127.0.0.1, epPort: {ts_port}}}\n",
            rules.display()
        ),
    );
    let state = rules_dir.path().join("state");
    let start = |d: &mut Daemon| {
        let mut cmd = d.command();
        cmd.arg("--state-dir").arg(&state).stdout(Stdio::null());
        d.spawn_command(cmd);
    };
    start(&mut d);
    let mut b = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay-b").await;
    // Firing after `for` (3 s).
    let deadline = Instant::now() + Duration::from_secs(15);
    let first = loop {
        b.framed.send(gauge(150.0)).await.unwrap();
        let got = blocking(move || listed(ts_port)).await;
        if let Some(a) = got.iter().find(|a| a["state"] == "firing") {
            break a.clone();
        }
        assert!(Instant::now() < deadline, "never fired: {got:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let active_at = first["activeAt"].clone();
    let am2 = am.clone();
    let at_am = crate::alerts_traces::wait_for(am2, 10, "at Alertmanager", |got| {
        got.iter().any(|a| a["labels"]["alertname"] == "MemHigh")
    })
    .await;
    let starts_at = at_am[0]["startsAt"].clone();

    // The ALERTS series, as Prometheus writes it: firing now, pending no longer (stale).
    let firing = blocking(move || instant(ts_port, "ALERTS", None)).await;
    assert_eq!(firing.len(), 1, "{firing:?}");
    let m = &firing[0]["metric"];
    assert_eq!(
        (
            &m["alertname"],
            &m["alertstate"],
            &m["node_name"],
            &m["severity"]
        ),
        (
            &Value::from("MemHigh"),
            &Value::from("firing"),
            &Value::from("relay-b"),
            &Value::from("page")
        ),
        "{firing:?}"
    );
    assert_eq!(firing[0]["value"][1], "1");
    let pending = blocking(move || {
        instant(
            ts_port,
            "count_over_time(ALERTS{alertstate=\"pending\"}[1m])",
            None,
        )
    })
    .await;
    assert_eq!(
        pending.len(),
        1,
        "the pending period was written: {pending:?}"
    );

    // SIGHUP: nothing about the alert changes.
    d.signal("HUP");
    d.wait_log("config reloaded", 1);
    b.framed.send(gauge(150.0)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let got = blocking(move || listed(ts_port)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (&got[0]["state"], &got[0]["activeAt"]),
        (&Value::from("firing"), &active_at)
    );

    // Restart: stopped cleanly, started again on the same state directory.
    // Stopped with the node still connected: an evaluation between the node leaving and
    // the stop would see its series go and rightly end the alert (evaluations stop with
    // the shutdown, before the sessions drain).
    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(20)).success());
    drop(b);
    assert!(state.join("alerts-state.json").is_file());
    start(&mut d);
    let restarted = Instant::now();
    let mut b = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay-b").await;
    // Within the first 2 s (less than `for`) it is listed firing, with its old activeAt,
    // and never pending.
    let mut seen_firing = false;
    while restarted.elapsed() < Duration::from_secs(2) {
        b.framed.send(gauge(150.0)).await.unwrap();
        let got = blocking(move || listed(ts_port)).await;
        assert_eq!(got.len(), 1, "restored: {got:?}\n{}", d.stderr());
        assert_eq!(got[0]["state"], "firing", "no new pending period: {got:?}");
        assert_eq!(got[0]["activeAt"], active_at);
        seen_firing = true;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen_firing);
    // ALERTS_FOR_STATE after the restart: the restored activeAt, in whole seconds.
    let want = crate::alerts::rfc3339_secs(active_at.as_str().unwrap()).floor();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = blocking(move || instant(ts_port, "ALERTS_FOR_STATE", None)).await;
        if let Some(s) = got.first() {
            assert_eq!(s["value"][1], want.to_string(), "{got:?}");
            assert!(s["metric"].get("alertstate").is_none(), "{got:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ALERTS_FOR_STATE after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        d.stderr().contains("pending and firing alerts restored"),
        "{}",
        d.stderr()
    );
    // Alertmanager has it with the same start.
    let am2 = am.clone();
    let sa = starts_at.clone();
    crate::alerts_traces::wait_for(am2, 10, "same startsAt after the restart", move |got| {
        got.iter()
            .any(|a| a["labels"]["alertname"] == "MemHigh" && a["startsAt"] == sa)
    })
    .await;

    // The node recovers: resolved; the history has one firing and one resolution.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        b.framed.send(gauge(50.0)).await.unwrap();
        if blocking(move || listed(ts_port)).await.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "not resolved");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, v) = blocking(move || get_json(ts_port, "/api/alerts/history")).await;
    assert_eq!(status, 200, "{v}");
    let events = v["data"]["events"].as_array().unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["resolved", "firing"],
        "newest first, no second firing: {v}"
    );
    assert_eq!(events[1]["labels"]["node_name"], "relay-b");
    assert_eq!(events[1]["alertname"], "MemHigh");
    assert_eq!(events[0]["startsAt"], events[1]["at"]);
    let parse = |s: &Value| {
        // Same instant, whichever precision each printer used.
        s.as_str()
            .unwrap()
            .trim_end_matches('Z')
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    };
    assert_eq!(
        parse(&events[1]["at"]),
        parse(&starts_at),
        "{v} vs {starts_at}"
    );
    // And the history itself survives a restart.
    // Stopped with the node still connected: an evaluation between the node leaving and
    // the stop would see its series go and rightly end the alert (evaluations stop with
    // the shutdown, before the sessions drain).
    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(20)).success());
    drop(b);
    start(&mut d);
    let (_, v2) = blocking(move || get_json(ts_port, "/api/alerts/history")).await;
    assert_eq!(v2["data"]["events"], v["data"]["events"]);
}
