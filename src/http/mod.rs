//! The HTTP server: cardano-tracer's Prometheus routes (`/`, `/targets`, `/<slug>`), tracerd's
//! own (`/metrics`, `/api/nodes`, `/healthz`, `/readyz`) and the EKG-compatible JSON routes,
//! served by axum over hyper with a header-read timeout, a per-request timeout and a
//! connection limit.
//!
//! Handlers only read the node registry and each node's live state; renders run on the
//! blocking pool (a few at a time), so a heavy scrape never occupies the runtime threads that
//! ingest runs on, and never holds a lock that ingest needs for longer than one node's render.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Endpoint;
use crate::metrics::ekg;
use crate::metrics::exposition::{self, Format, Kind, Renderer};
use crate::metrics::telemetry::Telemetry;
use crate::node::{NodeView, Nodes};
use crate::utc;

/// Longest time one request may take, headers to last byte of the response body produced.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest time a client may take to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP connections served at once per endpoint; further connections are closed.
pub const MAX_CONNECTIONS: usize = 256;
/// Most memory kept between `/metrics` renders for reuse.
const MAX_KEPT_BUFFER_BYTES: usize = 256 << 20;
/// Expositions rendered at once (each on a blocking thread).
pub const MAX_CONCURRENT_RENDERS: usize = 4;

const TEXT_UTF8: &str = "text/plain;charset=utf-8";
const HTML_UTF8: &str = "text/html;charset=utf-8";
const JSON: &str = "application/json";

/// Why an HTTP endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// `host:port`.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// What every handler reads.
#[derive(Debug)]
pub struct HttpState {
    /// Node registry.
    pub nodes: Nodes,
    /// tracerd's own metrics.
    pub telemetry: Telemetry,
    /// `prometheusLabels`, added to every `/targets` entry.
    pub prometheus_labels: BTreeMap<String, String>,
    /// True once every listener is bound, false again once shutdown starts.
    pub ready: AtomicBool,
    renders: Arc<Semaphore>,
    /// Family buffers of the last `/metrics` render, reused by the next.
    buffers: std::sync::Mutex<Vec<String>>,
}

impl HttpState {
    /// State over `nodes` and `telemetry`; not ready until [`HttpState::set_ready`].
    pub fn new(
        nodes: Nodes,
        telemetry: Telemetry,
        prometheus_labels: BTreeMap<String, String>,
    ) -> HttpState {
        HttpState {
            nodes,
            telemetry,
            prometheus_labels,
            ready: AtomicBool::new(false),
            renders: Arc::new(Semaphore::new(MAX_CONCURRENT_RENDERS)),
            buffers: std::sync::Mutex::default(),
        }
    }

    /// Flips `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

/// The Prometheus endpoint (`hasPrometheus`): cardano-tracer's routes plus tracerd's.
pub fn prometheus_router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/", get(prometheus_root))
        .route("/targets", get(targets))
        .route("/metrics", get(all_metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/nodes", get(api_nodes))
        .route("/api/nodes/{slug}/datapoints/{name}", get(data_point))
        .route("/{slug}", get(node_metrics))
        .route("/{slug}/{*rest}", get(node_metrics_deep))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// The EKG-compatible endpoint (`hasEKG`): node list and nested JSON per node.
pub fn ekg_router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/", get(ekg_root))
        .route("/{slug}", get(ekg_node))
        .route("/{slug}/{*metric}", get(ekg_metric))
        .fallback(ekg_not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Body>) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json_reply(status: StatusCode, value: &Value) -> Response {
    reply(status, JSON, value.to_string())
}

/// Request timeout and request counting.
async fn guard(State(state): State<Arc<HttpState>>, req: Request, next: Next) -> Response {
    let route = route_label(req.uri().path());
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT_UTF8,
            "Request timed out",
        ),
    };
    state
        .telemetry
        .http_requests
        .with_label_values(&[route, response.status().as_str()])
        .inc();
    response
}

/// A bounded label for a path.
fn route_label(path: &str) -> &'static str {
    match path.trim_start_matches('/').split('/').next().unwrap_or("") {
        "" => "root",
        "targets" => "targets",
        "metrics" => "metrics",
        "api" => "api",
        "healthz" => "healthz",
        "readyz" => "readyz",
        _ => "node",
    }
}

fn accept(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())
}

/// cardano-tracer's rule: JSON when `Accept` is absent or mentions `application/json`.
fn wants_json(headers: &HeaderMap) -> bool {
    accept(headers).is_none_or(|a| a.contains("application/json"))
}

