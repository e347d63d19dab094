//! The bridge's configuration file (`/etc/waymark-bridge/bridge.toml`).
//!
//! Same conventions as the gateway's: one TOML file, `deny_unknown_fields` everywhere, units
//! in key names, a documented default for every key that has one; [`RawConfig`] is what serde
//! reads, [`Config::load`] validates it once into [`Config`].
//!
//! # Invariants
//! - A [`Config`] exists only after every rule passed: target names unique and non-empty,
//!   URLs `http://` or `https://`, secrets read (non-empty), ranges respected, the telemetry
//!   target exists. Relative paths are resolved against the file's directory.
//! - Syntax, type and unknown-key errors carry the file, line and column (from `toml`);
//!   rule violations name the file and the key path (`targets[1].url`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::retry::Policy;

/// The whole file, as written.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[mqtt]`: the broker.
    pub mqtt: MqttConfig,
    /// `[store]`: the SQLite file.
    #[serde(default)]
    pub store: StoreConfig,
    /// `[intake]`: limits.
    #[serde(default)]
    pub intake: IntakeConfig,
    /// `[gaps]`: sequence gap alerts.
    #[serde(default)]
    pub gaps: GapsConfig,
    /// `[telemetry]`: what to do with telemetry batches.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// `[metrics]`: the Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// `[[targets]]`: HTTP endpoints and which event types they get.
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the Prometheus endpoint (`GET /metrics`), e.g. `127.0.0.1:9464`.
    /// Default: none (off).
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
}

/// `[mqtt]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or address. Required.
    pub host: String,
    /// Broker port. Default 1883.
    #[serde(default = "default_port")]
    pub port: u16,
    /// TLS to the broker. Not implemented in the bridge yet: must be `false` (explicitly, so
    /// that a plaintext connection is never a silent default).
    pub tls: bool,
    /// MQTT user name, if the broker wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the MQTT password (first line). Requires `username`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Client id; also the name of the persistent session. Default `waymark-bridge`.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// First topic segment, as the gateways' `mqtt.topic_prefix`. Default `waymark`.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// Keep-alive, 5 to 3600 s. Default 30.
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
    /// Reconnect delay floor, 10 to 60000 ms. Default 500.
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    /// Reconnect delay ceiling, ≥ `reconnect_min_ms`, ≤ 600000 ms. Default 30000.
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// Unacknowledged messages the broker may send at once (MQTT receive maximum as
    /// Mosquitto applies it to a 3.1.1 session is its own setting; this bounds the client's
    /// queue). 1 to 65535. Default 100.
    #[serde(default = "default_inflight")]
    pub inflight: u16,
    /// Subscribe to telemetry topics too. Default false.
    #[serde(default)]
    pub subscribe_telemetry: bool,
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite file. Default `/var/lib/waymark-bridge/bridge.db`.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// Most messages recorded in one transaction (one fsync). 1 to 10000. Default 500.
    #[serde(default = "default_batch_max")]
    pub batch_max: usize,
    /// Bytes of a rejected payload kept in the rejects table. 0 to 65536. Default 4096.
    #[serde(default = "default_reject_keep_bytes")]
    pub reject_keep_bytes: usize,
}

/// `[intake]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeConfig {
    /// Largest event payload accepted, 256 to 65536 bytes. Default 65536 (the gateway's
    /// own limit, `waymark_wire::event::MAX_EVENT_BYTES`).
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
    /// Largest telemetry payload accepted, 1 KiB to 16 MiB. Default 1 MiB.
    #[serde(default = "default_max_telemetry_bytes")]
    pub max_telemetry_bytes: usize,
}

/// `[gaps]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GapsConfig {
    /// A sequence gap open this long raises a `waymark.bridge.sequence_gap` event.
    /// 1 to 604800 s. Default 300.
    #[serde(default = "default_alert_after_s")]
    pub alert_after_s: u64,
}

