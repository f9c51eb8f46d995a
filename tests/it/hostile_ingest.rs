//! Hostile input to the ingest path, sent while well-behaved nodes stream: memory stays within
//! the README's formula whatever a node packs into its frames, and the good nodes lose nothing.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio_util::codec::Framed;
use tracerd::model::{DetailLevel, Severity, TraceBatch, TraceObject};
use tracerd::native::{ForwarderCodec, NodeMessage};

use crate::hostile_logs::{machine_seqs, stream};
use crate::support::*;

/// A trace object with every field empty or default: 2 bytes on the wire.
fn empty_object() -> TraceObject {
    TraceObject {
        namespace: String::new().into(),
        severity: Severity::Debug,
        detail: DetailLevel::Minimal,
        timestamp_ns: 0,
        hostname: String::new().into(),
        thread_id: String::new().into(),
        machine: String::new().into(),
        human: None,
        form: Default::default(),
    }
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS:`, `VmHWM:`).
pub fn status_kib(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

const MAX_FRAME: u64 = 1 << 20;
const OBJECTS_PER_FRAME: u64 = 20_000;
const QUEUE_BYTES: u64 = 4 << 20;
const TOTAL_QUEUE_BYTES: u64 = 8 << 20;
/// Connections at once: 2 attackers and 2 good nodes.
const CONNECTIONS: u64 = 4;
/// What tracerd (the debug build) takes with a few idle nodes, before any attack.
const BASELINE: u64 = 48 << 20;

/// README, "Limits": the worst case of all queues and sessions together.
fn formula() -> u64 {
    let per_frame = OBJECTS_PER_FRAME * 272 + 2 * MAX_FRAME;
    2 * TOTAL_QUEUE_BYTES.min(CONNECTIONS * QUEUE_BYTES) + CONNECTIONS * per_frame
}

/// One attacker: frames of `OBJECTS_PER_FRAME` empty objects (40 KB on the wire, ~5 MB decoded)
/// as fast as tracerd reads them, for `for_how_long`; then one frame over the object limit,
/// which closes the connection. Returns the frames sent and whether the connection was
/// closed after the over-limit frame.
async fn attack(port: u16, name: &str, for_how_long: Duration) -> (u64, bool) {
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let node = FakeNode::handshake(Framed::new(s, ForwarderCodec::new(16 << 20)), name).await;
    let mut f = node.framed;
    let frame = vec![empty_object(); OBJECTS_PER_FRAME as usize];
    let until = Instant::now() + for_how_long;
    let mut sent = 0;
    while Instant::now() < until {
        let batch = TraceBatch {
            first_seq: 0,
            objects: frame.clone(),
        };
        match tokio::time::timeout(Duration::from_secs(1), f.send(NodeMessage::Traces(batch))).await
        {
            Ok(Ok(())) => sent += 1,
            Ok(Err(e)) => panic!("{name}: send failed after {sent} frames: {e}"),
            Err(_) => {} // tracerd reads slower: backpressure, as it should
        }
    }
    let over = TraceBatch {
        first_seq: 0,
        objects: vec![empty_object(); OBJECTS_PER_FRAME as usize + 1],
    };
    let _ = f.send(NodeMessage::Traces(over)).await;
    // tracerd refuses the frame and closes: reading then ends within the bound.
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        use futures_util::StreamExt;
        loop {
            match f.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .is_ok();
    (sent, closed)
}

/// Issue 12, point 1: two connections send frames of tens of thousands of 2-byte objects
/// while two good nodes stream. Peak RSS (VmHWM) stays under the README's formula plus a
/// baseline, the good nodes lose nothing and their acks keep flowing (each finishes its
/// stream in a bounded time), and a frame over `maxObjectsPerFrame` is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amplified_frames_stay_within_the_memory_formula() {
    let d = Daemon::start(&format!(
        "  limits: {{ maxFrameBytes: {MAX_FRAME}, queueBytes: {QUEUE_BYTES}, totalQueueBytes: {TOTAL_QUEUE_BYTES}, maxObjectsPerFrame: {OBJECTS_PER_FRAME} }}\n"
    ));
    d.wait_log("listening", 1);
    let pid = d.child.as_ref().unwrap().id();
    const TOTAL: u64 = 900;
    let started = Instant::now();
    let good: Vec<_> = ["good-a", "good-b"]
        .iter()
        .map(|n| tokio::spawn(stream(n.to_string(), d.tcp_port, TOTAL, false)))
        .collect();
    let attackers: Vec<_> = ["attacker-1", "attacker-2"]
        .iter()
        .map(|n| tokio::spawn(attack(d.tcp_port, n, Duration::from_secs(3))))
        .collect();
    for (name, t) in ["good-a", "good-b"].iter().zip(good) {
        let acked = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("good node's acks stalled")
            .unwrap();
        assert_eq!(acked, TOTAL, "{name}: acknowledged {acked} of {TOTAL}");
    }
    let good_took = started.elapsed();
    for (name, t) in ["attacker-1", "attacker-2"].iter().zip(attackers) {
        let (sent, closed) = t.await.unwrap();
        eprintln!("{name}: {sent} frames of {OBJECTS_PER_FRAME} objects");
        assert!(sent >= 2, "{name}: the attack did not run ({sent} frames)");
        assert!(
            closed,
            "{name}: a frame over maxObjectsPerFrame was not refused"
        );
    }
    let hwm = status_kib(pid, "VmHWM:") * 1024;
    let bound = formula() + BASELINE;
    eprintln!(
        "VmHWM {} MiB, bound {} MiB (formula {} MiB + baseline {} MiB); good nodes took {good_took:?}",
        hwm >> 20,
        bound >> 20,
        formula() >> 20,
        BASELINE >> 20
    );
    assert!(hwm < bound, "peak RSS {hwm} bytes over the bound {bound}");
    // The good nodes' acks kept flowing while the attack ran: 900 objects at 15 per 25 ms
    // take ~1.5 s unhindered.
    assert!(
        good_took < Duration::from_secs(15),
        "good nodes took {good_took:?}"
    );
    for name in ["good-a", "good-b"] {
        let seqs = machine_seqs(&d.logs().join(name));
        assert_eq!(
            seqs,
            (1..=TOTAL).collect::<Vec<_>>(),
            "{name} lost or repeated objects"
        );
    }
    d.wait_log("too_many_objects", 2);
}

/// Issue 12, point 9: sequence numbers never wrap. A batch that would number objects past
/// 2^64-2 is refused with the reason and closes the connection; `persisted_seq` does not
/// regress on reconnect, and what fits is still accepted. Two good nodes stream throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_numbers_never_wrap() {
    let d = Daemon::start("");
    d.wait_log("listening", 1);
    const TOTAL: u64 = 300;
    let good: Vec<_> = ["good-a", "good-b"]
        .iter()
        .map(|n| tokio::spawn(stream(n.to_string(), d.tcp_port, TOTAL, false)))
        .collect();
    let max_seq = tracerd::ingest::MAX_SEQ;
    assert_eq!(max_seq, u64::MAX - 1);
    let mut node = FakeNode::handshake(connect_tcp(d.tcp_port).await, "wrapper").await;
    node.send_batch(max_seq - 2, 1, 0).await;
    node.wait_ack(max_seq - 2).await;
    // Unnumbered: tracerd would number these max_seq-1, max_seq, max_seq+1.
    node.send_batch(0, 3, 0).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        use futures_util::StreamExt;
        loop {
            match node.framed.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(tracerd::native::TracerMessage::Ack(n))) => {
                    panic!("acknowledged {n} after a batch past the limit")
                }
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection stayed open");
    d.wait_log("sequence numbers would pass 18446744073709551614", 1);
    d.wait_log("sequence_overflow", 1);

    let mut node = FakeNode::handshake(connect_tcp(d.tcp_port).await, "wrapper").await;
    assert_eq!(node.acked, max_seq - 2, "persisted_seq regressed");
    node.send_batch(max_seq - 1, 2, 0).await;
    node.wait_ack(max_seq).await;
    drop(node);

    for (name, t) in ["good-a", "good-b"].iter().zip(good) {
        let acked = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("good node's acks stalled")
            .unwrap();
        assert_eq!(acked, TOTAL, "{name}: acknowledged {acked} of {TOTAL}");
        let seqs = machine_seqs(&d.logs().join(name));
        assert_eq!(
            seqs,
            (1..=TOTAL).collect::<Vec<_>>(),
            "{name} lost or repeated objects"
        );
    }
    let lines = read_node_lines(&d.logs().join("wrapper"));
    let seqs: Vec<u64> = lines
        .iter()
        .map(|v| v["data"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![max_seq - 2, max_seq - 1, max_seq]);
}

/// Issue 12, points 7 and 8: what a peer sends cannot forge or flood tracerd's own log. A
/// software name holding "\nERROR forged" stays inside its line; 200 refused Hellos with a
/// 200 KB name add less than 64 KiB to the log (each echo is capped too), and are all
/// counted. Two good nodes stream throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_strings_neither_forge_nor_flood_tracerds_log() {
    let d = Daemon::start("");
    d.wait_log("listening", 1);
    const TOTAL: u64 = 300;
    let good: Vec<_> = ["good-a", "good-b"]
        .iter()
        .map(|n| tokio::spawn(stream(n.to_string(), d.tcp_port, TOTAL, false)))
        .collect();

    let mut f = connect_tcp(d.tcp_port).await;
    let mut forged = hello("forger");
    if let NodeMessage::Hello(h) = &mut forged {
        h.software.name = "it\nERROR forged line from node \u{1b}[31mred".into();
        h.software.version = "0\r\n\u{2028}WARN forged too".into();
    }
    f.send(forged).await.unwrap();
    match recv(&mut f).await {
        Some(tracerd::native::TracerMessage::Accept { .. }) => {}
        other => panic!("expected Accept, got {other:?}"),
    }
    d.wait_log("native handshake accepted", 3);

    let before = d.stderr().len();
    let long = "n".repeat(200_000);
    for _ in 0..200 {
        let mut c = connect_tcp(d.tcp_port).await;
        c.send(hello(&long)).await.unwrap();
        match recv(&mut c).await {
            Some(tracerd::native::TracerMessage::Refuse { message, .. }) => {
                assert!(message.len() <= 400, "echoed {} bytes", message.len())
            }
            other => panic!("expected Refuse, got {other:?}"),
        }
    }
    d.wait_log("suppressed", 1);
    for (name, t) in ["good-a", "good-b"].iter().zip(good) {
        let acked = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("good node's acks stalled")
            .unwrap();
        assert_eq!(acked, TOTAL, "{name}: acknowledged {acked} of {TOTAL}");
        let seqs = machine_seqs(&d.logs().join(name));
        assert_eq!(
            seqs,
            (1..=TOTAL).collect::<Vec<_>>(),
            "{name} lost or repeated objects"
        );
    }
    drop(f);
    let log = d.stderr();
    let added = log.len() - before;
    eprintln!("200 refusals with a 200 KB name added {added} bytes to the log");
    assert!(
        added < 64 << 10,
        "200 refusals added {added} bytes to tracerd's log"
    );
    for line in log.lines() {
        assert!(!line.contains('\u{1b}'), "raw ESC in {line:?}");
        assert!(!line.contains('\u{2028}'), "raw U+2028 in {line:?}");
        if line.contains("forged") {
            assert!(
                line.contains("native handshake accepted"),
                "standalone forged line {line:?}"
            );
        }
    }
}

/// Issue 12, point 14: a node whose log directory cannot be created (here a regular file is
/// in its place) gets a `HelloRefuse` with the reason, not a bare close; two good nodes
/// stream throughout and lose nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_logs_cannot_be_kept_is_refused_with_the_reason() {
    let d = Daemon::start("");
    d.wait_log("listening", 1);
    const TOTAL: u64 = 300;
    let good: Vec<_> = ["good-a", "good-b"]
        .iter()
        .map(|n| tokio::spawn(stream(n.to_string(), d.tcp_port, TOTAL, false)))
        .collect();
    std::fs::create_dir_all(d.logs()).unwrap();
    std::fs::write(d.logs().join("blocked"), "not a directory\n").unwrap();
    let mut f = connect_tcp(d.tcp_port).await;
    f.send(hello("blocked")).await.unwrap();
    match recv(&mut f).await {
        Some(tracerd::native::TracerMessage::Refuse { reason, message }) => {
            assert_eq!(reason, tracerd::native::RefuseReason::Unavailable);
            assert!(
                message.starts_with("cannot keep this node's logs: "),
                "{message}"
            );
            assert!(
                message.len() > "cannot keep this node's logs: ".len(),
                "{message}"
            );
        }
        other => panic!("expected Refuse, got {other:?}"),
    }
    d.wait_log("reason=\"unavailable\"", 1);
    for (name, t) in ["good-a", "good-b"].iter().zip(good) {
        let acked = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("good node's acks stalled")
            .unwrap();
        assert_eq!(acked, TOTAL, "{name}: acknowledged {acked} of {TOTAL}");
        let seqs = machine_seqs(&d.logs().join(name));
        assert_eq!(
            seqs,
            (1..=TOTAL).collect::<Vec<_>>(),
            "{name} lost or repeated objects"
        );
    }
    assert_eq!(
        std::fs::read_to_string(d.logs().join("blocked")).unwrap(),
        "not a directory\n"
    );
}
