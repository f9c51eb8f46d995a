//! The retention and pruning period in force, which cardano-tracer's
//! `/timeseries/config/{retention,pruning}` routes set at run time (`http::timeseries`) and
//! the pruning task and every prune read. Starts from `tracerd.history`
//! (`retentionHours`, `pruneEveryMinutes`; upstream's defaults, a day and 15 minutes).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tracerd_tsdb::store::Pruned;
use tracerd_tsdb::Store;

/// Shortest time between two periodic prunes, whatever period is set (upstream accepts 1 ms;
/// a prune walks every series).
pub const MIN_PRUNE_GAP: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Control {
    retention_ms: AtomicU64,
    /// 0 when periodic pruning is off (upstream's `Nothing`; a period is at least 1 ms).
    pruning_ms: AtomicU64,
    changed: Notify,
}

impl Control {
    pub fn new(retention_ms: u64, pruning_ms: Option<u64>) -> Self {
        Control {
            retention_ms: AtomicU64::new(retention_ms),
            pruning_ms: AtomicU64::new(pruning_ms.unwrap_or(0)),
            changed: Notify::new(),
        }
    }

    pub fn retention_ms(&self) -> u64 {
        self.retention_ms.load(Ordering::Relaxed)
    }

    /// The pruning period, `None` when periodic pruning is off.
    pub fn pruning_ms(&self) -> Option<u64> {
        Some(self.pruning_ms.load(Ordering::Relaxed)).filter(|p| *p > 0)
    }

    pub fn set_retention(&self, ms: u64) {
        self.retention_ms.store(ms, Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// Sets the period (`None`: no periodic pruning).
    pub fn set_pruning(&self, ms: Option<u64>) {
        self.pruning_ms.store(ms.unwrap_or(0), Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// Resolves after a setting changed (once per change, for the one pruning task).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Apply the retention in force at `now_ms`: drop what is older than `now - retention`
    /// (and, as every prune does, the oldest data past the store's byte cap).
    pub fn prune(&self, store: &Store, now_ms: i64) -> Pruned {
        // `Store::prune(t)` drops what is older than `t - cfg.retention_ms`.
        let retention = i64::try_from(self.retention_ms()).unwrap_or(i64::MAX);
        store.prune(
            now_ms
                .saturating_sub(retention)
                .saturating_add(store.config().retention_ms),
        )
    }
}
