//! Checks one MQTT message before it is recorded (sans-IO).
//!
//! # Invariants
//! - Every message ends as exactly one of: an accepted event, an accepted telemetry batch, or
//!   a [`Reject`] with a [`RejectKind`] and a detail. Nothing is dropped without a reason.
//! - An event is accepted only if the topic is a vehicle's events topic under the configured
//!   prefix, the payload is at most `max_event_bytes`, it is a valid Waymark CloudEvent
//!   (`waymark_wire::event::CloudEvent::from_json`: shape, attributes, `sequence`, `time`),
//!   and its `source` names the vehicle of the topic (a vehicle cannot speak for another).
//! - A telemetry batch is accepted only if it is at most `max_telemetry_bytes` and decodes
//!   with the shared codec (`waymark_wire::telemetry::decode`).

use waymark_wire::topics::{self, Stream};
use waymark_wire::{CloudEvent, Reading};

/// Why a message was refused; stored and counted per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectKind {
    /// Not a topic of the Waymark tree, or a stream the bridge does not take (`status`).
    Topic,
    /// Larger than the configured limit.
    Oversized,
    /// Not a valid CloudEvent (JSON, attributes, sequence, time) or telemetry batch.
    Malformed,
    /// The event's `source` names another vehicle than the topic.
    Spoofed,
}

impl RejectKind {
    /// Name used in the rejects table, counters and `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::Topic => "topic",
            RejectKind::Oversized => "oversized",
            RejectKind::Malformed => "malformed",
            RejectKind::Spoofed => "spoofed",
        }
    }

    /// Every kind, for counters.
    pub const ALL: [RejectKind; 4] = [
        RejectKind::Topic,
        RejectKind::Oversized,
        RejectKind::Malformed,
        RejectKind::Spoofed,
    ];
}

/// A refused message.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    /// The category.
    pub kind: RejectKind,
    /// What exactly is wrong (names the field or limit).
    pub detail: String,
}

/// An accepted message.
#[derive(Debug, Clone, PartialEq)]
pub enum Accepted {
    /// One event.
    Event {
        /// The vehicle (from the topic, equal to the event's source).
        vehicle: String,
        /// The event.
        event: CloudEvent,
    },
    /// One telemetry batch.
    Telemetry {
        /// The vehicle of the topic.
        vehicle: String,
        /// Its readings.
        readings: Vec<Reading>,
    },
}

/// Size limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest event payload.
    pub max_event_bytes: usize,
    /// Largest telemetry payload.
    pub max_telemetry_bytes: usize,
}

fn reject(kind: RejectKind, detail: impl Into<String>) -> Reject {
    Reject {
        kind,
        detail: detail.into(),
    }
}

