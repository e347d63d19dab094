//! `[[sources]] type = "gps"`: where the NMEA comes from (a serial receiver or gpsd) and the
//! GNSS hygiene rules. `docs/gps.md` is the user documentation; every key is also in
//! `docs/configuration.md` and `examples/waymark.toml`.
//!
//! Thresholds that TOML cannot leave unset are switched off with `0` (`max_hdop = 0` accepts
//! any HDOP); [`GpsConfig::core`] turns them into the core's `Option`s.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::GnssConfig;
use super::framer::{FramerConfig, NMEA_MAX_LEN};
use super::hygiene::HygieneConfig;
use super::nmea::{Date, ParseOptions};
use crate::sources::cargo::KeyProblem;

/// Where a `gps` source reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GpsMode {
    /// An NMEA 0183 receiver on a serial port (`device`, `baud`, `init`).
    Serial,
    /// A gpsd daemon that already owns the receiver (`gpsd`).
    Gpsd,
}

/// `[[sources]] type = "gps"`: one GNSS receiver.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GpsConfig {
    /// Source name in readings, logs and health. Default `gps`.
    #[serde(default = "default_name")]
    pub name: String,
    /// `serial` (read NMEA from `device`) or `gpsd` (JSON from the daemon at `gpsd`).
    /// Default `serial`.
    #[serde(default = "default_mode")]
    pub mode: GpsMode,
    /// Serial port of the receiver (mode `serial`). Use the stable
    /// `/dev/serial/by-id/usb-...` link, not `/dev/ttyACM0` (which changes on replug).
    #[serde(default)]
    pub device: PathBuf,
    /// Baud rate, 1200 to 4000000 (mode `serial`). Default 9600 (most receivers' factory
    /// setting; u-blox USB ports ignore it).
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Sent to the receiver, in order, each time the port is opened (mode `serial`). A
    /// string starting with `$` is an NMEA sentence: `*hh` and CR LF are added when missing.
    /// A string starting with `hex:` is raw bytes in hex (a UBX binary command). At most 16
    /// strings of at most 256 bytes. Default none.
    #[serde(default)]
    pub init: Vec<String>,
    /// gpsd's `host:port` (mode `gpsd`). Default `127.0.0.1:2947`.
    #[serde(default = "default_gpsd")]
    pub gpsd: String,
    /// Reject sentences without a `*hh` checksum (they are counted as bad checksums). Some
    /// receivers send proprietary sentences without one. Default true.
    #[serde(default = "default_true")]
    pub require_checksum: bool,
    /// Longest sentence accepted, bytes (NMEA says 82; a longer line is counted and skipped).
    /// 82 to 4096. Default 120.
    #[serde(default = "default_max_sentence_bytes")]
    pub max_sentence_bytes: usize,
    /// Silence after which the epoch in progress is complete and becomes a fix (without it a
    /// fix waits for the next epoch's first sentence). 10 to 10000 ms. Default 250.
    #[serde(default = "default_epoch_timeout_ms")]
    pub epoch_timeout_ms: u64,
    /// No accepted fix for this long marks the source degraded (no sky view, antenna cut).
    /// 1 to 86400 s. Default 30.
    #[serde(default = "default_no_fix_timeout_s")]
    pub no_fix_timeout_s: u64,
    /// First delay before reopening a missing or unplugged port (or reconnecting to gpsd);
    /// doubles up to `reopen_max_ms`, with jitter. At least 1. Default 500.
    #[serde(default = "default_reopen_min_ms")]
    pub reopen_min_ms: u64,
    /// Longest reopen delay. At least `reopen_min_ms`. Default 30000.
    #[serde(default = "default_reopen_max_ms")]
    pub reopen_max_ms: u64,
    /// GPS week rollover: a receiver date before this (`YYYY-MM-DD`) is moved forward by
    /// 1024 weeks until it is not. Set it no later than the day the unit is installed.
    /// Default `2025-01-01`.
    #[serde(default = "default_week_rollover_floor")]
    pub week_rollover_floor: String,
    /// Reject positions within this many degrees of 0°, 0° (both axes). 0 = rule off.
    /// Default 0.0001.
    #[serde(default = "default_null_island_deg")]
    pub null_island_deg: f64,
    /// Largest HDOP accepted. 0 = rule off. Default 10.
    #[serde(default = "default_max_hdop")]
    pub max_hdop: f64,
    /// Fewest satellites in use accepted. 0 = rule off. Default 4.
    #[serde(default = "default_min_satellites")]
    pub min_satellites: u8,
    /// Reject a second fix with the same time as the last accepted one. Default true.
    #[serde(default = "default_true")]
    pub reject_duplicates: bool,
    /// Largest speed, km/h, that a jump between accepted fixes may imply. 0 = rule off.
    /// Default 300.
    #[serde(default = "default_max_speed_kmh")]
    pub max_speed_kmh: f64,
    /// Jumps (or times going back) rejected in a row after which the next fix becomes the
    /// new reference (the receiver really is there). Default 5.
    #[serde(default = "default_reset_after_rejections")]
    pub reset_after_rejections: u32,
    /// Below this speed, km/h, the vehicle counts as stopped and positions within
    /// `stop_radius_m` of the stop point are reported as the stop point (static drift).
    /// 0 = rule off. Default 2.
    #[serde(default = "default_stop_speed_kmh")]
    pub stop_speed_kmh: f64,
    /// Radius of the static-drift rule, metres. Default 25.
    #[serde(default = "default_stop_radius_m")]
    pub stop_radius_m: f64,
    /// Metres per unit of HDOP for `Vehicle.CurrentLocation.HorizontalAccuracy`. Default 5.
    #[serde(default = "default_uere_m")]
    pub uere_m: f64,
}

