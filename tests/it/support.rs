//! Test support: run the real `tracerd` binary on a temporary directory, and a fake node that
//! speaks the native protocol over real sockets.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;
use tracerd::model::{DetailLevel, Severity, TraceBatch, TraceObject};
use tracerd::native::{ForwarderCodec, Hello, NodeMessage, Software, TracerMessage};

pub const MAGIC: u32 = 764_824_073;

/// A running tracerd process with its own directory.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub tcp_port: u16,
    /// The `NOTIFY_SOCKET` the running process says `READY=1` on (kept open while it runs,
    /// so its later `STATUS=` lines have somewhere to go).
    notify: Option<std::os::unix::net::UnixDatagram>,
}

/// How long a wait for a state tracerd reaches on its own may take (a log line, a body, a
/// metric, lines on disk). Generous, since a wait ends as soon as the state holds: a loaded
/// 2-core machine running a whole suite of debug tracerds made waits of 15-20 s fail.
pub const WAIT: Duration = Duration::from_secs(90);

/// A TCP port nothing listens on now, never handed out before by this process (two tests
/// running side by side must not be given the same port after the first released it), and
/// below the kernel's ephemeral range (`ip_local_port_range`), so no outgoing connection —
/// of this suite or anything else on the machine — can take it while its daemon is down
/// between a kill and a restart (bind then fails with EADDRINUSE).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    static STATE: AtomicU64 = AtomicU64::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    // Below the ephemeral range: [low / 2, low) (16384-32767 by default).
    let (from, span) = (u64::from(low / 2), u64::from(low - low / 2));
    if from < 1024 {
        // An unusual range: the kernel's choice, as before.
        return std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
    }
    if STATE.load(Ordering::Relaxed) == 0 {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            ^ (u64::from(std::process::id()) << 32);
        let _ = STATE.compare_exchange(0, seed | 1, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..100_000 {
        // xorshift64: a pseudo-random candidate (the suite needs no better).
        let x = STATE
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |mut x| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                Some(x)
            })
            .unwrap();
        let port = (from + x % span) as u16;
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.contains(&port) {
            continue;
        }
        // Free now on loopback (and on every address, for listeners on 0.0.0.0).
        let free = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("0.0.0.0", port)).is_ok();
        if free {
            given.push(port);
            return port;
        }
    }
    panic!("no free TCP port in {from}..{}", from + span);
}

impl Daemon {
    /// Starts tracerd with `extra` YAML appended to a config that listens on `<dir>/t.sock`
    /// and a free TCP port and logs machine JSON under `<dir>/logs`.
    pub fn start(extra: &str) -> Daemon {
        Daemon::start_with(|_, _| String::new(), extra)
    }

    /// Like `start`, with `head(dir, port)` replacing the default logging section.
    pub fn start_with(head: impl Fn(&Path, u16) -> String, extra: &str) -> Daemon {
        let mut d = Daemon::configure(head, extra);
        d.spawn();
        d
    }

    /// Writes the config of `start_with` without starting the process.
    pub fn configure(head: impl Fn(&Path, u16) -> String, extra: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = head(dir.path(), port);
        if config.is_empty() {
            config = format!(
                "networkMagic: {MAGIC}\nlogging:\n  - logRoot: {}\n    logMode: FileMode\n    logFormat: ForMachine\n",
                dir.path().join("logs").display()
            );
        }
        config.push_str(&format!(
            "tracerd:\n  native:\n    acceptAt: [\"{}\", \"127.0.0.1:{port}\"]\n",
            dir.path().join("t.sock").display()
        ));
        config.push_str(extra);
        if !config.contains("networkMagic") {
            config.push_str(&format!("networkMagic: {MAGIC}\n"));
        }
        if !config.contains("network:") {
            // A config file must name `network` (as cardano-tracer's does); these tests
            // need no Cardano listener unless they say so.
            config.push_str("network: null\n");
        }
        if !config.contains("hasPrometheus") {
            // HTTP is on by default (127.0.0.1:12808); tests running in parallel must not
            // share that port.
            config.push_str("hasPrometheus: null\n");
        }
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, config).unwrap();
        Daemon {
            dir,
            child: None,
            tcp_port: port,
            notify: None,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("t.sock")
    }

