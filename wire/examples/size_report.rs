//! Bytes on the wire per record and encode/decode throughput of telemetry batches.
//!
//! A record is one instant of 1 Hz truck data: a GPS fix (latitude, longitude, speed, heading,
//! altitude) and 10 CAN / temperature signals, synthesised from a deterministic 2-hour trip
//! (city, highway, stops) with each signal quantised like its real sensor (J1939 resolutions,
//! 1-Wire 0.0625 °C, GPS 1e-7°). Two streams are measured:
//!
//! - `dense`: all 15 readings every second (nothing filtered away);
//! - `deadband`: the GPS fix every second, each other signal only when it moved beyond its
//!   deadband since the last kept value, or 60 s passed (what the pipeline's filter sends).
//!
//! Run: `cargo run --release -p waymark-wire --example size_report`

use std::time::Instant;

use waymark_wire::telemetry::{self, COMPRESSION_ZSTD};
use waymark_wire::{Reading, Value};

/// Deterministic PRNG (splitmix64), so every run reports the same sizes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// Rounds to a multiple of `q`, then to the decimal a sensor driver would print.
fn quantise(v: f64, q: f64, decimals: i32) -> f64 {
    let p = 10f64.powi(decimals);
    ((v / q).round() * q * p).round() / p
}

struct Signal {
    name: &'static str,
    unit: &'static str,
    source: &'static str,
    quantum: f64,
    decimals: i32,
    deadband: f64,
    /// Offset of the CAN frame / sensor read within the second, ms.
    phase_ms: i64,
}

const SIGNALS: [Signal; 10] = [
    sig(
        "Vehicle.Powertrain.CombustionEngine.Speed",
        "rpm",
        "can0",
        0.125,
        3,
        25.0,
        13,
    ),
    sig(
        "Vehicle.Powertrain.CombustionEngine.ECT",
        "celsius",
        "can0",
        1.0,
        0,
        1.0,
        101,
    ),
    sig(
        "Vehicle.Powertrain.CombustionEngine.EOT",
        "celsius",
        "can0",
        0.03125,
        5,
        0.5,
        102,
    ),
    sig(
        "Vehicle.Powertrain.FuelSystem.RelativeLevel",
        "%",
        "can0",
        0.4,
        1,
        0.4,
        350,
    ),
    sig(
        "Vehicle.LowVoltageBattery.CurrentVoltage",
        "V",
        "can0",
        0.05,
        2,
        0.1,
        420,
    ),
    sig(
        "Vehicle.Exterior.AirTemperature",
        "celsius",
        "can0",
        0.03125,
        5,
        0.5,
        505,
    ),
    sig(
        "Vehicle.Chassis.Accelerator.PedalPosition",
        "%",
        "can0",
        0.4,
        1,
        2.0,
        14,
    ),
    sig("Vehicle.OBD.EngineLoad", "%", "can0", 1.0, 0, 5.0, 15),
    sig(
        "Vehicle.Cargo.Zone1.Temperature",
        "celsius",
        "onewire",
        0.0625,
        4,
        0.2,
        700,
    ),
    sig(
        "Vehicle.Cargo.Zone2.Temperature",
        "celsius",
        "onewire",
        0.0625,
        4,
        0.2,
        760,
    ),
];

const fn sig(
    name: &'static str,
    unit: &'static str,
    source: &'static str,
    quantum: f64,
    decimals: i32,
    deadband: f64,
    phase_ms: i64,
) -> Signal {
    Signal {
        name,
        unit,
        source,
        quantum,
        decimals,
        deadband,
        phase_ms,
    }
}

fn reading(signal: &str, unit: &str, source: &str, time: i64, v: f64) -> Reading {
    Reading {
        signal: signal.into(),
        value: Value::Num(v),
        unit: unit.into(),
        time,
        source: source.into(),
    }
}

/// One second of the trip: readings of the dense and of the deadband-filtered stream.
struct Trip {
    rng: Rng,
    t_ms: i64,
    lat: f64,
    lon: f64,
    alt: f64,
    heading: f64,
    turn: f64,
    speed: f64,
    target: f64,
    state: [f64; 10],
    kept: [(f64, i64); 10],
}

