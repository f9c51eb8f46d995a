//! Configuration: the file format (cardano-tracer's keys plus a `tracerd` section), its
//! defaults, and validation that reports every problem at once.
//!
//! The same [`Config`] struct is what the file deserialises into and what `print-config`
//! serialises, so the printed effective config is itself a valid config file.

pub mod live;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::app::cli::MinSeverity;
pub use tracerd_wire::Address;

/// Mainnet's network magic, the default for `networkMagic`.
pub const DEFAULT_NETWORK_MAGIC: u32 = tracerd_wire::MAINNET_NETWORK_MAGIC;
/// Default Cardano `AcceptAt` socket: where `cardano-node --tracer-socket-path-connect`
/// finds tracerd when both run in the same directory.
pub const DEFAULT_CARDANO_SOCKET: &str = "./cardano-tracer.sock";
/// Default largest native frame (and Cardano message), in bytes.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 1024 * 1024;
/// Default per-node queue depth, in batches.
pub const DEFAULT_QUEUE_BATCHES: usize = 64;
/// Default handshake timeout.
pub const DEFAULT_HANDSHAKE_TIMEOUT_SECS: f64 = 10.0;
/// Default connection limit (native listeners together).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16_384;
/// Default idle timeout: a live node answers tracerd's 5-second pings, so a minute of
/// silence means a dead peer.
pub const DEFAULT_IDLE_TIMEOUT_SECS: f64 = 60.0;
/// Default period of `fsync: interval`.
pub const DEFAULT_FSYNC_INTERVAL_MS: u64 = 500;
/// Default shutdown grace period.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: f64 = 10.0;
/// Default rotation check period (cardano-tracer's default).
pub const DEFAULT_ROTATION_FREQUENCY_SECS: u32 = 60;
/// Port of the Prometheus endpoint in the embedded default config (the NixOS module's).
pub const DEFAULT_PROMETHEUS_PORT: u16 = 12808;
/// Default maximum age of non-current log files: 24 h (cardano-tracer's default).
pub const DEFAULT_MAX_AGE_MINUTES: u64 = 24 * 60;

/// The whole configuration, cardano-tracer keys first. Field names are cardano-tracer's.
///
/// Unknown keys are not rejected by serde (that would stop at the first one); `parse`
/// collects every one of them with `serde_ignored` and reports them all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// Network magic every node must present in its handshake.
    #[serde(default = "default_network_magic")]
    pub network_magic: u32,
    /// Cardano forwarding protocol endpoint: `AcceptAt` (tracerd listens, nodes connect) or
    /// `ConnectTo` (tracerd dials each node). Default `AcceptAt ./cardano-tracer.sock`;
    /// `network: null` serves no Cardano node.
    #[serde(default = "default_network")]
    pub network: Option<Network>,
    /// Trace objects per Cardano blocking request (1..=65535).
    #[serde(default = "default_lo_request_num")]
    pub lo_request_num: u16,
    /// Pause between a Cardano node's metrics response and the next request, in seconds.
    #[serde(default = "default_ekg_request_freq")]
    pub ekg_request_freq: f64,
    /// Always request every metric (`GetAllMetrics`) instead of changes only.
    #[serde(default)]
    pub ekg_request_full: bool,
    /// EKG-compatible HTTP endpoint (off when absent).
    #[serde(default, rename = "hasEKG", skip_serializing_if = "Option::is_none")]
    pub has_ekg: Option<Endpoint>,
    /// Prometheus HTTP endpoint: cardano-tracer's routes plus `/metrics` and `/api`. Default
    /// `127.0.0.1:12808` (loopback); `hasPrometheus: null` serves no HTTP.
    #[serde(default = "default_has_prometheus")]
    pub has_prometheus: Option<Endpoint>,
    /// cardano-tracer's timeseries endpoint: parsed, not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_timeseries: Option<Endpoint>,
    /// TLS for the HTTP endpoints: parsed, not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_certificate: Option<TlsCertificate>,
    /// Log targets; each is written in parallel.
    #[serde(default = "default_logging")]
    pub logging: Vec<LoggingParams>,
    /// Rotation parameters; without them each connection writes one growing file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationParams>,
    /// Verbosity of connection problem reports.
    #[serde(default)]
    pub verbosity: Verbosity,
    /// Strip `_int`, `_counter`, `_real` from Prometheus names.
    #[serde(default)]
    pub metrics_no_suffix: bool,
    /// HELP texts: a path to a JSON file or an inline map; a file that cannot be read or is
    /// not a JSON object of strings is a config error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_help: Option<MetricsHelp>,
    /// Extra labels for Prometheus service discovery (`/targets`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prometheus_labels: BTreeMap<String, String>,
    /// Period of the daemon's own resource report, in milliseconds (kept for #6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_freq: Option<u64>,
    /// cardano-tracer re-forwarding: parsed and kept as is, not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_forwarding: Option<serde_json::Value>,
    /// tracerd's own settings.
    #[serde(default)]
    pub tracerd: TracerdSettings,
}

