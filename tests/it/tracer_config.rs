//! Issue 19: a node's effective tracing configuration, from simulated Cardano nodes'
//! `Reflection.TracerConfigInfo` traces to `GET /api/nodes/<slug>/tracer-config` (JSON and
//! YAML), `/api/tracer-configs/diff`, `PUT` (501 for a Cardano node) and
//! `tracerd nodes config NAME`, over the real binary and real sockets.
//!
//! The trace's shape is cardano-node's: `traceEffectiveConfiguration`
//! (trace-dispatcher `Cardano/Logging/Tracer/Composed.hs`, called from
//! `cardano-node/src/Cardano/Node/Tracing/Tracers.hs:172`) traces `TracerInfoConfig` under
//! `Reflection` with severity Notice; `forMachine` is `mconcat ["conf" .= toJSON tc]`, and
//! `TraceConfig`'s JSON (trace-dispatcher 2.12.1, `configToRepresentation`) is
//! `{"ApplicationName","Forwarder","MetricsPrefix","Options","PrometheusSimpleRun"}` — see
//! `../scratch/upstream/NOTES.md` §e for the example line this one follows.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;
use tracerd::cardano::mux::Mode;
use tracerd::model::{DetailLevel, MachineForm, Severity, TraceObject};
use tracerd_sim::cardano::{sample_object, SimNode};

use crate::http::http_get;
use crate::support::*;

const T0: i64 = 1_784_714_812_000_000_000;

/// A mainnet relay's configuration (from `configuration/cardano/mainnet-config.json`, 2.12.1 shape).
fn relay_config() -> Value {
    json!({
        "ApplicationName": null,
        "Forwarder": {"maxReconnectDelay": 30, "queueSize": 128, "verbosity": "Minimum"},
        "MetricsPrefix": "cardano.node.metrics.",
        "Options": {
            "": {"backends": ["EKGBackend", "Forwarder", "PrometheusSimple 127.0.0.1 12798",
                              "Stdout HumanFormatColoured"],
                 "detail": "DNormal", "severity": "Notice"},
            "BlockFetch.Client.CompletedBlockFetch": {"maxFrequency": 2.0},
            "ChainDB": {"severity": "Info"},
            "Mempool": {"severity": "Silence"}
        },
        "PrometheusSimpleRun": null
    })
}

/// The same node after an operator chased a ChainDB problem and turned the mempool on.
fn debug_config() -> Value {
    let mut c = relay_config();
    c["Options"]["ChainDB"]["severity"] = json!("Debug");
    c["Options"]["ChainDB"]["detail"] = json!("DDetailed");
    c["Options"].as_object_mut().unwrap().remove("Mempool");
    c["Forwarder"]["queueSize"] = json!(192);
    c
}

/// The trace as cardano-node forwards it: its whole machine line, keys in the envelope's order.
fn config_trace(conf: &Value, timestamp_ns: i64) -> TraceObject {
    let mut at = String::new();
    tracerd::utc::push_rfc3339_nanos(&mut at, timestamp_ns);
    let machine = format!(
        r#"{{"at":"{at}","ns":"Reflection.TracerConfigInfo","data":{{"conf":{conf}}},"sev":"Notice","thread":"5","host":"myhost"}}"#
    );
    TraceObject {
        namespace: "Reflection.TracerConfigInfo".into(),
        severity: Severity::Notice,
        detail: DetailLevel::Normal,
        timestamp_ns,
        hostname: "myhost".into(),
        thread_id: "5".into(),
        human: Some(format!("Effective Tracer config is:  {conf}").into()),
        machine: machine.into(),
        form: MachineForm::Line,
    }
}

fn raw_trace(machine: &str) -> TraceObject {
    let mut o = config_trace(&json!({}), T0);
    o.machine = machine.to_string().into();
    o
}

