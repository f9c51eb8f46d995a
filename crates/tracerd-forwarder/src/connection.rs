//! The forwarder's task: connect, handshake, stream batches and state, resend what tracerd
//! has not acknowledged, answer and send pings, and reconnect with capped backoff until the
//! forwarder is closed.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tracerd_wire::model::{DataPoint, MetricsUpdate};
use tracerd_wire::native::{
    encode_node_frame, ForwarderCodec, Hello, NodeMessage, TracerMessage, PROTOCOL_VERSION,
};
use tracerd_wire::tracing_config::{self, TracingConfig};
use tracerd_wire::Backoff;

use crate::encode;
use crate::outbox::{Kept, Outbox};
use crate::timing::SendCause;
use crate::{
    lock, ConnectionError, ForwarderConfig, Shared, FRAME_SLACK, MAX_INCOMING_FRAME, READER_GRACE,
};

type Reader = Pin<Box<dyn AsyncRead + Send>>;
type Writer = Pin<Box<dyn AsyncWrite + Send>>;

/// Connects (the one [`tracerd_wire::connect`]), over TLS when configured for TCP, and splits
/// the stream into owned halves.
async fn connect(config: &ForwarderConfig) -> io::Result<(Reader, Writer)> {
    let address = &config.address;
    Ok(match tracerd_wire::connect(address).await? {
        #[cfg(feature = "tls")]
        Either::Left(s) if config.tls.is_some() => {
            let tls = config.tls.as_ref().expect("checked");
            let s = tls.connect(s).await?;
            let (r, w) = tokio::io::split(s);
            (Box::pin(r), Box::pin(w))
        }
        Either::Left(s) => {
            let (r, w) = s.into_split();
            (Box::pin(r), Box::pin(w))
        }
        Either::Right(s) => {
            let (r, w) = s.into_split();
            (Box::pin(r), Box::pin(w))
        }
    })
}

