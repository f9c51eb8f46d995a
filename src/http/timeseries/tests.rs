//! The `/timeseries/...` routes through `router.oneshot(...)`: upstream's statuses, content
//! types and bodies over a real store and node registry.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request as HttpRequest, StatusCode};
use serde_json::{json, Value as Json};
use tower::ServiceExt;
use tracerd_tsdb::{Config, Store};

use super::*;
use crate::model::DataPoint;
use crate::node::Lease;

/// "Now" of the fixture: 2025-07-20T08:26:40Z.
const NOW: i64 = 1_753_000_000_000;

struct Fixture {
    api: TimeseriesApi,
    _leases: Vec<Lease>,
}

fn labels(name: &str, node: &str) -> tracerd_promql::Labels {
    vec![
        ("__name__".into(), name.into()),
        ("node_name".into(), node.into()),
    ]
}

fn fixture() -> Fixture {
    let store = Arc::new(Store::new(Config::default()));
    for i in 0..=10 {
        let t = NOW - 600_000 + i * 60_000;
        store
            .append(
                &labels("cardano_node_metrics_Mem_resident_int", "relay_1"),
                t,
                40.0 + i as f64,
            )
            .unwrap();
        store
            .append(
                &labels("cardano_node_metrics_Mem_resident_int", "relay_2"),
                t,
                7.0,
            )
            .unwrap();
    }
    // A series that ended two hours ago.
    store
        .append(
            &labels("cardano_node_metrics_old_int", "relay_1"),
            NOW - 7_200_000,
            1.0,
        )
        .unwrap();
    let nodes = Nodes::default();
    let relay = nodes.claim("relay_1", "127.0.0.1:5000", "cardano");
    relay.apply_data_points(vec![
        DataPoint {
            name: "NodeInfo".into(),
            json: json!({
                "niName": "relay_1", "niProtocol": "Cardano", "niVersion": "10.5.1",
                "niCommit": "abc123", "niStartTime": "2025-07-20T07:26:40Z",
                "niSystemStartTime": "2017-09-23T21:44:51Z"
            })
            .to_string(),
        },
        DataPoint {
            name: "NodeStartupInfo".into(),
            json: r#"{"suiEra":"Conway","suiSlotLength":1,"suiEpochLength":432000,"suiSlotsPerKESPeriod":129600}"#.into(),
        },
        DataPoint {
            name: "NodeAddBlock".into(),
            json: r#"{"tag":"NodeAddBlock","contents":[["h",1],12,99.87]}"#.into(),
        },
    ]);
    let bare = nodes.claim("relay_2", "127.0.0.1:5001", "native");
    let control = Arc::new(Control::new(86_400_000, Some(900_000)));
    let mut api = TimeseriesApi::new(store, nodes, control);
    api.now_ms = Arc::new(|| NOW);
    api.min_retention_ms = 1000;
    Fixture {
        api,
        _leases: vec![relay, bare],
    }
}

async fn call(f: &Fixture, method: &str, path: &str, body: &str) -> (StatusCode, String, String) {
    let req = HttpRequest::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = router(f.api.clone()).oneshot(req).await.unwrap();
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

fn parsed(body: &str) -> Json {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test]
async fn query_answers_in_upstreams_envelope_by_get_and_post() {
    let f = fixture();
    let want = json!({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"node_name": "relay_1"}, "value": [1_753_000_000, "50.0"]},
        {"metric": {"node_name": "relay_2"}, "value": [1_753_000_000, "7.0"]},
    ]}});
    let (s, ct, body) = call(
        &f,
        "GET",
        "/timeseries/query?query=cardano_node_metrics_Mem_resident_int%20now",
        "",
    )
    .await;
    assert_eq!((s, ct.as_str()), (StatusCode::OK, "application/json"));
    assert_eq!(parsed(&body), want);
    let (s, _, body) = call(
        &f,
        "POST",
        "/timeseries/query",
        "query=cardano_node_metrics_Mem_resident_int+now&time=1753000000",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(parsed(&body), want);
    // `time=` moves "now": two minutes earlier relay_1 read 48.
    let (_, _, body) = call(
        &f,
        "POST",
        "/timeseries/query",
        "query=max+%28cardano_node_metrics_Mem_resident_int+now%29&time=1752999880.0",
    )
    .await;
    assert_eq!(
        parsed(&body),
        json!({"status": "success", "data": {"resultType": "scalar", "result": 48}})
    );
    // A range over the last 5 minutes at 1 m: six points per series.
    let q = "query=%28%5Ct+-%3E+%28cardano_node_metrics_Mem_resident_int+t%29%7B%22node_name%22+%3D+%22relay_1%22%7D%29%5Bnow+-+5m%3B+now+%3A+1m%5D";
    let (_, _, body) = call(&f, "POST", "/timeseries/query", q).await;
    let v = parsed(&body);
    assert_eq!(v["data"]["resultType"], "matrix", "{body}");
    let values = v["data"]["result"][0]["values"].as_array().unwrap();
    assert_eq!(values.len(), 6);
    assert_eq!(values[5], json!([1_753_000_000, "50.0"]));
    assert_eq!(values[0], json!([1_752_999_700, "45.0"]));
}

