//! tracerd's own resource usage (`resourceFreq`), as cardano-tracer's `Tracer.Resources`:
//! CPU time, resident memory, threads and open files, read from `/proc/self` and emitted as
//! one structured event per period.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::running::Running;

/// One sample of the process's resource usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// User plus system CPU time, in milliseconds.
    pub cpu_ms: u64,
    /// Resident set size, in bytes.
    pub rss_bytes: u64,
    /// Threads.
    pub threads: u64,
    /// Open file descriptors.
    pub open_fds: u64,
}

/// Reads `/proc/self` (blocking, cheap). Missing values are 0.
pub fn sample() -> Sample {
    let mut s = Sample::default();
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        if let Some((_, rest)) = stat.rsplit_once(')') {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            // rest starts at field 3 (state): field n is at index n - 3. Linux USER_HZ is 100.
            s.cpu_ms = (ticks(11) + ticks(12)) * 10;
            s.threads = ticks(17);
        }
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        if let Some(kb) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
        {
            s.rss_bytes = kb * 1024;
        }
    }
    s.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    s
}

/// Emits a `resources` event every `resourceFreq` milliseconds of the live config (checked
/// every second while it is unset) until `cancel` fires.
pub async fn report_periodically(live: Running, cancel: CancellationToken) {
    loop {
        let period = live
            .current()
            .config
            .resource_freq
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis);
        let wait = period.unwrap_or(Duration::from_secs(1));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if period.is_none() {
            continue;
        }
        let Ok(s) = tokio::task::spawn_blocking(sample).await else {
            continue;
        };
        tracing::info!(target: "tracerd::app::resources", cpu_ms = s.cpu_ms, rss_bytes = s.rss_bytes,
            threads = s.threads, open_fds = s.open_fds, "resources");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_sample_sees_this_process() {
        let s = super::sample();
        assert!(
            s.rss_bytes > 0 && s.threads >= 1 && s.open_fds >= 3,
            "{s:?}"
        );
    }
}
