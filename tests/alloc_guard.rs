//! The hot path's regression guard (issue 21): allocations per trace object, counted exactly by
//! a counting global allocator, for decode → render → write of trace batches on the native and
//! the Cardano paths. Allocation counts do not depend on the machine's load, so this test
//! cannot flake: it fails only when a change makes the path allocate more than the bounds below.
//!
//! What is counted, per path, over batches shaped like `tracerd-load`'s (160-byte machine JSON,
//! 295-byte lines): decoding the frame (`TracerCodec`, as the native session does) or the
//! `MsgTraceObjectsReply` from its SDUs (`MuxCodec`, then `index::decode_reply`, as the
//! Cardano session does), rendering and writing the lines to a real file (`NodeLog::append_run`), the checkpoint after
//! the batch, and dropping the decoded objects. Not counted: the session's socket read into its
//! (reused) buffer and the queue hop to the writer task (a `Job` and a `spawn_blocking`, per
//! batch and independent of the objects in it).
//!
//! The node side is counted too: `tracerd-load`'s generator and the forwarder library
//! sending full and small batches over a real Unix socket to a receiver that decodes them as
//! tracerd's session does (see `forwarder` below).
//!
//! This file is its own test binary with one `#[test]`, so no other test allocates while it
//! counts. BENCHMARKS.md ("Allocations per object") quotes its figures; run it with
//! `cargo test --test alloc_guard -- --nocapture` to print them.

use std::alloc::System;

use bytes::BytesMut;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tokio_util::codec::Decoder;
use tracerd::cardano::codec;
use tracerd::config::LogFormat;
use tracerd::logs::writer::NodeLog;
use tracerd::logs::{format, FileTarget, LogSettings, Policy};
use tracerd::model::{DetailLevel, MachineForm, Severity, TraceBatch, TraceObject};
use tracerd::native::{encode_node_frame, NodeMessage, TracerCodec};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// One measured path: its bounds, per object.
struct Bound {
    name: &'static str,
    /// Allocator calls (allocations and reallocations) per object, at most.
    calls: f64,
    /// Bytes requested per object, at most.
    bytes: f64,
}

/// The native path, batches of 1,024 objects (the forwarder's largest batch, as at max load).
const NATIVE_FULL: Bound = Bound {
    name: "native, 1024-object batches",
    calls: 0.05,
    bytes: 190.0,
};
/// The native path, batches of 16 objects (as at half load: per-batch costs weigh more).
const NATIVE_SMALL: Bound = Bound {
    name: "native, 16-object batches",
    calls: 0.75,
    bytes: 205.0,
};
/// The Cardano path, replies of 100 objects (`loRequestNum: 100`), the node's own line, from
/// the SDUs as the session reads them: the mux reassembles the reply (its buffer, ~340 bytes
/// an object with 1/16 of room for a longer next reply, and its shared header) and records its objects (`index`, 64 bytes an object),
/// the objects are built from that record with their strings as slices of the reply
/// (`index::decode_reply`), written, and the checkpoint. (4.09 calls and 560 bytes per
/// object when every string was an owned `String`; 0.090 / 185.8 for the decode alone,
/// without the mux, before the record.)
const CARDANO: Bound = Bound {
    name: "cardano, 100-object replies",
    calls: 0.13,
    bytes: 690.0,
};

/// The node side at max load: `tracerd-load`'s generator and the forwarder library, full
/// batches of 1,024 objects over a real socket (the receiving end's decode included).
/// (The generator allocated five times per object before its machine texts shared one
/// buffer per batch. Bytes: the machine texts' buffer, the batch's `Vec` in the forwarder, the
/// frame, and the receiver's decoded `Vec` and read buffer.)
const FORWARDER_FULL: Bound = Bound {
    name: "forwarder + generator, 1024-object batches",
    calls: 0.02,
    bytes: 1_250.0,
};
/// The node side with batches of 16 objects (per-batch costs weigh more).
const FORWARDER_SMALL: Bound = Bound {
    name: "forwarder + generator, 16-object batches",
    calls: 0.45,
    bytes: 850.0,
};

/// The simulator's side of the Cardano path (`tracerd-load --protocol cardano`): objects
/// encoded into a chunk of 256 (`CardanoObjects`), queued on a `SimNode` and taken as the
/// parts of 100-object replies (what the forwarder writes with `writev`). Per chunk: its
/// buffer and lengths (the buffer is ~490 bytes an object); per reply: the parts' `Vec`.
const SIMULATOR: Bound = Bound {
    name: "cardano simulator, 256-object chunks, 100-object replies",
    calls: 0.03,
    bytes: 520.0,
};

const ROUNDS: usize = 8;
const NOW: i64 = 1_790_000_000;

