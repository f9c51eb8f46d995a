//! Native downstreams side by side (issue 16, point 3): two downstreams with different
//! namespace filters each keep their own position — one stopped while the other keeps up —
//! and the lag gauges per downstream and node rise while a downstream is away and return to 0
//! once it caught up. A downstream that stays away past retention gets what the files still
//! hold, and the objects retention removed before they were sent are counted and logged once.

use std::time::{Duration, Instant};

use crate::http::http_get;
use crate::reforward_native::{
    downstream, lines, middle, middle_with, restart, stream, stream_at, wait_lines,
};
use crate::support::*;

/// The value of `name{downstream="d",node="n"}` in A's `/metrics` (`None`: no such series).
fn gauge(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let (set, value) = rest.strip_prefix('{')?.split_once("} ")?;
        labels
            .iter()
            .all(|(k, v)| set.split(',').any(|p| p == format!("{k}=\"{v}\"")))
            .then(|| value.trim().parse().ok())?
    })
}

/// The sizes of a node directory's `node-*.json` files, oldest first.
fn file_sizes(dir: &std::path::Path) -> Vec<u64> {
    let mut keys = tracerd::logs::dir::list_keys(dir, "json").unwrap_or_default();
    keys.sort();
    keys.iter()
        .filter_map(|k| std::fs::metadata(dir.join(k.file_name("json"))).ok())
        .map(|m| m.len())
        .collect()
}

fn scrape(port: u16) -> String {
    http_get(port, "/metrics", &[]).2
}

/// Polls A's `/metrics` (bounded by [`WAIT`]) until `ok` holds; returns the last
/// text either way.
async fn until(port: u16, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = tokio::task::spawn_blocking(move || scrape(port))
            .await
            .unwrap();
        if ok(&text) || Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const LAG: [&str; 3] = [
    "tracerd_native_forward_lag_objects",
    "tracerd_native_forward_lag_seconds",
    "tracerd_native_forward_lag_bytes",
];

fn prom(port: u16) -> String {
    format!("hasPrometheus: {{ epHost: 127.0.0.1, epPort: {port} }}\n")
}

fn ns_of(seq: u64) -> &'static str {
    if seq % 3 == 0 {
        "Beta.Stream"
    } else {
        "Alpha.Stream"
    }
}

