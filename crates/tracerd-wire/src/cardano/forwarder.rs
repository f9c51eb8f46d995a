//! The FORWARDER side of Cardano's forwarding protocols (the node's side), in either
//! connection role, written to the reference's forwarder checklist (§13) so that
//! cardano-tracer can decode it: [`run`] does the handshake and then answers the acceptor's
//! requests from a [`Source`] until the acceptor closes, sends `MsgDone`, or the source is
//! finished and empty.
//!
//! Trace objects: a blocking request waits until the source has something and is answered
//! with at most the requested number (never an empty blocking reply, §7.4); a non-blocking
//! request is answered at once. EKG: answered from the source's current metrics with
//! ekg-forward's per-connection delta bookkeeping (§6.3, [`ekg_answer`]). Data points:
//! one entry per requested name, in request order (§8.2).
//!
//! Used by the simulated cardano-node (`tracerd-sim`) and by tracerd's re-forwarding, which
//! plays a node towards a downstream tracer.

use std::collections::HashMap;
use std::future::Future;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;

use super::codec::{self, CborError, DataPointAsk, EkgAsk, EkgRequest, EkgValue, TraceAsk};
use super::handshake::{self, HandshakeError, Outcome};
use super::mux::{send, Mode, MuxCodec, MuxError, DATA_POINTS, EKG, TRACE_OBJECTS};
use crate::model::TraceObject;

/// What a forwarder serves: its trace-object queue, metrics and data points.
pub trait Source {
    /// Takes up to `max` queued trace objects, oldest first, without waiting.
    fn take(&self, max: usize) -> Vec<TraceObject>;
    /// Resolves when objects may have been queued or the source finished since the last
    /// [`Source::take`] found nothing (spurious wake-ups are fine; a lost one is not).
    fn changed(&self) -> impl Future<Output = ()> + Send;
    /// No object will be queued any more: once the queue is empty the connection ends.
    fn finished(&self) -> bool {
        false
    }
    /// Every metric with its current value.
    fn metrics(&self) -> Vec<(String, EkgValue)>;
    /// A data point's current JSON bytes, by name (it may be asked of someone else: the
    /// connection answers nothing else meanwhile, so it should be prompt).
    fn data_point(&self, name: &str) -> impl Future<Output = Option<Vec<u8>>> + Send;
    /// `n` trace objects were written to the acceptor.
    fn sent(&self, _n: usize) {}
    /// Plays an ekg-forward older than 0.9, which cannot decode `GetUpdatedMetrics`.
    fn legacy_ekg(&self) -> bool {
        false
    }
}

/// How a forwarding connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The acceptor closed the connection.
    Closed,
    /// The acceptor sent `MsgDone` on the given mini-protocol.
    Done(u16),
    /// The handshake was refused (by either side); the refusal, for display.
    Refused(String),
    /// The source finished and every queued object was sent.
    Finished,
}

/// Why a forwarding connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Bad bytes, or the connection broke.
    #[error(transparent)]
    Mux(#[from] MuxError),
    /// Bad message.
    #[error("bad message: {0}")]
    Codec(#[from] CborError),
    /// Bad handshake.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// A message the forwarder does not expect.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The source plays an ekg-forward older than 0.9, which cannot decode `GetUpdatedMetrics`.
    #[error("cannot decode GetUpdatedMetrics (ekg-forward < 0.9)")]
    LegacyEkg,
}

impl ForwardError {
    /// A bounded label for counting and logging.
    pub fn kind(&self) -> &'static str {
        match self {
            ForwardError::Mux(e) => e.kind(),
            ForwardError::Codec(e) => e.kind(),
            ForwardError::Handshake(e) => e.kind(),
            ForwardError::Protocol(_) => "protocol_violation",
            ForwardError::LegacyEkg => "legacy_ekg",
        }
    }
}

/// The handshake outcome, then the serving loop's end; `mode` is the forwarder's connection
/// role (`Initiator` when it connected, `Responder` when it accepted).
pub async fn run<S, Src>(
    stream: S,
    mode: Mode,
    magic: u32,
    max_message: usize,
    source: &Src,
    accepted: impl FnOnce(),
) -> Result<End, ForwardError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    Src: Source + ?Sized,
{
    let mut framed = Framed::new(stream, MuxCodec::new(mode, max_message));
    let outcome = match mode {
        Mode::Initiator => handshake::propose(&mut framed, magic).await?,
        Mode::Responder => handshake::respond(&mut framed, magic).await?,
    };
    match outcome {
        Outcome::Accepted => {}
        Outcome::RefusedPeer(label, text) | Outcome::RefusedByPeer(label, text) => {
            return Ok(End::Refused(format!("{label}: {text}")));
        }
    }
    accepted();
    serve(&mut framed, source).await
}

