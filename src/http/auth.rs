//! HTTP authentication (`tracerd.httpAuth`, off by default): bearer tokens and/or basic auth
//! per route group — scrape routes, API/UI routes — with credentials read from files, so
//! systemd's `LoadCredential=` can hand them over. `/healthz` and `/readyz` stay open.
//!
//! * Tokens are compared in constant time (`subtle`) against every configured token, without
//!   stopping at the first match (only a token's length can show in the timing).
//! * Basic auth takes `user:hash` lines (htpasswd's `-B` format): the hash must be bcrypt
//!   (`$2a$`, `$2b$`, `$2y$`); a line with anything else is a start error, so a plain password
//!   never works. An unknown user is checked against a dummy hash of the same cost, so the time
//!   does not tell which users exist. bcrypt runs on the blocking pool, [`BCRYPT_AT_ONCE`] at a
//!   time, so wrong passwords cannot occupy the runtime.
//! * A refusal is `401` with one `WWW-Authenticate` per accepted scheme, counted in
//!   `tracerd_http_auth_failures_total{route, source, reason}` (`source` is the client's IP
//!   address; past [`MAX_SOURCES`] addresses, `other`) and logged at a bounded rate.
//!
//! SIGHUP re-reads the files ([`Auth::reload`]); a file that fails keeps the credentials in
//! force.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use prometheus::{IntCounterVec, Opts, Registry};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::config::{AuthGroup, HttpAuthSettings};
use crate::http::conns::{client_of, RateLog};

/// bcrypt verifications run at once (each takes tens of milliseconds of one core).
pub const BCRYPT_AT_ONCE: usize = 2;
/// Distinct client addresses named in the failure counter; the rest are `other`.
pub const MAX_SOURCES: usize = 64;
/// Largest `Authorization` header looked at, in bytes.
const MAX_HEADER: usize = 4096;

/// Why the credentials could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// Its path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A token file holds no token.
    #[error("{path} holds no bearer token")]
    NoToken {
        /// Its path.
        path: PathBuf,
    },
    /// A basic-auth line is not `user:hash` with a bcrypt hash.
    #[error("{path}:{line}: {reason}")]
    BadLine {
        /// Its path.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Which credentials a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// No credentials, ever (`/healthz`, `/readyz`).
    Open,
    /// `httpAuth.scrape`.
    Scrape,
    /// `httpAuth.api`.
    Api,
}

impl Group {
    fn label(self) -> &'static str {
        match self {
            Group::Open => "open",
            Group::Scrape => "scrape",
            Group::Api => "api",
        }
    }
}

/// The kind of HTTP endpoint a router serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointKind {
    /// `hasPrometheus`.
    Prometheus,
    /// `hasEKG`.
    Ekg,
    /// `hasTimeseries`.
    Timeseries,
}

/// The group of `path` on an endpoint of `kind` (pure).
pub fn group_of(kind: EndpointKind, path: &str) -> Group {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match (kind, first) {
        (_, "healthz" | "readyz") => Group::Open,
        (EndpointKind::Prometheus, "api" | "ui") => Group::Api,
        (EndpointKind::Prometheus | EndpointKind::Ekg, _) => Group::Scrape,
        (EndpointKind::Timeseries, _) => Group::Api,
    }
}

/// The credentials of one group.
#[derive(Debug, Default)]
struct Credentials {
    tokens: Vec<Vec<u8>>,
    users: HashMap<String, String>,
    /// A hash of the users' cost, checked for unknown users.
    dummy: Option<String>,
}

impl Credentials {
    fn challenges(&self) -> Vec<HeaderValue> {
        let mut out = Vec::new();
        if !self.tokens.is_empty() {
            out.push(HeaderValue::from_static("Bearer realm=\"tracerd\""));
        }
        if !self.users.is_empty() {
            out.push(HeaderValue::from_static(
                "Basic realm=\"tracerd\", charset=\"UTF-8\"",
            ));
        }
        out
    }
}

