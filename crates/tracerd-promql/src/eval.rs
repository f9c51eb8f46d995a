//! The evaluator core: selector pre-loading, instant evaluation at one timestamp, the range
//! loop, subqueries and the `@`/`offset` modifiers. Operators, aggregations and functions
//! live in their own modules.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use promql_parser::label::{MatchOp as PMatchOp, Matchers as PMatchers};
use promql_parser::parser::{self as p, Expr};

use std::sync::Arc;

use crate::model::{
    is_stale_nan, Grid, Labels, MatchOp, Matcher, Options, QueryError, Queryable, Sample,
};
use crate::value::{Elem, RangeSeries, Val, METRIC_NAME};

pub(crate) mod memo;

/// Default step of a subquery without one in an instant query (Prometheus: the global
/// evaluation interval, 1 minute by default).
const DEFAULT_SUBQUERY_STEP_MS: i64 = 60_000;

pub(crate) fn dur_ms(d: &Duration) -> i64 {
    d.as_millis() as i64
}

fn offset_ms(o: &Option<p::Offset>) -> i64 {
    match o {
        None => 0,
        Some(p::Offset::Pos(d)) => dur_ms(d),
        Some(p::Offset::Neg(d)) => -dur_ms(d),
    }
}

fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// Convert the parser's matchers (plus the metric name) into the store's matchers.
/// One list per `or` alternative.
fn to_matchers(name: &Option<String>, ms: &PMatchers) -> Vec<Vec<Matcher>> {
    let conv = |m: &promql_parser::label::Matcher| Matcher {
        name: m.name.clone(),
        op: match m.op {
            PMatchOp::Equal => MatchOp::Equal,
            PMatchOp::NotEqual => MatchOp::NotEqual,
            PMatchOp::Re(_) => MatchOp::Re,
            PMatchOp::NotRe(_) => MatchOp::NotRe,
        },
        value: m.value.clone(),
    };
    let mut alts: Vec<Vec<Matcher>> = if ms.or_matchers.is_empty() {
        vec![ms.matchers.iter().map(conv).collect()]
    } else {
        ms.or_matchers
            .iter()
            .map(|alt| alt.iter().map(conv).collect())
            .collect()
    };
    if let Some(n) = name {
        for alt in alts.iter_mut() {
            if !alt
                .iter()
                .any(|m| m.name == METRIC_NAME && m.op == MatchOp::Equal)
            {
                alt.push(Matcher {
                    name: METRIC_NAME.into(),
                    op: MatchOp::Equal,
                    value: n.clone(),
                });
            }
        }
    }
    alts
}

/// The equality matchers of a selector, as `absent()` turns them into labels.
pub(crate) fn absent_labels(vs: &p::VectorSelector) -> crate::model::Labels {
    let mut seen: HashMap<String, Option<String>> = HashMap::new();
    for m in &vs.matchers.matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        if let PMatchOp::Equal = m.op {
            seen.entry(m.name.clone())
                .and_modify(|e| *e = None)
                .or_insert_with(|| Some(m.value.clone()));
        } else {
            // A label matched another way too cannot be derived.
            seen.insert(m.name.clone(), None);
        }
    }
    let mut out: crate::model::Labels = seen
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    out.retain(|(_, v)| !v.is_empty());
    out.sort();
    out
}

pub(crate) struct Evaluator<'a> {
    q: &'a dyn Queryable,
    pub(crate) opts: &'a Options,
    /// The query's own start and end (for `@ start()` / `@ end()`), and its step.
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) interval: i64,
    /// Whether the tree is evaluated at more than one time (a range query, a subquery):
    /// only then do the per-query memos pay for themselves.
    pub(crate) repeats: bool,
    /// Per selector node: every series it matches over the whole query, loaded once.
    cache: memo::AddrMap<Entry>,
    windows: memo::AddrMap<Planned>,
    samples_loaded: usize,
    ticks: u32,
    /// Shared label sets without `__name__`, by the address of the shared set they came
    /// from (which the entry keeps alive, so the address is not reused).
    unnamed: memo::AddrMap<(Arc<Labels>, Arc<Labels>)>,
    /// Per aggregation node: the group of each shared label set, computed once a query.
    groups: memo::AddrMap<memo::GroupMemo>,
    /// A selection made outside the plan, for one step.
    scratch: Option<Entry>,
    /// Ids of distinct result label sets, and a per-step mark of the ids seen.
    interned: memo::Interner,
    seen: Vec<u32>,
    stamp: u32,
}

