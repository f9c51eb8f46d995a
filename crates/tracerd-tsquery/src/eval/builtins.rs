//! The builtins (`fst` … `to_scalar`) and the helpers of their semantics: upstream's quantile
//! estimator and its "did you mean" suggestion.

use std::collections::{BTreeMap, BTreeSet};

use tracerd_promql::{kahan_sum, mean, Labels};

use super::{bad, exec, Env, Eval, R};
use crate::ast::{Builtin, Expr, Pos};
use crate::value::{Instant, Value};

impl Eval<'_> {
    pub(super) fn builtin(&mut self, pos: Pos, b: Builtin, args: &[Expr], env: &Env) -> R<Value> {
        let name = b.name();
        let arg = |i: usize| &args[i];
        Ok(match b {
            Builtin::Fst | Builtin::Snd => match self.eval(arg(0), env)? {
                Value::Pair(a, c) => *if b == Builtin::Fst { a } else { c },
                v => {
                    return Err(bad(
                        pos,
                        format!("`{name}` needs a pair, not a {}", v.type_name()),
                    ))
                }
            },
            Builtin::Min | Builtin::Max | Builtin::Avg => {
                let v = self.instant_vector(arg(0), env, name)?;
                let xs: Vec<f64> = self
                    .scalars(pos, v, name)?
                    .into_iter()
                    .map(|x| x.2)
                    .collect();
                if xs.is_empty() {
                    return Err(exec(pos, format!("{name}: empty instant vector")));
                }
                // Haskell's `min`/`max` on Double, folded as statistics' `minMax` does.
                let hmin = |a: f64, b: f64| if a <= b { a } else { b };
                let hmax = |a: f64, b: f64| if a <= b { b } else { a };
                Value::Scalar(match b {
                    Builtin::Min => xs.iter().fold(f64::INFINITY, |a, &x| hmin(a, x)),
                    Builtin::Max => xs.iter().fold(f64::NEG_INFINITY, |a, &x| hmax(a, x)),
                    _ => mean(&xs),
                })
            }
            Builtin::Filter | Builtin::Map => {
                let f = self.eval(arg(0), env)?;
                let v = self.instant_vector(arg(1), env, name)?;
                let mut out = Vec::with_capacity(v.len());
                for i in v {
                    let r = self.apply(pos, &f, i.v.clone())?;
                    if b == Builtin::Map {
                        out.push(Instant { v: r, ..i });
                    } else {
                        match r {
                            Value::Bool(true) => out.push(i),
                            Value::Bool(false) => {}
                            r => {
                                return Err(bad(
                                    pos,
                                    format!(
                                        "filter's function must return a Bool, not a {}",
                                        r.type_name()
                                    ),
                                ))
                            }
                        }
                    }
                }
                Value::InstantVector(out)
            }
            Builtin::Join => {
                let u = self.instant_vector(arg(0), env, name)?;
                let v = self.instant_vector(arg(1), env, name)?;
                let by: BTreeMap<&Labels, &Value> =
                    v.iter().map(|i| (i.labels.as_ref(), &i.v)).collect();
                let mut out = Vec::with_capacity(u.len());
                for i in &u {
                    let Some(other) = by.get(i.labels.as_ref()) else {
                        return Err(exec(pos, format!("join: no series of the second vector has the labels {:?} of the first's", i.labels)));
                    };
                    out.push(Instant {
                        labels: i.labels.clone(),
                        t: i.t,
                        v: Value::Pair(Box::new(i.v.clone()), Box::new((*other).clone())),
                    });
                }
                Value::InstantVector(out)
            }
            Builtin::Unless => {
                let u = self.instant_vector(arg(0), env, name)?;
                let v = self.instant_vector(arg(1), env, name)?;
                let drop: BTreeSet<&Labels> = v.iter().map(|i| i.labels.as_ref()).collect();
                Value::InstantVector(
                    u.into_iter()
                        .filter(|i| !drop.contains(i.labels.as_ref()))
                        .collect(),
                )
            }
            Builtin::Abs => Value::Scalar(self.scalar(arg(0), env, name)?.abs()),
            // Haskell's `round`: halves to even.
            Builtin::Round => Value::Scalar(self.scalar(arg(0), env, name)?.round_ties_even()),
            Builtin::ToScalar => match self.eval(arg(0), env)? {
                Value::Scalar(x) => Value::Scalar(x),
                Value::Bool(x) => Value::Scalar(if x { 1.0 } else { 0.0 }),
                Value::Duration(d) => Value::Scalar(d as f64),
                Value::Timestamp(t) => Value::Scalar(t as f64),
                v => {
                    return Err(bad(
                        pos,
                        format!(
                            "to_scalar can't be applied to an expression of type {}",
                            v.type_name()
                        ),
                    ))
                }
            },
            Builtin::Increase | Builtin::Rate | Builtin::AvgOverTime | Builtin::SumOverTime => {
                let r = self.range_scalars(pos, arg(0), env, name)?;
                let mut out = Vec::with_capacity(r.len());
                for (labels, pts) in r {
                    let (Some(&(t0, v0)), Some(&(t1, v1))) = (pts.first(), pts.last()) else {
                        continue;
                    };
                    let (t, v) = match b {
                        Builtin::Increase => (t1, v1 - v0),
                        Builtin::Rate => {
                            if t1 <= t0 {
                                return Err(exec(pos, "rate: single-point timeseries has undefined rate (zero time span)"));
                            }
                            (t1, (v1 - v0) / (t1 - t0) as f64)
                        }
                        Builtin::AvgOverTime => {
                            let xs: Vec<f64> = pts.iter().map(|p| p.1).collect();
                            (self.now, mean(&xs))
                        }
                        _ => (self.now, kahan_sum(pts.iter().map(|p| p.1))),
                    };
                    out.push(Instant {
                        labels,
                        t,
                        v: Value::Scalar(v),
                    });
                }
                Value::InstantVector(out)
            }
            Builtin::QuantileOverTime => {
                let k = self.scalar(arg(0), env, name)?;
                let r = self.range_scalars(pos, arg(1), env, name)?;
                let mut out = Vec::with_capacity(r.len());
                for (labels, pts) in r {
                    let Some(&(t, _)) = pts.last() else { continue };
                    let mut xs: Vec<f64> = pts.iter().map(|p| p.1).collect();
                    let q = quantile(k, &mut xs).map_err(|m| exec(pos, m))?;
                    out.push(Instant {
                        labels,
                        t,
                        v: Value::Scalar(q),
                    });
                }
                Value::InstantVector(out)
            }
        })
    }
}

