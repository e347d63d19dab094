//! The configuration file (`/etc/waymark/waymark.toml`).
//!
//! One TOML file, `deny_unknown_fields` everywhere, units in key names, a documented default
//! for every key that has one. [`RawConfig`] is what serde reads; [`Config::from_toml`]
//! validates it once into the checked [`Config`] the rest of the gateway uses.
//! `examples/waymark.toml` documents every key and a test parses it; `docs/configuration.md`
//! is the user manual.
//!
//! # Invariants
//! - A [`Config`] only exists after every check below passed: code downstream never
//!   re-validates ranges, and never sees a relative path (relative paths in the file are
//!   resolved against the directory of the file).
//! - Every error names the file, the line and column, and the key path
//!   (`/etc/waymark/waymark.toml:12:1: mqtt.ca_file: required when tls = true`).
//!
//! # How errors find their line
//! The text is parsed once into `toml`'s spanned document tree ([`toml::de::DeTable`], every
//! key and value with its byte range). serde then deserializes [`RawConfig`] from a copy of
//! that tree, so syntax, type and unknown-key errors carry the byte range of the offending
//! key or value; the key path is recovered by finding the innermost key whose range holds it.
//! Validation works on the typed [`RawConfig`] and reports key *paths*
//! (`pipeline.signals[2].deadband`); each path is looked up in the tree to find its line.
//! A key that is missing is reported at the nearest enclosing table that exists (its
//! `[header]` line). serde buffers internally tagged enums (`[[sources]]`), which loses the
//! position inside the entry; for such errors the entry is deserialized again on its own as
//! its variant's struct, which gives the exact key.

use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// The whole file, as written.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VehicleConfig {
    /// Vehicle id: appears in every topic and in every event's `source`.
    /// 1 to 64 characters of `A-Z a-z 0-9 - _ .`. Required.
    pub id: String,
}

/// `[store]`: the SQLite store-and-forward buffer (see `store` for the durability contract).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite file. Default `/var/lib/waymark/buffer.db` (systemd `StateDirectory=waymark`).
    /// A relative path is relative to the directory of the config file.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// Byte quota for unsent data (payload bytes). Beyond it the oldest telemetry is dropped
    /// and counted; events are never dropped for space. At least 1 MiB and at least
    /// `pipeline.batch_max_bytes`. Default 256 MiB.
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
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Longest time a reading waits in memory before its batch is committed to the store.
    /// This window is the only accepted telemetry a power cut can lose. 10 to 60000 ms.
    /// Default 1000 ms.
    #[serde(default = "default_batch_window_ms")]
    pub batch_window_ms: u64,
    /// A batch is flushed when it holds this many readings. 1 to 1000000. Default 2000.
    #[serde(default = "default_batch_max_readings")]
    pub batch_max_readings: usize,
    /// Largest encoded batch payload; also sets the MQTT maximum packet size.
    /// 1 KiB to 255 MiB. Default 64 KiB.
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// Filter applied to signals that no `[[pipeline.signals]]` entry matches.
    #[serde(default)]
    pub default_filter: FilterConfig,
    /// Per-signal filters; the first entry whose `name` matches wins.
    #[serde(default)]
    pub signals: Vec<SignalFilterConfig>,
    /// `[pipeline.positions]`: adaptive position logging (docs/positions.md).
    #[serde(default)]
    pub positions: crate::pipeline::positions::PositionsConfig,
}

/// `[pipeline.default_filter]`: deadband and interval settings for a signal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// A numeric reading passes only if it differs from the last passed value by more than
    /// this (in the signal's unit). 0 = any change passes. Finite, ≥ 0. Booleans and text
    /// pass on any change regardless. Default 0.
    #[serde(default)]
    pub deadband: f64,
    /// A reading passes only if at least this long after the last passed one. Default 0.
    #[serde(default)]
    pub min_interval_ms: u64,
    /// A reading passes regardless of the deadband once this long has gone by since the last
    /// passed one, so an unchanging signal still reports. 0 = never, otherwise at least
    /// `min_interval_ms`. Default 0.
    #[serde(default)]
    pub max_interval_ms: u64,
}

/// `[[pipeline.signals]]`: a filter for the signals whose name matches.
///
/// The filter keys are spelled out here rather than `#[serde(flatten)]`ed from
/// [`FilterConfig`]: serde buffers flattened fields, which loses the position of type errors
/// and does not support `deny_unknown_fields`. [`SignalFilterConfig::filter`] gives the
/// [`FilterConfig`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SignalFilterConfig {
    /// Signal name (`Vehicle.Speed`) or a prefix ending in `*` (`Vehicle.Cargo.*`). Required.
    pub name: String,
    /// As [`FilterConfig::deadband`]. Default 0.
    #[serde(default)]
    pub deadband: f64,
    /// As [`FilterConfig::min_interval_ms`]. Default 0.
    #[serde(default)]
    pub min_interval_ms: u64,
    /// As [`FilterConfig::max_interval_ms`]. Default 0.
    #[serde(default)]
    pub max_interval_ms: u64,
}

impl SignalFilterConfig {
    /// The filter settings of this entry.
    pub fn filter(&self) -> FilterConfig {
        FilterConfig {
            deadband: self.deadband,
            min_interval_ms: self.min_interval_ms,
            max_interval_ms: self.max_interval_ms,
        }
    }
}

/// `[mqtt]`: the broker connection.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or address. Required.
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
    /// First topic segment. No `+`, `#`, empty levels, leading `$` or `/` at either end.
    /// Default `waymark`.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// Keep-alive interval; also how fast a dead link is noticed. 5 to 65535 s. Default 30 s.
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
    /// TCP + TLS + CONNACK deadline. 1 to 300 s. Default 10 s.
    #[serde(default = "default_connect_timeout_s")]
    pub connect_timeout_s: u64,
    /// Publishes awaiting PUBACK at once. 1 to 1024. Default 32 (see CRATES.md on rumqttc
    /// collisions).
    #[serde(default = "default_inflight")]
    pub inflight: u16,
    /// First reconnect delay; doubles up to `reconnect_max_ms`, with full jitter. At least 1
    /// and at most `reconnect_max_ms`. Default 500.
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay. Default 60000.
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// Drain-rate cap in messages per second (protects a metered link). 0 = no cap. Default 0.
    #[serde(default)]
    pub max_messages_per_s: u32,
    /// Drain-rate cap in payload bytes per second. 0 = no cap, otherwise at least
    /// `pipeline.batch_max_bytes` (so that one batch can go out). Default 0.
    #[serde(default)]
    pub max_bytes_per_s: u64,
    /// How often the retained status document is refreshed. At least 1 s. Default 30 s.
    #[serde(default = "default_status_interval_s")]
    pub status_interval_s: u64,
    /// Telemetry younger than this is "live" and goes before older backlog. Default 60 s.
    #[serde(default = "default_live_window_s")]
    pub live_window_s: u64,
    /// Committed telemetry batches wait (durably, in the store) until the oldest is this old,
    /// then go out merged into as few messages as fit the packet limit: fewer, much smaller
    /// messages per reading. They go at once when they fill a message, when there is backlog,
    /// and on shutdown; events never wait. 0 = publish each batch alone as soon as it is
    /// committed. 0 to 600000 ms. Default 10000 ms.
    #[serde(default = "default_telemetry_publish_interval_ms")]
    pub telemetry_publish_interval_ms: u64,
}

/// `[[sources]]`: one source of readings and/or events, selected by `type`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// Newline-delimited JSON from on-vehicle apps.
    Jsonl(JsonlConfig),
    /// A serial device speaking firmware-proto (POD, probes, doors).
    Device(crate::sources::device::DeviceConfig),
    /// DS18B20 temperature probes through the Linux 1-Wire sysfs.
    Onewire(crate::sources::onewire::OnewireConfig),
    /// OBD-II PID polling over ISO-TP on a SocketCAN interface.
    Obd(crate::sources::obd::ObdConfig),
    /// SocketCAN interfaces: J1939/FMS, DM1, VIN, NMEA 2000, DBC signals.
    Can(crate::sources::can::CanConfig),
    /// Replay of a can-utils candump log through the CAN decoders.
    Candump(crate::sources::can::CandumpConfig),
    /// A GNSS receiver: NMEA 0183 on a serial port, or gpsd.
    Gps(crate::sources::gps::GpsConfig),
}

impl SourceConfig {
    /// The source's name (unique among the configured sources).
    pub fn name(&self) -> &str {
        match self {
            SourceConfig::Jsonl(c) => &c.name,
            SourceConfig::Device(c) => &c.name,
            SourceConfig::Onewire(c) => &c.name,
            SourceConfig::Obd(c) => &c.name,
            SourceConfig::Can(c) => &c.name,
            SourceConfig::Candump(c) => &c.name,
            SourceConfig::Gps(c) => &c.name,
        }
    }

