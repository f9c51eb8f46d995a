//! Node identity: turning a name a node sends into a safe directory name, and the registry of
//! nodes that gives two connected nodes with the same name distinct names, deterministically.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use crate::model::{DataPoint, MetricValue, MetricsUpdate};

/// Longest sanitised name, in bytes, leaving room for a collision suffix within NAME_MAX.
pub const MAX_NAME_BYTES: usize = 200;

/// Why a node name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// No letter or digit is left after sanitising.
    #[error("node name {0:?} has no usable characters (it needs a letter or digit)")]
    Empty(String),
}

/// Turns a node's name into a single, safe path component.
///
/// Letters and digits (any script), `-`, `_` and `.` are kept; anything else (`/`, `\`, NUL,
/// spaces, control characters, ...) becomes `_`. A name without a single letter or digit is
/// rejected. Runs of dots collapse to one and leading dots
/// and dashes are dropped, so the result is never `.`, `..`, a hidden file or an option-like
/// name. The result is at most [`MAX_NAME_BYTES`] bytes. The result is always a single normal
/// path component, so joining it to a log root never leaves the root.
pub fn sanitise(name: &str) -> Result<String, NameError> {
    let mut out = String::with_capacity(name.len().min(MAX_NAME_BYTES));
    for c in name.chars() {
        let c = if c.is_alphanumeric() || c == '-' || c == '_' || c == '.' {
            c
        } else {
            '_'
        };
        if c == '.' && (out.is_empty() || out.ends_with('.')) {
            continue;
        }
        if c == '-' && out.is_empty() {
            continue;
        }
        if out.len() + c.len_utf8() > MAX_NAME_BYTES {
            break;
        }
        out.push(c);
    }
    if !out.chars().any(char::is_alphanumeric) {
        return Err(NameError::Empty(name.to_string()));
    }
    Ok(out)
}

/// What tracerd knows about one node name, connected or not.
#[derive(Debug, Default)]
pub struct NodeState {
    /// A session currently holds this name.
    pub connected: bool,
    /// Highest sequence number persisted under this name.
    pub persisted_seq: u64,
    /// Latest metric values by internal name.
    pub metrics: HashMap<String, MetricValue>,
    /// Latest data points by name (JSON text).
    pub data_points: HashMap<String, String>,
    /// Peer address of the current (or last) session.
    pub peer: String,
    /// Last measured round-trip time, in microseconds.
    pub rtt_micros: Option<u64>,
}

/// How long a connecting node waits for a session of the same name that is ending (draining
/// its writer) before it is filed under a suffixed name instead.
pub const RECLAIM_WAIT: Duration = Duration::from_secs(2);

/// Registry of node names; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Nodes {
    inner: Arc<Mutex<HashMap<String, NodeState>>>,
    /// Woken whenever a name is released.
    released: Arc<Notify>,
}

/// A claimed node name; releasing it (on drop) marks the node disconnected.
#[derive(Debug)]
pub struct Lease {
    nodes: Nodes,
    name: String,
    /// Highest sequence number persisted under this name when the lease was taken.
    pub persisted_seq: u64,
}

impl Nodes {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, NodeState>> {
        // A panic while holding this lock cannot leave the map inconsistent (every update is
        // a single assignment), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims `name` (sanitised), waiting up to `wait` for a session holding it to end (a
    /// node reconnecting while its old session still drains gets its own name back), then
    /// falls back to [`Nodes::claim`].
    pub async fn claim_waiting(&self, name: &str, peer: &str, wait: Duration) -> Lease {
        self.wait_until_free(name, wait).await;
        self.claim(name, peer)
    }

    /// Waits up to `wait` until no connected session holds `name`; true if it is free.
    pub async fn wait_until_free(&self, name: &str, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if !self.lock().get(name).is_some_and(|s| s.connected) {
                return true;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return false;
            }
        }
    }

    /// Claims `name` (already sanitised), or the first of `name-2`, `name-3`, ... that no
    /// connected node holds. The choice depends only on which names are connected.
    pub fn claim(&self, name: &str, peer: &str) -> Lease {
        let mut map = self.lock();
        let mut candidate = name.to_string();
        let mut n = 1u32;
        while map.get(&candidate).is_some_and(|s| s.connected) {
            n += 1;
            candidate = format!("{name}-{n}");
        }
        let state = map.entry(candidate.clone()).or_default();
        state.connected = true;
        state.peer = peer.to_string();
        state.rtt_micros = None;
        Lease {
            nodes: self.clone(),
            persisted_seq: state.persisted_seq,
            name: candidate,
        }
    }

