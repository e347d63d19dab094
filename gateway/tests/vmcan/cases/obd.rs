//! The `obd` source end to end against simulated ECUs on vcan0: kernel ISO-TP responders
//! that answer modes 01 and 09 the way a van's engine and gearbox ECUs do (bitmaps chained
//! through 0xA0, negative answers for what they lack, a 20-byte VIN in three frames).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use waymark_gateway::clock::Clock;
use waymark_gateway::config::StoreConfig;
use waymark_gateway::health::{Health, HealthState};
use waymark_gateway::shutdown::Trigger;
use waymark_gateway::sources::obd::link::{AsyncIsoTp, can_id};
use waymark_gateway::sources::obd::poller::Addressing;
use waymark_gateway::sources::obd::{Obd, ObdConfig};
use waymark_gateway::sources::{Source, SourceContext};
use waymark_gateway::store::Store;
use waymark_wire::{Reading, Value};

use super::{Case, IFACE, check, rt};

pub fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "obd_11bit_engine_and_gearbox",
            run: obd_11bit,
        },
        Case {
            name: "obd_29bit_without_odometer",
            run: obd_29bit,
        },
        Case {
            name: "obd_reopens_after_interface_down",
            run: obd_reopen,
        },
    ]
}

const VIN: &str = "WF0XXXTTGXKA12345";

/// A simulated ECU: its PIDs' data bytes, and whether it knows the VIN.
#[derive(Clone)]
struct SimEcu {
    addressing: Addressing,
    ecu: u8,
    pids: BTreeMap<u8, Vec<u8>>,
    vin: bool,
}

impl SimEcu {
    fn supports(&self, pid: u8) -> bool {
        self.pids.contains_key(&pid)
            || (pid.is_multiple_of(0x20) && self.pids.keys().any(|p| *p > pid))
    }

    /// The answer to `req`, or `None` to stay silent (functional requests it cannot serve).
    fn answer(&self, req: &[u8], functional: bool) -> Option<Vec<u8>> {
        match req {
            [0x01, pid] if pid.is_multiple_of(0x20) && (*pid == 0 || self.supports(*pid)) => {
                let mut word = 0u32;
                for p in 1..=0x20u16 {
                    let pid_n = u16::from(*pid) + p;
                    if pid_n <= 0xFF && self.supports(pid_n as u8) {
                        word |= 1 << (32 - p);
                    }
                }
                let mut v = vec![0x41, *pid];
                v.extend_from_slice(&word.to_be_bytes());
                Some(v)
            }
            [0x01, pid] => match self.pids.get(pid) {
                Some(data) => {
                    let mut v = vec![0x41, *pid];
                    v.extend_from_slice(data);
                    Some(v)
                }
                None if functional => None,
                None => Some(vec![0x7F, 0x01, 0x31]),
            },
            [0x09, 0x02] if self.vin => {
                let mut v = vec![0x49, 0x02, 0x01];
                v.extend_from_slice(VIN.as_bytes());
                Some(v)
            }
            [0x09, _] if functional => None,
            [0x09, _] => Some(vec![0x7F, 0x09, 0x11]),
            _ => None,
        }
    }

    /// Serves requests until the task is aborted: functional ones arrive on their own socket,
    /// every answer leaves through the physical socket (so flow control comes back to it).
    async fn serve(self) -> Result<(), String> {
        let a = self.addressing;
        let ext = a.is_extended();
        let id = |raw| can_id(raw, ext).map_err(|e| e.to_string());
        let physical = AsyncIsoTp::open(
            IFACE,
            id(a.request_id(self.ecu))?,
            id(a.response_id(self.ecu))?,
            Some(0xAA),
        )
        .map_err(|e| format!("ECU physical socket: {e}"))?;
        let functional = AsyncIsoTp::open(
            IFACE,
            id(a.functional_id())?,
            id(a.response_id(self.ecu))?,
            Some(0xAA),
        )
        .map_err(|e| format!("ECU functional socket: {e}"))?;
        let (mut b1, mut b2) = ([0u8; 64], [0u8; 64]);
        loop {
            // While the interface is down (the reopen case) the sockets report ENETDOWN once;
            // a real ECU does not care either: keep serving.
            let (req, func) = tokio::select! {
                r = physical.recv(&mut b1) => match r {
                    Ok(n) => (b1[..n].to_vec(), false),
                    Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
                },
                r = functional.recv(&mut b2) => match r {
                    Ok(n) => (b2[..n].to_vec(), true),
                    Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
                },
            };
            if let Some(ans) = self.answer(&req, func) {
                // ISO 15765-4 lets an ECU answer a functional request within P2 (50 ms).
                if func {
                    tokio::time::sleep(Duration::from_millis(u64::from(self.ecu % 8) * 3)).await;
                }
                if let Err(e) = physical.send(&ans).await {
                    eprintln!(
                        "  ECU 0x{:X}: answer not sent: {e}",
                        a.response_id(self.ecu)
                    );
                }
            }
        }
    }
}