    /// Deserializes one `[[sources]]` entry whose `type` is `type_` as that variant's struct,
    /// without serde's buffering of internally tagged enums, so that an error carries the
    /// position of the offending key. `None` for an unknown `type`.
    fn deserialize_variant(
        type_: &str,
        entry: toml::de::ValueDeserializer<'_>,
    ) -> Option<Result<SourceConfig, toml::de::Error>> {
        match type_ {
            "jsonl" => Some(JsonlConfig::deserialize(entry).map(SourceConfig::Jsonl)),
            "device" => Some(
                crate::sources::device::DeviceConfig::deserialize(entry).map(SourceConfig::Device),
            ),
            "onewire" => Some(
                crate::sources::onewire::OnewireConfig::deserialize(entry)
                    .map(SourceConfig::Onewire),
            ),
            "obd" => {
                Some(crate::sources::obd::ObdConfig::deserialize(entry).map(SourceConfig::Obd))
            }
            "can" => {
                Some(crate::sources::can::CanConfig::deserialize(entry).map(SourceConfig::Can))
            }
            "candump" => Some(
                crate::sources::can::CandumpConfig::deserialize(entry).map(SourceConfig::Candump),
            ),
            "gps" => {
                Some(crate::sources::gps::GpsConfig::deserialize(entry).map(SourceConfig::Gps))
            }
            _ => None,
        }
    }
}

/// `type = "jsonl"`: on-vehicle apps push readings and events as JSON lines.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlConfig {
    /// Source name in readings, logs and health: 1 to 64 characters of `A-Z a-z 0-9 - _ .`,
    /// unique among the sources. Default `jsonl`.
    #[serde(default = "default_jsonl_name")]
    pub name: String,
    /// Unix socket path to listen on. At least one of `unix_socket`, `tcp_listen`.
    /// A relative path is relative to the directory of the config file.
    #[serde(default)]
    pub unix_socket: Option<PathBuf>,
    /// Loopback TCP address to listen on, e.g. `127.0.0.1:7410`. Must be a loopback address.
    #[serde(default)]
    pub tcp_listen: Option<SocketAddr>,
    /// Longest accepted line, bytes. Longer lines are rejected (and skipped).
    /// 256 to 1048576. Default 65536.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Per-connection rate limit, lines per second (token bucket, burst = one second's worth).
    /// Reading is paused, not data dropped, when a producer exceeds it. At least 1.
    /// Default 50000.
    #[serde(default = "default_max_lines_per_s")]
    pub max_lines_per_s: u32,
    /// Simultaneous connections. At least 1. Default 16.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

/// Bounds that validation enforces (the user manual lists them too).
pub mod limits {
    /// Largest config file read, bytes.
    pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
    /// `pipeline.batch_window_ms` range.
    pub const BATCH_WINDOW_MS: (u64, u64) = (10, 60_000);
    /// `pipeline.batch_max_readings` range.
    pub const BATCH_MAX_READINGS: (usize, usize) = (1, 1_000_000);
    /// `pipeline.batch_max_bytes` range. The top leaves room for the MQTT fixed header, the
    /// topic and properties inside MQTT's 256 MiB packet limit.
    pub const BATCH_MAX_BYTES: (usize, usize) = (1024, 255 * 1024 * 1024);
    /// Smallest `store.max_bytes`.
    pub const STORE_MIN_BYTES: u64 = 1024 * 1024;
    /// `mqtt.keep_alive_s` range (MQTT encodes it in 16 bits).
    pub const KEEP_ALIVE_S: (u64, u64) = (5, 65_535);
    /// `mqtt.connect_timeout_s` range.
    pub const CONNECT_TIMEOUT_S: (u64, u64) = (1, 300);
    /// `mqtt.inflight` range.
    pub const INFLIGHT: (u16, u16) = (1, 1024);
    /// `mqtt.telemetry_publish_interval_ms` range (0 = no waiting, no merging).
    pub const TELEMETRY_PUBLISH_INTERVAL_MS: (u64, u64) = (0, 600_000);
    /// `[[sources]] max_line_bytes` range for `jsonl`.
    pub const JSONL_LINE_BYTES: (usize, usize) = (256, 1024 * 1024);
    /// Longest source name.
    pub const SOURCE_NAME_LEN: usize = 64;
    /// Longest Unix socket path Linux can bind (`sun_path` is 108 bytes with the NUL).
    pub const UNIX_SOCKET_PATH_BYTES: usize = 107;
}

/// The checked configuration: every value is in range, cross-key rules hold, referenced
/// files were readable when it was built (unless built with [`FileChecks::Skip`]), and
/// relative paths from the file have been resolved against the file's directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `vehicle.id`, valid in topics and CloudEvent `source`s.
    pub vehicle_id: String,
    /// `[store]`.
    pub store: StoreConfig,
    /// `[pipeline]`.
    pub pipeline: PipelineConfig,
    /// `[mqtt]`.
    pub mqtt: MqttConfig,
    /// `[[sources]]`, in file order, names unique.
    pub sources: Vec<SourceConfig>,
}

/// Whether validation looks at the files the config refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileChecks {
    /// Check that `mqtt.ca_file`, `client_cert_file`, `client_key_file` and `password_file`
    /// exist, are regular files and can be opened for reading by this process. What
    /// [`Config::load`] and [`Config::from_toml`] do.
    Filesystem,
    /// Skip those checks: for a config meant for another machine (packaging, CI, the example
    /// file in tests). Everything else is still checked.
    Skip,
}

/// One problem, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Key path (`mqtt.ca_file`, `sources[0].tcp_listen`); empty for a problem with the
    /// document itself (TOML syntax).
    pub key: String,
    /// What is wrong, as a sentence fragment.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a configuration file was refused.
///
/// `Display` gives one line per problem, `FILE:LINE:COLUMN: KEY: MESSAGE`, ready for
/// `waymark check-config`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be opened or read (missing, permissions, I/O error).
    #[error("{}: cannot read the configuration file", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`limits::MAX_FILE_BYTES`]; it is not read further.
    #[error("{}: larger than {} bytes; not a configuration file", path.display(), limits::MAX_FILE_BYTES)]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The text is not UTF-8 or not valid TOML (the first syntax error).
    #[error("{}:{problem}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Where and what.
        problem: Problem,
    },
    /// Valid TOML that does not fit the schema: an unknown key, a value of the wrong type, a
    /// missing required key, an unknown source `type` (the first such error).
    #[error("{}:{problem}", path.display())]
    Schema {
        /// The file.
        path: PathBuf,
        /// Where and what.
        problem: Problem,
    },
    /// The schema fits but values break the rules (ranges, cross-key rules, unreadable
    /// files). All such problems, in file order.
    #[error("{}", display_all(path, problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found, sorted by position.
        problems: Vec<Problem>,
    },
}

fn display_all(path: &Path, problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{}:{p}", path.display()));
    }
    out
}

impl ConfigError {
    /// The located problems (none for [`ConfigError::Read`] and [`ConfigError::TooLarge`]).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } | ConfigError::TooLarge { .. } => &[],
            ConfigError::Syntax { problem, .. } | ConfigError::Schema { problem, .. } => {
                std::slice::from_ref(problem)
            }
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

/// A value that breaks a rule, before it is located in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    path: KeyPath,
    message: String,
}

impl Invalid {
    /// The key path, e.g. `pipeline.signals[2].deadband`.
    pub fn key(&self) -> String {
        self.path.to_string()
    }
    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A key path: `mqtt.ca_file`, `sources[0].tcp_listen`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct KeyPath(Vec<Seg>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

impl KeyPath {
    fn new(key: &str) -> Self {
        KeyPath(vec![Seg::Key(key.to_string())])
    }
    fn key(mut self, key: &str) -> Self {
        self.0.push(Seg::Key(key.to_string()));
        self
    }
    fn index(mut self, i: usize) -> Self {
        self.0.push(Seg::Index(i));
        self
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

impl Config {
    /// Reads and validates the file at `path`, checking referenced files.
    ///
    /// # Errors
    /// [`ConfigError::Read`] / [`ConfigError::TooLarge`] when the file cannot be read, and
    /// otherwise as [`Config::from_toml`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with(path, FileChecks::Filesystem)
    }

    /// [`Config::load`] with a choice of [`FileChecks`].
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn load_with(path: &Path, files: FileChecks) -> Result<Config, ConfigError> {
        let read_err = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mut bytes = Vec::new();
        file.take(limits::MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() as u64 > limits::MAX_FILE_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                let valid = e.utf8_error().valid_up_to();
                let bytes = e.into_bytes();
                // The prefix up to `valid` is UTF-8 by definition.
                let prefix = String::from_utf8_lossy(&bytes[..valid]);
                let (line, column) = line_column(&prefix, prefix.len());
                return Err(ConfigError::Syntax {
                    path: path.to_path_buf(),
                    problem: Problem {
                        line,
                        column,
                        key: String::new(),
                        message: "the file is not UTF-8 text".to_string(),
                    },
                });
            }
        };
        Self::from_toml_with(&text, path, files)
    }

    /// Parses and validates `text`, the contents of the file at `path` (used in messages and
    /// to resolve relative paths), checking referenced files.
    ///
    /// # Errors
    /// [`ConfigError::Syntax`] for invalid TOML, [`ConfigError::Schema`] for unknown keys,
    /// wrong types or missing required keys, [`ConfigError::Invalid`] with every broken rule.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Self::from_toml_with(text, path, FileChecks::Filesystem)
    }

    /// [`Config::from_toml`] with a choice of [`FileChecks`].
    ///
    /// # Errors
    /// As [`Config::from_toml`].
    pub fn from_toml_with(
        text: &str,
        path: &Path,
        files: FileChecks,
    ) -> Result<Config, ConfigError> {
        let doc = DeTable::parse(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            problem: syntax_problem(text, &e),
        })?;
        let raw =
            RawConfig::deserialize(toml::de::Deserializer::from(doc.clone())).map_err(|e| {
                ConfigError::Schema {
                    path: path.to_path_buf(),
                    problem: schema_problem(text, &doc, e),
                }
            })?;
        let base_dir = path.parent().unwrap_or(Path::new(""));
        raw.validate(base_dir, files).map_err(|invalid| {
            let mut problems: Vec<Problem> = invalid
                .into_iter()
                .map(|inv| {
                    let (line, column) = line_column(text, locate(&doc, &inv.path));
                    Problem {
                        line,
                        column,
                        key: inv.path.to_string(),
                        message: inv.message,
                    }
                })
                .collect();
            problems.sort_by_key(|p| (p.line, p.column));
            ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            }
        })
    }
}

