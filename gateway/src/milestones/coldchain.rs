//! Cold chain, per compartment: excursions with alarm and clear delays, door and defrost
//! suppression, probe faults.
//!
//! Invariants:
//! - **An excursion starts** (`excursion_started`, once) only after the temperature has been
//!   out of limits, unsuppressed, for `alarm_delay_s` without interruption; one sample back
//!   within limits before that cancels it (no event). It **ends** (`excursion_ended`, once)
//!   only after the temperature has been back within limits for `clear_delay_s`; a sample out
//!   of limits before that continues it. `excursion_ongoing` follows every
//!   `ongoing_interval_s` while it lasts.
//! - **Suppression**: while a door of the compartment is open (at most `door_allowance_s`
//!   from its opening) or a defrost runs (at most `defrost_max_s`), no excursion starts and the
//!   alarm delay does not run; it starts again from zero when suppression ends. Past its
//!   maximum, suppression ends by itself and `suppression_expired` is emitted once per door
//!   opening or defrost cycle. An excursion already started is not suppressed.
//! - **Statistics** of an excursion cover its samples from its first out-of-limit instant to
//!   its return within limits: min, max, mean of the samples; degree-minutes are the time
//!   integral of the distance beyond the nearest limit, each sample held until the next.
//! - **Probe faults**: a fault reported by the source, or no temperature for
//!   `probe_timeout_s`, is one `probe_fault`; the next valid temperature is one
//!   `probe_restored`. While faulted nothing is decided for the compartment (an excursion in
//!   progress stays open).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use waymark_wire::time::format_rfc3339_ms;
use waymark_wire::{Timestamp, Value};

use super::Fix;
use super::events::{self, Emitted, location_json, ms_to_s};
use super::manifest::{Plan, PlanCompartment};

/// Running statistics of an excursion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acc {
    /// Samples.
    pub n: u64,
    /// Sum of the samples, °C.
    pub sum: f64,
    /// Lowest sample, °C.
    pub min: f64,
    /// Highest sample, °C.
    pub max: f64,
    /// Integral of the excess beyond the limits, °C·ms.
    pub degree_ms: f64,
    /// The latest sample `(time, °C)`, held until the next.
    pub last: (Timestamp, f64),
}

impl Acc {
    /// Statistics starting with one sample.
    pub fn start(t: Timestamp, v: f64) -> Self {
        Acc {
            n: 1,
            sum: v,
            min: v,
            max: v,
            degree_ms: 0.0,
            last: (t, v),
        }
    }

    /// Adds the area of the held sample up to `t`.
    pub fn hold_until(&mut self, t: Timestamp, limits: &PlanCompartment) {
        let (lt, lv) = self.last;
        if t > lt {
            #[allow(clippy::cast_precision_loss)]
            let dt = (t - lt) as f64;
            self.degree_ms += limits.excess(lv) * dt;
            self.last.0 = t;
        }
    }

    /// Adds a sample at `t` (after [`Acc::hold_until`]).
    pub fn sample(&mut self, t: Timestamp, v: f64) {
        self.n += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.last = (t.max(self.last.0), v);
    }

    /// Mean of the samples.
    #[allow(clippy::cast_precision_loss)]
    pub fn mean(&self) -> f64 {
        self.sum / self.n.max(1) as f64
    }

    /// Degree-minutes.
    pub fn degree_minutes(&self) -> f64 {
        self.degree_ms / 60_000.0
    }

    fn json(&self) -> Json {
        let r = |v: f64| (v * 1000.0).round() / 1000.0;
        json!({
            "min_temp_c": r(self.min),
            "max_temp_c": r(self.max),
            "mean_temp_c": r(self.mean()),
            "degree_minutes": r(self.degree_minutes()),
            "samples": self.n,
        })
    }
}

/// An excursion in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Excursion {
    /// First out-of-limit instant.
    pub started_at: Timestamp,
    /// `above` or `below`.
    pub direction: String,
    /// Statistics so far.
    pub acc: Acc,
    /// Back within limits since (a pending clear).
    pub in_since: Option<Timestamp>,
    /// Statistics as they were when the temperature came back (reported at the end).
    pub at_in: Option<Acc>,
    /// Last `excursion_started` / `excursion_ongoing` time.
    pub last_report: Timestamp,
}

