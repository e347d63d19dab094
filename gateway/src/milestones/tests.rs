//! Scripted scenarios through the whole [`Engine`]; every scenario runs twice, once straight
//! and once serializing and restoring the state after every input, and both runs must give
//! the same events. Also the documented JSON Schemas are checked against every event.

use proptest::prelude::*;
use serde_json::json;
use uuid::Uuid;
use waymark_wire::{Reading, Value};

use super::geo::offset;
use super::*;
use crate::store::{Lane, NewEvent};

pub(crate) const T0: i64 = 1_795_420_800_000; // 2026-11-23T08:00:00Z
const DEPOT: (f64, f64) = (48.1, 11.5);
const CUSTOMER: (f64, f64) = (48.12, 11.53);

pub(crate) struct Harness {
    engine: Engine,
    restore: bool,
    pub events: Vec<Emitted>,
}

fn reading(t: i64, signal: &str, value: Value) -> Reading {
    Reading {
        signal: signal.into(),
        value,
        unit: String::new(),
        time: t,
        source: "test".into(),
    }
}

impl Harness {
    pub fn new(restore: bool) -> Self {
        Harness {
            engine: Engine::new(DetectorConfig::default()),
            restore,
            events: Vec::new(),
        }
    }

    fn after(&mut self, out: Vec<Emitted>) {
        self.events.extend(out);
        if self.restore {
            let json = serde_json::to_string(self.engine.state()).unwrap();
            let state: State = serde_json::from_str(&json).unwrap();
            assert_eq!(&state, self.engine.state(), "state round-trips");
            self.engine = Engine::restore(self.engine.config().clone(), state);
        }
    }

    pub fn manifest(&mut self, s: i64, m: &serde_json::Value) {
        let plan = manifest::parse(&serde_json::to_vec(m).unwrap()).unwrap();
        let out = self.engine.apply(T0 + s * 1000, Some(plan));
        self.after(out);
    }

    pub fn read(&mut self, s: i64, signal: &str, value: Value) {
        let t = T0 + s * 1000;
        let out = self.engine.on_reading(t, &reading(t, signal, value));
        self.after(out);
    }

    /// A fix `metres` from `at` (north-east), with a speed.
    pub fn fix(&mut self, s: i64, at: (f64, f64), metres: f64, kmh: f64) {
        let p = offset(at.0, at.1, 45.0, metres);
        self.read(s, LATITUDE, Value::Num(p.0));
        self.read(s, LONGITUDE, Value::Num(p.1));
        self.read(s, SPEED, Value::Num(kmh));
    }

    pub fn tick(&mut self, s: i64) {
        let out = self.engine.tick(T0 + s * 1000);
        self.after(out);
    }

    pub fn temp(&mut self, s: i64, c: f64) {
        self.read(s, "Vehicle.Cargo.Front.Temperature", Value::Num(c));
    }

    pub fn types(&self) -> Vec<&str> {
        self.events.iter().map(|e| e.type_.as_str()).collect()
    }

    fn of(&self, ty: &str) -> Vec<&Emitted> {
        self.events.iter().filter(|e| e.type_ == ty).collect()
    }
}

/// Runs `script` straight and with a restore after every input; returns the events (the
/// same both ways).
pub(crate) fn both(script: impl Fn(&mut Harness)) -> Harness {
    let mut a = Harness::new(false);
    script(&mut a);
    let mut b = Harness::new(true);
    script(&mut b);
    assert_eq!(
        a.events, b.events,
        "restoring the state at every step changes nothing"
    );
    check_schemas(&a.events);
    a
}

