//! Config defaults: the `DEFAULT_*` constants, the serde default functions the schema names,
//! and the `Default` impls, which together are the embedded default config.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::schema::*;
use super::Address;

/// Mainnet's network magic, the default for `networkMagic`.
pub const DEFAULT_NETWORK_MAGIC: u32 = tracerd_wire::MAINNET_NETWORK_MAGIC;
/// Default Cardano `AcceptAt` socket: where `cardano-node --tracer-socket-path-connect`
/// finds tracerd when both run in the same directory.
pub const DEFAULT_CARDANO_SOCKET: &str = "./cardano-tracer.sock";
/// Default largest native frame (and Cardano message), in bytes.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 1024 * 1024;
/// Default per-node queue depth, in batches.
pub const DEFAULT_QUEUE_BATCHES: usize = 64;
/// Default per-node queue bound in decoded bytes (64 MiB).
pub const DEFAULT_QUEUE_BYTES: u64 = 64 << 20;
/// Default bound of all queues together in decoded bytes (1 GiB).
pub const DEFAULT_TOTAL_QUEUE_BYTES: u64 = 1 << 30;
/// Default bound of every node's stored metrics together, in accounted bytes (512 MiB).
pub const DEFAULT_METRIC_BYTES: u64 = 512 << 20;
/// Default bound of trace objects per native frame.
pub const DEFAULT_MAX_OBJECTS_PER_FRAME: u32 = 65_536;
/// Default handshake timeout.
pub const DEFAULT_HANDSHAKE_TIMEOUT_SECS: f64 = 10.0;
/// Default connection limit (native listeners together).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16_384;
/// Default idle timeout: a live node answers tracerd's 5-second pings, so a minute of
/// silence means a dead peer.
pub const DEFAULT_IDLE_TIMEOUT_SECS: f64 = 60.0;
/// Default of `tracerd.limits.perSource.maxConnections`: a quarter of `maxConnections`, so a
/// site of 4,096 nodes behind one NAT address still connects.
pub const DEFAULT_MAX_CONNECTIONS_PER_SOURCE: u32 = 4096;
/// Default of `tracerd.limits.perSource.handshakesPerSec`.
pub const DEFAULT_HANDSHAKES_PER_SOURCE_PER_SEC: f64 = 256.0;
/// Default of `tracerd.limits.perSource.handshakeBurst`: a whole NAT site of 4,096 nodes may
/// reconnect at once (after a restart of tracerd).
pub const DEFAULT_HANDSHAKE_BURST_PER_SOURCE: u32 = 4096;
/// Default of `tracerd.limits.http.maxConnections`.
pub const DEFAULT_HTTP_CONNECTIONS: u32 = 256;
/// Default of `tracerd.limits.http.maxConnectionsPerClient`.
pub const DEFAULT_HTTP_CONNECTIONS_PER_CLIENT: u32 = 64;
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

/// Default retention of the metric history: a day (cardano-tracer's).
pub const DEFAULT_HISTORY_RETENTION_HOURS: f64 = 24.0;
/// Default period of the metric history's pruning pass (cardano-tracer's).
pub const DEFAULT_HISTORY_PRUNE_EVERY_MINUTES: f64 = 15.0;
/// Default cap on the metric history's memory: 1 GiB.
pub const DEFAULT_HISTORY_MAX_BYTES: u64 = 1 << 30;
/// Default cap on the metric history's series.
pub const DEFAULT_HISTORY_MAX_SERIES: u64 = 1_000_000;
/// Default sampling period of tracerd's own metrics into the history.
pub const DEFAULT_HISTORY_SAMPLE_INTERVAL_SECS: f64 = 15.0;

/// journald's native protocol socket.
pub const DEFAULT_JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

pub(super) fn default_journal_socket() -> PathBuf {
    PathBuf::from(DEFAULT_JOURNAL_SOCKET)
}

impl Default for JournalSettings {
    fn default() -> Self {
        JournalSettings {
            socket: default_journal_socket(),
        }
    }
}