/// Answers the acceptor's requests on an open connection after the handshake.
pub async fn serve<S, Src>(
    framed: &mut Framed<S, MuxCodec>,
    source: &Src,
) -> Result<End, ForwardError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    Src: Source + ?Sized,
{
    // The outstanding blocking trace request, waiting for objects.
    let mut pending: Option<u16> = None;
    let mut back: HashMap<String, EkgValue> = HashMap::new();
    loop {
        if source.finished() && pending.is_some() {
            // Objects queued before the source finished are still sent.
            let objects = source.take(usize::from(pending.unwrap_or(1)));
            if objects.is_empty() {
                return Ok(End::Finished);
            }
            pending = None;
            reply_traces(framed, source, &objects).await?;
        }
        tokio::select! {
            _ = source.changed(), if pending.is_some() => {
                let count = pending.unwrap_or(1);
                let objects = source.take(usize::from(count));
                if !objects.is_empty() {
                    pending = None;
                    reply_traces(framed, source, &objects).await?;
                }
            }
            msg = framed.next() => {
                let msg = match msg {
                    None => return Ok(End::Closed),
                    Some(m) => m?,
                };
                match msg.protocol {
                    EKG => match codec::decode_ekg_ask(&msg.payload)? {
                        EkgAsk::Done => return Ok(End::Done(EKG)),
                        EkgAsk::Req(req) => {
                            let reply =
                                ekg_answer(&req, source.metrics(), &mut back, source.legacy_ekg())?;
                            send(framed, EKG, codec::encode_ekg_response(&reply)).await?;
                        }
                    },
                    TRACE_OBJECTS => match codec::decode_trace_ask(&msg.payload)? {
                        TraceAsk::Done => return Ok(End::Done(TRACE_OBJECTS)),
                        TraceAsk::Request { blocking, count } => {
                            if pending.is_some() {
                                return Err(ForwardError::Protocol(
                                    "second trace request while one is pending".into(),
                                ));
                            }
                            let objects = source.take(usize::from(count));
                            if objects.is_empty() && blocking {
                                // n = 0 would never be answered (§7.4): wait like the node.
                                pending = Some(count.max(1));
                            } else {
                                reply_traces(framed, source, &objects).await?;
                            }
                        }
                    },
                    DATA_POINTS => match codec::decode_data_point_ask(&msg.payload)? {
                        DataPointAsk::Done => return Ok(End::Done(DATA_POINTS)),
                        DataPointAsk::Request(names) => {
                            let mut values = Vec::with_capacity(names.len());
                            for n in names {
                                let v = source.data_point(&n).await;
                                values.push((n, v));
                            }
                            send(framed, DATA_POINTS, codec::encode_data_point_reply(&values))
                                .await?;
                        }
                    },
                    other => return Err(MuxError::UnknownProtocol(other).into()),
                }
            }
        }
    }
}

async fn reply_traces<S, Src>(
    framed: &mut Framed<S, MuxCodec>,
    source: &Src,
    objects: &[TraceObject],
) -> Result<(), ForwardError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    Src: Source + ?Sized,
{
    send(framed, TRACE_OBJECTS, codec::encode_trace_reply(objects)).await?;
    source.sent(objects.len());
    Ok(())
}

/// ekg-forward's answer to `req` given every current metric, with its per-connection
/// back-buffer bookkeeping (reference §6.3): `GetAllMetrics` replaces the back-buffer,
/// `GetMetrics` merges the selected ones into it, `GetUpdatedMetrics` answers what differs
/// from it (or is new) and then replaces it. `legacy`: an ekg-forward older than 0.9 fails
/// on `GetUpdatedMetrics`.
pub fn ekg_answer(
    req: &EkgRequest,
    all: Vec<(String, EkgValue)>,
    back: &mut HashMap<String, EkgValue>,
    legacy: bool,
) -> Result<Vec<(String, EkgValue)>, ForwardError> {
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
        EkgRequest::Updated if legacy => Err(ForwardError::LegacyEkg),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, n: i64) -> (String, EkgValue) {
        (name.to_string(), EkgValue::Gauge(n))
    }

    #[test]
    fn updated_metrics_answer_only_what_changed() {
        let mut back = HashMap::new();
        let first = ekg_answer(
            &EkgRequest::Updated,
            vec![m("a", 1), m("b", 2)],
            &mut back,
            false,
        )
        .unwrap();
        assert_eq!(first.len(), 2, "the first delta is everything");
        let second = ekg_answer(
            &EkgRequest::Updated,
            vec![m("a", 1), m("b", 3)],
            &mut back,
            false,
        )
        .unwrap();
        assert_eq!(second, vec![m("b", 3)]);
        let named = ekg_answer(
            &EkgRequest::Named(vec!["a".into()]),
            vec![m("a", 5), m("b", 3)],
            &mut back,
            false,
        )
        .unwrap();
        assert_eq!(named, vec![m("a", 5)]);
        assert!(matches!(
            ekg_answer(&EkgRequest::Updated, vec![], &mut back, true),
            Err(ForwardError::LegacyEkg)
        ));
    }
}
