//! A simulated cardano-node: the FORWARDER side of the forwarding protocols, in either
//! connection role, served by `tracerd_wire::cardano::forwarder` (the same code tracerd's
//! re-forwarding uses to play a node). Used by the end-to-end tests and reusable for load
//! generation (`tracerd-load --protocol cardano`).
//!
//! It serves trace objects from an in-memory queue (blocking requests wait until something
//! is queued, replies hold at most the requested number), answers EKG requests from a metric
//! table with per-connection delta bookkeeping, and serves `NodeInfo`. The queue holds each
//! object already CBOR-encoded, as the node's reply carries it, so a reply is a copy of
//! queued bytes, not an encoding per request.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use tracerd_wire::cardano::codec::{self, EkgValue};
pub use tracerd_wire::cardano::forwarder::ForwardError as SimError;
use tracerd_wire::cardano::forwarder::{self, End, Source};
use tracerd_wire::cardano::mux::Mode;
use tracerd_wire::model::{DetailLevel, MachineForm, Severity, TraceObject};

/// Largest message the simulated node reassembles.
const SIM_MAX_MESSAGE: usize = 16 << 20;

/// How a simulated connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimEnd {
    /// The acceptor closed the connection.
    Closed,
    /// The acceptor sent `MsgDone` on the given mini-protocol.
    Done(u16),
    /// The handshake was refused (by either side); the refusal, for display.
    Refused(String),
    /// Cancelled by the caller.
    Cancelled,
}

/// A simulated node; share it between connections with an `Arc`.
#[derive(Debug)]
pub struct SimNode {
    magic: u32,
    node_info: Option<Vec<u8>>,
    legacy_ekg: bool,
    metrics: Mutex<Vec<(String, EkgValue)>>,
    data_points: Mutex<Vec<(String, Vec<u8>)>>,
    queue: Mutex<Encoded>,
    notify: Notify,
    sent: AtomicU64,
    /// Handshakes accepted, and the last refusal (for a caller waiting for its nodes).
    accepted: AtomicU64,
    refusal: Mutex<Option<String>>,
}

impl SimNode {
    /// A node called `name` (its `NodeInfo` niName) on network `magic`.
    pub fn new(name: &str, magic: u32) -> SimNode {
        let info = serde_json::json!({
            "niName": name,
            "niProtocol": "Cardano",
            "niVersion": "10.6.2",
            "niCommit": "0000000",
            "niStartTime": "2026-07-22T10:00:00Z",
            "niSystemStartTime": "2017-09-23T21:44:51Z",
        });
        SimNode {
            node_info: Some(info.to_string().into_bytes()),
            ..SimNode::anonymous(magic)
        }
    }

    /// A node that has no `NodeInfo` data point.
    pub fn anonymous(magic: u32) -> SimNode {
        SimNode {
            magic,
            node_info: None,
            legacy_ekg: false,
            metrics: Mutex::new(Vec::new()),
            data_points: Mutex::new(Vec::new()),
            queue: Mutex::new(Encoded::default()),
            notify: Notify::new(),
            sent: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            refusal: Mutex::new(None),
        }
    }

    /// Plays an ekg-forward older than 0.9: `GetUpdatedMetrics` ends the connection.
    pub fn with_legacy_ekg(mut self) -> SimNode {
        self.legacy_ekg = true;
        self
    }

    /// Queues trace objects for forwarding.
    pub fn push(&self, objects: impl IntoIterator<Item = TraceObject>) {
        let mut bytes = Vec::new();
        let mut lens = Vec::new();
        for o in objects {
            let before = bytes.len();
            codec::encode_trace_object(&mut bytes, &(&o).into());
            lens.push(bytes.len() - before);
        }
        self.push_encoded(bytes, lens);
    }

    /// Queues trace objects already encoded ([`codec::encode_trace_object`]) back to back in
    /// `bytes`, `lens` giving each one's length (the buffer is kept, not copied).
    pub fn push_encoded(&self, bytes: Vec<u8>, lens: Vec<usize>) {
        debug_assert_eq!(lens.iter().sum::<usize>(), bytes.len());
        lock(&self.queue).push(bytes, lens);
        self.notify.notify_one();
    }

