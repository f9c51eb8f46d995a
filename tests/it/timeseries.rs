//! cardano-tracer's `/timeseries/...` routes end to end (issue 13 point 5): two nodes stream
//! metrics and data points into the real tracerd; the `hasTimeseries` port answers
//! upstream's query language and node routes with upstream's shapes, while hostile queries
//! sent meanwhile fail cleanly and the nodes lose nothing.

use std::io::{Read, Write};
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{json, Value};
use tracerd::model::{DataPoint, MetricValue, MetricsUpdate};
use tracerd::native::NodeMessage;

use crate::history::{enc, get_json, now_secs, start_with_history};
use crate::support::*;

/// Updates each node sends, 50 ms apart.
const UPDATES: i64 = 30;

/// `method path` with a form body on `port`: (status, content type, body).
fn request(port: u16, method: &str, path: &str, body: &str) -> (u16, String, String) {
    let mut s = crate::http::connect_http(port);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // A server may answer before it has read all of a body it refuses.
    let _ = s.write_all(body.as_bytes());
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
    let ct = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_string)
        })
        .unwrap_or_default();
    (status, ct, body.to_string())
}

/// `POST /timeseries/query` with `query` (and `time`): (status, JSON).
fn ts_query(port: u16, query: &str, time: Option<f64>) -> (u16, Value) {
    let mut body = format!("query={}", enc(query));
    if let Some(t) = time {
        body.push_str(&format!("&time={t:.3}"));
    }
    let (status, _, text) = request(port, "POST", "/timeseries/query", &body);
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{query}: {e}: {text}"));
    (status, v)
}

fn metrics(full: bool, i: i64, base: f64) -> NodeMessage {
    NodeMessage::Metrics(MetricsUpdate {
        full,
        metrics: vec![
            (
                "cardano.node.metrics.served_counter".into(),
                MetricValue::Counter(10 * i),
            ),
            (
                "cardano.node.metrics.Mem.resident_int".into(),
                MetricValue::Gauge(base + i as f64),
            ),
        ],
    })
}

fn rfc3339(secs: i64) -> String {
    let d = tracerd::utc::DateTime::from_unix(secs);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        d.year, d.month, d.day, d.hour, d.minute, d.second
    )
}

