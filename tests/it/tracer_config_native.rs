//! Issue 19, points 2 and 3: a native node's tracing configuration, reported by the forwarder
//! crate, pushed by `PUT /api/nodes/<slug>/tracer-config`, applied from the next batch on,
//! and honoured by the forwarder's `tracing` layer — over the real binary, real sockets and
//! the node's real log files. Two bystander nodes stream all along and lose nothing.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::{json, Value};
use tracerd::config::Address;
use tracerd::model::{DetailLevel, Severity, TraceObject};
use tracerd::native::{Hello, NodeMessage, Software, TracerMessage, TracingConfigReport};
use tracerd_forwarder::tracing_config::{SeverityFilter, TracingConfig, CAPABILITY};
use tracerd_forwarder::{ConfigGuard, Forwarder, ForwarderConfig, Stats};

use crate::http::http_get;
use crate::support::*;

fn daemon(prom: u16) -> Daemon {
    Daemon::start(&format!(
        "hasPrometheus: {{epHost: 127.0.0.1, epPort: {prom}}}\n"
    ))
}

fn config(d: &Daemon, name: &str) -> ForwarderConfig {
    let mut c = ForwarderConfig::new(Address::Unix(d.socket()), name);
    c.network_magic = MAGIC;
    c.backoff_initial = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c
}

