//! Streams from many nodes over Unix and TCP land in their own directories, exactly once.

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_nodes_over_unix_and_tcp_land_exactly_once_in_order() {
    let d = Daemon::start("");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let port = d.tcp_port;
        let sock = d.socket();
        tasks.push(tokio::spawn(async move {
            let name = format!("node-{i}");
            if i % 2 == 0 {
                let mut n = FakeNode::handshake(connect_tcp(port).await, &name).await;
                for b in 0..10 {
                    n.send_batch(1 + b * 50, 50, 64).await;
                }
                n.wait_ack(500).await;
            } else {
                let mut n = FakeNode::handshake(connect_unix(&sock).await, &name).await;
                for b in 0..10 {
                    n.send_batch(1 + b * 50, 50, 64).await;
                }
                n.wait_ack(500).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for i in 0..20 {
        let dir = d.logs().join(format!("node-{i}"));
        assert_eq!(seqs(&dir), (1..=500).collect::<Vec<_>>(), "node-{i}");
        let link = std::fs::read_link(dir.join("node.json")).unwrap();
        assert!(dir.join(link).is_file());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_magic_unsupported_version_and_bad_names_are_refused_with_reasons() {
    use futures_util::SinkExt;
    use tracerd::native::{Hello, NodeMessage, RefuseReason, Software, TracerMessage};
    let d = Daemon::start("");
    let cases = [
        (
            1u32,
            vec![1u32],
            "relay",
            RefuseReason::WrongMagic,
            "network magic 1 does not match tracerd's networkMagic 764824073",
        ),
        (
            MAGIC,
            vec![9],
            "relay",
            RefuseReason::UnsupportedVersion,
            "no common protocol version",
        ),
        (
            MAGIC,
            vec![1],
            "../..",
            RefuseReason::NameRejected,
            "no usable characters",
        ),
    ];
    for (magic, versions, name, reason, text) in cases {
        let mut f = connect_tcp(d.tcp_port).await;
        let hello = Hello {
            versions,
            network_magic: magic,
            node_name: name.into(),
            software: Software::default(),
            capabilities: Vec::new(),
            token: String::new(),
            tracers: Vec::new(),
        };
        f.send(NodeMessage::Hello(Box::new(hello))).await.unwrap();
        match recv(&mut f).await {
            Some(TracerMessage::Refuse { reason: r, message }) => {
                assert_eq!(r, reason);
                assert!(message.contains(text), "{message}");
            }
            other => panic!("expected refusal, got {other:?}"),
        }
        assert!(
            recv(&mut f).await.is_none(),
            "connection must close after a refusal"
        );
    }
    // A first frame that is not Hello is refused too.
    let mut f = connect_tcp(d.tcp_port).await;
    f.send(NodeMessage::Ping(1)).await.unwrap();
    assert!(matches!(
        recv(&mut f).await,
        Some(TracerMessage::Refuse {
            reason: RefuseReason::NoHello,
            ..
        })
    ));
    let log = d.stderr();
    assert!(log.contains("reason=\"wrong_magic\""), "{log}");
    assert!(
        !d.logs().join("relay").exists(),
        "a refused node must not get a directory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_are_sanitised_and_collisions_get_distinct_directories() {
    let d = Daemon::start("");
    let mut a = FakeNode::handshake(connect_tcp(d.tcp_port).await, "../../etc/relay one").await;
    assert_eq!(a.name, "relay_one");
    let mut b = FakeNode::handshake(connect_unix(&d.socket()).await, "../../etc/relay one").await;
    assert_eq!(b.name, "relay_one-2");
    a.send_batch(1, 3, 0).await;
    b.send_batch(1, 2, 0).await;
    a.wait_ack(3).await;
    b.wait_ack(2).await;
    assert_eq!(seqs(&d.logs().join("relay_one")), vec![1, 2, 3]);
    assert_eq!(seqs(&d.logs().join("relay_one-2")), vec![1, 2]);
    let entries: Vec<_> = std::fs::read_dir(d.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        !entries.iter().any(|e| e == "etc"),
        "nothing may be written outside the log root"
    );
    assert!(d
        .stderr()
        .contains("filing this node under a distinct name"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_resumes_without_duplicates_in_a_fresh_file() {
    let d = Daemon::start("");
    let mut n = FakeNode::handshake(connect_tcp(d.tcp_port).await, "resume").await;
    assert_eq!(n.acked, 0);
    n.send_batch(1, 10, 0).await;
    n.wait_ack(10).await;
    drop(n);
    // The new session learns what is persisted; resending an overlap writes nothing twice.
    let mut n = loop {
        let n = FakeNode::handshake(connect_tcp(d.tcp_port).await, "resume").await;
        if n.name == "resume" {
            break n;
        }
        // The old session may not have been released yet: try again shortly.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(n.acked, 10);
    n.send_batch(6, 10, 0).await;
    n.wait_ack(15).await;
    let dir = d.logs().join("resume");
    assert_eq!(seqs(&dir), (1..=15).collect::<Vec<_>>());
    let files = tracerd::logs::dir::list_keys(&dir, "json").unwrap();
    assert_eq!(
        files.len(),
        2,
        "a reconnect starts a fresh file and keeps the old one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_input_closes_only_the_offender() {
    use tokio::io::AsyncWriteExt;
    let d = Daemon::start("  limits:\n    maxFrameBytes: 65536\n");
    // Good nodes stream the whole time.
    let port = d.tcp_port;
    let good: Vec<_> = (0..4)
        .map(|i| {
            tokio::spawn(async move {
                let mut n =
                    FakeNode::handshake(connect_tcp(port).await, &format!("good-{i}")).await;
                for b in 0..40u64 {
                    n.send_batch(1 + b * 25, 25, 100).await;
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                n.wait_ack(1000).await;
            })
        })
        .collect();
    let bad_inputs: Vec<Vec<u8>> = vec![
        vec![0xff, 0xff, 0xff, 0xff],                   // huge length
        vec![0, 0, 0, 0],                               // zero length: empty message
        vec![0, 0, 0, 5, 0xde, 0xad, 0xbe, 0xef, 0x01], // garbage protobuf
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),             // wrong protocol entirely
        vec![0, 0, 0, 50, 1, 2, 3],                     // truncated, then close
    ];
    for (i, bytes) in bad_inputs.iter().enumerate() {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        if i % 2 == 1 {
            // Some offenders first complete a valid handshake.
            let mut f =
                tokio_util::codec::Framed::new(s, tracerd::native::ForwarderCodec::new(1 << 20));
            futures_util::SinkExt::send(&mut f, hello(&format!("bad-{i}")))
                .await
                .unwrap();
            recv(&mut f).await.unwrap();
            s = f.into_inner();
        }
        s.write_all(bytes).await.unwrap();
        let _ = s.shutdown().await;
        let mut sink = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tokio::io::AsyncReadExt::read_to_end(&mut s, &mut sink),
        )
        .await;
        assert!(read.is_ok(), "offender {i} was not disconnected");
    }
    for g in good {
        g.await.unwrap();
    }
    for i in 0..4 {
        assert_eq!(
            seqs(&d.logs().join(format!("good-{i}"))),
            (1..=1000).collect::<Vec<_>>()
        );
    }
    let log = d.stderr();
    for reason in [
        "frame_too_large",
        "invalid_message",
        "malformed_protobuf",
        "truncated_frame",
    ] {
        assert!(
            log.contains(&format!("reason=\"{reason}\"")),
            "no {reason} in log:\n{log}"
        );
    }
    assert!(!log.contains("panicked"), "{log}");
}

/// `tracerd_ingest_stage_seconds` counts every write job's stages, and each `Ack`'s: a user
/// reading where the latency goes sees one observation per stage per job, and one `rotate`
/// per job that started a new file (each batch here is smaller than the size limit, so no
/// job rotates twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_stage_histograms_count_every_write_job_and_ack() {
    let prom = free_port();
    let d = Daemon::start(&format!(
        "hasPrometheus: {{epHost: 127.0.0.1, epPort: {prom}}}\n\
         rotation: {{ rpLogLimitBytes: 4096, rpKeepFilesNum: 10000, rpMaxAgeHours: 24 }}\n"
    ));
    let mut n = FakeNode::handshake(connect_tcp(d.tcp_port).await, "staged").await;
    for b in 0..5 {
        n.send_batch(1 + b * 10, 10, 64).await;
        // One batch at a time, so each is one write job and one Ack.
        n.wait_ack(10 + b * 10).await;
    }
    let scrape = move || async move {
        let (status, _, body) =
            tokio::task::spawn_blocking(move || crate::http::http_get(prom, "/metrics", &[]))
                .await
                .unwrap();
        assert_eq!(status, 200);
        body
    };
    let count = |body: &str, stage: &str| -> u64 {
        let key = format!("tracerd_ingest_stage_seconds_count{{stage=\"{stage}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&key))
            .unwrap_or_else(|| panic!("no {key} in /metrics"))
            .parse()
            .unwrap()
    };
    // Five jobs, each handed to a writer thread once; the Ack of each. (`back` times only
    // what the writer task waits for: a write job is collected later, without waiting.)
    // The session times `ack` and `server` after the Ack went out: the last ones may be
    // counted just after this client read the Ack, so the counts are awaited (bounded).
    let stages = ["hop", "write", "ack", "server"];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let body = loop {
        let body = scrape().await;
        if stages.iter().all(|s| count(&body, s) >= 5) {
            break body;
        }
        let counts: Vec<_> = stages.iter().map(|s| (*s, count(&body, s))).collect();
        assert!(
            std::time::Instant::now() < deadline,
            "stages counted after 20 s: {counts:?}, 5 jobs each"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // One timed batch per Ack here (each was acknowledged before the next was queued).
    assert_eq!(count(&body, "server"), 5);
    // Every rotation was in a job of its own, and was timed.
    let rotations: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("tracerd_log_rotations_total "))
        .expect("tracerd_log_rotations_total in /metrics")
        .parse()
        .unwrap();
    let files = std::fs::read_dir(d.logs().join("staged"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with("node-") && name.ends_with(".json")
        })
        .count() as u64;
    assert!(
        rotations >= 1,
        "50 lines should fill 4 KiB files: {rotations} rotations"
    );
    assert_eq!(files, rotations + 1, "one file per rotation, and the first");
    assert_eq!(count(&body, "rotate"), rotations);
    // The checkpoint may be deferred (`fsync: never`), by at most 100 ms.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while count(&scrape().await, "checkpoint") == 0 {
        assert!(std::time::Instant::now() < deadline, "no checkpoint timed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seqs(&d.logs().join("staged")), (1..=50).collect::<Vec<_>>());
}
