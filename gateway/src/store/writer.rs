//! The writer thread: the only owner of the connection.
//!
//! It takes commands from a channel in order, drains up to [`MAX_GROUP`] of them into one
//! transaction (group commit: one fsync), and answers them only after the `COMMIT`. If the
//! transaction fails, nothing of it happened (`ROLLBACK`), and the commands are retried one
//! by one in degraded mode:
//!
//! - events are tried alone and refused with [`StoreError::Unavailable`] if that fails;
//! - telemetry goes to the bounded in-memory [`Hold`];
//! - fetch, stats and ack are tried alone (reads usually still work).
//!
//! While degraded, the store retries with backoff: it reopens the file if the error calls for
//! it (read-only, I/O, corrupt), then commits the held telemetry; the first success ends the
//! degraded mode. A disk-full transaction first deletes old telemetry to make room (events win
//! over telemetry) and is retried once before the store degrades.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;
use tokio::sync::{Notify, oneshot};
use waymark_wire::time::EARLIEST_VALID_MS;
use waymark_wire::{CloudEvent, Timestamp};

use super::hold::{Backoff, Dropped, HOLD_MAX_BYTES, Hold};
use super::quota::{self, Limits};
use super::sqlite::{self, Ctx, Failure, OpenError, TxState, Unsent};
use super::{Accepted, Fetch, Lane, NewEvent, OutboxRow, StoreError, StoreStats, TelemetryBatch};
use crate::config::StoreConfig;
use crate::health::{HEARTBEAT_EVERY, Health, HealthState};

/// Most commands committed in one transaction.
pub(crate) const MAX_GROUP: usize = 512;
/// How often old events expire and `dedup` is pruned.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// While the store clock is not valid, how often to look whether it became valid (then the
/// sweep runs at once and releases the events held back for their `time`).
const CLOCK_CHECK_EVERY: Duration = Duration::from_secs(1);
/// First retry of a store that cannot write ...
const RETRY_MIN: Duration = Duration::from_millis(250);
/// ... doubling up to this.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Telemetry dropped for space is logged at most this often (with the totals).
const DROP_LOG_EVERY: Duration = Duration::from_secs(60);
/// A disk-full transaction frees at least this much old telemetry before its retry.
const MAKE_ROOM_MIN_BYTES: u64 = 256 * 1024;
/// Component name in [`Health`].
const HEALTH_NAME: &str = "store";
/// Type of the alert committed after a corrupt file was set aside.
pub(crate) const STORE_CORRUPTED: &str = "waymark.alert.store_corrupted";

/// Wall clock in UTC ms.
pub(crate) type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Knobs that tests turn; production uses [`Options::default`].
#[derive(Clone)]
pub(crate) struct Options {
    /// The store's wall clock (`created_ms`, PUBACK-independent ages, health times).
    pub clock: Clock,
    /// Open the database with `SQLITE_OPEN_READONLY`, as SQLite itself does when the file
    /// cannot be opened for writing.
    pub force_read_only: Arc<AtomicBool>,
    /// Byte budget of the telemetry hold.
    pub hold_max_bytes: usize,
    /// The gateway clock, when the store runs in the gateway: re-stamps rows committed before
    /// the time was known and is persisted for `waymark status`.
    pub time: Option<crate::clock::Clock>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clock: Arc::new(system_now_ms),
            force_read_only: Arc::new(AtomicBool::new(false)),
            hold_max_bytes: HOLD_MAX_BYTES,
            time: None,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("force_read_only", &self.force_read_only)
            .field("hold_max_bytes", &self.hold_max_bytes)
            .finish_non_exhaustive()
    }
}

fn system_now_ms() -> Timestamp {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
        Timestamp::try_from(d.as_millis()).unwrap_or(Timestamp::MAX)
    })
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A request to the writer. `out` is filled inside a transaction and sent only after it
/// commits.
#[derive(Debug)]
pub(crate) enum Command {
    /// [`super::Store::append_event`].
    AppendEvent {
        ev: NewEvent,
        reply: Reply<Accepted>,
        out: Option<Result<Accepted, StoreError>>,
    },
    /// [`super::Store::append_telemetry`].
    AppendTelemetry {
        batch: TelemetryBatch,
        reply: Reply<()>,
        out: Option<()>,
    },
    /// [`super::Store::fetch`].
    Fetch {
        fetch: Fetch,
        reply: Reply<Vec<OutboxRow>>,
        out: Option<Vec<OutboxRow>>,
    },
    /// [`super::Store::ack`].
    Ack {
        row_ids: Vec<i64>,
        now_ms: Timestamp,
        reply: Reply<()>,
        out: Option<()>,
    },
    /// [`super::Store::stats`].
    Stats {
        reply: Reply<StoreStats>,
        out: Option<StoreStats>,
    },
    /// [`super::Store::close`].
    Close { reply: Reply<()> },
    /// Test hooks.
    #[cfg(test)]
    Hook {
        hook: Hook,
        reply: oneshot::Sender<u64>,
    },
}

