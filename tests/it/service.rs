//! Running as a service: systemd notifications and watchdog on a `NOTIFY_SOCKET` the test
//! owns, socket activation with `LISTEN_FDS`, SIGHUP reload (applied, rejected, needing a
//! restart) without dropping a connection, the config event round trip, socket permissions.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// Receives notification datagrams until one contains `needle` (bounded).
fn expect_notification(rx: &UnixDatagram, needle: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = rx.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push(text.clone());
            if text.lines().any(|l| l.starts_with(needle)) {
                return;
            }
        }
    }
    panic!("no {needle:?} notification; got {seen:?}");
}

#[test]
fn notifies_ready_status_watchdog_and_stopping() {
    let mut d = Daemon::configure(|_, _| String::new(), "");
    let path = d.dir.path().join("notify.sock");
    let rx = UnixDatagram::bind(&path).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut cmd = d.command();
    cmd.env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000");
    d.spawn_command(cmd);
    let mut seen = Vec::new();
    expect_notification(&rx, "READY=1", &mut seen);
    assert!(
        seen.last().unwrap().contains("STATUS=0 node(s) connected"),
        "{seen:?}"
    );
    // Pinged at half the 200 ms period: several pings within a second.
    for _ in 0..3 {
        expect_notification(&rx, "WATCHDOG=1", &mut seen);
    }
    d.signal("TERM");
    expect_notification(&rx, "STOPPING=1", &mut seen);
    assert_eq!(d.wait(Duration::from_secs(20)).code(), Some(0));
}

fn rotation(limit: u64) -> String {
    format!("rotation: {{ rpLogLimitBytes: {limit}, rpKeepFilesNum: 1000, rpMaxAgeHours: 24 }}\n")
}

fn max_file_len(dir: &std::path::Path, skip: usize) -> (usize, u64) {
    let mut keys = tracerd::logs::dir::list_keys(dir, "json").unwrap();
    keys.sort();
    let lens: Vec<u64> = keys
        .iter()
        .skip(skip)
        .map(|k| {
            std::fs::metadata(dir.join(k.file_name("json")))
                .unwrap()
                .len()
        })
        .collect();
    (keys.len(), lens.into_iter().max().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_rotation_live_and_rejects_a_broken_config_whole() {
    let mut d = Daemon::start(&rotation(1_000_000));
    let original = std::fs::read_to_string(d.config_path()).unwrap();
    let mut n = FakeNode::handshake(connect_unix(&d.socket()).await, "hup").await;
    n.send_batch(1, 50, 100).await;
    n.wait_ack(50).await;
    let dir = d.logs().join("hup");
    let (files_before, _) = max_file_len(&dir, 0);
    assert_eq!(files_before, 1);

    // A smaller limit and a restart-only key: the limit applies to the open connection.
    d.write_config(
        &original
            .replace(&rotation(1_000_000), &rotation(2_000))
            .replacen(&format!("networkMagic: {MAGIC}"), "networkMagic: 42", 1),
    );
    d.signal("HUP");
    let log = d.wait_log("config reloaded", 1);
    assert!(log.contains("key=rotation.rpLogLimitBytes"), "{log}");
    assert!(
        log.contains("key=networkMagic") && log.contains("needs a restart"),
        "{log}"
    );
    n.send_batch(51, 100, 100).await;
    n.wait_ack(150).await;
    let (files_after, largest_new) = max_file_len(&dir, 1);
    assert!(files_after > 3, "{files_after} files");
    assert!(largest_new <= 2_000, "a new file has {largest_new} bytes");

    // A broken file: every problem logged, nothing applied, the old limit stays.
    d.write_config(&format!(
        "{}rotaton: {{}}\ntracerd:\n  limits: {{ queueBatches: 0 }}\n",
        rotation(0)
    ));
    d.signal("HUP");
    let log = d.wait_log("config reload rejected", 1);
    for needle in [
        "rotaton: unknown key",
        "rotation.rpLogLimitBytes: `rpLogLimitBytes` must be an integer from 1",
    ] {
        assert!(log.contains(needle), "missing {needle:?}:\n{log}");
    }
    n.send_batch(151, 100, 100).await;
    n.wait_ack(250).await;
    let (_, largest) = max_file_len(&dir, 1);
    assert!(largest <= 2_000, "{largest}");
    // The magic was kept (restart-only): a node with the old magic still connects.
    let mut m = FakeNode::handshake(connect_tcp(d.tcp_port).await, "hup-2").await;
    m.send_batch(1, 1, 0).await;
    m.wait_ack(1).await;
    assert_eq!(seqs(&dir), (1..=250).collect::<Vec<_>>());

    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(20)).code(), Some(0));
}

