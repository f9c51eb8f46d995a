//! Protocol sessions: one task per connection, speaking the native protocol ([`native`]) or
//! Cardano's forwarding protocol ([`cardano`]), feeding the protocol-independent ingest path.

pub mod cardano;
pub mod context;

pub use context::Context;
pub mod native;
