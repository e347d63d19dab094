//! The `gps` source task: a thin shell around [`GnssCore`] (serial) or [`GpsdCore`] (gpsd).
//!
//! ```text
//! open port / connect ──► read ─► GnssCore::push_at ─► Fix ─► Clock::observe_gnss ─► readings
//!   ▲   (backoff)        │        (or GpsdCore::push)         (fix UTC, arrival)     stamped with
//!   │                    └ silence ≥ epoch_timeout_ms ─► GnssCore::flush_at           the fix UTC
//!   └── read 0 bytes / I/O error / socket closed: health `down`, counted, reopen
//! ```
//!
//! Invariants:
//! - **One task per receiver**, which owns the port or socket. A port that is missing,
//!   unplugged (a read returns 0 bytes or an error) or fails, and a gpsd that refuses or
//!   closes, is closed and reopened with [`Backoff`] (`reopen_min_ms` … `reopen_max_ms`,
//!   jitter), by the configured path, so a `/dev/serial/by-id/...` link follows the receiver
//!   to its new tty. Between attempts the task sleeps: it never spins on a dead port.
//! - **Health shows the gap**: `gps:<name>` is `down` (with the error) from the moment the
//!   receiver went away until it is back; `degraded` while open without an accepted fix for
//!   `no_fix_timeout_s`; `ok` otherwise. Each loss counts in `gps_reopens`.
//! - **Time**: every accepted fix with a date feeds [`Clock::observe_gnss`] with its UTC time
//!   (week rollover corrected) and the instant its epoch's first bytes arrived. Its readings
//!   carry that UTC time when the clock took the sample; otherwise (no date yet, a time the
//!   clock rejects as an outlier) they carry [`Clock::now`], which is monotonic until the
//!   time is known and re-stamped by the pipeline (DESIGN §4).
//! - **Bounded**: one read buffer of [`READ_CHUNK`] bytes; the cores bound their line
//!   buffers. When the pipeline's channel is full the task waits and stops reading, so the
//!   kernel's tty buffer (or gpsd) holds the rest.
//! - Counters of the cores are added to the process counters (`gps_*`) as they move.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_serial::SerialPortBuilderExt;
use tracing::{debug, info, warn};
use waymark_wire::Reading;

use super::config::{GpsConfig, GpsMode, init_bytes};
use super::epoch::Fix;
use super::gpsd::{GpsdCore, GpsdStats, WATCH};
use super::readings::fix_readings;
use super::{GnssCore, GnssStats};
use crate::clock::{Clock, Observed, system_ms};
use crate::health::{Health, HealthState};
use crate::shutdown::Shutdown;
use crate::sources::{Source, SourceContext, SourceError};
use crate::uplink::backoff::Backoff;

/// Bytes read at once.
pub const READ_CHUNK: usize = 4096;
/// Longest time an init string write or a gpsd connect may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// A receiver open for this long resets the reopen backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// How often health is re-evaluated while nothing arrives.
const HEALTH_TICK: Duration = Duration::from_secs(1);

