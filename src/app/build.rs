//! Build: everything tracerd sets up before it serves — log roots prepared and probed,
//! listeners bound (or taken over from socket activation), the shared context, the node
//! registry, the telemetry and the HTTP state constructed. Nothing is spawned here; a failure
//! is a startup error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::app::systemd;
use crate::config::{Address, Config, Network, UnixSocketSettings};
use crate::forward::{ForwardMetrics, Reforwarder};
use crate::history::{History, HistoryMetrics};
use crate::http::prom_api::{ApiConfig, MetricMeta};
use crate::http::{self, HttpState};
use crate::logs::LogSettings;
use crate::metrics::exposition::Naming;
use crate::metrics::telemetry::Telemetry;
use crate::node::Nodes;
use crate::running::reload::ReloadMetrics;
use crate::session::{cardano, Context, Service};
use crate::transport::{self, Listener};

/// What [`build`] set up, ready to be run.
pub struct Built {
    /// What every session shares.
    pub shared: Arc<Context>,
    /// The Cardano session settings.
    pub cardano: Arc<cardano::Settings>,
    /// Node listeners and what each serves.
    pub listeners: Vec<(Listener, Service)>,
    /// ConnectTo addresses to dial, duplicates removed.
    pub dial: Vec<Address>,
    /// The HTTP endpoints' state.
    pub http_state: Arc<HttpState>,
    /// HTTP listeners, their routers and, for HTTPS endpoints, their TLS config.
    pub http_listeners: Vec<HttpListener>,
    /// HTTP authentication, re-read on SIGHUP (`tracerd.httpAuth`), when set.
    pub http_auth: Option<Arc<http::auth::Auth>>,
    /// `tracerd.native.tls`: the TLS config of native TCP listeners.
    pub native_tls: Option<Arc<rustls::ServerConfig>>,
    /// Certificate stores re-read on SIGHUP (`tlsCertificate`, `tracerd.native.tls`).
    pub tls_stores: Vec<Arc<crate::transport::tls::CertStore>>,
    /// Reload counters.
    pub reload_metrics: ReloadMetrics,
    /// Socket files tracerd created, removed at shutdown.
    pub socket_paths: Vec<PathBuf>,
    /// The metric history, when `hasTimeseries` is set.
    pub history: Option<Arc<History>>,
    /// Alerting, when `tracerd.alerts.ruleFiles` is set (with the history).
    pub alerts: Option<Arc<crate::alerts::Alerts>>,
    /// Re-forwarding (`hasForwarding`) and, for `AcceptAt`, its bound listener.
    pub reforward: Option<(Arc<Reforwarder>, Option<Listener>)>,
}

/// An HTTP endpoint ready to serve: listener, router, TLS config for HTTPS.
pub type HttpListener = (TcpListener, axum::Router, Option<Arc<rustls::ServerConfig>>);

