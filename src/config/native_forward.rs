//! `tracerd.forward` (issue 16, point 3): native downstreams — other tracerds that get every
//! node's trace objects, read back from this tracerd's machine-format files, over the native
//! protocol. Types only (serde) and the pure cross-key checks; the shape of each key is in
//! `shape.rs`, the forwarding itself in `crate::forward::native`.

use serde::{Deserialize, Serialize};

use super::Address;

/// Default most trace objects in one `TraceBatch`.
pub const DEFAULT_FORWARD_BATCH_OBJECTS: u64 = 1000;
/// Default batches sent and not yet acknowledged, per node.
pub const DEFAULT_FORWARD_IN_FLIGHT: u64 = 4;
/// Default pause between two looks at a node's files once everything was sent, in ms.
pub const DEFAULT_FORWARD_POLL_MS: u64 = 200;

fn default_batch_objects() -> u64 {
    DEFAULT_FORWARD_BATCH_OBJECTS
}
fn default_in_flight() -> u64 {
    DEFAULT_FORWARD_IN_FLIGHT
}
fn default_poll_ms() -> u64 {
    DEFAULT_FORWARD_POLL_MS
}

/// One native downstream (`tracerd.forward[i]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NativeDownstream {
    /// The downstream's name: its `downstream` label in metrics and its cursor directory
    /// (`forward-<name>`), so it must stay the same across restarts.
    pub name: String,
    /// The downstream tracerd's native listener (`host:port` or a Unix socket path).
    pub address: Address,
    /// Namespace prefixes to forward (as `hasForwarding`'s: a plain prefix); empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Most trace objects in one batch. Default 1000.
    #[serde(default = "default_batch_objects")]
    pub batch_objects: u64,
    /// Batches sent and not yet acknowledged, per node (bounds memory). Default 4.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: u64,
    /// Pause between two looks at a node's files once everything was sent, in ms. Default 200.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

impl NativeDownstream {
    /// Whether an object of `namespace` goes to this downstream.
    pub fn matches(&self, namespace: &str) -> bool {
        self.namespaces.is_empty()
            || self
                .namespaces
                .iter()
                .any(|p| namespace.starts_with(p.as_str()))
    }
}

/// Whether `name` can name a downstream: `[A-Za-z0-9_.-]`, 1 to 64 bytes, not `.`/`..`.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The problems of `tracerd.forward` (key, message); pure.
pub(super) fn check_forward(
    list: &[NativeDownstream],
    logging: &[super::LoggingParams],
    own: &[Address],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if list.is_empty() {
        return out;
    }
    for (i, d) in list.iter().enumerate() {
        if !plain_name(&d.name) {
            out.push((
                format!("tracerd.forward[{i}].name"),
                format!(
                    "{:?} must be 1 to 64 letters, digits, '_', '.' or '-' (it names the downstream's cursor directory)",
                    d.name
                ),
            ));
        }
        if own.contains(&d.address) {
            out.push((
                format!("tracerd.forward[{i}].address"),
                format!(
                    "{} is this tracerd's own native listener (tracerd.native.acceptAt): forwarding to it would loop",
                    d.address
                ),
            ));
        }
        if list[..i].iter().any(|o| o.name == d.name) {
            out.push((
                format!("tracerd.forward[{i}].name"),
                format!(
                    "{:?} names two downstreams; each needs its own name (its own cursors)",
                    d.name
                ),
            ));
        }
    }
    let machine_files = logging.iter().any(|t| {
        t.log_mode == super::LogMode::FileMode && t.log_format == super::LogFormat::ForMachine
    });
    if !machine_files {
        out.push((
            "tracerd.forward".to_string(),
            "forwards from the machine-format files: add a logging target with logMode FileMode and logFormat ForMachine".to_string(),
        ));
    }
    out
}
