//! The Ouroboros mux as the forwarding protocols use it: 8-byte SDU headers with the mode bit
//! of the sending side, and per-mini-protocol reassembly of CBOR messages that may be split
//! across SDUs or share one SDU (reference §3).
//!
//! [`MuxCodec`] is a pure `tokio_util` codec: its decoder turns any sequence of read chunks
//! into whole messages `(mini-protocol, CBOR item)`, its encoder cuts one message into SDUs of
//! at most [`MAX_SEND_SDU`] payload bytes. A [`Splitter`] finds the end of a CBOR item
//! incrementally, so every byte is scanned once however the item is cut into SDUs.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::index::{self, Step, TraceIndex, MAX_INDEXED};

/// Length of an SDU header.
pub const HEADER_LEN: usize = 8;
/// Largest SDU payload tracerd sends (what cardano-node sends on socket bearers).
pub const MAX_SEND_SDU: usize = 12_288;
/// Deepest CBOR nesting accepted; the forwarding messages nest at most 6 levels.
pub const MAX_DEPTH: usize = 32;
/// Mini-protocol numbers: handshake, EKG metrics, trace objects, data points.
pub const HANDSHAKE: u16 = 0;
/// EKG metrics.
pub const EKG: u16 = 1;
/// Trace objects.
pub const TRACE_OBJECTS: u16 = 2;
/// Data points.
pub const DATA_POINTS: u16 = 3;

/// The connection role: who opened the socket. It decides the mode bit of every SDU sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Opened the connection and proposes the handshake; sends with M = 0.
    Initiator,
    /// Accepted the connection; sends with M = 1.
    Responder,
}

impl Mode {
    /// The mode bit as it appears in the 16-bit protocol word.
    pub fn bit(self) -> u16 {
        match self {
            Mode::Initiator => 0,
            Mode::Responder => 0x8000,
        }
    }

    /// The other side's mode.
    pub fn peer(self) -> Mode {
        match self {
            Mode::Initiator => Mode::Responder,
            Mode::Responder => Mode::Initiator,
        }
    }
}

/// An SDU header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Sender's clock, microseconds, low 32 bits; informative only.
    pub timestamp: u32,
    /// Mode of the sender.
    pub mode: Mode,
    /// Mini-protocol number (15 bits).
    pub protocol: u16,
    /// Payload length.
    pub len: u16,
}

impl Header {
    /// Parses 8 header bytes.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Header {
        let word = u16::from_be_bytes([b[4], b[5]]);
        Header {
            timestamp: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            mode: if word & 0x8000 == 0 {
                Mode::Initiator
            } else {
                Mode::Responder
            },
            protocol: word & 0x7fff,
            len: u16::from_be_bytes([b[6], b[7]]),
        }
    }

    /// The 8 header bytes.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..4].copy_from_slice(&self.timestamp.to_be_bytes());
        out[4..6].copy_from_slice(&((self.protocol & 0x7fff) | self.mode.bit()).to_be_bytes());
        out[6..].copy_from_slice(&self.len.to_be_bytes());
        out
    }
}

/// What can be wrong with the byte stream below the messages.
#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    /// Reading or writing the socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// An SDU with payload length 0.
    #[error("SDU with an empty payload on mini-protocol {0}")]
    EmptySdu(u16),
    /// An SDU carrying the mode bit of our own side.
    #[error(
        "SDU on mini-protocol {protocol} carries the sender mode {mode:?}, expected the peer's"
    )]
    WrongMode {
        /// Mini-protocol.
        protocol: u16,
        /// The mode found.
        mode: Mode,
    },
    /// An SDU for a mini-protocol that is not running.
    #[error("SDU for mini-protocol {0}, which is not running")]
    UnknownProtocol(u16),
    /// A message outgrew the reassembly bound.
    #[error("message on mini-protocol {protocol} exceeds {limit} bytes")]
    MessageTooLarge {
        /// Mini-protocol.
        protocol: u16,
        /// The bound.
        limit: usize,
    },
    /// The bytes are not well-formed CBOR.
    #[error("malformed CBOR on mini-protocol {protocol}: {reason}")]
    Cbor {
        /// Mini-protocol.
        protocol: u16,
        /// What is wrong.
        reason: &'static str,
    },
}

impl MuxError {
    /// A bounded label for `decode_errors` and `connections_closed`.
    pub fn kind(&self) -> &'static str {
        match self {
            MuxError::Io(_) => "io_error",
            MuxError::EmptySdu(_) => "sdu_empty",
            MuxError::WrongMode { .. } => "sdu_wrong_mode",
            MuxError::UnknownProtocol(_) => "unknown_mini_protocol",
            MuxError::MessageTooLarge { .. } => "message_too_large",
            MuxError::Cbor { .. } => "cbor_malformed",
        }
    }
}

