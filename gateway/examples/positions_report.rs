//! Adaptive position logging: reduction ratio, error and per-fix cost.
//!
//! ```text
//! cargo run --release -p waymark-gateway --example positions_report
//! ```
//!
//! Tracks: every gpsd capture in `gateway/tests/data/nmea/` (through the GNSS core), the
//! demo's recorded trip (`waymark demo`, 1 Hz), and a deterministic winding drive (one hour at
//! 1 Hz, random-walk heading, ±2 m noise). For each: raw fixes, kept fixes with the default
//! `[pipeline.positions]`, the ratio to a fixed 1 s log, the largest distance of a raw fix
//! from the reconstructed track, and the time per fix (all readings of a fix offered, decided
//! and emitted).

use std::error::Error;
use std::time::{Duration, Instant};

use waymark_gateway::pipeline::positions::{
    Emitted, Positions, PositionsConfig, local_xy, segment_distance,
};
use waymark_gateway::sources::gps::readings::{
    DEFAULT_UERE_M, HEADING, LATITUDE, LONGITUDE, SPEED, fix_readings,
};
use waymark_gateway::sources::gps::{GnssConfig, GnssCore};
use waymark_wire::{Reading, Timestamp, Value};

const T0: Timestamp = 1_795_420_370_000;

/// One fix's readings and its (t, lat, lon).
struct Fix {
    readings: Vec<Reading>,
    at: (Timestamp, f64, f64),
}

fn num(signal: &str, v: f64, t: Timestamp) -> Reading {
    Reading {
        signal: signal.into(),
        value: Value::Num(v),
        unit: String::new(),
        time: t,
        source: "gps".into(),
    }
}

fn nmea_track(path: &std::path::Path) -> Result<Vec<Fix>, Box<dyn Error>> {
    let bytes = std::fs::read(path)?;
    let mut core = GnssCore::new(GnssConfig::default());
    let mut fixes = Vec::new();
    core.push(&bytes, |f| fixes.push(f));
    fixes.extend(core.flush());
    let mut out: Vec<Fix> = Vec::new();
    for f in fixes {
        let (Some(t), Some(lat), Some(lon)) = (f.utc_ms, f.lat, f.lon) else {
            continue;
        };
        if out.last().is_some_and(|l| l.at.0 >= t) {
            continue;
        }
        out.push(Fix {
            readings: fix_readings(&f, t, "gps", DEFAULT_UERE_M),
            at: (t, lat, lon),
        });
    }
    Ok(out)
}

fn demo_track() -> Vec<Fix> {
    let mut by_t: std::collections::BTreeMap<u32, Vec<Reading>> = Default::default();
    for line in waymark_gateway::demo::trip::build() {
        if line.is_event {
            continue;
        }
        let signal = line.body["signal"].as_str().unwrap_or_default();
        if ![LATITUDE, LONGITUDE, SPEED, HEADING].contains(&signal) {
            continue;
        }
        let Some(v) = line.body["value"].as_f64() else {
            continue;
        };
        let t = T0 + i64::from(line.t_s) * 1000;
        by_t.entry(line.t_s).or_default().push(num(signal, v, t));
    }
    by_t.into_values()
        .filter_map(|readings| {
            let get = |s: &str| readings.iter().find(|r| r.signal == s)?.value.as_f64();
            let at = (readings[0].time, get(LATITUDE)?, get(LONGITUDE)?);
            Some(Fix { readings, at })
        })
        .collect()
}

/// One hour at 1 Hz: speed 30 to 90 km/h, heading random walk, ±2 m noise; an LCG keeps it
/// identical on every run.
fn winding_track() -> Vec<Fix> {
    let mut seed: u64 = 0x5eed;
    let mut rnd = move || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    let (lat0, lon0) = (51.885_f64, 4.286_f64);
    let m_per_deg = 6_371_008.8 * std::f64::consts::PI / 180.0;
    let (mut n, mut e, mut heading, mut turn) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    (0..3600)
        .map(|i| {
            turn = (turn + (rnd() - 0.5) * 2.0).clamp(-8.0, 8.0);
            heading = (heading + turn).rem_euclid(360.0);
            let speed = 60.0 + 30.0 * ((i as f64) / 300.0).sin();
            let v = speed / 3.6;
            n += v * heading.to_radians().cos();
            e += v * heading.to_radians().sin();
            let lat = lat0 + (n + (rnd() - 0.5) * 4.0) / m_per_deg;
            let lon = lon0 + (e + (rnd() - 0.5) * 4.0) / (m_per_deg * lat0.to_radians().cos());
            let t = T0 + i * 1000;
            Fix {
                readings: vec![
                    num(LATITUDE, lat, t),
                    num(LONGITUDE, lon, t),
                    num(HEADING, heading, t),
                    num(SPEED, speed, t),
                ],
                at: (t, lat, lon),
            }
        })
        .collect()
}

