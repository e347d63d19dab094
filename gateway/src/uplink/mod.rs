//! The uplink: one task that owns the MQTT connection and drains the store's outbox into it.
//!
//! # Invariants
//! 1. **A row is deleted only on its PUBACK.** The store is the single source of truth; a
//!    row leaves it only through [`crate::store::Store::ack`], called with the ids whose
//!    `PUBACK` the broker sent for the packet id the row was written with ([`inflight`]).
//! 2. **Every unacknowledged row is republished after every reconnect.** rumqttc forgets its
//!    in-flight publishes when the broker does not resume the session (CONNACK with
//!    `session_present = 0`; CRATES.md §1.2). After each CONNACK the fetch cursors go back to
//!    0, so every row still in the store is walked again: rows in flight in a resumed
//!    session are retransmitted by rumqttc with their packet ids, every other row is
//!    published anew. Receivers deduplicate by CloudEvent `id` (events) and by reading
//!    (vehicle, signal, time) for telemetry, since republished telemetry rows may be merged
//!    into different messages than the first time; duplicates are counted in `republishes`.
//! 3. **Events never wait for telemetry.** Telemetry rows may wait up to
//!    `mqtt.telemetry_publish_interval_ms` to be merged ([`merge`]); events are queued apart
//!    and submitted first.
//!
//! # Shape
//! - [`inflight`] (sans-IO): packet id → row ids from rumqttc's ordered event stream,
//!   retransmits, collisions, session loss; the queues before submission; the per-lane fetch
//!   cursors.
//! - [`merge`] (sans-IO): when waiting telemetry rows are published, how many go in one
//!   message, and the merge itself (decode, concatenate, encode within the packet limit).
//! - [`backoff`] (sans-IO): reconnect delay with full jitter (rumqttc has none).
//! - [`rate`] (sans-IO): drain-rate cap (messages and bytes per second).
//! - [`status`]: the retained status document and the last will.
//! - [`tls`]: rustls client configuration with the ring provider.
//! - `mqtt`: the thin async task around them. It is the only user of the `AsyncClient`, so
//!   the `Outgoing::Publish` order equals its submission order. rumqttc's `poll()` is never
//!   cancelled (a cancelled write would leave a publish marked in flight that never went
//!   out): the future owns the `EventLoop` and hands it back when it resolves.
//!
//! # rumqttc pitfalls handled here (CRATES.md §1, §14)
//! - No PUBACK handle: correlated by order in [`inflight`], including retransmits,
//!   `Outgoing::AwaitAck` collisions, and events buffered before a connection error.
//! - MQTT 3.1.1 PUBACKs carry no reason code, so a PUBACK always means accepted (the v5
//!   failure-PUBACK pitfall does not apply).
//! - The stashed collision request survives a lost session (#1056): it is cleared on a
//!   CONNACK without session, and the client is rebuilt after repeated
//!   `CollisionTimeout`s or a PUBACK that never comes.
//! - The 10 KiB default packet limit: both directions are set from `batch_max_bytes` and the
//!   largest event, plus header and topic; a row that still does not fit is never written
//!   (it would turn into a reconnect loop) and is reported.
//! - No reconnect delay: [`backoff`] decides it.
//! - The crypto provider is passed explicitly ([`tls`]).
//!
//! Clean session is off: with a broker that keeps sessions, a resumed session loses nothing,
//! and the will is only sent when the connection dies without DISCONNECT.

pub mod backoff;
pub mod inflight;
pub mod merge;
mod mqtt;
pub mod rate;
pub mod status;
pub mod tls;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use waymark_wire::topics::{self, Stream};

use crate::clock::Clock;
use crate::config::MqttConfig;
use crate::health::Health;
use crate::shutdown::Shutdown;
use crate::store::Store;

pub use tls::TlsError;

/// Component name in [`Health`].
pub const COMPONENT: &str = "uplink";

/// Fixed header (1 + 4 bytes of remaining length), topic length prefix and packet id: what a
/// QoS 1 PUBLISH adds to its topic and payload.
const PUBLISH_OVERHEAD: usize = 5 + 2 + 2;
/// Room reserved for the status document (it is a few hundred bytes).
const STATUS_MAX_BYTES: usize = 16 * 1024;

/// Why the uplink cannot start.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// An `[mqtt]` setting (or the vehicle id) cannot be used; names the key.
    #[error("{key}: {reason}")]
    Config {
        /// The config key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS files cannot be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// `password_file` cannot be read.
    #[error("cannot read mqtt.password_file {path}: {source}")]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A password that never reaches a log line.
#[derive(Clone)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The rustls configuration, shown as a word in `Debug` output (it holds the client key).
#[derive(Clone)]
struct TlsClient(Arc<rustls::ClientConfig>);

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<rustls client config>")
    }
}

