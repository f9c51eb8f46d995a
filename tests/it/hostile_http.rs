//! Hostile HTTP clients, while well-behaved nodes stream: a slowloris cannot take the HTTP
//! endpoint offline, and the nodes lose nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::hostile_logs::{machine_seqs, stream};
use crate::support::*;

/// Trickling connections at once (more than the endpoint's 256 slots).
const TRICKLERS: usize = 300;
const PROBES: usize = 40;

/// One slowloris connection after another: send a request line, then one header byte every
/// 100 ms, never finishing the headers; reopen 20 ms after tracerd closes it. Returns how
/// many of its connections tracerd closed.
async fn trickle(port: u16, stop: Arc<AtomicBool>, open: Arc<AtomicU64>) -> u64 {
    let mut closed = 0;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        open.fetch_add(1, Ordering::Relaxed);
        let mut ok = s
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .is_ok();
        let mut buf = [0u8; 256];
        while ok && !stop.load(Ordering::Relaxed) {
            tokio::select! {
                r = s.read(&mut buf) => ok = matches!(r, Ok(n) if n > 0),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    ok = s.write_all(b"a").await.is_ok();
                }
            }
        }
        open.fetch_sub(1, Ordering::Relaxed);
        if !ok {
            closed += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    closed
}

/// One `/healthz` probe: a whole request, answered `200` within 2 s.
async fn probe(port: u16) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut out = Vec::new();
        let t = Instant::now();
        let r = s.read_to_end(&mut out).await;
        if !out.starts_with(b"HTTP/1.1 200") {
            eprintln!(
                "probe failed after {:?}: {r:?} {:?}",
                t.elapsed(),
                String::from_utf8_lossy(&out)
            );
        }
        Some(out.starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(true))
    )
}

/// Issue 12, point 5: 300 connections trickling their headers, reopened when closed, while
/// two nodes stream. `/healthz` answers at least 95% of the probes (the trickling
/// connections only ever hold idle slots, and a new connection takes the longest-idle one),
/// the tricklers did hold the slots (tracerd had to close them to serve the probes), and the
/// nodes lose nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_does_not_take_http_offline() {
    let http = free_port();
    let d = Daemon::start(&format!(
        "hasPrometheus: {{epHost: 127.0.0.1, epPort: {http}}}\n"
    ));
    d.wait_log("listening", 1);
    const TOTAL: u64 = 2400; // about 4 s of streaming per node
    let good: Vec<_> = ["good-a", "good-b"]
        .iter()
        .map(|n| tokio::spawn(stream(n.to_string(), d.tcp_port, TOTAL, false)))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let open = Arc::new(AtomicU64::new(0));
    let tricklers: Vec<_> = (0..TRICKLERS)
        .map(|_| tokio::spawn(trickle(http, stop.clone(), open.clone())))
        .collect();
    // Let the tricklers fill every slot.
    let filled = Instant::now();
    while open.load(Ordering::Relaxed) < TRICKLERS as u64
        && filled.elapsed() < Duration::from_secs(3)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut answered = 0;
    for _ in 0..PROBES {
        if probe(http).await {
            answered += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut closed_by_tracerd = 0;
    for t in tricklers {
        closed_by_tracerd += t.await.unwrap();
    }
    eprintln!(
        "/healthz answered {answered} of {PROBES} probes; tracerd closed {closed_by_tracerd} trickling connections"
    );
    assert!(
        answered * 100 >= PROBES * 95,
        "/healthz answered {answered} of {PROBES} probes under slowloris"
    );
    assert!(
        closed_by_tracerd >= PROBES as u64,
        "the slowloris never filled the slots ({closed_by_tracerd} closed)"
    );
    for (name, t) in ["good-a", "good-b"].iter().zip(good) {
        let acked = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("good node's acks stalled")
            .unwrap();
        assert_eq!(acked, TOTAL, "{name}: acknowledged {acked} of {TOTAL}");
        let seqs = machine_seqs(&d.logs().join(name));
        assert_eq!(seqs, (1..=TOTAL).collect::<Vec<_>>(), "{name}: lines lost");
    }
    let refusals = d.stderr().matches("HTTP connection refused").count();
    assert!(refusals <= 5, "{refusals} refusal lines within one window");
}
