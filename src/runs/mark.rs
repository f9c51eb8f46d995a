//! Taking a boundary: where every node directory's newest file stands, cut back to its last
//! whole line. Blocking; reads directories and file tails only, never writes.
//!
//! A writer appends whole lines, but a boundary may fall in the middle of an append: the part
//! of a line already there belongs to the next run window, so the offset is the end of the
//! last complete line.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use crate::logs::{dir, FileTarget};
use crate::runs::record::{FileMark, TargetMarks};

/// Reads backwards this much at a time looking for a line end.
const TAIL_CHUNK: u64 = 64 << 10;

/// The marks of one target: each node directory of `target.root` (directories only, no
/// symlink followed) with a log file.
pub fn mark_target(target: &FileTarget) -> io::Result<TargetMarks> {
    let ext = target.format.extension();
    let mut files = BTreeMap::new();
    let entries = match fs::read_dir(&target.root) {
        Ok(e) => e,
        // No node has written yet.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(TargetMarks {
                root: target.root.clone(),
                ext: ext.to_string(),
                files,
            })
        }
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Some(node) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if let Some(mark) = mark_dir(&entry.path(), ext)? {
            files.insert(node, mark);
        }
    }
    Ok(TargetMarks {
        root: target.root.clone(),
        ext: ext.to_string(),
        files,
    })
}

/// The newest log file of a node directory and its length in whole lines.
pub fn mark_dir(node_dir: &Path, ext: &str) -> io::Result<Option<FileMark>> {
    let Some(key) = dir::newest_key(node_dir, ext) else {
        return Ok(None);
    };
    let name = key.file_name(ext);
    let mut file = match dir::open_regular(&node_dir.join(&name), false) {
        Ok(f) => f,
        // Removed between the listing and now (retention, or empty at a session's end).
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let offset = whole_lines(&mut file)?;
    Ok(Some(FileMark { file: name, offset }))
}

/// The length of `file` up to and including its last `\n`.
pub fn whole_lines(file: &mut fs::File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    let mut end = len;
    let mut buf = vec![0u8; TAIL_CHUNK as usize];
    while end > 0 {
        let start = end.saturating_sub(TAIL_CHUNK);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_partial_last_line_is_left_to_the_next_window() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        let mut f = fs::File::create(&p).unwrap();
        assert_eq!(whole_lines(&mut fs::File::open(&p).unwrap()).unwrap(), 0);
        f.write_all(b"{\"a\":1}\n{\"a\":2}\n{\"a\"").unwrap();
        assert_eq!(whole_lines(&mut fs::File::open(&p).unwrap()).unwrap(), 16);
        // A last line longer than one chunk.
        f.write_all(&vec![b'x'; 3 * TAIL_CHUNK as usize]).unwrap();
        assert_eq!(whole_lines(&mut fs::File::open(&p).unwrap()).unwrap(), 16);
        f.write_all(b"\n").unwrap();
        assert_eq!(
            whole_lines(&mut fs::File::open(&p).unwrap()).unwrap(),
            16 + 4 + 3 * TAIL_CHUNK + 1
        );
    }
}
