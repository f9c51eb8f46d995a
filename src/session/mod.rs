//! Protocol sessions: one task per connection, speaking the native protocol ([`native`]) or
//! Cardano's forwarding protocol ([`cardano`]), feeding the protocol-independent ingest path.
//!
//! What both protocols share lives here, written once: the [`Protocol`] a session speaks,
//! how a session ends ([`End`], and the [`Failure`] shape each protocol's error has), the
//! handshake deadline and cancellation ([`handshake`]), the small [`Framed`] buffers
//! ([`framed`]), and the end-of-connection report ([`report`]: one log line, one counter).
//! Each protocol supplies only its decoding, handshake rules and acking or pulling; accepting
//! and the connection limit are `crate::transport`'s.

pub mod acceptor;
pub mod cardano;
pub mod context;
pub mod identity;
pub mod native;
pub mod refusals;

use std::future::Future;
use std::time::Duration;

use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

pub use acceptor::{Service, Sessions};
pub use context::Context;

use crate::events::{Closed, ConnectionClosed};
use crate::ingest::NodeSink;
use crate::metrics::telemetry::Telemetry;

/// Records one round-trip time to the node behind `sink`: its histogram
/// (`tracerd_node_rtt_seconds`) and its live state (latest, last minute's percentiles).
pub fn record_rtt(telemetry: &Telemetry, sink: &NodeSink, rtt: Duration) {
    telemetry.observe_rtt(sink.name(), rtt);
    sink.lease().record_rtt(rtt);
}

/// The wire protocol of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// tracerd's native protocol.
    Native,
    /// Cardano's forwarding protocol.
    Cardano,
}

