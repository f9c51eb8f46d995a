//! The public API's contract: error types, the sample cap, the deadline hook, staleness,
//! and range-query shapes, on a small in-memory store.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tracerd_promql::{
    instant_query, range_query, stale_nan, ErrorType, Matcher, Options, QueryError, Queryable,
    Sample, Series, Value,
};

struct Store(Vec<Series>);

impl Queryable for Store {
    fn select(&self, ms: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<Series>, QueryError> {
        Ok(self
            .0
            .iter()
            .filter(|s| ms.iter().all(|m| m.matches_labels(&s.labels)))
            .map(|s| Series {
                labels: s.labels.clone(),
                samples: s
                    .samples
                    .iter()
                    .filter(|x| x.t >= mint && x.t <= maxt)
                    .copied()
                    .collect(),
            })
            .collect())
    }
}

fn counter(node: &str, n: i64, step_ms: i64) -> Series {
    Series {
        labels: vec![
            ("__name__".into(), "up_total".into()),
            ("node_name".into(), node.into()),
        ],
        samples: (0..n)
            .map(|i| Sample {
                t: i * step_ms,
                v: i as f64,
            })
            .collect(),
    }
}

#[test]
fn a_parse_error_is_bad_data_with_the_parsers_message() {
    let s = Store(vec![]);
    let e = instant_query(&s, "sum(", 0, &Options::default()).unwrap_err();
    assert_eq!(e.kind, ErrorType::BadData);
    assert_eq!(e.error_type(), "bad_data");
    assert!(e.message.contains("parse error"), "{}", e.message);
}

#[test]
fn a_query_over_the_sample_cap_fails_with_execution_and_under_it_succeeds() {
    let s = Store(vec![counter("a", 100, 1000), counter("b", 100, 1000)]);
    let small = Options {
        max_samples: 150,
        ..Options::default()
    };
    let e = instant_query(&s, "count_over_time(up_total[10m])", 99_000, &small).unwrap_err();
    assert_eq!(e.kind, ErrorType::Execution, "{e}");
    let big = Options {
        max_samples: 1000,
        ..Options::default()
    };
    let v = instant_query(&s, "count_over_time(up_total[10m])", 99_000, &big).unwrap();
    let Value::Vector(v) = v else { panic!("{v:?}") };
    assert_eq!(v.len(), 2);
    assert!(v.iter().all(|(_, _, x)| *x == 100.0));
}

#[test]
fn the_deadline_hook_aborts_a_range_query_with_timeout() {
    let s = Store(vec![counter("a", 3600, 1000)]);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let opts = Options {
        deadline_exceeded: Some(Box::new(move || c.fetch_add(1, Ordering::Relaxed) >= 5)),
        ..Options::default()
    };
    let e = range_query(&s, "rate(up_total[1m])", 0, 3_600_000, 15_000, &opts).unwrap_err();
    assert_eq!(e.kind, ErrorType::Timeout);
    assert!(calls.load(Ordering::Relaxed) >= 6);
}

#[test]
fn a_series_ending_in_a_stale_marker_disappears_at_once_and_others_stay() {
    let mut a = counter("a", 10, 1000);
    a.samples.push(Sample {
        t: 10_000,
        v: stale_nan(),
    });
    let s = Store(vec![a, counter("b", 20, 1000)]);
    let Value::Vector(v) = instant_query(&s, "up_total", 12_000, &Options::default()).unwrap()
    else {
        panic!()
    };
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].0[1].1, "b");
    let Value::Vector(v) = instant_query(&s, "up_total", 9_500, &Options::default()).unwrap()
    else {
        panic!()
    };
    assert_eq!(v.len(), 2);
}

#[test]
fn a_range_query_gives_one_point_per_step_sorted_by_labels_and_rejects_bad_steps() {
    let s = Store(vec![counter("b", 600, 1000), counter("a", 600, 1000)]);
    let Value::Matrix(m) = range_query(
        &s,
        "sum by (node_name) (rate(up_total[1m]))",
        60_000,
        300_000,
        15_000,
        &Options::default(),
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(m.len(), 2);
    assert_eq!(
        m[0].labels,
        vec![("node_name".to_string(), "a".to_string())]
    );
    assert_eq!(m[0].samples.len(), 17);
    for p in &m[0].samples {
        assert!((p.v - 1.0).abs() < 1e-9, "{p:?}");
    }
    let e = range_query(&s, "up_total", 0, 10, 0, &Options::default()).unwrap_err();
    assert_eq!(e.kind, ErrorType::BadData);
    let e = range_query(&s, "up_total[1m]", 0, 10, 1, &Options::default()).unwrap_err();
    assert_eq!(e.kind, ErrorType::BadData);
}
