//! The `TraceBatch` frame, encoded straight from the model's trace objects (pure, no I/O).
//!
//! The generic path (`tracerd_wire::native::encode_node_frame`) moves every object into a
//! prost struct (a second `Vec` of them), has prost compute the nested lengths, and grows the
//! buffer as it goes. A batch is the forwarder's hot path, so this writes the same bytes in
//! two passes over borrowed objects into one buffer of the exact size: the lengths, then the
//! fields. The output is byte-for-byte prost's (tested below), so tracerd decodes it with the
//! same codec.

use bytes::Bytes;
use tracerd_wire::model::{DetailLevel, Severity, TraceObject};

/// Bytes of the frame's length prefix (big-endian `u32`, as `tracerd_wire::native` frames).
const LENGTH_PREFIX: usize = 4;

// Protobuf tags (field number << 3 | wire type) of tracerd.proto's messages.
/// `NodeMessage.traces` (2, length-delimited).
const TAG_TRACES: u8 = 2 << 3 | 2;
/// `TraceBatch.first_seq` (1, varint).
const TAG_FIRST_SEQ: u8 = 1 << 3;
/// `TraceBatch.objects` (2, length-delimited).
const TAG_OBJECT: u8 = 2 << 3 | 2;
const TAG_NAMESPACE: u8 = 1 << 3 | 2;
const TAG_SEVERITY: u8 = 2 << 3;
const TAG_DETAIL: u8 = 3 << 3;
const TAG_TIMESTAMP: u8 = 4 << 3;
const TAG_HOSTNAME: u8 = 5 << 3 | 2;
const TAG_THREAD: u8 = 6 << 3 | 2;
const TAG_MACHINE: u8 = 7 << 3 | 2;
const TAG_HUMAN: u8 = 8 << 3 | 2;

fn varint_len(v: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(dst: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        dst.push(v as u8 | 0x80);
        v >>= 7;
    }
    dst.push(v as u8);
}

fn severity(s: Severity) -> u64 {
    match s {
        Severity::Debug => 0,
        Severity::Info => 1,
        Severity::Notice => 2,
        Severity::Warning => 3,
        Severity::Error => 4,
        Severity::Critical => 5,
        Severity::Alert => 6,
        Severity::Emergency => 7,
    }
}

fn detail(d: DetailLevel) -> u64 {
    match d {
        DetailLevel::Minimal => 0,
        DetailLevel::Normal => 1,
        DetailLevel::Detailed => 2,
        DetailLevel::Maximum => 3,
    }
}

/// A proto3 string field: absent when empty.
fn str_len(s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        1 + varint_len(s.len() as u64) + s.len()
    }
}

/// A proto3 varint field: absent when 0.
fn num_len(v: u64) -> usize {
    if v == 0 {
        0
    } else {
        1 + varint_len(v)
    }
}

/// The encoded length of one `TraceObject` message body.
pub(crate) fn object_len(o: &TraceObject) -> usize {
    str_len(&o.namespace)
        + num_len(severity(o.severity))
        + num_len(detail(o.detail))
        + num_len(o.timestamp_ns as u64)
        + str_len(&o.hostname)
        + str_len(&o.thread_id)
        + str_len(&o.machine)
        // `optional`: present whenever it is set, even empty.
        + o.human.as_deref().map_or(0, |h| 1 + varint_len(h.len() as u64) + h.len())
}

/// The bytes one object takes in a batch (its tag, length and body), from its body's
/// length ([`object_len`]).
pub(crate) fn object_size(body_len: usize) -> usize {
    1 + varint_len(body_len as u64) + body_len
}

fn put_str(dst: &mut Vec<u8>, tag: u8, s: &str) {
    if !s.is_empty() {
        dst.push(tag);
        put_varint(dst, s.len() as u64);
        dst.extend_from_slice(s.as_bytes());
    }
}

fn put_num(dst: &mut Vec<u8>, tag: u8, v: u64) {
    if v != 0 {
        dst.push(tag);
        put_varint(dst, v);
    }
}

