//! The listing of a node directory's log files: which [`FileKey`]s exist for one extension.
//! Read by the writer (to start after the newest file), recovery (to scan the tail) and the
//! janitor (to prune), so none of them depends on another for it. Blocking I/O.

use std::fs;
use std::io;
use std::path::Path;

use crate::logs::rotation::FileKey;

/// The newest existing log file key in `dir` for `ext`, so a new file sorts after it.
pub fn newest_key(dir: &Path, ext: &str) -> Option<FileKey> {
    list_keys(dir, ext).ok()?.into_iter().max()
}

/// Every log file key in `dir` for `ext`.
pub fn list_keys(dir: &Path, ext: &str) -> io::Result<Vec<FileKey>> {
    let mut keys = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
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
