//! The registry of nodes ([`Nodes`]): every name claimed in this process, connected or not,
//! gives two connected nodes with the same name distinct names, deterministically, makes a
//! reconnecting node wait briefly for its previous session to release its name, and hands
//! each session a [`Lease`] on its node's live state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use crate::metrics::exposition::Naming;
use crate::model::{DataPoint, MetricsUpdate};
use crate::node::live::NodeLive;
#[cfg(test)]
use crate::node::names::{dir_name, NameError, MAX_NAME_BYTES};
use crate::node::names::{slugify, RESERVED_SLUGS};
use crate::node::tracer_config::TracerConfigSlot;

/// What tracerd knows about one node name, connected or not.
#[derive(Debug)]
pub struct NodeEntry {
    /// A session currently holds this name.
    pub connected: bool,
    /// The node identity (the exact name a node sent) this name belongs to; a node with
    /// another identity never gets it, even when both sanitise alike.
    pub identity: String,
    /// Highest sequence number persisted under this name.
    pub persisted_seq: u64,
    /// URL slug, assigned on first claim and kept for the life of the process.
    pub slug: String,
    /// Metrics, data points and session facts of the current (or last) session.
    pub live: Arc<NodeLive>,
    /// When its last session ended, until [`Nodes::take_departed`] has reported it.
    pub left_at: Option<std::time::Instant>,
    /// The tracing configuration the node last reported, kept across its sessions.
    pub tracer_config: Arc<TracerConfigSlot>,
}

/// A connected node as HTTP sees it.
#[derive(Debug, Clone)]
pub struct NodeView {
    /// Node name (also its log directory).
    pub name: String,
    /// URL slug.
    pub slug: String,
    /// Its live state.
    pub live: Arc<NodeLive>,
    /// The tracing configuration it last reported.
    pub tracer_config: Arc<TracerConfigSlot>,
}

#[derive(Debug, Default)]
struct Registry {
    nodes: HashMap<String, NodeEntry>,
    /// Slug to node name, for every name ever claimed.
    slugs: HashMap<String, String>,
}

/// How long a connecting node waits for a session of the same name that is ending (draining
/// its writer) before it is filed under a suffixed name instead.
pub const RECLAIM_WAIT: Duration = Duration::from_secs(2);

/// Sees every node's metric updates as they arrive (the metric history): one
/// [`NodeMetrics`] per lease, dropped when the lease is (the node left).
pub trait MetricsObserver: Send + Sync + std::fmt::Debug {
    /// A session of `node` starts.
    fn open(&self, node: &str) -> Box<dyn NodeMetrics>;
}

/// One session's view for a [`MetricsObserver`]; dropped when the session's lease is.
pub trait NodeMetrics: Send + Sync + std::fmt::Debug {
    /// An update arrived (called before the node's live state applies it).
    fn record(&self, update: &MetricsUpdate, naming: &Naming);
}

/// Sees every node's accepted trace objects (the alerts' trace rules): one [`NodeTraces`]
/// per lease. Its `offer` must not block and must cost little: it runs on the ingest path.
pub trait TraceObserver: Send + Sync + std::fmt::Debug {
    /// A session of `node` starts.
    fn open(&self, node: &str) -> Box<dyn NodeTraces>;
}

/// One session's view for a [`TraceObserver`]; dropped when the session's lease is.
pub trait NodeTraces: Send + Sync + std::fmt::Debug {
    /// Objects accepted for writing (never blocks).
    fn offer(&self, objects: &[crate::model::TraceObject]);
}

/// Registry of node names; cheap to clone.
#[derive(Debug, Clone)]
pub struct Nodes {
    inner: Arc<Mutex<Registry>>,
    naming: Arc<Naming>,
    /// The hooks every lease opens (kept behind one pointer: a `Lease` lives in every
    /// session's future).
    observers: Arc<Observers>,
    /// Counts metrics and data points refused by the per-node caps.
    refused: prometheus::IntCounter,
    /// Woken whenever a name is released.
    released: Arc<Notify>,
}

