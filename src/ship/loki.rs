//! The Loki sink's shell: one task that follows every node's machine files (the same
//! follower and fsynced cursors as the ClickHouse sink) and pushes their lines to
//! `POST <url>/loki/api/v1/push`, one push in flight, as Snappy-compressed protobuf
//! (`loki/proto.rs`), with `X-Scope-OrgID` for the tenant.
//!
//! A cursor moves once Loki answered 2xx, or 400 (Loki refused some entries — too far
//! behind, too long — and stored the others; the refused lines are counted in
//! `tracerd_sink_rows_refused_total` and logged, not retried). Any other answer or a
//! connection error is retried with capped, jittered backoff, the same push again. So delivery
//! is at least once: a crash between Loki's answer and the cursor's fsync sends that push
//! again, with the same stream, timestamps and lines, which Loki stores once (it drops an
//! entry identical to one it holds).

mod proto;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::follow::{Follower, Limits};
use super::http::Client;
use super::metrics::SinkMetrics;
use crate::config::LokiSettings;
use proto::{Outcome, Streams};
use tracerd_wire::Backoff;

/// The sink's name in metrics, logs and the state directory.
pub const SINK: &str = "loki";

/// Loki's push path, after the configured base URL.
pub const PUSH_PATH: &str = "/loki/api/v1/push";

/// Everything the task needs.
pub struct Sink {
    /// The settings.
    pub settings: LokiSettings,
    /// The HTTP client (TLS already set up).
    pub client: Client,
    /// The follower of the machine log root.
    pub follower: Follower,
    /// Metrics.
    pub metrics: SinkMetrics,
}

type Shared = std::sync::Arc<std::sync::Mutex<Follower>>;

/// Runs `op` on the follower on the blocking pool (it does file I/O).
async fn blocking<T: Send + 'static>(
    f: &Shared,
    op: impl FnOnce(&mut Follower) -> T + Send + 'static,
) -> T {
    let f = f.clone();
    tokio::task::spawn_blocking(move || op(&mut crate::sync::lock(&f)))
        .await
        .expect("the follower does not panic")
}

impl Sink {
    /// Runs until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        let Sink {
            settings,
            mut client,
            follower,
            metrics,
        } = self;
        let follower: Shared = std::sync::Arc::new(std::sync::Mutex::new(follower));
        let mut headers: Vec<(String, String)> =
            vec![("content-type".into(), "application/x-protobuf".into())];
        if let Some(t) = &settings.tenant {
            headers.push(("x-scope-orgid".into(), t.clone()));
        }
        for (k, v) in &settings.headers {
            headers.push((k.to_ascii_lowercase(), v.clone()));
        }
        let limits = Limits {
            max_lines: settings.batch.max_rows.max(1) as usize,
            max_bytes: settings.batch.max_bytes.max(1) as usize,
        };
        let poll = Duration::from_millis(settings.batch.poll_ms);
        let timeout = settings.batch.timeout();
        let static_labels: BTreeMap<String, String> = settings.labels.clone();
        let mut streams = Streams::default();
        let mut backoff =
            Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).jittered();
        let mut last_log: Option<Instant> = None;
        tracing::info!(sink = SINK, url = %settings.url, tenant = ?settings.tenant,
            "pushing trace lines to Loki");
        loop {
            let batch = tokio::select! {
                _ = cancel.cancelled() => return,
                b = blocking(&follower, move |f| {
                    f.scan(Instant::now());
                    let b = f.read(limits);
                    f.publish_lag(Instant::now());
                    b
                }) => b,
            };
            if batch.chunks.is_empty() {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(poll) => {}
                }
                continue;
            }
            let push = streams.build(&batch, &static_labels);
            if push.retimed > 0 {
                metrics
                    .rows_retimed
                    .with_label_values(&[SINK])
                    .inc_by(push.retimed);
            }
            let body = Bytes::from(proto::encode(&push.request));
            drop(push);
            let lines = batch.lines() as u64;
            let refused = loop {
                let hdrs: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let result = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = client.post(PUSH_PATH, &hdrs, body.clone(), timeout) => r,
                };
                let (outcome, why, reason) = match result {
                    Ok(r) => (
                        proto::outcome(r.status),
                        format!("{}: {}", r.status, r.snippet()),
                        "status",
                    ),
                    Err(e) => (Outcome::Retry, e.to_string(), e.label()),
                };
                match outcome {
                    Outcome::Sent => break false,
                    Outcome::Refused => {
                        tracing::warn!(sink = SINK, url = %settings.url, lines, answer = %why,
                            "Loki refused entries of a push (400); they are dropped, not retried (Loki stored the others)");
                        break true;
                    }
                    Outcome::Retry => {
                        metrics
                            .requests_failed
                            .with_label_values(&[SINK, reason])
                            .inc();
                        if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                            last_log = Some(Instant::now());
                            tracing::warn!(sink = SINK, url = %settings.url, error = %why,
                                "Loki push failed; retrying (nothing is lost: the lines stay in the files)");
                        }
                        let pause = backoff.next_delay();
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(pause) => {}
                        }
                    }
                }
            };
            backoff.reset();
            let m = metrics.clone();
            blocking(&follower, move |f| {
                let stored = if refused { f.skip(&batch) } else { f.confirm(&batch) };
                if let Err(e) = stored {
                    tracing::warn!(sink = SINK, error = %e,
                        "cannot store the cursors (the next start sends these lines again; Loki stores identical entries once)");
                }
                if refused {
                    m.rows_refused.with_label_values(&[SINK]).inc_by(lines);
                }
                f.publish_lag(Instant::now());
            })
            .await;
        }
    }
}
