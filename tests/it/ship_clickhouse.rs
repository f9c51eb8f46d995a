//! Traces to ClickHouse (issue 18, points 1 and 2): nodes stream numbered objects while a real
//! ClickHouse 18.16 is killed for a while and tracerd is killed -9 once; afterwards every
//! acknowledged object is in ClickHouse exactly once (`count()` = `uniqExact(seq)` = the lines
//! in the node's files, which hold every acknowledged object), and the sink reports no lag.

use std::time::{Duration, Instant};

use crate::http::http_get;
use crate::ship_support::*;
use crate::support::*;

const NODES: [&str; 3] = ["ch-relay-a", "ch-relay-b", "ch-bp"];

fn config(ch: &ClickHouse, http: u16) -> String {
    format!(
        "  clickhouse:\n\
         \x20   url: {}\n\
         \x20   tracer: site-a\n\
         \x20   batch: {{maxRows: 400, pollMs: 50, timeoutSecs: 5}}\n\
         \x20 shipStateDir: ./ship-state\n\
         hasPrometheus: {{epHost: 127.0.0.1, epPort: {http}}}\n\
         rotation: {{rpLogLimitBytes: 65536, rpKeepFilesNum: 1000, rpMaxAgeHours: 1000}}\n",
        ch.url(),
    )
}

async fn round(port: u16, batches: u64) -> Vec<u64> {
    let tasks: Vec<_> = NODES
        .iter()
        .map(|n| {
            tokio::spawn(stream_round(
                port,
                n,
                batches,
                50,
                Duration::from_millis(100),
            ))
        })
        .collect();
    let mut acked = Vec::new();
    for t in tasks {
        acked.push(t.await.unwrap());
    }
    acked
}

fn stored(ch: &ClickHouse, node: &str) -> (u64, u64, u64, u64) {
    let q = format!(
        "SELECT count(), uniqExact(visitParamExtractUInt(machine, 'seq')), \
         min(visitParamExtractUInt(machine, 'seq')), max(visitParamExtractUInt(machine, 'seq')) \
         FROM tracerd.traces WHERE tracer = 'site-a' AND node = '{node}' FORMAT TabSeparated"
    );
    let Some(body) = ch.try_query(&q) else {
        return (0, 0, 0, 0);
    };
    let v: Vec<u64> = body
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    (v[0], v[1], v[2], v[3])
}

fn wait_until(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_object_reaches_clickhouse_exactly_once_across_outage_and_kill() {
    let mut ch = ClickHouse::start();
    let http = free_port();
    let mut d = Daemon::start(&config(&ch, http));
    let port = d.tcp_port;

    // ClickHouse up: shipping keeps up.
    round(port, 6).await;
    wait_until(
        || stored(&ch, NODES[0]).0 > 0,
        "rows in ClickHouse before the outage",
    );
    // ClickHouse killed (inserts in flight die with it) while the nodes go on.
    ch.kill();
    round(port, 6).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    ch.restart();
    // While the sink catches up, tracerd is killed -9, then restarted; nodes resume.
    round(port, 3).await;
    d.wait_log("resumed from what ClickHouse holds", 2);
    d = d.crash_and_restart().await;
    let acked = round(port, 4).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, node) in NODES.iter().enumerate() {
        let lines = machine_lines(d.logs().join(node));
        assert!(
            lines >= acked[i],
            "{node}: {lines} lines on disk, {} acknowledged",
            acked[i]
        );
        loop {
            let (count, uniq, min, max) = stored(&ch, node);
            if count >= lines || Instant::now() > deadline {
                assert_eq!(
                    count, lines,
                    "{node}: rows in ClickHouse vs lines in its files"
                );
                assert_eq!(uniq, count, "{node}: a trace object was stored twice");
                assert_eq!(
                    (min, max),
                    (1, lines),
                    "{node}: a gap among the stored objects"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Nothing else: three nodes' rows, all from this tracerd.
    let total = ch.query("SELECT count() FROM tracerd.traces FORMAT TabSeparated");
    let lines: u64 = NODES.iter().map(|n| machine_lines(d.logs().join(n))).sum();
    assert_eq!(total.trim().parse::<u64>().unwrap(), lines);
    // The fields of the documented schema are filled from the machine lines.
    let row = ch.query(
        "SELECT namespace, severity, host, thread, nanos, toUnixTimestamp(time) FROM tracerd.traces \
         WHERE node = 'ch-bp' AND visitParamExtractUInt(machine, 'seq') = 7 FORMAT TabSeparated",
    );
    assert_eq!(row.trim(), "Test.Stream\tInfo\thost\t7\t7\t1784714812");
    // `human` holds the text log's line rendered from the machine line (no human text there).
    let human = ch.query(
        "SELECT human FROM tracerd.traces \
         WHERE node = 'ch-bp' AND visitParamExtractUInt(machine, 'seq') = 7 FORMAT TSVRaw",
    );
    assert_eq!(
        human.trim_end(),
        format!(
            "[2026-07-22T10:06:52.000000007Z] [Info] [host] [Test.Stream] {{\"node\":\"ch-bp\",\"seq\":7,\"pad\":\"{}\"}}",
            "x".repeat(120)
        )
    );
    let empty = ch.query("SELECT count() FROM tracerd.traces WHERE human = '' FORMAT TabSeparated");
    assert_eq!(empty.trim(), "0", "a row without its text form");
    // Caught up: the lag gauge of every node is 0, and the outage was retried, not lost.
    let (_, _, metrics) = http_get(http, "/metrics", &[]);
    for node in NODES {
        let needle = format!("tracerd_sink_lag_seconds{{node=\"{node}\",sink=\"clickhouse\"}} 0");
        assert!(metrics.contains(&needle), "{needle} not in:\n{metrics}");
    }
    assert!(!metrics.contains("tracerd_sink_lost_files_total{sink=\"clickhouse\"} 1"));
    let stderr = d.stderr();
    // The outage reached the sink, and it resynced after it and after each start.
    assert!(stderr.contains("ClickHouse request failed"), "{stderr}");
    assert!(
        stderr.matches("resumed from what ClickHouse holds").count() >= 3,
        "{stderr}"
    );
}
