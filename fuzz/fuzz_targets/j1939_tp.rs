//! The J1939 transport protocol reassembler: any frame sequence (time, bus, CM or DT, SA,
//! DA, payload), no panic, bounded sessions, completed messages of an allowed size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waymark_gateway::sources::can::j1939::id::J1939Id;
use waymark_gateway::sources::can::j1939::tp::{MAX_MESSAGE, MAX_SESSIONS, Reassembler};

fuzz_target!(|data: &[u8]| {
    let mut r = Reassembler::new();
    let mut now = 0u64;
    for chunk in data.chunks(12) {
        if chunk.len() < 4 {
            break;
        }
        now += u64::from(chunk[0]) * 8;
        let bus = chunk[1] & 1;
        let pgn_byte: u8 = if chunk[1] & 2 == 0 { 0xEC } else { 0xEB };
        let id = J1939Id::from_raw(
            0x1C00_0000 | u32::from(pgn_byte) << 16 | u32::from(chunk[2]) << 8 | u32::from(chunk[3] & 7),
        );
        if let Some(m) = r.on_frame(now, bus, id, &chunk[4..]) {
            assert!(m.data.len() >= 9 && m.data.len() <= MAX_MESSAGE);
        }
        assert!(r.open_sessions() <= MAX_SESSIONS);
    }
});
