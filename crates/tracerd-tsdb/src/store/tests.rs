use super::*;
use std::thread;

fn l(pairs: &[(&str, &str)]) -> Labels {
    let mut v: Labels = pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    v.sort();
    v
}
fn eq(name: &str, value: &str) -> Matcher {
    Matcher {
        name: name.into(),
        op: MatchOp::Equal,
        value: value.into(),
    }
}
fn small(chunk: u32) -> Store {
    Store::new(Config {
        chunk_samples: chunk,
        shards: 4,
        ..Config::default()
    })
}

#[test]
fn select_returns_exactly_the_samples_in_range_across_sealed_and_head_chunks() {
    let st = small(8);
    let a = l(&[("__name__", "m"), ("node_name", "a")]);
    for i in 0..50 {
        st.append(&a, i * 1000, i as f64 * 0.5).unwrap();
    }
    let got = st.select(&[eq("__name__", "m")], 7_000, 33_000).unwrap();
    assert_eq!(got.len(), 1);
    let ts: Vec<i64> = got[0].samples.iter().map(|s| s.t).collect();
    assert_eq!(ts, (7..=33).map(|i| i * 1000).collect::<Vec<_>>());
    assert_eq!(got[0].samples[0].v, 3.5);
    assert_eq!(got[0].labels, a);
    // A range with no sample returns no series.
    assert!(st
        .select(&[eq("__name__", "m")], 60_000, 70_000)
        .unwrap()
        .is_empty());
    assert_eq!(st.stats().samples, 50);
}

#[test]
fn out_of_order_is_refused_and_counted_duplicates_are_ignored() {
    let st = small(4);
    let a = l(&[("__name__", "m")]);
    st.append(&a, 10, 1.0).unwrap();
    st.append(&a, 10, 1.0).unwrap();
    let e = st.append(&a, 10, 2.0).unwrap_err();
    assert_eq!(e, AppendError::OutOfOrder { t: 10, last: 10 });
    assert_eq!(e.kind(), "out_of_order");
    assert!(st.append(&a, 5, 1.0).is_err());
    assert_eq!(st.stats().out_of_order, 2);
    assert_eq!(st.stats().samples, 1);
    // Also right after a chunk was sealed (the last sample sits in a sealed chunk).
    for t in 11..14 {
        st.append(&a, t, 1.0).unwrap();
    }
    assert!(st.append(&a, 13, 9.0).is_err());
}

#[test]
fn staleness_marks_every_series_of_the_node_once_and_keeps_them() {
    let st = small(16);
    for n in ["a", "b"] {
        for m in ["x", "y"] {
            st.append(&l(&[("__name__", m), ("node_name", n)]), 1000, 1.0)
                .unwrap();
        }
    }
    assert_eq!(st.mark_stale("node_name", "a", 2000), 2);
    assert_eq!(st.mark_stale("node_name", "a", 3000), 0, "already stale");
    let got = st.select(&[eq("node_name", "a")], 0, 10_000).unwrap();
    assert_eq!(got.len(), 2);
    for s in &got {
        assert_eq!(s.samples.len(), 2);
        assert!(is_stale_nan(s.samples[1].v));
        assert_eq!(s.samples[1].t, 2000);
    }
    let b = st.select(&[eq("node_name", "b")], 0, 10_000).unwrap();
    assert!(b.iter().all(|s| s.samples.len() == 1));
    // A node that comes back appends after its marker.
    st.append(&l(&[("__name__", "x"), ("node_name", "a")]), 4000, 2.0)
        .unwrap();
}

#[test]
fn time_retention_drops_old_chunks_and_aged_out_series() {
    let st = Store::new(Config {
        retention_ms: 60_000,
        chunk_samples: 10,
        shards: 2,
        ..Config::default()
    });
    let live = l(&[("__name__", "m"), ("node_name", "live")]);
    let gone = l(&[("__name__", "m"), ("node_name", "gone")]);
    for i in 0..30 {
        st.append(&gone, i * 1000, 1.0).unwrap();
    }
    for i in 0..200 {
        st.append(&live, i * 1000, i as f64).unwrap();
    }
    let p = st.prune(200_000);
    // `gone` ended at 29 s, older than 200 s - 60 s: removed with its labels.
    assert_eq!(p.series, 1);
    assert_eq!(st.label_values("node_name"), ["live"]);
    let s = st.select(&[eq("__name__", "m")], 0, i64::MAX).unwrap();
    assert_eq!(s.len(), 1);
    // Whole chunks of 10 go: the oldest kept chunk ends at or after 140 s.
    let first = s[0].samples[0].t;
    assert!((130_000..=140_000).contains(&first), "first kept {first}");
    let stats = st.stats();
    assert_eq!(stats.samples as usize, s[0].samples.len());
    assert_eq!(stats.dropped_by_retention_samples, 30 + first as u64 / 1000);
    assert_eq!(stats.series_removed, 1);
}

