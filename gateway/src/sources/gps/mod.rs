//! GNSS from NMEA 0183: the sans-IO core of the `gps` source.
//!
//! ```text
//! bytes ─► Framer ─► nmea::parse ─► EpochAssembler ─► Hygiene ─► fix_readings ─► Reading
//!          (any      (checksum,      (RMC+GGA+GSA+…    (no fix, 0/0,            (VSS names)
//!          chunking)  typed fields)  of one epoch)     HDOP, jumps, drift)
//! ```
//!
//! [`GnssCore`] chains the first four and keeps every counter; the serial (tokio-serial) and
//! gpsd tasks that feed it bytes are thin shells around it and are not here yet, nor is the
//! `[[sources]]` config: this module is not wired into `sources::spawn_all`.
//!
//! # Layout
//! - [`framer`]: bytes → sentences; resynchronises after garbage, NUL runs and binary frames;
//!   bounded line length.
//! - [`nmea`]: sentence → typed struct; checksum; talker-agnostic; empty fields are `None`.
//! - [`epoch`]: sentences of one epoch (same time of day) → one [`epoch::Fix`].
//! - [`hygiene`]: which fixes may become readings; each rule configurable and counted.
//! - [`readings`]: accepted fix → `Reading`s with VSS names.
//!
//! Why our own parser and not the `nmea` crate: see CRATES.md §5 (status `V` and empty fields
//! must never become 0, 0; talker-agnostic; a small, fuzzable, allocation-free parser).

pub mod epoch;
pub mod framer;
pub mod hygiene;
pub mod nmea;
pub mod readings;

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
            last_error: None,
        }
    }

    /// Feeds bytes as they came from the device; calls `on_fix` with each accepted fix (one
    /// epoch late, see [`epoch`]).
    pub fn push(&mut self, bytes: &[u8], mut on_fix: impl FnMut(Fix)) {
        let GnssCore {
            framer,
            options,
            epochs,
            hygiene,
            parse,
            last_error,
        } = self;
        framer.push(bytes, |line| match nmea::parse(line, *options) {
            Ok(p) => {
                parse.parsed += 1;
                if let Some(fix) = epochs.push(&p.sentence)
                    && let Ok(fix) = hygiene.check(fix)
                {
                    on_fix(fix);
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
        let fix = self.epochs.flush()?;
        self.hygiene.check(fix).ok()
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

#[cfg(test)]
mod tests;
