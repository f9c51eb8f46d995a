//! Crash recovery of a node's persisted sequence number, and of its log files' tails.
//!
//! The writer records a checkpoint in `<first target>/<node>/.tracerd-state` (after each
//! write in fsync modes; with `fsync: never` at most `ingest::writer::CHECKPOINT_EVERY` behind
//! the files, and after every new file): the highest sequence number on disk and, for every
//! target, the current file and its length. Each trace object is exactly one line in every target, so after a crash the objects
//! written after the checkpoint are the complete lines past the recorded positions. Recovery
//! counts them in every target, keeps the count every target has (`min`), cuts the rest
//! (torn last lines, and surplus lines a target got before the crash hit the next one; none
//! of them was acknowledged), and reports `seq + min` as persisted. A checkpoint is written
//! before the first line of a run that does not continue the previous one (a gap), so lines
//! past a checkpoint are always numbered contiguously.
//!
//! Blocking I/O: run it on the blocking pool.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::logs::rotation::FileKey;

/// Name of the checkpoint file in a node's directory (of the first log target).
pub const STATE_FILE: &str = ".tracerd-state";
/// Size of the checkpoint record: written in place with one `pwrite`, padded with spaces.
/// Room for a 255-byte identity escaped to 6 bytes a byte and 16 targets. (Older versions
/// wrote 1024; those records are read alike.)
pub const STATE_LEN: usize = 4096;

/// A checkpoint: `seq` is on disk, and every target's current file had the given length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Highest sequence number whose line is in every target.
    pub seq: u64,
    /// Per target, in config order: current file name and its length at `seq`.
    pub files: Vec<(String, u64)>,
    /// The node identity (the exact name it sent) that owns this directory; absent in
    /// checkpoints of older versions (then the first node to claim the directory owns it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl Checkpoint {
    /// The fixed-size record, or `None` if it would not fit (absurdly many targets).
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut bytes = Vec::with_capacity(STATE_LEN);
        self.encode_into(&mut bytes).then_some(bytes)
    }

    /// [`Checkpoint::encode`] into `out` (cleared first), so a writer can reuse one buffer
    /// for every checkpoint instead of allocating two per batch; false if it would not fit.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> bool {
        out.clear();
        out.reserve(STATE_LEN);
        if serde_json::to_writer(&mut *out, self).is_err() || out.len() >= STATE_LEN {
            return false;
        }
        out.resize(STATE_LEN - 1, b' ');
        out.push(b'\n');
        true
    }

    fn decode(bytes: &[u8]) -> Option<Checkpoint> {
        let text = std::str::from_utf8(bytes).ok()?;
        serde_json::from_str(text.trim_end_matches(['\0', ' ', '\n'])).ok()
    }
}

/// One log target's node directory, as recovery sees it.
#[derive(Debug, Clone)]
pub struct TargetDir {
    /// `<root>/<node>`.
    pub dir: PathBuf,
    /// `json` or `log`.
    pub ext: &'static str,
}

/// What recovery found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Highest sequence number persisted, when a usable checkpoint was found.
    pub persisted: Option<u64>,
    /// Bytes cut from file tails (torn or surplus lines, never acknowledged).
    pub cut_bytes: u64,
    /// Human-readable notes for the log, one per finding.
    pub notes: Vec<String>,
}

