//! Node identity (`tracerd.native.identities`): which node names a native connection may
//! claim. Each identity maps a credential — a DNS name its client certificate carries (the
//! certificate verified against `tracerd.native.tls.clientCaFile`), and/or a token sent in
//! `Hello` — to node names. With identities configured, a native TCP connection must present
//! a credential of an identity naming the node it claims; otherwise it is refused with
//! `NAME_REJECTED` and the reason. Unix-socket connections are trusted by the socket's mode and
//! group (`tracerd.unixSocket`) and not checked.
//!
//! Tokens are compared in constant time against every identity's token. [`Identities::check`]
//! is pure.

use std::path::Path;

use rustls::pki_types::{CertificateDer, ServerName};
use subtle::ConstantTimeEq;

use crate::config::NodeIdentity;

/// Why the identities could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A token file could not be read.
    #[error("tracerd.native.identities[{index}].tokenFile: cannot read {path}")]
    Read {
        /// The identity's index.
        index: usize,
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A token file holds no token.
    #[error("tracerd.native.identities[{index}].tokenFile: {path} holds no token")]
    Empty {
        /// The identity's index.
        index: usize,
        /// The file.
        path: std::path::PathBuf,
    },
    /// A certificate name is not a DNS name or IP address.
    #[error("tracerd.native.identities[{index}].certificate: {name:?} is not a DNS name")]
    BadName {
        /// The identity's index.
        index: usize,
        /// The name.
        name: String,
    },
}

#[derive(Debug)]
struct Identity {
    names: Vec<String>,
    certificate: Option<ServerName<'static>>,
    token: Option<Vec<u8>>,
}

/// Every configured identity; empty: no check.
#[derive(Debug, Default)]
pub struct Identities {
    all: Vec<Identity>,
}

/// What a connection presented.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    /// Over TCP (checked) or a Unix socket (trusted).
    pub tcp: bool,
    /// The verified client certificate, if any.
    pub certificate: Option<&'a CertificateDer<'static>>,
    /// `Hello.token` (empty: none).
    pub token: &'a str,
}

impl Identities {
    /// Reads the token files (blocking).
    pub fn load(config: &[NodeIdentity]) -> Result<Identities, IdentityError> {
        let mut all = Vec::new();
        for (index, id) in config.iter().enumerate() {
            let token = match &id.token_file {
                None => None,
                Some(path) => Some(read_token(index, path)?),
            };
            let certificate = match &id.certificate {
                None => None,
                Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| {
                    IdentityError::BadName {
                        index,
                        name: name.clone(),
                    }
                })?),
            };
            all.push(Identity {
                names: id.names.clone(),
                certificate,
                token,
            });
        }
        Ok(Identities { all })
    }

    /// True when no identity is configured.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Whether a connection that presented `p` may claim `name`; the error is the reason
    /// sent to the node.
    pub fn check(&self, p: Presented<'_>, name: &str) -> Result<(), String> {
        if self.all.is_empty() || !p.tcp {
            return Ok(());
        }
        let cert = p
            .certificate
            .and_then(|der| webpki::EndEntityCert::try_from(der).ok());
        let presented = p.token.as_bytes();
        let mut matched = false;
        let mut allowed: Vec<&str> = Vec::new();
        for id in &self.all {
            let by_cert = match (&id.certificate, &cert) {
                (Some(want), Some(cert)) => cert.verify_is_valid_for_subject_name(want).is_ok(),
                _ => false,
            };
            // Every token is compared, matched or not, in constant time.
            let by_token = match &id.token {
                Some(t) => !presented.is_empty() && bool::from(t.as_slice().ct_eq(presented)),
                None => false,
            };
            if by_cert || by_token {
                matched = true;
                allowed.extend(id.names.iter().map(String::as_str));
            }
        }
        if !matched {
            return Err(
                "no credential of tracerd.native.identities: present a client \
                        certificate or a Hello token mapped to this node name"
                    .to_string(),
            );
        }
        if allowed.contains(&name) {
            Ok(())
        } else {
            allowed.sort_unstable();
            allowed.dedup();
            Err(format!(
                "this node's credential may claim {allowed:?}, not this name"
            ))
        }
    }
}

fn read_token(index: usize, path: &Path) -> Result<Vec<u8>, IdentityError> {
    let text = std::fs::read_to_string(path).map_err(|source| IdentityError::Read {
        index,
        path: path.to_path_buf(),
        source,
    })?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.as_bytes().to_vec())
        .ok_or_else(|| IdentityError::Empty {
            index,
            path: path.to_path_buf(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> Identities {
        Identities {
            all: vec![
                Identity {
                    names: vec!["bp-1".into()],
                    certificate: None,
                    token: Some(b"secret-bp".to_vec()),
                },
                Identity {
                    names: vec!["relay-1".into(), "relay-2".into()],
                    certificate: None,
                    token: Some(b"secret-relays".to_vec()),
                },
            ],
        }
    }

    fn tcp(token: &str) -> Presented<'_> {
        Presented {
            tcp: true,
            certificate: None,
            token,
        }
    }

    #[test]
    fn a_token_opens_only_its_names() {
        let ids = ids();
        assert_eq!(ids.check(tcp("secret-bp"), "bp-1"), Ok(()));
        assert_eq!(ids.check(tcp("secret-relays"), "relay-2"), Ok(()));
        let e = ids.check(tcp("secret-relays"), "bp-1").unwrap_err();
        assert!(e.contains("[\"relay-1\", \"relay-2\"]"), "{e}");
        assert!(ids.check(tcp("secret"), "bp-1").is_err());
        assert!(ids.check(tcp(""), "bp-1").is_err());
    }

    #[test]
    fn unix_peers_and_no_identities_are_not_checked() {
        let unix = Presented {
            tcp: false,
            certificate: None,
            token: "",
        };
        assert_eq!(ids().check(unix, "bp-1"), Ok(()));
        assert_eq!(Identities::default().check(tcp(""), "anything"), Ok(()));
    }
}
