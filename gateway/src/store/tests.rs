//! Store tests on real SQLite files in temporary directories: round trips, lane order and
//! cursors, restart, group commit, quota and watermark, event expiry, corrupt and truncated
//! files, disk full (`PRAGMA max_page_count`) and read-only databases.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, mpsc};

use rusqlite::{Connection, OpenFlags};
use serde_json::json;
use tokio::sync::oneshot;
use uuid::Uuid;
use waymark_wire::CloudEvent;

use super::writer::{Command, Hook, Options, STORE_CORRUPTED};
use super::*;
use crate::health::HealthState;

/// 2026-11-23T07:52:50Z.
const T0: i64 = 1_795_420_370_000;
const VEHICLE: &str = "TRUCK-042";

struct Harness {
    _dir: tempfile::TempDir,
    cfg: StoreConfig,
    health: Arc<Health>,
    clock: Arc<AtomicI64>,
    read_only: Arc<AtomicBool>,
    hold_max_bytes: usize,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            path: dir.path().join("buffer.db"),
            max_bytes: 256 * 1024 * 1024,
            min_free_disk_bytes: 0,
            event_max_age_s: 30 * 24 * 3600,
            dedup_retention_s: 7 * 24 * 3600,
        };
        Harness {
            _dir: dir,
            cfg,
            health: Arc::new(Health::default()),
            clock: Arc::new(AtomicI64::new(T0)),
            read_only: Arc::new(AtomicBool::new(false)),
            hold_max_bytes: 8 * 1024 * 1024,
        }
    }

    fn options(&self) -> Options {
        let clock = Arc::clone(&self.clock);
        Options {
            clock: Arc::new(move || clock.load(Ordering::SeqCst)),
            force_read_only: Arc::clone(&self.read_only),
            hold_max_bytes: self.hold_max_bytes,
            time: None,
        }
    }

    /// Opens with a gateway clock as the store clock (as `Store::open_with_clock`).
    fn open_clocked(&self, clock: &crate::clock::Clock) -> Store {
        let now = clock.clone();
        let options = Options {
            clock: Arc::new(move || now.now()),
            time: Some(clock.clone()),
            ..self.options()
        };
        Store::open_with(&self.cfg, VEHICLE, Arc::clone(&self.health), options).unwrap()
    }

    fn open(&self) -> Store {
        Store::open_with(&self.cfg, VEHICLE, Arc::clone(&self.health), self.options()).unwrap()
    }

    fn path(&self) -> &Path {
        &self.cfg.path
    }

    fn set_clock(&self, ms: i64) {
        self.clock.store(ms, Ordering::SeqCst);
    }

    fn store_health(&self) -> HealthState {
        self.health.components()["store"].state
    }
}

async fn hook(store: &Store, hook: Hook) -> u64 {
    let (reply, rx) = oneshot::channel();
    store.tx.send(Command::Hook { hook, reply }).unwrap();
    rx.await.unwrap()
}

/// Appends an event that must be accepted; returns its sequence number.
async fn sequence_of(store: &Store, ev: NewEvent) -> u64 {
    store.append_event(ev).await.unwrap().sequence
}

fn event(lane: Lane, n: u64) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        type_: "waymark.milestone.arrived".into(),
        time_ms: T0 + n as i64,
        lane,
        subject: Some(format!("stop-{n}")),
        data: json!({"trip_id": "T1", "n": n}),
    }
}

fn big_event(lane: Lane, bytes: usize) -> NewEvent {
    NewEvent {
        data: json!({"blob": "x".repeat(bytes)}),
        ..event(lane, 0)
    }
}

fn batch(bytes: usize, readings: u32, tag: u8) -> TelemetryBatch {
    TelemetryBatch {
        payload: vec![tag; bytes],
        readings,
        first_ms: T0,
        last_ms: T0 + 999,
    }
}

fn fetch_all(live_since_ms: i64) -> Fetch {
    Fetch {
        after: LaneCursors::default(),
        live_since_ms,
        max_rows: usize::MAX,
        max_bytes: usize::MAX,
    }
}

fn parse(row: &OutboxRow) -> CloudEvent {
    CloudEvent::from_json(&row.payload).unwrap()
}

fn integrity_ok(path: &Path) {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let r: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(r, "ok");
}

