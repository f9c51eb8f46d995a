//! Range-vector functions: `rate`, `increase`, `delta` with Prometheus's extrapolation,
//! `irate`, `deriv`, `predict_linear`, the `*_over_time` family and
//! `double_exponential_smoothing`.

use promql_parser::parser::Call;

use super::arg;
use crate::aggregate::{kahan_inc, kahan_sum, mean, quantile, variance};
use crate::eval::Evaluator;
use crate::model::QueryError;
use crate::value::{Elem, RangeSeries, Val};

#[derive(Clone, Copy)]
pub(super) enum RangeFn {
    Rate,
    Increase,
    Delta,
    Irate,
    Idelta,
    Deriv,
    PredictLinear,
    Changes,
    Resets,
    Avg,
    Min,
    Max,
    Sum,
    Count,
    Last,
    Quantile,
    Stddev,
    Stdvar,
    Present,
    First,
    Mad,
    TsOfMin,
    TsOfMax,
    TsOfLast,
    TsOfFirst,
    Holt,
}

pub(super) fn range_fn(name: &str) -> Option<RangeFn> {
    Some(match name {
        "rate" => RangeFn::Rate,
        "increase" => RangeFn::Increase,
        "delta" => RangeFn::Delta,
        "irate" => RangeFn::Irate,
        "idelta" => RangeFn::Idelta,
        "deriv" => RangeFn::Deriv,
        "predict_linear" => RangeFn::PredictLinear,
        "changes" => RangeFn::Changes,
        "resets" => RangeFn::Resets,
        "avg_over_time" => RangeFn::Avg,
        "min_over_time" => RangeFn::Min,
        "max_over_time" => RangeFn::Max,
        "sum_over_time" => RangeFn::Sum,
        "count_over_time" => RangeFn::Count,
        "last_over_time" => RangeFn::Last,
        "quantile_over_time" => RangeFn::Quantile,
        "stddev_over_time" => RangeFn::Stddev,
        "stdvar_over_time" => RangeFn::Stdvar,
        "present_over_time" => RangeFn::Present,
        "first_over_time" => RangeFn::First,
        "mad_over_time" => RangeFn::Mad,
        "ts_of_min_over_time" => RangeFn::TsOfMin,
        "ts_of_max_over_time" => RangeFn::TsOfMax,
        "ts_of_last_over_time" => RangeFn::TsOfLast,
        "ts_of_first_over_time" => RangeFn::TsOfFirst,
        "double_exponential_smoothing" => RangeFn::Holt,
        _ => return None,
    })
}

