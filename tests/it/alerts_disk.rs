//! The disk usage of each log root (issue 15, point 1): `tracerd_log_root_*` on `/metrics`
//! and in the metric history agree with `df` (statvfs of the same path), and the shipped
//! `LogRootDiskNearlyFull` rule, its threshold forced, fires at a real Alertmanager with the
//! root's label and annotations.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::alerts::Alertmanager;
use crate::history::instant;
use crate::http::http_get;
use crate::support::*;

/// `df -B1` of `path`: size, used, avail, inodes, inodes used (statvfs, as coreutils reads it).
fn df(path: &Path) -> [f64; 5] {
    let out = Command::new("df")
        .args(["-B1", "--output=size,used,avail,itotal,iused"])
        .arg(path)
        .output()
        .expect("df (coreutils) is missing");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let v: Vec<f64> = text
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    [v[0], v[1], v[2], v[3], v[4]]
}

/// The value of `name{log_root="root"}` in an exposition text.
fn sample(text: &str, name: &str, root: &Path) -> Option<f64> {
    let head = format!("{name}{{log_root=\"{}\"}} ", root.display());
    text.lines()
        .find_map(|l| l.strip_prefix(&head))
        .map(|v| v.parse().unwrap())
}

/// The history's latest value of `name{log_root="root"}`.
fn stored(port: u16, name: &str, root: &Path) -> Option<f64> {
    let r = instant(
        port,
        &format!("{name}{{log_root=\"{}\"}}", root.display()),
        None,
    );
    r.first()
        .map(|s| s["value"][1].as_str().unwrap().parse().unwrap())
}

/// The second log root: on a tmpfs under /dev/shm where there is one, so the two roots are
/// on file systems of different sizes and a reading of the wrong path shows; else beside the
/// first.
fn second_root(scratch: &Path) -> (PathBuf, Option<tempfile::TempDir>) {
    match tempfile::tempdir_in("/dev/shm") {
        Ok(d) => (d.path().join("logs"), Some(d)),
        Err(_) => (scratch.join("second-root"), None),
    }
}

#[test]
fn log_root_disk_usage_matches_df_and_fires_the_shipped_rule() {
    let am_port = free_port();
    let am = Alertmanager::start(am_port);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(root.join("config/alerts/tracerd.yml")).unwrap();
    // Forced: any file system has `avail <= size`; the rule's `for` and interval shortened.
    let forced = shipped
        .replace(
            "tracerd_log_root_avail_bytes / tracerd_log_root_size_bytes < 0.10",
            "tracerd_log_root_avail_bytes / tracerd_log_root_size_bytes <= 1",
        )
        .replace("interval: 15s", "interval: 500ms")
        .replace("for: 5m", "for: 1s");
    assert_ne!(forced, shipped);
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = rules_dir.path().join("tracerd.yml");
    std::fs::write(&rules, forced).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let (second, _shm) = second_root(scratch.path());
    let (ts_port, prom_port) = (free_port(), free_port());
    let d = Daemon::start_with(
        |dir, _| {
            format!(
                "networkMagic: 764824073\nlogging:\n  \
                 - {{ logRoot: {}, logMode: FileMode, logFormat: ForMachine }}\n  \
                 - {{ logRoot: {}, logMode: FileMode, logFormat: ForHuman }}\n",
                dir.join("logs").display(),
                second.display()
            )
        },
        &format!(
            "  history: {{sampleIntervalSecs: 0.2}}\n  alerts:\n    ruleFiles: [\"{}\"]\n    \
             alertmanagers: [\"http://127.0.0.1:{am_port}\"]\n\
             hasTimeseries: {{epHost: 127.0.0.1, epPort: {ts_port}}}\n\
             hasPrometheus: {{epHost: 127.0.0.1, epPort: {prom_port}}}\n",
            rules.display()
        ),
    );
    let first = d.logs();
    let both = [first.clone(), second.clone()];

    // Each root's series on /metrics and in the history, against df of the same path.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (text, history) = loop {
        let (status, _, text) = http_get(prom_port, "/metrics", &[]);
        assert_eq!(status, 200);
        let all_in_text = both
            .iter()
            .all(|r| sample(&text, "tracerd_log_root_avail_bytes", r).is_some());
        let all_stored = all_in_text
            && both
                .iter()
                .all(|r| stored(ts_port, "tracerd_log_root_size_bytes", r).is_some());
        if all_stored {
            break (text, ts_port);
        }
        assert!(
            Instant::now() < deadline,
            "no log root series:\n{text}\n{}",
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for r in &both {
        let [size, used, avail, inodes, iused] = df(r);
        let got = |name: &str| sample(&text, name, r).unwrap_or_else(|| panic!("{name}: {text}"));
        // Sizes do not move; free space and inodes may, as other writers on the machine
        // write (the reading is up to 5 s old): within 1 % of the size (at least 64 MiB).
        assert_eq!(got("tracerd_log_root_size_bytes"), size, "{}", r.display());
        assert_eq!(got("tracerd_log_root_inodes"), inodes, "{}", r.display());
        let slack = (size * 0.01).max(64.0 * 1024.0 * 1024.0);
        let close = |name: &str, want: f64, slack: f64| {
            let v = got(name);
            assert!(
                (v - want).abs() <= slack,
                "{name} of {}: {v} vs df {want}",
                r.display()
            );
        };
        close("tracerd_log_root_free_bytes", size - used, slack);
        close("tracerd_log_root_avail_bytes", avail, slack);
        close(
            "tracerd_log_root_inodes_free",
            inodes - iused,
            inodes * 0.01,
        );
        assert_eq!(
            stored(history, "tracerd_log_root_size_bytes", r),
            Some(size),
            "{}",
            r.display()
        );
    }

    // The forced rule fires, one alert per root, with the shipped labels and annotations.
    let deadline = Instant::now() + Duration::from_secs(15);
    let fired = loop {
        let got: Vec<_> = am
            .alerts()
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == "LogRootDiskNearlyFull")
            .collect();
        if got.len() == 2 {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "LogRootDiskNearlyFull did not fire for both roots: {got:?}\n{}",
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for r in &both {
        let label = r.display().to_string();
        let a = fired
            .iter()
            .find(|a| a["labels"]["log_root"] == label.as_str())
            .unwrap_or_else(|| panic!("no alert for {label}: {fired:?}"));
        assert_eq!(a["labels"]["severity"], "warning");
        assert_eq!(
            a["annotations"]["summary"],
            format!("Log root {label} is nearly full")
        );
        // {{ $value }}: the fraction left, as df shows it.
        let [size, _, avail, _, _] = df(r);
        let desc = a["annotations"]["description"].as_str().unwrap();
        let value: f64 = desc
            .strip_prefix("Only ")
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{desc}"));
        assert!(
            (value - avail / size).abs() < 0.01,
            "{desc} vs df {}",
            avail / size
        );
    }
    // The inode rule's threshold was not forced: it fires only where inodes really are short.
    let short = |r: &Path| {
        let [_, _, _, inodes, iused] = df(r);
        inodes > 0.0 && (inodes - iused) / inodes < 0.10
    };
    if !both.iter().any(|r| short(r)) {
        assert!(!am
            .alerts()
            .iter()
            .any(|a| a["labels"]["alertname"] == "LogRootInodesNearlyExhausted"));
    }
}
