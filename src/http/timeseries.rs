//! cardano-tracer's `/timeseries/...` routes (its `TimeseriesServer.hs`) over the metric
//! history, with upstream's paths, methods and reply shapes, so its Grafana data-source plugin
//! and scripts keep working: `GET|POST /timeseries/query` (`query=`, optional `time=` in Unix
//! seconds; upstream's query language, `tracerd-tsquery`), `POST /timeseries/prune`,
//! `GET|POST /timeseries/config/retention` and `.../pruning`, `GET /timeseries/nodes`,
//! `GET /timeseries/node/<slug>/{info,startup,sync-progress}`; anything else under
//! `/timeseries/` is a 404 with an empty body, as upstream answers.
//!
//! Queries run on their own thread with the stack `tracerd-tsquery` asks for (a few at a
//! time), under a deadline and a cap on the samples they load. Retention and the pruning
//! period set through the API live in the history's [`Control`], which its pruning task
//! and every prune read.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use serde_json::{json, Value as Json};
use tokio::sync::Semaphore;
use tracerd_promql::{Grid, Matcher, QueryError, Queryable, Series};
use tracerd_tsdb::Store;
use tracerd_tsquery::{Config as QueryConfig, Source};

use super::prom_api::params::{self, Params};
pub use crate::history::control::Control;
use crate::node::Nodes;

/// Queries evaluated at once; more wait their turn (within their deadline).
pub const MAX_CONCURRENT_QUERIES: usize = 2;

/// What the routes read.
#[derive(Clone)]
pub struct TimeseriesApi {
    pub store: Arc<Store>,
    pub nodes: Nodes,
    pub control: Arc<Control>,
    /// The smallest retention the API accepts: `ekgRequestFreq` in ms, as upstream.
    pub min_retention_ms: u64,
    /// The current time in ms.
    pub now_ms: Arc<dyn Fn() -> i64 + Send + Sync>,
    /// Longest a query may run.
    pub timeout: Duration,
    /// The most samples a query may load from the store.
    pub max_samples: usize,
    /// The most datapoints a query may produce.
    pub max_points: usize,
    /// Largest form body read.
    pub max_body_bytes: usize,
    /// How long a node may take to answer a data point asked live.
    pub data_point_timeout: Duration,
}

impl TimeseriesApi {
    /// The API over `store` and `nodes` with upstream's defaults and tracerd's limits.
    pub fn new(store: Arc<Store>, nodes: Nodes, control: Arc<Control>) -> Self {
        TimeseriesApi {
            store,
            nodes,
            control,
            min_retention_ms: 1000,
            now_ms: Arc::new(|| crate::node::live::now_ms() as i64),
            timeout: Duration::from_secs(15),
            max_samples: 10_000_000,
            max_points: 5_000_000,
            max_body_bytes: 1 << 20,
            data_point_timeout: crate::node::live::DATA_POINT_TIMEOUT,
        }
    }
}

struct Shared {
    api: TimeseriesApi,
    queries: Semaphore,
}

/// The `/timeseries/...` routes.
pub fn router(api: TimeseriesApi) -> Router {
    let s = Arc::new(Shared {
        api,
        queries: Semaphore::new(MAX_CONCURRENT_QUERIES),
    });
    Router::new()
        .route("/timeseries/query", any(query))
        .route("/timeseries/prune", any(prune_route))
        .route("/timeseries/config/retention", any(retention))
        .route("/timeseries/config/pruning", any(pruning))
        .route("/timeseries/nodes", any(nodes))
        .route("/timeseries/node/{slug}/{what}", any(node))
        .route("/timeseries", any(not_found))
        .route("/timeseries/{*rest}", any(not_found))
        .with_state(s)
}

fn respond(status: StatusCode, content_type: Option<&str>, body: impl Into<Body>) -> Response {
    let mut b = Response::builder().status(status);
    if let Some(ct) = content_type {
        b = b.header(header::CONTENT_TYPE, ct);
    }
    b.body(body.into()).unwrap_or_default()
}

const JSON: &str = "application/json";

fn json_reply(v: &Json) -> Response {
    respond(StatusCode::OK, Some(JSON), v.to_string())
}

/// Upstream's empty 200.
fn ok() -> Response {
    respond(StatusCode::OK, None, Body::empty())
}

/// Upstream's 404: no body.
async fn not_found() -> Response {
    respond(StatusCode::NOT_FOUND, None, Body::empty())
}

/// Upstream's 400 for a missing `query` or a refused setting.
fn malformed() -> Response {
    respond(
        StatusCode::BAD_REQUEST,
        Some("text/plain; charset=utf-8"),
        "Malformed input",
    )
}

fn query_error(kind: &str, message: &str) -> Response {
    let body = json!({"status": "error", "errorType": kind, "error": message});
    respond(StatusCode::BAD_REQUEST, Some(JSON), body.to_string())
}

fn url_params(req: &Request) -> Params {
    let mut p = Params::default();
    // An undecodable pair leaves the parameters as they are: the route then finds nothing.
    let _ = p.add_form(req.uri().query().unwrap_or(""));
    p
}