/// One compartment's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compartment {
    /// Its limits and delays from the manifest.
    pub plan: PlanCompartment,
    /// Latest temperature `(time, °C)`.
    pub last: Option<(Timestamp, f64)>,
    /// Since when the probe has been watched (manifest applied), for the probe timeout.
    pub watched_since: Timestamp,
    /// Defrost running since.
    pub defrost_since: Option<Timestamp>,
    /// `suppression_expired` sent for the current door opening.
    pub door_expired_sent: bool,
    /// `suppression_expired` sent for the current defrost.
    pub defrost_expired_sent: bool,
    /// Out of limits, unsuppressed, since (a pending alarm).
    pub out_since: Option<Timestamp>,
    /// Statistics of the pending alarm.
    pub pending: Option<Acc>,
    /// The excursion in progress.
    pub excursion: Option<Excursion>,
    /// Probe fault `(kind, since)`.
    pub fault: Option<(String, Timestamp)>,
}

impl Compartment {
    fn new(plan: PlanCompartment, t: Timestamp) -> Self {
        Compartment {
            plan,
            last: None,
            watched_since: t,
            defrost_since: None,
            door_expired_sent: false,
            defrost_expired_sent: false,
            out_since: None,
            pending: None,
            excursion: None,
            fault: None,
        }
    }
}

/// All compartments, and the cargo doors they share.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ColdChain {
    /// Compartments of the applied manifest, in its order.
    pub compartments: Vec<Compartment>,
    /// Door id → opened at (only open doors are present).
    pub open_doors: BTreeMap<u8, Timestamp>,
}

/// The door id of a door signal (`Vehicle.Cargo.Door.IsOpen` = 0, `Door<n>.IsOpen` = n).
pub fn door_id(signal: &str) -> Option<u8> {
    let mid = signal
        .strip_prefix("Vehicle.Cargo.Door")?
        .strip_suffix(".IsOpen")?;
    if mid.is_empty() {
        Some(0)
    } else if mid.starts_with('0') {
        None
    } else {
        mid.parse().ok().filter(|n| *n > 0)
    }
}

impl ColdChain {
    /// Shifts every stored time by `d` ms.
    pub fn shift(&mut self, d: i64) {
        for t in self.open_doors.values_mut() {
            *t += d;
        }
        for c in &mut self.compartments {
            c.watched_since += d;
            for t in [&mut c.defrost_since, &mut c.out_since]
                .into_iter()
                .flatten()
            {
                *t += d;
            }
            if let Some((t, _)) = &mut c.last {
                *t += d;
            }
            if let Some((_, t)) = &mut c.fault {
                *t += d;
            }
            for a in c.pending.iter_mut() {
                a.last.0 += d;
            }
            if let Some(x) = &mut c.excursion {
                x.started_at += d;
                x.last_report += d;
                x.acc.last.0 += d;
                if let Some(t) = &mut x.in_since {
                    *t += d;
                }
                if let Some(a) = &mut x.at_in {
                    a.last.0 += d;
                }
            }
        }
    }

    /// Applies the compartments of a manifest: a compartment that keeps its name keeps its
    /// state (an excursion in progress continues under the new limits); one that disappears
    /// ends its excursion (`compartment_removed`).
    pub fn apply(
        &mut self,
        t: Timestamp,
        plan: Option<&Plan>,
        trip_id: Option<&str>,
        fix: Option<&Fix>,
        out: &mut Vec<Emitted>,
    ) {
        let new = plan.map(|p| p.compartments.as_slice()).unwrap_or_default();
        let mut old = std::mem::take(&mut self.compartments);
        for c in &mut old {
            if !new.iter().any(|n| n.name == c.plan.name) {
                let reason = if plan.is_some() {
                    "compartment_removed"
                } else {
                    "manifest_cleared"
                };
                end_excursion(c, t, reason, trip_id, fix, out);
            }
        }
        self.compartments = new
            .iter()
            .map(|n| match old.iter().position(|o| o.plan.name == n.name) {
                Some(i) => {
                    let mut c = old.swap_remove(i);
                    c.plan = n.clone();
                    c
                }
                None => Compartment::new(n.clone(), t),
            })
            .collect();
    }

