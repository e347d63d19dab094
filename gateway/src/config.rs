//! The configuration file (`/etc/waymark/waymark.toml`).
//!
//! One TOML file, `deny_unknown_fields` everywhere, units in key names, a documented default
//! for every key that has one. [`RawConfig`] is what serde reads; [`Config::from_toml`]
//! validates it once into the checked [`Config`] the rest of the gateway uses. Every error
//! names the key path and the line. `examples/waymark.toml` documents every key and a test
//! parses it.

use std::path::PathBuf;

use serde::Deserialize;

/// The whole file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[vehicle]`: who we are.
    pub vehicle: VehicleConfig,
    /// `[store]`: the durable buffer.
    #[serde(default)]
    pub store: StoreConfig,
    /// `[pipeline]`: filtering and batching.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// `[mqtt]`: the broker connection.
    pub mqtt: MqttConfig,
    /// `[[sources]]`: where readings and events come from.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
}

/// `[vehicle]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VehicleConfig {
    /// Vehicle id: appears in every topic and in every event's `source`.
    /// 1 to 64 characters of `A-Z a-z 0-9 - _ .`. Required.
    pub id: String,
}

/// `[store]`: the SQLite store-and-forward buffer (see `store` for the durability contract).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite file. Default `/var/lib/waymark/buffer.db` (systemd `StateDirectory=waymark`).
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// Byte quota for unsent data (payload bytes). Beyond it the oldest telemetry is dropped
    /// and counted; events are never dropped for space. Default 256 MiB.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Free space to keep on the store's filesystem. Below it the oldest telemetry is dropped
    /// and counted, as for the quota. Default 64 MiB.
    #[serde(default = "default_min_free_disk_bytes")]
    pub min_free_disk_bytes: u64,
    /// Unsent events older than this expire (deleted and counted). 0 = never. Default 30 days.
    #[serde(default = "default_event_max_age_s")]
    pub event_max_age_s: u64,
    /// How long ids of accepted events are remembered to answer producer retries with the
    /// original acceptance instead of a second event. Default 7 days.
    #[serde(default = "default_dedup_retention_s")]
    pub dedup_retention_s: u64,
}

/// `[pipeline]`: filtering and batching of telemetry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Longest time a reading waits in memory before its batch is committed to the store.
    /// This window is the only accepted telemetry a power cut can lose. Default 1000 ms.
    #[serde(default = "default_batch_window_ms")]
    pub batch_window_ms: u64,
    /// A batch is flushed when it holds this many readings. Default 2000.
    #[serde(default = "default_batch_max_readings")]
    pub batch_max_readings: usize,
    /// Largest encoded batch payload; also sets the MQTT maximum packet size. Default 64 KiB.
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// Filter applied to signals that no `[[pipeline.signals]]` entry matches.
    #[serde(default)]
    pub default_filter: FilterConfig,
    /// Per-signal filters; the first entry whose `name` matches wins.
    #[serde(default)]
    pub signals: Vec<SignalFilterConfig>,
}

/// Deadband and interval settings for a signal.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// A numeric reading passes only if it differs from the last passed value by more than
    /// this (in the signal's unit). 0 = any change passes. Default 0.
    #[serde(default)]
    pub deadband: f64,
    /// A reading passes only if at least this long after the last passed one. Default 0.
    #[serde(default)]
    pub min_interval_ms: u64,
    /// A reading passes regardless of the deadband once this long has gone by since the last
    /// passed one, so an unchanging signal still reports. 0 = never. Default 0.
    #[serde(default)]
    pub max_interval_ms: u64,
}

/// `[[pipeline.signals]]`: a filter for the signals whose name matches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalFilterConfig {
    /// Signal name (`Vehicle.Speed`) or a prefix ending in `*` (`Vehicle.Cargo.*`).
    pub name: String,
    /// The filter.
    #[serde(flatten)]
    pub filter: FilterConfig,
}

