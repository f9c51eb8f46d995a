//! Every query of cardano-timeseries-io's `examples/` and every query of the upstream Grafana
//! dashboard (`bench/grafana-datasource/dashboards/node-metrics.json`, after the plugin's
//! substitution of `$__from`/`$__to`/`$__interval`) parses and evaluates; the examples'
//! results on small hand-made data sets are checked against hand-computed values.

mod common;

use common::{scalars, Mem};
use tracerd_tsquery::{execute, parse, Config, ErrorKind, Value};

const EXAMPLES: &[(&str, &str)] = &[
    ("query1", include_str!("data/query1.txt")),
    ("query2", include_str!("data/query2.txt")),
    ("query3", include_str!("data/query3.txt")),
    ("query4", include_str!("data/query4.txt")),
    ("query5", include_str!("data/query5.txt")),
    ("query6", include_str!("data/query6.txt")),
    ("query7", include_str!("data/query7.txt")),
    ("query8", include_str!("data/query8.txt")),
    ("query9", include_str!("data/query9.txt")),
    ("query10", include_str!("data/query10.txt")),
    ("query11", include_str!("data/query11.txt")),
    ("query12", include_str!("data/query12.txt")),
];

const DASHBOARD: &str = include_str!("data/grafana-dashboard-queries.txt");

/// "Now" of the data sets: two days after the epoch.
const N: u64 = 2 * 86_400_000;
const MIN: u64 = 60_000;

fn example(name: &str) -> String {
    let q = EXAMPLES.iter().find(|(n, _)| *n == name).unwrap().1;
    // query1 is a template of the nix alert rules; `${env}` is its environment.
    q.replace("${env}", "mainnet")
}

/// One sample a minute in `[from, to]`, value `f(t)`.
fn minutes(from: u64, to: u64, f: impl Fn(u64) -> f64) -> Vec<(u64, f64)> {
    (from / MIN..=to / MIN)
        .map(|m| (m * MIN, f(m * MIN)))
        .collect()
}

fn flat(v: f64) -> Vec<(u64, f64)> {
    minutes(N - 26 * 3_600_000, N, |_| v)
}

