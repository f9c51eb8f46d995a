//! Issue 14, the live view in a real browser: Debian's headless Chromium driven over WebDriver
//! (Debian's chromedriver, the `fantoccini` crate) against the real `tracerd` with nodes
//! streaming into it. One chromedriver per test binary, started on first use on a free
//! loopback port and killed when the test binary exits (a shell watchdog follows this
//! process); each test opens its own browser with a fresh profile and closes it.
//!
//! Also the `#[ignore]`d tools: `ui_screenshots` (docs/ui-*.png) and `ui_bench_100_nodes`
//! (BENCHMARKS.md), run by hand.

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::SinkExt;
use serde_json::{json, Value};
use tracerd::model::{MetricValue, Severity, TraceBatch, TraceObject};
use tracerd::native::NodeMessage;

use crate::support::*;
use crate::ui::{metrics, start_with_ui};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const INSTALL: &str = "apt-get install chromium chromium-driver (or run ./test.sh as root)";

/// The chromedriver of this test binary: its port.
fn driver() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(tool).exists(),
                "{tool} is missing: the live view's browser tests need it: {INSTALL}"
            );
        }
        let port = free_port();
        let log = std::env::temp_dir().join(format!("tracerd-chromedriver-{port}.log"));
        // chromedriver in its own process group (with the browsers it starts), killed by the
        // watchdog loop once this test process is gone.
        let script = format!(
            "setsid {CHROMEDRIVER} --port={port} --allowed-ips=127.0.0.1 >{log} 2>&1 & d=$!; \
             while kill -0 {me} 2>/dev/null; do sleep 0.5; done; kill -KILL -- -$d 2>/dev/null; kill -KILL $d 2>/dev/null",
            log = log.display(),
            me = std::process::id()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(|mut watchdog| std::thread::spawn(move || watchdog.wait()))
            .expect("starting chromedriver");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port} within 60 s: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        port
    })
}

