//! Crash safety: nodes stream numbered objects while tracerd is killed with SIGKILL and
//! restarted; every acknowledged object is on disk exactly once, in order, and nodes that
//! resend from `HelloAccept.persisted_seq + 1` leave neither gaps nor duplicates.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tracerd::model::TraceBatch;
use tracerd::native::{NodeMessage, TracerMessage};

use crate::support::*;

const NODES: usize = 20;
const OBJECTS: u64 = 1500;
const KILLS: usize = 4;

/// Streams `OBJECTS` objects, reconnecting after every crash; returns (acked, handshakes).
async fn node(i: usize, port: u16, sock: std::path::PathBuf) -> (u64, u64) {
    let name = format!("crash-{i:02}");
    let mut highest_acked = 0u64;
    let mut handshakes = 0u64;
    for _attempt in 0..2000 {
        if highest_acked == OBJECTS {
            break;
        }
        // Connect (the daemon may be down), bounded by the attempt count.
        let framed = if i % 2 == 0 {
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(s) => Either::Tcp(tokio_util::codec::Framed::new(
                    s,
                    tracerd::native::ForwarderCodec::new(1 << 20),
                )),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        } else {
            match tokio::net::UnixStream::connect(&sock).await {
                Ok(s) => Either::Unix(tokio_util::codec::Framed::new(
                    s,
                    tracerd::native::ForwarderCodec::new(1 << 20),
                )),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        };
        let result = match framed {
            Either::Tcp(f) => session(f, &name, &mut highest_acked).await,
            Either::Unix(f) => session(f, &name, &mut highest_acked).await,
        };
        if result.is_some() {
            handshakes += 1;
        }
    }
    (highest_acked, handshakes)
}

enum Either {
    Tcp(tokio_util::codec::Framed<tokio::net::TcpStream, tracerd::native::ForwarderCodec>),
    Unix(tokio_util::codec::Framed<tokio::net::UnixStream, tracerd::native::ForwarderCodec>),
}

/// One connection: handshake, then send from persisted+1 while reading acks, until the
/// connection breaks or everything is acknowledged. `None` if the handshake failed.
async fn session<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut f: tokio_util::codec::Framed<S, tracerd::native::ForwarderCodec>,
    name: &str,
    highest_acked: &mut u64,
) -> Option<()> {
    f.send(hello(name)).await.ok()?;
    let persisted = match tokio::time::timeout(Duration::from_secs(10), f.next()).await {
        Ok(Some(Ok(TracerMessage::Accept {
            node_name,
            persisted_seq,
            ..
        }))) => {
            assert_eq!(
                node_name, name,
                "a restarted daemon must give the name back"
            );
            persisted_seq
        }
        _ => return None,
    };
    assert!(
        persisted >= *highest_acked,
        "{name}: acknowledged {highest_acked} but tracerd recovered only {persisted}"
    );
    // As the forwarder library does: what the daemon recovered is acknowledged (a kill -9
    // between the write of the last batch and its Ack leaves nothing to resend or await).
    *highest_acked = (*highest_acked).max(persisted);
    if *highest_acked == OBJECTS {
        return Some(());
    }
    let mut next = persisted + 1;
    loop {
        tokio::select! {
            msg = f.next() => match msg {
                Some(Ok(TracerMessage::Ack(a))) => {
                    *highest_acked = (*highest_acked).max(a);
                    if *highest_acked == OBJECTS { return Some(()); }
                }
                Some(Ok(TracerMessage::Ping(n))) => { if f.send(NodeMessage::Pong(n)).await.is_err() { return Some(()); } }
                Some(Ok(_)) => {}
                _ => return Some(()),
            },
            _ = tokio::time::sleep(Duration::from_millis(40)), if next <= OBJECTS => {
                let n = 25.min(OBJECTS + 1 - next);
                let objects = (next..next + n).map(|s| object(name, s, 40)).collect();
                if f.send(NodeMessage::Traces(TraceBatch { first_seq: next, objects })).await.is_err() {
                    return Some(());
                }
                next += n;
            }
        }
    }
}

