//! End-to-end throughput, CPU and memory of the `waymark` process (issue: backbone benchmark).
//!
//! 1,000,000 JSON readings of ~250 bytes are pushed over loopback TCP into the `jsonl` source
//! of a real `waymark run` (durable store, `synchronous=FULL`), published QoS 1 to a local
//! Mosquitto, and counted by a subscriber that decodes every batch. The gateway runs under
//! `/usr/bin/time -v`, which gives its CPU seconds and peak RSS. A second phase pushes 1M
//! readings while the broker is down and times the backlog drain once it is back.
//!
//! Run: `cargo bench -p waymark-gateway --bench e2e_throughput` (`WAYMARK_BENCH_RECORDS=N`
//! for a smaller run). Figures are recorded in `docs/benchmarks.md`.

// Benchmark harness: an unwrap that fails aborts the measurement, it is not input handling.
#![allow(clippy::unwrap_used, clippy::let_underscore_must_use)]

#[path = "../../tests/support/mod.rs"]
mod support;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Gate, Mosquitto, MosquittoOptions, Subscriber, free_port};
use waymark_wire::topics::{self, Stream};

const SIGNALS: [&str; 10] = [
    "Vehicle.Cargo.Trailer.Compartment1.Temperature.Probe.Front",
    "Vehicle.Cargo.Trailer.Compartment1.Temperature.Probe.Rear",
    "Vehicle.Cargo.Trailer.Compartment2.Temperature.Probe.Front",
    "Vehicle.Powertrain.CombustionEngine.Speed.Measured.Filtered",
    "Vehicle.Powertrain.FuelSystem.RelativeLevel.Tank1.Measured",
    "Vehicle.Chassis.Axle.Row1.Wheel.Left.Tire.Pressure.Measured",
    "Vehicle.Chassis.Axle.Row1.Wheel.Right.Tire.Pressure.Measured",
    "Vehicle.Chassis.Axle.Row2.Wheel.Left.Tire.Pressure.Measured",
    "Vehicle.Chassis.Axle.Row2.Wheel.Right.Tire.Pressure.Measured",
    "Vehicle.LowVoltageSystemState.Battery.Voltage.Measured.Avg",
];

fn line(i: u64, base_ms: i64) -> String {
    let signal = SIGNALS[(i % 10) as usize];
    // Values change every time (so the deadband passes them all) but like real sensors do.
    let value = ((i / 10) % 2000) as f64 * 0.01 - 10.0;
    let time = waymark_wire::time::format_rfc3339_ms(base_ms + (i / 10) as i64 * 100);
    let mut l = format!(
        "{{\"kind\": \"reading\", \"signal\": \"{signal}\", \"value\": {value:.2}, \"unit\": \"celsius\", \"time\": \"{time}\"}}"
    );
    // Pad inside the object to ~250 bytes, like the peer comparison's records.
    let pad = 249usize.saturating_sub(l.len());
    l.pop();
    l.extend(std::iter::repeat_n(' ', pad));
    l.push_str("}\n");
    l
}

struct Run {
    child: Child,
    time_log: std::path::PathBuf,
    jsonl: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

fn start_gateway(broker_port: u16) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let jsonl: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.path().join("waymark.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[vehicle]
id = "BENCH-1"
[store]
path = "{}"
max_bytes = 2147483648
min_free_disk_bytes = 0
[pipeline]
batch_window_ms = 1000
[mqtt]
host = "127.0.0.1"
port = {broker_port}
tls = false
reconnect_min_ms = 100
reconnect_max_ms = 500
# Merge committed batches for at most 1 s (default 10 s) so the figure measures throughput,
# not the deliberate wait of the last readings.
telemetry_publish_interval_ms = 1000
[[sources]]
type = "jsonl"
tcp_listen = "{jsonl}"
# One producer pushes everything: lift the per-connection rate limit (default 50000 lines/s).
max_lines_per_s = 10000000
"#,
            dir.path().join("buffer.db").display()
        ),
    )
    .unwrap();
    let time_log = dir.path().join("time.txt");
    let child = Command::new("/usr/bin/time")
        .arg("-v")
        .arg("-o")
        .arg(&time_log)
        .arg(env!("CARGO_BIN_EXE_waymark"))
        .args(["--log", "warn", "run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .spawn()
        .expect("/usr/bin/time is needed (Debian package `time`; scripts/test installs it)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(jsonl).is_err() {
        assert!(Instant::now() < deadline, "waymark did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Run {
        child,
        time_log,
        jsonl,
        _dir: dir,
    }
}

/// (cpu seconds, peak RSS kB) from `/usr/bin/time -v` after the process exits.
fn stop(mut run: Run) -> (f64, u64) {
    // `run.child` is /usr/bin/time; SIGTERM goes to the waymark process it runs, so that time
    // sees it exit and writes its report.
    let time_pid = run.child.id();
    let children = std::fs::read_to_string(format!("/proc/{time_pid}/task/{time_pid}/children"))
        .unwrap_or_default();
    for pid in children.split_whitespace() {
        let _ = Command::new("kill").arg("-TERM").arg(pid).status();
    }
    let _ = run.child.wait();
    let text = std::fs::read_to_string(&run.time_log).unwrap_or_default();
    let field = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(name)
                    .map(|v| v.trim().parse::<f64>().unwrap_or(0.0))
            })
            .unwrap_or(0.0)
    };
    (
        field("User time (seconds):") + field("System time (seconds):"),
        field("Maximum resident set size (kbytes):") as u64,
    )
}

