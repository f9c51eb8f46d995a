//! HTTP authentication (issue 17, point 2): a real Prometheus 2.42 scraping over HTTPS with a
//! bearer token, a scrape job with a wrong token refused and counted, curl with basic auth,
//! the API group with its own token, `/healthz` open.

use std::path::Path;

use base64::Engine as _;

use crate::certs::{curl, Ca};
use crate::http::{query_until_found, start_prometheus_with};
use crate::support::{free_port, Daemon};

struct Setup {
    _dir: tempfile::TempDir,
    daemon: Daemon,
    port: u16,
    ca: std::path::PathBuf,
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// tracerd with HTTPS on `hasPrometheus`, scrape routes behind `scrape-token` or basic auth
/// (alice / wonderland), API routes behind `api-token`.
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "it-ca");
    let server = ca.server("server", "tracerd-it");
    let scrape = write(
        dir.path(),
        "scrape.token",
        "# the scrape token\nscrape-token\n",
    );
    let api = write(dir.path(), "api.token", "api-token\n");
    let hash = bcrypt::hash("wonderland", 4).unwrap();
    let users = write(dir.path(), "htpasswd", &format!("alice:{hash}\n"));
    let port = free_port();
    let daemon = Daemon::start(&format!(
        "\x20 httpAuth:\n\
         \x20   scrape: {{bearerTokenFiles: [{}], basicAuthFiles: [{}]}}\n\
         \x20   api: {{bearerTokenFiles: [{}]}}\n\
         hasPrometheus: {{epHost: 127.0.0.1, epPort: {port}, epForceSSL: true}}\n\
         tlsCertificate: {{certificateFile: {}, certificateKeyFile: {}}}\n",
        scrape.display(),
        users.display(),
        api.display(),
        server.cert.display(),
        server.key.display(),
    ));
    drop(crate::http::connect_http(port));
    Setup {
        port,
        ca: ca.cert.clone(),
        daemon,
        _dir: dir,
    }
}

