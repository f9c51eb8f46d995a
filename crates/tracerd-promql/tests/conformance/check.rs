//! Comparing an evaluation's result with an `eval` block's expectation.

use std::collections::HashMap;

use tracerd_promql::{Labels, QueryError, Value};

use crate::script::{EvalBlock, Expected};

pub(crate) fn almost(a: f64, b: f64) -> bool {
    const MIN_NORMAL: f64 = 2.2250738585072014e-308;
    let sa = tracerd_promql::is_stale_nan(a);
    let sb = tracerd_promql::is_stale_nan(b);
    if sa || sb {
        return sa && sb;
    }
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < 1e-6 * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < 1e-6
}

pub(crate) fn fmt_labels(l: &Labels) -> String {
    let v: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", v.join(", "))
}

pub(crate) fn check(b: &EvalBlock, got: Result<Value, QueryError>) -> Result<(), String> {
    if b.fail {
        return match got {
            Err(_) => Ok(()),
            Ok(v) => Err(format!("expected failure, got {v:?}")),
        };
    }
    let got = got.map_err(|e| format!("error: {e}"))?;
    if let Some(s) = &b.string {
        return match got {
            Value::String(_, g) if &g == s => Ok(()),
            other => Err(format!("expected string {s:?}, got {other:?}")),
        };
    }
    if let Some(x) = b.scalar {
        return match got {
            Value::Scalar(_, g) if almost(g, x) => Ok(()),
            other => Err(format!("expected scalar {x}, got {other:?}")),
        };
    }
    let exp: HashMap<&Labels, &Expected> = b.metrics.iter().map(|m| (&m.labels, m)).collect();
    match got {
        Value::Vector(v) => {
            if b.rv.is_some() || b.range.is_some() {
                return Err("expected a matrix, got a vector".into());
            }
            for (pos, (l, _, val)) in v.iter().enumerate() {
                let Some(e) = exp.get(l) else {
                    return Err(format!("unexpected metric {} = {val}", fmt_labels(l)));
                };
                if b.ordered && e.pos != pos + 1 {
                    return Err(format!(
                        "{} at position {} but expected {}",
                        fmt_labels(l),
                        pos + 1,
                        e.pos
                    ));
                }
                let x = e.vals.first().copied().flatten().unwrap_or(f64::NAN);
                if !almost(x, *val) {
                    return Err(format!("{}: expected {x}, got {val}", fmt_labels(l)));
                }
            }
            if v.len() != b.metrics.len() {
                return Err(format!(
                    "expected {} series, got {}",
                    b.metrics.len(),
                    v.len()
                ));
            }
            Ok(())
        }
        Value::Matrix(m) => {
            let (start, _end, step) = b.range.or(b.rv).ok_or("expected a vector, got a matrix")?;
            for s in &m {
                let Some(e) = exp.get(&s.labels) else {
                    return Err(format!(
                        "unexpected series {} = {:?}",
                        fmt_labels(&s.labels),
                        s.samples
                    ));
                };
                let want: Vec<(i64, f64)> = e
                    .vals
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| v.map(|v| (start + i as i64 * step, v)))
                    .collect();
                if want.len() != s.samples.len()
                    || want
                        .iter()
                        .zip(&s.samples)
                        .any(|(w, g)| w.0 != g.t || !almost(w.1, g.v))
                {
                    let got: Vec<(i64, f64)> = s.samples.iter().map(|x| (x.t, x.v)).collect();
                    return Err(format!(
                        "{}: expected {want:?}, got {got:?}",
                        fmt_labels(&s.labels)
                    ));
                }
            }
            if m.len() != b.metrics.len() {
                return Err(format!(
                    "expected {} series, got {}",
                    b.metrics.len(),
                    m.len()
                ));
            }
            Ok(())
        }
        other => Err(format!("expected a vector or matrix, got {other:?}")),
    }
}
