//! The pcapng writer, pure: the blocks a capture file is made of, each returned as bytes
//! (little-endian, as the section's byte-order magic says). A file is one Section Header Block,
//! one Interface Description Block (with `if_tsresol = 9`: timestamps are nanoseconds since
//! the Unix epoch), Enhanced Packet Blocks, and an Interface Statistics Block at the end.
//! Format: draft-ietf-opsawg-pcapng (sections 4.1, 4.2, 4.3, 4.6).

/// `LINKTYPE_ETHERNET` (DLT_EN10MB): Linux loopback and Ethernet frames, as an `AF_PACKET`
/// `SOCK_RAW` socket reads them (the loopback device carries a 14-byte Ethernet header with
/// zero addresses).
pub const LINKTYPE_ETHERNET: u16 = 1;
/// `LINKTYPE_USER0`: a Unix-socket connection's bytes, one block per read or write of
/// tracerd, the direction in `epb_flags` (see [`Direction`]).
pub const LINKTYPE_USER0: u16 = 147;

/// Block types.
pub const SHB: u32 = 0x0A0D_0D0A;
/// Interface Description Block.
pub const IDB: u32 = 1;
/// Interface Statistics Block.
pub const ISB: u32 = 5;
/// Enhanced Packet Block.
pub const EPB: u32 = 6;
/// The byte-order magic of a Section Header Block.
pub const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

/// Option codes used here.
const OPT_ENDOFOPT: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_DESCRIPTION: u16 = 3;
const IF_TSRESOL: u16 = 9;
const EPB_FLAGS: u16 = 2;
const ISB_STARTTIME: u16 = 2;
const ISB_ENDTIME: u16 = 3;
const ISB_IFRECV: u16 = 4;
const ISB_IFDROP: u16 = 5;

/// Bytes an Enhanced Packet Block adds to its data (header, `epb_flags`, end of options,
/// trailer), before the data's padding to 4 bytes.
pub const EPB_OVERHEAD: usize = 28 + 8 + 4 + 4;

/// A packet's direction as `epb_flags` bits 0-1 say it (1 inbound, 2 outbound): for a
/// Unix-socket capture, inbound is what tracerd read from the node, outbound what it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Towards tracerd.
    Inbound,
    /// From tracerd.
    Outbound,
}

impl Direction {
    /// The `epb_flags` value.
    pub fn flags(self) -> u32 {
        match self {
            Direction::Inbound => 1,
            Direction::Outbound => 2,
        }
    }

    /// The direction `epb_flags` bits 0-1 give, if any.
    pub fn from_flags(flags: u32) -> Option<Direction> {
        match flags & 3 {
            1 => Some(Direction::Inbound),
            2 => Some(Direction::Outbound),
            _ => None,
        }
    }
}

/// Builds one block: type, total length, body, total length again.
struct Block {
    buf: Vec<u8>,
}

impl Block {
    fn new(kind: u32) -> Block {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&kind.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        Block { buf }
    }

    fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Bytes padded to 32 bits.
    fn padded(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self.buf.resize(self.buf.len() + pad(bytes.len()), 0);
        self
    }

    /// One option (code, length, value padded to 32 bits); values over 65535 bytes are cut.
    fn option(&mut self, code: u16, value: &[u8]) -> &mut Self {
        let value = &value[..value.len().min(u16::MAX as usize)];
        self.u16(code).u16(value.len() as u16).padded(value)
    }

    fn finish(mut self) -> Vec<u8> {
        let total = (self.buf.len() + 4) as u32;
        self.buf[4..8].copy_from_slice(&total.to_le_bytes());
        self.buf.extend_from_slice(&total.to_le_bytes());
        self.buf
    }
}

/// Padding after `len` bytes to the next multiple of 4.
pub fn pad(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// The Section Header Block: version 1.0, section length unknown (-1), `shb_userappl` and a
/// comment saying what was captured.
pub fn section_header(application: &str, comment: &str) -> Vec<u8> {
    let mut b = Block::new(SHB);
    b.u32(BYTE_ORDER_MAGIC).u16(1).u16(0).u64(u64::MAX);
    b.option(SHB_USERAPPL, application.as_bytes());
    if !comment.is_empty() {
        b.option(OPT_COMMENT, comment.as_bytes());
    }
    b.u16(OPT_ENDOFOPT).u16(0);
    b.finish()
}

/// An Interface Description Block of `linktype`, keeping at most `snaplen` bytes of a
/// packet, named `name` (`if_name`), with timestamps in nanoseconds (`if_tsresol = 9`).
pub fn interface(linktype: u16, snaplen: u32, name: &str, description: &str) -> Vec<u8> {
    let mut b = Block::new(IDB);
    b.u16(linktype).u16(0).u32(snaplen);
    b.option(IF_NAME, name.as_bytes());
    if !description.is_empty() {
        b.option(IF_DESCRIPTION, description.as_bytes());
    }
    b.option(IF_TSRESOL, &[9]);
    b.u16(OPT_ENDOFOPT).u16(0);
    b.finish()
}

/// An Enhanced Packet Block on interface 0: `data` (what was kept of it), the packet's
/// original length, its time in nanoseconds since the epoch, and its direction when known.
pub fn packet(ts_ns: u64, data: &[u8], original_len: u32, direction: Option<Direction>) -> Vec<u8> {
    let mut b = Block::new(EPB);
    b.u32(0)
        .u32((ts_ns >> 32) as u32)
        .u32(ts_ns as u32)
        .u32(data.len() as u32)
        .u32(original_len);
    b.padded(data);
    if let Some(d) = direction {
        b.option(EPB_FLAGS, &d.flags().to_le_bytes());
    }
    b.u16(OPT_ENDOFOPT).u16(0);
    b.finish()
}

/// The length of [`packet`]'s block for `len` bytes of data with a direction.
pub fn packet_len(len: usize) -> usize {
    EPB_OVERHEAD + len + pad(len)
}

/// The Interface Statistics Block of interface 0 at `end_ns`: the capture's start and end,
/// packets received (`isb_ifrecv`) and, when known, dropped before they were written
/// (`isb_ifdrop`).
pub fn statistics(start_ns: u64, end_ns: u64, received: u64, dropped: Option<u64>) -> Vec<u8> {
    let mut b = Block::new(ISB);
    b.u32(0).u32((end_ns >> 32) as u32).u32(end_ns as u32);
    let ts = |ns: u64| {
        let mut v = Vec::with_capacity(8);
        v.extend_from_slice(&((ns >> 32) as u32).to_le_bytes());
        v.extend_from_slice(&(ns as u32).to_le_bytes());
        v
    };
    b.option(ISB_STARTTIME, &ts(start_ns));
    b.option(ISB_ENDTIME, &ts(end_ns));
    b.option(ISB_IFRECV, &received.to_le_bytes());
    if let Some(d) = dropped {
        b.option(ISB_IFDROP, &d.to_le_bytes());
    }
    b.u16(OPT_ENDOFOPT).u16(0);
    b.finish()
}

/// Most bytes [`statistics`] takes.
pub const STATISTICS_LEN: usize = 12 + 8 + 4 * 12 + 4 + 4;