#[test]
fn byte_cap_drops_the_oldest_chunks_first_and_counts_them() {
    let cfg = Config {
        chunk_samples: 60,
        shards: 4,
        ..Config::default()
    };
    let st = Store::new(cfg.clone());
    // 20 series × 2 h of 1 s samples with changing values.
    let series: Vec<Labels> = (0..20)
        .map(|i| l(&[("__name__", "m"), ("node_name", &format!("n{i}"))]))
        .collect();
    for t in 0..7200i64 {
        for (i, s) in series.iter().enumerate() {
            st.append(s, t * 1000, ((t * 7 + i as i64) % 97) as f64)
                .unwrap();
        }
    }
    let full = st.bytes();
    let st = {
        let cap = full / 2;
        let capped = Store::new(Config {
            max_bytes: cap,
            ..cfg
        });
        for t in 0..7200i64 {
            for (i, s) in series.iter().enumerate() {
                capped
                    .append(s, t * 1000, ((t * 7 + i as i64) % 97) as f64)
                    .unwrap();
            }
        }
        let p = capped.prune(7_200_000);
        assert!(capped.bytes() <= cap, "{} > {cap}", capped.bytes());
        assert!(p.chunks > 0);
        capped
    };
    let stats = st.stats();
    assert_eq!(stats.dropped_by_cap_samples + stats.samples, 20 * 7200);
    assert!(stats.dropped_by_cap_chunks > 0);
    // Every series lost its oldest data, none its newest.
    for s in st.select(&[eq("__name__", "m")], 0, i64::MAX).unwrap() {
        assert_eq!(s.samples.last().unwrap().t, 7_199_000);
        assert!(s.samples[0].t >= 60_000, "{}", s.samples[0].t);
    }
}

#[test]
fn series_cap_refuses_new_series_and_keeps_old_ones() {
    let st = Store::new(Config {
        max_series: 2,
        ..Config::default()
    });
    st.append(&l(&[("__name__", "a")]), 1, 1.0).unwrap();
    st.append(&l(&[("__name__", "b")]), 1, 1.0).unwrap();
    let e = st.append(&l(&[("__name__", "c")]), 1, 1.0).unwrap_err();
    assert_eq!(e, AppendError::TooManySeries { max: 2 });
    st.append(&l(&[("__name__", "a")]), 2, 1.0).unwrap();
    assert_eq!(st.stats().series_refused, 1);
    assert_eq!(
        st.append(&Vec::new(), 1, 1.0).unwrap_err(),
        AppendError::NoLabels
    );
}

#[test]
fn concurrent_appends_queries_and_prunes_lose_nothing() {
    let st = Arc::new(small(32));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let st = st.clone();
            thread::spawn(move || {
                for t in 0..2000i64 {
                    for m in 0..5 {
                        let lb = l(&[
                            ("__name__", &format!("m{m}")),
                            ("node_name", &format!("w{w}")),
                        ]);
                        st.append(&lb, t * 1000, t as f64).unwrap();
                    }
                }
            })
        })
        .collect();
    let reader = {
        let st = st.clone();
        thread::spawn(move || {
            for i in 0..200 {
                let got = st.select(&[eq("__name__", "m0")], 0, i64::MAX).unwrap();
                for s in got {
                    // Samples come back sorted with no gap.
                    for (k, w) in s.samples.windows(2).enumerate() {
                        assert_eq!(w[1].t - w[0].t, 1000, "series {:?} at {k}", s.labels);
                    }
                }
                // Pruning with a time before every sample removes nothing.
                assert_eq!(st.prune(i).samples, 0);
            }
        })
    };
    for w in writers {
        w.join().unwrap();
    }
    reader.join().unwrap();
    assert_eq!(st.stats().samples, 4 * 5 * 2000);
    assert_eq!(st.stats().series, 20);
}

#[test]
fn bad_regex_in_select_is_bad_data() {
    let st = small(4);
    let m = Matcher {
        name: "a".into(),
        op: MatchOp::Re,
        value: "[".into(),
    };
    assert_eq!(st.select(&[m], 0, 1).unwrap_err().error_type(), "bad_data");
}

