//! The follower: reads every node's machine-format files under one log root the way
//! `tail -F` would, from each node's confirmed [`Pos`], across rotation, whole lines only.
//! Blocking I/O (the sink runs it on the blocking pool), so shipping never holds an async
//! worker and never touches the writers: the files are the only thing it shares with ingest.
//!
//! A file is finished once a newer one exists (the writer only appends to the newest), so the
//! follower reads a file to its last whole line and moves on only when the listing it took
//! *before* reading shows a newer file. Files retention deleted before they were sent are
//! counted and logged (`tracerd_sink_lost_*`), and the follower goes on with the oldest file
//! left. Nothing outside the log root is opened: node directories are listed without
//! following symlinks and files are opened with `O_NOFOLLOW` (`logs::dir`).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::cursor::{Lag, Pos, EXT};
use super::metrics::SinkMetrics;
use super::state::StateDir;
use crate::logs::dir::{list_keys, open_regular};
use crate::logs::rotation::FileKey;

/// One line read: its bytes are `buf[start..end]` of its [`Chunk`] (without the `\n`), and
/// `after` is the position just past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    /// First byte in the chunk's buffer.
    pub start: usize,
    /// One past the last byte (the `\n` excluded).
    pub end: usize,
    /// The position after this line.
    pub after: Pos,
}

/// The lines read from one node in one pass, in file order.
#[derive(Debug, Default)]
pub struct Chunk {
    /// The node's directory name (its identity on the remote).
    pub node: String,
    /// The bytes of every line.
    pub buf: Vec<u8>,
    /// The lines.
    pub lines: Vec<Line>,
}

impl Chunk {
    /// The text of `line` (a line that is not UTF-8 is shown with replacement characters).
    pub fn text(&self, line: &Line) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.buf[line.start..line.end])
    }

    /// The position after the last line.
    pub fn end(&self) -> Option<Pos> {
        self.lines.last().map(|l| l.after)
    }
}

/// What one pass read, node by node.
#[derive(Debug, Default)]
pub struct Batch {
    /// Non-empty chunks.
    pub chunks: Vec<Chunk>,
}

impl Batch {
    /// Lines in the batch.
    pub fn lines(&self) -> usize {
        self.chunks.iter().map(|c| c.lines.len()).sum()
    }
}

/// Bounds of one pass.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most lines.
    pub max_lines: usize,
    /// About this many bytes (a pass always takes at least one whole line).
    pub max_bytes: usize,
}

#[derive(Debug, Default)]
struct NodeState {
    confirmed: Option<Pos>,
    /// The files found at the last pass, with their sizes (for what a deletion lost).
    listing: Vec<(FileKey, u64)>,
    lag: Lag,
    /// Unread bytes of the cursor's file when a scan found it deleted.
    unread_hint: Option<u64>,
}

/// One sink's view of every node under a log root.
#[derive(Debug)]
pub struct Follower {
    sink: String,
    root: PathBuf,
    state: StateDir,
    metrics: SinkMetrics,
    nodes: BTreeMap<String, NodeState>,
    /// Where the next pass starts, so every node gets its turn.
    turn: usize,
}

impl Follower {
    /// A follower of `root` for `sink`, keeping cursors in `state`.
    pub fn new(sink: &str, root: PathBuf, state: StateDir, metrics: SinkMetrics) -> Follower {
        Follower {
            sink: sink.to_string(),
            root,
            state,
            metrics,
            nodes: BTreeMap::new(),
            turn: 0,
        }
    }

    /// Names of the nodes seen so far.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    /// The node's confirmed position.
    pub fn confirmed(&self, node: &str) -> Option<Pos> {
        self.nodes.get(node).and_then(|n| n.confirmed)
    }

    /// Finds new node directories (loading their cursors) and lists every node's files.
    pub fn scan(&mut self, now: Instant) {
        match node_dirs(&self.root) {
            Ok(dirs) => {
                for name in dirs {
                    if !self.nodes.contains_key(&name) {
                        let confirmed = match self.state.load(&name) {
                            Ok(c) => c,
                            Err(e) => {
                                tracing::warn!(sink = %self.sink, node = %name, error = %e,
                                    "unreadable cursor: sending the node's files from the oldest");
                                None
                            }
                        };
                        self.nodes.insert(
                            name,
                            NodeState {
                                confirmed,
                                ..NodeState::default()
                            },
                        );
                    }
                }
            }
            Err(e) => {
                tracing::warn!(sink = %self.sink, root = %self.root.display(), error = %e,
                    "cannot list the log root");
            }
        }
        for (name, node) in &mut self.nodes {
            let dir = self.root.join(name);
            let listing = list_sized(&dir).unwrap_or_default();
            // Files listed last time, after the cursor's file and not yet read, that are gone
            // now: retention deleted them unsent. (The cursor's own file is reported by
            // `read_node` when it finds it missing, with what `unread_hint` remembers.)
            for &(key, size) in &node.listing {
                let gone = !listing.iter().any(|(k, _)| *k == key);
                if !gone {
                    continue;
                }
                match node.confirmed {
                    Some(c) if c.file == key => {
                        node.unread_hint = Some(size.saturating_sub(c.offset));
                    }
                    Some(c) if c.file > key => {}
                    _ => {
                        self.metrics
                            .lost_files
                            .with_label_values(&[&self.sink])
                            .inc();
                        self.metrics
                            .lost_bytes
                            .with_label_values(&[&self.sink])
                            .inc_by(size);
                        tracing::warn!(sink = %self.sink, node = %name,
                            file = %key.file_name(EXT), unsent_bytes = size,
                            "retention deleted a log file before it was shipped; its lines are lost to this sink");
                    }
                }
            }
            if let Some(&(key, size)) = listing.last() {
                let end = Pos {
                    file: key,
                    offset: size,
                };
                // Data the remote already holds is no lag (an end equal to the cursor would
                // otherwise age for ever once the sink is caught up).
                if node.confirmed.is_none_or(|c| c < end) {
                    node.lag.saw_end(end, now);
                }
            }
            node.listing = listing;
        }
    }

