//! The trace-object mini-protocol's messages (mini-protocol 2): requests, and replies decoded
//! into model objects with owned strings or with slices of the shared reply.

use bytes::Bytes;
use minicbor::data::{Tag, Type};
use minicbor::{Decoder, Encoder};

use super::{
    array_of, build, enum_index, envelope, invalid, maybe, read_list_sized, text, CborError,
    EncResult, Result,
};
use crate::model::{DetailLevel, MachineForm, Severity, Text, TraceObject};

/// CBOR tag of cborg's extended `UTCTime` encoding.
const TAG_UTC: u64 = 1000;

/// A message from the acceptor on the trace-object protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceAsk {
    /// `MsgTraceObjectsRequest blocking n`.
    Request {
        /// Whether the forwarder may wait for objects.
        blocking: bool,
        /// Most objects wanted.
        count: u16,
    },
    /// `MsgDone`.
    Done,
}

/// `MsgTraceObjectsRequest blocking [0, count]`.
pub fn encode_trace_request(blocking: bool, count: u16) -> Vec<u8> {
    build(|e| {
        e.array(3)?
            .u8(1)?
            .bool(blocking)?
            .array(2)?
            .u8(0)?
            .u16(count)?;
        Ok(())
    })
}

/// `MsgDone` of the trace-object protocol.
pub fn encode_trace_done() -> Vec<u8> {
    build(|e| {
        e.array(1)?.u8(2)?;
        Ok(())
    })
}

/// Decodes the acceptor's trace-object message (forwarder side).
pub fn decode_trace_ask(bytes: &[u8]) -> Result<TraceAsk> {
    let mut d = Decoder::new(bytes);
    match envelope(&mut d)? {
        (3, 1) => {
            let blocking = d.bool()?;
            array_of(&mut d, 2, "NumberOfTraceObjects")?;
            if d.u8()? != 0 {
                return invalid("NumberOfTraceObjects: constructor must be 0");
            }
            Ok(TraceAsk::Request {
                blocking,
                count: d.u16()?,
            })
        }
        (1, 2) => Ok(TraceAsk::Done),
        (len, tag) => invalid(format!("trace-object message [{tag}, ..] of length {len}")),
    }
}

/// Splits nanoseconds since the epoch into cborg's (seconds, picoseconds).
fn split_time(ns: i64) -> (i64, u64) {
    let secs = ns.div_euclid(1_000_000_000);
    let ps = ns.rem_euclid(1_000_000_000) as u64 * 1000;
    (secs, ps)
}

/// A trace object's fields, borrowed: what [`encode_trace_object`] writes, so a producer
/// (the load generator) can encode from its own buffers without building a [`TraceObject`].
#[derive(Debug, Clone, Copy)]
pub struct TraceFields<'a> {
    /// `toHuman`.
    pub human: Option<&'a str>,
    /// `toMachine`.
    pub machine: &'a str,
    /// The dotted namespace, sent as a one-element list (cardano-node ≥ 10.6.2).
    pub namespace: &'a str,
    /// `toSeverity`.
    pub severity: Severity,
    /// `toDetails`.
    pub detail: DetailLevel,
    /// `toTimestamp`, nanoseconds since the epoch.
    pub timestamp_ns: i64,
    /// `toHostname`.
    pub hostname: &'a str,
    /// `toThreadId`.
    pub thread_id: &'a str,
}

impl<'a> From<&'a TraceObject> for TraceFields<'a> {
    fn from(o: &'a TraceObject) -> TraceFields<'a> {
        TraceFields {
            human: o.human.as_deref(),
            machine: &o.machine,
            namespace: &o.namespace,
            severity: o.severity,
            detail: o.detail,
            timestamp_ns: o.timestamp_ns,
            hostname: &o.hostname,
            thread_id: &o.thread_id,
        }
    }
}

