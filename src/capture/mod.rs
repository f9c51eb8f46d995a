//! The capture window (issue 20): a node's connection recorded for at most N seconds and M
//! bytes into `capture-<UTC>.pcapng` next to its logs.
//!
//! Pure cores: [`pcapng`] (the blocks), [`read`] (tracerd's reader), [`bpf`] (the kernel
//! filter on a connection's 4-tuple) and [`frame`] (IP/TCP headers). Shells: [`packet`] (the
//! `AF_PACKET` socket, TCP), [`unix`] (the stream wrapper, Unix sockets), `job` (the blocking
//! writer of one capture) and [`Captures`], the daemon's registry of connections, running
//! captures and the byte budget.
//!
//! How a session's connection becomes capturable: the node listener's acceptor (and the
//! Cardano dialer) wraps each stream with [`tap`] (a Unix stream in [`Recorded`]; a TCP one
//! only noted by its addresses), which files the connection's [`Wire`] under its peer name;
//! when the session claims its node name, `session::Context` calls [`Captures::attach`], which
//! files it under that name. No session signature carries it; the wire lives as long as the
//! connection (the acceptor holds it), the registry keeps only weak references.

pub mod bpf;
pub mod frame;
mod job;
pub mod packet;
pub mod pcapng;
pub mod read;
pub mod unix;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{CaptureAtStart, CaptureSettings};
use crate::logs::FileTarget;
use crate::running::Running;
use crate::sync::lock;
pub use unix::Recorded;

/// Longest capture, in seconds.
pub const MAX_SECONDS: u64 = 3600;
/// Smallest `maxBytes`: room for the file's headers and a few packets.
pub const MIN_BYTES: u64 = 1024;
/// Largest `maxBytes` of one capture.
pub const MAX_BYTES: u64 = 1 << 34;
/// `maxBytes` when the request names none.
pub const DEFAULT_MAX_BYTES: u64 = 16 << 20;
/// Captures running at once, all nodes together (each holds a blocking thread and, on a
/// Unix socket, up to [`unix::MAX_QUEUED_BYTES`] of copies).
pub const MAX_RUNNING: usize = 16;
/// Prefix of every capture file.
pub const FILE_PREFIX: &str = "capture-";
/// Extension of every capture file.
pub const FILE_EXT: &str = "pcapng";

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Why a capture was not started.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// `tracerd.capture.budgetBytes` is 0.
    #[error("captures are off (tracerd.capture.budgetBytes is 0)")]
    Off,
    /// A bad request parameter.
    #[error("{0}")]
    Params(String),
    /// The node is not connected (or its connection cannot be captured).
    #[error("node {0:?} is not connected")]
    NotConnected(String),
    /// The node's connection is being captured already.
    #[error(
        "node {node:?} is being captured already (into {file}); one capture per node at a time"
    )]
    Busy {
        /// The node.
        node: String,
        /// The running capture's file.
        file: String,
    },
    /// Too many captures run at once.
    #[error("{0} captures are running, the most at once; wait for one to end")]
    TooMany(usize),
    /// The global byte budget would be exceeded.
    #[error("capture budget exceeded: capture files on disk take {on_disk} bytes and running captures reserve {reserved}, so {requested} more would pass tracerd.capture.budgetBytes ({limit}); delete old capture-*.pcapng files or ask for fewer bytes")]
    Budget {
        /// Bytes of capture files in the node directories.
        on_disk: u64,
        /// `maxBytes` of the running captures.
        reserved: u64,
        /// This request's `maxBytes`.
        requested: u64,
        /// The budget.
        limit: u64,
    },
    /// Opening the packet socket was refused: no `CAP_NET_RAW`.
    #[error("capturing a TCP connection needs CAP_NET_RAW, which tracerd does not have ({0}); see README \"Capture window\" for the systemd drop-in that grants it")]
    NoCapability(#[source] io::Error),
    /// The connection's interface cannot be captured.
    #[error("{0}")]
    Interface(String),
    /// The packet socket failed otherwise.
    #[error("cannot open the packet socket")]
    Socket(#[source] io::Error),
    /// No `FileMode` target to write next to.
    #[error(
        "no logging target has logMode FileMode: a capture is written next to the node's log files"
    )]
    NoFileTarget,
    /// The capture file could not be created.
    #[error("cannot create {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// tracerd is not running its tasks (starting or shutting down).
    #[error("tracerd is shutting down")]
    NotRunning,
}