fn engine(addressing: Addressing, ecu: u8, odometer: bool) -> SimEcu {
    let mut pids = BTreeMap::from([
        (0x0D, vec![0x32]),       // 50 km/h
        (0x0C, vec![0x0C, 0x80]), // 800 rpm
        (0x05, vec![0x7B]),       // 83 °C
        (0x2F, vec![0x80]),       // 50.2 %
        (0x42, vec![0x31, 0x38]), // 12.6 V
    ]);
    if odometer {
        pids.insert(0xA6, vec![0x00, 0x12, 0xD6, 0x87]); // 123456.7 km
    }
    SimEcu {
        addressing,
        ecu,
        pids,
        vin: true,
    }
}

struct Run {
    readings: Vec<Reading>,
    health: Arc<Health>,
}

/// Runs the source with `cfg` against `ecus` until `done(readings, health)` (asked at each
/// reading and every 100 ms) or `limit`, then shuts it down.
fn run_source(
    cfg: ObdConfig,
    ecus: Vec<SimEcu>,
    limit: Duration,
    mut done: impl FnMut(&[Reading], &Health) -> bool,
) -> Result<Run, String> {
    rt()?.block_on(async move {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let health = Arc::new(Health::default());
        let store_cfg = StoreConfig {
            path: dir.path().join("buffer.db"),
            ..StoreConfig::default()
        };
        let store = Store::open(&store_cfg, "VAN-7", health.clone()).map_err(|e| e.to_string())?;
        let sims: Vec<_> = ecus.into_iter().map(|e| tokio::spawn(e.serve())).collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (tx, mut rx) = mpsc::channel(256);
        let trigger = Trigger::new();
        let ctx = SourceContext {
            readings: tx,
            store,
            health: health.clone(),
            clock: Clock::new(),
        };
        let task = tokio::spawn(Obd::new(&cfg).run(ctx, trigger.subscribe()));
        let mut readings = Vec::new();
        let deadline = tokio::time::Instant::now() + limit;
        while !done(&readings, &health) && tokio::time::Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
                Ok(Some(r)) => readings.push(r),
                Ok(None) => return Err("source ended".into()),
                Err(_) => {}
            }
        }
        trigger.fire();
        let ended = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .map_err(|_| "source did not stop on shutdown")?;
        ended
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        for s in sims {
            if s.is_finished() {
                s.await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("ECU simulator: {e}"))?;
            } else {
                s.abort();
            }
        }
        Ok(Run { readings, health })
    })
}

fn signals(rs: &[Reading]) -> BTreeSet<&str> {
    rs.iter().map(|r| r.signal.as_str()).collect()
}

fn last<'a>(rs: &'a [Reading], signal: &str) -> Option<&'a Value> {
    rs.iter()
        .rev()
        .find(|r| r.signal == signal)
        .map(|r| &r.value)
}

const ALL: [&str; 6] = [
    "Vehicle.Speed",
    "Vehicle.Powertrain.CombustionEngine.Speed",
    "Vehicle.Powertrain.CombustionEngine.ECT",
    "Vehicle.Powertrain.FuelSystem.RelativeLevel",
    "Vehicle.TraveledDistance",
    "Vehicle.VehicleIdentification.VIN",
];

fn fast_cfg(addressing: Addressing) -> ObdConfig {
    let mut cfg = ObdConfig::on(IFACE);
    cfg.name = "van".into();
    cfg.addressing = addressing;
    cfg.poll_interval_ms = 200;
    cfg.slow_poll_interval_ms = 1000;
    // Software-emulated CPU: generous, still well under the periods.
    cfg.response_timeout_ms = 400;
    cfg.discovery_retry_ms = 1000;
    cfg.reconnect_min_ms = 200;
    cfg.reconnect_max_ms = 1000;
    cfg
}

fn num(v: Option<&Value>) -> Option<f64> {
    match v {
        Some(Value::Num(x)) => Some(*x),
        _ => None,
    }
}