fn trip_manifest(trip: &str) -> serde_json::Value {
    json!({
        "version": 1, "trip_id": trip,
        "stops": [
            {"stop_id": "S1", "name": "Depot", "dwell_s": 60,
             "geofence": {"type": "circle", "center": {"lat": DEPOT.0, "lon": DEPOT.1}, "radius_m": 100, "exit_band_m": 30}},
            {"stop_id": "S2", "name": "Customer", "dwell_s": 120, "orders": ["ORD-7"], "shipments": ["SHP-9"],
             "expected_pod": "signature",
             "arrival_window": {"start": "2026-11-23T08:00:00Z", "end": "2026-11-23T08:05:00Z"},
             "geofence": {"type": "polygon", "entry_band_m": 5, "exit_band_m": 30, "vertices": [
                {"lat": CUSTOMER.0 - 0.001, "lon": CUSTOMER.1 - 0.0015},
                {"lat": CUSTOMER.0 - 0.001, "lon": CUSTOMER.1 + 0.0015},
                {"lat": CUSTOMER.0 + 0.001, "lon": CUSTOMER.1 + 0.0015},
                {"lat": CUSTOMER.0 + 0.001, "lon": CUSTOMER.1 - 0.0015}]}}
        ],
        "compartments": [{"name": "Front", "limits": {"setpoint_c": 4, "tolerance_c": 2},
                          "alarm_delay_s": 300, "clear_delay_s": 120, "door_allowance_s": 600,
                          "defrost_max_s": 1800, "ongoing_interval_s": 600, "probe_timeout_s": 900}]
    })
}

/// A full trip: arrive at the depot, leave, drive, arrive late at the customer, POD, leave.
fn full_trip(h: &mut Harness) {
    h.manifest(0, &trip_manifest("T1"));
    h.read(0, ENGINE_SPEED, Value::Num(650.0));
    for s in 0..=90 {
        h.fix(s, DEPOT, 20.0, 0.0);
        h.temp(s, 4.0);
        if s % 10 == 0 {
            h.read(s, ENGINE_SPEED, Value::Num(650.0));
        }
    }
    // Drive off towards the customer (≈3 km) at 36 km/h: 10 m/s.
    let total = crate::pipeline::positions::haversine_m(DEPOT.0, DEPOT.1, CUSTOMER.0, CUSTOMER.1);
    let bearing = {
        let (dy, dx) = (
            CUSTOMER.0 - DEPOT.0,
            (CUSTOMER.1 - DEPOT.1) * DEPOT.0.to_radians().cos(),
        );
        90.0 - dy.atan2(dx).to_degrees()
    };
    let mut s = 91;
    let mut m = 20.0;
    while m < total - 60.0 {
        let p = offset(DEPOT.0, DEPOT.1, bearing, m);
        h.read(s, LATITUDE, Value::Num(p.0));
        h.read(s, LONGITUDE, Value::Num(p.1));
        h.read(s, SPEED, Value::Num(36.0));
        if s % 10 == 0 {
            h.read(s, ENGINE_SPEED, Value::Num(1200.0));
            h.temp(s, 4.5);
        }
        m += 10.0;
        s += 1;
    }
    // Stand at the customer (well inside) for 3 minutes, POD after 2.
    let arrive = s;
    while s < arrive + 180 {
        h.fix(s, CUSTOMER, 5.0, 0.0);
        if s % 10 == 0 {
            h.read(s, ENGINE_SPEED, Value::Num(650.0));
            h.temp(s, 4.2);
        }
        if s == arrive + 150 {
            let pod = pod_event(T0 + s * 1000, Some("S2"), "signature_pad");
            let ev = h.engine.enrich_pod(T0 + s * 1000, pod);
            h.events.push(Emitted {
                type_: ev.type_,
                time_ms: ev.time_ms,
                subject: ev.subject,
                data: ev.data,
            });
            h.after(Vec::new());
        }
        s += 1;
    }
    // Leave.
    for k in 0..30 {
        h.fix(s + k, CUSTOMER, 200.0 + 10.0 * k as f64, 36.0);
    }
}

pub(crate) fn pod_event(t: i64, stop: Option<&str>, kind: &str) -> NewEvent {
    NewEvent {
        id: Uuid::from_u128(0x0257_4445_0000_0000_0000_04d2_0000_0001 + t as u128),
        type_: "waymark.pod.delivered".into(),
        time_ms: t,
        lane: Lane::Alert,
        subject: stop.map(str::to_string),
        data: json!({
            "device_id": "00000000000004d2", "device_kind": kind, "firmware": "1.0.0",
            "device_seq": 1, "outcome": "delivered", "stop_ref": stop, "order_ref": "ORD-7",
            "recipient": "J. Smith", "evidence_sha256": null, "received_ms": t, "source": "pod0"
        }),
    }
}

