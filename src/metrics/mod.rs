//! Metrics: Prometheus exposition of every node's metrics ([`exposition`], pure), the fleet
//! renders behind the node routes and `/metrics` ([`fleet`]), EKG JSON ([`ekg`]), tracerd's
//! own telemetry ([`telemetry`]) and the `/proc/self` sampler both telemetry and the
//! resource report use ([`process`]). [`budget`] bounds every node's stored metrics together
//! and gives freed memory back. [`disk`] reads each log root's disk usage.

pub mod budget;
pub mod disk;
pub mod ekg;
pub mod exposition;
pub mod fleet;
pub mod node_series;
pub mod process;
pub mod telemetry;