async fn query(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let p = match *req.method() {
        Method::GET => url_params(&req),
        // Upstream reads a POST's parameters from its body only, whatever its content type.
        Method::POST => {
            let Ok(body) = axum::body::to_bytes(req.into_body(), s.api.max_body_bytes).await else {
                return query_error(
                    "bad_data",
                    &format!(
                        "form body unreadable or over {} bytes",
                        s.api.max_body_bytes
                    ),
                );
            };
            let mut p = Params::default();
            let text = String::from_utf8_lossy(&body);
            if p.add_form(&text).is_err() {
                return query_error("bad_data", "form body is not UTF-8 once decoded");
            }
            p
        }
        _ => return not_found().await,
    };
    let Some(q) = p.get("query").map(str::to_string) else {
        return malformed();
    };
    // An unreadable `time` is ignored, as upstream ignores it: the query runs at now.
    let now = match p.get("time").and_then(|t| t.trim().parse::<f64>().ok()) {
        Some(t) if t.is_finite() => (t * 1000.0).round_ties_even().max(0.0) as u64,
        _ => (s.api.now_ms)().max(0) as u64,
    };
    let Ok(_permit) = tokio::time::timeout(s.api.timeout, s.queries.acquire()).await else {
        return query_error("timeout", "too many queries running; try again");
    };
    match run_query(&s.api, q, now).await {
        Ok(data) => respond(
            StatusCode::OK,
            Some(JSON),
            format!("{{\"status\":\"success\",\"data\":{data}}}"),
        ),
        Err(e) => query_error(e.kind.error_type(), &e.to_string()),
    }
}

/// Evaluate on a thread of its own (the evaluator wants more stack than the blocking pool's
/// 2 MiB) and render the value's JSON there.
async fn run_query(
    api: &TimeseriesApi,
    q: String,
    now: u64,
) -> Result<String, tracerd_tsquery::Error> {
    use tracerd_tsquery::{Error, ErrorKind};
    let deadline = Instant::now() + api.timeout;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let store = api.store.clone();
    let (max_samples, max_points) = (api.max_samples, api.max_points);
    let spawned = std::thread::Builder::new()
        .name("tracerd-tsquery".into())
        .stack_size(tracerd_tsquery::STACK_BYTES)
        .spawn(move || {
            let src = Capped {
                store: &store,
                left: Cell::new(max_samples),
                max: max_samples,
                deadline,
            };
            let cfg = QueryConfig {
                max_points,
                deadline_exceeded: Some(Box::new(move || Instant::now() >= deadline)),
                ..QueryConfig::default()
            };
            let r = tracerd_tsquery::execute(&src, &q, now, &cfg).map(|v| v.to_json());
            let _ = tx.send(r);
        });
    if let Err(e) = spawned {
        return Err(Error::new(
            ErrorKind::Execution,
            format!("cannot start the query: {e}"),
        ));
    }
    match tokio::time::timeout(api.timeout + Duration::from_millis(200), rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(Error::new(ErrorKind::Execution, "the query failed")),
        Err(_) => Err(Error::new(ErrorKind::Timeout, "query timed out")),
    }
}

/// The store as the language sees it: samples loaded count against a cap, and the deadline
/// is checked between series.
struct Capped<'a> {
    store: &'a Store,
    left: Cell<usize>,
    max: usize,
    deadline: Instant,
}

impl Queryable for Capped<'_> {
    fn select(&self, ms: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<Series>, QueryError> {
        if Instant::now() >= self.deadline {
            return Err(QueryError::timeout("query timed out"));
        }
        self.store.select_with(ms, mint, maxt, |_, n| self.count(n))
    }

    fn select_latest(&self, ms: &[Matcher], grid: &Grid) -> Result<Vec<Series>, QueryError> {
        if Instant::now() >= self.deadline {
            return Err(QueryError::timeout("query timed out"));
        }
        self.store
            .select_latest_with(ms, grid, |_, n| self.count(n))
    }
}

impl Capped<'_> {
    /// Counts `n` samples loaded against the cap, and checks the deadline.
    fn count(&self, n: usize) -> Result<(), QueryError> {
        if n > self.left.get() {
            return Err(QueryError::execution(format!(
                "query would load more than {} samples",
                self.max
            )));
        }
        self.left.set(self.left.get() - n);
        if Instant::now() >= self.deadline {
            return Err(QueryError::timeout("query timed out"));
        }
        Ok(())
    }
}

impl Source for Capped<'_> {
    fn metric_names(&self) -> Result<Vec<String>, QueryError> {
        Ok(self.store.label_values("__name__"))
    }
}

async fn prune_route(State(s): State<Arc<Shared>>, req: Request) -> Response {
    if req.method() != Method::POST {
        return not_found().await;
    }
    let api = s.api.clone();
    let now = (api.now_ms)();
    match tokio::task::spawn_blocking(move || api.control.prune(&api.store, now)).await {
        Ok(_) => ok(),
        Err(_) => respond(StatusCode::INTERNAL_SERVER_ERROR, None, Body::empty()),
    }
}

