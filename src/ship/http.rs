//! The sinks' HTTP/1.1 client: one kept-alive connection per sink over hyper's client
//! connection, each request bounded by a timeout. `http://`, or `https://` with a rustls
//! client config (`ship::tls`) that checks the server's certificate against the URL's host.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use std::time::Duration;

/// Largest response body read (ClickHouse's answers to tracerd's queries are small).
const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// What went wrong with one request.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not `http[s]://host:port[/path]`, or `https://` without a TLS config.
    #[error("{0:?} is not an http[s]://host[:port][/path] URL (https needs tls.caFile)")]
    BadUrl(String),
    /// The TLS handshake failed (certificate refused, protocol error).
    #[error("TLS with {0}: {1}")]
    Tls(String, std::io::Error),
    /// TCP connect failed.
    #[error("connecting to {0}: {1}")]
    Connect(String, std::io::Error),
    /// The request or its response failed on the wire.
    #[error("request to {0}: {1}")]
    Wire(String, String),
    /// No complete response within the timeout.
    #[error("no response from {0} within {1:?}")]
    Timeout(String, Duration),
}

impl HttpError {
    /// A bounded label for `tracerd_sink_requests_failed_total{reason}`.
    pub fn label(&self) -> &'static str {
        match self {
            HttpError::BadUrl(_) => "bad_url",
            HttpError::Connect(..) => "connect",
            HttpError::Tls(..) => "tls",
            HttpError::Wire(..) => "wire",
            HttpError::Timeout(..) => "timeout",
        }
    }
}

/// A response: status and body.
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The body (at most 16 MiB).
    pub body: Bytes,
}

impl Response {
    /// The body as text, for log lines (cut to 300 bytes).
    pub fn snippet(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        let mut cut = text.len().min(300);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text[..cut].to_string()
    }
}

/// One remote HTTP endpoint with its kept-alive connection.
pub struct Client {
    authority: String,
    base_path: String,
    conn: Option<SendRequest<Full<Bytes>>>,
    tls: Option<(
        std::sync::Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
}

impl Client {
    /// A client of `url` (`http://host:port[/path]`); connects at the first request.
    pub fn new(url: &str) -> Result<Client, HttpError> {
        Client::with_tls(url, None)
    }

    /// A client of `url`: `http://`, or `https://` over `tls` (required for it, refused for
    /// `http://`). Connects at the first request.
    pub fn with_tls(
        url: &str,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Result<Client, HttpError> {
        let bad = || HttpError::BadUrl(url.to_string());
        let (rest, default_port) = match (url.strip_prefix("http://"), &tls) {
            (Some(rest), None) => (rest, 80),
            (None, Some(_)) => (url.strip_prefix("https://").ok_or_else(bad)?, 443),
            _ => return Err(bad()),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(HttpError::BadUrl(url.to_string()));
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            && !authority.ends_with(']')
        {
            authority.to_string()
        } else {
            format!("{authority}:{default_port}")
        };
        let tls = match tls {
            None => None,
            Some(config) => {
                let host = authority
                    .rsplit_once(':')
                    .map_or(authority.as_str(), |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name =
                    rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|_| bad())?;
                Some((config, name))
            }
        };
        Ok(Client {
            authority,
            base_path: path.trim_end_matches('/').to_string(),
            conn: None,
            tls,
        })
    }

    /// `host:port`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// POSTs `body` to the URL's path followed by `path_and_query`, with `headers`, within
    /// `timeout` (connecting included). A failed request drops the connection.
    pub async fn post(
        &mut self,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<Response, HttpError> {
        let mut uri = format!("{}{}", self.base_path, path_and_query);
        if uri.is_empty() {
            uri.push('/');
        }
        let result = tokio::time::timeout(timeout, self.exchange(&uri, headers, body)).await;
        match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(HttpError::Timeout(self.authority.clone(), timeout))
            }
        }
    }

    async fn exchange(
        &mut self,
        uri: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response, HttpError> {
        let wire =
            |e: &dyn std::fmt::Display| HttpError::Wire(self.authority.clone(), e.to_string());
        let reusable = match &mut self.conn {
            Some(c) => c.ready().await.is_ok(),
            None => false,
        };
        if !reusable {
            let stream = tokio::net::TcpStream::connect(&self.authority)
                .await
                .map_err(|e| HttpError::Connect(self.authority.clone(), e))?;
            let _ = stream.set_nodelay(true);
            let send = match &self.tls {
                None => handshake(stream).await.map_err(|e| wire(&e))?,
                Some((config, name)) => {
                    let tls = tokio_rustls::TlsConnector::from(config.clone())
                        .connect(name.clone(), stream)
                        .await
                        .map_err(|e| HttpError::Tls(self.authority.clone(), e))?;
                    handshake(tls).await.map_err(|e| wire(&e))?
                }
            };
            self.conn = Some(send);
        }
        let mut req = hyper::Request::post(uri)
            .header(hyper::header::HOST, &self.authority)
            .header(
                hyper::header::USER_AGENT,
                concat!("tracerd/", env!("CARGO_PKG_VERSION")),
            )
            // Also for an empty body: ClickHouse refuses a POST without one (411).
            .header(hyper::header::CONTENT_LENGTH, body.len());
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Full::new(body)).map_err(|e| wire(&e))?;
        let conn = self.conn.as_mut().expect("connected above");
        let resp = conn.send_request(req).await.map_err(|e| wire(&e))?;
        let status = resp.status().as_u16();
        let limited = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE_BYTES);
        let body = limited
            .collect()
            .await
            .map_err(|e| HttpError::Wire(self.authority.clone(), e.to_string()))?
            .to_bytes();
        Ok(Response { status, body })
    }
}

/// HTTP/1.1 over `io`, its connection driven by a task of its own.
async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>, hyper::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// `Basic <base64(user:password)>`.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_basic_auth() {
        let c = Client::new("http://127.0.0.1:8123").unwrap();
        assert_eq!(
            (c.authority(), c.base_path.as_str()),
            ("127.0.0.1:8123", "")
        );
        let c = Client::new("http://example.org/prefix/").unwrap();
        assert_eq!(
            (c.authority(), c.base_path.as_str()),
            ("example.org:80", "/prefix")
        );
        assert!(Client::new("https://x:1").is_err());
        let tls = crate::ship::tls::client_config_for_tests();
        let c = Client::with_tls("https://127.0.0.1/api/v1/write", Some(tls.clone())).unwrap();
        assert_eq!(c.authority(), "127.0.0.1:443");
        assert!(Client::with_tls("http://127.0.0.1:1", Some(tls)).is_err());
        assert!(Client::new("http://u:p@x:1").is_err());
        assert_eq!(
            basic_auth("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(basic_auth("a", ""), "Basic YTo=");
    }
}