impl RawConfig {
    /// Checks every rule and builds the [`Config`]. Relative paths are resolved against
    /// `base_dir` (the config file's directory).
    ///
    /// # Errors
    /// Every broken rule, in no particular order.
    pub fn validate(self, base_dir: &Path, files: FileChecks) -> Result<Config, Vec<Invalid>> {
        let mut v = Validator {
            problems: Vec::new(),
            files,
        };
        let RawConfig {
            vehicle,
            mut store,
            pipeline,
            mut mqtt,
            mut sources,
        } = self;

        if let Err(e) = waymark_wire::topics::validate_vehicle_id(&vehicle.id) {
            v.bad(KeyPath::new("vehicle").key("id"), e);
        }

        resolve(base_dir, &mut store.path);
        for p in [
            &mut mqtt.ca_file,
            &mut mqtt.client_cert_file,
            &mut mqtt.client_key_file,
            &mut mqtt.password_file,
        ]
        .into_iter()
        .flatten()
        {
            resolve(base_dir, p);
        }
        for source in &mut sources {
            match source {
                SourceConfig::Jsonl(j) => {
                    if let Some(p) = &mut j.unix_socket {
                        resolve(base_dir, p);
                    }
                }
                SourceConfig::Device(d) => resolve(base_dir, &mut d.device),
                SourceConfig::Onewire(o) => resolve(base_dir, &mut o.sysfs_root),
                SourceConfig::Obd(_) => {}
                SourceConfig::Can(c) => c
                    .dbc
                    .iter_mut()
                    .for_each(|d| resolve(base_dir, &mut d.file)),
                SourceConfig::Candump(c) => {
                    resolve(base_dir, &mut c.path);
                    c.dbc
                        .iter_mut()
                        .for_each(|d| resolve(base_dir, &mut d.file));
                }
                SourceConfig::Gps(g) => {
                    if !g.device.as_os_str().is_empty() {
                        resolve(base_dir, &mut g.device);
                    }
                }
            }
        }

        v.store(&store, &pipeline);
        v.pipeline(&pipeline);
        v.mqtt(&mqtt, &pipeline);
        v.sources(&sources);

        if v.problems.is_empty() {
            let mut pipeline = pipeline;
            pipeline.signals.extend(can_filter_defaults(&sources));
            Ok(Config {
                vehicle_id: vehicle.id,
                store,
                pipeline,
                mqtt,
                sources,
            })
        } else {
            Err(v.problems)
        }
    }
}

/// The pipeline filter entries the CAN sources add after the user's own
/// (`sources::can::default_filters`).
fn can_filter_defaults(sources: &[SourceConfig]) -> Vec<SignalFilterConfig> {
    let decoders: Vec<_> = sources
        .iter()
        .filter_map(|s| match s {
            SourceConfig::Can(c) => Some(c.decode()),
            SourceConfig::Candump(c) => Some(c.decode()),
            _ => None,
        })
        .collect();
    crate::sources::can::default_filters(&decoders)
}

fn resolve(base_dir: &Path, p: &mut PathBuf) {
    if p.is_relative() && !p.as_os_str().is_empty() {
        *p = base_dir.join(&*p);
    }
}

struct Validator {
    problems: Vec<Invalid>,
    files: FileChecks,
}

impl Validator {
    fn bad(&mut self, path: KeyPath, message: impl Into<String>) {
        self.problems.push(Invalid {
            path,
            message: message.into(),
        });
    }

    fn range<T: PartialOrd + fmt::Display + Copy>(
        &mut self,
        path: KeyPath,
        value: T,
        (lo, hi): (T, T),
    ) {
        if value < lo || value > hi {
            self.bad(
                path,
                format!("{value} is out of range; allowed {lo} to {hi}"),
            );
        }
    }

    fn readable_file(&mut self, path: KeyPath, file: &Path) {
        if self.files == FileChecks::Skip {
            return;
        }
        let result = std::fs::File::open(file).and_then(|f| f.metadata());
        match result {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => self.bad(path, format!("{} is not a regular file", file.display())),
            Err(e) => self.bad(path, format!("cannot read {}: {e}", file.display())),
        }
    }

    fn store(&mut self, store: &StoreConfig, pipeline: &PipelineConfig) {
        let at = |key| KeyPath::new("store").key(key);
        if store.path.as_os_str().is_empty() {
            self.bad(at("path"), "must not be empty");
        }
        if store.max_bytes < limits::STORE_MIN_BYTES {
            self.bad(
                at("max_bytes"),
                format!(
                    "{} is too small; at least {}",
                    store.max_bytes,
                    limits::STORE_MIN_BYTES
                ),
            );
        } else if store.max_bytes < pipeline.batch_max_bytes as u64 {
            self.bad(
                at("max_bytes"),
                format!(
                    "{} is smaller than one batch (pipeline.batch_max_bytes = {})",
                    store.max_bytes, pipeline.batch_max_bytes
                ),
            );
        }
    }

    fn pipeline(&mut self, p: &PipelineConfig) {
        let at = |key| KeyPath::new("pipeline").key(key);
        self.range(
            at("batch_window_ms"),
            p.batch_window_ms,
            limits::BATCH_WINDOW_MS,
        );
        self.range(
            at("batch_max_readings"),
            p.batch_max_readings,
            limits::BATCH_MAX_READINGS,
        );
        self.range(
            at("batch_max_bytes"),
            p.batch_max_bytes,
            limits::BATCH_MAX_BYTES,
        );
        self.filter(at("default_filter"), &p.default_filter);
        for (keys, message) in p.positions.problems() {
            let path = keys.into_iter().fold(at("positions"), |p, k| p.key(k));
            self.bad(path, message);
        }

        for (i, s) in p.signals.iter().enumerate() {
            let entry = at("signals").index(i);
            self.filter(entry.clone(), &s.filter());
            let name = &s.name;
            if name.is_empty() {
                self.bad(entry.key("name"), "must not be empty");
                continue;
            }
            if name.trim() != name {
                self.bad(entry.key("name"), "must not start or end with white space");
                continue;
            }
            if name.find('*').is_some_and(|pos| pos + 1 != name.len()) {
                self.bad(
                    entry.key("name"),
                    "`*` may only be the last character (a prefix match)",
                );
                continue;
            }
            // First match wins: an entry that an earlier one always beats is dead config.
            let shadow = p.signals[..i].iter().position(|earlier| {
                let e = earlier.name.as_str();
                match e.strip_suffix('*') {
                    Some(prefix) => name.starts_with(prefix),
                    None => e == name,
                }
            });
            if let Some(j) = shadow {
                self.bad(
                    entry.key("name"),
                    format!(
                        "never applies: pipeline.signals[{j}] (`{}`) comes first and matches \
                         every signal this entry matches",
                        p.signals[j].name
                    ),
                );
            }
        }
    }

    fn filter(&mut self, at: KeyPath, f: &FilterConfig) {
        if !f.deadband.is_finite() || f.deadband < 0.0 {
            self.bad(
                at.clone().key("deadband"),
                format!("{} is not a finite number ≥ 0", f.deadband),
            );
        }
        if f.max_interval_ms != 0 && f.max_interval_ms < f.min_interval_ms {
            self.bad(
                at.key("max_interval_ms"),
                format!(
                    "{} is less than min_interval_ms ({}); use 0 for no heartbeat",
                    f.max_interval_ms, f.min_interval_ms
                ),
            );
        }
    }

    fn mqtt(&mut self, m: &MqttConfig, pipeline: &PipelineConfig) {
        let at = |key| KeyPath::new("mqtt").key(key);
        if m.host.is_empty() || m.host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.bad(at("host"), "must be a host name or address without spaces");
        }
        if m.port == Some(0) {
            self.bad(at("port"), "0 is not a port");
        }

