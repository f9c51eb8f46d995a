//! Settings of the shipping sinks (issue 18): `tracerd.clickhouse`, `tracerd.loki`,
//! `tracerd.remoteWrite` (with the clients' `tls`) and `tracerd.shipStateDir`.
//! Types only (serde); the shape of each key is declared in `shape.rs`, cross-key checks in
//! `validate.rs`, the sinks themselves in `crate::ship`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Default ClickHouse database.
pub const DEFAULT_CLICKHOUSE_DATABASE: &str = "tracerd";
/// Default ClickHouse table.
pub const DEFAULT_CLICKHOUSE_TABLE: &str = "traces";
/// Default most rows of one insert.
pub const DEFAULT_BATCH_ROWS: u64 = 50_000;
/// Default most bytes of log lines read for one insert.
pub const DEFAULT_BATCH_BYTES: u64 = 16 << 20;
/// Default pause between two looks at the files when everything was sent, in milliseconds.
pub const DEFAULT_POLL_MS: u64 = 500;
/// Default time one request may take, in seconds.
pub const DEFAULT_SHIP_TIMEOUT_SECS: f64 = 30.0;

fn default_database() -> String {
    DEFAULT_CLICKHOUSE_DATABASE.to_string()
}

fn default_table() -> String {
    DEFAULT_CLICKHOUSE_TABLE.to_string()
}

/// `tracerd.clickhouse`: every node's machine-format trace lines, inserted into one ClickHouse
/// table over its HTTP interface (schema in README.md, "Shipping to ClickHouse").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClickhouseSettings {
    /// ClickHouse's HTTP interface, `http://host:port` (its default port is 8123).
    pub url: String,
    /// Database, created if absent. Default `tracerd`.
    #[serde(default = "default_database")]
    pub database: String,
    /// Table, created if absent. Default `traces`.
    #[serde(default = "default_table")]
    pub table: String,
    /// ClickHouse user (HTTP basic auth); default: ClickHouse's `default` user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// File holding the user's password (first line; trailing newline ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// This tracerd's name in the `tracer` column (which tracerd shipped a row; each tracerd
    /// shipping into one table needs its own). Default: the host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracer: Option<String>,
    /// Batching and timing.
    #[serde(default, skip_serializing_if = "ShipBatch::is_default")]
    pub batch: ShipBatch,
}

/// How a sink batches what it reads from the files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShipBatch {
    /// Most rows (trace objects) in one request. Default 50000.
    #[serde(default = "default_batch_rows")]
    pub max_rows: u64,
    /// Most bytes of log lines read for one request. Default 16 MiB.
    #[serde(default = "default_batch_bytes")]
    pub max_bytes: u64,
    /// Pause between two looks at the files once everything was sent, in milliseconds.
    /// Default 500.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Time one request may take, in seconds. Default 30.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: f64,
}

fn default_batch_rows() -> u64 {
    DEFAULT_BATCH_ROWS
}
fn default_batch_bytes() -> u64 {
    DEFAULT_BATCH_BYTES
}
fn default_poll_ms() -> u64 {
    DEFAULT_POLL_MS
}
fn default_timeout_secs() -> f64 {
    DEFAULT_SHIP_TIMEOUT_SECS
}

impl Default for ShipBatch {
    fn default() -> ShipBatch {
        ShipBatch {
            max_rows: DEFAULT_BATCH_ROWS,
            max_bytes: DEFAULT_BATCH_BYTES,
            poll_ms: DEFAULT_POLL_MS,
            timeout_secs: DEFAULT_SHIP_TIMEOUT_SECS,
        }
    }
}

impl ShipBatch {
    /// True when every value is the default (kept out of the printed config).
    pub fn is_default(&self) -> bool {
        *self == ShipBatch::default()
    }

    /// The request timeout as a `Duration` (the shape bounds it to an hour).
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.timeout_secs.clamp(0.1, 3600.0))
    }
}

/// Whether `name` is a plain ClickHouse identifier (`[A-Za-z_][A-Za-z0-9_]*`), so it can be
/// written into a query unquoted.
pub fn is_plain_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 128
}

/// The problems of a `tracerd.clickhouse` section (key, message); pure.
pub(super) fn check_clickhouse(
    ch: &ClickhouseSettings,
    logging: &[super::LoggingParams],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if !ch.url.starts_with("http://") {
        out.push((
            "tracerd.clickhouse.url".to_string(),
            format!(
                "{:?} is not an http:// URL (ClickHouse's HTTP interface, e.g. http://127.0.0.1:8123; https is not supported)",
                ch.url
            ),
        ));
    }
    for (key, value) in [("database", &ch.database), ("table", &ch.table)] {
        if !is_plain_identifier(value) {
            out.push((
                format!("tracerd.clickhouse.{key}"),
                format!("{value:?} must be letters, digits and '_', not starting with a digit"),
            ));
        }
    }
    if ch.tracer.as_ref().is_some_and(|t| t.is_empty()) {
        out.push((
            "tracerd.clickhouse.tracer".to_string(),
            "must not be empty".to_string(),
        ));
    }
    let machine_files = logging.iter().any(|t| {
        t.log_mode == super::LogMode::FileMode && t.log_format == super::LogFormat::ForMachine
    });
    if !machine_files {
        out.push((
            "tracerd.clickhouse".to_string(),
            "ships the machine-format files: add a logging target with logMode FileMode and logFormat ForMachine".to_string(),
        ));
    }
    out
}