/// cardano-tracer's `network` key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "tag", content = "contents")]
pub enum Network {
    /// tracerd listens; nodes connect.
    AcceptAt(Address),
    /// tracerd dials each node.
    ConnectTo(Vec<Address>),
}

/// An HTTP endpoint (`epHost`, `epPort`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Host to bind.
    pub ep_host: String,
    /// Port to bind.
    pub ep_port: u16,
    /// Serve HTTPS only (not supported; validation warns and serves plain HTTP).
    #[serde(
        default,
        rename = "epForceSSL",
        skip_serializing_if = "Option::is_none"
    )]
    pub ep_force_ssl: Option<bool>,
}

/// cardano-tracer's `tlsCertificate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsCertificate {
    /// PEM certificate.
    pub certificate_file: String,
    /// PEM key.
    pub certificate_key_file: String,
    /// Intermediate certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificate_chain: Vec<String>,
}

/// One log target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoggingParams {
    /// Directory under which each node gets its own sub-directory.
    pub log_root: PathBuf,
    /// Files or journald.
    pub log_mode: LogMode,
    /// JSON lines or human text.
    pub log_format: LogFormat,
}

/// Where a log target writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LogMode {
    /// Per-node files under `logRoot`.
    FileMode,
    /// systemd-journald over its native socket (`tracerd.journal.socket`); `logRoot` is
    /// ignored.
    JournalMode,
}

/// The format of a log target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LogFormat {
    /// One line of text per trace object; files end in `.log`.
    ForHuman,
    /// One JSON object per line; files end in `.json`.
    ForMachine,
}

impl LogFormat {
    /// File extension (and symlink name suffix) of this format.
    pub fn extension(self) -> &'static str {
        match self {
            LogFormat::ForHuman => "log",
            LogFormat::ForMachine => "json",
        }
    }
}

/// cardano-tracer's rotation parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationParams {
    /// Period of the pruning check, in seconds.
    #[serde(default = "default_rotation_frequency")]
    pub rp_frequency_secs: u32,
    /// Size limit of a log file in bytes, checked on every write.
    pub rp_log_limit_bytes: u64,
    /// Maximum age of non-current files, in minutes (wins over `rpMaxAgeHours`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rp_max_age_minutes: Option<u64>,
    /// Maximum age of non-current files, in hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rp_max_age_hours: Option<f64>,
    /// Number of newest non-current files always kept.
    pub rp_keep_files_num: u32,
}

impl RotationParams {
    /// The effective maximum age in seconds: minutes win over hours, default 24 h.
    pub fn max_age_secs(&self) -> u64 {
        match (self.rp_max_age_minutes, self.rp_max_age_hours) {
            (Some(m), _) => m.saturating_mul(60),
            (None, Some(h)) if h.is_finite() && h > 0.0 => (h * 3600.0) as u64,
            (None, Some(_)) => 0,
            (None, None) => DEFAULT_MAX_AGE_MINUTES * 60,
        }
    }
}

