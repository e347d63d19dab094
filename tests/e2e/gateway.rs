//! The `waymark` process end to end against a real Mosquitto: online path and lane order,
//! broker outages with and without a kept session, SIGKILL at random moments, quota, disk
//! full, a corrupt store, malformed config and malformed input lines.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};
use uuid::Uuid;
use waymark_wire::topics::{self, Stream};

use crate::support::gateway::{Gateway, GatewayOpts, status_json};
use crate::support::{Gate, Message, Mosquitto, MosquittoOptions, Subscriber};

const VEHICLE: &str = "TRUCK-E2E";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// What the broker delivered, decoded.
#[derive(Debug, Default)]
struct Delivered {
    /// event id → (sequence, type, arrival index)
    events: BTreeMap<Uuid, (u64, String, usize)>,
    event_copies: usize,
    /// (signal, time, value bits) of every reading, and copies seen
    readings: HashSet<(String, i64, u64)>,
    reading_copies: usize,
    /// arrival order of streams: ('A' alert, 'M' milestone, 'T' telemetry)
    order: Vec<char>,
}

/// A runtime for the async harness (broker, gate, subscriber); the test body stays
/// synchronous because the gateway is a child process driven over blocking sockets.
fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A broker, a gate in front of it for the gateway, and a subscriber on every topic of the
/// test vehicle.
struct Net {
    rt: tokio::runtime::Runtime,
    broker: Mosquitto,
    gate: Gate,
    sub: Subscriber,
}

impl Net {
    fn start() -> Self {
        let rt = rt();
        let broker = rt.block_on(Mosquitto::start(MosquittoOptions::default()));
        let gate = rt.block_on(Gate::start(broker.port()));
        let sub = rt.block_on(Subscriber::connect(
            broker.port(),
            &format!("waymark/v1/vehicles/{VEHICLE}/+"),
        ));
        Self {
            rt,
            broker,
            gate,
            sub,
        }
    }
}

