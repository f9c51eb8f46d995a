//! A short smoke run of the `tracerd-load` node simulator against the real daemon: its summary
//! line parses, every object it sent is acknowledged and lands in its node's directory.

use std::process::Command;

use crate::support::*;

#[test]
fn tracerd_load_smoke_run_is_acknowledged_and_logged() {
    let d = Daemon::start("");
    // The forwarders on the drivers' runtime (the default), then on a runtime of their own.
    smoke_run(&d, "load", &[], 0);
    smoke_run(&d, "split", &["--io-threads", "1"], 1);
}

fn smoke_run(d: &Daemon, prefix: &str, extra: &[&str], io_threads: u64) {
    let out = Command::new(env!("CARGO_BIN_EXE_tracerd-load"))
        .args(["--connect", &format!("127.0.0.1:{}", d.tcp_port)])
        .args(["--nodes", "3", "--rate", "200", "--duration", "1"])
        .args(["--size", "250", "--metrics", "4", "--protocol", "native"])
        .args(["--magic", &MAGIC.to_string(), "--drain-timeout", "20"])
        .args(["--name-prefix", prefix])
        .args(extra)
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
    assert_eq!(v["io_threads"].as_u64(), Some(io_threads), "{v}");
    let mut logged = 0;
    for i in 0..3 {
        let node = format!("{prefix}-{i:04}");
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
            let lines = read_complete_node_lines(&dir);
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

/// A daemon with a Cardano `AcceptAt` socket `<dir>/c.sock`, its native listeners and
/// `extra` config.
fn accepting_daemon(extra: &str) -> (Daemon, String) {
    let d = Daemon::start_with(
        |dir, _| {
            format!(
                "networkMagic: {MAGIC}\nnetwork: {{ tag: AcceptAt, contents: \"{}\" }}\nlogging:\n  - logRoot: {}\n    logMode: FileMode\n    logFormat: ForMachine\n",
                dir.join("c.sock").display(),
                dir.join("logs").display()
            )
        },
        extra,
    );
    let sock = d.dir.path().join("c.sock").display().to_string();
    (d, sock)
}

#[test]
fn tracerd_load_fails_within_connect_timeout_with_the_reason_on_a_wrong_magic() {
    let (d, sock) = accepting_daemon("");
    let native = format!("127.0.0.1:{}", d.tcp_port);
    for (protocol, connect) in [("native", native.as_str()), ("cardano", sock.as_str())] {
        let started = std::time::Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_tracerd-load"))
            .args(["--protocol", protocol, "--connect", connect])
            .args(["--magic", "7", "--connect-timeout", "2", "--duration", "5"])
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let took = started.elapsed();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{protocol}: {err}");
        assert!(
            took < std::time::Duration::from_secs(4),
            "{protocol}: took {took:?}"
        );
        assert!(
            err.contains("refused") && err.contains('7'),
            "{protocol}: {err}"
        );
        assert!(
            out.stdout.is_empty(),
            "{protocol}: no summary of a failed run"
        );
    }
}

#[test]
fn tracerd_load_cardano_nodes_answer_tracerds_ekg_polls_with_metrics() {
    let prom = free_port();
    let (d, sock) = accepting_daemon(&format!(
        "hasPrometheus: {{epHost: 127.0.0.1, epPort: {prom}}}\n"
    ));
    let child = Command::new(env!("CARGO_BIN_EXE_tracerd-load"))
        .args(["--protocol", "cardano", "--connect", &sock])
        .args(["--magic", &MAGIC.to_string(), "--name-prefix", "ekg"])
        .args(["--rate", "50", "--duration", "4", "--metrics", "5"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // While it runs, tracerd holds the node's metrics (pulled over EKG).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(4);
    let mut seen = 0;
    while std::time::Instant::now() < deadline && seen < 5 {
        let (_, _, body) = crate::http::http_get(prom, "/api/nodes", &[]);
        let nodes: serde_json::Value = serde_json::from_str(&body).unwrap();
        seen = nodes
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == "ekg-0000")
            .and_then(|n| n["metrics"].as_u64())
            .unwrap_or(0);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(seen, 5, "tracerd did not get the node's 5 metrics");
    let (_, _, page) = crate::http::http_get(prom, "/ekg-0000", &[]);
    assert!(page.contains("blockNum"), "{page}");
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["metric_updates"].as_u64().unwrap() >= 2, "{v}");
    drop(d);
}

#[test]
fn tracerd_load_shows_progress_once_a_second_only_on_a_terminal() {
    let (d, sock) = accepting_daemon("");
    let native = format!("127.0.0.1:{}", d.tcp_port);
    let have_script = Command::new("script").arg("--version").output().is_ok();
    for (protocol, connect) in [("native", native.as_str()), ("cardano", sock.as_str())] {
        let args = format!(
            "--protocol {protocol} --connect {connect} --magic {MAGIC} --rate 100 --duration 2.3 --name-prefix p{protocol}"
        );
        // Not a terminal: the summary line only.
        let out = Command::new(env!("CARGO_BIN_EXE_tracerd-load"))
            .args(args.split(' '))
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(!String::from_utf8_lossy(&out.stderr).contains("obj/s"));
        let _: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if !have_script {
            eprintln!("skipped the terminal half: `script` (util-linux) is not installed");
            continue;
        }
        // A terminal (a pty from script(1)): a progress line every second, then the summary.
        let out = Command::new("script")
            .arg("-qec")
            .arg(format!("{} {args}", env!("CARGO_BIN_EXE_tracerd-load")))
            .arg("/dev/null")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        let updates = text.matches(" s  nodes 1  sent ").count();
        assert!(
            (2..=3).contains(&updates),
            "{protocol}: {updates} updates in {text:?}"
        );
        assert!(
            text.contains("\"sent\":"),
            "{protocol}: no summary in {text:?}"
        );
    }
}
