//! The shipped unit's `SystemCallFilter=` against what tracerd really calls: tracerd runs under
//! a seccomp allow-list computed from `deploy/tracerd.service` with systemd's own rules and
//! group tables (`systemd-analyze syscall-filter`), built by libseccomp (`seccomp_exec.py`).
//! systemd is not PID 1 on the test machines, so `systemd-run` cannot start the unit itself;
//! this reproduces the part of the unit that decides whether `unixSocket.group` can work.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{connect_unix, Daemon, FakeNode};

/// systemd's syscall groups: `@name` → members (system calls and nested `@groups`).
fn syscall_groups() -> Option<BTreeMap<String, Vec<String>>> {
    let out = Command::new("systemd-analyze")
        .arg("syscall-filter")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with('@') {
            current = Some(line.trim().to_string());
            groups.entry(line.trim().to_string()).or_default();
        } else if let Some(group) = &current {
            let item = line.trim();
            if !item.is_empty() && !item.starts_with('#') {
                groups.get_mut(group).unwrap().push(item.to_string());
            }
        }
    }
    Some(groups)
}

fn expand(item: &str, groups: &BTreeMap<String, Vec<String>>, out: &mut BTreeSet<String>) {
    match groups.get(item) {
        Some(members) => members.iter().for_each(|m| expand(m, groups, out)),
        None => {
            assert!(!item.starts_with('@'), "unknown syscall group {item}");
            out.insert(item.to_string());
        }
    }
}

/// The allow-list of the unit's `SystemCallFilter=` lines, by systemd.exec(5): the first line
/// is an allow-list (it does not start with `~`); later lines add to it, or remove with `~`.
fn allowed(unit: &str, groups: &BTreeMap<String, Vec<String>>) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    // systemd always permits @default with an allow-list.
    expand("@default", groups, &mut set);
    let mut first = true;
    for value in unit
        .lines()
        .filter_map(|l| l.trim().strip_prefix("SystemCallFilter="))
    {
        let (deny, list) = match value.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        assert!(
            !(first && deny),
            "the unit's filter must start with an allow-list"
        );
        first = false;
        let mut items = BTreeSet::new();
        for item in list.split_whitespace() {
            expand(item, groups, &mut items);
        }
        if deny {
            set.retain(|s| !items.contains(s));
        } else {
            set.extend(items);
        }
    }
    assert!(!first, "the unit has no SystemCallFilter=");
    set
}

fn unit() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/tracerd.service"))
        .unwrap()
}

/// A daemon whose config sets `unixSocket.group`, and the command that runs it under `allow`.
fn filtered(allow: &BTreeSet<String>) -> (Daemon, Command) {
    let d = Daemon::configure(
        |_, _| String::new(),
        "  unixSocket: { mode: \"0660\", group: \"65534\" }\n",
    );
    let list = d.dir.path().join("allowed.txt");
    std::fs::write(&list, allow.iter().cloned().collect::<Vec<_>>().join("\n")).unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/seccomp_exec.py"))
        .arg(&list)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_tracerd"))
        .arg("-c")
        .arg(d.config_path())
        .stdout(std::process::Stdio::null());
    (d, cmd)
}

