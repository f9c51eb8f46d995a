//! Shipping (issue 18): every node's traces into the fleet's own stores, from the log files.
//!
//! The files are the source of truth: a sink follows each node's machine-format (JSON lines)
//! files from a cursor it keeps per node in the state directory, sends what it read and moves
//! the cursor only once the remote confirmed it. So shipping never slows ingest (it shares
//! nothing with the writers but the files) and nothing acknowledged to a node is lost when
//! the remote is down: the lines wait in the files, and retention is the only bound
//! (`tracerd_sink_lost_*` counts what it deleted unsent).
//!
//! Layers: pure cores — `cursor` (positions, cursor text, lag), `record` (a machine line's
//! fields), `clickhouse/sql.rs` (schema, queries, rows) — and thin shells: `state` (cursor
//! files), `follow` (reading the files), `http` (the client), `tls` (its TLS config),
//! `clickhouse` and `loki` (the trace sinks' tasks; `loki/proto.rs` is Loki's wire format),
//! `remote_write` (the metric sink).

pub mod clickhouse;
pub mod cursor;
pub mod follow;
pub mod http;
pub mod loki;
pub mod metrics;
pub mod record;
pub mod remote_write;
pub mod state;
pub mod tls;

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, LogFormat};
use crate::logs::LogSettings;

/// Why shipping could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// No directory for the cursors.
    #[error(
        "{0} needs a directory for its cursors: run with --state-dir or set tracerd.shipStateDir"
    )]
    NoStateDir(&'static str),
    /// No machine-format file target to follow.
    #[error("{0} ships the machine-format files: add a logging target with logMode FileMode and logFormat ForMachine")]
    NoMachineFiles(&'static str),
    /// The cursor directory cannot be made.
    #[error("cursor directory {0}: {1}")]
    State(PathBuf, std::io::Error),
    /// A password file cannot be read.
    #[error("{0}: reading {1}: {2}")]
    Password(&'static str, PathBuf, std::io::Error),
    /// The client TLS files cannot be used.
    #[error("{0}.tls: {1}")]
    Tls(&'static str, tls::ClientTlsError),
    /// The URL cannot be used.
    #[error("{0}.url: {1}")]
    Url(&'static str, http::HttpError),
}

/// Where the sinks keep their cursors: `tracerd.shipStateDir`, else `<--state-dir>/ship`.
pub fn state_base(config: &Config, state_dir: Option<&Path>) -> Option<PathBuf> {
    config
        .tracerd
        .ship_state_dir
        .clone()
        .or_else(|| state_dir.map(|d| d.join("ship")))
}

/// The log root the sinks follow: the first `FileMode` target in `ForMachine`.
pub fn machine_root(config: &Config) -> Option<PathBuf> {
    LogSettings::from_config(config)
        .targets
        .into_iter()
        .find(|t| t.format == LogFormat::ForMachine)
        .map(|t| t.root)
}

/// This host's name (the default `tracer`).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "tracerd".to_string())
}

/// What the metric sinks read: tracerd's registry and its nodes (the `/metrics` sources).
pub struct Sources {
    /// tracerd's own metrics (its registry also receives the sinks' metrics).
    pub telemetry: crate::metrics::telemetry::Telemetry,
    /// The node registry.
    pub nodes: crate::node::Nodes,
}

/// Starts every configured sink on `tracker` (blocking file reads happen here, at start).
pub fn start(
    config: &Config,
    state_dir: Option<&Path>,
    sources: Sources,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<(), ShipError> {
    let registry = &sources.telemetry.registry;
    if !config.tracerd.remote_write.is_empty() {
        let metrics = remote_write::RemoteWriteMetrics::register(registry);
        for rw in &config.tracerd.remote_write {
            let auth = remote_write::auth_header(rw).map_err(|e| {
                ShipError::Password("tracerd.remoteWrite", rw.url.clone().into(), e)
            })?;
            let tls = match &rw.tls {
                Some(t) => Some(
                    tls::client_config(t).map_err(|e| ShipError::Tls("tracerd.remoteWrite", e))?,
                ),
                None => None,
            };
            remote_write::start(
                rw.clone(),
                remote_write::Access { auth, tls },
                sources.telemetry.clone(),
                sources.nodes.clone(),
                metrics.clone(),
                tracker,
                cancel.clone(),
            );
        }
    }
    let mut sink_metrics: Option<metrics::SinkMetrics> = None;
    let mut sink_metrics = || {
        sink_metrics
            .get_or_insert_with(|| metrics::SinkMetrics::register(registry))
            .clone()
    };
    if let Some(loki) = &config.tracerd.loki {
        let name = "tracerd.loki";
        let base = state_base(config, state_dir).ok_or(ShipError::NoStateDir(name))?;
        let root = machine_root(config).ok_or(ShipError::NoMachineFiles(name))?;
        let tls = match &loki.tls {
            Some(t) => Some(tls::client_config(t).map_err(|e| ShipError::Tls(name, e))?),
            None => None,
        };
        let client = http::Client::with_tls(&loki.url, tls).map_err(|e| ShipError::Url(name, e))?;
        let state = state::StateDir::open(&base, loki::SINK)
            .map_err(|e| ShipError::State(base.clone(), e))?;
        let metrics = sink_metrics();
        let follower = follow::Follower::new(loki::SINK, root, state, metrics.clone());
        let sink = loki::Sink {
            settings: loki.clone(),
            client,
            follower,
            metrics,
        };
        tracker.spawn(sink.run(cancel.clone()));
    }
    let Some(ch) = &config.tracerd.clickhouse else {
        return Ok(());
    };
    let name = "tracerd.clickhouse";
    let base = state_base(config, state_dir).ok_or(ShipError::NoStateDir(name))?;
    let root = machine_root(config).ok_or(ShipError::NoMachineFiles(name))?;
    let metrics = sink_metrics();
    let state = state::StateDir::open(&base, clickhouse::SINK)
        .map_err(|e| ShipError::State(base.clone(), e))?;
    let password = match &ch.password_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map(|s| s.lines().next().unwrap_or_default().to_string())
                .map_err(|e| ShipError::Password(name, p.clone(), e))?,
        ),
        None => None,
    };
    let follower = follow::Follower::new(clickhouse::SINK, root, state, metrics.clone());
    let sink = clickhouse::Sink {
        settings: ch.clone(),
        tracer: ch.tracer.clone().unwrap_or_else(host_name),
        password,
        follower,
        metrics,
    };
    tracker.spawn(sink.run(cancel));
    Ok(())
}
