//! Delivery to Alertmanager's v2 API: a bounded queue (a full queue drops the oldest alert,
//! counted), one sender task posting batches of at most [`MAX_BATCH`] alerts as JSON to
//! `POST <url>/api/v2/alerts` of every Alertmanager, each post retried [`ATTEMPTS`] times,
//! failures counted by Alertmanager and logged at most once per [`LOG_EVERY`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::state::Outgoing;
use super::AlertsMetrics;
use crate::sync::lock;
use crate::utc;

/// Alerts per post (Prometheus's `maxBatchSize`).
pub const MAX_BATCH: usize = 64;
/// Tries of one post before it counts as failed.
pub const ATTEMPTS: u32 = 3;
/// Time allowed for one attempt (connect, write, answer).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Least time between two failure lines for one Alertmanager.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// Most bytes read of an Alertmanager's answer.
const MAX_ANSWER: usize = 64 * 1024;

/// An Alertmanager base URL: `http://host:port[/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as configured (the metric label).
    pub url: String,
    /// `host:port` to connect to.
    pub authority: String,
    /// `/prefix/api/v2/alerts`.
    pub path: String,
}

/// Why a URL or a post failed.
#[derive(Debug, Error)]
pub enum NotifyError {
    #[error("alertmanager URL {0:?}: {1}")]
    BadUrl(String, &'static str),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("answered {0}")]
    Status(String),
}

impl Target {
    /// Parses `http://host[:port][/prefix]` (port 80 when absent; no https).
    pub fn parse(url: &str) -> Result<Target, NotifyError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or(NotifyError::BadUrl(url.into(), "must start with http://"))?;
        let (auth, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if auth.is_empty() || auth.contains('@') || auth.contains(char::is_whitespace) {
            return Err(NotifyError::BadUrl(url.into(), "no host[:port]"));
        }
        if prefix.contains(['?', '#', ' ']) {
            return Err(NotifyError::BadUrl(
                url.into(),
                "no query or fragment allowed",
            ));
        }
        let has_port = match auth.rfind(':') {
            Some(i) => !auth[i..].contains(']'),
            None => false,
        };
        let authority = if has_port {
            auth.to_string()
        } else {
            format!("{auth}:80")
        };
        Ok(Target {
            url: url.to_string(),
            authority,
            path: format!("{prefix}/api/v2/alerts"),
        })
    }
}

fn rfc3339(ms: i64) -> String {
    let mut s = String::new();
    utc::push_rfc3339_nanos(&mut s, ms.saturating_mul(1_000_000));
    s
}

/// The JSON body of one post: Alertmanager's `postableAlerts`.
pub fn body(alerts: &[Outgoing], generator_url: &str) -> Value {
    let map = |l: &[(String, String)]| {
        Value::Object(
            l.iter()
                .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                .collect(),
        )
    };
    Value::Array(
        alerts
            .iter()
            .map(|a| {
                json!({
                    "labels": map(&a.labels),
                    "annotations": map(&a.annotations),
                    "startsAt": rfc3339(a.starts_at),
                    "endsAt": rfc3339(a.ends_at),
                    "generatorURL": generator_url,
                })
            })
            .collect(),
    )
}

/// The queue and the Alertmanagers.
pub struct Notifier {
    queue: Mutex<VecDeque<Outgoing>>,
    capacity: usize,
    wake: Notify,
    targets: Vec<Target>,
    metrics: AlertsMetrics,
}

impl Notifier {
    pub fn new(targets: Vec<Target>, capacity: usize, metrics: AlertsMetrics) -> Arc<Notifier> {
        Arc::new(Notifier {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            wake: Notify::new(),
            targets,
            metrics,
        })
    }

    /// Queues `alerts` for every Alertmanager (nothing when none is configured); past the
    /// capacity the oldest go, counted in `tracerd_alerts_dropped_total`.
    pub fn enqueue(&self, alerts: Vec<Outgoing>) {
        if alerts.is_empty() || self.targets.is_empty() {
            return;
        }
        let mut q = lock(&self.queue);
        for a in alerts {
            if q.len() >= self.capacity {
                q.pop_front();
                self.metrics.dropped.inc();
            }
            q.push_back(a);
        }
        self.metrics.queue_length.set(q.len() as i64);
        drop(q);
        self.wake.notify_one();
    }

