//! Events as CloudEvents 1.0 JSON documents (structured mode).
//!
//! The contract with ERP and portal (DESIGN §2):
//! - `id` is a UUIDv7 made once, when the event is detected or accepted; every retry on every
//!   hop carries the same `id`, so receivers deduplicate on it.
//! - `source` names the vehicle: `urn:waymark:vehicle:<vehicle id>`. The bridge checks that it
//!   matches the vehicle in the MQTT topic.
//! - `sequence` (CloudEvents *sequence* extension) is per vehicle, persistent across restarts
//!   and gap-free. The extension requires a lexicographically orderable string, so it is the
//!   decimal number left-padded with zeros to 20 digits; [`CloudEvent::sequence_number`]
//!   parses it back.
//! - `data` carries the correlation ids (trip, stop, order, shipment), location and evidence.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The only CloudEvents version we speak.
pub const SPEC_VERSION: &str = "1.0";
/// Every event's `datacontenttype`.
pub const DATA_CONTENT_TYPE: &str = "application/json";
/// Prefix of `source`; the vehicle id follows.
pub const SOURCE_PREFIX: &str = "urn:waymark:vehicle:";
/// Digits of the zero-padded `sequence` string (enough for any `u64`).
pub const SEQUENCE_DIGITS: usize = 20;
/// Largest serialized event the gateway accepts and the bridge takes in.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// A CloudEvents 1.0 event as Waymark publishes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudEvent {
    /// Always `"1.0"`.
    pub specversion: String,
    /// UUIDv7, made once at detection.
    pub id: Uuid,
    /// `urn:waymark:vehicle:<vehicle id>`.
    pub source: String,
    /// Event type, reverse-DNS style: `waymark.milestone.arrived`, `waymark.pod.delivered`.
    #[serde(rename = "type")]
    pub type_: String,
    /// When it happened, RFC 3339 UTC with milliseconds (`2026-11-23T07:52:50.123Z`).
    pub time: String,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// Optional subject: what the event is about within the source (a stop id, a compartment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Per-vehicle gap-free sequence, zero-padded decimal (see the module docs).
    pub sequence: String,
    /// Event payload.
    pub data: serde_json::Value,
}

/// Why a document is not a valid Waymark CloudEvent.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EventError {
    /// The JSON does not have the CloudEvent shape; the message names the field.
    #[error("not a CloudEvent: {0}")]
    Shape(String),
    /// A field is present but its value is wrong.
    #[error("field `{field}`: {reason}")]
    Field {
        /// Attribute name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Larger than [`MAX_EVENT_BYTES`].
    #[error("event is {0} bytes, the limit is {MAX_EVENT_BYTES}")]
    TooLarge(usize),
}

impl CloudEvent {
    /// The `source` of a vehicle.
    pub fn source_for(vehicle_id: &str) -> String {
        format!("{SOURCE_PREFIX}{vehicle_id}")
    }

    /// Formats a sequence number the way the `sequence` attribute carries it.
    pub fn format_sequence(sequence: u64) -> String {
        format!("{sequence:0width$}", width = SEQUENCE_DIGITS)
    }

