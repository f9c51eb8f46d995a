//! Hostile input to the log files, sent while well-behaved nodes stream: whatever a node puts
//! in its objects, one object is one line in every target, and across `kill -9` and restart
//! every node (the hostile one too) loses nothing and gets nothing twice.

use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::Framed;
use tracerd::model::{TraceBatch, TraceObject};
use tracerd::native::{ForwarderCodec, NodeMessage, TracerMessage};

use crate::support::*;

/// The issue's input: machine JSON nested deeper than serde_json's recursion limit (128) that
/// holds raw newlines around a complete cardano-tracer record.
pub fn forged_machine_text() -> String {
    format!(
        "[{}{},\n{{\"at\":\"2026-01-01T00:00:00Z\",\"ns\":\"Forged\",\"data\":{{}},\"sev\":\"Emergency\",\"thread\":\"1\",\"host\":\"victim\"}}\n]",
        "[".repeat(130),
        "]".repeat(130)
    )
}

/// Object `seq` of `name`: a hostile node sends the forged text (and control characters in
/// every field) in every third object; the timestamp's nanoseconds carry `seq` in both cases.
pub fn stream_object(name: &str, seq: u64, hostile: bool) -> TraceObject {
    let mut o = object(name, seq, 20);
    if hostile && seq % 3 == 0 {
        o.machine = forged_machine_text().into();
        o.human = Some(
            "line\n[2026-01-01T00:00:00Z] [Emergency] [victim] [Forged] x\u{1b}[2K\u{2028}".into(),
        );
        o.hostname = "host\u{85}\u{b}\u{c}".into();
        o.namespace = "Hostile.\u{0}\u{8}Forge".into();
        o.thread_id = "7\r\n".into();
    }
    o
}

/// Streams `total` objects as `name`, reconnecting across daemon restarts and resending from
/// `HelloAccept.persisted_seq + 1`; returns the highest sequence number acknowledged.
pub async fn stream(name: String, port: u16, total: u64, hostile: bool) -> u64 {
    let mut acked = 0u64;
    for _attempt in 0..1000 {
        if acked == total {
            break;
        }
        let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let mut f = Framed::new(s, ForwarderCodec::new(16 << 20));
        if f.send(hello(&name)).await.is_err() {
            continue;
        }
        let persisted = match tokio::time::timeout(Duration::from_secs(10), f.next()).await {
            Ok(Some(Ok(TracerMessage::Accept { persisted_seq, .. }))) => persisted_seq,
            _ => continue,
        };
        assert!(
            persisted >= acked,
            "{name}: acknowledged {acked} but tracerd recovered only {persisted}"
        );
        assert!(
            persisted <= total,
            "{name}: tracerd claims {persisted} persisted of {total} sent"
        );
        // As the forwarder library does: what the daemon recovered is acknowledged.
        acked = acked.max(persisted);
        if acked == total {
            break;
        }
        let mut next = persisted + 1;
        loop {
            tokio::select! {
                msg = f.next() => match msg {
                    Some(Ok(TracerMessage::Ack(a))) => {
                        acked = acked.max(a);
                        if acked == total { break; }
                    }
                    Some(Ok(TracerMessage::Ping(n))) => { if f.send(NodeMessage::Pong(n)).await.is_err() { break; } }
                    Some(Ok(_)) => {}
                    _ => break,
                },
                _ = tokio::time::sleep(Duration::from_millis(25)), if next <= total => {
                    let n = 15.min(total + 1 - next);
                    let objects = (next..next + n).map(|s| stream_object(&name, s, hostile)).collect();
                    if f.send(NodeMessage::Traces(TraceBatch { first_seq: next, objects })).await.is_err() {
                        break;
                    }
                    next += n;
                }
            }
        }
    }
    acked
}

