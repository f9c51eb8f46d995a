//! Test support for the shipping sinks: a real ClickHouse server (Debian's 18.16) on loopback
//! with its own data directory and free ports, stoppable and restartable on the same data;
//! queries over its HTTP interface; nodes that stream numbered objects in rounds.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::http::http_get;
use crate::support::*;

/// The line a test fails with when ClickHouse is missing.
pub const INSTALL_CLICKHOUSE: &str =
    "clickhouse-server is not installed: apt-get install clickhouse-server (./test.sh does it as root)";

/// One ClickHouse server, killed on drop.
pub struct ClickHouse {
    pub dir: tempfile::TempDir,
    pub http_port: u16,
    child: Option<Child>,
}

impl ClickHouse {
    /// Starts a server from a copy of Debian's config with its paths and ports rewritten.
    pub fn start() -> ClickHouse {
        let binary = "/usr/sbin/clickhouse-server";
        assert!(
            std::path::Path::new(binary).exists(),
            "{INSTALL_CLICKHOUSE}"
        );
        let config =
            std::fs::read_to_string("/etc/clickhouse-server/config.xml").unwrap_or_else(|e| {
                panic!("{INSTALL_CLICKHOUSE} (/etc/clickhouse-server/config.xml: {e})")
            });
        let users = std::fs::read_to_string("/etc/clickhouse-server/users.xml")
            .unwrap_or_else(|e| panic!("{INSTALL_CLICKHOUSE} (users.xml: {e})"));
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let http_port = free_port();
        let config = config
            .replace("/var/log/clickhouse-server/", &format!("{d}/log/"))
            .replace("/var/lib/clickhouse/", &format!("{d}/data/"))
            .replace(
                "<http_port>8123</http_port>",
                &format!("<http_port>{http_port}</http_port>"),
            )
            .replace(
                "<tcp_port>9000</tcp_port>",
                &format!("<tcp_port>{}</tcp_port>", free_port()),
            )
            .replace(
                "<interserver_http_port>9009</interserver_http_port>",
                &format!(
                    "<interserver_http_port>{}</interserver_http_port>",
                    free_port()
                ),
            )
            .replace("<listen_host>::1</listen_host>", "");
        std::fs::write(dir.path().join("config.xml"), config).unwrap();
        std::fs::write(dir.path().join("users.xml"), users).unwrap();
        let mut ch = ClickHouse {
            dir,
            http_port,
            child: None,
        };
        ch.spawn();
        ch
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stdout.log"))
            .unwrap();
        let child = Command::new("/usr/sbin/clickhouse-server")
            .arg(format!(
                "--config-file={}",
                self.dir.path().join("config.xml").display()
            ))
            .current_dir(self.dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{INSTALL_CLICKHOUSE} ({e})"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.http_port)).is_ok()
                && self.query("SELECT 1").trim() == "1"
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("clickhouse-server exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "clickhouse-server did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        let mut s = std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default();
        s.push_str(
            &std::fs::read_to_string(self.dir.path().join("log/clickhouse-server.err.log"))
                .unwrap_or_default(),
        );
        s
    }

    /// Kills the server (SIGKILL: inserts in flight die with it).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The server's URL, for tracerd's config.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Runs a read-only query (GET) and returns the body; panics on a non-200 answer.
    pub fn query(&self, sql: &str) -> String {
        let encoded: String =
            percent_encoding::utf8_percent_encode(sql, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        let (status, _, body) = http_get(self.http_port, &format!("/?query={encoded}"), &[]);
        assert_eq!(status, 200, "{sql}: {body}");
        body
    }

    /// Like `query`, `None` when the server does not answer 200 (e.g. the table is missing).
    pub fn try_query(&self, sql: &str) -> Option<String> {
        let encoded: String =
            percent_encoding::utf8_percent_encode(sql, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        let path = format!("/?query={encoded}");
        let (status, _, body) = http_get(self.http_port, &path, &[]);
        (status == 200).then_some(body)
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- clickhouse log ---\n{}", self.log());
        }
        self.kill();
    }
}

/// Sends `batches` batches of `per` numbered objects as `name` over TCP, from the node's
/// persisted sequence number on (so a restarted tracerd gets what it lacks), waiting for
/// each batch's Ack. Returns the highest acknowledged sequence number.
/// `pause` is waited between two batches.
pub async fn stream_round(port: u16, name: &str, batches: u64, per: u64, pause: Duration) -> u64 {
    let framed = connect_tcp(port).await;
    let mut node = FakeNode::handshake(framed, name).await;
    let mut next = node.acked + 1;
    for _ in 0..batches {
        node.send_batch(next, per, 120).await;
        next += per;
        node.wait_ack(next - 1).await;
        tokio::time::sleep(pause).await;
    }
    node.acked
}

/// Lines of every machine file of a node directory.
pub fn machine_lines(dir: PathBuf) -> u64 {
    read_node_lines(&dir).len() as u64
}
