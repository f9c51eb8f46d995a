//! One machine-format log line read back as the fields a sink ships: the time (seconds and
//! nanoseconds, from `at`), namespace, severity, host, thread and `data`, and its text form
//! ([`Record::human`], the `ForHuman` renderer's line). Pure.
//!
//! tracerd writes `{"at":..,"ns":..,"data":..,"sev":..,"thread":..,"host":..}`; a node that sent
//! its own machine line (`MachineForm::Line`) may use other keys, so every field is optional
//! and a line that is not a JSON object still ships, with empty fields and time 0.

use serde::Deserialize;
use std::borrow::Cow;

use crate::utc::parse_rfc3339;

/// The fields of one line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// Unix seconds of `at` (0 when absent or unreadable).
    pub secs: i64,
    /// Nanoseconds within that second.
    pub nanos: u32,
    /// `ns`: the trace's namespace.
    pub namespace: Cow<'a, str>,
    /// `sev`: its severity.
    pub severity: Cow<'a, str>,
    /// `host`.
    pub host: Cow<'a, str>,
    /// `thread`.
    pub thread: Cow<'a, str>,
    /// `data`, as its JSON text.
    pub data: Option<&'a str>,
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    at: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    ns: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    sev: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    host: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    thread: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a serde_json::value::RawValue>,
}

impl<'a> Record<'a> {
    /// Reads `line` (without its `\n`).
    pub fn parse(line: &'a str) -> Record<'a> {
        let Ok(f) = serde_json::from_str::<Fields<'a>>(line) else {
            return Record::default();
        };
        let (secs, nanos) = f.at.as_deref().and_then(parse_rfc3339).unwrap_or((0, 0));
        Record {
            secs,
            nanos,
            namespace: f.ns.unwrap_or_default(),
            severity: f.sev.unwrap_or_default(),
            host: f.host.unwrap_or_default(),
            thread: f.thread.unwrap_or_default(),
            data: f.data.map(serde_json::value::RawValue::get),
        }
    }

    /// The line's text form, as the `ForHuman` log format writes it
    /// (`[at] [sev] [host] [ns] text`, `logs::format::push_human`), rendered from the machine
    /// line: the machine files keep no human text, so `text` is the machine `data` (the
    /// node's text itself when it was not JSON, kept by `push_machine` as a JSON string).
    /// Empty for a line without a time or a known severity (not in tracerd's shape).
    pub fn human(&self) -> String {
        let Some(severity) = crate::model::Severity::parse(&self.severity) else {
            return String::new();
        };
        if self.secs == 0 && self.nanos == 0 {
            return String::new();
        }
        let data = self.data.unwrap_or_default();
        let machine = match serde_json::from_str::<Cow<'_, str>>(data) {
            Ok(text) if data.starts_with('"') => text.into_owned(),
            _ => data.to_string(),
        };
        let obj = crate::model::TraceObject {
            namespace: self.namespace.as_ref().into(),
            severity,
            detail: crate::model::DetailLevel::Normal,
            timestamp_ns: self.unix_nanos(),
            hostname: self.host.as_ref().into(),
            thread_id: self.thread.as_ref().into(),
            machine: machine.into(),
            human: None,
            form: Default::default(),
        };
        let mut out = Vec::new();
        crate::logs::format::push_human(&mut out, &obj);
        if out.last() == Some(&b'\n') {
            out.pop();
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// Nanoseconds since the Unix epoch.
    pub fn unix_nanos(&self) -> i64 {
        self.secs
            .saturating_mul(1_000_000_000)
            .saturating_add(i64::from(self.nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DetailLevel, Severity, TraceObject};

    #[test]
    fn reads_back_what_the_machine_renderer_writes() {
        let obj = TraceObject {
            namespace: "ChainDB.AddBlock\"x".into(),
            severity: Severity::Warning,
            detail: DetailLevel::Normal,
            timestamp_ns: 1_784_714_812_123_456_789,
            hostname: "h\nost".into(),
            thread_id: "42".into(),
            machine: "{\"a\":1}".into(),
            human: None,
            form: Default::default(),
        };
        let mut line = Vec::new();
        crate::logs::format::push_machine(&mut line, &obj);
        let text = std::str::from_utf8(&line).unwrap().trim_end();
        let r = Record::parse(text);
        assert_eq!(r.unix_nanos(), obj.timestamp_ns);
        assert_eq!(r.namespace, obj.namespace);
        assert_eq!(r.severity, "Warning");
        assert_eq!(r.host, obj.hostname);
        assert_eq!(r.thread, "42");
        assert_eq!(
            r.human(),
            "[2026-07-22T10:06:52.123456789Z] [Warning] [h\\nost] [ChainDB.AddBlock\"x] {\"a\":1}"
        );
        // A node's text that was not JSON comes back as itself (escaped as the text log does).
        let obj = TraceObject {
            machine: "plain\ntext".into(),
            ..obj
        };
        let mut line = Vec::new();
        crate::logs::format::push_machine(&mut line, &obj);
        let text = std::str::from_utf8(&line).unwrap().trim_end();
        let mut human = Vec::new();
        crate::logs::format::push_human(&mut human, &TraceObject { human: None, ..obj });
        assert_eq!(
            Record::parse(text).human(),
            std::str::from_utf8(&human).unwrap().trim_end()
        );
        assert!(Record::parse(text).human().ends_with("plain\\ntext"));
        assert_eq!(Record::parse("not json").human(), "");
    }

    #[test]
    fn odd_lines_ship_with_empty_fields() {
        assert_eq!(Record::parse("not json"), Record::default());
        assert_eq!(Record::parse("[1,2]"), Record::default());
        let r = Record::parse(r#"{"at":"yesterday","ns":"A"}"#);
        assert_eq!((r.secs, r.namespace.as_ref()), (0, "A"));
        assert_eq!(
            parse_rfc3339("2026-07-22T10:15:31Z"),
            Some((1_784_715_331, 0))
        );
        assert_eq!(
            parse_rfc3339("2026-07-22T10:15:31.5Z"),
            Some((1_784_715_331, 500_000_000))
        );
        assert_eq!(parse_rfc3339("2026-07-22T10:15:31.Z"), None);
        assert_eq!(parse_rfc3339("2026-13-22T10:15:31Z"), None);
    }
}