    /// The sequence as a number.
    ///
    /// # Errors
    /// [`EventError::Field`] when `sequence` is not a zero-padded decimal number.
    pub fn sequence_number(&self) -> Result<u64, EventError> {
        if self.sequence.len() != SEQUENCE_DIGITS
            || !self.sequence.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(EventError::Field {
                field: "sequence",
                reason: format!(
                    "expected {SEQUENCE_DIGITS} decimal digits, got {:?}",
                    self.sequence
                ),
            });
        }
        self.sequence.parse().map_err(|e| EventError::Field {
            field: "sequence",
            reason: format!("{e}"),
        })
    }

    /// The vehicle id in `source`, if it has the Waymark form.
    pub fn vehicle_id(&self) -> Option<&str> {
        self.source.strip_prefix(SOURCE_PREFIX)
    }

    /// Parses and checks a document: shape, size, `specversion`, `datacontenttype`, `sequence`,
    /// `time` and the `source` form.
    ///
    /// # Errors
    /// The first problem found, naming the field.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EventError> {
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(EventError::TooLarge(bytes.len()));
        }
        let ev: CloudEvent =
            serde_json::from_slice(bytes).map_err(|e| EventError::Shape(e.to_string()))?;
        if ev.specversion != SPEC_VERSION {
            return Err(EventError::Field {
                field: "specversion",
                reason: format!("expected {SPEC_VERSION:?}, got {:?}", ev.specversion),
            });
        }
        if ev.datacontenttype != DATA_CONTENT_TYPE {
            return Err(EventError::Field {
                field: "datacontenttype",
                reason: format!(
                    "expected {DATA_CONTENT_TYPE:?}, got {:?}",
                    ev.datacontenttype
                ),
            });
        }
        if ev.vehicle_id().is_none_or(str::is_empty) {
            return Err(EventError::Field {
                field: "source",
                reason: format!("expected {SOURCE_PREFIX}<vehicle id>, got {:?}", ev.source),
            });
        }
        if ev.type_.is_empty() {
            return Err(EventError::Field {
                field: "type",
                reason: "empty".into(),
            });
        }
        crate::time::parse_rfc3339_ms(&ev.time).map_err(|reason| EventError::Field {
            field: "time",
            reason,
        })?;
        ev.sequence_number()?;
        Ok(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CloudEvent {
        CloudEvent {
            specversion: SPEC_VERSION.into(),
            id: Uuid::parse_str("019ab0a4-4b3e-7c1a-9f00-0123456789ab").unwrap(),
            source: CloudEvent::source_for("TRUCK-042"),
            type_: "waymark.milestone.arrived".into(),
            time: "2026-11-23T07:52:50.123Z".into(),
            datacontenttype: DATA_CONTENT_TYPE.into(),
            subject: None,
            sequence: CloudEvent::format_sequence(42),
            data: serde_json::json!({"trip_id": "T1"}),
        }
    }

    #[test]
    fn round_trips_and_validates() {
        let ev = sample();
        let json = serde_json::to_vec(&ev).unwrap();
        let back = CloudEvent::from_json(&json).unwrap();
        assert_eq!(back, ev);
        assert_eq!(back.sequence_number().unwrap(), 42);
        assert_eq!(back.vehicle_id(), Some("TRUCK-042"));
    }

    #[test]
    fn sequence_is_lexicographically_ordered() {
        assert!(CloudEvent::format_sequence(9) < CloudEvent::format_sequence(10));
        assert_eq!(CloudEvent::format_sequence(u64::MAX).len(), SEQUENCE_DIGITS);
    }

    #[test]
    fn rejects_name_the_field() {
        let mut ev = sample();
        ev.sequence = "42".into();
        let err = CloudEvent::from_json(&serde_json::to_vec(&ev).unwrap()).unwrap_err();
        assert!(
            matches!(
                err,
                EventError::Field {
                    field: "sequence",
                    ..
                }
            ),
            "{err}"
        );
        let mut ev = sample();
        ev.source = "truck".into();
        let err = CloudEvent::from_json(&serde_json::to_vec(&ev).unwrap()).unwrap_err();
        assert!(
            matches!(
                err,
                EventError::Field {
                    field: "source",
                    ..
                }
            ),
            "{err}"
        );
        let mut ev = sample();
        ev.time = "yesterday".into();
        let err = CloudEvent::from_json(&serde_json::to_vec(&ev).unwrap()).unwrap_err();
        assert!(
            matches!(err, EventError::Field { field: "time", .. }),
            "{err}"
        );
        assert!(matches!(
            CloudEvent::from_json(&vec![b' '; MAX_EVENT_BYTES + 1]),
            Err(EventError::TooLarge(_))
        ));
    }
}
