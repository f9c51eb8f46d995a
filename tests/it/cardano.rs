//! Cardano forwarding protocol end to end: a simulated cardano-node (tracerd's own forwarder
//! implementation, `tracerd_sim::cardano`) against the real binary over Unix sockets in both
//! connection directions, and against an in-process session for what only the registry shows.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracerd::cardano::codec::EkgValue;
use tracerd::cardano::mux::Mode;
use tracerd_sim::cardano::{sample_object, SimEnd, SimError, SimNode};

use crate::support::*;

fn head(dir: &Path, network: &str) -> String {
    format!(
        "networkMagic: {MAGIC}\nnetwork: {network}\nekgRequestFreq: 0.1\nlogging:\n  - logRoot: {}\n    logMode: FileMode\n    logFormat: ForMachine\n",
        dir.join("logs").display()
    )
}

fn accept_at(d: &Daemon) -> PathBuf {
    d.dir.path().join("c.sock")
}

fn start_accept_at() -> Daemon {
    Daemon::start_with(
        |dir, _| {
            head(
                dir,
                &format!(
                    "{{ tag: AcceptAt, contents: \"{}\" }}",
                    dir.join("c.sock").display()
                ),
            )
        },
        "",
    )
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

type Running = (CancellationToken, JoinHandle<Result<SimEnd, SimError>>);

fn run_sim(node: &Arc<SimNode>, stream: UnixStream, mode: Mode) -> Running {
    let cancel = CancellationToken::new();
    let (node, c) = (node.clone(), cancel.clone());
    (
        cancel,
        tokio::spawn(async move { node.run(stream, mode, &c).await }),
    )
}

fn objects(node: &str, range: std::ops::Range<u64>) -> Vec<tracerd::model::TraceObject> {
    range
        .map(|s| sample_object(node, s, 1_784_714_812_000_000_000 + s as i64))
        .collect()
}

/// The complete lines under `dir` (no partial line of a write in progress).
fn complete_lines(dir: &Path) -> Vec<serde_json::Value> {
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
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()),
        );
    }
    out
}

