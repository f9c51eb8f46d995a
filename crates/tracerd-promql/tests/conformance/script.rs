//! The script format: durations, numbers, `a+bxn` value expansions, metric lines, and
//! `eval` blocks with their expected results.

use tracerd_promql::{stale_nan, Labels};

pub(crate) fn parse_dur(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(n) = s.parse::<f64>() {
        return Some((n * 1000.0).round() as i64);
    }
    let mut total = 0i64;
    let b = s.as_bytes();
    let mut i = 0;
    if b.is_empty() {
        return None;
    }
    while i < b.len() {
        let st = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let n: i64 = s[st..i].parse().ok()?;
        let us = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let mult = match &s[us..i] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return None,
        };
        total += n * mult;
    }
    Some(total)
}

pub(crate) fn parse_num(s: &str) -> Option<f64> {
    match s {
        "Inf" | "+Inf" | "inf" | "+inf" => return Some(f64::INFINITY),
        "-Inf" | "-inf" => return Some(f64::NEG_INFINITY),
        "NaN" | "nan" => return Some(f64::NAN),
        _ => {}
    }
    s.parse::<f64>().ok()
}

/// `None` = omitted (`_`).
pub(crate) fn expand_values(toks: &[&str]) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for &t in toks {
        if t == "_" {
            out.push(None);
            continue;
        }
        if let Some(n) = t.strip_prefix("_x") {
            let n: usize = n.parse().map_err(|_| format!("bad token {t}"))?;
            out.extend(std::iter::repeat_n(None, n));
            continue;
        }
        if t == "stale" {
            out.push(Some(stale_nan()));
            continue;
        }
        if let Some(v) = parse_num(t) {
            out.push(Some(v));
            continue;
        }
        // a+bxn, a-bxn, axn
        let (base, n) = t.rsplit_once('x').ok_or_else(|| format!("bad token {t}"))?;
        let n: usize = n.parse().map_err(|_| format!("bad token {t}"))?;
        // split base into a and signed b at a '+' or '-' not at position 0 and not after 'e'.
        let bb = base.as_bytes();
        let mut split = None;
        for i in 1..bb.len() {
            if (bb[i] == b'+' || bb[i] == b'-') && bb[i - 1] != b'e' && bb[i - 1] != b'E' {
                split = Some(i);
            }
        }
        let (a, d) = match split {
            Some(i) => {
                let a = parse_num(&base[..i]).ok_or_else(|| format!("bad token {t}"))?;
                let d = parse_num(&base[i + 1..]).ok_or_else(|| format!("bad token {t}"))?;
                (a, if bb[i] == b'-' { -d } else { d })
            }
            None => (
                parse_num(base).ok_or_else(|| format!("bad token {t}"))?,
                0.0,
            ),
        };
        let mut cur = a;
        out.push(Some(cur));
        for _ in 0..n {
            cur += d;
            out.push(Some(cur));
        }
    }
    Ok(out)
}

/// Parse `name{l="v",...} rest` into sorted labels and the rest of the line.
pub(crate) fn parse_metric(line: &str) -> Result<(Labels, &str), String> {
    let b = line.as_bytes();
    let mut i = 0;
    let mut labels: Labels = Vec::new();
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
        i += 1;
    }
    if i > 0 {
        labels.push(("__name__".into(), line[..i].to_string()));
    }
    if i < b.len() && b[i] == b'{' {
        i += 1;
        loop {
            while i < b.len() && (b[i] == b' ' || b[i] == b',') {
                i += 1;
            }
            if i >= b.len() {
                return Err("unterminated labels".into());
            }
            if b[i] == b'}' {
                i += 1;
                break;
            }
            let (name, ni) = if b[i] == b'"' {
                read_quoted(line, i)?
            } else {
                let st = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                (line[st..i].to_string(), i)
            };
            i = ni;
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            if i < b.len() && (b[i] == b',' || b[i] == b'}') {
                // A bare quoted name: the metric name.
                labels.push(("__name__".into(), name));
                continue;
            }
            if i >= b.len() || b[i] != b'=' {
                return Err(format!("expected = in {line}"));
            }
            i += 1;
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            let (val, ni) = read_quoted(line, i)?;
            i = ni;
            labels.push((name, val));
        }
    }
    labels.retain(|(_, v)| !v.is_empty());
    labels.sort();
    Ok((labels, &line[i..]))
}

