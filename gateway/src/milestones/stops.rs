//! The trip: geofences, arrival and departure, lateness, delay prediction, trip start and
//! end, and POD enrichment.
//!
//! Invariants:
//! - **Hysteresis.** A stop's presence changes from outside to inside only when the signed
//!   distance to its fence is at or below `-entry_band_m`, and from inside to outside only when
//!   it is above `exit_band_m`; positions in between never change it, so GNSS jitter at a
//!   border cannot make a vehicle flap in and out (property-tested).
//! - **Arrived** once per stop and trip: inside, standing (speed at or below
//!   `stopped_speed_kmh`) without interruption for the stop's `dwell_s`. Moving off (speed at
//!   or above `moving_speed_kmh`) or leaving before that cancels the dwell: a stop shorter than
//!   the dwell is no arrival. **Departed** once, when the vehicle exits a stop it arrived at.
//!   `late` once, with the arrival, when it was after the window; `delay_predicted` at most
//!   once per stop and window.
//! - **Trip** started once (the first movement with the manifest applied) and ended once:
//!   every stop arrived and the last one departed or the ignition off (`completed`), a
//!   manifest with another trip id (`replaced`), or the manifest removed (`cancelled`).
//! - **A replacement manifest** with the same `trip_id` is a revision: stops that keep their
//!   `stop_id` keep their progress (an open dwell continues, an arrival is not repeated; the
//!   new fence decides presence at the next fix, with the usual events), removed stops are
//!   forgotten, new stops start fresh, and a stop whose window changed may predict a delay
//!   again. A manifest with another `trip_id` ends the old trip and starts from nothing: its
//!   stops' presence is evaluated on the last fix at once.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use uuid::Uuid;
use waymark_wire::Timestamp;
use waymark_wire::time::format_rfc3339_ms;

use super::events::{self, Emitted, location_json, ms_to_s};
use super::manifest::{Plan, PlanStop};
use super::vehicle::Vehicle;
use super::{DetectorConfig, Fix, ms};
use crate::store::NewEvent;

/// POD event ids remembered to count each POD once (device retries reuse the id).
pub const RECENT_PODS: usize = 32;

/// Progress at one stop.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StopState {
    /// Inside the fence (with hysteresis); `None` before the first fix.
    pub inside: Option<bool>,
    /// When the vehicle last entered.
    pub entered_at: Option<Timestamp>,
    /// Since when the vehicle has stood inside (an open dwell).
    pub dwell_since: Option<Timestamp>,
    /// Arrival time (start of the dwell that completed).
    pub arrived_at: Option<Timestamp>,
    /// Departure time.
    pub departed_at: Option<Timestamp>,
    /// `late` emitted.
    pub late_sent: bool,
    /// `delay_predicted` emitted.
    pub predicted: bool,
    /// Since when the prediction has said late.
    predict_since: Option<Timestamp>,
    /// Latest signed distance to the fence, metres.
    pub distance_m: Option<f64>,
    /// POD events received for this stop.
    pub pods: u32,
    /// Whether one of them met the expected POD kind.
    pub pod_met: bool,
}

/// The applied manifest and the trip's progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trip {
    /// The applied manifest.
    pub plan: Option<Plan>,
    /// One per plan stop, same order.
    pub stops: Vec<StopState>,
    /// When `trip_started` was emitted.
    pub started_at: Option<Timestamp>,
    /// `trip_ended` emitted.
    pub ended: bool,
    /// Ids of recent POD events (see [`RECENT_PODS`]).
    recent_pods: VecDeque<Uuid>,
}

impl Trip {
    /// The applied trip id.
    pub fn trip_id(&self) -> Option<&str> {
        self.plan.as_ref().map(|p| p.trip_id.as_str())
    }

    /// Shifts every stored time by `d` ms.
    pub fn shift(&mut self, d: i64) {
        if let Some(t) = &mut self.started_at {
            *t += d;
        }
        for s in &mut self.stops {
            for t in [
                &mut s.entered_at,
                &mut s.dwell_since,
                &mut s.arrived_at,
                &mut s.departed_at,
                &mut s.predict_since,
            ]
            .into_iter()
            .flatten()
            {
                *t += d;
            }
        }
    }

