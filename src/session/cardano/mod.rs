//! One Cardano node session, tracerd being the ACCEPTOR (reference §9): the handshake in
//! either connection role, then the three acceptor loops run from one `select!` — blocking
//! trace-object requests of `loRequestNum` written through the node's [`NodeSink`]
//! (`tracerd.cardanoTraceRequests` of them outstanding: the node answers them in order, so
//! each reply is written in the order it came and the node fills the next meanwhile), EKG
//! polling every `ekgRequestFreq` into the node's registry entry, and data-point requests
//! that name the node after its `NodeInfo`.
//!
//! The session never sends `MsgDone`: it closes the socket instead, because a node whose
//! connection ends with `MsgDone` stops forwarding for good (§9.2).

pub mod dial;
pub mod naming;
mod settings;
pub mod timing;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use self::naming::Source;
pub use self::settings::{Settings, NAME_TIMEOUT};
use crate::cardano::codec::{self, CborError, EkgRequest, EkgValue};
use crate::cardano::handshake::{self, HandshakeError, Outcome};
use crate::cardano::index;
use crate::cardano::mux::{
    send, Message, Mode, MuxCodec, MuxError, DATA_POINTS, EKG, TRACE_OBJECTS,
};
use crate::errors::error_chain;
use crate::events::{HandshakeRefused, RefusedBy};
use crate::ingest::{NodeSink, SinkError};
use crate::model::{DataPoint, MetricValue, MetricsUpdate, TraceBatch, TraceObject};
use crate::node::live::DataPointRequest;
pub use crate::session::End;
use crate::session::{self, Context, Deadline, Failure, Protocol};

/// The data point that names a node.
pub const NODE_INFO: &str = "NodeInfo";

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No complete handshake within the timeout.
    #[error("no handshake within {0:?}")]
    HandshakeTimeout(Duration),
    /// The handshake failed.
    #[error("handshake failed")]
    Handshake(#[from] HandshakeError),
    /// The connection below the messages failed: the socket (a write to a node that left:
    /// "Broken pipe"), or bytes that are not valid SDUs.
    #[error("the multiplexed connection failed")]
    Mux(#[from] MuxError),
    /// A message that does not decode.
    #[error("bad message on mini-protocol {protocol}")]
    Codec {
        /// Mini-protocol.
        protocol: u16,
        /// Cause.
        #[source]
        source: CborError,
    },
    /// A message the protocol state does not allow (a reply nobody asked for).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The node's logs could not be written.
    #[error("node log sink failed")]
    Sink(#[from] SinkError),
}

impl Failure for SessionError {
    fn label(&self) -> &'static str {
        match self {
            SessionError::HandshakeTimeout(_) => "handshake_timeout",
            SessionError::Handshake(e) => e.kind(),
            SessionError::Mux(e) => e.kind(),
            SessionError::Codec { source, .. } => source.kind(),
            SessionError::Protocol(_) => "protocol_violation",
            SessionError::Sink(_) => "write_error",
        }
    }

    fn lost(&self) -> Option<String> {
        matches!(
            self,
            SessionError::Mux(MuxError::Io(_))
                | SessionError::Handshake(HandshakeError::Mux(MuxError::Io(_)))
        )
        .then(|| error_chain(self))
    }

    fn decode_reason(&self) -> Option<&'static str> {
        match self {
            SessionError::Mux(MuxError::Io(_))
            | SessionError::Handshake(HandshakeError::Mux(MuxError::Io(_)))
            | SessionError::Handshake(HandshakeError::Closed)
            | SessionError::HandshakeTimeout(_)
            | SessionError::Sink(_) => None,
            e => Some(e.label()),
        }
    }
}

/// Serves one connection as the acceptor, `mode` being tracerd's connection role, then
/// counts and logs how it ended.
pub async fn serve_and_report<S>(
    stream: S,
    peer: String,
    mode: Mode,
    settings: Arc<Settings>,
    shared: Arc<Context>,
    cancel: CancellationToken,
) -> Result<End, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let started = std::time::Instant::now();
    let result = serve(stream, peer.clone(), mode, settings, shared.clone(), cancel).await;
    session::report(&shared, &peer, Protocol::Cardano, started, &result);
    result
}

