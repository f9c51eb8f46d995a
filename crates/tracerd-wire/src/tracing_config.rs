//! A node's tracing configuration (issue 19), in the shape of trace-dispatcher's
//! `TraceConfig`: options per namespace prefix (severity filter, detail level, maximum
//! frequency) and the entry `""` for everything else. tracerd pushes one to a native node
//! (`SetTracingConfig`), the node reports the one in force (`TracingConfigReport`), and both
//! sides render it as trace-dispatcher's JSON (`{"Options": {<ns>: {...}}}`).
//!
//! Pure: the types, their checks ([`TracingConfig::check`]), their JSON text
//! ([`TracingConfig::to_json`]) and the lookup a forwarder filters with ([`Filter`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};

use crate::model::{DetailLevel, Severity};

/// The capability a node lists in `Hello.capabilities` when tracerd may set its tracing
/// configuration.
pub const CAPABILITY: &str = "tracing-config.v1";

/// Most namespace entries in one configuration.
pub const MAX_ENTRIES: usize = 4096;
/// Longest namespace of an entry, in bytes.
pub const MAX_NAMESPACE_BYTES: usize = 1024;

/// The lowest severity forwarded, or nothing at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeverityFilter {
    /// Objects of this severity and above.
    AtLeast(Severity),
    /// No object (trace-dispatcher's `Silence`).
    Silence,
}

impl SeverityFilter {
    /// Whether an object of severity `s` passes.
    pub fn admits(self, s: Severity) -> bool {
        match self {
            SeverityFilter::AtLeast(min) => s >= min,
            SeverityFilter::Silence => false,
        }
    }

    /// trace-dispatcher's JSON name: `"Debug"` .. `"Emergency"`, `"Silence"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SeverityFilter::AtLeast(s) => s.as_str(),
            SeverityFilter::Silence => "Silence",
        }
    }

    /// Parses trace-dispatcher's JSON name.
    pub fn parse(text: &str) -> Option<SeverityFilter> {
        match text {
            "Silence" => Some(SeverityFilter::Silence),
            _ => Severity::parse(text).map(SeverityFilter::AtLeast),
        }
    }
}

/// trace-dispatcher's JSON name of a detail level: `"DMinimal"` .. `"DMaximum"`.
pub fn detail_name(d: DetailLevel) -> &'static str {
    match d {
        DetailLevel::Minimal => "DMinimal",
        DetailLevel::Normal => "DNormal",
        DetailLevel::Detailed => "DDetailed",
        DetailLevel::Maximum => "DMaximum",
    }
}

/// Parses trace-dispatcher's JSON name of a detail level.
pub fn parse_detail(text: &str) -> Option<DetailLevel> {
    [
        DetailLevel::Minimal,
        DetailLevel::Normal,
        DetailLevel::Detailed,
        DetailLevel::Maximum,
    ]
    .into_iter()
    .find(|d| detail_name(*d) == text)
}

/// The options one entry sets; `None` inherits from the covering entry.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NamespaceOptions {
    /// Lowest severity forwarded.
    pub severity: Option<SeverityFilter>,
    /// Detail level of what the node renders.
    pub detail: Option<DetailLevel>,
    /// Most objects per second under this entry.
    pub max_frequency: Option<f64>,
}

/// A whole tracing configuration: namespace (`""` for the rest) → options.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TracingConfig {
    /// The entries, by namespace.
    pub options: BTreeMap<String, NamespaceOptions>,
}

/// The built-in default: everything forwarded, at normal detail, without a limit.
pub const DEFAULT_OPTIONS: Resolved = Resolved {
    severity: SeverityFilter::AtLeast(Severity::Debug),
    detail: DetailLevel::Normal,
    max_frequency: None,
    limiter: None,
};

/// Why a configuration cannot be used: which entry and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    /// More than [`MAX_ENTRIES`] entries.
    #[error("{0} namespace entries, more than the {MAX_ENTRIES} allowed")]
    TooManyEntries(usize),
    /// A namespace is not `""` or dotted non-empty segments.
    #[error("namespace {namespace:?}: {why}")]
    Namespace {
        /// The namespace.
        namespace: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A `maxFrequency` is not a finite number above zero.
    #[error("namespace {namespace:?}: maxFrequency {value} is not a finite number above 0")]
    MaxFrequency {
        /// The namespace.
        namespace: String,
        /// The value, as text.
        value: String,
    },
}

/// Why `namespace` cannot be an entry's key, if it cannot.
pub fn namespace_problem(namespace: &str) -> Option<&'static str> {
    if namespace.is_empty() {
        return None;
    }
    if namespace.len() > MAX_NAMESPACE_BYTES {
        return Some("longer than 1024 bytes");
    }
    if namespace
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Some("contains whitespace or a control character");
    }
    if namespace.split('.').any(str::is_empty) {
        return Some("has an empty segment (a leading, trailing or doubled '.')");
    }
    None
}