fn first_segment(path: &str) -> &str {
    path.trim_start_matches('/').split('/').next().unwrap_or("")
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The node list: JSON `{"name":"/slug"}` or an HTML page of links titled `title`.
fn node_list(state: &HttpState, headers: &HeaderMap, title: &str) -> Response {
    let views = state.nodes.views();
    if wants_json(headers) {
        let map: Map<String, Value> = views
            .into_iter()
            .map(|v| (v.name, Value::from(format!("/{}", v.slug))))
            .collect();
        return json_reply(StatusCode::OK, &Value::Object(map));
    }
    let mut html = format!("<html><head><title>{title}</title></head><body>");
    if views.is_empty() {
        html.push_str("There are no connected nodes yet.");
    } else {
        html.push_str("<ul>");
        for v in views {
            html.push_str(&format!(
                "<li><a href=\"/{}\">{}</a></li>",
                html_escape(&v.slug),
                html_escape(&v.name)
            ));
        }
        html.push_str("</ul>");
    }
    html.push_str("</body></html>");
    reply(StatusCode::OK, HTML_UTF8, html)
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

/// Runs a render on the blocking pool, a few at a time.
async fn render_blocking<F>(state: &Arc<HttpState>, route: &'static str, f: F) -> Response
where
    F: FnOnce(&HttpState) -> Response + Send + 'static,
{
    // The permit moves into the render: a client that gives up does not free its slot
    // before the render it started is done.
    let Ok(permit) = state.renders.clone().acquire_owned().await else {
        return reply(StatusCode::SERVICE_UNAVAILABLE, TEXT_UTF8, "Shutting down");
    };
    let state = state.clone();
    let started = Instant::now();
    let result = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let r = f(&state);
        state
            .telemetry
            .exposition_seconds
            .with_label_values(&[route])
            .observe(started.elapsed().as_secs_f64());
        r
    })
    .await;
    result.unwrap_or_else(|e| {
        tracing::error!(error = %e, route, "render failed");
        reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            TEXT_UTF8,
            "Internal error",
        )
    })
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
        let (body, stats) = render_node(&view, format);
        state
            .telemetry
            .metric_name_collisions
            .inc_by(stats.collisions);
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

/// One node's exposition.
pub fn render_node(view: &NodeView, format: Format) -> (String, exposition::RenderStats) {
    let store = view.live.metrics();
    exposition::render_node(format, store.iter())
}

async fn all_metrics(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    let format = Format::from_accept(accept(&headers));
    let views = state.nodes.views();
    render_blocking(&state, "metrics", move |state| {
        let body = render_all(state, &views, format);
        reply(StatusCode::OK, format.content_type(), body)
    })
    .await
}

/// Per-node families tracerd adds to `/metrics` from each node's live state.
const NODE_RTT: &str = "tracerd_node_rtt_seconds";
const NODE_LAST_MESSAGE: &str = "tracerd_node_last_message_timestamp_seconds";
const NODE_METRICS: &str = "tracerd_node_metrics";
const NODE_QUEUE: &str = "tracerd_node_write_queue_batches";

/// Every node's metrics labelled `node_name`, then tracerd's own metrics.
pub fn render_all(state: &HttpState, views: &[NodeView], format: Format) -> String {
    let mut renderer = Renderer::with_nodes(format, views.len());
    renderer.reuse(std::mem::take(
        &mut *state.buffers.lock().unwrap_or_else(|e| e.into_inner()),
    ));
    for name in state.telemetry.reserved_names() {
        renderer.reserve(&name);
    }
    for name in [NODE_RTT, NODE_LAST_MESSAGE, NODE_METRICS, NODE_QUEUE] {
        renderer.reserve(name);
    }
    let mut rtt = Vec::with_capacity(views.len());
    let mut last = Vec::with_capacity(views.len());
    let mut counts = Vec::with_capacity(views.len());
    let mut queues = Vec::with_capacity(views.len());
    for v in views {
        let store = v.live.metrics();
        renderer.add_node(Some(&v.name), store.iter());
        counts.push((v.name.as_str(), store.len() as f64));
        drop(store);
        if let Some(us) = v.live.rtt_micros() {
            rtt.push((v.name.as_str(), us as f64 / 1e6));
        }
        if let Some(ms) = v.live.last_message_ms() {
            last.push((v.name.as_str(), ms as f64 / 1e3));
        }
        if let Some(depth) = v.live.queue_depth() {
            queues.push((v.name.as_str(), depth as f64));
        }
    }
    let mut out = String::new();
    let mut spare = Vec::new();
    let stats = renderer.finish_reusing(&mut out, &mut spare);
    let kept: usize = spare.iter().map(String::capacity).sum();
    if kept <= MAX_KEPT_BUFFER_BYTES {
        *state.buffers.lock().unwrap_or_else(|e| e.into_inner()) = spare;
    }
    state
        .telemetry
        .metric_name_collisions
        .inc_by(stats.collisions);
    let mut per_node = |name: &str, help: &str, values: &[(&str, f64)]| {
        let names = exposition::family_names(name, Kind::Gauge);
        exposition::write_header(&mut out, format, &names, Kind::Gauge, help);
        for (node, value) in values {
            out.push_str(name);
            exposition::write_labels(&mut out, [("node_name", *node)]);
            out.push(' ');
            exposition::write_f64(&mut out, *value);
            out.push('\n');
        }
    };
    per_node(
        NODE_RTT,
        "Last round-trip time to the node, measured with the protocol's ping, in seconds.",
        &rtt,
    );
    per_node(
        NODE_LAST_MESSAGE,
        "When the node's last message arrived, in seconds since the Unix epoch.",
        &last,
    );
    per_node(
        NODE_METRICS,
        "Distinct metrics the node has sent in its current session.",
        &counts,
    );
    per_node(
        NODE_QUEUE,
        "Batches of trace objects waiting in the node's write queue.",
        &queues,
    );
    state.telemetry.render_into(format, &mut out);
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
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
    let list: Vec<Value> = state
        .nodes
        .views()
        .into_iter()
        .map(|v| {
            let session = v.live.session();
            let name = v.name.as_str();
            json!({
                "name": name,
                "slug": v.slug,
                "protocol": session.protocol,
                "peer": session.peer,
                "connectedSince": rfc3339_ms(session.connected_since_ms),
                "lastMessageAt": v.live.last_message_ms().map(rfc3339_ms),
                "rttSeconds": v.live.rtt_micros().map(|us| us as f64 / 1e6),
                "metrics": v.live.metrics().len(),
                "dataPoints": v.live.data_point_names(),
                "objectsReceived": t.objects_received.with_label_values(&[name]).get(),
                "objectsWritten": t.objects_written.with_label_values(&[name]).get(),
                "bytesWritten": t.bytes_written.with_label_values(&[name]).get(),
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
        .fetch_data_point(&name, crate::node::state::DATA_POINT_TIMEOUT)
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

fn not_found_text(what: &str) -> Response {
    reply(
        StatusCode::NOT_FOUND,
        TEXT_UTF8,
        format!("Not found: {what}"),
    )
}

async fn not_found(req: Request) -> Response {
    not_found_text(first_segment(req.uri().path()))
}

async fn ekg_root(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    node_list(&state, &headers, "EKG metrics")
}

async fn ekg_node(State(state): State<Arc<HttpState>>, Path(slug): Path<String>) -> Response {
    let Some(view) = state.nodes.by_slug(&slug) else {
        return ekg_not_found_text(&slug);
    };
    let value = {
        let store = view.live.metrics();
        ekg::nested(store.iter().map(|(n, v)| (&*n.internal, v)))
    };
    json_reply(StatusCode::OK, &value)
}

async fn ekg_metric(
    State(state): State<Arc<HttpState>>,
    Path((slug, metric)): Path<(String, String)>,
) -> Response {
    let Some(view) = state.nodes.by_slug(&slug) else {
        return ekg_not_found_text(&slug);
    };
    let internal = metric.trim_end_matches('/').replace('/', ".");
    let leaf = view.live.metrics().get(&internal).map(ekg::leaf);
    match leaf {
        Some(leaf) => json_reply(StatusCode::OK, &leaf),
        None => json_reply(StatusCode::NOT_FOUND, &Value::from("Metric not found")),
    }
}

fn ekg_not_found_text(what: &str) -> Response {
    reply(
        StatusCode::NOT_FOUND,
        TEXT_UTF8,
        format!("Not found: {}", Value::from(what)),
    )
}

async fn ekg_not_found(req: Request) -> Response {
    ekg_not_found_text(first_segment(req.uri().path()))
}

/// Binds an endpoint's TCP listener.
pub async fn bind(endpoint: &Endpoint) -> Result<TcpListener, HttpError> {
    let addr = if endpoint.ep_host.contains(':') {
        format!("[{}]:{}", endpoint.ep_host, endpoint.ep_port)
    } else {
        format!("{}:{}", endpoint.ep_host, endpoint.ep_port)
    };
    TcpListener::bind(&addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// Serves `router` on `listener` until `cancel` fires; each connection is a task on
/// `tracker`, finishing its in-flight request before it closes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer): (tokio::net::TcpStream, SocketAddr) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(10);
                a
            }
            Err(e) => {
                tracing::error!(error = %e, "HTTP accept failed; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "HTTP connection limit reached; closing new connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    match tokio::time::timeout(REQUEST_TIMEOUT, conn.as_mut()).await {
                        Ok(r) => r,
                        Err(_) => Ok(()),
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests;
