//! Drop-in configs: upstream's own config files validate and start unchanged (nulls
//! included), `--state-dir`, what a file must contain, a broken `metricsHelp` file, and
//! `validate`'s report (every problem once, in words, with file and line; `--bind`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::http::http_get;
use crate::support::{free_port, Daemon};

fn upstream_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/upstream")
}

fn upstream_configs() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(upstream_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json" || e == "yaml"))
        .collect();
    files.sort();
    files
}

fn tracerd(args: &[&str], dir: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tracerd"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_upstream_config_validates_unchanged() {
    let files = upstream_configs();
    assert!(files.len() >= 20, "{files:?}");
    for file in files {
        let (code, out, err) =
            tracerd(&["validate", "-c", file.to_str().unwrap()], &upstream_dir());
        assert_eq!(code, 0, "{}:\n{err}", file.display());
        assert!(out.contains(": valid"), "{out}");
    }
}

/// Rewrites what would collide between tests or reach outside `dir` (see
/// tests/data/upstream/README.md); returns the config and the native port.
fn confine(file: &Path, dir: &Path) -> (serde_json::Value, u16) {
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    match c["network"]["tag"].as_str() {
        Some("AcceptAt") => c["network"]["contents"] = dir.join("tracer.socket").to_str().into(),
        _ => c["network"]["contents"] = serde_json::json!([dir.join("node.socket")]),
    }
    for target in c["logging"].as_array_mut().unwrap() {
        target["logRoot"] = dir.join("logs").to_str().into();
    }
    for key in ["hasEKG", "hasPrometheus", "hasTimeseries"] {
        if c[key].is_object() {
            c[key]["epPort"] = free_port().into();
        }
    }
    let port = free_port();
    c["tracerd"] = serde_json::json!({
        "native": { "acceptAt": [format!("127.0.0.1:{port}")] },
        "journal": { "socket": dir.join("journal.sock") },
    });
    (c, port)
}

#[test]
fn generated_configs_start_with_config_and_state_dir() {
    let generated: Vec<PathBuf> = upstream_configs()
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("generated__")
        })
        .collect();
    assert!(generated.len() >= 6, "{generated:?}");
    for file in generated {
        let dir = tempfile::tempdir().unwrap();
        let _journal = std::os::unix::net::UnixDatagram::bind(dir.path().join("journal.sock"));
        let (config, port) = confine(&file, dir.path());
        let path = dir.path().join("config.json");
        std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        let state = dir.path().join("state/tracer");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tracerd"))
            .arg("--config")
            .arg(&path)
            .arg("--state-dir")
            .arg(&state)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .unwrap();
        let stderr = || std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        // "ready" is logged once every listener (native, Cardano, HTTP) is bound.
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            || !stderr().contains("ready")
        {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "{}: tracerd exited with {status}:\n{}",
                    file.display(),
                    stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}: {}",
                file.display(),
                stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(state.is_dir(), "--state-dir is created");
        if config["network"]["tag"] == "AcceptAt" {
            assert!(dir.path().join("tracer.socket").exists(), "{}", stderr());
        }
        if let Some(p) = config["hasPrometheus"]["epPort"].as_u64() {
            let (status, _, _) = http_get(p as u16, "/healthz", &[]);
            assert_eq!(status, 200, "{}", file.display());
        }
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "{}: {status}\n{}",
            file.display(),
            stderr()
        );
    }
}

#[test]
fn an_unusable_state_dir_is_a_clear_start_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let mut d = Daemon::configure(|_, _| String::new(), "");
    let mut cmd = d.command();
    cmd.arg("--state-dir").arg(file.join("sub"));
    let out = cmd.stderr(Stdio::piped()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot use --state-dir") && err.contains("Not a directory"),
        "{err}"
    );
    // A writable one is created, and the daemon serves.
    let state = dir.path().join("new/state");
    let mut cmd = d.command();
    cmd.arg("--state-dir").arg(&state);
    d.spawn_command(cmd);
    assert!(state.is_dir());
    d.wait_log("state directory", 1);
}

#[test]
fn a_file_without_network_magic_network_and_logging_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.yaml"), "").unwrap();
    std::fs::write(dir.path().join("partial.yaml"), "hasEKG: null\n").unwrap();
    let (code, _, err) = tracerd(&["validate", "-c", "empty.yaml"], dir.path());
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("the file is empty"), "{err}");
    let (code, _, err) = tracerd(&["validate", "-c", "partial.yaml"], dir.path());
    assert_eq!(code, 78, "{err}");
    for key in ["networkMagic", "network", "logging"] {
        assert!(err.contains(&format!("`{key}` is required")), "{err}");
    }
    // Without a file, the embedded default still runs.
    let (code, out, err) = tracerd(&["validate"], dir.path());
    assert_eq!((code, out.trim()), (0, "embedded defaults: valid"), "{err}");
}

