//! The cached fleet render against a fresh [`Renderer`] of the same state, over rounds of
//! changed values, removed metrics, departed, renamed and returning nodes.

use super::*;
use crate::metrics::exposition::{Naming, Renderer};

/// One node as a scrape sees it: its name, store version and metrics in store order.
#[derive(Clone)]
struct Node {
    name: String,
    version: u64,
    metrics: Vec<(Arc<MetricName>, MetricValue)>,
}

const RESERVED: &str = "tracerd_node_metrics";

/// What the cached render writes for the nodes' families, its stats, and the lines it keeps.
fn cached(
    format: Format,
    nodes: &[Node],
    cache: LineCache,
    bound: usize,
) -> (String, RenderStats, LineCache, usize) {
    let mut r = FleetRender::new(format, cache, nodes.len()).with_cache_bound(bound);
    r.reserve(RESERVED);
    for n in nodes {
        r.add_node(&n.name, n.version, n.metrics.iter().map(|(k, v)| (k, v)));
    }
    let formatted = r.formatted;
    let mut stats = None;
    let (out, cache) = r.finish(|s| {
        stats = Some(s);
        "# tail\n".to_string()
    });
    let out = String::from_utf8(out).expect("UTF-8");
    let body = out.strip_suffix("# tail\n").expect("tail last").to_string();
    (body, stats.expect("tail called"), cache, formatted)
}

/// The same state through [`Renderer`], which formats everything every time.
fn fresh(format: Format, nodes: &[Node]) -> (String, RenderStats) {
    let mut r = Renderer::with_nodes(format, nodes.len());
    r.reserve(RESERVED);
    for n in nodes {
        r.add_node(Some(&n.name), n.metrics.iter().map(|(k, v)| (k, v)));
    }
    let mut out = String::new();
    let stats = r.finish(&mut out);
    (out, stats)
}

/// Deterministic xorshift, so a failure replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Names that collide, clash with a reserved name, have no usable character, or share an
/// internal name through an uncached lookup.
fn name_pool(naming: &Naming) -> Vec<Arc<MetricName>> {
    let mut pool: Vec<Arc<MetricName>> = [
        "a",
        "a.b",
        "a-b",
        "x",
        "x_total",
        "x_created",
        "\u{1F600}",
        "c",
        "c_total",
        RESERVED,
        "lbl",
        "num",
        "txt",
        "m",
    ]
    .iter()
    .map(|n| naming.name(n))
    .collect();
    pool.push(Arc::new(naming.compute("m")));
    pool
}

fn value(rng: &mut Rng) -> MetricValue {
    match rng.below(9) {
        0 => MetricValue::Counter(rng.below(100) as i64),
        1 => MetricValue::Counter(-(rng.below(5) as i64) - 1),
        2 => MetricValue::Gauge(rng.below(1000) as f64 / 8.0),
        3 => MetricValue::Label("12.5".into()),
        4 => MetricValue::Label("hello \"w\"\n".into()),
        5 => MetricValue::Label("{node_name=\"inner\"} 1".into()),
        6 => MetricValue::Label("{node_name=\"a\",exported_node_name=\"b\"} 1".into()),
        7 => MetricValue::Label(format!("{{v=\"{}\"}} 1", rng.below(3))),
        _ => MetricValue::Gauge(f64::NAN),
    }
}

fn snapshot(rng: &mut Rng, pool: &[Arc<MetricName>]) -> Vec<(Arc<MetricName>, MetricValue)> {
    let mut m: Vec<(Arc<MetricName>, MetricValue)> = Vec::new();
    for name in pool {
        if rng.below(3) > 0 {
            m.push((name.clone(), value(rng)));
        }
    }
    // Store order is no order: shuffle.
    for i in (1..m.len()).rev() {
        m.swap(i, rng.below(i + 1));
    }
    m
}

