//! Commands for operators that run beside the daemon, not in it: `tracerd nodes` and
//! `tracerd status` ask a running tracerd over its HTTP endpoint (`hasPrometheus` of the same
//! config, or `--url`) what is connected, and `tracerd nodes config NAME` a node's tracing
//! configuration; `tracerd man` and `tracerd completions SHELL` print
//! the man page and completion scripts generated from the clap definition.
//!
//! The shell here is blocking (it runs before and instead of the runtime); what it reads is
//! parsed and rendered by the pure `api`.

pub mod api;
pub mod runs;

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::config::Config;
pub use api::{ApiError, NodeEntry, Status, Target};

/// At most this much of a response is read (a few thousand nodes' entries fit many times).
const MAX_RESPONSE_BYTES: u64 = 64 << 20;

/// Options of `tracerd nodes` and `tracerd status`.
#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    /// The daemon's HTTP endpoint, `http://HOST:PORT`. Default: `hasPrometheus` of the config
    /// given with `-c` (or of the embedded defaults, 127.0.0.1:12808).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Print JSON instead of a table: `nodes` prints `/api/nodes` as the daemon sent it.
    #[arg(long)]
    pub json: bool,
    /// Give up after this many seconds (connect and read).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub timeout: f64,
}

/// Options of `tracerd nodes`: the list, or one of its subcommands.
#[derive(Debug, Clone, clap::Args)]
pub struct NodesArgs {
    #[command(flatten)]
    pub query: QueryArgs,
    #[command(subcommand)]
    pub what: Option<NodesCommand>,
}

/// Subcommands of `tracerd nodes`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum NodesCommand {
    /// Print a node's effective tracing configuration, as it last reported it (cardano-node's
    /// `Reflection.TracerConfigInfo`), with when it did: YAML, or with `--json` the daemon's
    /// `/api/nodes/<slug>/tracer-config` document.
    Config {
        /// The node's name (as `tracerd nodes` lists it) or its slug.
        name: String,
        #[command(flatten)]
        query: QueryArgs,
    },
}

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("the config has no hasPrometheus endpoint to ask; pass --url http://HOST:PORT")]
    NoEndpoint,
    #[error("--timeout must be a positive number of seconds, not {0}")]
    BadTimeout(f64),
    #[error("{0}")]
    BadArgument(String),
    #[error("cannot reach tracerd at {url}: {source} (is it running, and is that its hasPrometheus endpoint?)")]
    Unreachable {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no node named {name:?} is connected to tracerd at {url} (connected: {known})")]
    NoSuchNode {
        name: String,
        url: String,
        known: String,
    },
    #[error("{url}{path} answered {code}: {body}")]
    Http {
        url: String,
        path: String,
        code: u16,
        body: String,
    },
}

impl QueryArgs {
    fn target(&self, config: &Config) -> Result<Target, QueryError> {
        match &self.url {
            Some(url) => Ok(Target::parse(url)?),
            None => {
                let ep = config
                    .has_prometheus
                    .as_ref()
                    .ok_or(QueryError::NoEndpoint)?;
                // A daemon listening on every address is reached on loopback.
                let host = match ep.ep_host.as_str() {
                    "0.0.0.0" | "" => "127.0.0.1".to_string(),
                    "::" | "[::]" => "[::1]".to_string(),
                    h if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
                    h => h.to_string(),
                };
                Ok(Target {
                    host,
                    port: ep.ep_port,
                })
            }
        }
    }

    fn timeout(&self) -> Result<Duration, QueryError> {
        if self.timeout.is_finite() && self.timeout > 0.0 && self.timeout < 86_400.0 {
            Ok(Duration::from_secs_f64(self.timeout))
        } else {
            Err(QueryError::BadTimeout(self.timeout))
        }
    }
}

/// GET `path` from `target`: (status code, body). Blocking, bounded by `timeout` overall.
fn get(target: &Target, path: &str, timeout: Duration) -> Result<(u16, Vec<u8>), QueryError> {
    exchange(target, &target.request(path), timeout)
}