/// The sequence numbers of a node's machine lines, oldest file first, read without a JSON
/// parser's depth limit: the `at` of every line tracerd renders carries `seq` in its
/// nanoseconds. Also checks each line is a record of that node, never a forged one.
pub fn machine_seqs(dir: &Path) -> Vec<u64> {
    let mut keys = tracerd::logs::dir::list_keys(dir, "json").unwrap();
    keys.sort();
    let mut out = Vec::new();
    for k in keys {
        let path = dir.join(k.file_name("json"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{path:?} ends mid-line"
        );
        for line in text.lines() {
            let at = line
                .strip_prefix("{\"at\":\"2026-07-22T10:06:52.")
                .unwrap_or_else(|| panic!("{path:?}: not a record of this node: {line:?}"));
            let ns = &at[10..];
            assert!(
                ns.starts_with("\",\"ns\":\"Test.Stream\"")
                    || ns.starts_with("\",\"ns\":\"Hostile."),
                "{path:?}: forged record {line:?}"
            );
            assert!(
                !line.chars().any(|c| c.is_control()),
                "{path:?}: raw control in {line:?}"
            );
            out.push(at[..9].parse().unwrap());
        }
    }
    out
}

/// Every human line of a node: each must start with tracerd's `[` prefix.
pub fn human_line_count(dir: &Path) -> u64 {
    let mut keys = tracerd::logs::dir::list_keys(dir, "log").unwrap();
    keys.sort();
    let mut n = 0;
    for k in keys {
        let text = std::fs::read_to_string(dir.join(k.file_name("log"))).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'));
        for line in text.lines() {
            assert!(
                line.starts_with("[2026-07-22T10:06:52."),
                "forged human line {line:?}"
            );
            assert!(
                !line.chars().any(|c| c.is_control() || c == '\u{2028}'),
                "{line:?}"
            );
            n += 1;
        }
    }
    n
}

pub fn two_target_config(dir: &Path, _port: u16) -> String {
    format!(
        "networkMagic: {MAGIC}\nlogging:\n  - {{ logRoot: {m}, logMode: FileMode, logFormat: ForMachine }}\n  - {{ logRoot: {h}, logMode: FileMode, logFormat: ForHuman }}\n",
        m = dir.join("logs").display(),
        h = dir.join("text").display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_records_stay_one_line_across_kill_and_restart() {
    const TOTAL: u64 = 450;
    let mut d = Daemon::start_with(two_target_config, "");
    let names = ["good-a", "good-b", "hostile"];
    let tasks: Vec<_> = names
        .iter()
        .map(|n| tokio::spawn(stream(n.to_string(), d.tcp_port, TOTAL, *n == "hostile")))
        .collect();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        d = d.crash_and_restart().await;
    }
    for (name, t) in names.iter().zip(tasks) {
        let acked = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("node finished")
            .unwrap();
        assert_eq!(acked, TOTAL, "{name}");
    }
    d.signal("TERM");
    let d = tokio::task::spawn_blocking(move || {
        assert_eq!(d.wait(Duration::from_secs(20)).code(), Some(0));
        d
    })
    .await
    .unwrap();
    for name in names {
        assert_eq!(
            machine_seqs(&d.logs().join(name)),
            (1..=TOTAL).collect::<Vec<_>>(),
            "{name}: lost, duplicated or forged lines"
        );
        assert_eq!(
            human_line_count(&d.dir.path().join("text").join(name)),
            TOTAL,
            "{name}"
        );
    }
    // The hostile node's deep JSON is kept as its JSON (not a string), inside its own line.
    let text = std::fs::read_to_string(d.logs().join("hostile").join("node.json")).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("\"data\":[[[[") && l.contains(",{\"at\":\"2026-01-01")),
        "the deep JSON is not in the file as JSON"
    );
}