#[test]
fn cached_render_equals_a_fresh_render_through_changes_and_departures() {
    for (seed, openmetrics_names) in [(1, false), (2, true), (3, false), (4, true)] {
        let naming = Naming::default().with_openmetrics_names(openmetrics_names);
        let pool = name_pool(&naming);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
        let mut version = 0;
        let names = ["n0", "n1", "q\"uote", "n\\3", "n4", "n5"];
        let mut nodes: Vec<Node> = names[..4]
            .iter()
            .map(|n| {
                version += 1;
                Node {
                    name: n.to_string(),
                    version,
                    metrics: snapshot(&mut rng, &pool),
                }
            })
            .collect();
        let mut caches = [LineCache::default(), LineCache::default()];
        let mut reused = 0;
        for round in 0..300 {
            let i = rng.below(nodes.len().max(1));
            match rng.below(8) {
                // A new snapshot (every value may change, metrics come and go).
                0 | 1 if !nodes.is_empty() => {
                    version += 1;
                    nodes[i].version = version;
                    nodes[i].metrics = snapshot(&mut rng, &pool);
                }
                // A delta: one value changes.
                2 if !nodes.is_empty() && !nodes[i].metrics.is_empty() => {
                    version += 1;
                    nodes[i].version = version;
                    let j = rng.below(nodes[i].metrics.len());
                    nodes[i].metrics[j].1 = value(&mut rng);
                }
                // One metric removed.
                3 if !nodes.is_empty() && !nodes[i].metrics.is_empty() => {
                    version += 1;
                    nodes[i].version = version;
                    let j = rng.below(nodes[i].metrics.len());
                    nodes[i].metrics.remove(j);
                }
                // The node departs.
                4 if !nodes.is_empty() => {
                    nodes.remove(i);
                }
                // A node arrives, or one comes back under a name seen before, with a new
                // session (a store never updated has version 0 and no metrics).
                5 => {
                    let name = names[rng.below(names.len())].to_string();
                    let node = if rng.below(2) == 0 {
                        Node {
                            name,
                            version: 0,
                            metrics: Vec::new(),
                        }
                    } else {
                        version += 1;
                        Node {
                            name,
                            version,
                            metrics: snapshot(&mut rng, &pool),
                        }
                    };
                    let at = rng.below(nodes.len() + 1);
                    nodes.insert(at, node);
                }
                // Fleet order changes (the registry lists nodes in its own order).
                6 if nodes.len() > 1 => {
                    let j = rng.below(nodes.len());
                    nodes.swap(i, j);
                }
                _ => {}
            }
            for (k, format) in [Format::OpenMetrics, Format::Text].into_iter().enumerate() {
                let bound = if round % 7 == 0 {
                    300
                } else {
                    MAX_CACHED_BYTES
                };
                let cache = std::mem::take(&mut caches[k]);
                let (got, got_stats, cache, formatted) = cached(format, &nodes, cache, bound);
                assert!(cache.bytes() <= bound, "cache over its bound");
                reused += nodes.len() - formatted;
                caches[k] = cache;
                let (want, want_stats) = fresh(format, &nodes);
                assert_eq!(got, want, "seed {seed} round {round} {format:?}");
                assert_eq!(
                    got_stats, want_stats,
                    "seed {seed} round {round} {format:?}"
                );
            }
        }
        assert!(
            reused > 300,
            "the cache was hardly used: {reused} nodes reused"
        );
    }
}

#[test]
fn an_unchanged_fleet_is_copied_not_formatted() {
    let naming = Naming::default();
    let pool = name_pool(&naming);
    let mut rng = Rng(7);
    let mut nodes: Vec<Node> = (0..20)
        .map(|n| Node {
            name: format!("node-{n}"),
            version: n + 1,
            metrics: snapshot(&mut rng, &pool),
        })
        .collect();
    let (first, _, cache, formatted) = cached(Format::Text, &nodes, LineCache::default(), 1 << 20);
    assert_eq!(formatted, 20);
    assert_eq!(cache.len(), 20);
    let (second, _, cache, formatted) = cached(Format::Text, &nodes, cache, 1 << 20);
    assert_eq!((formatted, second.as_str()), (0, first.as_str()));
    nodes[3].version = 100;
    nodes[3].metrics[0].1 = MetricValue::Gauge(4242.0);
    nodes.remove(7);
    let (third, _, cache, formatted) = cached(Format::Text, &nodes, cache, 1 << 20);
    assert_eq!(formatted, 1, "only the changed node is formatted again");
    assert_eq!(cache.len(), 19, "the departed node's lines are dropped");
    assert_eq!(third, fresh(Format::Text, &nodes).0);
}
