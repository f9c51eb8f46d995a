//! A run's record, as kept in `<state-dir>/runs/<name>.json`: pure types and checks.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Longest run name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Most labels a run may carry, and the longest key and value.
pub const MAX_LABELS: usize = 64;
/// Longest label key or value, in bytes.
pub const MAX_LABEL_BYTES: usize = 1024;

/// One benchmarking run: its name, labels and the two boundaries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// The run's name (also its file name).
    pub name: String,
    /// Labels given at the start (profile, backend, commit, ...).
    pub labels: BTreeMap<String, String>,
    /// Where every node's files stood when the run started.
    pub start: Boundary,
    /// ... and when it ended; `None` while it runs.
    pub end: Option<Boundary>,
}

/// Every node's files and state at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Boundary {
    /// Wall-clock time, RFC 3339 UTC.
    pub at: String,
    /// The same, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Per file log target (root and extension): each node directory's current file and its
    /// length cut back to the last whole line.
    pub targets: Vec<TargetMarks>,
    /// Per connected node: its round-trip times and its metrics at this moment.
    pub nodes: BTreeMap<String, NodeState>,
}

/// The node directories of one log target at a boundary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetMarks {
    /// The log root.
    pub root: PathBuf,
    /// The files' extension (`json` for ForMachine, `log` for ForHuman).
    pub ext: String,
    /// Node directory name → where its newest file stood. A directory with no log file yet is
    /// absent, as is one that did not exist.
    pub files: BTreeMap<String, FileMark>,
}

/// A position in a node's log: a file (by name, in its node directory) and a byte offset at a
/// line boundary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileMark {
    /// The file's name (`node-<stamp>.json`).
    pub file: String,
    /// Bytes of whole lines in it.
    pub offset: u64,
}

/// What a connected node's live state showed at a boundary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    /// Latest round-trip time and the last minute's p50 and p99, in seconds.
    pub rtt: Option<Rtt>,
    /// Every metric's value (numbers, or a label's text), by the name the node sent.
    pub metrics: BTreeMap<String, serde_json::Value>,
}

/// Round-trip times at a boundary, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rtt {
    /// The last sample.
    pub latest_seconds: f64,
    /// Median of the last minute.
    pub p50_seconds: f64,
    /// 99th percentile of the last minute.
    pub p99_seconds: f64,
    /// Samples in the last minute.
    pub samples: usize,
}

/// Why a run name or its labels are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not a name tracerd can use as a file name.
    #[error("a run name is 1 to {MAX_NAME_BYTES} characters of A-Z a-z 0-9 . _ - not starting with '.', got {0:?}")]
    BadName(String),
    /// Too many labels, or one too long.
    #[error("labels: at most {MAX_LABELS}, each key and value at most {MAX_LABEL_BYTES} bytes and keys non-empty ({0})")]
    BadLabels(String),
}

/// Checks a run name: it becomes a file name in the state directory.
pub fn check_name(name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        let mut shown: String = name.chars().take(MAX_NAME_BYTES + 1).collect();
        if shown.len() < name.len() {
            shown.push('…');
        }
        Err(NameError::BadName(shown))
    }
}

/// Checks a run's labels.
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), NameError> {
    if labels.len() > MAX_LABELS {
        return Err(NameError::BadLabels(format!("{} labels", labels.len())));
    }
    for (k, v) in labels {
        if k.is_empty() || k.len() > MAX_LABEL_BYTES || v.len() > MAX_LABEL_BYTES {
            let mut key: String = k.chars().take(40).collect();
            if key.len() < k.len() {
                key.push('…');
            }
            return Err(NameError::BadLabels(format!("label {key:?}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_file_names() {
        for good in ["r1", "dense-4k_p2p.v2", "A", &"x".repeat(MAX_NAME_BYTES)] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "é",
            "a\0",
            &"x".repeat(MAX_NAME_BYTES + 1),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn labels_are_bounded() {
        let mut l = BTreeMap::new();
        l.insert("profile".to_string(), "dense".to_string());
        assert_eq!(check_labels(&l), Ok(()));
        l.insert(String::new(), "x".to_string());
        assert!(check_labels(&l).is_err());
        let many: BTreeMap<String, String> = (0..=MAX_LABELS)
            .map(|i| (i.to_string(), String::new()))
            .collect();
        assert!(check_labels(&many).is_err());
    }
}