/// An object like `tracerd-load`'s: 160 bytes of machine JSON, a namespace of three parts.
fn object(seq: u64) -> TraceObject {
    let mut machine = format!(
        "{{\"kind\":\"AddedToCurrentChain\",\"node\":\"load-0001\",\"seq\":{seq},\"slot\":{},\"block\":\"",
        140_000_000 + seq / 20
    );
    machine.push_str(&"ab".repeat(16));
    machine.push_str("\",\"pad\":\"");
    while machine.len() < 158 {
        machine.push('x');
    }
    machine.push_str("\"}");
    TraceObject {
        namespace: "ChainDB.AddBlockEvent.AddedToCurrentChain".into(),
        severity: Severity::Notice,
        detail: DetailLevel::Normal,
        timestamp_ns: 1_790_000_000_123_456_789 + seq as i64,
        hostname: "load-0001".into(),
        thread_id: format!("{}", 40 + seq % 4).into(),
        machine: machine.into(),
        form: MachineForm::Payload,
        human: None,
    }
}

/// The same object as a Cardano node sends it: its machine text is the whole machine line.
fn cardano_object(seq: u64) -> TraceObject {
    let mut obj = object(seq);
    let mut line = Vec::new();
    format::push_machine(&mut line, &obj);
    line.pop();
    obj.machine = String::from_utf8(line)
        .expect("rendered lines are UTF-8")
        .into();
    obj.form = MachineForm::Line;
    obj
}

fn open_log(root: &std::path::Path) -> NodeLog {
    let settings = LogSettings {
        targets: vec![FileTarget {
            root: root.to_path_buf(),
            format: LogFormat::ForMachine,
        }],
        journal: None,
        policy: Some(Policy {
            limit_bytes: 100 << 20,
            max_age_secs: 86_400,
            keep_files: 10,
        }),
        prune_every_secs: 60,
    };
    NodeLog::open(&settings, "node", NOW, false)
        .expect("open the node's log")
        .0
}

/// What one path cost, per object.
struct Cost {
    calls: f64,
    bytes: f64,
    objects: u64,
}

/// Writes one decoded batch as the writer does: one run, then the checkpoint.
fn write(log: &mut NodeLog, batch: TraceBatch) -> u64 {
    let first = if batch.first_seq == 0 {
        log.seq() + 1
    } else {
        batch.first_seq
    };
    let refs: Vec<&TraceObject> = batch.objects.iter().collect();
    log.append_run(first, &refs, NOW).expect("append");
    log.checkpoint().expect("checkpoint");
    batch.objects.len() as u64
}

/// Counts `run` over `inputs` (after one warm-up input), per object.
fn measure<T>(inputs: Vec<T>, mut run: impl FnMut(T) -> u64) -> Cost {
    let mut inputs = inputs.into_iter();
    run(inputs.next().expect("a warm-up input"));
    let region = Region::new(GLOBAL);
    let mut objects = 0;
    for input in inputs {
        objects += run(input);
    }
    let stats = region.change();
    let calls = (stats.allocations + stats.reallocations) as f64;
    let bytes = stats.bytes_allocated as f64 + stats.bytes_reallocated.max(0) as f64;
    Cost {
        calls: calls / objects as f64,
        bytes: bytes / objects as f64,
        objects,
    }
}

fn native(per_batch: u64, dir: &std::path::Path) -> Cost {
    let frames: Vec<BytesMut> = (0..=ROUNDS as u64)
        .map(|round| {
            let first = round * per_batch + 1;
            encode_node_frame(NodeMessage::Traces(TraceBatch {
                first_seq: first,
                objects: (first..first + per_batch).map(object).collect(),
            }))
        })
        .collect();
    let mut codec = TracerCodec::with_max_objects(16 << 20, 10_000);
    let mut log = open_log(dir);
    let cost = measure(frames, |mut frame| {
        match codec.decode(&mut frame).expect("a valid frame") {
            Some(NodeMessage::Traces(batch)) => write(&mut log, batch),
            other => panic!("expected a trace batch, got {other:?}"),
        }
    });
    assert_eq!(
        log.seq(),
        (ROUNDS as u64 + 1) * per_batch,
        "every object written"
    );
    cost
}