#[tokio::test]
async fn query_errors_have_upstreams_types() {
    let f = fixture();
    let (s, ct, body) = call(&f, "POST", "/timeseries/query", "time=1").await;
    assert_eq!(
        (s, ct.as_str(), body.as_str()),
        (
            StatusCode::BAD_REQUEST,
            "text/plain; charset=utf-8",
            "Malformed input"
        )
    );
    let (s, ct, body) = call(&f, "GET", "/timeseries/query", "").await;
    assert_eq!(
        (s, body.as_str()),
        (StatusCode::BAD_REQUEST, "Malformed input"),
        "{ct}"
    );

    for (q, kind, says) in [
        (
            "query=1+%2B",
            "parse",
            "While executing, parsing error: 1:4",
        ),
        (
            "query=cardano_node_metrics_Mem_resident_in+now",
            "bad_data",
            "Did you mean: cardano_node_metrics_Mem_resident_int",
        ),
        (
            "query=1+%2B+now",
            "bad_data",
            "is not defined on Scalar and Timestamp",
        ),
        (
            "query=avg+%28nothing_here%29",
            "bad_data",
            "Undefined name: nothing_here",
        ),
        (
            "query=rate+cardano_node_metrics_Mem_resident_int%5Bnow%3B+now%5D",
            "execution",
            "single-point",
        ),
    ] {
        let (s, ct, body) = call(&f, "POST", "/timeseries/query", q).await;
        assert_eq!(
            (s, ct.as_str()),
            (StatusCode::BAD_REQUEST, "application/json"),
            "{q}"
        );
        let v = parsed(&body);
        assert_eq!(v["status"], "error", "{q}");
        assert_eq!(v["errorType"], kind, "{q}: {body}");
        assert!(v["error"].as_str().unwrap().contains(says), "{q}: {body}");
    }
}

