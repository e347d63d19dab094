//! PLACEHOLDER STORE, IN MEMORY. This file exists only in the `wip-uplink` branch so that the
//! uplink can be compiled and tested before the real store lands. The real store (SQLite, WAL,
//! `synchronous=FULL`, one writer thread; written in parallel on its own branch) replaces this
//! whole file at merge. Nothing here is durable: a restart loses every row.
//!
//! It implements exactly the shared `Store` API from the helper brief, with the same ordering
//! semantics the uplink relies on:
//! - rows are numbered by an ascending `row_id`;
//! - [`Store::fetch`] returns unsent rows in lane order (alerts, milestones, live telemetry,
//!   backlog telemetry), each ascending by `row_id`, after the given per-lane cursors, stopping
//!   at `max_rows` / `max_bytes` but returning at least one row if any;
//! - [`Store::ack`] deletes rows (a row is deleted only when the uplink saw its PUBACK) and
//!   records the last PUBACK time;
//! - commands take effect in call order, so an `ack` is visible to a later `fetch`;
//! - [`Store::committed`] is notified after every append.
//!
//! [`StoreStats`] here is a proposal for the real store's statistics shape; the uplink reads it
//! in exactly one place (`uplink::status::StatusDoc::online`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::Notify;
use uuid::Uuid;
use waymark_wire::{CloudEvent, Timestamp};

use crate::health::Health;

/// Outbox lanes, drained in this order: alerts and POD before milestones before telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    /// Alerts and proof of delivery.
    Alert = 0,
    /// Trip milestones.
    Milestone = 1,
    /// Telemetry batches.
    Telemetry = 2,
}

/// An event to commit.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// UUIDv7 made at detection / acceptance.
    pub id: Uuid,
    /// Event type, e.g. `waymark.pod.delivered`.
    pub type_: String,
    /// When it happened.
    pub time_ms: Timestamp,
    /// [`Lane::Alert`] or [`Lane::Milestone`].
    pub lane: Lane,
    /// Optional CloudEvents subject.
    pub subject: Option<String>,
    /// Event payload.
    pub data: serde_json::Value,
}

/// The answer to an appended event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The event id.
    pub id: Uuid,
    /// Its per-vehicle sequence number.
    pub sequence: u64,
    /// True when the id was known and nothing new was stored.
    pub duplicate: bool,
}

/// One encoded telemetry batch.
#[derive(Debug, Clone)]
pub struct TelemetryBatch {
    /// Encoded batch.
    pub payload: Vec<u8>,
    /// Readings in it.
    pub readings: u32,
    /// Time of its first reading.
    pub first_ms: Timestamp,
    /// Time of its last reading.
    pub last_ms: Timestamp,
}

/// What an outbox row carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    /// A CloudEvent JSON document.
    Event,
    /// A telemetry batch.
    Telemetry,
}

/// One unsent row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Ascending row id.
    pub row_id: i64,
    /// Its lane.
    pub lane: Lane,
    /// Event or telemetry.
    pub kind: RowKind,
    /// The message payload.
    pub payload: Vec<u8>,
    /// When the row was committed.
    pub created_ms: Timestamp,
    /// Readings in a telemetry row (0 for events).
    pub readings: u32,
}

/// Per-lane fetch cursors: the highest row id already handed out in each lane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaneCursors {
    /// Alert lane.
    pub alert: i64,
    /// Milestone lane.
    pub milestone: i64,
    /// Live telemetry.
    pub live: i64,
    /// Backlog telemetry.
    pub backlog: i64,
}

/// A fetch request.
#[derive(Debug, Clone)]
pub struct Fetch {
    /// Cursors.
    pub after: LaneCursors,
    /// Telemetry created at or after this is live, older is backlog.
    pub live_since_ms: Timestamp,
    /// Row limit.
    pub max_rows: usize,
    /// Payload byte limit (at least one row is returned if any).
    pub max_bytes: usize,
}

/// Backlog of one lane.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LaneStats {
    /// Unsent rows.
    pub rows: u64,
    /// Unsent payload bytes.
    pub bytes: u64,
    /// Unsent readings (telemetry only).
    pub readings: u64,
    /// `created_ms` of the oldest unsent row.
    pub oldest_created_ms: Option<Timestamp>,
}

