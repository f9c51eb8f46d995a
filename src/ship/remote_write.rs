//! The remote_write shell: per `tracerd.remoteWrite` entry, a sampler task that renders
//! `/metrics` every `intervalSecs` (the same renderer, so the same names and labels), adds
//! the external labels and queues one sample per series — and a staleness marker for every
//! series that went away (a node disconnected, a metric dropped) — and one sender task per
//! shard that posts Snappy-compressed `WriteRequest`s with the spec's headers, retrying 5xx,
//! 429 and connection errors with capped backoff and dropping (counting) what any other 4xx
//! refuses. Metric samples are not acknowledged to anyone: a queue full during an outage
//! drops its oldest samples, counted.

mod proto;
mod queue;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::http::{basic_auth, Client};
use crate::config::RemoteWriteSettings;
use crate::metrics::exposition::Format;
use crate::metrics::fleet::FleetRenderer;
use crate::metrics::telemetry::Telemetry;
use crate::node::Nodes;
use proto::{Outcome, SeriesLabels};
use queue::{shard_of, Item, Shard};
use tracerd_wire::Backoff;

/// `tracerd_remote_write_*`, labelled by the receiver's `url`.
#[derive(Clone, Debug)]
pub struct RemoteWriteMetrics {
    sent: IntCounterVec,
    retried: IntCounterVec,
    failed: IntCounterVec,
    dropped: IntCounterVec,
    queued: IntGaugeVec,
    lag: GaugeVec,
}

