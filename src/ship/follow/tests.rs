use super::*;
use crate::logs::rotation::FileKey;

fn key(stamp: i64) -> FileKey {
    FileKey {
        stamp,
        counter: 0,
        legacy: false,
    }
}

fn write(dir: &Path, stamp: i64, text: &str) {
    fs::write(dir.join(key(stamp).file_name(EXT)), text).unwrap();
}

fn append(dir: &Path, stamp: i64, text: &str) {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(dir.join(key(stamp).file_name(EXT)))
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn follower(root: &Path, state: &Path) -> Follower {
    let registry = prometheus::Registry::new();
    Follower::new(
        "test",
        root.to_path_buf(),
        StateDir::open(state, "test").unwrap(),
        SinkMetrics::register(&registry),
    )
}

const ALL: Limits = Limits {
    max_lines: 1000,
    max_bytes: 1 << 20,
};

fn texts(batch: &Batch) -> Vec<(String, String)> {
    batch
        .chunks
        .iter()
        .flat_map(|c| {
            c.lines
                .iter()
                .map(|l| (c.node.clone(), c.text(l).into_owned()))
        })
        .collect()
}

fn pass(f: &mut Follower, limits: Limits) -> Vec<(String, String)> {
    f.scan(Instant::now());
    let b = f.read(limits);
    let t = texts(&b);
    f.confirm(&b).unwrap();
    t
}

#[test]
fn follows_across_rotation_whole_lines_only_and_resumes_from_the_stored_cursor() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, state) = (tmp.path().join("logs"), tmp.path().join("state"));
    let a = root.join("a");
    fs::create_dir_all(&a).unwrap();
    write(&a, 100, "1\n2\n3");
    let mut f = follower(&root, &state);
    let got = pass(&mut f, ALL);
    assert_eq!(
        got,
        vec![("a".into(), "1".into()), ("a".into(), "2".into())]
    );
    // The torn line completes; the file rotates.
    append(&a, 100, "\n4\n");
    write(&a, 101, "5\n");
    assert_eq!(
        pass(&mut f, ALL)
            .into_iter()
            .map(|x| x.1)
            .collect::<Vec<_>>(),
        ["3", "4", "5"]
    );
    assert!(pass(&mut f, ALL).is_empty());
    // A new follower (after a crash) starts where the last one confirmed.
    append(&a, 101, "6\n");
    let mut g = follower(&root, &state);
    assert_eq!(
        pass(&mut g, ALL)
            .into_iter()
            .map(|x| x.1)
            .collect::<Vec<_>>(),
        ["6"]
    );
    assert!(g.caught_up());
}

#[test]
fn limits_split_a_pass_and_every_node_gets_its_turn() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, state) = (tmp.path().join("logs"), tmp.path().join("state"));
    for n in ["a", "b"] {
        fs::create_dir_all(root.join(n)).unwrap();
        write(&root.join(n), 100, "x\ny\nz\n");
    }
    let mut f = follower(&root, &state);
    let two = Limits {
        max_lines: 2,
        max_bytes: 1 << 20,
    };
    let mut all = Vec::new();
    for _ in 0..6 {
        all.extend(pass(&mut f, two));
    }
    all.sort();
    assert_eq!(all.len(), 6);
    all.dedup();
    assert_eq!(all.len(), 6, "no line twice");
    // A line longer than the byte budget still comes whole.
    write(&root.join("a"), 101, &format!("{}\n", "l".repeat(600_000)));
    let tiny = Limits {
        max_lines: 10,
        max_bytes: 10,
    };
    let mut got = Vec::new();
    for _ in 0..4 {
        got.extend(pass(&mut f, tiny));
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.len(), 600_000);
}

#[test]
fn files_deleted_before_they_were_sent_are_counted_and_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, state) = (tmp.path().join("logs"), tmp.path().join("state"));
    let a = root.join("a");
    fs::create_dir_all(&a).unwrap();
    write(&a, 100, "1\n2\n");
    write(&a, 101, "3\n");
    write(&a, 102, "4\n");
    let registry = prometheus::Registry::new();
    let metrics = SinkMetrics::register(&registry);
    let mut f = Follower::new(
        "test",
        root.clone(),
        StateDir::open(&state, "test").unwrap(),
        metrics.clone(),
    );
    let one = Limits {
        max_lines: 1,
        max_bytes: 1 << 20,
    };
    assert_eq!(pass(&mut f, one)[0].1, "1");
    fs::remove_file(a.join(key(100).file_name(EXT))).unwrap();
    fs::remove_file(a.join(key(101).file_name(EXT))).unwrap();
    assert_eq!(pass(&mut f, ALL), vec![("a".to_string(), "4".to_string())]);
    assert_eq!(metrics.lost_files.with_label_values(&["test"]).get(), 2);
    // "2\n" unread in the first file, "3\n" in the second.
    assert_eq!(metrics.lost_bytes.with_label_values(&["test"]).get(), 4);
}

#[test]
fn symlinks_are_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, state) = (tmp.path().join("logs"), tmp.path().join("state"));
    let outside = tmp.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::create_dir_all(&root).unwrap();
    write(&outside, 100, "secret\n");
    std::os::unix::fs::symlink(&outside, root.join("evil")).unwrap();
    fs::create_dir_all(root.join("a")).unwrap();
    std::os::unix::fs::symlink(
        outside.join(key(100).file_name(EXT)),
        root.join("a").join(key(100).file_name(EXT)),
    )
    .unwrap();
    let mut f = follower(&root, &state);
    assert!(pass(&mut f, ALL).is_empty());
}
