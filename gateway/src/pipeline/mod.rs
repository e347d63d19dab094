//! The telemetry pipeline: readings from the sources → [`Filter`] → [`Batcher`] → encoded
//! batches → [`Store::append_telemetry`]. The decisions live in the sans-IO [`Filter`] and
//! [`Batcher`]; [`run`] is the one task around them.
//!
//! # Invariants
//! - Every reading received is counted in `readings_in` and then in exactly one of
//!   `readings_filtered`, `readings_oversized`, `readings_stored` or
//!   `readings_lost_store_unavailable`, or it is still on its way (batcher, commit in
//!   flight, hold).
//! - A reading waits in memory at most `batch_window_ms` before its batch is handed to the
//!   store (DESIGN §3: that window is the only telemetry a power cut may lose).
//! - On shutdown, or when every sender is gone, the readings already in the channel are
//!   filtered and batched, the last batch is committed, and `run` returns only after every
//!   commit has been answered.
//! - Batches are handed to the store in the order they were built, at most
//!   [`MAX_COMMITS_IN_FLIGHT`] at a time so that the store's group commit can merge them.
//!   With that many in flight, intake waits: back-pressure reaches the sources through the
//!   bounded channel instead of memory growing here.
//! - A batch the store refuses (read-only or full disk, store restarting) is held in memory
//!   and retried with backoff ([`RETRY_MIN`] doubling to [`RETRY_MAX`]), one at a time,
//!   oldest first; newer batches queue behind it so order is kept. The hold is bounded by
//!   [`HOLD_MAX_BYTES`]: beyond it the oldest held batch is dropped and its readings counted
//!   in `readings_lost_store_unavailable` (logged at ERROR: data loss).
//!
//! # Hot path
//! Readings are taken from the channel in chunks ([`RECV_CHUNK`]) so that one wake-up
//! handles many; per reading there is one `HashMap` lookup by `&str` in the filter and a
//! move into the batch, no allocation. Counters are updated once per chunk. The filter's
//! clock is the reading's own timestamp (see [`filter`]); the batch window runs on the
//! gateway's monotonic clock from the arrival of a batch's first reading.

pub mod batcher;
pub mod filter;

use std::collections::VecDeque;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{error, info, warn};
use waymark_wire::Reading;

pub use batcher::Batcher;
pub use filter::Filter;

use crate::config::PipelineConfig;
use crate::health::{Health, HealthState};
use crate::shutdown::Shutdown;
use crate::store::{Store, StoreError, TelemetryBatch};

/// Readings taken from the channel per wake-up.
pub const RECV_CHUNK: usize = 512;
/// Telemetry commits awaiting the store at once.
pub const MAX_COMMITS_IN_FLIGHT: usize = 2;
/// Most encoded bytes held in memory while the store refuses batches.
pub const HOLD_MAX_BYTES: usize = 16 * 1024 * 1024;
/// First delay before a refused batch is offered again.
pub const RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest delay between offers of a refused batch.
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// Name of this component in the health registry.
const COMPONENT: &str = "pipeline";

/// Runs the pipeline until `shutdown` fires or every sender of `rx` is gone, then commits
/// what is pending (see the module invariants) and returns.
pub async fn run(
    cfg: PipelineConfig,
    rx: mpsc::Receiver<Reading>,
    store: Store,
    health: Arc<Health>,
    shutdown: Shutdown,
) {
    Pipeline::new(&cfg, store, health, HOLD_MAX_BYTES)
        .run(rx, shutdown)
        .await;
}

/// Where finished batches go: the [`Store`], or a test double.
trait Sink: Send + Sync + 'static {
    /// Why a batch was refused.
    type Error: fmt::Display + Send + 'static;
    /// Commits one batch.
    fn append(
        &self,
        batch: TelemetryBatch,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static;
}

impl Sink for Store {
    type Error = StoreError;
    fn append(
        &self,
        batch: TelemetryBatch,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let store = self.clone();
        async move { store.append_telemetry(batch).await }
    }
}

/// A commit that was answered.
struct Done<E> {
    /// A copy of the batch, kept to offer it again if it was refused.
    batch: TelemetryBatch,
    result: Result<(), E>,
}

type Commit<E> = Pin<Box<dyn Future<Output = Done<E>> + Send>>;

