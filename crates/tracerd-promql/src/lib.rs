//! tracerd-promql: a pure PromQL evaluator. No I/O, no clock: it reads series through
//! [`Queryable`] and evaluates at the times the caller gives.

pub mod model;

pub use model::{
    is_stale_nan, stale_nan, ErrorType, Labels, MatchOp, Matcher, Options, QueryError, Queryable,
    Sample, Series, Value, STALE_NAN_BITS,
};

/// Evaluate `expr` at `t_ms`.
pub fn instant_query(
    _q: &dyn Queryable,
    _expr: &str,
    _t_ms: i64,
    _opts: &Options,
) -> Result<Value, QueryError> {
    Err(QueryError::new(
        ErrorType::Internal,
        "evaluator not built yet",
    ))
}

/// Evaluate `expr` at every step from `start_ms` to `end_ms`; the result is a matrix.
pub fn range_query(
    _q: &dyn Queryable,
    _expr: &str,
    _start_ms: i64,
    _end_ms: i64,
    _step_ms: i64,
    _opts: &Options,
) -> Result<Value, QueryError> {
    Err(QueryError::new(
        ErrorType::Internal,
        "evaluator not built yet",
    ))
}
