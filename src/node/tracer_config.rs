//! A node's effective tracing configuration (issue 19): cardano-node traces it once it has
//! built its tracers, as `Reflection.TracerConfigInfo` with the machine form
//! `{"conf": <TraceConfig JSON>}` (trace-dispatcher's `traceEffectiveConfiguration`; the shape is
//! described in `../scratch/upstream/NOTES.md` §e). Ingest offers every trace object to the
//! node's [`TracerConfigSlot`]; the HTTP routes serve what it holds and diff two nodes.
//!
//! The slot belongs to the node's name, not to one session: a node traces its configuration
//! only when it starts, so a reconnect (tracerd or the network restarted, the node did not)
//! keeps the last one reported, with its time. At most [`MAX_CONFIG_BYTES`] of compact JSON
//! text is kept per node name; a larger report is refused, and so is one that is not JSON or
//! has no `conf` object: the previous configuration stays, and the refusal is counted and
//! served by the route with its reason. Extraction and the diff are pure.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::model::{MachineForm, TraceObject};

/// The namespace of the trace that carries a node's effective tracing configuration.
pub const NAMESPACE: &str = "Reflection.TracerConfigInfo";

/// Largest configuration kept per node name, in bytes of its machine text (a mainnet node's
/// is about 2 KiB; 256 KiB leaves room for thousands of namespace options).
pub const MAX_CONFIG_BYTES: usize = 256 * 1024;

/// Why a `Reflection.TracerConfigInfo` trace was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The trace's machine text is larger than [`MAX_CONFIG_BYTES`].
    #[error("the trace's machine text is {bytes} bytes, more than the {max} kept per node")]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// [`MAX_CONFIG_BYTES`].
        max: usize,
    },
    /// The machine text is not JSON.
    #[error("the trace's machine text is not JSON: {0}")]
    NotJson(String),
    /// The payload has no `conf` object.
    #[error("the trace's payload has no \"conf\" object (expected {{\"conf\": <TraceConfig>}})")]
    NoConf,
}

/// One configuration a node reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    /// The `conf` object as compact JSON text (at most [`MAX_CONFIG_BYTES`]).
    pub config: Arc<str>,
    /// When the node traced it (the trace object's time), nanoseconds since the Unix epoch.
    pub reported_at_ns: i64,
    /// When tracerd received it, milliseconds since the Unix epoch.
    pub received_at_ms: u64,
}

impl Reported {
    /// The configuration as a JSON value (it was valid JSON when it was taken).
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.config).unwrap_or(Value::Null)
    }
}

/// What a slot holds: the last configuration taken and the last refusal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotState {
    /// The last configuration the node reported that was taken.
    pub current: Option<Reported>,
    /// Reports refused so far.
    pub refused: u64,
    /// Why the last refused report was refused.
    pub last_error: Option<ConfigError>,
}

/// The reported configuration of one node name; shared by its leases and the registry.
#[derive(Debug, Default)]
pub struct TracerConfigSlot(Mutex<SlotState>);

impl TracerConfigSlot {
    /// Takes the configuration from every `Reflection.TracerConfigInfo` object in `objects`
    /// (the last one wins), received at `now_ms`. Other objects cost one string comparison.
    pub fn offer(&self, objects: &[TraceObject], now_ms: u64) {
        for obj in objects.iter().filter(|o| o.namespace == NAMESPACE) {
            let result = extract(obj);
            let mut state = crate::sync::lock(&self.0);
            match result {
                Ok(config) => {
                    state.current = Some(Reported {
                        config,
                        reported_at_ns: obj.timestamp_ns,
                        received_at_ms: now_ms,
                    })
                }
                Err(e) => {
                    state.refused += 1;
                    state.last_error = Some(e);
                }
            }
        }
    }

    /// A copy of what the slot holds.
    pub fn state(&self) -> SlotState {
        crate::sync::lock(&self.0).clone()
    }
}

/// The `conf` object of a `Reflection.TracerConfigInfo` trace, as compact JSON text. A
/// Cardano object's machine text is the node's whole line (`{"at":…,"ns":…,"data":{"conf":…}}`);
/// a native object's is the payload (`{"conf":…}`).
pub fn extract(obj: &TraceObject) -> Result<Arc<str>, ConfigError> {
    if obj.machine.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            bytes: obj.machine.len(),
            max: MAX_CONFIG_BYTES,
        });
    }
    let mut value: Value =
        serde_json::from_str(&obj.machine).map_err(|e| ConfigError::NotJson(e.to_string()))?;
    let mut payload = match (obj.form, value.get_mut("data")) {
        (MachineForm::Line, Some(data)) => data.take(),
        _ => value,
    };
    match payload.get_mut("conf") {
        Some(conf @ Value::Object(_)) => Ok(conf.take().to_string().into()),
        _ => Err(ConfigError::NoConf),
    }
}

