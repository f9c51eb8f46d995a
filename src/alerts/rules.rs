//! Rule files in Prometheus's alerting-rule format, parsed with serde (unknown fields refused
//! with their line), their durations, their PromQL (parsed once, so a bad expression is named
//! with file, group, rule and line) and their annotation templates. Pure but for
//! [`load_files`], which reads the files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use super::template::Template;

/// Why a rule file was refused; the message names the file and, where known, the line.
#[derive(Debug, Error)]
pub enum RulesError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}:{line}: group {group:?}, rule {rule:?}: {message}")]
    Rule {
        file: String,
        line: usize,
        group: String,
        rule: String,
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    groups: Vec<GroupDoc<PromRuleDoc>>,
}

/// A group as both rule formats write it (a Prometheus file's `groups` entries, a trace rule
/// file's `trace_groups` entries); `R` is the format's rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupDoc<R> {
    name: String,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
    rules: Vec<R>,
}

/// What every alerting rule has beside its condition, in both formats. (Each format's rule
/// struct still names these four fields itself: serde's `flatten` cannot be combined with
/// `deny_unknown_fields`, which names a misspelt key with its line.)
#[derive(Debug, Default)]
pub(super) struct Common {
    pub for_: Option<String>,
    pub keep_firing_for: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// One rule as its file format reads it.
pub(super) trait RuleDoc {
    /// The name its problems are reported under (and its `alert:` line found by).
    fn name(&self) -> String;
    /// Its alert name, its expression (or condition as text) and its condition, checked;
    /// and the fields every rule has, checked by [`build_groups`].
    fn check(self) -> Result<(String, String, Cond, Common), String>;
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromRuleDoc {
    #[serde(default)]
    alert: Option<String>,
    #[serde(default)]
    record: Option<String>,
    expr: String,
    #[serde(default, rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    keep_firing_for: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

impl RuleDoc for PromRuleDoc {
    fn name(&self) -> String {
        self.alert
            .clone()
            .or(self.record.clone())
            .unwrap_or_default()
    }

    fn check(self) -> Result<(String, String, Cond, Common), String> {
        let alert = match (self.alert, self.record) {
            (Some(a), None) if !a.is_empty() => a,
            (None, Some(_)) => {
                return Err("recording rules are not supported (only alerting rules)".into())
            }
            (Some(_), Some(_)) => return Err("only one of alert and record may be set".into()),
            _ => return Err("alert must be set to the alert's name".into()),
        };
        if let Err(e) = promql_parser::parser::parse(&self.expr) {
            return Err(format!("bad PromQL in expr {:?}: {e}", self.expr));
        }
        let common = Common {
            for_: self.for_,
            keep_firing_for: self.keep_firing_for,
            labels: self.labels,
            annotations: self.annotations,
        };
        Ok((alert, self.expr, Cond::Expr, common))
    }
}

/// What a rule's alerts come from.
#[derive(Debug, Clone)]
pub enum Cond {
    /// `expr`, a PromQL expression evaluated on the metric history.
    Expr,
    /// Trace objects counted over a window (a trace rule file's `trace:`).
    Trace(super::trace_rules::TraceCond),
    /// A node lifecycle fact (a trace rule file's `lifecycle:`).
    Lifecycle(super::trace_rules::Lifecycle),
}

/// One alerting rule, checked.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    /// The PromQL expression, or for a trace or lifecycle rule its condition as text
    /// (shown as the rule's `query` by `/api/v1/rules`).
    pub expr: String,
    pub cond: Cond,
    pub for_ms: i64,
    pub keep_firing_for_ms: i64,
    /// Extra labels (values may be templates).
    pub labels: Vec<(String, Template)>,
    pub annotations: Vec<(String, Template)>,
}

/// One group: its rules evaluated in order every `interval_ms`.
#[derive(Debug, Clone)]
pub struct Group {
    pub file: String,
    pub name: String,
    pub interval_ms: i64,
    /// Most alerts one rule may produce in one evaluation (0: unbounded), as Prometheus's
    /// `limit`: past it the evaluation fails.
    pub limit: u64,
    pub rules: Vec<Rule>,
}

/// Parses a Prometheus duration (`1h30m`, `10s`, `500ms`, `2d`, `1w`, `1y`) into ms.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let bad = || format!("{s:?} is not a duration (e.g. 30s, 5m, 1h30m)");
    if s == "0" {
        return Ok(0);
    }
    let b = s.as_bytes();
    if b.is_empty() {
        return Err(bad());
    }
    let (mut i, mut total) = (0usize, 0i64);
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(bad());
        }
        let n: i64 = s[start..i].parse().map_err(|_| bad())?;
        let unit_start = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let ms = match &s[unit_start..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

/// The 1-based line of the `alert: NAME` (or `record: NAME`) entry of the `nth` rule named
/// `name` in `text`, or 1 when it cannot be found.
fn line_of_rule(text: &str, name: &str, nth: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let t = l.trim_start().trim_start_matches("- ").trim_start();
            let v = t
                .strip_prefix("alert:")
                .or_else(|| t.strip_prefix("record:"));
            v.is_some_and(|v| v.trim().trim_matches(['"', '\'']) == name)
        })
        .nth(nth)
        .map_or(1, |(i, _)| i + 1)
}

