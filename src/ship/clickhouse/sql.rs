//! ClickHouse's side as pure text: the table's DDL, the insert and resync queries, the
//! `JSONEachRow` rows of a batch, and the resync answer read back. No I/O.
//!
//! The schema works on ClickHouse 18.16 (Debian's), which has no `DateTime64`: the time is
//! `time DateTime('UTC')` (seconds) plus `nanos UInt32` (nanoseconds within that second);
//! `ORDER BY (tracer, node, time, nanos)` sorts by the full time. Every row also carries the
//! log file and the byte offset just past its line (`file`, `offset`), so after an uncertain
//! insert tracerd asks ClickHouse for each node's highest stored position and resends only
//! what is not there: no insert-deduplication token is needed (18.16 has none for
//! non-replicated tables) and `SELECT count()` counts every trace object once.

use serde::{Deserialize, Serialize};

use crate::ship::cursor::Pos;
use crate::ship::follow::Batch;
use crate::ship::record::Record;

/// The columns, in insert order.
pub const COLUMNS: &str =
    "time, nanos, tracer, node, namespace, severity, host, thread, machine, human, file, offset";

/// `CREATE DATABASE IF NOT EXISTS`.
pub fn create_database(database: &str) -> String {
    format!("CREATE DATABASE IF NOT EXISTS {database}")
}

/// `CREATE TABLE IF NOT EXISTS`: the documented schema (README.md, "Shipping to ClickHouse").
pub fn create_table(database: &str, table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {database}.{table} (\
         time DateTime('UTC'), \
         nanos UInt32, \
         tracer String, \
         node String, \
         namespace String, \
         severity String, \
         host String, \
         thread String, \
         machine String, \
         human String, \
         file String, \
         offset UInt64\
         ) ENGINE = MergeTree() PARTITION BY toYYYYMM(time) \
         ORDER BY (tracer, node, time, nanos)"
    )
}

/// The insert statement (the rows follow in the body).
pub fn insert(database: &str, table: &str) -> String {
    format!("INSERT INTO {database}.{table} ({COLUMNS}) FORMAT JSONEachRow")
}

/// `s` as a ClickHouse string literal.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The `query_id` prefix of this tracerd's inserts.
pub fn query_id_prefix(tracer: &str) -> String {
    format!("tracerd-ship-{tracer}-")
}

/// Counts this tracerd's inserts still running on the server (an insert whose answer was
/// lost may still be committing; resync waits for it to end first).
pub fn running_inserts(prefix: &str) -> String {
    format!(
        "SELECT count() FROM system.processes WHERE substring(query_id, 1, {}) = {} FORMAT TabSeparated",
        prefix.len(),
        quote(prefix)
    )
}

/// Every node's highest stored offset per file, for this tracerd.
pub fn resync(database: &str, table: &str, tracer: &str) -> String {
    format!(
        "SELECT node, file, max(offset) AS offset FROM {database}.{table} \
         WHERE tracer = {} GROUP BY node, file FORMAT JSONEachRow",
        quote(tracer)
    )
}

#[derive(Deserialize)]
struct Stored {
    node: String,
    file: String,
    // 18.16 quotes 64-bit integers in JSON output; newer servers may not.
    offset: serde_json::Value,
}

/// Reads [`resync`]'s answer: each node's highest stored position (files that do not parse
/// as tracerd's names are ignored).
pub fn parse_resync(body: &str) -> Result<Vec<(String, Pos)>, String> {
    let mut best: std::collections::BTreeMap<String, Pos> = Default::default();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let s: Stored = serde_json::from_str(line).map_err(|e| format!("{e}: {line:?}"))?;
        let offset = match &s.offset {
            serde_json::Value::String(t) => t.parse().ok(),
            v => v.as_u64(),
        }
        .ok_or_else(|| format!("offset is not a number: {line:?}"))?;
        let Some(pos) = Pos::parse(&s.file, offset) else {
            continue;
        };
        let e = best.entry(s.node).or_insert(pos);
        if pos > *e {
            *e = pos;
        }
    }
    Ok(best.into_iter().collect())
}