    /// Applies a manifest (see the module docs for what carries over).
    pub fn apply(
        &mut self,
        t: Timestamp,
        plan: Option<Plan>,
        fix: Option<&Fix>,
        out: &mut Vec<Emitted>,
    ) {
        let same_trip = matches!((&self.plan, &plan), (Some(a), Some(b)) if a.trip_id == b.trip_id);
        if !same_trip {
            if self.started_at.is_some() && !self.ended {
                let reason = if plan.is_some() {
                    "replaced"
                } else {
                    "cancelled"
                };
                self.end(t, reason, fix, out);
            }
            self.started_at = None;
            self.ended = false;
            self.recent_pods.clear();
            self.stops = plan
                .as_ref()
                .map(|p| vec![StopState::default(); p.stops.len()])
                .unwrap_or_default();
            self.plan = plan;
            if let Some(f) = fix {
                self.update_presence(t, f, out);
            }
            return;
        }
        let (Some(old), Some(new)) = (self.plan.take(), plan) else {
            return;
        };
        let mut stops = Vec::with_capacity(new.stops.len());
        for ns in &new.stops {
            let kept = old.stop_index(&ns.stop_id).map(|i| {
                let mut st = self.stops.get(i).cloned().unwrap_or_default();
                if old.stops[i].window != ns.window {
                    st.predicted = false;
                    st.predict_since = None;
                }
                st
            });
            stops.push(kept.unwrap_or_default());
        }
        self.stops = stops;
        self.plan = Some(new);
    }

    fn end(&mut self, t: Timestamp, reason: &str, fix: Option<&Fix>, out: &mut Vec<Emitted>) {
        let Some(plan) = &self.plan else { return };
        self.ended = true;
        let arrived = self.stops.iter().filter(|s| s.arrived_at.is_some()).count();
        out.push(Emitted::new(
            events::TRIP_ENDED,
            t,
            Some(plan.trip_id.clone()),
            json!({
                "trip_id": plan.trip_id,
                "reason": reason,
                "started_at": self.started_at.map(format_rfc3339_ms),
                "stops_total": plan.stops.len(),
                "stops_arrived": arrived,
                "location": location_json(fix),
            }),
        ));
    }

    /// A new position.
    pub fn on_fix(
        &mut self,
        t: Timestamp,
        fix: &Fix,
        vehicle: &Vehicle,
        cfg: &DetectorConfig,
        out: &mut Vec<Emitted>,
    ) {
        self.update_presence(t, fix, out);
        self.predict(t, vehicle, cfg, fix, out);
    }

    fn update_presence(&mut self, t: Timestamp, fix: &Fix, out: &mut Vec<Emitted>) {
        let Some(plan) = &self.plan else { return };
        let trip_id = plan.trip_id.clone();
        for (i, ps) in plan.stops.iter().enumerate() {
            let Some(st) = self.stops.get_mut(i) else {
                continue;
            };
            let d = ps.fence.signed_distance_m(fix.lat, fix.lon);
            st.distance_m = Some(d);
            match st.inside {
                Some(true) => {
                    if d > ps.exit_band_m {
                        st.inside = Some(false);
                        st.dwell_since = None;
                        out.push(Emitted::new(
                            events::GEOFENCE_EXITED,
                            t,
                            Some(ps.stop_id.clone()),
                            stop_data(&trip_id, i, ps, Some(fix), json!({"distance_m": d})),
                        ));
                        if st.arrived_at.is_some() && st.departed_at.is_none() {
                            st.departed_at = Some(t);
                            let arrived = st.arrived_at.unwrap_or(t);
                            let expected = ps.expected_pod != super::manifest::ExpectedPod::None;
                            out.push(Emitted::new(
                                events::DEPARTED,
                                t,
                                Some(ps.stop_id.clone()),
                                stop_data(
                                    &trip_id,
                                    i,
                                    ps,
                                    Some(fix),
                                    json!({
                                        "arrived_at": format_rfc3339_ms(arrived),
                                        "departed_at": format_rfc3339_ms(t),
                                        "dwell_s": ms_to_s(t - arrived),
                                        "expected_pod": ps.expected_pod.as_str(),
                                        "pod_received": st.pods > 0,
                                        "pod_missing": expected && !st.pod_met,
                                    }),
                                ),
                            ));
                        }
                    }
                }
                _ => {
                    if d <= -ps.entry_band_m {
                        st.inside = Some(true);
                        st.entered_at = Some(t);
                        out.push(Emitted::new(
                            events::GEOFENCE_ENTERED,
                            t,
                            Some(ps.stop_id.clone()),
                            stop_data(&trip_id, i, ps, Some(fix), json!({"distance_m": d})),
                        ));
                    } else {
                        st.inside = Some(false);
                    }
                }
            }
        }
    }

