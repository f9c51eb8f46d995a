//! The shape of a config file, checked before serde sees it: a declarative description of
//! every key ([`TOP`]) and a walker that reports **every** problem at once, each with its key
//! path and a sentence ("`ekgRequestFreq` must be a number of seconds from 0.001 to 3600, got
//! a list"), instead of serde's first "invalid type: ...".
//!
//! The walker also cleans the parsed tree so serde can read it: an optional key given as
//! `null` is removed (cardano-tracer reads it as absent: aeson `Maybe`), except where `null`
//! means "off" (`network`, `hasPrometheus`); integral floats for integer keys (`1e7`) become
//! integers; obsolete keys are dropped with a warning; a key with a problem is removed, so the
//! default takes its place and the later, cross-key checks (`validate.rs`) still run and
//! report too. Pure: no I/O.
//!
//! Every numeric key has a range here, so no arithmetic on a validated config value can
//! overflow (issue 12 point 11): the bounds are chosen so that derived durations and sizes
//! stay finite and small (`max * 3600 * 1e9` fits an `i64` of nanoseconds).

use serde_norway::{Mapping, Number, Value};

use super::Address;

mod text;
pub(super) use text::line_of;
use text::suggest;

/// What a key holds.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    /// An integer in `min..=max`, counted in `unit` (may be empty).
    Int(u64, u64, &'static str),
    /// A number in `min..=max` of `unit` (seconds, hours, ...).
    Num(f64, f64, &'static str),
    /// `true` or `false`.
    Bool,
    /// A string (a number is taken as its text, e.g. a numeric gid).
    Text,
    /// cardano-tracer's socket address syntax (`host:port` or a path).
    Addr,
    /// One of these words.
    Enum(&'static [&'static str]),
    /// A mapping with these keys.
    Obj(&'static [Field]),
    /// A list of these.
    List(&'static Kind),
    /// A mapping of text to text.
    TextMap,
    /// cardano-tracer's `network`: `{tag: AcceptAt, contents: ADDR}` or
    /// `{tag: ConnectTo, contents: [ADDR, ...]}`.
    Network,
    /// `metricsHelp`: a file path or a mapping of text to text.
    Help,
    /// Anything (kept as is).
    Any,
}

/// What `null` means for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Null {
    /// The default (the key is removed).
    Default,
    /// Off (kept: serde reads it as `None`).
    Off,
}

/// One key of a mapping.
#[derive(Debug, Clone, Copy)]
pub(super) struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    pub null: Null,
}

const fn opt(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: false,
        null: Null::Default,
    }
}

const fn req(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: true,
        null: Null::Default,
    }
}

const fn off(name: &'static str, kind: Kind, required: bool) -> Field {
    Field {
        name,
        kind,
        required,
        null: Null::Off,
    }
}

/// Upper bound of every duration key in seconds: an hour. Longer handshake, idle or shutdown
/// timeouts are mistakes, and the bound keeps every derived `Duration` small.
pub const MAX_TIMEOUT_SECS: f64 = 3600.0;
/// A hundred years, the longest retention age, in hours.
pub const MAX_AGE_HOURS: f64 = 876_600.0;

