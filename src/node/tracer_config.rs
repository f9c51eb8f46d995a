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
//!
//! A native node with the capability `tracing-config.v1` also reports its configuration in
//! `TracingConfigReport` messages (after the handshake and after each change), which the
//! session hands to [`PushLink::on_report`]; the slot then holds that report, rendered as
//! trace-dispatcher's JSON. The same link carries pushes: [`TracerConfigSlot::push`] (the
//! `PUT` route) queues a checked configuration on the session's link, the session sends it as
//! `SetTracingConfig` and answers the push when the node's report with the same request id
//! comes back — or the push ends with why not (no link, the session ended, timeout).
//! [`parse_config`] turns the document `GET` returns (edited) into a configuration, naming
//! every problem with its key path.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;
use tracerd_wire::native::{TracerMessage, TracingConfigReport};
use tracerd_wire::tracing_config::{
    namespace_problem, parse_detail, NamespaceOptions, SeverityFilter, TracingConfig, MAX_ENTRIES,
};

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
    /// A native node's report names a configuration that is not well formed.
    #[error("the node's report is not a valid configuration: {0}")]
    BadReport(String),
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
pub struct TracerConfigSlot {
    state: Mutex<SlotState>,
    /// The pushes queued for the session that has `tracing-config.v1` (its link's id).
    pusher: Mutex<Option<Pusher>>,
    links: AtomicU64,
}