/// cardano-tracer's verbosity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verbosity {
    /// Connection problem reports (lost, closed on error) are logged at Debug only.
    Minimum,
    /// Report connection errors (default).
    #[default]
    ErrorsOnly,
    /// Report every connection event (today the same as ErrorsOnly: tracerd already logs
    /// every connect, handshake and disconnect at Info).
    Maximum,
}

/// `metricsHelp`: a path to a JSON file or an inline map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetricsHelp {
    /// Path of a JSON object file `{name: help}`.
    File(PathBuf),
    /// Inline map `{name: help}`.
    Inline(BTreeMap<String, String>),
}

impl MetricsHelp {
    /// The help map: the inline map, or the file's JSON object read now.
    pub fn load(&self) -> Result<BTreeMap<String, String>, String> {
        match self {
            MetricsHelp::Inline(map) => Ok(map.clone()),
            MetricsHelp::File(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                serde_json::from_str(&text).map_err(|e| {
                    format!(
                        "{} is not a JSON object of metric name to help text: {e}",
                        path.display()
                    )
                })
            }
        }
    }
}

/// tracerd's own settings, under the `tracerd` key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TracerdSettings {
    /// Native protocol listeners.
    #[serde(default)]
    pub native: NativeSettings,
    /// Bounds.
    #[serde(default)]
    pub limits: Limits,
    /// When an acknowledgement is sent: after `write(2)` or after `fdatasync`.
    #[serde(default)]
    pub durability: Durability,
    /// How long shutdown may take before tracerd gives up draining, in seconds.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_secs: f64,
    /// Lowest severity of tracerd's own log (`--min-log-severity` overrides it); SIGHUP
    /// applies a change at once. Default Info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_log_severity: Option<MinSeverity>,
    /// Mode and group of the Unix sockets tracerd binds (native and Cardano `AcceptAt`).
    #[serde(default, skip_serializing_if = "UnixSocketSettings::is_default")]
    pub unix_socket: UnixSocketSettings,
    /// journald's native socket, for `logMode: JournalMode` targets.
    #[serde(default, skip_serializing_if = "JournalSettings::is_default")]
    pub journal: JournalSettings,
}

/// Permissions of the Unix sockets tracerd binds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnixSocketSettings {
    /// File mode as an octal string, e.g. `"0660"`; default: as the umask leaves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Group (name from `/etc/group`, or a numeric gid) given to the socket files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl UnixSocketSettings {
    fn is_default(&self) -> bool {
        *self == UnixSocketSettings::default()
    }

    /// The mode as a number, when given and valid octal in `0..=0o777`.
    pub fn mode_bits(&self) -> Option<Result<u32, String>> {
        self.mode.as_ref().map(|m| {
            u32::from_str_radix(m.trim_start_matches("0o"), 8)
                .ok()
                .filter(|&b| b <= 0o777)
                .ok_or_else(|| format!("{m:?} is not an octal file mode such as \"0660\""))
        })
    }
}

/// Where `JournalMode` sends trace objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalSettings {
    /// journald's native protocol socket.
    #[serde(default = "default_journal_socket")]
    pub socket: PathBuf,
}

/// journald's native protocol socket.
pub const DEFAULT_JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

fn default_journal_socket() -> PathBuf {
    PathBuf::from(DEFAULT_JOURNAL_SOCKET)
}

impl Default for JournalSettings {
    fn default() -> Self {
        JournalSettings {
            socket: default_journal_socket(),
        }
    }
}

impl JournalSettings {
    fn is_default(&self) -> bool {
        *self == JournalSettings::default()
    }
}

impl Default for TracerdSettings {
    fn default() -> Self {
        TracerdSettings {
            native: NativeSettings::default(),
            limits: Limits::default(),
            durability: Durability::default(),
            shutdown_grace_secs: DEFAULT_SHUTDOWN_GRACE_SECS,
            min_log_severity: None,
            unix_socket: UnixSocketSettings::default(),
            journal: JournalSettings::default(),
        }
    }
}

/// Native protocol listeners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NativeSettings {
    /// Addresses to listen on: Unix socket paths and `host:port` TCP addresses.
    #[serde(default = "default_native_accept_at")]
    pub accept_at: Vec<Address>,
}

