//! `hasForwarding` with `AcceptAt`: tracerd listens and downstream tracers (configured with
//! `network: ConnectTo`) connect and pull, tracerd being the forwarder and mux responder, as
//! a node with `--tracer-socket-path-accept` would. Every connection serves the one merged
//! stream of every node (cardano-tracer's shape); several downstreams share its queue, each
//! object going to one of them, as with a node's forwarder.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::dial::MAX_REQUEST;
use super::Reforwarder;
use crate::cardano::forwarder;
use crate::cardano::mux::Mode;
use crate::transport::{Acceptor, Conn, Listener};

/// Serves the merged stream to each downstream that connects.
#[derive(Debug)]
pub struct Downstreams {
    /// The re-forwarder whose merged stream is served.
    pub forwarding: Arc<Reforwarder>,
}

impl Acceptor for Downstreams {
    async fn serve(&self, conn: Conn, cancel: CancellationToken) {
        let Some(source) = self.forwarding.merged_source() else {
            return;
        };
        let peer = conn.peer;
        let metrics = self.forwarding.metrics().connections.clone();
        metrics.inc();
        tracing::info!(downstream = %peer, "re-forwarding: downstream connected (hasForwarding AcceptAt)");
        let served = forwarder::run(
            conn.stream,
            Mode::Responder,
            self.forwarding.magic(),
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
            None => {}
            Some(Ok(end)) => {
                tracing::info!(downstream = %peer, ?end, "re-forwarding: downstream disconnected")
            }
            Some(Err(e)) => {
                tracing::warn!(downstream = %peer, error = %e, "re-forwarding: downstream connection failed")
            }
        }
    }

    fn refused(
        &self,
        peer: &str,
        _: &crate::transport::admission::Source,
        _: crate::transport::admission::Refusal,
    ) {
        tracing::warn!(downstream = %peer, "re-forwarding: connection limit reached; downstream refused");
    }

    fn accept_failed(&self, listener: &Listener, error: &io::Error, backoff: Duration) {
        tracing::warn!(listen = %listener.describe(), %error, ?backoff,
            "re-forwarding: accept failed");
    }
}
