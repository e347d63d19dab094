//! `waymark demo`: a recorded trip through the real code paths, with no setup at all.
//!
//! What runs is the daemon's own stack ([`crate::run::run_with`]) on a configuration parsed by
//! the real config loader: a store in a temporary directory, the `jsonl` source on a Unix
//! socket, the pipeline, and the uplink to an MQTT broker: an in-process rumqttd (feature
//! `embedded-broker`) unless `--broker` names one. The trip ([`trip`]) is pushed into the
//! socket line by line, fast-forwarded, as an on-vehicle app would; an observer client
//! subscribes to the vehicle's topics and decodes what arrives on the broker, as the cloud
//! bridge would. A live summary prints every second and a report at the end.

pub mod trip;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{Mutex, oneshot};
use waymark_wire::topics::{self, Stream};

use crate::config::Config;
use crate::run::{Running, run_with};
use crate::shutdown::Trigger;

/// Vehicle id used by the demo.
pub const DEMO_VEHICLE: &str = "DEMO-TRUCK-042";

/// `waymark demo` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Use this MQTT broker (`host:port`, plaintext) instead of the embedded one.
    #[arg(long)]
    pub broker: Option<String>,
    /// Playback speed: trip seconds per wall-clock second.
    #[arg(long, default_value_t = 120.0)]
    pub speed: f64,
    /// Keep the store and socket in this directory (created if missing) instead of a
    /// temporary one that is removed at the end.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print the live summary this often, milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub summary_every_ms: u64,
}

/// The demo's configuration; the real loader parses and validates it.
fn demo_config(dir: &Path, host: &str, port: u16) -> String {
    format!(
        r#"
[vehicle]
id = "{DEMO_VEHICLE}"

[store]
path = "{store}"
min_free_disk_bytes = 0

[pipeline]
batch_window_ms = 1000

[pipeline.default_filter]
deadband = 0.0

[[pipeline.signals]]
name = "Vehicle.Cargo.*"
deadband = 0.25
max_interval_ms = 60000

[[pipeline.signals]]
name = "Vehicle.Powertrain.*"
deadband = 1.0
min_interval_ms = 5000
max_interval_ms = 60000

[mqtt]
host = "{host}"
port = {port}
tls = false
keep_alive_s = 10
status_interval_s = 5

[[sources]]
type = "jsonl"
unix_socket = "{socket}"
"#,
        store = dir.join("buffer.db").display(),
        socket = dir.join("apps.sock").display(),
    )
}

/// What the observer saw on the broker.
#[derive(Debug, Default)]
struct Observed {
    telemetry_messages: u64,
    telemetry_bytes: u64,
    readings: u64,
    events: BTreeMap<u64, String>,
    event_bytes: u64,
    duplicates: u64,
    decode_errors: u64,
    status: Option<serde_json::Value>,
}

