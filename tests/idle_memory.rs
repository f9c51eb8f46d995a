//! Memory per idle node (issue 21): heap bytes tracerd keeps live for each connected node that
//! sends nothing, counted exactly by a counting global allocator around the daemon itself
//! (`tracerd::app::run` in this process), not RSS, so the bound does not move with the
//! machine's load. The nodes are `tracerd-load --rate 0` processes (their allocations are not
//! counted); the figure is the growth of live heap bytes between `BASE` and `BASE + MORE`
//! connected nodes, divided by `MORE`, so fixed costs (listeners, registries' first buckets)
//! are not charged to the nodes.
//!
//! What one idle node holds (BENCHMARKS.md, "Idle fleet: memory per node"): its session
//! task (the future; its `Framed` buffers are given back while it is idle), its writer task
//! and `NodeLog`, its queue (of boxed jobs) and watch channels, its registry entry and live
//! state, its `tracerd_*` series (`metrics::node_series`) and its round-trip times. This is
//! a debug build: futures are larger than in release.
//!
//! Then every node leaves at once (their generators killed): the closing sessions must not
//! start a task each (a node that sent nothing has no writer task; its log's final
//! checkpoint is one writer-thread job), which is what raised the 10,000-node fleet's RSS by
//! ~10 MiB while it left (issue 21, BENCHMARKS.md "Idle fleet: the close storm").
//!
//! Its own test binary with one `#[test]`, so no other test allocates while it counts. Run
//! with `cargo test --test idle_memory -- --nocapture` to print the figure.

use std::alloc::System;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;

use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Heap bytes live per idle connected node (debug build), at most. BENCHMARKS.md has the
/// measured figure (7,330 bytes after issue 21's cuts, from 17,540; the writer task started by
/// the first batch took it from ~9,100); the bound leaves ~9 %
/// for hash-table growth steps.
const MAX_BYTES_PER_IDLE_NODE: f64 = 8_000.0;

/// Tasks the closing of every idle node at once may add to those alive before, at most
/// (slack for the daemon's own timers). A node that sent nothing has its log finished on a
/// writer thread without a writer task; when each closing session started one (the final
/// checkpoint's), 500 nodes leaving at once had ~170 such tasks alive together, each with
/// its future and state, and 10,000 raised tracerd's RSS by ~10-13 MiB (issue 21).
const MAX_TASKS_ADDED_BY_CLOSING: usize = 16;

const BASE: usize = 100;
const MORE: usize = 400;

