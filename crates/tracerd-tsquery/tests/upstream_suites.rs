//! cardano-timeseries-io's own test suites (`test/Cardano/Timeseries/{Elab/Expr/Parser,Elab,
//! Interp}/Suite.hs` in cardano-node's `bench/cardano-timeseries-io`, Apache-2.0), case by
//! case, with upstream's expected outcomes and values.

mod common;

use common::{run_at, scalars, Mem};
use tracerd_tsquery::ast::{BinOp, Kind};
use tracerd_tsquery::{parse, ErrorKind, Value};

// ---------------------------------------------------------------- parser suite

const PARSES: &[&str] = &[
    // atoms
    "now",
    "epoch",
    "true",
    "false",
    "()",
    "(1, 2)",
    "(1, 2, 3)",
    "((1, 2), 3)",
    "(1 + 2)",
    "42",
    "-42",
    "3.14",
    "-3.14",
    "\"hello\"",
    "\"\"",
    "my_metric",
    "metric_0",
    "`foo bar`",
    "`let`",
    "`metrics`",
    // durations
    "100ms",
    "0ms",
    "5s",
    "3m",
    "2h",
    "1s + 2",
    // negation
    "! true",
    "! false",
    "! x",
    // ranges
    "x[epoch; now]",
    "x[epoch; now : 1s]",
    "x[now - 1h; now]",
    "(avg x)[epoch; now]",
    "x[epoch; now][epoch; now]",
    "x[now - 30m; now : 1s]",
    // label filters
    "x{\"a\" = \"1\"}",
    "x{\"a\" != \"1\"}",
    "x{\"a\" = \"1\", \"b\" != \"2\"}",
    "x{}",
    "x[epoch; now]{\"a\" = \"1\"}",
    "x{\"a\" = \"1\"}[epoch; now]",
    // builtins
    "fst x",
    "snd x",
    "min x",
    "max x",
    "avg x",
    "abs x",
    "round x",
    "increase x",
    "rate x",
    "avg_over_time x",
    "sum_over_time x",
    "to_scalar x",
    "metrics",
    "filter f x",
    "join x y",
    "map f x",
    "unless x y",
    "quantile_over_time 0.5 x",
    "quantile_by () 0.5 x",
    "quantile_by (\"a\") 0.5 x",
    "quantile_by (\"a\", \"b\") 0.5 x",
    "earliest my_metric",
    "latest my_metric",
    "avg (rate x)",
    "map f (filter g x)",
    // arithmetic, comparison, boolean
    "1 + 2",
    "1 - 2",
    "2 * 3",
    "4 / 2",
    "1 + 2 + 3",
    "5 - 2 - 1",
    "2 * 3 * 4",
    "8 / 2 / 2",
    "1 + 2 * 3 - 4 / 2",
    "1 == 2",
    "1 != 2",
    "1 < 2",
    "1 <= 2",
    "1 > 2",
    "1 >= 2",
    "true && false",
    "true || false",
    "true && false && true",
    "true || false || true",
    "true && false || true && true",
    // let and lambda
    "let x = 1 in x",
    "let x = 1 in let y = 2 in x + y",
    "let x = 2 * 3 in x + 1",
    "let f = \\x -> x + 1 in f 2",
    "let x = let y = 1 in y in x",
    "\\x -> x",
    "\\x -> x + 1",
    "\\x -> \\y -> x + y",
    "(\\x -> x + 1) 2",
    // user application
    "f x",
    "f x y",
    "f 42",
    "f (x + 1)",
    "let f = \\x -> x in f x",
];

const FAILS: &[&str] = &[
    "",
    "1 +",
    "(1 + 2",
    "1)",
    "let",
    "let x = 1",
    "\\x",
    "in",
    "1 @ 2",
    "fst",
    "snd",
    "min",
    "max",
    "avg",
    "abs",
    "increase",
    "rate",
    "avg_over_time",
    "sum_over_time",
    "to_scalar",
    "filter f",
    "join x",
    "map f",
    "unless x",
    "quantile_over_time 0.5",
];

