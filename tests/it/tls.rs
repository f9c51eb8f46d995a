//! HTTPS on the HTTP endpoints (issue 17, point 1): cardano-tracer's `tlsCertificate` and
//! `epForceSSL`, checked with curl, openssl s_client and a rustls client that stays connected
//! across a certificate rotation by SIGHUP.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use crate::certs::{curl, s_client, Ca, Issued};
use crate::support::{free_port, Daemon};

/// A daemon whose `hasPrometheus` serves HTTPS with `server`, and `hasEKG` plain HTTP.
pub fn https_daemon(server: &Issued, extra: &str) -> (Daemon, u16, u16) {
    let (https, plain) = (free_port(), free_port());
    let d = Daemon::start(&format!(
        "hasPrometheus: {{epHost: 127.0.0.1, epPort: {https}, epForceSSL: true}}\n\
         hasEKG: {{epHost: 127.0.0.1, epPort: {plain}}}\n\
         tlsCertificate: {{certificateFile: {}, certificateKeyFile: {}}}\n{extra}",
        server.cert.display(),
        server.key.display()
    ));
    drop(crate::http::connect_http(https));
    drop(crate::http::connect_http(plain));
    (d, https, plain)
}

fn url(port: u16, path: &str, scheme: &str) -> String {
    format!("{scheme}://127.0.0.1:{port}{path}")
}

#[test]
fn https_with_curl_cacert_and_plain_http_refused_under_ep_force_ssl() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "it-ca");
    let server = ca.server("server", "tracerd-it");
    let (d, https, plain) = https_daemon(&server, "");
    let cacert = ca.cert.to_str().unwrap();
    let (code, body, err) = curl(&[
        "--cacert",
        cacert,
        "-w",
        "\n%{http_code}",
        &url(https, "/metrics", "https"),
    ]);
    assert_eq!(code, 0, "curl failed: {err}");
    assert!(body.ends_with("\n200"), "{body}");
    assert!(body.contains("tracerd_"), "not tracerd's metrics: {body}");
    // Without the CA the certificate is not trusted: curl refuses (it verifies by default).
    let (code, _, err) = curl(&[&url(https, "/healthz", "https")]);
    assert_ne!(code, 0, "an untrusted certificate was accepted: {err}");
    // Plain HTTP on the HTTPS endpoint: warp-tls's 426 and text, as cardano-tracer answers.
    let (code, body, err) = curl(&["-i", &url(https, "/metrics", "http")]);
    assert_eq!(code, 0, "{err}");
    assert!(body.starts_with("HTTP/1.1 426 Upgrade Required"), "{body}");
    assert!(
        body.ends_with("This server only accepts secure HTTP connections."),
        "{body}"
    );
    // The endpoint without epForceSSL serves plain HTTP, as cardano-tracer does.
    let (code, body, err) = curl(&["-w", "%{http_code}", &url(plain, "/", "http")]);
    assert_eq!(code, 0, "{err}");
    assert!(body.ends_with("200"), "{body}");
    d.wait_log("serving HTTPS only (epForceSSL)", 1);
}

#[test]
fn openssl_s_client_negotiates_tls_1_2_and_1_3_only() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "it-ca");
    let server = ca.server("server", "tracerd-it");
    let (_d, https, _) = https_daemon(&server, "");
    let cafile = ca.cert.to_str().unwrap();
    for (flag, shown) in [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")] {
        let (ok, text) = s_client(https, &[flag, "-CAfile", cafile, "-verify_return_error"]);
        assert!(ok, "{flag}: {text}");
        assert!(
            text.contains(&format!("Protocol version: {shown}")),
            "{flag}: {text}"
        );
        assert!(text.contains("Verification: OK"), "{flag}: {text}");
    }
    // TLS 1.1 (allowed on the client side by lowering its security level) is refused.
    let (ok, text) = s_client(
        https,
        &[
            "-tls1_1",
            "-cipher",
            "DEFAULT@SECLEVEL=0",
            "-CAfile",
            cafile,
        ],
    );
    assert!(!ok, "TLS 1.1 was negotiated: {text}");
    assert!(!text.contains("Protocol version: TLSv1.1"), "{text}");
}

