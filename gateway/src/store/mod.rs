//! The durable outbox: SQLite store-and-forward between acceptance and delivery (DESIGN §3).
//!
//! # Invariants
//! - **An event is acknowledged only after it is durable.** [`Store::append_event`] resolves
//!   after the `COMMIT` of the transaction that holds the row, in WAL mode with
//!   `synchronous=FULL` (the WAL is fsynced by the commit). The producer is told nothing
//!   before that, so a crash before the commit makes it retry.
//! - **Events are never deleted for space.** Only a PUBACK ([`Store::ack`]) or the documented
//!   maximum age (`event_max_age_s`, counted in `events_expired`) removes an event row.
//!   Beyond the byte quota or the free-disk watermark the oldest *telemetry* rows are
//!   deleted (counted in `telemetry_dropped_rows` / `telemetry_dropped_readings`); events are
//!   accepted beyond the quota as long as the disk takes them.
//! - **The sequence is gap-free.** An event's `sequence` is `counters.sequence + 1`, written in
//!   the transaction that inserts the row; a transaction that fails consumes no number. A
//!   retried event id (still in `dedup`) gets its original acceptance back and stores nothing.
//! - **Row ids are never reused** (`AUTOINCREMENT`), so the uplink's per-lane cursors
//!   ([`LaneCursors`]) stay valid after the outbox empties. A database recreated after
//!   corruption is seeded above every row id handed out before.
//! - **One writer.** A single thread owns the connection and executes commands in channel
//!   order (an `ack` sent before a `fetch` is visible to it). It drains up to
//!   512 (`writer::MAX_GROUP`) pending commands into one transaction and one fsync (group
//!   commit), and only then answers them, so a read never sees rows that might still roll
//!   back.
//!
//! # Schema (version 1, `PRAGMA user_version`)
//! ```text
//! outbox   row_id INTEGER PRIMARY KEY AUTOINCREMENT   -- delivery order within a lane; cursor key
//!          lane INTEGER        -- 0 alert (alerts, POD), 1 milestone, 2 telemetry
//!          kind INTEGER        -- 0 event (CloudEvent JSON), 1 telemetry (encoded batch)
//!          created_ms INTEGER  -- store clock when the row was committed (live vs backlog, max age)
//!          bytes INTEGER       -- payload length, the unit of the byte quota
//!          readings INTEGER    -- readings in a telemetry batch (0 for events)
//!          payload BLOB        -- exactly what is published
//!   INDEX outbox_lane_row (lane, row_id)         -- fetch per lane, oldest telemetry for dropping
//!   INDEX outbox_lane_created (lane, created_ms) -- live telemetry, event max age, oldest per lane
//! counters name TEXT PRIMARY KEY, value INTEGER      -- sequence, telemetry_dropped_rows,
//!                                                    -- telemetry_dropped_readings, events_expired
//! dedup    event_id TEXT PRIMARY KEY, sequence INTEGER, created_ms INTEGER
//!   INDEX dedup_created (created_ms)                 -- pruned after dedup_retention_s
//! meta     key TEXT PRIMARY KEY, value INTEGER       -- last_puback_ms, last_probe_ms,
//!                                                    -- clock_source, clock_offset_ms,
//!                                                    -- clock_last_sync_ms, clock_updated_ms
//! ```
//! Pragmas: `auto_vacuum=INCREMENTAL` (set at creation), `journal_mode=WAL`,
//! `synchronous=FULL`, `cache_size` 2 MiB, `journal_size_limit` 4 MiB, `busy_timeout` 5 s.
//! Migrations are applied in order, each in its own transaction with its `user_version`; a
//! file with a newer version than this build knows is refused ([`StoreError::SchemaTooNew`]).
//!
//! # Ack and delete rules
//! - A row is deleted when its PUBACK arrives (`ack`), when it is the oldest telemetry and
//!   the quota, the watermark (see `quota.rs`) or a full disk (`SQLITE_FULL`) needs room, or
//!   when it is an event older than `event_max_age_s` (periodic sweep). Nothing else deletes
//!   rows.
//! - After large deletes the freed pages are returned to the filesystem with
//!   `PRAGMA incremental_vacuum`, keeping a little slack for the next inserts.
//! - Telemetry is not durable until its batch commits; the pipeline's batch window is the only
//!   accepted telemetry a power cut may lose. While the store cannot write (disk full,
//!   read-only), telemetry batches wait in a bounded in-memory hold (oldest dropped and
//!   counted in `readings_lost_store_unavailable`) and are committed when writes work again.
//!
//! # Start-up and recovery
//! 1. Open (create if missing), then `PRAGMA quick_check`. A file that is not a database, is
//!    corrupt or truncated, or does not have our schema is closed and renamed with its `-wal`
//!    and `-shm` to `<name>.corrupt-<UTC yyyymmddThhmmssZ>`; a fresh database is created.
//!    The old file is opened read-only (with `writable_schema` so that a truncated file still
//!    reads) to salvage the sequence counter and every readable unsent event; then the alert
//!    event `waymark.alert.store_corrupted` is committed with `set_aside_path`, `reason`,
//!    `sequence_continued` and `events_salvaged`.
//! 2. Disk full, read-only filesystem or database, or I/O errors never fail the open: the
//!    store starts (or continues) degraded, reports `store` as down in [`Health`], refuses
//!    events with [`StoreError::Unavailable`] (the producer is not acked and retries), holds
//!    telemetry in memory, and retries with backoff, reopening the file when the error calls
//!    for it. Recovery is automatic.
//! 3. A periodic sweep expires old events, prunes `dedup`, persists the clock state, and
//!    re-stamps rows written before the wall clock was valid (so a unit that booted in 1970
//!    does not expire its events, and no event is published with a 1970 `time`: an event lane
//!    is not fetched past such a row until the sweep re-stamped it; see `docs/time.md`). The
//!    sweep runs within a second of the clock becoming valid. At the first open, rows that an
//!    earlier process committed before its clock was known are marked `created_ms = 0`: their
//!    monotonic stamps cannot be mapped by this process.

