//! Config tests: defaults, cardano-tracer files, every problem listed with its line, and the
//! print-config round trip.

use std::path::{Path, PathBuf};

use super::*;

const CARDANO_YAML: &str = r#"networkMagic: 764824073
network:
  tag: AcceptAt
  contents: "/run/cardano-tracer/tracer.socket"
loRequestNum: 100
ekgRequestFreq: 1
ekgRequestFull: false
hasEKG:        { epHost: "127.0.0.1", epPort: 12788 }
hasPrometheus: { epHost: "127.0.0.1", epPort: 12808, epForceSSL: false }
logging:
  - { logRoot: "/var/lib/cardano-tracer/json", logMode: FileMode, logFormat: ForMachine }
  - { logRoot: "/var/lib/cardano-tracer/text", logMode: FileMode, logFormat: ForHuman }
rotation: { rpFrequencySecs: 60, rpLogLimitBytes: 10000000, rpMaxAgeHours: 24, rpKeepFilesNum: 14 }
verbosity: ErrorsOnly
metricsNoSuffix: false
prometheusLabels: { cluster: "mainnet-relays" }
resourceFreq: 60000
"#;

const CARDANO_JSON: &str = r#"{
  "networkMagic": 764824073,
  "network": { "tag": "ConnectTo", "contents": ["/tmp/node-1.sock", "10.0.0.5:34567"] },
  "loRequestNum": 100,
  "ekgRequestFreq": 2,
  "hasEKG": { "epHost": "127.0.0.1", "epPort": 3100 },
  "hasPrometheus": { "epHost": "127.0.0.1", "epPort": 3000 },
  "logging": [
    { "logRoot": "/tmp/cardano-tracer-h-logs", "logMode": "FileMode", "logFormat": "ForHuman" },
    { "logRoot": "/tmp/cardano-tracer-m-logs", "logMode": "FileMode", "logFormat": "ForMachine" }
  ],
  "rotation": { "rpFrequencySecs": 15, "rpKeepFilesNum": 1, "rpLogLimitBytes": 50000, "rpMaxAgeHours": 1 },
  "verbosity": "ErrorsOnly",
  "metricsHelp": { "Mem.resident": "Kernel-reported RSS (resident set size)" }
}"#;

#[test]
fn empty_file_is_the_embedded_default() {
    // But for the live view (issue 14): on in the embedded default, off in a file that does
    // not ask for it, so a file of upstream keys keeps upstream's behaviour (README).
    let empty = parse_fragment("{}").unwrap().config;
    assert_eq!(empty.tracerd.ui, None);
    let d = Config::default();
    assert_eq!(d.tracerd.ui, Some(UiSettings { enabled: true }));
    let mut with_ui = empty.clone();
    with_ui.tracerd.ui = d.tracerd.ui.clone();
    assert_eq!(with_ui, d);
    assert_eq!(d.network_magic, 764_824_073);
    assert_eq!(
        d.tracerd.native.accept_at[0],
        Address::Unix("./tracerd.sock".into())
    );
    assert_eq!(d.tracerd.native.accept_at[1].to_string(), "127.0.0.1:3179");
    assert_eq!(
        d.network,
        Some(Network::AcceptAt(Address::Unix(
            "./cardano-tracer.sock".into()
        )))
    );
    assert_eq!(
        parse_fragment("network: null").unwrap().config.network,
        None
    );
    assert_eq!(d.logging[0].log_root, PathBuf::from("./logs"));
    assert_eq!(d.tracerd.limits.max_frame_bytes, 1 << 20);
}

