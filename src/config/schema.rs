//! The config schema: every type the file deserialises into (cardano-tracer's keys plus the
//! `tracerd` section) with its serde attributes, and the small pure accessors on them.
//!
//! The same [`Config`] struct is what the file deserialises into and what `print-config`
//! serialises, so the printed effective config is itself a valid config file. Default values
//! live in `defaults.rs`; checks serde cannot express live in `validate.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::defaults::*;
use super::Address;

/// The whole configuration, cardano-tracer keys first. Field names are cardano-tracer's.
///
/// Unknown keys, wrong types, out-of-range numbers and `null`s are handled before serde by
/// `shape.rs`, which reports them all; serde reads the cleaned tree.
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
    /// The metric history's endpoint: Prometheus's query API (`/api/v1/*`) over every
    /// node's metrics as they arrived (`tracerd.history` bounds it). Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_timeseries: Option<Endpoint>,
    /// TLS for the HTTP endpoints that set `epForceSSL: true` (`http::tls`).
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
    /// Serve HTTPS only, with `tlsCertificate` (without it: plain HTTP and a warning).
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
    /// OpenMetrics-style metric names: node counters sampled as `<name>_total`, label sets as
    /// `<name>_info`. Default false: cardano-tracer's names, so its dashboards work unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub open_metrics_names: bool,
    /// A node disconnected this long loses its `tracerd_*` series (`node_name`), in seconds.
    #[serde(default = "default_departed_series_secs")]
    pub departed_series_secs: u64,
    /// The metric history kept for `hasTimeseries` (unused without it).
    #[serde(default)]
    pub history: HistorySettings,
    /// Alerting rules evaluated on the metric history and sent to Alertmanager (issue 15).
    #[serde(default, skip_serializing_if = "AlertsSettings::is_default")]
    pub alerts: AlertsSettings,
    /// Source networks (CIDR) the Cardano `AcceptAt` TCP listener accepts; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cardano_allow_from: Vec<String>,
    /// Trace-object requests a Cardano session keeps outstanding (1 is cardano-tracer's one
    /// blocking request; 2 lets the node build the next reply while tracerd writes the last).
    #[serde(default = "default_cardano_trace_requests")]
    pub cardano_trace_requests: u8,
    /// HTTP authentication per route group (issue 17); off by default.
    #[serde(default, skip_serializing_if = "HttpAuthSettings::is_default")]
    pub http_auth: HttpAuthSettings,
    /// Trace lines shipped to ClickHouse (issue 18). Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clickhouse: Option<super::ClickhouseSettings>,
    /// Prometheus remote_write receivers of every `/metrics` series (issue 18).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_write: Vec<super::RemoteWriteSettings>,
    /// Trace lines pushed to Grafana Loki (issue 18). Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loki: Option<super::LokiSettings>,
    /// Where the shipping sinks keep their cursors; default `<--state-dir>/ship`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ship_state_dir: Option<PathBuf>,
    /// The live view at `/ui/` on `hasPrometheus` (issue 14), with the metric history it
    /// charts kept in memory (bounded by `history`) even without `hasTimeseries`. Absent from
    /// a file: off, so a file of upstream keys keeps upstream's behaviour; the embedded
    /// default config has it on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ui: Option<UiSettings>,
    /// Native downstreams (issue 16): other tracerds fed from the machine files. Off when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward: Vec<super::NativeDownstream>,
    /// The capture window (issue 20): budget and captures at start.
    #[serde(default, skip_serializing_if = "super::CaptureSettings::is_default")]
    pub capture: super::CaptureSettings,
}

/// HTTP authentication (`tracerd.httpAuth`): each route group without credentials is open.
/// `/healthz` and `/readyz` are always open.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpAuthSettings {
    /// Scrape routes: `/metrics`, `/`, `/targets`, `/<slug>` of `hasPrometheus`, and every
    /// route of `hasEKG`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape: Option<AuthGroup>,
    /// API and UI routes: `/api/...` and `/ui...` of `hasPrometheus`, every route of
    /// `hasTimeseries`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<AuthGroup>,
}

impl HttpAuthSettings {
    /// True when no group is set.
    pub fn is_default(&self) -> bool {
        *self == HttpAuthSettings::default()
    }
}

