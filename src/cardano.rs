//! Cardano's trace-forwarding protocol, so an unmodified cardano-node can connect. The wire
//! (the Ouroboros mux [`mux`], the CBOR messages [`codec`], the handshake [`handshake`]) is in
//! the `tracerd-wire` crate and re-exported here, beside a simulated cardano-node ([`sim`])
//! for tests and load generation. The acceptor session that uses them (its `Settings`, node
//! naming, ConnectTo dialing) is `crate::session::cardano`; everything it receives goes
//! through the protocol-independent [`crate::ingest::NodeSink`].
//!
//! The byte-level reference is `cardano-forwarding-protocol.md` (sections cited as §n).

pub mod sim;

pub use tracerd_wire::cardano::{codec, handshake, mux};
