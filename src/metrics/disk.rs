//! Disk usage of every log root (issue 15, point 1): size, free and available bytes and
//! inodes of the file system each `logRoot` is on, from `statvfs(2)`, as the
//! `tracerd_log_root_*` gauges (label `log_root`, the root as configured). They are in
//! tracerd's own registry, so `/metrics` serves them and the metric history samples them,
//! and alerting rules (`config/alerts/tracerd.yml`: `LogRootDiskNearlyFull`) can use them.
//!
//! [`usage`] is the pure reading of one `statvfs` result; [`sample_periodically`] the thin
//! shell: every [`EVERY`] one pass on the blocking pool (a `statvfs` of a hung network file
//! system may block: it holds one blocking thread, never a runtime worker, and the next pass
//! waits for it), the gauges being the cache every render reads.
//!
//! Names follow node_exporter's `node_filesystem_*` (`size_bytes`, `free_bytes`,
//! `avail_bytes`, `files`, `files_free`), with `inodes` for `files`: a gauge may not end in
//! `_total` in OpenMetrics, so there is no `..._bytes_total`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use prometheus::{GaugeVec, IntCounter, Opts, Registry};
use tokio_util::sync::CancellationToken;

/// How often the log roots are looked at (the gauges keep the last reading in between).
pub const EVERY: Duration = Duration::from_secs(5);

/// Size of the file system, in bytes (`f_blocks × f_frsize`).
pub const SIZE: &str = "tracerd_log_root_size_bytes";
/// Free bytes, the root-reserved blocks included (`f_bfree × f_frsize`).
pub const FREE: &str = "tracerd_log_root_free_bytes";
/// Bytes an unprivileged writer can still use (`f_bavail × f_frsize`, what `df` shows as
/// available).
pub const AVAIL: &str = "tracerd_log_root_avail_bytes";
/// Inodes of the file system (`f_files`).
pub const INODES: &str = "tracerd_log_root_inodes";
/// Free inodes (`f_ffree`).
pub const INODES_FREE: &str = "tracerd_log_root_inodes_free";
/// Failed `statvfs` calls.
pub const ERRORS: &str = "tracerd_log_root_stat_errors_total";

/// Every series name this module writes (so node metrics cannot shadow them).
pub const NAMES: &[&str] = &[
    SIZE,
    FREE,
    AVAIL,
    INODES,
    INODES_FREE,
    ERRORS,
    "tracerd_log_root_stat_errors",
    "tracerd_log_root_stat_errors_created",
];

/// One file system's usage, as `statvfs` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub size_bytes: u64,
    pub free_bytes: u64,
    pub avail_bytes: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

/// The usage in a `statvfs` result: block counts are in units of the fragment size
/// (`f_frsize`; `f_bsize` where a file system leaves it 0), products saturate.
pub fn usage(s: &rustix::fs::StatVfs) -> Usage {
    let unit = if s.f_frsize > 0 {
        s.f_frsize
    } else {
        s.f_bsize
    };
    Usage {
        size_bytes: s.f_blocks.saturating_mul(unit),
        free_bytes: s.f_bfree.saturating_mul(unit),
        avail_bytes: s.f_bavail.saturating_mul(unit),
        inodes: s.f_files,
        inodes_free: s.f_ffree,
    }
}

/// `statvfs(path)` (blocking).
pub fn read(path: &Path) -> std::io::Result<Usage> {
    rustix::fs::statvfs(path)
        .map(|s| usage(&s))
        .map_err(std::io::Error::from)
}

/// The `tracerd_log_root_*` gauges.
#[derive(Debug, Clone)]
pub struct DiskMetrics {
    size: GaugeVec,
    free: GaugeVec,
    avail: GaugeVec,
    inodes: GaugeVec,
    inodes_free: GaugeVec,
    errors: IntCounter,
}

impl DiskMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &Registry) -> DiskMetrics {
        let gauge = |name: &str, help: &str| {
            let g = GaugeVec::new(Opts::new(name, help), &["log_root"]).expect("valid constant");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let errors = IntCounter::new(
            ERRORS,
            "statvfs calls on a log root that failed (the root's series are left out).",
        )
        .expect("valid constant");
        registry
            .register(Box::new(errors.clone()))
            .expect("registered once");
        DiskMetrics {
            size: gauge(SIZE, "Size of the file system of the log root, in bytes."),
            free: gauge(
                FREE,
                "Free bytes on the file system of the log root, blocks reserved for root included.",
            ),
            avail: gauge(
                AVAIL,
                "Bytes on the file system of the log root an unprivileged writer can still use \
                 (df's Avail).",
            ),
            inodes: gauge(INODES, "Inodes of the file system of the log root."),
            inodes_free: gauge(
                INODES_FREE,
                "Free inodes on the file system of the log root.",
            ),
            errors,
        }
    }

    fn families(&self) -> [&GaugeVec; 5] {
        [
            &self.size,
            &self.free,
            &self.avail,
            &self.inodes,
            &self.inodes_free,
        ]
    }