/// The whole frame (length prefix and `NodeMessage { traces }`) of the batch `objects`
/// numbered from `first_seq`, in one allocation of its exact size. `lens` holds each
/// object's [`object_len`] (computed once, when the batch was cut to the frame budget).
pub(crate) fn batch_frame(first_seq: u64, objects: &[TraceObject], lens: &[usize]) -> Bytes {
    debug_assert_eq!(objects.len(), lens.len());
    let mut batch_len = num_len(first_seq);
    for &n in lens {
        batch_len += object_size(n);
    }
    let message_len = 1 + varint_len(batch_len as u64) + batch_len;
    let mut dst = Vec::with_capacity(LENGTH_PREFIX + message_len);
    dst.extend_from_slice(&(message_len as u32).to_be_bytes());
    dst.push(TAG_TRACES);
    put_varint(&mut dst, batch_len as u64);
    put_num(&mut dst, TAG_FIRST_SEQ, first_seq);
    for (o, &n) in objects.iter().zip(lens) {
        dst.push(TAG_OBJECT);
        put_varint(&mut dst, n as u64);
        put_str(&mut dst, TAG_NAMESPACE, &o.namespace);
        put_num(&mut dst, TAG_SEVERITY, severity(o.severity));
        put_num(&mut dst, TAG_DETAIL, detail(o.detail));
        put_num(&mut dst, TAG_TIMESTAMP, o.timestamp_ns as u64);
        put_str(&mut dst, TAG_HOSTNAME, &o.hostname);
        put_str(&mut dst, TAG_THREAD, &o.thread_id);
        put_str(&mut dst, TAG_MACHINE, &o.machine);
        if let Some(h) = o.human.as_deref() {
            dst.push(TAG_HUMAN);
            put_varint(&mut dst, h.len() as u64);
            dst.extend_from_slice(h.as_bytes());
        }
    }
    debug_assert_eq!(dst.len(), LENGTH_PREFIX + message_len);
    // Exactly its capacity, so `Bytes` takes the buffer over without another allocation.
    Bytes::from(dst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracerd_wire::model::{MachineForm, TraceBatch};
    use tracerd_wire::native::{encode_node_frame, NodeMessage};

    fn frame(first_seq: u64, objects: &[TraceObject]) -> Bytes {
        let lens: Vec<usize> = objects.iter().map(object_len).collect();
        batch_frame(first_seq, objects, &lens)
    }

    fn object(i: u64) -> TraceObject {
        let sev = Severity::ALL[(i % 8) as usize];
        let det = [
            DetailLevel::Minimal,
            DetailLevel::Normal,
            DetailLevel::Detailed,
            DetailLevel::Maximum,
        ][(i % 4) as usize];
        let text = |n: u64| "é\"x".repeat((n * 37 % 200) as usize);
        TraceObject {
            namespace: if i % 5 == 0 { String::new() } else { text(i) }.into(),
            severity: sev,
            detail: det,
            // 0 (absent), small, large and negative (ten-byte varint) timestamps.
            timestamp_ns: [0, 1, 1_764_600_000_123_456_789, -5][(i % 4) as usize],
            hostname: text(i + 1).into(),
            thread_id: if i % 3 == 0 {
                String::new()
            } else {
                i.to_string()
            }
            .into(),
            machine: format!(
                "{{\"seq\":{i},\"pad\":\"{}\"}}",
                "p".repeat((i * 13 % 300) as usize)
            )
            .into(),
            form: MachineForm::default(),
            human: match i % 3 {
                0 => None,
                1 => Some(String::new().into()),
                _ => Some(text(i + 2).into()),
            },
        }
    }

    #[test]
    fn batch_frames_are_prost_s_bytes() {
        for (first_seq, n) in [(0, 0), (1, 1), (0, 3), (127, 2), (128, 40), (u64::MAX, 7)] {
            let objects: Vec<TraceObject> =
                (0..n).map(|i| object(i * 7 + first_seq % 11)).collect();
            let ours = frame(first_seq, &objects);
            let prost = encode_node_frame(NodeMessage::Traces(TraceBatch { first_seq, objects }));
            assert_eq!(&ours[..], &prost[..], "first_seq {first_seq}, {n} objects");
        }
    }

    #[test]
    fn large_batches_have_multi_byte_lengths() {
        // Lengths past 2^14 and 2^21 need three- and four-byte varints.
        let objects: Vec<TraceObject> = (0..9000).map(object).collect();
        let ours = frame(42, &objects);
        assert!(ours.len() > 1 << 21);
        let prost = encode_node_frame(NodeMessage::Traces(TraceBatch {
            first_seq: 42,
            objects,
        }));
        assert_eq!(&ours[..], &prost[..]);
    }

    #[test]
    fn varint_lengths() {
        for (v, n) in [
            (0, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (u64::MAX, 10),
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!((varint_len(v), b.len()), (n, n), "{v}");
        }
    }
}
