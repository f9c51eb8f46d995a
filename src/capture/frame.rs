//! Reading an Ethernet frame's IP and TCP headers, pure: for `tracerd capture read`'s lines
//! and the filter's tests. IPv4 and IPv6 (no extension headers), TCP only.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Length of the Ethernet header `AF_PACKET` `SOCK_RAW` frames start with.
pub const ETHERNET_HEADER: usize = 14;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86DD;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;

/// The TCP segment a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Flags (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10).
    pub flags: u8,
    /// Advertised window (unscaled).
    pub window: u16,
    /// Payload bytes in this frame.
    pub payload: usize,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The TCP segment of an Ethernet frame, if it carries one.
pub fn segment(frame: &[u8]) -> Option<Segment> {
    let ip = ETHERNET_HEADER;
    let (src, dst, tcp, end) = match be16(frame, 12)? {
        ETHERTYPE_IPV4 => {
            let ihl = usize::from(frame.get(ip)? & 0x0f) * 4;
            if *frame.get(ip + 9)? != PROTO_TCP || ihl < 20 {
                return None;
            }
            let total = usize::from(be16(frame, ip + 2)?);
            let a = |o: usize| -> Option<IpAddr> {
                let b: [u8; 4] = frame.get(ip + o..ip + o + 4)?.try_into().ok()?;
                Some(IpAddr::V4(Ipv4Addr::from(b)))
            };
            (a(12)?, a(16)?, ip + ihl, ip + total)
        }
        ETHERTYPE_IPV6 => {
            if *frame.get(ip + 6)? != PROTO_TCP {
                return None;
            }
            let payload = usize::from(be16(frame, ip + 4)?);
            let a = |o: usize| -> Option<IpAddr> {
                let b: [u8; 16] = frame.get(ip + o..ip + o + 16)?.try_into().ok()?;
                Some(IpAddr::V6(Ipv6Addr::from(b)))
            };
            (a(8)?, a(24)?, ip + 40, ip + 40 + payload)
        }
        _ => return None,
    };
    let data_off = usize::from(frame.get(tcp + 12)? >> 4) * 4;
    Some(Segment {
        src: SocketAddr::new(src, be16(frame, tcp)?),
        dst: SocketAddr::new(dst, be16(frame, tcp + 2)?),
        seq: be32(frame, tcp + 4)?,
        ack: be32(frame, tcp + 8)?,
        flags: *frame.get(tcp + 13)?,
        window: be16(frame, tcp + 14)?,
        payload: end.saturating_sub(tcp + data_off),
    })
}

/// `src > dst [SA.] seq 1 ack 2 win 3 len 4`, tcpdump's way.
pub fn summary(frame: &[u8]) -> Option<String> {
    let s = segment(frame)?;
    let mut flags = String::new();
    for (bit, c) in [
        (0x02, 'S'),
        (0x01, 'F'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x10, '.'),
    ] {
        if s.flags & bit != 0 {
            flags.push(c);
        }
    }
    Some(format!(
        "{} > {} [{flags}] seq {} ack {} win {} len {}",
        s.src, s.dst, s.seq, s.ack, s.window, s.payload
    ))
}

/// Test frames: an Ethernet frame carrying a TCP segment from `src` to `dst` (both of one
/// family) with `payload` bytes.
#[cfg(test)]
pub fn build(src: SocketAddr, dst: SocketAddr, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut tcp = Vec::new();
    tcp.extend(src.port().to_be_bytes());
    tcp.extend(dst.port().to_be_bytes());
    tcp.extend(7u32.to_be_bytes());
    tcp.extend(9u32.to_be_bytes());
    tcp.push(5 << 4);
    tcp.push(flags);
    tcp.extend(65535u16.to_be_bytes());
    tcp.extend([0, 0, 0, 0]);
    tcp.extend(payload);
    let mut f = vec![0u8; 12];
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend(ETHERTYPE_IPV4.to_be_bytes());
            f.extend([0x45, 0]);
            f.extend(((20 + tcp.len()) as u16).to_be_bytes());
            f.extend([0, 0, 0x40, 0, 64, PROTO_TCP, 0, 0]);
            f.extend(s.octets());
            f.extend(d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend(ETHERTYPE_IPV6.to_be_bytes());
            f.extend([0x60, 0, 0, 0]);
            f.extend((tcp.len() as u16).to_be_bytes());
            f.extend([PROTO_TCP, 64]);
            f.extend(s.octets());
            f.extend(d.octets());
        }
        _ => panic!("one family"),
    }
    f.extend(tcp);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_of_both_families_read_back() {
        for (a, b) in [
            ("127.0.0.1:3179", "127.0.0.1:40000"),
            ("[::1]:3179", "[2001:db8::7]:40000"),
        ] {
            let (a, b): (SocketAddr, SocketAddr) = (a.parse().unwrap(), b.parse().unwrap());
            let f = build(a, b, 0x18, b"hello");
            let s = segment(&f).unwrap();
            assert_eq!(
                (s.src, s.dst, s.flags, s.payload, s.window),
                (a, b, 0x18, 5, 65535)
            );
            assert!(summary(&f).unwrap().contains("[P.]"));
        }
        assert_eq!(segment(&[0u8; 20]), None);
    }
}