impl RemoteWriteMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &Registry) -> RemoteWriteMetrics {
        let counter = |name: &str, help: &str| {
            let m = IntCounterVec::new(Opts::new(name, help), &["url"]).expect("valid metric");
            registry
                .register(Box::new(m.clone()))
                .expect("registered once");
            m
        };
        let queued = IntGaugeVec::new(
            Opts::new(
                "tracerd_remote_write_queue_samples",
                "Samples waiting to be sent.",
            ),
            &["url"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(queued.clone()))
            .expect("registered once");
        let lag = GaugeVec::new(
            Opts::new(
                "tracerd_remote_write_lag_seconds",
                "Age of the oldest sample not yet accepted by the receiver (0 when none waits).",
            ),
            &["url"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(lag.clone()))
            .expect("registered once");
        RemoteWriteMetrics {
            sent: counter("tracerd_remote_write_samples_sent_total", "Samples the receiver accepted."),
            retried: counter(
                "tracerd_remote_write_samples_retried_total",
                "Samples sent again after a 5xx, a 429 or a connection error.",
            ),
            failed: counter(
                "tracerd_remote_write_samples_failed_total",
                "Samples the receiver refused with a 4xx other than 429 (dropped, not retried).",
            ),
            dropped: counter(
                "tracerd_remote_write_samples_dropped_total",
                "Samples dropped from a full queue (oldest first) while the receiver was unreachable.",
            ),
            queued,
            lag,
        }
    }
}

struct Shared {
    shards: Vec<Mutex<Shard>>,
    wake: Vec<Notify>,
    /// Per shard: timestamp (ms) of the oldest sample taken but not yet sent, or `i64::MAX`.
    in_flight: Vec<std::sync::atomic::AtomicI64>,
}

/// How an entry reaches its receiver: the `Authorization` value and the TLS config, both
/// read from their files at start.
#[derive(Clone, Default)]
pub struct Access {
    /// `Authorization` header value.
    pub auth: Option<String>,
    /// TLS for an `https://` URL.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Starts the sampler and the senders of one entry.
pub fn start(
    settings: RemoteWriteSettings,
    access: Access,
    telemetry: Telemetry,
    nodes: Nodes,
    metrics: RemoteWriteMetrics,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) {
    let shards = settings.queue.shards.clamp(1, 256) as usize;
    let capacity = settings.queue.capacity as usize;
    let shared = Arc::new(Shared {
        shards: (0..shards)
            .map(|_| Mutex::new(Shard::new(capacity)))
            .collect(),
        wake: (0..shards).map(|_| Notify::new()).collect(),
        in_flight: (0..shards)
            .map(|_| std::sync::atomic::AtomicI64::new(i64::MAX))
            .collect(),
    });
    tracing::info!(url = %settings.url, shards, interval_secs = settings.interval_secs,
        "sending metrics with Prometheus remote_write");
    for i in 0..shards {
        tracker.spawn(send_loop(
            i,
            settings.clone(),
            access.clone(),
            shared.clone(),
            metrics.clone(),
            cancel.clone(),
        ));
    }
    tracker.spawn(sample_loop(
        settings, telemetry, nodes, shared, metrics, cancel,
    ));
}

async fn sample_loop(
    settings: RemoteWriteSettings,
    telemetry: Telemetry,
    nodes: Nodes,
    shared: Arc<Shared>,
    metrics: RemoteWriteMetrics,
    cancel: CancellationToken,
) {
    let period = Duration::from_secs_f64(settings.interval_secs.clamp(0.1, 3600.0));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let sampler = Arc::new(Mutex::new(Sampler {
        renderer: FleetRenderer::default(),
        known: HashMap::new(),
        unlogged_drops: 0,
        last_drop_log: None,
    }));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (s, t, n, sh, m, st) = (
            sampler.clone(),
            telemetry.clone(),
            nodes.clone(),
            shared.clone(),
            metrics.clone(),
            settings.clone(),
        );
        let _ = tokio::task::spawn_blocking(move || {
            crate::sync::lock(&s).pass(&t, &n, &sh, &m, &st);
        })
        .await;
    }
}

struct Sampler {
    renderer: FleetRenderer,
    /// Series of the last pass, with the labels their samples share.
    known: HashMap<Vec<(String, String)>, SeriesLabels>,
    /// Samples dropped from full shards since the last warning, and when that was.
    unlogged_drops: u64,
    last_drop_log: Option<std::time::Instant>,
}

impl Sampler {
    /// One pass: render, queue a sample per series and a staleness marker per series gone.
    fn pass(
        &mut self,
        telemetry: &Telemetry,
        nodes: &Nodes,
        shared: &Shared,
        metrics: &RemoteWriteMetrics,
        settings: &RemoteWriteSettings,
    ) {
        let now = crate::history::now_ms();
        let views = nodes.views();
        let text = self
            .renderer
            .render_all(telemetry, &views, Format::OpenMetrics);
        let samples = match crate::history::series::parse_exposition(&text) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot read tracerd's own exposition");
                return;
            }
        };
        let mut seen: HashMap<Vec<(String, String)>, SeriesLabels> =
            HashMap::with_capacity(samples.len());
        let nshards = shared.shards.len();
        let mut items: Vec<Vec<Item>> = (0..nshards).map(|_| Vec::new()).collect();
        for (labels, value) in samples {
            let labels = proto::with_external(labels, &settings.external_labels);
            let shared_labels = self
                .known
                .remove(&labels)
                .unwrap_or_else(|| Arc::new(labels.clone()));
            items[shard_of(&labels, nshards)].push((shared_labels.clone(), value, now));
            seen.insert(labels, shared_labels);
        }
        for (labels, shared_labels) in self.known.drain() {
            items[shard_of(&labels, nshards)].push((shared_labels, proto::stale_nan(), now));
        }
        self.known = seen;
        let url = settings.url.as_str();
        let mut oldest = i64::MAX;
        let mut waiting = 0;
        for (i, batch) in items.into_iter().enumerate() {
            let mut shard = crate::sync::lock(&shared.shards[i]);
            let mut dropped = 0;
            for item in batch {
                dropped += shard.push(item);
            }
            if dropped > 0 {
                metrics.dropped.with_label_values(&[url]).inc_by(dropped);
                self.unlogged_drops += dropped;
            }
            waiting += shard.len();
            oldest = oldest.min(shard.oldest().unwrap_or(i64::MAX));
            drop(shard);
            oldest = oldest.min(shared.in_flight[i].load(std::sync::atomic::Ordering::Relaxed));
            shared.wake[i].notify_one();
        }
        if self.unlogged_drops > 0
            && self
                .last_drop_log
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            self.last_drop_log = Some(std::time::Instant::now());
            tracing::warn!(url = %url, dropped = self.unlogged_drops, queued = waiting,
                "remote_write queue full (the receiver is unreachable for longer than the queue holds): \
                 the oldest samples were dropped, counted in tracerd_remote_write_samples_dropped_total");
            self.unlogged_drops = 0;
        }
        metrics.queued.with_label_values(&[url]).set(waiting as i64);
        let lag = if oldest == i64::MAX {
            0.0
        } else {
            (now - oldest).max(0) as f64 / 1e3
        };
        metrics.lag.with_label_values(&[url]).set(lag);
    }
}

