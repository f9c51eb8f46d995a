//! The settings every Cardano session shares ([`Settings`]), from the cardano-tracer keys of
//! the config, and what sessions learn about nodes across connections (which forwarders
//! cannot decode `GetUpdatedMetrics`).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use crate::config::Config;

/// How long tracerd waits for the `NodeInfo` data point before naming a node by its address
/// (cardano-tracer's 10 s).
pub const NAME_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a session keeps reading trace replies after shutdown began (see
/// `Pump::drain_replies`).
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(2);

/// Settings every Cardano session shares, from the cardano-tracer keys of the config.
#[derive(Debug)]
pub struct Settings {
    /// `networkMagic`.
    pub network_magic: u32,
    /// `loRequestNum`: trace objects per blocking request (at least 1).
    pub lo_request_num: u16,
    /// `tracerd.cardanoTraceRequests`: trace-object requests kept outstanding (at least 1).
    pub trace_requests: usize,
    /// `ekgRequestFreq`: pause after each metrics response.
    pub ekg_request_freq: Duration,
    /// `ekgRequestFull`: always request every metric.
    pub ekg_request_full: bool,
    /// Time a peer has to complete the handshake (`tracerd.limits.handshakeTimeoutSecs`).
    pub handshake_timeout: Duration,
    /// Largest message reassembled per mini-protocol (`tracerd.limits.maxFrameBytes`).
    pub max_message_bytes: usize,
    /// Time to wait for `NodeInfo`.
    pub name_timeout: Duration,
    /// How long a session reads the replies to its outstanding trace requests once shutdown
    /// began: at most [`SHUTDOWN_DRAIN`], and half of `tracerd.shutdownGraceSecs`, so that
    /// the writers still have time to sync.
    pub shutdown_drain: Duration,
    /// Node names whose forwarder could not decode `GetUpdatedMetrics`.
    legacy_ekg: Mutex<HashSet<String>>,
}

impl Settings {
    /// Settings from a validated config.
    pub fn from_config(config: &Config) -> Settings {
        Settings {
            network_magic: config.network_magic,
            lo_request_num: config.lo_request_num.max(1),
            trace_requests: usize::from(config.tracerd.cardano_trace_requests.max(1)),
            ekg_request_freq: Duration::try_from_secs_f64(config.ekg_request_freq)
                .unwrap_or(Duration::from_secs(1)),
            ekg_request_full: config.ekg_request_full,
            handshake_timeout: Duration::try_from_secs_f64(
                config.tracerd.limits.handshake_timeout_secs,
            )
            .unwrap_or(Duration::from_secs(10)),
            max_message_bytes: config.tracerd.limits.max_frame_bytes as usize,
            name_timeout: NAME_TIMEOUT,
            shutdown_drain: SHUTDOWN_DRAIN.min(config.tracerd.shutdown_grace() / 2),
            legacy_ekg: Mutex::new(HashSet::new()),
        }
    }

    /// Whether metrics of `node` must be polled with `GetAllMetrics` only.
    pub fn full_ekg_only(&self, node: &str) -> bool {
        self.ekg_request_full || self.legacy().contains(node)
    }

    /// Remembers that `node` cannot decode `GetUpdatedMetrics` (an ekg-forward before 0.9).
    pub fn mark_legacy_ekg(&self, node: &str) {
        self.legacy().insert(node.to_string());
    }

    fn legacy(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // Every update is a single insert, so a poisoned set is still consistent.
        crate::sync::lock(&self.legacy_ekg)
    }
}
