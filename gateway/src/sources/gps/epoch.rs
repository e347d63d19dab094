//! Epoch assembly: the sentences a receiver sends for one measurement (RMC, GGA, GNS, GLL,
//! VTG, GSA, ZDA, in any order and from any talker) become one [`Fix`].
//!
//! An epoch is identified by its UTC time of day. A timed sentence (RMC, GGA, GNS, GLL) with a
//! different time than the epoch being assembled closes that epoch and starts the next, so
//! a fix is handed over one epoch late (about one second at 1 Hz); [`EpochAssembler::flush`]
//! closes the last one at the end of a stream or after a silence. Untimed sentences (VTG, GSA)
//! join the epoch in progress. ZDA only supplies the date. The first value of each field in an
//! epoch wins, so a `GN` solution sentence is not overwritten by a later per-constellation one.
//!
//! The date comes from RMC or ZDA of the same epoch; without one, from the last date seen,
//! advanced by a day when the time of day wrapped past midnight. Until any date was seen,
//! [`Fix::utc_ms`] is `None` (DESIGN §4: nothing is published with a made-up time).

use waymark_wire::Timestamp;

use super::nmea::{Date, FixType, Mode, Quality, Sentence, TimeOfDay};

/// Half a day: a time of day going back by more than this is taken as a midnight wrap.
const HALF_DAY_MS: u32 = TimeOfDay::DAY_MS / 2;

/// One epoch's combined solution. Every field is `None` when no sentence of the epoch said.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Fix {
    /// UTC time of day of the epoch.
    pub time: TimeOfDay,
    /// UTC milliseconds, when the date is known (see the module docs).
    pub utc_ms: Option<Timestamp>,
    /// Latitude, degrees north positive.
    pub lat: Option<f64>,
    /// Longitude, degrees east positive.
    pub lon: Option<f64>,
    /// Altitude above mean sea level, metres (GGA/GNS).
    pub altitude_m: Option<f64>,
    /// Speed over ground, km/h (RMC, else VTG).
    pub speed_kmh: Option<f64>,
    /// Course over ground, degrees true (RMC, else VTG).
    pub course_deg: Option<f64>,
    /// RMC/GLL status: `Some(false)` is the receiver saying "do not use".
    pub valid: Option<bool>,
    /// GGA quality.
    pub quality: Option<Quality>,
    /// Mode indicator (RMC, GNS, GLL, VTG).
    pub mode: Option<Mode>,
    /// GSA fix type.
    pub fix_type: Option<FixType>,
    /// Satellites used (GGA/GNS, else the count of ids in GSA).
    pub satellites: Option<u8>,
    /// Horizontal dilution of precision (GGA/GNS, else GSA).
    pub hdop: Option<f64>,
    /// Position dilution of precision (GSA).
    pub pdop: Option<f64>,
    /// Vertical dilution of precision (GSA).
    pub vdop: Option<f64>,
}

/// Counters of the assembler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EpochStats {
    /// Epochs handed over.
    pub epochs: u64,
    /// Timed sentences without a time (cold start): not assignable to an epoch, dropped.
    pub untimed: u64,
}

/// Combines the sentences of one epoch. Sans-IO.
#[derive(Debug, Default)]
pub struct EpochAssembler {
    /// The epoch in progress and its date from RMC/ZDA, if any.
    current: Option<(Fix, Option<Date>)>,
    /// Whether the epoch in progress has a position sentence (a ZDA-only epoch is not a fix).
    has_position: bool,
    /// Day number (since 1970) and time of day of the last epoch with a known date.
    last_day: Option<(i64, TimeOfDay)>,
    stats: EpochStats,
}

impl EpochAssembler {
    /// An empty assembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counters so far.
    pub fn stats(&self) -> EpochStats {
        self.stats
    }

    /// Time of day of the epoch in progress, if one is open (the source notes when each
    /// epoch's first sentence arrived, for the clock).
    pub fn current_time(&self) -> Option<TimeOfDay> {
        self.current.as_ref().map(|(f, _)| f.time)
    }