fn default_name() -> String {
    "gps".into()
}
fn default_mode() -> GpsMode {
    GpsMode::Serial
}
fn default_baud() -> u32 {
    9600
}
fn default_gpsd() -> String {
    "127.0.0.1:2947".into()
}
fn default_true() -> bool {
    true
}
fn default_max_sentence_bytes() -> usize {
    super::framer::DEFAULT_MAX_LEN
}
fn default_epoch_timeout_ms() -> u64 {
    250
}
fn default_no_fix_timeout_s() -> u64 {
    30
}
fn default_reopen_min_ms() -> u64 {
    500
}
fn default_reopen_max_ms() -> u64 {
    30_000
}
fn default_week_rollover_floor() -> String {
    "2025-01-01".into()
}
fn default_null_island_deg() -> f64 {
    1e-4
}
fn default_max_hdop() -> f64 {
    10.0
}
fn default_min_satellites() -> u8 {
    4
}
fn default_max_speed_kmh() -> f64 {
    300.0
}
fn default_reset_after_rejections() -> u32 {
    5
}
fn default_stop_speed_kmh() -> f64 {
    2.0
}
fn default_stop_radius_m() -> f64 {
    25.0
}
fn default_uere_m() -> f64 {
    super::readings::DEFAULT_UERE_M
}

/// Longest init string, bytes (after hex decoding).
pub const MAX_INIT_BYTES: usize = 256;
/// Most init strings.
pub const MAX_INIT_STRINGS: usize = 16;

/// Parses `YYYY-MM-DD` into a date, `None` when malformed or impossible.
pub fn parse_date(s: &str) -> Option<Date> {
    let mut parts = s.splitn(3, '-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let date = Date {
        year: y.parse().ok()?,
        month: m.parse().ok()?,
        day: d.parse().ok()?,
    };
    date.days_since_epoch().map(|_| date)
}

/// The bytes an init string stands for (see [`GpsConfig::init`]).
///
/// # Errors
/// A description of what is wrong with it.
pub fn init_bytes(s: &str) -> Result<Vec<u8>, String> {
    let out = if let Some(hex) = s.strip_prefix("hex:") {
        let hex: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        if !hex.len().is_multiple_of(2) {
            return Err("odd number of hex digits".into());
        }
        hex.chunks(2)
            .enumerate()
            .map(|(i, pair)| {
                std::str::from_utf8(pair)
                    .ok()
                    .and_then(|p| u8::from_str_radix(p, 16).ok())
                    .ok_or_else(|| format!("bad hex digit pair at byte {}", i * 2))
            })
            .collect::<Result<Vec<u8>, String>>()?
    } else if let Some(body) = s.strip_prefix('$') {
        let body = body.trim_end_matches(['\r', '\n']);
        if !body.is_ascii() || body.bytes().any(|b| b.is_ascii_control()) {
            return Err("an NMEA sentence must be printable ASCII".into());
        }
        let mut line = format!("${body}");
        if !body.contains('*') {
            line.push_str(&format!("*{:02X}", super::nmea::checksum(body.as_bytes())));
        }
        line.push_str("\r\n");
        line.into_bytes()
    } else {
        return Err("must start with `$` (an NMEA sentence) or `hex:` (raw bytes)".into());
    };
    if out.is_empty() || out.len() > MAX_INIT_BYTES {
        return Err(format!("must be 1 to {MAX_INIT_BYTES} bytes"));
    }
    Ok(out)
}

