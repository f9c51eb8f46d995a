//! Alerting (issue 15): Prometheus alerting-rule files evaluated on the metric history by the
//! same PromQL engine as the query API, alerts sent to Alertmanager's v2 API.
//!
//! * [`rules`]: the rule files (serde, unknown fields refused with their line; durations;
//!   PromQL parsed at load) and [`template`]: `{{ $labels.x }}` / `{{ $value }}`.
//! * [`state`]: the pure state machine of one rule (inactive → pending → firing → resolved,
//!   time as an argument) and what to send when.
//! * [`notify`]: the bounded queue and the sender task (retries, failures counted and logged
//!   at a bounded rate).
//! * This file: the `tracerd_alerts_*` metrics, [`evaluate_group`] (one evaluation of one
//!   group at a given time, on the blocking pool) and [`start`], the thin timer task per group and the sender.

pub mod api;
pub mod notify;
pub mod persist;
pub mod rules;
pub mod state;
pub mod template;
pub mod trace_rules;
pub mod traces;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracerd_promql::{instant_query, Labels, Options, Value};
use tracerd_tsdb::Store;

use crate::config::AlertsSettings;
use crate::node::Nodes;
use crate::sync::lock;
use rules::{Cond, Group};
use state::{Instance, Outgoing, RuleState, State};
use traces::TraceEngine;

/// Default group interval (`tracerd.alerts.evaluationIntervalSecs`).
pub const DEFAULT_INTERVAL_SECS: f64 = 15.0;
/// Default `tracerd.alerts.queueCapacity` (Prometheus's notification queue capacity).
pub const DEFAULT_QUEUE_CAPACITY: u64 = 10_000;
/// Default `tracerd.alerts.forGracePeriodSecs` (Prometheus's `--rules.alert.for-grace-period`).
pub const DEFAULT_FOR_GRACE_PERIOD_SECS: f64 = 600.0;
/// Most samples one rule evaluation may hold (past it the evaluation fails, counted).
pub const MAX_SAMPLES: usize = 5_000_000;

/// The `tracerd_alerts_*` metrics.
#[derive(Debug, Clone)]
pub struct AlertsMetrics {
    pub sent: IntCounterVec,
    pub errors: IntCounterVec,
    pub dropped: IntCounter,
    pub queue_length: IntGauge,
    pub evaluations: IntCounter,
    pub evaluation_failures: IntCounter,
    pub active: IntGaugeVec,
    pub trace_hits_dropped: IntCounter,
    pub webhook_sent: IntCounterVec,
    pub webhook_errors: IntCounterVec,
    pub state_write_errors: IntCounter,
}

impl AlertsMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &Registry) -> AlertsMetrics {
        fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
            r.register(Box::new(m.clone())).expect("registered once");
            m
        }
        let by = |name: &str, help: &str, label: &str| {
            reg(
                registry,
                IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid constant"),
            )
        };
        let counter = |name: &str, help: &str| {
            reg(
                registry,
                IntCounter::new(name, help).expect("valid constant"),
            )
        };
        AlertsMetrics {
            sent: by(
                "tracerd_alerts_sent_total",
                "Alerts delivered to an Alertmanager, by its URL.",
                "alertmanager",
            ),
            errors: by(
                "tracerd_alerts_errors_total",
                "Alerts not delivered to an Alertmanager after every retry, by its URL.",
                "alertmanager",
            ),
            dropped: counter(
                "tracerd_alerts_dropped_total",
                "Alerts dropped from a full delivery queue (tracerd.alerts.queueCapacity).",
            ),
            queue_length: reg(
                registry,
                IntGauge::new(
                    "tracerd_alerts_queue_length",
                    "Alerts waiting for delivery.",
                )
                .expect("valid constant"),
            ),
            evaluations: counter(
                "tracerd_alerts_rule_evaluations_total",
                "Alerting rule evaluations.",
            ),
            evaluation_failures: counter(
                "tracerd_alerts_rule_evaluation_failures_total",
                "Alerting rule evaluations that failed (bad result, sample cap, duplicate labels).",
            ),
            webhook_sent: by(
                "tracerd_alerts_webhook_sent_total",
                "Alert notifications delivered to a webhook, by its URL.",
                "url",
            ),
            webhook_errors: by(
                "tracerd_alerts_webhook_errors_total",
                "Alert notifications not delivered to a webhook after every retry, by its URL.",
                "url",
            ),
            state_write_errors: counter(
                "tracerd_alerts_state_write_errors_total",
                "Failed writes of the alert state or history to the state directory.",
            ),
            trace_hits_dropped: counter(
                "tracerd_alerts_trace_hits_dropped_total",
                "Trace objects a trace rule's field test could not look at (its queue was full).",
            ),
            active: reg(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "tracerd_alerts_active",
                        "Alerts pending or firing now, by state.",
                    ),
                    &["state"],
                )
                .expect("valid constant"),
            ),
        }
    }
}