impl CaptureError {
    /// A bounded label for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            CaptureError::Off => "off",
            CaptureError::Params(_) => "params",
            CaptureError::NotConnected(_) => "not_connected",
            CaptureError::Busy { .. } => "busy",
            CaptureError::TooMany(_) => "too_many",
            CaptureError::Budget { .. } => "budget",
            CaptureError::NoCapability(_) => "no_capability",
            CaptureError::Interface(_) => "interface",
            CaptureError::Socket(_) => "socket",
            CaptureError::NoFileTarget => "no_file_target",
            CaptureError::Io { .. } => "io",
            CaptureError::NotRunning => "not_running",
        }
    }
}

/// What a capture records for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// At most this long.
    pub seconds: u64,
    /// At most this many bytes of file.
    pub max_bytes: u64,
}

/// The query of `POST /api/nodes/<slug>/capture`: `seconds=N` (1 – 3600, required) and
/// `maxBytes=M` (1024 – 2^34, default 16 MiB); anything else is refused. Pure.
pub fn parse_query(query: Option<&str>) -> Result<Params, CaptureError> {
    let mut seconds = None;
    let mut max_bytes = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (slot, min, max) = match k {
            "seconds" => (&mut seconds, 1, MAX_SECONDS),
            "maxBytes" => (&mut max_bytes, MIN_BYTES, MAX_BYTES),
            _ => {
                return Err(CaptureError::Params(format!(
                    "unknown parameter {:?}: the parameters are seconds=N and maxBytes=M",
                    crate::node::escape_name(k)
                )))
            }
        };
        if slot.is_some() {
            return Err(CaptureError::Params(format!("{k} is given twice")));
        }
        match v.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => *slot = Some(n),
            _ => {
                return Err(CaptureError::Params(format!(
                    "{k} must be a whole number from {min} to {max}, got {:?}",
                    crate::node::escape_name(v)
                )))
            }
        }
    }
    let seconds = seconds.ok_or_else(|| {
        CaptureError::Params(format!("seconds=N is required (1 to {MAX_SECONDS})"))
    })?;
    Ok(Params {
        seconds,
        max_bytes: max_bytes.unwrap_or(DEFAULT_MAX_BYTES),
    })
}

/// What a connection is, for capturing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A TCP connection: tracerd's address and the node's.
    Tcp {
        /// tracerd's end.
        local: SocketAddr,
        /// The node's end.
        peer: SocketAddr,
    },
    /// A Unix-socket connection, named by the socket's path.
    Unix {
        /// The path.
        path: String,
    },
    /// Addresses unknown (the socket was already closed).
    Unknown,
}

/// One connection, as captures see it.
#[derive(Debug)]
pub struct Wire {
    endpoint: Endpoint,
    armed: AtomicBool,
    recorder: Mutex<Option<unix::Recorder>>,
}

impl Wire {
    /// A wire for `endpoint`, not armed.
    pub fn new(endpoint: Endpoint) -> Wire {
        Wire {
            endpoint,
            armed: AtomicBool::new(false),
            recorder: Mutex::new(None),
        }
    }

    /// The connection.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Whether a capture records this connection's bytes (one relaxed load).
    #[inline]
    pub fn armed(&self) -> bool {
        self.armed.load(Ordering::Relaxed)
    }

    /// Starts copying reads and writes to `recorder`.
    pub fn arm(&self, recorder: unix::Recorder) {
        *lock(&self.recorder) = Some(recorder);
        self.armed.store(true, Ordering::Release);
    }

    /// Stops copying; the feed sees its channel close.
    pub fn disarm(&self) {
        self.armed.store(false, Ordering::Release);
        *lock(&self.recorder) = None;
    }