fn decode_all(sub: &Subscriber) -> Delivered {
    let mut d = Delivered::default();
    for (i, Message { topic, payload, .. }) in sub.messages().into_iter().enumerate() {
        match topics::parse(topics::DEFAULT_PREFIX, &topic) {
            Some((v, Stream::Events)) => {
                assert_eq!(v, VEHICLE);
                let ev = waymark_wire::CloudEvent::from_json(&payload).expect("event decodes");
                let seq = ev.sequence_number().unwrap();
                d.order.push(if ev.type_.starts_with("test.alert") {
                    'A'
                } else {
                    'M'
                });
                d.event_copies += 1;
                d.events.entry(ev.id).or_insert((seq, ev.type_.clone(), i));
            }
            Some((_, Stream::Telemetry)) => {
                let readings = waymark_wire::telemetry::decode(&payload).expect("batch decodes");
                d.order.push('T');
                for r in readings {
                    d.reading_copies += 1;
                    d.readings
                        .insert((r.signal, r.time, r.value.as_f64().unwrap().to_bits()));
                }
            }
            _ => {}
        }
    }
    d
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn backlog_rows(gw: &Gateway) -> u64 {
    let s = gw.status_json();
    s["backlog"]["total_rows"]
        .as_u64()
        .expect("status has backlog.total_rows")
}

#[test]
fn online_path_delivers_everything_once_and_decodes() {
    let net = Net::start();
    let gw = Gateway::start(&GatewayOpts::new(net.gate.port()));
    let mut c = gw.connect();
    let t0 = now_ms();
    let (n_events, n_readings) = (100u64, 4000i64);
    let mut acked = Vec::new();
    for i in 0..n_readings {
        c.reading(&format!("Test.Signal{}", i % 5), i as f64, t0 + i)
            .unwrap();
        if i % 40 == 0 {
            let id = Uuid::now_v7();
            let a = c.event(id, "test.milestone.reached", i as u64).unwrap();
            assert_eq!(a["ok"], true, "{a}");
            assert_eq!(a["id"], id.to_string());
            acked.push((id, a["sequence"].as_u64().unwrap()));
        }
    }
    assert_eq!(acked.len() as u64, n_events);
    wait_until("all events and readings", Duration::from_secs(30), || {
        let d = decode_all(&net.sub);
        d.events.len() as u64 >= n_events && d.readings.len() as i64 >= n_readings
    });
    let d = decode_all(&net.sub);
    assert_eq!(d.events.len() as u64, n_events);
    assert_eq!(
        d.event_copies as u64, n_events,
        "no duplicates on a healthy link"
    );
    for (id, seq) in &acked {
        assert_eq!(
            d.events[id].0, *seq,
            "broker copy carries the acked sequence"
        );
    }
    let seqs: Vec<u64> = acked.iter().map(|a| a.1).collect();
    assert_eq!(
        seqs,
        (seqs[0]..seqs[0] + n_events).collect::<Vec<_>>(),
        "gap-free"
    );
    assert_eq!(d.readings.len() as i64, n_readings);
    assert_eq!(d.reading_copies as i64, n_readings);
    wait_until("empty backlog", Duration::from_secs(10), || {
        backlog_rows(&gw) == 0
    });
}

#[test]
fn backlog_drains_in_lane_order() {
    let net = Net::start();
    net.gate.close();
    let gw = Gateway::start(&GatewayOpts::new(net.gate.port()));
    let mut c = gw.connect();
    let t0 = now_ms();
    for i in 0..500 {
        c.reading("Test.Speed", i as f64, t0 + i).unwrap();
    }
    for i in 0..20 {
        assert_eq!(
            c.event(Uuid::now_v7(), "test.milestone.reached", i)
                .unwrap()["ok"],
            true
        );
    }
    for i in 0..20 {
        let line = format!(
            "{{\"kind\":\"event\",\"type\":\"test.alert.raised\",\"priority\":\"alert\",\"data\":{{\"n\":{i}}}}}\n"
        );
        c.send_raw(line.as_bytes()).unwrap();
        assert_eq!(c.answer().unwrap()["ok"], true);
    }
    wait_until("telemetry committed", Duration::from_secs(10), || {
        status_json(&gw.store)["backlog"]["telemetry"]["rows"]
            .as_u64()
            .unwrap_or(0)
            > 0
    });
    net.gate.open();
    wait_until("everything", Duration::from_secs(30), || {
        let d = decode_all(&net.sub);
        d.events.len() == 40 && d.readings.len() == 500
    });
    let d = decode_all(&net.sub);
    let order: String = d.order.iter().collect();
    let first_m = order.find('M').unwrap();
    let first_t = order.find('T').unwrap();
    assert!(
        order[..first_m].chars().all(|c| c == 'A'),
        "alerts first: {order}"
    );
    assert!(
        !order[first_m..].contains('A'),
        "no alert after a milestone: {order}"
    );
    assert!(
        !order[first_t..].contains('M'),
        "milestones before telemetry: {order}"
    );
}

/// A producer that keeps sending readings and events until told to stop, recording what the
/// gateway accepted (events: acked ids; readings: (signal, time, value, send instant)).
struct Producer {
    acked: Vec<Uuid>,
    readings: Vec<(String, i64, f64, Instant)>,
}

fn produce(gw: &Gateway, for_how_long: Duration, seed: u64, t_base: &mut i64) -> Producer {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut p = Producer {
        acked: Vec::new(),
        readings: Vec::new(),
    };
    let Ok(stream) = std::net::TcpStream::connect(gw.jsonl) else {
        return p;
    };
    drop(stream);
    let mut c = gw.connect();
    let end = Instant::now() + for_how_long;
    while Instant::now() < end {
        for _ in 0..20 {
            *t_base += 1;
            let v = rng.random_range(0.0..100.0f64);
            let v = (v * 100.0).round() / 100.0;
            if c.reading("Test.Load", v, *t_base).is_err() {
                return p;
            }
            p.readings
                .push(("Test.Load".into(), *t_base, v, Instant::now()));
        }
        let id = Uuid::now_v7();
        match c.event(id, "test.milestone.reached", *t_base as u64) {
            Ok(a) if a["ok"] == true => p.acked.push(id),
            Ok(_) => {}
            Err(_) => return p,
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    p
}

#[test]
fn broker_outages_with_and_without_session_lose_nothing() {
    let mut net = Net::start();
    let gw = Gateway::start(&GatewayOpts::new(net.gate.port()));
    let mut t = now_ms();
    let mut all = produce(&gw, Duration::from_millis(800), 1, &mut t);
    let more = |all: &mut Producer, p: Producer| {
        all.acked.extend(p.acked);
        all.readings.extend(p.readings);
    };
    // Outage 1: the broker goes away and comes back with its session store.
    net.rt.block_on(net.broker.stop());
    more(
        &mut all,
        produce(&gw, Duration::from_millis(1500), 2, &mut t),
    );
    net.gate.close();
    net.rt.block_on(net.broker.start_again(true));
    net.rt.block_on(net.sub.wait_subscribed(2));
    net.gate.open();
    more(
        &mut all,
        produce(&gw, Duration::from_millis(800), 3, &mut t),
    );
    // Outage 2: killed and restarted WITHOUT its session store: every unacknowledged row
    // must be republished from the gateway's store.
    net.broker.kill();
    more(
        &mut all,
        produce(&gw, Duration::from_millis(1000), 4, &mut t),
    );
    net.gate.close();
    net.rt.block_on(net.broker.start_again(false));
    net.rt.block_on(net.sub.wait_subscribed(3));
    net.gate.open();
    more(
        &mut all,
        produce(&gw, Duration::from_millis(800), 5, &mut t),
    );
    wait_until("backlog drained", Duration::from_secs(60), || {
        backlog_rows(&gw) == 0
    });
    wait_until("subscriber caught up", Duration::from_secs(20), || {
        let d = decode_all(&net.sub);
        all.acked.iter().all(|id| d.events.contains_key(id))
            && d.readings.len() >= all.readings.len()
    });
    let d = decode_all(&net.sub);
    for id in &all.acked {
        assert!(d.events.contains_key(id), "acked event {id} lost");
    }
    for (s, t, v, _) in &all.readings {
        assert!(
            d.readings.contains(&(s.clone(), *t, v.to_bits())),
            "reading {s}@{t} lost"
        );
    }
    let seqs: BTreeSet<u64> = d.events.values().map(|e| e.0).collect();
    assert_eq!(seqs.len(), d.events.len(), "one sequence per event");
    let (lo, hi) = (*seqs.first().unwrap(), *seqs.last().unwrap());
    assert_eq!(hi - lo + 1, seqs.len() as u64, "gap-free sequence");
    eprintln!(
        "outages: {} acked events, {} readings, all delivered ({} event copies incl. republished duplicates)",
        all.acked.len(),
        all.readings.len(),
        d.event_copies
    );
}

#[test]
fn sigkill_at_random_moments_loses_no_acked_event() {
    let net = Net::start();
    let mut gw = Gateway::start(&GatewayOpts::new(net.gate.port()));
    let window = Duration::from_millis(200 + 1000); // batch_window_ms in the test config + commit latency
    let mut rng = StdRng::seed_from_u64(0xdead);
    let mut acked = Vec::new();
    let mut must_arrive = Vec::new();
    let mut may_be_lost = 0usize;
    let mut t = now_ms();
    let rounds = 22;
    for round in 0..rounds {
        let run_for = Duration::from_millis(rng.random_range(150..600));
        let p = produce(&gw, run_for, round, &mut t);
        let killed_at = Instant::now();
        gw.kill();
        acked.extend(p.acked);
        for (s, tt, v, sent) in p.readings {
            if killed_at.duration_since(sent) > window {
                must_arrive.push((s, tt, v));
            } else {
                may_be_lost += 1;
            }
        }
        let conn = rusqlite::Connection::open(&gw.store).unwrap();
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok", "round {round}");
        drop(conn);
        gw.spawn();
    }
    wait_until("backlog drained", Duration::from_secs(60), || {
        backlog_rows(&gw) == 0
    });
    wait_until("subscriber caught up", Duration::from_secs(20), || {
        let d = decode_all(&net.sub);
        acked.iter().all(|id| d.events.contains_key(id))
    });
    let d = decode_all(&net.sub);
    for id in &acked {
        assert!(d.events.contains_key(id), "acked event {id} lost");
    }
    for (s, tt, v) in &must_arrive {
        assert!(
            d.readings.contains(&(s.clone(), *tt, v.to_bits())),
            "reading {s}@{tt} older than the window lost"
        );
    }
    let seqs: BTreeSet<u64> = d.events.values().map(|e| e.0).collect();
    assert_eq!(seqs.len(), d.events.len());
    assert_eq!(
        seqs.last().unwrap() - seqs.first().unwrap() + 1,
        seqs.len() as u64,
        "gap-free across {rounds} SIGKILLs"
    );
    eprintln!(
        "sigkill x{rounds}: {} acked events all delivered once each; {} readings older than the window all delivered, {} inside it",
        acked.len(),
        must_arrive.len(),
        may_be_lost
    );
}

#[test]
fn quota_drops_oldest_telemetry_never_events() {
    let net = Net::start();
    net.gate.close();
    let mut opts = GatewayOpts::new(net.gate.port());
    opts.store_extra = "max_bytes = 1048576".into();
    opts.pipeline_extra = "batch_max_readings = 200\nbatch_max_bytes = 65536".into();
    let gw = Gateway::start(&opts);
    let mut c = gw.connect();
    let mut rng = StdRng::seed_from_u64(7);
    let mut acked = Vec::new();
    let mut t = now_ms();
    // Random values compress badly: several MB of telemetry against a 1 MiB quota.
    for i in 0..300u64 {
        for _ in 0..1000 {
            t += 1;
            c.reading("Test.Noise", rng.random::<f64>(), t).unwrap();
        }
        let id = Uuid::now_v7();
        assert_eq!(
            c.event(id, "test.milestone.reached", i).unwrap()["ok"],
            true
        );
        acked.push(id);
    }
    wait_until("drops counted", Duration::from_secs(30), || {
        status_json(&gw.store)["counters"]["telemetry_dropped_rows"]
            .as_u64()
            .unwrap_or(0)
            > 0
    });
    let s = gw.status_json();
    assert_eq!(s["backlog"]["milestone"]["rows"].as_u64(), Some(300), "{s}");
    assert!(
        s["backlog"]["telemetry"]["bytes"].as_u64().unwrap() <= 1_048_576,
        "{s}"
    );
    net.gate.open();
    wait_until("backlog drained", Duration::from_secs(60), || {
        backlog_rows(&gw) == 0
    });
    wait_until("every event delivered", Duration::from_secs(20), || {
        let d = decode_all(&net.sub);
        acked.iter().all(|id| d.events.contains_key(id))
    });
}

#[test]
fn corrupt_store_is_set_aside_and_reported() {
    let net = Net::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("buffer.db"),
        b"this is not a SQLite database, it is a bad SD card",
    )
    .unwrap();
    let mut opts = GatewayOpts::new(net.gate.port());
    opts.store_dir = Some(dir.path().to_path_buf());
    let gw = Gateway::start(&opts);
    wait_until("alert event", Duration::from_secs(20), || {
        decode_all(&net.sub)
            .events
            .values()
            .any(|e| e.1 == "waymark.alert.store_corrupted")
    });
    let set_aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("buffer.db.corrupt-")
        })
        .collect();
    assert_eq!(set_aside.len(), 1, "the bad file is kept for inspection");
    let mut c = gw.connect();
    assert_eq!(
        c.event(Uuid::now_v7(), "test.milestone.reached", 1)
            .unwrap()["ok"],
        true,
        "fresh store works"
    );
}