/// Runs the logger once; returns the kept (t, lat, lon).
fn log(cfg: &PositionsConfig, track: &[Fix]) -> Vec<(Timestamp, f64, f64)> {
    let mut p = Positions::new(cfg);
    let mut out = Emitted::default();
    let start = Instant::now();
    for (i, f) in track.iter().enumerate() {
        let now = start + Duration::from_secs(i as u64);
        for r in &f.readings {
            let _ = p.offer(now, r.clone(), &mut out);
        }
    }
    p.finish(&mut out);
    let lat = out.kept.iter().filter(|r| r.signal == LATITUDE);
    let lon = out.kept.iter().filter(|r| r.signal == LONGITUDE);
    lat.zip(lon)
        .filter_map(|(a, b)| Some((a.time, a.value.as_f64()?, b.value.as_f64()?)))
        .collect()
}

/// Largest distance of a raw fix (between the first and last kept point) from the track.
fn max_error(raw: &[(Timestamp, f64, f64)], kept: &[(Timestamp, f64, f64)]) -> f64 {
    let mut worst: f64 = 0.0;
    for &(t, lat, lon) in raw {
        let i = kept.partition_point(|k| k.0 < t);
        if i == 0 || i >= kept.len() || kept[i].0 == t {
            continue;
        }
        let (a, b) = (kept[i - 1], kept[i]);
        let p = local_xy(a.1, a.2, lat, lon);
        let end = local_xy(a.1, a.2, b.1, b.2);
        worst = worst.max(segment_distance(p, (0.0, 0.0), end));
    }
    worst
}

fn main() -> Result<(), Box<dyn Error>> {
    let cfg = PositionsConfig::default();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/nmea");
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    paths.sort();
    let mut tracks: Vec<(String, Vec<Vec<Fix>>)> = Vec::new();
    let mut nmea = Vec::new();
    for p in &paths {
        nmea.push(nmea_track(p)?);
    }
    // The captures are separate short recordings: each is logged on its own, totals shown.
    let name = format!("gpsd captures ({} files)", nmea.len());
    tracks.push((name, nmea));
    tracks.push((
        "demo trip (waymark demo, 1 Hz)".to_string(),
        vec![demo_track()],
    ));
    tracks.push((
        "winding drive, 1 h at 1 Hz".to_string(),
        vec![winding_track()],
    ));

    println!(
        "{:<38} {:>6} {:>6} {:>9} {:>11} {:>10}",
        "track", "raw", "kept", "kept/raw", "max err m", "ns/fix"
    );
    for (name, segments) in &tracks {
        let (mut raw_n, mut kept_n, mut err) = (0usize, 0usize, 0.0f64);
        for track in segments {
            let raw: Vec<_> = track.iter().map(|f| f.at).collect();
            let kept = log(&cfg, track);
            err = err.max(max_error(&raw, &kept));
            raw_n += raw.len();
            kept_n += kept.len();
        }
        if raw_n == 0 {
            continue;
        }
        // Per-fix cost: repeat for at least a second.
        let start = Instant::now();
        let mut runs = 0u32;
        while start.elapsed() < Duration::from_secs(1) {
            for track in segments {
                std::hint::black_box(log(&cfg, track));
            }
            runs += 1;
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(runs) / raw_n as f64;
        println!(
            "{:<38} {:>6} {:>6} {:>8.1}% {:>11.2} {:>10.0}",
            name,
            raw_n,
            kept_n,
            100.0 * kept_n as f64 / raw_n as f64,
            err,
            ns
        );
    }
    println!(
        "config: curve_error_m {} m, moving period {} s, distance {} m, heading {}°, speed {} km/h",
        cfg.curve_error_m,
        cfg.moving.period_s,
        cfg.moving.distance_m,
        cfg.moving.heading_deg,
        cfg.moving.speed_delta_kmh
    );
    Ok(())
}