/// Checked settings for the task.
#[derive(Debug, Clone)]
struct Settings {
    vehicle: String,
    host: String,
    port: u16,
    client_id: String,
    credentials: Option<(String, Secret)>,
    tls: Option<TlsClient>,
    keep_alive: Duration,
    connect_timeout_s: u64,
    inflight: u16,
    reconnect_min: Duration,
    reconnect_max: Duration,
    max_messages_per_s: u32,
    max_bytes_per_s: u64,
    status_interval: Duration,
    live_window_ms: i64,
    /// When telemetry rows are published and how they are merged.
    merge: merge::MergePolicy,
    /// Largest payload the uplink writes.
    max_payload: usize,
    /// `set_max_packet_size`, both directions.
    max_packet: usize,
    topic_events: String,
    topic_telemetry: String,
    topic_status: String,
    /// The gateway clock: the live window, merge timing, PUBACK times and the status
    /// document's `time` and `clock_source`. The system clock until [`Uplink::with_clock`].
    clock: Clock,
}

/// The MQTT uplink (see the module docs). Build with [`Uplink::new`], then `run` it as a task.
pub struct Uplink {
    settings: Settings,
    store: Store,
    health: Arc<Health>,
    rng: StdRng,
}

impl fmt::Debug for Uplink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Uplink")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Uplink {
    /// Checks the settings, loads the TLS files and the password.
    ///
    /// `batch_max_bytes` is the pipeline's largest telemetry payload; the MQTT packet limit is
    /// derived from it.
    ///
    /// # Errors
    /// [`UplinkError`] naming the key or file at fault.
    pub fn new(
        cfg: &MqttConfig,
        batch_max_bytes: usize,
        vehicle_id: &str,
        store: Store,
        health: Arc<Health>,
    ) -> Result<Self, UplinkError> {
        let bad = |key, reason: &str| UplinkError::Config {
            key,
            reason: reason.to_string(),
        };
        topics::validate_vehicle_id(vehicle_id).map_err(|r| bad("vehicle.id", &r))?;
        if cfg.host.trim().is_empty() {
            return Err(bad("mqtt.host", "must not be empty"));
        }
        let client_id = cfg.client_id(vehicle_id);
        if client_id.is_empty() || client_id.len() > 256 {
            return Err(bad("mqtt.client_id", "must be 1 to 256 characters"));
        }
        if cfg.topic_prefix.is_empty() || cfg.topic_prefix.contains(['+', '#', '\0']) {
            return Err(bad(
                "mqtt.topic_prefix",
                "must be non-empty and free of + # and NUL",
            ));
        }
        if !(1..=u64::from(u16::MAX)).contains(&cfg.keep_alive_s) {
            return Err(bad("mqtt.keep_alive_s", "must be 1 to 65535"));
        }
        if cfg.connect_timeout_s == 0 {
            return Err(bad("mqtt.connect_timeout_s", "must be at least 1"));
        }
        if cfg.inflight == 0 {
            return Err(bad("mqtt.inflight", "must be at least 1"));
        }
        if cfg.status_interval_s == 0 {
            return Err(bad("mqtt.status_interval_s", "must be at least 1"));
        }
        let (_, max_interval) = crate::config::limits::TELEMETRY_PUBLISH_INTERVAL_MS;
        if cfg.telemetry_publish_interval_ms > max_interval {
            return Err(bad(
                "mqtt.telemetry_publish_interval_ms",
                &format!("must be at most {max_interval}"),
            ));
        }
        if batch_max_bytes == 0 {
            return Err(bad("pipeline.batch_max_bytes", "must be at least 1"));
        }
        let credentials = match (&cfg.username, &cfg.password_file) {
            (None, None) => None,
            (Some(user), None) => Some((user.clone(), Secret(String::new()))),
            (None, Some(_)) => {
                return Err(bad("mqtt.password_file", "requires mqtt.username"));
            }
            (Some(user), Some(path)) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| UplinkError::PasswordFile {
                        path: path.clone(),
                        source,
                    })?;
                let password = text.lines().next().unwrap_or_default().to_string();
                Some((user.clone(), Secret(password)))
            }
        };
        let tls = tls::client_config(cfg)?;
        if tls.is_none() {
            tracing::warn!(host = %cfg.host, "MQTT TLS is disabled (mqtt.tls = false): traffic is plaintext.");
        }
        let topic = |stream| topics::topic(&cfg.topic_prefix, vehicle_id, stream);
        let (topic_events, topic_telemetry, topic_status) = (
            topic(Stream::Events),
            topic(Stream::Telemetry),
            topic(Stream::Status),
        );
        let longest_topic = topic_events
            .len()
            .max(topic_telemetry.len())
            .max(topic_status.len());
        let max_payload = batch_max_bytes
            .max(waymark_wire::event::MAX_EVENT_BYTES)
            .max(STATUS_MAX_BYTES);
        let settings = Settings {
            vehicle: vehicle_id.to_string(),
            host: cfg.host.clone(),
            port: cfg.port(),
            client_id,
            credentials,
            tls: tls.map(TlsClient),
            keep_alive: Duration::from_secs(cfg.keep_alive_s),
            connect_timeout_s: cfg.connect_timeout_s,
            inflight: cfg.inflight,
            reconnect_min: Duration::from_millis(cfg.reconnect_min_ms),
            reconnect_max: Duration::from_millis(cfg.reconnect_max_ms),
            max_messages_per_s: cfg.max_messages_per_s,
            max_bytes_per_s: cfg.max_bytes_per_s,
            status_interval: Duration::from_secs(cfg.status_interval_s),
            live_window_ms: i64::try_from(cfg.live_window_s.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            merge: merge::MergePolicy::new(cfg.telemetry_publish_interval_ms, max_payload),
            max_payload,
            max_packet: max_payload + longest_topic + PUBLISH_OVERHEAD,
            topic_events,
            topic_telemetry,
            topic_status,
            clock: Clock::new(),
        };
        Ok(Self {
            settings,
            store,
            health,
            rng: StdRng::from_os_rng(),
        })
    }

    /// Uses `clock` (the gateway's, shared with the store) instead of the system clock.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.settings.clock = clock;
        self
    }

    /// The largest MQTT packet the connection accepts, in both directions.
    pub fn max_packet_size(&self) -> usize {
        self.settings.max_packet
    }

    /// Runs until `shutdown`: connects (and reconnects with backoff), publishes the outbox in
    /// lane order, deletes rows on PUBACK, keeps the status document fresh. On shutdown it
    /// waits up to 2 s for outstanding PUBACKs, publishes the offline status and disconnects
    /// cleanly.
    ///
    /// Connection and store failures are retried, never returned.
    ///
    /// # Errors
    /// None today; the `Result` leaves room for failures a restart would not fix.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), UplinkError> {
        mqtt::run(self, shutdown).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreConfig;

    fn cfg(extra: &str) -> MqttConfig {
        toml::from_str(&format!("host = \"127.0.0.1\"\ntls = false\n{extra}")).unwrap()
    }

    fn new(c: &MqttConfig) -> Result<Uplink, UplinkError> {
        let health = Arc::new(Health::default());
        let store = Store::open(&StoreConfig::default(), "V1", health.clone()).unwrap();
        Uplink::new(c, 64 * 1024, "V1", store, health)
    }

    #[test]
    fn packet_limit_covers_batches_events_and_topics() {
        let u = new(&cfg("")).unwrap();
        let topic = "waymark/v1/vehicles/V1/telemetry".len();
        assert_eq!(u.max_packet_size(), 64 * 1024 + topic + PUBLISH_OVERHEAD);
        let health = Arc::new(Health::default());
        let store = Store::open(&StoreConfig::default(), "V1", health.clone()).unwrap();
        let big = Uplink::new(&cfg(""), 1 << 20, "V1", store, health).unwrap();
        assert_eq!(big.max_packet_size(), (1 << 20) + topic + PUBLISH_OVERHEAD);
    }

    #[test]
    fn settings_that_would_panic_in_rumqttc_are_rejected() {
        for (extra, key) in [
            ("keep_alive_s = 0", "mqtt.keep_alive_s"),
            ("keep_alive_s = 70000", "mqtt.keep_alive_s"),
            ("inflight = 0", "mqtt.inflight"),
            ("client_id = \"\"", "mqtt.client_id"),
            ("connect_timeout_s = 0", "mqtt.connect_timeout_s"),
            ("topic_prefix = \"a/#\"", "mqtt.topic_prefix"),
            ("password_file = \"/nonexistent\"", "mqtt.password_file"),
            (
                "telemetry_publish_interval_ms = 600001",
                "mqtt.telemetry_publish_interval_ms",
            ),
        ] {
            let err = new(&cfg(extra)).unwrap_err();
            assert!(
                matches!(err, UplinkError::Config { key: k, .. } if k == key),
                "{extra}: {err}"
            );
        }
    }

    #[test]
    fn password_file_is_read_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret-pass\nignored\n").unwrap();
        let c = cfg(&format!("username = \"truck\"\npassword_file = {:?}", path));
        let u = new(&c).unwrap();
        let (user, pass) = u.settings.credentials.clone().unwrap();
        assert_eq!(user, "truck");
        assert_eq!(pass.0, "s3cret-pass");
        assert!(!format!("{u:?}").contains("s3cret"));
        let missing = cfg("username = \"truck\"\npassword_file = \"/nonexistent/pw\"");
        let err = new(&missing).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/pw"), "{err}");
    }

    #[test]
    fn tls_is_the_default() {
        let c: MqttConfig = toml::from_str("host = \"broker\"").unwrap();
        assert!(matches!(
            new(&c),
            Err(UplinkError::Tls(TlsError::MissingCa))
        ));
    }
}
