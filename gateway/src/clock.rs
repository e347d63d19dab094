//! The gateway's clock: GNSS-disciplined wall time for every timestamp (DESIGN §4).
//!
//! Vehicle units often boot with no valid clock (no RTC battery, no network yet): the system
//! clock reads 1970, or a stale date. Waymark never sets the kernel clock; it keeps its own
//! *offset* from the monotonic clock to UTC and stamps data with `monotonic + offset`.
//!
//! # Invariants
//! - [`Clock::now`] returns UTC milliseconds when the time is known, else a **monotonic
//!   stamp**: milliseconds since the clock was created, plus 1. A monotonic stamp is always
//!   below [`EARLIEST_VALID_MS`] (that would take 50 years of uptime), so one integer says
//!   both: `t >= EARLIEST_VALID_MS` is UTC, anything lower is "taken before the time was
//!   known" and can be mapped to UTC later with [`Clock::restamp`]. A stamp is never 0.
//! - Sources of time, best first: **GNSS** (fix times passed to [`Clock::observe_gnss`]),
//!   then the **system clock** when it reads at least [`EARLIEST_VALID_MS`], else **none**.
//!   Once GNSS time was seen, the system clock is never used again: a system clock before the
//!   floor, or one that jumps (an RTC restored late, NTP stepping), cannot move stamps.
//! - GNSS samples are `utc - monotonic` at the instant the fix's bytes arrived. The first
//!   sample is adopted as is. Later samples within [`STEP_THRESHOLD_MS`] of the offset are
//!   smoothed into it (1/[`SMOOTHING`] of the difference per sample), so serial latency
//!   jitter does not make stamps wobble. A sample further off is an outlier (counted) unless
//!   [`STEP_CONFIRMATIONS`] consecutive samples agree with each other within the threshold:
//!   then the offset steps to them (counted). One bad fix never moves the clock.
//! - Without GNSS, the system clock is followed as it is, including its jumps (counted as
//!   system steps): it is the best time there is. When it falls below the floor again, the
//!   last offset is kept, so known time never becomes unknown.
//! - Between GNSS fixes (tunnel, garage) the monotonic clock carries the time; its drift is
//!   that of the unit's oscillator (typically < 0.2 s per hour).
//!
//! # Shape
//! [`Discipline`] is the sans-IO core: it takes the monotonic and system readings as
//! arguments and is tested exhaustively. [`Clock`] is the cheap cloneable handle (an `Arc`
//! around the core behind a mutex held for a few arithmetic operations) that the gateway
//! creates once in `run` and hands to the sources, the pipeline, the store and the uplink.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use waymark_wire::Timestamp;
use waymark_wire::time::EARLIEST_VALID_MS;

/// A GNSS sample further than this from the current offset is not smoothed in: it is an
/// outlier, or, when [`STEP_CONFIRMATIONS`] samples in a row agree, a step. 1 s: NMEA arrives
/// within a few hundred ms of its epoch on every receiver in our captures; a larger
/// difference is a real change of time (or a broken fix).
pub const STEP_THRESHOLD_MS: i64 = 1_000;
/// Consecutive agreeing samples beyond [`STEP_THRESHOLD_MS`] that step the offset.
pub const STEP_CONFIRMATIONS: u32 = 3;
/// Within the threshold, the offset moves by `difference / SMOOTHING` per sample.
pub const SMOOTHING: i64 = 8;

/// Where the wall time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockSource {
    /// No valid time yet: stamps are monotonic.
    None,
    /// The system clock (at or after [`EARLIEST_VALID_MS`]), no GNSS time yet.
    System,
    /// GNSS time.
    Gnss,
}

impl ClockSource {
    /// `none`, `system` or `gnss`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClockSource::None => "none",
            ClockSource::System => "system",
            ClockSource::Gnss => "gnss",
        }
    }

    /// The code stored in the store's `meta` table (0, 1, 2).
    pub fn code(self) -> i64 {
        match self {
            ClockSource::None => 0,
            ClockSource::System => 1,
            ClockSource::Gnss => 2,
        }
    }

    /// The source stored as `code`; unknown codes are `None`.
    pub fn from_code(code: i64) -> ClockSource {
        match code {
            1 => ClockSource::System,
            2 => ClockSource::Gnss,
            _ => ClockSource::None,
        }
    }
}

