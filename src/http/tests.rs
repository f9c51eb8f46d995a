//! Route tests: every route through `router.oneshot(...)`, asserting exact status codes,
//! content types and bodies.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::Router;
use serde_json::{json, Value};

use super::*;
use crate::metrics::exposition::{OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};
use crate::model::{DataPoint, MetricValue, MetricsUpdate};
use crate::node::Lease;
use axum::http::Request as HttpRequest;
use tower::ServiceExt;

struct Fixture {
    state: Arc<HttpState>,
    _leases: Vec<Lease>,
}

fn fixture() -> Fixture {
    let nodes = Nodes::default();
    let relay = nodes.claim("relay_1", "127.0.0.1:5000", "native");
    relay.apply_metrics(MetricsUpdate {
        full: true,
        metrics: vec![
            ("Mem.resident_int".into(), MetricValue::Gauge(1024.0)),
            ("ChainSync.served".into(), MetricValue::Counter(24)),
            ("q\"uo\\te".into(), MetricValue::Label("x\ny".into())),
        ],
    });
    relay.apply_data_points(vec![DataPoint {
        name: "NodeInfo".into(),
        json: "{\"niName\":\"relay_1\"}".into(),
    }]);
    relay.record_rtt(std::time::Duration::from_micros(1500));
    let telemetry = Telemetry::new();
    telemetry.observe_rtt("relay_1", std::time::Duration::from_micros(1500));
    let other = nodes.claim("nœud-ß", "unix:/t.sock@0", "native");
    let mut labels = BTreeMap::new();
    labels.insert("cluster".to_string(), "x\"y".to_string());
    let state = Arc::new(HttpState::new(nodes, telemetry, labels));
    state.set_ready(true);
    Fixture {
        state,
        _leases: vec![relay, other],
    }
}

async fn call(
    router: Router,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String, String) {
    let mut req = HttpRequest::builder().uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = router
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 24)
        .await
        .unwrap();
    (status, ct, String::from_utf8(body.to_vec()).unwrap())
}

async fn prom(f: &Fixture, path: &str, headers: &[(&str, &str)]) -> (StatusCode, String, String) {
    call(prometheus_router(f.state.clone()), path, headers).await
}

async fn ekg(f: &Fixture, path: &str, headers: &[(&str, &str)]) -> (StatusCode, String, String) {
    call(ekg_router(f.state.clone()), path, headers).await
}

#[tokio::test]
async fn root_lists_nodes_as_json_or_html() {
    let f = fixture();
    let json_body = r#"{"nœud-ß":"/nud","relay_1":"/relay-1"}"#;
    assert_eq!(
        prom(&f, "/", &[]).await,
        (StatusCode::OK, "application/json".into(), json_body.into())
    );
    assert_eq!(
        prom(&f, "/", &[("accept", "application/json")]).await.2,
        json_body
    );
    assert_eq!(
        prom(&f, "/", &[("accept", "*/*")]).await,
        (
            StatusCode::OK,
            "text/html;charset=utf-8".into(),
            "<html><head><title>Prometheus metrics</title></head><body><ul>\
             <li><a href=\"/nud\">nœud-ß</a></li>\
             <li><a href=\"/relay-1\">relay_1</a></li></ul></body></html>"
                .into()
        )
    );
    let empty = Fixture {
        state: Arc::new(HttpState::new(
            Nodes::default(),
            Telemetry::new(),
            BTreeMap::new(),
        )),
        _leases: vec![],
    };
    assert_eq!(
        prom(&empty, "/", &[("accept", "text/html")]).await.2,
        "<html><head><title>Prometheus metrics</title></head><body>\
         There are no connected nodes yet.</body></html>"
    );
    assert_eq!(prom(&empty, "/", &[]).await.2, "{}");
}

