//! The TCP half of a capture: an `AF_PACKET` `SOCK_RAW` socket (`ETH_P_ALL`) with the
//! connection's filter ([`super::bpf::connection`]) attached, read on a blocking thread with
//! kernel receive timestamps (`SO_TIMESTAMPNS`). Opening one needs `CAP_NET_RAW`; without it
//! the kernel answers `EPERM`, which [`open`] turns into [`CaptureError::NoCapability`].

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::sys::socket::{self, sockopt, ControlMessageOwned, MsgFlags};
use socket2::{Domain, Protocol, SockFilter, Socket, Type};

use super::{bpf, CaptureError};

/// `ETH_P_ALL`.
const ETH_P_ALL: u16 = 0x0003;
/// `ARPHRD_ETHER`.
const ARPHRD_ETHER: u32 = 1;
/// `ARPHRD_LOOPBACK`.
const ARPHRD_LOOPBACK: u32 = 772;
/// How long one `recv` waits, so the reader sees its deadline and shutdown.
pub const POLL: Duration = Duration::from_millis(100);
/// Receive buffer asked for, so a burst between two reads is not lost.
const RECV_BUFFER: usize = 4 << 20;

/// One address of a host interface, as `getifaddrs` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    /// Interface name.
    pub name: String,
    /// Whether it is the loopback device.
    pub loopback: bool,
    /// The address.
    pub ip: Option<IpAddr>,
}

/// The interface a connection's packets cross, pure: the loopback device when both ends are
/// this host's addresses (the kernel routes such traffic over `lo` whatever interface holds
/// the address), else the interface holding the local address.
pub fn choose_interface(addrs: &[IfAddr], local: IpAddr, peer: IpAddr) -> Option<String> {
    let ours = |ip: IpAddr| ip.is_loopback() || addrs.iter().any(|a| a.ip == Some(ip));
    if ours(local) && ours(peer) {
        return addrs.iter().find(|a| a.loopback).map(|a| a.name.clone());
    }
    addrs
        .iter()
        .find(|a| a.ip == Some(local))
        .map(|a| a.name.clone())
}

fn host_addresses() -> io::Result<Vec<IfAddr>> {
    let list = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    Ok(list
        .map(|a| IfAddr {
            loopback: a
                .flags
                .contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK),
            ip: a.address.and_then(|s| {
                s.as_sockaddr_in()
                    .map(|v4| IpAddr::V4(v4.ip()))
                    .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
            }),
            name: a.interface_name,
        })
        .collect())
}

/// An open capture socket.
#[derive(Debug)]
pub struct PacketSocket {
    socket: Socket,
    /// The interface it reads.
    pub interface: String,
}

/// A packet read: how many bytes of `buf` it filled, its length on the wire, its time.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Bytes kept (at most the buffer).
    pub len: usize,
    /// Bytes on the wire.
    pub original_len: usize,
    /// Kernel receive time, ns since the epoch.
    pub ts_ns: u64,
}