/// Backlog per lane.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LanesStats {
    /// Alerts.
    pub alert: LaneStats,
    /// Milestones.
    pub milestone: LaneStats,
    /// Telemetry.
    pub telemetry: LaneStats,
}

/// Counters the store persists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoreCounters {
    /// Telemetry rows dropped for space.
    pub telemetry_dropped_rows: u64,
    /// Readings in those rows.
    pub telemetry_dropped_readings: u64,
    /// Events expired by age.
    pub events_expired: u64,
}

/// Store statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Backlog per lane.
    pub lanes: LanesStats,
    /// Persisted counters.
    pub counters: StoreCounters,
    /// Time of the last PUBACK.
    pub last_puback_ms: Option<Timestamp>,
    /// Sequence number the next event gets.
    pub next_sequence: u64,
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store was closed.
    #[error("store is closed")]
    Closed,
    /// An event could not be serialized or is larger than the limit.
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// `read_stats` on this placeholder, which has no file.
    #[error("no store file at {0} (in-memory placeholder store)")]
    NoFile(String),
}

#[derive(Debug, Default)]
struct Inner {
    closed: bool,
    next_row: i64,
    next_sequence: u64,
    rows: BTreeMap<i64, OutboxRow>,
    accepted: HashMap<Uuid, u64>,
    last_puback_ms: Option<Timestamp>,
}

/// The durable outbox (here: an in-memory placeholder, see the module docs).
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Mutex<Inner>>,
    committed: Arc<Notify>,
    vehicle_id: String,
}

impl Store {
    /// Opens the store. The placeholder ignores the path and starts empty.
    ///
    /// # Errors
    /// None in the placeholder.
    pub fn open(
        _cfg: &crate::config::StoreConfig,
        vehicle_id: &str,
        _health: Arc<Health>,
    ) -> Result<Store, StoreError> {
        Ok(Store {
            inner: Arc::new(Mutex::new(Inner {
                next_row: 1,
                next_sequence: 1,
                ..Inner::default()
            })),
            committed: Arc::new(Notify::new()),
            vehicle_id: vehicle_id.to_string(),
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if guard.closed {
            return Err(StoreError::Closed);
        }
        Ok(guard)
    }

    fn insert(inner: &mut Inner, lane: Lane, kind: RowKind, payload: Vec<u8>, readings: u32) {
        let row_id = inner.next_row;
        inner.next_row += 1;
        let created_ms = now_ms();
        inner.rows.insert(
            row_id,
            OutboxRow {
                row_id,
                lane,
                kind,
                payload,
                created_ms,
                readings,
            },
        );
    }

    /// Commits an event; a known id returns the original acceptance with `duplicate = true`.
    ///
    /// # Errors
    /// [`StoreError::Closed`], [`StoreError::InvalidEvent`].
    pub async fn append_event(&self, ev: NewEvent) -> Result<Accepted, StoreError> {
        let mut inner = self.lock()?;
        if let Some(&sequence) = inner.accepted.get(&ev.id) {
            return Ok(Accepted {
                id: ev.id,
                sequence,
                duplicate: true,
            });
        }
        let sequence = inner.next_sequence;
        let doc = CloudEvent {
            specversion: waymark_wire::event::SPEC_VERSION.to_string(),
            id: ev.id,
            source: CloudEvent::source_for(&self.vehicle_id),
            type_: ev.type_,
            time: waymark_wire::time::format_rfc3339_ms(ev.time_ms),
            datacontenttype: waymark_wire::event::DATA_CONTENT_TYPE.to_string(),
            subject: ev.subject,
            sequence: CloudEvent::format_sequence(sequence),
            data: ev.data,
        };
        let payload =
            serde_json::to_vec(&doc).map_err(|e| StoreError::InvalidEvent(e.to_string()))?;
        if payload.len() > waymark_wire::event::MAX_EVENT_BYTES {
            return Err(StoreError::InvalidEvent(format!("{} bytes", payload.len())));
        }
        inner.next_sequence += 1;
        inner.accepted.insert(ev.id, sequence);
        let lane = if ev.lane == Lane::Telemetry {
            Lane::Milestone
        } else {
            ev.lane
        };
        Self::insert(&mut inner, lane, RowKind::Event, payload, 0);
        drop(inner);
        self.committed.notify_one();
        Ok(Accepted {
            id: ev.id,
            sequence,
            duplicate: false,
        })
    }

    /// Commits one encoded telemetry batch.
    ///
    /// # Errors
    /// [`StoreError::Closed`].
    pub async fn append_telemetry(&self, batch: TelemetryBatch) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        Self::insert(
            &mut inner,
            Lane::Telemetry,
            RowKind::Telemetry,
            batch.payload,
            batch.readings,
        );
        drop(inner);
        self.committed.notify_one();
        Ok(())
    }

    /// Next unsent rows in lane order (see the module docs).
    ///
    /// # Errors
    /// [`StoreError::Closed`].
    pub async fn fetch(&self, f: Fetch) -> Result<Vec<OutboxRow>, StoreError> {
        let inner = self.lock()?;
        let rows = inner.rows.values();
        let alerts = rows
            .clone()
            .filter(|r| r.lane == Lane::Alert && r.row_id > f.after.alert);
        let milestones = rows
            .clone()
            .filter(|r| r.lane == Lane::Milestone && r.row_id > f.after.milestone);
        let live = rows.clone().filter(|r| {
            r.lane == Lane::Telemetry && r.created_ms >= f.live_since_ms && r.row_id > f.after.live
        });
        let backlog = rows.filter(|r| {
            r.lane == Lane::Telemetry
                && r.created_ms < f.live_since_ms
                && r.row_id > f.after.backlog
        });
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for r in alerts.chain(milestones).chain(live).chain(backlog) {
            if out.len() >= f.max_rows || (!out.is_empty() && bytes + r.payload.len() > f.max_bytes)
            {
                break;
            }
            bytes += r.payload.len();
            out.push(r.clone());
        }
        Ok(out)
    }

    /// Deletes rows whose PUBACK arrived; records the last PUBACK time.
    ///
    /// # Errors
    /// [`StoreError::Closed`].
    pub async fn ack(&self, row_ids: Vec<i64>, now_ms: Timestamp) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        for id in row_ids {
            inner.rows.remove(&id);
        }
        inner.last_puback_ms = Some(now_ms);
        Ok(())
    }

