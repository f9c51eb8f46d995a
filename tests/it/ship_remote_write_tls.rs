//! remote_write over TLS (issue 18, `tls: {caFile, certFile, keyFile}`): a receiver in this
//! test serves HTTPS on loopback with a certificate of a test CA and requires a client
//! certificate of that CA (mutual TLS), and decodes every `WriteRequest` with its own prost
//! definitions. tracerd's entry with the CA and a client certificate gets its series there with
//! the external label; an entry trusting another CA, and one without a client certificate, get
//! nothing accepted and retry (counted), while the first keeps sending.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;

use crate::certs::{read_certs, Ca};
use crate::http::http_get;
use crate::support::*;

pub mod prompb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}

type Received = Arc<Mutex<Vec<BTreeMap<String, String>>>>;

/// An HTTPS remote_write receiver requiring a client certificate of `ca`.
async fn tls_receiver(ca: &Ca) -> (u16, Received) {
    let server = ca.server("rw-server", "rw-server");
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(&ca.cert) {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone())
            .build()
            .unwrap();
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(&server.key).unwrap(),
    ))
    .unwrap()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(read_certs(&server.cert), key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received: Received = Arc::default();
    let store = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, store) = (acceptor.clone(), store.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let store = store.clone();
                        async move {
                            let ok = req.uri().path() == "/api/v1/write"
                                && req
                                    .headers()
                                    .get("content-encoding")
                                    .is_some_and(|v| v == "snappy");
                            let body = req.into_body().collect().await?.to_bytes();
                            let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
                            let wr: prompb::WriteRequest =
                                prost::Message::decode(raw.as_slice()).unwrap();
                            let mut st = store.lock().unwrap();
                            for ts in wr.timeseries {
                                assert!(!ts.samples.is_empty());
                                st.push(ts.labels.into_iter().map(|l| (l.name, l.value)).collect());
                            }
                            let status = if ok { 204 } else { 400 };
                            Ok::<_, hyper::Error>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, received)
}

fn counter(text: &str, name: &str, url: &str) -> f64 {
    let needle = format!("{name}{{url=\"{url}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_over_mutual_tls_reaches_only_a_receiver_it_trusts() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "rw-ca");
    let client = ca.issue("rw-client", "tracerd", "DNS:tracerd", "clientAuth");
    let other = Ca::new(&dir.path().join("."), "other-ca");
    let (port, received) = tls_receiver(&ca).await;
    let url = format!("https://127.0.0.1:{port}/api/v1/write");
    let http = free_port();
    let entry = |tracer: &str, tls: String| {
        format!(
            "    - url: {url}\n      externalLabels: {{tracer: {tracer}}}\n      intervalSecs: 0.2\n      \
             queue: {{maxBackoffSecs: 0.2}}\n      tls: {tls}\n"
        )
    };
    let mut d = Daemon::start(&format!(
        "  remoteWrite:\n{}{}{}hasPrometheus: {{epHost: 127.0.0.1, epPort: {http}}}\n",
        entry(
            "site-a",
            format!(
                "{{caFile: {}, certFile: {}, keyFile: {}}}",
                ca.cert.display(),
                client.cert.display(),
                client.key.display()
            )
        ),
        entry(
            "wrong-ca",
            format!(
                "{{caFile: {}, certFile: {}, keyFile: {}}}",
                other.cert.display(),
                client.cert.display(),
                client.key.display()
            )
        ),
        entry("no-cert", format!("{{caFile: {}}}", ca.cert.display())),
    ));
    // Two nodes stream meanwhile (their series are among those sent).
    let port_n = d.tcp_port;
    let nodes: Vec<_> = ["tls-a", "tls-b"]
        .into_iter()
        .map(|n| {
            tokio::spawn(crate::ship_support::stream_round(
                port_n,
                n,
                5,
                20,
                Duration::from_millis(100),
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = received.lock().unwrap().clone();
        let has = |name: &str| {
            got.iter().any(|l| {
                l.get("tracer").map(String::as_str) == Some("site-a")
                    && l.get("__name__").is_some_and(|n| n.starts_with(name))
            })
        };
        let (_, _, text) = http_get(http, "/metrics", &[]);
        let sent = counter(&text, "tracerd_remote_write_samples_sent_total", &url);
        let retried = counter(&text, "tracerd_remote_write_samples_retried_total", &url);
        if has("tracerd_") && sent > 0.0 && retried > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no series over TLS (sent {sent}, retried {retried}): {} series received",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in nodes {
        n.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let got = received.lock().unwrap().clone();
    let tracers: std::collections::BTreeSet<&str> = got
        .iter()
        .filter_map(|l| l.get("tracer").map(String::as_str))
        .collect();
    assert_eq!(
        tracers,
        ["site-a"].into(),
        "only the entry that trusts the receiver and has a client certificate gets through"
    );
    assert!(
        got.iter()
            .any(|l| l.get("node_name").is_some_and(|n| n == "tls-a")
                || l.values().any(|v| v == "tls-a")),
        "the nodes' series arrive too"
    );
    let stderr = d.stderr();
    assert!(stderr.contains("remote_write failed; retrying"), "{stderr}");
    assert!(stderr.contains("TLS with 127.0.0.1"), "{stderr}");
    d.signal("TERM");
    d.wait(Duration::from_secs(15));
}
