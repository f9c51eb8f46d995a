//! Native downstreams (`tracerd.forward`, issue 16 point 3): node → tracerd A → tracerd B over
//! the native protocol, forwarded from A's files. A is killed with SIGKILL twice and B is
//! stopped for a while mid-stream; every object acknowledged to the node ends up in B's files
//! exactly once, in order, as the very line A wrote.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tracerd::model::TraceBatch;
use tracerd::native::{ForwarderCodec, NodeMessage, TracerMessage};

use crate::support::*;

/// One node streaming `total` objects of namespace `ns_of(seq)` to `port`, reconnecting after
/// every crash and resending from `HelloAccept.persisted_seq + 1`; returns what was acked.
pub(crate) async fn stream(
    name: String,
    port: u16,
    total: u64,
    ns_of: fn(u64) -> &'static str,
) -> u64 {
    stream_at(name, port, total, ns_of, 20).await
}

/// `stream`, sending at most `per_tick` objects every 10 ms.
pub(crate) async fn stream_at(
    name: String,
    port: u16,
    total: u64,
    ns_of: fn(u64) -> &'static str,
    per_tick: u64,
) -> u64 {
    let mut acked = 0u64;
    for _attempt in 0..3000 {
        if acked == total {
            break;
        }
        let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let mut f = tokio_util::codec::Framed::new(s, ForwarderCodec::new(1 << 20));
        if f.send(hello(&name)).await.is_err() {
            continue;
        }
        let persisted = match tokio::time::timeout(Duration::from_secs(10), f.next()).await {
            Ok(Some(Ok(TracerMessage::Accept { persisted_seq, .. }))) => persisted_seq,
            _ => continue,
        };
        assert!(
            persisted >= acked,
            "{name}: acknowledged {acked}, A recovered {persisted}"
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
                _ = tokio::time::sleep(Duration::from_millis(10)), if next <= total => {
                    let n = per_tick.min(total + 1 - next);
                    let objects = (next..next + n)
                        .map(|s| {
                            let mut o = object(&name, s, 60);
                            o.namespace = ns_of(s).to_string().into();
                            o
                        })
                        .collect();
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

/// A's config: machine files with small rotation, the given downstreams, cursors in `state`.
pub(crate) fn middle(downstreams: &str, extra: &str) -> Daemon {
    middle_with(
        "{ rpLogLimitBytes: 65536, rpKeepFilesNum: 10000, rpMaxAgeHours: 24 }",
        downstreams,
        extra,
    )
}

/// `middle` with the given `rotation` section.
pub(crate) fn middle_with(rotation: &str, downstreams: &str, extra: &str) -> Daemon {
    Daemon::start_with(
        |dir, _| {
            format!(
                "logging:\n  - {{ logRoot: {}, logMode: FileMode, logFormat: ForMachine }}\nrotation: {rotation}\n{extra}",
                dir.join("logs").display()
            )
        },
        &format!("  shipStateDir: state\n  forward:\n{downstreams}"),
    )
}

pub(crate) fn downstream(name: &str, port: u16, namespaces: &[&str]) -> String {
    format!(
        "    - name: {name}\n      address: \"127.0.0.1:{port}\"\n      pollMs: 20\n      namespaces: {namespaces:?}\n"
    )
}

/// Every line of a node's files, as JSON values, in file order (empty if there is none yet).
pub(crate) fn lines(dir: &Path) -> Vec<serde_json::Value> {
    if !dir.exists() {
        return Vec::new();
    }
    read_node_lines(dir)
}

/// Waits (bounded by [`WAIT`]) until `dir` holds `n` complete lines; returns them
/// (fewer at the deadline). The downstream may be writing the directory meanwhile: a line it
/// has not finished is not one yet.
pub(crate) async fn wait_lines(dir: PathBuf, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let d = dir.clone();
        let got = tokio::task::spawn_blocking(move || read_complete_node_lines(&d))
            .await
            .unwrap();
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn seq_of(v: &serde_json::Value) -> u64 {
    v["data"]["seq"].as_u64().unwrap()
}

pub(crate) async fn restart(mut d: Daemon) -> Daemon {
    tokio::task::spawn_blocking(move || {
        d.spawn();
        d
    })
    .await
    .unwrap()
}

pub(crate) async fn kill9(mut d: Daemon) -> Daemon {
    d.signal("KILL");
    d.wait(Duration::from_secs(10));
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_to_b_exactly_once_through_two_sigkills_of_a_and_an_outage_of_b() {
    const OBJECTS: u64 = 4000;
    let b = Daemon::start("");
    let mut a = middle(&downstream("central", b.tcp_port, &[]), "");
    let nodes: Vec<String> = (0..2).map(|i| format!("relay-{i}")).collect();
    let tasks: Vec<_> = nodes
        .iter()
        .map(|n| tokio::spawn(stream(n.clone(), a.tcp_port, OBJECTS, |_| "Test.Stream")))
        .collect();
    tokio::time::sleep(Duration::from_millis(600)).await;
    a = restart(kill9(a).await).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    // B goes away for a while; A keeps taking the nodes' objects.
    let mut b = b;
    b.signal("TERM");
    b.wait(Duration::from_secs(20));
    tokio::time::sleep(Duration::from_millis(700)).await;
    a = restart(kill9(a).await).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let b = restart(b).await;
    for (n, t) in nodes.iter().zip(tasks) {
        let acked = tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("node finished")
            .unwrap();
        assert_eq!(acked, OBJECTS, "{n}: A did not acknowledge everything");
    }
    for n in &nodes {
        let got = wait_lines(b.logs().join(n), OBJECTS as usize).await;
        let seqs: Vec<u64> = got.iter().map(seq_of).collect();
        let want: Vec<u64> = (1..=OBJECTS).collect();
        if seqs != want {
            let dups = seqs.len() - {
                let mut s = seqs.clone();
                s.sort();
                s.dedup();
                s.len()
            };
            panic!(
                "{n}: B holds {} lines ({dups} duplicates), first differences: {:?}",
                seqs.len(),
                seqs.iter()
                    .zip(&want)
                    .enumerate()
                    .filter(|(_, (g, w))| g != w)
                    .take(5)
                    .collect::<Vec<_>>()
            );
        }
        // The very lines A wrote (time, namespace, data, severity, thread, host).
        let mine = lines(&a.logs().join(n));
        assert_eq!(mine.len(), OBJECTS as usize, "{n}: A's files");
        assert_eq!(got, mine, "{n}: B's lines differ from A's");
    }
    assert!(
        a.stderr()
            .contains("forwarding the node's lines to the native downstream"),
        "{}",
        a.stderr()
    );
    drop(b);
}

#[test]
fn bad_downstreams_are_refused_with_their_key_paths() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!(
            "networkMagic: {MAGIC}\nnetwork: null\nlogging: [{{logRoot: {}, logMode: FileMode, logFormat: ForHuman}}]\n\
             tracerd:\n  native:\n    acceptAt: [\"127.0.0.1:3999\"]\n  forward:\n\
             \x20   - {{name: central, address: \"127.0.0.1:3999\"}}\n\
             \x20   - {{name: central, address: \"127.0.0.1:4000\", batchObjects: 0}}\n\
             \x20   - {{name: \"../x\", address: \"127.0.0.1:4001\"}}\n",
            dir.path().join("logs").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tracerd"))
        .arg("-c")
        .arg(&config)
        .arg("validate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "tracerd.forward[0].address",
        "would loop",
        "tracerd.forward[1].name",
        "names two downstreams",
        "tracerd.forward[1].batchObjects",
        "tracerd.forward[2].name",
        "logFormat ForMachine",
    ] {
        assert!(err.contains(needle), "{needle:?} missing in:\n{err}");
    }
}

/// Polls `path` on `port` (bounded) until `ok` holds for its body; panics with it otherwise.
async fn wait_body(port: u16, path: &'static str, what: &str, ok: fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _, body) =
            tokio::task::spawn_blocking(move || crate::http::http_get(port, path, &[]))
                .await
                .unwrap();
        if status == 200 && ok(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path}: {status}, not {what}:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_data_points_reach_the_native_downstream_under_the_node_name() {
    use tracerd::model::{DataPoint, MetricValue, MetricsUpdate};
    let prom = free_port();
    let b = Daemon::start(&format!(
        "hasPrometheus: {{ epHost: 127.0.0.1, epPort: {prom} }}\n"
    ));
    let a = middle(&downstream("central", b.tcp_port, &[]), "");
    let mut relay = FakeNode::handshake(connect_tcp(a.tcp_port).await, "relay-m").await;
    let send = |full, metrics: Vec<(&str, MetricValue)>| {
        NodeMessage::Metrics(MetricsUpdate {
            full,
            metrics: metrics
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect(),
        })
    };
    relay
        .framed
        .send(send(
            true,
            vec![
                ("Mem.resident_int", MetricValue::Gauge(123_456.0)),
                ("served_counter", MetricValue::Counter(24)),
                ("cardano.node.era", MetricValue::Label("Conway".into())),
            ],
        ))
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
    // Its traces give it a directory at A, which A forwards from.
    relay.send_batch(1, 5, 60).await;
    relay.wait_ack(5).await;
    wait_body(prom, "/metrics", "the node's metrics", |b| {
        b.contains("Mem_resident_int{node_name=\"relay-m\"} 123456\n")
            && b.contains("served_counter{node_name=\"relay-m\"} 24\n")
    })
    .await;
    let body = wait_body(
        prom,
        "/api/nodes/relay-m/datapoints/NodeStartupInfo",
        "the data point",
        |b| b.contains("Conway"),
    )
    .await;
    assert!(body.contains("suiEra"), "{body}");
    // A changed value follows; a metric the node's next full snapshot leaves out goes.
    relay
        .framed
        .send(send(
            false,
            vec![("served_counter", MetricValue::Counter(25))],
        ))
        .await
        .unwrap();
    wait_body(prom, "/metrics", "the new value", |b| {
        b.contains("served_counter{node_name=\"relay-m\"} 25\n")
    })
    .await;
    relay
        .framed
        .send(send(
            true,
            vec![("served_counter", MetricValue::Counter(26))],
        ))
        .await
        .unwrap();
    wait_body(
        prom,
        "/metrics",
        "the snapshot without Mem.resident_int",
        |b| {
            b.contains("served_counter{node_name=\"relay-m\"} 26\n")
                && !b.contains("Mem_resident_int{node_name=\"relay-m\"}")
        },
    )
    .await;
    // B's traces for the node are A's lines, as before.
    let got = wait_lines(b.logs().join("relay-m"), 5).await;
    assert_eq!(got, lines(&a.logs().join("relay-m")));
    // The node leaves A: its metrics leave B too.
    drop(relay);
    wait_body(prom, "/metrics", "without the node's metrics", |b| {
        !b.contains("served_counter{node_name=\"relay-m\"}")
    })
    .await;
}
