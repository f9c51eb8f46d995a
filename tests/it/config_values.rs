//! Issue 12, point 11: every numeric config key, set to random values (in range, at and past
//! its bounds, huge, negative, fractional): validation refuses the value with a problem naming
//! the key, or the config is accepted and every duration and size tracerd derives from it is
//! computed without a panic or an overflow. In-process (no daemon: the code under test is the
//! config loader and the derivations the daemon uses).

use proptest::prelude::*;
use serde_json::{json, Value};
use tracerd::config::{self, numeric_keys, NumericKey};

fn base() -> Value {
    json!({
        "networkMagic": 764824073,
        "network": null,
        "hasPrometheus": {"epHost": "127.0.0.1", "epPort": 12808},
        "hasEKG": {"epHost": "127.0.0.1", "epPort": 12809},
        "hasTimeseries": {"epHost": "127.0.0.1", "epPort": 12810},
        "logging": [{"logRoot": "/tmp/tracerd-config-values", "logMode": "FileMode", "logFormat": "ForMachine"}],
        "rotation": {"rpLogLimitBytes": 1000, "rpKeepFilesNum": 3},
        "tracerd": {"limits": {}, "durability": {}, "history": {},
                    "clickhouse": {"url": "http://127.0.0.1:8123"},
                    "remoteWrite": [{"url": "http://127.0.0.1:9090/api/v1/write"}],
                    "loki": {"url": "http://127.0.0.1:3100"},
                    "forward": [{"name": "central", "address": "127.0.0.1:3200"}],
                    "capture": {"budgetBytes": 1099511627776u64,
                                "atStart": [{"node": "n1", "seconds": 1, "maxBytes": 1024}]}}
    })
}

fn dotted(key: &NumericKey) -> String {
    let mut out = String::new();
    for seg in &key.path {
        match seg {
            Some(name) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(name);
            }
            None => out.push_str("[0]"),
        }
    }
    out
}

/// `base()` with `key` set to `value`.
fn with(key: &NumericKey, value: f64) -> Value {
    let mut root = base();
    let mut at = &mut root;
    let (last, parents) = key.path.split_last().unwrap();
    for seg in parents {
        at = match seg {
            Some(name) => {
                if !at.get(*name).is_some_and(|v| v.is_object() || v.is_array()) {
                    at[*name] = json!({});
                }
                &mut at[*name]
            }
            None => &mut at[0],
        };
    }
    let number = if value.fract() == 0.0 && value >= 0.0 && value <= u64::MAX as f64 {
        json!(value as u64)
    } else if value.fract() == 0.0 && value < 0.0 && value >= i64::MIN as f64 {
        json!(value as i64)
    } else {
        json!(value)
    };
    at[last.expect("a numeric key is a mapping key")] = number;
    root
}

fn value_for(key: &NumericKey) -> impl Strategy<Value = f64> {
    let (min, max) = (key.min, key.max);
    prop_oneof![
        (0.0f64..=1.0).prop_map(move |t| min + t * (max - min)),
        Just(min),
        Just(max),
        Just(min - 1.0),
        Just(max + 1.0),
        Just(max * 2.0 + 1.0),
        Just(1e300),
        Just(-1e300),
        Just(-1.0),
        Just(0.5),
        Just(9_223_372_036_854_775_807.0),
        Just(18_446_744_073_709_551_615.0),
    ]
}

/// Everything tracerd derives from a loaded config, as the daemon derives it.
fn derive_everything(config: &config::Config) {
    let now = std::time::Instant::now();
    let t = &config.tracerd;
    for d in [
        t.limits.handshake_timeout(),
        t.limits.idle_timeout(),
        t.shutdown_grace(),
        t.departed_series(),
        t.durability.fsync_interval(),
    ] {
        let _ = now + d;
    }
    if let Some(r) = &config.rotation {
        let _ = r.max_age_secs();
    }
    if let Some(ch) = &t.clickhouse {
        let _ = now + ch.batch.timeout();
        let _ = now + std::time::Duration::from_millis(ch.batch.poll_ms);
    }
    for rw in &t.remote_write {
        for secs in [rw.interval_secs, rw.timeout_secs, rw.queue.max_backoff_secs] {
            let _ = now + std::time::Duration::from_secs_f64(secs.clamp(0.01, 3600.0));
        }
    }
    let effective = tracerd::running::Effective::new(config.clone());
    let _ = effective.logs.clone();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_numeric_key_is_refused_by_name_or_safe_to_use(
        (key, value) in (0..numeric_keys().len()).prop_flat_map(|i| {
            let key = numeric_keys()[i].clone();
            let v = value_for(&key);
            (Just(key), v)
        })
    ) {
        let path = dotted(&key);
        let text = serde_json::to_string(&with(&key, value)).unwrap();
        let in_range = value >= key.min && value <= key.max && (!key.integer || value.fract() == 0.0);
        match config::parse(&text) {
            Ok(loaded) => {
                prop_assert!(in_range, "{path} = {value} (range {}..={}) was accepted", key.min, key.max);
                derive_everything(&loaded.config);
            }
            Err(problems) => {
                prop_assert!(
                    problems.iter().any(|p| p.key == path || p.key.starts_with(&path)),
                    "{path} = {value}: refused without naming the key: {problems:?}"
                );
            }
        }
    }
}

/// The list of numeric keys is the shape's, so a key added later is covered; a few known
/// ones must be in it.
#[test]
fn the_numeric_keys_include_the_ones_that_once_broke() {
    let keys: Vec<String> = numeric_keys().iter().map(dotted).collect();
    for k in [
        "tracerd.limits.handshakeTimeoutSecs",
        "rotation.rpMaxAgeHours",
        "rotation.rpMaxAgeMinutes",
        "tracerd.limits.metricBytes",
        "tracerd.departedSeriesSecs",
    ] {
        assert!(keys.iter().any(|x| x == k), "{k} not among {keys:?}");
    }
}

/// The harness is real: for every key a value inside its range is accepted, and one past its
/// maximum is refused naming the key.
#[test]
fn each_key_accepts_its_range_and_refuses_past_it() {
    for key in numeric_keys() {
        let path = dotted(&key);
        let mid = if key.integer {
            ((key.min + key.max) / 2.0).floor()
        } else {
            (key.min + key.max) / 2.0
        };
        let ok = config::parse(&serde_json::to_string(&with(&key, mid)).unwrap());
        assert!(ok.is_ok(), "{path} = {mid} refused: {:?}", ok.err());
        derive_everything(&ok.unwrap().config);
        let past = config::parse(&serde_json::to_string(&with(&key, key.max + 1.0)).unwrap());
        let problems = past
            .err()
            .unwrap_or_else(|| panic!("{path} = max + 1 accepted"));
        assert!(
            problems.iter().any(|p| p.key == path),
            "{path}: {problems:?}"
        );
    }
}
