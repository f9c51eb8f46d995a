//! Codec tests: round trips, arbitrary read splits, and bad input.

use super::*;
use crate::model::{DetailLevel, Severity};
use proptest::prelude::*;

fn trace(i: u64, text: &str) -> TraceObject {
    TraceObject {
        namespace: format!("Ns.{text}").into(),
        severity: Severity::ALL[(i % 8) as usize],
        detail: DetailLevel::Detailed,
        timestamp_ns: i as i64 * 1_000,
        hostname: "h".into(),
        thread_id: i.to_string().into(),
        machine: format!("{{\"i\":{i}}}").into(),
        human: (i % 2 == 0).then(|| text.into()),
        form: Default::default(),
    }
}

fn sample_messages(texts: &[String]) -> Vec<NodeMessage> {
    let mut msgs = vec![NodeMessage::Hello(Box::new(Hello {
        versions: vec![1, 7],
        network_magic: 42,
        node_name: texts.first().cloned().unwrap_or_default(),
        software: Software {
            name: "n".into(),
            version: "1".into(),
            commit: "c".into(),
        },
        capabilities: vec![crate::tracing_config::CAPABILITY.into()],
        token: texts.get(1).cloned().unwrap_or_default(),
        tracers: Vec::new(),
    }))];
    for (i, t) in texts.iter().enumerate() {
        let i = i as u64;
        msgs.push(match i % 5 {
            0 => NodeMessage::Traces(TraceBatch {
                first_seq: i + 1,
                objects: vec![trace(i, t), trace(i + 1, t)],
            }),
            1 => NodeMessage::Metrics(MetricsUpdate {
                full: i % 3 == 0,
                metrics: vec![
                    (t.clone(), MetricValue::Counter(i as i64)),
                    ("g".into(), MetricValue::Gauge(1.5)),
                    ("l".into(), MetricValue::Label(t.clone())),
                ],
            }),
            2 => NodeMessage::DataPoints(vec![DataPoint {
                name: t.clone(),
                json: "{}".into(),
            }]),
            3 => NodeMessage::TracingConfig(TracingConfigReport {
                request_id: i,
                effective: sample_config(t),
                refused: (i % 2 == 0).then(|| format!("no {t}")),
                timestamp_ns: i as i64,
            }),
            _ => NodeMessage::Ping(i),
        });
    }
    msgs
}

fn sample_config(ns: &str) -> TracingConfig {
    use crate::tracing_config::{NamespaceOptions, SeverityFilter};
    let mut c = TracingConfig::everything();
    c.options.insert(
        format!("Ns.{ns}"),
        NamespaceOptions {
            severity: Some(SeverityFilter::Silence),
            detail: Some(DetailLevel::Maximum),
            max_frequency: Some(2.5),
        },
    );
    c.options.insert("Ns".into(), NamespaceOptions::default());
    c
}

#[test]
fn tracing_config_messages_round_trip_both_ways() {
    let set = TracerMessage::SetTracingConfig {
        request_id: 9,
        config: sample_config("A"),
    };
    let mut buf = BytesMut::new();
    TracerCodec::new(1 << 20)
        .encode(set.clone(), &mut buf)
        .unwrap();
    let got = ForwarderCodec::new(1 << 20).decode(&mut buf).unwrap();
    assert_eq!(got, Some(set));
    // A namespace given twice is refused by the decoder, not silently merged.
    let dup = pb::TracerMessage {
        msg: Some(pb::tracer_message::Msg::SetTracingConfig(
            pb::SetTracingConfig {
                request_id: 1,
                config: Some(pb::TracingConfig {
                    options: vec![
                        pb::NamespaceOptions {
                            namespace: "A".into(),
                            ..Default::default()
                        },
                        pb::NamespaceOptions {
                            namespace: "A".into(),
                            ..Default::default()
                        },
                    ],
                }),
            },
        )),
    };
    let err = tracer_message_from_pb(dup).unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");
}

fn encode_all(msgs: &[NodeMessage]) -> Vec<u8> {
    msgs.iter()
        .flat_map(|m| encode_node_frame(m.clone()).to_vec())
        .collect()
}

