//! The forwarder library against the real daemon (restart, drop accounting) and against a
//! scripted fake tracerd (resend of unacknowledged batches, `persisted_seq` trimming).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::Framed;
use tracerd::config::Address;
use tracerd::native::{NodeMessage, TracerCodec, TracerMessage};
use tracerd_forwarder::{Forwarder, ForwarderConfig, SendCause, SubmitError};

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
    c.linger = Duration::from_secs(1);
    let fwd = Forwarder::start(c).unwrap();
    submit(&fwd, "fake", 1..=100);
    // Session 1 receives everything and acknowledges nothing.
    let first = fake_session(&listener, 0, 100, false).await;
    assert_eq!(first.iter().map(|b| b.1).sum::<usize>(), 100);
    assert_eq!(first[0].0, 1);
    assert!(first.windows(2).all(|w| w[0].0 + w[0].1 as u64 == w[1].0));
    // Session 2 says everything before a batch of session 1 from object 31 on is persisted
    // (41 when batches are full; Nagle's rule may send the first object alone, which moves
    // the boundaries): the forwarder resends from there, in order.
    let from = first.iter().map(|b| b.0).find(|&s| s >= 31).unwrap();
    let second = fake_session(&listener, from - 1, 100, true).await;
    assert_eq!(second[0].0, from, "{first:?} then {second:?}");
    assert_eq!(second.iter().map(|b| b.1 as u64).sum::<u64>(), 101 - from);
    assert!(second.windows(2).all(|w| w[0].0 + w[0].1 as u64 == w[1].0));
    assert!(fwd.flush(Duration::from_secs(10)).await);
    let s = fwd.stats();
    assert_eq!(
        (s.sent, s.resent, s.acked, s.acked_seq),
        (100, 101 - from, 100, 100)
    );
    assert_eq!(s.connects, 2);
    // New objects continue the numbering on a third connection.
    submit(&fwd, "fake", 101..=105);
    let third = fake_session(&listener, 100, 105, true).await;
    assert_eq!(third[0].0, 101, "{third:?}");
    assert_eq!(third.iter().map(|b| b.1).sum::<usize>(), 5, "{third:?}");
    assert!(third.windows(2).all(|w| w[0].0 + w[0].1 as u64 == w[1].0));
    let s = fwd.close(Duration::from_secs(5)).await;
    assert_eq!((s.acked, s.buffered, s.dropped), (105, 0, 0));
}

/// Nagle's rule (issue 21): with nothing awaiting an `Ack`, a lone object goes at once, not
/// after `linger`; the real daemon acknowledges it well within the linger time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_object_is_sent_at_once_when_nothing_is_in_flight() {
    let d = Daemon::start("");
    let mut c = config(Address::Unix(d.socket()), "lone");
    // Long, so an object that waited for it is told apart from one a loaded machine was
    // slow to acknowledge.
    c.linger = Duration::from_secs(20);
    let fwd = Forwarder::start(c).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !fwd.stats().connected {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", fwd.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for seq in 1..=3 {
        let started = tokio::time::Instant::now();
        fwd.trace(object("lone", seq, 100)).unwrap();
        assert!(
            fwd.flush(Duration::from_secs(30)).await,
            "{:?}",
            fwd.stats()
        );
        let took = started.elapsed();
        // The linger is 20 s: an object that waited for it would take at least that.
        assert!(
            took < Duration::from_secs(10),
            "object {seq} acknowledged after {took:?}"
        );
    }
    let s = fwd.close(Duration::from_secs(5)).await;
    assert_eq!((s.sent, s.acked, s.dropped), (3, 3, 0));
    assert_eq!(seqs(&d.logs().join("lone")), vec![1, 2, 3]);
}

/// Nagle's rule, the other half: while a batch awaits its `Ack`, new objects accumulate into
/// one batch that waits at most `linger`; once everything is acknowledged the next object
/// goes at once again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_accumulate_only_while_a_batch_awaits_its_ack() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fake.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let mut c = config(Address::Unix(path), "fake");
    // Long enough that "went at once" and "waited for the linger" stay apart on a loaded
    // machine.
    let linger = Duration::from_secs(3);
    c.linger = linger;
    c.ping_every = None;
    let fwd = Forwarder::start(c).unwrap();
    fwd.record_timing();
    let (stream, _) = listener.accept().await.unwrap();
    let mut framed = Framed::new(stream, TracerCodec::new(1 << 20));
    assert!(matches!(
        framed.next().await,
        Some(Ok(NodeMessage::Hello(_)))
    ));
    framed
        .send(TracerMessage::Accept {
            version: 1,
            node_name: "fake".into(),
            persisted_seq: 0,
            max_frame_bytes: 1 << 20,
        })
        .await
        .unwrap();
    // The next trace batch, with how long after `since` it arrived.
    async fn next_batch(
        framed: &mut Framed<tokio::net::UnixStream, TracerCodec>,
        since: tokio::time::Instant,
    ) -> ((u64, usize), Duration) {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), framed.next())
                .await
                .expect("timed out waiting for a batch");
            match msg {
                Some(Ok(NodeMessage::Traces(b))) => {
                    return ((b.first_seq, b.objects.len()), since.elapsed())
                }
                Some(Ok(_)) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let t = tokio::time::Instant::now();
    fwd.trace(object("fake", 1, 10)).unwrap();
    let (first, took) = next_batch(&mut framed, t).await;
    assert_eq!(first, (1, 1));
    assert!(
        took < linger,
        "nothing was in flight, yet object 1 waited {took:?}"
    );
    // Batch 1 is not acknowledged: objects 2..=4, handed over one by one, wait together.
    let t = tokio::time::Instant::now();
    for seq in 2..=4 {
        fwd.trace(object("fake", seq, 10)).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (second, took) = next_batch(&mut framed, t).await;
    assert_eq!(second, (2, 3));
    assert!(
        took >= linger - Duration::from_millis(5),
        "sent after {took:?}"
    );
    framed.send(TracerMessage::Ack(4)).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fwd.stats().acked < 4 {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", fwd.stats());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Everything is acknowledged: the next object goes at once.
    let t = tokio::time::Instant::now();
    fwd.trace(object("fake", 5, 10)).unwrap();
    let (third, took) = next_batch(&mut framed, t).await;
    assert_eq!(third, (5, 1));
    assert!(
        took < linger,
        "nothing was in flight, yet object 5 waited {took:?}"
    );
    framed.send(TracerMessage::Ack(5)).await.unwrap();
    assert!(fwd.flush(Duration::from_secs(10)).await);
    // The timing benchmarks split ack latency with (tracerd-load's `ack_stages_ms`): each
    // batch's first write with why it went then, each `Ack` as it was read.
    let (mut writes, mut acks) = (Vec::new(), Vec::new());
    fwd.take_timing(&mut writes, &mut acks);
    let sent: Vec<_> = writes.iter().map(|w| (w.last_seq, w.cause)).collect();
    assert_eq!(
        sent,
        [
            (1, SendCause::Idle),
            (4, SendCause::Linger),
            (5, SendCause::Idle)
        ]
    );
    assert!(writes.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(acks.iter().map(|a| a.0).collect::<Vec<_>>(), [4, 5]);
    // Object 5 was handed over only once `Ack(4)` had been counted, so after it was read.
    assert!(acks[0].1 <= writes[2].at);
    fwd.take_timing(&mut writes, &mut acks);
    assert_eq!((writes.len(), acks.len()), (3, 2), "taken once");
    let s = fwd.close(Duration::from_secs(5)).await;
    assert_eq!((s.sent, s.acked, s.dropped), (5, 5, 0));
}