/// Commits in flight, oldest first. They are always polled in this order, so the store
/// receives them in the order they were started.
struct InFlight<E>(VecDeque<Commit<E>>);

impl<E: Send + 'static> InFlight<E> {
    fn start<S: Sink<Error = E>>(&mut self, sink: &S, batch: TelemetryBatch) {
        let copy = batch.clone();
        let commit = sink.append(batch);
        self.0.push_back(Box::pin(async move {
            Done {
                batch: copy,
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
    fn next_done(&mut self) -> impl Future<Output = Done<E>> + '_ {
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

/// Batches the store refused, oldest first, waiting to be offered again.
#[derive(Default)]
struct Hold {
    batches: VecDeque<TelemetryBatch>,
    bytes: usize,
    /// When the front batch may be offered again; `None` = now.
    retry_at: Option<Instant>,
    /// The next backoff delay.
    delay: Duration,
    /// A refusal was reported (health degraded) and not yet cleared.
    degraded: bool,
}

struct Pipeline<S: Sink> {
    filter: Filter,
    batcher: Batcher,
    max_bytes: usize,
    sink: S,
    health: Arc<Health>,
    in_flight: InFlight<S::Error>,
    hold: Hold,
    hold_max_bytes: usize,
    /// `batcher.oversized()` already counted and logged.
    oversized_seen: u64,
}

fn wall_ms() -> waymark_wire::Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl<S: Sink> Pipeline<S> {
    fn new(cfg: &PipelineConfig, sink: S, health: Arc<Health>, hold_max_bytes: usize) -> Self {
        let window = Duration::from_millis(cfg.batch_window_ms);
        Pipeline {
            filter: Filter::new(cfg),
            batcher: Batcher::new(window, cfg.batch_max_readings, cfg.batch_max_bytes),
            max_bytes: cfg.batch_max_bytes,
            sink,
            health,
            in_flight: InFlight(VecDeque::new()),
            hold: Hold {
                delay: RETRY_MIN,
                ..Hold::default()
            },
            hold_max_bytes,
            oversized_seen: 0,
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Reading>, shutdown: Shutdown) {
        self.health.set(COMPONENT, HealthState::Ok, None, wall_ms());
        let mut inbox = Vec::with_capacity(RECV_CHUNK);
        let sleep = tokio::time::sleep_until(Instant::now());
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        loop {
            let wake = self.next_wake();
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
                    if let Some(batch) = self.batcher.poll(Instant::now().into_std()) {
                        self.flush(batch).await;
                    }
                    self.pump();
                }
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

    /// The earliest of the batch deadline and the retry of a held batch.
    fn next_wake(&self) -> Option<Instant> {
        let batch = self.batcher.deadline().map(Instant::from_std);
        let retry = if self.in_flight.is_empty() {
            self.hold.retry_at
        } else {
            None
        };
        match (batch, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Filters and batches a chunk of readings (emptying `inbox`).
    async fn intake(&mut self, inbox: &mut Vec<Reading>) {
        let now = Instant::now().into_std();
        let received = inbox.len() as u64;
        let mut filtered = 0u64;
        for r in inbox.drain(..) {
            if !self.filter.keep(r.time, &r) {
                filtered += 1;
                continue;
            }
            if let Some(batch) = self.batcher.push(now, r) {
                self.flush(batch).await;
            }
        }
        let counters = &self.health.counters;
        Health::add(&counters.readings_in, received);
        Health::add(&counters.readings_filtered, filtered);
        let oversized = self.batcher.oversized() - self.oversized_seen;
        if oversized > 0 {
            self.oversized_seen = self.batcher.oversized();
            Health::add(&counters.readings_oversized, oversized);
            warn!(
                readings = oversized,
                batch_max_bytes = self.max_bytes,
                "Readings larger than a whole batch were dropped."
            );
        }
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

    /// Starts the commit of `batch`, or queues it behind held batches. Waits while
    /// [`MAX_COMMITS_IN_FLIGHT`] commits are pending.
    async fn submit(&mut self, batch: TelemetryBatch) {
        while self.hold.batches.is_empty() && self.in_flight.len() >= MAX_COMMITS_IN_FLIGHT {
            let done = self.in_flight.next_done().await;
            self.finished(done);
        }
        if self.hold.batches.is_empty() {
            self.in_flight.start(&self.sink, batch);
        } else {
            self.hold_back(batch);
            self.pump();
        }
    }

    /// Books the answer to a commit.
    fn finished(&mut self, done: Done<S::Error>) {
        match done.result {
            Ok(()) => {
                // `readings_stored` / `batches_stored` are counted by the store at commit.
                // The store works: offer held batches now, with the backoff reset.
                self.hold.retry_at = None;
                self.hold.delay = RETRY_MIN;
                if self.hold.degraded && self.hold.batches.is_empty() {
                    self.hold.degraded = false;
                    info!("The store takes telemetry again.");
                    self.health.set(COMPONENT, HealthState::Ok, None, wall_ms());
                }
                self.pump();
            }
            Err(e) => {
                let delay = self.hold.delay;
                warn!(
                    error = %e,
                    readings = done.batch.readings,
                    retry_in_ms = delay.as_millis() as u64,
                    "The store refused a telemetry batch; holding it in memory."
                );
                self.hold.degraded = true;
                self.health.set(
                    COMPONENT,
                    HealthState::Degraded,
                    Some(format!("store refuses telemetry: {e}")),
                    wall_ms(),
                );
                self.hold.bytes += done.batch.payload.len();
                self.hold.batches.push_front(done.batch);
                self.hold.retry_at = Some(Instant::now() + delay);
                self.hold.delay = (delay * 2).min(RETRY_MAX);
                self.trim_hold();
            }
        }
    }

    fn hold_back(&mut self, batch: TelemetryBatch) {
        self.hold.bytes += batch.payload.len();
        self.hold.batches.push_back(batch);
        self.trim_hold();
    }

    /// Drops the oldest held batches beyond the bound (always keeping the newest one).
    fn trim_hold(&mut self) {
        while self.hold.bytes > self.hold_max_bytes && self.hold.batches.len() > 1 {
            if let Some(lost) = self.hold.batches.pop_front() {
                self.hold.bytes -= lost.payload.len();
                Health::add(
                    &self.health.counters.readings_lost_store_unavailable,
                    u64::from(lost.readings),
                );
                error!(
                    readings = lost.readings,
                    hold_max_bytes = self.hold_max_bytes,
                    "The store refuses telemetry and the hold is full; dropped the oldest batch."
                );
            }
        }
    }

    /// Offers the oldest held batch again when its retry is due and nothing is in flight.
    fn pump(&mut self) {
        let due = self.hold.retry_at.is_none_or(|at| at <= Instant::now());
        if due
            && self.in_flight.is_empty()
            && let Some(batch) = self.hold.batches.pop_front()
        {
            self.hold.bytes -= batch.payload.len();
            self.hold.retry_at = None;
            self.in_flight.start(&self.sink, batch);
        }
    }

    /// Shutdown: takes what is already in the channel, commits everything pending and waits
    /// for the answers; held batches get one last offer each.
    async fn drain(mut self, mut rx: mpsc::Receiver<Reading>, mut inbox: Vec<Reading>) {
        rx.close();
        while let Ok(r) = rx.try_recv() {
            inbox.push(r);
            if inbox.len() >= RECV_CHUNK {
                self.intake(&mut inbox).await;
            }
        }
        self.intake(&mut inbox).await;
        if let Some(batch) = self.batcher.take() {
            self.flush(batch).await;
        }
        while !self.in_flight.is_empty() {
            let done = self.in_flight.next_done().await;
            self.finished(done);
        }
        while let Some(batch) = self.hold.batches.pop_front() {
            let readings = batch.readings;
            match self.sink.append(batch).await {
                Ok(()) => {}
                Err(e) => {
                    Health::add(
                        &self.health.counters.readings_lost_store_unavailable,
                        u64::from(readings),
                    );
                    error!(error = %e, readings, "Shutdown: the store refused a held batch; it is lost.");
                }
            }
        }
        let c = self.health.counters.snapshot();
        info!(
            readings_in = c.readings_in,
            readings_stored = c.readings_stored,
            batches_stored = c.batches_stored,
            "Pipeline stopped; pending telemetry committed."
        );
    }
}

/// Encodes `readings` into batches of at most `max_bytes`, appended to `out`. Normally one
/// batch: the batcher keeps the size bound. Should an encoding still come out too large (or
/// fail), the readings are split in halves until each part fits; a single reading that does
/// not fit is dropped. Returns how many readings were dropped.
fn encode_batches(readings: &[Reading], max_bytes: usize, out: &mut Vec<TelemetryBatch>) -> u64 {
    if readings.is_empty() {
        return 0;
    }
    match waymark_wire::telemetry::encode(readings) {
        Ok(payload) if payload.len() <= max_bytes => {
            let (first_ms, last_ms) = readings.iter().fold((i64::MAX, i64::MIN), |(lo, hi), r| {
                (lo.min(r.time), hi.max(r.time))
            });
            out.push(TelemetryBatch {
                payload,
                readings: u32::try_from(readings.len()).unwrap_or(u32::MAX),
                first_ms,
                last_ms,
            });
            0
        }
        result => {
            let why = match result {
                Ok(payload) => format!("{} bytes, over the {max_bytes} byte limit", payload.len()),
                Err(e) => e.to_string(),
            };
            if let [r] = readings {
                error!(signal = %r.signal, source = %r.source, reason = %why, "Cannot encode a reading; dropped.");
                return 1;
            }
            warn!(readings = readings.len(), reason = %why, "Batch encoding failed; splitting it.");
            let (a, b) = readings.split_at(readings.len() / 2);
            encode_batches(a, max_bytes, out) + encode_batches(b, max_bytes, out)
        }
    }
}

#[cfg(test)]
mod tests {
    //! The task with paused tokio time, against the store and against test sinks that
    //! refuse, delay and record.

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

    /// Waits (on paused time) until the counters satisfy `done`.
    async fn settle(health: &Health, done: impl Fn(&CountersSnapshot) -> bool) {
        for _ in 0..100_000 {
            if done(&health.counters.snapshot()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("not settled: {:?}", health.counters.snapshot());
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
        let h = start(cfg(1000, 2000, max_bytes));
        let n = 2 * fit + 3;
        h.send(&readings(0..n as i64)).await;
        // Two full batches go at once, long before the window ends.
        settle(&h.health, |c| c.batches_stored == 2).await;
        assert!(tokio::time::Instant::now().elapsed() < Duration::from_millis(1000));
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

    /// A sink that can refuse, delay and record.
    #[derive(Clone, Default)]
    struct TestSink(Arc<Mutex<SinkState>>);

    #[derive(Default)]
    struct SinkState {
        refuse_next: usize,
        refuse_all: bool,
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
        type Error = String;
        fn append(
            &self,
            batch: TelemetryBatch,
        ) -> impl Future<Output = Result<(), String>> + Send + 'static {
            let sink = self.clone();
            async move {
                let delay = {
                    let mut s = sink.state();
                    s.offered.push(batch.first_ms);
                    if s.refuse_all || s.refuse_next > 0 {
                        s.refuse_next = s.refuse_next.saturating_sub(1);
                        return Err("attempt to write a readonly database".to_string());
                    }
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

    fn start_with(
        cfg: PipelineConfig,
        sink: TestSink,
        hold_max_bytes: usize,
    ) -> (
        mpsc::Sender<Reading>,
        Trigger,
        Arc<Health>,
        tokio::task::JoinHandle<()>,
    ) {
        let health = Arc::new(Health::default());
        let (tx, rx) = mpsc::channel(4096);
        let trigger = Trigger::new();
        let pipeline = Pipeline::new(&cfg, sink, health.clone(), hold_max_bytes);
        let task = tokio::spawn(pipeline.run(rx, trigger.subscribe()));
        (tx, trigger, health, task)
    }

    #[tokio::test(start_paused = true)]
    async fn commits_are_ordered_and_at_most_two_in_flight() {
        let sink = TestSink::default();
        sink.state().delay = Duration::from_millis(50);
        let (tx, trigger, health, task) =
            start_with(cfg(60_000, 2, 65536), sink.clone(), HOLD_MAX_BYTES);
        for r in readings(0..40) {
            tx.send(r).await.unwrap();
        }
        settle(&health, |c| c.batches_stored == 20).await;
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

    #[tokio::test(start_paused = true)]
    async fn refused_batches_are_held_and_retried_in_order() {
        let sink = TestSink::default();
        sink.state().refuse_next = 2;
        let (tx, trigger, health, task) =
            start_with(cfg(100, 2000, 65536), sink.clone(), HOLD_MAX_BYTES);
        let t = tokio::time::Instant::now();
        for r in readings(0..3) {
            tx.send(r).await.unwrap();
        }
        // Flushed at 100 ms and refused: held, retried after 1 s.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(health.components()[COMPONENT].state, HealthState::Degraded);
        // A newer batch queues behind the held one.
        for r in readings(3..5) {
            tx.send(r).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
        // The retry at 1.1 s was refused too; the next is 2 s later.
        assert_eq!(sink.state().offered, [T0, T0]);
        assert!(sink.state().stored.is_empty());
        settle(&health, |c| c.batches_stored == 2).await;
        assert!(t.elapsed() >= Duration::from_millis(3100));
        {
            let s = sink.state();
            assert_eq!(s.offered, [T0, T0, T0, T0 + 3]);
            assert_eq!(
                s.stored.iter().map(|b| b.readings).collect::<Vec<_>>(),
                [3, 2]
            );
        }
        assert_eq!(health.components()[COMPONENT].state, HealthState::Ok);
        let c = health.counters.snapshot();
        assert_eq!(
            (c.readings_stored, c.readings_lost_store_unavailable),
            (5, 0)
        );
        trigger.fire();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn hold_is_bounded_and_losses_are_counted() {
        let sink = TestSink::default();
        sink.state().refuse_all = true;
        // Room for one batch in the hold.
        let (tx, trigger, health, task) = start_with(cfg(100, 2000, 65536), sink.clone(), 1);
        for i in 0..3 {
            for r in readings(i * 10..i * 10 + 4) {
                tx.send(r).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // Three batches of 4; the hold keeps only the newest.
        let c = health.counters.snapshot();
        assert_eq!(
            (
                c.readings_in,
                c.readings_lost_store_unavailable,
                c.readings_stored
            ),
            (12, 8, 0)
        );
        trigger.fire();
        task.await.unwrap();
        // At shutdown the held batch gets one last offer, refused: lost and counted.
        let c = health.counters.snapshot();
        assert_eq!(
            (c.readings_lost_store_unavailable, c.readings_stored),
            (12, 0)
        );
        assert_eq!(sink.state().offered.last(), Some(&(T0 + 20)));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_offers_held_batches_once_more() {
        let sink = TestSink::default();
        sink.state().refuse_next = 1;
        let (tx, trigger, health, task) =
            start_with(cfg(100, 2000, 65536), sink.clone(), HOLD_MAX_BYTES);
        for r in readings(0..4) {
            tx.send(r).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(health.counters.snapshot().batches_stored, 0);
        trigger.fire();
        task.await.unwrap();
        let c = health.counters.snapshot();
        assert_eq!(
            (c.readings_stored, c.readings_lost_store_unavailable),
            (4, 0)
        );
    }

    #[test]
    fn encode_batches_splits_what_does_not_fit() {
        let rs = readings(0..8);
        let whole = encode(&rs).unwrap().len();
        let mut out = Vec::new();
        assert_eq!(encode_batches(&rs, whole, &mut out), 0);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].readings, out[0].first_ms, out[0].last_ms),
            (8, T0, T0 + 7)
        );

        // A limit the encoding does not meet (a broken size bound) splits the batch.
        let mut out = Vec::new();
        assert_eq!(encode_batches(&rs, whole / 2, &mut out), 0);
        assert!(out.len() >= 2);
        assert!(out.iter().all(|b| b.payload.len() <= whole / 2));
        assert_eq!(out.iter().map(|b| b.readings).sum::<u32>(), 8);
        let firsts: Vec<i64> = out.iter().map(|b| b.first_ms).collect();
        assert!(
            firsts.windows(2).all(|w| w[0] < w[1]),
            "order kept: {firsts:?}"
        );

        // A single reading that cannot fit is dropped and counted.
        let mut out = Vec::new();
        assert_eq!(encode_batches(&rs[..1], 1, &mut out), 1);
        assert!(out.is_empty());
        assert_eq!(encode_batches(&[], 1, &mut out), 0);

        // first_ms / last_ms are the earliest and latest times, whatever the order.
        let mut out = Vec::new();
        encode_batches(&[reading(5), reading(2), reading(9)], 1 << 20, &mut out);
        assert_eq!((out[0].first_ms, out[0].last_ms), (T0 + 2, T0 + 9));
    }
}
