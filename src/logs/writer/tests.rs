//! `NodeLog`'s rotation, reopening and recovery tests.

use super::*;
use crate::logs::FileTarget;
use crate::model::{DetailLevel, Severity};
use std::path::Path;

pub(super) fn obj(i: usize) -> TraceObject {
    TraceObject {
        namespace: "Test.Ns".into(),
        severity: Severity::Info,
        detail: DetailLevel::Normal,
        timestamp_ns: 1_784_714_812_000_000_000,
        hostname: "h".into(),
        thread_id: "1".into(),
        machine: format!("{{\"i\":{i}}}").into(),
        human: Some(format!("line {i}").into()),
        form: Default::default(),
    }
}

fn settings(root: &Path, limit: Option<u64>) -> LogSettings {
    LogSettings {
        targets: vec![
            FileTarget {
                root: root.join("m"),
                format: LogFormat::ForMachine,
            },
            FileTarget {
                root: root.join("h"),
                format: LogFormat::ForHuman,
            },
        ],
        journal: None,
        policy: limit.map(|limit_bytes| Policy {
            limit_bytes,
            max_age_secs: 3600,
            keep_files: 100,
        }),
        prune_every_secs: 60,
    }
}

fn read_all(dir: &Path, ext: &str) -> (Vec<String>, Vec<PathBuf>) {
    let mut keys = crate::logs::dir::list_keys(dir, ext).unwrap();
    keys.sort();
    let mut lines = Vec::new();
    let mut paths = Vec::new();
    for k in keys {
        let p = dir.join(k.file_name(ext));
        let text = fs::read_to_string(&p).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{p:?} ends mid-line"
        );
        assert!(!text.starts_with('\n'), "{p:?} starts with an empty line");
        lines.extend(text.lines().map(str::to_string));
        paths.push(p);
    }
    (lines, paths)
}

#[test]
fn rotation_splits_only_at_line_boundaries_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("m")).unwrap();
    fs::create_dir_all(tmp.path().join("h")).unwrap();
    let s = settings(tmp.path(), Some(1000));
    let mut log = NodeLog::open(&s, "node-a", 1_784_714_812, false).unwrap().0;
    let batch: Vec<_> = (0..500).map(obj).collect();
    let out = log.append(&batch[..250], 1_784_714_812).unwrap();
    log.append(&batch[250..], 1_784_714_812).unwrap();
    assert!(out.rotations > 5);
    let (lines, paths) = read_all(&tmp.path().join("m/node-a"), "json");
    assert_eq!(lines.len(), 500);
    for (i, l) in lines.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["data"]["i"], i);
    }
    for p in &paths {
        assert!(fs::metadata(p).unwrap().len() <= 1000);
    }
    let link = fs::read_link(tmp.path().join("m/node-a/node.json")).unwrap();
    assert_eq!(Some(link.as_os_str()), paths.last().unwrap().file_name());
    let (human, _) = read_all(&tmp.path().join("h/node-a"), "log");
    assert_eq!(human.len(), 500);
    assert!(human[7].ends_with("] line 7"), "{}", human[7]);
}

#[test]
fn reopening_in_the_same_second_never_truncates() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("m")).unwrap();
    fs::create_dir_all(tmp.path().join("h")).unwrap();
    let s = settings(tmp.path(), None);
    for round in 0..3 {
        let mut log = NodeLog::open(&s, "n", 1_784_714_812, false).unwrap().0;
        log.append(&[obj(round)], 1_784_714_812).unwrap();
    }
    let (lines, paths) = read_all(&tmp.path().join("m/n"), "json");
    assert_eq!(lines.len(), 3);
    assert_eq!(paths.len(), 3);
}

#[test]
fn refuses_a_symlinked_node_directory() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("m")).unwrap();
    fs::create_dir_all(tmp.path().join("h")).unwrap();
    std::os::unix::fs::symlink("/tmp", tmp.path().join("m/evil")).unwrap();
    let s = settings(tmp.path(), None);
    assert!(matches!(
        NodeLog::open(&s, "evil", 0, false).map(|_| ()),
        Err(WriteError::NotADirectory(_))
    ));
}