/// A node directory's log-file names and checkpoint replaced by symlinks to files outside the
/// root: recovery and retention read, truncate and delete none of them, while two good nodes
/// stream across a `kill -9` and restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_symlinks_never_reach_outside_the_root() {
    const TOTAL: u64 = 300;
    let mut d = Daemon::start_with(
        |dir, _| {
            format!(
                "networkMagic: {MAGIC}\nlogging:\n  - {{ logRoot: {}, logMode: FileMode, logFormat: ForMachine }}\nrotation: {{ rpLogLimitBytes: 100000, rpKeepFilesNum: 0, rpMaxAgeMinutes: 1, rpFrequencySecs: 1 }}\n",
                dir.join("logs").display()
            )
        },
        "",
    );
    let good: Vec<_> = ["good-a", "good-b"]
        .iter()
        .map(|n| tokio::spawn(stream(n.to_string(), d.tcp_port, TOTAL, false)))
        .collect();
    let mut v = FakeNode::handshake(connect_tcp(d.tcp_port).await, "victim").await;
    v.send_batch(1, 3, 10).await;
    v.wait_ack(3).await;
    drop(v);
    let dir = d.logs().join("victim");
    // The victim files, outside the log root.
    let outside = d.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let victim = outside.join("victim.txt");
    let victim_text = "{\"precious\":1}\n{\"precious\":2}\n{\"torn";
    std::fs::write(&victim, victim_text).unwrap();
    let fake_cp = outside.join("checkpoint.txt");
    let mut cp = br#"{"seq":5,"files":[["node-2099-01-01T00-00-00.json",0]]}"#.to_vec();
    cp.resize(1023, b' ');
    cp.push(b'\n');
    std::fs::write(&fake_cp, &cp).unwrap();
    // Wait for the session to be released before planting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let link = |target: &Path, name: &str| {
        let _ = std::fs::remove_file(dir.join(name));
        std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
    };
    link(&victim, "node-2099-01-01T00-00-00.json");
    link(&victim, "node-2000-01-01T00-00-00.json");
    link(&fake_cp, ".tracerd-state");
    // A regular old file: retention must delete it (so the pass did run).
    std::fs::write(dir.join("node-2000-01-02T00-00-00.json"), "{}\n").unwrap();

    tokio::time::sleep(Duration::from_millis(150)).await;
    d = d.crash_and_restart().await;
    let mut v = FakeNode::handshake(connect_tcp(d.tcp_port).await, "victim").await;
    assert!(
        v.acked <= 3,
        "recovery counted lines of a file outside the root: persisted {}",
        v.acked
    );
    v.send_batch(v.acked + 1, 3, 10).await;
    v.wait_ack(6.min(v.acked + 3)).await;
    d.wait_log("is not a regular file", 1);
    // Retention runs at start and every second.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while dir.join("node-2000-01-02T00-00-00.json").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not run"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (name, t) in ["good-a", "good-b"].iter().zip(good) {
        let acked = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("node finished")
            .unwrap();
        assert_eq!(acked, TOTAL, "{name}");
    }
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        victim_text,
        "victim file changed"
    );
    assert_eq!(
        std::fs::read(&fake_cp).unwrap(),
        cp,
        "checkpoint victim changed"
    );
    for name in [
        "node-2099-01-01T00-00-00.json",
        "node-2000-01-01T00-00-00.json",
    ] {
        assert!(
            std::fs::symlink_metadata(dir.join(name))
                .unwrap()
                .file_type()
                .is_symlink(),
            "{name}: a planted symlink was replaced or deleted"
        );
    }
    assert!(
        std::fs::symlink_metadata(dir.join(".tracerd-state"))
            .unwrap()
            .is_file(),
        "the checkpoint is a regular file again"
    );
    drop(v);
    d.signal("TERM");
    let d = tokio::task::spawn_blocking(move || {
        assert_eq!(d.wait(Duration::from_secs(20)).code(), Some(0));
        d
    })
    .await
    .unwrap();
    for name in ["good-a", "good-b"] {
        assert_eq!(
            machine_seqs(&d.logs().join(name)),
            (1..=TOTAL).collect::<Vec<_>>(),
            "{name}"
        );
    }
}