fn with_prefix(all: &[serde_json::Value], prefix: &str) -> Vec<serde_json::Value> {
    all.iter()
        .filter(|v| v["ns"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_downstreams_with_their_own_filters_and_positions_and_lag() {
    const OBJECTS: u64 = 1500;
    let alpha = Daemon::start("");
    let mut beta = Daemon::start("");
    let port = free_port();
    let a = middle(
        &format!(
            "{}{}",
            downstream("alpha", alpha.tcp_port, &["Alpha."]),
            downstream("beta", beta.tcp_port, &["Beta."])
        ),
        &prom(port),
    );
    // `beta` goes away before the nodes start; `alpha` keeps up with them.
    beta.signal("TERM");
    beta.wait(Duration::from_secs(20));
    let nodes: Vec<String> = (0..2).map(|i| format!("relay-{i}")).collect();
    let tasks: Vec<_> = nodes
        .iter()
        .map(|n| tokio::spawn(stream(n.clone(), a.tcp_port, OBJECTS, ns_of)))
        .collect();
    for (n, t) in nodes.iter().zip(tasks) {
        let acked = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("node finished")
            .unwrap();
        assert_eq!(acked, OBJECTS, "{n}: A did not acknowledge everything");
    }
    let alpha_count = (1..=OBJECTS)
        .filter(|s| ns_of(*s).starts_with("Alpha."))
        .count();
    for n in &nodes {
        let got = wait_lines(alpha.logs().join(n), alpha_count).await;
        let mine = with_prefix(&lines(&a.logs().join(n)), "Alpha.");
        assert_eq!(mine.len(), alpha_count, "{n}: A's Alpha lines");
        assert_eq!(
            got, mine,
            "{n}: alpha holds other lines than A's Alpha lines"
        );
    }
    // alpha has caught up: its lag is 0; beta's lag is up for both nodes.
    let text = until(port, |t| {
        nodes.iter().all(|n| {
            LAG.iter()
                .all(|m| gauge(t, m, &[("downstream", "alpha"), ("node", n)]) == Some(0.0))
                && gauge(t, LAG[0], &[("downstream", "beta"), ("node", n)]).is_some_and(|v| v > 0.0)
                && gauge(t, LAG[1], &[("downstream", "beta"), ("node", n)]).is_some_and(|v| v > 0.0)
        })
    })
    .await;
    let beta_count = OBJECTS as usize - alpha_count;
    for n in &nodes {
        let l = [("downstream", "alpha"), ("node", n.as_str())];
        for m in LAG {
            assert_eq!(gauge(&text, m, &l), Some(0.0), "{m} {l:?}:\n{text}");
        }
        let l = [("downstream", "beta"), ("node", n.as_str())];
        let objects = gauge(&text, LAG[0], &l).unwrap_or(0.0);
        // The estimate from the mean line length, within a factor of 2 of the truth.
        assert!(
            objects >= beta_count as f64 / 2.0 && objects <= beta_count as f64 * 2.0,
            "{l:?}: lag_objects {objects}, {beta_count} Beta objects unsent:\n{text}"
        );
        assert!(
            gauge(&text, LAG[1], &l).unwrap_or(0.0) > 0.0,
            "{l:?}:\n{text}"
        );
        assert!(
            gauge(&text, LAG[2], &l).unwrap_or(0.0) > 0.0,
            "{l:?}:\n{text}"
        );
        assert_eq!(
            gauge(&text, "tracerd_native_forward_connected", &l),
            Some(0.0)
        );
    }
    // The seconds of lag keep rising while beta is away.
    let before = gauge(
        &text,
        LAG[1],
        &[("downstream", "beta"), ("node", "relay-0")],
    )
    .unwrap();
    let later = until(port, |t| {
        gauge(t, LAG[1], &[("downstream", "beta"), ("node", "relay-0")])
            .is_some_and(|v| v >= before + 0.5)
    })
    .await;
    let after = gauge(
        &later,
        LAG[1],
        &[("downstream", "beta"), ("node", "relay-0")],
    );
    assert!(
        after.is_some_and(|v| v >= before + 0.5),
        "{before} then {after:?}"
    );

    // beta returns: it gets exactly the Beta lines, from where it was, and its lag returns to 0.
    let beta = restart(beta).await;
    for n in &nodes {
        let got = wait_lines(beta.logs().join(n), beta_count).await;
        let mine = with_prefix(&lines(&a.logs().join(n)), "Beta.");
        assert_eq!(mine.len(), beta_count, "{n}: A's Beta lines");
        assert_eq!(got, mine, "{n}: beta holds other lines than A's Beta lines");
    }
    let text = until(port, |t| {
        nodes.iter().all(|n| {
            LAG.iter()
                .all(|m| gauge(t, m, &[("downstream", "beta"), ("node", n)]) == Some(0.0))
        })
    })
    .await;
    for n in &nodes {
        for d in ["alpha", "beta"] {
            let l = [("downstream", d), ("node", n.as_str())];
            for m in LAG {
                assert_eq!(gauge(&text, m, &l), Some(0.0), "{m} {l:?}:\n{text}");
            }
            assert_eq!(
                gauge(&text, "tracerd_native_forward_connected", &l),
                Some(1.0)
            );
        }
    }
    // Each downstream only ever got its own objects (nothing sent twice but resends).
    let acked = |d: &str| {
        gauge(
            &text,
            "tracerd_native_forward_objects_acked_total",
            &[("downstream", d)],
        )
    };
    assert_eq!(acked("alpha"), Some((alpha_count * nodes.len()) as f64));
    assert_eq!(acked("beta"), Some((beta_count * nodes.len()) as f64));
    drop((alpha, beta));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_away_past_retention_gets_what_is_left_and_the_loss_is_counted() {
    const OBJECTS: u64 = 800;
    // Configured, not started: nothing listens at its port until the files were pruned.
    let mut late = Daemon::configure(|_, _| String::new(), "");
    let port = free_port();
    let a = middle_with(
        "{ rpLogLimitBytes: 20000, rpKeepFilesNum: 1, rpMaxAgeMinutes: 0, rpFrequencySecs: 1 }",
        &downstream("late", late.tcp_port, &[]),
        &prom(port),
    );
    let node = "relay-0".to_string();
    // The node's first object, then a wait until A's forwarding found the node's directory (it
    // looks every second; its lag gauges appear once it listed the files) before retention
    // starts deleting them.
    assert_eq!(
        stream(node.clone(), a.tcp_port, 1, |_| "Test.Stream").await,
        1
    );
    let text = until(port, |t| {
        gauge(t, LAG[0], &[("downstream", "late"), ("node", "relay-0")]).is_some()
    })
    .await;
    assert!(
        gauge(
            &text,
            LAG[0],
            &[("downstream", "late"), ("node", "relay-0")]
        )
        .is_some(),
        "A's forwarding to `late` did not find relay-0:\n{text}"
    );
    let acked = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::spawn(stream_at(
            node.clone(),
            a.tcp_port,
            OBJECTS,
            |_| "Test.Stream",
            4,
        )),
    )
    .await
    .expect("node finished")
    .unwrap();
    assert_eq!(acked, OBJECTS);
    // A's files no longer change once retention is done with them: the current file under
    // the rotation limit (no rotation due) and one file before it (rpKeepFilesNum 1).
    let dir = a.logs().join(&node);
    let deadline = Instant::now() + WAIT;
    loop {
        let sizes = file_sizes(&dir);
        if sizes.len() <= 2 && sizes.last().is_some_and(|s| *s < 20_000) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retention did not settle A's files: {sizes:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kept = lines(&dir);
    assert!(
        !kept.is_empty() && kept.len() < OBJECTS as usize / 2,
        "retention kept {} of {OBJECTS} lines",
        kept.len()
    );
    let lost = OBJECTS as usize - kept.len();
    let late = tokio::task::spawn_blocking(move || {
        late.spawn();
        late
    })
    .await
    .unwrap();
    {
        // The downstream gets exactly what the files still hold, from their oldest line on.
        let got = wait_lines(late.logs().join(&node), kept.len()).await;
        assert_eq!(
            got, kept,
            "the late downstream's lines differ from A's remaining lines"
        );
        let text = until(port, |t| {
            LAG.iter()
                .all(|m| gauge(t, m, &[("downstream", "late"), ("node", "relay-0")]) == Some(0.0))
        })
        .await;
        let l = [("downstream", "late")];
        let files = gauge(&text, "tracerd_native_forward_skipped_files_total", &l).unwrap_or(0.0);
        let bytes = gauge(&text, "tracerd_native_forward_skipped_bytes_total", &l).unwrap_or(0.0);
        let objects =
            gauge(&text, "tracerd_native_forward_skipped_objects_total", &l).unwrap_or(0.0);
        let mean = {
            let path = a.logs().join("relay-0");
            let total: u64 = std::fs::read_dir(&path)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.ends_with(".json") && n != "node.json" && e.file_type().unwrap().is_file()
                })
                .map(|e| e.metadata().unwrap().len())
                .sum();
            total as f64 / kept.len() as f64
        };
        // Every deleted file was seen before it went: its bytes are counted in full.
        let want = lost as f64 * mean;
        assert!(
            (bytes - want).abs() <= want * 0.1,
            "skipped bytes {bytes}, about {want} expected ({lost} lines of {mean:.0} bytes)"
        );
        assert!(
            (objects - lost as f64).abs() <= lost as f64 * 0.2,
            "skipped objects {objects}, {lost} lost"
        );
        assert!(files >= 4.0, "{files} files skipped:\n{text}");
        // Logged once: one line per pass that found deleted files, naming how many.
        let log = a.stderr();
        let logged: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("retention deleted log files before they were forwarded"))
            .collect();
        let named: f64 = logged
            .iter()
            .filter_map(|l| {
                let rest = &l[l.find(" files=")? + 7..];
                rest.split(' ').next()?.parse::<f64>().ok()
            })
            .sum();
        assert_eq!(named, files, "logged files {logged:#?}");
        assert!(
            (logged.len() as f64) < files,
            "one line per deleted file: {logged:#?}"
        );
    }
    drop(late);
}