    fn record(&self, direction: pcapng::Direction, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if let Some(r) = lock(&self.recorder).as_ref() {
            r.record(direction, data);
        }
    }
}

/// A node listener's stream, as sessions are served it: TCP as is (captured by the kernel),
/// Unix through [`Recorded`].
pub type Tapped = Either<tokio::net::TcpStream, Recorded<tokio::net::UnixStream>>;

/// Makes `stream`'s connection (named `peer` in logs) capturable: the stream to serve and its
/// wire, which the caller keeps as long as the connection.
pub fn tap(stream: tracerd_wire::Stream, peer: &str, captures: &Captures) -> (Tapped, Arc<Wire>) {
    let (stream, wire) = match stream {
        Either::Left(tcp) => {
            let endpoint = match (tcp.local_addr(), tcp.peer_addr()) {
                (Ok(local), Ok(peer)) => Endpoint::Tcp { local, peer },
                _ => Endpoint::Unknown,
            };
            (Either::Left(tcp), Arc::new(Wire::new(endpoint)))
        }
        Either::Right(unix) => {
            let named = |a: io::Result<tokio::net::unix::SocketAddr>| {
                a.ok()
                    .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
            };
            let path = named(unix.local_addr())
                .or_else(|| named(unix.peer_addr()))
                .unwrap_or_else(|| "unix".to_string());
            let wire = Arc::new(Wire::new(Endpoint::Unix { path }));
            (Either::Right(Recorded::new(unix, wire.clone())), wire)
        }
    };
    captures.connected(peer, &wire);
    (stream, wire)
}

/// A capture, running or ended, as `GET /api/nodes/<slug>/capture` shows it.
#[derive(Debug)]
pub struct Progress {
    /// The node.
    pub node: String,
    /// The file.
    pub file: PathBuf,
    /// `tcp` or `unix`.
    pub kind: &'static str,
    /// The interface or socket path.
    pub interface: String,
    /// As asked.
    pub params: Params,
    /// When it started, ns since the epoch.
    pub started_ns: u64,
    /// Packets (TCP) or reads and writes (Unix) written.
    pub packets: AtomicU64,
    /// File bytes written.
    pub bytes: AtomicU64,
    /// Chunks dropped (Unix: the writer was behind).
    pub dropped: AtomicU64,
    /// How it ended, once it did.
    pub outcome: Mutex<Option<Outcome>>,
}

/// How a capture ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `seconds`, `maxBytes`, `disconnected`, `shutdown` or `error`.
    pub ended: &'static str,
    /// The error, for `error`.
    pub error: Option<String>,
    /// When, ns since the epoch.
    pub ended_ns: u64,
}

impl Progress {
    fn running(&self) -> bool {
        lock(&self.outcome).is_none()
    }

    /// The JSON of the capture.
    pub fn to_json(&self) -> Value {
        let ts = |ns: u64| {
            let mut s = String::new();
            crate::utc::push_rfc3339_nanos(&mut s, i64::try_from(ns).unwrap_or(i64::MAX));
            s
        };
        let outcome = lock(&self.outcome).clone();
        let mut v = json!({
            "node": self.node,
            "file": self.file.display().to_string(),
            "kind": self.kind,
            "interface": self.interface,
            "seconds": self.params.seconds,
            "maxBytes": self.params.max_bytes,
            "startedAt": ts(self.started_ns),
            "endsBy": ts(self.started_ns.saturating_add(self.params.seconds * 1_000_000_000)),
            "state": if outcome.is_some() { "done" } else { "running" },
            "packets": self.packets.load(Ordering::Relaxed),
            "bytes": self.bytes.load(Ordering::Relaxed),
            "dropped": self.dropped.load(Ordering::Relaxed),
        });
        if let Some(o) = outcome {
            v["ended"] = json!(o.ended);
            v["endedAt"] = json!(ts(o.ended_ns));
            if let Some(e) = o.error {
                v["error"] = json!(e);
            }
        }
        v
    }
}