/// One rule's evaluation state, kept between evaluations.
#[derive(Debug, Clone, Default)]
pub struct RuleRun {
    pub state: RuleState,
    /// The last evaluation's error, if it failed.
    pub last_error: Option<String>,
    /// When it was last evaluated (ms) and how long that took (s).
    pub last_eval_ms: i64,
    pub eval_secs: f64,
}

/// One group with its rules' states.
#[derive(Debug)]
pub struct GroupRun {
    pub group: Group,
    pub rules: Mutex<Vec<RuleRun>>,
}

impl GroupRun {
    pub fn new(group: Group) -> GroupRun {
        let n = group.rules.len();
        GroupRun {
            group,
            rules: Mutex::new(vec![RuleRun::default(); n]),
        }
    }
}

/// What the alerting tasks share: the groups, the delivery queue, the settings.
pub struct Alerts {
    pub groups: Vec<Arc<GroupRun>>,
    /// The trace rules' observer (the node registry offers it every accepted batch).
    pub traces: Arc<TraceEngine>,
    pub notifier: Arc<notify::Notifier>,
    pub resend_delay_ms: i64,
    /// `forGracePeriodSecs` in ms: how restored pending alerts resume (`persist::apply`).
    pub for_grace_ms: i64,
    pub metrics: AlertsMetrics,
    /// Active alerts and history, kept in the state directory when there is one.
    pub persist: persist::Persist,
}

impl Alerts {
    /// Loads the rule files (blocking) and builds the queue; every problem is in the error.
    pub fn load(settings: &AlertsSettings, metrics: AlertsMetrics) -> Result<Alerts, String> {
        let mut groups = load_groups(settings)?;
        let mut conds = Vec::new();
        for g in &mut groups {
            for r in &mut g.rules {
                if let Cond::Trace(t) = &mut r.cond {
                    t.id = conds.len();
                    conds.push(t.clone());
                }
            }
        }
        let traces = TraceEngine::new(conds, metrics.trace_hits_dropped.clone());
        let targets = settings
            .alertmanagers
            .iter()
            .map(|u| notify::Target::parse(u))
            .chain(
                settings
                    .webhooks
                    .iter()
                    .map(|u| notify::Target::parse_webhook(u)),
            )
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let capacity = settings.queue_capacity.unwrap_or(DEFAULT_QUEUE_CAPACITY) as usize;
        Ok(Alerts {
            groups: groups
                .into_iter()
                .map(|g| Arc::new(GroupRun::new(g)))
                .collect(),
            traces,
            notifier: notify::Notifier::new(targets, capacity, metrics.clone()),
            resend_delay_ms: (settings.resend_delay_secs.unwrap_or(0.0) * 1000.0).round() as i64,
            for_grace_ms: (settings
                .for_grace_period_secs
                .unwrap_or(DEFAULT_FOR_GRACE_PERIOD_SECS)
                * 1000.0)
                .round() as i64,
            metrics,
            persist: persist::Persist::default(),
        })
    }