const ENDPOINT: &[Field] = &[
    req("epHost", Kind::Text),
    req("epPort", Kind::Int(0, 65_535, "")),
    opt("epForceSSL", Kind::Bool),
];
const TLS: &[Field] = &[
    req("certificateFile", Kind::Text),
    req("certificateKeyFile", Kind::Text),
    opt("certificateChain", Kind::List(&Kind::Text)),
];
const LOGGING: &[Field] = &[
    req("logRoot", Kind::Text),
    req("logMode", Kind::Enum(&["FileMode", "JournalMode"])),
    req("logFormat", Kind::Enum(&["ForHuman", "ForMachine"])),
];
const ROTATION: &[Field] = &[
    opt("rpFrequencySecs", Kind::Int(1, 31_536_000, "seconds")),
    req("rpLogLimitBytes", Kind::Int(1, 1 << 50, "bytes")),
    opt("rpMaxAgeMinutes", Kind::Int(0, 52_596_000, "minutes")),
    opt("rpMaxAgeHours", Kind::Num(0.0, MAX_AGE_HOURS, "hours")),
    req("rpKeepFilesNum", Kind::Int(0, 1_000_000, "files")),
];
const NATIVE: &[Field] = &[
    opt("acceptAt", Kind::List(&Kind::Addr)),
    opt("tls", Kind::Obj(NATIVE_TLS)),
    opt("identities", Kind::List(&Kind::Obj(IDENTITY))),
];
const IDENTITY: &[Field] = &[
    req("names", Kind::List(&Kind::Text)),
    opt("certificate", Kind::Text),
    opt("tokenFile", Kind::Text),
];
const NATIVE_TLS: &[Field] = &[
    req("certificateFile", Kind::Text),
    req("certificateKeyFile", Kind::Text),
    opt("certificateChain", Kind::List(&Kind::Text)),
    opt("clientCaFile", Kind::Text),
];
const LIMITS: &[Field] = &[
    opt("maxFrameBytes", Kind::Int(64, 1 << 30, "bytes")),
    opt("queueBatches", Kind::Int(1, 65_536, "batches")),
    opt("queueBytes", Kind::Int(1024, 1 << 40, "bytes")),
    opt("totalQueueBytes", Kind::Int(1024, 1 << 40, "bytes")),
    opt("metricBytes", Kind::Int(1 << 16, 1 << 40, "bytes")),
    opt("maxObjectsPerFrame", Kind::Int(1, 1 << 24, "trace objects")),
    opt(
        "handshakeTimeoutSecs",
        Kind::Num(0.001, MAX_TIMEOUT_SECS, "seconds"),
    ),
    opt("maxConnections", Kind::Int(1, 1_000_000, "connections")),
    opt("idleTimeoutSecs", Kind::Num(0.001, 86_400.0, "seconds")),
    opt("perSource", Kind::Obj(PER_SOURCE)),
    opt("http", Kind::Obj(HTTP_LIMITS)),
];
const PER_SOURCE: &[Field] = &[
    opt("maxConnections", Kind::Int(1, 1_000_000, "connections")),
    opt(
        "handshakesPerSec",
        Kind::Num(0.001, 1_000_000.0, "connections per second"),
    ),
    opt("handshakeBurst", Kind::Int(1, 1_000_000, "connections")),
    opt("exempt", Kind::List(&Kind::Text)),
];
const HTTP_LIMITS: &[Field] = &[
    opt("maxConnections", Kind::Int(1, 65_536, "connections")),
    opt(
        "maxConnectionsPerClient",
        Kind::Int(1, 65_536, "connections"),
    ),
];
const DURABILITY: &[Field] = &[
    opt("fsync", Kind::Enum(&["never", "batch", "interval"])),
    opt("fsyncIntervalMs", Kind::Int(0, 3_600_000, "milliseconds")),
    opt("onWriteError", Kind::Enum(&["backpressure", "drop"])),
];
const UNIX_SOCKET: &[Field] = &[opt("mode", Kind::Text), opt("group", Kind::Text)];
const JOURNAL: &[Field] = &[opt("socket", Kind::Text)];
const SEVERITIES: &[&str] = &[
    "Debug",
    "Info",
    "Notice",
    "Warning",
    "Error",
    "Critical",
    "Alert",
    "Emergency",
];
const TRACERD: &[Field] = &[
    opt("native", Kind::Obj(NATIVE)),
    opt("limits", Kind::Obj(LIMITS)),
    opt("durability", Kind::Obj(DURABILITY)),
    opt(
        "shutdownGraceSecs",
        Kind::Num(0.001, MAX_TIMEOUT_SECS, "seconds"),
    ),
    opt("minLogSeverity", Kind::Enum(SEVERITIES)),
    opt("unixSocket", Kind::Obj(UNIX_SOCKET)),
    opt("journal", Kind::Obj(JOURNAL)),
    opt("openMetricsNames", Kind::Bool),
    opt("departedSeriesSecs", Kind::Int(0, 2_592_000, "seconds")),
    opt("history", Kind::Obj(HISTORY)),
    opt("alerts", Kind::Obj(ALERTS)),
    opt("httpAuth", Kind::Obj(HTTP_AUTH)),
    opt("cardanoAllowFrom", Kind::List(&Kind::Text)),
    opt("cardanoTraceRequests", Kind::Int(1, 8, "requests")),
    opt("clickhouse", Kind::Obj(CLICKHOUSE)),
    opt("loki", Kind::Obj(LOKI)),
    opt("shipStateDir", Kind::Text),
    opt("ui", Kind::Obj(UI)),
    opt("remoteWrite", Kind::List(&Kind::Obj(REMOTE_WRITE))),
    opt("forward", Kind::List(&Kind::Obj(FORWARD))),
    opt("capture", Kind::Obj(CAPTURE)),
];
const CAPTURE: &[Field] = &[
    opt("budgetBytes", Kind::Int(0, 1 << 40, "bytes")),
    opt("atStart", Kind::List(&Kind::Obj(CAPTURE_AT_START))),
];
const CAPTURE_AT_START: &[Field] = &[
    req("node", Kind::Text),
    req("seconds", Kind::Int(1, 3600, "seconds")),
    opt("maxBytes", Kind::Int(1024, 1 << 34, "bytes")),
];
const FORWARD: &[Field] = &[
    req("name", Kind::Text),
    req("address", Kind::Addr),
    opt("namespaces", Kind::List(&Kind::Text)),
    opt("batchObjects", Kind::Int(1, 100_000, "trace objects")),
    opt("maxInFlight", Kind::Int(1, 64, "batches")),
    opt("pollMs", Kind::Int(1, 3_600_000, "milliseconds")),
];
const REMOTE_WRITE: &[Field] = &[
    req("url", Kind::Text),
    opt("headers", Kind::TextMap),
    opt("bearerTokenFile", Kind::Text),
    opt("basicAuth", Kind::Obj(BASIC_AUTH)),
    opt("externalLabels", Kind::TextMap),
    opt("intervalSecs", Kind::Num(0.1, MAX_TIMEOUT_SECS, "seconds")),
    opt("queue", Kind::Obj(RW_QUEUE)),
    opt("timeoutSecs", Kind::Num(0.1, MAX_TIMEOUT_SECS, "seconds")),
    opt("tls", Kind::Obj(CLIENT_TLS)),
];
const BASIC_AUTH: &[Field] = &[req("username", Kind::Text), req("passwordFile", Kind::Text)];
const RW_QUEUE: &[Field] = &[
    opt("capacity", Kind::Int(1, 100_000_000, "samples")),
    opt("shards", Kind::Int(1, 256, "shards")),
    opt("maxSamplesPerSend", Kind::Int(1, 1_000_000, "samples")),
    opt(
        "maxBackoffSecs",
        Kind::Num(0.01, MAX_TIMEOUT_SECS, "seconds"),
    ),
];
const HTTP_AUTH: &[Field] = &[
    opt("scrape", Kind::Obj(AUTH_GROUP)),
    opt("api", Kind::Obj(AUTH_GROUP)),
];
const AUTH_GROUP: &[Field] = &[
    opt("bearerTokenFiles", Kind::List(&Kind::Text)),
    opt("basicAuthFiles", Kind::List(&Kind::Text)),
];
const SHIP_BATCH: &[Field] = &[
    opt("maxRows", Kind::Int(1, 1_000_000, "rows")),
    opt("maxBytes", Kind::Int(1024, 1 << 30, "bytes")),
    opt("pollMs", Kind::Int(1, 3_600_000, "milliseconds")),
    opt("timeoutSecs", Kind::Num(0.1, MAX_TIMEOUT_SECS, "seconds")),
];
const CLICKHOUSE: &[Field] = &[
    req("url", Kind::Text),
    opt("database", Kind::Text),
    opt("table", Kind::Text),
    opt("user", Kind::Text),
    opt("passwordFile", Kind::Text),
    opt("tracer", Kind::Text),
    opt("batch", Kind::Obj(SHIP_BATCH)),
];
const LOKI: &[Field] = &[
    req("url", Kind::Text),
    opt("tenant", Kind::Text),
    opt("labels", Kind::TextMap),
    opt("headers", Kind::TextMap),
    opt("tls", Kind::Obj(CLIENT_TLS)),
    opt("batch", Kind::Obj(SHIP_BATCH)),
];
const CLIENT_TLS: &[Field] = &[
    req("caFile", Kind::Text),
    opt("certFile", Kind::Text),
    opt("keyFile", Kind::Text),
];
const UI: &[Field] = &[opt("enabled", Kind::Bool)];
const ALERTS: &[Field] = &[
    opt("ruleFiles", Kind::List(&Kind::Text)),
    opt("traceRuleFiles", Kind::List(&Kind::Text)),
    opt("alertmanagers", Kind::List(&Kind::Text)),
    opt("webhooks", Kind::List(&Kind::Text)),
    opt(
        "evaluationIntervalSecs",
        Kind::Num(0.1, MAX_TIMEOUT_SECS, "seconds"),
    ),
    opt(
        "resendDelaySecs",
        Kind::Num(0.0, MAX_TIMEOUT_SECS, "seconds"),
    ),
    opt("queueCapacity", Kind::Int(1, 1_000_000, "alerts")),
    opt(
        "forGracePeriodSecs",
        Kind::Num(0.0, MAX_TIMEOUT_SECS, "seconds"),
    ),
];
const HISTORY: &[Field] = &[
    opt("retentionHours", Kind::Num(0.001, MAX_AGE_HOURS, "hours")),
    opt("pruneEveryMinutes", Kind::Num(0.001, 10_080.0, "minutes")),
    opt("maxBytes", Kind::Int(1 << 20, 1 << 40, "bytes")),
    opt("maxSeries", Kind::Int(1, 100_000_000, "series")),
    opt(
        "sampleIntervalSecs",
        Kind::Num(0.1, MAX_TIMEOUT_SECS, "seconds"),
    ),
];

