//! `tracerd extract --run NAME --out DIR`: a run's traces per node, cut from the log files at
//! the run's two boundaries whatever rotation did in between, and `run.json`, the summary a
//! report pipeline starts from. Blocking; reads the log roots the record names, writes only
//! under `DIR`.
//!
//! [`plan`] is the pure half: from the files a node directory holds now and the two marks,
//! which byte range of which file belongs to the run.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::logs::dir;
use crate::logs::rotation::FileKey;
use crate::runs::record::{FileMark, RunRecord};

/// Why an extraction failed.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The run has a start but no end yet.
    #[error("run {0:?} has not ended: end it first (tracerd run end {0})")]
    NotEnded(String),
    /// A record naming a node directory that is not one plain path component (a record
    /// edited by hand): nothing is read or written for it.
    #[error("the run record names node directory {0:?}, which is not a plain directory name")]
    BadNode(String),
    /// The output directory exists and is not empty.
    #[error("{0}: the output directory exists and is not empty")]
    OutNotEmpty(PathBuf),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> ExtractError + '_ {
    move |source| ExtractError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `name` is one normal path component, as tracerd names node directories: the
/// record's names are joined to the log root and to the output directory.
fn is_node_dir_name(name: &str) -> bool {
    let mut parts = Path::new(name).components();
    matches!(
        (parts.next(), parts.next()),
        (Some(std::path::Component::Normal(_)), None)
    )
}

/// One piece of a node's run window: `file` from byte `from` to `to` (`None`: its end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// The file's name in the node directory.
    pub file: String,
    /// First byte.
    pub from: u64,
    /// End, exclusive; `None` for the whole rest of the file.
    pub to: Option<u64>,
}

/// The pieces of a node's window, oldest first, from the files the directory holds now
/// (`keys`, any order), the start mark (`None`: the directory had no file when the run
/// started, so every file belongs to it) and the end mark (`None`: no file at the end, so
/// nothing was written). Also the marked files that are gone (retention removed them).
pub fn plan(
    keys: &[FileKey],
    ext: &str,
    start: Option<&FileMark>,
    end: Option<&FileMark>,
) -> (Vec<Piece>, Vec<String>) {
    let Some(end) = end else {
        return (Vec::new(), Vec::new());
    };
    let mut keys = keys.to_vec();
    keys.sort();
    let key_of = |m: &FileMark| FileKey::parse(&m.file, ext);
    let (Some(end_key), start_key) = (key_of(end), start.and_then(key_of)) else {
        return (Vec::new(), vec![end.file.clone()]);
    };
    let mut missing = Vec::new();
    for mark in [start, Some(end)].into_iter().flatten() {
        if !keys.iter().any(|k| k.file_name(ext) == mark.file) && !missing.contains(&mark.file) {
            missing.push(mark.file.clone());
        }
    }
    let mut pieces = Vec::new();
    for key in keys {
        if key > end_key || start_key.is_some_and(|s| key < s) {
            continue;
        }
        let file = key.file_name(ext);
        let from = match start {
            Some(s) if s.file == file => s.offset,
            _ => 0,
        };
        let to = (end.file == file).then_some(end.offset);
        if to.is_some_and(|t| t <= from) {
            continue;
        }
        pieces.push(Piece { file, from, to });
    }
    (pieces, missing)
}

/// What the summary counts of one node's machine lines.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counts {
    /// Lines (trace objects).
    pub objects: u64,
    /// Objects by severity (`sev` of the machine line).
    pub severities: BTreeMap<String, u64>,
    /// Lines that are not a JSON object with a `sev` (a human-format target has none).
    pub unparsed: u64,
    /// `at` of the first and last object.
    pub first_at: Option<String>,
    /// See `first_at`.
    pub last_at: Option<String>,
}

impl Counts {
    /// Counts one line of a `json` (ForMachine) file.
    pub fn machine_line(&mut self, line: &[u8]) {
        self.objects += 1;
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(line) else {
            self.unparsed += 1;
            return;
        };
        match map.get("sev").and_then(Value::as_str) {
            Some(sev) => *self.severities.entry(sev.to_string()).or_default() += 1,
            None => self.unparsed += 1,
        }
        if let Some(at) = map.get("at").and_then(Value::as_str) {
            if self.first_at.is_none() {
                self.first_at = Some(at.to_string());
            }
            self.last_at = Some(at.to_string());
        }
    }
}

