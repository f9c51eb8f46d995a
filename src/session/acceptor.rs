//! What a node listener serves ([`Service`]), and the [`Sessions`] acceptor that plugs the
//! protocol sessions into the shared accept loop of `crate::transport`: the loop owns
//! accepting, the per-source admission, the connection limit and shutdown; this supplies the
//! session, the admission (one for every node listener) and the reports.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cardano::mux::Mode;
use crate::events::{ConnectionAccepted, ConnectionRefused};
use crate::session::{cardano, native, Context, Protocol};
use crate::transport::admission::{Admission, Refusal, Source};
use crate::transport::{Acceptor, Conn, Listener};

/// The protocol a listener serves.
#[derive(Debug, Clone)]
pub enum Service {
    /// tracerd's native protocol.
    Native,
    /// Cardano's forwarding protocol, tracerd being the mux responder (`AcceptAt`).
    Cardano(Arc<cardano::Settings>),
}

impl Service {
    /// The protocol it speaks.
    pub fn protocol(&self) -> Protocol {
        match self {
            Service::Native => Protocol::Native,
            Service::Cardano(_) => Protocol::Cardano,
        }
    }
}

/// The sessions of one node listener.
#[derive(Debug)]
pub struct Sessions {
    /// What the listener serves.
    pub service: Service,
    /// What every session shares.
    pub ctx: Arc<Context>,
    /// `tracerd.native.tls`: native sessions over TCP speak TLS only (Unix ones stay plain).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The per-source bounds, shared by every node listener.
    pub admission: Arc<Admission>,
}

impl Acceptor for Sessions {
    async fn serve(&self, conn: Conn, cancel: CancellationToken) {
        let Conn { stream, peer } = conn;
        // Capturable once its session names the node (`crate::capture`); alive as long as it.
        let (stream, _wire) = crate::capture::tap(stream, &peer, &self.ctx.captures);
        let ctx = self.ctx.clone();
        // Outcomes are counted and logged by `serve_and_report`.
        match (&self.service, &self.tls, stream) {
            (Service::Native, Some(tls), tokio_util::either::Either::Left(tcp)) => {
                // Boxed: an idle plain session's future stays as small as before.
                Box::pin(serve_tls(tcp, tls.clone(), peer, ctx, cancel)).await;
            }
            (Service::Native, _, stream) => {
                let _ = native::serve_and_report(stream, peer, None, ctx, cancel).await;
            }
            (Service::Cardano(_), _, tokio_util::either::Either::Left(_))
                if !source_allowed(&ctx, &peer) =>
            {
                crate::events::HandshakeRefused {
                    peer: &peer,
                    protocol: Some(Protocol::Cardano.as_str()),
                    reason: "source_not_allowed",
                    message: "source address not in tracerd.cardanoAllowFrom",
                    by: crate::events::RefusedBy::Tracerd,
                    log: ctx.refusals.admit(&peer, std::time::Instant::now()),
                }
                .emit(&ctx.telemetry);
            }
            (Service::Cardano(settings), _, stream) => {
                let settings = settings.clone();
                let mode = Mode::Responder;
                // Boxed: a Cardano session's future is larger than a native one's, and inline
                // every native session's future would be that large too (issue 21: idle
                // nodes' memory); a Cardano session costs the same either way.
                let f = cardano::serve_and_report(stream, peer, mode, settings, ctx, cancel);
                let _ = Box::pin(f).await;
            }
        }
    }

    fn accepted(&self) {
        ConnectionAccepted {
            protocol: self.service.protocol().as_str(),
        }
        .emit(&self.ctx.telemetry);
    }

    fn admission(&self) -> Option<&Arc<Admission>> {
        Some(&self.admission)
    }

    fn refused(&self, peer: &str, source: &Source, why: Refusal) {
        ConnectionRefused {
            peer,
            source,
            reason: why.label(),
            words: why.words(),
            log: self.admission.log_refusal(why),
        }
        .emit(&self.ctx.telemetry);
    }

    fn accept_failed(&self, listener: &Listener, error: &io::Error, backoff: Duration) {
        tracing::error!(listener = %listener.describe(), %error, "accept failed; retrying in {backoff:?}");
    }
}

/// Whether a TCP peer may speak Cardano's protocol (`tracerd.cardanoAllowFrom`).
fn source_allowed(ctx: &Context, peer: &str) -> bool {
    if ctx.cardano_allow.is_empty() {
        return true;
    }
    peer.parse::<std::net::SocketAddr>()
        .is_ok_and(|a| crate::transport::sources::allowed(&ctx.cardano_allow, a.ip()))
}

/// The TLS handshake of a native session, under the handshake timeout; a failure is refused
/// and counted (`tracerd_connections_refused_total{reason="tls_handshake"}`).
async fn serve_tls(
    tcp: tokio::net::TcpStream,
    tls: Arc<rustls::ServerConfig>,
    peer: String,
    ctx: Arc<Context>,
    cancel: CancellationToken,
) {
    let timeout = ctx.limits().handshake_timeout();
    let accept = tokio_rustls::TlsAcceptor::from(tls).accept(tcp);
    let why = tokio::select! {
        _ = cancel.cancelled() => return,
        r = tokio::time::timeout(timeout, accept) => match r {
            Ok(Ok(stream)) => {
                let cert = stream.get_ref().1.peer_certificates().and_then(|c| c.first().cloned()).map(Box::new);
                let _ = native::serve_and_report(stream, peer, cert, ctx, cancel).await;
                return;
            }
            Ok(Err(e)) => format!("TLS handshake failed: {e}"),
            Err(_) => format!("no TLS handshake within {timeout:?}"),
        },
    };
    crate::events::HandshakeRefused {
        peer: &peer,
        protocol: Some(Protocol::Native.as_str()),
        reason: "tls_handshake",
        message: &why,
        by: crate::events::RefusedBy::Tracerd,
        log: ctx.refusals.admit(&peer, std::time::Instant::now()),
    }
    .emit(&ctx.telemetry);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Stream;

    /// The state every idle connection keeps is its session task's future. Issue 10 found it
    /// 3.4 KiB larger (7,040 bytes, from 3,616) after the session's future was passed by value
    /// into the report; issue 21 boxed the handshake and the drain, which an idle session is
    /// never in, and took `Telemetry` out of `NodeSink` (4,248 → 2,160 bytes in a debug
    /// build). This keeps the future the accept loop spawns under 2.375 KiB.
    #[test]
    fn an_idle_sessions_future_stays_small() {
        let ctx = Arc::new(Context::new(
            &crate::config::Config::default(),
            Default::default(),
            Default::default(),
        ));
        let sessions = Sessions {
            service: Service::Native,
            ctx,
            tls: None,
            admission: Arc::new(Admission::new(crate::transport::admission::SourceLimits {
                per_source: 1,
                rate: 1.0,
                burst: 1,
                exempt: Vec::new(),
            })),
        };
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let stream: Stream =
            tokio_util::either::Either::Right(tokio::net::UnixStream::from_std(a).unwrap());
        let conn = Conn {
            stream,
            peer: "test".into(),
        };
        let future = sessions.serve(conn, CancellationToken::new());
        let size = std::mem::size_of_val(&future);
        eprintln!("session future: {size} bytes");
        assert!(size < 2432, "an idle session's future is {size} bytes");
    }
}
