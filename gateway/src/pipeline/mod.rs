//! The telemetry pipeline: readings from the sources → time check → [`Positions`] (position
//! fixes) or [`Filter`] (every other signal) → [`Batcher`] → encoded batches →
//! [`Store::append_telemetry`]. The decisions live in the sans-IO [`Positions`], [`Filter`]
//! and [`Batcher`]; [`run`] is the one task around them.
//!
//! # Invariants
//! - **Nothing leaves with a 1970 stamp** (DESIGN §4). A reading stamped before the time was
//!   known (`time < EARLIEST_VALID_MS`: a monotonic stamp of the gateway [`Clock`]) is
//!   re-stamped with the clock when it can be; otherwise it waits in a hold of at most
//!   [`UNTIMED_MAX`] readings (the oldest beyond are dropped and counted in
//!   `readings_untimed_dropped`) and is processed, re-stamped, with the first chunk after the
//!   time became known. Held readings at shutdown are dropped and counted the same way.
//! - Position fixes are decided whole by [`Positions`] (see [`positions`]) and bypass the
//!   filter; the readings of dropped fixes count in `readings_filtered`. Undecided fixes wait
//!   up to the moving `period_s` (or [`positions::SILENCE`]); on shutdown the newest fix of
//!   every source is kept.
//! - Every reading received is counted in `readings_in`; the pipeline then either counts it
//!   in `readings_filtered`, `readings_untimed_dropped` or `readings_oversized` (it fits in
//!   no batch: larger than
//!   `batch_max_bytes` alone, or a string beyond the codec's limit), or hands it to the store
//!   in a batch, or counts it in `readings_lost_store_unavailable` (the store is closed). The
//!   store counts what becomes of the batches it takes (`readings_stored` / `batches_stored`
//!   at commit, its hold and quota drops); the pipeline does not count them again.
//! - Every batch handed to the store encodes: the [`Batcher`] keeps each batch within the
//!   codec's limits and `batch_max_bytes`. Should `encode` still refuse a batch (a bug),
//!   the batch is split until the parts encode; only a reading that encodes in no part is
//!   dropped, counted in `readings_oversized` and logged at ERROR. Nothing panics.
//! - A reading waits in memory at most `batch_window_ms` before its batch is handed to the
//!   store (DESIGN §3: that window is the only telemetry a power cut may lose).
//! - On shutdown, or when every sender is gone, the readings already in the channel are
//!   filtered and batched, the last batch is committed, and `run` returns only after every
//!   commit has been answered.
//! - Batches are handed to the store in the order they were built, at most
//!   [`MAX_COMMITS_IN_FLIGHT`] at a time so that the store's group commit can merge them.
//!   With that many in flight, intake waits: back-pressure reaches the sources through the
//!   bounded channel instead of memory growing here.
//! - There is one hold, in the store: while it cannot write (disk full, read-only), the
//!   store answers `Ok` and keeps telemetry in memory itself. The only error it returns for
//!   telemetry is [`StoreError::Closed`]; a batch answered with an error is lost, counted in
//!   `readings_lost_store_unavailable`, logged at ERROR, and the pipeline's health is `down`.
//!   The pipeline keeps no retry or hold of its own.
//!
//! # Hot path
//! Readings are taken from the channel in chunks ([`RECV_CHUNK`]) so that one wake-up
//! handles many; per reading there is one `HashMap` lookup by `&str` in the filter and a
//! move into the batch, no allocation. Counters are updated once per chunk. The filter's
//! clock is the reading's own timestamp (see [`filter`]); the batch window runs on the
//! gateway's monotonic clock from the arrival of a batch's first reading.

pub mod batcher;
pub mod filter;
pub mod positions;

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{error, info, warn};
use waymark_wire::Reading;
use waymark_wire::time::EARLIEST_VALID_MS;

pub use batcher::Batcher;
pub use filter::Filter;
pub use positions::Positions;

use crate::clock::Clock;
use crate::config::PipelineConfig;
use crate::health::{Health, HealthState};
use crate::shutdown::Shutdown;
use crate::store::{Store, StoreError, TelemetryBatch};

/// Readings taken from the channel per wake-up.
pub const RECV_CHUNK: usize = 512;
/// Telemetry commits awaiting the store at once.
pub const MAX_COMMITS_IN_FLIGHT: usize = 2;
/// Name of this component in the health registry.
const COMPONENT: &str = "pipeline";

/// Readings with a monotonic stamp held until the time is known (about 1.5 MB); beyond it
/// the oldest are dropped and counted in `readings_untimed_dropped`.
pub const UNTIMED_MAX: usize = 10_000;

/// Runs the pipeline until `shutdown` fires or every sender of `rx` is gone, then commits
/// what is pending (see the module invariants) and returns.
pub async fn run(
    cfg: PipelineConfig,
    rx: mpsc::Receiver<Reading>,
    store: Store,
    health: Arc<Health>,
    clock: Clock,
    shutdown: Shutdown,
) {
    Pipeline::new(&cfg, store, health, clock)
        .run(rx, shutdown)
        .await;
}

/// Where finished batches go: the [`Store`]; a seam so that tests can watch commits in flight.
trait Sink: Send + Sync + 'static {
    /// Commits one batch.
    fn append(
        &self,
        batch: TelemetryBatch,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static;
}