/// Set-aside main files (their `-wal` / `-shm`, if any, are next to them).
fn set_aside_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.contains(".corrupt-") && !name.ends_with("-wal") && !name.ends_with("-shm")
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn round_trip_lane_order_cursors_and_limits() {
    let h = Harness::new();
    let store = h.open();
    store.append_telemetry(batch(100, 10, 1)).await.unwrap();
    let m1 = store.append_event(event(Lane::Milestone, 1)).await.unwrap();
    let a1 = store.append_event(event(Lane::Alert, 2)).await.unwrap();
    store.append_telemetry(batch(100, 20, 2)).await.unwrap();
    let a2 = store.append_event(event(Lane::Alert, 3)).await.unwrap();
    assert_eq!((m1.sequence, a1.sequence, a2.sequence), (1, 2, 3));
    assert!(!m1.duplicate);

    let rows = store.fetch(fetch_all(T0)).await.unwrap();
    let lanes: Vec<Lane> = rows.iter().map(|r| r.lane).collect();
    assert_eq!(
        lanes,
        [
            Lane::Alert,
            Lane::Alert,
            Lane::Milestone,
            Lane::Telemetry,
            Lane::Telemetry
        ]
    );
    assert_eq!(parse(&rows[0]).id, a1.id);
    assert_eq!(parse(&rows[1]).id, a2.id);
    assert_eq!(rows[3].payload, vec![1; 100]);
    assert_eq!(rows[3].readings, 10);
    assert_eq!(rows[3].kind, RowKind::Telemetry);
    assert_eq!(rows[3].created_ms, T0);

    // The stored CloudEvent.
    let ce = parse(&rows[2]);
    assert_eq!(ce.source, CloudEvent::source_for(VEHICLE));
    assert_eq!(ce.sequence, CloudEvent::format_sequence(1));
    assert_eq!(ce.time, "2026-11-23T07:52:50.001Z");
    assert_eq!(ce.subject.as_deref(), Some("stop-1"));
    assert_eq!(ce.data, json!({"trip_id": "T1", "n": 1}));
    assert_eq!(rows[2].kind, RowKind::Event);

    // Cursors: above a1 in the alert lane, above the first telemetry in live.
    let after = LaneCursors {
        alert: rows[0].row_id,
        live: rows[3].row_id,
        ..LaneCursors::default()
    };
    let got = store
        .fetch(Fetch {
            after,
            ..fetch_all(T0)
        })
        .await
        .unwrap();
    let ids: Vec<i64> = got.iter().map(|r| r.row_id).collect();
    assert_eq!(ids, [rows[1].row_id, rows[2].row_id, rows[4].row_id]);

    // max_rows, max_bytes (at least one row), and exact fits.
    let two = store
        .fetch(Fetch {
            max_rows: 2,
            ..fetch_all(T0)
        })
        .await
        .unwrap();
    assert_eq!(two.len(), 2);
    assert!(
        store
            .fetch(Fetch {
                max_rows: 0,
                ..fetch_all(T0)
            })
            .await
            .unwrap()
            .is_empty()
    );
    let one = store
        .fetch(Fetch {
            max_bytes: 1,
            ..fetch_all(T0)
        })
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    let fit = rows[0].payload.len() + rows[1].payload.len();
    let got = store
        .fetch(Fetch {
            max_bytes: fit,
            ..fetch_all(T0)
        })
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    let got = store
        .fetch(Fetch {
            max_bytes: fit - 1,
            ..fetch_all(T0)
        })
        .await
        .unwrap();
    assert_eq!(got.len(), 1);

    // Ack removes rows; unknown ids are ignored; the PUBACK time is kept.
    store
        .ack(vec![rows[0].row_id, rows[2].row_id, 999_999], T0 + 5)
        .await
        .unwrap();
    let left: Vec<i64> = store
        .fetch(fetch_all(T0))
        .await
        .unwrap()
        .iter()
        .map(|r| r.row_id)
        .collect();
    assert_eq!(left, [rows[1].row_id, rows[3].row_id, rows[4].row_id]);

    let stats = store.stats().await.unwrap();
    assert_eq!(
        (stats.alert.rows, stats.milestone.rows, stats.telemetry.rows),
        (1, 0, 2)
    );
    assert_eq!(stats.telemetry.bytes, 200);
    assert_eq!(stats.telemetry.readings, 30);
    assert_eq!(stats.telemetry.oldest_created_ms, Some(T0));
    assert_eq!(stats.milestone.oldest_created_ms, None);
    assert_eq!(stats.last_puback_ms, Some(T0 + 5));
    assert_eq!(stats.next_sequence, 4);
    assert!(stats.db_file_bytes > 0);
    assert_eq!(
        stats.health.as_ref().map(|h| h.state),
        Some(HealthState::Ok)
    );
    let doc = serde_json::to_value(&stats).unwrap();
    assert_eq!(doc["telemetry"]["rows"], 2);
    assert_eq!(doc["counters"]["events_expired"], 0);

    let c = h.health.counters.snapshot();
    assert_eq!(
        (c.events_stored, c.batches_stored, c.readings_stored),
        (3, 2, 30)
    );
    store.close().await.unwrap();
}

#[tokio::test]
async fn live_telemetry_goes_before_backlog() {
    let h = Harness::new();
    let store = h.open();
    store.append_telemetry(batch(10, 1, 1)).await.unwrap();
    store.append_telemetry(batch(10, 1, 2)).await.unwrap();
    h.set_clock(T0 + 120_000);
    store.append_telemetry(batch(10, 1, 3)).await.unwrap();
    let live_since = T0 + 60_000;
    let rows = store.fetch(fetch_all(live_since)).await.unwrap();
    let tags = |rows: &[OutboxRow]| rows.iter().map(|r| r.payload[0]).collect::<Vec<u8>>();
    assert_eq!(tags(&rows), [3, 1, 2]);
    let after_live = LaneCursors {
        live: rows[0].row_id,
        ..LaneCursors::default()
    };
    let got = store
        .fetch(Fetch {
            after: after_live,
            ..fetch_all(live_since)
        })
        .await
        .unwrap();
    assert_eq!(tags(&got), [1, 2]);
    let after_backlog = LaneCursors {
        backlog: rows[1].row_id,
        ..LaneCursors::default()
    };
    let got = store
        .fetch(Fetch {
            after: after_backlog,
            ..fetch_all(live_since)
        })
        .await
        .unwrap();
    assert_eq!(tags(&got), [3, 2]);
    store.close().await.unwrap();
}

