//! Issue 14, the live view, over HTTP (the browser test is `ui_browser.rs`): the page and its
//! assets served by the binary, the fleet summary pushed as Server-Sent Events, a node's trace
//! lines streamed as they are written (filters, the file that holds each line), a stalled
//! subscriber losing lines counted while nodes stream unslowed, and tracerd's effective
//! config. Real `tracerd`, real sockets.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::Value;
use tracerd::model::{MetricValue, MetricsUpdate, Severity, TraceBatch, TraceObject};
use tracerd::native::NodeMessage;

use crate::http::{connect_http, http_get};
use crate::support::*;

/// A tracerd with the live view on a free HTTP port, the history sampling every 0.5 s.
pub fn start_with_ui(extra: &str) -> (Daemon, u16) {
    let port = free_port();
    let d = Daemon::start(&format!(
        "  ui: {{}}\n  history: {{sampleIntervalSecs: 0.5}}\nhasPrometheus: {{epHost: 127.0.0.1, epPort: {port}}}\n{extra}"
    ));
    (d, port)
}

pub fn metrics(m: &[(&str, MetricValue)]) -> NodeMessage {
    NodeMessage::Metrics(MetricsUpdate {
        full: false,
        metrics: m.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
    })
}

/// An open event stream: a GET whose response is read as it comes.
pub struct Stream {
    sock: std::net::TcpStream,
    pub text: String,
}

impl Stream {
    pub fn open(port: u16, path: &str) -> Stream {
        let mut sock = connect_http(port);
        write!(
            sock,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Stream {
            sock,
            text: String::new(),
        }
    }

    /// Reads until `pred` holds on what was read (bounded by `within`); panics with the text.
    pub fn until(&mut self, within: Duration, pred: impl Fn(&str) -> bool) -> &str {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 65536];
        while !pred(&self.text) {
            assert!(
                Instant::now() < deadline,
                "stream did not show what was expected within {within:?}; got:\n{}",
                tail(&self.text)
            );
            match self.sock.read(&mut buf) {
                Ok(0) => panic!("stream ended; got:\n{}", tail(&self.text)),
                Ok(n) => self.text.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("stream read: {e}"),
            }
        }
        &self.text
    }
}

fn tail(text: &str) -> &str {
    let start = text.len().saturating_sub(3000);
    let mut s = start;
    while !text.is_char_boundary(s) {
        s += 1;
    }
    &text[s..]
}

/// The data of the last complete `event: fleet` in `text`.
pub fn last_fleet(text: &str) -> Option<Value> {
    let i = text.rfind("event: fleet\ndata: ")?;
    let rest = &text[i + "event: fleet\ndata: ".len()..];
    let end = rest.find("\n\n")?;
    serde_json::from_str(&rest[..end]).ok()
}

pub fn card<'a>(fleet: &'a Value, name: &str) -> Option<&'a Value> {
    fleet["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == name)
}