fn live_bytes() -> i64 {
    let s = GLOBAL.stats();
    s.bytes_allocated as i64 - s.bytes_deallocated as i64 + s.bytes_reallocated as i64
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `n` idle nodes named `<prefix>-NNNN` from a `tracerd-load` process.
fn idle_nodes(port: u16, prefix: &str, n: usize) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tracerd-load"))
        .args(["--connect", &format!("127.0.0.1:{port}")])
        .args(["--nodes", &n.to_string(), "--rate", "0", "--duration", "60"])
        .args(["--name-prefix", prefix, "--magic", "764824073"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits (bounded) until `n` node directories exist under `logs` and the heap stops moving,
/// then returns the live heap bytes.
fn settled(logs: &Path, n: usize) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(logs).map_or(0, |d| d.count()) < n {
        assert!(Instant::now() < deadline, "{n} nodes did not connect");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Connected is not settled: the last sessions' first checkpoint, their first ping
    // (100 ms after the handshake) and its round-trip time are still under way. Wait past
    // them, then until three readings 300 ms apart agree within 0.1 %.
    std::thread::sleep(Duration::from_millis(1000));
    steady(deadline, |_| true, "the heap did not settle")
}

/// Reads the live heap every 300 ms until three readings in a row agree within 0.1 % and
/// `done` holds for the highest of them, which it returns; panics with `what` and the
/// readings at `deadline`.
fn steady(deadline: Instant, done: impl Fn(i64) -> bool, what: &str) -> i64 {
    let mut readings = vec![live_bytes()];
    loop {
        std::thread::sleep(Duration::from_millis(300));
        readings.push(live_bytes());
        let last3 = &readings[readings.len().saturating_sub(3)..];
        let (lo, hi) = (last3.iter().min().unwrap(), last3.iter().max().unwrap());
        if last3.len() == 3 && done(*hi) && (hi - lo) as f64 <= 0.001 * *hi as f64 {
            return *hi;
        }
        assert!(Instant::now() < deadline, "{what}: {readings:?}");
    }
}

/// Waits (bounded) until the closing sessions have given back most of what the nodes above
/// `BASE` held (their heap back below halfway between `at_base` and `before`) and the heap
/// stops moving; the live heap bytes then.
fn closed(before: i64, at_base: i64) -> i64 {
    steady(
        Instant::now() + Duration::from_secs(60),
        |hi| hi < (before + at_base) / 2,
        "the closing sessions did not give their heap back",
    )
}

#[test]
fn an_idle_node_keeps_at_most_the_stated_heap_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let port = free_port();
    let text = format!(
        "networkMagic: 764824073\nnetwork: null\nhasPrometheus: null\n\
         logging:\n  - logRoot: {}\n    logMode: FileMode\n    logFormat: ForMachine\n\
         tracerd:\n  native:\n    acceptAt: [\"127.0.0.1:{port}\"]\n",
        logs.display()
    );
    let config = tracerd::config::parse(&text)
        .unwrap_or_else(|p| panic!("config: {p:?}"))
        .config;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    let daemon = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(16)
            .enable_all()
            .build()
            .unwrap();
        handle_tx.send(rt.handle().clone()).unwrap();
        rt.block_on(tracerd::app::run(
            config,
            tracerd::app::Options::default(),
            async {
                let _ = stop_rx.await;
            },
            |_| {},
        ))
        .unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tracerd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut first = idle_nodes(port, "a", BASE);
    let at_base = settled(&logs, BASE);
    let mut second = idle_nodes(port, "b", MORE);
    let at_more = settled(&logs, BASE + MORE);
    let per_node = (at_more - at_base) as f64 / MORE as f64;
    println!(
        "idle nodes: {BASE} -> {} connected, live heap {at_base} -> {at_more} bytes: \
         {per_node:.0} bytes per idle node (bound {MAX_BYTES_PER_IDLE_NODE})",
        BASE + MORE
    );

    // Every node leaves at once (SIGKILL: all their sockets close together), as a fleet
    // whose generator or network goes away does: what the closing sessions hold above the
    // idle fleet's heap while their logs' final checkpoints wait for a writer thread.
    // The runtime's alive tasks and the heap sampled every 100 µs (the crate forbids the
    // `unsafe` a peak-tracking allocator would need) until the sessions have closed. The
    // tasks are the bound: the heap's peak depends on how the closes interleave.
    let runtime = handle_rx.recv().unwrap().metrics();
    let before_close = live_bytes();
    let tasks_before = runtime.num_alive_tasks();
    let peak = Arc::new(AtomicI64::new(before_close));
    let most_tasks = Arc::new(AtomicUsize::new(tasks_before));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, most_tasks, sampling) = (peak.clone(), most_tasks.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(live_bytes(), Ordering::Relaxed);
                most_tasks.fetch_max(runtime.num_alive_tasks(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(100));
            }
        })
    };
    for child in [&mut first, &mut second] {
        let _ = child.kill();
        let _ = child.wait();
    }
    let after_close = closed(before_close, at_base);
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed);
    let most_tasks = most_tasks.load(Ordering::Relaxed);
    println!("tasks: {tasks_before} before the close, at most {most_tasks} during it");
    let close_per_node = (peak - before_close) as f64 / (BASE + MORE) as f64;
    println!(
        "{} idle nodes leaving at once: live heap {before_close} -> peak {peak} (sampled) -> \
         {after_close} bytes: {close_per_node:.0} bytes per node above the idle fleet's heap",
        BASE + MORE,
    );
    let _ = stop_tx.send(());
    daemon.join().unwrap();
    assert!(
        most_tasks <= tasks_before + MAX_TASKS_ADDED_BY_CLOSING,
        "{} idle nodes leaving at once raised the runtime's alive tasks from {tasks_before} \
         to {most_tasks}: closing sessions start tasks (a writer task per node?)",
        BASE + MORE
    );
    assert!(
        per_node <= MAX_BYTES_PER_IDLE_NODE,
        "an idle node keeps {per_node:.0} heap bytes, more than the bound of \
         {MAX_BYTES_PER_IDLE_NODE}"
    );
    assert!(
        per_node > 0.0,
        "no growth measured: the nodes did not connect?"
    );
}