/// One key whose value differs between two configurations.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Difference {
    /// The key's path from the top (object keys; an `Options` namespace is one segment, the
    /// root namespace the empty string).
    pub key: Vec<String>,
    /// Its value in the first configuration (absent: the key is not there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a: Option<Value>,
    /// Its value in the second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b: Option<Value>,
}

/// Every key whose value differs between `a` and `b`, in key order. Objects are compared key
/// by key down to their leaves; arrays (such as `backends`) and scalars are compared whole.
/// Also returns how many keys are equal.
pub fn diff(a: &Value, b: &Value) -> (Vec<Difference>, usize) {
    let (mut la, mut lb) = (BTreeMap::new(), BTreeMap::new());
    leaves(a, &mut Vec::new(), &mut la);
    leaves(b, &mut Vec::new(), &mut lb);
    let mut keys: Vec<&Vec<String>> = la.keys().chain(lb.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    let mut same = 0;
    for key in keys {
        let (va, vb) = (la.get(key).copied(), lb.get(key).copied());
        if va == vb {
            same += 1;
        } else {
            out.push(Difference {
                key: key.clone(),
                a: va.cloned(),
                b: vb.cloned(),
            });
        }
    }
    (out, same)
}

fn leaves<'a>(v: &'a Value, path: &mut Vec<String>, out: &mut BTreeMap<Vec<String>, &'a Value>) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, child) in map {
                path.push(k.clone());
                leaves(child, path, out);
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone(), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DetailLevel, Severity};
    use serde_json::json;

    fn obj(machine: String, form: MachineForm) -> TraceObject {
        TraceObject {
            namespace: NAMESPACE.into(),
            severity: Severity::Notice,
            detail: DetailLevel::Normal,
            timestamp_ns: 7,
            hostname: "h".into(),
            thread_id: "5".into(),
            machine,
            form,
            human: None,
        }
    }

    #[test]
    fn takes_conf_from_a_cardano_line_and_a_native_payload() {
        let conf = json!({"Options": {"": {"severity": "Notice"}}});
        let line = json!({"at": "x", "ns": NAMESPACE, "data": {"conf": conf}, "sev": "Notice"});
        let got = extract(&obj(line.to_string(), MachineForm::Line)).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&got).unwrap(), conf);
        let payload = json!({ "conf": conf });
        let got = extract(&obj(payload.to_string(), MachineForm::Payload)).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&got).unwrap(), conf);
    }

    #[test]
    fn refuses_bad_reports_and_keeps_the_last_good_one() {
        let slot = TracerConfigSlot::default();
        let good = json!({"data": {"conf": {"a": 1}}}).to_string();
        slot.offer(&[obj(good, MachineForm::Line)], 1);
        let big = format!("{{\"conf\":\"{}\"}}", "x".repeat(MAX_CONFIG_BYTES));
        slot.offer(
            &[
                obj("not json".into(), MachineForm::Line),
                obj("{\"data\":{}}".into(), MachineForm::Line),
                obj(big, MachineForm::Payload),
            ],
            2,
        );
        let s = slot.state();
        assert_eq!(s.refused, 3);
        assert!(matches!(s.last_error, Some(ConfigError::TooLarge { .. })));
        let current = s.current.unwrap();
        assert_eq!(current.value(), json!({"a": 1}));
        assert_eq!(current.received_at_ms, 1);
    }

    #[test]
    fn diff_is_key_by_key() {
        let a = json!({"Options": {"": {"severity": "Notice", "backends": ["Forwarder"]},
                       "ChainDB": {"severity": "Info"}}, "MetricsPrefix": "m"});
        let b = json!({"Options": {"": {"severity": "Notice", "backends": ["Forwarder", "EKGBackend"]},
                       "Mempool": {"severity": "Silence"}}, "MetricsPrefix": "m"});
        let (d, same) = diff(&a, &b);
        assert_eq!(same, 2);
        let keys: Vec<String> = d.iter().map(|d| d.key.join("/")).collect();
        assert_eq!(
            keys,
            [
                "Options//backends",
                "Options/ChainDB/severity",
                "Options/Mempool/severity"
            ]
        );
        let chain = d.iter().find(|d| d.key[1] == "ChainDB").unwrap();
        assert_eq!(
            (chain.a.clone(), chain.b.clone()),
            (Some(json!("Info")), None)
        );
    }
}