/// Why a session with the receiver ended.
#[derive(Debug, thiserror::Error)]
pub enum GpsError {
    /// The port could not be opened (missing, permissions, busy).
    #[error("cannot open {path}: {source}")]
    Open {
        /// The configured path.
        path: String,
        /// What the OS said.
        #[source]
        source: tokio_serial::Error,
    },
    /// gpsd could not be reached.
    #[error("cannot connect to gpsd at {addr}: {reason}")]
    Connect {
        /// The configured `host:port`.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The receiver went away: a read returned 0 bytes (unplugged USB, closed pty, gpsd
    /// closed the connection).
    #[error("{path}: receiver gone (end of file)")]
    Gone {
        /// The configured path or address.
        path: String,
    },
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The configured path or address.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// The `gps` source, ready to run.
#[derive(Debug)]
pub struct Gps {
    cfg: GpsConfig,
    init: Vec<Vec<u8>>,
}

impl Gps {
    /// A source for `cfg` (validated by the config loader: init strings that do not parse
    /// are left out). The port is opened by `run`, so a receiver that is not plugged in at
    /// start-up does not stop the gateway.
    pub fn new(cfg: &GpsConfig) -> Self {
        Self {
            cfg: cfg.clone(),
            init: cfg.init.iter().filter_map(|s| init_bytes(s).ok()).collect(),
        }
    }

    fn path(&self) -> String {
        match self.cfg.mode {
            GpsMode::Serial => self.cfg.device.display().to_string(),
            GpsMode::Gpsd => format!("gpsd {}", self.cfg.gpsd),
        }
    }
}

impl Source for Gps {
    const NAME: &'static str = "gps";

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
        let mut out = Output::new(&self.cfg, component.clone());
        loop {
            let ended = match self.cfg.mode {
                GpsMode::Serial => {
                    match tokio_serial::new(self.path(), self.cfg.baud).open_native_async() {
                        Ok(port) => {
                            info!(source = %component, path = %self.path(), "GNSS receiver open.");
                            backoff.connected(Instant::now());
                            self.serial(port, &ctx, &mut shutdown, &mut out).await?
                        }
                        Err(source) => Some(GpsError::Open {
                            path: self.path(),
                            source,
                        }),
                    }
                }
                GpsMode::Gpsd => match self.connect().await {
                    Ok(stream) => {
                        info!(source = %component, addr = %self.cfg.gpsd, "Connected to gpsd.");
                        backoff.connected(Instant::now());
                        self.gpsd(stream, &ctx, &mut shutdown, &mut out).await?
                    }
                    Err(e) => Some(e),
                },
            };
            let Some(e) = ended else {
                return Ok(());
            };
            Health::add(&ctx.health.counters.gps_reopens, 1);
            let delay = backoff.next_delay(Instant::now(), &mut rand::rng());
            if backoff.failures() <= 1 {
                warn!(source = %component, error = %e, "GNSS receiver unavailable; reopening with backoff.");
            } else {
                debug!(source = %component, error = %e, ?delay, "GNSS receiver still unavailable.");
            }
            out.set_health(&ctx, HealthState::Down, Some(e.to_string()));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.recv() => return Ok(()),
            }
        }
    }
}

impl Gps {
    async fn connect(&self) -> Result<TcpStream, GpsError> {
        let err = |reason: String| GpsError::Connect {
            addr: self.cfg.gpsd.clone(),
            reason,
        };
        let mut stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(&self.cfg.gpsd))
            .await
            .map_err(|_| err("timed out".into()))?
            .map_err(|e| err(e.to_string()))?;
        tokio::time::timeout(IO_TIMEOUT, stream.write_all(WATCH))
            .await
            .map_err(|_| err("?WATCH timed out".into()))?
            .map_err(|e| err(e.to_string()))?;
        Ok(stream)
    }

    /// One session on an open serial port. `Ok(None)` on shutdown, `Ok(Some(e))` when the
    /// port must be reopened.
    async fn serial(
        &self,
        mut port: tokio_serial::SerialStream,
        ctx: &SourceContext,
        shutdown: &mut Shutdown,
        out: &mut Output,
    ) -> Result<Option<GpsError>, SourceError> {
        let path = self.path();
        for bytes in &self.init {
            match tokio::time::timeout(IO_TIMEOUT, port.write_all(bytes)).await {
                Ok(Ok(())) => {}
                Ok(Err(source)) => return Ok(Some(GpsError::Io { path, source })),
                Err(_) => warn!(source = %out.component, "Init string write timed out."),
            }
        }
        let mut core = GnssCore::new(self.cfg.core());
        let mut reported = GnssStats::default();
        let epoch_timeout = Duration::from_millis(self.cfg.epoch_timeout_ms);
        out.opened(ctx);
        let mut buf = vec![0u8; READ_CHUNK];
        let mut fixes: Vec<(Fix, Instant)> = Vec::new();
        let mut pending = false;
        loop {
            let wait = if pending { epoch_timeout } else { HEALTH_TICK };
            let ended = tokio::select! {
                read = port.read(&mut buf) => match read {
                    Ok(0) => Some(GpsError::Gone { path: path.clone() }),
                    Ok(n) => {
                        let at = Instant::now();
                        core.push_at(buf.get(..n).unwrap_or_default(), at, |f, when| fixes.push((f, when)));
                        pending = true;
                        None
                    }
                    Err(source) => Some(GpsError::Io { path: path.clone(), source }),
                },
                () = tokio::time::sleep(wait) => {
                    if std::mem::take(&mut pending)
                        && let Some((f, when)) = core.flush_at()
                    {
                        fixes.push((f, when.unwrap_or_else(Instant::now)));
                    }
                    None
                }
                () = shutdown.recv() => {
                    if let Some((f, when)) = core.flush_at() {
                        fixes.push((f, when.unwrap_or_else(Instant::now)));
                    }
                    out.fixes(ctx, fixes.drain(..)).await?;
                    out.count_nmea(ctx, &core, &mut reported);
                    return Ok(None);
                }
            };
            if let Some(e) = core.take_last_error() {
                debug!(source = %out.component, error = %e, "Sentence rejected.");
            }
            if ended.is_some()
                && let Some((f, when)) = core.flush_at()
            {
                fixes.push((f, when.unwrap_or_else(Instant::now)));
            }
            out.fixes(ctx, fixes.drain(..)).await?;
            out.count_nmea(ctx, &core, &mut reported);
            if ended.is_some() {
                return Ok(ended);
            }
            out.check(ctx);
        }
    }

    /// One session with gpsd. `Ok(None)` on shutdown, `Ok(Some(e))` to reconnect.
    async fn gpsd(
        &self,
        mut stream: impl AsyncRead + Unpin,
        ctx: &SourceContext,
        shutdown: &mut Shutdown,
        out: &mut Output,
    ) -> Result<Option<GpsError>, SourceError> {
        let path = self.path();
        let mut core = GpsdCore::new(self.cfg.core().hygiene);
        let mut reported = GpsdStats::default();
        out.opened(ctx);
        let mut buf = vec![0u8; READ_CHUNK];
        let mut fixes: Vec<(Fix, Instant)> = Vec::new();
        loop {
            let ended = tokio::select! {
                read = stream.read(&mut buf) => match read {
                    Ok(0) => Some(GpsError::Gone { path: path.clone() }),
                    Ok(n) => {
                        let at = Instant::now();
                        core.push(buf.get(..n).unwrap_or_default(), |f| fixes.push((f, at)));
                        None
                    }
                    Err(source) => Some(GpsError::Io { path: path.clone(), source }),
                },
                () = tokio::time::sleep(HEALTH_TICK) => None,
                () = shutdown.recv() => return Ok(None),
            };
            out.fixes(ctx, fixes.drain(..)).await?;
            out.count_gpsd(ctx, &core, &mut reported);
            if ended.is_some() {
                return Ok(ended);
            }
            out.check(ctx);
        }
    }
}

