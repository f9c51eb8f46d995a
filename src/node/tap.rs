//! The live view's tap on a node's written trace lines (issue 14): a bounded broadcast ring
//! the writer offers each written object to, only while someone watches, and per-severity
//! counts of everything the node sent this session.
//!
//! A subscriber that reads slower than the node writes loses the oldest lines of the ring
//! (never slowing the writer): the broadcast tells it how many, and the live view sends that
//! count to its client. Memory: at most [`TAP_LINES`] lines of at most [`TAP_LINE_BYTES`]
//! each per watched node, held only while a subscriber has not read them. The ring itself
//! (`TAP_LINES` slots, about 32 KiB) is allocated by the first subscriber and kept until the
//! session ends, so a node nobody watched costs none of it (issue 21: with thousands of idle
//! nodes it was most of tracerd's memory).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::broadcast;

use crate::model::{Severity, TraceObject};

/// Lines the ring holds per node; a subscriber further behind loses the oldest.
pub const TAP_LINES: usize = 1024;
/// Longest machine line kept in the ring, in bytes; longer lines are cut (and marked so).
pub const TAP_LINE_BYTES: usize = 8 * 1024;

/// One written trace line as the live view shows it.
#[derive(Debug, Clone)]
pub struct TapLine {
    /// Its severity.
    pub severity: Severity,
    /// Its namespace.
    pub namespace: String,
    /// The machine line (without newline), cut at [`TAP_LINE_BYTES`].
    pub line: String,
    /// The file the line was written to (the node's current machine file when written).
    pub file: Arc<str>,
}

/// A node's tap (one per session).
#[derive(Debug, Default)]
pub struct TraceTap {
    /// The ring, from the first subscriber on.
    tx: OnceLock<broadcast::Sender<Arc<TapLine>>>,
    severities: [AtomicU64; 8],
}

impl TraceTap {
    /// Whether anyone watches (the writer renders nothing for the tap otherwise).
    pub fn watched(&self) -> bool {
        self.tx.get().is_some_and(|tx| tx.receiver_count() > 0)
    }

    /// Offers written objects, rendered as machine lines, to the watchers.
    pub fn publish(&self, objects: &[TraceObject], file: &Arc<str>) {
        let Some(tx) = self.tx.get().filter(|tx| tx.receiver_count() > 0) else {
            return;
        };
        let mut buf = Vec::new();
        for obj in objects {
            buf.clear();
            crate::logs::format::push_machine(&mut buf, obj);
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
            let line = cut(String::from_utf8_lossy(&buf).into_owned(), TAP_LINE_BYTES);
            let _ = tx.send(Arc::new(TapLine {
                severity: obj.severity,
                namespace: obj.namespace.to_string(),
                line,
                file: file.clone(),
            }));
        }
    }

    /// A new watcher: lines written from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<TapLine>> {
        self.tx
            .get_or_init(|| broadcast::Sender::new(TAP_LINES))
            .subscribe()
    }

    /// Counts objects the node sent, by severity.
    pub fn count(&self, objects: &[TraceObject]) {
        for obj in objects {
            self.severities[obj.severity as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Objects sent this session, by severity (in [`Severity::ALL`]'s order).
    pub fn severity_counts(&self) -> [u64; 8] {
        std::array::from_fn(|i| self.severities[i].load(Ordering::Relaxed))
    }
}

/// `text` cut to at most `max` bytes at a character boundary, with ` …(cut)` appended.
fn cut(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(" …(cut)");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(sev: Severity, machine: &str) -> TraceObject {
        TraceObject {
            namespace: "A.B".into(),
            severity: sev,
            detail: crate::model::DetailLevel::Normal,
            timestamp_ns: 0,
            hostname: "h".into(),
            thread_id: "1".into(),
            machine: machine.into(),
            human: None,
            form: Default::default(),
        }
    }

    #[test]
    fn a_slow_watcher_loses_the_oldest_lines_counted_and_the_writer_never_waits() {
        let tap = TraceTap::default();
        let file: Arc<str> = Arc::from("/logs/n/node.json");
        tap.publish(&[obj(Severity::Info, "{}")], &file); // nobody watches: nothing kept
        assert!(
            tap.tx.get().is_none(),
            "no ring before the first subscriber"
        );
        let mut rx = tap.subscribe();
        let many: Vec<TraceObject> = (0..TAP_LINES + 10)
            .map(|i| obj(Severity::Info, &format!("{{\"i\":{i}}}")))
            .collect();
        tap.publish(&many, &file);
        match rx.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(n)) => assert_eq!(n, 10),
            other => panic!("expected a lag of 10, got {other:?}"),
        }
        let first = rx.try_recv().unwrap();
        assert!(first.line.contains("\"data\":{\"i\":10}"), "{}", first.line);
        assert_eq!(&*first.file, "/logs/n/node.json");
    }

    #[test]
    fn severities_are_counted_and_long_lines_cut_at_a_char_boundary() {
        let tap = TraceTap::default();
        tap.count(&[obj(Severity::Warning, ""), obj(Severity::Warning, "")]);
        assert_eq!(tap.severity_counts()[Severity::Warning as usize], 2);
        let s = cut("é".repeat(10), 5);
        assert_eq!(s, "éé …(cut)");
    }
}