#[test]
fn a_whole_trip_gives_the_expected_milestones() {
    let h = both(full_trip);
    let milestones: Vec<&str> = h
        .types()
        .into_iter()
        .filter(|t| !t.starts_with("waymark.vehicle."))
        .collect();
    assert_eq!(
        milestones,
        [
            events::GEOFENCE_ENTERED, // S1 at the first fix
            events::ARRIVED,          // S1 after 60 s standing
            events::TRIP_STARTED,
            events::GEOFENCE_EXITED,
            events::DEPARTED,
            events::DELAY_PREDICTED, // 1.3 × the remaining distance at 36 km/h ends after 08:05
            events::GEOFENCE_ENTERED, // S2
            events::ARRIVED,
            events::LATE,
            "waymark.pod.delivered",
            events::GEOFENCE_EXITED,
            events::DEPARTED,
            events::TRIP_ENDED,
        ],
        "{:#?}",
        h.types()
    );
    let arrived = h.of(events::ARRIVED);
    assert_eq!(arrived[0].data["arrived_at"], "2026-11-23T08:00:00.000Z");
    assert_eq!(arrived[0].time_ms, T0 + 60_000);
    assert_eq!(arrived[1].data["stop"]["stop_id"], "S2");
    assert_eq!(arrived[1].data["orders"], json!(["ORD-7"]));
    assert_eq!(arrived[1].data["on_time"], false);
    let pod = h.of("waymark.pod.delivered")[0];
    assert_eq!(pod.data["stop"]["stop_id"], "S2");
    assert_eq!(pod.data["in_geofence"], true);
    assert_eq!(pod.data["flags"], json!([]));
    assert_eq!(pod.data["temperatures"][0]["temperature_c"], 4.2);
    let departed = h.of(events::DEPARTED);
    assert_eq!(departed[1].data["pod_received"], true);
    assert_eq!(departed[1].data["pod_missing"], false);
    assert_eq!(
        departed[0].data["pod_missing"], true,
        "S1 expected any POD, none came"
    );
    assert_eq!(h.of(events::TRIP_ENDED)[0].data["reason"], "completed");
    let vehicle: Vec<&str> = h
        .types()
        .into_iter()
        .filter(|t| t.starts_with("waymark.vehicle."))
        .collect();
    assert_eq!(
        vehicle,
        [
            events::IGNITION_ON,
            events::STOPPED,
            events::MOVING,
            events::STOPPED,
            events::MOVING
        ]
    );
    assert!(h.of(events::EXCURSION_STARTED).is_empty());
}

#[test]
fn delay_is_predicted_once_when_the_window_cannot_be_made() {
    let h = both(|h| {
        let mut m = trip_manifest("T1");
        m["stops"][1]["arrival_window"]["end"] = json!("2026-11-23T08:04:00Z");
        m["stops"] = json!([m["stops"][1].clone()]);
        h.manifest(0, &m);
        // Crawl from far away at 20 km/h: 5.5 km takes ~16 min, the window closes in 4.
        for s in 0..400 {
            h.fix(s, CUSTOMER, 5500.0 - f64::from(s as i32) * 5.5, 20.0);
        }
    });
    let d = h.of(events::DELAY_PREDICTED);
    assert_eq!(d.len(), 1, "{:?}", h.types());
    assert_eq!(d[0].data["stop"]["stop_id"], "S2");
    assert!(d[0].data["predicted_delay_s"].as_f64().unwrap() > 300.0);
    // moving after 10 s, 120 s of moving history (from the first sample after that),
    // confirmed 60 s later.
    assert_eq!(d[0].time_ms, T0 + 191_000);
}

#[test]
fn gnss_jitter_at_a_fence_border_does_not_flap() {
    let h = both(|h| {
        h.manifest(0, &trip_manifest("T1"));
        // Around the 100 m border of S1, ±15 m, inside the 30 m exit band.
        for s in 0..300 {
            let j = if s % 2 == 0 { 85.0 } else { 115.0 };
            h.fix(s, DEPOT, j, 8.0);
        }
    });
    assert_eq!(h.of(events::GEOFENCE_ENTERED).len(), 1);
    assert!(h.of(events::GEOFENCE_EXITED).is_empty());
}