/// Connects as `name`, sends objects `persisted+1..=upto`, waits for their ack; returns the
/// name tracerd filed the node under and the `persisted_seq` it reported.
async fn session_as(port: u16, name: &str, upto: u64) -> (String, u64) {
    let mut n = FakeNode::handshake(connect_tcp(port).await, name).await;
    let (filed, persisted) = (n.name.clone(), n.acked);
    if upto > persisted {
        n.send_batch(persisted + 1, upto - persisted, 5).await;
        n.wait_ack(upto).await;
    }
    // Let the session release its name before the next one.
    drop(n);
    tokio::time::sleep(Duration::from_millis(150)).await;
    (filed, persisted)
}

/// `x:y`, `x y` and `x\ny` sanitise alike but are three nodes: none inherits another's
/// sequence state, in this process or after a `kill -9` and restart, and a name longer than
/// the proto's 255 bytes is refused with a reason; two good nodes stream throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_sanitise_alike_never_share_sequence_state() {
    const TOTAL: u64 = 900;
    let mut d = Daemon::start("");
    let good: Vec<_> = ["good-a", "good-b"]
        .iter()
        .map(|n| tokio::spawn(stream(n.to_string(), d.tcp_port, TOTAL, false)))
        .collect();
    let names = ["x:y", "x y", "x\ny"];
    let mut filed = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (as_, persisted) = session_as(d.tcp_port, name, 5 + i as u64).await;
        assert_eq!(
            persisted, 0,
            "{name:?} inherited another node's state as {as_}"
        );
        filed.push(as_);
    }
    assert_eq!(filed, ["x_y", "x_y-2", "x_y-3"]);
    // In this process: each gets its own directory and state back.
    for (i, name) in names.iter().enumerate().rev() {
        let (as_, persisted) = session_as(d.tcp_port, name, 10 + i as u64).await;
        assert_eq!(
            (as_.as_str(), persisted),
            (filed[i].as_str(), 5 + i as u64),
            "{name:?}"
        );
    }
    // Over-long names are refused, not cut.
    let mut f = connect_tcp(d.tcp_port).await;
    f.send(hello(&"n".repeat(256))).await.unwrap();
    match recv(&mut f).await {
        Some(TracerMessage::Refuse { message, .. }) => {
            assert!(
                message.contains("256 bytes") && message.contains("255"),
                "{message}"
            )
        }
        other => panic!("expected Refuse, got {other:?}"),
    }
    // Across kill -9 and restart, in the reverse order of first contact.
    d = d.crash_and_restart().await;
    for (i, name) in names.iter().enumerate().rev() {
        let (as_, persisted) = session_as(d.tcp_port, name, 20).await;
        assert_eq!(
            (as_.as_str(), persisted),
            (filed[i].as_str(), 10 + i as u64),
            "{name:?}"
        );
    }
    for (name, t) in ["good-a", "good-b"].iter().zip(good) {
        let acked = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("node finished")
            .unwrap();
        assert_eq!(acked, TOTAL, "{name}");
    }
    for (i, dir) in filed.iter().enumerate() {
        let got = machine_seqs(&d.logs().join(dir));
        assert_eq!(got, (1..=20).collect::<Vec<_>>(), "{:?} in {dir}", names[i]);
    }
    for name in ["good-a", "good-b"] {
        assert_eq!(
            machine_seqs(&d.logs().join(name)),
            (1..=TOTAL).collect::<Vec<_>>(),
            "{name}"
        );
    }
}

