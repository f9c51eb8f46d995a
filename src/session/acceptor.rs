//! What a node listener serves ([`Service`]), and the [`Sessions`] acceptor that plugs the
//! protocol sessions into the shared accept loop of `crate::transport`: the loop owns
//! accepting, the connection limit and shutdown; this supplies the session and the reports.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cardano::mux::Mode;
use crate::events::{ConnectionAccepted, ConnectionLimitReached};
use crate::session::{cardano, native, Context, Protocol};
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
}

impl Acceptor for Sessions {
    async fn serve(&self, conn: Conn, cancel: CancellationToken) {
        let Conn { stream, peer } = conn;
        let ctx = self.ctx.clone();
        // Outcomes are counted and logged by `serve_and_report`.
        match &self.service {
            Service::Native => {
                let _ = native::serve_and_report(stream, peer, ctx, cancel).await;
            }
            Service::Cardano(settings) => {
                let settings = settings.clone();
                let mode = Mode::Responder;
                let _ = cardano::serve_and_report(stream, peer, mode, settings, ctx, cancel).await;
            }
        }
    }

    fn accepted(&self) {
        ConnectionAccepted {
            protocol: self.service.protocol().as_str(),
        }
        .emit(&self.ctx.telemetry);
    }

    fn refused(&self, peer: &str) {
        ConnectionLimitReached { peer }.emit(&self.ctx.telemetry);
    }

    fn accept_failed(&self, listener: &Listener, error: &io::Error, backoff: Duration) {
        tracing::error!(listener = %listener.describe(), %error, "accept failed; retrying in {backoff:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Stream;

    /// The state every idle connection keeps is its session task's future. Issue 10 found it
    /// 3.4 KiB larger (7,040 bytes, from 3,616) after the session's future was passed by value
    /// into the report; this keeps the future the accept loop spawns under 4.5 KiB.
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
        assert!(size < 4608, "an idle session's future is {size} bytes");
    }
}