/// Every key of a config file. cardano-tracer requires `networkMagic`, `network` and
/// `logging`; so does tracerd for a file (`network: null` turns Cardano off).
pub(super) const TOP: &[Field] = &[
    req("networkMagic", Kind::Int(0, u32::MAX as u64, "")),
    off("network", Kind::Network, true),
    opt("loRequestNum", Kind::Int(1, 65_535, "trace objects")),
    opt(
        "ekgRequestFreq",
        Kind::Num(0.001, MAX_TIMEOUT_SECS, "seconds"),
    ),
    opt("ekgRequestFull", Kind::Bool),
    opt("hasEKG", Kind::Obj(ENDPOINT)),
    off("hasPrometheus", Kind::Obj(ENDPOINT), false),
    opt("hasTimeseries", Kind::Obj(ENDPOINT)),
    opt("tlsCertificate", Kind::Obj(TLS)),
    req("logging", Kind::List(&Kind::Obj(LOGGING))),
    opt("rotation", Kind::Obj(ROTATION)),
    opt(
        "verbosity",
        Kind::Enum(&["Minimum", "ErrorsOnly", "Maximum"]),
    ),
    opt("metricsNoSuffix", Kind::Bool),
    opt("metricsHelp", Kind::Help),
    opt("prometheusLabels", Kind::TextMap),
    opt("resourceFreq", Kind::Int(0, 604_800_000, "milliseconds")),
    opt("hasForwarding", Kind::Any),
    opt("tracerd", Kind::Obj(TRACERD)),
];

