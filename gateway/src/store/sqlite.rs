//! SQLite access: pragmas, schema and migrations, the queries run inside the writer's
//! transactions, and the pieces of recovery (set aside, salvage). Everything here runs on the
//! writer thread, except [`read_stats`], which opens its own read-only connection.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};
use uuid::Uuid;
use waymark_wire::event::{DATA_CONTENT_TYPE, MAX_EVENT_BYTES, SPEC_VERSION};
use waymark_wire::time::{EARLIEST_VALID_MS, format_rfc3339_ms};
use waymark_wire::{CloudEvent, Timestamp};

use super::quota::{self, Cover, Incoming, Limits};
use super::{
    Accepted, Fetch, Lane, LaneStats, NewEvent, OutboxRow, RowKind, StoreCounters, StoreError,
    StoreStats, StoredClock, TelemetryBatch,
};
use crate::clock::{Clock, ClockSource, ClockState};

/// Schema version this build writes (`PRAGMA user_version`).
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// `MIGRATIONS[i]` takes a database from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[SCHEMA_V1];

const SCHEMA_V1: &str = "
CREATE TABLE outbox (
    row_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    lane       INTEGER NOT NULL,
    kind       INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    bytes      INTEGER NOT NULL,
    readings   INTEGER NOT NULL,
    payload    BLOB    NOT NULL
);
CREATE INDEX outbox_lane_row ON outbox (lane, row_id);
CREATE INDEX outbox_lane_created ON outbox (lane, created_ms);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE dedup (
    event_id   TEXT PRIMARY KEY,
    sequence   INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX dedup_created ON dedup (created_ms);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER) WITHOUT ROWID;
";

/// Names in the `counters` table.
pub(crate) mod counter {
    /// Last sequence number given to an event.
    pub const SEQUENCE: &str = "sequence";
    /// Telemetry rows dropped (or refused) for the quota or watermark.
    pub const TELEMETRY_DROPPED_ROWS: &str = "telemetry_dropped_rows";
    /// Readings in them.
    pub const TELEMETRY_DROPPED_READINGS: &str = "telemetry_dropped_readings";
    /// Events deleted for exceeding `event_max_age_s`.
    pub const EVENTS_EXPIRED: &str = "events_expired";
}

/// Keys in the `meta` table.
mod meta_key {
    /// Wall-clock ms of the last PUBACK.
    pub const LAST_PUBACK_MS: &str = "last_puback_ms";
    /// Wall-clock ms of the last write probe after reopening.
    pub const LAST_PROBE_MS: &str = "last_probe_ms";
    /// Clock source code (0 none, 1 system, 2 gnss; [`crate::clock::ClockSource::code`]).
    pub const CLOCK_SOURCE: &str = "clock_source";
    /// Disciplined time minus the system clock, ms (NULL while unknown).
    pub const CLOCK_OFFSET_MS: &str = "clock_offset_ms";
    /// UTC ms of the last GNSS sync (NULL when none).
    pub const CLOCK_LAST_SYNC_MS: &str = "clock_last_sync_ms";
    /// Store-clock ms when the clock keys were written.
    pub const CLOCK_UPDATED_MS: &str = "clock_updated_ms";
}

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Per-connection pragmas. The cache is small: the whole daemon has a 16 MB RSS budget.
const CONNECTION_PRAGMAS: &str = "
PRAGMA synchronous = FULL;
PRAGMA cache_size = -2048;
PRAGMA journal_size_limit = 4194304;
PRAGMA trusted_schema = OFF;
PRAGMA cell_size_check = ON;
";
/// Run `incremental_vacuum` once the free pages exceed this ...
const VACUUM_ABOVE_BYTES: u64 = 4 * 1024 * 1024;
/// ... and keep this much free for the next inserts.
const VACUUM_KEEP_BYTES: u64 = 1024 * 1024;

const EVENT_LANES_SQL: &str = "0, 1";
const LANE_TELEMETRY: i64 = Lane::Telemetry as i64;

/// Class of a SQLite failure, which decides what the writer does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// `SQLITE_FULL`: disk (or file size limit) full.
    Full,
    /// `SQLITE_READONLY`: the connection or file is read-only.
    ReadOnly,
    /// `SQLITE_CANTOPEN` / `SQLITE_PERM`: the file (or its `-wal`/`-shm`) cannot be opened,
    /// e.g. on a read-only filesystem.
    CantOpen,
    /// `SQLITE_IOERR`.
    Io,
    /// `SQLITE_BUSY` / `SQLITE_LOCKED`: another process holds a lock.
    Busy,
    /// `SQLITE_CORRUPT` / `SQLITE_NOTADB`.
    Corrupt,
    /// Anything else.
    Other,
}

impl Failure {
    /// Classifies a rusqlite error.
    pub fn of(e: &rusqlite::Error) -> Failure {
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => Failure::Full,
            Some(ErrorCode::ReadOnly) => Failure::ReadOnly,
            Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => Failure::CantOpen,
            Some(ErrorCode::SystemIoFailure) => Failure::Io,
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Failure::Busy,
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => Failure::Corrupt,
            _ => Failure::Other,
        }
    }

    /// Classifies a filesystem error (renaming a corrupt file aside).
    pub fn of_io(e: &io::Error) -> Failure {
        match e.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::FileTooLarge => Failure::Full,
            io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied => {
                Failure::ReadOnly
            }
            _ => Failure::Io,
        }
    }

    /// Whether the retry must reopen the file to get out of it (a connection that SQLite
    /// opened read-only stays read-only; corruption is handled at open).
    pub fn needs_reopen(self) -> bool {
        matches!(
            self,
            Failure::ReadOnly | Failure::CantOpen | Failure::Io | Failure::Corrupt
        )
    }

    /// Whether the connection is useless even for reads and is closed at once. A read-only
    /// connection is kept until the reopen, so the uplink can still drain the backlog.
    pub fn drops_connection(self) -> bool {
        matches!(self, Failure::CantOpen | Failure::Io | Failure::Corrupt)
    }

    /// Short words for health and logs.
    pub fn describe(self) -> &'static str {
        match self {
            Failure::Full => "disk full",
            Failure::ReadOnly => "read-only database or filesystem",
            Failure::CantOpen => "cannot open the database file",
            Failure::Io => "I/O error",
            Failure::Busy => "database locked by another process",
            Failure::Corrupt => "database corrupt",
            Failure::Other => "database error",
        }
    }
}

