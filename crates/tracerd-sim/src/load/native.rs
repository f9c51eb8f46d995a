//! `--protocol native`: N [`Forwarder`]s, each driven by one task that generates objects at
//! the requested rate (or as fast as the window of unacknowledged objects allows), measures
//! the ack latency per group, and optionally updates metrics; then the summary.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use tokio::time::Instant;
use tracerd_forwarder::{Forwarder, ForwarderConfig, SendCause, Stats, Written};
use tracerd_wire::model::{DataPoint, MetricValue, MetricsUpdate, TraceObject};
use tracerd_wire::native::Software;
use tracerd_wire::Address;

use super::content::{now_ns, Generator, METRIC_NAMES};
use super::stages::Staged;
use super::{
    latency_json, mean, open_files_limit, rate_json, round, Args, Rate, CHUNK, MAX_LATENCY_MICROS,
};

/// What one node's driver measured.
struct NodeResult {
    generated: u64,
    machine_bytes: u64,
    latency: Vec<(u64, u64)>,
    /// The same, up to when this driver noticed the `Ack`.
    noticed: Vec<(u64, u64)>,
    /// The same as `latency`, for groups handed over after the warm-up.
    steady: Vec<(u64, u64)>,
    /// Per acknowledged group whose batch write and `Ack` read were both seen: its stages.
    staged: Vec<Staged>,
    metric_updates: u64,
    drained: bool,
    last_ack: Option<Instant>,
}

/// A group handed to the forwarder and not yet acknowledged.
struct Mark {
    /// Accepted objects up to and including this group.
    accepted: u64,
    /// The sequence number of its last object.
    last_seq: u64,
    /// When it was handed over.
    at: Instant,
    /// Its objects.
    n: u64,
    /// When the batch holding its last object had been written, and why then.
    written: Option<(Instant, SendCause)>,
    /// When the reader had decoded the `Ack` covering it.
    ack_read: Option<Instant>,
}

struct Plan {
    rate: Rate,
    start: Instant,
    /// Groups handed over before this are left out of `ack_steady_ms`.
    warmup_end: Instant,
    end: Instant,
    drain_deadline: Instant,
    window: usize,
    metrics: usize,
}