/// The `config` field of every "effective config" event in JSON log lines.
fn config_events(stderr: &str) -> Vec<(String, String)> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "effective config")
        .map(|v| {
            (
                v["fields"]["reason"].as_str().unwrap().to_string(),
                v["fields"]["config"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn print_config(dir: &std::path::Path, config: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tracerd"))
        .arg("print-config")
        .arg("-c")
        .arg(config)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_config_event_is_json_that_round_trips_at_start_and_after_reload() {
    let mut d = Daemon::configure(|_, _| String::new(), &rotation(5_000));
    let mut cmd = d.command();
    cmd.args(["--log-format", "json"]);
    d.spawn_command(cmd);
    d.wait_log("effective config", 1);
    let original = std::fs::read_to_string(d.config_path()).unwrap();
    d.write_config(&original.replace(&rotation(5_000), &rotation(7_000)));
    d.signal("HUP");
    d.wait_log("effective config", 2);
    let events = config_events(&d.stderr());
    assert_eq!(
        events.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        vec!["start", "reload"]
    );
    // Every line of the JSON log is JSON.
    for line in d.stderr().lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
    let saved = d.dir.path().join("from-event.json");
    std::fs::write(&saved, &events[0].1).unwrap();
    std::fs::write(d.dir.path().join("original.yaml"), &original).unwrap();
    assert_eq!(
        print_config(d.dir.path(), &saved),
        print_config(d.dir.path(), &d.dir.path().join("original.yaml"))
    );
    std::fs::write(&saved, &events[1].1).unwrap();
    assert_eq!(
        print_config(d.dir.path(), &saved),
        print_config(d.dir.path(), &d.config_path())
    );
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(20)).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_activation_serves_the_passed_sockets_and_leaves_their_files() {
    let mut d = Daemon::configure(|_, _| String::new(), "");
    let unix = std::os::unix::net::UnixListener::bind(d.socket()).unwrap();
    let tcp = std::net::TcpListener::bind(("127.0.0.1", d.tcp_port)).unwrap();
    // As systemd does: the sockets at fds 3 and 4, LISTEN_PID the service's pid. The shell
    // moves them there from stdin and stdout, then becomes tracerd.
    let tracerd = d.command().get_program().to_owned();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(
            "exec 3<&0 4>&1 0</dev/null 1>/dev/null; LISTEN_PID=$$ LISTEN_FDS=2 exec \"$0\" \"$@\"",
        )
        .arg(tracerd)
        .arg("-c")
        .arg(d.config_path())
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(unix)))
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(tcp)));
    d.spawn_command(cmd);
    let mut n = FakeNode::handshake(connect_unix(&d.socket()).await, "activated").await;
    n.send_batch(1, 3, 0).await;
    n.wait_ack(3).await;
    let mut m = FakeNode::handshake(connect_tcp(d.tcp_port).await, "activated-tcp").await;
    m.send_batch(1, 1, 0).await;
    m.wait_ack(1).await;
    let log = d.wait_log("using the socket passed by systemd", 2);
    assert!(!log.contains("removing stale socket"), "{log}");
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(20)).code(), Some(0));
    assert!(
        d.socket().exists(),
        "an activated socket's file belongs to the service manager"
    );
}

#[test]
fn an_activated_socket_no_listener_wants_is_a_startup_failure() {
    let d = Daemon::configure(|_, _| String::new(), "");
    let stray = std::os::unix::net::UnixListener::bind(d.dir.path().join("stray.sock")).unwrap();
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg("exec 3<&0 0</dev/null; LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_tracerd"))
        .arg("-c")
        .arg(d.config_path())
        .current_dir(d.dir.path())
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(stray)))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("stray.sock matches no listener"), "{err}");
}

#[test]
fn unix_sockets_get_the_configured_mode_and_group() {
    let gid = std::fs::metadata(std::env::temp_dir()).unwrap().gid();
    let mut d = Daemon::start(&format!(
        "  unixSocket: {{ mode: \"0620\", group: \"{gid}\" }}\n"
    ));
    let meta = std::fs::metadata(d.socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o620);
    assert_eq!(meta.gid(), gid);
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(20)).code(), Some(0));
}