    fn set(&self, root: &str, u: &Usage) {
        let values = [
            u.size_bytes,
            u.free_bytes,
            u.avail_bytes,
            u.inodes,
            u.inodes_free,
        ];
        for (g, v) in self.families().into_iter().zip(values) {
            g.with_label_values(&[root]).set(v as f64);
        }
    }

    fn remove(&self, root: &str) {
        for g in self.families() {
            let _ = g.remove_label_values(&[root]);
        }
    }
}

/// The roots a pass looks at, duplicates removed, in order.
fn distinct(roots: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::with_capacity(roots.len());
    for r in roots {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// One pass (blocking): every root of `roots` read and its gauges set; the series of roots
/// no longer configured, or whose `statvfs` failed, removed. `failed` holds the roots whose
/// last reading failed, so a failure is logged once, not every pass.
pub fn sample_once(
    metrics: &DiskMetrics,
    roots: &[PathBuf],
    previous: &[PathBuf],
    failed: &mut Vec<PathBuf>,
) {
    for gone in previous.iter().filter(|p| !roots.contains(p)) {
        metrics.remove(&gone.display().to_string());
    }
    failed.retain(|f| roots.contains(f));
    for root in roots {
        let label = root.display().to_string();
        match read(root) {
            Ok(u) => {
                metrics.set(&label, &u);
                failed.retain(|f| f != root);
            }
            Err(e) => {
                metrics.errors.inc();
                metrics.remove(&label);
                if !failed.contains(root) {
                    tracing::warn!(log_root = %label, error = %e, "cannot read the disk usage of a log root (statvfs)");
                    failed.push(root.clone());
                }
            }
        }
    }
}

/// Reads the disk usage of `roots()` (the file targets' roots of the running config, read
/// each pass so a reload is followed) at once and then every [`EVERY`], until `cancel`.
pub async fn sample_periodically(
    metrics: DiskMetrics,
    roots: impl Fn() -> Vec<PathBuf> + Send,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous: Vec<PathBuf> = Vec::new();
    let mut failed: Vec<PathBuf> = Vec::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = distinct(roots());
        let (m, r, p, mut f) = (metrics.clone(), now.clone(), previous, failed);
        match tokio::task::spawn_blocking(move || {
            sample_once(&m, &r, &p, &mut f);
            f
        })
        .await
        {
            Ok(f) => failed = f,
            Err(e) => {
                tracing::error!(error = %e, "log root disk usage pass failed to run");
                failed = Vec::new();
            }
        }
        previous = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gathered(registry: &Registry, name: &str) -> Vec<(String, f64)> {
        registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().to_vec())
            .map(|m| {
                (
                    m.get_label()[0].value().to_string(),
                    m.get_gauge().get_value(),
                )
            })
            .collect()
    }

    #[test]
    fn usage_multiplies_by_the_fragment_size() {
        let mut s = rustix::fs::statvfs("/").unwrap();
        s.f_bsize = 4096;
        s.f_frsize = 1024;
        s.f_blocks = 1000;
        s.f_bfree = 300;
        s.f_bavail = 200;
        s.f_files = 50;
        s.f_ffree = 7;
        let u = usage(&s);
        assert_eq!(
            u,
            Usage {
                size_bytes: 1_024_000,
                free_bytes: 307_200,
                avail_bytes: 204_800,
                inodes: 50,
                inodes_free: 7,
            }
        );
        s.f_frsize = 0;
        assert_eq!(usage(&s).size_bytes, 4_096_000);
        s.f_blocks = u64::MAX;
        assert_eq!(usage(&s).size_bytes, u64::MAX);
    }

    #[test]
    fn a_pass_sets_removes_and_counts() {
        let registry = Registry::new();
        let m = DiskMetrics::register(&registry);
        let dir = tempfile::tempdir().unwrap();
        let (a, missing) = (dir.path().join("a"), dir.path().join("missing"));
        std::fs::create_dir(&a).unwrap();
        let mut failed = Vec::new();
        sample_once(&m, &[a.clone(), missing.clone()], &[], &mut failed);
        let sizes = gathered(&registry, SIZE);
        assert_eq!(sizes.len(), 1, "{sizes:?}");
        assert_eq!(sizes[0].0, a.display().to_string());
        assert!(sizes[0].1 > 0.0);
        assert_eq!(failed, vec![missing.clone()]);
        assert_eq!(m.errors.get(), 1);
        // The missing root appears; `a` is no longer configured.
        std::fs::create_dir(&missing).unwrap();
        sample_once(
            &m,
            std::slice::from_ref(&missing),
            &[a.clone(), missing.clone()],
            &mut failed,
        );
        let sizes = gathered(&registry, SIZE);
        assert_eq!(sizes.len(), 1, "{sizes:?}");
        assert_eq!(sizes[0].0, missing.display().to_string());
        assert!(failed.is_empty());
        assert_eq!(m.errors.get(), 1);
    }

    #[test]
    fn duplicates_are_looked_at_once() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(distinct(vec![p("a"), p("b"), p("a")]), vec![p("a"), p("b")]);
    }
}
