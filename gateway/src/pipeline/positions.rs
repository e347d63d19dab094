//! Adaptive position logging: which GNSS fixes are kept. Sans-IO.
//!
//! # What is kept
//! A *fix* is the position readings one source took at one time (latitude, longitude and the
//! signals of [`POSITION_SIGNALS`]; `Vehicle.Speed` too when it comes from a source that
//! reports positions). A fix is kept or dropped **whole**: a kept fix keeps all its position
//! signals, a dropped fix drops them all. Kept position readings bypass the per-signal
//! deadband filter (a kept point with its speed but not its heading would be useless); the
//! decision here replaces the filter for the position group.
//!
//! A fix is kept when any of these says so, measured against the last kept point:
//! - **forced**: the first fix; a change between moving and stopped; an ignition change;
//!   time going backwards (a clock step: the window is decided first); [`Positions::force`]
//!   (events). Forcing keeps the newest fix not yet kept, or, if there
//!   is none, the next one;
//! - **period**: at least `period_s` of the current profile since the last kept point (so
//!   kept points are never further apart than that, as long as fixes arrive);
//! - **distance**: at least `distance_m` away;
//! - **heading**: course changed by at least `heading_deg`, while at least
//!   `moving_speed_kmh` (a course at walking speed is noise);
//! - **speed**: speed changed by at least `speed_delta_kmh`;
//! - **curve** (moving only, `curve_error_m` > 0): the track reconstructed by joining kept
//!   points with straight lines would pass further than `curve_error_m` from a raw fix.
//!
//! There are two profiles: `moving` and `stopped`. The vehicle is moving once its speed
//! has stayed at or above `moving_speed_kmh` for `movement_delay_s`, and stopped once it has
//! stayed below for as long (so a stop at a traffic light does not flip the profile).
//!
//! # Curve logging: the opening window
//! Goal: the fewest points such that every raw fix lies within `curve_error_m` of the
//! polyline through the kept points, with bounded memory, online. The algorithm is the
//! *opening window* (sliding window) of line simplification: from the last kept point `A`,
//! raw fixes are collected while every one of them lies within the error of the segment from
//! `A` to the newest fix `P`. When a new `P` breaks that, the fix before it (`C`, for which
//! the window still held) is kept and becomes the new `A`. Every dropped fix therefore lies
//! within the error of the segment between the two kept points around it: the bound holds by
//! construction, for every fix, not on average.
//!
//! Why this and not the alternatives: Douglas-Peucker needs the whole track (offline);
//! dead-reckoning (keep when the fix strays from the line extrapolated from the last two
//! kept points) is O(1) but bounds the error against an extrapolation, not the reconstructed
//! track; the cone/sector intersection variant of the opening window is O(1) per fix but
//! bounds the distance to a ray, not a segment, and keeps more points on curves. The exact
//! window check costs O(window) per fix; the window is capped at [`MAX_WINDOW`] fixes (a
//! full window keeps its newest fix), and `period_s` caps it in time, so memory is bounded
//! and a fix costs at most a few hundred distance computations (see `docs/benchmarks.md`).
//!
//! Distances use a local equirectangular projection around `A` (error well below a
//! centimetre over the few kilometres a window spans); the distance trigger uses the
//! haversine formula.
//!
//! # Delays
//! A fix is complete when its source sends a reading with another time, or [`FIX_SETTLE`]
//! after its first reading ([`Positions::poll`]). Fixes in the window wait for a decision
//! until a later fix decides, until `period_s` forces one, or until the source is silent for
//! [`SILENCE`]: then the newest fix is kept (the last position before a tunnel matters).
//! [`Positions::finish`] (shutdown) keeps the newest fix of every track and drops the rest
//! of the window, which the bound allows.
//!
//! # Bounded memory
//! At most [`MAX_TRACKS`] sources are tracked (positions of further sources pass through
//! undecided, to the per-signal filter), each with at most [`MAX_WINDOW`] fixes of at most
//! [`MAX_FIX_READINGS`] readings.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use waymark_wire::{Reading, Timestamp, Value};

