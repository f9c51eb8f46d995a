//! Benchmark run routes (issue 20) on the Prometheus endpoint, behind its request guard:
//! `POST /api/runs` (`{"name": ..., "labels": {...}}`: start a run), `POST
//! /api/runs/<name>/end`, `GET /api/runs` (the names) and `GET /api/runs/<name>` (the record).
//! The work — reading every node directory, writing the record — runs on the blocking pool.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use super::reply::{json_reply, reply, TEXT_UTF8};
use super::HttpState;
use crate::runs::{RunError, Runs};

/// The routes, to be merged into the Prometheus endpoint's router (before its fallback).
pub(super) fn routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route("/api/runs", post(start).get(list))
        .route("/api/runs/{name}", get(show))
        .route("/api/runs/{name}/end", post(end))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

fn error_reply(e: &RunError) -> Response {
    let status = match e {
        RunError::NoStateDir => StatusCode::SERVICE_UNAVAILABLE,
        RunError::Name(_) => StatusCode::BAD_REQUEST,
        RunError::Exists(_) | RunError::Ended(_) => StatusCode::CONFLICT,
        RunError::NotFound(_) => StatusCode::NOT_FOUND,
        RunError::Io { .. } | RunError::Corrupt { .. } => {
            tracing::warn!(error = %crate::errors::error_chain(e), kind = e.kind(), "run request failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    reply(status, TEXT_UTF8, format!("{e}\n"))
}

/// Runs `f` with the daemon's [`Runs`] on the blocking pool.
async fn with_runs<F>(state: &Arc<HttpState>, created: StatusCode, f: F) -> Response
where
    F: FnOnce(&Runs) -> Result<Value, RunError> + Send + 'static,
{
    let Some(runs) = state.runs.get().cloned() else {
        return error_reply(&RunError::NoStateDir);
    };
    match tokio::task::spawn_blocking(move || f(&runs)).await {
        Ok(Ok(v)) => json_reply(created, &v),
        Ok(Err(e)) => error_reply(&e),
        Err(_) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            TEXT_UTF8,
            "the run request failed\n",
        ),
    }
}

fn to_json(record: crate::runs::record::RunRecord) -> Value {
    serde_json::to_value(record).expect("a record serialises")
}

async fn start(State(state): State<Arc<HttpState>>, body: Bytes) -> Response {
    let parsed: StartBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return reply(
                StatusCode::BAD_REQUEST,
                TEXT_UTF8,
                format!(
                    "the body must be JSON {{\"name\": \"...\", \"labels\": {{\"key\": \"value\"}}}}: {e}\n"
                ),
            )
        }
    };
    with_runs(&state, StatusCode::CREATED, move |runs| {
        runs.start(&parsed.name, parsed.labels).map(to_json)
    })
    .await
}

async fn end(State(state): State<Arc<HttpState>>, Path(name): Path<String>) -> Response {
    with_runs(&state, StatusCode::OK, move |runs| {
        runs.end(&name).map(to_json)
    })
    .await
}

async fn show(State(state): State<Arc<HttpState>>, Path(name): Path<String>) -> Response {
    with_runs(&state, StatusCode::OK, move |runs| {
        runs.get(&name).map(to_json)
    })
    .await
}

async fn list(State(state): State<Arc<HttpState>>) -> Response {
    with_runs(&state, StatusCode::OK, |runs| {
        runs.list().map(|names| json!(names))
    })
    .await
}
