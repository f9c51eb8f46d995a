//! The capture window's routes (issue 20) on the Prometheus endpoint, behind its request
//! guard and the `api` credentials: `POST /api/nodes/<slug>/capture?seconds=N&maxBytes=M`
//! starts recording the node's connection into `capture-<UTC>.pcapng` next to its logs and
//! answers 202 at once with the capture's JSON; `GET` on the same path shows the node's
//! latest capture, running or ended. Opening the socket and the file runs on the blocking
//! pool; the capture itself is `crate::capture`'s.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::Router;

use super::reply::{json_reply, reply, TEXT_UTF8};
use super::HttpState;
use crate::capture::CaptureError;

/// The routes, to be merged into the Prometheus endpoint's router (before its fallback).
pub(super) fn routes() -> Router<Arc<HttpState>> {
    Router::new().route("/api/nodes/{slug}/capture", post(start).get(show))
}

/// The status each refusal answers with.
fn status_of(e: &CaptureError) -> StatusCode {
    match e {
        CaptureError::Params(_) => StatusCode::BAD_REQUEST,
        CaptureError::NotConnected(_) => StatusCode::NOT_FOUND,
        CaptureError::Busy { .. } => StatusCode::CONFLICT,
        CaptureError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
        CaptureError::Budget { .. } => StatusCode::INSUFFICIENT_STORAGE,
        CaptureError::Interface(_) => StatusCode::NOT_IMPLEMENTED,
        CaptureError::Off
        | CaptureError::NoCapability(_)
        | CaptureError::NoFileTarget
        | CaptureError::NotRunning => StatusCode::SERVICE_UNAVAILABLE,
        CaptureError::Socket(_) | CaptureError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn refusal(e: &CaptureError) -> Response {
    let text = crate::errors::error_chain(e);
    let status = status_of(e);
    if status.is_server_error() {
        tracing::warn!(error = %text, kind = e.kind(), "capture refused");
    }
    reply(status, TEXT_UTF8, format!("{text}\n"))
}

fn unknown(slug: &str) -> Response {
    reply(
        StatusCode::NOT_FOUND,
        TEXT_UTF8,
        format!(
            "no connected node has slug {:?}\n",
            crate::node::escape_name(slug)
        ),
    )
}

async fn start(
    State(state): State<Arc<HttpState>>,
    Path(slug): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match crate::capture::parse_query(query.as_deref()) {
        Ok(p) => p,
        Err(e) => return refusal(&e),
    };
    let Some(view) = state.nodes.by_slug(&slug) else {
        return unknown(&slug);
    };
    let Some(captures) = state.captures.get().cloned() else {
        return refusal(&CaptureError::NotRunning);
    };
    let name = view.name.clone();
    match tokio::task::spawn_blocking(move || captures.start(&name, params)).await {
        Ok(Ok(progress)) => {
            tracing::info!(node = %view.name, file = %progress.file.display(), kind = progress.kind,
                seconds = params.seconds, max_bytes = params.max_bytes, "capture started");
            json_reply(StatusCode::ACCEPTED, &progress.to_json())
        }
        Ok(Err(e)) => refusal(&e),
        Err(_) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            TEXT_UTF8,
            "the capture request failed\n",
        ),
    }
}

async fn show(State(state): State<Arc<HttpState>>, Path(slug): Path<String>) -> Response {
    let Some(view) = state.nodes.by_slug(&slug) else {
        return unknown(&slug);
    };
    let latest = state.captures.get().and_then(|c| c.latest(&view.name));
    match latest {
        Some(p) => json_reply(StatusCode::OK, &p.to_json()),
        None => reply(
            StatusCode::NOT_FOUND,
            TEXT_UTF8,
            format!("node {:?} has not been captured\n", view.name),
        ),
    }
}