/// Why [`open`] failed.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// Not a database, corrupt, truncated, or not our schema: set it aside.
    Corrupt(String),
    /// Cannot open or write now (read-only, full, I/O, locked): retry later.
    Unavailable {
        /// Class of the failure.
        failure: Failure,
        /// What SQLite said.
        detail: String,
    },
    /// Written by a newer Waymark.
    TooNew(u32),
}

impl From<rusqlite::Error> for OpenError {
    fn from(e: rusqlite::Error) -> Self {
        match Failure::of(&e) {
            Failure::Corrupt => OpenError::Corrupt(e.to_string()),
            failure => OpenError::Unavailable {
                failure,
                detail: e.to_string(),
            },
        }
    }
}

/// Unsent rows of one lane, kept in memory by the writer (loaded at open, updated in each
/// transaction) so quota decisions and stats need no table scan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LaneTotals {
    /// Rows.
    pub rows: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// Readings.
    pub readings: u64,
}

/// [`LaneTotals`] of every lane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Unsent {
    /// Indexed by `Lane as usize`.
    pub lanes: [LaneTotals; 3],
}

impl Unsent {
    fn add(&mut self, lane: Lane, bytes: u64, readings: u64) {
        let l = &mut self.lanes[lane.index()];
        l.rows += 1;
        l.bytes += bytes;
        l.readings += readings;
    }

    fn remove(&mut self, lane: Lane, rows: u64, bytes: u64, readings: u64) {
        let l = &mut self.lanes[lane.index()];
        l.rows = l.rows.saturating_sub(rows);
        l.bytes = l.bytes.saturating_sub(bytes);
        l.readings = l.readings.saturating_sub(readings);
    }

    /// Payload bytes of all unsent rows.
    pub fn total_bytes(&self) -> u64 {
        self.lanes.iter().map(|l| l.bytes).sum()
    }

    /// The telemetry lane.
    pub fn telemetry(&self) -> LaneTotals {
        self.lanes[Lane::Telemetry.index()]
    }

    /// The quota's view, with `free_disk_bytes`.
    pub fn quota(&self, free_disk_bytes: Option<u64>) -> quota::Usage {
        quota::Usage {
            unsent_bytes: self.total_bytes(),
            telemetry_bytes: self.telemetry().bytes,
            free_disk_bytes,
        }
    }
}

/// What a transaction did, applied to the writer's state and counters after its commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Events committed (not duplicates).
    pub events_stored: u64,
    /// Event appends answered from `dedup`.
    pub events_deduplicated: u64,
    /// Telemetry batches committed.
    pub batches_stored: u64,
    /// Readings in them.
    pub readings_stored: u64,
    /// Telemetry rows dropped or refused for space.
    pub dropped_rows: u64,
    /// Readings in them.
    pub dropped_readings: u64,
    /// Events expired by age.
    pub expired_events: u64,
    /// Rows inserted (any kind): the uplink is woken after the commit.
    pub inserted_rows: u64,
    /// Rows deleted (any reason): vacuum may be due.
    pub deleted_rows: u64,
    /// Events copied from a set-aside file.
    pub events_salvaged: u64,
}

impl Tally {
    /// Whether the transaction changed anything.
    pub fn wrote(&self) -> bool {
        self.inserted_rows > 0 || self.deleted_rows > 0 || self.dropped_rows > 0
    }
}

/// State of one open transaction.
#[derive(Debug, Clone)]
pub(crate) struct TxState {
    /// Store clock for `created_ms`.
    pub now_ms: Timestamp,
    /// Unsent rows as of this point in the transaction.
    pub unsent: Unsent,
    /// Estimated free bytes for the file; `None` when not measured.
    pub free_disk: Option<u64>,
    /// Highest row id inserted.
    pub max_row_id: i64,
    /// Last sequence number given.
    pub last_sequence: Option<u64>,
    /// What happened.
    pub tally: Tally,
}

impl TxState {
    /// A transaction starting from `unsent`.
    pub fn new(now_ms: Timestamp, unsent: Unsent, free_disk: Option<u64>) -> Self {
        TxState {
            now_ms,
            unsent,
            free_disk,
            max_row_id: 0,
            last_sequence: None,
            tally: Tally::default(),
        }
    }
}

/// Settings the queries need.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    /// Quota and watermark.
    pub limits: Limits,
    /// CloudEvent `source` of this vehicle.
    pub source: String,
    /// `event_max_age_s` (0 = never).
    pub event_max_age_s: u64,
    /// `dedup_retention_s`.
    pub dedup_retention_s: u64,
}

/// A database opened and checked by [`open`].
#[derive(Debug)]
pub(crate) struct Opened {
    /// The connection.
    pub conn: Connection,
    /// `PRAGMA page_size`.
    pub page_size: u64,
    /// Unsent rows per lane.
    pub unsent: Unsent,
    /// `counters.sequence`.
    pub sequence: u64,
    /// Highest row id ever handed out (`sqlite_sequence`).
    pub max_row_id: i64,
}