/// The forwarder's task: connect, serve a session, back off, repeat until closed.
pub(crate) async fn run(
    config: ForwarderConfig,
    shared: Arc<Shared>,
    stop: CancellationToken,
    closing: CancellationToken,
) {
    let mut outbox = Outbox::new();
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max).jittered();
    loop {
        if closing.is_cancelled() && drained(&shared, &outbox) {
            return;
        }
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = session(&config, &shared, &mut outbox, &closing) => r,
        };
        shared.counters.connected.store(false, Ordering::Relaxed);
        match result {
            Ok(()) => return,
            Err((handshaken, e)) => {
                tracing::debug!(node = %config.node_name, error = %e, "forwarder connection ended");
                shared.set_error(&e);
                if handshaken {
                    backoff.reset();
                }
            }
        }
        if closing.is_cancelled() && drained(&shared, &outbox) {
            return;
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

fn drained(shared: &Shared, outbox: &Outbox) -> bool {
    outbox.kept.is_empty() && lock(&shared.queue).traces.is_empty()
}

/// What the reader task forwards besides acknowledgements.
#[derive(Debug)]
enum Control {
    Ping(u64),
    Pong(u64),
    /// tracerd pushed a tracing configuration (request id, configuration).
    SetConfig(u64, TracingConfig),
}

/// One connection. `Err((handshaken, why))` when it ends otherwise than by a drained close.
async fn session(
    config: &ForwarderConfig,
    shared: &Arc<Shared>,
    outbox: &mut Outbox,
    closing: &CancellationToken,
) -> Result<(), (bool, ConnectionError)> {
    let timeout = config.connect_timeout;
    let (reader, mut writer) = match tokio::time::timeout(timeout, connect(config)).await {
        Err(_) => return Err((false, ConnectionError::Timeout(timeout))),
        Ok(Err(source)) => {
            return Err((
                false,
                ConnectionError::Connect {
                    address: config.address.to_string(),
                    source,
                },
            ))
        }
        Ok(Ok(rw)) => rw,
    };
    let mut frames = FramedRead::new(reader, ForwarderCodec::new(MAX_INCOMING_FRAME));
    let hello = encode_node_frame(NodeMessage::Hello(Box::new(Hello {
        versions: vec![PROTOCOL_VERSION],
        network_magic: config.network_magic,
        node_name: config.node_name.clone(),
        software: config.software.clone(),
        capabilities: if config.remote_config {
            vec![tracing_config::CAPABILITY.to_string()]
        } else {
            Vec::new()
        },
        token: config.token.clone().unwrap_or_default(),
        tracers: Vec::new(),
    })));
    let fail = |e: ConnectionError| (false, e);
    writer.write_all(&hello).await.map_err(|e| fail(e.into()))?;
    let answer = tokio::time::timeout(timeout, frames.next())
        .await
        .map_err(|_| fail(ConnectionError::Timeout(timeout)))?;
    let (persisted, max_frame) = match answer {
        None => return Err(fail(ConnectionError::Closed)),
        Some(Err(e)) => return Err(fail(e.into())),
        Some(Ok(TracerMessage::Accept {
            node_name,
            persisted_seq,
            max_frame_bytes,
            ..
        })) => {
            *lock(&shared.assigned_name) = Some(node_name);
            (persisted_seq, max_frame_bytes as usize)
        }
        Some(Ok(TracerMessage::Refuse { reason, message })) => {
            return Err(fail(ConnectionError::Refused { reason, message }))
        }
        Some(Ok(other)) => {
            return Err(fail(ConnectionError::Protocol(format!(
                "expected HelloAccept, got {other:?}"
            ))))
        }
    };
    let c = &shared.counters;
    c.connects.fetch_add(1, Ordering::Relaxed);
    c.connected.store(true, Ordering::Relaxed);
    let (acked_now, superseded) = outbox.accept(persisted);
    note_acked(shared, outbox, acked_now);
    if superseded > 0 {
        c.dropped.fetch_add(superseded as u64, Ordering::Relaxed);
        shared.release(superseded);
    }
    let frame_budget = config
        .max_batch_bytes
        .min(max_frame.saturating_sub(FRAME_SLACK))
        .max(1);

    // The reader: acknowledgements through a coalescing watch, the rest through a channel.
    let (ack_tx, mut ack_rx) = watch::channel(0u64);
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<Control>(16);
    let mut reader = AbortOnDrop(tokio::spawn(read_loop(
        frames,
        ack_tx,
        ctl_tx,
        shared.clone(),
    )));

    let mut s = Session {
        shared,
        writer: &mut writer,
        frame_budget,
        lens: Vec::new(),
        reader_done: false,
    };
    let result = s
        .stream(
            config,
            outbox,
            closing,
            &mut reader.0,
            &mut ack_rx,
            &mut ctl_rx,
        )
        .await;
    if result.is_err() && !s.reader_done {
        // Collect the last Ack tracerd sent before the connection went away.
        let _ = tokio::time::timeout(READER_GRACE, &mut reader.0).await;
        let seq = *ack_rx.borrow();
        let n = outbox.ack(seq);
        note_acked(shared, outbox, n);
    }
    result.map_err(|e| (true, e))
}

struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn note_acked(shared: &Shared, outbox: &Outbox, released: usize) {
    let c = &shared.counters;
    c.acked_seq.store(outbox.acked_seq, Ordering::Relaxed);
    if released > 0 {
        shared.release(released);
        let total = c.acked.fetch_add(released as u64, Ordering::Relaxed) + released as u64;
        shared.acked_tx.send_replace(total);
    }
}

async fn read_loop(
    mut frames: FramedRead<Reader, ForwarderCodec>,
    ack_tx: watch::Sender<u64>,
    ctl_tx: mpsc::Sender<Control>,
    shared: Arc<Shared>,
) -> Result<(), ConnectionError> {
    while let Some(msg) = frames.next().await {
        match msg? {
            TracerMessage::Ack(seq) => {
                shared.timing.ack_read(seq);
                ack_tx.send_if_modified(|v| {
                    let newer = seq > *v;
                    if newer {
                        *v = seq;
                    }
                    newer
                });
            }
            // A full channel means the writer is stuck: dropping a probe is harmless.
            TracerMessage::Ping(n) => {
                let _ = ctl_tx.try_send(Control::Ping(n));
            }
            TracerMessage::Pong(n) => {
                let _ = ctl_tx.try_send(Control::Pong(n));
            }
            // Not dropped: tracerd waits for the answer.
            TracerMessage::SetTracingConfig { request_id, config } => {
                if ctl_tx
                    .send(Control::SetConfig(request_id, config))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            other => {
                return Err(ConnectionError::Protocol(format!(
                    "unexpected message in session: {other:?}"
                )))
            }
        }
    }
    Err(ConnectionError::Closed)
}

struct Session<'a> {
    shared: &'a Shared,
    writer: &'a mut Writer,
    /// Largest batch frame body: every object's encoded size counted against it.
    frame_budget: usize,
    /// Scratch of `send_ready`: the encoded length of each object of the batch being cut
    /// (at most `max_batch_objects` entries, reused from batch to batch).
    lens: Vec<usize>,
    /// The reader task has been awaited to completion (it must not be polled again).
    reader_done: bool,
}

impl Session<'_> {
    async fn write(&mut self, frame: &[u8]) -> Result<(), ConnectionError> {
        self.writer.write_all(frame).await?;
        self.shared
            .counters
            .bytes_sent
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn stream(
        &mut self,
        config: &ForwarderConfig,
        outbox: &mut Outbox,
        closing: &CancellationToken,
        reader: &mut JoinHandle<Result<(), ConnectionError>>,
        ack_rx: &mut watch::Receiver<u64>,
        ctl_rx: &mut mpsc::Receiver<Control>,
    ) -> Result<(), ConnectionError> {
        let shared = self.shared;
        // Resend, oldest first, everything tracerd has not acknowledged.
        // Nothing touches `outbox` while this loop runs, so the indices stay valid.
        for i in 0..outbox.kept.len() {
            let (frame, n, written) = {
                let k = &outbox.kept[i];
                (k.frame.clone(), k.len(), k.written)
            };
            self.write(&frame).await?;
            let counter = if written {
                &shared.counters.resent
            } else {
                &shared.counters.sent
            };
            counter.fetch_add(n as u64, Ordering::Relaxed);
            outbox.kept[i].written = true;
        }
        // Metrics and data points: the whole state after every (re)connect.
        self.send_state(true).await?;
        if config.remote_config {
            shared.report_pending.store(false, Ordering::Release);
            self.send_report(crate::config::report(shared, 0, None))
                .await?;
        }

        let ping_every = config.ping_every.unwrap_or(Duration::from_secs(3600));
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        let mut ping_sent: Option<(u64, Instant)> = None;
        let mut nonce = 0u64;
        let mut linger: Option<Instant> = None;
        loop {
            let close_now = closing.is_cancelled();
            let deadline = linger.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                joined = &mut *reader => {
                    self.reader_done = true;
                    let seq = *ack_rx.borrow_and_update();
                    let n = outbox.ack(seq);
                    note_acked(shared, outbox, n);
                    return Err(match joined {
                        Ok(Err(e)) => e,
                        Ok(Ok(())) => ConnectionError::Closed,
                        Err(e) => ConnectionError::Protocol(format!("reader task failed: {e}")),
                    });
                }
                changed = ack_rx.changed() => {
                    let seq = *ack_rx.borrow_and_update();
                    let n = outbox.ack(seq);
                    note_acked(shared, outbox, n);
                    if changed.is_err() {
                        // The reader has ended (it dropped the sender); collect why, bounded.
                        self.reader_done = true;
                        return Err(match tokio::time::timeout(READER_GRACE, &mut *reader).await {
                            Ok(Ok(Err(e))) => e,
                            Ok(Ok(Ok(()))) | Err(_) => ConnectionError::Closed,
                            Ok(Err(e)) => ConnectionError::Protocol(format!("reader task failed: {e}")),
                        });
                    }
                }
                Some(ctl) = ctl_rx.recv() => match ctl {
                    Control::Ping(n) => self.write(&encode_node_frame(NodeMessage::Pong(n))).await?,
                    Control::Pong(n) => {
                        if let Some((sent, at)) = ping_sent.take() {
                            if sent == n {
                                let micros = at.elapsed().as_micros().max(1) as u64;
                                shared.counters.rtt_micros.store(micros, Ordering::Relaxed);
                            } else {
                                ping_sent = Some((sent, at));
                            }
                        }
                    }
                    Control::SetConfig(id, c) => {
                        let guard = config.config_guard.as_ref();
                        let report = crate::config::answer_push(shared, id, c, guard);
                        self.send_report(report).await?;
                    }
                },
                _ = ping.tick(), if config.ping_every.is_some() => {
                    nonce += 1;
                    ping_sent = Some((nonce, Instant::now()));
                    self.write(&encode_node_frame(NodeMessage::Ping(nonce))).await?;
                }
                _ = shared.notify.notified() => {}
                _ = tokio::time::sleep_until(deadline), if linger.is_some() => {}
                _ = closing.cancelled(), if !close_now => {}
            }
            linger = self
                .send_ready(config, outbox, closing.is_cancelled())
                .await?;
            self.send_state(false).await?;
            if config.remote_config && shared.report_pending.swap(false, Ordering::AcqRel) {
                self.send_report(crate::config::report(shared, 0, None))
                    .await?;
            }
            if closing.is_cancelled() && drained(shared, outbox) {
                return Ok(());
            }
        }
    }

    async fn send_report(
        &mut self,
        report: tracerd_wire::native::TracingConfigReport,
    ) -> Result<(), ConnectionError> {
        self.write(&encode_node_frame(NodeMessage::TracingConfig(report)))
            .await
    }

    /// Sends every full batch, and a partial one when nothing is awaiting its `Ack`, when its
    /// linger time is over, or when closing (Nagle's rule, as Kafka's and NATS's clients
    /// batch): objects accumulate only while a batch is in flight, so an idle or lightly
    /// loaded node's objects go at once and a busy node's batches stay large. Returns the
    /// linger deadline of what stays queued.
    async fn send_ready(
        &mut self,
        config: &ForwarderConfig,
        outbox: &mut Outbox,
        flush_all: bool,
    ) -> Result<Option<Instant>, ConnectionError> {
        let shared = self.shared;
        loop {
            let now = Instant::now();
            let cause;
            let batch = {
                let mut q = lock(&shared.queue);
                if q.traces.is_empty() {
                    return Ok(None);
                }
                // Every batch written so far is acknowledged: a partial batch need not wait.
                let idle = outbox.kept.is_empty();
                let lingered = q.oldest.is_none_or(|t| t + config.linger <= now);
                let full = q.traces.len() >= config.max_batch_objects;
                if !full && !idle && !lingered && !flush_all {
                    return Ok(q.oldest.map(|t| t + config.linger));
                }
                cause = if full {
                    SendCause::Full
                } else if idle {
                    SendCause::Idle
                } else if lingered {
                    SendCause::Linger
                } else {
                    SendCause::Flush
                };
                let mut objects = Vec::with_capacity(q.traces.len().min(config.max_batch_objects));
                self.lens.clear();
                let mut bytes = 0usize;
                let mut oversize = 0usize;
                while objects.len() < config.max_batch_objects {
                    // Each object's encoded length, computed once: for the budget here and
                    // for the frame's length fields.
                    let Some(len) = q.traces.front().map(encode::object_len) else {
                        break;
                    };
                    let size = encode::object_size(len);
                    if size > self.frame_budget {
                        q.traces.pop_front();
                        oversize += 1;
                        continue;
                    }
                    if bytes + size > self.frame_budget && !objects.is_empty() {
                        break;
                    }
                    bytes += size;
                    if let Some(o) = q.traces.pop_front() {
                        objects.push(o);
                        self.lens.push(len);
                    }
                }
                q.oldest = if q.traces.is_empty() { None } else { Some(now) };
                if oversize > 0 {
                    shared
                        .counters
                        .dropped
                        .fetch_add(oversize as u64, Ordering::Relaxed);
                    shared.release(oversize);
                }
                objects
            };
            if batch.is_empty() {
                continue;
            }
            let n = batch.len();
            let first_seq = outbox.next_seq;
            outbox.next_seq += n as u64;
            let frame = encode::batch_frame(first_seq, &batch, &self.lens);
            drop(batch);
            outbox.kept.push_back(Kept {
                first_seq,
                last_seq: first_seq + n as u64 - 1,
                frame: frame.clone(),
                written: false,
            });
            self.write(&frame).await?;
            shared.timing.written(first_seq + n as u64 - 1, cause);
            if let Some(k) = outbox.kept.back_mut() {
                k.written = true;
            }
            shared.counters.sent.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Sends changed (or, with `all`, every) metric and data point.
    async fn send_state(&mut self, all: bool) -> Result<(), ConnectionError> {
        let (metrics, points) = {
            let mut q = lock(&self.shared.queue);
            let metrics = (all && !q.metrics.all.is_empty() || q.metrics.is_dirty())
                .then(|| q.metrics.take(all));
            let points = (all && !q.points.all.is_empty() || q.points.is_dirty())
                .then(|| q.points.take(all).1);
            (metrics, points)
        };
        if let Some((full, metrics)) = metrics {
            let frame = encode_node_frame(NodeMessage::Metrics(MetricsUpdate { full, metrics }));
            self.write(&frame).await?;
        }
        if let Some(points) = points.filter(|p| !p.is_empty()) {
            let points = points
                .into_iter()
                .map(|(name, json)| DataPoint { name, json })
                .collect();
            self.write(&encode_node_frame(NodeMessage::DataPoints(points)))
                .await?;
        }
        Ok(())
    }
}