/// Prepares the log roots, binds every listener and constructs the shared state.
pub async fn build(
    config: &Config,
    activated_sockets: Vec<systemd::Activated>,
) -> anyhow::Result<Built> {
    let logs = Arc::new(LogSettings::from_config(config));
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
    for socket in activated_sockets {
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
    let (native_tls, native_store) = native_tls(config).await?;
    warn_plain_tcp(config);
    let cardano = Arc::new(cardano::Settings::from_config(config));
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
    let mut reforward = None;
    if let Some(value) = &config.has_forwarding {
        let forwarding = crate::config::forwarding::parse(value).map_err(|problems| {
            let text: Vec<String> = problems.iter().map(|(k, m)| format!("{k}: {m}")).collect();
            anyhow::anyhow!("hasForwarding: {}", text.join("; "))
        })?;
        let listener = match &forwarding.network {
            Network::AcceptAt(addr) => {
                let l = bind(addr, &mut activated, unix_socket, &mut socket_paths)
                    .await
                    .with_context(|| {
                        format!(
                            "binding the re-forwarding listener {addr} (hasForwarding AcceptAt)"
                        )
                    })?;
                Some(l)
            }
            Network::ConnectTo(_) => None,
        };
        tracing::info!(downstream = %crate::forward::describe(&forwarding),
            prefixes = ?forwarding.prefixes, queue_size = forwarding.queue_size,
            "re-forwarding trace objects (hasForwarding)");
        reforward = Some((forwarding, listener));
    }
    if let Some(extra) = activated.first() {
        anyhow::bail!(
            "socket-activated {} matches no listener of the config \
             (tracerd.native.acceptAt, network AcceptAt)",
            extra.describe()
        );
    }
    let telemetry = Telemetry::new();
    let reload_metrics = ReloadMetrics::register(&telemetry.registry);
    let help = match config.metrics_help.as_ref().map(|h| h.load()) {
        Some(Ok(help)) => help,
        // Validation already warned with the path and reason (once); count it and go on.
        Some(Err(_)) => {
            reload_metrics.metrics_help_errors.inc();
            Default::default()
        }
        None => Default::default(),
    };
    let naming = Arc::new(
        Naming::new(config.metrics_no_suffix, help)
            .with_openmetrics_names(config.tracerd.open_metrics_names)
            .with_metric_bytes(config.tracerd.limits.metric_bytes),
    );
    let mut nodes = Nodes::new(naming, telemetry.node_metrics_refused.clone());
    // The live view charts the history: it keeps one (bounded by `tracerd.history`) without
    // `hasTimeseries` too.
    let ui_on = crate::config::UiSettings::is_on(&config.tracerd.ui);
    let history = (config.has_timeseries.is_some() || ui_on).then(|| {
        let metrics = HistoryMetrics::register(&telemetry.registry);
        History::new(&config.tracerd.history, metrics)
    });
    if let Some(h) = &history {
        nodes = nodes.with_observer(Arc::new(h.clone()));
    }
    let alerting = &config.tracerd.alerts;
    let alerts = match (
        &history,
        alerting.rule_files.is_empty(),
        alerting.trace_rule_files.is_empty(),
    ) {
        // Validation refuses Prometheus rules without the history.
        (Some(_), false, _) | (_, true, false) => {
            let metrics = crate::alerts::AlertsMetrics::register(&telemetry.registry);
            let settings = config.tracerd.alerts.clone();
            let loaded = tokio::task::spawn_blocking(move || {
                crate::alerts::Alerts::load(&settings, metrics)
            })
            .await
            .context("loading alerting rules")?;
            let a = loaded.map_err(|e| anyhow::anyhow!("alerting rules:\n{e}"))?;
            tracing::info!(
                groups = a.groups.len(),
                alertmanagers = config.tracerd.alerts.alertmanagers.len(),
                webhooks = config.tracerd.alerts.webhooks.len(),
                "alerting rules loaded"
            );
            Some(Arc::new(a))
        }
        _ => None,
    };
    if let Some(a) = &alerts {
        nodes = nodes.with_trace_observer(a.traces.clone());
    }
    let mut context = Context::new(config, nodes, telemetry);
    let ids = config.tracerd.native.identities.clone();
    let identities =
        tokio::task::spawn_blocking(move || crate::session::identity::Identities::load(&ids))
            .await
            .context("reading tracerd.native.identities")??;
    if !identities.is_empty() {
        tracing::info!(
            identities = config.tracerd.native.identities.len(),
            "native TCP connections may claim only the node names their credential maps to"
        );
    }
    context.identities = Arc::new(identities);
    let mut allow = Vec::new();
    for (i, net) in config.tracerd.cardano_allow_from.iter().enumerate() {
        allow.push(
            net.parse::<transport::sources::Network>()
                .map_err(|e| anyhow::anyhow!("tracerd.cardanoAllowFrom[{i}]: {e}"))?,
        );
    }
    context.cardano_allow = allow.into();
    let reforward = reforward.map(|(forwarding, listener)| {
        let metrics = ForwardMetrics::register(&context.telemetry.registry);
        let r = Arc::new(Reforwarder::new(
            forwarding,
            config.network_magic,
            config.tracerd.limits.queue_bytes,
            metrics,
        ));
        context.reforward = Some(r.clone());
        (r, listener)
    });
    let shared = Arc::new(context);
    let http_state = Arc::new(HttpState::new(
        shared.nodes.clone(),
        shared.telemetry.clone(),
        config.prometheus_labels.clone(),
    ));
    // Benchmark runs read the state directory when asked, which `run` records later.
    let _ = http_state.runs.set(Arc::new(crate::runs::Runs::new(
        shared.nodes.clone(),
        shared.running.clone(),
    )));
    let _ = http_state.captures.set(shared.captures.clone());
    let mut http_listeners = Vec::new();
    let cert_store = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || http::tls::open_store(&config))
            .await
            .context("reading tlsCertificate")?
            .context("tlsCertificate")?
    };
    let http_auth = {
        let settings = config.tracerd.http_auth.clone();
        let metrics = http::auth::AuthMetrics::register(&shared.telemetry.registry);
        let auth = tokio::task::spawn_blocking(move || http::auth::Auth::load(&settings, metrics))
            .await
            .context("reading tracerd.httpAuth")?
            .map_err(|(key, e)| anyhow::anyhow!("{key}: {}", crate::errors::error_chain(&e)))?;
        Some(Arc::new(auth)).filter(|a| a.enabled())
    };
    let protect = |router: axum::Router, kind| match &http_auth {
        Some(auth) => http::auth::protect(router, auth.clone(), kind),
        None => router,
    };
    let endpoint_tls = |key: &str, ep: &crate::config::Endpoint| {
        let tls = http::tls::endpoint_config(ep, cert_store.as_ref())
            .with_context(|| format!("{key}: TLS"))?;
        if tls.is_some() {
            tracing::info!(endpoint = key, "serving HTTPS only (epForceSSL)");
        }
        anyhow::Ok(tls)
    };
    if let Some(ep) = &config.has_prometheus {
        let l = http::bind(ep).await.context("binding hasPrometheus")?;
        tracing::info!(listen = %describe(&l), "serving Prometheus metrics over HTTP");
        let tls = endpoint_tls("hasPrometheus", ep)?;
        let extra = if ui_on {
            let scheme = if tls.is_some() { "https" } else { "http" };
            tracing::info!(url = %format!("{scheme}://{}/ui/", describe(&l)), "serving the live view");
            http_state
                .ui_link
                .store(true, std::sync::atomic::Ordering::Relaxed);
            live_view(config, &shared, &http_state, history.as_ref())
        } else {
            axum::Router::new()
        };
        let router = protect(
            http::prometheus_router_with(http_state.clone(), extra),
            http::auth::EndpointKind::Prometheus,
        );
        http_listeners.push((l, router, tls));
    } else if ui_on {
        tracing::warn!("tracerd.ui is set but hasPrometheus is off: the live view is not served");
    }
    if let Some(ep) = &config.has_ekg {
        let l = http::bind(ep).await.context("binding hasEKG")?;
        tracing::info!(listen = %describe(&l), "serving EKG JSON over HTTP");
        let tls = endpoint_tls("hasEKG", ep)?;
        let router = protect(
            http::ekg_router(http_state.clone()),
            http::auth::EndpointKind::Ekg,
        );
        http_listeners.push((l, router, tls));
    }
    if let (Some(ep), Some(h)) = (&config.has_timeseries, &history) {
        let l = http::bind(ep).await.context("binding hasTimeseries")?;
        let tls = endpoint_tls("hasTimeseries", ep)?;
        tracing::info!(listen = %describe(&l), "serving the metric history (Prometheus query API and /timeseries) over HTTP");
        // cardano-tracer's /timeseries routes; its minimum retention is ekgRequestFreq.
        let mut ts = http::timeseries::TimeseriesApi::new(
            h.store().clone(),
            shared.nodes.clone(),
            h.control().clone(),
        );
        ts.min_retention_ms = (config.ekg_request_freq * 1000.0).round() as u64;
        let router = http::prom_api::endpoint_router(
            h.store().clone(),
            history_api(shared.nodes.clone(), shared.telemetry.clone()),
            http::timeseries::router(ts).merge(crate::alerts::api::router(alerts.clone())),
            http_state.clone(),
        );
        let router = protect(router, http::auth::EndpointKind::Timeseries);
        http_listeners.push((l, router, tls));
    }
    Ok(Built {
        native_tls,
        http_auth,
        tls_stores: cert_store.into_iter().chain(native_store).collect(),
        history,
        alerts,
        shared,
        cardano,
        listeners,
        dial,
        http_state,
        http_listeners,
        reload_metrics,
        socket_paths,
        reforward,
    })
}