/// Opens (creating if missing), checks, configures and migrates the store at `path`.
/// `read_only` opens with `SQLITE_OPEN_READONLY` (what SQLite falls back to when the file
/// cannot be opened for writing; a test hook forces it).
pub(crate) fn open(path: &Path, read_only: bool) -> Result<Opened, OpenError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Err(e) = fs::create_dir_all(dir)
    {
        tracing::debug!(dir = %dir.display(), error = %e, "Cannot create the store directory.");
    }
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch(CONNECTION_PRAGMAS)?;

    // The first statements that read the file: a file that is not a database fails here.
    let version: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let objects: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
    let fresh = version == 0 && objects == 0;
    if fresh {
        // Must precede the first table; it cannot be changed later without a VACUUM.
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL;")?;
    } else {
        let check: String = conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(OpenError::Corrupt(format!("quick_check: {check}")));
        }
    }
    if version > SCHEMA_VERSION {
        return Err(OpenError::TooNew(version));
    }
    if version == 0 && !fresh {
        return Err(OpenError::Corrupt(format!(
            "not a Waymark store ({objects} schema objects but no schema version)"
        )));
    }
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::Unavailable {
            failure: Failure::ReadOnly,
            detail: format!("cannot switch the journal to WAL (still {mode})"),
        });
    }
    migrate(&conn, version)?;
    let tables: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table'
         AND name IN ('outbox', 'counters', 'dedup', 'meta')",
        [],
        |r| r.get(0),
    )?;
    if tables != 4 {
        return Err(OpenError::Corrupt(format!(
            "schema version {version} but {tables} of the 4 tables"
        )));
    }
    let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    let unsent = load_unsent(&conn)?;
    let sequence = read_counter(&conn, counter::SEQUENCE)?;
    let max_row_id: i64 = conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    Ok(Opened {
        conn,
        page_size: to_u64(page_size),
        unsent,
        sequence,
        max_row_id,
    })
}

fn migrate(conn: &Connection, from: u32) -> rusqlite::Result<()> {
    for (to, sql) in (1u32..).zip(MIGRATIONS).skip(from as usize) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", to)?;
        tx.commit()?;
        tracing::info!(version = to, "Store schema migrated.");
    }
    Ok(())
}

fn load_unsent(conn: &Connection) -> rusqlite::Result<Unsent> {
    let mut unsent = Unsent::default();
    let mut stmt =
        conn.prepare("SELECT lane, count(*), sum(bytes), sum(readings) FROM outbox GROUP BY lane")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        if let Some(lane) = Lane::from_i64(r.get(0)?) {
            unsent.lanes[lane.index()] = LaneTotals {
                rows: to_u64(r.get(1)?),
                bytes: to_u64(r.get(2)?),
                readings: to_u64(r.get(3)?),
            };
        }
    }
    Ok(unsent)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn read_counter(conn: &Connection, name: &str) -> rusqlite::Result<u64> {
    let v: Option<i64> = conn
        .prepare_cached("SELECT value FROM counters WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    Ok(v.map_or(0, to_u64))
}

fn set_counter(conn: &Connection, name: &str, value: u64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO counters (name, value) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![name, to_i64(value)])?;
    Ok(())
}

fn add_counter(conn: &Connection, name: &str, delta: u64) -> rusqlite::Result<()> {
    if delta == 0 {
        return Ok(());
    }
    conn.prepare_cached(
        "INSERT INTO counters (name, value) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
    )?
    .execute(params![name, to_i64(delta)])?;
    Ok(())
}

/// Free bytes for the store's file: the filesystem's available space plus the database's
/// free pages. `None` when `statvfs` fails (then only the byte quota applies).
pub(crate) fn free_disk(conn: &Connection, dir: &Path, page_size: u64) -> Option<u64> {
    let fs_free = match rustix::fs::statvfs(dir) {
        Ok(s) => s.f_bavail.saturating_mul(s.f_frsize),
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "statvfs failed; watermark not applied.");
            return None;
        }
    };
    let free_pages: i64 = conn
        .pragma_query_value(None, "freelist_count", |r| r.get(0))
        .ok()?;
    Some(fs_free.saturating_add(to_u64(free_pages).saturating_mul(page_size)))
}

/// Builds the CloudEvent JSON of `ev` with `sequence`.
pub(crate) fn event_json(
    source: &str,
    ev: &NewEvent,
    sequence: u64,
) -> Result<Vec<u8>, StoreError> {
    let ce = CloudEvent {
        specversion: SPEC_VERSION.to_string(),
        id: ev.id,
        source: source.to_string(),
        type_: ev.type_.clone(),
        time: format_rfc3339_ms(ev.time_ms),
        datacontenttype: DATA_CONTENT_TYPE.to_string(),
        subject: ev.subject.clone(),
        sequence: CloudEvent::format_sequence(sequence),
        data: ev.data.clone(),
    };
    let json = serde_json::to_vec(&ce).map_err(|e| StoreError::InvalidEvent(e.to_string()))?;
    if json.len() > MAX_EVENT_BYTES {
        return Err(StoreError::EventTooLarge {
            bytes: json.len(),
            max: MAX_EVENT_BYTES,
        });
    }
    Ok(json)
}

