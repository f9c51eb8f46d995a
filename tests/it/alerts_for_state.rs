//! `ALERTS_FOR_STATE` (issue 15, point 2): written into the metric history as Prometheus
//! writes it (value: the alert's `activeAt` in unix seconds; the alert's labels without
//! `alertstate`), and a pending alert's `for` resumed after a restart the way Prometheus's
//! `for` restore moves `activeAt` (the time down does not count as pending).

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::Value;

use crate::alerts::rfc3339_secs;
use crate::alerts_state::{gauge, mem_high_rules};
use crate::history::{get_json, instant};
use crate::support::*;

/// `for` (4 s) is over the grace period (1 s): a pending alert is restored.
const FOR: &str = "4s";

/// The MemHigh alert tracerd lists (`/api/v1/alerts`): its state and `activeAt` (s).
fn listed(port: u16) -> Option<(String, f64)> {
    let (status, v) = get_json(port, "/api/v1/alerts");
    assert_eq!(status, 200, "{v}");
    let alerts = v["data"]["alerts"].as_array().unwrap();
    let a: Vec<_> = alerts
        .iter()
        .filter(|a| a["labels"]["alertname"] == "MemHigh")
        .collect();
    assert!(a.len() <= 1, "{v}");
    a.first().map(|a| {
        (
            a["state"].as_str().unwrap().to_string(),
            rfc3339_secs(a["activeAt"].as_str().unwrap()),
        )
    })
}

/// The one `ALERTS_FOR_STATE` series: its labels (checked) and value.
fn for_state(port: u16) -> Option<f64> {
    let got = instant(port, "ALERTS_FOR_STATE", None);
    assert!(got.len() <= 1, "{got:?}");
    let s = got.first()?;
    let mut names: Vec<&str> = s["metric"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["__name__", "alertname", "node_name", "severity"],
        "Prometheus's labels, no alertstate: {s}"
    );
    assert_eq!(
        (&s["metric"]["alertname"], &s["metric"]["node_name"]),
        (&Value::from("MemHigh"), &Value::from("relay-b"))
    );
    Some(s["value"][1].as_str().unwrap().parse().unwrap())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_for_state_is_written_and_pending_for_resumes_after_a_restart() {
    let ts_port = free_port();
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = rules_dir.path().join("rules.yml");
    std::fs::write(&rules, mem_high_rules(FOR)).unwrap();
    let mut d = Daemon::configure(
        |_, _| String::new(),
        &format!(
            "  history: {{sampleIntervalSecs: 0.2}}\n  alerts:\n    ruleFiles: [\"{}\"]\n    \
             forGracePeriodSecs: 1\n\
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

    // Pending, with ALERTS_FOR_STATE = activeAt in whole seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    let active_at = loop {
        b.framed.send(gauge(150.0)).await.unwrap();
        let got = blocking(move || listed(ts_port)).await;
        if let Some((state, at)) = got {
            assert_eq!(state, "pending", "for is 4 s");
            break at;
        }
        assert!(Instant::now() < deadline, "never pending:\n{}", d.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = blocking(move || for_state(ts_port)).await;
        if v == Some(active_at.floor()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ALERTS_FOR_STATE {v:?}, activeAt {active_at}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // About 1.5 s of the 4 s spent pending, then tracerd stops and stays down 3 s.
    while crate::history::now_secs() < active_at + 1.5 {
        b.framed.send(gauge(150.0)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        blocking(move || listed(ts_port)).await.map(|s| s.0),
        Some("pending".into())
    );
    // Stopped with the node still connected: an evaluation between the node leaving and
    // the stop would see its series go and rightly end the alert (evaluations stop with
    // the shutdown, before the sessions drain).
    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(20)).success());
    drop(b);
    let stopped = crate::history::now_secs();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = crate::history::now_secs();
    start(&mut d);
    let mut b = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay-b").await;

    // Restored pending, activeAt moved on by the time down (about 2.5 s of `for` left), and
    // ALERTS_FOR_STATE says the same: the time down did not count as pending.
    let deadline = Instant::now() + Duration::from_secs(10);
    let resumed = loop {
        b.framed.send(gauge(150.0)).await.unwrap();
        let got = blocking(move || listed(ts_port)).await;
        let v = blocking(move || for_state(ts_port)).await;
        if let (Some((state, at)), Some(v)) = (got.clone(), v) {
            assert_eq!(
                state, "pending",
                "the time down counted as pending: {at} vs {active_at}"
            );
            assert_eq!(v, at.floor(), "ALERTS_FOR_STATE is the restored activeAt");
            break at;
        }
        assert!(
            Instant::now() < deadline,
            "not restored: {got:?}\n{}",
            d.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let shift = resumed - active_at;
    assert!(
        shift >= 3.0 && shift <= crate::history::now_secs() - stopped + 2.0,
        "activeAt moved by {shift} s (down {} s from the stop, started {} s after it)",
        crate::history::now_secs() - stopped,
        started - stopped
    );
    assert!(
        d.stderr().contains("pending and firing alerts restored"),
        "{}",
        d.stderr()
    );

    // It fires once the rest of its `for` has passed, ALERTS_FOR_STATE unchanged.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        b.framed.send(gauge(150.0)).await.unwrap();
        let got = blocking(move || listed(ts_port)).await;
        if got.as_ref().is_some_and(|(s, _)| s == "firing") {
            assert_eq!(got.unwrap().1, resumed);
            break;
        }
        assert!(Instant::now() < deadline, "never fired: {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(crate::history::now_secs() >= resumed + 4.0 - 0.5);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let firing =
            blocking(move || instant(ts_port, "ALERTS{alertstate=\"firing\"}", None)).await;
        let v = blocking(move || for_state(ts_port)).await;
        if firing.len() == 1 {
            assert_eq!(v, Some(resumed.floor()));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no firing ALERTS series: {firing:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
