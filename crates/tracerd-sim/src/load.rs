//! `tracerd-load`: a node simulator. It runs N simulated nodes, each a
//! [`tracerd_forwarder::Forwarder`], against a running tracerd, sends Cardano-like trace objects
//! (and optionally metrics) at a fixed rate per node or as fast as acknowledgements allow, and
//! prints one summary JSON line on stdout:
//!
//! ```text
//! {"sent":N,"acked":N,"dropped":N,"objects_per_s":X,"mib_per_s":X,
//!  "ack_latency_ms":{"p50":X,"p99":X,"p999":X,...},...}
//! ```
//!
//! Every object is unique: its machine JSON carries its node name and its sequence number
//! (`"node":"load-0007","seq":123`). Ack latency is the time from handing a group of objects
//! to the forwarder until the forwarder's reader has decoded tracerd's `Ack` covering the whole
//! group (an hdrhistogram, weighted by objects); `ack_noticed_ms` runs until the node's driver
//! noticed it (the generator's own task hand-offs added), `ack_steady_ms` leaves out the groups
//! of the first `--warmup` seconds, and `ack_stages_ms` splits each
//! group's time where the forwarder saw it (module `stages`). When the duration ends the simulator stops generating, waits (at most
//! `--drain-timeout`) for outstanding acknowledgements, closes every connection and reports.
//! Live progress goes to stderr once a second when stderr is a terminal (both protocols); the
//! summary line is always printed, on stdout.
//!
//! With `--protocol cardano` the nodes are [`crate::cardano::SimNode`]s instead, which tracerd
//! pulls from (they connect to it, or with `--listen` tracerd dials them).
//!
//! The binary is the root package's thin `src/bin/tracerd-load.rs`, which calls [`main`].
//! Modules: this file is the command line, the runtime and the summary helpers; `content` the
//! generated trace objects and metrics; `native` the forwarder fleet; `stages` where
//! an acknowledged group's time went on the generator's side; `cardano` the simulated
//! cardano-nodes.

mod cardano;
mod content;
mod native;
mod stages;

pub use cardano::CardanoObjects;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;

