//! The Prometheus endpoint (`hasPrometheus`): cardano-tracer's routes (`/`, `/targets`,
//! `/<slug>`) plus tracerd's (`/metrics`, `/api/nodes`, `/healthz`, `/readyz`). The
//! expositions themselves are built by [`crate::metrics::fleet`] on the blocking pool.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};

use super::reply::{
    accept, first_segment, json_reply, node_list, not_found_text, reply, wants_json, TEXT_UTF8,
};
use super::{guard, render_blocking, HttpState};
use crate::metrics::exposition::Format;
use crate::metrics::fleet;
use crate::utc;

/// The Prometheus endpoint (`hasPrometheus`): cardano-tracer's routes plus tracerd's.
pub fn prometheus_router(state: Arc<HttpState>) -> Router {
    prometheus_router_with(state, Router::new())
}

/// [`prometheus_router`] with `extra` routes (the live view's) merged before the fallback,
/// behind the same request guard.
pub fn prometheus_router_with(state: Arc<HttpState>, extra: Router) -> Router {
    Router::new()
        .route("/", get(prometheus_root))
        .route("/targets", get(targets))
        .route("/metrics", get(all_metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/nodes", get(api_nodes))
        .route("/api/nodes/{slug}/datapoints/{name}", get(data_point))
        .merge(super::tracer_config::routes())
        .merge(super::runs::routes())
        .merge(super::capture::routes())
        .route("/{slug}", get(node_metrics))
        .route("/{slug}/{*rest}", get(node_metrics_deep))
        .with_state(state.clone())
        .merge(extra)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state, guard))
}

async fn prometheus_root(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    node_list(&state, &headers, "Prometheus metrics")
}

async fn targets(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    if !wants_json(&headers) {
        return reply(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            TEXT_UTF8,
            "Unsupported Media Type",
        );
    }
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))
        .and_then(|v| v.to_str().ok());
    let Some(host) = host else {
        return json_reply(StatusCode::OK, &json!([]));
    };
    let list: Vec<Value> = state
        .nodes
        .views()
        .into_iter()
        .map(|v| {
            let mut labels: Map<String, Value> = state
                .prometheus_labels
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                .collect();
            labels.insert(
                "__metrics_path__".into(),
                Value::from(format!("/{}", v.slug)),
            );
            labels.insert("node_name".into(), Value::from(v.name));
            json!({"targets": [host], "labels": labels})
        })
        .collect();
    json_reply(StatusCode::OK, &Value::Array(list))
}

async fn node_metrics(
    State(state): State<Arc<HttpState>>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(view) = state.nodes.by_slug(&slug) else {
        return not_found_text(&slug);
    };
    let format = Format::from_accept(accept(&headers));
    render_blocking(&state, "node", move |state| {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let (body, stats) = fleet::render_node(&view, format, state.nodes.naming(), now_ms);
        state
            .telemetry
            .metric_name_collisions
            .inc_by(stats.collisions);
        state.telemetry.metric_samples_invalid.inc_by(stats.invalid);
        reply(StatusCode::OK, format.content_type(), body)
    })
    .await
}

/// cardano-tracer ignores path segments after the slug.
async fn node_metrics_deep(
    state: State<Arc<HttpState>>,
    Path((slug, _rest)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    node_metrics(state, Path(slug), headers).await
}

async fn all_metrics(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    let format = Format::from_accept(accept(&headers));
    let views = state.nodes.views();
    render_blocking(&state, "metrics", move |state| {
        let body = state
            .fleet
            .render_all_bytes(&state.telemetry, &views, format);
        reply(StatusCode::OK, format.content_type(), body)
    })
    .await
}

async fn healthz() -> Response {
    reply(StatusCode::OK, TEXT_UTF8, "ok")
}

async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        reply(StatusCode::OK, TEXT_UTF8, "ready")
    } else {
        reply(StatusCode::SERVICE_UNAVAILABLE, TEXT_UTF8, "not ready")
    }
}

fn rfc3339_ms(ms: u64) -> String {
    let mut out = String::new();
    utc::push_rfc3339_nanos(&mut out, (ms as i64).saturating_mul(1_000_000));
    out
}

async fn api_nodes(State(state): State<Arc<HttpState>>) -> Response {
    let t = &state.telemetry;
    let now = std::time::Instant::now();
    let list: Vec<Value> = state
        .nodes
        .views()
        .into_iter()
        .map(|v| {
            let session = v.live.session();
            let name = v.name.as_str();
            let series = t.nodes.get(name);
            json!({
                "name": name,
                "slug": v.slug,
                "protocol": session.protocol,
                "peer": session.peer,
                "connectedSince": rfc3339_ms(session.connected_since_ms),
                "lastMessageAt": v.live.last_message_ms().map(rfc3339_ms),
                "rttSeconds": v.live.rtt_micros().map(|us| us as f64 / 1e6),
                "rtt": v.live.rtt_summary(now).map(|r| json!({
                    "latestSeconds": r.latest,
                    "p50Seconds": r.p50,
                    "p99Seconds": r.p99,
                    "samples": r.samples,
                })),
                "metrics": v.live.metrics().len(),
                "dataPoints": v.live.data_point_names(),
                "objectsReceived": series.as_ref().map_or(0, |c| c.received()),
                "objectsWritten": series.as_ref().map_or(0, |c| c.written()),
                "bytesWritten": series.as_ref().map_or(0, |c| c.bytes()),
                "refused": v.live.refused(),
                "writeQueueBatches": v.live.queue_depth(),
            })
        })
        .collect();
    json_reply(StatusCode::OK, &Value::Array(list))
}

async fn data_point(
    State(state): State<Arc<HttpState>>,
    Path((slug, name)): Path<(String, String)>,
) -> Response {
    let Some(view) = state.nodes.by_slug(&slug) else {
        return not_found_text(&slug);
    };
    let fetched = view
        .live
        .fetch_data_point(&name, crate::node::live::DATA_POINT_TIMEOUT)
        .await;
    let Some(text) = fetched else {
        return not_found_text(&name);
    };
    // The node promised JSON; if it is not, serve it as a JSON string rather than bad JSON.
    match serde_json::from_str::<Value>(&text) {
        Ok(value) => json_reply(StatusCode::OK, &value),
        Err(_) => json_reply(StatusCode::OK, &Value::from(text)),
    }
}

async fn not_found(req: Request) -> Response {
    not_found_text(first_segment(req.uri().path()))
}