#[tokio::test]
async fn restart_keeps_rows_sequence_and_dedup() {
    let h = Harness::new();
    let first = event(Lane::Milestone, 1);
    let store = h.open();
    store.append_event(first.clone()).await.unwrap();
    store.append_event(event(Lane::Alert, 2)).await.unwrap();
    store.append_event(event(Lane::Milestone, 3)).await.unwrap();
    store.append_telemetry(batch(50, 5, 7)).await.unwrap();
    let rows = store.fetch(fetch_all(T0)).await.unwrap();
    store.ack(vec![rows[0].row_id], T0).await.unwrap();
    store.close().await.unwrap();

    // Reopen: unacked rows are back, the sequence continues, the dedup remembers.
    let store = h.open();
    let again = store.fetch(fetch_all(T0)).await.unwrap();
    assert_eq!(again, rows[1..]);
    let dup = store.append_event(first.clone()).await.unwrap();
    assert_eq!(
        dup,
        Accepted {
            id: first.id,
            sequence: 1,
            duplicate: true
        }
    );
    assert_eq!(sequence_of(&store, event(Lane::Alert, 4)).await, 4);
    // Dropping every handle (no close) also stops the writer cleanly.
    drop(store);

    let store = h.open();
    assert_eq!(store.stats().await.unwrap().next_sequence, 5);
    assert_eq!(store.fetch(fetch_all(T0)).await.unwrap().len(), 4);
    assert_eq!(h.health.counters.snapshot().events_deduplicated, 1);
    store.close().await.unwrap();
    integrity_ok(h.path());
}

#[tokio::test]
async fn row_ids_are_never_reused() {
    let h = Harness::new();
    let store = h.open();
    store.append_telemetry(batch(10, 1, 1)).await.unwrap();
    store.append_telemetry(batch(10, 1, 2)).await.unwrap();
    let rows = store.fetch(fetch_all(T0)).await.unwrap();
    store
        .ack(rows.iter().map(|r| r.row_id).collect(), T0)
        .await
        .unwrap();
    store.close().await.unwrap();
    let store = h.open();
    store.append_telemetry(batch(10, 1, 3)).await.unwrap();
    let new = store.fetch(fetch_all(T0)).await.unwrap();
    assert!(
        new[0].row_id > rows[1].row_id,
        "{} <= {}",
        new[0].row_id,
        rows[1].row_id
    );
    store.close().await.unwrap();
}

/// Holds the writer at a gate and returns once it is blocked there: commands sent next queue
/// up and are drained together when the gate opens.
fn gate(store: &Store) -> (mpsc::Sender<()>, oneshot::Receiver<u64>) {
    let (release, open) = mpsc::channel();
    let (entered, blocked) = mpsc::channel();
    let (reply, gated) = oneshot::channel();
    let hook = Hook::Gate { entered, open };
    store.tx.send(Command::Hook { hook, reply }).unwrap();
    blocked.recv().unwrap();
    (release, gated)
}

fn send_event(store: &Store, ev: NewEvent) -> oneshot::Receiver<Result<Accepted, StoreError>> {
    let (reply, rx) = oneshot::channel();
    store
        .tx
        .send(Command::AppendEvent {
            ev,
            reply,
            out: None,
        })
        .unwrap();
    rx
}

