//! Process-wide counters and per-source health, shared by every task and read by the status
//! document (`uplink::status`) and `waymark status`.
//!
//! Counters are monotonically increasing `AtomicU64`s (relaxed ordering: they are statistics,
//! nothing synchronises through them). Counters that must survive a restart (dropped
//! telemetry, expired events, sequence) live in the store instead.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Monotonic process counters (since start).
        #[derive(Debug, Default)]
        pub struct Counters { $($(#[$doc])* pub $name: AtomicU64,)* }

        /// A point-in-time copy of [`Counters`].
        #[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
        pub struct CountersSnapshot { $($(#[$doc])* pub $name: u64,)* }

        impl Counters {
            /// Copies every counter.
            pub fn snapshot(&self) -> CountersSnapshot {
                CountersSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Readings received from all sources.
    readings_in,
    /// Readings dropped by the deadband / interval filter (they said nothing new).
    readings_filtered,
    /// Readings committed to the store inside telemetry batches.
    readings_stored,
    /// Telemetry batches committed.
    batches_stored,
    /// Readings dropped because one alone encodes larger than `pipeline.batch_max_bytes`, or
    /// because a string in it (signal, unit, source, text) exceeds the telemetry format's limit.
    readings_oversized,
    /// Events committed (acknowledged to their producer).
    events_stored,
    /// Producer retries answered from the dedup table instead of storing a second event.
    events_deduplicated,
    /// Input lines rejected (malformed, too long, invalid fields).
    lines_rejected,
    /// Telemetry readings lost because the store could not take them (disk full, read-only)
    /// and the in-memory hold buffer overflowed.
    readings_lost_store_unavailable,
    /// MQTT publishes written (including republishes); one may carry several merged
    /// telemetry rows.
    publishes,
    /// Payload bytes published.
    bytes_published,
    /// PUBACKs received (each deletes the rows its publish carried).
    pubacks,
    /// Publishes that repeat a row written before without a PUBACK (after a reconnect).
    republishes,
    /// Telemetry rows the uplink could not decode for merging; each is published alone as
    /// stored (counted again if fetched again after a reconnect).
    telemetry_rows_undecodable,
    /// Successful MQTT connections.
    connects,
    /// Connection failures and drops.
    connection_errors,
    /// Frames from `device` sources that failed to decode (COBS, CRC, length, protocol
    /// version, body, oversized).
    device_frames_invalid,
    /// Frames from `device` sources dropped by their `max_frames_per_s` limit.
    device_frames_dropped,
    /// Probe readings (`device` and `onewire` sources) that were faults, not temperatures.
    probe_faults,
    /// Readings taken before the time was known (monotonic stamps) that were never
    /// re-stamped: the pipeline's hold for them overflowed (oldest first), or the gateway
    /// stopped before the time became known. They are dropped rather than published with a
    /// 1970 date.
    readings_untimed_dropped,
    /// CAN frames received by `can` sources and replayed by `candump` sources.
    can_frames,
    /// CAN error frames (bus errors, controller warnings, bus-off, restarts).
    can_error_frames,
    /// CAN frames lost before the gateway read them: the interface's `rx_dropped`
    /// statistic and controller RX-overflow error frames.
    can_rx_dropped,
    /// Times a CAN interface went bus-off (each closes and reopens it with backoff).
    can_bus_off,
    /// NMEA sentences parsed by `gps` sources (serial mode).
    gps_sentences,
    /// NMEA sentences rejected for a missing (with `require_checksum`), malformed or wrong
    /// checksum.
    gps_bad_checksum,
    /// NMEA sentences with a good checksum but a bad field, and gpsd lines that are not the
    /// JSON expected.
    gps_invalid,
    /// NMEA lines longer than `max_sentence_bytes` or cut short by garbage (and gpsd lines
    /// over the line limit), skipped.
    gps_overlong,
    /// Bytes outside any sentence (binary frames, NUL runs, line noise), skipped.
    gps_garbage_bytes,
    /// Fixes accepted by GNSS hygiene (they became readings).
    gps_fixes,
    /// Fixes rejected: no fix (status V, quality 0, mode N, no position).
    gps_rejected_no_fix,
    /// Fixes rejected: at 0°, 0° (`null_island_deg`).
    gps_rejected_null_island,
    /// Fixes rejected: HDOP above `max_hdop`.
    gps_rejected_hdop,
    /// Fixes rejected: fewer satellites than `min_satellites`.
    gps_rejected_satellites,
    /// Fixes rejected: same time as the last accepted fix (`reject_duplicates`).
    gps_rejected_duplicate,
    /// Fixes rejected: a jump faster than `max_speed_kmh`, or time going back.
    gps_rejected_jump,
    /// Accepted fixes whose position was collapsed onto the stop point (static drift).
    gps_drift_collapsed,
    /// Times a `gps` source lost its receiver or gpsd (unplug, read error, closed socket,
    /// failed open) and went into its reopen backoff.
    gps_reopens,
}

/// State of one source, as the status document reports it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SourceHealth {
    /// `ok`, `degraded` or `down`.
    pub state: HealthState,
    /// Human-readable detail of the last problem, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Wall-clock ms of the last change of `state`.
    pub since_ms: i64,
}

/// Coarse health.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Working.
    Ok,
    /// Working with problems (bad input, slow device).
    Degraded,
    /// Not working (device gone, store unwritable); retrying.
    Down,
}

/// Shared health registry.
#[derive(Debug, Default)]
pub struct Health {
    /// Process counters.
    pub counters: Counters,
    /// Liveness ticks of the stages the systemd watchdog watches (`crate::systemd`).
    pub heartbeats: Heartbeats,
    components: Mutex<BTreeMap<String, SourceHealth>>,
}

impl Health {
    /// Records the state of a component (`store`, `uplink`, a source name). Only a change of
    /// state moves `since_ms`.
    pub fn set(&self, component: &str, state: HealthState, detail: Option<String>, now_ms: i64) {
        let mut map = self.components.lock().unwrap_or_else(|p| p.into_inner());
        let since_ms = match map.get(component) {
            Some(h) if h.state == state => h.since_ms,
            _ => now_ms,
        };
        map.insert(
            component.to_string(),
            SourceHealth {
                state,
                detail,
                since_ms,
            },
        );
    }

    /// A copy of every component's health.
    pub fn components(&self) -> BTreeMap<String, SourceHealth> {
        self.components
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A liveness counter: its owner bumps it on every turn of its loop, including idle wake-ups
/// (at least every [`HEARTBEAT_EVERY`]). A counter that stops moving means its owner is stuck:
/// blocked in a call, or not polled by a blocked runtime.
#[derive(Debug, Default)]
pub struct Heartbeat(AtomicU64);

impl Heartbeat {
    /// One more turn.
    pub fn beat(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Turns so far.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Longest an idle owner of a [`Heartbeat`] waits between two beats.
pub const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The heartbeats the systemd watchdog requires to move before it pings.
#[derive(Debug, Default)]
pub struct Heartbeats {
    /// The store's writer thread (every loop turn: a command group, a timer or an idle wake-up).
    pub store: Heartbeat,
    /// The pipeline task (every `select!` turn, and a tick when idle).
    pub pipeline: Heartbeat,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_change_moves_since() {
        let h = Health::default();
        h.set("gps", HealthState::Ok, None, 10);
        h.set("gps", HealthState::Ok, Some("x".into()), 20);
        assert_eq!(h.components()["gps"].since_ms, 10);
        h.set("gps", HealthState::Down, None, 30);
        assert_eq!(h.components()["gps"].since_ms, 30);
        Health::add(&h.counters.publishes, 3);
        assert_eq!(h.counters.snapshot().publishes, 3);
    }
}
