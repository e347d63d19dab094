//! GNSS from NMEA 0183: the sans-IO core of the `gps` source.
//!
//! ```text
//! bytes ─► Framer ─► nmea::parse ─► EpochAssembler ─► Hygiene ─► fix_readings ─► Reading
//!          (any      (checksum,      (RMC+GGA+GSA+…    (no fix, 0/0,            (VSS names)
//!          chunking)  typed fields)  of one epoch)     HDOP, jumps, drift)
//! ```
//!
//! [`GnssCore`] chains the first four (and the GPS week [`rollover`] correction) and keeps
//! every counter. The `gps` source ([`source`]: a serial receiver through tokio-serial, or a
//! gpsd client through [`gpsd`]) is a thin shell around it; `docs/gps.md` is the user
//! documentation.
//!
//! # Layout
//! - [`framer`]: bytes → sentences; resynchronises after garbage, NUL runs and binary frames;
//!   bounded line length.
//! - [`nmea`]: sentence → typed struct; checksum; talker-agnostic; empty fields are `None`.
//! - [`epoch`]: sentences of one epoch (same time of day) → one [`epoch::Fix`].
//! - [`hygiene`]: which fixes may become readings; each rule configurable and counted.
//! - [`readings`]: accepted fix → `Reading`s with VSS names.
//! - [`rollover`]: GPS week rollover correction of fix dates.
//! - [`config`]: `[[sources]] type = "gps"`.
//! - [`gpsd`]: gpsd's JSON (TPV, SKY) → [`epoch::Fix`], sans-IO.
//! - [`pty`]: a pseudo-terminal playing a receiver (demo, tests).
//! - [`source`]: the task: serial port or gpsd socket, reopen with backoff, health, clock.
//!
//! Why our own parser and not the `nmea` crate: see CRATES.md §5 (status `V` and empty fields
//! must never become 0, 0; talker-agnostic; a small, fuzzable, allocation-free parser).

pub mod config;
pub mod epoch;
pub mod framer;
pub mod gpsd;
pub mod hygiene;
pub mod nmea;
pub mod pty;
pub mod readings;
pub mod rollover;
pub mod source;

use std::time::Instant;

pub use config::{GpsConfig, GpsMode};
pub use source::Gps;

use epoch::{EpochAssembler, EpochStats, Fix};
use framer::{Framer, FramerConfig, FramerStats};
use hygiene::{Hygiene, HygieneConfig, HygieneStats};
use nmea::{NmeaError, ParseOptions};

/// Settings of the whole core.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GnssConfig {
    /// Line length cap.
    pub framer: FramerConfig,
    /// Checksum policy.
    pub parse: ParseOptions,
    /// Hygiene rules.
    pub hygiene: HygieneConfig,
    /// GPS week rollover: fix times before this (UTC ms) move forward by 1024 weeks
    /// ([`rollover::correct`]) before hygiene sees them. `None`: no correction.
    pub rollover_floor_ms: Option<i64>,
}

/// Parser counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseStats {
    /// Sentences parsed into a [`nmea::Sentence`].
    pub parsed: u64,
    /// Sentences rejected for a missing, malformed or wrong checksum.
    pub bad_checksum: u64,
    /// Sentences with a good checksum but a bad field or address.
    pub invalid: u64,
    /// Well-formed sentences of a kind we do not use (proprietary, GST, TXT, …).
    pub unsupported: u64,
}

/// All counters of a [`GnssCore`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GnssStats {
    /// Framing.
    pub framer: FramerStats,
    /// Parsing.
    pub parse: ParseStats,
    /// Epoch assembly.
    pub epoch: EpochStats,
    /// Hygiene.
    pub hygiene: HygieneStats,
}

/// Framer, parser, epoch assembler and hygiene in one sans-IO value: feed it bytes, get
/// accepted fixes.
#[derive(Debug)]
pub struct GnssCore {
    framer: Framer,
    options: ParseOptions,
    epochs: EpochAssembler,
    hygiene: Hygiene,
    parse: ParseStats,
    rollover_floor_ms: Option<i64>,
    /// When the first sentence of the epoch in progress arrived (`push_at`).
    epoch_at: Option<Instant>,
    /// The last parse error, for a rate-limited log line by the task around the core.
    last_error: Option<NmeaError>,
}

