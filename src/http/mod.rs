//! The HTTP server: cardano-tracer's Prometheus routes (`/`, `/targets`, `/<slug>`), tracerd's
//! own (`/metrics`, `/api/nodes`, `/healthz`, `/readyz`) in `prometheus`, and the
//! EKG-compatible JSON routes in `ekg`, served by axum over hyper with a header-read timeout,
//! a per-request timeout and connection limits per endpoint and per client, where a new
//! connection takes the slot of the longest-idle one (`conns`). HTTP only routes and negotiates (`reply`);
//! what a scrape returns is rendered by [`crate::metrics`].
//!
//! Handlers only read the node registry and each node's live state; renders run on the
//! blocking pool (a few at a time), so a heavy scrape never occupies the runtime threads that
//! ingest runs on, and never holds a lock that ingest needs for longer than one node's render.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Endpoint;
use crate::metrics::fleet::FleetRenderer;
use crate::metrics::telemetry::Telemetry;
use crate::node::Nodes;
use crate::transport::{Acceptor, Conn, Listener};

pub mod auth;
mod capture;
pub mod conns;
mod ekg;
pub mod prom_api;
mod prometheus;
mod reply;
mod runs;
pub mod timeseries;
pub mod tls;
mod tracer_config;

pub use ekg::ekg_router;
pub use prometheus::{prometheus_router, prometheus_router_with};
use reply::{reply, TEXT_UTF8};

/// Longest time one request may take, headers to last byte of the response body produced.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest time a client may take to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP connections served at once per endpoint by default (see [`conns`] for who gives up a
/// slot).
pub const MAX_CONNECTIONS: usize = conns::MAX_CONNECTIONS;
/// Expositions rendered at once (each on a blocking thread).
pub const MAX_CONCURRENT_RENDERS: usize = 4;
/// A `/metrics` render while every node's metrics together are accounted more than this
/// (`metrics::budget`) is large: one large render exists at a time.
pub const LARGE_RENDER_BYTES: u64 = 4 << 20;

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
    /// The live view is served (`tracerd.ui`): `/`'s browser page links to it.
    pub ui_link: AtomicBool,
    renders: Arc<Semaphore>,
    /// One large `/metrics` render at a time ([`LARGE_RENDER_BYTES`]).
    large_renders: Arc<Semaphore>,
    /// The `/metrics` renderer (it keeps its buffers between renders).
    fleet: FleetRenderer,
    /// Benchmark runs (`/api/runs`), set by `app::build`.
    pub runs: std::sync::OnceLock<Arc<crate::runs::Runs>>,
    /// The capture window (`/api/nodes/<slug>/capture`), set by `app::build`.
    pub captures: std::sync::OnceLock<Arc<crate::capture::Captures>>,
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
            ui_link: AtomicBool::new(false),
            renders: Arc::new(Semaphore::new(MAX_CONCURRENT_RENDERS)),
            large_renders: Arc::new(Semaphore::new(1)),
            fleet: FleetRenderer::default(),
            runs: std::sync::OnceLock::new(),
            captures: std::sync::OnceLock::new(),
        }
    }

    /// Flips `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

/// Request timeout and request counting.
pub(super) async fn guard(
    State(state): State<Arc<HttpState>>,
    req: Request,
    next: Next,
) -> Response {
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
        "ui" => "ui",
        _ => "node",
    }
}

/// A response larger than this tells the memory trimmer when it is dropped.
const LARGE_RESPONSE: usize = 1 << 20;

/// Runs a render on the blocking pool, a few at a time: at most [`MAX_CONCURRENT_RENDERS`]
/// expositions exist at once, rendering or being sent (the permit lives in the response body
/// until hyper drops it), so concurrent scrapes cannot multiply the largest exposition.
async fn render_blocking<F>(state: &Arc<HttpState>, route: &'static str, f: F) -> Response
where
    F: FnOnce(&HttpState) -> Response + Send + 'static,
{
    // The permit moves into the render and then into its body: a client that gives up does
    // not free its slot before the render it started is done.
    let budget = state.nodes.naming_handle().budget().clone();
    let large = if route == "metrics" && budget.used() > LARGE_RENDER_BYTES {
        match state.large_renders.clone().acquire_owned().await {
            Ok(p) => Some(p),
            Err(_) => return reply(StatusCode::SERVICE_UNAVAILABLE, TEXT_UTF8, "Shutting down"),
        }
    } else {
        None
    };
    let Ok(permit) = state.renders.clone().acquire_owned().await else {
        return reply(StatusCode::SERVICE_UNAVAILABLE, TEXT_UTF8, "Shutting down");
    };
    let state = state.clone();
    let started = Instant::now();
    let result = tokio::task::spawn_blocking(move || {
        let r = f(&state);
        state
            .telemetry
            .exposition_seconds
            .with_label_values(&[route])
            .observe(started.elapsed().as_secs_f64());
        r
    })
    .await;
    let large_render = large.is_some();
    result
        .map(|r| {
            let big = axum::body::HttpBody::size_hint(r.body())
                .exact()
                .is_some_and(|n| n >= LARGE_RESPONSE as u64);
            let hold = RenderHold {
                _permit: permit,
                _large: large,
                freed: (big || large_render).then_some(budget),
            };
            r.map(|body| axum::body::Body::new(Holding { body, _guard: hold }))
        })
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, route, "render failed");
            reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT_UTF8,
                "Internal error",
            )
        })
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
/// `tracker`, finishing its in-flight request before it closes. Accepting, the socket cap
/// and backoff are the shared loop of `crate::transport`; who may hold a slot is [`conns`]'s.
/// With `tls`, the endpoint serves HTTPS only (see [`tls`]). Refusals are counted in
/// `telemetry` (`tracerd_http_connections_refused_total{reason}`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    (limits, telemetry): (conns::Limits, Telemetry),
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(limits.max_sockets()));
    let server = Arc::new(Server {
        router,
        tls,
        conns: Arc::new(conns::Conns::new(limits)),
        telemetry,
    });
    server
        .run(Listener::Tcp(listener), limit, cancel, tracker)
        .await;
}