impl Setup {
    fn get(&self, path: &str, extra: &[&str]) -> (u16, String) {
        let url = format!("https://127.0.0.1:{}{path}", self.port);
        let mut args = vec!["-i", "--cacert", self.ca.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.push(&url);
        let (code, out, err) = curl(&args);
        assert_eq!(code, 0, "curl {path}: {err}");
        let status = out.split(' ').nth(1).unwrap().parse().unwrap();
        (status, out)
    }
}

#[test]
fn a_real_prometheus_scrapes_over_https_with_a_bearer_token() {
    let s = setup();
    let ca = s.ca.display();
    let port = s.port;
    let Some(prom) = start_prometheus_with(&format!(
        "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\n\
         scrape_configs:\n\
         \x20 - job_name: good\n\
         \x20   scheme: https\n\
         \x20   tls_config: {{ca_file: '{ca}'}}\n\
         \x20   authorization: {{type: Bearer, credentials: scrape-token}}\n\
         \x20   static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n\
         \x20 - job_name: wrong\n\
         \x20   scheme: https\n\
         \x20   tls_config: {{ca_file: '{ca}'}}\n\
         \x20   authorization: {{type: Bearer, credentials: api-token}}\n\
         \x20   static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    )) else {
        panic!(
            "prometheus is not installed: apt-get install prometheus (./test.sh does it as root)"
        );
    };
    let good = query_until_found(&prom, "up{job=\"good\"} == 1");
    assert_eq!(good["value"][1], "1");
    // tracerd's own metrics arrived through the authenticated scrape.
    let own = query_until_found(
        &prom,
        "tracerd_http_requests_total{job=\"good\",route=\"metrics\"}",
    );
    assert_eq!(own["metric"]["code"], "200");
    let wrong = query_until_found(&prom, "up{job=\"wrong\"} == 0");
    assert_eq!(wrong["metric"]["job"], "wrong");
    // The refused scrapes are counted by route group, source and reason.
    let failures = query_until_found(
        &prom,
        "tracerd_http_auth_failures_total{job=\"good\",route=\"scrape\",source=\"127.0.0.1\",reason=\"invalid\"} > 0",
    );
    assert_eq!(failures["metric"]["route"], "scrape");
    drop(s.daemon);
}

#[test]
fn missing_or_wrong_credentials_get_401_per_route_group_and_healthz_stays_open() {
    let s = setup();
    // No credentials: 401 naming both schemes the scrape group accepts.
    let (status, text) = s.get("/metrics", &[]);
    assert_eq!(status, 401, "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(
        lower.contains("www-authenticate: bearer realm=\"tracerd\""),
        "{text}"
    );
    assert!(
        lower.contains("www-authenticate: basic realm=\"tracerd\""),
        "{text}"
    );
    assert!(!text.contains("tracerd_"), "metrics leaked: {text}");
    // Basic auth: the right password, a wrong one, an unknown user.
    let basic = |u: &str| {
        format!(
            "Authorization: Basic {}",
            base64::engine::general_purpose::STANDARD.encode(u)
        )
    };
    assert_eq!(
        s.get("/metrics", &["-H", &basic("alice:wonderland")]).0,
        200
    );
    assert_eq!(
        s.get("/metrics", &["-H", &basic("alice:looking-glass")]).0,
        401
    );
    assert_eq!(s.get("/metrics", &["-H", &basic("bob:wonderland")]).0, 401);
    // Each group has its own credentials.
    let bearer = |t: &str| format!("Authorization: Bearer {t}");
    assert_eq!(s.get("/metrics", &["-H", &bearer("scrape-token")]).0, 200);
    assert_eq!(s.get("/api/nodes", &["-H", &bearer("scrape-token")]).0, 401);
    let (status, text) = s.get("/api/nodes", &["-H", &bearer("api-token")]);
    assert_eq!(status, 200, "{text}");
    let (_, text) = s.get("/api/nodes", &[]);
    let lower = text.to_ascii_lowercase();
    assert!(lower.contains("www-authenticate: bearer"), "{text}");
    assert!(!lower.contains("www-authenticate: basic"), "{text}");
    // Health stays open.
    assert_eq!(s.get("/healthz", &[]).0, 200);
    assert_eq!(s.get("/readyz", &[]).0, 200);
    // The failures are counted: scrape 1 missing and 2 invalid, api 1 of each.
    let (_, metrics) = s.get("/metrics", &["-H", &bearer("scrape-token")]);
    let count = |labels: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("tracerd_http_auth_failures_total{{{labels}}}")))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or_else(|| panic!("no {labels} in {metrics}"))
            .to_string()
    };
    assert_eq!(
        count("reason=\"missing\",route=\"scrape\",source=\"127.0.0.1\""),
        "1"
    );
    assert_eq!(
        count("reason=\"invalid\",route=\"scrape\",source=\"127.0.0.1\""),
        "2"
    );
    assert_eq!(
        count("reason=\"invalid\",route=\"api\",source=\"127.0.0.1\""),
        "1"
    );
    assert_eq!(
        count("reason=\"missing\",route=\"api\",source=\"127.0.0.1\""),
        "1"
    );
}

#[test]
fn a_plain_password_in_the_basic_auth_file_is_a_start_error() {
    let dir = tempfile::tempdir().unwrap();
    let users = write(dir.path(), "htpasswd", "alice:wonderland\n");
    let d = Daemon::configure(
        |_, _| String::new(),
        &format!(
            "\x20 httpAuth:\n\x20   scrape: {{basicAuthFiles: [{}]}}\n",
            users.display()
        ),
    );
    let out = d.command().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("tracerd.httpAuth.scrape"), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:1:", users.display())),
        "{stderr}"
    );
    assert!(stderr.contains("plain passwords are refused"), "{stderr}");
}
