//! Decoder throughput: decodes many 32-byte frames fed in 4 KiB chunks and prints frames/s.
//!
//! `cargo run --release -p firmware-proto --features std --example decode_bench [frames]`
//! (default 20 000 000 frames). Without `std` the CRC uses the small MCU table.

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use firmware_proto::{Decoder, MAX_CONTENT, MAX_FRAME, Message, PodOutcome, encode};

/// Frames in the input buffer, decoded again and again (fits in L2, like a serial stream).
const FRAMES_PER_PASS: usize = 4096;
/// Bytes handed to `feed` at a time, like one read from a serial port.
const CHUNK: usize = 4096;

fn main() {
    let total: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("frames: a positive integer"))
        .unwrap_or(20_000_000);

    // A POD event whose frame is exactly 32 bytes on the wire; the device_seq varies so that
    // the frames are not all alike.
    let mut stream = Vec::with_capacity(FRAMES_PER_PASS * 32);
    let mut buf = [0u8; MAX_FRAME];
    for i in 0..FRAMES_PER_PASS {
        let msg = Message::Pod {
            device_seq: 0x1000_0000 + i as u32,
            outcome: PodOutcome::Delivered,
            stop_ref: Some(heapless::String::try_from("STOP-00000042").unwrap()),
            order_ref: None,
            recipient: None,
            evidence: None,
        };
        let frame = encode(&msg, &mut buf).unwrap();
        assert_eq!(frame.len(), 32, "frame is {} bytes", frame.len());
        stream.extend_from_slice(frame);
    }

    let mut decoder = Decoder::<MAX_CONTENT>::new();
    let mut decoded = 0usize;
    let mut checksum = 0u64;
    let passes = total.div_ceil(FRAMES_PER_PASS);
    let start = Instant::now();
    for _ in 0..passes {
        for chunk in stream.chunks(CHUNK) {
            for result in decoder.feed(chunk) {
                if let Ok(Message::Pod { device_seq, .. }) = result {
                    decoded += 1;
                    checksum = checksum.wrapping_add(u64::from(device_seq));
                } else {
                    panic!("bad frame: {result:?}");
                }
            }
        }
    }
    let elapsed = start.elapsed();
    let secs = elapsed.as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let (rate, mib_s) = (
        decoded as f64 / secs,
        (decoded * 32) as f64 / secs / (1024.0 * 1024.0),
    );
    println!(
        "decoded {decoded} frames of 32 bytes in {:.3} s: {:.2} M frames/s, {mib_s:.0} MiB/s \
         (checksum {checksum})",
        secs,
        rate / 1e6
    );
}