/// Parses and checks one rule file's text; `file` names it in errors; `default_interval_ms`
/// is the interval of a group without its own.
pub fn parse_file(
    file: &str,
    text: &str,
    default_interval_ms: i64,
) -> Result<Vec<Group>, RulesError> {
    let doc: FileDoc = parse_yaml(file, text)?;
    build_groups(file, text, doc.groups, default_interval_ms)
}

/// A rule file's YAML, as the format's document type (unknown fields named with their line).
pub(super) fn parse_yaml<T: serde::de::DeserializeOwned>(
    file: &str,
    text: &str,
) -> Result<T, RulesError> {
    serde_norway::from_str(text).map_err(|e| RulesError::Parse {
        file: file.to_string(),
        message: e.to_string(),
    })
}

/// The groups of one parsed file, either format: group names unique, intervals read, each
/// rule checked (its own part by [`RuleDoc::check`], the rest by [`finish_rule`]), a problem
/// named with `file`, the rule's line in `text`, its group and its name.
pub(super) fn build_groups<R: RuleDoc>(
    file: &str,
    text: &str,
    docs: Vec<GroupDoc<R>>,
    default_interval_ms: i64,
) -> Result<Vec<Group>, RulesError> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut groups = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for g in docs {
        if !names.insert(g.name.clone()) {
            return Err(RulesError::Parse {
                file: file.to_string(),
                message: format!("group {:?}: repeated in the same file", g.name),
            });
        }
        let interval_ms = group_interval(file, &g.name, &g.interval, default_interval_ms)?;
        let mut rules = Vec::new();
        for r in g.rules {
            let name = r.name();
            let nth = seen.entry(name.clone()).or_default();
            let line = line_of_rule(text, &name, *nth);
            *nth += 1;
            let err = |message: String| RulesError::Rule {
                file: file.to_string(),
                line,
                group: g.name.clone(),
                rule: name.clone(),
                message,
            };
            let (alert, expr, cond, common) = r.check().map_err(&err)?;
            rules.push(finish_rule(alert, expr, cond, common, &err)?);
        }
        groups.push(Group {
            file: file.to_string(),
            name: g.name,
            interval_ms,
            limit: g.limit.unwrap_or(0),
            rules,
        });
    }
    Ok(groups)
}

/// The checks every alerting rule shares, Prometheus's or tracerd's own: `for`,
/// `keep_firing_for`, label names and templates. `err` names the rule in a problem.
fn finish_rule(
    name: String,
    expr: String,
    cond: Cond,
    common: Common,
    err: &dyn Fn(String) -> RulesError,
) -> Result<Rule, RulesError> {
    let dur = |what: &str, v: &Option<String>| match v {
        None => Ok(0),
        Some(s) => parse_duration(s).map_err(|m| err(format!("{what}: {m}"))),
    };
    let for_ms = dur("for", &common.for_)?;
    let keep_firing_for_ms = dur("keep_firing_for", &common.keep_firing_for)?;
    let mut labels = Vec::new();
    for (k, v) in common.labels {
        if !valid_label_name(&k) || k.starts_with("__") {
            return Err(err(format!("invalid label name {k:?}")));
        }
        let t = Template::parse(&v).map_err(|m| err(format!("label {k}: {m}")))?;
        labels.push((k, t));
    }
    let mut annotations = Vec::new();
    for (k, v) in common.annotations {
        if !valid_label_name(&k) {
            return Err(err(format!("invalid annotation name {k:?}")));
        }
        let t = Template::parse(&v).map_err(|m| err(format!("annotation {k}: {m}")))?;
        annotations.push((k, t));
    }
    Ok(Rule {
        name,
        expr,
        cond,
        for_ms,
        keep_firing_for_ms,
        labels,
        annotations,
    })
}