#[tokio::test]
async fn a_query_past_its_sample_cap_fails_and_the_next_one_is_served() {
    let mut f = fixture();
    f.api.max_samples = 5;
    let (s, _, body) = call(
        &f,
        "GET",
        "/timeseries/query?query=cardano_node_metrics_Mem_resident_int%5Bnow-10m%3Bnow%5D",
        "",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(parsed(&body)["errorType"], "execution", "{body}");
    f.api.max_samples = 1000;
    let (s, _, _) = call(
        &f,
        "GET",
        "/timeseries/query?query=cardano_node_metrics_Mem_resident_int%5Bnow-10m%3Bnow%5D",
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn retention_and_pruning_are_read_and_set_as_upstream() {
    let f = fixture();
    let (s, ct, body) = call(&f, "GET", "/timeseries/config/retention", "").await;
    assert_eq!((s, ct.as_str()), (StatusCode::OK, "application/json"));
    assert_eq!(parsed(&body), json!({"retentionMillis": 86_400_000}));
    let (s, ct, body) = call(&f, "POST", "/timeseries/config/retention?hours=1", "").await;
    assert_eq!((s, ct.as_str(), body.as_str()), (StatusCode::OK, "", ""));
    assert_eq!(f.api.control.retention_ms(), 3_600_000);
    // Under the minimum (ekgRequestFreq): refused, unchanged.
    let (s, _, body) = call(
        &f,
        "POST",
        "/timeseries/config/retention?milliseconds=999",
        "",
    )
    .await;
    assert_eq!(
        (s, body.as_str()),
        (StatusCode::BAD_REQUEST, "Malformed input")
    );
    assert_eq!(f.api.control.retention_ms(), 3_600_000);
    // No usable item: upstream's 404.
    let (s, _, body) = call(&f, "POST", "/timeseries/config/retention?weeks=1", "").await;
    assert_eq!((s, body.as_str()), (StatusCode::NOT_FOUND, ""));

    let (_, _, body) = call(&f, "GET", "/timeseries/config/pruning", "").await;
    assert_eq!(parsed(&body), json!({"pruningPeriodMillis": 900_000}));
    let (s, _, _) = call(&f, "POST", "/timeseries/config/pruning?minutes=2", "").await;
    assert_eq!(s, StatusCode::OK);
    let (_, _, body) = call(&f, "GET", "/timeseries/config/pruning", "").await;
    assert_eq!(parsed(&body), json!({"pruningPeriodMillis": 120_000}));
    let (s, _, _) = call(&f, "POST", "/timeseries/config/pruning?seconds=0", "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _, _) = call(&f, "POST", "/timeseries/config/pruning", "").await;
    assert_eq!(s, StatusCode::OK);
    let (_, _, body) = call(&f, "GET", "/timeseries/config/pruning", "").await;
    assert_eq!(parsed(&body), json!({"pruningPeriodMillis": null}));
}

#[tokio::test]
async fn prune_applies_the_retention_set_through_the_api() {
    let f = fixture();
    let old = "/timeseries/query?query=cardano_node_metrics_old_int%5Bnow-3h%3Bnow%3A1m%5D";
    let (_, _, body) = call(&f, "GET", old, "").await;
    assert_eq!(
        parsed(&body)["data"]["result"].as_array().unwrap().len(),
        1,
        "{body}"
    );
    // The default day keeps the 2-hour-old series.
    let (s, _, body) = call(&f, "POST", "/timeseries/prune", "").await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, ""));
    let (_, _, body) = call(&f, "GET", old, "").await;
    assert_eq!(
        parsed(&body)["data"]["result"].as_array().unwrap().len(),
        1,
        "{body}"
    );
    call(&f, "POST", "/timeseries/config/retention?hours=1", "").await;
    call(&f, "POST", "/timeseries/prune", "").await;
    // Its only series is gone, and with it the name (upstream answers the same).
    let (_, _, body) = call(&f, "GET", old, "").await;
    assert!(
        parsed(&body)["error"]
            .as_str()
            .unwrap()
            .contains("Undefined name"),
        "{body}"
    );
    // The recent series stay.
    let (_, _, body) = call(
        &f,
        "GET",
        "/timeseries/query?query=max%20%28cardano_node_metrics_Mem_resident_int%20now%29",
        "",
    )
    .await;
    assert_eq!(parsed(&body)["data"]["result"], json!(50), "{body}");
    let (s, _, _) = call(&f, "GET", "/timeseries/prune", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn nodes_and_their_data_points() {
    let f = fixture();
    let (s, ct, body) = call(&f, "GET", "/timeseries/nodes", "").await;
    assert_eq!((s, ct.as_str()), (StatusCode::OK, "application/json"));
    assert_eq!(
        parsed(&body),
        json!([{"nodeName": "relay_1", "slug": "relay-1"}, {"nodeName": "relay_2", "slug": "relay-2"}])
    );
    let (s, _, body) = call(&f, "GET", "/timeseries/node/relay-1/info", "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        parsed(&body),
        json!({"niName": "relay_1", "niProtocol": "Cardano", "niVersion": "10.5.1",
               "niCommit": "abc123", "niStartTime": "2025-07-20T07:26:40Z",
               "niSystemStartTime": "2017-09-23T21:44:51Z", "uptimeSeconds": 3600})
    );
    let (_, _, body) = call(&f, "GET", "/timeseries/node/relay-1/startup", "").await;
    assert_eq!(
        parsed(&body),
        json!({"suiEra": "Conway", "suiSlotLength": 1, "suiEpochLength": 432000, "suiSlotsPerKESPeriod": 129600})
    );
    let (_, _, body) = call(&f, "GET", "/timeseries/node/relay-1/sync-progress", "").await;
    assert_eq!(parsed(&body), json!({"syncProgress": 99.87}));
    // A node without the data points, an unknown slug, an unknown route, a wrong method.
    for (m, path) in [
        ("GET", "/timeseries/node/relay-2/info"),
        ("GET", "/timeseries/node/relay-2/sync-progress"),
        ("GET", "/timeseries/node/nope/info"),
        ("GET", "/timeseries/node/relay-1/state"),
        ("GET", "/timeseries/whatever"),
        ("GET", "/timeseries"),
        ("DELETE", "/timeseries/query"),
        ("POST", "/timeseries/nodes"),
    ] {
        let (s, ct, body) = call(&f, m, path, "").await;
        assert_eq!(
            (s, ct.as_str(), body.as_str()),
            (StatusCode::NOT_FOUND, "", ""),
            "{m} {path}"
        );
    }
}

#[test]
fn data_points_that_do_not_decode_are_not_served() {
    assert_eq!(node_info(&json!({"niName": "x"}), NOW), None);
    assert_eq!(startup_info(&json!({"suiEra": "Conway"})), None);
    assert_eq!(
        sync_progress(&json!({"tag": "NodeAddBlock", "contents": [1, 2]})),
        None
    );
    assert_eq!(
        sync_progress(&json!({"tag": "NodeTracingOnlineConfiguring"})),
        None
    );
}

#[tokio::test]
async fn a_sample_exactly_five_minutes_old_still_counts_in_the_store() {
    let f = fixture();
    let q = "/timeseries/query?query=cardano_node_metrics_Mem_resident_int%20now&time=";
    let (_, _, body) = call(&f, "GET", &format!("{q}1753000300"), "").await;
    assert_eq!(
        parsed(&body)["data"]["result"].as_array().unwrap().len(),
        2,
        "{body}"
    );
    let (_, _, body) = call(&f, "GET", &format!("{q}1753000300.001"), "").await;
    assert_eq!(parsed(&body)["data"]["result"], json!([]), "{body}");
    // The same boundary on each step of a range read through the store's grid.
    let r = "/timeseries/query?query=cardano_node_metrics_Mem_resident_int%5Bepoch%20%2B%201753000299999ms%3B%20epoch%20%2B%201753000300001ms%20%3A%201ms%5D";
    let (_, _, body) = call(&f, "GET", r, "").await;
    let v = parsed(&body);
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 2, "{body}");
    for s in v["data"]["result"].as_array().unwrap() {
        assert_eq!(s["values"].as_array().unwrap().len(), 2, "{body}");
    }
}