/// Runs the demo.
///
/// # Errors
/// Set-up failures (no free port, broker unreachable, socket errors).
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let temp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            temp = tempfile::tempdir().context("creating a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    let (host, port) = match &args.broker {
        Some(b) => {
            let (h, p) = b.rsplit_once(':').context("--broker must be host:port")?;
            (h.to_string(), p.parse::<u16>().context("--broker port")?)
        }
        None => ("127.0.0.1".to_string(), embedded_broker()?),
    };
    let config_text = demo_config(&dir, &host, port);
    let config =
        Config::from_toml(&config_text, Path::new("<demo>")).map_err(|e| anyhow::anyhow!("{e}"))?;

    println!(
        "Waymark demo: a refrigerated truck's trip, fast-forwarded {}x.",
        args.speed
    );
    println!(
        "  broker  {host}:{port}{}",
        if args.broker.is_none() {
            " (embedded rumqttd)"
        } else {
            ""
        }
    );
    println!("  store   {}", dir.join("buffer.db").display());
    println!("  input   jsonl on {}", dir.join("apps.sock").display());

    let observed = Arc::new(Mutex::new(Observed::default()));
    let observer = tokio::spawn(observe(host.clone(), port, observed.clone()));

    let trigger = Trigger::new();
    let (started_tx, started_rx) = oneshot::channel::<Running>();
    let gateway = tokio::spawn(run_with(config, trigger.subscribe(), move |r| {
        _ = started_tx.send(r);
    }));
    let running = started_rx.await.context("gateway failed to start")?;

    let lines = trip::build();
    let trip_s = lines.last().map(|l| l.t_s).unwrap_or(0);
    let start_ms = now_ms() - i64::from(trip_s) * 1000;
    let json_bytes: usize = lines.iter().map(|l| l.render(start_ms).len() + 1).sum();
    let total_readings = lines.iter().filter(|l| !l.is_event).count();
    let total_events = lines.len() - total_readings;
    println!(
        "  trip    {} min, {total_readings} readings and {total_events} events ({:.1} MB of JSON)\n",
        trip_s / 60,
        json_bytes as f64 / 1e6
    );

    let feed = tokio::spawn(feed(dir.join("apps.sock"), lines, start_ms, args.speed));
    let mut ticker = tokio::time::interval(Duration::from_millis(args.summary_every_ms.max(100)));
    let began = Instant::now();
    let answers = loop {
        ticker.tick().await;
        print_summary(&running, &observed, began).await;
        if feed.is_finished() {
            break feed.await.context("feeder panicked")??;
        }
    };
    // Let the last batch window close and the uplink drain.
    let drain_deadline = Instant::now() + Duration::from_secs(15);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stats = running.store.stats().await?;
        let obs = observed.lock().await;
        let events_seen = obs.events.len();
        drop(obs);
        if (stats.backlog_rows() == 0 && events_seen >= answers.ok)
            || Instant::now() > drain_deadline
        {
            break;
        }
    }
    print_summary(&running, &observed, began).await;
    trigger.fire();
    gateway.await.context("gateway panicked")??;
    observer.abort();
    report(
        &running,
        &observed,
        &answers,
        json_bytes,
        total_readings,
        began,
    )
    .await
}

/// Starts rumqttd on a free loopback port in a background thread; returns the port.
#[cfg(feature = "embedded-broker")]
fn embedded_broker() -> anyhow::Result<u16> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let text = format!(
        r#"
id = 0
[router]
id = 0
max_connections = 16
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "demo"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 1048576
max_inflight_count = 100
dynamic_filters = true
"#
    );
    let config: rumqttd::Config = toml::from_str(&text).context("embedded broker config")?;
    std::thread::Builder::new()
        .name("demo-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                eprintln!("embedded broker stopped: {e}");
            }
        })?;
    // Wait until it accepts connections.
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("embedded broker did not start on 127.0.0.1:{port}")
}

#[cfg(not(feature = "embedded-broker"))]
fn embedded_broker() -> anyhow::Result<u16> {
    bail!("this build has no embedded broker (feature `embedded-broker`): pass --broker host:port")
}

/// Producer answers counted by the feeder.
#[derive(Debug, Default)]
struct Answers {
    ok: usize,
    rejected: Vec<String>,
}

/// Pushes the trip into the jsonl socket at `speed` trip-seconds per second, and collects the
/// gateway's answers.
async fn feed(
    socket: PathBuf,
    lines: Vec<trip::TripLine>,
    start_ms: i64,
    speed: f64,
) -> anyhow::Result<Answers> {
    let stream = UnixStream::connect(&socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    let (rd, mut wr) = stream.into_split();
    let expected_events = lines.iter().filter(|l| l.is_event).count();
    let reader = tokio::spawn(async move {
        let mut answers = Answers::default();
        let mut rd = BufReader::new(rd).lines();
        while let Ok(Some(line)) = rd.next_line().await {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["ok"] == serde_json::Value::Bool(true) {
                answers.ok += 1;
            } else {
                answers.rejected.push(line);
            }
            if answers.ok + answers.rejected.len() >= expected_events
                && answers.ok >= expected_events
            {
                break;
            }
        }
        answers
    });
    let began = Instant::now();
    let speed = speed.max(0.01);
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].t_s;
        let due = began + Duration::from_secs_f64(f64::from(t) / speed);
        tokio::time::sleep_until(due.into()).await;
        buf.clear();
        while i < lines.len() && lines[i].t_s == t {
            buf.extend_from_slice(lines[i].render(start_ms).as_bytes());
            buf.push(b'\n');
            i += 1;
        }
        wr.write_all(&buf)
            .await
            .context("writing to the jsonl socket")?;
    }
    let answers = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .context("gateway did not answer every event")?
        .context("answer reader panicked")?;
    Ok(answers)
}