/// Prometheus's label name rule: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn valid_label_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Reads and checks every rule file (blocking). Every file's first problem is returned.
pub fn load_files(
    files: &[PathBuf],
    default_interval_ms: i64,
) -> Result<Vec<Group>, Vec<RulesError>> {
    load_with(files, default_interval_ms, parse_file)
}

/// Reads every file of `files` (blocking) and parses it with `parse` (either format's
/// `parse_file`): the groups, or every file's first problem.
pub(super) fn load_with(
    files: &[PathBuf],
    default_interval_ms: i64,
    parse: fn(&str, &str, i64) -> Result<Vec<Group>, RulesError>,
) -> Result<Vec<Group>, Vec<RulesError>> {
    let mut groups = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match read(f).and_then(|(file, text)| parse(&file, &text, default_interval_ms)) {
            Ok(g) => groups.extend(g),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(groups)
    } else {
        Err(errors)
    }
}

/// A rule file's name as shown and its text (blocking).
fn read(path: &Path) -> Result<(String, String), RulesError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
        file: file.clone(),
        source,
    })?;
    Ok((file, text))
}

/// A group's `interval`, or `default_interval_ms` when it names none.
fn group_interval(
    file: &str,
    group: &str,
    interval: &Option<String>,
    default_interval_ms: i64,
) -> Result<i64, RulesError> {
    let bad = |message: String| RulesError::Parse {
        file: file.to_string(),
        message: format!("group {group:?}: {message}"),
    };
    match interval {
        None => Ok(default_interval_ms),
        Some(s) => match parse_duration(s) {
            Ok(ms) if ms > 0 => Ok(ms),
            Ok(_) => Err(bad("interval must be positive".into())),
            Err(m) => Err(bad(format!("interval: {m}"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("10s"), Ok(10_000));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    const GOOD: &str = "groups:
  - name: nodes
    interval: 5s
    rules:
      - alert: High
        expr: up > 1
        for: 10s
        labels: { severity: warning }
        annotations:
          summary: 'node {{ $labels.node_name }} at {{ $value }}'
";

    #[test]
    fn parses_a_group() {
        let g = parse_file("r.yml", GOOD, 15_000).unwrap();
        assert_eq!(g[0].interval_ms, 5_000);
        assert_eq!(g[0].rules[0].for_ms, 10_000);
        assert_eq!(g[0].rules[0].name, "High");
    }

    #[test]
    fn unknown_field_named_with_file_and_line() {
        let text = GOOD.replace("        for: 10s", "        for: 10s\n        fro: 1m");
        let e = parse_file("r.yml", &text, 15_000).unwrap_err().to_string();
        assert!(e.starts_with("r.yml:"), "{e}");
        assert!(
            e.contains("unknown field `fro`") && e.contains("line 8"),
            "{e}"
        );
    }

    #[test]
    fn bad_promql_named_with_file_rule_and_line() {
        let text = GOOD.replace("up > 1", "up >");
        let e = parse_file("r.yml", &text, 15_000).unwrap_err().to_string();
        assert!(
            e.starts_with("r.yml:5: group \"nodes\", rule \"High\": bad PromQL"),
            "{e}"
        );
    }

    #[test]
    fn unsupported_template_refused() {
        let text = GOOD.replace("{{ $value }}", "{{ humanize $value }}");
        let e = parse_file("r.yml", &text, 15_000).unwrap_err().to_string();
        assert!(e.contains("annotation summary"), "{e}");
    }
}