/// Appends many batches without waiting for each commit (they group-commit), then waits.
async fn append_many(store: &Store, batches: impl IntoIterator<Item = TelemetryBatch>) {
    let answers: Vec<_> = batches
        .into_iter()
        .map(|batch| {
            let (reply, rx) = oneshot::channel();
            store
                .tx
                .send(Command::AppendTelemetry {
                    batch,
                    reply,
                    out: None,
                })
                .unwrap();
            rx
        })
        .collect();
    for rx in answers {
        rx.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn duplicate_in_the_same_group_is_answered_once() {
    let h = Harness::new();
    let store = h.open();
    let before = hook(&store, Hook::Commits).await;
    let (open, gated) = gate(&store);
    let ev = event(Lane::Alert, 1);
    let a = send_event(&store, ev.clone());
    let b = send_event(&store, ev.clone());
    open.send(()).unwrap();
    gated.await.unwrap();
    let (a, b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
    assert_eq!((a.sequence, a.duplicate), (1, false));
    assert_eq!((b.sequence, b.duplicate), (1, true));
    assert_eq!(hook(&store, Hook::Commits).await - before, 1);
    assert_eq!(store.fetch(fetch_all(T0)).await.unwrap().len(), 1);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_gap_free() {
    let h = Harness::new();
    let store = h.open();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let s = store.clone();
        tasks.spawn(async move { s.append_event(event(Lane::Milestone, i)).await.unwrap() });
    }
    let mut seqs = Vec::new();
    while let Some(r) = tasks.join_next().await {
        seqs.push(r.unwrap().sequence);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
    let rows = store.fetch(fetch_all(T0)).await.unwrap();
    let mut in_db: Vec<u64> = rows
        .iter()
        .map(|r| parse(r).sequence_number().unwrap())
        .collect();
    in_db.sort_unstable();
    assert_eq!(in_db, seqs);
    store.close().await.unwrap();
}

#[tokio::test]
async fn group_commit_uses_one_transaction_per_drained_group() {
    let h = Harness::new();
    let store = h.open();
    let before = hook(&store, Hook::Commits).await;
    // Block the writer, queue 600 appends, then let it go: 512 + 88 in two commits.
    let (open, gated) = gate(&store);
    let answers: Vec<_> = (0..600)
        .map(|i| send_event(&store, event(Lane::Milestone, i)))
        .collect();
    open.send(()).unwrap();
    gated.await.unwrap();
    let mut seqs = Vec::new();
    for rx in answers {
        seqs.push(rx.await.unwrap().unwrap().sequence);
    }
    // FIFO: answers in sending order carry increasing sequence numbers.
    assert_eq!(seqs, (1..=600).collect::<Vec<u64>>());
    assert_eq!(hook(&store, Hook::Commits).await - before, 2);
    store.close().await.unwrap();
}

#[tokio::test]
async fn ack_before_fetch_in_one_group_is_visible() {
    let h = Harness::new();
    let store = h.open();
    store.append_telemetry(batch(10, 1, 1)).await.unwrap();
    store.append_telemetry(batch(10, 1, 2)).await.unwrap();
    let rows = store.fetch(fetch_all(T0)).await.unwrap();
    let (open, gated) = gate(&store);
    let (ack_reply, ack_rx) = oneshot::channel();
    store
        .tx
        .send(Command::Ack {
            row_ids: vec![rows[0].row_id],
            now_ms: T0,
            reply: ack_reply,
            out: None,
        })
        .unwrap();
    let (fetch_reply, fetch_rx) = oneshot::channel();
    store
        .tx
        .send(Command::Fetch {
            fetch: fetch_all(T0),
            reply: fetch_reply,
            out: None,
        })
        .unwrap();
    open.send(()).unwrap();
    gated.await.unwrap();
    ack_rx.await.unwrap().unwrap();
    let got = fetch_rx.await.unwrap().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].row_id, rows[1].row_id);
    store.close().await.unwrap();
}

#[tokio::test]
async fn bad_events_are_refused_without_using_a_sequence_number() {
    let h = Harness::new();
    let store = h.open();
    let err = store
        .append_event(big_event(Lane::Alert, 70_000))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::EventTooLarge { max: 65_536, .. }),
        "{err}"
    );
    let err = store
        .append_event(event(Lane::Telemetry, 1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidEvent(_)), "{err}");
    let err = store
        .append_event(NewEvent {
            type_: String::new(),
            ..event(Lane::Alert, 1)
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidEvent(_)), "{err}");
    assert_eq!(sequence_of(&store, event(Lane::Alert, 1)).await, 1);
    store.close().await.unwrap();
}

#[tokio::test]
async fn quota_drops_oldest_telemetry_and_never_events() {
    let mut h = Harness::new();
    h.cfg.max_bytes = 10_000;
    let store = h.open();
    let e1 = store.append_event(event(Lane::Milestone, 1)).await.unwrap();
    let event_bytes = store.stats().await.unwrap().milestone.bytes;
    for tag in 0..20u8 {
        store.append_telemetry(batch(1000, 10, tag)).await.unwrap();
    }
    let stats = store.stats().await.unwrap();
    let kept = (10_000 - event_bytes) / 1000;
    assert_eq!(stats.telemetry.rows, kept);
    assert!(stats.telemetry.bytes + stats.milestone.bytes <= 10_000);
    assert_eq!(stats.counters.telemetry_dropped_rows, 20 - kept);
    assert_eq!(stats.counters.telemetry_dropped_readings, (20 - kept) * 10);
    // The oldest went; the newest stayed, in order.
    let rows = store.fetch(fetch_all(T0)).await.unwrap();
    assert_eq!(parse(&rows[0]).id, e1.id);
    let tags: Vec<u8> = rows[1..].iter().map(|r| r.payload[0]).collect();
    assert_eq!(tags, ((20 - kept) as u8..20).collect::<Vec<u8>>());
    assert_eq!(h.store_health(), HealthState::Ok);

    // Events go in beyond the quota; telemetry makes way as far as there is any.
    for i in 0..10 {
        store
            .append_event(big_event(Lane::Alert, 2000 + i))
            .await
            .unwrap();
    }
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.alert.rows, 10);
    assert_eq!(stats.milestone.rows, 1);
    assert_eq!(stats.telemetry.rows, 0);
    assert!(stats.alert.bytes > 10_000);
    assert_eq!(stats.counters.telemetry_dropped_rows, 20);
    assert_eq!(h.store_health(), HealthState::Degraded);

    // No room for telemetry at all now: the new batch itself is dropped and counted.
    store.append_telemetry(batch(500, 7, 99)).await.unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.telemetry.rows, 0);
    assert_eq!(stats.counters.telemetry_dropped_rows, 21);
    assert_eq!(stats.counters.telemetry_dropped_readings, 207);
    store.close().await.unwrap();

    // The counters are persistent.
    let stats = read_stats(h.path()).unwrap();
    assert_eq!(stats.counters.telemetry_dropped_rows, 21);
    assert_eq!(stats.alert.rows, 10);
}