#[test]
fn a_stop_shorter_than_the_dwell_is_no_arrival() {
    let h = both(|h| {
        h.manifest(0, &trip_manifest("T1"));
        for s in 0..20 {
            h.fix(s, DEPOT, 500.0 - 20.0 * f64::from(s as i32), 30.0);
        }
        for s in 20..79 {
            h.fix(s, DEPOT, 50.0, 0.0); // 59 s < 60 s
        }
        h.fix(79, DEPOT, 50.0, 20.0); // moves off: the dwell is cancelled
        for s in 80..130 {
            h.fix(s, DEPOT, 50.0, 0.0); // standing again, 50 s before leaving
        }
        for s in 130..150 {
            h.fix(s, DEPOT, 60.0 + 20.0 * f64::from((s - 130) as i32), 30.0);
        }
    });
    assert_eq!(h.of(events::GEOFENCE_ENTERED).len(), 1);
    assert_eq!(h.of(events::GEOFENCE_EXITED).len(), 1);
    assert!(h.of(events::ARRIVED).is_empty(), "{:?}", h.types());
    assert!(h.of(events::DEPARTED).is_empty());
}

#[test]
fn a_revision_mid_stop_keeps_the_open_dwell() {
    let h = both(|h| {
        h.manifest(0, &trip_manifest("T1"));
        for s in 0..30 {
            h.fix(s, DEPOT, 10.0, 0.0);
        }
        // Revision: same trip, S1 kept with a bigger fence, S2 removed, S3 added.
        let mut m = trip_manifest("T1");
        m["stops"][0]["geofence"]["radius_m"] = json!(200);
        m["stops"][1]["stop_id"] = json!("S3");
        h.manifest(30, &m);
        for s in 30..100 {
            h.fix(s, DEPOT, 10.0, 0.0);
        }
    });
    let a = h.of(events::ARRIVED);
    assert_eq!(a.len(), 1, "{:?}", h.types());
    assert_eq!(
        a[0].time_ms,
        T0 + 60_000,
        "the dwell that began at 0 s went on"
    );
    assert_eq!(h.of(events::GEOFENCE_ENTERED).len(), 1);
}

#[test]
fn another_trip_mid_stop_ends_the_old_one_and_starts_fresh() {
    let h = both(|h| {
        h.manifest(0, &trip_manifest("T1"));
        for s in 0..100 {
            h.fix(s, DEPOT, 10.0, if s < 20 { 20.0 } else { 0.0 });
        }
        h.manifest(100, &trip_manifest("T2"));
        for s in 100..200 {
            h.fix(s, DEPOT, 10.0, 0.0);
        }
    });
    let types: Vec<(&str, Option<&str>)> = h
        .events
        .iter()
        .filter(|e| e.type_.starts_with("waymark.milestone."))
        .map(|e| (e.type_.as_str(), e.data["trip_id"].as_str()))
        .collect();
    assert_eq!(
        types,
        [
            (events::GEOFENCE_ENTERED, Some("T1")),
            (events::TRIP_STARTED, Some("T1")),
            (events::ARRIVED, Some("T1")),
            (events::TRIP_ENDED, Some("T1")),
            (events::GEOFENCE_ENTERED, Some("T2")),
            (events::ARRIVED, Some("T2")),
        ]
    );
    assert_eq!(h.of(events::TRIP_ENDED)[0].data["reason"], "replaced");
    // The new trip's dwell starts at the manifest: 100 s + 60 s.
    assert_eq!(h.of(events::ARRIVED)[1].time_ms, T0 + 160_000);
}

fn cold(h: &mut Harness) {
    h.manifest(0, &trip_manifest("T1"));
}

#[test]
fn an_excursion_that_clears_within_the_alarm_delay_is_no_excursion() {
    let h = both(|h| {
        cold(h);
        for s in 0..2000 {
            // Out of limits for 299 s at a time, then one sample back in.
            let c = if s % 300 == 299 { 4.0 } else { 9.0 };
            h.temp(s, c);
        }
    });
    assert!(
        h.of(events::EXCURSION_STARTED).is_empty(),
        "{:?}",
        h.types()
    );
}