fn arbitrary_object() -> impl proptest::strategy::Strategy<Value = TraceObject> {
    use proptest::prelude::*;
    (
        any::<String>(),
        prop_oneof![
            any::<String>(),
            Just(crate::logs::format::tests::forged_machine_text())
        ],
        proptest::option::of(any::<String>()),
        any::<String>(),
        any::<String>(),
        any::<bool>(),
    )
        .prop_map(
            |(namespace, machine, human, hostname, thread_id, line)| TraceObject {
                namespace: namespace.into(),
                machine: machine.into(),
                human: human.map(Into::into),
                hostname: hostname.into(),
                thread_id: thread_id.into(),
                form: if line {
                    crate::model::MachineForm::Line
                } else {
                    Default::default()
                },
                ..obj(0)
            },
        )
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Whatever a node sends, each object is one line in every target, and after a crash
    /// that tears any target at any byte, recovery counts exactly the objects whose line
    /// is whole in every target: never more than were written.
    #[test]
    fn recovery_never_counts_more_objects_than_were_written(
        objects in proptest::collection::vec(arbitrary_object(), 1..12),
        cut_machine in proptest::prelude::any::<proptest::sample::Index>(),
        cut_human in proptest::prelude::any::<proptest::sample::Index>(),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("m")).unwrap();
        fs::create_dir_all(tmp.path().join("h")).unwrap();
        let s = settings(tmp.path(), None);
        let refs: Vec<&TraceObject> = objects.iter().collect();
        let (mut log, _) = NodeLog::open(&s, "n", 1_784_714_812, false).unwrap();
        log.append_run(1, &refs, 1_784_714_812).unwrap();
        let paths = log.current_paths();
        drop(log);
        let mut whole = Vec::new();
        for (path, cut) in paths.iter().zip([cut_machine, cut_human]) {
            let text = fs::read(path).unwrap();
            proptest::prop_assert_eq!(text.iter().filter(|b| **b == b'\n').count(), objects.len());
            let at = cut.index(text.len() + 1);
            fs::write(path, &text[..at]).unwrap();
            whole.push(text[..at].iter().filter(|b| **b == b'\n').count() as u64);
        }
        let dirs = [
            TargetDir { dir: tmp.path().join("m/n"), ext: "json" },
            TargetDir { dir: tmp.path().join("h/n"), ext: "log" },
        ];
        let r = recovery::recover(&dirs);
        let expect = *whole.iter().min().unwrap();
        proptest::prop_assert_eq!(r.persisted, Some(expect));
        proptest::prop_assert!(expect <= objects.len() as u64);
    }
}

/// The writer defers checkpoints (`checkpoint_owed`; `ingest::writer::CHECKPOINT_EVERY`): a
/// crash before the next one loses nothing, since recovery counts the whole lines past the
/// last checkpoint — across rotations, and after a gap, whose run is checkpointed before its
/// first line so the lines past a checkpoint are numbered contiguously.
#[test]
fn a_crash_between_deferred_checkpoints_resumes_after_the_last_line_written() {
    const T: i64 = 1_784_714_812;
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("m")).unwrap();
    fs::create_dir_all(tmp.path().join("h")).unwrap();
    let s = settings(tmp.path(), Some(1000));
    let dirs = [
        TargetDir {
            dir: tmp.path().join("m/n"),
            ext: "json",
        },
        TargetDir {
            dir: tmp.path().join("h/n"),
            ext: "log",
        },
    ];
    let objects: Vec<_> = (1..=300).map(obj).collect();
    let refs: Vec<&TraceObject> = objects.iter().collect();
    let (mut log, _) = NodeLog::open(&s, "n", T, false).unwrap();
    assert!(!log.checkpoint_owed());
    let a = log.append_run(1, &refs[..100], T).unwrap();
    assert!(a.rotations > 2, "{a:?}");
    assert!(log.checkpoint_owed());
    // 101..=150 never arrive: the run from 151 is checkpointed (at 150) before its first line.
    log.append_run(151, &refs[150..], T).unwrap();
    assert!(log.checkpoint_owed());
    drop(log); // kill -9: no checkpoint since the gap's
    assert_eq!(recovery::checkpoint(&dirs[0].dir).unwrap().seq, 150);
    let r = recovery::recover(&dirs);
    assert_eq!((r.persisted, r.cut_bytes), (Some(300), 0), "{r:?}");
    // And the next session goes on from there, exactly once.
    let (mut log, r) = NodeLog::open(&s, "n", T, false).unwrap();
    assert_eq!((r.persisted, log.seq()), (Some(300), 300));
    log.append_run(301, &[&obj(301)], T).unwrap();
    drop(log);
    let (lines, _) = read_all(&dirs[0].dir, "json");
    let got: Vec<u64> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["data"]["i"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let want: Vec<u64> = (1..=100).chain(151..=301).collect();
    assert_eq!(got, want);
}

