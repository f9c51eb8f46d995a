//! The bound of every node's stored metrics together (`tracerd.limits.metricBytes`), and
//! giving memory back once it is freed (issue 12, point 6).
//!
//! [`MetricBudget`] is shared by every node's metric store (through the registry's
//! [`crate::metrics::exposition::Naming`]): a store charges [`cost`] for each metric it keeps
//! and refunds it when the metric goes (a full snapshot without it, the session's end). A new
//! metric, or a label value grown, that would pass the bound is refused, and the refusal is
//! the caller's to count. The cost over-estimates what a metric occupies: a fixed
//! [`ENTRY_COST`] for its map entry, its value and its shared names, plus three times its
//! name (the key, the internal name, the sanitised family name) and its label value.
//!
//! Freed metrics leave their names in the [`Naming`] cache; [`trim_periodically`] forgets
//! the names no store uses any more, at most every [`TRIM_EVERY`] once something was freed.
//! Returning freed memory to the system is glibc malloc's (README, "Limits": `malloc_trim`
//! would need `unsafe`, which the workspace forbids).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::exposition::Naming;
use crate::model::MetricValue;

/// Accounted bytes of one metric besides its strings: its map entry, value, `Arc`'d names
/// and the name cache's entry.
pub const ENTRY_COST: u64 = 320;
/// How often the trimmer looks whether anything was freed.
pub const TRIM_EVERY: Duration = Duration::from_secs(2);

/// The accounted bytes of `key` holding `value`.
pub fn cost(key: &str, value: &MetricValue) -> u64 {
    let label = match value {
        MetricValue::Label(s) => s.len() as u64,
        _ => 0,
    };
    ENTRY_COST
        .saturating_add((key.len() as u64).saturating_mul(3))
        .saturating_add(label)
}

/// Bytes charged against a limit by every store together.
#[derive(Debug)]
pub struct MetricBudget {
    limit: u64,
    used: AtomicU64,
    freed: AtomicBool,
}

impl Default for MetricBudget {
    fn default() -> MetricBudget {
        MetricBudget::new(u64::MAX)
    }
}

impl MetricBudget {
    /// A budget of `limit` accounted bytes.
    pub fn new(limit: u64) -> MetricBudget {
        MetricBudget {
            limit,
            used: AtomicU64::new(0),
            freed: AtomicBool::new(false),
        }
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Charges `n` bytes if they fit under the limit.
    pub fn try_charge(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|&t| t <= self.limit)
            })
            .is_ok()
    }

    /// Gives `n` charged bytes back.
    pub fn refund(&self, n: u64) {
        if n == 0 {
            return;
        }
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(n))
            });
        self.note_freed();
    }

    /// Something sizeable was freed (metrics, a large render): the next trim pass runs.
    pub fn note_freed(&self) {
        self.freed.store(true, Ordering::Release);
    }

    fn take_freed(&self) -> bool {
        self.freed.swap(false, Ordering::AcqRel)
    }
}

/// Every [`TRIM_EVERY`], if anything was freed since the last pass: drops the names no node
/// uses any more from `naming`'s cache, on the blocking pool. Ends when `cancel` fires.
pub async fn trim_periodically(naming: Arc<Naming>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !naming.budget().take_freed() {
            continue;
        }
        let naming = naming.clone();
        let _ = tokio::task::spawn_blocking(move || naming.forget_unused()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refuses_past_its_limit_and_refunds() {
        let b = MetricBudget::new(1000);
        assert!(b.try_charge(600));
        assert!(!b.try_charge(401));
        assert!(b.try_charge(400));
        assert_eq!(b.used(), 1000);
        b.refund(700);
        assert_eq!(b.used(), 300);
        assert!(b.take_freed() && !b.take_freed());
        let full = MetricBudget::new(u64::MAX);
        assert!(full.try_charge(u64::MAX) && !full.try_charge(1));
    }

    #[test]
    fn cost_counts_the_name_three_times_and_the_label() {
        assert_eq!(cost("abc", &MetricValue::Counter(1)), ENTRY_COST + 9);
        assert_eq!(
            cost("abc", &MetricValue::Label("xy".into())),
            ENTRY_COST + 11
        );
    }
}
