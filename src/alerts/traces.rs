//! What trace and lifecycle rules are evaluated on. [`TraceEngine`] is the node registry's
//! [`TraceObserver`]: each session's [`NodeTraces`] handle sees the objects accepted for
//! writing and, without blocking, records the node's last trace time and clock skew and the
//! hits of every trace rule. Severity and namespace are tested there (a comparison and a
//! prefix); a rule that also tests a field of the machine JSON gets its candidates over a
//! bounded channel ([`HIT_QUEUE`]; a full channel drops the candidate, counted in
//! `tracerd_alerts_trace_hits_dropped_total`) to [`TraceEngine::run`], which parses the JSON
//! on the blocking pool. Per node and rule at most [`hit_cap`] hit times are kept.
//!
//! [`trace_results`] and [`lifecycle_results`] turn that state (and the registry's facts)
//! into per-node values at an evaluation time; they read no clock.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::trace_rules::{Lifecycle, TraceCond};
use crate::model::TraceObject;
use crate::node::{NodeTraces, NodeView, TraceObserver};
use crate::sync::lock;

/// Candidates waiting for their field test.
pub const HIT_QUEUE: usize = 4096;
/// Most candidates tested in one pass on the blocking pool.
const PASS: usize = 256;
/// The `NodeInfo` data point's name (both protocols).
pub const NODE_INFO: &str = "NodeInfo";

/// Hit times kept per node and rule: enough for `count`, at least 100 (the value an alert
/// shows is the count within the window, at most this).
pub fn hit_cap(cond: &TraceCond) -> usize {
    (cond.count as usize).max(100)
}

/// One node name's facts, kept across its sessions.
#[derive(Debug)]
pub struct NodeFacts {
    /// When its last trace object was accepted (ms since the epoch; 0: never).
    pub last_trace_ms: AtomicU64,
    /// Its newest object's timestamp minus tracerd's clock at the last batch (ms);
    /// `i64::MIN` when unknown.
    pub skew_ms: AtomicI64,
    /// Per trace rule, the times (ms) of its latest hits, oldest first.
    hits: Mutex<Vec<VecDeque<i64>>>,
}

impl NodeFacts {
    fn new(rules: usize) -> NodeFacts {
        NodeFacts {
            last_trace_ms: AtomicU64::new(0),
            skew_ms: AtomicI64::new(i64::MIN),
            hits: Mutex::new(vec![VecDeque::new(); rules]),
        }
    }

    fn record(&self, rule: usize, at_ms: i64, cap: usize) {
        let mut hits = lock(&self.hits);
        if let Some(q) = hits.get_mut(rule) {
            if q.len() >= cap {
                q.pop_front();
            }
            q.push_back(at_ms);
        }
    }

    /// Hits of `rule` after `now - window`; older ones are forgotten.
    pub fn count(&self, rule: usize, now: i64, window_ms: i64) -> usize {
        let mut hits = lock(&self.hits);
        let Some(q) = hits.get_mut(rule) else {
            return 0;
        };
        while q.front().is_some_and(|&t| t <= now - window_ms) {
            q.pop_front();
        }
        // Hits timed after `now` (the group's schedule lags the wall clock a little) count.
        q.len()
    }
}

struct Candidate {
    rule: usize,
    facts: Arc<NodeFacts>,
    at_ms: i64,
    machine: String,
}

/// The trace rules' observer and state.
pub struct TraceEngine {
    /// Every trace rule's condition, by its id.
    rules: Vec<TraceCond>,
    facts: Mutex<HashMap<String, Arc<NodeFacts>>>,
    tx: mpsc::Sender<Candidate>,
    rx: Mutex<Option<mpsc::Receiver<Candidate>>>,
    dropped: prometheus::IntCounter,
}

impl std::fmt::Debug for TraceEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceEngine")
            .field("rules", &self.rules.len())
            .finish()
    }
}