mod hold;
mod quota;
mod sqlite;
mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use serde::Serialize;
use tokio::sync::{Notify, Semaphore, oneshot};
use uuid::Uuid;
use waymark_wire::Timestamp;

use crate::config::StoreConfig;
use crate::health::{Health, SourceHealth};

use writer::{Command, Options};

/// Delivery lane of an outbox row; lower lanes are published first.
///
/// Alerts and POD before milestones before telemetry (live telemetry before backlog).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    /// Alerts and proof of delivery: published first.
    Alert = 0,
    /// Trip milestones (arrived, departed, ...).
    Milestone = 1,
    /// Telemetry batches.
    Telemetry = 2,
}

impl Lane {
    /// All lanes in delivery order.
    pub const ALL: [Lane; 3] = [Lane::Alert, Lane::Milestone, Lane::Telemetry];

    /// The lane stored as `n` in the `lane` column.
    pub fn from_i64(n: i64) -> Option<Lane> {
        match n {
            0 => Some(Lane::Alert),
            1 => Some(Lane::Milestone),
            2 => Some(Lane::Telemetry),
            _ => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// An event to commit: the producer's part of the CloudEvent (the store adds `source`,
/// `sequence`, `specversion` and `datacontenttype`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// UUIDv7 made at detection or acceptance; the same on every retry.
    pub id: Uuid,
    /// Event type, e.g. `waymark.pod.delivered`.
    pub type_: String,
    /// When it happened (UTC ms).
    pub time_ms: Timestamp,
    /// [`Lane::Alert`] or [`Lane::Milestone`].
    pub lane: Lane,
    /// What the event is about within the vehicle (a stop id, a compartment).
    pub subject: Option<String>,
    /// The event's `data`.
    pub data: serde_json::Value,
}

/// The store's answer to [`Store::append_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Accepted {
    /// The event id.
    pub id: Uuid,
    /// The per-vehicle sequence number the event carries.
    pub sequence: u64,
    /// True when the id was already stored: this is the original acceptance and nothing new
    /// was stored.
    pub duplicate: bool,
}

/// One encoded telemetry batch (`waymark_wire::telemetry::encode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryBatch {
    /// The encoded batch, published as is.
    pub payload: Vec<u8>,
    /// Readings in the batch (for the drop counters).
    pub readings: u32,
    /// Time of the first reading (UTC ms); for logs about lost data.
    pub first_ms: Timestamp,
    /// Time of the last reading (UTC ms).
    pub last_ms: Timestamp,
}