impl Default for Nodes {
    fn default() -> Self {
        let refused = prometheus::IntCounter::new("refused", "refused")
            .expect("metric name is a valid constant");
        Nodes::new(Arc::default(), refused)
    }
}

/// A claimed node name; releasing it (on drop) marks the node disconnected.
#[derive(Debug)]
pub struct Lease {
    nodes: Nodes,
    name: String,
    live: Arc<NodeLive>,
    tracer_config: Arc<TracerConfigSlot>,
    /// Highest sequence number persisted under this name when the lease was taken.
    pub persisted_seq: u64,
    hooks: Option<Box<Hooks>>,
}

/// The observers of a registry.
#[derive(Debug, Clone, Default)]
struct Observers {
    metrics: Option<Arc<dyn MetricsObserver>>,
    traces: Option<Arc<dyn TraceObserver>>,
}

/// One lease's views for the observers.
#[derive(Debug)]
struct Hooks {
    metrics: Option<Box<dyn NodeMetrics>>,
    traces: Option<Box<dyn NodeTraces>>,
}

impl Nodes {
    /// A registry whose metric names follow `naming`, counting refused metrics in `refused`.
    pub fn new(naming: Arc<Naming>, refused: prometheus::IntCounter) -> Nodes {
        Nodes {
            inner: Arc::default(),
            naming,
            observers: Arc::default(),
            refused,
            released: Arc::default(),
        }
    }

