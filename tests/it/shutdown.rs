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
                    let msg = tracerd::protocol::NodeMessage::Traces(tracerd::model::TraceBatch {
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
                    if let tracerd::protocol::TracerMessage::Ack(a) = m {
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
