//! A short smoke run of the `tracerd-load` node simulator against the real daemon: its summary
//! line parses, every object it sent is acknowledged and lands in its node's directory.

use std::process::Command;

use crate::support::*;

#[test]
fn tracerd_load_smoke_run_is_acknowledged_and_logged() {
    let d = Daemon::start("");
    let out = Command::new(env!("CARGO_BIN_EXE_tracerd-load"))
        .args(["--connect", &format!("127.0.0.1:{}", d.tcp_port)])
        .args(["--nodes", "3", "--rate", "200", "--duration", "1"])
        .args(["--size", "250", "--metrics", "4", "--protocol", "native"])
        .args(["--magic", &MAGIC.to_string(), "--drain-timeout", "20"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tracerd-load failed: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one summary line expected: {stdout:?}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    for key in ["sent", "acked", "dropped", "objects_per_s", "mib_per_s"] {
        assert!(v[key].is_number(), "{key} missing in {v}");
    }
    for q in ["p50", "p99", "p999"] {
        assert!(v["ack_latency_ms"][q].is_number(), "{q} missing in {v}");
    }
    let sent = v["sent"].as_u64().unwrap();
    // 3 nodes x 200/s x 1 s, give or take the last tick.
    assert!((450..=650).contains(&sent), "{v}");
    assert_eq!(v["acked"].as_u64(), Some(sent), "{v}");
    assert_eq!(v["dropped"].as_u64(), Some(0), "{v}");
    assert_eq!(v["drained"].as_bool(), Some(true), "{v}");
    let mut logged = 0;
    for i in 0..3 {
        let node = format!("load-{i:04}");
        let lines = read_node_lines(&d.logs().join(&node));
        let mut seqs: Vec<u64> = lines
            .iter()
            .map(|l| {
                assert_eq!(l["data"]["node"].as_str(), Some(node.as_str()));
                l["data"]["seq"].as_u64().unwrap()
            })
            .collect();
        let n = seqs.len() as u64;
        seqs.dedup();
        assert_eq!(
            seqs,
            (1..=n).collect::<Vec<_>>(),
            "{node}: unique, in order"
        );
        logged += n;
    }
    assert_eq!(logged, sent);
}

/// Runs tracerd-load with `args`; returns its summary line, parsed.
fn run_load(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_tracerd-load"))
        .args(args)
        .args(["--magic", &MAGIC.to_string(), "--drain-timeout", "20"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Waits (bounded) until the nodes `<prefix>-0000..` hold `sent` lines in all, each written
/// as the simulated node's own line. Pulled is not yet written, hence the wait.
fn wait_on_disk(logs: &std::path::Path, prefix: &str, nodes: usize, sent: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let mut logged = 0;
        for i in 0..nodes {
            let node = format!("{prefix}-{i:04}");
            let dir = logs.join(&node);
            if !dir.exists() {
                continue;
            }
            let lines = read_node_lines(&dir);
            for l in &lines {
                assert_eq!(l["host"].as_str(), Some(node.as_str()));
            }
            logged += lines.len() as u64;
        }
        if logged == sent {
            return;
        }
        assert!(
            logged < sent,
            "more lines ({logged}) than objects sent ({sent})"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "only {logged} of {sent} on disk"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A daemon whose Cardano `network` is `network` (given the daemon's directory).
fn cardano_daemon(network: impl Fn(&std::path::Path) -> String) -> Daemon {
    Daemon::start_with(
        |dir, _| {
            format!(
                "networkMagic: {MAGIC}\nnetwork: {}\nlogging:\n  - logRoot: {}\n    logMode: FileMode\n    logFormat: ForMachine\n",
                network(dir),
                dir.join("logs").display()
            )
        },
        "",
    )
}

#[test]
fn tracerd_load_simulates_cardano_nodes_that_tracerd_pulls_from() {
    let d = cardano_daemon(|dir| {
        format!(
            "{{ tag: AcceptAt, contents: \"{}\" }}",
            dir.join("c.sock").display()
        )
    });
    let sock = d.dir.path().join("c.sock");
    let v = run_load(&[
        "--connect",
        sock.to_str().unwrap(),
        "--protocol",
        "cardano",
        "--nodes",
        "3",
        "--rate",
        "300",
        "--duration",
        "1",
        "--name-prefix",
        "cn",
    ]);
    assert_eq!(v["protocol"], "cardano");
    let sent = v["sent"].as_u64().unwrap();
    assert!((700..=1000).contains(&sent), "{v}");
    assert_eq!(v["acked"].as_u64(), Some(sent), "every object pulled: {v}");
    wait_on_disk(&d.logs(), "cn", 3, sent);
}

#[test]
fn tracerd_load_simulates_listening_cardano_nodes_that_tracerd_dials() {
    let socks = tempfile::tempdir().unwrap();
    let paths: Vec<String> = (0..2)
        .map(|i| {
            socks
                .path()
                .join(format!("ln-{i:04}.sock"))
                .display()
                .to_string()
        })
        .collect();
    let contents = serde_json::to_string(&paths).unwrap();
    let d = cardano_daemon(|_| format!("{{ tag: ConnectTo, contents: {contents} }}"));
    let v = run_load(&[
        "--listen",
        socks.path().to_str().unwrap(),
        "--protocol",
        "cardano",
        "--nodes",
        "2",
        "--rate",
        "300",
        "--duration",
        "1",
        "--name-prefix",
        "ln",
        "--connect-timeout",
        "40",
    ]);
    assert_eq!(
        (v["protocol"].as_str(), v["direction"].as_str()),
        (Some("cardano"), Some("listen"))
    );
    let sent = v["sent"].as_u64().unwrap();
    assert!(sent >= 400, "{v}");
    assert_eq!(v["acked"].as_u64(), Some(sent), "every object pulled: {v}");
    wait_on_disk(&d.logs(), "ln", 2, sent);
}
