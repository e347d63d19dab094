//! Ignition and movement.
//!
//! Invariants:
//! - `moving` changes only after the speed stayed past its threshold for the configured delay
//!   (`moving_delay_s` at or above `moving_speed_kmh`, `stopped_delay_s` at or below
//!   `stopped_speed_kmh`); a speed between the thresholds keeps the state and cancels a
//!   pending change. Each change is one `waymark.vehicle.moving` / `.stopped` event.
//! - Ignition is decided from the freshest basis in this order: an ignition signal, engine
//!   speed, supply voltage (each used only while younger than `signal_timeout_s`), else GNSS
//!   movement (on while moving, off after `gnss_off_delay_s` stopped). The indication must
//!   hold `ignition_on_delay_s` / `ignition_off_delay_s` before an event; one event per change.

use serde::{Deserialize, Serialize};
use serde_json::json;
use waymark_wire::Timestamp;

use super::events::{self, Emitted, location_json, ms_to_s};
use super::{DetectorConfig, Fix, ms};

/// What an ignition decision rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// `Vehicle.LowVoltageSystemState.IsIgnitionOn`.
    IgnitionSignal,
    /// `Vehicle.Powertrain.CombustionEngine.Speed` against `engine_on_rpm`.
    EngineSpeed,
    /// `Vehicle.LowVoltageBattery.CurrentVoltage` against `voltage_on_v`.
    SupplyVoltage,
    /// GNSS movement (no fresh signal of the above).
    GnssSpeed,
}

impl Basis {
    fn as_str(self) -> &'static str {
        match self {
            Basis::IgnitionSignal => "ignition_signal",
            Basis::EngineSpeed => "engine_speed",
            Basis::SupplyVoltage => "supply_voltage",
            Basis::GnssSpeed => "gnss_speed",
        }
    }
}

/// Ignition and movement state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Vehicle {
    /// Latest speed `(time, km/h)`.
    pub speed: Option<(Timestamp, f64)>,
    /// Whether the vehicle moves; `None` until first decided.
    pub moving: Option<bool>,
    /// Since when the speed has pointed to the other movement state.
    move_pending: Option<(bool, Timestamp)>,
    /// When the current movement state began.
    pub moving_since: Option<Timestamp>,
    /// Latest ignition signal `(time, on)`.
    pub ign_flag: Option<(Timestamp, bool)>,
    /// Latest engine speed `(time, rpm)`.
    pub rpm: Option<(Timestamp, f64)>,
    /// Latest supply voltage `(time, V)`.
    pub volts: Option<(Timestamp, f64)>,
    /// Ignition; `None` until first decided.
    pub ignition: Option<bool>,
    /// Pending ignition change `(on, since, basis)`.
    ign_pending: Option<(bool, Timestamp, Basis)>,
    /// Moving average speed (km/h) over moving time.
    pub avg_speed_kmh: f64,
    /// Moving time that went into the average, ms.
    pub moving_ms: i64,
    /// Time of the last speed sample used in the average.
    avg_last: Option<Timestamp>,
}

impl Vehicle {
    /// Shifts every stored time by `delta` ms (a clock step).
    pub fn shift(&mut self, d: i64) {
        let sh = |t: &mut Timestamp| *t += d;
        if let Some((t, _)) = &mut self.speed {
            sh(t);
        }
        if let Some((_, t)) = &mut self.move_pending {
            sh(t);
        }
        if let Some(t) = &mut self.moving_since {
            sh(t);
        }
        if let Some((t, _)) = &mut self.ign_flag {
            sh(t);
        }
        if let Some((t, _)) = &mut self.rpm {
            sh(t);
        }
        if let Some((t, _)) = &mut self.volts {
            sh(t);
        }
        if let Some((_, t, _)) = &mut self.ign_pending {
            sh(t);
        }
        if let Some(t) = &mut self.avg_last {
            sh(t);
        }
    }

    /// A speed reading.
    pub fn on_speed(&mut self, t: Timestamp, kmh: f64, cfg: &DetectorConfig) {
        if self.moving == Some(true) && kmh >= cfg.stopped_speed_kmh {
            let dt = self.avg_last.map_or(0, |l| (t - l).clamp(0, 60_000));
            if self.moving_ms == 0 && dt == 0 {
                self.avg_speed_kmh = kmh;
            } else if dt > 0 {
                #[allow(clippy::cast_precision_loss)]
                let alpha = 1.0
                    - (-(dt as f64) / (f64::from(cfg.average_speed_window_s.max(1)) * 1000.0))
                        .exp();
                self.avg_speed_kmh += alpha * (kmh - self.avg_speed_kmh);
                self.moving_ms += dt;
            }
            self.avg_last = Some(t);
        } else {
            self.avg_last = None;
        }
        self.speed = Some((t, kmh));
    }

