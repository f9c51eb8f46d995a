//! Native downstreams (`tracerd.forward`, issue 16 point 3): every node's trace objects passed
//! on to other tracerds over the native protocol, read back from this tracerd's own
//! machine-format files — no second queue on disk, and ingest never waits for a downstream.
//!
//! Per downstream and per node one connection ([`conn`]), named after the node's directory,
//! so the downstream files each node under its own name. Its position is a [`line::Cursor`]
//! (file, offset, sequence number) in `<shipStateDir>/forward-<name>/<node>.cursor`, fsynced,
//! moved only when the downstream's `Ack` covers the lines before it. The lines after it are
//! numbered on from its number, line by line (the lines the downstream's filter takes), so
//! after any crash the same line carries the same number and the downstream drops what it
//! has; `HelloAccept.persisted_seq` tells how far to skip. Lines are read only up to the
//! node's checkpoint (`logs::recovery::checkpoint`), which recovery never cuts: a line not
//! yet acknowledged to the node is not forwarded either.
//!
//! Layers: pure `line` (a line back to its object, the cursor text), blocking `reader` (ship's
//! `follow::read_node` from a cursor, numbering, the checkpoint bound), async `conn`.

pub mod conn;
pub mod line;
pub mod metrics;
pub mod mirror;
pub mod reader;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, NativeDownstream};
use crate::logs::LogSettings;
use crate::ship::{state::StateDir, ShipError};

/// How often each downstream looks for new node directories.
const DISCOVER_EVERY: Duration = Duration::from_secs(1);

/// The cursor directory of a downstream under the sinks' state base.
pub fn state_name(downstream: &NativeDownstream) -> String {
    format!("forward-{}", downstream.name)
}

/// Starts one discovery task per downstream of `tracerd.forward` on `tracker`.
pub fn start(
    config: &Config,
    state_dir: Option<&std::path::Path>,
    registry: &prometheus::Registry,
    nodes: &crate::node::Nodes,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<(), ShipError> {
    if config.tracerd.forward.is_empty() {
        return Ok(());
    }
    let key = "tracerd.forward";
    let base = crate::ship::state_base(config, state_dir).ok_or(ShipError::NoStateDir(key))?;
    let root = crate::ship::machine_root(config).ok_or(ShipError::NoMachineFiles(key))?;
    let first = LogSettings::from_config(config)
        .targets
        .first()
        .map(|t| t.root.clone())
        .ok_or(ShipError::NoMachineFiles(key))?;
    let metrics = metrics::Metrics::register(registry);
    for d in &config.tracerd.forward {
        let state =
            StateDir::open(&base, &state_name(d)).map_err(|e| ShipError::State(base.clone(), e))?;
        tracing::info!(downstream = %d.name, address = %d.address,
            namespaces = ?d.namespaces, "forwarding every node's lines to a native downstream");
        tracker.spawn(discover(
            Arc::new(d.clone()),
            root.clone(),
            first.clone(),
            state,
            metrics.clone(),
            config.network_magic,
            nodes.clone(),
            tracker.clone(),
            cancel.clone(),
        ));
    }
    Ok(())
}

/// Starts a [`conn::NodeTask`] for every node directory that appears under `root`.
#[allow(clippy::too_many_arguments)]
async fn discover(
    downstream: Arc<NativeDownstream>,
    root: PathBuf,
    first: PathBuf,
    state: StateDir,
    metrics: metrics::Metrics,
    magic: u32,
    nodes: crate::node::Nodes,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    let mut known = BTreeSet::new();
    loop {
        let r = root.clone();
        let dirs = tokio::task::spawn_blocking(move || crate::ship::follow::node_dirs(&r))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            .unwrap_or_default();
        for node in dirs {
            if !known.insert(node.clone()) {
                continue;
            }
            let task = conn::NodeTask {
                downstream: downstream.clone(),
                reader: reader::Reader {
                    dir: root.join(&node),
                    checkpoint_dir: first.join(&node),
                    ..reader::Reader::default()
                },
                node,
                state: state.clone(),
                metrics: metrics.clone(),
                magic,
                nodes: nodes.clone(),
            };
            tracker.spawn(task.run(cancel.clone()));
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(DISCOVER_EVERY) => {}
        }
    }
}