#[tokio::test]
async fn targets_serve_http_service_discovery() {
    let f = fixture();
    assert_eq!(
        prom(&f, "/targets", &[("host", "tracer.example:3200")]).await,
        (
            StatusCode::OK,
            "application/json".into(),
            "[{\"labels\":{\"__metrics_path__\":\"/nud\",\"cluster\":\"x\\\"y\",\"node_name\":\"nœud-ß\"},\"targets\":[\"tracer.example:3200\"]},\
             {\"labels\":{\"__metrics_path__\":\"/relay-1\",\"cluster\":\"x\\\"y\",\"node_name\":\"relay_1\"},\"targets\":[\"tracer.example:3200\"]}]"
                .into()
        )
    );
    let forwarded = prom(
        &f,
        "/targets",
        &[("host", "inner:1"), ("x-forwarded-host", "outer:2")],
    )
    .await;
    assert!(forwarded.2.contains("\"targets\":[\"outer:2\"]"));
    assert!(!forwarded.2.contains("inner:1"));
    assert_eq!(
        prom(&f, "/targets", &[]).await,
        (StatusCode::OK, "application/json".into(), "[]".into())
    );
    assert_eq!(
        prom(&f, "/targets", &[("accept", "text/html"), ("host", "h")]).await,
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "text/plain;charset=utf-8".into(),
            "Unsupported Media Type".into()
        )
    );
}

#[tokio::test]
async fn node_route_negotiates_the_format() {
    let f = fixture();
    // cardano-tracer's names: no `_total`, no `_info`; types valid for a strict parser.
    let om = "# HELP ChainSync_served ChainSync.served\n\
              # TYPE ChainSync_served unknown\n\
              ChainSync_served 24\n\
              # HELP Mem_resident_int Mem.resident_int\n\
              # TYPE Mem_resident_int gauge\n\
              Mem_resident_int 1024\n\
              # HELP ekg_server_timestamp_ms ekg.server_timestamp_ms\n\
              # TYPE ekg_server_timestamp_ms unknown\n\
              ekg_server_timestamp_ms TS\n\
              # HELP quote q\\\"uo\\\\te\n\
              # TYPE quote gauge\n\
              quote{value=\"x\\ny\"} 1\n\
              # EOF\n";
    // The timestamp is the wall clock at the scrape: check it, then compare the rest.
    let stamp = |body: &str| -> String {
        let line = body
            .lines()
            .find(|l| l.starts_with("ekg_server_timestamp_ms "))
            .unwrap_or_else(|| panic!("no ekg_server_timestamp_ms in {body}"));
        let ms: u64 = line["ekg_server_timestamp_ms ".len()..].parse().unwrap();
        let now = crate::node::live::now_ms();
        assert!(ms <= now && now - ms < 60_000, "{ms} vs {now}");
        body.replace(line, "ekg_server_timestamp_ms TS")
    };
    let (status, ct, body) = prom(&f, "/relay-1", &[]).await;
    assert_eq!(
        (status, ct, stamp(&body)),
        (StatusCode::OK, OPENMETRICS_CONTENT_TYPE.into(), om.into())
    );
    let deep = prom(
        &f,
        "/relay-1/ignored/segments",
        &[("accept", "application/openmetrics-text; version=1.0.0")],
    )
    .await;
    assert_eq!(stamp(&deep.2), om);
    let (status, ct, text) = prom(&f, "/relay-1", &[("accept", "text/plain")]).await;
    assert_eq!((status, ct.as_str()), (StatusCode::OK, TEXT_CONTENT_TYPE));
    assert!(text.starts_with(
        "# HELP ChainSync_served ChainSync.served\n# TYPE ChainSync_served counter\nChainSync_served 24\n"
    ));
    assert!(text.contains("# HELP quote q\"uo\\\\te\n# TYPE quote gauge\n"));
    assert!(!text.contains("# EOF"));
    let (status, ct, body) = prom(&f, "/nud", &[]).await;
    assert_eq!(
        (status, ct.as_str(), stamp(&body).as_str()),
        (
            StatusCode::OK,
            OPENMETRICS_CONTENT_TYPE,
            "# HELP ekg_server_timestamp_ms ekg.server_timestamp_ms\n\
             # TYPE ekg_server_timestamp_ms unknown\n\
             ekg_server_timestamp_ms TS\n# EOF\n"
        )
    );
}

