//! TLS for tracerd's listeners (HTTP endpoints and native TCP listeners), over rustls with the
//! `ring` provider: TLS 1.2 and 1.3 only, no OpenSSL.
//!
//! A [`CertStore`] holds the certificate chain and key read from PEM files and answers every
//! handshake with the pair it holds now; [`CertStore::reload`] (SIGHUP) reads the files again
//! and swaps the pair only when the new one is whole and its key matches its certificate, so
//! a bad rotation keeps the old pair and established connections are never touched (they
//! already have their session keys).

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::ring as provider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

/// Why a certificate, key or client CA could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {path}")]
    Read {
        /// Which file (`certificate`, `key`, ...).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no PEM block of the kind needed.
    #[error("{path} holds no {what} in PEM form")]
    Empty {
        /// What was looked for (`CERTIFICATE`, `PRIVATE KEY`).
        what: &'static str,
        /// Its path.
        path: PathBuf,
    },
    /// The key is of a kind rustls cannot sign with.
    #[error("{path}: unusable private key: {reason}")]
    BadKey {
        /// Its path.
        path: PathBuf,
        /// rustls's words.
        reason: String,
    },
    /// The key does not belong to the certificate.
    #[error("the private key {key} does not match the certificate {cert}")]
    Mismatch {
        /// Certificate file.
        cert: PathBuf,
        /// Key file.
        key: PathBuf,
    },
    /// A client CA certificate could not be used as a trust anchor, or the verifier failed.
    #[error("client CA {path}: {reason}")]
    BadCa {
        /// Its path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Where a certificate and its key are: cardano-tracer's `tlsCertificate` (or
/// `tracerd.native.tls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// PEM certificate (may hold the chain after it).
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM intermediate certificates sent after the certificate.
    pub chain: Vec<PathBuf>,
}

/// The certificate and key in force, swapped by [`CertStore::reload`].
#[derive(Debug)]
pub struct CertStore {
    files: CertFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    /// Reads `files` (blocking): every error says which file and why.
    pub fn open(files: CertFiles) -> Result<CertStore, TlsError> {
        let key = load_pair(&files)?;
        Ok(CertStore {
            files,
            current: RwLock::new(Arc::new(key)),
        })
    }

    /// The files this store reads.
    pub fn files(&self) -> &CertFiles {
        &self.files
    }

    /// Reads the files again (blocking); on success new handshakes use the new pair, on an
    /// error the old pair stays in force.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = load_pair(&self.files)?;
        *crate::sync::write(&self.current) = Arc::new(key);
        Ok(())
    }

    /// The certificate chain served now (the first is the end-entity certificate).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        crate::sync::read(&self.current).cert.clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(crate::sync::read(&self.current).clone())
    }
}

/// A server config answering with `store`'s pair, TLS 1.2+ only, advertising `alpn`; with
/// `client_ca`, only clients presenting a certificate issued by one of its CAs are admitted
/// (mutual TLS).
pub fn server_config(
    store: Arc<CertStore>,
    client_ca: Option<&Path>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(provider::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let mut config = match client_ca {
        None => builder.with_no_client_auth().with_cert_resolver(store),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs("client CA", path)? {
                roots.add(cert).map_err(|e| TlsError::BadCa {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::BadCa {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
            builder
                .with_client_cert_verifier(verifier)
                .with_cert_resolver(store)
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The chain and key of `files`, checked to belong together.
fn load_pair(files: &CertFiles) -> Result<CertifiedKey, TlsError> {
    let mut chain = read_certs("certificate", &files.cert)?;
    for path in &files.chain {
        chain.extend(read_certs("certificate chain file", path)?);
    }
    let key = read_key(&files.key)?;
    let signer = provider::sign::any_supported_type(&key).map_err(|e| TlsError::BadKey {
        path: files.key.clone(),
        reason: e.to_string(),
    })?;
    let pair = CertifiedKey::new(chain, signer);
    match pair.keys_match() {
        Ok(()) => Ok(pair),
        // rustls cannot tell for some key kinds; the handshake would then fail, not succeed
        // with a wrong key.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(pair),
        Err(_) => Err(TlsError::Mismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
        }),
    }
}

fn open(what: &'static str, path: &Path) -> Result<BufReader<std::fs::File>, TlsError> {
    std::fs::File::open(path)
        .map(BufReader::new)
        .map_err(|source| TlsError::Read {
            what,
            path: path.to_path_buf(),
            source,
        })
}

/// Every certificate of a PEM file; at least one.
pub fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut open(what, path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            what,
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what: "CERTIFICATE",
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut open("key", path)?)
        .map_err(|source| TlsError::Read {
            what: "key",
            path: path.to_path_buf(),
            source,
        })?
        .ok_or_else(|| TlsError::Empty {
            what: "PRIVATE KEY",
            path: path.to_path_buf(),
        })
}

/// Whether the first byte a client sent opens a TLS handshake record (content type 22).
pub fn is_tls_record(first: u8) -> bool {
    first == 0x16
}
