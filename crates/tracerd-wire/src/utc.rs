//! UTC calendar arithmetic for file names and log timestamps, without a clock and without a
//! date crate: days-from-civil and civil-from-days (Howard Hinnant's algorithms).

/// A broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DateTime {
    /// Year, e.g. 2026.
    pub year: i64,
    /// Month, 1..=12.
    pub month: u32,
    /// Day of month, 1..=31.
    pub day: u32,
    /// Hour, 0..=23.
    pub hour: u32,
    /// Minute, 0..=59.
    pub minute: u32,
    /// Second, 0..=59.
    pub second: u32,
}

impl DateTime {
    /// The UTC time `secs` seconds after the Unix epoch.
    pub fn from_unix(secs: i64) -> DateTime {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        DateTime {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
        }
    }

    /// Seconds since the Unix epoch.
    pub fn to_unix(self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH-MM-SS`, cardano-tracer's file-name timestamp.
pub fn file_stamp(secs: i64) -> String {
    let t = DateTime::from_unix(secs);
    format!(
        "{:04}-{:02}-{:02}T{:02}-{:02}-{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// Parses [`file_stamp`]'s output back to Unix seconds.
pub fn parse_file_stamp(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b'-'
        || b[16] != b'-'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = text.get(r)?;
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    let t = DateTime {
        year: i64::from(num(0..4)?),
        month: num(5..7)?,
        day: num(8..10)?,
        hour: num(11..13)?,
        minute: num(14..16)?,
        second: num(17..19)?,
    };
    let valid = (1..=12).contains(&t.month)
        && (1..=31).contains(&t.day)
        && t.hour < 24
        && t.minute < 60
        && t.second < 60;
    valid
        .then(|| t.to_unix())
        .filter(|&s| DateTime::from_unix(s) == t)
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z` (what [`push_rfc3339_nanos`] writes) as Unix seconds and nanoseconds.
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

/// Appends `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (RFC 3339, nanoseconds) for `ns` since the epoch.
pub fn push_rfc3339_nanos(out: &mut String, ns: i64) {
    let mut bytes = [0u8; RFC3339_NANOS_LEN];
    let len = write_rfc3339_nanos(&mut bytes, ns);
    // Only ASCII digits and punctuation are written.
    out.push_str(std::str::from_utf8(&bytes[..len]).unwrap_or_default());
}

/// Appends the same as [`push_rfc3339_nanos`] to a byte buffer, without formatting machinery
/// (this runs once per trace object on the hot path).
pub fn push_rfc3339_nanos_bytes(out: &mut Vec<u8>, ns: i64) {
    let mut bytes = [0u8; RFC3339_NANOS_LEN];
    let len = write_rfc3339_nanos(&mut bytes, ns);
    out.extend_from_slice(&bytes[..len]);
}

/// Length of an RFC 3339 nanosecond timestamp with a 4-digit year.
const RFC3339_NANOS_LEN: usize = 30;

/// Writes the timestamp into `buf`; returns its length (30, or less for years past 9999,
/// which are clamped to 9999: such timestamps are not real).
fn write_rfc3339_nanos(buf: &mut [u8; RFC3339_NANOS_LEN], ns: i64) -> usize {
    let secs = ns.div_euclid(1_000_000_000);
    let frac = ns.rem_euclid(1_000_000_000) as u32;
    let t = DateTime::from_unix(secs);
    let year = t.year.clamp(0, 9999) as u32;
    let mut put = |at: usize, value: u32, digits: usize| {
        let mut v = value;
        for i in (0..digits).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year, 4);
    put(5, t.month, 2);
    put(8, t.day, 2);
    put(11, t.hour, 2);
    put(14, t.minute, 2);
    put(17, t.second, 2);
    put(20, frac, 9);
    buf[4] = b'-';
    buf[7] = b'-';
    buf[10] = b'T';
    buf[13] = b':';
    buf[16] = b':';
    buf[19] = b'.';
    buf[29] = b'Z';
    RFC3339_NANOS_LEN
}

/// Seconds since the Unix epoch, now (the only clock read in this module's users' cores is at
/// their I/O shells).
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_dates() {
        assert_eq!(file_stamp(0), "1970-01-01T00-00-00");
        assert_eq!(file_stamp(1_784_714_812), "2026-07-22T10-06-52");
        assert_eq!(file_stamp(951_782_400), "2000-02-29T00-00-00");
        let mut s = String::new();
        push_rfc3339_nanos(&mut s, 1_784_714_812_000_000_042);
        assert_eq!(s, "2026-07-22T10:06:52.000000042Z");
    }

    #[test]
    fn rejects_bad_stamps() {
        for bad in [
            "",
            "2026-07-22T10-06-5",
            "2026-13-22T10-06-52",
            "2026-02-30T10-06-52",
            "2026-07-22 10-06-52",
            "+026-07-22T10-06-52",
        ] {
            assert_eq!(parse_file_stamp(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn fast_timestamp_matches_the_formatter(ns in -2_000_000_000_000_000_000i64..i64::MAX) {
            let secs = ns.div_euclid(1_000_000_000);
            let t = DateTime::from_unix(secs);
            let expected = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
                t.year, t.month, t.day, t.hour, t.minute, t.second, ns.rem_euclid(1_000_000_000)
            );
            let mut bytes = Vec::new();
            push_rfc3339_nanos_bytes(&mut bytes, ns);
            prop_assert_eq!(String::from_utf8(bytes).unwrap(), expected);
        }

        #[test]
        fn stamp_round_trips(secs in 0i64..253_402_300_799) {
            prop_assert_eq!(parse_file_stamp(&file_stamp(secs)), Some(secs));
        }

        #[test]
        fn stamps_sort_like_times(a in 0i64..253_402_300_799, b in 0i64..253_402_300_799) {
            prop_assert_eq!(file_stamp(a).cmp(&file_stamp(b)), a.cmp(&b));
        }
    }
}
