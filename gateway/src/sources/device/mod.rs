//! `device`: one attached microcontroller (POD button box, scanner, signature pad, temperature
//! probe, door sensor) on a serial port, speaking `firmware-proto`. `docs/devices.md` is the
//! user documentation (wiring, config, events, payload fields).
//!
//! ```text
//! open port ──► read ─► Decoder<MAX_CONTENT> ─► Session::on_frame ─┬─ Send(msg) ─► write frame
//!   ▲  (backoff)        (bounded, resyncs)      (sans-IO, session.rs)├─ Reading ──► pipeline (waits when full)
//!   │                                                               └─ Store ───► Store::append_event
//!   └── read 0 bytes / I/O error (unplug)            Ack / Nack ◄── Session::on_stored ◄──┘
//! ```
//!
//! Invariants (the protocol's are in `session.rs`):
//! - **One task per device**, which owns the port. A port that is missing, unplugged (read
//!   returns 0 bytes or an error) or fails is closed and reopened with exponential backoff
//!   with jitter (`reopen_min_ms` … `reopen_max_ms`), by the configured path, so a stable
//!   `/dev/serial/by-id/...` link follows the device to its new `ttyUSBn`.
//! - **Bounded.** One read buffer ([`READ_CHUNK`]), one decoder of `MAX_CONTENT` bytes,
//!   at most `session::MAX_IN_FLIGHT` pending appends; reading pauses when the device sends
//!   more than `max_frames_per_s × MAX_FRAME` bytes per second, so a flooding device costs
//!   bounded CPU and cannot starve other sources.
//! - **Shutdown**: stop reading, let pending appends finish and answer them, return.
//! - Time: readings, events and the `TimeSync` sent to the device are stamped with the gateway
//!   [`Clock`](crate::clock::Clock); `TimeSync` says `unix_ms = 0` until the time is known.

mod session;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use firmware_proto::{Decoder, MAX_CONTENT, MAX_FRAME, encode};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_serial::{SerialPortBuilderExt, SerialStream};
use tracing::{debug, error, info, warn};

use super::cargo::{KeyProblem, ProbeConfig, check_probes};
use super::{Source, SourceContext, SourceError};
use crate::clock::system_ms;
use crate::health::{Health, HealthState};
use crate::rate::TokenBucket;
use crate::shutdown::Shutdown;
use crate::uplink::backoff::Backoff;

pub use session::{DeviceInfo, MAX_IN_FLIGHT, Output, Session, Settings, Tally, event_id};

/// Bytes read from the port at once.
pub const READ_CHUNK: usize = 1024;
/// Longest time a frame write may take before the frame is dropped (a device that does not
/// read its input must not stall reading).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// A port open for this long resets the reopen backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// `[[sources]] type = "device"`: one serial device speaking firmware-proto.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Source name in readings, events, logs and health. Default `device`.
    #[serde(default = "default_name")]
    pub name: String,
    /// Serial port. Use the stable `/dev/serial/by-id/usb-...` link, not `/dev/ttyUSB0`
    /// (which changes on replug). Required.
    pub device: PathBuf,
    /// Baud rate, 1200 to 4000000. Default 115200.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Heartbeat interval sent to the device (`Config`), seconds; 0 disables heartbeats.
    /// Default 10.
    #[serde(default = "default_heartbeat_interval_s")]
    pub heartbeat_interval_s: u16,
    /// No valid frame for this long marks the source degraded in health. 1 to 86400 s and
    /// more than `heartbeat_interval_s`. Default 30.
    #[serde(default = "default_heartbeat_timeout_s")]
    pub heartbeat_timeout_s: u64,
    /// Temperature reporting interval sent to the device (`Config`), seconds; 0 = the
    /// device's own choice. Default 60.
    #[serde(default = "default_temperature_interval_s")]
    pub temperature_interval_s: u16,
    /// How often the gateway's clock is sent to the device (`TimeSync`), besides on open and
    /// after each `Hello`. 1 to 86400 s. Default 3600.
    #[serde(default = "default_time_sync_interval_s")]
    pub time_sync_interval_s: u64,
    /// First delay before reopening a missing or unplugged port; doubles up to
    /// `reopen_max_ms`, with jitter. At least 1. Default 500.
    #[serde(default = "default_reopen_min_ms")]
    pub reopen_min_ms: u64,
    /// Longest reopen delay. At least `reopen_min_ms`. Default 30000.
    #[serde(default = "default_reopen_max_ms")]
    pub reopen_max_ms: u64,
    /// Frames accepted per second (token bucket, burst one second's worth); more are dropped
    /// and counted in `device_frames_dropped`, and reading pauses beyond this many maximal
    /// frames' bytes. 1 to 10000. Default 50.
    #[serde(default = "default_max_frames_per_s")]
    pub max_frames_per_s: u32,
    /// Probe → compartment map for `Temperature` messages.
    #[serde(default)]
    pub probes: Vec<ProbeConfig>,
}

