//! Retention: applies the pure [`rotation::prune`] plan to every node directory under every log
//! root, connected or not. Blocking I/O, run on the blocking pool on a timer.

use std::fs;
use std::path::Path;

use crate::logs::rotation::{self, Policy};
use crate::logs::{dir, LogSettings};

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Files deleted.
    pub deleted: u64,
    /// Files that could not be deleted or directories that could not be read.
    pub errors: u64,
}

/// One retention pass over every target at time `now`. Does nothing without a policy.
pub fn prune_all(settings: &LogSettings, now: i64) -> Pass {
    let mut pass = Pass::default();
    let Some(policy) = settings.policy else {
        return pass;
    };
    for target in &settings.targets {
        let Ok(entries) = fs::read_dir(&target.root) else {
            pass.errors += 1;
            continue;
        };
        for entry in entries.flatten() {
            // Node directories only: symlinks and files at the root are not ours to touch.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                prune_dir(
                    &entry.path(),
                    target.format.extension(),
                    &policy,
                    now,
                    &mut pass,
                );
            }
        }
    }
    pass
}

fn prune_dir(dir: &Path, ext: &str, policy: &Policy, now: i64, pass: &mut Pass) {
    let keys = match dir::list_keys(dir, ext) {
        Ok(keys) => keys,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot list log directory for retention");
            pass.errors += 1;
            return;
        }
    };
    for key in rotation::prune(policy, now, &keys) {
        let path = dir.join(key.file_name(ext));
        match fs::remove_file(&path) {
            Ok(()) => {
                tracing::debug!(file = %path.display(), "retention deleted old log file");
                pass.deleted += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot delete old log file");
                pass.errors += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LogFormat;
    use crate::logs::rotation::FileKey;
    use crate::logs::FileTarget;

    #[test]
    fn prunes_connected_and_disconnected_nodes_alike() {
        let tmp = tempfile::tempdir().unwrap();
        let t0 = 1_784_714_812;
        for node in ["a", "b"] {
            let dir = tmp.path().join(node);
            fs::create_dir(&dir).unwrap();
            for i in 0..5 {
                let key = FileKey {
                    stamp: t0 + i * 3600,
                    counter: 0,
                    legacy: false,
                };
                fs::write(dir.join(key.file_name("json")), "{}\n").unwrap();
            }
            fs::write(dir.join("unrelated.txt"), "x").unwrap();
        }
        let settings = LogSettings {
            journal: None,
            targets: vec![FileTarget {
                root: tmp.path().to_path_buf(),
                format: LogFormat::ForMachine,
            }],
            policy: Some(Policy {
                limit_bytes: 1,
                max_age_secs: 2 * 3600,
                keep_files: 1,
            }),
            prune_every_secs: 60,
        };
        // At t0 + 5h: files are 5h..1h old; current (1h) and one more (2h) are protected; of
        // the rest (5h, 4h, 3h) all are at least 2h old.
        let pass = prune_all(&settings, t0 + 5 * 3600);
        assert_eq!(
            pass,
            Pass {
                deleted: 6,
                errors: 0
            }
        );
        for node in ["a", "b"] {
            let mut left = dir::list_keys(&tmp.path().join(node), "json").unwrap();
            left.sort();
            assert_eq!(left.len(), 2);
            assert!(tmp.path().join(node).join("unrelated.txt").exists());
        }
        assert_eq!(prune_all(&settings, t0 + 5 * 3600).deleted, 0);
    }
}
