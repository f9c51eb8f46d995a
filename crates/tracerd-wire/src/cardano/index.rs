//! One pass over a `MsgTraceObjectsReply` instead of two: while the mux's [`Splitter`] looks
//! for the end of a reply (it must walk every CBOR head to find it), it reads each trace
//! object of the common shape here and records where its strings are and what its
//! severity, detail level and timestamp are ([`Spans`]); the session then builds the objects
//! from that record ([`super::codec::decode_indexed_reply`]) without walking the heads again.
//!
//! The shape read here is what every cardano-node since 10.6.2 (and the simulator) sends:
//! `89 00`, `toHuman` as `80` or `81 <text>`, `toMachine` as a definite text (or `80` / `81
//! <text>`, older nodes' `Maybe`), the namespace as `81 <text>` or `9f <text> ff`, severity
//! and detail as `81 <k>`, the timestamp as tag 1000 `{1: secs, -12: picos}`, host and thread
//! as definite texts. Every part must be what [`super::codec::decode_trace_reply`] accepts,
//! with the value it decodes (ranges checked here as there); anything else is
//! [`Step::Other`] and the splitter and the decoder take their general paths for the whole
//! reply, so results and errors are theirs exactly. UTF-8 is not checked here but when the
//! objects are built (a failure there falls back to the general decoder too).
//!
//! [`Splitter`]: super::mux::Splitter

use crate::model::Severity;

/// Where a string's bytes are in the reply: `start..end`.
pub type Span = (u32, u32);

/// One trace object of a reply, read by [`read_object`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spans {
    /// `toHuman`, if any.
    pub human: Option<Span>,
    /// `toMachine`; `None` for an older node's `Nothing` (written as `{}`).
    pub machine: Option<Span>,
    /// The namespace's one part.
    pub namespace: Span,
    /// Index into [`Severity::ALL`] (checked).
    pub severity: u8,
    /// `DetailLevel` constructor, 0..=3 (checked).
    pub detail: u8,
    /// The timestamp, nanoseconds since the epoch.
    pub timestamp_ns: i64,
    /// `toHostname`.
    pub host: Span,
    /// `toThreadId`.
    pub thread: Span,
}

/// What [`read_object`] found at a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A whole object of the common shape, ending at `end`.
    Object(Spans, usize),
    /// The common shape so far, but the bytes end before the object does.
    Partial,
    /// Not the common shape (or not valid): the general paths decide.
    Other,
}

/// The record of one reply: its objects' spans in order, and where the list's items end
/// (the position of its break).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceIndex {
    /// The objects, in order, from just after the reply's `82 03 9f`.
    pub objects: Vec<Spans>,
    /// Where the last object read ends.
    pub end: usize,
}

/// Most objects one reply's record holds: a record is ~60 bytes an object, and a reply of
/// more objects (far beyond any `loRequestNum` in use) is decoded the general way instead,
/// so a hostile reply of tiny objects cannot make the record several times its own size.
pub const MAX_INDEXED: usize = 4096;

/// Shortest objects' bytes: the reply's list of `n` objects of the common shape is at least
/// this many bytes an object (for reserving the record: never more than the bytes can hold).
pub const MIN_OBJECT_BYTES: usize = 20;

/// A cursor over the bytes: every read says `None` when the bytes end first.
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

/// `Err(true)`: the bytes ended (partial); `Err(false)`: not the common shape.
type Read<T> = Result<T, bool>;