/// The head of a `MsgTraceObjectsReply` whose list is not empty: `[3, ` and the indefinite
/// list's start. Objects ([`encode_trace_object`]) and [`REPLY_END`] follow.
pub const REPLY_START: [u8; 3] = [0x82, 0x03, 0x9f];
/// The end of the list that [`REPLY_START`] opened.
pub const REPLY_END: u8 = 0xff;
/// A `MsgTraceObjectsReply` with no object (a non-blocking request's answer).
pub const REPLY_EMPTY: [u8; 3] = [0x82, 0x03, 0x80];

/// Appends one `TraceObject` as a node encodes it (namespace as one dotted element): the
/// items between [`REPLY_START`] and [`REPLY_END`].
pub fn encode_trace_object(out: &mut Vec<u8>, o: &TraceFields<'_>) {
    let mut e = Encoder::new(out);
    let done: EncResult = (|| {
        e.array(9)?.u8(0)?;
        match o.human {
            Some(h) => e.array(1)?.str(h)?,
            None => e.array(0)?,
        };
        e.str(o.machine)?;
        e.begin_array()?.str(o.namespace)?.end()?;
        e.array(1)?.u8(o.severity as u8)?;
        e.array(1)?.u8(o.detail as u8)?;
        let (secs, ps) = split_time(o.timestamp_ns);
        e.tag(Tag::new(TAG_UTC))?
            .map(2)?
            .u8(1)?
            .i64(secs)?
            .i8(-12)?
            .u64(ps)?;
        e.str(o.hostname)?.str(o.thread_id)?;
        Ok(())
    })();
    if let Err(e) = done {
        unreachable!("writing CBOR to a Vec cannot fail: {e}");
    }
}

/// `MsgTraceObjectsReply objects`, as a node encodes it (namespace as one dotted element).
pub fn encode_trace_reply(objects: &[TraceObject]) -> Vec<u8> {
    if objects.is_empty() {
        return REPLY_EMPTY.to_vec();
    }
    let mut out = REPLY_START.to_vec();
    for o in objects {
        encode_trace_object(&mut out, &o.into());
    }
    out.push(REPLY_END);
    out
}

/// Fewest bytes a `TraceObject` takes: `89 00 80 60 80 81 00 81 00 c1 00 60 60`.
const MIN_OBJECT_BYTES: usize = 13;

/// Decodes the forwarder's `MsgTraceObjectsReply` (acceptor side) into objects that own
/// their strings. The session decodes with [`decode_trace_reply_shared`] instead.
pub fn decode_trace_reply(bytes: &[u8]) -> Result<Vec<TraceObject>> {
    decode_trace_reply_to(bytes, 0)
}

/// [`decode_trace_reply`] for the answer to a request of `asked` objects: the node's list is
/// indefinite (`9f … ff`), so its length is only known at its end; the objects go into one
/// `Vec` sized for `asked` (bounded by what the bytes can hold) instead of one grown by
/// doubling. A longer list is still decoded whole.
pub fn decode_trace_reply_to(bytes: &[u8], asked: usize) -> Result<Vec<TraceObject>> {
    decode_reply_with(bytes, asked, &Owned)
}

/// [`decode_trace_reply_to`] whose objects' strings are slices of `payload` (the reassembled
/// reply, shared): every definite-length text string (namespace, host, thread id, machine and
/// human text) becomes a [`Text`] over `payload`, its UTF-8 checked once, so decoding a reply
/// allocates only its `Vec`. An indefinite-length (chunked) string, and a namespace of
/// several parts, become one owned string each. The objects keep `payload`'s allocation
/// alive until they are dropped; whatever keeps one longer detaches it first
/// ([`TraceObject::detached`]). Results and errors are [`decode_trace_reply_to`]'s exactly.
pub fn decode_trace_reply_shared(payload: &Bytes, asked: usize) -> Result<Vec<TraceObject>> {
    decode_reply_with(payload, asked, &Shared(payload))
}