#[test]
fn deploy_units_pass_systemd_analyze_verify() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        panic!(
            "systemd-analyze is not installed: apt-get install systemd (./test.sh does it as root)"
        );
    };
    assert!(version.status.success());
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let tmp = tempfile::tempdir().unwrap();
    for unit in ["tracerd.service", "tracerd.socket"] {
        let text = std::fs::read_to_string(deploy.join(unit))
            .unwrap()
            .replace("/usr/local/bin/tracerd", env!("CARGO_BIN_EXE_tracerd"));
        std::fs::write(tmp.path().join(unit), text).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(tmp.path().join("tracerd.service"))
        .arg(tmp.path().join("tracerd.socket"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // The config the unit points at is valid.
    let out = Command::new(env!("CARGO_BIN_EXE_tracerd"))
        .args(["validate", "-c"])
        .arg(deploy.join("tracerd.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn the_dashboard_uses_only_metrics_tracerd_defines_and_the_scrape_config_is_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard = std::fs::read_to_string(root.join("deploy/grafana-tracerd.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    assert!(!parsed["panels"].as_array().unwrap().is_empty());
    let mut sources = String::new();
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                sources.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
    }
    let mut checked = 0;
    for (i, _) in dashboard.match_indices("tracerd_") {
        let name: String = dashboard[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        let base = name.strip_suffix("_bucket").unwrap_or(&name).to_string();
        assert!(
            sources.contains(&format!("\"{base}\"")),
            "the dashboard uses {name}, which no source file defines"
        );
        checked += 1;
    }
    assert!(checked > 10);
    match Command::new("promtool")
        .args(["check", "config"])
        .arg(root.join("deploy/prometheus.yml"))
        .output()
    {
        Ok(out) => assert!(out.status.success(), "{out:?}"),
        Err(_) => panic!(
            "promtool is not installed: apt-get install prometheus (./test.sh does it as root)"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_mode_sends_cardano_tracers_fields_to_the_journal_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let journal = tmp.path().join("journal.sock");
    let rx = UnixDatagram::bind(&journal).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = |dir: &std::path::Path, _| {
        format!(
            "networkMagic: {MAGIC}\nlogging:\n  - {{ logRoot: {}, logMode: FileMode, logFormat: ForMachine }}\n  - {{ logRoot: unused, logMode: JournalMode, logFormat: ForHuman }}\n",
            dir.join("logs").display()
        )
    };
    let mut d = Daemon::start_with(
        head,
        &format!("  journal: {{ socket: {} }}\n", journal.display()),
    );
    let mut n = FakeNode::handshake(connect_unix(&d.socket()).await, "relay-j").await;
    n.send_batch(1, 3, 0).await;
    n.wait_ack(3).await;
    let mut buf = vec![0u8; 65536];
    for seq in 1..=3u64 {
        let len = rx.recv(&mut buf).unwrap();
        let fields = tracerd::logs::journal::decode_entry(&buf[..len]).unwrap();
        let get = |k: &str| {
            fields
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
                .unwrap_or_else(|| panic!("no {k} in {fields:?}"))
        };
        assert_eq!(get("MESSAGE"), format!("node relay-j seq {seq}"));
        assert_eq!(get("SYSLOG_IDENTIFIER"), "relay-j");
        assert_eq!(get("PRIORITY"), "6");
        assert_eq!(get("NAMESPACE"), "Test.Stream");
        assert_eq!(get("THREAD"), "7");
        assert!(get("TIME").ends_with("000Z"), "{}", get("TIME"));
    }
    // The file target is written too.
    assert_eq!(seqs(&d.logs().join("relay-j")), vec![1, 2, 3]);
    assert!(!d.dir.path().join("unused").exists());
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(20)).code(), Some(0));

    // Without a journal socket tracerd refuses to start, saying why.
    drop(rx);
    std::fs::remove_file(&journal).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tracerd"))
        .arg("-c")
        .arg(d.config_path())
        .current_dir(d.dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no journald socket at"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_changes_the_own_log_level() {
    let mut d = Daemon::start("  minLogSeverity: Warning\n");
    let mut n = FakeNode::handshake(connect_unix(&d.socket()).await, "quiet").await;
    n.send_batch(1, 1, 0).await;
    n.wait_ack(1).await;
    assert!(!d.stderr().contains("node connected"), "{}", d.stderr());
    let config = std::fs::read_to_string(d.config_path()).unwrap();
    d.write_config(&config.replace("minLogSeverity: Warning", "minLogSeverity: Info"));
    d.signal("HUP");
    d.wait_log("own log level changed", 1);
    let _m = FakeNode::handshake(connect_unix(&d.socket()).await, "loud").await;
    d.wait_log("node connected", 1);
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(20)).code(), Some(0));
}

#[test]
fn resource_freq_reports_own_usage_and_a_reload_can_switch_it_on() {
    let mut d = Daemon::start("");
    let config = std::fs::read_to_string(d.config_path()).unwrap();
    assert!(!d.stderr().contains("rss_bytes="));
    d.write_config(&format!("{config}resourceFreq: 100\n"));
    d.signal("HUP");
    let log = d.wait_log("rss_bytes=", 2);
    assert!(log.contains("key=resourceFreq"), "{log}");
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(20)).code(), Some(0));
}