/// `[telemetry]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Name of a `[[targets]]` entry that receives every decoded batch as JSON. Optional.
    #[serde(default)]
    pub target: Option<String>,
    /// File that gets every decoded reading as one JSON line (appended, fsynced before the
    /// batch is acknowledged). Optional.
    #[serde(default)]
    pub jsonl_path: Option<PathBuf>,
}

/// `[[targets]]`: one HTTP endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Unique name (`erp`, `portal`): in the store, logs, `status` and `dlq`. Required.
    pub name: String,
    /// `http://` or `https://` URL the events are POSTed to. Required.
    pub url: String,
    /// Event types this target gets: exact (`waymark.pod.delivered`) or a prefix ending in
    /// `*` (`waymark.milestone.*`, `*`). Default: none.
    #[serde(default)]
    pub types: Vec<String>,
    /// File whose contents (trailing newline removed) is the HMAC-SHA256 secret. Required.
    pub secret_file: PathBuf,
    /// Whole-request timeout, 100 to 300000 ms. Default 10000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts before an event goes to the dead-letter table, 1 to 1000. Default 20.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Retry backoff floor, 10 to 3600000 ms. Default 1000.
    #[serde(default = "default_retry_min_ms")]
    pub retry_min_ms: u64,
    /// Retry backoff ceiling (also the longest `Retry-After` honoured), ≥ `retry_min_ms`,
    /// ≤ 86400000 ms. Default 300000.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Requests in flight at once to this target, 1 to 256. Default 16.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

impl TargetConfig {
    /// Whether this target gets events of `type_`.
    pub fn wants(&self, type_: &str) -> bool {
        self.types.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => type_.starts_with(prefix),
            None => p == type_,
        })
    }

    /// Its retry policy.
    pub fn policy(&self) -> Policy {
        Policy {
            max_attempts: self.max_attempts,
            retry_min: Duration::from_millis(self.retry_min_ms),
            retry_max: Duration::from_millis(self.retry_max_ms),
        }
    }
}

