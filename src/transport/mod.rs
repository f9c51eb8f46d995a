//! Listeners: binding Unix and TCP sockets (with care for stale socket files), and the accept
//! loop that enforces the connection limit and spawns one tracked task per connection, served
//! by the protocol its listener was bound for ([`Service`]).

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Address;
use crate::session::cardano;
use crate::session::native as session;
use crate::session::Context;

/// The protocol a listener serves.
#[derive(Debug, Clone)]
pub enum Service {
    /// tracerd's native protocol.
    Native,
    /// Cardano's forwarding protocol, tracerd being the mux responder (`AcceptAt`).
    Cardano(Arc<cardano::Settings>),
}

impl Service {
    /// The protocol label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Service::Native => "native",
            Service::Cardano(_) => "cardano",
        }
    }
}

/// Why a listener could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another process answers on the Unix socket path.
    #[error("{0} is in use by another running process")]
    InUse(PathBuf),
    /// The path exists and is not a socket; tracerd never deletes such a file.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// The OS refused.
    #[error("cannot listen on {addr}")]
    Io {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix stream socket, with the path to remove at shutdown.
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds `addr`. A Unix socket file left by a crashed run is removed first, but only when
    /// nothing accepts connections on it.
    pub async fn bind(addr: &Address) -> Result<Listener, BindError> {
        let io_err = |source| BindError::Io {
            addr: addr.to_string(),
            source,
        };
        match addr {
            Address::Tcp { host, port } => {
                let listener = TcpListener::bind((host.as_str(), *port))
                    .await
                    .map_err(io_err)?;
                Ok(Listener::Tcp(listener))
            }
            Address::Unix(path) => {
                remove_stale_socket(path)?;
                let listener = UnixListener::bind(path).map_err(io_err)?;
                Ok(Listener::Unix(listener, path.clone()))
            }
        }
    }

    /// Takes over a listening TCP socket (e.g. passed by socket activation).
    pub fn from_std_tcp(l: std::net::TcpListener) -> io::Result<Listener> {
        Ok(Listener::Tcp(TcpListener::from_std(l)?))
    }

    /// Takes over a listening Unix socket passed by socket activation. Its file belongs to
    /// the service manager and is not removed at shutdown.
    pub fn from_std_unix(l: std::os::unix::net::UnixListener) -> io::Result<Listener> {
        let path = l
            .local_addr()?
            .as_pathname()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Ok(Listener::Unix(UnixListener::from_std(l)?, path))
    }

    /// True when this listener listens on `addr`. Relative Unix paths are resolved against
    /// the working directory; TCP host names are resolved.
    pub async fn listens_on(&self, addr: &Address) -> bool {
        match (self, addr) {
            (Listener::Unix(_, bound), Address::Unix(path)) => {
                let abs = |p: &Path| {
                    std::path::absolute(p)
                        .map(|a| normalise(&a))
                        .unwrap_or_else(|_| p.to_path_buf())
                };
                abs(bound) == abs(path)
            }
            (Listener::Tcp(l), Address::Tcp { host, port }) => {
                let Ok(local) = l.local_addr() else {
                    return false;
                };
                match tokio::net::lookup_host((host.as_str(), *port)).await {
                    Ok(mut addrs) => addrs.any(|a| a == local),
                    Err(_) => false,
                }
            }
            _ => false,
        }
    }

    /// Where this listener listens, for logs.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| "tcp:?".to_string(), |a| format!("tcp:{a}")),
            Listener::Unix(_, path) => format!("unix:{}", path.display()),
        }
    }

    /// The Unix socket path to remove at shutdown, if any.
    pub fn socket_path(&self) -> Option<&Path> {
        match self {
            Listener::Unix(_, path) => Some(path),
            Listener::Tcp(_) => None,
        }
    }
}

