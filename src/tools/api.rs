//! The pure half of `tracerd nodes` and `tracerd status`: where to ask (`Target`), reading an
//! HTTP/1.1 response (`parse_response`), and rendering `/api/nodes` as a table or a summary.
//! No I/O.

use std::fmt::Write as _;

use serde::Deserialize;

/// Errors of the pure half.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApiError {
    #[error("bad --url {url:?}: {reason}")]
    BadUrl { url: String, reason: &'static str },
    #[error("the response is not HTTP/1.x: {0}")]
    BadResponse(String),
    #[error("{0}")]
    Status(String),
}

/// The daemon's HTTP endpoint: `host:port` (a name, an IPv4 or a bracketed IPv6 address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

impl Target {
    /// `http://host:port[/]` or `host:port`; nothing else (no https, no path).
    pub fn parse(url: &str) -> Result<Target, ApiError> {
        let bad = |reason| ApiError::BadUrl {
            url: url.to_string(),
            reason,
        };
        if url.starts_with("https://") {
            return Err(bad("tracerd serves plain HTTP; use http://"));
        }
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(bad("give only http://HOST:PORT, without a path"));
        }
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| bad("expected http://HOST:PORT"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        Ok(Target {
            host: host.to_string(),
            port,
        })
    }

    /// `host:port` for `ToSocketAddrs` (brackets removed from an IPv6 literal).
    pub fn socket_addr_text(&self) -> String {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        if host.contains(':') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// The request tracerd's HTTP server answers with a body and then closes.
    pub fn request(&self, path: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {}:{}\r\nAccept: application/json\r\nConnection: close\r\nUser-Agent: tracerd-cli\r\n\r\n",
            self.host, self.port
        )
    }

    /// A `POST` of the JSON `body` to `path`.
    pub fn post(&self, path: &str, body: &str) -> String {
        format!(
            "POST {path} HTTP/1.1\r\nHost: {}:{}\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: tracerd-cli\r\n\r\n{body}",
            self.host,
            self.port,
            body.len()
        )
    }
}

/// A whole HTTP/1.x response read to EOF → (status code, body). Handles `Content-Length`,
/// `Transfer-Encoding: chunked` and a body delimited by the connection's end.
pub fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), ApiError> {
    let bad = |what: &str| ApiError::BadResponse(what.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(bad(&format!("status line {status_line:?}")));
    }
    let code = parts
        .next()
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| bad(&format!("status line {status_line:?}")))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| bad("bad Content-Length"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let body = &raw[end + 4..];
    let body = if chunked {
        dechunk(body).ok_or_else(|| bad("bad chunked body"))?
    } else if let Some(n) = length {
        body.get(..n)
            .ok_or_else(|| bad("the body is shorter than its Content-Length"))?
            .to_vec()
    } else {
        body.to_vec()
    };
    Ok((code, body))
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..eol]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        body = &body[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

/// One entry of `/api/nodes` (docs/HTTP.md), the fields the table shows.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeEntry {
    pub name: String,
    pub slug: String,
    pub protocol: String,
    pub peer: String,
    pub connected_since: String,
    pub last_message_at: Option<String>,
    pub rtt_seconds: Option<f64>,
    pub metrics: u64,
    #[serde(default)]
    pub data_points: Vec<String>,
    pub objects_received: u64,
    pub objects_written: u64,
    pub bytes_written: u64,
    pub refused: u64,
    pub write_queue_batches: Option<u64>,
}

/// `/api/nodes`'s body → its entries, or why not.
pub fn parse_nodes(body: &[u8]) -> Result<Vec<NodeEntry>, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadResponse(format!("/api/nodes is not the expected JSON: {e}")))
}