/// A selected series: labels shared by every step that reads it.
type Loaded = (Arc<Labels>, Vec<Sample>);

/// A selector's loaded series, the grid it was loaded for (instant selectors: only the
/// samples that grid reads), and per series the cursors of the last step (`lo`, `hi`
/// sample indexes), so the next, later step moves forward instead of searching again.
struct Entry {
    series: Vec<Loaded>,
    grid: Option<Grid>,
    pos: Vec<(usize, usize)>,
}

/// What the plan found a selector reads: its window and, for an instant selector
/// evaluated on one regular grid, that grid.
#[derive(Clone, Copy)]
struct Planned {
    mint: i64,
    maxt: i64,
    grid: Option<Grid>,
}

/// `samples.partition_point(|x| x.t <= t)`, starting from `hint`, the answer for an
/// earlier, nearby `t`: a few steps forward when `t` moved forward a little (the range
/// loop's case), a binary search otherwise.
fn seek(samples: &[Sample], hint: usize, t: i64) -> usize {
    let h = hint.min(samples.len());
    if h > 0 && samples[h - 1].t > t {
        return samples[..h].partition_point(|x| x.t <= t);
    }
    let lim = (h + 32).min(samples.len());
    for (i, x) in samples[h..lim].iter().enumerate() {
        if x.t > t {
            return h + i;
        }
    }
    lim + samples[lim..].partition_point(|x| x.t <= t)
}

fn key<T>(x: &T) -> usize {
    x as *const T as usize
}

impl<'a> Evaluator<'a> {
    pub(crate) fn new(
        q: &'a dyn Queryable,
        opts: &'a Options,
        start: i64,
        end: i64,
        interval: i64,
    ) -> Self {
        Evaluator {
            q,
            opts,
            start,
            end,
            interval,
            repeats: start != end,
            cache: memo::AddrMap::default(),
            windows: memo::AddrMap::default(),
            samples_loaded: 0,
            ticks: 0,
            unnamed: memo::AddrMap::default(),
            groups: memo::AddrMap::default(),
            scratch: None,
            interned: memo::Interner::default(),
            seen: Vec::new(),
            stamp: 0,
        }
    }

    pub(crate) fn check_deadline(&mut self) -> Result<(), QueryError> {
        self.ticks = self.ticks.wrapping_add(1);
        if let Some(f) = &self.opts.deadline_exceeded {
            if f() {
                return Err(QueryError::timeout(
                    "query timed out in expression evaluation",
                ));
            }
        }
        Ok(())
    }

    fn at_ms(&self, at: &Option<p::AtModifier>) -> Option<i64> {
        match at {
            None => None,
            Some(p::AtModifier::Start) => Some(self.start),
            Some(p::AtModifier::End) => Some(self.end),
            Some(p::AtModifier::At(t)) => Some(system_time_ms(t)),
        }
    }

    /// Walk the tree once, noting for each selector the time window it will read when
    /// evaluated at `lo`, `lo + step`, ... up to `hi` (`step` 0: at `lo` only).
    fn plan(&mut self, e: &Expr, lo: i64, hi: i64, step: i64) {
        match e {
            Expr::VectorSelector(vs) => {
                let (a, b) = self.window(&vs.at, &vs.offset, lo, hi);
                let lb = self.opts.lookback_delta_ms;
                let grid = Grid {
                    start: a,
                    end: b,
                    step: if a == b { 0 } else { step },
                    lookback: lb,
                };
                self.note(key(vs), a - lb, b, Some(grid));
            }
            Expr::MatrixSelector(ms) => {
                let (a, b) = self.window(&ms.vs.at, &ms.vs.offset, lo, hi);
                self.note(key(&ms.vs), a - dur_ms(&ms.range), b, None);
            }
            Expr::Subquery(sq) => {
                self.repeats = true;
                let (a, b) = self.window(&sq.at, &sq.offset, lo, hi);
                // The inner steps: multiples of the subquery's step in (a - range, b].
                let s = self.subquery_step(sq);
                let first = first_multiple_after(a - dur_ms(&sq.range), s);
                if first <= b {
                    self.plan(&sq.expr, first, b, s);
                }
            }
            Expr::Aggregate(a) => {
                if let Some(pr) = &a.param {
                    self.plan(pr, lo, hi, step);
                }
                self.plan(&a.expr, lo, hi, step);
            }
            Expr::Unary(u) => self.plan(&u.expr, lo, hi, step),
            Expr::Binary(b) => {
                self.plan(&b.lhs, lo, hi, step);
                self.plan(&b.rhs, lo, hi, step);
            }
            Expr::Paren(pe) => self.plan(&pe.expr, lo, hi, step),
            Expr::Call(c) => {
                for a in &c.args.args {
                    self.plan(a, lo, hi, step);
                }
            }
            _ => {}
        }
    }

