//! Prometheus's HTTP query API over the metric history (issue 13): `/api/v1/query`,
//! `/api/v1/query_range`, `/api/v1/series`, `/api/v1/labels`, `/api/v1/label/<name>/values`,
//! `/api/v1/metadata`, `/api/v1/status/buildinfo`, with GET and POST form bodies, Prometheus's
//! JSON envelope and error envelope (400 `bad_data`, 422 `execution`, 503 `timeout`).
//!
//! Queries evaluate on the blocking pool (`tracerd-promql` over `tracerd-tsdb`) under a
//! timeout and a cap on the samples one query may load; nothing here reads a clock except
//! through [`ApiConfig::now_ms`] and the deadline.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tracerd_promql::{
    instant_query, range_query, ErrorType, Grid, Labels, Matcher, Options, QueryError, Queryable,
    Series, Value,
};
use tracerd_tsdb::Store;

use super::HttpState;

mod json;
pub(crate) mod params;

use params::Params;

/// Prometheus's limit of points per series in a range query.
pub const MAX_POINTS: i64 = 11_000;

/// One metric's metadata for `/api/v1/metadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricMeta {
    /// `counter`, `gauge`, `histogram`, `summary` or `unknown`.
    pub kind: String,
    pub help: String,
    pub unit: String,
}

/// Limits and sources of the API.
#[derive(Clone)]
pub struct ApiConfig {
    /// Longest a query may run; a `timeout=` parameter may only shorten it.
    pub timeout: Duration,
    /// The most samples one query may load from the store (and hold in the evaluator).
    pub max_samples: usize,
    /// How far back an instant selector looks.
    pub lookback_delta_ms: i64,
    /// Largest form body read.
    pub max_body_bytes: usize,
    /// Queries evaluated at once (each may hold `max_samples`); the others wait, within
    /// their timeout. The memory of queries is at most `max_concurrent × max_samples × 16`
    /// bytes.
    pub max_concurrent: usize,
    /// The current time in ms (the default `time` of an instant query).
    pub now_ms: Arc<dyn Fn() -> i64 + Send + Sync>,
    /// Metric name → metadata, for `/api/v1/metadata`.
    pub metadata: Arc<dyn Fn() -> BTreeMap<String, MetricMeta> + Send + Sync>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            timeout: Duration::from_secs(30),
            // 16 bytes a sample held: at most ~160 MiB for one query.
            max_samples: 10_000_000,
            lookback_delta_ms: 5 * 60 * 1000,
            max_body_bytes: 1 << 20,
            max_concurrent: 4,
            now_ms: Arc::new(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0)
            }),
            metadata: Arc::new(BTreeMap::new),
        }
    }
}

struct Api {
    store: Arc<Store>,
    cfg: ApiConfig,
    running: Arc<tokio::sync::Semaphore>,
}

/// The `hasTimeseries` endpoint: Prometheus's query API over `store`, behind the HTTP
/// request guard (timeout, request counting) like every other endpoint. Other routes of that
/// endpoint (cardano-tracer's `/timeseries/...`) are merged here, before the guard.
pub fn endpoint_router(
    store: Arc<Store>,
    cfg: ApiConfig,
    timeseries: Router,
    state: Arc<HttpState>,
) -> Router {
    router(store, cfg)
        .merge(timeseries)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state, super::guard))
}

/// Prometheus's answer to an unknown path.
async fn not_found() -> Response {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from("404 page not found\n"))
        .unwrap_or_default()
}

/// The API's routes over `store`.
pub fn router(store: Arc<Store>, cfg: ApiConfig) -> Router {
    let running = Arc::new(tokio::sync::Semaphore::new(cfg.max_concurrent.max(1)));
    let api = Arc::new(Api {
        store,
        cfg,
        running,
    });
    Router::new()
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/metadata", get(metadata))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .with_state(api)
}

fn respond(status: StatusCode, body: String) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_default()
}