/// Feeds `bytes` to a fresh decoder in chunks of the given sizes.
fn decode_chunked(
    bytes: &[u8],
    chunks: &[usize],
    max: usize,
) -> Result<Vec<NodeMessage>, FrameError> {
    let mut codec = TracerCodec::new(max);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut sizes = chunks.iter().copied().cycle();
    while pos < bytes.len() {
        let n = sizes
            .next()
            .unwrap_or(bytes.len())
            .max(1)
            .min(bytes.len() - pos);
        buf.extend_from_slice(&bytes[pos..pos + n]);
        pos += n;
        while let Some(m) = codec.decode(&mut buf)? {
            out.push(m);
        }
    }
    if let Some(m) = codec.decode_eof(&mut buf)? {
        out.push(m);
    }
    Ok(out)
}

proptest! {
    #[test]
    fn any_split_of_the_stream_decodes_to_the_same_messages(
        texts in proptest::collection::vec(any::<String>(), 0..12),
        chunks in proptest::collection::vec(1usize..64, 1..8),
    ) {
        let msgs = sample_messages(&texts);
        let bytes = encode_all(&msgs);
        prop_assert_eq!(decode_chunked(&bytes, &chunks, 1 << 20).unwrap(), msgs);
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), chunks in proptest::collection::vec(1usize..32, 1..4)) {
        let _ = decode_chunked(&bytes, &chunks, 4096);
    }
}

#[test]
fn oversized_frame_is_refused_before_allocating() {
    let mut codec = TracerCodec::new(1024);
    let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xf0, 1, 2][..]);
    match codec.decode(&mut buf) {
        Err(FrameError::FrameTooLarge { len, max }) => {
            assert_eq!((len, max), (0xffff_fff0, 1024));
        }
        other => panic!("{other:?}"),
    }
    assert!(buf.capacity() < 1024);
}

#[test]
fn frame_at_the_limit_is_accepted_and_one_past_is_not() {
    let msg = NodeMessage::DataPoints(vec![DataPoint {
        name: "x".repeat(100),
        json: "{}".into(),
    }]);
    let frame = encode_node_frame(msg.clone());
    let body = frame.len() - LENGTH_PREFIX_BYTES;
    assert_eq!(decode_chunked(&frame, &[7], body).unwrap(), vec![msg]);
    assert!(matches!(
        decode_chunked(&frame, &[7], body - 1),
        Err(FrameError::FrameTooLarge { .. })
    ));
}

