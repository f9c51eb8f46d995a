//! One log file of a node ([`OpenFile`]): creating it (`O_CREAT|O_EXCL|O_NOFOLLOW`), reopening
//! it after an idle close (same device and inode, never `O_CREAT`), appending whole lines,
//! rotating it, and swapping the `node.<ext>` link. Blocking I/O, called by `NodeLog`. Written
//! pages leave the page cache behind the writes ([`super::behind`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{behind, WriteError};
use crate::config::LogFormat;
use crate::logs::rotation::FileKey;

pub(super) struct OpenFile {
    pub(super) format: LogFormat,
    pub(super) dir: PathBuf,
    /// The descriptor while the node writes; `None` while it is idle ([`NodeLog::close_idle`]
    /// and right after [`NodeLog::open_as`]), so an idle node holds no descriptor for its
    /// files. The next write reopens the same file ([`OpenFile::reopen`]).
    pub(super) file: Option<File>,
    /// `(st_dev, st_ino)` of the current file: a reopened path must still be this file.
    pub(super) id: (u64, u64),
    /// Lines were written since the last `fdatasync` (a closed file is synced by reopening).
    pub(super) dirty: bool,
    pub(super) key: FileKey,
    /// Bytes of whole lines in the file; after a failed write the file is cut back to this.
    pub(super) len: u64,
    /// Bytes whose writeback drop-behind has asked for ([`super::behind::advance`]): the
    /// next request starts here, so a request the full queue dropped is covered by the next.
    pub(super) advised: u64,
    /// Lines of the pending render already written to this file.
    pub(super) done: usize,
    /// A new file was started since the last checkpoint (which names the old one).
    pub(super) rotated: bool,
}

/// Appends whole lines; on failure cuts the file back to its last line boundary.
pub(super) fn write_chunk(
    f: &mut OpenFile,
    bytes: &[u8],
    lines: usize,
    now: i64,
) -> Result<(), WriteError> {
    if bytes.is_empty() {
        return Ok(());
    }
    f.reopen(now)?;
    // After `reopen`, which starts a fresh file when the old one was deleted.
    let len = f.len;
    let file = f.file.as_mut().ok_or(WriteError::Closed)?;
    if let Err(source) = file.write_all(bytes) {
        // A short write may have left part of a line: remove it, so the file stays whole
        // lines and a retry appends after a newline. If even that fails, the next
        // session's recovery cuts it.
        let _ = file.set_len(len);
        return Err(WriteError::Write {
            path: f.path(),
            source,
        });
    }
    behind::advance(file, &mut f.advised, len + bytes.len() as u64);
    f.len += bytes.len() as u64;
    f.done += lines;
    f.dirty = true;
    Ok(())
}

pub(super) fn rotate(f: &mut OpenFile, now: i64) -> Result<(), WriteError> {
    let ext = f.format.extension();
    let (file, key, id) = create_file(&f.dir, ext, FileKey::next(now, Some(f.key)))?;
    link_current(&f.dir, ext, key)?;
    if let Some(old) = f.file.take() {
        behind::release(old);
    }
    f.file = Some(file);
    f.id = id;
    f.key = key;
    f.len = 0;
    f.advised = 0;
    f.dirty = false;
    f.rotated = true;
    Ok(())
}

impl OpenFile {
    pub(super) fn path(&self) -> PathBuf {
        self.dir.join(self.key.file_name(self.format.extension()))
    }

    /// The open descriptor, reopening the current file if it was closed while idle
    /// (`O_APPEND|O_NOFOLLOW|O_NONBLOCK`, never `O_CREAT`). The path must still be the file
    /// this node created (same device and inode, a regular file); if it was deleted (its
    /// directory removed by hand, say) or replaced, the directory is recreated and a fresh
    /// file started, as [`NodeLog::checkpoint`] does for a deleted open file.
    pub(super) fn reopen(&mut self, now: i64) -> Result<&mut File, WriteError> {
        use std::os::unix::fs::MetadataExt;
        if self.file.is_none() {
            let path = self.path();
            let opened = OpenOptions::new()
                .append(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(&path)
                .and_then(|file| file.metadata().map(|m| (file, m)));
            let gone = match opened {
                Ok((file, m)) if m.is_file() && (m.dev(), m.ino()) == self.id => {
                    self.file = Some(file);
                    None
                }
                Ok(_) => Some("replaced"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Some("deleted"),
                // A symlink (`ELOOP`) or a FIFO without a reader (`ENXIO`) planted over it.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENXIO)) => {
                    Some("replaced")
                }
                Err(source) => return Err(WriteError::Write { path, source }),
            };
            if let Some(how) = gone {
                let recreated = ensure_dir(&self.dir)?;
                let old = self.key.file_name(self.format.extension());
                rotate(self, now)?;
                tracing::warn!(
                    dir = %self.dir.display(),
                    file = %old,
                    new = %self.key.file_name(self.format.extension()),
                    "the node's current log file was {how}{} while it was closed; carrying on in a \
                     fresh file (lines written to the old one are gone with it)",
                    if recreated { " (with its directory; recreated it)" } else { "" }
                );
            }
        }
        // Set just above when it was `None`; `rotate` always leaves a descriptor.
        self.file.as_mut().ok_or(WriteError::Closed)
    }
}

/// Makes the node directory `dir` if it is missing: `true` when this call made it. Anything
/// but a directory at the path (a symlink planted there, say) is refused.
pub(super) fn ensure_dir(dir: &Path) -> Result<bool, WriteError> {
    match fs::create_dir(dir) {
        Ok(()) => return Ok(true),
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
        Ok(false)
    } else {
        Err(WriteError::NotADirectory(dir.to_path_buf()))
    }
}

/// Creates the file for `key`, or for the next free counter if that name exists; returns
/// it with its key and `(st_dev, st_ino)`.
pub(super) fn create_file(
    dir: &Path,
    ext: &str,
    mut key: FileKey,
) -> Result<(File, FileKey, (u64, u64)), WriteError> {
    use std::os::unix::fs::MetadataExt;
    loop {
        let path = dir.join(key.file_name(ext));
        let opened = OpenOptions::new()
            .append(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path);
        match opened {
            Ok(file) => {
                let m = file
                    .metadata()
                    .map_err(|source| WriteError::Create { path, source })?;
                return Ok((file, key, (m.dev(), m.ino())));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && key.counter < 100_000 => {
                key.counter += 1;
            }
            Err(source) => return Err(WriteError::Create { path, source }),
        }
    }
}

/// Points `node.<ext>` at the file of `key`, atomically.
pub(super) fn link_current(dir: &Path, ext: &str, key: FileKey) -> Result<(), WriteError> {
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
