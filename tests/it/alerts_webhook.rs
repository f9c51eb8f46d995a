//! Generic webhook delivery (issue 15, point 2): a small HTTP receiver in the test gets one
//! post when an alert starts firing and one when it resolves, in the documented body
//! (Alertmanager's webhook payload shape); a refused first attempt is retried; a webhook
//! nothing listens on is counted in `tracerd_alerts_webhook_errors_total` and logged.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracerd::model::{Severity, TraceBatch};
use tracerd::native::NodeMessage;

use crate::alerts_traces::trace;
use crate::http::http_get;
use crate::support::*;

/// What the receiver got: (path, status answered, body).
type Got = Arc<Mutex<Vec<(String, u16, String)>>>;

/// An HTTP/1.1 receiver on `listener`: answers 503 to its first request, 200 to the rest.
async fn receiver(listener: tokio::net::TcpListener, got: Got) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let got = got.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head_end, len) = loop {
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                    break (i + 4, len);
                }
            };
            while buf.len() < head_end + len {
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let path = head.split(' ').nth(1).unwrap_or("").to_string();
            let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
            let status = {
                let mut g = got.lock().unwrap();
                let status = if g.is_empty() { 503 } else { 200 };
                g.push((path, status, body));
                status
            };
            let answer =
                format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = s.write_all(answer.as_bytes()).await;
        });
    }
}

const RULES: &str = r#"trace_groups:
  - name: node-traces
    interval: 500ms
    rules:
      - alert: NodeErrors
        trace: { severity: Error, window: 2s }
        labels: { severity: page }
        annotations:
          summary: '{{ $labels.node_name }} logged {{ $value }} errors'
"#;

fn metric_line(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_hears_of_firing_and_resolved_alerts() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_port = listener.local_addr().unwrap().port();
    let got: Got = Arc::default();
    let server = tokio::spawn(receiver(listener, got.clone()));
    let dead_port = free_port();
    let prom_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("traces.yml");
    std::fs::write(&rules, RULES).unwrap();
    let hook = format!("http://127.0.0.1:{hook_port}/hooks/tracerd");
    let dead = format!("http://127.0.0.1:{dead_port}/hook");
    let d = Daemon::start(&format!(
        "  alerts:\n    traceRuleFiles: [\"{}\"]\n    webhooks: [\"{hook}\", \"{dead}\"]\n\
         hasPrometheus: {{epHost: 127.0.0.1, epPort: {prom_port}}}\n",
        rules.display()
    ));
    let mut a = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay-a").await;
    let mut b = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay-b").await;
    let batch = |seq: u64, sev: Severity| {
        NodeMessage::Traces(TraceBatch {
            first_seq: seq,
            objects: vec![trace(seq, sev, "Net.Peers", "{}")],
        })
    };
    b.framed.send(batch(1, Severity::Error)).await.unwrap();
    let started = Instant::now();
    // Both nodes stream Info traces until the firing and the resolved posts arrived.
    let (mut sa, mut sb) = (1u64, 2u64);
    let bodies = loop {
        let ok: Vec<Value> = got
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, status, _)| *status == 200)
            .map(|(_, _, body)| serde_json::from_str(body).unwrap())
            .collect();
        if ok.iter().any(|v| v["status"] == "resolved") {
            break ok;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no resolved post: {:?}",
            got.lock().unwrap()
        );
        a.framed.send(batch(sa, Severity::Info)).await.unwrap();
        b.framed.send(batch(sb, Severity::Info)).await.unwrap();
        sa += 1;
        sb += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let all = got.lock().unwrap().clone();
    assert_eq!(all[0].1, 503, "the first attempt was refused");
    assert!(all.iter().all(|(p, _, _)| p == "/hooks/tracerd"), "{all:?}");
    // The refused firing post was retried, then the alert was not resent while it fired:
    // one firing post delivered, then one resolved.
    assert_eq!(all[1].2, all[0].2, "the retry carries the same body");
    assert_eq!(bodies.len(), 2, "{bodies:#?}");
    let firing = &bodies[0];
    assert_eq!(firing["version"], "4");
    assert_eq!(firing["status"], "firing");
    assert_eq!(firing["receiver"], "tracerd");
    let alert = &firing["alerts"][0];
    assert_eq!(firing["alerts"].as_array().unwrap().len(), 1, "{firing}");
    assert_eq!(alert["status"], "firing");
    assert_eq!(alert["labels"]["alertname"], "NodeErrors");
    assert_eq!(alert["labels"]["node_name"], "relay-b");
    assert_eq!(alert["labels"]["severity"], "page");
    assert_eq!(alert["annotations"]["summary"], "relay-b logged 1 errors");
    assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(firing["commonLabels"]["node_name"], "relay-b");
    let resolved = &bodies[1];
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["alerts"][0]["status"], "resolved");
    assert_eq!(resolved["alerts"][0]["fingerprint"], alert["fingerprint"]);
    assert_eq!(resolved["alerts"][0]["startsAt"], alert["startsAt"]);
    assert_ne!(resolved["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");

    // Delivery counted per webhook: two to the live one, failures for the dead one.
    let deadline = Instant::now() + Duration::from_secs(15);
    let text = loop {
        let text = tokio::task::spawn_blocking(move || http_get(prom_port, "/metrics", &[]).2)
            .await
            .unwrap();
        let errors = metric_line(
            &text,
            &format!("tracerd_alerts_webhook_errors_total{{url=\"{dead}\"}}"),
        );
        if errors.unwrap_or(0.0) >= 2.0 {
            break text;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        metric_line(
            &text,
            &format!("tracerd_alerts_webhook_sent_total{{url=\"{hook}\"}}")
        ),
        Some(2.0),
        "{text}"
    );
    assert!(
        d.stderr().contains("cannot send alerts to a webhook"),
        "{}",
        d.stderr()
    );
    // The streaming nodes lost nothing.
    a.wait_ack(sa - 1).await;
    b.wait_ack(sb - 1).await;
    server.abort();
}