async fn connect(path: &Path) -> UnixStream {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match UnixStream::connect(path).await {
            Ok(s) => return s,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot connect to {path:?}: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `PUT path` with a JSON body: (status, body).
fn http_put(port: u16, path: &str, body: &str) -> (u16, String) {
    let mut s = crate::http::connect_http(port);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (
        head.split(' ').nth(1).unwrap().parse().unwrap(),
        body.to_string(),
    )
}

/// Lines under a node's directory whose `ns` is not the configuration trace.
fn forwarded(dir: &Path) -> Vec<u64> {
    // Polled from before the node's first batch: its directory may not exist yet.
    if !dir.exists() {
        return Vec::new();
    }
    let mut seqs: Vec<u64> = read_complete_node_lines(dir)
        .iter()
        .filter_map(|l| l["data"]["seq"].as_u64())
        .collect();
    seqs.sort_unstable();
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cardano_nodes_configurations_are_served_diffed_and_not_pushed() {
    let prom = free_port();
    let d = Daemon::start_with(
        |dir, _| {
            format!(
                "networkMagic: {MAGIC}\nnetwork: {{ tag: AcceptAt, contents: \"{}\" }}\nekgRequestFreq: 0.1\nlogging:\n  - logRoot: {}\n    logMode: FileMode\n    logFormat: ForMachine\n",
                dir.join("c.sock").display(),
                dir.join("logs").display()
            )
        },
        &format!("hasPrometheus: {{epHost: 127.0.0.1, epPort: {prom}}}\n"),
    );
    let sock = d.dir.path().join("c.sock");
    let cancel = CancellationToken::new();
    let mut nodes = Vec::new();
    // Two well-behaved relays trace their configuration among their other traces; a third
    // sends broken configuration traces (not JSON, a conf that is no object, none at all).
    for (name, first) in [
        ("relay-1", Some(relay_config())),
        ("relay-2", Some(debug_config())),
        ("relay-bad", None),
    ] {
        let node = Arc::new(SimNode::new(name, MAGIC));
        node.push((0..100).map(|s| sample_object(name, s, T0 + s as i64)));
        match &first {
            Some(conf) => node.push([config_trace(conf, T0 + 500)]),
            None => node.push([
                raw_trace("{\"at\":"),
                raw_trace(r#"{"ns":"Reflection.TracerConfigInfo","data":{"conf":"all"}}"#),
                raw_trace(r#"{"ns":"Reflection.TracerConfigInfo","data":{}}"#),
            ]),
        }
        node.push((100..200).map(|s| sample_object(name, s, T0 + 1000 + s as i64)));
        let stream = connect(&sock).await;
        let (n, c) = (node.clone(), cancel.clone());
        tokio::spawn(async move { n.run(stream, Mode::Initiator, &c).await });
        nodes.push(node);
    }
    let logs = d.logs();
    wait_for("every forwarded trace on disk", || {
        ["relay-1", "relay-2", "relay-bad"]
            .iter()
            .all(|n| forwarded(&logs.join(n)).len() == 200)
    })
    .await;
    // Nothing of the well-behaved nodes was lost beside the broken traces.
    for n in ["relay-1", "relay-2"] {
        assert_eq!(
            forwarded(&logs.join(n)),
            (0..200).collect::<Vec<_>>(),
            "{n}"
        );
    }

    let get = |path: String, accept: &'static str| {
        tokio::task::spawn_blocking(move || http_get(prom, &path, &[("Accept", accept)]))
    };
    // JSON: the configuration as the node reported it, with the node's time of the trace.
    let (code, ct, body) = get(
        "/api/nodes/relay-1/tracer-config".into(),
        "application/json",
    )
    .await
    .unwrap();
    assert_eq!((code, ct.as_str()), (200, "application/json"), "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["config"], relay_config());
    assert_eq!(doc["node"], "relay-1");
    assert_eq!(doc["protocol"], "cardano");
    assert_eq!(doc["namespace"], "Reflection.TracerConfigInfo");
    let mut at = String::new();
    tracerd::utc::push_rfc3339_nanos(&mut at, T0 + 500);
    assert_eq!(doc["reportedAt"], at.as_str());
    assert!(doc["receivedAt"].as_str().unwrap().starts_with("20"));

    // YAML: the same document.
    let (code, ct, body) = get(
        "/api/nodes/relay-1/tracer-config".into(),
        "application/yaml",
    )
    .await
    .unwrap();
    assert_eq!((code, ct.as_str()), (200, "application/yaml"), "{body}");
    let from_yaml: Value = serde_norway::from_str(&body).unwrap();
    assert_eq!(from_yaml, doc);

    // The diff, key by key: exactly what the operator changed.
    let (code, _, body) = get(
        "/api/tracer-configs/diff?a=relay-1&b=relay-2".into(),
        "application/json",
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let diff: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(diff["a"]["node"], "relay-1");
    assert_eq!(diff["b"]["node"], "relay-2");
    assert_eq!(
        diff["differences"],
        json!([
            {"key": ["Forwarder", "queueSize"], "a": 128, "b": 192},
            {"key": ["Options", "ChainDB", "detail"], "b": "DDetailed"},
            {"key": ["Options", "ChainDB", "severity"], "a": "Info", "b": "Debug"},
            {"key": ["Options", "Mempool", "severity"], "a": "Silence"},
        ])
    );
    assert_eq!(diff["equalKeys"], 9);

    // The broken reports: no configuration, and the route says why.
    let (code, _, body) = get("/api/nodes/relay-bad/tracer-config".into(), "*/*")
        .await
        .unwrap();
    assert_eq!(code, 404);
    assert!(
        body.contains("3 such trace(s) refused") && body.contains("no \"conf\" object"),
        "{body}"
    );
    let (code, _, body) = get(
        "/api/tracer-configs/diff?a=relay-1&b=relay-bad".into(),
        "*/*",
    )
    .await
    .unwrap();
    assert_eq!(code, 404, "{body}");
    let (code, _, _) = get("/api/nodes/nobody/tracer-config".into(), "*/*")
        .await
        .unwrap();
    assert_eq!(code, 404);
    let (code, _, body) = get("/api/tracer-configs/diff?a=relay-1".into(), "*/*")
        .await
        .unwrap();
    assert_eq!(code, 400, "{body}");

    // PUT to a Cardano node: 501, why, and what to do instead.
    let edited = serde_json::to_string(&doc).unwrap();
    let (code, body) = tokio::task::spawn_blocking(move || {
        http_put(prom, "/api/nodes/relay-1/tracer-config", &edited)
    })
    .await
    .unwrap();
    assert_eq!(code, 501, "{body}");
    assert!(
        body.contains("no message from the tracer to the node")
            && body.contains("node's own config file"),
        "{body}"
    );

    // The CLI prints the same configuration.
    let config = d.config_path().display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_tracerd"))
        .args(["nodes", "config", "relay-2", "-c", &config])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_norway::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["config"], debug_config());
    let out = Command::new(env!("CARGO_BIN_EXE_tracerd"))
        .args(["nodes", "config", "relay-9", "-c", &config])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no node named \"relay-9\"") && err.contains("relay-1"),
        "{err}"
    );
    cancel.cancel();
}