    /// Every lease taken from now on reports its metric updates to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn MetricsObserver>) -> Nodes {
        Arc::make_mut(&mut self.observers).metrics = Some(observer);
        self
    }

    /// Every lease taken from now on offers its accepted trace objects to `observer`.
    pub fn with_trace_observer(mut self, observer: Arc<dyn TraceObserver>) -> Nodes {
        Arc::make_mut(&mut self.observers).traces = Some(observer);
        self
    }

    /// How metric names become Prometheus names.
    pub fn naming(&self) -> &Naming {
        &self.naming
    }

    /// Names whose node has been disconnected for at least `age` at `now`, each reported once
    /// per departure (a node that reconnects in time is not reported).
    pub fn take_departed(&self, age: Duration, now: std::time::Instant) -> Vec<String> {
        let mut reg = self.lock();
        let mut out = Vec::new();
        for (name, e) in reg.nodes.iter_mut() {
            if let Some(left) = e.left_at {
                if !e.connected && now.saturating_duration_since(left) >= age {
                    e.left_at = None;
                    out.push(name.clone());
                }
            }
        }
        out
    }

    /// The shared [`Naming`], for the memory trimmer.
    pub fn naming_handle(&self) -> Arc<Naming> {
        self.naming.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding this lock cannot leave the map inconsistent (every update is
        // a single assignment), so a poisoned lock is still usable.
        crate::sync::lock(&self.inner)
    }

    /// Claims `name` (sanitised), waiting up to `wait` for a session holding it to end (a
    /// node reconnecting while its old session still drains gets its own name back), then
    /// falls back to [`Nodes::claim`].
    pub async fn claim_waiting(
        &self,
        name: &str,
        peer: &str,
        protocol: &str,
        wait: Duration,
    ) -> Lease {
        self.claim_waiting_as(name, name, peer, protocol, wait)
            .await
    }

    /// [`Nodes::claim_waiting`] for the node identity `identity` (the exact name it sent),
    /// whose sanitised form is `name`: waits only for a session of the same identity.
    pub async fn claim_waiting_as(
        &self,
        name: &str,
        identity: &str,
        peer: &str,
        protocol: &str,
        wait: Duration,
    ) -> Lease {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if !self.own_name_connected(name, identity) {
                break;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                break;
            }
        }
        self.claim_as(name, identity, peer, protocol)
    }

    /// Whether the name `identity` owns among `name`, `name-2`, ... is held by a session.
    fn own_name_connected(&self, name: &str, identity: &str) -> bool {
        let reg = self.lock();
        let mut candidate = name.to_string();
        let mut n = 1u32;
        while let Some(e) = reg.nodes.get(&candidate) {
            if e.identity == identity {
                return e.connected;
            }
            n += 1;
            candidate = format!("{name}-{n}");
        }
        false
    }

    /// Waits up to `wait` until no connected session holds `name`; true if it is free.
    pub async fn wait_until_free(&self, name: &str, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if !self.lock().nodes.get(name).is_some_and(|s| s.connected) {
                return true;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return false;
            }
        }
    }

    /// Claims `name` (already sanitised) as its own identity; see [`Nodes::claim_as`].
    pub fn claim(&self, name: &str, peer: &str, protocol: &str) -> Lease {
        self.claim_as(name, name, peer, protocol)
    }

    /// Claims `name` (the sanitised form of `identity`), or the first of `name-2`,
    /// `name-3`, ... that no connected node holds and that belongs to no other identity. The
    /// choice depends only on which names are connected and which identities own them. The
    /// new session starts with no metrics and no data points.
    pub fn claim_as(&self, name: &str, identity: &str, peer: &str, protocol: &str) -> Lease {
        let mut reg = self.lock();
        let mut candidate = name.to_string();
        let mut n = 1u32;
        while reg
            .nodes
            .get(&candidate)
            .is_some_and(|s| s.connected || s.identity != identity)
        {
            n += 1;
            candidate = format!("{name}-{n}");
        }
        let live = Arc::new(NodeLive::new(protocol, peer));
        let (persisted_seq, tracer_config) = match reg.nodes.get_mut(&candidate) {
            Some(state) => {
                state.connected = true;
                state.left_at = None;
                state.live = live.clone();
                (state.persisted_seq, state.tracer_config.clone())
            }
            None => {
                let slug = unique_slug(&reg.slugs, &candidate);
                reg.slugs.insert(slug.clone(), candidate.clone());
                let tracer_config = Arc::<TracerConfigSlot>::default();
                reg.nodes.insert(
                    candidate.clone(),
                    NodeEntry {
                        connected: true,
                        left_at: None,
                        identity: identity.to_string(),
                        persisted_seq: 0,
                        slug,
                        live: live.clone(),
                        tracer_config: tracer_config.clone(),
                    },
                );
                (0, tracer_config)
            }
        };
        drop(reg);
        Lease {
            hooks: match (&self.observers.metrics, &self.observers.traces) {
                (None, None) => None,
                (m, t) => Some(Box::new(Hooks {
                    metrics: m.as_ref().map(|o| o.open(&candidate)),
                    traces: t.as_ref().map(|o| o.open(&candidate)),
                })),
            },
            nodes: self.clone(),
            persisted_seq,
            name: candidate,
            live,
            tracer_config,
        }
    }

    /// Records that the directory `name` belongs to `identity` (found in its checkpoint),
    /// releasing `lease` on it: the caller claims again and gets another name.
    pub fn disown(&self, lease: Lease, identity: &str) {
        let name = lease.name.clone();
        drop(lease);
        if let Some(e) = self.lock().nodes.get_mut(&name) {
            if !e.connected {
                e.identity = identity.to_string();
                e.persisted_seq = 0;
            }
        }
    }

    /// Names of connected nodes, sorted.
    pub fn connected(&self) -> Vec<String> {
        self.views().into_iter().map(|v| v.name).collect()
    }

    /// Connected nodes, sorted by name. Holds the registry lock only to copy the list.
    pub fn views(&self) -> Vec<NodeView> {
        let mut views: Vec<NodeView> = self
            .lock()
            .nodes
            .iter()
            .filter(|(_, s)| s.connected)
            .map(|(n, s)| NodeView {
                name: n.clone(),
                slug: s.slug.clone(),
                live: s.live.clone(),
                tracer_config: s.tracer_config.clone(),
            })
            .collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        views
    }

    /// The connected node with this slug.
    pub fn by_slug(&self, slug: &str) -> Option<NodeView> {
        let reg = self.lock();
        let name = reg.slugs.get(slug)?;
        let state = reg.nodes.get(name).filter(|s| s.connected)?;
        Some(NodeView {
            name: name.clone(),
            slug: slug.to_string(),
            live: state.live.clone(),
            tracer_config: state.tracer_config.clone(),
        })
    }

    /// Every node name known to this process, connected or not, with whether it is
    /// connected, sorted by name (the alerts' lifecycle rules). Holds the registry lock only
    /// to copy the list.
    pub fn all_views(&self) -> Vec<(NodeView, bool)> {
        let mut views: Vec<(NodeView, bool)> = self
            .lock()
            .nodes
            .iter()
            .map(|(n, s)| {
                let view = NodeView {
                    name: n.clone(),
                    slug: s.slug.clone(),
                    live: s.live.clone(),
                    tracer_config: s.tracer_config.clone(),
                };
                (view, s.connected)
            })
            .collect();
        views.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        views
    }

    /// Runs `f` on the state of `name`, if known.
    pub fn with<R>(&self, name: &str, f: impl FnOnce(&NodeEntry) -> R) -> Option<R> {
        self.lock().nodes.get(name).map(f)
    }
}