/// `tracerd.native.tls`: its certificate store and server config (mutual TLS with
/// `clientCaFile`).
async fn native_tls(
    config: &Config,
) -> anyhow::Result<(
    Option<Arc<rustls::ServerConfig>>,
    Option<Arc<transport::tls::CertStore>>,
)> {
    let Some(t) = config.tracerd.native.tls.clone() else {
        return Ok((None, None));
    };
    let opened = tokio::task::spawn_blocking(move || {
        let files = transport::tls::CertFiles {
            cert: t.certificate_file.clone(),
            key: t.certificate_key_file.clone(),
            chain: t.certificate_chain.clone(),
        };
        let store = Arc::new(transport::tls::CertStore::open(files)?);
        let server =
            transport::tls::server_config(store.clone(), t.client_ca_file.as_deref(), &[])?;
        Ok::<_, transport::tls::TlsError>((server, store, t.client_ca_file.is_some()))
    })
    .await
    .context("reading tracerd.native.tls")?
    .context("tracerd.native.tls")?;
    let (server, store, mutual) = opened;
    tracing::info!(mutual_tls = mutual, "native TCP listeners speak TLS only");
    Ok((Some(server), Some(store)))
}

/// Warns about TCP listeners on non-loopback addresses whose protocol is not protected: the
/// native protocol without `tracerd.native.tls`, Cardano's always (it has no authentication).
fn warn_plain_tcp(config: &Config) {
    let exposed = |addr: &Address| match addr {
        Address::Tcp { host, .. } => !is_loopback(host),
        Address::Unix(_) => false,
    };
    if config.tracerd.native.tls.is_none() {
        for addr in config
            .tracerd
            .native
            .accept_at
            .iter()
            .filter(|a| exposed(a))
        {
            tracing::warn!(listen = %addr, "native protocol over plain TCP on a non-loopback address: \
                anyone who reaches it can send as any node; set tracerd.native.tls (see docs/SECURITY.md)");
        }
    }
    if let Some(Network::AcceptAt(addr)) = &config.network {
        if exposed(addr) {
            tracing::warn!(listen = %addr, "Cardano forwarding protocol on a non-loopback TCP address: \
                it has no encryption or authentication; prefer a Unix socket or a tunnel (see docs/SECURITY.md)");
        }
    }
}

