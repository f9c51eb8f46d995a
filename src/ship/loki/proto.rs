//! Grafana Loki's push API on the wire, as pure functions: the protobuf `logproto.PushRequest`
//! (messages written from Loki's published `pkg/push/push.proto`, grafana/loki commit
//! `65e30f8488e8a5ea2013c6881675f8103a8f6bc7`,
//! <https://github.com/grafana/loki/blob/65e30f8488e8a5ea2013c6881675f8103a8f6bc7/pkg/push/push.proto>,
//! field numbers as there; structured metadata is not sent, so Loki 2.x and a Loki 3 with
//! structured metadata disallowed both take it), Snappy *block* compression, the streams'
//! labels, and what an answer's status means.
//!
//! Streams are low-cardinality by construction: `node` (the node's directory), `level` (the
//! severity's class, Grafana's level names) and `namespace` (the namespace's first component,
//! at most [`MAX_ROOTS_PER_NODE`] per node, `other` past it or when it is not a plain word),
//! plus the configured static labels. Never a per-trace value.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::ship::follow::Batch;
use crate::ship::record::Record;

/// `logproto.PushRequest` (field 2, `format`, is left empty: Loki's own).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    /// The streams.
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

/// `logproto.StreamAdapter` (field 3, `hash`, is Loki's own).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamAdapter {
    /// The stream's labels in Prometheus text form: `{level="info", node="relay-1"}`.
    #[prost(string, tag = "1")]
    pub labels: String,
    /// Entries in timestamp order.
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
}

/// `logproto.EntryAdapter` (fields 3 and 4, structured metadata and parsed labels, unused).
#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryAdapter {
    /// When.
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    /// The log line: the node's machine-format JSON line as tracerd stored it.
    #[prost(string, tag = "2")]
    pub line: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Timestamp {
    /// Unix seconds.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds within that second.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// Most distinct `namespace` label values one node gets; past it a root is `other`.
pub const MAX_ROOTS_PER_NODE: usize = 64;
/// Longest `namespace` label value; a longer root is `other`.
const MAX_ROOT_LEN: usize = 64;

/// The `level` label of a severity: Grafana's level names (`debug`, `info`, `warning`,
/// `error`, `critical`), Cardano's eight severities folded into them.
pub fn level_of(severity: &str) -> &'static str {
    match severity {
        "Debug" => "debug",
        "Info" | "Notice" => "info",
        "Warning" => "warning",
        "Error" => "error",
        "Critical" | "Alert" | "Emergency" => "critical",
        _ => "unknown",
    }
}

/// Appends `value` as a quoted label value (Prometheus text escapes: `\\`, `\"`, `\n`).
fn push_quoted(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `labels` (name → value) in Loki's text form, sorted by name.
pub fn labels_text(labels: &BTreeMap<&str, &str>) -> String {
    let mut out = String::from("{");
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(name);
        out.push('=');
        push_quoted(&mut out, value);
    }
    out.push('}');
    out
}

/// What the sink remembers between pushes: the namespace roots each node was given and the
/// newest timestamp sent per stream (so every stream's entries stay in order). Bounded: at
/// most `MAX_ROOTS_PER_NODE + 1` roots and `5 × that` streams per node.
#[derive(Debug, Default)]
pub struct Streams {
    roots: HashMap<String, HashSet<String>>,
    newest: HashMap<String, i64>,
}

/// One push built from a batch.
#[derive(Debug)]
pub struct Push {
    /// The request (for tests and counts).
    pub request: PushRequest,
    /// Entries whose time was raised to keep their stream in order (or that had none).
    pub retimed: u64,
}

