//! tracerd-sim: simulated nodes, for tests and load, kept out of the daemon's library.
//!
//! * [`cardano`]: a simulated cardano-node, the forwarder side of Cardano's forwarding
//!   protocol, in either connection role (the end-to-end tests drive tracerd with it).
//! * [`load`]: `tracerd-load`, the fleet simulator and benchmark client: N native forwarders
//!   or N simulated cardano-nodes, one summary JSON line. Its binary is the root package's
//!   `src/bin/tracerd-load.rs`, which calls [`load::main`].
//!
//! Depends on `tracerd-wire` and `tracerd-forwarder`, never on the daemon.

pub mod cardano;
pub mod load;