/// cardano-tracer ignores a help file it cannot read; tracerd starts, warns once with the
/// path and the reason, counts it, and serves nodes and metrics.
#[test]
fn a_broken_metrics_help_file_warns_and_counts_but_starts() {
    let http = free_port();
    let mut d = Daemon::configure(
        |_, _| String::new(),
        &format!(
            "hasPrometheus: {{ epHost: 127.0.0.1, epPort: {http} }}\nmetricsHelp: ./help.json\n"
        ),
    );
    std::fs::write(d.config_path().with_file_name("help.json"), "{not json").unwrap();
    d.spawn();
    let log = d.wait_log("serving metrics without HELP texts", 1);
    assert_eq!(
        log.matches("serving metrics without HELP texts").count(),
        1,
        "{log}"
    );
    assert!(log.contains("help.json is not a JSON object"), "{log}");
    let (status, _, body) = http_get(http, "/metrics", &[("Accept", "text/plain")]);
    assert_eq!(status, 200);
    assert!(
        body.lines()
            .any(|l| l == "tracerd_config_metrics_help_errors_total 1"),
        "{body}"
    );
    // The rest works: a node is served.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let framed = crate::support::connect_tcp(d.tcp_port).await;
        let mut node = crate::support::FakeNode::handshake(framed, "relay-1").await;
        node.send_batch(0, 10, 8).await;
        node.wait_ack(9).await;
    });
}

#[test]
fn validate_reports_every_problem_once_in_words_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = "networkMagic: 1\nnetwork: null\nekgRequestFreq: [1]\nlogging:\n  - logRoot: /tmp/x\n    logmode: FileMode\n    logFormat: ForHuman\nhasPrometheus: { epHost: 127.0.0.1, epPort: 9000 }\nhasEKG:\n  epHost: 127.0.0.1\n  epPort: 9000\ntracerd:\n  limits: { handshakeTimeoutSecs: 1e300 }\n";
    std::fs::write(dir.path().join("c.yaml"), text).unwrap();
    let (code, out, err) = tracerd(&["validate", "-c", "c.yaml"], dir.path());
    assert_eq!(code, 78, "{out}{err}");
    let expected = [
        "c.yaml:3: ekgRequestFreq: `ekgRequestFreq` must be a number of seconds from 0.001 to 3600, got a list",
        "c.yaml:6: logging[0].logmode: unknown key; did you mean `logMode`?",
        "c.yaml:11: hasEKG.epPort: port 9000 is also hasPrometheus.epPort",
        "c.yaml:13: tracerd.limits.handshakeTimeoutSecs: `handshakeTimeoutSecs` must be a number of seconds from 0.001 to 3600, got the number 1e300",
    ];
    for e in expected {
        assert_eq!(err.matches(e).count(), 1, "{e:?} once in:\n{err}");
    }
    assert!(!err.contains("invalid type"), "no serde wording: {err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("  c.yaml:")).count(),
        4,
        "{err}"
    );
    let (code, _, err) = tracerd(&["validate", "-c", "missing.yaml"], dir.path());
    assert_eq!(code, 78);
    assert!(
        err.contains("cannot read config file missing.yaml: No such file or directory"),
        "{err}"
    );
}

#[test]
fn validate_bind_tries_what_fails_only_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let readonly = dir.path().join("ro");
    std::fs::create_dir(&readonly).unwrap();
    let text = format!(
        "networkMagic: 1\nnetwork: {{ tag: AcceptAt, contents: {d}/no/such/dir/t.sock }}\nlogging:\n  - {{ logRoot: {d}/logs, logMode: FileMode, logFormat: ForHuman }}\n  - {{ logRoot: x, logMode: JournalMode, logFormat: ForHuman }}\nhasPrometheus: {{ epHost: 127.0.0.1, epPort: {port} }}\ntracerd:\n  native: {{ acceptAt: [\"127.0.0.1:0\"] }}\n  journal: {{ socket: {d}/no-journal.sock }}\n",
        d = dir.path().display()
    );
    std::fs::write(dir.path().join("c.yaml"), &text).unwrap();
    let (code, out, _) = tracerd(&["validate", "-c", "c.yaml"], dir.path());
    assert_eq!(code, 0, "the file itself is valid: {out}");
    let (code, _, err) = tracerd(&["validate", "--bind", "-c", "c.yaml"], dir.path());
    assert_eq!(code, 1, "{err}");
    for needle in [
        "c.yaml:6: hasPrometheus.epPort: cannot bind",
        "Address already in use",
        "c.yaml:2: network.contents: the directory of socket",
        "logging[1].logMode: JournalMode needs journald's socket",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(!err.contains("logging[0].logRoot"), "{err}");
    drop(taken);
    let fixed = text.replace("/no/such/dir/t.sock", "/t.sock").replace(
        "  - { logRoot: x, logMode: JournalMode, logFormat: ForHuman }\n",
        "",
    );
    std::fs::write(dir.path().join("c.yaml"), fixed).unwrap();
    let (code, out, err) = tracerd(&["validate", "--bind", "-c", "c.yaml"], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("valid"));
    assert!(
        !dir.path().join("logs").exists(),
        "validate creates nothing"
    );
    assert!(
        !dir.path().join("t.sock").exists(),
        "validate binds no socket file"
    );
}