impl Protocol {
    /// The label in logs, metrics (`protocol="native"`) and `/api`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Native => "native",
            Protocol::Cardano => "cardano",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a session ended, when it ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The node closed the connection.
    PeerClosed,
    /// tracerd is shutting down.
    Shutdown,
    /// tracerd refused the node's handshake; the label says why.
    Refused(&'static str),
    /// The node refused tracerd's handshake (Cardano ConnectTo); the label says why.
    RefusedByPeer(&'static str),
}

impl End {
    /// A bounded label for counting.
    pub fn label(self) -> &'static str {
        match self {
            End::PeerClosed => "peer_closed",
            End::Shutdown => "shutdown",
            End::Refused(r) | End::RefusedByPeer(r) => r,
        }
    }
}

/// What the end-of-connection report needs from a protocol's session error.
pub trait Failure: std::error::Error {
    /// A bounded label for `tracerd_connections_closed_total{reason}`.
    fn label(&self) -> &'static str;
    /// The text to log when the connection broke (an I/O error), else `None`.
    fn lost(&self) -> Option<String>;
    /// The `tracerd_decode_errors_total` reason, when the peer sent something malformed.
    fn decode_reason(&self) -> Option<&'static str>;
}

/// Reports how one connection of `protocol` with `peer`, started at `started`, ended:
/// counted in `tracerd_connections_closed_total{reason}` and logged once, with peer and reason.
///
/// It takes the session's result, not the session's future: a future passed by value into
/// another `async fn` and awaited there is kept twice in the task's state (once as the
/// argument, once as the awaitee), which cost every idle connection ~3.4 KiB.
pub fn report<E: Failure>(
    ctx: &Context,
    peer: &str,
    protocol: Protocol,
    started: std::time::Instant,
    result: &Result<End, E>,
) {
    let duration = started.elapsed();
    // verbosity: Minimum keeps connection problems out of the default log level.
    let quiet = ctx.verbosity() == crate::config::Verbosity::Minimum;
    let how = match result {
        Ok(end) => Closed::Ended(end.label()),
        Err(e) => match e.lost() {
            Some(error) => Closed::Lost {
                reason: e.label(),
                error,
            },
            None => Closed::Failed {
                reason: e.label(),
                error: e,
                decode: e.decode_reason(),
            },
        },
    };
    ConnectionClosed {
        peer,
        protocol: protocol.as_str(),
        how,
        duration,
        quiet,
    }
    .emit(&ctx.telemetry);
}

/// How a handshake under a deadline came out.
#[derive(Debug)]
pub enum Deadline<T> {
    /// It finished in time.
    Done(T),
    /// The deadline passed first.
    TimedOut,
    /// tracerd is shutting down.
    Shutdown,
}

/// Runs `handshake` until it finishes, `timeout` passes, or `cancel` fires.
pub async fn handshake<T>(
    cancel: &CancellationToken,
    timeout: Duration,
    handshake: impl Future<Output = T>,
) -> Deadline<T> {
    tokio::select! {
        _ = cancel.cancelled() => Deadline::Shutdown,
        outcome = tokio::time::timeout(timeout, handshake) => match outcome {
            Ok(t) => Deadline::Done(t),
            Err(_) => Deadline::TimedOut,
        },
    }
}

/// Initial read buffer of a session, in bytes (`Framed::new` would take 8 KiB).
const READ_BUFFER: usize = 1024;
/// Initial write buffer: tracerd only sends small messages.
const WRITE_BUFFER: usize = 256;

/// A session's [`Framed`] with small initial buffers for the handshake; they grow on demand
/// for large frames, and [`shrink_idle`] gives them back once the node is idle.
pub fn framed<S, C>(stream: S, codec: C) -> Framed<S, C> {
    let mut framed = Framed::with_capacity(stream, codec, READ_BUFFER);
    *framed.write_buffer_mut() = bytes::BytesMut::with_capacity(WRITE_BUFFER);
    framed
}

/// Frees a session's read and write buffers when they hold nothing (issue 21: 1.3 KiB of an
/// idle node's ~17 KiB). Nothing is lost: a buffer holding part of a frame, or bytes not yet
/// sent, is kept; an empty one is grown again by the next read (`Framed` reserves a few bytes,
/// the length prefix then the whole frame) or the next message sent.
pub fn shrink_idle<S, C>(framed: &mut Framed<S, C>) {
    if framed.read_buffer().is_empty() && framed.read_buffer().capacity() > 0 {
        *framed.read_buffer_mut() = bytes::BytesMut::new();
    }
    if framed.write_buffer().is_empty() && framed.write_buffer().capacity() > 0 {
        *framed.write_buffer_mut() = bytes::BytesMut::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::LengthDelimitedCodec;

    /// Shrinking frees only empty buffers: a frame half-read survives it whole, and a frame
    /// far larger than the initial buffer arrives intact after it.
    async fn next<S: tokio::io::AsyncRead + Unpin>(
        f: &mut Framed<S, LengthDelimitedCodec>,
    ) -> Result<Option<std::io::Result<bytes::BytesMut>>, tokio::time::error::Elapsed> {
        tokio::time::timeout(Duration::from_secs(2), f.next()).await
    }

    #[tokio::test]
    async fn idle_buffers_are_given_back_and_grow_again() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        let mut framed = framed(ours, LengthDelimitedCodec::new());
        // 100-byte frame, half of it sent.
        let body: Vec<u8> = (0..100u8).collect();
        theirs.write_all(&100u32.to_be_bytes()).await.unwrap();
        theirs.write_all(&body[..50]).await.unwrap();
        let half = tokio::time::timeout(Duration::from_millis(50), framed.next()).await;
        assert!(half.is_err(), "half a frame decoded");
        shrink_idle(&mut framed);
        assert!(
            framed.read_buffer().capacity() >= 50,
            "a partial frame was dropped"
        );
        theirs.write_all(&body[50..]).await.unwrap();
        let got = next(&mut framed).await.unwrap().unwrap().unwrap();
        assert_eq!(&got[..], &body[..]);

        framed
            .send(bytes::Bytes::from_static(b"ping"))
            .await
            .unwrap();
        shrink_idle(&mut framed);
        assert_eq!(framed.read_buffer().capacity(), 0);
        assert_eq!(framed.write_buffer().capacity(), 0);

        let mut peer = Framed::new(theirs, LengthDelimitedCodec::new());
        assert_eq!(&peer.next().await.unwrap().unwrap()[..], b"ping");
        let large: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        peer.send(bytes::Bytes::from(large.clone())).await.unwrap();
        let got = next(&mut framed).await.unwrap().unwrap().unwrap();
        assert_eq!(got.len(), large.len());
        assert!(got[..] == large[..], "the large frame arrived altered");
    }
}