#[tokio::test]
async fn unknown_routes_are_404_with_the_segment() {
    let f = fixture();
    let nf = |s: &str| {
        (
            StatusCode::NOT_FOUND,
            "text/plain;charset=utf-8".to_string(),
            format!("Not found: {s}"),
        )
    };
    assert_eq!(prom(&f, "/nope", &[]).await, nf("nope"));
    assert_eq!(prom(&f, "/nope/deeper", &[]).await, nf("nope"));
    assert_eq!(
        prom(&f, "/api/nodes/nope/datapoints/NodeInfo", &[]).await,
        nf("nope")
    );
    assert_eq!(
        prom(&f, "/api/nodes/relay-1/datapoints/Nope", &[]).await,
        nf("Nope")
    );
}

#[tokio::test]
async fn metrics_route_merges_nodes_and_tracerd_metrics() {
    let f = fixture();
    f.state
        .telemetry
        .connections_accepted
        .with_label_values(&["native"])
        .inc();
    let (status, ct, body) = prom(&f, "/metrics", &[("accept", "text/plain")]).await;
    assert_eq!((status, ct.as_str()), (StatusCode::OK, TEXT_CONTENT_TYPE));
    assert!(body.contains(
        "# HELP Mem_resident_int Mem.resident_int\n# TYPE Mem_resident_int gauge\n\
         Mem_resident_int{node_name=\"relay_1\"} 1024\n"
    ));
    assert!(
        body.contains("# TYPE tracerd_node_rtt_seconds histogram\n"),
        "{body}"
    );
    assert!(
        body.contains("tracerd_node_rtt_seconds_bucket{node_name=\"relay_1\",le=\"0.001\"} 0\n")
    );
    assert!(
        body.contains("tracerd_node_rtt_seconds_bucket{node_name=\"relay_1\",le=\"0.0025\"} 1\n")
    );
    assert!(body.contains("tracerd_node_rtt_seconds_count{node_name=\"relay_1\"} 1\n"));
    assert!(body.contains("tracerd_connections_accepted_total{protocol=\"native\"} 1\n"));
    assert!(body.contains("# TYPE tracerd_process_resident_memory_bytes gauge\n"));
    assert!(body.contains("# TYPE tracerd_write_batch_seconds histogram\n"));
    assert!(body.contains("tracerd_write_batch_seconds_bucket{le=\"+Inf\"} 0\n"));
    let (_, ct, om) = prom(&f, "/metrics", &[]).await;
    assert_eq!(ct, OPENMETRICS_CONTENT_TYPE);
    assert!(om.ends_with("# EOF\n"));
    assert!(om.contains("# TYPE tracerd_connections_accepted counter\n"));
    assert!(om.contains("tracerd_write_batch_seconds_bucket{le=\"1.0\"} 0\n"));
}