fn runnable() -> Option<BTreeMap<String, Vec<String>>> {
    let Some(groups) = syscall_groups() else {
        panic!(
            "systemd-analyze is not installed: apt-get install systemd (./test.sh does it as root)"
        );
    };
    let probe = Command::new("python3")
        .args(["-c", "import ctypes; ctypes.CDLL('libseccomp.so.2')"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        panic!("libseccomp.so.2 is not loadable from python3: apt-get install libseccomp2 (./test.sh does it as root)");
    }
    Some(groups)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_units_syscall_filter_lets_tracerd_bind_with_a_socket_group() {
    let Some(groups) = runnable() else { return };
    let allow = allowed(&unit(), &groups);
    assert!(allow.contains("fchownat") || allow.contains("chown"));
    assert!(
        !allow.contains("setuid"),
        "the filter still denies @privileged"
    );
    let (mut d, cmd) = filtered(&allow);
    d.spawn_command(cmd);
    let meta = std::fs::metadata(d.socket()).unwrap();
    assert_eq!(
        meta.gid(),
        65534,
        "the socket file has the configured group"
    );
    assert_eq!(meta.mode() & 0o777, 0o660);
    // The whole daemon works under the filter: a node's objects are written and acknowledged.
    let mut node = FakeNode::handshake(connect_unix(&d.socket()).await, "sc").await;
    node.send_batch(1, 50, 16).await;
    node.wait_ack(50).await;
    assert_eq!(
        crate::support::seqs(&d.logs().join("sc")),
        (1..=50).collect::<Vec<_>>()
    );
    d.signal("TERM");
    assert_eq!(
        d.wait(Duration::from_secs(20)).code(),
        Some(0),
        "{}",
        d.stderr()
    );
}

/// The control: the unit as shipped before (`~@privileged` without `@chown` after it) makes
/// the same start fail, which shows the harness filters what systemd would.
#[test]
fn without_the_chown_line_binding_with_a_socket_group_fails_with_the_reason() {
    let Some(groups) = runnable() else { return };
    let old: String = unit()
        .lines()
        .filter(|l| l.trim() != "SystemCallFilter=@chown")
        .map(|l| format!("{l}\n"))
        .collect();
    let (d, mut cmd) = filtered(&allowed(&old, &groups));
    let stderr = std::fs::File::create(d.dir.path().join("stderr.log")).unwrap();
    let status = cmd
        .current_dir(d.dir.path())
        .stderr(stderr)
        .status()
        .unwrap();
    let err = d.stderr();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("t.sock"), "{err}");
    assert!(err.contains("Operation not permitted"), "{err}");
}

/// The capture window under the unit's filter: with `deploy/tracerd.service.d/capture.conf`
/// (which changes capabilities and address families, not `SystemCallFilter=`), a TCP node's
/// capture opens its AF_PACKET socket, attaches its filter and records packets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_units_syscall_filter_lets_a_tcp_capture_run() {
    let Some(groups) = runnable() else { return };
    let dropin = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/tracerd.service.d/capture.conf"),
    )
    .unwrap();
    for line in [
        "AmbientCapabilities=CAP_NET_RAW",
        "CapabilityBoundingSet=CAP_NET_RAW",
        "RestrictAddressFamilies=AF_PACKET AF_NETLINK",
    ] {
        assert!(
            dropin.lines().any(|l| l == line),
            "the drop-in lacks {line}"
        );
    }
    let allow = allowed(&unit(), &groups);
    let http = crate::support::free_port();
    let mut d = Daemon::configure(
        |_, _| String::new(),
        &format!("hasPrometheus: {{epHost: 127.0.0.1, epPort: {http}}}\n"),
    );
    let list = d.dir.path().join("allowed.txt");
    std::fs::write(&list, allow.iter().cloned().collect::<Vec<_>>().join("\n")).unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/seccomp_exec.py"))
        .arg(&list)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_tracerd"))
        .arg("-c")
        .arg(d.config_path())
        .stdout(std::process::Stdio::null());
    d.spawn_command(cmd);
    let mut node = FakeNode::handshake(crate::support::connect_tcp(d.tcp_port).await, "cap").await;
    let started = tokio::task::spawn_blocking(move || {
        crate::capture::post(http, "/api/nodes/cap/capture?seconds=1")
    })
    .await
    .unwrap();
    assert_eq!(started.0, 202, "{}", started.1);
    node.send_batch(1, 50, 16).await;
    node.wait_ack(50).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let done = loop {
        let (_, _, body) = crate::http::http_get(http, "/api/nodes/cap/capture", &[]);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["state"] == "done" {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(done["ended"], "seconds", "{done}");
    assert!(done["packets"].as_u64().unwrap() >= 2, "{done}");
}
