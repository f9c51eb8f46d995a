//! The pure core of one alerting rule: its alerts' states (inactive → pending → firing →
//! resolved) as Prometheus's rule manager keeps them, and which alerts to send at an
//! evaluation. No clock: every call takes the evaluation time (ms since the epoch).

use std::collections::BTreeMap;

use tracerd_promql::Labels;

/// An alert's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The expression returned it, for less than `for`.
    Pending,
    /// Returned for at least `for` (or kept by `keep_firing_for`).
    Firing,
    /// No longer returned: resolved at `resolved_at`, sent once, then forgotten.
    Inactive,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Firing => "firing",
            State::Inactive => "inactive",
        }
    }
}

/// One result of an evaluation: the alert's labels (series labels, rule labels,
/// `alertname`), its annotations expanded, and the value.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub labels: Labels,
    pub annotations: Labels,
    pub value: f64,
}

/// One alert of a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub labels: Labels,
    pub annotations: Labels,
    pub value: f64,
    pub state: State,
    pub active_at: i64,
    pub fired_at: Option<i64>,
    pub resolved_at: Option<i64>,
    pub last_sent_at: Option<i64>,
    pub keep_firing_since: Option<i64>,
    /// Restored from the state directory at start: kept as it is, though not returned,
    /// until this time (so nodes have time to reconnect and a restart resets no `for`).
    pub held_until: Option<i64>,
}

/// What goes to Alertmanager for one alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub labels: Labels,
    pub annotations: Labels,
    pub starts_at: i64,
    pub ends_at: i64,
    /// Resolved (sent once), not firing.
    pub resolved: bool,
    /// The first send of this firing alert (what a webhook is told about).
    pub first: bool,
}

/// The alerts of one rule, keyed by their labels.
#[derive(Debug, Clone, Default)]
pub struct RuleState {
    pub alerts: BTreeMap<Labels, Alert>,
}

impl RuleState {
    /// Applies one evaluation at `now`: `results` are what the expression returned (labels
    /// unique). An alert returned again keeps its `active_at`; one returned for `for_ms`
    /// fires; one no longer returned is dropped while pending, resolved while firing (after
    /// `keep_firing_ms` without results, if set).
    pub fn eval(&mut self, now: i64, results: Vec<Instance>, for_ms: i64, keep_firing_ms: i64) {
        let mut returned = std::collections::BTreeSet::new();
        for r in results {
            returned.insert(r.labels.clone());
            match self.alerts.get_mut(&r.labels) {
                Some(a) if a.state != State::Inactive => {
                    a.value = r.value;
                    a.annotations = r.annotations;
                    a.keep_firing_since = None;
                    a.held_until = None;
                }
                _ => {
                    self.alerts.insert(
                        r.labels.clone(),
                        Alert {
                            labels: r.labels,
                            annotations: r.annotations,
                            value: r.value,
                            state: State::Pending,
                            active_at: now,
                            fired_at: None,
                            resolved_at: None,
                            last_sent_at: None,
                            keep_firing_since: None,
                            held_until: None,
                        },
                    );
                }
            }
        }
        self.alerts.retain(|labels, a| {
            if returned.contains(labels) {
                if a.state == State::Pending && now - a.active_at >= for_ms {
                    a.state = State::Firing;
                    a.fired_at = Some(now);
                }
                return true;
            }
            if a.held_until.is_some_and(|t| now < t) {
                return true;
            }
            match a.state {
                State::Pending => false,
                State::Inactive => true,
                State::Firing => {
                    if keep_firing_ms > 0 {
                        let since = *a.keep_firing_since.get_or_insert(now);
                        if now - since < keep_firing_ms {
                            return true;
                        }
                    }
                    a.state = State::Inactive;
                    a.resolved_at = Some(now);
                    true
                }
            }
        });
    }