/// One whole mini-protocol message: a single CBOR data item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Mini-protocol number.
    pub protocol: u16,
    /// The CBOR item.
    pub payload: Bytes,
}

/// What is still open in the item being scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    /// A definite array or map with this many items left.
    Items(u64),
    /// An indefinite array or map, closed by a break.
    Indefinite,
    /// An indefinite byte (2) or text (3) string: definite chunks of that major type, then a break.
    Chunks(u8),
}

/// Incremental CBOR item splitter: finds where the first complete item of a buffer ends,
/// resuming where it stopped when more bytes arrive. Only structure is checked here; what the
/// item means is the codec's business.
///
/// A splitter for trace replies ([`Splitter::for_trace_replies`]) also reads the objects of
/// a `MsgTraceObjectsReply` of the common shape as it passes them ([`index`]): the record of
/// the last item found ([`Splitter::take_index`]) lets the decoder build the objects without
/// walking the heads a second time.
#[derive(Debug, Default)]
pub struct Splitter {
    pos: usize,
    open: Vec<Open>,
    /// Whether items are read as trace replies.
    traces: bool,
    /// The record of the reply being scanned; `None` once something is not the common shape.
    index: Option<TraceIndex>,
    /// The record of the item last found.
    found: Option<TraceIndex>,
    /// How many objects the last record held: the next one is reserved at that size (one
    /// allocation per reply, not growth by doubling; nothing kept between replies).
    last_count: usize,
}

