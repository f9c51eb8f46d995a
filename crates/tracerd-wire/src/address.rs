//! [`Address`]: the socket address syntax of cardano-tracer's config (`host:port` is TCP,
//! anything else a Unix path), shared by tracerd's config and every client that dials it.
//! Serialised as that text, so it reads and writes config files unchanged.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A socket address as cardano-tracer writes it: `host:port` is TCP, anything else a Unix path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A Unix stream socket path.
    Unix(PathBuf),
    /// A TCP host (name, IPv4, or IPv6 in brackets) and port.
    Tcp {
        /// Host part without brackets.
        host: String,
        /// Port.
        port: u16,
    },
}

impl Address {
    /// Parses cardano-tracer's address syntax. `[::1]:3179` is TCP over IPv6; a path that ends
    /// in `:<digits>` would be TCP too, as in cardano-tracer, so write such paths as `./x:1`.
    pub fn parse(text: &str) -> Result<Address, String> {
        if text.is_empty() {
            return Err("empty address".to_string());
        }
        if let Some((host, port)) = text.rsplit_once(':') {
            let is_port = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            if is_port && !host.is_empty() && !host.contains('/') {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| format!("port {port} in {text:?} is not in 0..=65535"))?;
                return Ok(Address::Tcp {
                    host: host.to_string(),
                    port,
                });
            }
        }
        Ok(Address::Unix(PathBuf::from(text)))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "{}", path.display()),
            Address::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Address::Tcp { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Address::parse(&text).map_err(serde::de::Error::custom)
    }
}
