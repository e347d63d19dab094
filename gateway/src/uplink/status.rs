//! The retained status document on `<prefix>/v1/vehicles/<vehicle>/status`.
//!
//! While connected the uplink keeps an `online` document there (published on every CONNACK
//! and every `status_interval_s`); the broker replaces it with the `offline` last will when
//! the connection dies without a DISCONNECT, and the uplink publishes an `offline` document
//! itself before a clean disconnect (a clean disconnect discards the will). All are retained,
//! so a subscriber learns a vehicle's state as soon as it subscribes. Fields are documented
//! in `docs/protocol.md`; adding a field is compatible, renaming or removing one is not.

use std::collections::BTreeMap;

use serde::Serialize;
use waymark_wire::Timestamp;
use waymark_wire::time::{EARLIEST_VALID_MS, format_rfc3339_ms};

use crate::clock::ClockState;
use crate::health::{CountersSnapshot, SourceHealth};
use crate::store::StoreStats;

/// `state` of an online document.
pub const ONLINE: &str = "online";
/// `state` of an offline document.
pub const OFFLINE: &str = "offline";

/// The `online` document.
#[derive(Debug, Clone, Serialize)]
pub struct StatusDoc {
    /// Always `online`.
    pub state: &'static str,
    /// Gateway version.
    pub version: &'static str,
    /// Vehicle id.
    pub vehicle: String,
    /// Wall-clock time of the document, RFC 3339; `null` while the clock is not valid yet.
    pub time: Option<String>,
    /// Unsent rows per lane; `null` when the store could not be asked.
    pub backlog: Option<Backlog>,
    /// Process counters since start and the store's persisted counters.
    pub counters: Counters,
    /// Health of every component (`uplink`, `store`, sources).
    pub health: BTreeMap<String, SourceHealth>,
    /// Time of the last PUBACK (persisted by the store), RFC 3339.
    pub last_puback: Option<String>,
    /// The gateway clock: `source` (`none`, `system`, `gnss`), `offset_ms` (disciplined time
    /// minus the system clock), `last_sync_ms` (UTC ms of the last GNSS time used), `steps`,
    /// `outliers` (see docs/time.md).
    pub clock: ClockState,
}

/// Unsent rows per lane.
#[derive(Debug, Clone, Serialize)]
pub struct Backlog {
    /// Alerts and proof of delivery.
    pub alert: LaneBacklog,
    /// Milestones.
    pub milestone: LaneBacklog,
    /// Telemetry batches (live and backlog).
    pub telemetry: LaneBacklog,
}

/// Unsent rows of one lane.
#[derive(Debug, Clone, Serialize)]
pub struct LaneBacklog {
    /// Rows.
    pub rows: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// Readings (telemetry).
    pub readings: u64,
    /// Age of the oldest unsent row in seconds; `null` when the lane is empty or the clock is
    /// not valid.
    pub oldest_age_s: Option<u64>,
}

/// Counters in the status document.
#[derive(Debug, Clone, Serialize)]
pub struct Counters {
    /// Since the process started (`health::Counters`).
    pub process: CountersSnapshot,
    /// Persisted by the store (dropped telemetry, expired events, ...); `null` when the store
    /// could not be asked.
    pub store: Option<serde_json::Value>,
}

/// The `offline` document: the last will (`reason = "connection_lost"`, no time: it is
/// composed at connect time) or the one published before a clean disconnect.
#[derive(Debug, Clone, Serialize)]
pub struct OfflineDoc {
    /// Always `offline`.
    pub state: &'static str,
    /// Gateway version.
    pub version: &'static str,
    /// Vehicle id.
    pub vehicle: String,
    /// `connection_lost` (last will) or `shutdown`.
    pub reason: &'static str,
    /// When the gateway went offline (clean shutdown only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

/// The wall-clock time as the documents carry it, or `None` before the clock is valid.
fn valid_time(now_ms: Timestamp) -> Option<String> {
    (now_ms >= EARLIEST_VALID_MS).then(|| format_rfc3339_ms(now_ms))
}

impl StatusDoc {
    /// Composes the online document. `stats` is `None` when the store did not answer.
    pub fn online(
        vehicle: &str,
        now_ms: Timestamp,
        stats: Option<&StoreStats>,
        process: CountersSnapshot,
        health: BTreeMap<String, SourceHealth>,
        clock: ClockState,
    ) -> Self {
        let clock_valid = now_ms >= EARLIEST_VALID_MS;
        let lane = |rows: u64, bytes: u64, readings: u64, oldest: Option<Timestamp>| LaneBacklog {
            rows,
            bytes,
            readings,
            oldest_age_s: oldest
                .filter(|t| clock_valid && *t >= EARLIEST_VALID_MS)
                .map(|t| u64::try_from(now_ms.saturating_sub(t).max(0) / 1000).unwrap_or(u64::MAX)),
        };
        // The one place that reads the store's statistics shape.
        let backlog = stats.map(|s| Backlog {
            alert: lane(
                s.alert.rows,
                s.alert.bytes,
                s.alert.readings,
                s.alert.oldest_created_ms,
            ),
            milestone: lane(
                s.milestone.rows,
                s.milestone.bytes,
                s.milestone.readings,
                s.milestone.oldest_created_ms,
            ),
            telemetry: lane(
                s.telemetry.rows,
                s.telemetry.bytes,
                s.telemetry.readings,
                s.telemetry.oldest_created_ms,
            ),
        });
        Self {
            state: ONLINE,
            version: crate::VERSION,
            vehicle: vehicle.to_string(),
            time: valid_time(now_ms),
            backlog,
            counters: Counters {
                process,
                store: stats.and_then(|s| serde_json::to_value(s.counters).ok()),
            },
            health,
            last_puback: stats.and_then(|s| s.last_puback_ms).and_then(valid_time),
            clock,
        }
    }

