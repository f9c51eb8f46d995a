//! Rendering trace objects as log lines: machine (one JSON object per line, cardano-tracer's
//! `ForMachine` shape) and human (one line of text with a bracketed prefix).
//!
//! Every rendered line ends with exactly one `\n` and contains no other line break, whatever
//! the node sent.

use crate::model::{MachineForm, TraceObject};

mod json;
mod stamp;

/// Whether `bytes` is exactly one JSON value (strict RFC 8259, no nesting limit, no
/// allocation per level).
pub fn is_valid_json(bytes: &[u8]) -> bool {
    json::is_valid(bytes)
}

/// Appends the machine line of `obj`: `{"at":..,"ns":..,"data":..,"sev":..,"thread":..,"host":..}`,
/// or, for a [`MachineForm::Line`] object, the node's own line (re-encoded as below).
///
/// `data` is the node's machine text when that is valid JSON, re-encoded in one pass without
/// any nesting limit ([`push_if_json`]): line breaks and tabs between tokens are dropped and
/// every control character or line separator inside a string becomes a JSON escape, so the
/// value is unchanged and the line holds no raw control character. Text that is not JSON is
/// embedded as a JSON string. Returns false in that last case, so the caller can count it.
pub fn push_machine(out: &mut Vec<u8>, obj: &TraceObject) -> bool {
    if obj.form == MachineForm::Line {
        let line = obj.machine.trim();
        if line.starts_with('{') && push_if_json(out, line) {
            out.push(b'\n');
            return true;
        }
    }
    out.extend_from_slice(b"{\"at\":\"");
    stamp::push_nanos(out, obj.timestamp_ns);
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
/// The text is the human rendering, or the machine text when there is none. Every control
/// character (C0, DEL, C1) and the Unicode line and paragraph separators, in the text, the
/// hostname and the namespace, are written as visible escapes (`\n`, `\r`, `\t`, `\u001b`,
/// `\u0085`, `\u2028`, ...), so one trace is always one line and a node cannot move the
/// cursor or paint over an operator's terminal.
pub fn push_human(out: &mut Vec<u8>, obj: &TraceObject) {
    out.push(b'[');
    stamp::push_nanos(out, obj.timestamp_ns);
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

/// Whether `c` must never reach a log line raw: C0 controls, DEL, C1 controls (NEL among
/// them) and U+2028/U+2029, which some terminals and editors treat as line breaks.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// Appends `\uXXXX` for a BMP character.
fn push_u_escape(out: &mut Vec<u8>, c: char) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = c as u32;
    debug_assert!(n <= 0xFFFF);
    out.extend_from_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[((n >> shift) & 0xF) as usize]);
    }
}