fn unique_slug(taken: &HashMap<String, String>, name: &str) -> String {
    let base = slugify(name);
    let mut candidate = base.clone();
    let mut n = 1u32;
    while taken.contains_key(&candidate) || RESERVED_SLUGS.contains(&candidate.as_str()) {
        n += 1;
        candidate = format!("{base}-{n}");
    }
    candidate
}

impl Lease {
    /// The name this session is filed under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tracing configuration this node name last reported, shared with the registry.
    pub fn tracer_config(&self) -> &Arc<TracerConfigSlot> {
        &self.tracer_config
    }

    /// The node's live state (metrics, data points), shared with the registry.
    pub fn live(&self) -> &Arc<NodeLive> {
        &self.live
    }

    /// Records that a message arrived now (metrics, data points and pongs record it too).
    pub fn touch(&self) {
        self.live.touch();
    }

    /// Raises what is known to be persisted under this name (e.g. recovered from disk).
    pub fn recover(&mut self, seq: u64) {
        self.persisted_seq = self.persisted_seq.max(seq);
        self.set_persisted(seq);
    }

    /// Records what has been persisted.
    pub fn set_persisted(&self, seq: u64) {
        if let Some(state) = self.nodes.lock().nodes.get_mut(&self.name) {
            state.persisted_seq = state.persisted_seq.max(seq);
        }
    }

    /// Applies a metrics update (takes only this node's metric lock).
    pub fn apply_metrics(&self, update: MetricsUpdate) {
        self.live.touch();
        if let Some(o) = self.hooks.as_ref().and_then(|h| h.metrics.as_ref()) {
            o.record(&update, &self.nodes.naming);
        }
        let refused = self.live.apply_metrics(update, &self.nodes.naming);
        self.nodes.refused.inc_by(refused);
        if refused > 0 && self.live.refused() == refused {
            // The first refusals of this session: one line, the rest are counted only.
            let budget = self.nodes.naming.budget();
            tracing::warn!(node = %crate::node::escape_name(&self.name), refused,
                per_node = crate::node::live::MAX_METRICS_PER_NODE,
                metric_bytes = budget.limit(), used = budget.used(),
                "node metrics refused: the node holds its most metrics, or every node's together \
                 hold tracerd.limits.metricBytes; further refusals this session are counted in \
                 tracerd_node_metrics_refused_total only");
        }
    }

