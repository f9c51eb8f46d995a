//! `tracerd-load`: a node simulator. It runs N simulated nodes, each a [`Forwarder`] of the
//! `tracerd::forwarder` library, against a running tracerd, sends Cardano-like trace objects
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
//! to the forwarder until tracerd's `Ack` covers the whole group (an hdrhistogram, weighted by
//! objects). When the duration ends the simulator stops generating, waits (at most
//! `--drain-timeout`) for outstanding acknowledgements, closes every connection and reports.
//! Live progress goes to stderr when stderr is a terminal.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use tokio::time::Instant;
use tracerd::config::Address;
use tracerd::forwarder::{Forwarder, ForwarderConfig, Stats};
use tracerd::model::{DataPoint, DetailLevel, MetricValue, MetricsUpdate, Severity, TraceObject};
use tracerd::native::Software;

/// Simulates a fleet of nodes forwarding traces to tracerd.
#[derive(Debug, Parser)]
#[command(name = "tracerd-load", version)]
struct Args {
    /// tracerd's address: a Unix socket path or host:port (its native listener, or its
    /// Cardano `AcceptAt` address with `--protocol cardano`).
    #[arg(long, required_unless_present = "listen")]
    connect: Option<String>,
    /// With `--protocol cardano`: instead of connecting, each node listens on
    /// `<DIR>/<name>.sock` and waits for tracerd to dial it (tracerd's `network: ConnectTo`
    /// listing those paths, as printed on stderr).
    #[arg(long, value_name = "DIR", conflicts_with = "connect")]
    listen: Option<std::path::PathBuf>,
    /// Number of simulated nodes (one connection each).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Trace objects per second per node, or `max` (as fast as acknowledgements allow, with
    /// at most `--window` unacknowledged objects per node). 0 keeps the nodes idle.
    #[arg(long, default_value = "max")]
    rate: Rate,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Bytes of each object's machine JSON (its `data` in tracerd's log line).
    #[arg(long, default_value_t = 300)]
    size: usize,
    /// Metrics per node, updated every second (0: none).
    #[arg(long, default_value_t = 0)]
    metrics: usize,
    /// Wire protocol.
    #[arg(long, value_enum, default_value_t = Protocol::Native)]
    protocol: Protocol,
    /// Node names are `<prefix>-0000`, `<prefix>-0001`, ...
    #[arg(long, default_value = "load")]
    name_prefix: String,
    /// tracerd's networkMagic.
    #[arg(long, default_value_t = tracerd::config::DEFAULT_NETWORK_MAGIC)]
    magic: u32,
    /// Forwarder queue capacity per node, in objects (drops beyond it are counted).
    #[arg(long, default_value_t = 65_536)]
    queue: usize,
    /// Unacknowledged objects per node in `max` mode (default: 131072 / nodes, within
    /// 256..=16384).
    #[arg(long)]
    window: Option<usize>,
    /// Most objects per batch frame.
    #[arg(long, default_value_t = 1024)]
    batch: usize,
    /// Longest time, in milliseconds, a partial batch waits for more objects in the forwarder
    /// (the library's default is 5). It is part of the measured ack latency; 0 sends every
    /// group of objects as soon as it is handed over.
    #[arg(long, default_value_t = 5.0)]
    linger: f64,
    /// Longest wait for outstanding acknowledgements after the duration, in seconds.
    #[arg(long, default_value_t = 30.0)]
    drain_timeout: f64,
    /// Longest wait for every node to connect before the clock starts, in seconds.
    #[arg(long, default_value_t = 60.0)]
    connect_timeout: f64,
    /// Runtime worker threads (default: 2, or fewer CPUs).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Rate {
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
enum Protocol {
    /// tracerd's native protocol.
    Native,
    /// Cardano's forwarding protocol: each node is a simulated cardano-node that connects to
    /// tracerd's `network: AcceptAt` address and is pulled from. The protocol has no
    /// acknowledgements: `acked` counts the objects tracerd pulled, and the latency is from
    /// handing an object to the node until tracerd pulled it.
    Cardano,
}

