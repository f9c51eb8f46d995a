//! Prometheus's JSON shapes: the envelope, values as strings, timestamps as seconds.

use std::fmt::Write;

use tracerd_promql::{Labels, Sample, Value};

/// A JSON string literal.
pub fn string(out: &mut String, s: &str) {
    // serde_json's escaping of a &str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

/// Milliseconds as Prometheus writes them: seconds with up to 3 decimals, no trailing zero.
pub fn timestamp(out: &mut String, t: i64) {
    if t < 0 {
        out.push('-');
    }
    let a = t.unsigned_abs();
    let (secs, ms) = (a / 1000, a % 1000);
    let _ = write!(out, "{secs}");
    if ms != 0 {
        let frac = format!("{ms:03}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
}

/// A sample value as Prometheus writes it: a string, `NaN`, `+Inf`, `-Inf`, or the shortest
/// decimal without exponent (Go's `FormatFloat(v, 'f', -1, 64)`).
pub fn value(out: &mut String, v: f64) {
    out.push('"');
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
    out.push('"');
}

pub fn point(out: &mut String, t: i64, v: f64) {
    out.push('[');
    timestamp(out, t);
    out.push(',');
    value(out, v);
    out.push(']');
}

pub fn labels(out: &mut String, l: &Labels) {
    out.push('{');
    for (i, (n, v)) in l.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(out, n);
        out.push(':');
        string(out, v);
    }
    out.push('}');
}

/// `{"resultType":..,"result":..}`.
pub fn query_data(out: &mut String, v: &Value) {
    out.push_str("{\"resultType\":");
    match v {
        Value::Scalar(t, x) => {
            out.push_str("\"scalar\",\"result\":");
            point(out, *t, *x);
        }
        Value::String(t, s) => {
            out.push_str("\"string\",\"result\":[");
            timestamp(out, *t);
            out.push(',');
            string(out, s);
            out.push(']');
        }
        Value::Vector(items) => {
            out.push_str("\"vector\",\"result\":[");
            for (i, (l, t, x)) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                labels(out, l);
                out.push_str(",\"value\":");
                point(out, *t, *x);
                out.push('}');
            }
            out.push(']');
        }
        Value::Matrix(series) => {
            out.push_str("\"matrix\",\"result\":[");
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                labels(out, &s.labels);
                out.push_str(",\"values\":[");
                for (j, Sample { t, v }) in s.samples.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    point(out, *t, *v);
                }
                out.push_str("]}");
            }
            out.push(']');
        }
    }
    out.push('}');
}

pub fn strings(out: &mut String, items: &[String]) {
    out.push('[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(out, s);
    }
    out.push(']');
}
