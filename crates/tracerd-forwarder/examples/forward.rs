//! Forwarding traces, metrics and a data point to a running tracerd with
//! the `tracerd-forwarder` crate.
//!
//! Run tracerd (e.g. `tracerd -c config.yaml` with `tracerd.native.acceptAt` listing
//! `/tmp/tracerd.sock`), then:
//!
//! ```text
//! cargo run --example forward -- /tmp/tracerd.sock my-node 1000
//! cargo run --example forward -- 127.0.0.1:3179 my-node 1000
//! ```
//!
//! The arguments are tracerd's address (a Unix socket path or host:port), the node name, and
//! how many trace objects to send. The example sends them, updates two metrics, waits (at
//! most 10 s) until tracerd has acknowledged everything, and prints the forwarder's counters.
//! Use `--magic N` as a fourth argument when tracerd's networkMagic is not mainnet's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tracerd_forwarder::model::{
    DataPoint, DetailLevel, MetricValue, MetricsUpdate, Severity, TraceObject,
};
use tracerd_forwarder::{Address, Forwarder, ForwarderConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let address = args.first().map_or("/tmp/tracerd.sock", String::as_str);
    let name = args.get(1).map_or("example-node", String::as_str);
    let count: u64 = args.get(2).map_or(Ok(1000), |c| c.parse())?;
    let address = Address::parse(address).map_err(anyhow::Error::msg)?;

    let mut config = ForwarderConfig::new(address, name);
    if let Some(magic) = args.get(3) {
        config.network_magic = magic.parse().context("network magic")?;
    }
    // A small queue: what does not fit while tracerd is unreachable is dropped and counted.
    config.queue_capacity = 10_000;
    let forwarder = Forwarder::start(config)?;

    forwarder.data_points(vec![DataPoint {
        name: "NodeInfo".into(),
        json: format!(r#"{{"niName":"{name}","niProtocol":"Cardano","niVersion":"10.1.4"}}"#),
    }]);
    for seq in 1..=count {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as i64;
        let object = TraceObject {
            namespace: "ChainDB.AddBlockEvent.AddedToCurrentChain".into(),
            severity: Severity::Notice,
            detail: DetailLevel::Normal,
            timestamp_ns: now,
            hostname: name.into(),
            thread_id: "42".into(),
            machine: format!(r#"{{"kind":"AddedToCurrentChain","seq":{seq}}}"#).into(),
            human: Some(format!("Chain extended, block {seq}").into()),
            form: Default::default(),
        };
        if let Err(e) = forwarder.trace(object) {
            eprintln!("object {seq}: {e}");
        }
        if seq % 100 == 0 {
            forwarder.metrics(MetricsUpdate {
                full: false,
                metrics: vec![
                    (
                        "cardano.node.metrics.blockNum_int".into(),
                        MetricValue::Counter(seq as i64),
                    ),
                    (
                        "cardano.node.metrics.density_real".into(),
                        MetricValue::Gauge(0.05),
                    ),
                ],
            });
        }
    }
    let all_acked = forwarder.flush(Duration::from_secs(10)).await;
    let stats = forwarder.close(Duration::from_secs(2)).await;
    println!("all acknowledged: {all_acked}");
    println!("{stats:#?}");
    Ok(())
}
