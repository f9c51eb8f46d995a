//! The classic BPF program a TCP capture attaches to its `AF_PACKET` socket
//! (`SO_ATTACH_FILTER`), pure: it keeps the frames of one interface (the ancillary
//! `SKF_AD_IFINDEX` load; on loopback also dropping the `PACKET_OUTGOING` copy of each frame,
//! as libpcap does, so each packet is kept once) that carry TCP between the connection's two
//! endpoints, either way, over IPv4 or IPv6, and drops everything else in the kernel.
//! [`run`] interprets a program over a frame, for the tests.

use std::net::{IpAddr, SocketAddr};

use super::frame::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, PROTO_TCP};

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u16,
    /// Offset to jump to when true.
    pub jt: u8,
    /// Offset to jump to when false.
    pub jf: u8,
    /// Constant.
    pub k: u32,
}

const LD_W_ABS: u16 = 0x20;
const LD_H_ABS: u16 = 0x28;
const LD_B_ABS: u16 = 0x30;
const LD_H_IND: u16 = 0x48;
const LDX_B_MSH: u16 = 0xb1;
const JEQ_K: u16 = 0x15;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;

/// The kernel's ancillary data offset (`SKF_AD_OFF`, -0x1000).
const SKF_AD_OFF: u32 = 0xFFFF_F000;
const SKF_AD_PKTTYPE: u32 = 4;
const SKF_AD_IFINDEX: u32 = 8;
/// `PACKET_OUTGOING`.
pub const PACKET_OUTGOING: u32 = 4;

/// Where a jump goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum To {
    Next,
    Label(usize),
}

/// A program with symbolic jump targets.
struct Asm {
    code: Vec<(u16, To, To, u32)>,
    labels: Vec<Option<usize>>,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }
    fn here(&mut self, l: usize) {
        self.labels[l] = Some(self.code.len());
    }
    fn op(&mut self, code: u16, k: u32) {
        self.code.push((code, To::Next, To::Next, k));
    }
    fn jump(&mut self, code: u16, k: u32, jt: To, jf: To) {
        self.code.push((code, jt, jf, k));
    }
    /// Continue when A == k, else go to `fail`.
    fn expect(&mut self, k: u32, fail: usize) {
        self.jump(JEQ_K, k, To::Next, To::Label(fail));
    }
    fn finish(self) -> Vec<Insn> {
        let resolve = |i: usize, to: To| -> u8 {
            match to {
                To::Next => 0,
                To::Label(l) => {
                    let target = self.labels[l].expect("every label placed");
                    u8::try_from(target - i - 1).expect("jumps stay under 256 instructions")
                }
            }
        };
        self.code
            .iter()
            .enumerate()
            .map(|(i, &(code, jt, jf, k))| Insn {
                code,
                jt: resolve(i, jt),
                jf: resolve(i, jf),
                k,
            })
            .collect()
    }
}

/// Most bytes of a frame the filter keeps (tcpdump's default snapshot length).
pub const SNAPLEN: u32 = 262_144;

/// An IPv4-mapped IPv6 address (a dual-stack listener's view of an IPv4 peer) as the IPv4
/// address its packets carry.
pub fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// The words of an address, as the frame holds them (big-endian).
fn words(ip: IpAddr) -> Vec<u32> {
    match ip {
        IpAddr::V4(v4) => vec![u32::from(v4)],
        IpAddr::V6(v6) => v6
            .octets()
            .chunks(4)
            .map(|c| u32::from_be_bytes(c.try_into().expect("4 bytes")))
            .collect(),
    }
}

