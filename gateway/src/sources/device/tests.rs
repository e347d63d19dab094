//! The `device` source task against `waymark-devsim` on a real pseudo-terminal, with a real
//! store in a temp dir. Waits end when their condition holds; the deadlines are hang guards.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use waymark_devsim::Background;
use waymark_wire::{Reading, Value};

use super::*;
use crate::config::StoreConfig;
use crate::shutdown::Trigger;
use crate::store::{Fetch, Lane, LaneCursors, Store};

const GUARD: Duration = Duration::from_secs(60);

struct Rig {
    _dir: tempfile::TempDir,
    sim: Arc<Background>,
    store: Store,
    health: Arc<Health>,
    rx: mpsc::Receiver<Reading>,
    trigger: Trigger,
    task: tokio::task::JoinHandle<Result<(), SourceError>>,
    component: String,
}

async fn rig(tune: impl FnOnce(&mut DeviceConfig)) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("usb-Waymark_POD_1234-if00");
    let sim = Arc::new(Background::start(&link, Duration::from_millis(100)).unwrap());
    let health = Arc::new(Health::default());
    let store_cfg = StoreConfig {
        path: dir.path().join("buffer.db"),
        ..StoreConfig::default()
    };
    let store = Store::open(&store_cfg, "TRUCK-042", health.clone()).unwrap();
    let mut cfg = DeviceConfig::with_device(link);
    cfg.name = "pod".into();
    cfg.reopen_min_ms = 20;
    cfg.reopen_max_ms = 200;
    cfg.probes.push(ProbeConfig {
        id: "28-0000075a1b2c".into(),
        compartment: "Front".into(),
    });
    tune(&mut cfg);
    assert!(cfg.problems().is_empty(), "{:?}", cfg.problems());
    let source = Device::new(&cfg);
    let component = source.component();
    let (tx, rx) = mpsc::channel(1024);
    let trigger = Trigger::new();
    let ctx = SourceContext {
        readings: tx,
        store: store.clone(),
        health: health.clone(),
        clock: crate::clock::Clock::new(),
    };
    let task = tokio::spawn(Source::run(source, ctx, trigger.subscribe()));
    Rig {
        _dir: dir,
        sim,
        store,
        health,
        rx,
        trigger,
        task,
        component,
    }
}

impl Rig {
    /// Runs a devsim script on its thread; panics with the simulator's log if a wait failed.
    async fn script(&self, text: &str) {
        let sim = Arc::clone(&self.sim);
        let text = text.to_string();
        let ok = tokio::task::spawn_blocking(move || sim.run(&text))
            .await
            .unwrap();
        assert_eq!(ok, Ok(true), "devsim log:\n{}", self.sim.log().join("\n"));
    }

    async fn events(&self) -> Vec<serde_json::Value> {
        let rows = self
            .store
            .fetch(Fetch {
                after: LaneCursors::default(),
                live_since_ms: 0,
                max_rows: 1000,
                max_bytes: 1 << 24,
            })
            .await
            .unwrap();
        rows.iter()
            .filter(|r| r.lane == Lane::Alert)
            .map(|r| serde_json::from_slice(&r.payload).unwrap())
            .collect()
    }