    /// The alerts to send at `now`, as Prometheus's `sendAlerts`: a firing alert when it was
    /// not sent within `resend_delay_ms`, with `endsAt` = now + 4 × max(interval, resend
    /// delay) (so Alertmanager resolves it by itself if tracerd stops); a resolved one once,
    /// with `endsAt` = its resolution time, after which it is forgotten.
    pub fn to_send(&mut self, now: i64, interval_ms: i64, resend_delay_ms: i64) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let valid = 4 * interval_ms.max(resend_delay_ms);
        for a in self.alerts.values_mut() {
            let send = match a.state {
                State::Pending => false,
                State::Inactive => true,
                State::Firing => a.last_sent_at.is_none_or(|t| now - t >= resend_delay_ms),
            };
            if !send {
                continue;
            }
            let first = a.last_sent_at.is_none();
            a.last_sent_at = Some(now);
            out.push(Outgoing {
                labels: a.labels.clone(),
                annotations: a.annotations.clone(),
                starts_at: a.fired_at.unwrap_or(a.active_at),
                ends_at: a.resolved_at.unwrap_or(now + valid),
                resolved: a.state == State::Inactive,
                first: first && a.state == State::Firing,
            });
        }
        self.alerts.retain(|_, a| a.state != State::Inactive);
        out
    }

    /// How many alerts are in `state`.
    pub fn count(&self, state: State) -> usize {
        self.alerts.values().filter(|a| a.state == state).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(node: &str, v: f64) -> Instance {
        Instance {
            labels: vec![
                ("alertname".into(), "High".into()),
                ("node".into(), node.into()),
            ],
            annotations: vec![("summary".into(), format!("{node} at {v}"))],
            value: v,
        }
    }

    fn state_of(s: &RuleState, node: &str) -> Option<State> {
        s.alerts
            .values()
            .find(|a| a.labels[1].1 == node)
            .map(|a| a.state)
    }

    #[test]
    fn pending_then_firing_then_resolved_once() {
        let mut s = RuleState::default();
        s.eval(0, vec![inst("a", 5.0)], 10_000, 0);
        assert_eq!(state_of(&s, "a"), Some(State::Pending));
        assert!(s.to_send(0, 5_000, 0).is_empty(), "pending is not sent");
        s.eval(5_000, vec![inst("a", 6.0)], 10_000, 0);
        assert_eq!(state_of(&s, "a"), Some(State::Pending));
        s.eval(10_000, vec![inst("a", 7.0)], 10_000, 0);
        assert_eq!(state_of(&s, "a"), Some(State::Firing));
        let sent = s.to_send(10_000, 5_000, 0);
        assert_eq!(sent.len(), 1);
        assert_eq!((sent[0].starts_at, sent[0].ends_at), (10_000, 30_000));
        assert_eq!(sent[0].annotations[0].1, "a at 7");
        assert!(sent[0].first && !sent[0].resolved);
        // Resent at every evaluation while firing, endsAt moving on.
        s.eval(15_000, vec![inst("a", 8.0)], 10_000, 0);
        let sent = s.to_send(15_000, 5_000, 0);
        assert_eq!((sent[0].starts_at, sent[0].ends_at), (10_000, 35_000));
        assert!(!sent[0].first, "a resend");
        // Gone: resolved, sent once with endsAt = resolve time, then forgotten.
        s.eval(20_000, vec![], 10_000, 0);
        assert_eq!(state_of(&s, "a"), Some(State::Inactive));
        let sent = s.to_send(20_000, 5_000, 0);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].ends_at, 20_000);
        assert!(sent[0].resolved && !sent[0].first);
        assert!(s.alerts.is_empty());
        s.eval(25_000, vec![], 10_000, 0);
        assert!(s.to_send(25_000, 5_000, 0).is_empty());
    }

    #[test]
    fn pending_that_goes_away_is_dropped_and_restarts() {
        let mut s = RuleState::default();
        s.eval(0, vec![inst("a", 5.0)], 10_000, 0);
        s.eval(5_000, vec![], 10_000, 0);
        assert!(s.alerts.is_empty());
        s.eval(10_000, vec![inst("a", 5.0)], 10_000, 0);
        s.eval(15_000, vec![inst("a", 5.0)], 10_000, 0);
        assert_eq!(
            state_of(&s, "a"),
            Some(State::Pending),
            "for restarts at 10 s"
        );
        s.eval(20_000, vec![inst("a", 5.0)], 10_000, 0);
        assert_eq!(state_of(&s, "a"), Some(State::Firing));
    }

    #[test]
    fn for_zero_fires_at_once_and_alerts_are_independent() {
        let mut s = RuleState::default();
        s.eval(0, vec![inst("a", 1.0), inst("b", 2.0)], 0, 0);
        assert_eq!(state_of(&s, "a"), Some(State::Firing));
        s.eval(1_000, vec![inst("b", 2.0)], 0, 0);
        assert_eq!(state_of(&s, "a"), Some(State::Inactive));
        assert_eq!(state_of(&s, "b"), Some(State::Firing));
        assert_eq!(s.count(State::Firing), 1);
    }

    #[test]
    fn keep_firing_for_holds_then_resolves() {
        let mut s = RuleState::default();
        s.eval(0, vec![inst("a", 1.0)], 0, 10_000);
        s.eval(5_000, vec![], 0, 10_000);
        assert_eq!(state_of(&s, "a"), Some(State::Firing));
        s.eval(10_000, vec![], 0, 10_000);
        assert_eq!(state_of(&s, "a"), Some(State::Firing));
        s.eval(15_000, vec![], 0, 10_000);
        assert_eq!(state_of(&s, "a"), Some(State::Inactive));
        assert_eq!(s.alerts.values().next().unwrap().resolved_at, Some(15_000));
    }

    #[test]
    fn restored_alerts_are_held_then_go_on_as_before() {
        let mut s = RuleState::default();
        s.eval(0, vec![inst("a", 1.0)], 10_000, 0);
        s.eval(10_000, vec![inst("a", 1.0)], 10_000, 0);
        assert_eq!(state_of(&s, "a"), Some(State::Firing));
        // As restored at 50 s, held until 60 s.
        for a in s.alerts.values_mut() {
            a.held_until = Some(60_000);
        }
        s.eval(50_000, vec![], 10_000, 0);
        assert_eq!(state_of(&s, "a"), Some(State::Firing), "held");
        s.eval(55_000, vec![inst("a", 1.0)], 10_000, 0);
        let a = s.alerts.values().next().unwrap();
        assert_eq!(
            (a.state, a.active_at, a.held_until),
            (State::Firing, 0, None)
        );
        s.eval(60_000, vec![], 10_000, 0);
        assert_eq!(state_of(&s, "a"), Some(State::Inactive), "no longer held");
        // Not returned again within the hold: resolved once it ends.
        let mut s = RuleState::default();
        s.eval(0, vec![inst("b", 1.0)], 0, 0);
        for a in s.alerts.values_mut() {
            a.held_until = Some(10_000);
        }
        s.eval(5_000, vec![], 0, 0);
        assert_eq!(state_of(&s, "b"), Some(State::Firing));
        s.eval(10_000, vec![], 0, 0);
        assert_eq!(state_of(&s, "b"), Some(State::Inactive));
    }

    #[test]
    fn resend_delay_spaces_sends() {
        let mut s = RuleState::default();
        s.eval(0, vec![inst("a", 1.0)], 0, 0);
        assert_eq!(s.to_send(0, 5_000, 60_000)[0].ends_at, 240_000);
        s.eval(5_000, vec![inst("a", 1.0)], 0, 0);
        assert!(s.to_send(5_000, 5_000, 60_000).is_empty());
        s.eval(60_000, vec![inst("a", 1.0)], 0, 0);
        assert_eq!(s.to_send(60_000, 5_000, 60_000).len(), 1);
    }
}