    /// A position fix (kept for future use by movement from positions; speed comes with it).
    pub fn on_fix(&mut self, _t: Timestamp, _fix: &Fix) {}

    /// The current speed, km/h, if known.
    pub fn speed_kmh(&self) -> Option<f64> {
        self.speed.map(|s| s.1)
    }

    /// Whether the vehicle stands still now (for dwell): the latest speed at or below the
    /// stopped threshold, or, without a speed, the movement state.
    pub fn is_standing(&self, cfg: &DetectorConfig) -> Option<bool> {
        match self.speed {
            Some((_, v)) if v <= cfg.stopped_speed_kmh => Some(true),
            Some((_, v)) if v >= cfg.moving_speed_kmh => Some(false),
            Some(_) => None,
            None => self.moving.map(|m| !m),
        }
    }

    /// Decides movement and ignition at `t`.
    pub fn evaluate(
        &mut self,
        t: Timestamp,
        cfg: &DetectorConfig,
        fix: Option<&Fix>,
        out: &mut Vec<Emitted>,
    ) {
        // Movement.
        if let Some((_, v)) = self.speed {
            let want = if v >= cfg.moving_speed_kmh {
                Some(true)
            } else if v <= cfg.stopped_speed_kmh {
                Some(false)
            } else {
                None
            };
            match want {
                Some(w) if self.moving != Some(w) => {
                    let since = match self.move_pending {
                        Some((p, s)) if p == w => s,
                        _ => t,
                    };
                    self.move_pending = Some((w, since));
                    let delay = ms(if w {
                        cfg.moving_delay_s
                    } else {
                        cfg.stopped_delay_s
                    });
                    if t - since >= delay {
                        self.moving = Some(w);
                        self.moving_since = Some(since);
                        self.move_pending = None;
                        if !w {
                            self.avg_last = None;
                        }
                        out.push(Emitted::new(
                            if w { events::MOVING } else { events::STOPPED },
                            t,
                            None,
                            json!({
                                "since": waymark_wire::time::format_rfc3339_ms(since),
                                "speed_kmh": v,
                                "location": location_json(fix),
                            }),
                        ));
                    }
                }
                _ => self.move_pending = None,
            }
        }

        // Ignition.
        let fresh =
            |r: Option<(Timestamp, f64)>| r.filter(|(rt, _)| t - rt <= ms(cfg.signal_timeout_s));
        let indication = if let Some((_, b)) = self
            .ign_flag
            .filter(|(rt, _)| t - rt <= ms(cfg.signal_timeout_s))
        {
            Some((b, Basis::IgnitionSignal))
        } else if let Some((_, rpm)) = fresh(self.rpm) {
            Some((rpm >= cfg.engine_on_rpm, Basis::EngineSpeed))
        } else if let Some((_, v)) = fresh(self.volts) {
            Some((v >= cfg.voltage_on_v, Basis::SupplyVoltage))
        } else {
            match (self.moving, self.moving_since) {
                (Some(true), _) => Some((true, Basis::GnssSpeed)),
                (Some(false), Some(since)) if t - since >= ms(cfg.gnss_off_delay_s) => {
                    Some((false, Basis::GnssSpeed))
                }
                _ => None,
            }
        };
        match indication {
            Some((on, basis)) if self.ignition != Some(on) => {
                let since = match self.ign_pending {
                    Some((p, s, _)) if p == on => s,
                    _ => t,
                };
                self.ign_pending = Some((on, since, basis));
                let delay = ms(if on {
                    cfg.ignition_on_delay_s
                } else {
                    cfg.ignition_off_delay_s
                });
                if t - since >= delay {
                    self.ignition = Some(on);
                    self.ign_pending = None;
                    out.push(Emitted::new(
                        if on {
                            events::IGNITION_ON
                        } else {
                            events::IGNITION_OFF
                        },
                        t,
                        None,
                        json!({
                            "basis": basis.as_str(),
                            "since": waymark_wire::time::format_rfc3339_ms(since),
                            "location": location_json(fix),
                        }),
                    ));
                }
            }
            _ => self.ign_pending = None,
        }
    }

