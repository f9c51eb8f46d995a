//! Conformance tests against every hex example of the reference's §11, in both directions
//! (decode what a node sends; encode exactly what cardano-tracer sends), plus mux reassembly
//! under arbitrary SDU cuts and read chunks (proptest) and malformed input.

use bytes::BytesMut;
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

use super::codec::*;
use super::handshake::{check_answer, respond_to, Outcome};
use super::mux::*;
use crate::model::{DetailLevel, MachineForm, Severity, Text, TraceObject};

const MAINNET: u32 = 764_824_073;

pub(super) fn hex(text: &str) -> Vec<u8> {
    let clean: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '|')
        .collect();
    (0..clean.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&clean[i..i + 2], 16).unwrap())
        .collect()
}

/// Decodes one whole SDU stream as `local` and returns the messages.
fn decode_all(local: Mode, bytes: &[u8]) -> Vec<Message> {
    let mut codec = MuxCodec::new(local, 1 << 20);
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(m) = codec.decode(&mut buf).unwrap() {
        out.push(m);
    }
    assert!(buf.is_empty(), "undecoded tail {buf:?}");
    out
}

/// Checks an SDU as the reference prints it: header fields, and that its payload is `payload`.
fn check_sdu(sdu: &[u8], mode: Mode, protocol: u16, payload: &[u8]) {
    let header = Header::parse(sdu[..8].try_into().unwrap());
    assert_eq!(
        header,
        Header {
            timestamp: 0x00a1_b2c3,
            mode,
            protocol,
            len: payload.len() as u16
        }
    );
    assert_eq!(header.to_bytes(), sdu[..8]);
    assert_eq!(&sdu[8..], payload);
    // What the receiver (the other side) makes of it.
    let msgs = decode_all(mode.peer(), sdu);
    assert_eq!(
        msgs,
        vec![Message {
            protocol,
            payload: payload.to_vec().into()
        }]
    );
    // What our encoder sends, timestamp aside.
    let mut codec = MuxCodec::new(mode, 1 << 20);
    let mut out = BytesMut::new();
    codec
        .encode(
            Message {
                protocol,
                payload: payload.to_vec().into(),
            },
            &mut out,
        )
        .unwrap();
    assert_eq!(&out[4..], &sdu[4..]);
}

#[test]
fn e1_propose_versions() {
    let sdu = hex("00a1b2c3 0000 0009 | 82 00 a1 01 1a2d964a09");
    check_sdu(&sdu, Mode::Initiator, HANDSHAKE, &encode_propose(MAINNET));
    assert_eq!(
        decode_handshake(&sdu[8..]).unwrap(),
        Handshake::Propose(vec![(1, VersionData::Magic(MAINNET))])
    );
    let sdu1 = hex("00a1b2c3 0000 0005 8200a10101");
    check_sdu(&sdu1, Mode::Initiator, HANDSHAKE, &encode_propose(1));
}

#[test]
fn e2_accept_version() {
    let sdu = hex("00a1b2c3 8000 0008 | 83 01 01 1a2d964a09");
    check_sdu(&sdu, Mode::Responder, HANDSHAKE, &encode_accept(1, MAINNET));
    let answer = decode_handshake(&sdu[8..]).unwrap();
    assert_eq!(answer, Handshake::Accept(1, VersionData::Magic(MAINNET)));
    assert_eq!(check_answer(&answer, MAINNET).unwrap(), Outcome::Accepted);
    // The responder's decision on E1 is exactly E2.
    let proposal = decode_handshake(&hex("8200a1011a2d964a09")).unwrap();
    let (bytes, outcome) = respond_to(&proposal, MAINNET);
    assert_eq!((bytes, outcome), (sdu[8..].to_vec(), Outcome::Accepted));
}

