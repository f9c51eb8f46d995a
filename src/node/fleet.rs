//! The registry's side of fleet rendering: a [`NodeView`] is a [`FleetNode`], so
//! `metrics::fleet` can render the registry without importing it.

use crate::metrics::fleet::{FleetNode, VisitMetrics};
use crate::node::NodeView;

impl FleetNode for NodeView {
    fn name(&self) -> &str {
        &self.name
    }

    fn visit_metrics<V: VisitMetrics>(&self, visit: V) -> V::Output {
        let store = self.live.metrics();
        visit.visit(store.iter(), store.len())
    }

    fn rtt_micros(&self) -> Option<u64> {
        self.live.rtt_micros()
    }

    fn last_message_ms(&self) -> Option<u64> {
        self.live.last_message_ms()
    }

    fn queue_depth(&self) -> Option<usize> {
        self.live.queue_depth()
    }
}
