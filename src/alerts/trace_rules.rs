//! tracerd's own rule files (`tracerd.alerts.traceRuleFiles`): alerting rules on trace
//! objects and on node lifecycle facts, which Prometheus cannot express. Their top-level key
//! is `trace_groups` (not `groups`), so such a file is never taken for a Prometheus rule file
//! and the Prometheus rule files stay promtool-valid. A group and a rule look like
//! Prometheus's (`name`, `interval`, `alert`, `for`, `keep_firing_for`, `labels`,
//! `annotations`, the same templates); a rule has `trace:` or `lifecycle:` instead of `expr`.
//! Pure but for [`load_files`], which reads the files.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::rules::{
    build_groups, load_with, parse_duration, parse_yaml, Common, Cond, Group, GroupDoc, RuleDoc,
    RulesError,
};
use crate::model::Severity;

/// Most `count` a trace rule may ask for (each node keeps that many hit times per rule).
pub const MAX_COUNT: u32 = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    trace_groups: Vec<GroupDoc<TraceRuleDoc>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceRuleDoc {
    alert: String,
    #[serde(default)]
    trace: Option<TraceDoc>,
    #[serde(default)]
    lifecycle: Option<LifecycleDoc>,
    #[serde(default, rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    keep_firing_for: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceDoc {
    severity: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    field: Option<FieldDoc>,
    #[serde(default)]
    count: Option<u32>,
    window: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldDoc {
    path: String,
    #[serde(default)]
    equals: Option<String>,
    #[serde(default)]
    matches: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LifecycleDoc {
    #[serde(default)]
    disconnected_for: Option<String>,
    #[serde(default)]
    no_node_info_for: Option<String>,
    #[serde(default)]
    no_traces_for: Option<String>,
    #[serde(default)]
    clock_skew_over: Option<String>,
}

impl RuleDoc for TraceRuleDoc {
    fn name(&self) -> String {
        self.alert.clone()
    }

    fn check(self) -> Result<(String, String, Cond, Common), String> {
        if self.alert.is_empty() {
            return Err("alert must be set to the alert's name".into());
        }
        let (cond, expr) = match (&self.trace, &self.lifecycle) {
            (Some(t), None) => trace_cond(t)?,
            (None, Some(l)) => lifecycle_cond(l)?,
            _ => return Err("exactly one of trace and lifecycle must be set".into()),
        };
        let common = Common {
            for_: self.for_,
            keep_firing_for: self.keep_firing_for,
            labels: self.labels,
            annotations: self.annotations,
        };
        Ok((self.alert, expr, cond, common))
    }
}

/// A trace rule's condition: objects at or above `min_severity` (within `namespace`,
/// matching `field`) at least `count` times within `window_ms`, per node.
#[derive(Debug, Clone)]
pub struct TraceCond {
    /// Its index among every trace rule loaded (set by `Alerts::load`).
    pub id: usize,
    pub min_severity: Severity,
    /// A namespace prefix (`Net.` or `Net`; matched on whole dotted components).
    pub namespace: Option<String>,
    pub field: Option<FieldMatch>,
    pub count: u32,
    pub window_ms: i64,
}

/// A test on one field of an object's machine JSON.
#[derive(Debug, Clone)]
pub struct FieldMatch {
    /// The dotted path (`data.kind`, `kind`); numeric components index arrays.
    pub path: Vec<String>,
    pub test: FieldTest,
}

/// How the field's value is tested: a string is compared as is, any other JSON value as its
/// JSON text (`42`, `true`).
#[derive(Debug, Clone)]
pub enum FieldTest {
    Equals(String),
    /// The whole value matches (anchored, as PromQL's `=~`).
    Matches(regex::Regex),
}

/// A node lifecycle condition; each holds per node, the duration in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Disconnected (nothing received since) for at least this long.
    DisconnectedFor(i64),
    /// Connected this long without a `NodeInfo` data point.
    NoNodeInfoFor(i64),
    /// Connected, with no trace object for this long (since its last, or since it connected).
    NoTracesFor(i64),
    /// Its newest trace object's timestamp differs from tracerd's clock by more than this.
    ClockSkewOver(i64),
}

impl TraceCond {
    /// Whether `severity` and `namespace` pass (the cheap part, run on the ingest path).
    pub fn prefilter(&self, severity: Severity, namespace: &str) -> bool {
        severity >= self.min_severity
            && self
                .namespace
                .as_deref()
                .is_none_or(|p| namespace_within(namespace, p))
    }
}

/// Whether `ns` is `prefix` or below it (`Net.Peers` is within `Net` and `Net.`, not `Ne`).
pub fn namespace_within(ns: &str, prefix: &str) -> bool {
    let p = prefix.trim_end_matches('.');
    p.is_empty() || ns == p || (ns.starts_with(p) && ns.as_bytes().get(p.len()) == Some(&b'.'))
}

impl FieldMatch {
    /// Whether the machine JSON text `machine` has the field and it passes. Text that is not
    /// JSON never matches.
    pub fn matches(&self, machine: &str) -> bool {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(machine) else {
            return false;
        };
        let mut at = &v;
        for c in &self.path {
            at = match at {
                serde_json::Value::Object(m) => match m.get(c) {
                    Some(x) => x,
                    None => return false,
                },
                serde_json::Value::Array(a) => match c.parse::<usize>().ok().and_then(|i| a.get(i))
                {
                    Some(x) => x,
                    None => return false,
                },
                _ => return false,
            };
        }
        let text = match at {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match &self.test {
            FieldTest::Equals(want) => &text == want,
            FieldTest::Matches(re) => re.is_match(&text),
        }
    }
}

/// Parses and checks one trace rule file's text; `file` names it in errors.
pub fn parse_file(
    file: &str,
    text: &str,
    default_interval_ms: i64,
) -> Result<Vec<Group>, RulesError> {
    let doc: FileDoc = parse_yaml(file, text)?;
    build_groups(file, text, doc.trace_groups, default_interval_ms)
}

fn trace_cond(t: &TraceDoc) -> Result<(Cond, String), String> {
    let min_severity = Severity::parse(&t.severity).ok_or_else(|| {
        format!(
            "trace.severity {:?} is not a severity (Debug, Info, Notice, Warning, Error, \
             Critical, Alert, Emergency)",
            t.severity
        )
    })?;
    let window_ms = parse_duration(&t.window).map_err(|m| format!("trace.window: {m}"))?;
    if window_ms <= 0 {
        return Err("trace.window must be positive".into());
    }
    let count = t.count.unwrap_or(1);
    if count == 0 || count > MAX_COUNT {
        return Err(format!("trace.count must be 1 to {MAX_COUNT}, not {count}"));
    }
    let field = match &t.field {
        None => None,
        Some(f) => {
            let path: Vec<String> = f.path.split('.').map(str::to_string).collect();
            if path.iter().any(String::is_empty) {
                return Err(format!("trace.field.path {:?}: empty component", f.path));
            }
            let test = match (&f.equals, &f.matches) {
                (Some(e), None) => FieldTest::Equals(e.clone()),
                (None, Some(m)) => FieldTest::Matches(
                    regex::Regex::new(&format!("^(?:{m})$"))
                        .map_err(|e| format!("trace.field.matches {m:?}: {e}"))?,
                ),
                _ => return Err("trace.field needs exactly one of equals and matches".into()),
            };
            Some(FieldMatch { path, test })
        }
    };
    let mut expr = format!("traces{{severity>={min_severity}");
    if let Some(ns) = &t.namespace {
        expr.push_str(&format!(", namespace within {ns:?}"));
    }
    if let Some(f) = &t.field {
        match (&f.equals, &f.matches) {
            (Some(e), _) => expr.push_str(&format!(", {}={e:?}", f.path)),
            (_, Some(m)) => expr.push_str(&format!(", {}=~{m:?}", f.path)),
            _ => {}
        }
    }
    expr.push_str(&format!("}} >= {count} in {}", t.window));
    let cond = TraceCond {
        id: 0,
        min_severity,
        namespace: t.namespace.clone(),
        field,
        count,
        window_ms,
    };
    Ok((Cond::Trace(cond), expr))
}

fn lifecycle_cond(l: &LifecycleDoc) -> Result<(Cond, String), String> {
    let set: Vec<(&str, &String)> = [
        ("disconnected_for", &l.disconnected_for),
        ("no_node_info_for", &l.no_node_info_for),
        ("no_traces_for", &l.no_traces_for),
        ("clock_skew_over", &l.clock_skew_over),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    .collect();
    let [(key, value)] = set[..] else {
        return Err(
            "lifecycle needs exactly one of disconnected_for, no_node_info_for, \
                    no_traces_for and clock_skew_over"
                .into(),
        );
    };
    let ms = parse_duration(value).map_err(|m| format!("lifecycle.{key}: {m}"))?;
    let cond = match key {
        "disconnected_for" => Lifecycle::DisconnectedFor(ms),
        "no_node_info_for" => Lifecycle::NoNodeInfoFor(ms),
        "no_traces_for" => Lifecycle::NoTracesFor(ms),
        _ => Lifecycle::ClockSkewOver(ms),
    };
    Ok((
        Cond::Lifecycle(cond),
        format!("lifecycle{{{key}: {value}}}"),
    ))
}

/// Reads and checks every trace rule file (blocking). Every file's first problem is returned.
pub fn load_files(
    files: &[PathBuf],
    default_interval_ms: i64,
) -> Result<Vec<Group>, Vec<RulesError>> {
    load_with(files, default_interval_ms, parse_file)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "trace_groups:
  - name: traces
    interval: 1s
    rules:
      - alert: Errors
        trace:
          severity: Error
          namespace: Net.
          field: { path: data.kind, equals: Boom }
          count: 3
          window: 1m
        labels: { severity: warning }
        annotations:
          summary: '{{ $labels.node_name }} logged {{ $value }} errors'
      - alert: NoInfo
        lifecycle: { no_node_info_for: 30s }
";

    #[test]
    fn parses_trace_and_lifecycle_rules() {
        let g = parse_file("t.yml", GOOD, 15_000).unwrap();
        assert_eq!(g[0].interval_ms, 1_000);
        let Cond::Trace(t) = &g[0].rules[0].cond else {
            panic!("a trace rule")
        };
        assert_eq!(
            (t.min_severity, t.count, t.window_ms),
            (Severity::Error, 3, 60_000)
        );
        assert!(t.prefilter(Severity::Critical, "Net.Peers"));
        assert!(!t.prefilter(Severity::Warning, "Net.Peers"));
        assert!(!t.prefilter(Severity::Error, "Network"));
        let f = t.field.as_ref().unwrap();
        assert!(f.matches(r#"{"data":{"kind":"Boom"}}"#));
        assert!(!f.matches(r#"{"data":{"kind":"Other"}}"#));
        assert!(!f.matches("not json"));
        assert!(matches!(
            g[0].rules[1].cond,
            Cond::Lifecycle(Lifecycle::NoNodeInfoFor(30_000))
        ));
    }

    #[test]
    fn problems_named_with_file_and_line() {
        let text = GOOD.replace("severity: Error", "severity: Eror");
        let e = parse_file("t.yml", &text, 15_000).unwrap_err().to_string();
        assert!(
            e.starts_with("t.yml:5: group \"traces\", rule \"Errors\": trace.severity"),
            "{e}"
        );
        let text = GOOD.replace("count: 3", "count: 3\n          cuont: 4");
        let e = parse_file("t.yml", &text, 15_000).unwrap_err().to_string();
        assert!(
            e.contains("unknown field `cuont`") && e.contains("line 11"),
            "{e}"
        );
        let text = GOOD.replace(
            "{ no_node_info_for: 30s }",
            "{ no_node_info_for: 30s, no_traces_for: 1m }",
        );
        let e = parse_file("t.yml", &text, 15_000).unwrap_err().to_string();
        assert!(e.starts_with("t.yml:15: "), "{e}");
        assert!(e.contains("exactly one of disconnected_for"), "{e}");
        // A Prometheus rule file given as a trace rule file is named as such.
        let e = parse_file("p.yml", "groups: []\n", 15_000)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `groups`"), "{e}");
    }

    #[test]
    fn groups_share_prometheus_group_fields() {
        let text = GOOD.replace("    interval: 1s\n", "    interval: 1s\n    limit: 5\n");
        assert_eq!(parse_file("t.yml", &text, 15_000).unwrap()[0].limit, 5);
        let text = GOOD.replace("  - name: traces\n", "  - name: traces\n    lmit: 5\n");
        let e = parse_file("t.yml", &text, 15_000).unwrap_err().to_string();
        assert!(
            e.contains("unknown field `lmit`") && e.contains("line 3"),
            "{e}"
        );
        let twice = format!("{GOOD}{}", GOOD.replace("trace_groups:\n", ""));
        let e = parse_file("t.yml", &twice, 15_000).unwrap_err().to_string();
        assert!(e.contains("group \"traces\": repeated"), "{e}");
    }

    #[test]
    fn namespaces_match_whole_components() {
        assert!(namespace_within("Net.Peers.List", "Net.Peers"));
        assert!(namespace_within("Net", "Net."));
        assert!(!namespace_within("Network", "Net"));
        assert!(namespace_within("Anything", ""));
    }

    #[test]
    fn regex_is_anchored() {
        let f = FieldMatch {
            path: vec!["kind".into()],
            test: FieldTest::Matches(regex::Regex::new("^(?:Trace.*)$").unwrap()),
        };
        assert!(f.matches(r#"{"kind":"TraceX"}"#));
        assert!(!f.matches(r#"{"kind":"XTrace"}"#));
    }
}