/// The node list as an aligned text table, one row per node (sorted by name), `-` for
/// what is not known yet.
pub fn table(nodes: &[NodeEntry]) -> String {
    let header = [
        "NAME",
        "SLUG",
        "PROTOCOL",
        "PEER",
        "CONNECTED SINCE",
        "LAST MESSAGE",
        "RTT ms",
        "METRICS",
        "RECEIVED",
        "WRITTEN",
        "BYTES",
        "REFUSED",
        "QUEUE",
    ];
    let mut sorted: Vec<&NodeEntry> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for n in sorted {
        rows.push(vec![
            printable(&n.name),
            n.slug.clone(),
            n.protocol.clone(),
            printable(&n.peer),
            n.connected_since.clone(),
            n.last_message_at.clone().unwrap_or_else(|| "-".into()),
            n.rtt_seconds
                .map_or("-".into(), |s| format!("{:.3}", s * 1000.0)),
            n.metrics.to_string(),
            n.objects_received.to_string(),
            n.objects_written.to_string(),
            n.bytes_written.to_string(),
            n.refused.to_string(),
            n.write_queue_batches.map_or("-".into(), |q| q.to_string()),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let _ = write!(line, "{cell:<width$}", width = widths[i]);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A node name as it is safe to print on a terminal: control characters escaped.
fn printable(s: &str) -> String {
    s.chars().flat_map(char::escape_debug).collect::<String>()
}

/// What `tracerd status` reports.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub url: String,
    pub ready: bool,
    pub nodes: usize,
    pub native: usize,
    pub cardano: usize,
    pub objects_received: u64,
    pub objects_written: u64,
    pub bytes_written: u64,
    pub refused: u64,
}

impl Status {
    pub fn new(url: String, ready: bool, nodes: &[NodeEntry]) -> Status {
        let count = |p: &str| nodes.iter().filter(|n| n.protocol == p).count();
        Status {
            url,
            ready,
            nodes: nodes.len(),
            native: count("native"),
            cardano: count("cardano"),
            objects_received: nodes.iter().map(|n| n.objects_received).sum(),
            objects_written: nodes.iter().map(|n| n.objects_written).sum(),
            bytes_written: nodes.iter().map(|n| n.bytes_written).sum(),
            refused: nodes.iter().map(|n| n.refused).sum(),
        }
    }

    pub fn text(&self) -> String {
        format!(
            "tracerd at {}: {}\nnodes connected: {} (native {}, cardano {})\nobjects received: {}, written: {}, bytes written: {}, metrics refused: {}\n",
            self.url,
            if self.ready { "ready" } else { "not ready" },
            self.nodes,
            self.native,
            self.cardano,
            self.objects_received,
            self.objects_written,
            self.bytes_written,
            self.refused,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = Target::parse("http://127.0.0.1:12808/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 12808));
        assert_eq!(t.socket_addr_text(), "127.0.0.1:12808");
        assert_eq!(
            Target::parse("[::1]:80").unwrap().socket_addr_text(),
            "[::1]:80"
        );
        for bad in [
            "https://x:1",
            "http://x",
            "http://x:99999",
            "http://x:1/api",
            ":1",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn responses() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]";
        assert_eq!(parse_response(raw).unwrap(), (200, b"[]".to_vec()));
        let raw =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[{\r\n1\r\n}\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw).unwrap().1, b"[{}".to_vec());
        let raw = b"HTTP/1.0 404 Not Found\r\n\r\nNot found: api";
        assert_eq!(
            parse_response(raw).unwrap(),
            (404, b"Not found: api".to_vec())
        );
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n[]").is_err());
    }

    #[test]
    fn table_and_status() {
        let body = br#"[{"name":"b\u001b[31m","slug":"b","protocol":"cardano","peer":"p","connectedSince":"t","lastMessageAt":null,"rttSeconds":null,"metrics":0,"dataPoints":[],"objectsReceived":1,"objectsWritten":1,"bytesWritten":10,"refused":0,"writeQueueBatches":null},
{"name":"a","slug":"a","protocol":"native","peer":"q","connectedSince":"t","lastMessageAt":"u","rttSeconds":0.0005,"metrics":3,"dataPoints":["NodeInfo"],"objectsReceived":5,"objectsWritten":4,"bytesWritten":100,"refused":2,"writeQueueBatches":0}]"#;
        let nodes = parse_nodes(body).unwrap();
        let t = table(&nodes);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("NAME"));
        assert!(lines[1].starts_with("a "));
        assert!(lines[1].contains("0.500"));
        assert!(lines[2].starts_with("b\\u{1b}[31m"), "{t}");
        let s = Status::new("http://x:1".into(), true, &nodes);
        assert_eq!((s.nodes, s.native, s.cardano), (2, 1, 1));
        assert_eq!(
            (s.objects_received, s.bytes_written, s.refused),
            (6, 110, 2)
        );
        assert!(s.text().contains("ready\n"));
    }
}
