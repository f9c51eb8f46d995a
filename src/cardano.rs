//! Cardano's trace-forwarding protocol, so an unmodified cardano-node can connect. The wire
//! (the Ouroboros mux [`mux`], the CBOR messages [`codec`] and [`index`], the handshake [`handshake`]) is in
//! the `tracerd-wire` crate and re-exported here (with [`forwarder`], the node side re-forwarding plays), so daemon code names them
//! `crate::cardano::*`. The acceptor session that uses them (its `Settings`, node naming,
//! ConnectTo dialing) is `crate::session::cardano`; everything it receives goes through the
//! protocol-independent [`crate::ingest::NodeSink`]. The simulated cardano-node is in the
//! `tracerd-sim` crate.
//!
//! The byte-level reference is `cardano-forwarding-protocol.md` (sections cited as §n).

pub use tracerd_wire::cardano::{codec, forwarder, handshake, index, mux};
