//! HTTPS on the HTTP endpoints, with cardano-tracer's meaning of its keys: an endpoint with
//! `epForceSSL: true` serves HTTPS only, with the top-level `tlsCertificate`
//! (`certificateFile`, `certificateKeyFile`, `certificateChain`); every other endpoint serves
//! plain HTTP. A plain-HTTP request to an HTTPS endpoint gets what warp-tls answers it
//! (cardano-tracer's `DenyInsecure` default): `426 Upgrade Required` and the text "This
//! server only accepts secure HTTP connections.", then the connection is closed.
//!
//! The certificate store is `transport::tls`'s, shared by every HTTPS endpoint and re-read on
//! SIGHUP.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::config::{Config, Endpoint};
use crate::transport::tls::{self, CertFiles, CertStore, TlsError};

/// warp-tls's answer to plain HTTP on a TLS port (its `DenyInsecure` default message), plus a
/// `Content-Length` so clients need not wait for the close.
pub const DENY_INSECURE: &[u8] = b"HTTP/1.1 426 Upgrade Required\r\n\
Upgrade: TLS/1.0, HTTP/1.1\r\n\
Connection: Upgrade, close\r\n\
Content-Type: text/plain\r\n\
Content-Length: 49\r\n\
\r\n\
This server only accepts secure HTTP connections.";

/// The certificate store of `tlsCertificate`, when set.
pub fn open_store(config: &Config) -> Result<Option<Arc<CertStore>>, TlsError> {
    let Some(c) = &config.tls_certificate else {
        return Ok(None);
    };
    let files = CertFiles {
        cert: c.certificate_file.clone().into(),
        key: c.certificate_key_file.clone().into(),
        chain: c.certificate_chain.iter().map(Into::into).collect(),
    };
    CertStore::open(files).map(|s| Some(Arc::new(s)))
}

/// The TLS config of `endpoint`: `Some` exactly when it has `epForceSSL: true` and a
/// certificate is configured (cardano-tracer serves plain HTTP otherwise).
pub fn endpoint_config(
    endpoint: &Endpoint,
    store: Option<&Arc<CertStore>>,
) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
    match (endpoint.ep_force_ssl, store) {
        (Some(true), Some(store)) => {
            tls::server_config(store.clone(), None, &[b"http/1.1"]).map(Some)
        }
        _ => Ok(None),
    }
}

/// What a new connection on an HTTPS endpoint turned out to be.
pub enum Accepted {
    /// A completed TLS handshake.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// Nothing usable: plain HTTP (answered with [`DENY_INSECURE`]), a failed handshake, or
    /// a client that sent nothing within the deadline.
    Refused(&'static str),
}

/// Waits (at most `deadline`) for the client's first byte: a TLS record is handshaken, the
/// rest is answered with [`DENY_INSECURE`] and closed.
pub async fn accept(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    deadline: Duration,
) -> Accepted {
    let work = async move {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(1) if tls::is_tls_record(first[0]) => {}
            Ok(1) => {
                let mut stream = stream;
                let _ = stream.write_all(DENY_INSECURE).await;
                let _ = stream.shutdown().await;
                return Accepted::Refused("plain HTTP on an HTTPS endpoint");
            }
            _ => return Accepted::Refused("closed before the TLS handshake"),
        }
        match tokio_rustls::TlsAcceptor::from(config).accept(stream).await {
            Ok(s) => Accepted::Tls(Box::new(s)),
            Err(_) => Accepted::Refused("TLS handshake failed"),
        }
    };
    tokio::time::timeout(deadline, work)
        .await
        .unwrap_or(Accepted::Refused("TLS handshake timed out"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(force: Option<bool>) -> Endpoint {
        Endpoint {
            ep_host: "127.0.0.1".into(),
            ep_port: 1,
            ep_force_ssl: force,
        }
    }

    #[test]
    fn the_refusal_is_one_whole_http_response() {
        let text = std::str::from_utf8(DENY_INSECURE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 426 "));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }

    #[test]
    fn without_a_certificate_or_ep_force_ssl_the_endpoint_is_plain() {
        for force in [None, Some(false), Some(true)] {
            assert!(endpoint_config(&ep(force), None).unwrap().is_none());
        }
    }
}
