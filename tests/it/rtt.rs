//! Round-trip times per node, both protocols, over TCP with real delay, two ways: the netem
//! test re-runs itself (`inner_rtt_under_netem`) in a network namespace of its own whose
//! loopback delays every packet by 20 ms (`tc qdisc add dev lo root netem delay 20ms`), so a
//! round trip takes 40 ms, with tracerd, a native node and a simulated Cardano node all in
//! there (skipped with a notice where namespaces or netem are not available: a kernel without
//! `sch_netem`); the proxy test puts a relay between the nodes and tracerd that holds every
//! chunk 20 ms in each direction, which runs everywhere.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio_util::sync::CancellationToken;
use tracerd::cardano::mux::Mode;
use tracerd::native::{NodeMessage, TracerMessage};
use tracerd_sim::cardano::SimNode;

use crate::http::http_get;
use crate::support::*;

/// Set for the inner run: the delay its namespace's loopback adds, in milliseconds.
const NETNS_ENV: &str = "TRACERD_TEST_NETEM_DELAY_MS";
const DELAY_MS: u64 = 20;

#[test]
fn rtt_histograms_of_a_native_and_a_cardano_node_show_the_network_delay() {
    if Command::new("tc").arg("-V").output().is_err() {
        panic!("`tc` is missing: apt-get install -y iproute2");
    }
    // Creating a network namespace needs CAP_SYS_ADMIN (root, or an unprivileged user
    // namespace): where it is not allowed the test cannot run, and says so.
    let probe = Command::new("unshare")
        .args(["-n", "sh", "-c"])
        .arg(format!("tc qdisc add dev lo root netem delay {DELAY_MS}ms"))
        .output();
    if !matches!(&probe, Ok(o) if o.status.success()) {
        eprintln!(
            "NOTICE: skipping the netem RTT test: cannot create a network namespace with a \
             netem qdisc here (`unshare -n tc qdisc add dev lo root netem ...`: {probe:?}); it \
             needs root or CAP_SYS_ADMIN and a kernel with sch_netem. \
             rtt::rtt_through_a_delaying_relay covers the same ground."
        );
        return;
    }
    run_ignored_in_netns(
        "rtt::inner_rtt_under_netem",
        &format!("ip link set lo up && tc qdisc add dev lo root netem delay {DELAY_MS}ms"),
        &[(NETNS_ENV, DELAY_MS.to_string())],
    );
}

/// The bucket counts of `name`'s histogram for `node`, as `(le, cumulative count)`.
fn buckets(exposition: &str, name: &str, node: &str) -> Vec<(f64, u64)> {
    let prefix = format!("{name}_bucket{{node_name=\"{node}\",le=\"");
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            let (le, count) = rest.split_once("\"} ").unwrap();
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (le, count.trim().parse().unwrap())
        })
        .collect()
}

/// Samples of `buckets` in `(lo, hi]`.
fn between(buckets: &[(f64, u64)], lo: f64, hi: f64) -> u64 {
    let at = |le: f64| {
        buckets
            .iter()
            .find(|(b, _)| (*b - le).abs() < 1e-9)
            .unwrap_or_else(|| panic!("no bucket le={le} in {buckets:?}"))
            .1
    };
    at(hi) - at(lo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by rtt_histograms_of_a_native_and_a_cardano_node_show_the_network_delay inside its network namespace"]
async fn inner_rtt_under_netem() {
    let delay: u64 = std::env::var(NETNS_ENV)
        .expect("run inside the namespace that rtt_histograms_... creates")
        .parse()
        .unwrap();
    scenario(Duration::from_millis(delay), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtt_through_a_delaying_relay() {
    scenario(Duration::from_millis(DELAY_MS), true).await;
}

/// The most any chunk was written after its due time, in µs, over every relay of a test: on a
/// loaded machine the relay's timers fire late, and that lateness is part of the path's
/// delay tracerd measures (netem's delay, in the kernel, has none).
type Lateness = Arc<std::sync::atomic::AtomicU64>;

/// Relays TCP connections accepted on a fresh port to `target`, holding every chunk `delay`
/// in each direction (order kept), recording in `late` how late it wrote. Returns the port.
async fn delaying_relay(target: u16, delay: Duration, late: Lateness) -> u16 {
    // On a thread and runtime of its own: the relay is the network, and the test's tasks
    // (its blocking HTTP polls among them) must not delay its chunks.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
                .await
                .unwrap();
            let _ = tx.send(listener.local_addr().unwrap().port());
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                client.set_nodelay(true).unwrap();
                server.set_nodelay(true).unwrap();
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(hold(cr, sw, delay, late.clone()));
                tokio::spawn(hold(sr, cw, delay, late.clone()));
            }
        });
    });
    rx.await.unwrap()
}

