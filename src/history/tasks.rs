//! The history's timers, one task on the app's tracker until the token is cancelled: every
//! `sampleIntervalSecs` a sampling pass (tracerd's own series, node series the node did not
//! resend, the byte cap), every `pruneEveryMinutes` a retention pass. Both run on the
//! blocking pool: sampling reads `/proc`, pruning walks every series.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracerd_promql::Labels;

use crate::history::control::{Control, MIN_PRUNE_GAP};
use crate::history::{now_ms, series, History};
use crate::metrics::exposition::Format;
use crate::metrics::fleet::{NODE_LAST_MESSAGE, NODE_METRICS, NODE_QUEUE};
use crate::metrics::telemetry::Telemetry;
use crate::node::Nodes;

/// Runs the sampling and pruning passes until `cancel` fires.
pub async fn run(
    history: Arc<History>,
    telemetry: Telemetry,
    nodes: Nodes,
    cancel: CancellationToken,
) {
    let s = history.settings();
    let every = Duration::from_secs_f64(s.sample_interval_secs.max(0.1));
    let mut sample = tokio::time::interval(every);
    sample.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The pruning period is read from the history's control, which the `/timeseries/config`
    // routes may change (a change prunes at once, as upstream's pruner does, then waits).
    let control = history.control().clone();
    let period = |c: &Control| {
        c.pruning_ms()
            .map(|ms| Duration::from_millis(ms).max(MIN_PRUNE_GAP))
    };
    let mut next_prune = period(&control).map(|p| tokio::time::Instant::now() + p);
    // Changes come over HTTP: however often they come, prunes stay MIN_PRUNE_GAP apart.
    let mut last_prune: Option<tokio::time::Instant> = None;
    let interval_ms = every.as_millis() as i64;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = sample.tick() => {
                let (h, t, n) = (history.clone(), telemetry.clone(), nodes.clone());
                let pass = tokio::task::spawn_blocking(move || sample_once(&h, &t, &n, interval_ms));
                if let Err(e) = pass.await {
                    tracing::error!(error = %e, "metric history sampling failed");
                }
            }
            _ = control.changed() => {
                let now = tokio::time::Instant::now();
                next_prune = period(&control)
                    .map(|_| last_prune.map_or(now, |l| (l + MIN_PRUNE_GAP).max(now)));
            }
            _ = async { tokio::time::sleep_until(next_prune.unwrap_or_else(tokio::time::Instant::now)).await }, if next_prune.is_some() => {
                let h = history.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || h.prune(now_ms())).await {
                    tracing::error!(error = %e, "metric history pruning failed");
                }
                let now = tokio::time::Instant::now();
                last_prune = Some(now);
                next_prune = period(&control).map(|p| now + p);
            }
        }
    }
}

/// One sampling pass at the current time.
pub fn sample_once(history: &History, telemetry: &Telemetry, nodes: &Nodes, interval_ms: i64) {
    let now = now_ms();
    history.enforce_cap(now);
    history.update_metrics();
    let mut text = String::new();
    telemetry.render_into(Format::OpenMetrics, &mut text);
    match series::parse_exposition(&text) {
        Ok(samples) => {
            for (labels, v) in samples {
                history.append(&labels, now, v);
            }
        }
        // tracerd wrote this text itself: a failure is a bug, logged, never fatal.
        Err(e) => tracing::error!(error = %e, "cannot read tracerd's own exposition"),
    }
    for v in nodes.views() {
        let live = &v.live;
        let put = |name: &str, value: Option<f64>| {
            if let Some(value) = value {
                let labels: Labels = vec![
                    ("__name__".to_string(), name.to_string()),
                    (series::NODE_LABEL.to_string(), v.name.clone()),
                ];
                history.append(&labels, now, value);
            }
        };
        put(
            NODE_LAST_MESSAGE,
            live.last_message_ms().map(|ms| ms as f64 / 1e3),
        );
        put(NODE_METRICS, Some(live.metrics().len() as f64));
        put(NODE_QUEUE, live.queue_depth().map(|d| d as f64));
    }
    history.repeat_unchanged(now, interval_ms);
}