/// Test hooks, executed in channel order.
#[cfg(test)]
#[derive(Debug)]
pub(crate) enum Hook {
    /// Tell `entered`, then block the writer until `open` receives or its sender is dropped.
    /// Commands sent after `entered` queue up and are drained together afterwards.
    Gate {
        /// Signalled once the writer is blocked (its current group is already drained).
        entered: mpsc::Sender<()>,
        /// Released by the test.
        open: mpsc::Receiver<()>,
    },
    /// `PRAGMA max_page_count = n` on the current connection (SQLITE_FULL beyond it);
    /// answers the effective limit.
    SetMaxPageCount(u64),
    /// Run the degraded-mode retry now, as the timer would.
    RetryNow,
    /// Run the periodic sweep now.
    Sweep,
    /// Answers the number of commits so far.
    Commits,
}

fn send<T>(reply: oneshot::Sender<T>, value: T) {
    if reply.send(value).is_err() {
        tracing::trace!("Store requester went away before the answer.");
    }
}

impl Command {
    fn unavailable(reason: &str) -> StoreError {
        StoreError::Unavailable {
            reason: reason.to_string(),
        }
    }

    /// Sends the result filled in by a committed transaction, or `Unavailable(reason)`.
    fn respond(self, reason: &str) {
        match self {
            Command::AppendEvent { reply, out, .. } => {
                send(reply, out.unwrap_or_else(|| Err(Self::unavailable(reason))));
            }
            Command::AppendTelemetry { reply, out, .. } | Command::Ack { reply, out, .. } => {
                send(reply, out.ok_or_else(|| Self::unavailable(reason)));
            }
            Command::Fetch { reply, out, .. } => {
                send(reply, out.ok_or_else(|| Self::unavailable(reason)));
            }
            Command::Stats { reply, out } => {
                send(reply, out.ok_or_else(|| Self::unavailable(reason)))
            }
            Command::Close { reply } => send(reply, Ok(())),
            #[cfg(test)]
            Command::Hook { reply, .. } => send(reply, 0),
        }
    }

    /// Forgets results of a transaction that rolled back.
    fn clear(&mut self) {
        match self {
            Command::AppendEvent { out, .. } => *out = None,
            Command::AppendTelemetry { out, .. } | Command::Ack { out, .. } => *out = None,
            Command::Fetch { out, .. } => *out = None,
            Command::Stats { out, .. } => *out = None,
            Command::Close { .. } => {}
            #[cfg(test)]
            Command::Hook { .. } => {}
        }
    }

    /// Payload bytes the command would insert.
    fn insert_bytes(&self) -> u64 {
        match self {
            Command::AppendEvent { ev, .. } => {
                serde_json::to_vec(&ev.data).map_or(0, |v| v.len() as u64) + 512
            }
            Command::AppendTelemetry { batch, .. } => batch.payload.len() as u64,
            _ => 0,
        }
    }
}

/// Spawns the writer thread; returns once the database was opened (or the store started
/// degraded).
pub(crate) fn spawn(
    cfg: &StoreConfig,
    vehicle_id: &str,
    health: Arc<Health>,
    committed: Arc<Notify>,
    options: Options,
) -> Result<mpsc::Sender<Command>, StoreError> {
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let cfg = cfg.clone();
    let source = CloudEvent::source_for(vehicle_id);
    thread::Builder::new()
        .name("waymark-store".into())
        .spawn(
            move || match Writer::start(&cfg, source, health, committed, options) {
                Ok(writer) => {
                    if ready_tx.send(Ok(())).is_ok() {
                        writer.run(&rx);
                    }
                }
                Err(e) => {
                    if ready_tx.send(Err(e)).is_err() {
                        tracing::trace!("Store opener went away.");
                    }
                }
            },
        )
        .map_err(StoreError::Spawn)?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(tx),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(StoreError::Closed),
    }
}

/// Why the store cannot write.
#[derive(Debug, Clone)]
struct Degraded {
    failure: Failure,
    detail: String,
}

