//! Pure naming of history series: which series (label set) and value a node metric is
//! stored as, decided by the exposition's own rules ([`crate::metrics::exposition`]: the
//! sanitised family, [`exposition::shape`], [`exposition::family_names_as`]) so a query of the
//! history names exactly what a scrape of `/metrics` stores; and a reader of tracerd's own
//! exposition text, so `tracerd_*` series are stored as `/metrics` writes them.

use crate::metrics::exposition::{self, MetricName, Shape};
use crate::model::MetricValue;
use tracerd_promql::Labels;

/// The label name of the node a series belongs to (as on `/metrics`).
pub const NODE_LABEL: &str = "node_name";

/// What a node metric's value looks like for the purpose of naming its series: two values
/// of one metric with equal keys are stored in the same series.
#[derive(Debug, Clone, PartialEq)]
pub enum SeriesKey {
    /// A counter (its sample name depends on `openMetricsNames`).
    Counter,
    /// A gauge, or a label holding a number.
    Gauge,
    /// A label set or text: its labels are part of the series.
    Info(String),
}

/// The key of a value (cheap: no allocation for numbers).
pub fn key_of(value: &MetricValue) -> SeriesKey {
    match value {
        MetricValue::Counter(_) => SeriesKey::Counter,
        MetricValue::Gauge(_) => SeriesKey::Gauge,
        MetricValue::Label(text) => match exposition::shape(value) {
            Shape::Info(_) => SeriesKey::Info(text.clone()),
            _ => SeriesKey::Gauge,
        },
    }
}

/// The value stored for `value`: counters and gauges as numbers, label sets as 1 (as the
/// exposition writes them).
pub fn value_of(value: &MetricValue) -> f64 {
    match exposition::shape(value) {
        Shape::Counter(n) => n as f64,
        Shape::Gauge(v) => v,
        Shape::GaugeText(text) => text.parse().unwrap_or(f64::NAN),
        Shape::Info(_) => 1.0,
    }
}

/// The sorted labels (with `__name__`) of `node`'s metric `name` holding `value`, as the
/// `/metrics` exposition writes its sample; `None` when the exposition writes no sample for
/// it (no usable name, a negative value of a family typed `counter`, a label set that
/// carries both `node_name` and `exported_node_name`).
pub fn labels_of(name: &MetricName, value: &MetricValue, node: &str) -> Option<Labels> {
    let family = name.family.as_deref()?;
    let shape = exposition::shape(value);
    let kind = match &shape {
        Shape::Counter(_) => exposition::Kind::Counter,
        Shape::Gauge(_) | Shape::GaugeText(_) => exposition::Kind::Gauge,
        Shape::Info(_) => exposition::Kind::Info,
    };
    let names = exposition::family_names_as(family, kind, name.openmetrics_names);
    let mut labels: Labels = vec![
        ("__name__".to_string(), names.series),
        (NODE_LABEL.to_string(), node.to_string()),
    ];
    match shape {
        Shape::Counter(n) if n < 0 && names.openmetrics_type == "counter" => return None,
        Shape::Info(set) => {
            let has = |k: &str| set.iter().any(|(n, _)| *n == k);
            if has(NODE_LABEL) && has("exported_node_name") {
                return None;
            }
            for (k, v) in set {
                let k = if k == NODE_LABEL {
                    "exported_node_name"
                } else {
                    k
                };
                labels.push((k.to_string(), v));
            }
        }
        _ => {}
    }
    labels.sort();
    Some(labels)
}

/// Why a line of exposition text was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("exposition line {line}: {what}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub what: &'static str,
}

/// Reads the samples of exposition text (OpenMetrics or text 0.0.4, as tracerd writes it):
/// every line that is not a comment, `name{k="v",...} value`, as sorted labels with
/// `__name__` and the value. A timestamp after the value is ignored.
pub fn parse_exposition(text: &str) -> Result<Vec<(Labels, f64)>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |what| ParseError { line: i + 1, what };
        let end = line.find(['{', ' ']).ok_or_else(|| err("no value"))?;
        let name = &line[..end];
        if name.is_empty() {
            return Err(err("empty metric name"));
        }
        let mut labels: Labels = vec![("__name__".to_string(), name.to_string())];
        let mut rest = &line[end..];
        if let Some(body) = rest.strip_prefix('{') {
            rest = read_labels(body, &mut labels).ok_or_else(|| err("bad label set"))?;
        }
        let value = rest
            .trim_start()
            .split(' ')
            .next()
            .ok_or_else(|| err("no value"))?;
        let v = match value {
            "+Inf" | "Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| err("value is not a number"))?,
        };
        labels.sort();
        out.push((labels, v));
    }
    Ok(out)
}