    /// Offers trace objects accepted for writing to the trace observer, if any.
    pub fn offer_traces(&self, objects: &[crate::model::TraceObject]) {
        if let Some(t) = self.hooks.as_ref().and_then(|h| h.traces.as_ref()) {
            t.offer(objects);
        }
    }

    /// Stores data points.
    pub fn apply_data_points(&self, points: Vec<DataPoint>) {
        self.live.touch();
        let refused = self.live.apply_data_points(points);
        self.nodes.refused.inc_by(refused);
    }

    /// Records a round-trip time measured now.
    pub fn record_rtt(&self, rtt: std::time::Duration) {
        self.live.touch();
        self.live.record_rtt(std::time::Instant::now(), rtt);
    }

    /// Lets HTTP ask this session for live data points.
    pub fn serve_data_points(
        &self,
        source: tokio::sync::mpsc::Sender<crate::node::live::DataPointRequest>,
    ) {
        self.live.serve_data_points(source);
    }

    /// Lets HTTP report the depth of this session's write queue.
    pub fn watch_queue<T: Send + 'static>(&self, queue: tokio::sync::mpsc::WeakSender<T>) {
        self.live.watch_queue(queue);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(state) = self.nodes.lock().nodes.get_mut(&self.name) {
            if Arc::ptr_eq(&state.live, &self.live) {
                state.connected = false;
                state.left_at = Some(std::time::Instant::now());
            }
        }
        // A departed node's metrics are not served: free them (and their budget) now.
        self.live.release_metrics();
        self.nodes.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::{Component, Path};

    #[test]
    fn sanitises_hostile_names() {
        assert_eq!(dir_name("relay-1").unwrap(), "relay-1");
        assert_eq!(dir_name("../../etc/passwd").unwrap(), "passwd");
        assert_eq!(dir_name("..").unwrap_err(), NameError::Empty("..".into()));
        assert_eq!(dir_name(".hidden").unwrap(), "hidden");
        assert_eq!(dir_name("a/b\0c").unwrap(), "b_c");
        assert_eq!(dir_name("--rf").unwrap(), "rf");
        assert_eq!(dir_name("nœud-ß").unwrap(), "nœud-ß");
        assert!(dir_name("").is_err());
        assert!(dir_name("///").is_err());
        assert_eq!(dir_name("my_node").unwrap(), "my_node");
        assert_eq!(dir_name(&"x".repeat(255)).unwrap().len(), MAX_NAME_BYTES);
    }

