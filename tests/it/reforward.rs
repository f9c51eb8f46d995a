//! Re-forwarding (`hasForwarding`, issue 16) end to end: nodes → tracerd A → tracerd B over
//! Cardano's forwarding protocol, with namespace filters, both real binaries over real Unix
//! sockets: B's files hold exactly the matching traces, under the original node names, and
//! B serves the nodes' metrics and data points.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;
use tracerd::cardano::codec::EkgValue;
use tracerd::cardano::mux::Mode;
use tracerd::model::{
    DataPoint, DetailLevel, MachineForm, MetricValue, MetricsUpdate, Severity, TraceBatch,
    TraceObject,
};
use tracerd::native::NodeMessage;
use tracerd_sim::cardano::SimNode;

use crate::http::http_get;
use crate::support::*;

/// The namespaces objects cycle through: `seq % 4` picks one; the filter below passes the
/// first two.
const NAMESPACES: [&str; 4] = [
    "ChainDB.AddBlockEvent.AddedToCurrentChain",
    "BlockFetch.Client.CompletedBlockFetch",
    "BlockFetch.Server.SendBlock",
    "Mempool.AddedTx",
];
const FILTER: &str = "[[ChainDB], [BlockFetch, Client]]";

fn matching(seq: u64) -> bool {
    seq % 4 < 2
}

/// A node's object `seq`: a native payload, or (Cardano) a complete machine line.
fn obj(node: &str, seq: u64, form: MachineForm) -> TraceObject {
    let ns = NAMESPACES[(seq % 4) as usize];
    let data = format!("{{\"node\":\"{node}\",\"seq\":{seq}}}");
    let machine = match form {
        MachineForm::Payload => data,
        MachineForm::Line => format!(
            "{{\"at\":\"2026-07-22T10:00:00Z\",\"ns\":\"{ns}\",\"data\":{data},\"sev\":\"Info\",\"thread\":\"1\",\"host\":\"{node}-host\"}}"
        ),
    };
    TraceObject {
        namespace: ns.into(),
        severity: Severity::Info,
        detail: DetailLevel::Normal,
        timestamp_ns: 1_784_714_812_000_000_000 + seq as i64,
        hostname: format!("{node}-host").into(),
        thread_id: "1".into(),
        machine: machine.into(),
        form,
        human: None,
    }
}

fn head(dir: &Path, network: &str, prom: Option<u16>) -> String {
    let prom = prom.map_or(String::new(), |p| {
        format!("hasPrometheus: {{epHost: 127.0.0.1, epPort: {p}}}\n")
    });
    format!(
        "networkMagic: {MAGIC}\nnetwork: {network}\nekgRequestFreq: 0.1\n{prom}logging:\n  - logRoot: {}\n    logMode: FileMode\n    logFormat: ForMachine\n",
        dir.join("logs").display()
    )
}

fn accept_at(dir: &Path) -> String {
    format!(
        "{{ tag: AcceptAt, contents: \"{}\" }}",
        dir.join("c.sock").display()
    )
}

fn sock(d: &Daemon) -> PathBuf {
    d.dir.path().join("c.sock")
}

/// Connects to a Unix socket, retrying while it is not there yet.
async fn connect(path: &Path) -> UnixStream {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match UnixStream::connect(path).await {
            Ok(s) => return s,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot connect to {path:?}: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// The complete lines of the `.json` files under `dir`, oldest file first.
fn lines(dir: &Path) -> Vec<serde_json::Value> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && p.file_name().is_none_or(|n| n != "node.json")
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |i| &text[..i]);
        out.extend(
            complete
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok()),
        );
    }
    out
}