/// A fresh headless Chromium (its own profile directory, kept until the browser is closed).
pub struct Browser {
    pub c: Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn open(width: u32, height: u32) -> Browser {
        let port = driver();
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--no-first-run", "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--window-size={width},{height}"),
                ]
            }
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let c = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| panic!("starting headless chromium: {e} ({INSTALL})"));
        Browser {
            c,
            _profile: profile,
        }
    }

    /// Runs `js` (a function body returning a value) in the page.
    pub async fn js(&self, js: &str) -> Value {
        self.c.execute(js, vec![]).await.unwrap()
    }

    /// Waits until `js` returns true (bounded by `within`); the last value in the panic.
    pub async fn until(&self, within: Duration, what: &str, js: &str) -> Duration {
        let started = Instant::now();
        loop {
            let v = self.c.execute(js, vec![]).await.unwrap();
            if v == Value::Bool(true) {
                return started.elapsed();
            }
            if started.elapsed() > within {
                let body = self
                    .js("return document.querySelector('main').innerText")
                    .await;
                panic!("the page did not show {what} within {within:?} (last: {v}); page:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks what `at` finds, finding it again when the page re-rendered it between the
    /// find and the click (the overview redraws its cards on every update: a
    /// StaleElementReference); bounded, the last error in the panic.
    pub async fn click(&self, at: Locator<'_>) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = match self.c.find(at).await {
                Ok(e) => e.click().await.map(|_| ()),
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => return,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "cannot click {at:?} within 20 s: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn close(self) {
        let _ = self.c.close().await;
    }
}

fn line(node: &str, seq: u64, severity: Severity, ns: &str, marker: &str) -> TraceObject {
    TraceObject {
        severity,
        namespace: ns.into(),
        machine: format!("{{\"node\":\"{node}\",\"seq\":{seq},\"marker\":\"{marker}\"}}").into(),
        ..object(node, seq, 0)
    }
}

async fn send(node: &mut FakeNode<tokio::net::TcpStream>, objects: Vec<TraceObject>, first: u64) {
    let last = first + objects.len() as u64 - 1;
    node.framed
        .send(NodeMessage::Traces(TraceBatch {
            first_seq: first,
            objects,
        }))
        .await
        .unwrap();
    node.wait_ack(last).await;
}

fn node_metrics(slot: f64, mem: f64) -> NodeMessage {
    metrics(&[
        ("cardano.node.metrics.slotNum_int", MetricValue::Gauge(slot)),
        (
            "cardano.node.metrics.blockNum_int",
            MetricValue::Gauge(slot / 20.0),
        ),
        ("cardano.node.metrics.epoch_int", MetricValue::Gauge(512.0)),
        (
            "cardano.node.metrics.connectedPeers_int",
            MetricValue::Gauge(8.0),
        ),
        ("Mem.resident_int", MetricValue::Gauge(mem)),
        (
            "Stat.cputicks_int",
            MetricValue::Counter((slot * 3.0) as i64),
        ),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_view_in_chromium_shows_nodes_charts_logs_filters_and_staleness() {
    let (d, port) = start_with_ui("");
    // The browser first: its start can take tens of seconds on a busy machine, and the nodes
    // below must still be fresh (connected, not stale) when the page first loads.
    let br = Browser::open(1280, 900).await;
    let mut a = FakeNode::handshake(connect_tcp(d.tcp_port).await, "relay-a").await;
    let mut b = FakeNode::handshake(connect_tcp(d.tcp_port).await, "producer-b").await;
    for (i, n) in [&mut a, &mut b].into_iter().enumerate() {
        let base = 1000.0 * (i + 1) as f64;
        n.framed.send(node_metrics(base, 300e6)).await.unwrap();
        send(
            n,
            (1..=20).map(|s| object(&n.name.clone(), s, 20)).collect(),
            1,
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    a.framed.send(node_metrics(1003.0, 310e6)).await.unwrap();

    let result = async {
        br.c.goto(&format!("http://127.0.0.1:{port}/ui/"))
            .await
            .unwrap();
        // Every node has its card, with live values from the pushed summary.
        br.until(
            Duration::from_secs(30),
            "both cards with their tip",
            "const c = [...document.querySelectorAll('#cards .card')];
             const t = (n) => (c.find(e => e.dataset.name === n) || {}).innerText || '';
             return t('relay-a').includes('slot 1003') && t('producer-b').includes('slot 2000')
               && t('relay-a').includes('Info 20');",
        )
        .await;
        a.framed.send(node_metrics(1004.0, 320e6)).await.unwrap();
        br.until(
            Duration::from_secs(20),
            "relay-a's slot updated without a reload",
            "const e = document.querySelector('#cards .card[data-name=\"relay-a\"]');
             return !!e && e.innerText.includes('slot 1004') && e.dataset.stale === 'false';",
        )
        .await;

        // The node page: a chart has points from the metric history.
        br.click(Locator::Css("#cards .card[data-name=\"relay-a\"] h2 a"))
            .await;
        br.until(
            Duration::from_secs(30),
            "the memory chart with points",
            "const f = [...document.querySelectorAll('#charts figure')]
               .find(f => f.innerText.startsWith('Memory'));
             return !!f && +f.dataset.points > 0 && /current value: relay-a/.test(f.getAttribute('aria-label'))
               && f.querySelectorAll('svg path.line').length > 0;",
        )
        .await;
        // The log view is open before the next line is sent: wait for its stream.
        br.until(
            Duration::from_secs(20),
            "the log stream open",
            "return document.getElementById('log').dataset.open === 'true';",
        )
        .await;
        let sent = Instant::now();
        send(
            &mut a,
            vec![line(
                "relay-a",
                21,
                Severity::Warning,
                "ChainDB.Warn",
                "first-warning",
            )],
            21,
        )
        .await;
        br.until(
            Duration::from_secs(2),
            "the trace sent afterwards, within 2 s",
            "return [...document.querySelectorAll('#log .line')].some(l => l.innerText.includes('first-warning'));",
        )
        .await;
        let shown = sent.elapsed();
        assert!(shown < Duration::from_secs(2), "shown after {shown:?}");
        let file = br
            .js("return document.getElementById('log-file').textContent")
            .await;
        assert!(
            file.as_str()
                .unwrap()
                .starts_with(&d.logs().join("relay-a").display().to_string()),
            "{file}"
        );

        // The severity filter: Error and up. The Warning already shown is hidden; a new Info
        // line does not appear, a new Error line does.
        br.c.find(Locator::Id("log-sev"))
            .await
            .unwrap()
            .select_by_value("Error")
            .await
            .unwrap();
        br.until(
            Duration::from_secs(20),
            "the log stream reopened with the filter",
            "return document.getElementById('log').dataset.open === 'true';",
        )
        .await;
        send(
            &mut a,
            vec![
                line("relay-a", 22, Severity::Info, "ChainDB.Info", "quiet-info"),
                line("relay-a", 23, Severity::Error, "ChainDB.Err", "loud-error"),
            ],
            22,
        )
        .await;
        br.until(
            Duration::from_secs(20),
            "the Error line under the Error filter",
            "return [...document.querySelectorAll('#log .line')].some(l => !l.hidden && l.innerText.includes('loud-error'));",
        )
        .await;
        let visible = br
            .js("return [...document.querySelectorAll('#log .line')].filter(l => !l.hidden).map(l => l.innerText).join('\\n')")
            .await;
        let visible = visible.as_str().unwrap();
        assert!(
            !visible.contains("quiet-info") && !visible.contains("first-warning"),
            "the filter let through: {visible}"
        );

        // Back to the overview; a node that disconnects is marked stale there.
        br.click(Locator::Id("nav-overview")).await;
        drop(b);
        br.until(
            Duration::from_secs(30),
            "producer-b marked stale and disconnected",
            "const e = document.querySelector('#cards .card[data-name=\"producer-b\"]');
             return !!e && e.dataset.stale === 'true' && e.dataset.connected === 'false'
               && e.querySelector('.badge').textContent === 'disconnected';",
        )
        .await;
        let a_card = br
            .js("return document.querySelector('#cards .card[data-name=\"relay-a\"]').dataset.stale")
            .await;
        assert_eq!(a_card, "false");
    };
    // The browser is closed whatever happened (a failed assertion is re-raised after).
    let outcome = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(result)).await;
    br.close().await;
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}

/// Nodes streaming metrics and traces for a picture: `n` nodes, a few history samples each.
async fn fleet_for_pictures(tcp: u16, names: &[&str]) -> Vec<FakeNode<tokio::net::TcpStream>> {
    let mut nodes = Vec::new();
    for name in names {
        nodes.push(FakeNode::handshake(connect_tcp(tcp).await, name).await);
    }
    for round in 0..40u64 {
        for (i, n) in nodes.iter_mut().enumerate() {
            let slot = 140_000_000.0 + (round * 20 + i as u64 * 3) as f64;
            let mem = 3.2e9 + (round as f64 * 0.7 + i as f64).sin() * 2e8;
            n.framed.send(node_metrics(slot, mem)).await.unwrap();
            let first = round * 10 + 1;
            let name = n.name.clone();
            let objs = (first..first + 10)
                .map(|s| {
                    let sev = [
                        Severity::Info,
                        Severity::Info,
                        Severity::Notice,
                        Severity::Warning,
                    ][(s % 4) as usize];
                    line(
                        &name,
                        s,
                        sev,
                        "ChainDB.AddBlockEvent.AddedToCurrentChain",
                        "block",
                    )
                })
                .collect();
            send(n, objs, first).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    nodes
}

/// Screenshots of the overview and a node page, light and dark, into docs/ (README shows them).
/// Run by hand: `cargo test --test it ui_screenshots -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn ui_screenshots() {
    let (d, port) = start_with_ui("");
    let _nodes = fleet_for_pictures(d.tcp_port, &["relay-1", "relay-2", "producer-1"]).await;
    let br = Browser::open(1280, 1000).await;
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    br.c.goto(&format!("http://127.0.0.1:{port}/ui/"))
        .await
        .unwrap();
    br.until(
        Duration::from_secs(10),
        "three cards",
        "return document.querySelectorAll('#cards .card').length === 3;",
    )
    .await;
    for theme in ["light", "dark"] {
        br.js(&format!("if (document.documentElement.dataset.theme !== '{theme}') document.getElementById('theme').click(); return true")).await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        std::fs::write(
            docs.join(format!("ui-overview-{theme}.png")),
            br.c.screenshot().await.unwrap(),
        )
        .unwrap();
    }
    br.c.goto(&format!("http://127.0.0.1:{port}/ui/#/node/relay-1"))
        .await
        .unwrap();
    br.until(
        Duration::from_secs(10),
        "charts with points",
        "return [...document.querySelectorAll('#charts figure')].some(f => +f.dataset.points > 3);",
    )
    .await;
    br.c.find(Locator::Id("range"))
        .await
        .unwrap()
        .select_by_value("300")
        .await
        .unwrap();
    for _ in 0..3 {
        br.c.find(Locator::Id("zoom-in"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for theme in ["light", "dark"] {
        br.js(&format!("if (document.documentElement.dataset.theme !== '{theme}') document.getElementById('theme').click(); return true")).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        std::fs::write(
            docs.join(format!("ui-node-{theme}.png")),
            br.c.screenshot().await.unwrap(),
        )
        .unwrap();
    }
    br.close().await;
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // utime and stime: fields 14 and 15 of stat, 12 and 13 after the name.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// 100 nodes connected: time to first render of the overview in Chromium, and tracerd's CPU
/// per connected browser (each browser holds one fleet stream; measured with 10 stream
/// clients, as the server sees them). Run by hand:
/// `cargo test --release --test it ui_bench_100_nodes -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn ui_bench_100_nodes() {
    let (d, port) = start_with_ui("");
    let pid = d.child.as_ref().unwrap().id();
    let mut nodes = Vec::new();
    for i in 0..100 {
        let mut n =
            FakeNode::handshake(connect_tcp(d.tcp_port).await, &format!("node-{i:03}")).await;
        n.framed
            .send(node_metrics(1000.0 + i as f64, 3e9))
            .await
            .unwrap();
        let name = n.name.clone();
        send(&mut n, (1..=10).map(|s| object(&name, s, 50)).collect(), 1).await;
        nodes.push(n);
    }
    let mut renders = Vec::new();
    for _ in 0..5 {
        let br = Browser::open(1280, 1000).await;
        let started = Instant::now();
        br.c.goto(&format!("http://127.0.0.1:{port}/ui/"))
            .await
            .unwrap();
        br.until(
            Duration::from_secs(20),
            "100 cards",
            "return document.querySelectorAll('#cards .card').length === 100;",
        )
        .await;
        renders.push(started.elapsed());
        br.close().await;
    }
    renders.sort();
    println!("time to first render with 100 nodes (goto → 100 cards drawn), 5 fresh browsers: min {:?} median {:?} max {:?}", renders[0], renders[2], renders[4]);
    let window = Duration::from_secs(20);
    let idle = {
        let t0 = cpu_ticks(pid);
        tokio::time::sleep(window).await;
        cpu_ticks(pid) - t0
    };
    let clients = 10;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut threads = Vec::new();
    for _ in 0..clients {
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut bytes = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut s = crate::ui::Stream::open(port, "/ui/api/fleet/stream");
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    s.until(Duration::from_secs(30), |t| {
                        t.contains("event: end") || t.len() > 50_000_000
                    });
                }));
                bytes += s.text.len();
            }
            bytes
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = cpu_ticks(pid);
    tokio::time::sleep(window).await;
    let busy = cpu_ticks(pid) - t0;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let tick = 0.01; // CLK_TCK 100
    let per_client =
        (busy.saturating_sub(idle)) as f64 * tick / window.as_secs_f64() / clients as f64;
    println!(
        "tracerd CPU over {window:?}: idle (100 nodes, no browser) {:.2}% of a core; with {clients} fleet streams {:.2}%; per browser {:.3}% of a core",
        idle as f64 * tick / window.as_secs_f64() * 100.0,
        busy as f64 * tick / window.as_secs_f64() * 100.0,
        per_client * 100.0
    );
    drop(nodes);
    for t in threads {
        let _ = t.join();
    }
}
