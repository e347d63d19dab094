//! STAND-IN, REPLACED AT MERGE. This file exists only in the `wip-input` worktree so that the
//! `jsonl` source compiles and its tests run while the real SQLite store is written in
//! parallel. It implements exactly the `Store` API of the helper brief, in memory: nothing here
//! is durable. The lead keeps the real `store/` at merge and drops this file.
//!
//! Invariants it does keep (the ones producers observe): `append_event` assigns a gap-free
//! sequence starting at 1, and a known `id` returns the original [`Accepted`] with
//! `duplicate = true` without storing a second event.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use uuid::Uuid;
use waymark_wire::{CloudEvent, Timestamp};

use crate::health::Health;

/// Outbox lanes, drained in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
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
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// UUIDv7 made at detection / acceptance.
    pub id: Uuid,
    /// Event type, e.g. `waymark.pod.delivered`.
    pub type_: String,
    /// When it happened.
    pub time_ms: Timestamp,
    /// `Alert` or `Milestone`.
    pub lane: Lane,
    /// Optional CloudEvents subject.
    pub subject: Option<String>,
    /// Event payload.
    pub data: serde_json::Value,
}

/// The store's answer to a committed (or already known) event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The event id.
    pub id: Uuid,
    /// Its per-vehicle sequence number.
    pub sequence: u64,
    /// True when the id was already known (producer retry): nothing new was stored.
    pub duplicate: bool,
}

/// One encoded telemetry batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryBatch {
    /// Encoded batch (`waymark_wire::telemetry::encode`).
    pub payload: Vec<u8>,
    /// Readings in it.
    pub readings: u32,
    /// Time of the first reading.
    pub first_ms: Timestamp,
    /// Time of the last reading.
    pub last_ms: Timestamp,
}

/// What an outbox row holds.
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
    /// Row id (ascending in commit order).
    pub row_id: i64,
    /// Lane.
    pub lane: Lane,
    /// Kind.
    pub kind: RowKind,
    /// Bytes to publish.
    pub payload: Vec<u8>,
    /// Commit time.
    pub created_ms: Timestamp,
    /// Readings in a telemetry row, 0 for events.
    pub readings: u32,
}

/// Per-lane positions already handed out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaneCursors {
    /// Last alert row id fetched.
    pub alert: i64,
    /// Last milestone row id fetched.
    pub milestone: i64,
    /// Last live telemetry row id fetched.
    pub live: i64,
    /// Last backlog telemetry row id fetched.
    pub backlog: i64,
}

/// A fetch request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetch {
    /// Cursors to continue after.
    pub after: LaneCursors,
    /// Telemetry created at or after this is live.
    pub live_since_ms: Timestamp,
    /// Row limit.
    pub max_rows: usize,
    /// Payload byte limit.
    pub max_bytes: usize,
}

/// Backlog and counters.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct StoreStats {
    /// Unsent rows.
    pub rows: u64,
    /// Unsent payload bytes.
    pub bytes: u64,
    /// Next sequence number.
    pub next_sequence: u64,
    /// Last PUBACK time.
    pub last_puback_ms: Option<Timestamp>,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store was closed.
    #[error("store is closed")]
    Closed,
    /// The event could not be serialized as a CloudEvent.
    #[error("cannot encode event: {0}")]
    Encode(#[from] serde_json::Error),
    /// `read_stats` has no file to read in this stand-in.
    #[error("no store file at {0}")]
    NoFile(String),
}

/// The durable outbox (in-memory stand-in).
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Mutex<State>>,
    committed: Arc<tokio::sync::Notify>,
}

#[derive(Debug)]
struct State {
    vehicle: String,
    closed: bool,
    next_sequence: u64,
    next_row: i64,
    known: HashMap<Uuid, Accepted>,
    rows: Vec<OutboxRow>,
    last_puback_ms: Option<Timestamp>,
}