impl Streams {
    /// The `namespace` label of `namespace` for `node`.
    fn root<'a>(&mut self, node: &str, namespace: &'a str) -> &'a str {
        let root = namespace.split('.').next().unwrap_or_default();
        let plain = !root.is_empty()
            && root.len() <= MAX_ROOT_LEN
            && root
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !plain {
            return "other";
        }
        let seen = self.roots.entry(node.to_string()).or_default();
        if seen.contains(root) {
            return root;
        }
        if seen.len() >= MAX_ROOTS_PER_NODE {
            return "other";
        }
        seen.insert(root.to_string());
        root
    }

    /// The push of `batch`: each line one entry of its node's stream for its level and
    /// namespace root, streams in first-seen order, entries in file order with times never
    /// going back within a stream (a line without a readable time, or older than its
    /// stream's newest entry, gets that newest time; the line keeps its own `at`).
    pub fn build(&mut self, batch: &Batch, static_labels: &BTreeMap<String, String>) -> Push {
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut request = PushRequest::default();
        let mut retimed = 0;
        for chunk in &batch.chunks {
            for line in &chunk.lines {
                let text = chunk.text(line);
                let record = Record::parse(&text);
                let level = level_of(&record.severity);
                let root = self.root(&chunk.node, &record.namespace);
                let mut labels: BTreeMap<&str, &str> = static_labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                labels.insert("node", &chunk.node);
                labels.insert("level", level);
                labels.insert("namespace", root);
                let key = labels_text(&labels);
                let own = record.unix_nanos();
                let newest = self.newest.get(&key).copied();
                let fallback =
                    newest.unwrap_or(line.after.file.stamp.saturating_mul(1_000_000_000));
                let nanos = match (record.secs, newest) {
                    (0, _) => fallback,
                    (_, Some(n)) if own < n => n,
                    _ => own,
                };
                if nanos != own {
                    retimed += 1;
                }
                self.newest.insert(key.clone(), nanos);
                let i = *index.entry(key.clone()).or_insert_with(|| {
                    request.streams.push(StreamAdapter {
                        labels: key,
                        entries: Vec::new(),
                    });
                    request.streams.len() - 1
                });
                request.streams[i].entries.push(EntryAdapter {
                    timestamp: Some(Timestamp {
                        seconds: nanos.div_euclid(1_000_000_000),
                        nanos: nanos.rem_euclid(1_000_000_000) as i32,
                    }),
                    line: text.into_owned(),
                });
            }
        }
        Push { request, retimed }
    }
}

/// The request body: `request` encoded and Snappy-compressed (block format).
pub fn encode(request: &PushRequest) -> Vec<u8> {
    let raw = prost::Message::encode_to_vec(request);
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("snappy compresses any input below 4 GiB")
}

/// What to do after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: stored.
    Sent,
    /// 400: Loki refused entries (too far behind, too long, bad labels) and stored the
    /// others; sending again would not change that. Counted and dropped.
    Refused,
    /// Anything else (429, 5xx, 401/403/404 of a gateway being fixed, ...): send the same
    /// push again after a backoff. Nothing is lost meanwhile: the lines stay in the files.
    Retry,
}

