//! Label sets in the exposition's own syntax: parsing cardano's `PrometheusM` label text
//! (`{k="v",...}`), reading one quoted value back, and escaping a value for writing.

/// Parses `{k="v",...}` optionally followed by a value (cardano's `PrometheusM` text). Label
/// names must be valid, not reserved (`__...`) and distinct; `None` otherwise.
pub fn parse_label_set(text: &str) -> Option<Vec<(&str, String)>> {
    let mut rest = text.trim_start().strip_prefix('{')?;
    let mut labels: Vec<(&str, String)> = Vec::new();
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            rest = after;
            break;
        }
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let key = &rest[..end];
        let valid = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && !key.starts_with("__");
        if !valid || labels.iter().any(|(k, _)| *k == key) {
            return None;
        }
        rest = rest[end..].trim_start().strip_prefix('=')?;
        let (value, after) = read_label_value(rest.trim_start())?;
        labels.push((key, value));
        rest = after.trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return None;
        }
    }
    let tail = rest.trim();
    if !tail.is_empty() && tail.parse::<f64>().is_err() {
        return None;
    }
    Some(labels)
}

/// Reads one quoted label value as the exposition writes it (`"..."`, with `\\`, `\"` and
/// `\n` escapes) from the start of `s`: the unescaped value and what follows the closing quote.
pub fn read_label_value(s: &str) -> Option<(String, &str)> {
    let s = s.strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = s.char_indices();
    let close = loop {
        match chars.next()? {
            (i, '"') => break i,
            (_, '\\') => match chars.next()? {
                (_, 'n') => value.push('\n'),
                (_, c) => value.push(c),
            },
            (_, c) => value.push(c),
        }
    };
    Some((value, &s[close + 1..]))
}

/// Appends `value` escaped for a label value (`\`, `"`, newline).
pub fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}
