//! Milestone and cold-chain detectors: the vehicle's readings and the trip manifest in,
//! business events (DESIGN §2, docs/events.md) out. Sans-IO: plain structs fed
//! `(now, reading)`, tested without a runtime.
//!
//! ```text
//! readings ─► Engine::on_reading(now, r) ─┬─ Vehicle   ignition on/off, moving/stopped, average speed
//! ticks    ─► Engine::tick(now)           ├─ Trip      geofences, arrived/departed, late, delay, trip start/end
//! POD      ─► Engine::enrich_pod(now, e)  ├─ ColdChain excursions, door/defrost suppression, probe faults
//! DM1      ─► Engine::on_dm1(now, snap)   └─ Dm1       fault-set changes
//! manifest ─► Engine::apply(now, plan)           ──► Vec<Emitted> (events to commit)
//! ```
//!
//! # Invariants
//! - **State is data.** Everything a detector remembers is in [`State`] (serde). The
//!   integration commits the state together with the events one call produced, in one
//!   transaction: after a crash the restored state has exactly the events it emitted behind
//!   it, so no milestone is repeated or forgotten. Restoring between any two calls gives the
//!   same events as never stopping (tested at every step of the scripted scenarios).
//! - **Event time.** Detectors run on the readings' own timestamps (a watermark that never goes
//!   backwards), not on arrival time, so readings re-stamped after the clock became known
//!   (docs/time.md) are judged at the time they were taken. Nothing is decided on a time before
//!   2020 (`EARLIEST_VALID_MS`): such input is ignored and counted. Per input:
//!   - `now` (the gateway clock) stepped back by more than [`DetectorConfig::clock_step_s`]:
//!     the clock was corrected (e.g. a wrong RTC replaced by GNSS time); every stored time is
//!     shifted by the step, so durations in progress (dwell, alarm delay) neither jump nor
//!     freeze;
//!   - a reading older than the watermark by at most `clock_step_s` is taken as simultaneous
//!     (GNSS fix times lag arrival a little); older than that, it is late and ignored
//!     (counted), never applied out of order;
//!   - a reading stamped after `now` (+2 s) is taken at `now`.
//! - **Once.** Each milestone has a flag or a time in the state that is set when it is
//!   emitted and checked before: arrived/departed/late/delay_predicted once per stop and
//!   trip, trip start/end once per trip, excursion started/ended once per excursion.
//! - **Bounded.** The state is bounded by the manifest's bounds (stops, compartments) and by
//!   [`dm1::MAX_ECUS`] × [`dm1::MAX_FAULTS`]; nothing grows with time.

pub mod coldchain;
pub mod dm1;
pub mod events;
pub mod geo;
pub mod manifest;
pub mod stops;
pub mod vehicle;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use waymark_wire::time::EARLIEST_VALID_MS;
use waymark_wire::{Reading, Timestamp, Value};

use crate::store::NewEvent;

pub use dm1::{Dm1Fault, Dm1Snapshot, Lamps};
pub use events::Emitted;
pub use manifest::{Plan, Rejection};

/// `Vehicle.CurrentLocation.Latitude` (degrees).
pub const LATITUDE: &str = crate::sources::gps::readings::LATITUDE;
/// `Vehicle.CurrentLocation.Longitude` (degrees).
pub const LONGITUDE: &str = crate::sources::gps::readings::LONGITUDE;
/// `Vehicle.Speed` (km/h), from GNSS or CAN.
pub const SPEED: &str = crate::sources::gps::readings::SPEED;
/// `Vehicle.Powertrain.CombustionEngine.Speed` (rpm).
pub const ENGINE_SPEED: &str = "Vehicle.Powertrain.CombustionEngine.Speed";
/// `Vehicle.LowVoltageBattery.CurrentVoltage` (V).
pub const SUPPLY_VOLTAGE: &str = "Vehicle.LowVoltageBattery.CurrentVoltage";
/// `Vehicle.LowVoltageSystemState.IsIgnitionOn` (bool), when a source reports it directly.
pub const IGNITION: &str = "Vehicle.LowVoltageSystemState.IsIgnitionOn";
/// Readings stamped this far after `now` are taken at `now`.
pub const FUTURE_TOLERANCE_MS: i64 = 2_000;

