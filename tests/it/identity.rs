//! Node identity (issue 17, point 4): over mutual TLS, a node may claim only the names its
//! certificate's DNS name or its Hello token maps to; a node presenting someone else's name is
//! refused with NAME_REJECTED and the reason, counted, while two others stream on.

use std::time::Duration;

use futures_util::SinkExt;
use tokio_util::codec::Framed;
use tracerd::native::{ForwarderCodec, NodeMessage, RefuseReason, TracerMessage};

use crate::native_tls::{native_tls_config, pki, tls_forwarder};
use crate::support::*;

/// Handshakes over TLS with `cert` as `name` with `token`; what tracerd answered.
async fn claim(
    port: u16,
    config: std::sync::Arc<rustls::ClientConfig>,
    name: &str,
    token: &str,
) -> TracerMessage {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let server = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(server, tcp)
        .await
        .unwrap();
    let mut framed = Framed::new(tls, ForwarderCodec::new(1 << 20));
    let NodeMessage::Hello(mut h) = hello(name) else {
        unreachable!()
    };
    h.token = token.to_string();
    framed.send(NodeMessage::Hello(h)).await.unwrap();
    recv(&mut framed).await.expect("closed without an answer")
}

fn name_rejected(http: u16) -> u64 {
    let (_, _, body) = crate::http::http_get(http, "/metrics", &[]);
    body.lines()
        .find(|l| l.starts_with("tracerd_connections_refused_total{reason=\"name_rejected\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |v| v.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_claiming_another_nodes_name_is_refused_while_others_stream_on() {
    let p = pki();
    let token = p._dir.path().join("bp.token");
    std::fs::write(&token, "bp-secret\n").unwrap();
    let http = free_port();
    let identities = format!(
        "\x20   identities:\n\
         \x20     - {{names: [relay-a], certificate: relay-a.nodes}}\n\
         \x20     - {{names: [relay-b], certificate: relay-b.nodes}}\n\
         \x20     - {{names: [bp-1], tokenFile: {}}}\n\
         hasPrometheus: {{epHost: 127.0.0.1, epPort: {http}}}\n",
        token.display()
    );
    let d = Daemon::start(&native_tls_config(&p, &identities));
    let a =
        p.ca.issue("relay-a", "relay-a", "DNS:relay-a.nodes", "clientAuth");
    let b =
        p.ca.issue("relay-b", "relay-b", "DNS:relay-b.nodes", "clientAuth");
    let ops = p.ca.issue("ops", "ops", "DNS:ops.nodes", "clientAuth");
    let fwd_a = tls_forwarder(&d, &a, &p.ca, "relay-a");
    let fwd_b = tls_forwarder(&d, &b, &p.ca, "relay-b");
    let before = name_rejected(http);
    let cases: [(&crate::certs::Issued, &str, &str, Option<&str>); 4] = [
        // relay-b's certificate claiming relay-a.
        (
            &b,
            "relay-a",
            "",
            Some("may claim [\"relay-b\"], not this name"),
        ),
        // A certificate of the right CA mapped to no identity, and no token.
        (
            &ops,
            "bp-1",
            "",
            Some("no credential of tracerd.native.identities"),
        ),
        // The wrong token.
        (&ops, "bp-1", "bp-secreT", Some("no credential")),
        // The right token: accepted.
        (&ops, "bp-1", "bp-secret", None),
    ];
    for (round, (cert, name, tok, refusal)) in cases.into_iter().enumerate() {
        let seqs = round as u64 * 500 + 1..=round as u64 * 500 + 500;
        for seq in seqs {
            fwd_a.trace(object("relay-a", seq, 100)).unwrap();
            fwd_b.trace(object("relay-b", seq, 100)).unwrap();
        }
        let answer = claim(d.tcp_port, p.ca.client_config(Some(cert)), name, tok).await;
        match (answer, refusal) {
            (TracerMessage::Refuse { reason, message }, Some(expected)) => {
                assert_eq!(reason, RefuseReason::NameRejected, "{message}");
                assert!(
                    message.contains(expected),
                    "{expected:?} not in {message:?}"
                );
            }
            (TracerMessage::Accept { node_name, .. }, None) => assert_eq!(node_name, "bp-1"),
            (other, _) => panic!("round {round}: unexpected {other:?}"),
        }
    }
    for fwd in [&fwd_a, &fwd_b] {
        assert!(
            fwd.flush(Duration::from_secs(30)).await,
            "{:?}",
            fwd.stats()
        );
    }
    for (fwd, name) in [(fwd_a, "relay-a"), (fwd_b, "relay-b")] {
        let s = fwd.close(Duration::from_secs(5)).await;
        assert_eq!(
            (s.acked, s.dropped, s.connects),
            (2000, 0, 1),
            "{name}: {s:?}"
        );
        assert_eq!(seqs(&d.logs().join(name)), (1..=2000).collect::<Vec<_>>());
    }
    assert_eq!(name_rejected(http), before + 3);
}

/// tracerd with a Cardano `AcceptAt` TCP listener accepting `allow` and HTTP on `http`.
fn cardano_daemon(port: u16, http: u16, allow: &str) -> Daemon {
    Daemon::start(&format!(
        "\x20 cardanoAllowFrom: [{allow}]\n\
         network: {{tag: AcceptAt, contents: \"127.0.0.1:{port}\"}}\n\
         hasPrometheus: {{epHost: 127.0.0.1, epPort: {http}}}\n"
    ))
}

fn refused_by(http: u16, reason: &str) -> u64 {
    let (_, _, body) = crate::http::http_get(http, "/metrics", &[]);
    let prefix = format!("tracerd_connections_refused_total{{reason=\"{reason}\"}}");
    body.lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |v| v.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cardano_tcp_listener_serves_only_its_allowed_source_networks() {
    use tokio::io::AsyncReadExt;
    use tracerd::cardano::mux::Mode;
    use tracerd_sim::cardano::{sample_object, SimNode};
    // 127.0.0.1 is outside 10.0.0.0/8: closed at once, before any byte is read, counted.
    let (port, http) = (free_port(), free_port());
    let d = cardano_daemon(port, http, "10.0.0.0/8, \"2001:db8::/32\"");
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("not closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(refused_by(http, "source_not_allowed"), 1);
    drop(d);
    // Inside the allowed network a simulated Cardano node's traces land on disk.
    let (port, http) = (free_port(), free_port());
    let d = cardano_daemon(port, http, "127.0.0.0/8");
    let node = std::sync::Arc::new(SimNode::new("relay-c", MAGIC));
    node.push((0..50).map(|i| sample_object("relay-c", i, 1_784_714_812_000_000_000 + i as i64)));
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let c = cancel.clone();
    let task = tokio::spawn(async move { node.run(stream, Mode::Initiator, &c).await });
    let dir = d.logs().join("relay-c");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !(dir.exists() && seqs_of(&dir) == 50) {
        assert!(std::time::Instant::now() < deadline, "traces did not land");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    let _ = task.await;
    assert_eq!(refused_by(http, "source_not_allowed"), 0);
}

fn seqs_of(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("node-") && name.ends_with(".json") {
            n += std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
                .count();
        }
    }
    n
}
