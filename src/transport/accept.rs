//! The one accept loop, for the node protocols and the HTTP server alike: it owns accepting,
//! the per-source admission (when the acceptor has one, [`crate::transport::admission`]), the
//! connection limit, backoff after a failed `accept` and shutdown, and spawns one tracked
//! task per connection. What a connection is served with, and how a refusal or a failure is
//! reported, is the [`Acceptor`]'s (the shape of vector's `TcpSource`).

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracerd_wire::Backoff;

use crate::transport::admission::{Admission, Refusal, Source};
use crate::transport::Listener;

/// An accepted or dialed stream: TCP or Unix (`Either` reads and writes whichever it holds,
/// so each protocol's session is compiled once).
pub type Stream = Either<tokio::net::TcpStream, tokio::net::UnixStream>;

/// An accepted connection and the peer's name for logs.
#[derive(Debug)]
pub struct Conn {
    /// The stream.
    pub stream: Stream,
    /// The peer: its address, or `unix:<path>@<n>` for the n-th connection of a Unix listener.
    pub peer: String,
}

/// What a listener serves. [`Acceptor::run`] owns accepting, the limit and shutdown; an
/// acceptor supplies only the serving of one connection and the reports.
pub trait Acceptor: Send + Sync + Sized + 'static {
    /// Serves one connection until it ends or `cancel` fires.
    fn serve(&self, conn: Conn, cancel: CancellationToken) -> impl Future<Output = ()> + Send;

    /// A connection passed the limit and is about to be served.
    fn accepted(&self) {}

    /// The per-source bounds new connections pass first, if any (node listeners).
    fn admission(&self) -> Option<&Arc<Admission>> {
        None
    }

    /// The accept loop closed a new connection of `peer` from `source`, for `why`.
    fn refused(&self, peer: &str, source: &Source, why: Refusal);

    /// `accept` failed (typically EMFILE); the loop retries after `backoff`.
    fn accept_failed(&self, listener: &Listener, error: &io::Error, backoff: Duration);

    /// Accepts connections on `listener` until `cancel` fires, at most as many at once as
    /// `limit` has permits, one task on `tracker` per connection.
    fn run(
        self: Arc<Self>,
        listener: Listener,
        limit: Arc<Semaphore>,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> impl Future<Output = ()> + Send {
        accept_loop(listener, self, limit, cancel, tracker)
    }
}

/// Pauses after a failed `accept`: 10 ms, doubled up to 1 s, reset by the next success.
const ACCEPT_BACKOFF: Backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));

/// Accepts connections until `cancel` fires, one tracked task per connection.
pub async fn accept_loop<A: Acceptor>(
    listener: Listener,
    acceptor: Arc<A>,
    limit: Arc<Semaphore>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let mut backoff = ACCEPT_BACKOFF;
    let mut accepted_count = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = accept(&listener, accepted_count) => accepted,
        };
        match accepted {
            Ok((conn, source)) => {
                accepted_count += 1;
                backoff.reset();
                let place = match acceptor.admission().map(|a| a.admit(&source)) {
                    None => None,
                    Some(Ok(place)) => place,
                    Some(Err(why)) => {
                        acceptor.refused(&conn.peer, &source, why);
                        continue;
                    }
                };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    acceptor.refused(&conn.peer, &source, Refusal::ConnectionLimit);
                    continue;
                };
                acceptor.accepted();
                let acceptor = acceptor.clone();
                // A clone, not a child token: nothing cancels one connection alone (a
                // connection ends itself by returning), and a child costs every connection
                // its own tree node, ~120 bytes of an idle node's heap (issue 21).
                let cancel = cancel.clone();
                tracker.spawn(async move {
                    acceptor.serve(conn, cancel).await;
                    drop(permit);
                    drop(place);
                });
            }
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                let delay = backoff.next_delay();
                acceptor.accept_failed(&listener, &e, delay);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Accepts one connection, and says who it comes from (the TCP peer's address, or the Unix
/// peer's credentials). Unix peers have no address, so they are named `unix:<path>@<n>`
/// after the n-th connection of the listener, as cardano-tracer names them.
async fn accept(listener: &Listener, n: u64) -> io::Result<(Conn, Source)> {
    match listener {
        Listener::Tcp(l) => {
            let (stream, addr) = l.accept().await?;
            let _ = stream.set_nodelay(true);
            let conn = Conn {
                stream: Either::Left(stream),
                peer: addr.to_string(),
            };
            Ok((conn, Source::Ip(addr.ip())))
        }
        Listener::Unix(l, path) => {
            let (stream, _) = l.accept().await?;
            // SO_PEERCRED: one getsockopt, answered from the socket (no I/O).
            let source = stream
                .peer_cred()
                .map_or(Source::Unknown, |c| Source::Unix {
                    uid: c.uid(),
                    pid: c.pid(),
                });
            let conn = Conn {
                stream: Either::Right(stream),
                peer: format!("unix:{}@{n}", path.display()),
            };
            Ok((conn, source))
        }
    }
}
