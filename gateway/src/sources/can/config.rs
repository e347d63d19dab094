//! `[[sources]] type = "can"` and `type = "candump"`: what to read and what to decode.
//! `docs/can.md` is the user documentation.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::dbc::DbcFile;
use super::j1939::fms::{FMS, NMEA2000};
use crate::config::SignalFilterConfig;
use crate::sources::cargo::KeyProblem;

/// Most interfaces one `can` source reads.
pub const MAX_INTERFACES: usize = 8;
/// Longest Linux interface name (`IFNAMSIZ` - 1).
pub const IFNAME_MAX: usize = 15;
/// Most DBC files per source.
pub const MAX_DBC_FILES: usize = 16;
/// Most mapped DBC signals per source.
pub const MAX_MAPPED_SIGNALS: usize = 1024;

/// `[[sources]] type = "can"`: SocketCAN interfaces.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CanConfig {
    /// Source name in readings, logs and health. Default `can`.
    #[serde(default = "default_can_name")]
    pub name: String,
    /// SocketCAN interfaces to read (`can0`, `vcan0`), 1 to 8. Required.
    pub interfaces: Vec<String>,
    /// Receive CAN FD frames too (the interface must be FD-capable). Default false.
    #[serde(default)]
    pub fd: bool,
    /// Install kernel acceptance filters for exactly what this source decodes, so the
    /// kernel drops the rest before it costs a wake-up. Off = receive every frame.
    /// Default true.
    #[serde(default = "default_true")]
    pub kernel_filters: bool,
    /// First reopen delay after an interface failed (gone, down, bus-off); doubles up to
    /// `reopen_max_ms`, with jitter. 10 to 600000 ms. Default 1000.
    #[serde(default = "default_reopen_min_ms")]
    pub reopen_min_ms: u64,
    /// Longest reopen delay. At least `reopen_min_ms`, at most 3600000. Default 60000.
    #[serde(default = "default_reopen_max_ms")]
    pub reopen_max_ms: u64,
    /// Decode the built-in J1939 FMS set, DM1 faults and the VIN. Default true.
    #[serde(default = "default_true")]
    pub j1939: bool,
    /// Decode NMEA 2000 GNSS rapid updates (PGN 129025, 129026). Default false.
    #[serde(default)]
    pub nmea2000: bool,
    /// DBC files and the signals taken from them.
    #[serde(default)]
    pub dbc: Vec<DbcConfig>,
}

/// `[[sources]] type = "candump"`: replay of a can-utils candump log.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CandumpConfig {
    /// Source name in readings, logs and health. Default `candump`.
    #[serde(default = "default_candump_name")]
    pub name: String,
    /// The log file (any of the candump text formats). Required. A relative path is
    /// relative to the directory of the config file.
    pub path: PathBuf,
    /// Replay speed: 1 = the log's own timing, 10 = ten times faster, 0 = as fast as
    /// possible. 0 to 1000. Default 1.
    #[serde(default = "default_speed")]
    pub speed: f64,
    /// Start again from the top at the end of the log (demo). Default false.
    #[serde(default)]
    pub repeat: bool,
    /// As for `type = "can"`. Default true.
    #[serde(default = "default_true")]
    pub j1939: bool,
    /// As for `type = "can"`. Default false.
    #[serde(default)]
    pub nmea2000: bool,
    /// As for `type = "can"`.
    #[serde(default)]
    pub dbc: Vec<DbcConfig>,
}

/// `[[sources.dbc]]`: one DBC file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DbcConfig {
    /// The DBC file. Required. A relative path is relative to the directory of the config
    /// file.
    pub file: PathBuf,
    /// Match extended frames on the J1939 PGN (ignoring priority and source address)
    /// rather than the whole id. Default: what the file says (`ProtocolType "J1939"` or
    /// `VFrameFormat` `J1939PG`).
    #[serde(default)]
    pub j1939: Option<bool>,
    /// Value-table signals become text readings (`"Drive"`) where the raw value has a text;
    /// false = always the number. Default true.
    #[serde(default = "default_true")]
    pub text_values: bool,
    /// The signals to decode; nothing else in the file is read. At least one.
    pub signals: Vec<DbcSignalConfig>,
}

