//! `[[sources]] type = "candump"`: replays a can-utils candump log through the same decode
//! path as the SocketCAN source. Used by the demo, tests and benchmarks.
//!
//! Invariants:
//! - Lines are read with a bound ([`candump::MAX_LINE`]); a bad line is counted in
//!   `lines_rejected`, logged (the first [`LOGGED_ERRORS`] per pass) as
//!   `file:line:column: message`, shown in health, and skipped: one bad line never stops a
//!   replay.
//! - Pacing follows the log's own stamps divided by `speed` ([`candump::Pacer`]); lines
//!   without a stamp (the default and old formats) go as fast as possible.
//! - Stamps: see the parent module (gateway clock; in as-fast mode the clock at the start of
//!   the pass plus the log's offset).

use std::path::Path;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tracing::{info, warn};

use super::candump::{self, Pacer};
use super::config::CandumpConfig;
use super::decode::Decoder;
use super::{CanError, deliver};
use crate::clock::system_ms;
use crate::health::{Health, HealthState};
use crate::shutdown::Shutdown;
use crate::sources::{Source, SourceContext, SourceError};

/// Bad lines logged per pass (all are counted).
pub const LOGGED_ERRORS: usize = 10;
/// Interface name used for lines that name none (the old format).
pub const DEFAULT_IFACE: &str = "can0";

/// The `candump` source.
#[derive(Debug)]
pub struct Candump {
    cfg: CandumpConfig,
    decoder: Decoder,
}

impl Candump {
    /// Loads the DBC files; the log is opened when it runs.
    ///
    /// # Errors
    /// A DBC file or a mapped signal is unusable.
    pub fn new(cfg: &CandumpConfig) -> Result<Self, CanError> {
        let decoder = Decoder::new(&cfg.name, &cfg.decode()).map_err(|source| CanError::Dbc {
            component: format!("candump:{}", cfg.name),
            source,
        })?;
        Ok(Candump {
            cfg: cfg.clone(),
            decoder,
        })
    }
}

/// Reads one line of at most `max` bytes plus its newline into `buf` (the rest of a longer
/// line is read and dropped): `Ok(None)` at the end of the file, `Ok(Some(Err(len)))` for a
/// line that was too long.
async fn next_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<Result<(), usize>>> {
    buf.clear();
    let mut total = 0usize;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok((total > 0).then_some(if total > max { Err(total) } else { Ok(()) }));
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if total + take <= max + 1 {
            buf.extend_from_slice(&chunk[..take]);
        }
        total += take;
        r.consume(take);
        if done {
            return Ok(Some(if total > max + 1 { Err(total) } else { Ok(()) }));
        }
    }
}

impl Source for Candump {
    const NAME: &'static str = "candump";

    fn component(&self) -> String {
        format!("{}:{}", Self::NAME, self.cfg.name)
    }

    async fn run(mut self, ctx: SourceContext, mut shutdown: Shutdown) -> Result<(), SourceError> {
        let component = self.component();
        let path = self.cfg.path.clone();
        let shown = path.display().to_string();
        loop {
            let (frames, bad, last_error) =
                match self.pass(&ctx, &mut shutdown, &path, &component).await? {
                    Some(r) => r,
                    None => return Ok(()),
                };
            info!(source = %component, frames, bad, "Replay pass finished.");
            let (state, detail) = match &last_error {
                Some(e) => (
                    HealthState::Degraded,
                    Some(format!("{bad} bad lines; last: {e}")),
                ),
                None => (HealthState::Ok, None),
            };
            if !self.cfg.repeat {
                let detail = Some(format!(
                    "finished {shown}: {frames} frames{}",
                    detail.map(|d| format!(", {d}")).unwrap_or_default()
                ));
                ctx.health.set(&component, state, detail, system_ms());
                shutdown.recv().await;
                return Ok(());
            }
            ctx.health.set(&component, state, detail, system_ms());
            if frames == 0 {
                // An empty (or all-bad) log repeated would spin: wait a little per pass.
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    () = shutdown.recv() => return Ok(()),
                }
            }
        }
    }
}