/// Copies `piece` of `node_dir` to `out`, counting machine lines when `machine`.
fn copy_piece(
    node_dir: &Path,
    piece: &Piece,
    out: &mut impl Write,
    out_path: &Path,
    counts: &mut Counts,
    machine: bool,
) -> Result<(), ExtractError> {
    let path = node_dir.join(&piece.file);
    let mut file = dir::open_regular(&path, false).map_err(at(&path))?;
    file.seek(SeekFrom::Start(piece.from)).map_err(at(&path))?;
    let limited: Box<dyn Read> = match piece.to {
        Some(to) => Box::new(file.take(to - piece.from)),
        None => Box::new(file),
    };
    let mut reader = BufReader::with_capacity(1 << 16, limited);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(at(&path))?;
        if n == 0 {
            break;
        }
        // A file ends with a whole line; a last partial line (a crash mid-append, cut back at
        // the next start) is not an object.
        if line.last() != Some(&b'\n') {
            break;
        }
        out.write_all(&line).map_err(at(out_path))?;
        if machine {
            counts.machine_line(&line[..line.len() - 1]);
        } else {
            counts.objects += 1;
        }
    }
    Ok(())
}

/// Writes the run's traces under `out` (`<node>/traces.<ext>` per node and target) and
/// `out/run.json`; returns the summary.
pub fn extract(record: &RunRecord, out: &Path) -> Result<Value, ExtractError> {
    let Some(end) = &record.end else {
        return Err(ExtractError::NotEnded(record.name.clone()));
    };
    if fs::read_dir(out).is_ok_and(|mut d| d.next().is_some()) {
        return Err(ExtractError::OutNotEmpty(out.to_path_buf()));
    }
    fs::create_dir_all(out).map_err(at(out))?;
    let mut nodes: BTreeMap<String, Value> = BTreeMap::new();
    for (i, target) in end.targets.iter().enumerate() {
        let start = record
            .start
            .targets
            .iter()
            .find(|t| t.root == target.root && t.ext == target.ext);
        let machine = target.ext == "json";
        let mut names: Vec<&String> = target.files.keys().collect();
        if let Some(s) = start {
            names.extend(s.files.keys());
        }
        names.sort();
        names.dedup();
        for node in names {
            if !is_node_dir_name(node) {
                return Err(ExtractError::BadNode(node.clone()));
            }
            let node_dir = target.root.join(node);
            let keys = dir::list_keys(&node_dir, &target.ext).unwrap_or_default();
            let start_mark = start.and_then(|s| s.files.get(node));
            let (pieces, missing) = plan(&keys, &target.ext, start_mark, target.files.get(node));
            let out_dir = out.join(node);
            fs::create_dir_all(&out_dir).map_err(at(&out_dir))?;
            // Two targets of one format (two roots) are numbered after the first.
            let same = end.targets[..i]
                .iter()
                .filter(|t| t.ext == target.ext)
                .count();
            let file_name = match same {
                0 => format!("traces.{}", target.ext),
                n => format!("traces-{}.{}", n + 1, target.ext),
            };
            let out_path = out_dir.join(file_name);
            let file = fs::File::create(&out_path).map_err(at(&out_path))?;
            let mut writer = io::BufWriter::new(file);
            let mut counts = Counts::default();
            for piece in &pieces {
                copy_piece(
                    &node_dir,
                    piece,
                    &mut writer,
                    &out_path,
                    &mut counts,
                    machine,
                )?;
            }
            writer.flush().map_err(at(&out_path))?;
            let entry = nodes.entry(node.clone()).or_insert_with(|| json!({}));
            let files: Vec<&str> = pieces.iter().map(|p| p.file.as_str()).collect();
            let summary = json!({
                "root": target.root,
                "file": out_path.strip_prefix(out).unwrap_or(&out_path),
                "objects": counts.objects,
                "sourceFiles": files,
                "missingFiles": missing,
                "complete": missing.is_empty(),
            });
            let map = entry.as_object_mut().expect("an object");
            if machine && !map.contains_key("objects") {
                map.insert("objects".into(), json!(counts.objects));
                map.insert("severities".into(), json!(counts.severities));
                map.insert("unparsedLines".into(), json!(counts.unparsed));
                map.insert("firstAt".into(), json!(counts.first_at));
                map.insert("lastAt".into(), json!(counts.last_at));
            }
            map.entry("targets")
                .or_insert_with(|| json!([]))
                .as_array_mut()
                .expect("an array")
                .push(summary);
        }
    }
    // Round-trip times and metrics at the two boundaries, for connected nodes.
    let mut with_state: Vec<&String> = record.start.nodes.keys().collect();
    with_state.extend(end.nodes.keys());
    with_state.sort();
    with_state.dedup();
    for node in with_state {
        let (s, e) = (record.start.nodes.get(node), end.nodes.get(node));
        let entry = nodes.entry(node.clone()).or_insert_with(|| json!({}));
        let map = entry.as_object_mut().expect("an object");
        map.insert(
            "rtt".into(),
            json!({"start": s.and_then(|s| s.rtt), "end": e.and_then(|e| e.rtt)}),
        );
        let mut names: Vec<&String> = s.map(|s| s.metrics.keys().collect()).unwrap_or_default();
        if let Some(e) = e {
            names.extend(e.metrics.keys());
        }
        names.sort();
        names.dedup();
        let metrics: serde_json::Map<String, Value> = names
            .into_iter()
            .map(|m| {
                let first = s.and_then(|s| s.metrics.get(m)).cloned();
                let last = e.and_then(|e| e.metrics.get(m)).cloned();
                (m.clone(), json!({"first": first, "last": last}))
            })
            .collect();
        map.insert("metrics".into(), Value::Object(metrics));
    }
    let summary = json!({
        "name": record.name,
        "labels": record.labels,
        "start": record.start.at,
        "end": end.at,
        "durationSeconds": end.at_ms.saturating_sub(record.start.at_ms) as f64 / 1e3,
        "nodes": nodes,
    });
    let path = out.join("run.json");
    let mut text = serde_json::to_vec_pretty(&summary).expect("JSON values serialise");
    text.push(b'\n');
    fs::write(&path, text).map_err(at(&path))?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(stamp: i64, counter: u32) -> FileKey {
        FileKey {
            stamp,
            counter,
            legacy: false,
        }
    }

    fn mark(k: FileKey, offset: u64) -> FileMark {
        FileMark {
            file: k.file_name("json"),
            offset,
        }
    }

    #[test]
    fn the_window_spans_the_files_rotation_made_between_the_marks() {
        let (a, b, c, d) = (key(100, 0), key(100, 1), key(160, 0), key(220, 0));
        let keys = [d, b, a, c];
        let (pieces, missing) = plan(&keys, "json", Some(&mark(b, 40)), Some(&mark(c, 7)));
        assert!(missing.is_empty());
        assert_eq!(
            pieces,
            vec![
                Piece {
                    file: b.file_name("json"),
                    from: 40,
                    to: None
                },
                Piece {
                    file: c.file_name("json"),
                    from: 0,
                    to: Some(7)
                },
            ]
        );
        // Both marks in one file.
        let (pieces, _) = plan(&keys, "json", Some(&mark(a, 3)), Some(&mark(a, 9)));
        assert_eq!(
            pieces,
            vec![Piece {
                file: a.file_name("json"),
                from: 3,
                to: Some(9)
            }]
        );
        // A node that had no file at the start: everything up to the end mark.
        let (pieces, _) = plan(&keys, "json", None, Some(&mark(b, 5)));
        assert_eq!(pieces.len(), 2);
        // No file at the end: nothing.
        assert_eq!(plan(&keys, "json", Some(&mark(a, 3)), None).0, vec![]);
        // Retention removed the start file: reported, the rest still extracted.
        let (pieces, missing) = plan(&[c, d], "json", Some(&mark(b, 40)), Some(&mark(d, 1)));
        assert_eq!(missing, vec![b.file_name("json")]);
        assert_eq!(pieces.len(), 2);
    }

    #[test]
    fn a_record_naming_a_path_outside_the_roots_is_refused() {
        for bad in ["..", "../x", "a/b", "/etc", "", "."] {
            assert!(!is_node_dir_name(bad), "{bad:?}");
        }
        assert!(is_node_dir_name("relay-1"));
        let tmp = tempfile::tempdir().unwrap();
        let mark = |files: &[(&str, &str)]| crate::runs::record::Boundary {
            at: String::new(),
            at_ms: 0,
            targets: vec![crate::runs::record::TargetMarks {
                root: tmp.path().join("logs"),
                ext: "json".into(),
                files: files
                    .iter()
                    .map(|(n, f)| {
                        (
                            n.to_string(),
                            FileMark {
                                file: f.to_string(),
                                offset: 0,
                            },
                        )
                    })
                    .collect(),
            }],
            nodes: BTreeMap::new(),
        };
        let record = RunRecord {
            name: "r".into(),
            labels: BTreeMap::new(),
            start: mark(&[]),
            end: Some(mark(&[("../../escape", "node-2026-01-01T00-00-00.json")])),
        };
        let out = tmp.path().join("out");
        assert!(matches!(
            extract(&record, &out),
            Err(ExtractError::BadNode(_))
        ));
        assert!(!tmp.path().join("escape").exists());
    }

    #[test]
    fn machine_lines_are_counted_by_severity() {
        let mut c = Counts::default();
        c.machine_line(br#"{"at":"t1","ns":"A","data":{},"sev":"Info","thread":"1","host":"h"}"#);
        c.machine_line(br#"{"at":"t2","sev":"Warning"}"#);
        c.machine_line(b"not json");
        assert_eq!(c.objects, 3);
        assert_eq!(c.unparsed, 1);
        assert_eq!(c.severities.get("Info"), Some(&1));
        assert_eq!(c.severities.get("Warning"), Some(&1));
        assert_eq!(
            (c.first_at.as_deref(), c.last_at.as_deref()),
            (Some("t1"), Some("t2"))
        );
    }
}
