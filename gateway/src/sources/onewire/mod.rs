//! `onewire`: DS18B20-family temperature probes read through the Linux w1 sysfs
//! (`<sysfs_root>/28-*/w1_slave`, or `temperature` where `w1_slave` is absent).
//! `docs/devices.md` is the user documentation.
//!
//! Invariants:
//! - Faults (CRC failure, the 85 °C power-on value, -127 °C, out of range, a configured probe
//!   missing, a file not in the driver's format) are counted in `probe_faults`, logged when
//!   they change and listed in health; they never become temperature readings.
//! - The sysfs reads (which block for a conversion, ~750 ms per probe) run on the blocking
//!   pool, one poll at a time; each file read is capped at [`MAX_FILE_BYTES`].
//! - Time: readings are stamped with the gateway [`Clock`](crate::clock::Clock) (a monotonic
//!   stamp until the time is known; the pipeline re-stamps it).

mod parse;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use waymark_wire::{Reading, Timestamp, Value};

use super::cargo::{CELSIUS, KeyProblem, ProbeConfig, check_probes, temperature_signal};
use super::{Source, SourceContext, SourceError};
use crate::clock::system_ms;
use crate::health::{Health, HealthState};
use crate::shutdown::Shutdown;

pub use parse::{Change, ParseError, Probes, is_probe_dir, parse_temperature, parse_w1_slave};

/// Longest probe file read; the driver writes under 100 bytes.
pub const MAX_FILE_BYTES: u64 = 4096;
/// Most probe directories looked at per poll.
pub const MAX_PROBES: usize = 64;

/// `[[sources]] type = "onewire"`: DS18B20 probes through the Linux w1 sysfs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OnewireConfig {
    /// Source name in readings, logs and health. Default `onewire`.
    #[serde(default = "default_name")]
    pub name: String,
    /// Where the w1 bus lists its devices. Default `/sys/bus/w1/devices`.
    #[serde(default = "default_sysfs_root")]
    pub sysfs_root: PathBuf,
    /// Time between polls of all probes. 100 to 3600000 ms. Default 10000.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Probe → compartment map; a mapped probe that is not on the bus is a `missing` fault.
    #[serde(default)]
    pub probes: Vec<ProbeConfig>,
}

fn default_name() -> String {
    "onewire".into()
}
fn default_sysfs_root() -> PathBuf {
    PathBuf::from("/sys/bus/w1/devices")
}
fn default_poll_interval_ms() -> u64 {
    10_000
}

impl OnewireConfig {
    /// A config with every default, reading `root`.
    pub fn with_root(root: PathBuf) -> Self {
        Self {
            name: default_name(),
            sysfs_root: root,
            poll_interval_ms: default_poll_interval_ms(),
            probes: Vec::new(),
        }
    }

    /// Checks the ranges and the probe map.
    pub fn problems(&self) -> Vec<KeyProblem> {
        let mut out = Vec::new();
        if self.sysfs_root.as_os_str().is_empty() {
            out.push(KeyProblem::at("sysfs_root", "must not be empty"));
        }
        out.extend(KeyProblem::range(
            "poll_interval_ms",
            self.poll_interval_ms,
            (100, 3_600_000),
        ));
        check_probes(&self.probes, &mut out);
        out
    }
}

/// One probe's file as read in a poll.
#[derive(Debug)]
struct ProbeFile {
    id: String,
    path: PathBuf,
    text: std::io::Result<String>,
}

/// The `onewire` source.
#[derive(Debug)]
pub struct Onewire {
    cfg: OnewireConfig,
}

impl Onewire {
    /// A source for `cfg`; nothing is opened until it runs (a bus that appears later is
    /// picked up).
    pub fn new(cfg: &OnewireConfig) -> Self {
        Self { cfg: cfg.clone() }
    }
}

impl Source for Onewire {
    const NAME: &'static str = "onewire";

    fn component(&self) -> String {
        format!("{}:{}", Self::NAME, self.cfg.name)
    }