impl Trip {
    fn new() -> Self {
        Trip {
            rng: Rng(7),
            t_ms: 1_795_420_370_000,
            lat: 52.520_008,
            lon: 13.404_954,
            alt: 34.0,
            heading: 80.0,
            turn: 0.0,
            speed: 0.0,
            target: 50.0,
            state: [600.0, 70.0, 75.0, 82.0, 27.8, 8.0, 0.0, 20.0, -18.0, -17.5],
            kept: [(f64::NAN, i64::MIN); 10],
        }
    }

    fn step(&mut self, dense: &mut Vec<Reading>, filtered: &mut Vec<Reading>) {
        let r = &mut self.rng;
        let s = self.t_ms / 1000;
        // Driving: a new target speed every few minutes (stop, city, highway), smooth approach.
        if s % 240 == 0 {
            self.target = [0.0, 50.0, 85.0, 85.0, 30.0][(r.next() % 5) as usize];
        }
        let accel = (self.target - self.speed).clamp(-4.0, 2.5) + r.unit() * 0.3;
        self.speed = (self.speed + accel).max(0.0);
        if s % 30 == 0 {
            self.turn = r.unit() * 2.0;
        }
        if self.speed > 1.0 {
            self.heading = (self.heading + self.turn + r.unit() * 0.3).rem_euclid(360.0);
        }
        let v = self.speed / 3.6; // m/s
        let h = self.heading.to_radians();
        self.lat += v * h.cos() / 111_320.0;
        self.lon += v * h.sin() / (111_320.0 * self.lat.to_radians().cos());
        self.alt += r.unit() * 0.3 + v * 0.002 * (s as f64 / 300.0).sin();

        let t = self.t_ms;
        let gps = [
            (
                "Vehicle.CurrentLocation.Latitude",
                "deg",
                quantise(self.lat, 1e-7, 7),
            ),
            (
                "Vehicle.CurrentLocation.Longitude",
                "deg",
                quantise(self.lon, 1e-7, 7),
            ),
            ("Vehicle.Speed", "km/h", quantise(self.speed, 0.1, 1)),
            (
                "Vehicle.CurrentLocation.Heading",
                "deg",
                quantise(self.heading, 0.1, 1),
            ),
            (
                "Vehicle.CurrentLocation.Altitude",
                "m",
                quantise(self.alt, 0.1, 1),
            ),
        ];
        for (name, unit, value) in gps {
            dense.push(reading(name, unit, "gps", t, value));
            filtered.push(reading(name, unit, "gps", t, value));
        }

        // CAN / temperature: engine follows speed, temperatures drift slowly.
        let load = (accel.max(0.0) * 30.0 + self.speed * 0.4).min(100.0);
        let st = &mut self.state;
        st[0] += ((600.0 + self.speed * 14.0) - st[0]) * 0.3 + r.unit() * 8.0;
        st[1] += ((88.0 - st[1]) * 0.01) + r.unit() * 0.05;
        st[2] += ((95.0 - st[2]) * 0.005) + r.unit() * 0.02;
        st[3] -= 0.0005 * self.speed / 50.0;
        st[4] = 27.8 + r.unit() * 0.06;
        st[5] += r.unit() * 0.01;
        st[6] = (load * 0.8 + r.unit() * 1.0).clamp(0.0, 100.0);
        st[7] = (load + r.unit() * 2.0).clamp(0.0, 100.0);
        st[8] += (-18.0 - st[8]) * 0.02 + r.unit() * 0.04;
        st[9] += (-17.5 - st[9]) * 0.02 + r.unit() * 0.04;
        for (i, sg) in SIGNALS.iter().enumerate() {
            let value = quantise(st[i], sg.quantum, sg.decimals);
            let time = t + sg.phase_ms + (r.next() % 5) as i64 - 2;
            let rd = reading(sg.name, sg.unit, sg.source, time, value);
            let (last, at) = self.kept[i];
            if last.is_nan() || (value - last).abs() >= sg.deadband || time - at >= 60_000 {
                self.kept[i] = (value, time);
                filtered.push(rd.clone());
            }
            dense.push(rd);
        }
        self.t_ms += 1000;
    }
}