#[test]
fn every_upstream_parser_case_parses() {
    for q in PARSES {
        if let Err(e) = parse(q) {
            panic!("{q:?} should parse: {e}");
        }
    }
}

#[test]
fn every_upstream_parser_failure_fails() {
    for q in FAILS {
        assert!(parse(q).is_err(), "{q:?} should not parse");
    }
}

fn bin(k: &Kind) -> Option<(BinOp, &Kind, &Kind)> {
    match k {
        Kind::Bin(op, a, b) => Some((*op, &a.kind, &b.kind)),
        _ => None,
    }
}

fn is(k: &Kind, op: BinOp) -> bool {
    bin(k).is_some_and(|(o, _, _)| o == op)
}

#[test]
fn precedence_and_associativity_are_upstreams() {
    let shape = |q: &str| parse(q).unwrap().kind;
    let k = shape("1 + 2 * 3");
    assert!(bin(&k).is_some_and(|(o, _, r)| o == BinOp::Add && is(r, BinOp::Mul)));
    let k = shape("1 * 2 + 3");
    assert!(bin(&k).is_some_and(|(o, l, _)| o == BinOp::Add && is(l, BinOp::Mul)));
    for (q, op) in [
        ("1 + 2 + 3", BinOp::Add),
        ("2 * 3 * 4", BinOp::Mul),
        ("5 - 2 - 1", BinOp::Sub),
    ] {
        let k = shape(q);
        assert!(
            bin(&k).is_some_and(|(o, l, _)| o == op && is(l, op)),
            "{q} is left-assoc"
        );
    }
    let k = shape("true && false || true");
    assert!(bin(&k).is_some_and(|(o, l, _)| o == BinOp::Or && is(l, BinOp::And)));
    let k = shape("1 < 2 && 3 > 4");
    assert!(
        bin(&k).is_some_and(|(o, l, r)| o == BinOp::And && is(l, BinOp::Lt) && is(r, BinOp::Gt))
    );
    let k = shape("1 + 2 < 3 + 4");
    assert!(
        bin(&k).is_some_and(|(o, l, r)| o == BinOp::Lt && is(l, BinOp::Add) && is(r, BinOp::Add))
    );
    let k = shape("(1 + 2) * 3");
    assert!(bin(&k).is_some_and(|(o, l, _)| o == BinOp::Mul && is(l, BinOp::Add)));
    assert!(matches!(shape("let x = 1 in x + 2"), Kind::Let(_, _, b) if is(&b.kind, BinOp::Add)));
    assert!(matches!(shape("\\x -> x + 1"), Kind::Lambda(_, b) if is(&b.kind, BinOp::Add)));
}

#[test]
fn parse_errors_say_where_and_what() {
    let e = parse("let x = 1 in\n  x +").unwrap_err();
    assert_eq!((e.pos.line, e.pos.col), (2, 6), "{e}");
    let e = parse("1 @ 2").unwrap_err();
    assert_eq!((e.pos.line, e.pos.col), (1, 3), "{e}");
    assert!(e.message.contains("unexpected \"@\""), "{e}");
    let e = parse("map f").unwrap_err();
    assert!(
        e.message
            .contains("wrong number of arguments (1) for `map`"),
        "{e}"
    );
}

// ---------------------------------------------------------------- elaboration suite

const T: u64 = 86_400_000;

fn metric_store(names: &[&str]) -> Mem {
    names.iter().fold(Mem::new(), |m, n| {
        m.add(n, &[("k", "v")], &[(T - 1000, 1.0), (T, 2.0)])
    })
}

/// Upstream's `ok`: the query elaborates. Here: it neither fails to parse nor is rejected as
/// meaningless (`bad_data`) when it runs.
fn ok_with(names: &[&str], q: &str) {
    let r = run_at(&metric_store(names), T, q);
    if let Err(e) = &r {
        assert!(
            !matches!(e.kind, ErrorKind::Parse | ErrorKind::BadData),
            "{q:?} should be accepted: {e}"
        );
    }
}