/// The credentials of one route group, read from files (systemd `LoadCredential=` friendly).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthGroup {
    /// Files of bearer tokens, one a line (`#` comments and empty lines skipped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bearer_token_files: Vec<PathBuf>,
    /// htpasswd-style files of `user:bcrypt-hash` lines; plain passwords are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub basic_auth_files: Vec<PathBuf>,
}

/// The live view (`tracerd.ui`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UiSettings {
    /// Serve it. Default true (`tracerd.ui: {}` turns it on).
    #[serde(default = "default_ui_enabled")]
    pub enabled: bool,
}

impl UiSettings {
    /// Whether `ui` turns the live view on.
    pub fn is_on(ui: &Option<UiSettings>) -> bool {
        ui.as_ref().is_some_and(|u| u.enabled)
    }
}

/// Alerting (`tracerd.alerts`): Prometheus alerting-rule files evaluated on the metric
/// history, their alerts sent to Alertmanager's v2 API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertsSettings {
    /// Rule files in Prometheus's alerting-rule format (paths as given, relative to the
    /// working directory like `logRoot`). None here and in `traceRuleFiles`: alerting is off.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rule_files: Vec<std::path::PathBuf>,
    /// tracerd's own rule files (top-level `trace_groups`): rules on trace objects and node
    /// lifecycle facts, which Prometheus cannot express. They need no `hasTimeseries`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trace_rule_files: Vec<std::path::PathBuf>,
    /// Alertmanager base URLs (`http://host:port[/prefix]`); every alert goes to each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alertmanagers: Vec<String>,
    /// Generic webhook URLs (`http://host:port/path`): each gets a JSON post when an alert
    /// starts firing and when it resolves (README "Alerts" documents the body).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<String>,
    /// Interval of a group without its own `interval`, in seconds. Default 15 (Prometheus's
    /// `evaluation_interval` default is 1 m; tracerd samples every 15 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation_interval_secs: Option<f64>,
    /// Least time between two sends of one firing alert, in seconds. Default 0: resent at
    /// every evaluation (Prometheus's `--rules.alert.resend-delay` default is 1 m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resend_delay_secs: Option<f64>,
    /// Most alerts waiting for delivery; past it the oldest are dropped (counted). Default 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_capacity: Option<u64>,
    /// Prometheus's `--rules.alert.for-grace-period`, in seconds: a pending alert restored at
    /// start fires no sooner than this after it (rules with a shorter `for` start their
    /// pending alerts over). Default 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_grace_period_secs: Option<f64>,
}

impl AlertsSettings {
    /// True when nothing is set (kept out of the printed config).
    pub fn is_default(&self) -> bool {
        *self == AlertsSettings::default()
    }
}

/// Bounds and timers of the metric history (`hasTimeseries`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistorySettings {
    /// Samples older than this go at the next pruning pass, in hours. Default 24 (upstream's).
    #[serde(default = "default_history_retention_hours")]
    pub retention_hours: f64,
    /// Period of the pruning pass, in minutes. Default 15 (upstream's).
    #[serde(default = "default_history_prune_every_minutes")]
    pub prune_every_minutes: f64,
    /// Cap on the history's memory in bytes; past it the oldest samples go first (counted).
    #[serde(default = "default_history_max_bytes")]
    pub max_bytes: u64,
    /// Cap on distinct series; a new series past it is refused (counted).
    #[serde(default = "default_history_max_series")]
    pub max_series: u64,
    /// Period of sampling tracerd's own `tracerd_*` metrics, and of repeating a node metric's
    /// last value when the node sent no new one (as a scrape would), in seconds. Default 15.
    #[serde(default = "default_history_sample_interval")]
    pub sample_interval_secs: f64,
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

impl JournalSettings {
    fn is_default(&self) -> bool {
        *self == JournalSettings::default()
    }
}

/// Native protocol listeners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NativeSettings {
    /// Addresses to listen on: Unix socket paths and `host:port` TCP addresses.
    #[serde(default = "default_native_accept_at")]
    pub accept_at: Vec<Address>,
    /// TLS on every TCP listener of `acceptAt` (Unix listeners stay plain); off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<NativeTls>,
    /// Who may claim which node names over TCP; empty: anyone may claim any name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<NodeIdentity>,
}

