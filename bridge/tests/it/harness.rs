//! Test parts: the HTTP receiver, the bridge process, a publisher, event builders.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use waymark_wire::CloudEvent;
use waymark_wire::event::{DATA_CONTENT_TYPE, SPEC_VERSION};

/// Secret every test target uses.
pub const SECRET: &[u8] = b"test-secret";

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Request {
    /// Target path segment (`erp`, `portal`).
    pub target: String,
    /// `Idempotency-Key`.
    pub key: String,
    /// Body.
    pub body: Vec<u8>,
    /// Whether the signature verified.
    pub signed: bool,
    /// Status answered.
    pub status: u16,
}

#[derive(Default)]
struct RecvState {
    /// Status to answer per target (default 200).
    modes: HashMap<String, u16>,
    /// Time to take per request, per target.
    delays: HashMap<String, u64>,
    requests: Vec<Request>,
}

/// A real HTTP server on 127.0.0.1 that records requests and answers what it is told.
#[derive(Clone)]
pub struct Receiver {
    state: Arc<Mutex<RecvState>>,
    /// Base URL, `http://127.0.0.1:PORT`.
    pub url: String,
}

async fn handle(
    State(state): State<Arc<Mutex<RecvState>>>,
    UrlPath(target): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let signed = headers
        .get("waymark-signature")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| waymark_bridge::sign::verify(SECRET, &body, s));
    let delay = state.lock().unwrap().delays.get(&target).copied();
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut st = state.lock().unwrap();
    let status = st.modes.get(&target).copied().unwrap_or(200);
    st.requests.push(Request {
        target,
        key,
        body: body.to_vec(),
        signed,
        status,
    });
    StatusCode::from_u16(status).unwrap()
}

impl Receiver {
    /// Starts the server.
    pub async fn start() -> Receiver {
        let state = Arc::new(Mutex::new(RecvState::default()));
        let app = Router::new()
            .route("/{target}", post(handle))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { state, url }
    }

    /// Answers `status` to `target` from now on.
    pub fn answer(&self, target: &str, status: u16) {
        self.state
            .lock()
            .unwrap()
            .modes
            .insert(target.into(), status);
    }

    /// Takes `ms` to answer each request to `target`.
    pub fn delay(&self, target: &str, ms: u64) {
        self.state.lock().unwrap().delays.insert(target.into(), ms);
    }

    /// Every request to `target`.
    pub fn requests(&self, target: &str) -> Vec<Request> {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.target == target)
            .cloned()
            .collect()
    }

    /// Idempotency keys `target` accepted (answered 2xx), with how many times.
    pub fn accepted(&self, target: &str) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for r in self.requests(target) {
            if (200..300).contains(&r.status) {
                *m.entry(r.key).or_insert(0) += 1;
            }
        }
        m
    }
}

/// The bridge binary as a child process.
pub struct Bridge {
    /// Its directory: config, secrets, store, log.
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Bridge {
    /// Writes the config (`{DIR}` in `body` is replaced by the directory) and the secret.
    pub fn configure(dir: &Path, broker_port: u16, body: &str) -> Bridge {
        std::fs::write(dir.join("target.secret"), SECRET).unwrap();
        let text = format!(
            "[mqtt]\nhost = \"127.0.0.1\"\nport = {broker_port}\ntls = false\nclient_id = \"bridge-test\"\n\
             keep_alive_s = 5\nreconnect_min_ms = 50\nreconnect_max_ms = 500\n\n[store]\npath = \"bridge.db\"\n\n{}",
            body.replace("{DIR}", &dir.display().to_string())
        );
        std::fs::write(dir.join("bridge.toml"), text).unwrap();
        Bridge {
            dir: dir.to_path_buf(),
            child: None,
        }
    }

    /// Runs a CLI command against this bridge's config.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_waymark-bridge"))
            .arg("--config")
            .arg(self.dir.join("bridge.toml"))
            .args(args)
            .output()
            .unwrap()
    }

    /// `status` as JSON.
    pub fn status(&self) -> serde_json::Value {
        let out = self.cli(&["status"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Starts `run`.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("bridge.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_waymark-bridge"))
            .arg("--config")
            .arg(self.dir.join("bridge.toml"))
            .args(["--log", "info", "run"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("bridge.log")).unwrap_or_default()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A QoS1 publisher that counts PUBACKs.
pub struct Publisher {
    client: AsyncClient,
    acks: Arc<AtomicU64>,
    published: u64,
}

impl Publisher {
    /// Connects to the broker on `port`.
    pub async fn connect(port: u16, id: &str) -> Publisher {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        opts.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(opts, 1000);
        let acks = Arc::new(AtomicU64::new(0));
        let a = acks.clone();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        a.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        Publisher {
            client,
            acks,
            published: 0,
        }
    }

    /// Publishes `payload` on `topic` (QoS 1).
    pub async fn publish(&mut self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        self.published += 1;
    }

    /// Waits until every publish so far was acknowledged by the broker.
    pub async fn flush(&self) {
        wait_until("publisher PUBACKs", Duration::from_secs(30), || {
            self.acks.load(Ordering::SeqCst) >= self.published
        })
        .await;
    }
}

/// The events topic of `vehicle`.
pub fn events_topic(vehicle: &str) -> String {
    format!("waymark/v1/vehicles/{vehicle}/events")
}

/// A valid event of `vehicle` with `seq` and `type_`.
pub fn event(vehicle: &str, seq: u64, type_: &str) -> (String, Vec<u8>) {
    let ev = CloudEvent {
        specversion: SPEC_VERSION.into(),
        id: uuid::Uuid::now_v7(),
        source: CloudEvent::source_for(vehicle),
        type_: type_.into(),
        time: "2026-11-23T07:52:50.123Z".into(),
        datacontenttype: DATA_CONTENT_TYPE.into(),
        subject: None,
        sequence: CloudEvent::format_sequence(seq),
        data: serde_json::json!({"trip_id": "T1", "stop_id": format!("S{seq}")}),
    };
    (ev.id.to_string(), serde_json::to_vec(&ev).unwrap())
}

/// Polls `check` every 20 ms; panics naming `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
