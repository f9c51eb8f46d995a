//! Pipelined trace-object requests (`tracerd.cardanoTraceRequests`): a node played by hand
//! over the real mux and CBOR, against the real binary, counts the requests tracerd keeps
//! outstanding before it answers any, then answers them back to back and checks that every
//! object lands once, in the order of the replies.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::net::UnixStream;
use tokio_util::codec::Framed;
use tracerd::cardano::codec::{self, DataPointAsk, EkgAsk, TraceAsk};
use tracerd::cardano::handshake::{self, Outcome};
use tracerd::cardano::mux::{send, Mode, MuxCodec, DATA_POINTS, EKG, TRACE_OBJECTS};
use tracerd_sim::cardano::sample_object;

use crate::support::*;

type Node = Framed<UnixStream, MuxCodec>;

fn start(extra: &str) -> Daemon {
    Daemon::start_with(
        |dir, _| {
            format!(
                "networkMagic: {MAGIC}\nnetwork: {{ tag: AcceptAt, contents: \"{}\" }}\nlogging:\n  - logRoot: {}\n    logMode: FileMode\n    logFormat: ForMachine\nloRequestNum: 50\n",
                dir.join("c.sock").display(),
                dir.join("logs").display()
            )
        },
        extra,
    )
}

/// Connects as a node (the initiator) and completes the handshake.
async fn node(d: &Daemon) -> Node {
    let path = d.dir.path().join("c.sock");
    let deadline = Instant::now() + Duration::from_secs(15);
    let stream = loop {
        match UnixStream::connect(&path).await {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot connect to {path:?}: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let mut framed = Framed::new(stream, MuxCodec::new(Mode::Initiator, 1 << 20));
    let outcome = handshake::propose(&mut framed, MAGIC).await.unwrap();
    assert!(matches!(outcome, Outcome::Accepted), "{outcome:?}");
    framed
}

/// Reads for `window`, answering EKG polls (no metrics) and data-point requests (`NodeInfo`
/// names the node `name`); returns the trace-object requests that arrived, as their counts.
async fn requests_within(framed: &mut Node, window: Duration, name: &str) -> Vec<u16> {
    let info = serde_json::json!({ "niName": name })
        .to_string()
        .into_bytes();
    let mut asked = Vec::new();
    let until = tokio::time::Instant::now() + window;
    while let Ok(Some(msg)) = tokio::time::timeout_at(until, framed.next()).await {
        let msg = msg.unwrap();
        match msg.protocol {
            EKG => {
                if let EkgAsk::Req(_) = codec::decode_ekg_ask(&msg.payload).unwrap() {
                    send(framed, EKG, codec::encode_ekg_response(&[]))
                        .await
                        .unwrap();
                }
            }
            DATA_POINTS => {
                if let DataPointAsk::Request(names) =
                    codec::decode_data_point_ask(&msg.payload).unwrap()
                {
                    let values: Vec<_> = names
                        .into_iter()
                        .map(|n| {
                            let v = (n == "NodeInfo").then(|| info.clone());
                            (n, v)
                        })
                        .collect();
                    send(framed, DATA_POINTS, codec::encode_data_point_reply(&values))
                        .await
                        .unwrap();
                }
            }
            TRACE_OBJECTS => match codec::decode_trace_ask(&msg.payload).unwrap() {
                TraceAsk::Request { blocking, count } => {
                    assert!(blocking, "tracerd's trace requests block");
                    asked.push(count);
                }
                TraceAsk::Done => panic!("tracerd never sends MsgDone"),
            },
            other => panic!("message on mini-protocol {other}"),
        }
    }
    asked
}

/// `data.seq` of every complete line in the node's files, in file order.
fn seqs(dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("node-") && name.ends_with(".json")
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |i| &text[..i]);
        for line in complete.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            out.push(v["data"]["seq"].as_u64().unwrap());
        }
    }
    out
}

