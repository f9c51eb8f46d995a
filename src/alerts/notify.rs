//! Delivery to Alertmanager's v2 API and to generic webhooks: a bounded queue (a full queue
//! drops the oldest alert, counted), one sender task posting batches of at most
//! [`MAX_BATCH`] alerts as JSON to `POST <url>/api/v2/alerts` of every Alertmanager (every
//! send: firing alerts are resent, see `state`) and to every webhook's URL (only an alert's
//! first firing send and its resolution, in [`webhook_body`]'s shape), each post retried
//! [`ATTEMPTS`] times, failures counted by target and logged at most once per [`LOG_EVERY`].

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

/// Where alerts go: an Alertmanager (`http://host:port[/prefix]`) or a webhook
/// (`http://host:port/path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as configured (the metric label).
    pub url: String,
    /// `host:port` to connect to.
    pub authority: String,
    /// `/prefix/api/v2/alerts` for an Alertmanager, the URL's path for a webhook.
    pub path: String,
    /// A generic webhook, not an Alertmanager.
    pub webhook: bool,
}

/// Why a URL or a post failed.
#[derive(Debug, Error)]
pub enum NotifyError {
    #[error("URL {0:?}: {1}")]
    BadUrl(String, &'static str),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("answered {0}")]
    Status(String),
}

impl Target {
    /// Parses a webhook URL `http://host[:port][/path]` (path `/` when absent): posts go to
    /// the path as given.
    pub fn parse_webhook(url: &str) -> Result<Target, NotifyError> {
        let mut t = Target::parse(url)?;
        let rest = &url["http://".len()..];
        t.path = match rest.find('/') {
            Some(i) => rest[i..].to_string(),
            None => "/".to_string(),
        };
        t.webhook = true;
        Ok(t)
    }

    /// Parses an Alertmanager URL `http://host[:port][/prefix]` (port 80 when absent; no
    /// https).
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
            webhook: false,
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

/// An alert's fingerprint as a webhook shows it: FNV-1a over its sorted labels, 16 hex
/// digits (stable across restarts; not Alertmanager's hash).
pub fn fingerprint(labels: &[(String, String)]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in labels {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xfe]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// The JSON body of one webhook post, in the shape of Alertmanager's `webhook_config`
/// payload (version 4), so receivers written for Alertmanager read it: `status` is
/// `firing` when any alert in it fires; each alert has `status`, `labels`, `annotations`,
/// `startsAt`, `endsAt` (`0001-01-01T00:00:00Z` while firing, as Alertmanager sends it),
/// `generatorURL` (empty) and `fingerprint`; `commonLabels`/`commonAnnotations` are the pairs
/// every alert shares; `groupLabels` is empty and `groupKey` `{}` (tracerd does not group).
pub fn webhook_body(alerts: &[Outgoing]) -> Value {
    let map = |l: &[(String, String)]| {
        Value::Object(
            l.iter()
                .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                .collect(),
        )
    };
    let common = |pick: &dyn Fn(&Outgoing) -> &[(String, String)]| -> Vec<(String, String)> {
        let mut it = alerts.iter();
        let Some(first) = it.next() else {
            return Vec::new();
        };
        let mut c: Vec<(String, String)> = pick(first).to_vec();
        for a in it {
            c.retain(|p| pick(a).contains(p));
        }
        c
    };
    let firing = alerts.iter().any(|a| !a.resolved);
    json!({
        "version": "4",
        "groupKey": "{}",
        "truncatedAlerts": 0,
        "status": if firing { "firing" } else { "resolved" },
        "receiver": "tracerd",
        "groupLabels": {},
        "commonLabels": map(&common(&|a| &a.labels)),
        "commonAnnotations": map(&common(&|a| &a.annotations)),
        "externalURL": "",
        "alerts": alerts.iter().map(|a| json!({
            "status": if a.resolved { "resolved" } else { "firing" },
            "labels": map(&a.labels),
            "annotations": map(&a.annotations),
            "startsAt": rfc3339(a.starts_at),
            "endsAt": if a.resolved { rfc3339(a.ends_at) } else { "0001-01-01T00:00:00Z".to_string() },
            "generatorURL": "",
            "fingerprint": fingerprint(&a.labels),
        })).collect::<Vec<_>>(),
    })
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
            // A webhook hears of a firing alert once, and of its resolution.
            let changes: Vec<Outgoing> = batch
                .iter()
                .filter(|a| a.first || a.resolved)
                .cloned()
                .collect();
            let hook_payload = webhook_body(&changes).to_string();
            for (i, t) in self.targets.iter().enumerate() {
                let (payload, n) = if t.webhook {
                    if changes.is_empty() {
                        continue;
                    }
                    (&hook_payload, changes.len())
                } else {
                    (&payload, batch.len())
                };
                let result = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = post_with_retries(t, payload) => r,
                };
                let (sent, errors) = if t.webhook {
                    (&self.metrics.webhook_sent, &self.metrics.webhook_errors)
                } else {
                    (&self.metrics.sent, &self.metrics.errors)
                };
                match result {
                    Ok(()) => sent.with_label_values(&[&t.url]).inc_by(n as u64),
                    Err(e) => {
                        errors.with_label_values(&[&t.url]).inc_by(n as u64);
                        if last_log[i].is_none_or(|l| l.elapsed() >= LOG_EVERY) {
                            if t.webhook {
                                tracing::warn!(
                                    webhook = %t.url,
                                    error = %e,
                                    alerts = n,
                                    failures_not_logged = suppressed[i],
                                    "cannot send alerts to a webhook"
                                );
                            } else {
                                tracing::warn!(
                                    alertmanager = %t.url,
                                    error = %e,
                                    alerts = n,
                                    failures_not_logged = suppressed[i],
                                    "cannot send alerts to Alertmanager"
                                );
                            }
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
            resolved: false,
            first: true,
        };
        let b = body(std::slice::from_ref(&a), "");
        assert_eq!(b[0]["labels"]["alertname"], "High");
        assert_eq!(b[0]["annotations"]["summary"], "s");
        assert_eq!(b[0]["startsAt"], "1970-01-01T00:00:01.000000000Z");
        assert_eq!(b[0]["endsAt"], "1970-01-01T00:01:01.500000000Z");
        let mut r = a.clone();
        r.resolved = true;
        r.labels.push(("node_name".into(), "b".into()));
        let w = webhook_body(&[a, r]);
        assert_eq!(
            (&w["version"], &w["status"]),
            (&json!("4"), &json!("firing"))
        );
        assert_eq!(w["commonLabels"], json!({"alertname": "High"}));
        assert_eq!(w["alerts"][0]["status"], "firing");
        assert_eq!(w["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(w["alerts"][1]["status"], "resolved");
        assert_eq!(w["alerts"][1]["endsAt"], "1970-01-01T00:01:01.500000000Z");
        assert_ne!(w["alerts"][0]["fingerprint"], w["alerts"][1]["fingerprint"]);
    }

    #[test]
    fn webhook_urls_keep_their_path() {
        let t = Target::parse_webhook("http://127.0.0.1:8080/hooks/tracerd").unwrap();
        assert_eq!((t.path.as_str(), t.webhook), ("/hooks/tracerd", true));
        assert_eq!(Target::parse_webhook("http://h:1").unwrap().path, "/");
        assert!(Target::parse_webhook("https://h/x").is_err());
    }
}
