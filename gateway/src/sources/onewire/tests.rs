//! The `onewire` source task against a fake sysfs tree in a temp dir and a real store: normal
//! reads of both file kinds, each fault kind, a probe appearing and disappearing.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use waymark_wire::Reading;

use super::*;
use crate::config::StoreConfig;
use crate::health::{Health, HealthState};
use crate::shutdown::Trigger;
use crate::store::Store;

const FRONT: &str = "28-0000075a1b2c";
const REAR: &str = "28-0000075a1b2d";
/// Hang guard only: every wait below ends as soon as its condition holds.
const GUARD: Duration = Duration::from_secs(30);

fn w1_slave(milli: i64, crc_ok: bool) -> String {
    let yes = if crc_ok { "YES" } else { "NO" };
    format!("72 01 4b 46 7f ff 0e 10 57 : crc=57 {yes}\n72 01 4b 46 7f ff 0e 10 57 t={milli}\n")
}

fn put(root: &Path, id: &str, file: &str, text: &str) {
    let dir = root.join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = dir.join(".tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join(file)).unwrap();
}

async fn health_of(health: &Health, component: &str) -> Option<(HealthState, Option<String>)> {
    health
        .components()
        .get(component)
        .map(|h| (h.state, h.detail.clone()))
}

async fn wait_health(
    health: &Health,
    component: &str,
    want: impl Fn(&(HealthState, Option<String>)) -> bool,
) -> (HealthState, Option<String>) {
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        if let Some(h) = health_of(health, component).await
            && want(&h)
        {
            return h;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "health never matched: {:?}",
            health_of(health, component).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The source task and what a test observes of it.
type Running = (
    Arc<Health>,
    mpsc::Receiver<Reading>,
    Trigger,
    tokio::task::JoinHandle<Result<(), SourceError>>,
    String,
);

/// A real store in `dir` and the source running on `cfg`.
fn start(dir: &Path, cfg: &OnewireConfig) -> Running {
    let health = Arc::new(Health::default());
    let store_cfg = StoreConfig {
        path: dir.join("buffer.db"),
        ..StoreConfig::default()
    };
    let store = Store::open(&store_cfg, "TRUCK-042", health.clone()).unwrap();
    let source = Onewire::new(cfg);
    let component = source.component();
    let (tx, rx) = mpsc::channel(64);
    let trigger = Trigger::new();
    let ctx = SourceContext {
        readings: tx,
        store,
        health: health.clone(),
        clock: crate::clock::Clock::new(),
    };
    let task = tokio::spawn(Source::run(source, ctx, trigger.subscribe()));
    (health, rx, trigger, task, component)
}

#[tokio::test]
async fn fake_sysfs_reads_faults_and_presence() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("devices");
    std::fs::create_dir_all(root.join("w1_bus_master1")).unwrap();
    put(&root, FRONT, "w1_slave", &w1_slave(4500, true));
    // A probe on a newer kernel's `temperature` file, not in the map.
    put(&root, "28-000000000001", "temperature", "-18250\n");

    let mut cfg = OnewireConfig::with_root(root.clone());
    cfg.name = "probes".into();
    cfg.poll_interval_ms = 100;
    cfg.probes = vec![
        ProbeConfig {
            id: FRONT.into(),
            compartment: "Front".into(),
        },
        ProbeConfig {
            id: REAR.into(),
            compartment: "Rear".into(),
        },
    ];
    assert!(cfg.problems().is_empty());
    let (health, mut rx, trigger, task, component) = start(dir.path(), &cfg);
    assert_eq!(component, "onewire:probes");

    // First poll: both present probes read; the mapped REAR is missing.
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(
            tokio::time::timeout(GUARD, rx.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    got.sort_by(|a, b| a.signal.cmp(&b.signal));
    assert_eq!(got[0].signal, "Vehicle.Cargo.Front.Temperature");
    assert_eq!(got[0].value, Value::Num(4.5));
    assert_eq!(got[0].unit, "celsius");
    assert_eq!(got[0].source, "probes");
    assert_eq!(
        got[1].signal,
        "Vehicle.Cargo.Probe.28-000000000001.Temperature"
    );
    assert_eq!(got[1].value, Value::Num(-18.25));
    let (state, detail) = wait_health(&health, &component, |h| h.1.is_some()).await;
    assert_eq!(state, HealthState::Degraded);
    assert_eq!(
        detail.as_deref(),
        Some("probe fault: 28-0000075a1b2d missing")
    );

    // REAR appears; then each fault kind on FRONT in turn shows in health and is never a
    // reading.
    put(&root, REAR, "w1_slave", &w1_slave(3000, true));
    wait_health(&health, &component, |h| h.0 == HealthState::Ok).await;
    let faults = [
        (w1_slave(4500, false), "crc_error"),
        (w1_slave(85_000, true), "power_on_reset"),
        (w1_slave(-127_000, true), "disconnected"),
        (w1_slave(150_000, true), "out_of_range"),
    ];
    for (text, name) in &faults {
        put(&root, FRONT, "w1_slave", text);
        let want = format!("probe fault: {FRONT} {name}");
        wait_health(&health, &component, |h| h.1.as_deref() == Some(&want)).await;
    }
    // A file not in the driver's format names the file and the line.
    put(
        &root,
        FRONT,
        "w1_slave",
        "72 01 4b : crc=57 YES\nnonsense\n",
    );
    let (_, detail) = wait_health(&health, &component, |h| {
        h.1.as_deref().is_some_and(|d| d.contains("w1_slave:2:"))
    })
    .await;
    assert!(
        detail
            .unwrap()
            .contains(&format!("{FRONT}/w1_slave:2: expected"))
    );
    // FRONT disappears: a configured probe gone is `missing`.
    std::fs::remove_dir_all(root.join(FRONT)).unwrap();
    let want = format!("probe fault: {FRONT} missing");
    wait_health(&health, &component, |h| h.1.as_deref() == Some(&want)).await;
    assert!(health.counters.snapshot().probe_faults >= 5);

    // No reading from any faulty poll: every FRONT reading is the first one's 4.5 °C.
    while let Ok(r) = rx.try_recv() {
        if r.signal == "Vehicle.Cargo.Front.Temperature" {
            assert_eq!(r.value, Value::Num(4.5), "a fault became a reading");
        }
    }

    trigger.fire();
    tokio::time::timeout(GUARD, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn missing_bus_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = OnewireConfig::with_root(dir.path().join("no-such-bus"));
    cfg.poll_interval_ms = 100;
    let (health, _rx, trigger, task, component) = start(dir.path(), &cfg);
    let (state, detail) = wait_health(&health, &component, |h| h.0 == HealthState::Down).await;
    assert_eq!(state, HealthState::Down);
    assert!(detail.unwrap().contains("no-such-bus"));
    trigger.fire();
    tokio::time::timeout(GUARD, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
