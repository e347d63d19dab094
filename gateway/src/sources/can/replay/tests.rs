//! The candump source end to end: a real capture replayed as fast as possible through the
//! real pipeline (with the CAN filter defaults) into a real SQLite store.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::config::{PipelineConfig, StoreConfig};
use crate::health::Health;
use crate::shutdown::Trigger;
use crate::sources::can::default_filters;
use crate::store::Store;

struct Outcome {
    health: Arc<Health>,
    store: Store,
    detail: String,
    _dir: tempfile::TempDir,
}

async fn replay(log: &str) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let health = Arc::new(Health::default());
    let store_cfg = StoreConfig {
        path: dir.path().join("buffer.db"),
        ..StoreConfig::default()
    };
    let store = Store::open(&store_cfg, "TRUCK-042", health.clone()).unwrap();
    let cfg = CandumpConfig {
        name: "replay".into(),
        path: Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/can/logs")
            .join(log),
        speed: 0.0,
        repeat: false,
        j1939: true,
        nmea2000: false,
        dbc: Vec::new(),
    };
    assert!(cfg.problems(true).is_empty());
    let pipeline = PipelineConfig {
        signals: default_filters(&[cfg.decode()]),
        ..PipelineConfig::default()
    };
    let source = Candump::new(&cfg).unwrap();
    let component = source.component();
    let (tx, rx) = mpsc::channel(1024);
    let trigger = Trigger::new();
    let clock = crate::clock::Clock::new();
    let ctx = SourceContext {
        readings: tx,
        store: store.clone(),
        health: health.clone(),
        clock: clock.clone(),
    };
    let pipe = tokio::spawn(crate::pipeline::run(
        pipeline,
        rx,
        store.clone(),
        health.clone(),
        clock,
        trigger.subscribe(),
    ));
    let task = tokio::spawn(Source::run(source, ctx, trigger.subscribe()));
    let detail = loop {
        let d = health
            .components()
            .get(&component)
            .and_then(|h| h.detail.clone());
        if let Some(d) = d.filter(|d| d.starts_with("finished")) {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    trigger.fire();
    task.await.unwrap().unwrap();
    pipe.await.unwrap();
    Outcome {
        health,
        store,
        detail,
        _dir: dir,
    }
}

#[tokio::test]
async fn idle_truck_into_the_store_thinned_by_the_filter() {
    let o = replay("css-j1939-truck-idle-10s.candump.log").await;
    assert!(o.detail.contains("3582 frames"), "{}", o.detail);
    let c = o.health.counters.snapshot();
    assert_eq!(c.can_frames, 3582);
    // 100 Hz EEC1 and 10 Hz CCVS1 at idle say little new: most readings are filtered,
    // and everything that passed is stored.
    assert!(c.readings_in > 1000, "{c:?}");
    assert!(c.readings_filtered * 10 > c.readings_in * 9, "{c:?}");
    assert_eq!(
        c.readings_in,
        c.readings_filtered + c.readings_stored,
        "{c:?}"
    );
    assert!(c.readings_stored > 0);
    let stats = o.store.stats().await.unwrap();
    assert!(stats.telemetry.rows > 0);
    assert_eq!(c.lines_rejected, 0);
}

#[tokio::test]
async fn vin_event_from_the_two_bus_capture_is_stored_once() {
    let o = replay("css-j1939-truck-tp-2bus.candump.log").await;
    assert!(o.detail.contains("1815 frames"), "{}", o.detail);
    let stats = o.store.stats().await.unwrap();
    assert_eq!(stats.milestone.rows, 1, "{stats:?}");
    assert_eq!(o.health.counters.snapshot().events_stored, 1);
}
