//! The forwarder stays light for the nodes that embed it: neither it nor `tracerd-wire`
//! (as the forwarder uses it, without the `cardano` feature) depends on HTTP, metrics, CBOR
//! or the daemon. Checked on the manifests' direct dependencies; path dependencies are
//! followed by checking each manifest.

use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "axum",
    "hyper",
    "hyper-util",
    "prometheus",
    "tracerd",
    "minicbor",
];

/// `(name, line)` of every dependency in the `[dependencies]` table of `manifest`.
fn dependencies(manifest: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let mut inside = false;
    let mut deps = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == "[dependencies]";
        } else if inside && !line.is_empty() && !line.starts_with('#') {
            let name = line.split('=').next().unwrap().trim().to_string();
            deps.push((name, line.to_string()));
        }
    }
    deps
}

#[test]
fn forwarder_and_wire_pull_in_no_http_metrics_cbor_or_daemon() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let forwarder = dependencies(&here.join("Cargo.toml"));
    let wire = dependencies(&here.join("../tracerd-wire/Cargo.toml"));
    for (name, line) in &forwarder {
        assert!(
            !FORBIDDEN.contains(&name.as_str()),
            "forwarder depends on {line}"
        );
        if name == "tracerd-wire" {
            assert!(
                !line.contains("cardano"),
                "forwarder enables tracerd-wire's cardano: {line}"
            );
        }
    }
    assert!(forwarder.iter().any(|(n, _)| n == "tracerd-wire"));
    for (name, line) in &wire {
        let optional = line.contains("optional = true");
        assert!(
            optional || !FORBIDDEN.contains(&name.as_str()),
            "tracerd-wire depends on {line}"
        );
    }
}