impl TracingConfig {
    /// The configuration that forwards everything: only the entry `""`, at the defaults.
    pub fn everything() -> TracingConfig {
        TracingConfig::default().effective()
    }

    /// Every problem of the configuration, or nothing.
    pub fn check(&self) -> Result<(), ConfigProblem> {
        if self.options.len() > MAX_ENTRIES {
            return Err(ConfigProblem::TooManyEntries(self.options.len()));
        }
        for (ns, o) in &self.options {
            if let Some(why) = namespace_problem(ns) {
                return Err(ConfigProblem::Namespace {
                    namespace: ns.clone(),
                    why,
                });
            }
            if let Some(f) = o.max_frequency {
                if !(f.is_finite() && f > 0.0) {
                    return Err(ConfigProblem::MaxFrequency {
                        namespace: ns.clone(),
                        value: f.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The same configuration with the entry `""` stating its severity and detail (the
    /// built-in defaults where it did not): what a node reports as in force.
    pub fn effective(mut self) -> TracingConfig {
        let root = self.options.entry(String::new()).or_default();
        root.severity.get_or_insert(DEFAULT_OPTIONS.severity);
        root.detail.get_or_insert(DEFAULT_OPTIONS.detail);
        self
    }

    /// trace-dispatcher's JSON: `{"Options":{"":{"detail":"DNormal","severity":"Notice"},…}}`,
    /// compact, keys sorted (as aeson writes them), only the options an entry sets.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{\"Options\":{");
        for (i, (ns, o)) in self.options.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_string(&mut out, ns);
            out.push_str(":{");
            let mut first = true;
            let mut key = |out: &mut String, k: &str| {
                if !std::mem::take(&mut first) {
                    out.push(',');
                }
                out.push('"');
                out.push_str(k);
                out.push_str("\":");
            };
            if let Some(d) = o.detail {
                key(&mut out, "detail");
                push_json_string(&mut out, detail_name(d));
            }
            if let Some(f) = o.max_frequency {
                key(&mut out, "maxFrequency");
                if f.fract() == 0.0 && f.abs() < 1e15 {
                    let _ = write!(out, "{f:.1}");
                } else {
                    let _ = write!(out, "{f}");
                }
            }
            if let Some(s) = o.severity {
                key(&mut out, "severity");
                push_json_string(&mut out, s.as_str());
            }
            out.push('}');
        }
        out.push_str("}}");
        out
    }
}

/// Appends `s` as a JSON string (quotes, backslashes and control characters escaped).
pub fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The options in force for one namespace, every one resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resolved {
    /// Lowest severity forwarded.
    pub severity: SeverityFilter,
    /// Detail level to render at.
    pub detail: DetailLevel,
    /// Most objects per second, shared by every namespace under the entry that set it.
    pub max_frequency: Option<f64>,
    /// Which rate limiter `max_frequency` counts against (an index below
    /// [`Filter::limiters`]).
    pub limiter: Option<usize>,
}

/// FNV-1a: namespaces are short and chosen by the node's operator, and a lookup is on the path
/// of every trace object (SipHash costs several times more on a 20-byte key).
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// A configuration compiled for lookups: the resolved options of every entry.
#[derive(Debug, Clone)]
pub struct Filter {
    root: Resolved,
    entries: HashMap<String, Resolved, BuildHasherDefault<Fnv>>,
    limiters: Vec<f64>,
}

impl Filter {
    /// Compiles `config` (checked or not: a bad `maxFrequency` is ignored).
    pub fn new(config: &TracingConfig) -> Filter {
        let mut limiters = Vec::new();
        let mut owners: HashMap<&str, usize> = HashMap::new();
        let mut compile = |ns: &str| {
            let (mut sev, mut det, mut freq) = (None, None, None);
            for p in covering(ns) {
                if let Some((key, o)) = config.options.get_key_value(p) {
                    sev = sev.or(o.severity);
                    det = det.or(o.detail);
                    if freq.is_none() {
                        freq = o.max_frequency.map(|f| (key.as_str(), f));
                    }
                }
            }
            let mut r = DEFAULT_OPTIONS;
            r.severity = sev.unwrap_or(r.severity);
            r.detail = det.unwrap_or(r.detail);
            if let Some((owner, f)) = freq.filter(|&(_, f)| f.is_finite() && f > 0.0) {
                r.max_frequency = Some(f);
                r.limiter = Some(*owners.entry(owner).or_insert_with(|| {
                    limiters.push(f);
                    limiters.len() - 1
                }));
            }
            r
        };
        let root = compile("");
        let entries = config
            .options
            .keys()
            .filter(|ns| !ns.is_empty())
            .map(|ns| (ns.clone(), compile(ns)))
            .collect();
        Filter {
            root,
            entries,
            limiters,
        }
    }

    /// The options in force for `namespace`: those of the longest entry covering it.
    pub fn resolve(&self, namespace: &str) -> &Resolved {
        if self.entries.is_empty() {
            return &self.root;
        }
        let mut p = namespace;
        loop {
            if let Some(r) = self.entries.get(p) {
                return r;
            }
            match p.rfind('.') {
                Some(i) => p = &p[..i],
                None => return &self.root,
            }
        }
    }

    /// The rate of each limiter, objects per second, by [`Resolved::limiter`] index.
    pub fn limiters(&self) -> &[f64] {
        &self.limiters
    }
}

/// `ns`, each of its dotted prefixes (longest first), then `""`.
fn covering(ns: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(ns);
    std::iter::from_fn(move || {
        let p = next?;
        next = match p.rfind('.') {
            Some(i) => Some(&p[..i]),
            None if !p.is_empty() => Some(""),
            None => None,
        };
        Some(p)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(entries: &[(&str, NamespaceOptions)]) -> TracingConfig {
        TracingConfig {
            options: entries.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    fn sev(s: Severity) -> Option<SeverityFilter> {
        Some(SeverityFilter::AtLeast(s))
    }

    #[test]
    fn options_come_from_the_longest_covering_entry_that_sets_them() {
        let c = config(&[
            (
                "",
                NamespaceOptions {
                    severity: sev(Severity::Notice),
                    detail: Some(DetailLevel::Minimal),
                    max_frequency: None,
                },
            ),
            (
                "ChainDB",
                NamespaceOptions {
                    severity: sev(Severity::Warning),
                    max_frequency: Some(2.0),
                    ..Default::default()
                },
            ),
            (
                "ChainDB.AddBlock",
                NamespaceOptions {
                    detail: Some(DetailLevel::Maximum),
                    ..Default::default()
                },
            ),
            (
                "Mempool",
                NamespaceOptions {
                    severity: Some(SeverityFilter::Silence),
                    ..Default::default()
                },
            ),
        ]);
        let f = Filter::new(&c);
        let add = f.resolve("ChainDB.AddBlock.Event");
        assert_eq!(add.severity, SeverityFilter::AtLeast(Severity::Warning));
        assert_eq!(add.detail, DetailLevel::Maximum);
        assert_eq!(add.max_frequency, Some(2.0));
        // One limiter for everything under ChainDB.
        assert_eq!(add.limiter, f.resolve("ChainDB.Other").limiter);
        assert!(add.limiter.is_some());
        assert_eq!(f.limiters(), &[2.0]);
        // "ChainDBX" is not under "ChainDB".
        let x = f.resolve("ChainDBX.A");
        assert_eq!(x.severity, SeverityFilter::AtLeast(Severity::Notice));
        assert_eq!((x.detail, x.limiter), (DetailLevel::Minimal, None));
        assert!(!f.resolve("Mempool.Tx").severity.admits(Severity::Emergency));
        assert!(f.resolve("ChainDB").severity.admits(Severity::Error));
        assert!(!f.resolve("ChainDB").severity.admits(Severity::Notice));
    }

    #[test]
    fn an_empty_configuration_forwards_everything() {
        let f = Filter::new(&TracingConfig::default());
        assert_eq!(*f.resolve("Any.Thing"), DEFAULT_OPTIONS);
        assert_eq!(
            TracingConfig::everything().to_json(),
            r#"{"Options":{"":{"detail":"DNormal","severity":"Debug"}}}"#
        );
    }

    #[test]
    fn json_is_trace_dispatchers_shape() {
        let c = config(&[
            (
                "",
                NamespaceOptions {
                    severity: sev(Severity::Notice),
                    ..Default::default()
                },
            ),
            (
                "Block\"Fetch",
                NamespaceOptions {
                    max_frequency: Some(2.0),
                    severity: Some(SeverityFilter::Silence),
                    ..Default::default()
                },
            ),
            (
                "X",
                NamespaceOptions {
                    max_frequency: Some(0.5),
                    ..Default::default()
                },
            ),
        ]);
        assert_eq!(
            c.to_json(),
            r#"{"Options":{"":{"severity":"Notice"},"Block\"Fetch":{"maxFrequency":2.0,"severity":"Silence"},"X":{"maxFrequency":0.5}}}"#
        );
    }

    #[test]
    fn bad_namespaces_and_frequencies_are_named() {
        for bad in [".A", "A.", "A..B", "A B", "A\u{7}"] {
            let c = config(&[(bad, NamespaceOptions::default())]);
            assert!(
                matches!(c.check(), Err(ConfigProblem::Namespace { ref namespace, .. }) if namespace == bad),
                "{bad:?}"
            );
        }
        for f in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let c = config(&[(
                "A",
                NamespaceOptions {
                    max_frequency: Some(f),
                    ..Default::default()
                },
            )]);
            assert!(matches!(c.check(), Err(ConfigProblem::MaxFrequency { .. })));
        }
        assert!(config(&[
            ("", NamespaceOptions::default()),
            ("A.B-c_d", NamespaceOptions::default())
        ])
        .check()
        .is_ok());
    }
}