/// Reads one group's files (blocking).
fn load_group(group: &AuthGroup) -> Result<Credentials, AuthError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let mut creds = Credentials::default();
    for path in &group.bearer_token_files {
        let before = creds.tokens.len();
        for line in read(path)?.lines().map(str::trim) {
            if !line.is_empty() && !line.starts_with('#') {
                creds.tokens.push(line.as_bytes().to_vec());
            }
        }
        if creds.tokens.len() == before {
            return Err(AuthError::NoToken { path: path.clone() });
        }
    }
    for path in &group.basic_auth_files {
        for (i, line) in read(path)?.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: &str| AuthError::BadLine {
                path: path.clone(),
                line: i + 1,
                reason: reason.to_string(),
            };
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| bad("not user:bcrypt-hash"))?;
            if user.is_empty() {
                return Err(bad("empty user name"));
            }
            let cost = bcrypt_cost(hash).ok_or_else(|| {
                bad(&format!(
                    "the password of {user:?} is not a bcrypt hash ($2y$...); plain passwords \
                     are refused (make one with `htpasswd -nBC 10 {user}`)"
                ))
            })?;
            if creds.dummy.is_none() {
                let dummy = bcrypt::hash("tracerd-dummy", cost)
                    .map_err(|e| bad(&format!("cannot hash at cost {cost}: {e}")))?;
                creds.dummy = Some(dummy);
            }
            creds.users.insert(user.to_string(), hash.to_string());
        }
    }
    Ok(creds)
}

/// The cost of a well-formed bcrypt hash (`$2[aby]$NN$` + 53 characters), else `None`.
fn bcrypt_cost(hash: &str) -> Option<u32> {
    let rest = hash
        .strip_prefix("$2y$")
        .or_else(|| hash.strip_prefix("$2b$"))
        .or_else(|| hash.strip_prefix("$2a$"))?;
    let (cost, tail) = rest.split_at_checked(2)?;
    let cost: u32 = cost.parse().ok()?;
    (tail.len() == 54 && tail.starts_with('$') && (4..=31).contains(&cost)).then_some(cost)
}

/// `tracerd_http_auth_failures_total`.
#[derive(Debug, Clone)]
pub struct AuthMetrics {
    /// Refused requests by route group, source address and reason.
    pub failures: IntCounterVec,
}

impl AuthMetrics {
    /// Registers the counter in `registry`.
    pub fn register(registry: &Registry) -> AuthMetrics {
        let failures = IntCounterVec::new(
            Opts::new(
                "tracerd_http_auth_failures_total",
                "HTTP requests refused for missing or wrong credentials, by route group \
                 (scrape, api), client address (other past 64) and reason (missing, invalid)",
            ),
            &["route", "source", "reason"],
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(failures.clone()));
        AuthMetrics { failures }
    }
}

#[derive(Debug, Default)]
struct Groups {
    scrape: Option<Credentials>,
    api: Option<Credentials>,
}

/// The authentication of every HTTP endpoint.
#[derive(Debug)]
pub struct Auth {
    settings: HttpAuthSettings,
    groups: RwLock<Arc<Groups>>,
    metrics: AuthMetrics,
    bcrypt: Arc<Semaphore>,
    sources: Mutex<HashSet<String>>,
    log: RateLog,
}

fn load_groups(settings: &HttpAuthSettings) -> Result<Groups, (String, AuthError)> {
    let load = |name: &str, g: &Option<AuthGroup>| {
        g.as_ref()
            .filter(|g| !g.bearer_token_files.is_empty() || !g.basic_auth_files.is_empty())
            .map(load_group)
            .transpose()
            .map_err(|e| (format!("tracerd.httpAuth.{name}"), e))
    };
    Ok(Groups {
        scrape: load("scrape", &settings.scrape)?,
        api: load("api", &settings.api)?,
    })
}

impl Auth {
    /// Reads every group's files (blocking); the error names the group key and the file.
    pub fn load(
        settings: &HttpAuthSettings,
        metrics: AuthMetrics,
    ) -> Result<Auth, (String, AuthError)> {
        Ok(Auth {
            settings: settings.clone(),
            groups: RwLock::new(Arc::new(load_groups(settings)?)),
            metrics,
            bcrypt: Arc::new(Semaphore::new(BCRYPT_AT_ONCE)),
            sources: Mutex::new(HashSet::new()),
            log: RateLog::new(
                crate::http::conns::LINES_PER_WINDOW,
                crate::http::conns::WINDOW,
            ),
        })
    }

