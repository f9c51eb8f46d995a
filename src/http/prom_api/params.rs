//! Request parameters as Prometheus reads them: the URL query and a form body, times as Unix
//! seconds or RFC 3339, durations as seconds or `1h30m`, selectors for `match[]`.

use percent_encoding::percent_decode_str;
use tracerd_promql::{MatchOp, Matcher, QueryError};

use crate::utc::DateTime;

/// Every `name=value` pair of the form body then the URL query, in order (as Go's
/// `ParseForm` merges them: body values first).
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parse `application/x-www-form-urlencoded` text, appending to what is there.
    pub fn add_form(&mut self, text: &str) -> Result<(), QueryError> {
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            self.0.push((decode(k)?, decode(v)?));
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every pair, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

fn decode(s: &str) -> Result<String, QueryError> {
    let plus = s.replace('+', " ");
    percent_decode_str(&plus)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| QueryError::bad_data(format!("invalid form encoding (not UTF-8): {s:?}")))
}

fn invalid(param: &str, value: &str, what: &str) -> QueryError {
    QueryError::bad_data(format!(
        "invalid parameter {param:?}: cannot parse {value:?} to a valid {what}"
    ))
}

/// A time parameter in ms: Unix seconds with a fraction, or RFC 3339.
pub fn time(param: &str, value: &str) -> Result<i64, QueryError> {
    if let Ok(secs) = value.parse::<f64>() {
        if secs.is_finite() && secs.abs() < 9.2e15 {
            return Ok((secs * 1000.0).round() as i64);
        }
    }
    rfc3339(value).ok_or_else(|| invalid(param, value, "timestamp"))
}

/// `2015-07-01T20:10:51.781Z` or with a `±hh:mm` offset, to ms.
fn rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let dt = DateTime {
        year: i64::from(num(0..4)?),
        month: num(5..7).filter(|m| (1..=12).contains(m))?,
        day: num(8..10).filter(|d| (1..=31).contains(d))?,
        hour: num(11..13).filter(|h| *h < 24)?,
        minute: num(14..16).filter(|m| *m < 60)?,
        second: num(17..19).filter(|s| *s < 61)?,
    };
    let mut i = 19;
    let mut ms = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let frac = s.get(start..i).filter(|f| !f.is_empty())?;
        let padded: String = frac.chars().chain("000".chars()).take(3).collect();
        ms = padded.parse().ok()?;
    }
    let offset = match s.get(i..)? {
        "Z" | "z" => 0,
        rest if rest.len() == 6 && matches!(rest.as_bytes()[0], b'+' | b'-') => {
            let h = i64::from(num(i + 1..i + 3)?);
            let m = i64::from(num(i + 4..i + 6)?);
            if rest.as_bytes()[3] != b':' {
                return None;
            }
            let o = (h * 60 + m) * 60;
            if rest.starts_with('-') {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    Some((dt.to_unix() - offset) * 1000 + ms)
}

/// A duration parameter in ms: seconds with a fraction, or Prometheus's `1h30m`, `15s`, `500ms`.
pub fn duration(param: &str, value: &str) -> Result<i64, QueryError> {
    if let Ok(secs) = value.parse::<f64>() {
        if secs.is_finite() && secs.abs() < 9.2e15 {
            return Ok((secs * 1000.0).round() as i64);
        }
        return Err(invalid(param, value, "duration"));
    }
    prom_duration(value).ok_or_else(|| invalid(param, value, "duration"))
}

fn prom_duration(s: &str) -> Option<i64> {
    let mut rest = s;
    let mut total: i64 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let n: i64 = rest.get(..digits)?.parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|c| c.is_ascii_alphabetic()).count();
        let unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    Some(total)
}

/// The matchers of one `match[]` selector (`up`, `{job="a"}`, `x{a=~"b"}`); a selector with
/// `or` gives several alternatives.
pub fn selector(value: &str) -> Result<Vec<Vec<Matcher>>, QueryError> {
    use promql_parser::label::MatchOp as P;
    use promql_parser::parser::Expr;
    let bad = |why: &str| QueryError::bad_data(format!("invalid parameter \"match[]\": {why}"));
    let expr = promql_parser::parser::parse(value).map_err(|e| bad(&e))?;
    let Expr::VectorSelector(vs) = expr else {
        return Err(bad(&format!("{value:?} is not a series selector")));
    };
    let convert = |ms: &[promql_parser::label::Matcher]| -> Vec<Matcher> {
        let mut out: Vec<Matcher> = ms
            .iter()
            .map(|m| Matcher {
                name: m.name.clone(),
                op: match m.op {
                    P::Equal => MatchOp::Equal,
                    P::NotEqual => MatchOp::NotEqual,
                    P::Re(_) => MatchOp::Re,
                    P::NotRe(_) => MatchOp::NotRe,
                },
                value: m.value.clone(),
            })
            .collect();
        if let Some(name) = &vs.name {
            if !out.iter().any(|m| m.name == "__name__") {
                out.push(Matcher {
                    name: "__name__".into(),
                    op: MatchOp::Equal,
                    value: name.clone(),
                });
            }
        }
        out
    };
    let mut alts = vec![convert(&vs.matchers.matchers)];
    alts.extend(vs.matchers.or_matchers.iter().map(|g| convert(g)));
    alts.retain(|a| !a.is_empty());
    for a in &alts {
        // As Prometheus: a selector must not match every series.
        if a.iter().all(|m| m.matches("")) {
            return Err(bad(&format!(
                "{value:?}: match[] must contain at least one non-empty matcher"
            )));
        }
    }
    if alts.is_empty() {
        return Err(bad(&format!("{value:?} has no matcher")));
    }
    Ok(alts)
}

/// A label name as Prometheus accepts it: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn label_name(name: &str) -> Result<(), QueryError> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(QueryError::bad_data(format!(
            "invalid label name: {name:?}"
        )))
    }
}