/// Serves one connection as the acceptor until the peer closes, the input is bad, or
/// `cancel` fires.
pub async fn serve<S>(
    stream: S,
    peer: String,
    mode: Mode,
    settings: Arc<Settings>,
    shared: Arc<Context>,
    cancel: CancellationToken,
) -> Result<End, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Limits come from the live config, so a reload applies to the next session. Scoped, so
    // they are not part of every idle session's future.
    let (max_message, timeout) = {
        let limits = shared.limits();
        let timeout = Duration::try_from_secs_f64(limits.handshake_timeout_secs)
            .unwrap_or(settings.handshake_timeout);
        (limits.max_frame_bytes as usize, timeout)
    };
    let mut framed = session::framed(stream, MuxCodec::new(mode, max_message));
    let magic = settings.network_magic;
    let handshake = async {
        match mode {
            Mode::Responder => handshake::respond(&mut framed, magic).await,
            Mode::Initiator => handshake::propose(&mut framed, magic).await,
        }
    };
    let refusal = match session::handshake(&cancel, timeout, handshake).await {
        Deadline::Shutdown => return Ok(End::Shutdown),
        Deadline::TimedOut => return Err(SessionError::HandshakeTimeout(timeout)),
        Deadline::Done(Err(e)) => return Err(e.into()),
        Deadline::Done(Ok(Outcome::Accepted)) => None,
        Deadline::Done(Ok(Outcome::RefusedPeer(label, message))) => {
            Some((label, message, RefusedBy::Tracerd))
        }
        Deadline::Done(Ok(Outcome::RefusedByPeer(label, message))) => {
            Some((label, message, RefusedBy::Peer))
        }
    };
    if let Some((reason, message, by)) = refusal {
        HandshakeRefused {
            peer: &peer,
            protocol: Some(Protocol::Cardano.as_str()),
            reason,
            message: &message,
            by,
            log: shared.refusals.admit(&peer, std::time::Instant::now()),
        }
        .emit(&shared.telemetry);
        return Ok(match by {
            RefusedBy::Tracerd => End::Refused(reason),
            RefusedBy::Peer => End::RefusedByPeer(reason),
        });
    }
    tracing::info!(%peer, protocol = "cardano", role = ?mode, magic, "Cardano handshake accepted");
    let mut pump = Pump {
        settings,
        shared,
        peer,
        sink: None,
        name: None,
        stash_traces: Vec::new(),
        stash_metrics: Vec::new(),
        ekg: None,
        ekg_due: None,
        ekg_requests: 0,
        updated_answered: false,
        traces_in_flight: 0,
        draining: false,
        data_points: DataPoints::Idle,
        dp_requests: None,
        dp_asked: None,
        clock: timing::ReplyClock::new(std::time::Instant::now()),
        ekg_sent: None,
        dp_sent: None,
    };
    let outcome = pump.run(&mut framed, &cancel).await;
    if let Some(sink) = pump.sink.take() {
        let (_, written) = sink.close().await;
        written?;
    }
    outcome
}

/// Where the data-point exchange stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataPoints {
    Idle,
    /// The initial empty request is outstanding.
    Initial,
    /// The `NodeInfo` request is outstanding.
    NodeInfo,
    /// A request from HTTP is outstanding.
    OnDemand,
}

/// Most on-demand data point requests waiting for one session.
const DATA_POINT_QUEUE: usize = 16;

/// After shutdown began, how long the session waits for more of a trace reply, or for the
/// next one, before it closes (`Pump::drain_replies`).
const DRAIN_QUIET: Duration = Duration::from_millis(500);

