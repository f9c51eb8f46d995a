//! Trace and lifecycle rules end to end (issue 15, point 1): tracerd's own rule files
//! (`traceRuleFiles`, top-level `trace_groups`) evaluated on the trace objects nodes send and
//! on the registry's facts, the alerts delivered to a real Alertmanager; `tracerd validate`
//! names a bad trace rule with file and line.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::Value;
use tracerd::model::{DataPoint, DetailLevel, Severity, TraceBatch, TraceObject};
use tracerd::native::NodeMessage;

use crate::alerts::Alertmanager;
use crate::support::*;

pub const TRACE_RULES: &str = r#"trace_groups:
  - name: node-traces
    interval: 500ms
    rules:
      - alert: NodeErrors
        trace: { severity: Error, namespace: Net, count: 3, window: 30s }
        labels: { severity: page }
        annotations:
          summary: '{{ $labels.node_name }} logged {{ $value }} errors'
      - alert: ForgeFailed
        trace:
          severity: Warning
          field: { path: data.kind, equals: TraceForgeFailed }
          window: 30s
        labels: { severity: warning }
      - alert: NoNodeInfo
        lifecycle: { no_node_info_for: 1s }
        annotations:
          summary: '{{ $labels.node_name }} sent no NodeInfo'
      - alert: StoppedTracing
        lifecycle: { no_traces_for: 2s }
        for: 500ms
"#;

pub fn trace(seq: u64, sev: Severity, ns: &str, machine: &str) -> TraceObject {
    TraceObject {
        namespace: ns.into(),
        severity: sev,
        detail: DetailLevel::Normal,
        timestamp_ns: tracerd::utc::now_unix() as i64 * 1_000_000_000 + seq as i64,
        hostname: "host".into(),
        thread_id: "1".into(),
        machine: machine.into(),
        form: Default::default(),
        human: None,
    }
}

pub fn node_info(name: &str) -> NodeMessage {
    NodeMessage::DataPoints(vec![DataPoint {
        name: "NodeInfo".into(),
        json: format!(r#"{{"niName":"{name}","niProtocol":"native"}}"#),
    }])
}

/// Polls `am` on the blocking pool until `done` holds for its alerts, at most `secs`.
pub async fn wait_for(
    am: Arc<Alertmanager>,
    secs: u64,
    what: &'static str,
    done: impl Fn(&[Value]) -> bool + Send + 'static,
) -> Vec<Value> {
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = am.alerts();
            if done(&got) {
                return got;
            }
            assert!(Instant::now() < deadline, "{what}: {got:#?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap()
}

fn named<'a>(alerts: &'a [Value], name: &str) -> Vec<&'a Value> {
    alerts
        .iter()
        .filter(|a| a["labels"]["alertname"] == name)
        .collect()
}

