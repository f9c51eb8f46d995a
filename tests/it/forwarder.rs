//! The forwarder library against the real daemon (restart, drop accounting) and against a
//! scripted fake tracerd (resend of unacknowledged batches, `persisted_seq` trimming).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::Framed;
use tracerd::config::Address;
use tracerd::native::{NodeMessage, TracerCodec, TracerMessage};
use tracerd_forwarder::{Forwarder, ForwarderConfig, SubmitError};

use crate::support::*;

fn config(address: Address, name: &str) -> ForwarderConfig {
    let mut c = ForwarderConfig::new(address, name);
    c.network_magic = MAGIC;
    c.backoff_initial = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c.max_batch_objects = 64;
    c
}

fn submit(fwd: &Forwarder, name: &str, seqs: std::ops::RangeInclusive<u64>) {
    for seq in seqs {
        fwd.trace(object(name, seq, 100)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_object_lands_exactly_once_across_a_daemon_restart() {
    let mut d = Daemon::start("");
    let fwd = Forwarder::start(config(Address::Unix(d.socket()), "relay-1")).unwrap();
    submit(&fwd, "relay-1", 1..=2000);
    // Stop tracerd while objects are in flight; keep submitting while it is down.
    tokio::time::sleep(Duration::from_millis(20)).await;
    d.signal("TERM");
    submit(&fwd, "relay-1", 2001..=3000);
    d.wait(Duration::from_secs(30));
    submit(&fwd, "relay-1", 3001..=4000);
    d.spawn();
    submit(&fwd, "relay-1", 4001..=5000);
    assert!(
        fwd.flush(Duration::from_secs(30)).await,
        "{:?}",
        fwd.stats()
    );
    let stats = fwd.close(Duration::from_secs(5)).await;
    assert_eq!(
        (stats.submitted, stats.acked, stats.dropped),
        (5000, 5000, 0)
    );
    assert!(stats.connects >= 2, "{stats:?}");
    eprintln!("restart test: {stats:?}");
    assert_eq!(stats.buffered, 0);
    assert_eq!(stats.acked_seq, 5000);
    let seqs = seqs(&d.logs().join("relay-1"));
    assert_eq!(seqs, (1..=5000).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_the_newest_objects_and_counts_them() {
    let mut d = Daemon::start("");
    d.signal("TERM");
    d.wait(Duration::from_secs(30));
    let address = Address::parse(&format!("127.0.0.1:{}", d.tcp_port)).unwrap();
    let mut c = config(address, "full");
    c.queue_capacity = 100;
    let fwd = Forwarder::start(c).unwrap();
    let accepted = fwd.trace_many((1..=150).map(|s| object("full", s, 10)));
    assert_eq!(accepted, 100);
    assert_eq!(fwd.space(), 0);
    assert_eq!(
        fwd.trace(object("full", 151, 10)),
        Err(SubmitError::QueueFull)
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = fwd.stats();
    assert_eq!((s.submitted, s.dropped, s.buffered), (100, 51, 100));
    assert!(!s.connected && s.last_error.is_some(), "{s:?}");
    d.spawn();
    assert!(
        fwd.flush(Duration::from_secs(30)).await,
        "{:?}",
        fwd.stats()
    );
    let s = fwd.close(Duration::from_secs(5)).await;
    assert_eq!((s.acked, s.dropped, s.buffered), (100, 51, 0));
    assert_eq!(seqs(&d.logs().join("full")), (1..=100).collect::<Vec<_>>());
}

/// One scripted session of a fake tracerd: accepts with `persisted`, reads trace batches until
/// `until` is received, acks it if `ack`, then closes. Returns the (first_seq, count) batches.
async fn fake_session(
    listener: &tokio::net::UnixListener,
    persisted: u64,
    until: u64,
    ack: bool,
) -> Vec<(u64, usize)> {
    let (stream, _) = listener.accept().await.unwrap();
    let mut framed = Framed::new(stream, TracerCodec::new(1 << 20));
    match framed.next().await {
        Some(Ok(NodeMessage::Hello(h))) => assert_eq!(h.node_name, "fake"),
        other => panic!("expected Hello, got {other:?}"),
    }
    framed
        .send(TracerMessage::Accept {
            version: 1,
            node_name: "fake".into(),
            persisted_seq: persisted,
            max_frame_bytes: 1 << 20,
        })
        .await
        .unwrap();
    let mut batches = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let msg = tokio::time::timeout_at(deadline, framed.next())
            .await
            .expect("timed out waiting for batches");
        match msg {
            Some(Ok(NodeMessage::Traces(b))) => {
                let last = b.first_seq + b.objects.len() as u64 - 1;
                batches.push((b.first_seq, b.objects.len()));
                if last >= until {
                    break;
                }
            }
            Some(Ok(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    if ack {
        framed.send(TracerMessage::Ack(until)).await.unwrap();
        // Give the forwarder time to read the Ack before the connection goes.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    batches
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_batches_are_resent_after_a_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fake.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let mut c = config(Address::Unix(path), "fake");
    c.max_batch_objects = 10;
    // Only full batches go out at once: batch boundaries are 1, 11, 21, ...
    c.linger = Duration::from_secs(1);
    let fwd = Forwarder::start(c).unwrap();
    submit(&fwd, "fake", 1..=100);
    // Session 1 receives everything and acknowledges nothing.
    let first = fake_session(&listener, 0, 100, false).await;
    assert_eq!(first.iter().map(|b| b.1).sum::<usize>(), 100);
    assert_eq!(first[0].0, 1);
    // Session 2 says 40 are persisted: the forwarder resends from 41, in order.
    let second = fake_session(&listener, 40, 100, true).await;
    assert_eq!(second[0].0, 41, "{second:?}");
    assert_eq!(second.iter().map(|b| b.1).sum::<usize>(), 60);
    assert!(second.windows(2).all(|w| w[0].0 + w[0].1 as u64 == w[1].0));
    assert!(fwd.flush(Duration::from_secs(10)).await);
    let s = fwd.stats();
    assert_eq!(
        (s.sent, s.resent, s.acked, s.acked_seq),
        (100, 60, 100, 100)
    );
    assert_eq!(s.connects, 2);
    // New objects continue the numbering on a third connection.
    submit(&fwd, "fake", 101..=105);
    let third = fake_session(&listener, 100, 105, true).await;
    assert_eq!(third, vec![(101, 5)]);
    let s = fwd.close(Duration::from_secs(5)).await;
    assert_eq!((s.acked, s.buffered, s.dropped), (105, 0, 0));
}
