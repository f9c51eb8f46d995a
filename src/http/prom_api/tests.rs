//! The API through its router, with `tower::ServiceExt::oneshot`, over a real store and the
//! real evaluator.

use super::*;
use axum::http::Request as HttpRequest;
use tower::ServiceExt;
use tracerd_tsdb::Config;

const T0: i64 = 1_700_000_000_000;

fn l(name: &str, node: &str) -> Labels {
    vec![
        ("__name__".to_string(), name.to_string()),
        ("node_name".to_string(), node.to_string()),
    ]
}

/// Two nodes, `up` = 1 and a counter growing by 10 a second, 10 minutes at 1 s.
fn store() -> Arc<Store> {
    let st = Store::new(Config::default());
    for i in 0..600i64 {
        for (k, node) in ["a", "b"].iter().enumerate() {
            st.append(&l("up", node), T0 + i * 1000, 1.0).unwrap();
            st.append(
                &l("reqs_total", node),
                T0 + i * 1000,
                (i * 10 * (k as i64 + 1)) as f64,
            )
            .unwrap();
        }
    }
    Arc::new(st)
}

fn cfg() -> ApiConfig {
    ApiConfig {
        now_ms: Arc::new(|| T0 + 599_000),
        metadata: Arc::new(|| {
            BTreeMap::from([(
                "reqs_total".to_string(),
                MetricMeta {
                    kind: "counter".into(),
                    help: "Requests.".into(),
                    unit: String::new(),
                },
            )])
        }),
        ..ApiConfig::default()
    }
}

async fn call(r: Router, req: HttpRequest<Body>) -> (StatusCode, serde_json::Value) {
    let resp = r.oneshot(req).await.unwrap();
    let status = resp.status();
    assert_eq!(
        resp.headers().get(header::CONTENT_TYPE).unwrap(),
        "application/json"
    );
    let body = axum::body::to_bytes(resp.into_body(), 1 << 24)
        .await
        .unwrap();
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body)));
    (status, v)
}

async fn get_json(r: Router, uri: &str) -> (StatusCode, serde_json::Value) {
    call(r, HttpRequest::get(uri).body(Body::empty()).unwrap()).await
}

async fn post_form(r: Router, uri: &str, form: &str) -> (StatusCode, serde_json::Value) {
    let req = HttpRequest::post(uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form.to_string()))
        .unwrap();
    call(r, req).await
}

fn secs(t: i64) -> f64 {
    t as f64 / 1000.0
}

#[tokio::test]
async fn instant_query_answers_in_prometheus_envelope_with_string_values() {
    let r = router(store(), cfg());
    let (s, v) = get_json(
        r.clone(),
        &format!(
            "/api/v1/query?query=sum+by+(node_name)+(rate(reqs_total[1m]))&time={}",
            secs(T0 + 300_000)
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "success");
    assert_eq!(v["data"]["resultType"], "vector");
    let res = v["data"]["result"].as_array().unwrap();
    assert_eq!(res.len(), 2);
    for item in res {
        let node = item["metric"]["node_name"].as_str().unwrap();
        assert!(
            item["metric"].get("__name__").is_none(),
            "sum drops the name"
        );
        assert_eq!(item["value"][0].as_f64().unwrap(), secs(T0 + 300_000));
        let rate: f64 = item["value"][1].as_str().unwrap().parse().unwrap();
        assert_eq!(rate, if node == "a" { 10.0 } else { 20.0 });
    }
    // No `time`: the configured clock's now. A scalar comes back as [t, "v"].
    let (s, v) = get_json(r, "/api/v1/query?query=1%2B1").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["resultType"], "scalar");
    assert_eq!(v["data"]["result"][1], "2");
    assert_eq!(v["data"]["result"][0].as_f64().unwrap(), secs(T0 + 599_000));
}

#[tokio::test]
async fn range_query_by_post_form_returns_a_matrix_point_per_step() {
    let r = router(store(), cfg());
    let form = format!(
        "query=up%7Bnode_name%3D%22a%22%7D&start={}&end={}&step=15s",
        secs(T0 + 60_000),
        secs(T0 + 120_000)
    );
    let (s, v) = post_form(r, "/api/v1/query_range", &form).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["resultType"], "matrix");
    let res = v["data"]["result"].as_array().unwrap();
    assert_eq!(res.len(), 1);
    assert_eq!(res[0]["metric"]["node_name"], "a");
    assert_eq!(res[0]["metric"]["__name__"], "up");
    let pts = res[0]["values"].as_array().unwrap();
    assert_eq!(pts.len(), 5, "60 s at 15 s steps, both ends included");
    assert_eq!(pts[1][0].as_f64().unwrap(), secs(T0 + 75_000));
    assert!(pts.iter().all(|p| p[1] == "1"));
}

