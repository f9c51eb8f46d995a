//! One capture's blocking writer: reads its source (the packet socket, or the Unix feed) until
//! its deadline, its byte limit, the connection's end or shutdown, and writes the pcapng file.
//! The file never passes `maxBytes`: a block that would is not written, and the capture ends.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::pcapng::{self, Direction};
use super::{frame, now_ns, packet, unix, Outcome, Progress, Wire};
use crate::sync::lock;

/// How long a TCP capture goes on after its connection ended (the FIN exchange).
const AFTER_CLOSE: Duration = Duration::from_secs(1);
/// A Unix chunk is written as EPBs of at most this many bytes (nothing is cut).
const UNIX_PIECE: usize = 65_536;

/// What a capture reads.
pub(super) enum Source {
    /// A TCP connection: the socket and tracerd's end (to tell directions).
    Packet(packet::PacketSocket, SocketAddr),
    /// A Unix-socket connection's copies.
    Unix(unix::Feed),
}

/// One capture.
pub(super) struct Job {
    pub source: Source,
    pub file: File,
    pub progress: Arc<Progress>,
    pub deadline: Instant,
    pub cancel: CancellationToken,
    pub wire: Weak<Wire>,
}

/// The file, bounded.
struct Out {
    w: BufWriter<File>,
    written: u64,
    max: u64,
}

impl Out {
    /// Writes `block` if it and the closing statistics fit; false when they do not.
    fn put(&mut self, block: &[u8], progress: &Progress) -> io::Result<bool> {
        let after = self.written + block.len() as u64;
        if after + pcapng::STATISTICS_LEN as u64 > self.max {
            return Ok(false);
        }
        self.w.write_all(block)?;
        self.written = after;
        progress.bytes.store(after, Ordering::Relaxed);
        Ok(true)
    }
}

impl Job {
    /// Runs the capture to its end and records the outcome.
    pub fn run(self) {
        let Job {
            mut source,
            file,
            progress,
            deadline,
            cancel,
            wire,
        } = self;
        let mut out = Out {
            w: BufWriter::with_capacity(64 << 10, file),
            written: 0,
            max: progress.params.max_bytes,
        };
        let result = capture(&mut source, &mut out, &progress, deadline, &cancel, &wire);
        if let (Some(w), Source::Unix(_)) = (wire.upgrade(), &source) {
            w.disarm();
        }
        let dropped = match &source {
            Source::Unix(feed) => Some(feed.counts.dropped.load(Ordering::Relaxed)),
            Source::Packet(..) => None,
        };
        if let Some(d) = dropped {
            progress.dropped.store(d, Ordering::Relaxed);
        }
        let received = progress.packets.load(Ordering::Relaxed);
        let end = now_ns();
        let finish = |out: &mut Out| -> io::Result<()> {
            let stats = pcapng::statistics(progress.started_ns, end, received, dropped);
            out.w.write_all(&stats)?;
            out.written += stats.len() as u64;
            progress.bytes.store(out.written, Ordering::Relaxed);
            out.w.flush()?;
            out.w.get_ref().sync_data()
        };
        let outcome = match result.and_then(|ended| finish(&mut out).map(|()| ended)) {
            Ok(ended) => Outcome {
                ended,
                error: None,
                ended_ns: end,
            },
            Err(e) => Outcome {
                ended: "error",
                error: Some(format!("writing {}: {e}", progress.file.display())),
                ended_ns: end,
            },
        };
        tracing::info!(node = %crate::node::escape_name(&progress.node), file = %progress.file.display(),
            packets = received, bytes = out.written, ended = outcome.ended,
            error = outcome.error.as_deref().unwrap_or(""), "capture ended");
        *lock(&progress.outcome) = Some(outcome);
    }
}

/// The capture loop: the reason it ended.
fn capture(
    source: &mut Source,
    out: &mut Out,
    progress: &Progress,
    deadline: Instant,
    cancel: &CancellationToken,
    wire: &Weak<Wire>,
) -> io::Result<&'static str> {
    let (linktype, snaplen, description) = match source {
        Source::Packet(..) => (
            pcapng::LINKTYPE_ETHERNET,
            super::bpf::SNAPLEN,
            "TCP connection captured by tracerd (AF_PACKET, BPF filter on the 4-tuple)",
        ),
        Source::Unix(_) => (
            pcapng::LINKTYPE_USER0,
            UNIX_PIECE as u32,
            "Unix-socket stream as tracerd read (inbound) and wrote (outbound) it; direction in epb_flags",
        ),
    };
    let comment = format!("node {}", progress.node);
    let app = format!("tracerd {}", env!("CARGO_PKG_VERSION"));
    if !out.put(&pcapng::section_header(&app, &comment), progress)?
        || !out.put(
            &pcapng::interface(linktype, snaplen, &progress.interface, description),
            progress,
        )?
    {
        return Ok("maxBytes");
    }
    let mut closed_at: Option<Instant> = None;
    let mut buf = match source {
        Source::Packet(..) => vec![0u8; snaplen as usize],
        Source::Unix(_) => Vec::new(),
    };
    loop {
        if cancel.is_cancelled() {
            return Ok("shutdown");
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok("seconds");
        }
        if wire.strong_count() == 0 {
            let at = *closed_at.get_or_insert(now);
            if now.duration_since(at) >= AFTER_CLOSE && matches!(source, Source::Packet(..)) {
                return Ok("disconnected");
            }
        }
        match source {
            Source::Packet(socket, local) => {
                let Some(r) = socket.recv(&mut buf)? else {
                    continue;
                };
                let data = &buf[..r.len];
                let direction = frame::segment(data).map(|s| {
                    if super::bpf::canonical(s.src) == *local {
                        Direction::Outbound
                    } else {
                        Direction::Inbound
                    }
                });
                let original = u32::try_from(r.original_len).unwrap_or(u32::MAX);
                if !out.put(
                    &pcapng::packet(r.ts_ns, data, original, direction),
                    progress,
                )? {
                    return Ok("maxBytes");
                }
                progress.packets.fetch_add(1, Ordering::Relaxed);
            }
            Source::Unix(feed) => {
                let wait = deadline.saturating_duration_since(now).min(packet::POLL);
                let chunk = match feed.rx.recv_timeout(wait) {
                    Ok(c) => c,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                    // The connection ended and every copy was written.
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        return Ok("disconnected")
                    }
                };
                feed.counts
                    .queued
                    .fetch_sub(chunk.data.len(), Ordering::Relaxed);
                for piece in chunk.data.chunks(UNIX_PIECE) {
                    let len = piece.len() as u32;
                    let block = pcapng::packet(chunk.ts_ns, piece, len, Some(chunk.direction));
                    if !out.put(&block, progress)? {
                        return Ok("maxBytes");
                    }
                    progress.packets.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
