//! The composition root: prepares log roots, binds listeners (or takes over the ones systemd
//! passed), spawns every long-lived task on one `TaskTracker` under one `CancellationToken`,
//! tells systemd when it is ready, reloads the config on SIGHUP, and runs the one shutdown
//! sequence.
//!
//! The HTTP endpoints run on a tracker and token of their own: they stop last, after every
//! session has drained, so a final scrape during shutdown still answers (`/readyz` says 503).

pub mod cli;
pub mod resources;
pub mod systemd;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::systemd::{Notifier, Systemd};
use crate::config::{Address, Config, MinSeverity, Network, UnixSocketSettings};
use crate::http::{self, HttpState};
use crate::logs::{janitor, LogSettings};
use crate::metrics::exposition::Naming;
use crate::metrics::telemetry::Telemetry;
use crate::node::Nodes;
use crate::running::reload::{self, ReloadMetrics};
use crate::running::{self, Running};
use crate::session::cardano;
use crate::session::Context;
use crate::session::{Service, Sessions};
use crate::transport::{self, Acceptor, Listener};
use crate::utc;

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
}

/// Runs tracerd with `config` until `shutdown` resolves, then drains and returns.
///
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
    } = options;
    // Installed first: from here on SIGHUP never terminates tracerd (its default action).
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot install the SIGHUP handler; reload is unavailable");
            None
        }
    };
    let logs = Arc::new(LogSettings::from_config(&config));
    for target in &logs.targets {
        prepare_root(&target.root)?;
        tracing::info!(root = %target.root.display(), format = ?target.format, "writing node logs");
    }
    if let Some(journal) = &logs.journal {
        crate::logs::journal::probe(&journal.socket)?;
        tracing::info!(socket = %journal.socket.display(), formats = ?journal.formats,
            "sending node logs to journald");
    }
    let mut activated = Vec::new();
    for socket in systemd.listeners {
        let listener = match socket {
            systemd::Activated::Tcp(l) => Listener::from_std_tcp(l),
            systemd::Activated::Unix(l) => Listener::from_std_unix(l),
        }
        .context("taking over a socket-activated listener")?;
        activated.push(listener);
    }
    let unix_socket = &config.tracerd.unix_socket;
    let mut socket_paths = Vec::new();
    let mut listeners = Vec::new();
    for addr in &config.tracerd.native.accept_at {
        let listener = bind(addr, &mut activated, unix_socket, &mut socket_paths)
            .await
            .with_context(|| format!("binding native listener {addr}"))?;
        tracing::info!(listen = %listener.describe(), protocol = "native", "listening");
        listeners.push((listener, Service::Native));
    }
    let cardano = Arc::new(cardano::Settings::from_config(&config));
    let mut dial = Vec::new();
    match &config.network {
        Some(Network::AcceptAt(addr)) => {
            let listener = bind(addr, &mut activated, unix_socket, &mut socket_paths)
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
    if let Some(extra) = activated.first() {
        anyhow::bail!(
            "socket-activated {} matches no listener of the config \
             (tracerd.native.acceptAt, network AcceptAt)",
            extra.describe()
        );
    }
    let help = match &config.metrics_help {
        Some(help) => help.load().map_err(anyhow::Error::msg)?,
        None => Default::default(),
    };
    let naming = Arc::new(Naming::new(config.metrics_no_suffix, help));
    let telemetry = Telemetry::new();
    let nodes = Nodes::new(naming, telemetry.node_metrics_refused.clone());
    let shared = Arc::new(Context::new(&config, nodes, telemetry));
    let live = shared.running.clone();
    let reload_metrics = ReloadMetrics::register(&shared.telemetry.registry);
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
    for (listener, service) in listeners {
        let sessions = Arc::new(Sessions {
            service,
            ctx: shared.clone(),
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
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                let Some(path) = &config_path else {
                    tracing::warn!(signal = "SIGHUP", "no config file to reload (running on embedded defaults)");
                    continue;
                };
                tracing::info!(signal = "SIGHUP", config = %path.display(), "reloading config");
                let before = live.current().config.tracerd.min_log_severity;
                reload::reload(path, &live, &reload_metrics).await;
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
    cancel.cancel();
    tracker.close();
    let grace = Duration::from_secs_f64(live.current().config.tracerd.shutdown_grace_secs);
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

/// Takes the activated socket that listens on `addr`, or binds `addr` (a Unix socket then
/// gets `tracerd.unixSocket`'s mode and group and is removed at shutdown).
async fn bind(
    addr: &Address,
    activated: &mut Vec<Listener>,
    unix_socket: &UnixSocketSettings,
    socket_paths: &mut Vec<PathBuf>,
) -> anyhow::Result<Listener> {
    for i in 0..activated.len() {
        if activated[i].listens_on(addr).await {
            let listener = activated.swap_remove(i);
            tracing::info!(listen = %listener.describe(), "using the socket passed by systemd");
            return Ok(listener);
        }
    }
    let listener = Listener::bind(addr).await?;
    if let Some(path) = listener.socket_path() {
        socket_paths.push(path.to_path_buf());
        transport::set_socket_permissions(path, unix_socket)
            .with_context(|| format!("setting mode/group of {}", path.display()))?;
    }
    Ok(listener)
}

/// `STATUS=` text: nodes connected and the write rate since the previous report.
fn status_line(shared: &Context, rate: Option<f64>) -> String {
    let nodes = shared.nodes.connected().len();
    match rate {
        Some(r) => format!("{nodes} node(s) connected; writing {r:.0} trace objects/s"),
        None => format!("{nodes} node(s) connected"),
    }
}

fn objects_written(shared: &Context) -> f64 {
    use prometheus::core::Collector;
    shared
        .telemetry
        .objects_written
        .collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .map(|m| m.get_counter().get_value())
        .sum()
}

/// Sends `STATUS=` every few seconds.
async fn report_status(notifier: Notifier, shared: Arc<Context>, cancel: CancellationToken) {
    const EVERY: Duration = Duration::from_secs(5);
    let mut last = objects_written(&shared);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        let now = objects_written(&shared);
        let rate = (now - last).max(0.0) / EVERY.as_secs_f64();
        last = now;
        notifier.notify(&format!("STATUS={}", status_line(&shared, Some(rate))));
    }
}

/// Sends `WATCHDOG=1` every `every`, from the runtime: a runtime too stuck to run this task
/// stops the pings and systemd restarts the service.
async fn ping_watchdog(notifier: Notifier, every: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => notifier.notify("WATCHDOG=1"),
        }
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

/// Runs retention every `rpFrequencySecs` of the live config (a reload changes the period
/// and the policy from the next pass on).
async fn prune_periodically(live: Running, telemetry: Telemetry, cancel: CancellationToken) {
    loop {
        let period = Duration::from_secs(live.current().logs.prune_every_secs.max(1));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let settings = live.current().logs.clone();
        if settings.policy.is_none() {
            continue;
        }
        match tokio::task::spawn_blocking(move || janitor::prune_all(&settings, utc::now_unix()))
            .await
        {
            Ok(pass) => telemetry.files_pruned.inc_by(pass.deleted),
            Err(e) => tracing::error!(error = %e, "retention pass failed"),
        }
    }
}

/// Installs the SIGTERM and SIGINT handlers now (call it inside the runtime) and returns a
/// future that resolves on either.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!(signal = "SIGTERM", "stop requested"),
                    _ = int.recv() => tracing::info!(signal = "SIGINT", "stop requested"),
                }
            }
            (Ok(mut one), Err(e)) | (Err(e), Ok(mut one)) => {
                tracing::error!(error = %e, "cannot install one of the SIGTERM/SIGINT handlers");
                one.recv().await;
                tracing::info!("stop requested");
            }
            (Err(e), Err(_)) => {
                tracing::error!(error = %e, "cannot install SIGTERM/SIGINT handlers; stop with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
    }
}