/// Gateway-wide detector settings (the manifest carries the per-stop and per-compartment
/// ones). Defaults suit a delivery truck.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// At or above this speed (km/h) the vehicle is moving. Default 5.
    pub moving_speed_kmh: f64,
    /// At or below this speed (km/h) the vehicle is standing. Default 2.
    pub stopped_speed_kmh: f64,
    /// Speed must stay at or above `moving_speed_kmh` this long for `moving`. Default 10 s.
    pub moving_delay_s: u32,
    /// Speed must stay at or below `stopped_speed_kmh` this long for `stopped`. Default 60 s.
    pub stopped_delay_s: u32,
    /// Engine speed at or above this (rpm) means ignition on. Default 300.
    pub engine_on_rpm: f64,
    /// Supply voltage at or above this (V) means ignition on (alternator charging; 13.2 for
    /// 12 V systems, use about 26.5 for 24 V). Default 13.2.
    pub voltage_on_v: f64,
    /// An ignition, engine-speed or voltage reading older than this is not used; without a
    /// fresh one, ignition follows GNSS movement. Default 30 s.
    pub signal_timeout_s: u32,
    /// The ignition indication must hold this long before `ignition_on`. Default 3 s.
    pub ignition_on_delay_s: u32,
    /// ... and this long before `ignition_off`. Default 30 s.
    pub ignition_off_delay_s: u32,
    /// GNSS fallback: stopped this long means ignition off. Default 300 s.
    pub gnss_off_delay_s: u32,
    /// Road distance over straight-line distance for `delay_predicted`. Default 1.3.
    pub route_factor: f64,
    /// Time constant of the moving average speed (only moving time counts). Default 600 s.
    pub average_speed_window_s: u32,
    /// Moving time needed before predictions are made. Default 120 s.
    pub min_moving_history_s: u32,
    /// A predicted delay must persist this long before `delay_predicted`. Default 60 s.
    pub delay_confirm_s: u32,
    /// Backward clock steps larger than this shift the state; readings older than the
    /// watermark by more are late. Default 10 s.
    pub clock_step_s: u32,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            moving_speed_kmh: 5.0,
            stopped_speed_kmh: 2.0,
            moving_delay_s: 10,
            stopped_delay_s: 60,
            engine_on_rpm: 300.0,
            voltage_on_v: 13.2,
            signal_timeout_s: 30,
            ignition_on_delay_s: 3,
            ignition_off_delay_s: 30,
            gnss_off_delay_s: 300,
            route_factor: 1.3,
            average_speed_window_s: 600,
            min_moving_history_s: 120,
            delay_confirm_s: 60,
            clock_step_s: 10,
        }
    }
}

/// Seconds to ms.
pub(crate) fn ms(s: u32) -> i64 {
    i64::from(s) * 1000
}

/// A position fix assembled from a latitude and a longitude reading of the same time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fix {
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// The fix time (event time after clamping), UTC ms.
    pub time: Timestamp,
}

/// Input the engine ignored or adjusted, for the status document.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Inputs with a time (or `now`) before 2020: the time was not known.
    pub untimed: u64,
    /// Readings older than the watermark by more than `clock_step_s`, ignored.
    pub late: u64,
    /// Readings slightly older than the watermark, taken as simultaneous.
    pub reordered: u64,
    /// Backward clock steps the state was shifted for.
    pub clock_steps: u64,
    /// Readings of a known signal with a value of the wrong kind or not finite.
    pub invalid: u64,
}

/// The event-time watermark (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// Latest event time processed, UTC ms.
    pub time: Option<Timestamp>,
    /// Latest gateway `now` seen, UTC ms.
    pub now: Option<Timestamp>,
}

/// Everything the detectors remember; persisted with the events (module docs).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct State {
    /// Event-time watermark.
    pub clock: Watermark,
    /// Ignition, movement, average speed.
    pub vehicle: vehicle::Vehicle,
    /// The manifest and trip progress.
    pub trip: stops::Trip,
    /// Compartments.
    pub cold: coldchain::ColdChain,
    /// Active DM1 faults per ECU.
    pub dm1: dm1::Dm1,
    /// Latest position.
    pub fix: Option<Fix>,
    /// A latitude waiting for its longitude (or the other way round): `(time, value)`.
    pending_lat: Option<(Timestamp, f64)>,
    pending_lon: Option<(Timestamp, f64)>,
    /// Ignored or adjusted input.
    pub counters: Counters,
}

