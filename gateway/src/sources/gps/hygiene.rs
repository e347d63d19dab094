//! GNSS hygiene: which assembled fixes may become readings. Sans-IO: each call gets one
//! [`Fix`] and uses the fix's own time, never the wall clock.
//!
//! Rules, in the order they are checked (each configurable in [`HygieneConfig`] and counted in
//! [`HygieneStats`]):
//!
//! 1. **No fix**: no position, RMC/GLL status `V`, GGA quality 0 or not measured (estimated,
//!    manual, simulator), mode indicator `N`/`E`/`M`/`S`, or GSA fix type 1.
//! 2. **Null island**: latitude and longitude both within [`HygieneConfig::null_island_deg`] of 0.
//! 3. **HDOP** above [`HygieneConfig::max_hdop`] (only when the epoch reports an HDOP).
//! 4. **Satellites** below [`HygieneConfig::min_satellites`] (only when reported).
//! 5. **Duplicate**: the same epoch time as the last accepted fix.
//! 6. **Out of order**: an epoch time before the last accepted one.
//! 7. **Jump**: the distance from the last accepted fix over the time between them implies a
//!    speed above [`HygieneConfig::max_speed_kmh`]. After
//!    [`HygieneConfig::reset_after_rejections`] rejections in a row by rules 6–7 the reference is
//!    reset to the new fix and it is accepted (counted in `resets`): otherwise a single
//!    wrong fix that slipped through, or a receiver that restarted its clock, would block all
//!    later ones.
//! 8. **Static drift**: while the speed is below [`HygieneConfig::stop_speed_kmh`], positions
//!    within [`HygieneConfig::stop_radius_m`] of where the vehicle stopped are replaced by that
//!    point and the course is dropped (it is noise at rest). The fix is accepted; `collapsed`
//!    counts these.

use super::epoch::Fix;
use super::nmea::{FixType, Quality};

/// Mean Earth radius (IUGG), metres.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Hygiene settings; `None` turns a threshold rule off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HygieneConfig {
    /// Reject positions this close (degrees, both axes) to 0°, 0°. `None`: rule off.
    pub null_island_deg: Option<f64>,
    /// Largest HDOP accepted.
    pub max_hdop: Option<f64>,
    /// Fewest satellites accepted.
    pub min_satellites: Option<u8>,
    /// Reject a second fix with the same epoch time.
    pub reject_duplicates: bool,
    /// Largest speed (km/h) a jump between accepted fixes may imply.
    pub max_speed_kmh: Option<f64>,
    /// Rejections in a row by the jump/out-of-order rules after which the next fix becomes
    /// the new reference.
    pub reset_after_rejections: u32,
    /// Below this speed (km/h) the vehicle counts as stopped. `None`: drift rule off.
    pub stop_speed_kmh: Option<f64>,
    /// Positions within this radius (m) of the stop point collapse onto it.
    pub stop_radius_m: f64,
}

impl Default for HygieneConfig {
    fn default() -> Self {
        HygieneConfig {
            null_island_deg: Some(1e-4),
            max_hdop: Some(10.0),
            min_satellites: Some(4),
            reject_duplicates: true,
            max_speed_kmh: Some(300.0),
            reset_after_rejections: 5,
            stop_speed_kmh: Some(2.0),
            stop_radius_m: 25.0,
        }
    }
}

/// Why a fix was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// Rule 1.
    NoFix,
    /// Rule 2.
    NullIsland,
    /// Rule 3.
    Hdop,
    /// Rule 4.
    Satellites,
    /// Rule 5.
    Duplicate,
    /// Rule 6.
    OutOfOrder,
    /// Rule 7.
    Jump,
}

/// Counters per rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HygieneStats {
    /// Fixes accepted (including collapsed ones and resets).
    pub accepted: u64,
    /// Rule 1 rejections.
    pub no_fix: u64,
    /// Rule 2 rejections.
    pub null_island: u64,
    /// Rule 3 rejections.
    pub hdop: u64,
    /// Rule 4 rejections.
    pub satellites: u64,
    /// Rule 5 rejections.
    pub duplicate: u64,
    /// Rule 6 rejections.
    pub out_of_order: u64,
    /// Rule 7 rejections.
    pub jump: u64,
    /// Accepted fixes that became the new reference after repeated rule 6–7 rejections.
    pub resets: u64,
    /// Accepted fixes whose position was collapsed onto the stop point (rule 8).
    pub collapsed: u64,
}

/// The last accepted fix, the reference of rules 5–7.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    /// Epoch time in ms: UTC when known, else time of day.
    t: i64,
    /// Whether `t` is UTC (else time of day).
    utc: bool,
    lat: f64,
    lon: f64,
}

