//! systemd integration: service notifications (`READY=1`, `STATUS=`, `STOPPING=1`,
//! `WATCHDOG=1`) over the `NOTIFY_SOCKET` datagram protocol, and socket
//! activation (listening sockets passed as `LISTEN_FDS`).
//!
//! The environment is read once, in `main` before the runtime starts ([`Systemd::from_env`]),
//! so the rest of tracerd gets plain values and tests can build them. Notifications are sent on
//! a non-blocking socket: a service manager that does not read them never stalls the runtime.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// What systemd handed this process.
#[derive(Debug, Default)]
pub struct Systemd {
    /// Where notifications go (`NOTIFY_SOCKET`), if anywhere.
    pub notify: Option<Notifier>,
    /// Watchdog period (`WATCHDOG_USEC`, for this pid), if the watchdog is enabled.
    pub watchdog: Option<Duration>,
    /// Listening sockets passed by socket activation.
    pub listeners: Vec<Activated>,
}

/// A listening socket passed by the service manager.
#[derive(Debug)]
pub enum Activated {
    /// A Unix stream socket.
    Unix(std::os::unix::net::UnixListener),
    /// A TCP socket.
    Tcp(std::net::TcpListener),
}

impl Activated {
    /// Where the socket listens, for logs and for matching it with the config.
    pub fn describe(&self) -> String {
        match self {
            Activated::Unix(l) => match l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
            {
                Some(d) => d,
                None => "unix:?".to_string(),
            },
            Activated::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| "tcp:?".to_string(), |a| format!("tcp:{a}")),
        }
    }
}

/// A socket-activation fd that is neither a Unix nor a TCP stream listener.
#[derive(Debug, thiserror::Error)]
#[error("socket-activation fd #{index}: {source}")]
pub struct ActivationError {
    /// Index among the passed fds (0 is fd 3).
    pub index: usize,
    /// Why it was refused.
    #[source]
    pub source: io::Error,
}

impl Systemd {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC`/`WATCHDOG_PID` and takes the `LISTEN_FDS`
    /// sockets. Must run before any other thread exists: taking the fds unsets `LISTEN_FDS`
    /// and `LISTEN_PID` so children do not inherit them.
    pub fn from_env() -> Result<Systemd, ActivationError> {
        let notify = std::env::var_os("NOTIFY_SOCKET").map(|p| Notifier::new(p.into()));
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|&us| us > 0)
            .filter(|_| {
                std::env::var("WATCHDOG_PID")
                    .ok()
                    .and_then(|p| p.parse::<u32>().ok())
                    .is_none_or(|pid| pid == std::process::id())
            })
            .map(Duration::from_micros);
        let mut fds = listenfd::ListenFd::from_env();
        let mut listeners = Vec::with_capacity(fds.len());
        for index in 0..fds.len() {
            let err = |source| ActivationError { index, source };
            if let Some(l) = fds.take_unix_listener(index).ok().flatten() {
                l.set_nonblocking(true).map_err(err)?;
                listeners.push(Activated::Unix(l));
            } else if let Some(l) = fds.take_tcp_listener(index).map_err(err)? {
                l.set_nonblocking(true).map_err(err)?;
                listeners.push(Activated::Tcp(l));
            }
        }
        Ok(Systemd {
            notify,
            watchdog,
            listeners,
        })
    }
}

/// Sends `sd_notify(3)` messages to the service manager.
#[derive(Debug, Clone)]
pub struct Notifier {
    path: PathBuf,
}

impl Notifier {
    /// A notifier for the socket at `path` (`@name` is an abstract socket).
    pub fn new(path: PathBuf) -> Notifier {
        Notifier { path }
    }

    /// Sends one message (`KEY=value` lines). Never blocks.
    pub fn send(&self, message: &str) -> io::Result<()> {
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        let bytes = self.path.as_os_str().as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(message.as_bytes(), &addr)?;
        } else {
            socket.send_to(message.as_bytes(), &self.path)?;
        }
        Ok(())
    }

    /// Sends `message`, logging (not failing) when it cannot be delivered.
    pub fn notify(&self, message: &str) {
        if let Err(e) = self.send(message) {
            tracing::warn!(socket = %self.path.display(), error = %e, message,
                "cannot notify the service manager");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_arrive_as_datagrams_on_path_and_abstract_sockets() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        Notifier::new(path).send("READY=1\nSTATUS=ok").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("tracerd-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::new(format!("@{name}").into())
            .send("WATCHDOG=1")
            .unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_hang() {
        assert!(Notifier::new("/nonexistent/notify".into())
            .send("READY=1")
            .is_err());
    }
}