impl TraceEngine {
    /// An engine for `rules` (indexed by `TraceCond::id`), counting dropped candidates in
    /// `dropped`.
    pub fn new(rules: Vec<TraceCond>, dropped: prometheus::IntCounter) -> Arc<TraceEngine> {
        let (tx, rx) = mpsc::channel(HIT_QUEUE);
        Arc::new(TraceEngine {
            rules,
            facts: Mutex::default(),
            tx,
            rx: Mutex::new(Some(rx)),
            dropped,
        })
    }

    /// Every node name's facts, sorted by name.
    pub fn facts(&self) -> Vec<(String, Arc<NodeFacts>)> {
        let mut v: Vec<_> = lock(&self.facts)
            .iter()
            .map(|(k, f)| (k.clone(), f.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// One node name's facts, if it ever connected.
    pub fn node(&self, name: &str) -> Option<Arc<NodeFacts>> {
        lock(&self.facts).get(name).cloned()
    }

    /// Tests queued candidates' fields until `cancel` fires.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let Some(mut rx) = lock(&self.rx).take() else {
            return;
        };
        let mut buf = Vec::with_capacity(PASS);
        loop {
            buf.clear();
            let n = tokio::select! {
                _ = cancel.cancelled() => return,
                n = rx.recv_many(&mut buf, PASS) => n,
            };
            if n == 0 {
                return;
            }
            let batch = std::mem::take(&mut buf);
            let me = self.clone();
            let pass = tokio::task::spawn_blocking(move || {
                for c in &batch {
                    let cond = &me.rules[c.rule];
                    if cond.field.as_ref().is_some_and(|f| f.matches(&c.machine)) {
                        c.facts.record(c.rule, c.at_ms, hit_cap(cond));
                    }
                }
            });
            if let Err(e) = pass.await {
                tracing::error!(error = %e, "trace rule field tests failed to run");
            }
        }
    }
}

impl TraceObserver for TraceEngine {
    fn open(&self, node: &str) -> Box<dyn NodeTraces> {
        let facts = lock(&self.facts)
            .entry(node.to_string())
            .or_insert_with(|| Arc::new(NodeFacts::new(self.rules.len())))
            .clone();
        Box::new(SessionTraces {
            rules: self.rules.clone(),
            facts,
            tx: self.tx.clone(),
            dropped: self.dropped.clone(),
        })
    }
}

/// One session's handle.
struct SessionTraces {
    rules: Vec<TraceCond>,
    facts: Arc<NodeFacts>,
    tx: mpsc::Sender<Candidate>,
    dropped: prometheus::IntCounter,
}

impl std::fmt::Debug for SessionTraces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionTraces")
    }
}

impl NodeTraces for SessionTraces {
    fn offer(&self, objects: &[TraceObject]) {
        let Some(newest) = objects.iter().map(|o| o.timestamp_ns).max() else {
            return;
        };
        let now = crate::history::now_ms();
        self.facts
            .last_trace_ms
            .store(now.max(1) as u64, Ordering::Relaxed);
        self.facts
            .skew_ms
            .store(newest.div_euclid(1_000_000) - now, Ordering::Relaxed);
        for o in objects {
            for (i, cond) in self.rules.iter().enumerate() {
                if !cond.prefilter(o.severity, &o.namespace) {
                    continue;
                }
                if cond.field.is_none() {
                    self.facts.record(i, now, hit_cap(cond));
                    continue;
                }
                // Reserve before copying the text, so a full queue costs nothing.
                match self.tx.try_reserve() {
                    Ok(permit) => permit.send(Candidate {
                        rule: i,
                        facts: self.facts.clone(),
                        at_ms: now,
                        machine: o.machine.to_string(),
                    }),
                    Err(_) => self.dropped.inc(),
                }
            }
        }
    }
}

/// Per node, the count of `cond`'s hits within its window at `now`, for the nodes with at
/// least `cond.count`.
pub fn trace_results(
    engine: &TraceEngine,
    rule: usize,
    cond: &TraceCond,
    now: i64,
) -> Vec<(String, f64)> {
    engine
        .facts()
        .into_iter()
        .filter_map(|(name, f)| {
            let n = f.count(rule, now, cond.window_ms);
            (n >= cond.count as usize).then_some((name, n as f64))
        })
        .collect()
}

