//! The listing of a node directory's log files: which [`FileKey`]s exist for one extension.
//! Read by the writer (to start after the newest file), recovery (to scan the tail) and the
//! janitor (to prune), so none of them depends on another for it. Blocking I/O.

use std::fs;
use std::io;
use std::path::Path;

use crate::logs::rotation::FileKey;

/// Opens an existing file of a node directory for reading (or, with `write`, for writing
/// in place) without following a symlink (`O_NOFOLLOW`) and without blocking on a FIFO
/// (`O_NONBLOCK`), and checks it is a regular file.
pub fn open_regular(path: &Path, write: bool) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(file)
}

/// The newest existing log file key in `dir` for `ext`, so a new file sorts after it.
pub fn newest_key(dir: &Path, ext: &str) -> Option<FileKey> {
    list_keys(dir, ext).ok()?.into_iter().max()
}

/// Every log file key in `dir` for `ext`: regular files only. A symlink, directory, FIFO or
/// socket with a log file's name is not ours (it may have been planted to make tracerd read,
/// truncate or delete something outside the log root) and is ignored by every walk.
pub fn list_keys(dir: &Path, ext: &str) -> io::Result<Vec<FileKey>> {
    let mut keys = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        // `DirEntry::file_type` does not follow symlinks.
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        if let Some(key) = entry
            .file_name()
            .to_str()
            .and_then(|n| FileKey::parse(n, ext))
        {
            keys.push(key);
        }
    }
    Ok(keys)
}