#[test]
fn a_real_excursion_with_statistics() {
    let h = both(|h| {
        cold(h);
        h.temp(0, 4.0);
        h.temp(100, 8.0); // +2 beyond max 6
        h.temp(200, 10.0); // +4
        h.tick(400); // 300 s after 100: started
        h.temp(500, 4.0); // back in at 500
        h.temp(560, 9.0); // out again before the clear delay: continues
        h.temp(600, 5.0); // back in at 600
        for s in 601..=720 {
            h.tick(s);
        }
    });
    assert_eq!(
        h.types()
            .into_iter()
            .filter(|t| t.starts_with("waymark.coldchain."))
            .collect::<Vec<_>>(),
        [events::EXCURSION_STARTED, events::EXCURSION_ENDED]
    );
    let start = h.of(events::EXCURSION_STARTED)[0];
    assert_eq!(start.time_ms, T0 + 400_000);
    assert_eq!(start.data["started_at"], "2026-11-23T08:01:40.000Z");
    assert_eq!(start.data["direction"], "above");
    let end = h.of(events::EXCURSION_ENDED)[0];
    assert_eq!(end.time_ms, T0 + 720_000);
    assert_eq!(end.data["ended_at"], "2026-11-23T08:10:00.000Z");
    assert_eq!(end.data["duration_s"], 500.0);
    // Samples 8, 10, 4, 9 (the 4 at 500 s was followed by 9 before the clear delay).
    assert_eq!(end.data["min_temp_c"], 4.0);
    assert_eq!(end.data["max_temp_c"], 10.0);
    assert_eq!(end.data["mean_temp_c"], 7.75);
    // 2 °C × 100 s + 4 °C × 300 s + 0 × 60 s + 3 °C × 40 s = 1520 °C·s.
    assert_eq!(end.data["degree_minutes"], 25.333);
    assert_eq!(end.data["reason"], "recovered");
}

#[test]
fn a_door_blip_does_not_alarm_but_a_door_left_open_does() {
    let h = both(|h| {
        cold(h);
        h.temp(0, 4.0);
        h.read(100, "Vehicle.Cargo.Door.IsOpen", Value::Bool(true));
        h.temp(110, 12.0);
        h.temp(400, 12.0); // 300 s out, but suppressed by the open door
        h.read(420, "Vehicle.Cargo.Door.IsOpen", Value::Bool(false));
        h.temp(600, 5.0); // recovered 180 s after the door closed: no alarm
        // Now the door stays open past its 600 s allowance.
        h.read(1000, "Vehicle.Cargo.Door.IsOpen", Value::Bool(true));
        for s in (1000..2300).step_by(10) {
            h.temp(s, 11.0);
        }
    });
    let cc: Vec<(&str, i64)> = h
        .events
        .iter()
        .filter(|e| e.type_.starts_with("waymark.coldchain."))
        .map(|e| (e.type_.as_str(), (e.time_ms - T0) / 1000))
        .collect();
    // Allowance ends at 1600 s; the alarm delay runs from then: 1900 s.
    assert_eq!(
        cc,
        [
            (events::SUPPRESSION_EXPIRED, 1600),
            (events::EXCURSION_STARTED, 1900)
        ]
    );
    assert_eq!(
        h.of(events::SUPPRESSION_EXPIRED)[0].data["reason"],
        "door_open"
    );
}

#[test]
fn a_door_of_another_compartment_does_not_suppress() {
    let h = both(|h| {
        let mut m = trip_manifest("T1");
        m["compartments"][0]["doors"] = json!([1]);
        h.manifest(0, &m);
        h.read(0, "Vehicle.Cargo.Door2.IsOpen", Value::Bool(true));
        h.temp(0, 9.0);
        h.tick(300);
    });
    assert_eq!(h.of(events::EXCURSION_STARTED).len(), 1);
}

#[test]
fn defrost_past_its_maximum() {
    let h = both(|h| {
        cold(h);
        h.read(0, "Vehicle.Cargo.Front.IsDefrosting", Value::Bool(true));
        for s in (0..=2200).step_by(20) {
            h.temp(s, 10.0);
        }
    });
    let cc: Vec<(&str, i64)> = h
        .events
        .iter()
        .filter(|e| e.type_.starts_with("waymark.coldchain."))
        .map(|e| (e.type_.as_str(), (e.time_ms - T0) / 1000))
        .collect();
    assert_eq!(
        cc,
        [
            (events::SUPPRESSION_EXPIRED, 1800),
            (events::EXCURSION_STARTED, 2100)
        ]
    );
    assert_eq!(
        h.of(events::SUPPRESSION_EXPIRED)[0].data["reason"],
        "defrost"
    );
}