/// Appends an event inside the transaction. The outer error aborts the transaction; the
/// inner one rejects only this event.
pub(crate) fn append_event(
    conn: &Connection,
    ctx: &Ctx,
    st: &mut TxState,
    ev: &NewEvent,
) -> rusqlite::Result<Result<Accepted, StoreError>> {
    if ev.type_.is_empty() {
        return Ok(Err(StoreError::InvalidEvent("empty type".into())));
    }
    if ev.lane == Lane::Telemetry {
        return Ok(Err(StoreError::InvalidEvent(
            "events go to the alert or milestone lane, not telemetry".into(),
        )));
    }
    let id = ev.id.as_hyphenated().to_string();
    let known: Option<i64> = conn
        .prepare_cached("SELECT sequence FROM dedup WHERE event_id = ?1")?
        .query_row([&id], |r| r.get(0))
        .optional()?;
    if let Some(sequence) = known {
        st.tally.events_deduplicated += 1;
        return Ok(Ok(Accepted {
            id: ev.id,
            sequence: to_u64(sequence),
            duplicate: true,
        }));
    }
    let sequence = read_counter(conn, counter::SEQUENCE)?.saturating_add(1);
    let payload = match event_json(&ctx.source, ev, sequence) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e)),
    };
    let plan = quota::plan(
        ctx.limits,
        st.unsent.quota(st.free_disk),
        Incoming::Event(payload.len() as u64),
    );
    drop_oldest_telemetry(conn, st, plan.drop_at_least)?;
    insert_row(conn, st, ev.lane, RowKind::Event, &payload, 0)?;
    set_counter(conn, counter::SEQUENCE, sequence)?;
    conn.prepare_cached("INSERT INTO dedup (event_id, sequence, created_ms) VALUES (?1, ?2, ?3)")?
        .execute(params![id, to_i64(sequence), st.now_ms])?;
    st.last_sequence = Some(sequence);
    st.tally.events_stored += 1;
    Ok(Ok(Accepted {
        id: ev.id,
        sequence,
        duplicate: false,
    }))
}

/// Appends a telemetry batch inside the transaction, dropping the oldest telemetry (possibly
/// this batch) as the quota plan says.
pub(crate) fn append_telemetry(
    conn: &Connection,
    ctx: &Ctx,
    st: &mut TxState,
    batch: &TelemetryBatch,
) -> rusqlite::Result<()> {
    let bytes = batch.payload.len() as u64;
    let plan = quota::plan(
        ctx.limits,
        st.unsent.quota(st.free_disk),
        Incoming::Telemetry(bytes),
    );
    drop_oldest_telemetry(conn, st, plan.drop_at_least)?;
    if plan.admit {
        insert_row(
            conn,
            st,
            Lane::Telemetry,
            RowKind::Telemetry,
            &batch.payload,
            batch.readings,
        )?;
        st.tally.batches_stored += 1;
        st.tally.readings_stored += u64::from(batch.readings);
    } else {
        st.tally.dropped_rows += 1;
        st.tally.dropped_readings += u64::from(batch.readings);
    }
    Ok(())
}

fn insert_row(
    conn: &Connection,
    st: &mut TxState,
    lane: Lane,
    kind: RowKind,
    payload: &[u8],
    readings: u32,
) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO outbox (lane, kind, created_ms, bytes, readings, payload)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        lane as i64,
        kind as i64,
        st.now_ms,
        payload.len() as i64,
        readings,
        payload
    ])?;
    let row_id = conn.last_insert_rowid();
    st.max_row_id = st.max_row_id.max(row_id);
    let bytes = payload.len() as u64;
    st.unsent.add(lane, bytes, u64::from(readings));
    st.free_disk = st.free_disk.map(|f| f.saturating_sub(bytes));
    st.tally.inserted_rows += 1;
    Ok(row_id)
}

/// Deletes the oldest telemetry rows, whole rows, until at least `at_least` payload bytes are
/// freed (or no telemetry is left), and counts them as dropped.
pub(crate) fn drop_oldest_telemetry(
    conn: &Connection,
    st: &mut TxState,
    at_least: u64,
) -> rusqlite::Result<()> {
    if at_least == 0 {
        return Ok(());
    }
    let mut cover = Cover::new(at_least);
    let (mut through, mut rows, mut bytes, mut readings) = (None, 0u64, 0u64, 0u64);
    {
        let mut stmt = conn.prepare_cached(
            "SELECT row_id, bytes, readings FROM outbox WHERE lane = ?1 ORDER BY row_id",
        )?;
        let mut q = stmt.query([LANE_TELEMETRY])?;
        while !cover.done() {
            let Some(r) = q.next()? else { break };
            let b = to_u64(r.get(1)?);
            cover.take(b);
            through = Some(r.get::<_, i64>(0)?);
            rows += 1;
            bytes += b;
            readings += to_u64(r.get(2)?);
        }
    }
    if let Some(through) = through {
        conn.prepare_cached("DELETE FROM outbox WHERE lane = ?1 AND row_id <= ?2")?
            .execute(params![LANE_TELEMETRY, through])?;
        st.unsent.remove(Lane::Telemetry, rows, bytes, readings);
        st.free_disk = st.free_disk.map(|f| f.saturating_add(bytes));
        st.tally.dropped_rows += rows;
        st.tally.dropped_readings += readings;
        st.tally.deleted_rows += rows;
    }
    Ok(())
}

/// Fetch queries in lane order. `?1` cursor, `?2` row limit, `?3` live_since_ms for telemetry
/// and [`EARLIEST_VALID_MS`] for events. Live telemetry is found through `(lane, created_ms)`
/// (it is the newest, small part); backlog is walked through `(lane, row_id)` from the cursor.
///
/// An event lane stops before its first row committed while the clock was not known
/// (`created_ms < EARLIEST_VALID_MS`): its CloudEvent `time` may still be a monotonic stamp,
/// which the sweep re-stamps once the time is known (see [`sweep`]). Stopping there rather
/// than skipping the row keeps the lane's order and the uplink's cursor valid.
const FETCH_ALERT: &str = "SELECT row_id, lane, kind, created_ms, readings, payload FROM outbox
    WHERE lane = 0 AND row_id > ?1 AND row_id < coalesce((SELECT min(row_id) FROM outbox
        WHERE lane = 0 AND created_ms < ?3), 9223372036854775807)
    ORDER BY row_id LIMIT ?2";
