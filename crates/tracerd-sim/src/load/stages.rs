//! Where an acknowledged group's time went, as the forwarder saw it
//! ([`tracerd_forwarder::Forwarder::record_timing`]), and the summary's `ack_stages_ms`.
//!
//! A group's ack latency (handed to the forwarder → this driver saw the `Ack` covering it) is
//! split at two instants the forwarder records: its batch written, and the `Ack` decoded by the
//! forwarder's reader task. So:
//!
//! * `queued`: handed over → its batch written. The forwarder task's wake-up, the wait behind a
//!   batch in flight (Nagle's rule, at most the linger), encoding and `write(2)`.
//! * `flight`: written → `Ack` decoded. Everything on tracerd's side (the session's read, its
//!   queue, the write job, the `Ack`) plus both ends' socket paths and wake-ups.
//! * `notice`: `Ack` decoded → recorded by the driver: the generator's own hand-offs (reader
//!   task → forwarder task → driver), not tracerd's.
//! * `to_ack`: `queued` + `flight`, the latency without the generator's `notice`.
//!
//! `tail` is the composition of the slowest groups holding 1 % of the objects (what the p99 is
//! made of): the object-weighted mean of each stage, the causes of their batches' writes, and
//! when in the run they were handed over (a stall shows as a few tenths of a second holding
//! them all).

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tracerd_forwarder::SendCause;

use super::MAX_LATENCY_MICROS;

/// One acknowledged group (µs, weighted by `n` objects).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Staged {
    pub(crate) n: u64,
    pub(crate) total: u64,
    pub(crate) queued: u64,
    pub(crate) flight: u64,
    pub(crate) notice: u64,
    pub(crate) cause: SendCause,
    /// When it was handed over, in ms since the clock started.
    pub(crate) at_ms: u64,
}

fn cause_name(c: SendCause) -> &'static str {
    match c {
        SendCause::Idle => "idle",
        SendCause::Linger => "linger",
        SendCause::Full => "full",
        SendCause::Flush => "flush",
    }
}

fn ms(micros: f64) -> f64 {
    (micros / 1000.0 * 1000.0).round() / 1000.0
}

/// The share of objects per write cause, among `groups`.
fn causes<'a>(groups: impl Iterator<Item = &'a Staged> + Clone) -> Value {
    let total: u64 = groups.clone().map(|g| g.n).sum();
    let mut out = serde_json::Map::new();
    for c in [
        SendCause::Idle,
        SendCause::Linger,
        SendCause::Full,
        SendCause::Flush,
    ] {
        let n: u64 = groups.clone().filter(|g| g.cause == c).map(|g| g.n).sum();
        if n > 0 {
            let share = n as f64 / total.max(1) as f64;
            out.insert(
                cause_name(c).into(),
                json!((share * 1000.0).round() / 1000.0),
            );
        }
    }
    Value::Object(out)
}

/// When the slowest groups were handed over: per tenth of a second of the run (since the
/// clock started) that holds any, `[second, groups]`, at most 30 (the earliest).
fn when<'a>(groups: impl Iterator<Item = &'a Staged>) -> Value {
    let mut tenths = std::collections::BTreeMap::<u64, u64>::new();
    for g in groups {
        *tenths.entry(g.at_ms / 100).or_default() += 1;
    }
    Value::Array(
        tenths
            .into_iter()
            .take(30)
            .map(|(t, n)| json!([t as f64 / 10.0, n]))
            .collect(),
    )
}

/// The summary's `ack_stages_ms`: p50/p99 of each stage, the share of objects per write
/// cause, and the tail's composition. `{}` when no group was staged.
pub(crate) fn json(staged: &[Staged]) -> anyhow::Result<Value> {
    if staged.is_empty() {
        return Ok(json!({}));
    }
    let hist = |f: &dyn Fn(&Staged) -> u64| -> anyhow::Result<Histogram<u64>> {
        let mut h = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_MICROS, 3)?;
        for g in staged {
            h.record_n(f(g).clamp(1, MAX_LATENCY_MICROS), g.n)?;
        }
        Ok(h)
    };
    let quantiles = |h: &Histogram<u64>| {
        json!({
            "p50": ms(h.value_at_quantile(0.5) as f64),
            "p99": ms(h.value_at_quantile(0.99) as f64),
        })
    };
    let total = hist(&|g| g.total)?;
    let mut out = serde_json::Map::new();
    out.insert("total".into(), quantiles(&total));
    out.insert("queued".into(), quantiles(&hist(&|g| g.queued)?));
    out.insert("flight".into(), quantiles(&hist(&|g| g.flight)?));
    out.insert("notice".into(), quantiles(&hist(&|g| g.notice)?));
    out.insert("to_ack".into(), quantiles(&hist(&|g| g.queued + g.flight)?));
    out.insert("causes".into(), causes(staged.iter()));
    // The slowest groups holding (at least) 1 % of the objects: what the p99 is made of.
    let mut by_total: Vec<&Staged> = staged.iter().collect();
    by_total.sort_by_key(|g| std::cmp::Reverse(g.total));
    let all: u64 = staged.iter().map(|g| g.n).sum();
    let (mut taken, mut k) = (0u64, 0usize);
    while k < by_total.len() && taken * 100 < all {
        taken += by_total[k].n;
        k += 1;
    }
    let slow = by_total[..k].iter().copied();
    let objects: u64 = slow.clone().map(|g| g.n).sum();
    let mean = |f: &dyn Fn(&Staged) -> u64| {
        let sum: f64 = slow.clone().map(|g| f(g) as f64 * g.n as f64).sum();
        ms(sum / objects.max(1) as f64)
    };
    out.insert(
        "tail".into(),
        json!({
            "groups": slow.clone().count(),
            "objects": objects,
            "total": mean(&|g| g.total),
            "queued": mean(&|g| g.queued),
            "flight": mean(&|g| g.flight),
            "notice": mean(&|g| g.notice),
            "causes": causes(slow.clone()),
            "at_s": when(slow),
        }),
    );
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(n: u64, queued: u64, flight: u64, notice: u64, cause: SendCause) -> Staged {
        Staged {
            n,
            total: queued + flight + notice,
            queued,
            flight,
            notice,
            cause,
            at_ms: 0,
        }
    }

    #[test]
    fn the_tail_is_the_slowest_groups_composition() {
        // 99 fast groups of 10 objects, one slow one of 10 whose time is in flight.
        let mut staged: Vec<Staged> = (0..99)
            .map(|_| group(10, 100, 400, 50, SendCause::Idle))
            .collect();
        staged.push(group(10, 5_000, 40_000, 1_000, SendCause::Linger));
        let v = json(&staged).unwrap();
        assert_eq!(v["tail"]["groups"], 1);
        assert_eq!(v["tail"]["flight"], 40.0);
        assert_eq!(v["tail"]["queued"], 5.0);
        assert_eq!(v["tail"]["causes"]["linger"], 1.0);
        assert_eq!(v["tail"]["at_s"], json!([[0.0, 1]]));
        assert_eq!(v["causes"]["idle"], 0.99);
        assert_eq!(v["queued"]["p50"], 0.1);
        assert_eq!(v["to_ack"]["p50"], 0.5);
    }

    #[test]
    fn nothing_staged_is_an_empty_object() {
        assert_eq!(json(&[]).unwrap(), json!({}));
    }
}
