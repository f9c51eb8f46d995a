//! The fleet summary the overview shows: one card per node, connected or recently
//! disconnected, built from each node's live state and tracerd's per-node counters. One
//! snapshot is built at most once a [`PERIOD`] and shared by every open stream, so each browser
//! costs the encoding of nothing: the same bytes go to all of them.
//!
//! The reading of a node's metrics into card fields ([`facts`]) and the rates ([`rate`]) are
//! pure.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::model::{MetricValue, Severity};
use crate::node::NodeView;

/// How often the summary is rebuilt and pushed.
pub const PERIOD: Duration = Duration::from_secs(1);
/// A connected node silent for this long is stale.
pub const STALE_AFTER_MS: u64 = 15_000;
/// How long a disconnected node keeps its card.
pub const RECENT_MS: u64 = 10 * 60 * 1000;
/// Most disconnected nodes' cards kept (the most recent ones).
pub const MAX_DEPARTED: usize = 1000;

/// The metric prefix cardano-node gives its metrics (`TraceOptionMetricsPrefix`'s default).
const PREFIX: &str = "cardano.node.metrics.";

/// Card fields read from a node's metrics: the field, then the names (prefix and EKG suffix
/// stripped) that may carry it, first match wins.
pub const METRIC_FIELDS: &[(&str, &[&str])] = &[
    ("slot", &["slotNum"]),
    ("block", &["blockNum"]),
    ("epoch", &["epoch"]),
    ("slotInEpoch", &["slotInEpoch"]),
    ("density", &["density"]),
    (
        "peers",
        &[
            "connectedPeers",
            "peersFromNodeKernel",
            "peerSelection.hot",
            "peerSelection.Hot",
        ],
    ),
    ("txsInMempool", &["txsInMempool"]),
    ("mempoolBytes", &["mempoolBytes"]),
    ("txsProcessed", &["txsProcessedNum"]),
    (
        "forged",
        &["Forge.forged", "forgedSlotLast", "blocksForgedNum"],
    ),
    (
        "leader",
        &["Forge.node-is-leader", "nodeIsLeaderNum", "nodeIsLeader"],
    ),
    ("kesRemaining", &["remainingKESPeriods"]),
    ("kesCurrent", &["currentKESPeriod"]),
    ("opcertExpiry", &["operationalCertificateExpiryKESPeriod"]),
    ("opcertStart", &["operationalCertificateStartKESPeriod"]),
    ("syncPercent", &["syncProgress", "ChainSync.syncProgress"]),
];

