//! Test certificates made at test time with the `openssl` CLI: a CA, and server and client
//! certificates it signs (P-256 keys; servers for `127.0.0.1` and `localhost`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// A test CA in a directory.
pub struct Ca {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate and its key.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl ({e}): apt-get install openssl (./test.sh does it as root)")
        });
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Ca {
    /// A new CA named `cn` in `dir`.
    pub fn new(dir: &Path, cn: &str) -> Ca {
        let (cert, key) = (dir.join(format!("{cn}.pem")), dir.join(format!("{cn}.key")));
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={cn}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                cert.to_str().unwrap(),
            ],
            dir,
        );
        Ca {
            dir: dir.to_path_buf(),
            cert,
            key,
        }
    }

    /// A certificate named `name` with subject CN `cn` and the given `subjectAltName` (for
    /// example `IP:127.0.0.1,DNS:localhost`), for `serverAuth` or `clientAuth`.
    pub fn issue(&self, name: &str, cn: &str, san: &str, usage: &str) -> Issued {
        let (cert, key) = (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
        );
        let csr = self.dir.join(format!("{name}.csr"));
        let ext = self.dir.join(format!("{name}.ext"));
        std::fs::write(
            &ext,
            format!(
                "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage={usage}\nsubjectAltName={san}\n"
            ),
        )
        .unwrap();
        openssl(
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                csr.to_str().unwrap(),
            ],
            &self.dir,
        );
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                csr.to_str().unwrap(),
                "-CA",
                self.cert.to_str().unwrap(),
                "-CAkey",
                self.key.to_str().unwrap(),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                ext.to_str().unwrap(),
                "-out",
                cert.to_str().unwrap(),
            ],
            &self.dir,
        );
        Issued { cert, key }
    }

    /// A server certificate for 127.0.0.1 and localhost.
    pub fn server(&self, name: &str, cn: &str) -> Issued {
        self.issue(name, cn, "IP:127.0.0.1,DNS:localhost", "serverAuth")
    }

    /// A rustls client config trusting this CA, TLS 1.2+.
    pub fn client_config(&self, client: Option<&Issued>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in read_certs(&self.cert) {
            roots.add(c).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        Arc::new(match client {
            None => builder.with_no_client_auth(),
            Some(c) => {
                let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
                    std::fs::File::open(&c.key).unwrap(),
                ))
                .unwrap()
                .unwrap();
                builder
                    .with_client_auth_cert(read_certs(&c.cert), key)
                    .unwrap()
            }
        })
    }
}

pub fn read_certs(path: &Path) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(path).unwrap(),
    ))
    .collect::<Result<Vec<_>, _>>()
    .unwrap()
}

/// Runs `curl` with `args`; (exit code, stdout, stderr).
pub fn curl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl ({e}): apt-get install curl"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `openssl s_client` against 127.0.0.1:`port` with `extra` options; its stdout and stderr.
pub fn s_client(port: u16, extra: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-brief",
        ])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
