//! The uplink against a real Mosquitto: lane order and delete-on-PUBACK, zero loss across
//! broker restarts with and without the session store and across a cut link, TLS and mutual
//! TLS, the drain-rate cap, the retained status document and the last will.

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

/// Plaintext settings for a broker on `port`, with quick reconnects.
fn mqtt(port: u16) -> MqttConfig {
    let mut c: MqttConfig = toml::from_str("host = \"127.0.0.1\"").expect("minimal [mqtt]");
    c.port = Some(port);
    c.tls = false;
    c.keep_alive_s = 5;
    c.connect_timeout_s = 5;
    c.reconnect_min_ms = 50;
    c.reconnect_max_ms = 300;
    c.status_interval_s = 3600;
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
