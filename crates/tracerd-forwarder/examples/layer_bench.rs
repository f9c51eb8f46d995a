//! The cost of one `tracing` event through [`tracerd_forwarder::ForwarderLayer`], on the
//! emitting thread: `cargo run --release -p tracerd-forwarder --example layer_bench [N]`.
//!
//! An in-process acceptor (tracerd's native codec on a Unix socket in a temporary directory)
//! acknowledges every batch, so the forwarder runs as it does against tracerd. The program
//! emits `N` (default 1,000,000) events in rounds of 20,000, timing only the emitting loop and
//! waiting for the acknowledgements between rounds (so the queue never fills and nothing is
//! dropped), and prints ns/event (wall time, and time on a CPU, which a busy machine
//! inflates less) for: the layer forwarding each event (an event with a
//! message and three fields, in a span); the same events dropped by a pushed configuration
//! (their namespace at Warning and above); and, for scale, a registry without the layer.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::UnixListener;
use tokio_util::codec::Framed;
use tracerd_forwarder::model::Severity;
use tracerd_forwarder::tracing_config::{NamespaceOptions, SeverityFilter, TracingConfig};
use tracerd_forwarder::{Address, Forwarder, ForwarderConfig};
use tracerd_wire::native::{NodeMessage, TracerCodec, TracerMessage};
use tracing_subscriber::layer::SubscriberExt;

const ROUND: u64 = 20_000;

/// Accepts one forwarder and acknowledges everything it sends.
async fn acceptor(listener: UnixListener) {
    let (stream, _) = listener.accept().await.expect("accept");
    let mut framed = Framed::new(stream, TracerCodec::new(16 << 20));
    while let Some(Ok(msg)) = framed.next().await {
        let reply = match msg {
            NodeMessage::Hello(h) => TracerMessage::Accept {
                version: 1,
                node_name: h.node_name,
                persisted_seq: 0,
                max_frame_bytes: 1 << 20,
            },
            NodeMessage::Traces(b) if !b.objects.is_empty() => {
                TracerMessage::Ack(b.first_seq + b.objects.len() as u64 - 1)
            }
            NodeMessage::Ping(n) => TracerMessage::Pong(n),
            _ => continue,
        };
        if framed.send(reply).await.is_err() {
            return;
        }
    }
}

fn emit(n: u64) {
    let span = tracing::info_span!(target: "bench::orders", "checkout", order = 7u64);
    let _entered = span.enter();
    for i in 0..n {
        tracing::info!(target: "bench::orders", i, item = "book", total = 42.5, "order placed");
    }
}

/// Nanoseconds this thread has run on a CPU (Linux's `/proc/thread-self/schedstat`), so the
/// figure does not count the time other processes of a busy machine held the CPU.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// (wall, on-CPU) ns per event over `total` events, emitted in rounds, waiting for every
/// acknowledgement between rounds when `fwd` is given.
async fn measure(dispatch: &tracing::Dispatch, total: u64, fwd: Option<&Forwarder>) -> (f64, f64) {
    let mut spent = Duration::ZERO;
    let mut cpu = 0u64;
    let mut done = 0;
    while done < total {
        let n = ROUND.min(total - done);
        // One round runs on one thread (no await inside), so its CPU time is this thread's.
        let (t, c) = (Instant::now(), thread_cpu_ns());
        tracing::dispatcher::with_default(dispatch, || emit(n));
        cpu += thread_cpu_ns().saturating_sub(c);
        spent += t.elapsed();
        done += n;
        if let Some(fwd) = fwd {
            assert!(
                fwd.flush(Duration::from_secs(30)).await,
                "{:?}",
                fwd.stats()
            );
        }
    }
    (
        spent.as_nanos() as f64 / total as f64,
        cpu as f64 / total as f64,
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let total: u64 = std::env::args()
        .nth(1)
        .map_or(Ok(1_000_000), |a| a.parse())?;
    let dir = std::env::temp_dir().join(format!("layer-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sock = dir.join("t.sock");
    let listener = UnixListener::bind(&sock)?;
    tokio::spawn(acceptor(listener));

    let mut config = ForwarderConfig::new(Address::Unix(sock), "bench");
    config.queue_capacity = 2 * ROUND as usize;
    let fwd = Forwarder::start(config)?;
    let layered = tracing::Dispatch::new(tracing_subscriber::registry().with(fwd.layer()));
    let bare = tracing::Dispatch::new(tracing_subscriber::registry());

    // Warm up (connection, allocator, caches).
    measure(&layered, ROUND, Some(&fwd)).await;
    let before = fwd.stats();
    let forwarded = measure(&layered, total, Some(&fwd)).await;
    let after = fwd.stats();
    assert_eq!(after.acked - before.acked, total, "{after:?}");
    assert_eq!(after.dropped, 0, "{after:?}");

    let mut narrowed = TracingConfig::everything();
    narrowed.options.insert(
        "bench.orders".into(),
        NamespaceOptions {
            severity: Some(SeverityFilter::AtLeast(Severity::Warning)),
            ..Default::default()
        },
    );
    fwd.set_tracing_config(narrowed)?;
    let filtered_before = fwd.stats().filtered;
    let dropped = measure(&layered, total, None).await;
    assert_eq!(fwd.stats().filtered - filtered_before, total);
    let baseline = measure(&bare, total, None).await;

    println!(
        "{{\"events\":{total},\"forwarded_ns_per_event\":{:.0},\"filtered_ns_per_event\":{:.0},\"registry_only_ns_per_event\":{:.0},\"on_cpu\":{{\"forwarded\":{:.0},\"filtered\":{:.0},\"registry_only\":{:.0}}}}}",
        forwarded.0, dropped.0, baseline.0, forwarded.1, dropped.1, baseline.1
    );
    fwd.close(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