impl Store {
    /// Opens an in-memory store (the stand-in ignores the path).
    ///
    /// # Errors
    /// Never in the stand-in.
    pub fn open(
        _cfg: &crate::config::StoreConfig,
        vehicle_id: &str,
        _health: Arc<Health>,
    ) -> Result<Store, StoreError> {
        Ok(Store {
            inner: Arc::new(Mutex::new(State {
                vehicle: vehicle_id.to_string(),
                closed: false,
                next_sequence: 1,
                next_row: 1,
                known: HashMap::new(),
                rows: Vec::new(),
                last_puback_ms: None,
            })),
            committed: Arc::new(tokio::sync::Notify::new()),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Commits an event; a known id answers the original acceptance with `duplicate = true`.
    ///
    /// # Errors
    /// [`StoreError::Closed`] after `close`.
    pub async fn append_event(&self, ev: NewEvent) -> Result<Accepted, StoreError> {
        let mut st = self.state();
        if st.closed {
            return Err(StoreError::Closed);
        }
        if let Some(known) = st.known.get(&ev.id) {
            return Ok(Accepted {
                duplicate: true,
                ..*known
            });
        }
        let sequence = st.next_sequence;
        let doc = CloudEvent {
            specversion: waymark_wire::event::SPEC_VERSION.into(),
            id: ev.id,
            source: CloudEvent::source_for(&st.vehicle),
            type_: ev.type_,
            time: waymark_wire::time::format_rfc3339_ms(ev.time_ms),
            datacontenttype: waymark_wire::event::DATA_CONTENT_TYPE.into(),
            subject: ev.subject,
            sequence: CloudEvent::format_sequence(sequence),
            data: ev.data,
        };
        let payload = serde_json::to_vec(&doc)?;
        st.next_sequence += 1;
        let row_id = st.next_row;
        st.next_row += 1;
        st.rows.push(OutboxRow {
            row_id,
            lane: ev.lane,
            kind: RowKind::Event,
            payload,
            created_ms: ev.time_ms,
            readings: 0,
        });
        let accepted = Accepted {
            id: ev.id,
            sequence,
            duplicate: false,
        };
        st.known.insert(ev.id, accepted);
        drop(st);
        self.committed.notify_one();
        Ok(accepted)
    }

    /// Stores a telemetry batch.
    ///
    /// # Errors
    /// [`StoreError::Closed`] after `close`.
    pub async fn append_telemetry(&self, batch: TelemetryBatch) -> Result<(), StoreError> {
        let mut st = self.state();
        if st.closed {
            return Err(StoreError::Closed);
        }
        let row_id = st.next_row;
        st.next_row += 1;
        st.rows.push(OutboxRow {
            row_id,
            lane: Lane::Telemetry,
            kind: RowKind::Telemetry,
            payload: batch.payload,
            created_ms: batch.last_ms,
            readings: batch.readings,
        });
        drop(st);
        self.committed.notify_one();
        Ok(())
    }

    /// Next unsent rows in lane order.
    ///
    /// # Errors
    /// [`StoreError::Closed`] after `close`.
    pub async fn fetch(&self, f: Fetch) -> Result<Vec<OutboxRow>, StoreError> {
        let st = self.state();
        if st.closed {
            return Err(StoreError::Closed);
        }
        let alert = st
            .rows
            .iter()
            .filter(|r| r.lane == Lane::Alert && r.row_id > f.after.alert);
        let milestone = st
            .rows
            .iter()
            .filter(|r| r.lane == Lane::Milestone && r.row_id > f.after.milestone);
        let live = st.rows.iter().filter(|r| {
            r.lane == Lane::Telemetry && r.created_ms >= f.live_since_ms && r.row_id > f.after.live
        });
        let backlog = st.rows.iter().filter(|r| {
            r.lane == Lane::Telemetry
                && r.created_ms < f.live_since_ms
                && r.row_id > f.after.backlog
        });
        let mut out = Vec::new();
        let mut bytes = 0;
        for row in alert.chain(milestone).chain(live).chain(backlog) {
            if !out.is_empty()
                && (out.len() >= f.max_rows || bytes + row.payload.len() > f.max_bytes)
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
    /// [`StoreError::Closed`] after `close`.
    pub async fn ack(&self, row_ids: Vec<i64>, now_ms: Timestamp) -> Result<(), StoreError> {
        let mut st = self.state();
        if st.closed {
            return Err(StoreError::Closed);
        }
        st.rows.retain(|r| !row_ids.contains(&r.row_id));
        st.last_puback_ms = Some(now_ms);
        Ok(())
    }

    /// Backlog and counters.
    ///
    /// # Errors
    /// [`StoreError::Closed`] after `close`.
    pub async fn stats(&self) -> Result<StoreStats, StoreError> {
        let st = self.state();
        if st.closed {
            return Err(StoreError::Closed);
        }
        Ok(StoreStats {
            rows: st.rows.len() as u64,
            bytes: st.rows.iter().map(|r| r.payload.len() as u64).sum(),
            next_sequence: st.next_sequence,
            last_puback_ms: st.last_puback_ms,
        })
    }

    /// Notified when rows were committed.
    pub fn committed(&self) -> Arc<tokio::sync::Notify> {
        self.committed.clone()
    }

    /// Stops the store.
    ///
    /// # Errors
    /// Never in the stand-in.
    pub async fn close(self) -> Result<(), StoreError> {
        self.state().closed = true;
        Ok(())
    }
}

/// Stats from a store file (the stand-in has no file).
///
/// # Errors
/// Always [`StoreError::NoFile`] in the stand-in.
pub fn read_stats(path: &Path) -> Result<StoreStats, StoreError> {
    Err(StoreError::NoFile(path.display().to_string()))
}
