//! The one `/proc/self` sampler: CPU time, resident memory, threads, open and maximum file
//! descriptors of the tracerd process. Used by tracerd's own telemetry (`/metrics`) and by
//! the `resourceFreq` report. Parsing is pure (`parse_*`); [`sample`] is the blocking shell
//! that reads the files.

/// One reading; `None` where `/proc` did not tell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// User plus system CPU time, in clock ticks of [`USER_HZ`].
    pub cpu_ticks: Option<u64>,
    /// Resident set size, in bytes.
    pub resident_bytes: Option<u64>,
    /// Threads.
    pub threads: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// Soft limit on open file descriptors.
    pub max_fds: Option<u64>,
}

/// Clock ticks per second of `/proc/self/stat` times: `USER_HZ`, 100 on every Linux
/// architecture's user ABI (reading it with `sysconf` would need `unsafe`).
pub const USER_HZ: u64 = 100;

impl Sample {
    /// User plus system CPU time, in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        self.cpu_ticks.map(|t| t as f64 / USER_HZ as f64)
    }

    /// User plus system CPU time, in milliseconds.
    pub fn cpu_ms(&self) -> Option<u64> {
        self.cpu_ticks.map(|t| t * (1000 / USER_HZ))
    }
}

/// Reads `/proc/self/stat`, `/proc/self/status`, `/proc/self/fd` and `/proc/self/limits`
/// (blocking, but procfs reads never wait on a device: call it off the async workers).
pub fn sample() -> Sample {
    let mut s = Sample::default();
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        s.cpu_ticks = parse_stat_cpu_ticks(&stat);
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        s.resident_bytes = status_value(&status, "VmRSS:").map(|kib| kib * 1024);
        s.threads = status_value(&status, "Threads:");
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        s.open_fds = Some(dir.count() as u64);
    }
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
        s.max_fds = parse_limits_max_fds(&limits);
    }
    s
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The fields are counted
/// after the command name, which is in parentheses and may itself hold spaces and `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field n is at index n - 3.
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(field(14)? + field(15)?)
}

/// The first number after `key` in `/proc/<pid>/status` (`VmRSS:` is in KiB).
pub fn status_value(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
}

/// The soft limit of `Max open files` in `/proc/<pid>/limits`.
pub fn parse_limits_max_fds(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<u64>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let s = sample();
        assert!(s.cpu_seconds().is_some_and(|c| c >= 0.0));
        assert!(s.resident_bytes.is_some_and(|r| r > 0));
        assert!(s.open_fds.is_some_and(|n| n >= 3));
        assert!(s.max_fds.is_some_and(|n| n >= 3));
        assert!(s.threads.is_some_and(|n| n >= 1));
    }

    #[test]
    fn stat_fields_count_from_the_last_parenthesis() {
        let stat = "42 (a) b (c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 7 0 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(300));
        assert_eq!(parse_stat_cpu_ticks("42 (x"), None);
        let s = Sample {
            cpu_ticks: Some(300),
            ..Sample::default()
        };
        assert_eq!((s.cpu_seconds(), s.cpu_ms()), (Some(3.0), Some(3000)));
    }

    #[test]
    fn status_and_limits_lines() {
        assert_eq!(
            status_value("Name:\tx\nVmRSS:\t  1234 kB\nThreads:\t9\n", "VmRSS:"),
            Some(1234)
        );
        let limits = "Limit Soft Hard Units\nMax open files            1024                 524288               files\n";
        assert_eq!(parse_limits_max_fds(limits), Some(1024));
    }
}
