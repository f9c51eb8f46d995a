//! Prometheus's `GET /api/v1/alerts` and `GET /api/v1/rules` over the alerting state, in
//! Prometheus's shapes (Grafana's alert views read them), merged into the `hasTimeseries`
//! endpoint. Without alerting both answer empty lists, as a Prometheus without rules does.

use std::sync::Arc;

use axum::extract::State as Extract;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};

use super::state::{Alert, State};
use super::template::format_value;
use super::Alerts;
use crate::sync::lock;
use crate::utc;

type Shared = Option<Arc<Alerts>>;

/// The two routes.
pub fn router(alerts: Shared) -> Router {
    Router::new()
        .route("/api/v1/alerts", get(alerts_route))
        .route("/api/v1/rules", get(rules_route))
        .route("/api/alerts/history", get(history_route))
        .with_state(alerts)
}

fn time(ms: i64) -> String {
    let mut s = String::new();
    utc::push_rfc3339_nanos(&mut s, ms.saturating_mul(1_000_000));
    s
}

fn map(l: &[(String, String)]) -> Value {
    Value::Object(
        l.iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect::<Map<_, _>>(),
    )
}

fn alert_json(a: &Alert) -> Value {
    json!({
        "labels": map(&a.labels),
        "annotations": map(&a.annotations),
        "state": a.state.as_str(),
        "activeAt": time(a.active_at),
        "value": format_value(a.value),
    })
}

fn ok(data: Value) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json!({"status": "success", "data": data}).to_string(),
    )
        .into_response()
}

/// Every pending and firing alert.
pub fn alerts_json(alerts: &Shared) -> Value {
    let mut out = Vec::new();
    for g in alerts.iter().flat_map(|a| a.groups.iter()) {
        for r in lock(&g.rules).iter() {
            out.extend(
                r.state
                    .alerts
                    .values()
                    .filter(|a| a.state != State::Inactive)
                    .map(alert_json),
            );
        }
    }
    json!({ "alerts": out })
}

/// Every group with its rules, their state, health and alerts.
pub fn rules_json(alerts: &Shared) -> Value {
    let mut groups = Vec::new();
    for g in alerts.iter().flat_map(|a| a.groups.iter()) {
        let runs = lock(&g.rules);
        let mut rules = Vec::new();
        let (mut last, mut took) = (0i64, 0.0f64);
        for (rule, run) in g.group.rules.iter().zip(runs.iter()) {
            let state = if run.state.count(State::Firing) > 0 {
                "firing"
            } else if run.state.count(State::Pending) > 0 {
                "pending"
            } else {
                "inactive"
            };
            let health = match (&run.last_error, run.last_eval_ms) {
                (Some(_), _) => "err",
                (None, 0) => "unknown",
                _ => "ok",
            };
            last = last.max(run.last_eval_ms);
            took += run.eval_secs;
            let raw = |l: &[(String, super::template::Template)]| {
                Value::Object(
                    l.iter()
                        .map(|(k, t)| (k.clone(), Value::from(t.raw())))
                        .collect::<Map<_, _>>(),
                )
            };
            let alerts: Vec<Value> = run
                .state
                .alerts
                .values()
                .filter(|a| a.state != State::Inactive)
                .map(alert_json)
                .collect();
            rules.push(json!({
                "state": state,
                "name": rule.name,
                "query": rule.expr,
                "duration": rule.for_ms as f64 / 1e3,
                "keepFiringFor": rule.keep_firing_for_ms as f64 / 1e3,
                "labels": raw(&rule.labels),
                "annotations": raw(&rule.annotations),
                "alerts": alerts,
                "health": health,
                "lastError": run.last_error.clone().unwrap_or_default(),
                "evaluationTime": run.eval_secs,
                "lastEvaluation": if run.last_eval_ms == 0 { "0001-01-01T00:00:00Z".to_string() } else { time(run.last_eval_ms) },
                "type": "alerting",
            }));
        }
        groups.push(json!({
            "name": g.group.name,
            "file": g.group.file,
            "rules": rules,
            "interval": g.group.interval_ms as f64 / 1e3,
            "limit": g.group.limit,
            "evaluationTime": took,
            "lastEvaluation": if last == 0 { "0001-01-01T00:00:00Z".to_string() } else { time(last) },
        }));
    }
    json!({ "groups": groups })
}

async fn alerts_route(Extract(a): Extract<Shared>) -> Response {
    ok(alerts_json(&a))
}

/// The alert history, newest first: each time an alert started firing or resolved.
pub fn history_json(alerts: &Shared) -> Value {
    let events: Vec<Value> = alerts
        .iter()
        .flat_map(|a| a.persist.history())
        .map(|e| {
            json!({
                "event": e.event,
                "alertname": e.alertname,
                "labels": map(&e.labels),
                "annotations": map(&e.annotations),
                "at": time(e.at),
                "startsAt": time(e.starts_at),
            })
        })
        .collect();
    json!({ "events": events, "limit": super::persist::MAX_HISTORY })
}

async fn history_route(Extract(a): Extract<Shared>) -> Response {
    ok(history_json(&a))
}

async fn rules_route(Extract(a): Extract<Shared>) -> Response {
    ok(rules_json(&a))
}