impl DeviceConfig {
    /// Checks the ranges and the probe map.
    pub fn problems(&self) -> Vec<KeyProblem> {
        let mut out = Vec::new();
        if self.device.as_os_str().is_empty() {
            out.push(KeyProblem::at("device", "must not be empty"));
        }
        out.extend(KeyProblem::range("baud", self.baud, (1200, 4_000_000)));
        if let Some(p) =
            KeyProblem::range("heartbeat_timeout_s", self.heartbeat_timeout_s, (1, 86_400))
        {
            out.push(p);
        } else if self.heartbeat_timeout_s <= u64::from(self.heartbeat_interval_s) {
            out.push(KeyProblem::at(
                "heartbeat_timeout_s",
                format!(
                    "{} must be longer than heartbeat_interval_s ({})",
                    self.heartbeat_timeout_s, self.heartbeat_interval_s
                ),
            ));
        }
        out.extend(KeyProblem::range(
            "time_sync_interval_s",
            self.time_sync_interval_s,
            (1, 86_400),
        ));
        out.extend(KeyProblem::reopen_delays(
            self.reopen_min_ms,
            self.reopen_max_ms,
        ));
        out.extend(KeyProblem::range(
            "max_frames_per_s",
            self.max_frames_per_s,
            (1, 10_000),
        ));
        check_probes(&self.probes, &mut out);
        out
    }
}

fn default_name() -> String {
    "device".into()
}
fn default_baud() -> u32 {
    115_200
}
fn default_heartbeat_interval_s() -> u16 {
    10
}
fn default_heartbeat_timeout_s() -> u64 {
    30
}
fn default_temperature_interval_s() -> u16 {
    60
}
fn default_time_sync_interval_s() -> u64 {
    3600
}
fn default_reopen_min_ms() -> u64 {
    500
}
fn default_reopen_max_ms() -> u64 {
    30_000
}
fn default_max_frames_per_s() -> u32 {
    50
}

impl DeviceConfig {
    /// A config with every default, for `device` (tests and the config's key list).
    pub fn with_device(device: PathBuf) -> Self {
        Self {
            name: default_name(),
            device,
            baud: default_baud(),
            heartbeat_interval_s: default_heartbeat_interval_s(),
            heartbeat_timeout_s: default_heartbeat_timeout_s(),
            temperature_interval_s: default_temperature_interval_s(),
            time_sync_interval_s: default_time_sync_interval_s(),
            reopen_min_ms: default_reopen_min_ms(),
            reopen_max_ms: default_reopen_max_ms(),
            max_frames_per_s: default_max_frames_per_s(),
            probes: Vec::new(),
        }
    }
}