async fn hold(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    late: Lateness,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            let us = tokio::time::Instant::now().saturating_duration_since(due);
            late.fetch_max(us.as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        if tx
            .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
            .is_err()
        {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// A native node and a simulated Cardano node over TCP, 40 ms apart from tracerd (each way
/// `delay`, by netem or through `delaying_relay`).
async fn scenario(delay: Duration, relay: bool) {
    let delay = delay.as_millis() as u64;
    let http = free_port();
    let cardano = free_port();
    let history = free_port();
    // The first line continues the `tracerd:` section the support code writes.
    let d = Daemon::start(&format!(
        "  history: {{sampleIntervalSecs: 1}}\n\
         hasTimeseries: {{epHost: 127.0.0.1, epPort: {history}}}\n\
         hasPrometheus: {{epHost: 127.0.0.1, epPort: {http}}}\n\
         network: {{tag: AcceptAt, contents: \"127.0.0.1:{cardano}\"}}\n\
         ekgRequestFreq: 0.2\n"
    ));

    // A native node answering tracerd's Pings.
    let late = Lateness::default();
    let (native_port, cardano_port) = if relay {
        let hold = Duration::from_millis(delay);
        (
            delaying_relay(d.tcp_port, hold, late.clone()).await,
            delaying_relay(cardano, hold, late.clone()).await,
        )
    } else {
        (d.tcp_port, cardano)
    };
    let mut native = FakeNode::handshake(connect_tcp(native_port).await, "native-a").await;
    let native_task = tokio::spawn(async move {
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            match tokio::time::timeout(Duration::from_millis(200), recv(&mut native.framed)).await {
                Ok(Some(TracerMessage::Ping(n))) => {
                    native.framed.send(NodeMessage::Pong(n)).await.unwrap()
                }
                Ok(Some(_)) | Err(_) => {}
                Ok(None) => panic!("tracerd closed the native session"),
            }
        }
        native
    });

    // A simulated Cardano node over TCP, polled for metrics every 0.2 s.
    let sim = Arc::new(SimNode::new("cardano-a", MAGIC));
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", cardano_port))
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let sim_task = {
        let (sim, cancel) = (sim.clone(), cancel.clone());
        tokio::spawn(async move { sim.run(stream, Mode::Initiator, &cancel).await })
    };

    // Enough samples: the native session's first Ping, a few EKG polls.
    let expected = 2.0 * delay as f64 / 1e3;
    let deadline = Instant::now() + Duration::from_secs(20);
    let (nodes, metrics) = loop {
        let (_, _, body) = tokio::task::spawn_blocking(move || http_get(http, "/api/nodes", &[]))
            .await
            .unwrap();
        let nodes: serde_json::Value = serde_json::from_str(&body).unwrap();
        let samples = |name: &str| {
            nodes
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["name"] == name)
                .and_then(|n| n["rtt"]["samples"].as_u64())
                .unwrap_or(0)
        };
        if samples("native-a") >= 1 && samples("cardano-a") >= 8 {
            let (_, _, metrics) = tokio::task::spawn_blocking(move || {
                http_get(http, "/metrics", &[("Accept", "text/plain")])
            })
            .await
            .unwrap();
            break (nodes, metrics);
        }
        assert!(Instant::now() < deadline, "too few RTT samples: {nodes}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // A round trip crosses the relay twice: what its late timers added is the path's, not
    // tracerd's (0 under netem).
    let allowance = 2.0 * late.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6;
    // The histogram bucket that holds 75 ms plus that.
    let hi = *tracerd::metrics::node_series::RTT_BUCKETS
        .iter()
        .find(|b| **b >= 0.075 + allowance - 1e-9)
        .unwrap();
    for name in ["native-a", "cardano-a"] {
        let node = nodes
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap();
        let rtt = &node["rtt"];
        let get = |key: &str| rtt[key].as_f64().unwrap();
        // Never below the path's 40 ms; the median near it (a loaded 2-core machine adds
        // scheduling delay to single samples, so those are bounded loosely), both beyond
        // what the relay's late writes added to the path.
        for key in ["latestSeconds", "p50Seconds", "p99Seconds"] {
            let v = get(key);
            assert!(
                v >= expected * 0.95 && v < expected + 0.25 + allowance,
                "{name} {key} = {v}, expected about {expected} (+ {allowance} s the relay \
                 was late): {node}"
            );
        }
        let p50 = get("p50Seconds");
        assert!(
            p50 < expected + 0.025 + allowance,
            "{name} p50 = {p50}, expected about {expected} (+ {allowance} s the relay was \
             late): {node}"
        );
        let b = buckets(&metrics, "tracerd_node_rtt_seconds", name);
        let count = b.last().unwrap().1;
        assert!(count >= 1, "{name}: {b:?}");
        // No sample below the path's delay; most of them in (25 ms, 75 ms] (plus what the
        // relay was late, to the next bucket).
        assert_eq!(between(&b, 0.0001, 0.025), 0, "{name}: {b:?}");
        assert_eq!(b[0].1, 0, "{name}: {b:?}");
        assert!(
            between(&b, 0.025, hi) * 2 >= count,
            "{name}: most samples near 40 ms (up to {hi} s; the relay was late by up to \
             {allowance} s a round trip): {b:?}"
        );
        assert!(
            metrics.contains(&format!(
                "tracerd_node_rtt_seconds_count{{node_name=\"{name}\"}}"
            )),
            "{metrics}"
        );
    }
    // The histogram is in the metric history too, as a scrape would store it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, body) = http_get(
            history,
            "/api/v1/query?query=sum%20by%20(node_name)%20(tracerd_node_rtt_seconds_count)",
            &[],
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
        if result.len() == 2 {
            for r in &result {
                let n: f64 = r["value"][1].as_str().unwrap().parse().unwrap();
                assert!(n >= 1.0, "{body}");
            }
            break;
        }
        assert!(Instant::now() < deadline, "RTT not in the history: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cancel.cancel();
    let _ = sim_task.await;
    drop(native_task.await.unwrap());
}
