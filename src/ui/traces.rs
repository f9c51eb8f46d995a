//! `GET /api/nodes/<slug>/traces/stream`: a node's trace lines as they are written, as
//! Server-Sent Events (`text/event-stream`; `curl -N` shows them).
//!
//! Each line is one default (`message`) event whose data is the machine line as the node's
//! file holds it. `event: file` (data: the path) comes first and whenever the file the lines
//! go to changes (rotation). `event: dropped` (data: `{"dropped":N,"total":M}`) says that the
//! subscriber fell behind the node's ring (`node::tap::TAP_LINES`) and lost N lines (M since it
//! subscribed): a slow client never slows ingest. `event: end` says why the stream ends (the
//! node left, or its [`super::STREAM_LIFETIME`] is over; `EventSource` then reconnects).
//!
//! Query parameters: `severity=<min>` (Cardano's severities, e.g. `Warning`) and
//! `namespace=<prefix>` (repeatable or comma-separated; any may match). The filter
//! ([`Filter`]) is pure.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use tokio::sync::broadcast;

use super::{sse_event, sse_response, UiState, RETRY_MS, STREAM_LIFETIME};
use crate::model::Severity;
use crate::node::live::NodeLive;
use crate::node::tap::TapLine;

/// Lines sent in one body chunk at most (the rest wait for the next poll).
const LINES_PER_CHUNK: usize = 256;

/// Which lines a subscriber wants.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Lowest severity shown.
    pub min_severity: Option<Severity>,
    /// Namespace prefixes; empty: every namespace.
    pub prefixes: Vec<String>,
}

impl Filter {
    /// Parses the query string; an error names the parameter and the value refused.
    pub fn parse(query: Option<&str>) -> Result<Filter, String> {
        let mut f = Filter::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned();
            match k {
                "severity" => {
                    if v.is_empty() {
                        continue;
                    }
                    let s = Severity::ALL
                        .iter()
                        .find(|s| s.as_str().eq_ignore_ascii_case(&v))
                        .copied()
                        .ok_or_else(|| {
                            format!(
                                "severity={v:?} is not a severity (one of {})",
                                Severity::ALL.map(|s| s.as_str()).join(", ")
                            )
                        })?;
                    f.min_severity = Some(s);
                }
                "namespace" => {
                    for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                        if f.prefixes.len() >= 64 {
                            return Err("more than 64 namespace prefixes".into());
                        }
                        f.prefixes.push(p.to_string());
                    }
                }
                other => {
                    return Err(format!(
                        "unknown parameter {other:?} (known: severity, namespace)"
                    ))
                }
            }
        }
        Ok(f)
    }

    /// Whether a line of `severity` in `namespace` is shown.
    pub fn admits(&self, severity: Severity, namespace: &str) -> bool {
        self.min_severity.is_none_or(|m| severity >= m)
            && (self.prefixes.is_empty() || self.prefixes.iter().any(|p| namespace.starts_with(p)))
    }
}

struct Sub {
    state: Arc<UiState>,
    slug: String,
    live: Arc<NodeLive>,
    rx: broadcast::Receiver<Arc<TapLine>>,
    filter: Filter,
    started: Instant,
    file: Option<Arc<str>>,
    dropped: u64,
    head: Option<String>,
    done: bool,
}

/// The handler.
pub(super) async fn stream(
    State(state): State<Arc<UiState>>,
    Path(slug): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let filter = match Filter::parse(query.as_deref()) {
        Ok(f) => f,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("Bad request: {e}\n")),
    };
    let Some(view) = state.http.nodes.by_slug(&slug) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("No connected node with slug {slug:?}\n"),
        );
    };
    let rx = view.live.traces().subscribe();
    let head = format!(
        "retry: {RETRY_MS}\n: trace lines of node {:?}\n\n",
        view.name.replace(['\n', '\r'], " ")
    );
    let sub = Sub {
        state,
        slug,
        live: view.live,
        rx,
        filter,
        started: Instant::now(),
        file: None,
        dropped: 0,
        head: Some(head),
        done: false,
    };
    sse_response(futures_util::stream::unfold(sub, next_chunk))
}

fn text(status: StatusCode, body: String) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(body.into())
        .unwrap_or_default()
}

/// The next chunk of the stream: lines as they come (at most [`LINES_PER_CHUNK`] at once),
/// or a comment each second while there are none, so a gone client is noticed.
async fn next_chunk(mut s: Sub) -> Option<(Result<Bytes, Infallible>, Sub)> {
    if s.done {
        return None;
    }
    if let Some(head) = s.head.take() {
        return Some((Ok(Bytes::from(head)), s));
    }
    let mut out = Vec::new();
    loop {
        let why_end = if !s.state.serving() {
            Some("tracerd is shutting down")
        } else if s.started.elapsed() >= STREAM_LIFETIME {
            Some("stream lifetime over; reconnect")
        } else if !s
            .state
            .http
            .nodes
            .by_slug(&s.slug)
            .is_some_and(|v| Arc::ptr_eq(&v.live, &s.live))
        {
            Some("the node disconnected")
        } else {
            None
        };
        if let Some(why) = why_end {
            out.extend_from_slice(&sse_event(Some("end"), why));
            s.done = true;
            return Some((Ok(Bytes::from(out)), s));
        }
        let first = tokio::time::timeout(std::time::Duration::from_secs(1), s.rx.recv()).await;
        let mut lines = 0;
        let mut item = match first {
            Err(_) => return Some((Ok(Bytes::from_static(b": idle\n\n")), s)),
            Ok(r) => r,
        };
        loop {
            match item {
                Ok(line) => {
                    if s.filter.admits(line.severity, &line.namespace) {
                        if s.file.as_ref() != Some(&line.file) {
                            out.extend_from_slice(&sse_event(Some("file"), &line.file));
                            s.file = Some(line.file.clone());
                        }
                        out.extend_from_slice(&sse_event(None, &line.line));
                        lines += 1;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    s.dropped += n;
                    let data = format!("{{\"dropped\":{n},\"total\":{}}}", s.dropped);
                    out.extend_from_slice(&sse_event(Some("dropped"), &data));
                }
                Err(broadcast::error::RecvError::Closed) => {
                    s.done = true;
                    break;
                }
            }
            if lines >= LINES_PER_CHUNK {
                break;
            }
            item = match s.rx.try_recv() {
                Ok(l) => Ok(l),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    Err(broadcast::error::RecvError::Lagged(n))
                }
                Err(broadcast::error::TryRecvError::Closed) => {
                    Err(broadcast::error::RecvError::Closed)
                }
                Err(broadcast::error::TryRecvError::Empty) => break,
            };
        }
        if !out.is_empty() {
            return Some((Ok(Bytes::from(out)), s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_admit() {
        let f = Filter::parse(Some(
            "severity=warning&namespace=ChainDB.,Mempool&namespace=Net",
        ))
        .unwrap();
        assert_eq!(f.min_severity, Some(Severity::Warning));
        assert_eq!(f.prefixes, ["ChainDB.", "Mempool", "Net"]);
        assert!(f.admits(Severity::Error, "ChainDB.AddBlock"));
        assert!(!f.admits(Severity::Info, "ChainDB.AddBlock"));
        assert!(!f.admits(Severity::Error, "BlockFetch"));
        assert!(Filter::parse(None).unwrap().admits(Severity::Debug, "x"));
        let e = Filter::parse(Some("severity=loud")).unwrap_err();
        assert!(e.contains("\"loud\"") && e.contains("Warning"), "{e}");
        assert!(Filter::parse(Some("sev=Info"))
            .unwrap_err()
            .contains("\"sev\""));
    }
}