async fn send_loop(
    shard: usize,
    settings: RemoteWriteSettings,
    access: Access,
    shared: Arc<Shared>,
    metrics: RemoteWriteMetrics,
    cancel: CancellationToken,
) {
    let url = settings.url.clone();
    let Access { auth, tls } = access;
    let mut client = match Client::with_tls(&url, tls) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(url = %url, error = %e, "remote_write not started");
            return;
        }
    };
    let max_backoff = Duration::from_secs_f64(settings.queue.max_backoff_secs.clamp(0.01, 3600.0));
    let mut backoff =
        Backoff::new(Duration::from_millis(30).min(max_backoff), max_backoff).jittered();
    let timeout = Duration::from_secs_f64(settings.timeout_secs.clamp(0.1, 3600.0));
    let mut headers: Vec<(String, String)> = vec![
        ("content-encoding".into(), "snappy".into()),
        ("content-type".into(), "application/x-protobuf".into()),
        ("x-prometheus-remote-write-version".into(), "0.1.0".into()),
    ];
    if let Some(a) = auth {
        headers.push(("authorization".into(), a));
    }
    for (k, v) in &settings.headers {
        headers.push((k.clone(), v.clone()));
    }
    let max = settings.queue.max_samples_per_send.max(1) as usize;
    let mut last_log: Option<std::time::Instant> = None;
    loop {
        let batch = {
            let mut q = crate::sync::lock(&shared.shards[shard]);
            q.take(max)
        };
        if batch.is_empty() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = shared.wake[shard].notified() => continue,
            }
        }
        shared.in_flight[shard].store(batch[0].2, std::sync::atomic::Ordering::Relaxed);
        let n = batch.len() as u64;
        let body = bytes::Bytes::from(proto::encode(&batch));
        loop {
            let hdrs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = client.post("", &hdrs, body.clone(), timeout) => r,
            };
            let (outcome, why) = match result {
                Ok(r) => (
                    proto::outcome(r.status),
                    format!("{}: {}", r.status, r.snippet()),
                ),
                Err(e) => (Outcome::Retry, e.to_string()),
            };
            match outcome {
                Outcome::Sent => {
                    metrics.sent.with_label_values(&[&url]).inc_by(n);
                    backoff.reset();
                    break;
                }
                Outcome::Drop => {
                    metrics.failed.with_label_values(&[&url]).inc_by(n);
                    tracing::warn!(url = %url, samples = n, answer = %why,
                        "remote_write receiver refused the samples; dropped (not retried)");
                    break;
                }
                Outcome::Retry => {
                    metrics.retried.with_label_values(&[&url]).inc_by(n);
                    if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        last_log = Some(std::time::Instant::now());
                        tracing::warn!(url = %url, samples = n, error = %why,
                            "remote_write failed; retrying with backoff");
                    }
                    let pause = backoff.next_delay();
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
        shared.in_flight[shard].store(i64::MAX, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The `Authorization` value of an entry (bearer token or basic auth), read from its files.
pub fn auth_header(settings: &RemoteWriteSettings) -> std::io::Result<Option<String>> {
    let first_line = |p: &std::path::Path| -> std::io::Result<String> {
        Ok(std::fs::read_to_string(p)?
            .lines()
            .next()
            .unwrap_or_default()
            .to_string())
    };
    if let Some(f) = &settings.bearer_token_file {
        return Ok(Some(format!("Bearer {}", first_line(f)?)));
    }
    if let Some(b) = &settings.basic_auth {
        return Ok(Some(basic_auth(
            &b.username,
            &first_line(&b.password_file)?,
        )));
    }
    Ok(None)
}