    /// True when some group needs credentials.
    pub fn enabled(&self) -> bool {
        let g = crate::sync::read(&self.groups);
        g.scrape.is_some() || g.api.is_some()
    }

    /// Re-reads the files (blocking); on an error the credentials in force stay.
    pub fn reload(&self) -> Result<(), (String, AuthError)> {
        let groups = load_groups(&self.settings)?;
        *crate::sync::write(&self.groups) = Arc::new(groups);
        Ok(())
    }

    fn source_label(&self, peer: &str) -> String {
        let ip = client_of(peer).map_or_else(|| "unix".to_string(), |ip| ip.to_string());
        let mut seen = crate::sync::lock(&self.sources);
        if seen.contains(&ip) || seen.len() < MAX_SOURCES {
            seen.insert(ip.clone());
            ip
        } else {
            "other".to_string()
        }
    }

    /// Whether the `Authorization` value `presented` opens `creds`.
    async fn check(
        &self,
        creds: &Credentials,
        presented: Option<&[u8]>,
    ) -> Result<(), &'static str> {
        let Some(value) = presented.filter(|v| v.len() <= MAX_HEADER) else {
            return Err("missing");
        };
        let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
            Some(i) => (&value[..i], value[i + 1..].trim_ascii()),
            None => return Err("invalid"),
        };
        if scheme.eq_ignore_ascii_case(b"bearer") && !creds.tokens.is_empty() {
            let mut ok = subtle::Choice::from(0u8);
            for t in &creds.tokens {
                ok |= t.as_slice().ct_eq(rest);
            }
            return if bool::from(ok) {
                Ok(())
            } else {
                Err("invalid")
            };
        }
        if scheme.eq_ignore_ascii_case(b"basic") && !creds.users.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .map_err(|_| "invalid")?;
            let text = String::from_utf8(decoded).map_err(|_| "invalid")?;
            let (user, password) = text.split_once(':').ok_or("invalid")?;
            let (hash, known) = match creds.users.get(user) {
                Some(h) => (h.clone(), true),
                None => (creds.dummy.clone().unwrap_or_default(), false),
            };
            let password = password.to_string();
            let Ok(_permit) = self.bcrypt.clone().acquire_owned().await else {
                return Err("invalid");
            };
            let verified = tokio::task::spawn_blocking(move || {
                bcrypt::verify(password, &hash).unwrap_or(false)
            })
            .await
            .unwrap_or(false);
            return if verified && known {
                Ok(())
            } else {
                Err("invalid")
            };
        }
        Err("invalid")
    }

    fn refuse(
        &self,
        group: Group,
        peer: &str,
        reason: &'static str,
        creds: &Credentials,
    ) -> Response {
        let source = self.source_label(peer);
        self.metrics
            .failures
            .with_label_values(&[group.label(), &source, reason])
            .inc();
        if let Some(suppressed) = self.log.admit(Instant::now()) {
            tracing::warn!(%peer, route = group.label(), reason, suppressed,
                "HTTP request refused: credentials missing or wrong");
        }
        let mut response = (
            StatusCode::UNAUTHORIZED,
            "Unauthorized: credentials missing or wrong\n",
        )
            .into_response();
        for c in creds.challenges() {
            response.headers_mut().append(header::WWW_AUTHENTICATE, c);
        }
        response
    }
}

/// The peer of a request, set by the server for every request it serves.
#[derive(Debug, Clone)]
pub struct Peer(pub String);

/// What the middleware of one endpoint holds.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The shared authentication.
    pub auth: Arc<Auth>,
    /// The endpoint's kind.
    pub kind: EndpointKind,
}

/// Wraps `router` so that every route of an endpoint of `kind` checks its group's credentials.
pub fn protect(router: axum::Router, auth: Arc<Auth>, kind: EndpointKind) -> axum::Router {
    router.layer(axum::middleware::from_fn_with_state(
        Layer { auth, kind },
        middleware,
    ))
}