#[tokio::test]
async fn free_disk_watermark_drops_telemetry_but_not_events() {
    let mut h = Harness::new();
    // No filesystem has this much free: the watermark is always below.
    h.cfg.min_free_disk_bytes = u64::MAX / 2;
    let store = h.open();
    store.append_telemetry(batch(1000, 3, 1)).await.unwrap();
    store.append_event(event(Lane::Alert, 1)).await.unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.telemetry.rows, 0);
    assert_eq!(stats.alert.rows, 1);
    assert_eq!(stats.counters.telemetry_dropped_rows, 1);
    assert_eq!(stats.counters.telemetry_dropped_readings, 3);
    store.close().await.unwrap();
}

#[tokio::test]
async fn old_events_expire_and_are_counted() {
    let mut h = Harness::new();
    h.cfg.event_max_age_s = 3600;
    h.cfg.dedup_retention_s = 7200;
    let store = h.open();
    let old = event(Lane::Alert, 1);
    store.append_event(old.clone()).await.unwrap();
    store.append_event(event(Lane::Milestone, 2)).await.unwrap();
    store.append_telemetry(batch(10, 1, 1)).await.unwrap();
    h.set_clock(T0 + 3_600_001);
    let young = store.append_event(event(Lane::Milestone, 3)).await.unwrap();
    hook(&store, Hook::Sweep).await;
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.counters.events_expired, 2);
    assert_eq!(stats.alert.rows + stats.milestone.rows, 1);
    assert_eq!(stats.telemetry.rows, 1, "telemetry does not expire");
    let rows = store.fetch(fetch_all(0)).await.unwrap();
    assert_eq!(parse(&rows[0]).id, young.id);
    // The id is still remembered within the dedup retention ...
    assert!(store.append_event(old.clone()).await.unwrap().duplicate);
    // ... and forgotten after it.
    h.set_clock(T0 + 7_200_001);
    hook(&store, Hook::Sweep).await;
    let again = store.append_event(old).await.unwrap();
    assert!(!again.duplicate);
    assert_eq!(again.sequence, 4);
    store.close().await.unwrap();
}

#[tokio::test]
async fn rows_written_before_the_clock_was_valid_do_not_expire_at_once() {
    let mut h = Harness::new();
    h.cfg.event_max_age_s = 3600;
    h.set_clock(5_000); // booted without a clock: 1970
    let store = h.open();
    store.append_event(event(Lane::Alert, 1)).await.unwrap();
    h.set_clock(T0);
    hook(&store, Hook::Sweep).await;
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.counters.events_expired, 0);
    assert_eq!(
        stats.alert.oldest_created_ms,
        Some(T0),
        "re-stamped when the clock became valid"
    );
    h.set_clock(T0 + 3_600_001);
    hook(&store, Hook::Sweep).await;
    assert_eq!(store.stats().await.unwrap().counters.events_expired, 1);
    store.close().await.unwrap();
}

#[tokio::test]
async fn acked_space_returns_to_the_filesystem() {
    let h = Harness::new();
    let store = h.open();
    append_many(
        &store,
        (0..2000u32).map(|i| batch(4000, 1, (i % 250) as u8)),
    )
    .await;
    let ids: Vec<i64> = store
        .fetch(fetch_all(T0))
        .await
        .unwrap()
        .iter()
        .map(|r| r.row_id)
        .collect();
    store.ack(ids, T0).await.unwrap();
    store.close().await.unwrap();
    let size = std::fs::metadata(h.path()).unwrap().len();
    assert!(
        size < 2 * 1024 * 1024,
        "file is still {size} bytes after acking everything"
    );
    let conn = Connection::open(h.path()).unwrap();
    let free: i64 = conn
        .query_row("PRAGMA freelist_count", [], |r| r.get(0))
        .unwrap();
    assert!(free * 4096 <= 1024 * 1024, "{free} free pages left");
    let mode: i64 = conn
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, 2, "auto_vacuum = INCREMENTAL");
}

#[tokio::test]
async fn garbage_file_is_set_aside_and_replaced() {
    let h = Harness::new();
    let garbage: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(h.path(), &garbage).unwrap();
    let store = h.open();
    let aside = set_aside_files(h.path().parent().unwrap());
    let expected = h
        .path()
        .with_file_name("buffer.db.corrupt-20261123T075250Z");
    assert_eq!(aside, std::slice::from_ref(&expected));
    assert_eq!(
        std::fs::read(&expected).unwrap(),
        garbage,
        "the old file is kept as it was"
    );

    let rows = store.fetch(fetch_all(T0)).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].lane, Lane::Alert);
    let ce = parse(&rows[0]);
    assert_eq!(ce.type_, STORE_CORRUPTED);
    assert_eq!(ce.sequence_number().unwrap(), 1);
    assert_eq!(ce.data["set_aside_path"], expected.display().to_string());
    assert_eq!(ce.data["sequence_continued"], false);
    assert!(
        ce.data["reason"]
            .as_str()
            .unwrap()
            .contains("not a database"),
        "{}",
        ce.data
    );
    assert_eq!(h.store_health(), HealthState::Ok);
    assert_eq!(sequence_of(&store, event(Lane::Alert, 1)).await, 2);
    store.close().await.unwrap();
    integrity_ok(h.path());
}

