//! The candump line parser: any bytes, no panic; a parsed frame respects the frame
//! invariants and an error's column is inside the line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waymark_gateway::sources::can::candump::parse_line;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    match parse_line(line) {
        Ok(Some(f)) => {
            let max = if f.frame.fd { 64 } else { 8 };
            assert!(f.frame.data().len() <= max);
            assert!(f.frame.id <= 0x1FFF_FFFF);
        }
        Ok(None) => {}
        Err(e) => assert!(e.column >= 1 && e.column <= line.chars().count() + 1),
    }
});