/// The HTTP side of an accept loop: one hyper connection per accepted stream.
struct Server {
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    conns: Arc<conns::Conns>,
    telemetry: Telemetry,
}

impl Server {
    /// Counts a refusal of `peer` and logs it at the endpoint's bounded rate.
    fn refuse(&self, peer: &str, reason: &'static str, words: &str) {
        crate::events::HttpConnectionRefused {
            peer,
            reason,
            words,
            log: self.conns.log_refusal(),
        }
        .emit(&self.telemetry);
    }
}

impl Acceptor for Server {
    async fn serve(&self, conn: Conn, cancel: CancellationToken) {
        let Conn { stream, peer } = conn;
        let ticket = match self.conns.admit(&peer) {
            Ok(t) => t,
            Err(refusal) => return self.refuse(&peer, refusal.label(), refusal.reason()),
        };
        match (&self.tls, stream) {
            (Some(config), tokio_util::either::Either::Left(tcp)) => {
                // The handshake runs under the header deadline, in the slot it was admitted to.
                let accepted = tokio::select! {
                    a = tls::accept(tcp, config.clone(), HEADER_READ_TIMEOUT) => a,
                    _ = ticket.evicted.cancelled() => return,
                    _ = cancel.cancelled() => return,
                };
                match accepted {
                    tls::Accepted::Tls(s) => self.serve_io(*s, peer, ticket, cancel).await,
                    tls::Accepted::Refused(why) => {
                        tracing::debug!(%peer, why, "HTTPS connection refused");
                    }
                }
            }
            (_, stream) => self.serve_io(stream, peer, ticket, cancel).await,
        }
    }

    fn refused(
        &self,
        peer: &str,
        _: &crate::transport::admission::Source,
        _: crate::transport::admission::Refusal,
    ) {
        self.refuse(peer, "socket_limit", "too many HTTP sockets open at once");
    }

    fn accept_failed(&self, _: &Listener, error: &std::io::Error, backoff: Duration) {
        tracing::error!(%error, "HTTP accept failed; retrying in {backoff:?}");
    }
}

impl Server {
    /// Serves HTTP/1.1 on `io` (plain or TLS) in the slot of `ticket`.
    async fn serve_io<S>(
        &self,
        io: S,
        peer: String,
        ticket: conns::Ticket,
        cancel: CancellationToken,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let inner = hyper_util::service::TowerToHyperService::new(self.router.clone());
        let (conns, slot) = (self.conns.clone(), ticket.state.clone());
        // Busy from the request head until its response body is dropped (written or not).
        let peer_ext = auth::Peer(peer.clone());
        let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            req.extensions_mut().insert(peer_ext.clone());
            let busy = conns::Busy::enter(&conns, &slot);
            let response = hyper::service::Service::call(&inner, req);
            async move {
                response
                    .await
                    .map(|r| r.map(|body| Holding { body, _guard: busy }))
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(hyper_util::rt::TokioIo::new(io), service);
        let mut conn = std::pin::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            // Another connection took this idle slot (no request is in flight): stop
            // serving, and close after the tarpit.
            _ = ticket.evicted.cancelled() => {
                self.conns.tarpit(conn, &cancel).await;
                Ok(())
            }
            // A response not taken by its client within `conns::STALLED`: close, freeing
            // what it holds (its body, its render permit).
            _ = self.conns.stalled(&ticket.state) => Ok(()),
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
    }
}

/// What a rendered response holds until it is sent or dropped: its render permit, and the
/// trimmer to tell when it was large.
struct RenderHold {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _large: Option<tokio::sync::OwnedSemaphorePermit>,
    freed: Option<Arc<crate::metrics::budget::MetricBudget>>,
}

impl Drop for RenderHold {
    fn drop(&mut self) {
        if let Some(b) = &self.freed {
            b.note_freed();
        }
    }
}

/// A response body holding `G` until hyper drops it.
struct Holding<G> {
    body: axum::body::Body,
    _guard: G,
}

impl<G: Unpin> axum::body::HttpBody for Holding<G> {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests;