#[test]
fn disk_full_is_survived_and_recovers_when_space_returns() {
    let mnt = tempfile::tempdir().unwrap();
    let mount = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(mnt.path())
        .status()
        .expect("running mount");
    assert!(
        mount.success(),
        "this test mounts a 2 MiB tmpfs and needs root (CI runs as root)"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(mnt.path().to_path_buf());

    let net = Net::start();
    net.gate.close();
    let mut opts = GatewayOpts::new(net.gate.port());
    opts.store_dir = Some(mnt.path().to_path_buf());
    let mut gw = Gateway::start(&opts);
    let mut c = gw.connect();
    let mut rng = StdRng::seed_from_u64(9);
    let mut t = now_ms();
    let mut acked = Vec::new();
    let mut refused = 0;
    for i in 0..400u64 {
        for _ in 0..500 {
            t += 1;
            c.reading("Test.Noise", rng.random::<f64>(), t).unwrap();
        }
        let id = Uuid::now_v7();
        let a = c.event(id, "test.milestone.reached", i).unwrap();
        if a["ok"] == true {
            acked.push(id);
        } else {
            assert!(a["error"].as_str().unwrap().contains("store"), "{a}");
            refused += 1;
        }
    }
    // Telemetry alone never fills the disk for events: on SQLITE_FULL the store deletes the
    // oldest telemetry to make room. Events only take space, so big ones fill it.
    let telemetry_dropped = gw.status_json()["counters"]["telemetry_dropped_rows"]
        .as_u64()
        .unwrap_or(0);
    let big = "x".repeat(30_000);
    for i in 0..400u64 {
        if refused > 0 {
            break;
        }
        let id = Uuid::now_v7();
        let line = format!(
            "{{\"kind\":\"event\",\"id\":\"{id}\",\"type\":\"test.milestone.reached\",\"data\":{{\"n\":{i},\"pad\":\"{big}\"}}}}\n"
        );
        c.send_raw(line.as_bytes()).unwrap();
        let a = c.answer().unwrap();
        if a["ok"] == true {
            acked.push(id);
        } else {
            assert!(a["error"].as_str().unwrap().contains("store"), "{a}");
            refused += 1;
        }
    }
    assert!(refused > 0, "the disk never filled up");
    eprintln!(
        "disk full: {} events accepted, {refused} refused while full, {telemetry_dropped} telemetry rows dropped for them",
        acked.len()
    );
    // Space returns.
    let grow = std::process::Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(mnt.path())
        .status()
        .unwrap();
    assert!(grow.success());
    let mut ok_after = false;
    for i in 0..150 {
        let id = Uuid::now_v7();
        let a = c.event(id, "test.milestone.reached", 10_000 + i).unwrap();
        if a["ok"] == true {
            acked.push(id);
            ok_after = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        ok_after,
        "store recovered when space returned:\n{}",
        gw.log_text()
    );
    net.gate.open();
    wait_until("backlog drained", Duration::from_secs(60), || {
        backlog_rows(&gw) == 0
    });
    wait_until(
        "every acked event delivered",
        Duration::from_secs(20),
        || {
            let d = decode_all(&net.sub);
            acked.iter().all(|id| d.events.contains_key(id))
        },
    );
    assert_eq!(gw.stop().code(), Some(0), "{}", gw.log_text());
}

#[test]
fn malformed_lines_are_answered_and_nothing_accepted_is_lost() {
    let net = Net::start();
    let gw = Gateway::start(&GatewayOpts::new(net.gate.port()));
    let mut c = gw.connect();
    let id1 = Uuid::now_v7();
    assert_eq!(
        c.event(id1, "test.milestone.reached", 1).unwrap()["ok"],
        true
    );
    for (bad, field) in [
        (&b"{not json\n"[..], ""),
        (
            b"{\"kind\":\"reading\",\"signal\":\"X\",\"value\":\"nan\",\"unit\":1}\n",
            "unit",
        ),
        (b"{\"kind\":\"teleport\"}\n", "kind"),
        (
            b"{\"kind\":\"event\",\"type\":\"x.y\",\"data\":[]}\n",
            "data",
        ),
    ] {
        c.send_raw(bad).unwrap();
        let a = c.answer().unwrap();
        assert_eq!(a["ok"], false, "{a}");
        assert!(
            a["error"].as_str().unwrap().contains(field),
            "{a} names {field}"
        );
        assert!(a["line"].as_u64().is_some(), "{a}");
    }
    let id2 = Uuid::now_v7();
    assert_eq!(
        c.event(id2, "test.milestone.reached", 2).unwrap()["ok"],
        true
    );
    // A producer retry with the same id is answered, not stored twice.
    let again = c.event(id2, "test.milestone.reached", 2).unwrap();
    assert_eq!(again["duplicate"], true, "{again}");
    wait_until("both events", Duration::from_secs(20), || {
        decode_all(&net.sub).events.len() == 2
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(decode_all(&net.sub).event_copies, 2);
}

#[test]
fn check_config_names_key_and_line_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[vehicle]\nid = \"T1\"\n\n[mqtt]\nhost = \"broker\"\ntls = false\nkeep_alive_s = 1\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_waymark"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mqtt.keep_alive_s"), "{err}");
    assert!(err.contains("bad.toml:7:"), "line 7 named: {err}");
    std::fs::write(
        &path,
        "[vehicle]\nid = \"T1\"\ncolour = \"red\"\n[mqtt]\nhost = \"b\"\ntls = false\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_waymark"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("vehicle.colour") && err.contains("bad.toml:3:1:"),
        "{err}"
    );
}

/// DESIGN §4 at process level: every published event `time`, reading time and status `time`
/// is a real date (never 1970), event lines without `time` get the gateway clock's receive
/// time, and the clock source shows in the status document and in `waymark status --json`.
#[test]
fn published_times_are_real_dates_and_the_clock_is_reported() {
    use waymark_wire::time::{EARLIEST_VALID_MS, parse_rfc3339_ms};
    let net = Net::start();
    let gw = Gateway::start(&GatewayOpts::new(net.gate.port()));
    let mut c = gw.connect();
    let before = now_ms();
    for n in 0..5 {
        let a = c
            .event(Uuid::now_v7(), "test.milestone.reached", n)
            .unwrap();
        assert_eq!(a["ok"], true, "{a}");
    }
    c.reading("Test.Signal", 1.0, now_ms()).unwrap();
    wait_until("events and the reading", Duration::from_secs(30), || {
        let d = decode_all(&net.sub);
        d.events.len() >= 5 && !d.readings.is_empty()
    });
    let mut status_docs = 0;
    for Message { topic, payload, .. } in net.sub.messages() {
        match topics::parse(topics::DEFAULT_PREFIX, &topic) {
            Some((_, Stream::Events)) => {
                let ev = waymark_wire::CloudEvent::from_json(&payload).unwrap();
                let t = parse_rfc3339_ms(&ev.time).unwrap();
                assert!(t >= before && t <= now_ms(), "receive time: {}", ev.time);
            }
            Some((_, Stream::Telemetry)) => {
                for r in waymark_wire::telemetry::decode(&payload).unwrap() {
                    assert!(r.time >= EARLIEST_VALID_MS, "{r:?}");
                }
            }
            Some((_, Stream::Status)) => {
                let doc: serde_json::Value = serde_json::from_slice(&payload).unwrap();
                if doc["state"] == "online" {
                    status_docs += 1;
                    assert_eq!(doc["clock"]["source"], "system", "{doc}");
                    let t = parse_rfc3339_ms(doc["time"].as_str().unwrap()).unwrap();
                    assert!(t >= EARLIEST_VALID_MS);
                }
            }
            _ => {}
        }
    }
    assert!(status_docs >= 1, "the retained status document was seen");
    assert_eq!(gw.status_json()["clock"]["source"], "system");
}