    /// Names of connected nodes, sorted.
    pub fn connected(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, s)| s.connected)
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }

    /// Runs `f` on the state of `name`, if known.
    pub fn with<R>(&self, name: &str, f: impl FnOnce(&NodeState) -> R) -> Option<R> {
        self.lock().get(name).map(f)
    }
}

impl Lease {
    /// The name this session is filed under.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn update(&self, f: impl FnOnce(&mut NodeState)) {
        if let Some(state) = self.nodes.lock().get_mut(&self.name) {
            f(state);
        }
    }

    /// Raises what is known to be persisted under this name (e.g. recovered from disk).
    pub fn recover(&mut self, seq: u64) {
        self.persisted_seq = self.persisted_seq.max(seq);
        self.set_persisted(seq);
    }

    /// Records what has been persisted.
    pub fn set_persisted(&self, seq: u64) {
        self.update(|s| s.persisted_seq = s.persisted_seq.max(seq));
    }

    /// Applies a metrics update.
    pub fn apply_metrics(&self, update: MetricsUpdate) {
        self.update(|s| {
            if update.full {
                s.metrics.clear();
            }
            s.metrics.extend(update.metrics);
        });
    }

    /// Stores data points.
    pub fn apply_data_points(&self, points: Vec<DataPoint>) {
        self.update(|s| {
            s.data_points
                .extend(points.into_iter().map(|p| (p.name, p.json)))
        });
    }

    /// Records a round-trip time.
    pub fn set_rtt(&self, micros: u64) {
        self.update(|s| s.rtt_micros = Some(micros));
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.update(|s| s.connected = false);
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
        assert_eq!(sanitise("relay-1").unwrap(), "relay-1");
        assert_eq!(sanitise("../../etc/passwd").unwrap(), "_._etc_passwd");
        assert_eq!(sanitise("..").unwrap_err(), NameError::Empty("..".into()));
        assert_eq!(sanitise(".hidden").unwrap(), "hidden");
        assert_eq!(sanitise("a/b\0c").unwrap(), "a_b_c");
        assert_eq!(sanitise("--rf").unwrap(), "rf");
        assert_eq!(sanitise("nœud-ß").unwrap(), "nœud-ß");
        assert_eq!(sanitise("a..b").unwrap(), "a.b");
        assert!(sanitise("").is_err());
        assert!(sanitise("///").is_err());
        assert_eq!(sanitise("my_node").unwrap(), "my_node");
        assert_eq!(sanitise(&"x".repeat(1000)).unwrap().len(), MAX_NAME_BYTES);
    }

    #[test]
    fn collisions_get_distinct_deterministic_names() {
        let nodes = Nodes::default();
        let a = nodes.claim("relay", "p1");
        let b = nodes.claim("relay", "p2");
        let c = nodes.claim("relay", "p3");
        assert_eq!(
            (a.name(), b.name(), c.name()),
            ("relay", "relay-2", "relay-3")
        );
        drop(b);
        let d = nodes.claim("relay", "p4");
        assert_eq!(d.name(), "relay-2");
        drop(a);
        assert_eq!(nodes.connected(), vec!["relay-2", "relay-3"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconnecting_node_gets_its_name_back_once_the_old_session_ends() {
        let nodes = Nodes::default();
        let old = nodes.claim("relay", "p1");
        let n2 = nodes.clone();
        let waiter =
            tokio::spawn(async move { n2.claim_waiting("relay", "p2", RECLAIM_WAIT).await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(old);
        assert_eq!(waiter.await.unwrap().name(), "relay");
        // A live duplicate is filed under a suffix after the wait.
        let _live = nodes.claim("dup", "p1");
        let started = tokio::time::Instant::now();
        let second = nodes.claim_waiting("dup", "p2", RECLAIM_WAIT).await;
        assert_eq!(second.name(), "dup-2");
        assert!(started.elapsed() >= RECLAIM_WAIT);
    }

    #[test]
    fn persisted_sequence_survives_reconnect() {
        let nodes = Nodes::default();
        let a = nodes.claim("n", "p");
        a.set_persisted(41);
        drop(a);
        assert_eq!(nodes.claim("n", "p").persisted_seq, 41);
    }

    proptest! {
        #[test]
        fn sanitised_names_never_escape_the_root(name in any::<String>()) {
            if let Ok(s) = sanitise(&name) {
                let path = Path::new("/root").join(&s);
                prop_assert!(path.starts_with("/root"));
                let comps: Vec<_> = Path::new(&s).components().collect();
                prop_assert_eq!(comps.len(), 1);
                prop_assert!(matches!(comps[0], Component::Normal(_)));
                prop_assert!(!s.starts_with('.'));
                prop_assert!(!s.contains('\0'));
                prop_assert!(s.len() <= MAX_NAME_BYTES);
            }
        }
    }
}