fn cardano(per_reply: u64, dir: &std::path::Path) -> Cost {
    use tokio_util::codec::Encoder;
    use tracerd::cardano::mux::{Message, Mode, MuxCodec, TRACE_OBJECTS};
    // Each reply as the node sends it: SDUs of 12,288 bytes, read into one buffer.
    let mut node = MuxCodec::new(Mode::Responder, 16 << 20);
    let streams: Vec<BytesMut> = (0..=ROUNDS as u64)
        .map(|round| {
            let first = round * per_reply + 1;
            let objects: Vec<TraceObject> =
                (first..first + per_reply).map(cardano_object).collect();
            let payload = bytes::Bytes::from(codec::encode_trace_reply(&objects));
            let mut sdus = BytesMut::new();
            node.encode(
                Message {
                    protocol: TRACE_OBJECTS,
                    payload,
                },
                &mut sdus,
            )
            .expect("encode");
            sdus
        })
        .collect();
    let mut mux = MuxCodec::new(Mode::Initiator, 16 << 20);
    mux.end_handshake();
    let mut log = open_log(dir);
    let cost = measure(streams, |mut sdus| {
        let msg = mux
            .decode(&mut sdus)
            .expect("valid SDUs")
            .expect("a whole reply");
        // As the session decodes: from the record the mux made of the reply.
        let index = mux.take_trace_index();
        assert!(index.is_some(), "the reply has a record");
        let objects =
            tracerd::cardano::index::decode_reply(&msg.payload, per_reply as usize, index.as_ref())
                .expect("a valid reply");
        write(
            &mut log,
            TraceBatch {
                first_seq: 0,
                objects,
            },
        )
    });
    assert_eq!(
        log.seq(),
        (ROUNDS as u64 + 1) * per_reply,
        "every object written"
    );
    cost
}

/// The node side: `tracerd-load`'s generator hands `per_batch` objects at a time to a
/// [`Forwarder`], which numbers, encodes and sends them over a Unix socket to a receiver that
/// decodes each batch with `TracerCodec` (as tracerd's session does) and acknowledges it.
/// Counted: generating the objects, `trace_many`, the forwarder's task (batch, frame, write,
/// acknowledgement), the receiver's decode and `Ack`, and the objects' drop; not counted: the
/// connection and handshake (one warm-up batch before counting). One thread (a current-thread
/// runtime), and each round waits for its acknowledgement, so every batch is exactly
/// `per_batch` objects and the counts are the same on every run. Checks that the receiver
/// got every object once, in order, with the generator's content.
fn forwarder(per_batch: usize) -> Cost {
    use futures_util::{SinkExt, StreamExt};
    use tokio_util::codec::Framed;
    use tracerd::native::TracerMessage;
    use tracerd_forwarder::{Address, Forwarder, ForwarderConfig};
    use tracerd_sim::load::NativeObjects;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tracer.sock");
    runtime.block_on(async move {
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        // The receiver: every object's sequence number and `seq` field checked in order.
        let receiver = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            // A read buffer larger than a frame from the start, so the receiver's own buffer
            // growth (not the node side's cost) stays out of the count.
            let codec = TracerCodec::with_max_objects(16 << 20, 10_000);
            let mut framed = Framed::with_capacity(stream, codec, 1 << 20);
            let mut next = 1u64;
            while let Some(msg) = framed.next().await {
                match msg.expect("a valid frame") {
                    NodeMessage::Hello(h) => framed
                        .send(TracerMessage::Accept {
                            version: h.versions[0],
                            node_name: h.node_name,
                            persisted_seq: 0,
                            max_frame_bytes: 16 << 20,
                        })
                        .await
                        .expect("accept"),
                    NodeMessage::Traces(batch) => {
                        assert_eq!(batch.first_seq, next, "batches in order, no gap");
                        for o in &batch.objects {
                            let at = o.machine.find("\"seq\":").expect("a seq field") + 6;
                            let digits = &o.machine[at..][..o.machine[at..].find(',').expect(",")];
                            assert_eq!(digits.parse::<u64>().ok(), Some(next), "object {next}");
                            assert_eq!(o.hostname, "load-0001");
                            next += 1;
                        }
                        framed
                            .send(TracerMessage::Ack(next - 1))
                            .await
                            .expect("ack");
                    }
                    _ => {}
                }
            }
            next - 1
        });
        let mut config = ForwarderConfig::new(Address::Unix(path.clone()), "load-0001");
        config.ping_every = None;
        config.remote_config = false;
        let fwd = Forwarder::start(config).expect("forwarder");
        let mut gen = NativeObjects::new("load-0001", 160);
        let mut objects = Vec::new();
        let mut round = |objects: &mut Vec<TraceObject>| {
            gen.batch(NOW, per_batch, objects);
            assert_eq!(fwd.trace_many(objects.drain(..)), per_batch);
        };
        round(&mut objects);
        assert!(
            fwd.flush(std::time::Duration::from_secs(10)).await,
            "warm-up acknowledged"
        );
        let region = Region::new(GLOBAL);
        for _ in 0..ROUNDS {
            round(&mut objects);
            assert!(
                fwd.flush(std::time::Duration::from_secs(10)).await,
                "acknowledged"
            );
        }
        let stats = region.change();
        let closed = fwd.close(std::time::Duration::from_secs(5)).await;
        let received = receiver.await.expect("receiver");
        let objects = (ROUNDS * per_batch) as u64;
        assert_eq!(
            (closed.acked, received),
            (objects + per_batch as u64, objects + per_batch as u64)
        );
        let calls = (stats.allocations + stats.reallocations) as f64;
        let bytes = stats.bytes_allocated as f64 + stats.bytes_reallocated.max(0) as f64;
        Cost {
            calls: calls / objects as f64,
            bytes: bytes / objects as f64,
            objects,
        }
    })
}