/// A checked target: the config plus its secret.
#[derive(Clone, PartialEq)]
pub struct Target {
    /// As configured.
    pub config: TargetConfig,
    /// The HMAC secret (never logged: `Debug` hides it).
    pub secret: Vec<u8>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("config", &self.config)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The checked configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[mqtt]`, password read.
    pub mqtt: MqttConfig,
    /// MQTT password from `password_file`.
    pub mqtt_password: Option<String>,
    /// `[store]`, path resolved.
    pub store: StoreConfig,
    /// `[intake]`.
    pub intake: IntakeConfig,
    /// `[gaps]`.
    pub gaps: GapsConfig,
    /// `[telemetry]`, path resolved.
    pub telemetry: TelemetryConfig,
    /// `[metrics]`.
    pub metrics: MetricsConfig,
    /// `[[targets]]` with their secrets.
    pub targets: Vec<Target>,
}

/// Why a configuration file was refused. `Display`: `FILE:LINE:COLUMN: message` for syntax
/// and schema errors, one `FILE: KEY: message` line per broken rule otherwise.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{}: cannot read the configuration file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, a wrong type or a missing required key.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Schema {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong (names the key).
        message: String,
    },
    /// Values that break the rules.
    #[error("{}", problems.iter().map(|(k, m)| format!("{}: {k}: {m}", path.display())).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// (key path, message), in file order of the keys.
        problems: Vec<(String, String)>,
    },
}

/// Largest config file read.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

impl Config {
    /// Reads and validates the file at `path` (and the secret and password files it names).
    ///
    /// # Errors
    /// [`ConfigError`], naming the file and the key.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let read_err = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(read_err(std::io::Error::other(format!(
                "larger than {MAX_FILE_BYTES} bytes"
            ))));
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        Self::from_toml(&text, path)
    }

    /// Parses and validates `text`, the contents of `path`.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let before = &text[..offset.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            ConfigError::Schema {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        raw.validate(base).map_err(|problems| ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        })
    }
}

fn resolve(base: &Path, p: &mut PathBuf) {
    if p.is_relative() && !p.as_os_str().is_empty() {
        *p = base.join(&*p);
    }
}

fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let mut bytes =
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(bytes)
}

impl RawConfig {
    /// Checks every rule, reads the secrets, and builds the [`Config`].
    ///
    /// # Errors
    /// Every broken rule as (key path, message).
    pub fn validate(self, base: &Path) -> Result<Config, Vec<(String, String)>> {
        let mut bad: Vec<(String, String)> = Vec::new();
        let mut range = |key: String, v: u64, lo: u64, hi: u64| {
            if v < lo || v > hi {
                bad.push((key, format!("must be {lo} to {hi}, got {v}")));
            }
        };
        let RawConfig {
            mut mqtt,
            mut store,
            intake,
            gaps,
            mut telemetry,
            metrics,
            targets,
        } = self;
        range("mqtt.keep_alive_s".into(), mqtt.keep_alive_s, 5, 3600);
        range(
            "mqtt.reconnect_min_ms".into(),
            mqtt.reconnect_min_ms,
            10,
            60_000,
        );
        range(
            "mqtt.reconnect_max_ms".into(),
            mqtt.reconnect_max_ms,
            mqtt.reconnect_min_ms,
            600_000,
        );
        range("mqtt.inflight".into(), u64::from(mqtt.inflight), 1, 65_535);
        range("store.batch_max".into(), store.batch_max as u64, 1, 10_000);
        range(
            "store.reject_keep_bytes".into(),
            store.reject_keep_bytes as u64,
            0,
            65_536,
        );
        range(
            "intake.max_event_bytes".into(),
            intake.max_event_bytes as u64,
            256,
            waymark_wire::event::MAX_EVENT_BYTES as u64,
        );
        range(
            "intake.max_telemetry_bytes".into(),
            intake.max_telemetry_bytes as u64,
            1024,
            16 * 1024 * 1024,
        );
        range("gaps.alert_after_s".into(), gaps.alert_after_s, 1, 604_800);
        for (i, t) in targets.iter().enumerate() {
            let k = |f: &str| format!("targets[{i}].{f}");
            range(k("timeout_ms"), t.timeout_ms, 100, 300_000);
            range(k("max_attempts"), u64::from(t.max_attempts), 1, 1000);
            range(k("retry_min_ms"), t.retry_min_ms, 10, 3_600_000);
            range(
                k("retry_max_ms"),
                t.retry_max_ms,
                t.retry_min_ms,
                86_400_000,
            );
            range(k("concurrency"), t.concurrency as u64, 1, 256);
        }
        if mqtt.tls {
            bad.push((
                "mqtt.tls".into(),
                "TLS to the broker is not supported by this bridge version yet; set tls = false \
                 and keep the broker on a private network (docs/bridge.md)"
                    .into(),
            ));
        }
        if mqtt.host.trim().is_empty() {
            bad.push(("mqtt.host".into(), "must not be empty".into()));
        }
        if mqtt.client_id.is_empty() || mqtt.client_id.len() > 128 {
            bad.push((
                "mqtt.client_id".into(),
                "must be 1 to 128 characters".into(),
            ));
        }
        if mqtt.topic_prefix.is_empty()
            || mqtt.topic_prefix.contains(['+', '#'])
            || mqtt.topic_prefix.starts_with('$')
        {
            bad.push((
                "mqtt.topic_prefix".into(),
                "must be non-empty, without + or #, not starting with $".into(),
            ));
        }
        let mut mqtt_password = None;
        if let Some(p) = &mut mqtt.password_file {
            resolve(base, p);
            if mqtt.username.is_none() {
                bad.push(("mqtt.password_file".into(), "requires mqtt.username".into()));
            }
            match read_secret(p) {
                Ok(b) => match String::from_utf8(b) {
                    Ok(s) => mqtt_password = s.lines().next().map(str::to_string),
                    Err(_) => bad.push(("mqtt.password_file".into(), "not UTF-8".into())),
                },
                Err(e) => bad.push(("mqtt.password_file".into(), e)),
            }
        }
        resolve(base, &mut store.path);
        if let Some(p) = &mut telemetry.jsonl_path {
            resolve(base, p);
        }
        let mut checked = Vec::new();
        for (i, mut t) in targets.into_iter().enumerate() {
            let k = |f: &str| format!("targets[{i}].{f}");
            if t.name.is_empty()
                || t.name.len() > 64
                || !t
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                bad.push((
                    k("name"),
                    "must be 1 to 64 characters of A-Z a-z 0-9 - _ .".into(),
                ));
            }
            if checked.iter().any(|c: &Target| c.config.name == t.name) {
                bad.push((k("name"), format!("duplicate target name {:?}", t.name)));
            }
            if !(t.url.starts_with("http://") || t.url.starts_with("https://"))
                || reqwest::Url::parse(&t.url).is_err()
            {
                bad.push((
                    k("url"),
                    format!("not an http:// or https:// URL: {:?}", t.url),
                ));
            }
            if let Some((j, _)) = t
                .types
                .iter()
                .enumerate()
                .find(|(_, p)| p.is_empty() || p.trim_end_matches('*').contains('*'))
            {
                bad.push((
                    format!("targets[{i}].types[{j}]"),
                    "a type or a prefix ending in a single *".into(),
                ));
            }
            resolve(base, &mut t.secret_file);
            let secret = read_secret(&t.secret_file).unwrap_or_else(|e| {
                bad.push((k("secret_file"), e));
                Vec::new()
            });
            checked.push(Target { config: t, secret });
        }
        if let Some(name) = &telemetry.target
            && !checked.iter().any(|t| &t.config.name == name)
        {
            bad.push((
                "telemetry.target".into(),
                format!("no [[targets]] entry is named {name:?}"),
            ));
        }
        if bad.is_empty() {
            Ok(Config {
                mqtt,
                mqtt_password,
                store,
                intake,
                gaps,
                telemetry,
                metrics,
                targets: checked,
            })
        } else {
            Err(bad)
        }
    }
}

fn default_port() -> u16 {
    1883
}
fn default_client_id() -> String {
    "waymark-bridge".into()
}
fn default_topic_prefix() -> String {
    waymark_wire::topics::DEFAULT_PREFIX.into()
}
fn default_keep_alive_s() -> u64 {
    30
}
fn default_reconnect_min_ms() -> u64 {
    500
}
fn default_reconnect_max_ms() -> u64 {
    30_000
}
fn default_inflight() -> u16 {
    100
}
fn default_store_path() -> PathBuf {
    PathBuf::from("/var/lib/waymark-bridge/bridge.db")
}
fn default_batch_max() -> usize {
    500
}
fn default_reject_keep_bytes() -> usize {
    4096
}
fn default_max_event_bytes() -> usize {
    waymark_wire::event::MAX_EVENT_BYTES
}
fn default_max_telemetry_bytes() -> usize {
    1024 * 1024
}
fn default_alert_after_s() -> u64 {
    300
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_max_attempts() -> u32 {
    20
}
fn default_retry_min_ms() -> u64 {
    1000
}
fn default_retry_max_ms() -> u64 {
    300_000
}
fn default_concurrency() -> usize {
    16
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: default_store_path(),
            batch_max: default_batch_max(),
            reject_keep_bytes: default_reject_keep_bytes(),
        }
    }
}
impl Default for IntakeConfig {
    fn default() -> Self {
        IntakeConfig {
            max_event_bytes: default_max_event_bytes(),
            max_telemetry_bytes: default_max_telemetry_bytes(),
        }
    }
}
impl Default for GapsConfig {
    fn default() -> Self {
        GapsConfig {
            alert_after_s: default_alert_after_s(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with_secrets() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("erp.secret"), "s3cret\n").unwrap();
        std::fs::write(d.path().join("portal.secret"), "other").unwrap();
        std::fs::write(d.path().join("mqtt.password"), "pw\n").unwrap();
        d
    }

    const BASE: &str = r#"
[mqtt]
host = "127.0.0.1"
tls = false

[[targets]]
name = "erp"
url = "http://127.0.0.1:9/erp"
types = ["waymark.milestone.*"]
secret_file = "erp.secret"
"#;

    #[test]
    fn example_file_parses() {
        let d = dir_with_secrets();
        let text = include_str!("../../examples/waymark-bridge.toml");
        // The example names secrets under /etc; point them at the temp dir.
        let text = text.replace("/etc/waymark-bridge/", "");
        let c = Config::from_toml(&text, &d.path().join("bridge.toml")).unwrap();
        assert_eq!(c.targets.len(), 2);
        assert_eq!(c.targets[0].secret, b"s3cret");
        assert!(c.targets[0].config.wants("waymark.pod.delivered"));
        assert_eq!(c.telemetry.target.as_deref(), Some("portal"));
        // Every key of the example is a key of the schema and the reverse (round trip).
        let raw: RawConfig = toml::from_str(&text).unwrap();
        let back = toml::to_string(&raw).unwrap();
        let again: RawConfig = toml::from_str(&back).unwrap();
        assert_eq!(raw, again);
    }

    #[test]
    fn defaults_and_relative_paths() {
        let d = dir_with_secrets();
        let c = Config::from_toml(BASE, &d.path().join("b.toml")).unwrap();
        assert_eq!(c.mqtt.port, 1883);
        assert_eq!(c.mqtt.client_id, "waymark-bridge");
        assert_eq!(c.store.batch_max, 500);
        assert_eq!(c.targets[0].config.max_attempts, 20);
        assert_eq!(c.targets[0].secret, b"s3cret");
        assert!(format!("{:?}", c.targets[0]).contains("<redacted>"));
        assert!(!format!("{:?}", c.targets[0]).contains("s3cret"));
    }

    #[test]
    fn schema_errors_are_located() {
        let d = dir_with_secrets();
        let text = BASE.replace("tls = false", "tls = false\nbogus = 1");
        let e = Config::from_toml(&text, &d.path().join("b.toml")).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("b.toml:5:1:") && s.contains("bogus"), "{s}");
        let text = BASE.replace("tls = false", "tls = \"no\"");
        let s = Config::from_toml(&text, &d.path().join("b.toml"))
            .unwrap_err()
            .to_string();
        assert!(s.contains(":4:7:"), "{s}");
        let s = Config::from_toml("[mqtt]\nhost = \"h\"\n", &d.path().join("b.toml"))
            .unwrap_err()
            .to_string();
        assert!(s.contains("tls"), "{s}");
    }

    #[test]
    fn rules_name_the_key() {
        let d = dir_with_secrets();
        let text = format!(
            "{BASE}\n[[targets]]\nname = \"erp\"\nurl = \"ftp://x\"\nsecret_file = \"missing\"\ntypes = [\"a*b*\"]\ntimeout_ms = 1\n\n[telemetry]\ntarget = \"nope\"\n"
        );
        let e = Config::from_toml(&text, &d.path().join("b.toml")).unwrap_err();
        let ConfigError::Invalid { problems, .. } = &e else {
            panic!("{e}")
        };
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        for want in [
            "targets[1].name",
            "targets[1].url",
            "targets[1].secret_file",
            "targets[1].types[0]",
            "targets[1].timeout_ms",
            "telemetry.target",
        ] {
            assert!(keys.contains(&want), "{want} missing in {keys:?}");
        }
        let tls = BASE.replace("tls = false", "tls = true");
        let s = Config::from_toml(&tls, &d.path().join("b.toml"))
            .unwrap_err()
            .to_string();
        assert!(s.contains("mqtt.tls"), "{s}");
    }

    #[test]
    fn type_patterns() {
        let d = dir_with_secrets();
        let mut c = Config::from_toml(BASE, &d.path().join("b.toml")).unwrap();
        let t = &mut c.targets[0].config;
        assert!(t.wants("waymark.milestone.arrived"));
        assert!(!t.wants("waymark.pod.delivered"));
        t.types = vec!["waymark.pod.delivered".into()];
        assert!(t.wants("waymark.pod.delivered"));
        assert!(!t.wants("waymark.pod.delivered.x"));
        t.types = vec!["*".into()];
        assert!(t.wants("anything"));
    }
}
