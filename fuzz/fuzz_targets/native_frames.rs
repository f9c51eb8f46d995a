//! Fuzz target: arbitrary bytes, fed in arbitrary chunks, through tracerd's native frame and
//! message decoder must never panic or allocate past the frame limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;
use tracerd_wire::native::TracerCodec;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else { return };
    let chunk = usize::from(chunk.max(1));
    let mut codec = TracerCodec::new(64 * 1024);
    let mut buf = BytesMut::new();
    for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buf.capacity() <= 64 * 1024 + 4 + 8 * 1024 + rest.len());
    }
    let _ = codec.decode_eof(&mut buf);
});
