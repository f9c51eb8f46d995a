//! The pure half of a config reload: compare the running config with the file key by key.
//! Keys in [`RELOADABLE_KEYS`] take effect, every other changed key needs a restart and
//! keeps its running value, so the effective config always describes what tracerd actually
//! does. The I/O (reading the file, probing) and publishing are `crate::running::reload`.

use serde_json::Value;

use crate::config::{self, Config, Probe, Problem};

/// Config keys (dotted paths, a prefix covers its sub-keys) that a reload applies, with when
/// the new value takes effect. Every other key needs a restart.
pub const RELOADABLE_KEYS: &[(&str, &str)] = &[
    (
        "rotation",
        "open log files at their next write; retention at its next pass",
    ),
    ("verbosity", "at once"),
    ("resourceFreq", "at the next resource report"),
    ("tracerd.minLogSeverity", "at once"),
    (
        "tracerd.departedSeriesSecs",
        "at the next sweep (every 0.5 s)",
    ),
    ("tracerd.shutdownGraceSecs", "at once"),
    (
        "tracerd.limits.maxFrameBytes",
        "connections accepted from now on",
    ),
    (
        "tracerd.limits.queueBatches",
        "connections accepted from now on",
    ),
    (
        "tracerd.limits.queueBytes",
        "connections accepted from now on",
    ),
    (
        "tracerd.limits.maxObjectsPerFrame",
        "connections accepted from now on",
    ),
    (
        "tracerd.limits.handshakeTimeoutSecs",
        "connections accepted from now on",
    ),
    (
        "tracerd.limits.idleTimeoutSecs",
        "connections accepted from now on",
    ),
    ("tracerd.durability", "connections accepted from now on"),
];

/// One changed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Dotted path of the key, e.g. `rotation.rpLogLimitBytes`.
    pub key: String,
    /// When it takes effect (reloadable keys), or `"restart"`.
    pub when: &'static str,
}

/// What a reload will do.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The new effective config: the file's values for reloadable keys, the running values for the
    /// rest.
    pub effective: Config,
    /// Changed keys applied now.
    pub applied: Vec<Change>,
    /// Changed keys that need a restart; their running values are kept.
    pub restart: Vec<Change>,
}

/// Compares the running config with a newly loaded one and builds the effective config.
/// Pure: the merged config is validated against `probe`, which must cover both configs
/// (`Probe::gather(&[running, loaded])`).
///
/// Errors (with the problems) only if the merged config fails validation, which a valid file
/// and a valid running config cannot produce unless two keys constrain each other across the
/// reloadable/restart boundary.
pub fn plan(running: &Config, loaded: &Config, probe: &Probe) -> Result<Plan, Vec<Problem>> {
    let old = to_value(running)?;
    let mut new = to_value(loaded)?;
    let mut changed = Vec::new();
    diff(&old, &new, &mut Vec::new(), &mut changed);
    let mut applied = Vec::new();
    let mut restart = Vec::new();
    for path in changed {
        let key = path.join(".");
        match reloadable(&key) {
            Some(when) => applied.push(Change { key, when }),
            None => {
                set_path(&mut new, &path, lookup(&old, &path).cloned());
                restart.push(Change {
                    key,
                    when: "restart",
                });
            }
        }
    }
    let text = new.to_string();
    let effective = config::parse_probed(&text, probe)?.config;
    Ok(Plan {
        effective,
        applied,
        restart,
    })
}

fn to_value(config: &Config) -> Result<Value, Vec<Problem>> {
    serde_json::to_value(config).map_err(|e| {
        vec![Problem {
            key: String::new(),
            line: None,
            message: format!("cannot represent the config as JSON: {e}"),
        }]
    })
}

fn reloadable(key: &str) -> Option<&'static str> {
    RELOADABLE_KEYS
        .iter()
        .find(|(prefix, _)| {
            key == *prefix
                || key
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('.'))
        })
        .map(|(_, when)| *when)
}

