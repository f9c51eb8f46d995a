//! Benchmark runs: a run started with `tracerd run start` and ended with `tracerd run end`
//! while two nodes stream and their files rotate, then `tracerd extract`: every object the
//! nodes sent inside the window exactly once, none from outside it, and `run.json`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tracerd::model::{MetricValue, MetricsUpdate};
use tracerd::native::NodeMessage;

use crate::http::http_get;
use crate::support::*;

fn tracerd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tracerd"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn post(port: u16, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = crate::http::connect_http(port);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
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

/// What a streaming node has sent and had acknowledged, shared with the test.
#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    acked: AtomicU64,
}

fn metric(n: i64) -> NodeMessage {
    NodeMessage::Metrics(MetricsUpdate {
        full: false,
        metrics: vec![("test.progress".into(), MetricValue::Counter(n))],
    })
}

/// Streams batches of 7 objects, each acknowledged before the next, until `stop` (or 60 s),
/// reporting a metric of its progress every 10 batches.
async fn stream(socket: PathBuf, name: &str, progress: Arc<Progress>, stop: Arc<AtomicBool>) {
    let mut node = FakeNode::handshake(connect_unix(&socket).await, name).await;
    let until = Instant::now() + Duration::from_secs(60);
    let mut next = node.acked + 1;
    let mut batches = 0i64;
    while !stop.load(Ordering::SeqCst) && Instant::now() < until {
        progress.sent.store(next + 6, Ordering::SeqCst);
        node.send_batch(next, 7, 200).await;
        node.wait_ack(next + 6).await;
        progress.acked.store(node.acked, Ordering::SeqCst);
        next += 7;
        batches += 1;
        if batches % 10 == 0 {
            node.framed.send(metric(batches)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until every node has had `n` more objects acknowledged.
async fn advance(nodes: &[Arc<Progress>], n: u64) {
    let from: Vec<u64> = nodes
        .iter()
        .map(|p| p.acked.load(Ordering::SeqCst))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while nodes
        .iter()
        .zip(&from)
        .any(|(p, f)| p.acked.load(Ordering::SeqCst) < f + n)
    {
        assert!(Instant::now() < deadline, "nodes stopped streaming");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn file_count(dir: &Path) -> usize {
    tracerd::logs::dir::list_keys(dir, "json").unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_extracted_exactly_across_rotations_while_nodes_stream() {
    let http = free_port();
    let mut d = Daemon::configure(
        |dir, _| {
            format!(
                "networkMagic: {MAGIC}\nlogging:\n  - {{ logRoot: {}, logMode: FileMode, logFormat: ForMachine }}\n\
                 rotation: {{ rpLogLimitBytes: 6000, rpKeepFilesNum: 100000, rpMaxAgeHours: 24, rpFrequencySecs: 1 }}\n",
                dir.join("logs").display()
            )
        },
        &format!("hasPrometheus: {{epHost: 127.0.0.1, epPort: {http}}}\n"),
    );
    let state = d.dir.path().join("state");
    let mut cmd = d.command();
    cmd.arg("--state-dir").arg(&state);
    d.spawn_command(cmd);
    let url = format!("http://127.0.0.1:{http}");

    let stop = Arc::new(AtomicBool::new(false));
    let names = ["relay-a", "relay-b"];
    let progress: Vec<Arc<Progress>> = names.iter().map(|_| Arc::default()).collect();
    let tasks: Vec<_> = names
        .iter()
        .zip(&progress)
        .map(|(name, p)| tokio::spawn(stream(d.socket(), name, p.clone(), stop.clone())))
        .collect();
    advance(&progress, 100).await;

    // Start: everything acknowledged before is out of the run, everything sent after in.
    let before_start: Vec<u64> = progress
        .iter()
        .map(|p| p.acked.load(Ordering::SeqCst))
        .collect();
    let started = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            tracerd(&[
                "run",
                "start",
                "r1",
                "--label",
                "profile=ci",
                "--label",
                "commit=abc123",
                "--url",
                &url,
            ])
        }
    })
    .await
    .unwrap();
    let after_start: Vec<u64> = progress
        .iter()
        .map(|p| p.sent.load(Ordering::SeqCst))
        .collect();
    let text = ok(&started);
    assert!(text.starts_with("run r1 started at "), "{text}");
    let files_at_start: Vec<usize> = names
        .iter()
        .map(|n| file_count(&d.logs().join(n)))
        .collect();

    // A second start of one name is refused, and a run nobody started cannot end.
    let (code, body) = post(http, "/api/runs", r#"{"name":"r1"}"#);
    assert_eq!(code, 409, "{body}");
    let (code, body) = post(http, "/api/runs", r#"{"name":"../x"}"#);
    assert_eq!(code, 400, "{body}");
    let (code, body) = post(http, "/api/runs/nope/end", "");
    assert_eq!(code, 404, "{body}");

    // Enough objects inside the window to rotate each node's file several times.
    advance(&progress, 200).await;
    let before_end: Vec<u64> = progress
        .iter()
        .map(|p| p.acked.load(Ordering::SeqCst))
        .collect();
    let ended = tokio::task::spawn_blocking({
        let url = url.clone();
        move || tracerd(&["run", "end", "r1", "--url", &url])
    })
    .await
    .unwrap();
    let after_end: Vec<u64> = progress
        .iter()
        .map(|p| p.sent.load(Ordering::SeqCst))
        .collect();
    assert!(ok(&ended).starts_with("run r1 ended at "));
    let (code, _) = post(http, "/api/runs/r1/end", "");
    assert_eq!(code, 409, "a run ends once");
    // The nodes go on after the end, into files the run must not take.
    advance(&progress, 30).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    for (i, n) in names.iter().enumerate() {
        let files = file_count(&d.logs().join(n));
        assert!(
            files >= files_at_start[i] + 3,
            "{n}: too few rotations: {files}"
        );
    }

    // tracerd's own log tells of both boundaries.
    let log = d.wait_log("run ended", 1);
    assert!(log.contains("run started") && log.contains("r1"), "{log}");
    // The record is in the state directory.
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("runs/r1.json")).unwrap()).unwrap();
    assert_eq!(record["labels"]["commit"], "abc123");
    let (_, _, shown) = http_get(http, "/api/runs/r1", &[]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&shown).unwrap(),
        record
    );

    let out = d.dir.path().join("extract");
    let extracted = tracerd(&[
        "extract",
        "--run",
        "r1",
        "--out",
        out.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    let text = ok(&extracted);
    assert!(text.contains("2 node(s)"), "{text}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(summary["labels"]["profile"], "ci");
    for (i, name) in names.iter().enumerate() {
        let lines = std::fs::read_to_string(out.join(name).join("traces.json")).unwrap();
        let seqs: Vec<u64> = lines
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["data"]["seq"].as_u64().unwrap()
            })
            .collect();
        let (first, last) = (seqs[0], *seqs.last().unwrap());
        // Each object of the window once, in order.
        assert_eq!(
            seqs,
            (first..=last).collect::<Vec<_>>(),
            "{name}: gaps or repeats"
        );
        assert!(
            first > before_start[i] && first <= after_start[i] + 1,
            "{name}: window starts at {first}, boundary between {} and {}",
            before_start[i],
            after_start[i]
        );
        assert!(
            last >= before_end[i] && last <= after_end[i],
            "{name}: window ends at {last}, boundary between {} and {}",
            before_end[i],
            after_end[i]
        );
        let node = &summary["nodes"][name];
        assert_eq!(node["objects"], seqs.len() as u64, "{node}");
        assert_eq!(node["severities"]["Info"], seqs.len() as u64, "{node}");
        assert!(
            node["targets"][0]["sourceFiles"].as_array().unwrap().len() >= 3,
            "{node}"
        );
        assert_eq!(node["targets"][0]["complete"], true);
        // The node's metric at both boundaries, and its round-trip times.
        let progress = &node["metrics"]["test.progress"];
        let (a, b) = (
            progress["first"].as_i64().unwrap(),
            progress["last"].as_i64().unwrap(),
        );
        assert!(b > a, "{progress}");
        assert!(
            node["rtt"]["end"]["latestSeconds"].as_f64().unwrap() > 0.0,
            "{node}"
        );
    }
    // A second extraction into the same folder is refused rather than mixed.
    let again = tracerd(&[
        "extract",
        "--run",
        "r1",
        "--out",
        out.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
}

#[test]
fn runs_need_a_state_directory_and_say_so() {
    let http = free_port();
    let d = Daemon::start(&format!(
        "hasPrometheus: {{epHost: 127.0.0.1, epPort: {http}}}\n"
    ));
    let (code, body) = post(http, "/api/runs", r#"{"name":"r1"}"#);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("--state-dir"), "{body}");
    let out = tracerd(&[
        "run",
        "end",
        "r1",
        "--url",
        &format!("http://127.0.0.1:{http}"),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--state-dir"));
    drop(d);
}