    /// A `Vehicle.Cargo.*` reading; `false` when its value is of the wrong kind.
    pub fn on_reading(
        &mut self,
        t: Timestamp,
        signal: &str,
        value: &Value,
        trip_id: Option<&str>,
        out: &mut Vec<Emitted>,
    ) -> bool {
        if let Some(id) = door_id(signal) {
            let Value::Bool(open) = value else {
                return false;
            };
            if *open {
                self.open_doors.entry(id).or_insert(t);
            } else if self.open_doors.remove(&id).is_some() {
                for c in &mut self.compartments {
                    if c.plan.has_door(id) && !c.plan_doors_open(&self.open_doors) {
                        c.door_expired_sent = false;
                    }
                }
            }
            return true;
        }
        let Some(rest) = signal.strip_prefix("Vehicle.Cargo.") else {
            return true;
        };
        let Some((name, leaf)) = rest.split_once('.') else {
            return true;
        };
        let Some(c) = self.compartments.iter_mut().find(|c| c.plan.name == name) else {
            return true;
        };
        match leaf {
            "Temperature" => {
                let Value::Num(v) = value else { return false };
                if !v.is_finite() {
                    return false;
                }
                on_temperature(c, t, *v, trip_id, out);
                true
            }
            "IsDefrosting" => {
                let Value::Bool(on) = value else { return false };
                if *on {
                    c.defrost_since.get_or_insert(t);
                } else {
                    c.defrost_since = None;
                    c.defrost_expired_sent = false;
                }
                true
            }
            _ => true,
        }
    }

    /// A probe fault reported by the source.
    pub fn on_fault(
        &mut self,
        t: Timestamp,
        compartment: &str,
        kind: &str,
        trip_id: Option<&str>,
        out: &mut Vec<Emitted>,
    ) {
        if let Some(c) = self
            .compartments
            .iter_mut()
            .find(|c| c.plan.name == compartment)
        {
            raise_fault(c, t, kind, t, trip_id, out);
        }
    }

