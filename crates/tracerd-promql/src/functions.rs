//! Function calls: range-vector functions (`rate`, `*_over_time`, ...), instant-vector math,
//! label manipulation, `absent*`, `histogram_quantile` on classic buckets, date functions.
//! The range-vector functions' evaluation is in `range`.

mod range;

use std::sync::Arc;

use promql_parser::parser::{Call, Expr};

use crate::eval::{absent_labels, Evaluator};
use crate::model::{Labels, QueryError};
use crate::value::{self, Elem, Val, METRIC_NAME};
use range::{eval_range_fn, range_fn};

fn arg(c: &Call, i: usize) -> Result<&Expr, QueryError> {
    c.args
        .args
        .get(i)
        .map(|b| b.as_ref())
        .ok_or_else(|| QueryError::bad_data(format!("{}: missing argument {}", c.func.name, i + 1)))
}

fn unparen(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unparen(&p.expr),
        _ => e,
    }
}

pub(crate) fn eval_call(ev: &mut Evaluator, c: &Call, ts: i64) -> Result<Val, QueryError> {
    let name = c.func.name;
    match name {
        "time" => return Ok(Val::Scalar(ts as f64 / 1000.0)),
        "pi" => return Ok(Val::Scalar(std::f64::consts::PI)),
        // Query-context functions: the query's own start, end, step and range, in seconds.
        "start" => return Ok(Val::Scalar(ev.start as f64 / 1000.0)),
        "end" => return Ok(Val::Scalar(ev.end as f64 / 1000.0)),
        "step" => return Ok(Val::Scalar(ev.interval as f64 / 1000.0)),
        "range" => return Ok(Val::Scalar((ev.end - ev.start) as f64 / 1000.0)),
        "min_of" | "max_of" => {
            let a = ev.eval_scalar(arg(c, 0)?, ts)?;
            let b = ev.eval_scalar(arg(c, 1)?, ts)?;
            return Ok(Val::Scalar(if name == "min_of" {
                go_min(a, b)
            } else {
                go_max(a, b)
            }));
        }
        "vector" => {
            let s = ev.eval_scalar(arg(c, 0)?, ts)?;
            return Ok(Val::Vector(vec![Elem {
                labels: Vec::new().into(),
                v: s,
                drop_name: false,
            }]));
        }
        "scalar" => {
            let v = ev.eval_vector(arg(c, 0)?, ts)?;
            return Ok(Val::Scalar(if v.len() == 1 { v[0].v } else { f64::NAN }));
        }
        "timestamp" => {
            let a = unparen(arg(c, 0)?);
            let out = if let Expr::VectorSelector(vs) = a {
                ev.eval_vs(vs, ts)?
                    .into_iter()
                    .map(|(mut e, t)| {
                        e.v = t as f64 / 1000.0;
                        e.drop_name = true;
                        e
                    })
                    .collect()
            } else {
                let mut v = ev.eval_vector(a, ts)?;
                for e in v.iter_mut() {
                    e.v = ts as f64 / 1000.0;
                    e.drop_name = true;
                }
                v
            };
            return Ok(Val::Vector(out));
        }
        "absent" => {
            let v = ev.eval_vector(arg(c, 0)?, ts)?;
            if !v.is_empty() {
                return Ok(Val::Vector(Vec::new()));
            }
            let labels = match unparen(arg(c, 0)?) {
                Expr::VectorSelector(vs) => absent_labels(vs),
                _ => Vec::new(),
            };
            return Ok(Val::Vector(vec![Elem {
                labels: labels.into(),
                v: 1.0,
                drop_name: false,
            }]));
        }
        "absent_over_time" => {
            let (m, _, _) = ev.eval_matrix_arg(arg(c, 0)?, ts)?;
            if !m.is_empty() {
                return Ok(Val::Vector(Vec::new()));
            }
            let labels = match unparen(arg(c, 0)?) {
                Expr::MatrixSelector(ms) => absent_labels(&ms.vs),
                _ => Vec::new(),
            };
            return Ok(Val::Vector(vec![Elem {
                labels: labels.into(),
                v: 1.0,
                drop_name: false,
            }]));
        }
        "label_replace" => return label_replace(ev, c, ts),
        "label_join" => return label_join(ev, c, ts),
        "histogram_quantile" => return histogram_quantile(ev, c, ts),
        "sort" | "sort_desc" => {
            let mut v = ev.eval_vector(arg(c, 0)?, ts)?;
            let desc = name == "sort_desc";
            v.sort_by(|a, b| {
                use std::cmp::Ordering::*;
                match (a.v.is_nan(), b.v.is_nan()) {
                    (true, true) => Equal,
                    (true, false) => Greater,
                    (false, true) => Less,
                    _ if desc => b.v.partial_cmp(&a.v).unwrap_or(Equal),
                    _ => a.v.partial_cmp(&b.v).unwrap_or(Equal),
                }
            });
            return Ok(Val::Vector(v));
        }
        "sort_by_label" | "sort_by_label_desc" => {
            let mut v = ev.eval_vector(arg(c, 0)?, ts)?;
            let mut names = Vec::new();
            for i in 1..c.args.args.len() {
                match ev.eval(arg(c, i)?, ts)? {
                    Val::Str(s) => names.push(s),
                    _ => return Err(QueryError::bad_data("sort_by_label expects label names")),
                }
            }
            let desc = name == "sort_by_label_desc";
            v.sort_by(|a, b| {
                for n in &names {
                    let x = value::get(&a.labels, n).unwrap_or("");
                    let y = value::get(&b.labels, n).unwrap_or("");
                    let o = natural_cmp(x, y);
                    if o != std::cmp::Ordering::Equal {
                        return if desc { o.reverse() } else { o };
                    }
                }
                let o = a.labels.cmp(&b.labels);
                if desc {
                    o.reverse()
                } else {
                    o
                }
            });
            return Ok(Val::Vector(v));
        }
        _ => {}
    }
    if let Some(f) = range_fn(name) {
        return eval_range_fn(ev, c, ts, f);
    }
    if let Some(date) = date_fn(name) {
        let v = if c.args.args.is_empty() {
            vec![Elem {
                labels: Vec::new().into(),
                v: ts as f64 / 1000.0,
                drop_name: false,
            }]
        } else {
            ev.eval_vector(arg(c, 0)?, ts)?
        };
        return Ok(Val::Vector(
            v.into_iter()
                .map(|mut e| {
                    e.v = date(e.v);
                    e.drop_name = true;
                    e
                })
                .collect(),
        ));
    }
    // Instant-vector math with optional scalar parameters.
    let mut v = ev.eval_vector(arg(c, 0)?, ts)?;
    let mut params = Vec::new();
    for i in 1..c.args.args.len() {
        params.push(ev.eval_scalar(arg(c, i)?, ts)?);
    }
    let p = |i: usize, d: f64| params.get(i).copied().unwrap_or(d);
    let f: Box<dyn Fn(f64) -> f64> = match name {
        "abs" => Box::new(f64::abs),
        "ceil" => Box::new(f64::ceil),
        "floor" => Box::new(f64::floor),
        "exp" => Box::new(f64::exp),
        "ln" => Box::new(f64::ln),
        "log2" => Box::new(f64::log2),
        "log10" => Box::new(f64::log10),
        "sqrt" => Box::new(f64::sqrt),
        "sgn" => Box::new(|x: f64| {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                x
            }
        }),
        "sin" => Box::new(f64::sin),
        "cos" => Box::new(f64::cos),
        "tan" => Box::new(f64::tan),
        "asin" => Box::new(f64::asin),
        "acos" => Box::new(f64::acos),
        "atan" => Box::new(f64::atan),
        "sinh" => Box::new(f64::sinh),
        "cosh" => Box::new(f64::cosh),
        "tanh" => Box::new(f64::tanh),
        "asinh" => Box::new(f64::asinh),
        "acosh" => Box::new(f64::acosh),
        "atanh" => Box::new(f64::atanh),
        "deg" => Box::new(|x: f64| x * 180.0 / std::f64::consts::PI),
        "rad" => Box::new(|x: f64| x * std::f64::consts::PI / 180.0),
        "round" => {
            let inv = 1.0 / p(0, 1.0);
            Box::new(move |x: f64| (x * inv + 0.5).floor() / inv)
        }
        "clamp" => {
            let (lo, hi) = (p(0, f64::NAN), p(1, f64::NAN));
            if hi < lo {
                return Ok(Val::Vector(Vec::new()));
            }
            Box::new(move |x: f64| go_max(lo, go_min(hi, x)))
        }
        "clamp_min" => {
            let lo = p(0, f64::NAN);
            Box::new(move |x: f64| go_max(lo, x))
        }
        "clamp_max" => {
            let hi = p(0, f64::NAN);
            Box::new(move |x: f64| go_min(hi, x))
        }
        other => {
            return Err(QueryError::bad_data(format!(
                "function {other}() is not supported"
            )))
        }
    };
    for e in v.iter_mut() {
        e.v = f(e.v);
        e.drop_name = true;
    }
    Ok(Val::Vector(v))
}

fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// Natural order: runs of digits compare by number, the rest byte-wise.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].is_ascii_digit() && b[j].is_ascii_digit() {
            let si = i;
            while i < a.len() && a[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let (x, y) = (trim_zeros(&a[si..i]), trim_zeros(&b[sj..j]));
            let o = x.len().cmp(&y.len()).then_with(|| x.cmp(y));
            if o != Equal {
                return o;
            }
        } else {
            if a[i] != b[j] {
                return a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (a.len() - i).cmp(&(b.len() - j))
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let k = d.iter().take_while(|&&c| c == b'0').count();
    &d[k.min(d.len().saturating_sub(1))..]
}

fn label_string(ev: &mut Evaluator, c: &Call, i: usize, ts: i64) -> Result<String, QueryError> {
    match ev.eval(arg(c, i)?, ts)? {
        Val::Str(s) => Ok(s),
        other => Err(QueryError::bad_data(format!(
            "{}: argument {} must be a string, got {}",
            c.func.name,
            i + 1,
            other.type_name()
        ))),
    }
}

fn check_unique(v: &[Elem]) -> Result<(), QueryError> {
    let mut seen = std::collections::HashSet::new();
    for e in v {
        let mut l = e.labels.clone();
        value::drop_name_if(&mut l, e.drop_name);
        if !seen.insert(l) {
            return Err(QueryError::execution(
                "vector cannot contain metrics with the same labelset",
            ));
        }
    }
    Ok(())
}

fn valid_label(name: &str) -> bool {
    !name.is_empty()
}

fn label_replace(ev: &mut Evaluator, c: &Call, ts: i64) -> Result<Val, QueryError> {
    let mut v = ev.eval_vector(arg(c, 0)?, ts)?;
    let dst = label_string(ev, c, 1, ts)?;
    let repl = label_string(ev, c, 2, ts)?;
    let src = label_string(ev, c, 3, ts)?;
    let re = label_string(ev, c, 4, ts)?;
    let re = regex::Regex::new(&format!("^(?s:{re})$")).map_err(|e| {
        QueryError::bad_data(format!(
            "invalid regular expression in label_replace(): {re}: {e}"
        ))
    })?;
    if !valid_label(&dst) {
        return Err(QueryError::bad_data(format!(
            "invalid destination label name in label_replace(): {dst}"
        )));
    }
    for e in v.iter_mut() {
        let sv = value::get(&e.labels, &src).unwrap_or("").to_string();
        if let Some(caps) = re.captures(&sv) {
            let mut res = String::new();
            caps.expand(&repl, &mut res);
            value::set(Arc::make_mut(&mut e.labels), &dst, &res);
            if dst == METRIC_NAME {
                e.drop_name = false;
            }
        }
    }
    check_unique(&v)?;
    Ok(Val::Vector(v))
}

fn label_join(ev: &mut Evaluator, c: &Call, ts: i64) -> Result<Val, QueryError> {
    let mut v = ev.eval_vector(arg(c, 0)?, ts)?;
    let dst = label_string(ev, c, 1, ts)?;
    let sep = label_string(ev, c, 2, ts)?;
    let mut srcs = Vec::new();
    for i in 3..c.args.args.len() {
        srcs.push(label_string(ev, c, i, ts)?);
    }
    if !valid_label(&dst) {
        return Err(QueryError::bad_data(format!(
            "invalid destination label name in label_join(): {dst}"
        )));
    }
    for e in v.iter_mut() {
        let joined: Vec<&str> = srcs
            .iter()
            .map(|s| value::get(&e.labels, s).unwrap_or(""))
            .collect();
        let j = joined.join(&sep);
        value::set(Arc::make_mut(&mut e.labels), &dst, &j);
        if dst == METRIC_NAME {
            e.drop_name = false;
        }
    }
    check_unique(&v)?;
    Ok(Val::Vector(v))
}

fn almost_equal(a: f64, b: f64, eps: f64) -> bool {
    const MIN_NORMAL: f64 = 2.2250738585072014e-308;
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < eps * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < eps
}

/// Classic-bucket quantile, as Prometheus's `BucketQuantile`.
pub(crate) fn bucket_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    match buckets.last() {
        Some(b) if b.0 == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    // Coalesce buckets with the same upper bound.
    let mut co: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for b in buckets {
        match co.last_mut() {
            Some(l) if l.0 == b.0 => l.1 += b.1,
            _ => co.push(b),
        }
    }
    let mut buckets = co;
    // Monotonic, ignoring tiny float deltas.
    let mut prev = buckets[0].1;
    for b in buckets.iter_mut().skip(1) {
        let cur = b.1;
        if cur == prev {
            continue;
        }
        if almost_equal(prev, cur, 1e-12) || cur < prev {
            b.1 = prev;
            continue;
        }
        prev = cur;
    }
    if buckets.len() < 2 {
        return f64::NAN;
    }
    let obs = buckets[buckets.len() - 1].1;
    if obs == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * obs;
    let n1 = buckets.len() - 1;
    let b = buckets[..n1].partition_point(|x| x.1 < rank);
    if b == n1 {
        return buckets[n1 - 1].0;
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let end = buckets[b].0;
    let mut count = buckets[b].1;
    let mut start = 0.0;
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

fn histogram_quantile(ev: &mut Evaluator, c: &Call, ts: i64) -> Result<Val, QueryError> {
    let q = ev.eval_scalar(arg(c, 0)?, ts)?;
    let mut v = ev.eval_vector(arg(c, 1)?, ts)?;
    ev.settle(&mut v);
    let mut order: Vec<Labels> = Vec::new();
    let mut groups: std::collections::HashMap<Labels, Vec<(f64, f64)>> = Default::default();
    for e in v {
        let Some(le) = value::get(&e.labels, "le") else {
            continue;
        };
        let Ok(ub) = le.trim().parse::<f64>() else {
            continue;
        };
        let key: Labels = e
            .labels
            .iter()
            .filter(|(n, _)| n != "le" && n != METRIC_NAME)
            .cloned()
            .collect();
        groups
            .entry(key.clone())
            .or_insert_with(|| {
                order.push(key);
                Vec::new()
            })
            .push((ub, e.v));
    }
    let mut out = Vec::new();
    for k in order {
        let b = groups.remove(&k).unwrap_or_default();
        out.push(Elem {
            labels: k.into(),
            v: bucket_quantile(q, b),
            drop_name: false,
        });
    }
    Ok(Val::Vector(out))
}

// ---- date functions (UTC, from seconds) ----

fn civil(secs: f64) -> (i64, u32, u32, i64) {
    let s = secs.floor() as i64;
    let days = s.div_euclid(86_400);
    let sod = s.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d, sod)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

fn date_fn(name: &str) -> Option<fn(f64) -> f64> {
    fn wrap(secs: f64, f: impl Fn(i64, u32, u32, i64) -> f64) -> f64 {
        if !secs.is_finite() {
            return f64::NAN;
        }
        let (y, m, d, sod) = civil(secs);
        f(y, m, d, sod)
    }
    Some(match name {
        "year" => |s| wrap(s, |y, _, _, _| y as f64),
        "month" => |s| wrap(s, |_, m, _, _| m as f64),
        "day_of_month" => |s| wrap(s, |_, _, d, _| d as f64),
        "days_in_month" => |s| wrap(s, |y, m, _, _| days_in_month(y, m) as f64),
        "hour" => |s| wrap(s, |_, _, _, sod| (sod / 3600) as f64),
        "minute" => |s| wrap(s, |_, _, _, sod| ((sod % 3600) / 60) as f64),
        "day_of_week" => |s| {
            if !s.is_finite() {
                return f64::NAN;
            }
            let days = (s.floor() as i64).div_euclid(86_400);
            ((days + 4).rem_euclid(7)) as f64
        },
        "day_of_year" => |s| {
            wrap(s, |y, m, d, _| {
                let mut n = d;
                for mm in 1..m {
                    n += days_in_month(y, mm);
                }
                n as f64
            })
        },
        _ => return None,
    })
}
