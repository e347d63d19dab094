//! The daemon: thin async tasks around the store and the sans-IO cores.
//!
//! ```text
//! rumqttc EventLoop ─Publish→ mpsc ─→ writer: Store::record_batch (1 tx) ─→ client.ack(each)
//!                                                └─ notify targets ─→ one delivery task per target
//! gap ticker (1 s): Store::raise_gap_alerts                    ├─ Store::due → POST × concurrency
//!                                                               └─ retry::decide → Store::apply (1 tx)
//! ```
//!
//! # Invariants
//! - A publish is acknowledged only after the batch holding it was committed; a batch that
//!   fails to commit is retried (never acknowledged, never dropped) until it commits.
//! - Each target has its own task and its own outbox rows; a task waits only for its own
//!   target.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use waymark_wire::Timestamp;
use waymark_wire::topics::{self, Stream};

use crate::config::{Config, Target};
use crate::intake::Limits;
use crate::retry::{self, Outcome};
use crate::sign;
use crate::store::{Incoming, Routing, Store, StoreError};

/// Wall-clock UTC milliseconds. The bridge's only clock: it stamps receptions, schedules
/// retries and ages gaps (event times are the vehicles' own).
pub fn now_ms() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::try_from(d.as_millis()).unwrap_or(Timestamp::MAX)
}

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store cannot be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The HTTP client cannot be built (TLS setup).
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// `metrics.listen` cannot be bound.
    #[error("metrics.listen: cannot listen on {addr}: {source}")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// `GET /metrics`: the `status` document in the Prometheus text format.
async fn metrics(
    axum::extract::State((store, names)): axum::extract::State<(Shared, Arc<Vec<String>>)>,
) -> (axum::http::StatusCode, String) {
    match with_store(&store, move |s| s.status(&names, now_ms())).await {
        Ok(status) => (axum::http::StatusCode::OK, render_metrics(&status)),
        Err(e) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("# store unavailable: {e}\n"),
        ),
    }
}

/// Renders a status document as Prometheus text (exposition format 0.0.4).
pub fn render_metrics(status: &crate::store::Status) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in rows {
            out.push_str(&format!("{name}{labels} {v}\n"));
        }
    };
    let per_target = |f: &dyn Fn(&crate::store::TargetStatus) -> f64| {
        status
            .targets
            .iter()
            .map(|(t, s)| (format!("{{target=\"{t}\"}}"), f(s)))
            .collect::<Vec<_>>()
    };
    family(
        "waymark_bridge_backlog",
        "gauge",
        "Events waiting in the target's outbox.",
        per_target(&|s| s.backlog as f64),
    );
    family(
        "waymark_bridge_oldest_age_seconds",
        "gauge",
        "Age of the oldest event waiting for the target (0 when none).",
        per_target(&|s| s.oldest_age_ms.unwrap_or(0) as f64 / 1000.0),
    );
    family(
        "waymark_bridge_dead_letters",
        "gauge",
        "Events in the dead-letter table for the target.",
        per_target(&|s| s.dlq as f64),
    );
    family(
        "waymark_bridge_vehicles_with_open_gaps",
        "gauge",
        "Vehicles with at least one open sequence gap.",
        vec![(String::new(), status.open_gaps.len() as f64)],
    );
    family(
        "waymark_bridge_events_total",
        "counter",
        "Distinct events recorded.",
        vec![(String::new(), status.events as f64)],
    );
    family(
        "waymark_bridge_counter_total",
        "counter",
        "The bridge's persistent counters (docs/bridge.md), by name.",
        status
            .counters
            .iter()
            .map(|(k, v)| (format!("{{name=\"{k}\"}}"), *v as f64))
            .collect(),
    );
    out
}

type Shared = Arc<Mutex<Store>>;

async fn with_store<T: Send + 'static>(
    store: &Shared,
    f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || {
        let mut guard = store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    })
    .await
    {
        Ok(r) => r,
        Err(e) => Err(StoreError::Sql(rusqlite::Error::ToSqlConversionFailure(
            Box::new(e),
        ))),
    }
}

/// The routing the store needs, from the config.
pub fn routing(config: &Config) -> Routing {
    Routing {
        prefix: config.mqtt.topic_prefix.clone(),
        limits: Limits {
            max_event_bytes: config.intake.max_event_bytes,
            max_telemetry_bytes: config.intake.max_telemetry_bytes,
        },
        targets: config
            .targets
            .iter()
            .map(|t| (t.config.name.clone(), t.config.types.clone()))
            .collect(),
        telemetry_target: config.telemetry.target.clone(),
        telemetry_jsonl: config.telemetry.jsonl_path.clone(),
        bridge_id: config.mqtt.client_id.clone(),
    }
}

