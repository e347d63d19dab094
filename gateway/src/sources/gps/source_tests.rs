//! The `gps` source task on real pseudo-terminals: every capture in `gateway/tests/data/nmea/`
//! written byte for byte into a pty whose slave the running source reads, with the fix and
//! sentence counts of the sans-IO replay (`tests.rs`); unplug and replug at the same path.
//! Waits end when their condition holds; the deadlines are hang guards.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use waymark_wire::{Reading, Value};

use super::config::GpsMode;
use super::pty::Pty;
use super::tests::{EXPECTED, capture};
use super::*;
use crate::config::StoreConfig;
use crate::health::{CountersSnapshot, Health, HealthState};
use crate::shutdown::Trigger;
use crate::sources::{Source, SourceContext, SourceError};
use crate::store::Store;

const GUARD: Duration = Duration::from_secs(60);

struct Rig {
    dir: tempfile::TempDir,
    link: PathBuf,
    health: Arc<Health>,
    positions: Arc<Mutex<Vec<(i64, f64, f64)>>>,
    trigger: Trigger,
    task: tokio::task::JoinHandle<Result<(), SourceError>>,
    component: String,
}

async fn rig(tune: impl FnOnce(&mut GpsConfig)) -> (Rig, Pty) {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("usb-u-blox_GNSS_receiver-if00");
    let pty = Pty::open(&link).unwrap();
    let health = Arc::new(Health::default());
    let store_cfg = StoreConfig {
        path: dir.path().join("buffer.db"),
        ..StoreConfig::default()
    };
    let store = Store::open(&store_cfg, "TRUCK-042", health.clone()).unwrap();
    let mut cfg = GpsConfig::with_device(link.clone());
    cfg.reopen_min_ms = 20;
    cfg.reopen_max_ms = 200;
    // Replays arrive as one burst; a loaded machine must not cut an epoch in two.
    cfg.epoch_timeout_ms = 2000;
    tune(&mut cfg);
    assert!(cfg.problems().is_empty(), "{:?}", cfg.problems());
    let source = Gps::new(&cfg);
    let component = source.component();
    let (tx, mut rx) = mpsc::channel::<Reading>(64);
    let positions = Arc::new(Mutex::new(Vec::new()));
    let sink = positions.clone();
    tokio::spawn(async move {
        let mut lat = None;
        while let Some(r) = rx.recv().await {
            match (r.signal.as_str(), &r.value) {
                (readings::LATITUDE, Value::Num(v)) => lat = Some(*v),
                (readings::LONGITUDE, Value::Num(v)) => {
                    if let Some(la) = lat.take() {
                        sink.lock().unwrap().push((r.time, la, *v));
                    }
                }
                _ => {}
            }
        }
    });
    let trigger = Trigger::new();
    let ctx = SourceContext {
        readings: tx,
        store,
        health: health.clone(),
        // A unit that boots without a valid clock: GNSS time is the first time it gets.
        clock: crate::clock::Clock::with_system_clock(|| 0),
    };
    let task = tokio::spawn(Source::run(source, ctx, trigger.subscribe()));
    let rig = Rig {
        dir,
        link,
        health,
        positions,
        trigger,
        task,
        component,
    };
    rig.wait("the port open", |r| r.state() == Some(HealthState::Ok))
        .await;
    (rig, pty)
}

impl Rig {
    fn state(&self) -> Option<HealthState> {
        self.health
            .components()
            .get(&self.component)
            .map(|h| h.state)
    }

    fn counters(&self) -> CountersSnapshot {
        self.health.counters.snapshot()
    }