#[test]
fn cardano_tracer_examples_are_accepted() {
    let y = parse_fragment(CARDANO_YAML).unwrap();
    assert_eq!(y.config.logging.len(), 2);
    let r = y.config.rotation.as_ref().unwrap();
    assert_eq!(
        (r.rp_log_limit_bytes, r.max_age_secs(), r.rp_keep_files_num),
        (10_000_000, 86_400, 14)
    );
    assert_eq!(
        y.config.network,
        Some(Network::AcceptAt(Address::Unix(
            "/run/cardano-tracer/tracer.socket".into()
        )))
    );
    let j = parse_fragment(CARDANO_JSON).unwrap();
    assert_eq!(
        j.config.network,
        Some(Network::ConnectTo(vec![
            Address::Unix("/tmp/node-1.sock".into()),
            Address::Tcp {
                host: "10.0.0.5".into(),
                port: 34567
            }
        ]))
    );
    assert_eq!(j.config.rotation.unwrap().max_age_secs(), 3600);
}

#[test]
fn unknown_keys_are_errors_with_lines_and_obsolete_keys_warnings() {
    let text = "networkMagic: 1\nhasRTView: { epHost: x, epPort: 1 }\nrotaton: {}\ntracerd:\n  limits:\n    maxFrameByte: 10\n";
    let problems = parse_fragment(text).unwrap_err();
    let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(
        shown.contains(&"line 3: rotaton: unknown key; did you mean `rotation`?".to_string()),
        "{shown:?}"
    );
    assert!(
        shown.contains(
            &"line 6: tracerd.limits.maxFrameByte: unknown key; did you mean `maxFrameBytes`?"
                .to_string()
        ),
        "{shown:?}"
    );
    assert_eq!(problems.len(), 2, "{shown:?}");
    let ok = parse_fragment("hasRTView: { epHost: x, epPort: 1 }\nmetricsComp: {}\n").unwrap();
    let warned: Vec<_> = ok.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(warned, vec!["hasRTView", "metricsComp"]);
    assert_eq!(ok.warnings[0].line, Some(1));
}

#[test]
fn every_validation_problem_is_listed() {
    let text = "logging: []\nrotation: { rpLogLimitBytes: 0, rpKeepFilesNum: 1, rpFrequencySecs: 0 }\ntracerd:\n  limits: { maxFrameBytes: 1, queueBatches: 0, maxConnections: 0, handshakeTimeoutSecs: -1 }\n  shutdownGraceSecs: 0\n";
    let problems = parse_fragment(text).unwrap_err();
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        vec![
            "logging",
            "rotation.rpLogLimitBytes",
            "rotation.rpFrequencySecs",
            "tracerd.limits.maxFrameBytes",
            "tracerd.limits.queueBatches",
            "tracerd.limits.maxConnections",
            "tracerd.limits.handshakeTimeoutSecs",
            "tracerd.shutdownGraceSecs",
        ]
    );
    assert!(problems.iter().any(|p| p.line.is_some()), "{problems:?}");
}

#[test]
fn bad_values_name_the_line() {
    let problems = parse_fragment(
        "networkMagic: 1\nrotation:\n  rpLogLimitBytes: lots\n  rpKeepFilesNum: 1\n",
    )
    .unwrap_err();
    assert_eq!(problems[0].line, Some(3), "{problems:?}");
    let problems =
        parse_fragment("logging:\n  - { logRoot: x, logMode: FileMode, logFormat: ForRobots }\n")
            .unwrap_err();
    assert!(problems[0].message.contains("ForRobots"), "{problems:?}");
}

#[test]
fn addresses_follow_cardano_tracer_syntax() {
    assert_eq!(
        Address::parse("127.0.0.1:3179").unwrap(),
        Address::Tcp {
            host: "127.0.0.1".into(),
            port: 3179
        }
    );
    assert_eq!(
        Address::parse("[::1]:3179").unwrap(),
        Address::Tcp {
            host: "::1".into(),
            port: 3179
        }
    );
    assert_eq!(
        Address::parse("[::1]:3179").unwrap().to_string(),
        "[::1]:3179"
    );
    assert_eq!(
        Address::parse("/run/x.sock").unwrap(),
        Address::Unix("/run/x.sock".into())
    );
    assert_eq!(
        Address::parse("./a:b").unwrap(),
        Address::Unix("./a:b".into())
    );
    assert!(Address::parse("host:99999").is_err());
    assert!(Address::parse("").is_err());
}

