//! One node session over the native protocol: handshake, then a read loop that feeds the
//! node's [`NodeSink`] (trace batches) and its registry entry (metrics, data points, RTT), and
//! sends acknowledgements as the sink persists.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::events::{HandshakeRefused, RefusedBy};
use crate::ingest::{NodeSink, SinkError};
use crate::native::{
    FrameError, Hello, NodeMessage, RefuseReason, TracerCodec, TracerMessage, PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
};
use crate::node::{self, tracer_config};
use crate::session::{self, Context, Deadline, End, Failure, Protocol};

/// How often tracerd probes a node's round-trip time.
pub const PING_EVERY: Duration = Duration::from_secs(5);
/// When the first Ping of a session goes, after the handshake.
const FIRST_PING: Duration = Duration::from_millis(100);

fn refuse_label(r: RefuseReason) -> &'static str {
    match r {
        RefuseReason::WrongMagic => "wrong_magic",
        RefuseReason::UnsupportedVersion => "unsupported_version",
        RefuseReason::NameRejected => "name_rejected",
        RefuseReason::NoHello => "no_hello",
        RefuseReason::Unavailable => "unavailable",
        RefuseReason::Loop => "loop",
    }
}

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No `Hello` within the handshake timeout.
    #[error("no Hello within {0:?}")]
    HandshakeTimeout(Duration),
    /// Nothing arrived for the idle timeout.
    #[error("nothing received for {0:?}")]
    IdleTimeout(Duration),
    /// The peer sent something that is not a valid frame or message.
    #[error("bad input from node")]
    Codec(#[from] FrameError),
    /// The node's logs could not be written.
    #[error("node log sink failed")]
    Sink(#[from] SinkError),
}

impl Failure for SessionError {
    fn label(&self) -> &'static str {
        match self {
            SessionError::HandshakeTimeout(_) => "handshake_timeout",
            SessionError::IdleTimeout(_) => "idle_timeout",
            SessionError::Codec(FrameError::Io(_)) => "io_error",
            SessionError::Codec(e) => e.kind(),
            SessionError::Sink(SinkError::Sequence(_)) => "sequence_overflow",
            SessionError::Sink(_) => "write_error",
        }
    }

    fn lost(&self) -> Option<String> {
        match self {
            SessionError::Codec(FrameError::Io(e)) => Some(e.to_string()),
            _ => None,
        }
    }

    fn decode_reason(&self) -> Option<&'static str> {
        match self {
            SessionError::Codec(FrameError::Io(_)) => None,
            SessionError::Codec(e) => Some(e.kind()),
            _ => None,
        }
    }
}

/// Serves one connection (see [`serve`]), then reports how it ended.
pub async fn serve_and_report<S>(
    stream: S,
    peer: String,
    certificate: Option<Box<rustls::pki_types::CertificateDer<'static>>>,
    ctx: Arc<Context>,
    cancel: CancellationToken,
) -> Result<End, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let started = std::time::Instant::now();
    let result = serve(stream, peer.clone(), certificate, ctx.clone(), cancel).await;
    session::report(&ctx, &peer, Protocol::Native, started, &result);
    result
}

/// Serves one connection until the peer closes, the input is bad, or `cancel` fires.
/// `certificate` is the client certificate TLS verified, checked with `Hello.token` against
/// `tracerd.native.identities`.
pub async fn serve<S>(
    stream: S,
    peer: String,
    certificate: Option<Box<rustls::pki_types::CertificateDer<'static>>>,
    shared: Arc<Context>,
    cancel: CancellationToken,
) -> Result<End, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Locals that end before the read loop are scoped, so that their storage is not part of
    // every idle session's future.
    let (max_frame_bytes, max_objects, timeout, idle) = {
        let limits = shared.limits();
        (
            limits.max_frame_bytes,
            limits.max_objects_per_frame as usize,
            limits.handshake_timeout(),
            limits.idle_timeout(),
        )
    };
    let codec = TracerCodec::with_max_objects(max_frame_bytes as usize, max_objects);
    let mut framed = session::framed(stream, codec);
    // Boxed: the handshake's state (the Hello, opening the node's log, the refusals) lives
    // only until the node is accepted, and inline it would be part of every idle session's
    // future for as long as the node stays connected (issue 21).
    let handshake = handshake(
        &mut framed,
        &peer,
        certificate,
        &shared,
        &cancel,
        timeout,
        max_frame_bytes,
    );
    let (sink, push) = match Box::pin(handshake).await {
        Ok(accepted) => accepted,
        Err(ended) => return ended,
    };
    // Only what the read loop needs stays: an idle node's read and write buffers are given
    // back (the next frame grows them again).
    session::shrink_idle(&mut framed);
    stream_node(&mut framed, sink, push, idle, &shared.telemetry, &cancel).await
}

/// A node's sink and, for a node with `tracing-config.v1`, its push link.
type Accepted = (NodeSink, Option<Box<tracer_config::PushLink>>);