/// Reads `k="v",...}` into `labels`; returns what follows the `}`.
fn read_labels<'a>(mut s: &'a str, labels: &mut Labels) -> Option<&'a str> {
    loop {
        if let Some(rest) = s.strip_prefix('}') {
            return Some(rest);
        }
        let eq = s.find('=')?;
        let key = &s[..eq];
        let (value, after) = exposition::read_label_value(&s[eq + 1..])?;
        labels.push((key.to_string(), value));
        s = after;
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::exposition::{Format, Naming, Renderer};
    use std::sync::Arc;

    fn values() -> Vec<(&'static str, MetricValue)> {
        vec![
            (
                "cardano.node.metrics.blockNum_int",
                MetricValue::Counter(42),
            ),
            ("rts.gc.bytes_total", MetricValue::Counter(7)),
            ("Mem.resident_int", MetricValue::Gauge(1.5e8)),
            (
                "cardano.node.metrics.density_real",
                MetricValue::Label("0.05".into()),
            ),
            ("weird", MetricValue::Label("1e3".into())),
            (
                "cardano.node.metrics.node.build",
                MetricValue::Label(r#"{version="10.1",commit="a\"b",node_name="x"}"#.into()),
            ),
            ("era", MetricValue::Label("Conway \"q\"\nline".into())),
            ("neg", MetricValue::Counter(-3)),
            ("neg_total", MetricValue::Counter(-3)),
            ("\u{1F600}", MetricValue::Gauge(1.0)),
        ]
    }

    /// The history names every sample exactly as `/metrics` writes it, whichever naming.
    #[test]
    fn series_are_the_expositions_samples() {
        for openmetrics in [false, true] {
            let naming = Naming::default().with_openmetrics_names(openmetrics);
            let items: Vec<(Arc<MetricName>, MetricValue)> = values()
                .into_iter()
                .map(|(k, v)| (naming.name(k), v))
                .collect();
            for format in [Format::OpenMetrics, Format::Text] {
                let mut r = Renderer::new(format);
                r.add_node(Some("relay \"1\""), items.iter().map(|(n, v)| (n, v)));
                let mut text = String::new();
                r.finish(&mut text);
                let mut scraped = parse_exposition(&text).unwrap();
                let mut ours: Vec<(Labels, f64)> = items
                    .iter()
                    .filter_map(|(n, v)| Some((labels_of(n, v, "relay \"1\"")?, value_of(v))))
                    .collect();
                scraped.sort_by(|a, b| a.0.cmp(&b.0));
                ours.sort_by(|a, b| a.0.cmp(&b.0));
                assert_eq!(ours, scraped, "openmetrics names {openmetrics}, {format:?}");
            }
        }
    }

    #[test]
    fn keys_change_with_the_label_set_only() {
        assert_eq!(key_of(&MetricValue::Counter(1)), SeriesKey::Counter);
        assert_eq!(key_of(&MetricValue::Label("12".into())), SeriesKey::Gauge);
        assert_eq!(
            key_of(&MetricValue::Label("v1".into())),
            SeriesKey::Info("v1".into())
        );
    }

    #[test]
    fn reads_tracerds_own_exposition() {
        let t = crate::metrics::telemetry::Telemetry::new();
        t.write_batch_seconds.observe(0.003);
        t.nodes.node("n\"1").add_received(5);
        let mut text = String::new();
        t.render_into(Format::OpenMetrics, &mut text);
        let samples = parse_exposition(&text).unwrap();
        let find = |name: &str, extra: &[(&str, &str)]| {
            samples.iter().find(|(l, _)| {
                l.iter().any(|(k, v)| k == "__name__" && v == name)
                    && extra
                        .iter()
                        .all(|(ek, ev)| l.iter().any(|(k, v)| k == ek && v == ev))
            })
        };
        assert_eq!(
            find(
                "tracerd_trace_objects_received_total",
                &[("node_name", "n\"1")]
            )
            .map(|s| s.1),
            Some(5.0)
        );
        assert_eq!(
            find("tracerd_write_batch_seconds_bucket", &[("le", "0.005")]).map(|s| s.1),
            Some(1.0)
        );
        assert_eq!(
            find("tracerd_write_batch_seconds_bucket", &[("le", "+Inf")]).map(|s| s.1),
            Some(1.0)
        );
        assert!(parse_exposition("x{a=\"1\" 2").is_err());
        assert_eq!(
            parse_exposition("x NaN\ny +Inf 123\n").unwrap()[1].1,
            f64::INFINITY
        );
    }
}