/// Simulates a fleet of nodes forwarding traces to tracerd.
#[derive(Debug, Parser)]
#[command(name = "tracerd-load", version)]
pub(crate) struct Args {
    /// tracerd's address: a Unix socket path or host:port (its native listener, or its
    /// Cardano `AcceptAt` address with `--protocol cardano`).
    #[arg(long, required_unless_present = "listen")]
    pub(crate) connect: Option<String>,
    /// With `--protocol cardano`: instead of connecting, each node listens on
    /// `<DIR>/<name>.sock` and waits for tracerd to dial it (tracerd's `network: ConnectTo`
    /// listing those paths, as printed on stderr).
    #[arg(long, value_name = "DIR", conflicts_with = "connect")]
    pub(crate) listen: Option<std::path::PathBuf>,
    /// Number of simulated nodes (one connection each).
    #[arg(long, default_value_t = 1)]
    pub(crate) nodes: usize,
    /// Trace objects per second per node, or `max` (as fast as acknowledgements allow, with
    /// at most `--window` unacknowledged objects per node). 0 keeps the nodes idle.
    #[arg(long, default_value = "max")]
    pub(crate) rate: Rate,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// Bytes of each object's machine JSON (its `data` in tracerd's log line).
    #[arg(long, default_value_t = 300)]
    pub(crate) size: usize,
    /// Metrics per node, updated every second (0: none). Native nodes send them; with
    /// `--protocol cardano` each node answers tracerd's EKG polls with them.
    #[arg(long, default_value_t = 0)]
    pub(crate) metrics: usize,
    /// Wire protocol.
    #[arg(long, value_enum, default_value_t = Protocol::Native)]
    pub(crate) protocol: Protocol,
    /// Node names are `<prefix>-0000`, `<prefix>-0001`, ...
    #[arg(long, default_value = "load")]
    pub(crate) name_prefix: String,
    /// tracerd's networkMagic.
    #[arg(long, default_value_t = tracerd_wire::MAINNET_NETWORK_MAGIC)]
    pub(crate) magic: u32,
    /// Forwarder queue capacity per node, in objects (drops beyond it are counted).
    #[arg(long, default_value_t = 65_536)]
    pub(crate) queue: usize,
    /// Unacknowledged objects per node in `max` mode (default: 131072 / nodes, within
    /// 256..=16384).
    #[arg(long)]
    pub(crate) window: Option<usize>,
    /// Most objects per batch frame.
    #[arg(long, default_value_t = 1024)]
    pub(crate) batch: usize,
    /// Longest time, in milliseconds, a partial batch waits for more objects in the forwarder
    /// (the library's default is 5). It waits only while an earlier batch of the node awaits
    /// its `Ack` (Nagle's rule), and is then part of the measured ack latency; 0 sends every
    /// group of objects as soon as it is handed over.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) linger: f64,
    /// Rate mode: every node hands over its group at the same instant of the period, instead
    /// of the nodes' instants being spread evenly over it (the default).
    #[arg(long)]
    pub(crate) aligned: bool,
    /// Seconds at the start of sending whose groups are left out of `ack_steady_ms` (tracerd
    /// starting every node's writer, both processes' memory growing); `ack_latency_ms` counts
    /// every group.
    #[arg(long, default_value_t = 0.5)]
    pub(crate) warmup: f64,
    /// Longest wait for outstanding acknowledgements after the duration, in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub(crate) drain_timeout: f64,
    /// Longest wait for every node to connect and be accepted before the clock starts, in
    /// seconds. A refused handshake (e.g. a wrong `--magic`) fails the run with tracerd's reason.
    #[arg(long, default_value_t = 60.0)]
    pub(crate) connect_timeout: f64,
    /// Runtime worker threads (default: 2, or fewer CPUs).
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// Native: worker threads of a runtime of the forwarders' own, which then runs every
    /// node's connection and `Ack` reader tasks apart from the drivers that generate the
    /// objects. 0 (the default) runs them on the drivers' runtime, where an `Ack` reader
    /// waits in the run queue behind other nodes' generation; a runtime of their own costs a
    /// cross-runtime wake-up per hand-over instead, and measured no better on 2 cores
    /// (BENCHMARKS.md, "Ack latency at half load, 2026-12-02 (fourth session)").
    #[arg(long, default_value_t = 0)]
    pub(crate) io_threads: usize,
    /// Native over TCP: speak TLS, trusting the PEM CA certificates of this file (tracerd's
    /// `tracerd.native.tls`).
    #[arg(long, value_name = "PEM")]
    pub(crate) tls_ca: Option<std::path::PathBuf>,
    /// With `--tls-ca`: the client certificate for mutual TLS (with `--tls-key`).
    #[arg(long, value_name = "PEM", requires = "tls_key", requires = "tls_ca")]
    pub(crate) tls_cert: Option<std::path::PathBuf>,
    /// With `--tls-cert`: its private key.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub(crate) tls_key: Option<std::path::PathBuf>,
    /// With `--tls-ca`: the name tracerd's certificate must carry (default: the host of
    /// `--connect`).
    #[arg(long, requires = "tls_ca")]
    pub(crate) tls_server_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Rate {
    PerSecond(f64),
    Max,
}

impl std::str::FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Rate, String> {
        if s == "max" {
            return Ok(Rate::Max);
        }
        match s.parse::<f64>() {
            Ok(r) if r.is_finite() && r >= 0.0 => Ok(Rate::PerSecond(r)),
            _ => Err(format!("{s:?} is neither a non-negative number nor `max`")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Protocol {
    /// tracerd's native protocol.
    Native,
    /// Cardano's forwarding protocol: each node is a simulated cardano-node that connects to
    /// tracerd's `network: AcceptAt` address and is pulled from. The protocol has no
    /// acknowledgements: `acked` counts the objects tracerd pulled, and the latency is from
    /// handing an object to the node until tracerd pulled it.
    Cardano,
}

/// The trace objects of one simulated native node, exactly as `tracerd-load` generates them
/// (for the allocation guard and benchmarks that drive a [`tracerd_forwarder::Forwarder`]
/// themselves).
pub struct NativeObjects(content::Generator);

impl NativeObjects {
    /// The objects of node `node`, with `size` bytes of machine JSON each.
    pub fn new(node: &str, size: usize) -> NativeObjects {
        NativeObjects(content::Generator::new(node.to_string(), size))
    }

    /// Appends the next `n` objects, stamped `ts`, `ts + 1`, ..., to `out`. One buffer holds
    /// all their machine texts; nothing is allocated per object.
    pub fn batch(&mut self, ts: i64, n: usize, out: &mut Vec<tracerd_wire::model::TraceObject>) {
        self.0.batch(ts, n, out);
    }
}

pub(crate) const CHUNK: usize = 256;
/// Largest latency the histogram records (longer ones are recorded as this).
pub(crate) const MAX_LATENCY_MICROS: u64 = 600_000_000;

pub(crate) fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// `tracerd-load`'s entry point: parses the command line, runs the simulation on its own
/// runtime, prints the summary.
pub fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get().min(2))
            .unwrap_or(2)
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let io_threads = args.io_threads;
    // Kept until `block_on` returns (dropped outside any runtime).
    let io_runtime = if args.protocol == Protocol::Native && io_threads > 0 {
        Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(io_threads)
                .thread_name("tracerd-load-io")
                .enable_all()
                .build()
                .context("cannot start the forwarders' tokio runtime")?,
        )
    } else {
        None
    };
    let io = io_runtime.as_ref().map(|r| r.handle().clone());
    runtime.block_on(async move {
        if args.protocol == Protocol::Cardano {
            cardano::run(args).await
        } else {
            native::run(args, io).await
        }
    })
}

/// The summary's `ack_latency_ms` object, from a histogram of microseconds.
pub(crate) fn latency_json(latency: &Histogram<u64>) -> serde_json::Value {
    let ms = |q: f64| {
        if latency.is_empty() {
            0.0
        } else {
            latency.value_at_quantile(q) as f64 / 1000.0
        }
    };
    serde_json::json!({
        "p50": ms(0.5), "p99": ms(0.99), "p999": ms(0.999),
        "max": if latency.is_empty() { 0.0 } else { latency.max() as f64 / 1000.0 },
        "count": latency.len(),
    })
}

/// `x` rounded to `d` decimals, for the summary.
pub(crate) fn round(x: f64, d: i32) -> f64 {
    (x * 10f64.powi(d)).round() / 10f64.powi(d)
}

/// The summary's `rate`.
pub(crate) fn rate_json(rate: Rate) -> serde_json::Value {
    match rate {
        Rate::Max => serde_json::Value::from("max"),
        Rate::PerSecond(r) => serde_json::Value::from(r),
    }
}

/// Mean machine bytes per object.
pub(crate) fn mean(total: u64, count: u64) -> f64 {
    if count > 0 {
        total as f64 / count as f64
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_parses_numbers_and_max() {
        assert_eq!("max".parse::<Rate>(), Ok(Rate::Max));
        assert_eq!("2.5".parse::<Rate>(), Ok(Rate::PerSecond(2.5)));
        assert!("-1".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
    }
}