#[test]
fn e3_refusals() {
    let a = hex("00a1b2c3 8000 0006 | 82 02 82 00 81 01");
    let mismatch = Refusal::VersionMismatch(vec![1]);
    check_sdu(&a, Mode::Responder, HANDSHAKE, &encode_refuse(&mismatch));
    assert_eq!(
        decode_handshake(&a[8..]).unwrap(),
        Handshake::Refuse(mismatch)
    );
    let b = hex("00a1b2c3800000c3820283020178bc466f7277617264696e6756657273696f6e44617461206d69736d617463683a20466f7277617264696e6756657273696f6e44617461207b6e6574776f726b4d61676963203d204e6574776f726b4d61676963207b756e4e6574776f726b4d61676963203d20317d7d202f3d20466f7277617264696e6756657273696f6e44617461207b6e6574776f726b4d61676963203d204e6574776f726b4d61676963207b756e4e6574776f726b4d61676963203d203736343832343037337d7d");
    let refused = Refusal::Refused(1, mismatch_text(1, MAINNET));
    check_sdu(&b, Mode::Responder, HANDSHAKE, &encode_refuse(&refused));
    // tracerd configured with magic 1 answers a mainnet proposal with exactly E3(b).
    let proposal = decode_handshake(&hex("8200a1011a2d964a09")).unwrap();
    let (bytes, outcome) = respond_to(&proposal, 1);
    assert_eq!(bytes, b[8..].to_vec());
    match outcome {
        Outcome::RefusedPeer("wrong_magic", text) => {
            assert!(text.contains("764824073") && text.contains(" 1"), "{text}")
        }
        other => panic!("{other:?}"),
    }
    // A proposal without version 1 gets E3(a).
    let (bytes, _) = respond_to(&decode_handshake(&hex("8200a1021a2d964a09")).unwrap(), 1);
    assert_eq!(bytes, a[8..].to_vec());
    // As initiator, a refusal is reported with its text.
    match check_answer(&decode_handshake(&b[8..]).unwrap(), 1).unwrap() {
        Outcome::RefusedByPeer("wrong_magic", text) => assert!(text.contains("764824073")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn e4_trace_object_requests() {
    let sdu = hex("00a1b2c3 8002 0007 | 83 01 f5 82 00 18 64");
    check_sdu(
        &sdu,
        Mode::Responder,
        TRACE_OBJECTS,
        &encode_trace_request(true, 100),
    );
    assert_eq!(encode_trace_request(false, 100), hex("8301f482001864"));
    assert_eq!(
        decode_trace_ask(&sdu[8..]).unwrap(),
        TraceAsk::Request {
            blocking: true,
            count: 100
        }
    );
    assert_eq!(encode_trace_done(), hex("8102"));
    assert_eq!(decode_trace_ask(&hex("8102")).unwrap(), TraceAsk::Done);
}

pub(super) fn e5_object() -> TraceObject {
    TraceObject {
        namespace: "Test.Msg".into(),
        severity: Severity::Info,
        detail: DetailLevel::Normal,
        timestamp_ns: 1_704_067_200_500_000_000,
        hostname: "h1".into(),
        thread_id: "5".into(),
        machine: r#"{"at":"2024-01-01T00:00:00.5Z","ns":"Test.Msg","data":{"kind":"X"},"sev":"Info","thread":"5","host":"h1"}"#.into(),
        form: MachineForm::Line,
        human: None,
    }
}

#[test]
fn e5_trace_object_reply() {
    let sdu = hex("00a1b2c30002009a82039f89008078697b226174223a22323032342d30312d30315430303a30303a30302e355a222c226e73223a22546573742e4d7367222c2264617461223a7b226b696e64223a2258227d2c22736576223a22496e666f222c22746872656164223a2235222c22686f7374223a226831227d9f68546573742e4d7367ff81018101d903e8a2011a659200802b1b000000746a5288006268316135ff");
    assert_eq!(sdu.len(), 162);
    check_sdu(&sdu, Mode::Initiator, TRACE_OBJECTS, &sdu[8..]);
    assert_eq!(decode_trace_reply(&sdu[8..]).unwrap(), vec![e5_object()]);
    // The simulated node encodes it byte for byte.
    assert_eq!(encode_trace_reply(&[e5_object()]), sdu[8..].to_vec());
    // Empty non-blocking reply; a human text; old-style namespace segments.
    assert_eq!(encode_trace_reply(&[]), hex("820380"));
    assert!(decode_trace_reply(&hex("820380")).unwrap().is_empty());
    let mut with_human = e5_object();
    with_human.human = Some("abc".into());
    let bytes = encode_trace_reply(std::slice::from_ref(&with_human));
    assert!(hex_of(&bytes).contains("890081636162637869"));
    assert_eq!(decode_trace_reply(&bytes).unwrap(), vec![with_human]);
    let segments = hex_of(&sdu[8..]).replace(
        "9f68546573742e4d7367ff",
        "9f6454657374634d7367ff", // ["Test", "Msg"]
    );
    assert_eq!(
        decode_trace_reply(&hex(&segments)).unwrap()[0].namespace,
        "Test.Msg"
    );
    // A node before 8.3 sends toMachine as Maybe Text.
    let old = hex_of(&sdu[8..]).replace("89008078697b", "890080817869 7b");
    let o = &decode_trace_reply(&hex(&old)).unwrap()[0];
    assert_eq!(
        (o.form, o.machine.as_str()),
        (MachineForm::Line, e5_object().machine.as_str())
    );
}

pub(super) fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn e6_ekg_requests() {
    let cases = [
        ("00a1b2c3 8001 0004 82008102", EkgRequest::Updated),
        ("00a1b2c3 8001 0004 82008100", EkgRequest::All),
        (
            "00a1b2c3 8001 0015 820082019f6e7274732e67632e6e756d5f676373ff",
            EkgRequest::Named(vec!["rts.gc.num_gcs".into()]),
        ),
    ];
    for (text, req) in cases {
        let sdu = hex(text);
        check_sdu(&sdu, Mode::Responder, EKG, &encode_ekg_request(&req));
        assert_eq!(decode_ekg_ask(&sdu[8..]).unwrap(), EkgAsk::Req(req));
    }
    let done = hex("00a1b2c3 8001 0002 8101");
    check_sdu(&done, Mode::Responder, EKG, &encode_ekg_done());
    assert_eq!(decode_ekg_ask(&done[8..]).unwrap(), EkgAsk::Done);
}

#[test]
fn e7_ekg_response() {
    let sdu = hex("00a1b2c300010040820182009f826e7274732e67632e6e756d5f67637382000782704d656d2e7265736964656e745f696e7482011a075bcd158266785f7265616c820263312e35ff");
    let metrics = vec![
        ("rts.gc.num_gcs".to_string(), EkgValue::Counter(7)),
        ("Mem.resident_int".to_string(), EkgValue::Gauge(123_456_789)),
        ("x_real".to_string(), EkgValue::Label("1.5".into())),
    ];
    check_sdu(&sdu, Mode::Initiator, EKG, &encode_ekg_response(&metrics));
    assert_eq!(decode_ekg_response(&sdu[8..]).unwrap(), metrics);
    let empty = hex("00a1b2c3 0001 0005 | 82 01 82 00 80");
    check_sdu(&empty, Mode::Initiator, EKG, &encode_ekg_response(&[]));
    assert!(decode_ekg_response(&empty[8..]).unwrap().is_empty());
    let negative = vec![("g".to_string(), EkgValue::Gauge(-5))];
    assert!(hex_of(&encode_ekg_response(&negative)).ends_with("820124ff"));
    assert_eq!(
        decode_ekg_response(&encode_ekg_response(&negative)).unwrap(),
        negative
    );
}

#[test]
fn e8_initial_data_point_exchange() {
    let ask = hex("00a1b2c3 8003 0003 820180");
    check_sdu(
        &ask,
        Mode::Responder,
        DATA_POINTS,
        &encode_data_point_request(&[]),
    );
    assert_eq!(
        decode_data_point_ask(&ask[8..]).unwrap(),
        DataPointAsk::Request(vec![])
    );
    let reply = hex("00a1b2c3 0003 0003 820380");
    check_sdu(
        &reply,
        Mode::Initiator,
        DATA_POINTS,
        &encode_data_point_reply(&[]),
    );
    assert!(decode_data_point_reply(&reply[8..]).unwrap().is_empty());
}

#[test]
fn e9_data_point_request_and_reply() {
    let ask = hex("00a1b2c3 8003 0011 | 82 01 9f 68 4e6f6465496e666f 63 466f6f ff");
    let names = vec!["NodeInfo".to_string(), "Foo".to_string()];
    check_sdu(
        &ask,
        Mode::Responder,
        DATA_POINTS,
        &encode_data_point_request(&names),
    );
    assert_eq!(
        decode_data_point_ask(&ask[8..]).unwrap(),
        DataPointAsk::Request(names)
    );
    let reply = hex("00a1b2c30003002782039f82684e6f6465496e666f815f4f7b226e694e616d65223a227231227dff8263466f6f80ff");
    let values = vec![
        ("NodeInfo".to_string(), Some(br#"{"niName":"r1"}"#.to_vec())),
        ("Foo".to_string(), None),
    ];
    check_sdu(
        &reply,
        Mode::Initiator,
        DATA_POINTS,
        &encode_data_point_reply(&values),
    );
    assert_eq!(decode_data_point_reply(&reply[8..]).unwrap(), values);
    // Several chunks, and a definite byte string, decode too.
    let chunked = hex("82039f82684e6f6465496e666f815f427b22427d22ff ff");
    assert_eq!(
        decode_data_point_reply(&chunked).unwrap()[0].1.as_deref(),
        Some(&b"{\"}\""[..])
    );
    let definite = hex("820381 82 63466f6f 81 42 7b7d");
    assert_eq!(
        decode_data_point_reply(&definite).unwrap(),
        vec![("Foo".to_string(), Some(b"{}".to_vec()))]
    );
    let done = hex("00a1b2c3 8003 0002 8102");
    check_sdu(
        &done,
        Mode::Responder,
        DATA_POINTS,
        &encode_data_point_done(),
    );
}

/// A trace reply of exactly `len` bytes (one object, padded machine text).
fn reply_of_len(len: usize) -> Vec<u8> {
    let mut o = e5_object();
    o.machine = Text::new();
    let base = encode_trace_reply(std::slice::from_ref(&o)).len();
    (len - base - 10..=len - base)
        .map(|l| {
            o.machine = "x".repeat(l).into();
            encode_trace_reply(std::slice::from_ref(&o))
        })
        .find(|b| b.len() == len)
        .unwrap()
}

#[test]
fn e10_message_larger_than_one_sdu() {
    let payload = reply_of_len(20_000);
    assert_eq!(payload.len(), 20_000);
    let mut codec = MuxCodec::new(Mode::Initiator, 1 << 20);
    let mut wire = BytesMut::new();
    codec
        .encode(
            Message {
                protocol: TRACE_OBJECTS,
                payload: payload.clone().into(),
            },
            &mut wire,
        )
        .unwrap();
    assert_eq!(wire.len(), 20_016);
    assert_eq!(&wire[4..8], &hex("0002 3000")[..]);
    assert_eq!(&wire[8 + 12_288 + 4..8 + 12_288 + 8], &hex("0002 1e20")[..]);
    let msgs = decode_all(Mode::Responder, &wire);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].payload, payload);
    assert_eq!(decode_trace_reply(&msgs[0].payload).unwrap().len(), 1);
}

fn mux_error(local: Mode, bytes: &[u8], max: usize, handshake_done: bool) -> MuxError {
    let mut codec = MuxCodec::new(local, max);
    if handshake_done {
        codec.end_handshake();
    }
    let mut buf = BytesMut::from(bytes);
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("no error for {bytes:02x?}"),
            Err(e) => return e,
        }
    }
}

#[test]
fn malformed_mux_input_is_named() {
    let kind = |hex_text: &str, max: usize, done: bool| {
        mux_error(Mode::Responder, &hex(hex_text), max, done).kind()
    };
    assert_eq!(kind("00000000 0002 0000", 1 << 20, true), "sdu_empty");
    assert_eq!(
        kind("00000000 8002 0002 8102", 1 << 20, true),
        "sdu_wrong_mode"
    );
    assert_eq!(
        kind("00000000 0004 0001 00", 1 << 20, true),
        "unknown_mini_protocol"
    );
    assert_eq!(
        kind("00000000 0000 0005 8200a10101", 1 << 20, true),
        "unknown_mini_protocol"
    );
    assert_eq!(kind("00000000 0002 0010 5f", 8, true), "message_too_large");
    assert_eq!(
        kind("00000000 0002 0001 ff", 1 << 20, true),
        "cbor_malformed"
    );
    assert_eq!(
        kind("00000000 0002 0001 1c", 1 << 20, true),
        "cbor_malformed"
    );
    assert_eq!(
        kind("00000000 0002 0003 5f 61 61", 1 << 20, true),
        "cbor_malformed"
    );
    // Nesting is bounded.
    let deep = format!("00000000 0002 0040 {}", "81".repeat(64));
    assert_eq!(kind(&deep, 1 << 20, true), "cbor_malformed");
    // A message split over many SDUs that outgrows the bound.
    let mut many = String::new();
    for _ in 0..10 {
        many.push_str("00000000 0002 0004 9f9f9f9f ");
    }
    assert_eq!(kind(&many, 32, true), "message_too_large");
}

#[test]
fn well_formed_but_wrong_messages_are_codec_errors() {
    assert!(decode_trace_reply(&hex("8102")).is_err());
    assert!(decode_trace_reply(&hex("82039f8100ff")).is_err());
    assert!(decode_ekg_response(&hex("820182008182000007")).is_err());
    assert!(decode_handshake(&hex("a0")).is_err());
    assert!(decode_data_point_reply(&hex("82039f8263466f6f8201ff")).is_err());
    // A bad severity index.
    let bad =
        hex_of(&encode_trace_reply(&[e5_object()])).replace("81018101d903e8", "81098101d903e8");
    assert!(decode_trace_reply(&hex(&bad)).is_err());
}

#[test]
fn a_reply_is_decoded_into_one_vec_sized_for_the_request() {
    let objects: Vec<TraceObject> = (0..100).map(|_| e5_object()).collect();
    let reply = encode_trace_reply(&objects);
    assert_eq!(reply[2], 0x9f, "a node's list is indefinite");
    let got = decode_trace_reply_to(&reply, 100).unwrap();
    assert_eq!(got, objects);
    assert_eq!(got.capacity(), 100, "sized once, not grown by doubling");
    // More objects than asked for are still all decoded.
    assert_eq!(decode_trace_reply_to(&reply, 10).unwrap(), objects);
    // A forged definite length reserves no more than the bytes could hold.
    let forged = hex("82 03 9b 0000ffffffffffff 8900");
    assert!(decode_trace_reply_to(&forged, 100).is_err());
    let empty = decode_trace_reply_to(&hex("820380"), 65_535).unwrap();
    assert_eq!(empty.capacity(), 0);
}

pub(super) fn arb_object() -> impl Strategy<Value = TraceObject> {
    (
        "[a-zA-Z.]{1,30}",
        0usize..8,
        0usize..4,
        -2_000_000_000_000_000_000i64..4_000_000_000_000_000_000,
        proptest::option::of("[ -~]{0,40}"),
        0usize..3000,
    )
        .prop_map(|(ns, sev, det, ts, human, pad)| TraceObject {
            namespace: ns.into(),
            severity: Severity::ALL[sev],
            detail: [
                DetailLevel::Minimal,
                DetailLevel::Normal,
                DetailLevel::Detailed,
                DetailLevel::Maximum,
            ][det],
            timestamp_ns: ts,
            hostname: "h".into(),
            thread_id: "1".into(),
            machine: format!("{{\"pad\":\"{}\"}}", "é".repeat(pad)).into(),
            form: MachineForm::Line,
            human: human.map(Into::into),
        })
}

/// One message for a mini-protocol, as the forwarder sends it.
fn arb_message() -> impl Strategy<Value = (u16, Vec<u8>)> {
    prop_oneof![
        proptest::collection::vec(arb_object(), 0..4)
            .prop_map(|objs| (TRACE_OBJECTS, encode_trace_reply(&objs))),
        proptest::collection::vec(("[a-z_.]{1,20}", any::<i64>()), 0..20).prop_map(|m| {
            let m: Vec<_> = m
                .into_iter()
                .map(|(n, v)| (n, EkgValue::Gauge(v)))
                .collect();
            (EKG, encode_ekg_response(&m))
        }),
        proptest::collection::vec(
            ("[A-Za-z]{1,12}", proptest::option::of("[ -~]{0,300}")),
            0..4
        )
        .prop_map(|v| {
            let v: Vec<_> = v
                .into_iter()
                .map(|(n, j)| (n, j.map(String::into_bytes)))
                .collect();
            (DATA_POINTS, encode_data_point_reply(&v))
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Messages cut into SDUs of arbitrary sizes (a message split across SDUs, several
    /// messages in one SDU), SDUs of the three protocols interleaved, the whole stream read in
    /// arbitrary chunks: every message comes out whole, in order, and decodes.
    #[test]
    fn reassembly_is_independent_of_sdu_cuts_and_read_chunks(
        messages in proptest::collection::vec(arb_message(), 1..12),
        cuts in proptest::collection::vec(1usize..=65_535, 1..40),
        small_cuts in proptest::collection::vec(1usize..64, 1..40),
        order in proptest::collection::vec(0usize..3, 1..200),
        reads in proptest::collection::vec(1usize..5000, 1..50),
    ) {
        // One continuous byte stream per protocol, cut into SDUs.
        let mut streams: [Vec<u8>; 3] = Default::default();
        for (p, bytes) in &messages {
            streams[usize::from(*p) - 1].extend_from_slice(bytes);
        }
        let mut sdus: [std::collections::VecDeque<Vec<u8>>; 3] = Default::default();
        let mut k = 0;
        for (i, stream) in streams.iter().enumerate() {
            let mut rest = &stream[..];
            while !rest.is_empty() {
                let cut = if k % 3 == 0 { small_cuts[k % small_cuts.len()] } else { cuts[k % cuts.len()] };
                let n = cut.min(rest.len());
                let header = Header { timestamp: k as u32, mode: Mode::Initiator, protocol: (i + 1) as u16, len: n as u16 };
                let mut sdu = header.to_bytes().to_vec();
                sdu.extend_from_slice(&rest[..n]);
                sdus[i].push_back(sdu);
                rest = &rest[n..];
                k += 1;
            }
        }
        let mut wire = Vec::new();
        let mut j = 0;
        while sdus.iter().any(|q| !q.is_empty()) {
            let want = order[j % order.len()];
            j += 1;
            let p = (0..3).map(|d| (want + d) % 3).find(|p| !sdus[*p].is_empty()).unwrap();
            wire.extend(sdus[p].pop_front().unwrap());
        }
        let mut codec = MuxCodec::new(Mode::Responder, 16 << 20);
        codec.end_handshake();
        let mut buf = BytesMut::new();
        let mut got: [Vec<Vec<u8>>; 3] = Default::default();
        let mut pos = 0;
        let mut r = 0;
        while pos < wire.len() {
            let n = reads[r % reads.len()].min(wire.len() - pos);
            r += 1;
            buf.extend_from_slice(&wire[pos..pos + n]);
            pos += n;
            while let Some(m) = codec.decode(&mut buf).unwrap() {
                got[usize::from(m.protocol) - 1].push(m.payload.to_vec());
            }
        }
        prop_assert!(buf.is_empty());
        for p in [EKG, TRACE_OBJECTS, DATA_POINTS] {
            let want: Vec<Vec<u8>> = messages.iter().filter(|(q, _)| *q == p).map(|(_, b)| b.clone()).collect();
            prop_assert_eq!(&got[usize::from(p) - 1], &want);
        }
        for (p, bytes) in &messages {
            match *p {
                TRACE_OBJECTS => { decode_trace_reply(bytes).unwrap(); }
                EKG => { decode_ekg_response(bytes).unwrap(); }
                _ => { decode_data_point_reply(bytes).unwrap(); }
            }
        }
    }

    /// Trace objects survive encode → decode exactly.
    #[test]
    fn trace_objects_round_trip(objs in proptest::collection::vec(arb_object(), 0..5)) {
        prop_assert_eq!(decode_trace_reply_to(&encode_trace_reply(&objs), 3).unwrap(), objs.clone());
        prop_assert_eq!(decode_trace_reply(&encode_trace_reply(&objs)).unwrap(), objs);
    }

    /// Arbitrary bytes never panic the mux or the codecs.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut codec = MuxCodec::new(Mode::Responder, 4096);
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = codec.decode(&mut buf) {}
        let _ = decode_trace_reply(&bytes);
        let _ = decode_ekg_response(&bytes);
        let _ = decode_data_point_reply(&bytes);
        let _ = decode_handshake(&bytes);
    }
}

/// An SDU of `protocol` from the responder, stamped `timestamp`.
fn sdu(timestamp: u32, protocol: u16, payload: &[u8]) -> Vec<u8> {
    let header = Header {
        timestamp,
        mode: Mode::Responder,
        protocol,
        len: payload.len() as u16,
    };
    let mut out = header.to_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

#[test]
fn each_message_carries_the_timestamp_of_the_sdu_it_began_in() {
    let mut codec = MuxCodec::new(Mode::Initiator, 1 << 20);
    // An EKG reply split over two SDUs (a 3-item array: 0x83 01 02 | 03), then in one SDU the
    // end of nothing and two whole data-point replies.
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&sdu(100, EKG, &[0x83, 0x01, 0x02]));
    buf.extend_from_slice(&sdu(200, EKG, &[0x03]));
    buf.extend_from_slice(&sdu(300, DATA_POINTS, &[0x01, 0x82, 0x01]));
    buf.extend_from_slice(&sdu(400, DATA_POINTS, &[0x02]));
    let mut seen = Vec::new();
    while let Some(m) = codec.decode(&mut buf).unwrap() {
        seen.push((m.protocol, codec.last_timing().unwrap().remote_micros));
    }
    assert_eq!(
        seen,
        vec![(EKG, 100), (DATA_POINTS, 300), (DATA_POINTS, 300)]
    );
}

proptest! {
    /// The one-allocation namespace decoder gives what joining the decoded parts with `.`
    /// gives, for definite and indefinite lists of definite and chunked strings.
    #[test]
    fn namespace_decodes_as_its_parts_joined(
        parts in proptest::collection::vec(("[a-zé.]{0,12}", 0usize..4), 0..6),
        indefinite in any::<bool>(),
    ) {
        let mut enc = minicbor::Encoder::new(Vec::new());
        if indefinite {
            enc.begin_array().unwrap();
        } else {
            enc.array(parts.len() as u64).unwrap();
        }
        for (part, chunks) in &parts {
            if *chunks == 0 {
                enc.str(part).unwrap();
            } else {
                // Cut into `chunks` pieces at character boundaries.
                enc.begin_str().unwrap();
                let chars: Vec<char> = part.chars().collect();
                let step = chars.len().div_ceil(*chunks).max(1);
                for piece in chars.chunks(step) {
                    enc.str(&piece.iter().collect::<String>()).unwrap();
                }
                enc.end().unwrap();
            }
        }
        if indefinite {
            enc.end().unwrap();
        }
        let bytes = enc.into_writer();
        let mut d = minicbor::Decoder::new(&bytes);
        let got = namespace(&mut d).unwrap();
        let want = parts.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>().join(".");
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(got.capacity(), want.len());
        prop_assert_eq!(d.position(), bytes.len());
    }
}

/// Whether `text`'s bytes lie inside `payload`'s (a slice of it, not a copy).
fn inside(payload: &bytes::Bytes, text: &Text) -> bool {
    let range = payload.as_ptr_range();
    let t = text.shared_bytes().as_ptr_range();
    text.is_empty() || (range.start <= t.start && t.end <= range.end)
}

#[test]
fn a_shared_reply_slices_every_definite_string_out_of_the_payload() {
    let mut with_human = e5_object();
    with_human.human = Some("a human line".into());
    let objects = vec![e5_object(), with_human, e5_object()];
    let payload = bytes::Bytes::from(encode_trace_reply(&objects));
    let got = decode_trace_reply_shared(&payload, 3).unwrap();
    assert_eq!(got, objects);
    assert_eq!(got.capacity(), 3);
    for o in &got {
        for t in [&o.namespace, &o.hostname, &o.thread_id, &o.machine] {
            assert!(
                inside(&payload, t),
                "{t:?} is a copy, not a slice of the reply"
            );
        }
        if let Some(h) = &o.human {
            assert!(inside(&payload, h), "{h:?} is a copy");
        }
    }
    // A detached copy owns its strings.
    let kept = got[1].detached();
    assert!(!inside(&payload, &kept.machine));
    assert_eq!(kept, got[1]);
}

#[test]
fn a_shared_reply_joins_chunked_strings_and_old_namespaces_into_owned_ones() {
    let reply = hex_of(&encode_trace_reply(&[e5_object()]));
    // The host name "h1" (62 6831) as two chunks, the namespace as two parts.
    let chunked = reply
        .replace("6268316135ff", "7f61686131ff6135ff")
        .replace("9f68546573742e4d7367ff", "826454657374634d7367");
    let payload = bytes::Bytes::from(hex(&chunked));
    let got = decode_trace_reply_shared(&payload, 1).unwrap();
    assert_eq!(got, decode_trace_reply(&payload).unwrap());
    assert_eq!(got, vec![e5_object()]);
    assert!(
        !inside(&payload, &got[0].hostname),
        "a chunked string is joined"
    );
    assert!(!inside(&payload, &got[0].namespace), "parts are joined");
    assert!(inside(&payload, &got[0].machine));
    // The definite single-part namespace `81 68 …` is a slice as well.
    let definite = reply.replace("9f68546573742e4d7367ff", "8168546573742e4d7367");
    let payload = bytes::Bytes::from(hex(&definite));
    let got = decode_trace_reply_shared(&payload, 1).unwrap();
    assert_eq!(got, vec![e5_object()]);
    assert!(inside(&payload, &got[0].namespace));
}

#[test]
fn a_shared_reply_refuses_bad_utf8_with_the_owned_decoders_error() {
    let reply = hex_of(&encode_trace_reply(&[e5_object()]));
    for bad in [
        reply.replace("6268316135ff", "6268ff6135ff"), // host name
        reply.replace("9f68546573742e4d7367ff", "9f68546573742eff7367ff"), // namespace
        reply.replace("9f68546573742e4d7367ff", "8168546573742eff7367"), // definite list
    ] {
        let payload = bytes::Bytes::from(hex(&bad));
        let owned = decode_trace_reply(&payload);
        let shared = decode_trace_reply_shared(&payload, 1);
        match (&owned, &shared) {
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            _ => panic!("owned {owned:?} but shared {shared:?}"),
        }
    }
    let host = reply.replace("6268316135ff", "6268ff6135ff");
    let err = decode_trace_reply_shared(&bytes::Bytes::from(hex(&host)), 1).unwrap_err();
    assert_eq!(err.kind(), "cbor_unexpected");
    assert!(
        err.to_string().contains("utf-8") || err.to_string().contains("UTF-8"),
        "{err}"
    );
}

proptest! {
    /// The shared decoder gives exactly what the owned one gives, objects or error, on valid
    /// replies, on replies with one byte changed, and on replies cut short.
    #[test]
    fn shared_and_owned_decoders_agree(
        objs in proptest::collection::vec(arb_object(), 1..4),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        let mut bytes = encode_trace_reply(&objs);
        let i = at.index(bytes.len());
        if cut {
            bytes.truncate(i);
        } else {
            bytes[i] = byte;
        }
        let payload = bytes::Bytes::from(bytes);
        let owned = decode_trace_reply_to(&payload, 4);
        let shared = decode_trace_reply_shared(&payload, 4);
        match (owned, shared) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
            (a, b) => prop_assert!(false, "owned {:?}, shared {:?}", a, b),
        }
    }
}