#[tokio::test]
async fn bad_requests_get_400_bad_data_saying_what_is_wrong() {
    let r = router(store(), cfg());
    for (uri, needle) in [
        ("/api/v1/query?query=sum(", "parse"),
        ("/api/v1/query", "\"query\""),
        ("/api/v1/query?query=up&time=yesterday", "\"time\""),
        (
            "/api/v1/query_range?query=up&start=10&end=5&step=1",
            "before start",
        ),
        ("/api/v1/query_range?query=up&start=0&end=5", "\"step\""),
        (
            "/api/v1/query_range?query=up&start=0&end=5&step=0",
            "positive",
        ),
        (
            "/api/v1/query_range?query=up&start=0&end=100000&step=1",
            "11,000",
        ),
        ("/api/v1/query?query=up%7Bnode_name%3D~%22(%22%7D", "regex"),
        ("/api/v1/series", "match[]"),
        (
            "/api/v1/series?match[]=%7Bnode_name%3D~%22.*%22%7D",
            "non-empty",
        ),
        ("/api/v1/label/bad-name/values", "invalid label name"),
        ("/api/v1/query?query=%ff", "UTF-8"),
    ] {
        let (s, v) = get_json(r.clone(), uri).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}: {v}");
        assert_eq!(v["status"], "error", "{uri}");
        assert_eq!(v["errorType"], "bad_data", "{uri}");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(needle), "{uri}: {msg:?} lacks {needle:?}");
    }
}