/// Why a session with the device ended.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The port could not be opened (missing, permissions, busy).
    #[error("cannot open {path}: {source}")]
    Open {
        /// The configured path.
        path: String,
        /// What the OS said.
        #[source]
        source: tokio_serial::Error,
    },
    /// The device went away: a read returned 0 bytes (unplugged USB serial, closed pty).
    #[error("{path}: device gone (end of file)")]
    Gone {
        /// The configured path.
        path: String,
    },
    /// Reading or writing the port failed.
    #[error("{path}: {source}")]
    Io {
        /// The configured path.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// The `device` source, ready to run.
#[derive(Debug)]
pub struct Device {
    cfg: DeviceConfig,
}

impl Device {
    /// A source for `cfg`. The port is opened by `run` (and reopened as needed), so a device
    /// that is not plugged in at start-up does not stop the gateway.
    pub fn new(cfg: &DeviceConfig) -> Self {
        Self { cfg: cfg.clone() }
    }

    fn settings(&self) -> Settings {
        Settings {
            source: self.cfg.name.clone(),
            heartbeat_timeout: Duration::from_secs(self.cfg.heartbeat_timeout_s),
            heartbeat_interval_s: self.cfg.heartbeat_interval_s,
            temperature_interval_s: self.cfg.temperature_interval_s,
            time_sync_interval: Duration::from_secs(self.cfg.time_sync_interval_s),
            max_frames_per_s: self.cfg.max_frames_per_s,
            probes: self.cfg.probes.clone(),
        }
    }

    fn path(&self) -> String {
        self.cfg.device.display().to_string()
    }
}

impl Source for Device {
    const NAME: &'static str = "device";

    fn component(&self) -> String {
        format!("{}:{}", Self::NAME, self.cfg.name)
    }

    async fn run(self, ctx: SourceContext, mut shutdown: Shutdown) -> Result<(), SourceError> {
        let component = self.component();
        let mut backoff = Backoff::new(
            Duration::from_millis(self.cfg.reopen_min_ms),
            Duration::from_millis(self.cfg.reopen_max_ms),
            STABLE_AFTER,
        );
        loop {
            let ended = match tokio_serial::new(self.path(), self.cfg.baud).open_native_async() {
                Ok(port) => {
                    info!(source = %component, path = %self.path(), "Device port open.");
                    backoff.connected(std::time::Instant::now());
                    self.session(port, &ctx, &mut shutdown, &component).await?
                }
                Err(source) => Some(DeviceError::Open {
                    path: self.path(),
                    source,
                }),
            };
            let Some(e) = ended else {
                return Ok(());
            };
            let delay = backoff.next_delay(std::time::Instant::now(), &mut rand::rng());
            if backoff.failures() <= 1 {
                warn!(source = %component, error = %e, "Device unavailable; reopening with backoff.");
            } else {
                debug!(source = %component, error = %e, ?delay, "Device still unavailable.");
            }
            ctx.health.set(
                &component,
                HealthState::Down,
                Some(e.to_string()),
                system_ms(),
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.recv() => return Ok(()),
            }
        }
    }
}

impl Device {
    /// Runs one session on an open port. `Ok(None)` on shutdown, `Ok(Some(e))` when the port
    /// must be reopened.
    async fn session(
        &self,
        mut port: SerialStream,
        ctx: &SourceContext,
        shutdown: &mut Shutdown,
        component: &str,
    ) -> Result<Option<DeviceError>, SourceError> {
        let path = self.path();
        let (mut session, mut out) =
            Session::open(self.settings(), Instant::now().into_std(), ctx.clock.now());
        let mut decoder = Decoder::<MAX_CONTENT>::new();
        let mut buf = vec![0u8; READ_CHUNK];
        let byte_rate = f64::from(self.cfg.max_frames_per_s) * MAX_FRAME as f64;
        let mut bytes = TokenBucket::new(byte_rate, Instant::now().into_std());
        let mut appends: JoinSet<(u32, bool)> = JoinSet::new();
        let mut health = None;
        let mut ended = None;
        loop {
            if let Some(e) = self.flush(&mut port, &mut out, &mut appends, ctx).await? {
                ended = Some(e);
                break;
            }
            self.report(&mut session, ctx, component, &mut health);
            let deadline = Instant::from_std(session.deadline());
            tokio::select! {
                read = port.read(&mut buf) => {
                    let n = match read {
                        Ok(0) => { ended = Some(DeviceError::Gone { path: path.clone() }); break; }
                        Ok(n) => n,
                        Err(source) => { ended = Some(DeviceError::Io { path: path.clone(), source }); break; }
                    };
                    let now = Instant::now().into_std();
                    let wall = ctx.clock.now();
                    for frame in decoder.feed(buf.get(..n).unwrap_or_default()) {
                        if let Err(e) = &frame {
                            debug!(source = %component, error = %e, "Invalid frame.");
                        }
                        session.on_frame(now, wall, frame, &mut out);
                    }
                    #[allow(clippy::cast_precision_loss)]
                    if let Err(wait) = bytes.try_take(now, n as f64) {
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = shutdown.recv() => break,
                        }
                    }
                }
                Some(done) = appends.join_next() => {
                    if let Ok((seq, stored)) = done {
                        session.on_stored(seq, stored, &mut out);
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    session.on_tick(Instant::now().into_std(), ctx.clock.now(), &mut out);
                }
                () = shutdown.recv() => break,
            }
        }
        // Answer what was accepted before leaving (the port may already be gone).
        while let Some(done) = appends.join_next().await {
            if let Ok((seq, stored)) = done {
                session.on_stored(seq, stored, &mut out);
            }
        }
        if ended.is_none() {
            if let Some(e) = self.flush(&mut port, &mut out, &mut appends, ctx).await? {
                debug!(source = %component, error = %e, "Final answers not written.");
            }
            self.report(&mut session, ctx, component, &mut health);
        } else {
            out.clear();
            self.report(&mut session, ctx, component, &mut health);
        }
        Ok(ended)
    }

    /// Carries out the session's outputs: frames are written, readings go to the pipeline,
    /// events are appended in the background.
    async fn flush(
        &self,
        port: &mut SerialStream,
        out: &mut Vec<Output>,
        appends: &mut JoinSet<(u32, bool)>,
        ctx: &SourceContext,
    ) -> Result<Option<DeviceError>, SourceError> {
        for o in out.drain(..) {
            match o {
                Output::Send(msg) => {
                    let mut frame = [0u8; MAX_FRAME];
                    let Ok(bytes) = encode(&msg, &mut frame) else {
                        continue;
                    };
                    match tokio::time::timeout(WRITE_TIMEOUT, port.write_all(bytes)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(source)) => {
                            return Ok(Some(DeviceError::Io {
                                path: self.path(),
                                source,
                            }));
                        }
                        Err(_) => {
                            debug!(path = %self.path(), ?msg, "Write timed out; frame dropped.")
                        }
                    }
                }
                Output::Reading(r) => {
                    ctx.readings
                        .send(r)
                        .await
                        .map_err(|_| SourceError::PipelineClosed)?;
                }
                Output::Store { device_seq, event } => {
                    let store = ctx.store.clone();
                    let path = self.path();
                    appends.spawn(async move {
                        match store.append_event(event).await {
                            Ok(_) => (device_seq, true),
                            Err(e) => {
                                error!(path = %path, device_seq, error = %e, "POD event not stored; the device will retry.");
                                (device_seq, false)
                            }
                        }
                    });
                }
            }
        }
        Ok(None)
    }

    /// Moves the session's counts into the process counters and its state into health (only
    /// when it changed).
    fn report(
        &self,
        session: &mut Session,
        ctx: &SourceContext,
        component: &str,
        last: &mut Option<(HealthState, Option<String>)>,
    ) {
        let t = session.take_tally();
        let c = &ctx.health.counters;
        Health::add(&c.device_frames_invalid, t.invalid);
        Health::add(&c.device_frames_dropped, t.dropped);
        Health::add(&c.probe_faults, t.probe_faults);
        let now = session_health(session);
        if last.as_ref() != Some(&now) {
            match &now {
                (HealthState::Down, Some(d)) => error!(source = %component, "{d}"),
                (HealthState::Degraded, Some(d)) => warn!(source = %component, "{d}"),
                _ => info!(source = %component, "Device healthy."),
            }
            ctx.health.set(component, now.0, now.1.clone(), system_ms());
            *last = Some(now);
        }
    }
}

fn session_health(session: &Session) -> (HealthState, Option<String>) {
    session.health(Instant::now().into_std())
}