    /// The JSON payload.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain structs, strings and maps with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl OfflineDoc {
    /// The last will, registered with the broker at connect time.
    pub fn will(vehicle: &str) -> Self {
        Self {
            state: OFFLINE,
            version: crate::VERSION,
            vehicle: vehicle.to_string(),
            reason: "connection_lost",
            time: None,
        }
    }

    /// The document published before a clean disconnect.
    pub fn shutdown(vehicle: &str, now_ms: Timestamp) -> Self {
        Self {
            reason: "shutdown",
            time: valid_time(now_ms),
            ..Self::will(vehicle)
        }
    }

    /// The JSON payload.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ClockSource;
    use crate::health::{Health, HealthState};
    use serde_json::{Value, json};

    const NOW: Timestamp = 1_795_420_370_123; // 2026-11-23T07:52:50.123Z

    fn stats() -> StoreStats {
        let mut s = StoreStats::default();
        s.alert.rows = 1;
        s.alert.bytes = 300;
        s.alert.oldest_created_ms = Some(NOW - 90_500);
        s.telemetry.rows = 4;
        s.telemetry.bytes = 4000;
        s.telemetry.readings = 200;
        s.telemetry.oldest_created_ms = Some(NOW - 3_600_000);
        s.counters.telemetry_dropped_rows = 2;
        s.last_puback_ms = Some(NOW - 1000);
        s
    }

    fn doc(now_ms: Timestamp, stats: Option<&StoreStats>) -> Value {
        let health = Health::default();
        health.set("uplink", HealthState::Ok, None, NOW);
        Health::add(&health.counters.publishes, 7);
        let d = StatusDoc::online(
            "TRUCK-042",
            now_ms,
            stats,
            health.counters.snapshot(),
            health.components(),
            ClockState {
                source: ClockSource::Gnss,
                offset_ms: Some(-250),
                last_sync_ms: Some(NOW - 1000),
                steps: 0,
                outliers: 1,
            },
        );
        serde_json::from_slice(&d.to_json()).unwrap()
    }

    #[test]
    fn online_document() {
        let s = stats();
        let v = doc(NOW, Some(&s));
        assert_eq!(v["state"], "online");
        assert_eq!(v["version"], crate::VERSION);
        assert_eq!(v["vehicle"], "TRUCK-042");
        assert_eq!(v["time"], "2026-11-23T07:52:50.123Z");
        assert_eq!(
            v["backlog"]["alert"],
            json!({"rows": 1, "bytes": 300, "readings": 0, "oldest_age_s": 90})
        );
        assert_eq!(v["backlog"]["milestone"]["oldest_age_s"], Value::Null);
        assert_eq!(v["backlog"]["telemetry"]["readings"], 200);
        assert_eq!(v["backlog"]["telemetry"]["oldest_age_s"], 3600);
        assert_eq!(v["counters"]["process"]["publishes"], 7);
        assert_eq!(v["counters"]["store"]["telemetry_dropped_rows"], 2);
        assert_eq!(v["health"]["uplink"]["state"], "ok");
        assert_eq!(v["last_puback"], "2026-11-23T07:52:49.123Z");
        assert_eq!(
            v["clock"],
            json!({"source": "gnss", "offset_ms": -250, "last_sync_ms": NOW - 1000,
                   "steps": 0, "outliers": 1})
        );
    }

    #[test]
    fn without_store_or_clock() {
        let v = doc(NOW, None);
        assert_eq!(v["backlog"], Value::Null);
        assert_eq!(v["counters"]["store"], Value::Null);
        assert_eq!(v["last_puback"], Value::Null);
        let s = stats();
        let v = doc(1000, Some(&s));
        assert_eq!(v["time"], Value::Null, "never a 1970 timestamp");
        assert_eq!(v["backlog"]["alert"]["oldest_age_s"], Value::Null);
        assert_eq!(v["backlog"]["alert"]["rows"], 1);
        // Rows and PUBACKs stamped before the time was known show no 1970 date or age.
        let mut s = stats();
        s.alert.oldest_created_ms = Some(5_000);
        s.last_puback_ms = Some(6_000);
        let v = doc(NOW, Some(&s));
        assert_eq!(v["backlog"]["alert"]["oldest_age_s"], Value::Null);
        assert_eq!(v["last_puback"], Value::Null);
    }

    #[test]
    fn offline_documents() {
        let will: Value = serde_json::from_slice(&OfflineDoc::will("V1").to_json()).unwrap();
        assert_eq!(
            will,
            json!({"state": "offline", "version": crate::VERSION, "vehicle": "V1", "reason": "connection_lost"})
        );
        let clean: Value =
            serde_json::from_slice(&OfflineDoc::shutdown("V1", NOW).to_json()).unwrap();
        assert_eq!(clean["state"], "offline");
        assert_eq!(clean["reason"], "shutdown");
        assert_eq!(clean["time"], "2026-11-23T07:52:50.123Z");
    }
}
