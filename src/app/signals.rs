//! Signals: SIGTERM and SIGINT stop tracerd ([`shutdown_signal`]); SIGHUP reloads the
//! config ([`Hangup`]), and is installed first so that it never terminates tracerd (its
//! default action).

use std::future::Future;

use tokio::signal::unix::{signal, Signal, SignalKind};

/// The SIGHUP handler; `None` inside when it could not be installed (reload unavailable).
pub struct Hangup(Option<Signal>);

impl Hangup {
    /// Installs the handler now (inside the runtime).
    pub fn install() -> Hangup {
        match signal(SignalKind::hangup()) {
            Ok(s) => Hangup(Some(s)),
            Err(e) => {
                tracing::error!(error = %e, "cannot install the SIGHUP handler; reload is unavailable");
                Hangup(None)
            }
        }
    }

    /// The next SIGHUP; pending forever without a handler.
    pub async fn recv(&mut self) -> Option<()> {
        match self.0.as_mut() {
            Some(h) => h.recv().await,
            None => None,
        }
    }
}

/// Installs the SIGTERM and SIGINT handlers now (call it inside the runtime) and returns a
/// future that resolves on either.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!(signal = "SIGTERM", "stop requested"),
                    _ = int.recv() => tracing::info!(signal = "SIGINT", "stop requested"),
                }
            }
            (Ok(mut one), Err(e)) | (Err(e), Ok(mut one)) => {
                tracing::error!(error = %e, "cannot install one of the SIGTERM/SIGINT handlers");
                one.recv().await;
                tracing::info!("stop requested");
            }
            (Err(e), Err(_)) => {
                tracing::error!(error = %e, "cannot install SIGTERM/SIGINT handlers; stop with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
    }
}
