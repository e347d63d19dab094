//! The uplink against a real Mosquitto: lane order and delete-on-PUBACK, zero loss across
//! broker restarts with and without the session store and across a cut link, TLS and mutual
//! TLS, the drain-rate cap, the retained status document and the last will; telemetry rows
//! merged into few messages (same readings, every row deleted on the PUBACK, within the packet
//! limit), events not delayed by the telemetry publish interval, backlog sent at once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::task::JoinHandle;
use uuid::Uuid;
use waymark_gateway::config::{MqttConfig, StoreConfig};
use waymark_gateway::health::{CountersSnapshot, Health, HealthState};
use waymark_gateway::shutdown::Trigger;
use waymark_gateway::store::{Fetch, Lane, LaneCursors, NewEvent, Store, TelemetryBatch};
use waymark_gateway::uplink::{Uplink, UplinkError};
use waymark_wire::topics::{self, Stream};
use waymark_wire::{CloudEvent, Reading, Value};

use crate::support::{Gate, Message, Mosquitto, MosquittoOptions, Subscriber, TlsMode, wait_until};

const VEHICLE: &str = "TEST-1";
/// Upper bound for anything that should take milliseconds on an idle machine.
const PATIENCE: Duration = Duration::from_secs(30);

fn topic(stream: Stream) -> String {
    topics::topic(topics::DEFAULT_PREFIX, VEHICLE, stream)
}

fn all_topics() -> String {
    format!(
        "{}/{}/vehicles/{VEHICLE}/#",
        topics::DEFAULT_PREFIX,
        topics::TOPIC_VERSION
    )
}

/// Plaintext settings for a broker on `port`, with quick reconnects. Telemetry rows are
/// published one message each, as committed (`telemetry_publish_interval_ms = 0`), so that
/// tests can count messages per row; the merge tests set an interval.
fn mqtt(port: u16) -> MqttConfig {
    let mut c: MqttConfig = toml::from_str("host = \"127.0.0.1\"").expect("minimal [mqtt]");
    c.port = Some(port);
    c.tls = false;
    c.keep_alive_s = 5;
    c.connect_timeout_s = 5;
    c.reconnect_min_ms = 50;
    c.reconnect_max_ms = 300;
    c.status_interval_s = 3600;
    c.telemetry_publish_interval_ms = 0;
    c
}

/// A published outbox row as the subscriber sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Row {
    Event(Uuid),
    Telemetry(Vec<u8>),
}

/// The outbox rows among `messages`, in arrival order (status documents left out).
fn rows(messages: &[Message]) -> Vec<Row> {
    messages
        .iter()
        .filter_map(|m| match topics::parse(topics::DEFAULT_PREFIX, &m.topic) {
            Some((_, Stream::Events)) => {
                let ev = CloudEvent::from_json(&m.payload).expect("events carry CloudEvents");
                Some(Row::Event(ev.id))
            }
            Some((_, Stream::Telemetry)) => Some(Row::Telemetry(m.payload.clone())),
            _ => None,
        })
        .collect()
}

fn delivered_all(messages: &[Message], expected: &[Row]) -> bool {
    let got: BTreeSet<Row> = rows(messages).into_iter().collect();
    expected.iter().all(|r| got.contains(r))
}

/// A store plus the health registry the uplink reports into.
struct Gateway {
    _dir: TempDir,
    store: Store,
    health: Arc<Health>,
    readings: std::sync::atomic::AtomicU32,
}

/// A running uplink task.
struct Running {
    trigger: Trigger,
    task: JoinHandle<Result<(), UplinkError>>,
}

impl Running {
    /// Clean shutdown: waits for the task.
    async fn stop(self) {
        self.trigger.fire();
        let result = tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("uplink stops");
        result.expect("uplink task").expect("uplink run");
    }

    /// Kills the task without a DISCONNECT (as a crash or power cut would).
    async fn abort(self) {
        self.task.abort();
        assert!(self.task.await.is_err_and(|e| e.is_cancelled()));
    }
}

