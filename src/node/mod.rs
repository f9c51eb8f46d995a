//! Nodes: their names ([`names`]: safe directory names, URL slugs), the registry of every
//! name claimed in this process ([`registry`]: collision suffixes, reclaim wait, persisted
//! sequence numbers, leases), and each node's live state ([`live`]: metrics, data points,
//! session facts, behind short-held locks; [`tap`]: the live view's bounded tap on written lines), and each name's reported tracing configuration
//! ([`tracer_config`]).

mod fleet;
pub use fleet::forget_departed_periodically;
pub mod live;
pub mod names;
pub mod registry;
pub mod rtt;
pub mod tap;
pub mod tracer_config;

pub use names::{
    dir_name, escape_name, slugify, NameError, MAX_HELLO_NAME_BYTES, MAX_NAME_BYTES, RESERVED_SLUGS,
};
pub use registry::{
    Lease, MetricsObserver, NodeEntry, NodeMetrics, NodeTraces, NodeView, Nodes, TraceObserver,
    RECLAIM_WAIT,
};