    async fn run(self, ctx: SourceContext, shutdown: Shutdown) -> Result<(), SourceError> {
        let component = self.component();
        let configured: Vec<String> = self.cfg.probes.iter().map(|p| p.id.clone()).collect();
        let mut probes = Probes::default();
        let mut last_health = None;
        let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.poll_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.recv() => return Ok(()),
            }
            let root = self.cfg.sysfs_root.clone();
            let scanned = tokio::task::spawn_blocking(move || scan(&root)).await;
            let health = match scanned {
                Ok(Ok(files)) => {
                    let (readings, health) = self.process(
                        &files,
                        &configured,
                        &mut probes,
                        &ctx.health,
                        &component,
                        ctx.clock.now(),
                    );
                    for r in readings {
                        ctx.readings
                            .send(r)
                            .await
                            .map_err(|_| SourceError::PipelineClosed)?;
                    }
                    health
                }
                Ok(Err(e)) => (
                    HealthState::Down,
                    Some(format!(
                        "cannot list {}: {e}",
                        self.cfg.sysfs_root.display()
                    )),
                ),
                Err(e) => (HealthState::Down, Some(format!("poll failed: {e}"))),
            };
            if last_health.as_ref() != Some(&health) {
                if let (HealthState::Down, Some(d)) = &health {
                    warn!(source = %component, "{d}");
                }
                ctx.health
                    .set(&component, health.0, health.1.clone(), system_ms());
                last_health = Some(health);
            }
        }
    }
}

impl Onewire {
    /// Turns one poll's files into readings and the source's health.
    fn process(
        &self,
        files: &[ProbeFile],
        configured: &[String],
        probes: &mut Probes,
        health: &Health,
        component: &str,
        now: Timestamp,
    ) -> (Vec<Reading>, (HealthState, Option<String>)) {
        let mut changes = Vec::new();
        let seen: Vec<String> = files.iter().map(|f| f.id.clone()).collect();
        probes.poll(&seen, configured, &mut changes);
        let mut readings = Vec::new();
        let mut errors = Vec::new();
        for f in files {
            let parsed = match &f.text {
                Ok(text) if f.path.ends_with("w1_slave") => parse_w1_slave(text),
                Ok(text) => parse_temperature(text),
                Err(e) => {
                    errors.push(format!("{}: {e}", f.path.display()));
                    Health::add(&health.counters.probe_faults, 1);
                    continue;
                }
            };
            match parsed {
                Ok(Ok(celsius)) => {
                    probes.record(&f.id, None, &mut changes);
                    readings.push(Reading {
                        signal: temperature_signal(&self.cfg.probes, &f.id),
                        value: Value::Num(celsius),
                        unit: CELSIUS.into(),
                        time: now,
                        source: self.cfg.name.clone(),
                    });
                }
                Ok(Err(fault)) => {
                    Health::add(&health.counters.probe_faults, 1);
                    probes.record(&f.id, Some(fault), &mut changes);
                }
                Err(e) => {
                    Health::add(&health.counters.probe_faults, 1);
                    errors.push(format!("{}:{}: {}", f.path.display(), e.line, e.message));
                }
            }
        }
        for c in changes {
            match c {
                Change::Appeared(id) => info!(source = %component, probe = %id, "Probe present."),
                Change::Disappeared(id) => warn!(source = %component, probe = %id, "Probe gone."),
                Change::Fault(id, Some(f)) => {
                    warn!(source = %component, probe = %id, fault = f.as_str(), "Probe fault.");
                }
                Change::Fault(id, None) => {
                    info!(source = %component, probe = %id, "Probe healthy again.")
                }
            }
        }
        for e in &errors {
            warn!(source = %component, "Unreadable probe file: {e}");
        }
        let mut detail = probes.fault_list();
        detail.extend(errors);
        let health = if detail.is_empty() {
            (HealthState::Ok, None)
        } else {
            (
                HealthState::Degraded,
                Some(format!("probe fault: {}", detail.join(", "))),
            )
        };
        (readings, health)
    }
}

/// Lists the probe directories under `root` (at most [`MAX_PROBES`], sorted) and reads each
/// one's `w1_slave`, or `temperature` when there is no `w1_slave`.
fn scan(root: &Path) -> std::io::Result<Vec<ProbeFile>> {
    let mut ids: Vec<String> = std::fs::read_dir(root)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| is_probe_dir(n))
        .collect();
    ids.sort();
    ids.truncate(MAX_PROBES);
    Ok(ids
        .into_iter()
        .map(|id| {
            let dir = root.join(&id);
            let slave = dir.join("w1_slave");
            let path = if slave.exists() {
                slave
            } else {
                dir.join("temperature")
            };
            let text = read_capped(&path);
            ProbeFile { id, path, text }
        })
        .collect())
}

fn read_capped(path: &Path) -> std::io::Result<String> {
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES)
        .read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests;
