//! TLS for the sinks' HTTP client (`tls: {caFile, certFile, keyFile}` of `tracerd.remoteWrite`
//! and `tracerd.loki`): a rustls client config (the `ring` provider, TLS 1.2 and 1.3) that
//! trusts only the given CA and presents a client certificate when one is set. Read once at
//! start; blocking file reads.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ClientTls;

/// Why a client TLS config could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    /// A file could not be read.
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// A file holds no PEM block of the kind needed.
    #[error("{0} holds no {1} in PEM form")]
    Empty(PathBuf, &'static str),
    /// rustls refused a certificate or the key.
    #[error("{0}: {1}")]
    Refused(PathBuf, String),
}

fn open(path: &Path) -> Result<BufReader<std::fs::File>, ClientTlsError> {
    std::fs::File::open(path)
        .map(BufReader::new)
        .map_err(|e| ClientTlsError::Read(path.to_path_buf(), e))
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientTlsError> {
    let certs = rustls_pemfile::certs(&mut open(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientTlsError::Read(path.to_path_buf(), e))?;
    if certs.is_empty() {
        return Err(ClientTlsError::Empty(path.to_path_buf(), "CERTIFICATE"));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, ClientTlsError> {
    rustls_pemfile::private_key(&mut open(path)?)
        .map_err(|e| ClientTlsError::Read(path.to_path_buf(), e))?
        .ok_or_else(|| ClientTlsError::Empty(path.to_path_buf(), "PRIVATE KEY"))
}

/// The rustls client config of `tls`.
pub fn client_config(tls: &ClientTls) -> Result<Arc<rustls::ClientConfig>, ClientTlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(&tls.ca_file)? {
        roots
            .add(c)
            .map_err(|e| ClientTlsError::Refused(tls.ca_file.clone(), e.to_string()))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .map_err(|e| ClientTlsError::Refused(tls.ca_file.clone(), e.to_string()))?
    .with_root_certificates(roots);
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key_file)) => builder
            .with_client_auth_cert(certs(cert)?, key(key_file)?)
            .map_err(|e| ClientTlsError::Refused(key_file.clone(), e.to_string()))?,
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A config trusting nothing (for unit tests of URL handling).
#[cfg(test)]
pub fn client_config_for_tests() -> Arc<rustls::ClientConfig> {
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3 is supported")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth(),
    )
}