/// relay-b logs Error traces in `Net.*` and a forge failure: `NodeErrors` and `ForgeFailed`
/// fire for it (and only it) with the rule's labels and annotations; quiet, a node that sent
/// no NodeInfo and stopped tracing fires `NoNodeInfo` and `StoppedTracing`. The two
/// streaming nodes lose nothing. No `hasTimeseries`: trace rules do not need it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_and_lifecycle_rules_reach_alertmanager() {
    let am_port = free_port();
    let am = tokio::task::spawn_blocking(move || Alertmanager::start(am_port))
        .await
        .unwrap();
    let am = Arc::new(am);
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("traces.yml");
    std::fs::write(&rules, TRACE_RULES).unwrap();
    let d = Daemon::start(&format!(
        "  alerts:\n    traceRuleFiles: [\"{}\"]\n    alertmanagers: [\"http://127.0.0.1:{am_port}\"]\n",
        rules.display()
    ));
    let mut a = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay-a").await;
    let mut b = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay-b").await;
    let mut quiet = FakeNode::handshake(connect_tcp(d.tcp_port).await, "quiet").await;
    a.framed.send(node_info("relay-a")).await.unwrap();
    b.framed.send(node_info("relay-b")).await.unwrap();
    let send = |seq: u64, objects: Vec<TraceObject>| {
        NodeMessage::Traces(TraceBatch {
            first_seq: seq,
            objects,
        })
    };
    quiet
        .framed
        .send(send(1, vec![trace(1, Severity::Info, "Startup", "{}")]))
        .await
        .unwrap();
    // relay-b: three Net errors (one Critical), plus what must not count: errors outside
    // Net, warnings inside it. relay-a: warnings and a forge-failure look-alike.
    let b_first = vec![
        trace(1, Severity::Error, "Net.Peers", "{}"),
        trace(2, Severity::Error, "Chain.DB", "{}"),
        trace(3, Severity::Warning, "Net.Peers", "{}"),
        trace(4, Severity::Critical, "Net.Mux", "{}"),
        trace(5, Severity::Error, "Network.X", "{}"),
        trace(6, Severity::Error, "Net", "{}"),
        trace(
            7,
            Severity::Warning,
            "Forge",
            r#"{"data":{"kind":"TraceForgeFailed"}}"#,
        ),
    ];
    b.framed.send(send(1, b_first)).await.unwrap();
    let a_first = vec![
        trace(1, Severity::Warning, "Net.Peers", "{}"),
        trace(
            2,
            Severity::Warning,
            "Forge",
            r#"{"data":{"kind":"TraceForged"}}"#,
        ),
    ];
    a.framed.send(send(1, a_first)).await.unwrap();
    let (mut sa, mut sb) = (3u64, 8u64);
    let want = |got: &[Value]| {
        ["NodeErrors", "ForgeFailed", "NoNodeInfo", "StoppedTracing"]
            .iter()
            .all(|n| !named(got, n).is_empty())
    };
    let started = Instant::now();
    let poll = tokio::spawn(wait_for(am.clone(), 15, "every rule fires", want));
    // relay-a and relay-b keep streaming Info traces meanwhile.
    while !poll.is_finished() {
        a.framed
            .send(send(sa, vec![trace(sa, Severity::Info, "Net.Peers", "{}")]))
            .await
            .unwrap();
        b.framed
            .send(send(sb, vec![trace(sb, Severity::Info, "Net.Peers", "{}")]))
            .await
            .unwrap();
        sa += 1;
        sb += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got = poll.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let errors = named(&got, "NodeErrors");
    assert_eq!(errors.len(), 1, "{got:#?}");
    assert_eq!(errors[0]["labels"]["node_name"], "relay-b");
    assert_eq!(errors[0]["labels"]["severity"], "page");
    assert_eq!(
        errors[0]["annotations"]["summary"], "relay-b logged 3 errors",
        "Error and above within Net only: {got:#?}"
    );
    let forge = named(&got, "ForgeFailed");
    assert_eq!(forge.len(), 1, "{got:#?}");
    assert_eq!(forge[0]["labels"]["node_name"], "relay-b");
    assert_eq!(forge[0]["labels"]["severity"], "warning");
    let info = named(&got, "NoNodeInfo");
    assert_eq!(info.len(), 1, "{got:#?}");
    assert_eq!(info[0]["labels"]["node_name"], "quiet");
    assert_eq!(info[0]["annotations"]["summary"], "quiet sent no NodeInfo");
    let stopped = named(&got, "StoppedTracing");
    assert_eq!(stopped.len(), 1, "only the quiet node: {got:#?}");
    assert_eq!(stopped[0]["labels"]["node_name"], "quiet");

    // The streaming nodes lost nothing.
    a.wait_ack(sa - 1).await;
    b.wait_ack(sb - 1).await;
    for (node, sent) in [("relay-a", sa - 1), ("relay-b", sb - 1)] {
        let lines = read_node_lines(&d.logs().join(node));
        assert_eq!(lines.len() as u64, sent, "{node} lost objects");
    }

    // The quiet node sends NodeInfo and traces again: both lifecycle alerts resolve.
    quiet.framed.send(node_info("quiet")).await.unwrap();
    let poll = tokio::spawn(wait_for(
        am.clone(),
        15,
        "lifecycle alerts resolve",
        |got| named(got, "NoNodeInfo").is_empty() && named(got, "StoppedTracing").is_empty(),
    ));
    let mut sq = 2u64;
    while !poll.is_finished() {
        quiet
            .framed
            .send(send(sq, vec![trace(sq, Severity::Info, "Startup", "{}")]))
            .await
            .unwrap();
        sq += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    poll.await.unwrap();
}

#[test]
fn validate_names_bad_trace_rules_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        TRACE_RULES.replace("severity: Error", "severity: Err"),
    )
    .unwrap();
    let unknown = dir.path().join("unknown.yml");
    std::fs::write(
        &unknown,
        TRACE_RULES.replace("count: 3", "count: 3, windw: 1m"),
    )
    .unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!(
            "networkMagic: {MAGIC}\nnetwork: null\nlogging: [{{logRoot: {}, logMode: FileMode, logFormat: ForMachine}}]\n\
             tracerd:\n  alerts:\n    traceRuleFiles: [\"{}\", \"{}\"]\n",
            dir.path().join("logs").display(),
            bad.display(),
            unknown.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tracerd"))
        .arg("-c")
        .arg(&config)
        .arg("validate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:5: group \"node-traces\", rule \"NodeErrors\": trace.severity \"Err\" is not a severity",
            bad.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&unknown.display().to_string())
            && err.contains("unknown field `windw`")
            && err.contains("line 6"),
        "{err}"
    );
}

/// The shipped trace rule file (config/alerts/traces.tracerd.yaml) passes `tracerd validate`.
#[test]
fn shipped_trace_rules_validate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!(
            "networkMagic: {MAGIC}\nnetwork: null\nlogging: [{{logRoot: {}, logMode: FileMode, logFormat: ForMachine}}]\n\
             tracerd:\n  alerts:\n    traceRuleFiles: [\"{}\"]\n",
            dir.path().join("logs").display(),
            root.join("config/alerts/traces.tracerd.yaml").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tracerd"))
        .arg("-c")
        .arg(&config)
        .arg("validate")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