/// Classifies one message.
///
/// # Errors
/// The [`Reject`] saying why the message is refused.
pub fn check(
    prefix: &str,
    limits: &Limits,
    topic: &str,
    payload: &[u8],
) -> Result<Accepted, Reject> {
    let Some((vehicle, stream)) = topics::parse(prefix, topic) else {
        return Err(reject(
            RejectKind::Topic,
            format!(
                "not a vehicle topic under {prefix}/{}/vehicles/",
                topics::TOPIC_VERSION
            ),
        ));
    };
    match stream {
        Stream::Events => {
            if payload.len() > limits.max_event_bytes {
                return Err(reject(
                    RejectKind::Oversized,
                    format!(
                        "event is {} bytes, the limit is {}",
                        payload.len(),
                        limits.max_event_bytes
                    ),
                ));
            }
            let event = CloudEvent::from_json(payload)
                .map_err(|e| reject(RejectKind::Malformed, e.to_string()))?;
            if event.vehicle_id() != Some(vehicle) {
                return Err(reject(
                    RejectKind::Spoofed,
                    format!(
                        "source {:?} is not the topic's vehicle {vehicle:?}",
                        event.source
                    ),
                ));
            }
            Ok(Accepted::Event {
                vehicle: vehicle.to_string(),
                event,
            })
        }
        Stream::Telemetry => {
            if payload.len() > limits.max_telemetry_bytes {
                return Err(reject(
                    RejectKind::Oversized,
                    format!(
                        "telemetry batch is {} bytes, the limit is {}",
                        payload.len(),
                        limits.max_telemetry_bytes
                    ),
                ));
            }
            let readings = waymark_wire::telemetry::decode(payload)
                .map_err(|e| reject(RejectKind::Malformed, e.to_string()))?;
            Ok(Accepted::Telemetry {
                vehicle: vehicle.to_string(),
                readings,
            })
        }
        Stream::Status => Err(reject(
            RejectKind::Topic,
            "status documents are not taken in",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use waymark_wire::event::{DATA_CONTENT_TYPE, SPEC_VERSION};
    use waymark_wire::{Value, telemetry};

    const LIMITS: Limits = Limits {
        max_event_bytes: 4096,
        max_telemetry_bytes: 65536,
    };

    fn event(vehicle: &str) -> Vec<u8> {
        serde_json::to_vec(&CloudEvent {
            specversion: SPEC_VERSION.into(),
            id: uuid::Uuid::now_v7(),
            source: CloudEvent::source_for(vehicle),
            type_: "waymark.milestone.arrived".into(),
            time: "2026-11-23T07:52:50.123Z".into(),
            datacontenttype: DATA_CONTENT_TYPE.into(),
            subject: None,
            sequence: CloudEvent::format_sequence(1),
            data: serde_json::json!({"trip_id": "T1"}),
        })
        .unwrap()
    }

    fn kind(r: Result<Accepted, Reject>) -> RejectKind {
        r.unwrap_err().kind
    }

    #[test]
    fn accepts_an_event_from_its_own_topic() {
        let a = check(
            "waymark",
            &LIMITS,
            "waymark/v1/vehicles/T1/events",
            &event("T1"),
        )
        .unwrap();
        assert!(matches!(a, Accepted::Event { ref vehicle, .. } if vehicle == "T1"));
    }

    #[test]
    fn rejects_with_reasons() {
        let t = "waymark/v1/vehicles/T1/events";
        let spoof = check("waymark", &LIMITS, t, &event("T2")).unwrap_err();
        assert_eq!(spoof.kind, RejectKind::Spoofed);
        assert!(
            spoof.detail.contains("T2") && spoof.detail.contains("T1"),
            "{}",
            spoof.detail
        );
        assert_eq!(
            kind(check("waymark", &LIMITS, t, b"{")),
            RejectKind::Malformed
        );
        let mut big = event("T1");
        big.resize(4097, b' ');
        let r = check("waymark", &LIMITS, t, &big).unwrap_err();
        assert_eq!(r.kind, RejectKind::Oversized);
        assert!(r.detail.contains("4097"), "{}", r.detail);
        assert_eq!(
            kind(check(
                "waymark",
                &LIMITS,
                "other/v1/vehicles/T1/events",
                &event("T1")
            )),
            RejectKind::Topic
        );
        assert_eq!(
            kind(check(
                "waymark",
                &LIMITS,
                "waymark/v1/vehicles/T1/status",
                b"{}"
            )),
            RejectKind::Topic
        );
        assert_eq!(
            kind(check(
                "waymark",
                &LIMITS,
                "waymark/v1/vehicles/T1/telemetry",
                b"WT\x01"
            )),
            RejectKind::Malformed
        );
    }

    #[test]
    fn telemetry_decodes_with_the_shared_codec() {
        let readings = vec![Reading {
            signal: "Vehicle.Speed".into(),
            value: Value::Num(52.5),
            unit: "km/h".into(),
            time: 1_795_420_370_123,
            source: "can0".into(),
        }];
        let payload = telemetry::encode(&readings).unwrap();
        let a = check(
            "waymark",
            &LIMITS,
            "waymark/v1/vehicles/T1/telemetry",
            &payload,
        )
        .unwrap();
        assert_eq!(
            a,
            Accepted::Telemetry {
                vehicle: "T1".into(),
                readings
            }
        );
        let small = Limits {
            max_telemetry_bytes: 4,
            ..LIMITS
        };
        assert_eq!(
            kind(check(
                "waymark",
                &small,
                "waymark/v1/vehicles/T1/telemetry",
                &payload
            )),
            RejectKind::Oversized
        );
    }
}