/// Default trace-object requests in flight per Cardano session.
pub const DEFAULT_CARDANO_TRACE_REQUESTS: u8 = 2;
pub(super) fn default_cardano_trace_requests() -> u8 {
    DEFAULT_CARDANO_TRACE_REQUESTS
}

/// Default time a disconnected node keeps its `tracerd_*` series: 5 minutes.
pub const DEFAULT_DEPARTED_SERIES_SECS: u64 = 300;
pub(super) fn default_departed_series_secs() -> u64 {
    DEFAULT_DEPARTED_SERIES_SECS
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
            open_metrics_names: false,
            departed_series_secs: DEFAULT_DEPARTED_SERIES_SECS,
            history: HistorySettings::default(),
            alerts: AlertsSettings::default(),
            http_auth: HttpAuthSettings::default(),
            cardano_allow_from: Vec::new(),
            cardano_trace_requests: DEFAULT_CARDANO_TRACE_REQUESTS,
            clickhouse: None,
            loki: None,
            remote_write: Vec::new(),
            ship_state_dir: None,
            ui: None,
            forward: Vec::new(),
            capture: super::CaptureSettings::default(),
        }
    }
}

pub(super) fn default_ui_enabled() -> bool {
    true
}

impl Default for HistorySettings {
    fn default() -> Self {
        HistorySettings {
            retention_hours: DEFAULT_HISTORY_RETENTION_HOURS,
            prune_every_minutes: DEFAULT_HISTORY_PRUNE_EVERY_MINUTES,
            max_bytes: DEFAULT_HISTORY_MAX_BYTES,
            max_series: DEFAULT_HISTORY_MAX_SERIES,
            sample_interval_secs: DEFAULT_HISTORY_SAMPLE_INTERVAL_SECS,
        }
    }
}

pub(super) fn default_history_retention_hours() -> f64 {
    DEFAULT_HISTORY_RETENTION_HOURS
}
pub(super) fn default_history_prune_every_minutes() -> f64 {
    DEFAULT_HISTORY_PRUNE_EVERY_MINUTES
}
pub(super) fn default_history_max_bytes() -> u64 {
    DEFAULT_HISTORY_MAX_BYTES
}
pub(super) fn default_history_max_series() -> u64 {
    DEFAULT_HISTORY_MAX_SERIES
}
pub(super) fn default_history_sample_interval() -> f64 {
    DEFAULT_HISTORY_SAMPLE_INTERVAL_SECS
}

impl Default for NativeSettings {
    fn default() -> Self {
        NativeSettings {
            accept_at: default_native_accept_at(),
            tls: None,
            identities: Vec::new(),
        }
    }
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

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            queue_batches: DEFAULT_QUEUE_BATCHES,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            total_queue_bytes: DEFAULT_TOTAL_QUEUE_BYTES,
            metric_bytes: DEFAULT_METRIC_BYTES,
            max_objects_per_frame: DEFAULT_MAX_OBJECTS_PER_FRAME,
            handshake_timeout_secs: DEFAULT_HANDSHAKE_TIMEOUT_SECS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout_secs: DEFAULT_IDLE_TIMEOUT_SECS,
            per_source: Box::default(),
            http: HttpLimits::default(),
        }
    }
}

impl Default for PerSourceLimits {
    fn default() -> Self {
        PerSourceLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
            handshakes_per_sec: DEFAULT_HANDSHAKES_PER_SOURCE_PER_SEC,
            handshake_burst: DEFAULT_HANDSHAKE_BURST_PER_SOURCE,
            exempt: default_per_source_exempt(),
        }
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: DEFAULT_HTTP_CONNECTIONS,
            max_connections_per_client: DEFAULT_HTTP_CONNECTIONS_PER_CLIENT,
        }
    }
}

