//! The `TraceBatch` fast path: a frame holding one `NodeMessage.traces` decoded straight from
//! the frame's bytes into the model, without prost's intermediate messages.
//!
//! prost decodes a batch into a `Vec<pb::TraceObject>` that grows by doubling (about twice
//! the batch's objects in bytes requested, then copied into the model's `Vec`); this reader
//! counts the objects first and fills one `Vec<TraceObject>` of exactly that length, each
//! string a [`Text`] slice of the frame (its UTF-8 checked once, nothing copied or allocated). It handles only the plain shape every forwarder sends
//! (one `traces` field, known fields with their wire types, valid UTF-8, known enum values)
//! and returns `None` for anything else, which the caller then decodes with prost: so the
//! result, and every error, is exactly prost's (`tests.rs` checks it on random and mutated
//! frames).

use bytes::Bytes;

use crate::model::{MachineForm, Text, TraceBatch, TraceObject};

use super::{detail_from_pb, severity_from_pb};

/// Reads one varint as prost does (at most 10 bytes, the tenth at most 1); `None` otherwise.
/// The one-byte case (every tag and most lengths and enum values of a batch) is inlined into
/// the field reader; longer varints take [`varint_long`].
#[inline(always)]
fn varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    let first = *buf.get(*at)?;
    if first < 0x80 {
        *at += 1;
        return Some(u64::from(first));
    }
    varint_long(buf, at)
}

/// [`varint`] of two bytes or more.
#[inline(never)]
fn varint_long(buf: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let b = *buf.get(*at)?;
        *at += 1;
        if i == 9 && b > 1 {
            return None;
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// One field: (number, wire type, varint value or 0, LEN body or empty). Inlined into its
/// two loops (a call per field was ~70 instructions).
#[inline(always)]
fn field<'a>(buf: &'a [u8], at: &mut usize) -> Option<(u64, u8, u64, &'a [u8])> {
    let key = varint(buf, at)?;
    let (number, wire) = (key >> 3, (key & 7) as u8);
    if number == 0 {
        return None;
    }
    match wire {
        0 => Some((number, 0, varint(buf, at)?, &[])),
        2 => {
            let len = usize::try_from(varint(buf, at)?).ok()?;
            let body = buf.get(*at..at.checked_add(len)?)?;
            *at += len;
            Some((number, 2, 0, body))
        }
        _ => None,
    }
}

/// The body of a frame that is exactly one `NodeMessage.traces` field.
fn batch_body(frame: &[u8]) -> Option<&[u8]> {
    let mut at = 0;
    match field(frame, &mut at)? {
        (2, 2, _, body) if at == frame.len() => Some(body),
        _ => None,
    }
}

/// `body`, a slice of `frame`, as text sharing the frame's bytes.
fn text(frame: &Bytes, body: &[u8]) -> Option<Text> {
    if body.is_empty() {
        return Some(Text::new());
    }
    Text::from_utf8(frame.slice_ref(body)).ok()
}

fn object(frame: &Bytes, buf: &[u8]) -> Option<TraceObject> {
    let (mut namespace, mut hostname, mut thread_id, mut machine) =
        (Text::new(), Text::new(), Text::new(), Text::new());
    let (mut severity, mut detail, mut timestamp_ns, mut human) = (0i32, 0i32, 0i64, None);
    let mut at = 0;
    while at < buf.len() {
        match field(buf, &mut at)? {
            (1, 2, _, b) => namespace = text(frame, b)?,
            (2, 0, v, _) => severity = v as i32,
            (3, 0, v, _) => detail = v as i32,
            (4, 0, v, _) => timestamp_ns = v as i64,
            (5, 2, _, b) => hostname = text(frame, b)?,
            (6, 2, _, b) => thread_id = text(frame, b)?,
            (7, 2, _, b) => machine = text(frame, b)?,
            (8, 2, _, b) => human = Some(text(frame, b)?),
            _ => return None,
        }
    }
    Some(TraceObject {
        namespace,
        severity: severity_from_pb(severity).ok()?,
        detail: detail_from_pb(detail).ok()?,
        timestamp_ns,
        hostname,
        thread_id,
        machine,
        form: MachineForm::Payload,
        human,
    })
}

/// The batch a frame holds when it has the plain shape (see the module doc); `None`: decode
/// it with prost instead (another message, another shape, or something prost refuses).
pub(super) fn decode(frame: &Bytes) -> Option<TraceBatch> {
    let body = batch_body(frame)?;
    // First pass: the shape, and how many objects to make room for.
    let (mut first_seq, mut count, mut at) = (0u64, 0usize, 0);
    while at < body.len() {
        match field(body, &mut at)? {
            (1, 0, v, _) => first_seq = v,
            (2, 2, _, _) => count += 1,
            _ => return None,
        }
    }
    if count > 0 && first_seq.checked_add(count as u64).is_none() {
        return None;
    }
    let mut objects = Vec::with_capacity(count);
    let mut at = 0;
    while at < body.len() {
        if let (2, 2, _, b) = field(body, &mut at)? {
            objects.push(object(frame, b)?);
        }
    }
    Some(TraceBatch { first_seq, objects })
}