/// Loki's retry rule (as Promtail's for 429 and 5xx); other statuses are retried too, so a
/// misconfigured gateway delays lines instead of losing them.
pub fn outcome(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Sent,
        400 => Outcome::Refused,
        _ => Outcome::Retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::rotation::FileKey;
    use crate::ship::cursor::Pos;
    use crate::ship::follow::{Chunk, Line};

    fn chunk(node: &str, lines: &[&str]) -> Chunk {
        let mut c = Chunk {
            node: node.to_string(),
            ..Chunk::default()
        };
        for l in lines {
            let start = c.buf.len();
            c.buf.extend_from_slice(l.as_bytes());
            c.lines.push(Line {
                start,
                end: c.buf.len(),
                after: Pos {
                    file: FileKey {
                        stamp: 1_784_714_000,
                        counter: 0,
                        legacy: false,
                    },
                    offset: c.buf.len() as u64,
                },
            });
        }
        c
    }

    fn line(at: &str, ns: &str, sev: &str) -> String {
        format!(r#"{{"at":"{at}","ns":"{ns}","data":{{}},"sev":"{sev}","thread":"1","host":"h"}}"#)
    }

    #[test]
    fn streams_by_node_level_and_root_in_order_and_decodable() {
        let a = line("2026-07-22T10:15:31.000000001Z", "ChainDB.AddBlock", "Info");
        let b = line("2026-07-22T10:15:31.000000002Z", "ChainDB.Open", "Notice");
        let c = line("2026-07-22T10:15:31.000000003Z", "Net.Peers", "Error");
        // Older than `a`: raised to keep the stream in order.
        let d = line("2026-07-22T10:15:30Z", "ChainDB.X", "Info");
        let batch = Batch {
            chunks: vec![
                chunk("relay-\"1\"", &[&a, &b, &c, &d, "not json"]),
                chunk("bp", &[&a]),
            ],
        };
        let mut streams = Streams::default();
        let labels = [("tracer".to_string(), "site-a".to_string())].into();
        let push = streams.build(&batch, &labels);
        let body = encode(&push.request);
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let req: PushRequest = prost::Message::decode(raw.as_slice()).unwrap();
        let got: Vec<(&str, Vec<i64>)> = req
            .streams
            .iter()
            .map(|s| {
                let ts = s
                    .entries
                    .iter()
                    .map(|e| {
                        let t = e.timestamp.as_ref().unwrap();
                        t.seconds * 1_000_000_000 + i64::from(t.nanos)
                    })
                    .collect();
                (s.labels.as_str(), ts)
            })
            .collect();
        let t = 1_784_715_331_000_000_000;
        assert_eq!(
            got,
            vec![
                (
                    r#"{level="info", namespace="ChainDB", node="relay-\"1\"", tracer="site-a"}"#,
                    vec![t + 1, t + 2, t + 2]
                ),
                (
                    r#"{level="error", namespace="Net", node="relay-\"1\"", tracer="site-a"}"#,
                    vec![t + 3]
                ),
                (
                    r#"{level="unknown", namespace="other", node="relay-\"1\"", tracer="site-a"}"#,
                    vec![1_784_714_000_000_000_000]
                ),
                (
                    r#"{level="info", namespace="ChainDB", node="bp", tracer="site-a"}"#,
                    vec![t + 1]
                ),
            ]
        );
        assert_eq!(push.retimed, 2);
        assert_eq!(req.streams[0].entries[2].line, d);
        // The next push of a stream never goes back either.
        let e = line("2026-07-22T10:15:29Z", "ChainDB.Y", "Info");
        let push = streams.build(
            &Batch {
                chunks: vec![chunk("bp", &[&e])],
            },
            &labels,
        );
        assert_eq!(
            push.request.streams[0].entries[0].timestamp,
            Some(Timestamp {
                seconds: 1_784_715_331,
                nanos: 1
            })
        );
    }

    #[test]
    fn namespace_roots_per_node_are_bounded() {
        let mut s = Streams::default();
        for i in 0..MAX_ROOTS_PER_NODE {
            assert_eq!(s.root("n", &format!("R{i}.x")), format!("R{i}"));
        }
        assert_eq!(s.root("n", "Fresh.x"), "other");
        assert_eq!(s.root("n", "R3.y"), "R3");
        assert_eq!(s.root("m", "Fresh.x"), "Fresh");
        assert_eq!(s.root("m", "bad root.x"), "other");
        assert_eq!(s.root("m", &"L".repeat(65)), "other");
        assert_eq!(s.root("m", ""), "other");
    }

    #[test]
    fn levels_and_retry_rules() {
        assert_eq!(level_of("Notice"), "info");
        assert_eq!(level_of("Emergency"), "critical");
        assert_eq!(level_of("?"), "unknown");
        assert_eq!(outcome(204), Outcome::Sent);
        assert_eq!(outcome(400), Outcome::Refused);
        for s in [429, 500, 503, 401, 404, 413] {
            assert_eq!(outcome(s), Outcome::Retry, "{s}");
        }
    }
}