fn traced(node: &str, seq: u64, severity: Severity, ns: &str) -> TraceObject {
    TraceObject {
        severity,
        namespace: ns.into(),
        ..object(node, seq, 10)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_streams_every_node_with_live_values_and_marks_one_that_left() {
    let (d, port) = start_with_ui("");
    let mut a = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay-a").await;
    let mut b = FakeNode::handshake(connect_tcp(d.tcp_port).await, "producer-b").await;
    for (node, slot) in [(&mut a, 1000.0), (&mut b, 2000.0)] {
        let m = metrics(&[
            ("cardano.node.metrics.slotNum_int", MetricValue::Gauge(slot)),
            (
                "cardano.node.metrics.blockNum_int",
                MetricValue::Gauge(slot / 10.0),
            ),
            ("cardano.node.metrics.epoch_int", MetricValue::Gauge(7.0)),
            (
                "cardano.node.metrics.connectedPeers_int",
                MetricValue::Gauge(5.0),
            ),
        ]);
        node.framed.send(m).await.unwrap();
        node.send_batch(1, 40, 50).await;
        node.wait_ack(40).await;
    }
    b.framed
        .send(metrics(&[(
            "cardano.node.metrics.remainingKESPeriods_int",
            MetricValue::Gauge(42.0),
        )]))
        .await
        .unwrap();
    let text = tokio::task::spawn_blocking(move || {
        let mut s = Stream::open(port, "/ui/api/fleet/stream");
        s.until(Duration::from_secs(10), |t| {
            last_fleet(t).is_some_and(|f| {
                card(&f, "relay-a").is_some_and(|c| c["slot"] == 1000.0)
                    && card(&f, "producer-b").is_some_and(|c| c["kesRemaining"] == 42.0)
            })
        });
        s
    })
    .await
    .unwrap();
    assert!(text.text.contains("retry: "), "no retry field");
    let f = last_fleet(&text.text).unwrap();
    let ra = card(&f, "relay-a").unwrap();
    assert_eq!(ra["connected"], true);
    assert_eq!(ra["stale"], false);
    assert_eq!(ra["protocol"], "native");
    // Native nodes' version comes from their handshake (support::hello: software "it" "0").
    assert_eq!(ra["software"], "it");
    assert_eq!(ra["version"], "0");
    assert_eq!(ra["block"], 100.0);
    assert_eq!(ra["epoch"], 7.0);
    assert_eq!(ra["peers"], 5.0);
    assert_eq!(ra["producer"], false);
    assert_eq!(ra["objects"], 40);
    assert_eq!(ra["severities"]["Info"], 40);
    let pb = card(&f, "producer-b").unwrap();
    assert_eq!(pb["producer"], true);
    // b leaves: its card stays, marked disconnected and stale, on the same stream.
    drop(b);
    let mut s = text;
    let s = tokio::task::spawn_blocking(move || {
        s.until(Duration::from_secs(10), |t| {
            last_fleet(t)
                .is_some_and(|f| card(&f, "producer-b").is_some_and(|c| c["connected"] == false))
        });
        s
    })
    .await
    .unwrap();
    let f = last_fleet(&s.text).unwrap();
    let pb = card(&f, "producer-b").unwrap();
    assert_eq!(
        (pb["stale"].clone(), pb["slot"].clone()),
        (true.into(), 2000.0.into())
    );
    assert_eq!(card(&f, "relay-a").unwrap()["connected"], true);
    // rates exist once two snapshots were taken while a streams.
    a.send_batch(41, 10, 50).await;
    a.wait_ack(50).await;

    // The page and its assets come from the binary; `/` links to it for browsers.
    let (status, ct, html) = http_get(port, "/ui/", &[]);
    assert_eq!((status, ct.as_str()), (200, "text/html; charset=utf-8"));
    assert!(
        html.contains("/ui/app.js") && html.contains("/ui/style.css"),
        "{html}"
    );
    let (status, ct, js) = http_get(port, "/ui/app.js", &[]);
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/javascript"), "{ct}");
    assert!(js.contains("EventSource"));
    let (status, _, _) = http_get(port, "/ui/nope.js", &[]);
    assert_eq!(status, 404);
    let (_, _, root) = http_get(port, "/", &[("Accept", "text/html")]);
    assert!(root.contains("<a href=\"/ui/\">Live view</a>"), "{root}");
    // Scrapers see cardano-tracer's answers unchanged.
    let (_, ct, root) = http_get(port, "/", &[("Accept", "application/json")]);
    assert!(
        ct.starts_with("application/json") && !root.contains("/ui/"),
        "{root}"
    );
    // tracerd's own effective config, as YAML that names the live view.
    let (status, ct, yaml) = http_get(port, "/ui/api/config?format=yaml", &[]);
    assert_eq!((status, ct.as_str()), (200, "application/yaml"));
    assert!(
        yaml.contains("ui:") && yaml.contains("networkMagic"),
        "{yaml}"
    );
    let (_, _, json) = http_get(port, "/ui/api/config", &[]);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["tracerd"]["ui"]["enabled"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_trace_stream_sends_lines_as_written_filtered_with_their_file() {
    let (d, port) = start_with_ui("");
    let mut a = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay-a").await;
    a.send_batch(1, 5, 10).await;
    a.wait_ack(5).await;
    let (status, _, body) = http_get(port, "/api/nodes/relay-a/traces/stream?severity=loud", &[]);
    assert_eq!(status, 400);
    assert!(
        body.contains("severity=\"loud\"") && body.contains("Warning"),
        "{body}"
    );
    let (status, _, body) = http_get(port, "/api/nodes/nobody/traces/stream", &[]);
    assert!(status == 404 && body.contains("nobody"), "{status} {body}");

    let (all, warn) = tokio::task::spawn_blocking(move || {
        let mut all = Stream::open(port, "/api/nodes/relay-a/traces/stream");
        let mut warn = Stream::open(
            port,
            "/api/nodes/relay-a/traces/stream?severity=Warning&namespace=ChainDB.",
        );
        all.until(Duration::from_secs(20), |t| {
            t.contains("trace lines of node")
        });
        warn.until(Duration::from_secs(20), |t| {
            t.contains("trace lines of node")
        });
        (all, warn)
    })
    .await
    .unwrap();
    let objects = vec![
        traced("relay-a", 6, Severity::Info, "ChainDB.AddBlock"),
        traced("relay-a", 7, Severity::Warning, "ChainDB.AddBlock"),
        traced("relay-a", 8, Severity::Error, "Mempool.Rejected"),
        traced("relay-a", 9, Severity::Error, "ChainDB.Corrupt"),
    ];
    let sent = Instant::now();
    a.framed
        .send(NodeMessage::Traces(TraceBatch {
            first_seq: 6,
            objects,
        }))
        .await
        .unwrap();
    let (all, warn) = tokio::task::spawn_blocking(move || {
        let (mut all, mut warn) = (all, warn);
        all.until(Duration::from_secs(2), |t| t.contains("\"seq\":9"));
        warn.until(Duration::from_secs(2), |t| t.contains("\"seq\":9"));
        (all, warn)
    })
    .await
    .unwrap();
    assert!(sent.elapsed() < Duration::from_secs(2));
    for seq in 6..=9 {
        assert!(all.text.contains(&format!("\"seq\":{seq}")), "{}", all.text);
    }
    assert!(
        !all.text.contains("\"seq\":5,"),
        "lines before subscribing are not replayed"
    );
    // Warning and up, ChainDB only.
    assert!(warn.text.contains("\"seq\":7") && warn.text.contains("\"seq\":9"));
    assert!(
        !warn.text.contains("\"seq\":6") && !warn.text.contains("\"seq\":8"),
        "{}",
        warn.text
    );
    // The lines are the file's machine lines, and the file event names that file.
    let file_line = all
        .text
        .lines()
        .skip_while(|l| *l != "event: file")
        .nth(1)
        .and_then(|l| l.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("no file event: {}", all.text))
        .to_string();
    let on_disk = std::fs::read_to_string(&file_line).unwrap();
    let line9 = all
        .text
        .lines()
        .find(|l| l.contains("\"seq\":9"))
        .unwrap()
        .strip_prefix("data: ")
        .unwrap();
    assert!(
        on_disk.lines().any(|l| l == line9),
        "{line9} not in {file_line}"
    );
    assert!(file_line.starts_with(&d.logs().join("relay-a").display().to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_trace_subscriber_loses_lines_counted_while_nodes_stream_unslowed() {
    let (d, port) = start_with_ui("");
    let mut a = FakeNode::handshake(connect_tcp(d.tcp_port).await, "loud-a").await;
    let mut b = FakeNode::handshake(connect_tcp(d.tcp_port).await, "calm-b").await;
    let mut c = FakeNode::handshake(connect_tcp(d.tcp_port).await, "calm-c").await;
    // A subscriber that reads its head, then stops reading.
    let mut stalled = tokio::task::spawn_blocking(move || {
        let mut s = Stream::open(port, "/api/nodes/loud-a/traces/stream");
        s.until(Duration::from_secs(5), |t| {
            t.contains("trace lines of node")
        });
        s
    })
    .await
    .unwrap();
    const N: u64 = 20_000;
    let started = Instant::now();
    let mut seq = 1;
    while seq <= N {
        a.send_batch(seq, 500, 1000).await;
        b.send_batch(seq, 500, 100).await;
        c.send_batch(seq, 500, 100).await;
        seq += 500;
    }
    for n in [&mut a, &mut b, &mut c] {
        n.wait_ack(N).await;
    }
    let took = started.elapsed();
    // Ingest was not held up by the stalled reader: everything written, in order.
    for name in ["loud-a", "calm-b", "calm-c"] {
        assert_eq!(
            seqs(&d.logs().join(name)),
            (1..=N).collect::<Vec<_>>(),
            "{name}"
        );
    }
    assert!(took < Duration::from_secs(20), "ingest took {took:?}");
    // The stalled reader is told how many lines it lost.
    let s = tokio::task::spawn_blocking(move || {
        stalled.until(Duration::from_secs(10), |t| t.contains("event: dropped"));
        stalled
    })
    .await
    .unwrap();
    let i = s.text.find("event: dropped\ndata: ").unwrap();
    let data = &s.text[i + 21..];
    let v: Value = serde_json::from_str(data.lines().next().unwrap()).unwrap();
    assert!(v["dropped"].as_u64().unwrap() > 0, "{v}");
}