    /// Pending and firing alerts of every rule, for the metric.
    fn update_active(&self) {
        let (mut pending, mut firing) = (0, 0);
        for g in &self.groups {
            for r in lock(&g.rules).iter() {
                pending += r.state.count(State::Pending);
                firing += r.state.count(State::Firing);
            }
        }
        self.metrics
            .active
            .with_label_values(&["pending"])
            .set(pending as i64);
        self.metrics
            .active
            .with_label_values(&["firing"])
            .set(firing as i64);
    }
}

/// Reads and checks the rule files of `settings` (blocking): the groups, or every problem,
/// one a line, each naming its file (and line, group and rule where known). Also what
/// `tracerd validate` runs.
pub fn load_groups(settings: &AlertsSettings) -> Result<Vec<Group>, String> {
    let interval = settings
        .evaluation_interval_secs
        .unwrap_or(DEFAULT_INTERVAL_SECS);
    let mut problems: Vec<String> = Vec::new();
    for u in &settings.alertmanagers {
        if let Err(e) = notify::Target::parse(u) {
            problems.push(format!("tracerd.alerts.alertmanagers: {e}"));
        }
    }
    for u in &settings.webhooks {
        if let Err(e) = notify::Target::parse_webhook(u) {
            problems.push(format!("tracerd.alerts.webhooks: {e}"));
        }
    }
    let interval_ms = (interval * 1000.0).round() as i64;
    let mut groups = match rules::load_files(&settings.rule_files, interval_ms) {
        Ok(g) => g,
        Err(es) => {
            problems.extend(es.iter().map(|e| e.to_string()));
            Vec::new()
        }
    };
    match trace_rules::load_files(&settings.trace_rule_files, interval_ms) {
        Ok(g) => groups.extend(g),
        Err(es) => problems.extend(es.iter().map(|e| e.to_string())),
    }
    if problems.is_empty() {
        Ok(groups)
    } else {
        Err(problems.join("\n"))
    }
}

/// The alert instances of one rule's query result: series labels without `__name__`, the
/// rule's labels expanded over them, `alertname`; annotations expanded. Duplicate label sets
/// and results over the group's `limit` are errors, as in Prometheus.
pub fn instances(rule: &rules::Rule, limit: u64, value: Value) -> Result<Vec<Instance>, String> {
    let series: Vec<(Labels, f64)> = match value {
        Value::Vector(v) => v.into_iter().map(|(l, _, v)| (l, v)).collect(),
        Value::Scalar(_, v) => vec![(Vec::new(), v)],
        _ => return Err("the expression must return an instant vector or a scalar".into()),
    };
    if limit > 0 && series.len() as u64 > limit {
        return Err(format!(
            "exceeded the group's limit of {limit} alerts ({})",
            series.len()
        ));
    }
    let mut out = Vec::with_capacity(series.len());
    let mut seen = std::collections::BTreeSet::new();
    for (mut labels, v) in series {
        labels.retain(|(k, _)| k != "__name__");
        let mut all = labels.clone();
        for (k, t) in &rule.labels {
            let val = t.expand(&labels, v);
            all.retain(|(n, _)| n != k);
            if !val.is_empty() {
                all.push((k.clone(), val));
            }
        }
        all.retain(|(n, _)| n != "alertname");
        all.push(("alertname".into(), rule.name.clone()));
        all.sort();
        if !seen.insert(all.clone()) {
            return Err(
                "the result has two series with the same labels once the alert's labels are set"
                    .into(),
            );
        }
        let annotations = rule
            .annotations
            .iter()
            .map(|(k, t)| (k.clone(), t.expand(&labels, v)))
            .collect();
        out.push(Instance {
            labels: all,
            annotations,
            value: v,
        });
    }
    Ok(out)
}

/// What rules are evaluated on: the metric history (PromQL rules; absent without
/// `hasTimeseries`), the trace rules' state and the node registry (lifecycle rules).
#[derive(Clone)]
pub struct Sources {
    pub store: Option<Arc<Store>>,
    pub traces: Arc<TraceEngine>,
    pub nodes: Nodes,
}

