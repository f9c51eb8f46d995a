//! Alert state kept across restarts in the state directory (`--state-dir`): the pending and
//! firing alerts of every rule ([`STATE_FILE`], so a restart resets no `for` timer and a
//! firing alert keeps its start) and the alert history ([`HISTORY_FILE`]: the last
//! [`MAX_HISTORY`] times an alert started firing or resolved, served by
//! `GET /api/alerts/history`). Both are JSON, written whole to a temporary file, `fsync`ed,
//! renamed over the old one and the directory `fsync`ed, so a crash leaves the old or the new
//! file, never a torn one. Without a state directory both live in memory only.
//!
//! The snapshot and event types and their conversions are pure; [`Persist::save`] and
//! [`Persist::restore`] do the (blocking) I/O.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use super::state::{Alert, Outgoing, State};
use super::GroupRun;
use crate::sync::lock;

/// The active alerts' file in the state directory.
pub const STATE_FILE: &str = "alerts-state.json";
/// The alert history's file in the state directory.
pub const HISTORY_FILE: &str = "alerts-history.json";
/// Most history events kept (the oldest go first).
pub const MAX_HISTORY: usize = 1000;
/// Least time a restored alert is held though its rule does not return it (nodes reconnect,
/// the history fills); at least two intervals of its group.
pub const RESTORE_HOLD_MS: i64 = 10_000;

/// One alert as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedAlert {
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
    pub value: f64,
    pub state: String,
    pub active_at: i64,
    pub fired_at: Option<i64>,
    pub keep_firing_since: Option<i64>,
}

/// One rule's alerts as saved, named by its group's file, its group and its name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedRule {
    pub file: String,
    pub group: String,
    pub rule: String,
    /// The rule's last evaluation (ms) before the save: when it was last seen up, what
    /// Prometheus reads as the last `ALERTS_FOR_STATE` sample's time. Absent in files of
    /// older versions (taken as the restore time: no downtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluated_at: Option<i64>,
    pub alerts: Vec<SavedAlert>,
}

/// The state file's content.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    pub rules: Vec<SavedRule>,
}

/// One history event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// `firing` or `resolved`.
    pub event: String,
    pub alertname: String,
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
    /// When it happened (ms): the firing start, or the resolution.
    pub at: i64,
    /// When the alert started firing (ms).
    pub starts_at: i64,
}

impl Event {
    /// The event an outgoing alert means, if any (a first firing send or a resolution).
    pub fn of(o: &Outgoing) -> Option<Event> {
        let (event, at) = if o.resolved {
            ("resolved", o.ends_at)
        } else if o.first {
            ("firing", o.starts_at)
        } else {
            return None;
        };
        let alertname = o
            .labels
            .iter()
            .find(|(k, _)| k == "alertname")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        Some(Event {
            event: event.into(),
            alertname,
            labels: o.labels.clone(),
            annotations: o.annotations.clone(),
            at,
            starts_at: o.starts_at,
        })
    }
}

fn saved(a: &Alert) -> Option<SavedAlert> {
    let state = match a.state {
        State::Pending => "pending",
        State::Firing => "firing",
        State::Inactive => return None,
    };
    Some(SavedAlert {
        labels: a.labels.clone(),
        annotations: a.annotations.clone(),
        value: a.value,
        state: state.into(),
        active_at: a.active_at,
        fired_at: a.fired_at,
        keep_firing_since: a.keep_firing_since,
    })
}

/// The pending and firing alerts of `groups` (each group's rules locked in turn).
pub fn snapshot(groups: &[Arc<GroupRun>]) -> Snapshot {
    let mut rules = Vec::new();
    for g in groups {
        let runs = lock(&g.rules);
        for (rule, run) in g.group.rules.iter().zip(runs.iter()) {
            let alerts: Vec<SavedAlert> = run.state.alerts.values().filter_map(saved).collect();
            if !alerts.is_empty() {
                rules.push(SavedRule {
                    file: g.group.file.clone(),
                    group: g.group.name.clone(),
                    rule: rule.name.clone(),
                    evaluated_at: Some(run.last_eval_ms),
                    alerts,
                });
            }
        }
    }
    Snapshot { version: 1, rules }
}

