//! The tracing configuration a forwarder filters by (issue 19): the compiled [`Filter`] and
//! the rate limiters of `maxFrequency`, applying a configuration (pushed by tracerd or set by
//! the program), the report tracerd is sent, and the `Reflection.TracerConfigInfo` trace that
//! makes each change visible in the node's own log directory.
//!
//! Locking: the filter in force lives in the queue (so an object is checked under the same
//! lock that queues it, and a change takes effect between two objects), with a copy in
//! `Shared::filter` for the cheap checks done before an object is built (the `tracing` layer).
//! A change takes the queue lock first, then the copy's write lock; nothing takes them the
//! other way round.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use tokio::time::Instant;
use tracerd_wire::model::{DetailLevel, MachineForm, Severity, Text, TraceObject};
use tracerd_wire::native::TracingConfigReport;
use tracerd_wire::tracing_config::{ConfigProblem, Filter, Resolved, TracingConfig};

use crate::{lock, Queue, Shared};

/// The namespace of the trace carrying the configuration in force (cardano-node's).
pub const CONFIG_NAMESPACE: &str = "Reflection.TracerConfigInfo";

/// A program's veto over configurations tracerd pushes: `Err(reason)` refuses one, and the
/// reason is what the operator's `PUT` answers.
#[derive(Clone)]
pub struct ConfigGuard(pub Arc<GuardFn>);

/// What a [`ConfigGuard`] calls.
pub type GuardFn = dyn Fn(&TracingConfig) -> Result<(), String> + Send + Sync;

impl fmt::Debug for ConfigGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConfigGuard(..)")
    }
}

/// Why a configuration was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The configuration is malformed.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] ConfigProblem),
    /// The program's [`ConfigGuard`] refused it.
    #[error("{0}")]
    Vetoed(String),
}

/// The configuration in force and when it took effect.
#[derive(Debug)]
pub(crate) struct InForce {
    pub(crate) config: TracingConfig,
    pub(crate) since_ns: i64,
}

/// A token bucket per `maxFrequency` entry: at most `rate` objects a second, bursts of
/// `max(rate, 1)`.
#[derive(Debug, Default)]
pub(crate) struct Limits {
    buckets: Vec<(f64, f64, Option<Instant>)>,
}

impl Limits {
    pub(crate) fn new(filter: &Filter) -> Limits {
        Limits {
            buckets: filter
                .limiters()
                .iter()
                .map(|&rate| (rate, rate.max(1.0), None))
                .collect(),
        }
    }

    /// Whether one more object under limiter `i` may go now.
    fn take(&mut self, i: usize, now: Instant) -> bool {
        let Some((rate, tokens, last)) = self.buckets.get_mut(i) else {
            return true;
        };
        if let Some(last) = *last {
            let refill = now.saturating_duration_since(last).as_secs_f64() * *rate;
            *tokens = (*tokens + refill).min(rate.max(1.0));
        }
        *last = Some(now);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What the filter decides for one object.
pub(crate) enum Verdict {
    Pass,
    Filtered,
    Limited,
}

/// Checks one object against the queue's filter and limiters.
pub(crate) fn verdict(q: &mut Queue, object: &TraceObject) -> Verdict {
    let r = *q.filter.resolve(&object.namespace);
    if !r.severity.admits(object.severity) {
        return Verdict::Filtered;
    }
    match r.limiter {
        Some(i) if !q.limits.take(i, Instant::now()) => Verdict::Limited,
        _ => Verdict::Pass,
    }
}

pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64)
}

/// The filter of `config` and its effective form, for a forwarder's start.
pub(crate) fn initial(config: &TracingConfig) -> (Arc<Filter>, InForce) {
    let effective = config.clone().effective();
    let filter = Arc::new(Filter::new(&effective));
    (
        filter,
        InForce {
            config: effective,
            since_ns: now_ns(),
        },
    )
}

/// The resolved options for `namespace` under the configuration in force.
pub(crate) fn options(filter: &RwLock<Arc<Filter>>, namespace: &str) -> Resolved {
    *crate::read(filter).resolve(namespace)
}

/// The trace that carries `config` as cardano-node's `Reflection.TracerConfigInfo` does:
/// severity Notice, machine form `{"conf": <TraceConfig JSON>}`.
pub(crate) fn config_trace(shared: &Shared, config: &TracingConfig, at_ns: i64) -> TraceObject {
    let json = config.to_json();
    TraceObject {
        namespace: CONFIG_NAMESPACE.into(),
        severity: Severity::Notice,
        detail: DetailLevel::Normal,
        timestamp_ns: at_ns,
        hostname: shared.hostname.clone().into(),
        thread_id: Text::new(),
        machine: format!("{{\"conf\":{json}}}").into(),
        form: MachineForm::Payload,
        human: Some(format!("Effective Tracer config is:  {json}").into()),
    }
}

