//! The evaluator: upstream's interpreter (`Cardano.Timeseries.Interp`) over a [`Source`].
//!
//! Upstream elaborates a query into a typed core before it runs it (its elaborator picks, for
//! each `+`, `<`, `to_scalar`, ... the operation its operand types call for); this evaluator
//! makes the same choice from the operands' runtime values, so a query upstream accepts gives
//! the same answer. A type error upstream reports before running is reported here when the
//! ill-typed part runs (as `bad_data`, the kind upstream gives elaboration errors); one in a
//! part that never runs (an unused binding, a lambda never applied) is not reported.
//!
//! Bounds: evaluation is at most [`MAX_EVAL_DEPTH`] calls deep (a self-applied function
//! such as `(\x -> x x) (\x -> x x)`, which upstream's type checker rejects, stops there),
//! holds at most [`Config::max_points`] datapoints, and polls [`Config::deadline_exceeded`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use tracerd_promql::{is_stale_nan, ErrorType, Grid, Labels, MatchOp, Matcher};

use crate::ast::{BinOp, Expr, Kind, LabelConstraint, Pos};
use crate::value::{Func, Function, Instant, Timeseries, Value};
use crate::{Config, Error, ErrorKind, Source};

/// Deepest evaluation (nested calls and sub-expressions) a query may reach.
pub const MAX_EVAL_DEPTH: u32 = 1000;

mod builtins;

use builtins::did_you_mean;
pub use builtins::quantile;

/// The variables in scope, innermost first.
pub type Env = Option<Arc<EnvNode>>;

pub struct EnvNode {
    name: String,
    value: Value,
    next: Env,
}

impl Clone for EnvNode {
    fn clone(&self) -> Self {
        EnvNode {
            name: self.name.clone(),
            value: self.value.clone(),
            next: self.next.clone(),
        }
    }
}

fn bind(env: &Env, name: &str, value: Value) -> Env {
    Some(Arc::new(EnvNode {
        name: name.to_string(),
        value,
        next: env.clone(),
    }))
}

fn find<'e>(mut env: &'e Env, name: &str) -> Option<&'e Value> {
    while let Some(n) = env {
        if n.name == name {
            return Some(&n.value);
        }
        env = &n.next;
    }
    None
}

type R<T> = Result<T, Error>;

fn bad(pos: Pos, msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::BadData, format!("{msg}\n  @ {pos}"))
}

fn exec(pos: Pos, msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Execution, format!("{msg}\n  @ {pos}"))
}

fn source_error(e: tracerd_promql::QueryError) -> Error {
    let kind = match e.kind {
        ErrorType::Timeout => ErrorKind::Timeout,
        _ => ErrorKind::Execution,
    };
    Error::new(kind, e.message)
}

/// Labels as the query language sees them: without `__name__`.
fn strip(l: &Labels) -> Arc<Labels> {
    Arc::new(l.iter().filter(|(k, _)| k != "__name__").cloned().collect())
}

/// Points gathered by series, as a range over a function collects them.
type BySeries = BTreeMap<Arc<Labels>, Vec<(u64, Value)>>;

/// The window of the outermost range over a function, and the metrics read for it.
struct Window {
    lo: u64,
    hi: u64,
    series: HashMap<String, Arc<Vec<tracerd_promql::Series>>>,
}

pub(crate) struct Eval<'a> {
    src: &'a dyn Source,
    cfg: &'a Config,
    now: u64,
    names: Option<BTreeSet<String>>,
    depth: u32,
    steps: u64,
    points: usize,
    window: Option<Window>,
}

impl<'a> Eval<'a> {
    pub(crate) fn new(src: &'a dyn Source, cfg: &'a Config, now: u64) -> Self {
        Eval {
            src,
            cfg,
            now,
            names: None,
            depth: 0,
            steps: 0,
            points: 0,
            window: None,
        }
    }

    fn names(&mut self) -> R<&BTreeSet<String>> {
        if self.names.is_none() {
            let n = self.src.metric_names().map_err(source_error)?;
            self.names = Some(n.into_iter().collect());
        }
        Ok(self.names.get_or_insert_default())
    }