#[test]
fn printed_config_is_a_valid_config_with_the_same_meaning() {
    for text in ["{}", "network: null", CARDANO_YAML, CARDANO_JSON] {
        let config = parse_fragment(text).unwrap().config;
        let printed = to_yaml(&config);
        let again = parse_fragment(&printed).unwrap_or_else(|p| panic!("{printed}\n{p:?}"));
        assert_eq!(again.config, config, "{printed}");
    }
}

#[test]
fn shipped_config_files_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let full = load(&dir.join("tracerd.yaml")).unwrap();
    assert!(full.warnings.is_empty(), "{:?}", full.warnings);
    assert_eq!(
        full.config,
        Config::default(),
        "config/tracerd.yaml must show the defaults"
    );
    let compat = load(&dir.join("cardano-tracer-compat.yaml")).unwrap();
    let warned: Vec<_> = compat.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(warned, vec!["hasRTView"]);
}

#[test]
fn unsupported_cardano_tracer_features_are_explained() {
    let text = "tlsCertificate: { certificateFile: c, certificateKeyFile: k }\nhasForwarding: [{ tag: AcceptAt, contents: /tmp/r.sock }, null, { queueSize: 1 }]\n";
    let loaded = parse_fragment(text).unwrap();
    let keys: Vec<_> = loaded.warnings.iter().map(|w| w.key.as_str()).collect();
    assert!(keys.contains(&"tlsCertificate"), "not explained: {keys:?}");
    assert!(
        !keys.contains(&"hasForwarding"),
        "re-forwarding is served: {keys:?}"
    );
    assert!(
        loaded.warnings.iter().all(|w| w.line.is_some()),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn a_bad_has_forwarding_is_refused_with_each_problem_and_its_line() {
    let text = "hasForwarding:\n  - { tag: ConnectTo, contents: [] }\n  - [[ChainDB], 3]\n  - { queueSize: 0 }\n";
    let problems = parse_fragment(text).unwrap_err();
    assert!(problems.iter().any(|p| p.line.is_some()), "{problems:?}");
    let err: String = problems.iter().map(|p| format!("{p}\n")).collect();
    assert!(
        err.contains("hasForwarding[0]: ConnectTo needs at least one"),
        "{err}"
    );
    assert!(
        err.contains("hasForwarding[1][1]: must be a list of namespace segments"),
        "{err}"
    );
    assert!(
        err.contains("hasForwarding[2].queueSize: must be an integer from 1"),
        "{err}"
    );
}

/// Every optional key given as `null` means its default (cardano-tracer reads aeson
/// `Maybe` fields so; the NixOS module and nix scripts emit them), except `network` and
/// `hasPrometheus`, where `null` is "off".
#[test]
fn null_is_the_default_for_every_optional_key() {
    let text = r#"networkMagic: 2
network: null
logging: [{ logRoot: /l, logMode: FileMode, logFormat: ForHuman }]
loRequestNum: null
ekgRequestFreq: null
ekgRequestFull: null
hasEKG: null
hasPrometheus: null
hasTimeseries: null
tlsCertificate: null
rotation: null
verbosity: null
metricsNoSuffix: null
metricsHelp: null
prometheusLabels: null
resourceFreq: null
hasForwarding: null
tracerd:
  native: { acceptAt: null }
  limits: { maxFrameBytes: null, queueBatches: null, handshakeTimeoutSecs: null, maxConnections: null, idleTimeoutSecs: null }
  durability: { fsync: null, fsyncIntervalMs: null, onWriteError: null }
  shutdownGraceSecs: null
  minLogSeverity: null
  unixSocket: { mode: null, group: null }
  journal: { socket: null }
"#;
    let c = parse(text).unwrap().config;
    let d = Config::default();
    assert_eq!((c.network.clone(), c.has_prometheus.clone()), (None, None));
    assert_eq!(
        Config {
            network_magic: d.network_magic,
            network: d.network.clone(),
            has_prometheus: d.has_prometheus.clone(),
            logging: d.logging.clone(),
            tracerd: TracerdSettings {
                ui: d.tracerd.ui.clone(),
                ..c.tracerd
            },
            ..c
        },
        d
    );
    let r = parse_fragment("rotation: { rpLogLimitBytes: 5, rpKeepFilesNum: 1, rpFrequencySecs: null, rpMaxAgeMinutes: null, rpMaxAgeHours: null }").unwrap();
    let r = r.config.rotation.unwrap();
    assert_eq!((r.rp_frequency_secs, r.max_age_secs()), (60, 86_400));
    // A required key given as null is still missing.
    let p = parse_fragment("logging: [{ logRoot: null, logMode: FileMode, logFormat: ForHuman }]")
        .unwrap_err();
    assert_eq!(
        p[0].to_string(),
        "line 1: logging[0].logRoot: `logRoot` is required",
        "{p:?}"
    );
}

#[test]
fn a_file_needs_network_magic_network_and_logging() {
    for text in ["", "{}", "hasEKG: null\n"] {
        let p = parse(text).unwrap_err();
        let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert!(
            keys == ["networkMagic", "network", "logging"] || keys == [""],
            "{text:?}: {p:?}"
        );
    }
    assert!(parse("networkMagic: 1\nnetwork: null\nlogging: [{logRoot: x, logMode: FileMode, logFormat: ForHuman}]").is_ok());
}

#[test]
fn type_errors_are_all_reported_in_words_with_lines() {
    let text = "networkMagic: 1\nnetwork: null\nekgRequestFreq: [1, 2]\nloRequestNum: lots\nlogging:\n  - logRoot: /a\n    logmode: FileMode\n    logFormat: ForHuman\nverbosity: Loud\nhasPrometheus: { epHost: h, epPort: 9 }\nhasEKG: { epHost: h, epPort: 9 }\n";
    let shown: Vec<String> = parse(text)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        shown,
        vec![
            "line 3: ekgRequestFreq: `ekgRequestFreq` must be a number of seconds from 0.001 to 3600, got a list",
            "line 4: loRequestNum: `loRequestNum` must be an integer from 1 to 65535 (trace objects), got the text \"lots\"",
            "line 7: logging[0].logmode: unknown key; did you mean `logMode`?",
            "line 9: verbosity: `verbosity` must be one of Minimum, ErrorsOnly, Maximum, got \"Loud\"",
            "line 11: hasEKG.epPort: port 9 is also hasPrometheus.epPort",
        ]
    );
}

#[test]
fn every_number_has_a_range() {
    for (text, key) in [
        ("tracerd: { limits: { handshakeTimeoutSecs: 1e300 } }", "tracerd.limits.handshakeTimeoutSecs"),
        ("tracerd: { limits: { idleTimeoutSecs: .nan } }", "tracerd.limits.idleTimeoutSecs"),
        ("tracerd: { shutdownGraceSecs: -1 }", "tracerd.shutdownGraceSecs"),
        ("rotation: { rpLogLimitBytes: 1, rpKeepFilesNum: 1, rpMaxAgeHours: 1e300 }", "rotation.rpMaxAgeHours"),
        ("rotation: { rpLogLimitBytes: 1, rpKeepFilesNum: 1, rpMaxAgeMinutes: 9223372036854775807 }", "rotation.rpMaxAgeMinutes"),
        ("rotation: { rpLogLimitBytes: 0, rpKeepFilesNum: 1 }", "rotation.rpLogLimitBytes"),
        ("networkMagic: 4294967296", "networkMagic"),
        ("resourceFreq: -5", "resourceFreq"),
    ] {
        let p = parse_fragment(text).unwrap_err();
        assert_eq!(p.len(), 1, "{text}: {p:?}");
        assert_eq!(p[0].key, key, "{text}: {p:?}");
        assert!(p[0].message.contains(" from "), "{text}: the range is named: {p:?}");
    }
    // Integral floats are integers, as aeson reads them.
    let c = parse_fragment("rotation: { rpLogLimitBytes: 1e7, rpKeepFilesNum: 1 }")
        .unwrap()
        .config;
    assert_eq!(c.rotation.unwrap().rp_log_limit_bytes, 10_000_000);
}

/// Every field of the schema, set away from its default, survives print-config and the shape
/// check: a field added to `schema.rs` but not to `shape.rs` fails here (and the struct
/// literals below, with no `..Default::default()`, make adding a field touch this test).
#[test]
fn every_schema_key_is_known_to_the_shape_check() {
    let endpoint = |port| Endpoint {
        ep_host: "127.0.0.1".into(),
        ep_port: port,
        ep_force_ssl: Some(false),
    };
    let config = Config {
        network_magic: 42,
        network: Some(Network::ConnectTo(vec![Address::Unix("/n.sock".into())])),
        lo_request_num: 7,
        ekg_request_freq: 2.5,
        ekg_request_full: true,
        has_ekg: Some(endpoint(1)),
        has_prometheus: Some(endpoint(2)),
        has_timeseries: Some(endpoint(3)),
        tls_certificate: Some(TlsCertificate {
            certificate_file: "c".into(),
            certificate_key_file: "k".into(),
            certificate_chain: vec!["i".into()],
        }),
        logging: vec![
            LoggingParams {
                log_root: "/l".into(),
                log_mode: LogMode::FileMode,
                log_format: LogFormat::ForHuman,
            },
            // `tracerd.clickhouse` ships machine-format files.
            LoggingParams {
                log_root: "/l".into(),
                log_mode: LogMode::FileMode,
                log_format: LogFormat::ForMachine,
            },
        ],
        rotation: Some(RotationParams {
            rp_frequency_secs: 5,
            rp_log_limit_bytes: 100,
            rp_max_age_minutes: Some(10),
            rp_max_age_hours: Some(1.5),
            rp_keep_files_num: 3,
        }),
        verbosity: Verbosity::Maximum,
        metrics_no_suffix: true,
        metrics_help: Some(MetricsHelp::Inline([("a".into(), "b".into())].into())),
        prometheus_labels: [("x".into(), "y".into())].into(),
        resource_freq: Some(1000),
        has_forwarding: Some(serde_json::json!([
            {"tag": "ConnectTo", "contents": ["/b.sock"]},
            [["ChainDB"]],
            {"queueSize": 10}
        ])),
        tracerd: TracerdSettings {
            native: NativeSettings {
                accept_at: vec![Address::Unix("/t.sock".into())],
                tls: Some(NativeTls {
                    certificate_file: "/etc/tracerd/native.pem".into(),
                    certificate_key_file: "/etc/tracerd/native.key".into(),
                    certificate_chain: vec![],
                    client_ca_file: Some("/etc/tracerd/nodes-ca.pem".into()),
                }),
                identities: vec![NodeIdentity {
                    names: vec!["relay-a".into()],
                    certificate: Some("relay-a.example".into()),
                    token_file: Some("/run/credentials/tracerd.service/relay-a".into()),
                }],
            },
            limits: Limits {
                max_frame_bytes: 4096,
                queue_batches: 3,
                queue_bytes: 1 << 20,
                total_queue_bytes: 1 << 24,
                metric_bytes: 1 << 20,
                max_objects_per_frame: 100,
                handshake_timeout_secs: 2.0,
                max_connections: 9,
                idle_timeout_secs: 30.0,
                per_source: Box::new(PerSourceLimits {
                    max_connections: 5,
                    handshakes_per_sec: 2.5,
                    handshake_burst: 7,
                    exempt: vec!["10.0.0.0/8".into()],
                }),
                http: HttpLimits {
                    max_connections: 11,
                    max_connections_per_client: 3,
                },
            },
            durability: Durability {
                fsync: FsyncPolicy::Interval,
                fsync_interval_ms: 20,
                on_write_error: WriteErrorPolicy::Drop,
            },
            shutdown_grace_secs: 3.0,
            min_log_severity: Some(MinSeverity::Warning),
            unix_socket: UnixSocketSettings {
                mode: Some("0660".into()),
                group: Some("0".into()),
            },
            journal: JournalSettings {
                socket: "/j.sock".into(),
            },
            open_metrics_names: true,
            departed_series_secs: 300,
            history: HistorySettings {
                retention_hours: 2.0,
                prune_every_minutes: 1.0,
                max_bytes: 1 << 24,
                max_series: 10,
                sample_interval_secs: 0.5,
            },
            ui: Some(UiSettings { enabled: false }),
            alerts: AlertsSettings {
                alertmanagers: vec!["http://127.0.0.1:9093".into()],
                evaluation_interval_secs: Some(5.0),
                resend_delay_secs: Some(0.0),
                queue_capacity: Some(100),
                ..AlertsSettings::default()
            },
            http_auth: HttpAuthSettings {
                scrape: Some(AuthGroup {
                    bearer_token_files: vec!["/run/credentials/tracerd.service/scrape".into()],
                    basic_auth_files: vec!["/etc/tracerd/htpasswd".into()],
                }),
                api: None,
            },
            cardano_allow_from: vec!["10.0.0.0/8".into()],
            cardano_trace_requests: 2,
            clickhouse: Some(crate::config::ClickhouseSettings {
                url: "http://127.0.0.1:8123".into(),
                database: "db".into(),
                table: "t".into(),
                user: Some("u".into()),
                password_file: Some("/pw".into()),
                tracer: Some("site-a".into()),
                batch: crate::config::ShipBatch {
                    max_rows: 10,
                    max_bytes: 4096,
                    poll_ms: 50,
                    timeout_secs: 2.0,
                },
            }),
            loki: Some(crate::config::LokiSettings {
                url: "https://loki.example:3100".into(),
                tenant: Some("fleet".into()),
                labels: [("tracer".into(), "site-a".into())].into(),
                headers: [("X-A".into(), "b".into())].into(),
                tls: Some(crate::config::ClientTls {
                    ca_file: "/ca.pem".into(),
                    cert_file: Some("/c.pem".into()),
                    key_file: Some("/c.key".into()),
                }),
                batch: crate::config::LokiBatch {
                    max_rows: 10,
                    max_bytes: 4096,
                    poll_ms: 50,
                    timeout_secs: 2.0,
                },
            }),
            ship_state_dir: Some("/ship".into()),
            remote_write: vec![crate::config::RemoteWriteSettings {
                url: "https://127.0.0.1:9090/api/v1/write".into(),
                tls: Some(crate::config::ClientTls {
                    ca_file: "/ca.pem".into(),
                    cert_file: None,
                    key_file: None,
                }),
                headers: [("X-A".into(), "b".into())].into(),
                bearer_token_file: Some("/tok".into()),
                basic_auth: Some(crate::config::BasicAuth {
                    username: "u".into(),
                    password_file: "/pw".into(),
                }),
                external_labels: [("tracer".into(), "site-a".into())].into(),
                interval_secs: 1.0,
                queue: crate::config::RemoteWriteQueue {
                    capacity: 10,
                    shards: 3,
                    max_samples_per_send: 5,
                    max_backoff_secs: 1.0,
                },
                timeout_secs: 2.0,
            }],
            forward: Vec::new(),
            capture: crate::config::CaptureSettings {
                budget_bytes: 1 << 20,
                at_start: vec![crate::config::CaptureAtStart {
                    node: "relay-a".into(),
                    seconds: 5,
                    max_bytes: 4096,
                }],
            },
        },
    };
    let printed = to_yaml(&config);
    let again = parse(&printed).unwrap_or_else(|p| panic!("{printed}\n{p:?}"));
    assert_eq!(again.config, config, "{printed}");
}