    /// Timers at `t`: suppression maxima, alarm and clear delays, ongoing reports, probe
    /// timeouts.
    pub fn evaluate(
        &mut self,
        t: Timestamp,
        trip_id: Option<&str>,
        fix: Option<&Fix>,
        out: &mut Vec<Emitted>,
    ) {
        for c in &mut self.compartments {
            // Probe timeout.
            if c.fault.is_none() {
                let seen = c.last.map_or(c.watched_since, |(lt, _)| lt);
                if t - seen >= c.plan.probe_timeout_ms {
                    let since = seen + c.plan.probe_timeout_ms;
                    raise_fault(c, t, "no_data", since, trip_id, out);
                }
            }
            // Suppression.
            let door_since = c.plan.doors_open_since(&self.open_doors);
            let mut suppressed = false;
            if let Some(s) = door_since {
                if t - s < c.plan.door_allowance_ms {
                    suppressed = true;
                } else if !c.door_expired_sent {
                    c.door_expired_sent = true;
                    out.push(expired(
                        c,
                        t,
                        "door_open",
                        s,
                        c.plan.door_allowance_ms,
                        trip_id,
                        fix,
                    ));
                }
            }
            if let Some(s) = c.defrost_since {
                if t - s < c.plan.defrost_max_ms {
                    suppressed = true;
                } else if !c.defrost_expired_sent {
                    c.defrost_expired_sent = true;
                    out.push(expired(
                        c,
                        t,
                        "defrost",
                        s,
                        c.plan.defrost_max_ms,
                        trip_id,
                        fix,
                    ));
                }
            }
            if c.fault.is_some() {
                continue;
            }
            let Some((_, v)) = c.last else { continue };
            match &mut c.excursion {
                None => {
                    if c.plan.is_out(v) && !suppressed {
                        let since = *c.out_since.get_or_insert(t);
                        let acc = c.pending.get_or_insert_with(|| Acc::start(t, v));
                        if t - since >= c.plan.alarm_delay_ms {
                            let mut acc = acc.clone();
                            acc.hold_until(t, &c.plan);
                            let direction = if v > c.plan.max_c { "above" } else { "below" };
                            c.excursion = Some(Excursion {
                                started_at: since,
                                direction: direction.to_string(),
                                acc: acc.clone(),
                                in_since: None,
                                at_in: None,
                                last_report: t,
                            });
                            c.pending = None;
                            c.out_since = None;
                            let mut data = base(c, trip_id, fix);
                            extend(
                                &mut data,
                                json!({
                                    "direction": direction,
                                    "started_at": format_rfc3339_ms(since),
                                    "temperature_c": v,
                                    "alarm_delay_s": ms_to_s(c.plan.alarm_delay_ms),
                                }),
                            );
                            extend(&mut data, acc.json());
                            out.push(Emitted::new(
                                events::EXCURSION_STARTED,
                                t,
                                Some(c.plan.name.clone()),
                                data,
                            ));
                        }
                    } else {
                        c.out_since = None;
                        c.pending = None;
                    }
                }
                Some(x) => {
                    if let Some(since) = x.in_since
                        && t - since >= c.plan.clear_delay_ms
                    {
                        end_excursion(c, t, "recovered", trip_id, fix, out);
                        continue;
                    }
                    if t - x.last_report >= c.plan.ongoing_interval_ms {
                        x.last_report = t;
                        let mut acc = x.acc.clone();
                        acc.hold_until(t, &c.plan);
                        let started = x.started_at;
                        let direction = x.direction.clone();
                        let mut data = base(c, trip_id, fix);
                        extend(
                            &mut data,
                            json!({
                                "direction": direction,
                                "started_at": format_rfc3339_ms(started),
                                "duration_s": ms_to_s(t - started),
                                "temperature_c": v,
                            }),
                        );
                        extend(&mut data, acc.json());
                        out.push(Emitted::new(
                            events::EXCURSION_ONGOING,
                            t,
                            Some(c.plan.name.clone()),
                            data,
                        ));
                    }
                }
            }
        }
    }

    /// The latest temperature of each compartment, for POD events.
    pub fn snapshot(&self) -> Json {
        Json::Array(
            self.compartments
                .iter()
                .map(|c| {
                    json!({
                        "compartment": c.plan.name,
                        "temperature_c": c.last.map(|l| l.1),
                        "time": c.last.map(|l| format_rfc3339_ms(l.0)),
                        "fault": c.fault.as_ref().map(|f| f.0.clone()),
                        "in_excursion": c.excursion.is_some(),
                    })
                })
                .collect(),
        )
    }
}

impl PlanCompartment {
    fn doors_open_since(&self, open: &BTreeMap<u8, Timestamp>) -> Option<Timestamp> {
        open.iter()
            .filter(|(id, _)| self.has_door(**id))
            .map(|(_, t)| *t)
            .min()
    }
}

impl Compartment {
    fn plan_doors_open(&self, open: &BTreeMap<u8, Timestamp>) -> bool {
        self.plan.doors_open_since(open).is_some()
    }
}

fn on_temperature(
    c: &mut Compartment,
    t: Timestamp,
    v: f64,
    trip_id: Option<&str>,
    out: &mut Vec<Emitted>,
) {
    if let Some((kind, since)) = c.fault.take() {
        let mut data = base(c, trip_id, None);
        extend(
            &mut data,
            json!({
                "fault": kind,
                "since": format_rfc3339_ms(since),
                "duration_s": ms_to_s(t - since),
                "temperature_c": v,
            }),
        );
        out.push(Emitted::new(
            events::PROBE_RESTORED,
            t,
            Some(c.plan.name.clone()),
            data,
        ));
    }
    c.last = Some((t, v));
    let plan = c.plan.clone();
    if let Some(x) = &mut c.excursion {
        x.acc.hold_until(t, &plan);
        if plan.is_out(v) {
            x.in_since = None;
            x.at_in = None;
        } else if x.in_since.is_none() {
            x.in_since = Some(t);
            x.at_in = Some(x.acc.clone());
        }
        x.acc.sample(t, v);
    } else if let Some(acc) = &mut c.pending {
        acc.hold_until(t, &plan);
        acc.sample(t, v);
    }
}