/// Waits (bounded) until `dir` holds at least `n` lines, then returns (seq, ns) of each.
async fn wait_lines(dir: &Path, n: usize) -> Vec<(u64, String)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = lines(dir);
        if found.len() >= n {
            return found
                .iter()
                .map(|v| {
                    (
                        v["data"]["seq"].as_u64().unwrap(),
                        v["ns"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "{dir:?} has {} of {n} lines",
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn expected(range: std::ops::Range<u64>) -> Vec<(u64, String)> {
    range
        .filter(|s| matching(*s))
        .map(|s| (s, NAMESPACES[(s % 4) as usize].to_string()))
        .collect()
}

/// Sends `range` from a native node, in batches of 10, and waits for A's acks.
async fn send_native(node: &mut FakeNode<UnixStream>, range: std::ops::Range<u64>) {
    let mut seq = range.start;
    while seq < range.end {
        let n = 10.min(range.end - seq);
        let objects = (seq..seq + n)
            .map(|s| obj(&node.name, s, MachineForm::Payload))
            .collect();
        node.framed
            .send(NodeMessage::Traces(TraceBatch {
                first_seq: seq,
                objects,
            }))
            .await
            .unwrap();
        seq += n;
    }
    node.wait_ack(range.end - 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_reforwards_the_matching_traces_of_each_node_under_its_own_name() {
    let b = Daemon::start_with(|dir, _| head(dir, &accept_at(dir), None), "");
    let b_sock = sock(&b);
    let a = Daemon::start_with(
        |dir, _| head(dir, &accept_at(dir), None),
        &format!(
            "hasForwarding:\n  - {{ tag: ConnectTo, contents: [\"{}\"] }}\n  - {FILTER}\n  - {{ queueSize: 10000, maxReconnectDelay: 2 }}\n",
            b_sock.display()
        ),
    );
    // A native node and a Cardano node, both into A.
    let mut relay = FakeNode::handshake(connect_unix(&a.socket()).await, "relay-1").await;
    let bp = Arc::new(SimNode::new("bp-1", MAGIC));
    let cancel = CancellationToken::new();
    let sim = {
        let (bp, c) = (bp.clone(), cancel.clone());
        let stream = connect(&sock(&a)).await;
        tokio::spawn(async move { bp.run(stream, Mode::Initiator, &c).await })
    };
    send_native(&mut relay, 1..81).await;
    bp.push((1..81).map(|s| obj("bp-1", s, MachineForm::Line)));

    // A keeps everything; B gets exactly the matching objects, in order, under each name.
    let a_relay = wait_lines(&a.logs().join("relay-1"), 80).await;
    assert_eq!(a_relay.len(), 80);
    let b_relay = wait_lines(&b.logs().join("relay-1"), 40).await;
    let b_bp = wait_lines(&b.logs().join("bp-1"), 40).await;
    // Nothing else arrives after a pause either.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(wait_lines(&b.logs().join("relay-1"), 40).await, b_relay);
    assert_eq!(b_relay, expected(1..81));
    assert_eq!(b_bp, expected(1..81));
    let mut dirs: Vec<String> = std::fs::read_dir(b.logs())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    dirs.sort();
    assert_eq!(
        dirs,
        ["bp-1", "relay-1"],
        "B files each node under its own name"
    );
    // The re-forwarded native object carries the line A wrote (host, ns, data).
    let first = &lines(&b.logs().join("relay-1"))[0];
    assert_eq!(first["host"], "relay-1-host");
    assert_eq!(first["data"]["node"], "relay-1");
    cancel.cancel();
    let _ = sim.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_downstream_never_slows_ingest_and_drops_are_counted() {
    let prom = free_port();
    let a = Daemon::start_with(
        |dir, _| head(dir, "null", Some(prom)),
        "hasForwarding:\n  - { tag: ConnectTo, contents: [\"/nonexistent/downstream.sock\"] }\n  - null\n  - { queueSize: 50 }\n",
    );
    let mut relay = FakeNode::handshake(connect_unix(&a.socket()).await, "relay-2").await;
    let started = Instant::now();
    send_native(&mut relay, 1..2001).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "ingest took {took:?}");
    assert_eq!(
        wait_lines(&a.logs().join("relay-2"), 2000).await.len(),
        2000
    );
    let (_, _, body) = http_get(prom, "/metrics", &[]);
    let dropped: f64 = body
        .lines()
        .find(|l| l.starts_with("tracerd_reforward_dropped_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no drop counter in {body}"));
    assert_eq!(dropped, 1950.0, "all but the queue's 50 newest are dropped");
    a.wait_log("re-forwarding queue full", 1);
    a.wait_log("re-forwarding: cannot reach the downstream", 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_at_serves_one_merged_stream_that_a_connect_to_downstream_pulls() {
    let a = Daemon::start_with(
        |dir, _| {
            head(dir, &accept_at(dir), None)
                + &format!(
                    "hasForwarding:\n  - {{ tag: AcceptAt, contents: \"{}\" }}\n  - {FILTER}\n  - {{ queueSize: 10000 }}\n",
                    dir.join("r.sock").display()
                )
        },
        "",
    );
    let reforward = a.dir.path().join("r.sock");
    // B dials A's re-forwarding socket, as it would dial a node.
    let b = Daemon::start_with(
        |dir, _| {
            head(
                dir,
                &format!(
                    "{{ tag: ConnectTo, contents: [\"{}\"] }}",
                    reforward.display()
                ),
                None,
            )
        },
        "",
    );
    let mut one = FakeNode::handshake(connect_unix(&a.socket()).await, "relay-a").await;
    let mut two = FakeNode::handshake(connect_unix(&a.socket()).await, "relay-b").await;
    send_native(&mut one, 1..41).await;
    send_native(&mut two, 1..41).await;
    // B files the one connection under one name (no NodeInfo: A's address, as upstream).
    let deadline = Instant::now() + Duration::from_secs(20);
    let dir = loop {
        let dirs: Vec<PathBuf> = std::fs::read_dir(b.logs())
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        if let [one] = &dirs[..] {
            if lines(one).len() >= 40 {
                break one.clone();
            }
        }
        assert!(Instant::now() < deadline, "B has {dirs:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let merged = lines(&dir);
    assert_eq!(
        merged.len(),
        40,
        "exactly the matching objects of both nodes"
    );
    for node in ["relay-a", "relay-b"] {
        let own: Vec<(u64, String)> = merged
            .iter()
            .filter(|v| v["host"] == format!("{node}-host").as_str())
            .map(|v| {
                (
                    v["data"]["seq"].as_u64().unwrap(),
                    v["ns"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            own,
            expected(1..41),
            "{node}: its objects in order, origin in host"
        );
    }
}

/// GETs `path` from `port` until the body contains every needle (bounded).
async fn wait_http(port: u16, path: &'static str, needles: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, _, body) = http_get(port, path, &[]);
            if status == 200 && needles.iter().all(|n| body.contains(n.as_str())) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{path}: {status} without {needles:?}:\n{body}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_reforwards_metrics_and_data_points_so_the_downstream_serves_them() {
    let prom = free_port();
    let b = Daemon::start_with(|dir, _| head(dir, &accept_at(dir), Some(prom)), "");
    let b_sock = sock(&b);
    let a = Daemon::start_with(
        |dir, _| head(dir, &accept_at(dir), None),
        &format!(
            "hasForwarding:\n  - {{ tag: ConnectTo, contents: [\"{}\"] }}\n  - null\n  - {{}}\n",
            b_sock.display()
        ),
    );
    // A native node sends metrics and a data point to A, which stores them.
    let mut relay = FakeNode::handshake(connect_unix(&a.socket()).await, "relay-m").await;
    relay
        .framed
        .send(NodeMessage::Metrics(MetricsUpdate {
            full: true,
            metrics: vec![
                ("Mem.resident_int".into(), MetricValue::Gauge(123_456.0)),
                ("served_counter".into(), MetricValue::Counter(24)),
            ],
        }))
        .await
        .unwrap();
    relay
        .framed
        .send(NodeMessage::DataPoints(vec![DataPoint {
            name: "NodeStartupInfo".into(),
            json: r#"{"suiEra":"Conway"}"#.into(),
        }]))
        .await
        .unwrap();
    send_native(&mut relay, 1..3).await;
    // A Cardano node whose data point A asks it for when B asks.
    let bp = Arc::new(SimNode::new("bp-m", MAGIC));
    bp.set_metric("rts.gc.num_gcs", EkgValue::Counter(7));
    bp.set_data_point("NodeStartupInfo", r#"{"suiEra":"Babbage"}"#);
    let cancel = CancellationToken::new();
    let sim = {
        let (bp, c) = (bp.clone(), cancel.clone());
        let stream = connect(&sock(&a)).await;
        tokio::spawn(async move { bp.run(stream, Mode::Initiator, &c).await })
    };
    bp.push((1..3).map(|s| obj("bp-m", s, MachineForm::Line)));

    wait_http(
        prom,
        "/metrics",
        vec![
            "Mem_resident_int{node_name=\"relay-m\"} 123456\n".into(),
            "served_counter{node_name=\"relay-m\"} 24\n".into(),
            "rts_gc_num_gcs{node_name=\"bp-m\"} 7\n".into(),
        ],
    )
    .await;
    // A metric changed at the node reaches B too (B polls deltas every 0.1 s).
    bp.set_metric("rts.gc.num_gcs", EkgValue::Counter(9));
    wait_http(
        prom,
        "/metrics",
        vec!["rts_gc_num_gcs{node_name=\"bp-m\"} 9\n".into()],
    )
    .await;
    // B's data points come from A: its store for the native node, asked live of the Cardano one.
    let body = wait_http(
        prom,
        "/api/nodes/relay-m/datapoints/NodeStartupInfo",
        vec!["Conway".into()],
    )
    .await;
    assert!(body.contains("suiEra"), "{body}");
    wait_http(
        prom,
        "/api/nodes/bp-m/datapoints/NodeStartupInfo",
        vec!["Babbage".into()],
    )
    .await;
    cancel.cancel();
    let _ = sim.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarding_loop_is_refused_and_objects_do_not_circle() {
    // A forwards to B and B forwards back to A.
    let mut a = Daemon::configure(|dir, _| head(dir, &accept_at(dir), None), "");
    let mut b = Daemon::configure(|dir, _| head(dir, &accept_at(dir), None), "");
    for (from, to) in [(&a, sock(&b)), (&b, sock(&a))] {
        let mut config = std::fs::read_to_string(from.config_path()).unwrap();
        config.push_str(&format!(
            "hasForwarding:\n  - {{ tag: ConnectTo, contents: [\"{}\"] }}\n  - null\n  - {{ maxReconnectDelay: 1 }}\n",
            to.display()
        ));
        from.write_config(&config);
    }
    a.spawn();
    b.spawn();
    let mut relay = FakeNode::handshake(connect_unix(&a.socket()).await, "relay-l").await;
    send_native(&mut relay, 1..11).await;
    // B gets the node once; its copy back to A is refused by A, which says why.
    let b_lines = wait_lines(&b.logs().join("relay-l"), 10).await;
    assert_eq!(b_lines.len(), 10);
    a.wait_log("re-forwarding loop: this tracer", 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut dirs: Vec<String> = std::fs::read_dir(a.logs())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    dirs.sort();
    assert_eq!(dirs, ["relay-l"], "A files no looped copy of the node");
    assert_eq!(wait_lines(&a.logs().join("relay-l"), 10).await.len(), 10);
    assert_eq!(wait_lines(&b.logs().join("relay-l"), 10).await.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_through_the_merged_accept_at_stream_is_refused_too() {
    // B pulls A's merged stream (AcceptAt) and forwards it back into A (ConnectTo).
    let mut a = Daemon::configure(|dir, _| head(dir, &accept_at(dir), None), "");
    let reforward = a.dir.path().join("r.sock");
    let mut config = std::fs::read_to_string(a.config_path()).unwrap();
    config.push_str(&format!(
        "hasForwarding:\n  - {{ tag: AcceptAt, contents: \"{}\" }}\n  - null\n  - {{}}\n",
        reforward.display()
    ));
    a.write_config(&config);
    a.spawn();
    let a_sock = sock(&a);
    let b = Daemon::start_with(
        |dir, _| {
            head(
                dir,
                &format!("{{ tag: ConnectTo, contents: [\"{}\"] }}", reforward.display()),
                None,
            )
        },
        &format!(
            "hasForwarding:\n  - {{ tag: ConnectTo, contents: [\"{}\"] }}\n  - null\n  - {{ maxReconnectDelay: 1 }}\n",
            a_sock.display()
        ),
    );
    let mut relay = FakeNode::handshake(connect_unix(&a.socket()).await, "relay-x").await;
    send_native(&mut relay, 1..11).await;
    a.wait_log("re-forwarding loop: this tracer", 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dirs: Vec<String> = std::fs::read_dir(a.logs())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(dirs, ["relay-x"], "A files no looped copy: {dirs:?}");
    assert_eq!(wait_lines(&a.logs().join("relay-x"), 10).await.len(), 10);
    drop(b);
}

/// hermod-tracer (crates.io 1.0.1, an independent Rust implementation of cardano-tracer's
/// acceptor) as the downstream of tracerd's ConnectTo re-forwarding. Ignored in CI (building
/// it takes minutes): `cargo test --test it reforward::hermod -- --ignored`; it uses
/// `$HERMOD_TRACER`, or installs the binary under `target/hermod` first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "builds hermod-tracer from crates.io (minutes); run by hand"]
async fn hermod_tracer_accepts_tracerds_reforwarding() {
    let bin = match std::env::var_os("HERMOD_TRACER") {
        Some(p) => PathBuf::from(p),
        None => {
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/hermod");
            let bin = root.join("bin/hermod-tracer");
            if !bin.exists() {
                let status = std::process::Command::new("cargo")
                    .args(["install", "hermod-tracer", "--version", "1.0.1", "--root"])
                    .arg(&root)
                    .status()
                    .unwrap();
                assert!(status.success(), "cargo install hermod-tracer failed");
            }
            bin
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let h_sock = dir.path().join("hermod.sock");
    let h_logs = dir.path().join("logs");
    let config = dir.path().join("hermod.yaml");
    std::fs::write(
        &config,
        format!(
            "networkMagic: {MAGIC}\nnetwork:\n  tag: AcceptAt\n  contents: \"{}\"\nlogging:\n  - logRoot: \"{}\"\n    logMode: FileMode\n    logFormat: ForMachine\n",
            h_sock.display(),
            h_logs.display()
        ),
    )
    .unwrap();
    let mut hermod = std::process::Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("hermod.log")).unwrap())
        .spawn()
        .unwrap();
    let _ = connect(&h_sock).await;
    let a = Daemon::start_with(
        |dir, _| head(dir, "null", None),
        &format!(
            "hasForwarding:\n  - {{ tag: ConnectTo, contents: [\"{}\"] }}\n  - {FILTER}\n  - {{ queueSize: 10000 }}\n",
            h_sock.display()
        ),
    );
    let mut one = FakeNode::handshake(connect_unix(&a.socket()).await, "relay-h1").await;
    let mut two = FakeNode::handshake(connect_unix(&a.socket()).await, "relay-h2").await;
    send_native(&mut one, 1..41).await;
    send_native(&mut two, 1..41).await;
    // hermod files each connection under its own directory: one per node, each holding
    // exactly that node's matching objects, in order.
    let deadline = Instant::now() + Duration::from_secs(30);
    let per_node = loop {
        let mut per_node: Vec<Vec<(u64, String)>> = Vec::new();
        for entry in std::fs::read_dir(&h_logs).into_iter().flatten().flatten() {
            let found: Vec<(u64, String)> = lines(&entry.path())
                .iter()
                .map(|v| {
                    let machine: serde_json::Value =
                        serde_json::from_str(v["to_machine"].as_str().unwrap()).unwrap();
                    let ns = v["to_namespace"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s.as_str().unwrap())
                        .collect::<Vec<_>>()
                        .join(".");
                    (machine["data"]["seq"].as_u64().unwrap(), ns)
                })
                .collect();
            per_node.push(found);
        }
        if per_node.len() == 2 && per_node.iter().all(|n| n.len() >= 20) {
            break per_node;
        }
        assert!(
            Instant::now() < deadline,
            "hermod has {per_node:?}: {}",
            std::fs::read_to_string(dir.path().join("hermod.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for node in per_node {
        assert_eq!(node, expected(1..41));
    }
    // ... named after the NodeInfo tracerd serves for each node.
    let mut names: Vec<String> = std::fs::read_dir(&h_logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["relay-h1", "relay-h2"]);
    let _ = hermod.kill();
    let _ = hermod.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_leaves_ends_its_downstream_connection_after_its_queue_is_sent() {
    let b = Daemon::start_with(|dir, _| head(dir, &accept_at(dir), None), "");
    let prom = free_port();
    let a = Daemon::start_with(
        |dir, _| head(dir, "null", Some(prom)),
        &format!(
            "hasForwarding:\n  - {{ tag: ConnectTo, contents: [\"{}\"] }}\n  - null\n  - {{ queueSize: 10000 }}\n",
            sock(&b).display()
        ),
    );
    let mut relay = FakeNode::handshake(connect_unix(&a.socket()).await, "relay-q").await;
    send_native(&mut relay, 1..201).await;
    wait_http(
        prom,
        "/metrics",
        vec!["tracerd_reforward_connections 1\n".into()],
    )
    .await;
    drop(relay);
    // Every object reaches B, then A closes the node's downstream connection.
    assert_eq!(wait_lines(&b.logs().join("relay-q"), 200).await.len(), 200);
    wait_http(
        prom,
        "/metrics",
        vec!["tracerd_reforward_connections 0\n".into()],
    )
    .await;
}
