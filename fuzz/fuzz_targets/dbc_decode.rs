//! DBC text → our decoder: any text, no panic; every signal of what parses decodes any
//! payload (0 to 64 bytes) without panicking, and multiplexing checks never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use waymark_gateway::sources::can::dbc::DbcFile;

fuzz_target!(|data: &[u8]| {
    // First 64 bytes: the payload; the rest: DBC text.
    let (payload, text) = data.split_at(data.len().min(64));
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let Ok(file) = DbcFile::parse(text, "fuzz.dbc") else {
        return;
    };
    for m in &file.messages {
        for (i, s) in m.signals.iter().enumerate() {
            let _ = m.present(i, payload);
            let _ = s.decode(payload, true);
        }
    }
});