/// Work to finish after a corrupt file was set aside; committed (with retries) before
/// anything else, so no event takes a sequence number below the salvaged one.
#[derive(Debug, Clone)]
struct Recovery {
    set_aside: PathBuf,
    reason: String,
    salvage: sqlite::Salvage,
    /// Highest sequence number and row id handed out by this process before the file was
    /// found corrupt (none at start-up).
    known_sequence: Option<u64>,
    known_row_id: i64,
    alert_id: uuid::Uuid,
}

/// Extra steps of a transaction besides its commands.
#[derive(Debug, Clone, Copy, Default)]
struct Extras {
    /// Commit the held telemetry first.
    held: bool,
    /// Run the periodic sweep.
    sweep: bool,
    /// Write a probe row (after reopening).
    probe: bool,
}

/// Rate-limits the warning about telemetry dropped for space.
#[derive(Debug, Default)]
struct DropLog {
    rows: u64,
    readings: u64,
    last: Option<Instant>,
}

impl DropLog {
    fn record(&mut self, now: Instant, rows: u64, readings: u64) -> Option<(u64, u64)> {
        self.rows += rows;
        self.readings += readings;
        if self.rows == 0
            || self
                .last
                .is_some_and(|t| now.duration_since(t) < DROP_LOG_EVERY)
        {
            return None;
        }
        self.last = Some(now);
        Some((
            std::mem::take(&mut self.rows),
            std::mem::take(&mut self.readings),
        ))
    }
}

struct Writer {
    path: PathBuf,
    dir: PathBuf,
    ctx: Ctx,
    health: Arc<Health>,
    committed: Arc<Notify>,
    options: Options,
    conn: Option<Connection>,
    page_size: u64,
    /// Unsent rows as committed.
    unsent: Unsent,
    /// Whether the limits held after the last measured commit.
    within_limits: bool,
    /// Highest sequence number given, once a database was opened in this process.
    known_sequence: Option<u64>,
    /// Highest row id handed out in this process (cursors of the uplink may be up to it).
    known_row_id: i64,
    hold: Hold,
    recovery: Option<Recovery>,
    degraded: Option<Degraded>,
    backoff: Backoff,
    retry_at: Option<Instant>,
    next_sweep: Instant,
    /// Whether the store clock was seen valid (then a sweep re-stamped what came before).
    clock_valid: bool,
    /// While it is not: when to look again.
    next_clock_check: Instant,
    /// Rows of earlier processes were marked (once per process, see `mark_previous_run`).
    previous_run_marked: bool,
    drop_log: DropLog,
    reported: Option<(HealthState, Option<String>)>,
    commits: u64,
}

impl Writer {
    fn start(
        cfg: &StoreConfig,
        source: String,
        health: Arc<Health>,
        committed: Arc<Notify>,
        options: Options,
    ) -> Result<Writer, StoreError> {
        let dir = match cfg.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut w = Writer {
            path: cfg.path.clone(),
            dir,
            ctx: Ctx {
                limits: Limits {
                    max_bytes: cfg.max_bytes,
                    min_free_disk_bytes: cfg.min_free_disk_bytes,
                },
                source,
                event_max_age_s: cfg.event_max_age_s,
                dedup_retention_s: cfg.dedup_retention_s,
            },
            health,
            committed,
            hold: Hold::new(options.hold_max_bytes),
            options,
            conn: None,
            page_size: 4096,
            unsent: Unsent::default(),
            within_limits: true,
            known_sequence: None,
            known_row_id: 0,
            recovery: None,
            degraded: None,
            backoff: Backoff::new(RETRY_MIN, RETRY_MAX),
            retry_at: None,
            next_sweep: Instant::now() + SWEEP_EVERY,
            clock_valid: false,
            next_clock_check: Instant::now() + CLOCK_CHECK_EVERY,
            previous_run_marked: false,
            drop_log: DropLog::default(),
            reported: None,
            commits: 0,
        };
        match w.connect() {
            Ok(()) => {
                tracing::info!(
                    path = %w.path.display(),
                    rows = w.unsent.lanes.iter().map(|l| l.rows).sum::<u64>(),
                    bytes = w.unsent.total_bytes(),
                    "Store opened."
                );
                w.maintain(Extras {
                    sweep: true,
                    ..Extras::default()
                });
            }
            Err(OpenError::TooNew(found)) => {
                return Err(StoreError::SchemaTooNew {
                    path: w.path.clone(),
                    found,
                    supported: sqlite::SCHEMA_VERSION,
                });
            }
            Err(OpenError::Unavailable { failure, detail }) => w.degrade(failure, detail),
            Err(OpenError::Corrupt(detail)) => w.degrade(Failure::Corrupt, detail),
        }
        w.report_health();
        Ok(w)
    }