pub(crate) fn read_quoted(s: &str, i: usize) -> Result<(String, usize), String> {
    let b = s.as_bytes();
    let q = b[i];
    if q != b'"' && q != b'\'' && q != b'`' {
        return Err(format!("expected quote in {s}"));
    }
    let mut out = String::new();
    let mut j = i + 1;
    let chars: Vec<char> = s[j..].chars().collect();
    let mut k = 0;
    while k < chars.len() {
        let c = chars[k];
        if c as u32 == q as u32 {
            j += chars[..=k].iter().map(|c| c.len_utf8()).sum::<usize>();
            return Ok((out, j));
        }
        if c == '\\' && q != b'`' && k + 1 < chars.len() {
            k += 1;
            match chars[k] {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                '\'' => out.push('\''),
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
        } else {
            out.push(c);
        }
        k += 1;
    }
    Err(format!("unterminated string in {s}"))
}

#[derive(Debug)]
pub(crate) struct Expected {
    pub(crate) labels: Labels,
    pub(crate) vals: Vec<Option<f64>>,
    pub(crate) pos: usize,
}

#[derive(Debug)]
pub(crate) struct EvalBlock {
    pub(crate) line: usize,
    pub(crate) expr: String,
    pub(crate) instant: Option<i64>,
    pub(crate) range: Option<(i64, i64, i64)>,
    pub(crate) fail: bool,
    pub(crate) ordered: bool,
    pub(crate) scalar: Option<f64>,
    pub(crate) string: Option<String>,
    /// `expect range vector` on an instant query.
    pub(crate) rv: Option<(i64, i64, i64)>,
    pub(crate) metrics: Vec<Expected>,
    pub(crate) uses_histograms: bool,
}

pub(crate) fn parse_eval(lines: &[String], i: usize) -> (Option<EvalBlock>, usize) {
    let l = &lines[i];
    let mut j = i + 1;
    let mut block_end = j;
    while block_end < lines.len() && !lines[block_end].is_empty() {
        block_end += 1;
    }
    let parsed = (|| -> Option<EvalBlock> {
        let (head, rest) = l.split_once(char::is_whitespace)?;
        let modifier = head
            .strip_prefix("eval")
            .unwrap_or("")
            .trim_start_matches('_');
        let rest = rest.trim_start();
        let mut b = EvalBlock {
            line: i + 1,
            expr: String::new(),
            instant: None,
            range: None,
            fail: modifier == "fail",
            ordered: modifier == "ordered",
            scalar: None,
            string: None,
            rv: None,
            metrics: Vec::new(),
            uses_histograms: l.contains("{{"),
        };
        if let Some(r) = rest.strip_prefix("instant") {
            let r = r.trim_start();
            let r = r.strip_prefix("at")?.trim_start();
            let (t, e) = r.split_once(char::is_whitespace)?;
            b.instant = Some(parse_dur(t)?);
            b.expr = e.trim().to_string();
        } else if let Some(r) = rest.strip_prefix("range") {
            let r = r.trim_start().strip_prefix("from")?.trim_start();
            let (a, r) = r.split_once(" to ")?;
            let (c, r) = r.trim_start().split_once(" step ")?;
            let (s, e) = r.trim_start().split_once(char::is_whitespace)?;
            b.range = Some((parse_dur(a)?, parse_dur(c)?, parse_dur(s)?));
            b.expr = e.trim().to_string();
        } else {
            return None;
        }
        let mut pos = 0;
        while j < block_end {
            let d = &lines[j];
            j += 1;
            b.uses_histograms |= d.contains("{{");
            if d.starts_with("expected_fail_") {
                continue;
            }
            if let Some(r) = d.strip_prefix("expect range vector") {
                let r = r.trim().strip_prefix("from")?.trim_start();
                let (a, r) = r.split_once(" to ")?;
                let (c, s) = r.trim_start().split_once(" step ")?;
                b.rv = Some((parse_dur(a)?, parse_dur(c)?, parse_dur(s)?));
                continue;
            }
            if let Some(r) = d.strip_prefix("expect string") {
                let r = r.trim();
                b.string = Some(read_quoted(r, 0).ok()?.0);
                continue;
            }
            if d.split(' ').next() == Some("expect") {
                let kind = d.split_whitespace().nth(1).unwrap_or("");
                match kind {
                    "fail" => b.fail = true,
                    "ordered" => b.ordered = true,
                    _ => {} // info/warn annotations: not checked
                }
                continue;
            }
            if let Some(v) = parse_num(d) {
                b.scalar = Some(v);
                continue;
            }
            let (labels, rest) = parse_metric(d).ok()?;
            let toks: Vec<&str> = rest.split_whitespace().collect();
            pos += 1;
            b.metrics.push(Expected {
                labels,
                vals: expand_values(&toks).ok()?,
                pos,
            });
        }
        Some(b)
    })();
    (parsed, block_end)
}
