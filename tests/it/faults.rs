//! Faults and bounds: a full disk (a small tmpfs the test mounts), idle and slow peers, the
//! connection limit.

use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::support::*;

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(path: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A 256 KiB tmpfs at `root/logs` with 200 KiB of it taken by a filler file, so that a node's
/// logs fill the rest: the tmpfs (unmounted on drop), its path, the filler's path. `None`, with
/// a notice, where this process cannot mount (not root, or mounts forbidden).
fn nearly_full_disk(
    root: &std::path::Path,
) -> Option<(Tmpfs, std::path::PathBuf, std::path::PathBuf)> {
    let mnt = root.join("logs");
    let Some(fs) = Tmpfs::mount(&mnt, "256k") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root, or mounts forbidden)");
        return None;
    };
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![b'x'; 200 * 1024]).unwrap();
    Some((fs, mnt, filler))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_blocks_the_node_without_partial_lines_and_resumes() {
    let root = tempfile::tempdir().unwrap();
    let Some((_fs, mnt, filler)) = nearly_full_disk(root.path()) else {
        return;
    };
    let logs = mnt.clone();
    let mut d = Daemon::start_with(
        move |_, _| {
            format!(
                "logging:\n  - {{ logRoot: {}, logMode: FileMode, logFormat: ForMachine }}\n",
                logs.display()
            )
        },
        "",
    );
    let mut n = FakeNode::handshake(connect_tcp(d.tcp_port).await, "full").await;
    const N: u64 = 600; // about 150 KiB of lines: more than is left
    let sender = tokio::spawn(async move {
        for b in 0..(N / 20) {
            n.send_batch(1 + b * 20, 20, 150).await;
        }
        n
    });
    // Wait until the writer reports the full disk.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !d.stderr().contains("cannot write node logs") {
        assert!(
            Instant::now() < deadline,
            "no write error reported:\n{}",
            d.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // While blocked, every file on disk ends on a line boundary.
    let dir = mnt.join("full");
    let partial = seqs(&dir);
    // (It may be empty: a write that does not fit is cut back to the last whole line.)
    assert!((partial.len() as u64) < N, "{} lines", partial.len());
    // Free the space: writing resumes by itself.
    std::fs::remove_file(&filler).unwrap();
    let mut n = sender.await.unwrap();
    n.wait_ack(N).await;
    assert_eq!(seqs(&dir), (1..=N).collect::<Vec<_>>());
    let log = d.stderr();
    assert!(log.contains("node log writing resumed"), "{log}");
    assert_eq!(
        log.matches("cannot write node logs").count(),
        1,
        "the error is reported once per interval:\n{log}"
    );
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(20)).code(), Some(0));
}