/// What a session hands on: readings, clock samples, counters and health.
#[derive(Debug)]
struct Output {
    component: String,
    source: String,
    uere_m: f64,
    no_fix_timeout: Duration,
    /// When the receiver was opened, and the last accepted fix since.
    opened_at: Instant,
    last_fix: Option<Instant>,
    health: Option<(HealthState, Option<String>)>,
}

impl Output {
    fn new(cfg: &GpsConfig, component: String) -> Self {
        Self {
            component,
            source: cfg.name.clone(),
            uere_m: cfg.uere_m,
            no_fix_timeout: Duration::from_secs(cfg.no_fix_timeout_s),
            opened_at: Instant::now(),
            last_fix: None,
            health: None,
        }
    }

    fn opened(&mut self, ctx: &SourceContext) {
        self.opened_at = Instant::now();
        self.last_fix = None;
        self.set_health(ctx, HealthState::Ok, Some("open, waiting for a fix".into()));
    }

    /// Stamps each fix, feeds the clock and sends the readings (waiting while the pipeline
    /// is full).
    async fn fixes(
        &mut self,
        ctx: &SourceContext,
        fixes: impl Iterator<Item = (Fix, Instant)>,
    ) -> Result<(), SourceError> {
        let mut readings: Vec<Reading> = Vec::new();
        for (fix, at) in fixes {
            let time = stamp(&ctx.clock, &fix, at);
            readings.extend(fix_readings(&fix, time, &self.source, self.uere_m));
            self.last_fix = Some(Instant::now());
        }
        for r in readings {
            ctx.readings
                .send(r)
                .await
                .map_err(|_| SourceError::PipelineClosed)?;
        }
        Ok(())
    }