/// One `tracerd.remoteWrite` entry: every series of `/metrics`, sampled every `intervalSecs`,
/// sent with Prometheus remote_write 1.0 (README.md, "Prometheus remote_write").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteWriteSettings {
    /// The receiver, e.g. `http://127.0.0.1:9090/api/v1/write` (`https://` with `tls`).
    pub url: String,
    /// TLS for an `https://` URL: the server's CA, and a client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
    /// File holding a bearer token (first line), sent as `Authorization: Bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
    /// HTTP basic auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// Labels added to every series (e.g. `tracer: site-a`); a series' own label wins.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub external_labels: std::collections::BTreeMap<String, String>,
    /// Sampling period, in seconds. Default 15.
    #[serde(default = "default_rw_interval")]
    pub interval_secs: f64,
    /// The queue between sampling and sending.
    #[serde(default, skip_serializing_if = "RemoteWriteQueue::is_default")]
    pub queue: RemoteWriteQueue,
    /// Time one request may take, in seconds. Default 30.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: f64,
}

fn default_rw_interval() -> f64 {
    15.0
}

/// `basicAuth` of a remote_write entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// File holding the password (first line).
    pub password_file: PathBuf,
}

/// The bounded, sharded queue of a remote_write entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteWriteQueue {
    /// Samples waiting per shard; past it the oldest are dropped (counted). Default 100000.
    #[serde(default = "default_rw_capacity")]
    pub capacity: u64,
    /// Shards (parallel senders; a series always goes through the same one). Default 2.
    #[serde(default = "default_rw_shards")]
    pub shards: u64,
    /// Most samples in one request. Default 2000.
    #[serde(default = "default_rw_max_samples")]
    pub max_samples_per_send: u64,
    /// Longest pause between two retries, in seconds. Default 5 (Prometheus's `max_backoff`).
    #[serde(default = "default_rw_max_backoff")]
    pub max_backoff_secs: f64,
}

fn default_rw_capacity() -> u64 {
    100_000
}
fn default_rw_shards() -> u64 {
    2
}
fn default_rw_max_samples() -> u64 {
    2000
}
fn default_rw_max_backoff() -> f64 {
    5.0
}

impl Default for RemoteWriteQueue {
    fn default() -> RemoteWriteQueue {
        RemoteWriteQueue {
            capacity: default_rw_capacity(),
            shards: default_rw_shards(),
            max_samples_per_send: default_rw_max_samples(),
            max_backoff_secs: default_rw_max_backoff(),
        }
    }
}

impl RemoteWriteQueue {
    /// True when every value is the default.
    pub fn is_default(&self) -> bool {
        *self == RemoteWriteQueue::default()
    }
}

/// The problems of one `tracerd.remoteWrite` entry (key, message); pure.
pub(super) fn check_remote_write(i: usize, rw: &RemoteWriteSettings) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if !rw.url.starts_with("http://") && !rw.url.starts_with("https://") {
        out.push((
            format!("tracerd.remoteWrite[{i}].url"),
            format!("{:?} is not an http:// or https:// URL", rw.url),
        ));
    }
    out.extend(check_client_tls(
        &format!("tracerd.remoteWrite[{i}]"),
        &rw.url,
        rw.tls.as_ref(),
    ));
    for name in rw.external_labels.keys() {
        let mut b = name.bytes();
        let ok = b
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
            && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
            && !name.starts_with("__");
        if !ok {
            out.push((
                format!("tracerd.remoteWrite[{i}].externalLabels"),
                format!(
                    "{name:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"
                ),
            ));
        }
    }
    out
}

/// Default most entries of one Loki push.
pub const DEFAULT_LOKI_BATCH_ENTRIES: u64 = 10_000;
/// Default most bytes of log lines in one Loki push (Promtail's `batchsize`, 1 MiB: a push
/// far above Loki's per-stream burst would be refused with 429 for ever).
pub const DEFAULT_LOKI_BATCH_BYTES: u64 = 1 << 20;
/// Labels tracerd sets on every Loki stream itself.
pub const LOKI_OWN_LABELS: [&str; 3] = ["node", "level", "namespace"];

/// `tracerd.loki`: every node's machine-format trace lines pushed to Grafana Loki
/// (`POST /loki/api/v1/push`, Snappy-compressed protobuf; README.md, "Shipping to Loki").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LokiSettings {
    /// Loki's base URL, e.g. `http://127.0.0.1:3100` (the push path is added).
    pub url: String,
    /// Sent as `X-Scope-OrgID` (Loki's tenant); none: Loki's single-tenant mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Static labels added to every stream (e.g. `tracer: site-a`); the stream's own labels
    /// are `node`, `level` and `namespace`, which these may not name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Extra request headers (e.g. for a gateway in front of Loki).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
    /// TLS for an `https://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
    /// Batching and timing.
    #[serde(default, skip_serializing_if = "LokiBatch::is_default")]
    pub batch: LokiBatch,
}