/// A rule's per-node results (node name, value) as an instant vector with `node_name`.
fn per_node(results: Vec<(String, f64)>, now: i64) -> Value {
    Value::Vector(
        results
            .into_iter()
            .map(|(n, v)| (vec![("node_name".to_string(), n)], now, v))
            .collect(),
    )
}

/// What `rule` returns at `now`: its query's result, or its trace or lifecycle results.
fn rule_value(
    src: &Sources,
    rule: &rules::Rule,
    nodes: &mut Option<Vec<(crate::node::NodeView, bool)>>,
    now: i64,
    opts: &Options,
) -> Result<Value, String> {
    match &rule.cond {
        Cond::Expr => match &src.store {
            Some(store) => {
                instant_query(store.as_ref(), &rule.expr, now, opts).map_err(|e| e.message.clone())
            }
            None => Err("no metric history (hasTimeseries) to evaluate the rule on".into()),
        },
        Cond::Trace(t) => Ok(per_node(
            traces::trace_results(&src.traces, t.id, t, now),
            now,
        )),
        Cond::Lifecycle(l) => {
            let nodes = nodes.get_or_insert_with(|| src.nodes.all_views());
            let facts = |n: &str| src.traces.node(n);
            Ok(per_node(
                traces::lifecycle_results(*l, nodes, &facts, now),
                now,
            ))
        }
    }
}

/// The pending and firing alerts of a rule: labels, state and `activeAt` (ms).
fn active(st: &state::RuleState) -> Vec<(Labels, State, i64)> {
    st.alerts
        .values()
        .filter(|a| a.state != State::Inactive)
        .map(|a| (a.labels.clone(), a.state, a.active_at))
        .collect()
}

/// Writes the `ALERTS` and `ALERTS_FOR_STATE` series as Prometheus does. At each evaluation,
/// for every pending or firing alert: `ALERTS{alertname, alertstate, labels...}` = 1 and
/// `ALERTS_FOR_STATE{alertname, labels...}` = its `activeAt` in whole unix seconds (Go's
/// `Unix()`; no `alertstate`, so one series covers pending and firing). A staleness marker
/// ends an `ALERTS` series when its alert leaves that state, and the `ALERTS_FOR_STATE`
/// series when it is no longer active. Failures (out of order, series cap) are ignored:
/// the store counts them.
fn write_alerts_series(
    store: &Store,
    before: &[(Labels, State, i64)],
    after: &[(Labels, State, i64)],
    now: i64,
) {
    let series = |labels: &Labels, name: &str, state: Option<State>| {
        let mut l = labels.clone();
        l.push(("__name__".into(), name.into()));
        if let Some(state) = state {
            l.push(("alertstate".into(), state.as_str().into()));
        }
        l.sort();
        l
    };
    for (labels, state, active_at) in after {
        let _ = store.append(&series(labels, "ALERTS", Some(*state)), now, 1.0);
        let secs = active_at.div_euclid(1000) as f64;
        let _ = store.append(&series(labels, "ALERTS_FOR_STATE", None), now, secs);
    }
    for (labels, state, _) in before {
        let stale = tracerd_promql::stale_nan();
        if !after.iter().any(|(l, s, _)| l == labels && s == state) {
            let _ = store.append(&series(labels, "ALERTS", Some(*state)), now, stale);
        }
        if !after.iter().any(|(l, _, _)| l == labels) {
            let _ = store.append(&series(labels, "ALERTS_FOR_STATE", None), now, stale);
        }
    }
}