/// The handshake of a session, up to and including tracerd's `Accept`: `Err` holds how the
/// session ended when the node was not accepted.
async fn handshake<S>(
    framed: &mut Framed<S, TracerCodec>,
    peer: &str,
    certificate: Option<Box<rustls::pki_types::CertificateDer<'static>>>,
    shared: &Context,
    cancel: &CancellationToken,
    timeout: Duration,
    max_frame_bytes: u32,
) -> Result<Accepted, Result<End, SessionError>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let hello = match session::handshake(cancel, timeout, framed.next()).await {
        Deadline::Shutdown => return Err(Ok(End::Shutdown)),
        Deadline::TimedOut => return Err(Err(SessionError::HandshakeTimeout(timeout))),
        Deadline::Done(None) => return Err(Ok(End::PeerClosed)),
        Deadline::Done(Some(Err(e))) => return Err(Err(e.into())),
        Deadline::Done(Some(Ok(NodeMessage::Hello(hello)))) => hello,
        Deadline::Done(Some(Ok(_))) => {
            let message = "the first message must be Hello".to_string();
            return Err(refuse(framed, RefuseReason::NoHello, message, peer, shared).await);
        }
    };
    let name = match check_hello(&hello, shared.network_magic) {
        Ok(name) => name,
        Err((reason, message)) => return Err(refuse(framed, reason, message, peer, shared).await),
    };
    // A tracerd re-forwarding this node's objects names the tracers they passed: one that
    // names this tracerd is a loop (issue 16 point 4), refused before the name is claimed.
    let own = crate::forward::tracer_id();
    if let Some(message) = crate::forward::path_refusal(Some(own), &hello.tracers) {
        return Err(refuse(framed, RefuseReason::Loop, message, peer, shared).await);
    }
    // Checked in the condition, the certificate moved in, so neither outlives the check.
    if let Err(message) = check_identity(shared, peer, certificate, &hello) {
        let reason = RefuseReason::NameRejected;
        return Err(refuse(framed, reason, message, peer, shared).await);
    }
    // Passed on by this tracerd's own re-forwarding (both protocols), its id appended.
    let path = (!hello.tracers.is_empty()).then(|| crate::model::DataPoint {
        name: crate::forward::TRACERD_PATH.to_string(),
        json: serde_json::to_string(&hello.tracers).unwrap_or_default(),
    });
    let opened = shared
        .open_sink_as(
            &name,
            &hello.node_name,
            peer,
            Protocol::Native,
            path.into_iter().collect(),
        )
        .await;
    let sink = match opened {
        Ok(sink) => sink,
        Err(e) => {
            // A full disk or an unwritable node directory: the node hears why.
            let message = format!(
                "cannot keep this node's logs: {}",
                crate::errors::error_chain(&e)
            );
            let reason = RefuseReason::Unavailable;
            return Err(refuse(framed, reason, message, peer, shared).await);
        }
    };
    tracing::info!(%peer, node = %sink.name(),
        software = %crate::node::escape_name(&hello.software.name),
        version = %crate::node::escape_name(&hello.software.version), "native handshake accepted");
    let software = &hello.software;
    let live = sink.lease().live();
    live.set_software(&software.name, &software.version, &software.commit);
    let capable = hello
        .capabilities
        .iter()
        .any(|c| c == tracerd_wire::tracing_config::CAPABILITY);
    drop(hello);
    // A node with `tracing-config.v1` can be sent configurations (issue 19).
    let push = capable.then(|| sink.lease().tracer_config().attach());
    let accept = TracerMessage::Accept {
        version: PROTOCOL_VERSION,
        node_name: sink.name().to_string(),
        persisted_seq: sink.resume_from(),
        max_frame_bytes,
    };
    if let Err(e) = framed.send(accept).await {
        // Nothing was queued yet: the sink closes at once; the connection's error is why.
        let _ = sink.close().await;
        return Err(Err(e.into()));
    }
    Ok((sink, push))
}

/// `tracerd.native.identities`: may this connection claim `hello.node_name`?
fn check_identity(
    shared: &Context,
    peer: &str,
    certificate: Option<Box<rustls::pki_types::CertificateDer<'static>>>,
    hello: &Hello,
) -> Result<(), String> {
    let presented = session::identity::Presented {
        tcp: !peer.starts_with("unix:"),
        certificate: certificate.as_deref(),
        token: &hello.token,
    };
    shared.identities.check(presented, &hello.node_name)
}

fn check_hello(hello: &Hello, magic: u32) -> Result<String, (RefuseReason, String)> {
    if hello.network_magic != magic {
        return Err((
            RefuseReason::WrongMagic,
            format!(
                "network magic {} does not match tracerd's networkMagic {magic}",
                hello.network_magic
            ),
        ));
    }
    if !hello
        .versions
        .iter()
        .any(|v| SUPPORTED_VERSIONS.contains(v))
    {
        return Err((
            RefuseReason::UnsupportedVersion,
            format!(
                "no common protocol version: node offers {:?}, tracerd speaks {SUPPORTED_VERSIONS:?}",
                hello.versions
            ),
        ));
    }
    node::dir_name(&hello.node_name).map_err(|e| (RefuseReason::NameRejected, e.to_string()))
}

