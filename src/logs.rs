//! Per-node log files: where they go, how lines look, when files rotate and which are pruned.
//!
//! `format` and `rotation` are pure; `writer` owns the open files of one node (blocking I/O,
//! run off the async workers); `janitor` applies retention to every node directory.

pub mod dir;
pub mod format;
pub mod janitor;
pub mod journal;
pub mod recovery;
pub mod rotation;
pub mod writer;

use std::path::PathBuf;

use crate::config::{Config, LogFormat, LogMode};
pub use rotation::Policy;

/// One file log target: a root directory and a format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTarget {
    /// Directory holding one sub-directory per node.
    pub root: PathBuf,
    /// Line format, which also fixes the file extension.
    pub format: LogFormat,
}

/// The `JournalMode` targets: journald's socket and the formats to send in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalTarget {
    /// journald's native protocol socket (`tracerd.journal.socket`).
    pub socket: PathBuf,
    /// One entry per trace object and format, duplicates removed.
    pub formats: Vec<LogFormat>,
}

/// Everything the writers and the janitor need from the config.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    /// File targets, duplicates removed, in config order.
    pub targets: Vec<FileTarget>,
    /// journald, when some target has `logMode: JournalMode` (its `logRoot` is ignored).
    pub journal: Option<JournalTarget>,
    /// Rotation and retention, when configured.
    pub policy: Option<Policy>,
    /// Period of the retention check, in seconds.
    pub prune_every_secs: u64,
}

impl LogSettings {
    /// Extracts the log settings from a validated config.
    pub fn from_config(config: &Config) -> LogSettings {
        let mut targets: Vec<FileTarget> = Vec::new();
        let mut journal: Option<JournalTarget> = None;
        for t in &config.logging {
            if t.log_mode == LogMode::JournalMode {
                let j = journal.get_or_insert_with(|| JournalTarget {
                    socket: config.tracerd.journal.socket.clone(),
                    formats: Vec::new(),
                });
                if !j.formats.contains(&t.log_format) {
                    j.formats.push(t.log_format);
                }
                continue;
            }
            let target = FileTarget {
                root: t.log_root.clone(),
                format: t.log_format,
            };
            if t.log_mode == LogMode::FileMode && !targets.contains(&target) {
                targets.push(target);
            }
        }
        let policy = config.rotation.as_ref().map(|r| Policy {
            limit_bytes: r.rp_log_limit_bytes,
            max_age_secs: r.max_age_secs(),
            keep_files: r.rp_keep_files_num as usize,
        });
        LogSettings {
            targets,
            journal,
            policy,
            prune_every_secs: config
                .rotation
                .as_ref()
                .map_or(60, |r| u64::from(r.rp_frequency_secs.max(1))),
        }
    }
}