pub(super) fn eval_range_fn(
    ev: &mut Evaluator,
    c: &Call,
    ts: i64,
    f: RangeFn,
) -> Result<Val, QueryError> {
    // quantile_over_time's matrix is its second argument; predict_linear has a scalar second.
    let (mi, scalar) = match f {
        RangeFn::Quantile => (1, Some(ev.eval_scalar(arg(c, 0)?, ts)?)),
        RangeFn::PredictLinear => (0, Some(ev.eval_scalar(arg(c, 1)?, ts)?)),
        _ => (0, None),
    };
    let (sf, tf) = if let RangeFn::Holt = f {
        let sf = ev.eval_scalar(arg(c, 1)?, ts)?;
        let tf = ev.eval_scalar(arg(c, 2)?, ts)?;
        if !(sf > 0.0 && sf < 1.0) {
            return Err(QueryError::execution(format!(
                "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf}"
            )));
        }
        if !(tf > 0.0 && tf < 1.0) {
            return Err(QueryError::execution(format!(
                "invalid trend factor. Expected: 0 < tf < 1, got: {tf}"
            )));
        }
        (sf, tf)
    } else {
        (0.0, 0.0)
    };
    let (m, range, end) = ev.eval_matrix_arg(arg(c, mi)?, ts)?;
    let mut out = Vec::with_capacity(m.len());
    for s in m {
        let RangeSeries {
            labels,
            points,
            drop_name,
        } = s;
        let v = match f {
            RangeFn::Rate => extrapolated(&points, range, end, true, true),
            RangeFn::Increase => extrapolated(&points, range, end, true, false),
            RangeFn::Delta => extrapolated(&points, range, end, false, false),
            RangeFn::Irate | RangeFn::Idelta => {
                if points.len() < 2 {
                    None
                } else {
                    let (t1, v1) = points[points.len() - 2];
                    let (t2, v2) = points[points.len() - 1];
                    let irate = matches!(f, RangeFn::Irate);
                    let d = if irate && v2 < v1 { v2 } else { v2 - v1 };
                    if irate {
                        let dt = (t2 - t1) as f64 / 1000.0;
                        if dt == 0.0 {
                            None
                        } else {
                            Some(d / dt)
                        }
                    } else {
                        Some(d)
                    }
                }
            }
            RangeFn::Deriv => {
                if points.len() < 2 {
                    None
                } else {
                    Some(linear_regression(&points, points[0].0).0)
                }
            }
            RangeFn::PredictLinear => {
                if points.len() < 2 {
                    None
                } else {
                    let (slope, icpt) = linear_regression(&points, ts);
                    Some(slope * scalar.unwrap_or(0.0) + icpt)
                }
            }
            RangeFn::Changes => Some(
                points
                    .windows(2)
                    .filter(|w| !(w[0].1 == w[1].1 || (w[0].1.is_nan() && w[1].1.is_nan())))
                    .count() as f64,
            ),
            RangeFn::Resets => Some(points.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64),
            RangeFn::Avg => Some(mean(&points.iter().map(|p| p.1).collect::<Vec<_>>())),
            RangeFn::Min => {
                Some(
                    points
                        .iter()
                        .fold(f64::NAN, |m, p| if m.is_nan() || p.1 < m { p.1 } else { m }),
                )
            }
            RangeFn::Max => {
                Some(
                    points
                        .iter()
                        .fold(f64::NAN, |m, p| if m.is_nan() || p.1 > m { p.1 } else { m }),
                )
            }
            RangeFn::Sum => Some(kahan_sum(points.iter().map(|p| p.1))),
            RangeFn::Count => Some(points.len() as f64),
            RangeFn::Last => points.last().map(|p| p.1),
            RangeFn::Quantile => Some(quantile(
                scalar.unwrap_or(f64::NAN),
                points.iter().map(|p| p.1).collect(),
            )),
            RangeFn::Stddev => {
                Some(variance(&points.iter().map(|p| p.1).collect::<Vec<_>>()).sqrt())
            }
            RangeFn::Stdvar => Some(variance(&points.iter().map(|p| p.1).collect::<Vec<_>>())),
            RangeFn::Present => Some(1.0),
            RangeFn::First => points.first().map(|p| p.1),
            RangeFn::TsOfFirst => points.first().map(|p| p.0 as f64 / 1000.0),
            RangeFn::TsOfLast => points.last().map(|p| p.0 as f64 / 1000.0),
            RangeFn::TsOfMin | RangeFn::TsOfMax => {
                let min = matches!(f, RangeFn::TsOfMin);
                let (mut best, mut bt) = (points[0].1, points[0].0);
                for &(t, v) in &points {
                    let better = if min { v <= best } else { v >= best };
                    if better || best.is_nan() {
                        best = v;
                        bt = t;
                    }
                }
                Some(bt as f64 / 1000.0)
            }
            RangeFn::Mad => {
                if points.iter().any(|p| p.1.is_nan()) {
                    Some(f64::NAN)
                } else {
                    let vals: Vec<f64> = points.iter().map(|p| p.1).collect();
                    let med = quantile(0.5, vals.clone());
                    Some(quantile(
                        0.5,
                        vals.iter().map(|v| (v - med).abs()).collect(),
                    ))
                }
            }
            RangeFn::Holt => holt(&points, sf, tf),
        };
        if let Some(v) = v {
            let keeps_name = matches!(f, RangeFn::Last | RangeFn::First);
            out.push(Elem {
                labels,
                v,
                drop_name: drop_name || !keeps_name,
            });
        }
    }
    Ok(Val::Vector(out))
}

/// double_exponential_smoothing (Holt's linear method), as Prometheus computes it.
fn holt(points: &[(i64, f64)], sf: f64, tf: f64) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let mut s0 = 0.0;
    let mut s1 = points[0].1;
    let mut b = points[1].1 - points[0].1;
    for (i, p) in points.iter().enumerate().skip(1) {
        let x = sf * p.1;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Some(s1)
}

/// rate/increase/delta with Prometheus's extrapolation to the window's edges.
fn extrapolated(
    points: &[(i64, f64)],
    range: i64,
    end: i64,
    counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let start = end - range;
    let (t0, v0) = points[0];
    let (tn, vn) = points[points.len() - 1];
    let mut result = vn - v0;
    if counter {
        for w in points.windows(2) {
            if w[1].1 < w[0].1 {
                result += w[0].1;
            }
        }
    }
    let mut to_start = (t0 - start) as f64 / 1000.0;
    let mut to_end = (end - tn) as f64 / 1000.0;
    let sampled = (tn - t0) as f64 / 1000.0;
    let avg = sampled / (points.len() - 1) as f64;
    let threshold = avg * 1.1;
    if to_start >= threshold {
        to_start = avg / 2.0;
    }
    if counter && result > 0.0 && v0 >= 0.0 {
        let to_zero = sampled * (v0 / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if is_rate {
        factor /= range as f64 / 1000.0;
    }
    Some(result * factor)
}

/// Least-squares slope and intercept (at `intercept_t`), compensated as Prometheus does.
fn linear_regression(points: &[(i64, f64)], intercept_t: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0f64, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let init = points[0].1;
    let mut const_y = true;
    for (i, &(t, v)) in points.iter().enumerate() {
        if const_y && i > 0 && v != init {
            const_y = false;
        }
        n += 1.0;
        let x = (t - intercept_t) as f64 / 1000.0;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(v, sy, cy);
        (sxy, cxy) = kahan_inc(x * v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init);
    }
    sx += cx;
    sy += cy;
    sxy += cxy;
    sx2 += cx2;
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}