/// Subscribes to the vehicle's topics and decodes everything, as the bridge would.
async fn observe(host: String, port: u16, observed: Arc<Mutex<Observed>>) {
    let mut opts = MqttOptions::new("waymark-demo-observer", host, port);
    opts.set_keep_alive(Duration::from_secs(10));
    opts.set_max_packet_size(2 * 1024 * 1024, 2 * 1024 * 1024);
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    let filter = format!(
        "{}/{}/vehicles/{DEMO_VEHICLE}/+",
        topics::DEFAULT_PREFIX,
        topics::TOPIC_VERSION
    );
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if client
                    .subscribe(filter.clone(), QoS::AtLeastOnce)
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let mut obs = observed.lock().await;
                match topics::parse(topics::DEFAULT_PREFIX, &p.topic).map(|(_, s)| s) {
                    Some(Stream::Telemetry) => {
                        obs.telemetry_messages += 1;
                        obs.telemetry_bytes += p.payload.len() as u64;
                        match waymark_wire::telemetry::decode(&p.payload) {
                            Ok(rs) => obs.readings += rs.len() as u64,
                            Err(_) => obs.decode_errors += 1,
                        }
                    }
                    Some(Stream::Events) => {
                        obs.event_bytes += p.payload.len() as u64;
                        match waymark_wire::CloudEvent::from_json(&p.payload) {
                            Ok(ev) => {
                                let seq = ev.sequence_number().unwrap_or(0);
                                if obs.events.insert(seq, ev.type_).is_some() {
                                    obs.duplicates += 1;
                                }
                            }
                            Err(_) => obs.decode_errors += 1,
                        }
                    }
                    Some(Stream::Status) => {
                        obs.status = serde_json::from_slice(&p.payload).ok();
                    }
                    None => {}
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn print_summary(running: &Running, observed: &Mutex<Observed>, began: Instant) {
    let c = running.health.counters.snapshot();
    let backlog = running
        .store
        .stats()
        .await
        .map(|s| s.backlog_rows())
        .unwrap_or(0);
    let obs = observed.lock().await;
    println!(
        "[{:>5.1}s] readings in {:>7}  filtered {:>7}  stored {:>6}  | events {:>2}  batches {:>4}  on the wire {:>8} B  | backlog {:>3} rows",
        began.elapsed().as_secs_f64(),
        c.readings_in,
        c.readings_filtered,
        c.readings_stored,
        obs.events.len(),
        obs.telemetry_messages,
        obs.telemetry_bytes + obs.event_bytes,
        backlog,
    );
}

async fn report(
    running: &Running,
    observed: &Mutex<Observed>,
    answers: &Answers,
    json_bytes: usize,
    total_readings: usize,
    began: Instant,
) -> anyhow::Result<()> {
    let c = running.health.counters.snapshot();
    let obs = observed.lock().await;
    println!("\nReport after {:.1} s", began.elapsed().as_secs_f64());
    println!(
        "  input     {total_readings} readings, {} events acknowledged by the gateway, {} rejected",
        answers.ok,
        answers.rejected.len()
    );
    println!(
        "  pipeline  {} readings passed the filters, {} dropped as saying nothing new",
        c.readings_stored, c.readings_filtered
    );
    println!(
        "  telemetry {} batches of {:.0} readings on average, {} readings, {} bytes on the wire = {:.1} B per reading (input JSON: {:.0} B per reading)",
        obs.telemetry_messages,
        obs.readings as f64 / obs.telemetry_messages.max(1) as f64,
        obs.readings,
        obs.telemetry_bytes,
        obs.telemetry_bytes as f64 / obs.readings.max(1) as f64,
        json_bytes as f64 / (total_readings.max(1)) as f64,
    );
    println!(
        "  events    {} on the broker, sequence {}..{}, {} duplicates:",
        obs.events.len(),
        obs.events.keys().next().copied().unwrap_or(0),
        obs.events.keys().last().copied().unwrap_or(0),
        obs.duplicates
    );
    for (seq, ty) in &obs.events {
        println!("              #{seq:<3} {ty}");
    }
    if let Some(status) = &obs.status {
        println!(
            "  status    retained document says state={}",
            status["state"]
        );
    }
    if obs.decode_errors > 0 || !answers.rejected.is_empty() {
        bail!(
            "{} payloads did not decode; rejected lines: {:?}",
            obs.decode_errors,
            answers.rejected
        );
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