    #[test]
    fn collisions_get_distinct_deterministic_names() {
        let nodes = Nodes::default();
        let a = nodes.claim("relay", "p1", "native");
        let b = nodes.claim("relay", "p2", "native");
        let c = nodes.claim("relay", "p3", "native");
        assert_eq!(
            (a.name(), b.name(), c.name()),
            ("relay", "relay-2", "relay-3")
        );
        drop(b);
        let d = nodes.claim("relay", "p4", "native");
        assert_eq!(d.name(), "relay-2");
        drop(a);
        assert_eq!(nodes.connected(), vec!["relay-2", "relay-3"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconnecting_node_gets_its_name_back_once_the_old_session_ends() {
        let nodes = Nodes::default();
        let old = nodes.claim("relay", "p1", "native");
        let n2 = nodes.clone();
        let waiter = tokio::spawn(async move {
            n2.claim_waiting("relay", "p2", "native", RECLAIM_WAIT)
                .await
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(old);
        assert_eq!(waiter.await.unwrap().name(), "relay");
        // A live duplicate is filed under a suffix after the wait.
        let _live = nodes.claim("dup", "p1", "native");
        let started = tokio::time::Instant::now();
        let second = nodes
            .claim_waiting("dup", "p2", "native", RECLAIM_WAIT)
            .await;
        assert_eq!(second.name(), "dup-2");
        assert!(started.elapsed() >= RECLAIM_WAIT);
    }

    #[test]
    fn identities_that_sanitise_alike_never_share_a_name() {
        let nodes = Nodes::default();
        let a = nodes.claim_as("x_y", "x/y", "p", "native");
        a.set_persisted(7);
        drop(a);
        // Not connected, but owned by another identity: skipped.
        let b = nodes.claim_as("x_y", "x y", "p", "native");
        assert_eq!((b.name(), b.persisted_seq), ("x_y-2", 0));
        drop(b);
        let a = nodes.claim_as("x_y", "x/y", "p", "native");
        assert_eq!((a.name(), a.persisted_seq), ("x_y", 7));
        // A directory found to belong to someone else on disk is disowned.
        let c = nodes.claim_as("z", "z!", "p", "native");
        assert_eq!(c.name(), "z");
        nodes.disown(c, "z?");
        assert_eq!(nodes.claim_as("z", "z!", "p", "native").name(), "z-2");
        assert_eq!(dir_name(&"n".repeat(256)), Err(NameError::TooLong(256)));
        assert!(dir_name(&"n".repeat(255)).is_ok());
    }

    #[test]
    fn persisted_sequence_survives_reconnect() {
        let nodes = Nodes::default();
        let a = nodes.claim("n", "p", "native");
        a.set_persisted(41);
        drop(a);
        assert_eq!(nodes.claim("n", "p", "native").persisted_seq, 41);
    }

    #[test]
    fn slugs_follow_cardano_and_stay_distinct() {
        assert_eq!(slugify("machine_3001"), "machine-3001");
        assert_eq!(slugify("127.0.0.1:30004"), "12700130004");
        assert_eq!(slugify("TxGenerator"), "txgenerator");
        assert_eq!(slugify("--a__b  c--"), "a-b-c");
        assert_eq!(slugify("..."), "node");
        let nodes = Nodes::default();
        let a = nodes.claim("relay_1", "p", "native");
        let b = nodes.claim("relay-1", "p", "native");
        let m = nodes.claim("metrics", "p", "native");
        let slugs: Vec<String> = nodes.views().into_iter().map(|v| v.slug).collect();
        assert_eq!(slugs, vec!["metrics-2", "relay-1-2", "relay-1"]);
        assert_eq!(nodes.by_slug("relay-1").unwrap().name, "relay_1");
        drop((a, b, m));
        assert!(nodes.by_slug("relay-1").is_none());
        // A reconnect keeps its slug.
        let _b = nodes.claim("relay-1", "p", "native");
        assert_eq!(nodes.by_slug("relay-1-2").unwrap().name, "relay-1");
    }

    #[test]
    fn a_new_session_starts_with_fresh_metrics() {
        let nodes = Nodes::default();
        let a = nodes.claim("n", "p1", "native");
        a.apply_metrics(MetricsUpdate {
            full: true,
            metrics: vec![("x".into(), crate::model::MetricValue::Counter(1))],
        });
        assert_eq!(nodes.by_slug("n").unwrap().live.metrics().len(), 1);
        drop(a);
        let _b = nodes.claim("n", "p2", "tcp");
        let view = nodes.by_slug("n").unwrap();
        assert!(view.live.metrics().is_empty());
        assert_eq!(view.live.session().peer, "p2");
    }

    proptest! {
        #[test]
        fn sanitised_names_never_escape_the_root(name in any::<String>()) {
            if let Ok(s) = dir_name(&name) {
                let path = Path::new("/root").join(&s);
                prop_assert!(path.starts_with("/root"));
                let comps: Vec<_> = Path::new(&s).components().collect();
                prop_assert_eq!(comps.len(), 1);
                prop_assert!(matches!(comps[0], Component::Normal(_)));
                prop_assert!(!s.starts_with('.') && !s.starts_with('-'));
                prop_assert!(!s.chars().any(char::is_control));
                prop_assert!(!s.contains('\0'));
                prop_assert!(s.len() <= MAX_NAME_BYTES);
            }
        }
    }
}
