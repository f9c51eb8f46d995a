//! cardano-tracer's `hasForwarding` (re-forwarding to downstream tracers), in upstream's
//! syntax: a three-element list `[Network, prefixes, TraceOptionForwarder]`:
//!
//! * `Network`: `{tag: AcceptAt, contents: ADDR}` (downstream tracers connect to tracerd) or
//!   `{tag: ConnectTo, contents: [ADDR, ...]}` (tracerd dials each downstream);
//! * prefixes: `null` (every trace object) or a list of namespace prefixes, each a list of
//!   segments joined with `.` and matched as a string prefix of the object's namespace;
//! * `TraceOptionForwarder`: `{queueSize, verbosity: Minimum|Maximum, maxReconnectDelay}`,
//!   or the older `connQueueSize`/`disconnQueueSize` (the larger one is the queue size), as
//!   trace-dispatcher reads it; every key optional.
//!
//! Pure: [`parse`] turns the kept JSON value into [`Forwarding`] or every problem with its
//! key path; validation reports them, the daemon uses the value.

use std::time::Duration;

use serde_json::Value;

use super::Network;

/// trace-dispatcher's default `queueSize` (`max connQueueSize disconnQueueSize` = 192).
pub const DEFAULT_QUEUE_SIZE: usize = 192;
/// trace-dispatcher's default `maxReconnectDelay`, in seconds.
pub const DEFAULT_MAX_RECONNECT_DELAY: u64 = 45;
/// Largest `queueSize` accepted (objects per downstream and node).
pub const MAX_QUEUE_SIZE: u64 = 1 << 24;
/// Largest `maxReconnectDelay` accepted, in seconds (a day).
pub const MAX_RECONNECT_DELAY: u64 = 86_400;

/// How much a re-forwarder says about its downstream connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwarderVerbosity {
    /// The first failure of a run of failed attempts, and recovery.
    Minimum,
    /// Every attempt and every connection.
    Maximum,
}

/// `hasForwarding`, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Forwarding {
    /// Where the downstream tracers are.
    pub network: Network,
    /// Namespace prefixes to forward; `None`: everything.
    pub prefixes: Option<Vec<String>>,
    /// Trace objects queued per downstream connection before the oldest are dropped.
    pub queue_size: usize,
    /// What is logged about downstream connections.
    pub verbosity: ForwarderVerbosity,
    /// The longest pause between connection attempts (ConnectTo).
    pub max_reconnect_delay: Duration,
}

impl Forwarding {
    /// Whether an object of `namespace` is forwarded.
    pub fn matches(&self, namespace: &str) -> bool {
        match &self.prefixes {
            None => true,
            Some(prefixes) => prefixes.iter().any(|p| namespace.starts_with(p.as_str())),
        }
    }
}

/// Parses `hasForwarding`'s value; every problem as (key path, message).
pub fn parse(value: &Value) -> Result<Forwarding, Vec<(String, String)>> {
    let mut problems = Vec::new();
    let key = |i: usize| format!("hasForwarding[{i}]");
    let items = match value {
        Value::Array(items) if items.len() == 3 => items,
        other => {
            problems.push((
                "hasForwarding".to_string(),
                format!(
                    "must be a list of three: [Network, namespace prefixes or null, \
                     TraceOptionForwarder], got {}",
                    describe(other)
                ),
            ));
            return Err(problems);
        }
    };
    let network = match serde_json::from_value::<Network>(items[0].clone()) {
        Ok(Network::ConnectTo(addrs)) if addrs.is_empty() => {
            problems.push((
                key(0),
                "ConnectTo needs at least one downstream address".into(),
            ));
            None
        }
        Ok(mut network) => {
            if let Network::ConnectTo(addrs) = &mut network {
                let mut seen = Vec::new();
                addrs.retain(|a| {
                    let new = !seen.contains(a);
                    seen.push(a.clone());
                    new
                });
            }
            Some(network)
        }
        Err(e) => {
            problems.push((
                key(0),
                format!(
                    "must be {{tag: AcceptAt, contents: ADDRESS}} or \
                     {{tag: ConnectTo, contents: [ADDRESS, ...]}}: {e}"
                ),
            ));
            None
        }
    };
    let prefixes = match &items[1] {
        Value::Null => None,
        Value::Array(list) => {
            let mut prefixes = Vec::new();
            for (i, p) in list.iter().enumerate() {
                let segments = match p {
                    Value::Array(s) => s.iter().map(Value::as_str).collect::<Option<Vec<_>>>(),
                    // A dotted string is taken as the joined segments.
                    Value::String(s) => Some(vec![s.as_str()]),
                    _ => None,
                };
                match segments {
                    Some(s) => prefixes.push(s.join(".")),
                    None => problems.push((
                        format!("hasForwarding[1][{i}]"),
                        format!(
                            "must be a list of namespace segments (texts), got {}",
                            describe(p)
                        ),
                    )),
                }
            }
            // No prefixes forwards everything, as `null` does.
            (!prefixes.is_empty()).then_some(prefixes)
        }
        other => {
            problems.push((
                key(1),
                format!(
                    "must be null or a list of namespace prefixes, got {}",
                    describe(other)
                ),
            ));
            None
        }
    };
    let options = options(&items[2], &mut problems);
    match (network, problems.is_empty()) {
        (Some(network), true) => {
            let (queue_size, verbosity, max_reconnect_delay) = options;
            Ok(Forwarding {
                network,
                prefixes,
                queue_size,
                verbosity,
                max_reconnect_delay,
            })
        }
        _ => Err(problems),
    }
}