async fn refuse<S>(
    framed: &mut Framed<S, TracerCodec>,
    reason: RefuseReason,
    message: String,
    peer: &str,
    shared: &Context,
) -> Result<End, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The message may carry what the peer sent (its name): escaped and capped, in the log
    // and in the echo alike.
    let message = crate::node::escape_name(&message);
    HandshakeRefused {
        peer,
        protocol: None,
        reason: refuse_label(reason),
        message: &message,
        by: RefusedBy::Tracerd,
        log: shared.refusals.admit(peer, std::time::Instant::now()),
    }
    .emit(&shared.telemetry);
    // The peer may already be gone; the refusal is best effort.
    let _ = framed.send(TracerMessage::Refuse { reason, message }).await;
    Ok(End::Refused(refuse_label(reason)))
}

/// The read loop of an accepted session, and the drain of its writer at the end.
async fn stream_node<S>(
    framed: &mut Framed<S, TracerCodec>,
    mut sink: NodeSink,
    mut push: Option<Box<tracer_config::PushLink>>,
    idle: Duration,
    telemetry: &crate::metrics::telemetry::Telemetry,
    cancel: &CancellationToken,
) -> Result<End, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut acked = sink.resume_from();
    // The first Ping goes at once, so a node's RTT is known from its first second on.
    let mut ping = tokio::time::interval_at(Instant::now() + FIRST_PING, PING_EVERY);
    let mut ping_sent: Option<(u64, Instant)> = None;
    let mut nonce = 0u64;
    // Whether a frame other than a Pong came since the last Ping.
    let mut busy = false;
    // One timer for the idle timeout, re-armed only when it fires early.
    let mut last_frame = Instant::now();
    let idle_check = tokio::time::sleep(idle);
    tokio::pin!(idle_check);

    let outcome: Result<End, SessionError> = loop {
        tokio::select! {
            _ = cancel.cancelled() => break Ok(End::Shutdown),
            () = &mut idle_check => {
                if last_frame.elapsed() >= idle {
                    break Err(SessionError::IdleTimeout(idle));
                }
                idle_check.as_mut().reset(last_frame + idle);
            }
            persisted = sink.persisted_beyond(acked) => match persisted {
                Ok(seq) => {
                    acked = seq;
                    if let Err(e) = framed.send(TracerMessage::Ack(seq)).await {
                        break Err(e.into());
                    }
                    sink.ack_sent(seq);
                }
                // The writer stopped: its error is collected by `close` below.
                Err(_) => break Ok(End::PeerClosed),
            },
            Some(req) = tracer_config::next_push(&mut push) => {
                if let Some(msg) = push.as_mut().and_then(|link| link.send(req)) {
                    if let Err(e) = framed.send(msg).await {
                        break Err(e.into());
                    }
                }
            }
            _ = ping.tick() => {
                nonce += 1;
                ping_sent = Some((nonce, Instant::now()));
                if let Err(e) = framed.send(TracerMessage::Ping(nonce)).await {
                    break Err(e.into());
                }
                // A node that sent nothing but Pongs since the last Ping is idle: its
                // buffers are given back (a streaming node keeps its grown ones).
                if !busy {
                    session::shrink_idle(framed);
                }
                busy = false;
            }
            frame = framed.next() => match frame {
                None => break Ok(End::PeerClosed),
                Some(Err(e)) => break Err(e.into()),
                Some(Ok(msg)) => {
                    last_frame = Instant::now();
                    busy |= !matches!(msg, NodeMessage::Pong(_));
                    match msg {
                        NodeMessage::Traces(batch) => {
                            match sink.push(batch).await {
                                Ok(()) => {}
                                Err(e @ SinkError::Sequence(_)) => break Err(e.into()),
                                Err(_) => break Ok(End::PeerClosed),
                            }
                        }
                        NodeMessage::Metrics(update) => sink.lease().apply_metrics(update),
                        NodeMessage::DataPoints(points) => sink.lease().apply_data_points(points),
                        NodeMessage::Ping(n) => {
                            if let Err(e) = framed.send(TracerMessage::Pong(n)).await {
                                break Err(e.into());
                            }
                        }
                        NodeMessage::Pong(n) => {
                            if let Some((sent_nonce, at)) = ping_sent.take() {
                                if sent_nonce == n {
                                    session::record_rtt(telemetry, &sink, at.elapsed());
                                }
                            }
                        }
                        NodeMessage::TracingConfig(report) => {
                            let now = node::live::now_ms();
                            match &mut push {
                                Some(link) => link.on_report(&report, now),
                                None => drop(sink.lease().tracer_config().take_report(&report, now)),
                            }
                        }
                        NodeMessage::Hello(_) => {
                            break Err(FrameError::Invalid("second Hello in one session".into()).into());
                        }
                    }
                }
            },
        }
    };

    // Drain: the writer finishes every queued batch once the queue closes, then syncs. Boxed:
    // the drain's state is needed once, at the end, and would otherwise size every session.
    let (persisted, written) = Box::pin(sink.close()).await;
    if persisted > acked && outcome.is_ok() {
        // Best effort: the node may already have closed.
        let _ = framed.send(TracerMessage::Ack(persisted)).await;
    }
    written?;
    outcome
}
