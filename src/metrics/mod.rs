//! Metrics: Prometheus exposition of every node's metrics ([`exposition`]), EKG JSON
//! ([`ekg`]) and tracerd's own telemetry ([`telemetry`]).

pub mod ekg;
pub mod exposition;
pub mod telemetry;
