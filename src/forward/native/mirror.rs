//! Pure: what to send a native downstream so its copy of a node's metrics and data points
//! matches this tracerd's (issue 16, point 2). The files hold only traces, so these come
//! from the node registry's latest values, compared with what this connection already sent:
//! changed and new values go as a delta, a metric gone since forces a full snapshot (the
//! native protocol's only way to remove one). Every message stays under a byte budget.

use std::collections::HashMap;

use crate::model::{DataPoint, MetricValue, MetricsUpdate};
use crate::native::NodeMessage;

/// Bytes of protobuf framing counted per metric or data point beyond its text (generous).
const ENTRY_OVERHEAD: usize = 24;

/// What one connection sent of a node's metrics and data points.
#[derive(Debug, Default)]
pub struct Mirror {
    metrics: HashMap<String, MetricValue>,
    points: HashMap<String, String>,
}

fn metric_cost(name: &str, value: &MetricValue) -> usize {
    name.len()
        + ENTRY_OVERHEAD
        + match value {
            MetricValue::Label(t) => t.len(),
            _ => 8,
        }
}

impl Mirror {
    /// The messages that bring the downstream from what was sent to `metrics` and `points`
    /// (the node's current values), each within `max_bytes` (an entry larger than that alone
    /// is left out); records them as sent.
    pub fn sync(
        &mut self,
        metrics: Vec<(String, MetricValue)>,
        points: Vec<(String, String)>,
        max_bytes: usize,
    ) -> Vec<NodeMessage> {
        let mut out = Vec::new();
        let removed = self
            .metrics
            .keys()
            .any(|k| !metrics.iter().any(|(n, _)| n == k));
        let changed: Vec<(String, MetricValue)> = if removed {
            self.metrics.clear();
            metrics
        } else {
            metrics
                .into_iter()
                .filter(|(n, v)| self.metrics.get(n) != Some(v))
                .collect()
        };
        let mut full = removed;
        let mut batch = Vec::new();
        let mut bytes = 0;
        for (name, value) in changed {
            let cost = metric_cost(&name, &value);
            if cost > max_bytes {
                continue;
            }
            if bytes + cost > max_bytes {
                out.push(NodeMessage::Metrics(MetricsUpdate {
                    full,
                    metrics: std::mem::take(&mut batch),
                }));
                full = false;
                bytes = 0;
            }
            bytes += cost;
            self.metrics.insert(name.clone(), value.clone());
            batch.push((name, value));
        }
        if !batch.is_empty() || full {
            out.push(NodeMessage::Metrics(MetricsUpdate {
                full,
                metrics: batch,
            }));
        }
        let mut batch = Vec::new();
        let mut bytes = 0;
        for (name, json) in points {
            if self.points.get(&name) == Some(&json) {
                continue;
            }
            let cost = name.len() + json.len() + ENTRY_OVERHEAD;
            if cost > max_bytes {
                continue;
            }
            if bytes + cost > max_bytes {
                out.push(NodeMessage::DataPoints(std::mem::take(&mut batch)));
                bytes = 0;
            }
            bytes += cost;
            self.points.insert(name.clone(), json.clone());
            batch.push(DataPoint { name, json });
        }
        if !batch.is_empty() {
            out.push(NodeMessage::DataPoints(batch));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, i64)]) -> Vec<(String, MetricValue)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), MetricValue::Counter(*v)))
            .collect()
    }

    fn updates(msgs: &[NodeMessage]) -> Vec<(bool, Vec<String>)> {
        msgs.iter()
            .filter_map(|msg| match msg {
                NodeMessage::Metrics(u) => {
                    Some((u.full, u.metrics.iter().map(|(n, _)| n.clone()).collect()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn deltas_then_a_full_snapshot_when_a_metric_goes() {
        let mut mirror = Mirror::default();
        let first = mirror.sync(m(&[("a", 1), ("b", 2)]), Vec::new(), 1 << 20);
        let mut got = updates(&first);
        got[0].1.sort();
        assert_eq!(got, [(false, vec!["a".to_string(), "b".to_string()])]);
        // Nothing changed: nothing sent.
        assert!(mirror
            .sync(m(&[("a", 1), ("b", 2)]), Vec::new(), 1 << 20)
            .is_empty());
        // One changed: only it.
        let d = mirror.sync(m(&[("a", 1), ("b", 3)]), Vec::new(), 1 << 20);
        assert_eq!(updates(&d), [(false, vec!["b".to_string()])]);
        // One gone: a full snapshot of what is left.
        let f = mirror.sync(m(&[("b", 3)]), Vec::new(), 1 << 20);
        assert_eq!(updates(&f), [(true, vec!["b".to_string()])]);
        // Everything gone: an empty full snapshot, once.
        let e = mirror.sync(Vec::new(), Vec::new(), 1 << 20);
        assert_eq!(updates(&e), [(true, vec![])]);
        assert!(mirror.sync(Vec::new(), Vec::new(), 1 << 20).is_empty());
    }

    #[test]
    fn messages_stay_within_the_budget_and_the_first_is_full() {
        let mut mirror = Mirror::default();
        mirror.sync(m(&[("gone", 1)]), Vec::new(), 1 << 20);
        let many: Vec<(String, i64)> = (0..100).map(|i| (format!("metric_{i:03}"), i)).collect();
        let pairs: Vec<(&str, i64)> = many.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        let msgs = mirror.sync(m(&pairs), Vec::new(), 200);
        let got = updates(&msgs);
        assert!(got.len() > 1);
        assert!(got[0].0, "the first message replaces the node's set");
        assert!(got[1..].iter().all(|(full, _)| !full));
        for (_, names) in &got {
            let cost: usize = names.iter().map(|n| n.len() + ENTRY_OVERHEAD + 8).sum();
            assert!(cost <= 200);
        }
        let total: usize = got.iter().map(|(_, n)| n.len()).sum();
        assert_eq!(total, 100);
    }

    #[test]
    fn data_points_go_when_new_or_changed() {
        let mut mirror = Mirror::default();
        let p = |v: &str| vec![("NodeInfo".to_string(), v.to_string())];
        let first = mirror.sync(Vec::new(), p("{\"niName\":\"a\"}"), 1 << 20);
        assert!(
            matches!(&first[..], [NodeMessage::DataPoints(d)] if d[0].json == "{\"niName\":\"a\"}")
        );
        assert!(mirror
            .sync(Vec::new(), p("{\"niName\":\"a\"}"), 1 << 20)
            .is_empty());
        assert_eq!(
            mirror
                .sync(Vec::new(), p("{\"niName\":\"b\"}"), 1 << 20)
                .len(),
            1
        );
        // Too large for any message: left out, not sent in pieces.
        assert!(mirror.sync(Vec::new(), p(&"x".repeat(300)), 200).is_empty());
    }
}