fn bad_with(names: &[&str], q: &str) -> String {
    match run_at(&metric_store(names), T, q) {
        Err(e) if matches!(e.kind, ErrorKind::Parse | ErrorKind::BadData) => e.to_string(),
        other => panic!("{q:?} should be rejected, got {other:?}"),
    }
}

#[test]
fn upstream_elaboration_successes_are_accepted() {
    for q in [
        "42",
        "(-1)",
        "3.14",
        "true",
        "false",
        "now",
        "epoch",
        "()",
        "(1, 2)",
        "(true, now)",
        "((1, 2), 3)",
        "(1, 2, 3)",
        "100ms",
        "5s",
        "3m",
        "2h",
        "1 + 2",
        "5 - 3",
        "2 * 3",
        "10 / 2",
        "now + 1s",
        "1s + now",
        "now - 1h",
        "1s + 2s",
        "1 == 1",
        "1 != 2",
        "1 < 2",
        "1 <= 2",
        "2 > 1",
        "2 >= 1",
        "true == false",
        "true != false",
        "true && false",
        "true || false",
        "! true",
        "true && false && true",
        "true || false || true",
        "let x = 1 in x",
        "let x = 1 in x + 1",
        "let t = now in t",
        "let b = true in b",
        "let x = 1 in let y = 2 in x + y",
        "\\x -> x",
        "\\x -> now + x",
        "\\x -> x - 1s",
        "(\\x -> x + 1) 5",
        "let f = \\x -> x + 1 in f 5",
        "\\x -> ! x",
        "(\\f -> f 1) (\\x -> x + 1)",
        "fst (1, 2)",
        "snd (1, 2)",
        "fst (true, now)",
        "snd (true, now)",
        "fst (fst ((1, 2), 3))",
        "to_scalar 1",
        "to_scalar true",
        "to_scalar now",
        "to_scalar 1s",
        "abs 1",
        "abs (-1)",
        "round 3.14",
        "round 0",
        "metrics",
    ] {
        ok_with(&[], q);
    }
    for q in [
        "\\x -> \\y -> m [now; now : x + y]",
        "\\x -> \\y -> m [x - y; x]",
        "m now + 1",
        "1 + m now",
        "m now == 1",
        "1 == m now",
        "m [now - 1h; now]",
        "m [now - 1h; now : 1m]",
        "avg_over_time (m [now - 1h; now])",
        "sum_over_time (m [now - 1h; now])",
        "increase (m [now - 1h; now])",
        "rate (m [now - 1h; now])",
        "quantile_over_time 0.95 (m [now - 1h; now])",
        "min (m now)",
        "max (m now)",
        "avg (m now)",
        "filter (\\x -> x > 0) (m now)",
        "map (\\x -> x + 1) (m now)",
        "join (m now) (m now)",
        "unless (m now) (m now)",
        "quantile_by (\"k\") 0.95 (m now)",
        "(m now) {\"k\" = \"v\"}",
        "m now",
    ] {
        ok_with(&["m"], q);
    }
    ok_with(&["m1", "m2"], "join (m1 now) (m2 now)");
}

#[test]
fn upstream_elaboration_failures_are_rejected() {
    for q in [
        "1 + now",
        "now + now",
        "true + true",
        "now - now",
        "true * 2",
        "now == now",
        "1s == 2s",
        "1 && true",
        "now || false",
        "! 1",
        "! now",
        "let x = 1 in x && true",
        "1 5",
        "fst 1",
        "snd true",
        "to_scalar (1, 2)",
        "abs now",
        "round true",
        "min true",
        "max 5",
        "avg now",
        "unknown_metric now",
    ] {
        bad_with(&[], q);
    }
    for q in [
        "to_scalar (m now)",
        "avg_over_time (m now)",
        "sum_over_time (m now)",
        "increase (m now)",
        "rate (m now)",
        "filter (\\x -> x > 0) (m [now - 1h; now])",
        "unknown_metric now",
    ] {
        bad_with(&["m"], q);
    }
    assert!(bad_with(&[], "no_metric now").contains("Undefined name"));
    assert!(bad_with(&["m"], "nm now").contains("Did you mean: m"));
    assert!(!bad_with(&["m"], "completely_different now").contains("Did you mean"));
}