/// Where a pending alert's `for` resumes after a restart, as Prometheus's `RestoreForState`
/// moves its `activeAt`: `None` when the rule's `for` is under the grace period (Prometheus
/// does not restore it: the alert starts over); kept when it had already waited `for` before
/// `down_at` (it fires at the next evaluation that returns it); else moved so that it fires
/// no sooner than `grace_ms` after `now`, and no sooner than the pending time it had left
/// when it went down.
pub fn resume_active_at(
    active_at: i64,
    for_ms: i64,
    down_at: i64,
    now: i64,
    grace_ms: i64,
) -> Option<i64> {
    if for_ms < grace_ms {
        return None;
    }
    let remaining = for_ms - (down_at - active_at);
    Some(if remaining <= 0 {
        active_at
    } else if remaining < grace_ms {
        now + grace_ms - for_ms
    } else {
        active_at + (now - down_at).max(0)
    })
}

/// Puts the alerts of `snap` back into the rules of `groups` that have the same file,
/// group and name, held until `now` + max(2 × interval, [`RESTORE_HOLD_MS`]); a firing one
/// keeps its `activeAt` and start and counts as sent (a webhook is not told again); a
/// pending one resumes as [`resume_active_at`] says (or is dropped). Returns how many were
/// restored.
pub fn apply(snap: &Snapshot, groups: &[Arc<GroupRun>], now: i64, grace_ms: i64) -> usize {
    let mut n = 0;
    for g in groups {
        let hold = now + (2 * g.group.interval_ms).max(RESTORE_HOLD_MS);
        let mut runs = lock(&g.rules);
        for (rule, run) in g.group.rules.iter().zip(runs.iter_mut()) {
            let Some(s) = snap
                .rules
                .iter()
                .find(|r| r.file == g.group.file && r.group == g.group.name && r.rule == rule.name)
            else {
                continue;
            };
            for a in &s.alerts {
                let state = match a.state.as_str() {
                    "pending" => State::Pending,
                    "firing" => State::Firing,
                    _ => continue,
                };
                let down_at = s.evaluated_at.unwrap_or(now).min(now);
                let active_at = match state {
                    State::Firing => a.active_at,
                    _ => match resume_active_at(a.active_at, rule.for_ms, down_at, now, grace_ms) {
                        Some(t) => t,
                        None => continue,
                    },
                };
                let mut labels = a.labels.clone();
                labels.sort();
                run.state.alerts.insert(
                    labels.clone(),
                    Alert {
                        labels,
                        annotations: a.annotations.clone(),
                        value: a.value,
                        state,
                        active_at,
                        fired_at: a.fired_at,
                        resolved_at: None,
                        last_sent_at: (state == State::Firing)
                            .then(|| a.fired_at.unwrap_or(a.active_at)),
                        keep_firing_since: a.keep_firing_since,
                        held_until: Some(hold),
                    },
                );
                n += 1;
            }
        }
    }
    n
}

/// Writes `bytes` to `dir/name` atomically (temporary file, fsync, rename, directory fsync).
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// The saved state and history, and where they go.
#[derive(Debug, Default)]
pub struct Persist {
    dir: OnceLock<PathBuf>,
    history: Mutex<VecDeque<Event>>,
    /// The last state text written (an unchanged state is not written again).
    written: Mutex<String>,
    /// The last write error logged (each distinct one is logged once).
    last_error: Mutex<Option<String>>,
}

impl Persist {
    /// The history, newest first.
    pub fn history(&self) -> Vec<Event> {
        lock(&self.history).iter().rev().cloned().collect()
    }

