//! NMEA parser throughput on the gpsd captures in `gateway/tests/data/nmea/`.
//!
//! ```text
//! cargo run --release -p waymark-gateway --example nmea_bench [seconds per figure, default 3]
//! ```
//!
//! Prints three figures: `parse` (sentences/s through `nmea::parse` alone, every framed
//! sentence of every capture, including the ones it rejects), `parse ok` (only the sentences
//! that parse) and `core` (bytes through framer + parser + epoch assembly + hygiene).

use std::error::Error;
use std::hint::black_box;
use std::time::{Duration, Instant};

use waymark_gateway::sources::gps::framer::{Framer, FramerConfig};
use waymark_gateway::sources::gps::nmea::{self, ParseOptions};
use waymark_gateway::sources::gps::{GnssConfig, GnssCore};

fn main() -> Result<(), Box<dyn Error>> {
    let secs: f64 = match std::env::args().nth(1) {
        Some(s) => s.parse()?,
        None => 3.0,
    };
    let budget = Duration::from_secs_f64(secs);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/nmea");
    let mut names: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    names.sort();

    // All captures without gpsd's `#` lines, as one stream, and its sentences.
    let mut stream = Vec::new();
    for path in &names {
        for line in std::fs::read(path)?.split_inclusive(|&b| b == b'\n') {
            if !line.starts_with(b"#") {
                stream.extend_from_slice(line);
            }
        }
    }
    let mut sentences: Vec<Vec<u8>> = Vec::new();
    Framer::new(FramerConfig::default()).push(&stream, |s| sentences.push(s.to_vec()));
    let ok: Vec<Vec<u8>> = sentences
        .iter()
        .filter(|s| nmea::parse(s, ParseOptions::default()).is_ok())
        .cloned()
        .collect();
    println!(
        "{} files, {} bytes, {} sentences ({} parse)",
        names.len(),
        stream.len(),
        sentences.len(),
        ok.len()
    );

    for (label, set) in [("parse", &sentences), ("parse ok", &ok)] {
        let (n, dt) = run(budget, || {
            for s in set {
                black_box(nmea::parse(black_box(s), ParseOptions::default()).is_ok());
            }
            set.len()
        });
        println!("{label:>9}: {:>6.2} M sentences/s", n as f64 / dt / 1e6);
    }
    let (bytes, dt) = run(budget, || {
        let mut core = GnssCore::new(GnssConfig::default());
        let mut fixes = 0usize;
        core.push(black_box(&stream), |_| fixes += 1);
        black_box(fixes);
        stream.len()
    });
    let per_byte = sentences.len() as f64 / stream.len() as f64;
    println!(
        "{:>9}: {:>6.1} MB/s = {:.2} M sentences/s (framer + parser + epochs + hygiene)",
        "core",
        bytes as f64 / dt / 1e6,
        bytes as f64 * per_byte / dt / 1e6
    );
    Ok(())
}

/// Runs `round` until `budget` has passed; returns the units it reported and the seconds.
fn run(budget: Duration, mut round: impl FnMut() -> usize) -> (usize, f64) {
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < budget {
        n += round();
    }
    (n, start.elapsed().as_secs_f64())
}
