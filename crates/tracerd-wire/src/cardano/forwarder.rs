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

use std::collections::{HashMap, VecDeque};
use std::future::Future;

use std::io::IoSlice;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Framed;

use super::codec::{self, CborError, DataPointAsk, EkgAsk, EkgRequest, EkgValue, TraceAsk};
use super::handshake::{self, HandshakeError, Outcome};
use super::mux::{
    send, Mode, MuxCodec, MuxError, DATA_POINTS, EKG, HEADER_LEN, MAX_SEND_SDU, TRACE_OBJECTS,
};
use crate::model::TraceObject;

/// What a forwarder serves: its trace-object queue, metrics and data points.
pub trait Source {
    /// Takes up to `max` queued trace objects, oldest first, without waiting.
    fn take(&self, max: usize) -> Vec<TraceObject>;
    /// Takes up to `max` queued objects like [`Source::take`] and appends them, encoded
    /// ([`codec::encode_trace_object`]), to `out`; returns how many. A source that keeps its
    /// objects encoded (the simulated node) copies bytes here instead.
    fn take_encoded(&self, max: usize, out: &mut Vec<u8>) -> usize {
        let objects = self.take(max);
        for o in &objects {
            codec::encode_trace_object(out, &o.into());
        }
        objects.len()
    }
    /// Takes up to `max` queued objects like [`Source::take_encoded`] and appends their
    /// bytes to `parts` (in order; the objects' bytes concatenated): a source that keeps its
    /// objects encoded in shared buffers (the simulated node) hands out slices of them, so
    /// a reply is written from them without a copy. Returns how many objects.
    fn take_parts(&self, max: usize, parts: &mut Vec<Bytes>) -> usize {
        let mut out = Vec::new();
        let n = self.take_encoded(max, &mut out);
        if !out.is_empty() {
            parts.push(out.into());
        }
        n
    }
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

/// Most trace-object requests an acceptor may have waiting at once. cardano-tracer has one
/// outstanding, tracerd at most `traceRequestsInFlight` (≤ 8); the node's own mux buffers
/// any number, answering them in order, so this bound only stops a runaway acceptor.
pub const MAX_WAITING_REQUESTS: usize = 64;

/// Answers the acceptor's requests on an open connection after the handshake.
///
/// Trace-object requests are answered in the order they came, one at a time, as the node's
/// non-pipelined `runPeer` does: an acceptor that pipelines (sends the next request before
/// the reply to the previous one) has the later ones wait behind a blocking one.
pub async fn serve<S, Src>(
    framed: &mut Framed<S, MuxCodec>,
    source: &Src,
) -> Result<End, ForwardError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    Src: Source + ?Sized,
{
    // Trace requests not answered yet, oldest first: (blocking, count).
    let mut waiting: VecDeque<(bool, u16)> = VecDeque::new();
    let mut back: HashMap<String, EkgValue> = HashMap::new();
    loop {
        // Answer what can be answered now, in order; a blocking request with nothing to
        // send waits for the source (n = 0 would never be answered, §7.4: wait like the node).
        while let Some(&(blocking, count)) = waiting.front() {
            let max = if blocking { count.max(1) } else { count };
            if reply_traces(framed, source, usize::from(max), !blocking).await? == 0 {
                if source.finished() {
                    // Objects queued before the source finished were sent.
                    return Ok(End::Finished);
                }
                break;
            }
            waiting.pop_front();
        }
        tokio::select! {
            _ = source.changed(), if !waiting.is_empty() => {}
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
                            if waiting.len() >= MAX_WAITING_REQUESTS {
                                return Err(ForwardError::Protocol(format!(
                                    "more than {MAX_WAITING_REQUESTS} trace requests waiting"
                                )));
                            }
                            waiting.push_back((blocking, count));
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

/// Sends up to `max` objects in one `MsgTraceObjectsReply` written from the source's own
/// buffers ([`Source::take_parts`], [`write_reply`]); with none queued, sends the empty reply
/// if `empty_ok`, else nothing. Returns how many were sent.
async fn reply_traces<S, Src>(
    framed: &mut Framed<S, MuxCodec>,
    source: &Src,
    max: usize,
    empty_ok: bool,
) -> Result<usize, ForwardError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    Src: Source + ?Sized,
{
    let mut parts = Vec::new();
    let n = source.take_parts(max, &mut parts);
    if n == 0 {
        if empty_ok {
            send(framed, TRACE_OBJECTS, codec::REPLY_EMPTY.to_vec()).await?;
        }
        return Ok(0);
    }
    write_reply(framed, &parts).await?;
    source.sent(n);
    Ok(n)
}

/// Most buffers handed to one `writev` (Linux refuses more than 1,024).
const MAX_IOV: usize = 512;

/// Writes the `MsgTraceObjectsReply` made of [`codec::REPLY_START`], `parts` (the encoded
/// objects) and [`codec::REPLY_END`] on the trace-object protocol, cut into SDUs of at most
/// [`MAX_SEND_SDU`] bytes: the same bytes as [`send`] of the concatenation, but the SDU
/// headers and the parts go out with vectored writes, without copying the objects into one
/// message and again into the codec's write buffer. A stream without vectored writes gets
/// the concatenation through the codec.
async fn write_reply<S>(framed: &mut Framed<S, MuxCodec>, parts: &[Bytes]) -> Result<(), MuxError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let end = [codec::REPLY_END];
    let pieces = || {
        std::iter::once(&codec::REPLY_START[..])
            .chain(parts.iter().map(|p| &p[..]))
            .chain(std::iter::once(&end[..]))
    };
    if !framed.get_ref().is_write_vectored() {
        return send(framed, TRACE_OBJECTS, pieces().flatten().copied().collect()).await;
    }
    // Nothing the codec buffered may go after this reply (every `send` flushes, so this
    // writes nothing).
    futures_util::SinkExt::<super::mux::Message>::flush(framed).await?;
    let total: usize = pieces().map(<[u8]>::len).sum();
    let headers: Vec<[u8; HEADER_LEN]> = (0..total.div_ceil(MAX_SEND_SDU))
        .map(|i| {
            let len = (total - i * MAX_SEND_SDU).min(MAX_SEND_SDU) as u16;
            framed.codec().sdu_header(TRACE_OBJECTS, len)
        })
        .collect();
    let mut slices = Vec::with_capacity(2 * headers.len() + parts.len() + 2);
    let (mut headers_left, mut room) = (headers.iter(), 0usize);
    for mut piece in pieces() {
        while !piece.is_empty() {
            if room == 0 {
                if let Some(h) = headers_left.next() {
                    slices.push(IoSlice::new(h));
                }
                room = MAX_SEND_SDU;
            }
            let (now, rest) = piece.split_at(piece.len().min(room));
            slices.push(IoSlice::new(now));
            room -= now.len();
            piece = rest;
        }
    }
    let io = framed.get_mut();
    let mut bufs = &mut slices[..];
    while !bufs.is_empty() {
        let k = bufs.len().min(MAX_IOV);
        let n = io.write_vectored(&bufs[..k]).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
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

    /// A queue of objects for [`serve`], polled (spurious wake-ups are allowed).
    struct Queue(std::sync::Mutex<Vec<TraceObject>>);

    impl Source for Queue {
        fn take(&self, max: usize) -> Vec<TraceObject> {
            let mut q = self.0.lock().unwrap();
            let n = q.len().min(max);
            q.drain(..n).collect()
        }
        fn changed(&self) -> impl Future<Output = ()> + Send {
            tokio::time::sleep(std::time::Duration::from_millis(5))
        }
        fn metrics(&self) -> Vec<(String, EkgValue)> {
            Vec::new()
        }
        fn data_point(&self, _: &str) -> impl Future<Output = Option<Vec<u8>>> + Send {
            std::future::ready(None)
        }
    }

    fn object(seq: u64) -> TraceObject {
        TraceObject {
            namespace: "A.B".into(),
            severity: crate::model::Severity::Info,
            detail: crate::model::DetailLevel::Normal,
            timestamp_ns: seq as i64,
            hostname: "h".into(),
            thread_id: "1".into(),
            machine: format!("{{\"seq\":{seq}}}").into(),
            form: crate::model::MachineForm::Line,
            human: None,
        }
    }

    /// Pipelined requests wait behind a blocking one and are answered in order, each with at
    /// most its count; a non-blocking one behind them gets the empty reply.
    #[tokio::test]
    async fn pipelined_requests_are_answered_one_by_one_in_order() {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let source = Queue(std::sync::Mutex::new(Vec::new()));
        let mut node = Framed::new(ours, MuxCodec::new(Mode::Responder, 1 << 20));
        let mut acceptor = Framed::new(theirs, MuxCodec::new(Mode::Initiator, 1 << 20));
        node.codec_mut().end_handshake();
        acceptor.codec_mut().end_handshake();
        let acceptor_side = async {
            for (blocking, count) in [(true, 3), (true, 3), (false, 5)] {
                send(
                    &mut acceptor,
                    TRACE_OBJECTS,
                    codec::encode_trace_request(blocking, count),
                )
                .await
                .unwrap();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            source.0.lock().unwrap().extend((0..5).map(object));
            let mut replies = Vec::new();
            for _ in 0..3 {
                let msg = acceptor.next().await.unwrap().unwrap();
                let objects = codec::decode_trace_reply(&msg.payload).unwrap();
                replies.push(objects.iter().map(|o| o.timestamp_ns).collect::<Vec<_>>());
            }
            drop(acceptor);
            replies
        };
        let (replies, end) = tokio::join!(acceptor_side, serve(&mut node, &source));
        assert_eq!(replies, vec![vec![0, 1, 2], vec![3, 4], vec![]]);
        assert_eq!(end.unwrap(), End::Closed);
    }

    /// A stream without vectored writes (as a TLS stream may be).
    struct Plain<T>(T);

    impl<T: AsyncRead + Unpin> AsyncRead for Plain<T> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl<T: AsyncWrite + Unpin> AsyncWrite for Plain<T> {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
        }
        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.0).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    /// A reply written from parts (vectored, over a real socket; and through the codec over a
    /// stream without vectored writes) is the SDUs `send` would write for the concatenation:
    /// full SDUs of `MAX_SEND_SDU` bytes, the last one shorter, the node's mode bit, protocol 2.
    #[tokio::test]
    async fn a_reply_written_from_parts_is_the_sdus_of_the_whole_message() {
        use tokio::io::AsyncReadExt;
        // Parts that end inside, at and across SDU boundaries.
        let parts: Vec<Bytes> = [5000usize, 7285, 1, 30_000, 0, 12_288, 77]
            .iter()
            .enumerate()
            .map(|(i, &n)| Bytes::from((0..n).map(|j| (i * 7 + j) as u8).collect::<Vec<u8>>()))
            .collect();
        let mut whole = codec::REPLY_START.to_vec();
        for p in &parts {
            whole.extend_from_slice(p);
        }
        whole.push(codec::REPLY_END);
        let (a, mut b) = tokio::net::UnixStream::pair().unwrap();
        let (c, mut d) = tokio::io::duplex(1 << 20);
        let mut vectored = Framed::new(a, MuxCodec::new(Mode::Responder, 1 << 20));
        let mut plain = Framed::new(Plain(c), MuxCodec::new(Mode::Responder, 1 << 20));
        assert!(vectored.get_ref().is_write_vectored());
        assert!(!plain.get_ref().is_write_vectored());
        write_reply(&mut vectored, &parts).await.unwrap();
        write_reply(&mut plain, &parts).await.unwrap();
        drop((vectored, plain));
        let (mut raw, mut raw_plain) = (Vec::new(), Vec::new());
        b.read_to_end(&mut raw).await.unwrap();
        d.read_to_end(&mut raw_plain).await.unwrap();
        for raw in [raw, raw_plain] {
            let (mut at, mut payload) = (0, Vec::new());
            while at < raw.len() {
                let header = super::super::mux::Header::parse(raw[at..at + 8].try_into().unwrap());
                assert_eq!(
                    (header.mode, header.protocol),
                    (Mode::Responder, TRACE_OBJECTS)
                );
                let len = usize::from(header.len);
                assert_eq!(len, (whole.len() - payload.len()).min(MAX_SEND_SDU));
                payload.extend_from_slice(&raw[at + 8..at + 8 + len]);
                at += 8 + len;
            }
            assert_eq!(payload, whole);
        }
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
