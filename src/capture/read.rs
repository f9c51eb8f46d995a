//! tracerd's reader of pcapng files, pure: the blocks of [`super::pcapng`] (and any other
//! block, skipped) back to values, either byte order, every problem with its offset. Used by
//! the tests and by `tracerd capture read FILE`.

use super::pcapng::{Direction, BYTE_ORDER_MAGIC, EPB, IDB, ISB, SHB};

/// Why a file is not the pcapng tracerd reads.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReadError {
    /// The file does not start with a Section Header Block.
    #[error("not a pcapng file: no Section Header Block at offset 0")]
    NotPcapng,
    /// A block runs past the end of the file (a capture cut short, or not one).
    #[error("block at offset {0} is truncated")]
    Truncated(usize),
    /// A block's length field is impossible (under 12, not a multiple of 4, or the trailing
    /// copy differs).
    #[error("block at offset {0} has a bad length")]
    BadLength(usize),
    /// A packet names an interface no Interface Description Block declared.
    #[error("packet at offset {offset} names interface {interface}, which is not described")]
    NoInterface {
        /// The block's offset.
        offset: usize,
        /// Its interface id.
        interface: u32,
    },
    /// A packet claims more captured bytes than its block holds.
    #[error("packet at offset {0} claims more data than its block holds")]
    BadPacket(usize),
}

/// One interface of a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// `LINKTYPE_*`.
    pub linktype: u16,
    /// Most bytes kept of a packet.
    pub snaplen: u32,
    /// `if_name`.
    pub name: String,
    /// `if_description`.
    pub description: String,
    /// Timestamp units per second (10^`if_tsresol`; 10^6 without the option).
    pub units_per_sec: u64,
}

/// One packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Its interface.
    pub interface: u32,
    /// Nanoseconds since the epoch.
    pub ts_ns: u64,
    /// What was kept.
    pub data: Vec<u8>,
    /// Its length on the wire.
    pub original_len: u32,
    /// `epb_flags` direction.
    pub direction: Option<Direction>,
}

/// One Interface Statistics Block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Statistics {
    /// `isb_ifrecv`.
    pub received: Option<u64>,
    /// `isb_ifdrop`.
    pub dropped: Option<u64>,
}

/// A whole capture file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capture {
    /// `shb_userappl`.
    pub application: String,
    /// The section's `opt_comment`.
    pub comment: String,
    /// Interfaces, by id.
    pub interfaces: Vec<Interface>,
    /// Packets, in file order.
    pub packets: Vec<Packet>,
    /// Statistics blocks, in file order.
    pub statistics: Vec<Statistics>,
}

struct Cursor<'a> {
    b: &'a [u8],
    le: bool,
}

impl Cursor<'_> {
    fn u16(&self, at: usize) -> Option<u16> {
        let s: [u8; 2] = self.b.get(at..at + 2)?.try_into().ok()?;
        Some(if self.le {
            u16::from_le_bytes(s)
        } else {
            u16::from_be_bytes(s)
        })
    }
    fn u32(&self, at: usize) -> Option<u32> {
        let s: [u8; 4] = self.b.get(at..at + 4)?.try_into().ok()?;
        Some(if self.le {
            u32::from_le_bytes(s)
        } else {
            u32::from_be_bytes(s)
        })
    }
    fn u64(&self, at: usize) -> Option<u64> {
        let s: [u8; 8] = self.b.get(at..at + 8)?.try_into().ok()?;
        Some(if self.le {
            u64::from_le_bytes(s)
        } else {
            u64::from_be_bytes(s)
        })
    }
    /// The options from `at` to `end`: (code, value).
    fn options(&self, mut at: usize, end: usize) -> Vec<(u16, &[u8])> {
        let mut out = Vec::new();
        while at + 4 <= end {
            let (Some(code), Some(len)) = (self.u16(at), self.u16(at + 2)) else {
                break;
            };
            if code == 0 {
                break;
            }
            let len = len as usize;
            let Some(value) = self
                .b
                .get(at + 4..at + 4 + len)
                .filter(|_| at + 4 + len <= end)
            else {
                break;
            };
            out.push((code, value));
            at += 4 + len + super::pcapng::pad(len);
        }
        out
    }
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