/// What an outbox row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    /// A CloudEvent JSON document.
    Event = 0,
    /// An encoded telemetry batch.
    Telemetry = 1,
}

impl RowKind {
    /// The kind stored as `n` in the `kind` column.
    pub fn from_i64(n: i64) -> Option<RowKind> {
        match n {
            0 => Some(RowKind::Event),
            1 => Some(RowKind::Telemetry),
            _ => None,
        }
    }
}

/// An unsent row, as [`Store::fetch`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Row id: pass it to [`Store::ack`] after the PUBACK; also the lane cursor.
    pub row_id: i64,
    /// Delivery lane.
    pub lane: Lane,
    /// Event or telemetry.
    pub kind: RowKind,
    /// What to publish.
    pub payload: Vec<u8>,
    /// Store clock when the row was committed (decides live vs backlog telemetry).
    pub created_ms: Timestamp,
    /// Readings in a telemetry batch; 0 for events.
    pub readings: u32,
}

/// Per-lane "already fetched up to" row ids; a fetch returns rows above them.
/// `Default` (all 0) starts from the beginning, as after a reconnect.
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

/// Arguments of [`Store::fetch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetch {
    /// Return only rows above these cursors.
    pub after: LaneCursors,
    /// Telemetry created at or after this is live; older telemetry is backlog.
    pub live_since_ms: Timestamp,
    /// At most this many rows (0 returns nothing).
    pub max_rows: usize,
    /// At most this many payload bytes, except that one row is always returned if any.
    pub max_bytes: usize,
}

/// Unsent rows of one lane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LaneStats {
    /// Rows waiting for a PUBACK.
    pub rows: u64,
    /// Their payload bytes (what the quota counts).
    pub bytes: u64,
    /// Readings in them (telemetry only).
    pub readings: u64,
    /// `created_ms` of the oldest row, if any: how far behind delivery is.
    pub oldest_created_ms: Option<Timestamp>,
}

/// Persistent counters: they survive restarts (unlike the process counters in [`Health`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreCounters {
    /// Telemetry rows deleted (or refused) to respect the byte quota or the free-disk
    /// watermark.
    pub telemetry_dropped_rows: u64,
    /// Readings in those rows.
    pub telemetry_dropped_readings: u64,
    /// Unsent events deleted because they were older than `event_max_age_s`.
    pub events_expired: u64,
}

/// The clock state persisted in the store's `meta` table (see [`crate::clock`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StoredClock {
    /// Where the time came from.
    pub source: crate::clock::ClockSource,
    /// Disciplined time minus the system clock, ms; `None` while no time was known.
    pub offset_ms: Option<i64>,
    /// UTC ms of the last GNSS sync, if any.
    pub last_sync_ms: Option<Timestamp>,
    /// Store clock when this was written (a monotonic stamp while no time was known).
    pub updated_ms: Timestamp,
}

/// What `waymark status` and the status document show about the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Unsent alert and POD events.
    pub alert: LaneStats,
    /// Unsent milestone events.
    pub milestone: LaneStats,
    /// Unsent telemetry (live and backlog together: the split depends on the uplink's now).
    pub telemetry: LaneStats,
    /// Persistent counters.
    pub counters: StoreCounters,
    /// Wall-clock ms of the last PUBACK, if one ever arrived.
    pub last_puback_ms: Option<Timestamp>,
    /// The gateway clock as last persisted by the running gateway (every sweep, 60 s);
    /// `None` in a store no clock-aware gateway wrote.
    pub clock: Option<StoredClock>,
    /// The sequence number the next event will get.
    pub next_sequence: u64,
    /// Size of the database file plus its WAL, bytes.
    pub db_file_bytes: u64,
    /// Telemetry batches held in memory because the store cannot write (0 when healthy).
    pub held_batches: u64,
    /// Readings in those batches.
    pub held_readings: u64,
    /// The store's health as reported to [`Health`]; absent when read from the file alone
    /// ([`read_stats`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<SourceHealth>,
}

impl StoreStats {
    /// Rows waiting for a PUBACK, all lanes together.
    pub fn backlog_rows(&self) -> u64 {
        self.alert.rows + self.milestone.rows + self.telemetry.rows
    }