/// `PUT path` with `body` of `content_type`: (status, body).
fn put(port: u16, path: &str, content_type: &str, body: &str) -> (u16, String) {
    let mut s = crate::http::connect_http(port);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

async fn put_json(port: u16, slug: &str, body: String) -> (u16, String) {
    let path = format!("/api/nodes/{slug}/tracer-config");
    tokio::task::spawn_blocking(move || put(port, &path, "application/json", &body))
        .await
        .unwrap()
}

async fn get_doc(port: u16, slug: &str) -> (u16, String) {
    let path = format!("/api/nodes/{slug}/tracer-config");
    let (code, _, body) = tokio::task::spawn_blocking(move || {
        http_get(port, &path, &[("Accept", "application/json")])
    })
    .await
    .unwrap();
    (code, body)
}

/// Waits (bounded) until GET serves a configuration for `slug`, and returns the document.
async fn wait_doc(port: u16, slug: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, body) = get_doc(port, slug).await;
        if code == 200 {
            return serde_json::from_str(&body).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no configuration for {slug}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn lines(dir: &Path) -> Vec<Value> {
    if dir.exists() {
        read_node_lines(dir)
    } else {
        Vec::new()
    }
}

/// A node that streams numbered objects until `stop`, then flushes and returns its stats.
fn bystander(d: &Daemon, name: &str, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Stats> {
    let fwd = Forwarder::start(config(d, name)).unwrap();
    let name = name.to_string();
    tokio::spawn(async move {
        let mut seq = 0;
        // Bounded: at most 10 s of streaming.
        while !stop.load(Ordering::Relaxed) && seq < 20_000 {
            for _ in 0..20 {
                seq += 1;
                fwd.trace(object(&name, seq, 50)).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            fwd.flush(Duration::from_secs(30)).await,
            "{:?}",
            fwd.stats()
        );
        fwd.close(Duration::from_secs(5)).await
    })
}

async fn check_bystander(d: &Daemon, name: &str, task: tokio::task::JoinHandle<Stats>) {
    let stats = task.await.unwrap();
    assert_eq!(stats.dropped + stats.filtered, 0, "{name}: {stats:?}");
    let seqs = seqs(&d.logs().join(name));
    assert_eq!(seqs, (1..=stats.submitted).collect::<Vec<_>>(), "{name}");
}

fn app_object(ns: &str, severity: Severity, phase: u64, i: u64) -> TraceObject {
    TraceObject {
        namespace: ns.into(),
        severity,
        detail: DetailLevel::Normal,
        timestamp_ns: 1_784_714_812_000_000_000 + i as i64,
        hostname: "host".into(),
        thread_id: "1".into(),
        machine: format!("{{\"phase\":{phase},\"i\":{i}}}").into(),
        human: None,
        form: Default::default(),
    }
}

/// `(ns, sev)` of every line of phase `phase` under `dir`.
fn phase_lines(dir: &Path, phase: u64) -> Vec<(String, String)> {
    lines(dir)
        .iter()
        .filter(|l| l["data"]["phase"] == phase)
        .map(|l| {
            (
                l["ns"].as_str().unwrap().to_string(),
                l["sev"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn count(lines: &[(String, String)], ns: &str, sev: &str) -> usize {
    lines.iter().filter(|(n, s)| n == ns && s == sev).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_narrows_a_native_nodes_namespace_from_the_next_batch_on() {
    let prom = free_port();
    let d = daemon(prom);
    let stop = Arc::new(AtomicBool::new(false));
    let b1 = bystander(&d, "bystander-1", stop.clone());
    let b2 = bystander(&d, "bystander-2", stop.clone());

    let mut c = config(&d, "app");
    c.trace_config_at_start = true;
    // The program's own veto: its audit trail cannot be silenced from outside.
    c.config_guard = Some(ConfigGuard(Arc::new(|c: &TracingConfig| {
        match c.options.get("App.Audit").and_then(|o| o.severity) {
            Some(SeverityFilter::Silence) => {
                Err("App.Audit is this node's audit trail and cannot be silenced".into())
            }
            _ => Ok(()),
        }
    })));
    let fwd = Forwarder::start(c).unwrap();

    // The forwarder reports its configuration on connect: served by GET.
    let doc = wait_doc(prom, "app").await;
    assert_eq!(doc["protocol"], "native");
    assert_eq!(
        doc["config"],
        json!({"Options": {"": {"detail": "DNormal", "severity": "Debug"}}})
    );

    let phase = |n: u64| {
        (0..60u64).map(move |i| match i % 3 {
            0 => app_object("App.Db", Severity::Info, n, i),
            1 => app_object("App.Db", Severity::Warning, n, i),
            _ => app_object("App.Net", Severity::Info, n, i),
        })
    };
    assert_eq!(fwd.trace_many(phase(1)), 60);
    assert!(fwd.flush(Duration::from_secs(20)).await);
    let dir = d.logs().join("app");
    let one = phase_lines(&dir, 1);
    assert_eq!(count(&one, "App.Db", "Info"), 20);

    // The operator narrows App.Db to Warning and above: GET's document, edited.
    let mut edited = doc.clone();
    edited["config"]["Options"]["App.Db"] = json!({"severity": "Warning"});
    let (code, body) = put_json(prom, "app", edited.to_string()).await;
    assert_eq!(code, 200, "{body}");
    let answered: Value = serde_json::from_str(&body).unwrap();
    let expected = json!({"Options": {
        "": {"detail": "DNormal", "severity": "Debug"},
        "App.Db": {"severity": "Warning"},
    }});
    assert_eq!(answered["config"], expected);
    // The node applied it before the PUT returned, and GET serves the new configuration.
    let applied = fwd.tracing_config();
    assert_eq!(
        applied.options["App.Db"].severity,
        Some(SeverityFilter::AtLeast(Severity::Warning))
    );
    let (code, body) = get_doc(prom, "app").await;
    assert_eq!(code, 200);
    let served: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(served["config"], expected);
    assert!(
        served["reportedAt"].as_str() > doc["reportedAt"].as_str(),
        "{served} {doc}"
    );

    // From the next batch on, App.Db below Warning is not forwarded; the rest is.
    assert_eq!(fwd.trace_many(phase(2)), 40);
    assert!(fwd.flush(Duration::from_secs(20)).await);
    let two = phase_lines(&dir, 2);
    assert_eq!(count(&two, "App.Db", "Info"), 0, "{two:?}");
    assert_eq!(count(&two, "App.Db", "Warning"), 20);
    assert_eq!(count(&two, "App.Net", "Info"), 20);
    assert_eq!(fwd.stats().filtered, 20);
    // Phase 1 was before the change: all of it is there.
    let one = phase_lines(&dir, 1);
    assert_eq!(one.len(), 60);

    // The loop is visible in the node's own log directory: the configuration at start and
    // the one pushed, as Reflection.TracerConfigInfo traces.
    let confs: Vec<Value> = lines(&dir)
        .into_iter()
        .filter(|l| l["ns"] == "Reflection.TracerConfigInfo")
        .map(|l| l["data"]["conf"].clone())
        .collect();
    assert_eq!(confs.len(), 2, "{confs:?}");
    assert_eq!(confs[1], expected);

    // Malformed or unknown-shape configurations: 400 naming what and where; nothing sent.
    let changes = fwd.stats().config_changes;
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = served.clone();
        f(&mut v);
        v.to_string()
    };
    let cases: Vec<(String, Vec<&str>)> = vec![
        ("{\"config\": {\"Options\": ".into(), vec!["not JSON"]),
        (
            with(&|v| v["config"]["Options"]["App.Db"]["severity"] = json!("Warn")),
            vec![
                "config.Options[\"App.Db\"].severity",
                "\"Warn\" is not a severity",
            ],
        ),
        (
            with(&|v| v["config"]["Options"]["App..Db"] = json!({"severity": "Info"})),
            vec!["config.Options[\"App..Db\"]", "empty segment"],
        ),
        (
            with(&|v| v["config"]["Options"][""]["colour"] = json!("red")),
            vec!["config.Options[\"\"].colour", "unknown key"],
        ),
        (
            with(&|v| {
                v["config"]["Options"]["App.Net"] = json!({"maxFrequency": -1});
                v["config"]["Forwarder"] = json!({"queueSize": 1});
            }),
            // Every problem at once.
            vec![
                "config.Options[\"App.Net\"].maxFrequency",
                "above 0",
                "config.Forwarder: unknown key",
            ],
        ),
        (
            with(&|v| v["config"]["Options"] = json!(["App.Db"])),
            vec!["config.Options", "must be an object"],
        ),
        ("{\"node\": \"app\"}".into(), vec!["document GET returns"]),
    ];
    for (body, needles) in cases {
        let (code, text) = put_json(prom, "app", body.clone()).await;
        assert_eq!(code, 400, "{body}: {text}");
        assert!(text.contains("nothing was sent"), "{text}");
        for n in needles {
            assert!(text.contains(n), "{body}: {text:?} lacks {n:?}");
        }
    }
    assert_eq!(
        fwd.stats().config_changes,
        changes,
        "a refused PUT reached the node"
    );
    let (_, body) = get_doc(prom, "app").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["config"],
        expected
    );

    // The node's own refusal comes back with its reason; its configuration stays.
    let silenced = with(&|v| v["config"]["Options"]["App.Audit"] = json!({"severity": "Silence"}));
    let (code, text) = put_json(prom, "app", silenced).await;
    assert_eq!(code, 422, "{text}");
    assert!(
        text.contains("audit trail and cannot be silenced"),
        "{text}"
    );
    assert_eq!(fwd.stats().configs_refused, 1);
    assert_eq!(fwd.tracing_config(), applied);

    // YAML in, YAML out: the root raised to Notice.
    let yaml = "config:\n  Options:\n    '': {severity: Notice}\n    App.Db: {severity: Warning}\n";
    let (code, text) = tokio::task::spawn_blocking(move || {
        let mut s = crate::http::connect_http(prom);
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(s, "PUT /api/nodes/app/tracer-config HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/yaml\r\nAccept: application/yaml\r\nContent-Length: {}\r\n\r\n{yaml}", yaml.len()).unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        (head.split(' ').nth(1).unwrap().to_string(), body.to_string())
    })
    .await
    .unwrap();
    assert_eq!(code, "200", "{text}");
    let doc: Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(doc["config"]["Options"][""]["severity"], "Notice");
    assert!(!fwd.enabled("App.Net", Severity::Info));

    stop.store(true, Ordering::Relaxed);
    fwd.close(Duration::from_secs(5)).await;
    check_bystander(&d, "bystander-1", b1).await;
    check_bystander(&d, "bystander-2", b2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_forwarders_and_nodes_leaving_during_a_put_get_clear_errors() {
    let prom = free_port();
    let d = daemon(prom);
    let stop = Arc::new(AtomicBool::new(false));
    let b1 = bystander(&d, "bystander-1", stop.clone());
    let b2 = bystander(&d, "bystander-2", stop.clone());
    let body = json!({"config": {"Options": {"": {"severity": "Warning"}}}}).to_string();

    // An older forwarder: its Hello has no capability. Its report-less session has no
    // configuration to GET, and a PUT says why it cannot be sent.
    let mut old = FakeNode::handshake(connect_unix(&d.socket()).await, "old").await;
    old.send_batch(1, 10, 10).await;
    old.wait_ack(10).await;
    let (code, text) = put_json(prom, "old", body.clone()).await;
    assert_eq!(code, 501, "{text}");
    assert!(
        text.contains("tracing-config.v1") && text.contains("older"),
        "{text}"
    );
    // A forwarder started with remote_config off is the same to tracerd.
    let mut c = config(&d, "closed");
    c.remote_config = false;
    let closed = Forwarder::start(c).unwrap();
    closed.trace(object("closed", 1, 10)).unwrap();
    assert!(closed.flush(Duration::from_secs(20)).await);
    let (code, text) = put_json(prom, "closed", body.clone()).await;
    assert_eq!(code, 501, "{text}");

    // A node that announces the capability, reports, and disconnects once the push arrives.
    let mut leaver = connect_unix(&d.socket()).await;
    leaver
        .send(NodeMessage::Hello(Box::new(Hello {
            versions: vec![1],
            network_magic: MAGIC,
            node_name: "leaver".into(),
            software: Software::default(),
            capabilities: vec![CAPABILITY.into()],
            token: String::new(),
            tracers: Vec::new(),
        })))
        .await
        .unwrap();
    assert!(matches!(
        recv(&mut leaver).await,
        Some(TracerMessage::Accept { .. })
    ));
    leaver
        .send(NodeMessage::TracingConfig(TracingConfigReport {
            request_id: 0,
            effective: TracingConfig::everything(),
            refused: None,
            timestamp_ns: 1,
        }))
        .await
        .unwrap();
    wait_doc(prom, "leaver").await;
    let pushed = tokio::spawn(put_json(prom, "leaver", body.clone()));
    loop {
        match recv(&mut leaver).await {
            Some(TracerMessage::SetTracingConfig { request_id, config }) => {
                assert!(request_id > 0);
                let root = &config.options[""];
                assert_eq!(
                    root.severity,
                    Some(SeverityFilter::AtLeast(Severity::Warning))
                );
                break;
            }
            Some(_) => {}
            None => panic!("tracerd closed the leaver's connection"),
        }
    }
    drop(leaver);
    let (code, text) = pushed.await.unwrap();
    assert_eq!(code, 502, "{text}");
    assert!(text.contains("disconnected before it answered"), "{text}");

    // The old node lost nothing either.
    assert_eq!(seqs(&d.logs().join("old")), (1..=10).collect::<Vec<_>>());
    stop.store(true, Ordering::Relaxed);
    closed.close(Duration::from_secs(5)).await;
    check_bystander(&d, "bystander-1", b1).await;
    check_bystander(&d, "bystander-2", b2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracing_events_land_in_files_and_obey_a_pushed_filter() {
    use tracing_subscriber::layer::SubscriberExt;

    let prom = free_port();
    let d = daemon(prom);
    let fwd = Forwarder::start(config(&d, "rust-app")).unwrap();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(fwd.layer()));
    let emit = |phase: u64| {
        tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!(target: "shop::orders", "checkout", order = 7u64);
            let _in = span.enter();
            tracing::info!(target: "shop::orders", phase, item = "book", qty = 2u64, "added {}", "book");
            tracing::debug!(target: "shop::orders", phase, "cart has {} items", 1);
            tracing::warn!(target: "shop::orders", phase, left = 0i64, "out of stock");
            drop(_in);
            tracing::info!(target: "shop::payments", phase, amount = 9.5, ok = true, "paid");
        })
    };
    wait_doc(prom, "rust-app").await;
    emit(1);
    assert!(fwd.flush(Duration::from_secs(20)).await);
    let dir = d.logs().join("rust-app");
    let one: Vec<Value> = lines(&dir)
        .into_iter()
        .filter(|l| l["data"]["phase"] == 1)
        .collect();
    let by = |ls: &[Value], ns: &str, sev: &str| -> Vec<Value> {
        ls.iter()
            .filter(|l| l["ns"] == ns && l["sev"] == sev)
            .cloned()
            .collect()
    };
    let added = by(&one, "shop.orders.checkout", "Info");
    assert_eq!(added.len(), 1, "{one:?}");
    assert_eq!(added[0]["data"]["message"], "added book");
    assert_eq!(
        (
            added[0]["data"]["item"].clone(),
            added[0]["data"]["qty"].clone()
        ),
        (json!("book"), json!(2))
    );
    assert_eq!(by(&one, "shop.orders.checkout", "Debug").len(), 1);
    assert_eq!(by(&one, "shop.orders.checkout", "Warning").len(), 1);
    let paid = by(&one, "shop.payments", "Info");
    assert_eq!(
        (
            paid[0]["data"]["amount"].clone(),
            paid[0]["data"]["ok"].clone()
        ),
        (json!(9.5), json!(true))
    );

    // Push: shop.orders at Warning and above, rendered in detail (with its spans).
    let body = json!({"config": {"Options": {
        "": {"severity": "Debug"},
        "shop.orders": {"severity": "Warning", "detail": "DDetailed"},
    }}});
    let (code, text) = put_json(prom, "rust-app", body.to_string()).await;
    assert_eq!(code, 200, "{text}");
    emit(2);
    assert!(fwd.flush(Duration::from_secs(20)).await);
    let two: Vec<Value> = lines(&dir)
        .into_iter()
        .filter(|l| l["data"]["phase"] == 2)
        .collect();
    assert_eq!(by(&two, "shop.orders.checkout", "Info").len(), 0, "{two:?}");
    assert_eq!(
        by(&two, "shop.orders.checkout", "Debug").len(),
        0,
        "{two:?}"
    );
    let warned = by(&two, "shop.orders.checkout", "Warning");
    assert_eq!(warned.len(), 1, "{two:?}");
    assert_eq!(warned[0]["data"]["left"], 0);
    assert_eq!(
        warned[0]["data"]["spans"],
        json!([{"name": "checkout", "fields": {"order": 7}}])
    );
    // Outside shop.orders, nothing changed.
    assert_eq!(by(&two, "shop.payments", "Info").len(), 1);
    assert_eq!(fwd.stats().filtered, 2);
    fwd.close(Duration::from_secs(5)).await;
}