impl Default for NativeSettings {
    fn default() -> Self {
        NativeSettings {
            accept_at: default_native_accept_at(),
        }
    }
}

/// Bounds on what one connection may use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Largest frame accepted, in bytes; checked before allocating.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: u32,
    /// Per-node queue depth between the connection and its writer, in batches.
    #[serde(default = "default_queue_batches")]
    pub queue_batches: usize,
    /// Time a new connection has to send its `Hello`, in seconds.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_secs: f64,
    /// Connections served at once; further connections are closed at accept.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// A session that sends nothing (not even a Pong to tracerd's 5-second Ping) for this
    /// long is closed, in seconds.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: f64,
}

/// When trace objects count as persisted, and so when they are acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Durability {
    /// `never` (default): acknowledged once written to the file (page cache): survives a crash
    /// of tracerd, not of the machine. `batch`: `fdatasync` before every acknowledgement.
    /// `interval`: `fdatasync` at most every `fsyncIntervalMs`, acknowledging what it covered.
    #[serde(default)]
    pub fsync: FsyncPolicy,
    /// Period of `fsync: interval`, in milliseconds.
    #[serde(default = "default_fsync_interval_ms")]
    pub fsync_interval_ms: u64,
    /// What a node's writer does when its logs cannot be written (e.g. the disk is full).
    #[serde(default)]
    pub on_write_error: WriteErrorPolicy,
}

/// See [`Durability::on_write_error`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteErrorPolicy {
    /// Retry every second, writing nothing twice and no partial line; meanwhile the node's
    /// queue fills and tracerd stops reading its socket, so the node buffers (default).
    #[default]
    Backpressure,
    /// Drop the batch, count it in `tracerd_trace_objects_dropped_total{reason="write_error"}`
    /// and acknowledge past it, so the node does not resend it.
    Drop,
}

impl Default for Durability {
    fn default() -> Self {
        Durability {
            fsync: FsyncPolicy::default(),
            fsync_interval_ms: DEFAULT_FSYNC_INTERVAL_MS,
            on_write_error: WriteErrorPolicy::default(),
        }
    }
}

/// See [`Durability::fsync`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Acknowledge after `write(2)`.
    #[default]
    Never,
    /// `fdatasync` every batch before acknowledging it.
    Batch,
    /// `fdatasync` every `fsyncIntervalMs`; acknowledge what each sync covered.
    Interval,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            queue_batches: DEFAULT_QUEUE_BATCHES,
            handshake_timeout_secs: DEFAULT_HANDSHAKE_TIMEOUT_SECS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout_secs: DEFAULT_IDLE_TIMEOUT_SECS,
        }
    }
}

fn default_network_magic() -> u32 {
    DEFAULT_NETWORK_MAGIC
}
fn default_network() -> Option<Network> {
    Some(Network::AcceptAt(Address::Unix(PathBuf::from(
        DEFAULT_CARDANO_SOCKET,
    ))))
}
fn default_has_prometheus() -> Option<Endpoint> {
    Some(Endpoint {
        ep_host: "127.0.0.1".to_string(),
        ep_port: DEFAULT_PROMETHEUS_PORT,
        ep_force_ssl: None,
    })
}
fn default_lo_request_num() -> u16 {
    100
}
fn default_ekg_request_freq() -> f64 {
    1.0
}
fn default_logging() -> Vec<LoggingParams> {
    vec![LoggingParams {
        log_root: PathBuf::from("./logs"),
        log_mode: LogMode::FileMode,
        log_format: LogFormat::ForMachine,
    }]
}
fn default_rotation_frequency() -> u32 {
    DEFAULT_ROTATION_FREQUENCY_SECS
}
fn default_shutdown_grace() -> f64 {
    DEFAULT_SHUTDOWN_GRACE_SECS
}
fn default_native_accept_at() -> Vec<Address> {
    vec![
        Address::Unix(PathBuf::from("./tracerd.sock")),
        Address::Tcp {
            host: "127.0.0.1".to_string(),
            port: 3179,
        },
    ]
}
fn default_max_frame_bytes() -> u32 {
    DEFAULT_MAX_FRAME_BYTES
}
fn default_queue_batches() -> usize {
    DEFAULT_QUEUE_BATCHES
}
fn default_handshake_timeout() -> f64 {
    DEFAULT_HANDSHAKE_TIMEOUT_SECS
}
fn default_max_connections() -> u32 {
    DEFAULT_MAX_CONNECTIONS
}
fn default_idle_timeout() -> f64 {
    DEFAULT_IDLE_TIMEOUT_SECS
}
fn default_fsync_interval_ms() -> u64 {
    DEFAULT_FSYNC_INTERVAL_MS
}