#[test]
fn ongoing_reports_and_probe_faults() {
    let h = both(|h| {
        cold(h);
        for s in 0..=1500 {
            if s % 100 == 0 {
                h.temp(s, 9.0);
            }
            h.tick(s);
        }
        let out = h.engine.on_probe_fault(
            T0 + 1_500_000,
            T0 + 1_500_000,
            "Front",
            crate::sources::cargo::ProbeFault::CrcError,
        );
        h.after(out);
        h.tick(1600);
        h.temp(1700, 9.0);
        // Then silence: no_data after 900 s.
        for s in 1701..=2700 {
            h.tick(s);
        }
    });
    let cc: Vec<(&str, i64)> = h
        .events
        .iter()
        .filter(|e| e.type_.starts_with("waymark.coldchain."))
        .map(|e| (e.type_.as_str(), (e.time_ms - T0) / 1000))
        .collect();
    assert_eq!(
        cc,
        [
            (events::EXCURSION_STARTED, 300),
            (events::EXCURSION_ONGOING, 900),
            (events::EXCURSION_ONGOING, 1500),
            (events::PROBE_FAULT, 1500),
            (events::PROBE_RESTORED, 1700),
            (events::EXCURSION_ONGOING, 2100),
            (events::PROBE_FAULT, 2600),
        ]
    );
    assert_eq!(h.of(events::PROBE_FAULT)[1].data["fault"], "no_data");
    assert_eq!(h.of(events::PROBE_RESTORED)[0].data["fault"], "crc_error");
}

#[test]
fn removing_the_manifest_ends_an_open_excursion_and_the_trip() {
    let mut h = Harness::new(true);
    cold(&mut h);
    h.fix(0, DEPOT, 10.0, 30.0);
    h.temp(0, 9.0);
    for s in 1..=320 {
        h.fix(s, DEPOT, 10.0, 30.0);
    }
    let out = h.engine.apply(T0 + 321_000, None);
    h.after(out);
    let ended = h.of(events::EXCURSION_ENDED);
    assert_eq!(ended[0].data["reason"], "manifest_cleared");
    assert_eq!(h.of(events::TRIP_ENDED)[0].data["reason"], "cancelled");
    check_schemas(&h.events);
}

#[test]
fn untimed_late_and_stepped_clocks() {
    let mut h = Harness::new(true);
    cold(&mut h);
    // Before the time is known: ignored and counted.
    let out = h
        .engine
        .on_reading(5_000, &reading(5_000, SPEED, Value::Num(0.0)));
    assert!(out.is_empty());
    assert_eq!(h.engine.state().counters.untimed, 1);
    // Out of limits from 0 s.
    h.temp(0, 9.0);
    h.tick(100);
    // A reading from 60 s ago (beyond the 10 s tolerance, `now` not stepped): late, ignored.
    let out = h.engine.on_reading(
        T0 + 100_000,
        &reading(
            T0 + 40_000,
            "Vehicle.Cargo.Front.Temperature",
            Value::Num(4.0),
        ),
    );
    assert!(out.is_empty());
    assert_eq!(h.engine.state().counters.late, 1);
    // 5 s behind: taken as simultaneous.
    h.engine.on_reading(
        T0 + 100_000,
        &reading(
            T0 + 95_000,
            "Vehicle.Cargo.Front.Temperature",
            Value::Num(9.0),
        ),
    );
    assert_eq!(h.engine.state().counters.reordered, 1);
    // The clock is corrected one hour back (a wrong RTC replaced by GNSS time). The alarm
    // delay in progress (100 s of 300) keeps its progress on the new time base.
    let back = T0 - 3_600_000;
    let out = h.engine.tick(back + 100_000);
    assert!(out.is_empty());
    assert_eq!(h.engine.state().counters.clock_steps, 1);
    let out = h.engine.tick(back + 299_000);
    assert!(out.is_empty(), "{out:?}");
    let out = h.engine.tick(back + 300_000);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].type_, events::EXCURSION_STARTED);
    assert_eq!(out[0].data["started_at"], "2026-11-23T07:00:00.000Z");
    // A reading stamped in the future is taken at `now`.
    let out = h.engine.on_reading(
        back + 301_000,
        &reading(back + 900_000, SPEED, Value::Num(0.0)),
    );
    assert!(out.is_empty());
    assert_eq!(h.engine.state().clock.time, Some(back + 301_000));
}