#[derive(Serialize)]
struct Row<'a> {
    time: u32,
    nanos: u32,
    tracer: &'a str,
    node: &'a str,
    namespace: &'a str,
    severity: &'a str,
    host: &'a str,
    thread: &'a str,
    machine: &'a str,
    human: &'a str,
    file: &'a str,
    offset: u64,
}

/// Appends one `JSONEachRow` row per line of `batch` to `out`, node by node, each node's rows
/// in file order (so whatever prefix of them ClickHouse stores, the highest stored offset says
/// where to go on).
pub fn push_rows(out: &mut Vec<u8>, batch: &Batch, tracer: &str) {
    for chunk in &batch.chunks {
        let mut file_name = String::new();
        let mut file_key = None;
        for line in &chunk.lines {
            if file_key != Some(line.after.file) {
                file_key = Some(line.after.file);
                file_name = line.after.file_name();
            }
            let text = chunk.text(line);
            let r = Record::parse(&text);
            let human = r.human();
            let row = Row {
                time: r.secs.clamp(0, i64::from(u32::MAX)) as u32,
                nanos: r.nanos,
                tracer,
                node: &chunk.node,
                namespace: &r.namespace,
                severity: &r.severity,
                host: &r.host,
                thread: &r.thread,
                machine: &text,
                human: &human,
                file: &file_name,
                offset: line.after.offset,
            };
            serde_json::to_writer(&mut *out, &row).expect("writing to a Vec cannot fail");
            out.push(b'\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::rotation::FileKey;
    use crate::ship::follow::{Chunk, Line};

    #[test]
    fn rows_carry_every_field_and_their_position() {
        let line = r#"{"at":"2026-07-22T10:15:31.000000007Z","ns":"A.B","data":{"k":"it's"},"sev":"Info","thread":"3","host":"h"}"#;
        let file = FileKey {
            stamp: 1_784_715_331,
            counter: 0,
            legacy: false,
        };
        let batch = Batch {
            chunks: vec![Chunk {
                node: "n'1".into(),
                buf: format!("{line}\n").into_bytes(),
                lines: vec![Line {
                    start: 0,
                    end: line.len(),
                    after: Pos {
                        file,
                        offset: line.len() as u64 + 1,
                    },
                }],
            }],
        };
        let mut out = Vec::new();
        push_rows(&mut out, &batch, "site-a");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time"], 1_784_715_331);
        assert_eq!(v["nanos"], 7);
        assert_eq!(v["namespace"], "A.B");
        assert_eq!(v["machine"], line);
        assert_eq!(v["node"], "n'1");
        assert_eq!(v["offset"], line.len() + 1);
        assert_eq!(
            Pos::parse(v["file"].as_str().unwrap(), 0).unwrap().file,
            file
        );
    }

    #[test]
    fn resync_takes_each_nodes_highest_position() {
        let f0 = FileKey {
            stamp: 1_784_715_331,
            counter: 0,
            legacy: false,
        };
        let f1 = FileKey { counter: 1, ..f0 };
        let body = format!(
            "{{\"node\":\"a\",\"file\":\"{}\",\"offset\":\"900\"}}\n{{\"node\":\"a\",\"file\":\"{}\",\"offset\":\"10\"}}\n{{\"node\":\"b\",\"file\":\"{}\",\"offset\":5}}\n",
            f0.file_name("json"),
            f1.file_name("json"),
            f0.file_name("json")
        );
        let got = parse_resync(&body).unwrap();
        assert_eq!(
            got,
            vec![
                (
                    "a".into(),
                    Pos {
                        file: f1,
                        offset: 10
                    }
                ),
                (
                    "b".into(),
                    Pos {
                        file: f0,
                        offset: 5
                    }
                )
            ]
        );
        assert!(parse_resync("{").is_err());
        assert_eq!(quote("a'b\\"), "'a\\'b\\\\'");
    }
}
