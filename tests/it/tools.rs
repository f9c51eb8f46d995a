//! Operator tools: `tracerd nodes` and `tracerd status` against a real daemon with real nodes,
//! `tracerd man` and `tracerd completions`.

use std::process::{Command, Output};

use crate::http::http_get;
use crate::support::*;

fn tracerd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tracerd"))
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_and_status_report_what_api_nodes_says_as_table_and_json() {
    let prom = free_port();
    let d = Daemon::start(&format!(
        "hasPrometheus: {{epHost: 127.0.0.1, epPort: {prom}}}\n"
    ));
    let config = d.config_path().display().to_string();
    // No node yet.
    let out = tracerd(&["nodes", "-c", &config]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("no node is connected"));

    let mut a = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay-a").await;
    let mut b = FakeNode::handshake(connect_unix(&d.socket()).await, "relay-b").await;
    a.send_batch(1, 30, 8).await;
    b.send_batch(1, 12, 8).await;
    a.wait_ack(30).await;
    b.wait_ack(12).await;
    // The Ack is published from the blocking pool as soon as the lines are written; the
    // writer task counts them (objectsWritten) when it runs next, which on a loaded machine
    // can be just after this client read the Ack. Wait for the counts, bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let body = tokio::task::spawn_blocking(move || http_get(prom, "/api/nodes", &[]).2)
            .await
            .unwrap();
        let nodes: serde_json::Value = serde_json::from_str(&body).unwrap();
        let written = |name: &str| {
            nodes.as_array().and_then(|a| {
                a.iter()
                    .find(|n| n["name"] == name)
                    .and_then(|n| n["objectsWritten"].as_u64())
            })
        };
        if written("relay-a") == Some(30) && written("relay-b") == Some(12) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "objectsWritten not 30 and 12 after 20 s: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // --json: the same facts as /api/nodes, from the endpoint of the config given with -c.
    let out = tracerd(&["nodes", "-c", &config, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let from_cli: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (code, _, body) = http_get(prom, "/api/nodes", &[]);
    assert_eq!(code, 200);
    let from_api: serde_json::Value = serde_json::from_str(&body).unwrap();
    let key = |v: &serde_json::Value| {
        let mut rows: Vec<(String, String, u64, String)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["name"].as_str().unwrap().to_string(),
                    n["slug"].as_str().unwrap().to_string(),
                    n["objectsWritten"].as_u64().unwrap(),
                    n["peer"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        rows.sort();
        rows
    };
    assert_eq!(key(&from_cli), key(&from_api));
    assert_eq!(key(&from_cli).len(), 2);
    assert_eq!(key(&from_cli)[0].2, 30);

    // The table, with --url instead of -c.
    let url = format!("http://127.0.0.1:{prom}");
    let out = tracerd(&["nodes", "--url", &url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("NAME") && lines[0].contains("WRITTEN"));
    let a_row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(a_row[..3], ["relay-a", "relay-a", "native"], "{table}");
    assert!(lines[2].starts_with("relay-b "), "{table}");
    assert!(a_row.contains(&"30"), "{table}");

    // status: ready, two native nodes, the totals.
    let out = tracerd(&["status", "--url", &url, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["ready"], true);
    assert_eq!(s["nodes"], 2);
    assert_eq!(s["native"], 2);
    assert_eq!(s["objectsWritten"], 42);
    let out = tracerd(&["status", "-c", &config]);
    let t = text(&out.stdout);
    assert!(
        t.contains(": ready\n") && t.contains("nodes connected: 2 (native 2, cardano 0)"),
        "{t}"
    );
}

#[test]
fn nodes_says_why_when_the_daemon_cannot_be_asked() {
    let port = free_port();
    let out = tracerd(&["nodes", "--url", &format!("http://127.0.0.1:{port}")]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach tracerd at http://127.0.0.1:{port}"))
            && err.contains("refused"),
        "{err}"
    );
    let out = tracerd(&["status", "--url", "https://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("plain HTTP"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!(
            "networkMagic: 2\nnetwork: null\nlogging: [{{logRoot: {}, logMode: FileMode, logFormat: ForMachine}}]\nhasPrometheus: null\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = tracerd(&["nodes", "-c", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no hasPrometheus endpoint"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn man_page_and_completions_come_from_the_command_line_definition() {
    let out = tracerd(&["man"]);
    assert!(out.status.success());
    let man = text(&out.stdout);
    assert!(
        man.starts_with(".ie") || man.contains(".TH tracerd"),
        "{}",
        &man[..200.min(man.len())]
    );
    for needle in ["validate", "nodes", "status", "completions", "\\-\\-config"] {
        assert!(man.contains(needle), "the man page lacks {needle}");
    }
    if let Ok(o) = Command::new("man").arg("--version").output() {
        if o.status.success() {
            let dir = tempfile::tempdir().unwrap();
            let page = dir.path().join("tracerd.1");
            std::fs::write(&page, &out.stdout).unwrap();
            let rendered = Command::new("man")
                .arg("-l")
                .arg(&page)
                .env("MANPAGER", "cat")
                .env("MANWIDTH", "100")
                .output()
                .unwrap();
            assert!(text(&rendered.stdout).contains("nodes"), "{rendered:?}");
        }
    }
    let out = tracerd(&["completions", "bash"]);
    assert!(out.status.success());
    let script = text(&out.stdout);
    assert!(
        script.contains("_tracerd()") && script.contains("nodes"),
        "{script}"
    );
    // The script is valid bash and completes the subcommands.
    let check = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{script}\nCOMP_WORDS=(tracerd st); COMP_CWORD=1; _tracerd tracerd st tracerd; echo \"${{COMPREPLY[@]}}\""
        ))
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    assert!(text(&check.stdout).contains("status"), "{check:?}");
    for shell in ["zsh", "fish"] {
        let out = tracerd(&["completions", shell]);
        assert!(out.status.success() && text(&out.stdout).contains("nodes"));
    }
    let out = tracerd(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}
