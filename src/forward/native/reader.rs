//! The blocking shell that reads one node's machine files for one downstream: ship's
//! `follow::read_node` (rotation, whole lines, files retention deleted) from a
//! [`Cursor`], no further than the node's checkpoint (what recovery can never cut), numbering
//! every line the downstream's filter takes. Run on the blocking pool.

use std::path::PathBuf;

use super::line::{object_of, Cursor};
use crate::config::NativeDownstream;
use crate::logs::recovery;
use crate::logs::rotation::FileKey;
use crate::model::TraceObject;
use crate::ship::cursor::{Pos, EXT};
use crate::ship::follow::{list_sized, read_node, Chunk, Limits};

/// One node's files as one downstream reads them.
#[derive(Debug, Default)]
pub struct Reader {
    /// The node's directory under the machine-format root.
    pub dir: PathBuf,
    /// The node's directory under the first log root (where its checkpoint is).
    pub checkpoint_dir: PathBuf,
    /// Where the next read starts and the number of the last line before it.
    pub next: Cursor,
    /// The files at the last look, oldest first, with their sizes.
    pub listing: Vec<(FileKey, u64)>,
    /// Lines and bytes read so far (for the mean line length of the lag estimate).
    pub read_lines: u64,
    /// See `read_lines`.
    pub read_bytes: u64,
    /// Of `read_lines`, those the downstream's filter takes.
    pub matched_lines: u64,
    /// The files `relist` last reported lost (a read that finds the cursor's file gone does
    /// not count it twice).
    pub reported: Vec<String>,
    /// The end of the node's files when the mean line length was last sampled.
    pub sampled_at: Option<Pos>,
}

/// What one read found.
#[derive(Debug, Default)]
pub struct Read {
    /// The objects to send with their numbers (lines numbered at or below the `skip`
    /// argument are counted but not here).
    pub objects: Vec<(u64, TraceObject)>,
    /// Where the read ended (`None`: nothing new).
    pub end: Option<Pos>,
    /// The number of the last matching line before `end`.
    pub last_seq: u64,
    /// Files retention deleted before they were read to their end: name, unread bytes.
    pub lost: Vec<(String, u64)>,
    /// Lines longer than the downstream's frame limit, skipped.
    pub too_large: u64,
}

/// Bytes of protobuf framing per object beyond its text fields (generous).
const OBJECT_OVERHEAD: usize = 64;
/// Bytes sampled (the newest of the node's lines) for the mean line length and the filter's
/// share.
const SAMPLE_BYTES: u64 = 64 << 10;
/// Until this many lines were sampled or read, each look at grown files samples again: a
/// sample taken when the node had written a line or two (or just after a rotation) would
/// otherwise fix the estimate at whatever those lines were.
const SAMPLE_LINES: u64 = 100;

impl Reader {
    /// Lists the node's files again; returns the files gone since the last look that were
    /// not read to their end (name, unread bytes).
    pub fn relist(&mut self, filter: &NativeDownstream) -> Vec<(String, u64)> {
        let listing = list_sized(&self.dir).unwrap_or_default();
        let mut lost = Vec::new();
        for &(key, size) in &self.listing {
            if listing.iter().any(|(k, _)| *k == key) {
                continue;
            }
            let unread = match self.next.pos {
                Some(p) if p.file > key => continue,
                Some(p) if p.file == key => size.saturating_sub(p.offset),
                _ => size,
            };
            if unread > 0 {
                lost.push((key.file_name(EXT), unread));
            }
        }
        self.listing = listing;
        if self.read_lines < SAMPLE_LINES && self.sampled_at != self.end() {
            self.sampled_at = self.end();
            self.sample_line_length(filter);
        }
        if !lost.is_empty() {
            self.reported = lost.iter().map(|(n, _)| n.clone()).collect();
        }
        lost
    }

    /// While fewer than `SAMPLE_LINES` lines were sampled or read, takes the mean line length
    /// and the share of lines the filter takes (for the lag and loss estimates) from the
    /// node's newest whole lines (at most `SAMPLE_BYTES`, across files), and keeps it if it
    /// holds more lines than what the estimate had.
    fn sample_line_length(&mut self, filter: &NativeDownstream) {
        let (mut lines, mut bytes, mut matched) = (0u64, 0u64, 0u64);
        let mut budget = SAMPLE_BYTES;
        for &(key, size) in self.listing.iter().rev() {
            if budget == 0 {
                break;
            }
            let Some(buf) = tail(&self.dir.join(key.file_name(EXT)), size, budget) else {
                continue;
            };
            budget = budget.saturating_sub(buf.len() as u64);
            bytes += buf.len() as u64;
            for line in String::from_utf8_lossy(&buf).lines() {
                lines += 1;
                if filter.matches(&object_of(line).namespace) {
                    matched += 1;
                }
            }
        }
        if lines > self.read_lines {
            (self.read_lines, self.read_bytes, self.matched_lines) = (lines, bytes, matched);
        }
    }