    /// Stats of one lane.
    pub fn lane(&self, lane: Lane) -> &LaneStats {
        match lane {
            Lane::Alert => &self.alert,
            Lane::Milestone => &self.milestone,
            Lane::Telemetry => &self.telemetry,
        }
    }
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot write right now: the disk is full, the filesystem or database is
    /// read-only, an I/O error happened, or the file could not be (re)opened. Nothing was
    /// stored; the store keeps retrying on its own, so retry the request later.
    #[error("store unavailable: {reason}")]
    Unavailable {
        /// What failed, for logs and the producer.
        reason: String,
    },
    /// The event's CloudEvent JSON would exceed `waymark_wire::event::MAX_EVENT_BYTES`. Nothing
    /// was stored and no sequence number was used. Retrying will not help.
    #[error("event is {bytes} bytes, the limit is {max}")]
    EventTooLarge {
        /// Serialized size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The event cannot be stored as given (empty `type_`, or the telemetry lane). Retrying
    /// will not help.
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// The database was written by a newer Waymark (schema version above what this build
    /// knows). Returned by [`Store::open`] and [`read_stats`]; the file is left untouched.
    #[error("{path}: store schema version {found} is newer than this build supports ({supported})")]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// `user_version` found.
        found: u32,
        /// Highest version this build knows.
        supported: u32,
    },
    /// [`read_stats`] could not read the file (missing, not a Waymark store, unreadable).
    #[error("cannot read store at {path}")]
    Read {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the store writer thread")]
    Spawn(#[source] std::io::Error),
    /// The store was closed (or its writer thread is gone); the request was not executed.
    #[error("store closed")]
    Closed,
}

/// Requests queued for the writer at once, over all handles; more wait (asynchronously) for
/// a slot. Bounds the memory that queued payloads can take whatever the callers do.
const MAX_IN_FLIGHT: usize = 256;

/// The durable outbox: a cheap, cloneable handle to the writer thread.
#[derive(Debug, Clone)]
pub struct Store {
    tx: mpsc::Sender<Command>,
    committed: Arc<Notify>,
    in_flight: Arc<Semaphore>,
}

impl Store {
    /// Opens or creates the database at `cfg.path`, recovers it if it is corrupt (set aside,
    /// fresh file, alert event) and starts the writer thread.
    ///
    /// Blocks while the file is checked (`PRAGMA quick_check` reads the whole file), so call it
    /// at start-up or from `spawn_blocking`. A store that cannot write (disk full, read-only)
    /// still opens: it starts degraded and recovers on its own.
    ///
    /// # Errors
    /// [`StoreError::SchemaTooNew`] when the file comes from a newer Waymark;
    /// [`StoreError::Spawn`] when the thread cannot be started.
    pub fn open(
        cfg: &StoreConfig,
        vehicle_id: &str,
        health: Arc<Health>,
    ) -> Result<Store, StoreError> {
        Store::open_with(cfg, vehicle_id, health, Options::default())
    }

    /// Like [`Store::open`], with `clock` as the store's clock: `created_ms` and the store's
    /// own events are stamped with it, rows committed before the time was known are
    /// re-stamped with it once it is (event `time`s included; see [`crate::clock`]), and its
    /// state is persisted for `waymark status`.
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_with_clock(
        cfg: &StoreConfig,
        vehicle_id: &str,
        health: Arc<Health>,
        clock: crate::clock::Clock,
    ) -> Result<Store, StoreError> {
        let now = clock.clone();
        let options = Options {
            clock: Arc::new(move || now.now()),
            time: Some(clock),
            ..Options::default()
        };
        Store::open_with(cfg, vehicle_id, health, options)
    }

    fn open_with(
        cfg: &StoreConfig,
        vehicle_id: &str,
        health: Arc<Health>,
        options: Options,
    ) -> Result<Store, StoreError> {
        let committed = Arc::new(Notify::new());
        let tx = writer::spawn(cfg, vehicle_id, health, Arc::clone(&committed), options)?;
        Ok(Store {
            tx,
            committed,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        })
    }

    /// Commits the event and resolves after the `COMMIT` (durable): assigns the gap-free
    /// sequence and stores the CloudEvent JSON built with [`waymark_wire::CloudEvent`]. A known
    /// `id` returns the original [`Accepted`] with `duplicate = true` and stores nothing.
    ///
    /// If the future is dropped after the request was sent, the event may still be committed;
    /// the producer's retry then gets `duplicate = true`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] (retry later), [`StoreError::EventTooLarge`],
    /// [`StoreError::InvalidEvent`], [`StoreError::Closed`].
    pub async fn append_event(&self, ev: NewEvent) -> Result<Accepted, StoreError> {
        self.request(|reply| Command::AppendEvent {
            ev,
            reply,
            out: None,
        })
        .await
    }

    /// Commits one encoded telemetry batch (group commit with other pending writes).
    ///
    /// `Ok` means committed, or, while the store cannot write, held in memory until it can
    /// (the `store` health is down then; an overflowing hold drops the oldest batches and
    /// counts them in `readings_lost_store_unavailable`). Beyond the quota or watermark the
    /// oldest telemetry, possibly this batch, is dropped and counted.
    ///
    /// # Errors
    /// [`StoreError::Closed`].
    pub async fn append_telemetry(&self, batch: TelemetryBatch) -> Result<(), StoreError> {
        self.request(|reply| Command::AppendTelemetry {
            batch,
            reply,
            out: None,
        })
        .await
    }

    /// Next unsent rows in lane order: alerts (`row_id > after.alert`), milestones
    /// (`> after.milestone`), live telemetry (`created_ms >= live_since_ms`,
    /// `row_id > after.live`), then backlog telemetry (`created_ms < live_since_ms`,
    /// `row_id > after.backlog`), each ascending by `row_id`, stopping before the first row
    /// that would exceed `max_rows` or `max_bytes` (at least one row if any).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be read, [`StoreError::Closed`].
    pub async fn fetch(&self, f: Fetch) -> Result<Vec<OutboxRow>, StoreError> {
        self.request(|reply| Command::Fetch {
            fetch: f,
            reply,
            out: None,
        })
        .await
    }

    /// Deletes the rows whose PUBACK arrived (unknown ids are ignored) and records `now_ms`
    /// as the last PUBACK time.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the delete could not be committed (the rows stay and
    /// are published again later), [`StoreError::Closed`].
    pub async fn ack(&self, row_ids: Vec<i64>, now_ms: Timestamp) -> Result<(), StoreError> {
        self.request(|reply| Command::Ack {
            row_ids,
            now_ms,
            reply,
            out: None,
        })
        .await
    }

    /// Backlog per lane, persistent counters, last PUBACK, next sequence, file size, health.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be read, [`StoreError::Closed`].
    pub async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.request(|reply| Command::Stats { reply, out: None })
            .await
    }

    /// Notified (one stored permit) whenever rows were committed; the uplink waits on it
    /// when it has nothing to send.
    pub fn committed(&self) -> Arc<Notify> {
        Arc::clone(&self.committed)
    }

    /// Commits everything sent before, tries once more to commit telemetry held in memory,
    /// closes the database and stops the writer thread. Other handles get
    /// [`StoreError::Closed`] afterwards.
    ///
    /// # Errors
    /// [`StoreError::Closed`] when the store was already closed.
    pub async fn close(self) -> Result<(), StoreError> {
        self.request(|reply| Command::Close { reply }).await
    }

    /// Test seam for other modules: blocks the writer thread (as a hung `fsync` would) until
    /// the returned sender sends or is dropped; returns once it is blocked.
    #[cfg(test)]
    pub(crate) fn hold_writer(&self) -> std::sync::mpsc::Sender<()> {
        let (release, open) = mpsc::channel();
        let (entered, blocked) = mpsc::channel();
        let (reply, _answer) = oneshot::channel();
        let hook = writer::Hook::Gate { entered, open };
        self.tx
            .send(Command::Hook { hook, reply })
            .expect("the writer thread runs");
        blocked.recv().expect("the writer reaches the gate");
        release
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let _slot = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

/// Reads [`StoreStats`] from a store file without a running gateway (for `waymark status`).
/// Opens the file read-only, which works while the daemon runs (WAL readers do not block the
/// writer). `health` and the `held_*` fields are empty.
///
/// # Errors
/// [`StoreError::Read`] when the file is missing, unreadable or not a Waymark store;
/// [`StoreError::SchemaTooNew`].
pub fn read_stats(path: &Path) -> Result<StoreStats, StoreError> {
    sqlite::read_stats(path)
}
