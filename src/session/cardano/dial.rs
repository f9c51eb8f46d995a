//! ConnectTo: tracerd dials each listed node (which runs with `--tracer-socket-path-accept`
//! or `--tracer-socket-network-accept`) and serves it as the mux initiator, reconnecting with
//! capped exponential backoff as cardano-tracer does (1 s doubling to 30 s, reset once a
//! connection lasted 30 s, and also after any connection that passed the handshake, so a
//! restarted node is picked up within a second).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{serve_and_report, End, Settings};
use crate::cardano::mux::Mode;

use crate::config::Address;
use crate::events::NodeDialed;
use crate::session::Context;
use crate::session::Protocol;
use tracerd_wire::Backoff;

/// First pause before reconnecting.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest pause before reconnecting; a connection that lasted this long resets the pause.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Dials `addr` until `cancel` fires, serving each connection as the Cardano acceptor.
pub async fn connect_loop(
    addr: Address,
    settings: Arc<Settings>,
    shared: Arc<Context>,
    cancel: CancellationToken,
) {
    let peer = addr.to_string();
    let mut backoff = Backoff::new(INITIAL_BACKOFF, MAX_BACKOFF);
    let mut failures: u64 = 0;
    loop {
        let started = Instant::now();
        let connected = tokio::select! {
            _ = cancel.cancelled() => return,
            c = tracerd_wire::connect(&addr) => c,
        };
        match connected {
            Ok(stream) => {
                if failures > 0 {
                    tracing::info!(%peer, attempts = failures, "node reachable again");
                    failures = 0;
                }
                NodeDialed {
                    peer: &peer,
                    protocol: Protocol::Cardano.as_str(),
                }
                .emit(&shared.telemetry);
                let cancel = cancel.child_token();
                let (stream, _wire) = crate::capture::tap(stream, &peer, &shared.captures);
                let end = serve_and_report(
                    stream,
                    peer.clone(),
                    Mode::Initiator,
                    settings.clone(),
                    shared.clone(),
                    cancel,
                )
                .await;
                // A node that was served (not refused) is redialed promptly after it leaves,
                // e.g. when it restarts.
                if !matches!(end, Ok(End::Refused(_) | End::RefusedByPeer(_))) {
                    backoff.reset();
                }
            }
            Err(e) => {
                // Once per backoff cycle (attempts are 1, 2, 4, ... 30 s apart), at default
                // verbosity: an unreachable node is never silent.
                failures += 1;
                tracing::warn!(
                    %peer,
                    error = %e,
                    attempts = failures,
                    "cannot connect to node; retrying in {:?}",
                    backoff.current()
                );
            }
        }
        if started.elapsed() >= MAX_BACKOFF {
            backoff.reset();
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}