    /// Bytes in the files after `from` (everything when `None`).
    pub fn bytes_after(&self, from: Option<Pos>) -> u64 {
        self.listing
            .iter()
            .map(|&(key, size)| match from {
                Some(p) if p.file > key => 0,
                Some(p) if p.file == key => size.saturating_sub(p.offset),
                _ => size,
            })
            .sum()
    }

    /// The end of the node's files at the last look.
    pub fn end(&self) -> Option<Pos> {
        self.listing
            .last()
            .map(|&(file, offset)| Pos { file, offset })
    }

    /// About how many objects for the downstream `bytes` of the node's lines hold: by the
    /// mean line length and the share of lines the filter took so far (300 bytes a line,
    /// every line taken, before anything was read).
    pub fn objects_in(&self, bytes: u64) -> u64 {
        if self.read_bytes == 0 {
            return bytes.div_ceil(300);
        }
        let objects =
            u128::from(bytes) * u128::from(self.matched_lines) / u128::from(self.read_bytes);
        u64::try_from(objects).unwrap_or(u64::MAX)
    }

    /// The checkpointed end: no line after it is read (it may still be cut by recovery
    /// after a crash). `None` without a readable checkpoint.
    fn bound(&self) -> Option<Pos> {
        let cp = recovery::checkpoint(&self.checkpoint_dir)?;
        let suffix = format!(".{EXT}");
        let (name, len) = cp.files.iter().find(|(n, _)| n.ends_with(&suffix))?;
        Pos::parse(name, *len)
    }

    /// Reads on from `self.next`: at most `max_objects` lines and about `max_bytes`,
    /// numbering the lines `filter` takes; lines numbered at or below `skip` are counted
    /// only. Advances `self.next` to the end of what was read.
    pub fn read(
        &mut self,
        filter: &NativeDownstream,
        max_objects: usize,
        max_bytes: usize,
        max_frame: usize,
        skip: u64,
    ) -> Read {
        let mut out = Read {
            lost: self.relist(filter),
            last_seq: self.next.seq,
            ..Read::default()
        };
        let Some(bound) = self.bound() else {
            return out;
        };
        let mut chunk = Chunk::default();
        let limits = Limits {
            max_lines: max_objects.max(1),
            max_bytes: max_bytes.max(1),
        };
        let gone = read_node(&self.dir, &self.listing, self.next.pos, limits, &mut chunk);
        for (name, unread) in gone {
            if !out.lost.iter().any(|(n, _)| *n == name) && !self.reported.contains(&name) {
                out.lost.push((name, unread.unwrap_or(0)));
            }
        }
        let mut seq = self.next.seq;
        let mut bytes = 0usize;
        for line in &chunk.lines {
            if line.after > bound {
                break;
            }
            let text = chunk.text(line);
            self.read_lines += 1;
            self.read_bytes += text.len() as u64 + 1;
            out.end = Some(line.after);
            let obj = object_of(&text);
            if !filter.matches(&obj.namespace) {
                continue;
            }
            self.matched_lines += 1;
            seq += 1;
            out.last_seq = seq;
            let size = obj.machine.len() + obj.namespace.len() + obj.hostname.len();
            if size + OBJECT_OVERHEAD > max_frame {
                out.too_large += 1;
                continue;
            }
            if seq <= skip {
                continue;
            }
            // The frame limit holds even when the byte budget's last line was long.
            if bytes + size + OBJECT_OVERHEAD > max_frame {
                seq -= 1;
                out.last_seq = seq;
                out.end = Some(previous_end(&chunk, line));
                self.read_lines -= 1;
                self.read_bytes -= text.len() as u64 + 1;
                self.matched_lines -= 1;
                break;
            }
            bytes += size + OBJECT_OVERHEAD;
            out.objects.push((seq, obj));
        }
        if let Some(end) = out.end {
            self.next = Cursor {
                pos: Some(end),
                seq,
            };
        }
        out
    }
}

