//! Fuzz target: the firmware-proto streaming decoder with arbitrary bytes in arbitrary
//! chunkings. Properties checked on every input:
//! - no panic, whatever the bytes and however they are split;
//! - the results do not depend on the chunking (fed whole vs. in the fuzzer's chunks);
//! - every decoded message re-encodes to a frame that decodes to the same message.
#![no_main]

use firmware_proto::{Decoder, MAX_CONTENT, MAX_FRAME, Message, encode};
use libfuzzer_sys::fuzz_target;

fn decode_all(chunks: &[&[u8]]) -> Vec<Result<Message, firmware_proto::Error>> {
    let mut decoder = Decoder::<MAX_CONTENT>::new();
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend(decoder.feed(chunk));
    }
    out
}

fuzz_target!(|input: &[u8]| {
    // First byte seeds the chunk sizes (1..=64), the rest is the byte stream.
    let Some((&seed, bytes)) = input.split_first() else {
        return;
    };
    let mut chunks = Vec::new();
    let mut rest = bytes;
    let mut step = usize::from(seed % 64) + 1;
    while !rest.is_empty() {
        let n = step.min(rest.len());
        let (a, b) = rest.split_at(n);
        chunks.push(a);
        rest = b;
        step = (step * 7 + 3) % 64 + 1;
    }
    let chunked = decode_all(&chunks);
    let whole = decode_all(&[bytes]);
    assert_eq!(chunked, whole, "results depend on the chunking");
    for msg in whole.into_iter().flatten() {
        let mut buf = [0u8; MAX_FRAME];
        let frame = encode(&msg, &mut buf).expect("a decoded message re-encodes");
        let again = decode_all(&[frame]);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].as_ref().ok(), Some(&msg), "round trip");
    }
});