    /// Re-evaluates health: `degraded` after `no_fix_timeout` without an accepted fix.
    fn check(&mut self, ctx: &SourceContext) {
        let since = self.last_fix.unwrap_or(self.opened_at);
        if since.elapsed() >= self.no_fix_timeout {
            let detail = match self.last_fix {
                Some(_) => format!("no accepted fix for {} s", self.no_fix_timeout.as_secs()),
                None => format!(
                    "open, no accepted fix in {} s",
                    self.no_fix_timeout.as_secs()
                ),
            };
            self.set_health(ctx, HealthState::Degraded, Some(detail));
        } else if self.last_fix.is_some() {
            self.set_health(ctx, HealthState::Ok, None);
        }
    }

    fn set_health(&mut self, ctx: &SourceContext, state: HealthState, detail: Option<String>) {
        let now = (state, detail);
        if self.health.as_ref() != Some(&now) {
            if self.health.as_ref().map(|h| h.0) != Some(now.0) {
                match now.0 {
                    HealthState::Ok => info!(source = %self.component, "GNSS receiver healthy."),
                    _ => {
                        warn!(source = %self.component, detail = ?now.1, "GNSS receiver {:?}.", now.0)
                    }
                }
            }
            ctx.health
                .set(&self.component, now.0, now.1.clone(), system_ms());
            self.health = Some(now);
        }
    }

    fn count_nmea(&self, ctx: &SourceContext, core: &GnssCore, reported: &mut GnssStats) {
        let s = core.stats();
        let c = &ctx.health.counters;
        let d = |now: u64, before: u64| now.saturating_sub(before);
        let (p, r) = (&s, &*reported);
        Health::add(&c.gps_sentences, d(p.parse.parsed, r.parse.parsed));
        Health::add(
            &c.gps_bad_checksum,
            d(p.parse.bad_checksum, r.parse.bad_checksum),
        );
        Health::add(&c.gps_invalid, d(p.parse.invalid, r.parse.invalid));
        Health::add(
            &c.gps_overlong,
            d(
                p.framer.overlong + p.framer.truncated,
                r.framer.overlong + r.framer.truncated,
            ),
        );
        Health::add(
            &c.gps_garbage_bytes,
            d(p.framer.garbage_bytes, r.framer.garbage_bytes),
        );
        add_hygiene(ctx, &p.hygiene, &r.hygiene);
        *reported = s;
    }

    fn count_gpsd(&self, ctx: &SourceContext, core: &GpsdCore, reported: &mut GpsdStats) {
        let s = core.stats();
        let c = &ctx.health.counters;
        Health::add(&c.gps_invalid, s.invalid.saturating_sub(reported.invalid));
        Health::add(
            &c.gps_overlong,
            s.overlong.saturating_sub(reported.overlong),
        );
        add_hygiene(ctx, &s.hygiene, &reported.hygiene);
        *reported = s;
    }
}

fn add_hygiene(
    ctx: &SourceContext,
    now: &super::hygiene::HygieneStats,
    before: &super::hygiene::HygieneStats,
) {
    let c = &ctx.health.counters;
    let d = |a: u64, b: u64| a.saturating_sub(b);
    Health::add(&c.gps_fixes, d(now.accepted, before.accepted));
    Health::add(&c.gps_rejected_no_fix, d(now.no_fix, before.no_fix));
    Health::add(
        &c.gps_rejected_null_island,
        d(now.null_island, before.null_island),
    );
    Health::add(&c.gps_rejected_hdop, d(now.hdop, before.hdop));
    Health::add(
        &c.gps_rejected_satellites,
        d(now.satellites, before.satellites),
    );
    Health::add(
        &c.gps_rejected_duplicate,
        d(now.duplicate, before.duplicate),
    );
    Health::add(
        &c.gps_rejected_jump,
        d(
            now.jump + now.out_of_order,
            before.jump + before.out_of_order,
        ),
    );
    Health::add(&c.gps_drift_collapsed, d(now.collapsed, before.collapsed));
}

/// The time to put on a fix's readings: its UTC time when the clock accepted it as a sample,
/// else the clock's own stamp (see the module docs).
pub fn stamp(clock: &Clock, fix: &Fix, arrived: Instant) -> waymark_wire::Timestamp {
    match fix.utc_ms {
        Some(utc) => match clock.observe_gnss(utc, arrived) {
            Observed::Adopted | Observed::Smoothed | Observed::Stepped => utc,
            Observed::Outlier | Observed::Invalid => clock.now(),
        },
        None => clock.now(),
    }
}
