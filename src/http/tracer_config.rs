//! The tracing-configuration routes (issue 19) on the Prometheus endpoint:
//! `GET /api/nodes/<slug>/tracer-config` (JSON, or YAML when `Accept` asks for it),
//! `PUT` on the same path, and `GET /api/tracer-configs/diff?a=<slug>&b=<slug>`. What they
//! serve is each node name's [`crate::node::tracer_config::TracerConfigSlot`]; parsing and
//! rendering run on the blocking pool (a configuration is up to 256 KiB).
//!
//! `PUT` takes the document `GET` returns, edited (JSON, or YAML by `Content-Type`), checks
//! it (400 naming every problem with its key path; nothing is sent), pushes it to a native
//! node with `tracing-config.v1` and answers once the node applied it and reported (200, the
//! new document), or with its refusal (422), no answer in time (504), the node gone (502), or
//! a node that cannot take it: an older forwarder (501), a Cardano node (501 with the reason
//! and what to do instead).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::reply::{accept, json_reply, not_found_text, reply, TEXT_UTF8};
use super::{render_blocking, HttpState};
use crate::node::tracer_config::{
    self, PushError, Reported, MAX_CONFIG_BYTES, NAMESPACE, PUSH_TIMEOUT,
};
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
        render_document(&view, &r, yaml)
    })
    .await
}

fn render_document(view: &NodeView, r: &Reported, yaml: bool) -> Response {
    let doc = document(view, r);
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
}

async fn put_config(
    State(state): State<Arc<HttpState>>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(view) = state.nodes.by_slug(&slug) else {
        return not_found_text(&slug);
    };
    let protocol = view.live.session().protocol;
    if protocol == "cardano" {
        let text = format!(
            "node {:?} speaks Cardano's forwarding protocol, which has no message from the tracer \
             to the node (trace objects, EKG metrics and data points are all pulled by the tracer), \
             and cardano-node does not reload its tracing configuration on SIGHUP. To change it, \
             edit the TraceOptions of the node's own config file and restart the node; its new \
             configuration is then reported here.",
            view.name
        );
        return reply(StatusCode::NOT_IMPLEMENTED, TEXT_UTF8, text);
    }
    if body.len() > MAX_CONFIG_BYTES {
        return reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            TEXT_UTF8,
            format!(
                "the body is {} bytes; a tracing configuration is at most {MAX_CONFIG_BYTES}",
                body.len()
            ),
        );
    }
    let yaml_body = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("yaml"));
    // Parsed on the blocking pool: a body is up to 256 KiB.
    let parsed = tokio::task::spawn_blocking(move || {
        let value: Result<Value, String> = if yaml_body {
            serde_norway::from_slice(&body).map_err(|e| format!("the body is not YAML: {e}"))
        } else {
            serde_json::from_slice(&body).map_err(|e| format!("the body is not JSON: {e}"))
        };
        let config = value.map_err(|e| vec![e]).and_then(|v| {
            tracer_config::parse_config(&v).map_err(|problems| {
                problems
                    .into_iter()
                    .map(|p| match p.at.is_empty() {
                        true => p.what,
                        false => format!("{}: {}", p.at, p.what),
                    })
                    .collect()
            })
        });
        config
    })
    .await
    .unwrap_or_else(|e| Err(vec![format!("the body could not be parsed: {e}")]));
    let config = match parsed {
        Ok(c) => c,
        Err(problems) => {
            let mut text = format!(
                "configuration refused, nothing was sent to node {:?}:\n",
                view.name
            );
            for p in problems {
                text.push_str("  ");
                text.push_str(&p);
                text.push('\n');
            }
            return reply(StatusCode::BAD_REQUEST, TEXT_UTF8, text);
        }
    };
    match view.tracer_config.push(config, PUSH_TIMEOUT).await {
        Ok(r) => {
            let yaml = wants_yaml(&headers);
            render_blocking(&state, "tracer_config", move |_| {
                render_document(&view, &r, yaml)
            })
            .await
        }
        Err(e) => {
            let status = match e {
                PushError::Unsupported => StatusCode::NOT_IMPLEMENTED,
                PushError::Busy => StatusCode::SERVICE_UNAVAILABLE,
                PushError::Disconnected | PushError::BadReport(_) => StatusCode::BAD_GATEWAY,
                PushError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                PushError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            };
            reply(status, TEXT_UTF8, format!("node {:?}: {e}", view.name))
        }
    }
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
