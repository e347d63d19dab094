//! STAND-IN for the durable store, written on the pipeline branch so that the pipeline
//! compiles and its tests run before the real store lands. It implements exactly the shared
//! Store API of the helper brief, in memory (nothing is durable, nothing is written to
//! disk). The real SQLite store on the store branch replaces this file at merge.
//!
//! Invariants it keeps, as the real store does: rows are handed out in lane order (alerts,
//! milestones, live telemetry, backlog telemetry), each lane ascending by `row_id`; commands
//! take effect in call order; `committed()` is notified after every commit.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use tokio::sync::Notify;
use uuid::Uuid;
use waymark_wire::Timestamp;

use crate::config::StoreConfig;
use crate::health::Health;

/// Delivery priority of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    /// Alerts and proof of delivery: first.
    Alert = 0,
    /// Milestones.
    Milestone = 1,
    /// Telemetry batches: last.
    Telemetry = 2,
}

/// An event to commit.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// UUIDv7 made at detection / acceptance.
    pub id: Uuid,
    /// CloudEvents `type`, e.g. `waymark.pod.delivered`.
    pub type_: String,
    /// When it happened.
    pub time_ms: Timestamp,
    /// `Alert` or `Milestone`.
    pub lane: Lane,
    /// CloudEvents `subject`.
    pub subject: Option<String>,
    /// CloudEvents `data`.
    pub data: serde_json::Value,
}

/// The answer to [`Store::append_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The event's id.
    pub id: Uuid,
    /// Its per-vehicle sequence number.
    pub sequence: u64,
    /// The id was already known: nothing new was stored.
    pub duplicate: bool,
}

/// One encoded telemetry batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryBatch {
    /// `waymark_wire::telemetry::encode` output.
    pub payload: Vec<u8>,
    /// Readings in it.
    pub readings: u32,
    /// Earliest reading time.
    pub first_ms: Timestamp,
    /// Latest reading time.
    pub last_ms: Timestamp,
}

/// What a row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    /// A CloudEvent JSON document.
    Event,
    /// A telemetry batch.
    Telemetry,
}

/// An unsent row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Row id, ascending in commit order.
    pub row_id: i64,
    /// Its lane.
    pub lane: Lane,
    /// Event or telemetry.
    pub kind: RowKind,
    /// What to publish.
    pub payload: Vec<u8>,
    /// Commit time.
    pub created_ms: Timestamp,
    /// Readings in a telemetry row, 0 for events.
    pub readings: u32,
}

/// Per-lane positions already fetched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaneCursors {
    /// Last alert row fetched.
    pub alert: i64,
    /// Last milestone row fetched.
    pub milestone: i64,
    /// Last live telemetry row fetched.
    pub live: i64,
    /// Last backlog telemetry row fetched.
    pub backlog: i64,
}

/// A fetch request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetch {
    /// Rows after these cursors.
    pub after: LaneCursors,
    /// Telemetry created at or after this is live, older is backlog.
    pub live_since_ms: Timestamp,
    /// Most rows to return.
    pub max_rows: usize,
    /// Most payload bytes to return (at least one row if any).
    pub max_bytes: usize,
}

/// Backlog of one lane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LaneStats {
    /// Unsent rows.
    pub rows: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Their readings (telemetry).
    pub readings: u64,
    /// Oldest row's `created_ms`.
    pub oldest_ms: Option<Timestamp>,
}

/// Store statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Alert lane backlog.
    pub alert: LaneStats,
    /// Milestone lane backlog.
    pub milestone: LaneStats,
    /// Telemetry backlog.
    pub telemetry: LaneStats,
    /// Telemetry rows dropped for space.
    pub telemetry_dropped_rows: u64,
    /// Telemetry readings dropped for space.
    pub telemetry_dropped_readings: u64,
    /// Events expired by age.
    pub events_expired: u64,
    /// Last PUBACK time.
    pub last_puback_ms: Option<Timestamp>,
    /// The next event's sequence number.
    pub next_sequence: u64,
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store was closed (the stand-in cannot fail otherwise).
    #[error("store closed")]
    Closed,
    /// A CloudEvent could not be built (invalid vehicle id or type).
    #[error("cannot build the CloudEvent: {0}")]
    Event(String),
    /// `read_stats` on the stand-in: it has no file.
    #[error("no store file at {0} (in-memory stand-in)")]
    NoFile(String),
}

#[derive(Debug, Default)]
struct Inner {
    rows: BTreeMap<i64, OutboxRow>,
    next_row: i64,
    next_sequence: u64,
    accepted: HashMap<Uuid, Accepted>,
    max_bytes: u64,
    stats: StoreStats,
    closed: bool,
}

/// In-memory stand-in of the durable outbox. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Mutex<Inner>>,
    committed: Arc<Notify>,
    vehicle_id: Arc<str>,
    health: Arc<Health>,
}

