//! Cardano's trace-forwarding protocol on the wire, for both the acceptor (tracerd) and the
//! forwarder (a node, or the simulator): the Ouroboros mux ([`mux`]), the CBOR messages
//! ([`codec`]) and the handshake ([`handshake`]). Only these modules know CBOR (minicbor);
//! the session logic that pulls objects and polls metrics lives in the daemon.
//!
//! The byte-level reference is `cardano-forwarding-protocol.md` (sections cited as §n); the
//! conformance tests against its examples are in `cardano/tests.rs`.

pub mod codec;
pub mod forwarder;
pub mod handshake;
pub mod index;
pub mod mux;

#[cfg(test)]
mod tests;