fn success(data: &str) -> Response {
    respond(
        StatusCode::OK,
        format!("{{\"status\":\"success\",\"data\":{data}}}"),
    )
}

fn failure(e: &QueryError) -> Response {
    let status = match e.kind {
        ErrorType::BadData => StatusCode::BAD_REQUEST,
        ErrorType::Execution => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorType::Timeout => StatusCode::SERVICE_UNAVAILABLE,
        ErrorType::Canceled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        ErrorType::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut body = String::from("{\"status\":\"error\",\"errorType\":");
    json::string(&mut body, e.error_type());
    body.push_str(",\"error\":");
    json::string(&mut body, &e.message);
    body.push('}');
    respond(status, body)
}

fn reply(r: Result<String, QueryError>) -> Response {
    match r {
        Ok(data) => success(&data),
        Err(e) => failure(&e),
    }
}

/// The URL query, then (for a POST with a form body) the body's pairs first, as Go merges them.
async fn read_params(api: &Api, req: Request) -> Result<Params, QueryError> {
    let mut p = Params::default();
    let query = req.uri().query().unwrap_or("").to_string();
    let is_form = req.method() == Method::POST
        && req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        let body = axum::body::to_bytes(req.into_body(), api.cfg.max_body_bytes)
            .await
            .map_err(|_| {
                QueryError::bad_data(format!(
                    "form body unreadable or over {} bytes",
                    api.cfg.max_body_bytes
                ))
            })?;
        let text = std::str::from_utf8(&body)
            .map_err(|_| QueryError::bad_data("form body is not UTF-8"))?;
        p.add_form(text)?;
    }
    p.add_form(&query)?;
    Ok(p)
}

/// A store view that counts loaded samples against the cap and honours the deadline.
struct Capped<'a> {
    store: &'a Store,
    left: Cell<usize>,
    max: usize,
    deadline: Instant,
}

impl Capped<'_> {
    /// The per-series check of a selection: the sample cap, and the deadline now and then.
    fn check(&self) -> impl FnMut(&Arc<Labels>, usize) -> Result<(), QueryError> + '_ {
        let mut seen = 0usize;
        move |_, n| {
            if n > self.left.get() {
                return Err(QueryError::execution(format!(
                    "query processing would load too many samples into memory in query execution (limit {})",
                    self.max
                )));
            }
            self.left.set(self.left.get() - n);
            seen += 1;
            if seen % 256 == 0 && Instant::now() >= self.deadline {
                return Err(timeout());
            }
            Ok(())
        }
    }
}

fn timeout() -> QueryError {
    QueryError::timeout("query timed out in query execution")
}

impl Queryable for Capped<'_> {
    fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<Series>, QueryError> {
        if Instant::now() >= self.deadline {
            return Err(timeout());
        }
        self.store.select_with(matchers, mint, maxt, self.check())
    }

    // Instant selectors load one sample per series and step, not their lookback window.
    fn select_latest(&self, matchers: &[Matcher], grid: &Grid) -> Result<Vec<Series>, QueryError> {
        if Instant::now() >= self.deadline {
            return Err(timeout());
        }
        self.store.select_latest_with(matchers, grid, self.check())
    }
}