    fn now_ms(&self) -> Timestamp {
        (self.options.clock)()
    }

    fn run(mut self, rx: &mpsc::Receiver<Command>) {
        loop {
            // Liveness for the systemd watchdog: beats on every turn, and the wait is capped so
            // that an idle writer still beats; a writer stuck in a call stops beating.
            self.health.heartbeats.store.beat();
            let wait = self
                .next_deadline()
                .saturating_duration_since(Instant::now())
                .min(HEARTBEAT_EVERY);
            let first = match rx.recv_timeout(wait) {
                Ok(c) => c,
                Err(RecvTimeoutError::Timeout) => {
                    self.on_timer();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.shutdown();
                    return;
                }
            };
            let mut group = Vec::with_capacity(16);
            group.push(first);
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(c) => group.push(c),
                    Err(_) => break,
                }
            }
            if self.handle(group) {
                return;
            }
            if Instant::now() >= self.next_deadline() {
                self.on_timer();
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        let sweep = if self.clock_valid {
            self.next_sweep
        } else {
            self.next_sweep.min(self.next_clock_check)
        };
        self.retry_at.map_or(sweep, |r| r.min(sweep))
    }

    /// Handles a drained group in order; `Close` (and in tests, hooks) split it. Returns true
    /// after `Close`.
    fn handle(&mut self, group: Vec<Command>) -> bool {
        let mut batch = Vec::with_capacity(group.len());
        for cmd in group {
            match cmd {
                Command::Close { reply } => {
                    self.handle_group(std::mem::take(&mut batch));
                    self.shutdown();
                    send(reply, Ok(()));
                    // Later commands are dropped: their callers get `Closed`.
                    return true;
                }
                #[cfg(test)]
                Command::Hook { hook, reply } => {
                    self.handle_group(std::mem::take(&mut batch));
                    let v = self.run_hook(hook);
                    send(reply, v);
                }
                cmd => batch.push(cmd),
            }
        }
        self.handle_group(batch);
        false
    }

    fn retry_due(&self, now: Instant) -> bool {
        self.retry_at.is_some_and(|t| now >= t)
    }

    /// Group commit of `cmds` (see the module docs for the failure path).
    fn handle_group(&mut self, mut cmds: Vec<Command>) {
        let now = Instant::now();
        if cmds.is_empty() && !(self.retry_due(now) && self.has_pending()) {
            return;
        }
        if self.conn.is_none() && self.retry_due(now) {
            self.reconnect();
        }
        if self.conn.is_none() || (self.degraded.is_some() && !self.retry_due(now)) {
            self.fallback(cmds);
            return;
        }
        let extras = Extras {
            held: !self.hold.is_empty(),
            ..Extras::default()
        };
        let mut result = self.commit(&mut cmds, extras);
        if let Err(e) = &result
            && Failure::of(e) == Failure::Full
            && self.unsent.telemetry().rows > 0
        {
            cmds.iter_mut().for_each(Command::clear);
            let need =
                cmds.iter().map(Command::insert_bytes).sum::<u64>() + self.hold.bytes() as u64;
            if self.make_room(need.max(MAKE_ROOM_MIN_BYTES)) {
                result = self.commit(&mut cmds, extras);
            }
        }
        match result {
            Ok(st) => self.committed_ok(cmds, &st, extras),
            Err(e) => {
                cmds.iter_mut().for_each(Command::clear);
                self.degrade(Failure::of(&e), e.to_string());
                self.fallback(cmds);
            }
        }
    }

    fn has_pending(&self) -> bool {
        !self.hold.is_empty() || self.recovery.is_some()
    }