impl Default for Config {
    /// The embedded default config: native listeners on `./tracerd.sock` and
    /// `127.0.0.1:3179`, Cardano nodes accepted at `./cardano-tracer.sock` (mainnet magic),
    /// machine logs under `./logs`, Prometheus on `127.0.0.1:12808`.
    fn default() -> Self {
        Config {
            network_magic: DEFAULT_NETWORK_MAGIC,
            network: default_network(),
            lo_request_num: default_lo_request_num(),
            ekg_request_freq: default_ekg_request_freq(),
            ekg_request_full: false,
            has_ekg: None,
            has_prometheus: default_has_prometheus(),
            has_timeseries: None,
            tls_certificate: None,
            logging: default_logging(),
            rotation: None,
            verbosity: Verbosity::default(),
            metrics_no_suffix: false,
            metrics_help: None,
            prometheus_labels: BTreeMap::new(),
            resource_freq: None,
            has_forwarding: None,
            tracerd: TracerdSettings::default(),
        }
    }
}

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the offending key, e.g. `rotation.rpLogLimitBytes`.
    pub key: String,
    /// 1-based line in the file, where known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML/JSON for this schema, or fails validation.
    #[error("invalid config {path}:\n{}", format_problems(.problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

fn format_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A loaded config plus the warnings (obsolete keys, unsupported features) to log once.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The effective config.
    pub config: Config,
    /// Things the operator should know but that do not stop tracerd.
    pub warnings: Vec<Problem>,
}

/// Keys cardano-tracer once had and no longer reads: a warning, not an error.
pub const OBSOLETE_KEYS: &[&str] = &["hasRTView", "metricsComp", "WarnRTViewMissing"];

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|problems| ConfigError::Invalid {
        path: path.to_path_buf(),
        problems,
    })
}

/// Parses and validates config text (YAML, or JSON, which is YAML).
pub fn parse(text: &str) -> Result<Loaded, Vec<Problem>> {
    let mut unknown: Vec<String> = Vec::new();
    let de = serde_norway::Deserializer::from_str(text);
    let config: Config = serde_ignored::deserialize(de, |path| unknown.push(path.to_string()))
        .map_err(|e| {
            vec![Problem {
                key: String::new(),
                line: e.location().map(|l| l.line()),
                message: e.to_string(),
            }]
        })?;
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    for key in unknown {
        let leaf = key.rsplit('.').next().unwrap_or(&key).to_string();
        let line = find_key_line(text, &leaf);
        if OBSOLETE_KEYS.contains(&key.as_str()) {
            warnings.push(Problem {
                key,
                line,
                message: "obsolete cardano-tracer key, ignored".to_string(),
            });
        } else {
            problems.push(Problem {
                key,
                line,
                message: "unknown key".to_string(),
            });
        }
    }
    validate(&config, &mut problems, &mut warnings);
    if problems.is_empty() {
        add_lines(text, &mut warnings);
        Ok(Loaded { config, warnings })
    } else {
        add_lines(text, &mut problems);
        Err(problems)
    }
}

/// Fills in the line of every problem that has none, from where its key appears.
fn add_lines(text: &str, problems: &mut [Problem]) {
    for p in problems {
        if p.line.is_none() {
            let leaf = p.key.rsplit('.').next().unwrap_or(&p.key).to_string();
            p.line = find_key_line(text, &leaf);
        }
    }
}