    /// Moving time in the average, seconds.
    pub fn moving_s(&self) -> f64 {
        ms_to_s(self.moving_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = 1_795_420_800_000;

    fn types(out: &[Emitted]) -> Vec<&str> {
        out.iter().map(|e| e.type_.as_str()).collect()
    }

    fn run(
        v: &mut Vehicle,
        cfg: &DetectorConfig,
        steps: &[(i64, Option<f64>)],
    ) -> Vec<(i64, String)> {
        let mut all = Vec::new();
        for &(s, speed) in steps {
            let t = T0 + s * 1000;
            if let Some(k) = speed {
                v.on_speed(t, k, cfg);
            }
            let mut out = Vec::new();
            v.evaluate(t, cfg, None, &mut out);
            all.extend(out.into_iter().map(|e| (s, e.type_)));
        }
        all
    }

    #[test]
    fn movement_needs_its_delay_and_ignores_the_middle_band() {
        let cfg = DetectorConfig::default();
        let mut v = Vehicle::default();
        let got = run(
            &mut v,
            &cfg,
            &[
                (0, Some(0.0)),
                (30, Some(0.0)),
                (60, Some(0.5)), // stopped after 60 s
                (61, Some(20.0)),
                (65, Some(3.0)), // middle band: cancels the pending start
                (66, Some(20.0)),
                (75, Some(20.0)), // 9 s: not yet
                (76, Some(25.0)), // 10 s: moving
                (80, Some(1.0)),
                (100, Some(4.0)), // middle: cancels the pending stop
                (101, Some(0.0)),
                (161, Some(0.0)),
            ],
        );
        assert_eq!(
            got,
            [
                (60, events::STOPPED.to_string()),
                (76, events::MOVING.to_string()),
                // No ignition signal: GNSS movement stands in (3 s on-delay).
                (80, events::IGNITION_ON.to_string()),
                (161, events::STOPPED.to_string()),
            ]
        );
        assert_eq!(v.moving, Some(false));
    }

    #[test]
    fn ignition_bases_in_order_with_fallback() {
        let cfg = DetectorConfig::default();
        let mut v = Vehicle::default();
        let mut out = Vec::new();
        // Engine speed says on; voltage says off: engine speed wins.
        v.rpm = Some((T0, 650.0));
        v.volts = Some((T0, 12.1));
        v.evaluate(T0, &cfg, None, &mut out);
        v.evaluate(T0 + 2_999, &cfg, None, &mut out);
        assert!(out.is_empty());
        v.rpm = Some((T0 + 3_000, 650.0));
        v.evaluate(T0 + 3_000, &cfg, None, &mut out);
        assert_eq!(types(&out), [events::IGNITION_ON]);
        assert_eq!(out[0].data["basis"], "engine_speed");
        out.clear();
        // The CAN bus goes quiet while parked; voltage also stale: GNSS fallback decides after
        // the vehicle has stood for gnss_off_delay_s.
        v.on_speed(T0 + 10_000, 0.0, &cfg);
        for s in (10..=400).step_by(10) {
            v.evaluate(T0 + s * 1000, &cfg, None, &mut out);
        }
        assert_eq!(types(&out), [events::STOPPED, events::IGNITION_OFF]);
        assert_eq!(out[1].data["basis"], "gnss_speed");
        // stopped at 70 s (since 10 s); off indicated at 310 s, confirmed 30 s later.
        assert_eq!(out[1].time_ms, T0 + 340_000);
        out.clear();
        // An explicit ignition signal beats everything.
        v.ign_flag = Some((T0 + 401_000, true));
        v.rpm = Some((T0 + 401_000, 0.0));
        v.evaluate(T0 + 401_000, &cfg, None, &mut out);
        v.evaluate(T0 + 404_000, &cfg, None, &mut out);
        assert_eq!(types(&out), [events::IGNITION_ON]);
        assert_eq!(out[0].data["basis"], "ignition_signal");
    }

    #[test]
    fn a_voltage_blip_does_not_switch_ignition() {
        let cfg = DetectorConfig::default();
        let mut v = Vehicle::default();
        let mut out = Vec::new();
        for s in 0..10 {
            v.volts = Some((T0 + s * 1000, if s == 4 { 13.8 } else { 12.4 }));
            v.evaluate(T0 + s * 1000, &cfg, None, &mut out);
        }
        // Off is decided after 30 s of 12.4 V only; the 1 s blip never reached 3 s.
        assert!(out.is_empty());
        for s in 10..40 {
            v.volts = Some((T0 + s * 1000, 12.4));
            v.evaluate(T0 + s * 1000, &cfg, None, &mut out);
        }
        assert_eq!(types(&out), [events::IGNITION_OFF]);
        assert_eq!(out[0].data["basis"], "supply_voltage");
    }
}