impl TracerConfigSlot {
    /// Takes the configuration from every `Reflection.TracerConfigInfo` object in `objects`
    /// (the last one wins), received at `now_ms`. Other objects cost one string comparison.
    pub fn offer(&self, objects: &[TraceObject], now_ms: u64) {
        for obj in objects.iter().filter(|o| o.namespace == NAMESPACE) {
            let result = extract(obj);
            let mut state = crate::sync::lock(&self.state);
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
        crate::sync::lock(&self.state).clone()
    }

    /// Takes a native node's report (received at `now_ms`): the configuration in force, as
    /// trace-dispatcher's JSON. A malformed one is refused and counted like a bad trace.
    pub fn take_report(
        &self,
        report: &TracingConfigReport,
        now_ms: u64,
    ) -> Result<Reported, ConfigError> {
        let checked = report
            .effective
            .check()
            .map_err(|e| ConfigError::BadReport(e.to_string()))
            .map(|()| report.effective.to_json())
            .and_then(|json| match json.len() {
                n if n > MAX_CONFIG_BYTES => Err(ConfigError::TooLarge {
                    bytes: n,
                    max: MAX_CONFIG_BYTES,
                }),
                _ => Ok(json),
            });
        let mut state = crate::sync::lock(&self.state);
        match checked {
            Ok(json) => {
                let r = Reported {
                    config: json.into(),
                    reported_at_ns: report.timestamp_ns,
                    received_at_ms: now_ms,
                };
                state.current = Some(r.clone());
                Ok(r)
            }
            Err(e) => {
                state.refused += 1;
                state.last_error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Opens the push link of a session whose node has `tracing-config.v1`; it replaces any
    /// earlier session's and is closed when dropped.
    pub fn attach(self: &Arc<Self>) -> Box<PushLink> {
        let id = self.links.fetch_add(1, Ordering::Relaxed) + 1;
        let fresh = Pusher {
            id,
            queue: VecDeque::new(),
            waker: None,
        };
        let replaced = crate::sync::lock(&self.pusher).replace(fresh);
        // The earlier session's link ends (its queued pushes are answered as disconnected).
        if let Some(waker) = replaced.and_then(|p| p.waker) {
            waker.wake();
        }
        Box::new(PushLink {
            slot: self.clone(),
            id,
            pending: HashMap::new(),
            next_request: 0,
        })
    }

    /// Sends `config` (already checked) to the node and waits, at most `timeout`, until the
    /// node has applied it and reported its configuration in force.
    pub async fn push(
        &self,
        config: TracingConfig,
        timeout: Duration,
    ) -> Result<Reported, PushError> {
        let (reply, answer) = oneshot::channel();
        {
            let mut pusher = crate::sync::lock(&self.pusher);
            let pusher = pusher.as_mut().ok_or(PushError::Unsupported)?;
            if pusher.queue.len() >= PUSH_QUEUE {
                return Err(PushError::Busy);
            }
            pusher.queue.push_back(PushRequest { config, reply });
            if let Some(waker) = pusher.waker.take() {
                waker.wake();
            }
        }
        match tokio::time::timeout(timeout, answer).await {
            Err(_) => Err(PushError::Timeout(timeout)),
            Ok(Err(_)) => Err(PushError::Disconnected),
            Ok(Ok(outcome)) => outcome,
        }
    }
}

/// How long a `PUT` waits for the node to apply a configuration and report.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// Pushes queued on one session's link at most (more are refused as busy).
const PUSH_QUEUE: usize = 4;
/// Pushes sent and not answered kept at most per session (older ones are given up).
const MAX_PENDING: usize = 16;

/// The pushes waiting for one session, with what wakes it. A queue under the slot's lock
/// rather than a channel: an `mpsc` channel costs every idle capable session ~800 bytes
/// (its shared state and first block) whether or not a push ever comes (issue 21); an empty
/// `VecDeque` allocates nothing.
#[derive(Debug)]
struct Pusher {
    id: u64,
    queue: VecDeque<PushRequest>,
    waker: Option<std::task::Waker>,
}

/// One push on its way to a session.
#[derive(Debug)]
pub struct PushRequest {
    config: TracingConfig,
    reply: oneshot::Sender<Result<Reported, PushError>>,
}

/// Why a push did not end with the node's new configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The node did not announce `tracing-config.v1` (an older forwarder, or one that does not
    /// take configurations from tracerd).
    #[error("the node's forwarder does not accept tracing configurations from tracerd (its Hello has no \"tracing-config.v1\" capability: an older tracerd-forwarder, or one started with remote_config off)")]
    Unsupported,
    /// Other pushes to this node are still queued.
    #[error("{PUSH_QUEUE} configurations are already on their way to this node; try again once they are answered")]
    Busy,
    /// The session ended before the node answered.
    #[error("the node disconnected before it answered; whether it applied the configuration is unknown (GET shows what it reports when it reconnects)")]
    Disconnected,
    /// No answer in time.
    #[error("the node did not answer within {0:?}; it may still apply the configuration (GET shows what it reports)")]
    Timeout(Duration),
    /// The node refused the configuration.
    #[error("the node refused the configuration: {0}")]
    Refused(String),
    /// The node's answer is not a valid configuration.
    #[error("{0}")]
    BadReport(ConfigError),
}

/// A session's end of its node's push channel (see [`TracerConfigSlot::attach`]).
#[derive(Debug)]
pub struct PushLink {
    slot: Arc<TracerConfigSlot>,
    id: u64,
    pending: HashMap<u64, oneshot::Sender<Result<Reported, PushError>>>,
    next_request: u64,
}

impl PushLink {
    /// The message for the node that sends `req` (`None`: too many pushes unanswered, and
    /// `req` is answered as busy).
    pub fn send(&mut self, req: PushRequest) -> Option<TracerMessage> {
        if self.pending.len() >= MAX_PENDING {
            self.pending.retain(|_, tx| !tx.is_closed());
        }
        if self.pending.len() >= MAX_PENDING {
            let _ = req.reply.send(Err(PushError::Busy));
            return None;
        }
        self.next_request += 1;
        self.pending.insert(self.next_request, req.reply);
        Some(TracerMessage::SetTracingConfig {
            request_id: self.next_request,
            config: req.config,
        })
    }

    /// Takes the node's report and answers the push it answers, if any.
    pub fn on_report(&mut self, report: &TracingConfigReport, now_ms: u64) {
        let taken = self.slot.take_report(report, now_ms);
        let Some(reply) = self.pending.remove(&report.request_id) else {
            return;
        };
        let outcome = match (&report.refused, taken) {
            (Some(why), _) => Err(PushError::Refused(crate::node::escape_name(why))),
            (None, Ok(r)) => Ok(r),
            (None, Err(e)) => Err(PushError::BadReport(e)),
        };
        let _ = reply.send(outcome);
    }
}

impl Drop for PushLink {
    fn drop(&mut self) {
        let mut pusher = crate::sync::lock(&self.slot.pusher);
        if pusher.as_ref().is_some_and(|p| p.id == self.id) {
            *pusher = None;
        }
    }
}

/// The next push of a session's link; never ready without a link. (A bare `poll_fn`, 8 bytes:
/// it is part of every native session's future.)
pub fn next_push(
    link: &mut Option<Box<PushLink>>,
) -> impl std::future::Future<Output = Option<PushRequest>> + '_ {
    std::future::poll_fn(move |cx| match link {
        Some(link) => {
            let mut pusher = crate::sync::lock(&link.slot.pusher);
            match pusher.as_mut() {
                // Another session of this node took the link over: this one has no pushes.
                Some(p) if p.id != link.id => std::task::Poll::Ready(None),
                None => std::task::Poll::Ready(None),
                Some(p) => match p.queue.pop_front() {
                    Some(req) => std::task::Poll::Ready(Some(req)),
                    None => {
                        if !p.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                            p.waker = Some(cx.waker().clone());
                        }
                        std::task::Poll::Pending
                    }
                },
            }
        }
        None => std::task::Poll::Pending,
    })
}

/// One problem of a configuration sent to `PUT`: where (a key path) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key path, e.g. `config.Options["ChainDB"].severity`.
    pub at: String,
    /// What is wrong there.
    pub what: String,
}

