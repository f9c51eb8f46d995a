//! The composition root, in two steps: [`build`] prepares log roots, binds listeners (or
//! takes over the ones systemd passed) and constructs the shared state; [`run`] then spawns
//! every long-lived task on one `TaskTracker` under one `CancellationToken`, tells systemd
//! when it is ready, reloads the config on SIGHUP ([`signals`]), keeps the periodic tasks
//! ([`timers`]) and runs the one shutdown sequence.
//!
//! The HTTP endpoints run on a tracker and token of their own: they stop last, after every
//! session has drained, so a final scrape during shutdown still answers (`/readyz` says 503).

pub mod allocator;
pub mod build;
pub mod cli;
pub mod resources;
pub mod signals;
pub mod systemd;
pub mod timers;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::build::{build, Built};
pub use crate::app::signals::shutdown_signal;
use crate::app::signals::Hangup;
use crate::app::systemd::Systemd;
use crate::app::timers::{ping_watchdog, prune_periodically, report_status, status_line};
use crate::config::{Config, MinSeverity};
use crate::http;
use crate::running::{self, reload};
use crate::session::{cardano, Sessions};
use crate::transport::Acceptor;

/// Shutdown did not finish within the grace period.
#[derive(Debug, thiserror::Error)]
#[error("shutdown grace period of {0:?} passed with {1} task(s) still running")]
pub struct DrainTimeout(pub Duration, pub usize);

/// How tracerd was started, besides its config.
#[derive(Default)]
pub struct Options {
    /// The config file, re-read on SIGHUP (without one, SIGHUP only logs that there is
    /// nothing to reload).
    pub config_path: Option<PathBuf>,
    /// Notification socket, watchdog and activated sockets handed over by systemd.
    pub systemd: Systemd,
    /// Changes the level of tracerd's own log after a reload; `None` when the command line
    /// fixed it.
    pub set_log_level: Option<Box<dyn Fn(MinSeverity) + Send + Sync>>,
    /// `--state-dir`: tracerd's own state directory, already created and probed writable;
    /// published as `Running::state_dir`.
    pub state_dir: Option<PathBuf>,
}

/// Runs tracerd with `config` until `shutdown` resolves, then drains and returns.
///
/// Re-reads every certificate store (SIGHUP): a store that fails keeps its pair, and says why.
async fn reload_certificates(stores: &[Arc<crate::transport::tls::CertStore>]) {
    for store in stores {
        let s = store.clone();
        let result = tokio::task::spawn_blocking(move || s.reload()).await;
        let cert = store.files().cert.display().to_string();
        match result {
            Ok(Ok(())) => tracing::info!(%cert, "TLS certificate and key re-read"),
            Ok(Err(e)) => tracing::error!(%cert, error = %crate::errors::error_chain(&e),
                "TLS certificate not reloaded; the previous one stays in force"),
            Err(e) => tracing::error!(%cert, error = %e, "TLS certificate reload failed"),
        }
    }
}

/// Re-reads the HTTP credential files (SIGHUP); on an error the credentials in force stay.
async fn reload_http_auth(auth: Option<&Arc<http::auth::Auth>>) {
    let Some(auth) = auth.cloned() else { return };
    match tokio::task::spawn_blocking(move || auth.reload()).await {
        Ok(Ok(())) => tracing::info!("HTTP credentials re-read"),
        Ok(Err((key, e))) => tracing::error!(key, error = %crate::errors::error_chain(&e),
            "HTTP credentials not reloaded; the previous ones stay in force"),
        Err(e) => tracing::error!(error = %e, "HTTP credentials reload failed"),
    }
}