    /// Reads the next lines of every node (from each one's confirmed position), within
    /// `limits`, starting with a different node each pass. Call [`Follower::scan`] first.
    pub fn read(&mut self, limits: Limits) -> Batch {
        let mut batch = Batch::default();
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        if names.is_empty() {
            return batch;
        }
        let (mut lines, mut bytes) = (0usize, 0usize);
        let start = self.turn % names.len();
        self.turn = self.turn.wrapping_add(1);
        for i in 0..names.len() {
            if lines >= limits.max_lines || bytes >= limits.max_bytes {
                break;
            }
            let name = &names[(start + i) % names.len()];
            let node = self.nodes.get_mut(name).expect("listed above");
            let left = Limits {
                max_lines: limits.max_lines - lines,
                max_bytes: limits.max_bytes - bytes,
            };
            let mut chunk = Chunk {
                node: name.clone(),
                ..Chunk::default()
            };
            let dir = self.root.join(name);
            let lost = read_node(&dir, &node.listing, node.confirmed, left, &mut chunk);
            for (file, mut bytes_lost) in lost {
                if bytes_lost.is_none() && node.confirmed.is_some_and(|c| c.file_name() == file) {
                    bytes_lost = node.unread_hint.take();
                }
                self.metrics
                    .lost_files
                    .with_label_values(&[&self.sink])
                    .inc();
                if let Some(b) = bytes_lost {
                    self.metrics
                        .lost_bytes
                        .with_label_values(&[&self.sink])
                        .inc_by(b);
                }
                tracing::warn!(sink = %self.sink, node = %name, file = %file,
                    unsent_bytes = ?bytes_lost,
                    "retention deleted a log file before it was shipped; its unsent lines are lost to this sink");
            }
            lines += chunk.lines.len();
            bytes += chunk.buf.len();
            if !chunk.lines.is_empty() {
                batch.chunks.push(chunk);
            }
        }
        batch
    }

    /// The remote confirmed `batch`: advances and stores every node's cursor.
    pub fn confirm(&mut self, batch: &Batch) -> io::Result<()> {
        self.advance(batch, true)
    }

    /// The remote refused `batch` for good (a retry would not change its answer): advances
    /// and stores every node's cursor past it without counting its lines as sent.
    pub fn skip(&mut self, batch: &Batch) -> io::Result<()> {
        self.advance(batch, false)
    }

    fn advance(&mut self, batch: &Batch, sent: bool) -> io::Result<()> {
        let mut save = Vec::new();
        for chunk in &batch.chunks {
            if let Some(end) = chunk.end() {
                if sent {
                    self.metrics
                        .rows_sent
                        .with_label_values(&[&self.sink])
                        .inc_by(chunk.lines.len() as u64);
                }
                if let Some(node) = self.nodes.get_mut(&chunk.node) {
                    if node.confirmed.is_none_or(|c| c < end) {
                        node.confirmed = Some(end);
                        node.lag.confirmed(end);
                        save.push((chunk.node.as_str(), end));
                    }
                }
            }
        }
        self.state.save(&save)
    }

    /// The remote holds `node`'s lines up to `pos` (found by asking it): moves the cursor
    /// there if it is ahead, and stores it.
    pub fn adopt(&mut self, node: &str, pos: Pos) -> io::Result<()> {
        let entry = self.nodes.entry(node.to_string()).or_default();
        if entry.confirmed.is_some_and(|c| c >= pos) {
            return Ok(());
        }
        entry.confirmed = Some(pos);
        entry.lag.confirmed(pos);
        self.state.save(&[(node, pos)])
    }

    /// Sets `tracerd_sink_lag_seconds` for every node.
    pub fn publish_lag(&self, now: Instant) {
        for (name, node) in &self.nodes {
            self.metrics
                .lag_seconds
                .with_label_values(&[&self.sink, name])
                .set(node.lag.lag(now).as_secs_f64());
        }
    }

    /// Whether every node's confirmed position is the end of its files at the last scan.
    pub fn caught_up(&self) -> bool {
        self.nodes.values().all(|n| match n.listing.last() {
            None => true,
            Some(&(key, size)) => n.confirmed.is_some_and(|c| {
                c >= Pos {
                    file: key,
                    offset: size,
                }
            }),
        })
    }
}

