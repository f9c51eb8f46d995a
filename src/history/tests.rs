//! The recorder over a real store: updates become samples, removals and the session's end
//! become staleness markers, unchanged metrics are repeated.

use super::*;
use crate::config::HistorySettings;
use crate::model::MetricValue;
use tracerd_promql::{is_stale_nan, MatchOp, Matcher, Queryable};

fn history() -> Arc<History> {
    let m = HistoryMetrics::register(&Registry::new());
    History::new(&HistorySettings::default(), m)
}

fn update(full: bool, m: &[(&str, MetricValue)]) -> MetricsUpdate {
    MetricsUpdate {
        full,
        metrics: m.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
    }
}

/// Every sample of the series named `name`: (labels, values).
fn samples(h: &History, name: &str) -> Vec<(Labels, Vec<f64>)> {
    let m = Matcher {
        name: "__name__".into(),
        op: MatchOp::Equal,
        value: name.into(),
    };
    let mut out: Vec<(Labels, Vec<f64>)> = h
        .store()
        .select(&[m], i64::MIN, i64::MAX)
        .unwrap()
        .into_iter()
        .map(|s| (s.labels.to_vec(), s.samples.iter().map(|x| x.v).collect()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn updates_are_stored_and_the_end_of_a_session_marks_them_stale() {
    let h = history();
    let naming = Naming::default();
    let rec = h.open("relay");
    rec.record(
        &update(
            true,
            &[
                ("a.b_int", MetricValue::Counter(1)),
                ("g", MetricValue::Gauge(2.5)),
                ("v", MetricValue::Label("x1".into())),
            ],
        ),
        &naming,
    );
    rec.record(
        &update(false, &[("a.b_int", MetricValue::Counter(3))]),
        &naming,
    );
    // The label text changed: the old series goes stale, a new one starts.
    rec.record(
        &update(false, &[("v", MetricValue::Label("x2".into()))]),
        &naming,
    );
    let a = samples(&h, "a_b_int");
    assert_eq!(a.len(), 1);
    assert!(a[0].0.contains(&("node_name".into(), "relay".into())));
    assert_eq!(a[0].1, vec![1.0, 3.0]);
    let v = samples(&h, "v");
    assert_eq!(v.len(), 2);
    assert!(v[0].0.contains(&("value".into(), "x1".into())));
    assert!(is_stale_nan(*v[0].1.last().unwrap()));
    assert_eq!(v[1].1, vec![1.0]);
    // A full snapshot without `g` ends `g`.
    rec.record(
        &update(true, &[("a.b_int", MetricValue::Counter(4))]),
        &naming,
    );
    let g = samples(&h, "g");
    assert_eq!(g[0].1.len(), 2);
    assert!(is_stale_nan(g[0].1[1]));
    drop(rec);
    let a = samples(&h, "a_b_int");
    assert_eq!(a[0].1.len(), 4);
    assert!(is_stale_nan(a[0].1[3]));
    assert!(crate::sync::lock(&h.live).is_empty());
}

#[test]
fn unchanged_metrics_are_repeated_and_left_ones_are_not() {
    let h = history();
    let naming = Naming::default();
    let rec = h.open("n1");
    rec.record(&update(true, &[("g", MetricValue::Gauge(7.0))]), &naming);
    let later = now_ms() + 20_000;
    h.repeat_unchanged(later, 15_000);
    assert_eq!(samples(&h, "g")[0].1, vec![7.0, 7.0]);
    // Within the interval: nothing repeated.
    h.repeat_unchanged(later + 1_000, 15_000);
    assert_eq!(samples(&h, "g")[0].1.len(), 2);
    drop(rec);
    h.repeat_unchanged(later + 60_000, 15_000);
    let g = samples(&h, "g");
    assert_eq!(g[0].1.len(), 3);
    assert!(is_stale_nan(g[0].1[2]));
}

#[test]
fn the_byte_cap_drops_the_oldest_and_counts_it() {
    let registry = Registry::new();
    let m = HistoryMetrics::register(&registry);
    let settings = HistorySettings {
        max_bytes: 1 << 20,
        ..HistorySettings::default()
    };
    let h = History::new(&settings, m.clone());
    let t0 = now_ms();
    // Noisy values, so the chunks do not compress to nothing.
    let mut x: u64 = 1;
    let mut noise = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    for s in 0..400 {
        let labels: Labels = vec![("__name__".into(), "m".into()), ("i".into(), s.to_string())];
        for i in 0..600 {
            h.append(&labels, t0 + i * 1000, noise());
        }
    }
    assert!(h.store().bytes() > 1 << 20);
    h.enforce_cap(t0 + 600_000);
    assert!(h.store().bytes() <= 1 << 20, "{}", h.store().bytes());
    assert!(m.dropped.with_label_values(&["max_bytes"]).get() > 0);
    assert_eq!(m.bytes.get() as usize, h.store().bytes());
}
