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

/// The times an instant vector selector is evaluated at: `start`, `start + step`, ... up
/// to `end` (a `step` of 0: only `start`), each reading a series' latest sample in
/// `(t - lookback, t]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub start: i64,
    pub end: i64,
    pub step: i64,
    pub lookback: i64,
}

impl Grid {
    /// The inclusive window `[mint, maxt]` that holds every sample the grid can read.
    pub fn window(&self) -> (i64, i64) {
        (self.start - self.lookback, self.end)
    }

    /// Whether `t` is one of the grid's times.
    pub fn contains(&self, t: i64) -> bool {
        if t < self.start || t > self.end {
            return false;
        }
        if self.step <= 0 {
            return t == self.start;
        }
        (t - self.start) % self.step == 0
    }

    /// The samples of one series (sorted by time) that evaluating on this grid reads: for
    /// each grid time, the latest sample at or before it, if newer than `t - lookback`
    /// (staleness markers included: they hide the series). Each sample appears once.
    pub fn latest<I: IntoIterator<Item = Sample>>(&self, samples: I) -> Vec<Sample> {
        let mut out = Vec::new();
        let step = if self.step <= 0 { i64::MAX } else { self.step };
        // `k`: the next grid time to serve; `prev`: the latest sample before it, and
        // whether it is in `out` already.
        let mut k = self.start;
        let mut prev: Option<(Sample, bool)> = None;
        let serve = |k: i64, prev: &mut Option<(Sample, bool)>, out: &mut Vec<Sample>| {
            if let Some((p, served)) = prev {
                if !*served && p.t > k - self.lookback {
                    out.push(*p);
                    *served = true;
                }
            }
        };
        for s in samples {
            if s.t > self.end {
                break;
            }
            while k < s.t {
                serve(k, &mut prev, &mut out);
                k = k.saturating_add(step);
            }
            prev = Some((s, false));
        }
        // Later grid times would read the same sample, or find it too old.
        if k <= self.end {
            serve(k, &mut prev, &mut out);
        }
        out
    }
}

/// Something the evaluator can read series from.
pub trait Queryable {
    /// Every series matching all matchers, with its samples in `[mint, maxt]` (ms, inclusive).
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64)
        -> Result<Vec<Series>, QueryError>;

    /// Every series matching all matchers that has a sample to show on `grid`, with only
    /// the samples an instant selector evaluated on it reads ([`Grid::latest`]): one per
    /// series for an instant query, at most one per step for a range query. A store that
    /// can find a series' latest sample without decoding its whole lookback window should
    /// override this; the default selects the grid's whole window, which gives the same
    /// results at a higher cost.
    fn select_latest(&self, matchers: &[Matcher], grid: &Grid) -> Result<Vec<Series>, QueryError> {
        let (mint, maxt) = grid.window();
        self.select(matchers, mint, maxt)
    }
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