#[tokio::test]
async fn sample_cap_is_422_execution_and_timeout_is_503() {
    let r = router(
        store(),
        ApiConfig {
            max_samples: 500,
            ..cfg()
        },
    );
    // 2 series × 300 samples in the 5-minute window exceed 500.
    let (s, v) = get_json(
        r.clone(),
        &format!(
            "/api/v1/query?query=max_over_time(up[5m])&time={}",
            secs(T0 + 599_000)
        ),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["errorType"], "execution");
    assert!(v["error"].as_str().unwrap().contains("too many samples"));
    // Under the cap the same store answers.
    let (s, _) = get_json(
        r,
        &format!(
            "/api/v1/query?query=max_over_time(up[1m])&time={}",
            secs(T0 + 599_000)
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    let r = router(
        store(),
        ApiConfig {
            timeout: Duration::ZERO,
            ..cfg()
        },
    );
    let (s, v) = get_json(r, "/api/v1/query?query=up").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["errorType"], "timeout");
}

#[tokio::test]
async fn a_disconnected_node_stops_answering_after_its_stale_marker() {
    let st = store();
    assert_eq!(st.mark_stale("node_name", "b", T0 + 600_000), 2);
    let r = router(st, cfg());
    let at = |t: i64| format!("/api/v1/query?query=up&time={}", secs(t));
    let (_, before) = get_json(r.clone(), &at(T0 + 599_500)).await;
    assert_eq!(before["data"]["result"].as_array().unwrap().len(), 2);
    let (_, after) = get_json(r.clone(), &at(T0 + 601_000)).await;
    let res = after["data"]["result"].as_array().unwrap();
    assert_eq!(res.len(), 1, "{after}");
    assert_eq!(res[0]["metric"]["node_name"], "a");
    // Its series are still there for range queries over the past and for /series.
    let (_, s) = get_json(r, "/api/v1/series?match[]=up").await;
    assert_eq!(s["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn series_labels_and_values_list_what_is_stored() {
    let r = router(store(), cfg());
    let (s, v) = post_form(
        r.clone(),
        "/api/v1/series",
        "match[]=up%7Bnode_name%3D%22a%22%7D&match[]=reqs_total",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let got: Vec<String> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["__name__"].as_str().unwrap(),
                m["node_name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(got, ["reqs_total/a", "reqs_total/b", "up/a"]);
    // A time range without samples finds nothing.
    let (_, v) = get_json(r.clone(), "/api/v1/series?match[]=up&start=1&end=2").await;
    assert_eq!(v["data"].as_array().unwrap().len(), 0);

    let (_, v) = get_json(r.clone(), "/api/v1/labels").await;
    assert_eq!(v["data"], serde_json::json!(["__name__", "node_name"]));
    let (_, v) = get_json(r.clone(), "/api/v1/label/__name__/values").await;
    assert_eq!(v["data"], serde_json::json!(["reqs_total", "up"]));
    let (_, v) = get_json(
        r.clone(),
        "/api/v1/label/node_name/values?match[]=up%7Bnode_name!%3D%22a%22%7D",
    )
    .await;
    assert_eq!(v["data"], serde_json::json!(["b"]));
    let (_, v) = get_json(r.clone(), "/api/v1/label/missing/values").await;
    assert_eq!(v["data"], serde_json::json!([]));

    let (_, v) = get_json(r.clone(), "/api/v1/metadata").await;
    assert_eq!(v["data"]["reqs_total"][0]["type"], "counter");
    assert_eq!(v["data"]["reqs_total"][0]["help"], "Requests.");
    let (_, v) = get_json(r.clone(), "/api/v1/metadata?limit=0").await;
    assert_eq!(v["data"], serde_json::json!({}));
    let (s, v) = get_json(r, "/api/v1/status/buildinfo").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"]["version"], "2.42.0");
}

#[test]
fn times_durations_and_values_parse_and_print_as_prometheus_does() {
    assert_eq!(
        params::time("t", "1435781451.781").unwrap(),
        1_435_781_451_781
    );
    assert_eq!(
        params::time("t", "2015-07-01T20:10:51.781Z").unwrap(),
        1_435_781_451_781
    );
    assert_eq!(
        params::time("t", "2015-07-01T22:10:51+02:00").unwrap(),
        1_435_781_451_000
    );
    assert!(params::time("t", "2015-13-01T20:10:51Z").is_err());
    assert_eq!(params::duration("s", "1h30m").unwrap(), 5_400_000);
    assert_eq!(params::duration("s", "15").unwrap(), 15_000);
    assert_eq!(params::duration("s", "0.5").unwrap(), 500);
    assert_eq!(params::duration("s", "250ms").unwrap(), 250);
    assert!(params::duration("s", "5x").is_err());
    let mut out = String::new();
    json::timestamp(&mut out, 1_435_781_451_780);
    out.push(' ');
    json::timestamp(&mut out, 1_000);
    out.push(' ');
    json::timestamp(&mut out, -1_500);
    assert_eq!(out, "1435781451.78 1 -1.5");
    let mut out = String::new();
    for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.1, 1e21, -2.0] {
        json::value(&mut out, v);
    }
    assert_eq!(
        out,
        "\"NaN\"\"+Inf\"\"-Inf\"\"0.1\"\"1000000000000000000000\"\"-2\""
    );
}

/// With one evaluation slot, a query that cannot get it within its timeout is Prometheus's
/// 503 timeout, and the slot's query still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_wait_for_a_slot_within_their_timeout() {
    let r = router(
        store(),
        ApiConfig {
            max_concurrent: 1,
            ..cfg()
        },
    );
    let slow = format!(
        "/api/v1/query_range?query={}&start={}&end={}&step=1",
        "count_over_time(reqs_total%5B5m%3A10ms%5D)",
        secs(T0 + 590_000),
        secs(T0 + 599_000)
    );
    let r2 = r.clone();
    let a = tokio::spawn(async move {
        let out = get_json(r2, &slow).await;
        (out, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    let (s, v) = get_json(r.clone(), "/api/v1/query?query=up&timeout=50ms").await;
    let gave_up = Instant::now();
    let ((sa, va), slow_done) = a.await.unwrap();
    assert_eq!(sa, StatusCode::OK, "{va}");
    // Meaningful only if the slow query still held the slot when the second gave up.
    assert!(slow_done > gave_up, "the slow query was not slow enough");
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["errorType"], "timeout");
    assert!(v["error"].as_str().unwrap().contains("waiting"), "{v}");
    // Once the slot is free, the same query answers.
    let (s, _) = get_json(r, "/api/v1/query?query=up&timeout=5s").await;
    assert_eq!(s, StatusCode::OK);
}
