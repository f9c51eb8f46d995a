//! The EKG-compatible endpoint (`hasEKG`): the node list and each node's metrics as nested
//! EKG JSON ([`crate::metrics::ekg`]).

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::Value;

use super::reply::{first_segment, json_reply, node_list, reply, TEXT_UTF8};
use super::{guard, HttpState};
use crate::metrics::ekg;

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