/// `on_ready` is called with the bound listener addresses once every listener is bound and
/// every log root is writable; systemd is then told `READY=1`. SIGHUP re-reads
/// `options.config_path` (see [`crate::running::reload`]).
pub async fn run(
    config: Config,
    options: Options,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&[String]),
) -> anyhow::Result<()> {
    let Options {
        config_path,
        systemd,
        set_log_level,
        state_dir,
    } = options;
    // Installed first: from here on SIGHUP never terminates tracerd (its default action).
    let mut hangup = Hangup::install();
    // The per-source bounds of every node listener (before anything is bound: a bad
    // `tracerd.limits.perSource.exempt` entry is a start error).
    let admission = Arc::new(crate::transport::admission::Admission::new(
        crate::transport::admission::SourceLimits::from_config(&config.tracerd.limits)
            .map_err(anyhow::Error::msg)?,
    ));
    let Built {
        shared,
        cardano,
        listeners,
        dial,
        http_state,
        http_listeners,
        tls_stores,
        native_tls,
        http_auth,
        reload_metrics,
        socket_paths,
        history,
        alerts,
        reforward,
    } = build(&config, systemd.listeners).await?;
    let live = shared.running.clone();
    if let Some(dir) = state_dir {
        tracing::info!(state_dir = %dir.display(), "state directory");
        live.set_state_dir(dir);
    }
    if let Some(a) = &alerts {
        // Before anything is served: the saved alerts are listed from the first request on.
        crate::alerts::restore(a, live.state_dir().map(|d| d.to_path_buf())).await;
    }
    let http_cancel = CancellationToken::new();
    let http_tracker = TaskTracker::new();
    let mut http_described = Vec::new();
    for (listener, router, tls) in http_listeners {
        let scheme = if tls.is_some() { "https" } else { "http" };
        http_described.push(format!("{scheme}://{}", build::describe(&listener)));
        http_tracker.spawn(http::serve(
            listener,
            router,
            tls,
            (
                http::conns::Limits::from_config(&config.tracerd.limits),
                shared.telemetry.clone(),
            ),
            http_cancel.clone(),
            http_tracker.clone(),
        ));
    }
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let limit = Arc::new(Semaphore::new(
        config.tracerd.limits.max_connections as usize,
    ));
    let mut described: Vec<String> = listeners.iter().map(|(l, _)| l.describe()).collect();
    if let Some((reforwarder, listener)) = reforward {
        // Before any node connects, so every node's session can start its connections.
        reforwarder.start(tracker.clone(), cancel.clone());
        if let Some(listener) = listener {
            tracing::info!(listen = %listener.describe(), "serving re-forwarded trace objects (hasForwarding AcceptAt)");
            described.push(listener.describe());
            let downstreams = Arc::new(crate::forward::accept::Downstreams {
                forwarding: reforwarder,
            });
            tracker.spawn(downstreams.run(
                listener,
                limit.clone(),
                cancel.clone(),
                tracker.clone(),
            ));
        }
    }
    described.extend(http_described);
    // Before any node connects: a capture at start begins with the node's first session.
    shared.captures.start_tasks(tracker.clone(), cancel.clone());
    for (listener, service) in listeners {
        let sessions = Arc::new(Sessions {
            service,
            ctx: shared.clone(),
            tls: native_tls.clone(),
            admission: admission.clone(),
        });
        tracker.spawn(sessions.run(listener, limit.clone(), cancel.clone(), tracker.clone()));
    }
    for addr in dial {
        tracing::info!(node = %addr, protocol = "cardano", magic = config.network_magic,
            "dialing node (network: ConnectTo)");
        tracker.spawn(cardano::dial::connect_loop(
            addr,
            cardano.clone(),
            shared.clone(),
            cancel.clone(),
        ));
    }
    tracker.spawn(prune_periodically(
        live.clone(),
        shared.telemetry.clone(),
        cancel.clone(),
    ));
    tracker.spawn(resources::report_periodically(live.clone(), cancel.clone()));
    let roots = live.clone();
    tracker.spawn(crate::metrics::disk::sample_periodically(
        crate::metrics::disk::DiskMetrics::register(&shared.telemetry.registry),
        move || {
            let current = roots.current();
            current
                .logs
                .targets
                .iter()
                .map(|t| t.root.clone())
                .collect()
        },
        cancel.clone(),
    ));
    // Shipping (issue 18): sinks follow the log files from their cursors.
    crate::ship::start(
        &config,
        live.state_dir(),
        crate::ship::Sources {
            telemetry: shared.telemetry.clone(),
            nodes: shared.nodes.clone(),
        },
        &tracker,
        cancel.clone(),
    )?;
    // Native downstreams (issue 16): forwarded from the files, like the sinks.
    crate::forward::native::start(
        &config,
        live.state_dir(),
        &shared.telemetry.registry,
        &shared.nodes,
        &tracker,
        cancel.clone(),
    )?;
    if let Some(a) = alerts {
        let store = history.as_ref().map(|h| h.store().clone());
        crate::alerts::start(a, store, shared.nodes.clone(), &tracker, cancel.clone());
    }
    if let Some(h) = history {
        tracker.spawn(crate::history::tasks::run(
            h,
            shared.telemetry.clone(),
            shared.nodes.clone(),
            cancel.clone(),
        ));
    }
    tracker.spawn(crate::metrics::budget::trim_periodically(
        shared.nodes.naming_handle(),
        cancel.clone(),
    ));
    let departed = live.clone();
    tracker.spawn(crate::node::forget_departed_periodically(
        shared.nodes.clone(),
        shared.telemetry.clone(),
        move || departed.current().config.tracerd.departed_series(),
        cancel.clone(),
    ));
    running::emit_config_event(&config, "start");
    http_state.set_ready(true);
    on_ready(&described);
    let notifier = systemd.notify;
    if let Some(n) = &notifier {
        n.notify(&format!("READY=1\nSTATUS={}", status_line(&shared, None)));
        tracker.spawn(report_status(n.clone(), shared.clone(), cancel.clone()));
    }
    if let (Some(n), Some(period)) = (&notifier, systemd.watchdog) {
        tracing::info!(period = ?period, "systemd watchdog enabled; pinging at half the period");
        tracker.spawn(ping_watchdog(n.clone(), period / 2, cancel.clone()));
    }

    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(()) = hangup.recv() => {
                let Some(path) = &config_path else {
                    tracing::warn!(signal = "SIGHUP", "no config file to reload (running on embedded defaults)");
                    continue;
                };
                tracing::info!(signal = "SIGHUP", config = %path.display(), "reloading config");
                let before = live.current().config.tracerd.min_log_severity;
                reload::reload(path, &live, &reload_metrics).await;
                reload_certificates(&tls_stores).await;
                reload_http_auth(http_auth.as_ref()).await;
                let after = live.current().config.tracerd.min_log_severity;
                if let (Some(set), true) = (&set_log_level, before != after) {
                    let level = after.unwrap_or(MinSeverity::Info);
                    set(level);
                    tracing::warn!(min_log_severity = ?level, "tracerd's own log level changed");
                }
                if let Some(n) = &notifier {
                    n.notify(&format!("STATUS={}", status_line(&shared, None)));
                }
            }
        }
    }
    tracing::info!("shutting down: no new connections; draining sessions");
    http_state.set_ready(false);
    if let Some(n) = &notifier {
        n.notify("STOPPING=1\nSTATUS=draining sessions");
    }
    let grace = live.current().config.tracerd.shutdown_grace();
    let sessions = (cancel, tracker);
    drain(sessions, (http_cancel, http_tracker), grace, socket_paths).await?;
    tracing::info!("shutdown complete");
    Ok(())
}

/// The one shutdown sequence: cancels the sessions' token and waits for their tracker (every
/// writer drained and synced), then the HTTP endpoints' within what is left of `grace`, then
/// removes the socket files tracerd created.
async fn drain(
    (cancel, tracker): (CancellationToken, TaskTracker),
    (http_cancel, http_tracker): (CancellationToken, TaskTracker),
    grace: Duration,
    socket_paths: Vec<PathBuf>,
) -> Result<(), DrainTimeout> {
    cancel.cancel();
    tracker.close();
    let started = tokio::time::Instant::now();
    let drained = tokio::time::timeout(grace, tracker.wait()).await;
    // HTTP last: in-flight requests finish within what is left of the grace period.
    http_cancel.cancel();
    http_tracker.close();
    let left = grace.saturating_sub(started.elapsed());
    let http_drained = tokio::time::timeout(left, http_tracker.wait()).await;
    for path in socket_paths {
        let _ = std::fs::remove_file(path);
    }
    drained
        .and(http_drained)
        .map_err(|_| DrainTimeout(grace, tracker.len() + http_tracker.len()))
}