/// The acceptor loops of one accepted session.
struct Pump {
    settings: Arc<Settings>,
    shared: Arc<Context>,
    peer: String,
    /// Opened once the node is named.
    sink: Option<NodeSink>,
    /// The resolved name (before collision suffixes), for per-node settings.
    name: Option<String>,
    /// Trace replies that arrived before the node was named, in order (no request is sent
    /// until it is, so at most `trace_requests` replies).
    stash_traces: Vec<TraceObject>,
    /// Metric updates that arrived before the node was named (one per poll, ≤ 10 s of them).
    stash_metrics: Vec<MetricsUpdate>,
    /// The outstanding EKG request.
    ekg: Option<EkgRequest>,
    /// When to send the next EKG request.
    ekg_due: Option<Instant>,
    ekg_requests: u64,
    updated_answered: bool,
    /// Trace-object requests sent and not answered yet.
    traces_in_flight: usize,
    /// Shutdown began: replies are still read, nothing more is requested.
    draining: bool,
    data_points: DataPoints,
    /// On-demand data point requests (from HTTP), once the node is named.
    dp_requests: Option<mpsc::Receiver<DataPointRequest>>,
    /// The request being answered: its name and its asker.
    dp_asked: Option<DataPointRequest>,
    /// Round-trip times from the requests the node answers at once.
    clock: timing::ReplyClock,
    /// When the outstanding EKG request was written.
    ekg_sent: Option<std::time::Instant>,
    /// When the outstanding data-point request was written.
    dp_sent: Option<std::time::Instant>,
}

type Conn<S> = Framed<S, MuxCodec>;