/// `[[sources.dbc.signals]]`: one DBC signal mapped to one of our signal names.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DbcSignalConfig {
    /// Message name in the DBC, or its id as written there (`2364540158`, `0x8CF004FE`)
    /// where a name is used twice. Required.
    pub message: String,
    /// Signal name in that message. Required.
    pub signal: String,
    /// Our signal name (COVESA VSS where one exists, `Vehicle.Speed`). Required.
    pub name: String,
    /// Unit of the reading. Default: the DBC's unit.
    #[serde(default)]
    pub unit: Option<String>,
    /// Pipeline deadband for this signal (as `[[pipeline.signals]]`); with
    /// `min_interval_ms` / `max_interval_ms` it adds a filter entry after the user's own.
    /// Default: no entry (the pipeline's `default_filter` applies).
    #[serde(default)]
    pub deadband: Option<f64>,
    /// Pipeline minimum interval for this signal. Default: see `deadband`.
    #[serde(default)]
    pub min_interval_ms: Option<u64>,
    /// Pipeline heartbeat for this signal. Default: see `deadband`.
    #[serde(default)]
    pub max_interval_ms: Option<u64>,
}

fn default_true() -> bool {
    true
}
fn default_can_name() -> String {
    "can".into()
}
fn default_candump_name() -> String {
    "candump".into()
}
fn default_reopen_min_ms() -> u64 {
    1000
}
fn default_reopen_max_ms() -> u64 {
    60_000
}
fn default_speed() -> f64 {
    1.0
}

/// What both source kinds decode.
#[derive(Debug, Clone, Copy)]
pub struct DecodeConfig<'a> {
    /// Built-in J1939 set.
    pub j1939: bool,
    /// Built-in NMEA 2000 set.
    pub nmea2000: bool,
    /// DBC files.
    pub dbc: &'a [DbcConfig],
}

impl CanConfig {
    /// The decode settings.
    pub fn decode(&self) -> DecodeConfig<'_> {
        DecodeConfig {
            j1939: self.j1939,
            nmea2000: self.nmea2000,
            dbc: &self.dbc,
        }
    }

    /// Checks ranges, names and (with `files`) the DBC files and the mapped signals.
    pub fn problems(&self, files: bool) -> Vec<KeyProblem> {
        let mut out = Vec::new();
        if self.interfaces.is_empty() || self.interfaces.len() > MAX_INTERFACES {
            out.push(KeyProblem::at(
                "interfaces",
                format!("1 to {MAX_INTERFACES} interfaces"),
            ));
        }
        for (i, name) in self.interfaces.iter().enumerate() {
            let ok = !name.is_empty()
                && name.len() <= IFNAME_MAX
                && !name.contains(['/', ' ', '\0', ':'])
                && name != "."
                && name != "..";
            if !ok {
                out.push(KeyProblem::at(
                    "interfaces",
                    format!("interfaces[{i}] {name:?} is not a network interface name"),
                ));
            }
            if self.interfaces[..i].contains(name) {
                out.push(KeyProblem::at(
                    "interfaces",
                    format!("interfaces[{i}] {name:?} is listed twice"),
                ));
            }
        }
        out.extend(KeyProblem::range(
            "reopen_min_ms",
            self.reopen_min_ms,
            (10, 600_000),
        ));
        out.extend(KeyProblem::range(
            "reopen_max_ms",
            self.reopen_max_ms,
            (self.reopen_min_ms, 3_600_000),
        ));
        decode_problems(&self.decode(), files, &mut out);
        out
    }
}

impl CandumpConfig {
    /// The decode settings.
    pub fn decode(&self) -> DecodeConfig<'_> {
        DecodeConfig {
            j1939: self.j1939,
            nmea2000: self.nmea2000,
            dbc: &self.dbc,
        }
    }

    /// Checks ranges and (with `files`) the log, the DBC files and the mapped signals.
    pub fn problems(&self, files: bool) -> Vec<KeyProblem> {
        let mut out = Vec::new();
        if self.path.as_os_str().is_empty() {
            out.push(KeyProblem::at("path", "must not be empty"));
        } else if files && let Err(e) = std::fs::File::open(&self.path) {
            out.push(KeyProblem::at(
                "path",
                format!("cannot read {}: {e}", self.path.display()),
            ));
        }
        if !(0.0..=1000.0).contains(&self.speed) {
            out.push(KeyProblem::at(
                "speed",
                format!("{} is out of range; allowed 0 to 1000", self.speed),
            ));
        }
        decode_problems(&self.decode(), files, &mut out);
        out
    }
}