/// Upstream's `oneDurationQueryItem`: the first `<unit>=<whole number>` of the URL query.
fn duration_item(req: &Request) -> Option<u64> {
    let query = req.uri().query().unwrap_or("");
    let mut items = Params::default();
    let _ = items.add_form(query);
    items.pairs().iter().find_map(|(k, v)| {
        let mult: u64 = match k.as_str() {
            "milliseconds" => 1,
            "seconds" => 1000,
            "minutes" => 60_000,
            "hours" => 3_600_000,
            "days" => 86_400_000,
            _ => return None,
        };
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        v.parse::<u64>().ok()?.checked_mul(mult)
    })
}

async fn retention(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let c = &s.api.control;
    match *req.method() {
        Method::GET => json_reply(&json!({"retentionMillis": c.retention_ms()})),
        Method::POST => match duration_item(&req) {
            Some(v) if v >= s.api.min_retention_ms => {
                c.set_retention(v);
                ok()
            }
            Some(_) => malformed(),
            // Upstream's guard fails and the request falls through to its 404.
            None => not_found().await,
        },
        _ => not_found().await,
    }
}

async fn pruning(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let c = &s.api.control;
    match *req.method() {
        Method::GET => json_reply(&json!({"pruningPeriodMillis": c.pruning_ms()})),
        Method::POST => match duration_item(&req) {
            // Without a value periodic pruning stops; a period must be at least 1 ms.
            None => {
                c.set_pruning(None);
                ok()
            }
            Some(v) if v >= 1 => {
                c.set_pruning(Some(v));
                ok()
            }
            Some(_) => malformed(),
        },
        _ => not_found().await,
    }
}

async fn nodes(State(s): State<Arc<Shared>>, req: Request) -> Response {
    if req.method() != Method::GET {
        return not_found().await;
    }
    let list: Vec<Json> = s
        .api
        .nodes
        .views()
        .into_iter()
        .map(|v| json!({"nodeName": v.name, "slug": v.slug}))
        .collect();
    json_reply(&Json::Array(list))
}

async fn node(
    State(s): State<Arc<Shared>>,
    Path((slug, what)): Path<(String, String)>,
    req: Request,
) -> Response {
    if req.method() != Method::GET {
        return not_found().await;
    }
    let data_point = match what.as_str() {
        "info" => "NodeInfo",
        "startup" => "NodeStartupInfo",
        "sync-progress" => "NodeAddBlock",
        _ => return not_found().await,
    };
    let Some(view) = s.api.nodes.by_slug(&slug) else {
        return not_found().await;
    };
    let text = view
        .live
        .fetch_data_point(data_point, s.api.data_point_timeout)
        .await;
    let Some(value) = text.and_then(|t| serde_json::from_str::<Json>(&t).ok()) else {
        return not_found().await;
    };
    let reply = match what.as_str() {
        "info" => node_info(&value, (s.api.now_ms)()),
        "startup" => startup_info(&value),
        _ => sync_progress(&value),
    };
    match reply {
        Some(v) => json_reply(&v),
        None => not_found().await,
    }
}

/// Upstream decodes `NodeInfo` and writes its six fields back plus `uptimeSeconds`; a data
/// point that does not decode (a field missing, a start time that is not a time) is a 404.
pub(crate) fn node_info(v: &Json, now_ms: i64) -> Option<Json> {
    let field = |k: &str| v.get(k).filter(|x| x.is_string()).cloned();
    let start = field("niStartTime")?;
    let start_ms = params::time("niStartTime", start.as_str()?).ok()?;
    let system_start = field("niSystemStartTime")?;
    params::time("niSystemStartTime", system_start.as_str()?).ok()?;
    let uptime = ((now_ms - start_ms) as f64 / 1000.0).round_ties_even() as i64;
    Some(json!({
        "niName": field("niName")?,
        "niProtocol": field("niProtocol")?,
        "niVersion": field("niVersion")?,
        "niCommit": field("niCommit")?,
        "niStartTime": start,
        "niSystemStartTime": system_start,
        "uptimeSeconds": uptime,
    }))
}

/// `NodeStartupInfo` as upstream re-encodes it: its four fields.
pub(crate) fn startup_info(v: &Json) -> Option<Json> {
    let era = v.get("suiEra").filter(|x| x.is_string())?;
    let num = |k: &str| v.get(k).filter(|x| x.is_number()).cloned();
    Some(json!({
        "suiEra": era,
        "suiSlotLength": num("suiSlotLength")?,
        "suiEpochLength": num("suiEpochLength")?,
        "suiSlotsPerKESPeriod": num("suiSlotsPerKESPeriod")?,
    }))
}

/// The sync percentage of a `NodeAddBlock` data point
/// (`{"tag":"NodeAddBlock","contents":[_, _, pct]}`, upstream's `NodeStateWrapper`).
pub(crate) fn sync_progress(v: &Json) -> Option<Json> {
    if v.get("tag")?.as_str()? != "NodeAddBlock" {
        return None;
    }
    let c = v.get("contents")?.as_array()?;
    if c.len() != 3 {
        return None;
    }
    let pct = c[2].as_f64()?;
    Some(json!({ "syncProgress": pct }))
}

#[cfg(test)]
mod tests;
