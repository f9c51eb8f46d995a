//! Values a query evaluates to (upstream's `Cardano.Timeseries.Interp.Value`) and their JSON
//! (upstream's `Cardano.Timeseries.JSON`, the `data` of the reply envelope).

use std::fmt::Write as _;
use std::sync::Arc;

use tracerd_promql::Labels;

use crate::ast::Expr;

/// One datapoint of a series: its labels (without `__name__`), time in ms, value.
#[derive(Debug, Clone)]
pub struct Instant {
    pub labels: Arc<Labels>,
    pub t: u64,
    pub v: Value,
}

/// One series of a range vector: its labels and its (time ms, value) points, oldest first.
#[derive(Debug, Clone)]
pub struct Timeseries {
    pub labels: Arc<Labels>,
    pub points: Vec<(u64, Value)>,
}

/// A value.
#[derive(Debug, Clone)]
pub enum Value {
    Scalar(f64),
    Bool(bool),
    /// Milliseconds.
    Duration(u64),
    /// Milliseconds since the epoch.
    Timestamp(u64),
    InstantVector(Vec<Instant>),
    RangeVector(Vec<Timeseries>),
    Pair(Box<Value>, Box<Value>),
    Unit,
    Text(String),
    /// A list (upstream's `Nil`/`Cons` chain), kept flat.
    List(Vec<Value>),
    Function(Function),
}

/// A function value: a closure, or a metric (a function from a timestamp to an instant vector).
#[derive(Clone)]
pub struct Function(pub(crate) Func);

#[derive(Clone)]
pub(crate) enum Func {
    Closure {
        param: String,
        body: Arc<Expr>,
        env: crate::eval::Env,
    },
    Metric(String),
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Func::Closure { param, .. } => write!(f, "<function \\{param}>"),
            Func::Metric(m) => write!(f, "<metric {m}>"),
        }
    }
}

impl Value {
    /// The type's name in error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "Scalar",
            Value::Bool(_) => "Bool",
            Value::Duration(_) => "Duration",
            Value::Timestamp(_) => "Timestamp",
            Value::InstantVector(_) => "InstantVector",
            Value::RangeVector(_) => "RangeVector",
            Value::Pair(..) => "Pair",
            Value::Unit => "Unit",
            Value::Text(_) => "Text",
            Value::List(_) => "List",
            Value::Function(_) => "Function",
        }
    }

    /// The value as upstream's `show` writes it: the string in a vector's `[t, "v"]`.
    pub fn show(&self) -> String {
        let mut s = String::new();
        self.show_into(&mut s);
        s
    }

    fn show_into(&self, s: &mut String) {
        match self {
            Value::Scalar(x) => s.push_str(&show_double(*x)),
            Value::Bool(b) => s.push_str(if *b { "true" } else { "false" }),
            Value::Duration(d) => {
                let _ = write!(s, "{d}ms");
            }
            Value::Timestamp(t) => {
                let _ = write!(s, "{t}");
            }
            Value::Pair(a, b) => {
                s.push('(');
                a.show_into(s);
                s.push_str(", ");
                b.show_into(s);
                s.push(')');
            }
            Value::Unit => s.push_str("()"),
            Value::Text(t) => {
                let _ = write!(s, "{t:?}");
            }
            Value::List(items) => {
                for i in items {
                    s.push('[');
                    i.show_into(s);
                    s.push('|');
                }
                s.push_str("[]");
                for _ in items {
                    s.push(']');
                }
            }
            Value::Function(_) => s.push_str("<function>"),
            Value::InstantVector(v) => {
                for i in v {
                    show_labels(s, &i.labels);
                    let _ = write!(s, " {} ", i.t);
                    i.v.show_into(s);
                    s.push('\n');
                }
            }
            Value::RangeVector(v) => {
                for ts in v {
                    show_labels(s, &ts.labels);
                    s.push('\n');
                    for (t, x) in &ts.points {
                        let _ = write!(s, "{t} ");
                        x.show_into(s);
                        s.push('\n');
                    }
                }
            }
        }
    }

    /// The JSON of this value as the `data` of upstream's success envelope.
    pub fn to_json(&self) -> String {
        let mut s = String::new();
        self.json_into(&mut s);
        s
    }

    fn json_into(&self, s: &mut String) {
        let tag = |s: &mut String, t: &str| {
            s.push_str("{\"resultType\":\"");
            s.push_str(t);
            s.push('"');
        };
        match self {
            Value::Scalar(x) => {
                tag(s, "scalar");
                s.push_str(",\"result\":");
                json_number(s, *x);
                s.push('}');
            }
            Value::InstantVector(v) => {
                tag(s, "vector");
                s.push_str(",\"result\":[");
                for (n, i) in v.iter().enumerate() {
                    if n > 0 {
                        s.push(',');
                    }
                    s.push_str("{\"metric\":");
                    json_labels(s, &i.labels);
                    s.push_str(",\"value\":[");
                    json_number(s, i.t as f64 / 1000.0);
                    s.push(',');
                    json_string(s, &i.v.show());
                    s.push_str("]}");
                }
                s.push_str("]}");
            }
            Value::RangeVector(v) => {
                tag(s, "matrix");
                s.push_str(",\"result\":[");
                for (n, ts) in v.iter().enumerate() {
                    if n > 0 {
                        s.push(',');
                    }
                    s.push_str("{\"metric\":");
                    json_labels(s, &ts.labels);
                    s.push_str(",\"values\":[");
                    for (m, (t, x)) in ts.points.iter().enumerate() {
                        if m > 0 {
                            s.push(',');
                        }
                        s.push('[');
                        json_number(s, *t as f64 / 1000.0);
                        s.push(',');
                        json_string(s, &x.show());
                        s.push(']');
                    }
                    s.push_str("]}");
                }
                s.push_str("]}");
            }
            Value::Pair(a, b) => {
                tag(s, "pair");
                s.push_str(",\"fst\":");
                a.json_into(s);
                s.push_str(",\"snd\":");
                b.json_into(s);
                s.push('}');
            }
            Value::Unit => {
                tag(s, "unit");
                s.push('}');
            }
            Value::Bool(true) => {
                tag(s, "truth");
                s.push('}');
            }
            Value::Bool(false) => {
                tag(s, "falsity");
                s.push('}');
            }
            Value::Duration(d) => {
                tag(s, "duration");
                s.push_str(",\"result\":");
                json_number(s, *d as f64 / 1000.0);
                s.push('}');
            }
            Value::Timestamp(t) => {
                tag(s, "timestamp");
                s.push_str(",\"result\":");
                json_number(s, *t as f64 / 1000.0);
                s.push('}');
            }
            Value::Text(t) => {
                tag(s, "text");
                s.push_str(",\"result\":");
                json_string(s, t);
                s.push('}');
            }
            Value::Function(_) => {
                tag(s, "function");
                s.push('}');
            }
            Value::List(items) => {
                // Upstream's Cons chain: {"resultType":"cons","head":..,"tail":{..."nil"}}.
                for i in items {
                    tag(s, "cons");
                    s.push_str(",\"head\":");
                    i.json_into(s);
                    s.push_str(",\"tail\":");
                }
                tag(s, "nil");
                s.push('}');
                for _ in items {
                    s.push('}');
                }
            }
        }
    }
}