fn decode_reply_with<S: Strings>(
    bytes: &[u8],
    asked: usize,
    strings: &S,
) -> Result<Vec<TraceObject>> {
    let mut d = Decoder::new(bytes);
    match envelope(&mut d)? {
        (2, 3) => {}
        (len, tag) => return invalid(format!("trace-object reply [{tag}, ..] of length {len}")),
    }
    let fits = bytes.len() / MIN_OBJECT_BYTES;
    let capacity = |len: Option<u64>| match len {
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX).min(fits),
        None => asked.min(fits),
    };
    read_list_sized(&mut d, capacity, |d| trace_object(d, strings))
}

/// How a trace object's strings are read: copied out ([`Owned`]) or sliced out of the
/// shared reply ([`Shared`]).
trait Strings {
    fn text(&self, d: &mut Decoder<'_>) -> Result<Text>;
    fn namespace(&self, d: &mut Decoder<'_>) -> Result<Text>;
}

/// Strings copied into allocations of their own.
struct Owned;

impl Strings for Owned {
    fn text(&self, d: &mut Decoder<'_>) -> Result<Text> {
        text(d).map(Text::from)
    }

    fn namespace(&self, d: &mut Decoder<'_>) -> Result<Text> {
        namespace(d).map(Text::from)
    }
}

/// Strings sliced out of the reply the decoder reads (the same bytes, shared).
struct Shared<'p>(&'p Bytes);

impl Strings for Shared<'_> {
    fn text(&self, d: &mut Decoder<'_>) -> Result<Text> {
        match definite_text(d.input(), d.position()) {
            Some((start, end)) => match Text::from_utf8(self.0.slice(start..end)) {
                Ok(t) => {
                    d.set_position(end);
                    Ok(t)
                }
                // minicbor's own error, as the owned path reports it.
                Err(_) => Owned.text(d),
            },
            None => Owned.text(d),
        }
    }

    fn namespace(&self, d: &mut Decoder<'_>) -> Result<Text> {
        // The shape every cardano-node since 10.6.2 sends: a list of one definite string,
        // definite (`81`) or indefinite (`9f … ff`).
        let (input, at) = (d.input(), d.position());
        let part = match input.get(at) {
            Some(0x81) => Some(at + 1),
            Some(0x9f) => Some(at + 1),
            _ => None,
        };
        if let Some(part) = part {
            if let Some((start, end)) = definite_text(input, part) {
                let closed = match input[at] {
                    0x81 => Some(end),
                    _ => (input.get(end) == Some(&0xff)).then_some(end + 1),
                };
                if let Some(next) = closed {
                    if let Ok(t) = Text::from_utf8(self.0.slice(start..end)) {
                        d.set_position(next);
                        return Ok(t);
                    }
                }
            }
        }
        // Several parts (nodes before 10.6.2), chunked parts, and every error: joined into
        // one owned string.
        Owned.namespace(d)
    }
}

/// Where the definite-length text string whose head is at `at` in `input` has its bytes:
/// `(start, end)`, when the head is one and the bytes are all there (else the caller's
/// slow path reports what is wrong).
fn definite_text(input: &[u8], at: usize) -> Option<(usize, usize)> {
    let initial = *input.get(at)?;
    if initial >> 5 != 3 {
        return None;
    }
    let (len, head) = match initial & 0x1f {
        n @ 0..=23 => (u64::from(n), 1),
        24 => (u64::from(*input.get(at + 1)?), 2),
        25 => (
            u64::from(u16::from_be_bytes(
                input.get(at + 1..at + 3)?.try_into().ok()?,
            )),
            3,
        ),
        26 => (
            u64::from(u32::from_be_bytes(
                input.get(at + 1..at + 5)?.try_into().ok()?,
            )),
            5,
        ),
        27 => (
            u64::from_be_bytes(input.get(at + 1..at + 9)?.try_into().ok()?),
            9,
        ),
        _ => return None,
    };
    let start = at + head;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    (end <= input.len()).then_some((start, end))
}

