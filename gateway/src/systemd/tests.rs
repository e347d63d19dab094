//! systemd integration on real parts: a real `AF_UNIX` datagram socket stands in for systemd's
//! notify socket, a real store (SQLite file, writer thread) and pipeline task make the
//! heartbeats, and the store's writer is blocked through its test gate as a hung `fsync` would.

use std::ffi::OsStr;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
#[path = "../../../tests/support/notify.rs"]
mod notify;
use crate::config::{PipelineConfig, StoreConfig};
use crate::shutdown::Trigger;
use crate::store::Store;
use notify::FakeSystemd;

const PID: u32 = 4242;

fn values(
    socket: Option<&str>,
    usec: Option<&str>,
    pid: Option<&str>,
) -> Result<Notifier, SystemdError> {
    Notifier::from_values(socket.map(OsStr::new), usec, pid, PID)
}

#[test]
fn environment_is_parsed_as_systemd_sets_it() {
    let n = values(None, None, None).unwrap();
    assert!(!n.is_enabled());
    assert_eq!(n.watchdog(), None);

    let n = values(Some("/run/systemd/notify"), None, None).unwrap();
    assert!(n.is_enabled());
    assert_eq!(n.watchdog(), None);

    let n = values(Some("/run/systemd/notify"), Some("30000000"), Some("4242")).unwrap();
    assert_eq!(n.watchdog(), Some(Duration::from_secs(30)));

    // No WATCHDOG_PID: the watchdog is ours.
    let n = values(
        Some("@/org/freedesktop/systemd1/notify/1"),
        Some("5000000"),
        None,
    )
    .unwrap();
    assert_eq!(n.watchdog(), Some(Duration::from_secs(5)));
    assert_eq!(
        n.target.as_ref().map(|t| t.0.clone()),
        Some(Target::Abstract(
            b"/org/freedesktop/systemd1/notify/1".to_vec()
        ))
    );

    // Someone else's watchdog (inherited by a child): not ours, even if garbage.
    let n = values(Some("/run/systemd/notify"), Some("30000000"), Some("1")).unwrap();
    assert_eq!(n.watchdog(), None);
    let n = values(Some("/run/systemd/notify"), Some("x"), Some("1")).unwrap();
    assert_eq!(n.watchdog(), None);

    // A watchdog without a socket cannot be fed: disabled.
    let n = values(None, Some("30000000"), None).unwrap();
    assert_eq!(n.watchdog(), None);
}

#[test]
fn bad_environment_is_refused_with_the_value() {
    for usec in ["", "0", "-5", "1.5", "30s"] {
        let e = values(Some("/run/n"), Some(usec), None).unwrap_err();
        assert!(
            matches!(&e, SystemdError::BadWatchdogUsec(v) if v == usec),
            "{e}"
        );
        assert!(e.to_string().contains("WATCHDOG_USEC"));
    }
    for socket in ["", "@", "relative/path"] {
        let e = values(Some(socket), None, None).unwrap_err();
        assert!(
            matches!(&e, SystemdError::BadNotifySocket(v) if v == socket),
            "{e}"
        );
    }
}

#[test]
fn send_reaches_a_path_socket_and_without_socket_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let rx = UnixDatagram::bind(&path).unwrap();
    let n = Notifier::to_path(&path, None);
    n.send("READY=1\nSTATUS=x\n").unwrap();
    let mut buf = [0u8; 256];
    let len = rx.recv(&mut buf).unwrap();
    assert_eq!(&buf[..len], b"READY=1\nSTATUS=x\n");

    values(None, None, None).unwrap().send("READY=1\n").unwrap();

    drop(rx);
    let e = n.send("WATCHDOG=1\n").unwrap_err();
    assert!(matches!(e, SystemdError::Send { .. }));
    assert!(e.to_string().contains("notify"));
}

#[test]
fn send_reaches_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!(
        "waymark-test-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7()
    );
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let rx = UnixDatagram::bind_addr(&addr).unwrap();
    let n = values(Some(&format!("@{name}")), None, None).unwrap();
    n.send("READY=1\n").unwrap();
    let mut buf = [0u8; 64];
    let len = rx.recv(&mut buf).unwrap();
    assert_eq!(&buf[..len], b"READY=1\n");
}

/// A real store and pipeline making heartbeats, as `run` wires them.
struct Stages {
    _dir: tempfile::TempDir,
    store: Store,
    health: Arc<Health>,
    _readings: mpsc::Sender<waymark_wire::Reading>,
    pipeline_stop: Trigger,
    pipeline: tokio::task::JoinHandle<()>,
}