/// What the clock knows, for status output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ClockState {
    /// Where the time comes from.
    pub source: ClockSource,
    /// Disciplined wall time minus the system clock, ms (positive: the system clock is
    /// behind). `None` while no time is known.
    pub offset_ms: Option<i64>,
    /// UTC ms of the last GNSS sample used, if any.
    pub last_sync_ms: Option<Timestamp>,
    /// Times the offset stepped (GNSS steps confirmed, or the system clock jumping while it
    /// was the source).
    pub steps: u64,
    /// GNSS samples ignored as outliers (or below the floor).
    pub outliers: u64,
}

/// What [`Discipline::observe_gnss`] did with a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// First GNSS time: adopted.
    Adopted,
    /// Within the threshold: smoothed into the offset.
    Smoothed,
    /// Beyond the threshold, not (yet) confirmed: ignored.
    Outlier,
    /// Confirmed by [`STEP_CONFIRMATIONS`] samples: the offset stepped.
    Stepped,
    /// Before [`EARLIEST_VALID_MS`]: not a time.
    Invalid,
}

/// The sans-IO clock discipline. Monotonic readings (`mono_ms`) are ms on any fixed base;
/// system readings are the system clock in UTC ms. See the module docs for the rules.
#[derive(Debug, Clone, Default)]
pub struct Discipline {
    /// `utc = mono + offset`, once known.
    offset: Option<i64>,
    source: Option<Source>,
    /// Monotonic ms of the last GNSS sample used.
    last_gnss_mono: Option<i64>,
    /// A step being confirmed: the first disagreeing sample's offset and how many agree.
    pending: Option<(i64, u32)>,
    steps: u64,
    outliers: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    System,
    Gnss,
}

impl Discipline {
    /// A clock that knows nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stamp for `mono_ms` given the system clock reads `system_ms` (see the module
    /// docs): UTC when known, else `mono_ms` itself.
    pub fn now(&mut self, mono_ms: i64, system_ms: Timestamp) -> Timestamp {
        if self.source != Some(Source::Gnss) && system_ms >= EARLIEST_VALID_MS {
            let sample = system_ms - mono_ms;
            if let (Some(Source::System), Some(offset)) = (self.source, self.offset)
                && (sample - offset).abs() > STEP_THRESHOLD_MS
            {
                self.steps += 1;
            }
            self.offset = Some(sample);
            self.source = Some(Source::System);
        }
        match self.offset {
            Some(offset) => mono_ms.saturating_add(offset),
            None => mono_ms,
        }
    }

    /// Takes a GNSS time: the fix's `utc_ms` whose bytes arrived at `mono_ms`.
    pub fn observe_gnss(&mut self, utc_ms: Timestamp, mono_ms: i64) -> Observed {
        if utc_ms < EARLIEST_VALID_MS {
            self.outliers += 1;
            return Observed::Invalid;
        }
        let sample = utc_ms - mono_ms;
        let result = match (self.source, self.offset) {
            (Some(Source::Gnss), Some(offset)) => {
                let diff = sample - offset;
                if diff.abs() <= STEP_THRESHOLD_MS {
                    self.pending = None;
                    self.offset = Some(offset + diff / SMOOTHING);
                    Observed::Smoothed
                } else {
                    let agreeing = match self.pending {
                        Some((first, n)) if (sample - first).abs() <= STEP_THRESHOLD_MS => n + 1,
                        _ => {
                            self.pending = Some((sample, 1));
                            1
                        }
                    };
                    if agreeing >= STEP_CONFIRMATIONS {
                        self.pending = None;
                        self.offset = Some(sample);
                        self.steps += 1;
                        Observed::Stepped
                    } else {
                        if let Some((first, _)) = self.pending {
                            self.pending = Some((first, agreeing));
                        }
                        self.outliers += 1;
                        return Observed::Outlier;
                    }
                }
            }
            _ => {
                self.offset = Some(sample);
                self.source = Some(Source::Gnss);
                Observed::Adopted
            }
        };
        self.last_gnss_mono = Some(mono_ms);
        result
    }

    /// Whether stamps are UTC now.
    pub fn is_known(&self) -> bool {
        self.offset.is_some()
    }

