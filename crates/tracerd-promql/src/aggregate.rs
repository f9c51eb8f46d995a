//! Aggregation operators with `by`/`without`.

use std::collections::HashMap;

use promql_parser::parser::token as tk;
use promql_parser::parser::{AggregateExpr, LabelModifier};

use crate::eval::Evaluator;
use crate::model::{Labels, QueryError};
use crate::value::{self, Elem, Val};

/// Neumaier-compensated summation step, as Prometheus's `kahanSumInc`.
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

pub fn kahan_sum(vals: impl Iterator<Item = f64>) -> f64 {
    let (mut s, mut c) = (0.0, 0.0);
    for v in vals {
        (s, c) = kahan_inc(v, s, c);
    }
    if s.is_infinite() {
        s
    } else {
        s + c
    }
}

/// Mean as Prometheus computes it: a compensated sum, switching to an incremental mean if
/// the sum would overflow.
pub fn mean(vals: &[f64]) -> f64 {
    let (mut s, mut c) = (0.0, 0.0);
    let mut incremental = false;
    let (mut m, mut mc) = (0.0f64, 0.0f64);
    for (i, &v) in vals.iter().enumerate() {
        let n = (i + 1) as f64;
        if !incremental {
            let (ns, nc) = kahan_inc(v, s, c);
            if !ns.is_infinite() || v.is_infinite() {
                (s, c) = (ns, nc);
                continue;
            }
            incremental = true;
            m = s / (n - 1.0);
            mc = c / (n - 1.0);
        }
        let cur = m + mc;
        if cur.is_infinite() {
            if v.is_infinite() && (cur > 0.0) != (v > 0.0) {
                m = f64::NAN;
                mc = 0.0;
            }
            continue;
        }
        (m, mc) = kahan_inc(v / n - cur / n, m, mc);
    }
    if incremental {
        return m + mc;
    }
    let n = vals.len() as f64;
    if s.is_infinite() {
        s / n
    } else {
        (s + c) / n
    }
}

/// Population variance with Welford's method and compensation (Prometheus's stdvar).
pub(crate) fn variance(vals: &[f64]) -> f64 {
    let (mut cnt, mut m, mut mc, mut acc) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for &f in vals {
        cnt += 1.0;
        let delta = f - (m + mc);
        (m, mc) = kahan_inc(delta / cnt, m, mc);
        acc += delta * (f - (m + mc));
    }
    acc / cnt
}

