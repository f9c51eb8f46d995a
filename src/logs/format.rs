//! Rendering trace objects as log lines: machine (one JSON object per line, cardano-tracer's
//! `ForMachine` shape) and human (one line of text with a bracketed prefix).
//!
//! Every rendered line ends with exactly one `\n` and contains no other line break, whatever
//! the node sent.

use crate::model::{MachineForm, TraceObject};
use crate::utc;

mod json;

/// Appends the machine line of `obj`: `{"at":..,"ns":..,"data":..,"sev":..,"thread":..,"host":..}`,
/// or, for a [`MachineForm::Line`] object, the node's own line as is.
///
/// `data` is the node's machine text when that is one line of valid JSON; multi-line JSON is
/// re-serialised compactly; text that is not JSON is embedded as a JSON string. Returns false
/// in that last case, so the caller can count it.
pub fn push_machine(out: &mut Vec<u8>, obj: &TraceObject) -> bool {
    if obj.form == MachineForm::Line {
        let line = obj.machine.trim();
        if line.starts_with('{')
            && !line.bytes().any(|b| b == b'\n' || b == b'\r')
            && json::is_valid(line.as_bytes())
        {
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
            return true;
        }
    }
    out.extend_from_slice(b"{\"at\":\"");
    utc::push_rfc3339_nanos_bytes(out, obj.timestamp_ns);
    out.extend_from_slice(b"\",\"ns\":");
    push_json_str(out, &obj.namespace);
    out.extend_from_slice(b",\"data\":");
    let valid = push_json_value(out, &obj.machine);
    out.extend_from_slice(b",\"sev\":\"");
    out.extend_from_slice(obj.severity.as_str().as_bytes());
    out.extend_from_slice(b"\",\"thread\":");
    push_json_str(out, &obj.thread_id);
    out.extend_from_slice(b",\"host\":");
    push_json_str(out, &obj.hostname);
    out.extend_from_slice(b"}\n");
    valid
}

/// Appends the human line of `obj`:
/// `[2026-07-22T10:15:31.123456789Z] [Notice] [relay1] [ChainDB.AddBlockEvent] text`.
///
/// The text is the human rendering, or the machine text when there is none. Line breaks in it
/// are written as the two characters `\n` (and `\r`), so one trace is always one line.
pub fn push_human(out: &mut Vec<u8>, obj: &TraceObject) {
    out.push(b'[');
    utc::push_rfc3339_nanos_bytes(out, obj.timestamp_ns);
    out.extend_from_slice(b"] [");
    out.extend_from_slice(obj.severity.as_str().as_bytes());
    out.extend_from_slice(b"] [");
    push_one_line(out, &obj.hostname);
    out.extend_from_slice(b"] [");
    push_one_line(out, &obj.namespace);
    out.extend_from_slice(b"] ");
    push_one_line(out, obj.human.as_deref().unwrap_or(&obj.machine));
    out.push(b'\n');
}

fn push_one_line(out: &mut Vec<u8>, text: &str) {
    if !text.bytes().any(|b| b == b'\n' || b == b'\r') {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    for b in text.bytes() {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

fn push_json_str(out: &mut Vec<u8>, text: &str) {
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

fn push_json_value(out: &mut Vec<u8>, text: &str) -> bool {
    let trimmed = text.trim();
    if json::is_valid(trimmed.as_bytes()) {
        if trimmed.bytes().any(|b| b == b'\n' || b == b'\r') {
            // Valid JSON can hold raw line breaks only as whitespace between tokens.
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(trimmed) {
                let _ = serde_json::to_writer(&mut *out, &value);
                return true;
            }
        }
        out.extend_from_slice(trimmed.as_bytes());
        true
    } else {
        push_json_str(out, text);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DetailLevel, Severity};
    use proptest::prelude::*;

    fn obj(machine: &str, human: Option<&str>) -> TraceObject {
        TraceObject {
            namespace: "ChainDB.AddBlockEvent".into(),
            severity: Severity::Notice,
            detail: DetailLevel::Normal,
            timestamp_ns: 1_784_714_812_123_456_789,
            hostname: "relay1".into(),
            thread_id: "42".into(),
            machine: machine.into(),
            human: human.map(str::to_string),
            form: Default::default(),
        }
    }

    fn machine(o: &TraceObject) -> String {
        let mut out = Vec::new();
        push_machine(&mut out, o);
        String::from_utf8(out).unwrap()
    }

    fn human(o: &TraceObject) -> String {
        let mut out = Vec::new();
        push_human(&mut out, o);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn machine_line_has_cardano_keys_in_order() {
        assert_eq!(
            machine(&obj(r#"{"kind":"AddedToCurrentChain"}"#, None)),
            "{\"at\":\"2026-07-22T10:06:52.123456789Z\",\"ns\":\"ChainDB.AddBlockEvent\",\"data\":{\"kind\":\"AddedToCurrentChain\"},\"sev\":\"Notice\",\"thread\":\"42\",\"host\":\"relay1\"}\n"
        );
    }

    #[test]
    fn cardano_lines_are_written_as_is_unless_broken() {
        let line = r#"{"at":"2026-07-22T10:15:31.123456Z","ns":"A","data":{},"sev":"Info","thread":"1","host":"h"}"#;
        let mut o = obj(line, None);
        o.form = MachineForm::Line;
        assert_eq!(machine(&o), format!("{line}\n"));
        o.machine = "{\"broken\": ".into();
        assert!(machine(&o).starts_with("{\"at\":\"2026-07-22T10:06:52.123456789Z\""));
    }

    #[test]
    fn machine_line_survives_bad_json_and_line_breaks() {
        let line = machine(&obj("not json\n{", None));
        assert!(line.contains(r#""data":"not json\n{""#), "{line}");
        let line = machine(&obj("{\n  \"a\": 1\n}", None));
        assert!(line.contains(r#""data":{"a":1}"#), "{line}");
        assert_eq!(line.matches('\n').count(), 1);
    }

    #[test]
    fn human_line_has_prefix_and_falls_back_to_machine() {
        assert_eq!(
            human(&obj("{}", Some("Chain extended\nby one block"))),
            "[2026-07-22T10:06:52.123456789Z] [Notice] [relay1] [ChainDB.AddBlockEvent] Chain extended\\nby one block\n"
        );
        assert!(human(&obj(r#"{"kind":"X"}"#, None)).ends_with("] {\"kind\":\"X\"}\n"));
    }

    proptest! {
        #[test]
        fn every_rendering_is_exactly_one_json_line(ns in any::<String>(), m in any::<String>(), h in proptest::option::of(any::<String>()), host in any::<String>()) {
            let mut o = obj(&m, h.as_deref());
            o.namespace = ns;
            o.hostname = host;
            let line = machine(&o);
            prop_assert!(line.ends_with('\n'));
            prop_assert_eq!(line.matches('\n').count(), 1);
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            prop_assert_eq!(v["ns"].as_str().unwrap(), o.namespace.as_str());
            let text = human(&o);
            prop_assert!(text.ends_with('\n'));
            prop_assert_eq!(text.matches('\n').count(), 1);
            prop_assert!(!text.contains('\r'));
        }
    }
}