fn now_ms() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Store {
    /// Opens an empty in-memory store.
    ///
    /// # Errors
    /// Never (the real store fails to open a broken database).
    pub fn open(
        cfg: &StoreConfig,
        vehicle_id: &str,
        health: Arc<Health>,
    ) -> Result<Store, StoreError> {
        let inner = Inner {
            next_row: 1,
            next_sequence: 1,
            max_bytes: cfg.max_bytes,
            ..Inner::default()
        };
        Ok(Store {
            inner: Arc::new(Mutex::new(inner)),
            committed: Arc::new(Notify::new()),
            vehicle_id: vehicle_id.into(),
            health,
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if guard.closed {
            Err(StoreError::Closed)
        } else {
            Ok(guard)
        }
    }

    fn push_row(inner: &mut Inner, lane: Lane, kind: RowKind, payload: Vec<u8>, readings: u32) {
        let row_id = inner.next_row;
        inner.next_row += 1;
        inner.rows.insert(
            row_id,
            OutboxRow {
                row_id,
                lane,
                kind,
                payload,
                created_ms: now_ms(),
                readings,
            },
        );
    }

    /// Commits the event and returns its sequence; a known id returns the original answer.
    ///
    /// # Errors
    /// [`StoreError::Closed`], [`StoreError::Event`].
    pub async fn append_event(&self, ev: NewEvent) -> Result<Accepted, StoreError> {
        let mut inner = self.lock()?;
        if let Some(a) = inner.accepted.get(&ev.id) {
            return Ok(Accepted {
                duplicate: true,
                ..*a
            });
        }
        let sequence = inner.next_sequence;
        let doc = serde_json::json!({
            "specversion": "1.0",
            "id": ev.id,
            "source": format!("waymark/{}", self.vehicle_id),
            "type": ev.type_,
            "time": waymark_wire::time::format_rfc3339_ms(ev.time_ms),
            "subject": ev.subject,
            "sequence": sequence,
            "data": ev.data,
        });
        let payload = serde_json::to_vec(&doc).map_err(|e| StoreError::Event(e.to_string()))?;
        inner.next_sequence += 1;
        Self::push_row(&mut inner, ev.lane, RowKind::Event, payload, 0);
        let accepted = Accepted {
            id: ev.id,
            sequence,
            duplicate: false,
        };
        inner.accepted.insert(ev.id, accepted);
        drop(inner);
        Health::add(&self.health.counters.events_stored, 1);
        self.committed.notify_one();
        Ok(accepted)
    }

    /// Commits one telemetry batch, dropping the oldest telemetry beyond `max_bytes`.
    ///
    /// # Errors
    /// [`StoreError::Closed`].
    pub async fn append_telemetry(&self, batch: TelemetryBatch) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        Self::push_row(
            &mut inner,
            Lane::Telemetry,
            RowKind::Telemetry,
            batch.payload,
            batch.readings,
        );
        loop {
            let total: u64 = inner.rows.values().map(|r| r.payload.len() as u64).sum();
            if total <= inner.max_bytes {
                break;
            }
            let oldest = inner
                .rows
                .values()
                .find(|r| r.kind == RowKind::Telemetry)
                .map(|r| r.row_id);
            let Some(id) = oldest else { break };
            if let Some(row) = inner.rows.remove(&id) {
                inner.stats.telemetry_dropped_rows += 1;
                inner.stats.telemetry_dropped_readings += u64::from(row.readings);
            }
        }
        drop(inner);
        self.committed.notify_one();
        Ok(())
    }

    /// Next unsent rows in lane order.
    ///
    /// # Errors
    /// [`StoreError::Closed`].
    pub async fn fetch(&self, f: Fetch) -> Result<Vec<OutboxRow>, StoreError> {
        let inner = self.lock()?;
        let alert = inner
            .rows
            .values()
            .filter(|r| r.lane == Lane::Alert && r.row_id > f.after.alert);
        let milestone = inner
            .rows
            .values()
            .filter(|r| r.lane == Lane::Milestone && r.row_id > f.after.milestone);
        let live = inner.rows.values().filter(|r| {
            r.lane == Lane::Telemetry && r.created_ms >= f.live_since_ms && r.row_id > f.after.live
        });
        let backlog = inner.rows.values().filter(|r| {
            r.lane == Lane::Telemetry
                && r.created_ms < f.live_since_ms
                && r.row_id > f.after.backlog
        });
        let mut out = Vec::new();
        let mut bytes = 0;
        for row in alert.chain(milestone).chain(live).chain(backlog) {
            if out.len() >= f.max_rows
                || (!out.is_empty() && bytes + row.payload.len() > f.max_bytes)
            {
                break;
            }
            bytes += row.payload.len();
            out.push(row.clone());
        }
        Ok(out)
    }

    /// Deletes acknowledged rows.
    ///
    /// # Errors
    /// [`StoreError::Closed`].
    pub async fn ack(&self, row_ids: Vec<i64>, now_ms: Timestamp) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        for id in row_ids {
            inner.rows.remove(&id);
        }
        inner.stats.last_puback_ms = Some(now_ms);
        Ok(())
    }

    /// Backlog and counters.
    ///
    /// # Errors
    /// [`StoreError::Closed`].
    pub async fn stats(&self) -> Result<StoreStats, StoreError> {
        let inner = self.lock()?;
        let mut s = inner.stats.clone();
        s.next_sequence = inner.next_sequence;
        for row in inner.rows.values() {
            let lane = match row.lane {
                Lane::Alert => &mut s.alert,
                Lane::Milestone => &mut s.milestone,
                Lane::Telemetry => &mut s.telemetry,
            };
            lane.rows += 1;
            lane.bytes += row.payload.len() as u64;
            lane.readings += u64::from(row.readings);
            lane.oldest_ms = Some(
                lane.oldest_ms
                    .map_or(row.created_ms, |o| o.min(row.created_ms)),
            );
        }
        Ok(s)
    }

    /// Notified after every commit.
    pub fn committed(&self) -> Arc<Notify> {
        self.committed.clone()
    }

    /// Closes the store; later calls fail with [`StoreError::Closed`].
    ///
    /// # Errors
    /// [`StoreError::Closed`] when already closed.
    pub async fn close(self) -> Result<(), StoreError> {
        self.lock()?.closed = true;
        Ok(())
    }
}

/// The stand-in has no file to read.
///
/// # Errors
/// Always [`StoreError::NoFile`].
pub fn read_stats(path: &Path) -> Result<StoreStats, StoreError> {
    Err(StoreError::NoFile(path.display().to_string()))
}
