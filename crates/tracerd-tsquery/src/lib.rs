//! tracerd-tsquery: cardano-tracer's timeseries query language — the language of
//! cardano-node's `bench/cardano-timeseries-io` (`let x = e in e`, `\x -> e`, selectors such as
//! `metric[now - 1h; now : 1m]`, label filters `{"k" = "v"}`, `rate`, `increase`,
//! `avg_over_time`, `quantile_by`, pairs, ...) — parsed ([`parse`], errors with line and
//! column) and evaluated ([`execute`]) over any [`Source`], i.e. a `tracerd_promql::Queryable`
//! that can also list its metric names. No I/O and no clock: the caller gives "now".
//!
//! Semantics follow upstream's interpreter, not PromQL, where the two differ: `rate` is per
//! millisecond between the first and last sample of the range with no extrapolation and no
//! counter-reset handling, `increase` is last minus first, quantiles are floored to a whole
//! percent and use the `cadpw` estimator; a range `m[a; b : step]` samples `m` at every step
//! from `a` to `b` with a 5-minute staleness window (a default step of 15 s). `avg` and
//! `avg_over_time` use `tracerd-promql`'s compensated mean, `sum_over_time` its compensated
//! sum (upstream sums plainly; they differ only by rounding). The differences from upstream
//! are listed in the daemon's `docs/HTTP.md`.
//!
//! Modules: [`ast`] (the syntax tree), [`parser`], `eval` (the evaluator), [`value`]
//! (values and their JSON).

pub mod ast;
mod eval;
pub mod parser;
pub mod value;

use tracerd_promql::{QueryError, Queryable};

pub use eval::{quantile, MAX_EVAL_DEPTH};

/// The stack [`execute`] needs at most: [`MAX_EVAL_DEPTH`] levels of about 8 KiB each in a
/// debug build (far less optimised), with room to spare. Run queries on a thread with this
/// much stack (tokio's blocking threads have 2 MiB); the pages are touched only when used.
pub const STACK_BYTES: usize = 32 << 20;
pub use parser::{parse, ParseError};
pub use value::{Function, Instant, Timeseries, Value};

/// A store the language can query: series by matchers, and the set of metric names (which
/// the language needs to tell a metric from an undefined name, and for `metrics`).
pub trait Source: Queryable {
    /// Every metric name (`__name__` value) the store holds, in any order.
    fn metric_names(&self) -> Result<Vec<String>, QueryError>;
}

/// How queries evaluate.
pub struct Config {
    /// How old the latest sample of a series may be and still count at an instant (upstream's
    /// `stalenessConstant`, 5 minutes).
    pub staleness_ms: u64,
    /// The sampling step of a range without `: step` (upstream's default, 15 s).
    pub default_step_ms: u64,
    /// The most datapoints a query may produce in total; past it the query fails.
    pub max_points: usize,
    /// Polled during evaluation; `true` aborts the query with a `timeout` error.
    pub deadline_exceeded: Option<Box<dyn Fn() -> bool + Send + Sync>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            staleness_ms: 5 * 60 * 1000,
            default_step_ms: 15_000,
            max_points: 5_000_000,
            deadline_exceeded: None,
        }
    }
}

/// Which stage rejected a query; [`ErrorKind::error_type`] is upstream's `errorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The text does not parse.
    Parse,
    /// It parses but means nothing: an undefined name, operands of the wrong type.
    BadData,
    /// It failed while computing: an empty `avg`, a one-point `rate`, a limit reached.
    Execution,
    /// The deadline passed.
    Timeout,
}

impl ErrorKind {
    /// `parse`, `bad_data`, `execution` (upstream's three) or `timeout`.
    pub fn error_type(self) -> &'static str {
        match self {
            ErrorKind::Parse => "parse",
            ErrorKind::BadData => "bad_data",
            ErrorKind::Execution => "execution",
            ErrorKind::Timeout => "timeout",
        }
    }
}

/// A failed query: its stage and a message saying what and where (`line:column`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("While executing, {}: {message}", match .kind {
    ErrorKind::Parse => "parsing error",
    ErrorKind::BadData => "elaboration error",
    ErrorKind::Execution | ErrorKind::Timeout => "interpretation error",
})]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }
}

/// Parse `query` and evaluate it at `now_ms` (milliseconds since the epoch) over `src`.
pub fn execute(src: &dyn Source, query: &str, now_ms: u64, cfg: &Config) -> Result<Value, Error> {
    let e = parse(query).map_err(|e| Error::new(ErrorKind::Parse, e.to_string()))?;
    eval::Eval::new(src, cfg, now_ms).eval(&e, &None)
}