    fn predict(
        &mut self,
        t: Timestamp,
        vehicle: &Vehicle,
        cfg: &DetectorConfig,
        fix: &Fix,
        out: &mut Vec<Emitted>,
    ) {
        let Some(plan) = &self.plan else { return };
        if self.started_at.is_none() || self.ended || vehicle.moving != Some(true) {
            return;
        }
        let Some(i) = self.stops.iter().position(|s| s.arrived_at.is_none()) else {
            return;
        };
        let (ps, st) = (&plan.stops[i], &mut self.stops[i]);
        let Some((_, end)) = ps.window else { return };
        if st.predicted || st.inside == Some(true) {
            return;
        }
        if vehicle.moving_ms < ms(cfg.min_moving_history_s) || vehicle.avg_speed_kmh < 1.0 {
            return;
        }
        let remaining_m = st.distance_m.unwrap_or(0.0).max(0.0) * cfg.route_factor;
        let eta_s = remaining_m / (vehicle.avg_speed_kmh / 3.6);
        // Bounded: a remaining distance of at most ~20,000 km at ≥ 1 km/h.
        #[allow(clippy::cast_possible_truncation)]
        let eta = t + (eta_s * 1000.0) as i64;
        if eta <= end {
            st.predict_since = None;
            return;
        }
        let since = *st.predict_since.get_or_insert(t);
        if t - since < ms(cfg.delay_confirm_s) {
            return;
        }
        st.predicted = true;
        let data = stop_data(
            &plan.trip_id,
            i,
            ps,
            Some(fix),
            json!({
                "window": ps.window_json(),
                "predicted_arrival": format_rfc3339_ms(eta),
                "predicted_delay_s": ms_to_s(eta - end),
                "remaining_m": remaining_m.round(),
                "average_speed_kmh": (vehicle.avg_speed_kmh * 10.0).round() / 10.0,
            }),
        );
        out.push(Emitted::new(
            events::DELAY_PREDICTED,
            t,
            Some(ps.stop_id.clone()),
            data,
        ));
    }

    /// Dwell, arrival, lateness, trip start and end at `t`.
    pub fn evaluate(
        &mut self,
        t: Timestamp,
        vehicle: &Vehicle,
        fix: Option<&Fix>,
        cfg: &DetectorConfig,
        out: &mut Vec<Emitted>,
    ) {
        let Some(plan) = &self.plan else { return };
        if self.started_at.is_none() && !self.ended && vehicle.moving == Some(true) {
            self.started_at = Some(t);
            out.push(Emitted::new(
                events::TRIP_STARTED,
                t,
                Some(plan.trip_id.clone()),
                json!({
                    "trip_id": plan.trip_id,
                    "stops_total": plan.stops.len(),
                    "location": location_json(fix),
                }),
            ));
        }
        let standing = vehicle.is_standing(cfg);
        for (i, ps) in plan.stops.iter().enumerate() {
            let Some(st) = self.stops.get_mut(i) else {
                continue;
            };
            if st.inside != Some(true) || st.arrived_at.is_some() {
                continue;
            }
            match standing {
                Some(true) => {
                    let since = *st.dwell_since.get_or_insert(t);
                    if t - since >= ps.dwell_ms {
                        st.arrived_at = Some(since);
                        let late_by = ps.window.map(|(_, end)| since - end).filter(|d| *d > 0);
                        let early = ps.window.is_some_and(|(start, _)| since < start);
                        let out_of_order = self.stops_before_unarrived(i);
                        out.push(Emitted::new(
                            events::ARRIVED,
                            t,
                            Some(ps.stop_id.clone()),
                            stop_data(
                                &plan.trip_id,
                                i,
                                ps,
                                fix,
                                json!({
                                    "arrived_at": format_rfc3339_ms(since),
                                    "dwell_s": ms_to_s(ps.dwell_ms),
                                    "window": ps.window_json(),
                                    "on_time": ps.window.map(|_| late_by.is_none()),
                                    "early": early,
                                    "out_of_order": out_of_order,
                                }),
                            ),
                        ));
                        let st = &mut self.stops[i];
                        if let (Some(late_by), false) = (late_by, st.late_sent) {
                            st.late_sent = true;
                            out.push(Emitted::new(
                                events::LATE,
                                t,
                                Some(ps.stop_id.clone()),
                                stop_data(
                                    &plan.trip_id,
                                    i,
                                    ps,
                                    fix,
                                    json!({
                                        "arrived_at": format_rfc3339_ms(since),
                                        "window": ps.window_json(),
                                        "late_by_s": ms_to_s(late_by),
                                    }),
                                ),
                            ));
                        }
                    }
                }
                Some(false) => st.dwell_since = None,
                None => {}
            }
        }
        if self.started_at.is_some() && !self.ended {
            let all = self.stops.iter().all(|s| s.arrived_at.is_some());
            let last = self.stops.iter().max_by_key(|s| s.arrived_at);
            if all
                && last.is_some_and(|s| s.departed_at.is_some() || vehicle.ignition == Some(false))
            {
                self.end(t, "completed", fix, out);
            }
        }
    }