/// Queues `object` past the filter (the forwarder's own traces), if there is room.
pub(crate) fn queue_unfiltered(shared: &Shared, q: &mut Queue, object: TraceObject) {
    if q.closed || shared.buffered.fetch_add(1, Ordering::AcqRel) >= shared.capacity {
        if !q.closed {
            shared.buffered.fetch_sub(1, Ordering::AcqRel);
        }
        shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if q.traces.is_empty() {
        q.oldest = Some(Instant::now());
    }
    q.traces.push_back(object);
    shared.counters.submitted.fetch_add(1, Ordering::Relaxed);
}

/// Applies `config`: checks it (and, when `guard` is given, asks it), then from the next
/// batch on forwards only what it lets through — objects still queued that it refuses are
/// dropped (counted as filtered) — and queues the configuration trace. Returns the
/// configuration now in force.
pub(crate) fn apply(
    shared: &Shared,
    config: TracingConfig,
    guard: Option<&ConfigGuard>,
) -> Result<TracingConfig, ApplyError> {
    config.check()?;
    if let Some(guard) = guard {
        (guard.0)(&config).map_err(ApplyError::Vetoed)?;
    }
    let effective = config.effective();
    let filter = Arc::new(Filter::new(&effective));
    let at_ns = now_ns();
    let trace = config_trace(shared, &effective, at_ns);
    {
        let mut q = lock(&shared.queue);
        let before = q.traces.len();
        q.traces.retain(|o| {
            o.namespace == CONFIG_NAMESPACE
                || filter.resolve(&o.namespace).severity.admits(o.severity)
        });
        let purged = before - q.traces.len();
        if purged > 0 {
            shared
                .counters
                .filtered
                .fetch_add(purged as u64, Ordering::Relaxed);
            shared.release(purged);
        }
        if q.traces.is_empty() {
            q.oldest = None;
        }
        q.limits = Limits::new(&filter);
        q.filter = filter.clone();
        *crate::write(&shared.filter) = filter;
        queue_unfiltered(shared, &mut q, trace);
    }
    let mut in_force = lock(&shared.in_force);
    in_force.config = effective.clone();
    in_force.since_ns = at_ns;
    shared
        .counters
        .config_changes
        .fetch_add(1, Ordering::Relaxed);
    shared.notify.notify_one();
    Ok(effective)
}

/// The report of the configuration in force, answering `request_id` (0: unsolicited).
pub(crate) fn report(
    shared: &Shared,
    request_id: u64,
    refused: Option<String>,
) -> TracingConfigReport {
    let in_force = lock(&shared.in_force);
    TracingConfigReport {
        request_id,
        effective: in_force.config.clone(),
        refused,
        timestamp_ns: in_force.since_ns,
    }
}

/// Applies a configuration tracerd pushed and answers it.
pub(crate) fn answer_push(
    shared: &Shared,
    request_id: u64,
    config: TracingConfig,
    guard: Option<&ConfigGuard>,
) -> TracingConfigReport {
    let refused = match apply(shared, config, guard) {
        Ok(_) => None,
        Err(e) => {
            shared
                .counters
                .configs_refused
                .fetch_add(1, Ordering::Relaxed);
            Some(e.to_string())
        }
    };
    report(shared, request_id, refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tracerd_wire::tracing_config::NamespaceOptions;

    #[test]
    fn max_frequency_allows_its_rate_and_bursts_of_one_second() {
        let mut c = TracingConfig::everything();
        c.options.insert(
            "Chatty".into(),
            NamespaceOptions {
                max_frequency: Some(2.0),
                ..Default::default()
            },
        );
        let filter = Filter::new(&c);
        let i = filter.resolve("Chatty.Sub").limiter.unwrap();
        let mut limits = Limits::new(&filter);
        let t0 = Instant::now();
        let passed = (0..10).filter(|_| limits.take(i, t0)).count();
        assert_eq!(passed, 2);
        // Half a second refills one.
        let t1 = t0 + Duration::from_millis(500);
        assert!(limits.take(i, t1));
        assert!(!limits.take(i, t1));
        // A long pause refills no more than the burst.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| limits.take(i, t2)).count(), 2);
    }
}