/// The 1-based line where `key` first appears as a mapping key (`key:` or `"key":`).
fn find_key_line(text: &str, key: &str) -> Option<usize> {
    let plain = format!("{key}:");
    let quoted = format!("\"{key}\"");
    text.lines()
        .position(|line| {
            let t = line.trim_start().trim_start_matches(['-', '{', ',', ' ']);
            t.starts_with(&plain) || t.starts_with(&quoted) || line.contains(&format!(" {plain}"))
        })
        .map(|i| i + 1)
}

/// Checks values serde cannot: every problem is pushed, none stops the search.
fn validate(config: &Config, problems: &mut Vec<Problem>, warnings: &mut Vec<Problem>) {
    let mut problem = |key: &str, message: String| {
        problems.push(Problem {
            key: key.to_string(),
            line: None,
            message,
        })
    };
    if config.logging.is_empty() {
        problem("logging", "at least one log target is required".to_string());
    }
    for (i, target) in config.logging.iter().enumerate() {
        if target.log_mode == LogMode::FileMode && target.log_root.as_os_str().is_empty() {
            problem(
                &format!("logging[{i}].logRoot"),
                "must not be empty for FileMode".to_string(),
            );
        }
    }
    if let Some(rotation) = &config.rotation {
        if rotation.rp_log_limit_bytes == 0 {
            problem(
                "rotation.rpLogLimitBytes",
                "must be greater than 0".to_string(),
            );
        }
        if rotation.rp_frequency_secs == 0 {
            problem(
                "rotation.rpFrequencySecs",
                "must be greater than 0".to_string(),
            );
        }
        if rotation.rp_max_age_minutes.is_some() && rotation.rp_max_age_hours.is_some() {
            warnings.push(Problem {
                key: "rotation.rpMaxAgeHours".to_string(),
                line: None,
                message: "both rpMaxAgeMinutes and rpMaxAgeHours given: rpMaxAgeMinutes wins"
                    .to_string(),
            });
        }
        if let Some(h) = rotation.rp_max_age_hours {
            if !(h.is_finite() && h >= 0.0) {
                problem(
                    "rotation.rpMaxAgeHours",
                    format!("must be a non-negative number, not {h}"),
                );
            }
        }
    }
    if let Some(Err(message)) = config.tracerd.unix_socket.mode_bits() {
        problem("tracerd.unixSocket.mode", message);
    }
    if let Some(group) = &config.tracerd.unix_socket.group {
        if let Err(message) = resolve_group(group) {
            problem("tracerd.unixSocket.group", message);
        }
    }
    let limits = &config.tracerd.limits;
    if limits.max_frame_bytes < 64 {
        problem(
            "tracerd.limits.maxFrameBytes",
            format!("must be at least 64, not {}", limits.max_frame_bytes),
        );
    }
    if limits.queue_batches == 0 {
        problem(
            "tracerd.limits.queueBatches",
            "must be at least 1".to_string(),
        );
    }
    if limits.max_connections == 0 {
        problem(
            "tracerd.limits.maxConnections",
            "must be at least 1".to_string(),
        );
    }
    if !(limits.idle_timeout_secs.is_finite() && limits.idle_timeout_secs > 0.0) {
        problem(
            "tracerd.limits.idleTimeoutSecs",
            "must be a positive number of seconds".to_string(),
        );
    }
    let durability = &config.tracerd.durability;
    if durability.fsync == FsyncPolicy::Interval && durability.fsync_interval_ms == 0 {
        problem(
            "tracerd.durability.fsyncIntervalMs",
            "must be at least 1 with fsync: interval".to_string(),
        );
    }
    if !(limits.handshake_timeout_secs.is_finite() && limits.handshake_timeout_secs > 0.0) {
        problem(
            "tracerd.limits.handshakeTimeoutSecs",
            "must be a positive number of seconds".to_string(),
        );
    }
    let grace = config.tracerd.shutdown_grace_secs;
    if !(grace.is_finite() && grace > 0.0) {
        problem(
            "tracerd.shutdownGraceSecs",
            "must be a positive number of seconds".to_string(),
        );
    }
    if config.tracerd.native.accept_at.is_empty() && config.network.is_none() {
        problem(
            "tracerd.native.acceptAt",
            "no listener configured: give at least one address".to_string(),
        );
    }
    let mut seen = std::collections::HashSet::new();
    for (i, addr) in config.tracerd.native.accept_at.iter().enumerate() {
        if !seen.insert(addr) {
            problem(
                &format!("tracerd.native.acceptAt[{i}]"),
                format!("{addr} is listed twice"),
            );
        }
    }
    if let Some(help) = &config.metrics_help {
        if let Err(e) = help.load() {
            problem("metricsHelp", e);
        }
    }
    for (key, endpoint) in [
        ("hasPrometheus", &config.has_prometheus),
        ("hasEKG", &config.has_ekg),
    ] {
        let Some(ep) = endpoint else { continue };
        if ep.ep_host.is_empty() {
            problem(&format!("{key}.epHost"), "must not be empty".to_string());
        }
        if ep.ep_force_ssl == Some(true) {
            warnings.push(Problem {
                key: format!("{key}.epForceSSL"),
                line: None,
                message: "TLS is not supported yet: serving plain HTTP (as cardano-tracer does \
                          without a certificate); put a TLS proxy in front"
                    .to_string(),
            });
        }
    }
    // cardano-tracer features tracerd parses and keeps but does not serve: say so.
    let unsupported = [
        (
            "hasTimeseries",
            config.has_timeseries.is_some(),
            "cardano-tracer's timeseries query API is not served; scrape /metrics with \
             Prometheus instead",
        ),
        (
            "tlsCertificate",
            config.tls_certificate.is_some(),
            "HTTPS is not supported yet; put a TLS proxy in front of the HTTP endpoints",
        ),
        (
            "hasForwarding",
            config.has_forwarding.is_some(),
            "re-forwarding to downstream acceptors is not supported; the key is ignored",
        ),
    ];
    for (key, present, message) in unsupported {
        if present {
            warnings.push(Problem {
                key: key.to_string(),
                line: None,
                message: message.to_string(),
            });
        }
    }
    if let (Some(p), Some(e)) = (&config.has_prometheus, &config.has_ekg) {
        if p.ep_port == e.ep_port && p.ep_port != 0 {
            problem(
                "hasEKG.epPort",
                format!("port {} is also hasPrometheus.epPort", e.ep_port),
            );
        }
    }
    match &config.network {
        Some(Network::AcceptAt(addr)) if config.tracerd.native.accept_at.contains(addr) => {
            problem(
                "network.contents",
                format!("{addr} is also a native listener (tracerd.native.acceptAt)"),
            );
        }
        Some(Network::ConnectTo(addrs)) if addrs.is_empty() => {
            problem(
                "network.contents",
                "ConnectTo needs at least one node address".to_string(),
            );
        }
        _ => {}
    }
    if config.lo_request_num == 0 {
        problem(
            "loRequestNum",
            "must be at least 1 (a request for 0 trace objects never returns)".to_string(),
        );
    }
    if !(config.ekg_request_freq.is_finite() && config.ekg_request_freq > 0.0) {
        problem(
            "ekgRequestFreq",
            "must be a positive number of seconds".to_string(),
        );
    }
}

/// The gid of `group`: a number, or a name looked up in `/etc/group` (groups known only to
/// NSS services such as LDAP must be given as numbers).
pub fn resolve_group(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let text = std::fs::read_to_string("/etc/group")
        .map_err(|e| format!("cannot read /etc/group to find group {group:?}: {e}"))?;
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split(':');
            let name = parts.next()?;
            let gid = parts.nth(1)?.parse::<u32>().ok()?;
            (name == group).then_some(gid)
        })
        .next()
        .ok_or_else(|| format!("no group {group:?} in /etc/group (give a numeric gid)"))
}

/// Renders the effective config as JSON, one line: the payload of the config event, itself a
/// valid config file.
pub fn to_json(config: &Config) -> String {
    serde_json::to_string(config)
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
}

/// Renders the effective config as YAML that is itself a valid config file.
pub fn to_yaml(config: &Config) -> String {
    serde_norway::to_string(config).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
}

#[cfg(test)]
mod tests;