    /// Sends queued alerts until `cancel` fires.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut last_log: Vec<Option<Instant>> = vec![None; self.targets.len()];
        let mut suppressed = vec![0u64; self.targets.len()];
        loop {
            let batch: Vec<Outgoing> = {
                let mut q = lock(&self.queue);
                let n = q.len().min(MAX_BATCH);
                let b = q.drain(..n).collect();
                self.metrics.queue_length.set(q.len() as i64);
                b
            };
            if batch.is_empty() {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = self.wake.notified() => continue,
                }
            }
            let payload = body(&batch, "").to_string();
            for (i, t) in self.targets.iter().enumerate() {
                let result = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = post_with_retries(t, &payload) => r,
                };
                match result {
                    Ok(()) => {
                        self.metrics
                            .sent
                            .with_label_values(&[&t.url])
                            .inc_by(batch.len() as u64);
                    }
                    Err(e) => {
                        self.metrics
                            .errors
                            .with_label_values(&[&t.url])
                            .inc_by(batch.len() as u64);
                        if last_log[i].is_none_or(|l| l.elapsed() >= LOG_EVERY) {
                            tracing::warn!(
                                alertmanager = %t.url,
                                error = %e,
                                alerts = batch.len(),
                                failures_not_logged = suppressed[i],
                                "cannot send alerts to Alertmanager"
                            );
                            last_log[i] = Some(Instant::now());
                            suppressed[i] = 0;
                        } else {
                            suppressed[i] += 1;
                        }
                    }
                }
            }
        }
    }
}

async fn post_with_retries(t: &Target, payload: &str) -> Result<(), NotifyError> {
    let mut last = None;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        match tokio::time::timeout(ATTEMPT_TIMEOUT, post(t, payload)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last = Some(e),
            Err(_) => last = Some(NotifyError::Timeout(ATTEMPT_TIMEOUT)),
        }
    }
    Err(last.expect("at least one attempt"))
}

/// One HTTP/1.1 POST, `Connection: close`; a 2xx answer is success.
async fn post(t: &Target, payload: &str) -> Result<(), NotifyError> {
    let mut s = tokio::net::TcpStream::connect(&t.authority).await?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tracerd/{}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        t.path,
        t.authority,
        env!("CARGO_PKG_VERSION"),
        payload.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(payload.as_bytes()).await?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while answer.len() < MAX_ANSWER {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let line = answer
        .split(|&b| b == b'\n')
        .next()
        .map(|l| String::from_utf8_lossy(l).trim().to_string())
        .unwrap_or_default();
    let code = line.split(' ').nth(1).unwrap_or("");
    if code.starts_with('2') {
        Ok(())
    } else {
        let shown: String = line.chars().take(200).collect();
        Err(NotifyError::Status(if shown.is_empty() {
            "nothing".into()
        } else {
            shown
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = Target::parse("http://127.0.0.1:9093").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("127.0.0.1:9093", "/api/v2/alerts")
        );
        let t = Target::parse("http://am.example/prefix/").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("am.example:80", "/prefix/api/v2/alerts")
        );
        let t = Target::parse("http://[::1]:9093").unwrap();
        assert_eq!(t.authority, "[::1]:9093");
        assert!(Target::parse("https://x:1").is_err());
        assert!(Target::parse("http://").is_err());
    }

    #[test]
    fn body_has_alertmanager_fields() {
        let a = Outgoing {
            labels: vec![("alertname".into(), "High".into())],
            annotations: vec![("summary".into(), "s".into())],
            starts_at: 1_000,
            ends_at: 61_500,
        };
        let b = body(&[a], "");
        assert_eq!(b[0]["labels"]["alertname"], "High");
        assert_eq!(b[0]["annotations"]["summary"], "s");
        assert_eq!(b[0]["startsAt"], "1970-01-01T00:00:01.000000000Z");
        assert_eq!(b[0]["endsAt"], "1970-01-01T00:01:01.500000000Z");
    }
}