/// Whether `host` names only the loopback interface.
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The live view's routes, with Prometheus's query API over the history under `/ui/history`.
fn live_view(
    config: &Config,
    shared: &Arc<crate::session::Context>,
    http_state: &Arc<HttpState>,
    history: Option<&Arc<History>>,
) -> axum::Router {
    let retention_ms = history.map_or(0, |_| {
        (config.tracerd.history.retention_hours * 3_600_000.0).clamp(0.0, u64::MAX as f64) as u64
    });
    let state = Arc::new(crate::ui::UiState::new(
        http_state.clone(),
        shared.running.clone(),
        retention_ms,
    ));
    let api = history.map(|h| {
        http::prom_api::router(
            h.store().clone(),
            history_api(shared.nodes.clone(), shared.telemetry.clone()),
        )
    });
    crate::ui::router(state, api)
}

/// The query API's limits: under the HTTP request timeout, so a slow query answers with
/// Prometheus's timeout error rather than the guard's.
/// `/api/v1/metadata` answers from the families `/metrics` writes now (connected nodes' and
/// tracerd's own), keyed and typed as a Prometheus scraping its OpenMetrics stores them.
fn history_api(nodes: Nodes, telemetry: Telemetry) -> ApiConfig {
    ApiConfig {
        timeout: http::REQUEST_TIMEOUT.saturating_sub(std::time::Duration::from_secs(5)),
        metadata: Arc::new(move || metadata(&nodes, &telemetry)),
        ..ApiConfig::default()
    }
}

fn metadata(nodes: &Nodes, telemetry: &Telemetry) -> BTreeMap<String, MetricMeta> {
    use crate::metrics::exposition::{family_names, family_names_as, shape, Kind, Shape};
    use prometheus::proto::MetricType;
    let meta = |kind: &str, help: &str| MetricMeta {
        kind: kind.to_string(),
        help: help.to_string(),
        unit: String::new(),
    };
    let mut out = BTreeMap::new();
    for view in nodes.views() {
        for (name, value) in view.live.metrics().iter() {
            let Some(family) = name.family.as_deref() else {
                continue;
            };
            let kind = match shape(value) {
                Shape::Counter(_) => Kind::Counter,
                Shape::Gauge(_) | Shape::GaugeText(_) => Kind::Gauge,
                Shape::Info(_) => Kind::Info,
            };
            let names = family_names_as(family, kind, name.openmetrics_names);
            out.entry(names.base)
                .or_insert_with(|| meta(names.openmetrics_type, &name.help));
        }
    }
    for f in telemetry.registry.gather() {
        let (base, kind) = match f.get_field_type() {
            MetricType::COUNTER => (family_names(f.name(), Kind::Counter).base, "counter"),
            MetricType::GAUGE => (f.name().to_string(), "gauge"),
            MetricType::HISTOGRAM => (f.name().to_string(), "histogram"),
            _ => continue,
        };
        out.insert(base, meta(kind, f.help()));
    }
    out
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

pub fn describe(listener: &tokio::net::TcpListener) -> String {
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