    fn charge(&mut self, n: usize) -> R<()> {
        self.points += n;
        if self.points > self.cfg.max_points {
            return Err(Error::new(
                ErrorKind::Execution,
                format!(
                    "query would hold more than {} datapoints (narrow its ranges or use a coarser step)",
                    self.cfg.max_points
                ),
            ));
        }
        Ok(())
    }

    fn tick(&mut self) -> R<()> {
        self.steps += 1;
        if self.steps % 1024 == 0 {
            if let Some(d) = &self.cfg.deadline_exceeded {
                if d() {
                    return Err(Error::new(ErrorKind::Timeout, "query timed out"));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn eval(&mut self, e: &Expr, env: &Env) -> R<Value> {
        self.depth += 1;
        if self.depth > MAX_EVAL_DEPTH {
            self.depth -= 1;
            return Err(exec(
                e.pos,
                format!("evaluation nested more than {MAX_EVAL_DEPTH} calls deep (a function applied to itself?)"),
            ));
        }
        let r = self.tick().and_then(|()| self.eval_inner(e, env));
        self.depth -= 1;
        r
    }

    fn eval_inner(&mut self, e: &Expr, env: &Env) -> R<Value> {
        let pos = e.pos;
        Ok(match &e.kind {
            Kind::Number(x) => Value::Scalar(*x),
            Kind::Str(s) => Value::Text(s.clone()),
            Kind::Duration(d) => Value::Duration(*d),
            Kind::Now => Value::Timestamp(self.now),
            Kind::Epoch => Value::Timestamp(0),
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Unit => Value::Unit,
            Kind::Pair(a, b) => {
                Value::Pair(Box::new(self.eval(a, env)?), Box::new(self.eval(b, env)?))
            }
            Kind::Var(x) => self.variable(pos, x, env)?,
            Kind::Let(x, rhs, body) => {
                let v = self.eval(rhs, env)?;
                self.eval(body, &bind(env, x, v))?
            }
            Kind::Lambda(x, body) => Value::Function(Function(Func::Closure {
                param: x.clone(),
                body: body.clone(),
                env: env.clone(),
            })),
            Kind::App(f, a) => {
                let f = self.eval(f, env)?;
                let a = self.eval(a, env)?;
                self.apply(pos, &f, a)?
            }
            Kind::Metrics => {
                let names = self.names()?.iter().cloned().map(Value::Text).collect();
                Value::List(names)
            }
            Kind::Earliest(_) | Kind::Latest(_) => {
                let which = if matches!(e.kind, Kind::Earliest(_)) {
                    "earliest"
                } else {
                    "latest"
                };
                return Err(bad(
                    pos,
                    format!("`{which}` is parsed but has no meaning (cardano-timeseries-io cannot elaborate it either)"),
                ));
            }
            Kind::Not(a) => Value::Bool(!self.boolean(a, env, "!")?),
            Kind::Bin(BinOp::And, a, b) => {
                let (x, y) = (self.boolean(a, env, "&&")?, self.boolean(b, env, "&&")?);
                Value::Bool(x && y)
            }
            Kind::Bin(BinOp::Or, a, b) => {
                let (x, y) = (self.boolean(a, env, "||")?, self.boolean(b, env, "||")?);
                Value::Bool(x || y)
            }
            Kind::Bin(op, a, b) => {
                let l = self.eval(a, env)?;
                let r = self.eval(b, env)?;
                match op {
                    BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div => {
                        self.arith(pos, *op, l, r)?
                    }
                    _ => self.relation(pos, *op, l, r)?,
                }
            }
            Kind::Range(s, a, b, step) => {
                let f = self.eval(s, env)?;
                let a = self.timestamp(a, env, "a range's start")?;
                let b = self.timestamp(b, env, "a range's end")?;
                let step = match step {
                    Some(s) => match self.eval(s, env)? {
                        Value::Duration(d) => d,
                        v => {
                            return Err(bad(
                                s.pos,
                                format!(
                                    "a range's step must be a Duration, not a {}",
                                    v.type_name()
                                ),
                            ))
                        }
                    },
                    None => self.cfg.default_step_ms,
                };
                self.range(pos, &f, a, b, step)?
            }
            Kind::FilterByLabel(cs, v) => {
                let v = self.instant_vector(v, env, "a label filter")?;
                Value::InstantVector(v.into_iter().filter(|i| admits(cs, &i.labels)).collect())
            }
            Kind::QuantileBy(ls, k, v) => {
                let k = self.scalar(k, env, "quantile_by")?;
                let v = self.instant_vector(v, env, "quantile_by")?;
                let v = self.scalars(pos, v, "quantile_by")?;
                let mut groups: BTreeMap<Labels, Vec<f64>> = BTreeMap::new();
                for (l, _, x) in v {
                    let key: Labels = l.iter().filter(|(n, _)| ls.contains(n)).cloned().collect();
                    groups.entry(key).or_default().push(x);
                }
                let mut out = Vec::new();
                for (l, mut xs) in groups {
                    let q = quantile(k, &mut xs).map_err(|m| exec(pos, m))?;
                    out.push(Instant {
                        labels: Arc::new(l),
                        t: self.now,
                        v: Value::Scalar(q),
                    });
                }
                Value::InstantVector(out)
            }
            Kind::Builtin(b, args) => self.builtin(pos, *b, args, env)?,
        })
    }

    fn variable(&mut self, pos: Pos, x: &str, env: &Env) -> R<Value> {
        if let Some(v) = find(env, x) {
            return Ok(v.clone());
        }
        if self.names()?.contains(x) {
            return Ok(Value::Function(Function(Func::Metric(x.to_string()))));
        }
        let mut scope = Vec::new();
        let mut n = env;
        while let Some(node) = n {
            scope.push(node.name.clone());
            n = &node.next;
        }
        scope.reverse();
        let names = self.names()?;
        Err(bad(
            pos,
            format!("Undefined name: {x}{}", did_you_mean(x, &scope, names)),
        ))
    }

    fn apply(&mut self, pos: Pos, f: &Value, arg: Value) -> R<Value> {
        let Value::Function(Function(f)) = f else {
            return Err(bad(
                pos,
                format!(
                    "a {} is applied to an argument, but only a function can be",
                    f.type_name()
                ),
            ));
        };
        match f {
            Func::Closure { param, body, env } => {
                let env = bind(env, param, arg);
                self.eval(body, &env)
            }
            Func::Metric(name) => match arg {
                Value::Timestamp(t) => Ok(Value::InstantVector(self.lookup(name, t)?)),
                v => Err(bad(
                    pos,
                    format!("metric {name} is applied to a {}; it takes a Timestamp (as in `{name} now`)", v.type_name()),
                )),
            },
        }
    }

    /// The latest sample of each series of `name` in `[t - staleness, t]`, at time `t`.
    fn lookup(&mut self, name: &str, t: u64) -> R<Vec<Instant>> {
        let lo = t.saturating_sub(self.cfg.staleness_ms);
        // Inside a range over a function, every lookup of a metric reads the range's window,
        // loaded once, instead of the store once per step.
        let cached = match &self.window {
            Some(w) if lo >= w.lo && t <= w.hi => {
                if !w.series.contains_key(name) {
                    let (wlo, whi) = (w.lo, w.hi);
                    let loaded = self
                        .src
                        .select(&[name_matcher(name)], to_i64(wlo), to_i64(whi))
                        .map_err(source_error)?;
                    if let Some(w) = &mut self.window {
                        w.series.insert(name.to_string(), Arc::new(loaded));
                    }
                }
                self.window
                    .as_ref()
                    .and_then(|w| w.series.get(name).cloned())
            }
            _ => None,
        };
        let series = match cached {
            Some(s) => s,
            None => Arc::new(
                self.src
                    .select_latest(&[name_matcher(name)], &self.grid(t, t, 0))
                    .map_err(source_error)?,
            ),
        };
        let mut out = Vec::with_capacity(series.len());
        for s in series.iter() {
            let upto = s.samples.partition_point(|p| p.t <= to_i64(t));
            let Some(last) = upto.checked_sub(1).map(|i| s.samples[i]) else {
                continue;
            };
            if is_stale_nan(last.v) || last.t < to_i64(lo) {
                continue;
            }
            out.push(Instant {
                labels: strip(&s.labels),
                t,
                v: Value::Scalar(last.v),
            });
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        self.charge(out.len())?;
        Ok(out)
    }

    /// The store's grid for lookups at `a`, `a + step`, ... ≤ `b`. Its window `(t - lookback,
    /// t]` is one millisecond longer than the staleness so that a sample exactly
    /// `staleness_ms` old counts, as upstream's library counts it.
    fn grid(&self, a: u64, b: u64, step: u64) -> Grid {
        Grid {
            start: to_i64(a),
            end: to_i64(b),
            step: i64::try_from(step).unwrap_or(i64::MAX),
            lookback: to_i64(self.cfg.staleness_ms).saturating_add(1),
        }
    }

    fn range(&mut self, pos: Pos, f: &Value, a: u64, b: u64, step: u64) -> R<Value> {
        if step == 0 {
            return Err(exec(pos, "a range's step must be longer than 0ms"));
        }
        let steps = if b < a { 0 } else { (b - a) / step + 1 };
        if steps > self.cfg.max_points as u64 {
            return Err(exec(
                pos,
                format!(
                    "range of {steps} steps exceeds the limit of {} datapoints",
                    self.cfg.max_points
                ),
            ));
        }
        let times = (0..steps).map(|i| a + i * step);
        let mut out: Vec<Timeseries> = Vec::new();
        match f {
            Value::Function(Function(Func::Metric(name))) => {
                // Only the samples the steps read (one per step at most), not the window.
                let grid = self.grid(a, b, step);
                let series = self
                    .src
                    .select_latest(&[name_matcher(name)], &grid)
                    .map_err(source_error)?;
                for s in series {
                    let mut points = Vec::new();
                    let mut j = 0;
                    for t in times.clone() {
                        while j < s.samples.len() && s.samples[j].t <= to_i64(t) {
                            j += 1;
                        }
                        if j == 0 {
                            continue;
                        }
                        let p = s.samples[j - 1];
                        if p.t >= to_i64(t.saturating_sub(self.cfg.staleness_ms)) && !is_stale_nan(p.v) {
                            points.push((t, Value::Scalar(p.v)));
                        }
                    }
                    self.tick()?;
                    if !points.is_empty() {
                        self.charge(points.len())?;
                        out.push(Timeseries {
                            labels: strip(&s.labels),
                            points,
                        });
                    }
                }
                out.sort_by(|x, y| y.labels.cmp(&x.labels));
            }
            Value::Function(_) => {
                let outermost = self.window.is_none();
                if outermost {
                    self.window = Some(Window {
                        lo: a.saturating_sub(self.cfg.staleness_ms),
                        hi: b,
                        series: HashMap::new(),
                    });
                }
                let sampled = self.sample_steps(pos, f, times);
                if outermost {
                    self.window = None;
                }
                let by = sampled?;
                // Upstream's `transpose` lists the series in descending label order.
                out = by
                    .into_iter()
                    .rev()
                    .map(|(labels, points)| Timeseries { labels, points })
                    .collect();
            }
            v => {
                return Err(bad(
                    pos,
                    format!("a range is taken of a {}; it needs a metric or a function from a Timestamp to an InstantVector", v.type_name()),
                ))
            }
        }
        Ok(Value::RangeVector(out))
    }

    /// `f` at every step, gathered by series.
    fn sample_steps(
        &mut self,
        pos: Pos,
        f: &Value,
        times: impl Iterator<Item = u64>,
    ) -> R<BySeries> {
        let mut by = BySeries::new();
        for t in times {
            let Value::InstantVector(v) = self.apply(pos, f, Value::Timestamp(t))? else {
                return Err(bad(pos, "a range's function must return an InstantVector"));
            };
            for i in v {
                by.entry(i.labels).or_default().push((i.t, i.v));
            }
        }
        Ok(by)
    }

    fn arith(&mut self, pos: Pos, op: BinOp, l: Value, r: Value) -> R<Value> {
        let f = |a: f64, b: f64| match op {
            BinOp::Add => a + b,
            BinOp::Sub => a - b,
            BinOp::Mul => a * b,
            _ => a / b,
        };
        let overflow = || {
            exec(
                pos,
                "timestamp or duration out of range (before the epoch or past 2^64 ms)",
            )
        };
        Ok(match (l, r) {
            (Value::Scalar(a), Value::Scalar(b)) => Value::Scalar(f(a, b)),
            (Value::Timestamp(t), Value::Duration(d))
            | (Value::Duration(d), Value::Timestamp(t))
                if op == BinOp::Add =>
            {
                Value::Timestamp(t.checked_add(d).ok_or_else(overflow)?)
            }
            (Value::Timestamp(t), Value::Duration(d)) if op == BinOp::Sub => {
                Value::Timestamp(t.checked_sub(d).ok_or_else(overflow)?)
            }
            (Value::Duration(a), Value::Duration(b)) if op == BinOp::Add => {
                Value::Duration(a.checked_add(b).ok_or_else(overflow)?)
            }
            (Value::InstantVector(v), Value::Scalar(k)) => {
                self.map_iv(pos, v, |x| f(x, k), op.symbol())?
            }
            (Value::Scalar(k), Value::InstantVector(v)) => {
                self.map_iv(pos, v, |x| f(k, x), op.symbol())?
            }
            (Value::RangeVector(v), Value::Scalar(k)) => {
                self.map_rv(pos, v, |x| f(x, k), op.symbol())?
            }
            (Value::Scalar(k), Value::RangeVector(v)) => {
                self.map_rv(pos, v, |x| f(k, x), op.symbol())?
            }
            (l, r) => {
                return Err(bad(
                    pos,
                    format!(
                        "`{}` is not defined on {} and {}",
                        op.symbol(),
                        l.type_name(),
                        r.type_name()
                    ),
                ))
            }
        })
    }

    fn map_iv(
        &mut self,
        pos: Pos,
        v: Vec<Instant>,
        f: impl Fn(f64) -> f64,
        what: &str,
    ) -> R<Value> {
        let mut out = Vec::with_capacity(v.len());
        for i in v {
            let Value::Scalar(x) = i.v else {
                return Err(bad(
                    pos,
                    format!(
                        "`{what}` needs an InstantVector of Scalars, not of {}",
                        i.v.type_name()
                    ),
                ));
            };
            out.push(Instant {
                v: Value::Scalar(f(x)),
                ..i
            });
        }
        Ok(Value::InstantVector(out))
    }

    fn map_rv(
        &mut self,
        pos: Pos,
        v: Vec<Timeseries>,
        f: impl Fn(f64) -> f64,
        what: &str,
    ) -> R<Value> {
        let mut out = Vec::with_capacity(v.len());
        for s in v {
            let mut points = Vec::with_capacity(s.points.len());
            for (t, x) in s.points {
                let Value::Scalar(x) = x else {
                    return Err(bad(
                        pos,
                        format!(
                            "`{what}` needs a RangeVector of Scalars, not of {}",
                            x.type_name()
                        ),
                    ));
                };
                points.push((t, Value::Scalar(f(x))));
            }
            out.push(Timeseries {
                labels: s.labels,
                points,
            });
        }
        Ok(Value::RangeVector(out))
    }

    fn relation(&mut self, pos: Pos, op: BinOp, l: Value, r: Value) -> R<Value> {
        fn holds<T: PartialOrd>(op: BinOp, a: T, b: T) -> bool {
            match op {
                BinOp::Eq => a == b,
                BinOp::NotEq => a != b,
                BinOp::Lt => a < b,
                BinOp::Lte => a <= b,
                BinOp::Gt => a > b,
                _ => a >= b,
            }
        }
        let filter = |v: Vec<Instant>, keep: &dyn Fn(f64) -> bool| -> R<Value> {
            let mut out = Vec::new();
            for i in v {
                let Value::Scalar(x) = i.v else {
                    return Err(bad(
                        pos,
                        format!(
                            "`{}` needs an InstantVector of Scalars, not of {}",
                            op.symbol(),
                            i.v.type_name()
                        ),
                    ));
                };
                if keep(x) {
                    out.push(i);
                }
            }
            Ok(Value::InstantVector(out))
        };
        match (l, r) {
            (Value::Scalar(a), Value::Scalar(b)) => Ok(Value::Bool(holds(op, a, b))),
            (Value::Bool(a), Value::Bool(b)) => Ok(Value::Bool(holds(op, a, b))),
            (Value::InstantVector(v), Value::Scalar(k)) => filter(v, &|x| holds(op, x, k)),
            (Value::Scalar(k), Value::InstantVector(v)) => filter(v, &|x| holds(op, k, x)),
            (l, r) => Err(bad(
                pos,
                format!(
                    "`{}` is not defined on {} and {}",
                    op.symbol(),
                    l.type_name(),
                    r.type_name()
                ),
            )),
        }
    }

    // ---- typed sub-evaluations ----

    fn boolean(&mut self, e: &Expr, env: &Env, what: &str) -> R<bool> {
        match self.eval(e, env)? {
            Value::Bool(b) => Ok(b),
            v => Err(bad(
                e.pos,
                format!("`{what}` needs a Bool, not a {}", v.type_name()),
            )),
        }
    }

    fn scalar(&mut self, e: &Expr, env: &Env, what: &str) -> R<f64> {
        match self.eval(e, env)? {
            Value::Scalar(x) => Ok(x),
            v => Err(bad(
                e.pos,
                format!("`{what}` needs a Scalar, not a {}", v.type_name()),
            )),
        }
    }

    fn timestamp(&mut self, e: &Expr, env: &Env, what: &str) -> R<u64> {
        match self.eval(e, env)? {
            Value::Timestamp(t) => Ok(t),
            v => Err(bad(
                e.pos,
                format!("{what} must be a Timestamp, not a {}", v.type_name()),
            )),
        }
    }

    fn instant_vector(&mut self, e: &Expr, env: &Env, what: &str) -> R<Vec<Instant>> {
        match self.eval(e, env)? {
            Value::InstantVector(v) => Ok(v),
            v => Err(bad(
                e.pos,
                format!("`{what}` needs an InstantVector, not a {}", v.type_name()),
            )),
        }
    }

    fn scalars(&self, pos: Pos, v: Vec<Instant>, what: &str) -> R<Vec<(Arc<Labels>, u64, f64)>> {
        v.into_iter()
            .map(|i| match i.v {
                Value::Scalar(x) => Ok((i.labels, i.t, x)),
                o => Err(bad(
                    pos,
                    format!(
                        "`{what}` needs an InstantVector of Scalars, not of {}",
                        o.type_name()
                    ),
                )),
            })
            .collect()
    }

    #[allow(clippy::type_complexity)]
    fn range_scalars(
        &mut self,
        pos: Pos,
        e: &Expr,
        env: &Env,
        what: &str,
    ) -> R<Vec<(Arc<Labels>, Vec<(u64, f64)>)>> {
        let v = match self.eval(e, env)? {
            Value::RangeVector(v) => v,
            v => {
                return Err(bad(
                    e.pos,
                    format!(
                        "`{what}` needs a RangeVector (as in `m[now - 5m; now]`), not a {}",
                        v.type_name()
                    ),
                ))
            }
        };
        v.into_iter()
            .map(|s| {
                let pts = s
                    .points
                    .into_iter()
                    .map(|(t, x)| match x {
                        Value::Scalar(x) => Ok((t, x)),
                        o => Err(bad(
                            pos,
                            format!(
                                "`{what}` needs a RangeVector of Scalars, not of {}",
                                o.type_name()
                            ),
                        )),
                    })
                    .collect::<R<Vec<_>>>()?;
                Ok((s.labels, pts))
            })
            .collect()
    }
}

fn to_i64(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn name_matcher(name: &str) -> Matcher {
    Matcher {
        name: "__name__".into(),
        op: MatchOp::Equal,
        value: name.into(),
    }
}

/// Upstream's label filter: every `=` pair present, no `!=` pair present.
fn admits(cs: &[LabelConstraint], labels: &Labels) -> bool {
    cs.iter().all(|c| {
        let has = labels.iter().any(|(k, v)| *k == c.label && *v == c.value);
        has == c.equal
    })
}
