//! The tracing-configuration routes (issue 19) on the Prometheus endpoint:
//! `GET /api/nodes/<slug>/tracer-config` (JSON, or YAML when `Accept` asks for it),
//! `PUT` on the same path (a Cardano node's configuration cannot be pushed: 501 with the reason
//! and what to do instead), and `GET /api/tracer-configs/diff?a=<slug>&b=<slug>`. What they
//! serve is each node name's [`crate::node::tracer_config::TracerConfigSlot`]; parsing and
//! rendering run on the blocking pool (a configuration is up to 256 KiB).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::reply::{accept, json_reply, not_found_text, reply, TEXT_UTF8};
use super::{render_blocking, HttpState};
use crate::node::tracer_config::{self, Reported, NAMESPACE};
use crate::node::NodeView;
use crate::utc;

const YAML: &str = "application/yaml";

/// The routes, to be merged into the Prometheus endpoint's router (before its fallback).
pub(super) fn routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route(
            "/api/nodes/{slug}/tracer-config",
            get(get_config).put(put_config),
        )
        .route("/api/tracer-configs/diff", get(diff))
}

fn wants_yaml(headers: &HeaderMap) -> bool {
    accept(headers).is_some_and(|a| a.contains("yaml"))
}

fn rfc3339_ns(ns: i64) -> String {
    let mut out = String::new();
    utc::push_rfc3339_nanos(&mut out, ns);
    out
}

/// The node's reported configuration, or the 404 that says why there is none.
fn reported(view: &NodeView) -> Result<Reported, Box<Response>> {
    let state = view.tracer_config.state();
    match state.current {
        Some(r) => Ok(r),
        None => {
            let mut text = format!(
                "node {:?} has not reported its tracing configuration (no {NAMESPACE} trace received)",
                view.name
            );
            if let Some(e) = state.last_error {
                text.push_str(&format!(
                    "; {} such trace(s) refused, the last because {e}",
                    state.refused
                ));
            }
            Err(Box::new(reply(StatusCode::NOT_FOUND, TEXT_UTF8, text)))
        }
    }
}

fn document(view: &NodeView, r: &Reported) -> Value {
    json!({
        "node": view.name,
        "slug": view.slug,
        "protocol": view.live.session().protocol,
        "namespace": NAMESPACE,
        "reportedAt": rfc3339_ns(r.reported_at_ns),
        "receivedAt": rfc3339_ns((r.received_at_ms as i64).saturating_mul(1_000_000)),
        "config": r.value(),
    })
}

async fn get_config(
    State(state): State<Arc<HttpState>>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(view) = state.nodes.by_slug(&slug) else {
        return not_found_text(&slug);
    };
    let r = match reported(&view) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let yaml = wants_yaml(&headers);
    render_blocking(&state, "tracer_config", move |_| {
        let doc = document(&view, &r);
        if yaml {
            match serde_norway::to_string(&doc) {
                Ok(text) => reply(StatusCode::OK, YAML, text),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    TEXT_UTF8,
                    format!("cannot render the configuration as YAML: {e}"),
                ),
            }
        } else {
            json_reply(StatusCode::OK, &doc)
        }
    })
    .await
}

async fn put_config(State(state): State<Arc<HttpState>>, Path(slug): Path<String>) -> Response {
    let Some(view) = state.nodes.by_slug(&slug) else {
        return not_found_text(&slug);
    };
    let protocol = view.live.session().protocol;
    let text = if protocol == "cardano" {
        format!(
            "node {:?} speaks Cardano's forwarding protocol, which has no message from the tracer \
             to the node (trace objects, EKG metrics and data points are all pulled by the tracer), \
             and cardano-node does not reload its tracing configuration on SIGHUP. To change it, \
             edit the TraceOptions of the node's own config file and restart the node; its new \
             configuration is then reported here.",
            view.name
        )
    } else {
        format!(
            "node {:?} speaks tracerd's native protocol; pushing a tracing configuration to it is \
             not implemented yet. Change the configuration in the node's own program and restart it.",
            view.name
        )
    };
    reply(StatusCode::NOT_IMPLEMENTED, TEXT_UTF8, text)
}

async fn diff(State(state): State<Arc<HttpState>>, RawQuery(query): RawQuery) -> Response {
    let param = |name: &str| {
        query.as_deref().unwrap_or("").split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let v = v.replace('+', " ");
            (k == name).then(|| {
                percent_encoding::percent_decode_str(&v)
                    .decode_utf8_lossy()
                    .into_owned()
            })
        })
    };
    let (Some(a), Some(b)) = (param("a"), param("b")) else {
        return reply(
            StatusCode::BAD_REQUEST,
            TEXT_UTF8,
            "give both nodes to compare: /api/tracer-configs/diff?a=<slug>&b=<slug>",
        );
    };
    let side_of = |slug: &str| {
        let view = state
            .nodes
            .by_slug(slug)
            .ok_or_else(|| Box::new(not_found_text(slug)))?;
        reported(&view).map(|r| (view, r))
    };
    let ((va, ra), (vb, rb)) = match (side_of(&a), side_of(&b)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(resp), _) | (_, Err(resp)) => return *resp,
    };
    render_blocking(&state, "tracer_config_diff", move |_| {
        let (differences, same) = tracer_config::diff(&ra.value(), &rb.value());
        let side = |v: &NodeView, r: &Reported| {
            json!({"node": v.name, "slug": v.slug, "reportedAt": rfc3339_ns(r.reported_at_ns)})
        };
        json_reply(
            StatusCode::OK,
            &json!({
                "a": side(&va, &ra),
                "b": side(&vb, &rb),
                "equalKeys": same,
                "differences": differences,
            }),
        )
    })
    .await
}
