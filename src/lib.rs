//! tracerd: a trace-and-metrics acceptor for fleets of nodes, in the style of Cardano's
//! `cardano-tracer`.
//!
//! Nodes connect over Unix or TCP sockets and stream trace objects, metrics and data points;
//! tracerd writes each node's traces to its own rotated log files. See `docs/ARCHITECTURE.md`
//! for the bird's-eye view and the code map, and `README.md` for users.

pub mod alerts;
pub mod app;
pub mod capture;
pub mod cardano;
pub mod config;
pub mod errors;
pub mod events;
pub mod forward;
pub mod history;
pub mod http;
pub mod ingest;
pub mod logs;
pub mod metrics;
pub mod node;
pub mod running;
pub mod runs;
pub mod session;
pub mod ship;
pub mod sync;
pub mod tools;
pub mod transport;
pub mod ui;

// The wire types live in the `tracerd-wire` crate, shared with forwarders and simulators;
// re-exported so `tracerd::model`, `tracerd::native` and `tracerd::utc` name them here too.
pub use tracerd_wire::{model, native, utc};