    /// Maps a stamp taken before the time was known (a monotonic stamp of this clock) to
    /// UTC; a UTC stamp is returned unchanged. `None` while no time is known.
    pub fn restamp(&self, t: Timestamp) -> Option<Timestamp> {
        if t >= EARLIEST_VALID_MS {
            return Some(t);
        }
        self.offset.map(|offset| t.saturating_add(offset))
    }

    /// The state at `mono_ms` / `system_ms`, for status output.
    pub fn state(&self, mono_ms: i64, system_ms: Timestamp) -> ClockState {
        ClockState {
            source: match self.source {
                None => ClockSource::None,
                Some(Source::System) => ClockSource::System,
                Some(Source::Gnss) => ClockSource::Gnss,
            },
            offset_ms: self
                .offset
                .map(|o| mono_ms.saturating_add(o).saturating_sub(system_ms)),
            last_sync_ms: self
                .last_gnss_mono
                .and_then(|m| self.offset.map(|o| m.saturating_add(o))),
            steps: self.steps,
            outliers: self.outliers,
        }
    }
}

/// Reads the system clock.
type SystemClock = Box<dyn Fn() -> Timestamp + Send + Sync>;

struct Inner {
    base: Instant,
    system: SystemClock,
    core: Mutex<Discipline>,
}

/// The shared handle around a [`Discipline`]: monotonic readings are `Instant`s since the
/// handle was created. Cloning is cheap (an `Arc`).
#[derive(Clone)]
pub struct Clock {
    inner: Arc<Inner>,
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Clock")
            .field("state", &self.source())
            .finish_non_exhaustive()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// The system clock in UTC ms (negative before 1970).
pub fn system_ms() -> Timestamp {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp::try_from(d.as_millis()).unwrap_or(Timestamp::MAX),
        Err(e) => -Timestamp::try_from(e.duration().as_millis()).unwrap_or(Timestamp::MAX),
    }
}

impl Clock {
    /// A clock on the system clock and `Instant`.
    pub fn new() -> Self {
        Clock::with_system_clock(system_ms)
    }

    /// A clock whose "system clock" is `system` (tests: a unit that boots in 1970, a clock
    /// that jumps).
    pub fn with_system_clock(system: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        Clock {
            inner: Arc::new(Inner {
                base: Instant::now(),
                system: Box::new(system),
                core: Mutex::new(Discipline::new()),
            }),
        }
    }

    fn core(&self) -> MutexGuard<'_, Discipline> {
        // The core is plain data updated in a few statements; a panic elsewhere while
        // holding it cannot leave it inconsistent.
        self.inner
            .core
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Monotonic ms of `at` on this clock's base (≥ 1).
    pub fn mono_ms(&self, at: Instant) -> i64 {
        let ms = at.saturating_duration_since(self.inner.base).as_millis();
        i64::try_from(ms).unwrap_or(i64::MAX - 1) + 1
    }

    /// The stamp to put on data taken now: UTC ms when the time is known, else a monotonic
    /// stamp below [`EARLIEST_VALID_MS`] (see the module docs).
    pub fn now(&self) -> Timestamp {
        let mono = self.mono_ms(Instant::now());
        let system = (self.inner.system)();
        self.core().now(mono, system)
    }

    /// Feeds a GNSS time: `utc_ms` of a valid fix whose bytes arrived at `at`. The GPS source
    /// calls it for every fix with a date. Times before [`EARLIEST_VALID_MS`] are ignored.
    pub fn observe_gnss(&self, utc_ms: Timestamp, at: Instant) -> Observed {
        let mono = self.mono_ms(at);
        self.core().observe_gnss(utc_ms, mono)
    }

    /// Maps a monotonic stamp of this clock to UTC; UTC stamps pass unchanged. `None` while
    /// the time is not known.
    pub fn restamp(&self, t: Timestamp) -> Option<Timestamp> {
        self.refresh();
        self.core().restamp(t)
    }

    /// Whether [`Clock::now`] gives UTC.
    pub fn is_known(&self) -> bool {
        self.refresh();
        self.core().is_known()
    }

    /// Source, offset against the system clock, last GNSS sync.
    pub fn source(&self) -> ClockState {
        let mono = self.mono_ms(Instant::now());
        let system = (self.inner.system)();
        let mut core = self.core();
        core.now(mono, system);
        core.state(mono, system)
    }

