//! The app's periodic tasks, each on the app's tracker until the token is cancelled: the
//! systemd `STATUS=` report and watchdog pings, and the retention pass of the janitor.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::systemd::Notifier;
use crate::logs::janitor;
use crate::metrics::telemetry::Telemetry;
use crate::running::Running;
use crate::session::Context;
use crate::utc;

/// `STATUS=` text: nodes connected and the write rate since the previous report.
pub fn status_line(shared: &Context, rate: Option<f64>) -> String {
    let nodes = shared.nodes.connected().len();
    match rate {
        Some(r) => format!("{nodes} node(s) connected; writing {r:.0} trace objects/s"),
        None => format!("{nodes} node(s) connected"),
    }
}

fn objects_written(shared: &Context) -> f64 {
    shared.telemetry.nodes.written_total() as f64
}

/// Sends `STATUS=` every few seconds.
pub async fn report_status(notifier: Notifier, shared: Arc<Context>, cancel: CancellationToken) {
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
pub async fn ping_watchdog(notifier: Notifier, every: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => notifier.notify("WATCHDOG=1"),
        }
    }
}

/// Runs retention every `rpFrequencySecs` of the live config (a reload changes the period
/// and the policy from the next pass on).
pub async fn prune_periodically(live: Running, telemetry: Telemetry, cancel: CancellationToken) {
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