/// Reads a whole capture. A file cut in the middle of a block (tracerd stopped mid-write) is
/// an error naming the block's offset.
pub fn read(bytes: &[u8]) -> Result<Capture, ReadError> {
    let mut out = Capture::default();
    let mut at = 0usize;
    let mut c = Cursor { b: bytes, le: true };
    let mut seen_shb = false;
    while at < bytes.len() {
        let kind_le = bytes
            .get(at..at + 4)
            .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
            .ok_or(ReadError::Truncated(at))?;
        if kind_le == SHB {
            let magic = bytes.get(at + 8..at + 12).ok_or(ReadError::Truncated(at))?;
            c.le = match u32::from_le_bytes(magic.try_into().expect("4 bytes")) {
                BYTE_ORDER_MAGIC => true,
                m if m.swap_bytes() == BYTE_ORDER_MAGIC => false,
                _ => return Err(ReadError::NotPcapng),
            };
            seen_shb = true;
            out.interfaces.clear();
        } else if !seen_shb {
            return Err(ReadError::NotPcapng);
        }
        let kind = c.u32(at).ok_or(ReadError::Truncated(at))?;
        let len = c.u32(at + 4).ok_or(ReadError::Truncated(at))? as usize;
        if len < 12 || len % 4 != 0 {
            return Err(ReadError::BadLength(at));
        }
        let end = at.checked_add(len).ok_or(ReadError::BadLength(at))?;
        if end > bytes.len() {
            return Err(ReadError::Truncated(at));
        }
        if c.u32(end - 4) != Some(len as u32) {
            return Err(ReadError::BadLength(at));
        }
        let body_end = end - 4;
        match kind {
            SHB => {
                for (code, v) in c.options(at + 24, body_end) {
                    match code {
                        1 => out.comment = text(v),
                        4 => out.application = text(v),
                        _ => {}
                    }
                }
            }
            IDB => {
                let linktype = c.u16(at + 8).ok_or(ReadError::Truncated(at))?;
                let snaplen = c.u32(at + 12).ok_or(ReadError::Truncated(at))?;
                let mut iface = Interface {
                    linktype,
                    snaplen,
                    name: String::new(),
                    description: String::new(),
                    units_per_sec: 1_000_000,
                };
                for (code, v) in c.options(at + 16, body_end) {
                    match code {
                        2 => iface.name = text(v),
                        3 => iface.description = text(v),
                        9 => {
                            let r = v.first().copied().unwrap_or(6);
                            iface.units_per_sec = if r & 0x80 == 0 {
                                10u64.checked_pow(u32::from(r)).unwrap_or(u64::MAX)
                            } else {
                                1u64.checked_shl(u32::from(r & 0x7f)).unwrap_or(u64::MAX)
                            };
                        }
                        _ => {}
                    }
                }
                out.interfaces.push(iface);
            }
            EPB => {
                let field = |o: usize| c.u32(at + o).ok_or(ReadError::Truncated(at));
                let interface = field(8)?;
                let ts = (u64::from(field(12)?) << 32) | u64::from(field(16)?);
                let captured = field(20)? as usize;
                let original_len = field(24)?;
                let data_end = (at + 28)
                    .checked_add(captured)
                    .ok_or(ReadError::BadPacket(at))?;
                if data_end > body_end {
                    return Err(ReadError::BadPacket(at));
                }
                let iface =
                    out.interfaces
                        .get(interface as usize)
                        .ok_or(ReadError::NoInterface {
                            offset: at,
                            interface,
                        })?;
                let ts_ns = to_ns(ts, iface.units_per_sec);
                let mut direction = None;
                let opts_at = data_end + super::pcapng::pad(captured);
                for (code, v) in c.options(opts_at, body_end) {
                    if code == 2 && v.len() == 4 {
                        let flags = Cursor { b: v, le: c.le }.u32(0).unwrap_or(0);
                        direction = Direction::from_flags(flags);
                    }
                }
                out.packets.push(Packet {
                    interface,
                    ts_ns,
                    data: bytes[at + 28..data_end].to_vec(),
                    original_len,
                    direction,
                });
            }
            ISB => {
                let mut s = Statistics::default();
                for (code, v) in c.options(at + 20, body_end) {
                    let n = Cursor { b: v, le: c.le }.u64(0);
                    match code {
                        4 => s.received = n,
                        5 => s.dropped = n,
                        _ => {}
                    }
                }
                out.statistics.push(s);
            }
            _ => {}
        }
        at = end;
    }
    if !seen_shb {
        return Err(ReadError::NotPcapng);
    }
    Ok(out)
}