        if m.tls {
            match &m.ca_file {
                None => self.bad(at("ca_file"), "required when tls = true"),
                Some(f) => self.readable_file(at("ca_file"), f),
            }
        } else {
            for (key, value) in [
                ("ca_file", &m.ca_file),
                ("client_cert_file", &m.client_cert_file),
                ("client_key_file", &m.client_key_file),
            ] {
                if value.is_some() {
                    self.bad(at(key), "set, but tls = false: remove it or enable TLS");
                }
            }
        }
        match (&m.client_cert_file, &m.client_key_file) {
            (Some(_), None) => self.bad(
                at("client_key_file"),
                "required when client_cert_file is set",
            ),
            (None, Some(_)) => self.bad(
                at("client_cert_file"),
                "required when client_key_file is set",
            ),
            (Some(cert), Some(key)) if m.tls => {
                self.readable_file(at("client_cert_file"), cert);
                self.readable_file(at("client_key_file"), key);
            }
            _ => {}
        }
        if m.username.as_ref().is_some_and(String::is_empty) {
            self.bad(at("username"), "must not be empty; leave it out instead");
        }
        if let Some(file) = &m.password_file {
            if m.username.is_none() {
                self.bad(at("username"), "required when password_file is set");
            }
            self.readable_file(at("password_file"), file);
        }
        if let Some(id) = &m.client_id
            && (id.is_empty() || id.len() > 65_535 || id.chars().any(char::is_control))
        {
            self.bad(
                at("client_id"),
                "must be 1 to 65535 bytes without control characters",
            );
        }

        let prefix = &m.topic_prefix;
        if prefix.is_empty() {
            self.bad(at("topic_prefix"), "must not be empty");
        } else if prefix.contains(['+', '#', '\0']) {
            self.bad(
                at("topic_prefix"),
                "must not contain the MQTT wildcards `+`, `#` or NUL",
            );
        } else if prefix.starts_with('/') || prefix.ends_with('/') || prefix.contains("//") {
            self.bad(
                at("topic_prefix"),
                "must not start or end with `/` or contain empty levels",
            );
        } else if prefix.starts_with('$') {
            self.bad(
                at("topic_prefix"),
                "must not start with `$` (reserved for broker topics)",
            );
        }

        self.range(at("keep_alive_s"), m.keep_alive_s, limits::KEEP_ALIVE_S);
        self.range(
            at("connect_timeout_s"),
            m.connect_timeout_s,
            limits::CONNECT_TIMEOUT_S,
        );
        self.range(at("inflight"), m.inflight, limits::INFLIGHT);
        if m.reconnect_min_ms == 0 {
            self.bad(at("reconnect_min_ms"), "must be at least 1");
        } else if m.reconnect_min_ms > m.reconnect_max_ms {
            self.bad(
                at("reconnect_min_ms"),
                format!(
                    "{} is greater than reconnect_max_ms ({})",
                    m.reconnect_min_ms, m.reconnect_max_ms
                ),
            );
        }
        if m.status_interval_s == 0 {
            self.bad(at("status_interval_s"), "must be at least 1");
        }
        self.range(
            at("telemetry_publish_interval_ms"),
            m.telemetry_publish_interval_ms,
            limits::TELEMETRY_PUBLISH_INTERVAL_MS,
        );
        if m.max_bytes_per_s != 0 && m.max_bytes_per_s < pipeline.batch_max_bytes as u64 {
            self.bad(
                at("max_bytes_per_s"),
                format!(
                    "{} is below pipeline.batch_max_bytes ({}): a full batch could never be sent; \
                     use 0 for no cap",
                    m.max_bytes_per_s, pipeline.batch_max_bytes
                ),
            );
        }
    }

    fn sources(&mut self, sources: &[SourceConfig]) {
        for (i, source) in sources.iter().enumerate() {
            let at = |key| KeyPath::new("sources").index(i).key(key);
            let name = source.name();
            if name.is_empty()
                || name.len() > limits::SOURCE_NAME_LEN
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                self.bad(
                    at("name"),
                    format!(
                        "must be 1 to {} characters of A-Z a-z 0-9 - _ .",
                        limits::SOURCE_NAME_LEN
                    ),
                );
            } else if let Some(j) = sources[..i].iter().position(|s| s.name() == name) {
                self.bad(
                    at("name"),
                    format!("`{name}` is already the name of sources[{j}]"),
                );
            }
            match source {
                SourceConfig::Jsonl(j) => self.jsonl(i, j, &sources[..i]),
                SourceConfig::Device(d) => {
                    self.source_problems(i, d.problems());
                    if let Some(k) = sources[..i]
                        .iter()
                        .position(|s| matches!(s, SourceConfig::Device(e) if e.device == d.device))
                    {
                        self.bad(
                            at("device"),
                            format!("sources[{k}] already reads this port"),
                        );
                    }
                }
                SourceConfig::Onewire(o) => self.source_problems(i, o.problems()),
                SourceConfig::Obd(o) => self.source_problems(i, o.problems()),
                SourceConfig::Can(c) => {
                    self.source_problems(i, c.problems(self.files == FileChecks::Filesystem));
                }
                SourceConfig::Candump(c) => {
                    self.source_problems(i, c.problems(self.files == FileChecks::Filesystem));
                }
                SourceConfig::Gps(g) => {
                    self.source_problems(i, g.problems());
                    fn serial(s: &SourceConfig) -> Option<&std::path::PathBuf> {
                        match s {
                            SourceConfig::Device(e) => Some(&e.device),
                            SourceConfig::Gps(e)
                                if e.mode == crate::sources::gps::GpsMode::Serial =>
                            {
                                Some(&e.device)
                            }
                            _ => None,
                        }
                    }
                    if g.mode == crate::sources::gps::GpsMode::Serial
                        && let Some(k) = sources[..i]
                            .iter()
                            .position(|s| serial(s) == Some(&g.device))
                    {
                        self.bad(
                            at("device"),
                            format!("sources[{k}] already reads this port"),
                        );
                    }
                }
            }
        }
    }

    /// Problems a source module found in `sources[i]`.
    fn source_problems(&mut self, i: usize, problems: Vec<crate::sources::cargo::KeyProblem>) {
        for p in problems {
            let mut path = KeyPath::new("sources").index(i).key(p.key);
            if let Some((n, key)) = p.item {
                path = path.index(n).key(key);
            }
            self.bad(path, p.message);
        }
    }

    fn jsonl(&mut self, i: usize, j: &JsonlConfig, earlier: &[SourceConfig]) {
        let at = |key| KeyPath::new("sources").index(i).key(key);
        if j.unix_socket.is_none() && j.tcp_listen.is_none() {
            self.bad(at("unix_socket"), "set unix_socket, tcp_listen or both");
        }
        if let Some(socket) = &j.unix_socket {
            let len = socket.as_os_str().len();
            if len == 0 {
                self.bad(at("unix_socket"), "must not be empty");
            } else if len > limits::UNIX_SOCKET_PATH_BYTES {
                self.bad(
                    at("unix_socket"),
                    format!(
                        "{len} bytes is longer than a Unix socket path can be ({})",
                        limits::UNIX_SOCKET_PATH_BYTES
                    ),
                );
            } else if let Some(k) = earlier.iter().position(|s| match s {
                SourceConfig::Jsonl(e) => e.unix_socket.as_ref() == Some(socket),
                _ => false,
            }) {
                self.bad(
                    at("unix_socket"),
                    format!("sources[{k}] already listens there"),
                );
            }
        }
        if let Some(addr) = j.tcp_listen {
            if !addr.ip().is_loopback() {
                self.bad(
                    at("tcp_listen"),
                    format!("{addr} is not a loopback address (127.0.0.0/8 or ::1)"),
                );
            } else if let Some(k) = earlier.iter().position(|s| match s {
                SourceConfig::Jsonl(e) => addr.port() != 0 && e.tcp_listen == Some(addr),
                _ => false,
            }) {
                self.bad(
                    at("tcp_listen"),
                    format!("sources[{k}] already listens there"),
                );
            }
        }
        self.range(
            at("max_line_bytes"),
            j.max_line_bytes,
            limits::JSONL_LINE_BYTES,
        );
        if j.max_lines_per_s == 0 {
            self.bad(at("max_lines_per_s"), "must be at least 1");
        }
        if j.max_connections == 0 {
            self.bad(at("max_connections"), "must be at least 1");
        }
    }
}

// ---- locating keys in the text ----

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |nl| nl + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Byte offset where the key `path` is written, or where its nearest existing ancestor is
/// (its `[header]` for a table), or 0.
fn locate(doc: &Spanned<DeTable<'_>>, path: &KeyPath) -> usize {
    let mut offset = 0;
    let mut current: Option<&DeValue<'_>> = None;
    let mut table: Option<&DeTable<'_>> = Some(doc.get_ref());
    for seg in &path.0 {
        let next = match (seg, table, current) {
            (Seg::Key(k), Some(t), _) => t.get_key_value(k.as_str()).map(|(key, value)| {
                // `[mqtt]`: the value (header) starts before the key; `a = 1`: the key first.
                (key.span().start.min(value.span().start), value)
            }),
            (Seg::Index(i), _, Some(DeValue::Array(a))) => {
                a.get(*i).map(|value| (value.span().start, value))
            }
            _ => None,
        };
        let Some((start, value)) = next else { break };
        offset = start;
        current = Some(value.get_ref());
        table = value.get_ref().as_table();
    }
    offset
}

