//! The open log files of one node, one per target. Blocking I/O: callers run it on the
//! blocking pool, never on an async worker.
//!
//! Over 800 lines (about 840, 180 of them tests): the append, rotation, checkpoint and
//! directory-recreation paths share one `NodeLog` state; splitting the tests out to
//! `writer/tests.rs` is the next step.
//!
//! Files are created with `O_CREAT|O_EXCL|O_APPEND|O_NOFOLLOW`, so an existing file is never
//! truncated or written through a planted symlink. A batch is written as whole lines; before a
//! line that would take the file past the size limit, the file is rotated: a new file is
//! created and `node.<ext>` is swapped to it atomically (symlink to a temporary name, then
//! `rename` over the old link).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::config::LogFormat;
use crate::logs::dir::newest_key;
use crate::logs::journal::NodeJournal;
use crate::logs::recovery::{self, Checkpoint, Recovery, TargetDir};
use crate::logs::rotation::{self, FileKey, Policy};
use crate::logs::{format, LogSettings};
use crate::model::TraceObject;

/// A log file operation that failed, with the path it failed on.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Creating or checking the node's directory failed.
    #[error("cannot create log directory {path}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The node's directory is a symlink or not a directory.
    #[error("log directory {0} is not a plain directory; refusing to write through it")]
    NotADirectory(PathBuf),
    /// Creating a log file failed.
    #[error("cannot create log file {path}")]
    Create {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing, flushing or syncing a log file failed.
    #[error("cannot write log file {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing the checkpoint file failed.
    #[error("cannot write checkpoint {path}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `fdatasync` failed; the file was replaced by a new one.
    #[error("fsync of {path} failed; data written since the last good fsync may be lost on power failure")]
    Sync {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The directory belongs to another node identity (its checkpoint says so).
    #[error("log directory {dir} belongs to node {owner:?}")]
    Owned {
        /// The directory.
        dir: PathBuf,
        /// The identity recorded in its checkpoint.
        owner: String,
    },
    /// The writer was used after a failure closed it.
    #[error("log writer already closed")]
    Closed,
    /// Sending to journald failed.
    #[error(transparent)]
    Journal(#[from] crate::logs::journal::JournalError),
    /// Swapping the `node.<ext>` symlink failed.
    #[error("cannot update symlink {path}")]
    Link {
        /// The symlink.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// What one append did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Bytes written, all targets together.
    pub bytes: u64,
    /// Files rotated.
    pub rotations: u64,
    /// Objects whose machine text was not JSON.
    pub invalid_json: u64,
    /// Journal entries whose message was cut to fit a datagram.
    pub journal_truncated: u64,
}

impl std::ops::AddAssign for Appended {
    fn add_assign(&mut self, other: Appended) {
        self.bytes += other.bytes;
        self.rotations += other.rotations;
        self.invalid_json += other.invalid_json;
        self.journal_truncated += other.journal_truncated;
    }
}

struct OpenFile {
    format: LogFormat,
    dir: PathBuf,
    file: File,
    key: FileKey,
    /// Bytes of whole lines in the file; after a failed write the file is cut back to this.
    len: u64,
    /// Lines of the pending render already written to this file.
    done: usize,
}

/// The open files of one node.
pub struct NodeLog {
    files: Vec<OpenFile>,
    policy: Option<Policy>,
    machine: Rendered,
    human: Rendered,
    /// The checkpoint file, in the first target's node directory. It is opened for each
    /// write rather than held: an idle node then costs one descriptor per target, not two.
    state: Option<PathBuf>,
    /// Highest sequence number whose line is in every target.
    seq: u64,
    /// The node identity recorded in every checkpoint.
    identity: Option<String>,
    /// Sync data before writing a checkpoint (fsync durability modes).
    sync_checkpoints: bool,
    /// Lines in the current render (every target must reach this many `done`).
    pending_lines: usize,
    /// Sequence number of the last line of the pending render, if numbered.
    pending_seq: Option<u64>,
    /// Objects of the pending render whose machine text was not JSON.
    invalid_pending: u64,
    /// The node's journald sender (`JournalMode` targets).
    journal: Option<NodeJournal>,
}

/// Lines rendered once per batch and shared by every target of that format.
#[derive(Default)]
struct Rendered {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl NodeLog {
    /// Recovers the node's previous files after a crash (see `recovery`), then opens a fresh
    /// file in `<root>/<name>/` for every target. `name` must be sanitised. `sync_checkpoints`
    /// makes every checkpoint follow an `fdatasync` of the data it describes.
    pub fn open(
        settings: &LogSettings,
        name: &str,
        now: i64,
        sync_checkpoints: bool,
    ) -> Result<(NodeLog, Recovery), WriteError> {
        NodeLog::open_as(settings, name, None, now, sync_checkpoints)
    }

    /// [`NodeLog::open`] for the node identity `identity` (the exact name it sent), which is
    /// recorded in the checkpoint. A directory whose checkpoint names another identity is
    /// left untouched: [`WriteError::Owned`].
    pub fn open_as(
        settings: &LogSettings,
        name: &str,
        identity: Option<&str>,
        now: i64,
        sync_checkpoints: bool,
    ) -> Result<(NodeLog, Recovery), WriteError> {
        let mut dirs = Vec::with_capacity(settings.targets.len());
        for target in &settings.targets {
            let dir = target.root.join(name);
            ensure_dir(&dir)?;
            dirs.push(TargetDir {
                dir,
                ext: target.format.extension(),
            });
        }
        if let (Some(identity), Some(first)) = (identity, dirs.first()) {
            match recovery::owner(&first.dir) {
                Some(owner) if owner != identity => {
                    return Err(WriteError::Owned {
                        dir: first.dir.clone(),
                        owner,
                    })
                }
                _ => {}
            }
        }
        let recovered = recovery::recover(&dirs);
        let mut files = Vec::with_capacity(settings.targets.len());
        for (target, TargetDir { dir, ext }) in settings.targets.iter().zip(dirs) {
            let newest = newest_key(&dir, ext);
            let (file, key) = create_file(&dir, ext, FileKey::next(now, newest))?;
            link_current(&dir, ext, key)?;
            files.push(OpenFile {
                format: target.format,
                dir,
                file,
                key,
                len: 0,
                done: 0,
            });
        }
        let state = files.first().map(|f| f.dir.join(recovery::STATE_FILE));
        let journal = match &settings.journal {
            Some(j) => Some(NodeJournal::open(&j.socket, name, j.formats.clone())?),
            None => None,
        };
        let mut log = NodeLog {
            journal,
            files,
            policy: settings.policy,
            machine: Rendered::default(),
            human: Rendered::default(),
            state,
            identity: identity.map(str::to_string),
            seq: recovered.persisted.unwrap_or(0),
            sync_checkpoints,
            pending_lines: 0,
            pending_seq: None,
            invalid_pending: 0,
        };
        log.checkpoint()?;
        Ok((log, recovered))
    }

    /// Replaces the rotation policy (after a reload); the next line written obeys it.
    pub fn set_policy(&mut self, policy: Option<Policy>) {
        self.policy = policy;
    }

    /// Highest sequence number whose line is in every target.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Declares that everything up to `seq` is persisted (a value known from elsewhere, e.g.
    /// this node's previous session in this process) and checkpoints it.
    pub fn set_seq(&mut self, seq: u64) -> Result<(), WriteError> {
        if seq != self.seq {
            self.seq = seq;
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Appends a run of objects numbered `first_seq..`, checkpointing first when the run does
    /// not continue the lines on disk, so lines past a checkpoint are always contiguous.
    pub fn append_run(
        &mut self,
        first_seq: u64,
        objects: &[&TraceObject],
        now: i64,
    ) -> Result<Appended, WriteError> {
        if objects.is_empty() {
            return Ok(Appended::default());
        }
        if first_seq != self.seq + 1 {
            self.seq = first_seq - 1;
            self.checkpoint()?;
        }
        self.render(objects.iter().copied());
        self.pending_seq = Some(first_seq + objects.len() as u64 - 1);
        self.resume(now)
    }

    /// Whether a failed write left lines to write (see [`NodeLog::resume`]).
    pub fn has_pending(&self) -> bool {
        self.files.iter().any(|f| f.done < self.pending_lines)
            || self.journal.as_ref().is_some_and(NodeJournal::has_pending)
    }

    /// Gives up the lines a failed write left (they are dropped, not written).
    pub fn discard_pending(&mut self) {
        self.pending_lines = 0;
        self.pending_seq = None;
        if let Some(journal) = &mut self.journal {
            journal.clear();
        }
        for f in &mut self.files {
            f.done = 0;
        }
    }

    /// Writes what the last render still lacks in every target. After an error every file
    /// ends on a line boundary (a partial write is cut back), and calling `resume` again
    /// continues exactly where it stopped: no line is lost or written twice.
    pub fn resume(&mut self, now: i64) -> Result<Appended, WriteError> {
        let mut out = Appended::default();
        let policy = self.policy;
        for f in &mut self.files {
            let rendered = match f.format {
                LogFormat::ForMachine => &self.machine,
                LogFormat::ForHuman => &self.human,
            };
            let before = f.done;
            let result = write_lines(f, rendered, policy.as_ref(), now);
            out.bytes += line_bytes(rendered, before, f.done);
            out.rotations += result?;
        }
        if let Some(journal) = &mut self.journal {
            let (bytes, cut) = journal.send_pending()?;
            out.bytes += bytes;
            out.journal_truncated += cut;
            journal.clear();
        }
        out.invalid_json = std::mem::take(&mut self.invalid_pending);
        if let Some(seq) = self.pending_seq.take() {
            self.seq = seq;
        }
        self.pending_lines = 0;
        for f in &mut self.files {
            f.done = 0;
        }
        // A burst must not pin its buffers for the life of a now quiet connection: with
        // thousands of nodes that would be most of tracerd's memory.
        self.machine.shrink();
        self.human.shrink();
        Ok(out)
    }

    /// Records the current sequence number and file positions in the checkpoint file (after
    /// syncing the data, in fsync modes).
    pub fn checkpoint(&mut self) -> Result<(), WriteError> {
        if self.sync_checkpoints {
            self.sync()?;
        }
        self.replace_deleted()?;
        let Some(path) = &self.state else {
            return Ok(());
        };
        let cp = Checkpoint {
            seq: self.seq,
            files: self
                .files
                .iter()
                .map(|f| (f.key.file_name(f.format.extension()), f.len))
                .collect(),
            node: self.identity.clone(),
        };
        recovery::write_state(path, &cp).map_err(|source| WriteError::Checkpoint {
            path: path.clone(),
            source,
        })
    }

    /// Ends the session: removes every current file that got no line (so connections that
    /// send nothing leave no empty files) and points `node.<ext>` back at the newest file
    /// left (or removes it). Call after the last checkpoint; the checkpoint may name a
    /// removed file with length 0, which recovery accepts.
    pub fn finish(&mut self) -> Result<(), WriteError> {
        for f in &self.files {
            if f.len != 0 || self.pending_lines != 0 {
                continue;
            }
            let ext = f.format.extension();
            let path = f.dir.join(f.key.file_name(ext));
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(WriteError::Write { path, source }),
            }
            match newest_key(&f.dir, ext) {
                Some(key) => link_current(&f.dir, ext, key)?,
                None => {
                    let link = f.dir.join(format!("node.{ext}"));
                    match fs::remove_file(&link) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(source) => return Err(WriteError::Link { path: link, source }),
                    }
                }
            }
        }
        Ok(())
    }

    /// A current file that was deleted (its directory removed by hand, say) still takes
    /// writes that no one can read, and the checkpoint beside it cannot be written: recreate
    /// the directory and a fresh file (and `node.<ext>`), and carry on. One `fstat` per
    /// target. The lines written to the deleted file went with it.
    fn replace_deleted(&mut self) -> Result<(), WriteError> {
        use std::os::unix::fs::MetadataExt;
        let now = crate::utc::now_unix();
        for f in &mut self.files {
            let gone = f.file.metadata().map(|m| m.nlink() == 0).unwrap_or(false);
            if !gone {
                continue;
            }
            let dir_existed = f.dir.exists();
            ensure_dir(&f.dir)?;
            let old = f.key.file_name(f.format.extension());
            rotate(f, now)?;
            tracing::warn!(
                dir = %f.dir.display(),
                deleted = %old,
                file = %f.key.file_name(f.format.extension()),
                "{}; carrying on in a fresh file (lines written to the deleted one are gone with it)",
                if dir_existed {
                    "the node's current log file was deleted"
                } else {
                    "the node's log directory was deleted; recreated it"
                }
            );
        }
        Ok(())
    }

    /// Paths of the current files, one per target.
    pub fn current_paths(&self) -> Vec<PathBuf> {
        self.files
            .iter()
            .map(|f| f.dir.join(f.key.file_name(f.format.extension())))
            .collect()
    }

    /// Writes `objects` to every target, rotating at line boundaries as the size limit
    /// requires. On error, see [`NodeLog::resume`].
    pub fn append<'a>(
        &mut self,
        objects: impl IntoIterator<Item = &'a TraceObject>,
        now: i64,
    ) -> Result<Appended, WriteError> {
        self.render(objects);
        self.pending_seq = None;
        self.resume(now)
    }

    /// Renders `objects` once per format in use, as the pending lines of every target.
    fn render<'a>(&mut self, objects: impl IntoIterator<Item = &'a TraceObject>) {
        debug_assert!(!self.has_pending(), "render over lines not yet written");
        let need_machine = self.files.iter().any(|f| f.format == LogFormat::ForMachine);
        let need_human = self.files.iter().any(|f| f.format == LogFormat::ForHuman);
        self.machine.clear();
        self.human.clear();
        if let Some(journal) = &mut self.journal {
            journal.clear();
        }
        let mut lines = 0;
        for obj in objects {
            lines += 1;
            if need_machine {
                if !format::push_machine(&mut self.machine.bytes, obj) {
                    self.invalid_pending += 1;
                }
                self.machine.ends.push(self.machine.bytes.len());
            }
            if need_human {
                format::push_human(&mut self.human.bytes, obj);
                self.human.ends.push(self.human.bytes.len());
            }
            if let Some(journal) = &mut self.journal {
                journal.render(obj);
            }
        }
        self.pending_lines = lines;
        for f in &mut self.files {
            f.done = 0;
        }
    }

    /// Flushes every file to stable storage (`fdatasync`). A file whose sync fails is closed
    /// and replaced by a new one (after a failed fsync the kernel may have dropped the data,
    /// and a later fsync of the same file could succeed falsely); the error is returned.
    pub fn sync(&mut self) -> Result<(), WriteError> {
        let mut first_error = None;
        let now = crate::utc::now_unix();
        for f in &mut self.files {
            if let Err(source) = f.file.sync_data() {
                let path = f.dir.join(f.key.file_name(f.format.extension()));
                if let Err(e) = rotate(f, now) {
                    tracing::error!(error = %e, "cannot replace a log file after an fsync error");
                }
                first_error.get_or_insert(WriteError::Sync { path, source });
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Render buffers above this capacity are shrunk after use.
const KEEP_RENDER_BYTES: usize = 1 << 20;

impl Rendered {
    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    fn shrink(&mut self) {
        if self.bytes.capacity() > KEEP_RENDER_BYTES {
            self.clear();
            self.bytes.shrink_to(KEEP_RENDER_BYTES / 4);
            self.ends.shrink_to(KEEP_RENDER_BYTES / 256);
        }
    }
}

/// Bytes of lines `from..to` of `rendered`.
fn line_bytes(rendered: &Rendered, from: usize, to: usize) -> u64 {
    if to <= from {
        return 0;
    }
    let start = if from == 0 {
        0
    } else {
        rendered.ends[from - 1]
    };
    (rendered.ends[to - 1] - start) as u64
}

/// Writes the lines of `rendered` from `f.done` on, each run of lines that fits in one
/// `write_all`, rotating in between. Advances `f.done` past every line fully written.
fn write_lines(
    f: &mut OpenFile,
    rendered: &Rendered,
    policy: Option<&Policy>,
    now: i64,
) -> Result<u64, WriteError> {
    let mut rotations = 0;
    let first = f.done;
    let mut line_start = if first == 0 {
        0
    } else {
        rendered.ends[first - 1]
    };
    let mut chunk_start = line_start;
    let mut chunk_lines = 0;
    for &end in &rendered.ends[first..] {
        let line_len = (end - line_start) as u64;
        let chunk_len = (line_start - chunk_start) as u64;
        if rotation::must_rotate(policy, f.len + chunk_len, line_len) {
            write_chunk(f, &rendered.bytes[chunk_start..line_start], chunk_lines)?;
            rotate(f, now)?;
            rotations += 1;
            chunk_start = line_start;
            chunk_lines = 0;
        }
        chunk_lines += 1;
        line_start = end;
    }
    write_chunk(f, &rendered.bytes[chunk_start..line_start], chunk_lines)?;
    Ok(rotations)
}

/// Appends whole lines; on failure cuts the file back to its last line boundary.
fn write_chunk(f: &mut OpenFile, bytes: &[u8], lines: usize) -> Result<(), WriteError> {
    if bytes.is_empty() {
        return Ok(());
    }
    if let Err(source) = f.file.write_all(bytes) {
        // A short write may have left part of a line: remove it, so the file stays whole
        // lines and a retry appends after a newline. If even that fails, the next
        // session's recovery cuts it.
        let _ = f.file.set_len(f.len);
        return Err(WriteError::Write {
            path: f.dir.join(f.key.file_name(f.format.extension())),
            source,
        });
    }
    f.len += bytes.len() as u64;
    f.done += lines;
    Ok(())
}

fn rotate(f: &mut OpenFile, now: i64) -> Result<(), WriteError> {
    let ext = f.format.extension();
    let (file, key) = create_file(&f.dir, ext, FileKey::next(now, Some(f.key)))?;
    link_current(&f.dir, ext, key)?;
    f.file = file;
    f.key = key;
    f.len = 0;
    Ok(())
}

fn ensure_dir(dir: &Path) -> Result<(), WriteError> {
    match fs::create_dir(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(WriteError::Dir {
                path: dir.to_path_buf(),
                source,
            })
        }
    }
    let meta = fs::symlink_metadata(dir).map_err(|source| WriteError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        Ok(())
    } else {
        Err(WriteError::NotADirectory(dir.to_path_buf()))
    }
}

/// Creates the file for `key`, or for the next free counter if that name exists.
fn create_file(dir: &Path, ext: &str, mut key: FileKey) -> Result<(File, FileKey), WriteError> {
    loop {
        let path = dir.join(key.file_name(ext));
        let opened = OpenOptions::new()
            .append(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path);
        match opened {
            Ok(file) => return Ok((file, key)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && key.counter < 100_000 => {
                key.counter += 1;
            }
            Err(source) => return Err(WriteError::Create { path, source }),
        }
    }
}

/// Points `node.<ext>` at the file of `key`, atomically.
fn link_current(dir: &Path, ext: &str, key: FileKey) -> Result<(), WriteError> {
    let link = dir.join(format!("node.{ext}"));
    let tmp = dir.join(format!("node.{ext}.tmp"));
    let err = |source| WriteError::Link {
        path: link.clone(),
        source,
    };
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    std::os::unix::fs::symlink(key.file_name(ext), &tmp).map_err(err)?;
    fs::rename(&tmp, &link).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::FileTarget;
    use crate::model::{DetailLevel, Severity};

    fn obj(i: usize) -> TraceObject {
        TraceObject {
            namespace: "Test.Ns".into(),
            severity: Severity::Info,
            detail: DetailLevel::Normal,
            timestamp_ns: 1_784_714_812_000_000_000,
            hostname: "h".into(),
            thread_id: "1".into(),
            machine: format!("{{\"i\":{i}}}"),
            human: Some(format!("line {i}")),
            form: Default::default(),
        }
    }

    fn settings(root: &Path, limit: Option<u64>) -> LogSettings {
        LogSettings {
            targets: vec![
                FileTarget {
                    root: root.join("m"),
                    format: LogFormat::ForMachine,
                },
                FileTarget {
                    root: root.join("h"),
                    format: LogFormat::ForHuman,
                },
            ],
            journal: None,
            policy: limit.map(|limit_bytes| Policy {
                limit_bytes,
                max_age_secs: 3600,
                keep_files: 100,
            }),
            prune_every_secs: 60,
        }
    }

    fn read_all(dir: &Path, ext: &str) -> (Vec<String>, Vec<PathBuf>) {
        let mut keys = crate::logs::dir::list_keys(dir, ext).unwrap();
        keys.sort();
        let mut lines = Vec::new();
        let mut paths = Vec::new();
        for k in keys {
            let p = dir.join(k.file_name(ext));
            let text = fs::read_to_string(&p).unwrap();
            assert!(
                text.is_empty() || text.ends_with('\n'),
                "{p:?} ends mid-line"
            );
            assert!(!text.starts_with('\n'), "{p:?} starts with an empty line");
            lines.extend(text.lines().map(str::to_string));
            paths.push(p);
        }
        (lines, paths)
    }

    #[test]
    fn rotation_splits_only_at_line_boundaries_and_loses_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("m")).unwrap();
        fs::create_dir_all(tmp.path().join("h")).unwrap();
        let s = settings(tmp.path(), Some(1000));
        let mut log = NodeLog::open(&s, "node-a", 1_784_714_812, false).unwrap().0;
        let batch: Vec<_> = (0..500).map(obj).collect();
        let out = log.append(&batch[..250], 1_784_714_812).unwrap();
        log.append(&batch[250..], 1_784_714_812).unwrap();
        assert!(out.rotations > 5);
        let (lines, paths) = read_all(&tmp.path().join("m/node-a"), "json");
        assert_eq!(lines.len(), 500);
        for (i, l) in lines.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["data"]["i"], i);
        }
        for p in &paths {
            assert!(fs::metadata(p).unwrap().len() <= 1000);
        }
        let link = fs::read_link(tmp.path().join("m/node-a/node.json")).unwrap();
        assert_eq!(Some(link.as_os_str()), paths.last().unwrap().file_name());
        let (human, _) = read_all(&tmp.path().join("h/node-a"), "log");
        assert_eq!(human.len(), 500);
        assert!(human[7].ends_with("] line 7"), "{}", human[7]);
    }

    #[test]
    fn reopening_in_the_same_second_never_truncates() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("m")).unwrap();
        fs::create_dir_all(tmp.path().join("h")).unwrap();
        let s = settings(tmp.path(), None);
        for round in 0..3 {
            let mut log = NodeLog::open(&s, "n", 1_784_714_812, false).unwrap().0;
            log.append(&[obj(round)], 1_784_714_812).unwrap();
        }
        let (lines, paths) = read_all(&tmp.path().join("m/n"), "json");
        assert_eq!(lines.len(), 3);
        assert_eq!(paths.len(), 3);
    }

    #[test]
    fn refuses_a_symlinked_node_directory() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("m")).unwrap();
        fs::create_dir_all(tmp.path().join("h")).unwrap();
        std::os::unix::fs::symlink("/tmp", tmp.path().join("m/evil")).unwrap();
        let s = settings(tmp.path(), None);
        assert!(matches!(
            NodeLog::open(&s, "evil", 0, false).map(|_| ()),
            Err(WriteError::NotADirectory(_))
        ));
    }

    fn arbitrary_object() -> impl proptest::strategy::Strategy<Value = TraceObject> {
        use proptest::prelude::*;
        (
            any::<String>(),
            prop_oneof![
                any::<String>(),
                Just(crate::logs::format::tests::forged_machine_text())
            ],
            proptest::option::of(any::<String>()),
            any::<String>(),
            any::<String>(),
            any::<bool>(),
        )
            .prop_map(|(namespace, machine, human, hostname, thread_id, line)| {
                TraceObject {
                    namespace,
                    machine,
                    human,
                    hostname,
                    thread_id,
                    form: if line {
                        crate::model::MachineForm::Line
                    } else {
                        Default::default()
                    },
                    ..obj(0)
                }
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Whatever a node sends, each object is one line in every target, and after a crash
        /// that tears any target at any byte, recovery counts exactly the objects whose line
        /// is whole in every target: never more than were written.
        #[test]
        fn recovery_never_counts_more_objects_than_were_written(
            objects in proptest::collection::vec(arbitrary_object(), 1..12),
            cut_machine in proptest::prelude::any::<proptest::sample::Index>(),
            cut_human in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let tmp = tempfile::tempdir().unwrap();
            fs::create_dir_all(tmp.path().join("m")).unwrap();
            fs::create_dir_all(tmp.path().join("h")).unwrap();
            let s = settings(tmp.path(), None);
            let refs: Vec<&TraceObject> = objects.iter().collect();
            let (mut log, _) = NodeLog::open(&s, "n", 1_784_714_812, false).unwrap();
            log.append_run(1, &refs, 1_784_714_812).unwrap();
            let paths = log.current_paths();
            drop(log);
            let mut whole = Vec::new();
            for (path, cut) in paths.iter().zip([cut_machine, cut_human]) {
                let text = fs::read(path).unwrap();
                proptest::prop_assert_eq!(text.iter().filter(|b| **b == b'\n').count(), objects.len());
                let at = cut.index(text.len() + 1);
                fs::write(path, &text[..at]).unwrap();
                whole.push(text[..at].iter().filter(|b| **b == b'\n').count() as u64);
            }
            let dirs = [
                TargetDir { dir: tmp.path().join("m/n"), ext: "json" },
                TargetDir { dir: tmp.path().join("h/n"), ext: "log" },
            ];
            let r = recovery::recover(&dirs);
            let expect = *whole.iter().min().unwrap();
            proptest::prop_assert_eq!(r.persisted, Some(expect));
            proptest::prop_assert!(expect <= objects.len() as u64);
        }
    }
}
