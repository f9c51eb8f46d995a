//! Values inside the evaluator, and label-set helpers.

use std::sync::Arc;

use crate::model::{Labels, Series};

pub const METRIC_NAME: &str = "__name__";

/// One element of an instant vector. `drop_name` is Prometheus's delayed name removal:
/// the `__name__` label is kept until it must go (matching, aggregation, the end).
#[derive(Debug, Clone)]
pub struct Elem {
    pub labels: Arc<Labels>,
    pub v: f64,
    pub drop_name: bool,
}

/// A series of a range vector, with the same delayed name removal flag.
#[derive(Debug, Clone)]
pub struct RangeSeries {
    pub labels: Arc<Labels>,
    pub points: Vec<(i64, f64)>,
    pub drop_name: bool,
}

#[derive(Debug, Clone)]
pub enum Val {
    Scalar(f64),
    Str(String),
    Vector(Vec<Elem>),
    Matrix(Vec<RangeSeries>),
}

impl Val {
    pub fn type_name(&self) -> &'static str {
        match self {
            Val::Scalar(_) => "scalar",
            Val::Str(_) => "string",
            Val::Vector(_) => "vector",
            Val::Matrix(_) => "matrix",
        }
    }
}

pub fn get<'a>(labels: &'a Labels, name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Set (or, with an empty value, delete) a label, keeping the set sorted.
pub fn set(labels: &mut Labels, name: &str, value: &str) {
    match labels.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
        Ok(i) if value.is_empty() => {
            labels.remove(i);
        }
        Ok(i) => labels[i].1 = value.to_string(),
        Err(_) if value.is_empty() => {}
        Err(i) => labels.insert(i, (name.to_string(), value.to_string())),
    }
}

/// Remove `__name__` when `drop` is set, copying the shared label set only if it has one.
pub fn drop_name_if(labels: &mut Arc<Labels>, drop: bool) {
    if drop && labels.iter().any(|(n, _)| n == METRIC_NAME) {
        Arc::make_mut(labels).retain(|(n, _)| n != METRIC_NAME);
    }
}

/// A label-set key made of the listed labels (`on`/`by`) or of all but them (`ignoring`/`without`).
pub fn signature(labels: &Labels, names: &[String], include: bool) -> Labels {
    if include {
        labels
            .iter()
            .filter(|(n, _)| names.iter().any(|x| x == n))
            .cloned()
            .collect()
    } else {
        labels
            .iter()
            .filter(|(n, _)| n != METRIC_NAME && !names.iter().any(|x| x == n))
            .cloned()
            .collect()
    }
}

pub fn to_series(m: Vec<RangeSeries>) -> Vec<Series> {
    m.into_iter()
        .map(|mut s| {
            drop_name_if(&mut s.labels, s.drop_name);
            Series {
                labels: Arc::unwrap_or_clone(s.labels),
                samples: s
                    .points
                    .into_iter()
                    .map(|(t, v)| crate::model::Sample { t, v })
                    .collect(),
            }
        })
        .collect()
}
