//! Rotation under continuous writes: every line exactly once, in order, across files that
//! respect the size limit and never collide.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_loses_and_duplicates_nothing() {
    let limit = 16 * 1024;
    let d = Daemon::start_with(
        |dir, _| {
            format!(
                "logging:\n  - {{ logRoot: {m}, logMode: FileMode, logFormat: ForMachine }}\n  - {{ logRoot: {h}, logMode: FileMode, logFormat: ForHuman }}\nrotation: {{ rpLogLimitBytes: {limit}, rpKeepFilesNum: 1000, rpMaxAgeHours: 24, rpFrequencySecs: 1 }}\n",
                m = dir.join("logs").display(),
                h = dir.join("text").display(),
            )
        },
        "",
    );
    let port = d.tcp_port;
    let nodes: Vec<_> = (0..3)
        .map(|i| {
            tokio::spawn(async move {
                let mut n = FakeNode::handshake(connect_tcp(port).await, &format!("rot-{i}")).await;
                // Batches of varied size, so rotations fall in the middle of batches.
                let mut seq = 1;
                for b in 0..120u64 {
                    let count = 1 + (b * 7) % 40;
                    n.send_batch(seq, count, (b as usize * 13) % 300).await;
                    seq += count;
                }
                n.wait_ack(seq - 1).await;
                seq - 1
            })
        })
        .collect();
    for (i, t) in nodes.into_iter().enumerate() {
        let last = t.await.unwrap();
        let dir = d.logs().join(format!("rot-{i}"));
        assert_eq!(seqs(&dir), (1..=last).collect::<Vec<_>>(), "rot-{i}");
        let mut keys = tracerd::logs::dir::list_keys(&dir, "json").unwrap();
        keys.sort();
        assert!(
            keys.len() > 10,
            "expected many rotations, got {} files",
            keys.len()
        );
        for k in &keys {
            let len = std::fs::metadata(dir.join(k.file_name("json")))
                .unwrap()
                .len();
            assert!(len <= limit, "{k:?} is {len} bytes");
        }
        let link = std::fs::read_link(dir.join("node.json")).unwrap();
        assert_eq!(
            link.to_str().unwrap(),
            keys.last().unwrap().file_name("json")
        );
        // The human target got every line too, one per object.
        let text_dir = d.dir.path().join("text").join(format!("rot-{i}"));
        let mut text_keys = tracerd::logs::dir::list_keys(&text_dir, "log").unwrap();
        text_keys.sort();
        let mut lines = 0;
        for k in text_keys {
            let text = std::fs::read_to_string(text_dir.join(k.file_name("log"))).unwrap();
            assert!(text.ends_with('\n'));
            for (j, line) in text.lines().enumerate() {
                assert!(
                    line.starts_with('[') && line.contains("] [Info] [host] [Test.Stream] node "),
                    "{k:?} line {j}: {line}"
                );
            }
            lines += text.lines().count() as u64;
        }
        assert_eq!(lines, last);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_old_files_of_disconnected_nodes() {
    let d = Daemon::start_with(
        |dir, _| {
            let logs = dir.join("logs");
            // A node that is gone: five old files, far older than the max age.
            let old = logs.join("gone");
            std::fs::create_dir_all(&old).unwrap();
            for i in 0..5 {
                let key = tracerd::logs::rotation::FileKey {
                    stamp: 1_600_000_000 + i,
                    counter: 0,
                    legacy: false,
                };
                std::fs::write(old.join(key.file_name("json")), "{}\n").unwrap();
            }
            format!(
                "logging:\n  - {{ logRoot: {}, logMode: FileMode, logFormat: ForMachine }}\nrotation: {{ rpLogLimitBytes: 100000, rpKeepFilesNum: 1, rpMaxAgeMinutes: 60, rpFrequencySecs: 1 }}\n",
                logs.display()
            )
        },
        "",
    );
    let dir = d.logs().join("gone");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let left = tracerd::logs::dir::list_keys(&dir, "json").unwrap().len();
        if left == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "retention left {left} files"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut left = tracerd::logs::dir::list_keys(&dir, "json").unwrap();
    left.sort();
    assert_eq!(
        left.iter().map(|k| k.stamp).collect::<Vec<_>>(),
        vec![1_600_000_003, 1_600_000_004]
    );
}

/// Many files in the same second (a small size limit and reconnects) are listed by `ls`
/// order (byte order of names) in creation order, so `cat node-*.json` reads the node's
/// objects in order; files named by earlier versions (`-<n>`) are still recognised by
/// retention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_second_files_sort_in_creation_order_and_old_names_are_still_pruned() {
    let d = Daemon::start_with(
        |dir, _| {
            let logs = dir.join("logs");
            let old = logs.join("legacy");
            std::fs::create_dir_all(&old).unwrap();
            for name in [
                "node-2020-09-13T12-26-40.json",
                "node-2020-09-13T12-26-40-1.json",
                "node-2020-09-13T12-26-40-10.json",
                "node-2020-09-13T12-26-41.json",
            ] {
                std::fs::write(old.join(name), "{}\n").unwrap();
            }
            format!(
                "logging:\n  - {{ logRoot: {}, logMode: FileMode, logFormat: ForMachine }}\nrotation: {{ rpLogLimitBytes: 300, rpKeepFilesNum: 1, rpMaxAgeMinutes: 60, rpFrequencySecs: 1 }}\n",
                logs.display()
            )
        },
        "",
    );
    let mut next = 1;
    for _ in 0..4 {
        let mut n = FakeNode::handshake(connect_tcp(d.tcp_port).await, "fast").await;
        n.send_batch(next, 15, 20).await;
        next += 15;
        n.wait_ack(next - 1).await;
    }
    let dir = d.logs().join("fast");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("node-") && n.ends_with(".json"))
        .collect();
    names.sort();
    assert!(names.len() > 20, "{names:?}");
    let mut got = Vec::new();
    for name in &names {
        for line in std::fs::read_to_string(dir.join(name)).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            got.push(v["data"]["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(
        got,
        (1..next).collect::<Vec<_>>(),
        "`ls` order is not creation order: {names:?}"
    );
    // Retention recognises the legacy names: keeps the newest 1 besides the current one.
    let legacy = d.logs().join("legacy");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while tracerd::logs::dir::list_keys(&legacy, "json")
        .unwrap()
        .len()
        > 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "retention ignored legacy names"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut left: Vec<_> = std::fs::read_dir(&legacy)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "node-2020-09-13T12-26-40-10.json",
            "node-2020-09-13T12-26-41.json"
        ]
    );
}
