//! One machine-format log line read back as the fields a sink ships: the time (seconds and
//! nanoseconds, from `at`), namespace, severity, host and thread. Pure.
//!
//! tracerd writes `{"at":..,"ns":..,"data":..,"sev":..,"thread":..,"host":..}`; a node that sent
//! its own machine line (`MachineForm::Line`) may use other keys, so every field is optional
//! and a line that is not a JSON object still ships, with empty fields and time 0.

use serde::Deserialize;
use std::borrow::Cow;

use crate::utc::DateTime;

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
        }
    }

    /// Nanoseconds since the Unix epoch.
    pub fn unix_nanos(&self) -> i64 {
        self.secs
            .saturating_mul(1_000_000_000)
            .saturating_add(i64::from(self.nanos))
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z` (what tracerd writes) as Unix seconds and nanoseconds.
pub fn parse_rfc3339(text: &str) -> Option<(i64, u32)> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' || *b.last()? != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let dt = DateTime {
        year: i64::from(num(0..4)?),
        month: num(5..7).filter(|m| (1..=12).contains(m))?,
        day: num(8..10).filter(|d| (1..=31).contains(d))?,
        hour: num(11..13).filter(|h| *h < 24)?,
        minute: num(14..16).filter(|m| *m < 60)?,
        second: num(17..19).filter(|s| *s < 61)?,
    };
    let frac = &text[19..text.len() - 1];
    let nanos = if frac.is_empty() {
        0
    } else {
        let digits = frac.strip_prefix('.')?;
        if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let n: u32 = digits.parse().ok()?;
        n * 10u32.pow(9 - digits.len() as u32)
    };
    Some((dt.to_unix(), nanos))
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