/// Haskell's `showFFloat Nothing`: the shortest digits that read back, in positional
/// notation, with at least one digit after the point (`42.0`, `0.001`, `NaN`, `Infinity`).
pub fn show_double(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let mut s = format!("{x}");
    if !s.contains('.') {
        s.push_str(".0");
    }
    s
}

fn show_labels(s: &mut String, l: &Labels) {
    s.push('[');
    for (n, (k, v)) in l.iter().enumerate() {
        if n > 0 {
            s.push(',');
        }
        let _ = write!(s, "({k:?},{v:?})");
    }
    s.push(']');
}

/// A JSON number; NaN and infinities are `null`, as aeson writes them.
fn json_number(s: &mut String, x: f64) {
    if x.is_finite() {
        let _ = write!(s, "{x}");
    } else {
        s.push_str("null");
    }
}

fn json_labels(s: &mut String, l: &Labels) {
    s.push('{');
    for (n, (k, v)) in l.iter().enumerate() {
        if n > 0 {
            s.push(',');
        }
        json_string(s, k);
        s.push(':');
        json_string(s, v);
    }
    s.push('}');
}

/// A JSON string literal.
pub fn json_string(s: &mut String, t: &str) {
    s.push('"');
    for c in t.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_show_as_haskell_does() {
        assert_eq!(show_double(42.0), "42.0");
        assert_eq!(show_double(0.001), "0.001");
        assert_eq!(show_double(-3.5), "-3.5");
        assert_eq!(show_double(1e22), "10000000000000000000000.0");
        assert_eq!(show_double(f64::NAN), "NaN");
        assert_eq!(show_double(f64::NEG_INFINITY), "-Infinity");
    }

    #[test]
    fn lists_render_as_upstreams_cons_chain() {
        let v = Value::List(vec![Value::Text("a".into()), Value::Text("b".into())]);
        assert_eq!(
            v.to_json(),
            r#"{"resultType":"cons","head":{"resultType":"text","result":"a"},"tail":{"resultType":"cons","head":{"resultType":"text","result":"b"},"tail":{"resultType":"nil"}}}"#
        );
        assert_eq!(Value::List(vec![]).to_json(), r#"{"resultType":"nil"}"#);
    }

    #[test]
    fn vectors_carry_shown_values_and_seconds() {
        let v = Value::InstantVector(vec![Instant {
            labels: Arc::new(vec![("node_name".into(), "relay-1".into())]),
            t: 1_753_000_000_500,
            v: Value::Pair(Box::new(Value::Bool(true)), Box::new(Value::Scalar(2.0))),
        }]);
        assert_eq!(
            v.to_json(),
            r#"{"resultType":"vector","result":[{"metric":{"node_name":"relay-1"},"value":[1753000000.5,"(true, 2.0)"]}]}"#
        );
    }
}
