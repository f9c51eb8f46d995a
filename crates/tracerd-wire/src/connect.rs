//! [`connect`]: the one way every client side opens a stream to an [`Address`] (the
//! forwarder, ConnectTo dialing, the simulators): Unix path or TCP `host:port`, with
//! `TCP_NODELAY` set (frames are small and latency-sensitive).

use std::io;

use tokio::net::{TcpStream, UnixStream};
use tokio_util::either::Either;

use crate::Address;

/// A connected TCP or Unix stream (`Either` reads and writes whichever it holds).
pub type Stream = Either<TcpStream, UnixStream>;

/// Connects to `address`.
pub async fn connect(address: &Address) -> io::Result<Stream> {
    match address {
        Address::Tcp { host, port } => {
            let s = TcpStream::connect((host.as_str(), *port)).await?;
            s.set_nodelay(true)?;
            Ok(Either::Left(s))
        }
        Address::Unix(path) => Ok(Either::Right(UnixStream::connect(path).await?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn connects_over_unix_and_tcp() {
        let dir = std::env::temp_dir().join(format!("tracerd-wire-connect-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let unix = tokio::net::UnixListener::bind(&path).unwrap();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        let addresses = [
            Address::Unix(path.clone()),
            Address::Tcp {
                host: "127.0.0.1".into(),
                port,
            },
        ];
        for address in &addresses {
            let mut client = connect(address).await.unwrap();
            client.write_all(b"hi").await.unwrap();
            let mut got = [0u8; 2];
            match address {
                Address::Unix(_) => unix.accept().await.unwrap().0.read_exact(&mut got).await,
                Address::Tcp { .. } => tcp.accept().await.unwrap().0.read_exact(&mut got).await,
            }
            .unwrap();
            assert_eq!(&got, b"hi");
        }
        assert!(connect(&Address::Unix(dir.join("absent.sock")))
            .await
            .is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