const FETCH_MILESTONE: &str = "SELECT row_id, lane, kind, created_ms, readings, payload FROM outbox
    WHERE lane = 1 AND row_id > ?1 AND row_id < coalesce((SELECT min(row_id) FROM outbox
        WHERE lane = 1 AND created_ms < ?3), 9223372036854775807)
    ORDER BY row_id LIMIT ?2";
const FETCH_LIVE: &str = "SELECT row_id, lane, kind, created_ms, readings, payload
    FROM outbox INDEXED BY outbox_lane_created
    WHERE lane = 2 AND created_ms >= ?3 AND row_id > ?1 ORDER BY row_id LIMIT ?2";
const FETCH_BACKLOG: &str = "SELECT row_id, lane, kind, created_ms, readings, payload
    FROM outbox INDEXED BY outbox_lane_row
    WHERE lane = 2 AND created_ms < ?3 AND row_id > ?1 ORDER BY row_id LIMIT ?2";

/// The next unsent rows in lane order (see `Store::fetch`).
pub(crate) fn fetch(conn: &Connection, f: &Fetch) -> rusqlite::Result<Vec<OutboxRow>> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let parts = [
        (FETCH_ALERT, f.after.alert, EARLIEST_VALID_MS),
        (FETCH_MILESTONE, f.after.milestone, EARLIEST_VALID_MS),
        (FETCH_LIVE, f.after.live, f.live_since_ms),
        (FETCH_BACKLOG, f.after.backlog, f.live_since_ms),
    ];
    for (sql, after, third) in parts {
        let remaining = f.max_rows.saturating_sub(out.len());
        if remaining == 0 {
            break;
        }
        let mut stmt = conn.prepare_cached(sql)?;
        let limit = to_i64(remaining as u64);
        let mut rows = stmt.query(params![after, limit, third])?;
        while let Some(r) = rows.next()? {
            let row = outbox_row(r)?;
            if !out.is_empty() && bytes.saturating_add(row.payload.len()) > f.max_bytes {
                return Ok(out);
            }
            bytes = bytes.saturating_add(row.payload.len());
            out.push(row);
        }
    }
    Ok(out)
}

fn outbox_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    let lane: i64 = r.get(1)?;
    let kind: i64 = r.get(2)?;
    Ok(OutboxRow {
        row_id: r.get(0)?,
        lane: Lane::from_i64(lane).ok_or(rusqlite::Error::IntegralValueOutOfRange(1, lane))?,
        kind: RowKind::from_i64(kind).ok_or(rusqlite::Error::IntegralValueOutOfRange(2, kind))?,
        created_ms: r.get(3)?,
        readings: r.get(4)?,
        payload: r.get(5)?,
    })
}

/// Deletes acknowledged rows and records the PUBACK time.
pub(crate) fn ack(
    conn: &Connection,
    st: &mut TxState,
    row_ids: &[i64],
    now_ms: Timestamp,
) -> rusqlite::Result<()> {
    {
        let mut stmt = conn.prepare_cached(
            "DELETE FROM outbox WHERE row_id = ?1 RETURNING lane, bytes, readings",
        )?;
        for id in row_ids {
            let mut rows = stmt.query([id])?;
            while let Some(r) = rows.next()? {
                if let Some(lane) = Lane::from_i64(r.get(0)?) {
                    let bytes = to_u64(r.get(1)?);
                    st.unsent.remove(lane, 1, bytes, to_u64(r.get(2)?));
                    st.free_disk = st.free_disk.map(|f| f.saturating_add(bytes));
                }
                st.tally.deleted_rows += 1;
            }
        }
    }
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
    )?
    .execute(params![meta_key::LAST_PUBACK_MS, now_ms])?;
    Ok(())
}

/// Marks rows committed by an earlier process before its clock was known: their monotonic
/// stamps (`1 ..< EARLIEST_VALID_MS`) were on that process's base and cannot be mapped to
/// UTC by this one, so they become 0 ("time unknown"). Run once per process, at the first
/// open, before this process writes anything. Returns the rows marked.
pub(crate) fn mark_previous_run(conn: &Connection) -> rusqlite::Result<usize> {
    let outbox = conn.execute(
        "UPDATE outbox SET created_ms = 0 WHERE created_ms > 0 AND created_ms < ?1",
        [EARLIEST_VALID_MS],
    )?;
    conn.execute(
        "UPDATE dedup SET created_ms = 0 WHERE created_ms > 0 AND created_ms < ?1",
        [EARLIEST_VALID_MS],
    )?;
    Ok(outbox)
}

/// Persists what the clock knows in `meta`, for `waymark status` (which reads the file).
pub(crate) fn write_clock_state(
    conn: &Connection,
    state: &ClockState,
    now_ms: Timestamp,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?;
    stmt.execute(params![meta_key::CLOCK_SOURCE, state.source.code()])?;
    stmt.execute(params![meta_key::CLOCK_OFFSET_MS, state.offset_ms])?;
    stmt.execute(params![meta_key::CLOCK_LAST_SYNC_MS, state.last_sync_ms])?;
    stmt.execute(params![meta_key::CLOCK_UPDATED_MS, now_ms])?;
    Ok(())
}

