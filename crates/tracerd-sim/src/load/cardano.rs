//! `--protocol cardano`: N simulated cardano-nodes ([`SimNode`]) that tracerd pulls from,
//! connecting to tracerd's `AcceptAt` address or, with `--listen DIR`, listening for
//! tracerd's `ConnectTo` dials; then the summary. Every node's handshake must be accepted
//! within `--connect-timeout` (a refusal, e.g. a wrong `--magic`, fails the run with tracerd's
//! reason); with `--metrics N` each node answers tracerd's EKG polls with N metrics updated
//! every second; progress goes to stderr once a second when it is a terminal.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use tokio::time::Instant;
use tracerd_wire::cardano::mux::Mode;
use tracerd_wire::Address;

mod objects;
pub use self::objects::CardanoObjects;

use super::content::{now_ns, METRIC_NAMES};
use super::{latency_json, mean, rate_json, round, Args, Rate, CHUNK, MAX_LATENCY_MICROS};
use crate::cardano::{SimEnd, SimNode};
use tracerd_wire::cardano::codec::EkgValue;

/// Sets `count` metrics on `node` for update `round` (EKG values as cardano-node's: `_real`
/// doubles are labels, counters are counters, the rest gauges).
fn set_metrics(node: &SimNode, count: usize, round: u64, seq: u64) {
    for i in 0..count {
        let name = match METRIC_NAMES.get(i) {
            Some(n) => n.to_string(),
            None => format!("cardano.node.metrics.bench.m{i}_int"),
        };
        let value = if name.ends_with("_real") {
            EkgValue::Label(format!("{:.3}", 0.05 + (round % 100) as f64 / 1000.0))
        } else if name.ends_with("_counter") {
            EkgValue::Counter(seq as i64)
        } else {
            EkgValue::Gauge((round * 7 + i as u64 + seq) as i64)
        };
        node.set_metric(&name, value);
    }
}

