//! A Rust service whose `tracing` events go to tracerd through the forwarder's layer, with
//! its filter controlled from tracerd (`PUT /api/nodes/<slug>/tracer-config`).
//!
//! ```text
//! cargo run -p tracerd-forwarder --example layer -- /tmp/tracerd.sock shop 30
//! ```
//!
//! The arguments are tracerd's address (a Unix socket path or host:port), the node name, and
//! how many seconds to run (default 30). Every 100 ms the service handles an "order" in a
//! `checkout` span: a DEBUG, an INFO and, every tenth order, a WARN event under the target
//! `shop::orders` (namespace `shop.orders.checkout`), and an INFO under `shop::payments`.
//! Whenever its tracing configuration changes it prints the one in force and the counters.
//! Use `--magic N` as a fourth argument when tracerd's networkMagic is not mainnet's.
//! While it runs, narrow the orders to warnings from tracerd:
//!
//! ```text
//! curl -X PUT -H 'Content-Type: application/json' \
//!   -d '{"config":{"Options":{"":{"severity":"Debug"},"shop.orders":{"severity":"Warning"}}}}' \
//!   http://127.0.0.1:12808/api/nodes/shop/tracer-config
//! ```

use std::time::{Duration, Instant};

use anyhow::Context;
use tracerd_forwarder::{Address, Forwarder, ForwarderConfig};
use tracing_subscriber::layer::SubscriberExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let address = args.first().map_or("/tmp/tracerd.sock", String::as_str);
    let name = args.get(1).map_or("shop", String::as_str);
    let seconds: u64 = args.get(2).map_or(Ok(30), |c| c.parse())?;
    let mut config =
        ForwarderConfig::new(Address::parse(address).map_err(anyhow::Error::msg)?, name);
    if let Some(magic) = args.get(3) {
        config.network_magic = magic.parse().context("network magic")?;
    }
    // The configuration at start is recorded in the node's own logs too.
    config.trace_config_at_start = true;
    let forwarder = Forwarder::start(config)?;
    // Every `tracing` event of this program now goes to tracerd (add a fmt layer beside it
    // to see them on the terminal as well).
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(forwarder.layer()),
    )?;

    let started = Instant::now();
    let mut shown = None;
    let mut order = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        order += 1;
        {
            let span = tracing::info_span!(target: "shop::orders", "checkout", order);
            let _entered = span.enter();
            tracing::debug!(target: "shop::orders", items = 3u64, "cart priced");
            tracing::info!(target: "shop::orders", total = 42.5, "order placed");
            if order % 10 == 0 {
                tracing::warn!(target: "shop::orders", left = 0i64, "item out of stock");
            }
        }
        tracing::info!(target: "shop::payments", amount = 42.5, ok = true, "payment captured");
        let now = forwarder.tracing_config();
        if shown.as_ref() != Some(&now) {
            println!("tracing configuration in force: {}", now.to_json());
            println!("{:?}", forwarder.stats());
            shown = Some(now);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    forwarder.flush(Duration::from_secs(10)).await;
    println!("{:?}", forwarder.close(Duration::from_secs(5)).await);
    Ok(())
}