    /// Degraded path: telemetry to the hold, everything else tried alone.
    fn fallback(&mut self, cmds: Vec<Command>) {
        for cmd in cmds {
            match cmd {
                Command::AppendTelemetry { batch, reply, .. } => {
                    self.hold_batch(batch);
                    send(reply, Ok(()));
                }
                cmd if self.conn.is_none() => {
                    let reason = self.unavailable_reason();
                    cmd.respond(&reason);
                }
                cmd => {
                    let mut one = vec![cmd];
                    match self.commit(&mut one, Extras::default()) {
                        Ok(st) => {
                            let wrote = st.tally.wrote();
                            self.committed_ok(one, &st, Extras::default());
                            if wrote && self.degraded.is_some() {
                                // Writes work again: commit the held telemetry soon.
                                self.retry_at = Some(Instant::now());
                            }
                        }
                        Err(e) => {
                            let failure = Failure::of(&e);
                            if failure.drops_connection() {
                                self.conn = None;
                            }
                            if self.degraded.is_none() {
                                self.degrade(failure, e.to_string());
                            }
                            let reason = format!("{}: {e}", failure.describe());
                            one.into_iter().for_each(|c| c.respond(&reason));
                        }
                    }
                }
            }
        }
        self.report_health();
    }

    fn unavailable_reason(&self) -> String {
        match &self.degraded {
            Some(d) => format!("{}: {}", d.failure.describe(), d.detail),
            None => "store is not open".to_string(),
        }
    }

    fn hold_batch(&mut self, batch: TelemetryBatch) {
        let dropped = self.hold.push(batch);
        self.lost(
            dropped,
            "Store cannot write and its in-memory hold is full; oldest telemetry lost.",
        );
    }

    /// Counts (and logs, as data loss) held telemetry that will never be committed.
    fn lost(&self, dropped: Dropped, why: &'static str) {
        if dropped.batches == 0 {
            return;
        }
        Health::add(
            &self.health.counters.readings_lost_store_unavailable,
            dropped.readings,
        );
        tracing::error!(
            batches = dropped.batches,
            readings = dropped.readings,
            first_ms = dropped.first_ms,
            last_ms = dropped.last_ms,
            "{why}"
        );
    }

    /// One transaction: pending recovery, held telemetry, the commands, extras, counters;
    /// then `COMMIT`. Results are in the commands' `out`; nothing of the writer's state
    /// changes until [`Writer::committed_ok`].
    ///
    /// On any error the commands' results are cleared before returning: a result computed
    /// inside a transaction that did not commit (e.g. `COMMIT` failing with `SQLITE_FULL`)
    /// must never reach a caller as an acceptance.
    fn commit(&mut self, cmds: &mut [Command], extras: Extras) -> rusqlite::Result<TxState> {
        let result = self.commit_inner(cmds, extras);
        if result.is_err() {
            cmds.iter_mut().for_each(Command::clear);
        }
        result
    }