/// Collects the paths of leaves (or whole arrays) that differ. A key present on one side only
/// is a difference at that key.
fn diff(old: &Value, new: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                path.push(k.clone());
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff(x, y, path, out),
                    _ => out.push(path.clone()),
                }
                path.pop();
            }
        }
        (a, b) if a != b => out.push(path.clone()),
        _ => {}
    }
}

fn lookup<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, k| v.get(k))
}

/// Sets (or with `None` removes) the value at `path`, creating objects on the way.
fn set_path(root: &mut Value, path: &[String], value: Option<Value>) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = root;
    for k in parents {
        let Value::Object(map) = node else { return };
        node = map
            .entry(k.clone())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    if let Value::Object(map) = node {
        match value {
            Some(v) => {
                map.insert(last.clone(), v);
            }
            None => {
                map.remove(last);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        config::parse_fragment(text).unwrap().config
    }

    #[test]
    fn reloadable_keys_apply_restart_keys_keep_their_running_values() {
        let running = cfg("networkMagic: 1\nrotation: { rpLogLimitBytes: 1000, rpKeepFilesNum: 3 }\nprometheusLabels: { a.b: x }\n");
        let loaded = cfg("networkMagic: 2\nrotation: { rpLogLimitBytes: 500, rpKeepFilesNum: 3 }\nverbosity: Maximum\ntracerd:\n  limits: { queueBatches: 8, maxConnections: 5 }\n  native: { acceptAt: [./other.sock] }\nprometheusLabels: { a.b: y }\n");
        let p = plan(&running, &loaded, &Probe::default()).unwrap();
        let applied: Vec<&str> = p.applied.iter().map(|c| c.key.as_str()).collect();
        let restart: Vec<&str> = p.restart.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(
            applied,
            vec![
                "rotation.rpLogLimitBytes",
                "tracerd.limits.queueBatches",
                "verbosity"
            ]
        );
        assert_eq!(
            restart,
            vec![
                "networkMagic",
                "prometheusLabels.a.b",
                "tracerd.limits.maxConnections",
                "tracerd.native.acceptAt"
            ]
        );
        let e = &p.effective;
        assert_eq!(e.network_magic, 1);
        assert_eq!(e.rotation.as_ref().unwrap().rp_log_limit_bytes, 500);
        assert_eq!(e.tracerd.limits.queue_batches, 8);
        assert_eq!(e.tracerd.limits.max_connections, 16_384);
        assert_eq!(e.tracerd.native.accept_at, running.tracerd.native.accept_at);
        assert_eq!(e.prometheus_labels["a.b"], "x");
        assert_eq!(e.verbosity, config::Verbosity::Maximum);
    }

    #[test]
    fn adding_and_removing_sections_is_a_change_at_the_section() {
        let running = cfg("{}");
        let loaded = cfg("rotation: { rpLogLimitBytes: 10, rpKeepFilesNum: 1 }\nhasPrometheus: { epHost: 127.0.0.1, epPort: 1 }\n");
        let p = plan(&running, &loaded, &Probe::default()).unwrap();
        assert_eq!(p.applied[0].key, "rotation");
        assert!(p.restart[0].key.starts_with("hasPrometheus"), "{p:?}");
        assert!(p.effective.rotation.is_some());
        assert_eq!(p.effective.has_prometheus, running.has_prometheus);
        let back = plan(&p.effective, &running, &Probe::default()).unwrap();
        assert_eq!(back.applied[0].key, "rotation");
        assert_eq!(back.effective, running);
    }

    #[test]
    fn an_identical_file_changes_nothing() {
        let running = cfg("rotation: { rpLogLimitBytes: 10, rpKeepFilesNum: 1 }\n");
        let p = plan(&running, &running.clone(), &Probe::default()).unwrap();
        assert!(p.applied.is_empty() && p.restart.is_empty());
        assert_eq!(p.effective, running);
    }
}