fn node(n: &str) -> [(&'static str, &str); 2] {
    [("environment", "mainnet"), ("node_name", n)]
}

fn store() -> Mem {
    let h = 3_600_000;
    Mem::new()
        .add("blockMetric", &node("a"), &flat(100.0))
        .add("blockMetric", &node("b"), &flat(50.0))
        .add("slotMetric", &node("a"), &flat(1000.0))
        .add("slotMetric", &node("b"), &flat(900.0))
        .add("kesPeriodsRemaining", &node("a"), &flat(40.0))
        .add("kesPeriodsRemaining", &node("b"), &flat(100.0))
        .add(
            "cardano_node_metrics_Forge_forged_int",
            &node("a"),
            &flat(5.0),
        )
        .add(
            "cardano_node_metrics_Forge_forged_int",
            &node("b"),
            &minutes(N - 26 * h, N, |t| if t < N - 12 * h { 5.0 } else { 8.0 }),
        )
        .add(
            "cardano_node_metrics_slotsMissedNum_int",
            &node("a"),
            &minutes(N - h, N, |t| t as f64),
        )
        .add(
            "cardano_node_metrics_slotsMissedNum_int",
            &node("b"),
            &flat(3.0),
        )
        .add(
            "netdata_statsd_cardano_node_ping_latency_ms_gauge_value_average",
            &node("a"),
            &flat(600.0),
        )
        .add(
            "netdata_statsd_cardano_node_ping_latency_ms_gauge_value_average",
            &node("b"),
            &flat(100.0),
        )
        .add(
            "cardano_node_metrics_blockadoption_forgeDelay_real",
            &node("a"),
            &flat(5.0),
        )
        .add(
            "cardano_node_metrics_blockadoption_forgeDelay_real",
            &node("b"),
            &flat(4.0),
        )
        .add(
            "cardano_node_metrics_blockfetchclient_blocksize",
            &node("a"),
            &flat(90112.0 * 0.5),
        )
        .add(
            "cardano_node_metrics_blockfetchclient_blocksize",
            &node("b"),
            &flat(90112.0 * 0.3),
        )
        .add(
            "cardano_node_metrics_blockfetchclient_blockdelay_cdfFive",
            &node("a"),
            &flat(0.95),
        )
        .add(
            "cardano_node_metrics_blockfetchclient_blockdelay_cdfFive",
            &node("b"),
            &flat(0.5),
        )
        .add(
            "cardano_node_metrics_nodeStartTime_int",
            &node("a"),
            &flat((N - 30 * MIN) as f64),
        )
        .add("cardano_node_metrics_blockNum_int", &node("a"), &flat(7.0))
        .add(
            "cardano_node_metrics_blockNum_int",
            &node("c"),
            &minutes(N - 6 * h, N - 4 * h, |_| 9.0),
        )
        .add("cardano_node_metrics_density_real", &node("a"), &flat(0.01))
        .add("cardano_node_metrics_density_real", &node("b"), &flat(0.05))
        .add(
            "cardano_node_metrics_density_real",
            &[("environment", "preview"), ("node_name", "c")],
            &flat(0.04),
        )
}

fn eval(q: &str) -> Result<Value, tracerd_tsquery::Error> {
    execute(&store(), q, N, &Config::default())
}

/// (node_name or environment, value) of each element of an instant vector.
fn elems(v: &Value) -> Vec<(String, String)> {
    let Value::InstantVector(v) = v else {
        panic!("expected an instant vector, got {v:?}")
    };
    v.iter()
        .map(|i| {
            let key = i
                .labels
                .iter()
                .find(|(k, _)| k == "node_name")
                .or_else(|| i.labels.iter().find(|(k, _)| k == "environment"))
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            (key, i.v.show())
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn every_example_parses() {
    for (name, q) in EXAMPLES {
        if let Err(e) = parse(q) {
            panic!("{name} does not parse: {e}\n{q}");
        }
    }
}

#[test]
fn examples_give_the_hand_computed_answers() {
    let check = |name: &str, want: &[(&str, &str)]| {
        let v = eval(&example(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(elems(&v), pairs(want), "{name}");
    };
    // b's block is 50 behind the max (> 42) and its slot 100 behind (not < 42).
    check("query1", &[("b", "(true, false)")]);
    check("query2", &[("a", "40.0")]);
    // a forged nothing in the last 24 h; b went from 5 to 8.
    check("query3", &[("a", "0.0")]);
    // Upstream's rate is per millisecond: a's counter grows by 1 a millisecond.
    check("query4", &[("a", "1.0")]);
    check("query5", &[("a", "600.0")]);
    check("query8", &[("b", "0.5")]);
    // c stopped 4 h ago: 121 + 5 (staleness) of its 361 samples are non-zero, < 350, and it
    // has no blockNum now; a has 361 and one now.
    check("query10", &[("c", "true")]);
    // Per environment, the 20th percentile of 20 × density (cadpw): mainnet 0.2 → 20 < 42;
    // preview 0.8 → 80.
    for q in ["query11", "query12"] {
        let v = eval(&example(q)).unwrap();
        let Value::InstantVector(v) = v else { panic!() };
        assert_eq!(v.len(), 1, "{q}");
        assert_eq!(
            *v[0].labels,
            vec![("environment".to_string(), "mainnet".to_string())]
        );
        let Value::Scalar(x) = v[0].v else { panic!() };
        assert!((x - 20.0).abs() < 1e-9, "{q}: {x}");
    }
    // (5 + 4) / 2 = 4.5 >= 4.5; 100 × (0.5 + 0.3) / 2 = 40, not > 42.
    assert!(matches!(eval(&example("query6")), Ok(Value::Bool(true))));
    assert!(matches!(eval(&example("query7")), Ok(Value::Bool(false))));
}

#[test]
fn query9_computes_now_minus_start_not_upstreams_swapped_operands() {
    // to_scalar t - start: negative (< 300) before a's start 30 min ago, then far above.
    // The 1 h range starts at 1 and ends at 0: increase -1. Upstream evaluates
    // `scalar - vector` as `vector - scalar` and would answer +1 here.
    let inner = "map (\\x -> round x) (increase (\\t -> map (\\x -> to_scalar (x < 300)) \
                 (to_scalar t - cardano_node_metrics_nodeStartTime_int t))[now-1h;now:1m])";
    assert_eq!(scalars(&eval(inner)), [-1.0]);
    assert_eq!(elems(&eval(&example("query9")).unwrap()), pairs(&[]));
    assert_eq!(scalars(&eval("100 - kesPeriodsRemaining now")), [0.0, 60.0]);
    assert_eq!(scalars(&eval("200 / kesPeriodsRemaining now")), [2.0, 5.0]);
}

#[test]
fn every_dashboard_query_evaluates_to_a_matrix() {
    let from = N - 3_600_000;
    let mut store = Mem::new();
    let queries: Vec<&str> = DASHBOARD
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('['))
        .collect();
    assert_eq!(queries.len(), 22);
    for q in &queries {
        let name = q.split('[').next().unwrap();
        store = store.add(
            name,
            &[("node_name", "relay-1")],
            &minutes(from, N, |t| (t / MIN) as f64),
        );
    }
    for q in queries {
        // What the plugin sends: `$__from` → `epoch + <ms>ms`, Grafana's `$__interval` → 1m.
        let sent = q
            .replace("$__from", &format!("epoch + {from}ms"))
            .replace("$__to", &format!("epoch + {N}ms"))
            .replace("$__interval", "1m");
        let v =
            execute(&store, &sent, N, &Config::default()).unwrap_or_else(|e| panic!("{sent}: {e}"));
        let Value::RangeVector(m) = v else {
            panic!("{sent}: {v:?}")
        };
        assert_eq!(m.len(), 1, "{sent}");
        assert_eq!(m[0].points.len(), 61, "{sent}");
        let Value::Scalar(last) = m[0].points[60].1 else {
            panic!()
        };
        assert_eq!(last, (N / MIN) as f64);
        assert!(v_json_ok(&sent, &store));
    }
}

fn v_json_ok(q: &str, store: &Mem) -> bool {
    let j = execute(store, q, N, &Config::default()).unwrap().to_json();
    j.starts_with("{\"resultType\":\"matrix\",\"result\":[{\"metric\":{\"node_name\":\"relay-1\"},\"values\":[[")
}

/// Run `f` on a thread with the stack the crate asks for.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(tracerd_tsquery::STACK_BYTES)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn hostile_queries_fail_cleanly_within_the_stack() {
    on_small_stack(|| {
        let cfg = Config::default();
        let m = Mem::new();
        // Self-application: upstream's type checker rejects it; here the depth limit stops it.
        let e = execute(&m, "(\\x -> x x) (\\x -> x x)", N, &cfg).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Execution);
        assert!(e.message.contains("nested more than"), "{e}");
        // A long chain evaluates; a longer one is refused by the parser.
        let chain = |n: usize| vec!["1"; n].join(" + ");
        assert!(matches!(execute(&m, &chain(390), N, &cfg), Ok(Value::Scalar(x)) if x == 390.0));
        let e = execute(&m, &chain(5000), N, &cfg).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Parse);
        let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
        let e = execute(&m, &deep, N, &cfg).unwrap_err();
        assert!(e.message.contains("nested more than"), "{e}");
        // A zero step, and a range with more steps than the point budget.
        let s = Mem::new().add("m", &[], &[(0, 1.0)]);
        let e = execute(&s, "m[epoch; now : 0ms]", N, &cfg).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Execution);
        let e = execute(&s, "m[epoch; now : 1ms]", N, &cfg).unwrap_err();
        assert!(e.message.contains("exceeds the limit"), "{e}");
    });
}

#[test]
fn the_deadline_stops_a_long_query() {
    let cfg = Config {
        deadline_exceeded: Some(Box::new(|| true)),
        ..Config::default()
    };
    let s = Mem::new().add("m", &[], &[(0, 1.0)]);
    let q = "let f = \\t -> map (\\x -> x + 1) (m t) in avg_over_time (f[epoch; epoch + 1h : 1s])";
    let e = execute(&s, q, N, &cfg).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert!(execute(&s, q, N, &Config::default()).is_ok());
}

/// Random token soup: whatever it is, parsing and evaluating it answers (a value or an
/// error) and never panics.
#[test]
fn random_queries_never_panic() {
    const TOKENS: &[&str] = &[
        "m",
        "now",
        "epoch",
        "1",
        "-2",
        "0.5",
        "1s",
        "5m",
        "0ms",
        "(",
        ")",
        "[",
        "]",
        ";",
        ":",
        ",",
        "{",
        "}",
        "\"k\"",
        "\"1\"",
        "=",
        "!=",
        "==",
        "<",
        ">=",
        "+",
        "-",
        "*",
        "/",
        "&&",
        "||",
        "!",
        "\\x ->",
        "x",
        "let y =",
        "in",
        "y",
        "fst",
        "snd",
        "map",
        "filter",
        "join",
        "unless",
        "rate",
        "increase",
        "avg",
        "max",
        "min",
        "abs",
        "round",
        "to_scalar",
        "avg_over_time",
        "sum_over_time",
        "quantile_over_time",
        "quantile_by (\"k\")",
        "metrics",
        "true",
        "false",
        "()",
        "`m`",
        "earliest m",
    ];
    let store = Mem::new()
        .add(
            "m",
            &[("k", "1")],
            &[(N - 2000, 1.0), (N - 1000, 2.0), (N, 4.0)],
        )
        .add("m", &[("k", "2")], &[(N, 8.0)]);
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let cfg = Config {
        max_points: 10_000,
        ..Config::default()
    };
    let mut answered = 0;
    for _ in 0..20_000 {
        let n = 1 + next() % 12;
        let q: Vec<&str> = (0..n)
            .map(|_| TOKENS[(next() % TOKENS.len() as u64) as usize])
            .collect();
        let q = q.join(" ");
        if let Ok(v) = execute(&store, &q, N, &cfg) {
            let _ = v.to_json();
            answered += 1;
        }
    }
    // Some of the soup is a query: the test is not vacuous.
    assert!(answered > 100, "{answered}");
}