fn push(addr: std::net::SocketAddr, n: u64) {
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - (n as i64 / 10) * 100;
    let mut s =
        std::io::BufWriter::with_capacity(256 * 1024, std::net::TcpStream::connect(addr).unwrap());
    for i in 0..n {
        s.write_all(line(i, base).as_bytes()).unwrap();
    }
    s.flush().unwrap();
}

fn received(sub: &Subscriber, counted: &mut usize, total: &mut u64) -> u64 {
    let msgs = sub.messages();
    for m in &msgs[*counted..] {
        *total += waymark_wire::telemetry::decode(&m.payload)
            .map(|r| r.len() as u64)
            .unwrap_or(0);
    }
    *counted = msgs.len();
    *total
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / `cargo test --benches` probe
    }
    let n: u64 = std::env::var("WAYMARK_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let sample = line(12345, 0);
    println!(
        "e2e_throughput: {n} readings of {} bytes over loopback TCP -> waymark -> mosquitto",
        sample.len()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let broker = rt.block_on(Mosquitto::start(MosquittoOptions::default()));
    let filter = topics::all_vehicles_filter("waymark", Stream::Telemetry);

    // Phase 1: online.
    let sub = rt.block_on(Subscriber::connect(broker.port(), &filter));
    let run = start_gateway(broker.port());
    let began = Instant::now();
    let addr = run.jsonl;
    let producer = std::thread::spawn(move || push(addr, n));
    let (mut counted, mut total) = (0, 0);
    while received(&sub, &mut counted, &mut total) < n {
        assert!(
            began.elapsed() < Duration::from_secs(900),
            "only {total} of {n} arrived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = began.elapsed();
    producer.join().unwrap();
    let (cpu, rss) = stop(run);
    println!(
        "online:  {:.0} records/s end to end ({:.2} s), waymark CPU {:.3} s per 100k records, peak RSS {:.1} MB, {} MQTT messages",
        n as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        cpu / (n as f64 / 100_000.0),
        rss as f64 / 1024.0,
        counted
    );
    drop(sub);

    // Phase 2: backlog drain after an outage. The gateway reaches the broker through a gate
    // that stays closed while the backlog builds up.
    let gate = rt.block_on(Gate::start(broker.port()));
    gate.close();
    let sub = rt.block_on(Subscriber::connect(broker.port(), &filter));
    let run = start_gateway(gate.port());
    push(run.jsonl, n);
    // Wait until everything is committed: the batch window plus commit time.
    std::thread::sleep(Duration::from_millis(3000));
    let began = Instant::now();
    gate.open();
    let (mut counted, mut total) = (0, 0);
    while received(&sub, &mut counted, &mut total) < n {
        assert!(
            began.elapsed() < Duration::from_secs(900),
            "only {total} of {n} drained"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = began.elapsed();
    let (cpu, rss) = stop(run);
    println!(
        "drain:   {n} backlog records in {:.2} s = {:.0} records/s after the link came back; whole run CPU {:.1} s, peak RSS {:.1} MB",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        cpu,
        rss as f64 / 1024.0
    );
}