    /// Adds a sentence; returns the previous epoch when this sentence starts a new one.
    pub fn push(&mut self, s: &Sentence) -> Option<Fix> {
        let (time, positional) = match s {
            Sentence::Rmc(r) => (r.time, true),
            Sentence::Gga(g) => (g.time, true),
            Sentence::Gns(g) => (g.time, true),
            Sentence::Gll(g) => (g.time, true),
            Sentence::Zda(z) => (z.time, false),
            Sentence::Vtg(_) | Sentence::Gsa(_) => (None, false),
            Sentence::Gsv(_) => return None,
        };
        let mut done = None;
        match (time, s) {
            (Some(t), _) => {
                if self.current.as_ref().is_some_and(|(f, _)| f.time != t) {
                    done = self.flush();
                }
                if self.current.is_none() {
                    self.current = Some((
                        Fix {
                            time: t,
                            ..Fix::default()
                        },
                        None,
                    ));
                }
            }
            (None, Sentence::Vtg(_) | Sentence::Gsa(_)) => {}
            (None, _) => {
                self.stats.untimed += 1;
                return None;
            }
        }
        let Some((fix, date)) = self.current.as_mut() else {
            // An untimed sentence before any epoch: nothing to attach it to.
            return done;
        };
        self.has_position |= positional;
        merge(fix, date, s);
        done
    }

    /// Closes the epoch in progress, if it has a position sentence.
    pub fn flush(&mut self) -> Option<Fix> {
        let (mut fix, date) = self.current.take()?;
        let has_position = std::mem::take(&mut self.has_position);
        let day = match (date.and_then(Date::days_since_epoch), self.last_day) {
            (Some(day), _) => Some(day),
            (None, Some((day, last))) if fix.time.ms() + HALF_DAY_MS < last.ms() => Some(day + 1),
            (None, Some((day, _))) => Some(day),
            (None, None) => None,
        };
        if let Some(day) = day {
            self.last_day = Some((day, fix.time));
            fix.utc_ms = Some(day * i64::from(TimeOfDay::DAY_MS) + i64::from(fix.time.ms()));
        }
        if !has_position {
            return None;
        }
        self.stats.epochs += 1;
        Some(fix)
    }
}

fn fill<T>(slot: &mut Option<T>, v: Option<T>) {
    if slot.is_none() {
        *slot = v;
    }
}

fn merge(fix: &mut Fix, date: &mut Option<Date>, s: &Sentence) {
    match s {
        Sentence::Rmc(r) => {
            fill(&mut fix.valid, r.valid);
            fill_position(fix, r.lat, r.lon);
            fill(&mut fix.speed_kmh, r.speed_kmh);
            fill(&mut fix.course_deg, r.course_deg);
            fill(&mut fix.mode, r.mode);
            fill(date, r.date);
        }
        Sentence::Gga(g) => {
            fill_position(fix, g.lat, g.lon);
            fill(&mut fix.quality, g.quality);
            fill(&mut fix.satellites, g.satellites);
            fill(&mut fix.hdop, g.hdop);
            fill(&mut fix.altitude_m, g.altitude_m);
        }
        Sentence::Gns(g) => {
            fill_position(fix, g.lat, g.lon);
            fill(&mut fix.mode, g.mode);
            fill(&mut fix.satellites, g.satellites);
            fill(&mut fix.hdop, g.hdop);
            fill(&mut fix.altitude_m, g.altitude_m);
        }
        Sentence::Gll(g) => {
            fill(&mut fix.valid, g.valid);
            fill_position(fix, g.lat, g.lon);
            fill(&mut fix.mode, g.mode);
        }
        Sentence::Vtg(v) => {
            fill(&mut fix.speed_kmh, v.speed_kmh);
            fill(&mut fix.course_deg, v.course_deg);
            fill(&mut fix.mode, v.mode);
        }
        Sentence::Gsa(g) => {
            fill(&mut fix.fix_type, g.fix_type);
            fill(&mut fix.hdop, g.hdop);
            fill(&mut fix.pdop, g.pdop);
            fill(&mut fix.vdop, g.vdop);
            if g.used > 0 {
                fill(&mut fix.satellites, Some(g.used));
            }
        }
        Sentence::Zda(z) => fill(date, z.date),
        Sentence::Gsv(_) => {}
    }
}

/// Latitude and longitude come as a pair from one sentence, never half from each.
fn fill_position(fix: &mut Fix, lat: Option<f64>, lon: Option<f64>) {
    if let (None, None, Some(lat), Some(lon)) = (fix.lat, fix.lon, lat, lon) {
        fix.lat = Some(lat);
        fix.lon = Some(lon);
    }
}