#[test]
fn a_pod_outside_every_fence_is_accepted_and_flagged() {
    let mut h = Harness::new(true);
    h.manifest(0, &trip_manifest("T1"));
    h.fix(0, CUSTOMER, 5000.0, 0.0);
    h.temp(0, 4.5);
    let ev = h
        .engine
        .enrich_pod(T0 + 1000, pod_event(T0 + 1000, Some("S2"), "pod_button"));
    assert_eq!(ev.type_, "waymark.pod.delivered");
    assert_eq!(ev.lane, Lane::Alert);
    assert_eq!(ev.data["in_geofence"], false);
    assert_eq!(
        ev.data["stop"]["stop_id"], "S2",
        "the device's stop reference is used"
    );
    assert_eq!(
        ev.data["flags"],
        json!(["outside_geofence", "unexpected_pod_kind"])
    );
    assert_eq!(ev.data["recipient"], "J. Smith", "device data is kept");
    assert!(ev.data["location"]["lat"].is_number());
    // Unknown reference, no manifest.
    let ev = h
        .engine
        .enrich_pod(T0 + 2000, pod_event(T0 + 2000, Some("S9"), "pod_button"));
    assert_eq!(
        ev.data["flags"],
        json!(["stop_ref_mismatch", "outside_geofence", "no_stop"])
    );
    let mut bare = Harness::new(false);
    let ev = bare
        .engine
        .enrich_pod(T0, pod_event(T0, None, "pod_button"));
    assert_eq!(ev.data["flags"], json!(["no_manifest"]));
    assert_eq!(ev.data["trip_id"], json!(null));
    check_schemas(&[Emitted {
        type_: ev.type_,
        time_ms: ev.time_ms,
        subject: ev.subject,
        data: ev.data,
    }]);
}

#[test]
fn the_same_pod_twice_counts_once() {
    let mut h = Harness::new(false);
    h.manifest(0, &trip_manifest("T1"));
    h.fix(0, CUSTOMER, 0.0, 0.0);
    let pod = pod_event(T0 + 1000, None, "signature_pad");
    h.engine.enrich_pod(T0 + 1000, pod.clone());
    h.engine.enrich_pod(T0 + 2000, pod);
    assert_eq!(h.engine.state().trip.stops[1].pods, 1);
}

/// Validates each event's `data` against `docs/events/<type>.schema.json`.
pub(crate) fn check_schemas(events: &[Emitted]) {
    for e in events {
        let v = schema_validator(&e.type_);
        if let Err(err) = v.validate(&e.data) {
            panic!("{} does not match its schema: {err}\n{:#}", e.type_, e.data);
        }
    }
}