use crate::sources::gps::readings::{
    ALTITUDE, FIX_TYPE, HEADING, HORIZONTAL_ACCURACY, LATITUDE, LONGITUDE, SATELLITES, SPEED,
};

/// Signals of a fix besides `Vehicle.Speed` (which belongs to a fix only when its source
/// reports positions).
pub const POSITION_SIGNALS: [&str; 7] = [
    LATITUDE,
    LONGITUDE,
    ALTITUDE,
    HEADING,
    HORIZONTAL_ACCURACY,
    SATELLITES,
    FIX_TYPE,
];
/// Fixes held in the curve window at most.
pub const MAX_WINDOW: usize = 256;
/// Sources whose positions are tracked at most.
pub const MAX_TRACKS: usize = 8;
/// Readings of one fix at most (more are passed through undecided).
pub const MAX_FIX_READINGS: usize = 16;
/// A fix is complete this long after its first reading at the latest.
pub const FIX_SETTLE: Duration = Duration::from_millis(500);
/// A source silent this long gets its newest fix kept.
pub const SILENCE: Duration = Duration::from_secs(5);

const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// `[pipeline.positions.moving]` / `[pipeline.positions.stopped]`: the triggers of a profile.
/// 0 switches a trigger off.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// Keep a point when this long has passed since the last kept one (the longest gap
    /// between kept points while fixes arrive). 0 = off.
    pub period_s: u64,
    /// Keep a point this far (metres) from the last kept one. 0 = off.
    pub distance_m: f64,
    /// Keep a point when the course changed by this many degrees. 0 = off.
    pub heading_deg: f64,
    /// Keep a point when the speed changed by this many km/h. 0 = off.
    pub speed_delta_kmh: f64,
}

/// `[pipeline.positions]`: adaptive position logging (see `docs/positions.md`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PositionsConfig {
    /// Decide about position fixes here. `false`: position readings go through the
    /// per-signal filter like any other signal. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Largest distance (metres) between a raw fix and the track reconstructed from the
    /// kept points, while moving. 0 = no curve logging. Default 10.
    #[serde(default = "default_curve_error_m")]
    pub curve_error_m: f64,
    /// Speed at or above which the vehicle counts as moving (km/h). Default 5.
    #[serde(default = "default_moving_speed_kmh")]
    pub moving_speed_kmh: f64,
    /// How long the speed must stay above (below) `moving_speed_kmh` before the vehicle
    /// counts as moving (stopped). Default 10 s.
    #[serde(default = "default_movement_delay_s")]
    pub movement_delay_s: u64,
    /// Boolean signal whose changes force a point. Default
    /// `Vehicle.LowVoltageSystemState.IsIgnitionOn`.
    #[serde(default = "default_ignition_signal")]
    pub ignition_signal: String,
    /// Triggers while moving. Default period 60 s, distance 1000 m, heading 30°, speed
    /// change 20 km/h.
    #[serde(default = "default_moving")]
    pub moving: ProfileConfig,
    /// Triggers while stopped. Default period 600 s, others off.
    #[serde(default = "default_stopped")]
    pub stopped: ProfileConfig,
}

fn default_true() -> bool {
    true
}
fn default_curve_error_m() -> f64 {
    10.0
}
fn default_moving_speed_kmh() -> f64 {
    5.0
}
fn default_movement_delay_s() -> u64 {
    10
}
fn default_ignition_signal() -> String {
    "Vehicle.LowVoltageSystemState.IsIgnitionOn".to_string()
}
fn default_moving() -> ProfileConfig {
    ProfileConfig {
        period_s: 60,
        distance_m: 1000.0,
        heading_deg: 30.0,
        speed_delta_kmh: 20.0,
    }
}
fn default_stopped() -> ProfileConfig {
    ProfileConfig {
        period_s: 600,
        distance_m: 0.0,
        heading_deg: 0.0,
        speed_delta_kmh: 0.0,
    }
}

impl Default for PositionsConfig {
    fn default() -> Self {
        PositionsConfig {
            enabled: true,
            curve_error_m: default_curve_error_m(),
            moving_speed_kmh: default_moving_speed_kmh(),
            movement_delay_s: default_movement_delay_s(),
            ignition_signal: default_ignition_signal(),
            moving: default_moving(),
            stopped: default_stopped(),
        }
    }
}