/// How the Loki sink batches what it reads from the files (Loki's limits are per push, so
/// its defaults are smaller than ClickHouse's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LokiBatch {
    /// Most entries (trace objects) in one push. Default 10000.
    #[serde(default = "default_loki_entries")]
    pub max_rows: u64,
    /// Most bytes of log lines in one push. Default 1 MiB.
    #[serde(default = "default_loki_bytes")]
    pub max_bytes: u64,
    /// Pause between two looks at the files once everything was sent, in ms. Default 500.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Time one push may take, in seconds. Default 30.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: f64,
}

fn default_loki_entries() -> u64 {
    DEFAULT_LOKI_BATCH_ENTRIES
}
fn default_loki_bytes() -> u64 {
    DEFAULT_LOKI_BATCH_BYTES
}

impl Default for LokiBatch {
    fn default() -> LokiBatch {
        LokiBatch {
            max_rows: DEFAULT_LOKI_BATCH_ENTRIES,
            max_bytes: DEFAULT_LOKI_BATCH_BYTES,
            poll_ms: DEFAULT_POLL_MS,
            timeout_secs: DEFAULT_SHIP_TIMEOUT_SECS,
        }
    }
}

impl LokiBatch {
    /// True when every value is the default.
    pub fn is_default(&self) -> bool {
        *self == LokiBatch::default()
    }

    /// The request timeout as a `Duration` (the shape bounds it).
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.timeout_secs.clamp(0.1, 3600.0))
    }
}

/// `tls` of an HTTP client (remote_write, Loki): the CA that signs the server's certificate
/// (default: none trusted but that one — there is no system store), and a client certificate
/// for mutual TLS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientTls {
    /// PEM CA certificate(s) trusted for the server's certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate chain (with `keyFile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `certFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

/// Whether `name` is a Prometheus/Loki label name not reserved (`__`).
fn is_label_name(name: &str) -> bool {
    let mut b = name.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && !name.starts_with("__")
}

/// The problems of a client `tls` section under `key`, for `url` (key, message); pure.
fn check_client_tls(key: &str, url: &str, tls: Option<&ClientTls>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match tls {
        Some(t) => {
            if !url.starts_with("https://") {
                out.push((
                    format!("{key}.tls"),
                    format!("is set but the URL {url:?} is not https://"),
                ));
            }
            if t.cert_file.is_some() != t.key_file.is_some() {
                out.push((
                    format!("{key}.tls"),
                    "certFile and keyFile go together (a client certificate needs its key)"
                        .to_string(),
                ));
            }
        }
        None if url.starts_with("https://") => out.push((
            format!("{key}.tls"),
            format!("{url:?} is https://: set tls.caFile to the CA of the server's certificate"),
        )),
        None => {}
    }
    out
}

/// The problems of a `tracerd.loki` section (key, message); pure.
pub(super) fn check_loki(
    loki: &LokiSettings,
    logging: &[super::LoggingParams],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if !loki.url.starts_with("http://") && !loki.url.starts_with("https://") {
        out.push((
            "tracerd.loki.url".to_string(),
            format!(
                "{:?} is not an http:// or https:// URL (Loki's base URL, e.g. http://127.0.0.1:3100)",
                loki.url
            ),
        ));
    }
    out.extend(check_client_tls(
        "tracerd.loki",
        &loki.url,
        loki.tls.as_ref(),
    ));
    for (name, value) in &loki.labels {
        if !is_label_name(name) {
            out.push((
                "tracerd.loki.labels".to_string(),
                format!(
                    "{name:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"
                ),
            ));
        } else if LOKI_OWN_LABELS.contains(&name.as_str()) {
            out.push((
                "tracerd.loki.labels".to_string(),
                format!("{name:?} is a label tracerd sets on every stream itself (node, level, namespace)"),
            ));
        }
        if value.is_empty() {
            out.push((
                "tracerd.loki.labels".to_string(),
                format!("{name:?} has an empty value (Loki drops empty labels)"),
            ));
        }
    }
    if loki.tenant.as_ref().is_some_and(|t| t.is_empty()) {
        out.push((
            "tracerd.loki.tenant".to_string(),
            "must not be empty (leave it out for Loki's single-tenant mode)".to_string(),
        ));
    }
    let machine_files = logging.iter().any(|t| {
        t.log_mode == super::LogMode::FileMode && t.log_format == super::LogFormat::ForMachine
    });
    if !machine_files {
        out.push((
            "tracerd.loki".to_string(),
            "ships the machine-format files: add a logging target with logMode FileMode and logFormat ForMachine".to_string(),
        ));
    }
    out
}
