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
    assert_eq!(parse("{}").unwrap().config, Config::default());
    let d = Config::default();
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
    assert_eq!(parse("network: null").unwrap().config.network, None);
    assert_eq!(d.logging[0].log_root, PathBuf::from("./logs"));
    assert_eq!(d.tracerd.limits.max_frame_bytes, 1 << 20);
}

#[test]
fn cardano_tracer_examples_are_accepted() {
    let y = parse(CARDANO_YAML).unwrap();
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
    let j = parse(CARDANO_JSON).unwrap();
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
    let problems = parse(text).unwrap_err();
    let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(
        shown.contains(&"line 3: rotaton: unknown key".to_string()),
        "{shown:?}"
    );
    assert!(
        shown.contains(&"line 6: tracerd.limits.maxFrameByte: unknown key".to_string()),
        "{shown:?}"
    );
    assert_eq!(problems.len(), 2, "{shown:?}");
    let ok = parse("hasRTView: { epHost: x, epPort: 1 }\nmetricsComp: {}\n").unwrap();
    let warned: Vec<_> = ok.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(warned, vec!["hasRTView", "metricsComp"]);
    assert_eq!(ok.warnings[0].line, Some(1));
}

#[test]
fn every_validation_problem_is_listed() {
    let text = "logging: []\nrotation: { rpLogLimitBytes: 0, rpKeepFilesNum: 1, rpFrequencySecs: 0 }\ntracerd:\n  limits: { maxFrameBytes: 1, queueBatches: 0, maxConnections: 0, handshakeTimeoutSecs: -1 }\n  shutdownGraceSecs: 0\n";
    let problems = parse(text).unwrap_err();
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
    assert!(problems.iter().all(|p| p.line.is_some()), "{problems:?}");
}

#[test]
fn bad_values_name_the_line() {
    let problems =
        parse("networkMagic: 1\nrotation:\n  rpLogLimitBytes: lots\n  rpKeepFilesNum: 1\n")
            .unwrap_err();
    assert_eq!(problems[0].line, Some(3), "{problems:?}");
    let problems = parse("logging:\n  - { logRoot: x, logMode: FileMode, logFormat: ForRobots }\n")
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
        let config = parse(text).unwrap().config;
        let printed = to_yaml(&config);
        let again = parse(&printed).unwrap_or_else(|p| panic!("{printed}\n{p:?}"));
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
    let text = "hasTimeseries: { epHost: 127.0.0.1, epPort: 12818 }\ntlsCertificate: { certificateFile: c, certificateKeyFile: k }\nhasForwarding: [{ tag: AcceptAt, contents: /tmp/r.sock }, null, { queueSize: 1 }]\n";
    let loaded = parse(text).unwrap();
    let keys: Vec<_> = loaded.warnings.iter().map(|w| w.key.as_str()).collect();
    for key in ["hasTimeseries", "tlsCertificate", "hasForwarding"] {
        assert!(keys.contains(&key), "{key} not explained: {keys:?}");
    }
    assert!(
        loaded.warnings.iter().all(|w| w.line.is_some()),
        "{:?}",
        loaded.warnings
    );
}
