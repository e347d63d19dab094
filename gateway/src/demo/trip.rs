//! The demo's recorded trip: a refrigerated truck leaves a depot near Rotterdam, delivers to
//! three stops and returns. Deterministic (fixed seed), sampled at 1 Hz: position, speed,
//! heading, engine speed, fuel level, coolant, odometer, two reefer compartments and the rear
//! door; plus the events an on-vehicle driver app pushes (trip start, departures, arrivals,
//! proof of delivery, trip end).
//!
//! It is generated rather than stored so the repository carries no large fixture, and it is
//! the same every run, so the demo's figures are comparable between versions.

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::json;

/// One stop of the route.
struct Stop {
    name: &'static str,
    lat: f64,
    lon: f64,
    /// Seconds parked there.
    dwell_s: u32,
    order: &'static str,
}

const DEPOT: (f64, f64) = (51.8853, 4.2863);
const STOPS: [Stop; 3] = [
    Stop {
        name: "Albert Heijn DC Zaandam",
        lat: 51.9225,
        lon: 4.4792,
        dwell_s: 600,
        order: "SO-48213",
    },
    Stop {
        name: "Jumbo Veghel",
        lat: 51.8990,
        lon: 4.5560,
        dwell_s: 480,
        order: "SO-48214",
    },
    Stop {
        name: "Lidl Waddinxveen",
        lat: 52.0420,
        lon: 4.6510,
        dwell_s: 540,
        order: "SO-48215",
    },
];
const CRUISE_KMH: f64 = 72.0;

/// One line for the jsonl source, at a trip-relative second.
#[derive(Debug, Clone)]
pub struct TripLine {
    /// Seconds since the trip started.
    pub t_s: u32,
    /// The JSON line (without the newline). Its `time` is filled in by [`TripLine::render`].
    pub body: serde_json::Value,
    /// Whether this is an event (answered by the gateway) or a reading.
    pub is_event: bool,
}

impl TripLine {
    /// The line with its `time` set from the trip's start (UTC ms).
    pub fn render(&self, start_ms: i64) -> String {
        let mut body = self.body.clone();
        body["time"] = json!(waymark_wire::time::format_rfc3339_ms(
            start_ms + i64::from(self.t_s) * 1000
        ));
        body.to_string()
    }
}

fn haversine_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1, la2, lo2) = (
        a.0.to_radians(),
        a.1.to_radians(),
        b.0.to_radians(),
        b.1.to_radians(),
    );
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6_371_000.0 * h.sqrt().asin()
}

fn bearing_deg(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, la2, dlo) = (a.0.to_radians(), b.0.to_radians(), (b.1 - a.1).to_radians());
    let y = dlo.sin() * la2.cos();
    let x = la1.cos() * la2.sin() - la1.sin() * la2.cos() * dlo.cos();
    (y.atan2(x).to_degrees() + 360.0) % 360.0
}

fn round_to(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}

fn reading(t_s: u32, signal: &str, value: serde_json::Value, unit: &str) -> TripLine {
    TripLine {
        t_s,
        body: json!({"kind": "reading", "signal": signal, "value": value, "unit": unit}),
        is_event: false,
    }
}

fn event(t_s: u32, type_: &str, priority: &str, data: serde_json::Value) -> TripLine {
    TripLine {
        t_s,
        body: json!({"kind": "event", "type": type_, "priority": priority, "data": data}),
        is_event: true,
    }
}

/// Vehicle state carried through the simulation.
struct Sim {
    rng: StdRng,
    t: u32,
    pos: (f64, f64),
    heading: f64,
    odometer_km: f64,
    fuel_pct: f64,
    coolant_c: f64,
    comp: [f64; 2],
    lines: Vec<TripLine>,
}

impl Sim {
    fn tick(&mut self, speed_kmh: f64, door_open: bool, engine_on: bool) {
        let t = self.t;
        let noise: f64 = self.rng.random_range(-0.04..0.04);
        let rpm = if engine_on {
            620.0 + speed_kmh * 16.5 + noise * 500.0
        } else {
            0.0
        };
        self.fuel_pct -= if engine_on {
            0.0009 + speed_kmh * 0.00002
        } else {
            0.0
        };
        self.coolant_c += if engine_on {
            (88.0 - self.coolant_c) * 0.01
        } else {
            (15.0 - self.coolant_c) * 0.002
        };
        for (i, c) in self.comp.iter_mut().enumerate() {
            let setpoint = if i == 0 { -18.0 } else { 3.0 };
            let drift = if door_open {
                0.08
            } else {
                (setpoint - *c) * 0.02
            };
            *c += drift + self.rng.random_range(-0.03..0.03);
        }
        let mut push = |signal: &str, v: serde_json::Value, unit: &str| {
            self.lines.push(reading(t, signal, v, unit));
        };
        push(
            "Vehicle.CurrentLocation.Latitude",
            json!(round_to(self.pos.0, 7)),
            "deg",
        );
        push(
            "Vehicle.CurrentLocation.Longitude",
            json!(round_to(self.pos.1, 7)),
            "deg",
        );
        push("Vehicle.Speed", json!(round_to(speed_kmh, 1)), "km/h");
        push(
            "Vehicle.CurrentLocation.Heading",
            json!(round_to(self.heading, 1)),
            "deg",
        );
        push(
            "Vehicle.Powertrain.CombustionEngine.Speed",
            json!(round_to(rpm, 0)),
            "rpm",
        );
        push(
            "Vehicle.Powertrain.FuelSystem.RelativeLevel",
            json!(round_to(self.fuel_pct, 1)),
            "percent",
        );
        push(
            "Vehicle.Powertrain.CombustionEngine.ECT",
            json!(round_to(self.coolant_c, 0)),
            "celsius",
        );
        push(
            "Vehicle.TraveledDistance",
            json!(round_to(self.odometer_km, 1)),
            "km",
        );
        push(
            "Vehicle.Cargo.Compartment1.Temperature",
            json!(round_to(self.comp[0], 2)),
            "celsius",
        );
        push(
            "Vehicle.Cargo.Compartment2.Temperature",
            json!(round_to(self.comp[1], 2)),
            "celsius",
        );
        push("Vehicle.Cargo.RearDoor.IsOpen", json!(door_open), "");
        push(
            "Vehicle.LowVoltageSystemState.IsIgnitionOn",
            json!(engine_on),
            "",
        );
        self.t += 1;
    }