    fn commit_inner(&mut self, cmds: &mut [Command], extras: Extras) -> rusqlite::Result<TxState> {
        let now_ms = self.now_ms();
        let Some(conn) = self.conn.as_mut() else {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some("store is not open".into()),
            ));
        };
        let inserts = extras.held
            || self.recovery.is_some()
            || cmds.iter().any(|c| {
                matches!(
                    c,
                    Command::AppendEvent { .. } | Command::AppendTelemetry { .. }
                )
            });
        let free_disk = if inserts {
            sqlite::free_disk(conn, &self.dir, self.page_size)
        } else {
            None
        };
        let tx = conn.transaction()?;
        let mut st = TxState::new(now_ms, self.unsent, free_disk);
        if let Some(r) = &self.recovery {
            apply_recovery(&tx, &self.ctx, &mut st, r)?;
        }
        if extras.held {
            for batch in self.hold.iter() {
                sqlite::append_telemetry(&tx, &self.ctx, &mut st, batch)?;
            }
        }
        for cmd in cmds.iter_mut() {
            match cmd {
                Command::AppendEvent { ev, out, .. } => {
                    *out = Some(sqlite::append_event(&tx, &self.ctx, &mut st, ev)?);
                }
                Command::AppendTelemetry { batch, out, .. } => {
                    sqlite::append_telemetry(&tx, &self.ctx, &mut st, batch)?;
                    *out = Some(());
                }
                Command::Fetch { fetch, out, .. } => *out = Some(sqlite::fetch(&tx, fetch)?),
                Command::Ack {
                    row_ids,
                    now_ms,
                    out,
                    ..
                } => {
                    sqlite::ack(&tx, &mut st, row_ids, *now_ms)?;
                    *out = Some(());
                }
                Command::Stats { out, .. } => {
                    let mut stats = sqlite::stats(&tx, &st.unsent, &self.path)?;
                    stats.held_batches = self.hold.len() as u64;
                    stats.held_readings = self.hold.readings();
                    stats.health = self.health.components().get(HEALTH_NAME).cloned();
                    *out = Some(stats);
                }
                Command::Close { .. } => {}
                #[cfg(test)]
                Command::Hook { .. } => {}
            }
        }
        if extras.sweep {
            sqlite::sweep(&tx, &self.ctx, &mut st, self.options.time.as_ref())?;
        }
        if extras.probe {
            sqlite::probe(&tx, now_ms)?;
        }
        sqlite::finish_tx(&tx, &st, self.page_size)?;
        tx.commit()?;
        self.commits += 1;
        Ok(st)
    }

    /// After a `COMMIT`: adopt the transaction's state, count, wake the uplink, answer.
    fn committed_ok(&mut self, cmds: Vec<Command>, st: &TxState, extras: Extras) {
        self.unsent = st.unsent;
        if let Some(s) = st.last_sequence {
            self.known_sequence = Some(self.known_sequence.map_or(s, |k| k.max(s)));
        }
        self.known_row_id = self.known_row_id.max(st.max_row_id);
        if let Some(r) = self.recovery.take() {
            tracing::error!(
                set_aside = %r.set_aside.display(),
                events_salvaged = st.tally.events_salvaged,
                "Corrupt store replaced; alert event committed."
            );
        }
        if extras.held {
            self.hold.take();
        }
        if st.free_disk.is_some() {
            self.within_limits =
                quota::within_limits(self.ctx.limits, self.unsent.quota(st.free_disk));
        }
        let t = &st.tally;
        let c = &self.health.counters;
        Health::add(&c.events_stored, t.events_stored);
        Health::add(&c.events_deduplicated, t.events_deduplicated);
        Health::add(&c.batches_stored, t.batches_stored);
        Health::add(&c.readings_stored, t.readings_stored);
        if let Some((rows, readings)) =
            self.drop_log
                .record(Instant::now(), t.dropped_rows, t.dropped_readings)
        {
            tracing::warn!(
                rows,
                readings,
                max_bytes = self.ctx.limits.max_bytes,
                min_free_disk_bytes = self.ctx.limits.min_free_disk_bytes,
                "Store at its byte quota or free-disk watermark; oldest telemetry dropped."
            );
        }
        if t.expired_events > 0 {
            tracing::error!(
                events = t.expired_events,
                event_max_age_s = self.ctx.event_max_age_s,
                "Unsent events expired (older than the maximum age) and were deleted."
            );
        }
        if t.inserted_rows > 0 {
            self.committed.notify_one();
        }
        for cmd in cmds {
            cmd.respond("not executed");
        }
        if self.degraded.is_some() && t.wrote() && self.hold.is_empty() && self.recovery.is_none() {
            self.recovered();
        }
        self.report_health();
    }

    /// Deletes old telemetry in its own transaction to make room on a full disk.
    fn make_room(&mut self, bytes: u64) -> bool {
        let now_ms = self.now_ms();
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let result = (|| {
            let tx = conn.transaction()?;
            let mut st = TxState::new(now_ms, self.unsent, None);
            sqlite::drop_oldest_telemetry(&tx, &mut st, bytes)?;
            sqlite::finish_tx(&tx, &st, 0)?;
            tx.commit()?;
            Ok::<_, rusqlite::Error>(st)
        })();
        match result {
            Ok(st) => {
                tracing::warn!(
                    rows = st.tally.dropped_rows,
                    readings = st.tally.dropped_readings,
                    "Disk full: oldest telemetry dropped to make room."
                );
                self.unsent = st.unsent;
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "Could not make room on a full disk.");
                false
            }
        }
    }

    /// Enters (or stays in) degraded mode and schedules the next retry.
    fn degrade(&mut self, failure: Failure, detail: String) {
        if failure.drops_connection() {
            self.conn = None;
        }
        let delay = self.backoff.next_delay();
        self.retry_at = Some(Instant::now() + delay);
        if self.degraded.is_none() {
            tracing::error!(
                path = %self.path.display(),
                problem = failure.describe(),
                %detail,
                "Store cannot write; events are refused and telemetry is held in memory until it can."
            );
        } else {
            tracing::debug!(problem = failure.describe(), %detail, retry_in = ?delay, "Store still cannot write.");
        }
        self.degraded = Some(Degraded { failure, detail });
        self.report_health();
    }

    fn recovered(&mut self) {
        if let Some(d) = self.degraded.take() {
            tracing::info!(was = d.failure.describe(), "Store writes again.");
        }
        self.backoff.reset();
        self.retry_at = None;
    }

    /// Opens the file (recovering a corrupt one) and adopts it.
    fn connect(&mut self) -> Result<(), OpenError> {
        self.conn = None;
        let read_only = self.options.force_read_only.load(Ordering::Relaxed);
        let opened = match sqlite::open(&self.path, read_only) {
            Ok(o) => o,
            Err(OpenError::Corrupt(reason)) => self.set_aside(reason, read_only)?,
            Err(e) => return Err(e),
        };
        self.page_size = opened.page_size;
        self.unsent = opened.unsent;
        self.known_sequence = Some(
            self.known_sequence
                .map_or(opened.sequence, |k| k.max(opened.sequence)),
        );
        self.known_row_id = self.known_row_id.max(opened.max_row_id);
        if !self.previous_run_marked && !read_only {
            // Before this process writes anything; a failure (read-only file) only costs
            // precision: such rows would be mapped with this process's offset.
            match sqlite::mark_previous_run(&opened.conn) {
                Ok(rows) => {
                    self.previous_run_marked = true;
                    if rows > 0 {
                        tracing::info!(rows, "Rows from an earlier run without a known time.");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "Cannot mark rows of an earlier run."),
            }
        }
        self.conn = Some(opened.conn);
        Ok(())
    }

    /// Renames a corrupt file aside, opens a fresh one and schedules the recovery commit.
    fn set_aside(&mut self, reason: String, read_only: bool) -> Result<sqlite::Opened, OpenError> {
        let stamp = sqlite::corrupt_stamp(self.now_ms());
        let set_aside =
            sqlite::set_aside(&self.path, &stamp).map_err(|e| OpenError::Unavailable {
                failure: Failure::of_io(&e),
                detail: format!("corrupt store ({reason}) cannot be renamed aside: {e}"),
            })?;
        tracing::error!(
            path = %self.path.display(),
            set_aside = %set_aside.display(),
            %reason,
            "Store file is corrupt; set aside, starting a fresh one."
        );
        let salvage = sqlite::salvage_counters(&set_aside);
        // A previous recovery that never committed is superseded; its alert id is kept so a
        // retried alert stays one event.
        let alert_id = self
            .recovery
            .as_ref()
            .map_or_else(sqlite::new_event_id, |r| r.alert_id);
        self.recovery = Some(Recovery {
            set_aside,
            reason,
            salvage,
            known_sequence: self.known_sequence,
            known_row_id: self.known_row_id,
            alert_id,
        });
        match sqlite::open(&self.path, read_only) {
            Ok(o) => Ok(o),
            Err(OpenError::Corrupt(r)) => Err(OpenError::Unavailable {
                failure: Failure::Corrupt,
                detail: format!("the fresh store is unusable too: {r}"),
            }),
            Err(e) => Err(e),
        }
    }

    fn reconnect(&mut self) {
        match self.connect() {
            Ok(()) => {
                tracing::info!(path = %self.path.display(), "Store reopened.");
            }
            Err(OpenError::TooNew(found)) => self.degrade(
                Failure::Other,
                format!("the file was replaced by one with schema version {found}"),
            ),
            Err(OpenError::Unavailable { failure, detail }) => self.degrade(failure, detail),
            Err(OpenError::Corrupt(detail)) => self.degrade(Failure::Corrupt, detail),
        }
    }

    /// A transaction with no commands (sweep, probe, held telemetry, recovery).
    fn maintain(&mut self, mut extras: Extras) {
        if self.conn.is_none() {
            return;
        }
        extras.held = !self.hold.is_empty();
        match self.commit(&mut [], extras) {
            Ok(st) => {
                if extras.probe && self.degraded.is_some() && self.hold.is_empty() {
                    self.recovered();
                }
                self.committed_ok(Vec::new(), &st, extras);
            }
            Err(e) => self.degrade(Failure::of(&e), e.to_string()),
        }
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if self.retry_due(now) {
            self.retry();
        }
        let mut sweep_now = now >= self.next_sweep;
        if !self.clock_valid && now >= self.next_clock_check {
            self.next_clock_check = now + CLOCK_CHECK_EVERY;
            // The clock became valid: re-stamp what was committed before, at once.
            if self.now_ms() >= EARLIEST_VALID_MS {
                self.clock_valid = true;
                sweep_now = true;
            }
        }
        if sweep_now {
            self.next_sweep = now + SWEEP_EVERY;
            if self.degraded.is_none() {
                self.maintain(Extras {
                    sweep: true,
                    ..Extras::default()
                });
            }
        }
    }

    /// Degraded-mode retry: reopen if needed, then commit what is pending (or probe).
    fn retry(&mut self) {
        let reopened = self.conn.is_none()
            || self
                .degraded
                .as_ref()
                .is_some_and(|d| d.failure.needs_reopen());
        if reopened {
            self.reconnect();
            if self.conn.is_none() {
                return;
            }
        }
        if self.has_pending() {
            self.maintain(Extras::default());
        } else if self.degraded.is_some() && reopened {
            self.maintain(Extras {
                probe: true,
                ..Extras::default()
            });
        } else if self.degraded.is_some() {
            // Nothing to write: the next write decides. Keep retrying on schedule.
            self.retry_at = Some(Instant::now() + self.backoff.next_delay());
        }
    }

    fn shutdown(&mut self) {
        if self.has_pending() {
            if self.conn.is_none() {
                self.reconnect();
            }
            self.maintain(Extras::default());
        }
        let lost = self.hold.take();
        self.lost(
            lost,
            "Store closed while it could not write; held telemetry lost.",
        );
        if let Some(conn) = self.conn.take()
            && let Err((_, e)) = conn.close()
        {
            tracing::warn!(error = %e, "Store did not close cleanly.");
        }
        tracing::info!(path = %self.path.display(), "Store closed.");
    }

    fn report_health(&mut self) {
        let (state, detail) = match &self.degraded {
            Some(d) => (
                HealthState::Down,
                Some(format!(
                    "{}: {}; events refused, {} telemetry batches ({} readings) held in memory",
                    d.failure.describe(),
                    d.detail,
                    self.hold.len(),
                    self.hold.readings()
                )),
            ),
            None if !self.within_limits => (
                HealthState::Degraded,
                Some(
                    "unsent events alone exceed the byte quota or free-disk watermark".to_string(),
                ),
            ),
            None => (HealthState::Ok, None),
        };
        let now = (state, detail);
        if self.reported.as_ref() != Some(&now) {
            self.health
                .set(HEALTH_NAME, now.0, now.1.clone(), self.now_ms());
            self.reported = Some(now);
        }
    }

    #[cfg(test)]
    fn run_hook(&mut self, hook: Hook) -> u64 {
        match hook {
            Hook::Gate { entered, open } => {
                if entered.send(()).is_err() {
                    return 0;
                }
                u64::from(open.recv().is_ok())
            }
            Hook::SetMaxPageCount(n) => self.conn.as_ref().map_or(0, |c| {
                c.pragma_update_and_check(
                    None,
                    "max_page_count",
                    i64::try_from(n).unwrap_or(i64::MAX),
                    |r| r.get::<_, i64>(0),
                )
                .map_or(0, |v| u64::try_from(v).unwrap_or(0))
            }),
            Hook::RetryNow => {
                if self.degraded.is_some() || self.conn.is_none() {
                    self.retry_at = Some(Instant::now());
                    self.on_timer();
                }
                0
            }
            Hook::Sweep => {
                self.maintain(Extras {
                    sweep: true,
                    ..Extras::default()
                });
                0
            }
            Hook::Commits => self.commits,
        }
    }
}

