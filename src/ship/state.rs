//! The cursor files of one sink: `<state dir>/<sink>/<node>.cursor`, one per node, each
//! holding the [`Pos`] the remote confirmed. Written to a temporary file, `fsync`ed, renamed
//! over the old one and the directory `fsync`ed, so after a crash a cursor is the old or the
//! new position, never a torn one. Blocking I/O (run on the blocking pool).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::cursor::Pos;

/// The cursor directory of one sink.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Creates (if needed) and opens `<base>/<sink>`.
    pub fn open(base: &Path, sink: &str) -> io::Result<StateDir> {
        let dir = base.join(sink);
        fs::create_dir_all(&dir)?;
        Ok(StateDir { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn file(&self, node: &str) -> PathBuf {
        // Node directory names are single components of at most 255 bytes; a long one is
        // cut (on a character boundary) and told apart by a hash of the whole name.
        if node.len() <= 240 {
            return self.dir.join(format!("{node}.cursor"));
        }
        let mut cut = 200;
        while !node.is_char_boundary(cut) {
            cut -= 1;
        }
        let hash = node.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        self.dir
            .join(format!("{}-{hash:016x}.cursor", &node[..cut]))
    }

    /// The node's confirmed position; `None` when it has none yet. A cursor file that cannot
    /// be read back is an error (the caller logs it and starts the node from its oldest file,
    /// so nothing is skipped).
    pub fn load(&self, node: &str) -> io::Result<Option<Pos>> {
        let Some(text) = self.load_text(node)? else {
            return Ok(None);
        };
        Pos::from_text(&text).map(Some).ok_or_else(|| {
            io::Error::other(format!(
                "{} holds no cursor: {text:?}",
                self.file(node).display()
            ))
        })
    }

    /// The node's cursor file as text (for a cursor of another shape: `forward::native`);
    /// `None` when there is none.
    pub fn load_text(&self, node: &str) -> io::Result<Option<String>> {
        match crate::logs::dir::open_regular(&self.file(node), false) {
            Ok(mut f) => {
                let mut s = String::new();
                io::Read::read_to_string(&mut f, &mut s)?;
                Ok(Some(s))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stores the positions of `nodes` durably (one directory `fsync` for all of them).
    pub fn save(&self, nodes: &[(&str, Pos)]) -> io::Result<()> {
        let texts: Vec<(&str, String)> = nodes.iter().map(|(n, p)| (*n, p.to_text())).collect();
        self.save_text(&texts)
    }

    /// Stores the cursor texts of `nodes` durably (one directory `fsync` for all of them).
    pub fn save_text(&self, nodes: &[(&str, String)]) -> io::Result<()> {
        if nodes.is_empty() {
            return Ok(());
        }
        for (node, text) in nodes {
            let path = self.file(node);
            let tmp = path.with_extension("cursor.tmp");
            let _ = fs::remove_file(&tmp);
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_data()?;
            fs::rename(&tmp, &path)?;
        }
        fs::File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::rotation::FileKey;

    #[test]
    fn saves_and_loads_cursors() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StateDir::open(tmp.path(), "clickhouse").unwrap();
        assert_eq!(s.load("relay-1").unwrap(), None);
        let pos = Pos {
            file: FileKey {
                stamp: 1_784_714_812,
                counter: 3,
                legacy: false,
            },
            offset: 4096,
        };
        let long = "n".repeat(250);
        s.save(&[("relay-1", pos), (&long, pos)]).unwrap();
        assert_eq!(s.load("relay-1").unwrap(), Some(pos));
        assert_eq!(s.load(&long).unwrap(), Some(pos));
        std::fs::write(s.path().join("bad.cursor"), "garbage").unwrap();
        assert!(s.load("bad").is_err());
    }
}
