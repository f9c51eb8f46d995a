//! The registry's side of fleet rendering: a [`NodeView`] is a [`FleetNode`], so
//! `metrics::fleet` can render the registry without importing it; and the ageing out of a
//! departed node's `tracerd_*` series ([`forget_departed_periodically`]).

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::metrics::fleet::{FleetNode, VisitMetrics};
use crate::metrics::telemetry::Telemetry;
use crate::node::{NodeView, Nodes};

/// How often departed nodes are looked for.
pub const DEPARTED_SWEEP_EVERY: Duration = Duration::from_millis(500);

/// Removes the `tracerd_*` series (`node_name`) of every node disconnected for at least `age`
/// (`tracerd.departedSeriesSecs`, read by `age()` each pass), until `cancel` fires. A node
/// that reconnects earlier keeps its series; one that comes back later starts them at 0.
pub async fn forget_departed_periodically(
    nodes: Nodes,
    telemetry: Telemetry,
    age: impl Fn() -> Duration + Send,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(DEPARTED_SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        for name in nodes.take_departed(age(), Instant::now()) {
            telemetry.forget_node(&name);
        }
    }
}

impl FleetNode for NodeView {
    fn name(&self) -> &str {
        &self.name
    }

    fn visit_metrics<V: VisitMetrics>(&self, visit: V) -> V::Output {
        let store = self.live.metrics();
        visit.visit(store.iter(), store.len(), store.version())
    }

    fn last_message_ms(&self) -> Option<u64> {
        self.live.last_message_ms()
    }

    fn queue_depth(&self) -> Option<usize> {
        self.live.queue_depth()
    }
}