    /// Lets the core look at the system clock (it may have become valid).
    fn refresh(&self) {
        self.now();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use proptest::prelude::*;

    use super::*;

    const T: Timestamp = 1_795_420_370_000; // 2026-11-23T07:52:50Z

    #[test]
    fn unknown_time_gives_monotonic_stamps_below_the_floor() {
        let mut d = Discipline::new();
        assert_eq!(d.now(5, 0), 5);
        assert_eq!(d.now(7, 1_000), 7, "a 1970 system clock is not time");
        assert_eq!(d.now(9, EARLIEST_VALID_MS - 1), 9);
        assert!(!d.is_known());
        assert_eq!(d.restamp(9), None);
        assert_eq!(d.restamp(T), Some(T), "UTC stamps pass");
        let s = d.state(9, 0);
        assert_eq!(
            (s.source, s.offset_ms, s.last_sync_ms),
            (ClockSource::None, None, None)
        );
    }

    #[test]
    fn a_valid_system_clock_is_used_until_gnss() {
        let mut d = Discipline::new();
        assert_eq!(d.now(100, T), T);
        assert_eq!(d.restamp(40), Some(T - 60));
        assert_eq!(d.state(100, T).source, ClockSource::System);
        assert_eq!(d.state(100, T).offset_ms, Some(0));
        // It jumps (NTP step): followed, counted.
        assert_eq!(d.now(200, T + 5_000), T + 5_000);
        assert_eq!(d.state(200, T + 5_000).steps, 1);
        // It falls back below the floor (RTC reset): the last offset is kept.
        assert_eq!(d.now(300, 42), T + 5_100);
        assert_eq!(d.state(300, 42).source, ClockSource::System);
    }

    #[test]
    fn gnss_wins_over_the_system_clock_and_is_never_overridden() {
        let mut d = Discipline::new();
        d.now(0, T - 3_600_000); // system an hour slow
        assert_eq!(d.observe_gnss(T, 1_000), Observed::Adopted);
        assert_eq!(d.now(2_000, T - 3_600_000 + 2_000), T + 1_000);
        // The system clock jumps: ignored.
        assert_eq!(d.now(3_000, T + 999_999_999), T + 2_000);
        assert_eq!(d.now(4_000, 0), T + 3_000);
        let s = d.state(4_000, T + 3_000 - 3_600_000);
        assert_eq!(s.source, ClockSource::Gnss);
        assert_eq!(s.offset_ms, Some(3_600_000));
        assert_eq!(s.last_sync_ms, Some(T));
        assert_eq!(s.steps, 0);
    }

    #[test]
    fn monotonic_stamps_are_restamped_with_the_gnss_offset() {
        let mut d = Discipline::new();
        let early = d.now(1_500, 0);
        assert_eq!(early, 1_500);
        d.observe_gnss(T, 10_000);
        assert_eq!(d.restamp(early), Some(T - 8_500));
    }

    #[test]
    fn jitter_is_smoothed() {
        let mut d = Discipline::new();
        d.observe_gnss(T, 0);
        // Samples 80 ms late: offset moves 1/8 of the way each time.
        assert_eq!(d.observe_gnss(T + 1_000, 1_080), Observed::Smoothed);
        assert_eq!(d.now(1_080, 0), T + 1_080 - 10);
        for i in 2..200 {
            d.observe_gnss(T + i * 1_000, i * 1_000 + 80);
        }
        let off = d.restamp(0).unwrap() - T;
        assert!((-80..=-70).contains(&off), "converges to the sample: {off}");
        assert_eq!(d.state(0, 0).steps, 0);
    }

    #[test]
    fn one_outlier_does_not_move_the_clock_and_a_confirmed_step_does() {
        let mut d = Discipline::new();
        d.observe_gnss(T, 0);
        // A fix with a wrong time (e.g. a receiver's week rollover glitch).
        assert_eq!(d.observe_gnss(T + 86_400_000, 1_000), Observed::Outlier);
        assert_eq!(d.observe_gnss(T + 2_000, 2_000), Observed::Smoothed);
        assert_eq!(d.restamp(0), Some(T));
        // The time really changed by 5 s: three agreeing samples step it.
        assert_eq!(d.observe_gnss(T + 8_000, 3_000), Observed::Outlier);
        assert_eq!(d.observe_gnss(T + 9_000, 4_000), Observed::Outlier);
        assert_eq!(d.observe_gnss(T + 10_000, 5_000), Observed::Stepped);
        assert_eq!(d.restamp(0), Some(T + 5_000));
        let s = d.state(0, 0);
        assert_eq!((s.steps, s.outliers), (1, 3));
        // Disagreeing outliers never confirm each other.
        for i in 0..10 {
            let o = d.observe_gnss(T + 100_000 * (i + 2), 6_000 + i);
            assert_eq!(o, Observed::Outlier);
        }
        assert_eq!(d.restamp(0), Some(T + 5_000));
    }

    #[test]
    fn an_in_bound_sample_cancels_a_pending_step() {
        let mut d = Discipline::new();
        d.observe_gnss(T, 0);
        d.observe_gnss(T + 6_000, 1_000);
        d.observe_gnss(T + 7_000, 2_000);
        d.observe_gnss(T + 3_000, 3_000); // back in line
        assert_eq!(d.observe_gnss(T + 9_000, 4_000), Observed::Outlier);
        assert_eq!(d.restamp(0), Some(T));
    }

    #[test]
    fn gnss_before_the_floor_is_ignored() {
        let mut d = Discipline::new();
        assert_eq!(d.observe_gnss(1_000, 5), Observed::Invalid);
        assert!(!d.is_known());
        assert_eq!(d.state(0, 0).outliers, 1);
    }

    #[test]
    fn source_codes_round_trip() {
        for s in [ClockSource::None, ClockSource::System, ClockSource::Gnss] {
            assert_eq!(ClockSource::from_code(s.code()), s);
        }
        assert_eq!(ClockSource::from_code(9), ClockSource::None);
        assert_eq!(ClockSource::Gnss.as_str(), "gnss");
    }

    #[test]
    fn handle_with_a_1970_system_clock() {
        let sys = Arc::new(AtomicI64::new(1_000));
        let s2 = sys.clone();
        let clock = Clock::with_system_clock(move || s2.load(Ordering::Relaxed));
        let early = clock.now();
        assert!((1..EARLIEST_VALID_MS).contains(&early));
        assert!(!clock.is_known());
        assert_eq!(clock.source().source, ClockSource::None);
        let at = Instant::now();
        assert_eq!(clock.observe_gnss(T, at), Observed::Adopted);
        assert!(clock.is_known());
        let now = clock.now();
        assert!((T..T + 60_000).contains(&now), "{now}");
        let re = clock.restamp(early).unwrap();
        assert!((T - 60_000..=T).contains(&re), "{re}");
        assert_eq!(clock.source().source, ClockSource::Gnss);
        // The system clock becoming valid later changes nothing.
        sys.store(T + 10_000_000, Ordering::Relaxed);
        assert!(clock.now() < T + 60_000);
        assert!(format!("{clock:?}").contains("Gnss"));
    }

    #[test]
    fn handle_on_the_real_system_clock() {
        let clock = Clock::new();
        assert!(clock.now() >= EARLIEST_VALID_MS);
        assert_eq!(clock.source().source, ClockSource::System);
        assert!(clock.mono_ms(Instant::now()) >= 1);
    }

    proptest! {
        /// Whatever GNSS samples arrive, the offset only ever moves by smoothing (bounded) or
        /// by a step that STEP_CONFIRMATIONS agreeing samples asked for.
        #[test]
        fn offset_moves_only_as_allowed(samples in proptest::collection::vec(-5_000i64..5_000, 1..60)) {
            let mut d = Discipline::new();
            d.observe_gnss(T, 0);
            for (i, jitter) in samples.iter().enumerate() {
                let mono = (i as i64 + 1) * 1_000;
                let before = d.restamp(0).unwrap();
                let o = d.observe_gnss(T + mono + jitter, mono);
                let after = d.restamp(0).unwrap();
                match o {
                    Observed::Smoothed => prop_assert!((after - before).abs() <= STEP_THRESHOLD_MS / SMOOTHING),
                    Observed::Outlier => prop_assert_eq!(after, before),
                    Observed::Stepped => prop_assert_eq!(after, T + jitter),
                    Observed::Adopted | Observed::Invalid => prop_assert!(false, "{:?}", o),
                }
            }
        }
    }
}
