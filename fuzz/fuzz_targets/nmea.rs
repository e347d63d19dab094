//! Fuzz target: the gateway's NMEA framer and sentence parser (`gateway/src/sources/gps/`,
//! compiled in here by path so the target does not build the whole gateway). Properties
//! checked on every input:
//! - no panic, whatever the bytes and however they are split;
//! - framing does not depend on the chunking (whole input vs. the input split at its first
//!   byte's value);
//! - every sentence handed over is at most `max_len` bytes, and every parsed sentence's
//!   latitude and longitude are finite and within ±90 / ±180 degrees.
#![no_main]

#[path = "../../gateway/src/sources/gps/framer.rs"]
#[allow(dead_code, missing_docs)]
mod framer;
#[path = "../../gateway/src/sources/gps/nmea.rs"]
#[allow(dead_code, missing_docs)]
mod nmea;

use libfuzzer_sys::fuzz_target;

fn frame(chunks: &[&[u8]], opts: nmea::ParseOptions) -> (Vec<Vec<u8>>, framer::FramerStats) {
    let mut f = framer::Framer::new(framer::FramerConfig::default());
    let mut lines = Vec::new();
    for c in chunks {
        f.push(c, |line| {
            assert!(line.len() <= framer::DEFAULT_MAX_LEN);
            if let Ok(p) = nmea::parse(line, opts) {
                check(&p.sentence);
            }
            lines.push(line.to_vec());
        });
    }
    (lines, f.stats())
}

fn check(s: &nmea::Sentence) {
    let pos = match s {
        nmea::Sentence::Rmc(r) => (r.lat, r.lon),
        nmea::Sentence::Gga(g) => (g.lat, g.lon),
        nmea::Sentence::Gns(g) => (g.lat, g.lon),
        _ => (None, None),
    };
    if let Some(lat) = pos.0 {
        assert!(lat.is_finite() && lat.abs() <= 90.0, "lat {lat}");
    }
    if let Some(lon) = pos.1 {
        assert!(lon.is_finite() && lon.abs() <= 180.0, "lon {lon}");
    }
}

fuzz_target!(|input: &[u8]| {
    let opts = nmea::ParseOptions {
        allow_missing_checksum: input.first().is_some_and(|b| b & 1 == 1),
    };
    let whole = frame(&[input], opts);
    let at = usize::from(input.first().copied().unwrap_or(0)).min(input.len());
    let (a, b) = input.split_at(at);
    let split = frame(&[a, b], opts);
    assert_eq!(whole, split);
    // Every line alone through the parser too (the parser must not rely on the framer).
    for line in input.split(|&b| b == b'\n') {
        if let Ok(p) = nmea::parse(line, opts) {
            check(&p.sentence);
        }
    }
});
