//! Config reload (SIGHUP), the shell around the pure [`crate::config::plan`]: read and probe
//! the file on the blocking pool, plan, log and count the outcome, and publish to the
//! [`Running`] config. A file that fails to parse or validate is rejected whole and the
//! running config stays.

use std::path::Path;

use crate::config::plan::{plan, Plan};
use crate::config::{self, Probe};
use crate::running::{emit_config_event, Running};

/// What a reload did.
#[derive(Debug)]
pub enum Outcome {
    /// The file was valid; reloadable keys are applied (the plan says which).
    Applied(Box<Plan>),
    /// The file was rejected; the running config stays.
    Rejected,
}

/// Re-reads `path` and applies what can change at run time (see the module docs). Logs every
/// problem of a rejected file, every key that needs a restart, and the new config event.
pub async fn reload(path: &Path, running: &Running, metrics: &ReloadMetrics) -> Outcome {
    let current = running.current();
    let owned = path.to_path_buf();
    let before = current.clone();
    // Reading the file and probing (groups, help files) is blocking I/O: off the workers.
    let read = tokio::task::spawn_blocking(move || {
        config::load(&owned).map(|loaded| {
            let probe = Probe::gather(&[&before.config, &loaded.config]);
            (loaded, probe)
        })
    })
    .await;
    let read = match read {
        Ok(read) => read,
        Err(e) => {
            tracing::error!(error = %e, "config reload task failed");
            metrics.reloads.with_label_values(&["rejected"]).inc();
            return Outcome::Rejected;
        }
    };
    let (loaded, probe) = match read {
        Ok(read) => read,
        Err(e) => {
            metrics.reloads.with_label_values(&["rejected"]).inc();
            tracing::error!(config = %path.display(), error = %crate::errors::error_chain(&e),
                "config reload rejected; the running config stays");
            return Outcome::Rejected;
        }
    };
    for w in &loaded.warnings {
        tracing::warn!("config: {w}");
        if w.key == "metricsHelp" {
            metrics.metrics_help_errors.inc();
        }
    }
    let plan = match plan(&current.config, &loaded.config, &probe) {
        Ok(plan) => plan,
        Err(problems) => {
            metrics.reloads.with_label_values(&["rejected"]).inc();
            let e = config::LoadError::Invalid {
                path: path.to_path_buf(),
                problems,
            };
            tracing::error!(config = %path.display(), error = %e,
                "config reload rejected; the running config stays");
            return Outcome::Rejected;
        }
    };
    for c in &plan.restart {
        tracing::warn!(key = %c.key, "config key changed but needs a restart; the running value is kept");
    }
    for c in &plan.applied {
        tracing::info!(key = %c.key, takes_effect = c.when, "config key changed");
    }
    metrics.restart_pending.set(plan.restart.len() as i64);
    if plan.applied.is_empty() {
        metrics.reloads.with_label_values(&["unchanged"]).inc();
        tracing::info!(config = %path.display(), restart_needed = plan.restart.len(),
            "config reloaded: nothing to apply");
    } else {
        metrics.reloads.with_label_values(&["applied"]).inc();
        running.publish(plan.effective.clone());
        tracing::info!(config = %path.display(), applied = plan.applied.len(),
            restart_needed = plan.restart.len(), "config reloaded");
        emit_config_event(&plan.effective, "reload");
    }
    Outcome::Applied(Box::new(plan))
}

/// Counts reloads by outcome, registered on tracerd's own registry.
#[derive(Debug, Clone)]
pub struct ReloadMetrics {
    /// `tracerd_config_reloads_total{result}`: `applied`, `unchanged`, `rejected`.
    pub reloads: prometheus::IntCounterVec,
    /// `tracerd_config_restart_pending_keys`: changed keys waiting for a restart.
    pub restart_pending: prometheus::IntGauge,
    /// `tracerd_config_metrics_help_errors_total`: times a `metricsHelp` file could not be
    /// used (at start or reload); tracerd serves metrics without HELP texts meanwhile.
    pub metrics_help_errors: prometheus::IntCounter,
}

impl ReloadMetrics {
    /// Registers the metrics on `registry` (once per registry).
    pub fn register(registry: &prometheus::Registry) -> ReloadMetrics {
        let reloads = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "tracerd_config_reloads_total",
                "Config reloads (SIGHUP), by result: applied, unchanged, rejected.",
            ),
            &["result"],
        )
        .expect("valid constant");
        let restart_pending = prometheus::IntGauge::new(
            "tracerd_config_restart_pending_keys",
            "Changed config keys that wait for a restart (their old values still run).",
        )
        .expect("valid constant");
        let metrics_help_errors = prometheus::IntCounter::new(
            "tracerd_config_metrics_help_errors_total",
            "Times a metricsHelp file could not be read or parsed (metrics served without \
             HELP texts).",
        )
        .expect("valid constant");
        for m in [
            Box::new(reloads.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(restart_pending.clone()),
            Box::new(metrics_help_errors.clone()),
        ] {
            if let Err(e) = registry.register(m) {
                tracing::error!(error = %e, "cannot register reload metrics");
            }
        }
        // Known results start at 0, so dashboards show 0 rather than "No data".
        for result in ["applied", "unchanged", "rejected"] {
            reloads.with_label_values(&[result]);
        }
        ReloadMetrics {
            reloads,
            restart_pending,
            metrics_help_errors,
        }
    }
}
