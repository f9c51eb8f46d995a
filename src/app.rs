//! The composition root: prepares log roots, binds listeners, spawns every long-lived task on
//! one `TaskTracker` under one `CancellationToken`, and runs the one shutdown sequence.
//!
//! The HTTP endpoints run on a tracker and token of their own: they stop last, after every
//! session has drained, so a final scrape during shutdown still answers (`/readyz` says 503).

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cardano;
use crate::config::{Config, Network};
use crate::exposition::Naming;
use crate::http::{self, HttpState};
use crate::ingest::Shared;
use crate::logs::{janitor, LogSettings};
use crate::net::{self, Listener, Service};
use crate::node::Nodes;
use crate::telemetry::Telemetry;
use crate::utc;

/// Shutdown did not finish within the grace period.
#[derive(Debug, thiserror::Error)]
#[error("shutdown grace period of {0:?} passed with {1} task(s) still running")]
pub struct DrainTimeout(pub Duration, pub usize);

/// Runs tracerd with `config` until `shutdown` resolves, then drains and returns.
///
/// `on_ready` is called with the bound listener addresses once every listener is bound and
/// every log root is writable.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&[String]),
) -> anyhow::Result<()> {
    let logs = Arc::new(LogSettings::from_config(&config));
    for target in &logs.targets {
        prepare_root(&target.root)?;
        tracing::info!(root = %target.root.display(), format = ?target.format, "writing node logs");
    }
    let mut listeners = Vec::new();
    for addr in &config.tracerd.native.accept_at {
        let listener = Listener::bind(addr)
            .await
            .with_context(|| format!("binding native listener {addr}"))?;
        tracing::info!(listen = %listener.describe(), protocol = "native", "listening");
        listeners.push((listener, Service::Native));
    }
    let cardano = Arc::new(cardano::Settings::from_config(&config));
    let mut dial = Vec::new();
    match &config.network {
        Some(Network::AcceptAt(addr)) => {
            let listener = Listener::bind(addr)
                .await
                .with_context(|| format!("binding Cardano listener {addr} (network: AcceptAt)"))?;
            tracing::info!(listen = %listener.describe(), protocol = "cardano",
                magic = config.network_magic, "listening");
            listeners.push((listener, Service::Cardano(cardano.clone())));
        }
        Some(Network::ConnectTo(addrs)) => {
            for addr in addrs {
                if !dial.contains(addr) {
                    dial.push(addr.clone());
                }
            }
        }
        None => {}
    }
    let help = match &config.metrics_help {
        Some(help) => help.load().map_err(anyhow::Error::msg)?,
        None => Default::default(),
    };
    let naming = Arc::new(Naming::new(config.metrics_no_suffix, help));
    let telemetry = Telemetry::new();
    let shared = Arc::new(Shared {
        network_magic: config.network_magic,
        limits: config.tracerd.limits.clone(),
        durability: config.tracerd.durability.clone(),
        logs: logs.clone(),
        nodes: Nodes::new(naming, telemetry.node_metrics_refused.clone()),
        telemetry,
    });
    let http_state = Arc::new(HttpState::new(
        shared.nodes.clone(),
        shared.telemetry.clone(),
        config.prometheus_labels.clone(),
    ));
    let mut http_listeners = Vec::new();
    if let Some(ep) = &config.has_prometheus {
        let l = http::bind(ep).await.context("binding hasPrometheus")?;
        tracing::info!(listen = %describe(&l), "serving Prometheus metrics over HTTP");
        http_listeners.push((l, http::prometheus_router(http_state.clone())));
    }
    if let Some(ep) = &config.has_ekg {
        let l = http::bind(ep).await.context("binding hasEKG")?;
        tracing::info!(listen = %describe(&l), "serving EKG JSON over HTTP");
        http_listeners.push((l, http::ekg_router(http_state.clone())));
    }
    let http_cancel = CancellationToken::new();
    let http_tracker = TaskTracker::new();
    let mut http_described = Vec::new();
    for (listener, router) in http_listeners {
        http_described.push(format!("http://{}", describe(&listener)));
        http_tracker.spawn(http::serve(
            listener,
            router,
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
    described.extend(http_described);
    let socket_paths: Vec<_> = listeners
        .iter()
        .filter_map(|(l, _)| l.socket_path().map(Path::to_path_buf))
        .collect();
    for (listener, service) in listeners {
        tracker.spawn(net::accept_loop(
            listener,
            service,
            shared.clone(),
            limit.clone(),
            cancel.clone(),
            tracker.clone(),
        ));
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
        logs.clone(),
        shared.telemetry.clone(),
        cancel.clone(),
    ));
    http_state.set_ready(true);
    on_ready(&described);

    shutdown.await;
    tracing::info!("shutting down: no new connections; draining sessions");
    http_state.set_ready(false);
    cancel.cancel();
    tracker.close();
    let grace = Duration::from_secs_f64(config.tracerd.shutdown_grace_secs);
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
    match drained.and(http_drained) {
        Ok(()) => {
            tracing::info!("shutdown complete");
            Ok(())
        }
        Err(_) => Err(DrainTimeout(grace, tracker.len() + http_tracker.len()).into()),
    }
}

fn describe(listener: &tokio::net::TcpListener) -> String {
    listener
        .local_addr()
        .map_or_else(|e| format!("(unknown: {e})"), |a| a.to_string())
}

fn prepare_root(root: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(root)
        .with_context(|| format!("creating log root {}", root.display()))?;
    let probe = root.join(format!(".tracerd-write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("log root {} is not writable", root.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

async fn prune_periodically(
    logs: Arc<LogSettings>,
    telemetry: Telemetry,
    cancel: CancellationToken,
) {
    if logs.policy.is_none() {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(logs.prune_every_secs));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let settings = logs.clone();
        match tokio::task::spawn_blocking(move || janitor::prune_all(&settings, utc::now_unix()))
            .await
        {
            Ok(pass) => telemetry.files_pruned.inc_by(pass.deleted),
            Err(e) => tracing::error!(error = %e, "retention pass failed"),
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install SIGTERM handler; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "stop requested"),
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "stop requested"),
    }
}