#[tokio::test]
async fn truncated_file_is_set_aside_and_the_sequence_continues() {
    let h = Harness::new();
    let store = h.open();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            store
                .append_event(event(Lane::Milestone, i))
                .await
                .unwrap()
                .id,
        );
    }
    append_many(&store, (0..400u32).map(|i| batch(3000, 1, i as u8))).await;
    store.close().await.unwrap();
    let len = std::fs::metadata(h.path()).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(h.path())
        .unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);

    let store = h.open();
    let aside = set_aside_files(h.path().parent().unwrap());
    assert_eq!(aside.len(), 1);
    let rows = store.fetch(fetch_all(T0)).await.unwrap();
    let alert = rows.iter().find(|r| r.lane == Lane::Alert).unwrap();
    let ce = parse(alert);
    assert_eq!(ce.type_, STORE_CORRUPTED);
    assert_eq!(ce.data["sequence_continued"], true, "{}", ce.data);
    assert_eq!(
        ce.sequence_number().unwrap(),
        6,
        "continues after the 5 events"
    );
    // The 5 unsent events lived in the first pages and were salvaged, in order.
    assert_eq!(ce.data["events_salvaged"], 5);
    let salvaged: Vec<Uuid> = rows
        .iter()
        .filter(|r| r.lane == Lane::Milestone)
        .map(|r| parse(r).id)
        .collect();
    assert_eq!(salvaged, ids);
    // Their ids are known: a producer retry is a duplicate.
    let dup = store
        .append_event(NewEvent {
            id: ids[0],
            ..event(Lane::Milestone, 0)
        })
        .await
        .unwrap();
    assert!(dup.duplicate);
    assert_eq!(sequence_of(&store, event(Lane::Alert, 9)).await, 7);
    store.close().await.unwrap();
    integrity_ok(h.path());
}

#[tokio::test]
async fn disk_full_refuses_events_holds_telemetry_and_recovers() {
    let h = Harness::new();
    let store = h.open();
    store.append_event(event(Lane::Alert, 1)).await.unwrap();
    // SQLITE_FULL beyond the current size.
    let pages = hook(&store, Hook::SetMaxPageCount(1)).await;
    assert!(pages > 1);
    let err = store
        .append_event(big_event(Lane::Alert, 20_000))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("disk full"), "{err}");
    assert_eq!(h.store_health(), HealthState::Down);
    for tag in 1..=3 {
        store.append_telemetry(batch(10_000, 5, tag)).await.unwrap();
    }
    // Reads still work.
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.held_batches, stats.held_readings), (3, 15));
    assert_eq!(stats.telemetry.rows, 0);
    assert_eq!(stats.next_sequence, 2, "the failed event used no number");
    let detail = stats.health.unwrap().detail.unwrap();
    assert!(detail.contains("3 telemetry batches"), "{detail}");
    // Still full on the next retry.
    hook(&store, Hook::RetryNow).await;
    assert_eq!(store.stats().await.unwrap().held_batches, 3);

    // Space returns.
    hook(&store, Hook::SetMaxPageCount(1 << 30)).await;
    hook(&store, Hook::RetryNow).await;
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.held_batches, 0);
    assert_eq!(stats.telemetry.rows, 3);
    assert_eq!(h.store_health(), HealthState::Ok);
    let tags: Vec<u8> = store
        .fetch(fetch_all(T0))
        .await
        .unwrap()
        .iter()
        .filter(|r| r.lane == Lane::Telemetry)
        .map(|r| r.payload[0])
        .collect();
    assert_eq!(tags, [1, 2, 3], "held telemetry committed in order");
    assert_eq!(sequence_of(&store, big_event(Lane::Alert, 20_000)).await, 2);
    assert_eq!(
        h.health.counters.snapshot().readings_lost_store_unavailable,
        0
    );
    store.close().await.unwrap();
    integrity_ok(h.path());
}

#[tokio::test]
async fn disk_full_hold_overflow_is_counted() {
    let mut h = Harness::new();
    h.hold_max_bytes = 25_000;
    let store = h.open();
    hook(&store, Hook::SetMaxPageCount(1)).await;
    store
        .append_event(big_event(Lane::Alert, 20_000))
        .await
        .unwrap_err();
    for tag in 1..=4 {
        store
            .append_telemetry(batch(10_000, 5 + u32::from(tag), tag))
            .await
            .unwrap();
    }
    assert_eq!(store.stats().await.unwrap().held_batches, 2);
    // Batches 1 (6 readings) and 2 (7 readings) were pushed out.
    assert_eq!(
        h.health.counters.snapshot().readings_lost_store_unavailable,
        13
    );
    // Closing while still full loses the rest, counted.
    store.close().await.unwrap();
    assert_eq!(
        h.health.counters.snapshot().readings_lost_store_unavailable,
        13 + 8 + 9
    );
}

#[tokio::test]
async fn disk_full_event_displaces_old_telemetry() {
    let h = Harness::new();
    let store = h.open();
    for tag in 1..=5 {
        store.append_telemetry(batch(10_000, 2, tag)).await.unwrap();
    }
    hook(&store, Hook::SetMaxPageCount(1)).await;
    let ok = store
        .append_event(big_event(Lane::Alert, 15_000))
        .await
        .unwrap();
    assert_eq!(ok.sequence, 1);
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.alert.rows, 1);
    assert!(
        stats.counters.telemetry_dropped_rows >= 2,
        "{:?}",
        stats.counters
    );
    assert_eq!(
        stats.telemetry.rows,
        5 - stats.counters.telemetry_dropped_rows
    );
    assert_eq!(h.store_health(), HealthState::Ok);
    store.close().await.unwrap();
}

