//! An idle node holds no descriptor for its files: `NodeLog` closes them after opening and on
//! `close_idle`, and the next write reopens the same file, or a fresh one if it was deleted
//! or replaced meanwhile.

use super::tests::obj;
use super::*;
use crate::logs::FileTarget;
use std::path::Path;

const NOW: i64 = 1_784_714_812;

fn settings(root: &Path) -> LogSettings {
    LogSettings {
        targets: vec![FileTarget {
            root: root.to_path_buf(),
            format: LogFormat::ForMachine,
        }],
        journal: None,
        policy: None,
        prune_every_secs: 60,
    }
}

/// Descriptors of this process open on a path under `dir`.
fn fds_under(dir: &Path) -> usize {
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

/// The `i` of every line of every file in `dir`, in file order, and the number of files.
fn lines(dir: &Path) -> (Vec<u64>, usize) {
    let mut keys = crate::logs::dir::list_keys(dir, "json").unwrap();
    keys.sort();
    let mut out = Vec::new();
    for k in &keys {
        let text = fs::read_to_string(dir.join(k.file_name("json"))).unwrap();
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            out.push(v["data"]["i"].as_u64().unwrap());
        }
    }
    (out, keys.len())
}

#[test]
fn an_idle_node_holds_no_descriptor_and_writes_reopen_the_same_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let dir = root.join("n");
    let batch: Vec<_> = (1..=30).map(obj).collect();
    let (mut log, _) = NodeLog::open(&settings(&root), "n", NOW, false).unwrap();
    // The file and `node.json` exist from the connection on, without a descriptor.
    let link = fs::read_link(dir.join("node.json")).unwrap();
    assert!(dir.join(&link).is_file());
    assert_eq!(fds_under(&root), 0);
    assert!(!log.is_open());

    log.append_run(1, &batch[..10].iter().collect::<Vec<_>>(), NOW)
        .unwrap();
    log.checkpoint().unwrap();
    assert_eq!(fds_under(&root), 1, "a writing node holds its file open");
    assert!(log.close_idle());
    assert_eq!(fds_under(&root), 0);
    assert!(!log.close_idle(), "nothing left to close");

    log.append_run(11, &batch[10..20].iter().collect::<Vec<_>>(), NOW)
        .unwrap();
    log.checkpoint().unwrap();
    log.close_idle();
    // Never-synced lines of a closed file are synced by reopening it.
    log.sync().unwrap();
    assert_eq!(fds_under(&root), 1);
    log.close_idle();
    let (seen, files) = lines(&dir);
    assert_eq!(seen, (1..=20).collect::<Vec<_>>());
    assert_eq!(files, 1, "the reopened file is the same file");
    assert_eq!(fs::read_link(dir.join("node.json")).unwrap(), link);

    // The next session recovers from the checkpoint as before.
    log.finish().unwrap();
    drop(log);
    let (log, recovery) = NodeLog::open(&settings(&root), "n", NOW, false).unwrap();
    assert_eq!(log.seq(), 20);
    assert_eq!(recovery.persisted, Some(20));
    assert_eq!(fds_under(&root), 0);
}

#[test]
fn a_file_deleted_or_replaced_while_closed_is_replaced_by_a_fresh_one() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let dir = root.join("n");
    let outside = root.join("outside.txt");
    fs::write(&outside, "keep\n").unwrap();
    let batch: Vec<_> = (1..=30).map(obj).collect();
    let (mut log, _) = NodeLog::open(&settings(&root), "n", NOW, false).unwrap();
    log.append_run(1, &batch[..10].iter().collect::<Vec<_>>(), NOW)
        .unwrap();
    log.close_idle();

    // The current file swapped for a symlink to a file outside: never written through.
    let current = log.current_paths().remove(0);
    fs::remove_file(&current).unwrap();
    std::os::unix::fs::symlink(&outside, &current).unwrap();
    log.append_run(11, &batch[10..20].iter().collect::<Vec<_>>(), NOW)
        .unwrap();
    assert_eq!(fs::read_to_string(&outside).unwrap(), "keep\n");
    let fresh = log.current_paths().remove(0);
    assert_ne!(fresh, current);
    assert_eq!(
        fs::read_link(dir.join("node.json")).unwrap(),
        fresh.file_name().unwrap()
    );
    log.checkpoint().unwrap();
    log.close_idle();

    // The whole directory removed while closed: recreated at the next write.
    fs::remove_dir_all(&dir).unwrap();
    log.append_run(21, &batch[20..].iter().collect::<Vec<_>>(), NOW)
        .unwrap();
    log.checkpoint().unwrap();
    assert_eq!(lines(&dir).0, (21..=30).collect::<Vec<_>>());
    assert!(dir.join(recovery::STATE_FILE).is_file());

    // A checkpoint of a closed file notices a deletion too (one `lstat`).
    log.close_idle();
    let current = log.current_paths().remove(0);
    fs::remove_file(&current).unwrap();
    log.checkpoint().unwrap();
    assert!(log.current_paths()[0].is_file());
    assert_ne!(log.current_paths()[0], current);
}