/// Commits the recovery of a corrupt file: row ids and sequence continue, readable events are
/// copied, and the alert is appended.
fn apply_recovery(
    tx: &Connection,
    ctx: &Ctx,
    st: &mut TxState,
    r: &Recovery,
) -> rusqlite::Result<()> {
    let base_sequence = r.salvage.sequence.max(r.known_sequence);
    let base_row_id = r.salvage.max_row_id.unwrap_or(0).max(r.known_row_id);
    sqlite::seed(tx, base_row_id, base_sequence.unwrap_or(0))?;
    let copied_max = sqlite::copy_salvaged_events(tx, st, &r.set_aside)?;
    if let Some(s) = copied_max {
        sqlite::raise_sequence(tx, s)?;
    }
    let alert = NewEvent {
        id: r.alert_id,
        type_: STORE_CORRUPTED.to_string(),
        time_ms: st.now_ms,
        lane: Lane::Alert,
        subject: None,
        data: serde_json::json!({
            "set_aside_path": r.set_aside.display().to_string(),
            "reason": r.reason,
            "sequence_continued": base_sequence.is_some() || copied_max.is_some(),
            "events_salvaged": st.tally.events_salvaged,
        }),
    };
    if let Err(e) = sqlite::append_event(tx, ctx, st, &alert)? {
        tracing::warn!(error = %e, "Store-corrupted alert could not be built.");
    }
    Ok(())
}