    fn subquery_step(&self, sq: &p::SubqueryExpr) -> i64 {
        match &sq.step {
            Some(s) if dur_ms(s) > 0 => dur_ms(s),
            _ if self.interval > 0 => self.interval,
            _ => DEFAULT_SUBQUERY_STEP_MS,
        }
    }

    fn window(
        &self,
        at: &Option<p::AtModifier>,
        off: &Option<p::Offset>,
        lo: i64,
        hi: i64,
    ) -> (i64, i64) {
        let o = offset_ms(off);
        match self.at_ms(at) {
            Some(t) => (t - o, t - o),
            None => (lo - o, hi - o),
        }
    }

    fn note(&mut self, k: usize, mint: i64, maxt: i64, grid: Option<Grid>) {
        self.windows
            .entry(k)
            .and_modify(|w| {
                // Planned twice (not expected of a tree): the union window, no grid.
                w.mint = w.mint.min(mint);
                w.maxt = w.maxt.max(maxt);
                w.grid = None;
            })
            .or_insert(Planned { mint, maxt, grid });
    }

    /// Plan and load every selector of `e` for evaluation at `lo`, `lo + step`, ... `hi`.
    pub(crate) fn prepare(
        &mut self,
        e: &Expr,
        lo: i64,
        hi: i64,
        step: i64,
    ) -> Result<(), QueryError> {
        self.plan(e, lo, hi, step);
        let mut todo = Vec::new();
        collect_selectors(e, &mut todo);
        for vs in todo {
            let k = key(vs);
            if self.cache.contains_key(&k) {
                continue;
            }
            let w = self.windows.get(&k).copied().unwrap_or(Planned {
                mint: lo,
                maxt: hi,
                grid: None,
            });
            let series = self.select(vs, w.mint, w.maxt, w.grid)?;
            self.cache.insert(k, series);
        }
        Ok(())
    }

    fn select(
        &mut self,
        vs: &p::VectorSelector,
        a: i64,
        b: i64,
        grid: Option<Grid>,
    ) -> Result<Entry, QueryError> {
        self.check_deadline()?;
        let alts = to_matchers(&vs.name, &vs.matchers);
        let mut out: Vec<Loaded> = Vec::new();
        for ms in &alts {
            for m in ms {
                if matches!(m.op, MatchOp::Re | MatchOp::NotRe) {
                    m.compile()?;
                }
            }
            let found = match &grid {
                Some(g) => self.q.select_latest(ms, g)?,
                None => self.q.select(ms, a, b)?,
            };
            for s in found {
                if alts.len() > 1 && out.iter().any(|o| *o.0 == s.labels) {
                    continue;
                }
                out.push((Arc::new(s.labels), s.samples));
            }
        }
        for s in &out {
            self.samples_loaded += s.1.len();
        }
        if self.samples_loaded > self.opts.max_samples {
            return Err(too_many_samples());
        }
        Ok(Entry {
            pos: vec![(0, 0); out.len()],
            series: out,
            grid,
        })
    }

    fn series_of(
        &mut self,
        vs: &p::VectorSelector,
        a: i64,
        b: i64,
    ) -> Result<&mut Entry, QueryError> {
        let k = key(vs);
        let planned = match self.cache.get(&k) {
            Some(e) => e.grid.is_none_or(|g| g.contains(b)),
            None => false,
        };
        if planned {
            return Ok(self.cache.get_mut(&k).expect("checked above"));
        }
        // Not planned, or evaluated off the grid it was loaded for (neither is expected:
        // the plan covers the tree): load this step's window alone, uncached.
        let e = self.select(vs, a, b, None)?;
        Ok(self.scratch.insert(e))
    }