#[test]
fn empty_and_malformed_frames_are_errors() {
    assert!(matches!(
        decode_chunked(&[0, 0, 0, 0], &[4], 64),
        Err(FrameError::Invalid(_))
    ));
    assert!(matches!(
        decode_chunked(&[0, 0, 0, 2, 0xff, 0xff], &[6], 64),
        Err(FrameError::Protobuf(_))
    ));
    assert!(matches!(
        decode_chunked(&[0, 0, 0, 9, 1, 2], &[6], 64),
        Err(FrameError::Truncated(2))
    ));
    let bad_severity = pb::NodeMessage {
        msg: Some(pb::node_message::Msg::Traces(pb::TraceBatch {
            first_seq: 1,
            objects: vec![pb::TraceObject {
                severity: 99,
                ..Default::default()
            }],
        })),
    };
    let mut frame = (bad_severity.encoded_len() as u32).to_be_bytes().to_vec();
    frame.extend(bad_severity.encode_to_vec());
    match decode_chunked(&frame, &[100], 64) {
        Err(FrameError::Invalid(m)) => assert!(m.contains("unknown severity 99"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn tracer_messages_round_trip() {
    let msgs = vec![
        TracerMessage::Accept {
            version: 1,
            node_name: "n-2".into(),
            persisted_seq: 9,
            max_frame_bytes: 1 << 20,
        },
        TracerMessage::Refuse {
            reason: RefuseReason::WrongMagic,
            message: "no".into(),
        },
        TracerMessage::Ack(77),
        TracerMessage::Ping(3),
        TracerMessage::Pong(4),
    ];
    let mut buf = BytesMut::new();
    let mut enc = TracerCodec::new(1 << 20);
    for m in &msgs {
        enc.encode(m.clone(), &mut buf).unwrap();
    }
    let mut dec = ForwarderCodec::new(1 << 20);
    let mut got = Vec::new();
    while let Some(m) = dec.decode(&mut buf).unwrap() {
        got.push(m);
    }
    assert_eq!(got, msgs);
}

/// The byte-level examples in README.md's protocol section.
#[test]
fn readme_examples_are_exact() {
    let hex = |b: &[u8]| {
        b.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let hello = NodeMessage::Hello(Box::new(Hello {
        versions: vec![1],
        network_magic: 764_824_073,
        node_name: "relay-1".into(),
        software: Software::default(),
        capabilities: Vec::new(),
        token: String::new(),
        tracers: Vec::new(),
    }));
    assert_eq!(
        hex(&encode_node_frame(hello)),
        "00 00 00 16 0a 14 0a 01 01 10 89 94 d9 ec 02 1a 07 72 65 6c 61 79 2d 31 22 00"
    );
    let batch = NodeMessage::Traces(TraceBatch {
        first_seq: 1,
        objects: vec![TraceObject {
            namespace: "A.B".into(),
            severity: Severity::Notice,
            detail: DetailLevel::Normal,
            timestamp_ns: 1,
            hostname: "h".into(),
            thread_id: "1".into(),
            machine: "{}".into(),
            human: None,
            form: Default::default(),
        }],
    });
    assert_eq!(
        hex(&encode_node_frame(batch)),
        "00 00 00 1b 12 19 08 01 12 15 0a 03 41 2e 42 10 02 18 01 20 01 2a 01 68 32 01 31 3a 02 7b 7d"
    );
    let mut buf = BytesMut::new();
    TracerCodec::new(64)
        .encode(TracerMessage::Ack(42), &mut buf)
        .unwrap();
    assert_eq!(hex(&buf), "00 00 00 04 1a 02 08 2a");
}

/// An empty trace object is 2 bytes on the wire: the object count of a frame is checked
/// before it is decoded, whether the objects come in one `traces` field or several.
#[test]
fn a_frame_of_more_objects_than_the_limit_is_refused_before_decoding() {
    let frame = |parts: usize, per_part: usize| {
        let mut bytes = Vec::new();
        for _ in 0..parts {
            let msg = pb::NodeMessage {
                msg: Some(pb::node_message::Msg::Traces(pb::TraceBatch {
                    first_seq: 0,
                    objects: vec![pb::TraceObject::default(); per_part],
                })),
            };
            bytes.extend(msg.encode_to_vec());
        }
        let mut framed = BytesMut::new();
        framed.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        framed.extend_from_slice(&bytes);
        framed
    };
    let mut codec = TracerCodec::with_max_objects(1 << 20, 10);
    match codec.decode(&mut frame(1, 10)).unwrap() {
        Some(NodeMessage::Traces(b)) => assert_eq!(b.objects.len(), 10),
        other => panic!("{other:?}"),
    }
    let mut codec = TracerCodec::with_max_objects(1 << 20, 10);
    let err = codec.decode(&mut frame(1, 11)).unwrap_err();
    assert!(
        matches!(err, FrameError::TooManyObjects { count: 11, max: 10 }),
        "{err}"
    );
    assert_eq!(err.kind(), "too_many_objects");
    let mut codec = TracerCodec::with_max_objects(1 << 20, 10);
    let err = codec.decode(&mut frame(3, 4)).unwrap_err();
    assert!(
        matches!(err, FrameError::TooManyObjects { count: 11, .. }),
        "{err}"
    );
}

/// A random protobuf `TraceObject` body, mostly of the plain shape, sometimes with what the
/// fast path leaves to prost (unknown fields, other wire types, bad UTF-8, odd enum values,
/// repeated fields, over-long varints).
fn arb_object_bytes() -> impl Strategy<Value = Vec<u8>> {
    let field = prop_oneof![
        60 => (1u8..=8, proptest::collection::vec(any::<u8>(), 0..12)).prop_map(|(n, mut b)| {
            // A known field with its own wire type; strings mostly valid UTF-8.
            let mut out = Vec::new();
            match n {
                2..=4 => {
                    out.push(n << 3);
                    let v = if n == 4 { u64::from_le_bytes([b.first().copied().unwrap_or(0), 3, 0, 0, 0, 0, 0, 0x80]) } else { u64::from(b.first().copied().unwrap_or(0) % if n == 2 { 9 } else { 5 }) };
                    prost::encoding::encode_varint(v, &mut out);
                }
                _ => {
                    if b.len() % 7 != 1 {
                        b.retain(|c| c.is_ascii());
                    }
                    out.push((n << 3) | 2);
                    prost::encoding::encode_varint(b.len() as u64, &mut out);
                    out.extend_from_slice(&b);
                }
            }
            out
        }),
        1 => proptest::collection::vec(any::<u8>(), 1..6),
        1 => Just(vec![(9 << 3) | 5, 1, 2, 3, 4]),
        1 => Just(vec![2 << 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
    ];
    proptest::collection::vec(field, 0..10).prop_map(|f| f.concat())
}

/// A random frame body: mostly one `traces` field, sometimes two, another message, or junk.
fn arb_batch_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::option::of(any::<u64>()),
        proptest::collection::vec(arb_object_bytes(), 0..6),
        any::<bool>(),
    )
        .prop_map(|(first, objects, seq_last)| {
            let mut body = Vec::new();
            let mut seq = Vec::new();
            if let Some(first) = first {
                seq.push(1 << 3);
                prost::encoding::encode_varint(first, &mut seq);
            }
            if !seq_last {
                body.extend_from_slice(&seq);
            }
            for o in &objects {
                body.push((2 << 3) | 2);
                prost::encoding::encode_varint(o.len() as u64, &mut body);
                body.extend_from_slice(o);
            }
            if seq_last {
                body.extend_from_slice(&seq);
            }
            let mut frame = vec![(2 << 3) | 2];
            prost::encoding::encode_varint(body.len() as u64, &mut frame);
            frame.extend_from_slice(&body);
            frame
        })
}

fn arb_frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => arb_batch_frame(),
        1 => (arb_batch_frame(), arb_batch_frame()).prop_map(|(a, b)| [a, b].concat()),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
        1 => (batch_or_ping(), 0usize..40).prop_map(|(f, cut)| f[..f.len().saturating_sub(cut)].to_vec()),
    ]
}

fn batch_or_ping() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(encode_node_frame(NodeMessage::Ping(7))[LENGTH_PREFIX_BYTES..].to_vec()),
        proptest::collection::vec(any::<String>(), 1..4).prop_map(|t| {
            let msgs = sample_messages(&t);
            let m = msgs
                .into_iter()
                .find(|m| matches!(m, NodeMessage::Traces(_)))
                .unwrap();
            encode_node_frame(m)[LENGTH_PREFIX_BYTES..].to_vec()
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    /// The `TraceBatch` fast path decodes exactly what prost decodes, and fails exactly
    /// where and how prost fails, on random and mutated frames.
    #[test]
    fn fast_batch_decoding_agrees_with_prost(frame in arb_frame()) {
        let codec = TracerCodec::new(1 << 20);
        let fast = format!("{:?}", codec.message(BytesMut::from(&frame[..])));
        let prost = format!("{:?}", decode_node_message_with_prost(&frame));
        prop_assert_eq!(fast, prost);
    }
}

#[test]
fn the_fast_path_takes_the_frames_forwarders_send() {
    let batch = TraceBatch {
        first_seq: 5,
        objects: (0..3).map(|i| trace(i, "é")).collect(),
    };
    let frame = encode_node_frame(NodeMessage::Traces(batch.clone()))
        .split_off(LENGTH_PREFIX_BYTES)
        .freeze();
    let fast = batch::decode(&frame).expect("the plain shape");
    assert_eq!(fast, batch);
    assert_eq!(fast.objects.capacity(), 3);
    // Every string is a slice of the frame, not a copy.
    let within = |t: &Text| {
        let (p, f) = (t.as_ptr() as usize, frame.as_ptr() as usize);
        t.is_empty() || (p >= f && p + t.len() <= f + frame.len())
    };
    for o in &fast.objects {
        assert!(within(&o.namespace) && within(&o.hostname) && within(&o.thread_id));
        assert!(within(&o.machine) && o.human.as_ref().is_none_or(within));
    }
}