impl Sink for Store {
    fn append(
        &self,
        batch: TelemetryBatch,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let store = self.clone();
        async move { store.append_telemetry(batch).await }
    }
}

/// What is left of a batch once handed to the store: enough to report its loss.
#[derive(Debug, Clone, Copy)]
struct Sent {
    /// Readings in the batch.
    readings: u32,
    /// Earliest reading time (UTC ms).
    first_ms: waymark_wire::Timestamp,
    /// Latest reading time (UTC ms).
    last_ms: waymark_wire::Timestamp,
}

/// A commit that was answered.
struct Done {
    sent: Sent,
    result: Result<(), StoreError>,
}

type Commit = Pin<Box<dyn Future<Output = Done> + Send>>;

/// Commits in flight, oldest first. They are always polled in this order, so the store
/// receives them in the order they were started.
struct InFlight(VecDeque<Commit>);

impl InFlight {
    fn start<S: Sink>(&mut self, sink: &S, batch: TelemetryBatch) {
        let sent = Sent {
            readings: batch.readings,
            first_ms: batch.first_ms,
            last_ms: batch.last_ms,
        };
        let commit = sink.append(batch);
        self.0.push_back(Box::pin(async move {
            Done {
                sent,
                result: commit.await,
            }
        }));
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The next commit to be answered. Pending forever when none is in flight.
    fn next_done(&mut self) -> impl Future<Output = Done> + '_ {
        poll_fn(move |cx| {
            for i in 0..self.0.len() {
                if let Poll::Ready(done) = self.0[i].as_mut().poll(cx) {
                    drop(self.0.remove(i));
                    return Poll::Ready(done);
                }
            }
            Poll::Pending
        })
    }
}

struct Pipeline<S: Sink> {
    filter: Filter,
    batcher: Batcher,
    max_bytes: usize,
    sink: S,
    health: Arc<Health>,
    in_flight: InFlight,
    /// A commit failed (health set to down); not reported again.
    store_lost: bool,
    /// `batcher.oversized()` already counted and logged.
    oversized_seen: u64,
    /// Maps monotonic stamps (readings taken before the time was known) to UTC.
    clock: Clock,
    /// Readings with a monotonic stamp, waiting for the time (at most [`UNTIMED_MAX`]).
    untimed: VecDeque<Reading>,
    /// Adaptive position logging: decides about position fixes instead of the filter.
    positions: Positions,
    /// Decided position readings, moved on by [`Pipeline::drain_positions`].
    emitted: positions::Emitted,
    /// `positions.stats().dropped_readings` already counted.
    positions_dropped_seen: u64,
}

