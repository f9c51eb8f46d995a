//! Listeners: binding Unix and TCP sockets, with care for stale socket files, taking over
//! sockets passed by socket activation, and the mode and group of the socket files tracerd
//! creates.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, UnixListener};

use crate::config::Address;

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