/// The daemon's captures: every connected node's wire, each node's latest capture, the byte
/// budget, the configured captures at start.
#[derive(Debug)]
pub struct Captures {
    budget_bytes: u64,
    running: Running,
    peers: Mutex<HashMap<String, Weak<Wire>>>,
    wires: Mutex<HashMap<String, Weak<Wire>>>,
    latest: Mutex<HashMap<String, Arc<Progress>>>,
    at_start: Mutex<Vec<CaptureAtStart>>,
    tasks: OnceLock<(TaskTracker, CancellationToken)>,
}

impl Captures {
    /// Captures under `settings`, writing next to the log files of `running`'s targets.
    pub fn new(settings: &CaptureSettings, running: Running) -> Captures {
        Captures {
            budget_bytes: settings.budget_bytes,
            running,
            peers: Mutex::default(),
            wires: Mutex::default(),
            latest: Mutex::default(),
            at_start: Mutex::new(settings.at_start.clone()),
            tasks: OnceLock::new(),
        }
    }

    /// Lets captures run: each on `tracker`'s blocking pool, stopped by `cancel`.
    pub fn start_tasks(&self, tracker: TaskTracker, cancel: CancellationToken) {
        let _ = self.tasks.set((tracker, cancel));
    }

    /// Files a new connection's wire under its peer name, until its session names the node.
    fn connected(&self, peer: &str, wire: &Arc<Wire>) {
        let mut peers = lock(&self.peers);
        // Connections refused before a name was claimed leave dead entries: swept now and then.
        if peers.len() >= 64 && peers.len().is_power_of_two() {
            peers.retain(|_, w| w.strong_count() > 0);
        }
        peers.insert(peer.to_string(), Arc::downgrade(wire));
    }

    /// The session of `peer` claimed node name `name`: its connection is captured under that
    /// name from now on; a `tracerd.capture.atStart` capture waiting for the node starts.
    /// Never blocks.
    pub fn attach(self: &Arc<Self>, peer: &str, name: &str) {
        let Some(wire) = lock(&self.peers).remove(peer).and_then(|w| w.upgrade()) else {
            return;
        };
        // Keyed by name: at most one entry per name ever claimed, the newest connection's.
        lock(&self.wires).insert(name.to_string(), Arc::downgrade(&wire));
        let wire = &wire;
        let entry = {
            let mut pending = lock(&self.at_start);
            let i = pending.iter().position(|e| e.node == name);
            i.map(|i| pending.remove(i))
        };
        if let Some(e) = entry {
            let params = Params {
                seconds: e.seconds,
                max_bytes: e.max_bytes,
            };
            let Some((tracker, _)) = self.tasks.get() else {
                return;
            };
            // A Unix connection is recorded from here on (its handshake answer included):
            // copies queue until the writer has its file.
            let armed = matches!(wire.endpoint(), Endpoint::Unix { .. }).then(|| {
                let (recorder, feed) = unix::channel();
                wire.arm(recorder);
                feed
            });
            let (me, name, wire) = (self.clone(), name.to_string(), wire.clone());
            // Opening the socket and the file is blocking work.
            tracker.spawn_blocking(move || match me.start_wire(&name, &wire, params, armed) {
                Ok(p) => {
                    tracing::info!(node = %name, file = %p.file.display(), seconds = params.seconds,
                    max_bytes = params.max_bytes, "capture started (tracerd.capture.atStart)")
                }
                Err(e) => tracing::error!(node = %name, error = %crate::errors::error_chain(&e),
                    "tracerd.capture.atStart: capture not started"),
            });
        }
    }

    /// The latest capture of node `name`, running or ended.
    pub fn latest(&self, name: &str) -> Option<Arc<Progress>> {
        lock(&self.latest).get(name).cloned()
    }

    /// Starts capturing node `name`'s connection. Blocking (opens a socket and a file).
    pub fn start(&self, name: &str, params: Params) -> Result<Arc<Progress>, CaptureError> {
        let wire = lock(&self.wires)
            .get(name)
            .and_then(Weak::upgrade)
            .ok_or_else(|| CaptureError::NotConnected(name.to_string()))?;
        self.start_wire(name, &wire, params, None)
    }

