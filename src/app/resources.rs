//! tracerd's own resource usage (`resourceFreq`), as cardano-tracer's `Tracer.Resources`:
//! CPU time, resident memory, threads and open files, sampled from `/proc/self` by
//! [`crate::metrics::process`] and emitted as one structured event per period (missing
//! values are 0).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::process;
use crate::running::Running;

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
        let Ok(s) = tokio::task::spawn_blocking(process::sample).await else {
            continue;
        };
        tracing::info!(target: "tracerd::app::resources", cpu_ms = s.cpu_ms().unwrap_or(0),
            rss_bytes = s.resident_bytes.unwrap_or(0), threads = s.threads.unwrap_or(0),
            open_fds = s.open_fds.unwrap_or(0), "resources");
    }
}