/// A numeric key of the config and its checked range.
#[derive(Debug, Clone, PartialEq)]
pub struct NumericKey {
    /// Its path; `None` stands for the first element of a list.
    pub path: Vec<Option<&'static str>>,
    /// Smallest value accepted.
    pub min: f64,
    /// Largest value accepted.
    pub max: f64,
    /// Whether only integers are accepted.
    pub integer: bool,
}

/// Every numeric key of the declared shape (the property test of issue 12, point 11 sets each
/// to random values).
pub fn numeric_keys() -> Vec<NumericKey> {
    fn walk(fields: &[Field], path: &mut Vec<Option<&'static str>>, out: &mut Vec<NumericKey>) {
        for f in fields {
            path.push(Some(f.name));
            kind(&f.kind, path, out);
            path.pop();
        }
    }
    fn kind(k: &Kind, path: &mut Vec<Option<&'static str>>, out: &mut Vec<NumericKey>) {
        match *k {
            Kind::Int(min, max, _) => out.push(NumericKey {
                path: path.clone(),
                min: min as f64,
                max: max as f64,
                integer: true,
            }),
            Kind::Num(min, max, _) => out.push(NumericKey {
                path: path.clone(),
                min,
                max,
                integer: false,
            }),
            Kind::Obj(fields) => walk(fields, path, out),
            Kind::List(inner) => {
                path.push(None);
                kind(inner, path, out);
                path.pop();
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(TOP, &mut Vec::new(), &mut out);
    out
}

/// One segment of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

/// A key path: `rotation.rpLogLimitBytes`, `logging[1].logMode`.
pub(super) fn show_path(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Parses a key path as [`show_path`] prints it.
pub(super) fn parse_path(key: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in key.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            out.push(Seg::Key(rest[..open].to_string()));
            rest = &rest[open..];
            while let Some(close) = rest.find(']') {
                if let Ok(i) = rest[1..close].parse() {
                    out.push(Seg::Index(i));
                }
                rest = &rest[close + 1..];
            }
        } else {
            out.push(Seg::Key(rest.to_string()));
        }
    }
    out
}

/// A problem the walker found: where, what, and whether it is only a warning.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Found {
    pub path: Vec<Seg>,
    pub message: String,
    pub warning: bool,
}

/// Keys cardano-tracer once had and no longer reads: a warning, not an error.
pub const OBSOLETE_KEYS: &[&str] = &["hasRTView", "metricsComp", "WarnRTViewMissing"];

/// Checks `root` against [`TOP`], cleaning it in place (see the module docs). `require_top`
/// is false only for the internal fragments tests use.
pub(super) fn check(root: &mut Value, require_top: bool) -> Vec<Found> {
    let mut w = Walker { found: Vec::new() };
    let mut path = Vec::new();
    if root.is_null() {
        if require_top {
            w.problem(
                &path,
                "the file is empty: a config needs at least `networkMagic`, `network` and \
                 `logging`"
                    .to_string(),
            );
        }
        *root = Value::Mapping(Mapping::new());
        return w.found;
    }
    let Value::Mapping(map) = root else {
        w.problem(
            &path,
            format!("a config must be a mapping of keys, got {}", got(root)),
        );
        *root = Value::Mapping(Mapping::new());
        return w.found;
    };
    for key in OBSOLETE_KEYS {
        if map.remove(*key).is_some() {
            w.found.push(Found {
                path: vec![Seg::Key(key.to_string())],
                message: "obsolete cardano-tracer key, ignored".to_string(),
                warning: true,
            });
        }
    }
    w.object(map, TOP, &mut path, require_top);
    w.found
}

struct Walker {
    found: Vec<Found>,
}

impl Walker {
    fn problem(&mut self, path: &[Seg], message: String) {
        self.found.push(Found {
            path: path.to_vec(),
            message,
            warning: false,
        });
    }

    /// Checks one mapping against its fields; returns false if it cannot stand (a required
    /// key is missing), so the caller removes it.
    fn object(
        &mut self,
        map: &mut Mapping,
        fields: &[Field],
        path: &mut Vec<Seg>,
        require: bool,
    ) -> bool {
        let mut whole = true;
        let mut unknown: Vec<String> = Vec::new();
        let mut reported: Vec<&str> = Vec::new();
        let keys: Vec<Value> = map.keys().cloned().collect();
        for key in keys {
            let Some(name) = key.as_str().map(str::to_string) else {
                path.push(Seg::Key(format!("{key:?}")));
                self.problem(path, "a key must be text".to_string());
                path.pop();
                map.remove(&key);
                continue;
            };
            let Some(field) = fields.iter().find(|f| f.name == name) else {
                path.push(Seg::Key(name.clone()));
                let message = match suggest(&name, fields.iter().map(|f| f.name)) {
                    Some(s) => format!("unknown key; did you mean `{s}`?"),
                    None => "unknown key".to_string(),
                };
                self.problem(path, message);
                path.pop();
                map.remove(&key);
                unknown.push(name);
                continue;
            };
            path.push(Seg::Key(name));
            let keep = match map.get_mut(&key) {
                Some(v) if v.is_null() => field.null == Null::Off,
                Some(v) => self.value(v, &field.kind, path),
                None => true,
            };
            if !keep {
                let was_null = map.get(&key).is_some_and(Value::is_null);
                map.remove(&key);
                if !was_null {
                    reported.push(field.name);
                }
            }
            path.pop();
        }
        for field in fields.iter().filter(|f| f.required) {
            if map.contains_key(field.name) {
                continue;
            }
            whole = false;
            if reported.contains(&field.name) {
                continue;
            }
            // Named already as the near miss of an unknown key: one problem, not two.
            let near_miss = unknown
                .iter()
                .any(|u| suggest(u, std::iter::once(field.name)).is_some());
            if require && !near_miss {
                path.push(Seg::Key(field.name.to_string()));
                self.problem(path, format!("`{}` is required", field.name));
                path.pop();
            }
        }
        whole || !require
    }

    /// Checks one value; returns false if it must be removed (it has a problem).
    fn value(&mut self, v: &mut Value, kind: &Kind, path: &mut Vec<Seg>) -> bool {
        let what = |v: &Value| got(v);
        match *kind {
            Kind::Int(min, max, unit) => {
                let n = v.as_u64().or_else(|| {
                    v.as_f64()
                        .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
                        .map(|f| f as u64)
                });
                match n {
                    Some(n) if (min..=max).contains(&n) => {
                        *v = Value::Number(Number::from(n));
                        true
                    }
                    _ => {
                        let unit = if unit.is_empty() {
                            String::new()
                        } else {
                            format!(" ({unit})")
                        };
                        self.problem(
                            path,
                            format!(
                                "`{}` must be an integer from {min} to {max}{unit}, got {}",
                                leaf(path),
                                what(v)
                            ),
                        );
                        false
                    }
                }
            }
            Kind::Num(min, max, unit) => match v.as_f64() {
                Some(f) if f.is_finite() && f >= min && f <= max => true,
                _ => {
                    self.problem(
                        path,
                        format!(
                            "`{}` must be a number of {unit} from {min} to {max}, got {}",
                            leaf(path),
                            what(v)
                        ),
                    );
                    false
                }
            },
            Kind::Bool => self.expect(v.is_bool(), v, path, "`true` or `false`"),
            Kind::Text => {
                if let Value::Number(n) = v {
                    *v = Value::String(n.to_string());
                }
                self.expect(v.is_string(), v, path, "text")
            }
            Kind::Addr => match v.as_str() {
                Some(s) => match Address::parse(s) {
                    Ok(_) => true,
                    Err(e) => {
                        self.problem(path, format!("{s:?} is not an address: {e}"));
                        false
                    }
                },
                None => self.expect(false, v, path, "an address (`host:port` or a socket path)"),
            },
            Kind::Enum(words) => match v.as_str() {
                Some(s) if words.contains(&s) => true,
                Some(s) => {
                    let hint = suggest(s, words.iter().copied())
                        .map(|w| format!("; did you mean `{w}`?"))
                        .unwrap_or_default();
                    self.problem(
                        path,
                        format!(
                            "`{}` must be one of {}, got {s:?}{hint}",
                            leaf(path),
                            words.join(", ")
                        ),
                    );
                    false
                }
                None => self.expect(false, v, path, &format!("one of {}", words.join(", "))),
            },
            Kind::Obj(fields) => match v {
                Value::Mapping(map) => self.object(map, fields, path, true),
                _ => self.expect(false, v, path, "a mapping"),
            },
            Kind::List(item) => {
                let Value::Sequence(items) = v else {
                    return self.expect(false, v, path, "a list");
                };
                let mut i = 0;
                let mut index = 0;
                while i < items.len() {
                    path.push(Seg::Index(index));
                    let keep = !items[i].is_null() && self.value(&mut items[i], item, path);
                    if items[i].is_null() {
                        self.problem(path, "a list item must not be null".to_string());
                    }
                    path.pop();
                    if keep {
                        i += 1;
                    } else {
                        items.remove(i);
                    }
                    index += 1;
                }
                // Every item had a problem: drop the list (each item was reported).
                !(items.is_empty() && index > 0)
            }
            Kind::TextMap => self.text_map(v, path),
            Kind::Help => match v {
                Value::String(_) => true,
                Value::Mapping(_) => self.text_map(v, path),
                _ => self.expect(
                    false,
                    v,
                    path,
                    "a file path or a mapping of metric name to help text",
                ),
            },
            Kind::Network => self.network(v, path),
            Kind::Any => true,
        }
    }

    fn expect(&mut self, ok: bool, v: &Value, path: &[Seg], what: &str) -> bool {
        if !ok {
            self.problem(
                path,
                format!("`{}` must be {what}, got {}", leaf(path), got(v)),
            );
        }
        ok
    }

    fn text_map(&mut self, v: &mut Value, path: &mut Vec<Seg>) -> bool {
        let Value::Mapping(map) = v else {
            return self.expect(false, v, path, "a mapping of text to text");
        };
        let mut ok = true;
        for (k, val) in map.iter_mut() {
            if let Value::Number(n) = val {
                *val = Value::String(n.to_string());
            }
            if !(k.is_string() && val.is_string()) {
                path.push(Seg::Key(k.as_str().unwrap_or("?").to_string()));
                self.problem(path, format!("must be text, got {}", got(val)));
                path.pop();
                ok = false;
            }
        }
        ok
    }

    fn network(&mut self, v: &mut Value, path: &mut Vec<Seg>) -> bool {
        let Value::Mapping(map) = v else {
            return self.expect(
                false,
                v,
                path,
                "`{tag: AcceptAt, contents: ADDRESS}` or `{tag: ConnectTo, contents: [ADDRESS, ...]}`",
            );
        };
        const TAGS: &[&str] = &["AcceptAt", "ConnectTo"];
        let shape: &[Field] = &[req("tag", Kind::Enum(TAGS)), req("contents", Kind::Any)];
        if !self.object(map, shape, path, true) {
            return false;
        }
        let tag = map.get("tag").and_then(Value::as_str).unwrap_or("");
        let kind = if tag == "AcceptAt" {
            Kind::Addr
        } else {
            Kind::List(&Kind::Addr)
        };
        path.push(Seg::Key("contents".to_string()));
        let ok = match map.get_mut("contents") {
            Some(c) => self.value(c, &kind, path),
            None => false,
        };
        path.pop();
        ok
    }
}

/// The last key of a path (what a sentence names).
fn leaf(path: &[Seg]) -> String {
    path.iter()
        .rev()
        .find_map(|s| match s {
            Seg::Key(k) => Some(k.clone()),
            Seg::Index(_) => None,
        })
        .unwrap_or_default()
}

/// What a value is, in words: "a list", "the text \"x\"", "the number 1e300".
fn got(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.abs() >= 1e15 => format!("the number {f:e}"),
            _ => format!("the number {n}"),
        },
        Value::String(s) => {
            let short: String = s.chars().take(40).collect();
            let more = if short.len() < s.len() { "..." } else { "" };
            format!("the text {short:?}{more}")
        }
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a mapping".to_string(),
        Value::Tagged(t) => format!("a YAML tag {}", t.tag),
    }
}