/// Per node, the value (seconds; the skew signed) of every node for which `cond` holds at
/// `now`. `nodes` is every name the registry knows with whether it is connected; `facts`
/// looks up a name's trace facts.
pub fn lifecycle_results(
    cond: Lifecycle,
    nodes: &[(NodeView, bool)],
    facts: &dyn Fn(&str) -> Option<Arc<NodeFacts>>,
    now: i64,
) -> Vec<(String, f64)> {
    let secs = |ms: i64| ms as f64 / 1e3;
    let mut out = Vec::new();
    for (view, connected) in nodes {
        let since = view.live.session().connected_since_ms as i64;
        let value = match cond {
            Lifecycle::DisconnectedFor(d) => {
                let last = view
                    .live
                    .last_message_ms()
                    .map_or(since, |m| (m as i64).max(since));
                (!connected && now - last >= d).then(|| secs(now - last))
            }
            Lifecycle::NoNodeInfoFor(d) => {
                (*connected && now - since >= d && view.live.data_point(NODE_INFO).is_none())
                    .then(|| secs(now - since))
            }
            Lifecycle::NoTracesFor(d) => {
                let last = facts(&view.name)
                    .map(|f| f.last_trace_ms.load(Ordering::Relaxed) as i64)
                    .unwrap_or(0)
                    .max(since);
                (*connected && now - last >= d).then(|| secs(now - last))
            }
            Lifecycle::ClockSkewOver(d) => {
                let skew = facts(&view.name)
                    .map(|f| f.skew_ms.load(Ordering::Relaxed))
                    .unwrap_or(i64::MIN);
                (*connected && skew != i64::MIN && skew.saturating_abs() > d).then(|| secs(skew))
            }
        };
        if let Some(v) = value {
            out.push((view.name.clone(), v));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DetailLevel, MachineForm, Severity};

    fn obj(sev: Severity, ns: &str, machine: &str, ts_ms: i64) -> TraceObject {
        TraceObject {
            namespace: ns.into(),
            severity: sev,
            detail: DetailLevel::Normal,
            timestamp_ns: ts_ms * 1_000_000,
            hostname: "h".into(),
            thread_id: "1".into(),
            machine: machine.into(),
            form: MachineForm::Payload,
            human: None,
        }
    }

    fn cond(count: u32) -> TraceCond {
        TraceCond {
            id: 0,
            min_severity: Severity::Error,
            namespace: None,
            field: None,
            count,
            window_ms: 60_000,
        }
    }

    #[test]
    fn counts_hits_at_or_above_severity_within_the_window() {
        let dropped = prometheus::IntCounter::new("d", "d").unwrap();
        let e = TraceEngine::new(vec![cond(2)], dropped);
        let s = e.open("relay-a");
        let now = crate::history::now_ms();
        s.offer(&[
            obj(Severity::Warning, "A", "{}", now),
            obj(Severity::Error, "A", "{}", now),
        ]);
        assert!(
            trace_results(&e, 0, &cond(2), now + 1).is_empty(),
            "one hit of two"
        );
        s.offer(&[obj(Severity::Critical, "A", "{}", now)]);
        let got = trace_results(&e, 0, &cond(2), now + 1);
        assert_eq!(got, vec![("relay-a".to_string(), 2.0)]);
        // A minute later the hits are out of the window.
        assert!(trace_results(&e, 0, &cond(2), now + 61_000).is_empty());
        let f = e.node("relay-a").unwrap();
        assert!(f.skew_ms.load(Ordering::Relaxed).abs() < 1_000);
        assert!(f.last_trace_ms.load(Ordering::Relaxed) as i64 >= now);
    }

    #[test]
    fn hits_are_capped_per_node_and_rule() {
        let dropped = prometheus::IntCounter::new("d", "d").unwrap();
        let e = TraceEngine::new(vec![cond(1)], dropped);
        let s = e.open("n");
        let now = crate::history::now_ms();
        let many: Vec<_> = (0..1000)
            .map(|_| obj(Severity::Error, "A", "{}", now))
            .collect();
        s.offer(&many);
        assert_eq!(trace_results(&e, 0, &cond(1), now + 1)[0].1, 100.0);
    }
}