/// Every complete line's sequence number across a node's files (torn tails would panic in
/// `read_node_lines`, so this also checks recovery left whole lines only).
fn human_lines(dir: &std::path::Path) -> u64 {
    let mut keys = tracerd::logs::dir::list_keys(dir, "log").unwrap();
    keys.sort();
    keys.iter()
        .map(|k| {
            let text = std::fs::read_to_string(dir.join(k.file_name("log"))).unwrap();
            assert!(text.is_empty() || text.ends_with('\n'));
            text.lines().count() as u64
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_restarts_lose_and_duplicate_nothing() {
    let mut d = Daemon::start_with(
        |dir, _| {
            format!(
                "logging:\n  - {{ logRoot: {m}, logMode: FileMode, logFormat: ForMachine }}\n  - {{ logRoot: {h}, logMode: FileMode, logFormat: ForHuman }}\nrotation: {{ rpLogLimitBytes: 65536, rpKeepFilesNum: 10000, rpMaxAgeHours: 24 }}\n",
                m = dir.join("logs").display(),
                h = dir.join("text").display(),
            )
        },
        "",
    );
    let tasks: Vec<_> = (0..NODES)
        .map(|i| tokio::spawn(node(i, d.tcp_port, d.socket())))
        .collect();
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(700)).await;
        d.signal("KILL");
        d.wait(Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(100)).await;
        d = tokio::task::spawn_blocking(move || {
            d.spawn();
            d
        })
        .await
        .unwrap();
    }
    let mut total = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        let (acked, handshakes) = tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("node finished")
            .unwrap();
        assert_eq!(
            acked, OBJECTS,
            "crash-{i:02} did not get everything acknowledged"
        );
        assert!(
            handshakes > KILLS as u64 / 2,
            "crash-{i:02} reconnected only {handshakes} times"
        );
        total += acked;
    }
    d.signal("TERM");
    let status = tokio::task::spawn_blocking(move || {
        let s = d.wait(Duration::from_secs(20));
        (s, d)
    });
    let (status, d) = status.await.unwrap();
    assert_eq!(status.code(), Some(0));
    for i in 0..NODES {
        let name = format!("crash-{i:02}");
        let got = seqs(&d.logs().join(&name));
        assert_eq!(
            got,
            (1..=OBJECTS).collect::<Vec<_>>(),
            "{name}: lost, duplicated or reordered objects"
        );
        assert_eq!(
            human_lines(&d.dir.path().join("text").join(&name)),
            OBJECTS,
            "{name}: human target"
        );
    }
    assert_eq!(total, NODES as u64 * OBJECTS);
    let log = d.stderr();
    eprintln!(
        "recoveries that cut a tail: {}",
        log.matches("unacknowledged byte").count()
    );
}

/// The checkpoint `.tracerd-state` of `dir`: its sequence number and current file.
fn checkpoint_seq(dir: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join(".tracerd-state")).ok()?;
    let v: serde_json::Value = serde_json::from_str(text.trim_end()).ok()?;
    v["seq"].as_u64()
}

/// With `fsync: never` tracerd defers the checkpoint behind the files (at most 100 ms): a
/// kill -9 right after the `Ack`s, with the checkpoint behind and files rotated since, still
/// resumes exactly after the last acknowledged object (the node resends nothing twice and
/// skips nothing); and a node that stays connected and quiet gets its checkpoint caught up
/// long before the idle close (2 s) would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_deferred_checkpoints_resumes_after_the_last_ack() {
    let mut d = Daemon::start(
        "rotation: { rpLogLimitBytes: 4096, rpKeepFilesNum: 10000, rpMaxAgeHours: 24 }\n",
    );
    let dir = d.logs().join("deferred");
    let mut n = FakeNode::handshake(connect_tcp(d.tcp_port).await, "deferred").await;
    // Caught up while connected: small batches, then quiet.
    for b in 0..20 {
        n.send_batch(1 + b * 10, 10, 64).await;
    }
    n.wait_ack(200).await;
    let quiet = std::time::Instant::now();
    while checkpoint_seq(&dir) != Some(200) {
        assert!(
            quiet.elapsed() < Duration::from_secs(1),
            "checkpoint still at {:?} 1 s after the last Ack",
            checkpoint_seq(&dir)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Killed right after the Acks: one batch at a time, each acknowledged.
    let mut kills = 0;
    let mut next = 201;
    while kills < 3 {
        for _ in 0..30 {
            n.send_batch(next, 5, 64).await;
            next += 5;
            n.wait_ack(next - 1).await;
        }
        let acked = n.acked;
        let behind = checkpoint_seq(&dir).unwrap_or(0) < acked;
        d = d.crash_and_restart().await;
        n = FakeNode::handshake(connect_tcp(d.tcp_port).await, "deferred").await;
        assert_eq!(
            n.acked, acked,
            "resumed after {} with {acked} acknowledged (checkpoint behind: {behind})",
            n.acked
        );
        kills += 1;
    }
    drop(n);
    d.signal("TERM");
    let d = tokio::task::spawn_blocking(move || {
        assert_eq!(d.wait(Duration::from_secs(20)).code(), Some(0));
        d
    })
    .await
    .unwrap();
    assert_eq!(
        seqs(&d.logs().join("deferred")),
        (1..next).collect::<Vec<_>>()
    );
}