/// Runs until `shutdown` resolves.
///
/// # Errors
/// [`RunError`] when the store or the HTTP client cannot be set up; runtime failures
/// (broker down, target down, disk errors) are retried and logged, not returned.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let store = Store::open(&config.store.path, config.store.reject_keep_bytes)?;
    let store: Shared = Arc::new(Mutex::new(store));
    let routing = Arc::new(routing(&config));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tls_backend_rustls()
        .build()?;

    let mut tasks = JoinSet::new();
    let mut notifies: HashMap<String, Arc<Notify>> = HashMap::new();
    for target in &config.targets {
        let notify = Arc::new(Notify::new());
        notifies.insert(target.config.name.clone(), notify.clone());
        tasks.spawn(deliver(target.clone(), store.clone(), http.clone(), notify));
    }
    let notifies = Arc::new(notifies);

    // Gap alerts.
    {
        let store = store.clone();
        let routing = routing.clone();
        let notifies = notifies.clone();
        let after_ms =
            i64::try_from(config.gaps.alert_after_s.saturating_mul(1000)).unwrap_or(i64::MAX);
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let routing = routing.clone();
                match with_store(&store, move |s| {
                    s.raise_gap_alerts(&routing, now_ms(), after_ms)
                })
                .await
                {
                    Ok(targets) => wake(&notifies, &targets),
                    Err(e) => tracing::error!(error = %e, "cannot raise gap alerts"),
                }
            }
        });
    }

    if let Some(addr) = config.metrics.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| RunError::Metrics { addr, source })?;
        let names: Vec<String> = config
            .targets
            .iter()
            .map(|t| t.config.name.clone())
            .collect();
        let app = axum::Router::new()
            .route("/metrics", axum::routing::get(metrics))
            .with_state((store.clone(), Arc::new(names)));
        tracing::info!(%addr, "Prometheus endpoint listening");
        tasks.spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "Prometheus endpoint stopped");
            }
        });
    }

    // MQTT intake.
    let m = &config.mqtt;
    let mut options = MqttOptions::new(m.client_id.clone(), m.host.clone(), m.port);
    options.set_keep_alive(Duration::from_secs(m.keep_alive_s));
    options.set_clean_session(false);
    options.set_manual_acks(true);
    options.set_inflight(m.inflight);
    // Accept anything up to the larger limit plus topic and header room, so an oversized
    // message is rejected (and kept) by intake instead of breaking the connection.
    let max_packet = config
        .intake
        .max_event_bytes
        .max(config.intake.max_telemetry_bytes)
        + 64 * 1024;
    options.set_max_packet_size(max_packet, 64 * 1024);
    if let (Some(user), Some(pw)) = (&m.username, &config.mqtt_password) {
        options.set_credentials(user.clone(), pw.clone());
    }
    // Room for a whole batch of PUBACKs plus the SUBSCRIBEs: the writer's `ack` never waits
    // for the event loop, which may itself be waiting to hand the writer a message.
    let (client, mut eventloop) = AsyncClient::new(options, config.store.batch_max + 64);
    let mut filters = vec![topics::all_vehicles_filter(&m.topic_prefix, Stream::Events)];
    if m.subscribe_telemetry {
        filters.push(topics::all_vehicles_filter(
            &m.topic_prefix,
            Stream::Telemetry,
        ));
    }
    let (tx, rx) = mpsc::channel::<Publish>(usize::from(m.inflight).max(1) * 2);
    tasks.spawn(writer(
        rx,
        client.clone(),
        store.clone(),
        routing.clone(),
        notifies.clone(),
        config.store.batch_max,
    ));
    let reconnect_min = Duration::from_millis(m.reconnect_min_ms);
    let reconnect_max = Duration::from_millis(m.reconnect_max_ms);
    let poll = async move {
        let mut backoff = waymark_common::backoff::Backoff::new(
            reconnect_min,
            reconnect_max,
            Duration::from_secs(60),
        );
        let mut rng = StdRng::from_os_rng();
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    tracing::info!(
                        session_present = ack.session_present,
                        "connected to the broker"
                    );
                    backoff.connected(std::time::Instant::now());
                    for f in &filters {
                        if let Err(e) = client.try_subscribe(f.clone(), QoS::AtLeastOnce) {
                            tracing::error!(error = %e, "cannot queue SUBSCRIBE");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send(p).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let delay = backoff.next_delay(std::time::Instant::now(), &mut rng);
                    tracing::warn!(error = %e, ?delay, "broker connection failed");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    };
    tokio::select! {
        () = poll => {}
        () = shutdown => tracing::info!("shutting down"),
        Some(r) = tasks.join_next() => {
            if let Err(e) = r { tracing::error!(error = %e, "a bridge task ended"); }
        }
    }
    tasks.abort_all();
    Ok(())
}

fn wake(notifies: &HashMap<String, Arc<Notify>>, targets: &[String]) {
    for t in targets {
        if let Some(n) = notifies.get(t) {
            n.notify_one();
        }
    }
}

async fn writer(
    mut rx: mpsc::Receiver<Publish>,
    client: AsyncClient,
    store: Shared,
    routing: Arc<Routing>,
    notifies: Arc<HashMap<String, Arc<Notify>>>,
    batch_max: usize,
) {
    let mut batch: Vec<Publish> = Vec::with_capacity(batch_max);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < batch_max {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let msgs: Arc<Vec<Incoming>> = Arc::new(
            batch
                .iter()
                .map(|p| Incoming {
                    topic: p.topic.clone(),
                    payload: p.payload.to_vec(),
                })
                .collect(),
        );
        let mut delay = Duration::from_millis(100);
        loop {
            let batch_msgs = msgs.clone();
            let routing = routing.clone();
            match with_store(&store, move |s| {
                s.record_batch(&batch_msgs, &routing, now_ms())
            })
            .await
            {
                Ok(out) => {
                    tracing::debug!(?out, "batch recorded");
                    wake(&notifies, &out.targets);
                    break;
                }
                Err(e) => {
                    // Not acknowledged: the broker keeps the messages; retry the commit.
                    tracing::error!(error = %e, messages = msgs.len(), "cannot record a batch; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
        for p in batch.drain(..) {
            if let Err(e) = client.ack(&p).await {
                tracing::warn!(error = %e, "cannot queue PUBACK (the broker will redeliver)");
            }
        }
    }
}

/// Sends one body; classifies the result.
async fn post(http: &reqwest::Client, target: &Target, due: &crate::store::Due) -> Outcome {
    let t = &target.config;
    let request = http
        .post(&t.url)
        .timeout(Duration::from_millis(t.timeout_ms))
        .header(
            "Content-Type",
            "application/cloudevents+json; charset=utf-8",
        )
        .header("Idempotency-Key", &due.event_id)
        .header("Waymark-Attempt", (due.attempts + 1).to_string())
        .header(sign::HEADER, sign::signature(&target.secret, &due.body))
        .body(due.body.clone());
    match request.send().await {
        Ok(resp) => {
            let code = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("Retry-After")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            // Read (and drop) the body so the connection can be reused.
            if resp.bytes().await.is_err() {
                tracing::debug!("response body not read completely");
            }
            Outcome::Status { code, retry_after }
        }
        Err(e) if e.is_timeout() => Outcome::Timeout,
        Err(e) if e.is_connect() => Outcome::Connect(error_chain(&e)),
        Err(e) => Outcome::Transport(error_chain(&e)),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

async fn deliver(target: Target, store: Shared, http: reqwest::Client, notify: Arc<Notify>) {
    let name = target.config.name.clone();
    let policy = target.config.policy();
    let concurrency = target.config.concurrency;
    let target = Arc::new(target);
    let mut rng = StdRng::from_os_rng();
    loop {
        let n = name.clone();
        let due = match with_store(&store, move |s| s.due(&n, now_ms(), concurrency * 4)).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(target = %name, error = %e, "cannot read the outbox");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if due.is_empty() {
            let n = name.clone();
            let next = with_store(&store, move |s| s.next_due(&n))
                .await
                .ok()
                .flatten();
            let wait = next.map_or(1000, |at| (at - now_ms()).clamp(1, 1000));
            tokio::select! {
                () = notify.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
            }
            continue;
        }
        let mut inflight = JoinSet::new();
        let mut results = Vec::with_capacity(due.len());
        for d in due {
            if inflight.len() >= concurrency
                && let Some(Ok(r)) = inflight.join_next().await
            {
                results.push(r);
            }
            let http = http.clone();
            let target = target.clone();
            inflight.spawn(async move {
                let outcome = post(&http, &target, &d).await;
                (d.event_id, d.attempts + 1, outcome)
            });
        }
        while let Some(r) = inflight.join_next().await {
            if let Ok(r) = r {
                results.push(r);
            }
        }
        let now = now_ms();
        let decided: Vec<_> = results
            .into_iter()
            .map(|(id, attempt, outcome)| {
                let d = retry::decide(&policy, &outcome, attempt, now, &mut rng);
                if let retry::Decision::Retry { reason, .. } = &d {
                    tracing::debug!(target = %name, event_id = %id, attempt, %reason, "delivery failed; will retry");
                }
                (id, attempt, d)
            })
            .collect();
        let n = name.clone();
        let decided = Arc::new(decided);
        loop {
            let d = decided.clone();
            let n = n.clone();
            match with_store(&store, move |s| s.apply(&n, &d, now)).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(target = %name, error = %e, "cannot record deliveries; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}