/// Largest `period_s` / `movement_delay_s` accepted (a day).
pub const MAX_PERIOD_S: u64 = 86_400;

impl PositionsConfig {
    /// Every broken rule as (key path below `pipeline.positions`, message).
    pub fn problems(&self) -> Vec<(Vec<&'static str>, String)> {
        let mut out = Vec::new();
        let mut number = |key: Vec<&'static str>, v: f64, max: f64| {
            if !v.is_finite() || !(0.0..=max).contains(&v) {
                out.push((key, format!("{v} is out of range; allowed 0 to {max}")));
            }
        };
        number(vec!["curve_error_m"], self.curve_error_m, 10_000.0);
        number(vec!["moving_speed_kmh"], self.moving_speed_kmh, 500.0);
        for (name, p) in [("moving", &self.moving), ("stopped", &self.stopped)] {
            number(vec![name, "distance_m"], p.distance_m, 1_000_000.0);
            number(vec![name, "heading_deg"], p.heading_deg, 180.0);
            number(vec![name, "speed_delta_kmh"], p.speed_delta_kmh, 500.0);
        }
        for (key, v) in [
            (vec!["movement_delay_s"], self.movement_delay_s),
            (vec!["moving", "period_s"], self.moving.period_s),
            (vec!["stopped", "period_s"], self.stopped.period_s),
        ] {
            if v > MAX_PERIOD_S {
                out.push((
                    key,
                    format!("{v} is out of range; allowed 0 to {MAX_PERIOD_S}"),
                ));
            }
        }
        if self.ignition_signal.trim().is_empty() {
            out.push((vec!["ignition_signal"], "must not be empty".to_string()));
        }
        out
    }
}

/// Counters of the logger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PositionStats {
    /// Complete fixes with a position.
    pub fixes: u64,
    /// Fixes kept.
    pub kept: u64,
    /// Fixes dropped.
    pub dropped: u64,
    /// Readings in the dropped fixes.
    pub dropped_readings: u64,
    /// Kept for each reason (a fix may have several; the first in this order counts).
    pub forced: u64,
    /// Kept by the period.
    pub by_period: u64,
    /// Kept by distance.
    pub by_distance: u64,
    /// Kept by heading.
    pub by_heading: u64,
    /// Kept by speed change.
    pub by_speed: u64,
    /// Kept by curve logging (including a full window and silence).
    pub by_curve: u64,
}

/// Where the readings handed to [`Positions`] went.
#[derive(Debug, Default)]
pub struct Emitted {
    /// Readings of kept fixes: they go to the batch without the per-signal filter.
    pub kept: Vec<Reading>,
    /// Readings that are not part of a fix after all (no position in them, an untracked
    /// source, an oversized fix): they go through the per-signal filter.
    pub pass: Vec<Reading>,
}

/// A complete fix.
#[derive(Debug, Clone)]
struct Point {
    t: Timestamp,
    lat: f64,
    lon: f64,
    speed: Option<f64>,
    heading: Option<f64>,
    readings: Vec<Reading>,
}

/// The last kept point.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    t: Timestamp,
    lat: f64,
    lon: f64,
    speed: Option<f64>,
    heading: Option<f64>,
}

impl From<&Point> for Anchor {
    fn from(p: &Point) -> Self {
        Anchor {
            t: p.t,
            lat: p.lat,
            lon: p.lon,
            speed: p.speed,
            heading: p.heading,
        }
    }
}

#[derive(Debug)]
struct OpenFix {
    time: Timestamp,
    since: Instant,
    readings: Vec<Reading>,
}

#[derive(Debug, Default)]
struct Track {
    open: Option<OpenFix>,
    anchor: Option<Anchor>,
    /// Undecided fixes after the anchor, oldest first; the last is the candidate.
    window: Vec<Point>,
    /// `None` until the first fix with a speed.
    moving: Option<bool>,
    /// Since when (fix time) the speed says the other state.
    change_since: Option<Timestamp>,
    /// Keep the next fix.
    force_next: bool,
    last_arrival: Option<Instant>,
    /// Whether this source reports positions (then its `Vehicle.Speed` is part of fixes).
    positional: bool,
}

