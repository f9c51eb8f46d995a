//! Rate limit of refusal log lines per source ([`RefusalLog`]): every refusal is counted, but
//! a source (a peer's IP address, or a Unix socket's path) gets at most [`PER_WINDOW`] log
//! lines per [`WINDOW`]; the next line it gets says how many were suppressed. Pure but for
//! the clock passed in.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refusal lines logged per source and window.
pub const PER_WINDOW: u32 = 5;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Sources remembered at once; past that the table starts afresh (bounded memory).
const MAX_SOURCES: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    logged: u32,
    suppressed: u64,
}

/// Per-source windows of refusal lines.
#[derive(Debug, Default)]
pub struct RefusalLog {
    sources: Mutex<HashMap<String, Window>>,
}

/// The source of a peer name: `ip` of `ip:port` / `[ip]:port`, the path of `unix:path@n`.
pub fn source(peer: &str) -> &str {
    if let Some(unix) = peer.strip_prefix("unix:") {
        return unix.rsplit_once('@').map_or(unix, |(path, _)| path);
    }
    peer.rsplit_once(':').map_or(peer, |(host, _)| host)
}

impl RefusalLog {
    /// Whether a refusal from `peer` at `now` is logged: `Some(n)` with the refusals of its
    /// source suppressed since its last line, or `None` (counted only).
    pub fn admit(&self, peer: &str, now: Instant) -> Option<u64> {
        let mut sources = crate::sync::lock(&self.sources);
        if sources.len() >= MAX_SOURCES && !sources.contains_key(source(peer)) {
            sources.clear();
        }
        let w = sources.entry(source(peer).to_string()).or_insert(Window {
            start: now,
            logged: 0,
            suppressed: 0,
        });
        if now.duration_since(w.start) >= WINDOW {
            w.start = now;
            w.logged = 0;
        }
        if w.logged < PER_WINDOW {
            w.logged += 1;
            Some(std::mem::take(&mut w.suppressed))
        } else {
            w.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_a_bounded_number_of_lines_per_window() {
        let log = RefusalLog::default();
        let t0 = Instant::now();
        let logged: Vec<_> = (0..20)
            .map(|i| log.admit(&format!("127.0.0.1:{}", 4000 + i), t0))
            .collect();
        assert_eq!(
            logged.iter().filter(|l| l.is_some()).count(),
            PER_WINDOW as usize
        );
        // Another source is not held back by the first.
        assert_eq!(log.admit("unix:/run/t.sock@7", t0), Some(0));
        assert_eq!(log.admit("[::1]:1", t0), Some(0));
        // The next window's first line says how many were suppressed.
        assert_eq!(log.admit("127.0.0.1:9", t0 + WINDOW), Some(15));
        assert_eq!(source("unix:/a@b@3"), "/a@b");
    }
}