/// The splitter found bytes that are not well-formed CBOR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl Splitter {
    /// A splitter that also records the objects of trace replies (see [`Splitter`]).
    pub fn for_trace_replies() -> Splitter {
        Splitter {
            traces: true,
            index: Some(TraceIndex::new()),
            ..Splitter::default()
        }
    }

    /// The record of the item the last [`Splitter::scan`] found, when it is a trace reply
    /// whose every object has the common shape ([`index`]).
    pub fn take_index(&mut self) -> Option<TraceIndex> {
        self.found.take()
    }

    /// Scans `buf` (which only grows between calls, until an item is taken) and returns the
    /// length of the first complete item, or `None` when more bytes are needed.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, Malformed> {
        // The position lives in a local while scanning (written back when more bytes are
        // needed), and an argument below 24 — most heads of a trace object — is read
        // without the multi-byte path.
        let mut pos = self.pos;
        loop {
            let Some(&initial) = buf.get(pos) else {
                self.pos = pos;
                return Ok(None);
            };
            if self.traces {
                if let Some(index) = &mut self.index {
                    if self.open.len() == 2 && buf.get(..3) == Some(&[0x82, 0x03, 0x9f][..]) {
                        // Inside the reply's list: an object, or its end.
                        if initial == 0x89 && index.end == pos && index.objects.len() < MAX_INDEXED
                        {
                            match index::read_object(buf, pos) {
                                Step::Object(spans, end) => {
                                    if index.objects.capacity() == 0 {
                                        index
                                            .objects
                                            .reserve(self.last_count.clamp(1, MAX_INDEXED));
                                    }
                                    index.objects.push(spans);
                                    index.end = end;
                                    pos = end;
                                    // The objects that follow, without the checks above
                                    // (they still hold); anything else is for them again.
                                    while buf.get(pos) == Some(&0x89)
                                        && index.objects.len() < MAX_INDEXED
                                    {
                                        let Step::Object(spans, end) = index::read_object(buf, pos)
                                        else {
                                            break;
                                        };
                                        index.objects.push(spans);
                                        index.end = end;
                                        pos = end;
                                    }
                                    continue;
                                }
                                Step::Partial => {
                                    self.pos = pos;
                                    return Ok(None);
                                }
                                Step::Other => self.index = None,
                            }
                        } else if initial != 0xff || index.end != pos {
                            self.index = None;
                        }
                    } else if pos >= 3 {
                        self.index = None;
                    }
                }
            }
            let major = initial >> 5;
            let info = initial & 0x1f;
            let (arg, head) = if info < 24 {
                (u64::from(info), 1)
            } else {
                let extra = match info {
                    24 => 1,
                    25 => 2,
                    26 => 4,
                    27 => 8,
                    28..=30 => return Err(Malformed("reserved additional information")),
                    _ => 0,
                };
                let Some(bytes) = buf.get(pos + 1..pos + 1 + extra) else {
                    self.pos = pos;
                    return Ok(None);
                };
                let arg = if extra == 0 {
                    u64::from(info)
                } else {
                    bytes.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b))
                };
                (arg, 1 + extra)
            };
            let indefinite = info == 31;
            if let Some(Open::Chunks(m)) = self.open.last() {
                let is_break = initial == 0xff;
                if !is_break && (major != *m || indefinite) {
                    return Err(Malformed("bad chunk in an indefinite-length string"));
                }
            }
            match major {
                0 | 1 => {
                    if indefinite {
                        return Err(Malformed("indefinite integer"));
                    }
                    pos += head;
                }
                2 | 3 => {
                    if indefinite {
                        self.push(Open::Chunks(major))?;
                        pos += head;
                        continue;
                    }
                    let len = usize::try_from(arg).map_err(|_| Malformed("string too long"))?;
                    let end = (pos + head)
                        .checked_add(len)
                        .ok_or(Malformed("string too long"))?;
                    if buf.len() < end {
                        self.pos = pos;
                        return Ok(None);
                    }
                    pos = end;
                }
                4 | 5 => {
                    pos += head;
                    if indefinite {
                        self.push(Open::Indefinite)?;
                        continue;
                    }
                    let items = if major == 5 {
                        arg.saturating_mul(2)
                    } else {
                        arg
                    };
                    if items > 0 {
                        self.push(Open::Items(items))?;
                        continue;
                    }
                }
                6 => {
                    if indefinite {
                        return Err(Malformed("indefinite tag"));
                    }
                    // A tag is followed by its content, which completes the item.
                    pos += head;
                    continue;
                }
                _ => {
                    if initial == 0xff {
                        match self.open.pop() {
                            Some(Open::Indefinite) | Some(Open::Chunks(_)) => {}
                            _ => return Err(Malformed("unexpected break")),
                        }
                        pos += 1;
                    } else if indefinite {
                        return Err(Malformed("reserved simple value"));
                    } else {
                        pos += head;
                    }
                }
            }
            // One item completed: account for it in the enclosing containers.
            loop {
                match self.open.last_mut() {
                    None => {
                        self.pos = 0;
                        if self.traces {
                            self.found = self.index.replace(TraceIndex::new());
                            if let Some(found) = &self.found {
                                self.last_count = found.objects.len();
                            }
                        }
                        return Ok(Some(pos));
                    }
                    Some(Open::Items(n)) => {
                        *n -= 1;
                        if *n == 0 {
                            self.open.pop();
                            continue;
                        }
                        break;
                    }
                    Some(Open::Indefinite) | Some(Open::Chunks(_)) => break,
                }
            }
        }
    }

    fn push(&mut self, open: Open) -> Result<(), Malformed> {
        if self.open.len() >= MAX_DEPTH {
            return Err(Malformed("nested too deeply"));
        }
        self.open.push(open);
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Channel {
    buf: BytesMut,
    splitter: Splitter,
    /// When the SDU holding the start of the message being assembled was decoded.
    first: Option<Timing>,
    /// The length of the last message taken: a new message's buffer is reserved at that
    /// size, so a reply of many SDUs is assembled in one allocation, not grown by doubling.
    last_len: usize,
}

/// When a message's first SDU arrived: for round-trip times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// When the decoder saw the SDU (bytes are decoded as soon as they are read).
    pub received: Instant,
    /// The SDU header's timestamp: the lower 32 bits of the sender's monotonic clock in
    /// microseconds when it sent the SDU (network-mux's `RemoteClockModel`).
    pub remote_micros: u32,
}

/// Mux codec of one connection.
#[derive(Debug)]
pub struct MuxCodec {
    local: Mode,
    max_message: usize,
    handshake: bool,
    channels: [Channel; 4],
    ready: VecDeque<(Message, Option<Timing>, Option<TraceIndex>)>,
    started: Instant,
    /// The timing of the message `decode` returned last.
    last_timing: Option<Timing>,
    /// The record of the trace reply `decode` returned last (see [`Splitter`]).
    last_index: Option<TraceIndex>,
}

impl MuxCodec {
    /// A codec for the side `local`, reassembling messages of at most `max_message` bytes.
    /// The handshake mini-protocol is open until [`MuxCodec::end_handshake`].
    pub fn new(local: Mode, max_message: usize) -> MuxCodec {
        let mut channels: [Channel; 4] = Default::default();
        channels[usize::from(TRACE_OBJECTS)].splitter = Splitter::for_trace_replies();
        MuxCodec {
            local,
            max_message,
            handshake: true,
            channels,
            ready: VecDeque::new(),
            started: Instant::now(),
            last_timing: None,
            last_index: None,
        }
    }

    /// The record of the objects of the trace reply `decode` returned last, when every one
    /// has the common shape ([`index`]): decode the reply with [`index::decode_reply`].
    pub fn take_trace_index(&mut self) -> Option<TraceIndex> {
        self.last_index.take()
    }

    /// Closes mini-protocol 0: from now on an SDU for it ends the connection, as in the mux.
    pub fn end_handshake(&mut self) {
        self.handshake = false;
    }