    pub fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// The command that runs tracerd on this daemon's config, stdout discarded.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tracerd"));
        cmd.arg("-c").arg(self.config_path()).stdout(Stdio::null());
        cmd
    }

    /// (Re)starts the process and waits until the TCP listener accepts.
    pub fn spawn(&mut self) {
        let cmd = self.command();
        self.spawn_command(cmd);
    }

    /// Starts `cmd` (in the daemon's directory, stderr to `stderr.log`) and waits until it is
    /// ready: it said `READY=1` on a `NOTIFY_SOCKET` of this test's (unless `cmd` brings its
    /// own), which tracerd does once every listener — node, HTTP, history — is bound, and
    /// its TCP listener accepts. (A connection to the node listener alone returns before the
    /// HTTP listeners are bound.)
    pub fn spawn_command(&mut self, mut cmd: Command) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stderr.log"))
            .unwrap();
        self.notify = None;
        let own = cmd.get_envs().any(|(k, _)| k == "NOTIFY_SOCKET");
        if !own {
            let path = self.dir.path().join("ready.sock");
            let _ = std::fs::remove_file(&path);
            let rx = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
            rx.set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            cmd.env("NOTIFY_SOCKET", &path);
            self.notify = Some(rx);
        }
        let child = cmd
            .current_dir(self.dir.path())
            .stderr(stderr)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut ready = own;
        let mut buf = [0u8; 512];
        while !ready || std::net::TcpStream::connect(("127.0.0.1", self.tcp_port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("tracerd exited early with {status}: {}", self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "tracerd was not ready within 60 s (READY=1 {}, TCP port {} {}): {}",
                if ready { "received" } else { "not received" },
                self.tcp_port,
                if ready { "refused" } else { "not tried" },
                self.stderr()
            );
            match self.notify.as_ref() {
                Some(rx) if !ready => {
                    if let Ok(n) = rx.recv(&mut buf) {
                        ready = buf[..n].split(|b| *b == b'\n').any(|l| l == b"READY=1");
                    }
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Writes the config file (for a reload).
    pub fn write_config(&self, text: &str) {
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// Waits (bounded by [`WAIT`]) until stderr contains `needle` `count` times.
    pub fn wait_log(&self, needle: &str, count: usize) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.stderr();
            if text.matches(needle).count() >= count {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} did not appear {count} time(s) in:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id();
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// kill -9, waits for the exit and starts the process again (off the runtime): what a
    /// crash and a systemd restart do.
    pub async fn crash_and_restart(mut self) -> Daemon {
        self.signal("KILL");
        self.wait(Duration::from_secs(10));
        tokio::task::spawn_blocking(move || {
            self.spawn();
            self
        })
        .await
        .unwrap()
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "tracerd did not exit: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- tracerd stderr ---\n{}", self.stderr());
        }
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn hello(name: &str) -> NodeMessage {
    NodeMessage::Hello(Box::new(Hello {
        versions: vec![1],
        network_magic: MAGIC,
        node_name: name.to_string(),
        software: Software {
            name: "it".into(),
            version: "0".into(),
            commit: String::new(),
        },
        capabilities: Vec::new(),
        token: String::new(),
        tracers: Vec::new(),
    }))
}

/// A trace object whose machine JSON carries the node and its sequence number.
pub fn object(node: &str, seq: u64, pad: usize) -> TraceObject {
    TraceObject {
        namespace: "Test.Stream".into(),
        severity: Severity::Info,
        detail: DetailLevel::Normal,
        timestamp_ns: 1_784_714_812_000_000_000 + seq as i64,
        hostname: "host".into(),
        thread_id: "7".into(),
        machine: format!(
            "{{\"node\":\"{node}\",\"seq\":{seq},\"pad\":\"{}\"}}",
            "x".repeat(pad)
        )
        .into(),
        human: Some(format!("node {node} seq {seq}").into()),
        form: Default::default(),
    }
}

/// A native-protocol client.
pub struct FakeNode<S> {
    pub framed: Framed<S, ForwarderCodec>,
    pub name: String,
    pub acked: u64,
}

pub async fn connect_tcp(port: u16) -> Framed<tokio::net::TcpStream, ForwarderCodec> {
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    Framed::new(s, ForwarderCodec::new(16 << 20))
}

pub async fn connect_unix(path: &Path) -> Framed<tokio::net::UnixStream, ForwarderCodec> {
    let s = tokio::net::UnixStream::connect(path).await.unwrap();
    Framed::new(s, ForwarderCodec::new(16 << 20))
}

impl<S: AsyncRead + AsyncWrite + Unpin> FakeNode<S> {
    /// Handshakes as `name`; panics on refusal.
    pub async fn handshake(mut framed: Framed<S, ForwarderCodec>, name: &str) -> FakeNode<S> {
        framed.send(hello(name)).await.unwrap();
        match recv(&mut framed).await {
            Some(TracerMessage::Accept {
                node_name,
                persisted_seq,
                ..
            }) => FakeNode {
                framed,
                name: node_name,
                acked: persisted_seq,
            },
            other => panic!("expected Accept, got {other:?}"),
        }
    }

    pub async fn send_batch(&mut self, first_seq: u64, n: u64, pad: usize) {
        let objects = (first_seq..first_seq + n)
            .map(|s| object(&self.name, s, pad))
            .collect();
        self.framed
            .send(NodeMessage::Traces(TraceBatch { first_seq, objects }))
            .await
            .unwrap();
    }

    /// Reads until an Ack covers `seq` (bounded wait).
    pub async fn wait_ack(&mut self, seq: u64) {
        while self.acked < seq {
            match recv(&mut self.framed).await {
                Some(TracerMessage::Ack(n)) => self.acked = n,
                Some(TracerMessage::Ping(n)) => {
                    self.framed.send(NodeMessage::Pong(n)).await.unwrap()
                }
                Some(_) => {}
                None => panic!(
                    "connection closed while waiting for ack {seq} (acked {})",
                    self.acked
                ),
            }
        }
    }
}

/// Receives one message, bounded by 30 s.
pub async fn recv<S: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<S, ForwarderCodec>,
) -> Option<TracerMessage> {
    match tokio::time::timeout(Duration::from_secs(30), framed.next()).await {
        Ok(Some(Ok(m))) => Some(m),
        Ok(Some(Err(e))) => panic!("decode error: {e}"),
        Ok(None) => None,
        Err(_) => panic!("timed out waiting for a message"),
    }
}

/// Every line of every `node-*.json` file of `dir`, oldest file first, checking that each file
/// ends on a line boundary and does not start with an empty line.
pub fn read_node_lines(dir: &Path) -> Vec<serde_json::Value> {
    let mut keys = tracerd::logs::dir::list_keys(dir, "json").unwrap();
    keys.sort();
    let mut out = Vec::new();
    for k in keys {
        let path = dir.join(k.file_name("json"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{path:?} does not end with a newline"
        );
        assert!(
            !text.starts_with('\n'),
            "{path:?} starts with an empty line"
        );
        push_lines(&path, &text, &mut out);
    }
    out
}

/// Parses every line of `text` (read from `path`) onto `out`.
fn push_lines(path: &Path, text: &str, out: &mut Vec<serde_json::Value>) {
    for line in text.lines() {
        out.push(
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{path:?}: bad line {line:?}: {e}")),
        );
    }
}

/// What [`read_node_lines`] would return once the daemon's writes in progress end: for polling
/// a node's directory while tracerd writes it. The newest file's unfinished last line (a
/// write reaches the file in pieces) and a file retention deleted between the listing and
/// the read are left out; every other file must end on a line boundary.
pub fn read_complete_node_lines(dir: &Path) -> Vec<serde_json::Value> {
    let Ok(mut keys) = tracerd::logs::dir::list_keys(dir, "json") else {
        return Vec::new();
    };
    keys.sort();
    let mut out = Vec::new();
    let newest = keys.len().saturating_sub(1);
    for (i, k) in keys.into_iter().enumerate() {
        let path = dir.join(k.file_name("json"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let complete = match text.rfind('\n') {
            Some(end) => &text[..=end],
            None => "",
        };
        assert!(
            i == newest || complete.len() == text.len(),
            "{path:?} does not end with a newline, and a newer file exists"
        );
        push_lines(&path, complete, &mut out);
    }
    out
}

/// The sequence numbers found in a node's directory, in file order.
pub fn seqs(dir: &Path) -> Vec<u64> {
    read_node_lines(dir)
        .iter()
        .map(|v| v["data"]["seq"].as_u64().unwrap())
        .collect()
}

/// Re-runs the `#[ignore]`d test `inner` of this binary alone in a network namespace of its
/// own, after the shell commands `setup` ran in it (e.g. `ip link set lo up`), with `envs` set;
/// panics with its output unless it ran and passed. The caller probes first whether a
/// namespace can be made here (root or CAP_SYS_ADMIN, `unshare`, `ip`, `tc`).
pub fn run_ignored_in_netns(inner: &str, setup: &str, envs: &[(&str, String)]) {
    let script =
        format!("{setup} && exec \"$0\" --exact \"$1\" --ignored --nocapture --test-threads=1");
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .arg(std::env::current_exe().unwrap())
        .arg(inner)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{inner} failed:\n{text}");
    assert!(text.contains("1 passed"), "{inner} did not run:\n{text}");
}