#[tokio::test]
async fn read_only_database_degrades_keeps_reads_and_recovers() {
    let h = Harness::new();
    let store = h.open();
    store.append_event(event(Lane::Alert, 1)).await.unwrap();
    store.close().await.unwrap();

    // The connection is read-only, as SQLite opens it when the file cannot be opened for
    // writing: every write fails with SQLITE_READONLY.
    h.read_only.store(true, Ordering::SeqCst);
    let store = h.open();
    assert_eq!(h.store_health(), HealthState::Down);
    let err = store.append_event(event(Lane::Alert, 2)).await.unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
    store.append_telemetry(batch(100, 4, 1)).await.unwrap();
    // The backlog still drains.
    let rows = store.fetch(fetch_all(T0)).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert!(store.ack(vec![rows[0].row_id], T0).await.is_err());
    hook(&store, Hook::RetryNow).await;
    assert_eq!(
        h.store_health(),
        HealthState::Down,
        "still read-only after a reopen"
    );

    h.read_only.store(false, Ordering::SeqCst);
    hook(&store, Hook::RetryNow).await;
    assert_eq!(h.store_health(), HealthState::Ok);
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.telemetry.rows, stats.held_batches), (1, 0));
    assert_eq!(sequence_of(&store, event(Lane::Alert, 2)).await, 2);
    store.close().await.unwrap();
}

/// Unmounts on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = std::process::Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("could not unmount {}", self.0.display());
        }
    }
}

fn mount(args: &[&str]) -> bool {
    std::process::Command::new("mount")
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A real read-only filesystem (a read-only bind mount): open fails with SQLITE_CANTOPEN
/// (the WAL index cannot be created), the store starts degraded, and recovers when the mount
/// becomes writable. Needs `CAP_SYS_ADMIN`; without it the test says so and returns (the
/// read-only path is covered by the test above).
#[tokio::test]
async fn read_only_filesystem_bind_mount() {
    let h = Harness::new();
    let store = h.open();
    store.append_event(event(Lane::Alert, 1)).await.unwrap();
    store.close().await.unwrap();
    let dir = h.path().parent().unwrap().to_path_buf();
    let view = tempfile::tempdir().unwrap();
    if !mount(&[
        "--bind",
        dir.to_str().unwrap(),
        view.path().to_str().unwrap(),
    ]) {
        eprintln!("skipped: cannot bind-mount (not root / no CAP_SYS_ADMIN)");
        return;
    }
    let guard = Mount(view.path().to_path_buf());
    assert!(mount(&[
        "-o",
        "remount,bind,ro",
        view.path().to_str().unwrap()
    ]));

    let mut cfg = h.cfg.clone();
    cfg.path = view.path().join("buffer.db");
    let store = Store::open_with(&cfg, VEHICLE, Arc::clone(&h.health), h.options()).unwrap();
    assert_eq!(h.store_health(), HealthState::Down);
    let err = store.append_event(event(Lane::Alert, 2)).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    store.append_telemetry(batch(100, 4, 1)).await.unwrap();
    hook(&store, Hook::RetryNow).await;
    assert_eq!(h.store_health(), HealthState::Down);

    assert!(mount(&[
        "-o",
        "remount,bind,rw",
        view.path().to_str().unwrap()
    ]));
    hook(&store, Hook::RetryNow).await;
    assert_eq!(h.store_health(), HealthState::Ok);
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.alert.rows, stats.telemetry.rows), (1, 1));
    assert_eq!(sequence_of(&store, event(Lane::Alert, 2)).await, 2);
    store.close().await.unwrap();
    drop(guard);
}

#[tokio::test]
async fn read_stats_while_running_and_after_close() {
    let h = Harness::new();
    assert!(matches!(read_stats(h.path()), Err(StoreError::Read { .. })));
    let store = h.open();
    store.append_event(event(Lane::Milestone, 1)).await.unwrap();
    store.append_telemetry(batch(100, 9, 1)).await.unwrap();
    let live = read_stats(h.path()).unwrap();
    assert_eq!(
        (
            live.milestone.rows,
            live.telemetry.rows,
            live.telemetry.readings
        ),
        (1, 1, 9)
    );
    assert_eq!(live.next_sequence, 2);
    assert!(live.health.is_none());
    let mut from_writer = store.stats().await.unwrap();
    from_writer.health = None;
    from_writer.db_file_bytes = live.db_file_bytes;
    assert_eq!(from_writer, live);
    store.close().await.unwrap();
    let closed = read_stats(h.path()).unwrap();
    assert_eq!(closed.milestone, live.milestone);
    assert_eq!(closed.telemetry, live.telemetry);

    let other = h.path().with_file_name("other.db");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    assert!(matches!(read_stats(&other), Err(StoreError::Read { .. })));
}

#[tokio::test]
async fn newer_schema_is_refused_and_left_alone() {
    let h = Harness::new();
    h.open().close().await.unwrap();
    Connection::open(h.path())
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = Store::open_with(&h.cfg, VEHICLE, Arc::clone(&h.health), h.options()).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
    assert!(matches!(
        read_stats(h.path()),
        Err(StoreError::SchemaTooNew { .. })
    ));
    assert!(set_aside_files(h.path().parent().unwrap()).is_empty());
}