async fn wait_seqs(dir: &Path, n: usize) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = seqs(dir);
        if got.len() >= n {
            return got;
        }
        assert!(Instant::now() < deadline, "{} of {n} lines", got.len());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn reply(name: &str, seqs: std::ops::Range<u64>) -> Vec<u8> {
    let objects: Vec<_> = seqs
        .map(|s| sample_object(name, s, 1_784_714_812_000_000_000 + s as i64))
        .collect();
    codec::encode_trace_reply(&objects)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_trace_requests_stay_in_flight_and_their_replies_land_in_order() {
    let d = start("");
    let mut n = node(&d).await;
    // Before any reply: the default keeps two blocking requests of loRequestNum outstanding,
    // and no more however long the node takes.
    let asked = requests_within(&mut n, Duration::from_millis(1500), "pipe-a").await;
    assert_eq!(asked, vec![50, 50], "two requests in flight, none beyond");
    // Both answered back to back (the second before tracerd could have asked a third time),
    // then a third reply to the request tracerd sends after the first.
    send(&mut n, TRACE_OBJECTS, reply("pipe-a", 0..50))
        .await
        .unwrap();
    send(&mut n, TRACE_OBJECTS, reply("pipe-a", 50..100))
        .await
        .unwrap();
    let asked = requests_within(&mut n, Duration::from_millis(800), "pipe-a").await;
    assert_eq!(asked.len(), 2, "one new request per reply: {asked:?}");
    send(&mut n, TRACE_OBJECTS, reply("pipe-a", 100..130))
        .await
        .unwrap();
    let got = wait_seqs(&d.dir.path().join("logs/pipe-a"), 130).await;
    assert_eq!(
        got,
        (0..130).collect::<Vec<_>>(),
        "every object once, in order"
    );
    // Still two outstanding (one answered, one sent after it).
    let asked = requests_within(&mut n, Duration::from_millis(500), "pipe-a").await;
    assert_eq!(asked.len(), 1, "{asked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_request_in_flight_is_cardano_tracers_behaviour() {
    let d = start("  cardanoTraceRequests: 1\n");
    let mut n = node(&d).await;
    let asked = requests_within(&mut n, Duration::from_millis(1500), "pipe-b").await;
    assert_eq!(asked, vec![50], "one request until it is answered");
    send(&mut n, TRACE_OBJECTS, reply("pipe-b", 0..50))
        .await
        .unwrap();
    let asked = requests_within(&mut n, Duration::from_millis(800), "pipe-b").await;
    assert_eq!(asked, vec![50], "the next one after the reply");
    let got = wait_seqs(&d.dir.path().join("logs/pipe-b"), 50).await;
    assert_eq!(got, (0..50).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_closes_after_its_last_two_replies_loses_neither() {
    use futures_util::SinkExt;
    let d = start("");
    let mut n = node(&d).await;
    let asked = requests_within(&mut n, Duration::from_millis(1500), "pipe-c").await;
    assert_eq!(asked, vec![50, 50]);
    // The node stops reading first (`shutdown(SHUT_RD)`: tracerd's next write fails with
    // EPIPE, whenever it comes), then sends both replies in one write and closes. tracerd's
    // request after the first reply fails; nothing acknowledges a Cardano reply, so the node
    // counts both delivered, and the second must still be read and written.
    let stream = n.into_inner().into_std().unwrap();
    stream.shutdown(std::net::Shutdown::Read).unwrap();
    let mut n = Framed::new(
        UnixStream::from_std(stream).unwrap(),
        MuxCodec::new(Mode::Initiator, 1 << 20),
    );
    for (protocol, payload) in [
        (TRACE_OBJECTS, reply("pipe-c", 0..50)),
        (TRACE_OBJECTS, reply("pipe-c", 50..100)),
    ] {
        n.feed(tracerd::cardano::mux::Message {
            protocol,
            payload: payload.into(),
        })
        .await
        .unwrap();
    }
    n.flush().await.unwrap();
    drop(n);
    let got = wait_seqs(&d.dir.path().join("logs/pipe-c"), 100).await;
    assert_eq!(
        got,
        (0..100).collect::<Vec<_>>(),
        "every object once, in order"
    );
}
