//! The server context every session shares ([`Context`]): the network magic, the running
//! config, the node registry and tracerd's own metrics; and the one way a session opens its
//! node's ingest path ([`Context::open_sink`]).

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::config::{Config, Durability, Limits};
use crate::ingest::{NodeSink, SinkError};
use crate::logs::LogSettings;
use crate::metrics::telemetry::Telemetry;
use crate::node::Nodes;
use crate::running::Running;
use crate::session::Protocol;

/// What every session shares.
#[derive(Debug, Clone)]
pub struct Context {
    /// Network magic nodes must present.
    pub network_magic: u32,
    /// The effective config, replaced by a reload: sessions read limits, durability and log
    /// settings from it when they start; writers follow rotation changes.
    pub running: Running,
    /// Node registry.
    pub nodes: Nodes,
    /// Own metrics.
    pub telemetry: Telemetry,
    /// The global queue budget in decoded bytes (`tracerd.limits.totalQueueBytes`), shared
    /// by every node's queue.
    pub budget: Arc<Semaphore>,
    /// Refusal log lines per source, rate-limited.
    pub refusals: Arc<crate::session::refusals::RefusalLog>,
    /// Re-forwarding (`hasForwarding`), when configured.
    pub reforward: Option<Arc<crate::forward::Reforwarder>>,
    /// Who may claim which node names (`tracerd.native.identities`); empty: no check.
    pub identities: Arc<crate::session::identity::Identities>,
    /// `tracerd.cardanoAllowFrom`: source networks of Cardano TCP connections; empty: any.
    pub cardano_allow: Arc<[crate::transport::sources::Network]>,
    /// The capture window: each session's connection is filed under its node's name.
    pub captures: Arc<crate::capture::Captures>,
}

impl Context {
    /// Shared state for `config`, with the node registry and metrics.
    pub fn new(config: &Config, nodes: Nodes, telemetry: Telemetry) -> Context {
        let running = Running::new(config.clone());
        Context {
            network_magic: config.network_magic,
            captures: Arc::new(crate::capture::Captures::new(
                &config.tracerd.capture,
                running.clone(),
            )),
            running,
            nodes,
            telemetry,
            budget: Arc::new(Semaphore::new(budget_permits(
                config.tracerd.limits.total_queue_bytes,
            ))),
            refusals: Default::default(),
            reforward: None,
            identities: Default::default(),
            cardano_allow: Arc::new([]),
        }
    }

    /// Current bounds.
    pub fn limits(&self) -> Limits {
        self.running.current().config.tracerd.limits.clone()
    }

    /// Current durability policy.
    pub fn durability(&self) -> Durability {
        self.running.current().config.tracerd.durability.clone()
    }

    /// Current verbosity of connection problem reports.
    pub fn verbosity(&self) -> crate::config::Verbosity {
        self.running.current().config.verbosity
    }

    /// Current log targets and rotation.
    pub fn logs(&self) -> Arc<LogSettings> {
        self.running.current().logs.clone()
    }
}

impl Context {
    /// Claims `name` (the sanitised form of the node's exact name `identity`) for `peer`
    /// and opens its ingest path (see [`NodeSink::open_as`]).
    pub async fn open_sink_as(
        &self,
        name: &str,
        identity: &str,
        peer: &str,
        protocol: Protocol,
        known: Vec<crate::model::DataPoint>,
    ) -> Result<NodeSink, SinkError> {
        let protocol = protocol.as_str();
        let sink = NodeSink::open_as(
            &self.nodes,
            &self.running,
            &self.telemetry,
            &self.budget,
            name,
            identity,
            peer,
            protocol,
        )
        .await?;
        // Before re-forwarding is attached: its downstream connection reads the node's path
        // (`TracerdPath`) to announce it, and a path not yet known there would let a loop
        // through.
        if !known.is_empty() {
            sink.lease().apply_data_points(known);
        }
        Ok(self.tap(sink, peer))
    }

    /// Claims `name` for `peer` and opens its ingest path (see [`NodeSink::open`]).
    pub async fn open_sink(
        &self,
        name: &str,
        peer: &str,
        protocol: Protocol,
    ) -> Result<NodeSink, SinkError> {
        let protocol = protocol.as_str();
        let sink = NodeSink::open(
            &self.nodes,
            &self.running,
            &self.telemetry,
            &self.budget,
            name,
            peer,
            protocol,
        )
        .await?;
        Ok(self.tap(sink, peer))
    }

    /// Connects a new sink to re-forwarding, when configured, and `peer`'s connection to
    /// captures.
    fn tap(&self, mut sink: NodeSink, peer: &str) -> NodeSink {
        self.captures.attach(peer, sink.name());
        if let Some(reforward) = &self.reforward {
            let tap = reforward.attach(sink.name(), sink.lease().live().clone());
            sink.set_tap(tap);
        }
        sink
    }
}

/// A byte budget as semaphore permits: at least 1, at most what a `Semaphore` holds.
pub fn budget_permits(bytes: u64) -> usize {
    usize::try_from(bytes)
        .unwrap_or(usize::MAX)
        .clamp(1, Semaphore::MAX_PERMITS)
}
