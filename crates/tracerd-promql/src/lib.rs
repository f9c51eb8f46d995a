//! tracerd-promql: a pure PromQL evaluator. No I/O, no clock: it reads series through
//! [`Queryable`] and evaluates at the times the caller gives. Parsing is `promql-parser`'s.
//!
//! Modules: [`model`] (types shared with the store), `eval` (selectors, subqueries, `@`,
//! `offset`, the range loop), `binary`, `aggregate`, `functions`, `value` (internal values).

mod aggregate;
mod binary;
mod eval;
mod functions;
pub mod model;
mod value;

use std::sync::Arc;

pub use model::{
    is_stale_nan, stale_nan, ErrorType, Grid, Labels, MatchOp, Matcher, Options, QueryError,
    Queryable, Sample, Series, Value, STALE_NAN_BITS,
};

/// Compensated sum and mean, reused by `tracerd-tsquery` (upstream's timeseries language).
pub use aggregate::{kahan_sum, mean};

use promql_parser::parser::{self, Expr};
use value::Val;

fn parse(expr: &str) -> Result<Expr, QueryError> {
    parser::parse(expr).map_err(|e| QueryError::bad_data(format!("parse error: {e}")))
}

/// Evaluate `expr` at `t_ms`.
pub fn instant_query(
    q: &dyn Queryable,
    expr: &str,
    t_ms: i64,
    opts: &Options,
) -> Result<Value, QueryError> {
    let e = parse(expr)?;
    let mut ev = eval::Evaluator::new(q, opts, t_ms, t_ms, 0);
    ev.prepare(&e, t_ms, t_ms, 0)?;
    Ok(match ev.eval(&e, t_ms)? {
        Val::Scalar(v) => Value::Scalar(t_ms, v),
        Val::Str(s) => Value::String(t_ms, s),
        Val::Vector(v) => Value::Vector(
            ev.finish_vector(v)?
                .into_iter()
                .map(|e| (Arc::unwrap_or_clone(e.labels), t_ms, e.v))
                .collect(),
        ),
        Val::Matrix(m) => {
            let mut m = value::to_series(m);
            m.sort_by(|a, b| a.labels.cmp(&b.labels));
            Value::Matrix(m)
        }
    })
}

/// Evaluate `expr` at every step from `start_ms` to `end_ms`; the result is a matrix
/// sorted by labels.
pub fn range_query(
    q: &dyn Queryable,
    expr: &str,
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
    opts: &Options,
) -> Result<Value, QueryError> {
    if step_ms <= 0 {
        return Err(QueryError::bad_data(
            "zero or negative query resolution step widths are not accepted",
        ));
    }
    if end_ms < start_ms {
        return Err(QueryError::bad_data(
            "end timestamp must not be before start time",
        ));
    }
    let e = parse(expr)?;
    match e.value_type() {
        parser::value::ValueType::Vector | parser::value::ValueType::Scalar => {}
        t => {
            return Err(QueryError::bad_data(format!(
                "invalid expression type \"{t}\" for range query, must be Scalar or instant Vector"
            )))
        }
    }
    let mut ev = eval::Evaluator::new(q, opts, start_ms, end_ms, step_ms);
    ev.prepare(&e, start_ms, end_ms, step_ms)?;
    let mut out: Vec<(Arc<Labels>, Vec<Sample>)> = Vec::new();
    // By label-set id (the evaluator's, equal for equal label sets): the index in `out`.
    let mut index: Vec<usize> = Vec::new();
    let mut points = 0usize;
    let mut t = start_ms;
    while t <= end_ms {
        ev.check_deadline()?;
        let (items, ids) = match ev.eval(&e, t)? {
            Val::Scalar(v) => (
                vec![value::Elem {
                    labels: Arc::new(Vec::new()),
                    v,
                    drop_name: false,
                }],
                vec![usize::MAX],
            ),
            Val::Vector(v) => ev.finish_vector_ids(v)?,
            other => {
                return Err(QueryError::bad_data(format!(
                    "range query evaluated to {}",
                    other.type_name()
                )))
            }
        };
        for (el, id) in items.into_iter().zip(ids) {
            points += 1;
            let s = Sample { t, v: el.v };
            // A scalar is one series with no labels.
            let id = if id == usize::MAX { 0 } else { id + 1 };
            if id >= index.len() {
                index.resize(id + 1, usize::MAX);
            }
            match index[id] {
                usize::MAX => {
                    index[id] = out.len();
                    out.push((el.labels, vec![s]));
                }
                i => out[i].1.push(s),
            }
        }
        if points > opts.max_samples {
            return Err(eval::too_many_samples());
        }
        t += step_ms;
    }
    drop(index);
    let mut out: Vec<Series> = out
        .into_iter()
        .map(|(l, samples)| Series {
            labels: Arc::unwrap_or_clone(l),
            samples,
        })
        .collect();
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(Value::Matrix(out))
}
