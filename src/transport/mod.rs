//! Transport: listeners ([`listener`]: TCP, Unix with stale-socket handling, socket mode and
//! group) and the one accept loop ([`accept`]) with the per-source admission ([`admission`]),
//! the connection limit and backoff, used by
//! both node protocols and by the HTTP server. It knows no protocol: what a connection is
//! served with is the caller's [`Acceptor`].

pub mod accept;
pub mod admission;
pub mod listener;
pub mod sources;
pub mod tls;

pub use accept::{accept_loop, Acceptor, Conn, Stream};
pub use listener::{set_socket_permissions, BindError, Listener};