fn decode_problems(d: &DecodeConfig<'_>, files: bool, out: &mut Vec<KeyProblem>) {
    if d.dbc.len() > MAX_DBC_FILES {
        out.push(KeyProblem::at(
            "dbc",
            format!("at most {MAX_DBC_FILES} files"),
        ));
    }
    let total: usize = d.dbc.iter().map(|f| f.signals.len()).sum();
    if total > MAX_MAPPED_SIGNALS {
        out.push(KeyProblem::at(
            "dbc",
            format!("at most {MAX_MAPPED_SIGNALS} signals in all"),
        ));
    }
    if !d.j1939 && !d.nmea2000 && total == 0 {
        out.push(KeyProblem::at(
            "j1939",
            "nothing to decode: enable j1939 or nmea2000, or map DBC signals",
        ));
    }
    for (i, f) in d.dbc.iter().enumerate() {
        let mut bad = |key: &'static str, m: String| {
            out.push(KeyProblem {
                key: "dbc",
                item: Some((i, key)),
                message: m,
            });
        };
        if f.signals.is_empty() {
            bad("signals", "map at least one signal".into());
        }
        for (k, s) in f.signals.iter().enumerate() {
            if s.name.is_empty() || s.name.len() > 255 {
                bad(
                    "signals",
                    format!("signals[{k}].name must be 1 to 255 bytes"),
                );
            }
            if let Some(db) = s.deadband
                && !(db.is_finite() && db >= 0.0)
            {
                bad(
                    "signals",
                    format!("signals[{k}].deadband must be finite and ≥ 0"),
                );
            }
        }
        if !files {
            continue;
        }
        let file = match DbcFile::load(&f.file) {
            Ok(file) => file,
            Err(e) => {
                bad("file", e.to_string());
                continue;
            }
        };
        for (k, s) in f.signals.iter().enumerate() {
            if let Err(m) = resolve(&file, s) {
                bad("signals", format!("signals[{k}]: {m}"));
            }
        }
    }
}

/// The (message index, signal index) in `file` that `s` names.
///
/// # Errors
/// No such message or signal, or a message name used more than once.
pub fn resolve(file: &DbcFile, s: &DbcSignalConfig) -> Result<(usize, usize), String> {
    let found = file.find(&s.message);
    let m = match found.as_slice() {
        [] => return Err(format!("no message {:?} in the DBC", s.message)),
        [m] => *m,
        _ => {
            return Err(format!(
                "message name {:?} is used {} times in the DBC; give its id instead",
                s.message,
                found.len()
            ));
        }
    };
    let mi = file
        .messages
        .iter()
        .position(|x| std::ptr::eq(x, m))
        .unwrap_or(0);
    let si = m
        .signals
        .iter()
        .position(|x| x.name == s.signal)
        .ok_or_else(|| format!("message {:?} has no signal {:?}", m.name, s.signal))?;
    Ok((mi, si))
}

/// The pipeline filter entries the CAN sources add after the user's `[[pipeline.signals]]`
/// (the first matching entry wins, so the user's own entries override these): the built-in
/// defaults of each enabled J1939 / NMEA 2000 signal, and those given on DBC signals.
pub fn default_filters(decoders: &[DecodeConfig<'_>]) -> Vec<SignalFilterConfig> {
    let mut out: Vec<SignalFilterConfig> = Vec::new();
    let mut push = |e: SignalFilterConfig| {
        if !out.iter().any(|x| x.name == e.name) {
            out.push(e);
        }
    };
    for d in decoders {
        for f in d.dbc {
            for s in &f.signals {
                if s.deadband.is_some()
                    || s.min_interval_ms.is_some()
                    || s.max_interval_ms.is_some()
                {
                    push(SignalFilterConfig {
                        name: s.name.clone(),
                        deadband: s.deadband.unwrap_or(0.0),
                        min_interval_ms: s.min_interval_ms.unwrap_or(0),
                        max_interval_ms: s.max_interval_ms.unwrap_or(0),
                    });
                }
            }
        }
        let tables = [(d.j1939, FMS), (d.nmea2000, NMEA2000)];
        for p in tables
            .iter()
            .filter(|(on, _)| *on)
            .flat_map(|(_, t)| t.iter())
        {
            if p.deadband > 0.0 || p.min_interval_ms > 0 || p.max_interval_ms > 0 {
                push(SignalFilterConfig {
                    name: p.signal.to_string(),
                    deadband: p.deadband,
                    min_interval_ms: p.min_interval_ms,
                    max_interval_ms: p.max_interval_ms,
                });
            }
        }
    }
    out
}