    /// Sets (or adds) a metric.
    pub fn set_metric(&self, name: &str, value: EkgValue) {
        let mut metrics = lock(&self.metrics);
        match metrics.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = value,
            None => metrics.push((name.to_string(), value)),
        }
    }

    /// Sets (or adds) a data point other than `NodeInfo`, as JSON text.
    pub fn set_data_point(&self, name: &str, json: &str) {
        let mut points = lock(&self.data_points);
        match points.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = json.as_bytes().to_vec(),
            None => points.push((name.to_string(), json.as_bytes().to_vec())),
        }
    }

    /// Trace objects forwarded so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// How many of this node's handshakes were accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// The last handshake refusal (either side's), if any.
    pub fn last_refusal(&self) -> Option<String> {
        lock(&self.refusal).clone()
    }

    /// Trace objects still queued.
    pub fn queued(&self) -> usize {
        lock(&self.queue).objects
    }

    /// Forwards over `stream` until the acceptor closes, sends `MsgDone`, or `cancel` fires.
    /// `mode` is the node's connection role: `Initiator` when it connected (tracerd
    /// AcceptAt), `Responder` when it accepted (tracerd ConnectTo).
    pub async fn run<S>(
        &self,
        stream: S,
        mode: Mode,
        cancel: &CancellationToken,
    ) -> Result<SimEnd, SimError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let accepted = || {
            self.accepted.fetch_add(1, Ordering::Relaxed);
        };
        let served = forwarder::run(stream, mode, self.magic, SIM_MAX_MESSAGE, self, accepted);
        let end = tokio::select! {
            _ = cancel.cancelled() => return Ok(SimEnd::Cancelled),
            end = served => end?,
        };
        Ok(match end {
            End::Closed | End::Finished => SimEnd::Closed,
            End::Done(protocol) => SimEnd::Done(protocol),
            End::Refused(refusal) => {
                *lock(&self.refusal) = Some(refusal.clone());
                SimEnd::Refused(refusal)
            }
        })
    }
}

impl Source for SimNode {
    fn take(&self, max: usize) -> Vec<TraceObject> {
        let mut reply = codec::REPLY_START.to_vec();
        if self.take_encoded(max, &mut reply) == 0 {
            return Vec::new();
        }
        reply.push(codec::REPLY_END);
        // These bytes were encoded from trace objects by `push`.
        codec::decode_trace_reply(&reply).unwrap_or_default()
    }

    fn take_encoded(&self, max: usize, out: &mut Vec<u8>) -> usize {
        let mut parts = Vec::new();
        let n = self.take_parts(max, &mut parts);
        for p in parts {
            out.extend_from_slice(&p);
        }
        n
    }

    fn take_parts(&self, max: usize, parts: &mut Vec<Bytes>) -> usize {
        lock(&self.queue).take(max, parts)
    }

    fn changed(&self) -> impl std::future::Future<Output = ()> + Send {
        self.notify.notified()
    }

    fn metrics(&self) -> Vec<(String, EkgValue)> {
        lock(&self.metrics).clone()
    }

    fn data_point(&self, name: &str) -> impl std::future::Future<Output = Option<Vec<u8>>> + Send {
        let value = if name == "NodeInfo" {
            self.node_info.clone()
        } else {
            lock(&self.data_points)
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        std::future::ready(value)
    }

    fn sent(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn legacy_ekg(&self) -> bool {
        self.legacy_ekg
    }
}

/// Queued objects, encoded, in the chunks they were queued in (oldest first): a chunk's
/// bytes hold its objects back to back, `lens` their lengths, `at` where the first unsent one
/// starts. Taking hands out slices of the chunks (a reply is written from them); nothing is
/// copied or moved.
#[derive(Debug, Default)]
struct Encoded {
    chunks: VecDeque<Chunk>,
    objects: usize,
}

#[derive(Debug)]
struct Chunk {
    bytes: Bytes,
    lens: VecDeque<usize>,
    at: usize,
}

impl Encoded {
    fn push(&mut self, bytes: Vec<u8>, lens: Vec<usize>) {
        if lens.is_empty() {
            return;
        }
        self.objects += lens.len();
        self.chunks.push_back(Chunk {
            bytes: bytes.into(),
            lens: lens.into(),
            at: 0,
        });
    }

    /// Appends the oldest `max` (at most) objects' bytes to `parts` (a slice per chunk they
    /// are in); returns how many.
    fn take(&mut self, max: usize, parts: &mut Vec<Bytes>) -> usize {
        let mut taken = 0;
        while taken < max {
            let Some(chunk) = self.chunks.front_mut() else {
                break;
            };
            let n = chunk.lens.len().min(max - taken);
            let len: usize = chunk.lens.drain(..n).sum();
            parts.push(chunk.bytes.slice(chunk.at..chunk.at + len));
            chunk.at += len;
            taken += n;
            if chunk.lens.is_empty() {
                self.chunks.pop_front();
            }
        }
        self.objects -= taken;
        taken
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A trace object as cardano-node forwards it: `toMachine` is the node's complete machine
/// line (`at`, `ns`, `data`, `sev`, `thread`, `host`), `data` carrying `node` and `seq`.
pub fn sample_object(node: &str, seq: u64, timestamp_ns: i64) -> TraceObject {
    let mut at = String::new();
    tracerd_wire::utc::push_rfc3339_nanos(&mut at, timestamp_ns);
    let machine = serde_json::json!({
        "at": at,
        "ns": "Sim.Forwarded",
        "data": { "node": node, "seq": seq },
        "sev": "Info",
        "thread": "42",
        "host": "sim",
    })
    .to_string();
    TraceObject {
        namespace: "Sim.Forwarded".into(),
        severity: Severity::Info,
        detail: DetailLevel::Normal,
        timestamp_ns,
        hostname: "sim".into(),
        thread_id: "42".into(),
        machine: machine.into(),
        form: MachineForm::Line,
        human: Some(format!("{node} forwarded {seq}").into()),
    }
}