/// statistics' `quantile cadpw (floor (k * 100)) 100`, as upstream calls it: the quantile is
/// first floored to a whole percent, then estimated with the continuous `cadpw` parameters
/// (Hyndman–Fan type 4), not Prometheus's linear interpolation (type 7).
pub fn quantile(k: f64, xs: &mut [f64]) -> Result<f64, String> {
    let q = (k * 100.0).floor();
    if !(0.0..=100.0).contains(&q) {
        return Err(format!("quantile {k} is outside [0, 1]"));
    }
    if xs.iter().any(|x| x.is_nan()) {
        return Err("quantile: sample contains NaNs".into());
    }
    if xs.is_empty() {
        return Err("quantile: empty sample".into());
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    let pk = q / 100.0 * n as f64;
    let j = pk.trunc();
    let g = pk - j;
    let item = |i: f64| xs[(i.max(0.0) as usize).min(n - 1)];
    Ok((1.0 - g) * item(j - 1.0) + g * item(j))
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Upstream's suggestion: names within a third of the name's length (at least 1), closest
/// first, at most five.
pub(super) fn did_you_mean(x: &str, scope: &[String], metrics: &BTreeSet<String>) -> String {
    let threshold = (x.chars().count() / 3).max(1);
    let mut seen = BTreeSet::new();
    let mut close: Vec<(usize, &str)> = Vec::new();
    for c in scope
        .iter()
        .map(String::as_str)
        .chain(metrics.iter().map(String::as_str))
    {
        if !seen.insert(c) {
            continue;
        }
        // Cheap bound first: lengths that differ by more than the threshold cannot be close.
        if c.chars().count().abs_diff(x.chars().count()) > threshold {
            continue;
        }
        let d = levenshtein(x, c);
        if d <= threshold {
            close.push((d, c));
        }
    }
    close.sort_by_key(|(d, _)| *d);
    if close.is_empty() {
        return String::new();
    }
    let list: Vec<&str> = close.iter().take(5).map(|(_, c)| *c).collect();
    format!("\n  Did you mean: {}", list.join(", "))
}
