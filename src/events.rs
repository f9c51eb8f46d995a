//! Internal events (vector's `internal_events`): each event is one typed value whose `emit`
//! writes its log line and bumps its counter with the same labels, so a log line and the
//! metric that counts it cannot drift apart. The connection lifecycle (accepted, refused by
//! the limit, handshake refused, closed with its reason, decode errors) and the node writer's
//! write errors are emitted here; their log texts and metric names are part of tracerd's
//! interface (docs/ARCHITECTURE.md, README).
//!
//! Labels are the bounded `&'static str` values the metrics use (`"native"`, `"cardano"`,
//! an error's `label()`), so this module depends on nothing above the metrics it bumps.

use std::time::Duration;

use crate::errors::error_chain;
use crate::logs::writer::WriteError;
use crate::metrics::telemetry::Telemetry;

/// A connection passed the connection limit and is about to be served.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionAccepted {
    /// The protocol label.
    pub protocol: &'static str,
}

impl ConnectionAccepted {
    /// Counts it in `tracerd_connections_accepted_total{protocol}`.
    pub fn emit(self, t: &Telemetry) {
        t.connections_accepted
            .with_label_values(&[self.protocol])
            .inc();
    }
}

/// tracerd dialed a node (ConnectTo) and holds a connection to it.
#[derive(Debug, Clone, Copy)]
pub struct NodeDialed<'a> {
    /// The node's address.
    pub peer: &'a str,
    /// The protocol label.
    pub protocol: &'static str,
}

impl NodeDialed<'_> {
    /// Logs it and counts it as accepted.
    pub fn emit(self, t: &Telemetry) {
        tracing::info!(peer = %self.peer, protocol = self.protocol, "connected to node");
        ConnectionAccepted {
            protocol: self.protocol,
        }
        .emit(t);
    }
}

/// The accept loop of a node listener closed a new connection: the connection limit
/// (`tracerd.limits.maxConnections`) or a per-source bound (`tracerd.limits.perSource`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionRefused<'a> {
    /// The refused peer.
    pub peer: &'a str,
    /// Its source (address, /64, or Unix uid and pid), in words.
    pub source: &'a crate::transport::admission::Source,
    /// The bounded reason, also the metric label.
    pub reason: &'static str,
    /// The reason in words.
    pub words: &'static str,
    /// `Some(n)`: log it, saying `n` earlier refusals for this reason were not logged;
    /// `None`: count it only (the lines are rate-limited).
    pub log: Option<u64>,
}

impl ConnectionRefused<'_> {
    /// Counts it in `tracerd_connections_refused_total{reason}` and logs it when `log` says so.
    pub fn emit(self, t: &Telemetry) {
        t.connections_refused
            .with_label_values(&[self.reason])
            .inc();
        if let Some(suppressed) = self.log {
            tracing::warn!(peer = %self.peer, source = %self.source, reason = self.reason,
                suppressed, "{}; closing new connection", self.words);
        }
    }
}

/// The HTTP server closed a new connection: its socket cap, the endpoint's connection limit or
/// the client's (`tracerd.limits.http`).
#[derive(Debug, Clone, Copy)]
pub struct HttpConnectionRefused<'a> {
    /// The refused peer.
    pub peer: &'a str,
    /// The bounded reason, also the metric label.
    pub reason: &'static str,
    /// Which limit, in words.
    pub words: &'a str,
    /// `Some(n)`: log it, with the refusals not logged (rate limit) since the last line.
    pub log: Option<u64>,
}

impl HttpConnectionRefused<'_> {
    /// Counts it in `tracerd_http_connections_refused_total{reason}` and logs it when `log`
    /// says so.
    pub fn emit(self, t: &Telemetry) {
        t.http_connections_refused
            .with_label_values(&[self.reason])
            .inc();
        if let Some(suppressed) = self.log {
            tracing::warn!(peer = %self.peer, reason = self.reason, suppressed,
                "HTTP connection refused: {}; closing new connection", self.words);
        }
    }
}

/// Who refused a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedBy {
    /// tracerd refused the node.
    Tracerd,
    /// The node refused tracerd (Cardano ConnectTo).
    Peer,
}

/// A handshake was refused; the connection ends.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeRefused<'a> {
    /// The peer.
    pub peer: &'a str,
    /// The protocol label; the native line has never carried it, so `None` there.
    pub protocol: Option<&'static str>,
    /// The bounded reason, also the metric label.
    pub reason: &'static str,
    /// The explanation sent or received.
    pub message: &'a str,
    /// Who refused.
    pub by: RefusedBy,
    /// `Some(n)`: log it, saying `n` earlier refusals of its source were not logged;
    /// `None`: count it only (the source's refusals are rate-limited).
    pub log: Option<u64>,
}

impl HandshakeRefused<'_> {
    /// Logs it (when `log` says so) and counts it in `tracerd_connections_refused_total{reason}`.
    /// The message is escaped and capped: it may carry what the peer sent.
    pub fn emit(self, t: &Telemetry) {
        t.connections_refused
            .with_label_values(&[self.reason])
            .inc();
        let Some(suppressed) = self.log else {
            return;
        };
        let (peer, reason) = (self.peer, self.reason);
        let message = crate::node::escape_name(self.message);
        match (self.protocol, self.by) {
            (None, _) => tracing::warn!(%peer, reason, %message, suppressed, "handshake refused"),
            (Some(protocol), RefusedBy::Tracerd) => {
                tracing::warn!(%peer, protocol, reason, %message, suppressed, "handshake refused")
            }
            (Some(protocol), RefusedBy::Peer) => {
                tracing::warn!(%peer, protocol, reason, %message, suppressed, "node refused the handshake")
            }
        }
    }
}