impl GpsConfig {
    /// A serial config with every default, for `device` (tests, the demo, the key list).
    pub fn with_device(device: PathBuf) -> Self {
        Self {
            name: default_name(),
            mode: GpsMode::Serial,
            device,
            baud: default_baud(),
            init: Vec::new(),
            gpsd: default_gpsd(),
            require_checksum: true,
            max_sentence_bytes: default_max_sentence_bytes(),
            epoch_timeout_ms: default_epoch_timeout_ms(),
            no_fix_timeout_s: default_no_fix_timeout_s(),
            reopen_min_ms: default_reopen_min_ms(),
            reopen_max_ms: default_reopen_max_ms(),
            week_rollover_floor: default_week_rollover_floor(),
            null_island_deg: default_null_island_deg(),
            max_hdop: default_max_hdop(),
            min_satellites: default_min_satellites(),
            reject_duplicates: true,
            max_speed_kmh: default_max_speed_kmh(),
            reset_after_rejections: default_reset_after_rejections(),
            stop_speed_kmh: default_stop_speed_kmh(),
            stop_radius_m: default_stop_radius_m(),
            uere_m: default_uere_m(),
        }
    }

    /// A gpsd config with every default, for `addr` (`host:port`).
    pub fn with_gpsd(addr: &str) -> Self {
        Self {
            mode: GpsMode::Gpsd,
            gpsd: addr.to_string(),
            ..Self::with_device(PathBuf::new())
        }
    }

    /// The first moment (UTC ms) a receiver date may be; earlier dates are rolled over.
    pub fn rollover_floor_ms(&self) -> i64 {
        parse_date(&self.week_rollover_floor)
            .and_then(|d| d.days_since_epoch())
            .map_or(0, |days| days * 86_400_000)
    }

    /// The sans-IO core's settings.
    pub fn core(&self) -> GnssConfig {
        let on = |v: f64| (v > 0.0).then_some(v);
        GnssConfig {
            framer: FramerConfig {
                max_len: self.max_sentence_bytes,
            },
            parse: ParseOptions {
                allow_missing_checksum: !self.require_checksum,
            },
            hygiene: HygieneConfig {
                null_island_deg: on(self.null_island_deg),
                max_hdop: on(self.max_hdop),
                min_satellites: (self.min_satellites > 0).then_some(self.min_satellites),
                reject_duplicates: self.reject_duplicates,
                max_speed_kmh: on(self.max_speed_kmh),
                reset_after_rejections: self.reset_after_rejections,
                stop_speed_kmh: on(self.stop_speed_kmh),
                stop_radius_m: self.stop_radius_m,
            },
            rollover_floor_ms: Some(self.rollover_floor_ms()),
        }
    }

    /// Checks the ranges, the mode's required keys and the init strings.
    pub fn problems(&self) -> Vec<KeyProblem> {
        let mut out = Vec::new();
        match self.mode {
            GpsMode::Serial => {
                if self.device.as_os_str().is_empty() {
                    out.push(KeyProblem::at(
                        "device",
                        "is required with mode = \"serial\"",
                    ));
                }
            }
            GpsMode::Gpsd => {
                let port_ok = self
                    .gpsd
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
                if !port_ok {
                    out.push(KeyProblem::at(
                        "gpsd",
                        format!("`{}` is not host:port", self.gpsd),
                    ));
                }
            }
        }
        out.extend(KeyProblem::range("baud", self.baud, (1200, 4_000_000)));
        if self.init.len() > MAX_INIT_STRINGS {
            out.push(KeyProblem::at(
                "init",
                format!("at most {MAX_INIT_STRINGS} strings"),
            ));
        }
        for (i, s) in self.init.iter().enumerate() {
            if let Err(e) = init_bytes(s) {
                out.push(KeyProblem::at("init", format!("init[{i}]: {e}")));
            }
        }
        out.extend(KeyProblem::range(
            "max_sentence_bytes",
            self.max_sentence_bytes,
            (NMEA_MAX_LEN, 4096),
        ));
        out.extend(KeyProblem::range(
            "epoch_timeout_ms",
            self.epoch_timeout_ms,
            (10, 10_000),
        ));
        out.extend(KeyProblem::range(
            "no_fix_timeout_s",
            self.no_fix_timeout_s,
            (1, 86_400),
        ));
        out.extend(KeyProblem::reopen_delays(
            self.reopen_min_ms,
            self.reopen_max_ms,
        ));
        if parse_date(&self.week_rollover_floor).is_none() {
            out.push(KeyProblem::at(
                "week_rollover_floor",
                format!("`{}` is not a date YYYY-MM-DD", self.week_rollover_floor),
            ));
        }
        for (key, v, hi) in [
            ("null_island_deg", self.null_island_deg, 1.0),
            ("max_hdop", self.max_hdop, 100.0),
            ("max_speed_kmh", self.max_speed_kmh, 100_000.0),
            ("stop_speed_kmh", self.stop_speed_kmh, 50.0),
            ("stop_radius_m", self.stop_radius_m, 10_000.0),
            ("uere_m", self.uere_m, 1000.0),
        ] {
            if !(0.0..=hi).contains(&v) {
                out.push(KeyProblem::at(key, format!("{v} is not in 0 to {hi}")));
            }
        }
        out
    }
}
