//! tracerd-wire: what both sides of tracerd's wire protocols share, so that a node (or a
//! simulator) and the daemon speak from one definition. No HTTP, metrics or daemon code.
//!
//! * [`model`]: the protocol-independent types a node sends (trace objects, metrics, data
//!   points), whichever protocol carried them.
//! * [`native`]: tracerd's native protocol: frames (4-byte length + one protobuf message),
//!   the prost types generated from `proto/tracerd/v1/tracerd.proto`, and their conversion to
//!   and from the model, for both the tracer side and the node side.
//! * [`Address`]: cardano-tracer's socket address syntax (`host:port` or a Unix path), and
//!   [`connect`], the one way a client opens a stream to one.
//! * [`Backoff`]: the one capped exponential backoff of every retry loop.
//! * [`tracing_config`]: a node's tracing configuration (trace-dispatcher's `TraceConfig` shape),
//!   its checks, its JSON text and the lookup a forwarder filters with.
//! * [`utc`]: calendar arithmetic for RFC 3339 timestamps and file stamps (no date crate).
//! * [`cardano`] (feature `cardano`): Cardano's forwarding protocol on the wire: the
//!   Ouroboros mux, the CBOR messages and the handshake. The only place that knows CBOR.

mod address;
mod backoff;
#[cfg(feature = "cardano")]
pub mod cardano;
mod connect;
pub mod model;
pub mod native;
mod text;
pub mod tracing_config;
pub mod utc;

pub use address::Address;
pub use backoff::Backoff;
pub use connect::{connect, Stream};
pub use text::Text;

/// Mainnet's network magic: the `networkMagic` a node and tracerd use unless told otherwise.
pub const MAINNET_NETWORK_MAGIC: u32 = 764_824_073;
