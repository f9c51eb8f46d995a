//! Traces to Grafana Loki (issue 18, point 3). No Loki can be installed here, so the receiver
//! is a small HTTP server in this test that decodes every push with its own prost
//! definitions of Loki's published `pkg/push/push.proto` (grafana/loki
//! `65e30f8488e8a5ea2013c6881675f8103a8f6bc7`) and stores entries as Loki does: an entry
//! identical to one its stream holds (same timestamp, same line) is stored once.
//!
//! Three nodes stream objects of several severities and namespaces while the receiver answers
//! 503 then 429 then 200 to the first push, 400 to one push later, 503 to everything for a
//! while (an outage), and tracerd is killed -9 once while it catches up. Afterwards: every
//! push carried the tenant and protobuf content type; every stream's labels are exactly
//! node, level (the severity's class), namespace (its root) and the static label; every
//! stream's entries are in time order; every acknowledged object not in the refused push is
//! stored exactly once, the refused push's objects never (not retried), and tracerd counted
//! them.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tracerd::model::{DetailLevel, Severity, TraceBatch, TraceObject};
use tracerd::native::NodeMessage;

use crate::http::http_get;
use crate::ship_support::machine_lines;
use crate::support::*;

/// Loki's `logproto` messages, as published (field numbers of `push.proto`).
mod logproto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub streams: Vec<StreamAdapter>,
        #[prost(string, tag = "2")]
        pub format: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StreamAdapter {
        #[prost(string, tag = "1")]
        pub labels: String,
        #[prost(message, repeated, tag = "2")]
        pub entries: Vec<EntryAdapter>,
        #[prost(uint64, tag = "3")]
        pub hash: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPairAdapter {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EntryAdapter {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        #[prost(string, tag = "2")]
        pub line: String,
        #[prost(message, repeated, tag = "3")]
        pub structured_metadata: Vec<LabelPairAdapter>,
        #[prost(message, repeated, tag = "4")]
        pub parsed: Vec<LabelPairAdapter>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

/// One push as received.
#[derive(Debug, Clone)]
pub struct Push {
    pub status: u16,
    pub tenant: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    /// (labels, unix ns, line) of every entry, in request order.
    pub entries: Vec<(String, i64, String)>,
}

#[derive(Default)]
pub struct LokiState {
    /// Statuses to answer to the next pushes, in order (then 200).
    pub script: VecDeque<u16>,
    /// Answer 503 to everything while set.
    pub down: bool,
    /// Time each answer takes.
    pub delay: Duration,
    pub pushes: Vec<Push>,
}

/// A Loki push receiver on loopback.
pub struct FakeLoki {
    pub port: u16,
    pub state: Arc<Mutex<LokiState>>,
}

async fn push(
    axum::extract::State(state): axum::extract::State<Arc<Mutex<LokiState>>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&body)
        .expect("a Snappy block-compressed body");
    let req: logproto::PushRequest =
        prost::Message::decode(raw.as_slice()).expect("a logproto.PushRequest");
    let mut entries = Vec::new();
    for s in &req.streams {
        for e in &s.entries {
            assert!(e.structured_metadata.is_empty() && e.parsed.is_empty());
            let t = e.timestamp.as_ref().expect("every entry has a timestamp");
            entries.push((
                s.labels.clone(),
                t.seconds * 1_000_000_000 + i64::from(t.nanos),
                e.line.clone(),
            ));
        }
    }
    let delay = state.lock().unwrap().delay;
    tokio::time::sleep(delay).await;
    let mut st = state.lock().unwrap();
    let status = if st.down {
        503
    } else {
        st.script.pop_front().unwrap_or(200)
    };
    st.pushes.push(Push {
        status,
        tenant: header("x-scope-orgid"),
        content_type: header("content-type"),
        body: body.to_vec(),
        entries,
    });
    axum::http::StatusCode::from_u16(status).unwrap()
}

impl FakeLoki {
    pub async fn start() -> FakeLoki {
        let state = Arc::new(Mutex::new(LokiState::default()));
        let app = axum::Router::new()
            .route("/loki/api/v1/push", axum::routing::post(push))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeLoki { port, state }
    }

    pub fn set(&self, f: impl FnOnce(&mut LokiState)) {
        f(&mut self.state.lock().unwrap())
    }

    pub fn pushes(&self) -> Vec<Push> {
        self.state.lock().unwrap().pushes.clone()
    }
}

const NODES: [&str; 3] = ["loki-relay-a", "loki-relay-b", "loki-bp"];
const NAMESPACES: [&str; 3] = [
    "ChainDB.AddBlock",
    "Net.PeerSelection.Counters",
    "Forge.Loop",
];
const SEVERITIES: [Severity; 4] = [
    Severity::Info,
    Severity::Warning,
    Severity::Error,
    Severity::Notice,
];

fn object(node: &str, seq: u64) -> TraceObject {
    TraceObject {
        namespace: NAMESPACES[(seq % 3) as usize].into(),
        severity: SEVERITIES[(seq % 4) as usize],
        detail: DetailLevel::Normal,
        timestamp_ns: 1_784_714_812_000_000_000 + seq as i64 * 1000,
        hostname: "host".into(),
        thread_id: "7".into(),
        machine: format!("{{\"node\":\"{node}\",\"seq\":{seq}}}").into(),
        human: None,
        form: Default::default(),
    }
}

/// `batches` batches of 40 objects from the node's acknowledged sequence number on.
async fn stream(port: u16, name: &'static str, batches: u64) -> u64 {
    let framed = connect_tcp(port).await;
    let mut node = FakeNode::handshake(framed, name).await;
    let mut next = node.acked + 1;
    for _ in 0..batches {
        let objects = (next..next + 40).map(|s| object(name, s)).collect();
        node.framed
            .send(NodeMessage::Traces(TraceBatch {
                first_seq: next,
                objects,
            }))
            .await
            .unwrap();
        next += 40;
        node.wait_ack(next - 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.acked
}

async fn round(port: u16, batches: u64) -> Vec<u64> {
    let tasks: Vec<_> = NODES
        .iter()
        .map(|n| tokio::spawn(stream(port, n, batches)))
        .collect();
    let mut acked = Vec::new();
    for t in tasks {
        acked.push(t.await.unwrap());
    }
    acked
}

fn metric(http: u16, needle: &str) -> Option<f64> {
    let (_, _, text) = http_get(http, "/metrics", &[]);
    text.lines()
        .find(|l| l.starts_with(needle))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `{a="b", c="d"}` → name → value (the values tracerd writes hold no escapes here).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or_else(|| panic!("labels {text:?}"));
    inner
        .split(", ")
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.trim_matches('"').to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn loki_gets_every_acknowledged_object_once_in_order_with_its_retry_rules() {
    let loki = FakeLoki::start().await;
    loki.set(|s| s.script.extend([503, 429]));
    let http = free_port();
    let mut d = Daemon::start(&format!(
        "  loki:\n\
         \x20   url: http://127.0.0.1:{}\n\
         \x20   tenant: fleet-a\n\
         \x20   labels: {{tracer: site-a}}\n\
         \x20   batch: {{maxRows: 100, pollMs: 50, timeoutSecs: 5}}\n\
         \x20 shipStateDir: ./ship-state\n\
         hasPrometheus: {{epHost: 127.0.0.1, epPort: {http}}}\n",
        loki.port
    ));
    let port = d.tcp_port;

    round(port, 3).await;
    wait_for("the first push accepted", || {
        loki.pushes().iter().any(|p| p.status == 200)
    })
    .await;
    // One push refused with 400: counted, dropped, not retried.
    loki.set(|s| s.script.push_back(400));
    round(port, 2).await;
    wait_for("the refused push counted", || {
        metric(http, "tracerd_sink_rows_refused_total{sink=\"loki\"}").is_some_and(|v| v > 0.0)
    })
    .await;
    let refused_entries = loki
        .pushes()
        .iter()
        .find(|p| p.status == 400)
        .map(|p| p.entries.len())
        .unwrap();
    assert_eq!(
        metric(http, "tracerd_sink_rows_refused_total{sink=\"loki\"}"),
        Some(refused_entries as f64),
        "every line of the refused push is counted"
    );
    // An outage: every push answered 503 while the nodes go on.
    loki.set(|s| s.down = true);
    round(port, 4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Slow answers, so the kill comes while the sink works through the backlog.
    loki.set(|s| {
        s.down = false;
        s.delay = Duration::from_millis(100);
    });
    // While the sink catches up, tracerd is killed -9 and restarted; the nodes resume.
    wait_for("a push after the outage", || {
        loki.pushes().last().is_some_and(|p| p.status == 200)
    })
    .await;
    d.signal("KILL");
    d.wait(Duration::from_secs(10));
    loki.set(|s| s.delay = Duration::ZERO);
    d.spawn();
    round(port, 3).await;

    // Everything acknowledged reaches the receiver.
    let deadline = Instant::now() + Duration::from_secs(60);
    let pushes = loop {
        let pushes = loki.pushes();
        let stored: usize = pushes
            .iter()
            .filter(|p| p.status == 200)
            .flat_map(|p| &p.entries)
            .collect::<HashSet<_>>()
            .len();
        let refused: usize = pushes
            .iter()
            .filter(|p| p.status == 400)
            .map(|p| p.entries.len())
            .sum();
        let on_disk: u64 = NODES.iter().map(|n| machine_lines(d.logs().join(n))).sum();
        if (stored + refused) as u64 >= on_disk {
            break pushes;
        }
        assert!(
            Instant::now() < deadline,
            "the sink does not catch up: {stored} stored, {refused} refused, {on_disk} on disk"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Headers of every push.
    for p in &pushes {
        assert_eq!(p.tenant.as_deref(), Some("fleet-a"));
        assert_eq!(p.content_type.as_deref(), Some("application/x-protobuf"));
    }
    // 503, then 429, then 200: the same push each time.
    assert_eq!(
        pushes[..3].iter().map(|p| p.status).collect::<Vec<_>>(),
        [503, 429, 200]
    );
    assert!(pushes[1].body == pushes[0].body && pushes[2].body == pushes[0].body);
    // The 400: never sent again, none of its entries stored, all of them counted.
    let refused: Vec<&Push> = pushes.iter().filter(|p| p.status == 400).collect();
    assert_eq!(refused.len(), 1);
    let refused = refused[0];
    assert!(!refused.entries.is_empty());
    assert_eq!(
        pushes.iter().filter(|p| p.body == refused.body).count(),
        1,
        "the refused push was retried"
    );
    let refused_keys: HashSet<(String, u64)> = refused
        .entries
        .iter()
        .map(|(_, _, line)| node_seq(line))
        .collect();

    // Stored as Loki stores: identical entries once; streams in time order.
    let mut held: HashSet<(String, i64, String)> = HashSet::new();
    let mut newest: HashMap<String, i64> = HashMap::new();
    let mut count: HashMap<(String, u64), u32> = HashMap::new();
    let mut duplicates = 0;
    for p in pushes.iter().filter(|p| p.status == 200) {
        for e in &p.entries {
            if !held.insert(e.clone()) {
                duplicates += 1;
                continue;
            }
            let (labels, ts, line) = e;
            let last = newest.entry(labels.clone()).or_insert(i64::MIN);
            assert!(*ts >= *last, "stream {labels} went back in time at {line}");
            *last = *ts;
            // Labels: exactly node, level, namespace and the static one, from the line.
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let want_level = match v["sev"].as_str().unwrap() {
                "Info" | "Notice" => "info",
                "Warning" => "warning",
                "Error" => "error",
                other => panic!("severity {other}"),
            };
            let ns = v["ns"].as_str().unwrap();
            let (node, seq) = node_seq(line);
            let want: BTreeMap<String, String> = [
                ("level", want_level),
                ("namespace", ns.split('.').next().unwrap()),
                ("node", node.as_str()),
                ("tracer", "site-a"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            assert_eq!(parse_labels(labels), want, "{line}");
            assert_eq!(*ts, 1_784_714_812_000_000_000 + seq as i64 * 1000);
            *count.entry((node, seq)).or_default() += 1;
        }
    }
    // A duplicate only comes from the kill's window (the one push sent again).
    assert!(duplicates <= 100, "{duplicates} entries sent twice");
    for node in NODES {
        let lines = machine_lines(d.logs().join(node));
        for seq in 1..=lines {
            let key = (node.to_string(), seq);
            let want = u32::from(!refused_keys.contains(&key));
            assert_eq!(
                count.get(&key).copied().unwrap_or(0),
                want,
                "{node} seq {seq} (refused: {})",
                want == 0
            );
        }
    }
    assert_eq!(
        count.len() + refused_keys.len(),
        NODES
            .iter()
            .map(|n| machine_lines(d.logs().join(n)) as usize)
            .sum::<usize>()
    );
    // Caught up; the failures were counted.
    for node in NODES {
        let lag = format!("tracerd_sink_lag_seconds{{node=\"{node}\",sink=\"loki\"}}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while metric(http, &lag) != Some(0.0) {
            assert!(
                Instant::now() < deadline,
                "{lag} is not 0:\n{}",
                http_get(http, "/metrics", &[]).2
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let stderr = d.stderr();
    assert!(stderr.contains("Loki push failed; retrying"), "{stderr}");
    assert!(stderr.contains("Loki refused entries"), "{stderr}");
}

fn node_seq(line: &str) -> (String, u64) {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    (
        v["data"]["node"].as_str().unwrap().to_string(),
        v["data"]["seq"].as_u64().unwrap(),
    )
}

/// `config/examples/loki.yaml` is valid as is; a bad `tracerd.loki` is refused with every
/// problem named by its key.
#[test]
fn loki_config_is_checked() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tracerd"))
        .args(["-c", "config/examples/loki.yaml", "validate"])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let d = Daemon::configure(
        |_, _| String::new(),
        "  loki:\n    url: ftp://x\n    labels: {node: a, __x: b, ok: ''}\n    tenant: ''\n    tls: {caFile: /nonexistent, certFile: /c}\n",
    );
    let out = d.command().arg("validate").output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    for needle in [
        "tracerd.loki.url",
        "\"node\" is a label tracerd sets",
        "\"__x\" is not a label name",
        "\"ok\" has an empty value",
        "tracerd.loki.tenant",
        "is not https://",
        "certFile and keyFile go together",
    ] {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
}
