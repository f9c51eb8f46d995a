//! remote_write has no write-ahead log (issue 18, point 4): an outage longer than the queue
//! holds drops samples, and that must be visible. Here the receiver is down (nothing listens
//! on its port) while tracerd samples every 0.1 s into a one-shard queue of 1000 samples: the
//! queue gauge never exceeds its capacity (memory stays bounded), the drops are counted in
//! `tracerd_remote_write_samples_dropped_total` and logged; once the receiver listens, samples
//! flow again, the dropped ones are the oldest (after the one batch that was in flight when
//! the outage began, retried until it went, every request is younger than the outage's start)
//! and the counter stops growing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http::http_get;
use crate::ship_remote_write_tls::prompb;
use crate::support::*;

fn value(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Oldest sample timestamp (ms) of every request received.
type Seen = Arc<Mutex<Vec<i64>>>;

async fn write(
    axum::extract::State(seen): axum::extract::State<Seen>,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
    let wr: prompb::WriteRequest = prost::Message::decode(raw.as_slice()).unwrap();
    if let Some(t) = wr
        .timeseries
        .iter()
        .flat_map(|s| s.samples.iter().map(|x| x.timestamp))
        .min()
    {
        seen.lock().unwrap().push(t);
    }
    axum::http::StatusCode::NO_CONTENT
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_queue_drops_the_oldest_samples_counted() {
    let rw_port = free_port();
    let http = free_port();
    let url = format!("http://127.0.0.1:{rw_port}/api/v1/write");
    let outage_start = now_ms();
    let d = Daemon::start(&format!(
        "  remoteWrite:\n    - url: {url}\n      intervalSecs: 0.1\n      \
         queue: {{capacity: 1000, shards: 1, maxSamplesPerSend: 500, maxBackoffSecs: 0.1}}\n\
         hasPrometheus: {{epHost: 127.0.0.1, epPort: {http}}}\n"
    ));
    let dropped_line = format!("tracerd_remote_write_samples_dropped_total{{url=\"{url}\"}} ");
    let queued_line = format!("tracerd_remote_write_queue_samples{{url=\"{url}\"}} ");
    let sent_line = format!("tracerd_remote_write_samples_sent_total{{url=\"{url}\"}} ");
    // Down: drops counted, the queue at most its capacity.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, text) = http_get(http, "/metrics", &[]);
        let queued = value(&text, &queued_line);
        assert!(queued <= 1000.0, "queue above its capacity: {queued}");
        if value(&text, &dropped_line) > 1500.0 {
            assert_eq!(value(&text, &sent_line), 0.0);
            break;
        }
        assert!(Instant::now() < deadline, "no drop counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.wait_log("remote_write queue full", 1);
    // Back: samples flow, the oldest were the ones dropped.
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route("/api/v1/write", axum::routing::post(write))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", rw_port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let deadline = Instant::now() + Duration::from_secs(20);
    let dropped_after = loop {
        let (_, _, text) = http_get(http, "/metrics", &[]);
        if value(&text, &sent_line) > 0.0 && value(&text, &queued_line) < 1000.0 {
            break value(&text, &dropped_line);
        }
        assert!(
            Instant::now() < deadline,
            "nothing sent after the outage:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "one request only");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = seen.lock().unwrap()[1];
    assert!(
        second > outage_start + 500,
        "the queue sent a sample ({second}) from the outage's start ({outage_start}): the newest were dropped"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (_, _, text) = http_get(http, "/metrics", &[]);
    assert_eq!(
        value(&text, &dropped_line),
        dropped_after,
        "samples still dropped with the receiver up"
    );
}