/// Cardano-like trace kinds: namespace, severity, `kind`, relative weight.
const KINDS: &[(&str, Severity, &str, u32)] = &[
    (
        "ChainSync.Client.DownloadedHeader",
        Severity::Info,
        "DownloadedHeader",
        20,
    ),
    (
        "BlockFetch.Client.CompletedBlockFetch",
        Severity::Info,
        "CompletedBlockFetch",
        12,
    ),
    (
        "ChainDB.AddBlockEvent.AddedToCurrentChain",
        Severity::Notice,
        "AddedToCurrentChain",
        8,
    ),
    (
        "ChainDB.AddBlockEvent.AddBlockValidation.ValidCandidate",
        Severity::Info,
        "ValidCandidate",
        8,
    ),
    ("Mempool.AddedTx", Severity::Info, "TraceMempoolAddedTx", 16),
    (
        "Mempool.RejectedTx",
        Severity::Warning,
        "TraceMempoolRejectedTx",
        2,
    ),
    (
        "Forge.Loop.StartLeadershipCheck",
        Severity::Info,
        "TraceStartLeadershipCheck",
        10,
    ),
    (
        "Net.PeerSelection.Actions.StatusChanged",
        Severity::Debug,
        "PeerStatusChanged",
        6,
    ),
    (
        "Net.InboundGovernor.Remote.InboundGovernorCounters",
        Severity::Info,
        "InboundGovernorCounters",
        4,
    ),
    (
        "BlockFetch.Decision.Decision",
        Severity::Debug,
        "FetchDecision",
        10,
    ),
    (
        "ChainDB.LedgerEvent.TookSnapshot",
        Severity::Info,
        "TookSnapshot",
        1,
    ),
    ("Resources", Severity::Info, "ResourceStats", 3),
];

/// Realistic metric names (EKG-style internal names).
const METRIC_NAMES: &[&str] = &[
    "cardano.node.metrics.blockNum_int",
    "cardano.node.metrics.slotNum_int",
    "cardano.node.metrics.epoch_int",
    "cardano.node.metrics.slotInEpoch_int",
    "cardano.node.metrics.density_real",
    "cardano.node.metrics.txsInMempool_int",
    "cardano.node.metrics.mempoolBytes_int",
    "cardano.node.metrics.connectedPeers_int",
    "cardano.node.metrics.served.block_counter",
    "Mem.resident_int",
    "RTS.gcLiveBytes_int",
    "Stat.cputicks_int",
];

/// Builds one node's trace objects.
struct Generator {
    node: String,
    size: usize,
    /// Index into KINDS per weight unit.
    table: Vec<u8>,
    pad: String,
    threads: Vec<String>,
    seq: u64,
    bytes: u64,
}

fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn push_decimal(out: &mut String, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for &b in &buf[i..] {
        out.push(b as char);
    }
}

