//! `logMode: JournalMode`: each trace object goes to systemd-journald as one entry, over
//! journald's native datagram protocol, with cardano-tracer's fields: `SYSLOG_IDENTIFIER` (the
//! node's name), `PRIORITY` (from the severity), `MESSAGE` (the machine JSON line or the human
//! text), `NAMESPACE`, `THREAD` and `TIME`.
//!
//! The protocol: one datagram per entry, each field `KEY=value\n`, or, when the value holds a
//! newline, `KEY\n` + the value's length as 64-bit little endian + the value + `\n`. Blocking
//! I/O (a busy journald slows the node's writer, which slows the node: backpressure); callers
//! run it on the blocking pool. An entry too large for one datagram is sent with its
//! `MESSAGE` cut (journald's file-descriptor passing for huge entries is not used).

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use crate::config::LogFormat;
use crate::logs::format;
use crate::model::{Severity, TraceObject};
use crate::utc;

/// Longest `MESSAGE` kept when an entry does not fit in a datagram.
pub const TRUNCATED_MESSAGE_BYTES: usize = 48 * 1024;

/// The journal socket cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// There is no socket at the path (journald not running, or not visible here).
    #[error("JournalMode: no journald socket at {0} (is systemd-journald running?)")]
    Missing(PathBuf),
    /// Connecting or sending failed.
    #[error("JournalMode: cannot send to journald at {path}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Checks at start-up that `path` is a socket tracerd can send to.
pub fn probe(path: &Path) -> Result<(), JournalError> {
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_socket() => {}
        _ => return Err(JournalError::Missing(path.to_path_buf())),
    }
    connect(path).map(|_| ())
}

fn connect(path: &Path) -> Result<UnixDatagram, JournalError> {
    let io_err = |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let socket = UnixDatagram::unbound().map_err(io_err)?;
    socket.connect(path).map_err(io_err)?;
    Ok(socket)
}

/// Sends one node's trace objects to journald, in the formats of its `JournalMode` targets.
///
/// Like the file targets, it is used in two steps: [`NodeJournal::render`] encodes a batch's
/// entries, [`NodeJournal::send_pending`] sends them and, after an error, continues with the
/// first entry not sent, so a retry neither loses nor repeats an entry.
#[derive(Debug)]
pub struct NodeJournal {
    path: PathBuf,
    socket: UnixDatagram,
    identifier: String,
    formats: Vec<LogFormat>,
    /// Encoded entries of the pending batch, back to back.
    entries: Vec<u8>,
    /// End offset of each entry in `entries`.
    ends: Vec<usize>,
    /// Entries of the pending batch already sent.
    done: usize,
    message: Vec<u8>,
}

/// Encoded-entry buffers above this capacity are shrunk after use.
const KEEP_ENTRY_BYTES: usize = 1 << 20;

impl NodeJournal {
    /// Connects to journald at `path` for the node `name`.
    pub fn open(
        path: &Path,
        name: &str,
        formats: Vec<LogFormat>,
    ) -> Result<NodeJournal, JournalError> {
        Ok(NodeJournal {
            path: path.to_path_buf(),
            socket: connect(path)?,
            identifier: name.to_string(),
            formats,
            entries: Vec::new(),
            ends: Vec::new(),
            done: 0,
            message: Vec::with_capacity(512),
        })
    }

