//! `hasForwarding` with `ConnectTo`: one task per node and downstream address that dials
//! the downstream (a tracer with `network: AcceptAt`) and serves the node's queue as the
//! forwarder, mux initiator — as a node with `--tracer-socket-path-connect` would. It
//! reconnects as trace-dispatcher does: 1 s, doubling up to `maxReconnectDelay`, the pause
//! reset once a connection lasted `maxReconnectDelay`. It ends when the node's session ended
//! and every queued object was sent, or at shutdown; a node that left while the downstream
//! is unreachable has its queued objects counted as dropped.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::queue::NodeSource;
use super::Reforwarder;
use crate::cardano::forwarder::{self, End};
use crate::cardano::mux::Mode;
use crate::config::forwarding::ForwarderVerbosity;
use crate::config::Address;
use crate::node::escape_name;
use tracerd_wire::Backoff;

/// The first pause before reconnecting (trace-dispatcher's `runInLoop`).
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Largest acceptor message read (requests are a few bytes).
pub const MAX_REQUEST: usize = 1 << 20;

/// Dials `addr` for node `node` until the node is gone and its queue sent, or `cancel`.
pub async fn connect_loop(
    addr: Address,
    node: String,
    source: NodeSource,
    forwarding: Arc<Reforwarder>,
    cancel: CancellationToken,
) {
    let config = forwarding.config();
    let max = config.max_reconnect_delay.max(INITIAL_BACKOFF);
    let loud = config.verbosity == ForwarderVerbosity::Maximum;
    let mut backoff = Backoff::new(INITIAL_BACKOFF, max);
    let mut failures: u64 = 0;
    let node_log = escape_name(&node);
    loop {
        if source.queue.is_finished() && source.queue.is_empty() {
            return;
        }
        let started = Instant::now();
        let connected = tokio::select! {
            _ = cancel.cancelled() => return,
            c = tracerd_wire::connect(&addr) => c,
        };
        let outcome = match connected {
            Ok(stream) => {
                if failures > 0 || loud {
                    tracing::info!(downstream = %addr, node = %node_log, attempts = failures,
                        "re-forwarding: connected to the downstream");
                }
                failures = 0;
                let metrics = forwarding.metrics().connections.clone();
                metrics.inc();
                let served = forwarder::run(
                    stream,
                    Mode::Initiator,
                    forwarding.magic(),
                    MAX_REQUEST,
                    &source,
                    || {},
                );
                let end = tokio::select! {
                    _ = cancel.cancelled() => None,
                    end = served => Some(end),
                };
                metrics.dec();
                match end {
                    None => return,
                    Some(Ok(End::Finished)) => return,
                    Some(Ok(End::Refused(why))) => {
                        tracing::warn!(downstream = %addr, node = %node_log, refusal = %why,
                            "re-forwarding: the downstream refused the handshake");
                        Err(why)
                    }
                    Some(Ok(end)) => {
                        if loud {
                            tracing::info!(downstream = %addr, node = %node_log, ?end,
                                "re-forwarding: the downstream ended the connection");
                        }
                        Ok(())
                    }
                    Some(Err(e)) => {
                        tracing::warn!(downstream = %addr, node = %node_log, error = %e,
                            "re-forwarding: downstream connection failed");
                        Ok(())
                    }
                }
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(why) = outcome {
            failures += 1;
            if source.queue.is_finished() {
                let lost = source.queue.discard();
                tracing::warn!(downstream = %addr, node = %node_log, dropped = lost,
                    "re-forwarding: the node left while the downstream is unreachable; \
                     its queued trace objects are dropped");
                return;
            }
            if failures == 1 || loud {
                tracing::warn!(downstream = %addr, node = %node_log, error = %why,
                    attempts = failures, "re-forwarding: cannot reach the downstream; retrying in {:?}",
                    backoff.current());
            }
        }
        if started.elapsed() >= max {
            backoff.reset();
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}