impl GnssCore {
    /// A core with these settings.
    pub fn new(config: GnssConfig) -> Self {
        GnssCore {
            framer: Framer::new(config.framer),
            options: config.parse,
            epochs: EpochAssembler::new(),
            hygiene: Hygiene::new(config.hygiene),
            parse: ParseStats::default(),
            rollover_floor_ms: config.rollover_floor_ms,
            epoch_at: None,
            last_error: None,
        }
    }

    /// Feeds bytes as they came from the device; calls `on_fix` with each accepted fix (one
    /// epoch late, see [`epoch`]).
    pub fn push(&mut self, bytes: &[u8], mut on_fix: impl FnMut(Fix)) {
        self.push_inner(bytes, None, |f, _| on_fix(f));
    }

    /// [`GnssCore::push`] for bytes that arrived at `at`: each fix comes with the time its
    /// epoch's first sentence arrived (what [`crate::clock::Clock::observe_gnss`] needs).
    pub fn push_at(&mut self, bytes: &[u8], at: Instant, on_fix: impl FnMut(Fix, Instant)) {
        let mut on_fix = on_fix;
        self.push_inner(bytes, Some(at), |f, when| on_fix(f, when.unwrap_or(at)));
    }

    fn push_inner(
        &mut self,
        bytes: &[u8],
        at: Option<Instant>,
        mut on_fix: impl FnMut(Fix, Option<Instant>),
    ) {
        let GnssCore {
            framer,
            options,
            epochs,
            hygiene,
            parse,
            rollover_floor_ms,
            epoch_at,
            last_error,
        } = self;
        framer.push(bytes, |line| match nmea::parse(line, *options) {
            Ok(p) => {
                parse.parsed += 1;
                let before = epochs.current_time();
                let done = epochs.push(&p.sentence);
                let started = epochs.current_time().is_some() && epochs.current_time() != before;
                let done_at = if started {
                    std::mem::replace(epoch_at, at)
                } else {
                    *epoch_at
                };
                if let Some(fix) = done
                    && let Ok(fix) = hygiene.check(roll(fix, *rollover_floor_ms))
                {
                    on_fix(fix, done_at);
                }
            }
            Err(e) => {
                match e {
                    NmeaError::Unsupported { .. } => parse.unsupported += 1,
                    e if e.is_checksum() => parse.bad_checksum += 1,
                    _ => parse.invalid += 1,
                }
                *last_error = Some(e);
            }
        });
    }

    /// Closes the epoch in progress (end of stream, or a silence longer than an epoch) and
    /// returns it when hygiene accepts it.
    pub fn flush(&mut self) -> Option<Fix> {
        self.flush_at().map(|(f, _)| f)
    }

    /// [`GnssCore::flush`] with the time the epoch's first sentence arrived, when the bytes
    /// came through [`GnssCore::push_at`].
    pub fn flush_at(&mut self) -> Option<(Fix, Option<Instant>)> {
        let at = self.epoch_at.take();
        let fix = self.epochs.flush()?;
        let fix = self.hygiene.check(roll(fix, self.rollover_floor_ms)).ok()?;
        Some((fix, at))
    }

    /// Every counter.
    pub fn stats(&self) -> GnssStats {
        GnssStats {
            framer: self.framer.stats(),
            parse: self.parse,
            epoch: self.epochs.stats(),
            hygiene: self.hygiene.stats(),
        }
    }

    /// Takes the last parse error (for logging), if any since the last call.
    pub fn take_last_error(&mut self) -> Option<NmeaError> {
        self.last_error.take()
    }
}

/// `fix` with its date rollover-corrected against `floor`.
fn roll(mut fix: Fix, floor: Option<i64>) -> Fix {
    if let (Some(t), Some(floor)) = (fix.utc_ms, floor) {
        fix.utc_ms = Some(rollover::correct(t, floor));
    }
    fix
}

#[cfg(test)]
mod source_tests;
#[cfg(test)]
mod tests;
