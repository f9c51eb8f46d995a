//! The Unix-socket half of a capture: [`Recorded`], the stream wrapper a Unix connection is
//! served through, copies what tracerd reads and writes to the connection's [`Recorder`] while
//! a capture is armed. Unarmed, a read or write costs one relaxed atomic load more.
//!
//! Copies go over a bounded channel to the capture's blocking writer; past
//! [`MAX_QUEUED_BYTES`] (or [`MAX_QUEUED_CHUNKS`]) waiting, a chunk is dropped and counted (the
//! file's `isb_ifdrop`), so a capture never slows the connection or holds more memory than that.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::pcapng::Direction;
use super::Wire;

/// Most bytes of one capture waiting for its writer.
pub const MAX_QUEUED_BYTES: usize = 4 << 20;
/// Most chunks of one capture waiting for its writer.
pub const MAX_QUEUED_CHUNKS: usize = 4096;

/// One read or write of tracerd on the connection.
#[derive(Debug)]
pub struct Chunk {
    /// When, in nanoseconds since the epoch.
    pub ts_ns: u64,
    /// Read (inbound) or written (outbound).
    pub direction: Direction,
    /// The bytes.
    pub data: Vec<u8>,
}

/// The connection's end of an armed capture.
#[derive(Debug)]
pub struct Recorder {
    tx: mpsc::SyncSender<Chunk>,
    counts: Arc<Counts>,
}

/// What the recorder and the writer share.
#[derive(Debug, Default)]
pub struct Counts {
    /// Bytes sent and not yet taken by the writer.
    pub queued: AtomicUsize,
    /// Chunks dropped because the writer was behind.
    pub dropped: AtomicU64,
}

/// The writer's end.
#[derive(Debug)]
pub struct Feed {
    /// The chunks.
    pub rx: mpsc::Receiver<Chunk>,
    /// Shared counts.
    pub counts: Arc<Counts>,
}

/// A recorder and the feed its chunks arrive on.
pub fn channel() -> (Recorder, Feed) {
    let (tx, rx) = mpsc::sync_channel(MAX_QUEUED_CHUNKS);
    let counts = Arc::new(Counts::default());
    (
        Recorder {
            tx,
            counts: counts.clone(),
        },
        Feed { rx, counts },
    )
}

impl Recorder {
    /// Queues a copy of `data`; never waits.
    pub fn record(&self, direction: Direction, data: &[u8]) {
        let c = &self.counts;
        if c.queued.fetch_add(data.len(), Ordering::Relaxed) + data.len() > MAX_QUEUED_BYTES {
            c.queued.fetch_sub(data.len(), Ordering::Relaxed);
            c.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let chunk = Chunk {
            ts_ns: super::now_ns(),
            direction,
            data: data.to_vec(),
        };
        if self.tx.try_send(chunk).is_err() {
            c.queued.fetch_sub(data.len(), Ordering::Relaxed);
            c.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A stream whose reads and writes an armed capture of its connection sees.
#[derive(Debug)]
pub struct Recorded<S> {
    inner: S,
    wire: Arc<Wire>,
}

impl<S> Recorded<S> {
    /// Serves `inner` under `wire`.
    pub fn new(inner: S, wire: Arc<Wire>) -> Recorded<S> {
        Recorded { inner, wire }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.wire.armed() && matches!(r, Poll::Ready(Ok(()))) {
            this.wire
                .record(Direction::Inbound, &buf.filled()[before..]);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if this.wire.armed() {
                this.wire.record(Direction::Outbound, &buf[..n]);
            }
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            if this.wire.armed() {
                let mut left = n;
                for b in bufs {
                    if left == 0 {
                        break;
                    }
                    let take = left.min(b.len());
                    this.wire.record(Direction::Outbound, &b[..take]);
                    left -= take;
                }
            }
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn an_armed_wire_sees_both_directions_in_order_and_an_unarmed_one_nothing() {
        let (a, mut b) = tokio::io::duplex(1024);
        let wire = Arc::new(Wire::new(super::super::Endpoint::Unix {
            path: "t.sock".into(),
        }));
        let mut s = Recorded::new(a, wire.clone());
        s.write_all(b"before").await.unwrap();
        let (recorder, feed) = channel();
        wire.arm(recorder);
        s.write_all(b"out").await.unwrap();
        b.write_all(b"in").await.unwrap();
        let mut got = [0u8; 2];
        s.read_exact(&mut got).await.unwrap();
        wire.disarm();
        s.write_all(b"after").await.unwrap();
        let chunks: Vec<Chunk> = feed.rx.try_iter().collect();
        let seen: Vec<(Direction, &[u8])> = chunks
            .iter()
            .map(|c| (c.direction, c.data.as_slice()))
            .collect();
        assert_eq!(
            seen,
            vec![
                (Direction::Outbound, &b"out"[..]),
                (Direction::Inbound, &b"in"[..])
            ]
        );
        assert!(chunks[0].ts_ns <= chunks[1].ts_ns);
    }

    #[test]
    fn a_writer_behind_loses_chunks_counted_never_memory() {
        let (recorder, feed) = channel();
        let big = vec![0u8; MAX_QUEUED_BYTES / 2 + 1];
        recorder.record(Direction::Inbound, &big);
        recorder.record(Direction::Inbound, &big);
        assert_eq!(feed.counts.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(feed.rx.try_iter().count(), 1);
    }
}