fn raise_fault(
    c: &mut Compartment,
    t: Timestamp,
    kind: &str,
    since: Timestamp,
    trip_id: Option<&str>,
    out: &mut Vec<Emitted>,
) {
    if c.fault.is_some() {
        return;
    }
    c.fault = Some((kind.to_string(), since));
    // The value before the fault is not current any more.
    c.last = None;
    c.out_since = None;
    c.pending = None;
    let mut data = base(c, trip_id, None);
    extend(
        &mut data,
        json!({"fault": kind, "since": format_rfc3339_ms(since)}),
    );
    out.push(Emitted::new(
        events::PROBE_FAULT,
        t,
        Some(c.plan.name.clone()),
        data,
    ));
}

fn end_excursion(
    c: &mut Compartment,
    t: Timestamp,
    reason: &str,
    trip_id: Option<&str>,
    fix: Option<&Fix>,
    out: &mut Vec<Emitted>,
) {
    let Some(x) = c.excursion.take() else { return };
    c.out_since = None;
    c.pending = None;
    let (ended, acc) = match (x.in_since, x.at_in) {
        (Some(s), Some(a)) => (s, a),
        _ => {
            let mut a = x.acc.clone();
            a.hold_until(t, &c.plan);
            (t, a)
        }
    };
    let mut data = base(c, trip_id, fix);
    extend(
        &mut data,
        json!({
            "direction": x.direction,
            "reason": reason,
            "started_at": format_rfc3339_ms(x.started_at),
            "ended_at": format_rfc3339_ms(ended),
            "duration_s": ms_to_s(ended - x.started_at),
        }),
    );
    extend(&mut data, acc.json());
    out.push(Emitted::new(
        events::EXCURSION_ENDED,
        t,
        Some(c.plan.name.clone()),
        data,
    ));
}

fn expired(
    c: &Compartment,
    t: Timestamp,
    reason: &str,
    since: Timestamp,
    max_ms: i64,
    trip_id: Option<&str>,
    fix: Option<&Fix>,
) -> Emitted {
    let mut data = base(c, trip_id, fix);
    extend(
        &mut data,
        json!({
            "reason": reason,
            "since": format_rfc3339_ms(since),
            "maximum_s": ms_to_s(max_ms),
            "temperature_c": c.last.map(|l| l.1),
        }),
    );
    Emitted::new(
        events::SUPPRESSION_EXPIRED,
        t,
        Some(c.plan.name.clone()),
        data,
    )
}

fn base(c: &Compartment, trip_id: Option<&str>, fix: Option<&Fix>) -> Json {
    json!({
        "trip_id": trip_id,
        "compartment": c.plan.name,
        "limits": c.plan.limits_json(),
        "location": location_json(fix),
    })
}

fn extend(data: &mut Json, extra: Json) {
    if let (Json::Object(m), Json::Object(x)) = (data, extra) {
        m.extend(x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn door_ids() {
        assert_eq!(door_id("Vehicle.Cargo.Door.IsOpen"), Some(0));
        assert_eq!(door_id("Vehicle.Cargo.Door2.IsOpen"), Some(2));
        assert_eq!(door_id("Vehicle.Cargo.Door255.IsOpen"), Some(255));
        for bad in [
            "Vehicle.Cargo.Door256.IsOpen",
            "Vehicle.Cargo.Door02.IsOpen",
            "Vehicle.Cargo.Door0.IsOpen",
            "Vehicle.Cargo.DoorX.IsOpen",
            "Vehicle.Cargo.Door.IsLocked",
        ] {
            assert_eq!(door_id(bad), None, "{bad}");
        }
    }
}