    /// Backlog per lane, counters, last PUBACK time, next sequence.
    ///
    /// # Errors
    /// [`StoreError::Closed`].
    pub async fn stats(&self) -> Result<StoreStats, StoreError> {
        let inner = self.lock()?;
        let mut stats = StoreStats {
            last_puback_ms: inner.last_puback_ms,
            next_sequence: inner.next_sequence,
            ..StoreStats::default()
        };
        for r in inner.rows.values() {
            let lane = match r.lane {
                Lane::Alert => &mut stats.lanes.alert,
                Lane::Milestone => &mut stats.lanes.milestone,
                Lane::Telemetry => &mut stats.lanes.telemetry,
            };
            lane.rows += 1;
            lane.bytes += r.payload.len() as u64;
            lane.readings += u64::from(r.readings);
            lane.oldest_created_ms = Some(
                lane.oldest_created_ms
                    .map_or(r.created_ms, |o| o.min(r.created_ms)),
            );
        }
        Ok(stats)
    }

    /// Notified after rows were committed (the uplink's wake-up).
    pub fn committed(&self) -> Arc<Notify> {
        self.committed.clone()
    }

    /// Stops the store.
    ///
    /// # Errors
    /// [`StoreError::Closed`] if it was already closed.
    pub async fn close(self) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        inner.closed = true;
        Ok(())
    }
}

/// Read-only stats from a store file. The placeholder has no file.
///
/// # Errors
/// Always [`StoreError::NoFile`] in the placeholder.
pub fn read_stats(path: &Path) -> Result<StoreStats, StoreError> {
    Err(StoreError::NoFile(path.display().to_string()))
}

fn now_ms() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            Timestamp::try_from(d.as_millis()).unwrap_or(Timestamp::MAX)
        })
}
