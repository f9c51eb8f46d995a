//! Re-forwarding loops over the native protocol (issue 16, point 4): each tracerd that
//! forwards names itself in the `Hello.tracers` of its downstream connections, so a chain
//! that leads back (A → B → A) is refused where it would arrive again, with a message saying
//! so at both ends, and a longer chain without a loop (A → B → C) passes.

use std::time::Duration;

use crate::reforward_native::{downstream, lines, middle, stream, wait_lines};
use crate::support::*;

/// `d`'s config with native downstreams `list` added under `tracerd`.
fn add_forward(d: &Daemon, list: &str) {
    let text = std::fs::read_to_string(d.config_path()).unwrap();
    let at = text.find("    acceptAt:").expect("acceptAt line");
    let end = at + text[at..].find('\n').unwrap() + 1;
    let text = format!(
        "{}  shipStateDir: state\n  forward:\n{list}{}",
        &text[..end],
        &text[end..]
    );
    d.write_config(&text);
}

async fn spawn(mut d: Daemon) -> Daemon {
    tokio::task::spawn_blocking(move || {
        d.spawn();
        d
    })
    .await
    .unwrap()
}

fn node_dirs(d: &Daemon) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(d.logs())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_to_b_to_a_is_refused_with_a_message_at_both_ends() {
    const OBJECTS: u64 = 400;
    let b = Daemon::configure(|_, _| String::new(), "");
    let a = middle(&downstream("b", b.tcp_port, &[]), "");
    // B forwards every node back to A.
    add_forward(&b, &downstream("a", a.tcp_port, &[]));
    let b = spawn(b).await;
    let acked = stream("relay-0".into(), a.tcp_port, OBJECTS, |_| "Test.Stream").await;
    assert_eq!(acked, OBJECTS);
    // B holds the node's lines once, as A wrote them.
    let mine = lines(&a.logs().join("relay-0"));
    assert_eq!(mine.len(), OBJECTS as usize);
    let got = wait_lines(b.logs().join("relay-0"), OBJECTS as usize).await;
    assert_eq!(got, mine);
    // A refuses B's connection for the node, naming the loop; B logs A's refusal.
    let (a, b) = tokio::task::spawn_blocking(move || {
        let text = a.wait_log("re-forwarding loop", 1);
        assert!(
            text.lines()
                .any(|l| l.contains("handshake refused") && l.contains("re-forwarding loop")),
            "{text}"
        );
        let text = b.wait_log("re-forwarding loop", 1);
        assert!(
            text.lines().any(|l| l.contains("native downstream")
                && l.contains("downstream=a")
                && l.contains("re-forwarding loop")),
            "{text}"
        );
        (a, b)
    })
    .await
    .unwrap();
    // Nothing circled: A still holds each object once, under the node's one directory.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(lines(&a.logs().join("relay-0")), mine);
    assert_eq!(node_dirs(&a), ["relay-0"]);
    assert_eq!(node_dirs(&b), ["relay-0"]);
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_without_a_loop_passes_every_hop() {
    const OBJECTS: u64 = 300;
    let prom = free_port();
    let c = Daemon::start(&format!(
        "hasPrometheus: {{ epHost: 127.0.0.1, epPort: {prom} }}\n"
    ));
    let b = middle(&downstream("c", c.tcp_port, &[]), "");
    let a = middle(&downstream("b", b.tcp_port, &[]), "");
    let acked = stream("relay-0".into(), a.tcp_port, OBJECTS, |_| "Test.Stream").await;
    assert_eq!(acked, OBJECTS);
    let mine = lines(&a.logs().join("relay-0"));
    let got = wait_lines(c.logs().join("relay-0"), OBJECTS as usize).await;
    assert_eq!(got, mine, "C's lines differ from A's");
    // C knows the path the node's objects took: A's id, then B's.
    let (status, _, body) = tokio::task::spawn_blocking(move || {
        crate::http::http_get(prom, "/api/nodes/relay-0/datapoints/TracerdPath", &[])
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let path: Vec<String> = serde_json::from_str(&body).unwrap();
    assert_eq!(path.len(), 2, "{path:?}");
    assert_ne!(path[0], path[1]);
    assert!(!b.stderr().contains("re-forwarding loop"), "{}", b.stderr());
    assert!(!c.stderr().contains("re-forwarding loop"), "{}", c.stderr());
}
