//! Throughput of one bridge instance: events/s from the broker to a local HTTP receiver.
//!
//! Starts a real Mosquitto (the workspace test harness), a local HTTP receiver (axum, answers
//! 200 at once), and the release `waymark-bridge` binary as a child process with a fresh
//! SQLite store; publishes N events (QoS 1, 10 vehicles) and measures until the receiver has
//! all of them. Reports events/s and the bridge process's CPU time per 1000 events
//! (utime + stime from /proc).
//!
//! ```text
//! cargo build --release -p waymark-bridge --bins --examples
//! target/release/examples/bridge_bench [N]        # default N = 20000
//! ```
//! `BRIDGE_BIN` overrides the binary (default `target/release/waymark-bridge`).

#![allow(clippy::unwrap_used)]

#[allow(dead_code, missing_docs)]
#[path = "../../tests/support/mosquitto.rs"]
mod mosquitto;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use waymark_wire::CloudEvent;
use waymark_wire::event::{DATA_CONTENT_TYPE, SPEC_VERSION};

/// A free TCP port on 127.0.0.1 (the Mosquitto harness calls it).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

type Seen = Arc<Mutex<HashSet<String>>>;

async fn handle(State(seen): State<Seen>, headers: HeaderMap, _body: Bytes) -> StatusCode {
    if let Some(k) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
        seen.lock().unwrap().insert(k.to_string());
    }
    StatusCode::OK
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command name.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn event(vehicle: usize, seq: u64) -> Vec<u8> {
    serde_json::to_vec(&CloudEvent {
        specversion: SPEC_VERSION.into(),
        id: uuid::Uuid::now_v7(),
        source: CloudEvent::source_for(&format!("V{vehicle}")),
        type_: "waymark.milestone.arrived".into(),
        time: "2026-11-23T07:52:50.123Z".into(),
        datacontenttype: DATA_CONTENT_TYPE.into(),
        subject: None,
        sequence: CloudEvent::format_sequence(seq),
        data: serde_json::json!({"trip_id": "T1", "stop_id": "S1", "lat": 48.1, "lon": 11.5}),
    })
    .unwrap()
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let bin =
        std::env::var("BRIDGE_BIN").unwrap_or_else(|_| "target/release/waymark-bridge".into());
    let broker = mosquitto::Mosquitto::start(mosquitto::MosquittoOptions::default()).await;

    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/portal", post(handle))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/portal", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s"), "secret").unwrap();
    std::fs::write(
        dir.path().join("bridge.toml"),
        format!(
            "[mqtt]\nhost = \"127.0.0.1\"\nport = {}\ntls = false\nclient_id = \"bench\"\n\n\
             [store]\npath = \"bridge.db\"\n\n[[targets]]\nname = \"portal\"\nurl = \"{url}\"\n\
             types = [\"*\"]\nsecret_file = \"s\"\nconcurrency = 32\n",
            broker.port()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(&bin)
        .arg("--config")
        .arg(dir.path().join("bridge.toml"))
        .args(["--log", "warn", "run"])
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e} (build it with --release first)"));

    let mut opts = MqttOptions::new("bench-pub", "127.0.0.1", broker.port());
    opts.set_inflight(200);
    let (client, mut eventloop) = AsyncClient::new(opts, 1000);
    tokio::spawn(async move {
        loop {
            if let Ok(Event::Incoming(Packet::Disconnect)) | Err(_) = eventloop.poll().await {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    // Warm-up: until the bridge's subscription delivers.
    let mut seq = 0u64;
    while seen.lock().unwrap().is_empty() {
        seq += 1;
        client
            .publish(
                "waymark/v1/vehicles/V0/events",
                QoS::AtLeastOnce,
                false,
                event(0, seq),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let warm = seen.lock().unwrap().len();
    let cpu0 = cpu_ticks(child.id());
    let t0 = Instant::now();
    for i in 0..n {
        // Mosquitto drops QoS 1 messages queued beyond `max_queued_messages` (default 1000)
        // for a subscriber: keep at most 800 events between publisher and receiver.
        while i >= 800 && seen.lock().unwrap().len() < warm + i - 800 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let vehicle = 1 + i % 10;
        client
            .publish(
                format!("waymark/v1/vehicles/V{vehicle}/events"),
                QoS::AtLeastOnce,
                false,
                event(vehicle, 1 + (i / 10) as u64),
            )
            .await
            .unwrap();
    }
    while seen.lock().unwrap().len() < warm + n {
        assert!(t0.elapsed() < Duration::from_secs(600), "timed out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(child.id()) - cpu0) as f64 / 100.0; // USER_HZ = 100 on Linux
    child.kill().unwrap();
    child.wait().unwrap();
    println!(
        "{n} events in {secs:.2} s: {:.0} events/s; bridge CPU {cpu:.2} s = {:.1} ms per 1000 events",
        n as f64 / secs,
        cpu * 1_000_000.0 / n as f64
    );
}
