//! The capture window (issue 20): a TCP node's connection captured for 2 s at the OS level and
//! read back by tshark (only that connection's packets, both ways, while other nodes stream
//! and lose nothing); a Unix-socket node captured from its handshake on (`tracerd.capture.
//! atStart`) and decoded by tracerd's own reader frame by frame, both directions, in order;
//! and the refusals (a second capture, the budget, bad parameters, no CAP_NET_RAW).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Decoder;
use tracerd::capture::pcapng::{Direction, LINKTYPE_ETHERNET, LINKTYPE_USER0};
use tracerd::capture::read;
use tracerd::native::{ForwarderCodec, NodeMessage, TracerCodec, TracerMessage};

use crate::http::http_get;
use crate::support::*;

/// A `POST` without a body: status and body.
pub fn post(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = crate::http::connect_http(port);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (
        head.split(' ').nth(1).unwrap().parse().unwrap(),
        body.to_string(),
    )
}

fn http_config(port: u16, capture: &str) -> String {
    format!("{capture}hasPrometheus: {{epHost: 127.0.0.1, epPort: {port}}}\n")
}

/// Streams batches of 5 objects, each acknowledged before the next, until `stop` (bounded:
/// 30 s); the node's last acknowledged sequence number.
async fn stream<S: AsyncRead + AsyncWrite + Unpin>(
    mut node: FakeNode<S>,
    stop: Arc<AtomicBool>,
) -> u64 {
    let until = Instant::now() + Duration::from_secs(30);
    let mut next = node.acked + 1;
    while !stop.load(Ordering::SeqCst) && Instant::now() < until {
        node.send_batch(next, 5, 100).await;
        node.wait_ack(next + 4).await;
        next += 5;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.acked
}

/// Polls the node's capture until it ended (bounded: 15 s); its JSON.
fn wait_done(port: u16, slug: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _, body) = http_get(port, &format!("/api/nodes/{slug}/capture"), &[]);
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["state"] == "done" {
            return v;
        }
        assert!(Instant::now() < deadline, "capture did not end: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every object a node had acknowledged is on disk once, in order.
fn lost_nothing(d: &Daemon, node: &str, acked: u64) {
    assert!(acked > 0, "{node} streamed nothing");
    let got = seqs(&d.logs().join(node));
    assert_eq!(got, (1..=acked).collect::<Vec<_>>(), "{node}");
}

fn tshark(file: &Path, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(file).args(["-T", "fields"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run tshark ({e}): apt-get install tshark (./test.sh does it as root)")
    });
    assert!(
        out.status.success(),
        "tshark -r {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_node_captured_for_two_seconds_reads_back_in_tshark_with_only_its_packets() {
    let http = free_port();
    let d = Daemon::start(&http_config(http, ""));
    let stop = Arc::new(AtomicBool::new(false));
    let captured = connect_tcp(d.tcp_port).await;
    let node_port = captured.get_ref().local_addr().unwrap().port();
    let captured = FakeNode::handshake(captured, "tcp-captured").await;
    let other_tcp = connect_tcp(d.tcp_port).await;
    let other_port = other_tcp.get_ref().local_addr().unwrap().port();
    let other_tcp = FakeNode::handshake(other_tcp, "tcp-other").await;
    let other_unix = FakeNode::handshake(connect_unix(&d.socket()).await, "unix-other").await;
    let tasks = [
        tokio::spawn(stream(captured, stop.clone())),
        tokio::spawn(stream(other_tcp, stop.clone())),
        tokio::spawn(stream(other_unix, stop.clone())),
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked_ns = wall_ns();
    let (status, body) = tokio::task::spawn_blocking(move || {
        post(
            http,
            "/api/nodes/tcp-captured/capture?seconds=2&maxBytes=4194304",
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 202, "{body}");
    let started: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(started["kind"], "tcp");
    assert_eq!(started["interface"], "lo");
    let file = PathBuf::from(started["file"].as_str().unwrap());
    assert_eq!(file.parent().unwrap(), d.logs().join("tcp-captured"));
    let name = file.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("capture-") && name.ends_with(".pcapng"),
        "{name}"
    );
    let begun = Instant::now();
    let done = tokio::task::spawn_blocking(move || wait_done(http, "tcp-captured"))
        .await
        .unwrap();
    let took = begun.elapsed();
    assert_eq!(done["ended"], "seconds", "{done}");
    assert!(took < Duration::from_secs(5), "a 2 s capture took {took:?}");
    stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    for t in tasks {
        acked.push(t.await.unwrap());
    }

    // tshark reads the file: every packet is the captured connection's, both ways.
    let rows = tshark(
        &file,
        &[
            "tcp.srcport",
            "tcp.dstport",
            "tcp.len",
            "tcp.window_size_value",
        ],
    );
    assert_eq!(
        rows.len() as u64,
        done["packets"].as_u64().unwrap(),
        "{done}"
    );
    assert!(
        rows.len() >= 20,
        "only {} packets in 2 s of streaming",
        rows.len()
    );
    let (tracerd_port, node_port) = (d.tcp_port.to_string(), node_port.to_string());
    let mut to_tracerd = 0;
    let mut from_tracerd = 0;
    for r in &rows {
        let (src, dst) = (&r[0], &r[1]);
        assert_ne!(src, &other_port.to_string());
        assert_ne!(dst, &other_port.to_string());
        match (src.as_str(), dst.as_str()) {
            (s, t) if s == node_port && t == tracerd_port => {
                to_tracerd += r[2].parse::<u64>().unwrap()
            }
            (s, t) if s == tracerd_port && t == node_port => {
                from_tracerd += r[2].parse::<u64>().unwrap()
            }
            other => panic!("a packet of another connection: {other:?}"),
        }
        assert!(!r[3].is_empty(), "no window size in {r:?}");
    }
    assert!(
        to_tracerd > 1000 && from_tracerd > 0,
        "payload bytes: to tracerd {to_tracerd}, from {from_tracerd}"
    );
    // tracerd's own reader agrees, and `tracerd capture read` prints each packet.
    let capture = read::read(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(capture.interfaces[0].linktype, LINKTYPE_ETHERNET);
    assert_eq!(capture.packets.len(), rows.len());
    // Each packet has its kernel time, within the capture's window; they come in the order
    // the kernel queued them to the capture socket (as tcpdump writes them), so the two
    // directions, stamped on different CPUs before their softirq delivered them, may step
    // back by the time a delivery waited: microseconds, milliseconds on a loaded machine.
    let ended_ns = wall_ns();
    for p in &capture.packets {
        assert!(
            p.ts_ns >= asked_ns && p.ts_ns <= ended_ns,
            "a packet at {} ns outside the capture's window {asked_ns}..{ended_ns}",
            p.ts_ns
        );
    }
    for w in capture.packets.windows(2) {
        assert!(
            w[1].ts_ns + 1_000_000_000 > w[0].ts_ns,
            "packet times step back by {} ns",
            w[0].ts_ns - w[1].ts_ns
        );
    }
    assert!(capture
        .packets
        .iter()
        .any(|p| p.direction == Some(Direction::Inbound)));
    assert!(capture
        .packets
        .iter()
        .any(|p| p.direction == Some(Direction::Outbound)));
    let out = Command::new(env!("CARGO_BIN_EXE_tracerd"))
        .args(["capture", "read"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().filter(|l| !l.starts_with('#')).count(),
        rows.len()
    );
    assert!(
        text.contains(&format!("127.0.0.1:{node_port} > 127.0.0.1:{tracerd_port}")),
        "{text}"
    );
    // The other nodes lost nothing, and neither did the captured one.
    for (node, acked) in ["tcp-captured", "tcp-other", "unix-other"]
        .iter()
        .zip(acked)
    {
        lost_nothing(&d, node, acked);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_node_captured_from_its_handshake_is_decoded_by_tracerds_reader() {
    let http = free_port();
    let capture =
        "  capture:\n    atStart:\n      - {node: unix-captured, seconds: 2, maxBytes: 8388608}\n";
    let d = Daemon::start(&http_config(http, capture));
    let stop = Arc::new(AtomicBool::new(false));
    let captured = FakeNode::handshake(connect_unix(&d.socket()).await, "unix-captured").await;
    let other = FakeNode::handshake(connect_unix(&d.socket()).await, "unix-other").await;
    let other_tcp = FakeNode::handshake(connect_tcp(d.tcp_port).await, "tcp-other").await;
    let tasks = [
        tokio::spawn(stream(captured, stop.clone())),
        tokio::spawn(stream(other, stop.clone())),
        tokio::spawn(stream(other_tcp, stop.clone())),
    ];
    let done = tokio::task::spawn_blocking(move || wait_done(http, "unix-captured"))
        .await
        .unwrap();
    assert_eq!(done["ended"], "seconds", "{done}");
    assert_eq!(done["kind"], "unix");
    stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    for t in tasks {
        acked.push(t.await.unwrap());
    }
    let file = PathBuf::from(done["file"].as_str().unwrap());
    let capture = read::read(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(capture.interfaces.len(), 1);
    assert_eq!(capture.interfaces[0].linktype, LINKTYPE_USER0);
    assert_eq!(capture.interfaces[0].name, d.socket().display().to_string());
    assert_eq!(capture.statistics[0].dropped, Some(0));
    assert!(capture.packets.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));

    // What tracerd read: the node's frames from its first batch on, every one, in order.
    let mut inbound = BytesMut::from(&read::stream(&capture, Direction::Inbound)[..]);
    let mut codec = TracerCodec::new(16 << 20);
    let mut next_seq = 1;
    while let Some(msg) = codec.decode(&mut inbound).unwrap() {
        match msg {
            NodeMessage::Traces(b) => {
                assert_eq!(b.first_seq, next_seq);
                assert_eq!(b.objects.len(), 5);
                next_seq += 5;
            }
            NodeMessage::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // The window may close between two reads of one frame (a frame longer than what the
    // socket had ready is read in pieces): then what is left is that one frame's beginning,
    // nothing else.
    if !inbound.is_empty() {
        assert!(
            inbound.len() < 4 || {
                let declared = u32::from_be_bytes(inbound[..4].try_into().unwrap()) as usize;
                inbound.len() < 4 + declared
            },
            "{} bytes after the last whole frame are not the start of one: {:?}",
            inbound.len(),
            &inbound[..inbound.len().min(16)]
        );
    }
    assert!(
        next_seq > 50,
        "only {} objects captured in 2 s",
        next_seq - 1
    );
    // What it wrote: the handshake's answer first, then acknowledgements, never going back.
    let mut outbound = BytesMut::from(&read::stream(&capture, Direction::Outbound)[..]);
    let mut codec = ForwarderCodec::new(16 << 20);
    let first = codec.decode(&mut outbound).unwrap();
    assert!(
        matches!(first, Some(TracerMessage::Accept { .. })),
        "{first:?}"
    );
    let mut last_ack = 0;
    while let Some(msg) = codec.decode(&mut outbound).unwrap() {
        match msg {
            TracerMessage::Ack(n) => {
                assert!(n > last_ack);
                last_ack = n;
            }
            TracerMessage::Ping(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // Every captured batch is acknowledged in the capture, but the last one's `Ack` may
    // have been written after the window closed.
    assert!(
        last_ack == next_seq - 1 || last_ack + 5 == next_seq - 1,
        "last Ack {last_ack}, last captured object {}",
        next_seq - 1
    );
    // Wireshark reads the file too (as DLT_USER0 frames).
    let rows = tshark(&file, &["frame.len"]);
    assert_eq!(rows.len(), capture.packets.len());
    for (node, acked) in ["unix-captured", "unix-other", "tcp-other"]
        .iter()
        .zip(acked)
    {
        lost_nothing(&d, node, acked);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captures_are_refused_clearly_and_other_nodes_stream_on() {
    let http = free_port();
    let d = Daemon::start(&http_config(http, "  capture:\n    budgetBytes: 1048576\n"));
    let stop = Arc::new(AtomicBool::new(false));
    let a = FakeNode::handshake(connect_unix(&d.socket()).await, "node-a").await;
    let b = FakeNode::handshake(connect_unix(&d.socket()).await, "node-b").await;
    let c = FakeNode::handshake(connect_tcp(d.tcp_port).await, "node-c").await;
    let tasks = [
        tokio::spawn(stream(a, stop.clone())),
        tokio::spawn(stream(b, stop.clone())),
        tokio::spawn(stream(c, stop.clone())),
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let results = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for path in [
            "/api/nodes/node-a/capture",
            "/api/nodes/node-a/capture?seconds=0",
            "/api/nodes/node-a/capture?seconds=3601",
            "/api/nodes/node-a/capture?seconds=2&maxBytes=10",
            "/api/nodes/node-a/capture?seconds=2&maxBytes=2097152",
            "/api/nodes/node-a/capture?seconds=2&fast=yes",
            "/api/nodes/nobody/capture?seconds=2",
            "/api/nodes/node-a/capture?seconds=3&maxBytes=600000",
            "/api/nodes/node-a/capture?seconds=3&maxBytes=4096",
            "/api/nodes/node-b/capture?seconds=3&maxBytes=600000",
        ] {
            out.push(post(http, path));
        }
        out
    })
    .await
    .unwrap();
    let expect = [
        (400, "seconds=N is required"),
        (400, "seconds must be a whole number from 1 to 3600"),
        (400, "seconds must be a whole number from 1 to 3600"),
        (400, "maxBytes must be a whole number from 1024"),
        (400, "more than tracerd.capture.budgetBytes (1048576)"),
        (400, "unknown parameter \"fast\""),
        (404, "no connected node has slug \"nobody\""),
        (202, "\"state\":\"running\""),
        (409, "node \"node-a\" is being captured already"),
        (507, "running captures reserve 600000, so 600000 more would pass tracerd.capture.budgetBytes (1048576)"),
    ];
    for ((status, body), (want, text)) in results.iter().zip(expect) {
        assert_eq!(*status, want, "{body}");
        assert!(body.contains(text), "{want}: {body:?} lacks {text:?}");
    }
    // Files on disk count against the budget too.
    std::fs::write(
        d.logs().join("node-b/capture-2000-01-01T00-00-00.pcapng"),
        vec![0u8; 300_000],
    )
    .unwrap();
    let (status, body) = tokio::task::spawn_blocking(move || {
        post(http, "/api/nodes/node-c/capture?seconds=1&maxBytes=200000")
    })
    .await
    .unwrap();
    assert_eq!(status, 507, "{body}");
    assert!(
        body.contains("capture files on disk take 300000 bytes"),
        "{body}"
    );
    stop.store(true, Ordering::SeqCst);
    for (node, t) in ["node-a", "node-b", "node-c"].iter().zip(tasks) {
        lost_nothing(&d, node, t.await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cap_net_raw_a_tcp_capture_is_refused_and_a_unix_one_still_works() {
    let http = free_port();
    let mut d = Daemon::configure(|_, _| String::new(), &http_config(http, ""));
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--inh-caps=-net_raw",
        "--bounding-set=-net_raw",
        env!("CARGO_BIN_EXE_tracerd"),
    ])
    .arg("-c")
    .arg(d.config_path())
    .stdout(std::process::Stdio::null());
    if Command::new("setpriv").arg("--version").output().is_err() {
        panic!("setpriv is not installed: apt-get install util-linux");
    }
    d.spawn_command(cmd);
    let stop = Arc::new(AtomicBool::new(false));
    let tcp = FakeNode::handshake(connect_tcp(d.tcp_port).await, "tcp-node").await;
    let unix = FakeNode::handshake(connect_unix(&d.socket()).await, "unix-node").await;
    let tasks = [
        tokio::spawn(stream(tcp, stop.clone())),
        tokio::spawn(stream(unix, stop.clone())),
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (refused, unix_ok) = tokio::task::spawn_blocking(move || {
        (
            post(http, "/api/nodes/tcp-node/capture?seconds=1"),
            post(http, "/api/nodes/unix-node/capture?seconds=1"),
        )
    })
    .await
    .unwrap();
    assert_eq!(refused.0, 503, "{}", refused.1);
    assert!(refused.1.contains("needs CAP_NET_RAW"), "{}", refused.1);
    assert_eq!(unix_ok.0, 202, "{}", unix_ok.1);
    // The refused capture left no file and no running capture behind.
    let (status, _, body) = http_get(http, "/api/nodes/tcp-node/capture", &[]);
    assert_eq!(status, 404, "{body}");
    let files: Vec<_> = std::fs::read_dir(d.logs().join("tcp-node"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("capture-"))
        .collect();
    assert!(files.is_empty(), "{files:?}");
    let done = tokio::task::spawn_blocking(move || wait_done(http, "unix-node"))
        .await
        .unwrap();
    assert_eq!(done["ended"], "seconds", "{done}");
    stop.store(true, Ordering::SeqCst);
    for (node, t) in ["tcp-node", "unix-node"].iter().zip(tasks) {
        lost_nothing(&d, node, t.await.unwrap());
    }
}

/// Now, in nanoseconds since the Unix epoch, as a capture's packet times are.
fn wall_ns() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    u64::try_from(since.as_nanos()).unwrap()
}
