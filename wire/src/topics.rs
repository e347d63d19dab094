//! The MQTT topic tree. Part of the public interface: see `docs/protocol.md`.
//!
//! ```text
//! <prefix>/v1/vehicles/<vehicle>/events      QoS 1, CloudEvents JSON, one event per message
//! <prefix>/v1/vehicles/<vehicle>/telemetry   QoS 1, binary telemetry batch (see `telemetry`)
//! <prefix>/v1/vehicles/<vehicle>/status      QoS 1, retained JSON status; last will "offline"
//! ```

/// Version segment of every topic; bumped only with an incompatible change.
pub const TOPIC_VERSION: &str = "v1";
/// Default first segment.
pub const DEFAULT_PREFIX: &str = "waymark";
/// Longest accepted vehicle id.
pub const MAX_VEHICLE_ID_LEN: usize = 64;

/// Which stream a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// CloudEvents.
    Events,
    /// Telemetry batches.
    Telemetry,
    /// Retained status document.
    Status,
}

impl Stream {
    /// Last topic segment.
    pub fn segment(self) -> &'static str {
        match self {
            Stream::Events => "events",
            Stream::Telemetry => "telemetry",
            Stream::Status => "status",
        }
    }

    fn from_segment(s: &str) -> Option<Self> {
        match s {
            "events" => Some(Stream::Events),
            "telemetry" => Some(Stream::Telemetry),
            "status" => Some(Stream::Status),
            _ => None,
        }
    }
}

/// The topic of one vehicle's stream.
pub fn topic(prefix: &str, vehicle: &str, stream: Stream) -> String {
    format!(
        "{prefix}/{TOPIC_VERSION}/vehicles/{vehicle}/{}",
        stream.segment()
    )
}

/// The subscription filter that matches one stream of every vehicle.
pub fn all_vehicles_filter(prefix: &str, stream: Stream) -> String {
    format!("{prefix}/{TOPIC_VERSION}/vehicles/+/{}", stream.segment())
}

/// Splits a topic into (vehicle, stream) if it belongs to the tree under `prefix`.
pub fn parse<'t>(prefix: &str, topic: &'t str) -> Option<(&'t str, Stream)> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let rest = rest
        .strip_prefix(TOPIC_VERSION)?
        .strip_prefix("/vehicles/")?;
    let (vehicle, stream) = rest.split_once('/')?;
    validate_vehicle_id(vehicle).ok()?;
    Some((vehicle, Stream::from_segment(stream)?))
}

/// Checks that a vehicle id can stand in a topic and in a CloudEvent `source`:
/// 1 to 64 characters of `A-Z a-z 0-9 - _ .`.
///
/// # Errors
/// A sentence saying what is wrong.
pub fn validate_vehicle_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_VEHICLE_ID_LEN {
        return Err(format!(
            "must be 1 to {MAX_VEHICLE_ID_LEN} characters, got {}",
            id.len()
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c)))
    {
        return Err(format!(
            "character {c:?} is not allowed (use A-Z a-z 0-9 - _ .)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses() {
        let t = topic("waymark", "TRUCK-042", Stream::Events);
        assert_eq!(t, "waymark/v1/vehicles/TRUCK-042/events");
        assert_eq!(parse("waymark", &t), Some(("TRUCK-042", Stream::Events)));
        assert_eq!(parse("waymark", "waymark/v1/vehicles/a+b/events"), None);
        assert_eq!(parse("other", &t), None);
        assert_eq!(
            all_vehicles_filter("fleet", Stream::Telemetry),
            "fleet/v1/vehicles/+/telemetry"
        );
    }

    #[test]
    fn vehicle_ids() {
        assert!(validate_vehicle_id("VAN_7.b-1").is_ok());
        assert!(validate_vehicle_id("").is_err());
        assert!(validate_vehicle_id("a/b").is_err());
        assert!(validate_vehicle_id("#").is_err());
        assert!(validate_vehicle_id(&"x".repeat(65)).is_err());
    }
}