impl Gateway {
    fn new() -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let health = Arc::new(Health::default());
        let cfg = StoreConfig {
            path: dir.path().join("buffer.db"),
            ..StoreConfig::default()
        };
        let store = Store::open(&cfg, VEHICLE, health.clone()).expect("open store");
        Gateway {
            _dir: dir,
            store,
            health,
            readings: 0.into(),
        }
    }

    async fn event(&self, lane: Lane) -> Row {
        let id = Uuid::now_v7();
        let ev = NewEvent {
            id,
            type_: "waymark.test.happened".to_string(),
            time_ms: now_ms(),
            lane,
            subject: None,
            data: serde_json::json!({"test": true}),
        };
        let accepted = self.store.append_event(ev).await.expect("append event");
        assert!(!accepted.duplicate);
        Row::Event(id)
    }

    async fn telemetry(&self) -> Row {
        self.telemetry_sized(0).await
    }

    /// Commits every batch, all requests sent before the first commit answers, so that they
    /// share a transaction or two (a group commit) and keep their order; returns the payloads.
    async fn commit_all(&self, batches: &[Vec<Reading>]) -> Vec<Vec<u8>> {
        join_in_order(batches.iter().map(|b| self.commit(b)).collect()).await
    }

    /// Commits `readings` as one telemetry batch; returns its payload.
    async fn commit(&self, readings: &[Reading]) -> Vec<u8> {
        let payload = waymark_wire::telemetry::encode(readings).expect("encode");
        let times = readings.iter().map(|r| r.time);
        let batch = TelemetryBatch {
            payload: payload.clone(),
            readings: u32::try_from(readings.len()).expect("small batch"),
            first_ms: times.clone().min().unwrap_or(0),
            last_ms: times.max().unwrap_or(0),
        };
        self.store
            .append_telemetry(batch)
            .await
            .expect("append telemetry");
        payload
    }

    /// A telemetry batch with about `text_bytes` of random hex text in its readings (so that
    /// compression cannot shrink it much; split over readings of at most 1000 bytes, within
    /// the format's per-string limit), distinct per call.
    async fn telemetry_sized(&self, text_bytes: usize) -> Row {
        let n = self
            .readings
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = now_ms();
        let reading = |value: Value, i: usize| Reading {
            signal: "Vehicle.Speed".to_string(),
            value,
            unit: "km/h".to_string(),
            time: t + i as i64,
            source: "test".to_string(),
        };
        let readings: Vec<Reading> = if text_bytes == 0 {
            vec![reading(Value::Num(f64::from(n)), 0)]
        } else {
            (0..text_bytes.div_ceil(1000))
                .map(|i| {
                    let want = (text_bytes - i * 1000).min(1000);
                    let mut text = String::with_capacity(want + 16);
                    while text.len() < want {
                        text.push_str(&format!("{:016x}", rand::random::<u64>()));
                    }
                    text.truncate(want);
                    reading(Value::Text(text), i)
                })
                .collect()
        };
        let payload = waymark_wire::telemetry::encode(&readings).expect("encode");
        let batch = TelemetryBatch {
            payload: payload.clone(),
            readings: readings.len() as u32,
            first_ms: t,
            last_ms: t + readings.len() as i64 - 1,
        };
        self.store
            .append_telemetry(batch)
            .await
            .expect("append telemetry");
        Row::Telemetry(payload)
    }

    fn uplink(&self, cfg: &MqttConfig) -> Result<Uplink, UplinkError> {
        Uplink::new(
            cfg,
            64 * 1024,
            VEHICLE,
            self.store.clone(),
            self.health.clone(),
        )
    }

    fn start(&self, cfg: &MqttConfig) -> Running {
        let uplink = self.uplink(cfg).expect("uplink settings");
        let trigger = Trigger::new();
        let task = tokio::spawn(uplink.run(trigger.subscribe()));
        Running { trigger, task }
    }

    /// Rows still in the store.
    async fn unacked(&self) -> usize {
        let all = Fetch {
            after: LaneCursors {
                alert: 0,
                milestone: 0,
                live: 0,
                backlog: 0,
            },
            live_since_ms: 0,
            max_rows: 100_000,
            max_bytes: usize::MAX,
        };
        self.store.fetch(all).await.expect("fetch").len()
    }

    async fn wait_drained(&self) {
        wait_until(
            "the store to be empty (every row PUBACKed)",
            PATIENCE,
            || async { self.unacked().await == 0 },
        )
        .await;
    }

    fn counters(&self) -> CountersSnapshot {
        self.health.counters.snapshot()
    }

    async fn wait_connected(&self, connects: u64) {
        wait_until(&format!("connection #{connects}"), PATIENCE, || async {
            self.counters().connects >= connects
        })
        .await;
    }

    fn uplink_health(&self) -> (HealthState, String) {
        let h = self
            .health
            .components()
            .get("uplink")
            .cloned()
            .expect("uplink health");
        (h.state, h.detail.unwrap_or_default())
    }
}

/// Polls every future in list order until all are done (the first poll of each happens in
/// that order, so requests they send are queued in that order).
async fn join_in_order<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    use std::task::Poll;
    let mut futures: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future completed"))
        .collect()
}

fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    i64::try_from(d.as_millis()).expect("ms fit i64")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_arrive_once_in_lane_order_and_puback_deletes_them() {
    let broker = Mosquitto::start(MosquittoOptions::default()).await;
    let sub = Subscriber::connect(broker.port(), &all_topics()).await;
    let gw = Gateway::new();
    // Committed in the reverse of lane order: row ids must not decide the order.
    let t1 = gw.telemetry().await;
    let t2 = gw.telemetry().await;
    let m1 = gw.event(Lane::Milestone).await;
    let m2 = gw.event(Lane::Milestone).await;
    let a1 = gw.event(Lane::Alert).await;
    let a2 = gw.event(Lane::Alert).await;
    let up = gw.start(&mqtt(broker.port()));
    gw.wait_drained().await;
    let got = sub
        .wait_for("6 rows", PATIENCE, |m| rows(m).len() >= 6)
        .await;
    assert_eq!(rows(&got), vec![a1, a2, m1, m2, t1, t2]);

    // A row committed while connected wakes the uplink.
    let a3 = gw.event(Lane::Alert).await;
    let got = sub
        .wait_for("the live row", PATIENCE, |m| rows(m).len() >= 7)
        .await;
    assert_eq!(rows(&got)[6], a3);
    gw.wait_drained().await;

    let c = gw.counters();
    assert_eq!(
        (c.publishes, c.pubacks, c.republishes, c.connects),
        (7, 7, 0, 1),
        "{c:?}"
    );
    let row_bytes: usize = got
        .iter()
        .filter(|m| !m.topic.ends_with("/status"))
        .map(|m| m.payload.len())
        .sum();
    assert_eq!(c.bytes_published, row_bytes as u64);
    assert_eq!(gw.uplink_health().0, HealthState::Ok);
    up.stop().await;
    assert_eq!(rows(&sub.messages()).len(), 7, "each row exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_with_session_store_loses_nothing() {
    let mut broker = Mosquitto::start(MosquittoOptions::default()).await;
    let gate = Gate::start(broker.port()).await;
    let sub = Subscriber::connect(broker.port(), &all_topics()).await;
    let gw = Gateway::new();
    let up = gw.start(&mqtt(gate.port()));
    let mut expected = Vec::new();
    for _ in 0..5 {
        expected.push(gw.event(Lane::Milestone).await);
    }
    gw.wait_drained().await;
    sub.wait_for("the first rows", PATIENCE, |m| delivered_all(m, &expected))
        .await;

    // Link and broker go down; the broker saves its session store on SIGTERM.
    gate.close();
    broker.stop().await;
    for _ in 0..5 {
        expected.push(gw.event(Lane::Alert).await);
        expected.push(gw.telemetry().await);
    }
    assert_eq!(gw.unacked().await, 10);
    broker.start_again(true).await;
    sub.wait_subscribed(2).await;
    gate.open();

    gw.wait_drained().await;
    sub.wait_for("every row", PATIENCE, |m| delivered_all(m, &expected))
        .await;
    let c = gw.counters();
    assert!(c.connects >= 2, "{c:?}");
    assert!(c.pubacks >= 15, "{c:?}");
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_without_session_republishes_every_unacked_row() {
    const ROWS: u64 = 6;
    let mut broker = Mosquitto::start(MosquittoOptions::default()).await;
    let gate = Gate::start(broker.port()).await;
    let sub = Subscriber::connect(broker.port(), &all_topics()).await;
    let gw = Gateway::new();
    let up = gw.start(&mqtt(gate.port()));
    gw.wait_connected(1).await;

    // Frozen broker: the publishes are written to its socket, never acknowledged.
    broker.freeze();
    let mut expected = Vec::new();
    for i in 0..ROWS {
        expected.push(if i % 2 == 0 {
            gw.event(Lane::Alert).await
        } else {
            gw.telemetry().await
        });
    }
    wait_until("the rows to be written", PATIENCE, || async {
        gw.counters().publishes >= ROWS
    })
    .await;
    assert_eq!(gw.counters().pubacks, 0);

    // The broker dies without saving anything: the session and every in-flight publish are gone.
    gate.close();
    broker.kill();
    broker.start_again(false).await;
    sub.wait_subscribed(2).await;
    gate.open();

    gw.wait_drained().await;
    sub.wait_for("every row", PATIENCE, |m| delivered_all(m, &expected))
        .await;
    let c = gw.counters();
    assert!(
        c.republishes >= ROWS,
        "every unacknowledged row is republished: {c:?}"
    );
    assert!(c.pubacks >= ROWS, "{c:?}");
    assert!(c.connection_errors >= 1, "{c:?}");
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_link_with_resumed_session_retransmits_unacked_rows() {
    const ROWS: u64 = 5;
    let broker = Mosquitto::start(MosquittoOptions::default()).await;
    let gate = Gate::start(broker.port()).await;
    let sub = Subscriber::connect(broker.port(), &all_topics()).await;
    let gw = Gateway::new();
    let up = gw.start(&mqtt(gate.port()));
    gw.wait_connected(1).await;

    broker.freeze();
    let mut expected = Vec::new();
    for _ in 0..ROWS {
        expected.push(gw.event(Lane::Milestone).await);
    }
    wait_until("the rows to be written", PATIENCE, || async {
        gw.counters().publishes >= ROWS
    })
    .await;
    // The link dies with every publish unacknowledged; the broker itself keeps the session.
    gate.close();
    wait_until("the uplink to notice", PATIENCE, || async {
        gw.counters().connection_errors >= 1
    })
    .await;
    broker.thaw();
    gate.open();

    gw.wait_drained().await;
    sub.wait_for("every row", PATIENCE, |m| delivered_all(m, &expected))
        .await;
    let c = gw.counters();
    assert!(c.republishes >= ROWS, "{c:?}");
    assert!(c.connects >= 2, "{c:?}");
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_broker_ca() {
    let broker = Mosquitto::start(MosquittoOptions {
        tls: Some(TlsMode::ServerOnly),
    })
    .await;
    let sub = Subscriber::connect(broker.port(), &all_topics()).await;
    let gw = Gateway::new();
    let mut cfg = mqtt(broker.tls_port());
    cfg.tls = true;
    cfg.ca_file = Some(broker.certs().ca.clone());
    let expected = vec![gw.event(Lane::Alert).await, gw.telemetry().await];
    let up = gw.start(&cfg);
    gw.wait_drained().await;
    sub.wait_for("both rows", PATIENCE, |m| delivered_all(m, &expected))
        .await;
    assert_eq!(gw.counters().connects, 1);
    up.stop().await;

    // The wrong CA: the broker is not trusted and nothing is sent.
    let gw = Gateway::new();
    gw.event(Lane::Alert).await;
    cfg.ca_file = Some(broker.certs().rogue_cert.clone());
    let up = gw.start(&cfg);
    wait_until("a failed handshake", PATIENCE, || async {
        gw.counters().connection_errors >= 1
    })
    .await;
    let (state, detail) = gw.uplink_health();
    assert_eq!(state, HealthState::Down);
    assert!(
        detail.contains("the broker's certificate is not trusted"),
        "{detail}"
    );
    assert_eq!(gw.counters().connects, 0);
    assert_eq!(gw.unacked().await, 1);
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let broker = Mosquitto::start(MosquittoOptions {
        tls: Some(TlsMode::Mutual),
    })
    .await;
    let certs = broker.certs().clone();
    let sub = Subscriber::connect(broker.port(), &all_topics()).await;
    let mut cfg = mqtt(broker.tls_port());
    cfg.tls = true;
    cfg.ca_file = Some(certs.ca.clone());

    // With the client certificate: delivered.
    let gw = Gateway::new();
    let expected = vec![gw.event(Lane::Alert).await];
    cfg.client_cert_file = Some(certs.client_cert.clone());
    cfg.client_key_file = Some(certs.client_key.clone());
    let up = gw.start(&cfg);
    gw.wait_drained().await;
    sub.wait_for("the row", PATIENCE, |m| delivered_all(m, &expected))
        .await;
    up.stop().await;

    // Without one, or with one from another CA: refused, reported, nothing lost.
    for (cert, key) in [
        (None, None),
        (
            Some(certs.rogue_cert.clone()),
            Some(certs.rogue_key.clone()),
        ),
    ] {
        let gw = Gateway::new();
        gw.event(Lane::Alert).await;
        cfg.client_cert_file = cert.clone();
        cfg.client_key_file = key;
        let up = gw.start(&cfg);
        wait_until("a refused connection", PATIENCE, || async {
            gw.counters().connection_errors >= 2
        })
        .await;
        let (state, detail) = gw.uplink_health();
        assert_eq!(state, HealthState::Down);
        let expected = match cert {
            None => "the broker requires a client certificate",
            Some(_) => "the broker rejected our client certificate",
        };
        assert!(detail.contains(expected), "with cert {cert:?}: {detail}");
        assert_eq!(gw.counters().connects, 0);
        assert_eq!(gw.unacked().await, 1);
        up.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_rate_caps_limit_messages_and_bytes() {
    let broker = Mosquitto::start(MosquittoOptions::default()).await;

    // 5 messages/s with a burst of 5: 15 rows cannot all be out before (15 - 5) / 5 = 2 s.
    let gw = Gateway::new();
    for _ in 0..15 {
        gw.telemetry().await;
    }
    let mut cfg = mqtt(broker.port());
    cfg.max_messages_per_s = 5;
    let started = Instant::now();
    let up = gw.start(&cfg);
    gw.wait_drained().await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1950),
        "15 rows at 5/s took only {elapsed:?}"
    );
    assert_eq!(gw.counters().publishes, 15);
    up.stop().await;

    // 4000 B/s with a burst of 4000 B: rows of S bytes in total cannot all be out before
    // (S - 4000) / 4000 s (each row waits until the bucket holds its size).
    let gw = Gateway::new();
    let mut bytes = 0;
    for _ in 0..5 {
        if let Row::Telemetry(p) = gw.telemetry_sized(4000).await {
            bytes += p.len();
        }
    }
    let mut cfg = mqtt(broker.port());
    cfg.max_bytes_per_s = 4000;
    let started = Instant::now();
    let up = gw.start(&cfg);
    gw.wait_drained().await;
    let elapsed = started.elapsed();
    let minimum = Duration::from_secs_f64(bytes.saturating_sub(4000) as f64 / 4000.0);
    assert!(
        minimum >= Duration::from_millis(1000),
        "test sizes give a meaningful bound: {bytes} B"
    );
    assert!(
        elapsed + Duration::from_millis(20) >= minimum,
        "{bytes} B at 4000 B/s took only {elapsed:?} (minimum {minimum:?})"
    );
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_retained_and_the_last_will_says_offline() {
    let broker = Mosquitto::start(MosquittoOptions::default()).await;
    let status = topic(Stream::Status);
    let gw = Gateway::new();
    gw.telemetry().await;
    let mut cfg = mqtt(broker.port());
    cfg.status_interval_s = 1;
    let up = gw.start(&cfg);
    gw.wait_drained().await;

    // A subscriber that arrives later gets the retained online document...
    let sub = Subscriber::connect(broker.port(), &status).await;
    let got = sub
        .wait_for("the retained online status", PATIENCE, |m| {
            m.iter().any(|m| m.retain)
        })
        .await;
    let doc = got
        .iter()
        .find(|m| m.retain)
        .map(Message::json)
        .expect("retained doc");
    assert_eq!(doc["state"], "online");
    assert_eq!(doc["vehicle"], VEHICLE);
    assert_eq!(doc["version"], waymark_gateway::VERSION);
    assert!(doc["time"].is_string(), "{doc}");
    assert!(doc["backlog"]["alert"]["rows"].is_u64(), "{doc}");
    assert!(doc["counters"]["process"]["publishes"].is_u64(), "{doc}");
    assert_eq!(doc["health"]["uplink"]["state"], "ok");
    // ... and a refresh every status_interval_s that reflects the drained store.
    let got = sub
        .wait_for("a refreshed status", PATIENCE, |m| {
            m.iter()
                .any(|m| !m.retain && m.json()["backlog"]["telemetry"]["rows"] == 0)
        })
        .await;
    let fresh = got
        .iter()
        .rev()
        .find(|m| !m.retain)
        .map(Message::json)
        .expect("fresh doc");
    assert!(fresh["last_puback"].is_string(), "{fresh}");
    assert!(
        fresh["counters"]["process"]["pubacks"].as_u64() >= Some(1),
        "{fresh}"
    );

    // Killed without DISCONNECT: the broker publishes the will.
    up.abort().await;
    sub.wait_for("the last will", PATIENCE, |m| {
        m.last().is_some_and(|m| m.json()["state"] == "offline")
    })
    .await;
    let will = sub.messages().last().map(Message::json).expect("will");
    assert_eq!(will["reason"], "connection_lost");
    assert_eq!(will["vehicle"], VEHICLE);
    let late = Subscriber::connect(broker.port(), &status).await;
    let got = late
        .wait_for("the retained will", PATIENCE, |m| !m.is_empty())
        .await;
    assert_eq!(got[0].json()["state"], "offline");
    assert!(got[0].retain);

    // A clean shutdown publishes the offline document itself (the will is discarded).
    let up = gw.start(&cfg);
    late.wait_for("online again", PATIENCE, |m| {
        m.iter().any(|m| m.json()["state"] == "online")
    })
    .await;
    up.stop().await;
    late.wait_for("the shutdown status", PATIENCE, |m| {
        m.last().is_some_and(|m| m.json()["reason"] == "shutdown")
    })
    .await;
    let later = Subscriber::connect(broker.port(), &status).await;
    let got = later
        .wait_for("the retained status", PATIENCE, |m| !m.is_empty())
        .await;
    let doc = got[0].json();
    assert_eq!(
        (doc["state"].as_str(), doc["reason"].as_str()),
        (Some("offline"), Some("shutdown"))
    );
    assert!(doc["time"].is_string());
}

// ---- telemetry merging ----

/// Deterministic PRNG (splitmix64), so every run has the same trip.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// Rounds to a multiple of `q` with `decimals` decimals, as a sensor driver would print it.
fn quantise(v: f64, q: f64, decimals: i32) -> f64 {
    let p = 10f64.powi(decimals);
    ((v / q).round() * q * p).round() / p
}

/// Per-second records of a truck driving at 1 Hz: a GPS fix (latitude, longitude, speed,
/// heading, altitude) and 10 CAN and cargo temperature signals, each quantised like its
/// sensor and read at its own offset within the second (the model of the wire crate's
/// `size_report` example, in short). The first minute (leaving a standstill) is skipped.
fn truck_seconds(n: usize) -> Vec<Vec<Reading>> {
    // name, unit, source, quantum, decimals, offset in the second (ms)
    const SIGNALS: [(&str, &str, &str, f64, i32, i64); 10] = [
        (
            "Vehicle.Powertrain.CombustionEngine.Speed",
            "rpm",
            "can0",
            0.125,
            3,
            13,
        ),
        (
            "Vehicle.Powertrain.CombustionEngine.ECT",
            "celsius",
            "can0",
            1.0,
            0,
            101,
        ),
        (
            "Vehicle.Powertrain.CombustionEngine.EOT",
            "celsius",
            "can0",
            0.031_25,
            5,
            102,
        ),
        (
            "Vehicle.Powertrain.FuelSystem.RelativeLevel",
            "%",
            "can0",
            0.4,
            1,
            350,
        ),
        (
            "Vehicle.LowVoltageBattery.CurrentVoltage",
            "V",
            "can0",
            0.05,
            2,
            420,
        ),
        (
            "Vehicle.Exterior.AirTemperature",
            "celsius",
            "can0",
            0.031_25,
            5,
            505,
        ),
        (
            "Vehicle.Chassis.Accelerator.PedalPosition",
            "%",
            "can0",
            0.4,
            1,
            14,
        ),
        ("Vehicle.OBD.EngineLoad", "%", "can0", 1.0, 0, 15),
        (
            "Vehicle.Cargo.Zone1.Temperature",
            "celsius",
            "onewire",
            0.0625,
            4,
            700,
        ),
        (
            "Vehicle.Cargo.Zone2.Temperature",
            "celsius",
            "onewire",
            0.0625,
            4,
            760,
        ),
    ];
    let reading = |signal: &str, unit: &str, source: &str, time: i64, v: f64| Reading {
        signal: signal.to_string(),
        value: Value::Num(v),
        unit: unit.to_string(),
        time,
        source: source.to_string(),
    };
    let mut rng = SplitMix(7);
    let (mut lat, mut lon, mut alt, mut heading, mut speed) =
        (52.520_008f64, 13.404_954f64, 34.0f64, 80.0f64, 0.0f64);
    let mut state = [600.0, 70.0, 75.0, 82.0, 27.8, 8.0, 0.0, 20.0, -18.0, -17.5];
    let mut turn = 0.0;
    let t0 = now_ms() / 1000 * 1000 - 3_600_000;
    let mut out = Vec::new();
    for s in 0..(60 + n) {
        let t = t0 + s as i64 * 1000;
        let target = if s < 300 { 50.0 } else { 85.0 };
        let accel = (target - speed).clamp(-4.0, 2.5) + rng.unit() * 0.3;
        speed = (speed + accel).max(0.0);
        if s % 30 == 0 {
            turn = rng.unit() * 2.0;
        }
        if speed > 1.0 {
            heading = (heading + turn + rng.unit() * 0.3).rem_euclid(360.0);
        }
        let v = speed / 3.6;
        let h = heading.to_radians();
        lat += v * h.cos() / 111_320.0;
        lon += v * h.sin() / (111_320.0 * lat.to_radians().cos());
        alt += rng.unit() * 0.3;
        let load = (accel.max(0.0) * 30.0 + speed * 0.4).min(100.0);
        state[0] += ((600.0 + speed * 14.0) - state[0]) * 0.3 + rng.unit() * 8.0;
        state[1] += (88.0 - state[1]) * 0.01 + rng.unit() * 0.05;
        state[2] += (95.0 - state[2]) * 0.005 + rng.unit() * 0.02;
        state[3] -= 0.0005 * speed / 50.0;
        state[4] = 27.8 + rng.unit() * 0.06;
        state[5] += rng.unit() * 0.01;
        state[6] = (load * 0.8 + rng.unit()).clamp(0.0, 100.0);
        state[7] = (load + rng.unit() * 2.0).clamp(0.0, 100.0);
        state[8] += (-18.0 - state[8]) * 0.02 + rng.unit() * 0.04;
        state[9] += (-17.5 - state[9]) * 0.02 + rng.unit() * 0.04;
        let mut second = vec![
            reading(
                "Vehicle.CurrentLocation.Latitude",
                "deg",
                "gps",
                t,
                quantise(lat, 1e-7, 7),
            ),
            reading(
                "Vehicle.CurrentLocation.Longitude",
                "deg",
                "gps",
                t,
                quantise(lon, 1e-7, 7),
            ),
            reading("Vehicle.Speed", "km/h", "gps", t, quantise(speed, 0.1, 1)),
            reading(
                "Vehicle.CurrentLocation.Heading",
                "deg",
                "gps",
                t,
                quantise(heading, 0.1, 1),
            ),
            reading(
                "Vehicle.CurrentLocation.Altitude",
                "m",
                "gps",
                t,
                quantise(alt, 0.1, 1),
            ),
        ];
        for (i, (name, unit, source, q, decimals, phase)) in SIGNALS.into_iter().enumerate() {
            let jitter = (rng.next() % 5) as i64 - 2;
            second.push(reading(
                name,
                unit,
                source,
                t + phase + jitter,
                quantise(state[i], q, decimals),
            ));
        }
        if s >= 60 {
            out.push(second);
        }
    }
    out
}

/// Every reading as a comparable key, sorted: (signal, unit, source, time, value bits).
fn reading_set(
    readings: impl IntoIterator<Item = Reading>,
) -> Vec<(String, String, String, i64, String)> {
    let mut keys: Vec<_> = readings
        .into_iter()
        .map(|r| {
            let value = match r.value {
                Value::Num(v) => format!("n{:016x}", v.to_bits()),
                Value::Bool(b) => format!("b{b}"),
                Value::Text(t) => format!("t{t}"),
            };
            (r.signal, r.unit, r.source, r.time, value)
        })
        .collect();
    keys.sort();
    keys
}

/// Telemetry messages delivered so far (status and events left out).
fn telemetry_messages(sub: &Subscriber) -> Vec<Message> {
    sub.on(&topic(Stream::Telemetry))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_rows_wait_and_go_out_merged_with_the_same_readings() {
    const RECORDS: usize = 30;
    const PER_MESSAGE: usize = 10;
    const INTERVAL: Duration = Duration::from_secs(5);
    let broker = Mosquitto::start(MosquittoOptions::default()).await;
    let sub = Subscriber::connect(broker.port(), &topic(Stream::Telemetry)).await;
    let gw = Gateway::new();
    let mut cfg = mqtt(broker.port());
    cfg.telemetry_publish_interval_ms = INTERVAL.as_millis() as u64;
    let up = gw.start(&cfg);
    gw.wait_connected(1).await;

    // 30 one-second batches, committed ten at a time (one group commit); each ten wait until
    // they are INTERVAL old, then go out as one message.
    let seconds = truck_seconds(RECORDS);
    let mut stored_bytes = 0;
    for (group, chunk) in seconds.chunks(PER_MESSAGE).enumerate() {
        let first_commit = Instant::now();
        stored_bytes += gw
            .commit_all(chunk)
            .await
            .iter()
            .map(Vec::len)
            .sum::<usize>();
        assert_eq!(
            gw.unacked().await,
            chunk.len(),
            "the rows wait in the store"
        );
        let got = sub
            .wait_for("the merged message", PATIENCE, |m| m.len() > group)
            .await;
        // A lower bound only: a busy machine makes it later, never earlier.
        let waited = first_commit.elapsed();
        assert!(
            waited + Duration::from_millis(100) >= INTERVAL,
            "message {group} went out after {waited:?}, before the interval"
        );
        assert_eq!(got.len(), group + 1, "one message per ten rows");
        // The PUBACK deletes every row the message carried.
        gw.wait_drained().await;
    }

    let messages = telemetry_messages(&sub);
    let wire_bytes: usize = messages.iter().map(|m| m.payload.len()).sum();
    let c = gw.counters();
    assert_eq!(messages.len(), RECORDS / PER_MESSAGE, "{c:?}");
    assert_eq!(c.publishes, messages.len() as u64, "{c:?}");
    assert_eq!(c.pubacks, messages.len() as u64, "{c:?}");
    assert_eq!(c.bytes_published, wire_bytes as u64, "{c:?}");
    assert_eq!((c.republishes, c.telemetry_rows_undecodable), (0, 0));
    for m in &messages {
        assert!(m.payload.len() <= 64 * 1024, "within the packet limit");
    }
    let delivered = messages.iter().flat_map(|m| {
        waymark_wire::telemetry::decode(&m.payload).expect("a merged message decodes")
    });
    assert_eq!(
        reading_set(delivered),
        reading_set(seconds.concat()),
        "exactly the committed readings, each once"
    );
    eprintln!(
        "telemetry merge: {RECORDS} records (GPS fix + 10 signals, 1 Hz) in {RECORDS} one-second \
         batches: {:.1} B/record stored, {:.1} B/record on the wire in {} merged messages of \
         {PER_MESSAGE} batches",
        stored_bytes as f64 / RECORDS as f64,
        wire_bytes as f64 / RECORDS as f64,
        messages.len(),
    );
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_not_delayed_by_the_telemetry_interval() {
    let broker = Mosquitto::start(MosquittoOptions::default()).await;
    let sub = Subscriber::connect(broker.port(), &all_topics()).await;
    let gw = Gateway::new();
    let mut cfg = mqtt(broker.port());
    cfg.telemetry_publish_interval_ms = 600_000;
    cfg.live_window_s = 3600;
    let up = gw.start(&cfg);
    gw.wait_connected(1).await;

    let telemetry = truck_seconds(2);
    gw.commit(&telemetry[0]).await;
    let milestone = gw.event(Lane::Milestone).await;
    gw.commit(&telemetry[1]).await;
    let alert = gw.event(Lane::Alert).await;
    let got = sub
        .wait_for("both events", PATIENCE, |m| {
            delivered_all(m, &[milestone.clone(), alert.clone()])
        })
        .await;
    // Nothing makes the telemetry due for ten minutes: it still waits, durably.
    assert!(
        telemetry_messages(&sub).is_empty(),
        "telemetry waits: {:?}",
        rows(&got)
    );
    wait_until("the event rows to be deleted", PATIENCE, || async {
        gw.unacked().await == 2
    })
    .await;

    // Shutdown publishes what waits, merged into one message.
    up.stop().await;
    let got = sub
        .wait_for("the telemetry flushed on shutdown", PATIENCE, |m| {
            rows(m).len() >= 3
        })
        .await;
    let messages = telemetry_messages(&sub);
    assert_eq!(messages.len(), 1, "{:?}", rows(&got));
    let delivered = waymark_wire::telemetry::decode(&messages[0].payload).expect("decodes");
    assert_eq!(reading_set(delivered), reading_set(telemetry.concat()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_goes_out_at_once_merged_within_the_packet_limit() {
    const ROWS: usize = 24;
    let broker = Mosquitto::start(MosquittoOptions::default()).await;
    let sub = Subscriber::connect(broker.port(), &topic(Stream::Telemetry)).await;
    let gw = Gateway::new();
    // Rows of about 6 KB of incompressible text: about ten fit one 64 KiB message by the
    // size bound, so the backlog needs a few messages.
    let mut committed = Vec::new();
    let mut stored = Vec::new();
    for _ in 0..ROWS {
        let Row::Telemetry(payload) = gw.telemetry_sized(6000).await else {
            unreachable!("telemetry_sized commits telemetry")
        };
        committed.extend(waymark_wire::telemetry::decode(&payload).expect("decodes"));
        stored.push(payload);
    }
    // An outage: by the time the link is back the rows are older than the live window.
    let mut cfg = mqtt(broker.port());
    cfg.telemetry_publish_interval_ms = 600_000;
    cfg.live_window_s = 1;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let up = gw.start(&cfg);
    // Backlog does not wait for the interval (ten minutes, far beyond the patience here).
    gw.wait_drained().await;
    let decoded = |m: &[Message]| {
        m.iter()
            .map(|m| waymark_wire::telemetry::decode(&m.payload).map_or(0, |r| r.len()))
            .sum::<usize>()
    };
    sub.wait_for("every reading", PATIENCE, |m| decoded(m) >= committed.len())
        .await;
    let messages = telemetry_messages(&sub);
    assert!(
        (2..ROWS / 2).contains(&messages.len()),
        "merged into a few messages: {}",
        messages.len()
    );
    for m in &messages {
        assert!(m.payload.len() <= 64 * 1024, "{} bytes", m.payload.len());
    }
    let delivered = messages
        .iter()
        .flat_map(|m| waymark_wire::telemetry::decode(&m.payload).expect("decodes"));
    assert_eq!(reading_set(delivered), reading_set(committed));
    let c = gw.counters();
    assert_eq!(c.pubacks, messages.len() as u64, "{c:?}");
    up.stop().await;
}