    async fn health_until(&self, want: impl Fn(HealthState, &str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + GUARD;
        loop {
            let h = self.health.components().get(&self.component).cloned();
            if let Some(h) = &h {
                let d = h.detail.clone().unwrap_or_default();
                if want(h.state, &d) {
                    return d;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "health stuck at {h:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.trigger.fire();
        tokio::time::timeout(GUARD, self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn pod_press_is_one_event_acked_after_commit_even_with_retries() {
    let rig = rig(|_| {}).await;
    rig.script(
        "hello id=00000000000004d2 fw=2.1.0\n\
         pod seq=1 outcome=delivered stop=STOP-7 order=ORD-1 recipient=\"J. Smith\"\n\
         wait 30000",
    )
    .await;
    let events = rig.events().await;
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["type"], "waymark.pod.delivered");
    assert_eq!(e["id"], event_id(0x4d2, 1).to_string());
    assert_eq!(e["subject"], "STOP-7");
    assert_eq!(e["data"]["device_id"], "00000000000004d2");
    assert_eq!(e["data"]["firmware"], "2.1.0");
    assert_eq!(e["data"]["order_ref"], "ORD-1");
    assert_eq!(e["data"]["recipient"], "J. Smith");
    assert_eq!(e["data"]["source"], "pod");

    // Acks lost on the wire: the device retries the same POD; still one event.
    rig.script("ignore-acks 3\npod seq=2 outcome=refused\nsleep 800\nwait 30000")
        .await;
    let events = rig.events().await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(rig.sim.log().iter().filter(|l| *l == "retry seq=2").count() >= 2);
    assert!(rig.health.counters.snapshot().events_deduplicated >= 1);
    rig.stop().await;
}

#[tokio::test]
async fn a_new_gateway_on_the_same_store_answers_a_retry_from_dedup() {
    // The first gateway commits, but its ack is lost (ignored); it then goes away. The
    // second, on the same store file, gets the device's retry: exactly one event survives.
    let rig = rig(|_| {}).await;
    rig.script("hello id=00000000000004d2\nignore-acks 1000\npod seq=9\nsleep 500")
        .await;
    assert_eq!(rig.events().await.len(), 1);
    let Rig {
        _dir: dir,
        sim,
        store,
        health,
        trigger,
        task,
        ..
    } = rig;
    trigger.fire();
    task.await.unwrap().unwrap();
    drop(store);
    let store = Store::open(
        &StoreConfig {
            path: dir.path().join("buffer.db"),
            ..StoreConfig::default()
        },
        "TRUCK-042",
        health.clone(),
    )
    .unwrap();
    let mut cfg = DeviceConfig::with_device(dir.path().join("usb-Waymark_POD_1234-if00"));
    cfg.reopen_min_ms = 20;
    let (tx, _rx) = mpsc::channel(16);
    let trigger = Trigger::new();
    let task = tokio::spawn(Source::run(
        Device::new(&cfg),
        SourceContext {
            readings: tx,
            store: store.clone(),
            health,
            clock: crate::clock::Clock::new(),
        },
        trigger.subscribe(),
    ));
    let s = Arc::clone(&sim);
    let ok = tokio::task::spawn_blocking(move || s.run("ignore-acks 0\nwait 30000"))
        .await
        .unwrap();
    assert_eq!(ok, Ok(true), "{}", sim.log().join("\n"));
    // The restarted gateway's TimeSync made the device introduce itself again.
    assert!(sim.log().iter().any(|l| l == "sent hello (again)"));
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.alert.rows, 1);
    trigger.fire();
    task.await.unwrap().unwrap();
    drop(dir);
}

#[tokio::test]
async fn temperatures_and_doors_are_readings_and_faults_are_health() {
    let mut rig = rig(|_| {}).await;
    rig.script(
        "hello id=00000000000000aa kind=temperature_probe\n\
         temp seq=1 probe=28-0000075a1b2c c=-18.25\n\
         temp seq=2 probe=28-0000075a1b2c c=85 status=power_on_reset\n\
         door seq=3 open=true\n\
         wait 30000",
    )
    .await;
    let t = tokio::time::timeout(GUARD, rig.rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.signal, "Vehicle.Cargo.Front.Temperature");
    assert_eq!(t.value, Value::Num(-18.25));
    let d = tokio::time::timeout(GUARD, rig.rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.signal, "Vehicle.Cargo.Door.IsOpen");
    assert_eq!(d.value, Value::Bool(true));
    assert!(rig.rx.try_recv().is_err(), "the fault became a reading");
    let detail = rig
        .health_until(|s, d| s == HealthState::Degraded && d.contains("probe fault"))
        .await;
    assert_eq!(detail, "probe fault: 28-0000075a1b2c power_on_reset");
    assert_eq!(rig.health.counters.snapshot().probe_faults, 1);
    rig.stop().await;
}

#[tokio::test]
async fn version_mismatch_is_a_clear_error_and_the_device_is_told() {
    let rig = rig(|_| {}).await;
    rig.script("version 2\nhello\nexpect-nack version_mismatch 30000")
        .await;
    let detail = rig.health_until(|s, _| s == HealthState::Down).await;
    assert!(
        detail.contains("protocol version mismatch") && detail.contains("version 2"),
        "{detail}"
    );
    // A firmware update later: version 1 heals it.
    rig.script("version 1\nhello\npod seq=1\nwait 30000").await;
    rig.health_until(|s, _| s == HealthState::Ok).await;
    rig.stop().await;
}

#[tokio::test]
async fn garbage_and_oversized_floods_are_survived_and_data_still_flows() {
    let rig = rig(|c| c.max_frames_per_s = 20).await;
    rig.script(
        "hello\ngarbage 200000\noversized 100000\nbadcrc\nbadcrc\ngarbage 50000\n\
         pod seq=1\nwait 30000",
    )
    .await;
    assert_eq!(rig.events().await.len(), 1);
    let c = rig.health.counters.snapshot();
    assert!(c.device_frames_invalid > 0, "{c:?}");
    assert!(c.device_frames_dropped > 0, "{c:?}");
    rig.stop().await;
}

#[tokio::test]
async fn unplug_and_replug_recover() {
    let rig = rig(|_| {}).await;
    rig.script("hello\npod seq=1\nwait 30000").await;
    rig.script("unplug 300").await;
    rig.script("pod seq=2\nwait 30000").await;
    assert_eq!(rig.events().await.len(), 2);
    assert!(
        rig.sim
            .log()
            .iter()
            .any(|l| l.starts_with("replugged pty "))
    );
    rig.health_until(|s, _| s == HealthState::Ok).await;
    rig.stop().await;
}

#[tokio::test]
async fn heartbeat_timeout_shows_in_health() {
    let rig = rig(|c| {
        c.heartbeat_interval_s = 0;
        c.heartbeat_timeout_s = 1;
    })
    .await;
    rig.script("hello\nsleep 300").await;
    let detail = rig
        .health_until(|s, d| s == HealthState::Degraded && d.contains("heartbeat"))
        .await;
    assert!(detail.starts_with("heartbeat timeout"), "{detail}");
    rig.script("heartbeat uptime=5").await;
    rig.health_until(|s, _| s == HealthState::Ok).await;
    rig.stop().await;
}

/// Config errors of `device` and `onewire` entries name the file, line and key path.
#[test]
fn config_errors_name_the_key() {
    use crate::config::{Config, ConfigError, FileChecks};
    let text = "[vehicle]\nid = \"T-1\"\n[mqtt]\nhost = \"b\"\ntls = false\n\
                [[sources]]\ntype = \"device\"\ndevice = \"/dev/ttyACM0\"\n\
                heartbeat_interval_s = 30\nheartbeat_timeout_s = 30\nreopen_min_ms = 0\n\
                [[sources.probes]]\nid = \"28-XYZ\"\ncompartment = \"Front Left\"\n\
                [[sources]]\ntype = \"device\"\nname = \"b\"\ndevice = \"/dev/ttyACM0\"\n\
                [[sources]]\ntype = \"onewire\"\npoll_interval_ms = 5\n";
    let Err(ConfigError::Invalid { problems, .. }) =
        Config::from_toml_with(text, std::path::Path::new("w.toml"), FileChecks::Skip)
    else {
        panic!("accepted");
    };
    let got: Vec<String> = problems
        .iter()
        .map(|p| format!("{}:{}", p.line, p.key))
        .collect();
    for want in [
        "10:sources[0].heartbeat_timeout_s",
        "11:sources[0].reopen_min_ms",
        "13:sources[0].probes[0].id",
        "14:sources[0].probes[0].compartment",
        "18:sources[1].device",
        "21:sources[2].poll_interval_ms",
    ] {
        assert!(got.iter().any(|g| g == want), "{want} not in {got:?}");
    }
    assert_eq!(got.len(), 6, "{problems:?}");
}
