//! `--protocol cardano`: N simulated cardano-nodes ([`SimNode`]) that tracerd pulls from,
//! connecting to tracerd's `AcceptAt` address or, with `--listen DIR`, listening for
//! tracerd's `ConnectTo` dials; then the summary.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use tokio::time::Instant;
use tracerd_wire::cardano::mux::Mode;
use tracerd_wire::model::{MachineForm, TraceObject};
use tracerd_wire::Address;

use super::content::{now_ns, push_machine_line, Generator};
use super::{latency_json, mean, rate_json, round, Args, Rate, CHUNK, MAX_LATENCY_MICROS};
use crate::cardano::{SimEnd, SimNode};

/// `--protocol cardano`: simulated cardano-nodes that tracerd pulls from.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
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
            let stream = tracerd_wire::connect(&address)
                .await
                .with_context(|| format!("connecting to {address}"))?;
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
                        push_machine_line(&mut line, &o);
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
