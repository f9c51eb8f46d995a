//! Evaluator latency on a synthetic fleet: `cargo run --release -p tracerd-promql --example bench
//! [nodes] [metrics] [sample_interval_s]` (defaults 1000 × 200, 15 s). The store generates
//! samples on the fly (a counter per series), so only the evaluator and the selected samples
//! cost memory. Prints p50/p99 over repeated runs for an instant `sum by` over every series
//! and 1 h range queries at a 15 s step.

use std::time::Instant;

use tracerd_promql::{
    instant_query, range_query, Labels, MatchOp, Matcher, Options, QueryError, Queryable, Sample,
    Series,
};

struct Fleet {
    labels: Vec<Labels>,
    interval_ms: i64,
}

impl Queryable for Fleet {
    fn select(&self, ms: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<Series>, QueryError> {
        let compiled: Vec<(Matcher, Option<regex::Regex>)> = ms
            .iter()
            .map(|m| {
                Ok((
                    m.clone(),
                    if matches!(m.op, MatchOp::Re | MatchOp::NotRe) {
                        Some(m.compile()?)
                    } else {
                        None
                    },
                ))
            })
            .collect::<Result<_, QueryError>>()?;
        let first = (mint + self.interval_ms - 1).div_euclid(self.interval_ms) * self.interval_ms;
        let mut out = Vec::new();
        for (i, l) in self.labels.iter().enumerate() {
            let ok = compiled.iter().all(|(m, re)| {
                let v = l
                    .iter()
                    .find(|(n, _)| *n == m.name)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("");
                match (m.op, re) {
                    (MatchOp::Re, Some(r)) => r.is_match(v),
                    (MatchOp::NotRe, Some(r)) => !r.is_match(v),
                    _ => m.matches(v),
                }
            });
            if !ok {
                continue;
            }
            let mut samples = Vec::new();
            let mut t = first;
            while t <= maxt {
                samples.push(Sample {
                    t,
                    v: (t / 1000) as f64 * (1 + i % 7) as f64,
                });
                t += self.interval_ms;
            }
            out.push(Series {
                labels: l.clone(),
                samples,
            });
        }
        Ok(out)
    }
}

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn time<F: FnMut() -> usize>(name: &str, runs: usize, mut f: F) {
    let mut ms = Vec::new();
    let mut n = 0;
    for _ in 0..runs {
        let t = Instant::now();
        n = f();
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "{name}: {n} result series, p50 {:.1} ms, p99 {:.1} ms ({runs} runs)",
        pct(ms.clone(), 0.5),
        pct(ms, 0.99)
    );
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let nodes: usize = a.get(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let metrics: usize = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    let interval: i64 = a.get(3).and_then(|s| s.parse().ok()).unwrap_or(15);
    let mut labels = Vec::new();
    for n in 0..nodes {
        for m in 0..metrics {
            labels.push(vec![
                ("__name__".to_string(), format!("m_{m}")),
                ("node_name".to_string(), format!("node-{n}")),
            ]);
        }
    }
    let fleet = Fleet {
        labels,
        interval_ms: interval * 1000,
    };
    println!("{} series, one sample every {interval} s", nodes * metrics);
    let opts = Options {
        max_samples: usize::MAX,
        ..Options::default()
    };
    let end = 7_200_000;
    let count = |v: tracerd_promql::Value| match v {
        tracerd_promql::Value::Vector(v) => v.len(),
        tracerd_promql::Value::Matrix(m) => m.len(),
        _ => 1,
    };
    time("instant sum by (node_name) over every series", 10, || {
        count(
            instant_query(
                &fleet,
                r#"sum by (node_name) ({__name__=~"m_.*"})"#,
                end,
                &opts,
            )
            .unwrap(),
        )
    });
    time(
        "range 1h/15s sum by (node_name) (rate(m_0[1m]))",
        20,
        || {
            count(
                range_query(
                    &fleet,
                    "sum by (node_name) (rate(m_0[1m]))",
                    end - 3_600_000,
                    end,
                    15_000,
                    &opts,
                )
                .unwrap(),
            )
        },
    );
    time(
        "range 1h/15s max_over_time(m_0{node_name=\"node-7\"}[5m])",
        20,
        || {
            count(
                range_query(
                    &fleet,
                    r#"max_over_time(m_0{node_name="node-7"}[5m])"#,
                    end - 3_600_000,
                    end,
                    15_000,
                    &opts,
                )
                .unwrap(),
            )
        },
    );
    if nodes * metrics > 20_000 {
        println!("(range over every series skipped above 20k series: no dashboard asks it)");
        return;
    }
    time(
        "range 1h/15s sum by (node_name) over every series",
        3,
        || {
            count(
                range_query(
                    &fleet,
                    r#"sum by (node_name) ({__name__=~"m_.*"})"#,
                    end - 3_600_000,
                    end,
                    15_000,
                    &opts,
                )
                .unwrap(),
            )
        },
    );
}
