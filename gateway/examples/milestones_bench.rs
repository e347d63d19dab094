//! Milestone detector throughput: a synthetic trip (1 Hz positions and speed, a cargo
//! temperature every 10 s, a tick every second) through `milestones::Engine`.
//!
//! ```text
//! cargo run --release -p waymark-gateway --example milestones_bench [seconds, default 3]
//! ```
//!
//! Prints readings/s through `on_reading` + `tick` with a two-stop manifest and one
//! compartment, and the same with the state serialized to JSON after every call (what the
//! integration persists with the events).

use std::error::Error;
use std::hint::black_box;
use std::time::{Duration, Instant};

use waymark_gateway::milestones::{DetectorConfig, Engine, LATITUDE, LONGITUDE, SPEED, manifest};
use waymark_wire::{Reading, Value};

const T0: i64 = 1_795_420_800_000;

fn readings() -> Vec<Reading> {
    let mut out = Vec::new();
    let r = |signal: &str, v: f64, t: i64| Reading {
        signal: signal.into(),
        value: Value::Num(v),
        unit: String::new(),
        time: t,
        source: "bench".into(),
    };
    // Two hours: stand 10 min, go north 20 m/s for 100 min (speed reported 0 in every third
    // ten-minute span), stand.
    for s in 0..7200_i64 {
        let t = T0 + s * 1000;
        let moving = (600..6600).contains(&s) && (s / 600) % 3 != 0;
        #[allow(clippy::cast_precision_loss)]
        let lat = 48.1 + (s.clamp(600, 6600) - 600) as f64 * 20.0 / 111_195.0;
        out.push(r(LATITUDE, lat, t));
        out.push(r(LONGITUDE, 11.5, t));
        out.push(r(SPEED, if moving { 72.0 } else { 0.0 }, t));
        if s % 10 == 0 {
            out.push(r(
                "Vehicle.Cargo.Front.Temperature",
                4.0 + (s % 700) as f64 / 100.0,
                t,
            ));
        }
    }
    out
}

fn plan() -> Result<manifest::Plan, Box<dyn Error>> {
    let m = serde_json::json!({
        "version": 1, "trip_id": "BENCH",
        "stops": [
            {"stop_id": "A", "name": "A", "geofence": {"type": "circle", "center": {"lat": 48.1, "lon": 11.5}, "radius_m": 200}},
            {"stop_id": "B", "name": "B", "arrival_window": {"start": "2026-11-23T08:00:00Z", "end": "2026-11-23T08:30:00Z"},
             "geofence": {"type": "polygon", "vertices": [
                {"lat": 48.45, "lon": 11.49}, {"lat": 48.45, "lon": 11.51}, {"lat": 48.47, "lon": 11.51}, {"lat": 48.47, "lon": 11.49}]}}
        ],
        "compartments": [{"name": "Front", "limits": {"min_c": 2, "max_c": 8}}]
    });
    manifest::parse(&serde_json::to_vec(&m)?).map_err(|e| e.to_string().into())
}

fn run(
    rs: &[Reading],
    persist: bool,
    budget: Duration,
) -> Result<(u64, Duration, usize), Box<dyn Error>> {
    let start = Instant::now();
    let (mut n, mut events) = (0u64, 0usize);
    while start.elapsed() < budget {
        let mut e = Engine::new(DetectorConfig::default());
        e.apply(T0, Some(plan()?));
        let mut last = 0;
        for r in rs {
            let mut out = e.on_reading(r.time, black_box(r));
            if r.time != last {
                out.extend(e.tick(r.time));
                last = r.time;
            }
            events += out.len();
            if persist {
                black_box(serde_json::to_vec(e.state())?);
            }
            n += 1;
        }
    }
    Ok((n, start.elapsed(), events))
}

fn main() -> Result<(), Box<dyn Error>> {
    let secs: f64 = match std::env::args().nth(1) {
        Some(s) => s.parse()?,
        None => 3.0,
    };
    let rs = readings();
    println!("{} readings per trip", rs.len());
    for (label, persist) in [("detect", false), ("detect + state JSON", true)] {
        let (n, dt, events) = run(&rs, persist, Duration::from_secs_f64(secs))?;
        #[allow(clippy::cast_precision_loss)]
        let rate = n as f64 / dt.as_secs_f64();
        println!("{label}: {rate:.0} readings/s ({n} readings, {events} events, {dt:.2?})");
    }
    Ok(())
}