const SEVERITIES: &str = "Debug, Info, Notice, Warning, Error, Critical, Alert, Emergency, Silence";
const DETAILS: &str = "DMinimal, DNormal, DDetailed, DMaximum";

/// The configuration of a `PUT` body: the document `GET` returns (its `config`), or a bare
/// configuration (`{"Options": …}`). Every problem, each with its key path.
pub fn parse_config(body: &Value) -> Result<TracingConfig, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut problem = |at: String, what: String| problems.push(Problem { at, what });
    let (config, base) = match body.get("config") {
        Some(c) => (c, "config".to_string()),
        None if body.get("Options").is_some() => (body, String::new()),
        None => {
            problem(
                String::new(),
                "expected the document GET returns, with a \"config\" object (or a bare {\"Options\": …})".into(),
            );
            return Err(problems);
        }
    };
    let path = |key: &str| {
        if base.is_empty() {
            key.to_string()
        } else {
            format!("{base}.{key}")
        }
    };
    let Some(top) = config.as_object() else {
        problem(base.clone(), "must be an object with \"Options\"".into());
        return Err(problems);
    };
    for key in top.keys().filter(|k| *k != "Options") {
        problem(
            path(key),
            "unknown key: a native node's configuration has only \"Options\" (ApplicationName, Forwarder, MetricsPrefix and PrometheusSimpleRun are cardano-node's)".into(),
        );
    }
    let mut out = TracingConfig::default();
    match top.get("Options") {
        None => problem(path("Options"), "missing: the options per namespace".into()),
        Some(Value::Object(options)) => {
            if options.len() > MAX_ENTRIES {
                problem(
                    path("Options"),
                    format!(
                        "{} namespaces, more than the {MAX_ENTRIES} allowed",
                        options.len()
                    ),
                );
            }
            for (ns, entry) in options {
                let at = format!("{}[{}]", path("Options"), Value::from(ns.as_str()));
                if let Some(why) = namespace_problem(ns) {
                    problem(at.clone(), format!("not a namespace: {why}"));
                }
                let Some(entry) = entry.as_object() else {
                    problem(
                        at,
                        "must be an object of severity, detail and maxFrequency".into(),
                    );
                    continue;
                };
                let mut o = NamespaceOptions::default();
                for (key, v) in entry {
                    let at = format!("{at}.{key}");
                    match key.as_str() {
                        "severity" => match v.as_str().and_then(SeverityFilter::parse) {
                            Some(s) => o.severity = Some(s),
                            None => problem(
                                at,
                                format!("{v} is not a severity; expected one of {SEVERITIES}"),
                            ),
                        },
                        "detail" => match v.as_str().and_then(parse_detail) {
                            Some(d) => o.detail = Some(d),
                            None => problem(
                                at,
                                format!("{v} is not a detail level; expected one of {DETAILS}"),
                            ),
                        },
                        "maxFrequency" => match v.as_f64() {
                            Some(f) if f.is_finite() && f > 0.0 => o.max_frequency = Some(f),
                            _ => problem(
                                at,
                                format!("{v} is not a number of messages per second above 0"),
                            ),
                        },
                        "backends" => problem(
                            at,
                            "not settable here: a native node forwards to tracerd, its one backend"
                                .into(),
                        ),
                        _ => problem(
                            at,
                            "unknown key; expected severity, detail or maxFrequency".into(),
                        ),
                    }
                }
                out.options.insert(ns.clone(), o);
            }
        }
        Some(other) => problem(
            path("Options"),
            format!("must be an object of namespace → options, not {other}"),
        ),
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
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

    /// The push queue a session's link reads: pushes come out in order, at most
    /// `PUSH_QUEUE` wait (then busy), a newer session's link ends the older one's, and
    /// pushes still queued when their link goes are answered as disconnected.
    #[tokio::test]
    async fn pushes_queue_in_order_up_to_the_bound_and_end_with_their_link() {
        let slot = Arc::new(TracerConfigSlot::default());
        let timeout = Duration::from_secs(5);
        assert_eq!(
            slot.push(TracingConfig::default(), timeout).await,
            Err(PushError::Unsupported)
        );
        let mut link = Some(slot.attach());
        let mut waiting = Vec::new();
        for _ in 0..PUSH_QUEUE {
            let slot = slot.clone();
            waiting.push(tokio::spawn(async move {
                slot.push(TracingConfig::default(), timeout).await
            }));
        }
        while crate::sync::lock(&slot.pusher)
            .as_ref()
            .unwrap()
            .queue
            .len()
            < PUSH_QUEUE
        {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            slot.push(TracingConfig::default(), timeout).await,
            Err(PushError::Busy)
        );
        // The session sends each one with its own request id, in order.
        for expected in 1..=2u64 {
            let req = next_push(&mut link).await.expect("a queued push");
            match link.as_mut().unwrap().send(req) {
                Some(TracerMessage::SetTracingConfig { request_id, .. }) => {
                    assert_eq!(request_id, expected)
                }
                other => panic!("{other:?}"),
            }
        }
        // A newer session of the node takes the link over: the older one reads no more.
        let newer = slot.attach();
        assert!(next_push(&mut link).await.is_none());
        drop(link);
        // The two never sent were dropped with the old link's queue; the two sent wait for
        // reports that now cannot come.
        let mut disconnected = 0;
        for w in waiting.drain(2..) {
            if w.await.unwrap() == Err(PushError::Disconnected) {
                disconnected += 1;
            }
        }
        assert_eq!(disconnected, 2);
        // The newer link is woken by a push made while it waits.
        let mut newer = Some(newer);
        let slot2 = slot.clone();
        let pushed = tokio::spawn(async move {
            slot2
                .push(TracingConfig::default(), Duration::from_millis(200))
                .await
        });
        let req = tokio::time::timeout(timeout, next_push(&mut newer)).await;
        assert!(req.expect("the waiting link was not woken").is_some());
        drop(newer);
        assert_eq!(pushed.await.unwrap(), Err(PushError::Disconnected));
    }

    fn obj(machine: String, form: MachineForm) -> TraceObject {
        TraceObject {
            namespace: NAMESPACE.into(),
            severity: Severity::Notice,
            detail: DetailLevel::Normal,
            timestamp_ns: 7,
            hostname: "h".into(),
            thread_id: "5".into(),
            machine: machine.into(),
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
