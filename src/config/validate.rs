//! Pure config validation: a function from a parsed [`Config`] and the [`Probe`] gathered
//! before it to the list of [`Problem`]s (and warnings). No I/O, no clock.

use std::fmt;

use super::probe::Probe;
use super::{Config, FsyncPolicy, LogMode, MetricsHelp, Network};

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

/// Checks values serde cannot: every problem is pushed, none stops the search. Pure: what
/// needs the file system (groups, help files) comes in `probe`.
pub(super) fn validate(
    config: &Config,
    probe: &Probe,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) {
    let mut problem = |key: &str, message: String| {
        problems.push(Problem {
            key: key.to_string(),
            line: None,
            message,
        })
    };
    if !config.tracerd.alerts.rule_files.is_empty() && config.has_timeseries.is_none() {
        problem(
            "tracerd.alerts.ruleFiles",
            "needs hasTimeseries: rules are evaluated on the metric history".to_string(),
        );
    }
    if let Some(ch) = &config.tracerd.clickhouse {
        for (key, message) in super::ship::check_clickhouse(ch, &config.logging) {
            problem(&key, message);
        }
    }
    if let Some(loki) = &config.tracerd.loki {
        for (key, message) in super::ship::check_loki(loki, &config.logging) {
            problem(&key, message);
        }
    }
    for (i, rw) in config.tracerd.remote_write.iter().enumerate() {
        for (key, message) in super::ship::check_remote_write(i, rw) {
            problem(&key, message);
        }
    }
    for (key, message) in super::native_forward::check_forward(
        &config.tracerd.forward,
        &config.logging,
        &config.tracerd.native.accept_at,
    ) {
        problem(&key, message);
    }
    for (key, message) in super::capture::check_capture(&config.tracerd.capture) {
        problem(&key, message);
    }
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
        if rotation.rp_max_age_minutes.is_some() && rotation.rp_max_age_hours.is_some() {
            warnings.push(Problem {
                key: "rotation.rpMaxAgeHours".to_string(),
                line: None,
                message: "both rpMaxAgeMinutes and rpMaxAgeHours given: rpMaxAgeMinutes wins"
                    .to_string(),
            });
        }
    }
    if let Some(Err(message)) = config.tracerd.unix_socket.mode_bits() {
        problem("tracerd.unixSocket.mode", message);
    }
    if let Some(group) = &config.tracerd.unix_socket.group {
        match probe.groups.get(group) {
            Some(Ok(_)) => {}
            Some(Err(message)) => problem("tracerd.unixSocket.group", message.clone()),
            None => problem("tracerd.unixSocket.group", not_probed(group)),
        }
    }
    let durability = &config.tracerd.durability;
    if durability.fsync == FsyncPolicy::Interval && durability.fsync_interval_ms == 0 {
        problem(
            "tracerd.durability.fsyncIntervalMs",
            "must be at least 1 with fsync: interval".to_string(),
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
    if let Some(MetricsHelp::File(path)) = &config.metrics_help {
        match probe.help_files.get(path) {
            Some(Ok(_)) => {}
            // cardano-tracer ignores a broken help file; tracerd says so and goes on.
            Some(Err(e)) => warnings.push(Problem {
                key: "metricsHelp".to_string(),
                line: None,
                message: format!("{e}; serving metrics without HELP texts"),
            }),
            None => problem("metricsHelp", not_probed(&path.display())),
        }
    }
    let mut any_tls = false;
    for (key, endpoint) in [
        ("hasPrometheus", &config.has_prometheus),
        ("hasEKG", &config.has_ekg),
        ("hasTimeseries", &config.has_timeseries),
    ] {
        let Some(ep) = endpoint else { continue };
        if ep.ep_host.is_empty() && key != "hasTimeseries" {
            problem(&format!("{key}.epHost"), "must not be empty".to_string());
        }
        if ep.ep_force_ssl == Some(true) {
            any_tls = true;
            if config.tls_certificate.is_none() {
                // cardano-tracer's MissingCertificate: it serves plain HTTP.
                warnings.push(Problem {
                    key: format!("{key}.epForceSSL"),
                    line: None,
                    message: "no tlsCertificate is configured: serving plain HTTP (as \
                              cardano-tracer does)"
                        .to_string(),
                });
            }
        }
    }
    if config.tls_certificate.is_some() && !any_tls {
        warnings.push(Problem {
            key: "tlsCertificate".to_string(),
            line: None,
            message: "no HTTP endpoint has epForceSSL: true, so every endpoint serves plain \
                      HTTP (as cardano-tracer does)"
                .to_string(),
        });
    }
    for (i, id) in config.tracerd.native.identities.iter().enumerate() {
        let key = format!("tracerd.native.identities[{i}]");
        if id.certificate.is_none() && id.token_file.is_none() {
            problem(&key, "needs certificate and/or tokenFile".to_string());
        }
        if id.names.is_empty() {
            problem(
                &format!("{key}.names"),
                "must name at least one node".to_string(),
            );
        }
        if id.certificate.is_some()
            && config
                .tracerd
                .native
                .tls
                .as_ref()
                .is_none_or(|t| t.client_ca_file.is_none())
        {
            problem(
                &format!("{key}.certificate"),
                "needs tracerd.native.tls.clientCaFile: client certificates are verified against it"
                    .to_string(),
            );
        }
    }
    if let Some(Err(found)) = config.has_forwarding.as_ref().map(super::forwarding::parse) {
        for (key, message) in found {
            problem(&key, message);
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
}

/// A fact validation needs was not probed: a bug in the caller, reported, never a panic.
fn not_probed(what: &dyn fmt::Display) -> String {
    format!("{what} was not probed before validation")
}