// ---------------------------------------------------------------- interpretation suite

fn simple() -> Mem {
    Mem::new().add("m", &[], &[(0, 42.0)])
}

fn multi() -> Mem {
    Mem::new()
        .add("m", &[("k", "1")], &[(0, 10.0)])
        .add("m", &[("k", "2")], &[(0, 20.0)])
        .add("m", &[("k", "3")], &[(0, 30.0)])
}

fn rate_store() -> Mem {
    Mem::new().add("m", &[], &[(0, 0.0), (1000, 1.0)])
}

fn scalar(r: Result<Value, tracerd_tsquery::Error>) -> f64 {
    match r {
        Ok(Value::Scalar(x)) => x,
        other => panic!("expected a scalar, got {other:?}"),
    }
}

fn run(q: &str) -> Result<Value, tracerd_tsquery::Error> {
    run_at(&Mem::new(), 0, q)
}

#[test]
fn scalars_booleans_durations_and_timestamps() {
    for (q, want) in [
        ("1 + 2", 3.0),
        ("5 - 3", 2.0),
        ("2 * 3", 6.0),
        ("10 / 4", 2.5),
        ("1 + 2 * 3", 7.0),
        ("0 - 5", -5.0),
        ("to_scalar true", 1.0),
        ("to_scalar false", 0.0),
        ("to_scalar 1s", 1000.0),
        ("abs (-3)", 3.0),
        ("abs 3", 3.0),
        ("round 2.3", 2.0),
        ("round 2.7", 3.0),
        ("round 2.5", 2.0),
        ("round 3.5", 4.0),
        ("fst (1, 2)", 1.0),
        ("snd (1, 2)", 2.0),
        ("fst (fst ((1, 2), 3))", 1.0),
        ("snd ((1, 2), 3)", 3.0),
        ("let x = 2 in x * 3", 6.0),
        ("let x = 1 in let y = 2 in x + y", 3.0),
        ("let x = 1 in let x = 2 in x", 2.0),
        ("let f = \\x -> x + 1 in f 2", 3.0),
        ("(\\x -> x) 7", 7.0),
        ("(\\x -> x + 1) 4", 5.0),
        ("let f = \\x -> x + 1 in let g = \\x -> f (f x) in g 3", 5.0),
    ] {
        assert_eq!(scalar(run(q)), want, "{q}");
    }
    for (q, want) in [
        ("1 == 1", true),
        ("1 == 2", false),
        ("1 != 2", true),
        ("1 != 1", false),
        ("1 < 2", true),
        ("2 < 1", false),
        ("1 <= 1", true),
        ("2 <= 1", false),
        ("2 > 1", true),
        ("1 > 2", false),
        ("1 >= 1", true),
        ("1 >= 2", false),
        ("true", true),
        ("false", false),
        ("true && true", true),
        ("true && false", false),
        ("false && true", false),
        ("false && false", false),
        ("false || true", true),
        ("true || false", true),
        ("false || false", false),
        ("!true", false),
        ("!false", true),
        ("true == true", true),
        ("true == false", false),
        ("true != false", true),
        ("false != false", false),
    ] {
        assert!(matches!(run(q), Ok(Value::Bool(b)) if b == want), "{q}");
    }
    for (q, want) in [
        ("1ms", 1),
        ("1s", 1000),
        ("1m", 60_000),
        ("1h", 3_600_000),
        ("2s", 2000),
        ("60s", 60_000),
    ] {
        assert!(matches!(run(q), Ok(Value::Duration(d)) if d == want), "{q}");
    }
    let e = Mem::new();
    for (now, q, want) in [
        (0, "now", 0),
        (5000, "now", 5000),
        (0, "epoch", 0),
        (5000, "now - 1s", 4000),
        (5000, "now + 1s", 6000),
        (60_000, "now - 1m", 0),
        (0, "now + 1h", 3_600_000),
    ] {
        assert!(
            matches!(run_at(&e, now, q), Ok(Value::Timestamp(t)) if t == want),
            "{q} at {now}"
        );
    }
    assert_eq!(scalar(run_at(&e, 5000, "to_scalar now")), 5000.0);
    assert!(matches!(run("()"), Ok(Value::Unit)));
    assert!(matches!(run("(1, 2)"), Ok(Value::Pair(a, b))
        if matches!((a.as_ref(), b.as_ref()), (Value::Scalar(x), Value::Scalar(y)) if *x == 1.0 && *y == 2.0)));
}

