//! Fuzz target: arbitrary bytes, fed in arbitrary chunks, through the Ouroboros mux decoder,
//! and every reassembled message through each Cardano message decoder: never a panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;
use tracerd_wire::cardano::codec;
use tracerd_wire::cardano::mux::{Mode, MuxCodec};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else { return };
    let chunk = usize::from(chunk.max(1));
    for mode in [Mode::Initiator, Mode::Responder] {
        let mut mux = MuxCodec::new(mode, 64 * 1024);
        let mut buf = BytesMut::new();
        'feed: for piece in rest.chunks(chunk) {
            buf.extend_from_slice(piece);
            loop {
                match mux.decode(&mut buf) {
                    Ok(Some(msg)) => {
                        let b = &msg.payload[..];
                        let _ = codec::decode_handshake(b);
                        let _ = codec::decode_ekg_ask(b);
                        let _ = codec::decode_ekg_response(b);
                        let _ = codec::decode_trace_ask(b);
                        let _ = codec::decode_trace_reply(b);
                        let _ = codec::decode_data_point_ask(b);
                        let _ = codec::decode_data_point_reply(b);
                        mux.end_handshake();
                    }
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
    }
});