/// A timestamp in `units_per_sec` as nanoseconds.
fn to_ns(ts: u64, units_per_sec: u64) -> u64 {
    if units_per_sec == 1_000_000_000 {
        return ts;
    }
    let wide = u128::from(ts) * 1_000_000_000 / u128::from(units_per_sec.max(1));
    u64::try_from(wide).unwrap_or(u64::MAX)
}

/// The bytes of every packet of `direction` concatenated in file order: a Unix-socket
/// capture's stream as tracerd read it (inbound) or wrote it (outbound).
pub fn stream(capture: &Capture, direction: Direction) -> Vec<u8> {
    let mut out = Vec::new();
    for p in &capture.packets {
        if p.direction == Some(direction) {
            out.extend_from_slice(&p.data);
        }
    }
    out
}

/// One line per packet, as `tracerd capture read` prints it: number, time (RFC 3339, ns),
/// direction, bytes kept / on the wire, and for Ethernet frames the IP addresses, TCP ports,
/// flags, sequence and window.
pub fn describe(capture: &Capture) -> String {
    let mut out = String::new();
    for iface in &capture.interfaces {
        out.push_str(&format!(
            "# interface {} linktype {} snaplen {}{}{}\n",
            iface.name,
            iface.linktype,
            iface.snaplen,
            if iface.description.is_empty() {
                ""
            } else {
                ": "
            },
            iface.description
        ));
    }
    for (i, p) in capture.packets.iter().enumerate() {
        let mut time = String::new();
        crate::utc::push_rfc3339_nanos(&mut time, i64::try_from(p.ts_ns).unwrap_or(i64::MAX));
        let dir = match p.direction {
            Some(Direction::Inbound) => "in ",
            Some(Direction::Outbound) => "out",
            None => "-  ",
        };
        let linktype = capture
            .interfaces
            .get(p.interface as usize)
            .map_or(0, |i| i.linktype);
        let detail = if linktype == super::pcapng::LINKTYPE_ETHERNET {
            super::frame::summary(&p.data).unwrap_or_default()
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{:>6} {time} {dir} {}/{}{}{detail}\n",
            i + 1,
            p.data.len(),
            p.original_len,
            if detail.is_empty() { "" } else { " " },
        ));
    }
    for s in &capture.statistics {
        out.push_str(&format!(
            "# received {} dropped {}\n",
            s.received.map_or("-".into(), |n| n.to_string()),
            s.dropped.map_or("-".into(), |n| n.to_string())
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::pcapng;

    fn sample() -> Vec<u8> {
        let mut f = pcapng::section_header("tracerd test", "node n1");
        f.extend(pcapng::interface(
            pcapng::LINKTYPE_USER0,
            65536,
            "unix:/run/t.sock",
            "d",
        ));
        f.extend(pcapng::packet(
            1_764_612_000_123_456_789,
            b"hello",
            5,
            Some(Direction::Inbound),
        ));
        f.extend(pcapng::packet(
            1_764_612_000_223_456_789,
            b"abcd",
            9,
            Some(Direction::Outbound),
        ));
        f.extend(pcapng::packet(1_764_612_000_323_456_789, b"", 0, None));
        f.extend(pcapng::statistics(1, 2, 3, Some(4)));
        f
    }

    #[test]
    fn what_is_written_reads_back() {
        let bytes = sample();
        let c = read(&bytes).unwrap();
        assert_eq!(c.application, "tracerd test");
        assert_eq!(c.comment, "node n1");
        assert_eq!(c.interfaces.len(), 1);
        assert_eq!(c.interfaces[0].linktype, 147);
        assert_eq!(c.interfaces[0].name, "unix:/run/t.sock");
        assert_eq!(c.interfaces[0].units_per_sec, 1_000_000_000);
        assert_eq!(c.packets.len(), 3);
        assert_eq!(c.packets[0].ts_ns, 1_764_612_000_123_456_789);
        assert_eq!(c.packets[0].data, b"hello");
        assert_eq!(c.packets[1].original_len, 9);
        assert_eq!(c.packets[1].direction, Some(Direction::Outbound));
        assert_eq!(c.packets[2].direction, None);
        assert_eq!(
            c.statistics,
            vec![Statistics {
                received: Some(3),
                dropped: Some(4)
            }]
        );
        assert_eq!(stream(&c, Direction::Inbound), b"hello");
        // Every block is a multiple of 4 bytes long, and the lengths the writer promises hold.
        assert_eq!(
            pcapng::packet(0, b"abcde", 5, Some(Direction::Inbound)).len(),
            pcapng::packet_len(5)
        );
        assert_eq!(
            pcapng::statistics(0, 0, 0, Some(0)).len(),
            pcapng::STATISTICS_LEN
        );
        assert_eq!(bytes.len() % 4, 0);
    }

    #[test]
    fn a_cut_file_names_the_block_and_strangers_are_refused() {
        let bytes = sample();
        let cut = &bytes[..bytes.len() - 10];
        assert!(matches!(read(cut), Err(ReadError::Truncated(_))));
        assert_eq!(read(b"GET / HTTP/1.1\r\n\r\n"), Err(ReadError::NotPcapng));
        assert_eq!(read(&[]), Err(ReadError::NotPcapng));
        let mut bad = bytes.clone();
        bad[4] = 13; // the SHB's length is no multiple of 4
        assert_eq!(read(&bad), Err(ReadError::BadLength(0)));
        // A packet before any interface is described.
        let mut f = pcapng::section_header("x", "");
        f.extend(pcapng::packet(0, b"x", 1, None));
        assert!(matches!(read(&f), Err(ReadError::NoInterface { .. })));
    }

    #[test]
    fn big_endian_sections_and_microsecond_interfaces_read() {
        // A big-endian SHB + IDB (no if_tsresol: microseconds) + EPB, as another tool writes.
        let mut f = Vec::new();
        let be = |v: u32| v.to_be_bytes();
        f.extend(be(SHB));
        f.extend(be(28));
        f.extend(be(BYTE_ORDER_MAGIC));
        f.extend(1u16.to_be_bytes());
        f.extend(0u16.to_be_bytes());
        f.extend(u64::MAX.to_be_bytes());
        f.extend(be(28));
        f.extend(be(IDB));
        f.extend(be(20));
        f.extend(1u16.to_be_bytes());
        f.extend(0u16.to_be_bytes());
        f.extend(be(1500));
        f.extend(be(20));
        f.extend(be(EPB));
        f.extend(be(36));
        f.extend(be(0));
        f.extend(be(0));
        f.extend(be(1_500_000));
        f.extend(be(4));
        f.extend(be(4));
        f.extend(b"ABCD");
        f.extend(be(36));
        let c = read(&f).unwrap();
        assert_eq!(c.packets[0].ts_ns, 1_500_000_000);
        assert_eq!(c.packets[0].data, b"ABCD");
    }
}
