//! One pass over a `MsgTraceObjectsReply` instead of two: while the mux's [`Splitter`] looks
//! for the end of a reply (it must walk every CBOR head to find it), it reads each trace
//! object of the common shape here and records where its strings are and what its
//! severity, detail level and timestamp are ([`Spans`]); the session then builds the objects
//! from that record ([`decode_reply`]) without walking the heads again.
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

use bytes::Bytes;

use super::codec::{self, CborError};
use crate::model::{DetailLevel, MachineForm, Severity, Text, TraceObject};

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceIndex {
    /// The objects, in order, from just after the reply's `82 03 9f`.
    pub objects: Vec<Spans>,
    /// Where the last object read ends.
    pub end: usize,
}

impl TraceIndex {
    /// An empty record for a reply: the objects start after `82 03 9f`.
    pub fn new() -> TraceIndex {
        TraceIndex {
            objects: Vec::new(),
            end: 3,
        }
    }
}

impl Default for TraceIndex {
    fn default() -> TraceIndex {
        TraceIndex::new()
    }
}

/// Most objects one reply's record holds: a record is ~60 bytes an object, and a reply of
/// more objects (far beyond any `loRequestNum` in use) is decoded the general way instead,
/// so a hostile reply of tiny objects cannot make the record several times its own size.
pub const MAX_INDEXED: usize = 4096;

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
        let at = self.at;
        let (value, extra) = match info {
            0..=23 => return Ok(u64::from(info)),
            24 => (u64::from(*self.buf.get(at).ok_or(true)?), 1),
            25 => (u64::from(u16::from_be_bytes(self.array(at)?)), 2),
            26 => (u64::from(u32::from_be_bytes(self.array(at)?)), 4),
            27 => (u64::from_be_bytes(self.array(at)?), 8),
            _ => return Err(false),
        };
        self.at = at + extra;
        Ok(value)
    }

    /// The `N` bytes at `at`.
    #[inline]
    fn array<const N: usize>(&self, at: usize) -> Read<[u8; N]> {
        match self.buf.get(at..at + N) {
            Some(bytes) => bytes.try_into().map_err(|_| false),
            None => Err(true),
        }
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

/// Decodes the `MsgTraceObjectsReply` `payload` (the answer to a request of `asked`) as
/// [`codec::decode_trace_reply_shared`] does, with the same results and errors: from
/// `index`, the record the splitter made of it, when there is one and it covers the whole
/// reply and every string is UTF-8; else the general way.
pub fn decode_reply(
    payload: &Bytes,
    asked: usize,
    index: Option<&TraceIndex>,
) -> Result<Vec<TraceObject>, CborError> {
    match index.and_then(|index| build(payload, index)) {
        Some(objects) => Ok(objects),
        None => codec::decode_trace_reply_shared(payload, asked),
    }
}

const DETAILS: [DetailLevel; 4] = [
    DetailLevel::Minimal,
    DetailLevel::Normal,
    DetailLevel::Detailed,
    DetailLevel::Maximum,
];

/// The objects of `payload` from its record; `None` when the record does not cover the
/// whole reply (`82 03 9f`, the objects, the break that ends the message) or a string is not
/// UTF-8.
fn build(payload: &Bytes, index: &TraceIndex) -> Option<Vec<TraceObject>> {
    let n = payload.len();
    if n < 4 || payload[..3] != [0x82, 0x03, 0x9f] || index.end != n - 1 || payload[n - 1] != 0xff {
        return None;
    }
    let text = |(start, end): Span| {
        let range = start as usize..end as usize;
        Text::from_utf8(payload.slice(range)).ok()
    };
    let mut objects = Vec::with_capacity(index.objects.len());
    for s in &index.objects {
        let human = match s.human {
            Some(span) => Some(text(span)?),
            None => None,
        };
        let (machine, form) = match s.machine {
            Some(span) => (text(span)?, MachineForm::Line),
            None => (Text::from_static("{}"), MachineForm::Payload),
        };
        objects.push(TraceObject {
            namespace: text(s.namespace)?,
            severity: *Severity::ALL.get(usize::from(s.severity))?,
            detail: *DETAILS.get(usize::from(s.detail))?,
            timestamp_ns: s.timestamp_ns,
            hostname: text(s.host)?,
            thread_id: text(s.thread)?,
            machine,
            form,
            human,
        });
    }
    Some(objects)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use proptest::prelude::*;
    use tokio_util::codec::{Decoder, Encoder};

    use super::super::codec::{decode_trace_reply_shared, encode_trace_reply};
    use super::super::mux::{Message, Mode, MuxCodec, Splitter, TRACE_OBJECTS};
    use super::super::tests::{arb_object, e5_object, hex, hex_of};
    use super::*;

    /// Both decoders on `payload`: the same objects, or the same error.
    fn agree(payload: &Bytes, index: Option<&TraceIndex>) -> Result<Vec<TraceObject>, String> {
        let general = decode_trace_reply_shared(payload, 4).map_err(|e| e.to_string());
        let indexed = decode_reply(payload, 4, index).map_err(|e| e.to_string());
        assert_eq!(indexed, general);
        indexed
    }

    /// Scans `bytes` fed in the prefixes `cuts` with the general splitter and the recording
    /// one: the same answer after every prefix; the recording one's record of the item.
    fn scan_both(bytes: &[u8], cuts: &[usize]) -> (Option<usize>, Option<TraceIndex>) {
        let (mut general, mut recording) = (Splitter::default(), Splitter::for_trace_replies());
        let mut ends = cuts.to_vec();
        ends.push(bytes.len());
        ends.sort_unstable();
        for end in ends {
            let a = general.scan(&bytes[..end]);
            let b = recording.scan(&bytes[..end]);
            assert_eq!(a, b, "after {end} of {} bytes", bytes.len());
            match b {
                Ok(Some(n)) => return (Some(n), recording.take_index()),
                Ok(None) => {}
                Err(_) => return (None, None),
            }
        }
        (None, None)
    }

    proptest! {
        /// On valid replies, replies with one byte changed and replies cut short, fed in
        /// arbitrary pieces: the recording splitter answers as the general one after every
        /// piece, and decoding from its record gives what the general decoder gives (objects
        /// or error). A valid reply is always decoded from its record.
        #[test]
        fn the_record_changes_no_answer_and_no_result(
            objs in proptest::collection::vec(arb_object(), 0..5),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            change in 0u8..3,
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut bytes = encode_trace_reply(&objs);
            let valid = change == 0;
            let i = at.index(bytes.len());
            match change {
                1 => bytes[i] = byte,
                2 => bytes.truncate(i),
                _ => {}
            }
            let cuts: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            let (end, index) = scan_both(&bytes, &cuts);
            if let Some(n) = end {
                let payload = Bytes::copy_from_slice(&bytes[..n]);
                let got = agree(&payload, index.as_ref());
                if valid && !objs.is_empty() {
                    let index = index.expect("a valid reply has a record");
                    prop_assert_eq!(build(&payload, &index), Some(objs.clone()));
                    prop_assert_eq!(got, Ok(objs));
                }
            } else {
                prop_assert!(!valid || objs.is_empty() && bytes.len() < 3);
            }
        }
    }

    /// Shapes the record does not cover (a namespace of two parts, a chunked host, a
    /// severity written in two bytes) and a string that is not UTF-8: no record, or one the
    /// build refuses, and the general decoder's answer.
    #[test]
    fn other_shapes_and_bad_utf8_take_the_general_path() {
        let reply = hex_of(&encode_trace_reply(&[e5_object(), e5_object()]));
        for (other, decodes) in [
            (
                reply.replacen("9f68546573742e4d7367ff", "826454657374634d7367", 1),
                true,
            ),
            (
                reply.replacen("6268316135ff", "7f61686131ff6135ff", 1),
                true,
            ),
            (reply.replacen("ff81018101", "ff8118018101", 1), true),
            (reply.replacen("6268316135ff", "6268ff6135ff", 1), false),
        ] {
            let bytes = hex(&other);
            let (end, index) = scan_both(&bytes, &[]);
            assert_eq!(end, Some(bytes.len()));
            let payload = Bytes::from(bytes);
            assert!(index.as_ref().and_then(|i| build(&payload, i)).is_none());
            assert_eq!(agree(&payload, index.as_ref()).is_ok(), decodes, "{other}");
        }
    }

    /// A reply of more than `MAX_INDEXED` objects has no record and decodes the general way.
    #[test]
    fn a_reply_of_too_many_objects_has_no_record() {
        let objs = vec![e5_object(); MAX_INDEXED + 1];
        let bytes = encode_trace_reply(&objs);
        let (end, index) = scan_both(&bytes, &[]);
        assert_eq!(end, Some(bytes.len()));
        assert!(index.is_none());
        assert_eq!(
            agree(&Bytes::from(bytes), None).unwrap().len(),
            MAX_INDEXED + 1
        );
    }

    /// Through the mux as the session reads it: a reply of 100 objects in SDUs of 12,288
    /// bytes read in pieces of 5,000, then a second one in the same stream; each comes with
    /// its record, whose objects are slices of the reply.
    #[test]
    fn the_mux_hands_each_reply_its_record() {
        let objs: Vec<TraceObject> = (0..100)
            .map(|i| TraceObject {
                timestamp_ns: i,
                ..e5_object()
            })
            .collect();
        let mut node = MuxCodec::new(Mode::Responder, 1 << 20);
        let mut stream = BytesMut::new();
        for _ in 0..2 {
            let payload = Bytes::from(encode_trace_reply(&objs));
            node.encode(
                Message {
                    protocol: TRACE_OBJECTS,
                    payload,
                },
                &mut stream,
            )
            .unwrap();
        }
        let mut tracer = MuxCodec::new(Mode::Initiator, 1 << 20);
        let mut read = BytesMut::new();
        let mut replies = 0;
        for piece in stream.chunks(5000) {
            read.extend_from_slice(piece);
            while let Some(msg) = tracer.decode(&mut read).unwrap() {
                let index = tracer.take_trace_index().expect("a record");
                assert_eq!(index.objects.len(), 100);
                let got = build(&msg.payload, &index).expect("built from the record");
                assert_eq!(got, objs);
                let range = msg.payload.as_ptr_range();
                assert!(range.contains(&got[99].machine.as_ptr()), "a slice");
                replies += 1;
            }
        }
        assert_eq!(replies, 2);
    }
}