/// The node directories under `root`: real directories only (a symlink is not followed),
/// hidden names skipped.
pub fn node_dirs(root: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if let Some(name) = entry.file_name().to_str() {
            if !name.starts_with('.') {
                out.push(name.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The node's machine-format files, oldest first, with their sizes.
pub fn list_sized(dir: &Path) -> io::Result<Vec<(FileKey, u64)>> {
    let mut keys = list_keys(dir, EXT)?;
    keys.sort();
    Ok(keys
        .into_iter()
        .filter_map(|k| {
            let meta = fs::symlink_metadata(dir.join(k.file_name(EXT))).ok()?;
            Some((k, meta.len()))
        })
        .collect())
}

/// Size of one read(2).
const READ_BYTES: usize = 256 << 10;

/// Reads whole lines of the node in `dir` from `from` (the oldest file's start when `None`)
/// into `chunk`, following `listing` (taken before this read) across rotation. Returns the
/// files found deleted before they were read in full, with their unread bytes where known.
pub fn read_node(
    dir: &Path,
    listing: &[(FileKey, u64)],
    from: Option<Pos>,
    limits: Limits,
    chunk: &mut Chunk,
) -> Vec<(String, Option<u64>)> {
    let mut lost = Vec::new();
    let Some(&(first, _)) = listing.first() else {
        return lost;
    };
    let mut cur = from.unwrap_or(Pos {
        file: first,
        offset: 0,
    });
    loop {
        let here = listing.iter().position(|(k, _)| *k == cur.file);
        let next = listing.iter().find(|(k, _)| *k > cur.file).map(|(k, _)| *k);
        let Some(i) = here else {
            // Deleted (retention) before it was read to its end; we know how much only when
            // it was listed at the last pass... which `listing` no longer shows.
            let Some(next) = next else {
                return lost;
            };
            lost.push((cur.file_name(), None));
            cur = Pos {
                file: next,
                offset: 0,
            };
            continue;
        };
        let finished = i + 1 < listing.len();
        let path = dir.join(cur.file_name());
        let tail = match read_lines_from(&path, cur, limits, chunk) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let unread = listing[i].1.saturating_sub(cur.offset);
                if let Some(next) = next {
                    lost.push((cur.file_name(), Some(unread)));
                    cur = Pos {
                        file: next,
                        offset: 0,
                    };
                    continue;
                }
                return lost;
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read a node log file; retrying at the next pass");
                return lost;
            }
        };
        if tail.full || !finished {
            return lost;
        }
        if tail.partial_bytes > 0 {
            // tracerd never leaves a partial line in a finished file; one found there was not
            // written by it (or the file was cut) and is not shipped.
            tracing::warn!(file = %path.display(), bytes = tail.partial_bytes,
                "a finished log file ends without a newline; its last partial line is not shipped");
        }
        let Some(next) = next else {
            return lost;
        };
        cur = Pos {
            file: next,
            offset: 0,
        };
    }
}

struct Tail {
    /// The limits were reached.
    full: bool,
    /// Bytes after the last whole line at end of file.
    partial_bytes: u64,
}

/// Appends whole lines of `path` from `from.offset` to `chunk`, within what `limits` leaves.
fn read_lines_from(path: &Path, from: Pos, limits: Limits, chunk: &mut Chunk) -> io::Result<Tail> {
    let mut f = open_regular(path, false)?;
    f.seek(SeekFrom::Start(from.offset))?;
    let mut offset = from.offset;
    let mut pending_start = chunk.buf.len();
    loop {
        let budget_left =
            chunk.lines.len() < limits.max_lines && chunk.buf.len() < limits.max_bytes;
        // Past the byte budget, read on only to finish a line that began within it.
        if !budget_left && pending_start == chunk.buf.len() {
            return Ok(Tail {
                full: true,
                partial_bytes: 0,
            });
        }
        let at = chunk.buf.len();
        chunk.buf.resize(at + READ_BYTES, 0);
        let n = match f.read(&mut chunk.buf[at..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => {
                chunk.buf.truncate(pending_start);
                return Err(e);
            }
        };
        chunk.buf.truncate(at + n);
        if n == 0 {
            let partial = (chunk.buf.len() - pending_start) as u64;
            chunk.buf.truncate(pending_start);
            return Ok(Tail {
                full: false,
                partial_bytes: partial,
            });
        }
        let mut scan = at;
        while let Some(nl) = memchr(&chunk.buf[scan..]) {
            let end = scan + nl;
            offset += (end + 1 - pending_start) as u64;
            chunk.lines.push(Line {
                start: pending_start,
                end,
                after: Pos {
                    file: from.file,
                    offset,
                },
            });
            pending_start = end + 1;
            scan = end + 1;
            if chunk.lines.len() >= limits.max_lines {
                chunk.buf.truncate(pending_start);
                return Ok(Tail {
                    full: true,
                    partial_bytes: 0,
                });
            }
        }
    }
}

fn memchr(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests;