#[tokio::test]
async fn committed_wakes_the_uplink_and_close_stops_every_handle() {
    let h = Harness::new();
    let store = h.open();
    let other = store.clone();
    let notify = store.committed();
    store.append_telemetry(batch(10, 1, 1)).await.unwrap();
    notify.notified().await; // the stored permit
    store.close().await.unwrap();
    assert!(matches!(
        other.append_event(event(Lane::Alert, 1)).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(other.stats().await, Err(StoreError::Closed)));
}

/// A gateway clock whose system clock reads 1970 (a unit that booted without time).
fn clock_in_1970() -> crate::clock::Clock {
    crate::clock::Clock::with_system_clock(|| 5_000)
}

#[tokio::test]
async fn events_before_the_time_is_known_wait_and_are_restamped() {
    use waymark_wire::time::{EARLIEST_VALID_MS, parse_rfc3339_ms};
    let h = Harness::new();
    let clock = clock_in_1970();
    let store = h.open_clocked(&clock);
    let early = clock.now();
    assert!(early < EARLIEST_VALID_MS);
    let untimed = NewEvent {
        time_ms: early,
        ..event(Lane::Milestone, 1)
    };
    store.append_event(untimed).await.unwrap();
    // A later event with a producer time waits behind it: the lane keeps its order.
    store.append_event(event(Lane::Milestone, 2)).await.unwrap();
    store.append_event(event(Lane::Alert, 3)).await.unwrap();
    store.append_telemetry(batch(100, 1, 1)).await.unwrap();
    let rows = store.fetch(fetch_all(0)).await.unwrap();
    let lanes: Vec<Lane> = rows.iter().map(|r| r.lane).collect();
    assert_eq!(
        lanes,
        [Lane::Telemetry],
        "no event with a monotonic created_ms goes out"
    );
    // Sweeping while the time is unknown persists the clock state and changes nothing else.
    hook(&store, Hook::Sweep).await;
    let stats = store.stats().await.unwrap();
    assert_eq!(
        stats.clock.map(|c| c.source),
        Some(crate::clock::ClockSource::None)
    );
    assert_eq!(store.fetch(fetch_all(0)).await.unwrap().len(), 1);

    // GNSS time arrives: the sweep maps the monotonic stamps with the clock's offset.
    clock.observe_gnss(T0, std::time::Instant::now());
    hook(&store, Hook::Sweep).await;
    let rows = store.fetch(fetch_all(0)).await.unwrap();
    let events: Vec<CloudEvent> = rows
        .iter()
        .filter(|r| r.kind == RowKind::Event)
        .map(parse)
        .collect();
    assert_eq!(events.len(), 3);
    for (row, ev) in rows.iter().zip(&events) {
        assert!(row.created_ms >= EARLIEST_VALID_MS, "{row:?}");
        let t = parse_rfc3339_ms(&ev.time).unwrap();
        assert!(t >= EARLIEST_VALID_MS, "{}", ev.time);
    }
    let first = parse_rfc3339_ms(&events[1].time).unwrap();
    assert!(
        first <= T0 && first > T0 - 60_000,
        "mapped, not estimated: {first}"
    );
    assert_eq!(
        events[2].time,
        waymark_wire::time::format_rfc3339_ms(T0 + 2)
    );
    // The payload length (and so the quota's bytes) did not change.
    let stats = store.stats().await.unwrap();
    assert_eq!(
        stats.milestone.bytes,
        rows.iter()
            .filter(|r| r.lane == Lane::Milestone)
            .map(|r| r.payload.len() as u64)
            .sum::<u64>()
    );
    let c = stats.clock.unwrap();
    assert_eq!(c.source, crate::clock::ClockSource::Gnss);
    assert_eq!(c.last_sync_ms, Some(T0));
    store.close().await.unwrap();
    // `waymark status` reads it from the file.
    let c = crate::store::read_stats(h.path()).unwrap().clock.unwrap();
    assert_eq!(c.source, crate::clock::ClockSource::Gnss);
}

#[tokio::test]
async fn untimed_events_of_an_earlier_run_get_the_first_known_time() {
    use waymark_wire::time::parse_rfc3339_ms;
    let h = Harness::new();
    let clock = clock_in_1970();
    let store = h.open_clocked(&clock);
    let untimed = NewEvent {
        time_ms: clock.now(),
        ..event(Lane::Alert, 1)
    };
    store.append_event(untimed).await.unwrap();
    store.close().await.unwrap();

    // Restart: a new clock whose monotonic base is unrelated to the stored stamps.
    let clock = clock_in_1970();
    let store = h.open_clocked(&clock);
    assert!(store.fetch(fetch_all(0)).await.unwrap().is_empty());
    clock.observe_gnss(T0 + 3_600_000, std::time::Instant::now());
    hook(&store, Hook::Sweep).await;
    let rows = store.fetch(fetch_all(0)).await.unwrap();
    assert_eq!(rows.len(), 1);
    let t = parse_rfc3339_ms(&parse(&rows[0]).time).unwrap();
    assert!(
        (T0 + 3_600_000..T0 + 3_660_000).contains(&t),
        "the first known time: {t}"
    );
    assert_eq!(rows[0].created_ms, t);
    store.close().await.unwrap();
}
