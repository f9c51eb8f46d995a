//! The open log files of one node, one per target. Blocking I/O: callers run it on the
//! blocking pool, never on an async worker.
//!
//! Tests in `writer/tests.rs` and `writer/idle_tests.rs`.
//!
//! Files are created with `O_CREAT|O_EXCL|O_APPEND|O_NOFOLLOW`, so an existing file is never
//! truncated or written through a planted symlink. A batch is written as whole lines; before a
//! line that would take the file past the size limit, the file is rotated: a new file is
//! created and `node.<ext>` is swapped to it atomically (symlink to a temporary name, then
//! `rename` over the old link).
//!
//! A node that sends nothing holds no descriptor for its files: they are closed right after
//! they are created and whenever the node's writer finds it idle (`close_idle`), and the next
//! write reopens the same file by path, checking it is still the file tracerd created (same
//! device and inode, `O_NOFOLLOW`, never `O_CREAT`); one deleted or replaced meanwhile is
//! replaced by a fresh file, as a deleted open file is at a checkpoint.
//!
//! A node renders its lines into buffers lent by the thread that writes them ([`SPARE`]) and
//! gives them back once every line is written; only a node whose write failed keeps its
//! rendered lines (to resume them). So a fleet of thousands of nodes holds a few warm render
//! buffers, one pair per writer thread, instead of one pair per node that touched each
//! node's own cold pages at its every write.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Time spent rotating (creating the next files and swapping the links).
    pub rotate_time: Duration,
    /// Objects whose machine text was not JSON.
    pub invalid_json: u64,
    /// Journal entries whose message was cut to fit a datagram.
    pub journal_truncated: u64,
}

impl std::ops::AddAssign for Appended {
    fn add_assign(&mut self, other: Appended) {
        self.bytes += other.bytes;
        self.rotations += other.rotations;
        self.rotate_time += other.rotate_time;
        self.invalid_json += other.invalid_json;
        self.journal_truncated += other.journal_truncated;
    }
}

/// The open files of one node.
pub struct NodeLog {
    files: Vec<OpenFile>,
    /// The rotation policy as this node applies it ([`Policy::spread`] by `spread_seed`).
    policy: Option<Policy>,
    /// This node's [`Policy::spread`] seed, from its directory name.
    spread_seed: u64,
    machine: Rendered,
    human: Rendered,
    /// The checkpoint file, in the first target's node directory. It is opened for each
    /// write rather than held: an idle node then costs one descriptor per target, not two
    /// (and the writer checkpoints at most every `ingest::writer::CHECKPOINT_EVERY`).
    state: Option<PathBuf>,
    /// Lines were written since the last checkpoint (see [`NodeLog::checkpoint_owed`]).
    unrecorded: bool,
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
            let (file, key, id) = create_file(&dir, ext, FileKey::next(now, newest))?;
            link_current(&dir, ext, key)?;
            files.push(OpenFile {
                format: target.format,
                dir,
                file: Some(file),
                id,
                dirty: false,
                key,
                len: 0,
                advised: 0,
                done: 0,
                rotated: false,
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
            policy: settings
                .policy
                .map(|p| p.spread(rotation::spread_seed(name))),
            spread_seed: rotation::spread_seed(name),
            machine: Rendered::default(),
            human: Rendered::default(),
            state,
            unrecorded: false,
            identity: identity.map(str::to_string),
            seq: recovered.persisted.unwrap_or(0),
            sync_checkpoints,
            pending_lines: 0,
            pending_seq: None,
            invalid_pending: 0,
        };
        log.checkpoint()?;
        // The file exists (and `node.<ext>` names it) from the connection on, but a node that
        // sends nothing holds no descriptor for it: the first write reopens it.
        log.close_idle();
        Ok((log, recovered))
    }

    /// Closes every target's descriptor, unless a failed write left lines to write; the next
    /// write reopens the same files (a file found deleted or replaced meanwhile is replaced
    /// by a fresh one, as [`NodeLog::checkpoint`] does). Data not yet synced stays in the
    /// page cache and is synced by the next [`NodeLog::sync`]. Returns whether a descriptor
    /// was closed.
    pub fn close_idle(&mut self) -> bool {
        if self.has_pending() {
            return false;
        }
        let mut closed = false;
        for f in &mut self.files {
            closed |= f.file.take().is_some();
        }
        closed
    }

    /// Whether lines were written since the last checkpoint. Recovery finds them without one
    /// (it counts the whole lines past the checkpoint, which are numbered contiguously: a
    /// run that does not continue them is checkpointed before its first line), so a writer
    /// may defer the checkpoint; it writes one before the node goes idle, at the session's
    /// end, and after every rotation (so the checkpoint's file is never one retention may
    /// delete).
    pub fn checkpoint_owed(&self) -> bool {
        self.unrecorded
    }

    /// Whether a checkpoint is due now, deferred or not: a target started a new file since
    /// the last one (by rotation, or replacing a deleted file), so the last checkpoint names
    /// a file retention may delete.
    pub fn checkpoint_due(&self) -> bool {
        self.files.iter().any(|f| f.rotated)
    }

    /// Replaces a current file found deleted, as [`NodeLog::checkpoint`] does (one `fstat`
    /// per target); a writer deferring its checkpoint calls it after each write, then
    /// checkpoints if [`NodeLog::checkpoint_due`].
    pub fn check_files(&mut self) -> Result<(), WriteError> {
        self.replace_deleted()
    }

    /// Whether any target's descriptor is open.
    pub fn is_open(&self) -> bool {
        self.files.iter().any(|f| f.file.is_some())
    }

