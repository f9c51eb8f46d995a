//! SIGTERM/SIGINT: stop accepting, persist everything read, exit 0, lose nothing acknowledged.

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_streaming_exits_0_and_loses_no_acknowledged_line() {
    let mut d = Daemon::start("");
    let port = d.tcp_port;
    let stop = tokio_util::sync::CancellationToken::new();
    let nodes: Vec<_> = (0..5)
        .map(|i| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut n = FakeNode::handshake(connect_tcp(port).await, &format!("s-{i}")).await;
                let mut seq = 1;
                // Stream until the daemon goes away (bounded: at most 400 batches).
                for _ in 0..400 {
                    if stop.is_cancelled() {
                        break;
                    }
                    let objects = (seq..seq + 20).map(|s| object(&n.name, s, 50)).collect();
                    let msg = tracerd::native::NodeMessage::Traces(tracerd::model::TraceBatch {
                        first_seq: seq,
                        objects,
                    });
                    if futures_util::SinkExt::send(&mut n.framed, msg)
                        .await
                        .is_err()
                    {
                        break;
                    }
                    seq += 20;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                // Read acks until the connection closes: the last Ack comes after the drain.
                while let Ok(Some(Ok(m))) = tokio::time::timeout(
                    Duration::from_secs(20),
                    futures_util::StreamExt::next(&mut n.framed),
                )
                .await
                {
                    if let tracerd::native::TracerMessage::Ack(a) = m {
                        n.acked = n.acked.max(a);
                    }
                }
                (n.name, n.acked, seq - 1)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.signal("TERM");
    let status = tokio::task::spawn_blocking(move || {
        let s = d.wait(Duration::from_secs(20));
        (s, d)
    });
    let (status, d) = status.await.unwrap();
    stop.cancel();
    assert_eq!(status.code(), Some(0), "{}", d.stderr());
    for node in nodes {
        let (name, acked, sent) = node.await.unwrap();
        let got = seqs(&d.logs().join(&name));
        assert!(acked > 0, "{name}: nothing acknowledged");
        // Exactly a prefix of what was sent, at least everything acknowledged, no duplicates.
        assert!(
            got.len() as u64 >= acked,
            "{name}: acked {acked} but {} on disk",
            got.len()
        );
        assert_eq!(got, (1..=got.len() as u64).collect::<Vec<_>>(), "{name}");
        assert!(got.len() as u64 <= sent);
    }
    assert!(
        !d.socket().exists(),
        "the Unix socket file is removed on shutdown"
    );
    assert!(d.stderr().contains("shutdown complete"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_too_and_a_stale_socket_is_replaced_on_restart() {
    let mut d = Daemon::start("");
    d.signal("KILL");
    d.wait(Duration::from_secs(10));
    assert!(d.socket().exists(), "SIGKILL leaves the socket file behind");
    d.spawn();
    let mut n = FakeNode::handshake(connect_unix(&d.socket()).await, "after-crash").await;
    n.send_batch(1, 1, 0).await;
    n.wait_ack(1).await;
    assert!(d.stderr().contains("removing stale socket file"));
    d.signal("INT");
    let status = d.wait(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sigterm_while_starting_still_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("c.yaml"),
        format!("networkMagic: 764824073\nnetwork: null\nlogging: [{{ logRoot: logs, logMode: FileMode, logFormat: ForMachine }}]\nhasPrometheus: null\ntracerd:\n  native:\n    acceptAt: [\"127.0.0.1:{port}\"]\n"),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tracerd"))
        .args(["-c", "c.yaml"])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // "tracerd starting" is logged once the signal handlers are installed: stop right then.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() > 0 {
        if line.contains("tracerd starting") {
            break;
        }
        line.clear();
    }
    assert!(line.contains("tracerd starting"), "no start line");
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "tracerd did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        status.code(),
        Some(0),
        "a stop during startup must be a clean exit"
    );
}
