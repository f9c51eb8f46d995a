//! Query latency of upstream's language over the real store: 1,000 nodes × 3 metrics updated
//! every second for an hour (10.8 M samples), then the upstream Grafana dashboard's panel
//! query and a few of the examples' shapes, p50/p99 of 20 runs each.
//!
//! `cargo run --release -p tracerd-tsquery --example tsquery_bench [nodes]`

use std::time::Instant;

use tracerd_promql::{Grid, Matcher, QueryError, Queryable, Series};
use tracerd_tsdb::{Config, Store};
use tracerd_tsquery::{execute, Config as QueryConfig, Source};

struct Src<'a>(&'a Store);

impl Queryable for Src<'_> {
    fn select(&self, ms: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<Series>, QueryError> {
        self.0.select(ms, mint, maxt)
    }

    fn select_latest(&self, ms: &[Matcher], grid: &Grid) -> Result<Vec<Series>, QueryError> {
        self.0.select_latest(ms, grid)
    }
}

impl Source for Src<'_> {
    fn metric_names(&self) -> Result<Vec<String>, QueryError> {
        Ok(self.0.label_values("__name__"))
    }
}

fn main() {
    let nodes: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let store = Store::new(Config::default());
    let end: i64 = 1_753_000_000_000;
    let start = end - 3_600_000;
    let names = [
        "cardano_node_metrics_Mem_resident_int",
        "cardano_node_metrics_served_counter",
        "cardano_node_metrics_density_real",
    ];
    let t0 = Instant::now();
    let mut refs = Vec::new();
    for n in 0..nodes {
        for name in names {
            let labels = vec![
                ("__name__".to_string(), name.to_string()),
                ("node_name".to_string(), format!("relay-{n:04}")),
            ];
            refs.push(store.series(&labels).unwrap());
        }
    }
    let mut t = start;
    while t <= end {
        for (i, r) in refs.iter().enumerate() {
            let v = ((t - start) / 1000) as f64 * (1 + i % 7) as f64;
            let _ = store.append_ref(*r, t, v);
        }
        t += 1000;
    }
    println!(
        "loaded {} series, {} samples in {:.1} s",
        refs.len(),
        store.stats().samples,
        t0.elapsed().as_secs_f64()
    );
    let now = end as u64;
    let grafana =
        format!("cardano_node_metrics_Mem_resident_int[epoch + {start}ms; epoch + {end}ms : 15s]");
    let queries = [
        ("instant vector", "cardano_node_metrics_Mem_resident_int now".to_string()),
        ("dashboard panel, 1 h at 15 s", grafana),
        ("avg_over_time 1 h (15 s default step)", "avg_over_time cardano_node_metrics_Mem_resident_int[now - 1h; now]".into()),
        ("rate 5 m (query4 shape)", "rate cardano_node_metrics_served_counter[now - 5m; now] > 0.5".into()),
        ("lambda range 1 h at 1 m (query9 shape)", "increase (\\t -> map (\\x -> to_scalar (x < 300)) (to_scalar t - cardano_node_metrics_served_counter t))[now-1h;now:1m]".into()),
        ("quantile_by (query11 shape)", "100 * quantile_by (\"node_name\") 0.2 (20 * cardano_node_metrics_density_real now) < 42".into()),
    ];
    let cfg = QueryConfig::default();
    for (what, q) in queries {
        let mut ms: Vec<f64> = (0..20)
            .map(|_| {
                let t = Instant::now();
                let v = execute(&Src(&store), &q, now, &cfg).unwrap_or_else(|e| panic!("{q}: {e}"));
                let _json = v.to_json();
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        println!("{what:42} p50 {:8.1} ms  p99 {:8.1} ms", ms[10], ms[19]);
    }
}