/// Sends the whole HTTP `request` to `target`: (status code, body). Blocking, bounded by
/// `timeout` overall.
fn exchange(
    target: &Target,
    request: &str,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), QueryError> {
    let unreachable = |source| QueryError::Unreachable {
        url: target.url(),
        source,
    };
    let deadline = Instant::now() + timeout;
    let addrs: Vec<_> = target
        .socket_addr_text()
        .to_socket_addrs()
        .map_err(unreachable)?
        .collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    let mut stream = None;
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut stream = stream.ok_or_else(|| unreachable(last))?;
    let io = |stream: &mut TcpStream| -> std::io::Result<Vec<u8>> {
        let left = deadline.saturating_duration_since(Instant::now());
        let left = left.max(Duration::from_millis(1));
        stream.set_write_timeout(Some(left))?;
        stream.set_read_timeout(Some(left))?;
        stream.write_all(request.as_bytes())?;
        let mut raw = Vec::new();
        stream.take(MAX_RESPONSE_BYTES).read_to_end(&mut raw)?;
        Ok(raw)
    };
    let raw = io(&mut stream).map_err(unreachable)?;
    Ok(api::parse_response(&raw)?)
}

fn get_ok(target: &Target, path: &str, timeout: Duration) -> Result<Vec<u8>, QueryError> {
    let (code, body) = get(target, path, timeout)?;
    if code != 200 {
        let mut body = String::from_utf8_lossy(&body).into_owned();
        body.truncate(200);
        return Err(QueryError::Http {
            url: target.url(),
            path: path.to_string(),
            code,
            body,
        });
    }
    Ok(body)
}

/// `tracerd nodes`: the table (or the JSON) to print.
pub fn nodes(args: &QueryArgs, config: &Config) -> Result<String, QueryError> {
    let target = args.target(config)?;
    let body = get_ok(&target, "/api/nodes", args.timeout()?)?;
    let nodes = api::parse_nodes(&body)?;
    if args.json {
        let mut text = String::from_utf8_lossy(&body).into_owned();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        return Ok(text);
    }
    if nodes.is_empty() {
        return Ok(format!(
            "no node is connected to tracerd at {}\n",
            target.url()
        ));
    }
    Ok(api::table(&nodes))
}

/// `tracerd nodes config NAME`: the node's tracing configuration document, as YAML (or the
/// daemon's JSON with `--json`).
pub fn node_config(name: &str, args: &QueryArgs, config: &Config) -> Result<String, QueryError> {
    let target = args.target(config)?;
    let timeout = args.timeout()?;
    let nodes = api::parse_nodes(&get_ok(&target, "/api/nodes", timeout)?)?;
    let Some(node) = nodes.iter().find(|n| n.name == name || n.slug == name) else {
        let known: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        return Err(QueryError::NoSuchNode {
            name: name.to_string(),
            url: target.url(),
            known: if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            },
        });
    };
    let path = format!("/api/nodes/{}/tracer-config", node.slug);
    let body = get_ok(&target, &path, timeout)?;
    let doc: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadResponse(format!("{path} is not the expected JSON: {e}")))?;
    let mut text = if args.json {
        doc.to_string()
    } else {
        serde_norway::to_string(&doc)
            .map_err(|e| ApiError::BadResponse(format!("{path} cannot be shown as YAML: {e}")))?
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// `tracerd status`: readiness and totals over `/readyz` and `/api/nodes`.
pub fn status(args: &QueryArgs, config: &Config) -> Result<String, QueryError> {
    let target = args.target(config)?;
    let timeout = args.timeout()?;
    let (code, _) = get(&target, "/readyz", timeout)?;
    let nodes = api::parse_nodes(&get_ok(&target, "/api/nodes", timeout)?)?;
    let status = Status::new(target.url(), code == 200, &nodes);
    if args.json {
        let mut text = serde_json::to_string(&status).unwrap_or_default();
        text.push('\n');
        return Ok(text);
    }
    Ok(status.text())
}

/// `tracerd man`: the man page of `cmd` in roff.
pub fn man(cmd: clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    clap_mangen::Man::new(cmd).render(out)
}

/// `tracerd completions SHELL`: the completion script of `cmd` for `shell`.
pub fn completions(shell: clap_complete::Shell, mut cmd: clap::Command, out: &mut dyn Write) {
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, out);
}