    fn drive_to(&mut self, to: (f64, f64)) {
        let from = self.pos;
        let dist = haversine_m(from, to) * 1.25; // roads are not straight lines
        self.heading = bearing_deg(from, to);
        let mut done = 0.0;
        let mut speed = 0.0f64;
        while done < dist {
            let remaining = dist - done;
            // Accelerate at ~1 m/s², brake in the last 250 m, small traffic noise.
            let target = if remaining < 250.0 {
                (remaining / 250.0 * CRUISE_KMH).max(8.0)
            } else {
                CRUISE_KMH
            };
            speed = (speed + 3.6).min(target) + self.rng.random_range(-1.5..1.5);
            speed = speed.clamp(0.0, 90.0);
            let step = speed / 3.6;
            done += step;
            let f = (done / dist).min(1.0);
            self.pos = (from.0 + (to.0 - from.0) * f, from.1 + (to.1 - from.1) * f);
            self.odometer_km += step / 1000.0;
            self.tick(speed, false, true);
        }
        self.pos = to;
    }

    fn park(&mut self, seconds: u32, door_open_between: (u32, u32)) {
        for s in 0..seconds {
            let door = s >= door_open_between.0 && s < door_open_between.1;
            self.tick(0.0, door, s < 30 || s + 30 > seconds);
        }
    }
}

/// Builds the whole trip, sorted by time.
pub fn build() -> Vec<TripLine> {
    let mut sim = Sim {
        rng: StdRng::seed_from_u64(0x0057_4159_4d41_524b),
        t: 0,
        pos: DEPOT,
        heading: 0.0,
        odometer_km: 184_233.0,
        fuel_pct: 81.0,
        coolant_c: 40.0,
        comp: [-18.2, 3.1],
        lines: Vec::new(),
    };
    let trip = "TRIP-2026-11-23-042";
    sim.park(60, (0, 0));
    sim.lines.push(event(
        sim.t,
        "waymark.trip.started",
        "milestone",
        json!({"trip_id": trip}),
    ));
    for (i, stop) in STOPS.iter().enumerate() {
        let stop_id = format!("{trip}/{}", i + 1);
        sim.lines.push(event(
            sim.t,
            "waymark.milestone.departed",
            "milestone",
            json!({
            "trip_id": trip, "from": if i == 0 { "depot" } else { STOPS[i - 1].name },
            "location": {"lat": round_to(sim.pos.0, 6), "lon": round_to(sim.pos.1, 6)}}),
        ));
        sim.drive_to((stop.lat, stop.lon));
        sim.lines.push(event(
            sim.t,
            "waymark.milestone.arrived",
            "milestone",
            json!({
            "trip_id": trip, "stop_id": stop_id, "stop_name": stop.name, "order_ref": stop.order,
            "location": {"lat": stop.lat, "lon": stop.lon}}),
        ));
        sim.park(stop.dwell_s, (60, 60 + stop.dwell_s / 3));
        sim.lines.push(event(
            sim.t.saturating_sub(20),
            "waymark.pod.delivered",
            "alert",
            json!({
            "trip_id": trip, "stop_id": stop_id, "order_ref": stop.order,
            "recipient": "signed at dock", "outcome": "delivered",
            "compartment_temperatures_c": [round_to(sim.comp[0], 1), round_to(sim.comp[1], 1)]}),
        ));
    }
    sim.lines.push(event(
        sim.t,
        "waymark.milestone.departed",
        "milestone",
        json!({
        "trip_id": trip, "from": STOPS[2].name}),
    ));
    sim.drive_to(DEPOT);
    sim.park(45, (0, 0));
    sim.lines.push(event(
        sim.t,
        "waymark.trip.ended",
        "milestone",
        json!({
        "trip_id": trip, "distance_km": round_to(sim.odometer_km - 184_233.0, 1)}),
    ));
    sim.lines.sort_by_key(|l| l.t_s);
    sim.lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trip_is_deterministic_and_plausible() {
        let a = build();
        let b = build();
        assert_eq!(a.len(), b.len());
        assert_eq!(a[100].render(0), b[100].render(0));
        let events: Vec<_> = a.iter().filter(|l| l.is_event).collect();
        assert_eq!(events.len(), 1 + 3 * 3 + 1 + 1);
        let duration = a.last().map(|l| l.t_s).unwrap_or(0);
        assert!((1800..7200).contains(&duration), "trip lasts {duration} s");
        assert!(a.windows(2).all(|w| w[0].t_s <= w[1].t_s));
    }
}
