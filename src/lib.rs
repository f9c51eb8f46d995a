//! tracerd: a trace-and-metrics acceptor for fleets of nodes, in the style of Cardano's
//! `cardano-tracer`.
//!
//! Nodes connect over Unix or TCP sockets and stream trace objects, metrics and data points;
//! tracerd writes each node's traces to its own rotated log files. See `docs/ARCHITECTURE.md`
//! for the bird's-eye view and the code map, and `README.md` for users.

pub mod app;
pub mod cardano;
pub mod config;
pub mod forwarder;
pub mod http;
pub mod ingest;
pub mod logs;
pub mod metrics;
pub mod model;
pub mod node;
pub mod protocol;
pub mod session;
pub mod transport;
pub mod utc;