/// A connected node's directory deleted while it streams: tracerd recreates it with a fresh
/// file, `node.json` and checkpoint, says so, and the node's acks continue; two other nodes
/// are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_node_directory_is_recreated_and_acks_continue() {
    const TOTAL: u64 = 600;
    let d = Daemon::start("");
    let names = ["good-a", "good-b", "doomed"];
    let tasks: Vec<_> = names
        .iter()
        .map(|n| tokio::spawn(stream(n.to_string(), d.tcp_port, TOTAL, false)))
        .collect();
    let dir = d.logs().join("doomed");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !dir.join("node.json").exists() {
        assert!(std::time::Instant::now() < deadline, "no directory");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // As `rm -r` does: the files first, then the directory. tracerd may notice the missing
    // file in between and start a fresh one in the still-standing directory; the removal then
    // meets a directory that is not empty and goes again (bounded).
    let mut removal = 0;
    while let Err(e) = std::fs::remove_dir_all(&dir) {
        removal += 1;
        assert!(removal < 50, "cannot remove {}: {e}", dir.display());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (name, t) in names.iter().zip(tasks) {
        let acked = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("node finished")
            .unwrap();
        assert_eq!(acked, TOTAL, "{name}: acks stopped");
    }
    // The directory is recreated while the node's file is open (the checkpoint notices) or,
    // if the file had been closed as idle, when it is reopened: either way, said once.
    let deadline = std::time::Instant::now() + WAIT;
    while ![
        "the node's log directory was deleted; recreated it",
        "(with its directory; recreated it)",
    ]
    .iter()
    .any(|m| d.stderr().contains(m))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no recreation logged:\n{}",
            d.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(dir.join(".tracerd-state").is_file());
    let current = std::fs::read_link(dir.join("node.json")).unwrap();
    assert!(dir.join(current).is_file());
    let got = machine_seqs(&dir);
    assert!(
        !got.is_empty() && got.len() < TOTAL as usize,
        "{}",
        got.len()
    );
    let first = got[0];
    assert_eq!(
        got,
        (first..=TOTAL).collect::<Vec<_>>(),
        "objects after the deletion"
    );
    for name in ["good-a", "good-b"] {
        assert_eq!(
            machine_seqs(&d.logs().join(name)),
            (1..=TOTAL).collect::<Vec<_>>(),
            "{name}"
        );
    }
}

/// 1,000 connect/Hello/close cycles under one name leave no empty file (one of them sends an
/// object: its file stays, and `node.json` points at it), while two good nodes stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_close_cycles_leave_no_empty_files() {
    const TOTAL: u64 = 600;
    let d = Daemon::start("");
    let good: Vec<_> = ["good-a", "good-b"]
        .iter()
        .map(|n| tokio::spawn(stream(n.to_string(), d.tcp_port, TOTAL, false)))
        .collect();
    for i in 0..1000 {
        let mut n = FakeNode::handshake(connect_unix(&d.socket()).await, "churn").await;
        assert_eq!(n.name, "churn", "cycle {i}: the name was still held");
        if i == 500 {
            n.send_batch(1, 1, 0).await;
            n.wait_ack(1).await;
        }
        // A clean close, then wait for the session to release the name.
        n.framed.close().await.unwrap();
        while recv(&mut n.framed).await.is_some() {}
    }
    for (name, t) in ["good-a", "good-b"].iter().zip(good) {
        let acked = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("node finished")
            .unwrap();
        assert_eq!(acked, TOTAL, "{name}");
    }
    // The last session's writer finishes after the connection closes: wait for it.
    let dir = d.logs().join("churn");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let files: Vec<_> = tracerd::logs::dir::list_keys(&dir, "json").unwrap();
        if files.len() == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} files left",
            files.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let meta = std::fs::symlink_metadata(e.path()).unwrap();
        assert!(
            meta.file_type().is_symlink() || meta.len() > 0,
            "empty file {:?}",
            e.file_name()
        );
    }
    let current = std::fs::read_link(dir.join("node.json")).unwrap();
    assert_eq!(machine_seqs(&dir), vec![1]);
    assert!(dir.join(current).is_file());
    let n = FakeNode::handshake(connect_tcp(d.tcp_port).await, "churn").await;
    assert_eq!(n.acked, 1, "persisted_seq after the cycles");
}
