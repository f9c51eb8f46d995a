//! Idle nodes (issue 21): a connected node that sends nothing holds one descriptor in tracerd,
//! its socket; its log file exists (and `node.json` names it) but is closed, reopened by the
//! next write and closed again after `ingest::writer::IDLE_CLOSE` without one. Two nodes
//! stream meanwhile and lose nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;

/// tracerd's open descriptors: (all, those on a path under `root`).
fn fds(pid: u32, root: &Path) -> (usize, usize) {
    let mut all = 0;
    let mut under = 0;
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        all += 1;
        if std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with(root)) {
            under += 1;
        }
    }
    (all, under)
}

/// Waits (bounded) until tracerd holds at most `most` descriptors under `root`.
fn wait_fds_under(pid: u32, root: &Path, most: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, under) = fds(pid, root);
        if under <= most || Instant::now() > deadline {
            return under;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_nodes_hold_one_descriptor_each_and_writes_reopen_their_files() {
    const IDLE: usize = 300;
    const BATCHES: u64 = 60;
    let d = Daemon::start("");
    let pid = d.child.as_ref().unwrap().id();
    let root = d.logs().canonicalize().unwrap();
    let (before, _) = fds(pid, &root);

    // Two nodes stream 50-object batches, one every 50 ms, for the whole test.
    let port = d.tcp_port;
    let streams: Vec<_> = (0..2)
        .map(|i| {
            tokio::spawn(async move {
                let mut n =
                    FakeNode::handshake(connect_tcp(port).await, &format!("busy-{i}")).await;
                for b in 0..BATCHES {
                    n.send_batch(1 + b * 50, 50, 64).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                n.wait_ack(BATCHES * 50).await;
            })
        })
        .collect();

    let mut idle = Vec::new();
    for i in 0..IDLE {
        idle.push(FakeNode::handshake(connect_tcp(port).await, &format!("idle-{i}")).await);
    }
    // Every idle node's file exists and `node.json` names it, as at any connection.
    for i in 0..IDLE {
        let dir = root.join(format!("idle-{i}"));
        let link = std::fs::read_link(dir.join("node.json")).unwrap();
        assert!(dir.join(link).is_file(), "idle-{i}");
    }
    // The streaming nodes may hold their two files; no idle node holds one.
    let (all, under) = fds(pid, &root);
    assert!(
        under <= 2,
        "{under} descriptors under the log root with {IDLE} idle nodes"
    );
    assert!(
        all <= before + IDLE + 2 + 16,
        "{all} descriptors with {IDLE} idle nodes and 2 streaming ({before} before)"
    );

    // An idle node that writes reopens its file, and closes it again once idle.
    let n = &mut idle[7];
    n.send_batch(1, 10, 32).await;
    n.wait_ack(10).await;
    let own = root.join("idle-7");
    assert_eq!(
        wait_fds_under(pid, &own, 0),
        0,
        "idle-7's file still open after the idle period"
    );
    n.send_batch(11, 10, 32).await;
    n.wait_ack(20).await;
    for s in streams {
        s.await.unwrap();
    }
    // The two streams have stopped and idle-7 wrote last: after the idle period nothing
    // under the log root is open.
    let left = wait_fds_under(pid, &root, 0);
    assert_eq!(
        left, 0,
        "descriptors still open under the log root after the idle period"
    );

    let dir = root.join("idle-7");
    assert_eq!(seqs(&dir), (1..=20).collect::<Vec<_>>());
    assert_eq!(
        tracerd::logs::dir::list_keys(&dir, "json").unwrap().len(),
        1,
        "the reopened file is the file of the connection"
    );
    for i in 0..2 {
        assert_eq!(
            seqs(&root.join(format!("busy-{i}"))),
            (1..=BATCHES * 50).collect::<Vec<_>>(),
            "busy-{i}"
        );
    }
    drop(idle);
}