/// The whole lines among the last `budget` bytes of the file at `path` (`size` long at the
/// last look): from the first line that starts in them to the last newline. `None` if it
/// cannot be read or holds no whole line.
fn tail(path: &std::path::Path, size: u64, budget: u64) -> Option<Vec<u8>> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file = crate::logs::dir::open_regular(path, false).ok()?;
    let start = size.saturating_sub(budget);
    // One byte before `start`: whether a line starts at `start` itself.
    let from = start.saturating_sub(1);
    file.seek(SeekFrom::Start(from)).ok()?;
    let mut buf = Vec::new();
    file.take(size - from).read_to_end(&mut buf).ok()?;
    let first = if start == 0 {
        0
    } else {
        buf.iter().position(|b| *b == b'\n')? + 1
    };
    let last = buf.iter().rposition(|b| *b == b'\n')? + 1;
    (first < last).then(|| buf[first..last].to_vec())
}

/// The position before `line` in `chunk` (the end of the line before it, or where the
/// chunk's first line starts).
fn previous_end(chunk: &Chunk, line: &crate::ship::follow::Line) -> Pos {
    let i = chunk
        .lines
        .iter()
        .position(|l| l.after == line.after)
        .unwrap_or(0);
    if i > 0 {
        chunk.lines[i - 1].after
    } else {
        // Not reached: the first line of a read always fits (it alone is within the frame).
        line.after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn downstream(namespaces: &[&str]) -> NativeDownstream {
        serde_json::from_value(serde_json::json!({
            "name": "d",
            "address": "127.0.0.1:1",
            "namespaces": namespaces,
        }))
        .unwrap()
    }

    fn line(seq: u64) -> String {
        let ns = if seq % 3 == 0 { "Beta.S" } else { "Alpha.S" };
        format!("{{\"at\":\"2026-07-22T10:15:31Z\",\"ns\":\"{ns}\",\"data\":{{\"seq\":{seq}}}}}\n")
    }

    fn append(dir: &std::path::Path, key: FileKey, seqs: std::ops::RangeInclusive<u64>) {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(key.file_name(EXT)))
            .unwrap();
        for s in seqs {
            f.write_all(line(s).as_bytes()).unwrap();
        }
    }

    fn key(counter: u32) -> FileKey {
        FileKey {
            stamp: 1_784_714_812,
            counter,
            legacy: false,
        }
    }

    /// A downstream that first looked when the node had written one line (or when a
    /// rotation had just begun a file) estimates its lag from the lines that came later, not
    /// from that one line: the share of lines its filter takes is sampled again while fewer
    /// than `SAMPLE_LINES` were seen, across the newest files.
    #[test]
    fn the_lag_estimate_is_sampled_again_until_enough_lines_were_seen() {
        let dir = tempfile::tempdir().unwrap();
        let beta = downstream(&["Beta."]);
        let mut r = Reader {
            dir: dir.path().to_path_buf(),
            ..Reader::default()
        };
        // The first look: one Alpha line (nothing for beta).
        append(dir.path(), key(0), 1..=1);
        r.relist(&beta);
        assert_eq!((r.read_lines, r.matched_lines), (1, 0));
        assert_eq!(r.objects_in(10_000), 0);
        // The node rotated; the newest file holds two lines, the older one the rest.
        append(dir.path(), key(0), 2..=298);
        append(dir.path(), key(1), 299..=300);
        r.relist(&beta);
        assert_eq!((r.read_lines, r.matched_lines), (300, 100));
        let bytes: u64 = (1..=300).map(|s| line(s).len() as u64).sum();
        assert_eq!(r.read_bytes, bytes);
        assert_eq!(r.objects_in(bytes), 100);
        // Enough was seen: no more samples, the estimate stays.
        append(dir.path(), key(1), 301..=400);
        r.relist(&beta);
        assert_eq!(r.read_lines, 300);
    }

    /// The sample is the newest `SAMPLE_BYTES` of whole lines: a partial line where the
    /// budget starts, or one still being appended, is not counted.
    #[test]
    fn the_sample_holds_whole_lines_only() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let all = downstream(&[]);
        let last = 999 + SAMPLE_BYTES / 50;
        append(dir.path(), key(0), 1000..=last);
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(key(0).file_name(EXT)))
            .unwrap()
            .write_all(b"{\"ns\":\"Alpha.S\",\"da")
            .unwrap();
        let mut r = Reader {
            dir: dir.path().to_path_buf(),
            ..Reader::default()
        };
        r.relist(&all);
        // The newest lines that fit in the budget, whole, with what the budget leaves.
        let newest: Vec<u64> = (1000..=last)
            .rev()
            .map(|s| line(s).len() as u64)
            .scan(0, |sum, len| {
                *sum += len;
                Some(*sum)
            })
            .take_while(|sum| *sum + 20 <= SAMPLE_BYTES)
            .collect();
        assert_eq!(r.read_lines, newest.len() as u64);
        assert_eq!(Some(&r.read_bytes), newest.last());
        assert_eq!(r.matched_lines, r.read_lines);
    }
}