/// Gives every event committed before the clock was known a real CloudEvent `time`: a
/// monotonic stamp of this process is mapped with `clock`; one from an earlier process (row
/// marked 0, see [`mark_previous_run`]) or without a clock gets `now` (the first known time,
/// an estimate; counted in the returned number and logged). Runs only once `now` is valid.
fn restamp_events(
    conn: &Connection,
    st: &mut TxState,
    clock: Option<&Clock>,
) -> rusqlite::Result<u64> {
    let rows: Vec<(i64, i64, i64, Vec<u8>)> = {
        let mut stmt = conn.prepare_cached(
            "SELECT row_id, lane, created_ms, payload FROM outbox
             WHERE kind = ?1 AND created_ms < ?2",
        )?;
        stmt.query_map(params![RowKind::Event as i64, EARLIEST_VALID_MS], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?
    };
    let mut estimated = 0;
    for (row_id, lane, created_ms, payload) in rows {
        let Ok(mut ce) = serde_json::from_slice::<CloudEvent>(&payload) else {
            continue;
        };
        let Ok(t) = waymark_wire::time::parse_rfc3339_ms(&ce.time) else {
            continue;
        };
        if t >= EARLIEST_VALID_MS {
            continue;
        }
        let mapped = (created_ms > 0 && t > 0)
            .then(|| clock.and_then(|c| c.restamp(t)))
            .flatten()
            .filter(|m| *m >= EARLIEST_VALID_MS && *m <= st.now_ms);
        let time = mapped.unwrap_or_else(|| {
            estimated += 1;
            st.now_ms
        });
        ce.time = format_rfc3339_ms(time);
        let Ok(json) = serde_json::to_vec(&ce) else {
            continue;
        };
        let (old, new) = (payload.len() as u64, json.len() as u64);
        conn.prepare_cached("UPDATE outbox SET payload = ?2, bytes = ?3 WHERE row_id = ?1")?
            .execute(params![row_id, json, to_i64(new)])?;
        if let Some(lane) = Lane::from_i64(lane) {
            let l = &mut st.unsent.lanes[lane.index()];
            l.bytes = l.bytes.saturating_sub(old).saturating_add(new);
        }
    }
    Ok(estimated)
}

/// The periodic sweep: persists the clock state; once the clock is valid, re-stamps rows
/// written before it was (event `time`s, see [`restamp_events`]; `created_ms` mapped with the
/// clock, or set to now for rows of an earlier process), expires old events, prunes `dedup`.
pub(crate) fn sweep(
    conn: &Connection,
    ctx: &Ctx,
    st: &mut TxState,
    clock: Option<&Clock>,
) -> rusqlite::Result<()> {
    let now = st.now_ms;
    if let Some(c) = clock {
        write_clock_state(conn, &c.source(), now)?;
    }
    if now < EARLIEST_VALID_MS {
        return Ok(());
    }
    let estimated = restamp_events(conn, st, clock)?;
    if estimated > 0 {
        tracing::warn!(
            events = estimated,
            "Events accepted before the time was known, in an earlier run, were stamped with \
             the first known time."
        );
    }
    // `created_ms + offset` maps a monotonic stamp of this process; 0 (earlier process or
    // unknown) becomes now.
    let offset = clock.and_then(|c| c.restamp(0));
    for table in ["outbox", "dedup"] {
        conn.execute(
            &format!(
                "UPDATE {table} SET created_ms = CASE
                     WHEN created_ms > 0 AND ?3 IS NOT NULL THEN min(created_ms + ?3, ?1)
                     ELSE ?1 END
                 WHERE created_ms < ?2"
            ),
            params![now, EARLIEST_VALID_MS, offset],
        )?;
    }
    if ctx.event_max_age_s > 0 {
        let cutoff = now.saturating_sub(to_i64(ctx.event_max_age_s).saturating_mul(1000));
        let mut stmt = conn.prepare_cached(&format!(
            "DELETE FROM outbox WHERE lane IN ({EVENT_LANES_SQL}) AND created_ms < ?1
             RETURNING lane, bytes"
        ))?;
        let mut rows = stmt.query([cutoff])?;
        while let Some(r) = rows.next()? {
            if let Some(lane) = Lane::from_i64(r.get(0)?) {
                let bytes = to_u64(r.get(1)?);
                st.unsent.remove(lane, 1, bytes, 0);
                st.free_disk = st.free_disk.map(|f| f.saturating_add(bytes));
            }
            st.tally.expired_events += 1;
            st.tally.deleted_rows += 1;
        }
    }
    let cutoff = now.saturating_sub(to_i64(ctx.dedup_retention_s).saturating_mul(1000));
    conn.execute("DELETE FROM dedup WHERE created_ms < ?1", [cutoff])?;
    Ok(())
}

/// A one-page write that proves a reopened database takes writes.
pub(crate) fn probe(conn: &Connection, now_ms: Timestamp) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![meta_key::LAST_PROBE_MS, now_ms],
    )?;
    Ok(())
}

/// Last steps of every transaction: persistent counters, and returning free pages to the
/// filesystem after large deletes.
pub(crate) fn finish_tx(conn: &Connection, st: &TxState, page_size: u64) -> rusqlite::Result<()> {
    add_counter(conn, counter::TELEMETRY_DROPPED_ROWS, st.tally.dropped_rows)?;
    add_counter(
        conn,
        counter::TELEMETRY_DROPPED_READINGS,
        st.tally.dropped_readings,
    )?;
    add_counter(conn, counter::EVENTS_EXPIRED, st.tally.expired_events)?;
    if st.tally.deleted_rows > 0 && page_size > 0 {
        let free: i64 = conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
        let free = to_u64(free);
        if free.saturating_mul(page_size) > VACUUM_ABOVE_BYTES {
            let pages = free - VACUUM_KEEP_BYTES / page_size;
            // One result row per page freed: step it to the end.
            let mut stmt = conn.prepare(&format!("PRAGMA incremental_vacuum({pages})"))?;
            let mut rows = stmt.query([])?;
            while rows.next()?.is_some() {}
        }
    }
    Ok(())
}