/// The innermost key path whose key or value span holds `pos`.
fn path_at(doc: &DeTable<'_>, pos: usize) -> KeyPath {
    fn holds(span: Range<usize>, pos: usize) -> bool {
        span.contains(&pos) || (span.is_empty() && span.start == pos)
    }
    fn in_value(value: &DeValue<'_>, pos: usize, path: &mut KeyPath) -> bool {
        match value {
            DeValue::Table(t) => in_table(t, pos, path),
            DeValue::Array(a) => {
                for (i, item) in a.iter().enumerate() {
                    path.0.push(Seg::Index(i));
                    if in_value(item.get_ref(), pos, path) || holds(item.span(), pos) {
                        return true;
                    }
                    path.0.pop();
                }
                false
            }
            _ => false,
        }
    }
    fn in_table(t: &DeTable<'_>, pos: usize, path: &mut KeyPath) -> bool {
        for (key, value) in t.iter() {
            path.0.push(Seg::Key(key.get_ref().to_string()));
            // Deeper first: an array-of-tables entry's keys lie outside its `[[header]]` span.
            if in_value(value.get_ref(), pos, path)
                || holds(key.span(), pos)
                || holds(value.span(), pos)
            {
                return true;
            }
            path.0.pop();
        }
        false
    }
    let mut path = KeyPath::default();
    in_table(doc, pos, &mut path);
    path
}

fn syntax_problem(text: &str, e: &toml::de::Error) -> Problem {
    let (line, column) = line_column(text, e.span().map_or(0, |s| s.start));
    Problem {
        line,
        column,
        key: String::new(),
        message: e.message().trim().to_string(),
    }
}

/// Locates a serde error: finds the key from its span, and re-deserializes a `[[sources]]`
/// entry on its own when the error only points at the entry's header.
fn schema_problem(text: &str, doc: &Spanned<DeTable<'_>>, e: toml::de::Error) -> Problem {
    // The document's own span (an empty range at 0) means the top level, not the first key.
    let path_of = |error: &toml::de::Error| match error.span() {
        Some(span) if span != doc.span() => path_at(doc.get_ref(), span.start),
        _ => KeyPath::default(),
    };
    let mut error = e;
    let mut path = path_of(&error);
    if let Some(refined) = refine_source_error(doc, &path) {
        path = path_of(&refined);
        error = refined;
    }
    let mut message = error.message().trim().to_string();
    // "missing field `host`" at `[mqtt]`: name the missing key itself.
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.strip_suffix('`'))
    {
        path = if path.0.is_empty() {
            KeyPath::new(field)
        } else {
            path.key(field)
        };
        message = "required key is missing".to_string();
    }
    let offset = match error.span() {
        // A table's own key (`[bogus]`): report the header's `[`, as for validation errors.
        Some(span) => match locate(doc, &path) {
            header
                if text
                    .get(header..span.start)
                    .is_some_and(|h| h.starts_with('[') && !h.contains('\n')) =>
            {
                header
            }
            _ => span.start,
        },
        None => locate(doc, &path),
    };
    let (line, column) = line_column(text, offset);
    Problem {
        line,
        column,
        key: path.to_string(),
        message,
    }
}

