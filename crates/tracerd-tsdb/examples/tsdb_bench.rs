//! Memory and query benchmark of the store: N nodes × M metrics, one sample a second each,
//! for S seconds of simulated time; prints bytes per sample, RSS, and query latencies.
//!
//! `cargo run --release -p tracerd-tsdb --example tsdb_bench -- [--nodes 1000] [--metrics 200]
//!  [--seconds 3600] [--jitter-ms 0] [--runs 20] [--threads 2]`
//!
//! Value mix per node (slowly changing, like a node's metrics): 50 % gauges that change on
//! 1 second in 300 to a new small integer, 30 % counters that grow by a per-series step each
//! second (one step in 20 is one more), 20 % gauges that move to a new value within ±64 KiB
//! every 10 seconds (memory-like).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracerd_promql::{
    instant_query, range_query, Labels, MatchOp, Matcher, Options, Queryable, Value,
};
use tracerd_tsdb::{Config, Store};

fn arg(args: &[String], name: &str, default: i64) -> i64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
        .unwrap_or(default)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// This thread's CPU time (ns): on a shared machine wall time includes others' load.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// xorshift64*: deterministic, no dependency.
fn rnd(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

fn labels(node: i64, metric: i64) -> Labels {
    vec![
        (
            "__name__".to_string(),
            format!("cardano_node_metrics_m{metric:03}"),
        ),
        ("node_name".to_string(), format!("node-{node:04}")),
    ]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let nodes = arg(&args, "--nodes", 1000);
    let metrics = arg(&args, "--metrics", 200);
    let seconds = arg(&args, "--seconds", 3600);
    let jitter = arg(&args, "--jitter-ms", 0);
    let runs = arg(&args, "--runs", 20).max(1) as usize;
    let threads = arg(&args, "--threads", 2).max(1);
    let rss0 = rss_kib();
    let store = Arc::new(Store::new(Config {
        max_bytes: usize::MAX,
        ..Config::default()
    }));
    let t0: i64 = 1_764_547_200_000; // 2025-12-01T00:00:00Z
    let started = Instant::now();
    std::thread::scope(|s| {
        for th in 0..threads {
            let store = store.clone();
            s.spawn(move || {
                let mine: Vec<i64> = (0..nodes).filter(|n| n % threads == th).collect();
                let refs: Vec<_> = mine
                    .iter()
                    .flat_map(|&n| (0..metrics).map(move |m| (n, m)))
                    .map(|(n, m)| store.series(&labels(n, m)).expect("series"))
                    .collect();
                let mut vals: Vec<f64> = (0..refs.len()).map(|i| (i % 1000) as f64).collect();
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (th as u64 + 1);
                for sec in 0..seconds {
                    for (i, r) in refs.iter().enumerate() {
                        let m = (i as i64) % metrics;
                        let kind = m % 10;
                        let v = &mut vals[i];
                        if kind < 5 {
                            if rnd(&mut rng) % 300 == 0 {
                                *v = (rnd(&mut rng) % 50) as f64;
                            }
                        } else if kind < 8 {
                            *v += (1 + m % 4) as f64 + if sec % 20 == 0 { 1.0 } else { 0.0 };
                        } else if sec % 10 == 0 {
                            *v = 500e6 + ((rnd(&mut rng) % 131_072) as f64 - 65_536.0).round();
                        }
                        let j = if jitter > 0 {
                            (rnd(&mut rng) % (2 * jitter as u64 + 1)) as i64 - jitter
                        } else {
                            0
                        };
                        store
                            .append_ref(*r, t0 + sec * 1000 + j, *v)
                            .expect("append");
                    }
                }
            });
        }
    });
    let ingest = started.elapsed();
    let st = store.stats();
    let rss1 = rss_kib();
    println!(
        "ingest: {nodes} nodes x {metrics} metrics x {seconds} s (jitter ±{jitter} ms) = {} samples in {:.1} s ({:.1} M samples/s, {threads} threads)",
        st.samples,
        ingest.as_secs_f64(),
        st.samples as f64 / ingest.as_secs_f64() / 1e6
    );
    println!(
        "store: {} series; chunk bytes {:.1} MiB = {:.3} bytes/sample; counted bytes (with labels and index estimate) {:.1} MiB = {:.3} bytes/sample",
        st.series,
        st.chunk_bytes as f64 / 1048576.0,
        st.chunk_bytes as f64 / st.samples as f64,
        st.bytes as f64 / 1048576.0,
        st.bytes as f64 / st.samples as f64
    );
    println!(
        "rss: {:.1} MiB after ingest ({:.1} MiB at start) = {:.3} bytes/sample of process growth",
        rss1 as f64 / 1024.0,
        rss0 as f64 / 1024.0,
        (rss1 - rss0) as f64 * 1024.0 / st.samples as f64
    );

    let end = t0 + (seconds - 1) * 1000;
    let all = [Matcher {
        name: "__name__".into(),
        op: MatchOp::Re,
        value: "cardano_node_metrics_m.*".into(),
    }];
    let one = [Matcher {
        name: "__name__".into(),
        op: MatchOp::Equal,
        value: "cardano_node_metrics_m005".into(),
    }];
    let time = |label: &str, f: &dyn Fn() -> Result<usize, String>| {
        let mut d = Vec::new();
        let mut cpu = Vec::new();
        let mut size = 0;
        for _ in 0..runs {
            let t = Instant::now();
            let c = cpu_ns();
            match f() {
                Ok(n) => size = n,
                Err(e) => {
                    println!("{label}: not measured: {e}");
                    return;
                }
            }
            d.push(t.elapsed());
            cpu.push(Duration::from_nanos(cpu_ns() - c));
        }
        println!(
            "{label}: {size} result items; wall p50 {:.1} ms, p99 {:.1} ms; CPU p50 {:.1} ms, p99 {:.1} ms; over {runs} runs",
            pct(&mut d, 0.5).as_secs_f64() * 1e3,
            pct(&mut d, 0.99).as_secs_f64() * 1e3,
            pct(&mut cpu, 0.5).as_secs_f64() * 1e3,
            pct(&mut cpu, 0.99).as_secs_f64() * 1e3
        );
    };
    time("select all series, last 5 min", &|| {
        store
            .select(&all, end - 300_000, end)
            .map(|v| v.len())
            .map_err(|e| e.to_string())
    });
    time("select one metric of every node, 1 h + 5 min", &|| {
        store
            .select(&one, end - 3_900_000, end)
            .map(|v| v.len())
            .map_err(|e| e.to_string())
    });
    let q: &dyn Queryable = store.as_ref();
    time("instant  sum by (node_name) (all 200k series)", &|| {
        instant_query(
            q,
            r#"sum by (node_name) ({__name__=~"cardano_node_metrics_m.*"})"#,
            end,
            &Options::default(),
        )
        .map(|v| match v {
            Value::Vector(v) => v.len(),
            _ => 0,
        })
        .map_err(|e| e.to_string())
    });
    time(
        "range 1 h step 15 s  sum by (node_name) (rate(m005[1m]))",
        &|| {
            range_query(
                q,
                "sum by (node_name) (rate(cardano_node_metrics_m005[1m]))",
                end - 3_600_000,
                end,
                15_000,
                &Options::default(),
            )
            .map(|v| match v {
                Value::Matrix(m) => m.len(),
                _ => 0,
            })
            .map_err(|e| e.to_string())
        },
    );
    println!("rss at end: {:.1} MiB", rss_kib() as f64 / 1024.0);
}
