//! The live view (issue 14): a web page served by tracerd itself at `/ui/` on the
//! `hasPrometheus` endpoint, successor of cardano-tracer's RTView.
//!
//! Routes (merged into the Prometheus router by `app::build`, behind its request guard):
//! `/ui/` and its embedded assets ([`assets`]: one HTML page, one script, one stylesheet, all
//! written here and compiled into the binary); `/ui/api/fleet` (the fleet summary once) and
//! `/ui/api/fleet/stream` (the same pushed every second as Server-Sent Events, [`fleet`]);
//! `/api/nodes/<slug>/traces/stream` (a node's written trace lines as they arrive,
//! [`traces`]); `/ui/api/config` (tracerd's effective config, JSON or YAML); and, when the
//! metric history exists, Prometheus's query API over it under `/ui/history/` (the router is
//! handed in, so this module does not build HTTP's).
//!
//! Every stream is bounded in time ([`STREAM_LIFETIME`]; the browser's `EventSource`
//! reconnects by itself after `retry`), ends within a second of shutdown starting, and never
//! holds a lock between events. The fleet summary is built at most once a second whatever
//! the number of browsers.

pub mod assets;
pub mod fleet;
pub mod traces;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use crate::http::HttpState;
use crate::running::Running;

/// How long one event stream lasts; the browser reconnects after it (`retry`). Under the HTTP
/// layer's stall bound (`http::conns::STALLED`), which closes a response still running after
/// 30 s.
pub const STREAM_LIFETIME: Duration = Duration::from_secs(25);
/// The reconnection delay the streams ask of `EventSource`, in milliseconds.
pub const RETRY_MS: u64 = 500;

/// What the live view's handlers read.
pub struct UiState {
    /// The HTTP state: registry, telemetry, readiness (a stream ends when it drops).
    pub http: Arc<HttpState>,
    /// The effective config.
    pub running: Running,
    /// The metric history's retention, in milliseconds (0 without a history), for the
    /// time-range picker.
    pub retention_ms: u64,
    fleet: Mutex<fleet::Tracker>,
}

impl std::fmt::Debug for UiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UiState")
            .field("retention_ms", &self.retention_ms)
            .finish()
    }
}

impl UiState {
    /// The state over `http` and `running`.
    pub fn new(http: Arc<HttpState>, running: Running, retention_ms: u64) -> UiState {
        UiState {
            http,
            running,
            retention_ms,
            fleet: Mutex::new(fleet::Tracker::default()),
        }
    }

    /// The fleet summary JSON (shared between streams, rebuilt at most once a period).
    pub fn fleet_json(&self) -> Arc<str> {
        let telemetry = &self.http.telemetry;
        let counters = |name: &str| {
            let c = telemetry.nodes.get(name);
            fleet::Counters {
                objects: c.as_ref().map_or(0, |c| c.received()),
                bytes: c.as_ref().map_or(0, |c| c.bytes()),
            }
        };
        crate::sync::lock(&self.fleet).snapshot(
            || self.http.nodes.views(),
            counters,
            crate::node::live::now_ms(),
        )
    }

    fn serving(&self) -> bool {
        self.http.ready.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The live view's routes; `history` is Prometheus's query API over the metric history,
/// nested under `/ui/history` when there is one.
pub fn router(state: Arc<UiState>, history: Option<Router>) -> Router {
    let mut r = Router::new()
        .route("/ui", get(redirect))
        .route("/ui/", get(assets::index))
        .route("/ui/{file}", get(assets::file))
        .route("/ui/api/fleet", get(fleet_once))
        .route("/ui/api/fleet/stream", get(fleet_stream))
        .route("/ui/api/config", get(own_config))
        .route("/api/nodes/{slug}/traces/stream", get(traces::stream))
        .with_state(state);
    if let Some(h) = history {
        r = r.nest("/ui/history", h);
    }
    r
}

async fn redirect() -> Response {
    Response::builder()
        .status(StatusCode::MOVED_PERMANENTLY)
        .header(header::LOCATION, "/ui/")
        .body(Body::empty())
        .unwrap_or_default()
}

fn json_response(body: impl Into<Body>) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(body.into())
        .unwrap_or_default()
}

async fn fleet_once(State(state): State<Arc<UiState>>) -> Response {
    let json = state.fleet_json();
    let mut body = String::with_capacity(json.len() + 64);
    body.push_str(&json[..json.len() - 1]);
    body.push_str(&format!(",\"retentionMs\":{}}}", state.retention_ms));
    json_response(body)
}

/// One Server-Sent Event: `event:` (unless the default `message`) and one `data:` line
/// (`data` holds no line break: every payload here is one JSON or machine line).
pub fn sse_event(event: Option<&str>, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 32);
    if let Some(e) = event {
        out.push_str("event: ");
        out.push_str(e);
        out.push('\n');
    }
    for line in data.split(['\n', '\r']) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// A `text/event-stream` response over `stream`.
pub fn sse_response<S>(stream: S) -> Response
where
    S: futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
{
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-store")
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(stream))
        .unwrap_or_default()
}

/// The fleet summary every [`fleet::PERIOD`], as `event: fleet`.
async fn fleet_stream(State(state): State<Arc<UiState>>) -> Response {
    struct S {
        state: Arc<UiState>,
        started: Instant,
        first: bool,
    }
    let s = S {
        state,
        started: Instant::now(),
        first: true,
    };
    let stream = futures_util::stream::unfold(s, |mut s| async move {
        if s.first {
            s.first = false;
            let mut head = format!("retry: {RETRY_MS}\n\n").into_bytes();
            head.extend_from_slice(&sse_event(Some("fleet"), &s.state.fleet_json()));
            return Some((Ok(Bytes::from(head)), s));
        }
        tokio::time::sleep(fleet::PERIOD).await;
        if !s.state.serving() || s.started.elapsed() >= STREAM_LIFETIME {
            return None;
        }
        let json = s.state.fleet_json();
        Some((Ok(sse_event(Some("fleet"), &json)), s))
    });
    sse_response(stream)
}

/// tracerd's effective config: JSON, or YAML (itself a valid config file) with
/// `?format=yaml` or an `Accept` naming YAML.
async fn own_config(
    State(state): State<Arc<UiState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let config = state.running.current().config.clone();
    let yaml = query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|p| p == "format=yaml"))
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("yaml"));
    if yaml {
        Response::builder()
            .header(header::CONTENT_TYPE, "application/yaml")
            .header(
                header::CONTENT_DISPOSITION,
                "inline; filename=\"tracerd.yaml\"",
            )
            .body(Body::from(crate::config::to_yaml(&config)))
            .unwrap_or_default()
    } else {
        json_response(crate::config::to_json(&config))
    }
}