fn obd_11bit() -> Result<(), String> {
    let a = Addressing::Normal11;
    let mut gearbox = engine(a, 1, false);
    gearbox.pids.retain(|p, _| *p == 0x0D);
    gearbox.vin = false;
    let run = run_source(
        fast_cfg(a),
        vec![engine(a, 0, true), gearbox],
        Duration::from_secs(30),
        |rs, _| ALL.iter().all(|s| signals(rs).contains(s)),
    )?;
    let rs = &run.readings;
    check(ALL.iter().all(|s| signals(rs).contains(s)), || {
        format!("signals seen: {:?}", signals(rs))
    })?;
    check(num(last(rs, ALL[0])) == Some(50.0), || {
        format!("{:?}", last(rs, ALL[0]))
    })?;
    check(num(last(rs, ALL[1])) == Some(800.0), || {
        format!("{:?}", last(rs, ALL[1]))
    })?;
    check(num(last(rs, ALL[2])) == Some(83.0), || {
        format!("{:?}", last(rs, ALL[2]))
    })?;
    let fuel = num(last(rs, ALL[3])).unwrap_or(0.0);
    check((fuel - 50.196).abs() < 0.001, || format!("fuel {fuel}"))?;
    check(num(last(rs, ALL[4])) == Some(123_456.7), || {
        format!("{:?}", last(rs, ALL[4]))
    })?;
    let volts = last(rs, "Vehicle.LowVoltageBattery.CurrentVoltage");
    check(num(volts) == Some(12.6), || {
        format!(
            "battery {volts:?}; readings {:?}",
            rs.iter().map(|r| &r.signal).collect::<Vec<_>>()
        )
    })?;
    check(last(rs, ALL[5]) == Some(&Value::Text(VIN.into())), || {
        format!("{:?}", last(rs, ALL[5]))
    })?;
    check(rs.iter().all(|r| r.source == "van" && r.time > 0), || {
        "readings not stamped with the source and time".into()
    })?;
    let h = run.health.components();
    let h = h.get("obd:van").ok_or("no health entry obd:van")?;
    let detail = h.detail.clone().unwrap_or_default();
    check(h.state == HealthState::Ok, || format!("health {h:?}"))?;
    check(
        detail.contains("0x7E8, 0x7E9") && detail.contains("PID 0xA6"),
        || format!("health detail: {detail}"),
    )
}

fn obd_29bit() -> Result<(), String> {
    let a = Addressing::Normal29;
    let run = run_source(
        fast_cfg(a),
        vec![engine(a, 0x10, false)],
        Duration::from_secs(30),
        |rs, h| {
            let s = signals(rs);
            ALL.iter().filter(|x| **x != ALL[4]).all(|x| s.contains(x))
                && h.components()
                    .get("obd:van")
                    .and_then(|c| c.detail.clone())
                    .is_some_and(|d| d.contains("GNSS"))
        },
    )?;
    let rs = &run.readings;
    let s = signals(rs);
    check(
        ALL.iter().filter(|x| **x != ALL[4]).all(|x| s.contains(x)),
        || format!("signals seen: {s:?}"),
    )?;
    check(!s.contains(ALL[4]), || {
        "odometer reading without PID 0xA6".into()
    })?;
    check(num(last(rs, ALL[1])) == Some(800.0), || {
        format!("{:?}", last(rs, ALL[1]))
    })?;
    let h = run.health.components();
    let detail = h
        .get("obd:van")
        .and_then(|c| c.detail.clone())
        .unwrap_or_default();
    check(
        detail.contains("0x18DAF110") && detail.contains("GNSS fallback"),
        || format!("health detail: {detail}"),
    )
}

/// The interface goes down under the source: health turns `down` naming the error, and after
/// the interface is back the source reopens and reads again.
fn obd_reopen() -> Result<(), String> {
    let a = Addressing::Normal11;
    let bounce = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(1500));
        let down = std::process::Command::new("ip")
            .args(["link", "set", IFACE, "down"])
            .status();
        std::thread::sleep(Duration::from_secs(1));
        let up = std::process::Command::new("ip")
            .args(["link", "set", IFACE, "up"])
            .status();
        (down.map(|s| s.success()), up.map(|s| s.success()))
    });
    // Done when a speed reading arrives after the source was seen down.
    let mut down_at: Option<usize> = None;
    let mut detail = String::new();
    let run = run_source(
        fast_cfg(a),
        vec![engine(a, 0, true)],
        Duration::from_secs(40),
        |rs, h| {
            let c = h.components();
            let me = c.get("obd:van");
            if down_at.is_none() && me.is_some_and(|c| c.state == HealthState::Down) {
                down_at = Some(rs.len());
                detail = me.and_then(|c| c.detail.clone()).unwrap_or_default();
            }
            down_at.is_some_and(|n| {
                rs[n..].iter().any(|r| r.signal == "Vehicle.Speed")
                    && me.is_some_and(|c| c.state == HealthState::Ok)
            })
        },
    )?;
    let (down, up) = bounce.join().map_err(|_| "bounce thread panicked")?;
    check(matches!((down, up), (Ok(true), Ok(true))), || {
        "ip link set down/up failed".into()
    })?;
    let n = down_at.ok_or("health never showed the source down")?;
    println!("  down: {detail}");
    check(
        detail.contains(IFACE) && detail.contains("reopening"),
        || format!("down detail: {detail}"),
    )?;
    check(
        run.readings[n..]
            .iter()
            .any(|r| r.signal == "Vehicle.Speed"),
        || "no speed reading after the interface came back".into(),
    )
}
