//! ConnectTo: tracerd dials each listed node (which runs with `--tracer-socket-path-accept`
//! or `--tracer-socket-network-accept`) and serves it as the mux initiator, reconnecting with
//! capped exponential backoff as cardano-tracer does (1 s doubling to 30 s, reset once a
//! connection lasted 30 s, and also after any connection that passed the handshake, so a
//! restarted node is picked up within a second).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use super::{serve_and_report, End, Settings};
use crate::cardano::mux::Mode;

use crate::config::Address;
use crate::session::Context;

/// First pause before reconnecting.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest pause before reconnecting; a connection that lasted this long resets the pause.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The pause after `current`: doubled, capped.
pub fn next_backoff(current: Duration, cap: Duration) -> Duration {
    (current * 2).min(cap)
}

/// Dials `addr` until `cancel` fires, serving each connection as the Cardano acceptor.
pub async fn connect_loop(
    addr: Address,
    settings: Arc<Settings>,
    shared: Arc<Context>,
    cancel: CancellationToken,
) {
    let peer = addr.to_string();
    let mut backoff = INITIAL_BACKOFF;
    loop {
        let started = Instant::now();
        let connected = tokio::select! {
            _ = cancel.cancelled() => return,
            c = connect(&addr) => c,
        };
        match connected {
            Ok(stream) => {
                tracing::info!(%peer, protocol = "cardano", "connected to node");
                shared
                    .telemetry
                    .connections_accepted
                    .with_label_values(&["cardano"])
                    .inc();
                let cancel = cancel.child_token();
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
                    backoff = INITIAL_BACKOFF;
                }
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "cannot connect to node; retrying in {backoff:?}");
            }
        }
        if started.elapsed() >= MAX_BACKOFF {
            backoff = INITIAL_BACKOFF;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = next_backoff(backoff, MAX_BACKOFF);
    }
}

/// A dialed TCP or Unix stream (`Either` reads and writes whichever it holds).
type Stream = Either<tokio::net::TcpStream, tokio::net::UnixStream>;

async fn connect(addr: &Address) -> std::io::Result<Stream> {
    match addr {
        Address::Tcp { host, port } => {
            let s = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
            let _ = s.set_nodelay(true);
            Ok(Either::Left(s))
        }
        Address::Unix(path) => Ok(Either::Right(tokio::net::UnixStream::connect(path).await?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = INITIAL_BACKOFF;
        let mut seen = Vec::new();
        for _ in 0..7 {
            seen.push(b.as_secs());
            b = next_backoff(b, MAX_BACKOFF);
        }
        assert_eq!(seen, vec![1, 2, 4, 8, 16, 30, 30]);
    }
}