/// The filter of the TCP connection between `local` and `peer` (one family, after
/// [`canonical`]) on interface `ifindex`; `loopback` drops the outgoing copy of each frame.
pub fn connection(local: SocketAddr, peer: SocketAddr, ifindex: u32, loopback: bool) -> Vec<Insn> {
    let (local, peer) = (canonical(local), canonical(peer));
    let mut a = Asm {
        code: Vec::new(),
        labels: Vec::new(),
    };
    let drop = a.label();
    let accept = a.label();
    a.op(LD_W_ABS, SKF_AD_OFF + SKF_AD_IFINDEX);
    a.expect(ifindex, drop);
    if loopback {
        a.op(LD_W_ABS, SKF_AD_OFF + SKF_AD_PKTTYPE);
        a.jump(JEQ_K, PACKET_OUTGOING, To::Label(drop), To::Next);
    }
    a.op(LD_H_ABS, 12);
    let v6 = local.is_ipv6();
    // Address words and port loads per family: IPv4 ports follow a variable IP header
    // (X = its length), IPv6 ones a fixed 40 bytes (no extension headers: TCP directly).
    let (src_at, dst_at) = if v6 { (22u32, 38u32) } else { (26, 30) };
    if v6 {
        a.expect(u32::from(ETHERTYPE_IPV6), drop);
        a.op(LD_B_ABS, 20);
        a.expect(u32::from(PROTO_TCP), drop);
    } else {
        a.expect(u32::from(ETHERTYPE_IPV4), drop);
        a.op(LD_B_ABS, 23);
        a.expect(u32::from(PROTO_TCP), drop);
        // A later fragment has no TCP header.
        a.op(LD_H_ABS, 20);
        a.jump(JSET_K, 0x1fff, To::Label(drop), To::Next);
        a.op(LDX_B_MSH, 14);
    }
    let port = |a: &mut Asm, second: bool| {
        if v6 {
            a.op(LD_H_ABS, if second { 56 } else { 54 });
        } else {
            a.op(LD_H_IND, if second { 16 } else { 14 });
        }
    };
    // One direction: src = `from`, dst = `to`; on any mismatch go to `fail`.
    let direction = |a: &mut Asm, from: SocketAddr, to: SocketAddr, fail: usize| {
        for (i, w) in words(from.ip()).into_iter().enumerate() {
            a.op(LD_W_ABS, src_at + 4 * i as u32);
            a.expect(w, fail);
        }
        port(a, false);
        a.expect(u32::from(from.port()), fail);
        for (i, w) in words(to.ip()).into_iter().enumerate() {
            a.op(LD_W_ABS, dst_at + 4 * i as u32);
            a.expect(w, fail);
        }
        port(a, true);
        a.expect(u32::from(to.port()), fail);
        a.jump(JEQ_K, 0, To::Label(accept), To::Label(accept));
    };
    let other_way = a.label();
    direction(&mut a, local, peer, other_way);
    a.here(other_way);
    direction(&mut a, peer, local, drop);
    a.here(accept);
    a.op(RET_K, SNAPLEN);
    a.here(drop);
    a.op(RET_K, 0);
    a.finish()
}

/// What the kernel would know of a frame besides its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// The interface it was seen on.
    pub ifindex: u32,
    /// `PACKET_HOST` (0), `PACKET_OUTGOING` (4), ...
    pub pkttype: u32,
}