/// Opens a socket that reads the packets of the TCP connection `local`–`peer`. Blocking.
pub fn open(local: SocketAddr, peer: SocketAddr) -> Result<PacketSocket, CaptureError> {
    let (local, peer) = (bpf::canonical(local), bpf::canonical(peer));
    let addrs = host_addresses()
        .map_err(|e| CaptureError::Interface(format!("cannot list this host's interfaces: {e}")))?;
    let interface = choose_interface(&addrs, local.ip(), peer.ip()).ok_or_else(|| {
        CaptureError::Interface(format!("no interface of this host holds {}", local.ip()))
    })?;
    let sys = std::path::Path::new("/sys/class/net").join(&interface);
    let read_num = |file: &str| -> Result<u32, CaptureError> {
        std::fs::read_to_string(sys.join(file))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .ok_or_else(|| {
                CaptureError::Interface(format!("cannot read {}", sys.join(file).display()))
            })
    };
    let ifindex = read_num("ifindex")?;
    let loopback = match read_num("type")? {
        ARPHRD_LOOPBACK => true,
        ARPHRD_ETHER => false,
        other => {
            return Err(CaptureError::Interface(format!(
                "interface {interface} has link type {other} (ARPHRD); only Ethernet and loopback are captured"
            )))
        }
    };
    let protocol = Protocol::from(i32::from(ETH_P_ALL.to_be()));
    let socket = Socket::new(Domain::PACKET, Type::RAW, Some(protocol)).map_err(|e| {
        match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => CaptureError::NoCapability(e),
            _ => CaptureError::Socket(e),
        }
    })?;
    let prog: Vec<SockFilter> = bpf::connection(local, peer, ifindex, loopback)
        .into_iter()
        .map(|i| SockFilter::new(i.code, i.jt, i.jf, i.k))
        .collect();
    socket.attach_filter(&prog).map_err(CaptureError::Socket)?;
    socket::setsockopt(&socket, sockopt::ReceiveTimestampns, &true)
        .map_err(|e| CaptureError::Socket(e.into()))?;
    // Best effort: the default buffer holds ~200 KiB.
    let _ = socket.set_recv_buffer_size(RECV_BUFFER);
    socket
        .set_read_timeout(Some(POLL))
        .map_err(CaptureError::Socket)?;
    let s = PacketSocket { socket, interface };
    // Frames that arrived between `socket` and the filter's attachment passed no filter.
    let mut scratch = vec![0u8; 2048];
    while let Ok(Some(_)) = s.recv_flags(&mut scratch, MsgFlags::MSG_DONTWAIT) {}
    Ok(s)
}

impl PacketSocket {
    /// The next packet, or `None` after [`POLL`] without one.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        self.recv_flags(buf, MsgFlags::empty())
    }

    fn recv_flags(&self, buf: &mut [u8], flags: MsgFlags) -> io::Result<Option<Received>> {
        let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
        let mut iov = [io::IoSliceMut::new(buf)];
        let r = socket::recvmsg::<()>(
            self.socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            flags | MsgFlags::MSG_TRUNC,
        );
        let msg = match r {
            Ok(m) => m,
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut ts_ns = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmTimestampns(t) = c {
                    let ns = i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec());
                    ts_ns = u64::try_from(ns).ok();
                }
            }
        }
        let original_len = msg.bytes;
        let len = original_len.min(buf.len());
        Ok(Some(Received {
            len,
            original_len,
            ts_ns: ts_ns.unwrap_or_else(super::now_ns),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_traffic_is_read_on_loopback_and_remote_on_its_interface() {
        let addrs = vec![
            IfAddr {
                name: "lo".into(),
                loopback: true,
                ip: Some("127.0.0.1".parse().unwrap()),
            },
            IfAddr {
                name: "lo".into(),
                loopback: true,
                ip: Some("::1".parse().unwrap()),
            },
            IfAddr {
                name: "eth0".into(),
                loopback: false,
                ip: Some("10.0.0.5".parse().unwrap()),
            },
            IfAddr {
                name: "eth0".into(),
                loopback: false,
                ip: None,
            },
        ];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            choose_interface(&addrs, ip("127.0.0.1"), ip("127.0.0.1")).as_deref(),
            Some("lo")
        );
        assert_eq!(
            choose_interface(&addrs, ip("::1"), ip("::1")).as_deref(),
            Some("lo")
        );
        // A node on this host connecting to the external address: over lo.
        assert_eq!(
            choose_interface(&addrs, ip("10.0.0.5"), ip("10.0.0.5")).as_deref(),
            Some("lo")
        );
        assert_eq!(
            choose_interface(&addrs, ip("10.0.0.5"), ip("10.0.0.9")).as_deref(),
            Some("eth0")
        );
        assert_eq!(
            choose_interface(&addrs, ip("10.9.9.9"), ip("10.0.0.9")),
            None
        );
    }
}