/// Run an evaluation on the blocking pool under the timeout and the sample cap.
async fn evaluate(
    api: &Arc<Api>,
    p: &Params,
    eval: impl FnOnce(&dyn Queryable, &Options) -> Result<Value, QueryError> + Send + 'static,
) -> Result<Value, QueryError> {
    let mut timeout = api.cfg.timeout;
    if let Some(t) = p.get("timeout").filter(|t| !t.is_empty()) {
        let ms = params::duration("timeout", t)?;
        timeout = timeout.min(Duration::from_millis(ms.max(0) as u64));
    }
    let deadline = Instant::now() + timeout;
    let timed_out = || QueryError::timeout("query timed out waiting for other queries to finish");
    let permit = tokio::time::timeout(timeout, api.running.clone().acquire_owned())
        .await
        .map_err(|_| timed_out())?
        .map_err(|_| timed_out())?;
    let timeout = deadline.saturating_duration_since(Instant::now());
    let api2 = api.clone();
    let task = tokio::task::spawn_blocking(move || {
        // Held until the evaluation ends, even when the client gave up.
        let _permit = permit;
        let q = Capped {
            store: &api2.store,
            left: Cell::new(api2.cfg.max_samples),
            max: api2.cfg.max_samples,
            deadline,
        };
        let opts = Options {
            lookback_delta_ms: api2.cfg.lookback_delta_ms,
            max_samples: api2.cfg.max_samples,
            deadline_exceeded: Some(Box::new(move || Instant::now() >= deadline)),
        };
        eval(&q, &opts)
    });
    // A little grace past the deadline so the evaluator's own timeout error wins when it can.
    match tokio::time::timeout(timeout + Duration::from_millis(100), task).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(QueryError::new(
            ErrorType::Internal,
            format!("query evaluation failed: {e}"),
        )),
        Err(_) => Err(QueryError::timeout("query timed out in query execution")),
    }
}

fn required<'a>(p: &'a Params, name: &str) -> Result<&'a str, QueryError> {
    p.get(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| QueryError::bad_data(format!("invalid parameter {name:?}: missing")))
}

async fn query(State(api): State<Arc<Api>>, req: Request) -> Response {
    reply(query_inner(&api, req).await)
}

async fn query_inner(api: &Arc<Api>, req: Request) -> Result<String, QueryError> {
    let p = read_params(api, req).await?;
    let expr = required(&p, "query")?.to_string();
    let t = match p.get("time").filter(|t| !t.is_empty()) {
        Some(t) => params::time("time", t)?,
        None => (api.cfg.now_ms)(),
    };
    let v = evaluate(api, &p, move |q, o| instant_query(q, &expr, t, o)).await?;
    let mut out = String::new();
    json::query_data(&mut out, &v);
    Ok(out)
}

async fn query_range(State(api): State<Arc<Api>>, req: Request) -> Response {
    reply(query_range_inner(&api, req).await)
}