/// Runs `prog` over `frame` as the kernel would: the bytes it keeps (0: dropped). Loads past
/// the frame drop it, as in the kernel. Only the instructions [`connection`] emits exist.
pub fn run(prog: &[Insn], frame: &[u8], meta: Meta) -> u32 {
    let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
    let load = |at: u32, size: usize| -> Option<u32> {
        if at >= SKF_AD_OFF {
            return match at - SKF_AD_OFF {
                SKF_AD_PKTTYPE => Some(meta.pkttype),
                SKF_AD_IFINDEX => Some(meta.ifindex),
                _ => None,
            };
        }
        let at = at as usize;
        let b = frame.get(at..at + size)?;
        Some(b.iter().fold(0u32, |v, &byte| (v << 8) | u32::from(byte)))
    };
    while let Some(i) = prog.get(pc) {
        pc += 1;
        match i.code {
            LD_W_ABS | LD_H_ABS | LD_B_ABS => {
                let size = match i.code {
                    LD_W_ABS => 4,
                    LD_H_ABS => 2,
                    _ => 1,
                };
                match load(i.k, size) {
                    Some(v) => a = v,
                    None => return 0,
                }
            }
            LD_H_IND => match load(x.wrapping_add(i.k), 2) {
                Some(v) => a = v,
                None => return 0,
            },
            LDX_B_MSH => match frame.get(i.k as usize) {
                Some(b) => x = u32::from(b & 0x0f) * 4,
                None => return 0,
            },
            JEQ_K | JSET_K => {
                let yes = if i.code == JEQ_K {
                    a == i.k
                } else {
                    a & i.k != 0
                };
                pc += usize::from(if yes { i.jt } else { i.jf });
            }
            RET_K => return i.k,
            other => panic!("instruction {other:#x} not emitted by connection()"),
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::frame::build;

    const HOST: Meta = Meta {
        ifindex: 1,
        pkttype: 0,
    };

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn keeps_the_connection_both_ways_and_nothing_else() {
        for (local, peer, stranger) in [
            ("127.0.0.1:3179", "127.0.0.1:41000", "127.0.0.1:41001"),
            ("[::1]:3179", "[::1]:41000", "[::1]:41001"),
            (
                "[2001:db8::1]:3179",
                "[2001:db8::2]:41000",
                "[2001:db8::3]:41000",
            ),
        ] {
            let (l, p, s) = (addr(local), addr(peer), addr(stranger));
            let prog = connection(l, p, 1, true);
            assert!(prog.len() < 80, "{} instructions", prog.len());
            assert_eq!(run(&prog, &build(l, p, 0x18, b"x"), HOST), SNAPLEN);
            assert_eq!(run(&prog, &build(p, l, 0x10, b""), HOST), SNAPLEN);
            // Another connection to the same listener, in either direction.
            assert_eq!(run(&prog, &build(s, l, 0x02, b""), HOST), 0);
            assert_eq!(run(&prog, &build(l, s, 0x12, b""), HOST), 0);
            // The same ports swapped between two other addresses, and a port mix-up.
            assert_eq!(
                run(
                    &prog,
                    &build(
                        SocketAddr::new(l.ip(), p.port()),
                        SocketAddr::new(p.ip(), l.port()),
                        0x10,
                        b""
                    ),
                    HOST
                ),
                if l.ip() == p.ip() { SNAPLEN } else { 0 }
            );
            // The outgoing copy on loopback; another interface.
            assert_eq!(
                run(
                    &prog,
                    &build(l, p, 0x10, b""),
                    Meta {
                        ifindex: 1,
                        pkttype: PACKET_OUTGOING
                    }
                ),
                0
            );
            assert_eq!(
                run(
                    &prog,
                    &build(l, p, 0x10, b""),
                    Meta {
                        ifindex: 2,
                        pkttype: 0
                    }
                ),
                0
            );
            // Off loopback, outgoing frames are tracerd's own and kept.
            let eth = connection(l, p, 1, false);
            assert_eq!(
                run(
                    &eth,
                    &build(l, p, 0x10, b""),
                    Meta {
                        ifindex: 1,
                        pkttype: PACKET_OUTGOING
                    }
                ),
                SNAPLEN
            );
            // Truncated and non-IP frames.
            assert_eq!(run(&prog, &[0u8; 10], HOST), 0);
            assert_eq!(run(&prog, &build(l, p, 0x10, b"")[..30], HOST), 0);
        }
    }

    #[test]
    fn an_ipv4_mapped_peer_is_matched_as_ipv4_and_options_move_the_ports() {
        let (l, p) = (
            addr("[::ffff:127.0.0.1]:3179"),
            addr("[::ffff:127.0.0.1]:41000"),
        );
        let prog = connection(l, p, 1, true);
        let (l4, p4) = (addr("127.0.0.1:3179"), addr("127.0.0.1:41000"));
        assert_eq!(run(&prog, &build(p4, l4, 0x10, b""), HOST), SNAPLEN);
        // An IPv4 header with options (IHL 6): the ports are 4 bytes further.
        let mut f = build(p4, l4, 0x10, b"");
        f[14] = 0x46;
        f.splice(34..34, [1u8, 1, 1, 1]);
        assert_eq!(run(&prog, &f, HOST), SNAPLEN);
        // A later fragment of the same flow is not TCP-parsed.
        let mut frag = build(p4, l4, 0x10, b"");
        frag[21] = 0x10;
        assert_eq!(run(&prog, &frag, HOST), 0);
    }
}