    /// An instant vector selector at `ts`: each series' latest sample within the lookback
    /// window `(t - lookback, t]`, absent when that sample is a staleness marker. Returns
    /// the sample timestamps too (for `timestamp()`).
    pub(crate) fn eval_vs(
        &mut self,
        vs: &p::VectorSelector,
        ts: i64,
    ) -> Result<Vec<(Elem, i64)>, QueryError> {
        let t = self.at_ms(&vs.at).unwrap_or(ts) - offset_ms(&vs.offset);
        let lb = self.opts.lookback_delta_ms;
        let entry = self.series_of(vs, t - lb, t)?;
        let mut out = Vec::new();
        for ((labels, samples), pos) in entry.series.iter().zip(entry.pos.iter_mut()) {
            let idx = seek(samples, pos.1, t);
            pos.1 = idx;
            if idx == 0 {
                continue;
            }
            let smp = samples[idx - 1];
            if smp.t <= t - lb || is_stale_nan(smp.v) {
                continue;
            }
            out.push((
                Elem {
                    labels: labels.clone(),
                    v: smp.v,
                    drop_name: false,
                },
                smp.t,
            ));
        }
        Ok(out)
    }

    /// A range selector at `ts`: the samples in `(t - range, t]`, staleness markers dropped.
    pub(crate) fn eval_ms(
        &mut self,
        ms: &p::MatrixSelector,
        ts: i64,
    ) -> Result<Vec<RangeSeries>, QueryError> {
        let vs = &ms.vs;
        let t = self.at_ms(&vs.at).unwrap_or(ts) - offset_ms(&vs.offset);
        let r = dur_ms(&ms.range);
        let entry = self.series_of(vs, t - r, t)?;
        let mut out = Vec::new();
        let mut n = 0usize;
        for ((labels, samples), pos) in entry.series.iter().zip(entry.pos.iter_mut()) {
            let a = seek(samples, pos.0, t - r);
            let b = seek(samples, pos.1.max(a), t);
            *pos = (a, b);
            if a == b {
                continue;
            }
            let mut points: Vec<(i64, f64)> = Vec::with_capacity(b - a);
            points.extend(
                samples[a..b]
                    .iter()
                    .filter(|x| !is_stale_nan(x.v))
                    .map(|x| (x.t, x.v)),
            );
            if points.is_empty() {
                continue;
            }
            n += points.len();
            out.push(RangeSeries {
                labels: labels.clone(),
                points,
                drop_name: false,
            });
        }
        if n > self.opts.max_samples {
            return Err(too_many_samples());
        }
        Ok(out)
    }

    /// A subquery at `ts`: the inner expression at every step `k*step` in `(t - range, t]`.
    pub(crate) fn eval_subquery(
        &mut self,
        sq: &p::SubqueryExpr,
        ts: i64,
    ) -> Result<Vec<RangeSeries>, QueryError> {
        let t = self.at_ms(&sq.at).unwrap_or(ts) - offset_ms(&sq.offset);
        let r = dur_ms(&sq.range);
        let step = self.subquery_step(sq);
        let first = first_multiple_after(t - r, step);
        let mut acc: Vec<RangeSeries> = Vec::new();
        let mut index: HashMap<Arc<Labels>, usize> = HashMap::new();
        let mut total = 0usize;
        let mut cur = first;
        while cur <= t {
            self.check_deadline()?;
            match self.eval(&sq.expr, cur)? {
                Val::Scalar(v) => {
                    push_point(&mut acc, &mut index, Arc::new(Vec::new()), false, cur, v);
                    total += 1;
                }
                Val::Vector(v) => {
                    for e in v {
                        push_point(&mut acc, &mut index, e.labels, e.drop_name, cur, e.v);
                        total += 1;
                    }
                }
                other => {
                    return Err(QueryError::bad_data(format!(
                        "subquery expression must be an instant vector or scalar, got {}",
                        other.type_name()
                    )))
                }
            }
            if total > self.opts.max_samples {
                return Err(too_many_samples());
            }
            cur += step;
        }
        Ok(acc)
    }

    /// Evaluate a range-vector argument (range selector or subquery, maybe in parentheses)
    /// at `ts`; also returns the window's `(range_ms, end_ms)` for extrapolation.
    pub(crate) fn eval_matrix_arg(
        &mut self,
        e: &Expr,
        ts: i64,
    ) -> Result<(Vec<RangeSeries>, i64, i64), QueryError> {
        match e {
            Expr::MatrixSelector(ms) => {
                let end = self.at_ms(&ms.vs.at).unwrap_or(ts) - offset_ms(&ms.vs.offset);
                Ok((self.eval_ms(ms, ts)?, dur_ms(&ms.range), end))
            }
            Expr::Subquery(sq) => {
                let end = self.at_ms(&sq.at).unwrap_or(ts) - offset_ms(&sq.offset);
                Ok((self.eval_subquery(sq, ts)?, dur_ms(&sq.range), end))
            }
            Expr::Paren(pe) => self.eval_matrix_arg(&pe.expr, ts),
            _ => match self.eval(e, ts)? {
                Val::Matrix(m) => Ok((m, 0, ts)),
                other => Err(QueryError::bad_data(format!(
                    "expected range vector, got {}",
                    other.type_name()
                ))),
            },
        }
    }