pub(super) fn default_network_magic() -> u32 {
    DEFAULT_NETWORK_MAGIC
}
pub(super) fn default_network() -> Option<Network> {
    Some(Network::AcceptAt(Address::Unix(PathBuf::from(
        DEFAULT_CARDANO_SOCKET,
    ))))
}
pub(super) fn default_has_prometheus() -> Option<Endpoint> {
    Some(Endpoint {
        ep_host: "127.0.0.1".to_string(),
        ep_port: DEFAULT_PROMETHEUS_PORT,
        ep_force_ssl: None,
    })
}
pub(super) fn default_lo_request_num() -> u16 {
    100
}
pub(super) fn default_ekg_request_freq() -> f64 {
    1.0
}
pub(super) fn default_logging() -> Vec<LoggingParams> {
    vec![LoggingParams {
        log_root: PathBuf::from("./logs"),
        log_mode: LogMode::FileMode,
        log_format: LogFormat::ForMachine,
    }]
}
pub(super) fn default_rotation_frequency() -> u32 {
    DEFAULT_ROTATION_FREQUENCY_SECS
}
pub(super) fn default_shutdown_grace() -> f64 {
    DEFAULT_SHUTDOWN_GRACE_SECS
}
pub(super) fn default_native_accept_at() -> Vec<Address> {
    vec![
        Address::Unix(PathBuf::from("./tracerd.sock")),
        Address::Tcp {
            host: "127.0.0.1".to_string(),
            port: 3179,
        },
    ]
}
pub(super) fn default_max_frame_bytes() -> u32 {
    DEFAULT_MAX_FRAME_BYTES
}
pub(super) fn default_queue_batches() -> usize {
    DEFAULT_QUEUE_BATCHES
}
pub(super) fn default_queue_bytes() -> u64 {
    DEFAULT_QUEUE_BYTES
}
pub(super) fn default_total_queue_bytes() -> u64 {
    DEFAULT_TOTAL_QUEUE_BYTES
}
pub(super) fn default_metric_bytes() -> u64 {
    DEFAULT_METRIC_BYTES
}
pub(super) fn default_max_objects_per_frame() -> u32 {
    DEFAULT_MAX_OBJECTS_PER_FRAME
}
pub(super) fn default_handshake_timeout() -> f64 {
    DEFAULT_HANDSHAKE_TIMEOUT_SECS
}
pub(super) fn default_max_connections() -> u32 {
    DEFAULT_MAX_CONNECTIONS
}
pub(super) fn default_idle_timeout() -> f64 {
    DEFAULT_IDLE_TIMEOUT_SECS
}
pub(super) fn default_max_connections_per_source() -> u32 {
    DEFAULT_MAX_CONNECTIONS_PER_SOURCE
}
pub(super) fn default_handshakes_per_source_per_sec() -> f64 {
    DEFAULT_HANDSHAKES_PER_SOURCE_PER_SEC
}
pub(super) fn default_handshake_burst_per_source() -> u32 {
    DEFAULT_HANDSHAKE_BURST_PER_SOURCE
}
/// Loopback: any local process may pick any loopback source address, so a per-address bound
/// there protects nothing (and the benchmark's nodes all come from 127.0.0.1).
pub(super) fn default_per_source_exempt() -> Vec<String> {
    vec!["127.0.0.0/8".to_string(), "::1".to_string()]
}
pub(super) fn default_http_connections() -> u32 {
    DEFAULT_HTTP_CONNECTIONS
}
pub(super) fn default_http_connections_per_client() -> u32 {
    DEFAULT_HTTP_CONNECTIONS_PER_CLIENT
}
pub(super) fn default_fsync_interval_ms() -> u64 {
    DEFAULT_FSYNC_INTERVAL_MS
}

impl Default for Config {
    /// The embedded default config: native listeners on `./tracerd.sock` and
    /// `127.0.0.1:3179`, Cardano nodes accepted at `./cardano-tracer.sock` (mainnet magic),
    /// machine logs under `./logs`, Prometheus on `127.0.0.1:12808` with the live view at
    /// `/ui/` and the metric history it charts (in memory, bounded by `tracerd.history`; a
    /// file without `tracerd.ui` keeps cardano-tracer's defaults: neither).
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
            tracerd: TracerdSettings {
                ui: Some(UiSettings { enabled: true }),
                ..TracerdSettings::default()
            },
        }
    }
}
