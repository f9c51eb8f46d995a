//! The native protocol over mutual TLS (issue 17, point 3): forwarders with certificates of
//! the nodes' CA stream objects that land on disk, while a client without a certificate, one
//! with a certificate of another CA and a plain-TCP client are refused and counted.

use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use tokio_util::codec::Framed;
use tracerd::config::Address;
use tracerd::native::ForwarderCodec;
use tracerd_forwarder::tls::TlsClient;
use tracerd_forwarder::{Forwarder, ForwarderConfig};

use crate::certs::{Ca, Issued};
use crate::support::*;

pub struct Pki {
    pub _dir: tempfile::TempDir,
    pub ca: Ca,
    pub server: Issued,
}

pub fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "nodes-ca");
    let server = ca.server("tracerd", "tracerd");
    Pki {
        _dir: dir,
        ca,
        server,
    }
}

/// The `extra` of a daemon whose TCP native listener speaks mutual TLS, then `more`.
pub fn native_tls_config(p: &Pki, more: &str) -> String {
    format!(
        "\x20   tls:\n\
         \x20     certificateFile: {}\n\
         \x20     certificateKeyFile: {}\n\
         \x20     clientCaFile: {}\n{more}",
        p.server.cert.display(),
        p.server.key.display(),
        p.ca.cert.display()
    )
}

pub fn tls_forwarder(d: &Daemon, client: &Issued, ca: &Ca, name: &str) -> Forwarder {
    let address = Address::parse(&format!("127.0.0.1:{}", d.tcp_port)).unwrap();
    let mut c = ForwarderConfig::new(address, name);
    c.network_magic = MAGIC;
    c.backoff_initial = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c.max_batch_objects = 64;
    c.tls = Some(
        TlsClient::from_pem(&ca.cert, Some((&client.cert, &client.key)), "127.0.0.1").unwrap(),
    );
    Forwarder::start(c).unwrap()
}

/// Sends a Hello over `stream` and expects no `HelloAccept`: the connection is closed or
/// fails.
async fn refused<S>(stream: S, name: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    let mut framed = Framed::new(stream, ForwarderCodec::new(1 << 20));
    let _ = framed.send(hello(name)).await;
    match tokio::time::timeout(Duration::from_secs(15), framed.next()).await {
        Ok(None) | Ok(Some(Err(_))) => {}
        Ok(Some(Ok(m))) => panic!("{name} was answered: {m:?}"),
        Err(_) => panic!("{name}: neither refused nor closed"),
    }
}