    /// Evaluate `e` at timestamp `ts` (ms).
    pub(crate) fn eval(&mut self, e: &Expr, ts: i64) -> Result<Val, QueryError> {
        match e {
            Expr::NumberLiteral(n) => Ok(Val::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Val::Str(s.val.clone())),
            Expr::Paren(pe) => self.eval(&pe.expr, ts),
            Expr::Unary(u) => match self.eval(&u.expr, ts)? {
                Val::Scalar(v) => Ok(Val::Scalar(-v)),
                Val::Vector(mut v) => {
                    for x in v.iter_mut() {
                        x.v = -x.v;
                        x.drop_name = true;
                    }
                    Ok(Val::Vector(v))
                }
                other => Err(QueryError::bad_data(format!(
                    "unary minus on {}",
                    other.type_name()
                ))),
            },
            Expr::VectorSelector(vs) => Ok(Val::Vector(
                self.eval_vs(vs, ts)?.into_iter().map(|(e, _)| e).collect(),
            )),
            Expr::MatrixSelector(ms) => Ok(Val::Matrix(self.eval_ms(ms, ts)?)),
            Expr::Subquery(sq) => Ok(Val::Matrix(self.eval_subquery(sq, ts)?)),
            Expr::Binary(b) => crate::binary::eval_binary(self, b, ts),
            Expr::Aggregate(a) => crate::aggregate::eval_aggregate(self, a, ts),
            Expr::Call(c) => crate::functions::eval_call(self, c, ts),
            Expr::Extension(_) => Err(QueryError::bad_data(
                "extension expressions are not supported",
            )),
        }
    }

    /// Evaluate to a scalar (a literal, `scalar()`, or arithmetic of those).
    pub(crate) fn eval_scalar(&mut self, e: &Expr, ts: i64) -> Result<f64, QueryError> {
        match self.eval(e, ts)? {
            Val::Scalar(v) => Ok(v),
            other => Err(QueryError::bad_data(format!(
                "expected scalar, got {}",
                other.type_name()
            ))),
        }
    }

    pub(crate) fn eval_vector(&mut self, e: &Expr, ts: i64) -> Result<Vec<Elem>, QueryError> {
        match self.eval(e, ts)? {
            Val::Vector(v) => Ok(v),
            other => Err(QueryError::bad_data(format!(
                "expected instant vector, got {}",
                other.type_name()
            ))),
        }
    }
}

/// The first multiple of `step` strictly after `lo`.
fn first_multiple_after(lo: i64, step: i64) -> i64 {
    let first = lo.div_euclid(step) * step;
    if first <= lo {
        first + step
    } else {
        first
    }
}

fn push_point(
    acc: &mut Vec<RangeSeries>,
    index: &mut HashMap<Arc<Labels>, usize>,
    labels: Arc<Labels>,
    drop_name: bool,
    t: i64,
    v: f64,
) {
    match index.get(&labels) {
        Some(&i) => {
            acc[i].points.push((t, v));
            acc[i].drop_name |= drop_name;
        }
        None => {
            index.insert(labels.clone(), acc.len());
            acc.push(RangeSeries {
                labels,
                points: vec![(t, v)],
                drop_name,
            });
        }
    }
}

pub(crate) fn too_many_samples() -> QueryError {
    QueryError::execution(
        "query processing would load too many samples into memory in query execution",
    )
}

fn collect_selectors<'e>(e: &'e Expr, out: &mut Vec<&'e p::VectorSelector>) {
    match e {
        Expr::VectorSelector(vs) => out.push(vs),
        Expr::MatrixSelector(ms) => out.push(&ms.vs),
        Expr::Subquery(sq) => collect_selectors(&sq.expr, out),
        Expr::Aggregate(a) => {
            if let Some(pr) = &a.param {
                collect_selectors(pr, out);
            }
            collect_selectors(&a.expr, out);
        }
        Expr::Unary(u) => collect_selectors(&u.expr, out),
        Expr::Binary(b) => {
            collect_selectors(&b.lhs, out);
            collect_selectors(&b.rhs, out);
        }
        Expr::Paren(pe) => collect_selectors(&pe.expr, out),
        Expr::Call(c) => {
            for a in &c.args.args {
                collect_selectors(a, out);
            }
        }
        _ => {}
    }
}