impl Stages {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            path: dir.path().join("buffer.db"),
            min_free_disk_bytes: 0,
            ..StoreConfig::default()
        };
        let health = Arc::new(Health::default());
        let store = Store::open(&cfg, "TRUCK-042", Arc::clone(&health)).unwrap();
        let (tx, rx) = mpsc::channel(16);
        let pipeline_stop = Trigger::new();
        let pipeline = tokio::spawn(crate::pipeline::run(
            PipelineConfig::default(),
            rx,
            store.clone(),
            Arc::clone(&health),
            crate::clock::Clock::new(),
            pipeline_stop.subscribe(),
        ));
        Stages {
            _dir: dir,
            store,
            health,
            _readings: tx,
            pipeline_stop,
            pipeline,
        }
    }

    async fn stop(self) {
        self.pipeline_stop.fire();
        self.pipeline.await.unwrap();
        self.store.close().await.unwrap();
    }
}

/// A fake systemd, real stages, and [`supervise`] with a 2 s watchdog between them.
fn supervised() -> (FakeSystemd, Stages, Trigger, tokio::task::JoinHandle<()>) {
    let systemd = FakeSystemd::new();
    let stages = Stages::start();
    let trigger = Trigger::new();
    let notifier = Notifier::to_path(&systemd.path, Some(Duration::from_secs(2)));
    let task = tokio::spawn(supervise(
        notifier,
        Arc::clone(&stages.health),
        trigger.subscribe(),
    ));
    (systemd, stages, trigger, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_then_pings_and_stopping_on_shutdown() {
    let (systemd, stages, trigger, task) = supervised();

    let seen = tokio::task::spawn_blocking(move || {
        let first = systemd.until("READY=1", String::new);
        assert_eq!(first.len(), 1, "READY=1 comes first: {first:?}");
        for _ in 0..3 {
            let m = systemd.until("WATCHDOG=1", String::new);
            assert_eq!(m, ["WATCHDOG=1\n"], "only pings while healthy");
        }
        systemd
    })
    .await
    .unwrap();

    trigger.fire();
    task.await.unwrap();
    let rest = tokio::task::spawn_blocking(move || seen.until("STOPPING=1", String::new))
        .await
        .unwrap();
    assert!(
        rest.iter()
            .all(|m| m == "WATCHDOG=1\n" || m.starts_with("STOPPING=1\n"))
    );
    stages.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_store_stops_the_pings_until_it_moves_again() {
    // Checks every second; a stage silent for more than 3 s holds the ping back.
    let (systemd, stages, trigger, task) = supervised();
    let systemd = tokio::task::spawn_blocking(move || {
        systemd.until("READY=1", String::new);
        systemd.until("WATCHDOG=1", String::new);
        systemd
    })
    .await
    .unwrap();

    let release = stages.store.hold_writer();
    let systemd = tokio::task::spawn_blocking(move || {
        let seen = systemd.until("STATUS=Stalled", String::new);
        let stalled = seen.last().unwrap();
        assert!(stalled.contains("store silent for"), "{stalled}");
        assert!(!stalled.contains("pipeline"), "{stalled}");
        // Deterministic negative check: the writer cannot beat while it is held, so no
        // ping may come, however slow the machine (the window only bounds the test).
        assert_eq!(systemd.next(Duration::from_secs(3)), None);
        systemd
    })
    .await
    .unwrap();

    release.send(()).unwrap();
    let systemd = tokio::task::spawn_blocking(move || {
        let seen = systemd.until("WATCHDOG=1", String::new);
        assert!(seen.iter().any(|m| m == "STATUS=Running\n"), "{seen:?}");
        systemd
    })
    .await
    .unwrap();

    trigger.fire();
    task.await.unwrap();
    tokio::task::spawn_blocking(move || systemd.until("STOPPING=1", String::new))
        .await
        .unwrap();
    stages.stop().await;
}

#[tokio::test]
async fn without_a_socket_supervise_just_waits_for_shutdown() {
    let trigger = Trigger::new();
    let task = tokio::spawn(supervise(
        values(None, None, None).unwrap(),
        Arc::new(Health::default()),
        trigger.subscribe(),
    ));
    tokio::task::yield_now().await;
    assert!(!task.is_finished());
    trigger.fire();
    task.await.unwrap();
}