    /// Drops the pending entries (sent or not).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.ends.clear();
        self.done = 0;
        if self.entries.capacity() > KEEP_ENTRY_BYTES {
            self.entries.shrink_to(KEEP_ENTRY_BYTES / 4);
            self.ends.shrink_to(KEEP_ENTRY_BYTES / 256);
        }
    }

    /// Encodes the entries of `obj` (one per format) as pending.
    pub fn render(&mut self, obj: &TraceObject) {
        for i in 0..self.formats.len() {
            self.message.clear();
            match self.formats[i] {
                LogFormat::ForMachine => {
                    format::push_machine(&mut self.message, obj);
                    if self.message.last() == Some(&b'\n') {
                        self.message.pop();
                    }
                }
                LogFormat::ForHuman => self
                    .message
                    .extend_from_slice(obj.human.as_deref().unwrap_or(&obj.machine).as_bytes()),
            }
            encode_entry(&mut self.entries, &self.identifier, obj, &self.message);
            self.ends.push(self.entries.len());
        }
    }

    /// Whether some pending entry is not sent yet.
    pub fn has_pending(&self) -> bool {
        self.done < self.ends.len()
    }

    /// Sends the pending entries not sent yet; returns the bytes sent and the entries whose
    /// message had to be cut to fit a datagram. On error, the next call resumes there.
    pub fn send_pending(&mut self) -> Result<(u64, u64), JournalError> {
        let mut bytes = 0;
        let mut cut = 0;
        while self.done < self.ends.len() {
            let start = if self.done == 0 {
                0
            } else {
                self.ends[self.done - 1]
            };
            let entry = &self.entries[start..self.ends[self.done]];
            let sent = match send_entry(&mut self.socket, &self.path, entry) {
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    let short = truncate_entry(entry);
                    cut += 1;
                    send_entry(&mut self.socket, &self.path, &short).map(|()| short.len())
                }
                other => other.map(|()| entry.len()),
            };
            bytes += sent.map_err(|source| JournalError::Io {
                path: self.path.clone(),
                source,
            })? as u64;
            self.done += 1;
        }
        Ok((bytes, cut))
    }
}

