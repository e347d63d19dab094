//! The `waymark run` process under a fake systemd: a real `AF_UNIX` datagram socket as
//! `NOTIFY_SOCKET` that the test reads (READY=1, WATCHDOG=1 pings, STOPPING=1), and SIGTERM
//! with readings still in the batcher (they are committed before the process exits).

use uuid::Uuid;

use crate::support::free_port;
use crate::support::gateway::{Gateway, GatewayOpts};
use crate::support::notify::FakeSystemd;

fn opts(systemd: &FakeSystemd) -> GatewayOpts {
    // Nothing listens on the broker port: the uplink keeps retrying and deletes nothing, so
    // the store shows exactly what was committed.
    let mut o = GatewayOpts::new(free_port());
    o.env = vec![
        ("NOTIFY_SOCKET".into(), systemd.path.display().to_string()),
        ("WATCHDOG_USEC".into(), "2000000".into()),
    ];
    o
}

#[test]
fn ready_after_setup_then_watchdog_pings_then_stopping() {
    let systemd = FakeSystemd::new();
    let mut gw = Gateway::start(&opts(&systemd));
    let first = systemd.until("READY=1", || gw.log_text());
    assert_eq!(first.len(), 1, "READY=1 is the first message: {first:?}");
    // Sources were set up before READY: the jsonl port accepts and answers.
    let mut c = gw.connect();
    assert_eq!(
        c.event(Uuid::now_v7(), "test.milestone.reached", 1)
            .unwrap()["ok"],
        true
    );
    for _ in 0..3 {
        assert_eq!(
            systemd.until("WATCHDOG=1", || gw.log_text()),
            ["WATCHDOG=1\n"]
        );
    }
    assert!(gw.stop().success(), "{}", gw.log_text());
    let rest = systemd.until("STOPPING=1", || gw.log_text());
    assert!(
        rest.iter()
            .all(|m| m == "WATCHDOG=1\n" || m.starts_with("STOPPING=1\n")),
        "{rest:?}"
    );
}

#[test]
fn sigterm_commits_the_readings_still_in_the_batcher() {
    let systemd = FakeSystemd::new();
    let mut o = opts(&systemd);
    // The batch window (the longest allowed) does not close during the test: only the stop
    // can commit the batch.
    o.pipeline_extra = "batch_window_ms = 60000".into();
    let mut gw = Gateway::start(&o);
    systemd.until("READY=1", || gw.log_text());
    let mut c = gw.connect();
    let t0 = 1_795_420_370_000i64;
    let n = 50u64;
    for i in 0..n {
        c.reading("Vehicle.Speed", i as f64 * 10.0, t0 + i as i64 * 5_000)
            .unwrap();
    }
    // The jsonl source handles a connection's lines in order: once the event is answered,
    // every reading before it is in the pipeline.
    assert_eq!(
        c.event(Uuid::now_v7(), "test.milestone.reached", 1)
            .unwrap()["ok"],
        true
    );
    let before = gw.status_json();
    assert_eq!(before["backlog"]["telemetry"]["readings"], 0, "{before}");
    assert_eq!(before["backlog"]["milestone"]["rows"], 1, "{before}");

    assert!(gw.stop().success(), "{}", gw.log_text());
    systemd.until("STOPPING=1", || gw.log_text());
    let after = gw.status_json();
    assert_eq!(after["backlog"]["telemetry"]["readings"], n, "{after}");
    assert_eq!(after["backlog"]["milestone"]["rows"], 1, "{after}");
}

#[test]
fn bad_watchdog_usec_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("waymark.toml");
    std::fs::write(
        &config,
        format!(
            "[vehicle]\nid = \"T\"\n[store]\npath = \"{}\"\n[mqtt]\nhost = \"127.0.0.1\"\ntls = false\n",
            dir.path().join("buffer.db").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_waymark"))
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", dir.path().join("notify"))
        .env("WATCHDOG_USEC", "30s")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("WATCHDOG_USEC=\"30s\""), "{stderr}");
    // Refused before anything was opened.
    assert!(!dir.path().join("buffer.db").exists());
}