async fn query_range_inner(api: &Arc<Api>, req: Request) -> Result<String, QueryError> {
    let p = read_params(api, req).await?;
    let expr = required(&p, "query")?.to_string();
    let start = params::time("start", required(&p, "start")?)?;
    let end = params::time("end", required(&p, "end")?)?;
    if end < start {
        return Err(QueryError::bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    let step = params::duration("step", required(&p, "step")?)?;
    if step <= 0 {
        return Err(QueryError::bad_data(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if (end - start) / step > MAX_POINTS {
        return Err(QueryError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let v = evaluate(api, &p, move |q, o| {
        range_query(q, &expr, start, end, step, o)
    })
    .await?;
    let mut out = String::new();
    json::query_data(&mut out, &v);
    Ok(out)
}

/// `start`/`end` of the metadata endpoints: everything when absent.
fn span(p: &Params) -> Result<(i64, i64), QueryError> {
    let start = match p.get("start").filter(|v| !v.is_empty()) {
        Some(v) => params::time("start", v)?,
        None => i64::MIN,
    };
    let end = match p.get("end").filter(|v| !v.is_empty()) {
        Some(v) => params::time("end", v)?,
        None => i64::MAX,
    };
    Ok((start, end))
}

/// The label sets of every series matching any `match[]`, deduplicated and sorted.
fn matching(api: &Api, p: &Params, selectors: &[&str]) -> Result<Vec<Labels>, QueryError> {
    let (start, end) = span(p)?;
    let mut out: Vec<Labels> = Vec::new();
    for s in selectors {
        for alt in params::selector(s)? {
            for l in api.store.series_labels(&alt, start, end)? {
                out.push(l.as_ref().clone());
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

async fn series(State(api): State<Arc<Api>>, req: Request) -> Response {
    let r = async {
        let p = read_params(&api, req).await?;
        let sel = p.all("match[]");
        if sel.is_empty() {
            return Err(QueryError::bad_data("no match[] parameter provided"));
        }
        let api2 = api.clone();
        let sets = blocking(move || matching(&api2, &p, &p.all("match[]"))).await?;
        let mut out = String::from("[");
        for (i, l) in sets.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json::labels(&mut out, l);
        }
        out.push(']');
        Ok(out)
    };
    reply(r.await)
}

/// Run index work on the blocking pool (a large `match[]` walks many series).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, QueryError> + Send + 'static,
) -> Result<T, QueryError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| QueryError::new(ErrorType::Internal, format!("lookup failed: {e}")))?
}

async fn labels(State(api): State<Arc<Api>>, req: Request) -> Response {
    let r = async {
        let p = read_params(&api, req).await?;
        let api2 = api.clone();
        let names = blocking(move || {
            let sel = p.all("match[]");
            if sel.is_empty() {
                return Ok(api2.store.label_names());
            }
            let mut names: Vec<String> = matching(&api2, &p, &sel)?
                .into_iter()
                .flat_map(|l| l.into_iter().map(|(n, _)| n))
                .collect();
            names.sort();
            names.dedup();
            Ok(names)
        })
        .await?;
        let mut out = String::new();
        json::strings(&mut out, &names);
        Ok(out)
    };
    reply(r.await)
}

async fn label_values(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let r = async {
        params::label_name(&name)?;
        let p = read_params(&api, req).await?;
        let api2 = api.clone();
        let values = blocking(move || {
            let sel = p.all("match[]");
            if sel.is_empty() {
                return Ok(api2.store.label_values(&name));
            }
            let mut values: Vec<String> = matching(&api2, &p, &sel)?
                .into_iter()
                .filter_map(|l| l.into_iter().find(|(n, _)| *n == name).map(|(_, v)| v))
                .collect();
            values.sort();
            values.dedup();
            Ok(values)
        })
        .await?;
        let mut out = String::new();
        json::strings(&mut out, &values);
        Ok(out)
    };
    reply(r.await)
}

async fn metadata(State(api): State<Arc<Api>>, req: Request) -> Response {
    let r = async {
        let p = read_params(&api, req).await?;
        let limit = match p.get("limit").filter(|v| !v.is_empty()) {
            Some(v) => v.parse::<i64>().map_err(|_| {
                QueryError::bad_data(format!(
                    "invalid parameter \"limit\": {v:?} is not a number"
                ))
            })?,
            None => -1,
        };
        let only = p.get("metric").filter(|v| !v.is_empty());
        // The source walks every node's metrics: off the async workers.
        let source = api.cfg.metadata.clone();
        let all = blocking(move || Ok(source())).await?;
        let mut out = String::from("{");
        let take = if limit < 0 {
            usize::MAX
        } else {
            limit as usize
        };
        let chosen = all
            .iter()
            .filter(|(k, _)| only.is_none_or(|o| o == k.as_str()))
            .take(take);
        for (n, (name, m)) in chosen.enumerate() {
            if n > 0 {
                out.push(',');
            }
            json::string(&mut out, name);
            out.push_str(":[{\"type\":");
            json::string(&mut out, &m.kind);
            out.push_str(",\"help\":");
            json::string(&mut out, &m.help);
            out.push_str(",\"unit\":");
            json::string(&mut out, &m.unit);
            out.push_str("}]");
        }
        out.push('}');
        Ok(out)
    };
    reply(r.await)
}

/// Grafana reads this to pick its Prometheus feature set; tracerd reports the Prometheus API
/// level it implements (2.42, the release its end-to-end test compares with) and names itself
/// in `revision` and `branch`.
async fn buildinfo() -> Response {
    success(&format!(
        "{{\"version\":\"2.42.0\",\"revision\":\"tracerd-{}\",\"branch\":\"tracerd\",\"buildUser\":\"\",\"buildDate\":\"\",\"goVersion\":\"\"}}",
        env!("CARGO_PKG_VERSION")
    ))
}

#[cfg(test)]
mod tests;