fn schema_validator(type_: &str) -> jsonschema::Validator {
    let name = if type_.starts_with(events::POD_PREFIX) {
        "waymark.pod".to_string()
    } else {
        type_.to_string()
    };
    let path = format!(
        "{}/../docs/events/{name}.schema.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_type_has_a_schema_and_a_valid_example() {
    let mut names: Vec<String> = events::ALL.iter().map(|s| s.to_string()).collect();
    names.push("waymark.pod".into());
    for name in &names {
        let v = schema_validator(name);
        let path = format!(
            "{}/../docs/events/{name}.example.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let ev: serde_json::Value = serde_json::from_str(&text).unwrap();
        // The example is a whole CloudEvent; its envelope must be valid too.
        let ce = waymark_wire::CloudEvent::from_json(text.as_bytes())
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        if name == "waymark.pod" {
            assert!(ce.type_.starts_with(events::POD_PREFIX));
        } else {
            assert_eq!(&ce.type_, name, "{path}");
        }
        if let Err(e) = v.validate(&ev["data"]) {
            panic!("{path}: {e}");
        }
        let doc = include_str!("../../../docs/events.md");
        assert!(
            doc.contains(&format!("`{name}")),
            "docs/events.md documents {name}"
        );
    }
    // A schema that accepts anything would make these checks worthless.
    let v = schema_validator(events::ARRIVED);
    assert!(v.validate(&json!({"trip_id": 5})).is_err());
}

proptest! {
    /// Whatever the positions, presence changes only across the band: every enter was at or
    /// below -entry_band, every exit above exit_band, and a track that stays within the band
    /// (jitter of any amplitude smaller than the band) changes presence at most once.
    #[test]
    fn geofence_hysteresis_never_flaps(
        dists in proptest::collection::vec(-300.0f64..300.0, 1..200),
        base in 70.0f64..130.0,
        amp in 0.0f64..15.0,
        jit in proptest::collection::vec(-1.0f64..1.0, 1..200),
    ) {
        let mut e = Engine::new(DetectorConfig::default());
        let plan = manifest::parse(&serde_json::to_vec(&trip_manifest("P")).unwrap()).unwrap();
        e.apply(T0, Some(plan));
        let mut inside = None;
        for (i, d) in dists.iter().enumerate() {
            let t = T0 + i as i64 * 1000;
            let p = offset(DEPOT.0, DEPOT.1, 10.0, 100.0 + d);
            let mut out = e.on_reading(t, &reading(t, LATITUDE, Value::Num(p.0)));
            out.extend(e.on_reading(t, &reading(t, LONGITUDE, Value::Num(p.1))));
            for ev in out.iter().filter(|ev| ev.subject.as_deref() == Some("S1")) {
                let dist = ev.data["distance_m"].as_f64().unwrap();
                if ev.type_ == events::GEOFENCE_ENTERED {
                    prop_assert!(dist <= 0.0 && inside != Some(true));
                    inside = Some(true);
                } else if ev.type_ == events::GEOFENCE_EXITED {
                    prop_assert!(dist > 30.0 && inside == Some(true));
                    inside = Some(false);
                }
            }
        }
        // Jitter within the 30 m band around any point in 70..130 m: at most one change.
        let mut e = Engine::new(DetectorConfig::default());
        let plan = manifest::parse(&serde_json::to_vec(&trip_manifest("P")).unwrap()).unwrap();
        e.apply(T0, Some(plan));
        let mut changes = 0;
        for (i, j) in jit.iter().enumerate() {
            let t = T0 + i as i64 * 1000;
            let p = offset(DEPOT.0, DEPOT.1, 10.0, base + amp * j);
            let mut out = e.on_reading(t, &reading(t, LATITUDE, Value::Num(p.0)));
            out.extend(e.on_reading(t, &reading(t, LONGITUDE, Value::Num(p.1))));
            changes += out.iter().filter(|ev| ev.type_.starts_with("waymark.milestone.geofence")).count();
        }
        prop_assert!(changes <= 1, "{changes} changes");
    }

    /// Excursion statistics equal a direct computation over the samples.
    #[test]
    fn excursion_statistics(samples in proptest::collection::vec((1i64..120, 6.5f64..15.0), 1..40)) {
        let mut h = Harness::new(false);
        cold(&mut h);
        h.temp(0, 10.0);
        let mut s = 0;
        let mut all = vec![(0i64, 10.0f64)];
        for (dt, c) in &samples {
            s += dt;
            h.temp(s, *c);
            all.push((s, *c));
        }
        s += 10;
        h.temp(s, 4.0); // back in
        let back = s;
        h.tick(s + 200);
        // Starts only if an out-of-limit sample came at or after the alarm delay.
        if all[all.len() - 1].0 >= 300 {
            let end = h.of(events::EXCURSION_ENDED);
            prop_assert_eq!(end.len(), 1);
            let d = &end[0].data;
            let n = all.len() as f64;
            let mean = all.iter().map(|x| x.1).sum::<f64>() / n;
            let max = all.iter().map(|x| x.1).fold(f64::MIN, f64::max);
            let min = all.iter().map(|x| x.1).fold(f64::MAX, f64::min);
            let mut dm = 0.0;
            for w in all.windows(2) {
                dm += (w[0].1 - 6.0) * (w[1].0 - w[0].0) as f64 / 60.0;
            }
            let last = all[all.len() - 1];
            dm += (last.1 - 6.0) * (back - last.0) as f64 / 60.0;
            prop_assert!((d["mean_temp_c"].as_f64().unwrap() - mean).abs() < 0.001);
            prop_assert!((d["max_temp_c"].as_f64().unwrap() - max).abs() < 0.001);
            prop_assert!((d["min_temp_c"].as_f64().unwrap() - min).abs() < 0.001);
            prop_assert!((d["degree_minutes"].as_f64().unwrap() - dm).abs() < 0.002);
            prop_assert_eq!(d["duration_s"].as_f64().unwrap(), back as f64);
        } else {
            prop_assert!(h.of(events::EXCURSION_STARTED).is_empty());
        }
    }
}