    fn stops_before_unarrived(&self, i: usize) -> bool {
        self.stops[..i].iter().any(|s| s.arrived_at.is_none())
    }

    /// Adds the trip context to a POD event (see `Engine::enrich_pod`).
    pub fn enrich_pod(
        &mut self,
        _t: Timestamp,
        ev: &mut NewEvent,
        fix: Option<&Fix>,
        temperatures: Json,
    ) {
        let mut data = match std::mem::take(&mut ev.data) {
            Json::Object(m) => m,
            other => {
                let mut m = serde_json::Map::new();
                m.insert("device_data".into(), other);
                m
            }
        };
        let text = |k: &str| data.get(k).and_then(Json::as_str).map(str::to_string);
        let stop_ref = text("stop_ref");
        let order_ref = text("order_ref");
        let kind = text("device_kind").unwrap_or_default();
        let mut flags: Vec<&str> = Vec::new();
        let repeat = self.recent_pods.contains(&ev.id);
        if !repeat {
            if self.recent_pods.len() == RECENT_PODS {
                self.recent_pods.pop_front();
            }
            self.recent_pods.push_back(ev.id);
        }
        let mut stop_json = Json::Null;
        let (mut orders, mut shipments) = (json!([]), json!([]));
        let mut expected = Json::Null;
        let mut in_fence = false;
        match &self.plan {
            None => flags.push("no_manifest"),
            Some(plan) => {
                let inside: Vec<usize> = (0..self.stops.len())
                    .filter(|&i| self.stops[i].inside == Some(true))
                    .collect();
                let by_fence = inside
                    .iter()
                    .copied()
                    .find(|&i| {
                        self.stops[i].arrived_at.is_some() && self.stops[i].departed_at.is_none()
                    })
                    .or_else(|| inside.first().copied());
                let by_ref = stop_ref.as_deref().and_then(|r| plan.stop_index(r));
                if stop_ref.is_some()
                    && (by_ref.is_none() || (by_fence.is_some() && by_fence != by_ref))
                {
                    flags.push("stop_ref_mismatch");
                }
                in_fence = by_fence.is_some();
                if !in_fence {
                    flags.push("outside_geofence");
                }
                if let Some(i) = by_fence.or(by_ref) {
                    let ps = &plan.stops[i];
                    stop_json = stop_json_of(i, ps);
                    orders = json!(ps.orders);
                    shipments = json!(ps.shipments);
                    expected = json!(ps.expected_pod.as_str());
                    if let Some(o) = &order_ref
                        && !ps.orders.contains(o)
                        && !ps.shipments.contains(o)
                    {
                        flags.push("order_not_on_stop");
                    }
                    let met = ps.expected_pod != super::manifest::ExpectedPod::None
                        && ps.expected_pod.met_by(&kind);
                    if !met {
                        flags.push("unexpected_pod_kind");
                    }
                    let st = &mut self.stops[i];
                    if !repeat {
                        st.pods += 1;
                    }
                    st.pod_met |= met;
                } else {
                    flags.push("no_stop");
                }
            }
        }
        data.insert("trip_id".into(), json!(self.trip_id()));
        data.insert("stop".into(), stop_json);
        data.insert("orders".into(), orders);
        data.insert("shipments".into(), shipments);
        data.insert("expected_pod".into(), expected);
        data.insert("in_geofence".into(), json!(in_fence));
        data.insert("location".into(), location_json(fix));
        data.insert("temperatures".into(), temperatures);
        data.insert("flags".into(), json!(flags));
        ev.data = Json::Object(data);
    }
}

fn stop_json_of(i: usize, ps: &PlanStop) -> Json {
    json!({"stop_id": ps.stop_id, "name": ps.name, "index": i})
}

/// The fields every stop event has, plus `extra`'s.
fn stop_data(trip_id: &str, i: usize, ps: &PlanStop, fix: Option<&Fix>, extra: Json) -> Json {
    let mut m = serde_json::Map::new();
    m.insert("trip_id".into(), json!(trip_id));
    m.insert("stop".into(), stop_json_of(i, ps));
    m.insert("orders".into(), json!(ps.orders));
    m.insert("shipments".into(), json!(ps.shipments));
    m.insert("location".into(), location_json(fix));
    if let Json::Object(x) = extra {
        m.extend(x);
    }
    Json::Object(m)
}