/// One node credential (`tracerd.native.identities[]`): a client certificate's DNS name
/// (subjectAltName) and/or a token sent in `Hello`, and the node names it may claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeIdentity {
    /// Node names (as sent in `Hello`) this credential may claim.
    pub names: Vec<String>,
    /// A DNS name the client certificate (verified by `tls.clientCaFile`) must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// A file holding the token the node sends in `Hello` (first non-empty line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

/// `tracerd.native.tls`: the listeners' certificate, and the CA of the nodes' certificates
/// for mutual TLS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NativeTls {
    /// PEM certificate.
    pub certificate_file: PathBuf,
    /// PEM key.
    pub certificate_key_file: PathBuf,
    /// Intermediate certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificate_chain: Vec<PathBuf>,
    /// PEM CA certificates: with it, a node must present a certificate one of them issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
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
    /// Per-node queue bound in decoded bytes (each object counted as its in-memory size plus
    /// its strings' capacities); a session waits for room before it reads on.
    #[serde(default = "default_queue_bytes")]
    pub queue_bytes: u64,
    /// Bound of all nodes' queues together, in decoded bytes (a global budget: a session
    /// waits for room, so one node cannot take the others' share).
    #[serde(default = "default_total_queue_bytes")]
    pub total_queue_bytes: u64,
    /// Bound of every node's stored metrics together, in accounted bytes (each metric counted
    /// as a fixed entry cost plus three times its name and its label value); a new metric past
    /// it is refused and counted.
    #[serde(default = "default_metric_bytes")]
    pub metric_bytes: u64,
    /// Most trace objects one native frame may hold; a frame with more is refused.
    #[serde(default = "default_max_objects_per_frame")]
    pub max_objects_per_frame: u32,
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
    /// Bounds per source of node connections (boxed: sessions copy `Limits`, and an idle
    /// session's future stays small).
    #[serde(default)]
    pub per_source: Box<PerSourceLimits>,
    /// Bounds of HTTP connections.
    #[serde(default)]
    pub http: HttpLimits,
}

/// `tracerd.limits.perSource`: what one source of node connections (an IPv4 address, an IPv6
/// /64, a Unix peer's uid) may do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PerSourceLimits {
    /// Connections one source may hold at once; further ones are closed at accept and
    /// counted (`per_source_limit`).
    #[serde(default = "default_max_connections_per_source")]
    pub max_connections: u32,
    /// New connections a source may open per second, on average (`handshake_rate`).
    #[serde(default = "default_handshakes_per_source_per_sec")]
    pub handshakes_per_sec: f64,
    /// New connections a source may open at once (its token bucket's capacity).
    #[serde(default = "default_handshake_burst_per_source")]
    pub handshake_burst: u32,
    /// TCP source networks these bounds do not apply to (default: loopback).
    #[serde(default = "default_per_source_exempt")]
    pub exempt: Vec<String>,
}

/// `tracerd.limits.http`: HTTP connections per endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpLimits {
    /// HTTP connections one endpoint serves at once.
    #[serde(default = "default_http_connections")]
    pub max_connections: u32,
    /// HTTP connections one client (an IP address) may hold at once per endpoint.
    #[serde(default = "default_http_connections_per_client")]
    pub max_connections_per_client: u32,
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

/// cardano-tracer's `--min-log-severity` values (also `tracerd.minLogSeverity` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[value(rename_all = "PascalCase")]
pub enum MinSeverity {
    /// Debug and up.
    Debug,
    /// Info and up.
    Info,
    /// Notice and up (same as Info for tracerd's own log).
    Notice,
    /// Warning and up.
    Warning,
    /// Error and up.
    Error,
    /// Critical and up (same as Error).
    Critical,
    /// Alert and up (same as Error).
    Alert,
    /// Emergency only (same as Error).
    Emergency,
}

impl MinSeverity {
    /// The `tracing` level that lets this severity and higher through.
    pub fn level(self) -> tracing::Level {
        match self {
            MinSeverity::Debug => tracing::Level::DEBUG,
            MinSeverity::Info | MinSeverity::Notice => tracing::Level::INFO,
            MinSeverity::Warning => tracing::Level::WARN,
            _ => tracing::Level::ERROR,
        }
    }
}