fn push_hex(out: &mut String, v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(DIGITS[((v >> (shift * 4)) & 15) as usize] as char);
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl Generator {
    fn new(node: String, size: usize) -> Generator {
        let mut table = Vec::new();
        for (i, k) in KINDS.iter().enumerate() {
            table.extend(std::iter::repeat_n(i as u8, k.3 as usize));
        }
        Generator {
            node,
            size,
            table,
            pad: "x".repeat(size),
            threads: (5..42).map(|t| t.to_string()).collect(),
            seq: 0,
            bytes: 0,
        }
    }

    fn next(&mut self, ts: i64) -> TraceObject {
        self.seq += 1;
        let seq = self.seq;
        let h = mix(seq ^ (self.node.len() as u64) << 56);
        let (ns, sev, kind, _) = KINDS[self.table[(h % self.table.len() as u64) as usize] as usize];
        let slot = 140_000_000 + seq / 20;
        // Built by hand rather than with `write!`: the generator shares the CPUs with the
        // daemon under test, so its cost per object matters.
        let mut m = String::with_capacity(self.size.max(200));
        m.push_str("{\"kind\":\"");
        m.push_str(kind);
        m.push_str("\",\"node\":\"");
        m.push_str(&self.node);
        m.push_str("\",\"seq\":");
        push_decimal(&mut m, seq);
        m.push_str(",\"slot\":");
        push_decimal(&mut m, slot);
        m.push_str(",\"block\":\"");
        push_hex(&mut m, h);
        push_hex(&mut m, mix(h));
        m.push_str("\",\"peer\":\"127.0.0.");
        push_decimal(&mut m, h % 250 + 2);
        m.push_str(":3001\",\"pad\":\"");
        let pad = self.size.saturating_sub(m.len() + 2);
        m.push_str(&self.pad[..pad]);
        m.push_str("\"}");
        self.bytes += m.len() as u64;
        TraceObject {
            namespace: ns.to_string(),
            severity: sev,
            detail: DetailLevel::Normal,
            timestamp_ns: ts,
            hostname: self.node.clone(),
            thread_id: self.threads[(h % self.threads.len() as u64) as usize].clone(),
            machine: m,
            human: None,
            form: Default::default(),
        }
    }
}

/// What one node's driver measured.
struct NodeResult {
    generated: u64,
    machine_bytes: u64,
    latency: Vec<(u64, u64)>,
    metric_updates: u64,
    drained: bool,
    last_ack: Option<Instant>,
}

struct Plan {
    rate: Rate,
    start: Instant,
    end: Instant,
    drain_deadline: Instant,
    window: usize,
    metrics: usize,
}

const CHUNK: usize = 256;
/// Largest latency the histogram records (longer ones are recorded as this).
const MAX_LATENCY_MICROS: u64 = 600_000_000;

async fn drive(fwd: Arc<Forwarder>, mut gen: Generator, plan: Arc<Plan>) -> NodeResult {
    // (latency in µs, objects) per acknowledged group, merged into one histogram at the end:
    // cheaper than a histogram per node when thousands of nodes are idle.
    let mut latency: Vec<(u64, u64)> = Vec::new();
    let mut acked_rx = fwd.acked_watch();
    // (accepted objects up to and including this group, when it was handed over, group size)
    let mut marks: VecDeque<(u64, Instant, u64)> = VecDeque::new();
    let mut accepted = 0u64;
    let mut generated = 0u64;
    let mut metric_updates = 0u64;
    let mut last_ack = None;
    // Rate mode hands objects over in groups: every 10 ms, or every 4 objects' worth of time
    // at low rates (at most 100 ms), so that idle fleets do not wake up for nothing.
    let ticking = matches!(plan.rate, Rate::PerSecond(r) if r > 0.0);
    let period = match plan.rate {
        Rate::PerSecond(r) if r > 0.0 => (4.0 / r).clamp(0.01, 0.1),
        _ => 1.0,
    };
    let mut tick = tokio::time::interval(Duration::from_secs_f64(period));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut metrics_tick = tokio::time::interval(Duration::from_secs(1));
    if plan.metrics > 0 {
        fwd.data_points(vec![DataPoint {
            name: "NodeInfo".into(),
            json: format!(
                "{{\"niName\":\"{}\",\"niProtocol\":\"Cardano\",\"niVersion\":\"10.1.4\",\"niCommit\":\"1f63dbf2ab39e0b32bf6901dc203866d3e37de08\",\"niStartTime\":\"2026-11-29T00:00:00Z\",\"niSystemStartTime\":\"2017-09-23T21:44:51Z\"}}",
                gen.node
            ),
        }]);
    }
    let mut record = |acked: u64, marks: &mut VecDeque<(u64, Instant, u64)>| {
        let now = Instant::now();
        while marks.front().is_some_and(|m| m.0 <= acked) {
            if let Some((_, at, n)) = marks.pop_front() {
                let micros = now.saturating_duration_since(at).as_micros().max(1) as u64;
                latency.push((micros.min(MAX_LATENCY_MICROS), n));
                last_ack = Some(now);
            }
        }
    };
    loop {
        let now = Instant::now();
        let sending = now < plan.end;
        let acked = *acked_rx.borrow_and_update();
        record(acked, &mut marks);
        if !sending && (acked >= accepted || now >= plan.drain_deadline) {
            break;
        }
        if sending {
            let want = match plan.rate {
                Rate::Max => {
                    let inflight = (accepted - acked) as usize;
                    plan.window.saturating_sub(inflight).min(CHUNK)
                }
                Rate::PerSecond(r) => {
                    let due = (r * now.duration_since(plan.start).as_secs_f64()) as u64;
                    (due.saturating_sub(generated) as usize).min(4 * CHUNK)
                }
            };
            if want > 0 {
                let ts = now_ns();
                let objects: Vec<TraceObject> =
                    (0..want).map(|i| gen.next(ts + i as i64)).collect();
                generated += want as u64;
                let n = fwd.trace_many(objects) as u64;
                if n > 0 {
                    accepted += n;
                    marks.push_back((accepted, now, n));
                }
                if plan.rate == Rate::Max || want == 4 * CHUNK {
                    tokio::task::yield_now().await;
                    continue;
                }
            }
        }
        let wake = if sending {
            plan.end
        } else {
            plan.drain_deadline
        };
        tokio::select! {
            _ = acked_rx.changed() => {}
            _ = tick.tick(), if sending && ticking => {}
            _ = metrics_tick.tick(), if sending && plan.metrics > 0 => {
                send_metrics(&fwd, plan.metrics, metric_updates, gen.seq);
                metric_updates += 1;
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
    let final_acked = *acked_rx.borrow();
    NodeResult {
        generated,
        machine_bytes: gen.bytes,
        latency,
        metric_updates,
        drained: final_acked >= accepted,
        last_ack,
    }
}

fn send_metrics(fwd: &Forwarder, count: usize, round: u64, seq: u64) {
    let metrics = (0..count)
        .map(|i| {
            let name = match METRIC_NAMES.get(i) {
                Some(n) => n.to_string(),
                None => format!("cardano.node.metrics.bench.m{i}_int"),
            };
            let value = if name.ends_with("_real") {
                MetricValue::Gauge(0.05 + (round % 100) as f64 / 1000.0)
            } else if name.ends_with("_counter") {
                MetricValue::Counter(seq as i64)
            } else {
                MetricValue::Counter((round * 7 + i as u64 + seq) as i64)
            };
            (name, value)
        })
        .collect();
    fwd.metrics(MetricsUpdate {
        full: round == 0,
        metrics,
    });
}

fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn sum_stats(fwds: &[Arc<Forwarder>]) -> (Stats, usize) {
    let mut total = Stats::default();
    let mut connected = 0;
    for f in fwds {
        let s = f.stats();
        total.submitted += s.submitted;
        total.sent += s.sent;
        total.resent += s.resent;
        total.acked += s.acked;
        total.dropped += s.dropped;
        total.buffered += s.buffered;
        total.bytes_sent += s.bytes_sent;
        total.connects += s.connects;
        connected += usize::from(s.connected);
    }
    (total, connected)
}

fn main() -> anyhow::Result<()> {
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
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.protocol == Protocol::Cardano {
        return run_cardano(args).await;
    }
    let Some(connect) = args.connect.as_deref() else {
        bail!("--listen is only for --protocol cardano; give --connect");
    };
    let address = Address::parse(connect).map_err(|e| anyhow::anyhow!(e))?;
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if !(args.duration.is_finite() && args.duration >= 0.0) {
        bail!("--duration must be a non-negative number of seconds");
    }
    if let Some(limit) = open_files_limit() {
        if (args.nodes as u64) + 64 > limit {
            eprintln!(
                "tracerd-load: warning: {} nodes need more open files than the limit of {limit} (raise it with `ulimit -n`)",
                args.nodes
            );
        }
    }
    let progress = std::io::stderr().is_terminal();
    let window = args
        .window
        .unwrap_or_else(|| (131_072 / args.nodes).clamp(256, 16_384))
        .clamp(1, args.queue.max(1));

    // Connect every node before the clock starts.
    let mut fwds = Vec::with_capacity(args.nodes);
    for i in 0..args.nodes {
        let name = format!("{}-{i:04}", args.name_prefix);
        let mut c = ForwarderConfig::new(address.clone(), name);
        c.network_magic = args.magic;
        c.queue_capacity = args.queue.max(1);
        c.max_batch_objects = args.batch.max(1);
        c.linger = Duration::from_secs_f64(args.linger.max(0.0) / 1000.0);
        c.software = Software {
            name: "tracerd-load".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            commit: String::new(),
        };
        c.connect_timeout = Duration::from_secs(30);
        c.backoff_max = Duration::from_secs(2);
        fwds.push(Arc::new(Forwarder::start(c)?));
        if i % 256 == 255 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let connect_started = Instant::now();
    let connect_deadline = connect_started + Duration::from_secs_f64(args.connect_timeout);
    let connected = loop {
        let (_, connected) = sum_stats(&fwds);
        if connected == fwds.len() || Instant::now() >= connect_deadline {
            break connected;
        }
        if progress {
            eprint!("\rconnecting: {connected}/{} nodes   ", fwds.len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let connect_s = connect_started.elapsed().as_secs_f64();
    if progress {
        eprintln!(
            "\rconnected: {connected}/{} nodes in {connect_s:.2} s",
            fwds.len()
        );
    }
    if connected == 0 {
        let why = fwds[0].stats().last_error.unwrap_or_default();
        bail!("no node could connect to {address}: {why}");
    }
    if connected < fwds.len() {
        eprintln!(
            "tracerd-load: warning: only {connected} of {} nodes connected within {} s",
            fwds.len(),
            args.connect_timeout
        );
    }

    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.duration);
    let plan = Arc::new(Plan {
        rate: args.rate,
        start,
        end,
        drain_deadline: end + Duration::from_secs_f64(args.drain_timeout.max(0.0)),
        window,
        metrics: args.metrics,
    });
    let mut drivers = Vec::with_capacity(fwds.len());
    for (i, f) in fwds.iter().enumerate() {
        let gen = Generator::new(format!("{}-{i:04}", args.name_prefix), args.size);
        drivers.push(tokio::spawn(drive(f.clone(), gen, plan.clone())));
    }
    let reporter = progress.then(|| {
        let fwds = fwds.clone();
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let (s, connected) = sum_stats(&fwds);
                let now = Instant::now();
                let rate = (s.acked - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                last = (now, s.acked);
                eprint!(
                    "\r{:6.1} s  nodes {connected}  sent {}  acked {}  dropped {}  buffered {}  {:.0} obj/s   ",
                    now.duration_since(start).as_secs_f64(),
                    s.sent,
                    s.acked,
                    s.dropped,
                    s.buffered,
                    rate
                );
            }
        })
    });

    let mut latency = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_MICROS, 3)?;
    let (mut generated, mut machine_bytes, mut metric_updates) = (0u64, 0u64, 0u64);
    let mut drained = true;
    let mut last_ack = start;
    for d in drivers {
        let r = d.await.context("a node driver failed")?;
        for (micros, n) in r.latency {
            latency.record_n(micros, n)?;
        }
        generated += r.generated;
        machine_bytes += r.machine_bytes;
        metric_updates += r.metric_updates;
        drained &= r.drained;
        if let Some(t) = r.last_ack {
            last_ack = last_ack.max(t);
        }
    }
    if let Some(r) = reporter {
        r.abort();
        eprintln!();
    }
    let finished = Instant::now();
    let (totals, _) = sum_stats(&fwds);
    // Close every connection (bounded; everything is acknowledged or given up by now).
    let mut closes = Vec::with_capacity(fwds.len());
    for f in fwds {
        closes.push(tokio::spawn(async move {
            match Arc::try_unwrap(f) {
                Ok(f) => Some(f.close(Duration::from_secs(2)).await),
                Err(_) => None,
            }
        }));
    }
    for c in closes {
        let _ = c.await;
    }

    // Throughput over the time it took to get everything acknowledged (at least the duration).
    let elapsed = last_ack
        .max(end)
        .min(finished)
        .duration_since(start)
        .as_secs_f64()
        .max(1e-9);
    let avg_object = mean(machine_bytes, generated);
    let rate = rate_json(args.rate);
    let summary = serde_json::json!({
        "sent": totals.sent,
        "acked": totals.acked,
        "dropped": totals.dropped,
        "objects_per_s": round(totals.acked as f64 / elapsed, 1),
        "mib_per_s": round(totals.acked as f64 * avg_object / elapsed / 1048576.0, 3),
        "ack_latency_ms": latency_json(&latency),
        "generated": generated,
        "submitted": totals.submitted,
        "resent": totals.resent,
        "unacked": totals.buffered,
        "drained": drained,
        "wire_bytes": totals.bytes_sent,
        "wire_mib_per_s": round(totals.bytes_sent as f64 / elapsed / 1048576.0, 3),
        "machine_bytes_per_object": round(avg_object, 1),
        "metric_updates": metric_updates,
        "nodes": args.nodes,
        "connected": connected,
        "connects": totals.connects,
        "connect_s": round(connect_s, 3),
        "rate": rate,
        "window": window,
        "duration_s": args.duration,
        "elapsed_s": round(elapsed, 3),
        "size": args.size,
        "linger_ms": args.linger,
        "protocol": "native",
    });
    println!("{summary}");
    Ok(())
}

/// The summary's `ack_latency_ms` object, from a histogram of microseconds.
fn latency_json(latency: &Histogram<u64>) -> serde_json::Value {
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
fn round(x: f64, d: i32) -> f64 {
    (x * 10f64.powi(d)).round() / 10f64.powi(d)
}

/// The summary's `rate`.
fn rate_json(rate: Rate) -> serde_json::Value {
    match rate {
        Rate::Max => serde_json::Value::from("max"),
        Rate::PerSecond(r) => serde_json::Value::from(r),
    }
}

/// Mean machine bytes per object.
fn mean(total: u64, count: u64) -> f64 {
    if count > 0 {
        total as f64 / count as f64
    } else {
        0.0
    }
}

/// `--protocol cardano`: simulated cardano-nodes that tracerd pulls from.
async fn run_cardano(args: Args) -> anyhow::Result<()> {
    use tracerd::cardano::mux::Mode;
    use tracerd::cardano::sim::SimNode;
    use tracerd::config::Address;
    use tracerd::model::MachineForm;

    let window = args
        .window
        .unwrap_or_else(|| (131_072 / args.nodes.max(1)).clamp(256, 16_384));
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut nodes = Vec::with_capacity(args.nodes);
    let mut conns = Vec::with_capacity(args.nodes);
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut listening = Vec::new();
    for i in 0..args.nodes {
        let name = format!("{}-{i:04}", args.name_prefix);
        let node = Arc::new(SimNode::new(&name, args.magic));
        let (n, c) = (node.clone(), cancel.clone());
        if let Some(dir) = &args.listen {
            // The listening direction: tracerd dials this node (network: ConnectTo).
            let path = dir.join(format!("{name}.sock"));
            let _ = std::fs::remove_file(&path);
            let listener = tokio::net::UnixListener::bind(&path)
                .with_context(|| format!("listening on {}", path.display()))?;
            listening.push(path.display().to_string());
            let served = served.clone();
            conns.push(tokio::spawn(async move {
                let mut first = true;
                loop {
                    let stream = tokio::select! {
                        _ = c.cancelled() => return Ok(tracerd::cardano::sim::SimEnd::Cancelled),
                        accepted = listener.accept() => match accepted {
                            Ok((stream, _)) => stream,
                            Err(_) => continue,
                        },
                    };
                    if std::mem::take(&mut first) {
                        served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    let end = n.run(stream, Mode::Responder, &c).await;
                    if c.is_cancelled() {
                        return end;
                    }
                }
            }));
        } else {
            let Some(connect) = args.connect.as_deref() else {
                bail!("give --connect or --listen");
            };
            let address = Address::parse(connect).map_err(|e| anyhow::anyhow!(e))?;
            let stream: tokio_util::either::Either<tokio::net::TcpStream, tokio::net::UnixStream> =
                match &address {
                    Address::Tcp { host, port } => tokio_util::either::Either::Left(
                        tokio::net::TcpStream::connect((host.as_str(), *port))
                            .await
                            .with_context(|| format!("connecting to {address}"))?,
                    ),
                    Address::Unix(path) => tokio_util::either::Either::Right(
                        tokio::net::UnixStream::connect(path)
                            .await
                            .with_context(|| format!("connecting to {address}"))?,
                    ),
                };
            served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            conns.push(tokio::spawn(async move {
                n.run(stream, Mode::Initiator, &c).await
            }));
        }
        nodes.push((name, node));
    }
    if !listening.is_empty() {
        eprintln!(
            "tracerd-load: nodes listening; tracerd config: network: {{ tag: ConnectTo, contents: {} }}",
            serde_json::Value::from(listening)
        );
        let deadline = Instant::now() + Duration::from_secs_f64(args.connect_timeout);
        while served.load(std::sync::atomic::Ordering::Relaxed) < args.nodes {
            if Instant::now() >= deadline {
                eprintln!(
                    "tracerd-load: warning: tracerd dialed only {} of {} nodes",
                    served.load(std::sync::atomic::Ordering::Relaxed),
                    args.nodes
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Let tracerd name the nodes (NodeInfo) before the clock starts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.duration);
    let drain_deadline = end + Duration::from_secs_f64(args.drain_timeout.max(0.0));
    let mut drivers = Vec::with_capacity(nodes.len());
    for (name, node) in &nodes {
        let (name, node) = (name.clone(), node.clone());
        let (rate, size) = (args.rate, args.size);
        drivers.push(tokio::spawn(async move {
            let mut gen = Generator::new(name, size);
            let mut pushed = 0u64;
            let mut marks: VecDeque<(u64, Instant, u64)> = VecDeque::new();
            let mut latency: Vec<(u64, u64)> = Vec::new();
            let mut line = Vec::with_capacity(size + 200);
            loop {
                let now = Instant::now();
                let pulled = node.sent();
                while marks.front().is_some_and(|m| m.0 <= pulled) {
                    if let Some((_, at, n)) = marks.pop_front() {
                        let micros = now.saturating_duration_since(at).as_micros().max(1) as u64;
                        latency.push((micros.min(MAX_LATENCY_MICROS), n));
                    }
                }
                if now >= end {
                    if pulled >= pushed || now >= drain_deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                let want = match rate {
                    Rate::Max => window.saturating_sub((pushed - pulled) as usize).min(CHUNK),
                    Rate::PerSecond(r) => {
                        let due = (r * now.duration_since(start).as_secs_f64()) as u64;
                        (due.saturating_sub(pushed) as usize).min(4 * CHUNK)
                    }
                };
                if want == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                let ts = now_ns();
                let objects: Vec<TraceObject> = (0..want)
                    .map(|i| {
                        // A cardano-node sends its complete machine line.
                        let mut o = gen.next(ts + i as i64);
                        line.clear();
                        tracerd::logs::format::push_machine(&mut line, &o);
                        line.pop();
                        o.machine = String::from_utf8_lossy(&line).into_owned();
                        o.form = MachineForm::Line;
                        o
                    })
                    .collect();
                node.push(objects);
                pushed += want as u64;
                marks.push_back((pushed, now, want as u64));
                tokio::task::yield_now().await;
            }
            (pushed, gen.bytes, latency, node.sent() >= pushed)
        }));
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_MICROS, 3)?;
    let (mut generated, mut machine_bytes, mut drained) = (0u64, 0u64, true);
    for d in drivers {
        let (pushed, bytes, lat, done) = d.await.context("a node driver failed")?;
        generated += pushed;
        machine_bytes += bytes;
        drained &= done;
        for (micros, n) in lat {
            latency.record_n(micros, n)?;
        }
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    let pulled: u64 = nodes.iter().map(|(_, n)| n.sent()).sum();
    cancel.cancel();
    for c in conns {
        let _ = c.await;
    }
    let avg = mean(machine_bytes, generated);
    let summary = serde_json::json!({
        "sent": generated,
        "acked": pulled,
        "dropped": 0,
        "objects_per_s": round(pulled as f64 / elapsed, 1),
        "mib_per_s": round(pulled as f64 * avg / elapsed / 1048576.0, 3),
        "ack_latency_ms": latency_json(&latency),
        "generated": generated,
        "drained": drained,
        "nodes": args.nodes,
        "rate": rate_json(args.rate),
        "window": window,
        "duration_s": args.duration,
        "elapsed_s": round(elapsed, 3),
        "size": args.size,
        "protocol": "cardano",
        "direction": if args.listen.is_some() { "listen" } else { "connect" },
    });
    println!("{summary}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_valid_json_of_the_requested_size_and_unique() {
        let mut g = Generator::new("load-0003".into(), 300);
        let a = g.next(1);
        let b = g.next(2);
        assert_eq!(a.machine.len(), 300);
        let v: serde_json::Value = serde_json::from_str(&a.machine).unwrap();
        assert_eq!(
            (v["node"].as_str(), v["seq"].as_u64()),
            (Some("load-0003"), Some(1))
        );
        let w: serde_json::Value = serde_json::from_str(&b.machine).unwrap();
        assert_eq!(w["seq"].as_u64(), Some(2));
        assert_eq!(v["block"].as_str().map(str::len), Some(32));
        let mut s = String::new();
        push_decimal(&mut s, 0);
        push_decimal(&mut s, 18_446_744_073_709_551_615);
        assert_eq!(s, "018446744073709551615");
    }

    #[test]
    fn rate_parses_numbers_and_max() {
        assert_eq!("max".parse::<Rate>(), Ok(Rate::Max));
        assert_eq!("2.5".parse::<Rate>(), Ok(Rate::PerSecond(2.5)));
        assert!("-1".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
    }
}