/// The next on-demand data point request; pending forever when there is no channel.
async fn recv_request(
    requests: &mut Option<mpsc::Receiver<DataPointRequest>>,
) -> Option<DataPointRequest> {
    match requests {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Pump {
    async fn run<S>(
        &mut self,
        framed: &mut Conn<S>,
        cancel: &CancellationToken,
    ) -> Result<End, SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // The acceptor's three first requests (§9.1 step 3).
        self.request_metrics(framed).await?;
        self.request_traces(framed).await?;
        self.dp_sent = Some(std::time::Instant::now());
        send(framed, DATA_POINTS, codec::encode_data_point_request(&[])).await?;
        self.data_points = DataPoints::Initial;
        let name_deadline = Instant::now() + self.settings.name_timeout;
        loop {
            let ekg_due = self.ekg_due.unwrap_or(name_deadline);
            tokio::select! {
                _ = cancel.cancelled() => {
                    self.drain_replies(framed).await?;
                    return Ok(End::Shutdown);
                }
                _ = tokio::time::sleep_until(ekg_due), if self.ekg_due.is_some() => {
                    if let Err(e) = self.request_metrics(framed).await {
                        return Err(self.after_failed_send(framed, e).await);
                    }
                }
                request = recv_request(&mut self.dp_requests), if self.data_points == DataPoints::Idle => {
                    if let Some((name, reply)) = request {
                        self.dp_sent = Some(std::time::Instant::now());
                        let ask = codec::encode_data_point_request(std::slice::from_ref(&name));
                        if let Err(e) = send(framed, DATA_POINTS, ask).await {
                            return Err(self.after_failed_send(framed, e).await);
                        }
                        self.data_points = DataPoints::OnDemand;
                        self.dp_asked = Some((name, reply));
                    } else {
                        self.dp_requests = None;
                    }
                }
                _ = tokio::time::sleep_until(name_deadline), if self.sink.is_none() => {
                    tracing::info!(peer = %self.peer, "no NodeInfo within {:?}", self.settings.name_timeout);
                    self.open_sink(framed, None, Vec::new()).await?;
                }
                msg = framed.next() => match msg {
                    None => {
                        self.note_closed();
                        return Ok(End::PeerClosed);
                    }
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(msg)) => self.handle(framed, msg).await?,
                },
            }
        }
    }

    async fn handle<S>(&mut self, framed: &mut Conn<S>, msg: Message) -> Result<(), SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let protocol = msg.protocol;
        let bad = |source| SessionError::Codec { protocol, source };
        let sent = match protocol {
            EKG => self.ekg_sent.take(),
            DATA_POINTS => self.dp_sent.take(),
            _ => None,
        };
        if let (Some(sent), Some(timing)) = (sent, framed.codec().last_timing()) {
            let rtt = self
                .clock
                .sample(sent, timing.received, timing.remote_micros);
            if let Some(sink) = &self.sink {
                session::record_rtt(&self.shared.telemetry, sink, rtt);
            }
        }
        match protocol {
            EKG => {
                let Some(req) = self.ekg.take() else {
                    return Err(SessionError::Protocol(
                        "EKG response without a request".into(),
                    ));
                };
                let metrics = codec::decode_ekg_response(&msg.payload).map_err(bad)?;
                if req == EkgRequest::Updated {
                    self.updated_answered = true;
                }
                let update = MetricsUpdate {
                    // The first response of a session carries everything (a delta request's
                    // first answer too): it replaces what a previous session left.
                    full: req == EkgRequest::All || self.ekg_requests == 1,
                    metrics: metrics.into_iter().map(metric).collect(),
                };
                match &self.sink {
                    Some(sink) => sink.lease().apply_metrics(update),
                    None => self.stash_metrics.push(update),
                }
                self.ekg_due = Some(Instant::now() + self.settings.ekg_request_freq);
            }
            TRACE_OBJECTS => {
                let Some(in_flight) = self.traces_in_flight.checked_sub(1) else {
                    return Err(SessionError::Protocol(
                        "trace objects without a request".into(),
                    ));
                };
                self.traces_in_flight = in_flight;
                // The objects' strings are slices of the reply (no copy per string), built
                // from the record the mux made while it found the reply's end (one walk of
                // the CBOR, not two) when every object had the common shape.
                let index = framed.codec_mut().take_trace_index();
                let mut objects = index::decode_reply(
                    &msg.payload,
                    usize::from(self.settings.lo_request_num),
                    index.as_ref(),
                )
                .map_err(bad)?;
                if self.sink.is_some() {
                    // Ask again first, so the node fills the next reply while this one is
                    // written; the replies come, and are written, in order. A node that
                    // sent its last replies and closed fails the request: this reply's
                    // objects are still written, and so are those of the replies it sent
                    // after it (a Cardano reply has no acknowledgement: the node counts them
                    // delivered), read until its end of stream before the session ends.
                    let asked = self.request_traces(framed).await;
                    self.write(objects).await?;
                    if let Err(e) = asked {
                        // Boxed: `drain_replies` handles replies with this function.
                        return Err(Box::pin(self.after_failed_send(framed, e)).await);
                    }
                } else if self.stash_traces.is_empty() {
                    self.stash_traces = objects;
                } else {
                    self.stash_traces.append(&mut objects);
                }
            }
            DATA_POINTS => {
                let values = codec::decode_data_point_reply(&msg.payload).map_err(bad)?;
                match self.data_points {
                    DataPoints::Idle => {
                        return Err(SessionError::Protocol(
                            "data points without a request".into(),
                        ))
                    }
                    DataPoints::Initial => {
                        self.dp_sent = Some(std::time::Instant::now());
                        send(
                            framed,
                            DATA_POINTS,
                            codec::encode_data_point_request(&[
                                NODE_INFO.to_string(),
                                crate::forward::TRACERD_PATH.to_string(),
                            ]),
                        )
                        .await?;
                        self.data_points = DataPoints::NodeInfo;
                    }
                    DataPoints::OnDemand => {
                        self.data_points = DataPoints::Idle;
                        if let Some((name, reply)) = self.dp_asked.take() {
                            let value = values
                                .into_iter()
                                .find(|(n, _)| *n == name)
                                .and_then(|(_, v)| v)
                                .map(|json| String::from_utf8_lossy(&json).into_owned());
                            if let (Some(sink), Some(json)) = (&self.sink, &value) {
                                sink.lease().apply_data_points(vec![DataPoint {
                                    name: name.clone(),
                                    json: json.clone(),
                                }]);
                            }
                            // The asker may have given up.
                            let _ = reply.send(value);
                        }
                    }
                    DataPoints::NodeInfo => {
                        self.data_points = DataPoints::Idle;
                        let (mut info, mut path) = (None, None);
                        for (name, value) in values {
                            match name.as_str() {
                                NODE_INFO => info = value,
                                crate::forward::TRACERD_PATH => path = value,
                                _ => {}
                            }
                        }
                        // Re-forwarding: refuse a node whose objects this tracer already
                        // forwarded (issue 16 point 4).
                        let own = self.shared.reforward.as_ref().map(|r| r.id());
                        if let Some(refusal) = crate::forward::loop_refusal(own, path.as_deref()) {
                            return Err(SessionError::Protocol(refusal));
                        }
                        let mut known = Vec::new();
                        if let Some(json) = &info {
                            known.push(DataPoint {
                                name: NODE_INFO.to_string(),
                                json: String::from_utf8_lossy(json).into_owned(),
                            });
                        }
                        if let Some(json) = path {
                            known.push(DataPoint {
                                name: crate::forward::TRACERD_PATH.to_string(),
                                json: String::from_utf8_lossy(&json).into_owned(),
                            });
                        }
                        match &self.sink {
                            // Applied before re-forwarding is attached (`open_sink_as`).
                            None => self.open_sink(framed, info, known).await?,
                            Some(sink) => sink.lease().apply_data_points(known),
                        }
                    }
                }
            }
            other => return Err(MuxError::UnknownProtocol(other).into()),
        }
        Ok(())
    }

    /// Names the node, opens its sink, and flushes what arrived before.
    async fn open_sink<S>(
        &mut self,
        framed: &mut Conn<S>,
        node_info: Option<Vec<u8>>,
        known: Vec<DataPoint>,
    ) -> Result<(), SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // A node reconnecting while its previous session still drains gets its name back.
        let wanted = node_info
            .as_deref()
            .and_then(naming::ni_name)
            .and_then(|n| crate::node::dir_name(&n).ok());
        if let Some(wanted) = wanted {
            self.shared
                .nodes
                .wait_until_free(&wanted, crate::node::RECLAIM_WAIT)
                .await;
        }
        let connected = self.shared.nodes.connected();
        let naming::Chosen {
            name,
            identity,
            source,
        } = naming::choose(node_info.as_deref(), &self.peer, &connected);
        match source {
            Source::NodeInfo => {}
            Source::NoNodeInfo => tracing::info!(peer = %self.peer, node = %name,
                "no usable NodeInfo niName; naming the node after its address"),
            Source::Collision => tracing::warn!(peer = %self.peer, node = %name,
                "another connected node has the same NodeInfo niName; naming this one after its address"),
        }
        let sink = self
            .shared
            .open_sink_as(&name, &identity, &self.peer, Protocol::Cardano, known)
            .await?;
        let (tx, rx) = mpsc::channel(DATA_POINT_QUEUE);
        sink.lease().serve_data_points(tx);
        self.dp_requests = Some(rx);
        for update in self.stash_metrics.drain(..) {
            sink.lease().apply_metrics(update);
        }
        // The registry's name: `name`, or with a collision suffix for another identity.
        self.name = Some(sink.name().to_string());
        self.sink = Some(sink);
        let stashed = std::mem::take(&mut self.stash_traces);
        let asked = self.request_traces(framed).await;
        // Boxed: this state is the largest of an idle session's future, which must stay
        // small (once per session).
        Box::pin(self.write(stashed)).await?;
        asked?;
        Ok(())
    }

    async fn write(&mut self, objects: Vec<TraceObject>) -> Result<(), SessionError> {
        if objects.is_empty() {
            return Ok(());
        }
        if let Some(sink) = &mut self.sink {
            if sink
                .push(TraceBatch {
                    first_seq: 0,
                    objects,
                })
                .await
                .is_err()
            {
                // The writer stopped; `close` reports its error.
                let (_, written) = match self.sink.take() {
                    Some(sink) => sink.close().await,
                    None => return Ok(()),
                };
                written?;
                return Err(SinkError::WriterStopped.into());
            }
        }
        Ok(())
    }

    /// Sends blocking trace-object requests until `trace_requests` are outstanding (the
    /// first `MsgTraceObjectsRequest` of a session, and one after each reply once the node is
    /// named; before that, what was asked is all that comes).
    /// Once shutdown began, or a request failed because the node closed after its last
    /// replies, reads the replies to the outstanding trace requests and writes
    /// their objects: the node took them off its queue when it answered and nothing
    /// acknowledges them, so a reply left unread in the socket would be lost. Ends when every
    /// request is answered, the node closes, nothing has arrived for [`DRAIN_QUIET`] (an
    /// idle node answers a blocking request only once it has objects), or after
    /// `settings.shutdown_drain`. Other mini-protocols' messages are dropped unread.
    async fn drain_replies<S>(&mut self, framed: &mut Conn<S>) -> Result<(), SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.draining = true;
        let until = Instant::now() + self.settings.shutdown_drain;
        while self.traces_in_flight > 0 && self.sink.is_some() {
            let quiet = (Instant::now() + DRAIN_QUIET).min(until);
            match tokio::time::timeout_at(quiet, framed.next()).await {
                Err(_) | Ok(None) => break,
                Ok(Some(Err(e))) => return Err(e.into()),
                Ok(Some(Ok(msg))) if msg.protocol == TRACE_OBJECTS => {
                    self.handle(framed, msg).await?
                }
                Ok(Some(Ok(_))) => {}
            }
        }
        Ok(())
    }

    /// A request to the node failed, as when it closed after its last replies: reads and
    /// writes the trace replies it sent before ([`Self::drain_replies`]), then gives the error
    /// the session ends with.
    async fn after_failed_send<S>(&mut self, framed: &mut Conn<S>, e: MuxError) -> SessionError
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match self.drain_replies(framed).await {
            Ok(()) => e.into(),
            Err(drained) => drained,
        }
    }

    async fn request_traces<S>(&mut self, framed: &mut Conn<S>) -> Result<(), MuxError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if self.draining {
            return Ok(());
        }
        let count = self.settings.lo_request_num;
        while self.traces_in_flight < self.settings.trace_requests {
            send(
                framed,
                TRACE_OBJECTS,
                codec::encode_trace_request(true, count),
            )
            .await?;
            self.traces_in_flight += 1;
        }
        Ok(())
    }

    async fn request_metrics<S>(&mut self, framed: &mut Conn<S>) -> Result<(), MuxError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // The first request asks for everything, which every ekg-forward understands and
        // which primes the forwarder's delta bookkeeping; then deltas unless the node is
        // known (or configured) to need full requests.
        let full_only = match &self.name {
            Some(name) => self.settings.full_ekg_only(name),
            None => true,
        };
        let req = if self.ekg_requests == 0 || full_only {
            EkgRequest::All
        } else {
            EkgRequest::Updated
        };
        self.ekg_sent = Some(std::time::Instant::now());
        send(framed, EKG, codec::encode_ekg_request(&req)).await?;
        self.ekg = Some(req);
        self.ekg_due = None;
        self.ekg_requests += 1;
        Ok(())
    }

    /// A node that drops the connection on its first `GetUpdatedMetrics` runs an
    /// ekg-forward older than 0.9: poll it with `GetAllMetrics` from its next connection on.
    fn note_closed(&self) {
        if self.ekg == Some(EkgRequest::Updated) && !self.updated_answered {
            if let Some(name) = &self.name {
                tracing::info!(peer = %self.peer, node = %name,
                    "node closed the connection on its first GetUpdatedMetrics; \
                     polling it with GetAllMetrics from now on");
                self.settings.mark_legacy_ekg(name);
            }
        }
    }
}

fn metric((name, value): (String, EkgValue)) -> (String, MetricValue) {
    let value = match value {
        EkgValue::Counter(n) => MetricValue::Counter(n),
        EkgValue::Gauge(n) => MetricValue::Gauge(n as f64),
        EkgValue::Label(t) => MetricValue::Label(t),
    };
    (name, value)
}