impl State {
    fn shift(&mut self, delta: i64) {
        self.clock.time = self.clock.time.map(|t| t + delta);
        self.vehicle.shift(delta);
        self.trip.shift(delta);
        self.cold.shift(delta);
        if let Some(f) = &mut self.fix {
            f.time += delta;
        }
        self.pending_lat = None;
        self.pending_lon = None;
    }
}

/// The detectors together, over one [`State`].
#[derive(Debug, Clone)]
pub struct Engine {
    cfg: DetectorConfig,
    state: State,
}

impl Engine {
    /// A fresh engine (no manifest, nothing known).
    pub fn new(cfg: DetectorConfig) -> Self {
        Engine {
            cfg,
            state: State::default(),
        }
    }

    /// An engine continuing from a persisted state.
    pub fn restore(cfg: DetectorConfig, state: State) -> Self {
        Engine { cfg, state }
    }

    /// The state to persist with the events of the last call.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The settings.
    pub fn config(&self) -> &DetectorConfig {
        &self.cfg
    }

    /// Accounts for `now`; `false` when the time is not known yet.
    fn observe_now(&mut self, now: Timestamp) -> bool {
        if now < EARLIEST_VALID_MS {
            self.state.counters.untimed += 1;
            return false;
        }
        if let Some(last) = self.state.clock.now
            && now < last - ms(self.cfg.clock_step_s)
        {
            self.state.counters.clock_steps += 1;
            self.state.shift(now - last);
        }
        self.state.clock.now = Some(now);
        true
    }

    /// The event time of an input stamped `t`, or `None` when it is to be ignored.
    fn admit(&mut self, now: Timestamp, t: Timestamp) -> Option<Timestamp> {
        if !self.observe_now(now) {
            return None;
        }
        if t < EARLIEST_VALID_MS {
            self.state.counters.untimed += 1;
            return None;
        }
        let t = if t > now + FUTURE_TOLERANCE_MS {
            now
        } else {
            t
        };
        match self.state.clock.time {
            Some(w) if t < w => {
                if w - t > ms(self.cfg.clock_step_s) {
                    self.state.counters.late += 1;
                    return None;
                }
                self.state.counters.reordered += 1;
                Some(w)
            }
            _ => {
                self.state.clock.time = Some(t);
                Some(t)
            }
        }
    }

    /// Applies a validated manifest (`Some`) or removes the current one (`None`), at `now`.
    /// See [`stops::Trip::apply`] for what happens to a trip and a stop in progress.
    pub fn apply(&mut self, now: Timestamp, plan: Option<Plan>) -> Vec<Emitted> {
        let mut out = Vec::new();
        let t = self
            .admit(now, now)
            .or(self.state.clock.time)
            .unwrap_or(now);
        let s = &mut self.state;
        let old_trip = s.trip.trip_id().map(str::to_string);
        s.cold.apply(
            t,
            plan.as_ref(),
            old_trip.as_deref(),
            s.fix.as_ref(),
            &mut out,
        );
        s.trip.apply(t, plan, s.fix.as_ref(), &mut out);
        self.evaluate(t, &mut out);
        out
    }

    /// Feeds one reading taken at `reading.time`, processed at gateway time `now`.
    pub fn on_reading(&mut self, now: Timestamp, r: &Reading) -> Vec<Emitted> {
        let mut out = Vec::new();
        if !is_known_signal(&r.signal) {
            return out;
        }
        let Some(t) = self.admit(now, r.time) else {
            return out;
        };
        let num = match &r.value {
            Value::Num(v) if v.is_finite() => Some(*v),
            _ => None,
        };
        let flag = match &r.value {
            Value::Bool(b) => Some(*b),
            _ => None,
        };
        let s = &mut self.state;
        match r.signal.as_str() {
            LATITUDE | LONGITUDE => {
                let Some(v) = num else {
                    s.counters.invalid += 1;
                    return out;
                };
                let (lat_range, mine, other) = if r.signal == LATITUDE {
                    (90.0, &mut s.pending_lat, &mut s.pending_lon)
                } else {
                    (180.0, &mut s.pending_lon, &mut s.pending_lat)
                };
                if v.abs() > lat_range {
                    s.counters.invalid += 1;
                    return out;
                }
                match other.take() {
                    Some((ot, ov)) if ot == r.time => {
                        let (lat, lon) = if r.signal == LATITUDE {
                            (v, ov)
                        } else {
                            (ov, v)
                        };
                        let fix = Fix { lat, lon, time: t };
                        s.fix = Some(fix);
                        s.vehicle.on_fix(t, &fix);
                        s.trip.on_fix(t, &fix, &s.vehicle, &self.cfg, &mut out);
                    }
                    _ => *mine = Some((r.time, v)),
                }
            }
            SPEED => match num {
                Some(v) if v >= 0.0 => s.vehicle.on_speed(t, v, &self.cfg),
                _ => s.counters.invalid += 1,
            },
            ENGINE_SPEED => match num {
                Some(v) => s.vehicle.rpm = Some((t, v)),
                None => s.counters.invalid += 1,
            },
            SUPPLY_VOLTAGE => match num {
                Some(v) => s.vehicle.volts = Some((t, v)),
                None => s.counters.invalid += 1,
            },
            IGNITION => match flag.or(num.map(|v| v != 0.0)) {
                Some(b) => s.vehicle.ign_flag = Some((t, b)),
                None => s.counters.invalid += 1,
            },
            sig => {
                if !s
                    .cold
                    .on_reading(t, sig, &r.value, s.trip.trip_id(), &mut out)
                {
                    s.counters.invalid += 1;
                }
            }
        }
        self.evaluate(t, &mut out);
        out
    }