/// What an instant selector reads at `t`, from every sample: the latest at or before `t`,
/// if newer than `t - lookback`.
fn naive_latest(all: &[Sample], g: &Grid) -> Vec<Sample> {
    let mut out: Vec<Sample> = Vec::new();
    let mut t = g.start;
    while t <= g.end {
        if let Some(s) = all.iter().rev().find(|s| s.t <= t) {
            if s.t > t - g.lookback && out.last().is_none_or(|o| o.t != s.t) {
                out.push(*s);
            }
        }
        if g.step <= 0 {
            break;
        }
        t += g.step;
    }
    out
}

#[test]
fn select_latest_returns_what_each_grid_time_reads_and_nothing_more() {
    let st = small(4);
    let a = l(&[("__name__", "m"), ("node_name", "a")]);
    // Irregular: every 1 s, a 20 s gap, a staleness marker, then every 3 s.
    let mut times: Vec<i64> = (0..30).map(|i| i * 1000).collect();
    times.extend((0..5).map(|i| 50_000 + i * 3000));
    for (i, &t) in times.iter().enumerate() {
        let v = if i == 31 { stale_nan() } else { i as f64 };
        st.append(&a, t, v).unwrap();
    }
    let all = st
        .select(&[eq("node_name", "a")], i64::MIN, i64::MAX)
        .unwrap()[0]
        .samples
        .clone();
    let grids = [
        (5_000, 5_000, 0),   // one time, mid chunk
        (70_000, 70_000, 0), // one time past the last sample (no decoding)
        (62_000, 62_000, 0), // the last sample exactly
        (40_000, 40_000, 0), // in the gap, within lookback
        (0, 70_000, 15_000), // a range query's grid
        (-3_000, 64_000, 7_000),
        (1_500, 29_500, 1_000), // as dense as the data
    ];
    for (start, end, step) in grids {
        for lookback in [5_000, 300_000] {
            let g = Grid {
                start,
                end,
                step,
                lookback,
            };
            let got = st.select_latest(&[eq("node_name", "a")], &g).unwrap();
            let want = naive_latest(&all, &g);
            let got_samples: Vec<(i64, u64)> = got
                .iter()
                .flat_map(|s| s.samples.iter().map(|x| (x.t, x.v.to_bits())))
                .collect();
            let want: Vec<(i64, u64)> = want.iter().map(|x| (x.t, x.v.to_bits())).collect();
            assert_eq!(got_samples, want, "{g:?}");
            assert_eq!(got.len(), usize::from(!want.is_empty()), "{g:?}");
        }
    }
    // Just after a seal (no head): the newest sealed chunk's last sample.
    let b = l(&[("__name__", "m"), ("node_name", "b")]);
    for i in 0..8 {
        st.append(&b, i * 1000, i as f64 + 0.25).unwrap();
    }
    let g = Grid {
        start: 9_000,
        end: 9_000,
        step: 0,
        lookback: 300_000,
    };
    let got = st.select_latest(&[eq("node_name", "b")], &g).unwrap();
    assert_eq!(got[0].samples, [Sample { t: 7000, v: 7.25 }]);
    assert!(
        st.append(&b, 7000, 1.0).is_err(),
        "the last sample is known"
    );
}

#[test]
fn an_instant_query_over_every_series_counts_one_sample_each_against_the_cap() {
    let st = small(240);
    for n in 0..50 {
        let labels = l(&[("__name__", "m"), ("node_name", &format!("n{n}"))]);
        for s in 0..600 {
            st.append(&labels, s * 1000, (n + s) as f64).unwrap();
        }
    }
    // 300 samples a series in the 5-minute lookback, 15,000 in all; the cap is 60.
    let opts = tracerd_promql::Options {
        max_samples: 60,
        ..Default::default()
    };
    let v = tracerd_promql::instant_query(&st, "sum(m)", 599_000, &opts).unwrap();
    let want: f64 = (0..50).map(|n| (n + 599) as f64).sum();
    assert_eq!(
        v,
        tracerd_promql::Value::Vector(vec![(vec![], 599_000, want)])
    );
    // The same at a time inside the data decodes, and still holds one sample a series.
    let v = tracerd_promql::instant_query(&st, "sum(m)", 300_500, &opts).unwrap();
    let want: f64 = (0..50).map(|n| (n + 300) as f64).sum();
    assert_eq!(
        v,
        tracerd_promql::Value::Vector(vec![(vec![], 300_500, want)])
    );
    // A range selector still loads its window and is refused.
    let e = tracerd_promql::instant_query(&st, "sum(rate(m[1m]))", 599_000, &opts).unwrap_err();
    assert_eq!(e.error_type(), "execution");
}
