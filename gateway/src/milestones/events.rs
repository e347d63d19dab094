//! The events the detectors emit: type names, lanes, and the hand-over to the store.
//!
//! Every type here has a JSON Schema for its `data` in `docs/events/<type>.schema.json` and an
//! example in `docs/events/<type>.example.json` (docs/events.md); a test validates the
//! examples and every event the scripted scenarios produce against them.

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use waymark_wire::Timestamp;

use crate::store::{Lane, NewEvent};

/// `waymark.vehicle.ignition_on`.
pub const IGNITION_ON: &str = "waymark.vehicle.ignition_on";
/// `waymark.vehicle.ignition_off`.
pub const IGNITION_OFF: &str = "waymark.vehicle.ignition_off";
/// `waymark.vehicle.moving`.
pub const MOVING: &str = "waymark.vehicle.moving";
/// `waymark.vehicle.stopped`.
pub const STOPPED: &str = "waymark.vehicle.stopped";
/// `waymark.vehicle.dm1_changed`.
pub const DM1_CHANGED: &str = "waymark.vehicle.dm1_changed";
/// `waymark.milestone.trip_started`.
pub const TRIP_STARTED: &str = "waymark.milestone.trip_started";
/// `waymark.milestone.trip_ended`.
pub const TRIP_ENDED: &str = "waymark.milestone.trip_ended";
/// `waymark.milestone.geofence_entered`.
pub const GEOFENCE_ENTERED: &str = "waymark.milestone.geofence_entered";
/// `waymark.milestone.geofence_exited`.
pub const GEOFENCE_EXITED: &str = "waymark.milestone.geofence_exited";
/// `waymark.milestone.arrived`.
pub const ARRIVED: &str = "waymark.milestone.arrived";
/// `waymark.milestone.departed`.
pub const DEPARTED: &str = "waymark.milestone.departed";
/// `waymark.milestone.late`.
pub const LATE: &str = "waymark.milestone.late";
/// `waymark.milestone.delay_predicted`.
pub const DELAY_PREDICTED: &str = "waymark.milestone.delay_predicted";
/// `waymark.coldchain.excursion_started`.
pub const EXCURSION_STARTED: &str = "waymark.coldchain.excursion_started";
/// `waymark.coldchain.excursion_ongoing`.
pub const EXCURSION_ONGOING: &str = "waymark.coldchain.excursion_ongoing";
/// `waymark.coldchain.excursion_ended`.
pub const EXCURSION_ENDED: &str = "waymark.coldchain.excursion_ended";
/// `waymark.coldchain.suppression_expired`.
pub const SUPPRESSION_EXPIRED: &str = "waymark.coldchain.suppression_expired";
/// `waymark.coldchain.probe_fault`.
pub const PROBE_FAULT: &str = "waymark.coldchain.probe_fault";
/// `waymark.coldchain.probe_restored`.
pub const PROBE_RESTORED: &str = "waymark.coldchain.probe_restored";
/// `waymark.pod.<outcome>`: POD events come from the device source and are enriched here.
pub const POD_PREFIX: &str = "waymark.pod.";
/// The POD outcomes (`waymark.pod.delivered`, ...), as the device source names them.
pub const POD_OUTCOMES: [&str; 5] = ["delivered", "refused", "partial", "damaged", "attempted"];

/// Every type the detectors emit (POD types excluded: see [`POD_OUTCOMES`]).
pub const ALL: [&str; 19] = [
    IGNITION_ON,
    IGNITION_OFF,
    MOVING,
    STOPPED,
    DM1_CHANGED,
    TRIP_STARTED,
    TRIP_ENDED,
    GEOFENCE_ENTERED,
    GEOFENCE_EXITED,
    ARRIVED,
    DEPARTED,
    LATE,
    DELAY_PREDICTED,
    EXCURSION_STARTED,
    EXCURSION_ONGOING,
    EXCURSION_ENDED,
    SUPPRESSION_EXPIRED,
    PROBE_FAULT,
    PROBE_RESTORED,
];

/// The lane of an event type: cold-chain alarms, fault changes and POD are alerts, the rest
/// milestones.
pub fn lane_of(type_: &str) -> Lane {
    if type_.starts_with("waymark.coldchain.")
        || type_.starts_with(POD_PREFIX)
        || type_ == DM1_CHANGED
    {
        Lane::Alert
    } else {
        Lane::Milestone
    }
}

/// One event a detector decided on. The integration gives it its UUIDv7 and commits it in
/// the same transaction as the detector state that produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Emitted {
    /// Event type (one of [`ALL`]).
    #[serde(rename = "type")]
    pub type_: String,
    /// When the detector decided (event time, UTC ms; see the module docs of `milestones`).
    pub time_ms: Timestamp,
    /// The CloudEvent `subject`: stop id, compartment, trip id or ECU address.
    pub subject: Option<String>,
    /// The CloudEvent `data`.
    pub data: serde_json::Value,
}

impl Emitted {
    /// An event of `type_` at `time_ms`.
    pub fn new(
        type_: &str,
        time_ms: Timestamp,
        subject: Option<String>,
        data: serde_json::Value,
    ) -> Self {
        Emitted {
            type_: type_.to_string(),
            time_ms,
            subject,
            data,
        }
    }

    /// The store's form, with the id made at detection.
    pub fn into_new_event(self, id: Uuid) -> NewEvent {
        NewEvent {
            id,
            lane: lane_of(&self.type_),
            type_: self.type_,
            time_ms: self.time_ms,
            subject: self.subject,
            data: self.data,
        }
    }
}

/// A position in event data: `{"lat", "lon", "time"}` of the fix.
pub fn location_json(fix: Option<&super::Fix>) -> serde_json::Value {
    match fix {
        Some(f) => serde_json::json!({
            "lat": f.lat,
            "lon": f.lon,
            "time": waymark_wire::time::format_rfc3339_ms(f.time),
        }),
        None => serde_json::Value::Null,
    }
}

/// Milliseconds as seconds with millisecond precision, for `*_s` duration fields.
#[allow(clippy::cast_precision_loss)] // durations far below 2^53 ms
pub fn ms_to_s(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes() {
        assert_eq!(lane_of(ARRIVED), Lane::Milestone);
        assert_eq!(lane_of(EXCURSION_STARTED), Lane::Alert);
        assert_eq!(lane_of("waymark.pod.delivered"), Lane::Alert);
        assert_eq!(lane_of(DM1_CHANGED), Lane::Alert);
        assert_eq!(lane_of(IGNITION_ON), Lane::Milestone);
        let e = Emitted::new(LATE, 5, Some("S1".into()), serde_json::json!({}));
        let id = Uuid::now_v7();
        let n = e.into_new_event(id);
        assert_eq!(
            (n.id, n.lane, n.type_.as_str(), n.time_ms),
            (id, Lane::Milestone, LATE, 5)
        );
    }
}