impl Candump {
    /// One pass over the log: `None` when shutdown fired; else (frames, bad lines, last
    /// error).
    async fn pass(
        &mut self,
        ctx: &SourceContext,
        shutdown: &mut Shutdown,
        path: &Path,
        component: &str,
    ) -> Result<Option<(u64, u64, Option<String>)>, SourceError> {
        let shown = path.display().to_string();
        let file = match tokio::fs::File::open(path).await {
            Ok(f) => f,
            Err(e) => {
                let d = format!("cannot read {shown}: {e}");
                warn!(source = %component, "{d}");
                ctx.health
                    .set(component, HealthState::Down, Some(d), system_ms());
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                    () = shutdown.recv() => return Ok(None),
                }
                return Ok(Some((0, 0, None)));
            }
        };
        ctx.health.set(
            component,
            HealthState::Ok,
            Some(format!("replaying {shown}")),
            system_ms(),
        );
        let mut reader = tokio::io::BufReader::new(file);
        let mut buf = Vec::with_capacity(256);
        let mut pacer = Pacer::new(self.cfg.speed);
        let as_fast = self.cfg.speed <= 0.0 || self.cfg.speed.is_nan();
        let start = tokio::time::Instant::now();
        let stamp_base = ctx.clock.now();
        let mut first_us: Option<i64> = None;
        let (mut frames, mut bad, mut last_error) = (0u64, 0u64, None);
        let (mut readings, mut events) = (Vec::new(), Vec::new());
        let mut line_no = 0usize;
        loop {
            let got = tokio::select! {
                r = next_line(&mut reader, &mut buf, candump::MAX_LINE) => r,
                () = shutdown.recv() => return Ok(None),
            };
            let got = match got {
                Ok(Some(g)) => g,
                Ok(None) => break,
                Err(e) => {
                    let d = format!("{shown}: read failed: {e}");
                    warn!(source = %component, "{d}");
                    last_error = Some(d);
                    break;
                }
            };
            line_no += 1;
            let parsed = match got {
                Err(len) => Err(format!(
                    "{shown}:{line_no}:1: line of {len} bytes is longer than {}",
                    candump::MAX_LINE
                )),
                Ok(()) => match std::str::from_utf8(&buf) {
                    Err(e) => Err(format!(
                        "{shown}:{line_no}:{}: not UTF-8 text",
                        e.valid_up_to() + 1
                    )),
                    Ok(text) => candump::parse_line(text)
                        .map_err(|e| format!("{shown}:{line_no}:{}: {}", e.column, e.message)),
                },
            };
            let lf = match parsed {
                Ok(Some(lf)) => lf,
                Ok(None) => continue,
                Err(e) => {
                    bad += 1;
                    Health::add(&ctx.health.counters.lines_rejected, 1);
                    if bad as usize <= LOGGED_ERRORS {
                        warn!(source = %component, "Bad candump line: {e}");
                    }
                    ctx.health.set(
                        component,
                        HealthState::Degraded,
                        Some(e.clone()),
                        system_ms(),
                    );
                    last_error = Some(e);
                    continue;
                }
            };
            let elapsed = start.elapsed().as_millis() as u64;
            if let Some(due) = pacer.due_ms(lf.time_us, elapsed) {
                let at = start + std::time::Duration::from_millis(due);
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = shutdown.recv() => return Ok(None),
                }
            }
            let log_ms = lf.time_us.map(|t| {
                let first = *first_us.get_or_insert(t);
                (t - first).max(0) / 1000
            });
            let (now_ms, stamp) = match (as_fast, log_ms) {
                (true, Some(ms)) => (ms as u64, stamp_base.saturating_add(ms)),
                _ => (start.elapsed().as_millis() as u64, ctx.clock.now()),
            };
            let iface = if lf.iface.is_empty() {
                DEFAULT_IFACE
            } else {
                lf.iface
            };
            let bus = self.decoder.bus(iface);
            let frame = lf.frame;
            frames += 1;
            Health::add(&ctx.health.counters.can_frames, 1);
            if frame.kind == super::frame::Kind::Error {
                Health::add(&ctx.health.counters.can_error_frames, 1);
            }
            self.decoder
                .on_frame(now_ms, stamp, bus, &frame, &mut readings, &mut events);
            if !readings.is_empty() || !events.is_empty() {
                deliver(
                    ctx,
                    &mut self.decoder,
                    component,
                    &self.cfg.name,
                    &mut readings,
                    &mut events,
                )
                .await?;
            }
        }
        Ok(Some((frames, bad, last_error)))
    }
}

#[cfg(test)]
mod tests;