/// φ-quantile by linear interpolation between closest ranks (NaN sorts first).
pub(crate) fn quantile(q: f64, mut vals: Vec<f64>) -> f64 {
    if vals.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    vals.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = vals.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let w = rank - rank.floor();
    vals[lower as usize] * (1.0 - w) + vals[upper as usize] * w
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)` for count_values' label.
pub(crate) fn format_go_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f == f64::INFINITY {
        "+Inf".into()
    } else if f == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{f}")
    }
}

/// The labels of an element's group (`without` never keeps `__name__`).
fn group_key(labels: &Labels, m: &Option<LabelModifier>) -> Labels {
    match m {
        Some(LabelModifier::Include(ls)) => value::signature(labels, &ls.labels, true),
        Some(LabelModifier::Exclude(ls)) => value::signature(labels, &ls.labels, false),
        None => Vec::new(),
    }
}

pub(crate) fn eval_aggregate(
    ev: &mut Evaluator,
    a: &AggregateExpr,
    ts: i64,
) -> Result<Val, QueryError> {
    let id = a.op.id();
    if !matches!(
        id,
        tk::T_SUM
            | tk::T_AVG
            | tk::T_COUNT
            | tk::T_GROUP
            | tk::T_MIN
            | tk::T_MAX
            | tk::T_STDVAR
            | tk::T_STDDEV
            | tk::T_QUANTILE
            | tk::T_TOPK
            | tk::T_BOTTOMK
            | tk::T_COUNT_VALUES
    ) {
        return Err(QueryError::bad_data(format!(
            "aggregation {} is not supported",
            a.op
        )));
    }
    let param = match &a.param {
        Some(p) => Some(ev.eval(p, ts)?),
        None => None,
    };
    let mut v = ev.eval_vector(&a.expr, ts)?;
    ev.settle(&mut v);
    // Group ids in order of first appearance; `groups[i]` holds the elements of `order[i]`.
    let (ids, memo) = ev.group_ids(a as *const AggregateExpr as usize, &v, |l| {
        group_key(l, &a.modifier)
    });
    let keys = &memo.keys;
    let mut slot = vec![usize::MAX; keys.len()];
    let mut order: Vec<usize> = Vec::new();
    let mut groups: Vec<Vec<Elem>> = Vec::new();
    for (e, id) in v.into_iter().zip(ids) {
        if slot[id] == usize::MAX {
            slot[id] = order.len();
            order.push(id);
            groups.push(Vec::new());
        }
        groups[slot[id]].push(e);
    }
    let scalar_param = |what: &str| -> Result<f64, QueryError> {
        match &param {
            Some(Val::Scalar(s)) => Ok(*s),
            _ => Err(QueryError::bad_data(format!(
                "{what} expects a scalar parameter"
            ))),
        }
    };
    let mut out = Vec::new();
    match id {
        tk::T_TOPK | tk::T_BOTTOMK => {
            let k = scalar_param("topk/bottomk")?;
            if k.is_nan() || k.abs() >= 9.2e18 {
                return Err(QueryError::execution(format!(
                    "Scalar value {k} overflows int64"
                )));
            }
            let k = k as i64;
            if k < 1 {
                return Ok(Val::Vector(Vec::new()));
            }
            let top = id == tk::T_TOPK;
            for mut g in groups {
                // NaN counts as the least value for topk and the greatest for bottomk.
                g.sort_by(|x, y| {
                    use std::cmp::Ordering::*;
                    match (x.v.is_nan(), y.v.is_nan()) {
                        (true, true) => Equal,
                        (true, false) => Greater,
                        (false, true) => Less,
                        _ if top => y.v.partial_cmp(&x.v).unwrap_or(Equal),
                        _ => x.v.partial_cmp(&y.v).unwrap_or(Equal),
                    }
                });
                g.truncate(k as usize);
                out.extend(g);
            }
            return Ok(Val::Vector(out));
        }
        tk::T_COUNT_VALUES => {
            let label = match &param {
                Some(Val::Str(s)) => s.clone(),
                _ => {
                    return Err(QueryError::bad_data(
                        "count_values expects a string parameter",
                    ))
                }
            };
            if !valid_label_name(&label) {
                return Err(QueryError::execution(format!(
                    "invalid label name {label:?}"
                )));
            }
            let mut corder: Vec<Labels> = Vec::new();
            let mut counts: HashMap<Labels, f64> = HashMap::new();
            for (gid, g) in order.iter().zip(&groups) {
                for e in g {
                    let mut l = keys[*gid].as_ref().clone();
                    value::set(&mut l, &label, &format_go_float(e.v));
                    let c = counts.entry(l.clone()).or_insert_with(|| {
                        corder.push(l);
                        0.0
                    });
                    *c += 1.0;
                }
            }
            for l in corder {
                let c = counts[&l];
                out.push(Elem {
                    labels: l.into(),
                    v: c,
                    drop_name: false,
                });
            }
            return Ok(Val::Vector(out));
        }
        _ => {}
    }
    let q = if id == tk::T_QUANTILE {
        Some(scalar_param("quantile")?)
    } else {
        None
    };
    for (gid, g) in order.iter().zip(&groups) {
        let vals: Vec<f64> = g.iter().map(|e| e.v).collect();
        let v = match id {
            tk::T_SUM => kahan_sum(vals.iter().copied()),
            tk::T_AVG => mean(&vals),
            tk::T_COUNT => vals.len() as f64,
            tk::T_GROUP => 1.0,
            tk::T_MIN => {
                vals.iter()
                    .copied()
                    .fold(f64::NAN, |m, x| if m.is_nan() || x < m { x } else { m })
            }
            tk::T_MAX => {
                vals.iter()
                    .copied()
                    .fold(f64::NAN, |m, x| if m.is_nan() || x > m { x } else { m })
            }
            tk::T_STDVAR => variance(&vals),
            tk::T_STDDEV => variance(&vals).sqrt(),
            tk::T_QUANTILE => quantile(q.unwrap_or(f64::NAN), vals),
            _ => {
                return Err(QueryError::bad_data(format!(
                    "aggregation {} is not supported",
                    a.op
                )));
            }
        };
        out.push(Elem {
            labels: keys[*gid].clone(),
            v,
            drop_name: false,
        });
    }
    Ok(Val::Vector(out))
}

pub(crate) fn valid_label_name(s: &str) -> bool {
    !s.is_empty() && std::str::from_utf8(s.as_bytes()).is_ok()
}