/// `phase` (0 to 1): where in the hand-over period this node's ticks fall.
async fn drive(fwd: Arc<Forwarder>, mut gen: Generator, plan: Arc<Plan>, phase: f64) -> NodeResult {
    // (latency in µs, objects) per acknowledged group, merged into one histogram at the end:
    // cheaper than a histogram per node when thousands of nodes are idle.
    let mut latency: Vec<(u64, u64)> = Vec::new();
    let mut noticed: Vec<(u64, u64)> = Vec::new();
    let mut steady: Vec<(u64, u64)> = Vec::new();
    let mut staged: Vec<Staged> = Vec::new();
    let mut acked_rx = fwd.acked_watch();
    let mut marks: VecDeque<Mark> = VecDeque::new();
    // Sequence numbers continue tracerd's `persisted_seq` (known: every node is connected
    // before the clock starts).
    let seq_base = fwd.stats().acked_seq;
    fwd.record_timing();
    let (mut writes, mut acks) = (Vec::new(), Vec::new());
    let mut accepted = 0u64;
    let mut generated = 0u64;
    let mut metric_updates = 0u64;
    let mut last_ack = None;
    // Each group's objects, handed over by moving them out: reused, so a group costs no
    // allocation beyond its machine texts' buffer.
    let mut objects: Vec<TraceObject> = Vec::new();
    // Rate mode hands objects over in groups: every 10 ms, or every 4 objects' worth of time
    // at low rates (at most 100 ms), so that idle fleets do not wake up for nothing.
    let ticking = matches!(plan.rate, Rate::PerSecond(r) if r > 0.0);
    let period = match plan.rate {
        Rate::PerSecond(r) if r > 0.0 => (4.0 / r).clamp(0.01, 0.1),
        _ => 1.0,
    };
    // Nodes' ticks are spread over the period (unless `--aligned`): real nodes are not
    // phase-locked, and N nodes handing over in the same millisecond every 10 ms make a
    // burst of N groups that the last one waits behind.
    let period_d = Duration::from_secs_f64(period);
    let mut tick = tokio::time::interval_at(plan.start + period_d.mul_f64(phase), period_d);
    // Rate mode hands over only when the tick fires (the first one at once), not whenever an
    // acknowledgement wakes the driver: otherwise acks clock the hand-overs, each group is a
    // few objects, and the measured cost per object is that of tiny batches.
    let mut handover = true;
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
    let micros = |from: Instant, to: Instant| {
        (to.saturating_duration_since(from).as_micros() as u64).clamp(1, MAX_LATENCY_MICROS)
    };
    let mut record = |acked: u64, marks: &mut VecDeque<Mark>| {
        let now = Instant::now();
        while marks.front().is_some_and(|m| m.accepted <= acked) {
            if let Some(m) = marks.pop_front() {
                // The latency ends when the forwarder's reader decoded the `Ack` (the node has
                // its acknowledgement then); when this driver noticed it is later by the
                // generator's own hand-offs (`notice`).
                let total = micros(m.at, now);
                let acked_after = m.ack_read.map_or(total, |a| micros(m.at, a));
                latency.push((acked_after, m.n));
                if m.at >= plan.warmup_end {
                    steady.push((acked_after, m.n));
                }
                noticed.push((total, m.n));
                last_ack = Some(now);
                if let (Some((w, cause)), Some(a)) = (m.written, m.ack_read) {
                    staged.push(Staged {
                        n: m.n,
                        total,
                        queued: micros(m.at, w),
                        flight: micros(w, a),
                        notice: micros(a, now),
                        cause,
                        at_ms: m.at.saturating_duration_since(plan.start).as_millis() as u64,
                    });
                }
            }
        }
    };
    loop {
        let now = Instant::now();
        let sending = now < plan.end;
        // The forwarder records a write or an `Ack` before it counts it, so what the count
        // below covers has been timed by now.
        fwd.take_timing(&mut writes, &mut acks);
        note_timing(&mut marks, &mut writes, &mut acks);
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
                Rate::PerSecond(_) if !handover => 0,
                Rate::PerSecond(r) => {
                    let due = (r * now.duration_since(plan.start).as_secs_f64()) as u64;
                    let want = (due.saturating_sub(generated) as usize).min(4 * CHUNK);
                    // A group larger than 4 chunks is handed over in several, back to back.
                    handover = want == 4 * CHUNK;
                    want
                }
            };
            if want > 0 {
                gen.batch(now_ns(), want, &mut objects);
                generated += want as u64;
                // The group's latency starts when it is handed over, not before generating it.
                let handed = Instant::now();
                let n = fwd.trace_many(objects.drain(..)) as u64;
                if n > 0 {
                    accepted += n;
                    marks.push_back(Mark {
                        accepted,
                        last_seq: seq_base + accepted,
                        at: handed,
                        n,
                        written: None,
                        ack_read: None,
                    });
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
            _ = tick.tick(), if sending && ticking => handover = true,
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
        noticed,
        steady,
        staged,
        metric_updates,
        drained: final_acked >= accepted,
        last_ack,
    }
}

/// Gives the groups awaiting their `Ack` the times the forwarder recorded: a group was
/// written with the first batch reaching its last object, acknowledged by the first `Ack`
/// covering it. Consumes `writes` and `acks`.
fn note_timing(
    marks: &mut VecDeque<Mark>,
    writes: &mut Vec<Written>,
    acks: &mut Vec<(u64, Instant)>,
) {
    for w in writes.drain(..) {
        for m in marks.iter_mut().filter(|m| m.written.is_none()) {
            if m.last_seq > w.last_seq {
                break;
            }
            m.written = Some((w.at, w.cause));
        }
    }
    for (seq, at) in acks.drain(..) {
        for m in marks.iter_mut().filter(|m| m.ack_read.is_none()) {
            if m.last_seq > seq {
                break;
            }
            m.ack_read = Some(at);
        }
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

/// `--protocol native` (the default): a fleet of forwarders, started on `io` (their
/// connection and reader tasks run there) if given, else on the drivers' runtime.
pub(crate) async fn run(args: Args, io: Option<tokio::runtime::Handle>) -> anyhow::Result<()> {
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
    let io_threads = io.as_ref().map_or(0, |h| h.metrics().num_workers());
    let window = args
        .window
        .unwrap_or_else(|| (131_072 / args.nodes).clamp(256, 16_384))
        .clamp(1, args.queue.max(1));

    let tls = match &args.tls_ca {
        None => None,
        Some(ca) => {
            let host = match &address {
                Address::Tcp { host, .. } => host.clone(),
                Address::Unix(_) => bail!("--tls-ca needs a TCP --connect address"),
            };
            let name = args.tls_server_name.clone().unwrap_or(host);
            let client = args.tls_cert.as_deref().zip(args.tls_key.as_deref());
            Some(
                tracerd_forwarder::tls::TlsClient::from_pem(ca, client, &name)
                    .context("--tls-ca/--tls-cert/--tls-key")?,
            )
        }
    };
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
        c.tls = tls.clone();
        let fwd = {
            let _on_io = io.as_ref().map(|h| h.enter());
            Forwarder::start(c)?
        };
        fwds.push(Arc::new(fwd));
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
        warmup_end: start + Duration::from_secs_f64(args.warmup.max(0.0)),
        end,
        drain_deadline: end + Duration::from_secs_f64(args.drain_timeout.max(0.0)),
        window,
        metrics: args.metrics,
    });
    let mut drivers = Vec::with_capacity(fwds.len());
    for (i, f) in fwds.iter().enumerate() {
        let gen = Generator::new(format!("{}-{i:04}", args.name_prefix), args.size);
        let phase = if args.aligned {
            0.0
        } else {
            i as f64 / fwds.len() as f64
        };
        drivers.push(tokio::spawn(drive(f.clone(), gen, plan.clone(), phase)));
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
    let mut noticed = latency.clone();
    let mut steady = latency.clone();
    let mut staged = Vec::new();
    let (mut generated, mut machine_bytes, mut metric_updates) = (0u64, 0u64, 0u64);
    let mut drained = true;
    let mut last_ack = start;
    for d in drivers {
        let r = d.await.context("a node driver failed")?;
        for (micros, n) in r.latency {
            latency.record_n(micros, n)?;
        }
        for (micros, n) in r.noticed {
            noticed.record_n(micros, n)?;
        }
        for (micros, n) in r.steady {
            steady.record_n(micros, n)?;
        }
        staged.extend(r.staged);
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
        "ack_noticed_ms": latency_json(&noticed),
        "ack_steady_ms": latency_json(&steady),
        "warmup_s": args.warmup,
        "ack_stages_ms": super::stages::json(&staged)?,
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
        "aligned": args.aligned,
        "io_threads": io_threads,
        "protocol": "native",
    });
    println!("{summary}");
    Ok(())
}