fn wall_ms() -> waymark_wire::Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl<S: Sink> Pipeline<S> {
    fn new(cfg: &PipelineConfig, sink: S, health: Arc<Health>, clock: Clock) -> Self {
        let window = Duration::from_millis(cfg.batch_window_ms);
        Pipeline {
            filter: Filter::new(cfg),
            batcher: Batcher::new(window, cfg.batch_max_readings, cfg.batch_max_bytes),
            max_bytes: cfg.batch_max_bytes,
            sink,
            health,
            in_flight: InFlight(VecDeque::new()),
            store_lost: false,
            oversized_seen: 0,
            clock,
            untimed: VecDeque::new(),
            positions: Positions::new(&cfg.positions),
            emitted: positions::Emitted::default(),
            positions_dropped_seen: 0,
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Reading>, shutdown: Shutdown) {
        self.health.set(COMPONENT, HealthState::Ok, None, wall_ms());
        let mut inbox = Vec::with_capacity(RECV_CHUNK);
        let sleep = tokio::time::sleep_until(Instant::now());
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        // Liveness for the systemd watchdog: a beat per turn, and a tick so that an idle
        // pipeline still beats. A pipeline stuck awaiting the store stops beating.
        let mut heartbeat = tokio::time::interval(crate::health::HEARTBEAT_EVERY);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.health.heartbeats.pipeline.beat();
            let wake = match (self.batcher.deadline(), self.positions.deadline()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
            .map(Instant::from_std);
            if wake != armed {
                if let Some(at) = wake {
                    sleep.as_mut().reset(at);
                }
                armed = wake;
            }
            tokio::select! {
                biased;
                () = shutdown.recv() => break,
                done = self.in_flight.next_done(), if !self.in_flight.is_empty() => {
                    self.finished(done);
                }
                () = &mut sleep, if armed.is_some() => {
                    armed = None;
                    let now = Instant::now().into_std();
                    self.positions.poll(now, &mut self.emitted);
                    let filtered = self.drain_positions(now).await;
                    Health::add(&self.health.counters.readings_filtered, filtered);
                    if let Some(batch) = self.batcher.poll(now) {
                        self.flush(batch).await;
                    }
                }
                _ = heartbeat.tick() => {}
                n = rx.recv_many(&mut inbox, RECV_CHUNK) => {
                    if n == 0 {
                        info!("All reading producers are gone; the pipeline stops.");
                        break;
                    }
                    self.intake(&mut inbox).await;
                }
            }
        }
        self.drain(rx, inbox).await;
    }

    /// Filters and batches a chunk of readings (emptying `inbox`).
    async fn intake(&mut self, inbox: &mut Vec<Reading>) {
        let now = Instant::now().into_std();
        let received = inbox.len() as u64;
        let mut filtered = 0u64;
        let mut released = Vec::new();
        if !self.untimed.is_empty() && self.clock.is_known() {
            released.extend(self.untimed.drain(..));
        }
        let mut untimed_dropped = 0u64;
        for mut r in released.into_iter().chain(inbox.drain(..)) {
            if r.time < EARLIEST_VALID_MS {
                match self.clock.restamp(r.time) {
                    Some(t) => r.time = t,
                    None => {
                        if self.untimed.len() >= UNTIMED_MAX {
                            self.untimed.pop_front();
                            untimed_dropped += 1;
                        }
                        self.untimed.push_back(r);
                        continue;
                    }
                }
            }
            match self.positions.offer(now, r, &mut self.emitted) {
                Some(r) => filtered += self.filter_and_batch(now, r).await,
                None => filtered += self.drain_positions(now).await,
            }
        }
        let counters = &self.health.counters;
        Health::add(&counters.readings_in, received);
        Health::add(&counters.readings_filtered, filtered);
        if untimed_dropped > 0 {
            Health::add(&counters.readings_untimed_dropped, untimed_dropped);
            warn!(
                readings = untimed_dropped,
                held = UNTIMED_MAX,
                "The time is still not known and the hold for readings taken before it is \
                 full; the oldest were dropped."
            );
        }
        let oversized = self.batcher.oversized() - self.oversized_seen;
        if oversized > 0 {
            self.oversized_seen = self.batcher.oversized();
            Health::add(&counters.readings_oversized, oversized);
            warn!(
                readings = oversized,
                batch_max_bytes = self.max_bytes,
                max_string_bytes = waymark_wire::telemetry::MAX_STRING_LEN,
                "Readings that fit in no batch (larger than a whole batch, or a signal, unit, \
                 source or text longer than the codec allows) were dropped."
            );
        }
    }

    /// Runs one reading through the per-signal filter into the batcher. Returns 1 when the
    /// filter dropped it.
    async fn filter_and_batch(&mut self, now: std::time::Instant, r: Reading) -> u64 {
        if !self.filter.keep(r.time, &r) {
            return 1;
        }
        if let Some(batch) = self.batcher.push(now, r) {
            self.flush(batch).await;
        }
        0
    }

    /// Moves decided position readings on: kept fixes straight into the batcher (they bypass
    /// the per-signal filter), readings that were not a fix after all through the filter.
    /// Returns the readings dropped (fixes the logger dropped, and filtered ones).
    async fn drain_positions(&mut self, now: std::time::Instant) -> u64 {
        let mut dropped = 0;
        if !self.emitted.kept.is_empty() {
            let kept = std::mem::take(&mut self.emitted.kept);
            for r in kept {
                if let Some(batch) = self.batcher.push(now, r) {
                    self.flush(batch).await;
                }
            }
        }
        if !self.emitted.pass.is_empty() {
            let pass = std::mem::take(&mut self.emitted.pass);
            for r in pass {
                dropped += self.filter_and_batch(now, r).await;
            }
        }
        let total = self.positions.stats().dropped_readings;
        dropped += total - self.positions_dropped_seen;
        self.positions_dropped_seen = total;
        dropped
    }

    /// Encodes a finished batch and hands it on.
    async fn flush(&mut self, readings: Vec<Reading>) {
        let mut batches = Vec::with_capacity(1);
        let dropped = encode_batches(&readings, self.max_bytes, &mut batches);
        drop(readings);
        if dropped > 0 {
            Health::add(&self.health.counters.readings_oversized, dropped);
        }
        for batch in batches {
            self.submit(batch).await;
        }
    }

    /// Starts the commit of `batch`. Waits while [`MAX_COMMITS_IN_FLIGHT`] commits are
    /// pending.
    async fn submit(&mut self, batch: TelemetryBatch) {
        while self.in_flight.len() >= MAX_COMMITS_IN_FLIGHT {
            let done = self.in_flight.next_done().await;
            self.finished(done);
        }
        self.in_flight.start(&self.sink, batch);
    }

    /// Books the answer to a commit. `readings_stored` / `batches_stored` are the store's to
    /// count; a refused batch is lost and counted here.
    fn finished(&mut self, done: Done) {
        let Err(e) = done.result else {
            return;
        };
        let Sent {
            readings,
            first_ms,
            last_ms,
        } = done.sent;
        Health::add(
            &self.health.counters.readings_lost_store_unavailable,
            u64::from(readings),
        );
        error!(
            error = %e,
            readings,
            first_ms,
            last_ms,
            "The store refused a telemetry batch; its readings are lost."
        );
        if !self.store_lost {
            self.store_lost = true;
            self.health.set(
                COMPONENT,
                HealthState::Down,
                Some(format!("store refuses telemetry: {e}")),
                wall_ms(),
            );
        }
    }

    /// Shutdown: takes what is already in the channel, commits everything pending and waits
    /// for the answers.
    async fn drain(mut self, mut rx: mpsc::Receiver<Reading>, mut inbox: Vec<Reading>) {
        rx.close();
        while let Ok(r) = rx.try_recv() {
            inbox.push(r);
            if inbox.len() >= RECV_CHUNK {
                self.intake(&mut inbox).await;
            }
        }
        self.intake(&mut inbox).await;
        self.positions.finish(&mut self.emitted);
        let now = Instant::now().into_std();
        let filtered = self.drain_positions(now).await;
        Health::add(&self.health.counters.readings_filtered, filtered);
        if !self.untimed.is_empty() {
            let lost = self.untimed.len() as u64;
            self.untimed.clear();
            Health::add(&self.health.counters.readings_untimed_dropped, lost);
            warn!(
                readings = lost,
                "Stopping before the time was known: readings without a time are dropped \
                 (never published with a 1970 date)."
            );
        }
        if let Some(batch) = self.batcher.take() {
            self.flush(batch).await;
        }
        while !self.in_flight.is_empty() {
            let done = self.in_flight.next_done().await;
            self.finished(done);
        }
        let c = self.health.counters.snapshot();
        info!(
            readings_in = c.readings_in,
            readings_stored = c.readings_stored,
            batches_stored = c.batches_stored,
            readings_lost_store_unavailable = c.readings_lost_store_unavailable,
            "Pipeline stopped; pending telemetry handed to the store."
        );
    }
}

/// Encodes `readings` into batches of at most `max_bytes`, appended to `out` in order, and
/// returns how many readings were dropped.
///
/// Normally one batch: the [`Batcher`] keeps every batch within the codec's limits and the
/// size bound. Should an encoding still fail or come out too large (a bug), the readings are
/// split in halves until each part encodes within `max_bytes`; a single reading that does
/// not is dropped. The failure and every dropped reading are logged at ERROR.
fn encode_batches(readings: &[Reading], max_bytes: usize, out: &mut Vec<TelemetryBatch>) -> u64 {
    if readings.is_empty() {
        return 0;
    }
    match encode_within(readings, max_bytes) {
        Ok(batch) => {
            out.push(batch);
            0
        }
        Err(why) => {
            error!(
                readings = readings.len(),
                max_bytes,
                reason = %why,
                "A telemetry batch did not encode within its limits (the batcher should \
                 prevent this); splitting it to keep the other readings."
            );
            split(readings, max_bytes, out)
        }
    }
}

/// Encodes both halves of `readings` (which did not encode whole), halving again what does
/// not encode; drops and logs single readings that do not. Returns how many were dropped.
fn split(readings: &[Reading], max_bytes: usize, out: &mut Vec<TelemetryBatch>) -> u64 {
    let (a, b) = readings.split_at(readings.len() / 2);
    let mut dropped = 0;
    for part in [a, b] {
        if part.is_empty() {
            continue;
        }
        match encode_within(part, max_bytes) {
            Ok(batch) => out.push(batch),
            Err(why) => match part {
                [r] => {
                    error!(
                        signal = %r.signal,
                        source = %r.source,
                        time = r.time,
                        reason = %why,
                        "Cannot encode a reading; dropped."
                    );
                    dropped += 1;
                }
                _ => dropped += split(part, max_bytes, out),
            },
        }
    }
    dropped
}

/// One batch of `readings` if it encodes within `max_bytes`, else why not.
fn encode_within(readings: &[Reading], max_bytes: usize) -> Result<TelemetryBatch, String> {
    let payload = waymark_wire::telemetry::encode(readings).map_err(|e| e.to_string())?;
    if payload.len() > max_bytes {
        return Err(format!(
            "{} bytes, over the {max_bytes} byte limit",
            payload.len()
        ));
    }
    let (first_ms, last_ms) = readings.iter().fold((i64::MAX, i64::MIN), |(lo, hi), r| {
        (lo.min(r.time), hi.max(r.time))
    });
    Ok(TelemetryBatch {
        payload,
        readings: u32::try_from(readings.len()).unwrap_or(u32::MAX),
        first_ms,
        last_ms,
    })
}

#[cfg(test)]
mod tests {
    //! The task with paused tokio time, against the SQLite store (open or closed) and against
    //! a test sink that delays and records commits.

    use std::sync::Mutex;

    use waymark_wire::Value;
    use waymark_wire::telemetry::encode;

    use super::*;
    use crate::config::StoreConfig;
    use crate::health::CountersSnapshot;
    use crate::shutdown::Trigger;
    use crate::store::{Fetch, LaneCursors, OutboxRow};

    const T0: i64 = 1_790_000_000_000;

    fn cfg(window_ms: u64, max_readings: usize, max_bytes: usize) -> PipelineConfig {
        PipelineConfig {
            batch_window_ms: window_ms,
            batch_max_readings: max_readings,
            batch_max_bytes: max_bytes,
            ..PipelineConfig::default()
        }
    }

    fn reading(i: i64) -> Reading {
        Reading {
            signal: "Vehicle.Speed".into(),
            value: Value::Num(i as f64),
            unit: "km/h".into(),
            time: T0 + i,
            source: "test".into(),
        }
    }

    fn readings(range: std::ops::Range<i64>) -> Vec<Reading> {
        range.map(reading).collect()
    }

    /// Waits (on paused time) until `done` holds; panics with `state()` if it never does.
    async fn until(done: impl Fn() -> bool, state: impl Fn() -> String) {
        for _ in 0..100_000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("not settled: {}", state());
    }

    /// Waits (on paused time) until the counters satisfy `done`.
    async fn settle(health: &Health, done: impl Fn(&CountersSnapshot) -> bool) {
        until(
            || done(&health.counters.snapshot()),
            || format!("{:?}", health.counters.snapshot()),
        )
        .await;
    }

    async fn rows(store: &Store) -> Vec<OutboxRow> {
        let fetch = Fetch {
            after: LaneCursors::default(),
            live_since_ms: 0,
            max_rows: 10_000,
            max_bytes: usize::MAX,
        };
        store.fetch(fetch).await.unwrap()
    }

    struct Harness {
        tx: mpsc::Sender<Reading>,
        trigger: Trigger,
        health: Arc<Health>,
        store: Store,
        task: tokio::task::JoinHandle<()>,
        _dir: tempfile::TempDir,
    }

    /// A store in a fresh directory (so that these tests also run against the SQLite store).
    fn open_store(health: &Arc<Health>) -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            path: dir.path().join("buffer.db"),
            ..StoreConfig::default()
        };
        (Store::open(&cfg, "TRUCK-042", health.clone()).unwrap(), dir)
    }

    fn start(cfg: PipelineConfig) -> Harness {
        let health = Arc::new(Health::default());
        let (store, dir) = open_store(&health);
        let (tx, rx) = mpsc::channel(4096);
        let trigger = Trigger::new();
        let task = tokio::spawn(run(
            cfg,
            rx,
            store.clone(),
            health.clone(),
            Clock::new(),
            trigger.subscribe(),
        ));
        Harness {
            tx,
            trigger,
            health,
            store,
            task,
            _dir: dir,
        }
    }

    impl Harness {
        async fn send(&self, rs: &[Reading]) {
            for r in rs {
                self.tx.send(r.clone()).await.unwrap();
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn window_flush() {
        let h = start(cfg(1000, 2000, 65536));
        h.send(&readings(0..3)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let c = h.health.counters.snapshot();
        assert_eq!((c.readings_in, c.batches_stored), (3, 0));
        tokio::time::sleep(Duration::from_millis(300)).await;
        // A reading at 800 ms joins the batch that the first reading opened.
        h.send(&readings(3..4)).await;
        tokio::time::sleep(Duration::from_millis(199)).await;
        assert_eq!(
            h.health.counters.snapshot().batches_stored,
            0,
            "flushed before the window"
        );
        settle(&h.health, |c| c.batches_stored == 1).await;
        let rows = rows(&h.store).await;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].readings, 4);
        assert_eq!(rows[0].payload, encode(&readings(0..4)).unwrap());
        assert_eq!(h.health.counters.snapshot().readings_stored, 4);
        // The next reading opens a new window.
        h.send(&readings(4..5)).await;
        settle(&h.health, |c| c.batches_stored == 2).await;
        h.trigger.fire();
        h.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn size_flush() {
        let max_bytes = 1024;
        let per = waymark_wire::telemetry::reading_size_bound(&reading(0));
        let fit = (max_bytes - waymark_wire::telemetry::BATCH_OVERHEAD_BOUND) / per;
        // A long window: paused time moves on while the test waits for the store's writer
        // thread, and on a busy machine that must not reach the window.
        let window = Duration::from_secs(60);
        let h = start(cfg(window.as_millis() as u64, 2000, max_bytes));
        let t = tokio::time::Instant::now();
        let n = 2 * fit + 3;
        h.send(&readings(0..n as i64)).await;
        // Two full batches go at once, long before the window ends.
        settle(&h.health, |c| c.batches_stored == 2).await;
        assert!(t.elapsed() < window);
        let first = rows(&h.store).await;
        assert_eq!(
            first
                .iter()
                .map(|r| r.readings as usize)
                .collect::<Vec<_>>(),
            [fit, fit]
        );
        assert!(first.iter().all(|r| r.payload.len() <= max_bytes));
        assert_eq!(first[0].payload, encode(&readings(0..fit as i64)).unwrap());
        // The rest goes when its window ends.
        tokio::time::sleep_until(t + window).await;
        settle(&h.health, |c| c.batches_stored == 3).await;
        assert_eq!(rows(&h.store).await[2].readings, 3);
        assert_eq!(h.health.counters.snapshot().readings_stored, n as u64);
        h.trigger.fire();
        h.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn count_flush() {
        let h = start(cfg(60_000, 3, 65536));
        h.send(&readings(0..7)).await;
        settle(&h.health, |c| c.batches_stored == 2).await;
        let got: Vec<u32> = rows(&h.store).await.iter().map(|r| r.readings).collect();
        assert_eq!(got, [3, 3]);
        h.trigger.fire();
        h.task.await.unwrap();
        assert_eq!(h.health.counters.snapshot().readings_stored, 7);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_drains_the_channel_and_flushes() {
        let health = Arc::new(Health::default());
        let (store, _dir) = open_store(&health);
        let (tx, rx) = mpsc::channel(4096);
        for r in readings(0..1500) {
            tx.try_send(r).unwrap();
        }
        let trigger = Trigger::new();
        // Shutdown has fired before the task ever runs: everything is still in the channel.
        trigger.fire();
        let window = cfg(60_000, 1000, 1 << 20);
        run(
            window,
            rx,
            store.clone(),
            health.clone(),
            Clock::new(),
            trigger.subscribe(),
        )
        .await;
        let rows = rows(&store).await;
        assert_eq!(
            rows.iter().map(|r| r.readings).collect::<Vec<_>>(),
            [1000, 500]
        );
        assert_eq!(rows[1].payload, encode(&readings(1000..1500)).unwrap());
        let c = health.counters.snapshot();
        assert_eq!(
            (c.readings_in, c.readings_stored, c.batches_stored),
            (1500, 1500, 2)
        );
        // Readings sent after the pipeline stopped are refused to the producer, not lost silently.
        assert!(tx.try_send(reading(9)).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn last_sender_gone_flushes_and_returns() {
        let h = start(cfg(60_000, 2000, 65536));
        h.send(&readings(0..5)).await;
        drop(h.tx);
        h.task.await.unwrap();
        assert_eq!(rows(&h.store).await[0].readings, 5);
        drop(h.trigger);
    }

    #[tokio::test(start_paused = true)]
    async fn filtered_and_oversized_readings_are_counted() {
        let mut c = cfg(100, 2000, 1024);
        c.signals.push(crate::config::SignalFilterConfig {
            name: "Vehicle.*".into(),
            deadband: 5.0,
            min_interval_ms: 0,
            max_interval_ms: 0,
        });
        let h = start(c);
        let mut rs = readings(0..10); // values 0..9: only 0 and 6 differ by more than 5
        let mut big = reading(100);
        big.signal = "Other".into();
        big.value = Value::Text("x".repeat(2000));
        rs.push(big);
        h.send(&rs).await;
        settle(&h.health, |c| c.batches_stored == 1).await;
        let snap = h.health.counters.snapshot();
        assert_eq!(
            (
                snap.readings_in,
                snap.readings_filtered,
                snap.readings_oversized,
                snap.readings_stored
            ),
            (11, 8, 1, 2)
        );
        assert_eq!(
            rows(&h.store).await[0].payload,
            encode(&[reading(0), reading(6)]).unwrap()
        );
        h.trigger.fire();
        h.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn readings_beyond_codec_limits_are_rejected_up_front() {
        // Large batches: only the codec's per-string limit can reject these readings.
        let h = start(cfg(100, 2000, 1 << 20));
        let long = "x".repeat(waymark_wire::telemetry::MAX_STRING_LEN + 1);
        let mut rs = readings(0..6);
        rs[1].value = Value::Text(long.clone());
        rs[3].signal = long.clone();
        rs[4].source = long;
        h.send(&rs).await;
        settle(&h.health, |c| c.batches_stored == 1).await;
        let snap = h.health.counters.snapshot();
        assert_eq!(
            (
                snap.readings_in,
                snap.readings_oversized,
                snap.readings_stored
            ),
            (6, 3, 3)
        );
        let stored = rows(&h.store).await;
        assert_eq!(stored.len(), 1);
        let kept = [reading(0), reading(2), reading(5)];
        assert_eq!(stored[0].payload, encode(&kept).unwrap());
        assert_eq!(
            waymark_wire::telemetry::decode(&stored[0].payload).unwrap(),
            kept
        );
        h.trigger.fire();
        h.task.await.unwrap();
    }

    /// A store that was closed: every request answers [`StoreError::Closed`].
    async fn closed_store(health: &Arc<Health>) -> (Store, tempfile::TempDir) {
        let (store, dir) = open_store(health);
        store.clone().close().await.unwrap();
        assert!(matches!(
            store
                .fetch(Fetch {
                    after: LaneCursors::default(),
                    live_since_ms: 0,
                    max_rows: 1,
                    max_bytes: 1,
                })
                .await,
            Err(StoreError::Closed)
        ));
        (store, dir)
    }

    #[tokio::test(start_paused = true)]
    async fn batches_refused_by_a_closed_store_are_counted_as_lost() {
        let health = Arc::new(Health::default());
        let (store, _dir) = closed_store(&health).await;
        let (tx, rx) = mpsc::channel(4096);
        let trigger = Trigger::new();
        let task = tokio::spawn(run(
            cfg(100, 3, 65536),
            rx,
            store,
            health.clone(),
            Clock::new(),
            trigger.subscribe(),
        ));
        for r in readings(0..7) {
            tx.send(r).await.unwrap();
        }
        // Two full batches are refused at once, the third when its window ends; the
        // pipeline keeps nothing to retry.
        settle(&health, |c| c.readings_lost_store_unavailable == 7).await;
        let pipeline = &health.components()[COMPONENT];
        assert_eq!(pipeline.state, HealthState::Down);
        assert!(
            pipeline
                .detail
                .as_deref()
                .is_some_and(|d| d.contains("store closed")),
            "{pipeline:?}"
        );
        // It keeps taking readings (the sources are not blocked) and losing them visibly.
        for r in readings(7..9) {
            tx.send(r).await.unwrap();
        }
        trigger.fire();
        task.await.unwrap();
        let c = health.counters.snapshot();
        assert_eq!(
            (
                c.readings_in,
                c.readings_lost_store_unavailable,
                c.readings_stored,
                c.batches_stored
            ),
            (9, 9, 0, 0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_into_a_closed_store_counts_the_last_batch_and_returns() {
        let health = Arc::new(Health::default());
        let (store, _dir) = closed_store(&health).await;
        let (tx, rx) = mpsc::channel(4096);
        for r in readings(0..4) {
            tx.try_send(r).unwrap();
        }
        let trigger = Trigger::new();
        trigger.fire();
        run(
            cfg(60_000, 2000, 65536),
            rx,
            store,
            health.clone(),
            Clock::new(),
            trigger.subscribe(),
        )
        .await;
        let c = health.counters.snapshot();
        assert_eq!((c.readings_in, c.readings_lost_store_unavailable), (4, 4));
    }

    /// A sink that delays commits and records them.
    #[derive(Clone, Default)]
    struct TestSink(Arc<Mutex<SinkState>>);

    #[derive(Default)]
    struct SinkState {
        delay: Duration,
        /// `first_ms` of every batch offered, in the order the offers reached the sink.
        offered: Vec<i64>,
        stored: Vec<TelemetryBatch>,
        in_flight: usize,
        max_in_flight: usize,
    }

    impl TestSink {
        fn state(&self) -> std::sync::MutexGuard<'_, SinkState> {
            self.0.lock().unwrap()
        }
    }

    impl Sink for TestSink {
        fn append(
            &self,
            batch: TelemetryBatch,
        ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
            let sink = self.clone();
            async move {
                let delay = {
                    let mut s = sink.state();
                    s.offered.push(batch.first_ms);
                    s.in_flight += 1;
                    s.max_in_flight = s.max_in_flight.max(s.in_flight);
                    s.delay
                };
                tokio::time::sleep(delay).await;
                let mut s = sink.state();
                s.in_flight -= 1;
                s.stored.push(batch);
                Ok(())
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn commits_are_ordered_and_at_most_two_in_flight() {
        let sink = TestSink::default();
        sink.state().delay = Duration::from_millis(50);
        let health = Arc::new(Health::default());
        let (tx, rx) = mpsc::channel(4096);
        let trigger = Trigger::new();
        let pipeline = Pipeline::new(
            &cfg(60_000, 2, 65536),
            sink.clone(),
            health.clone(),
            Clock::new(),
        );
        let task = tokio::spawn(pipeline.run(rx, trigger.subscribe()));
        for r in readings(0..40) {
            tx.send(r).await.unwrap();
        }
        until(
            || sink.state().stored.len() == 20,
            || format!("{} stored", sink.state().stored.len()),
        )
        .await;
        {
            let s = sink.state();
            let expected: Vec<i64> = (0..20).map(|i| T0 + 2 * i).collect();
            assert_eq!(s.offered, expected);
            let stored: Vec<i64> = s.stored.iter().map(|b| b.first_ms).collect();
            assert_eq!(stored, expected);
            assert_eq!(s.max_in_flight, MAX_COMMITS_IN_FLIGHT);
        }
        trigger.fire();
        task.await.unwrap();
    }

    /// Readings whose float values do not compress, so a batch grows with every reading.
    fn noisy(range: std::ops::Range<i64>) -> Vec<Reading> {
        range
            .map(|i| Reading {
                value: Value::Num((i as f64 + 1.0).sqrt() * std::f64::consts::PI),
                ..reading(i)
            })
            .collect()
    }

    #[test]
    fn encode_batches_keeps_what_fits_whole() {
        let rs = noisy(0..8);
        let whole = encode(&rs).unwrap().len();
        let mut out = Vec::new();
        assert_eq!(encode_batches(&rs, whole, &mut out), 0);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].readings, out[0].first_ms, out[0].last_ms),
            (8, T0, T0 + 7)
        );
        assert_eq!(out[0].payload, encode(&rs).unwrap());
        assert_eq!(encode_batches(&[], 1, &mut out), 0);
        assert_eq!(out.len(), 1);

        // first_ms / last_ms are the earliest and latest times, whatever the order.
        let mut out = Vec::new();
        encode_batches(&[reading(5), reading(2), reading(9)], 1 << 20, &mut out);
        assert_eq!((out[0].first_ms, out[0].last_ms), (T0 + 2, T0 + 9));
    }

    #[test]
    fn encode_batches_splits_what_does_not_fit() {
        // A limit the encoding does not meet (as with a broken size bound) splits the batch;
        // every reading still fits alone.
        let rs = noisy(0..8);
        let whole = encode(&rs).unwrap().len();
        let single = rs
            .iter()
            .map(|r| encode(std::slice::from_ref(r)).unwrap().len())
            .max()
            .unwrap();
        let limit = single.max(whole / 2);
        assert!(limit < whole, "single {single}, whole {whole}");
        let mut out = Vec::new();
        assert_eq!(encode_batches(&rs, limit, &mut out), 0);
        assert!(out.len() >= 2);
        assert!(out.iter().all(|b| b.payload.len() <= limit));
        let back: Vec<Reading> = out
            .iter()
            .flat_map(|b| waymark_wire::telemetry::decode(&b.payload).unwrap())
            .collect();
        assert_eq!(back, rs, "nothing lost, order kept");

        // A single reading that cannot fit is dropped and counted.
        let mut out = Vec::new();
        assert_eq!(encode_batches(&rs[..1], 1, &mut out), 1);
        assert!(out.is_empty());
    }

    #[test]
    fn encode_error_drops_only_the_reading_the_codec_refuses() {
        let mut rs = noisy(0..9);
        rs[3].value = Value::Text("x".repeat(waymark_wire::telemetry::MAX_STRING_LEN + 1));
        assert!(encode(&rs).is_err());
        let mut out = Vec::new();
        assert_eq!(encode_batches(&rs, 1 << 20, &mut out), 1);
        let back: Vec<Reading> = out
            .iter()
            .flat_map(|b| waymark_wire::telemetry::decode(&b.payload).unwrap())
            .collect();
        rs.remove(3);
        assert_eq!(back, rs, "the others kept, in order");
        assert_eq!(out.iter().map(|b| b.readings).sum::<u32>(), 8);
    }

    /// Runs a pipeline into a [`TestSink`] with `clock`; returns the sender, trigger, task.
    fn start_sink(
        c: PipelineConfig,
        sink: &TestSink,
        health: &Arc<Health>,
        clock: Clock,
    ) -> (mpsc::Sender<Reading>, Trigger, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(UNTIMED_MAX * 2);
        let trigger = Trigger::new();
        let pipeline = Pipeline::new(&c, sink.clone(), health.clone(), clock);
        let task = tokio::spawn(pipeline.run(rx, trigger.subscribe()));
        (tx, trigger, task)
    }

    fn stored_readings(sink: &TestSink) -> Vec<Reading> {
        sink.state()
            .stored
            .iter()
            .flat_map(|b| waymark_wire::telemetry::decode(&b.payload).unwrap())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn untimed_readings_wait_for_the_time_and_are_restamped() {
        let sink = TestSink::default();
        let health = Arc::new(Health::default());
        let clock = Clock::with_system_clock(|| 5_000); // booted in 1970
        let (tx, trigger, task) = start_sink(cfg(100, 2000, 65536), &sink, &health, clock.clone());
        let early = clock.now();
        assert!(early < EARLIEST_VALID_MS);
        for i in 0..3 {
            tx.send(Reading {
                time: early + i,
                ..reading(i)
            })
            .await
            .unwrap();
        }
        settle(&health, |c| c.readings_in == 3).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            sink.state().stored.is_empty(),
            "nothing goes out with a 1970 stamp"
        );
        // GNSS time arrives; the next reading releases the held ones, re-stamped.
        clock.observe_gnss(T0, std::time::Instant::now());
        tx.send(reading(10)).await.unwrap();
        until(|| sink.state().stored.len() == 1, || "no batch".into()).await;
        let got = stored_readings(&sink);
        assert_eq!(got.len(), 4);
        for (i, r) in got[..3].iter().enumerate() {
            assert!(r.time <= T0 + 3 && r.time > T0 - 60_000, "{r:?}");
            assert_eq!(r.time - got[0].time, i as i64, "spacing kept");
        }
        assert_eq!(got[3].time, T0 + 10);
        assert_eq!(health.counters.snapshot().readings_untimed_dropped, 0);
        trigger.fire();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn untimed_hold_is_bounded_and_never_published() {
        let sink = TestSink::default();
        let health = Arc::new(Health::default());
        let clock = Clock::with_system_clock(|| 5_000);
        let (tx, trigger, task) = start_sink(cfg(100, 2000, 65536), &sink, &health, clock.clone());
        let n = UNTIMED_MAX as i64 + 5;
        for i in 0..n {
            tx.send(Reading {
                time: 1 + i,
                ..reading(i)
            })
            .await
            .unwrap();
        }
        settle(&health, |c| c.readings_in == n as u64).await;
        assert_eq!(health.counters.snapshot().readings_untimed_dropped, 5);
        // Shutdown before the time is known: the rest are dropped and counted, not stored.
        trigger.fire();
        task.await.unwrap();
        assert!(sink.state().stored.is_empty());
        assert_eq!(
            health.counters.snapshot().readings_untimed_dropped,
            n as u64
        );
    }

    #[tokio::test(start_paused = true)]
    async fn position_fixes_travel_whole_and_bypass_the_filter() {
        use crate::sources::gps::readings::{HEADING, LATITUDE, LONGITUDE, SPEED};
        let sink = TestSink::default();
        let health = Arc::new(Health::default());
        let mut c = cfg(100, 2000, 65536);
        // A deadband that would drop every repeated value of these signals.
        c.default_filter.deadband = 1e9;
        let (tx, trigger, task) = start_sink(c, &sink, &health, Clock::new());
        let fix = |i: i64| {
            let t = T0 + i * 1000;
            [
                (LATITUDE, 48.0 + i as f64 * 1e-4),
                (LONGITUDE, 11.0),
                (HEADING, 0.0),
                (SPEED, 40.0),
            ]
            .map(|(signal, v)| Reading {
                signal: signal.into(),
                value: Value::Num(v),
                unit: String::new(),
                time: t,
                source: "gps".into(),
            })
        };
        for i in 0..5 {
            for r in fix(i) {
                tx.send(r).await.unwrap();
            }
        }
        settle(&health, |c| c.readings_in == 20).await;
        // Without shutdown: the last fix settles, and after the GPS is silent for 5 s it is
        // kept (the pipeline's timer polls the logger).
        until(
            || stored_readings(&sink).len() == 8,
            || format!("{} stored", stored_readings(&sink).len()),
        )
        .await;
        trigger.fire();
        task.await.unwrap();
        let key = |r: &Reading| (r.time, r.signal.clone());
        let mut got = stored_readings(&sink);
        got.sort_by_key(key);
        // First and last fix of a straight line, each whole; the deadband did not apply.
        let mut expected: Vec<Reading> = fix(0).to_vec();
        expected.extend(fix(4));
        expected.sort_by_key(key);
        assert_eq!(got, expected);
        let snap = health.counters.snapshot();
        assert_eq!((snap.readings_in, snap.readings_filtered), (20, 12));
    }
}