    /// Replaces the rotation policy (after a reload); the next line written obeys it.
    pub fn set_policy(&mut self, policy: Option<Policy>) {
        self.policy = policy.map(|p| p.spread(self.spread_seed));
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
            let result = write_lines(f, rendered, policy.as_ref(), now, &mut out);
            out.bytes += line_bytes(rendered, before, f.done);
            result?;
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
        self.unrecorded |= self.pending_lines > 0;
        self.pending_lines = 0;
        for f in &mut self.files {
            f.done = 0;
        }
        // Every line is written: the buffers go back to this thread for the next node.
        self.machine.give_back(Spare::Machine);
        self.human.give_back(Spare::Human);
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
            // No file target (journal only): nothing to record.
            self.unrecorded = false;
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
        })?;
        self.unrecorded = false;
        for f in &mut self.files {
            f.rotated = false;
        }
        Ok(())
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
            let gone = match &f.file {
                Some(file) => file.metadata().map(|m| m.nlink() == 0).unwrap_or(false),
                // Closed while idle: one `lstat` of the path instead.
                None => match fs::symlink_metadata(f.path()) {
                    Ok(m) => !m.is_file() || (m.dev(), m.ino()) != f.id,
                    Err(e) => e.kind() == io::ErrorKind::NotFound,
                },
            };
            if !gone {
                continue;
            }
            // Whether this call made the directory, not whether it existed a moment ago: a
            // directory removed by hand (`rm -r`) loses its files first, so between the two
            // the file is gone while the directory still stands.
            let recreated = ensure_dir(&f.dir)?;
            let old = f.key.file_name(f.format.extension());
            rotate(f, now)?;
            tracing::warn!(
                dir = %f.dir.display(),
                deleted = %old,
                file = %f.key.file_name(f.format.extension()),
                "{}; carrying on in a fresh file (lines written to the deleted one are gone with it)",
                if recreated {
                    "the node's log directory was deleted; recreated it"
                } else {
                    "the node's current log file was deleted"
                }
            );
        }
        Ok(())
    }

    /// Paths of the current files, one per target.
    pub fn current_paths(&self) -> Vec<PathBuf> {
        self.files.iter().map(OpenFile::path).collect()
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
        if need_machine {
            self.machine.borrow_spare(Spare::Machine);
        }
        if need_human {
            self.human.borrow_spare(Spare::Human);
        }
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
            if f.file.is_none() && !f.dirty {
                continue;
            }
            // A file closed while idle with lines not yet synced is reopened for the sync
            // (`fdatasync` flushes the file's pages whichever descriptor asks).
            let synced = match f.reopen(now) {
                Ok(file) => file.sync_data(),
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            if let Err(source) = synced {
                let path = f.path();
                if let Err(e) = rotate(f, now) {
                    tracing::error!(error = %e, "cannot replace a log file after an fsync error");
                }
                first_error.get_or_insert(WriteError::Sync { path, source });
            } else {
                f.dirty = false;
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Render buffers above this capacity are shrunk when given back: a burst must not pin a
/// thread's buffers for the rest of its life.
const KEEP_RENDER_BYTES: usize = 1 << 20;
/// Which of a thread's spare render buffers: each format's lines have their own sizes.
#[derive(Clone, Copy)]
enum Spare {
    Machine = 0,
    Human = 1,
}

thread_local! {
    /// This thread's spare render buffers, lent to the node it writes (module docs).
    static SPARE: std::cell::RefCell<[Rendered; 2]> = std::cell::RefCell::new(Default::default());
}

impl Rendered {
    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// Takes this thread's spare buffer of `kind` when this one holds no allocation.
    fn borrow_spare(&mut self, kind: Spare) {
        if self.bytes.capacity() == 0 {
            *self = SPARE.with(|s| std::mem::take(&mut s.borrow_mut()[kind as usize]));
        }
    }

    /// Hands this buffer (emptied, shrunk past [`KEEP_RENDER_BYTES`]) to this thread as its
    /// spare of `kind`, leaving no allocation behind; the smaller of the two is dropped when
    /// the thread has one already.
    fn give_back(&mut self, kind: Spare) {
        if self.bytes.capacity() == 0 && self.ends.capacity() == 0 {
            return;
        }
        let mut buffer = std::mem::take(self);
        buffer.clear();
        if buffer.bytes.capacity() > KEEP_RENDER_BYTES {
            buffer.bytes.shrink_to(KEEP_RENDER_BYTES / 4);
            buffer.ends.shrink_to(KEEP_RENDER_BYTES / 256);
        }
        SPARE.with(|s| {
            let spare = &mut s.borrow_mut()[kind as usize];
            if buffer.bytes.capacity() > spare.bytes.capacity() {
                *spare = buffer;
            }
        });
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
/// `write_all`, rotating in between (counted and timed in `out`). Advances `f.done` past
/// every line fully written.
fn write_lines(
    f: &mut OpenFile,
    rendered: &Rendered,
    policy: Option<&Policy>,
    now: i64,
    out: &mut Appended,
) -> Result<(), WriteError> {
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
            write_chunk(
                f,
                &rendered.bytes[chunk_start..line_start],
                chunk_lines,
                now,
            )?;
            let started = std::time::Instant::now();
            rotate(f, now)?;
            out.rotate_time += started.elapsed();
            out.rotations += 1;
            chunk_start = line_start;
            chunk_lines = 0;
        }
        chunk_lines += 1;
        line_start = end;
    }
    write_chunk(
        f,
        &rendered.bytes[chunk_start..line_start],
        chunk_lines,
        now,
    )
}

mod behind;
mod file;
use file::{create_file, ensure_dir, link_current, rotate, write_chunk, OpenFile};

#[cfg(test)]
mod idle_tests;

#[cfg(test)]
mod tests;
