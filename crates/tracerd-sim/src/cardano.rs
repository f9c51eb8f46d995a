//! A simulated cardano-node: the FORWARDER side of the forwarding protocols, in either
//! connection role, written to the reference's forwarder checklist (§13) so that
//! cardano-tracer could decode it. Used by the end-to-end tests and reusable for load
//! generation (`tracerd-load --protocol cardano`).
//!
//! It serves trace objects from an in-memory queue (blocking requests wait until something
//! is queued, replies hold at most the requested number), answers EKG requests from a metric
//! table with per-connection delta bookkeeping, and serves `NodeInfo`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use tracerd_wire::cardano::codec::{
    self, CborError, DataPointAsk, EkgAsk, EkgRequest, EkgValue, Handshake, TraceAsk, VersionData,
    FORWARDING_V1,
};
use tracerd_wire::cardano::handshake::{self, Outcome};
use tracerd_wire::cardano::mux::{
    send, Mode, MuxCodec, MuxError, DATA_POINTS, EKG, HANDSHAKE, TRACE_OBJECTS,
};
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

/// Why a simulated connection failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Bad bytes.
    #[error(transparent)]
    Mux(#[from] MuxError),
    /// Bad message.
    #[error("bad message: {0}")]
    Codec(#[from] CborError),
    /// Bad handshake.
    #[error(transparent)]
    Handshake(#[from] handshake::HandshakeError),
    /// A message the forwarder does not expect.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// This node plays an ekg-forward older than 0.9, which cannot decode `GetUpdatedMetrics`.
    #[error("cannot decode GetUpdatedMetrics (simulated ekg-forward < 0.9)")]
    LegacyEkg,
}

/// A simulated node; share it between connections with an `Arc`.
#[derive(Debug)]
pub struct SimNode {
    magic: u32,
    node_info: Option<Vec<u8>>,
    legacy_ekg: bool,
    metrics: Mutex<Vec<(String, EkgValue)>>,
    data_points: Mutex<Vec<(String, Vec<u8>)>>,
    queue: Mutex<VecDeque<TraceObject>>,
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
            queue: Mutex::new(VecDeque::new()),
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
        lock(&self.queue).extend(objects);
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
        lock(&self.queue).len()
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
        let mut framed = Framed::new(stream, MuxCodec::new(mode, SIM_MAX_MESSAGE));
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return Ok(SimEnd::Cancelled),
            outcome = self.handshake(&mut framed, mode) => outcome?,
        };
        if let Some(refusal) = outcome {
            *lock(&self.refusal) = Some(refusal.clone());
            return Ok(SimEnd::Refused(refusal));
        }
        self.accepted.fetch_add(1, Ordering::Relaxed);
        let mut pending: Option<u16> = None;
        let mut back: HashMap<String, EkgValue> = HashMap::new();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(SimEnd::Cancelled),
                _ = self.notify.notified(), if pending.is_some() => {
                    let count = pending.unwrap_or(1);
                    let objects = self.take(count);
                    if !objects.is_empty() {
                        pending = None;
                        self.reply_traces(&mut framed, &objects).await?;
                    }
                }
                msg = framed.next() => {
                    let msg = match msg {
                        None => return Ok(SimEnd::Closed),
                        Some(m) => m?,
                    };
                    match msg.protocol {
                        EKG => match codec::decode_ekg_ask(&msg.payload)? {
                            EkgAsk::Done => return Ok(SimEnd::Done(EKG)),
                            EkgAsk::Req(req) => {
                                let reply = self.metrics_for(&req, &mut back)?;
                                send(&mut framed, EKG, codec::encode_ekg_response(&reply)).await?;
                            }
                        },
                        TRACE_OBJECTS => match codec::decode_trace_ask(&msg.payload)? {
                            TraceAsk::Done => return Ok(SimEnd::Done(TRACE_OBJECTS)),
                            TraceAsk::Request { blocking, count } => {
                                if pending.is_some() {
                                    return Err(SimError::Protocol("second trace request while one is pending".into()));
                                }
                                let objects = self.take(count);
                                if objects.is_empty() && blocking {
                                    pending = Some(count);
                                } else {
                                    self.reply_traces(&mut framed, &objects).await?;
                                }
                            }
                        },
                        DATA_POINTS => match codec::decode_data_point_ask(&msg.payload)? {
                            DataPointAsk::Done => return Ok(SimEnd::Done(DATA_POINTS)),
                            DataPointAsk::Request(names) => {
                                let values: Vec<_> = names
                                    .into_iter()
                                    .map(|n| {
                                        let v = if n == "NodeInfo" {
                                            self.node_info.clone()
                                        } else {
                                            lock(&self.data_points).iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone())
                                        };
                                        (n, v)
                                    })
                                    .collect();
                                send(&mut framed, DATA_POINTS, codec::encode_data_point_reply(&values)).await?;
                            }
                        },
                        other => return Err(MuxError::UnknownProtocol(other).into()),
                    }
                }
            }
        }
    }

    /// Runs the handshake; `Some(refusal)` when either side refused.
    async fn handshake<S>(
        &self,
        framed: &mut Framed<S, MuxCodec>,
        mode: Mode,
    ) -> Result<Option<String>, SimError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let refusal = match mode {
            Mode::Initiator => {
                send(framed, HANDSHAKE, codec::encode_propose(self.magic)).await?;
                match recv_handshake(framed).await? {
                    Handshake::Accept(FORWARDING_V1, VersionData::Magic(m)) if m == self.magic => {
                        None
                    }
                    Handshake::Refuse(r) => Some(format!("{r:?}")),
                    other => return Err(SimError::Protocol(format!("handshake answer {other:?}"))),
                }
            }
            Mode::Responder => {
                let proposal = recv_handshake(framed).await?;
                let (answer, outcome) = handshake::respond_to(&proposal, self.magic);
                send(framed, HANDSHAKE, answer).await?;
                match outcome {
                    Outcome::Accepted => None,
                    other => Some(format!("{other:?}")),
                }
            }
        };
        framed.codec_mut().end_handshake();
        Ok(refusal)
    }

    fn take(&self, count: u16) -> Vec<TraceObject> {
        let mut queue = lock(&self.queue);
        let n = queue.len().min(usize::from(count));
        queue.drain(..n).collect()
    }

    async fn reply_traces<S>(
        &self,
        framed: &mut Framed<S, MuxCodec>,
        objects: &[TraceObject],
    ) -> Result<(), SimError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        send(framed, TRACE_OBJECTS, codec::encode_trace_reply(objects)).await?;
        self.sent.fetch_add(objects.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// ekg-forward's answer and back-buffer bookkeeping (reference §6.3).
    fn metrics_for(
        &self,
        req: &EkgRequest,
        back: &mut HashMap<String, EkgValue>,
    ) -> Result<Vec<(String, EkgValue)>, SimError> {
        let all = lock(&self.metrics).clone();
        match req {
            EkgRequest::All => {
                *back = all.iter().cloned().collect();
                Ok(all)
            }
            EkgRequest::Named(names) => {
                let some: Vec<_> = all.into_iter().filter(|(n, _)| names.contains(n)).collect();
                back.extend(some.iter().cloned());
                Ok(some)
            }
            EkgRequest::Updated if self.legacy_ekg => Err(SimError::LegacyEkg),
            EkgRequest::Updated => {
                let changed = all
                    .iter()
                    .filter(|(n, v)| back.get(n) != Some(v))
                    .cloned()
                    .collect();
                *back = all.into_iter().collect();
                Ok(changed)
            }
        }
    }
}

async fn recv_handshake<S>(framed: &mut Framed<S, MuxCodec>) -> Result<Handshake, SimError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match framed.next().await {
        None => Err(handshake::HandshakeError::Closed.into()),
        Some(Err(e)) => Err(e.into()),
        Some(Ok(m)) if m.protocol == HANDSHAKE => Ok(codec::decode_handshake(&m.payload)?),
        Some(Ok(m)) => Err(SimError::Protocol(format!(
            "mini-protocol {} before the handshake finished",
            m.protocol
        ))),
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
        namespace: "Sim.Forwarded".to_string(),
        severity: Severity::Info,
        detail: DetailLevel::Normal,
        timestamp_ns,
        hostname: "sim".to_string(),
        thread_id: "42".to_string(),
        machine,
        form: MachineForm::Line,
        human: Some(format!("{node} forwarded {seq}")),
    }
}