#[test]
fn instant_vectors() {
    assert_eq!(scalars(&run_at(&simple(), 0, "m now")), [42.0]);
    assert_eq!(scalars(&run_at(&multi(), 0, "m now")), [10.0, 20.0, 30.0]);
    assert_eq!(
        scalars(&run_at(&simple(), 600_001, "m now")),
        Vec::<f64>::new()
    );
    assert_eq!(scalars(&run_at(&simple(), 300_000, "m now")), [42.0]);
    for (q, want) in [
        ("max (m now)", 30.0),
        ("min (m now)", 10.0),
        ("avg (m now)", 20.0),
    ] {
        assert_eq!(scalar(run_at(&multi(), 0, q)), want, "{q}");
    }
    for q in ["max (m now)", "min (m now)", "avg (m now)"] {
        assert_eq!(scalar(run_at(&simple(), 0, q)), 42.0, "{q}");
    }
    for (q, want) in [
        ("filter (\\x -> x > 15) (m now)", vec![20.0, 30.0]),
        ("filter (\\x -> x > 100) (m now)", vec![]),
        ("filter (\\x -> x > 0) (m now)", vec![10.0, 20.0, 30.0]),
        ("map (\\x -> x * 2) (m now)", vec![20.0, 40.0, 60.0]),
        ("map (\\x -> x) (m now)", vec![10.0, 20.0, 30.0]),
        ("(m now){\"k\" = \"1\"}", vec![10.0]),
        ("(m now){\"k\" != \"1\"}", vec![20.0, 30.0]),
        ("unless (m now) (m now)", vec![]),
        ("m now > 15", vec![20.0, 30.0]),
        ("m now < 25", vec![10.0, 20.0]),
        ("m now == 20", vec![20.0]),
        ("m now != 20", vec![10.0, 30.0]),
        ("m now >= 20", vec![20.0, 30.0]),
        ("m now <= 20", vec![10.0, 20.0]),
    ] {
        assert_eq!(scalars(&run_at(&multi(), 0, q)), want, "{q}");
    }
    match run_at(&multi(), 0, "join (m now) (m now)") {
        Ok(Value::InstantVector(v)) => assert_eq!(v.len(), 3),
        other => panic!("{other:?}"),
    }
    for (q, want) in [
        ("m now + 1", 43.0),
        ("m now - 2", 40.0),
        ("m now * 2", 84.0),
        ("m now / 2", 21.0),
    ] {
        assert_eq!(scalars(&run_at(&simple(), 0, q)), [want], "{q}");
    }
}

#[test]
fn range_vectors() {
    let s = rate_store();
    for (q, want) in [
        ("avg_over_time (m[now - 1s; now : 1s])", 0.5),
        ("sum_over_time (m[now - 1s; now : 1s])", 1.0),
        ("rate (m[now - 1s; now : 1s])", 0.001),
        ("increase (m[now - 1s; now : 1s])", 1.0),
        ("avg_over_time (m[now - 1s; now])", 0.5),
    ] {
        assert_eq!(scalars(&run_at(&s, 1000, q)), [want], "{q}");
    }
    assert!(run_at(&s, 1000, "quantile_over_time 0.5 (m[now - 1s; now : 1s])").is_ok());
}

#[test]
fn metrics_and_undefined_names() {
    assert!(matches!(run("metrics"), Ok(Value::List(l)) if l.is_empty()));
    assert!(matches!(run_at(&simple(), 0, "metrics"),
        Ok(Value::List(l)) if matches!(l.as_slice(), [Value::Text(t)] if t == "m")));
    let e = run("no_such_metric now").unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadData);
    assert!(e.message.contains("Undefined name"), "{e}");
}