/// One evaluation of `group` at `now` (ms) over `src`: every rule's state advanced, the
/// alerts to send returned. Blocking (it runs queries).
pub fn evaluate_group(
    src: &Sources,
    run: &GroupRun,
    now: i64,
    resend_delay_ms: i64,
    metrics: &AlertsMetrics,
) -> Vec<Outgoing> {
    let g = &run.group;
    let mut out = Vec::new();
    let mut states = lock(&run.rules);
    let mut nodes = None;
    let deadline = std::time::Instant::now() + Duration::from_millis(g.interval_ms.max(1) as u64);
    for (rule, st) in g.rules.iter().zip(states.iter_mut()) {
        let started = std::time::Instant::now();
        metrics.evaluations.inc();
        let opts = Options {
            max_samples: MAX_SAMPLES,
            deadline_exceeded: Some(Box::new(move || std::time::Instant::now() > deadline)),
            ..Options::default()
        };
        let before = active(&st.state);
        let result =
            rule_value(src, rule, &mut nodes, now, &opts).and_then(|v| instances(rule, g.limit, v));
        match result {
            Ok(found) => {
                st.state
                    .eval(now, found, rule.for_ms, rule.keep_firing_for_ms);
                st.last_error = None;
            }
            Err(e) => {
                metrics.evaluation_failures.inc();
                if st.last_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(file = %g.file, group = %g.name, rule = %rule.name, error = %e, "alerting rule evaluation failed");
                }
                st.last_error = Some(e);
            }
        }
        out.extend(st.state.to_send(now, g.interval_ms, resend_delay_ms));
        if let Some(store) = &src.store {
            write_alerts_series(store, &before, &active(&st.state), now);
        }
        st.last_eval_ms = now;
        st.eval_secs = started.elapsed().as_secs_f64();
    }
    out
}

/// Reads the saved alerts and their history from `state_dir` (on the blocking pool) into
/// `alerts`. `app::run` awaits it before any HTTP listener serves, so the first
/// `/api/v1/alerts` or `/api/alerts/history` after a restart already lists them, and before
/// the first evaluation.
pub async fn restore(alerts: &Arc<Alerts>, state_dir: Option<std::path::PathBuf>) {
    let r = alerts.clone();
    let restored = tokio::task::spawn_blocking(move || {
        r.persist.restore(
            state_dir.as_deref(),
            &r.groups,
            crate::history::now_ms(),
            r.for_grace_ms,
        );
        r.update_active();
    })
    .await;
    if let Err(e) = restored {
        tracing::error!(error = %e, "restoring the alert state failed to run");
    }
}

/// Spawns the sender and one evaluation timer per group on `tracker`, running until
/// `cancel` fires; each evaluation runs on the blocking pool. After [`restore`].
pub fn start(
    alerts: Arc<Alerts>,
    store: Option<Arc<Store>>,
    nodes: Nodes,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) {
    spawn_evaluations(alerts, store, nodes, tracker, cancel);
}

fn spawn_evaluations(
    alerts: Arc<Alerts>,
    store: Option<Arc<Store>>,
    nodes: Nodes,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) {
    tracker.spawn(alerts.notifier.clone().run(cancel.clone()));
    tracker.spawn(alerts.traces.clone().run(cancel.clone()));
    let src = Sources {
        store,
        traces: alerts.traces.clone(),
        nodes,
    };
    for g in &alerts.groups {
        let (alerts, src, cancel, g) = (alerts.clone(), src.clone(), cancel.clone(), g.clone());
        tracker.spawn(async move {
            let every = Duration::from_millis(g.group.interval_ms.max(1) as u64);
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            // Evaluation times follow the group's schedule (as Prometheus's), not the moment
            // the blocking pool ran the pass, so `for` is counted in whole intervals.
            let (start, start_ms) = (tokio::time::Instant::now(), crate::history::now_ms());
            loop {
                let at = tokio::select! {
                    _ = cancel.cancelled() => return,
                    at = tick.tick() => at,
                };
                let now = start_ms + at.saturating_duration_since(start).as_millis() as i64;
                let (a, s, gr) = (alerts.clone(), src.clone(), g.clone());
                let pass = tokio::task::spawn_blocking(move || {
                    let out = evaluate_group(&s, &gr, now, a.resend_delay_ms, &a.metrics);
                    a.update_active();
                    a.persist
                        .save(&a.groups, &out, &a.metrics.state_write_errors);
                    a.notifier.enqueue(out);
                });
                if let Err(e) = pass.await {
                    tracing::error!(error = %e, group = %g.group.name, "alerting rule evaluation failed to run");
                }
            }
        });
    }
}
