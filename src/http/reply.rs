//! Response building and content negotiation shared by the HTTP routes: content types,
//! `reply`/`json_reply`, cardano-tracer's `Accept` rule, the node list page, 404 texts.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value};

use super::HttpState;

pub(super) const TEXT_UTF8: &str = "text/plain;charset=utf-8";
pub(super) const HTML_UTF8: &str = "text/html;charset=utf-8";
pub(super) const JSON: &str = "application/json";

pub(super) fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Body>,
) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub(super) fn json_reply(status: StatusCode, value: &Value) -> Response {
    reply(status, JSON, value.to_string())
}

pub(super) fn accept(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())
}

/// cardano-tracer's rule: JSON when `Accept` is absent or mentions `application/json`.
pub(super) fn wants_json(headers: &HeaderMap) -> bool {
    accept(headers).is_none_or(|a| a.contains("application/json"))
}

pub(super) fn first_segment(path: &str) -> &str {
    path.trim_start_matches('/').split('/').next().unwrap_or("")
}

pub(super) fn html_escape(text: &str) -> String {
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
pub(super) fn node_list(state: &HttpState, headers: &HeaderMap, title: &str) -> Response {
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
    if state.ui_link.load(std::sync::atomic::Ordering::Relaxed) {
        html.push_str("<p><a href=\"/ui/\">Live view</a></p>");
    }
    html.push_str("</body></html>");
    reply(StatusCode::OK, HTML_UTF8, html)
}

pub(super) fn not_found_text(what: &str) -> Response {
    reply(
        StatusCode::NOT_FOUND,
        TEXT_UTF8,
        format!("Not found: {what}"),
    )
}