/// Waits (until `deadline`) for every node's handshake to be accepted. A refusal, or a
/// connection that ended before its handshake, fails at once with the reason; a node still
/// waiting at the deadline fails if none was accepted, else warns.
async fn await_handshakes(
    nodes: &[(String, Arc<SimNode>)],
    conns: &mut [tokio::task::JoinHandle<Result<SimEnd, crate::cardano::SimError>>],
    deadline: Instant,
    args: &Args,
) -> anyhow::Result<usize> {
    loop {
        let accepted = nodes.iter().filter(|(_, n)| n.accepted() > 0).count();
        if accepted == nodes.len() {
            return Ok(accepted);
        }
        for (i, (name, node)) in nodes.iter().enumerate() {
            if node.accepted() > 0 {
                continue;
            }
            if let Some(why) = node.last_refusal() {
                bail!(
                    "tracerd refused the handshake of {name}: {why} (does --magic {} match tracerd's networkMagic?)",
                    args.magic
                );
            }
            if conns[i].is_finished() {
                let end = (&mut conns[i]).await;
                bail!("{name}'s connection ended before its handshake: {end:?}");
            }
        }
        if Instant::now() >= deadline {
            if accepted == 0 {
                bail!(
                    "no node completed the handshake within --connect-timeout {} s",
                    args.connect_timeout
                );
            }
            eprintln!(
                "tracerd-load: warning: only {accepted} of {} nodes completed the handshake within {} s",
                nodes.len(),
                args.connect_timeout
            );
            return Ok(accepted);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `--protocol cardano`: simulated cardano-nodes that tracerd pulls from.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let window = args
        .window
        .unwrap_or_else(|| (131_072 / args.nodes.max(1)).clamp(256, 16_384));
    if !(args.connect_timeout.is_finite() && args.connect_timeout >= 0.0) {
        bail!("--connect-timeout must be a non-negative number of seconds");
    }
    let connect_deadline = Instant::now() + Duration::from_secs_f64(args.connect_timeout);
    let cancel = tokio_util::sync::CancellationToken::new();
    let progress = std::io::stderr().is_terminal();
    let mut nodes = Vec::with_capacity(args.nodes);
    let mut conns = Vec::with_capacity(args.nodes);
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut listening = Vec::new();
    for i in 0..args.nodes {
        let name = format!("{}-{i:04}", args.name_prefix);
        let node = Arc::new(SimNode::new(&name, args.magic));
        set_metrics(&node, args.metrics, 0, 0);
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
                        _ = c.cancelled() => return Ok(SimEnd::Cancelled),
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
            let left = connect_deadline.saturating_duration_since(Instant::now());
            let stream = match tokio::time::timeout(left, tracerd_wire::connect(&address)).await {
                Ok(stream) => stream.with_context(|| format!("connecting to {address}"))?,
                Err(_) => bail!(
                    "connecting to {address}: no answer within --connect-timeout {} s",
                    args.connect_timeout
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
        let deadline = connect_deadline;
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
    let handshakes = await_handshakes(&nodes, &mut conns, connect_deadline, &args).await;
    let connected = match handshakes {
        Ok(n) => n,
        Err(e) => {
            cancel.cancel();
            return Err(e);
        }
    };
    // Let tracerd name the nodes (NodeInfo) before the clock starts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.duration);
    let drain_deadline = end + Duration::from_secs_f64(args.drain_timeout.max(0.0));
    let pushed_total = Arc::new(AtomicU64::new(0));
    let mut drivers = Vec::with_capacity(nodes.len());
    for (name, node) in &nodes {
        let (name, node) = (name.clone(), node.clone());
        let (rate, size, metrics) = (args.rate, args.size, args.metrics);
        let pushed_total = pushed_total.clone();
        drivers.push(tokio::spawn(async move {
            let mut objects = CardanoObjects::new(&name, size);
            let mut pushed = 0u64;
            let mut metric_updates = 0u64;
            let mut next_metrics = start + Duration::from_secs(1);
            let mut marks: VecDeque<(u64, Instant, u64)> = VecDeque::new();
            let mut latency: Vec<(u64, u64)> = Vec::new();
            loop {
                let now = Instant::now();
                let pulled = node.sent();
                while marks.front().is_some_and(|m| m.0 <= pulled) {
                    if let Some((_, at, n)) = marks.pop_front() {
                        let micros = now.saturating_duration_since(at).as_micros().max(1) as u64;
                        latency.push((micros.min(MAX_LATENCY_MICROS), n));
                    }
                }
                if metrics > 0 && now >= next_metrics && now < end {
                    metric_updates += 1;
                    set_metrics(&node, metrics, metric_updates, objects.seq());
                    next_metrics += Duration::from_secs(1);
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
                // Each object is encoded once, here, exactly as a cardano-node encodes it
                // (`CardanoObjects`): the node answers a request with slices of these bytes.
                // Handed to the node's queue whole, so a new buffer per chunk.
                let mut encoded = Vec::with_capacity(want * (size + 330));
                let mut lens = Vec::with_capacity(want);
                objects.encode(ts, want, &mut encoded, &mut lens);
                node.push_encoded(encoded, lens);
                pushed += want as u64;
                pushed_total.fetch_add(want as u64, Ordering::Relaxed);
                marks.push_back((pushed, now, want as u64));
                tokio::task::yield_now().await;
            }
            (
                pushed,
                objects.payload_bytes(),
                latency,
                node.sent() >= pushed,
                metric_updates,
            )
        }));
    }
    let reporter = progress.then(|| {
        let nodes: Vec<Arc<SimNode>> = nodes.iter().map(|(_, n)| n.clone()).collect();
        let pushed_total = pushed_total.clone();
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let pulled: u64 = nodes.iter().map(|n| n.sent()).sum();
                let now = Instant::now();
                let rate = (pulled - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                last = (now, pulled);
                eprint!(
                    "\r{:6.1} s  nodes {connected}  sent {}  pulled {pulled}  {rate:.0} obj/s   ",
                    now.duration_since(start).as_secs_f64(),
                    pushed_total.load(Ordering::Relaxed),
                );
            }
        })
    });
    let mut latency = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_MICROS, 3)?;
    let (mut generated, mut machine_bytes, mut drained) = (0u64, 0u64, true);
    let mut metric_updates = 0u64;
    for d in drivers {
        let (pushed, bytes, lat, done, updates) = d.await.context("a node driver failed")?;
        generated += pushed;
        metric_updates += updates;
        machine_bytes += bytes;
        drained &= done;
        for (micros, n) in lat {
            latency.record_n(micros, n)?;
        }
    }
    if let Some(r) = reporter {
        r.abort();
        eprintln!();
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
        "connected": connected,
        "metrics": args.metrics,
        "metric_updates": metric_updates,
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