fn trace_object<S: Strings>(d: &mut Decoder<'_>, strings: &S) -> Result<TraceObject> {
    array_of(d, 9, "TraceObject")?;
    if d.u8()? != 0 {
        return invalid("TraceObject: constructor must be 0");
    }
    let human = maybe(d, |d| strings.text(d))?;
    // Nodes before ~8.3 send `toMachine` as `Maybe Text`.
    let (machine, form) = if d.datatype()? == Type::Array {
        match maybe(d, |d| strings.text(d))? {
            Some(m) => (m, MachineForm::Line),
            None => (Text::from_static("{}"), MachineForm::Payload),
        }
    } else {
        (strings.text(d)?, MachineForm::Line)
    };
    let namespace = strings.namespace(d)?;
    let severity = Severity::ALL
        .get(usize::from(enum_index(d, "SeverityS")?))
        .copied()
        .ok_or_else(|| CborError::Invalid("SeverityS out of range".into()))?;
    let detail = match enum_index(d, "DetailLevel")? {
        0 => DetailLevel::Minimal,
        1 => DetailLevel::Normal,
        2 => DetailLevel::Detailed,
        3 => DetailLevel::Maximum,
        k => return invalid(format!("DetailLevel {k} out of range")),
    };
    let timestamp_ns = utc_time(d)?;
    let hostname = strings.text(d)?;
    let thread_id = strings.text(d)?;
    Ok(TraceObject {
        namespace,
        severity,
        detail,
        timestamp_ns,
        hostname,
        thread_id,
        machine,
        form,
        human,
    })
}

/// A namespace (a list of text strings, definite or indefinite), joined with `.` into one
/// string of exactly its length: one allocation, not one per part plus the list and the join.
pub(crate) fn namespace(d: &mut Decoder<'_>) -> Result<String> {
    // First pass, on a copy of the decoder: the joined length.
    let mut len = 0usize;
    namespace_parts(&mut d.clone(), |sep, chunk| {
        len += usize::from(sep) + chunk.len();
    })?;
    let mut out = String::with_capacity(len);
    namespace_parts(d, |sep, chunk| {
        if sep {
            out.push('.');
        }
        out.push_str(chunk);
    })?;
    Ok(out)
}

/// Calls `f(separator before it, chunk)` for every text chunk of a namespace list, in order;
/// `separator` is true for the first chunk of every part but the first (an empty part gives
/// one empty chunk), so the chunks joined with those separators are the parts joined by `.`.
fn namespace_parts(d: &mut Decoder<'_>, mut f: impl FnMut(bool, &str)) -> Result<()> {
    let mut parts = 0usize;
    let mut part = |d: &mut Decoder<'_>| -> Result<()> {
        let mut sep = parts > 0;
        let mut any = false;
        for chunk in d.str_iter()? {
            f(std::mem::take(&mut sep), chunk?);
            any = true;
        }
        if !any {
            f(sep, "");
        }
        parts += 1;
        Ok(())
    };
    match d.array()? {
        Some(n) => {
            for _ in 0..n {
                part(d)?;
            }
        }
        None => loop {
            if d.datatype()? == Type::Break {
                d.set_position(d.position() + 1);
                break;
            }
            part(d)?;
        },
    }
    Ok(())
}

/// cborg's `UTCTime`: tag 1000 `{1: secs, -12: picos}` (also tag 1 with integer seconds).
fn utc_time(d: &mut Decoder<'_>) -> Result<i64> {
    let tag = d.tag()?.as_u64();
    let (secs, ps) = match tag {
        TAG_UTC => {
            if d.map()? != Some(2) {
                return invalid("UTCTime: expected a map of 2");
            }
            if d.i64()? != 1 {
                return invalid("UTCTime: first key must be 1");
            }
            let secs = d.i64()?;
            if d.i64()? != -12 {
                return invalid("UTCTime: second key must be -12");
            }
            (secs, d.u64()?)
        }
        1 => (d.i64()?, 0),
        _ => return invalid(format!("UTCTime: unsupported tag {tag}")),
    };
    if ps >= 1_000_000_000_000 {
        return invalid("UTCTime: picoseconds out of range");
    }
    secs.checked_mul(1_000_000_000)
        .and_then(|s| s.checked_add((ps / 1000) as i64))
        .ok_or_else(|| CborError::Invalid("UTCTime out of range".into()))
}