    async fn wait(&self, what: &str, cond: impl Fn(&Rig) -> bool) {
        let deadline = tokio::time::Instant::now() + GUARD;
        while !cond(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {:?} {:?}",
                self.health.components(),
                self.counters()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.trigger.fire();
        self.task.await.unwrap().unwrap();
        drop(self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_capture_through_a_real_pty_gives_the_replay_counts() {
    for &(name, accepted, _epochs, parsed, bad, invalid, cut) in EXPECTED {
        let (rig, mut pty) = rig(|_| {}).await;
        let bytes = capture(name);
        let writer = std::thread::spawn(move || {
            pty.write_all(&bytes).unwrap();
            pty
        });
        // The last epoch is closed by the silence after the capture.
        rig.wait(name, |r| {
            let c = r.counters();
            c.gps_sentences == parsed && c.gps_fixes == accepted && c.gps_overlong == cut
        })
        .await;
        // Let a wrong extra fix show up before counting.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let c = rig.counters();
        assert_eq!(
            (
                c.gps_fixes,
                c.gps_sentences,
                c.gps_bad_checksum,
                c.gps_invalid,
                c.gps_overlong
            ),
            (accepted, parsed, bad, invalid, cut),
            "{name}"
        );
        assert_eq!(
            rig.positions.lock().unwrap().len() as u64,
            accepted,
            "{name}"
        );
        for &(_, lat, lon) in rig.positions.lock().unwrap().iter() {
            assert!(lat.abs() <= 90.0 && lon.abs() <= 180.0 && (lat, lon) != (0.0, 0.0));
        }
        assert_eq!(c.gps_reopens, 0, "{name}");
        let pty = writer.join().unwrap();
        rig.stop().await;
        drop(pty);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplug_shows_a_gap_and_the_source_recovers_at_the_same_path() {
    let (rig, mut pty) = rig(|_| {}).await;
    let bytes = capture("sirfstarv-nmea.log");
    let (first, second) = bytes.split_at(bytes.len() / 2);
    pty.write_all(first).unwrap();
    rig.wait("fixes before the unplug", |r| r.counters().gps_fixes >= 20)
        .await;
    let before = rig.counters().gps_fixes;
    let up_since = rig.health.components()[&rig.component].since_ms;

    // Unplug: the master closes, the slave's reads fail.
    drop(pty);
    rig.wait("health down", |r| r.state() == Some(HealthState::Down))
        .await;
    let down = rig.health.components()[&rig.component].clone();
    assert!(down.since_ms >= up_since);
    assert!(
        down.detail
            .unwrap()
            .contains(&rig.link.display().to_string())
    );
    assert!(rig.counters().gps_reopens >= 1);
    // While unplugged the source retries with backoff (20 to 200 ms), not in a loop.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let reopens = rig.counters().gps_reopens;
    assert!(reopens <= 12, "{reopens} reopen attempts in 600 ms");

    // Replug at the same path (a new /dev/pts/N behind the link).
    let mut pty = Pty::open(&rig.link).unwrap();
    rig.wait("the port open again", |r| {
        r.state() == Some(HealthState::Ok)
    })
    .await;
    let back = rig.health.components()[&rig.component].since_ms;
    assert!(
        back >= down.since_ms,
        "the gap is visible: down since {} until {back}",
        down.since_ms
    );
    pty.write_all(second).unwrap();
    rig.wait("fixes after the replug", |r| {
        r.counters().gps_fixes >= before + 20
    })
    .await;
    rig.stop().await;
    drop(pty);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fix_time_disciplines_the_clock_and_stamps_the_readings() {
    // A receiver whose date is 1024 weeks behind (2007-04-09 on 2026-11-23): corrected by
    // the default `week_rollover_floor`.
    let (rig, mut pty) = rig(|_| {}).await;
    let line = |s: &str| format!("{s}*{:02X}\r\n", nmea::checksum(&s.as_bytes()[1..]));
    let mut text = String::new();
    for sec in 10..14 {
        text += &line(&format!(
            "$GPRMC,0004{sec}.00,A,4808.9993,N,01135.0798,E,30.0,45.0,090407,,,A"
        ));
        text += &line(&format!(
            "$GPGGA,0004{sec}.00,4808.9993,N,01135.0798,E,1,07,1.4,460.0,M,46.2,M,,"
        ));
    }
    pty.write_all(text.as_bytes()).unwrap();
    rig.wait("4 fixes", |r| r.counters().gps_fixes == 4).await;
    let expected = nmea::Date {
        year: 2026,
        month: 11,
        day: 23,
    }
    .utc_ms(nmea::TimeOfDay(250_000))
    .unwrap();
    let stamps: Vec<i64> = rig.positions.lock().unwrap().iter().map(|p| p.0).collect();
    assert_eq!(stamps.first().copied(), Some(expected), "{stamps:?}");
    rig.stop().await;
    drop(pty);
}

/// Positions (rounded to 1e-6°) the running source produced from `log`.
fn rounded(positions: &[(i64, f64, f64)]) -> Vec<(i64, i64)> {
    positions
        .iter()
        .map(|&(_, lat, lon)| ((lat * 1e6).round() as i64, (lon * 1e6).round() as i64))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpsd_fed_by_gpsfake_agrees_with_the_serial_source() {
    const LOG: &str = "bu353s4.log";
    // The serial source on the capture.
    // Static drift off in both: the stop point would depend on the first fix each saw.
    let (rig_serial, mut pty) = rig(|c| c.stop_speed_kmh = 0.0).await;
    pty.write_all(&capture(LOG)).unwrap();
    rig_serial
        .wait("serial fixes", |r| r.counters().gps_fixes == 25)
        .await;
    let serial = rounded(&rig_serial.positions.lock().unwrap());
    rig_serial.stop().await;
    drop(pty);

    // A real gpsd (started by gpsfake, loopback, free port) replaying the same capture.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = format!("{}/tests/data/nmea/{LOG}", env!("CARGO_MANIFEST_DIR"));
    let mut fake = std::process::Command::new("gpsfake")
        .args(["-1", "-q", "-c", "0.05", "-P", &port.to_string(), &log])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("gpsfake (Debian gpsd-clients) is needed: scripts/test installs it");
    let (rig_gpsd, _unused_pty) = rig(|c| {
        c.mode = GpsMode::Gpsd;
        c.gpsd = format!("127.0.0.1:{port}");
        c.stop_speed_kmh = 0.0;
    })
    .await;
    // The replay is over when no fix arrived for 3 s after the first ones.
    let deadline = std::time::Instant::now() + GUARD;
    let (mut last, mut since) = (0, std::time::Instant::now());
    loop {
        let n = rig_gpsd.counters().gps_fixes;
        if n != last {
            (last, since) = (n, std::time::Instant::now());
        } else if n > 0 && since.elapsed() >= Duration::from_secs(3) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gpsd replay did not settle"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_gpsfake(&mut fake);
    let gpsd = rounded(&rig_gpsd.positions.lock().unwrap());
    let c = rig_gpsd.counters();
    rig_gpsd.stop().await;
    // Every position gpsd reported is one the serial source reported (within 1e-6°: gpsd
    // prints 9 decimals of its own conversion); gpsd reports per its own cycle and may merge
    // or skip epochs of a fast replay, so the counts are compared loosely.
    assert!(
        gpsd.len() * 2 >= serial.len(),
        "{gpsd:?} vs {serial:?}, {c:?}"
    );
    for p in &gpsd {
        assert!(
            serial
                .iter()
                .any(|s| (s.0 - p.0).abs() <= 1 && (s.1 - p.1).abs() <= 1),
            "gpsd position {p:?} not in the serial source's {serial:?}"
        );
    }
}

/// Stops gpsfake: SIGTERM first (it then stops its gpsd), SIGKILL if it is still there after
/// 5 s. gpsfake's SIGTERM handler can wait forever for a gpsd that already exited (seen on a
/// machine without a D-Bus system bus), so a plain wait after SIGTERM may never return.
fn stop_gpsfake(fake: &mut std::process::Child) {
    std::process::Command::new("kill")
        .arg(fake.id().to_string())
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if fake.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    fake.kill().unwrap();
    fake.wait().unwrap();
}