/// Why a fix is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Forced,
    Period,
    Distance,
    Heading,
    Speed,
    Curve,
}

/// The adaptive position logger. See the module docs.
#[derive(Debug)]
pub struct Positions {
    cfg: PositionsConfig,
    tracks: HashMap<String, Track>,
    ignition: Option<bool>,
    stats: PositionStats,
}

impl Positions {
    /// A logger with these settings and no history.
    pub fn new(cfg: &PositionsConfig) -> Self {
        Positions {
            cfg: cfg.clone(),
            tracks: HashMap::new(),
            ignition: None,
            stats: PositionStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> PositionStats {
        self.stats
    }

    /// Offers a reading that arrived at `now`. Returns it when it is not a position reading
    /// (the caller filters it as usual); otherwise takes it, and puts readings whose fate is
    /// decided into `out`.
    pub fn offer(&mut self, now: Instant, r: Reading, out: &mut Emitted) -> Option<Reading> {
        if !self.cfg.enabled {
            return Some(r);
        }
        if r.signal == self.cfg.ignition_signal {
            self.ignition_reading(&r.value, out);
            return Some(r);
        }
        let is_position = POSITION_SIGNALS.contains(&r.signal.as_str());
        let is_speed = r.signal == SPEED;
        if !is_position && !is_speed {
            return Some(r);
        }
        if !self.tracks.contains_key(r.source.as_str()) {
            if !is_position || self.tracks.len() >= MAX_TRACKS {
                return Some(r);
            }
            self.tracks.insert(r.source.clone(), Track::default());
        }
        let source = r.source.clone();
        let Some(track) = self.tracks.get_mut(source.as_str()) else {
            return Some(r);
        };
        if is_speed && !track.positional {
            return Some(r);
        }
        track.positional = true;
        track.last_arrival = Some(now);
        let closes = track.open.as_ref().is_some_and(|o| {
            o.time != r.time
                || o.readings.iter().any(|x| x.signal == r.signal)
                || o.readings.len() >= MAX_FIX_READINGS
        });
        if closes {
            self.close(&source, out);
        }
        let Some(track) = self.tracks.get_mut(source.as_str()) else {
            return Some(r);
        };
        match &mut track.open {
            Some(open) => open.readings.push(r),
            None => {
                track.open = Some(OpenFix {
                    time: r.time,
                    since: now,
                    readings: vec![r],
                });
            }
        }
        None
    }

    /// Completes fixes whose settle time passed and keeps the newest fix of silent sources.
    pub fn poll(&mut self, now: Instant, out: &mut Emitted) {
        let sources: Vec<String> = self.tracks.keys().cloned().collect();
        for source in sources {
            let Some(track) = self.tracks.get(source.as_str()) else {
                continue;
            };
            if track
                .open
                .as_ref()
                .is_some_and(|o| now.saturating_duration_since(o.since) >= FIX_SETTLE)
            {
                self.close(&source, out);
            }
            let Some(track) = self.tracks.get_mut(source.as_str()) else {
                continue;
            };
            let silent = track
                .last_arrival
                .is_some_and(|t| now.saturating_duration_since(t) >= SILENCE);
            if silent && track.open.is_none() && !track.window.is_empty() {
                keep_candidate(track, &mut self.stats, out, Why::Curve);
            }
        }
    }

    /// When [`Positions::poll`] has work next, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        self.tracks
            .values()
            .filter_map(|t| {
                let settle = t.open.as_ref().map(|o| o.since + FIX_SETTLE);
                let silence = (!t.window.is_empty())
                    .then_some(t.last_arrival)
                    .flatten()
                    .map(|a| a + SILENCE);
                match (settle, silence) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            })
            .min()
    }

    /// Forces a point now (an event happened): for every source, the newest fix not yet kept
    /// is kept; a source with none keeps its next fix.
    pub fn force(&mut self, out: &mut Emitted) {
        let sources: Vec<String> = self.tracks.keys().cloned().collect();
        for source in sources {
            self.close(&source, out);
            if let Some(track) = self.tracks.get_mut(source.as_str()) {
                if track.window.is_empty() {
                    track.force_next = true;
                } else {
                    keep_candidate(track, &mut self.stats, out, Why::Forced);
                }
            }
        }
    }

    /// Shutdown: decides everything held (the newest fix of every source is kept).
    pub fn finish(&mut self, out: &mut Emitted) {
        let sources: Vec<String> = self.tracks.keys().cloned().collect();
        for source in sources {
            self.close(&source, out);
            if let Some(track) = self.tracks.get_mut(source.as_str())
                && !track.window.is_empty()
            {
                keep_candidate(track, &mut self.stats, out, Why::Curve);
            }
        }
    }

    fn ignition_reading(&mut self, value: &Value, out: &mut Emitted) {
        let on = match value {
            Value::Bool(b) => Some(*b),
            Value::Num(n) => Some(*n != 0.0),
            Value::Text(_) => None,
        };
        if let Some(on) = on {
            let changed = self.ignition.is_some_and(|was| was != on);
            self.ignition = Some(on);
            if changed {
                self.force(out);
            }
        }
    }

    /// Completes the open fix of `source` and decides about it.
    fn close(&mut self, source: &str, out: &mut Emitted) {
        let Some(track) = self.tracks.get_mut(source) else {
            return;
        };
        let Some(open) = track.open.take() else {
            return;
        };
        let num = |name: &str| {
            open.readings
                .iter()
                .find(|r| r.signal == name)
                .and_then(|r| r.value.as_f64())
                .filter(|v| v.is_finite())
        };
        let (Some(lat), Some(lon)) = (num(LATITUDE), num(LONGITUDE)) else {
            out.pass.extend(open.readings);
            return;
        };
        let point = Point {
            t: open.time,
            lat,
            lon,
            speed: num(SPEED),
            heading: num(HEADING),
            readings: open.readings,
        };
        self.stats.fixes += 1;
        decide(&self.cfg, track, &mut self.stats, point, out);
    }
}

/// Keeps the window's newest fix, drops the rest of the window.
fn keep_candidate(track: &mut Track, stats: &mut PositionStats, out: &mut Emitted, why: Why) {
    let Some(c) = track.window.pop() else {
        return;
    };
    for dropped in track.window.drain(..) {
        stats.dropped += 1;
        stats.dropped_readings += dropped.readings.len() as u64;
    }
    keep(track, stats, out, c, why);
}

fn keep(track: &mut Track, stats: &mut PositionStats, out: &mut Emitted, p: Point, why: Why) {
    stats.kept += 1;
    match why {
        Why::Forced => stats.forced += 1,
        Why::Period => stats.by_period += 1,
        Why::Distance => stats.by_distance += 1,
        Why::Heading => stats.by_heading += 1,
        Why::Speed => stats.by_speed += 1,
        Why::Curve => stats.by_curve += 1,
    }
    track.anchor = Some(Anchor::from(&p));
    out.kept.extend(p.readings);
}

/// The decision for one complete fix (see the module docs for the order of the rules).
fn decide(
    cfg: &PositionsConfig,
    track: &mut Track,
    stats: &mut PositionStats,
    p: Point,
    out: &mut Emitted,
) {
    let mut forced = std::mem::take(&mut track.force_next);
    // Time going backwards (a clock step): decide what is held and restart from this fix,
    // as the per-signal filter does.
    if track.anchor.is_some_and(|a| p.t < a.t) || track.window.last().is_some_and(|w| p.t < w.t) {
        keep_candidate(track, stats, out, Why::Forced);
        track.change_since = None;
        forced = true;
    }
    if let Some(speed) = p.speed {
        let want = speed >= cfg.moving_speed_kmh;
        match track.moving {
            None => track.moving = Some(want),
            Some(m) if m == want => track.change_since = None,
            Some(_) => {
                let since = *track.change_since.get_or_insert(p.t);
                if p.t.saturating_sub(since) >= secs_ms(cfg.movement_delay_s) {
                    track.moving = Some(want);
                    track.change_since = None;
                    forced = true;
                }
            }
        }
    }
    let moving = track.moving.unwrap_or(false);
    let profile = if moving { &cfg.moving } else { &cfg.stopped };
    let period_ms = (profile.period_s > 0).then(|| secs_ms(profile.period_s));
    let curve = moving && cfg.curve_error_m > 0.0;

    // 1. The window must stay valid up to `p`; else keep its newest fix first.
    if let (Some(a), false) = (track.anchor, track.window.is_empty()) {
        let too_long = period_ms.is_some_and(|max| p.t.saturating_sub(a.t) > max);
        let full = track.window.len() >= MAX_WINDOW;
        let broken = !curve || !window_holds(&a, &track.window, &p, cfg.curve_error_m);
        if too_long || full || broken {
            let why = if too_long { Why::Period } else { Why::Curve };
            keep_candidate(track, stats, out, why);
        }
    }

    // 2. Triggers against the last kept point.
    let why = match track.anchor {
        None => Some(Why::Forced),
        Some(_) if forced => Some(Why::Forced),
        Some(a) => trigger(cfg, profile, period_ms, &a, &p),
    };
    if let Some(why) = why {
        for dropped in track.window.drain(..) {
            stats.dropped += 1;
            stats.dropped_readings += dropped.readings.len() as u64;
        }
        keep(track, stats, out, p, why);
    } else if curve {
        track.window.push(p);
    } else {
        stats.dropped += 1;
        stats.dropped_readings += p.readings.len() as u64;
    }
}

fn trigger(
    cfg: &PositionsConfig,
    profile: &ProfileConfig,
    period_ms: Option<i64>,
    a: &Anchor,
    p: &Point,
) -> Option<Why> {
    if period_ms.is_some_and(|max| p.t.saturating_sub(a.t) >= max) {
        return Some(Why::Period);
    }
    if profile.distance_m > 0.0 && haversine_m(a.lat, a.lon, p.lat, p.lon) >= profile.distance_m {
        return Some(Why::Distance);
    }
    if profile.heading_deg > 0.0
        && let (Some(h0), Some(h1), Some(v)) = (a.heading, p.heading, p.speed)
        && v >= cfg.moving_speed_kmh
        && heading_change(h0, h1) >= profile.heading_deg
    {
        return Some(Why::Heading);
    }
    if profile.speed_delta_kmh > 0.0
        && let (Some(v0), Some(v1)) = (a.speed, p.speed)
        && (v1 - v0).abs() >= profile.speed_delta_kmh
    {
        return Some(Why::Speed);
    }
    None
}

fn secs_ms(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// Smallest angle between two courses, degrees (0 to 180).
pub fn heading_change(a: f64, b: f64) -> f64 {
    let d = (b - a).rem_euclid(360.0);
    d.min(360.0 - d)
}

/// Great-circle distance, metres (the GNSS hygiene's haversine).
pub use crate::sources::gps::hygiene::distance_m as haversine_m;

/// `(lat, lon)` in metres east and north of `(lat0, lon0)` (equirectangular).
pub fn local_xy(lat0: f64, lon0: f64, lat: f64, lon: f64) -> (f64, f64) {
    let k = EARTH_RADIUS_M * std::f64::consts::PI / 180.0;
    let dlon = (lon - lon0 + 540.0).rem_euclid(360.0) - 180.0;
    (dlon * k * lat0.to_radians().cos(), (lat - lat0) * k)
}

/// Distance from `p` to the segment `a`–`b`, all in local metres.
pub fn segment_distance(p: (f64, f64), a: (f64, f64), b: (f64, f64)) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (cx, cy) = (a.0 + t * dx, a.1 + t * dy);
    ((p.0 - cx).powi(2) + (p.1 - cy).powi(2)).sqrt()
}

/// Whether every fix of `window` lies within `error_m` of the segment from `a` to `p`.
fn window_holds(a: &Anchor, window: &[Point], p: &Point, error_m: f64) -> bool {
    let end = local_xy(a.lat, a.lon, p.lat, p.lon);
    window.iter().all(|w| {
        let xy = local_xy(a.lat, a.lon, w.lat, w.lon);
        segment_distance(xy, (0.0, 0.0), end) <= error_m
    })
}

#[cfg(test)]
mod tests;