/// Hostile queries: each fails with a clear error, none stops the daemon.
fn hostile(port: u16) {
    for (q, kind) in [
        ("(\\x -> x x) (\\x -> x x)", "execution"),
        (
            "cardano_node_metrics_served_counter[epoch; now : 1ms]",
            "execution",
        ),
        (
            "cardano_node_metrics_served_counter[now - 1h; now : 0ms]",
            "execution",
        ),
        ("1 + now", "bad_data"),
        ("rate (", "parse"),
    ] {
        let (status, v) = ts_query(port, q, None);
        assert_eq!(
            (status, v["errorType"].as_str()),
            (400, Some(kind)),
            "{q}: {v}"
        );
        assert!(
            v["error"].as_str().unwrap().contains('@') || kind == "parse",
            "{q}: {v}"
        );
    }
    let deep = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
    let (status, v) = ts_query(port, &deep, None);
    assert_eq!(
        (status, v["errorType"].as_str()),
        (400, Some("parse")),
        "{v}"
    );
    // A body over the 1 MiB limit, and bytes that are not UTF-8 once decoded.
    let huge = format!("query={}", "1".repeat(2 << 20));
    let (status, _, _) = request(port, "POST", "/timeseries/query", &huge);
    assert_eq!(status, 400);
    let (status, _, body) = request(port, "POST", "/timeseries/query", "query=%FF%FE");
    assert_eq!(status, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeseries_routes_answer_as_upstream_while_nodes_stream() {
    let (d, port) = start_with_history(0.5, "");
    let mut a = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay-a").await;
    let mut b = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay-b").await;
    let started = now_secs() as i64 - 60;
    a.framed
        .send(NodeMessage::DataPoints(vec![
            DataPoint {
                name: "NodeInfo".into(),
                json: json!({"niName": "relay-a", "niProtocol": "Cardano", "niVersion": "10.5.1",
                    "niCommit": "0a21a74", "niStartTime": rfc3339(started),
                    "niSystemStartTime": "2022-10-25T00:00:00Z"})
                .to_string(),
            },
            DataPoint {
                name: "NodeAddBlock".into(),
                json: r#"{"tag":"NodeAddBlock","contents":[{"x":1},7,42.5]}"#.into(),
            },
        ]))
        .await
        .unwrap();
    a.framed.send(metrics(true, 0, 0.0)).await.unwrap();
    b.framed.send(metrics(true, 0, 100.0)).await.unwrap();
    let t0 = now_secs();
    let streamer = tokio::spawn(async move {
        for i in 1..=UPDATES {
            tokio::time::sleep(Duration::from_millis(50)).await;
            a.framed.send(metrics(false, i, 0.0)).await.unwrap();
            b.framed.send(metrics(false, i, 100.0)).await.unwrap();
        }
        (a, b)
    });
    // Hostile queries while the nodes stream.
    tokio::task::spawn_blocking(move || hostile(port))
        .await
        .unwrap();
    let (a, b) = streamer.await.unwrap();

    tokio::task::spawn_blocking(move || {
        // Every update of both nodes arrived: the last values, and every change, are there.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let last = loop {
            let (status, v) = ts_query(port, "cardano_node_metrics_served_counter now", None);
            assert_eq!(status, 200, "{v}");
            let r = v["data"]["result"].as_array().unwrap().clone();
            if r.len() == 2 && r.iter().all(|s| s["value"][1] == format!("{}.0", 10 * UPDATES)) {
                break v;
            }
            assert!(std::time::Instant::now() < deadline, "{v}");
            std::thread::sleep(Duration::from_millis(50));
        };
        // Upstream's shape: metric labels (no __name__), [seconds, "value"].
        assert_eq!(last["status"], "success");
        assert_eq!(last["data"]["resultType"], "vector");
        let r = last["data"]["result"].as_array().unwrap();
        assert_eq!(r[0]["metric"]["node_name"], "relay-a");
        assert_eq!(r[1]["metric"]["node_name"], "relay-b");
        assert!(r[0]["metric"].get("__name__").is_none());
        assert!((r[0]["value"][0].as_f64().unwrap() - now_secs()).abs() < 5.0);
        for node in ["relay-a", "relay-b"] {
            let q = format!("changes(cardano_node_metrics_served_counter{{node_name=\"{node}\"}}[1m])");
            let (_, v) = get_json(port, &format!("/api/v1/query?query={}", enc(&q)));
            assert_eq!(v["data"]["result"][0]["value"][1], UPDATES.to_string(), "{node}: {v}");
        }
        // A range and its rate over the same fixed window: rate is (last - first) / ms.
        let (t1, t2) = (t0 - 1.0, now_secs());
        let window = format!(
            "[epoch + {}ms; epoch + {}ms : 100ms]",
            (t1 * 1000.0) as u64,
            (t2 * 1000.0) as u64
        );
        let m = format!("(\\t -> (cardano_node_metrics_served_counter t){{\"node_name\" = \"relay-a\"}}){window}");
        let (status, v) = ts_query(port, &m, None);
        assert_eq!((status, &v["data"]["resultType"]), (200, &json!("matrix")), "{v}");
        let pts = v["data"]["result"][0]["values"].as_array().unwrap().clone();
        assert!(pts.len() >= 10, "{v}");
        let val = |p: &Value| p[1].as_str().unwrap().parse::<f64>().unwrap();
        let ts = |p: &Value| (p[0].as_f64().unwrap() * 1000.0).round();
        let (first, lastp) = (&pts[0], &pts[pts.len() - 1]);
        let want = (val(lastp) - val(first)) / (ts(lastp) - ts(first));
        let (status, v) = ts_query(port, &format!("rate {m}"), None);
        assert_eq!(status, 200, "{v}");
        let got: f64 = v["data"]["result"][0]["value"][1].as_str().unwrap().parse().unwrap();
        assert!((got - want).abs() < 1e-12 && got > 0.0, "rate {got}, from the range {want}");
        // Upstream's arithmetic on vectors and its `let`.
        let (_, v) = ts_query(port, "let k = 2 in max (cardano_node_metrics_Mem_resident_int now) * k", None);
        assert_eq!(v["data"], json!({"resultType": "scalar", "result": 2 * (100 + UPDATES)}), "{v}");

        // Nodes and their data points.
        let (status, v) = get_json(port, "/timeseries/nodes");
        assert_eq!(status, 200);
        assert_eq!(
            v,
            json!([{"nodeName": "relay-a", "slug": "relay-a"}, {"nodeName": "relay-b", "slug": "relay-b"}])
        );
        let (status, v) = get_json(port, "/timeseries/node/relay-a/info");
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["niVersion"], "10.5.1");
        assert_eq!(v["niStartTime"], rfc3339(started).as_str());
        let up = v["uptimeSeconds"].as_i64().unwrap();
        assert!((60..70).contains(&up), "{v}");
        let (_, v) = get_json(port, "/timeseries/node/relay-a/sync-progress");
        assert_eq!(v, json!({"syncProgress": 42.5}));
        for path in ["/timeseries/node/relay-b/info", "/timeseries/node/relay-a/startup", "/timeseries/node/nobody/info", "/timeseries/nope"] {
            let (status, _, body) = request(port, "GET", path, "");
            assert_eq!((status, body.as_str()), (404, ""), "{path}");
        }

        // Retention and pruning, set and read back; under ekgRequestFreq (1 s) refused.
        let (status, _, _) = request(port, "POST", "/timeseries/config/retention?minutes=90", "");
        assert_eq!(status, 200);
        assert_eq!(get_json(port, "/timeseries/config/retention").1, json!({"retentionMillis": 5_400_000}));
        let (status, _, body) = request(port, "POST", "/timeseries/config/retention?milliseconds=10", "");
        assert_eq!((status, body.as_str()), (400, "Malformed input"));
        let (status, _, _) = request(port, "POST", "/timeseries/config/pruning", "");
        assert_eq!(status, 200);
        assert_eq!(get_json(port, "/timeseries/config/pruning").1, json!({"pruningPeriodMillis": null}));
        let (status, _, _) = request(port, "POST", "/timeseries/prune", "");
        assert_eq!(status, 200);
        // Recent data survives a prune at 90 minutes; the Prometheus API still answers.
        let (status, v) = ts_query(port, "cardano_node_metrics_served_counter now", None);
        assert_eq!((status, v["data"]["result"].as_array().unwrap().len()), (200, 2), "{v}");
        let (status, _) = get_json(port, "/api/v1/query?query=up");
        assert_eq!(status, 200);
    })
    .await
    .unwrap();
    drop((a, b));
}