#[test]
fn an_unreadable_or_mismatched_key_is_a_clear_start_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "it-ca");
    let server = ca.server("server", "tracerd-it");
    let other = ca.server("other", "other");
    let port = free_port();
    let cases = [
        (
            server.cert.clone(),
            other.key.clone(),
            format!(
                "the private key {} does not match the certificate {}",
                other.key.display(),
                server.cert.display()
            ),
        ),
        (
            server.cert.clone(),
            dir.path().join("missing.key"),
            format!(
                "cannot read key {}",
                dir.path().join("missing.key").display()
            ),
        ),
        (
            ca.key.clone(),
            server.key.clone(),
            format!("{} holds no CERTIFICATE in PEM form", ca.key.display()),
        ),
    ];
    for (cert, key, expected) in cases {
        let d = Daemon::configure(
            |_, _| String::new(),
            &format!(
                "hasPrometheus: {{epHost: 127.0.0.1, epPort: {port}, epForceSSL: true}}\n\
                 tlsCertificate: {{certificateFile: {}, certificateKeyFile: {}}}\n",
                cert.display(),
                key.display()
            ),
        );
        let out = d.command().output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("tlsCertificate"), "{stderr}");
        assert!(stderr.contains(&expected), "{expected:?} not in {stderr}");
    }
}

/// One HTTP/1.1 keep-alive request on `s`; the status and body.
fn request<S: Read + Write>(s: &mut S, path: &str) -> (u16, String) {
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n"
    )
    .unwrap();
    s.flush().unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed mid-response: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("no content-length");
            if body.len() >= len {
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                return (status, body[..len].to_string());
            }
        }
    }
}

fn subject_cn(port: u16, cafile: &Path) -> String {
    let (ok, text) = s_client(port, &["-CAfile", cafile.to_str().unwrap()]);
    assert!(ok, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("Peer certificate: "))
        .unwrap_or_else(|| panic!("no peer certificate in {text}"))
        .replace(' ', "")
}

#[test]
fn sighup_rotates_the_certificate_while_a_client_stays_connected() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "it-ca");
    let first = ca.server("first", "first");
    let live = Issued {
        cert: dir.path().join("live.pem"),
        key: dir.path().join("live.key"),
    };
    std::fs::copy(&first.cert, &live.cert).unwrap();
    std::fs::copy(&first.key, &live.key).unwrap();
    let (d, https, _) = https_daemon(&live, "");
    assert!(subject_cn(https, &ca.cert).contains("CN=first"));

    // A client connected over TLS before the rotation, kept alive throughout.
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(ca.client_config(None), name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", https)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut client = rustls::StreamOwned::new(conn, tcp);
    assert_eq!(request(&mut client, "/healthz").0, 200);

    // A broken rotation (key of another certificate) keeps the old pair.
    let second = ca.server("second", "second");
    std::fs::copy(&second.cert, &live.cert).unwrap();
    d.signal("HUP");
    d.wait_log("TLS certificate not reloaded", 1);
    assert!(subject_cn(https, &ca.cert).contains("CN=first"));
    assert_eq!(request(&mut client, "/healthz").0, 200);

    // The whole new pair: new connections get it, the old one is still served.
    std::fs::copy(&second.key, &live.key).unwrap();
    d.signal("HUP");
    d.wait_log("TLS certificate and key re-read", 1);
    assert!(subject_cn(https, &ca.cert).contains("CN=second"));
    let (status, body) = request(&mut client, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("tracerd_"), "{body}");
    let (code, _, err) = curl(&[
        "--cacert",
        ca.cert.to_str().unwrap(),
        &url(https, "/healthz", "https"),
    ]);
    assert_eq!(code, 0, "{err}");
}
