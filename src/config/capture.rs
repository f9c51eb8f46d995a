//! `tracerd.capture` (issue 20): the capture window's byte budget and the captures to take
//! when a node first connects after start. Types only (serde) and the pure cross-key checks;
//! the shape of each key is in `shape.rs`, the captures themselves in `crate::capture`.

use serde::{Deserialize, Serialize};

/// Default budget of every capture file together, in bytes (1 GiB).
pub const DEFAULT_CAPTURE_BUDGET_BYTES: u64 = 1 << 30;
/// Default `maxBytes` of a capture at start (16 MiB).
pub const DEFAULT_CAPTURE_MAX_BYTES: u64 = 16 << 20;

fn default_budget() -> u64 {
    DEFAULT_CAPTURE_BUDGET_BYTES
}
fn default_max_bytes() -> u64 {
    DEFAULT_CAPTURE_MAX_BYTES
}

/// `tracerd.capture`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureSettings {
    /// Every `capture-*.pcapng` file in the node directories plus the `maxBytes` of the
    /// running captures stay under this; 0 turns captures off.
    #[serde(default = "default_budget")]
    pub budget_bytes: u64,
    /// Captures taken when the named node first connects after tracerd started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub at_start: Vec<CaptureAtStart>,
}

impl Default for CaptureSettings {
    fn default() -> Self {
        CaptureSettings {
            budget_bytes: DEFAULT_CAPTURE_BUDGET_BYTES,
            at_start: Vec::new(),
        }
    }
}

impl CaptureSettings {
    /// True when nothing differs from the defaults.
    pub fn is_default(&self) -> bool {
        *self == CaptureSettings::default()
    }
}

/// One capture at start (`tracerd.capture.atStart[i]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureAtStart {
    /// The node's name (its log directory's name).
    pub node: String,
    /// At most this long, in seconds.
    pub seconds: u64,
    /// At most this many bytes of file. Default 16 MiB.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
}

/// The problems of `tracerd.capture` (key, message); pure.
pub(super) fn check_capture(c: &CaptureSettings) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, e) in c.at_start.iter().enumerate() {
        // 0 turns captures off: the entries are not used.
        if c.budget_bytes != 0 && e.max_bytes > c.budget_bytes {
            out.push((
                "tracerd.capture.budgetBytes".to_string(),
                format!(
                    "{} is less than tracerd.capture.atStart[{i}].maxBytes ({}): the capture could never start",
                    c.budget_bytes, e.max_bytes
                ),
            ));
        }
        if c.at_start[..i].iter().any(|o| o.node == e.node) {
            out.push((
                format!("tracerd.capture.atStart[{i}].node"),
                format!(
                    "{:?} is named twice; one capture per node at a time",
                    e.node
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_at_start_fits_the_budget_once_per_node() {
        let entry = |node: &str, max_bytes| CaptureAtStart {
            node: node.into(),
            seconds: 2,
            max_bytes,
        };
        let ok = CaptureSettings {
            budget_bytes: 1 << 20,
            at_start: vec![entry("a", 4096), entry("b", 1 << 20)],
        };
        assert!(check_capture(&ok).is_empty());
        let bad = CaptureSettings {
            budget_bytes: 1 << 20,
            at_start: vec![entry("a", 4096), entry("a", 2 << 20)],
        };
        let keys: Vec<String> = check_capture(&bad).into_iter().map(|(k, _)| k).collect();
        let off = CaptureSettings {
            budget_bytes: 0,
            ..bad.clone()
        };
        assert_eq!(check_capture(&off).len(), 1);
        assert_eq!(
            keys,
            [
                "tracerd.capture.budgetBytes",
                "tracerd.capture.atStart[1].node"
            ]
        );
    }
}