/// `[mqtt]`: the broker connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or address.
    pub host: String,
    /// Broker port. Default 8883 with TLS, 1883 with `tls = false`.
    #[serde(default)]
    pub port: Option<u16>,
    /// TLS (rustls, ring). Plaintext only when this is explicitly `false`. Default true.
    #[serde(default = "default_true")]
    pub tls: bool,
    /// PEM file with the CA certificate(s) that sign the broker's certificate.
    /// Required with TLS.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain for mutual TLS. Set together with `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for mutual TLS.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// MQTT user name, if the broker wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the MQTT password (first line). Kept out of the config so the config can
    /// be world-readable. Requires `username`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// MQTT client id. Default `waymark-<vehicle id>`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// First topic segment. Default `waymark`.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// Keep-alive interval; also how fast a dead link is noticed. Default 30 s.
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
    /// TCP + TLS + CONNACK deadline. Default 10 s.
    #[serde(default = "default_connect_timeout_s")]
    pub connect_timeout_s: u64,
    /// Publishes awaiting PUBACK at once. Default 32 (see CRATES.md on rumqttc collisions).
    #[serde(default = "default_inflight")]
    pub inflight: u16,
    /// First reconnect delay; doubles up to `reconnect_max_ms`, with full jitter. Default 500.
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay. Default 60000.
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// Drain-rate cap in messages per second (protects a metered link). 0 = no cap. Default 0.
    #[serde(default)]
    pub max_messages_per_s: u32,
    /// Drain-rate cap in payload bytes per second. 0 = no cap. Default 0.
    #[serde(default)]
    pub max_bytes_per_s: u64,
    /// How often the retained status document is refreshed. Default 30 s.
    #[serde(default = "default_status_interval_s")]
    pub status_interval_s: u64,
    /// Telemetry younger than this is "live" and goes before older backlog. Default 60 s.
    #[serde(default = "default_live_window_s")]
    pub live_window_s: u64,
}

/// `[[sources]]`: one source of readings and/or events, selected by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// Newline-delimited JSON from on-vehicle apps.
    Jsonl(JsonlConfig),
}

/// `type = "jsonl"`: on-vehicle apps push readings and events as JSON lines.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlConfig {
    /// Source name in readings, logs and health. Default `jsonl`.
    #[serde(default = "default_jsonl_name")]
    pub name: String,
    /// Unix socket path to listen on. At least one of `unix_socket`, `tcp_listen`.
    #[serde(default)]
    pub unix_socket: Option<PathBuf>,
    /// Loopback TCP address to listen on, e.g. `127.0.0.1:7410`. Must be a loopback address.
    #[serde(default)]
    pub tcp_listen: Option<std::net::SocketAddr>,
    /// Longest accepted line, bytes. Longer lines are rejected (and skipped). Default 65536.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Per-connection rate limit, lines per second (token bucket, burst = one second's worth).
    /// Reading is paused, not data dropped, when a producer exceeds it. Default 50000.
    #[serde(default = "default_max_lines_per_s")]
    pub max_lines_per_s: u32,
    /// Simultaneous connections. Default 16.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_true() -> bool {
    true
}
fn default_store_path() -> PathBuf {
    PathBuf::from("/var/lib/waymark/buffer.db")
}
fn default_max_bytes() -> u64 {
    256 * 1024 * 1024
}
fn default_min_free_disk_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_event_max_age_s() -> u64 {
    30 * 24 * 3600
}
fn default_dedup_retention_s() -> u64 {
    7 * 24 * 3600
}
fn default_batch_window_ms() -> u64 {
    1000
}
fn default_batch_max_readings() -> usize {
    2000
}
fn default_batch_max_bytes() -> usize {
    64 * 1024
}
fn default_topic_prefix() -> String {
    waymark_wire::topics::DEFAULT_PREFIX.to_string()
}
fn default_keep_alive_s() -> u64 {
    30
}
fn default_connect_timeout_s() -> u64 {
    10
}
fn default_inflight() -> u16 {
    32
}
fn default_reconnect_min_ms() -> u64 {
    500
}
fn default_reconnect_max_ms() -> u64 {
    60_000
}
fn default_status_interval_s() -> u64 {
    30
}
fn default_live_window_s() -> u64 {
    60
}
fn default_jsonl_name() -> String {
    "jsonl".to_string()
}
fn default_max_line_bytes() -> usize {
    64 * 1024
}
fn default_max_lines_per_s() -> u32 {
    50_000
}
fn default_max_connections() -> usize {
    16
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: default_store_path(),
            max_bytes: default_max_bytes(),
            min_free_disk_bytes: default_min_free_disk_bytes(),
            event_max_age_s: default_event_max_age_s(),
            dedup_retention_s: default_dedup_retention_s(),
        }
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            batch_window_ms: default_batch_window_ms(),
            batch_max_readings: default_batch_max_readings(),
            batch_max_bytes: default_batch_max_bytes(),
            default_filter: FilterConfig::default(),
            signals: Vec::new(),
        }
    }
}

impl MqttConfig {
    /// The port to connect to: `port`, or 8883 with TLS and 1883 without.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(if self.tls { 8883 } else { 1883 })
    }

    /// The MQTT client id: `client_id`, or `waymark-<vehicle id>`.
    pub fn client_id(&self, vehicle_id: &str) -> String {
        self.client_id.clone().unwrap_or_else(|| format!("waymark-{vehicle_id}"))
    }
}