impl Cursor<'_> {
    #[inline]
    fn byte(&mut self) -> Read<u8> {
        let b = *self.buf.get(self.at).ok_or(true)?;
        self.at += 1;
        Ok(b)
    }

    #[inline]
    fn expect(&mut self, want: u8) -> Read<()> {
        if self.byte()? == want {
            Ok(())
        } else {
            Err(false)
        }
    }

    /// The argument of a head whose additional information is `info` (0..=27).
    #[inline]
    fn argument(&mut self, info: u8) -> Read<u64> {
        let extra = match info {
            0..=23 => return Ok(u64::from(info)),
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            _ => return Err(false),
        };
        let bytes = self.buf.get(self.at..self.at + extra).ok_or(true)?;
        self.at += extra;
        Ok(bytes.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b)))
    }

    /// A definite text string: its span.
    #[inline]
    fn text(&mut self) -> Read<Span> {
        let initial = self.byte()?;
        if initial >> 5 != 3 {
            return Err(false);
        }
        let len = self.argument(initial & 0x1f)?;
        let start = self.at;
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| start.checked_add(len))
            .ok_or(false)?;
        // Offsets past 4 GiB are not recorded (no reply is that large).
        let span = (
            u32::try_from(start).map_err(|_| false)?,
            u32::try_from(end).map_err(|_| false)?,
        );
        if end > self.buf.len() {
            return Err(true);
        }
        self.at = end;
        Ok(span)
    }

    /// `81 <k>` with `k` below 24: a generic-derived nullary constructor.
    #[inline]
    fn constructor(&mut self) -> Read<u8> {
        self.expect(0x81)?;
        let k = self.byte()?;
        if k < 24 {
            Ok(k)
        } else {
            Err(false)
        }
    }

    /// An integer (major type 0 or 1) that fits an `i64`.
    #[inline]
    fn int(&mut self) -> Read<i64> {
        let initial = self.byte()?;
        let arg = self.argument(initial & 0x1f)?;
        let v = i64::try_from(arg).map_err(|_| false)?;
        match initial >> 5 {
            0 => Ok(v),
            1 => Ok(-1 - v),
            _ => Err(false),
        }
    }

    /// An unsigned integer (major type 0).
    #[inline]
    fn uint(&mut self) -> Read<u64> {
        let initial = self.byte()?;
        if initial >> 5 != 0 {
            return Err(false);
        }
        self.argument(initial & 0x1f)
    }
}

/// Reads the trace object whose first byte is at `at` in `buf` (see the module's text).
pub fn read_object(buf: &[u8], at: usize) -> Step {
    let mut c = Cursor { buf, at };
    match object(&mut c) {
        Ok(spans) => Step::Object(spans, c.at),
        Err(true) => Step::Partial,
        Err(false) => Step::Other,
    }
}

fn object(c: &mut Cursor<'_>) -> Read<Spans> {
    c.expect(0x89)?;
    c.expect(0x00)?;
    let human = match c.byte()? {
        0x80 => None,
        0x81 => Some(c.text()?),
        _ => return Err(false),
    };
    let machine = match c.buf.get(c.at).ok_or(true)? {
        0x80 => {
            c.at += 1;
            None
        }
        0x81 => {
            c.at += 1;
            Some(c.text()?)
        }
        _ => Some(c.text()?),
    };
    let namespace = match c.byte()? {
        0x81 => c.text()?,
        0x9f => {
            let part = c.text()?;
            c.expect(0xff)?;
            part
        }
        _ => return Err(false),
    };
    let severity = c.constructor()?;
    if usize::from(severity) >= Severity::ALL.len() {
        return Err(false);
    }
    let detail = c.constructor()?;
    if detail > 3 {
        return Err(false);
    }
    // Tag 1000, a map of 2: 1 => seconds, -12 => picoseconds.
    for b in [0xd9, 0x03, 0xe8, 0xa2, 0x01] {
        c.expect(b)?;
    }
    let secs = c.int()?;
    c.expect(0x2b)?;
    let ps = c.uint()?;
    if ps >= 1_000_000_000_000 {
        return Err(false);
    }
    let timestamp_ns = secs
        .checked_mul(1_000_000_000)
        .and_then(|s| s.checked_add((ps / 1000) as i64))
        .ok_or(false)?;
    let host = c.text()?;
    let thread = c.text()?;
    Ok(Spans {
        human,
        machine,
        namespace,
        severity,
        detail,
        timestamp_ns,
        host,
        thread,
    })
}