/// If `path` is exactly a `[[sources]]` entry, deserialize that entry as its variant's struct
/// and return its (precisely located) error.
fn refine_source_error(doc: &Spanned<DeTable<'_>>, path: &KeyPath) -> Option<toml::de::Error> {
    let [Seg::Key(sources), Seg::Index(i)] = path.0.as_slice() else {
        return None;
    };
    if sources != "sources" {
        return None;
    }
    let entry = doc
        .get_ref()
        .get("sources")?
        .get_ref()
        .as_array()?
        .get(*i)?;
    let mut table = entry.get_ref().as_table()?.clone();
    let type_ = table.remove("type")?;
    let de = toml::de::ValueDeserializer::from(Spanned::new(entry.span(), DeValue::Table(table)));
    SourceConfig::deserialize_variant(type_.get_ref().as_str()?, de)?.err()
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
fn default_telemetry_publish_interval_ms() -> u64 {
    10_000
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
            positions: crate::pipeline::positions::PositionsConfig::default(),
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
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("waymark-{vehicle_id}"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const FILE: &str = "/etc/waymark/waymark.toml";

    /// A valid file without TLS (so no file checks are involved) to build on.
    const BASE: &str = "\
[vehicle]
id = \"TRUCK-042\"

[mqtt]
host = \"broker.example.com\"
tls = false
";

    fn check(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with(text, Path::new(FILE), FileChecks::Skip)
    }

    /// The single validation problem of `text`.
    fn invalid(text: &str) -> Problem {
        match check(text) {
            Err(ConfigError::Invalid { problems, .. }) => {
                assert_eq!(problems.len(), 1, "{problems:#?}");
                problems.into_iter().next().unwrap()
            }
            other => panic!("expected one validation problem, got {other:?}"),
        }
    }

    fn schema(text: &str) -> Problem {
        match check(text) {
            Err(ConfigError::Schema { problem, .. }) => problem,
            other => panic!("expected a schema error, got {other:?}"),
        }
    }

    /// Asserts the problem's key and its line/column.
    #[track_caller]
    fn at(p: &Problem, key: &str, line: usize, column: usize) {
        assert_eq!(
            (p.key.as_str(), p.line, p.column),
            (key, line, column),
            "{p}"
        );
    }

    #[test]
    fn base_config_gets_defaults() {
        let c = check(BASE).unwrap();
        assert_eq!(c.vehicle_id, "TRUCK-042");
        assert_eq!(c.store, StoreConfig::default());
        assert_eq!(c.pipeline, PipelineConfig::default());
        assert_eq!(c.mqtt.port(), 1883);
        assert_eq!(c.mqtt.client_id("TRUCK-042"), "waymark-TRUCK-042");
        assert_eq!(c.mqtt.topic_prefix, "waymark");
        assert!(c.sources.is_empty());
    }

    // ---- the example file and the manual ----

    const EXAMPLE: &str = include_str!("../../examples/waymark.toml");
    const MANUAL: &str = include_str!("../../docs/configuration.md");

    /// The example's files live under `/etc/waymark/` on a unit, not on the build machine,
    /// so the file checks are skipped here (everything else is checked).
    #[test]
    fn example_parses_and_validates() {
        let c = Config::from_toml_with(EXAMPLE, Path::new(FILE), FileChecks::Skip)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.vehicle_id, "TRUCK-042");
        assert!(c.mqtt.tls);
        assert_eq!(
            c.mqtt.ca_file.as_deref(),
            Some(Path::new("/etc/waymark/ca.pem"))
        );
        assert!(!c.sources.is_empty());
        let SourceConfig::Jsonl(j) = &c.sources[0] else {
            panic!("the example's first source is jsonl");
        };
        assert!(j.unix_socket.is_some());
        assert!(j.tcp_listen.is_some_and(|a| a.ip().is_loopback()));
        assert!(c.pipeline.signals.len() >= 3);
    }

    /// With the file checks on, the example fails only on its (absent) files, each reported
    /// with its path.
    #[test]
    fn example_file_checks_name_the_files() {
        let Err(ConfigError::Invalid { problems, .. }) =
            Config::from_toml(EXAMPLE, Path::new(FILE))
        else {
            // Only possible on a machine that has the example's files.
            return;
        };
        for p in &problems {
            assert!(p.message.contains("/etc/waymark/"), "{p}");
            assert!(
                p.key.starts_with("mqtt.") || p.key.starts_with("sources["),
                "{p}"
            );
        }
    }

    /// One value of every variant of [`SourceConfig`]: the `match` stops compiling when a
    /// variant is added, so that the new variant's keys are covered too.
    fn every_source_variant() -> Vec<SourceConfig> {
        let jsonl = JsonlConfig {
            name: default_jsonl_name(),
            unix_socket: None,
            tcp_listen: None,
            max_line_bytes: default_max_line_bytes(),
            max_lines_per_s: default_max_lines_per_s(),
            max_connections: default_max_connections(),
        };
        let probe = crate::sources::cargo::ProbeConfig {
            id: "28-0000075a1b2c".into(),
            compartment: "Front".into(),
        };
        let mut device = crate::sources::device::DeviceConfig::with_device("/dev/ttyACM0".into());
        device.probes.push(probe.clone());
        let mut onewire = crate::sources::onewire::OnewireConfig::with_root("/sys".into());
        onewire.probes.push(probe);
        let can: crate::sources::can::CanConfig = toml::from_str(
            "interfaces = [\"can0\"]\n[[dbc]]\nfile = \"a.dbc\"\n\
             [[dbc.signals]]\nmessage = \"M\"\nsignal = \"S\"\nname = \"N\"\nunit = \"u\"\n\
             deadband = 1.0\nmin_interval_ms = 1\nmax_interval_ms = 2\n",
        )
        .unwrap();
        let mut can = can;
        can.dbc[0].j1939 = Some(true);
        let candump = crate::sources::can::CandumpConfig {
            name: "candump".into(),
            path: "x.log".into(),
            speed: 1.0,
            repeat: false,
            j1939: true,
            nmea2000: false,
            dbc: can.dbc.clone(),
        };
        let mut gps = crate::sources::gps::GpsConfig::with_device("/dev/ttyACM0".into());
        gps.init.push("$PMTK220,200".into());
        let all = vec![
            SourceConfig::Jsonl(jsonl),
            SourceConfig::Device(device),
            SourceConfig::Onewire(onewire),
            SourceConfig::Obd(crate::sources::obd::ObdConfig::on("can0")),
            SourceConfig::Can(can),
            SourceConfig::Candump(candump),
            SourceConfig::Gps(gps),
        ];
        for s in &all {
            match s {
                SourceConfig::Jsonl(_)
                | SourceConfig::Device(_)
                | SourceConfig::Onewire(_)
                | SourceConfig::Obd(_)
                | SourceConfig::Can(_)
                | SourceConfig::Candump(_)
                | SourceConfig::Gps(_) => {}
            }
        }
        all
    }

    /// Every key path of the schema, e.g. `mqtt.ca_file`, `pipeline.signals[].deadband`,
    /// `sources[].tcp_listen`. Serialized through JSON so that `None` fields still appear
    /// (as `null`): a key added to any struct shows up here without touching this test.
    fn schema_keys() -> BTreeSet<String> {
        let mut raw: RawConfig = toml::from_str(BASE).unwrap();
        raw.pipeline.signals.push(SignalFilterConfig {
            name: "Vehicle.Speed".into(),
            deadband: 0.0,
            min_interval_ms: 0,
            max_interval_ms: 0,
        });
        raw.sources = every_source_variant();
        let json = serde_json::to_value(&raw).unwrap();
        let mut keys = BTreeSet::new();
        json_keys(&json, "", &mut keys);
        keys
    }

    fn json_keys(v: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    if matches!(
                        v,
                        serde_json::Value::Object(_) | serde_json::Value::Array(_)
                    ) {
                        json_keys(v, &path, out);
                    } else {
                        out.insert(path);
                    }
                }
            }
            serde_json::Value::Array(a) => {
                for item in a {
                    json_keys(item, &format!("{prefix}[]"), out);
                }
            }
            _ => {}
        }
    }

    fn toml_keys(v: &toml::Value, prefix: &str, out: &mut BTreeSet<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    if matches!(v, toml::Value::Table(_) | toml::Value::Array(_)) {
                        toml_keys(v, &path, out);
                    } else {
                        out.insert(path);
                    }
                }
            }
            toml::Value::Array(a) => {
                for item in a {
                    toml_keys(item, &format!("{prefix}[]"), out);
                }
            }
            _ => {}
        }
    }

    /// The example sets every key (so every key is shown with its comment): fails when a key
    /// is added to the schema without adding it to `examples/waymark.toml`.
    #[test]
    fn example_sets_every_key() {
        let schema = schema_keys();
        assert!(
            schema.contains("mqtt.ca_file") && schema.contains("sources[].type"),
            "{schema:?}"
        );
        let mut example = BTreeSet::new();
        toml_keys(
            &toml::from_str::<toml::Value>(EXAMPLE).unwrap(),
            "",
            &mut example,
        );
        let missing: Vec<_> = schema.difference(&example).collect();
        assert!(
            missing.is_empty(),
            "keys missing from examples/waymark.toml: {missing:?}"
        );
    }

    /// Every key is in the manual, in the section of its table (`## \`[mqtt]\``,
    /// `### \`[[pipeline.signals]]\``, ...).
    #[test]
    fn manual_documents_every_key() {
        let mut missing = Vec::new();
        for path in schema_keys() {
            let (table, leaf) = path.rsplit_once('.').unwrap();
            let table = table.trim_end_matches("[]");
            let section = manual_section(table)
                .unwrap_or_else(|| panic!("docs/configuration.md has no section for [{table}]"));
            if !section.contains(&format!("| `{leaf}` |")) {
                missing.push(path);
            }
        }
        assert!(
            missing.is_empty(),
            "keys missing from docs/configuration.md: {missing:?}"
        );
    }

    /// The text from the heading that names `[table]` to the next table heading.
    fn manual_section(table: &str) -> Option<&'static str> {
        let (table_heading, array_heading) = (format!("`[{table}]`"), format!("`[[{table}]]`"));
        let mut start = None;
        let mut offset = 0;
        for line in MANUAL.split_inclusive('\n') {
            let is_heading = line.starts_with('#');
            if let Some(s) = start {
                if is_heading && line.contains("`[") {
                    return Some(&MANUAL[s..offset]);
                }
            } else if is_heading && (line.contains(&table_heading) || line.contains(&array_heading))
            {
                start = Some(offset);
            }
            offset += line.len();
        }
        start.map(|s| &MANUAL[s..])
    }

    // ---- error locations ----

    #[test]
    fn display_format() {
        let text = format!("{BASE}tls = true\n").replace("tls = false\n", "");
        let e = check(&text).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{FILE}:4:1: mqtt.ca_file: required when tls = true")
        );
    }

    #[test]
    fn syntax_error_is_located() {
        let e = check("[vehicle]\nid = TRUCK\n").unwrap_err();
        let ConfigError::Syntax { problem, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(
            (problem.line, problem.column, problem.key.as_str()),
            (2, 6, "")
        );
        assert!(e.to_string().starts_with(&format!("{FILE}:2:6: ")), "{e}");
        // A duplicate key is a syntax error too.
        let e = check(&format!("{BASE}host = \"again\"\n")).unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e:?}");
        assert_eq!(e.problems()[0].line, 7);
    }

    #[test]
    fn unknown_key_is_located() {
        let p = schema(&format!("{BASE}tsl = true\n"));
        at(&p, "mqtt.tsl", 7, 1);
        assert!(p.message.contains("unknown field `tsl`"), "{p}");
        let p = schema("[vehicle]\nid = \"A\"\ncolour = \"red\"\n[mqtt]\nhost = \"h\"\n");
        at(&p, "vehicle.colour", 3, 1);
        let p = schema(&format!("{BASE}[bogus]\nx = 1\n"));
        at(&p, "bogus", 7, 1);
    }

    #[test]
    fn wrong_type_is_located() {
        let p = schema(&format!("{BASE}keep_alive_s = \"30\"\n"));
        at(&p, "mqtt.keep_alive_s", 7, 16);
        assert!(p.message.contains("expected u64"), "{p}");
        let p = schema(&format!("{BASE}port = 70000\n"));
        at(&p, "mqtt.port", 7, 8);
        let p = schema(&format!("{BASE}[store]\nmax_bytes = -1\n"));
        at(&p, "store.max_bytes", 8, 13);
    }

    #[test]
    fn missing_key_is_located_at_its_table() {
        let p = schema("[vehicle]\nid = \"A\"\n\n[mqtt]\nport = 1883\n");
        at(&p, "mqtt.host", 4, 1);
        assert_eq!(p.message, "required key is missing");
        let p = schema("[vehicle]\nid = \"A\"\n");
        assert_eq!(p.key, "mqtt");
        let p = schema(&format!("{BASE}[[pipeline.signals]]\ndeadband = 1\n"));
        at(&p, "pipeline.signals[0].name", 7, 1);
    }

    #[test]
    fn signal_entry_errors_are_exact() {
        let text = format!(
            "{BASE}[[pipeline.signals]]\nname = \"a\"\n[[pipeline.signals]]\nname = \"b\"\ndeadband = \"x\"\n"
        );
        let p = schema(&text);
        at(&p, "pipeline.signals[1].deadband", 11, 12);
        let text = format!("{BASE}[[pipeline.signals]]\nname = \"a\"\nmin_interval = 5\n");
        let p = schema(&text);
        at(&p, "pipeline.signals[0].min_interval", 9, 1);
    }

    #[test]
    fn source_entry_errors_are_exact() {
        // serde buffers the tagged enum; the entry is re-read on its own to find the key.
        let head = format!("{BASE}\n[[sources]]\ntype = \"jsonl\"\n");
        let p = schema(&format!("{head}max_line_bytes = \"big\"\n"));
        at(&p, "sources[0].max_line_bytes", 10, 18);
        let p = schema(&format!("{head}tcp_listen = \"localhost\"\n"));
        at(&p, "sources[0].tcp_listen", 10, 14);
        let p = schema(&format!("{head}unix_sock = \"/run/x\"\n"));
        at(&p, "sources[0].unix_sock", 10, 1);
        assert!(p.message.contains("unknown field `unix_sock`"), "{p}");
        let p = schema(&format!("{BASE}\n[[sources]]\ntype = \"lidar\"\n"));
        at(&p, "sources[0].type", 9, 8);
        let p = schema(&format!("{BASE}\n[[sources]]\nname = \"x\"\n"));
        at(&p, "sources[0].type", 8, 1);
    }

    #[test]
    fn inline_and_dotted_forms_are_located() {
        let text =
            "vehicle = { id = \"A\" }\nmqtt.host = \"h\"\nmqtt.tls = false\nmqtt.inflight = 0\n";
        // A dotted key is reported at its last part.
        at(&invalid(text), "mqtt.inflight", 4, 6);
        let text = format!(
            "{BASE}[pipeline]\nsignals = [{{ name = \"a\" }}, {{ name = \"b\", deadband = -1 }}]\n"
        );
        at(&invalid(&text), "pipeline.signals[1].deadband", 8, 42);
    }

    #[test]
    fn all_problems_are_reported_in_file_order() {
        let text = format!("{BASE}inflight = 0\nkeep_alive_s = 1\n[store]\nmax_bytes = 5\n");
        let Err(ConfigError::Invalid { problems, .. }) = check(&text) else {
            panic!()
        };
        let keys: Vec<_> = problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
        assert_eq!(
            keys,
            [
                ("mqtt.inflight", 7),
                ("mqtt.keep_alive_s", 8),
                ("store.max_bytes", 10)
            ]
        );
        let shown = ConfigError::Invalid {
            path: FILE.into(),
            problems,
        }
        .to_string();
        assert_eq!(shown.lines().count(), 3);
        assert!(shown.lines().all(|l| l.starts_with(FILE)), "{shown}");
    }

    // ---- each validation ----

    #[test]
    fn vehicle_id() {
        let p = invalid(&BASE.replace("TRUCK-042", "TRUCK 042"));
        at(&p, "vehicle.id", 2, 1);
        assert!(p.message.contains("not allowed"), "{p}");
        at(&invalid(&BASE.replace("TRUCK-042", "")), "vehicle.id", 2, 1);
        at(
            &invalid(&BASE.replace("TRUCK-042", &"x".repeat(65))),
            "vehicle.id",
            2,
            1,
        );
    }

    #[test]
    fn tls_rules() {
        let tls = BASE.replace("tls = false\n", "");
        at(&invalid(&tls), "mqtt.ca_file", 4, 1);
        let ok = format!("{tls}ca_file = \"/etc/waymark/ca.pem\"\n");
        assert!(check(&ok).unwrap().mqtt.tls);
        assert_eq!(check(&ok).unwrap().mqtt.port(), 8883);
        let p = invalid(&format!("{ok}client_cert_file = \"/etc/waymark/c.pem\"\n"));
        at(&p, "mqtt.client_key_file", 4, 1);
        let p = invalid(&format!("{ok}client_key_file = \"/etc/waymark/k.pem\"\n"));
        at(&p, "mqtt.client_cert_file", 4, 1);
        let both = format!(
            "{ok}client_cert_file = \"/etc/waymark/c.pem\"\nclient_key_file = \"/etc/waymark/k.pem\"\n"
        );
        assert!(check(&both).is_ok());
        // TLS files with TLS off are a mistake, not silently ignored.
        let p = invalid(&format!("{BASE}ca_file = \"/etc/waymark/ca.pem\"\n"));
        at(&p, "mqtt.ca_file", 7, 1);
    }

    #[test]
    fn credentials() {
        let p = invalid(&format!("{BASE}password_file = \"/etc/waymark/pw\"\n"));
        at(&p, "mqtt.username", 4, 1);
        assert_eq!(p.message, "required when password_file is set");
        assert!(
            check(&format!(
                "{BASE}username = \"u\"\npassword_file = \"/etc/waymark/pw\"\n"
            ))
            .is_ok()
        );
        at(
            &invalid(&format!("{BASE}username = \"\"\n")),
            "mqtt.username",
            7,
            1,
        );
        at(
            &invalid(&format!("{BASE}client_id = \"\"\n")),
            "mqtt.client_id",
            7,
            1,
        );
    }

    #[test]
    fn host_and_port() {
        at(
            &invalid(&BASE.replace("broker.example.com", "")),
            "mqtt.host",
            5,
            1,
        );
        at(
            &invalid(&BASE.replace("broker.example.com", "a b")),
            "mqtt.host",
            5,
            1,
        );
        at(&invalid(&format!("{BASE}port = 0\n")), "mqtt.port", 7, 1);
        assert_eq!(
            check(&format!("{BASE}port = 1884\n")).unwrap().mqtt.port(),
            1884
        );
    }

    #[test]
    fn files_must_exist_and_be_readable() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "pem").unwrap();
        let text = |ca: &Path| {
            format!(
                "[vehicle]\nid = \"A\"\n[mqtt]\nhost = \"h\"\nca_file = \"{}\"\n",
                ca.display()
            )
        };
        let config_path = dir.path().join("waymark.toml");
        assert!(Config::from_toml(&text(&ca), &config_path).is_ok());

        let missing = dir.path().join("nope.pem");
        let e = Config::from_toml(&text(&missing), &config_path).unwrap_err();
        let p = &e.problems()[0];
        at(p, "mqtt.ca_file", 5, 1);
        assert!(p.message.contains(&missing.display().to_string()), "{p}");
        assert!(p.message.contains("No such file"), "{p}");

        let e = Config::from_toml(&text(dir.path()), &config_path).unwrap_err();
        assert!(
            e.problems()[0].message.contains("not a regular file"),
            "{e}"
        );

        // The same text with the checks skipped is fine.
        assert!(Config::from_toml_with(&text(&missing), &config_path, FileChecks::Skip).is_ok());
    }

    #[test]
    fn relative_paths_are_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "pem").unwrap();
        let text = "[vehicle]\nid = \"A\"\n[mqtt]\nhost = \"h\"\nca_file = \"ca.pem\"\n\
                    [store]\npath = \"buffer.db\"\n[[sources]]\ntype = \"jsonl\"\nunix_socket = \"in.sock\"\n";
        let c = Config::from_toml(text, &dir.path().join("waymark.toml")).unwrap();
        assert_eq!(c.mqtt.ca_file, Some(dir.path().join("ca.pem")));
        assert_eq!(c.store.path, dir.path().join("buffer.db"));
        let SourceConfig::Jsonl(j) = &c.sources[0] else {
            panic!("a jsonl source");
        };
        assert_eq!(j.unix_socket, Some(dir.path().join("in.sock")));
    }

    #[test]
    fn topic_prefix() {
        for bad in ["", "a/+/b", "fleet/#", "/fleet", "fleet/", "a//b", "$SYS"] {
            let p = invalid(&format!("{BASE}topic_prefix = \"{bad}\"\n"));
            at(&p, "mqtt.topic_prefix", 7, 1);
        }
        let c = check(&format!("{BASE}topic_prefix = \"acme/fleet\"\n")).unwrap();
        assert_eq!(c.mqtt.topic_prefix, "acme/fleet");
    }

    #[test]
    fn mqtt_ranges() {
        for (kv, key) in [
            ("keep_alive_s = 4", "mqtt.keep_alive_s"),
            ("keep_alive_s = 65536", "mqtt.keep_alive_s"),
            ("connect_timeout_s = 0", "mqtt.connect_timeout_s"),
            ("inflight = 0", "mqtt.inflight"),
            ("inflight = 1025", "mqtt.inflight"),
            ("reconnect_min_ms = 0", "mqtt.reconnect_min_ms"),
            (
                "reconnect_min_ms = 2000\nreconnect_max_ms = 1000",
                "mqtt.reconnect_min_ms",
            ),
            ("status_interval_s = 0", "mqtt.status_interval_s"),
            ("max_bytes_per_s = 1000", "mqtt.max_bytes_per_s"),
            (
                "telemetry_publish_interval_ms = 600001",
                "mqtt.telemetry_publish_interval_ms",
            ),
        ] {
            at(&invalid(&format!("{BASE}{kv}\n")), key, 7, 1);
        }
        for ok in [
            "keep_alive_s = 5",
            "keep_alive_s = 65535",
            "inflight = 1024",
            "reconnect_min_ms = 1000\nreconnect_max_ms = 1000",
            "max_bytes_per_s = 65536",
            "max_bytes_per_s = 0",
            "telemetry_publish_interval_ms = 0",
            "telemetry_publish_interval_ms = 600000",
        ] {
            assert!(check(&format!("{BASE}{ok}\n")).is_ok(), "{ok}");
        }
    }

    #[test]
    fn store_rules() {
        let p = invalid(&format!("{BASE}[store]\nmax_bytes = 1048575\n"));
        at(&p, "store.max_bytes", 8, 1);
        assert!(check(&format!("{BASE}[store]\nmax_bytes = 1048576\n")).is_ok());
        let p = invalid(&format!(
            "{BASE}[store]\nmax_bytes = 1048576\n[pipeline]\nbatch_max_bytes = 2097152\n"
        ));
        at(&p, "store.max_bytes", 8, 1);
        at(
            &invalid(&format!("{BASE}[store]\npath = \"\"\n")),
            "store.path",
            8,
            1,
        );
    }

    #[test]
    fn pipeline_ranges() {
        for (kv, key, ok) in [
            ("batch_window_ms = 9", "pipeline.batch_window_ms", false),
            ("batch_window_ms = 10", "pipeline.batch_window_ms", true),
            ("batch_window_ms = 60000", "pipeline.batch_window_ms", true),
            ("batch_window_ms = 60001", "pipeline.batch_window_ms", false),
            (
                "batch_max_readings = 0",
                "pipeline.batch_max_readings",
                false,
            ),
            (
                "batch_max_readings = 1",
                "pipeline.batch_max_readings",
                true,
            ),
            (
                "batch_max_readings = 1000001",
                "pipeline.batch_max_readings",
                false,
            ),
            ("batch_max_bytes = 1023", "pipeline.batch_max_bytes", false),
            ("batch_max_bytes = 1024", "pipeline.batch_max_bytes", true),
            (
                "batch_max_bytes = 267386880",
                "pipeline.batch_max_bytes",
                true,
            ),
            (
                "batch_max_bytes = 267386881",
                "pipeline.batch_max_bytes",
                false,
            ),
        ] {
            // A large store so that the store ≥ batch rule does not interfere.
            let text = format!("{BASE}[store]\nmax_bytes = 1073741824\n[pipeline]\n{kv}\n");
            if ok {
                assert!(check(&text).is_ok(), "{kv}");
            } else {
                at(&invalid(&text), key, 10, 1);
            }
        }
    }

    #[test]
    fn filters() {
        let f = |body: &str| format!("{BASE}[pipeline.default_filter]\n{body}\n");
        at(
            &invalid(&f("deadband = -0.5")),
            "pipeline.default_filter.deadband",
            8,
            1,
        );
        at(
            &invalid(&f("deadband = nan")),
            "pipeline.default_filter.deadband",
            8,
            1,
        );
        at(
            &invalid(&f("deadband = inf")),
            "pipeline.default_filter.deadband",
            8,
            1,
        );
        let p = invalid(&f("min_interval_ms = 1000\nmax_interval_ms = 500"));
        at(&p, "pipeline.default_filter.max_interval_ms", 9, 1);
        assert!(
            check(&f(
                "min_interval_ms = 1000\nmax_interval_ms = 0\ndeadband = 2"
            ))
            .is_ok()
        );
        // Integers are fine where a float is expected.
        let c = check(&f("deadband = 2")).unwrap();
        assert_eq!(c.pipeline.default_filter.deadband, 2.0);
    }

    #[test]
    fn signal_names() {
        let sig = |entries: &[&str]| {
            let mut t = BASE.to_string();
            for e in entries {
                t.push_str(&format!("[[pipeline.signals]]\nname = \"{e}\"\n"));
            }
            t
        };
        // BASE has 6 lines; entry i starts on line 7 + 2i, its name on the next line.
        at(&invalid(&sig(&[""])), "pipeline.signals[0].name", 8, 1);
        at(
            &invalid(&sig(&["Vehicle.*.Speed"])),
            "pipeline.signals[0].name",
            8,
            1,
        );
        at(
            &invalid(&sig(&["a", "**"])),
            "pipeline.signals[1].name",
            10,
            1,
        );
        at(
            &invalid(&sig(&[" Vehicle.Speed"])),
            "pipeline.signals[0].name",
            8,
            1,
        );
        assert!(check(&sig(&["Vehicle.Speed", "Vehicle.Cargo.*", "*"])).is_ok());
        // Entries that an earlier one always beats never apply.
        let p = invalid(&sig(&["Vehicle.*", "Vehicle.Speed"]));
        at(&p, "pipeline.signals[1].name", 10, 1);
        assert!(p.message.contains("pipeline.signals[0]"), "{p}");
        at(
            &invalid(&sig(&["a", "b", "a"])),
            "pipeline.signals[2].name",
            12,
            1,
        );
        at(
            &invalid(&sig(&["Vehicle.*", "Vehicle.Cargo.*"])),
            "pipeline.signals[1].name",
            10,
            1,
        );
        // The narrower prefix first is fine: it wins for its signals.
        assert!(check(&sig(&["Vehicle.Cargo.*", "Vehicle.*"])).is_ok());
        let text = format!("{}deadband = -1\n", sig(&["a", "b"]));
        at(&invalid(&text), "pipeline.signals[1].deadband", 11, 1);
    }

    fn jsonl(body: &str) -> String {
        format!("{BASE}[[sources]]\ntype = \"jsonl\"\n{body}\n")
    }

    #[test]
    fn jsonl_sources() {
        at(
            &invalid(&jsonl("name = \"app\"")),
            "sources[0].unix_socket",
            7,
            1,
        );
        let ok = jsonl("unix_socket = \"/run/waymark/in.sock\"\ntcp_listen = \"127.0.0.1:7410\"");
        let c = check(&ok).unwrap();
        assert_eq!(c.sources[0].name(), "jsonl");
        assert!(check(&jsonl("tcp_listen = \"[::1]:7410\"")).is_ok());
        let p = invalid(&jsonl("tcp_listen = \"0.0.0.0:7410\""));
        at(&p, "sources[0].tcp_listen", 9, 1);
        assert!(p.message.contains("loopback"), "{p}");
        at(
            &invalid(&jsonl("tcp_listen = \"192.168.1.5:7410\"")),
            "sources[0].tcp_listen",
            9,
            1,
        );
        let long = format!("unix_socket = \"/{}\"", "s".repeat(110));
        at(&invalid(&jsonl(&long)), "sources[0].unix_socket", 9, 1);
        let t = "tcp_listen = \"127.0.0.1:7410\"\n";
        for (kv, key, ok) in [
            ("max_line_bytes = 255", "sources[0].max_line_bytes", false),
            ("max_line_bytes = 256", "sources[0].max_line_bytes", true),
            (
                "max_line_bytes = 1048576",
                "sources[0].max_line_bytes",
                true,
            ),
            (
                "max_line_bytes = 1048577",
                "sources[0].max_line_bytes",
                false,
            ),
            ("max_lines_per_s = 0", "sources[0].max_lines_per_s", false),
            ("max_lines_per_s = 1", "sources[0].max_lines_per_s", true),
            ("max_connections = 0", "sources[0].max_connections", false),
            ("name = \"in put\"", "sources[0].name", false),
            ("name = \"\"", "sources[0].name", false),
        ] {
            let text = jsonl(&format!("{t}{kv}"));
            if ok {
                assert!(check(&text).is_ok(), "{kv}");
            } else {
                at(&invalid(&text), key, 10, 1);
            }
        }
    }

    #[test]
    fn source_names_and_addresses_are_unique() {
        let two = |a: &str, b: &str| {
            format!(
                "{BASE}[[sources]]\ntype = \"jsonl\"\n{a}\n[[sources]]\ntype = \"jsonl\"\n{b}\n"
            )
        };
        let p = invalid(&two(
            "tcp_listen = \"127.0.0.1:7410\"",
            "tcp_listen = \"127.0.0.1:7411\"",
        ));
        at(&p, "sources[1].name", 10, 1);
        assert!(p.message.contains("sources[0]"), "{p}");
        let p = invalid(&two(
            "name = \"a\"\ntcp_listen = \"127.0.0.1:7410\"",
            "name = \"b\"\ntcp_listen = \"127.0.0.1:7410\"",
        ));
        at(&p, "sources[1].tcp_listen", 14, 1);
        let p = invalid(&two(
            "name = \"a\"\nunix_socket = \"/run/in.sock\"",
            "name = \"b\"\nunix_socket = \"/run/in.sock\"",
        ));
        at(&p, "sources[1].unix_socket", 14, 1);
    }

    // ---- reading the file ----

    #[test]
    fn load_reads_and_reports() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("waymark.toml");
        let e = Config::load(&path).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
        assert!(
            e.to_string().starts_with(&path.display().to_string()),
            "{e}"
        );

        std::fs::write(&path, BASE).unwrap();
        assert_eq!(Config::load(&path).unwrap().vehicle_id, "TRUCK-042");

        let mut bytes = BASE.as_bytes().to_vec();
        bytes.extend_from_slice(b"# caf\xe9\n");
        std::fs::write(&path, bytes).unwrap();
        let e = Config::load(&path).unwrap_err();
        let ConfigError::Syntax { problem, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!((problem.line, problem.column), (7, 6));

        std::fs::write(&path, vec![b'#'; limits::MAX_FILE_BYTES as usize + 1]).unwrap();
        assert!(matches!(
            Config::load(&path),
            Err(ConfigError::TooLarge { .. })
        ));
    }

    #[test]
    fn line_column_counts_characters() {
        let text = "ab\nçd=1\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 3), (2, 1));
        assert_eq!(line_column(text, 5), (2, 2)); // after the two-byte `ç`
        assert_eq!(line_column(text, 100), (3, 1));
    }
}