/// Stats inside the writer's transaction; `unsent` is the in-memory view.
pub(crate) fn stats(
    conn: &Connection,
    unsent: &Unsent,
    path: &Path,
) -> rusqlite::Result<StoreStats> {
    let mut lanes = [LaneStats::default(); 3];
    for lane in Lane::ALL {
        let u = unsent.lanes[lane.index()];
        let oldest: Option<i64> = conn
            .prepare_cached("SELECT min(created_ms) FROM outbox WHERE lane = ?1")?
            .query_row([lane as i64], |r| r.get(0))?;
        lanes[lane.index()] = LaneStats {
            rows: u.rows,
            bytes: u.bytes,
            readings: u.readings,
            oldest_created_ms: oldest,
        };
    }
    let [alert, milestone, telemetry] = lanes;
    let meta = |key: &str| -> rusqlite::Result<Option<i64>> {
        Ok(conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?
            .flatten())
    };
    let last_puback_ms = meta(meta_key::LAST_PUBACK_MS)?;
    let clock = match meta(meta_key::CLOCK_UPDATED_MS)? {
        Some(updated_ms) => Some(StoredClock {
            source: ClockSource::from_code(meta(meta_key::CLOCK_SOURCE)?.unwrap_or(0)),
            offset_ms: meta(meta_key::CLOCK_OFFSET_MS)?,
            last_sync_ms: meta(meta_key::CLOCK_LAST_SYNC_MS)?,
            updated_ms,
        }),
        None => None,
    };
    Ok(StoreStats {
        alert,
        milestone,
        telemetry,
        counters: StoreCounters {
            telemetry_dropped_rows: read_counter(conn, counter::TELEMETRY_DROPPED_ROWS)?,
            telemetry_dropped_readings: read_counter(conn, counter::TELEMETRY_DROPPED_READINGS)?,
            events_expired: read_counter(conn, counter::EVENTS_EXPIRED)?,
        },
        last_puback_ms,
        clock,
        next_sequence: read_counter(conn, counter::SEQUENCE)?.saturating_add(1),
        db_file_bytes: file_bytes(path),
        held_batches: 0,
        held_readings: 0,
        health: None,
    })
}

/// `path` with `suffix` appended to its file name (`buffer.db` + `-wal`).
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

/// Size of the database file plus its WAL.
pub(crate) fn file_bytes(path: &Path) -> u64 {
    let len = |p: &Path| fs::metadata(p).map_or(0, |m| m.len());
    len(path) + len(&with_suffix(path, "-wal"))
}

/// UTC stamp for set-aside names: `20261123T075250Z`.
pub(crate) fn corrupt_stamp(now_ms: Timestamp) -> String {
    let t = format_rfc3339_ms(now_ms); // 2026-11-23T07:52:50.123Z
    let digits: String = t
        .chars()
        .take(19)
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect();
    format!("{digits}Z")
}

