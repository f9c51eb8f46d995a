//! Shared types between the evaluator and any sample store (`tracerd-tsdb` implements
//! [`Queryable`]). Plain data, no behaviour beyond small helpers.

use thiserror::Error;

/// A series' labels, sorted by name, including `("__name__", ..)` when it has a name.
pub type Labels = Vec<(String, String)>;

/// Prometheus's staleness marker: a NaN with this exact bit pattern (`StaleNaN`).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// True when `v` is the staleness marker (not merely any NaN).
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// The staleness marker as a float.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// One sample: timestamp in milliseconds since the epoch and a float value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub t: i64,
    pub v: f64,
}

/// A series: its labels and its samples sorted by `t`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub samples: Vec<Sample>,
}

/// A label matcher's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    /// Fully anchored regular expression match.
    Re,
    /// Negated fully anchored regular expression match.
    NotRe,
}

/// A label matcher: `name op "value"`. A missing label matches as the empty string.
#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
}

impl Matcher {
    /// Whether a label value (the empty string when absent) satisfies this matcher.
    /// Regex matchers compile on each call; stores that match many series should cache
    /// a compiled [`regex::Regex`] via [`Matcher::compile`].
    pub fn matches(&self, value: &str) -> bool {
        match self.op {
            MatchOp::Equal => value == self.value,
            MatchOp::NotEqual => value != self.value,
            MatchOp::Re | MatchOp::NotRe => {
                let hit = self.compile().map(|r| r.is_match(value)).unwrap_or(false);
                hit == (self.op == MatchOp::Re)
            }
        }
    }

    /// The anchored regex for a `Re`/`NotRe` matcher.
    pub fn compile(&self) -> Result<regex::Regex, QueryError> {
        regex::Regex::new(&format!("^(?s:{})$", self.value))
            .map_err(|e| QueryError::bad_data(format!("invalid regex {:?}: {e}", self.value)))
    }

    /// Whether a sorted label set satisfies this matcher.
    pub fn matches_labels(&self, labels: &Labels) -> bool {
        let v = labels
            .iter()
            .find(|(n, _)| *n == self.name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        self.matches(v)
    }
}

/// Something the evaluator can read series from.
pub trait Queryable {
    /// Every series matching all matchers, with its samples in `[mint, maxt]` (ms, inclusive).
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64)
        -> Result<Vec<Series>, QueryError>;
}

/// A query result, as Prometheus's API shapes it (`resultType`).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(i64, f64),
    String(i64, String),
    /// Instant vector: labels, timestamp (ms), value.
    Vector(Vec<(Labels, i64, f64)>),
    Matrix(Vec<Series>),
}

/// Prometheus's `errorType` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    BadData,
    Execution,
    Timeout,
    Canceled,
    Internal,
}

impl ErrorType {
    /// The string Prometheus puts in `errorType`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::BadData => "bad_data",
            ErrorType::Execution => "execution",
            ErrorType::Timeout => "timeout",
            ErrorType::Canceled => "canceled",
            ErrorType::Internal => "internal",
        }
    }
}

/// A failed query: Prometheus's error type and a message saying what and where.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{message}")]
pub struct QueryError {
    pub kind: ErrorType,
    pub message: String,
}

impl QueryError {
    pub fn new(kind: ErrorType, message: impl Into<String>) -> Self {
        QueryError {
            kind,
            message: message.into(),
        }
    }
    pub fn bad_data(message: impl Into<String>) -> Self {
        Self::new(ErrorType::BadData, message)
    }
    pub fn execution(message: impl Into<String>) -> Self {
        Self::new(ErrorType::Execution, message)
    }
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorType::Timeout, message)
    }
    /// The `errorType` string for the HTTP envelope.
    pub fn error_type(&self) -> &'static str {
        self.kind.as_str()
    }
}

/// Evaluation options. The engine reads no clock: a deadline is the caller's closure.
pub struct Options {
    /// How far back an instant selector looks for a sample (ms). Default 5 minutes.
    pub lookback_delta_ms: i64,
    /// The most samples a query may hold at once; past it the query fails (`execution`).
    pub max_samples: usize,
    /// Called now and then during evaluation; returning `true` aborts with a `timeout` error.
    pub deadline_exceeded: Option<Box<dyn Fn() -> bool + Send + Sync>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            lookback_delta_ms: 5 * 60 * 1000,
            max_samples: 50_000_000,
            deadline_exceeded: None,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("lookback_delta_ms", &self.lookback_delta_ms)
            .field("max_samples", &self.max_samples)
            .field("deadline_exceeded", &self.deadline_exceeded.is_some())
            .finish()
    }
}