/// A metric's name without cardano-node's prefix and EKG's type suffix.
pub fn metric_key(name: &str) -> &str {
    let name = name.strip_prefix(PREFIX).unwrap_or(name);
    ["_int", "_real", "_counter"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

fn number(value: &MetricValue) -> Option<f64> {
    match value {
        MetricValue::Counter(n) => Some(*n as f64),
        MetricValue::Gauge(v) => v.is_finite().then_some(*v),
        MetricValue::Label(t) => t.trim().parse::<f64>().ok().filter(|v| v.is_finite()),
    }
}

/// The card fields found among `metrics` (name, value).
pub fn facts<'a>(metrics: impl Iterator<Item = (&'a str, &'a MetricValue)>) -> Map<String, Value> {
    let mut found: HashMap<&'static str, (usize, f64)> = HashMap::new();
    for (name, value) in metrics {
        let key = metric_key(name);
        for (field, names) in METRIC_FIELDS {
            if let Some(rank) = names.iter().position(|n| *n == key) {
                if let Some(v) = number(value) {
                    let better = found.get(field).is_none_or(|(r, _)| rank < *r);
                    if better {
                        found.insert(field, (rank, v));
                    }
                }
            }
        }
    }
    let mut out = Map::new();
    for (field, _) in METRIC_FIELDS {
        if let Some((_, v)) = found.get(field) {
            out.insert((*field).to_string(), json!(v));
        }
    }
    let producer = ["kesRemaining", "forged", "leader", "opcertExpiry"]
        .iter()
        .any(|f| out.contains_key(*f));
    out.insert("producer".into(), json!(producer));
    out
}

/// The per-second rate between two readings of a counter, `None` without an earlier one.
pub fn rate(prev: Option<(u64, u64)>, now_ms: u64, value: u64) -> Option<f64> {
    let (at, before) = prev?;
    let dt = now_ms.checked_sub(at).filter(|d| *d > 0)?;
    Some(value.saturating_sub(before) as f64 * 1000.0 / dt as f64)
}

/// `NodeInfo`'s fields the card shows (cardano-node's data point: `niName`, `niProtocol`,
/// `niVersion`, `niCommit`, `niStartTime`, `niSystemStartTime`).
pub fn node_info(json_text: &str) -> Map<String, Value> {
    let mut out = Map::new();
    let Ok(Value::Object(info)) = serde_json::from_str::<Value>(json_text) else {
        return out;
    };
    for (from, to) in [
        ("niProtocol", "nodeProtocol"),
        ("niVersion", "version"),
        ("niCommit", "commit"),
        ("niStartTime", "startTime"),
        ("niSystemStartTime", "systemStartTime"),
    ] {
        if let Some(Value::String(s)) = info.get(from) {
            out.insert(
                to.into(),
                Value::from(s.chars().take(200).collect::<String>()),
            );
        }
    }
    out
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.frac]Z` (NodeInfo's times, to the
/// second).
pub fn start_ms(text: &str) -> Option<u64> {
    let (secs, _) = crate::utc::parse_rfc3339(text)?;
    u64::try_from(secs).ok()?.checked_mul(1000)
}

/// Counters read for one node: objects received, bytes written.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub objects: u64,
    pub bytes: u64,
}

/// What the summary remembers between snapshots.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Per connected node: when and what its counters were.
    prev: HashMap<String, (u64, Counters)>,
    /// Last card of each node seen connected, for when it goes.
    last: HashMap<String, Value>,
    /// Disconnected nodes' cards and when they were seen gone.
    departed: HashMap<String, (u64, Value)>,
    cached: Option<(Instant, Arc<str>)>,
}

impl Tracker {
    /// The summary JSON: rebuilt when older than [`PERIOD`] (less a margin, so streams
    /// ticking each period see a fresh one), else the cached one.
    pub fn snapshot(
        &mut self,
        views: impl FnOnce() -> Vec<NodeView>,
        counters: impl Fn(&str) -> Counters,
        now_ms: u64,
    ) -> Arc<str> {
        if let Some((at, json)) = &self.cached {
            if at.elapsed() < PERIOD.mul_f32(0.9) {
                return json.clone();
            }
        }
        let views = views();
        let mut cards = Vec::with_capacity(views.len());
        let mut seen = std::collections::HashSet::new();
        for v in &views {
            seen.insert(v.name.clone());
            let c = counters(&v.name);
            let prev = self.prev.get(&v.name).map(|(t, p)| (*t, *p));
            let card = card(v, c, prev, now_ms);
            self.prev.insert(v.name.clone(), (now_ms, c));
            self.last.insert(v.name.clone(), card.clone());
            self.departed.remove(&v.name);
            cards.push(card);
        }
        let gone: Vec<String> = self
            .last
            .keys()
            .filter(|n| !seen.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            self.prev.remove(&name);
            if let Some(mut card) = self.last.remove(&name) {
                card["connected"] = json!(false);
                card["stale"] = json!(true);
                card["disconnectedAt"] = json!(now_ms);
                for k in ["objectsPerSec", "bytesPerSec", "writeBacklog"] {
                    card[k] = Value::Null;
                }
                self.departed.insert(name, (now_ms, card));
            }
        }
        self.departed
            .retain(|_, (at, _)| now_ms.saturating_sub(*at) < RECENT_MS);
        if self.departed.len() > MAX_DEPARTED {
            let mut ages: Vec<(u64, String)> = self
                .departed
                .iter()
                .map(|(n, (at, _))| (*at, n.clone()))
                .collect();
            ages.sort();
            for (_, n) in ages.iter().take(self.departed.len() - MAX_DEPARTED) {
                self.departed.remove(n);
            }
        }
        let mut departed: Vec<&(u64, Value)> = self.departed.values().collect();
        departed.sort_by(|a, b| a.1["name"].as_str().cmp(&b.1["name"].as_str()));
        cards.extend(departed.into_iter().map(|(_, c)| c.clone()));
        let json: Arc<str> = Arc::from(
            json!({"now": now_ms, "staleAfterMs": STALE_AFTER_MS, "nodes": cards}).to_string(),
        );
        self.cached = Some((Instant::now(), json.clone()));
        json
    }
}

/// One connected node's card.
fn card(v: &NodeView, c: Counters, prev: Option<(u64, Counters)>, now_ms: u64) -> Value {
    let session = v.live.session();
    let last = v.live.last_message_ms();
    let stale = last.is_none_or(|t| now_ms.saturating_sub(t) > STALE_AFTER_MS);
    let mut card = Map::new();
    card.insert("name".into(), json!(v.name));
    card.insert("slug".into(), json!(v.slug));
    card.insert("connected".into(), json!(true));
    card.insert("stale".into(), json!(stale));
    card.insert("protocol".into(), json!(session.protocol));
    card.insert("peer".into(), json!(session.peer));
    card.insert("connectedSince".into(), json!(session.connected_since_ms));
    card.insert("lastMessageAt".into(), json!(last));
    card.insert(
        "rttMs".into(),
        json!(v.live.rtt_micros().map(|us| us as f64 / 1000.0)),
    );
    card.insert(
        "objectsPerSec".into(),
        json!(rate(prev.map(|(t, p)| (t, p.objects)), now_ms, c.objects)),
    );
    card.insert(
        "bytesPerSec".into(),
        json!(rate(prev.map(|(t, p)| (t, p.bytes)), now_ms, c.bytes)),
    );
    card.insert("objects".into(), json!(c.objects));
    card.insert("writeBacklog".into(), json!(v.live.queue_depth()));
    let counts = v.live.traces().severity_counts();
    let severities: Map<String, Value> = Severity::ALL
        .iter()
        .zip(counts)
        .map(|(s, n)| (s.as_str().to_string(), json!(n)))
        .collect();
    card.insert("severities".into(), Value::Object(severities));
    {
        let metrics = v.live.metrics();
        card.insert("metrics".into(), json!(metrics.len()));
        card.extend(facts(metrics.entries()));
    }
    if let Some(info) = v.live.data_point("NodeInfo") {
        card.extend(node_info(&info));
    }
    // A native node names its software in its handshake; NodeInfo, when sent, wins.
    if let Some(sw) = &session.software {
        for (key, value) in [
            ("software", &sw.name),
            ("version", &sw.version),
            ("commit", &sw.commit),
        ] {
            if !value.is_empty() && !card.contains_key(key) {
                card.insert(key.into(), json!(value));
            }
        }
    }
    let started = card
        .get("startTime")
        .and_then(Value::as_str)
        .and_then(start_ms);
    let since = started.unwrap_or(session.connected_since_ms);
    card.insert(
        "uptimeSecs".into(),
        json!(now_ms.saturating_sub(since) / 1000),
    );
    Value::Object(card)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_fields_come_from_cardano_node_metric_names() {
        let m = [
            (
                "cardano.node.metrics.slotNum_int",
                MetricValue::Gauge(140.0),
            ),
            ("cardano.node.metrics.blockNum_int", MetricValue::Counter(7)),
            (
                "cardano.node.metrics.density_real",
                MetricValue::Label("0.05".into()),
            ),
            (
                "cardano.node.metrics.peersFromNodeKernel_int",
                MetricValue::Gauge(9.0),
            ),
            (
                "cardano.node.metrics.connectedPeers_int",
                MetricValue::Gauge(3.0),
            ),
            ("Mem.resident_int", MetricValue::Gauge(1.0)),
        ];
        let f = facts(m.iter().map(|(n, v)| (*n, v)));
        assert_eq!(f["slot"], json!(140.0));
        assert_eq!(f["block"], json!(7.0));
        assert_eq!(f["density"], json!(0.05));
        // connectedPeers ranks before peersFromNodeKernel, whatever the order seen.
        assert_eq!(f["peers"], json!(3.0));
        assert_eq!(f["producer"], json!(false));
        let bp = [(
            "cardano.node.metrics.remainingKESPeriods_int",
            MetricValue::Gauge(42.0),
        )];
        let f = facts(bp.iter().map(|(n, v)| (*n, v)));
        assert_eq!(
            (f["kesRemaining"].clone(), f["producer"].clone()),
            (json!(42.0), json!(true))
        );
    }

    #[test]
    fn rates_need_two_readings_and_survive_a_counter_reset() {
        assert_eq!(rate(None, 1000, 5), None);
        assert_eq!(rate(Some((1000, 10)), 3000, 30), Some(10.0));
        assert_eq!(rate(Some((1000, 10)), 1000, 30), None);
        assert_eq!(rate(Some((1000, 50)), 2000, 30), Some(0.0));
    }

    #[test]
    fn node_info_fields_are_read_and_bounded() {
        let long = "x".repeat(500);
        let f = node_info(&format!(
            "{{\"niVersion\":\"10.1.4\",\"niCommit\":\"{long}\",\"niProtocol\":\"Cardano\"}}"
        ));
        assert_eq!(f["version"], json!("10.1.4"));
        assert_eq!(f["commit"].as_str().unwrap().len(), 200);
        assert!(node_info("not json").is_empty());
        assert_eq!(start_ms("1970-01-01T00:01:00.5Z"), Some(60_000));
        assert_eq!(start_ms("1970-13-01T00:01:00Z"), None);
    }
}
