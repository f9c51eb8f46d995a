//! Fuzz target: whatever a node sends as namespace, host, thread, machine text and human text,
//! each renderer writes exactly one line (one `\n`, at the end, no `\r`), the machine line is
//! one JSON object serde_json accepts, and no C0/C1 control or U+2028/U+2029 reaches either
//! line raw (issue 12, points 2 and 3).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracerd::logs::format::{push_human, push_machine};
use tracerd::model::{DetailLevel, MachineForm, Severity, TraceObject};

fn raw_control(c: char) -> bool {
    (c.is_control() && c != '\n') || c == '\u{2028}' || c == '\u{2029}'
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let mut parts = rest.split(|b| *b == 0xff).map(|p| String::from_utf8_lossy(p).into_owned());
    let mut next = || tracerd::model::Text::from(parts.next().unwrap_or_default());
    let obj = TraceObject {
        namespace: next(),
        severity: Severity::Notice,
        detail: DetailLevel::Normal,
        timestamp_ns: i64::from_le_bytes([flags; 8]),
        hostname: next(),
        thread_id: next(),
        machine: next(),
        form: if flags & 1 == 0 { MachineForm::Payload } else { MachineForm::Line },
        human: if flags & 2 == 0 { None } else { Some(next()) },
    };

    let mut machine = Vec::new();
    push_machine(&mut machine, &obj);
    let mut human = Vec::new();
    push_human(&mut human, &obj);
    for line in [&machine, &human] {
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1, "{line:?}");
        assert!(!line.contains(&b'\r'));
        let text = std::str::from_utf8(line).expect("lines are UTF-8");
        assert!(!text.chars().any(raw_control), "raw control character in {text:?}");
    }
    // serde_json with its recursion limit off: a node's deeply nested JSON is still JSON.
    let mut de = serde_json::Deserializer::from_slice(&machine);
    de.disable_recursion_limit();
    match <serde_json::Value as serde::Deserialize>::deserialize(&mut de) {
        Ok(value) => {
            de.end().expect("one JSON value per line");
            assert!(value.is_object());
        }
        // JSON's grammar has no number range (RFC 8259 §6 leaves it to implementations);
        // serde_json refuses numbers beyond f64, as jq and Python accept them.
        Err(e) if e.to_string().starts_with("number out of range") => {}
        Err(e) => panic!("the machine line is not JSON: {e}"),
    }
});