/// Removes `.` components and folds `..` (lexically) so equal paths compare equal.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Applies `tracerd.unixSocket` (mode, group) to a socket file tracerd bound.
pub fn set_socket_permissions(
    path: &Path,
    settings: &crate::config::UnixSocketSettings,
) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(group) = &settings.group {
        let gid = crate::config::resolve_group(group).map_err(io::Error::other)?;
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    if let Some(mode) = settings.mode_bits() {
        let mode = mode.map_err(io::Error::other)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

fn remove_stale_socket(path: &Path) -> Result<(), BindError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(BindError::Io {
                addr: path.display().to_string(),
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(BindError::NotASocket(path.to_path_buf()));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(BindError::InUse(path.to_path_buf())),
        Err(_) => {
            tracing::info!(socket = %path.display(), "removing stale socket file from a previous run");
            std::fs::remove_file(path).map_err(|source| BindError::Io {
                addr: path.display().to_string(),
                source,
            })
        }
    }
}

/// Accepts connections until `cancel` fires, one tracked task per connection.
pub async fn accept_loop(
    listener: Listener,
    service: Service,
    shared: Arc<Context>,
    limit: Arc<Semaphore>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let mut backoff = tracerd_wire::Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
    let mut accepted_count = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = accept(&listener, accepted_count) => accepted,
        };
        match accepted {
            Ok(conn) => {
                accepted_count += 1;
                backoff.reset();
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    tracing::warn!(peer = %conn.peer(), "connection limit reached; closing new connection");
                    shared
                        .telemetry
                        .connections_refused
                        .with_label_values(&["connection_limit"])
                        .inc();
                    continue;
                };
                shared
                    .telemetry
                    .connections_accepted
                    .with_label_values(&[service.label()])
                    .inc();
                let shared = shared.clone();
                let cancel = cancel.child_token();
                let service = service.clone();
                tracker.spawn(async move {
                    match service {
                        Service::Native => conn.serve(shared, cancel).await,
                        Service::Cardano(settings) => {
                            conn.serve_cardano(settings, shared, cancel).await
                        }
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                let delay = backoff.next_delay();
                tracing::error!(listener = %listener.describe(), error = %e, "accept failed; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// An accepted connection: a TCP or Unix stream (`Either` reads and writes whichever it
/// holds, so each protocol's session is compiled once) and the peer's name for logs.
struct Conn {
    stream: Either<tokio::net::TcpStream, tokio::net::UnixStream>,
    peer: String,
}

impl Conn {
    fn peer(&self) -> &str {
        &self.peer
    }

    async fn serve_cardano(
        self,
        settings: Arc<cardano::Settings>,
        shared: Arc<Context>,
        cancel: CancellationToken,
    ) {
        use crate::cardano::mux::Mode;
        use crate::session::cardano::serve_and_report;
        // Outcomes are counted and logged by `serve_and_report`.
        let _ = serve_and_report(
            self.stream,
            self.peer,
            Mode::Responder,
            settings,
            shared,
            cancel,
        )
        .await;
    }

    async fn serve(self, shared: Arc<Context>, cancel: CancellationToken) {
        let started = std::time::Instant::now();
        let Conn { stream, peer } = self;
        let protocol = "native";
        let result = session::serve(stream, peer.clone(), protocol, shared.clone(), cancel).await;
        let duration_secs = started.elapsed().as_secs_f64();
        // verbosity: Minimum keeps connection problems out of the default log level.
        let quiet = shared.verbosity() == crate::config::Verbosity::Minimum;
        let reason = match &result {
            Ok(end) => end.label(),
            Err(e) => e.label(),
        };
        shared
            .telemetry
            .connections_closed
            .with_label_values(&[reason])
            .inc();
        match result {
            Ok(end) => tracing::info!(%peer, protocol, reason = end.label(), duration_secs,
                "connection closed"),
            Err(session::SessionError::Codec(crate::native::FrameError::Io(e))) => {
                if quiet {
                    tracing::debug!(%peer, protocol, error = %e, duration_secs, "connection lost")
                } else {
                    tracing::info!(%peer, protocol, error = %e, duration_secs, "connection lost")
                }
            }
            Err(e) => {
                if let session::SessionError::Codec(c) = &e {
                    shared
                        .telemetry
                        .decode_errors
                        .with_label_values(&[c.kind()])
                        .inc();
                }
                let error = crate::errors::error_chain(&e);
                if quiet {
                    tracing::debug!(%peer, protocol, reason = e.label(), %error, duration_secs,
                        "connection closed on error")
                } else {
                    tracing::warn!(%peer, protocol, reason = e.label(), %error, duration_secs,
                        "connection closed on error")
                }
            }
        }
    }
}

/// Accepts one connection. Unix peers have no address, so they are named
/// `unix:<path>@<n>` after the n-th connection of the listener, as cardano-tracer names them.
async fn accept(listener: &Listener, n: u64) -> io::Result<Conn> {
    match listener {
        Listener::Tcp(l) => {
            let (stream, addr) = l.accept().await?;
            let _ = stream.set_nodelay(true);
            Ok(Conn {
                stream: Either::Left(stream),
                peer: addr.to_string(),
            })
        }
        Listener::Unix(l, path) => {
            let (stream, _) = l.accept().await?;
            Ok(Conn {
                stream: Either::Right(stream),
                peer: format!("unix:{}@{n}", path.display()),
            })
        }
    }
}
