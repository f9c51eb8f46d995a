//! TLS for the native protocol over TCP (feature `tls`): tracerd's `tracerd.native.tls`,
//! optionally with a client certificate for mutual TLS. rustls with the `ring` provider,
//! TLS 1.2 and 1.3.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

/// How the forwarder speaks TLS: the client config and the name tracerd's certificate must
/// carry.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

fn bad(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

fn read_certs(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let mut r =
        io::BufReader::new(std::fs::File::open(path).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))
        })?);
    let certs = rustls_pemfile::certs(&mut r).collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(bad(path, "no CERTIFICATE in PEM form"));
    }
    Ok(certs)
}

impl TlsClient {
    /// A client over an existing rustls config.
    pub fn new(config: Arc<rustls::ClientConfig>, server_name: ServerName<'static>) -> TlsClient {
        TlsClient {
            config,
            server_name,
        }
    }

    /// A client trusting the PEM CA certificates of `ca`, presenting `client` (certificate and
    /// key PEM files) when given, and expecting `server_name` (a DNS name or an IP address)
    /// in tracerd's certificate.
    pub fn from_pem(
        ca: &Path,
        client: Option<(&Path, &Path)>,
        server_name: &str,
    ) -> io::Result<TlsClient> {
        let mut roots = rustls::RootCertStore::empty();
        for c in read_certs(ca)? {
            roots
                .add(c)
                .map_err(|e| bad(ca, &format!("not a CA certificate: {e}")))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(io::Error::other)?
        .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = read_certs(cert)?;
                let mut r = io::BufReader::new(std::fs::File::open(key).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot read {}: {e}", key.display()))
                })?);
                let key_der = rustls_pemfile::private_key(&mut r)?
                    .ok_or_else(|| bad(key, "no PRIVATE KEY in PEM form"))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| bad(key, &e.to_string()))?
            }
        };
        let name = ServerName::try_from(server_name.to_string()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{server_name:?} is not a server name: {e}"),
            )
        })?;
        Ok(TlsClient::new(Arc::new(config), name))
    }

    /// The TLS handshake over `tcp`.
    pub(crate) async fn connect(
        &self,
        tcp: TcpStream,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(self.server_name.clone(), tcp)
            .await
    }
}