    /// Starts capturing `wire`; `armed`: the feed of a Unix wire armed already. A refused
    /// capture leaves the wire unarmed.
    fn start_wire(
        &self,
        name: &str,
        wire: &Arc<Wire>,
        params: Params,
        armed: Option<unix::Feed>,
    ) -> Result<Arc<Progress>, CaptureError> {
        let pre_armed = armed.is_some();
        let r = self.start_checked(name, wire, params, armed);
        if r.is_err() && pre_armed {
            wire.disarm();
        }
        r
    }

    fn start_checked(
        &self,
        name: &str,
        wire: &Arc<Wire>,
        params: Params,
        armed: Option<unix::Feed>,
    ) -> Result<Arc<Progress>, CaptureError> {
        if self.budget_bytes == 0 {
            return Err(CaptureError::Off);
        }
        let (tracker, cancel) = self.tasks.get().ok_or(CaptureError::NotRunning)?;
        if cancel.is_cancelled() {
            return Err(CaptureError::NotRunning);
        }
        if params.max_bytes > self.budget_bytes {
            return Err(CaptureError::Params(format!(
                "maxBytes {} is more than tracerd.capture.budgetBytes ({})",
                params.max_bytes, self.budget_bytes
            )));
        }
        let targets = self.running.current().logs.targets.clone();
        let target = targets.first().ok_or(CaptureError::NoFileTarget)?;
        let dir = target.root.join(name);
        // Held from the checks to the insertion: two requests cannot both pass them.
        let mut latest = lock(&self.latest);
        let running: Vec<&Arc<Progress>> = latest.values().filter(|p| p.running()).collect();
        if let Some(p) = latest.get(name).filter(|p| p.running()) {
            return Err(CaptureError::Busy {
                node: name.to_string(),
                file: p.file.display().to_string(),
            });
        }
        if running.len() >= MAX_RUNNING {
            return Err(CaptureError::TooMany(running.len()));
        }
        let reserved: u64 = running.iter().map(|p| p.params.max_bytes).sum();
        let skip: Vec<&Path> = running.iter().map(|p| p.file.as_path()).collect();
        let on_disk = files_on_disk(&targets, &skip);
        if on_disk + reserved + params.max_bytes > self.budget_bytes {
            return Err(CaptureError::Budget {
                on_disk,
                reserved,
                requested: params.max_bytes,
                limit: self.budget_bytes,
            });
        }
        let (source, kind, interface, recorder) = match wire.endpoint() {
            Endpoint::Tcp { local, peer } => {
                let socket = packet::open(*local, *peer)?;
                let interface = socket.interface.clone();
                let source = job::Source::Packet(socket, bpf::canonical(*local));
                (source, "tcp", interface, None)
            }
            Endpoint::Unix { path } => {
                let (feed, recorder) = match armed {
                    Some(feed) => (feed, None),
                    None => {
                        let (recorder, feed) = unix::channel();
                        (feed, Some(recorder))
                    }
                };
                (job::Source::Unix(feed), "unix", path.clone(), recorder)
            }
            Endpoint::Unknown => return Err(CaptureError::NotConnected(name.to_string())),
        };
        let (file, path) = create_file(&dir)?;
        let progress = Arc::new(Progress {
            node: name.to_string(),
            file: path,
            kind,
            interface,
            params,
            started_ns: now_ns(),
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            outcome: Mutex::new(None),
        });
        latest.insert(name.to_string(), progress.clone());
        drop(latest);
        let job = job::Job {
            source,
            file,
            progress: progress.clone(),
            deadline: Instant::now() + Duration::from_secs(params.seconds),
            cancel: cancel.child_token(),
            wire: Arc::downgrade(wire),
        };
        if let Some(r) = recorder {
            wire.arm(r);
        }
        tracker.spawn_blocking(move || job.run());
        Ok(progress)
    }
}