/// The retention and pruning period set through the API drive the periodic pruning: a node
/// that left has its series pruned by the timer alone, once they are older than the retention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pruning_period_and_retention_set_through_the_api_prune_by_themselves() {
    let (d, port) = start_with_history(0.5, "");
    let mut gone = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay-gone").await;
    let mut stays = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay-stays").await;
    let only = |name: &str| {
        NodeMessage::Metrics(MetricsUpdate {
            full: true,
            metrics: vec![(name.into(), MetricValue::Gauge(1.0))],
        })
    };
    gone.framed
        .send(only("cardano.node.metrics.left_int"))
        .await
        .unwrap();
    stays
        .framed
        .send(only("cardano.node.metrics.stays_int"))
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while ts_query(port, "cardano_node_metrics_left_int now", None).0 != 200 {
            assert!(
                std::time::Instant::now() < deadline,
                "the metric never arrived"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    drop(gone);
    tokio::task::spawn_blocking(move || {
        // The default period (15 minutes) would not prune during this test; 1 s does.
        for path in [
            "/timeseries/config/retention?seconds=1",
            "/timeseries/config/pruning?seconds=1",
        ] {
            let (status, _, body) = request(port, "POST", path, "");
            assert_eq!(status, 200, "{path}: {body}");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let (status, v) = ts_query(
                port,
                "cardano_node_metrics_left_int[now - 1h; now : 1m]",
                None,
            );
            if status == 400 {
                // Its only series was pruned, and with it the name.
                assert!(
                    v["error"].as_str().unwrap().contains("Undefined name"),
                    "{v}"
                );
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never pruned: {v}");
            std::thread::sleep(Duration::from_millis(200));
        }
        // The connected node's metric is resampled, so it stays.
        let (status, v) = ts_query(port, "cardano_node_metrics_stays_int now", None);
        assert_eq!(
            (status, v["data"]["result"].as_array().map(Vec::len)),
            (200, Some(1)),
            "{v}"
        );
    })
    .await
    .unwrap();
    drop(stays);
}