/// Writes `checkpoint` in place in the checkpoint file at `path` (created if missing): one
/// fixed-size `pwrite` at offset 0, so a reader never sees a mix of two lengths.
pub fn write_state(path: &Path, checkpoint: &Checkpoint) -> io::Result<()> {
    thread_local! {
        // One record buffer per thread (the blocking pool's few threads), not per node (an
        // idle node must stay small) and not per checkpoint (one is written per batch).
        static RECORD: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    RECORD.with_borrow_mut(|bytes| {
        if !checkpoint.encode_into(bytes) {
            return Err(io::Error::other("checkpoint record too large"));
        }
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?
            .write_all_at(bytes, 0)
    })
}

/// The identity recorded in the checkpoint of `dir`, if there is a readable one that names
/// it (regular file only).
pub fn owner(dir: &Path) -> Option<String> {
    checkpoint(dir)?.node
}

/// The checkpoint of `dir`, if there is a readable one (regular file only). What it names is
/// on disk for good: recovery never cuts a line before it (`forward::native` reads no further).
pub fn checkpoint(dir: &Path) -> Option<Checkpoint> {
    let mut bytes = Vec::new();
    let mut f = crate::logs::dir::open_regular(&dir.join(STATE_FILE), false).ok()?;
    f.read_to_end(&mut bytes).ok()?;
    Checkpoint::decode(&bytes)
}

/// Recovers from the checkpoint in `targets[0].dir`, cutting unacknowledged tails. Must run
/// before the writer creates its new files.
pub fn recover(targets: &[TargetDir]) -> Recovery {
    let mut out = Recovery::default();
    let Some(first) = targets.first() else {
        return out;
    };
    let mut bytes = Vec::new();
    let state = first.dir.join(STATE_FILE);
    match fs::symlink_metadata(&state) {
        Ok(meta) if !meta.is_file() => {
            // Planted (a symlink, a FIFO, ...): never read or write through it. Removing the
            // entry itself touches nothing outside the directory.
            let removed = fs::remove_file(&state).or_else(|_| fs::remove_dir(&state));
            out.notes.push(format!(
                "{} is not a regular file (a symlink?); ignored it{}; resuming from sequence 0",
                state.display(),
                if removed.is_ok() {
                    " and removed the entry"
                } else {
                    ""
                }
            ));
            return out;
        }
        _ => {}
    }
    match crate::logs::dir::open_regular(&state, false) {
        Ok(mut f) => {
            if let Err(e) = f.read_to_end(&mut bytes) {
                out.notes.push(format!("cannot read checkpoint: {e}"));
                return out;
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return out,
        Err(e) => {
            out.notes.push(format!("cannot open checkpoint: {e}"));
            return out;
        }
    }
    let Some(cp) = Checkpoint::decode(&bytes) else {
        out.notes
            .push("checkpoint unreadable; resuming from sequence 0".to_string());
        return out;
    };
    if cp.files.len() != targets.len() {
        out.notes.push(format!(
            "checkpoint has {} targets, config has {}; resuming from sequence 0",
            cp.files.len(),
            targets.len()
        ));
        return out;
    }
    let mut tails = Vec::with_capacity(targets.len());
    for (t, (name, len)) in targets.iter().zip(&cp.files) {
        match scan(t, name, *len) {
            Ok(tail) => tails.push(tail),
            Err(e) => {
                out.notes.push(format!(
                    "{}: {e}; resuming from sequence 0 (the node may resend objects already on disk)",
                    t.dir.join(name).display()
                ));
                return out;
            }
        }
    }
    let keep = tails.iter().map(Tail::lines).min().unwrap_or(0);
    for tail in &tails {
        match tail.cut(keep) {
            Ok(cut) if cut > 0 => {
                out.cut_bytes += cut;
                out.notes.push(format!(
                    "cut {cut} unacknowledged byte(s) (torn or surplus lines) after line {keep} past the checkpoint in {}",
                    tail.segments[0].path.parent().unwrap_or(Path::new("")).display()
                ));
            }
            Ok(_) => {}
            Err(e) => out.notes.push(format!("cannot cut log tail: {e}")),
        }
    }
    out.persisted = Some(cp.seq + keep as u64);
    out
}

/// The part of one target's files written after the checkpoint.
#[derive(Debug)]
struct Tail {
    segments: Vec<Segment>,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    /// Offset where the tail starts in this file (the checkpoint length, or 0).
    start: u64,
    /// Offsets just past each complete line after `start`.
    line_ends: Vec<u64>,
    /// The file's length.
    len: u64,
}

impl Tail {
    fn lines(&self) -> usize {
        self.segments.iter().map(|s| s.line_ends.len()).sum()
    }

    /// Keeps the first `keep` complete lines of the tail; truncates the file where they end
    /// and deletes later files that would be left empty. Returns the bytes cut.
    fn cut(&self, mut keep: usize) -> io::Result<u64> {
        let mut cut = 0;
        for s in &self.segments {
            let end = if keep == 0 {
                s.start
            } else if keep <= s.line_ends.len() {
                s.line_ends[keep - 1]
            } else {
                s.len
            };
            keep = keep.saturating_sub(s.line_ends.len());
            if end < s.len {
                cut += s.len - end;
                if end == 0 {
                    fs::remove_file(&s.path)?;
                } else {
                    crate::logs::dir::open_regular(&s.path, true)?.set_len(end)?;
                }
            }
        }
        Ok(cut)
    }
}

fn scan(t: &TargetDir, name: &str, len: u64) -> io::Result<Tail> {
    let from = FileKey::parse(name, t.ext)
        .ok_or_else(|| io::Error::other(format!("checkpoint names a foreign file {name:?}")))?;
    let mut keys: Vec<FileKey> = crate::logs::dir::list_keys(&t.dir, t.ext)?
        .into_iter()
        .filter(|k| *k >= from)
        .collect();
    keys.sort_unstable();
    // A file that was still empty is removed when its session ends (`NodeLog::finish`):
    // then everything past the checkpoint is in later files.
    let from_exists = keys.first() == Some(&from);
    if !from_exists && len != 0 {
        return Err(io::Error::other("the checkpoint's file is gone"));
    }
    let mut segments = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        let path = t.dir.join(key.file_name(t.ext));
        let start = if i == 0 && from_exists { len } else { 0 };
        let mut file = crate::logs::dir::open_regular(&path, false)?;
        let file_len = file.metadata()?.len();
        if file_len < start {
            return Err(io::Error::other(format!(
                "file is shorter ({file_len} bytes) than the checkpoint says ({start})"
            )));
        }
        file.seek(SeekFrom::Start(start))?;
        let mut rest = Vec::with_capacity((file_len - start) as usize);
        file.read_to_end(&mut rest)?;
        let (line_ends, whole) = record_ends(&rest, start, t.ext);
        segments.push(Segment {
            path,
            start,
            line_ends,
            len: start + rest.len() as u64,
        });
        if !whole {
            // A line tracerd cannot have written: nothing after it is counted, so a corrupt
            // or planted tail can only lower the count (the node resends), never raise it.
            break;
        }
    }
    Ok(Tail { segments })
}

/// Offsets (from `start`) just past each complete line of `rest` that is a record tracerd
/// could have written, up to the first that is not; and whether every complete line was.
///
/// The renderers make every object exactly one line (`format`); a machine record is one JSON
/// object, a human record starts with `[`. Counting stops at the first line that is neither,
/// so recovery never counts more objects than were written.
fn record_ends(rest: &[u8], start: u64, ext: &str) -> (Vec<u64>, bool) {
    let mut ends = Vec::new();
    let mut from = 0;
    for (i, b) in rest.iter().enumerate() {
        if *b != b'\n' {
            continue;
        }
        if !is_record(&rest[from..i], ext) {
            return (ends, false);
        }
        ends.push(start + i as u64 + 1);
        from = i + 1;
    }
    (ends, true)
}

fn is_record(line: &[u8], ext: &str) -> bool {
    if ext == "json" {
        line.first() == Some(&b'{') && crate::logs::format::is_valid_json(line)
    } else {
        line.first() == Some(&b'[')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_784_714_812;

    fn file(dir: &Path, key: FileKey, ext: &str, text: &str) -> String {
        let name = key.file_name(ext);
        fs::write(dir.join(&name), text).unwrap();
        name
    }

    #[test]
    fn counts_lines_past_the_checkpoint_and_cuts_torn_and_surplus_tails() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&b).unwrap();
        let k0 = FileKey {
            stamp: T,
            counter: 0,
            legacy: false,
        };
        let k1 = FileKey {
            stamp: T,
            counter: 1,
            legacy: false,
        };
        // Target a: checkpoint after 2 lines, then 1 more line, a rotation, 2 lines and a torn one.
        let a0 = file(&a, k0, "json", "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n");
        file(&a, k1, "json", "{\"n\":4}\n{\"n\":5}\n{\"n\":6");
        // Target b (human): only 2 lines got past the checkpoint before the crash.
        let b0 = file(&b, k0, "log", "[1]\n[2]\n[3]\n[4]\n");
        let cp = Checkpoint {
            seq: 10,
            files: vec![(a0.clone(), 16), (b0.clone(), 8)],
            node: None,
        };
        let state = a.join(STATE_FILE);
        write_state(&state, &cp).unwrap();
        let targets = [
            TargetDir {
                dir: a.clone(),
                ext: "json",
            },
            TargetDir {
                dir: b.clone(),
                ext: "log",
            },
        ];
        let r = recover(&targets);
        assert_eq!(r.persisted, Some(12), "{r:?}");
        assert_eq!(
            fs::read_to_string(a.join(&a0)).unwrap(),
            "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n"
        );
        assert_eq!(
            fs::read_to_string(a.join(k1.file_name("json"))).unwrap(),
            "{\"n\":4}\n"
        );
        assert_eq!(
            fs::read_to_string(b.join(&b0)).unwrap(),
            "[1]\n[2]\n[3]\n[4]\n"
        );
        assert_eq!(r.cut_bytes, "{\"n\":5}\n{\"n\":6".len() as u64);
        // With only one line agreed past the checkpoint, a later file holding none goes.
        let cp = Checkpoint {
            seq: 10,
            files: vec![(a0.clone(), 16), (b0.clone(), 12)],
            node: None,
        };
        write_state(&state, &cp).unwrap();
        let r = recover(&targets);
        assert_eq!(r.persisted, Some(11), "{r:?}");
        assert!(
            !a.join(k1.file_name("json")).exists(),
            "a file holding only surplus lines goes"
        );
        // Idempotent: a second recovery finds the same and cuts nothing.
        let again = recover(&targets);
        assert_eq!((again.persisted, again.cut_bytes), (Some(11), 0));
    }

    #[test]
    fn missing_or_inconsistent_checkpoints_resume_from_zero() {
        let tmp = tempfile::tempdir().unwrap();
        let t = [TargetDir {
            dir: tmp.path().to_path_buf(),
            ext: "json",
        }];
        assert_eq!(recover(&t).persisted, None);
        let state = tmp.path().join(STATE_FILE);
        let name = FileKey {
            stamp: T,
            counter: 0,
            legacy: false,
        }
        .file_name("json");
        write_state(
            &state,
            &Checkpoint {
                seq: 5,
                files: vec![(name.clone(), 100)],
                node: None,
            },
        )
        .unwrap();
        let r = recover(&t);
        assert_eq!(r.persisted, None);
        assert!(r.notes[0].contains("gone"), "{r:?}");
        fs::write(tmp.path().join(&name), "x\n").unwrap();
        let r = recover(&t);
        assert_eq!(r.persisted, None);
        assert!(r.notes[0].contains("shorter"), "{r:?}");
    }

    #[test]
    fn checkpoint_record_is_fixed_size() {
        let cp = Checkpoint {
            seq: u64::MAX,
            files: vec![("node-2026-07-22T10-06-52-99999.json".into(), u64::MAX); 16],
            node: Some("\u{0}".repeat(255)),
        };
        let bytes = cp.encode().unwrap();
        assert_eq!(bytes.len(), STATE_LEN);
        assert_eq!(Checkpoint::decode(&bytes), Some(cp));
    }
}