/// Renames the database and its `-wal` / `-shm` to `<name>.corrupt-<stamp>` (plus `-N` if
/// taken), keeping SQLite's suffixes so the set-aside file opens with its WAL. Returns the new
/// path of the main file.
pub(crate) fn set_aside(path: &Path, stamp: &str) -> io::Result<PathBuf> {
    let base = with_suffix(path, &format!(".corrupt-{stamp}"));
    let mut target = base.clone();
    let mut n = 1;
    while fs::symlink_metadata(&target).is_ok() {
        target = with_suffix(&base, &format!("-{n}"));
        n += 1;
    }
    fs::rename(path, &target)?;
    for suffix in ["-wal", "-shm"] {
        match fs::rename(with_suffix(path, suffix), with_suffix(&target, suffix)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    // Make the renames durable before a fresh file takes the name.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(target)
}

/// Counters read from a set-aside file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Salvage {
    /// Highest sequence number found (counter or dedup).
    pub sequence: Option<u64>,
    /// Highest row id found.
    pub max_row_id: Option<i64>,
}

/// Opens a set-aside file read-only for salvage. `writable_schema` makes SQLite read a
/// truncated file (shorter than its header says) instead of refusing it as a whole; the
/// connection is read-only, so nothing is written to it.
fn open_salvage(old: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        old,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.execute_batch("PRAGMA writable_schema = ON;")?;
    Ok(conn)
}

/// Reads what can be read of the sequence counter and row ids of a set-aside file.
pub(crate) fn salvage_counters(old: &Path) -> Salvage {
    let Ok(conn) = open_salvage(old) else {
        return Salvage::default();
    };
    let read = |sql: &str| -> Option<i64> {
        conn.query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
            .ok()
            .flatten()
    };
    let sequence = [
        read("SELECT value FROM counters WHERE name = 'sequence'"),
        read("SELECT max(sequence) FROM dedup"),
    ]
    .into_iter()
    .flatten()
    .max()
    .map(to_u64);
    let max_row_id = [
        read("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'"),
        read("SELECT max(row_id) FROM outbox"),
    ]
    .into_iter()
    .flatten()
    .max();
    Salvage {
        sequence,
        max_row_id,
    }
}

/// Copies every readable, valid unsent event of a set-aside file into the transaction, in
/// order, and remembers their ids in `dedup`. Stops quietly at the first unreadable row.
/// Returns the highest sequence number among them.
pub(crate) fn copy_salvaged_events(
    conn: &Connection,
    st: &mut TxState,
    old: &Path,
) -> rusqlite::Result<Option<u64>> {
    let Ok(old_conn) = open_salvage(old) else {
        return Ok(None);
    };
    let Ok(mut stmt) =
        old_conn.prepare("SELECT lane, payload FROM outbox WHERE kind = 0 ORDER BY row_id")
    else {
        return Ok(None);
    };
    let Ok(mut rows) = stmt.query([]) else {
        return Ok(None);
    };
    let mut max_sequence = None;
    loop {
        let (lane, payload): (i64, Vec<u8>) = match rows.next() {
            Ok(Some(r)) => match (r.get(0), r.get(1)) {
                (Ok(l), Ok(p)) => (l, p),
                _ => continue,
            },
            Ok(None) | Err(_) => break,
        };
        let lane = match Lane::from_i64(lane) {
            Some(l @ (Lane::Alert | Lane::Milestone)) => l,
            _ => continue,
        };
        let Ok(ev) = CloudEvent::from_json(&payload) else {
            continue;
        };
        let Ok(sequence) = ev.sequence_number() else {
            continue;
        };
        let id = ev.id.as_hyphenated().to_string();
        let inserted = conn
            .prepare_cached(
                "INSERT OR IGNORE INTO dedup (event_id, sequence, created_ms) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![id, to_i64(sequence), st.now_ms])?;
        if inserted == 0 {
            continue; // the same event twice in a damaged table
        }
        insert_row(conn, st, lane, RowKind::Event, &payload, 0)?;
        st.tally.events_salvaged += 1;
        max_sequence = max_sequence.max(Some(sequence));
    }
    Ok(max_sequence)
}

/// After a fresh database replaced a corrupt one: row ids continue above `max_row_id` and the
/// sequence counter is at least `sequence`.
pub(crate) fn seed(conn: &Connection, max_row_id: i64, sequence: u64) -> rusqlite::Result<()> {
    if max_row_id > 0 {
        conn.execute("DELETE FROM sqlite_sequence WHERE name = 'outbox'", [])?;
        conn.execute(
            "INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', max(?1, (SELECT ifnull(max(row_id), 0) FROM outbox)))",
            [max_row_id],
        )?;
    }
    if sequence > read_counter(conn, counter::SEQUENCE)? {
        set_counter(conn, counter::SEQUENCE, sequence)?;
    }
    Ok(())
}

/// Raises the sequence counter to `sequence` if it is below.
pub(crate) fn raise_sequence(conn: &Connection, sequence: u64) -> rusqlite::Result<()> {
    seed(conn, 0, sequence)
}

/// A fresh UUIDv7 for events the store makes itself.
pub(crate) fn new_event_id() -> Uuid {
    Uuid::now_v7()
}

/// See [`super::read_stats`].
pub(crate) fn read_stats(path: &Path) -> Result<StoreStats, StoreError> {
    let read_err = |source| StoreError::Read {
        path: path.to_path_buf(),
        source,
    };
    let conn = open_read_only(path).map_err(read_err)?;
    let version: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(read_err)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version == 0 {
        return Err(read_err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_NOTADB),
            Some("not a Waymark store (no schema version)".into()),
        )));
    }
    let unsent = load_unsent(&conn).map_err(read_err)?;
    stats(&conn, &unsent, path).map_err(read_err)
}

/// Opens read-only. A WAL database needs its `-shm`; when the daemon is not running and the
/// directory is not writable for us, that fails, and with no `-wal` left the file is complete,
/// so it is opened `immutable` instead.
fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    if fs::metadata(path).is_err() {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!("{} does not exist", path.display())),
        ));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    match conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(_) => Ok(conn),
        Err(e)
            if Failure::of(&e) == Failure::CantOpen
                && fs::metadata(with_suffix(path, "-wal")).is_err() =>
        {
            drop(conn);
            let uri = format!("file:{}?immutable=1", uri_path(path));
            let conn = Connection::open_with_flags(&uri, flags | OpenFlags::SQLITE_OPEN_URI)?;
            Ok(conn)
        }
        Err(e) => Err(e),
    }
}

/// Percent-encodes a path for a `file:` URI.
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_is_compact_utc() {
        assert_eq!(corrupt_stamp(1_795_420_370_123), "20261123T075250Z");
    }

    #[test]
    fn uri_escapes() {
        assert_eq!(
            uri_path(Path::new("/a b/c?d#e%.db")),
            "/a%20b/c%3Fd%23e%25.db"
        );
    }

    #[test]
    fn classifies_errors() {
        let e = |code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
        assert_eq!(Failure::of(&e(rusqlite::ffi::SQLITE_FULL)), Failure::Full);
        assert_eq!(
            Failure::of(&e(rusqlite::ffi::SQLITE_READONLY)),
            Failure::ReadOnly
        );
        assert_eq!(
            Failure::of(&e(rusqlite::ffi::SQLITE_NOTADB)),
            Failure::Corrupt
        );
        assert_eq!(
            Failure::of(&e(rusqlite::ffi::SQLITE_CANTOPEN)),
            Failure::CantOpen
        );
        assert!(Failure::ReadOnly.needs_reopen() && !Failure::Full.needs_reopen());
        assert!(!Failure::ReadOnly.drops_connection() && Failure::Io.drops_connection());
        let io = io::Error::from(io::ErrorKind::ReadOnlyFilesystem);
        assert_eq!(Failure::of_io(&io), Failure::ReadOnly);
    }
}