    /// Reads the state directory's files (blocking) into `groups` and the history; a missing
    /// file is an empty one, a bad one is logged and ignored. Later saves go to `dir`.
    pub fn restore(&self, dir: Option<&Path>, groups: &[Arc<GroupRun>], now: i64, grace_ms: i64) {
        let Some(dir) = dir else { return };
        let _ = self.dir.set(dir.to_path_buf());
        let read = |name: &str| match std::fs::read(dir.join(name)) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(file = %dir.join(name).display(), error = %e, "cannot read saved alert state");
                None
            }
        };
        if let Some(b) = read(HISTORY_FILE) {
            match serde_json::from_slice::<Vec<Event>>(&b) {
                Ok(mut events) => {
                    let skip = events.len().saturating_sub(MAX_HISTORY);
                    events.drain(..skip);
                    *lock(&self.history) = events.into();
                }
                Err(e) => tracing::warn!(file = %dir.join(HISTORY_FILE).display(), error = %e,
                    "saved alert history is not valid; starting an empty one"),
            }
        }
        if let Some(b) = read(STATE_FILE) {
            match serde_json::from_slice::<Snapshot>(&b) {
                Ok(snap) => {
                    let n = apply(&snap, groups, now, grace_ms);
                    *lock(&self.written) = String::from_utf8_lossy(&b).into_owned();
                    tracing::info!(alerts = n, "pending and firing alerts restored");
                }
                Err(e) => tracing::warn!(file = %dir.join(STATE_FILE).display(), error = %e,
                    "saved alert state is not valid; every alert starts inactive"),
            }
        }
    }

    /// Records the events of `sent` and writes what changed (blocking).
    pub fn save(
        &self,
        groups: &[Arc<GroupRun>],
        sent: &[Outgoing],
        errors: &prometheus::IntCounter,
    ) {
        let events: Vec<Event> = sent.iter().filter_map(Event::of).collect();
        let history = (!events.is_empty()).then(|| {
            let mut h = lock(&self.history);
            for e in events {
                if h.len() >= MAX_HISTORY {
                    h.pop_front();
                }
                h.push_back(e);
            }
            serde_json::to_vec(&*h).unwrap_or_default()
        });
        let Some(dir) = self.dir.get() else { return };
        let mut result = Ok(());
        if let Some(text) = history {
            result = write_atomic(dir, HISTORY_FILE, &text);
        }
        let text = serde_json::to_string(&snapshot(groups)).unwrap_or_default();
        {
            let mut written = lock(&self.written);
            if *written != text {
                match write_atomic(dir, STATE_FILE, text.as_bytes()) {
                    Ok(()) => *written = text,
                    Err(e) => result = Err(e),
                }
            }
        }
        match result {
            Ok(()) => *lock(&self.last_error) = None,
            Err(e) => {
                errors.inc();
                let msg = e.to_string();
                let mut last = lock(&self.last_error);
                if last.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(dir = %dir.display(), error = %msg, "cannot save alert state");
                    *last = Some(msg);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(first: bool, resolved: bool) -> Outgoing {
        Outgoing {
            labels: vec![
                ("alertname".into(), "High".into()),
                ("node_name".into(), "a".into()),
            ],
            annotations: vec![],
            starts_at: 1_000,
            ends_at: 9_000,
            resolved,
            first,
        }
    }

    #[test]
    fn events_are_first_firing_sends_and_resolutions() {
        let e = Event::of(&out(true, false)).unwrap();
        assert_eq!(
            (e.event.as_str(), e.at, e.alertname.as_str()),
            ("firing", 1_000, "High")
        );
        assert!(Event::of(&out(false, false)).is_none(), "a resend");
        let e = Event::of(&out(false, true)).unwrap();
        assert_eq!(
            (e.event.as_str(), e.at, e.starts_at),
            ("resolved", 9_000, 1_000)
        );
    }

    #[test]
    fn pending_alerts_resume_as_prometheus_restores_for() {
        let (min, grace) = (60_000, 600_000);
        // `for` under the grace period: not restored (starts over).
        assert_eq!(resume_active_at(0, 5 * min, 2 * min, 60 * min, grace), None);
        // Already waited `for` before going down: fires at the next evaluation.
        assert_eq!(
            resume_active_at(0, 10 * min, 12 * min, 60 * min, grace),
            Some(0)
        );
        // 5 of 20 minutes spent, down 40 minutes: the 15 left are counted from the restart.
        let t = resume_active_at(0, 20 * min, 5 * min, 45 * min, grace).unwrap();
        assert_eq!(t, 40 * min);
        assert_eq!(
            t + 20 * min - 45 * min,
            15 * min,
            "fires 15 min after the restart"
        );
        // 15 of 20 minutes spent: 5 left, under the grace period: fires 10 min after it.
        let t = resume_active_at(0, 20 * min, 15 * min, 45 * min, grace).unwrap();
        assert_eq!(t + 20 * min, 45 * min + grace);
    }

    #[test]
    fn written_atomically_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "x.json", b"[1]").unwrap();
        write_atomic(dir.path(), "x.json", b"[2]").unwrap();
        assert_eq!(std::fs::read(dir.path().join("x.json")).unwrap(), b"[2]");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
    }
}