/// Appends `text` with every unsafe character (see [`is_unsafe_char`]) as a visible escape.
fn push_one_line(out: &mut Vec<u8>, text: &str) {
    if !text.chars().any(is_unsafe_char) {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    for c in text.chars() {
        match c {
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if is_unsafe_char(c) => push_u_escape(out, c),
            c => {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

/// Appends `text` as a JSON string, escaping `"`, `\\` and every unsafe character (serde_json
/// leaves C1 controls, DEL and U+2028/U+2029 raw).
fn push_json_str(out: &mut Vec<u8>, text: &str) {
    if is_plain(text.as_bytes()) {
        // Printable ASCII without `"` or `\\`: the common case of a namespace, host name or
        // thread id, copied as is.
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
        return;
    }
    push_json_str_escaped(out, text);
}

/// Whether every byte of `bytes` is printable ASCII other than `"` and `\\` (what a JSON
/// string holds unescaped): exactly the bytes the JSON scan's string runs skip, 8 at a time.
#[inline]
fn is_plain(bytes: &[u8]) -> bool {
    json::string_stop(bytes, 0).is_none()
}

/// [`push_json_str`] for text that [`is_plain`] did not pass: one character at a time.
fn push_json_str_escaped(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let mut from = 0;
    for (i, c) in text.char_indices() {
        let escape: &[u8] = match c {
            '"' => b"\\\"",
            '\\' => b"\\\\",
            '\n' => b"\\n",
            '\r' => b"\\r",
            '\t' => b"\\t",
            '\u{8}' => b"\\b",
            '\u{c}' => b"\\f",
            c if is_unsafe_char(c) => b"",
            _ => continue,
        };
        out.extend_from_slice(&text.as_bytes()[from..i]);
        if escape.is_empty() {
            push_u_escape(out, c);
        } else {
            out.extend_from_slice(escape);
        }
        from = i + c.len_utf8();
    }
    out.extend_from_slice(&text.as_bytes()[from..]);
    out.push(b'"');
}

/// Appends `text` if it is one JSON value, and returns whether it was (appends nothing
/// otherwise), cleaned without any nesting limit: a whitespace run between tokens that holds
/// a line break or tab is dropped (runs of plain spaces are kept), and an unsafe character
/// inside a string (valid JSON has them raw only there: C1, DEL, U+2028/U+2029) becomes
/// `\uXXXX`. The value is the same; the output holds no raw control character.
///
/// One pass ([`json::scan`]) checks the text and finds whether anything needs cleaning; the
/// common case of a node's compact machine text is then copied as it is, the rest re-encoded
/// by [`reencode_json`].
pub(crate) fn push_if_json(out: &mut Vec<u8>, text: &str) -> bool {
    match json::scan(text.as_bytes()) {
        json::Scan::Clean => out.extend_from_slice(text.as_bytes()),
        json::Scan::Dirty => reencode_json(out, text),
        json::Scan::Invalid => return false,
    }
    true
}

/// [`push_if_json`]'s linear pass for valid JSON that [`json::scan`] found dirty.
fn reencode_json(out: &mut Vec<u8>, valid: &str) {
    let bytes = valid.as_bytes();
    let mut in_string = false;
    let mut escaped = false;
    let mut i = 0;
    let mut from = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            if !escaped {
                // Skip the run of plain string bytes in one scan (8 bytes at a time).
                i += json::find_string_stop(&bytes[i..]);
                if i >= bytes.len() {
                    break;
                }
            }
            let b = bytes[i];
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            } else if b == 0x7F || b >= 0xC2 {
                // DEL, or the lead byte of a multi-byte character: C1 (C2 80..9F) and
                // U+2028/9 (E2 80 A8/A9) are the unsafe ones.
                let c = valid[i..].chars().next().unwrap_or(' ');
                if is_unsafe_char(c) {
                    out.extend_from_slice(&bytes[from..i]);
                    push_u_escape(out, c);
                    i += c.len_utf8();
                    from = i;
                    continue;
                }
                i += c.len_utf8();
                continue;
            }
            i += 1;
            continue;
        }
        match b {
            b'"' => in_string = true,
            b' ' | b'\t' | b'\n' | b'\r' => {
                let run = bytes[i..]
                    .iter()
                    .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
                    .count();
                if bytes[i..i + run].iter().any(|b| *b != b' ') {
                    out.extend_from_slice(&bytes[from..i]);
                    from = i + run;
                }
                i += run;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[from..]);
}

fn push_json_value(out: &mut Vec<u8>, text: &str) -> bool {
    if push_if_json(out, text.trim()) {
        true
    } else {
        push_json_str(out, text);
        false
    }
}

#[cfg(test)]
pub(crate) mod tests {
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
            human: human.map(Into::into),
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
        assert!(line.contains(r#""data":{"a": 1}"#), "{line}");
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

    /// The issue's forged-record input: valid JSON nested deeper than serde_json's recursion
    /// limit (128) holding raw newlines around a complete cardano-tracer record.
    pub(crate) fn forged_machine_text() -> String {
        format!(
            "[{}{},\n{{\"at\":\"2026-01-01T00:00:00Z\",\"ns\":\"Forged\",\"data\":{{}},\"sev\":\"Emergency\",\"thread\":\"1\",\"host\":\"victim\"}}\n]",
            "[".repeat(130),
            "]".repeat(130)
        )
    }

    #[test]
    fn deep_json_with_raw_newlines_stays_one_line_and_keeps_its_value() {
        let text = forged_machine_text();
        assert!(json::is_valid(text.as_bytes()));
        for form in [MachineForm::Payload, MachineForm::Line] {
            let mut o = obj(&text, None);
            o.form = form;
            let line = machine(&o);
            assert_eq!(line.matches('\n').count(), 1, "{line}");
            assert!(json::is_valid(line.trim_end().as_bytes()), "{line}");
            // The record is data inside the node's line, never a line of its own.
            assert!(
                line.starts_with("{\"at\":\"2026-07-22T10:06:52.123456789Z\""),
                "{line}"
            );
            assert!(line.contains(",{\"at\":\"2026-01-01T00:00:00Z\",\"ns\":\"Forged\""));
        }
    }

    #[test]
    fn every_control_and_line_separator_is_escaped_in_every_field() {
        let nasty = "a\u{1b}[2Jb\u{8}c\u{0}d\u{b}e\u{c}f\u{85}g\u{2028}h\u{2029}i\u{7f}j\tk\nl\rm";
        let mut o = obj("{\"k\":\"x\u{85}\u{2028}\u{7f}y\"}", Some(nasty));
        o.hostname = nasty.into();
        o.namespace = nasty.into();
        o.thread_id = nasty.into();
        let escaped =
            r"a\u001b[2Jb\u0008c\u0000d\u000be\u000cf\u0085g\u2028h\u2029i\u007fj\tk\nl\rm";
        let text = human(&o);
        assert_eq!(
            text,
            format!(
                "[2026-07-22T10:06:52.123456789Z] [Notice] [{escaped}] [{escaped}] {escaped}\n"
            )
        );
        let line = machine(&o);
        assert!(!line.trim_end().chars().any(is_unsafe_char), "{line:?}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        for key in ["ns", "host", "thread"] {
            assert_eq!(v[key], nasty, "{key}");
        }
        assert_eq!(v["data"]["k"], "x\u{85}\u{2028}\u{7f}y");
        assert!(
            line.contains(r#""data":{"k":"x\u0085\u2028\u007fy"}"#),
            "{line}"
        );
        assert!(
            line.contains(r#""ns":"a\u001b[2Jb\bc\u0000d\u000be\ff\u0085g"#),
            "{line}"
        );
    }

    /// Valid JSON of any depth up to 300 with raw line breaks, tabs and unsafe characters.
    fn deep_json() -> impl Strategy<Value = String> {
        (
            1usize..300,
            any::<String>(),
            "[ \t\r\n]{0,3}",
            any::<bool>(),
        )
            .prop_map(|(depth, s, ws, obj)| {
                let leaf = serde_json::to_string(&s).unwrap();
                // serde_json leaves these raw; a node may too.
                let leaf = leaf.replace("\\u007f", "\u{7f}");
                let (open, close) = if obj { ("{\"k\":", "}") } else { ("[", "]") };
                format!(
                    "{}{ws}{leaf}{ws}{}",
                    format!("{open}{ws}").repeat(depth),
                    format!("{ws}{close}").repeat(depth)
                )
            })
    }

    /// Valid JSON with the characters the clean test looks for, raw or escaped, in strings
    /// and between tokens.
    fn tricky_json() -> impl Strategy<Value = String> {
        let atom = prop_oneof![
            Just("\"a\u{85}b\"".to_string()),
            Just("\"\u{2028}\"".to_string()),
            Just("\"\u{2029}x\"".to_string()),
            Just("\"\u{7f}\"".to_string()),
            Just("\"\u{20ac}\u{e9}\"".to_string()),
            Just("\"\\n\\t\"".to_string()),
            Just("12.5".to_string()),
            Just("null".to_string()),
            any::<String>().prop_map(|s| serde_json::Value::from(s).to_string()),
        ];
        let ws = prop_oneof![Just(""), Just(" "), Just("\n"), Just(" \t "), Just("\r\n")];
        proptest::collection::vec((atom, ws.clone(), ws), 0..40).prop_map(|items| {
            let mut out = String::from("[");
            for (i, (atom, before, after)) in items.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(before);
                out.push_str(&atom);
                out.push_str(after);
            }
            out.push(']');
            out
        })
    }

    #[test]
    fn compact_lines_take_the_fast_path_and_the_rest_do_not() {
        use json::Scan::{Clean, Dirty, Invalid};
        let line = r#"{"at":"2026-07-22T10:15:31.123Z","ns":"A.B","data":{"k":"v w","n":[1,2]},"sev":"Info"}"#;
        let three = format!("[{line}, {line},{line}]");
        assert_eq!(
            json::scan(three.as_bytes()),
            Clean,
            "no byte to drop or escape"
        );
        let long = format!("[{line},{line},\n{line}]");
        assert_eq!(
            json::scan(long.as_bytes()),
            Dirty,
            "a line feed past the first words"
        );
        for ws in ["\t", "\r", "\n", " \r\n "] {
            assert_eq!(json::scan(format!("[1,{ws}2]").as_bytes()), Dirty, "{ws:?}");
            assert_eq!(
                json::scan(format!("{ws}[]{ws}").as_bytes()),
                Dirty,
                "{ws:?}"
            );
            assert_eq!(
                json::scan(format!("[\"{ws}\"]").as_bytes()),
                Invalid,
                "{ws:?}"
            );
        }
        for dirty in [
            "\u{7f}", "\u{80}", "\u{85}", "\u{9f}", "\u{2028}", "\u{2029}",
        ] {
            for text in [
                format!("[\"{dirty}\"]"),
                format!("{{\"a{dirty}\":0}}"),
                format!("[\"{}{dirty}x\"]", "y".repeat(13)),
            ] {
                assert_eq!(json::scan(text.as_bytes()), Dirty, "{text:?}");
            }
        }
        for clean in [
            "\u{a0}",
            "\u{e9}\u{4e2d}",
            "\u{20ac}",
            "\u{2027}\u{202a}",
            "\u{1f600}",
            "\u{c2}\u{e2}",
        ] {
            assert_eq!(
                json::scan(format!("[\"{clean}\"]").as_bytes()),
                Clean,
                "other non-ASCII is kept as is: {clean:?}"
            );
        }
    }

    proptest! {
        /// Clean exactly when the text holds nothing the re-encoding drops or escapes.
        #[test]
        fn scan_calls_clean_what_holds_no_unsafe_character(text in tricky_json()) {
            let expected = if text.chars().any(is_unsafe_char) { json::Scan::Dirty } else { json::Scan::Clean };
            prop_assert_eq!(json::scan(text.as_bytes()), expected, "{:?}", text);
        }
    }

    #[test]
    fn plain_strings_are_printable_ascii_without_quotes_or_backslashes() {
        assert!(is_plain(b"ChainDB.AddBlockEvent.AddedToCurrentChain"));
        assert!(is_plain(b""));
        for special in ["\"", "\\", "\n", "\u{1f}", "\u{7f}", "\u{e9}", "\u{2028}"] {
            for at in [0, 5, 16, 31, 40] {
                let mut text = "a".repeat(40);
                text.insert_str(at, special);
                assert!(!is_plain(text.as_bytes()), "{special:?} at {at}");
            }
        }
    }

    proptest! {
        #[test]
        fn json_str_fast_path_writes_what_the_escaping_pass_writes(text in any::<String>(), plain in "[ -~]{0,40}") {
            for t in [text.as_str(), plain.as_str()] {
                let (mut fast, mut full) = (Vec::new(), Vec::new());
                push_json_str(&mut fast, t);
                push_json_str_escaped(&mut full, t);
                prop_assert_eq!(&fast, &full);
                let back: String = serde_json::from_slice(&fast).unwrap();
                prop_assert_eq!(back.as_str(), t);
            }
        }

        #[test]
        fn clean_json_fast_path_writes_what_the_full_pass_writes(text in tricky_json()) {
            prop_assert!(is_valid_json(text.as_bytes()), "{text:?}");
            let (mut fast, mut full) = (Vec::new(), Vec::new());
            prop_assert!(push_if_json(&mut fast, &text));
            reencode_json(&mut full, &text);
            prop_assert_eq!(String::from_utf8(fast).unwrap(), String::from_utf8(full).unwrap());
        }

        #[test]
        fn any_deep_json_is_one_valid_line_with_the_same_value(text in deep_json()) {
            prop_assert!(json::is_valid(text.as_bytes()), "{}", text);
            let line = machine(&obj(&text, None));
            prop_assert_eq!(line.matches('\n').count(), 1);
            prop_assert!(line.ends_with('\n'));
            prop_assert!(json::is_valid(line.trim_end().as_bytes()));
            prop_assert!(!line.trim_end().chars().any(is_unsafe_char));
            if let (Ok(a), Ok(b)) = (
                serde_json::from_str::<serde_json::Value>(&text),
                serde_json::from_str::<serde_json::Value>(&line),
            ) {
                prop_assert_eq!(&b["data"], &a);
            }
        }

        #[test]
        fn every_rendering_is_exactly_one_json_line(ns in any::<String>(), m in any::<String>(), h in proptest::option::of(any::<String>()), host in any::<String>(), thread in any::<String>(), line_form in any::<bool>()) {
            let mut o = obj(&m, h.as_deref());
            o.namespace = ns.into();
            o.hostname = host.into();
            o.thread_id = thread.into();
            if line_form {
                o.form = MachineForm::Line;
            }
            let line = machine(&o);
            prop_assert!(line.ends_with('\n'));
            prop_assert_eq!(line.matches('\n').count(), 1);
            prop_assert!(!line.trim_end().chars().any(is_unsafe_char));
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if !line_form {
                prop_assert_eq!(v["ns"].as_str().unwrap(), o.namespace.as_str());
                prop_assert_eq!(v["host"].as_str().unwrap(), o.hostname.as_str());
                prop_assert_eq!(v["thread"].as_str().unwrap(), o.thread_id.as_str());
            }
            let text = human(&o);
            prop_assert!(text.ends_with('\n'));
            prop_assert_eq!(text.matches('\n').count(), 1);
            prop_assert!(!text.trim_end().chars().any(is_unsafe_char));
        }
    }
}
