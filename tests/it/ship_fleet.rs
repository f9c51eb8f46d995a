//! Many tracerds, one view (issue 18, point 5): two tracerd instances, each with its own
//! nodes, ship into one ClickHouse and one VictoriaMetrics; a query per node name returns the
//! nodes of both, told apart by the `tracer` column and external label.

use std::time::{Duration, Instant};

use crate::ship_remote_write::{enc, Receiver};
use crate::ship_support::*;
use crate::support::*;

fn config(ch: &ClickHouse, vm: &Receiver, site: &str) -> String {
    format!(
        "  clickhouse: {{url: {}, tracer: {site}, batch: {{pollMs: 50}}}}\n\
         \x20 shipStateDir: ./ship-state\n\
         \x20 remoteWrite:\n\
         \x20   - url: http://127.0.0.1:{}/api/v1/write\n\
         \x20     externalLabels: {{tracer: {site}}}\n\
         \x20     intervalSecs: 0.2\n",
        ch.url(),
        vm.port
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_tracerds_ship_into_one_clickhouse_and_one_victoriametrics() {
    let ch = ClickHouse::start();
    let vm = Receiver::victoria_metrics();
    let a = Daemon::start(&config(&ch, &vm, "site-a"));
    let b = Daemon::start(&config(&ch, &vm, "site-b"));
    // The same node name at both sites, and one node per site.
    let mut acked = Vec::new();
    for (d, node) in [(&a, "relay"), (&b, "relay"), (&a, "bp-a"), (&b, "bp-b")] {
        acked.push(stream_round(d.tcp_port, node, 3, 20, Duration::ZERO).await);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = ch
            .try_query(
                "SELECT tracer, node, count() FROM tracerd.traces GROUP BY tracer, node \
                 ORDER BY tracer, node FORMAT TabSeparated",
            )
            .unwrap_or_default();
        let series = vm.get(&format!(
            "/api/v1/series?match[]={}",
            enc("tracerd_trace_objects_received_total{node_name=\"relay\"}")
        ));
        let v: serde_json::Value = serde_json::from_str(&series).unwrap();
        let mut tracers: Vec<String> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["tracer"].as_str().unwrap_or_default().to_string())
            .collect();
        tracers.sort();
        let want = "site-a\tbp-a\t60\nsite-a\trelay\t60\nsite-b\tbp-b\t60\nsite-b\trelay\t60\n";
        if rows == want && tracers == ["site-a", "site-b"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ClickHouse:\n{rows}\nVictoriaMetrics tracers of relay: {tracers:?} (acked {acked:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