/// Per-second readings of both streams over `seconds`.
fn trip(seconds: usize) -> (Vec<Vec<Reading>>, Vec<Vec<Reading>>) {
    let mut trip = Trip::new();
    let (mut dense, mut filtered) = (Vec::new(), Vec::new());
    for _ in 0..seconds {
        let (mut d, mut f) = (Vec::new(), Vec::new());
        trip.step(&mut d, &mut f);
        dense.push(d);
        filtered.push(f);
    }
    (dense, filtered)
}

/// Concatenates per-second readings into batches of `window_s` seconds.
fn batches(per_second: &[Vec<Reading>], window_s: usize) -> Vec<Vec<Reading>> {
    per_second.chunks(window_s).map(|c| c.concat()).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const SECONDS: usize = 7200;
    let (dense, filtered) = trip(SECONDS);
    println!(
        "Telemetry batch format v{}: 1 Hz truck data, {SECONDS} s trip, record = GPS fix + 10 signals",
        telemetry::FORMAT_VERSION
    );
    println!(
        "{:<9} {:>7} {:>9} {:>10} {:>10} {:>9} {:>9} {:>8}",
        "stream", "window", "readings", "B/record", "B/reading", "raw B/rec", "bound/rd", "zstd"
    );
    for (label, stream) in [("dense", &dense), ("deadband", &filtered)] {
        for window in [1, 10, 60] {
            let mut bytes = 0usize;
            let mut raw = 0usize;
            let mut bound = 0usize;
            let mut readings = 0usize;
            let mut zstd = 0usize;
            let all = batches(stream, window);
            for b in &all {
                let payload = telemetry::encode(b)?;
                bytes += payload.len();
                zstd += usize::from(payload[3] == COMPRESSION_ZSTD);
                raw += telemetry::encode_uncompressed(b)?.len();
                bound += telemetry::BATCH_OVERHEAD_BOUND
                    + b.iter().map(telemetry::reading_size_bound).sum::<usize>();
                readings += b.len();
                assert_eq!(telemetry::decode(&payload)?.len(), b.len());
            }
            println!(
                "{label:<9} {:>6}s {readings:>9} {:>10.2} {:>10.2} {:>9.2} {:>9.1} {:>7.0}%",
                window,
                bytes as f64 / SECONDS as f64,
                bytes as f64 / readings as f64,
                raw as f64 / SECONDS as f64,
                bound as f64 / readings as f64,
                100.0 * zstd as f64 / all.len() as f64,
            );
        }
    }

    // Throughput: dense 60 s batches (900 readings each), repeated to ≥ 1M readings.
    let all = batches(&dense, 60);
    let per_pass: usize = all.iter().map(Vec::len).sum();
    let passes = 1_000_000usize.div_ceil(per_pass);
    let total = per_pass * passes;
    for (label, compress) in [("zstd auto", true), ("uncompressed", false)] {
        let mut payloads = Vec::with_capacity(all.len());
        let t0 = Instant::now();
        for pass in 0..passes {
            for b in &all {
                let p = if compress {
                    telemetry::encode(b)?
                } else {
                    telemetry::encode_uncompressed(b)?
                };
                if pass == 0 {
                    payloads.push(p);
                }
            }
        }
        let enc = t0.elapsed();
        let t0 = Instant::now();
        let mut decoded = 0usize;
        for _ in 0..passes {
            for p in &payloads {
                decoded += telemetry::decode(p)?.len();
            }
        }
        let dec = t0.elapsed();
        assert_eq!(decoded, total);
        println!(
            "{label:<12}: {total} readings in 60 s batches: encode {:.0} ms ({:.1} M readings/s), \
             decode {:.0} ms ({:.1} M readings/s), total {:.0} ms",
            enc.as_secs_f64() * 1e3,
            total as f64 / enc.as_secs_f64() / 1e6,
            dec.as_secs_f64() * 1e3,
            total as f64 / dec.as_secs_f64() / 1e6,
            (enc + dec).as_secs_f64() * 1e3,
        );
    }
    Ok(())
}