/// How a connection ended, as the end-of-connection report sees it.
#[derive(Debug)]
pub enum Closed<'a> {
    /// Without error; the label says why (`peer_closed`, `shutdown`, a refusal).
    Ended(&'static str),
    /// The connection broke (an I/O error); `error` is the text to log.
    Lost {
        /// The metric label of the error.
        reason: &'static str,
        /// The error text.
        error: String,
    },
    /// A session error other than I/O.
    Failed {
        /// The metric label of the error.
        reason: &'static str,
        /// The error.
        error: &'a dyn std::error::Error,
        /// The `decode_errors` reason, when the peer sent something malformed.
        decode: Option<&'static str>,
    },
}

/// A connection ended: the one end-of-connection log line and counter.
#[derive(Debug)]
pub struct ConnectionClosed<'a> {
    /// The peer.
    pub peer: &'a str,
    /// The protocol label.
    pub protocol: &'static str,
    /// How it ended.
    pub how: Closed<'a>,
    /// How long the connection lasted.
    pub duration: Duration,
    /// `verbosity: Minimum`: connection problems log at debug level.
    pub quiet: bool,
}

impl ConnectionClosed<'_> {
    /// Counts it in `tracerd_connections_closed_total{reason}` (and a malformed input in
    /// `tracerd_decode_errors_total{reason}`) and logs it once, with peer and reason.
    pub fn emit(self, t: &Telemetry) {
        let ConnectionClosed {
            peer,
            protocol,
            how,
            duration,
            quiet,
        } = self;
        let duration_secs = duration.as_secs_f64();
        match how {
            Closed::Ended(reason) => {
                t.connections_closed.with_label_values(&[reason]).inc();
                tracing::info!(%peer, protocol, reason, duration_secs, "connection closed");
            }
            Closed::Lost { reason, error } => {
                t.connections_closed.with_label_values(&[reason]).inc();
                if quiet {
                    tracing::debug!(%peer, protocol, %error, duration_secs, "connection lost")
                } else {
                    tracing::info!(%peer, protocol, %error, duration_secs, "connection lost")
                }
            }
            Closed::Failed {
                reason,
                error,
                decode,
            } => {
                t.connections_closed.with_label_values(&[reason]).inc();
                if let Some(decode) = decode {
                    DecodeError { reason: decode }.emit(t);
                }
                let error = error_chain(error);
                if quiet {
                    tracing::debug!(%peer, protocol, reason, %error, duration_secs,
                        "connection closed on error")
                } else {
                    tracing::warn!(%peer, protocol, reason, %error, duration_secs,
                        "connection closed on error")
                }
            }
        }
    }
}

/// A peer sent something that is not a valid frame or message (logged with the closing of
/// its connection).
#[derive(Debug, Clone, Copy)]
pub struct DecodeError {
    /// The bounded kind of the error.
    pub reason: &'static str,
}

impl DecodeError {
    /// Counts it in `tracerd_decode_errors_total{reason}`.
    pub fn emit(self, t: &Telemetry) {
        t.decode_errors.with_label_values(&[self.reason]).inc();
    }
}

/// A node writer's write failed (e.g. a full disk).
#[derive(Debug)]
pub struct WriteFailed<'a> {
    /// The node.
    pub node: &'a str,
    /// The error.
    pub error: &'a WriteError,
    /// The first failure of a streak: the writer is now blocked.
    pub blocking: bool,
    /// When the streak is due for a report: errors suppressed since the last one, and what
    /// the writer does about it.
    pub report: Option<(u64, &'static str)>,
}

impl WriteFailed<'_> {
    /// Counts it in `tracerd_log_write_errors_total` (and `tracerd_fsync_errors_total`),
    /// marks the writer blocked, and logs the report when due.
    pub fn emit(self, t: &Telemetry) {
        t.write_errors.inc();
        if matches!(self.error, WriteError::Sync { .. }) {
            t.fsync_errors.inc();
        }
        if self.blocking {
            t.writers_blocked.inc();
        }
        if let Some((suppressed, action)) = self.report {
            tracing::error!(node = %self.node, error = %error_chain(self.error),
                suppressed, "cannot write node logs; {action}");
        }
    }
}

/// A blocked node writer wrote again.
#[derive(Debug, Clone, Copy)]
pub struct WriteResumed<'a> {
    /// The node.
    pub node: &'a str,
    /// How long it was blocked.
    pub after: Duration,
}

impl WriteResumed<'_> {
    /// Logs it and unmarks the writer blocked.
    pub fn emit(self, t: &Telemetry) {
        t.writers_blocked.dec();
        tracing::info!(node = %self.node, after = ?self.after, "node log writing resumed");
    }
}

/// Objects dropped after a write error (`onWriteError: drop`); the error itself was
/// reported by [`WriteFailed`].
#[derive(Debug, Clone, Copy)]
pub struct WriteDropped {
    /// How many trace objects.
    pub objects: u64,
}

impl WriteDropped {
    /// Counts them in `tracerd_trace_objects_dropped_total{reason="write_error"}`.
    pub fn emit(self, t: &Telemetry) {
        t.objects_dropped
            .with_label_values(&["write_error"])
            .inc_by(self.objects);
    }
}