    /// This side's mode.
    pub fn mode(&self) -> Mode {
        self.local
    }

    /// The header of an SDU of `len` payload bytes on `protocol` sent now, as the encoder
    /// writes it (this side's mode, its clock): for a sender that writes SDUs itself.
    pub fn sdu_header(&self, protocol: u16, len: u16) -> [u8; HEADER_LEN] {
        Header {
            timestamp: self.started.elapsed().as_micros() as u32,
            mode: self.local,
            protocol,
            len,
        }
        .to_bytes()
    }

    /// When the first SDU of the message `decode` returned last arrived, and its timestamp.
    pub fn last_timing(&self) -> Option<Timing> {
        self.last_timing
    }
}

impl Decoder for MuxCodec {
    type Item = Message;
    type Error = MuxError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, MuxError> {
        loop {
            if let Some((m, timing, index)) = self.ready.pop_front() {
                self.last_timing = timing;
                self.last_index = index;
                return Ok(Some(m));
            }
            let Some(head) = src.get(..HEADER_LEN) else {
                src.reserve(HEADER_LEN - src.len());
                return Ok(None);
            };
            let mut bytes = [0u8; HEADER_LEN];
            bytes.copy_from_slice(head);
            let header = Header::parse(&bytes);
            let protocol = header.protocol;
            let running = matches!(protocol, EKG | TRACE_OBJECTS | DATA_POINTS)
                || (protocol == HANDSHAKE && self.handshake);
            if !running {
                return Err(MuxError::UnknownProtocol(protocol));
            }
            // As in network-mux, the handshake does not look at the mode bit.
            if header.mode != self.local.peer() && protocol != HANDSHAKE {
                return Err(MuxError::WrongMode {
                    protocol,
                    mode: header.mode,
                });
            }
            if header.len == 0 {
                return Err(MuxError::EmptySdu(protocol));
            }
            let len = usize::from(header.len);
            let channel = &mut self.channels[usize::from(protocol)];
            if channel.buf.len() + len > self.max_message {
                return Err(MuxError::MessageTooLarge {
                    protocol,
                    limit: self.max_message,
                });
            }
            if src.len() < HEADER_LEN + len {
                src.reserve(HEADER_LEN + len - src.len());
                return Ok(None);
            }
            src.advance(HEADER_LEN);
            let this_sdu = Timing {
                received: Instant::now(),
                remote_micros: header.timestamp,
            };
            if channel.buf.is_empty() {
                channel.first = Some(this_sdu);
                // With a little room over the last one's length: the next reply of as many
                // objects is rarely exactly as long, and growing the buffer copies it.
                let room = channel.last_len + channel.last_len / 16;
                channel
                    .buf
                    .reserve(room.clamp(len, self.max_message.max(len)));
            }
            channel.buf.extend_from_slice(&src[..len]);
            src.advance(len);
            loop {
                match channel.splitter.scan(&channel.buf) {
                    Ok(Some(n)) => {
                        let message = Message {
                            protocol,
                            payload: channel.buf.split_to(n).freeze(),
                        };
                        let index = channel.splitter.take_index();
                        self.ready.push_back((message, channel.first, index));
                        channel.last_len = n;
                        if channel.buf.is_empty() {
                            // Let go of the taken message's allocation (the message keeps
                            // it alive only as long as its objects live).
                            channel.buf = BytesMut::new();
                        }
                        // What is left began in this SDU.
                        channel.first = (!channel.buf.is_empty()).then_some(this_sdu);
                    }
                    Ok(None) => break,
                    Err(Malformed(reason)) => return Err(MuxError::Cbor { protocol, reason }),
                }
            }
        }
    }
}

impl Encoder<Message> for MuxCodec {
    type Error = MuxError;

    fn encode(&mut self, msg: Message, dst: &mut BytesMut) -> Result<(), MuxError> {
        let timestamp = self.started.elapsed().as_micros() as u32;
        for chunk in msg.payload.chunks(MAX_SEND_SDU) {
            let header = Header {
                timestamp,
                mode: self.local,
                protocol: msg.protocol,
                len: chunk.len() as u16,
            };
            dst.reserve(HEADER_LEN + chunk.len());
            dst.put_slice(&header.to_bytes());
            dst.put_slice(chunk);
        }
        Ok(())
    }
}

/// Sends one whole mini-protocol message (split into SDUs by the codec).
pub async fn send<S>(
    framed: &mut tokio_util::codec::Framed<S, MuxCodec>,
    protocol: u16,
    payload: Vec<u8>,
) -> Result<(), MuxError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    futures_util::SinkExt::send(
        framed,
        Message {
            protocol,
            payload: payload.into(),
        },
    )
    .await
}