/// Applies the rules to a stream of fixes. Sans-IO.
#[derive(Debug)]
pub struct Hygiene {
    config: HygieneConfig,
    stats: HygieneStats,
    last: Option<Anchor>,
    rejected_in_row: u32,
    /// Where the vehicle stopped, while it is stopped.
    stop: Option<(f64, f64)>,
}

impl Hygiene {
    /// Hygiene with these settings.
    pub fn new(config: HygieneConfig) -> Self {
        Hygiene {
            config,
            stats: HygieneStats::default(),
            last: None,
            rejected_in_row: 0,
            stop: None,
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> HygieneStats {
        self.stats
    }

    /// Checks one fix. Returns it (position possibly collapsed onto the stop point) when
    /// accepted.
    ///
    /// # Errors
    /// The rule that rejected it (also counted).
    pub fn check(&mut self, fix: Fix) -> Result<Fix, Rejection> {
        let r = self.rules(fix);
        let s = &mut self.stats;
        match r {
            Ok(_) => s.accepted += 1,
            Err(Rejection::NoFix) => s.no_fix += 1,
            Err(Rejection::NullIsland) => s.null_island += 1,
            Err(Rejection::Hdop) => s.hdop += 1,
            Err(Rejection::Satellites) => s.satellites += 1,
            Err(Rejection::Duplicate) => s.duplicate += 1,
            Err(Rejection::OutOfOrder) => s.out_of_order += 1,
            Err(Rejection::Jump) => s.jump += 1,
        }
        r
    }

    fn rules(&mut self, mut fix: Fix) -> Result<Fix, Rejection> {
        let c = self.config;
        let (Some(lat), Some(lon)) = (fix.lat, fix.lon) else {
            return Err(Rejection::NoFix);
        };
        let no_fix = fix.valid == Some(false)
            || fix
                .quality
                .is_some_and(|q| !q.is_measured() || q == Quality::Invalid)
            || fix.mode.is_some_and(|m| !m.is_measured())
            || fix.fix_type == Some(FixType::None);
        if no_fix {
            return Err(Rejection::NoFix);
        }
        if c.null_island_deg
            .is_some_and(|eps| lat.abs() <= eps && lon.abs() <= eps)
        {
            return Err(Rejection::NullIsland);
        }
        if let (Some(max), Some(h)) = (c.max_hdop, fix.hdop)
            && h > max
        {
            return Err(Rejection::Hdop);
        }
        if let (Some(min), Some(n)) = (c.min_satellites, fix.satellites)
            && n < min
        {
            return Err(Rejection::Satellites);
        }
        let (t, utc) = match fix.utc_ms {
            Some(ms) => (ms, true),
            None => (i64::from(fix.time.ms()), false),
        };
        if let Some(last) = self.last {
            let dt_ms = if utc && last.utc {
                t - last.t
            } else {
                // Compare times of day, across midnight.
                let day = i64::from(super::nmea::TimeOfDay::DAY_MS);
                let d = (t - last.t).rem_euclid(day);
                if d > day / 2 { d - day } else { d }
            };
            if dt_ms == 0 && c.reject_duplicates {
                return Err(Rejection::Duplicate);
            }
            if dt_ms < 0 {
                if !self.reset() {
                    return Err(Rejection::OutOfOrder);
                }
            } else if let Some(max) = c.max_speed_kmh {
                let metres = distance_m(last.lat, last.lon, lat, lon);
                #[allow(clippy::cast_precision_loss)] // ms differences are far below 2^53.
                let hours = dt_ms as f64 / 3_600_000.0;
                // dt 0 (duplicates allowed): any movement at all is infinitely fast.
                let kmh = if hours > 0.0 {
                    metres / 1000.0 / hours
                } else {
                    f64::INFINITY
                };
                if metres > 0.0 && kmh > max && !self.reset() {
                    return Err(Rejection::Jump);
                }
            }
        }
        self.rejected_in_row = 0;
        self.last = Some(Anchor { t, utc, lat, lon });

        if let Some(stop_kmh) = c.stop_speed_kmh {
            match fix.speed_kmh {
                Some(v) if v < stop_kmh => match self.stop {
                    Some((slat, slon)) if distance_m(slat, slon, lat, lon) <= c.stop_radius_m => {
                        fix.lat = Some(slat);
                        fix.lon = Some(slon);
                        fix.course_deg = None;
                        self.stats.collapsed += 1;
                    }
                    _ => self.stop = Some((lat, lon)),
                },
                _ => self.stop = None,
            }
        }
        Ok(fix)
    }

    /// Counts a rule 6–7 rejection; true when it is time to reset the reference instead.
    fn reset(&mut self) -> bool {
        self.rejected_in_row += 1;
        if self.rejected_in_row > self.config.reset_after_rejections {
            self.stats.resets += 1;
            self.stop = None;
            true
        } else {
            false
        }
    }
}

/// Great-circle distance (haversine), metres.
pub fn distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests;