#[tokio::test]
async fn api_reports_nodes_and_data_points() {
    let f = fixture();
    let (status, ct, body) = prom(&f, "/api/nodes", &[]).await;
    assert_eq!((status, ct.as_str()), (StatusCode::OK, "application/json"));
    let v: Value = serde_json::from_str(&body).unwrap();
    let relay = &v[1];
    assert_eq!(relay["name"], "relay_1");
    assert_eq!(relay["slug"], "relay-1");
    assert_eq!(relay["protocol"], "native");
    assert_eq!(relay["peer"], "127.0.0.1:5000");
    assert_eq!(relay["rttSeconds"], 0.0015);
    assert_eq!(
        relay["rtt"],
        json!({"latestSeconds": 0.0015, "p50Seconds": 0.0015, "p99Seconds": 0.0015, "samples": 1})
    );
    assert_eq!(relay["metrics"], 3);
    assert_eq!(relay["dataPoints"], json!(["NodeInfo"]));
    assert_eq!(relay["objectsReceived"], 0);
    // Metrics, data points and pongs count as messages.
    assert!(relay["lastMessageAt"].as_str().unwrap().ends_with('Z'));
    assert!(relay["connectedSince"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        prom(&f, "/api/nodes/relay-1/datapoints/NodeInfo", &[]).await,
        (
            StatusCode::OK,
            "application/json".into(),
            "{\"niName\":\"relay_1\"}".into()
        )
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let f = fixture();
    assert_eq!(
        prom(&f, "/healthz", &[]).await,
        (
            StatusCode::OK,
            "text/plain;charset=utf-8".into(),
            "ok".into()
        )
    );
    assert_eq!(prom(&f, "/readyz", &[]).await.2, "ready");
    f.state.set_ready(false);
    assert_eq!(
        prom(&f, "/readyz", &[]).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain;charset=utf-8".into(),
            "not ready".into()
        )
    );
}

#[tokio::test]
async fn ekg_routes_serve_nested_json() {
    let f = fixture();
    assert_eq!(
        ekg(&f, "/", &[]).await.2,
        r#"{"nœud-ß":"/nud","relay_1":"/relay-1"}"#
    );
    assert!(ekg(&f, "/", &[("accept", "text/html")])
        .await
        .2
        .contains("<title>EKG metrics</title>"));
    assert_eq!(
        ekg(&f, "/relay-1", &[("accept", "application/json")]).await,
        (
            StatusCode::OK,
            "application/json".into(),
            r#"{"ChainSync":{"served":{"type":"c","val":24}},"Mem":{"resident_int":{"type":"g","val":1024}},"q\"uo\\te":{"type":"l","val":"x\ny"}}"#
                .into()
        )
    );
    assert_eq!(
        ekg(&f, "/relay-1/Mem/resident_int", &[]).await,
        (
            StatusCode::OK,
            "application/json".into(),
            r#"{"type":"g","val":1024}"#.into()
        )
    );
    assert_eq!(
        ekg(&f, "/relay-1/Mem/nope", &[]).await,
        (
            StatusCode::NOT_FOUND,
            "application/json".into(),
            r#""Metric not found""#.into()
        )
    );
    assert_eq!(
        ekg(&f, "/ghost", &[]).await,
        (
            StatusCode::NOT_FOUND,
            "text/plain;charset=utf-8".into(),
            "Not found: \"ghost\"".into()
        )
    );
}

#[tokio::test]
async fn requests_are_counted_by_route_and_code() {
    let f = fixture();
    prom(&f, "/nope", &[]).await;
    prom(&f, "/healthz", &[]).await;
    let t = &f.state.telemetry;
    assert_eq!(t.http_requests.with_label_values(&["node", "404"]).get(), 1);
    assert_eq!(
        t.http_requests.with_label_values(&["healthz", "200"]).get(),
        1
    );
}

/// Issue 12, point 5: the header deadline runs from the start of the request head, so a
/// client trickling one header byte a second is closed at `HEADER_READ_TIMEOUT`, and a
/// connection that sends nothing is closed as well (time is paused and auto-advanced).
#[tokio::test(start_paused = true)]
async fn the_header_deadline_holds_against_trickling_and_silence() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let server = tokio::spawn(serve(
        listener,
        Router::new(),
        None,
        (Default::default(), Telemetry::new()),
        cancel.clone(),
        tracker.clone(),
    ));
    let started = tokio::time::Instant::now();
    let trickler = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if s.write_all(b"X").await.is_err() {
                break;
            }
        }
        let mut buf = [0u8; 512];
        let _ = tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf)).await;
        started.elapsed()
    });
    let silent = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 512];
        let r = tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf)).await;
        (started.elapsed(), r.map(|r| r.ok()))
    });
    let trickled = trickler.await.unwrap();
    assert!(
        trickled >= HEADER_READ_TIMEOUT && trickled < HEADER_READ_TIMEOUT + Duration::from_secs(2),
        "a trickling client was closed after {trickled:?}"
    );
    let (silence, read) = silent.await.unwrap();
    assert!(
        matches!(read, Ok(Some(_))) && silence < HEADER_READ_TIMEOUT + Duration::from_secs(2),
        "a silent client was closed after {silence:?}: {read:?}"
    );
    cancel.cancel();
    server.await.unwrap();
}