/// Waits (bounded) until `dir` holds `n` complete lines; returns their `data.seq`.
async fn wait_seqs(dir: &Path, n: usize) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines = complete_lines(dir);
        if lines.len() >= n {
            return lines
                .iter()
                .map(|v| v["data"]["seq"].as_u64().unwrap())
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "{dir:?} has {} of {n} lines",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_at_traces_land_under_the_node_info_name_as_the_node_wrote_them() {
    let d = start_accept_at();
    let node = Arc::new(SimNode::new("relay-a", MAGIC));
    node.push(objects("relay-a", 0..250));
    let (cancel, task) = run_sim(&node, connect(&accept_at(&d)).await, Mode::Initiator);
    let dir = d.logs().join("relay-a");
    assert_eq!(wait_seqs(&dir, 250).await, (0..250).collect::<Vec<_>>());
    // Objects queued later are pulled by the next blocking request.
    node.push(objects("relay-a", 250..300));
    assert_eq!(wait_seqs(&dir, 300).await, (0..300).collect::<Vec<_>>());
    // The node's own machine line is written as is.
    let first = &read_node_lines(&dir)[0];
    assert_eq!(first["ns"], "Sim.Forwarded");
    assert_eq!(first["host"], "sim");
    assert_eq!(first["data"]["node"], "relay-a");
    cancel.cancel();
    assert_eq!(task.await.unwrap().unwrap(), SimEnd::Cancelled);
}

/// Shutdown still reads what a node answers to the trace requests already out: the node took
/// those objects off its queue when it answered and nothing acknowledges them, so closing
/// with the reply unread would lose them. The objects are queued only after SIGTERM, so the
/// node answers the blocking request tracerd sent before while tracerd is shutting down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_writes_the_replies_to_requests_already_sent() {
    let mut d = start_accept_at();
    let node = Arc::new(SimNode::new("relay-s", MAGIC));
    node.push(objects("relay-s", 0..10));
    let (cancel, task) = run_sim(&node, connect(&accept_at(&d)).await, Mode::Initiator);
    let dir = d.logs().join("relay-s");
    // tracerd asks again before it writes a reply, so a request is out by now.
    assert_eq!(wait_seqs(&dir, 10).await, (0..10).collect::<Vec<_>>());
    d.signal("TERM");
    node.push(objects("relay-s", 10..60));
    assert_eq!(d.wait(Duration::from_secs(20)).code(), Some(0));
    assert_eq!(node.sent(), 60, "the node answered with everything queued");
    let seqs: Vec<u64> = complete_lines(&dir)
        .iter()
        .map(|v| v["data"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (0..60).collect::<Vec<_>>(), "{}", d.stderr());
    cancel.cancel();
    let _ = task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_magic_is_refused_naming_both_magics() {
    let d = start_accept_at();
    let node = Arc::new(SimNode::new("testnet", 1));
    let (_cancel, task) = run_sim(&node, connect(&accept_at(&d)).await, Mode::Initiator);
    match task.await.unwrap().unwrap() {
        SimEnd::Refused(text) => {
            assert!(text.contains("unNetworkMagic = 764824073"), "{text}");
            assert!(text.contains("unNetworkMagic = 1}"), "{text}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    wait_for("the refusal log line", || {
        d.stderr().contains("handshake refused")
    })
    .await;
    let log = d.stderr();
    assert!(
        log.contains("node's network magic 1 does not match tracerd's networkMagic 764824073"),
        "{log}"
    );
    assert!(!d.logs().join("testnet").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_reconnects_continues_in_a_fresh_file() {
    let d = start_accept_at();
    let node = Arc::new(SimNode::new("relay-r", MAGIC));
    node.push(objects("relay-r", 0..10));
    let (cancel, task) = run_sim(&node, connect(&accept_at(&d)).await, Mode::Initiator);
    let dir = d.logs().join("relay-r");
    wait_seqs(&dir, 10).await;
    cancel.cancel();
    task.await.unwrap().unwrap();
    // cardano-node reconnects after at least 1 s; by then the old session is released.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    node.push(objects("relay-r", 10..20));
    let (cancel, task) = run_sim(&node, connect(&accept_at(&d)).await, Mode::Initiator);
    assert_eq!(wait_seqs(&dir, 20).await, (0..20).collect::<Vec<_>>());
    let files = tracerd::logs::dir::list_keys(&dir, "json").unwrap();
    assert_eq!(files.len(), 2, "a reconnect starts a fresh file");
    cancel.cancel();
    task.await.unwrap().unwrap();
}

/// The 9-byte mainnet proposal (reference E1).
const PROPOSE: [u8; 17] = [
    0, 0, 0, 0, 0x00, 0x00, 0x00, 0x09, 0x82, 0x00, 0xa1, 0x01, 0x1a, 0x2d, 0x96, 0x4a, 0x09,
];

/// Handshakes by hand, sends `garbage`, and expects tracerd to close the connection.
async fn offend(path: &Path, garbage: &[u8]) {
    let mut s = connect(path).await;
    s.write_all(&PROPOSE).await.unwrap();
    let mut accept = [0u8; 16];
    s.read_exact(&mut accept).await.unwrap();
    assert_eq!(
        &accept[4..],
        &[0x80, 0, 0, 8, 0x83, 1, 1, 0x1a, 0x2d, 0x96, 0x4a, 0x09]
    );
    s.write_all(garbage).await.unwrap();
    // tracerd's first requests arrive, then the connection ends.
    let mut sink = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut sink)).await;
    assert!(
        read.is_ok(),
        "tracerd did not close the offending connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_closes_only_that_connection_counted_by_reason() {
    let d = start_accept_at();
    let node = Arc::new(SimNode::new("relay-ok", MAGIC));
    node.push(objects("relay-ok", 0..50));
    let (cancel, task) = run_sim(&node, connect(&accept_at(&d)).await, Mode::Initiator);
    let dir = d.logs().join("relay-ok");
    wait_seqs(&dir, 50).await;
    // Malformed CBOR, the wrong mode bit, an empty SDU, an unknown mini-protocol, and a
    // well-formed reply nobody asked for.
    let cases: [(&[u8], &str); 5] = [
        (
            &[0, 0, 0, 0, 0x00, 0x02, 0x00, 0x01, 0x1c],
            "cbor_malformed",
        ),
        (
            &[0, 0, 0, 0, 0x80, 0x02, 0x00, 0x02, 0x81, 0x02],
            "sdu_wrong_mode",
        ),
        (&[0, 0, 0, 0, 0x00, 0x01, 0x00, 0x00], "sdu_empty"),
        (
            &[0, 0, 0, 0, 0x00, 0x07, 0x00, 0x01, 0x00],
            "unknown_mini_protocol",
        ),
        (
            &[0, 0, 0, 0, 0x00, 0x02, 0x00, 0x02, 0x81, 0x02],
            "message_invalid",
        ),
    ];
    for (garbage, _) in cases {
        offend(&accept_at(&d), garbage).await;
    }
    // The well-behaved node keeps streaming.
    node.push(objects("relay-ok", 50..80));
    assert_eq!(wait_seqs(&dir, 80).await, (0..80).collect::<Vec<_>>());
    let log = d.stderr();
    for (_, reason) in cases {
        assert!(
            log.contains(&format!("reason={reason}"))
                || log.contains(&format!("reason=\"{reason}\"")),
            "no {reason} in:\n{log}"
        );
    }
    cancel.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_connect_to_node_is_a_warning_per_attempt_and_is_dialled_once_it_appears() {
    let d = Daemon::start_with(
        |dir, _| {
            head(
                dir,
                &format!(
                    "{{ tag: ConnectTo, contents: [\"{}\"] }}",
                    dir.join("late.sock").display()
                ),
            )
        },
        "",
    );
    // Attempts at 0 s and 1 s fail: two warnings at default verbosity, with the reason.
    let log = d.wait_log("cannot connect to node", 2);
    let line = log
        .lines()
        .find(|l| l.contains("cannot connect to node"))
        .unwrap();
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("No such file or directory"), "{line}");
    assert!(line.contains("late.sock"), "{line}");
    // The node appears 2 s after tracerd started: the next attempt (3 s) reaches it.
    let listener = tokio::net::UnixListener::bind(d.dir.path().join("late.sock")).unwrap();
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("tracerd did not dial the node within the backoff bound")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    d.wait_log("node reachable again", 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_dials_the_node_and_redials_after_it_restarts() {
    let d = Daemon::start_with(
        |dir, _| {
            head(
                dir,
                &format!(
                    "{{ tag: ConnectTo, contents: [\"{}\"] }}",
                    dir.join("node.sock").display()
                ),
            )
        },
        "",
    );
    let path = d.dir.path().join("node.sock");
    let node = Arc::new(SimNode::new("block-producer", MAGIC));
    node.push(objects("bp", 0..40));
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let dir = d.logs().join("block-producer");
    for round in 0..2u64 {
        let (stream, _) = tokio::time::timeout(Duration::from_secs(40), listener.accept())
            .await
            .expect("tracerd did not dial the node")
            .unwrap();
        let (cancel, task) = run_sim(&node, stream, Mode::Responder);
        let want = 40 * (round as usize + 1);
        assert_eq!(
            wait_seqs(&dir, want).await,
            (0..want as u64).collect::<Vec<_>>()
        );
        // The node restarts: tracerd redials after its backoff.
        node.push(objects("bp", want as u64..want as u64 + 40));
        cancel.cancel();
        assert_eq!(task.await.unwrap().unwrap(), SimEnd::Cancelled);
    }
}

mod in_process {
    //! Sessions run in this process, so the registry can be inspected directly (the HTTP
    //! routes that expose it are another issue's).

    use super::*;
    use tracerd::config::Config;
    use tracerd::metrics::telemetry::Telemetry;
    use tracerd::model::MetricValue;
    use tracerd::node::Nodes;
    use tracerd::session::cardano as session;
    use tracerd::session::Context as Shared;

    fn setup(dir: &Path) -> (Arc<Shared>, Arc<session::Settings>) {
        let mut config = Config::default();
        config.logging[0].log_root = dir.join("logs");
        config.ekg_request_freq = 0.05;
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        config.network_magic = MAGIC;
        let shared = Arc::new(Shared::new(&config, Nodes::default(), Telemetry::new()));
        (shared, Arc::new(session::Settings::from_config(&config)))
    }

    fn serve(
        shared: &Arc<Shared>,
        settings: &Arc<session::Settings>,
        stream: UnixStream,
        n: u32,
    ) -> (
        CancellationToken,
        JoinHandle<Result<session::End, session::SessionError>>,
    ) {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(session::serve(
            stream,
            format!("unix:/test.sock@{n}"),
            Mode::Responder,
            settings.clone(),
            shared.clone(),
            cancel.clone(),
        ));
        (cancel, task)
    }

    fn metric(shared: &Shared, node: &str, name: &str) -> Option<MetricValue> {
        shared
            .nodes
            .with(node, |s| s.live.metrics().get(name).cloned())
            .flatten()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metrics_and_node_info_reach_the_registry_and_deltas_follow() {
        let dir = tempfile::tempdir().unwrap();
        let (shared, settings) = setup(dir.path());
        let node = Arc::new(SimNode::new("relay-m", MAGIC));
        node.set_metric("rts.gc.num_gcs", EkgValue::Counter(7));
        node.set_metric("Mem.resident_int", EkgValue::Gauge(123_456_789));
        node.set_metric("x_real", EkgValue::Label("1.5".into()));
        let (a, b) = UnixStream::pair().unwrap();
        let (sim_cancel, sim) = run_sim(&node, b, Mode::Initiator);
        let (cancel, task) = serve(&shared, &settings, a, 0);
        wait_for("metrics", || {
            metric(&shared, "relay-m", "rts.gc.num_gcs") == Some(MetricValue::Counter(7))
        })
        .await;
        assert_eq!(
            metric(&shared, "relay-m", "Mem.resident_int"),
            Some(MetricValue::Gauge(123_456_789.0))
        );
        assert_eq!(
            metric(&shared, "relay-m", "x_real"),
            Some(MetricValue::Label("1.5".into()))
        );
        let info = shared
            .nodes
            .with("relay-m", |s| s.live.data_point("NodeInfo"))
            .flatten()
            .unwrap();
        assert!(info.contains("\"niName\":\"relay-m\""), "{info}");
        // A change arrives with the next (delta) poll; unchanged metrics stay.
        node.set_metric("rts.gc.num_gcs", EkgValue::Counter(9));
        wait_for("the updated counter", || {
            metric(&shared, "relay-m", "rts.gc.num_gcs") == Some(MetricValue::Counter(9))
        })
        .await;
        assert_eq!(
            metric(&shared, "relay-m", "x_real"),
            Some(MetricValue::Label("1.5".into()))
        );
        assert!(!settings.full_ekg_only("relay-m"));
        cancel.cancel();
        assert_eq!(task.await.unwrap().unwrap(), session::End::Shutdown);
        sim_cancel.cancel();
        let _ = sim.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn old_forwarders_fall_back_to_full_metric_requests() {
        let dir = tempfile::tempdir().unwrap();
        let (shared, settings) = setup(dir.path());
        let node = Arc::new(SimNode::new("relay-old", MAGIC).with_legacy_ekg());
        node.set_metric("rts.gc.num_gcs", EkgValue::Counter(1));
        let (a, b) = UnixStream::pair().unwrap();
        let (_c, sim) = run_sim(&node, b, Mode::Initiator);
        let (_cancel, task) = serve(&shared, &settings, a, 0);
        assert!(matches!(sim.await.unwrap(), Err(SimError::LegacyEkg)));
        assert_eq!(task.await.unwrap().unwrap(), session::End::PeerClosed);
        assert!(settings.full_ekg_only("relay-old"));
        // The next connection polls with GetAllMetrics only and stays up.
        let (a, b) = UnixStream::pair().unwrap();
        let (sim_cancel, sim) = run_sim(&node, b, Mode::Initiator);
        let (cancel, task) = serve(&shared, &settings, a, 1);
        node.set_metric("rts.gc.num_gcs", EkgValue::Counter(2));
        tokio::time::sleep(Duration::from_millis(100)).await;
        node.set_metric("rts.gc.num_gcs", EkgValue::Counter(3));
        wait_for("full polls", || {
            metric(&shared, "relay-old", "rts.gc.num_gcs") == Some(MetricValue::Counter(3))
        })
        .await;
        cancel.cancel();
        assert_eq!(task.await.unwrap().unwrap(), session::End::Shutdown);
        sim_cancel.cancel();
        // Never LegacyEkg: the second connection only asked for everything.
        let end = sim.await.unwrap().unwrap();
        assert!(matches!(end, SimEnd::Closed | SimEnd::Cancelled), "{end:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn names_fall_back_to_the_node_id_without_node_info_or_on_collision() {
        let dir = tempfile::tempdir().unwrap();
        let (shared, mut settings) = setup(dir.path());
        Arc::get_mut(&mut settings).unwrap().name_timeout = Duration::from_millis(200);
        let anonymous = Arc::new(SimNode::anonymous(MAGIC));
        let twin = Arc::new(SimNode::new("anonymous-twin", MAGIC));
        let mut running = Vec::new();
        for (i, node) in [&twin, &twin, &anonymous].into_iter().enumerate() {
            let (a, b) = UnixStream::pair().unwrap();
            running.push(run_sim(node, b, Mode::Initiator));
            let session = serve(&shared, &settings, a, i as u32);
            let want = ["anonymous-twin", "testsock_1", "testsock_2"][i];
            wait_for(want, || {
                shared.nodes.connected().contains(&want.to_string())
            })
            .await;
            running.push((session.0, tokio::spawn(async { Ok(SimEnd::Closed) })));
        }
        assert_eq!(
            shared.nodes.connected(),
            vec!["anonymous-twin", "testsock_1", "testsock_2"]
        );
        for (c, _) in running {
            c.cancel();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_points_are_fetched_from_the_node_on_demand_over_http() {
    let prom = free_port();
    let d = Daemon::start_with(
        |dir, _| {
            head(
                dir,
                &format!(
                    "{{ tag: AcceptAt, contents: \"{}\" }}",
                    dir.join("c.sock").display()
                ),
            )
        },
        &format!("hasPrometheus: {{epHost: 127.0.0.1, epPort: {prom}}}\n"),
    );
    let node = Arc::new(SimNode::new("relay-dp", MAGIC));
    node.set_data_point(
        "NodeStartupInfo",
        r#"{"suiEra":"Conway","suiSlotLength":1}"#,
    );
    let (cancel, _task) = run_sim(&node, connect(&accept_at(&d)).await, Mode::Initiator);
    let get = |path: &'static str| {
        tokio::task::spawn_blocking(move || crate::http::http_get(prom, path, &[]))
    };
    // The node is named (its directory made, its slug served) before its session serves
    // data points, and a loaded machine may take seconds between the two: asked until the
    // first answer.
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        let (status, _, body) = get("/api/nodes/relay-dp/datapoints/NodeStartupInfo")
            .await
            .unwrap();
        if status == 200 {
            break body;
        }
        assert!(Instant::now() < deadline, "{status}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["suiEra"],
        "Conway"
    );
    // Asked live each time: a new value on the node shows at once.
    node.set_data_point("NodeStartupInfo", r#"{"suiEra":"Dijkstra"}"#);
    let (_, _, body) = get("/api/nodes/relay-dp/datapoints/NodeStartupInfo")
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["suiEra"],
        "Dijkstra"
    );
    let (status, _, _) = get("/api/nodes/relay-dp/datapoints/NoSuchPoint")
        .await
        .unwrap();
    assert_eq!(status, 404);
    let (status, _, body) = get("/api/nodes/relay-dp/datapoints/NodeInfo")
        .await
        .unwrap();
    assert_eq!(
        (
            status,
            serde_json::from_str::<serde_json::Value>(&body).unwrap()["niName"].as_str()
        ),
        (200, Some("relay-dp"))
    );
    cancel.cancel();
}

/// Issue 12, point 10 for Cardano: two nodes whose `niName`s differ but sanitise to one
/// directory name (`x y`, `x\ty` → `x_y`) are two nodes: the second, connecting after the
/// first left, gets a collision suffix and its own directory, not the first's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_sanitise_alike_stay_distinct_nodes() {
    let d = start_accept_at();
    let first = Arc::new(SimNode::new("x y", MAGIC));
    first.push(objects("x y", 0..10));
    let (cancel, task) = run_sim(&first, connect(&accept_at(&d)).await, Mode::Initiator);
    wait_seqs(&d.logs().join("x_y"), 10).await;
    cancel.cancel();
    task.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = Arc::new(SimNode::new("x\ty", MAGIC));
    second.push(objects("x\ty", 0..7));
    let (cancel, task) = run_sim(&second, connect(&accept_at(&d)).await, Mode::Initiator);
    assert_eq!(
        wait_seqs(&d.logs().join("x_y-2"), 7).await,
        (0..7).collect::<Vec<_>>()
    );
    assert_eq!(
        complete_lines(&d.logs().join("x_y")).len(),
        10,
        "the first node's directory grew"
    );
    cancel.cancel();
    task.await.unwrap().unwrap();
}
