//! EKG-compatible JSON (ekg-json, as cardano-tracer's `hasEKG` serves it): one object level
//! per `.` in a metric's name, leaves `{"type":"c"|"g"|"l","val":...}`. Pure code.

use serde_json::{Map, Value};

use crate::model::MetricValue;

/// The EKG leaf of one value.
pub fn leaf(value: &MetricValue) -> Value {
    let (ty, val) = match value {
        MetricValue::Counter(n) => ("c", Value::from(*n)),
        MetricValue::Gauge(g) => ("g", gauge_value(*g)),
        MetricValue::Label(text) => ("l", Value::from(text.as_str())),
    };
    let mut leaf = Map::new();
    leaf.insert("type".to_string(), Value::from(ty));
    leaf.insert("val".to_string(), val);
    Value::Object(leaf)
}

/// EKG gauges are integers; tracerd's are `f64`: integral values are written as integers,
/// others as numbers, non-finite ones as `null`.
fn gauge_value(g: f64) -> Value {
    if g.is_finite() && g.fract() == 0.0 && g.abs() < 9.0e15 {
        Value::from(g as i64)
    } else {
        serde_json::Number::from_f64(g).map_or(Value::Null, Value::Number)
    }
}

/// Nests metrics by the dots of their names. Metrics are taken in sorted name order; a name
/// that is both a leaf and a prefix of another (`a` and `a.b`) keeps the leaf and skips the
/// deeper name, so the result is deterministic.
pub fn nested<'a>(metrics: impl IntoIterator<Item = (&'a str, &'a MetricValue)>) -> Value {
    let mut sorted: Vec<(&str, &MetricValue)> = metrics.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut root = Map::new();
    'metric: for (name, value) in sorted {
        let mut parts: Vec<&str> = name.split('.').collect();
        let Some(last) = parts.pop() else { continue };
        let mut node = &mut root;
        for part in parts {
            let entry = node
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            match entry {
                Value::Object(m) if !is_leaf(m) => node = m,
                _ => continue 'metric,
            }
        }
        if !node.contains_key(last) {
            node.insert(last.to_string(), leaf(value));
        }
    }
    Value::Object(root)
}

fn is_leaf(m: &Map<String, Value>) -> bool {
    m.len() == 2 && m.contains_key("type") && m.contains_key("val")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nests_by_dots_with_typed_leaves() {
        let c = MetricValue::Counter(24);
        let g = MetricValue::Gauge(91_877_376.0);
        let l = MetricValue::Label("0.5".into());
        let f = MetricValue::Gauge(0.25);
        let v = nested([
            ("ChainSync.HeadersServed_counter", &c),
            ("Mem.resident_int", &g),
            ("a.b.c", &l),
            ("a.x", &f),
        ]);
        assert_eq!(
            v.to_string(),
            r#"{"ChainSync":{"HeadersServed_counter":{"type":"c","val":24}},"Mem":{"resident_int":{"type":"g","val":91877376}},"a":{"b":{"c":{"type":"l","val":"0.5"}},"x":{"type":"g","val":0.25}}}"#
        );
    }

    #[test]
    fn leaf_and_prefix_conflicts_are_deterministic() {
        let one = MetricValue::Counter(1);
        let two = MetricValue::Counter(2);
        let v = nested([("a.b", &two), ("a", &one)]);
        assert_eq!(v.to_string(), r#"{"a":{"type":"c","val":1}}"#);
        let nan = MetricValue::Gauge(f64::NAN);
        assert_eq!(
            nested([("x", &nan)]).to_string(),
            r#"{"x":{"type":"g","val":null}}"#
        );
    }
}