/// Bytes of every `capture-*.pcapng` regular file in the node directories of `targets`,
/// but those in `skip`. Directories only, no symlink followed.
fn files_on_disk(targets: &[FileTarget], skip: &[&Path]) -> u64 {
    let mut total = 0u64;
    for t in targets {
        let Ok(nodes) = std::fs::read_dir(&t.root) else {
            continue;
        };
        for node in nodes.flatten() {
            if !node.file_type().is_ok_and(|f| f.is_dir()) {
                continue;
            }
            let Ok(files) = std::fs::read_dir(node.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name();
                let Some(name) = name.to_str() else { continue };
                if !is_capture_name(name) || skip.contains(&f.path().as_path()) {
                    continue;
                }
                // `DirEntry::metadata` does not follow a symlink.
                if let Some(m) = f.metadata().ok().filter(|m| m.is_file()) {
                    total = total.saturating_add(m.len());
                }
            }
        }
    }
    total
}

/// Whether `name` is a capture file's name.
pub fn is_capture_name(name: &str) -> bool {
    name.starts_with(FILE_PREFIX) && name.ends_with(&format!(".{FILE_EXT}"))
}

/// Creates `capture-<UTC>.pcapng` in node directory `dir` (a real directory, not a symlink),
/// never replacing a file: `capture-<UTC>_000001.pcapng` and so on for the same second.
fn create_file(dir: &Path) -> Result<(std::fs::File, PathBuf), CaptureError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io_err = |path: &Path, source| CaptureError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(io_err(
                dir,
                io::Error::other("the node directory is not a directory"),
            ))
        }
        Err(e) => return Err(io_err(dir, e)),
    }
    let stamp = crate::utc::file_stamp(crate::utc::now_unix());
    for n in 0..1000u32 {
        let name = if n == 0 {
            format!("{FILE_PREFIX}{stamp}.{FILE_EXT}")
        } else {
            format!("{FILE_PREFIX}{stamp}_{n:06}.{FILE_EXT}")
        };
        let path = dir.join(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(&path, e)),
        }
    }
    Err(io_err(
        dir,
        io::Error::other("a thousand capture files of this second exist"),
    ))
}

/// Reads a capture file and describes it one packet a line (`tracerd capture read FILE`).
pub fn describe_file(path: &Path) -> anyhow::Result<String> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let capture = read::read(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(read::describe(&capture))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_checked_whole() {
        assert_eq!(
            parse_query(Some("seconds=2&maxBytes=4096")).unwrap(),
            Params {
                seconds: 2,
                max_bytes: 4096
            }
        );
        assert_eq!(
            parse_query(Some("seconds=5")).unwrap().max_bytes,
            DEFAULT_MAX_BYTES
        );
        for bad in [
            None,
            Some(""),
            Some("seconds=0"),
            Some("seconds=3601"),
            Some("seconds=1.5"),
            Some("seconds=-1"),
            Some("seconds=2&maxBytes=10"),
            Some("seconds=2&maxBytes=99999999999999999999"),
            Some("seconds=2&seconds=3"),
            Some("seconds=2&fast=1"),
            Some("maxBytes=4096"),
        ] {
            assert!(
                matches!(parse_query(bad), Err(CaptureError::Params(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn capture_files_are_named_and_counted_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("n1");
        std::fs::create_dir(&node).unwrap();
        let (_, a) = create_file(&node).unwrap();
        let (_, b) = create_file(&node).unwrap();
        assert_ne!(a, b);
        assert!(is_capture_name(a.file_name().unwrap().to_str().unwrap()));
        std::fs::write(&a, [0u8; 100]).unwrap();
        std::fs::write(&b, [0u8; 50]).unwrap();
        std::fs::write(node.join("node-2026-01-01T00-00-00.json"), [0u8; 999]).unwrap();
        let targets = [FileTarget {
            root: dir.path().to_path_buf(),
            format: crate::config::LogFormat::ForMachine,
        }];
        assert_eq!(files_on_disk(&targets, &[]), 150);
        assert_eq!(files_on_disk(&targets, &[b.as_path()]), 100);
        // A symlinked node directory is refused.
        std::os::unix::fs::symlink(&node, dir.path().join("evil")).unwrap();
        assert!(create_file(&dir.path().join("evil")).is_err());
    }
}