async fn middleware(State(layer): State<Layer>, req: Request, next: Next) -> Response {
    let group = group_of(layer.kind, req.uri().path());
    let groups = crate::sync::read(&layer.auth.groups).clone();
    let creds = match group {
        Group::Open => None,
        Group::Scrape => groups.scrape.as_ref(),
        Group::Api => groups.api.as_ref(),
    };
    let Some(creds) = creds else {
        return next.run(req).await;
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec());
    match layer.auth.check(creds, presented.as_deref()).await {
        Ok(()) => next.run(req).await,
        Err(reason) => {
            let peer = req
                .extensions()
                .get::<Peer>()
                .map_or("unknown", |p| p.0.as_str());
            layer.auth.refuse(group, peer, reason, creds)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_follow_the_first_path_segment() {
        use EndpointKind::*;
        assert_eq!(group_of(Prometheus, "/healthz"), Group::Open);
        assert_eq!(group_of(Timeseries, "/readyz"), Group::Open);
        assert_eq!(group_of(Prometheus, "/metrics"), Group::Scrape);
        assert_eq!(group_of(Prometheus, "/"), Group::Scrape);
        assert_eq!(group_of(Prometheus, "/relay-1"), Group::Scrape);
        assert_eq!(group_of(Prometheus, "/api/nodes"), Group::Api);
        assert_eq!(group_of(Prometheus, "/ui/"), Group::Api);
        assert_eq!(group_of(Ekg, "/api/x"), Group::Scrape);
        assert_eq!(group_of(Timeseries, "/api/v1/query"), Group::Api);
        assert_eq!(group_of(Timeseries, "/timeseries/query"), Group::Api);
    }

    #[test]
    fn only_well_formed_bcrypt_hashes_have_a_cost() {
        let h = bcrypt::hash("secret", 4).unwrap();
        assert_eq!(bcrypt_cost(&h), Some(4));
        assert_eq!(bcrypt_cost(&h.replacen("$2b$", "$2y$", 1)), Some(4));
        assert_eq!(bcrypt_cost("secret"), None);
        assert_eq!(bcrypt_cost("$2y$10$short"), None);
        assert_eq!(bcrypt_cost("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="), None);
    }

    #[test]
    fn a_plain_password_line_is_refused_with_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, "# users\nalice:secret\n").unwrap();
        let group = AuthGroup {
            basic_auth_files: vec![path.clone()],
            ..AuthGroup::default()
        };
        let e = load_group(&group).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:2: ", path.display())), "{e}");
        assert!(e.contains("plain passwords are refused"), "{e}");
    }

    #[tokio::test]
    async fn tokens_and_passwords_are_checked() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let creds = Credentials {
            tokens: vec![b"tok-1".to_vec(), b"tok-2".to_vec()],
            users: [("alice".to_string(), hash.clone())].into(),
            dummy: Some(hash),
        };
        let auth = Auth::load(
            &HttpAuthSettings::default(),
            AuthMetrics::register(&Registry::new()),
        )
        .unwrap();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(auth.check(&creds, Some(b"Bearer tok-2")).await, Ok(()));
        assert_eq!(auth.check(&creds, Some(b"bearer  tok-1")).await, Ok(()));
        assert_eq!(
            auth.check(&creds, Some(b"Bearer tok-3")).await,
            Err("invalid")
        );
        assert_eq!(
            auth.check(&creds, Some(b"Bearer tok")).await,
            Err("invalid")
        );
        assert_eq!(auth.check(&creds, None).await, Err("missing"));
        let ok = format!("Basic {}", b64("alice:pw"));
        assert_eq!(auth.check(&creds, Some(ok.as_bytes())).await, Ok(()));
        let wrong = format!("Basic {}", b64("alice:px"));
        assert_eq!(
            auth.check(&creds, Some(wrong.as_bytes())).await,
            Err("invalid")
        );
        // The dummy hash opens nothing, even with its own password.
        let unknown = format!("Basic {}", b64("bob:pw"));
        assert_eq!(
            auth.check(&creds, Some(unknown.as_bytes())).await,
            Err("invalid")
        );
    }
}