/// [`SIMULATOR`]: per round 4 chunks of 256 objects encoded and queued, then taken in replies
/// of 100 until none is left; the parts taken are checked against what was queued.
fn simulator() -> Cost {
    use tracerd::cardano::forwarder::Source;
    use tracerd_sim::cardano::SimNode;
    use tracerd_sim::load::CardanoObjects;

    let node = SimNode::new("load-0001", 764_824_073);
    let mut objects = CardanoObjects::new("load-0001", 160);
    let (mut queued, mut taken) = (0usize, 0usize);
    let mut parts = Vec::new();
    let cost = measure((0..=ROUNDS).collect(), |_| {
        for _ in 0..4 {
            let mut chunk = Vec::with_capacity(256 * (160 + 330));
            let mut lens = Vec::with_capacity(256);
            objects.encode(NOW * 1_000_000_000, 256, &mut chunk, &mut lens);
            queued += chunk.len();
            node.push_encoded(chunk, lens);
        }
        let mut n = 0;
        loop {
            parts.clear();
            let got = node.take_parts(100, &mut parts);
            if got == 0 {
                break;
            }
            n += got;
            taken += parts.iter().map(|p| p.len()).sum::<usize>();
        }
        n as u64
    });
    assert_eq!(cost.objects, (ROUNDS * 1024) as u64);
    assert_eq!(
        (taken, node.queued()),
        (queued, 0),
        "every byte queued taken once"
    );
    cost
}

/// The lines on disk: every object once, as tracerd renders it (a count that is not backed by
/// the file would measure nothing).
fn check_lines(dir: &std::path::Path, expected: u64, native: bool) {
    let node = dir.join("node");
    let mut lines = 0u64;
    for entry in std::fs::read_dir(&node).expect("node directory") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") && !path.is_symlink() {
            let text = std::fs::read_to_string(&path).expect("log file");
            for (i, line) in text.lines().enumerate() {
                let want = {
                    let obj = if native {
                        object(lines + i as u64 + 1)
                    } else {
                        cardano_object(lines + i as u64 + 1)
                    };
                    let mut out = Vec::new();
                    format::push_machine(&mut out, &obj);
                    out.pop();
                    String::from_utf8(out).expect("UTF-8")
                };
                assert_eq!(line, want, "line {} of {}", i + 1, path.display());
            }
            lines += text.lines().count() as u64;
        }
    }
    assert_eq!(lines, expected, "lines on disk in {}", node.display());
}

fn report(bound: &Bound, cost: Cost, failures: &mut Vec<String>) {
    eprintln!(
        "{}: {:.3} allocator calls and {:.1} bytes per object ({} objects; bounds {} and {})",
        bound.name, cost.calls, cost.bytes, cost.objects, bound.calls, bound.bytes
    );
    if cost.calls > bound.calls || cost.bytes > bound.bytes {
        failures.push(format!(
            "{}: {:.3} allocator calls / {:.1} bytes per object, bounds {} / {}",
            bound.name, cost.calls, cost.bytes, bound.calls, bound.bytes
        ));
    }
}

#[test]
fn allocations_per_object_stay_within_their_bounds() {
    let mut failures = Vec::new();
    // (bound, objects per batch, native or Cardano)
    let cases = [
        (&NATIVE_FULL, 1024, true),
        (&NATIVE_SMALL, 16, true),
        (&CARDANO, 100, false),
        (&FORWARDER_FULL, 1024, true),
        (&FORWARDER_SMALL, 16, true),
    ];
    report(&SIMULATOR, simulator(), &mut failures);
    for (bound, per_batch, is_native) in cases {
        if bound.name.starts_with("forwarder") {
            report(bound, forwarder(per_batch as usize), &mut failures);
            continue;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let cost = if is_native {
            native(per_batch, dir.path())
        } else {
            cardano(per_batch, dir.path())
        };
        check_lines(dir.path(), (ROUNDS as u64 + 1) * per_batch, is_native);
        report(bound, cost, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "the hot path allocates more than its bound (see BENCHMARKS.md, \"Allocations per \
         object\"): {failures:?}"
    );
}