/// Sends one entry, reconnecting once if journald was restarted.
fn send_entry(socket: &mut UnixDatagram, path: &Path, entry: &[u8]) -> io::Result<()> {
    match socket.send(entry) {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ECONNREFUSED) | Some(libc::ENOTCONN)
            ) =>
        {
            let fresh = UnixDatagram::unbound()?;
            fresh.connect(path)?;
            *socket = fresh;
            socket.send(entry).map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// The entry with its `MESSAGE` cut to [`TRUNCATED_MESSAGE_BYTES`] and marked.
fn truncate_entry(entry: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(TRUNCATED_MESSAGE_BYTES + 512);
    for (key, mut value) in decode_entry(entry).unwrap_or_default() {
        if key == "MESSAGE" && value.len() > TRUNCATED_MESSAGE_BYTES {
            value.truncate(TRUNCATED_MESSAGE_BYTES);
            value.extend_from_slice(b" [truncated by tracerd]");
        }
        field(&mut out, &key, &value);
    }
    out
}

/// journald's priority for a Cardano severity (syslog levels, Emergency 0 .. Debug 7).
pub fn priority(severity: Severity) -> u8 {
    match severity {
        Severity::Emergency => 0,
        Severity::Alert => 1,
        Severity::Critical => 2,
        Severity::Error => 3,
        Severity::Warning => 4,
        Severity::Notice => 5,
        Severity::Info => 6,
        Severity::Debug => 7,
    }
}

/// Appends one journal entry for `obj` with `message` to `out`.
pub fn encode_entry(out: &mut Vec<u8>, identifier: &str, obj: &TraceObject, message: &[u8]) {
    field(out, "MESSAGE", message);
    field(out, "PRIORITY", &[b'0' + priority(obj.severity)]);
    field(out, "SYSLOG_IDENTIFIER", identifier.as_bytes());
    let namespace = if obj.namespace.is_empty() {
        "noname"
    } else {
        &obj.namespace
    };
    field(out, "NAMESPACE", namespace.as_bytes());
    let thread: String = obj.thread_id.chars().filter(char::is_ascii_digit).collect();
    field(out, "THREAD", thread.as_bytes());
    // cardano-tracer's `%F %T%12QZ`: picoseconds, of which tracerd knows nanoseconds.
    let mut time = String::with_capacity(40);
    utc::push_rfc3339_nanos(&mut time, obj.timestamp_ns);
    let time = time.replacen('T', " ", 1).replacen('Z', "000Z", 1);
    field(out, "TIME", time.as_bytes());
}

fn field(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    out.extend_from_slice(key.as_bytes());
    if value.contains(&b'\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Decodes an entry made by [`encode_entry`] (for tests and tools): fields in order.
pub fn decode_entry(mut data: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let mut fields = Vec::new();
    while !data.is_empty() {
        let end = data.iter().position(|&b| b == b'\n')?;
        let line = &data[..end];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            fields.push((
                String::from_utf8(line[..eq].to_vec()).ok()?,
                line[eq + 1..].to_vec(),
            ));
            data = &data[end + 1..];
        } else {
            let key = String::from_utf8(line.to_vec()).ok()?;
            let rest = &data[end + 1..];
            let len = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?) as usize;
            let value = rest.get(8..8 + len)?.to_vec();
            if rest.get(8 + len) != Some(&b'\n') {
                return None;
            }
            fields.push((key, value));
            data = &rest[9 + len..];
        }
    }
    Some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DetailLevel;

    fn obj(human: Option<&str>) -> TraceObject {
        TraceObject {
            namespace: "ChainDB.AddBlock".into(),
            severity: Severity::Warning,
            detail: DetailLevel::Normal,
            timestamp_ns: 1_784_714_812_123_456_789,
            hostname: "h".into(),
            thread_id: "ThreadId 42".into(),
            machine: "{\"kind\":\"x\"}".into(),
            human: human.map(Into::into),
            form: Default::default(),
        }
    }

    #[test]
    fn entries_carry_cardano_tracers_fields_and_binary_safe_messages() {
        let mut out = Vec::new();
        encode_entry(&mut out, "relay-1", &obj(None), b"line one\nline two");
        let fields = decode_entry(&out).unwrap();
        let get = |k: &str| {
            let v = &fields.iter().find(|(key, _)| key == k).unwrap().1;
            String::from_utf8(v.clone()).unwrap()
        };
        assert_eq!(get("MESSAGE"), "line one\nline two");
        assert_eq!(get("PRIORITY"), "4");
        assert_eq!(get("SYSLOG_IDENTIFIER"), "relay-1");
        assert_eq!(get("NAMESPACE"), "ChainDB.AddBlock");
        assert_eq!(get("THREAD"), "42");
        assert_eq!(get("TIME"), "2026-07-22 10:06:52.123456789000Z");
        assert!(out.starts_with(b"MESSAGE\n"));
    }

    #[test]
    fn sends_one_datagram_per_object_and_format() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("journal.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        probe(&path).unwrap();
        let mut j = NodeJournal::open(&path, "n", vec![LogFormat::ForMachine, LogFormat::ForHuman])
            .unwrap();
        j.render(&obj(Some("added block")));
        assert!(j.has_pending());
        j.send_pending().unwrap();
        assert!(!j.has_pending());
        let mut buf = vec![0u8; 4096];
        let n = rx.recv(&mut buf).unwrap();
        let machine = decode_entry(&buf[..n]).unwrap();
        let message = String::from_utf8(machine[0].1.clone()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&message).unwrap();
        assert_eq!(v["data"]["kind"], "x");
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(decode_entry(&buf[..n]).unwrap()[0].1, b"added block");
        assert!(matches!(
            probe(&tmp.path().join("none")),
            Err(JournalError::Missing(_))
        ));
    }

    #[test]
    fn an_oversized_message_is_cut_to_fit() {
        let mut out = Vec::new();
        let long = vec![b'x'; TRUNCATED_MESSAGE_BYTES * 3];
        encode_entry(&mut out, "n", &obj(None), &long);
        let short = decode_entry(&truncate_entry(&out)).unwrap();
        assert_eq!(short[0].0, "MESSAGE");
        assert!(short[0].1.ends_with(b"[truncated by tracerd]"));
        assert_eq!(short[0].1.len(), TRUNCATED_MESSAGE_BYTES + 23);
        assert_eq!(short.len(), decode_entry(&out).unwrap().len());
    }
}