#[test]
fn large_limits_rotate_at_each_nodes_spread_limit_never_past_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("m")).unwrap();
    fs::create_dir_all(tmp.path().join("h")).unwrap();
    let limit = 2 * rotation::SPREAD_FROM_BYTES;
    let s = settings(tmp.path(), Some(limit));
    let batch: Vec<_> = (0..30_000).map(obj).collect();
    let mut first_sizes = Vec::new();
    for node in ["relay-1", "relay-2"] {
        let mut log = NodeLog::open(&s, node, 1_784_714_812, false).unwrap().0;
        for part in batch.chunks(1000) {
            log.append(part, 1_784_714_812).unwrap();
        }
        let dir = tmp.path().join("m").join(node);
        let (lines, paths) = read_all(&dir, "json");
        assert_eq!(lines.len(), batch.len(), "{node}: every line once");
        assert!(paths.len() >= 2, "{node}: rotated");
        let spread = s
            .policy
            .unwrap()
            .spread(rotation::spread_seed(node))
            .limit_bytes;
        assert!(
            spread <= limit && spread >= limit - limit / 16,
            "{node}: {spread}"
        );
        // The first file ends at the last whole line within the node's spread limit.
        let first = fs::read_to_string(&paths[0]).unwrap();
        let next_line = fs::read_to_string(&paths[1]).unwrap();
        let next_len = next_line.split_inclusive('\n').next().unwrap().len() as u64;
        let size = first.len() as u64;
        assert!(
            size <= spread && size + next_len > spread,
            "{node}: {size} of {spread}"
        );
        first_sizes.push(size);
    }
    assert_ne!(
        first_sizes[0], first_sizes[1],
        "two nodes, two rotation points"
    );
}

/// This thread's spare render buffers, as (pointer, capacity) where they hold an allocation.
fn spares() -> Vec<(usize, usize)> {
    SPARE.with(|s| {
        s.borrow()
            .iter()
            .filter(|r| r.bytes.capacity() > 0)
            .map(|r| (r.bytes.as_ptr() as usize, r.bytes.capacity()))
            .collect()
    })
}

#[test]
fn nodes_render_into_the_threads_buffers_and_keep_them_only_while_lines_are_pending() {
    // A thread of its own, so its spares start empty whatever other tests ran here.
    std::thread::spawn(|| {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("m")).unwrap();
        fs::create_dir_all(tmp.path().join("h")).unwrap();
        let s = settings(tmp.path(), None);
        let now = 1_784_714_812;
        let mut a = NodeLog::open(&s, "node-a", now, false).unwrap().0;
        let mut b = NodeLog::open(&s, "node-b", now, false).unwrap().0;
        let batch: Vec<_> = (0..300).map(obj).collect();

        a.append(&batch[..100], now).unwrap();
        assert_eq!(
            (a.machine.bytes.capacity(), a.human.bytes.capacity()),
            (0, 0)
        );
        let lent = spares();
        assert_eq!(
            lent.len(),
            2,
            "a machine and a human buffer come back to the thread"
        );
        b.append(&batch[..100], now).unwrap();
        assert_eq!(
            (b.machine.bytes.capacity(), b.human.bytes.capacity()),
            (0, 0)
        );
        assert_eq!(
            spares(),
            lent,
            "the next node renders into the same two buffers"
        );

        // A failed write of the human file: the node keeps its rendered lines, and with
        // them the buffers, until a resume writes the rest.
        let human = a.files[1].path();
        a.files[1].file = Some(fs::File::open(&human).unwrap()); // read-only: EBADF
        assert!(a.append(&batch[100..200], now).is_err());
        assert!(a.has_pending());
        assert!(a.machine.bytes.capacity() > 0 && a.human.bytes.capacity() > 0);
        assert!(spares().is_empty(), "the pending lines hold both buffers");
        b.append(&batch[100..300], now).unwrap(); // b renders meanwhile, into new buffers
        a.files[1].file = None; // reopened by path on resume
        a.resume(now).unwrap();
        assert!(!a.has_pending());
        assert_eq!(
            (a.machine.bytes.capacity(), a.human.bytes.capacity()),
            (0, 0)
        );
        assert_eq!(
            spares().len(),
            2,
            "one spare per format is kept (the larger), the other freed"
        );
        a.append(&batch[200..300], now).unwrap();

        for node in ["node-a", "node-b"] {
            let (machine, _) = read_all(&tmp.path().join("m").join(node), "json");
            let (human, _) = read_all(&tmp.path().join("h").join(node), "log");
            assert_eq!((machine.len(), human.len()), (300, 300), "{node}");
            for (i, (m, h)) in machine.iter().zip(&human).enumerate() {
                let v: serde_json::Value = serde_json::from_str(m).unwrap();
                assert_eq!(v["data"]["i"], i, "{node}");
                assert!(h.ends_with(&format!("] line {i}")), "{node}: {h}");
            }
        }
    })
    .join()
    .unwrap();
}
