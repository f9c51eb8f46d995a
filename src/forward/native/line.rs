//! Pure halves of native forwarding: a machine-format line, read by `ship::record::Record`
//! (the one reader of tracerd's machine lines, the sinks' too), turned back into the trace
//! object it was written from, and the cursor file's text. No I/O.
//!
//! tracerd's machine line is `{"at":..,"ns":..,"data":..,"sev":..,"thread":..,"host":..}`
//! (`logs::format::push_machine`); the object rebuilt from it has the same fields, and its
//! `data` text is taken verbatim, so the downstream renders the very same line. A line of
//! another shape (a Cardano node's own `toMachine` line with other keys, or not JSON) goes
//! whole as the payload of an object with the namespace and time it names, where it does.

use crate::model::{DetailLevel, MachineForm, Severity, Text, TraceObject};
use crate::ship::cursor::Pos;
use crate::ship::record::Record;

/// The namespace of `line` (for the filter) and the object it was written from.
pub fn object_of(line: &str) -> TraceObject {
    let r = Record::parse(line);
    let timestamp_ns = r.unix_nanos();
    let Some(data) = r.data else {
        return foreign(line, &r.namespace, timestamp_ns);
    };
    TraceObject {
        namespace: r.namespace.into(),
        severity: Severity::parse(&r.severity).unwrap_or(Severity::Info),
        detail: DetailLevel::Normal,
        timestamp_ns,
        hostname: r.host.into(),
        thread_id: r.thread.into(),
        machine: data.into(),
        form: MachineForm::Payload,
        human: None,
    }
}

fn foreign(line: &str, namespace: &str, timestamp_ns: i64) -> TraceObject {
    TraceObject {
        namespace: namespace.into(),
        severity: Severity::Info,
        detail: DetailLevel::Normal,
        timestamp_ns,
        hostname: Text::new(),
        thread_id: Text::new(),
        machine: line.into(),
        form: MachineForm::Payload,
        human: None,
    }
}

/// Where forwarding to one downstream stands for one node: every matching line up to `pos`
/// is acknowledged by the downstream, the last of them numbered `seq` (the lines after it are
/// numbered on from there, line by line, so a resent line always carries the same number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    /// The position; `None`: the start of the node's oldest file.
    pub pos: Option<Pos>,
    /// The number of the last matching line before `pos` (0: none).
    pub seq: u64,
}

impl Cursor {
    /// The cursor file's text: `<file name> <offset> <seq>\n`.
    pub fn to_text(&self) -> String {
        match self.pos {
            Some(p) => format!("{} {} {}\n", p.file_name(), p.offset, self.seq),
            None => format!("- 0 {}\n", self.seq),
        }
    }

    /// Reads [`Cursor::to_text`]'s output back; `None` for anything else.
    pub fn from_text(text: &str) -> Option<Cursor> {
        let mut parts = text.strip_suffix('\n')?.split(' ');
        let (file, offset, seq) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let seq = seq.parse().ok()?;
        let offset: u64 = offset.parse().ok()?;
        let pos = match file {
            "-" if offset == 0 => None,
            _ => Some(Pos::parse(file, offset)?),
        };
        Some(Cursor { pos, seq })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::rotation::FileKey;

    #[test]
    fn a_rebuilt_object_renders_the_same_line() {
        let obj = TraceObject {
            namespace: "ChainDB.AddBlock\"x".into(),
            severity: Severity::Warning,
            detail: DetailLevel::Normal,
            timestamp_ns: 1_784_714_812_123_456_789,
            hostname: "h\nost".into(),
            thread_id: "42".into(),
            machine: "{\"a\":[1, 2],\"b\":\"\\u2028\"}".into(),
            human: None,
            form: Default::default(),
        };
        let mut line = Vec::new();
        crate::logs::format::push_machine(&mut line, &obj);
        let text = std::str::from_utf8(&line).unwrap().trim_end();
        let back = object_of(text);
        assert_eq!(back.namespace, obj.namespace);
        assert_eq!(back.timestamp_ns, obj.timestamp_ns);
        assert_eq!(back.severity, obj.severity);
        assert_eq!(back.hostname, obj.hostname);
        let mut again = Vec::new();
        crate::logs::format::push_machine(&mut again, &back);
        assert_eq!(
            String::from_utf8(again).unwrap(),
            String::from_utf8(line).unwrap()
        );
    }

    #[test]
    fn other_lines_go_whole() {
        let o = object_of("not json");
        assert_eq!((o.machine.as_str(), o.namespace.as_str()), ("not json", ""));
        let o = object_of(r#"{"ns":"A.B","at":"2026-07-22T10:15:31Z","x":1}"#);
        assert_eq!(o.namespace, "A.B");
        assert_eq!(o.timestamp_ns, 1_784_715_331_000_000_000);
        assert_eq!(
            o.machine,
            r#"{"ns":"A.B","at":"2026-07-22T10:15:31Z","x":1}"#
        );
    }

    #[test]
    fn cursor_text_round_trips() {
        let c = Cursor {
            pos: Some(Pos {
                file: FileKey {
                    stamp: 1_784_714_812,
                    counter: 2,
                    legacy: false,
                },
                offset: 77,
            }),
            seq: 1234,
        };
        assert_eq!(Cursor::from_text(&c.to_text()), Some(c));
        let none = Cursor { pos: None, seq: 0 };
        assert_eq!(Cursor::from_text(&none.to_text()), Some(none));
        assert_eq!(Cursor::from_text("garbage\n"), None);
        assert_eq!(Cursor::from_text("- 5 1\n"), None);
    }
}