    /// Advances time to `now` without a reading: dwell, movement and ignition delays, alarm
    /// and clear delays, `excursion_ongoing`, suppression maxima and probe timeouts fire
    /// here. Call it about once a second.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Emitted> {
        let mut out = Vec::new();
        if let Some(t) = self.admit(now, now) {
            self.evaluate(t, &mut out);
        }
        out
    }

    /// A probe fault reported by a cargo source for `compartment` (faults are never
    /// readings, see `sources::cargo`).
    pub fn on_probe_fault(
        &mut self,
        now: Timestamp,
        time: Timestamp,
        compartment: &str,
        fault: crate::sources::cargo::ProbeFault,
    ) -> Vec<Emitted> {
        let mut out = Vec::new();
        if let Some(t) = self.admit(now, time) {
            let trip = self.state.trip.trip_id().map(str::to_string);
            self.state
                .cold
                .on_fault(t, compartment, fault.as_str(), trip.as_deref(), &mut out);
            self.evaluate(t, &mut out);
        }
        out
    }

    /// A DM1 snapshot (the set of active faults of one ECU) decoded by the CAN source.
    pub fn on_dm1(&mut self, now: Timestamp, snap: &Dm1Snapshot) -> Vec<Emitted> {
        let mut out = Vec::new();
        if let Some(t) = self.admit(now, snap.time) {
            let fix = self.state.fix;
            self.state.dm1.on_snapshot(t, snap, fix.as_ref(), &mut out);
            self.evaluate(t, &mut out);
        }
        out
    }

    /// Enriches a POD event from the device source (docs/events.md, `waymark.pod.*`) with the
    /// trip context. The id, type, time and lane stay as the device source made them (its
    /// id is what makes device retries exactly-once); `data` gains the trip, stop,
    /// references, location, compartment temperatures and flags. A POD outside every stop is
    /// accepted and flagged. Returns the event unchanged if it is not a POD.
    pub fn enrich_pod(&mut self, now: Timestamp, mut ev: NewEvent) -> NewEvent {
        if !ev.type_.starts_with(events::POD_PREFIX) {
            return ev;
        }
        let t = self
            .admit(now, ev.time_ms)
            .or(self.state.clock.time)
            .unwrap_or(ev.time_ms);
        let temps = self.state.cold.snapshot();
        let s = &mut self.state;
        s.trip.enrich_pod(t, &mut ev, s.fix.as_ref(), temps);
        ev
    }
}

impl Engine {
    fn evaluate(&mut self, t: Timestamp, out: &mut Vec<Emitted>) {
        let s = &mut self.state;
        s.vehicle.evaluate(t, &self.cfg, s.fix.as_ref(), out);
        s.trip
            .evaluate(t, &s.vehicle, s.fix.as_ref(), &self.cfg, out);
        let trip = s.trip.trip_id().map(str::to_string);
        s.cold.evaluate(t, trip.as_deref(), s.fix.as_ref(), out);
    }
}

/// Whether the engine uses `signal` (so unrelated readings cost nothing).
pub fn is_known_signal(signal: &str) -> bool {
    matches!(
        signal,
        LATITUDE | LONGITUDE | SPEED | ENGINE_SPEED | SUPPLY_VOLTAGE | IGNITION
    ) || signal.starts_with("Vehicle.Cargo.")
}
