//! CAN decode + filter throughput on the idle-truck capture replayed in memory.
//!
//! ```text
//! cargo run --release -p waymark-gateway --example can_bench [seconds, default 3] [passes]
//! ```
//!
//! The capture (`gateway/tests/data/can/logs/css-j1939-truck-idle-10s.candump.log`, 3582
//! frames) is parsed once; then each pass feeds every frame through the J1939 decoder
//! (FMS set, TP, DM1, VIN) and every reading through the pipeline's per-signal filter with
//! the CAN filter defaults, advancing the stamps by the capture's 10 s per pass. Prints
//! frames/s on one core. With a second argument it runs exactly that many passes and no
//! timing loop (for `valgrind --tool=callgrind`: instructions / (passes × 3582)).

use std::error::Error;
use std::hint::black_box;
use std::time::{Duration, Instant};

use waymark_gateway::config::PipelineConfig;
use waymark_gateway::pipeline::Filter;
use waymark_gateway::sources::can::candump::parse_line;
use waymark_gateway::sources::can::config::DecodeConfig;
use waymark_gateway::sources::can::decode::Decoder;
use waymark_gateway::sources::can::default_filters;
use waymark_gateway::sources::can::frame::Frame;

fn main() -> Result<(), Box<dyn Error>> {
    let secs: f64 = match std::env::args().nth(1) {
        Some(s) => s.parse()?,
        None => 3.0,
    };
    let fixed_passes: Option<u64> = std::env::args().nth(2).map(|s| s.parse()).transpose()?;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/can/logs/css-j1939-truck-idle-10s.candump.log"
    );
    let text = std::fs::read_to_string(path)?;
    let mut frames: Vec<(i64, Frame)> = Vec::new();
    let mut first = None;
    for line in text.lines() {
        if let Some(f) = parse_line(line)? {
            let t = f.time_us.unwrap_or(0);
            let t0 = *first.get_or_insert(t);
            frames.push(((t - t0) / 1000, f.frame));
        }
    }
    let span_ms = frames.last().map_or(0, |f| f.0) + 1;
    let cfg = DecodeConfig {
        j1939: true,
        nmea2000: false,
        dbc: &[],
    };
    let mut decoder = Decoder::new("can", &cfg)?;
    let pipeline = PipelineConfig {
        signals: default_filters(&[cfg]),
        ..PipelineConfig::default()
    };
    let mut filter = Filter::new(&pipeline);
    let base: i64 = 1_800_000_000_000;
    let (mut readings, mut events) = (Vec::new(), Vec::new());
    let (mut kept, mut seen) = (0u64, 0u64);
    let mut pass = 0i64;
    let mut run_pass = |pass: i64, kept: &mut u64, seen: &mut u64| {
        for (ms, f) in &frames {
            let t = pass * span_ms + ms;
            decoder.on_frame(t as u64, base + t, 0, f, &mut readings, &mut events);
            for r in readings.drain(..) {
                *seen += 1;
                if filter.keep(r.time, &r) {
                    *kept += 1;
                }
                black_box(&r);
            }
            for e in events.drain(..) {
                decoder.confirm(&e);
            }
        }
    };
    if let Some(n) = fixed_passes {
        for p in 0..n as i64 {
            run_pass(p, &mut kept, &mut seen);
        }
        println!(
            "{} passes, {} frames, {seen} readings decoded, {kept} kept by the filter",
            n,
            n as usize * frames.len()
        );
        return Ok(());
    }
    let budget = Duration::from_secs_f64(secs);
    let start = Instant::now();
    while start.elapsed() < budget {
        run_pass(pass, &mut kept, &mut seen);
        pass += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let total = pass as f64 * frames.len() as f64;
    println!(
        "decode+filter: {:.0} frames/s ({pass} passes of {} frames in {elapsed:.2} s; \
         {seen} readings decoded, {kept} kept = {:.2}%)",
        total / elapsed,
        frames.len(),
        100.0 * kept as f64 / seen.max(1) as f64
    );
    Ok(())
}
