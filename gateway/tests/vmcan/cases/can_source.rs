//! The `can` source end to end on vcan0: J1939 frames in, readings out; the kernel acceptance
//! filters built from the config keep undecoded frames out of the process; a bus-off error
//! frame closes and reopens the interface, health and counters show it, and reading resumes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use socketcan::frame::CanErrorFrame;
use socketcan::{CanFrame, CanSocket, EmbeddedFrame, Socket};
use tokio::sync::mpsc;
use waymark_gateway::clock::Clock;
use waymark_gateway::config::StoreConfig;
use waymark_gateway::health::Health;
use waymark_gateway::shutdown::Trigger;
use waymark_gateway::sources::can::{Can, CanConfig};
use waymark_gateway::sources::obd::link::can_id;
use waymark_gateway::sources::{Source, SourceContext};
use waymark_gateway::store::Store;
use waymark_wire::{Reading, Value};

use super::{Case, IFACE, check, rt};

pub fn cases() -> Vec<Case> {
    vec![Case {
        name: "can_source_j1939_filters_and_bus_off",
        run: can_source,
    }]
}

const ENGINE_SPEED: &str = "Vehicle.Powertrain.CombustionEngine.Speed";

/// EEC1 (PGN 61444) from the engine (SA 0x00): engine speed in bytes 4..5, 0.125 rpm/bit.
fn eec1(rpm: f64) -> Result<CanFrame, String> {
    let raw = (rpm / 0.125) as u16;
    let [lo, hi] = raw.to_le_bytes();
    let id = can_id(0x0CF0_0400, true).map_err(|e| e.to_string())?;
    CanFrame::new(id, &[0xF0, 0x7D, 0x7D, lo, hi, 0x00, 0xF0, 0x7D])
        .ok_or_else(|| "EEC1 frame".to_string())
}

fn undecoded() -> Result<CanFrame, String> {
    let id = can_id(0x123, false).map_err(|e| e.to_string())?;
    CanFrame::new(id, &[1, 2, 3]).ok_or_else(|| "0x123 frame".to_string())
}

fn speeds(rs: &[Reading]) -> Vec<f64> {
    rs.iter()
        .filter(|r| r.signal == ENGINE_SPEED)
        .filter_map(|r| match r.value {
            Value::Num(x) => Some(x),
            _ => None,
        })
        .collect()
}

async fn collect_until(
    rx: &mut mpsc::Receiver<Reading>,
    readings: &mut Vec<Reading>,
    want: usize,
    limit: Duration,
) {
    let deadline = tokio::time::Instant::now() + limit;
    while speeds(readings).len() < want && tokio::time::Instant::now() < deadline {
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            readings.push(r);
        }
    }
}

fn can_source() -> Result<(), String> {
    rt()?.block_on(async {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let health = Arc::new(Health::default());
        let store_cfg = StoreConfig {
            path: dir.path().join("buffer.db"),
            ..StoreConfig::default()
        };
        let store =
            Store::open(&store_cfg, "TRUCK-1", health.clone()).map_err(|e| e.to_string())?;
        let cfg: CanConfig = toml::from_str(&format!(
            "name = \"j1939\"\ninterfaces = [\"{IFACE}\"]\nreopen_min_ms = 100\nreopen_max_ms = 200\n"
        ))
        .map_err(|e| e.to_string())?;
        let source = Can::new(&cfg).map_err(|e| e.to_string())?;
        let (tx, mut rx) = mpsc::channel(256);
        let trigger = Trigger::new();
        let ctx = SourceContext {
            readings: tx,
            store,
            health: health.clone(),
            clock: Clock::new(),
        };
        let task = tokio::spawn(source.run(ctx, trigger.subscribe()));
        let bus = CanSocket::open(IFACE).map_err(|e| format!("open {IFACE}: {e}"))?;
        tokio::time::sleep(Duration::from_millis(500)).await;

        for _ in 0..5 {
            bus.write_frame(&undecoded()?).map_err(|e| e.to_string())?;
        }
        for rpm in [650.0, 800.0, 1200.0] {
            bus.write_frame(&eec1(rpm)?).map_err(|e| e.to_string())?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut readings = Vec::new();
        collect_until(&mut rx, &mut readings, 3, Duration::from_secs(10)).await;
        check(speeds(&readings) == vec![650.0, 800.0, 1200.0], || {
            format!("engine speeds read: {:?}", speeds(&readings))
        })?;
        let frames = health.counters.can_frames.load(Ordering::Relaxed);
        check(frames == 3, || {
            format!("the kernel filters should keep the 5 undecoded frames out; can_frames = {frames}")
        })?;

        // CAN_ERR_BUSOFF (class 0x40): the source closes the interface and reopens it.
        let busoff = CanErrorFrame::new_error(0x040, &[0; 8]).map_err(|e| e.to_string())?;
        bus.write_frame(&CanFrame::Error(busoff))
            .map_err(|e| format!("sending a bus-off error frame: {e}"))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while health.counters.can_bus_off.load(Ordering::Relaxed) == 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        check(health.counters.can_bus_off.load(Ordering::Relaxed) == 1, || {
            "bus-off was not counted".into()
        })?;
        // After the reopen (100-200 ms), frames are read again.
        let mut resumed = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while speeds(&resumed).is_empty() && tokio::time::Instant::now() < deadline {
            bus.write_frame(&eec1(900.0)?).map_err(|e| e.to_string())?;
            collect_until(&mut rx, &mut resumed, 1, Duration::from_millis(300)).await;
        }
        check(speeds(&resumed).first() == Some(&900.0), || {
            format!("no reading after the reopen: {:?}", speeds(&resumed))
        })?;

        trigger.fire();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .map_err(|_| "source did not stop on shutdown")?
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}