async fn tls_connect(
    port: u16,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// `tracerd_connections_refused_total{reason="tls_handshake"}` from `/metrics`.
fn refusals(http: u16) -> u64 {
    let (_, _, body) = crate::http::http_get(http, "/metrics", &[]);
    body.lines()
        .find(|l| l.starts_with("tracerd_connections_refused_total{reason=\"tls_handshake\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |v| v.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarders_over_mutual_tls_land_on_disk_while_clients_without_a_valid_certificate_are_refused(
) {
    let p = pki();
    let http = free_port();
    let d = Daemon::start(&native_tls_config(
        &p,
        &format!("hasPrometheus: {{epHost: 127.0.0.1, epPort: {http}}}\n"),
    ));
    let a =
        p.ca.issue("relay-a", "relay-a", "DNS:relay-a", "clientAuth");
    let b =
        p.ca.issue("relay-b", "relay-b", "DNS:relay-b", "clientAuth");
    let fwd_a = tls_forwarder(&d, &a, &p.ca, "relay-a");
    let fwd_b = tls_forwarder(&d, &b, &p.ca, "relay-b");
    let before = refusals(http);
    for round in 0..4u64 {
        let seqs = round * 500 + 1..=round * 500 + 500;
        for seq in seqs.clone() {
            fwd_a.trace(object("relay-a", seq, 100)).unwrap();
            fwd_b.trace(object("relay-b", seq, 100)).unwrap();
        }
        // While both stream: a client with no certificate, one with another CA's, and a
        // plain-TCP client speaking the native protocol are all refused.
        match round {
            0 => {
                let config = p.ca.client_config(None);
                if let Ok(s) = tls_connect(d.tcp_port, config).await {
                    refused(s, "no-cert").await;
                }
            }
            1 => {
                let rogue_dir = tempfile::tempdir().unwrap();
                let rogue = Ca::new(rogue_dir.path(), "rogue-ca");
                let cert = rogue.issue("rogue", "relay-a", "DNS:relay-a", "clientAuth");
                let config = p.ca.client_config(Some(&cert));
                if let Ok(s) = tls_connect(d.tcp_port, config).await {
                    refused(s, "relay-a").await;
                }
            }
            2 => {
                let s = tokio::net::TcpStream::connect(("127.0.0.1", d.tcp_port))
                    .await
                    .unwrap();
                refused(s, "plain").await;
            }
            _ => {}
        }
    }
    for fwd in [&fwd_a, &fwd_b] {
        assert!(
            fwd.flush(Duration::from_secs(30)).await,
            "{:?}",
            fwd.stats()
        );
    }
    let (sa, sb) = (
        fwd_a.close(Duration::from_secs(5)).await,
        fwd_b.close(Duration::from_secs(5)).await,
    );
    for s in [&sa, &sb] {
        assert_eq!((s.submitted, s.acked, s.dropped), (2000, 2000, 0), "{s:?}");
        assert_eq!(s.connects, 1, "a well-behaved node was disconnected: {s:?}");
    }
    for name in ["relay-a", "relay-b"] {
        assert_eq!(
            seqs(&d.logs().join(name)),
            (1..=2000).collect::<Vec<_>>(),
            "{name}"
        );
    }
    // Each refusal is counted (the plain client's bytes are not a TLS handshake either).
    let after = refusals(http);
    assert!(after >= before + 3, "refusals counted: {before} -> {after}");
    for name in ["no-cert", "plain"] {
        assert!(!d.logs().join(name).exists(), "{name} got a directory");
    }
}

#[test]
fn plain_tcp_on_a_non_loopback_address_warns_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!(
            "networkMagic: {MAGIC}\nnetwork: null\nhasPrometheus: null\n\
             logging: [{{logRoot: {}, logMode: FileMode, logFormat: ForMachine}}]\n\
             tracerd:\n  native:\n    acceptAt: [\"0.0.0.0:{port}\"]\n",
            dir.path().join("logs").display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tracerd"))
        .arg("-c")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("err")).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(dir.path().join("err")).unwrap_or_default();
        if text.contains(" ready ") || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        text.contains("native protocol over plain TCP on a non-loopback address"),
        "{text}"
    );
    assert!(text.contains(&format!("0.0.0.0:{port}")), "{text}");
}

/// `tracerd-load` with `args` against `d`'s TCP listener; its exit status and summary line.
fn tracerd_load(d: &Daemon, args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tracerd-load"))
        .args(["--connect", &format!("127.0.0.1:{}", d.tcp_port)])
        .args(["--magic", &MAGIC.to_string()])
        .args(args)
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn tracerd_load_over_mutual_tls_has_every_object_acknowledged_and_on_disk() {
    let p = pki();
    let http = free_port();
    let d = Daemon::start(&native_tls_config(
        &p,
        &format!("hasPrometheus: {{epHost: 127.0.0.1, epPort: {http}}}\n"),
    ));
    let client = p.ca.issue("load", "load", "DNS:load.nodes", "clientAuth");
    let (ca, cert, key) = (
        p.ca.cert.display().to_string(),
        client.cert.display().to_string(),
        client.key.display().to_string(),
    );
    let before = refusals(http);
    let (status, stdout, stderr) = tracerd_load(
        &d,
        &[
            "--nodes",
            "4",
            "--rate",
            "500",
            "--duration",
            "1",
            "--size",
            "160",
            "--drain-timeout",
            "20",
            "--tls-ca",
            &ca,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
    );
    assert!(status.success(), "tracerd-load failed: {stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let sent = v["sent"].as_u64().unwrap();
    // 4 nodes x 500/s x 1 s, give or take the last tick.
    assert!((1500..=2500).contains(&sent), "{v}");
    assert_eq!(v["acked"].as_u64(), Some(sent), "{v}");
    assert_eq!(v["dropped"].as_u64(), Some(0), "{v}");
    assert_eq!(v["drained"].as_bool(), Some(true), "{v}");
    let mut on_disk = 0;
    for i in 0..4 {
        let node = format!("load-{i:04}");
        let n = seqs(&d.logs().join(&node)).len() as u64;
        assert_eq!(
            seqs(&d.logs().join(&node)),
            (1..=n).collect::<Vec<_>>(),
            "{node}: every object once, in order"
        );
        on_disk += n;
    }
    assert_eq!(on_disk, sent, "acknowledged objects on disk");
    assert_eq!(refusals(http), before, "no TLS handshake refused");
    // The same run without a client certificate is refused by the server: tracerd-load
    // fails within its connect timeout, and the refusals are counted.
    let (status, _, stderr) = tracerd_load(
        &d,
        &[
            "--nodes",
            "1",
            "--rate",
            "10",
            "--duration",
            "1",
            "--connect-timeout",
            "2",
            "--tls-ca",
            &ca,
        ],
    );
    assert!(
        !status.success(),
        "a client without a certificate ran: {stderr}"
    );
    assert!(refusals(http) > before, "the refusal was not counted");
}