/// `onWriteError: drop`: what a full disk refuses is dropped and counted, the node is
/// acknowledged past it (it is not held up), what was written stays whole lines in order,
/// and once there is room again the next objects land exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_with_drop_acknowledges_past_the_lost_objects_and_carries_on() {
    let root = tempfile::tempdir().unwrap();
    let Some((_fs, mnt, filler)) = nearly_full_disk(root.path()) else {
        return;
    };
    let logs = mnt.clone();
    let prom = free_port();
    let mut d = Daemon::start_with(
        move |_, _| {
            format!(
                "logging:\n  - {{ logRoot: {}, logMode: FileMode, logFormat: ForMachine }}\n\
                 hasPrometheus: {{epHost: 127.0.0.1, epPort: {prom}}}\n",
                logs.display()
            )
        },
        "  durability: { onWriteError: drop }\n",
    );
    let mut n = FakeNode::handshake(connect_tcp(d.tcp_port).await, "full").await;
    const N: u64 = 600; // about 150 KiB of lines: more than is left
    for b in 0..(N / 20) {
        n.send_batch(1 + b * 20, 20, 150).await;
    }
    // Every object is acknowledged, written or dropped, without freeing any space.
    n.wait_ack(N).await;
    let dir = mnt.join("full");
    let written = seqs(&dir);
    assert!((written.len() as u64) < N, "{} lines", written.len());
    assert!(
        written.windows(2).all(|w| w[0] < w[1]) && written.iter().all(|&s| s <= N),
        "{written:?}"
    );
    let (status, _, body) =
        tokio::task::spawn_blocking(move || crate::http::http_get(prom, "/metrics", &[]))
            .await
            .unwrap();
    assert_eq!(status, 200);
    let dropped: u64 = body
        .lines()
        .find_map(|l| {
            l.strip_prefix("tracerd_trace_objects_dropped_total{reason=\"write_error\"} ")
        })
        .unwrap_or_else(|| panic!("no write_error drops in /metrics"))
        .parse()
        .unwrap();
    assert!(
        dropped + written.len() as u64 >= N,
        "{dropped} dropped, {} written",
        written.len()
    );
    assert!(d.stderr().contains("onWriteError: drop"), "{}", d.stderr());
    // Room again: the next objects land, once, after what was written.
    std::fs::remove_file(&filler).unwrap();
    n.send_batch(N + 1, 20, 150).await;
    n.wait_ack(N + 20).await;
    let after = seqs(&dir);
    assert_eq!(&after[..written.len()], &written[..]);
    assert_eq!(
        &after[written.len()..],
        &(N + 1..=N + 20).collect::<Vec<_>>()[..]
    );
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(20)).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_peers_are_closed_within_their_timeouts() {
    let d = Daemon::start("  limits: { idleTimeoutSecs: 1.0, handshakeTimeoutSecs: 1.0 }\n");
    // No Hello at all.
    let mut quiet = tokio::net::TcpStream::connect(("127.0.0.1", d.tcp_port))
        .await
        .unwrap();
    // A slow sender: handshakes, then trickles one frame a byte at a time, forever.
    let f = connect_tcp(d.tcp_port).await;
    let n = FakeNode::handshake(f, "slow").await;
    let mut slow = n.framed.into_inner();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        let frame = tracerd::native::encode_node_frame(tracerd::native::NodeMessage::Ping(1));
        for _ in 0..100 {
            for b in frame.iter() {
                if slow.write_all(&[*b]).await.is_err() {
                    return started.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        panic!("slow sender was never disconnected");
    });
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut quiet, &mut buf),
    )
    .await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "handshake timeout must close the connection: {r:?}"
    );
    let slow_after = tokio::time::timeout(Duration::from_secs(20), trickle)
        .await
        .unwrap()
        .unwrap();
    assert!(
        slow_after < Duration::from_secs(8),
        "slow sender closed after {slow_after:?}"
    );
    let log = d.stderr();
    assert!(log.contains("reason=\"handshake_timeout\""), "{log}");
    assert!(log.contains("reason=\"idle_timeout\""), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_refuses_the_extra_connection_at_once() {
    let d = Daemon::start("  limits: { maxConnections: 2 }\n");
    let _a = FakeNode::handshake(connect_tcp(d.tcp_port).await, "a").await;
    let _b = FakeNode::handshake(connect_unix(&d.socket()).await, "b").await;
    let started = Instant::now();
    let mut extra = tokio::net::TcpStream::connect(("127.0.0.1", d.tcp_port))
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut extra, &mut buf),
    )
    .await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refusal took {:?}",
        started.elapsed()
    );
    assert!(d.stderr().contains("connection limit reached"));
    drop(_a);
    // A freed slot is usable again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut f = connect_tcp(d.tcp_port).await;
        futures_util::SinkExt::send(&mut f, hello("c"))
            .await
            .unwrap();
        match tokio::time::timeout(
            Duration::from_secs(5),
            futures_util::StreamExt::next(&mut f),
        )
        .await
        {
            Ok(Some(Ok(tracerd::native::TracerMessage::Accept { .. }))) => break,
            _ => assert!(Instant::now() < deadline, "slot never freed"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