fn options(
    value: &Value,
    problems: &mut Vec<(String, String)>,
) -> (usize, ForwarderVerbosity, Duration) {
    let mut queue = None;
    let mut legacy: Option<u64> = None;
    let mut verbosity = ForwarderVerbosity::Minimum;
    let mut delay = DEFAULT_MAX_RECONNECT_DELAY;
    let map = match value {
        Value::Object(map) => map,
        Value::Null => return (DEFAULT_QUEUE_SIZE, verbosity, Duration::from_secs(delay)),
        other => {
            problems.push((
                "hasForwarding[2]".into(),
                format!(
                    "must be {{queueSize, verbosity, maxReconnectDelay}}, got {}",
                    describe(other)
                ),
            ));
            return (DEFAULT_QUEUE_SIZE, verbosity, Duration::from_secs(delay));
        }
    };
    let int = |name: &str, v: &Value, min: u64, max: u64, problems: &mut Vec<_>| match v
        .as_u64()
        .or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .map(|f| f as u64)
        }) {
        Some(n) if (min..=max).contains(&n) => Some(n),
        _ => {
            problems.push((
                format!("hasForwarding[2].{name}"),
                format!(
                    "must be an integer from {min} to {max}, got {}",
                    describe(v)
                ),
            ));
            None
        }
    };
    for (name, v) in map {
        match name.as_str() {
            "queueSize" => queue = int(name, v, 1, MAX_QUEUE_SIZE, problems),
            "connQueueSize" | "disconnQueueSize" => {
                if let Some(n) = int(name, v, 1, MAX_QUEUE_SIZE, problems) {
                    legacy = Some(legacy.map_or(n, |l| l.max(n)));
                }
            }
            "maxReconnectDelay" => {
                if let Some(n) = int(name, v, 1, MAX_RECONNECT_DELAY, problems) {
                    delay = n;
                }
            }
            "verbosity" => match v.as_str() {
                Some("Minimum") => verbosity = ForwarderVerbosity::Minimum,
                Some("Maximum") => verbosity = ForwarderVerbosity::Maximum,
                _ => problems.push((
                    "hasForwarding[2].verbosity".into(),
                    format!("must be Minimum or Maximum, got {}", describe(v)),
                )),
            },
            other => problems.push((
                format!("hasForwarding[2].{other}"),
                "unknown key; TraceOptionForwarder has queueSize, verbosity and \
                 maxReconnectDelay (or the older connQueueSize and disconnQueueSize)"
                    .into(),
            )),
        }
    }
    let queue = queue.or(legacy).map_or(DEFAULT_QUEUE_SIZE, |n| n as usize);
    (queue, verbosity, Duration::from_secs(delay))
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(a) => format!("a list of {}", a.len()),
        Value::Object(_) => "a mapping".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn upstreams_syntax_parses_with_its_defaults() {
        let f = parse(&json!([
            {"tag": "ConnectTo", "contents": ["/tmp/b.sock", "/tmp/b.sock", "127.0.0.1:3000"]},
            [["ChainDB"], ["BlockFetch", "Client"]],
            {"connQueueSize": 64, "disconnQueueSize": 128, "verbosity": "Maximum"}
        ]))
        .unwrap();
        let Network::ConnectTo(addrs) = &f.network else {
            panic!("{f:?}")
        };
        assert_eq!(addrs.len(), 2, "duplicates removed");
        assert_eq!(f.queue_size, 128);
        assert_eq!(f.verbosity, ForwarderVerbosity::Maximum);
        assert_eq!(f.max_reconnect_delay, Duration::from_secs(45));
        assert!(f.matches("ChainDB.AddBlockEvent"));
        assert!(f.matches("BlockFetch.Client.CompletedBlockFetch"));
        assert!(!f.matches("BlockFetch.Server"));
        let all =
            parse(&json!([{"tag": "AcceptAt", "contents": "/tmp/r.sock"}, null, {}])).unwrap();
        assert!(all.matches("Anything"));
        assert_eq!(all.queue_size, DEFAULT_QUEUE_SIZE);
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let problems = parse(&json!([
            {"tag": "Dial", "contents": "x"},
            [["ok"], 7],
            {"queueSize": 0, "verbosity": "Loud", "maxReconnectDelay": "soon", "queue": 1}
        ]))
        .unwrap_err();
        let mut keys: Vec<_> = problems.iter().map(|(k, _)| k.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "hasForwarding[0]",
                "hasForwarding[1][1]",
                "hasForwarding[2].maxReconnectDelay",
                "hasForwarding[2].queue",
                "hasForwarding[2].queueSize",
                "hasForwarding[2].verbosity",
            ]
        );
        assert!(parse(&json!({"tag": "AcceptAt"})).is_err());
    }
}
