//! An in-memory `Source` for the tests: series given as (name, labels, [(t ms, value)]).
#![allow(dead_code)]

use tracerd_promql::{Labels, Matcher, QueryError, Queryable, Sample, Series};
use tracerd_tsquery::{execute, Config, Error, Source, Value};

#[derive(Default)]
pub struct Mem {
    pub series: Vec<Series>,
}

impl Mem {
    pub fn new() -> Self {
        Mem::default()
    }

    /// Add points to the series `name{labels}`.
    pub fn add(mut self, name: &str, labels: &[(&str, &str)], points: &[(u64, f64)]) -> Self {
        let mut l: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.push(("__name__".into(), name.into()));
        l.sort();
        let samples = points
            .iter()
            .map(|&(t, v)| Sample { t: t as i64, v })
            .collect();
        self.series.push(Series { labels: l, samples });
        self
    }
}

impl Queryable for Mem {
    fn select(&self, ms: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<Series>, QueryError> {
        Ok(self
            .series
            .iter()
            .filter(|s| ms.iter().all(|m| m.matches_labels(&s.labels)))
            .map(|s| Series {
                labels: s.labels.clone(),
                samples: s
                    .samples
                    .iter()
                    .filter(|p| p.t >= mint && p.t <= maxt)
                    .copied()
                    .collect(),
            })
            .filter(|s| !s.samples.is_empty())
            .collect())
    }
}

impl Source for Mem {
    fn metric_names(&self) -> Result<Vec<String>, QueryError> {
        let mut n: Vec<String> = self
            .series
            .iter()
            .filter_map(|s| s.labels.iter().find(|(k, _)| k == "__name__"))
            .map(|(_, v)| v.clone())
            .collect();
        n.sort();
        n.dedup();
        Ok(n)
    }
}

/// upstream's test config: a default range step of 1 s.
pub fn cfg() -> Config {
    Config {
        default_step_ms: 1000,
        ..Config::default()
    }
}

pub fn run_at(store: &Mem, now: u64, q: &str) -> Result<Value, Error> {
    execute(store, q, now, &cfg())
}

/// The scalar values of an instant vector, sorted.
pub fn scalars(v: &Result<Value, Error>) -> Vec<f64> {
    match v {
        Ok(Value::InstantVector(v)) => {
            let mut xs: Vec<f64> = v
                .iter()
                .map(|i| match i.v {
                    Value::Scalar(x) => x,
                    ref o => panic!("not a scalar: {o:?}"),
                })
                .collect();
            xs.sort_by(f64::total_cmp);
            xs
        }
        other => panic!("expected an instant vector, got {other:?}"),
    }
}
